//! The verdict rules: from the analyzer's state and a [`Horizon`] (where the
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

use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt::Write as _;
use std::time::Duration;

use crate::event::{Dir, MethodKind, Timestamp};

use super::causes::{self, CauseKey, CauseSeed};
use super::model::{
    Analysis, Certainty, EvidenceRef, LatencySummary, Scope, Verdict, VerdictKind, SCHEMA,
};
use super::routing::{self, name_list, Reach, MAX_NAMED};
use super::summary::{connection_summary, consumer_summary};
use super::{
    secs, Analyzer, ChannelCloseRec, CloseRec, ConnState, ConsumerEnd, ConsumerState, Horizon,
    Mark, TcpEndKind,
};

/// Below this, a time-proven condition (a connection that never consumed, a
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
            served: routing::served_destinations(a),
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
    let max_ev = a.cfg.max_evidence.max(1);
    let mut out: Vec<(Verdict, Option<CauseSeed>)> =
        Vec::with_capacity(a.conns.len() + a.consumers.len());
    let mut conn_verdicts = Vec::with_capacity(a.conns.len());
    for (ci, c) in a.conns.iter().enumerate() {
        let ci = ci as u32;
        let v = connection_verdict(ctx, ci, c);
        conn_verdicts.push(v.0.clone());
        if wanted(ci) {
            out.push(v);
            channel_verdicts(ctx, ci, c, &mut out);
        }
    }
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

// ---------------------------------------------------------------- connections

fn incompleteness(c: &ConnState) -> Option<(Mark, String, Vec<EvidenceRef>)> {
    if !c.is_incomplete() {
        return None;
    }
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    let mut at: Option<Mark> = None;
    if c.start_unseen {
        parts.push(format!(
            "the capture begins mid-connection (its first packet here is frame {}): the handshake \
             (client library, negotiated heartbeat, vhost), and any basic.qos, basic.consume or \
             delivery before it are unknown",
            c.first.frame
        ));
        at = Some(c.first);
        let mut e = ev(c.first, c.first_name);
        e.note = Some("first packet of the connection in the capture".into());
        evidence.push(e);
    }
    let lost: Vec<_> = c
        .gaps
        .iter()
        .filter(|g| g.reason != super::GapReason::MidConnection)
        .collect();
    if !lost.is_empty() || c.gap_count > c.gaps.len() as u64 {
        let n = c.gap_count
            - c.gaps
                .iter()
                .filter(|g| g.reason == super::GapReason::MidConnection)
                .count() as u64;
        let truncated = lost.iter().any(|g| g.reason == super::GapReason::Truncated);
        let bytes = if c.gap_bytes_unknown {
            "an unknown number of".to_string()
        } else {
            format!("{}", c.gap_bytes)
        };
        let mut s = format!("{n} hole(s) in the byte stream ({bytes} bytes missing");
        if truncated {
            s.push_str(", payloads cut by the capture's snaplen");
        }
        s.push_str("): frames in them are unknown");
        if let Some(g) = lost.first() {
            let _ = write!(
                s,
                ", the first at frame {} ({})",
                g.at.frame,
                g.dir.as_str()
            );
            at = Some(at.map_or(g.at, |m| if g.at.ts < m.ts { g.at } else { m }));
        }
        parts.push(s);
        for g in lost.iter().take(4) {
            let mut e = ev(g.at, "gap");
            e.dir = Some(g.dir);
            e.note = Some(match g.bytes {
                Some(b) => format!("{b} bytes missing ({:?})", g.reason).to_lowercase(),
                None => format!("bytes missing ({:?})", g.reason).to_lowercase(),
            });
            evidence.push(e);
        }
    }
    if let Some((m, d, err)) = &c.first_error {
        parts.push(format!(
            "{} span(s) could not be decoded, the first at frame {} ({}): {err}",
            c.errors,
            m.frame,
            d.as_str()
        ));
        at = Some(at.map_or(*m, |x| if m.ts < x.ts { *m } else { x }));
        let mut e = ev(*m, "error");
        e.dir = Some(*d);
        e.note = Some(err.clone());
        evidence.push(e);
    }
    if let Some(p) = &c.unsupported_protocol {
        parts.push(format!("the client asked for {p}, which is not decoded"));
    }
    Some((at.unwrap_or(c.first), parts.join("; "), evidence))
}

fn connection_verdict(ctx: &Ctx, ci: u32, c: &ConnState) -> (Verdict, Option<CauseSeed>) {
    let v = connection_verdict_of(ctx, ci, c);
    let seed = match v.frame {
        Some(frame) if v.verdict.is_stall() => own_seed(
            CauseKey::Event {
                conn: c.serial,
                frame,
            },
            &v,
        ),
        _ => None,
    };
    (v, seed)
}

fn connection_verdict_of(ctx: &Ctx, ci: u32, c: &ConnState) -> Verdict {
    let (now, t) = (ctx.now, ctx.t);
    let mut v = base(Scope::Connection, c);
    let incomplete = incompleteness(c);
    let who = describe_client(c);
    if let Some(cl) = c.close.as_ref().filter(|cl| cl.by == Dir::S2C) {
        let kind = if cl.reply_text.to_ascii_lowercase().contains("heartbeat") {
            VerdictKind::HeartbeatTimeout
        } else {
            VerdictKind::ConnectionClosedByBroker
        };
        let mut s = format!(
            "the broker closed the connection{who} at frame {} with connection.close {}",
            cl.at.frame,
            describe_close(cl)
        );
        if c.close_ok.is_none() {
            s.push_str("; no connection.close-ok from the client followed");
        }
        set(&mut v, kind, cl.at, s);
        v.evidence.push(close_ev(cl, "connection.close", None));
        if let Some(end) = c.tcp_end {
            v.evidence.push(tcp_end_ev(end));
        }
    } else if let (None, Some(end), false) = (
        c.close.as_ref(),
        c.tcp_end.filter(|e| !is_quiet_client_exit(e)),
        // With bytes missing, the connection.close may be among them: say so
        // (capture_incomplete below) rather than guess connection_lost.
        c.gaps
            .iter()
            .any(|g| g.reason != super::GapReason::MidConnection),
    ) {
        let how = match end.kind {
            TcpEndKind::Fin => "closed the TCP connection (FIN)",
            TcpEndKind::Rst => "reset the TCP connection (RST)",
        };
        let hb = c.heartbeat.filter(|h| *h > 0);
        // The peer silent the longest before the end.
        let silence = |d: Dir| {
            let last = c.last_frame[super::dir_index(d)].unwrap_or((c.first, c.first_name));
            (end.at.ts.secs_since(last.0.ts), last)
        };
        let (sc, lc) = silence(Dir::C2S);
        let (sb, lb) = silence(Dir::S2C);
        let (silent_dir, silent_s, silent_last) = if sc >= sb {
            (Dir::C2S, sc, lc)
        } else {
            (Dir::S2C, sb, lb)
        };
        match hb {
            Some(h) if silent_s >= h as f64 => {
                let s = format!(
                    "connection{who}: the {} sent nothing for {} (negotiated heartbeat {h} s; a peer is \
                     dead after missing 2 heartbeats), then the {} {how} at frame {} without connection.close",
                    peer(silent_dir),
                    fmt_s(silent_s),
                    peer(end.dir),
                    end.at.frame
                );
                set(&mut v, VerdictKind::HeartbeatTimeout, end.at, s);
                let mut e = ev(silent_last.0, silent_last.1);
                e.dir = Some(silent_dir);
                e.heartbeat = Some(h);
                e.note = Some(format!("last frame from the {}", peer(silent_dir)));
                v.evidence.push(e);
                let other = silent_dir.reverse();
                if let Some((m, name)) = c.last_frame[super::dir_index(other)] {
                    let mut e = ev(m, name);
                    e.dir = Some(other);
                    e.note = Some(format!("the {} was still sending", peer(other)));
                    v.evidence.push(e);
                }
                v.evidence.push(tcp_end_ev(end));
            }
            _ => {
                let mut s = format!(
                    "connection{who}: the {} {how} at frame {} without connection.close; the last frames were \
                     {} before it from the client and {} from the broker",
                    peer(end.dir),
                    end.at.frame,
                    fmt_s(sc),
                    fmt_s(sb)
                );
                match hb {
                    Some(h) => {
                        let _ = write!(s, " (heartbeat {h} s: not a heartbeat timeout)");
                    }
                    None if c.heartbeat == Some(0) => s.push_str(" (heartbeats disabled)"),
                    None => s.push_str(" (negotiated heartbeat unknown)"),
                }
                set(&mut v, VerdictKind::ConnectionLost, end.at, s);
                v.evidence.push(tcp_end_ev(end));
            }
        }
    } else if let Some((since, reason)) = &c.blocked {
        let held = now.secs_since(since.ts);
        let s = format!(
            "the broker blocked the connection{who} with connection.blocked (reason \"{reason}\") at \
             frame {} and had not unblocked it {} later, {}: its publishes are held",
            since.frame,
            fmt_s(held),
            ctx.until()
        );
        set(&mut v, VerdictKind::ConnectionBlocked, *since, s);
        let mut e = ev(*since, "connection.blocked");
        e.dir = Some(Dir::S2C);
        e.reason = Some(reason.clone());
        v.evidence.push(e);
    } else if let Some((since, until, reason)) = &c.last_unblock {
        // A lifted block still held the publisher's messages: reported, with its length.
        let s = format!(
            "the broker blocked the connection{who} (reason \"{reason}\") for {} (connection.blocked \
             at frame {}, connection.unblocked at frame {}); it stays unblocked {}",
            fmt_s(until.ts.secs_since(since.ts)),
            since.frame,
            until.frame,
            ctx.until()
        );
        set(&mut v, VerdictKind::ConnectionBlocked, *since, s);
        let mut e = ev(*since, "connection.blocked");
        e.reason = Some(reason.clone());
        v.evidence.push(e);
        v.evidence.push(ev(*until, "connection.unblocked"));
    } else if let Some((at, s, evidence)) = incomplete.clone() {
        set(
            &mut v,
            VerdictKind::CaptureIncomplete,
            at,
            format!("{s}{}", suffix_who(&who)),
        );
        v.evidence = evidence;
        return v;
    } else if let Some(idle) = no_consume(ctx, ci, c, now) {
        let (at, what, idle_s) = idle;
        let s = format!(
            "the connection{who} opened {} channel(s) but never sent basic.consume (nor basic.publish \
             or basic.get); what it did instead: {what}; then nothing but heartbeats for {} {}",
            c.channels_opened,
            fmt_s(idle_s),
            ctx.until()
        );
        if idle_s >= UNCERTAIN_AFTER_S {
            set(&mut v, VerdictKind::NoConsume, at, s);
            let mut e = ev(
                at,
                c.last_client_method.map_or(c.first_name, |(_, k)| k.name()),
            );
            e.dir = Some(Dir::C2S);
            e.note = Some(
                c.last_client_method
                    .map(|(_, k)| format!("last method from the client: {k}"))
                    .unwrap_or_default(),
            );
            v.evidence.push(e);
            if idle_s < t {
                v.certainty = Certainty::Uncertain;
                let _ = write!(
                    v.explanation,
                    "; uncertain: it may still consume (after {} without a consume it is certain)",
                    fmt_s(t)
                );
            }
        } else {
            v.explanation = healthy_connection(c, &who);
        }
        return v;
    } else {
        v.explanation = healthy_connection(c, &who);
        return v;
    }
    if let Some((_, s, _)) = incomplete {
        let _ = write!(v.explanation, " (also: {s})");
    }
    v
}

/// A client that closes its socket (FIN) without connection.close while no
/// consumer of it is registered and nothing is unsettled loses nothing: an
/// idle connection dropped at process exit (Dramatiq does this with a
/// connection whose consume failed). RabbitMQ logs it as "client unexpectedly
/// closed TCP connection", and the healthy verdict says so.
fn is_quiet_client_exit(e: &super::TcpEnd) -> bool {
    e.kind == TcpEndKind::Fin && e.dir == Dir::C2S && e.live_consumers == 0 && e.unacked == 0
}

fn suffix_who(who: &str) -> String {
    if who.is_empty() {
        String::new()
    } else {
        format!(" (connection{who})")
    }
}

fn describe_client(c: &ConnState) -> String {
    let mut s = String::new();
    if let Some(n) = &c.connection_name {
        let _ = write!(s, " \"{n}\"");
    }
    match (&c.client_product, &c.client_version) {
        (Some(p), Some(v)) => {
            let _ = write!(s, " ({p} {v})");
        }
        (Some(p), None) => {
            let _ = write!(s, " ({p})");
        }
        _ => {}
    }
    s
}

fn tcp_end_ev(end: super::TcpEnd) -> EvidenceRef {
    let mut e = ev(
        end.at,
        match end.kind {
            TcpEndKind::Fin => "tcp.close",
            TcpEndKind::Rst => "tcp.reset",
        },
    );
    e.dir = Some(end.dir);
    e
}

/// `(moment it went idle, what it did, idle seconds)` when the connection
/// opened channels, never consumed, published or got, and showed the intent to
/// consume: a basic.qos, or queues it declared none of which another
/// connection here consumes. A connection that declares queues consumed
/// elsewhere (a worker's helper connection, as Dramatiq opens one to declare
/// `X`, `X.DQ` and `X.XQ` for the consumers on other connections) or only
/// opens a channel is not a stall.
fn no_consume(ctx: &Ctx, ci: u32, c: &ConnState, now: Timestamp) -> Option<(Mark, String, f64)> {
    let qos = c.client_methods[MethodKind::BasicQos as usize] > 0;
    let consumed_elsewhere = c.declared_queues.iter().any(|q| {
        ctx.consumed_on
            .get(q.as_str())
            .is_some_and(|conns| conns.iter().any(|&other| other != ci))
    });
    let declares_for_itself = !c.declared_queues.is_empty() && !consumed_elsewhere;
    if !qos && !declares_for_itself {
        return None;
    }
    if c.channels_opened == 0
        || c.consumes > 0
        || !c.consumers.is_empty()
        || c.publishes > 0
        || c.gets > 0
        || c.close.is_some()
        || c.tcp_end.is_some()
    {
        return None;
    }
    let at = c.last_client_method.map(|(m, _)| m).unwrap_or(c.first);
    let mut parts = Vec::new();
    for k in MethodKind::ALL {
        let n = c.client_methods[*k as usize];
        if n == 0
            || matches!(
                k,
                MethodKind::ConnectionStartOk
                    | MethodKind::ConnectionTuneOk
                    | MethodKind::ConnectionOpen
                    | MethodKind::ConnectionSecureOk
            )
        {
            continue;
        }
        parts.push(format!("{k} x{n}"));
    }
    let mut what = if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    };
    if !c.declared_queues.is_empty() {
        let _ = write!(
            what,
            " (queues declared: {})",
            name_list(&c.declared_queues)
        );
    }
    Some((at, what, now.secs_since(at.ts).max(0.0)))
}

fn healthy_connection(c: &ConnState, who: &str) -> String {
    let mut s = format!(
        "connection{who}: {} channel(s), {} consume(s), {} publish(es), {} deliveries",
        c.channels_opened, c.consumes, c.publishes, c.deliveries
    );
    if let Some(cl) = &c.close {
        let _ = write!(s, "; closed by the client ({})", describe_close(cl));
    } else if let Some(e) = c.tcp_end.filter(is_quiet_client_exit) {
        let _ = write!(
            s,
            "; the client closed the socket (FIN, frame {}) without connection.close while no \
             consumer of it was registered and nothing was unacknowledged",
            e.at.frame
        );
    }
    if let Some((since, until, reason)) = &c.last_unblock {
        let _ = write!(
            s,
            "; was blocked (\"{reason}\") from frame {} to frame {}",
            since.frame, until.frame
        );
    }
    s
}

// ---------------------------------------------------------------- channels

fn channel_verdicts(
    ctx: &Ctx,
    ci: u32,
    c: &ConnState,
    out: &mut Vec<(Verdict, Option<CauseSeed>)>,
) {
    let (a, now) = (ctx.a, ctx.now);
    for rec in &c.channel_closes {
        let v = channel_close_verdict(a, ci, c, rec);
        let seed = own_seed(
            CauseKey::Event {
                conn: c.serial,
                frame: rec.close.at.frame,
            },
            &v,
        );
        out.push((v, seed));
    }
    let open = c
        .open_channels()
        .filter_map(|(ch, f)| f.map(|f| (ch, f.clone())));
    let kept = c.flows_paused.iter().cloned();
    for (ch, f) in open.chain(kept) {
        let mut v = base(Scope::Channel, c);
        v.channel = Some(ch);
        let what = match f.dir {
            Dir::S2C => "the broker asked the client to stop publishing on it",
            Dir::C2S => "the client asked the broker to stop deliveries to its consumers on it",
        };
        let s = format!(
            "channel {ch} was paused by channel.flow active=false from the {} at frame {}: {what}; \
             no channel.flow active=true followed in the {} {}",
            peer(f.dir),
            f.at.frame,
            fmt_s(now.secs_since(f.at.ts)),
            ctx.until()
        );
        set(&mut v, VerdictKind::ChannelFlowPaused, f.at, s);
        let mut e = ev(f.at, "channel.flow");
        e.dir = Some(f.dir);
        e.channel = Some(ch);
        e.note = Some("active=false".into());
        v.evidence.push(e);
        let seed = own_seed(
            CauseKey::Event {
                conn: c.serial,
                frame: f.at.frame,
            },
            &v,
        );
        out.push((v, seed));
    }
}

fn channel_close_verdict(a: &Analyzer, ci: u32, c: &ConnState, rec: &ChannelCloseRec) -> Verdict {
    let mut v = base(Scope::Channel, c);
    v.channel = Some(rec.channel);
    let (kind, s) = channel_close_text(a, rec);
    if rec.consumer_tags.len() == 1 {
        v.consumer_tag = rec.consumer_tags.first().cloned();
        // The consumer of this connection's channel: another worker may use the
        // same fixed tag on its own channel of the same number.
        v.queue = c
            .consumers
            .iter()
            .map(|&i| &a.consumers[i as usize])
            .find(|cs| {
                cs.conn == ci
                    && cs.channel == rec.channel
                    && Some(&cs.tag) == v.consumer_tag.as_ref()
            })
            .and_then(|cs| cs.queue.clone());
    }
    set(&mut v, kind, rec.close.at, s);
    v.evidence = channel_close_evidence(rec);
    v
}

fn channel_close_text(a: &Analyzer, rec: &ChannelCloseRec) -> (VerdictKind, String) {
    let _ = a;
    let mut s = format!(
        "the broker closed channel {} at frame {} with channel.close {}",
        rec.channel,
        rec.close.at.frame,
        describe_close(&rec.close)
    );
    let kind = if is_ack_timeout(&rec.close) {
        if let Some(h) = &rec.oldest_unacked {
            let _ = write!(
                s,
                ": delivery tag {}{} (basic.deliver at frame {}) was held unacknowledged for {}",
                h.delivery_tag,
                h.consumer_tag
                    .as_ref()
                    .map(|t| format!(" of consumer '{t}'"))
                    .unwrap_or_default(),
                h.delivered.frame,
                fmt_s(rec.close.at.ts.secs_since(h.delivered.ts))
            );
            if h.unacked > 1 {
                let _ = write!(
                    s,
                    "; {} deliveries were unacknowledged and go back to the queue",
                    h.unacked
                );
            }
        }
        VerdictKind::AckTimeout
    } else {
        if !rec.consumer_tags.is_empty() {
            let _ = write!(
                s,
                "; consumer(s) {} on it stopped",
                name_list(&rec.consumer_tags)
            );
        }
        if let Some(h) = &rec.oldest_unacked {
            let _ = write!(
                s,
                "; {} unacknowledged deliveries were dropped back to the queue",
                h.unacked
            );
        }
        VerdictKind::ChannelClosedByBroker
    };
    (kind, s)
}

fn channel_close_evidence(rec: &ChannelCloseRec) -> Vec<EvidenceRef> {
    let mut out = Vec::new();
    if let Some(h) = &rec.oldest_unacked {
        let mut e = ev(h.delivered, "basic.deliver");
        e.dir = Some(Dir::S2C);
        e.channel = Some(rec.channel);
        e.delivery_tag = Some(h.delivery_tag);
        e.consumer_tag = h.consumer_tag.clone();
        e.note = Some("oldest unacknowledged delivery".into());
        out.push(e);
    }
    out.push(close_ev(&rec.close, "channel.close", Some(rec.channel)));
    out
}

// ---------------------------------------------------------------- consumers

fn consumer_base(c: &ConnState, cs: &ConsumerState) -> Verdict {
    let mut v = base(Scope::Consumer, c);
    v.channel = Some(cs.channel);
    v.consumer_tag = Some(cs.tag.clone());
    v.queue = cs.queue.clone();
    v
}

pub(crate) fn consumer_name(cs: &ConsumerState) -> String {
    let mut s = format!("consumer '{}'", cs.tag);
    match &cs.queue {
        Some(q) => {
            let _ = write!(s, " on queue '{q}'");
        }
        None => s.push_str(" (queue unknown: its basic.consume precedes the capture)"),
    }
    s
}

fn consume_evidence(cs: &ConsumerState) -> Vec<EvidenceRef> {
    let mut out = Vec::new();
    if let Some(q) = &cs.qos {
        let mut e = ev(q.at, "basic.qos");
        e.dir = Some(Dir::C2S);
        e.channel = Some(cs.channel);
        e.prefetch_count = Some(q.prefetch_count);
        e.global = Some(q.global);
        out.push(e);
    }
    if let Some(m) = cs.consume {
        let mut e = ev(m, "basic.consume");
        e.dir = Some(Dir::C2S);
        e.channel = Some(cs.channel);
        e.queue = cs.queue.clone();
        e.consumer_tag = Some(cs.tag.clone());
        out.push(e);
    }
    if let Some(m) = cs.consume_ok {
        let mut e = ev(m, "basic.consume-ok");
        e.dir = Some(Dir::S2C);
        e.channel = Some(cs.channel);
        e.consumer_tag = Some(cs.tag.clone());
        out.push(e);
    }
    out
}

fn consumer_verdict(
    ctx: &Ctx,
    idx: u32,
    cs: &ConsumerState,
    conn_v: &Verdict,
) -> (Verdict, Option<CauseSeed>) {
    let a = ctx.a;
    let c = &a.conns[cs.conn as usize];
    let mut v = consumer_base(c, cs);
    let name = consumer_name(cs);
    let own = |v: &Verdict| own_seed(CauseKey::Consumer(cs.serial), v);
    // Endings decided by the broker or the network are the verdict.
    match cs.end {
        Some(ConsumerEnd::BrokerCancel(m)) => {
            let mut s = format!(
                "the broker cancelled {name} with basic.cancel at frame {}",
                m.frame
            );
            let mut evidence = consume_evidence(cs);
            match cs.queue.as_ref().and_then(|q| a.queues.get(q).map(|i| (q, i))) {
                Some((q, info)) if info.deleted.is_some() => {
                    let (dm, dc) = info.deleted.unwrap_or((m, cs.conn));
                    let deleter = a.conns.get(dc as usize).map(|d| d.conn);
                    let _ = write!(
                        s,
                        ": queue '{q}' was deleted (queue.delete at frame {}{})",
                        dm.frame,
                        deleter.map(|d| format!(" on {d}")).unwrap_or_default()
                    );
                    let mut e = ev(dm, "queue.delete");
                    e.queue = Some(q.clone());
                    e.dir = Some(Dir::C2S);
                    if dc != cs.conn {
                        e.conn = deleter;
                    }
                    evidence.push(e);
                }
                _ => s.push_str(
                    ": its queue was deleted outside the capture (another client, the management UI, \
                     a policy or TTL) or the node hosting it failed",
                ),
            }
            let _ = write!(s, "; it had received {} deliveries", cs.deliveries);
            let mut e = ev(m, "basic.cancel");
            e.dir = Some(Dir::S2C);
            e.channel = Some(cs.channel);
            e.consumer_tag = Some(cs.tag.clone());
            evidence.push(e);
            set(&mut v, VerdictKind::ConsumerCancelledByBroker, m, s);
            v.evidence = evidence;
            let seed = own(&v);
            return (v, seed);
        }
        Some(ConsumerEnd::ChannelClosed {
            by: Dir::S2C,
            close: Some(i),
            ..
        }) => {
            if let Some(rec) = c.channel_closes.get(i) {
                let (kind, s) = channel_close_text(a, rec);
                let mut evidence = consume_evidence(cs);
                evidence.extend(channel_close_evidence(rec));
                let prefix = if cs.consume_ok.is_none() && cs.consume.is_some() && !cs.nowait {
                    format!("{name} was never registered: ")
                } else {
                    format!("{name} stopped: ")
                };
                set(&mut v, kind, rec.close.at, format!("{prefix}{s}"));
                v.evidence = evidence;
                let seed = Some(CauseSeed {
                    key: CauseKey::Event {
                        conn: c.serial,
                        frame: rec.close.at.frame,
                    },
                    text: s,
                });
                return (v, seed);
            }
        }
        Some(ConsumerEnd::ConnectionClosed { by: Dir::S2C, .. })
        | Some(ConsumerEnd::TcpEnded(_))
            if conn_v.verdict.is_stall() && conn_v.since.is_some() =>
        {
            v.verdict = conn_v.verdict;
            v.since = conn_v.since;
            v.frame = conn_v.frame;
            v.certainty = conn_v.certainty;
            v.explanation = format!(
                "{name} ended with its connection: {}; {} deliveries were unacknowledged",
                conn_v.explanation, cs.unacked
            );
            v.evidence = consume_evidence(cs);
            v.evidence.extend(conn_v.evidence.iter().cloned());
            let seed = conn_v.frame.map(|frame| CauseSeed {
                key: CauseKey::Event {
                    conn: c.serial,
                    frame,
                },
                text: conn_v.explanation.clone(),
            });
            return (v, seed);
        }
        _ => {}
    }
    // Otherwise judge the consumer as it was at its (clean) end or now.
    let at_now = match cs.end {
        Some(e) if e.at().ts < ctx.now => e.at().ts,
        _ => ctx.now,
    };
    let ended_note = match cs.end {
        Some(ConsumerEnd::ClientCancel(m)) => {
            format!("; cancelled by the client at frame {}", m.frame)
        }
        Some(e) => format!(
            "; ended with its channel or connection, closed by the client at frame {}",
            e.at().frame
        ),
        None => String::new(),
    };

    if let Some((at, s, evidence)) = redelivery_loop(a, cs, &name) {
        set(&mut v, VerdictKind::RedeliveryLoop, at, s);
        v.evidence = evidence;
        let seed = own(&v);
        return (v, seed);
    }

    if let (Some(m), None, false, false) = (cs.consume, cs.consume_ok, cs.nowait, cs.discovered) {
        let waited = at_now.secs_since(m.ts);
        let s = format!(
            "{name}: basic.consume at frame {} got no basic.consume-ok from the broker in {}{ended_note}",
            m.frame,
            fmt_s(waited)
        );
        if waited >= UNCERTAIN_AFTER_S {
            set(&mut v, VerdictKind::ConsumeNotConfirmed, m, s);
            v.evidence = consume_evidence(cs);
            if waited < ctx.t {
                v.certainty = Certainty::Uncertain;
                let _ = write!(
                    v.explanation,
                    "; uncertain: the broker answers in milliseconds, and after {} it is certain",
                    fmt_s(ctx.t)
                );
            }
            let seed = own(&v);
            return (v, seed);
        }
        v.explanation = s;
        return (v, None);
    }

    let mut note = String::new();
    match prefetch_window(ctx, idx, cs, &name, at_now) {
        Window::Stall(st) => {
            set(&mut v, st.kind, st.at, st.explanation);
            v.certainty = st.certainty;
            v.evidence = st.evidence;
            let seed = Some(CauseSeed {
                key: CauseKey::Consumer(cs.serial),
                text: st.headline,
            });
            return (v, seed);
        }
        Window::WithinPace(n) => note = n,
        Window::NotFull => {}
    }

    if cs.deliveries == 0 && !cs.discovered && (cs.consume_ok.is_some() || cs.nowait) {
        if let Some(r) = starving(ctx, cs, &name, at_now, &ended_note) {
            let Starving {
                kind,
                certainty,
                at,
                explanation,
                evidence,
                misses,
            } = r;
            v.verdict = kind;
            v.certainty = certainty;
            if kind.is_stall() {
                set(&mut v, kind, at, explanation);
                v.evidence = evidence;
                let seed = if misses.is_empty() {
                    own(&v)
                } else {
                    Some(CauseSeed {
                        key: CauseKey::Misroute(misses),
                        text: v.explanation.clone(),
                    })
                };
                return (v, seed);
            }
            v.explanation = explanation;
            return (v, None);
        }
    }

    if cs.discovered && c.is_incomplete() && cs.unacked > 0 {
        let since = cs.last_settle.map_or(cs.first_delivery, Some);
        if let Some(m) = since {
            let held = at_now.secs_since(m.ts);
            if held >= ctx.t {
                let s = format!(
                    "{name}: {} deliveries unacknowledged and no settle for {}; whether its prefetch \
                     window is full is unknown because its basic.qos and basic.consume precede the capture",
                    cs.unacked,
                    fmt_s(held)
                );
                set(&mut v, VerdictKind::CaptureIncomplete, m, s);
                v.evidence = unacked_evidence(a, idx, cs);
                let seed = own(&v);
                return (v, seed);
            }
        }
    }

    // Healthy or slow.
    let lat = latency(cs);
    let mut s = format!(
        "{name}: {} deliveries, {} acks, {} nacks/rejects, {} unacknowledged",
        cs.deliveries,
        cs.acks,
        cs.nacks_requeue + cs.nacks_drop + cs.rejects_requeue + cs.rejects_drop,
        cs.unacked
    );
    if let Some(l) = &lat {
        let _ = write!(
            s,
            "; delivery->settle latency p50 {} p95 {} max {} over {} settles",
            fmt_s(l.p50_s),
            fmt_s(l.p95_s),
            fmt_s(l.max_s),
            l.count
        );
    }
    if cs.discovered {
        s.push_str("; registered before the capture began");
    }
    s.push_str(&ended_note);
    if !note.is_empty() {
        let _ = write!(s, "; {note}");
    }
    let slow = a.cfg.slow_ack.as_secs_f64();
    match (&lat, cs.first_slow_settle) {
        (Some(l), Some(m)) if l.p95_s >= slow && l.count >= 2 => {
            let _ = write!(
                s,
                " (p95 at or above the {} slow_ack threshold, but settles keep coming)",
                fmt_s(slow)
            );
            set(&mut v, VerdictKind::SlowButHealthy, m, s);
            let mut e = ev(m, "basic.ack");
            e.dir = Some(Dir::C2S);
            e.channel = Some(cs.channel);
            e.note = Some("first settle slower than slow_ack".into());
            v.evidence.push(e);
        }
        _ => v.explanation = s,
    }
    (v, None)
}

pub(crate) fn latency(cs: &ConsumerState) -> Option<LatencySummary> {
    let h = &cs.latency;
    if h.count() == 0 {
        return None;
    }
    Some(LatencySummary {
        count: h.count(),
        p50_s: secs(h.quantile_us(0.5).unwrap_or(0) as f64 / 1e6),
        p95_s: secs(h.quantile_us(0.95).unwrap_or(0) as f64 / 1e6),
        max_s: secs(h.max_us() as f64 / 1e6),
    })
}

fn unacked_evidence(a: &Analyzer, idx: u32, cs: &ConsumerState) -> Vec<EvidenceRef> {
    a.unacked_of(idx)
        .into_iter()
        .map(|(tag, m)| {
            let mut e = ev(m, "basic.deliver");
            e.dir = Some(Dir::S2C);
            e.channel = Some(cs.channel);
            e.consumer_tag = Some(cs.tag.clone());
            e.delivery_tag = Some(tag);
            e
        })
        .collect()
}

/// A stall found by a consumer rule: the verdict's fields and its headline.
struct StallSeed {
    kind: VerdictKind,
    certainty: Certainty,
    at: Mark,
    explanation: String,
    evidence: Vec<EvidenceRef>,
    headline: String,
}

/// What the consumer's prefetch window says.
enum Window {
    /// No window, or it is not full.
    NotFull,
    /// Full at the end, but for no longer than this consumer has shown it takes
    /// to settle: a note for the healthy/slow explanation.
    WithinPace(String),
    Stall(StallSeed),
}

fn p95_s(cs: &ConsumerState) -> f64 {
    cs.latency.quantile_us(0.95).unwrap_or(0) as f64 / 1e6
}

/// The prefetch rule. A full window with no settle since is why the broker
/// stops delivering, whatever its length; how certain that is comes from what
/// this consumer and the other consumers of its queue showed:
/// - within its own pace (full no longer than twice its slowest settle, and
///   than ten times its p95): not a stall;
/// - certain when the time threshold passed, or when it has been full
///   [`PACE_FACTOR`] times longer than the pace the capture shows (peers on
///   the same queue settling meanwhile, or its own fast settles before), and
///   at least [`PACE_FLOOR_S`];
/// - otherwise uncertain, with the duration known so far.
fn prefetch_window(
    ctx: &Ctx,
    idx: u32,
    cs: &ConsumerState,
    name: &str,
    at_now: Timestamp,
) -> Window {
    let a = ctx.a;
    if cs.no_ack {
        return Window::NotFull;
    }
    let window = match (cs.full_since, cs.prefetch_limit()) {
        (Some(m), Some(l)) => cs.qos.clone().map(|q| (m, l, "per-consumer", q)),
        _ => a
            .channel_window(cs.conn, cs.channel)
            .and_then(|(q, full, _)| {
                Some((
                    full?,
                    q.prefetch_count as u32,
                    "channel-wide (global)",
                    q.clone(),
                ))
            })
            .filter(|_| cs.unacked > 0),
    };
    let Some((full_since, limit, scope_desc, qos)) = window else {
        return Window::NotFull;
    };
    let held = at_now.secs_since(full_since.ts).max(0.0);
    let own_settles = cs.latency.count();
    let own_max = cs.latency.max_us() as f64 / 1e6;
    let own_p95 = p95_s(cs);
    let own_pace_bound = (2.0 * own_max).max(PACE_FACTOR * own_p95);
    if own_settles > 0 && held <= own_pace_bound {
        return Window::WithinPace(format!(
            "its prefetch window of {limit} is full at the end, for {}, no longer than it has taken to settle before \
             (slowest {})",
            fmt_s(held),
            fmt_s(own_max)
        ));
    }
    // Other consumers of the same queue that settled after this window filled.
    let peers: Vec<&ConsumerState> = a
        .consumers
        .iter()
        .enumerate()
        .filter(|(j, p)| {
            *j as u32 != idx
                && p.queue.is_some()
                && p.queue == cs.queue
                && p.last_settle.is_some_and(|m| m.ts > full_since.ts)
        })
        .map(|(_, p)| p)
        .collect();
    let peer_pace = peers.iter().map(|p| p95_s(p)).fold(0.0, f64::max);
    let by_time = held >= ctx.t && held > 2.0 * own_max;
    let by_peers = !peers.is_empty()
        && held
            >= PACE_FLOOR_S
                .max(PACE_FACTOR * peer_pace)
                .max(own_pace_bound);
    let by_own = own_settles >= OWN_PACE_MIN_SETTLES && held >= PACE_FLOOR_S.max(own_pace_bound);
    let tags = a.unacked_of(idx);
    let mut tag_list: Vec<String> = tags
        .iter()
        .take(MAX_NAMED * 2)
        .map(|(t, _)| t.to_string())
        .collect();
    if tags.len() > MAX_NAMED * 2 {
        tag_list.push(format!("and {} more", tags.len() - MAX_NAMED * 2));
    }
    let mut s = format!(
        "{name}: its {scope_desc} prefetch window of {limit} (basic.qos prefetch_count={} at frame {}) \
         is full: delivery tags {} are unacknowledged, the window filled with the delivery at frame {} \
         and no basic.ack/nack/reject came for {} {}; the broker sends this consumer nothing more until \
         it settles",
        qos.prefetch_count,
        qos.at.frame,
        tag_list.join(", "),
        full_since.frame,
        fmt_s(held),
        ctx.until()
    );
    if !peers.is_empty() {
        let _ = write!(
            s,
            "; meanwhile {} other consumer(s) of queue '{}' kept settling (p95 {})",
            peers.len(),
            cs.queue.as_deref().unwrap_or(""),
            fmt_s(peer_pace)
        );
    } else if own_settles > 0 {
        let _ = write!(
            s,
            "; before, it settled {} deliveries with p95 {} (slowest {})",
            own_settles,
            fmt_s(own_p95),
            fmt_s(own_max)
        );
    }
    let mut headline = format!(
        "consumer '{}'{} holds {} unacknowledged deliveries, its whole {scope_desc} prefetch window of \
         {limit}, with no settle for {} {}",
        cs.tag,
        cs.queue
            .as_deref()
            .map(|q| format!(" on queue '{q}'"))
            .unwrap_or_default(),
        tags.len(),
        fmt_s(held),
        ctx.until()
    );
    if !peers.is_empty() {
        let _ = write!(
            headline,
            " while {} other consumer(s) of the queue kept settling",
            peers.len()
        );
    }
    headline.push_str(": the broker sends it nothing more until it settles");
    let certainty = if by_time || by_peers || by_own {
        Certainty::Certain
    } else {
        let _ = write!(
            headline,
            " (duration unknown: {} {} after the window filled)",
            ctx.end_word(),
            fmt_s(held)
        );
        let _ = write!(
            s,
            "; uncertain, duration unknown: {} {} after the window filled, with nothing to compare it with \
             (certain once it stays full for {}, or while other consumers of the queue settle)",
            ctx.end_word(),
            fmt_s(held),
            fmt_s(ctx.t.max(2.0 * own_max))
        );
        Certainty::Uncertain
    };
    let mut evidence = consume_evidence(cs);
    if !evidence.iter().any(|e| e.method == "basic.qos") {
        let mut e = ev(qos.at, "basic.qos");
        e.prefetch_count = Some(qos.prefetch_count);
        e.global = Some(qos.global);
        evidence.insert(0, e);
    }
    let mut unacked = unacked_evidence(a, idx, cs);
    // Keep the delivery that filled the window even when the list is long.
    let room = a.cfg.max_evidence.saturating_sub(evidence.len()).max(1);
    if unacked.len() > room {
        let last = unacked.pop();
        unacked.truncate(room.saturating_sub(1));
        unacked.extend(last);
    }
    evidence.extend(unacked);
    Window::Stall(StallSeed {
        kind: VerdictKind::PrefetchExhausted,
        certainty,
        at: full_since,
        explanation: s,
        evidence,
        headline,
    })
}

/// A registered consumer that received nothing, judged.
struct Starving {
    kind: VerdictKind,
    certainty: Certainty,
    at: Mark,
    explanation: String,
    evidence: Vec<EvidenceRef>,
    /// Destinations (indices) of the publishes that went elsewhere.
    misses: Vec<u32>,
}

/// The rule for a consumer with no delivery: publishes seen after it
/// registered (and before it ended) that the default exchange's rule, or the
/// exchanges and bindings seen, send away from its queue, and that no other
/// consumer here received, make a work consumer `no_messages_routed_to_queue`;
/// a bystander (control, reply, broadcast, delay queue) and a consumer for
/// which nothing was published are `idle`.
fn starving(
    ctx: &Ctx,
    cs: &ConsumerState,
    name: &str,
    at_now: Timestamp,
    ended_note: &str,
) -> Option<Starving> {
    let a = ctx.a;
    let c = &a.conns[cs.conn as usize];
    let queue = cs.queue.as_deref()?;
    let registered = cs.consume_ok.or(cs.consume).unwrap_or(c.first);
    let vhost = c.vhost.as_deref();
    let mut misses: Vec<(Mark, u32, usize, String)> = Vec::new();
    let mut reachable_after = 0u64;
    let mut any_after = false;
    for (i, d) in a.destinations.iter().enumerate() {
        // The first publish of this destination after the registration, if
        // it came before the consumer ended.
        let Some(&(_, first, conn)) = d.after.iter().find(|(e, _, _)| *e >= cs.epoch) else {
            continue;
        };
        if first.ts > at_now {
            continue;
        }
        let pub_vhost = a.conns.get(conn as usize).and_then(|p| p.vhost.as_deref());
        if let (Some(x), Some(y)) = (vhost, pub_vhost) {
            if x != y {
                continue;
            }
        }
        any_after = true;
        match routing::reaches(a, d, queue) {
            Reach::Yes => reachable_after += d.count,
            Reach::No(why) if !ctx.served.contains(&i) => misses.push((first, conn, i, why)),
            Reach::No(_) => {}
        }
    }
    misses.sort_by_key(|(m, _, _, _)| m.ts);
    let bystander = routing::bystander(a, cs);
    let idle = |explanation: String| Starving {
        kind: VerdictKind::Idle,
        certainty: Certainty::Certain,
        at: registered,
        explanation,
        evidence: Vec::new(),
        misses: Vec::new(),
    };
    if let Some(why) = bystander {
        let mut s = format!("{name} received no deliveries, by design: {why}");
        if !misses.is_empty() {
            let _ = write!(
                s,
                "; publishes that went elsewhere were not meant for it ({} destination(s))",
                misses.len()
            );
        }
        s.push_str(ended_note);
        return Some(idle(s));
    }
    if let Some((first, _, _, _)) = misses.first().cloned() {
        let mut s = format!(
            "{name} (registered at frame {}) received no deliveries; messages published after it went elsewhere: ",
            registered.frame
        );
        let mut evidence = consume_evidence(cs);
        let mut parts = Vec::new();
        let mut certain = true;
        for (m, conn, i, why) in misses.iter().take(MAX_NAMED) {
            let d = &a.destinations[*i];
            let mut p = format!(
                "{} publish(es) to exchange '{}' with routing key '{}' (first after registration at frame {}): {why}",
                d.count, d.exchange, d.routing_key, m.frame
            );
            p.push_str(&where_they_went(ctx, d));
            if d.returned > 0 {
                let (_, code, text) = d.first_return.clone().unwrap_or((*m, 0, String::new()));
                let _ = write!(
                    p,
                    "; the broker returned {} of them ({code} {text})",
                    d.returned
                );
            }
            // The default exchange's rule is certain; a named exchange's bindings
            // may predate the capture, so a delivery may still follow.
            let waited = at_now.secs_since(m.ts);
            if !d.exchange.is_empty() && ctx.live() && waited < LIVE_GRACE_S {
                certain = false;
            }
            parts.push(p);
            let mut e = ev(*m, "basic.publish");
            e.dir = Some(Dir::C2S);
            e.exchange = Some(d.exchange.clone());
            e.routing_key = Some(d.routing_key.clone());
            if *conn != cs.conn {
                e.conn = a.conns.get(*conn as usize).map(|p| p.conn);
            }
            evidence.push(e);
        }
        s.push_str(&parts.join("; "));
        let idle_s = at_now.secs_since(first.ts).max(0.0);
        let _ = write!(
            s,
            "; nothing delivered to it for {} after the first of them{ended_note}",
            fmt_s(idle_s)
        );
        if !certain {
            let _ = write!(
                s,
                "; uncertain: bindings made before the capture are unknown, and a delivery may still come"
            );
        }
        return Some(Starving {
            kind: VerdictKind::NoMessagesRoutedToQueue,
            certainty: if certain {
                Certainty::Certain
            } else {
                Certainty::Uncertain
            },
            at: first,
            explanation: s,
            evidence,
            misses: misses.iter().map(|(_, _, i, _)| *i as u32).collect(),
        });
    }
    if any_after {
        let mut s = format!("{name} received no deliveries");
        if reachable_after > 0 {
            let _ = write!(
                s,
                ": {reachable_after} publish(es) that can reach queue '{queue}' were seen, none delivered to \
                 this consumer (another consumer of the queue, here or not, took them)"
            );
        } else {
            s.push_str(
                ": every publish after it registered went to queues other consumers here read",
            );
        }
        s.push_str(ended_note);
        return Some(idle(s));
    }
    let ready = a
        .queues
        .get(queue)
        .and_then(|q| q.message_count)
        .unwrap_or(0);
    if ready == 0 {
        let mut s = format!(
            "{name} received no deliveries, and nothing was published for it: no publisher in the capture \
             sent anything after it registered at frame {}",
            registered.frame
        );
        if a.queues.get(queue).and_then(|q| q.message_count) == Some(0) {
            let _ = write!(
                s,
                " (queue.declare-ok reported 0 messages ready in '{queue}')"
            );
        }
        s.push_str(ended_note);
        return Some(idle(s));
    }
    // Messages were ready in its queue, yet none came: time is the evidence.
    let idle_s = at_now.secs_since(registered.ts).max(0.0);
    if idle_s < UNCERTAIN_AFTER_S {
        return None;
    }
    let mut s = format!(
        "{name} (registered at frame {}) received no deliveries although queue.declare-ok reported {ready} \
         message(s) ready in '{queue}'; nothing delivered for {} {}{ended_note}",
        registered.frame,
        fmt_s(idle_s),
        ctx.until()
    );
    let certainty = if idle_s >= ctx.t {
        Certainty::Certain
    } else {
        let _ = write!(s, "; uncertain: certain after {}", fmt_s(ctx.t));
        Certainty::Uncertain
    };
    Some(Starving {
        kind: VerdictKind::NoMessagesRoutedToQueue,
        certainty,
        at: registered,
        explanation: s,
        evidence: consume_evidence(cs),
        misses: Vec::new(),
    })
}

/// Where a destination's publishes went, as far as the capture shows:
/// "; they went to queue 'b' (declared at frame 40, 3 ready), which no
/// consumer here reads".
fn where_they_went(ctx: &Ctx, d: &super::Destination) -> String {
    let a = ctx.a;
    let queues = routing::queues_reached(a, d);
    if queues.is_empty() {
        return "; no binding seen in the capture routes them to any queue (bindings made before it are \
                unknown; otherwise the broker drops them, or returns them when mandatory)"
            .to_string();
    }
    let mut parts = Vec::new();
    for q in queues.iter().take(MAX_NAMED) {
        let mut p = format!("'{q}'");
        match a.queues.get(q) {
            Some(info) => {
                if let Some(m) = info.declared {
                    let _ = write!(p, " (declared at frame {}", m.frame);
                    if let Some(n) = info.message_count {
                        let _ = write!(p, ", {n} ready then");
                    }
                    p.push(')');
                }
            }
            None if d.exchange.is_empty() => p.push_str(
                " (not declared in the capture: unless it exists, the broker drops them)",
            ),
            None => {}
        }
        parts.push(p);
    }
    let consumed = queues.iter().any(|q| ctx.consumed(q));
    format!(
        "; they went to queue {}{}",
        parts.join(", "),
        if consumed {
            ""
        } else {
            ", which no consumer here reads"
        }
    )
}

fn redelivery_loop(
    a: &Analyzer,
    cs: &ConsumerState,
    name: &str,
) -> Option<(Mark, String, Vec<EvidenceRef>)> {
    let fp = cs.loop_fp?;
    let tr = a.requeued.get(&fp)?;
    let became = tr.became_loop?;
    // The earliest third delivery of any looping message to this consumer.
    let at = match cs.loop_since {
        Some(m) if (m.ts, m.frame) < (became.ts, became.frame) => m,
        _ => became,
    };
    let msg = match &tr.message_id {
        Some(id) => format!("message_id '{id}'"),
        None => {
            "a message without message_id (matched by exchange, routing key, size and properties)"
                .to_string()
        }
    };
    let settles = tr.requeues;
    let mut s = format!(
        "{name}: {msg} was delivered {} times, each time settled with requeue=true ({} nack/reject seen) \
         and delivered again; the third delivery is at frame {}",
        tr.rounds, settles, became.frame
    );
    if tr.outstanding {
        s.push_str("; it is delivered and unsettled at the end");
    }
    let evidence = tr
        .events
        .iter()
        .map(|e| {
            let mut r = ev(e.at, e.method.name());
            r.channel = Some(e.channel);
            r.delivery_tag = Some(e.delivery_tag);
            r.message_id = tr.message_id.clone();
            r.dir = Some(if e.method == MethodKind::BasicDeliver {
                Dir::S2C
            } else {
                Dir::C2S
            });
            if e.conn != cs.conn {
                r.conn = a.conns.get(e.conn as usize).map(|p| p.conn);
            }
            r
        })
        .collect();
    Some((at, s, evidence))
}
