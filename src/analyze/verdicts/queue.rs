//! The queue rule for a consumer that received nothing: publishes that the
//! default exchange's rule, or the exchanges and bindings seen, sent away from
//! its queue make it `no_messages_routed_to_queue`; a bystander or a consumer
//! nothing was published for is `idle`.

use super::super::routing::{bystander, Destination, Reach, MAX_NAMED};
use super::super::state::{ConsumerState, Step};
use super::consumer::consume_evidence;
use super::*;

pub(super) struct Starving {
    pub(super) kind: VerdictKind,
    pub(super) certainty: Certainty,
    pub(super) at: Mark,
    pub(super) explanation: String,
    pub(super) evidence: Vec<EvidenceRef>,
    /// Destinations (indices) of the publishes that went elsewhere.
    pub(super) misses: Vec<u32>,
}

/// The rule for a consumer with no delivery: publishes seen after it
/// registered (and before it ended) that the default exchange's rule, or the
/// exchanges and bindings seen, send away from its queue, and that no other
/// consumer here received, make a work consumer `no_messages_routed_to_queue`;
/// a bystander (control, reply, broadcast, delay queue) and a consumer for
/// which nothing was published are `idle`.
pub(super) fn starving(
    ctx: &Ctx,
    cs: &ConsumerState,
    name: &str,
    at_now: Timestamp,
    ended_note: &str,
) -> Option<Starving> {
    let a = ctx.a;
    let c = a.conn_of(cs);
    let queue = cs.queue.as_deref()?;
    let registered = cs.marks[Step::ConsumeOk]
        .or(cs.marks[Step::Consume])
        .unwrap_or(c.first);
    let vhost = c.handshake.vhost.as_deref();
    let mut misses: Vec<(Mark, u32, usize, String)> = Vec::new();
    let mut reachable_after = 0u64;
    let mut any_after = false;
    for (i, d) in a.routing.destinations.iter().enumerate() {
        // The first publish of this destination after the registration, if
        // it came before the consumer ended.
        let Some(&(_, first, conn)) = d.after.iter().find(|(e, _, _)| *e >= cs.epoch) else {
            continue;
        };
        if first.ts > at_now {
            continue;
        }
        let pub_vhost = a.vhost_of(conn);
        if let (Some(x), Some(y)) = (vhost, pub_vhost) {
            if x != y {
                continue;
            }
        }
        any_after = true;
        match a.routing.reaches(d, queue) {
            Reach::Yes => reachable_after += d.count,
            Reach::No(why) if !ctx.served.contains(&i) => misses.push((first, conn, i, why)),
            Reach::No(_) => {}
        }
    }
    misses.sort_by_key(|(m, _, _, _)| m.ts);
    let bystander = bystander(a, cs);
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
            let d = &a.routing.destinations[*i];
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
                e.conn = a.conn_id(*conn);
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
        if a.queue(queue).and_then(|q| q.message_count) == Some(0) {
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
    s.push_str(&super::newer::ttl_note(a, queue, registered));
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
fn where_they_went(ctx: &Ctx, d: &Destination) -> String {
    let a = ctx.a;
    let queues = a.routing.queues_reached(d);
    if queues.is_empty() {
        return "; no binding seen in the capture routes them to any queue (bindings made before it are \
                unknown; otherwise the broker drops them, or returns them when mandatory)"
            .to_string();
    }
    let mut parts = Vec::new();
    for q in queues.iter().take(MAX_NAMED) {
        let mut p = format!("'{q}'");
        match a.queue(q) {
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
