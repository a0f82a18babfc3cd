//! published_not_delivered, driven from events: messages published to a
//! queue whose only consumer (counted by a queue.declare-ok) is in the
//! capture, with room, and never delivered.

use super::*;

/// A publisher's queue.declare-ok counting `consumers` consumers on `q`.
fn declare_counting(s: &mut Sim, p: Conn, q: &str, consumers: u32) -> u64 {
    s.c2s(p, 1, MethodKind::QueueDeclare, args!(queue: q));
    let ok = args!(queue: q, message_count: 0u32, consumer_count: consumers);
    s.s2c(p, 1, MethodKind::QueueDeclareOk, ok)
}

/// The Celery run CI saw: a worker with room (prefetch 8) on 'tasks', a
/// sender that declares it (consumer_count 1), publishes three tasks and
/// drops its socket without connection.close; one task is delivered.
fn three_published_one_delivered(consumers: u32) -> (Sim, Conn, Conn, u64, u64) {
    let (mut s, p, w) = Sim::with_worker_and_publisher((5101, 5102), "tasks", "w", 8);
    let declare_ok = declare_counting(&mut s, p, "tasks", consumers);
    s.at(0.1);
    s.publish(p, 1, "", "tasks");
    s.deliver(w, 1, "w", 1, false, None);
    s.ack(w, 1, 1, false);
    s.publish(p, 1, "", "tasks");
    let last = s.publish(p, 1, "", "tasks");
    s.at(0.102);
    s.event(p, Dir::C2S, EventKind::TcpClose);
    (s, p, w, declare_ok, last)
}

#[test]
fn publishes_to_a_sole_consumer_with_room_never_delivered_are_named_with_the_abrupt_close() {
    let (mut s, _p, w, declare_ok, last) = three_published_one_delivered(1);
    let an = s.heartbeat_at(61.0, w, Dir::S2C);
    let v = consumer_verdict(&an, "w");
    assert_kind_certainty(v, VerdictKind::PublishedNotDelivered, Certainty::Certain);
    assert_eq!(v.frame, Some(last), "{v:#?}");
    assert_says(
        v,
        &[
            "2 of the 3 message(s) published to queue 'tasks'",
            "were never delivered",
            &format!("queue.declare-ok at frame {declare_ok} counted 1 consumer(s)"),
            "1 delivered since",
            "room in its prefetch window for 60.9 s",
            "ended with TCP FIN and no connection.close",
            "2 ms before",
        ],
    );
    let methods: Vec<&str> = v.evidence.iter().map(|e| e.method).collect();
    assert_eq!(
        methods,
        ["queue.declare-ok", "basic.publish", "tcp.close"],
        "{v:#?}"
    );
    assert!(VerdictKind::PublishedNotDelivered.is_stall());
}

#[test]
fn within_the_time_threshold_it_is_uncertain_and_within_a_second_nothing() {
    let (mut s, _p, w, _, _) = three_published_one_delivered(1);
    let an = s.heartbeat_at(0.6, w, Dir::S2C);
    assert_kind(consumer_verdict(&an, "w"), VerdictKind::Healthy);
    let an = s.heartbeat_at(2.0, w, Dir::S2C);
    let v = consumer_verdict(&an, "w");
    assert_kind_certainty(v, VerdictKind::PublishedNotDelivered, Certainty::Uncertain);
    assert_says(v, &["a delivery may still come, certain after 5.00 s"]);
}

#[test]
fn a_consumer_count_above_the_consumers_seen_proves_nothing() {
    // Another consumer, outside the capture, may have taken the other two.
    let (mut s, _p, w, _, _) = three_published_one_delivered(2);
    let an = s.heartbeat_at(61.0, w, Dir::S2C);
    assert_kind(consumer_verdict(&an, "w"), VerdictKind::Healthy);
}

#[test]
fn every_publish_delivered_is_healthy() {
    let (mut s, _p, w, _, _) = three_published_one_delivered(1);
    s.deliver(w, 1, "w", 2, false, None);
    s.deliver(w, 1, "w", 3, false, None);
    s.ack(w, 1, 3, true);
    let an = s.heartbeat_at(61.0, w, Dir::S2C);
    assert_kind(consumer_verdict(&an, "w"), VerdictKind::Healthy);
}

#[test]
fn a_window_that_had_room_again_only_just_now_is_not_evidence() {
    // Prefetch 1: the second and third wait in the queue while the first is
    // unsettled; it is settled just before the capture ends, so they may
    // still come.
    let (mut s, p, w) = Sim::with_worker_and_publisher((5103, 5104), "slow", "w", 1);
    declare_counting(&mut s, p, "slow", 1);
    for _ in 0..3 {
        s.publish(p, 1, "", "slow");
    }
    s.deliver(w, 1, "w", 1, false, None);
    s.at(60.0);
    s.ack(w, 1, 1, false);
    let an = s.heartbeat_at(60.3, w, Dir::S2C);
    let v = consumer_verdict(&an, "w");
    assert_ne!(v.verdict, VerdictKind::PublishedNotDelivered, "{v:#?}");
}

#[test]
fn a_redelivery_does_not_count_as_a_publish_delivered() {
    // Two published, the first delivered twice (nacked with requeue): the
    // second never came.
    let (mut s, p, w) = Sim::with_worker_and_publisher((5105, 5106), "rq", "w", 8);
    declare_counting(&mut s, p, "rq", 1);
    s.publish(p, 1, "", "rq");
    s.publish(p, 1, "", "rq");
    s.deliver(w, 1, "w", 1, false, None);
    s.nack(w, 1, 1, true);
    s.deliver(w, 1, "w", 2, true, None);
    s.ack(w, 1, 2, false);
    let an = s.heartbeat_at(30.0, w, Dir::S2C);
    let v = consumer_verdict(&an, "w");
    assert_kind_certainty(v, VerdictKind::PublishedNotDelivered, Certainty::Certain);
    assert_says(v, &["1 of the 2 message(s)", "1 delivered since"]);
    // No close of the publisher is seen: the wording says what else it can be.
    assert_says(
        v,
        &["unless a consumer outside the capture registered since"],
    );
}

#[test]
fn publisher_connections_retired_since_leave_the_rule_naming_the_last_publisher() {
    // A long run: 1 500 short publisher connections, each one publish
    // delivered and acked, each ending without connection.close; then a last
    // publisher whose second publish never comes. The old ones retire while
    // it stays, which renumbers the connections that stay: the rule must
    // still name the last publisher, not whichever took its number.
    let (mut s, p, w) = Sim::with_worker_and_publisher((5107, 5108), "work", "w", 8);
    declare_counting(&mut s, p, "work", 1);
    let mut tag = 0;
    let mut publish_delivered = |s: &mut Sim, pi: Conn| {
        publisher(s, pi);
        s.publish(pi, 1, "", "work");
        tag += 1;
        s.deliver(w, 1, "w", tag, false, None);
        s.ack(w, 1, tag, false);
    };
    for i in 0..1_500u16 {
        s.at(1.0 + f64::from(i) * 0.01);
        let pi = conn(20_000 + i);
        publish_delivered(&mut s, pi);
        s.event(pi, Dir::C2S, EventKind::TcpClose);
    }
    s.at(30.0);
    let last = conn(30_000);
    publish_delivered(&mut s, last);
    s.publish(last, 1, "", "work");
    s.event(last, Dir::C2S, EventKind::TcpClose);
    // Ten seconds after their end the old ones retire; the last is 8 s old.
    s.at(38.0);
    for _ in 0..5_000 {
        s.heartbeat(w, Dir::S2C);
    }
    let an = s.analysis();
    assert!(an.retired.connections >= 1_000, "{:?}", an.retired);
    let v = consumer_verdict(&an, "w");
    assert_kind_certainty(v, VerdictKind::PublishedNotDelivered, Certainty::Certain);
    assert_says(
        v,
        &[
            "1 of the 1502 message(s)",
            "1501 delivered since",
            &format!("its connection {last} ended with TCP FIN"),
        ],
    );
    let publish = v.evidence.iter().find(|e| e.method == "basic.publish");
    assert_eq!(publish.map(|e| e.conn), Some(Some(last)), "{v:#?}");
}
