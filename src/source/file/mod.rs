//! Source: packets out of pcap and pcapng files, streamed, never loaded whole.
//!
//! A regular file is memory-mapped and its blocks parsed in place, the pages
//! behind the reader dropped from the map as it goes (resident memory stays a
//! few MiB whatever the file's size); pipes and anything that cannot be mapped
//! are read in 1 MiB chunks on a second thread. One hazard of the map: another
//! process truncating the file while it is read ends the run with SIGBUS (a
//! file still being written by tcpdump only grows, and is read to the length
//! it had when opened).
//!
//! Reads both byte orders, micro- and nanosecond pcap, and pcapng with several
//! interfaces, each with its own link type and timestamp resolution (what
//! Wireshark writes when capturing on several interfaces, and what libpcap
//! refuses to open). Every packet keeps its 1-based number in the file, as
//! Wireshark numbers it. Several files are merged by time in [`crate::pipeline`].
//!
//! A pcapng may say when its recording stopped: the latest `isb_endtime` of
//! its Interface Statistics Blocks (dumpcap writes them at the end of a
//! capture, and so do `amqptrace proxy --pcap` and `run`) is
//! [`CaptureReader::recorded_end`]. A pcap records no end.
//!
//! amqptrace's own recordings mark the proxy's two legs of each connection
//! (interfaces named [`CLIENT_LEG_IF_NAME`] and [`BROKER_LEG_IF_NAME`], and a
//! comment on each broker-leg SYN naming the client it carries, see
//! [`LegAlias`]); every packet says which leg it is on ([`Packet::leg`]), so
//! that the pipeline reads each connection once. Other files are unmarked.
//!
//! This module knows nothing of IP, TCP or AMQP: it hands out link-layer bytes.
//!
//! By concern: [`reader`] ([`CaptureReader`]: blocks to packets, the
//! interfaces and timestamps of each format), `backing` (the mapped file and
//! the in-place block parser over it), `streamed` (pipes: the read-ahead
//! thread, read errors kept with their offset), [`legs`] (the proxy legs of
//! amqptrace's own recordings), [`magic`] (the one capture-magic check,
//! [`sniff`]).

mod backing;
pub mod legs;
pub mod magic;
pub mod reader;
mod streamed;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use legs::{Leg, LegAlias, BROKER_LEG_IF_NAME, CLIENT_LEG_IF_NAME, LEG_COMMENT_PREFIX};
pub use magic::{sniff, Format};
pub use reader::{CaptureReader, Packet};

/// Why a capture file cannot be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file cannot be opened (or is a directory).
    #[error("{path}: cannot open")]
    Open { path: PathBuf, source: io::Error },
    /// Reading the file header failed.
    #[error("{path}: read error at byte {offset}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    /// Reading failed after the file header (a pipe's writer, a disk): the
    /// packets before `offset` were read and stand.
    #[error("{path}: read error at byte {offset} (after packet {frame}): {error}; everything before it was read")]
    ReadFailed {
        path: PathBuf,
        frame: u64,
        offset: u64,
        error: io::Error,
    },
    /// Not one byte to read.
    #[error("{path}: file is empty")]
    Empty { path: PathBuf },
    /// The first bytes are no capture magic ([`sniff`]).
    #[error("{path}: not a pcap or pcapng file (first bytes: {first_bytes})")]
    NotACapture { path: PathBuf, first_bytes: String },
    /// The file ends inside its header: no packet can be read.
    #[error("{path}: file header is cut short: the file ends inside its pcap/pcapng header")]
    HeaderTruncated { path: PathBuf, len: u64 },
    /// The file ends inside packet `frame`: the packets before it stand.
    #[error("{path}: capture is cut in the middle of packet {frame} (at byte {offset}); everything before it was read")]
    Truncated {
        path: PathBuf,
        frame: u64,
        offset: u64,
    },
    /// A block that cannot be parsed: the packets before it stand.
    #[error("{path}: corrupt block at byte {offset} (after packet {frame}): {detail}")]
    Corrupt {
        path: PathBuf,
        frame: u64,
        offset: u64,
        detail: String,
    },
}

impl CaptureError {
    /// True for damage found after some packets were read: what came before stands.
    pub fn is_partial(&self) -> bool {
        matches!(
            self,
            CaptureError::Truncated { .. }
                | CaptureError::Corrupt { .. }
                | CaptureError::ReadFailed { .. }
        )
    }
}
