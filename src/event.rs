//! The typed timeline: what every later stage (analyzer, sinks) consumes.
//!
//! An [`Event`] is one AMQP frame or one connection-level happening (TCP open,
//! close, reset, a hole in the stream, a decode error), stamped with the packet
//! that completed it (`frame`, `ts`) and the connection and direction it
//! travelled on. Field names are AMQP's own (`delivery_tag`, `consumer_tag`,
//! `prefetch_count`). Serialisation to JSON happens in the sinks; this module
//! only derives `Serialize` so the schema lives next to the types
//! (`docs/events.md` documents it, version [`SCHEMA_VERSION`]).
//!
//! This module owns no I/O and knows nothing of where events come from.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};

/// Version of the JSON Lines event schema documented in `docs/events.md`.
pub const SCHEMA_VERSION: u32 = 1;

/// A string of a frame that repeats from frame to frame (consumer tag,
/// exchange, routing key, message properties): shared, so that the decoder can
/// hand out the same one again without allocating (see `amqp::fast`).
pub type Text = std::sync::Arc<str>;

/// A point in time, in nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock: the one clock of every live source (proxy, interface capture, `run`).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_secs_nanos(d.as_secs() as i64, d.subsec_nanos())
    }

    pub fn from_secs_nanos(secs: i64, nanos: u32) -> Self {
        Timestamp(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(nanos as i64),
        )
    }

    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Seconds (as f64) from `earlier` to `self`.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1e9
    }

    /// RFC 3339, UTC, microsecond precision: `2026-11-25T13:24:32.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let mut s = String::with_capacity(27);
        self.write_rfc3339(&mut s);
        s
    }

    /// Appends the RFC 3339 form to `out` without an intermediate allocation.
    pub fn write_rfc3339(self, out: &mut String) {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1000;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        use fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            y,
            m,
            d,
            sod / 3600,
            (sod / 60) % 60,
            sod % 60,
            micros
        );
    }
}

impl Timestamp {
    /// `2026-12-01T15:20:00.123456789+01:00`: RFC 3339 (`T`, `t` or a space
    /// between date and time; a fraction of up to 9 digits; `Z`, `z` or an
    /// offset), or the same with no zone, taken as UTC (Celery's `eta`).
    pub fn parse_iso8601(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
        };
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut i = 19;
        let mut nanos = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let mut digits = 0;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                if digits < 9 {
                    nanos = nanos * 10 + i64::from(c - b'0');
                    digits += 1;
                }
                i += 1;
            }
            nanos *= 10i64.pow(9 - digits);
        }
        let offset = match b.get(i) {
            None | Some(b'Z' | b'z') => 0,
            Some(&sign @ (b'+' | b'-')) => {
                let o = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) * 60;
                if sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return None,
        };
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
        Some(Timestamp(secs * 1_000_000_000 + nanos))
    }
}

/// A proleptic Gregorian (year, month, day) to days since 1970-01-01:
/// Howard Hinnant's `days_from_civil`, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`, valid for the whole i64 day range we use.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// One TCP connection, oriented: the AMQP client and the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conn {
    pub client: SocketAddr,
    pub broker: SocketAddr,
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.client, self.broker)
    }
}

impl Serialize for Conn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Direction of travel on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dir {
    /// Client to server (broker).
    #[serde(rename = "c2s")]
    C2S,
    /// Server (broker) to client.
    #[serde(rename = "s2c")]
    S2C,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::C2S => "c2s",
            Dir::S2C => "s2c",
        }
    }
    pub fn reverse(self) -> Dir {
        match self {
            Dir::C2S => Dir::S2C,
            Dir::S2C => Dir::C2S,
        }
    }
}

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// 1-based number of the packet in its capture file (Wireshark's numbering),
    /// or the proxy's own running count of reads for live sources.
    pub frame: u64,
    /// Index of the input file when several are merged (0 otherwise); not serialised when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub file: u32,
    pub ts: Timestamp,
    pub conn: Conn,
    pub dir: Dir,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event that owns nothing and stands for none: what is left where an
    /// event was taken out (a sharded batch's held event, the tracker's lent
    /// slot before its first event).
    pub fn placeholder() -> Event {
        Event {
            frame: 0,
            file: 0,
            ts: Timestamp::default(),
            conn: Conn {
                client: SocketAddr::from(([0, 0, 0, 0], 0)),
                broker: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            dir: Dir::C2S,
            kind: EventKind::TcpOpen,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Why a hole appears in a TCP byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The capture began after the connection did: the bytes before it are unknown.
    MidConnection,
    /// Segments are missing from the capture (dropped by the capturing host or never seen).
    Lost,
    /// The packet was captured only in part (snaplen): its payload is cut.
    Truncated,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event")]
pub enum EventKind {
    /// A SYN was seen: the connection starts inside the capture.
    #[serde(rename = "tcp.open")]
    TcpOpen,
    /// A FIN from `dir`'s sender.
    #[serde(rename = "tcp.close")]
    TcpClose,
    /// An RST from `dir`'s sender.
    #[serde(rename = "tcp.reset")]
    TcpReset,
    /// `dir`'s sender advertised a zero TCP receive window: it stopped reading
    /// (a broker under a memory alarm stops reading a publisher's connection).
    #[serde(rename = "tcp.zero-window")]
    TcpZeroWindow,
    /// `dir`'s sender's window opened again after a zero window.
    #[serde(rename = "tcp.window-open")]
    TcpWindowOpen,
    /// A hole in the byte stream; `bytes` is its size when known.
    #[serde(rename = "gap")]
    Gap {
        bytes: Option<u64>,
        reason: GapReason,
    },
    /// Input that could not be decoded, with its offset in the direction's byte stream.
    #[serde(rename = "error")]
    Error { offset: u64, error: DecodeError },
    /// The 8-byte protocol header (`AMQP\0\0\x09\x01` for AMQP 0-9-1).
    #[serde(rename = "frame")]
    ProtocolHeader {
        method: ProtocolHeaderTag,
        protocol: String,
        supported: bool,
    },
    /// A frame of AMQP 0-9-1.
    #[serde(rename = "frame")]
    Frame {
        channel: u16,
        #[serde(flatten)]
        frame: Frame,
    },
}

impl EventKind {
    /// The event's timeline name: its method (`basic.deliver`, `content-header`, …)
    /// for a frame, else `tcp.open`, `tcp.close`, `tcp.reset`, `tcp.zero-window`,
    /// `tcp.window-open`, `gap`, `error` or `protocol-header`.
    #[inline]
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Frame { frame, .. } => frame.name(),
            EventKind::ProtocolHeader { .. } => "protocol-header",
            EventKind::TcpOpen => "tcp.open",
            EventKind::TcpClose => "tcp.close",
            EventKind::TcpReset => "tcp.reset",
            EventKind::TcpZeroWindow => "tcp.zero-window",
            EventKind::TcpWindowOpen => "tcp.window-open",
            EventKind::Gap { .. } => "gap",
            EventKind::Error { .. } => "error",
        }
    }
}

/// Serialises as `"method": "protocol-header"` so every frame object has a `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtocolHeaderTag;

impl Serialize for ProtocolHeaderTag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("protocol-header")
    }
}

/// The payload of an AMQP frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Frame {
    Method(Box<Method>),
    ContentHeader(Box<ContentHeader>),
    ContentBody(ContentBody),
    Heartbeat(Heartbeat),
}

impl Frame {
    /// The `method` field of the schema: `class.method`, `content-header`,
    /// `content-body` or `heartbeat`.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Method(m) => m.method.name(),
            Frame::ContentHeader(_) => "content-header",
            Frame::ContentBody(_) => "content-body",
            Frame::Heartbeat(_) => "heartbeat",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat;

impl Serialize for Heartbeat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("method", "heartbeat")?;
        m.end()
    }
}

/// A content body frame: its size, and its first bytes only when the user asked (`--bodies N`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentBody {
    pub method: ContentBodyTag,
    pub size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Set when the snaplen cut the frame: `body` then holds only the captured bytes.
    #[serde(flatten)]
    pub cut: BodyCut,
}

/// The cut marker of a content body, `"truncated": true` and `"missing_bytes"`
/// when set. Four bytes, so that a body frame, and with it every [`Event`],
/// is no bigger for it (the timeline moves events by value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyCut(pub Option<std::num::NonZeroU32>);

impl Serialize for BodyCut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if let Some(n) = self.0 {
            m.serialize_entry("truncated", &true)?;
            m.serialize_entry("missing_bytes", &n.get())?;
        }
        m.end()
    }
}

/// How much of a frame the capture lacks: a frame that starts in the bytes a
/// snaplen kept but ends after them. Its type, channel and size come from
/// its 7-byte header; what follows is read as far as the kept bytes go, each
/// argument or property only when it is there whole (none is ever guessed).
/// In the timeline it is `"truncated": true` with `"missing_bytes"`, on the
/// method's arguments, the content header's properties or the content body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Bytes of the frame after the last one captured (frame-end octet included).
    pub missing_bytes: u64,
}

impl Frame {
    /// The cut marker of a frame the snaplen cut, `None` for a whole frame.
    pub fn cut(&self) -> Option<Cut> {
        let (truncated, missing) = match self {
            Frame::Method(m) => (m.args.truncated, m.args.missing_bytes),
            Frame::ContentHeader(h) => (h.properties.truncated, h.properties.missing_bytes),
            Frame::ContentBody(b) => (b.cut.0.map(|_| true), b.cut.0.map(|n| n.get() as u64)),
            Frame::Heartbeat(_) => (None, None),
        };
        truncated.filter(|t| *t).map(|_| Cut {
            missing_bytes: missing.unwrap_or(0),
        })
    }

    /// Marks the frame as cut (a heartbeat has nothing to mark: its 7-byte
    /// header says all there is).
    pub fn set_cut(&mut self, cut: Cut) {
        let (t, m) = match self {
            Frame::Method(m) => {
                m.wire_args_only = false;
                (&mut m.args.truncated, &mut m.args.missing_bytes)
            }
            Frame::ContentHeader(h) => {
                (&mut h.properties.truncated, &mut h.properties.missing_bytes)
            }
            Frame::ContentBody(b) => {
                // A body frame's size is a u32, and its frame is 8 bytes more.
                let n = cut.missing_bytes.clamp(1, u32::MAX as u64) as u32;
                b.cut = BodyCut(std::num::NonZeroU32::new(n));
                return;
            }
            Frame::Heartbeat(_) => return,
        };
        *t = Some(true);
        *m = Some(cut.missing_bytes);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentBodyTag;
impl Serialize for ContentBodyTag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("content-body")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentHeaderTag;
impl Serialize for ContentHeaderTag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("content-header")
    }
}

/// A content header frame: body size and the message properties.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ContentHeader {
    pub method: ContentHeaderTag,
    pub class_id: u16,
    pub body_size: u64,
    #[serde(flatten)]
    pub properties: Properties,
}

/// A method frame: which method, and the arguments amqptrace reports.
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    pub method: MethodKind,
    #[serde(flatten)]
    pub args: MethodArgs,
    /// Set by the decoder's fast path (`amqp::fast::method`) on a whole hot
    /// method: its arguments are exactly the ones that method carries on the
    /// wire, every other field unset. The JSON Lines writer then writes those
    /// few without looking at the ~60 others (~150 instructions a method).
    /// Not part of the event: no output shows it and equality ignores it.
    #[serde(skip)]
    pub(crate) wire_args_only: bool,
}

impl Method {
    /// A method with these arguments (any may be set).
    pub fn new(method: MethodKind, args: MethodArgs) -> Self {
        Method {
            method,
            args,
            wire_args_only: false,
        }
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method && self.args == other.args
    }
}

macro_rules! method_kinds {
    ($( $variant:ident = ($class:expr, $id:expr, $name:expr) ),* $(,)?) => {
        /// Every method of AMQP 0-9-1 with RabbitMQ's extensions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MethodKind { $( $variant ),* }

        impl MethodKind {
            /// All methods, in class/method id order.
            pub const ALL: &'static [MethodKind] = &[$( MethodKind::$variant ),*];

            /// `class.method` as the spec spells it, e.g. `basic.consume-ok`.
            pub fn name(self) -> &'static str {
                match self { $( MethodKind::$variant => $name ),* }
            }
            pub fn class_id(self) -> u16 {
                match self { $( MethodKind::$variant => $class ),* }
            }
            pub fn method_id(self) -> u16 {
                match self { $( MethodKind::$variant => $id ),* }
            }
            /// The method with these ids, if AMQP 0-9-1 (with RabbitMQ's extensions) has one.
            pub fn from_ids(class_id: u16, method_id: u16) -> Option<MethodKind> {
                match (class_id, method_id) {
                    $( ($class, $id) => Some(MethodKind::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

method_kinds! {
    ConnectionStart = (10, 10, "connection.start"),
    ConnectionStartOk = (10, 11, "connection.start-ok"),
    ConnectionSecure = (10, 20, "connection.secure"),
    ConnectionSecureOk = (10, 21, "connection.secure-ok"),
    ConnectionTune = (10, 30, "connection.tune"),
    ConnectionTuneOk = (10, 31, "connection.tune-ok"),
    ConnectionOpen = (10, 40, "connection.open"),
    ConnectionOpenOk = (10, 41, "connection.open-ok"),
    ConnectionClose = (10, 50, "connection.close"),
    ConnectionCloseOk = (10, 51, "connection.close-ok"),
    ConnectionBlocked = (10, 60, "connection.blocked"),
    ConnectionUnblocked = (10, 61, "connection.unblocked"),
    ConnectionUpdateSecret = (10, 70, "connection.update-secret"),
    ConnectionUpdateSecretOk = (10, 71, "connection.update-secret-ok"),
    ChannelOpen = (20, 10, "channel.open"),
    ChannelOpenOk = (20, 11, "channel.open-ok"),
    ChannelFlow = (20, 20, "channel.flow"),
    ChannelFlowOk = (20, 21, "channel.flow-ok"),
    ChannelClose = (20, 40, "channel.close"),
    ChannelCloseOk = (20, 41, "channel.close-ok"),
    AccessRequest = (30, 10, "access.request"),
    AccessRequestOk = (30, 11, "access.request-ok"),
    ExchangeDeclare = (40, 10, "exchange.declare"),
    ExchangeDeclareOk = (40, 11, "exchange.declare-ok"),
    ExchangeDelete = (40, 20, "exchange.delete"),
    ExchangeDeleteOk = (40, 21, "exchange.delete-ok"),
    ExchangeBind = (40, 30, "exchange.bind"),
    ExchangeBindOk = (40, 31, "exchange.bind-ok"),
    ExchangeUnbind = (40, 40, "exchange.unbind"),
    ExchangeUnbindOk = (40, 51, "exchange.unbind-ok"),
    QueueDeclare = (50, 10, "queue.declare"),
    QueueDeclareOk = (50, 11, "queue.declare-ok"),
    QueueBind = (50, 20, "queue.bind"),
    QueueBindOk = (50, 21, "queue.bind-ok"),
    QueuePurge = (50, 30, "queue.purge"),
    QueuePurgeOk = (50, 31, "queue.purge-ok"),
    QueueDelete = (50, 40, "queue.delete"),
    QueueDeleteOk = (50, 41, "queue.delete-ok"),
    QueueUnbind = (50, 50, "queue.unbind"),
    QueueUnbindOk = (50, 51, "queue.unbind-ok"),
    BasicQos = (60, 10, "basic.qos"),
    BasicQosOk = (60, 11, "basic.qos-ok"),
    BasicConsume = (60, 20, "basic.consume"),
    BasicConsumeOk = (60, 21, "basic.consume-ok"),
    BasicCancel = (60, 30, "basic.cancel"),
    BasicCancelOk = (60, 31, "basic.cancel-ok"),
    BasicPublish = (60, 40, "basic.publish"),
    BasicReturn = (60, 50, "basic.return"),
    BasicDeliver = (60, 60, "basic.deliver"),
    BasicGet = (60, 70, "basic.get"),
    BasicGetOk = (60, 71, "basic.get-ok"),
    BasicGetEmpty = (60, 72, "basic.get-empty"),
    BasicAck = (60, 80, "basic.ack"),
    BasicReject = (60, 90, "basic.reject"),
    BasicRecoverAsync = (60, 100, "basic.recover-async"),
    BasicRecover = (60, 110, "basic.recover"),
    BasicRecoverOk = (60, 111, "basic.recover-ok"),
    BasicNack = (60, 120, "basic.nack"),
    TxSelect = (90, 10, "tx.select"),
    TxSelectOk = (90, 11, "tx.select-ok"),
    TxCommit = (90, 20, "tx.commit"),
    TxCommitOk = (90, 21, "tx.commit-ok"),
    TxRollback = (90, 30, "tx.rollback"),
    TxRollbackOk = (90, 31, "tx.rollback-ok"),
    ConfirmSelect = (85, 10, "confirm.select"),
    ConfirmSelectOk = (85, 11, "confirm.select-ok"),
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for MethodKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The one list of [`MethodArgs`]' fields, handed to the macro `$then`: each
/// field with its doc, its type inside `Option`, and (after `as`) its JSON key
/// when that is not its name. From it come the struct (here, by
/// [`optional_fields`]), the JSON Lines writer (`sink::jsonl`), the JSON Lines
/// reader (`source::timeline`) and [`MethodArgs::FIELDS`], which a test holds
/// against the table of `docs/events.md`. A field added here is written, read
/// back, cleared for reuse (`amqp::fast`) and checked against the docs with no
/// other line to write. Types are spelt in full: they resolve where `$then` is.
macro_rules! method_args {
    ($then:ident) => {
        $then! {
            /// The arguments of a method that amqptrace reports, under AMQP's own names.
            /// Only the fields the method carries are set; credentials never appear here
            /// (see `amqp::convert`).
            MethodArgs {
                queue: String,
                exchange: $crate::event::Text,
                routing_key: $crate::event::Text,
                consumer_tag: $crate::event::Text,
                delivery_tag: u64,
                multiple: bool,
                requeue: bool,
                redelivered: bool,
                prefetch_count: u16,
                prefetch_size: u32,
                global: bool,
                no_ack: bool,
                no_local: bool,
                exclusive: bool,
                passive: bool,
                durable: bool,
                auto_delete: bool,
                internal: bool,
                if_unused: bool,
                if_empty: bool,
                mandatory: bool,
                immediate: bool,
                nowait: bool,
                exchange_type: String,
                source: String,
                destination: String,
                message_count: u32,
                consumer_count: u32,
                /// Declared queue/consumer/binding arguments (`x-*`), when non-empty.
                arguments: ::serde_json::Value,
                reply_code: u16,
                reply_text: String,
                /// For `connection.close`/`channel.close`: ids of the method that caused it.
                class_id: u16,
                method_id: u16,
                /// `class_id`/`method_id` resolved to a name, e.g. `basic.consume`.
                failing_method: $crate::event::MethodKind,
                active: bool,
                /// `connection.blocked` and `connection.update-secret` reason.
                reason: String,
                vhost: String,
                channel_max: u16,
                frame_max: u32,
                heartbeat: u16,
                /// `connection.start-ok`: the SASL mechanism chosen.
                mechanism: String,
                /// `connection.start`: the mechanisms the broker offers.
                mechanisms: String,
                /// `connection.start-ok`: the user name from a PLAIN or AMQPLAIN response (never the password).
                user: String,
                locale: String,
                /// `connection.start`: `product`/`version` of the broker; `connection.start-ok`: of the client library.
                product: String,
                version: String,
                platform: String,
                connection_name: String,
                realm: String,
                /// The frame was cut by the capture's snaplen (see [`Cut`]): the
                /// arguments after the last one it kept whole are absent.
                truncated: bool,
                /// Bytes of the frame the capture lacks (its size field says how many).
                missing_bytes: u64,
            }
        }
    };
}
pub(crate) use method_args;

/// The one list of [`Properties`]' fields, as [`method_args`] lists the method arguments.
macro_rules! properties {
    ($then:ident) => {
        $then! {
            /// Basic message properties (only those present are serialised).
            Properties {
                content_type: $crate::event::Text,
                content_encoding: $crate::event::Text,
                headers: ::serde_json::Value,
                delivery_mode: u8,
                priority: u8,
                correlation_id: $crate::event::Text,
                reply_to: $crate::event::Text,
                expiration: $crate::event::Text,
                message_id: $crate::event::Text,
                timestamp: u64,
                kind as "type": $crate::event::Text,
                user_id: $crate::event::Text,
                app_id: $crate::event::Text,
                /// The content header was cut by the snaplen: the properties after the last whole one are absent.
                truncated: bool,
                missing_bytes: u64,
            }
        }
    };
}
pub(crate) use properties;

/// A field's JSON key: its name, or the key given after `as`.
macro_rules! json_key {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $key:literal) => {
        $key
    };
}
pub(crate) use json_key;

/// A struct of optional fields from its list ([`method_args`], [`properties`]):
/// a field is serialised only when set, under its JSON key.
macro_rules! optional_fields {
    ($(#[$doc:meta])* $name:ident {
        $( $(#[$field_doc:meta])* $field:ident $(as $key:literal)? : $ty:ty, )*
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Default, Serialize)]
        pub struct $name {
            $(
                $(#[$field_doc])*
                #[serde(skip_serializing_if = "Option::is_none" $(, rename = $key)?)]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// Every field's JSON key and JSON type, in the order they are written.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$( (json_key!($field $($key)?), <$ty as JsonType>::NAME) ),*];
        }
    };
}

method_args!(optional_fields);
properties!(optional_fields);

/// The JSON type of a field's values, as `docs/events.md` names it.
pub trait JsonType {
    const NAME: &'static str;
}

macro_rules! json_types {
    ($($name:literal: $($ty:ty),*;)*) => {
        $($( impl JsonType for $ty { const NAME: &'static str = $name; } )*)*
    };
}

json_types! {
    "string": String, Text, MethodKind;
    "integer": u8, u16, u32, u64;
    "boolean": bool;
    "object": serde_json::Value;
}

/// Why bytes could not be decoded. Serialised as `{"kind": ..., "detail": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecodeError {
    /// The peer does not speak AMQP at all (first bytes shown, escaped).
    #[error("not AMQP: stream starts with {first_bytes}")]
    NotAmqp { first_bytes: String },
    /// The peer announced another protocol or AMQP version.
    #[error("unsupported protocol {protocol}: only AMQP 0-9-1 is decoded")]
    UnsupportedProtocol { protocol: String },
    /// A TLS connection whose secrets are not known (on a TLS port, 5671 by
    /// default, or a broker port): its bytes are encrypted. `server_name` is
    /// the ClientHello's SNI, when the capture has it.
    #[error("TLS on port {port}{}: not decoded without its secrets (--tls-keylog FILE, or a pcapng with decryption secrets)", server_name_note(.server_name))]
    Tls {
        port: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        server_name: Option<String>,
    },
    /// A TLS connection being decrypted whose records stop decrypting.
    #[error("TLS: {detail}")]
    TlsDecrypt { detail: String },
    #[error("invalid frame type {frame_type}")]
    BadFrameType { frame_type: u8 },
    #[error("frame size {size} exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: u32, limit: u32 },
    #[error("frame-end octet is 0x{found:02x}, expected 0xce")]
    BadFrameEnd { found: u8 },
    #[error("malformed {what} on channel {channel}: {detail}")]
    Malformed {
        what: String,
        channel: u16,
        detail: String,
    },
}

fn server_name_note(server_name: &Option<String>) -> String {
    server_name
        .as_ref()
        .map(|n| format!(" (server name {n})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(field, type)` of each row of the table that follows `heading` in `docs/events.md`.
    fn documented_fields(heading: &str) -> Vec<(String, String)> {
        let doc = include_str!("../docs/events.md");
        let Some(start) = doc.find(heading) else {
            panic!("docs/events.md has no {heading:?}");
        };
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // the header and its |---| row
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_string(), cells[2].to_string())
            })
            .collect()
    }

    /// The table in the docs and the field list in the code, field by field and
    /// in order; every row that differs is named.
    fn assert_documented(heading: &str, fields: &[(&str, &str)]) {
        let documented = documented_fields(heading);
        let code: Vec<(String, String)> = fields
            .iter()
            .map(|(k, t)| (k.to_string(), t.to_string()))
            .collect();
        if documented == code {
            return;
        }
        let mut diff = String::new();
        for (k, t) in &code {
            if !documented.contains(&(k.clone(), t.clone())) {
                diff += &format!("+ {k}: {t} (in the code, not in the docs)\n");
            }
        }
        for (k, t) in &documented {
            if !code.contains(&(k.clone(), t.clone())) {
                diff += &format!("- {k}: {t} (in the docs, not in the code)\n");
            }
        }
        if diff.is_empty() {
            diff = format!("same fields, other order:\n docs {documented:?}\n code {code:?}\n");
        }
        panic!("docs/events.md {heading:?} and the code disagree:\n{diff}");
    }

    #[test]
    fn docs_list_every_method_argument_with_its_type() {
        assert_documented("### Method arguments", MethodArgs::FIELDS);
    }

    #[test]
    fn docs_list_every_message_property_with_its_type() {
        assert_documented("### Content header properties", Properties::FIELDS);
    }
}
