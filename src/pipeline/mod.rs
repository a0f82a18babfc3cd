//! The packet driver: packets → link → tcp → stream → events, in capture
//! order, for capture files ([`run_files`]) and the live interface
//! ([`crate::source::live`]) alike ([`Driver`]).
//!
//! [`run_files`] opens every file up front (so a bad argument fails before
//! any output), merges several files by packet time, and hands each event to
//! the caller's closure. The driver owns the glue only: every stage it calls
//! knows nothing of the others, and the closure (sinks, analyzer) knows
//! nothing of files or interfaces.
//!
//! It stays beside `source/`, not in it: a source hands out packets and
//! knows no later stage, while this driver is the one place that knows both
//! the packets and the stages after them.
//!
//! Ordering: while a connection is still unclassified, its input waits in the
//! [`Tracker`], and the events of every later packet wait here behind it, so
//! that a connection classified late still reaches the analyzer in time order.
//! That wait is bounded by the tracker's classification bounds (bytes,
//! segments, [`crate::stream::CLASSIFY_WINDOW`] of capture time per
//! connection) and by [`MAX_HELD_EVENTS`] here: past it, the oldest
//! unclassified connection is declared not AMQP and the events behind it go.

pub mod shard;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::analyze::Horizon;
use crate::event::{Event, Timestamp};
use crate::link::TcpSegment;
use crate::link::{self, LinkError};
use crate::source::file::{CaptureError, CaptureReader, Leg, Packet};
use crate::stream::{take_event, StreamConfig, StreamStats, Tracker};
use crate::tcp::{PacketRef, Reassembler, TcpOutput};
use crate::tls::KeyLog;

/// Why a run stops.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("{path}: unsupported link type {name}: amqptrace reads Ethernet, Linux cooked (SLL, SLL2), BSD loopback and raw IP")]
    UnsupportedLinkType { path: PathBuf, name: String },
    /// The consumer of events failed (e.g. the output disk is full).
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
    /// A worker thread of a sharded run ([`shard`]) failed: `Some` the reason
    /// it could not be started, `None` when it ended without saying how.
    #[error("{}", worker_failure(.0.as_ref()))]
    Worker(Option<io::Error>),
}

fn worker_failure(start: Option<&io::Error>) -> String {
    match start {
        Some(e) => format!("cannot start a worker thread: {e}"),
        None => "a worker thread ended early".to_string(),
    }
}

/// What a run saw, for the end-of-run summary and the exit code.
#[derive(Debug, Default)]
pub struct RunSummary {
    /// Packets read, of every kind.
    pub packets: u64,
    /// Packets that carried a TCP segment.
    pub tcp_packets: u64,
    /// Timeline events handed to the caller.
    pub events: u64,
    /// Time of the latest packet read.
    pub last_ts: Option<Timestamp>,
    /// When the recording stopped, where every file says so (a pcapng's
    /// `isb_endtime`): the latest of them. `None` when any file records no
    /// end (a pcap), since its traffic after its last packet is unknown.
    pub recorded_end: Option<Timestamp>,
    /// Connections the stream stage classified: AMQP, TLS, other.
    pub streams: StreamStats,
    /// Damage found after some packets were read: everything before it was processed.
    pub damage: Vec<CaptureError>,
    /// Non-fatal notes (packets of unsupported link types in a pcapng, malformed headers).
    pub warnings: Vec<String>,
}

impl RunSummary {
    /// Where the analysis of what was read ends: see [`horizon_of`].
    pub fn horizon(&self) -> Horizon {
        horizon_of(self.recorded_end, self.last_ts)
    }
}

/// The horizon of an offline input: the recorded end of a pcapng that has one
/// (never before its last packet), else the last packet or event.
pub fn horizon_of(recorded_end: Option<Timestamp>, last: Option<Timestamp>) -> Horizon {
    let last = last.unwrap_or_default();
    match recorded_end {
        Some(end) => Horizon::Recorded(end.max(last)),
        None => Horizon::LastPacket(last),
    }
}

/// What an offline run reads: the capture files (merged by packet time), where
/// AMQP is in them, the TLS secrets beside those the files carry, and how
/// many worker threads decode them ([`shard`]; 1: this module's driver alone).
pub struct Input<'a> {
    pub captures: &'a [PathBuf],
    pub cfg: &'a StreamConfig,
    pub keylog: KeyLog,
    pub threads: usize,
}

impl Input<'_> {
    /// Runs the pipeline, calling `on_event` on this thread for each event in
    /// time order; the same events in the same order with any thread count.
    pub fn run<F>(self, on_event: F) -> Result<RunSummary, PipelineError>
    where
        F: FnMut(&Event) -> io::Result<()>,
    {
        shard::run_files(self.captures, self.cfg, self.keylog, self.threads, on_event)
    }
}

/// Runs the decode pipeline over `paths`, calling `on_event` for each event in time order.
pub fn run_files<F>(
    paths: &[PathBuf],
    cfg: &StreamConfig,
    on_event: F,
) -> Result<RunSummary, PipelineError>
where
    F: FnMut(&Event) -> io::Result<()>,
{
    run_files_with_keylog(paths, cfg, KeyLog::default(), on_event)
}

/// [`run_files`], with the TLS secrets of a key log (`--tls-keylog`) added to
/// those the files carry themselves (pcapng Decryption Secrets Blocks, always read).
pub fn run_files_with_keylog<F>(
    paths: &[PathBuf],
    cfg: &StreamConfig,
    keylog: KeyLog,
    mut on_event: F,
) -> Result<RunSummary, PipelineError>
where
    F: FnMut(&Event) -> io::Result<()>,
{
    let mut readers = open_all(paths)?;
    let mut driver = Driver::new(cfg.clone());
    driver.tracker.set_tls_keylog(keylog);
    let mut sink_error = None;
    let mut emit = |ev: &Event| -> bool {
        match on_event(ev) {
            Ok(()) => true,
            Err(e) => {
                sink_error = Some(e);
                false
            }
        }
    };
    read_inputs(
        &mut readers,
        &mut DriverFeed {
            driver: &mut driver,
            emit: &mut emit,
        },
    )?;
    let end = driver.front.summary.last_ts.unwrap_or_default();
    driver.finish(end, &mut emit);
    driver.front.summary.recorded_end = recorded_end(&readers);
    if let Some(e) = driver.front.unsupported_error() {
        return Err(e);
    }
    if let Some(e) = sink_error {
        return Err(PipelineError::Output(e));
    }
    Ok(driver.into_summary())
}

/// Opens every input up front, so that a bad argument fails before any output.
fn open_all(paths: &[PathBuf]) -> Result<Vec<CaptureReader<'static>>, PipelineError> {
    let mut readers = Vec::with_capacity(paths.len());
    for p in paths {
        readers.push(CaptureReader::open(p)?);
    }
    Ok(readers)
}

/// The latest recorded end of the inputs, when every one records its end.
fn recorded_end(readers: &[CaptureReader<'_>]) -> Option<Timestamp> {
    readers
        .iter()
        .map(|r| r.recorded_end())
        .try_fold(None, |acc: Option<Timestamp>, end| {
            end.map(|e| Some(acc.map_or(e, |a| a.max(e))))
        })
        .flatten()
}

/// What the read loop ([`read_inputs`]) hands its packets to: the one-thread
/// [`Driver`], or each worker of the sharded run ([`shard`]), which all read
/// the same packets in the same order.
trait Feed {
    /// One packet of input `file`; false stops the reading.
    fn packet(&mut self, file: u32, source: &Path, pkt: &Packet<'_>) -> bool;
    /// TLS secrets a pcapng carries (a Decryption Secrets Block), in file order.
    fn secrets(&mut self, text: &[u8]);
    /// Damage after some packets were read: what came before stands.
    fn damage(&mut self, e: CaptureError);
}

/// The one-thread driver and the caller's event closure, as a [`Feed`].
struct DriverFeed<'a, E> {
    driver: &'a mut Driver,
    emit: &'a mut E,
}

impl<E: FnMut(&Event) -> bool> Feed for DriverFeed<'_, E> {
    fn packet(&mut self, file: u32, source: &Path, pkt: &Packet<'_>) -> bool {
        self.driver.packet(file, source, pkt, self.emit)
    }
    fn secrets(&mut self, text: &[u8]) {
        self.driver.tracker.add_tls_keylog(text);
    }
    fn damage(&mut self, e: CaptureError) {
        self.driver.front.summary.damage.push(e);
    }
}

/// Reads every packet of `readers` into `feed`: one file in its own order,
/// several merged by packet time. Stops early when `feed` says so.
fn read_inputs<F: Feed>(
    readers: &mut [CaptureReader<'static>],
    feed: &mut F,
) -> Result<(), PipelineError> {
    let mut secrets = Vec::new();
    if let [r] = readers {
        let path = r.path().to_path_buf();
        loop {
            match r.next_packet_with_secrets(&mut secrets) {
                Ok(Some(pkt)) => {
                    if !secrets.is_empty() {
                        feed.secrets(&secrets);
                        secrets.clear();
                    }
                    if !feed.packet(0, &path, &pkt) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_partial() => {
                    feed.damage(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    } else {
        merge(readers, feed)
    }
}

/// An owned copy of a packet, for the time-ordered merge of several files.
struct Owned {
    frame: u64,
    ts: Timestamp,
    linktype: i32,
    orig_len: u32,
    data: Vec<u8>,
    leg: Option<Leg>,
    alias: Option<crate::source::file::LegAlias>,
}

fn merge<F: Feed>(
    readers: &mut [CaptureReader<'static>],
    feed: &mut F,
) -> Result<(), PipelineError> {
    let mut heads: Vec<Option<Owned>> = Vec::with_capacity(readers.len());
    let fill = |r: &mut CaptureReader<'static>,
                slot: &mut Option<Owned>,
                feed: &mut F|
     -> Result<(), PipelineError> {
        let mut buf = slot.take().map(|o| o.data).unwrap_or_default();
        let mut secrets = Vec::new();
        let next = r.next_packet_with_secrets(&mut secrets);
        // Secrets are keyed by the session they open: adding them a packet
        // early (this packet waits for the merge) changes nothing else.
        if !secrets.is_empty() {
            feed.secrets(&secrets);
        }
        match next {
            Ok(Some(p)) => {
                buf.clear();
                buf.extend_from_slice(p.data);
                *slot = Some(Owned {
                    frame: p.frame,
                    ts: p.ts,
                    linktype: p.linktype,
                    orig_len: p.orig_len,
                    data: buf,
                    leg: p.leg,
                    alias: p.alias,
                });
            }
            Ok(None) => {}
            Err(e) if e.is_partial() => feed.damage(e),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    };
    for r in readers.iter_mut() {
        let mut slot = None;
        fill(r, &mut slot, feed)?;
        heads.push(slot);
    }
    loop {
        // Earliest head; ties go to the earlier file, keeping each file's own order.
        let next = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|o| (o.ts, i)))
            .min();
        let Some((_, i)) = next else { break };
        if let Some(o) = heads[i].as_ref() {
            let pkt = Packet {
                frame: o.frame,
                ts: o.ts,
                linktype: o.linktype,
                data: &o.data,
                orig_len: o.orig_len,
                leg: o.leg,
                alias: o.alias,
            };
            let path = readers[i].path().to_path_buf();
            if !feed.packet(i as u32, &path, &pkt) {
                return Ok(());
            }
        }
        fill(&mut readers[i], &mut heads[i], feed)?;
    }
    Ok(())
}

/// Events held behind unclassified connections, at most. Past it, the oldest
/// unclassified connection is declared not AMQP (an AMQP connection shows
/// itself in its first segments, long before this many events of others).
pub const MAX_HELD_EVENTS: usize = 65_536;

/// What every packet goes through before reassembly, in input order: the
/// run's counters, the proxy legs of amqptrace's recordings, the link layer.
/// The one-thread [`Driver`] and every worker of a sharded run ([`shard`]) own one each.
#[derive(Default)]
struct Front {
    summary: RunSummary,
    seq: u64,
    warned_linktypes: Vec<i32>,
    unsupported: Option<(PathBuf, i32)>,
    /// amqptrace recordings: (file, the proxy's address on a broker leg) → the client's address.
    leg_aliases: HashMap<(u32, SocketAddr), SocketAddr>,
}

impl Front {
    /// Counts one packet of input `file` and returns its TCP segment (addresses
    /// of a recording's broker leg named as the live proxy names them) with
    /// its identity, or None when it carries no TCP to reassemble (the sharded
    /// reader's form, which copies the segment into a worker's batch anyway).
    #[inline(always)]
    fn admit<'p>(
        &mut self,
        file: u32,
        source: &Path,
        pkt: &Packet<'p>,
    ) -> Option<(TcpSegment<'p>, PacketRef)> {
        self.admit_then(file, source, pkt, |_, seg, p| (*seg, p))
    }

    /// [`Front::admit`], handing the segment, its identity and the summary to
    /// `then` where it was read instead of returning them: the one-thread
    /// driver then reassembles it in place (returned, the ~100-byte segment
    /// was copied out of its Option, 55 instructions a packet on the storm
    /// slice).
    // Always inlined: called once a packet from the two drivers; as a call it
    // passed the segment and its identity through memory (2.4 M instructions
    // of 200.5 M on the storm slice).
    #[inline(always)]
    fn admit_then<'p, R>(
        &mut self,
        file: u32,
        source: &Path,
        pkt: &Packet<'p>,
        then: impl FnOnce(&mut RunSummary, &TcpSegment<'p>, PacketRef) -> R,
    ) -> Option<R> {
        self.seq += 1;
        self.summary.packets += 1;
        self.summary.last_ts = Some(pkt.ts);
        // An amqptrace recording holds each proxied connection twice, once per
        // leg: read it once, on the broker leg, named as the live proxy names
        // it (the client's address, the broker's).
        if pkt.leg == Some(Leg::Client) {
            return None;
        }
        if let Some(a) = pkt.alias {
            self.leg_aliases.insert((file, a.via), a.client);
        }
        // The fast path on its own first: its Option is built in place, where
        // the Result of `tcp_segment` was built then copied (-1.6 M
        // instructions of 145 M on the storm slice).
        let mut seg = match link::plain(pkt.linktype, pkt.data) {
            Some(s) => s,
            None => match link::tcp_segment_general(pkt.linktype, pkt.data) {
                Ok(s) => s,
                Err(e) => {
                    self.no_segment(e, source, pkt);
                    return None;
                }
            },
        };
        if pkt.leg == Some(Leg::Broker) {
            for addr in [&mut seg.src, &mut seg.dst] {
                if let Some(client) = self.leg_aliases.get(&(file, *addr)) {
                    *addr = *client;
                }
            }
        }
        self.summary.tcp_packets += 1;
        let p = PacketRef {
            file,
            frame: pkt.frame,
            ts: pkt.ts,
            seq: self.seq,
        };
        Some(then(&mut self.summary, &seg, p))
    }

    /// A packet without a TCP segment: the first of an unsupported link type is
    /// told. Out of line, as the rare case (#[cold] cost 0.8 M instructions more
    /// on the storm slice, by the layout it gave the hot path).
    #[inline(never)]
    fn no_segment(&mut self, e: LinkError, source: &Path, pkt: &Packet<'_>) {
        if let LinkError::UnsupportedLinkType(lt) = e {
            if !self.warned_linktypes.contains(&lt) {
                self.warned_linktypes.push(lt);
                self.unsupported.get_or_insert((source.to_path_buf(), lt));
                self.summary.warnings.push(format!(
                    "{}: packets of unsupported link type {} skipped (first: packet {})",
                    source.display(),
                    link::linktype_name(lt),
                    pkt.frame
                ));
            }
        }
    }

    /// The run read no TCP at all because its link type is unknown: an error, not a warning.
    fn unsupported_error(&self) -> Option<PipelineError> {
        if self.summary.tcp_packets > 0 {
            return None;
        }
        self.unsupported
            .as_ref()
            .map(|(path, lt)| PipelineError::UnsupportedLinkType {
                path: path.clone(),
                name: link::linktype_name(*lt),
            })
    }
}

/// Events waiting behind a connection not yet classified, in the order they
/// go out: by time, then by arrival. The one-thread [`Driver`] and the
/// sharded merger ([`shard`]) both hold and release through it, so that
/// their orders are one.
#[derive(Default)]
struct HeldEvents {
    events: BTreeMap<(Timestamp, u64), Event>,
    arrived: u64,
}

impl HeldEvents {
    fn hold(&mut self, ev: Event) {
        self.arrived += 1;
        self.events.insert((ev.ts, self.arrived), ev);
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Hands `out` every held event older than `limit` (all, without one), in order.
    fn release(&mut self, limit: Option<Timestamp>, mut out: impl FnMut(Event)) {
        while let Some(entry) = self.events.first_entry() {
            if limit.is_some_and(|limit| entry.key().0 >= limit) {
                break;
            }
            out(entry.remove());
        }
    }
}

/// The stages of one run (files or a live interface), fed packet by packet;
/// emits events in capture time order.
pub struct Driver {
    front: Front,
    reassembler: Reassembler,
    tracker: Tracker,
    /// Events waiting behind a connection that is not yet classified.
    held: HeldEvents,
    /// The most events `held` ever had (for tests and the curious).
    held_max: usize,
    stopped: bool,
}

impl Driver {
    pub fn new(cfg: StreamConfig) -> Self {
        Driver {
            front: Front::default(),
            reassembler: Reassembler::new(),
            tracker: Tracker::new(cfg),
            held: HeldEvents::default(),
            held_max: 0,
            stopped: false,
        }
    }

    /// What the run saw so far.
    pub fn summary(&self) -> &RunSummary {
        &self.front.summary
    }

    /// The summary, with the stream counters, at the end of the run.
    pub fn into_summary(self) -> RunSummary {
        let mut summary = self.front.summary;
        summary.streams = self.tracker.stats().clone();
        summary
    }

    pub fn stream_stats(&self) -> &StreamStats {
        self.tracker.stats()
    }

    /// Events waiting behind unclassified connections now.
    pub fn held_events(&self) -> usize {
        self.held.len()
    }

    /// The most events that ever waited behind unclassified connections.
    pub fn held_events_max(&self) -> usize {
        self.held_max
    }

    /// Connections waiting to be classified now.
    pub fn undecided_connections(&self) -> usize {
        self.tracker.undecided_connections()
    }

    /// Feeds one packet of input `file` (`source` names it in warnings).
    /// `emit` gets each event in time order and returns false to stop the
    /// run; so does this function then.
    pub fn packet<E: FnMut(&Event) -> bool>(
        &mut self,
        file: u32,
        source: &Path,
        pkt: &Packet<'_>,
        emit: &mut E,
    ) -> bool {
        let tracker = &mut self.tracker;
        let held = &mut self.held;
        let stopped = &mut self.stopped;
        let reassembler = &mut self.reassembler;
        let holding = tracker.has_held();
        self.front.admit_then(file, source, pkt, |summary, seg, p| {
            // Each event in the tracker's slot: taken when held, else left
            // for the tracker to take back (see `Tracker::handle_in_place`).
            let mut forward = |ev: &mut Event| {
                if *stopped {
                    drop(take_event(ev));
                    return;
                }
                summary.events += 1;
                if holding || !held.is_empty() {
                    held.hold(take_event(ev));
                } else {
                    if !emit(ev) {
                        *stopped = true;
                    }
                }
            };
            reassembler.handle(p, seg, &mut |o: TcpOutput<'_>| {
                tracker.handle_in_place(o, &mut forward);
            });
        });
        self.idle(pkt.ts, emit)
    }

    /// Time has come to `now` (the newest packet's, or a live capture's clock
    /// while no packet comes): connections unclassified for too long are
    /// given up, and the events no longer behind one are emitted. Returns
    /// false when `emit` asked to stop.
    #[inline]
    pub fn idle<E: FnMut(&Event) -> bool>(&mut self, now: Timestamp, emit: &mut E) -> bool {
        // Nearly always: nothing waits, nothing to expire or release (one
        // branch, where the checks below and the call to `release` cost 1.7 M
        // instructions of 143 M on the storm slice).
        if self.held.is_empty() && !self.tracker.has_held() {
            return !self.stopped;
        }
        if self.tracker.has_held() {
            self.tracker.expire(now);
        }
        self.held_max = self.held_max.max(self.held.len());
        while self.held.len() > MAX_HELD_EVENTS && self.tracker.give_up_oldest() {
            self.release(emit, false);
        }
        self.release(emit, false);
        !self.stopped
    }

    /// Emits held events older than the oldest packet an unclassified connection still holds.
    fn release<E: FnMut(&Event) -> bool>(&mut self, emit: &mut E, all: bool) {
        if self.held.is_empty() {
            return;
        }
        let limit = if all {
            None
        } else {
            self.tracker.oldest_held_ts()
        };
        let stopped = &mut self.stopped;
        self.held.release(limit, |ev| {
            if !*stopped && !emit(&ev) {
                *stopped = true;
            }
            crate::amqp::fast::recycle(ev);
        });
    }

    /// Ends the run at `now`: what reassembly and classification still hold
    /// is decided and emitted.
    pub fn finish<E: FnMut(&Event) -> bool>(&mut self, now: Timestamp, emit: &mut E) {
        let p = PacketRef {
            file: 0,
            frame: 0,
            ts: now,
            seq: self.front.seq + 1,
        };
        let tracker = &mut self.tracker;
        let held = &mut self.held;
        let events = &mut self.front.summary.events;
        self.reassembler.finish(p, &mut |o: TcpOutput<'_>| {
            tracker.handle(o, &mut |ev: Event| {
                *events += 1;
                held.hold(ev);
            });
        });
        self.release(emit, true);
    }
}
