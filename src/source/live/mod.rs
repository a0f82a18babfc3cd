//! The live interface source: libpcap (loaded at run time, [`libpcap`]) on
//! one interface, with a BPF filter, feeding the same [`Driver`] as capture
//! files, so a live timeline has the same order guarantees as a file's.
//!
//! Packets are numbered from 1 in the order libpcap hands them over, as
//! Wireshark numbers the file `-w` writes ([`savefile`]), and keep libpcap's
//! timestamps. Reads are non-blocking so the caller can print live verdicts
//! and notice a stop request between packets. Owns the capture handle and the
//! optional savefile; knows nothing of sinks or the analyzer.

pub mod libpcap;
mod mask;
pub mod savefile;

use std::path::{Path, PathBuf};

use crate::event::{Event, Timestamp};
use crate::link::{self, linktype};
use crate::pipeline::Driver;
use crate::source::file::Packet;
use crate::stream::{StreamConfig, StreamStats};

pub use libpcap::{LoadError, LIBPCAP_ENV};
pub use savefile::SavefileError;

/// How long [`LiveCapture::poll`] sleeps when no packet is waiting.
pub const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_millis(5);

/// Bytes kept of each packet (as tcpdump's default).
const SNAPLEN: u32 = 262_144;

/// Why a live capture cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum LiveCaptureError {
    #[error(transparent)]
    Libpcap(#[from] LoadError),
    #[error(
        "cannot capture on {iface}: {message}\n\
         capturing needs root or the CAP_NET_RAW and CAP_NET_ADMIN capabilities, e.g.\n  \
         sudo setcap cap_net_raw,cap_net_admin=eip $(command -v amqptrace)"
    )]
    Permission { iface: String, message: String },
    // The cause is the source, printed after this by the error chain.
    #[error("cannot capture on {iface}")]
    Open {
        iface: String,
        #[source]
        source: libpcap::PcapError,
    },
    #[error("invalid capture filter '{filter}'")]
    Filter {
        filter: String,
        #[source]
        source: libpcap::PcapError,
    },
    #[error(transparent)]
    Write(#[from] SavefileError),
    #[error("reading from {iface}")]
    Read {
        iface: String,
        #[source]
        source: libpcap::PcapError,
    },
}

/// The BPF filter for a set of broker ports: `tcp port 5672 or tcp port 5682`.
pub fn port_filter(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("tcp port {p}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The LINKTYPE_* value (what files and [`link`] use) of a DLT_* value (what
/// libpcap reports for an interface). They differ only for raw IP among the
/// link types amqptrace reads.
fn linktype_of_dlt(dlt: i32) -> i32 {
    match dlt {
        linktype::RAW_BSD | linktype::RAW_BSD2 => linktype::RAW,
        other => other,
    }
}

/// Packet counts for the end-of-run summary.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub packets: u64,
    pub tcp_packets: u64,
    /// Dropped by the kernel or the interface, as libpcap reports them.
    pub dropped: u64,
    pub if_dropped: u64,
    /// The `-w` recording failed and is incomplete.
    pub savefile_failed: bool,
    /// Its failure, when it was not taken with [`LiveCapture::take_savefile_error`] yet
    /// (the last flush).
    pub savefile_error: Option<SavefileError>,
}

/// The `-w` recording and its first failure.
struct Recording {
    file: Option<savefile::Savefile>,
    /// The first write or flush error, until the caller takes it.
    error: Option<SavefileError>,
    failed: bool,
}

impl Recording {
    fn check(&mut self, r: Result<(), SavefileError>) {
        if let Err(e) = r {
            // One failure ends the recording: later writes would only fail
            // again (or, worse, leave a file with a hole in the middle).
            self.file = None;
            self.failed = true;
            self.error.get_or_insert(e);
        }
    }
}

/// An open live capture.
pub struct LiveCapture {
    iface: String,
    source: PathBuf,
    handle: libpcap::Handle,
    linktype: i32,
    recording: Recording,
    /// Masks the SASL secrets of what `-w` records; None with --keep-credentials.
    mask: Option<mask::PacketMask>,
    driver: Driver,
    packets: u64,
}

impl LiveCapture {
    /// Loads libpcap, opens `iface` with `filter` (BPF), optionally writing
    /// every packet to `write` (pcap), the SASL secrets of connection.start-ok
    /// (and secure-ok, update-secret) masked unless `keep_credentials`.
    pub fn open(
        iface: &str,
        filter: &str,
        cfg: StreamConfig,
        write: Option<&Path>,
        keep_credentials: bool,
    ) -> Result<Self, LiveCaptureError> {
        let lib = libpcap::Libpcap::load()?;
        let opts = libpcap::Options {
            snaplen: SNAPLEN as i32,
            // Room for bursts while the tracer is busy (libpcap's default is 2 MB).
            buffer_size: 64 << 20,
            promisc: false,
            immediate: true,
            filter,
        };
        let handle = libpcap::Handle::open(lib, iface, &opts).map_err(|e| match e {
            libpcap::OpenError::Open(source) if source.permission_denied => {
                LiveCaptureError::Permission {
                    iface: iface.to_string(),
                    message: source.message,
                }
            }
            libpcap::OpenError::Open(source) => LiveCaptureError::Open {
                iface: iface.to_string(),
                source,
            },
            libpcap::OpenError::Filter(source) => LiveCaptureError::Filter {
                filter: filter.to_string(),
                source,
            },
        })?;
        let linktype = linktype_of_dlt(handle.datalink());
        let file = match write {
            Some(p) => Some(savefile::Savefile::create(p, linktype, SNAPLEN)?),
            None => None,
        };
        Ok(LiveCapture {
            iface: iface.to_string(),
            source: PathBuf::from(iface),
            handle,
            linktype,
            recording: Recording {
                file,
                error: None,
                failed: false,
            },
            mask: (!keep_credentials).then(mask::PacketMask::default),
            driver: Driver::new(cfg),
            packets: 0,
        })
    }

    /// The interface's link type name (for the start-up line).
    pub fn linktype_name(&self) -> String {
        link::linktype_name(self.linktype)
    }

    /// Where libpcap was loaded from and its version (for the start-up line).
    pub fn libpcap_version(&self) -> String {
        let lib = self.handle.libpcap();
        format!("{} from {}", lib.version(), lib.loaded_from)
    }

    pub fn stream_stats(&self) -> &StreamStats {
        self.driver.stream_stats()
    }

    /// The first failure of the `-w` recording, once: the recording has
    /// stopped then, the capture goes on.
    pub fn take_savefile_error(&mut self) -> Option<SavefileError> {
        self.recording.error.take()
    }

    /// Reads at most one packet (sleeping [`IDLE_SLEEP`] when none is
    /// waiting) and passes the events that are due, in time order, to `out`.
    /// Returns whether a packet was read.
    pub fn poll<F: FnMut(&Event)>(&mut self, out: &mut F) -> Result<bool, LiveCaptureError> {
        let mut emit = |ev: &Event| {
            out(ev);
            true
        };
        let raw = match self.handle.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => {
                std::thread::sleep(IDLE_SLEEP);
                // Nothing came: time still passes for connections waiting to be classified.
                self.driver.idle(Timestamp::now(), &mut emit);
                return Ok(false);
            }
            Err(source) => {
                return Err(LiveCaptureError::Read {
                    iface: self.iface.clone(),
                    source,
                })
            }
        };
        if let Some(s) = self.recording.file.as_mut() {
            let data = match self.mask.as_mut() {
                Some(m) => m.apply(self.linktype, raw.data),
                None => std::borrow::Cow::Borrowed(raw.data),
            };
            let r = s.record(raw.ts_sec, raw.ts_usec, raw.orig_len, &data);
            self.recording.check(r);
        }
        self.packets += 1;
        let pkt = Packet {
            frame: self.packets,
            ts: Timestamp::from_secs_nanos(raw.ts_sec, raw.ts_usec.saturating_mul(1000)),
            linktype: self.linktype,
            data: raw.data,
            orig_len: raw.orig_len,
            leg: None,
            alias: None,
        };
        self.driver.packet(0, &self.source, &pkt, &mut emit);
        Ok(true)
    }

    /// Flushes the savefile (called every second and at the end).
    pub fn flush(&mut self) {
        if let Some(s) = self.recording.file.as_mut() {
            let r = s.flush();
            self.recording.check(r);
        }
    }

    /// Ends the run: emits what reassembly and classification still hold,
    /// flushes the savefile.
    pub fn finish<F: FnMut(&Event)>(mut self, now: Timestamp, out: &mut F) -> LiveStats {
        self.driver.finish(now, &mut |ev: &Event| {
            out(ev);
            true
        });
        let drops = self.handle.drops().unwrap_or_default();
        self.flush();
        let summary = self.driver.summary();
        LiveStats {
            packets: summary.packets,
            tcp_packets: summary.tcp_packets,
            dropped: drops.dropped,
            if_dropped: drops.if_dropped,
            savefile_failed: self.recording.failed,
            savefile_error: self.recording.error.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_from_ports() {
        assert_eq!(port_filter(&[5672]), "tcp port 5672");
        assert_eq!(port_filter(&[5672, 5682]), "tcp port 5672 or tcp port 5682");
    }

    #[test]
    fn raw_ip_dlts_are_written_as_linktype_raw() {
        assert_eq!(linktype_of_dlt(12), linktype::RAW);
        assert_eq!(linktype_of_dlt(14), linktype::RAW);
        assert_eq!(linktype_of_dlt(1), linktype::ETHERNET);
        assert_eq!(linktype_of_dlt(113), linktype::LINUX_SLL);
    }
}
