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
//!
//! Layout, in the order an event flows: [`Analyzer::handle`] here finds the
//! connection; `handle/` applies the event to the state records of `state/`
//! and to the exchanges and bindings of `routing`; at analysis time the rules
//! of `verdicts/` (per connection, channel, consumer and queue) read the state
//! through its queries, `causes` groups the stalls into headlines, `summary`
//! gives the figures, `retire` drops connections whose verdicts are final, and
//! `text` renders the verdict block.

mod causes;
mod handle;
mod hints;
mod histogram;
mod model;
mod retire;
mod routing;
mod state;
mod summary;
mod text;
mod verdicts;

#[cfg(test)]
mod tests;

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::event::{Conn, Event, Timestamp};

pub use model::{
    Analysis, Cause, Certainty, ConnectionSummary, ConsumerCounts, ConsumerSummary, EvidenceRef,
    Handshake, LatencySummary, Scope, Verdict, VerdictKind, SCHEMA,
};
pub use text::{stall_reasons, write_live_verdict, write_summary, write_verdict_block};

use routing::Routing;
use state::{ConnState, ConsumerState, Mark, QueueInfo, RequeueTracks, Unacked};

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

/// The analyzer. Feed it events in time order with [`Analyzer::handle`]; ask
/// for verdicts at any moment with [`Analyzer::analysis`].
#[derive(Debug)]
pub struct Analyzer {
    cfg: AnalyzerConfig,
    /// `cfg.slow_ack` in microseconds, as every settle compares it (callgrind,
    /// storm slice json: 142.67 -> 142.52 M).
    slow_ack_us: u64,
    by_conn: FxHashMap<Conn, u32>,
    pub(crate) conns: Vec<ConnState>,
    pub(crate) consumers: Vec<ConsumerState>,
    /// Exchanges, bindings and where publishes went.
    pub(crate) routing: Routing,
    /// Bumped at every consumer registration; see `routing::Destination::after`.
    epoch: u64,
    pub(crate) queues: FxHashMap<String, QueueInfo>,
    pub(crate) requeued: RequeueTracks,
    pub(crate) last: Option<Mark>,
    settle_scratch: Vec<Unacked>,
    /// The connection index of recent 4-tuples, by `handle::ConnKey::slot`.
    recent_conns: Box<[Option<(handle::ConnKey, u32)>; handle::CONN_SLOTS]>,
    next_serial: u64,
    /// Ended connections whose verdicts are final, kept as bounded summaries.
    pub(crate) retired: retire::Retired,
    /// Events until the next check for connections to retire, every
    /// `retire::CHECK_EVERY`: counted down to zero rather than up to it
    /// (callgrind, storm slice json: 142.52 -> 142.15 M).
    until_retire_check: u32,
    /// What explains broker errors across connections (issue 15).
    pub(crate) trail: state::errors::Trail,
    /// Every queue's first declaration (issue 15).
    pub(crate) queue_args: state::queue_args::QueueArgs,
}

impl Analyzer {
    pub fn new(cfg: AnalyzerConfig) -> Self {
        Analyzer {
            slow_ack_us: cfg.slow_ack.as_micros() as u64,
            cfg,
            by_conn: FxHashMap::default(),
            conns: Vec::new(),
            consumers: Vec::new(),
            routing: Routing::default(),
            epoch: 0,
            queues: FxHashMap::default(),
            requeued: RequeueTracks::default(),
            last: None,
            settle_scratch: Vec::new(),
            recent_conns: Box::new([None; handle::CONN_SLOTS]),
            next_serial: 0,
            retired: retire::Retired::default(),
            until_retire_check: retire::CHECK_EVERY,
            trail: Default::default(),
            queue_args: Default::default(),
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
        self.until_retire_check -= 1;
        if self.until_retire_check == 0 {
            self.until_retire_check = retire::CHECK_EVERY;
            self.maybe_retire(ev.ts);
        }
        let Some(ci) = self.conn_index(ev) else {
            // A late packet of a connection already retired.
            return;
        };
        self.conns[ci as usize].last = mark;
        self.on_event(ci, ev, mark);
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
}

/// Serialises a `Duration`-like seconds figure with millisecond precision.
pub(crate) fn secs(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
