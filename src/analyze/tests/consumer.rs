//! Consumer verdicts: healthy, slow, prefetch windows (per consumer and
//! channel-wide), settles, consume-ok, broker cancels and redelivery loops.

use super::*;

#[test]
fn healthy_consumer_and_connections_have_no_stall() {
    let (mut s, p, w) = Sim::with_worker_and_publisher((1000, 1001), "jobs", "w1", 10);
    for i in 1..=50u64 {
        s.at(i as f64 * 0.1);
        s.publish(p, 1, "", "jobs");
        s.deliver(w, 1, "w1", i, false, None);
        s.at(i as f64 * 0.1 + 0.002);
        s.ack(w, 1, i, false);
    }
    let an = s.heartbeat_at(60.0, w, Dir::C2S);
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
    let v = consumer_verdict(&an, "w1");
    assert_kind_certainty(v, VerdictKind::Healthy, Certainty::Certain);
    assert_says(v, &["50 deliveries"]);
    assert_kind(conn_verdict(&an, p), VerdictKind::Healthy);
    assert_eq!(an.consumers[0].latency.as_ref().map(|l| l.count), Some(50));
    assert_eq!(an.verdicts.len(), 3);
}

#[test]
fn slow_acks_that_keep_coming_are_slow_but_healthy() {
    let (mut s, w) = Sim::with_worker(1002, "slow", "sw", 1);
    for i in 1..=10u64 {
        let t0 = i as f64 * 2.0;
        s.at(t0);
        s.deliver(w, 1, "sw", i, false, None);
        s.at(t0 + 1.5);
        s.ack(w, 1, i, false);
    }
    let an = s.analysis();
    let v = consumer_verdict(&an, "sw");
    assert_kind(v, VerdictKind::SlowButHealthy);
    assert!(!v.verdict.is_stall());
    assert_says(v, &["p95"]);
    assert!(v.since.is_some() && v.frame.is_some());
}

#[test]
fn full_prefetch_window_without_settle_is_prefetch_exhausted_once_certain() {
    let (mut s, w) = Sim::with_worker(1003, "pq", "stuck", 3);
    s.at(1.0);
    s.deliver(w, 1, "stuck", 1, false, None);
    s.deliver(w, 1, "stuck", 2, false, None);
    let filled = s.deliver(w, 1, "stuck", 3, false, None);
    // 2 s later, nothing to compare with: the stall, uncertain, with how long so far.
    let an = s.heartbeat_at(3.0, w, Dir::S2C);
    let v = consumer_verdict(&an, "stuck");
    assert_kind_certainty(v, VerdictKind::PrefetchExhausted, Certainty::Uncertain);
    assert!(
        v.explanation.contains("duration unknown") && v.explanation.contains("2.00 s"),
        "{}",
        v.explanation
    );
    assert!(an.has_stall(), "an uncertain stall still exits 1");
    // 7 s later: certain by time, at the end of a capture and live alike.
    let an = s.heartbeat_at(8.0, w, Dir::S2C);
    let v = consumer_verdict(&an, "stuck");
    assert_kind_certainty(v, VerdictKind::PrefetchExhausted, Certainty::Certain);
    assert_eq!(v.frame, Some(filled));
    assert_says(v, &["1, 2, 3", "'pq'"]);
    assert!(v
        .evidence
        .iter()
        .any(|e| e.method == "basic.qos" && e.prefetch_count == Some(3)));
    assert_eq!(
        v.evidence
            .iter()
            .filter(|e| e.method == "basic.deliver")
            .count(),
        3
    );
    let live = s.a.live_analysis(s.now);
    let lv = consumer_verdict(&live, "stuck");
    assert_kind_certainty(lv, VerdictKind::PrefetchExhausted, Certainty::Certain);
    assert_says(lv, &["so far"]);
    // A settle empties the verdict.
    s.ack(w, 1, 0, true);
    assert_kind(
        consumer_verdict(&s.analysis(), "stuck"),
        VerdictKind::SlowButHealthy,
    );
}

#[test]
fn global_qos_window_is_shared_by_the_channel() {
    let (mut s, w) = Sim::with_publisher(1004);
    s.qos(w, 1, 2, true);
    s.consume(w, 1, "a", "ca");
    s.consume(w, 1, "b", "cb");
    s.at(1.0);
    s.deliver(w, 1, "ca", 1, false, None);
    s.deliver(w, 1, "cb", 2, false, None);
    s.at(20.0);
    let an = s.analysis();
    for tag in ["ca", "cb"] {
        let v = consumer_verdict(&an, tag);
        assert_kind(v, VerdictKind::PrefetchExhausted);
        assert_says(v, &["channel-wide"]);
    }
}

#[test]
fn qos_after_consume_does_not_limit_that_consumer() {
    let (mut s, w) = Sim::with_publisher(1005);
    s.consume(w, 1, "a", "early");
    s.qos(w, 1, 1, false);
    s.deliver(w, 1, "early", 1, false, None);
    s.at(20.0);
    assert_kind(
        consumer_verdict(&s.analysis(), "early"),
        VerdictKind::Healthy,
    );
}

#[test]
fn multiple_ack_settles_every_tag_up_to_it() {
    let (mut s, w) = Sim::with_worker(1006, "m", "mc", 100);
    for i in 1..=10 {
        s.deliver(w, 1, "mc", i, false, None);
    }
    s.ack(w, 1, 4, false);
    s.ack(w, 1, 7, true);
    let an = s.analysis();
    assert_eq!(an.consumers[0].counts.unacked, 3);
    assert_eq!(an.consumers[0].counts.acks, 7);
    assert_eq!(
        s.a.unacked_of(0)
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    s.ack(w, 1, 0, true);
    assert_eq!(s.analysis().consumers[0].counts.unacked, 0);
}

#[test]
fn consume_without_consume_ok_is_consume_not_confirmed() {
    let (mut s, w) = Sim::with_publisher(1016);
    let f = s.consume_only(w, 1, "q", "nc");
    s.at(10.0);
    let v = s.consumer("nc");
    assert_kind_at(&v, VerdictKind::ConsumeNotConfirmed, f);
}

#[test]
fn broker_cancel_after_queue_delete_is_consumer_cancelled_by_broker() {
    let (mut s, p, w) = Sim::with_worker_and_publisher((1025, 1026), "gone", "oc", 10);
    s.at(1.0);
    let del = s.c2s(p, 1, MethodKind::QueueDelete, args!(queue: "gone"));
    let cancel = s.s2c(w, 1, MethodKind::BasicCancel, args!(consumer_tag: "oc"));
    let an = s.analysis();
    let v = consumer_verdict(&an, "oc");
    assert_kind_at(v, VerdictKind::ConsumerCancelledByBroker, cancel);
    assert_says(v, &[&format!("frame {del}")]);
    assert!(v
        .evidence
        .iter()
        .any(|e| e.method == "queue.delete" && e.conn == Some(p)));
}

#[test]
fn same_message_nacked_and_redelivered_is_a_redelivery_loop() {
    let (mut s, w) = Sim::with_worker(1027, "loop", "nk", 1);
    let mut third = 0;
    for round in 1..=5u64 {
        s.at(round as f64 * 0.1);
        let f = s.deliver(w, 1, "nk", round, round > 1, Some("msg-0"));
        if round == 3 {
            third = f;
        }
        s.nack(w, 1, round, true);
    }
    let an = s.analysis();
    let v = consumer_verdict(&an, "nk");
    assert_kind_at(v, VerdictKind::RedeliveryLoop, third);
    assert_says(v, &["msg-0", "5 times", "5 nack/reject"]);
}

#[test]
fn a_retry_that_succeeds_is_not_a_loop() {
    let (mut s, w) = Sim::with_worker(1028, "retry", "rt", 1);
    s.deliver(w, 1, "rt", 1, false, Some("m"));
    s.nack(w, 1, 1, true);
    s.deliver(w, 1, "rt", 2, true, Some("m"));
    s.ack(w, 1, 2, false);
    assert_kind(consumer_verdict(&s.analysis(), "rt"), VerdictKind::Healthy);
}

#[test]
fn one_message_id_on_two_queues_is_two_messages() {
    // Each queue's copy of "same" is requeued once and delivered again: two
    // retries, not one message delivered four times.
    let (mut s, a) = Sim::with_worker(3200, "qa", "ta", 10);
    let b = conn(3201);
    s.handshake(b, 0);
    s.channel(b, 1);
    s.consume(b, 1, "qb", "tb");
    for round in 1..=2u64 {
        for (c, tag, rk) in [(a, "ta", "qa"), (b, "tb", "qb")] {
            let deliver = args!(
                consumer_tag: tag,
                delivery_tag: round,
                redelivered: round > 1,
                exchange: "",
                routing_key: rk,
            );
            s.s2c(c, 1, MethodKind::BasicDeliver, deliver);
            s.event(c, Dir::S2C, content_header(1, Some("same")));
            if round == 1 {
                s.nack(c, 1, round, true);
            }
        }
    }
    let an = s.analysis();
    for tag in ["ta", "tb"] {
        let v = consumer_verdict(&an, tag);
        assert_ne!(
            v.verdict,
            VerdictKind::RedeliveryLoop,
            "{tag}: {}",
            v.explanation
        );
    }
}

#[test]
fn redelivery_loop_since_is_the_earliest_third_delivery() {
    let (mut s, w) = Sim::with_worker(3100, "loopq", "nk", 10);
    let mut tag = 0;
    let mut third_of_a = 0;
    // Message "a" loops first, then "b" loops more often.
    for round in 1..=3 {
        tag += 1;
        let f = s.deliver(w, 1, "nk", tag, round > 1, Some("a"));
        if round == 3 {
            third_of_a = f;
        }
        s.nack(w, 1, tag, true);
    }
    for round in 1..=6 {
        tag += 1;
        s.deliver(w, 1, "nk", tag, round > 1, Some("b"));
        s.nack(w, 1, tag, true);
    }
    let v = s.consumer("nk");
    assert_kind_at(&v, VerdictKind::RedeliveryLoop, third_of_a);
    assert_says(&v, &["'b'"]);
}

#[test]
fn full_window_while_peers_settle_is_certain_within_seconds() {
    let mut s = Sim::new();
    let (p, stuck, peer) = (conn(3000), conn(3001), conn(3002));
    worker(&mut s, stuck, "shared", "stuck", 3);
    worker(&mut s, peer, "shared", "peer", 3);
    publisher(&mut s, p);
    s.at(1.0);
    for t in 1..=3 {
        s.deliver(stuck, 1, "stuck", t, false, None);
    }
    for i in 1..=50u64 {
        s.at(1.0 + i as f64 * 0.06);
        s.publish(p, 1, "", "shared");
        s.deliver(peer, 1, "peer", i, false, None);
        s.at(1.0 + i as f64 * 0.06 + 0.003);
        s.ack(peer, 1, i, false);
    }
    // 3.5 s after the window filled, no time threshold passed: the peers prove it.
    s.at(4.5);
    let an = s.analysis();
    let v = consumer_verdict(&an, "stuck");
    assert_kind(v, VerdictKind::PrefetchExhausted);
    assert_eq!(v.certainty, Certainty::Certain, "{}", v.explanation);
    assert_says(v, &["kept settling"]);
    // Live, within seconds too, and worded "so far".
    s.at(2.5);
    let live = s.a.live_analysis(Timestamp(T0 + 2_500_000_000));
    let lv = consumer_verdict(&live, "stuck");
    assert_eq!(lv.certainty, Certainty::Certain, "{}", lv.explanation);
    assert_says(lv, &["so far"]);
    assert_kind(consumer_verdict(&an, "peer"), VerdictKind::Healthy);
    assert_eq!(an.causes.len(), 1, "{:#?}", an.causes);
    assert!(
        an.causes[0].text.contains("kept settling"),
        "{}",
        an.causes[0].text
    );
}

#[test]
fn full_window_at_the_very_end_of_a_quiet_capture_is_an_uncertain_stall() {
    let (mut s, w) = Sim::with_worker(3010, "quiet", "q5", 5);
    s.at(1.0);
    for t in 1..=5 {
        s.deliver(w, 1, "q5", t, false, None);
    }
    let an = s.heartbeat_at(1.004, w, Dir::C2S);
    let v = consumer_verdict(&an, "q5");
    assert_kind_certainty(v, VerdictKind::PrefetchExhausted, Certainty::Uncertain);
    assert!(
        v.explanation.contains("duration unknown")
            && v.explanation.contains("4 ms after the window filled"),
        "{}",
        v.explanation
    );
    assert!(an.has_stall());
    let mut text = Vec::new();
    write_verdict_block(&an, &mut text).expect("write to a Vec");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.contains("[uncertain]"), "{text}");
    assert!(!text.contains("healthy: 1 consumer"), "{text}");
}

#[test]
fn slow_consumer_mid_message_at_the_end_is_never_a_stall() {
    let (mut s, w) = Sim::with_worker(3020, "slowq", "slow1", 1);
    for i in 1..=4u64 {
        let t0 = (i - 1) as f64 * 3.01;
        s.at(t0 + 0.01);
        s.deliver(w, 1, "slow1", i, false, None);
        if i < 4 {
            s.at(t0 + 3.0);
            s.ack(w, 1, i, false);
        }
    }
    // Mid-message: 2 s into the fourth 3 s message when the capture ends.
    let an = s.heartbeat_at(9.04 + 2.0, w, Dir::C2S);
    let v = consumer_verdict(&an, "slow1");
    assert_kind(v, VerdictKind::SlowButHealthy);
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
}

#[test]
fn channel_prefetch_survives_the_channel_in_the_summary() {
    let (mut s, w) = Sim::with_publisher(3070);
    s.qos(w, 1, 9, true);
    s.consume(w, 1, "g", "gtag");
    s.close(w, Dir::C2S, 1, 200, "");
    assert_eq!(s.analysis().consumers[0].channel_prefetch_count, Some(9));
}

#[test]
fn unknown_prefetch_with_stuck_deliveries_is_capture_incomplete() {
    let (mut s, w) = Sim::on(1030);
    s.event(w, Dir::S2C, mid_connection());
    s.deliver(w, 1, "x", 7, false, None);
    s.at(20.0);
    let c = s.consumer("x");
    assert_kind(&c, VerdictKind::CaptureIncomplete);
}
