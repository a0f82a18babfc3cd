//! Connection verdicts: closes, blocks, heartbeats, TCP ends, incomplete
//! captures, connections that never consume, and retiring ended connections.

use super::*;

#[test]
fn connection_that_never_consumes_is_no_consume() {
    let (mut s, w) = Sim::with_publisher(1015);
    s.declare(w, 1, "q1");
    let last = s.qos(w, 1, 5, false);
    let an = s.heartbeat_at(40.0, w, Dir::C2S);
    let v = conn_verdict(&an, w);
    assert_kind_at(v, VerdictKind::NoConsume, last);
    assert_says(v, &["queue.declare x1", "'q1'"]);
}

#[test]
fn broker_connection_close_is_connection_closed_by_broker() {
    let (mut s, w) = Sim::with_worker(1019, "q", "cw", 10);
    s.at(2.0);
    let f = s.s2c(w, 0, MethodKind::ConnectionClose, args!(reply_code: 320u16, reply_text: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"));
    let an = s.analysis();
    let v = conn_verdict(&an, w);
    assert_kind_at(v, VerdictKind::ConnectionClosedByBroker, f);
    assert!(v.explanation.contains("320 CONNECTION_FORCED"));
    assert_kind(
        consumer_verdict(&an, "cw"),
        VerdictKind::ConnectionClosedByBroker,
    );
}

#[test]
fn blocked_connection_is_connection_blocked_even_when_lifted() {
    let (mut s, p) = Sim::with_publisher(1020);
    s.publish(p, 1, "", "q");
    s.at(1.0);
    let f = s.s2c(
        p,
        0,
        MethodKind::ConnectionBlocked,
        args!(reason: "low on memory"),
    );
    s.at(3.0);
    let v = s.connection(p);
    assert_kind(&v, VerdictKind::ConnectionBlocked);
    assert!(v.explanation.contains("low on memory"));
    assert_eq!(v.frame, Some(f));
    s.s2c(p, 0, MethodKind::ConnectionUnblocked, args!());
    let lifted = s.connection(p);
    assert_verdict(&lifted, VerdictKind::ConnectionBlocked, &["2.00 s"]);
}

#[test]
fn silent_client_then_reset_is_heartbeat_timeout() {
    let (mut s, w) = Sim::on(1022);
    s.handshake(w, 2);
    s.channel(w, 1);
    s.consume(w, 1, "hb", "frozen");
    s.heartbeat(w, Dir::C2S);
    for i in 1..=5 {
        s.at(i as f64);
        s.heartbeat(w, Dir::S2C);
    }
    s.at(6.0);
    let rst = s.event(w, Dir::S2C, EventKind::TcpReset);
    let an = s.analysis();
    let v = conn_verdict(&an, w);
    assert_kind_at(v, VerdictKind::HeartbeatTimeout, rst);
    assert_says(v, &["heartbeat 2 s"]);
    let c = consumer_verdict(&an, "frozen");
    assert_kind_at(c, VerdictKind::HeartbeatTimeout, rst);
}

#[test]
fn reset_with_a_live_consumer_is_connection_lost() {
    let (mut s, w) = Sim::with_worker(1023, "q", "lw", 10);
    s.deliver(w, 1, "lw", 1, false, None);
    s.at(0.5);
    let f = s.event(w, Dir::C2S, EventKind::TcpReset);
    let an = s.analysis();
    assert_kind(conn_verdict(&an, w), VerdictKind::ConnectionLost);
    assert_eq!(conn_verdict(&an, w).frame, Some(f));
    assert_kind(consumer_verdict(&an, "lw"), VerdictKind::ConnectionLost);
}

#[test]
fn client_fin_with_nothing_in_flight_is_a_quiet_exit() {
    let (mut s, p) = Sim::with_publisher(1024);
    s.publish(p, 1, "", "q");
    s.event(p, Dir::C2S, EventKind::TcpClose);
    assert_verdict(
        &s.connection(p),
        VerdictKind::Healthy,
        &["without connection.close"],
    );
}

#[test]
fn mid_connection_start_is_capture_incomplete_but_acking_consumer_is_healthy() {
    let (mut s, w) = Sim::on(1029);
    let first = s.event(w, Dir::S2C, mid_connection());
    for i in 100..110 {
        s.deliver(w, 1, "early", i, false, None);
        s.ack(w, 1, i, false);
    }
    s.at(20.0);
    let an = s.analysis();
    let v = conn_verdict(&an, w);
    assert_kind_at(v, VerdictKind::CaptureIncomplete, first);
    assert_says(v, &["mid-connection"]);
    let c = consumer_verdict(&an, "early");
    assert_kind(c, VerdictKind::Healthy);
    assert_eq!(c.queue, None);
}

#[test]
fn helper_connection_declaring_queues_consumed_elsewhere_is_healthy() {
    let mut s = Sim::new();
    let (helper, w) = (conn(3050), conn(3051));
    publisher(&mut s, helper);
    for q in ["default", "default.DQ", "default.XQ"] {
        s.declare(helper, 1, q);
    }
    worker(&mut s, w, "default", "main", 4);
    let an = s.heartbeat_at(40.0, helper, Dir::C2S);
    let v = conn_verdict(&an, helper);
    assert_kind(v, VerdictKind::Healthy);
    // A connection that set a prefetch and never consumed meant to: no_consume.
    let (mut s, lone) = Sim::with_publisher(3052);
    s.qos(lone, 1, 5, false);
    s.connection_settles(lone, Dir::C2S, VerdictKind::NoConsume, (2.0, 8.0));
}

#[test]
fn close_without_code_or_text_is_worded() {
    let (mut s, w) = Sim::on(3080);
    s.handshake(w, 60);
    s.close(w, Dir::C2S, 0, 0, "");
    let v = s.connection(w);
    assert!(!v.explanation.contains("(0 )"), "{}", v.explanation);
    assert_says(&v, &["without a reply code"]);
}

#[test]
fn closed_connections_release_channel_state() {
    let mut s = Sim::new();
    for port in 2000..2100u16 {
        let w = conn(port);
        worker(&mut s, w, "q", "t", 10);
        s.deliver(w, 1, "t", 1, false, None);
        s.ack(w, 1, 1, false);
        s.close_conn_by_client(w);
    }
    assert!(s.a.conns.iter().all(|c| c.open_channels().count() == 0));
    assert!(!s.analysis().has_stall());
}

/// A proxy that runs for days: ended connections retire once their verdicts
/// are final, so state and the cost of an analysis follow what is in flight.
#[test]
fn ended_connections_retire_and_their_verdicts_stay() {
    let mut s = Sim::new();
    // One stuck consumer whose connection the broker closes: a stall to keep.
    let bad = conn(9);
    worker(&mut s, bad, "q", "bad", 1);
    s.deliver(bad, 1, "bad", 1, false, None);
    s.close(bad, Dir::S2C, 0, 320, "CONNECTION_FORCED - broker shutdown");
    s.event(bad, Dir::S2C, EventKind::TcpClose);
    let mut most_live = 0;
    let mut late = conn(1);
    for i in 0..20_000u32 {
        s.at(1.0 + i as f64 * 0.01);
        let w = conn(10_000 + (i % 50_000) as u16);
        let w = Conn {
            client: SocketAddr::from((
                [127, 0, (i >> 16) as u8 + 1, (i >> 8) as u8],
                (i & 0xff) as u16 + 1,
            )),
            ..w
        };
        worker(&mut s, w, "q", "t", 10);
        s.deliver(w, 1, "t", 1, false, None);
        s.ack(w, 1, 1, false);
        s.close_conn_by_client(w);
        most_live = most_live.max(s.a.conns.len());
        if i == 15_000 {
            late = w;
        }
    }
    assert!(most_live < 6_000, "{most_live} connections held at once");
    let an = s.analysis();
    assert!(an.retired.connections > 10_000, "{:?}", an.retired);
    assert!(
        an.verdicts.len() < 6_000 + 300,
        "{} verdicts",
        an.verdicts.len()
    );
    let kept = an
        .verdicts
        .iter()
        .find(|v| v.conn == bad && v.scope == Scope::Connection)
        .expect("the stall of a retired connection is kept");
    assert_kind(kept, VerdictKind::ConnectionClosedByBroker);
    assert!(an
        .causes
        .iter()
        .any(|c| c.text.contains("CONNECTION_FORCED")));
    // A late packet of a recently retired connection opens nothing.
    assert!(!s.a.by_conn.contains_key(&late), "retired by now");
    let before = s.a.conns.len();
    s.event(late, Dir::C2S, EventKind::TcpReset);
    assert_eq!(s.a.conns.len(), before);
}
