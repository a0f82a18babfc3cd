//! The sharded run of capture files (`--threads N`): connections spread over
//! worker threads for reassembly, classification and decoding, their events
//! merged back on the caller's thread into the one order
//! [`super::run_files_with_keylog`] gives them.
//!
//! This module owns the workers, the batches they hand over and the merge; it
//! never touches what the stages do with a packet. Every worker reads every
//! input itself (each file mapped once per worker, its pages dropped behind
//! it), in the same order, through the same read loop as the one-thread run
//! ([`super::read_inputs`], [`super::Front`]): the run's counters, the TLS
//! secrets of pcapng blocks, the proxy legs' address aliases and the capture
//! time are then the same in every worker without a dispatcher to send them.
//! A worker reassembles and decodes only the connections of its shard (the
//! unordered address pair, hashed: both directions on one worker); for the
//! others' packets it only lets time pass (the classification window, the
//! reassembler's memory of closed connections), as the one reassembler and
//! tracker of a one-thread run would.
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
//!
//! Input that cannot be read once per worker (a pipe, a device) or a file
//! that grew while the workers opened it runs on one thread.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use super::{open_all, read_inputs, recorded_end, Feed, Front, PipelineError, RunSummary};
use crate::event::{Event, Timestamp};
use crate::source::file::{CaptureError, CaptureReader, Packet};
use crate::stream::{StreamConfig, StreamStats, Tracker};
use crate::tcp::{PacketRef, Reassembler, TcpOutput};
use crate::tls::KeyLog;

/// Events a worker gathers before it hands them over.
const BATCH_EVENTS: usize = 2048;
/// Packets a worker reads, at most, before it says how far it has read.
const BATCH_PACKETS: u32 = 4096;
/// Batches handed over and not yet merged, per worker.
const IN_FLIGHT: usize = 4;

/// [`super::run_files_with_keylog`] on `threads` workers; the same events in
/// the same order, `on_event` called on this thread. One thread, or input
/// that cannot be read once per worker, runs the one-thread driver itself.
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
    let Some(sizes) = file_sizes(paths).filter(|_| threads > 1) else {
        return super::run_files_with_keylog(paths, cfg, keylog, on_event);
    };
    let mut inputs = Vec::with_capacity(threads);
    for _ in 0..threads {
        inputs.push(open_all(paths)?);
    }
    // A capture still being written: every worker must read the same packets.
    if file_sizes(paths).as_ref() != Some(&sizes) {
        drop(inputs);
        return super::run_files_with_keylog(paths, cfg, keylog, on_event);
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut lanes = Vec::with_capacity(threads);
        for (index, readers) in inputs.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
            let (back, spare) = mpsc::channel();
            let mut tracker = Tracker::new(cfg.clone());
            tracker.set_tls_keylog(keylog.clone());
            let worker = Worker {
                index,
                shards: threads,
                front: Front::default(),
                reassembler: Reassembler::with_packet_seq_ids(),
                tracker,
                oldest: None,
                batch: Batch::default(),
                unsent: 0,
                tx,
                spare,
                stop: &stop,
                gone: false,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("amqptrace-shard-{index}"))
                .spawn_scoped(scope, move || worker.run(readers));
            if let Err(e) = spawned {
                stop.store(true, Ordering::Relaxed);
                return Err(PipelineError::Thread(e));
            }
            lanes.push(Lane::new(rx, back));
        }
        let result = Merger::new(on_event).run(&mut lanes);
        // Workers still reading (the output failed) see the flag or a closed channel.
        stop.store(true, Ordering::Relaxed);
        drop(lanes);
        result
    })
}

/// The byte lengths of `paths` when every one is a regular file (read once
/// per worker), else None.
fn file_sizes(paths: &[PathBuf]) -> Option<Vec<u64>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        })
        .collect()
}

/// The worker of a connection: both directions of an address pair hash alike.
/// The ports are added, not hashed, so that a client's connections on
/// consecutive ports to one broker spread evenly.
fn shard_of(a: SocketAddr, b: SocketAddr, shards: usize) -> usize {
    let (lo, hi) = if a.ip() <= b.ip() {
        (a.ip(), b.ip())
    } else {
        (b.ip(), a.ip())
    };
    let mut h = rustc_hash::FxHasher::default();
    lo.hash(&mut h);
    hi.hash(&mut h);
    let h = (h.finish() >> 8).wrapping_add(u64::from(a.port()) + u64::from(b.port()));
    (h % shards as u64) as usize
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

/// What a worker hands over at once; the merger sends the emptied batch back.
#[derive(Default)]
struct Batch {
    marks: Vec<Mark>,
    events: VecDeque<Event>,
    /// The worker has read every packet up to this position.
    through: u64,
}

enum Message {
    Batch(Batch),
    /// The last message: the end of input, or the error that stopped the reading.
    End(Result<Box<End>, PipelineError>),
}

/// A worker's end of input.
struct End {
    /// The run's counters (the same in every worker), its shard's stream counters.
    front: Front,
    streams: StreamStats,
    recorded_end: Option<Timestamp>,
    /// The reassembler's end-of-input flush: (connection id, event).
    flushed: Vec<(u64, Event)>,
}

struct Worker<'s> {
    index: usize,
    shards: usize,
    front: Front,
    reassembler: Reassembler,
    tracker: Tracker,
    /// The oldest waiting time last told.
    oldest: Option<Timestamp>,
    batch: Batch,
    /// Packets read since the last batch went.
    unsent: u32,
    tx: SyncSender<Message>,
    spare: Receiver<Batch>,
    stop: &'s AtomicBool,
    /// The merger stopped: reading on is useless.
    gone: bool,
}

impl Worker<'_> {
    fn run(mut self, mut readers: Vec<CaptureReader<'static>>) {
        let read = read_inputs(&mut readers, &mut self);
        if self.gone {
            return;
        }
        self.send_batch();
        let end = read.map(|()| {
            let now = self.front.summary.last_ts.unwrap_or_default();
            let p = PacketRef {
                file: 0,
                frame: 0,
                ts: now,
                seq: self.front.seq + 1,
            };
            let mut flushed = Vec::new();
            let tracker = &mut self.tracker;
            self.reassembler.finish(p, &mut |o: TcpOutput<'_>| {
                let flow = o.flow;
                tracker.handle(o, &mut |ev: Event| flushed.push((flow, ev)));
            });
            Box::new(End {
                streams: self.tracker.stats().clone(),
                front: std::mem::take(&mut self.front),
                recorded_end: recorded_end(&readers),
                flushed,
            })
        });
        let _ = self.tx.send(Message::End(end));
    }

    /// After each packet: the time that passed, what changed, a batch when due.
    fn after(&mut self, ts: Timestamp, events: u32) -> bool {
        if self.tracker.has_held() {
            self.tracker.expire(ts);
        }
        let oldest = self.tracker.oldest_held_ts();
        if events > 0 || oldest != self.oldest {
            self.oldest = oldest;
            self.batch.marks.push(Mark {
                seq: self.front.seq,
                events,
                oldest,
            });
        }
        self.unsent += 1;
        if self.batch.events.len() >= BATCH_EVENTS || self.unsent >= BATCH_PACKETS {
            self.send_batch();
        }
        !self.gone
    }

    fn send_batch(&mut self) {
        self.unsent = 0;
        if self.stop.load(Ordering::Relaxed) {
            self.gone = true;
            return;
        }
        let next = self.spare.try_recv().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.batch, next);
        batch.through = self.front.seq;
        if self.tx.send(Message::Batch(batch)).is_err() {
            self.gone = true;
        }
    }
}

impl Feed for Worker<'_> {
    fn packet(&mut self, file: u32, source: &Path, pkt: &Packet<'_>) -> bool {
        let mut events = 0;
        if let Some((seg, p)) = self.front.admit(file, source, pkt) {
            if shard_of(seg.src, seg.dst, self.shards) == self.index {
                let out = &mut self.batch.events;
                let before = out.len();
                let tracker = &mut self.tracker;
                self.reassembler.handle(p, &seg, &mut |o: TcpOutput<'_>| {
                    tracker.handle(o, &mut |ev: Event| out.push_back(ev));
                });
                events = (out.len() - before) as u32;
            } else {
                self.reassembler.sweep(p.ts);
            }
        }
        self.after(pkt.ts, events)
    }

    fn secrets(&mut self, text: &[u8]) {
        self.tracker.add_tls_keylog(text);
    }

    fn damage(&mut self, e: CaptureError) {
        self.front.summary.damage.push(e);
    }
}

/// The merger's end of one worker.
struct Lane {
    rx: Receiver<Message>,
    back: Sender<Batch>,
    batch: Batch,
    /// The next mark of `batch` to merge.
    next: usize,
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
                let mut old = std::mem::replace(&mut self.batch, b);
                old.marks.clear();
                old.events.clear();
                let _ = self.back.send(old);
                self.next = 0;
            }
            Ok(Message::End(end)) => self.end = Some(end),
            Err(_) => self.end = Some(Err(PipelineError::WorkerLost)),
        }
    }
}

/// The one-thread driver's hold-and-release, fed the workers' marks in input order.
struct Merger<F> {
    on_event: F,
    held: BTreeMap<(Timestamp, u64), Event>,
    held_n: u64,
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
            held: BTreeMap::new(),
            held_n: 0,
            events: 0,
            oldest: None,
            stopped: false,
            sink_error: None,
        }
    }

    fn run(mut self, lanes: &mut [Lane]) -> Result<RunSummary, PipelineError> {
        loop {
            let seq = lanes
                .iter()
                .filter_map(Lane::head)
                .min()
                .unwrap_or(u64::MAX);
            if let Some(lane) = lanes.iter_mut().find(|l| l.behind(seq)) {
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
        let mut ends = Vec::with_capacity(lanes.len());
        for lane in lanes.iter_mut() {
            match lane.end.take() {
                Some(Ok(end)) => ends.push(end),
                Some(Err(e)) => return Err(e),
                // Every lane has ended when no mark is left (see `Lane::behind`).
                None => return Err(PipelineError::WorkerLost),
            }
        }
        self.finish(&mut ends);
        let mut ends = ends.into_iter();
        let Some(first) = ends.next() else {
            return Err(PipelineError::WorkerLost);
        };
        let End {
            front,
            mut streams,
            recorded_end,
            ..
        } = *first;
        for end in ends {
            streams.amqp_connections += end.streams.amqp_connections;
            streams.tls_connections += end.streams.tls_connections;
            streams.other_connections += end.streams.other_connections;
        }
        if let Some(e) = front.unsupported_error() {
            return Err(e);
        }
        if let Some(e) = self.sink_error {
            return Err(PipelineError::Output(e));
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
            for _ in 0..mark.events {
                let Some(ev) = lane.batch.events.pop_front() else {
                    break;
                };
                self.take(ev, holding);
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

    fn take(&mut self, ev: Event, holding: bool) {
        if self.stopped {
            crate::amqp::fast::recycle(ev);
            return;
        }
        self.events += 1;
        if holding || !self.held.is_empty() {
            self.held_n += 1;
            self.held.insert((ev.ts, self.held_n), ev);
        } else {
            self.emit(ev);
        }
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
        while let Some(entry) = self.held.first_entry() {
            if limit.is_some_and(|limit| entry.key().0 >= limit) {
                break;
            }
            let ev = entry.remove();
            self.emit(ev);
        }
    }

    /// The end of input: every shard's flush, in the order of the packets that
    /// opened their connections, held with the rest, then all released.
    fn finish(&mut self, ends: &mut [Box<End>]) {
        let mut flushed: Vec<(u64, Event)> = ends
            .iter_mut()
            .flat_map(|e| std::mem::take(&mut e.flushed))
            .collect();
        // Stable: one connection's events keep their order (it is in one shard).
        flushed.sort_by_key(|&(flow, _)| flow);
        for (_, ev) in flushed {
            self.events += 1;
            self.held_n += 1;
            self.held.insert((ev.ts, self.held_n), ev);
        }
        self.release(None);
    }
}

#[cfg(test)]
mod tests;
