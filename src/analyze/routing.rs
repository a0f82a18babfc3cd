//! Where a publish can go: the exchanges, bindings and publish destinations
//! seen in the capture, the default exchange's rule and the exchange types'
//! (direct, topic, fanout, headers), which destinations some consumer in the
//! capture was served from, and which consumers idle by design (control,
//! reply, broadcast and delay queues) and so are never blamed for a publish
//! that went elsewhere.
//!
//! Owns [`Routing`]: the handlers of exchange.declare, queue.bind,
//! queue.unbind, basic.publish and basic.return write it; the verdict rules
//! ask it where a destination's publishes can go.

use std::fmt::Write as _;

use rustc_hash::{FxHashMap, FxHashSet};

use super::state::ConsumerState;
use super::state::Mark;
use super::Analyzer;

/// Publish destinations, and exchanges and queues whose bindings, are tracked at most.
pub(crate) const MAX_DESTINATIONS: usize = 10_000;
/// First-publish-after-registration marks kept per destination.
const MAX_MARKS_PER_DESTINATION: usize = 256;
/// Bindings kept per queue (and queue.declares pending per channel).
pub(crate) const MAX_BINDINGS_PER_QUEUE: usize = 64;

/// Where publishes went: one exchange and routing key.
#[derive(Debug)]
pub(crate) struct Destination {
    pub exchange: String,
    pub routing_key: String,
    pub count: u64,
    pub last: Mark,
    /// The connection of the last publish (renumbered when connections retire).
    pub last_conn: u32,
    /// The first publish after each consumer registration epoch, as (epoch, mark, conn):
    /// the first publish after a consumer's consume-ok is the first entry whose
    /// epoch is at least the consumer's.
    pub after: Vec<(u64, Mark, u32)>,
    pub returned: u64,
    pub first_return: Option<(Mark, u16, String)>,
    /// Publishes with `mandatory` set (the broker returns them when unroutable).
    pub mandatory: u64,
    /// The channel of the first publish.
    pub first_channel: Option<u16>,
}

/// Exchanges, bindings and the destinations publishes went to.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    /// exchange -> type, from exchange.declare.
    pub exchange_types: FxHashMap<String, String>,
    /// queue -> (exchange, binding key) from queue.bind.
    pub bindings: FxHashMap<String, Vec<(String, String)>>,
    /// exchange -> routing key -> index into `destinations`.
    dest_index: FxHashMap<String, FxHashMap<String, u32>>,
    pub destinations: Vec<Destination>,
    /// Publishes not tracked once [`MAX_DESTINATIONS`] destinations are.
    pub publishes_untracked: u64,
}

impl Routing {
    /// exchange.declare: the type decides how its bindings match.
    pub(crate) fn declare_exchange(&mut self, exchange: &str, kind: &str) {
        if self.exchange_types.len() < MAX_DESTINATIONS {
            self.exchange_types
                .insert(exchange.to_string(), kind.to_string());
        }
    }

    /// queue.bind of `queue` to `exchange` with `key`.
    pub(crate) fn bind(&mut self, queue: &str, exchange: &str, key: &str) {
        if self.bindings.len() < MAX_DESTINATIONS || self.bindings.contains_key(queue) {
            let v = self.bindings.entry(queue.to_string()).or_default();
            if v.len() < MAX_BINDINGS_PER_QUEUE && !v.iter().any(|(e, k)| e == exchange && k == key)
            {
                v.push((exchange.to_string(), key.to_string()));
            }
        }
    }

    /// queue.unbind of `queue` from `exchange` with `key`.
    pub(crate) fn unbind(&mut self, queue: &str, exchange: &str, key: &str) {
        if let Some(v) = self.bindings.get_mut(queue) {
            v.retain(|(e, k)| !(e == exchange && k == key));
        }
    }

    pub(crate) fn destination_mut(&mut self, x: &str, rk: &str) -> Option<&mut Destination> {
        let i = *self.dest_index.get(x)?.get(rk)?;
        self.destinations.get_mut(i as usize)
    }

    /// The index of the destination (exchange, routing key), made when new; None
    /// once [`MAX_DESTINATIONS`] are tracked.
    pub(crate) fn destination_index(&mut self, x: &str, rk: &str, mark: Mark) -> Option<u32> {
        if let Some(&i) = self.dest_index.get(x).and_then(|m| m.get(rk)) {
            return Some(i);
        }
        if self.destinations.len() >= MAX_DESTINATIONS {
            return None;
        }
        let i = self.destinations.len() as u32;
        self.destinations.push(Destination {
            exchange: x.to_string(),
            routing_key: rk.to_string(),
            count: 0,
            last: mark,
            last_conn: 0,
            after: Vec::new(),
            returned: 0,
            first_return: None,
            mandatory: 0,
            first_channel: None,
        });
        self.dest_index
            .entry(x.to_string())
            .or_default()
            .insert(rk.to_string(), i);
        Some(i)
    }

    /// A publish to destination `idx` from connection `ci`, after registration epoch `epoch`.
    pub(crate) fn record_publish(&mut self, ci: u32, mark: Mark, idx: u32, epoch: u64) {
        let d = &mut self.destinations[idx as usize];
        d.count += 1;
        d.last = mark;
        d.last_conn = ci;
        let newer = d.after.last().is_none_or(|(e, _, _)| *e < epoch);
        if newer && d.after.len() < MAX_MARKS_PER_DESTINATION {
            d.after.push((epoch, mark, ci));
        }
    }

    /// Destinations whose publishes reached a consumer in the capture: they can
    /// reach the queue of a consumer that received deliveries.
    pub(crate) fn served_destinations(&self, consumers: &[ConsumerState]) -> FxHashSet<usize> {
        let mut queues: Vec<&str> = consumers
            .iter()
            .filter(|c| c.counts.deliveries > 0)
            .filter_map(|c| c.queue.as_deref())
            .collect();
        queues.sort_unstable();
        queues.dedup();
        let mut out = FxHashSet::default();
        for (i, d) in self.destinations.iter().enumerate() {
            if queues.iter().any(|q| self.reaches(d, q) == Reach::Yes) {
                out.insert(i);
            }
        }
        out
    }
}

/// Whether a destination (exchange, routing key) can reach a queue, by what
/// the capture shows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    Yes,
    /// Why not, in words.
    No(String),
}

/// Most names listed in one sentence.
pub(crate) const MAX_NAMED: usize = 10;

pub(crate) fn name_list(names: &[String]) -> String {
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

impl Routing {
    /// Whether a destination (exchange, routing key) can reach a queue, by what
    /// the capture shows.
    pub(crate) fn reaches(&self, d: &Destination, queue: &str) -> Reach {
        if d.exchange.is_empty() {
            return if d.routing_key == queue {
                Reach::Yes
            } else {
                Reach::No(format!(
                    "the default exchange routes routing key '{}' only to the queue named '{}', not to '{queue}'",
                    d.routing_key, d.routing_key
                ))
            };
        }
        let binds: Vec<&String> = self
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
        if binds
            .iter()
            .any(|k| self.binding_matches(&d.exchange, k, &d.routing_key))
        {
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

    /// Whether a binding key of `exchange` matches a routing key, by the
    /// exchange's type when its exchange.declare was seen (either rule otherwise).
    fn binding_matches(&self, exchange: &str, binding_key: &str, routing_key: &str) -> bool {
        match self.exchange_types.get(exchange).map(String::as_str) {
            Some("fanout") | Some("headers") => true,
            Some("topic") => topic_match(binding_key, routing_key),
            Some(_) => binding_key == routing_key,
            None => binding_key == routing_key || topic_match(binding_key, routing_key),
        }
    }

    /// The queues a destination's publishes went to, by the capture's rules: on the
    /// default exchange the queue named by the routing key; on a named exchange
    /// every queue with a matching binding seen. Empty when no seen binding matches.
    pub(crate) fn queues_reached(&self, d: &Destination) -> Vec<String> {
        if d.exchange.is_empty() {
            return vec![d.routing_key.clone()];
        }
        let mut out: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, binds)| {
                binds
                    .iter()
                    .any(|(x, k)| *x == d.exchange && self.binding_matches(x, k, &d.routing_key))
            })
            .map(|(q, _)| q.clone())
            .collect();
        out.sort();
        out
    }
}

/// AMQP topic matching: words split on '.', `*` is one word, `#` zero or more.
pub(crate) fn topic_match(pattern: &str, key: &str) -> bool {
    topic_match_counted(pattern, key).0
}

/// [`topic_match`] and the number of steps it took: at most
/// (pattern words + 1) × (key words + 1), whatever the `#`s (a dynamic
/// programme over word positions instead of backtracking, which is
/// exponential in the number of `#` and the key comes from the capture).
pub(crate) fn topic_match_counted(pattern: &str, key: &str) -> (bool, u64) {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    let n = k.len();
    // next[j]: p[i+1..] matches k[j..]; cur[j]: p[i..] matches k[j..].
    let mut next = vec![false; n + 1];
    next[n] = true; // the empty pattern matches the empty rest of the key
    let mut cur = vec![false; n + 1];
    let mut steps = 0u64;
    for w in p.iter().rev() {
        for j in (0..=n).rev() {
            steps += 1;
            cur[j] = match *w {
                "#" => next[j] || (j < n && cur[j + 1]),
                "*" => j < n && next[j + 1],
                w => j < n && k[j] == w && next[j + 1],
            };
        }
        std::mem::swap(&mut cur, &mut next);
    }
    (next[0], steps)
}

/// Why a publish to exchange `x` (of type `kind`) may reach no queue by
/// design, or None for an exchange that carries work: a broadcast (fanout)
/// reaches whoever listens, Celery's remote control and its replies
/// (`celery.pidbox`, `reply.celery.pidbox`) and its events (`celeryev`) are
/// published whether anyone listens or not.
pub(crate) fn lossy_by_design(x: &str, kind: &str) -> Option<&'static str> {
    if x.ends_with(".pidbox") {
        return Some("Celery's remote-control exchange");
    }
    if x == "celeryev" {
        return Some("Celery's event exchange");
    }
    if kind == "fanout" {
        return Some("a broadcast");
    }
    None
}

/// Why a consumer idles by design and is never blamed for publishes that went
/// elsewhere, or None for a work consumer. Judged from the queue's name, the
/// way it was declared and the exchanges it is bound to.
pub(crate) fn bystander(a: &Analyzer, cs: &ConsumerState) -> Option<String> {
    let q = cs.queue.as_deref()?;
    if q.ends_with(".pidbox") {
        return Some(format!(
            "'{q}' is Celery's remote-control (pidbox) queue, which only receives broadcast commands"
        ));
    }
    if q.starts_with("celeryev.") {
        return Some(format!(
            "'{q}' is a Celery event queue, which only receives worker events"
        ));
    }
    if q.starts_with("amq.rabbitmq.reply-to") {
        return Some(format!("'{q}' is RabbitMQ's direct reply-to pseudo-queue"));
    }
    if q.starts_with("amq.gen-") {
        return Some(format!(
            "'{q}' is a server-named queue (a reply or temporary queue)"
        ));
    }
    if let Some(why) = super::hints::dramatiq_queue(a, q) {
        return Some(why);
    }
    if let Some(binds) = a.routing.bindings.get(q) {
        let fanout: Vec<&String> = binds
            .iter()
            .map(|(x, _)| x)
            .filter(|x| {
                a.routing.exchange_types.get(x.as_str()).map(String::as_str) == Some("fanout")
            })
            .collect();
        if !binds.is_empty() && fanout.len() == binds.len() {
            return Some(format!(
                "'{q}' is bound only to fanout exchange(s) {}: it receives broadcasts, not work",
                name_list(&fanout.iter().map(|x| x.to_string()).collect::<Vec<_>>())
            ));
        }
    }
    let info = a.queue(q)?;
    if info.exclusive && info.auto_delete && cs.no_ack {
        return Some(format!(
            "'{q}' is an exclusive auto-delete queue consumed with no_ack (a reply or control queue)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{topic_match, topic_match_counted};

    #[test]
    fn topic_patterns() {
        assert!(topic_match("#", "a.b"));
        assert!(topic_match("#", ""));
        assert!(topic_match("a.*", "a.b"));
        assert!(!topic_match("a.*", "a.b.c"));
        assert!(topic_match("a.#", "a"));
        assert!(topic_match("*.b.#", "a.b.c.d"));
        assert!(topic_match("#.c", "a.b.c"));
        assert!(topic_match("a.#.d", "a.d"));
        assert!(!topic_match("a.#.d", "a.b.c"));
        assert!(!topic_match("a", "b"));
        assert!(topic_match("", ""));
    }

    /// A capture decides both sides of the match: 40 `#` against a 1 000-word
    /// key must take pattern × key steps, not an exponential search.
    #[test]
    fn many_hashes_against_a_long_key_take_pattern_times_key_steps() {
        let pattern = vec!["#"; 40].join(".") + ".nomatch";
        let key = vec!["w"; 1000].join(".");
        let (m, steps) = topic_match_counted(&pattern, &key);
        assert!(!m);
        assert!(steps <= 41 * 1001, "{steps} steps");
        let (m, steps) = topic_match_counted(&vec!["#"; 40].join("."), &key);
        assert!(m);
        assert!(steps <= 40 * 1001, "{steps} steps");
    }
}
