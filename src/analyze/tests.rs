//! Unit tests of the analyzer: events built in code, at least one test per
//! verdict path, and no stall verdict on a healthy consumer.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::event::{
    ContentHeader, Dir, EventKind, Frame, GapReason, Heartbeat, Method, MethodArgs, MethodKind,
    Properties,
};

const BROKER: &str = "127.0.0.1:5672";

fn conn(port: u16) -> Conn {
    Conn {
        client: SocketAddr::from(([127, 0, 0, 1], port)),
        broker: BROKER.parse().expect("literal address"),
    }
}

/// Drives an analyzer with events at a settable time, numbering packets.
struct Sim {
    a: Analyzer,
    frame: u64,
    now: Timestamp,
}

const T0: i64 = 1_764_000_000_000_000_000;

impl Sim {
    fn new() -> Self {
        Sim::with(AnalyzerConfig::default())
    }
    fn with(cfg: AnalyzerConfig) -> Self {
        Sim {
            a: Analyzer::new(cfg),
            frame: 0,
            now: Timestamp(T0),
        }
    }
    /// Sets the clock to `s` seconds after the start.
    fn at(&mut self, s: f64) -> &mut Self {
        self.now = Timestamp(T0 + (s * 1e9) as i64);
        self
    }
    fn event(&mut self, c: Conn, dir: Dir, kind: EventKind) -> u64 {
        self.frame += 1;
        let ev = Event {
            frame: self.frame,
            file: 0,
            ts: self.now,
            conn: c,
            dir,
            kind,
        };
        self.a.handle(&ev);
        self.frame
    }
    fn method(&mut self, c: Conn, dir: Dir, ch: u16, m: MethodKind, args: MethodArgs) -> u64 {
        let frame = Frame::Method(Box::new(Method { method: m, args }));
        self.event(c, dir, EventKind::Frame { channel: ch, frame })
    }
    fn handshake(&mut self, c: Conn, heartbeat: u16) {
        self.event(c, Dir::C2S, EventKind::TcpOpen);
        self.method(
            c,
            Dir::S2C,
            0,
            MethodKind::ConnectionStart,
            MethodArgs::default(),
        );
        self.method(
            c,
            Dir::C2S,
            0,
            MethodKind::ConnectionStartOk,
            MethodArgs {
                product: Some("test-client".into()),
                ..Default::default()
            },
        );
        self.method(
            c,
            Dir::S2C,
            0,
            MethodKind::ConnectionTune,
            MethodArgs {
                heartbeat: Some(60),
                ..Default::default()
            },
        );
        self.method(
            c,
            Dir::C2S,
            0,
            MethodKind::ConnectionTuneOk,
            MethodArgs {
                heartbeat: Some(heartbeat),
                ..Default::default()
            },
        );
        self.method(
            c,
            Dir::C2S,
            0,
            MethodKind::ConnectionOpen,
            MethodArgs {
                vhost: Some("/".into()),
                ..Default::default()
            },
        );
        self.method(
            c,
            Dir::S2C,
            0,
            MethodKind::ConnectionOpenOk,
            MethodArgs::default(),
        );
    }
    fn channel(&mut self, c: Conn, ch: u16) {
        self.method(
            c,
            Dir::C2S,
            ch,
            MethodKind::ChannelOpen,
            MethodArgs::default(),
        );
        self.method(
            c,
            Dir::S2C,
            ch,
            MethodKind::ChannelOpenOk,
            MethodArgs::default(),
        );
    }
    fn qos(&mut self, c: Conn, ch: u16, n: u16, global: bool) -> u64 {
        self.method(
            c,
            Dir::C2S,
            ch,
            MethodKind::BasicQos,
            MethodArgs {
                prefetch_count: Some(n),
                global: Some(global),
                ..Default::default()
            },
        )
    }
    fn declare(&mut self, c: Conn, ch: u16, q: &str) {
        let args = MethodArgs {
            queue: Some(q.into()),
            ..Default::default()
        };
        self.method(c, Dir::C2S, ch, MethodKind::QueueDeclare, args.clone());
        self.method(
            c,
            Dir::S2C,
            ch,
            MethodKind::QueueDeclareOk,
            MethodArgs {
                message_count: Some(0),
                consumer_count: Some(0),
                ..args
            },
        );
    }
    fn consume_only(&mut self, c: Conn, ch: u16, q: &str, tag: &str) -> u64 {
        self.method(
            c,
            Dir::C2S,
            ch,
            MethodKind::BasicConsume,
            MethodArgs {
                queue: Some(q.into()),
                consumer_tag: Some(tag.into()),
                no_ack: Some(false),
                ..Default::default()
            },
        )
    }
    fn consume(&mut self, c: Conn, ch: u16, q: &str, tag: &str) -> u64 {
        self.consume_only(c, ch, q, tag);
        self.method(
            c,
            Dir::S2C,
            ch,
            MethodKind::BasicConsumeOk,
            MethodArgs {
                consumer_tag: Some(tag.into()),
                ..Default::default()
            },
        )
    }
    fn deliver(
        &mut self,
        c: Conn,
        ch: u16,
        tag: &str,
        dtag: u64,
        redelivered: bool,
        id: Option<&str>,
    ) -> u64 {
        let f = self.method(
            c,
            Dir::S2C,
            ch,
            MethodKind::BasicDeliver,
            MethodArgs {
                consumer_tag: Some(tag.into()),
                delivery_tag: Some(dtag),
                redelivered: Some(redelivered),
                exchange: Some("".into()),
                routing_key: Some("q".into()),
                ..Default::default()
            },
        );
        let header = ContentHeader {
            class_id: 60,
            body_size: 10,
            properties: Properties {
                message_id: id.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        };
        self.event(
            c,
            Dir::S2C,
            EventKind::Frame {
                channel: ch,
                frame: Frame::ContentHeader(Box::new(header)),
            },
        );
        f
    }
    fn ack(&mut self, c: Conn, ch: u16, dtag: u64, multiple: bool) -> u64 {
        self.method(
            c,
            Dir::C2S,
            ch,
            MethodKind::BasicAck,
            MethodArgs {
                delivery_tag: Some(dtag),
                multiple: Some(multiple),
                ..Default::default()
            },
        )
    }
    fn nack(&mut self, c: Conn, ch: u16, dtag: u64, requeue: bool) -> u64 {
        self.method(
            c,
            Dir::C2S,
            ch,
            MethodKind::BasicNack,
            MethodArgs {
                delivery_tag: Some(dtag),
                multiple: Some(false),
                requeue: Some(requeue),
                ..Default::default()
            },
        )
    }
    fn publish(&mut self, c: Conn, ch: u16, x: &str, rk: &str) -> u64 {
        self.method(
            c,
            Dir::C2S,
            ch,
            MethodKind::BasicPublish,
            MethodArgs {
                exchange: Some(x.into()),
                routing_key: Some(rk.into()),
                ..Default::default()
            },
        )
    }
    fn heartbeat(&mut self, c: Conn, dir: Dir) {
        self.event(
            c,
            dir,
            EventKind::Frame {
                channel: 0,
                frame: Frame::Heartbeat(Heartbeat),
            },
        );
    }
    fn close_conn_by_client(&mut self, c: Conn) {
        self.method(
            c,
            Dir::C2S,
            0,
            MethodKind::ConnectionClose,
            MethodArgs {
                reply_code: Some(200),
                reply_text: Some("Normal shutdown".into()),
                ..Default::default()
            },
        );
        self.method(
            c,
            Dir::S2C,
            0,
            MethodKind::ConnectionCloseOk,
            MethodArgs::default(),
        );
        self.event(c, Dir::C2S, EventKind::TcpClose);
    }
    /// channel.close (channel > 0) or connection.close (channel 0) from `dir`.
    fn close(&mut self, c: Conn, dir: Dir, ch: u16, code: u16, text: &str) -> u64 {
        let m = if ch == 0 {
            MethodKind::ConnectionClose
        } else {
            MethodKind::ChannelClose
        };
        self.method(
            c,
            dir,
            ch,
            m,
            MethodArgs {
                reply_code: Some(code),
                reply_text: Some(text.into()),
                ..Default::default()
            },
        )
    }
    /// basic.cancel from the client and the broker's cancel-ok.
    fn cancel(&mut self, c: Conn, ch: u16, tag: &str) {
        let args = MethodArgs {
            consumer_tag: Some(tag.into()),
            ..Default::default()
        };
        self.method(c, Dir::C2S, ch, MethodKind::BasicCancel, args.clone());
        self.method(c, Dir::S2C, ch, MethodKind::BasicCancelOk, args);
    }
    fn exchange(&mut self, c: Conn, ch: u16, x: &str, kind: &str) {
        let args = MethodArgs {
            exchange: Some(x.into()),
            exchange_type: Some(kind.into()),
            ..Default::default()
        };
        self.method(c, Dir::C2S, ch, MethodKind::ExchangeDeclare, args);
    }
    fn bind(&mut self, c: Conn, ch: u16, q: &str, x: &str, key: &str) {
        let args = MethodArgs {
            queue: Some(q.into()),
            exchange: Some(x.into()),
            routing_key: Some(key.into()),
            ..Default::default()
        };
        self.method(c, Dir::C2S, ch, MethodKind::QueueBind, args);
    }
    fn analysis(&self) -> Analysis {
        self.a.analysis(self.now)
    }
}

fn consumer_verdict<'a>(an: &'a Analysis, tag: &str) -> &'a Verdict {
    an.verdicts
        .iter()
        .find(|v| v.scope == Scope::Consumer && v.consumer_tag.as_deref() == Some(tag))
        .unwrap_or_else(|| panic!("no verdict for consumer {tag}: {:#?}", an.verdicts))
}

fn conn_verdict(an: &Analysis, c: Conn) -> &Verdict {
    an.verdicts
        .iter()
        .find(|v| v.scope == Scope::Connection && v.conn == c)
        .unwrap_or_else(|| panic!("no verdict for connection {c}: {:#?}", an.verdicts))
}

fn channel_verdict(an: &Analysis, c: Conn, ch: u16) -> &Verdict {
    an.verdicts
        .iter()
        .find(|v| v.scope == Scope::Channel && v.conn == c && v.channel == Some(ch))
        .unwrap_or_else(|| panic!("no verdict for channel {ch}: {:#?}", an.verdicts))
}

/// A worker (prefetch `prefetch`) on queue `q` with tag `tag` on channel 1 of `c`.
fn worker(s: &mut Sim, c: Conn, q: &str, tag: &str, prefetch: u16) {
    s.handshake(c, 60);
    s.channel(c, 1);
    s.declare(c, 1, q);
    s.qos(c, 1, prefetch, false);
    s.consume(c, 1, q, tag);
}

#[test]
fn healthy_consumer_and_connections_have_no_stall() {
    let mut s = Sim::new();
    let (p, w) = (conn(1000), conn(1001));
    worker(&mut s, w, "jobs", "w1", 10);
    s.handshake(p, 60);
    s.channel(p, 1);
    for i in 1..=50u64 {
        s.at(i as f64 * 0.1);
        s.publish(p, 1, "", "jobs");
        s.deliver(w, 1, "w1", i, false, None);
        s.at(i as f64 * 0.1 + 0.002);
        s.ack(w, 1, i, false);
    }
    s.at(60.0);
    s.heartbeat(w, Dir::C2S);
    let an = s.analysis();
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
    let v = consumer_verdict(&an, "w1");
    assert_eq!(v.verdict, VerdictKind::Healthy);
    assert_eq!(v.certainty, Certainty::Certain);
    assert!(v.explanation.contains("50 deliveries"), "{}", v.explanation);
    assert_eq!(conn_verdict(&an, p).verdict, VerdictKind::Healthy);
    assert_eq!(an.consumers[0].latency.as_ref().map(|l| l.count), Some(50));
    assert_eq!(an.verdicts.len(), 3);
}

#[test]
fn slow_acks_that_keep_coming_are_slow_but_healthy() {
    let mut s = Sim::new();
    let w = conn(1002);
    worker(&mut s, w, "slow", "sw", 1);
    for i in 1..=10u64 {
        let t0 = i as f64 * 2.0;
        s.at(t0);
        s.deliver(w, 1, "sw", i, false, None);
        s.at(t0 + 1.5);
        s.ack(w, 1, i, false);
    }
    let an = s.analysis();
    let v = consumer_verdict(&an, "sw");
    assert_eq!(v.verdict, VerdictKind::SlowButHealthy, "{}", v.explanation);
    assert!(!v.verdict.is_stall());
    assert!(v.explanation.contains("p95"), "{}", v.explanation);
    assert!(v.since.is_some() && v.frame.is_some());
}

#[test]
fn full_prefetch_window_without_settle_is_prefetch_exhausted_once_certain() {
    let mut s = Sim::new();
    let w = conn(1003);
    worker(&mut s, w, "pq", "stuck", 3);
    s.at(1.0);
    s.deliver(w, 1, "stuck", 1, false, None);
    s.deliver(w, 1, "stuck", 2, false, None);
    let filled = s.deliver(w, 1, "stuck", 3, false, None);
    // 2 s later, nothing to compare with: the stall, uncertain, with how long so far.
    s.at(3.0);
    s.heartbeat(w, Dir::S2C);
    let an = s.analysis();
    let v = consumer_verdict(&an, "stuck");
    assert_eq!(
        v.verdict,
        VerdictKind::PrefetchExhausted,
        "{}",
        v.explanation
    );
    assert_eq!(v.certainty, Certainty::Uncertain);
    assert!(
        v.explanation.contains("duration unknown") && v.explanation.contains("2.00 s"),
        "{}",
        v.explanation
    );
    assert!(an.has_stall(), "an uncertain stall still exits 1");
    // 7 s later: certain by time, at the end of a capture and live alike.
    s.at(8.0);
    s.heartbeat(w, Dir::S2C);
    let an = s.analysis();
    let v = consumer_verdict(&an, "stuck");
    assert_eq!(
        v.verdict,
        VerdictKind::PrefetchExhausted,
        "{}",
        v.explanation
    );
    assert_eq!(v.certainty, Certainty::Certain);
    assert_eq!(v.frame, Some(filled));
    assert!(v.explanation.contains("1, 2, 3"), "{}", v.explanation);
    assert!(v.explanation.contains("'pq'"), "{}", v.explanation);
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
    assert_eq!(lv.verdict, VerdictKind::PrefetchExhausted);
    assert_eq!(lv.certainty, Certainty::Certain);
    assert!(lv.explanation.contains("so far"), "{}", lv.explanation);
    // A settle empties the verdict.
    s.ack(w, 1, 0, true);
    assert_eq!(
        consumer_verdict(&s.analysis(), "stuck").verdict,
        VerdictKind::SlowButHealthy
    );
}

#[test]
fn global_qos_window_is_shared_by_the_channel() {
    let mut s = Sim::new();
    let w = conn(1004);
    s.handshake(w, 60);
    s.channel(w, 1);
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
        assert_eq!(
            v.verdict,
            VerdictKind::PrefetchExhausted,
            "{}",
            v.explanation
        );
        assert!(v.explanation.contains("channel-wide"), "{}", v.explanation);
    }
}

#[test]
fn qos_after_consume_does_not_limit_that_consumer() {
    let mut s = Sim::new();
    let w = conn(1005);
    s.handshake(w, 60);
    s.channel(w, 1);
    s.consume(w, 1, "a", "early");
    s.qos(w, 1, 1, false);
    s.deliver(w, 1, "early", 1, false, None);
    s.at(20.0);
    assert_eq!(
        consumer_verdict(&s.analysis(), "early").verdict,
        VerdictKind::Healthy
    );
}

#[test]
fn multiple_ack_settles_every_tag_up_to_it() {
    let mut s = Sim::new();
    let w = conn(1006);
    worker(&mut s, w, "m", "mc", 100);
    for i in 1..=10 {
        s.deliver(w, 1, "mc", i, false, None);
    }
    s.ack(w, 1, 4, false);
    s.ack(w, 1, 7, true);
    let an = s.analysis();
    assert_eq!(an.consumers[0].unacked, 3);
    assert_eq!(an.consumers[0].acks, 7);
    assert_eq!(
        s.a.unacked_of(0)
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    s.ack(w, 1, 0, true);
    assert_eq!(s.analysis().consumers[0].unacked, 0);
}

#[test]
fn publishes_to_another_queue_are_no_messages_routed_to_queue() {
    let mut s = Sim::new();
    let (p, w) = (conn(1007), conn(1008));
    s.handshake(p, 60);
    s.channel(p, 1);
    s.declare(p, 1, "task");
    worker(&mut s, w, "tasks", "tw", 10);
    s.at(1.0);
    let first = s.publish(p, 1, "", "task");
    s.at(2.0);
    s.publish(p, 1, "", "task");
    s.at(10.0);
    s.heartbeat(w, Dir::S2C);
    let an = s.analysis();
    let v = consumer_verdict(&an, "tw");
    assert_eq!(
        v.verdict,
        VerdictKind::NoMessagesRoutedToQueue,
        "{}",
        v.explanation
    );
    assert_eq!(v.frame, Some(first));
    assert!(
        v.explanation.contains("routing key 'task'"),
        "{}",
        v.explanation
    );
    assert!(v.explanation.contains("'tasks'"), "{}", v.explanation);
    let publish = v
        .evidence
        .iter()
        .find(|e| e.method == "basic.publish")
        .expect("publish evidence");
    assert_eq!(publish.conn, Some(p));
    assert_eq!(conn_verdict(&an, w).verdict, VerdictKind::Healthy);
}

#[test]
fn named_exchange_without_matching_binding_is_explained() {
    let mut s = Sim::new();
    let (p, w) = (conn(1009), conn(1010));
    worker(&mut s, w, "orders", "ow", 10);
    s.method(
        w,
        Dir::C2S,
        1,
        MethodKind::QueueBind,
        MethodArgs {
            queue: Some("orders".into()),
            exchange: Some("shop".into()),
            routing_key: Some("order.created".into()),
            ..Default::default()
        },
    );
    s.handshake(p, 60);
    s.channel(p, 1);
    s.at(1.0);
    s.publish(p, 1, "shop", "order.paid");
    s.at(9.0);
    let v = consumer_verdict(&s.analysis(), "ow").clone();
    assert_eq!(v.verdict, VerdictKind::NoMessagesRoutedToQueue);
    assert!(
        v.explanation.contains("only with key(s) 'order.created'"),
        "{}",
        v.explanation
    );
}

#[test]
fn no_publisher_at_all_is_said() {
    let mut s = Sim::new();
    let w = conn(1011);
    let ok = {
        s.handshake(w, 60);
        s.channel(w, 1);
        s.consume(w, 1, "idle", "iw")
    };
    s.at(60.0);
    let v = consumer_verdict(&s.analysis(), "iw").clone();
    assert_eq!(v.verdict, VerdictKind::Idle, "{}", v.explanation);
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
    let mut s = Sim::new();
    let (p, w1, w2) = (conn(1012), conn(1013), conn(1014));
    worker(&mut s, w1, "default", "main", 10);
    worker(&mut s, w2, "default.DQ", "delay", 10);
    s.handshake(p, 60);
    s.channel(p, 1);
    s.at(1.0);
    s.publish(p, 1, "", "default");
    s.deliver(w1, 1, "main", 1, false, None);
    s.ack(w1, 1, 1, false);
    s.at(30.0);
    let an = s.analysis();
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
}

#[test]
fn connection_that_never_consumes_is_no_consume() {
    let mut s = Sim::new();
    let w = conn(1015);
    s.handshake(w, 60);
    s.channel(w, 1);
    s.declare(w, 1, "q1");
    let last = s.qos(w, 1, 5, false);
    s.at(40.0);
    s.heartbeat(w, Dir::C2S);
    let an = s.analysis();
    let v = conn_verdict(&an, w);
    assert_eq!(v.verdict, VerdictKind::NoConsume, "{}", v.explanation);
    assert_eq!(v.frame, Some(last));
    assert!(
        v.explanation.contains("queue.declare x1"),
        "{}",
        v.explanation
    );
    assert!(v.explanation.contains("'q1'"), "{}", v.explanation);
}

#[test]
fn consume_without_consume_ok_is_consume_not_confirmed() {
    let mut s = Sim::new();
    let w = conn(1016);
    s.handshake(w, 60);
    s.channel(w, 1);
    let f = s.consume_only(w, 1, "q", "nc");
    s.at(10.0);
    let v = consumer_verdict(&s.analysis(), "nc").clone();
    assert_eq!(v.verdict, VerdictKind::ConsumeNotConfirmed);
    assert_eq!(v.frame, Some(f));
}

#[test]
fn broker_channel_close_on_consume_is_channel_closed_by_broker() {
    let mut s = Sim::new();
    let w = conn(1017);
    s.handshake(w, 60);
    s.channel(w, 1);
    s.consume_only(w, 1, "missing", "orphan");
    let close = s.method(
        w,
        Dir::S2C,
        1,
        MethodKind::ChannelClose,
        MethodArgs {
            reply_code: Some(404),
            reply_text: Some("NOT_FOUND - no queue 'missing' in vhost '/'".into()),
            class_id: Some(60),
            method_id: Some(20),
            failing_method: Some(MethodKind::BasicConsume),
            ..Default::default()
        },
    );
    s.method(
        w,
        Dir::C2S,
        1,
        MethodKind::ChannelCloseOk,
        MethodArgs::default(),
    );
    s.at(10.0);
    let an = s.analysis();
    let ch = channel_verdict(&an, w, 1);
    assert_eq!(ch.verdict, VerdictKind::ChannelClosedByBroker);
    assert_eq!(ch.frame, Some(close));
    assert_eq!(ch.consumer_tag.as_deref(), Some("orphan"));
    assert_eq!(ch.queue.as_deref(), Some("missing"));
    assert!(
        ch.explanation.contains("404 NOT_FOUND"),
        "{}",
        ch.explanation
    );
    assert!(
        ch.explanation.contains("basic.consume"),
        "{}",
        ch.explanation
    );
    assert_eq!(
        consumer_verdict(&an, "orphan").verdict,
        VerdictKind::ChannelClosedByBroker
    );
    assert_eq!(conn_verdict(&an, w).verdict, VerdictKind::Healthy);
}

#[test]
fn ack_timeout_names_the_held_delivery() {
    let mut s = Sim::new();
    let w = conn(1018);
    worker(&mut s, w, "slowq", "holder", 10);
    s.at(1.0);
    s.deliver(w, 1, "holder", 1, false, None);
    s.at(7.0);
    let close = s.method(
        w,
        Dir::S2C,
        1,
        MethodKind::ChannelClose,
        MethodArgs {
            reply_code: Some(406),
            reply_text: Some(
                "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 5000 ms"
                    .into(),
            ),
            ..Default::default()
        },
    );
    let an = s.analysis();
    let ch = channel_verdict(&an, w, 1);
    assert_eq!(ch.verdict, VerdictKind::AckTimeout);
    assert_eq!(ch.frame, Some(close));
    assert!(
        ch.explanation.contains("delivery tag 1"),
        "{}",
        ch.explanation
    );
    assert!(ch.explanation.contains("6.00 s"), "{}", ch.explanation);
    assert_eq!(
        consumer_verdict(&an, "holder").verdict,
        VerdictKind::AckTimeout
    );
}

#[test]
fn broker_connection_close_is_connection_closed_by_broker() {
    let mut s = Sim::new();
    let w = conn(1019);
    worker(&mut s, w, "q", "cw", 10);
    s.at(2.0);
    let f = s.method(
        w,
        Dir::S2C,
        0,
        MethodKind::ConnectionClose,
        MethodArgs {
            reply_code: Some(320),
            reply_text: Some(
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
                    .into(),
            ),
            ..Default::default()
        },
    );
    let an = s.analysis();
    let v = conn_verdict(&an, w);
    assert_eq!(v.verdict, VerdictKind::ConnectionClosedByBroker);
    assert_eq!(v.frame, Some(f));
    assert!(v.explanation.contains("320 CONNECTION_FORCED"));
    assert_eq!(
        consumer_verdict(&an, "cw").verdict,
        VerdictKind::ConnectionClosedByBroker
    );
}

#[test]
fn blocked_connection_is_connection_blocked_even_when_lifted() {
    let mut s = Sim::new();
    let p = conn(1020);
    s.handshake(p, 60);
    s.channel(p, 1);
    s.publish(p, 1, "", "q");
    s.at(1.0);
    let f = s.method(
        p,
        Dir::S2C,
        0,
        MethodKind::ConnectionBlocked,
        MethodArgs {
            reason: Some("low on memory".into()),
            ..Default::default()
        },
    );
    s.at(3.0);
    let v = conn_verdict(&s.analysis(), p).clone();
    assert_eq!(v.verdict, VerdictKind::ConnectionBlocked);
    assert!(v.explanation.contains("low on memory"));
    assert_eq!(v.frame, Some(f));
    s.method(
        p,
        Dir::S2C,
        0,
        MethodKind::ConnectionUnblocked,
        MethodArgs::default(),
    );
    let v = conn_verdict(&s.analysis(), p).clone();
    assert_eq!(v.verdict, VerdictKind::ConnectionBlocked);
    assert!(v.explanation.contains("2.00 s"), "{}", v.explanation);
}

#[test]
fn channel_flow_pause_is_channel_flow_paused() {
    let mut s = Sim::new();
    let p = conn(1021);
    s.handshake(p, 60);
    s.channel(p, 1);
    let f = s.method(
        p,
        Dir::S2C,
        1,
        MethodKind::ChannelFlow,
        MethodArgs {
            active: Some(false),
            ..Default::default()
        },
    );
    s.at(5.0);
    let an = s.analysis();
    let v = channel_verdict(&an, p, 1);
    assert_eq!(v.verdict, VerdictKind::ChannelFlowPaused);
    assert_eq!(v.frame, Some(f));
    s.method(
        p,
        Dir::S2C,
        1,
        MethodKind::ChannelFlow,
        MethodArgs {
            active: Some(true),
            ..Default::default()
        },
    );
    assert!(!s
        .analysis()
        .verdicts
        .iter()
        .any(|v| v.scope == Scope::Channel));
}

#[test]
fn silent_client_then_reset_is_heartbeat_timeout() {
    let mut s = Sim::new();
    let w = conn(1022);
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
    assert_eq!(
        v.verdict,
        VerdictKind::HeartbeatTimeout,
        "{}",
        v.explanation
    );
    assert_eq!(v.frame, Some(rst));
    assert!(v.explanation.contains("heartbeat 2 s"), "{}", v.explanation);
    let c = consumer_verdict(&an, "frozen");
    assert_eq!(c.verdict, VerdictKind::HeartbeatTimeout);
    assert_eq!(c.frame, Some(rst));
}

#[test]
fn reset_with_a_live_consumer_is_connection_lost() {
    let mut s = Sim::new();
    let w = conn(1023);
    worker(&mut s, w, "q", "lw", 10);
    s.deliver(w, 1, "lw", 1, false, None);
    s.at(0.5);
    let f = s.event(w, Dir::C2S, EventKind::TcpReset);
    let an = s.analysis();
    assert_eq!(conn_verdict(&an, w).verdict, VerdictKind::ConnectionLost);
    assert_eq!(conn_verdict(&an, w).frame, Some(f));
    assert_eq!(
        consumer_verdict(&an, "lw").verdict,
        VerdictKind::ConnectionLost
    );
}

#[test]
fn client_fin_with_nothing_in_flight_is_a_quiet_exit() {
    let mut s = Sim::new();
    let p = conn(1024);
    s.handshake(p, 60);
    s.channel(p, 1);
    s.publish(p, 1, "", "q");
    s.event(p, Dir::C2S, EventKind::TcpClose);
    let v = conn_verdict(&s.analysis(), p).clone();
    assert_eq!(v.verdict, VerdictKind::Healthy);
    assert!(
        v.explanation.contains("without connection.close"),
        "{}",
        v.explanation
    );
}

#[test]
fn broker_cancel_after_queue_delete_is_consumer_cancelled_by_broker() {
    let mut s = Sim::new();
    let (p, w) = (conn(1025), conn(1026));
    worker(&mut s, w, "gone", "oc", 10);
    s.handshake(p, 60);
    s.channel(p, 1);
    s.at(1.0);
    let del = s.method(
        p,
        Dir::C2S,
        1,
        MethodKind::QueueDelete,
        MethodArgs {
            queue: Some("gone".into()),
            ..Default::default()
        },
    );
    let cancel = s.method(
        w,
        Dir::S2C,
        1,
        MethodKind::BasicCancel,
        MethodArgs {
            consumer_tag: Some("oc".into()),
            ..Default::default()
        },
    );
    let an = s.analysis();
    let v = consumer_verdict(&an, "oc");
    assert_eq!(v.verdict, VerdictKind::ConsumerCancelledByBroker);
    assert_eq!(v.frame, Some(cancel));
    assert!(
        v.explanation.contains(&format!("frame {del}")),
        "{}",
        v.explanation
    );
    assert!(v
        .evidence
        .iter()
        .any(|e| e.method == "queue.delete" && e.conn == Some(p)));
}

#[test]
fn same_message_nacked_and_redelivered_is_a_redelivery_loop() {
    let mut s = Sim::new();
    let w = conn(1027);
    worker(&mut s, w, "loop", "nk", 1);
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
    assert_eq!(v.verdict, VerdictKind::RedeliveryLoop, "{}", v.explanation);
    assert_eq!(v.frame, Some(third));
    assert!(v.explanation.contains("msg-0"), "{}", v.explanation);
    assert!(v.explanation.contains("5 times"), "{}", v.explanation);
    assert!(v.explanation.contains("5 nack/reject"), "{}", v.explanation);
}

#[test]
fn a_retry_that_succeeds_is_not_a_loop() {
    let mut s = Sim::new();
    let w = conn(1028);
    worker(&mut s, w, "retry", "rt", 1);
    s.deliver(w, 1, "rt", 1, false, Some("m"));
    s.nack(w, 1, 1, true);
    s.deliver(w, 1, "rt", 2, true, Some("m"));
    s.ack(w, 1, 2, false);
    assert_eq!(
        consumer_verdict(&s.analysis(), "rt").verdict,
        VerdictKind::Healthy
    );
}

#[test]
fn mid_connection_start_is_capture_incomplete_but_acking_consumer_is_healthy() {
    let mut s = Sim::new();
    let w = conn(1029);
    let first = s.event(
        w,
        Dir::S2C,
        EventKind::Gap {
            bytes: None,
            reason: GapReason::MidConnection,
        },
    );
    for i in 100..110 {
        s.deliver(w, 1, "early", i, false, None);
        s.ack(w, 1, i, false);
    }
    s.at(20.0);
    let an = s.analysis();
    let v = conn_verdict(&an, w);
    assert_eq!(v.verdict, VerdictKind::CaptureIncomplete);
    assert_eq!(v.frame, Some(first));
    assert!(
        v.explanation.contains("mid-connection"),
        "{}",
        v.explanation
    );
    let c = consumer_verdict(&an, "early");
    assert_eq!(c.verdict, VerdictKind::Healthy, "{}", c.explanation);
    assert_eq!(c.queue, None);
}

#[test]
fn unknown_prefetch_with_stuck_deliveries_is_capture_incomplete() {
    let mut s = Sim::new();
    let w = conn(1030);
    s.event(
        w,
        Dir::S2C,
        EventKind::Gap {
            bytes: None,
            reason: GapReason::MidConnection,
        },
    );
    s.deliver(w, 1, "x", 7, false, None);
    s.at(20.0);
    let c = consumer_verdict(&s.analysis(), "x").clone();
    assert_eq!(
        c.verdict,
        VerdictKind::CaptureIncomplete,
        "{}",
        c.explanation
    );
}

#[test]
fn every_verdict_name_is_snake_case_and_severity_orders_the_block() {
    for k in VerdictKind::ALL {
        let json = serde_json::to_string(k).expect("serialise");
        assert_eq!(json, format!("\"{}\"", k.name()));
        assert_eq!(
            k.is_stall(),
            !matches!(
                k,
                VerdictKind::Healthy | VerdictKind::Idle | VerdictKind::SlowButHealthy
            )
        );
    }
    assert_eq!(VerdictKind::ALL.len(), 17);
    assert!(VerdictKind::ConnectionLost.severity() > VerdictKind::PrefetchExhausted.severity());
}

#[test]
fn json_document_and_text_block() {
    let mut s = Sim::with(AnalyzerConfig::default().with_stall_after(Duration::from_secs(2)));
    let w = conn(1031);
    worker(&mut s, w, "pq", "stuck", 1);
    s.deliver(w, 1, "stuck", 1, false, None);
    s.at(3.0);
    let an = s.analysis();
    assert_eq!(an.stall_after_s, 2.0);
    let doc: serde_json::Value = serde_json::to_value(&an).expect("serialise");
    assert_eq!(doc["schema"], "amqptrace.analysis/1");
    let v = &doc["verdicts"][0];
    assert_eq!(v["verdict"], "prefetch_exhausted");
    assert_eq!(v["scope"], "consumer");
    assert_eq!(v["conn"], "127.0.0.1:1031->127.0.0.1:5672");
    assert_eq!(v["queue"], "pq");
    assert_eq!(v["certainty"], "certain");
    assert_eq!(doc["horizon"], "last_packet");
    assert_eq!(doc["causes"][0]["verdict"], "prefetch_exhausted");
    assert_eq!(doc["causes"][0]["verdicts"], serde_json::json!([0]));
    assert!(v["since"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(v["evidence"][0]["frame"].is_u64());
    let healthy = doc["verdicts"][1].clone();
    assert_eq!(healthy["channel"], serde_json::Value::Null);
    assert_eq!(healthy["consumer_tag"], serde_json::Value::Null);
    let mut out = Vec::new();
    write_verdict_block(&an, &mut out).expect("write to a Vec");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "causes:");
    assert!(
        lines[1].starts_with("  - prefetch_exhausted: Consumer 'stuck' on queue 'pq'"),
        "{text}"
    );
    assert_eq!(lines[2], "verdicts:");
    assert!(
        lines[3].trim_start().starts_with("prefetch_exhausted"),
        "{text}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("healthy: 0 consumer(s), 1 connection(s)")),
        "{text}"
    );
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

/// Throughput check (run with `cargo test --release -- --ignored analyzer_throughput --nocapture`):
/// the publish/deliver/header/ack cycle of one message, events hot in cache as
/// they are when they come straight from the decoder.
#[test]
#[ignore]
fn analyzer_throughput() {
    let mut s = Sim::new();
    let (p, w) = (conn(3000), conn(3001));
    worker(&mut s, w, "jobs", "w1", 100);
    s.handshake(p, 60);
    s.channel(p, 1);
    let m = |k: MethodKind, args: MethodArgs| EventKind::Frame {
        channel: 1,
        frame: Frame::Method(Box::new(Method { method: k, args })),
    };
    let ev = |c: Conn, dir: Dir, kind: EventKind| Event {
        frame: 0,
        file: 0,
        ts: Timestamp(T0),
        conn: c,
        dir,
        kind,
    };
    let mut cycle = [
        ev(
            p,
            Dir::C2S,
            m(
                MethodKind::BasicPublish,
                MethodArgs {
                    exchange: Some("".into()),
                    routing_key: Some("jobs".into()),
                    ..Default::default()
                },
            ),
        ),
        ev(
            w,
            Dir::S2C,
            m(
                MethodKind::BasicDeliver,
                MethodArgs {
                    consumer_tag: Some("w1".into()),
                    delivery_tag: Some(1),
                    redelivered: Some(false),
                    exchange: Some("".into()),
                    routing_key: Some("jobs".into()),
                    ..Default::default()
                },
            ),
        ),
        ev(
            w,
            Dir::S2C,
            EventKind::Frame {
                channel: 1,
                frame: Frame::ContentHeader(Box::new(ContentHeader {
                    class_id: 60,
                    body_size: 10,
                    properties: Properties {
                        message_id: Some("m-000001".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                })),
            },
        ),
        ev(
            w,
            Dir::C2S,
            m(
                MethodKind::BasicAck,
                MethodArgs {
                    delivery_tag: Some(1),
                    multiple: Some(false),
                    ..Default::default()
                },
            ),
        ),
    ];
    let n = 500_000u64;
    let mut ts = T0;
    let start = std::time::Instant::now();
    for i in 1..=n {
        for (k, e) in cycle.iter_mut().enumerate() {
            ts += 10_000;
            e.ts = Timestamp(ts);
            e.frame = i * 4 + k as u64;
            if let EventKind::Frame {
                frame: Frame::Method(mm),
                ..
            } = &mut e.kind
            {
                if mm.args.delivery_tag.is_some() {
                    mm.args.delivery_tag = Some(i);
                }
            }
            s.a.handle(e);
        }
    }
    let el = start.elapsed();
    eprintln!(
        "{} events in {:?}: {:.0} ns/event",
        n * 4,
        el,
        el.as_nanos() as f64 / (n * 4) as f64
    );
    assert!(!s.a.analysis(Timestamp(ts)).has_stall());
}

// ------------------------------------------------------------ issue 11 rules

#[test]
fn full_window_while_peers_settle_is_certain_within_seconds() {
    let mut s = Sim::new();
    let (p, stuck, peer) = (conn(3000), conn(3001), conn(3002));
    worker(&mut s, stuck, "shared", "stuck", 3);
    worker(&mut s, peer, "shared", "peer", 3);
    s.handshake(p, 60);
    s.channel(p, 1);
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
    assert_eq!(
        v.verdict,
        VerdictKind::PrefetchExhausted,
        "{}",
        v.explanation
    );
    assert_eq!(v.certainty, Certainty::Certain, "{}", v.explanation);
    assert!(v.explanation.contains("kept settling"), "{}", v.explanation);
    // Live, within seconds too, and worded "so far".
    s.at(2.5);
    let live = s.a.live_analysis(Timestamp(T0 + 2_500_000_000));
    let lv = consumer_verdict(&live, "stuck");
    assert_eq!(lv.certainty, Certainty::Certain, "{}", lv.explanation);
    assert!(lv.explanation.contains("so far"), "{}", lv.explanation);
    assert_eq!(consumer_verdict(&an, "peer").verdict, VerdictKind::Healthy);
    assert_eq!(an.causes.len(), 1, "{:#?}", an.causes);
    assert!(
        an.causes[0].text.contains("kept settling"),
        "{}",
        an.causes[0].text
    );
}

#[test]
fn full_window_at_the_very_end_of_a_quiet_capture_is_an_uncertain_stall() {
    let mut s = Sim::new();
    let w = conn(3010);
    worker(&mut s, w, "quiet", "q5", 5);
    s.at(1.0);
    for t in 1..=5 {
        s.deliver(w, 1, "q5", t, false, None);
    }
    s.at(1.004);
    s.heartbeat(w, Dir::C2S);
    let an = s.analysis();
    let v = consumer_verdict(&an, "q5");
    assert_eq!(v.verdict, VerdictKind::PrefetchExhausted);
    assert_eq!(v.certainty, Certainty::Uncertain);
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
    let mut s = Sim::new();
    let w = conn(3020);
    worker(&mut s, w, "slowq", "slow1", 1);
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
    s.at(9.04 + 2.0);
    s.heartbeat(w, Dir::C2S);
    let an = s.analysis();
    let v = consumer_verdict(&an, "slow1");
    assert_eq!(v.verdict, VerdictKind::SlowButHealthy, "{}", v.explanation);
    assert!(!an.has_stall(), "{:#?}", an.verdicts);
}

/// The seed case: a worker on 'default' (and its Dramatiq delay queue) while
/// the sender's actor publishes to 'other'; the capture ends right after.
#[test]
fn misrouted_publish_is_certain_at_once_and_names_both_queues() {
    let mut s = Sim::new();
    let (p, w1, w2) = (conn(3030), conn(3031), conn(3032));
    worker(&mut s, w1, "default", "main", 4);
    worker(&mut s, w2, "default.DQ", "delay", 4);
    s.handshake(p, 60);
    s.channel(p, 1);
    s.declare(p, 1, "other");
    s.at(1.0);
    let first = s.publish(p, 1, "", "other");
    for _ in 0..9 {
        s.publish(p, 1, "", "other");
    }
    s.at(1.001);
    let an = s.analysis();
    let v = consumer_verdict(&an, "main");
    assert_eq!(
        v.verdict,
        VerdictKind::NoMessagesRoutedToQueue,
        "{}",
        v.explanation
    );
    assert_eq!(v.certainty, Certainty::Certain);
    assert_eq!(v.frame, Some(first));
    assert!(
        v.explanation.contains("'other'") && v.explanation.contains("which no consumer here reads")
    );
    let d = consumer_verdict(&an, "delay");
    assert_eq!(d.verdict, VerdictKind::Idle, "{}", d.explanation);
    assert!(d.explanation.contains("delay queue"), "{}", d.explanation);
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
    s.handshake(p, 60);
    s.channel(p, 1);
    s.at(1.0);
    s.publish(p, 1, "b", "b");
    s.at(6.0);
    let an = s.analysis();
    let v = consumer_verdict(&an, "work");
    assert_eq!(
        v.verdict,
        VerdictKind::NoMessagesRoutedToQueue,
        "{}",
        v.explanation
    );
    assert!(v.explanation.contains("exchange 'b'"), "{}", v.explanation);
    let c = consumer_verdict(&an, "ctl");
    assert_eq!(c.verdict, VerdictKind::Idle, "{}", c.explanation);
    assert!(c.explanation.contains("pidbox"), "{}", c.explanation);
}

#[test]
fn helper_connection_declaring_queues_consumed_elsewhere_is_healthy() {
    let mut s = Sim::new();
    let (helper, w) = (conn(3050), conn(3051));
    s.handshake(helper, 60);
    s.channel(helper, 1);
    for q in ["default", "default.DQ", "default.XQ"] {
        s.declare(helper, 1, q);
    }
    worker(&mut s, w, "default", "main", 4);
    s.at(40.0);
    s.heartbeat(helper, Dir::C2S);
    let an = s.analysis();
    let v = conn_verdict(&an, helper);
    assert_eq!(v.verdict, VerdictKind::Healthy, "{}", v.explanation);
    // A connection that set a prefetch and never consumed meant to: no_consume.
    let mut s = Sim::new();
    let lone = conn(3052);
    s.handshake(lone, 60);
    s.channel(lone, 1);
    s.qos(lone, 1, 5, false);
    s.at(2.0);
    s.heartbeat(lone, Dir::C2S);
    let v = conn_verdict(&s.analysis(), lone).clone();
    assert_eq!(v.verdict, VerdictKind::NoConsume, "{}", v.explanation);
    assert_eq!(v.certainty, Certainty::Uncertain);
    s.at(8.0);
    s.heartbeat(lone, Dir::C2S);
    assert_eq!(
        conn_verdict(&s.analysis(), lone).certainty,
        Certainty::Certain
    );
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
    s.handshake(p, 60);
    s.channel(p, 1);
    s.at(2.0);
    s.publish(p, 1, "", "elsewhere");
    s.at(10.0);
    let an = s.analysis();
    let v = consumer_verdict(&an, "gone");
    assert_eq!(v.verdict, VerdictKind::Idle, "{}", v.explanation);
    assert!(!v.explanation.contains("-1"), "{}", v.explanation);
    assert_eq!(an.consumers[0].channel_prefetch_count, None);
}

#[test]
fn channel_prefetch_survives_the_channel_in_the_summary() {
    let mut s = Sim::new();
    let w = conn(3070);
    s.handshake(w, 60);
    s.channel(w, 1);
    s.qos(w, 1, 9, true);
    s.consume(w, 1, "g", "gtag");
    s.close(w, Dir::C2S, 1, 200, "");
    assert_eq!(s.analysis().consumers[0].channel_prefetch_count, Some(9));
}

#[test]
fn close_without_code_or_text_is_worded() {
    let mut s = Sim::new();
    let w = conn(3080);
    s.handshake(w, 60);
    s.close(w, Dir::C2S, 0, 0, "");
    let v = conn_verdict(&s.analysis(), w).clone();
    assert!(!v.explanation.contains("(0 )"), "{}", v.explanation);
    assert!(
        v.explanation.contains("without a reply code"),
        "{}",
        v.explanation
    );
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

#[test]
fn redelivery_loop_since_is_the_earliest_third_delivery() {
    let mut s = Sim::new();
    let w = conn(3100);
    worker(&mut s, w, "loopq", "nk", 10);
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
    let v = consumer_verdict(&s.analysis(), "nk").clone();
    assert_eq!(v.verdict, VerdictKind::RedeliveryLoop, "{}", v.explanation);
    assert_eq!(v.frame, Some(third_of_a));
    assert!(v.explanation.contains("'b'"), "{}", v.explanation);
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
    assert_eq!(kept.verdict, VerdictKind::ConnectionClosedByBroker);
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
