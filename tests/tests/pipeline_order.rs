//! The packet driver that files and live capture share
//! (`amqptrace::pipeline::Driver`): events come out in time order even for a
//! connection classified late, and the wait for classification is bounded —
//! a quiet non-AMQP flow neither holds the timeline back nor makes memory grow
//! with the capture. Packets are synthesised (raw IPv4, LINKTYPE_RAW) and fed
//! one by one, so what the driver holds can be counted after each.

use amqptrace::event::{Event, EventKind, Timestamp};
use amqptrace::pipeline::{Driver, MAX_HELD_EVENTS};
use amqptrace::source::file::Packet;
use amqptrace::stream::{StreamConfig, CLASSIFY_WINDOW};

use crate::util::{self, ACK, PROTOCOL_HEADER, PSH_ACK, SYN, SYN_ACK};

const HEARTBEAT: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];

/// One TCP connection's packets, sequence numbers kept.
struct Flow {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    seq: [u32; 2],
}

impl Flow {
    fn new(client_port: u16, server_port: u16) -> Self {
        Flow {
            client: ([10, 0, 0, 2], client_port),
            server: ([10, 0, 0, 1], server_port),
            seq: [1000, 9_000_000],
        }
    }

    /// A raw IPv4 packet with one TCP segment.
    fn segment(&mut self, from_client: bool, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (i, src, dst) = if from_client {
            (0, self.client, self.server)
        } else {
            (1, self.server, self.client)
        };
        let p = util::ipv4_tcp(src, dst, self.seq[i], self.seq[1 - i], flags, payload);
        let advance = payload.len() as u32 + u32::from(flags & 0x03 != 0);
        self.seq[i] = self.seq[i].wrapping_add(advance);
        p
    }

    fn handshake(&mut self) -> Vec<Vec<u8>> {
        vec![
            self.segment(true, SYN, &[]),
            self.segment(false, SYN_ACK, &[]),
            self.segment(true, ACK, &[]),
        ]
    }
}

fn ms(n: i64) -> Timestamp {
    Timestamp(1_764_000_000_000_000_000 + n * 1_000_000)
}

/// Feeds packets to a driver and watches what it emits and holds.
struct Run {
    driver: Driver,
    frame: u64,
    emitted: Vec<(Timestamp, String)>,
    /// The largest gap between a packet's time and the newest event emitted
    /// by then: how far the timeline trails the input.
    max_lag_ms: i64,
}

impl Run {
    fn new() -> Self {
        Run {
            driver: Driver::new(StreamConfig::default()),
            frame: 0,
            emitted: Vec::new(),
            max_lag_ms: 0,
        }
    }

    fn feed(&mut self, at: Timestamp, data: &[u8]) {
        self.frame += 1;
        let pkt = Packet {
            frame: self.frame,
            ts: at,
            linktype: 101,
            data,
            orig_len: data.len() as u32,
            leg: None,
            alias: None,
        };
        let emitted = &mut self.emitted;
        let mut emit = |ev: &Event| {
            emitted.push((ev.ts, kind(ev)));
            true
        };
        assert!(self
            .driver
            .packet(0, std::path::Path::new("synthesised"), &pkt, &mut emit));
        if let Some((newest, _)) = self.emitted.last() {
            self.max_lag_ms = self
                .max_lag_ms
                .max((at.as_nanos() - newest.as_nanos()) / 1_000_000);
        }
    }

    fn finish(mut self, at: Timestamp) -> Self {
        let emitted = &mut self.emitted;
        self.driver.finish(at, &mut |ev: &Event| {
            emitted.push((ev.ts, kind(ev)));
            true
        });
        self
    }

    /// The frames emitted on connections to broker port `port`.
    fn frames_to(&self, port: u16) -> usize {
        let kind = format!("frame {port}");
        self.emitted.iter().filter(|(_, k)| *k == kind).count()
    }

    fn assert_time_ordered(&self) {
        for w in self.emitted.windows(2) {
            assert!(
                w[0].0 <= w[1].0,
                "out of time order: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
    }
}

fn kind(ev: &Event) -> String {
    match &ev.kind {
        EventKind::TcpOpen => format!("open {}", ev.conn.broker.port()),
        EventKind::Frame { .. } => format!("frame {}", ev.conn.broker.port()),
        EventKind::ProtocolHeader { .. } => format!("header {}", ev.conn.broker.port()),
        other => format!("{other:?}"),
    }
}

#[test]
fn quiet_non_amqp_flows_do_not_hold_the_timeline_back() {
    let mut run = Run::new();
    // Two quiet flows, not AMQP, that never say so: an idle connection (ssh
    // waiting for its user) and one that sent "AM" and then nothing, so it
    // might still become the protocol header.
    let mut idle = Flow::new(40001, 2222);
    let mut prefix = Flow::new(40002, 2223);
    let mut t = 0;
    for p in idle.handshake().into_iter().chain(prefix.handshake()) {
        run.feed(ms(t), &p);
        t += 1;
    }
    let p = prefix.segment(true, PSH_ACK, b"AM");
    run.feed(ms(t), &p);
    // Beside them, 60 s of an AMQP connection: a heartbeat each way every 100 ms.
    let mut amqp = Flow::new(40003, 5672);
    for p in amqp.handshake() {
        run.feed(ms(t), &p);
    }
    let p = amqp.segment(true, PSH_ACK, PROTOCOL_HEADER);
    run.feed(ms(t), &p);
    let mut heartbeats = 0;
    while t < 60_000 {
        t += 100;
        for from_client in [true, false] {
            let p = amqp.segment(from_client, PSH_ACK, &HEARTBEAT);
            run.feed(ms(t), &p);
            heartbeats += 1;
        }
    }
    let window_ms = CLASSIFY_WINDOW.as_millis() as i64;
    // Held for the classification window at most (20 events a second), not
    // for the whole capture (1200 events).
    let held_max = run.driver.held_events_max();
    assert!(
        held_max <= (window_ms as usize / 1000 + 1) * 20,
        "{held_max} events held behind the quiet flows"
    );
    assert!(
        run.max_lag_ms <= window_ms + 100,
        "the timeline trailed the input by {} ms",
        run.max_lag_ms
    );
    assert_eq!(run.driver.undecided_connections(), 0);
    assert_eq!(run.driver.stream_stats().other_connections, 2);
    let run = run.finish(ms(t));
    run.assert_time_ordered();
    assert_eq!(
        run.frames_to(5672),
        heartbeats,
        "every heartbeat reaches the output"
    );
}

#[test]
fn events_held_behind_a_waiting_connection_are_capped() {
    let mut run = Run::new();
    let mut idle = Flow::new(40011, 2222);
    for p in idle.handshake() {
        run.feed(ms(0), &p);
    }
    let mut amqp = Flow::new(40012, 5672);
    for p in amqp.handshake() {
        run.feed(ms(1), &p);
    }
    let p = amqp.segment(true, PSH_ACK, PROTOCOL_HEADER);
    run.feed(ms(1), &p);
    // More events within the classification window than may be held.
    let n = MAX_HELD_EVENTS + 5_000;
    for i in 0..n {
        let p = amqp.segment(i % 2 == 0, PSH_ACK, &HEARTBEAT);
        run.feed(ms(2 + (i as i64) / 100), &p);
    }
    assert!(
        (run.driver.held_events_max() as u64) <= MAX_HELD_EVENTS as u64 + 1,
        "{} events held",
        run.driver.held_events_max()
    );
    assert_eq!(run.driver.undecided_connections(), 0);
    let run = run.finish(ms(10_000));
    run.assert_time_ordered();
    assert_eq!(run.frames_to(5672), n);
}

#[test]
fn a_connection_classified_late_keeps_its_place_in_time() {
    let mut run = Run::new();
    // A broker on a port amqptrace is not told about (5999): the connection is
    // AMQP only once the client's protocol header arrives, 400 ms after the SYN.
    let mut late = Flow::new(40021, 5999);
    let hs = late.handshake();
    run.feed(ms(0), &hs[0]);
    run.feed(ms(1), &hs[1]);
    run.feed(ms(2), &hs[2]);
    // Meanwhile a known AMQP connection talks.
    let mut known = Flow::new(40022, 5672);
    for p in known.handshake() {
        run.feed(ms(100), &p);
    }
    let p = known.segment(true, PSH_ACK, PROTOCOL_HEADER);
    run.feed(ms(100), &p);
    for i in 0..3 {
        let p = known.segment(false, PSH_ACK, &HEARTBEAT);
        run.feed(ms(200 + i * 50), &p);
    }
    let p = late.segment(true, PSH_ACK, PROTOCOL_HEADER);
    run.feed(ms(400), &p);
    let p = late.segment(false, PSH_ACK, &HEARTBEAT);
    run.feed(ms(450), &p);
    let run = run.finish(ms(500));
    run.assert_time_ordered();
    let kinds: Vec<&str> = run.emitted.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "open 5999",
            "open 5672",
            "header 5672",
            "frame 5672",
            "frame 5672",
            "frame 5672",
            "header 5999",
            "frame 5999",
        ]
    );
}
