//! The verdict rules: from the analyzer's state at a moment `now` and a
//! threshold, one verdict per connection and per consumer, plus channel
//! verdicts for channels the broker closed or paused. `docs/verdicts.md`
//! is the prose version of this file; keep them in step.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use crate::event::{Dir, MethodKind, Timestamp};

use super::model::{
    Analysis, ConnectionSummary, ConsumerSummary, EvidenceRef, LatencySummary, Scope, Verdict,
    VerdictKind, SCHEMA,
};
use super::{
    secs, Analyzer, ChannelCloseRec, CloseRec, ConnState, ConsumerEnd, ConsumerState, Destination,
    Mark, TcpEndKind,
};

/// Below this, a full window or an idle consumer is not even "suspected":
/// a prefetch=1 consumer fills its window with every delivery.
const SUSPECT_AFTER_S: f64 = 1.0;
/// Most tags, queues or destinations named in one explanation.
const MAX_NAMED: usize = 10;

pub(crate) fn build(a: &Analyzer, now: Timestamp, threshold: Duration) -> Analysis {
    let t = threshold.as_secs_f64();
    let max_ev = a.cfg.max_evidence.max(1);
    let served = served_destinations(a);
    let mut verdicts = Vec::with_capacity(a.conns.len() + a.consumers.len());
    let mut conn_verdicts = Vec::with_capacity(a.conns.len());
    for c in &a.conns {
        let v = connection_verdict(c, now, t);
        conn_verdicts.push(v.clone());
        verdicts.push(v);
        channel_verdicts(a, c, now, &mut verdicts);
    }
    for (i, cs) in a.consumers.iter().enumerate() {
        let cv = &conn_verdicts[cs.conn as usize];
        verdicts.push(consumer_verdict(a, i as u32, cs, cv, now, t, &served));
    }
    for v in &mut verdicts {
        v.evidence.truncate(max_ev);
    }
    verdicts.sort_by(|x, y| {
        y.verdict
            .severity()
            .cmp(&x.verdict.severity())
            .then(x.since.cmp(&y.since))
            .then(x.conn.cmp(&y.conn))
            .then(x.scope.cmp(&y.scope))
            .then(x.channel.cmp(&y.channel))
            .then(x.consumer_tag.cmp(&y.consumer_tag))
    });
    Analysis {
        schema: SCHEMA,
        at: now,
        stall_after_s: secs(t),
        connections: a.conns.iter().map(connection_summary).collect(),
        consumers: a
            .consumers
            .iter()
            .map(|cs| consumer_summary(a, cs))
            .collect(),
        verdicts,
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
        explanation: String::new(),
        evidence: Vec::new(),
        suspected: None,
    }
}

fn set(v: &mut Verdict, kind: VerdictKind, at: Mark, explanation: String) {
    v.verdict = kind;
    v.since = Some(at.ts);
    v.frame = Some(at.frame);
    v.explanation = explanation;
}

fn ev(at: Mark, method: &'static str) -> EvidenceRef {
    EvidenceRef::new(at.frame, at.ts, method)
}

fn peer(d: Dir) -> &'static str {
    match d {
        Dir::C2S => "client",
        Dir::S2C => "broker",
    }
}

fn fmt_s(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.1} s")
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

fn describe_close(rec: &CloseRec) -> String {
    let mut s = format!("{} {}", rec.reply_code, rec.reply_text);
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

fn connection_verdict(c: &ConnState, now: Timestamp, t: f64) -> Verdict {
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
             frame {} and had not unblocked it {} later when the capture ends: its publishes are held",
            since.frame,
            fmt_s(held)
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
             at frame {}, connection.unblocked at frame {}); it is unblocked when the capture ends",
            fmt_s(until.ts.secs_since(since.ts)),
            since.frame,
            until.frame
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
    } else if let Some(idle) = no_consume(c, now) {
        let (at, what, idle_s) = idle;
        let s = format!(
            "the connection{who} opened {} channel(s) but never sent basic.consume (nor basic.publish \
             or basic.get); what it did instead: {what}; then nothing but heartbeats for {} until the \
             capture ends",
            c.channels_opened,
            fmt_s(idle_s)
        );
        if idle_s >= t {
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
        } else {
            v.suspected = Some(VerdictKind::NoConsume);
            v.explanation = format!(
                "{s}; not yet certain: a stall is certain after {} without a consume",
                fmt_s(t)
            );
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
/// opened channels and never consumed, published or got.
fn no_consume(c: &ConnState, now: Timestamp) -> Option<(Mark, String, f64)> {
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

fn name_list(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(MAX_NAMED)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMED {
        let _ = write!(s, " and {} more", names.len() - MAX_NAMED);
    }
    s
}

fn healthy_connection(c: &ConnState, who: &str) -> String {
    let mut s = format!(
        "connection{who}: {} channel(s), {} consume(s), {} publish(es), {} deliveries",
        c.channels_opened, c.consumes, c.publishes, c.deliveries
    );
    if let Some(cl) = &c.close {
        let _ = write!(
            s,
            "; closed by the client ({} {})",
            cl.reply_code, cl.reply_text
        );
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

fn channel_verdicts(a: &Analyzer, c: &ConnState, now: Timestamp, out: &mut Vec<Verdict>) {
    for rec in &c.channel_closes {
        out.push(channel_close_verdict(a, c, rec));
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
             no channel.flow active=true followed in the {} until the capture ends",
            peer(f.dir),
            f.at.frame,
            fmt_s(now.secs_since(f.at.ts))
        );
        set(&mut v, VerdictKind::ChannelFlowPaused, f.at, s);
        let mut e = ev(f.at, "channel.flow");
        e.dir = Some(f.dir);
        e.channel = Some(ch);
        e.note = Some("active=false".into());
        v.evidence.push(e);
        out.push(v);
    }
    let _ = a;
}

fn channel_close_verdict(a: &Analyzer, c: &ConnState, rec: &ChannelCloseRec) -> Verdict {
    let mut v = base(Scope::Channel, c);
    v.channel = Some(rec.channel);
    let (kind, s) = channel_close_text(a, rec);
    if rec.consumer_tags.len() == 1 {
        v.consumer_tag = rec.consumer_tags.first().cloned();
        v.queue = a
            .consumers
            .iter()
            .find(|cs| cs.channel == rec.channel && Some(&cs.tag) == v.consumer_tag.as_ref())
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

/// Publishes delivered somewhere: their destination reaches the queue of a
/// consumer that received deliveries in the capture.
fn served_destinations(a: &Analyzer) -> HashSet<usize> {
    let mut queues: Vec<&str> = a
        .consumers
        .iter()
        .filter(|c| c.deliveries > 0)
        .filter_map(|c| c.queue.as_deref())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    let mut out = HashSet::new();
    for (i, d) in a.destinations.iter().enumerate() {
        if queues.iter().any(|q| reaches(a, d, q) == Reach::Yes) {
            out.insert(i);
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Reach {
    Yes,
    /// Why not, in words.
    No(String),
}

fn reaches(a: &Analyzer, d: &Destination, queue: &str) -> Reach {
    if d.exchange.is_empty() {
        return if d.routing_key == queue {
            Reach::Yes
        } else {
            let mut why = format!(
                "the default exchange routes routing key '{}' only to the queue named '{}', not to '{queue}'",
                d.routing_key, d.routing_key
            );
            if let Some(q) = a.queues.get(&d.routing_key) {
                if let Some(m) = q.declared {
                    let _ = write!(
                        why,
                        " (queue '{}' was declared at frame {})",
                        d.routing_key, m.frame
                    );
                }
            } else {
                let _ = write!(
                    why,
                    " (no queue '{}' appears in the capture: unless it exists, the broker drops these messages)",
                    d.routing_key
                );
            }
            Reach::No(why)
        };
    }
    let xtype = a.exchange_types.get(&d.exchange).map(String::as_str);
    let binds: Vec<&String> = a
        .bindings
        .get(queue)
        .map(|v| {
            v.iter()
                .filter(|(x, _)| *x == d.exchange)
                .map(|(_, k)| k)
                .collect()
        })
        .unwrap_or_default();
    if binds.is_empty() {
        return Reach::No(format!(
            "no queue.bind of '{queue}' to exchange '{}' appears in the capture",
            d.exchange
        ));
    }
    let hit = binds.iter().any(|k| match xtype {
        Some("fanout") | Some("headers") => true,
        Some("topic") => topic_match(k, &d.routing_key),
        Some(_) => *k == &d.routing_key,
        None => *k == &d.routing_key || topic_match(k, &d.routing_key),
    });
    if hit {
        Reach::Yes
    } else {
        let keys: Vec<String> = binds.iter().map(|k| k.to_string()).collect();
        Reach::No(format!(
            "queue '{queue}' is bound to exchange '{}' only with key(s) {}, which do not match '{}'",
            d.exchange,
            name_list(&keys),
            d.routing_key
        ))
    }
}

/// AMQP topic matching: words split on '.', '*' one word, '#' zero or more.
fn topic_match(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((w, rest)) => match k.split_first() {
                Some((kw, krest)) => (*w == "*" || w == kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    go(&p, &k)
}

fn consumer_base(c: &ConnState, cs: &ConsumerState) -> Verdict {
    let mut v = base(Scope::Consumer, c);
    v.channel = Some(cs.channel);
    v.consumer_tag = Some(cs.tag.clone());
    v.queue = cs.queue.clone();
    v
}

fn consumer_name(cs: &ConsumerState) -> String {
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
    a: &Analyzer,
    idx: u32,
    cs: &ConsumerState,
    conn_v: &Verdict,
    now: Timestamp,
    t: f64,
    served: &HashSet<usize>,
) -> Verdict {
    let c = &a.conns[cs.conn as usize];
    let mut v = consumer_base(c, cs);
    let name = consumer_name(cs);
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
                    let _ = write!(
                        s,
                        ": queue '{q}' was deleted (queue.delete at frame {} on {})",
                        dm.frame, a.conns[dc as usize].conn
                    );
                    let mut e = ev(dm, "queue.delete");
                    e.queue = Some(q.clone());
                    e.dir = Some(Dir::C2S);
                    if dc != cs.conn {
                        e.conn = Some(a.conns[dc as usize].conn);
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
            return v;
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
                return v;
            }
        }
        Some(ConsumerEnd::ConnectionClosed { by: Dir::S2C, .. })
        | Some(ConsumerEnd::TcpEnded(_))
            if conn_v.verdict.is_stall() && conn_v.since.is_some() =>
        {
            v.verdict = conn_v.verdict;
            v.since = conn_v.since;
            v.frame = conn_v.frame;
            v.explanation = format!(
                "{name} ended with its connection: {}; {} deliveries were unacknowledged",
                conn_v.explanation, cs.unacked
            );
            v.evidence = consume_evidence(cs);
            v.evidence.extend(conn_v.evidence.iter().cloned());
            return v;
        }
        _ => {}
    }
    // Otherwise judge the consumer as it was at its (clean) end or now.
    let at_now = match cs.end {
        Some(e) if e.at().ts < now => e.at().ts,
        _ => now,
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

    if let Some(r) = redelivery_loop(a, cs, &name) {
        let (at, s, evidence) = r;
        set(&mut v, VerdictKind::RedeliveryLoop, at, s);
        v.evidence = evidence;
        return v;
    }

    if let (Some(m), None, false, false) = (cs.consume, cs.consume_ok, cs.nowait, cs.discovered) {
        let waited = at_now.secs_since(m.ts);
        let s = format!(
            "{name}: basic.consume at frame {} got no basic.consume-ok from the broker in {}{ended_note}",
            m.frame,
            fmt_s(waited)
        );
        if waited >= t {
            set(&mut v, VerdictKind::ConsumeNotConfirmed, m, s);
            v.evidence = consume_evidence(cs);
        } else {
            v.explanation = format!("{s}; not yet certain (needs {})", fmt_s(t));
            if waited >= SUSPECT_AFTER_S {
                v.suspected = Some(VerdictKind::ConsumeNotConfirmed);
            }
        }
        return v;
    }

    if let Some(done) = prefetch_exhausted(a, idx, cs, &name, at_now, t, &mut v) {
        if done {
            return v;
        }
    }

    if cs.deliveries == 0
        && !cs.discovered
        && (cs.consume_ok.is_some() || cs.nowait)
        && no_messages(a, cs, c, &name, at_now, t, served, &ended_note, &mut v)
    {
        return v;
    }

    if cs.discovered && c.is_incomplete() && cs.unacked > 0 {
        let since = cs.last_settle.map_or(cs.first_delivery, Some);
        if let Some(m) = since {
            let held = at_now.secs_since(m.ts);
            if held >= t {
                let s = format!(
                    "{name}: {} deliveries unacknowledged and no settle for {}; whether its prefetch \
                     window is full is unknown because its basic.qos and basic.consume precede the capture",
                    cs.unacked,
                    fmt_s(held)
                );
                set(&mut v, VerdictKind::CaptureIncomplete, m, s);
                v.evidence = unacked_evidence(a, idx, cs);
                return v;
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
    if !v.explanation.is_empty() {
        // A not-yet-certain note from a rule above.
        let _ = write!(s, "; {}", v.explanation);
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
            v.suspected = None;
            let mut e = ev(m, "basic.ack");
            e.dir = Some(Dir::C2S);
            e.channel = Some(cs.channel);
            e.note = Some("first settle slower than slow_ack".into());
            v.evidence.push(e);
        }
        _ => v.explanation = s,
    }
    v
}

fn latency(cs: &ConsumerState) -> Option<LatencySummary> {
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

/// Sets `v` when the consumer's (or its channel's) prefetch window is full.
/// Returns `Some(true)` when the verdict is certain.
#[allow(clippy::too_many_arguments)]
fn prefetch_exhausted(
    a: &Analyzer,
    idx: u32,
    cs: &ConsumerState,
    name: &str,
    at_now: Timestamp,
    t: f64,
    v: &mut Verdict,
) -> Option<bool> {
    if cs.no_ack {
        return None;
    }
    let (full_since, limit, scope_desc, qos) = match (cs.full_since, cs.prefetch_limit()) {
        (Some(m), Some(l)) => (m, l, "per-consumer", cs.qos.clone()?),
        _ => {
            let (q, full, live) = a.channel_window(cs.conn, cs.channel)?;
            let m = full?;
            if cs.unacked == 0 {
                return None;
            }
            let _ = live;
            (
                m,
                q.prefetch_count as u32,
                "channel-wide (global)",
                q.clone(),
            )
        }
    };
    let held = at_now.secs_since(full_since.ts);
    // A consumer that has already taken up to L to settle is given 2L.
    let slowest = cs.latency.max_us() as f64 / 1e6;
    let needed = t.max(2.0 * slowest);
    let tags = a.unacked_of(idx);
    let mut tag_list: Vec<String> = tags
        .iter()
        .take(MAX_NAMED * 2)
        .map(|(t, _)| t.to_string())
        .collect();
    if tags.len() > MAX_NAMED * 2 {
        tag_list.push(format!("and {} more", tags.len() - MAX_NAMED * 2));
    }
    let s = format!(
        "{name}: its {scope_desc} prefetch window of {limit} (basic.qos prefetch_count={} at frame {}) \
         is full: delivery tags {} are unacknowledged, the window filled with the delivery at frame {} \
         and no basic.ack/nack/reject came for {} until the capture ends; the broker sends this consumer \
         nothing more until it settles",
        qos.prefetch_count,
        qos.at.frame,
        tag_list.join(", "),
        full_since.frame,
        fmt_s(held)
    );
    if held >= needed {
        set(v, VerdictKind::PrefetchExhausted, full_since, s);
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
        v.evidence = evidence;
        Some(true)
    } else {
        if held >= SUSPECT_AFTER_S {
            v.suspected = Some(VerdictKind::PrefetchExhausted);
            v.explanation = format!(
                "prefetch window full for {} at the end: not yet certain, a stall is certain after {}",
                fmt_s(held),
                fmt_s(needed)
            );
        }
        Some(false)
    }
}

/// Sets `v` to `no_messages_routed_to_queue` (returns true) or leaves a
/// not-yet-certain note.
#[allow(clippy::too_many_arguments)]
fn no_messages(
    a: &Analyzer,
    cs: &ConsumerState,
    c: &ConnState,
    name: &str,
    at_now: Timestamp,
    t: f64,
    served: &HashSet<usize>,
    ended_note: &str,
    v: &mut Verdict,
) -> bool {
    let Some(queue) = cs.queue.as_deref() else {
        return false;
    };
    let registered = cs.consume_ok.or(cs.consume).unwrap_or(c.first);
    // Publishes after registration that cannot reach this queue and that no
    // other consumer in the capture received either.
    let mut misses: Vec<(Mark, u32, usize, String)> = Vec::new();
    let mut reachable_after = 0u64;
    let mut any_after = false;
    for (i, d) in a.destinations.iter().enumerate() {
        let Some(&(_, first, conn)) = d.after.iter().find(|(e, _, _)| *e >= cs.epoch) else {
            continue;
        };
        any_after = true;
        match reaches(a, d, queue) {
            Reach::Yes => reachable_after += d.count,
            Reach::No(why) if !served.contains(&i) => misses.push((first, conn, i, why)),
            Reach::No(_) => {}
        }
    }
    misses.sort_by_key(|(m, _, _, _)| m.ts);
    let mut evidence = consume_evidence(cs);
    let (at, s) = if let Some((first, _, _, _)) = misses.first() {
        let mut s = format!(
            "{name} (registered at frame {}) received no deliveries; messages published after it went elsewhere: ",
            registered.frame
        );
        let mut parts = Vec::new();
        for (m, conn, i, why) in misses.iter().take(MAX_NAMED) {
            let d = &a.destinations[*i];
            let mut p = format!(
                "{} publish(es) to exchange '{}' with routing key '{}' (first after registration at frame {}): {why}",
                d.count, d.exchange, d.routing_key, m.frame
            );
            if d.returned > 0 {
                let (_, code, text) = d.first_return.clone().unwrap_or((*m, 0, String::new()));
                let _ = write!(
                    p,
                    "; the broker returned {} of them ({code} {text})",
                    d.returned
                );
            }
            parts.push(p);
            let mut e = ev(*m, "basic.publish");
            e.dir = Some(Dir::C2S);
            e.exchange = Some(d.exchange.clone());
            e.routing_key = Some(d.routing_key.clone());
            if *conn != cs.conn {
                e.conn = Some(a.conns[*conn as usize].conn);
            }
            evidence.push(e);
        }
        s.push_str(&parts.join("; "));
        (*first, s)
    } else if any_after {
        // Publishes happened but they reach this queue or were delivered to others.
        if reachable_after > 0 {
            v.explanation = format!(
                "{reachable_after} publish(es) that can reach queue '{queue}' were seen, none delivered to this consumer"
            );
        }
        return false;
    } else {
        let before: u64 = a.destinations.iter().map(|d| d.count).sum();
        let mut s = format!(
            "{name} (registered at frame {}) received no deliveries, and no publisher on the wire sent \
             anything after it registered",
            registered.frame
        );
        if before > 0 {
            let _ = write!(s, " ({before} publish(es) seen before it, none after)");
        }
        if let Some(n) = a.queues.get(queue).and_then(|q| q.message_count) {
            let _ = write!(
                s,
                "; queue.declare-ok reported {n} message(s) ready in '{queue}'"
            );
        }
        (registered, s)
    };
    let idle = at_now.secs_since(at.ts);
    if idle >= t {
        let s = format!(
            "{s}; nothing delivered for {} until the capture ends{ended_note}",
            fmt_s(idle)
        );
        set(v, VerdictKind::NoMessagesRoutedToQueue, at, s);
        v.evidence = evidence;
        true
    } else {
        if idle >= SUSPECT_AFTER_S {
            v.suspected = Some(VerdictKind::NoMessagesRoutedToQueue);
        }
        v.explanation = format!(
            "no deliveries yet {} after the evidence: not yet certain, certain after {}",
            fmt_s(idle),
            fmt_s(t)
        );
        false
    }
}

fn redelivery_loop(
    a: &Analyzer,
    cs: &ConsumerState,
    name: &str,
) -> Option<(Mark, String, Vec<EvidenceRef>)> {
    let fp = cs.loop_fp?;
    let tr = a.requeued.get(&fp)?;
    let at = tr.became_loop?;
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
        tr.rounds, settles, at.frame
    );
    if tr.outstanding {
        s.push_str("; it is delivered and unsettled when the capture ends");
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
                r.conn = Some(a.conns[e.conn as usize].conn);
            }
            r
        })
        .collect();
    Some((at, s, evidence))
}

// ---------------------------------------------------------------- summaries

fn connection_summary(c: &ConnState) -> ConnectionSummary {
    ConnectionSummary {
        conn: c.conn,
        first_frame: c.first.frame,
        start: c.first.ts,
        end: c.ended.map(|m| m.ts),
        handshake_seen: c.saw_handshake,
        client_product: c.client_product.clone(),
        client_version: c.client_version.clone(),
        connection_name: c.connection_name.clone(),
        broker_product: c.broker_product.clone(),
        broker_version: c.broker_version.clone(),
        user: c.user.clone(),
        vhost: c.vhost.clone(),
        heartbeat: c.heartbeat,
        frame_max: c.frame_max,
        channels_opened: c.channels_opened,
        consumes: c.consumes,
        publishes: c.publishes,
        gets: c.gets,
        deliveries: c.deliveries,
        blocked: c.blocked.is_some(),
        closed_by: c.close.as_ref().map(|cl| peer(cl.by)),
        reply_code: c.close.as_ref().map(|cl| cl.reply_code),
        reply_text: c.close.as_ref().map(|cl| cl.reply_text.clone()),
        close_ok: c.close_ok.is_some(),
        tcp_end: c.tcp_end.map(|e| match e.kind {
            TcpEndKind::Fin => "fin",
            TcpEndKind::Rst => "rst",
        }),
        gaps: c.gap_count,
        errors: c.errors,
    }
}

fn consumer_summary(a: &Analyzer, cs: &ConsumerState) -> ConsumerSummary {
    let c = &a.conns[cs.conn as usize];
    ConsumerSummary {
        conn: c.conn,
        channel: cs.channel,
        consumer_tag: cs.tag.clone(),
        queue: cs.queue.clone(),
        no_ack: cs.no_ack,
        consume_frame: cs.consume.map(|m| m.frame),
        consume_ok: cs.consume_ok.is_some(),
        prefetch_count: cs.qos.as_ref().map(|q| q.prefetch_count),
        channel_prefetch_count: a
            .channel_window(cs.conn, cs.channel)
            .map(|(q, _, _)| q.prefetch_count),
        deliveries: cs.deliveries,
        redelivered: cs.redelivered,
        acks: cs.acks,
        nacks_requeue: cs.nacks_requeue,
        nacks_drop: cs.nacks_drop,
        rejects_requeue: cs.rejects_requeue,
        rejects_drop: cs.rejects_drop,
        unacked: cs.unacked,
        last_delivery: cs.last_delivery.map(|m| m.ts),
        last_settle: cs.last_settle.map(|m| m.ts),
        latency: latency(cs),
        ended_by: cs.end.map(|e| match e {
            ConsumerEnd::ClientCancel(_) => "client",
            ConsumerEnd::BrokerCancel(_) => "broker",
            ConsumerEnd::ChannelClosed { .. } => "channel_closed",
            ConsumerEnd::ConnectionClosed { .. } => "connection_closed",
            ConsumerEnd::TcpEnded(_) => "tcp",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::topic_match;

    #[test]
    fn topic_patterns() {
        assert!(topic_match("#", "a.b"));
        assert!(topic_match("a.*", "a.b"));
        assert!(!topic_match("a.*", "a.b.c"));
        assert!(topic_match("a.#", "a"));
        assert!(topic_match("*.b.#", "a.b.c.d"));
        assert!(!topic_match("a", "b"));
    }
}
