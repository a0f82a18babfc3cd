//! Unit tests of the analyzer: events built in code, at least one test per
//! verdict path, and no stall verdict on a healthy consumer. This file holds
//! the harness every test file shares: [`Sim`] drives an analyzer with the
//! methods of a client and a broker at a settable time, and the finders pick
//! one verdict out of an analysis.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::event::{
    ContentHeader, Dir, EventKind, Frame, GapReason, Heartbeat, Method, MethodArgs, MethodKind,
    Properties,
};

/// `MethodArgs` with the named fields set, the rest empty:
/// `args!(queue: "q", no_ack: false)`.
macro_rules! args {
    ($($field:ident: $value:expr),* $(,)?) => {
        MethodArgs {
            $($field: Some($value.into()),)*
            ..Default::default()
        }
    };
}

mod channel;
mod connection;
mod consumer;
mod document;
mod errors;
mod missing;
mod newer;
mod publisher;
mod routing;

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

/// A method frame on channel `ch`.
fn method_frame(ch: u16, m: MethodKind, args: MethodArgs) -> EventKind {
    let frame = Frame::Method(Box::new(Method::new(m, args)));
    EventKind::Frame { channel: ch, frame }
}

/// The content header of a 10-byte message with this message_id.
fn content_header(ch: u16, message_id: Option<&str>) -> EventKind {
    content_header_with(
        ch,
        Properties {
            message_id: message_id.map(Into::into),
            ..Default::default()
        },
    )
}

/// The content header of a 10-byte message with these properties.
fn content_header_with(ch: u16, properties: Properties) -> EventKind {
    let header = ContentHeader {
        class_id: 60,
        body_size: 10,
        properties,
        ..Default::default()
    };
    EventKind::Frame {
        channel: ch,
        frame: Frame::ContentHeader(Box::new(header)),
    }
}

/// A gap at the start: the capture begins mid-connection.
fn mid_connection() -> EventKind {
    EventKind::Gap {
        bytes: None,
        reason: GapReason::MidConnection,
    }
}

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
    /// A new simulation and the connection from client port `port`.
    fn on(port: u16) -> (Sim, Conn) {
        (Sim::new(), conn(port))
    }
    /// A simulation with one worker (see [`worker`]) on port `port`.
    fn with_worker(port: u16, q: &str, tag: &str, prefetch: u16) -> (Sim, Conn) {
        let (mut s, w) = Sim::on(port);
        worker(&mut s, w, q, tag, prefetch);
        (s, w)
    }
    /// A simulation with one connection that opened channel 1 (see [`publisher`]).
    fn with_publisher(port: u16) -> (Sim, Conn) {
        let (mut s, p) = Sim::on(port);
        publisher(&mut s, p);
        (s, p)
    }
    /// [`Sim::with_worker`] on the second port, then a publisher on the first.
    fn with_worker_and_publisher(
        (publisher_port, worker_port): (u16, u16),
        q: &str,
        tag: &str,
        prefetch: u16,
    ) -> (Sim, Conn, Conn) {
        let (mut s, w) = Sim::with_worker(worker_port, q, tag, prefetch);
        let p = conn(publisher_port);
        publisher(&mut s, p);
        (s, p, w)
    }
    /// A [`dramatiq_worker`] on the last two ports, then a publisher on the first.
    fn with_dramatiq_worker(ports: [u16; 3], prefetch: u16) -> (Sim, [Conn; 3]) {
        let mut s = Sim::new();
        let [p, main, delay] = ports.map(conn);
        dramatiq_worker(&mut s, (main, delay), prefetch);
        publisher(&mut s, p);
        (s, [p, main, delay])
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
        self.event(c, dir, method_frame(ch, m, args))
    }
    /// A method from the client.
    fn c2s(&mut self, c: Conn, ch: u16, m: MethodKind, args: MethodArgs) -> u64 {
        self.method(c, Dir::C2S, ch, m, args)
    }
    /// A method from the broker.
    fn s2c(&mut self, c: Conn, ch: u16, m: MethodKind, args: MethodArgs) -> u64 {
        self.method(c, Dir::S2C, ch, m, args)
    }
    fn handshake(&mut self, c: Conn, heartbeat: u16) {
        self.event(c, Dir::C2S, EventKind::TcpOpen);
        self.s2c(c, 0, MethodKind::ConnectionStart, args!());
        let start_ok = args!(product: "test-client");
        self.c2s(c, 0, MethodKind::ConnectionStartOk, start_ok);
        self.s2c(c, 0, MethodKind::ConnectionTune, args!(heartbeat: 60u16));
        self.c2s(
            c,
            0,
            MethodKind::ConnectionTuneOk,
            args!(heartbeat: heartbeat),
        );
        self.c2s(c, 0, MethodKind::ConnectionOpen, args!(vhost: "/"));
        self.s2c(c, 0, MethodKind::ConnectionOpenOk, args!());
    }
    fn channel(&mut self, c: Conn, ch: u16) {
        self.c2s(c, ch, MethodKind::ChannelOpen, args!());
        self.s2c(c, ch, MethodKind::ChannelOpenOk, args!());
    }
    fn qos(&mut self, c: Conn, ch: u16, n: u16, global: bool) -> u64 {
        let qos = args!(prefetch_count: n, global: global);
        self.c2s(c, ch, MethodKind::BasicQos, qos)
    }
    fn declare(&mut self, c: Conn, ch: u16, q: &str) {
        self.c2s(c, ch, MethodKind::QueueDeclare, args!(queue: q));
        let ok = args!(queue: q, message_count: 0u32, consumer_count: 0u32);
        self.s2c(c, ch, MethodKind::QueueDeclareOk, ok);
    }
    fn consume_only(&mut self, c: Conn, ch: u16, q: &str, tag: &str) -> u64 {
        let consume = args!(queue: q, consumer_tag: tag, no_ack: false);
        self.c2s(c, ch, MethodKind::BasicConsume, consume)
    }
    fn consume(&mut self, c: Conn, ch: u16, q: &str, tag: &str) -> u64 {
        self.consume_only(c, ch, q, tag);
        let ok = args!(consumer_tag: tag);
        self.s2c(c, ch, MethodKind::BasicConsumeOk, ok)
    }
    /// basic.deliver of delivery tag `dtag` to consumer `tag`, and its content header.
    fn deliver(
        &mut self,
        c: Conn,
        ch: u16,
        tag: &str,
        dtag: u64,
        redelivered: bool,
        id: Option<&str>,
    ) -> u64 {
        let properties = Properties {
            message_id: id.map(Into::into),
            ..Default::default()
        };
        self.deliver_with(c, ch, (tag, dtag, redelivered), properties)
    }
    /// basic.deliver of delivery tag `dtag` to consumer `tag` (routing key
    /// `q`), and its content header with these properties.
    fn deliver_with(
        &mut self,
        c: Conn,
        ch: u16,
        (tag, dtag, redelivered): (&str, u64, bool),
        properties: Properties,
    ) -> u64 {
        let deliver = args!(
            consumer_tag: tag,
            delivery_tag: dtag,
            redelivered: redelivered,
            exchange: "",
            routing_key: "q",
        );
        let f = self.s2c(c, ch, MethodKind::BasicDeliver, deliver);
        self.event(c, Dir::S2C, content_header_with(ch, properties));
        f
    }
    fn ack(&mut self, c: Conn, ch: u16, dtag: u64, multiple: bool) -> u64 {
        let ack = args!(delivery_tag: dtag, multiple: multiple);
        self.c2s(c, ch, MethodKind::BasicAck, ack)
    }
    fn nack(&mut self, c: Conn, ch: u16, dtag: u64, requeue: bool) -> u64 {
        let nack = args!(delivery_tag: dtag, multiple: false, requeue: requeue);
        self.c2s(c, ch, MethodKind::BasicNack, nack)
    }
    fn publish(&mut self, c: Conn, ch: u16, x: &str, rk: &str) -> u64 {
        let publish = args!(exchange: x, routing_key: rk);
        self.c2s(c, ch, MethodKind::BasicPublish, publish)
    }
    fn heartbeat(&mut self, c: Conn, dir: Dir) {
        let frame = Frame::Heartbeat(Heartbeat);
        self.event(c, dir, EventKind::Frame { channel: 0, frame });
    }
    /// A heartbeat from `dir` at `t` seconds, then the analysis then.
    fn heartbeat_at(&mut self, t: f64, c: Conn, dir: Dir) -> Analysis {
        self.at(t);
        self.heartbeat(c, dir);
        self.analysis()
    }
    fn close_conn_by_client(&mut self, c: Conn) {
        self.close(c, Dir::C2S, 0, 200, "Normal shutdown");
        self.s2c(c, 0, MethodKind::ConnectionCloseOk, args!());
        self.event(c, Dir::C2S, EventKind::TcpClose);
    }
    /// channel.close (channel > 0) or connection.close (channel 0) from `dir`.
    fn close(&mut self, c: Conn, dir: Dir, ch: u16, code: u16, text: &str) -> u64 {
        let m = if ch == 0 {
            MethodKind::ConnectionClose
        } else {
            MethodKind::ChannelClose
        };
        self.method(c, dir, ch, m, args!(reply_code: code, reply_text: text))
    }
    /// basic.cancel from the client and the broker's cancel-ok.
    fn cancel(&mut self, c: Conn, ch: u16, tag: &str) {
        self.c2s(c, ch, MethodKind::BasicCancel, args!(consumer_tag: tag));
        self.s2c(c, ch, MethodKind::BasicCancelOk, args!(consumer_tag: tag));
    }
    fn exchange(&mut self, c: Conn, ch: u16, x: &str, kind: &str) {
        let declare = args!(exchange: x, exchange_type: kind);
        self.c2s(c, ch, MethodKind::ExchangeDeclare, declare);
    }
    fn bind(&mut self, c: Conn, ch: u16, q: &str, x: &str, key: &str) {
        let bind = args!(queue: q, exchange: x, routing_key: key);
        self.c2s(c, ch, MethodKind::QueueBind, bind);
    }
    fn analysis(&self) -> Analysis {
        self.a.analysis(self.now)
    }
    /// The verdict on consumer `tag` now.
    fn consumer(&self, tag: &str) -> Verdict {
        consumer_verdict(&self.analysis(), tag).clone()
    }
    /// Asserts that connection `c`'s verdict is `kind`, uncertain at `uncertain`
    /// seconds and certain at `certain` (a heartbeat from `dir` at each moves
    /// the capture on); returns the certain verdict.
    fn connection_settles(
        &mut self,
        c: Conn,
        dir: Dir,
        kind: VerdictKind,
        (uncertain, certain): (f64, f64),
    ) -> Verdict {
        self.at(uncertain).heartbeat(c, dir);
        assert_kind_certainty(&self.connection(c), kind, Certainty::Uncertain);
        self.at(certain).heartbeat(c, dir);
        let v = self.connection(c);
        assert_kind_certainty(&v, kind, Certainty::Certain);
        v
    }
    /// The verdict on connection `c` now.
    fn connection(&self, c: Conn) -> Verdict {
        conn_verdict(&self.analysis(), c).clone()
    }
}

/// The one verdict of `scope` that `pick` selects; panics listing them all.
fn verdict_of<'a>(an: &'a Analysis, what: &str, pick: impl Fn(&Verdict) -> bool) -> &'a Verdict {
    an.verdicts
        .iter()
        .find(|v| pick(v))
        .unwrap_or_else(|| panic!("no verdict for {what}: {:#?}", an.verdicts))
}

fn consumer_verdict<'a>(an: &'a Analysis, tag: &str) -> &'a Verdict {
    verdict_of(an, &format!("consumer {tag}"), |v| {
        v.scope == Scope::Consumer && v.consumer_tag.as_deref() == Some(tag)
    })
}

fn conn_verdict(an: &Analysis, c: Conn) -> &Verdict {
    verdict_of(an, &format!("connection {c}"), |v| {
        v.scope == Scope::Connection && v.conn == c
    })
}

fn channel_verdict(an: &Analysis, c: Conn, ch: u16) -> &Verdict {
    verdict_of(an, &format!("channel {ch}"), |v| {
        v.scope == Scope::Channel && v.conn == c && v.channel == Some(ch)
    })
}

/// Asserts a verdict's kind, showing its explanation when it differs.
fn assert_kind(v: &Verdict, kind: VerdictKind) {
    assert_eq!(v.verdict, kind, "{}", v.explanation);
}

/// Asserts a verdict's kind and how certain it is.
fn assert_kind_certainty(v: &Verdict, kind: VerdictKind, certainty: Certainty) {
    assert_kind(v, kind);
    assert_eq!(v.certainty, certainty, "{}", v.explanation);
}

/// Asserts a verdict's kind and words of its explanation.
fn assert_verdict(v: &Verdict, kind: VerdictKind, words: &[&str]) {
    assert_kind(v, kind);
    assert_says(v, words);
}

/// Asserts a verdict's kind and the packet it starts at.
fn assert_kind_at(v: &Verdict, kind: VerdictKind, frame: u64) {
    assert_kind(v, kind);
    assert_eq!(v.frame, Some(frame));
}

/// Asserts that a verdict's explanation says each of `words`.
fn assert_says(v: &Verdict, words: &[&str]) {
    for w in words {
        assert!(v.explanation.contains(w), "{}", v.explanation);
    }
}

/// A worker (prefetch `prefetch`) on queue `q` with tag `tag` on channel 1 of `c`.
fn worker(s: &mut Sim, c: Conn, q: &str, tag: &str, prefetch: u16) {
    s.handshake(c, 60);
    s.channel(c, 1);
    s.declare(c, 1, q);
    s.qos(c, 1, prefetch, false);
    s.consume(c, 1, q, tag);
}

/// A connection with channel 1 open, as a publisher has.
fn publisher(s: &mut Sim, c: Conn) {
    s.handshake(c, 60);
    s.channel(c, 1);
}

/// A Dramatiq worker: consumer 'main' on queue 'default' on one connection,
/// and 'delay' on its delay queue 'default.DQ' on another.
fn dramatiq_worker(s: &mut Sim, (main, delay): (Conn, Conn), prefetch: u16) {
    worker(s, main, "default", "main", prefetch);
    worker(s, delay, "default.DQ", "delay", prefetch);
}
