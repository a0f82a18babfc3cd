//! Client hints: which client library and which framework a connection
//! belongs to, from what the capture shows of it — `client_properties`
//! (product and version, in connection.start-ok), the queues it declares and
//! consumes (Celery's `….pidbox` and `celeryev.…`, Dramatiq's `X.DQ`/`X.XQ`),
//! and the headers of the messages it receives (Celery's `task`/`id`/`eta`).
//!
//! The verdict rules use these words where they explain something (a Celery
//! worker that holds ETA tasks, Dramatiq's delay and dead-letter queues); the
//! hints decide nothing themselves.

use std::fmt::Write as _;

use super::state::ConnState;
use super::Analyzer;

/// The client library a `client_properties` product names, in its own
/// project's words: py-amqp (kombu's transport, under Celery), pika (under
/// Dramatiq), aiormq (under aio-pika), amqplib, Bunny, lapin, rabbitmq-c, and
/// the Spring AMQP and MassTransit frameworks when they name themselves.
pub(crate) fn library(product: &str) -> Option<&'static str> {
    let p = product.to_ascii_lowercase();
    let known: &[(&str, &'static str)] = &[
        ("py-amqp", "py-amqp"),
        ("pika", "pika"),
        ("aiormq", "aiormq"),
        ("amqplib", "amqplib"),
        ("bunny", "Bunny"),
        ("lapin", "lapin"),
        ("rabbitmq-c", "rabbitmq-c"),
        ("librabbitmq", "rabbitmq-c"),
        ("spring", "Spring AMQP"),
        ("masstransit", "MassTransit"),
    ];
    known.iter().find(|(k, _)| p.contains(k)).map(|(_, v)| *v)
}

/// The framework the connection's traffic shows, when one does.
pub(crate) fn framework(a: &Analyzer, c: &ConnState) -> Option<&'static str> {
    let library = c.handshake.client_product.as_deref().and_then(library);
    let queues = || {
        a.consumers_on(c)
            .filter_map(|cs| cs.queue.as_deref())
            .chain(c.declared_queues.iter().map(String::as_str))
    };
    let celery_task = a.consumers_on(c).any(|cs| cs.hints.celery_task.is_some());
    if celery_task
        || (library == Some("py-amqp")
            && queues().any(|q| q.ends_with(".pidbox") || q.starts_with("celeryev.")))
    {
        return Some("Celery");
    }
    if queues().any(|q| dramatiq_queue(a, q).is_some()) {
        return Some("Dramatiq");
    }
    // Spring AMQP and MassTransit run on the RabbitMQ Java and .NET clients,
    // whose product is "RabbitMQ": named only when their product says so (no
    // capture of either was made here).
    library.filter(|l| matches!(*l, "Spring AMQP" | "MassTransit"))
}

/// "the Celery worker (py-amqp 5.4.2)", "the client (Pika Python Client
/// Library 1.3.2)", or "the client" when the handshake is not in the capture.
pub(crate) fn client_words(a: &Analyzer, ci: u32) -> String {
    let Some(c) = a.conns.get(ci as usize) else {
        return "the client".to_string();
    };
    let who = match framework(a, c) {
        Some("Celery") => "the Celery worker".to_string(),
        Some(f) => format!("the {f} client"),
        None => "the client".to_string(),
    };
    match (&c.handshake.client_product, &c.handshake.client_version) {
        (Some(p), Some(v)) => format!("{who} ({p} {v})"),
        (Some(p), None) => format!("{who} ({p})"),
        _ => who,
    }
}

/// Why a Dramatiq delay (`X.DQ`) or dead-letter (`X.XQ`) queue receives
/// nothing in ordinary work, when `X` is seen: Dramatiq declares both beside
/// every queue `X`, and `X` with `x-dead-letter-routing-key` `X.XQ`.
pub(crate) fn dramatiq_queue(a: &Analyzer, q: &str) -> Option<String> {
    if let Some(base) = q.strip_suffix(".DQ").filter(|b| a.queue_seen(b)) {
        return Some(format!(
            "'{q}' is Dramatiq's delay queue of '{base}': it receives only messages sent with a delay \
             (send_with_options(delay=...)) or retried with backoff, which the worker moves to '{base}' when \
             they are due"
        ));
    }
    let base = q.strip_suffix(".XQ").filter(|b| a.queue_seen(b))?;
    let mut s = format!(
        "'{q}' is Dramatiq's dead-letter queue of '{base}': messages land there only when they fail for good \
         (retries exhausted) and the worker rejects them"
    );
    let args = a.queue(base).and_then(|i| i.args.as_ref());
    if let Some(args) = args.filter(|x| x.dead_letter.routing_key.as_deref() == Some(q)) {
        let at = args
            .declared
            .map(|m| format!(" at frame {}", m.frame))
            .unwrap_or_default();
        let _ = write!(
            s,
            ", which the broker dead-letters to it (x-dead-letter-routing-key '{q}' in the queue.declare of \
             '{base}'{at})"
        );
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::library;

    #[test]
    fn names_the_libraries_from_their_products() {
        assert_eq!(library("Pika Python Client Library"), Some("pika"));
        assert_eq!(library("py-amqp"), Some("py-amqp"));
        assert_eq!(library("aiormq"), Some("aiormq"));
        assert_eq!(library("RabbitMQ"), None);
    }
}
