//! The text verdict block that ends `amqptrace analyze`'s terminal output.

use std::io::{self, Write};

use super::model::{Analysis, EvidenceRef, Scope, Verdict, VerdictKind};

/// Writes one line per verdict that is not `healthy` (most severe first, as
/// [`Analysis::verdicts`] is ordered), each followed by its explanation and
/// evidence indented, then one line summarising the healthy ones.
pub fn write_verdict_block(analysis: &Analysis, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "verdicts:")?;
    for v in analysis
        .verdicts
        .iter()
        .filter(|v| v.verdict != VerdictKind::Healthy)
    {
        write_verdict(v, out)?;
    }
    let healthy: Vec<&Verdict> = analysis
        .verdicts
        .iter()
        .filter(|v| v.verdict == VerdictKind::Healthy)
        .collect();
    let count = |s: Scope| healthy.iter().filter(|v| v.scope == s).count();
    let suspected = healthy.iter().filter(|v| v.suspected.is_some()).count();
    let mut line = format!(
        "  healthy: {} consumer(s), {} connection(s)",
        count(Scope::Consumer),
        count(Scope::Connection)
    );
    if suspected > 0 {
        line.push_str(&format!(
            " ({suspected} not yet certain: the capture ends less than {} s after their evidence; see --format json \"suspected\")",
            analysis.stall_after_s
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
