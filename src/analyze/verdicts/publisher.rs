//! The publisher verdicts, per channel: mandatory publishes the broker
//! returned (`publish_returned`), publishes the exchanges and bindings seen
//! route to no queue (`publish_unroutable`), and in confirm mode publishes the
//! broker nacked (`publish_nacked`) or has not confirmed for long compared
//! with the other confirms of the channel (`publish_unconfirmed`).
//! `docs/verdicts.md` ("Publishers") is their prose.

use super::super::routing::{lossy_by_design, name_list, Reach};
use super::super::state::{ConfirmChannel, PublishRec, ReturnsOnChannel};
use super::*;

/// The publisher verdicts of connection `ci` (returns and confirms).
pub(super) fn publisher_verdicts(
    ctx: &Ctx,
    c: &ConnState,
    out: &mut Vec<(Verdict, Option<CauseSeed>)>,
) {
    let p = &c.publisher;
    for r in &p.returns {
        push_with_seed(out, c, returned_verdict(c, r));
    }
    let mut open: Vec<&ConfirmChannel> = p.confirms.values().collect();
    open.sort_by_key(|cc| cc.channel);
    for cc in p.closed_confirms.iter().chain(open.iter().copied()) {
        if cc.nacked > 0 {
            push_with_seed(out, c, nacked_verdict(c, cc));
        }
    }
    for cc in open {
        if let Some(v) = unconfirmed_verdict(ctx, c, cc) {
            push_with_seed(out, c, v);
        }
    }
}

fn push_with_seed(out: &mut Vec<(Verdict, Option<CauseSeed>)>, c: &ConnState, v: Verdict) {
    let seed = v.frame.and_then(|frame| {
        own_seed(
            CauseKey::Event {
                conn: c.serial,
                frame,
            },
            &v,
        )
    });
    out.push((v, seed));
}

/// "the publish at frame 12 to exchange 'x' with routing key 'k' (message_id 'm')".
fn describe_publish(p: &PublishRec) -> String {
    let mut s = format!(
        "the publish at frame {} to exchange '{}' with routing key '{}'",
        p.at.frame,
        p.exchange(),
        p.routing_key()
    );
    if let Some(id) = &p.message_id {
        let _ = write!(s, " (message_id '{id}')");
    }
    s
}

fn publish_ev(p: &PublishRec, channel: u16, note: &str) -> EvidenceRef {
    let mut e = ev_on(p.at, "basic.publish", Dir::C2S, channel);
    e.exchange = Some(p.exchange().to_string());
    e.routing_key = Some(p.routing_key().to_string());
    e.message_id = p.message_id.as_deref().map(str::to_string);
    e.note = Some(note.to_string());
    e
}

/// What a basic.return reply code says.
fn return_meaning(code: u16) -> &'static str {
    match code {
        312 => "NO_ROUTE: no queue is bound to the exchange with a key that matches",
        313 => "NO_CONSUMERS: no consumer could take it at once (an `immediate` publish)",
        _ => "the broker could not route it",
    }
}

fn returned_verdict(c: &ConnState, r: &ReturnsOnChannel) -> Verdict {
    let mut v = base(Scope::Channel, c);
    v.channel = Some(r.channel);
    let f = &r.first;
    let codes = r
        .codes
        .iter()
        .map(|(code, n)| format!("{code} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "the broker returned {} mandatory publish(es) on channel {} with basic.return ({codes}): \
         the first, at frame {}, {} {}",
        r.count,
        r.channel,
        f.at.frame,
        f.reply_code,
        f.reply_text.trim()
    );
    match &f.publish {
        Some(p) => {
            let _ = write!(s, ", returned {}", describe_publish(p));
        }
        None => {
            let _ = write!(
                s,
                ", returned a publish to exchange '{}' with routing key '{}' (its basic.publish is \
                 not in the capture)",
                f.exchange.as_deref().unwrap_or(""),
                f.routing_key.as_deref().unwrap_or("")
            );
            if let Some(id) = &f.message_id {
                let _ = write!(s, " (message_id '{id}')");
            }
        }
    }
    let _ = write!(
        s,
        ": {}; the returned messages reached no queue",
        return_meaning(f.reply_code)
    );
    set(&mut v, VerdictKind::PublishReturned, f.at, s);
    if let Some(p) = &f.publish {
        v.evidence
            .push(publish_ev(p, r.channel, "mandatory publish returned"));
    }
    let mut e = ev_on(f.at, "basic.return", Dir::S2C, r.channel);
    e.reply_code = Some(f.reply_code);
    e.reply_text = Some(f.reply_text.clone());
    e.exchange = f.exchange.as_deref().map(str::to_string);
    e.routing_key = f.routing_key.as_deref().map(str::to_string);
    e.message_id = f.message_id.as_deref().map(str::to_string);
    v.evidence.push(e);
    v
}

fn nacked_verdict(c: &ConnState, cc: &ConfirmChannel) -> Verdict {
    let mut v = base(Scope::Channel, c);
    v.channel = Some(cc.channel);
    let Some((at, first)) = &cc.first_nack else {
        return v;
    };
    let mut s = format!(
        "the broker nacked {} publish(es) on channel {} (in confirm mode{}) with basic.nack, the \
         first at frame {}",
        cc.nacked,
        cc.channel,
        cc.selected
            .map(|m| format!(", confirm.select at frame {}", m.frame))
            .unwrap_or_default(),
        at.frame
    );
    if let Some(p) = first {
        let _ = write!(s, " for {}", describe_publish(p));
    }
    let _ = write!(
        s,
        ": the broker did not take them, they are in no queue (RabbitMQ nacks a publish a queue \
         refuses, as x-overflow=reject-publish does at x-max-length, or one it could not store); \
         {} other publish(es) on the channel were acked",
        cc.acked
    );
    set(&mut v, VerdictKind::PublishNacked, *at, s);
    if let Some(p) = first {
        v.evidence
            .push(publish_ev(p, cc.channel, "first publish nacked"));
    }
    v.evidence
        .push(ev_on(*at, "basic.nack", Dir::S2C, cc.channel));
    v
}

/// Publishes of a confirm channel with no basic.ack/nack: judged against the
/// channel's own confirm pace, and against the time threshold where it shows none.
fn unconfirmed_verdict(ctx: &Ctx, c: &ConnState, cc: &ConfirmChannel) -> Option<Verdict> {
    if cc.closed.is_some() || c.ended.is_some() || c.close.is_some() || c.tcp_end.is_some() {
        // The end of the channel or connection is the verdict there.
        return None;
    }
    let oldest = cc.oldest_pending()?;
    let waiting = cc.pending_live + cc.untracked;
    let held = ctx.now.secs_since(oldest.at.ts);
    if held < UNCERTAIN_AFTER_S {
        return None;
    }
    let n = cc.latency.count();
    let p95 = cc.latency.quantile_us(0.95).unwrap_or(0) as f64 / 1e6;
    let max = cc.latency.max_us() as f64 / 1e6;
    let pace_bound = PACE_FLOOR_S.max(PACE_FACTOR * p95).max(2.0 * max);
    let by_pace = n >= OWN_PACE_MIN_SETTLES && held >= pace_bound;
    let certain = held >= ctx.t || by_pace;
    let mut v = base(Scope::Channel, c);
    v.channel = Some(cc.channel);
    let mut s = format!(
        "{waiting} publish(es) on channel {} (in confirm mode{}) have had no basic.ack or \
         basic.nack from the broker for {} {}: the oldest is {}",
        cc.channel,
        cc.selected
            .map(|m| format!(", confirm.select at frame {}", m.frame))
            .unwrap_or_default(),
        fmt_s(held),
        ctx.until(),
        describe_publish(oldest)
    );
    if n > 0 {
        let _ = write!(
            s,
            "; the broker confirmed {n} publish(es) on this channel before, p95 {} (max {})",
            fmt_short(p95),
            fmt_short(max)
        );
    } else {
        s.push_str("; the broker confirmed none on this channel");
    }
    if let Some(zero) = c.publisher.broker_zero_window {
        let _ = write!(
            s,
            "; the broker advertised a zero window at frame {}: it stopped reading",
            zero.frame
        );
    }
    match &c.blocked {
        Some((since, reason)) => {
            let _ = write!(
                s,
                "; the connection is blocked (connection.blocked \"{reason}\" at frame {})",
                since.frame
            );
        }
        None => s.push_str(
            "; no connection.blocked came: a broker under a memory or disk alarm stops reading \
             a publishing connection, and says so only to clients that announce the \
             connection.blocked capability",
        ),
    }
    set(&mut v, VerdictKind::PublishUnconfirmed, oldest.at, s);
    if !certain {
        v.certainty = Certainty::Uncertain;
        let _ = write!(
            v.explanation,
            "; uncertain, confirms may still come (certain once unconfirmed for {}{})",
            fmt_s(ctx.t),
            if n >= OWN_PACE_MIN_SETTLES {
                format!(", or {}", fmt_s(pace_bound))
            } else {
                String::new()
            }
        );
    }
    if let Some(m) = cc.selected {
        v.evidence
            .push(ev_on(m, "confirm.select", Dir::C2S, cc.channel));
    }
    v.evidence.push(publish_ev(
        oldest,
        cc.channel,
        "oldest publish not confirmed",
    ));
    Some(v)
}

/// A connection the broker stopped reading without connection.blocked: the
/// broker's TCP window towards the client stays zero (its receive buffer is
/// full), which RabbitMQ does to a publishing connection under a memory or disk
/// alarm when the client did not announce the `connection.blocked` capability.
/// Replaces a `healthy` verdict with `connection_blocked`: uncertain from 1 s
/// of zero window, certain at the time threshold; a window that opened again
/// counts when it was zero that long.
pub(super) fn silent_block(ctx: &Ctx, c: &ConnState, v: &mut (Verdict, Option<CauseSeed>)) {
    if v.0.verdict != VerdictKind::Healthy || c.blocked.is_some() || c.last_unblock.is_some() {
        return;
    }
    let p = &c.publisher;
    let (since, until) = match (p.broker_zero_window, p.broker_window_reopened) {
        (Some(since), _) => (since, None),
        (None, Some((since, until))) => (since, Some(until)),
        (None, None) => return,
    };
    let end = until.map_or(ctx.now, |m| m.ts);
    let held = end.secs_since(since.ts);
    if held < UNCERTAIN_AFTER_S || (until.is_some() && held < ctx.t) {
        return;
    }
    let who = super::connection::describe_client(c);
    let mut s = format!(
        "the broker stopped reading the connection{who}: it advertised a zero window (its TCP \
         receive buffer is full) at frame {}",
        since.frame
    );
    match until {
        Some(u) => {
            let _ = write!(s, ", open again at frame {} ({})", u.frame, fmt_s(held));
        }
        None => {
            let _ = write!(s, ", for {} {}", fmt_s(held), ctx.until());
        }
    }
    let _ = write!(
        s,
        ", and no connection.blocked came (RabbitMQ under a memory or disk alarm stops reading a \
         publishing connection, and says so only to clients that announce the \
         connection.blocked capability): {} publish(es) on it; what the client sends meanwhile \
         waits in the socket buffers",
        c.counts.publishes
    );
    let mut nv = base(Scope::Connection, c);
    set(&mut nv, VerdictKind::ConnectionBlocked, since, s);
    if until.is_none() && held < ctx.t {
        nv.certainty = Certainty::Uncertain;
        let _ = write!(
            nv.explanation,
            "; uncertain: a busy broker may reopen its window (certain once it stays zero for {})",
            fmt_s(ctx.t)
        );
    }
    let mut e = ev(since, "tcp.zero-window");
    e.dir = Some(Dir::S2C);
    e.note = Some("the broker's receive window is zero".into());
    nv.evidence.push(e);
    if let Some(u) = until {
        let mut e = ev(u, "tcp.window-open");
        e.dir = Some(Dir::S2C);
        nv.evidence.push(e);
    }
    let seed = own_seed(
        CauseKey::Event {
            conn: c.serial,
            frame: since.frame,
        },
        &nv,
    );
    *v = (nv, seed);
}

/// [`fmt_s`], with "under 1 ms" for what rounds to 0 ms.
fn fmt_short(v: f64) -> String {
    if v < 0.0005 {
        "under 1 ms".to_string()
    } else {
        fmt_s(v)
    }
}

/// `publish_unroutable`: destinations (exchange, routing key) published to
/// without `mandatory` that the exchanges and bindings seen route to no queue,
/// and that no consumer here was served from. On the default exchange only a
/// queue deleted in the capture (and not declared again) is known to be
/// absent; on a named exchange the capture must show its exchange.declare and
/// some queue.bind to it, and the verdict stays uncertain: bindings made
/// before the capture are unknown.
pub(super) fn unroutable_verdicts(
    ctx: &Ctx,
    wanted: &dyn Fn(u32) -> bool,
    out: &mut Vec<(Verdict, Option<CauseSeed>)>,
) {
    let a = ctx.a;
    for (i, d) in a.routing.destinations.iter().enumerate() {
        if d.mandatory > 0 || d.returned > 0 || ctx.served.contains(&i) {
            // A mandatory publish the broker did not return was routed; one it
            // returned is publish_returned.
            continue;
        }
        let Some(&(_, first, ci)) = d.after.first() else {
            continue;
        };
        let Some(c) = a.conns.get(ci as usize) else {
            continue;
        };
        if !wanted(ci) {
            continue;
        }
        let Some((at, why, certain)) = unroutable(ctx, d, first) else {
            continue;
        };
        let mut v = base(Scope::Channel, c);
        v.channel = d.first_channel;
        let s = format!(
            "{} publish(es) without mandatory to exchange '{}' with routing key '{}', the first \
             at frame {} (the last at frame {}): {why}",
            d.count, d.exchange, d.routing_key, first.frame, d.last.frame
        );
        set(&mut v, VerdictKind::PublishUnroutable, at, s);
        if !certain {
            v.certainty = Certainty::Uncertain;
        }
        let mut e = ev(at, "basic.publish");
        e.dir = Some(Dir::C2S);
        e.channel = d.first_channel;
        e.exchange = Some(d.exchange.clone());
        e.routing_key = Some(d.routing_key.clone());
        v.evidence.push(e);
        push_with_seed(out, c, v);
    }
}

/// `(since, why, certain)` when the capture routes destination `d` to no queue.
fn unroutable(
    ctx: &Ctx,
    d: &super::super::routing::Destination,
    first: Mark,
) -> Option<(Mark, String, bool)> {
    let a = ctx.a;
    if d.exchange.is_empty() {
        let q = &d.routing_key;
        let info = a.queue(q)?;
        let (deleted, _) = info.deleted?;
        if d.last.ts <= deleted.ts {
            return None;
        }
        let after = d
            .after
            .iter()
            .map(|(_, m, _)| *m)
            .find(|m| m.ts > deleted.ts)
            .unwrap_or(d.last);
        let why = format!(
            "the default exchange routes routing key '{q}' only to the queue named '{q}', which was \
             deleted at frame {} and not declared again; publishes after that, the first seen at \
             frame {}, reach no queue and are dropped",
            deleted.frame, after.frame
        );
        return Some((after, why, true));
    }
    let kind = a.routing.exchange_types.get(&d.exchange)?;
    if lossy_by_design(&d.exchange, kind).is_some() {
        return None;
    }
    let mut bound: Vec<&String> = a
        .routing
        .bindings
        .iter()
        .filter(|(_, b)| b.iter().any(|(x, _)| *x == d.exchange))
        .map(|(q, _)| q)
        .collect();
    if bound.is_empty() || !a.routing.queues_reached(d).is_empty() {
        return None;
    }
    bound.sort();
    let reasons: Vec<String> = bound
        .iter()
        .take(3)
        .filter_map(|q| match a.routing.reaches(d, q) {
            Reach::No(why) => Some(why),
            Reach::Yes => None,
        })
        .collect();
    let names: Vec<String> = bound.iter().map(|q| q.to_string()).collect();
    let why = format!(
        "exchange '{}' ({kind}, declared in the capture) has bindings seen here only to {}, and \
         none matches: {}; the broker drops a publish that matches no binding unless it is \
         mandatory; bindings made before the capture are unknown, so this is uncertain (a \
         mandatory publish would have the broker say, with basic.return)",
        d.exchange,
        name_list(&names),
        reasons.join("; ")
    );
    Some((first, why, false))
}
