//! The sans-IO analyzer: keeps the state of every AMQP connection, channel and
//! consumer seen in the timeline and turns it into verdicts (`docs/verdicts.md`)
//! and the `--format json` analysis document (`docs/analysis.md`).
//!
//! It owns the state machine and the verdict rules. It never touches bytes,
//! sockets, files, threads or clocks: [`Analyzer::handle`] takes one
//! [`Event`] at a time, and [`Analyzer::analysis`] takes the current time from
//! the caller (the timestamp of the last event, for a capture file), so a file,
//! the proxy and a live interface get the same answers for the same events.
//!
//! Memory stays bounded by what is in flight: unacknowledged deliveries are
//! kept per channel until settled, evidence lists are capped, latencies go
//! into a fixed-size histogram per consumer, and a closed connection keeps
//! only its compact summary.

mod causes;
mod histogram;
mod model;
mod retire;
mod routing;
mod summary;
mod text;
mod verdicts;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use rustc_hash::{FxBuildHasher, FxHashMap};
use std::time::Duration;

use crate::event::{
    Conn, ContentHeader, Dir, Event, EventKind, Frame, GapReason, Method, MethodKind, Text,
    Timestamp,
};

use histogram::LatencyHistogram;
pub use model::{
    Analysis, Cause, Certainty, ConnectionSummary, ConsumerSummary, EvidenceRef, LatencySummary,
    Scope, Verdict, VerdictKind, SCHEMA,
};
pub use text::write_verdict_block;

/// Thresholds of the verdict rules. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzerConfig {
    /// How long a condition that only the passing of time proves must have
    /// lasted before its verdict is certain rather than uncertain, while
    /// traffic is still flowing ([`Horizon::Live`], the proxy): a connection
    /// that never consumes, a consume with no consume-ok, a full prefetch
    /// window with nothing in the capture to compare it with. Conditions the
    /// frames prove (a publish routed away from a consumer's queue, a window
    /// that stays full while peers settle) need no such wait. Default 5 s:
    /// clients and brokers answer in milliseconds, so 5 s is three orders of
    /// magnitude above any reaction time, and short enough for the few
    /// seconds a test run or a `tcpdump` session holds.
    pub stall_after: Duration,
    /// The same threshold for a finished recording ([`Horizon::Recorded`],
    /// [`Horizon::LastPacket`]): the effective value is `min(stall_after,
    /// capture_stall_after)`. Default 5 s. The CLI's `--stall-after` sets both.
    pub capture_stall_after: Duration,
    /// Delivery→settle latency p95 at or above which a consumer that keeps
    /// settling is `slow_but_healthy`. Default 500 ms: the verdict is
    /// informational (exit code 0), so the threshold should flag what a person
    /// feels: at p95 ≥ 0.5 s one prefetch slot moves at most ~2 messages a
    /// second and a backlog of a hundred waits minutes, while ordinary handlers
    /// settle in milliseconds. RabbitMQ's own limit (`consumer_timeout`,
    /// 30 min) is for stuck consumers, not slow ones.
    pub slow_ack: Duration,
    /// Most evidence references kept in one verdict.
    pub max_evidence: usize,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            stall_after: Duration::from_secs(5),
            capture_stall_after: Duration::from_secs(5),
            slow_ack: Duration::from_millis(500),
            max_evidence: 12,
        }
    }
}

impl AnalyzerConfig {
    /// What `--stall-after D` means: the same threshold live and at the end of a capture.
    pub fn with_stall_after(mut self, d: Duration) -> Self {
        self.stall_after = d;
        self.capture_stall_after = d;
        self
    }
}

/// Where the evidence of an analysis ends, and how that end is known. The
/// wording of a verdict depends on it ("so far" live; "the recording ends" when
/// the recorder wrote down when it stopped; "the last packet" when the file
/// records no end, as a pcap from tcpdump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// Traffic is still flowing (the proxy, a live capture): verdicts are "so far".
    Live(Timestamp),
    /// A finished recording whose end is known: a pcapng interface statistics
    /// block's end time (as dumpcap, the proxy and `run` write it), or the moment
    /// the proxy or `run` stopped. Never earlier than the last event.
    Recorded(Timestamp),
    /// A finished file that records no end: its last packet is the end.
    LastPacket(Timestamp),
}

impl Horizon {
    /// The moment the evidence ends.
    pub fn at(self) -> Timestamp {
        match self {
            Horizon::Live(t) | Horizon::Recorded(t) | Horizon::LastPacket(t) => t,
        }
    }
}

/// A moment in the timeline: when, and which packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub ts: Timestamp,
    pub frame: u64,
}

impl Mark {
    fn of(ev: &Event) -> Mark {
        Mark {
            ts: ev.ts,
            frame: ev.frame,
        }
    }
}

/// Caps on state that would otherwise grow with the capture rather than with what is in flight.
const MAX_GAPS_KEPT: usize = 8;
const MAX_DESTINATIONS: usize = 10_000;
const MAX_MARKS_PER_DESTINATION: usize = 256;
const MAX_BINDINGS_PER_QUEUE: usize = 64;
const MAX_REQUEUED_TRACKED: usize = 10_000;
const MAX_LOOP_EVIDENCE: usize = 8;
/// Rounds of delivery after which a requeued message is in a redelivery loop.
const LOOP_ROUNDS: u32 = 3;

#[derive(Debug, Clone)]
pub(crate) struct GapRec {
    pub at: Mark,
    pub dir: Dir,
    pub bytes: Option<u64>,
    pub reason: GapReason,
}

#[derive(Debug, Clone)]
pub(crate) struct CloseRec {
    pub at: Mark,
    pub by: Dir,
    pub reply_code: u16,
    pub reply_text: String,
    pub failing: Option<MethodKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpEndKind {
    Fin,
    Rst,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpEnd {
    pub at: Mark,
    pub dir: Dir,
    pub kind: TcpEndKind,
    /// Consumers still registered and deliveries unsettled at that moment.
    pub live_consumers: u32,
    pub unacked: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct QosRec {
    pub at: Mark,
    pub prefetch_count: u16,
    pub global: bool,
}

/// The oldest delivery still unacknowledged when the broker closed a channel.
#[derive(Debug, Clone)]
pub(crate) struct HeldDelivery {
    pub delivery_tag: u64,
    pub consumer_tag: Option<String>,
    pub delivered: Mark,
    pub unacked: u32,
}

/// A channel the broker closed (or paused), kept after the channel is gone.
#[derive(Debug, Clone)]
pub(crate) struct ChannelCloseRec {
    pub channel: u16,
    pub close: CloseRec,
    pub oldest_unacked: Option<HeldDelivery>,
    pub consumer_tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct FlowRec {
    pub at: Mark,
    pub dir: Dir,
}

/// One delivery (basic.deliver or basic.get-ok) awaiting its settle.
#[derive(Debug, Clone, Copy)]
struct Unacked {
    tag: u64,
    consumer: Option<u32>,
    at: Mark,
    fingerprint: u64,
    settled: bool,
}

/// The deliver/get-ok whose content header is expected next on the channel.
#[derive(Debug, Clone, Copy)]
struct PendingContent {
    tag: u64,
    consumer: Option<u32>,
    route_hash: u64,
    redelivered: bool,
    at: Mark,
}

#[derive(Debug, Default)]
struct ChannelState {
    /// basic.qos global=false: applies to consumers created after it on this channel.
    consumer_qos: Option<QosRec>,
    /// basic.qos global=true: one window shared by the channel's consumers.
    global_qos: Option<QosRec>,
    global_full_since: Option<Mark>,
    flow_paused: Option<FlowRec>,
    confirm: bool,
    /// Sorted by tag (tags grow by one per delivery on a channel); settled
    /// entries are tombstones popped from the front and compacted when many.
    unacked: VecDeque<Unacked>,
    live_unacked: u32,
    tombstones: u32,
    consumers: Vec<u32>,
    /// basic.consume sent, consume-ok not yet seen (replies come in order).
    pending_consumes: VecDeque<u32>,
    pending_content: Option<PendingContent>,
    get_no_ack: bool,
    /// queue.declare sent, declare-ok not yet seen: (exclusive, auto_delete).
    pending_declares: VecDeque<(bool, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerEnd {
    ClientCancel(Mark),
    BrokerCancel(Mark),
    /// Index into the connection's `channel_closes` when the broker closed the channel.
    ChannelClosed {
        at: Mark,
        by: Dir,
        close: Option<usize>,
    },
    ConnectionClosed {
        at: Mark,
        by: Dir,
    },
    TcpEnded(Mark),
}

impl ConsumerEnd {
    pub(crate) fn at(&self) -> Mark {
        match *self {
            ConsumerEnd::ClientCancel(m)
            | ConsumerEnd::BrokerCancel(m)
            | ConsumerEnd::TcpEnded(m) => m,
            ConsumerEnd::ChannelClosed { at, .. } | ConsumerEnd::ConnectionClosed { at, .. } => at,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LoopEvent {
    pub at: Mark,
    pub method: MethodKind,
    pub delivery_tag: u64,
    pub conn: u32,
    pub channel: u16,
}

/// A message requeued by a nack/reject, followed through its redeliveries.
#[derive(Debug, Clone)]
pub(crate) struct RequeueTrack {
    pub message_id: Option<String>,
    pub rounds: u32,
    /// nack/reject with requeue=true of this message.
    pub requeues: u32,
    pub became_loop: Option<Mark>,
    pub events: Vec<LoopEvent>,
    pub events_dropped: u32,
    /// Where the message is now: `true` once it was delivered again and not yet settled.
    pub outstanding: bool,
}

#[derive(Debug)]
pub(crate) struct ConsumerState {
    /// Never reused, unlike the index, which changes when ended connections retire.
    pub serial: u64,
    pub conn: u32,
    pub channel: u16,
    pub tag: String,
    pub queue: Option<String>,
    pub no_ack: bool,
    pub nowait: bool,
    /// Seen first through a delivery: its basic.consume precedes the capture.
    pub discovered: bool,
    pub consume: Option<Mark>,
    pub consume_ok: Option<Mark>,
    pub cancel_requested: Option<Mark>,
    /// Publish-epoch at registration (see `Destination::after`).
    pub epoch: u64,
    pub qos: Option<QosRec>,
    /// The channel-wide (global) basic.qos in force while the consumer was
    /// registered: kept on the consumer so that it outlives the channel and a
    /// later one is not credited to a consumer already gone.
    pub channel_qos: Option<QosRec>,
    pub deliveries: u64,
    pub redelivered: u64,
    pub acks: u64,
    pub nacks_requeue: u64,
    pub nacks_drop: u64,
    pub rejects_requeue: u64,
    pub rejects_drop: u64,
    pub unacked: u32,
    pub first_delivery: Option<Mark>,
    pub last_delivery: Option<Mark>,
    pub last_settle: Option<Mark>,
    pub first_slow_settle: Option<Mark>,
    pub full_since: Option<Mark>,
    pub latency: LatencyHistogram,
    pub end: Option<ConsumerEnd>,
    /// Fingerprint of the looping message with the most deliveries to this consumer.
    pub loop_fp: Option<u64>,
    /// The earliest delivery that brought any message to it for the third time.
    pub loop_since: Option<Mark>,
}

impl ConsumerState {
    fn prefetch_limit(&self) -> Option<u32> {
        match &self.qos {
            Some(q) if q.prefetch_count > 0 && !self.no_ack => Some(q.prefetch_count as u32),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ConnState {
    /// Never reused, unlike the index, which changes when ended connections retire.
    pub serial: u64,
    pub conn: Conn,
    pub first: Mark,
    pub last: Mark,
    pub saw_open: bool,
    pub saw_handshake: bool,
    /// The first event was neither a SYN nor the start of the AMQP handshake.
    pub start_unseen: bool,
    pub gaps: Vec<GapRec>,
    pub gap_count: u64,
    pub gap_bytes_unknown: bool,
    pub gap_bytes: u64,
    pub errors: u64,
    pub first_error: Option<(Mark, Dir, String)>,
    pub unsupported_protocol: Option<String>,
    pub broker_product: Option<String>,
    pub broker_version: Option<String>,
    pub client_product: Option<String>,
    pub client_version: Option<String>,
    pub connection_name: Option<String>,
    pub user: Option<String>,
    pub vhost: Option<String>,
    pub heartbeat: Option<u16>,
    pub frame_max: Option<u32>,
    /// Last frame from each direction: [c2s, s2c].
    /// Last frame from each direction and its name: [c2s, s2c].
    pub last_frame: [Option<(Mark, &'static str)>; 2],
    /// Name of the first event seen on the connection (`tcp.open`, a method, `gap`...).
    pub first_name: &'static str,
    pub blocked: Option<(Mark, String)>,
    pub last_unblock: Option<(Mark, Mark, String)>,
    pub close: Option<CloseRec>,
    pub close_ok: Option<Mark>,
    pub tcp_end: Option<TcpEnd>,
    pub ended: Option<Mark>,
    channels: FxHashMap<u16, ChannelState>,
    pub channel_closes: Vec<ChannelCloseRec>,
    /// Channels paused by channel.flow when the connection ended (kept for the verdict).
    pub flows_paused: Vec<(u16, FlowRec)>,
    pub client_methods: Box<[u32]>,
    pub last_client_method: Option<(Mark, MethodKind)>,
    pub channels_opened: u32,
    pub consumes: u32,
    pub publishes: u64,
    pub gets: u64,
    pub deliveries: u64,
    pub declared_queues: Vec<String>,
    pub consumers: Vec<u32>,
    /// Lookups the hot methods repeat, remembered by the identity of the decoder's
    /// shared strings (see `event::Text`): same string objects, same answer.
    memo: Memo,
}

/// The last answers of the lookups every publish and delivery makes. A hit is
/// two pointer compares instead of hashing and comparing strings.
#[derive(Debug, Default)]
struct Memo {
    /// (exchange, routing key) of the last publish -> destination index.
    publish: Option<(Text, Text, u32)>,
    /// (exchange, routing key) of the last delivery -> route hash.
    route: Option<(Text, Text, u64)>,
    /// (channel, consumer tag) of the last delivery -> consumer index, valid while
    /// no consumer has been added since (`consumers_len`) and it has not ended.
    consumer: Option<(u16, Text, u32, usize)>,
}

/// The hash that ties a delivered message to its publish destination.
fn route_hash(a: &crate::event::MethodArgs) -> u64 {
    hash_of(&(
        a.exchange.as_deref().unwrap_or(""),
        a.routing_key.as_deref().unwrap_or(""),
    ))
}

fn same(a: &Text, b: &Text) -> bool {
    std::sync::Arc::ptr_eq(a, b)
}

impl ConnState {
    fn new(serial: u64, conn: Conn, ev: &Event) -> Self {
        let start_unseen = match &ev.kind {
            EventKind::TcpOpen | EventKind::ProtocolHeader { .. } => false,
            EventKind::Frame {
                frame: Frame::Method(m),
                ..
            } => m.method != MethodKind::ConnectionStart,
            _ => true,
        };
        ConnState {
            serial,
            conn,
            first: Mark::of(ev),
            last: Mark::of(ev),
            saw_open: false,
            saw_handshake: false,
            start_unseen,
            gaps: Vec::new(),
            gap_count: 0,
            gap_bytes_unknown: false,
            gap_bytes: 0,
            errors: 0,
            first_error: None,
            unsupported_protocol: None,
            broker_product: None,
            broker_version: None,
            client_product: None,
            client_version: None,
            connection_name: None,
            user: None,
            vhost: None,
            heartbeat: None,
            frame_max: None,
            last_frame: [None, None],
            first_name: event_name(&ev.kind),
            blocked: None,
            last_unblock: None,
            close: None,
            close_ok: None,
            tcp_end: None,
            ended: None,
            channels: FxHashMap::default(),
            channel_closes: Vec::new(),
            flows_paused: Vec::new(),
            client_methods: vec![0; MethodKind::ALL.len()].into_boxed_slice(),
            last_client_method: None,
            channels_opened: 0,
            consumes: 0,
            publishes: 0,
            gets: 0,
            deliveries: 0,
            declared_queues: Vec::new(),
            consumers: Vec::new(),
            memo: Memo::default(),
        }
    }

    pub(crate) fn is_incomplete(&self) -> bool {
        self.start_unseen || self.gap_count > 0 || self.errors > 0
    }

    pub(crate) fn open_channels(&self) -> impl Iterator<Item = (u16, Option<&FlowRec>)> {
        self.channels
            .iter()
            .map(|(ch, st)| (*ch, st.flow_paused.as_ref()))
    }
}

/// Where publishes went: one exchange and routing key.
#[derive(Debug)]
pub(crate) struct Destination {
    pub exchange: String,
    pub routing_key: String,
    pub count: u64,
    pub last: Mark,
    /// The first publish after each consumer registration epoch, as (epoch, mark, conn):
    /// the first publish after a consumer's consume-ok is the first entry whose
    /// epoch is at least the consumer's.
    pub after: Vec<(u64, Mark, u32)>,
    pub returned: u64,
    pub first_return: Option<(Mark, u16, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct QueueInfo {
    pub declared: Option<Mark>,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub message_count: Option<u32>,
    pub consumer_count: Option<u32>,
    pub deleted: Option<(Mark, u32)>,
}

/// The analyzer. Feed it events in time order with [`Analyzer::handle`]; ask
/// for verdicts at any moment with [`Analyzer::analysis`].
#[derive(Debug)]
pub struct Analyzer {
    cfg: AnalyzerConfig,
    by_conn: FxHashMap<Conn, u32>,
    pub(crate) conns: Vec<ConnState>,
    pub(crate) consumers: Vec<ConsumerState>,
    /// exchange -> routing key -> index into `destinations`.
    dest_index: FxHashMap<String, FxHashMap<String, u32>>,
    pub(crate) destinations: Vec<Destination>,
    pub(crate) publishes_untracked: u64,
    /// Bumped at every consumer registration; see `Destination::after`.
    epoch: u64,
    pub(crate) queues: FxHashMap<String, QueueInfo>,
    /// queue -> (exchange, binding key) from queue.bind.
    pub(crate) bindings: FxHashMap<String, Vec<(String, String)>>,
    pub(crate) exchange_types: FxHashMap<String, String>,
    pub(crate) requeued: FxHashMap<u64, RequeueTrack>,
    pub(crate) last: Option<Mark>,
    settle_scratch: Vec<Unacked>,
    last_conn: Option<(Conn, u32)>,
    next_serial: u64,
    /// Ended connections whose verdicts are final, kept as bounded summaries.
    pub(crate) retired: retire::Retired,
    /// Events since the last check for connections to retire.
    since_retire_check: u32,
}

/// FxHash of a small key (a route, a message fingerprint): SipHash's DoS
/// resistance buys nothing for a tool reading a capture, at 3-5x the cost.
fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    FxBuildHasher.hash_one(v)
}

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SettleKind {
    Ack,
    Nack,
    Reject,
}

impl Analyzer {
    pub fn new(cfg: AnalyzerConfig) -> Self {
        Analyzer {
            cfg,
            by_conn: FxHashMap::default(),
            conns: Vec::new(),
            consumers: Vec::new(),
            dest_index: FxHashMap::default(),
            destinations: Vec::new(),
            publishes_untracked: 0,
            epoch: 0,
            queues: FxHashMap::default(),
            bindings: FxHashMap::default(),
            exchange_types: FxHashMap::default(),
            requeued: FxHashMap::default(),
            last: None,
            settle_scratch: Vec::new(),
            last_conn: None,
            next_serial: 0,
            retired: retire::Retired::default(),
            since_retire_check: 0,
        }
    }

    pub fn config(&self) -> &AnalyzerConfig {
        &self.cfg
    }

    /// Timestamp and packet of the last event handled.
    pub fn last_event(&self) -> Option<(Timestamp, u64)> {
        self.last.map(|m| (m.ts, m.frame))
    }

    /// Feeds one event. O(1) amortised, except settles with `multiple=true`,
    /// which cost one step per delivery they settle.
    pub fn handle(&mut self, ev: &Event) {
        let mark = Mark::of(ev);
        self.last = Some(mark);
        self.since_retire_check += 1;
        if self.since_retire_check >= retire::CHECK_EVERY {
            self.since_retire_check = 0;
            self.maybe_retire(ev.ts);
        }
        let Some(ci) = self.conn_index(ev) else {
            // A late packet of a connection already retired.
            return;
        };
        {
            let c = &mut self.conns[ci as usize];
            c.last = mark;
        }
        match &ev.kind {
            EventKind::TcpOpen => self.conns[ci as usize].saw_open = true,
            EventKind::TcpClose | EventKind::TcpReset => {
                let kind = if matches!(ev.kind, EventKind::TcpReset) {
                    TcpEndKind::Rst
                } else {
                    TcpEndKind::Fin
                };
                let c = &self.conns[ci as usize];
                if c.tcp_end.is_none() {
                    let live_consumers = c
                        .consumers
                        .iter()
                        .filter(|&&i| self.consumers[i as usize].end.is_none())
                        .count() as u32;
                    let unacked = c.channels.values().map(|st| st.live_unacked).sum();
                    self.conns[ci as usize].tcp_end = Some(TcpEnd {
                        at: mark,
                        dir: ev.dir,
                        kind,
                        live_consumers,
                        unacked,
                    });
                }
                self.end_connection(ci, mark, None);
            }
            EventKind::Gap { bytes, reason } => {
                let c = &mut self.conns[ci as usize];
                c.gap_count += 1;
                match bytes {
                    Some(b) => c.gap_bytes += b,
                    None => c.gap_bytes_unknown = true,
                }
                if *reason == GapReason::MidConnection {
                    c.start_unseen = true;
                }
                if c.gaps.len() < MAX_GAPS_KEPT {
                    c.gaps.push(GapRec {
                        at: mark,
                        dir: ev.dir,
                        bytes: *bytes,
                        reason: *reason,
                    });
                }
            }
            EventKind::Error { error, .. } => {
                let c = &mut self.conns[ci as usize];
                c.errors += 1;
                if c.first_error.is_none() {
                    c.first_error = Some((mark, ev.dir, error.to_string()));
                }
            }
            EventKind::ProtocolHeader {
                protocol,
                supported,
                ..
            } => {
                let c = &mut self.conns[ci as usize];
                c.saw_handshake = true;
                if !supported {
                    c.unsupported_protocol = Some(protocol.clone());
                }
            }
            EventKind::Frame { channel, frame } => {
                let c = &mut self.conns[ci as usize];
                c.last_frame[dir_index(ev.dir)] = Some((mark, frame.name()));
                match frame {
                    Frame::Method(m) => self.on_method(ci, ev, mark, *channel, m),
                    Frame::ContentHeader(h) if ev.dir == Dir::S2C => {
                        self.on_content_header(ci, *channel, h)
                    }
                    _ => {}
                }
            }
        }
    }

    fn conn_index(&mut self, ev: &Event) -> Option<u32> {
        // Consecutive events mostly share a connection: skip the hash lookup.
        if let Some((c, i)) = self.last_conn {
            if c == ev.conn && !matches!(ev.kind, EventKind::TcpOpen) {
                return Some(i);
            }
        }
        let i = self.conn_index_slow(ev)?;
        self.last_conn = Some((ev.conn, i));
        Some(i)
    }

    fn conn_index_slow(&mut self, ev: &Event) -> Option<u32> {
        let syn = matches!(ev.kind, EventKind::TcpOpen);
        if let Some(&i) = self.by_conn.get(&ev.conn) {
            let c = &self.conns[i as usize];
            // A SYN on a finished 4-tuple is a new connection reusing the ports.
            let reused = syn && c.ended.is_some();
            if !reused {
                return Some(i);
            }
        } else if !syn && self.retired.recently(&ev.conn) {
            return None;
        }
        let i = self.conns.len() as u32;
        let serial = self.next_serial;
        self.next_serial += 1;
        self.conns.push(ConnState::new(serial, ev.conn, ev));
        self.by_conn.insert(ev.conn, i);
        Some(i)
    }

    fn channel_mut(&mut self, ci: u32, ch: u16) -> &mut ChannelState {
        self.conns[ci as usize].channels.entry(ch).or_default()
    }

    fn on_method(&mut self, ci: u32, ev: &Event, mark: Mark, ch: u16, m: &Method) {
        let a = &m.args;
        if ev.dir == Dir::C2S {
            let c = &mut self.conns[ci as usize];
            c.client_methods[m.method as usize] =
                c.client_methods[m.method as usize].saturating_add(1);
            if !matches!(
                m.method,
                MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject
            ) {
                c.last_client_method = Some((mark, m.method));
            }
        }
        match (ev.dir, m.method) {
            (Dir::S2C, MethodKind::ConnectionStart) => {
                let c = &mut self.conns[ci as usize];
                c.saw_handshake = true;
                c.broker_product = a.product.clone();
                c.broker_version = a.version.clone();
            }
            (Dir::C2S, MethodKind::ConnectionStartOk) => {
                let c = &mut self.conns[ci as usize];
                c.client_product = a.product.clone();
                c.client_version = a.version.clone();
                c.user = a.user.clone();
                c.connection_name = a.connection_name.clone();
            }
            (Dir::S2C, MethodKind::ConnectionTune) => {
                let c = &mut self.conns[ci as usize];
                if c.heartbeat.is_none() {
                    c.heartbeat = a.heartbeat;
                }
                if c.frame_max.is_none() {
                    c.frame_max = a.frame_max;
                }
            }
            (Dir::C2S, MethodKind::ConnectionTuneOk) => {
                // The client's answer is what both peers use.
                let c = &mut self.conns[ci as usize];
                if a.heartbeat.is_some() {
                    c.heartbeat = a.heartbeat;
                }
                if a.frame_max.is_some() {
                    c.frame_max = a.frame_max;
                }
            }
            (Dir::C2S, MethodKind::ConnectionOpen) => {
                self.conns[ci as usize].vhost = a.vhost.clone();
            }
            (dir, MethodKind::ConnectionClose) => {
                let c = &mut self.conns[ci as usize];
                if c.close.is_none() {
                    c.close = Some(CloseRec {
                        at: mark,
                        by: dir,
                        reply_code: a.reply_code.unwrap_or(0),
                        reply_text: a.reply_text.clone().unwrap_or_default(),
                        failing: a.failing_method,
                    });
                }
                self.end_connection(ci, mark, Some(dir));
            }
            (_, MethodKind::ConnectionCloseOk) => {
                let c = &mut self.conns[ci as usize];
                c.close_ok.get_or_insert(mark);
                self.end_connection(ci, mark, None);
            }
            (Dir::S2C, MethodKind::ConnectionBlocked) => {
                let c = &mut self.conns[ci as usize];
                if c.blocked.is_none() {
                    c.blocked = Some((mark, a.reason.clone().unwrap_or_default()));
                }
            }
            (Dir::S2C, MethodKind::ConnectionUnblocked) => {
                let c = &mut self.conns[ci as usize];
                if let Some((since, reason)) = c.blocked.take() {
                    c.last_unblock = Some((since, mark, reason));
                }
            }
            (Dir::C2S, MethodKind::ChannelOpen) => {
                let c = &mut self.conns[ci as usize];
                c.channels_opened += 1;
                let old = c.channels.insert(ch, ChannelState::default());
                if old.is_some() {
                    // Reopened without a close we saw: its consumers are gone.
                    self.end_channel_consumers_from(ci, old, mark, Dir::C2S, None);
                }
            }
            (dir, MethodKind::ChannelFlow) => {
                let st = self.channel_mut(ci, ch);
                if a.active == Some(false) {
                    if st.flow_paused.is_none() {
                        st.flow_paused = Some(FlowRec { at: mark, dir });
                    }
                } else {
                    st.flow_paused = None;
                }
            }
            (dir, MethodKind::ChannelClose) => self.close_channel(ci, ch, mark, dir, a),
            (Dir::C2S, MethodKind::ConfirmSelect) => self.channel_mut(ci, ch).confirm = true,
            (Dir::C2S, MethodKind::ExchangeDeclare) => {
                if let (Some(x), Some(t)) = (&a.exchange, &a.exchange_type) {
                    if self.exchange_types.len() < MAX_DESTINATIONS {
                        self.exchange_types.insert(x.to_string(), t.clone());
                    }
                }
            }
            (Dir::C2S, MethodKind::QueueDeclare) => {
                let st = self.channel_mut(ci, ch);
                if st.pending_declares.len() < MAX_BINDINGS_PER_QUEUE && a.nowait != Some(true) {
                    st.pending_declares
                        .push_back((a.exclusive.unwrap_or(false), a.auto_delete.unwrap_or(false)));
                }
            }
            (Dir::S2C, MethodKind::QueueDeclareOk) => {
                let flags = self.channel_mut(ci, ch).pending_declares.pop_front();
                if let Some(q) = &a.queue {
                    let c = &mut self.conns[ci as usize];
                    if c.declared_queues.len() < MAX_BINDINGS_PER_QUEUE
                        && !c.declared_queues.contains(q)
                    {
                        c.declared_queues.push(q.clone());
                    }
                    let info = self.queue_info(q);
                    info.declared = Some(mark);
                    info.message_count = a.message_count;
                    info.consumer_count = a.consumer_count;
                    info.deleted = None;
                    if let Some((exclusive, auto_delete)) = flags {
                        info.exclusive = exclusive;
                        info.auto_delete = auto_delete;
                    }
                }
            }
            (Dir::C2S, MethodKind::QueueBind) => {
                if let (Some(q), Some(x)) = (&a.queue, &a.exchange) {
                    let rk = a.routing_key.as_deref().unwrap_or_default().to_string();
                    if self.bindings.len() < MAX_DESTINATIONS || self.bindings.contains_key(q) {
                        let v = self.bindings.entry(q.clone()).or_default();
                        if v.len() < MAX_BINDINGS_PER_QUEUE
                            && !v.iter().any(|(e, k)| **e == **x && *k == rk)
                        {
                            v.push((x.to_string(), rk));
                        }
                    }
                }
            }
            (Dir::C2S, MethodKind::QueueUnbind) => {
                if let (Some(q), Some(x)) = (&a.queue, &a.exchange) {
                    let rk = a.routing_key.as_deref().unwrap_or("");
                    if let Some(v) = self.bindings.get_mut(q.as_str()) {
                        v.retain(|(e, k)| !(**e == **x && k == rk));
                    }
                }
            }
            (Dir::C2S, MethodKind::QueueDelete) => {
                if let Some(q) = &a.queue {
                    self.queue_info(q).deleted = Some((mark, ci));
                }
            }
            (Dir::C2S, MethodKind::BasicQos) => {
                let rec = QosRec {
                    at: mark,
                    prefetch_count: a.prefetch_count.unwrap_or(0),
                    global: a.global.unwrap_or(false),
                };
                let st = self.channel_mut(ci, ch);
                if rec.global {
                    st.global_qos = Some(rec.clone());
                    // A channel-wide limit applies at once to the consumers registered on it.
                    let live: Vec<u32> = st.consumers.clone();
                    for i in live {
                        let cs = &mut self.consumers[i as usize];
                        if cs.end.is_none() {
                            cs.channel_qos = Some(rec.clone());
                        }
                    }
                } else {
                    st.consumer_qos = Some(rec);
                }
            }
            (Dir::C2S, MethodKind::BasicConsume) => {
                let nowait = a.nowait.unwrap_or(false);
                let idx = self.new_consumer(
                    ci,
                    ch,
                    a.consumer_tag.as_deref().unwrap_or_default().to_string(),
                    a.queue.clone(),
                    a.no_ack.unwrap_or(false),
                    false,
                );
                let cs = &mut self.consumers[idx as usize];
                cs.consume = Some(mark);
                cs.nowait = nowait;
                if nowait {
                    self.epoch += 1;
                    self.consumers[idx as usize].epoch = self.epoch;
                } else {
                    self.channel_mut(ci, ch).pending_consumes.push_back(idx);
                }
                self.conns[ci as usize].consumes += 1;
            }
            (Dir::S2C, MethodKind::BasicConsumeOk) => {
                let popped = self.channel_mut(ci, ch).pending_consumes.pop_front();
                let idx = match popped {
                    Some(i) => i,
                    None => {
                        // consume-ok whose consume precedes the capture.
                        let tag = a.consumer_tag.as_deref().unwrap_or_default().to_string();
                        match self.find_consumer(ci, ch, &tag) {
                            Some(i) => i,
                            None => self.new_consumer(ci, ch, tag, None, false, true),
                        }
                    }
                };
                self.epoch += 1;
                let cs = &mut self.consumers[idx as usize];
                if let Some(tag) = &a.consumer_tag {
                    if cs.tag.is_empty() {
                        cs.tag = tag.to_string();
                    }
                }
                cs.consume_ok = Some(mark);
                cs.epoch = self.epoch;
            }
            (dir, MethodKind::BasicCancel) => {
                let tag = a.consumer_tag.as_deref().unwrap_or("");
                if let Some(i) = self.find_consumer(ci, ch, tag) {
                    let cs = &mut self.consumers[i as usize];
                    if cs.end.is_none() {
                        if dir == Dir::S2C {
                            cs.end = Some(ConsumerEnd::BrokerCancel(mark));
                        } else {
                            cs.cancel_requested.get_or_insert(mark);
                            if a.nowait == Some(true) {
                                cs.end = Some(ConsumerEnd::ClientCancel(mark));
                            }
                        }
                    }
                }
            }
            (Dir::S2C, MethodKind::BasicCancelOk) => {
                let tag = a.consumer_tag.as_deref().unwrap_or("");
                if let Some(i) = self.find_consumer(ci, ch, tag) {
                    let cs = &mut self.consumers[i as usize];
                    if cs.end.is_none() {
                        let at = cs.cancel_requested.unwrap_or(mark);
                        cs.end = Some(ConsumerEnd::ClientCancel(at));
                    }
                }
            }
            (Dir::C2S, MethodKind::BasicPublish) => {
                self.conns[ci as usize].publishes += 1;
                let memo = match (
                    &a.exchange,
                    &a.routing_key,
                    &self.conns[ci as usize].memo.publish,
                ) {
                    (Some(x), Some(rk), Some((mx, mrk, i))) if same(x, mx) && same(rk, mrk) => {
                        Some(*i)
                    }
                    _ => None,
                };
                let idx = memo.or_else(|| {
                    let x = a.exchange.as_deref().unwrap_or("");
                    let rk = a.routing_key.as_deref().unwrap_or("");
                    let i = self.destination_index(x, rk, mark)?;
                    if let (Some(x), Some(rk)) = (&a.exchange, &a.routing_key) {
                        self.conns[ci as usize].memo.publish = Some((x.clone(), rk.clone(), i));
                    }
                    Some(i)
                });
                match idx {
                    Some(i) => self.record_publish(ci, mark, i),
                    None => self.publishes_untracked += 1,
                }
            }
            (Dir::S2C, MethodKind::BasicReturn) => {
                let x = a.exchange.as_deref().unwrap_or("");
                let rk = a.routing_key.as_deref().unwrap_or("");
                if let Some(d) = self.destination_mut(x, rk) {
                    d.returned += 1;
                    if d.first_return.is_none() {
                        d.first_return = Some((
                            mark,
                            a.reply_code.unwrap_or(0),
                            a.reply_text.clone().unwrap_or_default(),
                        ));
                    }
                }
            }
            (Dir::S2C, MethodKind::BasicDeliver) => {
                let tag = a.consumer_tag.as_deref().unwrap_or("");
                let memo = match (&a.consumer_tag, &self.conns[ci as usize].memo.consumer) {
                    (Some(t), Some((mch, mt, i, len)))
                        if *mch == ch
                            && same(t, mt)
                            && *len == self.consumers.len()
                            && self.consumers[*i as usize].end.is_none() =>
                    {
                        Some(*i)
                    }
                    _ => None,
                };
                let found = memo.or_else(|| {
                    let i = self.find_consumer(ci, ch, tag)?;
                    if let Some(t) = &a.consumer_tag {
                        let len = self.consumers.len();
                        self.conns[ci as usize].memo.consumer = Some((ch, t.clone(), i, len));
                    }
                    Some(i)
                });
                let idx = match found {
                    Some(i) => i,
                    None => {
                        let c = &self.conns[ci as usize];
                        let known_channel = c.channels.contains_key(&ch);
                        let ended_here = c.consumers.iter().any(|&i| {
                            let cs = &self.consumers[i as usize];
                            cs.channel == ch && cs.tag == tag
                        });
                        // In flight when the channel or consumer was closed: nothing to track.
                        if ended_here || (!known_channel && !c.start_unseen) {
                            return;
                        }
                        self.new_consumer(ci, ch, tag.to_string(), None, false, true)
                    }
                };
                let redelivered = a.redelivered.unwrap_or(false);
                let memo = &mut self.conns[ci as usize].memo.route;
                let route_hash = match (&a.exchange, &a.routing_key, &*memo) {
                    (Some(x), Some(rk), Some((mx, mrk, h))) if same(x, mx) && same(rk, mrk) => *h,
                    _ => {
                        let h = route_hash(a);
                        if let (Some(x), Some(rk)) = (&a.exchange, &a.routing_key) {
                            *memo = Some((x.clone(), rk.clone(), h));
                        }
                        h
                    }
                };
                self.on_delivery(
                    ci,
                    ch,
                    mark,
                    a.delivery_tag.unwrap_or(0),
                    Some(idx),
                    redelivered,
                    route_hash,
                );
            }
            (Dir::C2S, MethodKind::BasicGet) => {
                self.conns[ci as usize].gets += 1;
                self.channel_mut(ci, ch).get_no_ack = a.no_ack.unwrap_or(false);
            }
            (Dir::S2C, MethodKind::BasicGetOk) => {
                let route_hash = route_hash(a);
                self.on_delivery(
                    ci,
                    ch,
                    mark,
                    a.delivery_tag.unwrap_or(0),
                    None,
                    a.redelivered.unwrap_or(false),
                    route_hash,
                );
            }
            // Broker->client ack/nack are publisher confirms, not settles.
            (Dir::C2S, MethodKind::BasicAck) => self.settle(
                ci,
                ch,
                mark,
                a.delivery_tag.unwrap_or(0),
                a.multiple.unwrap_or(false),
                SettleKind::Ack,
                false,
            ),
            (Dir::C2S, MethodKind::BasicNack) => self.settle(
                ci,
                ch,
                mark,
                a.delivery_tag.unwrap_or(0),
                a.multiple.unwrap_or(false),
                SettleKind::Nack,
                a.requeue.unwrap_or(true),
            ),
            (Dir::C2S, MethodKind::BasicReject) => self.settle(
                ci,
                ch,
                mark,
                a.delivery_tag.unwrap_or(0),
                false,
                SettleKind::Reject,
                a.requeue.unwrap_or(true),
            ),
            (Dir::C2S, MethodKind::BasicRecover | MethodKind::BasicRecoverAsync) => {
                // Everything unacked goes back to the queue.
                self.settle(ci, ch, mark, 0, true, SettleKind::Nack, true)
            }
            _ => {}
        }
    }

    fn queue_info(&mut self, q: &str) -> &mut QueueInfo {
        if !self.queues.contains_key(q) {
            self.queues.insert(
                q.to_string(),
                QueueInfo {
                    declared: None,
                    exclusive: false,
                    auto_delete: false,
                    message_count: None,
                    consumer_count: None,
                    deleted: None,
                },
            );
        }
        // Inserted just above when missing.
        self.queues.get_mut(q).expect("queue inserted above")
    }

    fn new_consumer(
        &mut self,
        ci: u32,
        ch: u16,
        tag: String,
        queue: Option<String>,
        no_ack: bool,
        discovered: bool,
    ) -> u32 {
        let idx = self.consumers.len() as u32;
        let serial = self.next_serial;
        self.next_serial += 1;
        let st = self.channel_mut(ci, ch);
        let qos = st.consumer_qos.clone();
        let channel_qos = st.global_qos.clone();
        self.consumers.push(ConsumerState {
            serial,
            conn: ci,
            channel: ch,
            tag,
            queue,
            no_ack,
            nowait: false,
            discovered,
            consume: None,
            consume_ok: None,
            cancel_requested: None,
            epoch: self.epoch,
            qos: if discovered { None } else { qos },
            channel_qos,
            deliveries: 0,
            redelivered: 0,
            acks: 0,
            nacks_requeue: 0,
            nacks_drop: 0,
            rejects_requeue: 0,
            rejects_drop: 0,
            unacked: 0,
            first_delivery: None,
            last_delivery: None,
            last_settle: None,
            first_slow_settle: None,
            full_since: None,
            latency: LatencyHistogram::default(),
            end: None,
            loop_fp: None,
            loop_since: None,
        });
        self.channel_mut(ci, ch).consumers.push(idx);
        self.conns[ci as usize].consumers.push(idx);
        idx
    }

    fn find_consumer(&self, ci: u32, ch: u16, tag: &str) -> Option<u32> {
        let st = self.conns[ci as usize].channels.get(&ch)?;
        st.consumers.iter().rev().copied().find(|&i| {
            self.consumers[i as usize].tag == tag && self.consumers[i as usize].end.is_none()
        })
    }

    fn destination_mut(&mut self, x: &str, rk: &str) -> Option<&mut Destination> {
        let i = *self.dest_index.get(x)?.get(rk)?;
        self.destinations.get_mut(i as usize)
    }

    /// The index of the destination (exchange, routing key), made when new; None
    /// once [`MAX_DESTINATIONS`] are tracked.
    fn destination_index(&mut self, x: &str, rk: &str, mark: Mark) -> Option<u32> {
        if let Some(&i) = self.dest_index.get(x).and_then(|m| m.get(rk)) {
            return Some(i);
        }
        if self.destinations.len() >= MAX_DESTINATIONS {
            return None;
        }
        let i = self.destinations.len() as u32;
        self.destinations.push(Destination {
            exchange: x.to_string(),
            routing_key: rk.to_string(),
            count: 0,
            last: mark,
            after: Vec::new(),
            returned: 0,
            first_return: None,
        });
        self.dest_index
            .entry(x.to_string())
            .or_default()
            .insert(rk.to_string(), i);
        Some(i)
    }

    fn record_publish(&mut self, ci: u32, mark: Mark, idx: u32) {
        let epoch = self.epoch;
        let d = &mut self.destinations[idx as usize];
        d.count += 1;
        d.last = mark;
        let newer = d.after.last().is_none_or(|(e, _, _)| *e < epoch);
        if newer && d.after.len() < MAX_MARKS_PER_DESTINATION {
            d.after.push((epoch, mark, ci));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_delivery(
        &mut self,
        ci: u32,
        ch: u16,
        mark: Mark,
        tag: u64,
        consumer: Option<u32>,
        redelivered: bool,
        route_hash: u64,
    ) {
        self.conns[ci as usize].deliveries += 1;
        let settled_on_delivery = match consumer {
            Some(i) => self.consumers[i as usize].no_ack,
            None => self.channel_mut(ci, ch).get_no_ack,
        };
        let (live_unacked, global_limit) = {
            let st = self.channel_mut(ci, ch);
            st.pending_content = Some(PendingContent {
                tag,
                consumer,
                route_hash,
                redelivered,
                at: mark,
            });
            if !settled_on_delivery {
                st.unacked.push_back(Unacked {
                    tag,
                    consumer,
                    at: mark,
                    fingerprint: 0,
                    settled: false,
                });
                st.live_unacked += 1;
            }
            let limit = st
                .global_qos
                .as_ref()
                .filter(|q| q.prefetch_count > 0)
                .map(|q| q.prefetch_count as u32);
            (st.live_unacked, limit)
        };
        if let Some(limit) = global_limit {
            let st = self.channel_mut(ci, ch);
            if !settled_on_delivery && live_unacked >= limit && st.global_full_since.is_none() {
                st.global_full_since = Some(mark);
            }
        }
        if let Some(i) = consumer {
            let cs = &mut self.consumers[i as usize];
            cs.deliveries += 1;
            if redelivered {
                cs.redelivered += 1;
            }
            cs.first_delivery.get_or_insert(mark);
            cs.last_delivery = Some(mark);
            if !cs.no_ack {
                cs.unacked += 1;
                if let Some(limit) = cs.prefetch_limit() {
                    if cs.unacked >= limit && cs.full_since.is_none() {
                        cs.full_since = Some(mark);
                    }
                }
            }
        }
    }

    fn on_content_header(&mut self, ci: u32, ch: u16, h: &ContentHeader) {
        let Some(st) = self.conns[ci as usize].channels.get_mut(&ch) else {
            return;
        };
        let Some(p) = st.pending_content.take() else {
            return;
        };
        let props = &h.properties;
        let fingerprint = match &props.message_id {
            Some(id) => hash_of(&(0u8, &**id)),
            None => hash_of(&(
                1u8,
                p.route_hash,
                h.body_size,
                props.correlation_id.as_deref(),
                props.timestamp,
            )),
        }
        .max(1);
        if let Some(last) = st.unacked.back_mut() {
            if last.tag == p.tag {
                last.fingerprint = fingerprint;
            }
        }
        if !p.redelivered {
            return;
        }
        let Some(track) = self.requeued.get_mut(&fingerprint) else {
            return;
        };
        track.rounds += 1;
        track.outstanding = true;
        if track.message_id.is_none() {
            track.message_id = props.message_id.as_deref().map(str::to_owned);
        }
        push_loop_event(
            track,
            LoopEvent {
                at: p.at,
                method: MethodKind::BasicDeliver,
                delivery_tag: p.tag,
                conn: ci,
                channel: ch,
            },
        );
        if track.rounds >= LOOP_ROUNDS && track.became_loop.is_none() {
            track.became_loop = Some(p.at);
        }
        if track.became_loop.is_some() {
            let rounds = track.rounds;
            if let Some(i) = p.consumer {
                let cs = &mut self.consumers[i as usize];
                cs.loop_since.get_or_insert(p.at);
                // Name the message delivered most often to this consumer.
                let more = match cs.loop_fp.and_then(|f| self.requeued.get(&f)) {
                    Some(t) => rounds > t.rounds,
                    None => true,
                };
                if more || cs.loop_fp == Some(fingerprint) {
                    cs.loop_fp = Some(fingerprint);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        ci: u32,
        ch: u16,
        mark: Mark,
        tag: u64,
        multiple: bool,
        kind: SettleKind,
        requeue: bool,
    ) {
        let Some(st) = self.conns[ci as usize].channels.get_mut(&ch) else {
            return;
        };
        // Reused buffer: no allocation per settle.
        let mut settled = std::mem::take(&mut self.settle_scratch);
        settled.clear();
        if multiple {
            // tag 0 with multiple: everything outstanding on the channel.
            while st.unacked.front().is_some_and(|f| tag == 0 || f.tag <= tag) {
                let Some(e) = st.unacked.pop_front() else {
                    break;
                };
                if e.settled {
                    st.tombstones -= 1;
                } else {
                    settled.push(e);
                }
            }
            if tag == 0 {
                st.tombstones = 0;
            }
        } else if let Ok(pos) = st.unacked.binary_search_by_key(&tag, |u| u.tag) {
            let e = &mut st.unacked[pos];
            if !e.settled {
                e.settled = true;
                settled.push(*e);
                st.tombstones += 1;
            }
            while st.unacked.front().is_some_and(|u| u.settled) {
                st.unacked.pop_front();
                st.tombstones -= 1;
            }
            if st.tombstones as usize > 64 && st.tombstones as usize > st.unacked.len() / 2 {
                st.unacked.retain(|u| !u.settled);
                st.tombstones = 0;
            }
        }
        if settled.is_empty() {
            self.settle_scratch = settled;
            return;
        }
        st.live_unacked = st.live_unacked.saturating_sub(settled.len() as u32);
        st.global_full_since = None;
        let slow_us = self.cfg.slow_ack.as_micros() as u64;
        for e in &settled {
            if let Some(i) = e.consumer {
                let cs = &mut self.consumers[i as usize];
                cs.unacked = cs.unacked.saturating_sub(1);
                cs.full_since = None;
                cs.last_settle = Some(mark);
                let lat_us = ((mark.ts.0 - e.at.ts.0).max(0) / 1000) as u64;
                cs.latency.record_us(lat_us);
                if lat_us >= slow_us && cs.first_slow_settle.is_none() {
                    cs.first_slow_settle = Some(mark);
                }
                match (kind, requeue) {
                    (SettleKind::Ack, _) => cs.acks += 1,
                    (SettleKind::Nack, true) => cs.nacks_requeue += 1,
                    (SettleKind::Nack, false) => cs.nacks_drop += 1,
                    (SettleKind::Reject, true) => cs.rejects_requeue += 1,
                    (SettleKind::Reject, false) => cs.rejects_drop += 1,
                }
            }
            if e.fingerprint == 0 {
                continue;
            }
            let method = match kind {
                SettleKind::Ack => MethodKind::BasicAck,
                SettleKind::Nack => MethodKind::BasicNack,
                SettleKind::Reject => MethodKind::BasicReject,
            };
            let ev = LoopEvent {
                at: mark,
                method,
                delivery_tag: e.tag,
                conn: ci,
                channel: ch,
            };
            if kind != SettleKind::Ack && requeue {
                if !self.requeued.contains_key(&e.fingerprint) {
                    if self.requeued.len() >= MAX_REQUEUED_TRACKED {
                        // Forget messages that are not looping to make room.
                        self.requeued.retain(|_, t| t.became_loop.is_some());
                        if self.requeued.len() >= MAX_REQUEUED_TRACKED {
                            continue;
                        }
                    }
                    let mut t = RequeueTrack {
                        message_id: None,
                        rounds: 1,
                        requeues: 0,
                        became_loop: None,
                        events: Vec::new(),
                        events_dropped: 0,
                        outstanding: false,
                    };
                    push_loop_event(
                        &mut t,
                        LoopEvent {
                            at: e.at,
                            method: MethodKind::BasicDeliver,
                            delivery_tag: e.tag,
                            conn: ci,
                            channel: ch,
                        },
                    );
                    self.requeued.insert(e.fingerprint, t);
                }
                if let Some(t) = self.requeued.get_mut(&e.fingerprint) {
                    t.outstanding = false;
                    t.requeues += 1;
                    push_loop_event(t, ev);
                }
            } else if let Some(t) = self.requeued.get_mut(&e.fingerprint) {
                // Acked, or dropped/dead-lettered: the message left the queue.
                if t.became_loop.is_some() {
                    t.outstanding = false;
                    push_loop_event(t, ev);
                    t.rounds = t.rounds.max(LOOP_ROUNDS);
                    t.became_loop = None;
                } else {
                    self.requeued.remove(&e.fingerprint);
                }
            }
        }
        self.settle_scratch = settled;
    }

    fn close_channel(
        &mut self,
        ci: u32,
        ch: u16,
        mark: Mark,
        dir: Dir,
        a: &crate::event::MethodArgs,
    ) {
        let st = self.conns[ci as usize].channels.remove(&ch);
        let mut close_idx = None;
        if dir == Dir::S2C {
            let oldest = st.as_ref().and_then(|st| {
                st.unacked
                    .iter()
                    .find(|u| !u.settled)
                    .map(|u| HeldDelivery {
                        delivery_tag: u.tag,
                        consumer_tag: u.consumer.map(|i| self.consumers[i as usize].tag.clone()),
                        delivered: u.at,
                        unacked: st.live_unacked,
                    })
            });
            let consumer_tags = st
                .as_ref()
                .map(|st| {
                    st.consumers
                        .iter()
                        .filter(|&&i| self.consumers[i as usize].end.is_none())
                        .map(|&i| self.consumers[i as usize].tag.clone())
                        .collect()
                })
                .unwrap_or_default();
            let c = &mut self.conns[ci as usize];
            c.channel_closes.push(ChannelCloseRec {
                channel: ch,
                close: CloseRec {
                    at: mark,
                    by: dir,
                    reply_code: a.reply_code.unwrap_or(0),
                    reply_text: a.reply_text.clone().unwrap_or_default(),
                    failing: a.failing_method,
                },
                oldest_unacked: oldest,
                consumer_tags,
            });
            close_idx = Some(c.channel_closes.len() - 1);
        }
        self.end_channel_consumers_from(ci, st, mark, dir, close_idx);
    }

    fn end_channel_consumers_from(
        &mut self,
        _ci: u32,
        st: Option<ChannelState>,
        mark: Mark,
        by: Dir,
        close: Option<usize>,
    ) {
        let Some(st) = st else { return };
        for i in st.consumers {
            let cs = &mut self.consumers[i as usize];
            if cs.end.is_none() {
                cs.end = Some(ConsumerEnd::ChannelClosed {
                    at: mark,
                    by,
                    close,
                });
            }
        }
    }

    /// The connection is over (close, close-ok, FIN or RST): its consumers end
    /// and its per-channel state is released; the summary stays.
    fn end_connection(&mut self, ci: u32, mark: Mark, close_by: Option<Dir>) {
        let c = &mut self.conns[ci as usize];
        let end = match (close_by, c.close.as_ref()) {
            (Some(by), _) => ConsumerEnd::ConnectionClosed { at: mark, by },
            (None, Some(cl)) => ConsumerEnd::ConnectionClosed {
                at: cl.at,
                by: cl.by,
            },
            (None, None) => ConsumerEnd::TcpEnded(mark),
        };
        if c.ended.is_none() {
            c.ended = Some(mark);
        }
        if close_by.is_some() {
            // connection.close: wait for close-ok or the TCP end to drop the state,
            // but the consumers are over now.
        } else {
            for (ch, st) in c.channels.drain() {
                if let Some(f) = st.flow_paused {
                    c.flows_paused.push((ch, f));
                }
            }
        }
        for &i in &c.consumers {
            let cs = &mut self.consumers[i as usize];
            if cs.end.is_none() {
                cs.end = Some(end);
            }
        }
    }

    /// Verdicts as of `horizon`: where the evidence ends, and how that end is
    /// known (see [`Horizon`]).
    pub fn analyze(&self, horizon: Horizon) -> Analysis {
        let t = match horizon {
            Horizon::Live(_) => self.cfg.stall_after,
            Horizon::Recorded(_) | Horizon::LastPacket(_) => {
                self.cfg.stall_after.min(self.cfg.capture_stall_after)
            }
        };
        verdicts::build(self, horizon, t)
    }

    /// Verdicts for a file that records no end of its own: its last event is at `now`.
    pub fn analysis(&self, now: Timestamp) -> Analysis {
        self.analyze(Horizon::LastPacket(now))
    }

    /// Verdicts while traffic is still flowing (the proxy, a live capture).
    pub fn live_analysis(&self, now: Timestamp) -> Analysis {
        self.analyze(Horizon::Live(now))
    }

    /// Unacknowledged deliveries of a consumer (tag, delivered at), oldest first.
    pub(crate) fn unacked_of(&self, consumer: u32) -> Vec<(u64, Mark)> {
        let cs = &self.consumers[consumer as usize];
        let Some(st) = self.conns[cs.conn as usize].channels.get(&cs.channel) else {
            return Vec::new();
        };
        st.unacked
            .iter()
            .filter(|u| !u.settled && u.consumer == Some(consumer))
            .map(|u| (u.tag, u.at))
            .collect()
    }

    /// The channel-wide (global=true) QoS of a consumer's channel and when its window filled.
    pub(crate) fn channel_window(&self, ci: u32, ch: u16) -> Option<(&QosRec, Option<Mark>, u32)> {
        let st = self.conns[ci as usize].channels.get(&ch)?;
        let q = st.global_qos.as_ref().filter(|q| q.prefetch_count > 0)?;
        Some((q, st.global_full_since, st.live_unacked))
    }
}

fn event_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::TcpOpen => "tcp.open",
        EventKind::TcpClose => "tcp.close",
        EventKind::TcpReset => "tcp.reset",
        EventKind::Gap { .. } => "gap",
        EventKind::Error { .. } => "error",
        EventKind::ProtocolHeader { .. } => "protocol-header",
        EventKind::Frame { frame, .. } => frame.name(),
    }
}

fn push_loop_event(t: &mut RequeueTrack, e: LoopEvent) {
    if t.events.len() < MAX_LOOP_EVIDENCE {
        t.events.push(e);
    } else {
        // Keep the first rounds and the latest event.
        t.events_dropped += 1;
        if let Some(last) = t.events.last_mut() {
            *last = e;
        }
    }
}

/// Serialises a `Duration`-like seconds figure with millisecond precision.
pub(crate) fn secs(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
