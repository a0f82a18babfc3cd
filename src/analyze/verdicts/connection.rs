//! The connection verdicts: closed by the broker, heartbeat timeout, lost,
//! blocked, a capture that misses part of it, a connection that never consumes,
//! or healthy.

use crate::event::{GapReason, MethodKind};

use super::super::routing::name_list;
use super::super::state::{dir_index, TcpEnd, TcpEndKind};
use super::*;

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
        .filter(|g| g.reason != GapReason::MidConnection)
        .collect();
    if !lost.is_empty() || c.gap_count > c.gaps.len() as u64 {
        let n = c.gap_count
            - c.gaps
                .iter()
                .filter(|g| g.reason == GapReason::MidConnection)
                .count() as u64;
        let truncated = lost.iter().any(|g| g.reason == GapReason::Truncated);
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
    if let Some(known) = super::cut::known_despite_cut(c) {
        parts.push(known);
    }
    Some((at.unwrap_or(c.first), parts.join("; "), evidence))
}

pub(super) fn connection_verdict(
    ctx: &Ctx,
    ci: u32,
    c: &ConnState,
) -> (Verdict, Option<CauseSeed>) {
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
    if let Some(p) = &c.trail.other_protocol {
        return super::errors::other_protocol(c, p, v);
    }
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
        let (why, proof) = c
            .trail
            .close_facts
            .as_deref()
            .map(super::errors::explain)
            .unwrap_or_default();
        s.push_str(&why);
        if c.close_ok.is_none() {
            s.push_str("; no connection.close-ok from the client followed");
        }
        set(&mut v, kind, cl.at, s);
        v.evidence.extend(proof);
        v.evidence.push(close_ev(cl, "connection.close", None));
        if let Some(end) = c.tcp_end {
            v.evidence.push(tcp_end_ev(end));
        }
    } else if let (None, Some(end), false) = (
        c.close.as_ref(),
        c.tcp_end.filter(|e| !is_quiet_client_exit(e)),
        // With bytes missing, the connection.close may be among them: say so
        // (capture_incomplete below) rather than guess connection_lost.
        c.gaps.iter().any(|g| g.reason != GapReason::MidConnection),
    ) {
        let how = match end.kind {
            TcpEndKind::Fin => "closed the TCP connection (FIN)",
            TcpEndKind::Rst => "reset the TCP connection (RST)",
        };
        let hb = c.handshake.heartbeat.filter(|h| *h > 0);
        // The peer silent the longest before the end.
        let silence = |d: Dir| {
            let last = c.last_frame_from(d);
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
                if let Some((m, name)) = c.last_frame[dir_index(other)] {
                    let mut e = ev(m, name.name());
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
                    None if c.handshake.heartbeat == Some(0) => {
                        s.push_str(" (heartbeats disabled)")
                    }
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
            c.counts.channels_opened,
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
fn is_quiet_client_exit(e: &TcpEnd) -> bool {
    e.kind == TcpEndKind::Fin && e.dir == Dir::C2S && e.live_consumers == 0 && e.unacked == 0
}

fn suffix_who(who: &str) -> String {
    if who.is_empty() {
        String::new()
    } else {
        format!(" (connection{who})")
    }
}

pub(super) fn describe_client(c: &ConnState) -> String {
    let mut s = String::new();
    if let Some(n) = &c.handshake.connection_name {
        let _ = write!(s, " \"{n}\"");
    }
    match (&c.handshake.client_product, &c.handshake.client_version) {
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

pub(super) fn tcp_end_ev(end: TcpEnd) -> EvidenceRef {
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
    if c.counts.channels_opened == 0
        || c.counts.consumes > 0
        || !c.consumers.is_empty()
        || c.counts.publishes > 0
        || c.counts.gets > 0
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
        c.counts.channels_opened, c.counts.consumes, c.counts.publishes, c.counts.deliveries
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
