//! The verdict rules, one file per scope (`connection`, `channel`, `consumer`,
//! and `queue` for a consumer that receives nothing): from the analyzer's state and a [`Horizon`] (where the
//! evidence ends and how that is known), one verdict per connection and per
//! consumer, plus channel verdicts for channels the broker closed or paused,
//! each with its certainty and the seed of its headline cause.
//! `docs/verdicts.md` is the prose version of this file; keep them in step.
//!
//! Certainty comes from the frames where they can give it: a publish the
//! default exchange sends to another queue, a window that stays full while
//! peers on the same queue settle. Time is evidence only where time is the
//! point (a connection that never consumes, a consume never confirmed, a
//! window full with nothing to compare it with), against `threshold`.

mod channel;
mod connection;
mod consumer;
mod cut;
mod errors;
mod missing;
mod newer;
mod publisher;
mod queue;
mod reconnect;

use std::fmt::Write as _;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::{Dir, Timestamp};

use super::causes::{self, CauseKey, CauseSeed};
use super::model::{Analysis, Certainty, EvidenceRef, Scope, Verdict, VerdictKind, SCHEMA};
use super::state::{CloseRec, ConnState, Mark};
use super::summary::{connection_summary, consumer_summary};
use super::{secs, Analyzer, Horizon};

use channel::channel_verdicts;
use connection::connection_verdict;
use consumer::consumer_verdict;

/// consume with no consume-ok) is not even uncertain: clients and the broker
/// answer in milliseconds, so a second is already long, but a capture that
/// ends within it says nothing.
const UNCERTAIN_AFTER_S: f64 = 1.0;
/// A full window is certain, without waiting for the time threshold, once it
/// has been full this many times longer than the settle pace the capture shows
/// (its peers' p95, its own p95 before)...
const PACE_FACTOR: f64 = 10.0;
/// ... and at least this long: a consumer's garbage-collection pause or a
/// slow handler is not a stall.
const PACE_FLOOR_S: f64 = 1.0;
/// Settles of its own a consumer needs before its pace counts as evidence.
const OWN_PACE_MIN_SETTLES: u64 = 3;
/// Live only: how long after a misrouted publish on a named exchange a
/// delivery may still come (bindings made before the capture are unknown).
const LIVE_GRACE_S: f64 = 1.0;

/// What every rule reads: the state, the horizon, and facts computed once.
pub(crate) struct Ctx<'a> {
    pub a: &'a Analyzer,
    pub horizon: Horizon,
    pub now: Timestamp,
    /// The time threshold, seconds.
    pub t: f64,
    /// Destinations whose publishes some consumer here received.
    served: FxHashSet<usize>,
    /// queue -> connections consuming it.
    consumed_on: FxHashMap<&'a str, Vec<u32>>,
}

impl Ctx<'_> {
    /// How a duration up to the horizon is worded.
    pub fn until(&self) -> &'static str {
        match self.horizon {
            Horizon::Live(_) => "so far",
            Horizon::Recorded(_) => "until the recording ends",
            Horizon::LastPacket(_) => "until the last packet of the capture",
        }
    }

    /// "the capture ends" / "the recording ends" / "now" for the uncertain wording.
    fn end_word(&self) -> &'static str {
        match self.horizon {
            Horizon::Live(_) => "the traffic so far ends",
            Horizon::Recorded(_) => "the recording ends",
            Horizon::LastPacket(_) => "the capture's last packet comes",
        }
    }

    /// Whether some consumer in the capture reads `queue`.
    pub fn consumed(&self, queue: &str) -> bool {
        self.consumed_on.contains_key(queue)
    }

    fn live(&self) -> bool {
        matches!(self.horizon, Horizon::Live(_))
    }
}

impl<'a> Ctx<'a> {
    fn new(a: &'a Analyzer, horizon: Horizon, threshold: Duration) -> Self {
        let mut consumed_on: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        for cs in &a.consumers {
            if let Some(q) = cs.queue.as_deref() {
                let v = consumed_on.entry(q).or_default();
                if !v.contains(&cs.conn) {
                    v.push(cs.conn);
                }
            }
        }
        Ctx {
            a,
            horizon,
            now: horizon.at(),
            t: threshold.as_secs_f64(),
            served: a.routing.served_destinations(&a.consumers),
            consumed_on,
        }
    }
}

/// The verdicts (with their cause seeds) of the connections `wanted` picks,
/// their channels and their consumers, unsorted.
pub(crate) fn verdicts_of(
    a: &Analyzer,
    horizon: Horizon,
    threshold: Duration,
    wanted: &dyn Fn(u32) -> bool,
) -> Vec<(Verdict, Option<CauseSeed>)> {
    let ctx = Ctx::new(a, horizon, threshold);
    collect(&ctx, wanted)
}

fn collect(ctx: &Ctx, wanted: &dyn Fn(u32) -> bool) -> Vec<(Verdict, Option<CauseSeed>)> {
    let a = ctx.a;
    let max_ev = a.config().max_evidence.max(1);
    let mut out: Vec<(Verdict, Option<CauseSeed>)> =
        Vec::with_capacity(a.conns.len() + a.consumers.len());
    let mut conn_verdicts = Vec::with_capacity(a.conns.len());
    for (ci, c) in a.conns.iter().enumerate() {
        let ci = ci as u32;
        let mut v = connection_verdict(ctx, ci, c);
        reconnect::check_restored(ctx, ci, c, &mut v);
        publisher::silent_block(ctx, c, &mut v);
        conn_verdicts.push(v.0.clone());
        if wanted(ci) {
            out.push(v);
            channel_verdicts(ctx, ci, c, &mut out);
            publisher::publisher_verdicts(ctx, c, &mut out);
        }
    }
    publisher::unroutable_verdicts(ctx, wanted, &mut out);
    for (i, cs) in a.consumers.iter().enumerate() {
        if wanted(cs.conn) {
            let cv = &conn_verdicts[cs.conn as usize];
            out.push(consumer_verdict(ctx, i as u32, cs, cv));
        }
    }
    for (v, _) in &mut out {
        v.evidence.truncate(max_ev);
    }
    out
}

pub(crate) fn build(a: &Analyzer, horizon: Horizon, threshold: Duration) -> Analysis {
    let ctx = Ctx::new(a, horizon, threshold);
    let mut out = a.retired.verdicts.clone();
    out.extend(collect(&ctx, &|_| true));
    out.sort_by(|(x, _), (y, _)| {
        y.verdict
            .severity()
            .cmp(&x.verdict.severity())
            .then(x.certainty.cmp(&y.certainty))
            .then(x.since.cmp(&y.since))
            .then(x.conn.cmp(&y.conn))
            .then(x.scope.cmp(&y.scope))
            .then(x.channel.cmp(&y.channel))
            .then(x.consumer_tag.cmp(&y.consumer_tag))
    });
    let (verdicts, seeds): (Vec<Verdict>, Vec<Option<CauseSeed>>) = out.into_iter().unzip();
    let causes = causes::build(&ctx, &verdicts, &seeds);
    let mut connections = a.retired.connections.clone();
    connections.extend(a.conns.iter().map(connection_summary));
    let mut consumers = a.retired.consumers.clone();
    consumers.extend(a.consumers.iter().map(|cs| consumer_summary(a, cs)));
    Analysis {
        schema: SCHEMA,
        at: ctx.now,
        horizon: match horizon {
            Horizon::Live(_) => "live",
            Horizon::Recorded(_) => "recorded",
            Horizon::LastPacket(_) => "last_packet",
        },
        stall_after_s: secs(ctx.t),
        connections,
        consumers,
        causes,
        verdicts,
        retired: a.retired.counts.clone(),
    }
}

fn base(scope: Scope, c: &ConnState) -> Verdict {
    Verdict {
        scope,
        conn: c.conn,
        channel: None,
        consumer_tag: None,
        queue: None,
        verdict: VerdictKind::Healthy,
        since: None,
        frame: None,
        certainty: Certainty::Certain,
        explanation: String::new(),
        evidence: Vec::new(),
    }
}

fn set(v: &mut Verdict, kind: VerdictKind, at: Mark, explanation: String) {
    v.verdict = kind;
    v.since = Some(at.ts);
    v.frame = Some(at.frame);
    v.explanation = explanation;
}

/// The seed of a cause that is this verdict's own first clause.
fn own_seed(key: CauseKey, v: &Verdict) -> Option<CauseSeed> {
    Some(CauseSeed {
        key,
        text: v.explanation.clone(),
    })
}

fn ev(at: Mark, method: &'static str) -> EvidenceRef {
    EvidenceRef::new(at.frame, at.ts, method)
}

/// Evidence of a frame from `dir` on channel `channel`.
fn ev_on(at: Mark, method: &'static str, dir: Dir, channel: u16) -> EvidenceRef {
    let mut e = ev(at, method);
    e.dir = Some(dir);
    e.channel = Some(channel);
    e
}

pub(crate) fn peer(d: Dir) -> &'static str {
    match d {
        Dir::C2S => "client",
        Dir::S2C => "broker",
    }
}

pub(crate) fn fmt_s(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.1} s")
    } else if v < 1.0 {
        format!("{:.0} ms", v * 1000.0)
    } else {
        format!("{v:.2} s")
    }
}

fn close_ev(rec: &CloseRec, method: &'static str, channel: Option<u16>) -> EvidenceRef {
    let mut e = ev(rec.at, method);
    e.dir = Some(rec.by);
    e.channel = channel;
    e.reply_code = Some(rec.reply_code);
    e.reply_text = Some(rec.reply_text.clone());
    if let Some(f) = rec.failing {
        e.note = Some(format!("caused by {f}"));
    }
    e
}

/// `404 NOT_FOUND - no queue 'q' (caused by basic.consume)`; a close with
/// neither code nor text (some clients send 0 and "") says so instead of "0 ".
fn describe_close(rec: &CloseRec) -> String {
    let mut s = match (rec.reply_code, rec.reply_text.trim()) {
        (0, "") => "without a reply code or text".to_string(),
        (code, "") => format!("{code}"),
        (0, text) => text.to_string(),
        (code, text) => format!("{code} {text}"),
    };
    if let Some(f) = rec.failing {
        let _ = write!(s, " (caused by {f})");
    }
    s
}

fn is_ack_timeout(rec: &CloseRec) -> bool {
    let t = rec.reply_text.to_ascii_lowercase();
    rec.reply_code == 406 && t.contains("ack") && (t.contains("timed out") || t.contains("timeout"))
}
