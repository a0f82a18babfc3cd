//! Streams → timeline: finds which TCP connections speak AMQP, which side is
//! the broker, and runs one [`FrameDecoder`] per direction to turn their bytes
//! into [`Event`]s.
//!
//! A connection is AMQP when (a) one of its ports is a configured broker port,
//! (b) the client's first bytes are the protocol header, or (c) for a
//! connection whose start is not captured, its payload parses as consecutive
//! well-formed frames. The broker is the side on the configured port, the side
//! that did not send the protocol header, or the side that sends what only a
//! broker sends (`connection.start`, `basic.deliver`, `*-ok`), in that order.
//! Until a connection is classified its input is held and then replayed; the
//! wait is bounded per connection by bytes, segments and capture time
//! ([`CLASSIFY_WINDOW`]), and by the bytes of all waiting connections
//! together: past a bound, the connection is not AMQP. The caller that keeps
//! the timeline in order ([`crate::pipeline::Driver`]) waits behind
//! [`Tracker::oldest_held_ts`], so these bounds also bound its wait.
//!
//! Sources that already know the roles (the proxy) call [`Tracker::handle`]
//! with TCP-like events too; nothing here knows about files or sockets.
//!
//! A connection that starts with a TLS ClientHello whose random is in the key
//! log ([`Tracker::add_tls_keylog`]) is decrypted by a [`tls::Session`] and its
//! plaintext decoded as AMQP, on any port; without secrets it is reported as
//! TLS with its server name on a TLS or broker port, and not AMQP elsewhere.

use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use amq_protocol::protocol::parse_class;
use nom::combinator::all_consuming;
use nom::Parser;

use crate::amqp::fast::Boxes;
use crate::amqp::{
    DecodedItem, DecoderConfig, FrameDecoder, Items, FRAME_END, FRAME_HEARTBEAT, FRAME_METHOD,
};
use crate::event::{
    Conn, DecodeError, Dir, Event, EventKind, Frame, GapReason, MethodKind, ProtocolHeaderTag,
    Timestamp,
};
use crate::tcp::{PacketRef, StreamEvent, TcpEvent, TcpOutput};
use crate::tls::{self, ClientStart, KeyLog};

/// Input held per unclassified connection before it is declared not AMQP:
/// bytes, data segments and TCP events (segments without payload count too).
const MAX_PENDING_BYTES: usize = 256 * 1024;
const MAX_PENDING_CHUNKS: usize = 64;
const MAX_PENDING_EVENTS: usize = 4 * MAX_PENDING_CHUNKS;
/// Input held by all unclassified connections together: past it, the oldest
/// is declared not AMQP until the rest fits (many new non-AMQP connections at
/// once, e.g. a port scan under `tcpdump -i any`).
const MAX_PENDING_BYTES_TOTAL: usize = 16 << 20;
/// How long (capture time) a connection may stay unclassified. An AMQP client
/// sends the protocol header as soon as TCP is up, and a connection caught
/// mid-way shows frames in its first segment; 5 s also covers two lost SYNs.
/// A quiet non-AMQP flow (an idle ssh session under `tcpdump -i any`) is
/// declared not AMQP then, instead of holding every other connection's events.
pub const CLASSIFY_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Which connections to decode and how.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Broker ports: connections to them are AMQP without further evidence.
    pub ports: Vec<u16>,
    /// Ports whose connections are AMQP over TLS: reported, not decoded.
    pub tls_ports: Vec<u16>,
    pub decoder: DecoderConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            ports: vec![5672],
            tls_ports: vec![5671],
            decoder: DecoderConfig::default(),
        }
    }
}

/// Counters for the end-of-run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub amqp_connections: u64,
    pub tls_connections: u64,
    pub other_connections: u64,
}

impl StreamStats {
    /// Adds the connections `other` counted (another shard's, in a sharded run).
    pub fn add(&mut self, other: &StreamStats) {
        self.amqp_connections += other.amqp_connections;
        self.tls_connections += other.tls_connections;
        self.other_connections += other.other_connections;
    }
}

#[derive(Debug)]
struct Held {
    packet: PacketRef,
    src: SocketAddr,
    dst: SocketAddr,
    initiator: Option<SocketAddr>,
    event: StreamEvent<Vec<u8>>,
}

#[derive(Debug)]
enum State {
    Undecided {
        held: Vec<Held>,
        bytes: usize,
        /// Time of its first held packet (its key in `Tracker::undecided`).
        since: Timestamp,
    },
    Amqp(Box<AmqpConn>),
    /// Not AMQP (or encrypted): further input is dropped.
    Ignored,
}

#[derive(Debug)]
struct AmqpConn {
    conn: Conn,
    c2s: FrameDecoder,
    s2c: FrameDecoder,
    fin: [bool; 2],
    /// AMQP over TLS with known secrets: the decryption between TCP and the decoder.
    tls: Option<Box<tls::Session>>,
}

/// Per-input tracker of every connection.
#[derive(Debug)]
pub struct Tracker {
    cfg: StreamConfig,
    conns: HashMap<u64, State>,
    stats: StreamStats,
    /// The unclassified connections by the time of their first held packet:
    /// the ordering limit, the time bound and the total cap without a scan
    /// of every connection.
    undecided: BTreeSet<(Timestamp, u64)>,
    /// Bytes held by all unclassified connections.
    undecided_bytes: usize,
    /// TLS secrets, by ClientHello random.
    keylog: KeyLog,
    /// The event lent to the caller's `out`, made once (see [`Slot`]).
    slot: Event,
}

impl Tracker {
    pub fn new(cfg: StreamConfig) -> Self {
        Tracker {
            cfg,
            conns: HashMap::default(),
            stats: StreamStats::default(),
            undecided: BTreeSet::new(),
            undecided_bytes: 0,
            keylog: KeyLog::default(),
            slot: Event::placeholder(),
        }
    }

    /// Adds TLS secrets (an NSS key log's text): sessions whose ClientHello
    /// comes later are decrypted. Returns how many secrets the text gave.
    pub fn add_tls_keylog(&mut self, text: &[u8]) -> usize {
        self.keylog.add(text)
    }

    /// Adds the secrets of a key log read beforehand.
    pub fn set_tls_keylog(&mut self, keylog: KeyLog) {
        self.keylog = keylog;
    }

    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Time of the oldest packet still held by an unclassified connection:
    /// events of later packets must wait behind it to keep the timeline in
    /// capture order.
    pub fn oldest_held_ts(&self) -> Option<Timestamp> {
        self.undecided.first().map(|&(ts, _)| ts)
    }

    /// Whether any connection is waiting to be classified.
    pub fn has_held(&self) -> bool {
        !self.undecided.is_empty()
    }

    /// How many connections are waiting to be classified.
    pub fn undecided_connections(&self) -> usize {
        self.undecided.len()
    }

    /// Declares not AMQP every connection still unclassified
    /// [`CLASSIFY_WINDOW`] after its first packet, `now` being the time of
    /// the newest packet (or the wall clock of a live capture with none).
    pub fn expire(&mut self, now: Timestamp) {
        let window = CLASSIFY_WINDOW.as_nanos() as i64;
        while let Some(&(since, flow)) = self.undecided.first() {
            if now.as_nanos().saturating_sub(since.as_nanos()) < window {
                break;
            }
            self.settle(flow, Decision::NotAmqp, &mut |_| {});
        }
    }

    /// Declares the oldest unclassified connection not AMQP (the caller holds
    /// too many events behind it). Returns false when there is none.
    pub fn give_up_oldest(&mut self) -> bool {
        match self.undecided.first() {
            Some(&(_, flow)) => {
                self.settle(flow, Decision::NotAmqp, &mut |_| {});
                true
            }
            None => false,
        }
    }

    /// Feeds one reassembler output; `out` receives the resulting events.
    pub fn handle<F: FnMut(Event)>(&mut self, o: TcpOutput<'_>, out: &mut F) {
        self.handle_in_place(o, &mut |ev: &mut Event| out(take_event(ev)));
    }

    /// [`Tracker::handle`], each event lent to `out` in the tracker's one
    /// event: `out` may take it with [`take_event`]; what it leaves, the
    /// tracker takes back (a frame's box for the stream's next frames, see
    /// [`crate::amqp::fast::Boxes`]) before the next event is written over it.
    // Inlined into the reassembler's closure, a call a segment.
    #[inline(always)]
    pub fn handle_in_place<F: FnMut(&mut Event)>(&mut self, o: TcpOutput<'_>, out: &mut F) {
        let undecided = &mut self.undecided;
        let state = self.conns.entry(o.flow).or_insert_with(|| {
            undecided.insert((o.packet.ts, o.flow));
            State::Undecided {
                held: Vec::new(),
                bytes: 0,
                since: o.packet.ts,
            }
        });
        match state {
            State::Ignored => {
                if matches!(o.event, TcpEvent::Reset) {
                    self.conns.remove(&o.flow);
                }
            }
            State::Amqp(c) => {
                let done = amqp_event(c, o.packet, o.src, o.event, &mut self.slot, out);
                if done {
                    self.conns.remove(&o.flow);
                }
            }
            State::Undecided { held, bytes, .. } => {
                if let TcpEvent::Data(b) = o.event {
                    *bytes += b.len();
                    self.undecided_bytes += b.len();
                }
                held.push(Held {
                    packet: o.packet,
                    src: o.src,
                    dst: o.dst,
                    initiator: o.initiator,
                    event: o.event.to_owned(),
                });
                let decision = classify(&self.cfg, &self.keylog, held, *bytes);
                if !matches!(decision, Decision::Wait) {
                    self.settle(o.flow, decision, out);
                }
                if matches!(o.event, TcpEvent::Reset)
                    && matches!(self.conns.get(&o.flow), Some(State::Ignored))
                {
                    self.conns.remove(&o.flow);
                }
                while self.undecided_bytes > MAX_PENDING_BYTES_TOTAL && self.give_up_oldest() {}
            }
        }
    }

    /// Ends the wait of an unclassified connection with `decision`
    /// (`Wait` counts as not AMQP), replaying its input when it is AMQP.
    fn settle<F: FnMut(&mut Event)>(&mut self, flow: u64, decision: Decision, out: &mut F) {
        let Some(State::Undecided { held, bytes, since }) = self.conns.remove(&flow) else {
            return;
        };
        self.undecided.remove(&(since, flow));
        self.undecided_bytes -= bytes;
        let next = match decision {
            Decision::Wait | Decision::NotAmqp => {
                self.stats.other_connections += 1;
                State::Ignored
            }
            Decision::Tls {
                conn,
                port,
                server_name,
            } => {
                self.stats.tls_connections += 1;
                // The SYN, then the error at the ClientHello that names the
                // server: the connection's start is seen, its content is not.
                let open = held.iter().find(|h| matches!(h.event, StreamEvent::Open));
                let data = held
                    .iter()
                    .find(|h| matches!(h.event, StreamEvent::Data(_)));
                let error = EventKind::Error {
                    offset: 0,
                    error: DecodeError::Tls { port, server_name },
                };
                let events = [(open, EventKind::TcpOpen), (data.or(held.first()), error)];
                for (h, kind) in events {
                    if let Some(h) = h {
                        let dir = if h.src == conn.client {
                            Dir::C2S
                        } else {
                            Dir::S2C
                        };
                        out(&mut Event {
                            frame: h.packet.frame,
                            file: h.packet.file,
                            ts: h.packet.ts,
                            conn,
                            dir,
                            kind,
                        });
                    }
                }
                State::Ignored
            }
            Decision::Amqp(conn, tls) => {
                self.stats.amqp_connections += 1;
                let mut c = Box::new(AmqpConn {
                    conn,
                    c2s: FrameDecoder::new(self.cfg.decoder.clone()),
                    s2c: FrameDecoder::new(self.cfg.decoder.clone()),
                    fin: [false; 2],
                    tls,
                });
                let mut done = false;
                for h in held {
                    done = amqp_event(&mut c, h.packet, h.src, h.event, &mut self.slot, out);
                }
                if done {
                    return;
                }
                State::Amqp(c)
            }
        };
        self.conns.insert(flow, next);
    }
}

/// Decodes one event of a classified connection. Returns true when the
/// connection is over (reset, or both FINs) and its state can be released.
fn amqp_event<D: AsRef<[u8]>, F: FnMut(&mut Event)>(
    c: &mut AmqpConn,
    p: PacketRef,
    src: SocketAddr,
    ev: StreamEvent<D>,
    slot: &mut Event,
    out: &mut F,
) -> bool {
    let dir = if src == c.conn.client {
        Dir::C2S
    } else {
        Dir::S2C
    };
    slot.frame = p.frame;
    slot.file = p.file;
    slot.ts = p.ts;
    slot.conn = c.conn;
    slot.dir = dir;
    let mut slot = Slot { ev: slot, out };
    let dec = match dir {
        Dir::C2S => &mut c.c2s,
        Dir::S2C => &mut c.s2c,
    };
    let tls_problem = |p: tls::TlsProblem| EventKind::Error {
        offset: 0,
        error: DecodeError::TlsDecrypt {
            detail: p.to_string(),
        },
    };
    match ev {
        StreamEvent::Open => slot.put(EventKind::TcpOpen),
        StreamEvent::Data(b) => {
            let b = b.as_ref();
            let Some(session) = c.tls.as_deref_mut() else {
                dec.feed_to(b, &mut slot);
                return false;
            };
            let from_client = dir == Dir::C2S;
            if let Err(p) = session.feed(from_client, b, &mut |plain| dec.feed_to(plain, &mut slot))
            {
                slot.put(tls_problem(p));
            }
        }
        StreamEvent::Gap {
            bytes: Some(missing),
            reason: GapReason::Truncated,
        } if c.tls.is_none() => {
            // The snaplen cut the segment: the frame cut there comes out
            // marked, and only bytes whose frames are unknown remain a gap.
            let unknown = dec.cut(missing, &mut |d| slot.put(decoded_kind(d)));
            if unknown > 0 {
                slot.put(EventKind::Gap {
                    bytes: Some(unknown),
                    reason: GapReason::Truncated,
                });
            }
        }
        StreamEvent::Gap { bytes, reason } => {
            if let Some(p) = c.tls.as_deref_mut().and_then(|s| s.gap(dir == Dir::C2S)) {
                slot.put(tls_problem(p));
            }
            dec.gap(bytes);
            slot.put(EventKind::Gap { bytes, reason });
        }
        StreamEvent::Fin => {
            slot.put(EventKind::TcpClose);
            c.fin[dir as usize] = true;
            return c.fin[0] && c.fin[1];
        }
        StreamEvent::Reset => {
            slot.put(EventKind::TcpReset);
            return true;
        }
        StreamEvent::ZeroWindow => slot.put(EventKind::TcpZeroWindow),
        StreamEvent::WindowOpen => slot.put(EventKind::TcpWindowOpen),
    }
    false
}

/// The events of one stream event, all of one packet, connection and
/// direction, in the tracker's one event: only the kind is written for each
/// before it goes to `out`. (Made anew for each, the ~150-byte event was
/// built whole for every frame: -1.9 M instructions on the storm slice.)
struct Slot<'a, F> {
    ev: &'a mut Event,
    out: &'a mut F,
}

impl<F: FnMut(&mut Event)> Slot<'_, F> {
    /// Lends the event of `kind` to `out`, then takes back what `out` left
    /// of it into the thread's spares.
    #[inline(always)]
    fn put(&mut self, kind: EventKind) {
        self.lend(kind);
        crate::amqp::fast::recycle_in_place(&mut self.ev.kind);
    }

    /// Lends the event of `kind` to `out`; the caller takes back what is left.
    #[inline(always)]
    fn lend(&mut self, kind: EventKind) {
        // Written over what was taken back last, which owns nothing: neither
        // read nor dropped, where its drop glue cost 16 instructions a frame.
        std::mem::forget(std::mem::replace(&mut self.ev.kind, kind));
        (self.out)(self.ev)
    }
}

/// The decoder's items as timeline events: a frame goes straight into its
/// event, without a [`crate::amqp::Decoded`] in between.
impl<F: FnMut(&mut Event)> Items for Slot<'_, F> {
    #[inline(always)]
    fn frame(&mut self, _offset: u64, channel: u16, frame: Frame, boxes: &mut Boxes) {
        self.lend(EventKind::Frame { channel, frame });
        boxes.recycle_in_place(&mut self.ev.kind);
    }
    #[inline(always)]
    fn item(&mut self, d: crate::amqp::Decoded) {
        self.put(decoded_kind(d))
    }
}

/// The event in `slot` (see [`Tracker::handle_in_place`]), moved out of it:
/// its kind is left a `TcpOpen`, which owns nothing.
#[inline]
pub fn take_event(slot: &mut Event) -> Event {
    Event {
        kind: std::mem::replace(&mut slot.kind, EventKind::TcpOpen),
        ..*slot
    }
}

/// The timeline event of one decoded item.
#[inline]
fn decoded_kind(d: crate::amqp::Decoded) -> EventKind {
    match d.item {
        DecodedItem::Frame { channel, frame } => EventKind::Frame { channel, frame },
        DecodedItem::ProtocolHeader {
            protocol,
            supported,
        } => EventKind::ProtocolHeader {
            method: ProtocolHeaderTag,
            protocol,
            supported,
        },
        DecodedItem::Error(error) => EventKind::Error {
            offset: d.offset,
            error,
        },
    }
}

enum Decision {
    Wait,
    NotAmqp,
    /// TLS without secrets: reported, not decoded.
    Tls {
        conn: Conn,
        port: u16,
        server_name: Option<String>,
    },
    /// AMQP; over TLS with known secrets when a session is given.
    Amqp(Conn, Option<Box<tls::Session>>),
}

fn classify(cfg: &StreamConfig, keylog: &KeyLog, held: &[Held], bytes: usize) -> Decision {
    let Some(first) = held.first() else {
        return Decision::Wait;
    };
    let (a, b) = (first.src, first.dst);
    let initiator = held.iter().rev().find_map(|h| h.initiator);
    let oriented = |broker: SocketAddr| {
        let client = if broker == a { b } else { a };
        Conn { client, broker }
    };
    // (a) a configured port.
    let on_port = |ports: &[u16]| -> Option<SocketAddr> {
        match (ports.contains(&a.port()), ports.contains(&b.port())) {
            (true, true) => Some(initiator.map(|i| if i == a { b } else { a }).unwrap_or(b)),
            (true, false) => Some(a),
            (false, true) => Some(b),
            (false, false) => None,
        }
    };
    let mid: Vec<SocketAddr> = held
        .iter()
        .filter(|h| {
            matches!(
                h.event,
                StreamEvent::Gap {
                    reason: GapReason::MidConnection,
                    ..
                }
            )
        })
        .map(|h| h.src)
        .collect();
    let first_data = held
        .iter()
        .find(|h| matches!(h.event, StreamEvent::Data(_)));
    // The start of the conversation is in the capture.
    let start = first_data.filter(|h| !mid.contains(&h.src) && initiator.is_some());
    // TLS: a ClientHello, decrypted when the key log has its secrets.
    if let Some(h) = start {
        match tls::client_start(&stream_head(held, h.src, tls::MAX_HELLO_HEAD)) {
            ClientStart::Incomplete => return bounded_wait(held, bytes),
            ClientStart::Hello(hello) => {
                let conn = oriented(h.dst);
                if let Some(secrets) = keylog.get(&hello.random) {
                    let session = tls::Session::new(hello.random, secrets.clone());
                    return Decision::Amqp(conn, Some(Box::new(session)));
                }
                return match on_port(&cfg.tls_ports).or_else(|| on_port(&cfg.ports)) {
                    Some(_) => Decision::Tls {
                        conn,
                        port: conn.broker.port(),
                        server_name: hello.server_name,
                    },
                    None => Decision::NotAmqp,
                };
            }
            ClientStart::NotTls => {}
        }
    }
    // A client on a TLS port that speaks the protocol header in the clear is AMQP (rule b).
    let clear = start.is_some_and(|h| stream_head(held, h.src, 4) == b"AMQP");
    if let Some(broker) = on_port(&cfg.tls_ports).filter(|_| !clear) {
        // Wait for the ClientHello that names the server (and may have secrets).
        if first_data.is_none() && initiator.is_some() {
            if let Decision::Wait = bounded_wait(held, bytes) {
                return Decision::Wait;
            }
        }
        return Decision::Tls {
            conn: oriented(broker),
            port: broker.port(),
            server_name: None,
        };
    }
    if let Some(broker) = on_port(&cfg.ports) {
        // With TLS secrets at hand, a broker port may carry TLS too: wait for the first bytes.
        if !keylog.is_empty() && first_data.is_none() && initiator.is_some() {
            if let Decision::Wait = bounded_wait(held, bytes) {
                return Decision::Wait;
            }
        }
        return Decision::Amqp(oriented(broker), None);
    }
    // (b) the protocol header at a stream start we saw.
    if let Some(h) = first_data {
        if start.is_some() {
            // An AMQP client speaks first, with the protocol header (which
            // TCP may have cut anywhere).
            let head = stream_head(held, h.src, 8);
            if head.len() >= 4 && &head[..4] == b"AMQP" {
                return Decision::Amqp(oriented(h.dst), None);
            }
            if head.len() < 4 && b"AMQP".starts_with(&head) {
                // The header may still come, within the same bounds as any wait.
                return bounded_wait(held, bytes);
            }
            return Decision::NotAmqp;
        }
    }
    // (c) consecutive well-formed frames in a connection caught mid-way.
    let framed = held.iter().any(|h| match &h.event {
        StreamEvent::Data(d) => looks_like_frames(d),
        _ => false,
    });
    if framed {
        let broker = broker_by_methods(held).unwrap_or_else(|| {
            // No method gave the roles away: the lower (well-known) port is the broker's.
            if a.port() <= b.port() {
                a
            } else {
                b
            }
        });
        return Decision::Amqp(oriented(broker), None);
    }
    bounded_wait(held, bytes)
}

/// The first `max` bytes `src` sent, as far as they are held; a TLS hello
/// longer than 8 bytes is only looked for when the stream starts like one.
fn stream_head(held: &[Held], src: SocketAddr, max: usize) -> Vec<u8> {
    let mut head = Vec::new();
    for d in held.iter().filter(|x| x.src == src) {
        if let StreamEvent::Data(d) = &d.event {
            let max = if head.first().or(d.first()) == Some(&tls::HANDSHAKE) {
                max
            } else {
                max.min(8)
            };
            head.extend_from_slice(&d[..d.len().min(max.saturating_sub(head.len()))]);
            if head.len() >= max {
                break;
            }
        }
    }
    head
}

/// `Wait`, unless the connection holds more than it may (bytes, data
/// segments, events) or has ended: then it is not AMQP.
fn bounded_wait(held: &[Held], bytes: usize) -> Decision {
    let chunks = held
        .iter()
        .filter(|h| matches!(h.event, StreamEvent::Data(_)))
        .count();
    if bytes > MAX_PENDING_BYTES || chunks > MAX_PENDING_CHUNKS || held.len() > MAX_PENDING_EVENTS {
        return Decision::NotAmqp;
    }
    if held
        .iter()
        .any(|h| matches!(h.event, StreamEvent::Fin | StreamEvent::Reset))
    {
        return Decision::NotAmqp;
    }
    Decision::Wait
}

/// Walks complete frames from the start of `d`; true for two or more
/// well-formed frames, or one method/heartbeat frame that fills `d` exactly.
fn looks_like_frames(d: &[u8]) -> bool {
    let mut pos = 0;
    let mut count = 0;
    let mut strong = false;
    while d.len() - pos >= 7 {
        let t = d[pos];
        let channel = u16::from_be_bytes([d[pos + 1], d[pos + 2]]);
        let size = u32::from_be_bytes([d[pos + 3], d[pos + 4], d[pos + 5], d[pos + 6]]) as usize;
        if !matches!(t, 1 | 2 | 3 | 8) || channel > 2047 || size > 1 << 20 {
            return false;
        }
        let end = pos + 7 + size;
        if end >= d.len() {
            break;
        }
        if d[end] != FRAME_END {
            return false;
        }
        match t {
            FRAME_METHOD => {
                if all_consuming(parse_class).parse(&d[pos + 7..end]).is_err() {
                    return false;
                }
                strong = true;
            }
            FRAME_HEARTBEAT => {
                if channel != 0 || size != 0 {
                    return false;
                }
                strong = true;
            }
            _ => {}
        }
        count += 1;
        pos = end + 1;
    }
    count >= 2 || (count == 1 && strong && pos == d.len())
}

/// The broker, told by methods only a broker (or only a client) sends.
fn broker_by_methods(held: &[Held]) -> Option<SocketAddr> {
    for h in held {
        let StreamEvent::Data(d) = &h.event else {
            continue;
        };
        let mut pos = 0;
        while d.len().saturating_sub(pos) >= 7 {
            let size =
                u32::from_be_bytes([d[pos + 3], d[pos + 4], d[pos + 5], d[pos + 6]]) as usize;
            let end = pos + 7 + size;
            if end >= d.len() || d[end] != FRAME_END {
                break;
            }
            if d[pos] == FRAME_METHOD && size >= 4 {
                let class_id = u16::from_be_bytes([d[pos + 7], d[pos + 8]]);
                let method_id = u16::from_be_bytes([d[pos + 9], d[pos + 10]]);
                match MethodKind::from_ids(class_id, method_id).and_then(sent_by_broker) {
                    Some(true) => return Some(h.src),
                    Some(false) => return Some(h.dst),
                    None => {}
                }
            }
            pos = end + 1;
        }
    }
    None
}

/// Whether only the broker (true) or only the client (false) sends this method.
pub fn sent_by_broker(m: MethodKind) -> Option<bool> {
    use MethodKind::*;
    match m {
        ConnectionStart
        | ConnectionSecure
        | ConnectionTune
        | ConnectionOpenOk
        | ConnectionBlocked
        | ConnectionUnblocked
        | ConnectionUpdateSecret
        | ChannelOpenOk
        | AccessRequestOk
        | ExchangeDeclareOk
        | ExchangeDeleteOk
        | ExchangeBindOk
        | ExchangeUnbindOk
        | QueueDeclareOk
        | QueueBindOk
        | QueuePurgeOk
        | QueueDeleteOk
        | QueueUnbindOk
        | BasicQosOk
        | BasicConsumeOk
        | BasicCancelOk
        | BasicReturn
        | BasicDeliver
        | BasicGetOk
        | BasicGetEmpty
        | BasicRecoverOk
        | TxSelectOk
        | TxCommitOk
        | TxRollbackOk
        | ConfirmSelectOk => Some(true),
        ConnectionStartOk
        | ConnectionSecureOk
        | ConnectionTuneOk
        | ConnectionOpen
        | ConnectionUpdateSecretOk
        | ChannelOpen
        | AccessRequest
        | ExchangeDeclare
        | ExchangeDelete
        | ExchangeBind
        | ExchangeUnbind
        | QueueDeclare
        | QueueBind
        | QueuePurge
        | QueueDelete
        | QueueUnbind
        | BasicQos
        | BasicConsume
        | BasicPublish
        | BasicGet
        | BasicReject
        | BasicRecoverAsync
        | BasicRecover
        | TxSelect
        | TxCommit
        | TxRollback
        | ConfirmSelect => Some(false),
        ConnectionClose | ConnectionCloseOk | ChannelFlow | ChannelFlowOk | ChannelClose
        | ChannelCloseOk | BasicCancel | BasicAck | BasicNack => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Tracker, flow: u64, ms: i64, from_client: bool, event: TcpEvent<'_>) -> usize {
        let client: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let server: SocketAddr = "10.0.0.1:2222".parse().unwrap();
        let (src, dst) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        let mut n = 0;
        t.handle(
            TcpOutput {
                flow,
                packet: PacketRef {
                    file: 0,
                    frame: ms as u64,
                    ts: Timestamp(ms * 1_000_000),
                    seq: ms as u64,
                },
                src,
                dst,
                initiator: Some(client),
                event,
            },
            &mut |_| n += 1,
        );
        n
    }

    #[test]
    fn the_amqp_prefix_wait_ends_with_the_connection_and_the_caps() {
        // "AM" could still become the protocol header, but not after a FIN.
        let mut t = Tracker::new(StreamConfig::default());
        feed(&mut t, 1, 0, true, TcpEvent::Open);
        feed(&mut t, 1, 1, true, TcpEvent::Data(b"AM"));
        assert!(t.has_held());
        feed(&mut t, 1, 2, true, TcpEvent::Fin);
        assert!(!t.has_held());
        assert_eq!(t.stats().other_connections, 1);
        // Nor after more events than a connection may hold (gaps carry no bytes).
        feed(&mut t, 2, 0, true, TcpEvent::Open);
        feed(&mut t, 2, 1, true, TcpEvent::Data(b"A"));
        let mut gaps = 0;
        while t.has_held() && gaps < 2 * MAX_PENDING_EVENTS {
            gaps += 1;
            feed(
                &mut t,
                2,
                1 + gaps as i64,
                false,
                TcpEvent::Gap {
                    bytes: Some(1),
                    reason: GapReason::Lost,
                },
            );
        }
        // Open, "A" and the gaps: given up past MAX_PENDING_EVENTS.
        assert_eq!(2 + gaps, MAX_PENDING_EVENTS + 1);
        assert!(!t.has_held());
    }

    #[test]
    fn waiting_connections_are_given_up_after_the_window_oldest_first() {
        let mut t = Tracker::new(StreamConfig::default());
        feed(&mut t, 1, 0, true, TcpEvent::Open);
        feed(&mut t, 2, 1000, true, TcpEvent::Open);
        assert_eq!(t.oldest_held_ts(), Some(Timestamp(0)));
        let window = CLASSIFY_WINDOW.as_millis() as i64;
        t.expire(Timestamp((window - 1) * 1_000_000));
        assert_eq!(t.undecided_connections(), 2);
        t.expire(Timestamp(window * 1_000_000));
        assert_eq!(t.undecided_connections(), 1);
        assert_eq!(t.oldest_held_ts(), Some(Timestamp(1_000_000_000)));
        assert!(t.give_up_oldest());
        assert!(!t.has_held());
        assert!(!t.give_up_oldest());
        assert_eq!(t.stats().other_connections, 2);
    }

    #[test]
    fn lone_heartbeat_and_method_pairs_look_like_frames() {
        assert!(looks_like_frames(&[8, 0, 0, 0, 0, 0, 0, 0xCE]));
        assert!(!looks_like_frames(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!looks_like_frames(&[8, 0, 0, 0, 0, 0, 0, 0xCF]));
    }
}
