//! `consumer_not_restored` (connection): a connection whose consumers ended
//! with it (the broker closed it, or its TCP connection ended without
//! connection.close: a RST, a heartbeat timeout) and a later connection of the
//! same client (same connection_name; without one on either, the same client
//! library, version and host, and it declares one of those queues) that opens
//! channels but never consumes those queues again. The reconnect is named, with the queues it left unconsumed.
//! `docs/verdicts.md` ("Consumers not restored") is its prose.

use super::super::routing::name_list;
use super::super::state::{ConsumerEnd, Step, TcpEndKind};
use super::connection::describe_client;
use super::*;

/// Replaces a `healthy` or `no_consume` verdict of connection `ci` with
/// `consumer_not_restored` when it is a reconnect that left queues unconsumed.
pub(super) fn check_restored(
    ctx: &Ctx,
    ci: u32,
    c: &ConnState,
    v: &mut (Verdict, Option<CauseSeed>),
) {
    if !matches!(v.0.verdict, VerdictKind::Healthy | VerdictKind::NoConsume) {
        return;
    }
    if let Some(nv) = not_restored(ctx, ci, c) {
        let seed = nv.frame.and_then(|frame| {
            own_seed(
                CauseKey::Event {
                    conn: c.serial,
                    frame,
                },
                &nv,
            )
        });
        *v = (nv, seed);
    }
}

/// Whether two connections are the same client: the same connection_name, or
/// with none on either, the same client library, version and host.
fn same_client(x: &ConnState, y: &ConnState) -> bool {
    let (hx, hy) = (&x.handshake, &y.handshake);
    if x.conn.client.ip() != y.conn.client.ip() || hx.client_product != hy.client_product {
        return false;
    }
    match (&hx.connection_name, &hy.connection_name) {
        (Some(a), Some(b)) => a == b,
        (None, None) => hx.client_product.is_some() && hx.client_version == hy.client_version,
        _ => false,
    }
}

/// How the earlier connection ended, when not by the client's own
/// connection.close: (the frame, in words, the evidence).
fn lost_end(e: &ConnState) -> Option<(Mark, String, EvidenceRef)> {
    match (&e.close, e.tcp_end) {
        (Some(cl), _) if cl.by == Dir::S2C => Some((
            cl.at,
            format!(
                "the broker closed it at frame {} with connection.close {}",
                cl.at.frame,
                describe_close(cl)
            ),
            close_ev(cl, "connection.close", None),
        )),
        (None, Some(end)) => {
            let (how, name) = match end.kind {
                TcpEndKind::Fin => ("closed the TCP connection (FIN)", "tcp.close"),
                TcpEndKind::Rst => ("reset the TCP connection (RST)", "tcp.reset"),
            };
            let mut e = ev(end.at, name);
            e.dir = Some(end.dir);
            Some((
                end.at,
                format!(
                    "the {} {how} at frame {} without connection.close",
                    peer(end.dir),
                    end.at.frame
                ),
                e,
            ))
        }
        _ => None,
    }
}

fn not_restored(ctx: &Ctx, ci: u32, c: &ConnState) -> Option<Verdict> {
    let a = ctx.a;
    if c.counts.channels_opened == 0 || c.handshake.client_product.is_none() {
        return None;
    }
    // The latest earlier connection of the same client that ended before this one began.
    let (old_i, old) = a
        .conns
        .iter()
        .enumerate()
        .filter(|(i, e)| *i as u32 != ci && e.ended.is_some_and(|m| m.ts <= c.first.ts))
        .filter(|(_, e)| same_client(e, c))
        .max_by_key(|(_, e)| e.ended.map(|m| m.ts))?;
    let (end_at, end_words, end_ev) = lost_end(old)?;
    // Its consumers that were registered and ended with the connection.
    let lost: Vec<_> = a
        .consumers_on(old)
        .filter(|cs| cs.marks[Step::ConsumeOk].is_some() || cs.nowait)
        .filter(|cs| {
            matches!(
                cs.end,
                Some(ConsumerEnd::TcpEnded(_))
                    | Some(ConsumerEnd::ConnectionClosed { by: Dir::S2C, .. })
            )
        })
        .collect();
    let mut queues: Vec<String> = lost.iter().filter_map(|cs| cs.queue.clone()).collect();
    queues.sort();
    queues.dedup();
    // Consumed again by this client, on this connection or a later one.
    let since = old.ended.map_or(c.first.ts, |m| m.ts);
    queues.retain(|q| {
        !a.consumers.iter().any(|cs| {
            cs.queue.as_deref() == Some(q.as_str())
                && cs.conn as usize != old_i
                && a.conns
                    .get(cs.conn as usize)
                    .is_some_and(|on| on.first.ts >= since && same_client(on, c))
        })
    });
    // Known only by library, version and host, a later connection is a reconnect
    // when it declares a queue the lost consumers read: another process of the same
    // library on the host (a publisher, a worker of other queues) does not.
    if queues.is_empty()
        || (c.handshake.connection_name.is_none()
            && !queues.iter().any(|q| c.declared_queues.contains(q)))
    {
        return None;
    }
    let last = c.last_client_method.map(|(m, _)| m).unwrap_or(c.first);
    let idle = ctx.now.secs_since(last.ts).max(0.0);
    let ended = c.ended.is_some();
    if !ended && idle < UNCERTAIN_AFTER_S {
        return None;
    }
    let tags: Vec<String> = lost
        .iter()
        .filter(|cs| cs.queue.as_ref().is_some_and(|q| queues.contains(q)))
        .map(|cs| cs.tag.clone())
        .collect();
    let same = if c.handshake.connection_name.is_some() {
        "the same connection_name"
    } else {
        "the same client library, version and host"
    };
    let mut v = base(Scope::Connection, c);
    if queues.len() == 1 {
        v.queue = queues.first().cloned();
    }
    let mut s = format!(
        "connection{} reconnected ({same}) after {} ended at frame {} with consumer(s) {}, and \
         never consumed queue(s) {} again; the earlier connection ended because {end_words}; this \
         one opened {} channel(s) from frame {}",
        describe_client(c),
        old.conn,
        end_at.frame,
        name_list(&tags),
        name_list(&queues),
        c.counts.channels_opened,
        c.first.frame,
    );
    if ended {
        s.push_str(" and ended too without consuming them");
    } else {
        let _ = write!(
            s,
            "; its last method came {} before the end of the evidence ({})",
            fmt_s(idle),
            ctx.until()
        );
    }
    let consumed: Vec<String> = a
        .consumers_on(c)
        .filter_map(|cs| cs.queue.clone())
        .collect();
    if !consumed.is_empty() {
        let _ = write!(s, "; it consumes {} instead", name_list(&consumed));
    }
    s.push_str(": nothing here reads those queues any more");
    // Since the moment the consumers were lost (a frame of the earlier connection).
    set(&mut v, VerdictKind::ConsumerNotRestored, end_at, s);
    if !ended && idle < ctx.t {
        v.certainty = Certainty::Uncertain;
        let _ = write!(
            v.explanation,
            "; uncertain: it may still consume (certain after {} without it)",
            fmt_s(ctx.t)
        );
    }
    for cs in lost.iter().filter(|cs| tags.contains(&cs.tag)).take(4) {
        if let Some(m) = cs.marks[Step::ConsumeOk].or(cs.marks[Step::Consume]) {
            let mut e = ev_on(m, "basic.consume-ok", Dir::S2C, cs.channel);
            e.conn = Some(old.conn);
            e.consumer_tag = Some(cs.tag.clone());
            e.queue = cs.queue.clone();
            e.note = Some("consumer of the earlier connection".into());
            v.evidence.push(e);
        }
    }
    let mut end_ev = end_ev;
    end_ev.conn = Some(old.conn);
    v.evidence.push(end_ev);
    let mut e = ev(c.first, c.first_name);
    e.note = Some("the reconnect".into());
    v.evidence.push(e);
    if let Some((m, k)) = c.last_client_method {
        let mut e = ev(m, k.name());
        e.dir = Some(Dir::C2S);
        e.note = Some("last method from the client".into());
        v.evidence.push(e);
    }
    Some(v)
}
