//! The one text renderer of verdicts: the verdict block that ends
//! `amqptrace analyze`'s terminal output (and a live source's), the live
//! verdict line `proxy` and `capture` print as a verdict becomes certain, and
//! `run`'s summary.txt (the block, then counts per connection and consumer).
//! Every rendering names a verdict's subject the same way ([`subject`]).

use std::io::{self, Write};

use super::model::{Analysis, Certainty, EvidenceRef, Scope, Verdict, VerdictKind};

/// Writes the headline causes (one sentence each, most severe first), then
/// one line per verdict that is neither `healthy` nor `idle` (most severe
/// first, as [`Analysis::verdicts`] is ordered), each followed by its
/// explanation and evidence indented, then one line counting the healthy and
/// idle ones.
pub fn write_verdict_block(analysis: &Analysis, out: &mut dyn Write) -> io::Result<()> {
    if !analysis.causes.is_empty() {
        writeln!(out, "causes:")?;
        for c in &analysis.causes {
            let mark = match c.certainty {
                Certainty::Certain => "",
                Certainty::Uncertain => " [uncertain]",
            };
            writeln!(out, "  - {}: {}{mark}", c.verdict.name(), c.text)?;
        }
    }
    writeln!(out, "verdicts:")?;
    for v in analysis.verdicts.iter().filter(|v| {
        !matches!(
            v.verdict,
            VerdictKind::Healthy | VerdictKind::Idle | VerdictKind::Standby
        )
    }) {
        write_verdict(v, out)?;
    }
    let count = |k: VerdictKind, s: Scope| {
        analysis
            .verdicts
            .iter()
            .filter(|v| v.verdict == k && v.scope == s)
            .count()
    };
    let mut line = format!(
        "  healthy: {} consumer(s), {} connection(s)",
        count(VerdictKind::Healthy, Scope::Consumer),
        count(VerdictKind::Healthy, Scope::Connection)
    );
    let idle = count(VerdictKind::Idle, Scope::Consumer);
    if idle > 0 {
        line.push_str(&format!(
            "; idle: {idle} consumer(s) with nothing published for them (see --format json)"
        ));
    }
    let standby = count(VerdictKind::Standby, Scope::Consumer);
    if standby > 0 {
        line.push_str(&format!(
            "; standby: {standby} consumer(s) of single-active-consumer queues"
        ));
    }
    if !analysis.retired.is_empty() {
        line.push_str(&format!(
            "; {} ended connection(s) retired from memory, {} of their verdicts not listed",
            analysis.retired.connections, analysis.retired.verdicts_not_listed
        ));
    }
    writeln!(out, "{line}")
}

/// One line per reason an analysis has a stall: its headline causes, or its
/// stall verdicts where it has no cause for them.
pub fn stall_reasons(analysis: &Analysis) -> Vec<String> {
    let causes: Vec<String> = analysis
        .causes
        .iter()
        .map(|c| format!("{}: {}", c.verdict.name(), c.text))
        .collect();
    if !causes.is_empty() {
        return causes;
    }
    analysis
        .verdicts
        .iter()
        .filter(|v| v.verdict.is_stall())
        .map(|v| format!("{}: {}", v.verdict.name(), v.explanation))
        .collect()
}

/// A live verdict line: the seconds since the source started, the verdict
/// and its subject, then its explanation indented below.
pub fn write_live_verdict(v: &Verdict, elapsed_secs: f64, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{elapsed_secs:>11.6}  VERDICT {}: {}\n             {}",
        v.verdict.name(),
        subject(v),
        v.explanation
    )
}

/// What a verdict is about, e.g. `consumer 'ctag' queue 'q' on CONN ch 1`.
fn subject(v: &Verdict) -> String {
    let mut s = match v.scope {
        Scope::Consumer => format!(
            "consumer {}",
            v.consumer_tag
                .as_deref()
                .map_or("?".to_string(), |t| format!("'{t}'"))
        ),
        Scope::Channel => format!("channel {}", v.channel.unwrap_or(0)),
        Scope::Connection => "connection".to_string(),
    };
    if let Some(q) = &v.queue {
        s.push_str(&format!(" queue '{q}'"));
    }
    s.push_str(&format!(" on {}", v.conn));
    if v.scope == Scope::Consumer {
        if let Some(ch) = v.channel {
            s.push_str(&format!(" ch {ch}"));
        }
    }
    s
}

fn write_verdict(v: &Verdict, out: &mut dyn Write) -> io::Result<()> {
    let mut head = format!("  {:<28} {}", v.verdict.name(), subject(v));
    if v.certainty == Certainty::Uncertain {
        head.push_str(" [uncertain]");
    }
    if let Some(ts) = v.since {
        head.push_str(&format!(" since {ts}"));
    }
    if let Some(f) = v.frame {
        head.push_str(&format!(" (frame {f})"));
    }
    writeln!(out, "{head}")?;
    writeln!(out, "      {}", v.explanation)?;
    if !v.evidence.is_empty() {
        let refs: Vec<String> = v.evidence.iter().map(evidence_short).collect();
        writeln!(out, "      evidence: {}", refs.join("; "))?;
    }
    Ok(())
}

fn evidence_short(e: &EvidenceRef) -> String {
    let mut s = format!("#{} {}", e.frame, e.method);
    let mut kv = |k: &str, v: String| s.push_str(&format!(" {k}={v}"));
    if let Some(c) = &e.conn {
        kv("conn", c.to_string());
    }
    if let Some(v) = e.channel {
        kv("ch", v.to_string());
    }
    if let Some(v) = &e.queue {
        kv("queue", v.clone());
    }
    if let Some(v) = &e.consumer_tag {
        kv("consumer_tag", v.clone());
    }
    if let Some(v) = &e.exchange {
        kv("exchange", format!("'{v}'"));
    }
    if let Some(v) = &e.routing_key {
        kv("routing_key", v.clone());
    }
    if let Some(v) = e.delivery_tag {
        kv("delivery_tag", v.to_string());
    }
    if let Some(v) = e.prefetch_count {
        kv("prefetch_count", v.to_string());
    }
    if let Some(v) = e.global {
        kv("global", v.to_string());
    }
    if let Some(v) = e.reply_code {
        kv("reply_code", v.to_string());
    }
    if let Some(v) = &e.reason {
        kv("reason", format!("\"{v}\""));
    }
    if let Some(v) = &e.message_id {
        kv("message_id", v.clone());
    }
    if let Some(v) = &e.note {
        s.push_str(&format!(" ({v})"));
    }
    s
}

/// summary.txt of `run`: the verdict block, then one line per connection and
/// per consumer with its counts, then the events traced (`events`) and the
/// trace messages the tracer lost (`dropped`).
pub fn write_summary(
    analysis: &Analysis,
    events: u64,
    dropped: u64,
    w: &mut dyn Write,
) -> io::Result<()> {
    write_verdict_block(analysis, w)?;
    writeln!(w)?;
    writeln!(w, "connections: {}", analysis.connections.len())?;
    for c in &analysis.connections {
        let mut who = Vec::new();
        if let Some(n) = &c.handshake.connection_name {
            who.push(format!("\"{n}\""));
        }
        if let Some(p) = &c.handshake.client_product {
            who.push(format!(
                "{p}{}",
                c.handshake
                    .client_version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(v) = &c.handshake.vhost {
            who.push(format!("vhost '{v}'"));
        }
        write!(
            w,
            "  {}  {}\n      channels {}, consumes {}, publishes {}, gets {}, deliveries {}",
            c.conn,
            who.join(", "),
            c.counts.channels_opened,
            c.counts.consumes,
            c.counts.publishes,
            c.counts.gets,
            c.counts.deliveries
        )?;
        if c.gaps > 0 || c.errors > 0 {
            write!(w, ", gaps {}, decode errors {}", c.gaps, c.errors)?;
        }
        match (c.closed_by, c.tcp_end) {
            (Some(by), _) => write!(
                w,
                "; closed by {by}{}",
                c.reply_code
                    .map(
                        |code| match c.reply_text.as_deref().filter(|t| !t.is_empty()) {
                            Some(text) => format!(" ({code} {text})"),
                            None => format!(" ({code})"),
                        }
                    )
                    .unwrap_or_default()
            )?,
            (None, Some(end)) => write!(w, "; TCP {end} without connection.close")?,
            (None, None) => write!(w, "; open at the end")?,
        }
        writeln!(w)?;
    }
    writeln!(w, "consumers: {}", analysis.consumers.len())?;
    for c in &analysis.consumers {
        write!(
            w,
            "  '{}' queue '{}' on {} ch {}\n      prefetch {}, deliveries {} (redelivered {}), acks {}, nacks {}, rejects {}, unacked at the end {}",
            c.consumer_tag,
            c.queue.as_deref().unwrap_or("?"),
            c.conn,
            c.channel,
            c.prefetch_count
                .or(c.channel_prefetch_count)
                .map_or("none".to_string(), |p| p.to_string()),
            c.counts.deliveries,
            c.counts.redelivered,
            c.counts.acks,
            c.counts.nacks_requeue + c.counts.nacks_drop,
            c.counts.rejects_requeue + c.counts.rejects_drop,
            c.counts.unacked
        )?;
        if let Some(l) = &c.latency {
            write!(
                w,
                ", deliver→settle p50 {:.3} s p95 {:.3} s max {:.3} s",
                l.p50_s, l.p95_s, l.max_s
            )?;
        }
        if let Some(by) = c.ended_by {
            write!(w, "; ended by {by}")?;
        }
        writeln!(w)?;
    }
    write!(w, "events traced: {events}")?;
    if dropped > 0 {
        write!(
            w,
            " ({dropped} trace messages dropped: the tracer could not keep up)"
        )?;
    }
    writeln!(w)
}
