//! The publisher verdicts (publish_returned, publish_unroutable, publish_nacked,
//! publish_unconfirmed) and consumer_not_restored, driven from events.

use super::*;

/// basic.publish with `mandatory` and its content header with `id`.
fn publish_msg(s: &mut Sim, c: Conn, x: &str, rk: &str, mandatory: bool, id: &str) -> u64 {
    let publish = args!(exchange: x, routing_key: rk, mandatory: mandatory);
    let f = s.c2s(c, 1, MethodKind::BasicPublish, publish);
    s.event(c, Dir::C2S, content_header(1, Some(id)));
    f
}

fn confirm(s: &mut Sim, c: Conn, m: MethodKind, tag: u64, multiple: bool) -> u64 {
    s.s2c(c, 1, m, args!(delivery_tag: tag, multiple: multiple))
}

fn confirm_mode(s: &mut Sim, c: Conn) -> u64 {
    let f = s.c2s(c, 1, MethodKind::ConfirmSelect, args!());
    s.s2c(c, 1, MethodKind::ConfirmSelectOk, args!());
    f
}

fn stalls_of(an: &Analysis, kind: VerdictKind) -> Vec<&Verdict> {
    an.verdicts.iter().filter(|v| v.verdict == kind).collect()
}

#[test]
fn a_returned_mandatory_publish_names_the_publish_and_the_return() {
    let (mut s, p) = Sim::with_publisher(4001);
    s.exchange(p, 1, "orders", "direct");
    s.bind(p, 1, "orders-q", "orders", "order.created");
    let publish = publish_msg(&mut s, p, "orders", "order.create", true, "m-1");
    publish_msg(&mut s, p, "orders", "order.create", true, "m-2");
    let ret = args!(reply_code: 312u16, reply_text: "NO_ROUTE", exchange: "orders", routing_key: "order.create");
    let r = s.s2c(p, 1, MethodKind::BasicReturn, ret.clone());
    s.event(p, Dir::S2C, content_header(1, Some("m-1")));
    s.s2c(p, 1, MethodKind::BasicReturn, ret);
    s.event(p, Dir::S2C, content_header(1, Some("m-2")));
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_kind_at(v, VerdictKind::PublishReturned, r);
    assert_says(
        v,
        &[
            "returned 2 mandatory publish(es)",
            "312 x2",
            &format!("the publish at frame {publish}"),
            "'m-1'",
            "NO_ROUTE",
        ],
    );
    assert_eq!(v.evidence[0].frame, publish);
    // A returned destination is not also publish_unroutable.
    assert!(stalls_of(&an, VerdictKind::PublishUnroutable).is_empty());
    assert_kind(conn_verdict(&an, p), VerdictKind::Healthy);
}

#[test]
fn publishes_no_binding_seen_matches_are_unroutable_and_uncertain() {
    let (mut s, p) = Sim::with_publisher(4002);
    s.exchange(p, 1, "orders", "direct");
    s.bind(p, 1, "orders-q", "orders", "order.created");
    let first = s.publish(p, 1, "orders", "order.create");
    s.publish(p, 1, "orders", "order.create");
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_kind_certainty(v, VerdictKind::PublishUnroutable, Certainty::Uncertain);
    assert_eq!(v.frame, Some(first));
    assert_says(
        v,
        &[
            "2 publish(es)",
            "'order.created'",
            "before the capture are unknown",
        ],
    );
}

#[test]
fn what_the_capture_cannot_judge_is_not_unroutable() {
    let (mut s, p) = Sim::with_publisher(4003);
    // No exchange.declare seen: its type and bindings are unknown.
    s.bind(p, 1, "q1", "unseen", "a");
    s.publish(p, 1, "unseen", "b");
    // Declared, but no binding to it seen at all.
    s.exchange(p, 1, "lonely", "direct");
    s.publish(p, 1, "lonely", "b");
    // A matching binding.
    s.exchange(p, 1, "orders", "topic");
    s.bind(p, 1, "q2", "orders", "order.#");
    s.publish(p, 1, "orders", "order.created");
    // A mandatory publish the broker did not return was routed.
    s.exchange(p, 1, "audit", "direct");
    s.bind(p, 1, "q3", "audit", "x");
    publish_msg(&mut s, p, "audit", "y", true, "m");
    // The default exchange to a queue the capture knows nothing of.
    s.publish(p, 1, "", "somewhere");
    // Exchanges that drop publishes by design: a reply to a requester whose
    // reply queue is gone, a broadcast, an event nobody listens for.
    s.exchange(p, 1, "reply.celery.pidbox", "direct");
    s.bind(
        p,
        1,
        "mine.reply.celery.pidbox",
        "reply.celery.pidbox",
        "mine",
    );
    s.publish(p, 1, "reply.celery.pidbox", "theirs");
    s.exchange(p, 1, "news", "fanout");
    s.bind(p, 1, "q4", "news", "");
    let unbind = args!(queue: "q4", exchange: "news", routing_key: "");
    s.c2s(p, 1, MethodKind::QueueUnbind, unbind);
    s.publish(p, 1, "news", "");
    s.exchange(p, 1, "celeryev", "topic");
    s.bind(p, 1, "celeryev.mon", "celeryev", "task.#");
    s.publish(p, 1, "celeryev", "worker.heartbeat");
    let an = s.analysis();
    assert!(
        an.verdicts.iter().all(|v| !v.verdict.is_stall()),
        "{:#?}",
        an.verdicts
    );
}

#[test]
fn publishes_to_a_deleted_queue_are_unroutable_and_certain() {
    let (mut s, p) = Sim::with_publisher(4004);
    s.declare(p, 1, "gone");
    s.publish(p, 1, "", "gone");
    s.c2s(p, 1, MethodKind::QueueDelete, args!(queue: "gone"));
    s.at(1.0);
    let after = s.publish(p, 1, "", "gone");
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_kind_certainty(v, VerdictKind::PublishUnroutable, Certainty::Certain);
    assert_eq!(v.frame, Some(after));
    assert_says(v, &["deleted at frame", "not declared again"]);
}

#[test]
fn a_broker_nack_is_publish_nacked_and_names_the_first_nacked_publish() {
    let (mut s, p) = Sim::with_publisher(4005);
    confirm_mode(&mut s, p);
    for i in 1..=4 {
        publish_msg(&mut s, p, "", "capped", false, &format!("m-{i}"));
    }
    confirm(&mut s, p, MethodKind::BasicAck, 2, true);
    let nack = confirm(&mut s, p, MethodKind::BasicNack, 3, false);
    confirm(&mut s, p, MethodKind::BasicNack, 4, false);
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_kind_at(v, VerdictKind::PublishNacked, nack);
    assert_says(v, &["nacked 2 publish(es)", "'m-3'", "2 other publish(es)"]);
    assert!(stalls_of(&an, VerdictKind::PublishUnconfirmed).is_empty());
}

#[test]
fn confirms_that_stop_coming_are_publish_unconfirmed_against_the_channel_pace() {
    let (mut s, p) = Sim::with_publisher(4006);
    confirm_mode(&mut s, p);
    for i in 1..=5u64 {
        s.at(i as f64 * 0.01);
        publish_msg(&mut s, p, "", "q", false, &format!("m-{i}"));
        confirm(&mut s, p, MethodKind::BasicAck, i, false);
    }
    s.at(0.1);
    let oldest = publish_msg(&mut s, p, "", "q", false, "m-6");
    publish_msg(&mut s, p, "", "q", false, "m-7");
    // Under a second: nothing to say.
    s.at(0.5);
    assert!(stalls_of(&s.analysis(), VerdictKind::PublishUnconfirmed).is_empty());
    // 1.9 s against confirms in milliseconds: certain without the time threshold.
    s.at(2.0);
    s.heartbeat(p, Dir::S2C);
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_kind_certainty(v, VerdictKind::PublishUnconfirmed, Certainty::Certain);
    assert_eq!(v.frame, Some(oldest));
    assert_says(v, &["2 publish(es)", "'m-6'", "confirmed 5 publish(es)"]);
    // One multiple ack settles both.
    confirm(&mut s, p, MethodKind::BasicAck, 7, true);
    assert!(stalls_of(&s.analysis(), VerdictKind::PublishUnconfirmed).is_empty());
}

#[test]
fn without_a_confirm_pace_only_time_makes_unconfirmed_certain() {
    let (mut s, p) = Sim::with_publisher(4007);
    confirm_mode(&mut s, p);
    publish_msg(&mut s, p, "", "q", false, "m-1");
    s.at(2.0);
    let v = s.analysis();
    let v = channel_verdict(&v, p, 1);
    assert_kind_certainty(v, VerdictKind::PublishUnconfirmed, Certainty::Uncertain);
    s.at(6.0);
    let an = s.analysis();
    assert_kind_certainty(
        channel_verdict(&an, p, 1),
        VerdictKind::PublishUnconfirmed,
        Certainty::Certain,
    );
}

/// A worker named `name` consuming `q` on channel 1 of `c`.
fn named_worker(s: &mut Sim, c: Conn, name: &str, q: &str, tag: &str) {
    s.event(c, Dir::C2S, EventKind::TcpOpen);
    s.s2c(c, 0, MethodKind::ConnectionStart, args!());
    let start_ok = args!(product: "pika", version: "1.3.2", connection_name: name);
    s.c2s(c, 0, MethodKind::ConnectionStartOk, start_ok);
    s.c2s(c, 0, MethodKind::ConnectionOpen, args!(vhost: "/"));
    s.channel(c, 1);
    s.declare(c, 1, q);
    s.qos(c, 1, 10, false);
    if !tag.is_empty() {
        s.consume(c, 1, q, tag);
    }
}

#[test]
fn a_reconnect_that_never_consumes_again_is_consumer_not_restored() {
    let mut s = Sim::new();
    let (first, again, other) = (conn(4010), conn(4011), conn(4012));
    named_worker(&mut s, first, "worker", "tasks", "w1");
    named_worker(&mut s, other, "reporter", "reports", "r1");
    s.at(1.0);
    let close = s.close(
        first,
        Dir::S2C,
        0,
        320,
        "CONNECTION_FORCED - closed by admin",
    );
    s.event(first, Dir::S2C, EventKind::TcpClose);
    s.at(1.1);
    named_worker(&mut s, again, "worker", "tasks", "");
    s.at(1.5);
    // Not even a second: the reconnect may still consume.
    assert_kind(&s.connection(again), VerdictKind::Healthy);
    let kind = VerdictKind::ConsumerNotRestored;
    let v = s.connection_settles(again, Dir::S2C, kind, (3.0, 8.0));
    assert_eq!(v.frame, Some(close));
    assert_eq!(v.queue.as_deref(), Some("tasks"));
    assert_says(
        &v,
        &["reconnected", "'w1'", "'tasks'", "320 CONNECTION_FORCED"],
    );
    // Another client is not a reconnect of it.
    assert_kind(&s.connection(other), VerdictKind::Healthy);
}

#[test]
fn a_reconnect_that_consumes_again_or_a_client_close_is_not_consumer_not_restored() {
    let mut s = Sim::new();
    let (a1, a2, b1, b2) = (conn(4020), conn(4021), conn(4022), conn(4023));
    named_worker(&mut s, a1, "a", "qa", "ta");
    s.event(a1, Dir::S2C, EventKind::TcpReset);
    named_worker(&mut s, a2, "a", "qa", "ta2");
    // The client's own connection.close: a deliberate shutdown.
    named_worker(&mut s, b1, "b", "qb", "tb");
    s.close_conn_by_client(b1);
    named_worker(&mut s, b2, "b", "qb", "");
    s.at(10.0);
    let an = s.analysis();
    assert!(
        stalls_of(&an, VerdictKind::ConsumerNotRestored).is_empty(),
        "{:#?}",
        an.verdicts
    );
}

#[test]
fn without_connection_names_only_a_connection_that_declares_the_lost_queue_is_a_reconnect() {
    let mut s = Sim::new();
    let (worker, publisher, again) = (conn(4030), conn(4031), conn(4032));
    // test-client, no connection_name (see Sim::handshake).
    s.handshake(worker, 60);
    s.channel(worker, 1);
    s.declare(worker, 1, "jobs");
    s.consume(worker, 1, "jobs", "w");
    s.event(worker, Dir::S2C, EventKind::TcpReset);
    s.at(0.5);
    // Another process of the same library on the host: it only publishes.
    s.handshake(publisher, 60);
    s.channel(publisher, 1);
    s.publish(publisher, 1, "", "jobs");
    s.at(10.0);
    assert_kind(&s.connection(publisher), VerdictKind::Healthy);
    // The worker's reconnect declares its queue and never consumes it.
    s.handshake(again, 60);
    s.channel(again, 1);
    s.declare(again, 1, "jobs");
    s.at(20.0);
    let v = s.connection(again);
    assert_kind_certainty(&v, VerdictKind::ConsumerNotRestored, Certainty::Certain);
    assert_says(&v, &["the same client library, version and host", "'jobs'"]);
}

#[test]
fn a_broker_that_stops_reading_without_connection_blocked_is_connection_blocked() {
    let (mut s, p) = Sim::with_publisher(4040);
    s.publish(p, 1, "", "q");
    s.at(1.0);
    let zero = s.event(p, Dir::S2C, EventKind::TcpZeroWindow);
    s.at(1.5);
    s.heartbeat(p, Dir::S2C);
    assert_kind(&s.connection(p), VerdictKind::Healthy);
    let v = s.connection_settles(p, Dir::S2C, VerdictKind::ConnectionBlocked, (3.0, 7.0));
    assert_eq!(v.frame, Some(zero));
    assert_says(&v, &["zero", "no connection.blocked came"]);
    // Open again after 6 s: still reported; a short one is not.
    s.event(p, Dir::S2C, EventKind::TcpWindowOpen);
    s.at(20.0);
    assert_kind(&s.connection(p), VerdictKind::ConnectionBlocked);
    let (mut s, p) = Sim::with_publisher(4041);
    s.event(p, Dir::S2C, EventKind::TcpZeroWindow);
    s.at(0.5);
    s.event(p, Dir::S2C, EventKind::TcpWindowOpen);
    // The client's own zero window says nothing of the broker.
    s.event(p, Dir::C2S, EventKind::TcpZeroWindow);
    s.at(20.0);
    assert_kind(&s.connection(p), VerdictKind::Healthy);
}
