//! The consumer verdicts: cancelled by the broker, stopped with its channel or
//! connection, a redelivery loop, a consume never confirmed, a full prefetch
//! window, capture-incomplete, slow or healthy. A consumer that receives
//! nothing is judged by the queue rule (`queue.rs`).

use crate::event::MethodKind;

use super::super::routing::MAX_NAMED;
use super::super::state::{ConsumerEnd, ConsumerState, Step};
use super::channel::{channel_close_evidence, channel_close_text};
use super::newer;
use super::queue::{starving, Starving};
use super::*;

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
        None if cs.marks[Step::Consume].is_some() => {
            s.push_str(" (queue unknown: its basic.consume was cut by the capture's snaplen)")
        }
        None => s.push_str(" (queue unknown: its basic.consume precedes the capture)"),
    }
    s
}

pub(super) fn consume_evidence(cs: &ConsumerState) -> Vec<EvidenceRef> {
    let mut out = Vec::new();
    if let Some(q) = &cs.qos.per_consumer {
        let mut e = ev_on(q.at, "basic.qos", Dir::C2S, cs.channel);
        e.prefetch_count = Some(q.prefetch_count);
        e.global = Some(q.global);
        out.push(e);
    }
    if let Some(m) = cs.marks[Step::Consume] {
        let mut e = ev_on(m, "basic.consume", Dir::C2S, cs.channel);
        e.queue = cs.queue.clone();
        e.consumer_tag = Some(cs.tag.clone());
        out.push(e);
    }
    if let Some(m) = cs.marks[Step::ConsumeOk] {
        let mut e = ev_on(m, "basic.consume-ok", Dir::S2C, cs.channel);
        e.consumer_tag = Some(cs.tag.clone());
        out.push(e);
    }
    out
}

pub(super) fn consumer_verdict(
    ctx: &Ctx,
    idx: u32,
    cs: &ConsumerState,
    conn_v: &Verdict,
) -> (Verdict, Option<CauseSeed>) {
    let a = ctx.a;
    let c = a.conn_of(cs);
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
            match cs.queue.as_ref().and_then(|q| a.queue(q).map(|i| (q, i))) {
                Some((q, info)) if info.deleted.is_some() => {
                    let (dm, dc) = info.deleted.unwrap_or((m, cs.conn));
                    let deleter = a.conn_id(dc);
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
            let _ = write!(s, "; it had received {} deliveries", cs.counts.deliveries);
            let mut e = ev_on(m, "basic.cancel", Dir::S2C, cs.channel);
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
                let (kind, mut s) = channel_close_text(rec);
                s.push_str(&newer::close_note(a, cs.conn, rec));
                let mut evidence = consume_evidence(cs);
                evidence.extend(channel_close_evidence(rec));
                let prefix = if cs.marks[Step::ConsumeOk].is_none()
                    && cs.marks[Step::Consume].is_some()
                    && !cs.nowait
                {
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
                conn_v.explanation, cs.counts.unacked
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

    if let Some((at, s, evidence)) = super::cut::consumer_cut(c, cs, &name) {
        set(&mut v, VerdictKind::CaptureIncomplete, at, s);
        v.evidence = evidence;
        let seed = own(&v);
        return (v, seed);
    }

    if let Some((at, mut s, evidence)) = redelivery_loop(a, cs, &name) {
        let track = cs.hints.loop_fp.and_then(|f| a.requeue_track(f));
        s.push_str(&newer::delivery_limit_note(ctx, cs, track));
        set(&mut v, VerdictKind::RedeliveryLoop, at, s);
        v.evidence = evidence;
        let seed = own(&v);
        return (v, seed);
    }

    if let (Some(m), None, false, false) = (
        cs.marks[Step::Consume],
        cs.marks[Step::ConsumeOk],
        cs.nowait,
        cs.discovered,
    ) {
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

    if let Some(sv) = newer::standby(ctx, idx, cs, &name) {
        return (sv, None);
    }
    if let Some(nd) = super::missing::not_delivered(ctx, cs, &name, at_now) {
        set(
            &mut v,
            VerdictKind::PublishedNotDelivered,
            nd.at,
            nd.explanation,
        );
        v.certainty = nd.certainty;
        v.evidence = nd.evidence;
        let seed = own(&v);
        return (v, seed);
    }
    if cs.counts.deliveries == 0
        && !cs.discovered
        && (cs.marks[Step::ConsumeOk].is_some() || cs.nowait)
    {
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

    if cs.discovered && c.is_incomplete() && cs.counts.unacked > 0 {
        let since = cs.marks[Step::LastSettle].map_or(cs.marks[Step::FirstDelivery], Some);
        if let Some(m) = since {
            let held = at_now.secs_since(m.ts);
            if held >= ctx.t {
                let s = format!(
                    "{name}: {} deliveries unacknowledged and no settle for {}; whether its prefetch \
                     window is full is unknown because its basic.qos and basic.consume precede the capture",
                    cs.counts.unacked,
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
    let lat = cs.latency_summary();
    let mut s = format!(
        "{name}: {} deliveries, {} acks, {} nacks/rejects, {} unacknowledged",
        cs.counts.deliveries,
        cs.counts.acks,
        cs.counts.nacks_requeue
            + cs.counts.nacks_drop
            + cs.counts.rejects_requeue
            + cs.counts.rejects_drop,
        cs.counts.unacked
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
    if note.is_empty() {
        if let Some((n, _)) = newer::eta_note(ctx, idx, cs, at_now) {
            let _ = write!(s, "; {n}");
        }
    }
    s.push_str(&newer::dead_letter_note(a, cs));
    let slow = a.config().slow_ack.as_secs_f64();
    match (&lat, cs.marks[Step::FirstSlowSettle]) {
        (Some(l), Some(m)) if l.p95_s >= slow && l.count >= 2 => {
            let _ = write!(
                s,
                " (p95 at or above the {} slow_ack threshold, but settles keep coming)",
                fmt_s(slow)
            );
            set(&mut v, VerdictKind::SlowButHealthy, m, s);
            let mut e = ev_on(m, "basic.ack", Dir::C2S, cs.channel);
            e.note = Some("first settle slower than slow_ack".into());
            v.evidence.push(e);
        }
        _ => v.explanation = s,
    }
    (v, None)
}

fn unacked_evidence(a: &Analyzer, idx: u32, cs: &ConsumerState) -> Vec<EvidenceRef> {
    a.unacked_of(idx)
        .into_iter()
        .map(|(tag, m)| {
            let mut e = ev_on(m, "basic.deliver", Dir::S2C, cs.channel);
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
    let window = match (cs.marks[Step::FullSince], cs.prefetch_limit()) {
        (Some(m), Some(l)) => cs
            .qos
            .per_consumer
            .clone()
            .map(|q| (m, l, "per-consumer", q)),
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
            .filter(|_| cs.counts.unacked > 0),
    };
    let Some((full_since, limit, scope_desc, qos)) = window else {
        return Window::NotFull;
    };
    let held = at_now.secs_since(full_since.ts).max(0.0);
    let own_settles = cs.latency.count();
    let own_max = cs.latency.max_us() as f64 / 1e6;
    let own_p95 = cs.p95_s();
    let own_pace_bound = (2.0 * own_max).max(PACE_FACTOR * own_p95);
    if own_settles > 0 && held <= own_pace_bound {
        return Window::WithinPace(format!(
            "its prefetch window of {limit} is full at the end, for {}, no longer than it has taken to settle before \
             (slowest {})",
            fmt_s(held),
            fmt_s(own_max)
        ));
    }
    if let Some((n, true)) = newer::eta_note(ctx, idx, cs, at_now) {
        return Window::WithinPace(format!("its prefetch window is full, and {n}; not a stall"));
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
                && p.marks[Step::LastSettle].is_some_and(|m| m.ts > full_since.ts)
        })
        .map(|(_, p)| p)
        .collect();
    let peer_pace = peers.iter().map(|p| p.p95_s()).fold(0.0, f64::max);
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
    s.push_str(&newer::stream_window_note(a, cs));
    if let Some((_, oldest)) = tags.first() {
        s.push_str(&newer::timeout_note(
            a,
            cs,
            at_now.secs_since(oldest.ts).max(0.0),
        ));
    }
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
    let room = a
        .config()
        .max_evidence
        .saturating_sub(evidence.len())
        .max(1);
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
fn redelivery_loop(
    a: &Analyzer,
    cs: &ConsumerState,
    name: &str,
) -> Option<(Mark, String, Vec<EvidenceRef>)> {
    let fp = cs.hints.loop_fp?;
    let tr = a.requeue_track(fp)?;
    let became = tr.became_loop?;
    // The earliest third delivery of any looping message to this consumer.
    let at = match cs.marks[Step::LoopSince] {
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
        .evidence
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
                r.conn = a.conn_id(e.conn);
            }
            r
        })
        .collect();
    Some((at, s, evidence))
}
