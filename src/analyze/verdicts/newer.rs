//! The rules of newer RabbitMQ queues and consumers, read from the arguments
//! of queue.declare and basic.consume and from delivery headers
//! (`state/queue.rs`): a single-active-consumer queue's standby consumers
//! (`standby`, not a stall), a quorum queue's delivery limit and where a
//! message goes past it, dead-lettered messages (`x-death`), a stream
//! consumer refused for want of basic.qos or holding its window, a Celery
//! worker's window full of ETA tasks, and how long a held delivery has
//! before the consumer timeout that applies to it.
//!
//! Each function returns words that the consumer and channel rules put into
//! their explanations, or the `standby` verdict; none touches the state.

use crate::event::MethodKind;

use super::super::hints;
use super::super::state::{
    ChannelCloseRec, ConsumerState, QueueArgs, QueueType, RequeueTrack, Step,
};
use super::*;

/// RabbitMQ's default `consumer_timeout` since 3.8.15: 30 minutes.
const DEFAULT_CONSUMER_TIMEOUT_MS: u64 = 1_800_000;
/// A held delivery is "close to" the consumer timeout from this share of it on.
const TIMEOUT_CLOSE_SHARE: f64 = 0.5;

/// Seconds as "12 min 5 s" from two minutes on, else as [`fmt_s`] gives them.
fn fmt_long(v: f64) -> String {
    if v < 120.0 {
        return fmt_s(v);
    }
    let total = v.round() as u64;
    match (total / 60, total % 60) {
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// The declared arguments of a consumer's queue, when the capture shows them.
pub(super) fn queue_args<'a>(a: &'a Analyzer, cs: &ConsumerState) -> Option<&'a QueueArgs> {
    a.queue(cs.queue.as_deref()?)?.args.as_ref()
}

fn declared_at(args: &QueueArgs) -> String {
    args.declared
        .map(|m| format!(" (queue.declare at frame {})", m.frame))
        .unwrap_or_default()
}

/// A consumer of a single-active-consumer queue that received nothing while
/// another consumer of the queue, registered before it, was active: RabbitMQ
/// delivers to one consumer of such a queue at a time and keeps the others
/// waiting. `standby`, not a stall; None when the rule does not apply.
pub(super) fn standby(ctx: &Ctx, idx: u32, cs: &ConsumerState, name: &str) -> Option<Verdict> {
    let a = ctx.a;
    let args = queue_args(a, cs).filter(|q| q.single_active_consumer)?;
    if cs.counts.deliveries > 0 || cs.discovered {
        return None;
    }
    let registered = cs.marks[Step::ConsumeOk].or(cs.marks[Step::Consume])?;
    let ended = cs.end.map(|e| e.at().ts);
    // The active one: registered before it and still registered when it
    // registered, or served while it waited.
    let active = a.consumers.iter().enumerate().find(|(j, p)| {
        *j as u32 != idx
            && p.queue == cs.queue
            && p.marks[Step::ConsumeOk]
                .or(p.marks[Step::Consume])
                .is_some_and(|m| m.ts <= registered.ts)
            && p.end.is_none_or(|e| e.at().ts > registered.ts)
            || *j as u32 != idx
                && p.queue == cs.queue
                && p.marks[Step::LastDelivery]
                    .is_some_and(|m| m.ts >= registered.ts && ended.is_none_or(|e| m.ts <= e))
    });
    let (_, p) = active?;
    let c = a.conn_of(cs);
    let mut v = base(Scope::Consumer, c);
    v.channel = Some(cs.channel);
    v.consumer_tag = Some(cs.tag.clone());
    v.queue = cs.queue.clone();
    let mut s = format!(
        "{name} is a standby consumer: queue '{}' was declared with x-single-active-consumer{}, so RabbitMQ \
         delivers to one consumer at a time and keeps the others waiting; the active one is consumer '{}'",
        cs.queue.as_deref().unwrap_or(""),
        declared_at(args),
        p.tag
    );
    if p.conn != cs.conn {
        if let Some(other) = a.conn_id(p.conn) {
            let _ = write!(s, " on {other}");
        }
    }
    let _ = write!(s, " ({} deliveries)", p.counts.deliveries);
    let end = cs.end.map_or(ctx.now, |e| e.at().ts);
    match p.end.map(|e| e.at()).filter(|m| m.ts < end) {
        Some(m) => {
            let _ = write!(
                s,
                "; that one ended at frame {}, and this one, active from then on, received nothing in the {} \
                 that followed",
                m.frame,
                fmt_s(end.secs_since(m.ts))
            );
        }
        None => s.push_str("; this one takes over when it ends"),
    }
    if let Some(e) = cs.end {
        let _ = write!(s, "; it ended at frame {}", e.at().frame);
    }
    set(&mut v, VerdictKind::Standby, registered, s);
    v.evidence = super::consumer::consume_evidence(cs);
    Some(v)
}

/// What a looping message's headers and its queue's arguments say about the
/// rounds left: "; x-delivery-count reached 3 at frame 40, the quorum queue's
/// x-delivery-limit of 3 (…): no round left, at its next return the broker
/// dead-letters it to …". Empty when the capture shows neither.
pub(super) fn delivery_limit_note(
    ctx: &Ctx,
    cs: &ConsumerState,
    track: Option<&RequeueTrack>,
) -> String {
    let a = ctx.a;
    let outstanding = track.is_some_and(|t| t.outstanding);
    let args = queue_args(a, cs);
    let Some((count, at, tag)) = cs.hints.delivery_count else {
        return match args {
            Some(q) if q.queue_type == Some(QueueType::Quorum) && q.delivery_limit.is_none() => {
                "; the quorum queue was declared without x-delivery-limit: RabbitMQ 3.x requeues it without \
                 limit (RabbitMQ 4.0 and later default the limit to 20)"
                    .to_string()
            }
            _ => String::new(),
        };
    };
    // The highest count may belong to another message than the one named.
    let latest = track.and_then(|t| {
        t.evidence
            .events
            .iter()
            .rev()
            .find(|e| e.method == MethodKind::BasicDeliver && e.conn == cs.conn)
            .map(|e| e.delivery_tag)
    });
    let whose = if latest == Some(tag) {
        "its returns"
    } else {
        "the returns of its messages"
    };
    let mut s = format!(
        "; the broker counts {whose}: x-delivery-count reached {count} (delivery at frame {})",
        at.frame
    );
    match args.and_then(|q| q.delivery_limit.map(|l| (q, l))) {
        Some((q, limit)) => {
            let _ = write!(
                s,
                ", against the {} queue's x-delivery-limit of {limit}{}",
                q.queue_type.unwrap_or(QueueType::Quorum).name(),
                declared_at(q)
            );
            let left = limit.saturating_sub(count);
            let fate = q.dead_letter_words();
            if left > 0 {
                let _ = write!(
                    s,
                    ": {left} round(s) left, the broker delivers it {left} more time(s) at most, then {fate}"
                );
            } else if outstanding {
                let _ = write!(
                    s,
                    ": no round left, at its next return the broker {fate}"
                );
            } else {
                let _ = write!(
                    s,
                    ": no round left, so at its last return the broker {} and did not deliver it again",
                    past(&fate)
                );
                if let Some((reader, m)) = dead_letter_reader(a, cs) {
                    let _ = write!(
                        s,
                        "; {reader} received it at frame {} (x-death reason delivery_limit)",
                        m.frame
                    );
                }
            }
        }
        None => s.push_str(
            " (a quorum queue; its x-delivery-limit is unknown: its queue.declare is not in the capture)",
        ),
    }
    s
}

/// "dead-letters it to …" as "dead-lettered it to …".
fn past(fate: &str) -> String {
    fate.replacen("dead-letters", "dead-lettered", 1)
        .replacen("drops", "dropped", 1)
}

/// The consumer that received a message dead-lettered from `cs`'s queue for
/// its delivery limit, and the delivery.
fn dead_letter_reader(a: &Analyzer, cs: &ConsumerState) -> Option<(String, Mark)> {
    let q = cs.queue.as_deref()?;
    a.consumers.iter().find_map(|p| {
        let (d, m) = p.hints.death.as_ref()?;
        (d.queue == q && d.reason == "delivery_limit").then(|| {
            (
                format!(
                    "consumer '{}' of queue '{}'",
                    p.tag,
                    p.queue.as_deref().unwrap_or("?")
                ),
                *m,
            )
        })
    })
}

/// For a consumer that received dead-lettered messages: "; its deliveries
/// were dead-lettered: x-death from queue 'q', reason expired, count 2…".
pub(super) fn dead_letter_note(a: &Analyzer, cs: &ConsumerState) -> String {
    let Some((d, m)) = &cs.hints.death else {
        return String::new();
    };
    let why = match d.reason.as_str() {
        "expired" => {
            let ttl = a
                .queue(&d.queue)
                .and_then(|i| i.args.as_ref())
                .and_then(|q| q.message_ttl_ms)
                .map(|ms| format!(": its x-message-ttl is {ms} ms"))
                .unwrap_or_default();
            format!("its TTL expired in queue '{}'{ttl}", d.queue)
        }
        "rejected" => format!(
            "it was rejected (nack/reject with requeue=false) from queue '{}'",
            d.queue
        ),
        "maxlen" => format!("queue '{}' was over its x-max-length", d.queue),
        "delivery_limit" => format!("it passed the x-delivery-limit of queue '{}'", d.queue),
        other => format!("reason '{other}' in queue '{}'", d.queue),
    };
    let mut s = format!(
        "; it received dead-lettered messages (x-death at frame {}): {why}",
        m.frame
    );
    if d.count > 1 {
        let _ = write!(s, ", {} times for the same queue and reason", d.count);
        if cs.queue.as_deref() == Some(d.queue.as_str()) {
            s.push_str(
                ": a dead-letter cycle, the message comes back to the queue it was dead-lettered from",
            );
        }
    }
    if let Some((own, _)) = cs.hints.own_death.as_ref().filter(|(o, _)| o != d) {
        let _ = write!(
            s,
            "; it also comes back to queue '{}', which dead-lettered it {} time(s) (reason {}): a dead-letter \
             cycle through its own queue",
            own.queue, own.count, own.reason
        );
    }
    s
}

/// For messages reported ready in a queue with a TTL that never came: "; queue
/// 'q' was declared with x-message-ttl 1000 ms: what was ready at its
/// declare-ok had expired by now, and the broker dead-letters …". Empty
/// without a TTL, or while the TTL has not run out since the declare-ok.
pub(super) fn ttl_note(a: &Analyzer, queue: &str, registered: Mark) -> String {
    let Some(info) = a.queue(queue) else {
        return String::new();
    };
    let (Some(args), Some(declared)) = (info.args.as_ref(), info.declared) else {
        return String::new();
    };
    let Some(ttl_ms) = args.message_ttl_ms else {
        return String::new();
    };
    let since = registered.ts.secs_since(declared.ts).max(0.0);
    let mut s = format!(
        "; queue '{queue}' was declared with x-message-ttl {ttl_ms} ms{}",
        declared_at(args)
    );
    if since * 1000.0 >= ttl_ms as f64 {
        let _ = write!(
            s,
            ": the messages ready at its declare-ok (frame {}) were older than that when this consumer \
             registered, {} later, and expired: the broker {}",
            declared.frame,
            fmt_long(since),
            args.dead_letter_words()
        );
    } else {
        let _ = write!(
            s,
            ": what is not delivered within it expires, and the broker {}",
            args.dead_letter_words()
        );
    }
    s
}

/// Words for a channel.close that a stream queue explains: RabbitMQ refuses
/// basic.consume on a stream without a prefetch_count (406).
pub(super) fn close_note(a: &Analyzer, ci: u32, rec: &ChannelCloseRec) -> String {
    if rec.close.reply_code != 406 || rec.close.failing != Some(MethodKind::BasicConsume) {
        return String::new();
    }
    let c = &a.conns[ci as usize];
    let Some((cs, q)) = a
        .consumers_on(c)
        .filter(|cs| cs.channel == rec.channel && cs.marks[Step::ConsumeOk].is_none())
        .find_map(|cs| {
            queue_args(a, cs)
                .filter(|q| q.queue_type == Some(QueueType::Stream))
                .map(|q| (cs, q))
        })
    else {
        return String::new();
    };
    let qos = if cs.qos.per_consumer.is_none() && cs.qos.global.is_none() {
        format!("no basic.qos was sent on channel {} before it", cs.channel)
    } else {
        "its basic.qos set no prefetch_count".to_string()
    };
    let at = q
        .declared
        .map(|m| format!(", queue.declare at frame {}", m.frame))
        .unwrap_or_default();
    format!(
        "; queue '{}' is a stream (x-queue-type=stream{at}): RabbitMQ delivers from a stream only to a consumer \
         with a prefetch_count (basic.qos) that acknowledges, and {qos}",
        cs.queue.as_deref().unwrap_or("")
    )
}

/// A note for a full window on a stream: acks there only give credit back.
pub(super) fn stream_window_note(a: &Analyzer, cs: &ConsumerState) -> String {
    let Some(q) = queue_args(a, cs).filter(|q| q.queue_type == Some(QueueType::Stream)) else {
        return String::new();
    };
    let offset = cs
        .args
        .stream_offset
        .as_deref()
        .map(|o| format!(", read from x-stream-offset={o}"))
        .unwrap_or_else(|| ", read from the next offset (no x-stream-offset)".to_string());
    let mut s = format!(
        "; queue '{}' is a stream{}{offset}: a stream keeps its messages, and an ack there only gives the \
         consumer credit for more, so this window stays full until it acks",
        cs.queue.as_deref().unwrap_or(""),
        declared_at(q)
    );
    if let Some(limit) = cs.prefetch_limit().filter(|l| cs.counts.unacked > *l) {
        let _ = write!(
            s,
            "; it holds {}, more than its prefetch_count of {limit}: RabbitMQ sends a stream's messages a \
             chunk at a time",
            cs.counts.unacked
        );
    }
    s
}

/// A consumer holding Celery ETA tasks (sent with countdown or eta): the
/// worker keeps them unacknowledged on purpose until they are due, and raises
/// its channel's prefetch for each. Words for its explanation, with whether
/// every unacknowledged delivery is such a task not yet due; None when it
/// holds none.
pub(super) fn eta_note(
    ctx: &Ctx,
    idx: u32,
    cs: &ConsumerState,
    at_now: Timestamp,
) -> Option<(String, bool)> {
    let h = &cs.hints;
    let unacked = ctx.a.unacked_of(idx);
    let held: Vec<&(u64, Mark)> = unacked
        .iter()
        .filter(|(t, _)| h.eta_tags.contains(t))
        .collect();
    let (oldest, latest) = (held.first()?.1, h.latest_eta?);
    let all_pending = held.len() == unacked.len() && latest > at_now.as_nanos();
    let who = hints::client_words(ctx.a, cs.conn);
    let when = if latest > at_now.as_nanos() {
        format!(
            "the latest in {} (at {})",
            fmt_long((latest - at_now.as_nanos()) as f64 / 1e9),
            Timestamp(latest).to_rfc3339()
        )
    } else {
        format!(
            "the latest at {}, already past",
            Timestamp(latest).to_rfc3339()
        )
    };
    let mut s = format!(
        "{} of its unacknowledged deliveries are Celery ETA tasks ('{}', sent with countdown or eta): {who} holds \
         them unacknowledged until they are due, {when}, and raises its prefetch by one for each",
        held.len(),
        h.celery_task.as_deref().unwrap_or("?"),
    );
    if let Some((timeout_ms, source)) = consumer_timeout(ctx.a, cs) {
        let due = (latest - oldest.ts.as_nanos()) as f64 / 1e9;
        let limit = timeout_ms as f64 / 1000.0;
        if due >= limit {
            let _ = write!(
                s,
                "; but they are due later than the consumer timeout ({timeout_ms} ms, {source}) after their \
                 delivery: {} after the delivery at frame {}, before they run, the broker closes channel {} with \
                 406 PRECONDITION_FAILED and requeues them, unless its consumer_timeout is raised",
                fmt_long(limit),
                oldest.frame,
                cs.channel
            );
        }
    }
    Some((s, all_pending))
}

/// The consumer timeout that applies to `cs`, and where it comes from: the
/// queue's `x-consumer-timeout` (RabbitMQ 3.12 and later), the value a
/// broker's ack-timeout close in the capture reported, or RabbitMQ's default.
pub(super) fn consumer_timeout(a: &Analyzer, cs: &ConsumerState) -> Option<(u64, String)> {
    let c = a.conn_of(cs);
    let version = c.handshake.broker_version.as_deref();
    let product = c.handshake.broker_product.as_deref()?;
    if product != "RabbitMQ" {
        return None;
    }
    let (major, minor, patch) = version.and_then(parse_version)?;
    if let Some(ms) = queue_args(a, cs).and_then(|q| q.consumer_timeout_ms) {
        if (major, minor) >= (3, 12) {
            return Some((ms, "the queue's x-consumer-timeout".to_string()));
        }
    }
    if let Some(ms) = a.conns.iter().find_map(|c| {
        c.channel_closes
            .iter()
            .find_map(|r| timeout_used_ms(&r.close.reply_text))
    }) {
        return Some((
            ms,
            "the value the broker reported in an ack timeout in this capture".into(),
        ));
    }
    ((major, minor, patch) >= (3, 8, 15)).then(|| {
        (
            DEFAULT_CONSUMER_TIMEOUT_MS,
            format!(
                "RabbitMQ {}'s default, unless its configuration changes it",
                version.unwrap_or("")
            ),
        )
    })
}

/// A delivery held for `held` seconds close to the consumer timeout: "; if the
/// broker keeps …, it closes channel 1 in 12 min". Empty when not close.
pub(super) fn timeout_note(a: &Analyzer, cs: &ConsumerState, held: f64) -> String {
    let Some((ms, source)) = consumer_timeout(a, cs) else {
        return String::new();
    };
    let limit = ms as f64 / 1000.0;
    if held < TIMEOUT_CLOSE_SHARE * limit {
        return String::new();
    }
    let mut s = format!(
        "; the oldest delivery has been held {} of the consumer timeout of {} ({source})",
        fmt_long(held),
        fmt_long(limit)
    );
    if held < limit {
        let _ = write!(
            s,
            ": the broker closes channel {} with 406 PRECONDITION_FAILED in {} at the earliest (it checks about \
             once a minute)",
            cs.channel,
            fmt_long(limit - held)
        );
    } else {
        s.push_str(
            ": past it, the broker closes the channel at its next check (about once a minute)",
        );
    }
    if queue_args(a, cs).is_some_and(|q| q.consumer_timeout_ms.is_some())
        && !source.contains("x-consumer-timeout")
    {
        s.push_str(
            "; the queue's x-consumer-timeout needs RabbitMQ 3.12 or later, this broker ignores it",
        );
    }
    s
}

/// `Timeout value used: 5000 ms` in RabbitMQ's ack-timeout close text.
fn timeout_used_ms(text: &str) -> Option<u64> {
    let rest = text.split("Timeout value used: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((
        it.next()?.ok()?,
        it.next()?.ok()?,
        it.next().and_then(Result::ok).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_timeout_rabbitmq_reports() {
        let t = "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: \
                 5000 ms. This timeout value can be configured, see consumers doc guide to learn more";
        assert_eq!(super::timeout_used_ms(t), Some(5000));
        assert_eq!(super::parse_version("3.10.8"), Some((3, 10, 8)));
    }
}
