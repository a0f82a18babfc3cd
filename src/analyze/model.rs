//! The analysis document (`docs/analysis.md`, schema [`SCHEMA`]): verdicts,
//! their evidence, and the connection and consumer summaries they rest on.

use serde::Serialize;

use crate::event::{Conn, Dir, Timestamp};

pub use super::retire::RetiredCounts;

/// The `schema` field of the `--format json` document.
pub const SCHEMA: &str = "amqptrace.analysis/1";

/// The public verdict vocabulary (`docs/verdicts.md`), serialised snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Healthy,
    Idle,
    SlowButHealthy,
    NoConsume,
    ConsumeNotConfirmed,
    PrefetchExhausted,
    NoMessagesRoutedToQueue,
    ChannelClosedByBroker,
    AckTimeout,
    ConnectionClosedByBroker,
    ConnectionBlocked,
    ChannelFlowPaused,
    HeartbeatTimeout,
    ConnectionLost,
    ConsumerCancelledByBroker,
    RedeliveryLoop,
    CaptureIncomplete,
    // Issue 15, broker errors explained and other protocols on the port (h15err).
    OtherProtocol,
    // Issue 15, newer queues (h15queue): a single-active-consumer queue's waiting consumer.
    Standby,
    // Issue 15, the publisher side and consumers not restored (h15pub).
    PublishReturned,
    PublishUnroutable,
    PublishNacked,
    PublishUnconfirmed,
    ConsumerNotRestored,
    /// Published to a queue whose consumers are all in the capture, never delivered.
    PublishedNotDelivered,
}

impl VerdictKind {
    pub const ALL: &'static [VerdictKind] = &[
        VerdictKind::Healthy,
        VerdictKind::Idle,
        VerdictKind::SlowButHealthy,
        VerdictKind::NoConsume,
        VerdictKind::ConsumeNotConfirmed,
        VerdictKind::PrefetchExhausted,
        VerdictKind::NoMessagesRoutedToQueue,
        VerdictKind::ChannelClosedByBroker,
        VerdictKind::AckTimeout,
        VerdictKind::ConnectionClosedByBroker,
        VerdictKind::ConnectionBlocked,
        VerdictKind::ChannelFlowPaused,
        VerdictKind::HeartbeatTimeout,
        VerdictKind::ConnectionLost,
        VerdictKind::ConsumerCancelledByBroker,
        VerdictKind::RedeliveryLoop,
        VerdictKind::CaptureIncomplete,
        // Issue 15, broker errors explained and other protocols on the port (h15err).
        VerdictKind::OtherProtocol,
        VerdictKind::Standby,
        // Issue 15, the publisher side and consumers not restored (h15pub).
        VerdictKind::PublishReturned,
        VerdictKind::PublishUnroutable,
        VerdictKind::PublishNacked,
        VerdictKind::PublishUnconfirmed,
        VerdictKind::ConsumerNotRestored,
        VerdictKind::PublishedNotDelivered,
    ];

    /// The name as written in output and documentation, e.g. `prefetch_exhausted`.
    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::Healthy => "healthy",
            VerdictKind::Idle => "idle",
            VerdictKind::SlowButHealthy => "slow_but_healthy",
            VerdictKind::NoConsume => "no_consume",
            VerdictKind::ConsumeNotConfirmed => "consume_not_confirmed",
            VerdictKind::PrefetchExhausted => "prefetch_exhausted",
            VerdictKind::NoMessagesRoutedToQueue => "no_messages_routed_to_queue",
            VerdictKind::ChannelClosedByBroker => "channel_closed_by_broker",
            VerdictKind::AckTimeout => "ack_timeout",
            VerdictKind::ConnectionClosedByBroker => "connection_closed_by_broker",
            VerdictKind::ConnectionBlocked => "connection_blocked",
            VerdictKind::ChannelFlowPaused => "channel_flow_paused",
            VerdictKind::HeartbeatTimeout => "heartbeat_timeout",
            VerdictKind::ConnectionLost => "connection_lost",
            VerdictKind::ConsumerCancelledByBroker => "consumer_cancelled_by_broker",
            VerdictKind::RedeliveryLoop => "redelivery_loop",
            VerdictKind::CaptureIncomplete => "capture_incomplete",
            // Issue 15 (h15err).
            VerdictKind::OtherProtocol => "other_protocol",
            VerdictKind::Standby => "standby",
            // Issue 15, the publisher side and consumers not restored (h15pub).
            VerdictKind::PublishReturned => "publish_returned",
            VerdictKind::PublishUnroutable => "publish_unroutable",
            VerdictKind::PublishNacked => "publish_nacked",
            VerdictKind::PublishUnconfirmed => "publish_unconfirmed",
            VerdictKind::ConsumerNotRestored => "consumer_not_restored",
            VerdictKind::PublishedNotDelivered => "published_not_delivered",
        }
    }

    /// `false` for `healthy`, `idle` and `slow_but_healthy`: everything else
    /// (certain or not) makes `amqptrace analyze` exit with the "stall found" code.
    pub fn is_stall(&self) -> bool {
        !matches!(
            self,
            VerdictKind::Healthy
                | VerdictKind::Idle
                | VerdictKind::SlowButHealthy
                | VerdictKind::Standby
        )
    }

    /// Ordering of the verdict block, most severe first: 0 healthy … 9 the
    /// connection is gone. `capture_incomplete` ranks low because it says
    /// "unknown", not "broken".
    pub fn severity(&self) -> u8 {
        match self {
            VerdictKind::Healthy | VerdictKind::Idle | VerdictKind::Standby => 0,
            VerdictKind::SlowButHealthy => 1,
            VerdictKind::CaptureIncomplete => 2,
            VerdictKind::ChannelFlowPaused => 4,
            VerdictKind::ConnectionBlocked => 5,
            VerdictKind::NoConsume
            | VerdictKind::ConsumeNotConfirmed
            | VerdictKind::NoMessagesRoutedToQueue
            | VerdictKind::RedeliveryLoop => 6,
            VerdictKind::PrefetchExhausted | VerdictKind::ConsumerCancelledByBroker => 7,
            VerdictKind::ChannelClosedByBroker | VerdictKind::AckTimeout => 8,
            VerdictKind::ConnectionClosedByBroker
            | VerdictKind::HeartbeatTimeout
            | VerdictKind::ConnectionLost => 9,
            // Issue 15 (h15err): the client cannot talk to the broker at all.
            VerdictKind::OtherProtocol => 9,
            // Issue 15, the publisher side and consumers not restored (h15pub):
            // messages that never reached a queue rank with misrouted ones; a
            // reconnect that left its queues unconsumed with a consumer stopped.
            VerdictKind::PublishUnconfirmed => 5,
            VerdictKind::PublishReturned
            | VerdictKind::PublishUnroutable
            | VerdictKind::PublishNacked
            | VerdictKind::PublishedNotDelivered => 6,
            VerdictKind::ConsumerNotRestored => 7,
        }
    }
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How far the capture proves a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Certainty {
    /// The frames prove it (or, where time is the point, enough time passed).
    Certain,
    /// The evidence points to it but the capture ends before it can be proven
    /// (e.g. a prefetch window full at the very end of a quiet capture); the
    /// explanation says what would make it certain.
    Uncertain,
}

impl Certainty {
    pub fn name(self) -> &'static str {
        match self {
            Certainty::Certain => "certain",
            Certainty::Uncertain => "uncertain",
        }
    }
}

/// What a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Connection,
    Channel,
    Consumer,
}

/// One frame of the timeline that proves a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceRef {
    pub frame: u64,
    pub ts: Timestamp,
    /// `class.method` as in the timeline, or `tcp.close`, `tcp.reset`, `gap`, `error`.
    pub method: &'static str,
    /// Set when the frame is on another connection than the verdict's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<Conn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<Dir>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_tag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u16>,
    /// A few words on why this frame matters, e.g. "last frame from the client".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl EvidenceRef {
    pub(crate) fn new(frame: u64, ts: Timestamp, method: &'static str) -> Self {
        EvidenceRef {
            frame,
            ts,
            method,
            conn: None,
            dir: None,
            channel: None,
            consumer_tag: None,
            queue: None,
            exchange: None,
            routing_key: None,
            delivery_tag: None,
            prefetch_count: None,
            global: None,
            reply_code: None,
            reply_text: None,
            reason: None,
            message_id: None,
            heartbeat: None,
            note: None,
        }
    }
}

/// One verdict on one consumer, channel or connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub scope: Scope,
    pub conn: Conn,
    pub channel: Option<u16>,
    pub consumer_tag: Option<String>,
    pub queue: Option<String>,
    pub verdict: VerdictKind,
    /// When the problem started: the frame that makes it certain (see `docs/verdicts.md`).
    pub since: Option<Timestamp>,
    /// Packet number of `since`.
    pub frame: Option<u64>,
    /// `certain` for every non-stall verdict; see [`Certainty`].
    pub certainty: Certainty,
    pub explanation: String,
    pub evidence: Vec<EvidenceRef>,
}

/// One distinct cause behind one or more verdicts, in one sentence: several
/// consumers starved by the same misrouted publishes are one cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    /// The verdict the cause explains (the most severe of its verdicts).
    pub verdict: VerdictKind,
    /// `certain` when any of its verdicts is.
    pub certainty: Certainty,
    pub text: String,
    /// Indices into [`Analysis::verdicts`].
    pub verdicts: Vec<usize>,
}

/// Delivery→settle latency figures, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_s: f64,
    pub p95_s: f64,
    pub max_s: f64,
}

/// What the connection's handshake said: each peer's product and version
/// (connection.start / start-ok), the client's connection_name, the user
/// (never the password), the vhost (connection.open), and the heartbeat and
/// frame_max agreed (connection.tune-ok).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Handshake {
    pub client_product: Option<String>,
    pub client_version: Option<String>,
    pub connection_name: Option<String>,
    pub broker_product: Option<String>,
    pub broker_version: Option<String>,
    pub user: Option<String>,
    pub vhost: Option<String>,
    pub heartbeat: Option<u16>,
    pub frame_max: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionSummary {
    pub conn: Conn,
    pub first_frame: u64,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub handshake_seen: bool,
    #[serde(flatten)]
    pub handshake: Handshake,
    #[serde(flatten)]
    pub counts: ConnectionCounts,
    pub blocked: bool,
    /// `client` or `broker`: who sent connection.close, if anyone did.
    pub closed_by: Option<&'static str>,
    pub reply_code: Option<u16>,
    pub reply_text: Option<String>,
    pub close_ok: bool,
    /// `fin` or `rst` when the TCP connection ended in the capture.
    pub tcp_end: Option<&'static str>,
    pub gaps: u64,
    pub errors: u64,
}

/// What a connection's client asked for and was given, counted while it runs
/// and reported in its summary: channel.open, basic.consume, basic.publish,
/// basic.get, and the basic.deliver of all its consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionCounts {
    pub channels_opened: u32,
    pub consumes: u32,
    pub publishes: u64,
    pub gets: u64,
    pub deliveries: u64,
}

/// What a consumer was delivered and how it settled it: counted while it
/// runs ([`Analyzer`](super::Analyzer)'s state), reported in its summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConsumerCounts {
    pub deliveries: u64,
    pub redelivered: u64,
    pub acks: u64,
    pub nacks_requeue: u64,
    pub nacks_drop: u64,
    pub rejects_requeue: u64,
    pub rejects_drop: u64,
    /// Delivered and not yet settled.
    pub unacked: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerSummary {
    pub conn: Conn,
    pub channel: u16,
    pub consumer_tag: String,
    pub queue: Option<String>,
    pub no_ack: bool,
    pub consume_frame: Option<u64>,
    pub consume_ok: bool,
    /// Per-consumer prefetch_count in force (basic.qos global=false before the consume).
    pub prefetch_count: Option<u16>,
    /// Channel-wide prefetch_count (basic.qos global=true).
    pub channel_prefetch_count: Option<u16>,
    #[serde(flatten)]
    pub counts: ConsumerCounts,
    pub last_delivery: Option<Timestamp>,
    pub last_settle: Option<Timestamp>,
    pub latency: Option<LatencySummary>,
    /// `client`, `broker`, `channel_closed`, `connection_closed`, `tcp` when it ended.
    pub ended_by: Option<&'static str>,
}

/// The whole `--format json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub schema: &'static str,
    /// The moment of the analysis: where the evidence ends.
    pub at: Timestamp,
    /// How that end is known: `live` (traffic still flowing), `recorded` (the
    /// recording says when it stopped), `last_packet` (a file that records no end).
    pub horizon: &'static str,
    /// Seconds a time-proven verdict needs after its evidence in this analysis.
    pub stall_after_s: f64,
    pub connections: Vec<ConnectionSummary>,
    pub consumers: Vec<ConsumerSummary>,
    /// One sentence per distinct cause of the stalls below, most severe first;
    /// empty when nothing stalls.
    pub causes: Vec<Cause>,
    /// Most severe first.
    pub verdicts: Vec<Verdict>,
    /// Ended connections whose state was dropped once their verdicts were final
    /// (a long proxy run, a capture of thousands of connections): how many, and
    /// how many of their verdicts and summaries are counted rather than listed.
    /// Absent when nothing was retired.
    #[serde(skip_serializing_if = "RetiredCounts::is_empty")]
    pub retired: RetiredCounts,
}

impl Analysis {
    /// `true` when some verdict is a stall (exit code "stall found").
    pub fn has_stall(&self) -> bool {
        self.verdicts.iter().any(|v| v.verdict.is_stall())
    }
}
