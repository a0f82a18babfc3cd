//! `published_not_delivered`: messages published to a queue whose consumers
//! are all in the capture, never delivered although a consumer of it had room
//! long after. A queue.declare-ok whose `consumer_count` equals the consumers
//! live on the queue here is the proof that no consumer outside the capture
//! takes its messages (`SoleConsumers`, kept at that moment); a consumer with
//! room is given a ready message at once, so a message neither delivered nor
//! waiting is one the broker did not keep. The causes the capture can name:
//! the publisher's connection ending without connection.close right after
//! the publishes (RabbitMQ drops what it has not routed yet), the queue's
//! TTL or length limit.

use super::super::routing::{Destination, Reach};
use super::super::state::{ConsumerState, QueueType, SoleConsumers, Step, TcpEndKind};
use super::*;

/// The rule's finding, for the consumer the queue's rule speaks through.
pub(super) struct NotDelivered {
    pub(super) at: Mark,
    pub(super) certainty: Certainty,
    pub(super) explanation: String,
    pub(super) evidence: Vec<EvidenceRef>,
}

/// The rule for consumer `cs`, which speaks for its queue when it is the
/// first consumer the queue's baseline counted.
pub(super) fn not_delivered(
    ctx: &Ctx,
    cs: &ConsumerState,
    name: &str,
    at_now: Timestamp,
) -> Option<NotDelivered> {
    let a = ctx.a;
    let queue = cs.queue.as_deref()?;
    let info = a.queue(queue)?;
    let sole = info.sole.as_deref()?;
    if sole.consumers.first().map(|&(serial, _)| serial) != Some(cs.serial) || cs.discovered {
        return None;
    }
    // What would make the counts wrong: publishes or consumers no longer
    // counted, basic.get taking messages, a stream (read by offset), and
    // what keeps messages from being delivered for a while: a full window,
    // a paused channel, a blocked publisher whose publishes the broker has
    // not read yet.
    let stream = info
        .args
        .as_ref()
        .is_some_and(|x| x.queue_type == Some(QueueType::Stream));
    if stream
        || sole.untracked != a.routing.publishes_untracked
        || sole.retired_consumers != a.retired.counts.consumers
        || a.conns.iter().any(|c| {
            c.counts.gets > 0 || c.blocked.is_some() || c.publisher.broker_zero_window.is_some()
        })
        || cs.marks[Step::FullSince].is_some()
    {
        return None;
    }
    let channel = a.conns[cs.conn as usize].channel(cs.channel);
    if channel.is_some_and(|st| st.flow_paused.is_some() || st.global_full_since.is_some()) {
        return None;
    }
    let vhost = a.vhost_of(cs.conn);
    let same_vhost = |ci: u32| match (vhost, a.vhost_of(ci)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    let (published, last) = published_since(ctx, sole, queue, &same_vhost)?;
    let delivered = delivered_since(ctx, sole, queue, &same_vhost);
    let missing = published.saturating_sub(delivered);
    if missing == 0 {
        return None;
    }
    // Room since: the later of the last publish, the baseline and the last
    // time its window had room again.
    let room_again = channel.and_then(|st| st.global_room_since);
    let since = [Some(sole.at), cs.marks[Step::RoomSince], room_again]
        .into_iter()
        .flatten()
        .fold(last.last, |m, r| if r.ts > m.ts { r } else { m });
    let held = at_now.secs_since(since.ts);
    if held < UNCERTAIN_AFTER_S {
        return None;
    }
    let mut s = format!(
        "{name}: {missing} of the {published} message(s) published to queue '{queue}' after frame {} were \
         never delivered, although it had room in its prefetch window for {} {}: the broker did not keep \
         them (the queue.declare-ok at frame {} counted {} consumer(s) on the queue, all of them in the \
         capture; {delivered} delivered since)",
        sole.at.frame,
        fmt_s(held),
        ctx.until(),
        sole.at.frame,
        sole.consumer_count,
    );
    let mut evidence = Vec::new();
    let mut e = ev(sole.at, "queue.declare-ok");
    e.dir = Some(Dir::S2C);
    e.queue = Some(queue.to_string());
    if sole.conn != cs.conn {
        e.conn = a.conn_id(sole.conn);
    }
    evidence.push(e);
    let mut e = ev(last.last, "basic.publish");
    e.dir = Some(Dir::C2S);
    e.exchange = Some(last.exchange.clone());
    e.routing_key = Some(last.routing_key.clone());
    if last.last_conn != cs.conn {
        e.conn = a.conn_id(last.last_conn);
    }
    evidence.push(e);
    s.push_str(&cause(ctx, cs, queue, last, &mut evidence));
    let certainty = if held >= ctx.t {
        Certainty::Certain
    } else {
        let _ = write!(
            s,
            "; uncertain: a delivery may still come, certain after {}",
            fmt_s(ctx.t)
        );
        Certainty::Uncertain
    };
    Some(NotDelivered {
        at: last.last,
        certainty,
        explanation: s,
        evidence,
    })
}

/// Publishes since the baseline that the default exchange's rule or the
/// bindings seen send to `queue`, less those the broker returned; and the
/// destination of the last of them.
fn published_since<'a>(
    ctx: &Ctx<'a>,
    sole: &SoleConsumers,
    queue: &str,
    same_vhost: &dyn Fn(u32) -> bool,
) -> Option<(u64, &'a Destination)> {
    let a = ctx.a;
    let mut published = 0;
    let mut last: Option<&Destination> = None;
    for (i, d) in a.routing.destinations.iter().enumerate() {
        let (count, returned) = sole.destinations.get(i).copied().unwrap_or((0, 0));
        let n = d
            .count
            .saturating_sub(count)
            .saturating_sub(d.returned.saturating_sub(returned));
        if n == 0 || !same_vhost(d.last_conn) || !matches!(a.routing.reaches(d, queue), Reach::Yes)
        {
            continue;
        }
        published += n;
        if last.is_none_or(|l| d.last.ts > l.last.ts) {
            last = Some(d);
        }
    }
    Some((published, last?))
}

/// Deliveries not flagged redelivered, since the baseline, to the consumers of
/// `queue` here: those the baseline counted, less what they had then, and
/// those registered after it.
fn delivered_since(
    ctx: &Ctx,
    sole: &SoleConsumers,
    queue: &str,
    same_vhost: &dyn Fn(u32) -> bool,
) -> u64 {
    ctx.a
        .consumers
        .iter()
        .filter(|c| c.queue.as_deref() == Some(queue) && same_vhost(c.conn))
        .map(|c| {
            let first = c.first_deliveries();
            match sole
                .consumers
                .iter()
                .find(|&&(serial, _)| serial == c.serial)
            {
                Some(&(_, then)) => first.saturating_sub(then),
                None => {
                    let registered = c.marks[Step::Consume].or(c.marks[Step::ConsumeOk]);
                    if registered.is_some_and(|m| m.ts > sole.at.ts) {
                        first
                    } else {
                        0
                    }
                }
            }
        })
        .sum()
}

/// Why the broker may not have kept them, as far as the capture shows.
fn cause(
    ctx: &Ctx,
    cs: &ConsumerState,
    queue: &str,
    last: &Destination,
    evidence: &mut Vec<EvidenceRef>,
) -> String {
    let a = ctx.a;
    // A retired publisher's end is in its own verdict, no longer here.
    let publisher = a.conns.get(last.last_conn as usize);
    if let Some((publisher, None, Some(end))) = publisher.map(|p| (p, &p.close, &p.tcp_end)) {
        let kind = match end.kind {
            TcpEndKind::Fin => ("FIN", "tcp.close"),
            TcpEndKind::Rst => ("RST", "tcp.reset"),
        };
        let mut e = ev(end.at, kind.1);
        e.dir = Some(end.dir);
        if last.last_conn != cs.conn {
            e.conn = Some(publisher.conn);
        }
        evidence.push(e);
        let mut s = format!(
            "; the last of them (frame {}) came {} before its connection {} ended with TCP {} and no \
             connection.close",
            last.last.frame,
            fmt_s(end.at.ts.secs_since(last.last.ts).max(0.0)),
            publisher.conn,
            kind.0
        );
        let abrupt = a
            .conns
            .iter()
            .filter(|c| c.counts.publishes > 0 && c.close.is_none() && c.tcp_end.is_some())
            .count();
        if abrupt > 1 {
            let _ = write!(
                s,
                ", as did {} other connection(s) that published",
                abrupt - 1
            );
        }
        s.push_str(
            ": RabbitMQ drops publishes it has not routed yet when a connection ends so (end it with \
             connection.close, or use publisher confirms, to know they were taken)",
        );
        return s;
    }
    let limits = a.queue(queue).and_then(|q| q.args.as_ref());
    let mut parts = Vec::new();
    if let Some(ttl) = limits.and_then(|x| x.message_ttl_ms) {
        parts.push(format!("x-message-ttl={ttl}"));
    }
    if let Some(max) = limits.and_then(|x| x.length_limit.max_length) {
        parts.push(format!("x-max-length={max}"));
    }
    if !parts.is_empty() {
        return format!(
            "; queue '{queue}' was declared with {}, which drop messages that wait too long or too many",
            parts.join(", ")
        );
    }
    "; unless a consumer outside the capture registered since, the broker dropped them (a publish \
     without publisher confirms is not known to be taken)"
        .to_string()
}
