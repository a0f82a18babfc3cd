//! Channel verdicts: channels the broker closed (ack timeouts among them)
//! and channel.flow pauses.

use super::*;

#[test]
fn broker_channel_close_on_consume_is_channel_closed_by_broker() {
    let (mut s, w) = Sim::with_publisher(1017);
    s.consume_only(w, 1, "missing", "orphan");
    let close = s.s2c(w, 1, MethodKind::ChannelClose, args!(reply_code: 404u16, reply_text: "NOT_FOUND - no queue 'missing' in vhost '/'", class_id: 60u16, method_id: 20u16, failing_method: MethodKind::BasicConsume));
    s.c2s(w, 1, MethodKind::ChannelCloseOk, args!());
    s.at(10.0);
    let an = s.analysis();
    let ch = channel_verdict(&an, w, 1);
    assert_kind_at(ch, VerdictKind::ChannelClosedByBroker, close);
    assert_eq!(ch.consumer_tag.as_deref(), Some("orphan"));
    assert_eq!(ch.queue.as_deref(), Some("missing"));
    assert_says(ch, &["404 NOT_FOUND", "basic.consume"]);
    assert_kind(
        consumer_verdict(&an, "orphan"),
        VerdictKind::ChannelClosedByBroker,
    );
    assert_kind(conn_verdict(&an, w), VerdictKind::Healthy);
}

#[test]
fn ack_timeout_names_the_held_delivery() {
    let (mut s, w) = Sim::with_worker(1018, "slowq", "holder", 10);
    s.at(1.0);
    s.deliver(w, 1, "holder", 1, false, None);
    s.at(7.0);
    let close = s.s2c(w, 1, MethodKind::ChannelClose, args!(reply_code: 406u16, reply_text: "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 5000 ms"));
    let an = s.analysis();
    let ch = channel_verdict(&an, w, 1);
    assert_kind_at(ch, VerdictKind::AckTimeout, close);
    assert_says(ch, &["delivery tag 1", "6.00 s"]);
    assert_kind(consumer_verdict(&an, "holder"), VerdictKind::AckTimeout);
}

#[test]
fn channel_flow_pause_is_channel_flow_paused() {
    let (mut s, p) = Sim::with_publisher(1021);
    let f = s.s2c(p, 1, MethodKind::ChannelFlow, args!(active: false));
    s.at(5.0);
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_kind_at(v, VerdictKind::ChannelFlowPaused, f);
    s.s2c(p, 1, MethodKind::ChannelFlow, args!(active: true));
    assert!(!s
        .analysis()
        .verdicts
        .iter()
        .any(|v| v.scope == Scope::Channel));
}

#[test]
fn channel_close_verdict_names_the_queue_of_its_own_connection() {
    let mut s = Sim::new();
    let (w1, w2) = (conn(3090), conn(3091));
    worker(&mut s, w1, "q-one", "fixed", 1);
    worker(&mut s, w2, "q-two", "fixed", 1);
    s.close(w2, Dir::S2C, 1, 406, "PRECONDITION_FAILED - boom");
    let an = s.analysis();
    assert_eq!(channel_verdict(&an, w2, 1).queue.as_deref(), Some("q-two"));
}
