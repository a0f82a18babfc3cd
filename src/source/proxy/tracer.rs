//! The proxy's tracer: turns the forwarders' [`TraceMsg`] copies into the
//! TCP-like [`TcpOutput`]s a capture file would give, for the shared
//! [`Tracker`] (detection, roles, one decoder per direction). Their pcapng
//! recording is a sink, [`crate::sink::PcapRecorder`].
//!
//! For the live source `frame` is the tracer's running count of messages
//! (one per read from a socket, plus one per connection event), and `ts` the
//! wall-clock time the bytes were read. A copy the channel had no room for
//! leaves a hole in the stream: it becomes a `gap` event (reason `lost`) of
//! the exact size, and the decoder resynchronises after it, as it does for a
//! lossy capture.
//!
//! Runs on one thread, in message order, so every connection is decoded in
//! order. Owns no socket and no clock.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{ConnInfo, TraceKind, TraceMsg};
use crate::event::{Dir, Event, GapReason};
use crate::stream::{StreamConfig, StreamStats, Tracker};
use crate::tcp::{PacketRef, TcpEvent, TcpOutput};

#[derive(Debug, Default)]
struct Track {
    /// Next expected stream offset per direction (0: c2s, 1: s2c).
    next: [u64; 2],
    fin: [bool; 2],
    over: bool,
}

/// Proxy trace messages → timeline events.
#[derive(Debug)]
pub struct Tracer {
    tracker: Tracker,
    conns: HashMap<u64, Track>,
    reads: u64,
}

impl Tracer {
    pub fn new(cfg: StreamConfig) -> Self {
        Tracer {
            tracker: Tracker::new(cfg),
            conns: HashMap::new(),
            reads: 0,
        }
    }

    pub fn stats(&self) -> &StreamStats {
        self.tracker.stats()
    }

    /// Connections seen and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Feeds one message; `out` receives the resulting events in order.
    /// `UpstreamFailed` yields nothing here (it is not a TCP event of an AMQP
    /// connection); the caller reports it.
    pub fn handle<F: FnMut(Event)>(&mut self, msg: &TraceMsg, out: &mut F) {
        if matches!(msg.kind, TraceKind::UpstreamFailed { .. }) {
            return;
        }
        self.reads += 1;
        let p = PacketRef {
            file: 0,
            frame: self.reads,
            ts: msg.ts,
            seq: self.reads,
        };
        let info = &*msg.conn;
        let tracker = &mut self.tracker;
        let mut feed = |dir: Dir, event: TcpEvent<'_>| {
            let (src, dst) = ends(info, dir);
            tracker.handle(
                TcpOutput {
                    flow: info.id,
                    packet: p,
                    src,
                    dst,
                    initiator: Some(info.client),
                    event,
                },
                out,
            );
        };
        let track = self.conns.entry(info.id).or_insert_with(|| {
            // The Open message may have been dropped: the connection opens at its first sign of life.
            feed(Dir::C2S, TcpEvent::Open);
            Track::default()
        });
        if track.over {
            if matches!(msg.kind, TraceKind::Closed) {
                self.conns.remove(&info.id);
            }
            return;
        }
        let d = msg.dir as usize;
        let catch_up = |track: &mut Track, offset: u64, feed: &mut dyn FnMut(Dir, TcpEvent<'_>)| {
            if offset > track.next[d] {
                feed(
                    msg.dir,
                    TcpEvent::Gap {
                        bytes: Some(offset - track.next[d]),
                        reason: GapReason::Lost,
                    },
                );
                track.next[d] = offset;
            }
        };
        match &msg.kind {
            TraceKind::Open | TraceKind::UpstreamFailed { .. } => {}
            TraceKind::Data { offset, bytes } => {
                catch_up(track, *offset, &mut feed);
                feed(msg.dir, TcpEvent::Data(bytes));
                track.next[d] = offset + bytes.len() as u64;
            }
            TraceKind::Fin { offset } => {
                catch_up(track, *offset, &mut feed);
                if !track.fin[d] {
                    track.fin[d] = true;
                    feed(msg.dir, TcpEvent::Fin);
                }
            }
            TraceKind::Reset { .. } => {
                track.over = true;
                feed(msg.dir, TcpEvent::Reset);
            }
            // The receiver of `dir` is the one not reading: as its zero window.
            TraceKind::WriteStalled => feed(msg.dir.reverse(), TcpEvent::ZeroWindow),
            TraceKind::WriteResumed => feed(msg.dir.reverse(), TcpEvent::WindowOpen),
            TraceKind::Closed => {
                // A side without FIN here was closed by the proxy's own shutdown
                // (after --drain): that is not the peers' doing, so the timeline
                // (and the final verdicts) end with the state the peers left, as
                // a capture stopped at that moment would.
                self.conns.remove(&info.id);
            }
        }
    }
}

/// Sender and receiver of `dir` in the live timeline: the client's real
/// address and the broker's.
fn ends(info: &ConnInfo, dir: Dir) -> (SocketAddr, SocketAddr) {
    match dir {
        Dir::C2S => (info.client, info.upstream),
        Dir::S2C => (info.upstream, info.client),
    }
}
