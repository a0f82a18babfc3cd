//! What the arguments of queue.declare and basic.consume, and the headers of
//! the messages delivered, say about the queues and consumers of newer
//! RabbitMQ: the queue type (classic, quorum, stream), single active consumer,
//! the delivery limit, TTL, dead-lettering, length limit and consumer timeout
//! a queue was declared with; a consumer's stream offset and priority; the
//! `x-delivery-count`, `x-death` and Celery task headers of its deliveries.
//!
//! Only typed facts are kept, each bounded: never a header's value as such
//! (a header may carry anything, credentials included), only the numbers and
//! the queue and exchange names RabbitMQ itself writes into them, and
//! Celery's task name and ETA.

use serde_json::Value;

use super::Mark;
use crate::event::Timestamp;

/// Most delivery tags of Celery ETA tasks kept per consumer.
pub(crate) const MAX_ETA_TAGS: usize = 4096;
/// Longest queue, exchange or task name kept from a header.
const MAX_NAME: usize = 255;

/// `x-queue-type`, as RabbitMQ spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueType {
    Classic,
    Quorum,
    Stream,
}

impl QueueType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// The arguments a queue was declared with (queue.declare, answered by declare-ok).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct QueueArgs {
    /// The queue.declare that carried them.
    pub declared: Option<Mark>,
    /// None: no `x-queue-type` (a classic queue unless a policy says otherwise).
    pub queue_type: Option<QueueType>,
    pub single_active_consumer: bool,
    // What ends a message's stay: a quorum queue's delivery limit, a length
    // limit; and where the broker then sends it.
    pub delivery_limit: Option<u64>,
    pub length_limit: LengthLimit,
    pub dead_letter: DeadLetter,
    // The clocks: a message's time to live and, for the consumer,
    // `x-consumer-timeout` (RabbitMQ 3.12 and later; 3.10 ignores it).
    pub message_ttl_ms: Option<u64>,
    pub consumer_timeout_ms: Option<u64>,
}

/// Where a queue sends the messages it drops (`x-dead-letter-*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DeadLetter {
    /// Some("") is the default exchange.
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
}

/// How long a queue may grow and what it does past that (`x-max-length`, `x-overflow`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LengthLimit {
    pub max_length: Option<u64>,
    pub overflow: Option<String>,
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn short(v: &Value) -> Option<String> {
    v.as_str()
        .map(|s| s.chars().take(MAX_NAME).collect::<String>())
}

impl QueueArgs {
    /// The arguments of a queue.declare, when any of those amqptrace reads is set.
    pub(crate) fn of(arguments: Option<&Value>, at: Mark) -> Option<QueueArgs> {
        let t = arguments?.as_object()?;
        let mut q = QueueArgs {
            declared: Some(at),
            ..QueueArgs::default()
        };
        for (k, v) in t {
            match k.as_str() {
                "x-queue-type" => {
                    q.queue_type = match v.as_str() {
                        Some("quorum") => Some(QueueType::Quorum),
                        Some("stream") => Some(QueueType::Stream),
                        Some("classic") => Some(QueueType::Classic),
                        _ => None,
                    }
                }
                "x-single-active-consumer" => q.single_active_consumer = v.as_bool() == Some(true),
                "x-delivery-limit" => q.delivery_limit = number(v),
                "x-message-ttl" => q.message_ttl_ms = number(v),
                "x-dead-letter-exchange" => q.dead_letter.exchange = short(v),
                "x-dead-letter-routing-key" => q.dead_letter.routing_key = short(v),
                "x-max-length" => q.length_limit.max_length = number(v),
                "x-overflow" => q.length_limit.overflow = short(v),
                "x-consumer-timeout" => q.consumer_timeout_ms = number(v),
                _ => {}
            }
        }
        let none = QueueArgs {
            declared: Some(at),
            ..QueueArgs::default()
        };
        (q != none).then_some(q)
    }

    /// Where the broker sends a message this queue drops, in words:
    /// "dead-letters it to exchange '' with routing key 'dlq'" or "drops it".
    pub(crate) fn dead_letter_words(&self) -> String {
        match &self.dead_letter.exchange {
            Some(x) => {
                let x = if x.is_empty() {
                    "the default exchange ''".to_string()
                } else {
                    format!("exchange '{x}'")
                };
                match &self.dead_letter.routing_key {
                    Some(rk) => format!(
                        "dead-letters it to {x} with routing key '{rk}' (x-dead-letter-exchange, \
                         x-dead-letter-routing-key)"
                    ),
                    None => format!(
                        "dead-letters it to {x} with its own routing key (x-dead-letter-exchange)"
                    ),
                }
            }
            None => "drops it (no x-dead-letter-exchange was declared)".to_string(),
        }
    }
}

/// The arguments of a basic.consume that amqptrace reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConsumeArgs {
    /// `x-stream-offset` as given: `first`, `last`, `next`, an offset, a timestamp.
    pub stream_offset: Option<String>,
    pub priority: Option<i64>,
}

impl ConsumeArgs {
    pub(crate) fn of(arguments: Option<&Value>) -> ConsumeArgs {
        let Some(t) = arguments.and_then(Value::as_object) else {
            return ConsumeArgs::default();
        };
        ConsumeArgs {
            stream_offset: t.get("x-stream-offset").map(|v| match v {
                Value::String(s) => s.chars().take(MAX_NAME).collect(),
                other => other.to_string(),
            }),
            priority: t.get("x-priority").and_then(Value::as_i64),
        }
    }
}

/// One `x-death` entry RabbitMQ wrote: why and from where the message was
/// dead-lettered, and how many times for that (queue, reason).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Death {
    pub queue: String,
    pub reason: String,
    pub count: u64,
}

/// What a consumer's deliveries say, kept per consumer: from their headers,
/// the highest `x-delivery-count` seen, the `x-death` entry with the highest
/// count and the delivery tags that carry a Celery ETA; from their
/// redeliveries, the message looping the most.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeliveryHints {
    /// The highest x-delivery-count (quorum queues), with the delivery that carried it.
    pub delivery_count: Option<(u64, Mark, u64)>,
    /// The x-death entry with the highest count, and its delivery.
    pub death: Option<(Death, Mark)>,
    /// The x-death entry of the consumer's own queue with the highest count:
    /// the message came back to the queue it was dead-lettered from.
    pub own_death: Option<(Death, Mark)>,
    /// Delivery tags of Celery tasks with an `eta` header (countdown or eta), oldest first.
    pub eta_tags: Vec<u64>,
    /// The latest ETA among them (nanoseconds since the epoch), when it reads.
    pub latest_eta: Option<i64>,
    /// The name of the first Celery task seen (`task` header).
    pub celery_task: Option<String>,
    /// Fingerprint of the looping message with the most deliveries to this consumer.
    pub loop_fp: Option<u64>,
    /// Where its requeue track was when it was named (see `RequeueTracks`).
    pub loop_track_hint: u32,
}

impl DeliveryHints {
    /// Reads the headers of delivery `tag` at `at` to a consumer of `own_queue`.
    pub(crate) fn read(&mut self, headers: &Value, tag: u64, at: Mark, own_queue: Option<&str>) {
        let Some(h) = headers.as_object() else {
            return;
        };
        if let Some(n) = h.get("x-delivery-count").and_then(number) {
            if self.delivery_count.is_none_or(|(m, _, _)| n >= m) {
                self.delivery_count = Some((n, at, tag));
            }
        }
        if let Some(d) = h.get("x-death").and_then(Value::as_array) {
            for e in d.iter().filter_map(Value::as_object) {
                let death = Death {
                    queue: e.get("queue").and_then(short).unwrap_or_default(),
                    reason: e.get("reason").and_then(short).unwrap_or_default(),
                    count: e.get("count").and_then(number).unwrap_or(1),
                };
                let own = own_queue == Some(death.queue.as_str());
                if own
                    && self
                        .own_death
                        .as_ref()
                        .is_none_or(|(x, _)| death.count >= x.count)
                {
                    self.own_death = Some((death.clone(), at));
                }
                if self
                    .death
                    .as_ref()
                    .is_none_or(|(x, _)| death.count >= x.count)
                {
                    self.death = Some((death, at));
                }
            }
        }
        // Celery's task message protocol 2: `task` and `id` headers; `eta` is
        // an ISO 8601 time (or null) for countdown/eta tasks.
        if let (Some(task), Some(_)) = (h.get("task").and_then(short), h.get("id")) {
            self.celery_task.get_or_insert(task);
            if let Some(eta) = h.get("eta").and_then(Value::as_str) {
                if self.eta_tags.len() < MAX_ETA_TAGS {
                    self.eta_tags.push(tag);
                }
                if let Some(t) = iso8601_nanos(eta) {
                    self.latest_eta = Some(self.latest_eta.map_or(t, |x| x.max(t)));
                }
            }
        }
    }
}

/// `2026-12-01T15:20:00.123456+00:00` (or `Z`, or no zone: UTC) as nanoseconds
/// since the Unix epoch.
pub(crate) fn iso8601_nanos(s: &str) -> Option<i64> {
    Timestamp::parse_iso8601(s).map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::iso8601_nanos;

    #[test]
    fn reads_celery_s_eta_times() {
        let utc = iso8601_nanos("2026-12-01T15:20:00.5+00:00");
        assert_eq!(utc, Some(1_796_138_400_500_000_000));
        assert_eq!(iso8601_nanos("2026-12-01T16:20:00.5+01:00"), utc);
        assert_eq!(iso8601_nanos("2026-12-01T15:20:00.500000Z"), utc);
        assert_eq!(iso8601_nanos("not a time"), None);
    }
}
