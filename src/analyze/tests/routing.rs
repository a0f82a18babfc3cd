//! Where publishes go: misrouted publishes, bindings, bystander consumers and
//! consumers nothing was published for.

use super::*;

#[test]
fn publishes_to_another_queue_are_no_messages_routed_to_queue() {
    let mut s = Sim::new();
    let (p, w) = (conn(1007), conn(1008));
    publisher(&mut s, p);
    s.declare(p, 1, "task");
    worker(&mut s, w, "tasks", "tw", 10);
    s.at(1.0);
    let first = s.publish(p, 1, "", "task");
    s.at(2.0);
    s.publish(p, 1, "", "task");
    let an = s.heartbeat_at(10.0, w, Dir::S2C);
    let v = consumer_verdict(&an, "tw");
    assert_kind_at(v, VerdictKind::NoMessagesRoutedToQueue, first);
    assert_says(v, &["routing key 'task'", "'tasks'"]);
    let publish = v
        .evidence
        .iter()
        .find(|e| e.method == "basic.publish")
        .expect("publish evidence");
    assert_eq!(publish.conn, Some(p));
    assert_kind(conn_verdict(&an, w), VerdictKind::Healthy);
}

#[test]
fn named_exchange_without_matching_binding_is_explained() {
    let mut s = Sim::new();
    let (p, w) = (conn(1009), conn(1010));
    worker(&mut s, w, "orders", "ow", 10);
    s.c2s(
        w,
        1,
        MethodKind::QueueBind,
        args!(queue: "orders", exchange: "shop", routing_key: "order.created"),
    );
    publisher(&mut s, p);
    s.at(1.0);
    s.publish(p, 1, "shop", "order.paid");
    s.at(9.0);
    let v = s.consumer("ow");
    assert_verdict(
        &v,
        VerdictKind::NoMessagesRoutedToQueue,
        &["only with key(s) 'order.created'"],
    );
}

#[test]
fn no_publisher_at_all_is_said() {
    let (mut s, w) = Sim::on(1011);
    let ok = {
        s.handshake(w, 60);
        s.channel(w, 1);
        s.consume(w, 1, "idle", "iw")
    };
    s.at(60.0);
    let v = s.consumer("iw");
    assert_kind(&v, VerdictKind::Idle);
    assert!(!v.verdict.is_stall());
    assert!(
        v.explanation.contains("nothing was published for it")
            && v.explanation.contains(&format!("frame {ok}")),
        "{}",
        v.explanation
    );
}

#[test]
fn idle_consumer_next_to_a_served_one_is_healthy() {
    // Dramatiq: the delay queue's consumer idles while the main queue works.
    let (mut s, [p, w1, _]) = Sim::with_dramatiq_worker([1012, 1013, 1014], 10);
    s.at(1.0);
    s.publish(p, 1, "", "default");
    s.deliver(w1, 1, "main", 1, false, None);
    s.ack(w1, 1, 1, false);
    s.at(30.0);
    let an = s.analysis();
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
}

/// The seed case: a worker on 'default' (and its Dramatiq delay queue) while
/// the sender's actor publishes to 'other'; the capture ends right after.
#[test]
fn misrouted_publish_is_certain_at_once_and_names_both_queues() {
    let (mut s, [p, _, _]) = Sim::with_dramatiq_worker([3030, 3031, 3032], 4);
    s.declare(p, 1, "other");
    s.at(1.0);
    let first = s.publish(p, 1, "", "other");
    for _ in 0..9 {
        s.publish(p, 1, "", "other");
    }
    s.at(1.001);
    let an = s.analysis();
    let v = consumer_verdict(&an, "main");
    assert_kind_certainty(v, VerdictKind::NoMessagesRoutedToQueue, Certainty::Certain);
    assert_eq!(v.frame, Some(first));
    assert!(
        v.explanation.contains("'other'") && v.explanation.contains("which no consumer here reads")
    );
    let d = consumer_verdict(&an, "delay");
    assert_verdict(d, VerdictKind::Idle, &["delay queue"]);
    assert_eq!(an.causes.len(), 1, "{:#?}", an.causes);
    let cause = &an.causes[0].text;
    assert!(
        cause.contains("10 message(s) published with routing key 'other' went to queue 'other', which no consumer here reads")
            && cause.contains("read 'default' and 'default.DQ'")
            && cause.contains("test-client"),
        "{cause}"
    );
}

#[test]
fn celery_control_consumer_is_idle_and_only_the_work_queue_is_blamed() {
    let mut s = Sim::new();
    let (p, w) = (conn(3040), conn(3041));
    worker(&mut s, w, "a", "work", 4);
    s.channel(w, 2);
    s.exchange(w, 2, "celery.pidbox", "fanout");
    s.declare(w, 2, "w1@host.celery.pidbox");
    s.bind(w, 2, "w1@host.celery.pidbox", "celery.pidbox", "");
    s.consume(w, 2, "w1@host.celery.pidbox", "ctl");
    publisher(&mut s, p);
    s.at(1.0);
    s.publish(p, 1, "b", "b");
    s.at(6.0);
    let an = s.analysis();
    let work = VerdictKind::NoMessagesRoutedToQueue;
    assert_verdict(consumer_verdict(&an, "work"), work, &["exchange 'b'"]);
    assert_verdict(consumer_verdict(&an, "ctl"), VerdictKind::Idle, &["pidbox"]);
}

#[test]
fn publishes_after_a_consumer_ended_are_not_its_evidence() {
    let mut s = Sim::new();
    let (p, w) = (conn(3060), conn(3061));
    worker(&mut s, w, "mine", "gone", 4);
    s.at(1.0);
    s.cancel(w, 1, "gone");
    // A channel-wide qos after the cancel is not the cancelled consumer's.
    s.qos(w, 1, 7, true);
    publisher(&mut s, p);
    s.at(2.0);
    s.publish(p, 1, "", "elsewhere");
    s.at(10.0);
    let an = s.analysis();
    let v = consumer_verdict(&an, "gone");
    assert_kind(v, VerdictKind::Idle);
    assert!(!v.explanation.contains("-1"), "{}", v.explanation);
    assert_eq!(an.consumers[0].channel_prefetch_count, None);
}
