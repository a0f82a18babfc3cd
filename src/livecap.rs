//! The live interface source: libpcap (through the `pcap` crate) on one
//! interface, with a BPF filter, feeding the same stages as a capture file:
//! [`link::tcp_segment`] → [`Reassembler`] → [`Tracker`] → events.
//!
//! Packets are numbered from 1 in the order libpcap hands them over, as
//! Wireshark numbers the file `-w` writes, and keep libpcap's timestamps. The
//! read has a short timeout so the caller can print live verdicts and notice
//! a stop request between packets. Owns the capture handle and the optional
//! savefile; knows nothing of sinks or the analyzer.

use std::path::{Path, PathBuf};

use crate::event::{Event, Timestamp};
use crate::link;
use crate::stream::{StreamConfig, StreamStats, Tracker};
use crate::tcp::{PacketRef, Reassembler, TcpOutput};

/// How long [`LiveCapture::poll`] sleeps when no packet is waiting.
pub const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_millis(5);

/// Why a live capture cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum LiveCaptureError {
    #[error(
        "cannot capture on {iface}: {message}\n\
         capturing needs root or the CAP_NET_RAW and CAP_NET_ADMIN capabilities, e.g.\n  \
         sudo setcap cap_net_raw,cap_net_admin=eip $(command -v amqptrace)"
    )]
    Permission { iface: String, message: String },
    #[error("cannot capture on {iface}: {source}")]
    Open {
        iface: String,
        #[source]
        source: pcap::Error,
    },
    #[error("invalid capture filter '{filter}': {source}")]
    Filter {
        filter: String,
        #[source]
        source: pcap::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: pcap::Error,
    },
    #[error("reading from {iface}: {source}")]
    Read {
        iface: String,
        #[source]
        source: pcap::Error,
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

/// Packet counts for the end-of-run summary.
#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    pub packets: u64,
    pub tcp_packets: u64,
    /// Dropped by the kernel or the interface, as libpcap reports them.
    pub dropped: u64,
    pub if_dropped: u64,
}

/// An open live capture.
pub struct LiveCapture {
    iface: String,
    cap: pcap::Capture<pcap::Active>,
    linktype: i32,
    save: Option<pcap::Savefile>,
    reassembler: Reassembler,
    tracker: Tracker,
    stats: LiveStats,
}

impl LiveCapture {
    /// Opens `iface` with `filter` (BPF), optionally writing every packet to `write` (pcap).
    pub fn open(
        iface: &str,
        filter: &str,
        cfg: StreamConfig,
        write: Option<&Path>,
    ) -> Result<Self, LiveCaptureError> {
        let open_err = |source: pcap::Error| {
            let message = source.to_string();
            let lower = message.to_lowercase();
            if lower.contains("permission") || lower.contains("not permitted") {
                LiveCaptureError::Permission {
                    iface: iface.to_string(),
                    message,
                }
            } else {
                LiveCaptureError::Open {
                    iface: iface.to_string(),
                    source,
                }
            }
        };
        let mut cap = pcap::Capture::from_device(iface)
            .map_err(open_err)?
            .promisc(false)
            .snaplen(262_144)
            // Room for bursts while the tracer is busy (libpcap's default is 2 MB).
            .buffer_size(64 << 20)
            .immediate_mode(true)
            .open()
            .map_err(open_err)?
            // Non-blocking: libpcap's read timeout does not expire on Linux in
            // immediate mode when no packet comes, and the caller must get
            // control back to print live verdicts and notice a stop request.
            .setnonblock()
            .map_err(open_err)?;
        cap.filter(filter, true)
            .map_err(|source| LiveCaptureError::Filter {
                filter: filter.to_string(),
                source,
            })?;
        let save = match write {
            Some(p) => Some(cap.savefile(p).map_err(|source| LiveCaptureError::Write {
                path: p.to_path_buf(),
                source,
            })?),
            None => None,
        };
        let linktype = cap.get_datalink().0;
        Ok(LiveCapture {
            iface: iface.to_string(),
            cap,
            linktype,
            save,
            reassembler: Reassembler::new(),
            tracker: Tracker::new(cfg),
            stats: LiveStats::default(),
        })
    }

    /// The interface's link type name (for the start-up line).
    pub fn linktype_name(&self) -> String {
        link::linktype_name(self.linktype)
    }

    pub fn stream_stats(&self) -> &StreamStats {
        self.tracker.stats()
    }

    /// Reads at most one packet (sleeping [`IDLE_SLEEP`] when none is
    /// waiting) and passes its events to `out`. Returns whether a packet was read.
    pub fn poll<F: FnMut(Event)>(&mut self, out: &mut F) -> Result<bool, LiveCaptureError> {
        let packet = match self.cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::TimeoutExpired) => {
                std::thread::sleep(IDLE_SLEEP);
                return Ok(false);
            }
            Err(source) => {
                return Err(LiveCaptureError::Read {
                    iface: self.iface.clone(),
                    source,
                })
            }
        };
        if let Some(s) = self.save.as_mut() {
            s.write(&packet);
        }
        self.stats.packets += 1;
        let ts = Timestamp::from_secs_nanos(
            packet.header.ts.tv_sec as i64,
            (packet.header.ts.tv_usec as u32).saturating_mul(1000),
        );
        let frame = self.stats.packets;
        let Ok(seg) = link::tcp_segment(self.linktype, packet.data) else {
            return Ok(true);
        };
        self.stats.tcp_packets += 1;
        let p = PacketRef {
            file: 0,
            frame,
            ts,
            seq: frame,
        };
        let tracker = &mut self.tracker;
        self.reassembler
            .handle(p, &seg, &mut |o: TcpOutput<'_>| tracker.handle(o, out));
        Ok(true)
    }

    /// Flushes the savefile (called every second and at the end).
    pub fn flush(&mut self) {
        if let Some(s) = self.save.as_mut() {
            let _ = s.flush();
        }
    }

    /// Ends the run: reports what reassembly still holds, flushes the savefile.
    pub fn finish<F: FnMut(Event)>(mut self, now: Timestamp, out: &mut F) -> LiveStats {
        let p = PacketRef {
            file: 0,
            frame: 0,
            ts: now,
            seq: self.stats.packets + 1,
        };
        let tracker = &mut self.tracker;
        self.reassembler
            .finish(p, &mut |o: TcpOutput<'_>| tracker.handle(o, out));
        if let Ok(s) = self.cap.stats() {
            self.stats.dropped = s.dropped as u64;
            self.stats.if_dropped = s.if_dropped as u64;
        }
        self.flush();
        self.stats
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
}
