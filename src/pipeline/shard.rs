//! The sharded run of capture files (`--threads N`): connections spread over
//! worker threads for reassembly, classification and decoding, their events
//! merged back on the caller's thread into the one order
//! [`super::run_files_with_keylog`] gives them.
//!
//! This module owns the threads, the batches they hand over and the merge;
//! it never touches what the stages do with a packet. One reading thread
//! reads the inputs through the same read loop and [`super::Front`] as the
//! one-thread run (the run's counters, the proxy legs' address aliases, the
//! link layer), and hands each TCP segment, copied into the worker's batch,
//! to the worker of its connection (the unordered address pair, hashed: both
//! directions on one worker). Every other worker is told the packet's time
//! only, so that time passes for it as for the one reassembler and tracker
//! of a one-thread run (the classification window, the memory of closed
//! connections), and gets the TLS secrets of pcapng blocks where they come.
//!
//! Order. The one-thread [`super::Driver`] emits a packet's events at once
//! while no connection waits to be classified, and otherwise holds them,
//! released by (time, arrival) behind the oldest packet a waiting connection
//! holds. A worker therefore hands over, per packet of its own that made
//! events and per packet after which its oldest waiting packet changed, a
//! [`Mark`]: the packet's position in the input, its events, its shard's
//! oldest waiting time. The merger takes the marks of all workers in input
//! order (a worker with nothing to say still says how far it has read, so
//! none stalls the merge) and runs the driver's hold-and-release on them: the
//! same events in the same order. The reassembler's end-of-input flush comes
//! from every worker at the end, ordered by the packet that opened each
//! connection, as one reassembler orders it.
//!
//! Where the one-thread run's order cannot be kept: its caps on what waits
//! for classification summed over all connections ([`super::MAX_HELD_EVENTS`]
//! events held behind waiting connections, the tracker's bytes of all waiting
//! connections) are per worker here (the merger cannot tell a worker to give
//! up a connection at the packet one tracker of all would). Past
//! [`super::MAX_HELD_EVENTS`], the merger emits what it holds instead, so
//! memory stays bounded; the connection the one-thread run would have given
//! up may then still be decoded, its events out of time order. Both take a
//! connection unclassified for a long stretch of heavy traffic (tens of
//! thousands of events of others, or 16 MiB of its own and its peers' held
//! bytes); `--threads 1` is the exact order then.

use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use super::{
    open_all, read_inputs, recorded_end, Feed, Front, HeldEvents, PipelineError, RunSummary,
};
use crate::event::{Event, Timestamp};
use crate::link::TcpSegment;
use crate::source::file::{CaptureError, CaptureReader, Packet};
use crate::stream::{StreamConfig, StreamStats, Tracker};
use crate::tcp::{PacketRef, Reassembler, TcpOutput};
use crate::tls::KeyLog;

/// Packets the reader hands to the workers at once.
const WORK_PACKETS: usize = 512;
/// Bytes of segments the reader copies for one worker before it hands them over.
const WORK_BYTES: usize = 32 << 10;
/// Events a worker gathers before it hands them over.
const BATCH_EVENTS: usize = 256;
/// Batches handed over and not yet taken, per channel.
const IN_FLIGHT: usize = 4;

/// [`super::run_files_with_keylog`] on `threads` workers; the same events in
/// the same order, `on_event` called on this thread. One thread runs the
/// one-thread driver itself.
pub fn run_files<F>(
    paths: &[PathBuf],
    cfg: &StreamConfig,
    keylog: KeyLog,
    threads: usize,
    on_event: F,
) -> Result<RunSummary, PipelineError>
where
    F: FnMut(&Event) -> io::Result<()>,
{
    if threads <= 1 {
        return super::run_files_with_keylog(paths, cfg, keylog, on_event);
    }
    let mut readers = open_all(paths)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut lanes = Vec::with_capacity(threads);
        let mut shards = Vec::with_capacity(threads);
        let spawn_failed = |e| {
            stop.store(true, Ordering::Relaxed);
            PipelineError::Worker(Some(e))
        };
        for index in 0..threads {
            let (work_tx, work_rx) = mpsc::sync_channel(IN_FLIGHT);
            let (work_back, work_spare) = mpsc::channel();
            let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
            let (back, spare) = mpsc::channel();
            let mut tracker = Tracker::new(cfg.clone());
            tracker.set_tls_keylog(keylog.clone());
            let worker = Worker {
                reassembler: Reassembler::with_packet_seq_ids(),
                tracker,
                oldest: None,
                batch: Batch::sized(),
                returned: Vec::new(),
                last_ts: Timestamp::default(),
                tx,
                spare,
                gone: false,
            };
            std::thread::Builder::new()
                .name(format!("amqptrace-shard-{index}"))
                .spawn_scoped(scope, move || worker.run(work_rx, work_back))
                .map_err(spawn_failed)?;
            lanes.push(Lane::new(rx, back));
            shards.push(ShardInput {
                work: Work::sized(),
                tx: work_tx,
                spare: work_spare,
            });
        }
        let dispatcher = Dispatcher {
            front: Front::default(),
            shards,
            stop: &stop,
            gone: false,
        };
        let reading = std::thread::Builder::new()
            .name("amqptrace-read".into())
            .spawn_scoped(scope, move || dispatcher.run(&mut readers))
            .map_err(spawn_failed)?;
        let mut merger = Merger::new(on_event);
        let merged = merger.merge(&mut lanes);
        // Threads still at work (the output failed) see the flag or a closed channel.
        stop.store(true, Ordering::Relaxed);
        drop(lanes);
        let read = match reading.join() {
            Ok(read) => read,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let ends = merged?;
        let (front, recorded_end) = read?;
        merger.finish(ends, front, recorded_end)
    })
}

/// The worker of a connection: both directions of an address pair hash alike.
/// The ports' sum goes through Fibonacci hashing (the top bits of a product by
/// 2^64/φ), under which any arithmetic run of keys spreads evenly: a client's
/// connections to one broker on ports one apart, or two apart (Linux picks
/// even ports for outgoing connections), are shared out by turns, not by lot.
fn shard_of(a: SocketAddr, b: SocketAddr, shards: usize) -> usize {
    let (lo, hi) = if a.ip() <= b.ip() {
        (a.ip(), b.ip())
    } else {
        (b.ip(), a.ip())
    };
    let mut h = rustc_hash::FxHasher::default();
    lo.hash(&mut h);
    hi.hash(&mut h);
    let key = h
        .finish()
        .wrapping_add(u64::from(a.port()) + u64::from(b.port()));
    let fraction = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ((fraction * shards as u64) >> 32) as usize
}

/// One packet of the input, as one worker sees it: small, since every
/// worker gets one per packet.
enum Entry {
    /// A segment of this worker's connections: [`Work::segments`]`[i]`.
    Segment(u32),
    /// A packet of another worker's connections (`tcp`), or of none: only its time counts here.
    Elsewhere { seq: u64, ts: Timestamp, tcp: bool },
    /// TLS secrets of a pcapng block, `len` bytes at `at` in [`Work::data`], before the next packet.
    Secrets { at: u32, len: u32 },
}

/// A segment handed to its worker; its payload is `len` bytes at `at` in
/// [`Work::data`] (`seg.payload` is empty).
struct Segment {
    p: PacketRef,
    seg: TcpSegment<'static>,
    at: usize,
    len: usize,
}

/// What the reader hands one worker at once; the worker sends the emptied one back.
#[derive(Default)]
struct Work {
    entries: Vec<Entry>,
    segments: Vec<Segment>,
    data: Vec<u8>,
}

impl Work {
    /// A new one, its buffers at their working size (a batch that grew from
    /// empty would copy its bytes at each doubling).
    fn sized() -> Self {
        Work {
            entries: Vec::with_capacity(WORK_PACKETS + 1),
            segments: Vec::with_capacity(WORK_PACKETS + 1),
            data: Vec::with_capacity(2 * WORK_BYTES),
        }
    }
}

/// The reader's end of one worker.
struct ShardInput {
    work: Work,
    tx: SyncSender<Work>,
    spare: Receiver<Work>,
}

/// The reading thread: every packet through the one [`Front`], its segment
/// to the worker of its connection, its time to every other.
struct Dispatcher<'s> {
    front: Front,
    shards: Vec<ShardInput>,
    stop: &'s AtomicBool,
    /// A worker is gone (the merger stopped): reading on is useless.
    gone: bool,
}

impl Dispatcher<'_> {
    fn run(
        mut self,
        readers: &mut [CaptureReader<'static>],
    ) -> Result<(Front, Option<Timestamp>), PipelineError> {
        let read = read_inputs(readers, &mut self);
        self.hand_over();
        read.map(|()| (self.front, recorded_end(readers)))
    }

    /// Hands every worker its work so far. All at once: a worker waiting for
    /// input never waits behind another's full channel (see [`Merger::merge`]).
    fn hand_over(&mut self) {
        if self.stop.load(Ordering::Relaxed) {
            self.gone = true;
        }
        for shard in &mut self.shards {
            if self.gone {
                return;
            }
            let mut next = shard.spare.try_recv().unwrap_or_else(|_| Work::sized());
            next.entries.clear();
            next.segments.clear();
            next.data.clear();
            let work = std::mem::replace(&mut shard.work, next);
            if shard.tx.send(work).is_err() {
                self.gone = true;
            }
        }
    }
}

impl Feed for Dispatcher<'_> {
    fn packet(&mut self, file: u32, source: &Path, pkt: &Packet<'_>) -> bool {
        let (seq, ts) = (self.front.seq + 1, pkt.ts);
        let mut full = false;
        match self.front.admit(file, source, pkt) {
            Some((seg, p)) => {
                let owner = shard_of(seg.src, seg.dst, self.shards.len());
                for (i, shard) in self.shards.iter_mut().enumerate() {
                    let work = &mut shard.work;
                    if i == owner {
                        let at = work.data.len();
                        work.data.extend_from_slice(seg.payload);
                        work.entries
                            .push(Entry::Segment(work.segments.len() as u32));
                        work.segments.push(Segment {
                            p,
                            seg: TcpSegment {
                                payload: &[],
                                ..seg
                            },
                            at,
                            len: seg.payload.len(),
                        });
                        full |= work.data.len() >= WORK_BYTES;
                    } else {
                        work.entries.push(Entry::Elsewhere { seq, ts, tcp: true });
                    }
                }
            }
            None => {
                for shard in &mut self.shards {
                    let e = Entry::Elsewhere {
                        seq,
                        ts,
                        tcp: false,
                    };
                    shard.work.entries.push(e);
                }
            }
        }
        if full || self.shards[0].work.entries.len() >= WORK_PACKETS {
            self.hand_over();
        }
        !self.gone
    }

    fn secrets(&mut self, text: &[u8]) {
        for shard in &mut self.shards {
            let work = &mut shard.work;
            let at = work.data.len();
            work.data.extend_from_slice(text);
            work.entries.push(Entry::Secrets {
                at: at as u32,
                len: text.len() as u32,
            });
        }
    }

    fn damage(&mut self, e: CaptureError) {
        self.front.summary.damage.push(e);
    }
}

/// What happened at one packet of the input in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// The packet's position in the input ([`PacketRef::seq`]).
    seq: u64,
    /// How many of the batch's next events this packet made.
    events: u32,
    /// The time of the oldest packet a connection of this shard still waits
    /// with, after this packet ([`Tracker::oldest_held_ts`]).
    oldest: Option<Timestamp>,
}

/// What a worker hands over at once. The merger emits events in place and
/// sends the batch back with them, so that the worker's decoder reuses their
/// boxes (the spares of [`crate::amqp::fast`] are per thread); an event it
/// must hold is taken out, an [`Event::placeholder`] left behind.
#[derive(Default)]
struct Batch {
    marks: Vec<Mark>,
    events: Vec<Event>,
    /// The worker has read every packet up to this position.
    through: u64,
}

impl Batch {
    /// A new one, its buffers at their working size.
    fn sized() -> Self {
        Batch {
            marks: Vec::with_capacity(WORK_PACKETS),
            events: Vec::with_capacity(2 * BATCH_EVENTS),
            through: 0,
        }
    }
}

enum Message {
    Batch(Batch),
    /// The last message: the end of input.
    End(Box<End>),
}

/// A worker's end of input.
struct End {
    streams: StreamStats,
    /// The reassembler's end-of-input flush: (connection id, event).
    flushed: Vec<(u64, Event)>,
}

/// One shard's reassembly, classification and decoding.
struct Worker {
    reassembler: Reassembler,
    tracker: Tracker,
    /// The oldest waiting time last told.
    oldest: Option<Timestamp>,
    batch: Batch,
    /// Events the merger is done with, for their boxes.
    returned: Vec<Event>,
    /// The time of the latest packet read.
    last_ts: Timestamp,
    tx: SyncSender<Message>,
    spare: Receiver<Batch>,
    /// The merger stopped: working on is useless.
    gone: bool,
}

impl Worker {
    fn run(mut self, input: Receiver<Work>, back: Sender<Work>) {
        let mut through = 0;
        for work in input {
            for entry in &work.entries {
                through = self.entry(entry, &work);
            }
            let _ = back.send(work);
            self.send_batch(through);
            if self.gone {
                return;
            }
        }
        // The end of input: the reader is done (or stopped, and nobody listens).
        let p = PacketRef {
            file: 0,
            frame: 0,
            ts: self.last_ts,
            seq: through + 1,
        };
        let mut flushed = Vec::new();
        let tracker = &mut self.tracker;
        self.reassembler.finish(p, &mut |o: TcpOutput<'_>| {
            let flow = o.flow;
            tracker.handle(o, &mut |ev: Event| flushed.push((flow, ev)));
        });
        let end = End {
            streams: self.tracker.stats().clone(),
            flushed,
        };
        let _ = self.tx.send(Message::End(Box::new(end)));
    }

    /// Handles one entry of the input; returns the position of the packet read last.
    fn entry(&mut self, entry: &Entry, work: &Work) -> u64 {
        let data = &work.data;
        match *entry {
            Entry::Segment(i) => {
                let Some(&Segment { p, seg, at, len }) = work.segments.get(i as usize) else {
                    return self.batch.through;
                };
                let seg = TcpSegment {
                    payload: &data[at..at + len],
                    ..seg
                };
                let out = &mut self.batch.events;
                let before = out.len();
                let tracker = &mut self.tracker;
                self.reassembler.handle(p, &seg, &mut |o: TcpOutput<'_>| {
                    tracker.handle(o, &mut |ev: Event| out.push(ev));
                });
                let events = out.len() - before;
                // Boxes back to the decoder's spares at the pace they are taken.
                for _ in 0..=events {
                    match self.returned.pop() {
                        Some(ev) => crate::amqp::fast::recycle(ev),
                        None => break,
                    }
                }
                self.after(p.seq, p.ts, events as u32);
                p.seq
            }
            Entry::Elsewhere { seq, ts, tcp } => {
                if tcp {
                    self.reassembler.sweep(ts);
                }
                self.after(seq, ts, 0);
                seq
            }
            Entry::Secrets { at, len } => {
                let (at, len) = (at as usize, len as usize);
                self.tracker.add_tls_keylog(&data[at..at + len]);
                self.batch.through
            }
        }
    }

    /// After each packet, as the one-thread driver's `idle`: the time that
    /// passed, a mark when something changed, a batch when due.
    fn after(&mut self, seq: u64, ts: Timestamp, events: u32) {
        self.last_ts = ts;
        if self.tracker.has_held() {
            self.tracker.expire(ts);
        }
        let oldest = self.tracker.oldest_held_ts();
        if events > 0 || oldest != self.oldest {
            self.oldest = oldest;
            self.batch.marks.push(Mark {
                seq,
                events,
                oldest,
            });
        }
        self.batch.through = seq;
        if self.batch.events.len() >= BATCH_EVENTS {
            self.send_batch(seq);
        }
    }

    fn send_batch(&mut self, through: u64) {
        if self.gone {
            return;
        }
        let mut next = self.spare.try_recv().unwrap_or_else(|_| Batch::sized());
        next.marks.clear();
        // The boxes of the events the merger is done with, for the next packets;
        // those of the last round not reused by now are simply freed.
        self.returned.clear();
        std::mem::swap(&mut self.returned, &mut next.events);
        let mut batch = std::mem::replace(&mut self.batch, next);
        batch.through = through;
        self.batch.through = through;
        if self.tx.send(Message::Batch(batch)).is_err() {
            self.gone = true;
        }
    }
}

/// The merger's end of one worker.
struct Lane {
    rx: Receiver<Message>,
    back: Sender<Batch>,
    batch: Batch,
    /// The next mark of `batch` to merge.
    next: usize,
    /// The first event of that mark.
    next_event: usize,
    end: Option<Result<Box<End>, PipelineError>>,
    /// The shard's oldest waiting time, as of the marks merged.
    oldest: Option<Timestamp>,
}

impl Lane {
    fn new(rx: Receiver<Message>, back: Sender<Batch>) -> Self {
        Lane {
            rx,
            back,
            batch: Batch::default(),
            next: 0,
            next_event: 0,
            end: None,
            oldest: None,
        }
    }

    /// The position of the next mark, when one is at hand.
    fn head(&self) -> Option<u64> {
        self.batch.marks.get(self.next).map(|m| m.seq)
    }

    /// Whether the merge must wait for this worker before merging position `seq`.
    fn behind(&self, seq: u64) -> bool {
        self.end.is_none() && self.head().is_none() && self.batch.through < seq
    }

    /// Waits for the worker's next batch (or its end), the emptied one sent back.
    fn refill(&mut self) {
        match self.rx.recv() {
            Ok(Message::Batch(b)) => {
                let old = std::mem::replace(&mut self.batch, b);
                let _ = self.back.send(old);
                self.next = 0;
                self.next_event = 0;
            }
            Ok(Message::End(end)) => self.end = Some(Ok(end)),
            Err(_) => self.end = Some(Err(PipelineError::Worker(None))),
        }
    }
}

/// The one-thread driver's hold-and-release, fed the workers' marks in input order.
struct Merger<F> {
    on_event: F,
    held: HeldEvents,
    events: u64,
    /// The oldest waiting time of all shards.
    oldest: Option<Timestamp>,
    stopped: bool,
    sink_error: Option<io::Error>,
}

impl<F: FnMut(&Event) -> io::Result<()>> Merger<F> {
    fn new(on_event: F) -> Self {
        Merger {
            on_event,
            held: HeldEvents::default(),
            events: 0,
            oldest: None,
            stopped: false,
            sink_error: None,
        }
    }

    /// Merges the workers' marks in input order until every worker has ended.
    ///
    /// The merge waits only for a worker that has neither a mark at hand nor
    /// said it has read past the next position, and of those for the one that
    /// has said least. The reader hands every worker its work at once, in
    /// turn; a worker waiting for input has done all it was given, so the
    /// reader is not held up by a full channel of a worker the merge waits
    /// for, nor by one behind it: no wait goes round in a circle.
    fn merge(&mut self, lanes: &mut [Lane]) -> Result<Vec<End>, PipelineError> {
        loop {
            let seq = lanes
                .iter()
                .filter_map(Lane::head)
                .min()
                .unwrap_or(u64::MAX);
            // The one furthest behind: another may be held up by the reader,
            // itself held up by this one (see above).
            let behind = lanes.iter_mut().filter(|l| l.behind(seq));
            if let Some(lane) = behind.min_by_key(|l| l.batch.through) {
                lane.refill();
                continue;
            }
            if seq == u64::MAX {
                break;
            }
            self.merge_at(seq, lanes);
            if self.stopped {
                return Err(PipelineError::Output(
                    self.sink_error
                        .take()
                        .unwrap_or_else(|| io::Error::other("stopped")),
                ));
            }
        }
        lanes
            .iter_mut()
            .map(|lane| match lane.end.take() {
                Some(end) => end.map(|end| *end),
                // Every lane has ended when no mark is left (see `Lane::behind`).
                None => Err(PipelineError::Worker(None)),
            })
            .collect()
    }

    /// The end of input: every shard's flush, in the order of the packets that
    /// opened their connections, held with the rest, then all released; the
    /// reader's counters with the shards' stream counters.
    fn finish(
        &mut self,
        mut ends: Vec<End>,
        front: Front,
        recorded_end: Option<Timestamp>,
    ) -> Result<RunSummary, PipelineError> {
        let mut flushed: Vec<(u64, Event)> = ends
            .iter_mut()
            .flat_map(|e| std::mem::take(&mut e.flushed))
            .collect();
        // Stable: one connection's events keep their order (it is in one shard).
        flushed.sort_by_key(|&(flow, _)| flow);
        for (_, ev) in flushed {
            self.events += 1;
            self.held.hold(ev);
        }
        self.release(None);
        if let Some(e) = front.unsupported_error() {
            return Err(e);
        }
        if let Some(e) = self.sink_error.take() {
            return Err(PipelineError::Output(e));
        }
        let mut streams = StreamStats::default();
        for end in &ends {
            streams.add(&end.streams);
        }
        let mut summary = front.summary;
        summary.recorded_end = recorded_end;
        summary.streams = streams;
        summary.events = self.events;
        Ok(summary)
    }

    /// Merges every shard's mark at input position `seq`, as the one-thread
    /// driver handles that packet: its events held while any connection
    /// waits (or events wait), then released behind the oldest waiting time.
    fn merge_at(&mut self, seq: u64, lanes: &mut [Lane]) {
        let holding = self.oldest.is_some();
        for lane in lanes.iter_mut() {
            let Some(&mark) = lane.batch.marks.get(lane.next).filter(|m| m.seq == seq) else {
                continue;
            };
            lane.next += 1;
            lane.oldest = mark.oldest;
            let from = lane.next_event;
            lane.next_event += mark.events as usize;
            let Some(events) = lane.batch.events.get_mut(from..lane.next_event) else {
                continue;
            };
            if self.stopped {
                continue;
            }
            self.events += events.len() as u64;
            if holding || !self.held.is_empty() {
                for ev in events {
                    self.held.hold(std::mem::replace(ev, Event::placeholder()));
                }
            } else {
                for ev in events.iter() {
                    if let Err(e) = (self.on_event)(ev) {
                        self.sink_error = Some(e);
                        self.stopped = true;
                        break;
                    }
                }
            }
        }
        self.oldest = lanes.iter().filter_map(|l| l.oldest).min();
        if self.held.len() > super::MAX_HELD_EVENTS && self.oldest.is_some() {
            // The one-thread driver gives the oldest waiting connection up here;
            // the merger cannot (see the module's doc), and lets what it holds go.
            self.release(None);
        }
        self.release(self.oldest);
    }

    fn emit(&mut self, ev: Event) {
        if !self.stopped {
            if let Err(e) = (self.on_event)(&ev) {
                self.sink_error = Some(e);
                self.stopped = true;
            }
        }
        crate::amqp::fast::recycle(ev);
    }

    /// Emits held events older than `limit` (all without one).
    fn release(&mut self, limit: Option<Timestamp>) {
        let mut held = std::mem::take(&mut self.held);
        held.release(limit, |ev| self.emit(ev));
        self.held = held;
    }
}

#[cfg(test)]
mod tests;
