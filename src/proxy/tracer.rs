//! The proxy's tracer: turns the forwarders' [`TraceMsg`] copies into the
//! TCP-like [`TcpOutput`]s a capture file would give, for the shared
//! [`Tracker`] (detection, roles, one decoder per direction), and records them
//! as pcapng legs.
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
use std::io::{self, Write};
use std::net::SocketAddr;

use super::{ConnInfo, TraceKind, TraceMsg};
use crate::event::{Dir, Event, GapReason};
use crate::sink::PcapngWriter;
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

/// Records trace messages as pcapng: two legs per proxied connection,
/// client↔proxy (leg `2·id`) and proxy↔broker (leg `2·id+1`), with the
/// addresses the proxy's sockets really have.
pub struct PcapRecorder<W: Write> {
    w: PcapngWriter<W>,
    next: HashMap<u64, [u64; 2]>,
}

impl<W: Write> PcapRecorder<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Ok(PcapRecorder {
            w: PcapngWriter::new(out)?,
            next: HashMap::new(),
        })
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn finish(self) -> io::Result<W> {
        self.w.into_inner()
    }

    pub fn record(&mut self, msg: &TraceMsg) -> io::Result<()> {
        let info = &*msg.conn;
        let (front, back) = (info.id * 2, info.id * 2 + 1);
        let ts = msg.ts;
        if matches!(msg.kind, TraceKind::UpstreamFailed { .. }) {
            // The client leg was accepted and then reset by the proxy.
            self.w.open(front, info.client, info.listen, ts)?;
            self.w.reset(front, false, ts)?;
            return Ok(());
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.next.entry(info.id) {
            if matches!(msg.kind, TraceKind::Closed) {
                return Ok(());
            }
            e.insert([0, 0]);
            self.w.open(front, info.client, info.listen, ts)?;
            if let Some(local) = info.upstream_local {
                self.w.open(back, local, info.upstream, ts)?;
            }
        }
        // Client→broker bytes are sent by the client on the front leg and by
        // the proxy (the back leg's client) on the back leg.
        let c2s = msg.dir == Dir::C2S;
        let d = msg.dir as usize;
        match &msg.kind {
            TraceKind::Open | TraceKind::UpstreamFailed { .. } => {}
            TraceKind::Data { offset, bytes } => {
                if let Some(next) = self.next.get_mut(&info.id) {
                    if *offset > next[d] {
                        let hole = offset - next[d];
                        self.w.skip(front, c2s, hole);
                        self.w.skip(back, c2s, hole);
                    }
                    next[d] = offset + bytes.len() as u64;
                }
                // The sending side's leg first: the proxy read before it wrote.
                let (first, second) = if c2s { (front, back) } else { (back, front) };
                self.w.data(first, c2s, bytes, ts)?;
                self.w.data(second, c2s, bytes, ts)?;
            }
            TraceKind::Fin { .. } => {
                let (first, second) = if c2s { (front, back) } else { (back, front) };
                self.w.fin(first, c2s, ts)?;
                self.w.fin(second, c2s, ts)?;
            }
            TraceKind::Reset { .. } => {
                // The failed side reset its leg; the proxy reset the other.
                let (first, second) = if c2s { (front, back) } else { (back, front) };
                // On both legs the RST comes from the same end: the client and
                // the proxy (front leg's client, back leg's client) for c2s, the
                // broker and the proxy (servers) for s2c.
                self.w.reset(first, c2s, ts)?;
                self.w.reset(second, c2s, ts)?;
            }
            TraceKind::Closed => {
                // As in the timeline: no FIN the peers did not send.
                self.w.forget(front);
                self.w.forget(back);
                self.next.remove(&info.id);
            }
        }
        Ok(())
    }
}
