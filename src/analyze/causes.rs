//! The headline: one sentence per distinct cause above the verdict list, so
//! that several consumers starved by the same misrouted publishes, or a
//! connection and the consumers that ended with it, read as one finding.

use std::fmt::Write as _;

use super::model::{Cause, Certainty, Verdict};
use super::routing::{name_list, MAX_NAMED};
use super::verdicts::Ctx;

/// What makes two verdicts one cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CauseKey {
    /// A frame on a connection (by its serial) that decided them all: a broker
    /// close, a TCP end, a channel.flow, a connection.blocked.
    Event { conn: u64, frame: u64 },
    /// The same publishes (destination indices) sent away from every starving consumer.
    Misroute(Vec<u32>),
    /// One consumer's own condition.
    Consumer(u64),
}

/// A verdict's contribution to its cause.
#[derive(Debug, Clone)]
pub(crate) struct CauseSeed {
    pub key: CauseKey,
    /// The verdict's explanation (its first clause becomes the sentence).
    pub text: String,
}

/// Groups the stall verdicts (already most severe first) by cause.
pub(crate) fn build(ctx: &Ctx, verdicts: &[Verdict], seeds: &[Option<CauseSeed>]) -> Vec<Cause> {
    let mut groups: Vec<(CauseKey, Vec<usize>)> = Vec::new();
    for (i, seed) in seeds.iter().enumerate() {
        let Some(seed) = seed else { continue };
        if !verdicts[i].verdict.is_stall() {
            continue;
        }
        match groups.iter_mut().find(|(k, _)| *k == seed.key) {
            Some((_, members)) => members.push(i),
            None => groups.push((seed.key.clone(), vec![i])),
        }
    }
    groups
        .into_iter()
        .map(|(key, members)| {
            let first = members[0];
            let certainty = if members
                .iter()
                .any(|&i| verdicts[i].certainty == Certainty::Certain)
            {
                Certainty::Certain
            } else {
                Certainty::Uncertain
            };
            let text = match &key {
                CauseKey::Misroute(dests) => misroute_text(ctx, verdicts, &members, dests),
                _ => first_clause(seeds[first].as_ref().map_or("", |s| s.text.as_str())),
            };
            Cause {
                verdict: verdicts[first].verdict,
                certainty,
                text,
                verdicts: members,
            }
        })
        .collect()
}

/// The explanation up to its first "; " outside parentheses, as one sentence.
fn first_clause(s: &str) -> String {
    let mut depth = 0i32;
    let mut end = s.len();
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ';' if depth <= 0 && s[i..].starts_with("; ") => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let mut out = s[..end].to_string();
    if let Some(c) = out.get(..1) {
        let upper = c.to_uppercase();
        out.replace_range(..1, &upper);
    }
    out
}

/// "10 messages published with routing key 'other' went to queue 'other',
/// which no consumer here reads; the consumers here (Pika Python Client
/// Library 1.3.2) read 'default' and 'default.DQ'."
fn misroute_text(ctx: &Ctx, verdicts: &[Verdict], members: &[usize], dests: &[u32]) -> String {
    let a = ctx.a;
    let mut parts = Vec::new();
    for &di in dests.iter().take(MAX_NAMED) {
        let Some(d) = a.routing.destinations.get(di as usize) else {
            continue;
        };
        let mut p = format!("{} message(s) published ", d.count);
        if d.exchange.is_empty() {
            let _ = write!(p, "with routing key '{}'", d.routing_key);
        } else {
            let _ = write!(
                p,
                "to exchange '{}' with routing key '{}'",
                d.exchange, d.routing_key
            );
        }
        let queues = a.routing.queues_reached(d);
        if queues.is_empty() {
            p.push_str(" matched no binding seen in the capture");
        } else {
            let _ = write!(p, " went to queue {}", name_list(&queues));
            if !queues.iter().any(|q| ctx.consumed(q)) {
                p.push_str(", which no consumer here reads");
            }
        }
        parts.push(p);
    }
    // What the starved consumers read instead, with their delay queues, by client.
    let mut by_client: Vec<(String, Vec<String>)> = Vec::new();
    for &i in members {
        let v = &verdicts[i];
        let Some(q) = v.queue.clone() else { continue };
        let client = a
            .consumers
            .iter()
            .find(|c| Some(&c.tag) == v.consumer_tag.as_ref() && a.conn_of(c).conn == v.conn)
            .and_then(|c| {
                let conn = a.conn_of(c);
                let product = conn.handshake.client_product.as_deref()?;
                Some(match conn.handshake.client_version.as_deref() {
                    Some(v) => format!("{product} {v}"),
                    None => product.to_string(),
                })
            })
            .unwrap_or_default();
        let delay = format!("{q}.DQ");
        let mut qs = vec![q];
        if ctx.consumed(&delay) {
            qs.push(delay);
        }
        match by_client.iter_mut().find(|(c, _)| *c == client) {
            Some((_, list)) => {
                for q in qs {
                    if !list.contains(&q) {
                        list.push(q);
                    }
                }
            }
            None => by_client.push((client, qs)),
        }
    }
    let mut s = parts.join("; ");
    for (client, mut qs) in by_client {
        qs.sort();
        let who = if client.is_empty() {
            "the consumers here".to_string()
        } else {
            format!("the consumers here ({client})")
        };
        let _ = write!(s, "; {who} read {}", and_list(&qs));
    }
    s
}

/// `'a'`, `'a' and 'b'`, `'a', 'b' and 'c'`.
fn and_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} and {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::first_clause;

    #[test]
    fn first_clause_keeps_parentheses_whole() {
        assert_eq!(
            first_clause("the client sent nothing (heartbeat 2 s; dead after 2), then RST; more"),
            "The client sent nothing (heartbeat 2 s; dead after 2), then RST"
        );
        assert_eq!(first_clause("one"), "One");
    }
}
