//! Newer queues and client hints: single active consumer (`standby`), a
//! quorum queue's delivery limit in `redelivery_loop`, dead-lettered
//! messages, streams (406 without basic.qos, a full window), Celery's ETA
//! tasks and its raised channel-wide prefetch, the consumer timeout, and
//! Dramatiq's dead-letter queue.

use serde_json::json;

use super::*;

/// queue.declare of `q` with `arguments`, and its declare-ok.
fn declare_with(s: &mut Sim, c: Conn, q: &str, arguments: serde_json::Value) -> u64 {
    let f = s.c2s(
        c,
        1,
        MethodKind::QueueDeclare,
        args!(queue: q, arguments: arguments),
    );
    let ok = args!(queue: q, message_count: 0u32, consumer_count: 0u32);
    s.s2c(c, 1, MethodKind::QueueDeclareOk, ok);
    f
}

/// A connection whose broker says it is RabbitMQ `version`, channel 1 open.
fn rabbitmq(s: &mut Sim, c: Conn, version: &str, client: &str) {
    s.event(c, Dir::C2S, EventKind::TcpOpen);
    let start = args!(product: "RabbitMQ", version: version);
    s.s2c(c, 0, MethodKind::ConnectionStart, start);
    let start_ok = args!(product: client, version: "5.4.2");
    s.c2s(c, 0, MethodKind::ConnectionStartOk, start_ok);
    s.c2s(c, 0, MethodKind::ConnectionOpen, args!(vhost: "/"));
    s.s2c(c, 0, MethodKind::ConnectionOpenOk, args!());
    s.channel(c, 1);
}

/// A Celery worker (py-amqp) on RabbitMQ 3.10.8 on port `port`: consumer 'w'
/// on queue 'celery', with a channel-wide window of 2, and deliveries 1 and 2
/// of ETA tasks due `eta_s` seconds after T0 not yet acknowledged.
fn celery_worker_holding_eta_tasks(port: u16, eta_s: i64) -> (Sim, Conn) {
    let (mut s, c) = Sim::on(port);
    rabbitmq(&mut s, c, "3.10.8", "py-amqp");
    s.qos(c, 1, 2, true);
    s.consume(c, 1, "celery", "w");
    deliver_with(&mut s, c, ("w", 1, false), "t1", celery_task(eta_s));
    deliver_with(&mut s, c, ("w", 2, false), "t2", celery_task(eta_s));
    (s, c)
}

/// basic.deliver to `tag` of delivery tag `dtag`, with a content header
/// carrying message_id `id` and these headers.
fn deliver_with(
    s: &mut Sim,
    c: Conn,
    delivery: (&str, u64, bool),
    id: &str,
    headers: serde_json::Value,
) -> u64 {
    let properties = Properties {
        message_id: Some(id.into()),
        headers: Some(headers),
        ..Default::default()
    };
    s.deliver_with(c, 1, delivery, properties)
}

fn consumer_on(s: &mut Sim, c: Conn, q: &str, tag: &str, prefetch: u16) -> u64 {
    s.qos(c, 1, prefetch, false);
    s.consume(c, 1, q, tag)
}

#[test]
fn a_single_active_consumer_queue_keeps_its_second_consumer_standby() {
    let (mut s, a) = Sim::on(3000);
    let b = conn(3001);
    publisher(&mut s, a);
    publisher(&mut s, b);
    declare_with(&mut s, a, "sac", json!({"x-single-active-consumer": true}));
    consumer_on(&mut s, a, "sac", "active", 10);
    let registered = consumer_on(&mut s, b, "sac", "waiting", 10);
    for i in 1..=5u64 {
        s.at(i as f64);
        s.deliver(a, 1, "active", i, false, None);
        s.ack(a, 1, i, false);
    }
    let an = s.heartbeat_at(30.0, b, Dir::C2S);
    let v = consumer_verdict(&an, "waiting");
    assert_kind_at(v, VerdictKind::Standby, registered);
    assert!(!v.verdict.is_stall());
    assert_says(v, &["x-single-active-consumer", "'active'", "5 deliveries"]);
    assert_kind(consumer_verdict(&an, "active"), VerdictKind::Healthy);
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
}

#[test]
fn without_single_active_consumer_the_second_consumer_is_not_standby() {
    let (mut s, a) = Sim::on(3002);
    publisher(&mut s, a);
    declare_with(&mut s, a, "plain", json!({"x-queue-type": "classic"}));
    consumer_on(&mut s, a, "plain", "one", 10);
    s.channel(a, 2);
    s.qos(a, 2, 10, false);
    s.consume(a, 2, "plain", "two");
    s.deliver(a, 1, "one", 1, false, None);
    s.ack(a, 1, 1, false);
    let an = s.heartbeat_at(30.0, a, Dir::C2S);
    assert_kind(consumer_verdict(&an, "two"), VerdictKind::Idle);
}

/// A quorum queue with x-delivery-limit 3 dead-lettering to 'dlq'; message
/// 'm1' nacked with requeue at every delivery; deliveries with
/// x-delivery-count 1..=`last` after the first.
fn quorum_loop(last: u64, port: u16) -> (Sim, Conn) {
    let (mut s, c) = Sim::with_publisher(port);
    let arguments = json!({"x-queue-type": "quorum", "x-delivery-limit": 3,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"});
    declare_with(&mut s, c, "qq", arguments);
    consumer_on(&mut s, c, "qq", "nacker", 1);
    for i in 0..=last {
        s.at(1.0 + i as f64);
        let headers = if i == 0 {
            json!({})
        } else {
            json!({"x-delivery-count": i})
        };
        deliver_with(&mut s, c, ("nacker", i + 1, i > 0), "m1", headers);
        s.nack(c, 1, i + 1, true);
    }
    (s, c)
}

#[test]
fn a_quorum_queue_loop_says_how_many_rounds_are_left() {
    let (s, _) = quorum_loop(2, 3003);
    assert_verdict(
        &s.consumer("nacker"),
        VerdictKind::RedeliveryLoop,
        &[
            "x-delivery-count reached 2",
            "x-delivery-limit of 3",
            "1 round(s) left",
            "dead-letters it to the default exchange '' with routing key 'dlq'",
        ],
    );
}

#[test]
fn past_its_delivery_limit_the_message_is_dead_lettered_and_its_reader_named() {
    let (mut s, c) = quorum_loop(3, 3004);
    s.channel(c, 2);
    s.qos(c, 2, 1, false);
    s.consume(c, 2, "dlq", "reader");
    let death = json!({"x-death": [{"count": 1, "reason": "delivery_limit", "queue": "qq",
        "exchange": "", "routing-keys": ["qq"]}]});
    let deliver = args!(consumer_tag: "reader", delivery_tag: 1u64, redelivered: false,
        exchange: "", routing_key: "dlq");
    let at = s.s2c(c, 2, MethodKind::BasicDeliver, deliver);
    let header = ContentHeader {
        class_id: 60,
        body_size: 10,
        properties: Properties {
            message_id: Some("m1".into()),
            headers: Some(death),
            ..Default::default()
        },
        ..Default::default()
    };
    let frame = Frame::ContentHeader(Box::new(header));
    s.event(c, Dir::S2C, EventKind::Frame { channel: 2, frame });
    // The dead-lettered copy's ack does not end the original's loop.
    s.ack(c, 2, 1, false);
    let an = s.analysis();
    assert_verdict(
        consumer_verdict(&an, "nacker"),
        VerdictKind::RedeliveryLoop,
        &[
            "no round left",
            "dead-lettered it to the default exchange ''",
            &format!("consumer 'reader' of queue 'dlq' received it at frame {at}"),
        ],
    );
    assert_verdict(
        consumer_verdict(&an, "reader"),
        VerdictKind::Healthy,
        &["dead-lettered messages", "x-delivery-limit of queue 'qq'"],
    );
}

#[test]
fn a_quorum_queue_without_a_limit_requeues_forever_on_rabbitmq_3() {
    let (mut s, c) = Sim::with_publisher(3005);
    declare_with(&mut s, c, "qq", json!({"x-queue-type": "quorum"}));
    consumer_on(&mut s, c, "qq", "nacker", 1);
    for i in 1..=4u64 {
        s.at(i as f64);
        s.deliver(c, 1, "nacker", i, i > 1, Some("m1"));
        s.nack(c, 1, i, true);
    }
    assert_verdict(
        &s.consumer("nacker"),
        VerdictKind::RedeliveryLoop,
        &["declared without x-delivery-limit", "RabbitMQ 4.0"],
    );
}

#[test]
fn a_dead_letter_cycle_shows_in_x_death_counts() {
    let (mut s, w) = Sim::with_worker(3006, "cyc", "w", 10);
    let death = json!({"x-death": [{"count": 3, "reason": "expired", "queue": "cyc"}]});
    deliver_with(&mut s, w, ("w", 1, false), "m", death);
    s.ack(w, 1, 1, false);
    assert_verdict(
        &s.consumer("w"),
        VerdictKind::Healthy,
        &["TTL expired in queue 'cyc'", "3 times", "dead-letter cycle"],
    );
}

#[test]
fn a_cycle_through_the_consumer_s_own_queue_is_named_beside_the_ttl() {
    let (mut s, w) = Sim::with_worker(3018, "retry", "w", 10);
    let death = json!({"x-death": [
        {"count": 2, "reason": "expired", "queue": "ttl"},
        {"count": 1, "reason": "rejected", "queue": "retry"}]});
    deliver_with(&mut s, w, ("w", 1, false), "m", death);
    s.ack(w, 1, 1, false);
    assert_verdict(
        &s.consumer("w"),
        VerdictKind::Healthy,
        &[
            "TTL expired in queue 'ttl'",
            "comes back to queue 'retry', which dead-lettered it 1 time(s) (reason rejected)",
        ],
    );
}

#[test]
fn messages_ready_in_a_ttl_queue_that_never_come_are_said_to_expire() {
    let (mut s, c) = Sim::with_publisher(3017);
    let declare = args!(queue: "ttl", arguments: json!({"x-message-ttl": 1000}));
    s.c2s(c, 1, MethodKind::QueueDeclare, declare);
    let ok = args!(queue: "ttl", message_count: 4u32, consumer_count: 0u32);
    let ready = s.s2c(c, 1, MethodKind::QueueDeclareOk, ok);
    s.at(3.0);
    consumer_on(&mut s, c, "ttl", "late", 10);
    let v = s.at(20.0).consumer("late");
    assert_verdict(
        &v,
        VerdictKind::NoMessagesRoutedToQueue,
        &[
            "x-message-ttl 1000 ms",
            &format!("ready at its declare-ok (frame {ready})"),
            "expired: the broker drops it",
        ],
    );
}

#[test]
fn a_stream_consumer_without_basic_qos_is_refused_and_told_why() {
    let (mut s, c) = Sim::with_publisher(3007);
    declare_with(&mut s, c, "st", json!({"x-queue-type": "stream"}));
    s.consume_only(c, 1, "st", "reader");
    let close = args!(reply_code: 406u16,
        reply_text: "PRECONDITION_FAILED - consumer prefetch count is not set for 'queue 'st' in vhost '/''",
        class_id: 60u16, method_id: 20u16, failing_method: MethodKind::BasicConsume);
    s.s2c(c, 1, MethodKind::ChannelClose, close);
    let an = s.analysis();
    let words = ["is a stream", "no basic.qos was sent on channel 1"];
    assert_verdict(
        channel_verdict(&an, c, 1),
        VerdictKind::ChannelClosedByBroker,
        &words,
    );
    assert_verdict(
        consumer_verdict(&an, "reader"),
        VerdictKind::ChannelClosedByBroker,
        &words,
    );
}

#[test]
fn a_stream_consumer_window_full_says_acks_give_credit() {
    let (mut s, c) = Sim::with_publisher(3008);
    declare_with(&mut s, c, "st", json!({"x-queue-type": "stream"}));
    s.qos(c, 1, 2, false);
    let consume = args!(queue: "st", consumer_tag: "reader", no_ack: false,
        arguments: json!({"x-stream-offset": "first"}));
    s.c2s(c, 1, MethodKind::BasicConsume, consume);
    s.s2c(
        c,
        1,
        MethodKind::BasicConsumeOk,
        args!(consumer_tag: "reader"),
    );
    s.deliver(c, 1, "reader", 1, false, None);
    s.deliver(c, 1, "reader", 2, false, None);
    let an = s.heartbeat_at(10.0, c, Dir::C2S);
    assert_verdict(
        consumer_verdict(&an, "reader"),
        VerdictKind::PrefetchExhausted,
        &["is a stream", "x-stream-offset=first", "credit"],
    );
}

/// Celery's task headers with an ETA `eta_s` seconds after T0.
fn celery_task(eta_s: i64) -> serde_json::Value {
    let eta = Timestamp(T0 + eta_s * 1_000_000_000).to_rfc3339();
    json!({"task": "resize", "id": "a-b-c", "eta": eta.replace('Z', "+00:00"), "retries": 0})
}

#[test]
fn a_celery_worker_raising_its_prefetch_for_eta_tasks_is_not_stalled() {
    let (mut s, c) = celery_worker_holding_eta_tasks(3009, 3600);
    // kombu raises the channel-wide window by one for each ETA task it holds.
    s.qos(c, 1, 3, true);
    deliver_with(&mut s, c, ("w", 3, false), "t3", celery_task(3600));
    s.qos(c, 1, 4, true);
    let an = s.heartbeat_at(20.0, c, Dir::C2S);
    let v = consumer_verdict(&an, "w");
    assert_verdict(
        v,
        VerdictKind::Healthy,
        &[
            "3 of its unacknowledged deliveries are Celery ETA tasks",
            "the Celery worker (py-amqp 5.4.2)",
            "consumer timeout (1800000 ms, RabbitMQ 3.10.8's default",
            "closes channel 1 with 406",
        ],
    );
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
}

#[test]
fn a_window_full_of_eta_tasks_not_yet_due_is_not_a_stall() {
    let (mut s, _) = celery_worker_holding_eta_tasks(3010, 60);
    let v = s.at(20.0).consumer("w");
    assert_verdict(
        &v,
        VerdictKind::Healthy,
        &["prefetch window is full", "Celery ETA tasks", "not a stall"],
    );
    // Past their ETA and still held: the window is stuck after all.
    let v = s.at(120.0).consumer("w");
    assert_kind(&v, VerdictKind::PrefetchExhausted);
}

#[test]
fn a_raised_channel_wide_window_is_full_only_when_its_deliveries_fill_it() {
    let (mut s, c) = Sim::with_publisher(3011);
    s.qos(c, 1, 2, true);
    s.consume(c, 1, "jobs", "w");
    s.deliver(c, 1, "w", 1, false, None);
    s.deliver(c, 1, "w", 2, false, None);
    s.qos(c, 1, 4, true);
    s.deliver(c, 1, "w", 3, false, None);
    assert_kind(&s.at(30.0).consumer("w"), VerdictKind::Healthy);
    let filled = s.deliver(c, 1, "w", 4, false, None);
    assert_kind_at(
        &s.at(60.0).consumer("w"),
        VerdictKind::PrefetchExhausted,
        filled,
    );
    // Lowered to what is already held: full from that basic.qos on.
    let (mut s, c) = Sim::with_publisher(3012);
    s.qos(c, 1, 4, true);
    s.consume(c, 1, "jobs", "w");
    s.deliver(c, 1, "w", 1, false, None);
    s.deliver(c, 1, "w", 2, false, None);
    let lowered = s.qos(c, 1, 2, true);
    assert_kind_at(
        &s.at(30.0).consumer("w"),
        VerdictKind::PrefetchExhausted,
        lowered,
    );
}

#[test]
fn a_delivery_held_close_to_the_consumer_timeout_says_when_the_channel_closes() {
    let (mut s, c) = Sim::on(3013);
    rabbitmq(&mut s, c, "3.10.8", "Pika Python Client Library");
    s.qos(c, 1, 1, false);
    s.consume(c, 1, "jobs", "w");
    s.deliver(c, 1, "w", 1, false, None);
    let v = s.at(60.0).consumer("w");
    assert_kind(&v, VerdictKind::PrefetchExhausted);
    assert!(
        !v.explanation.contains("consumer timeout"),
        "{}",
        v.explanation
    );
    let v = s.at(1200.0).consumer("w");
    assert_says(
        &v,
        &[
            "held 20 min of the consumer timeout of 30 min",
            "closes channel 1 with 406 PRECONDITION_FAILED in 10 min at the earliest",
        ],
    );
}

#[test]
fn x_consumer_timeout_is_ignored_before_rabbitmq_3_12() {
    // A pika consumer of a queue declared with x-consumer-timeout=60000, one
    // delivery held, on RabbitMQ `version`.
    let held_on = |port: u16, version: &str| {
        let (mut s, c) = Sim::on(port);
        rabbitmq(&mut s, c, version, "pika");
        declare_with(&mut s, c, "jobs", json!({"x-consumer-timeout": 60000}));
        consumer_on(&mut s, c, "jobs", "w", 1);
        s.deliver(c, 1, "w", 1, false, None);
        s
    };
    let v = held_on(3014, "3.10.8").at(1000.0).consumer("w");
    assert_says(&v, &["30 min", "needs RabbitMQ 3.12 or later"]);
    let v = held_on(3015, "3.12.1").at(40.0).consumer("w");
    assert_says(
        &v,
        &[
            "the queue's x-consumer-timeout",
            "in 20.0 s at the earliest",
        ],
    );
}

#[test]
fn dramatiq_s_dead_letter_queue_is_named_with_its_declared_routing_key() {
    let (mut s, c) = Sim::with_publisher(3016);
    let arguments =
        json!({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "default.XQ"});
    let at = declare_with(&mut s, c, "default", arguments);
    s.declare(c, 1, "default.XQ");
    consumer_on(&mut s, c, "default.XQ", "xq", 1);
    s.at(30.0);
    s.publish(c, 1, "", "other");
    assert_verdict(
        &s.consumer("xq"),
        VerdictKind::Idle,
        &[
            "Dramatiq's dead-letter queue of 'default'",
            "retries exhausted",
            &format!("x-dead-letter-routing-key 'default.XQ' in the queue.declare of 'default' at frame {at}"),
        ],
    );
}
