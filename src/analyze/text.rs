//! The text verdict block that ends `amqptrace analyze`'s terminal output.

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
    for v in analysis
        .verdicts
        .iter()
        .filter(|v| !matches!(v.verdict, VerdictKind::Healthy | VerdictKind::Idle))
    {
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
    if !analysis.retired.is_empty() {
        line.push_str(&format!(
            "; {} ended connection(s) retired from memory, {} of their verdicts not listed",
            analysis.retired.connections, analysis.retired.verdicts_not_listed
        ));
    }
    writeln!(out, "{line}")
}

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
