//! JSON Lines: one object per event, the schema of `docs/events.md`.
//!
//! Each line is built in a reusable buffer and written with one call. The
//! fields every event shares (`frame`, `file`, `ts`, `conn`, `dir`) are written
//! by hand with small caches — the timestamp's second and the connection's text
//! change far less often than events come — and the rest by serde. The result is
//! byte for byte what `serde_json::to_string(&event)` gives (a unit test holds it).

use std::hash::{Hash, Hasher};
use std::io::{self, Write};

use super::Sink;
use crate::event::{self, Conn, Event, EventKind, Frame, MethodKind, Text};

/// Slots of the direct-mapped cache of connection texts.
const CONN_SLOTS: usize = 256;

/// Bytes of lines a [`JsonlSink::batched`] sink gathers before it writes them.
pub const BATCH: usize = 64 * 1024;

pub struct JsonlSink<W: Write> {
    out: W,
    /// The line being built, after the lines not yet handed to `out`.
    line: Vec<u8>,
    /// Lines are handed to `out` once `line` holds this many bytes (0: each
    /// line as it is made, for a live timeline; see [`JsonlSink::batched`]).
    batch: usize,
    /// Second of the last timestamp, and its `"YYYY-MM-DDTHH:MM:SS.` text.
    ts_second: Option<i64>,
    ts_prefix: String,
    /// Per connection, per direction: everything from the timestamp's `Z` to
    /// the end of `dir`, `Z","conn":"...","dir":"c2s"`, written with one copy.
    conns: Vec<Option<(Conn, [String; 2])>>,
    /// The slot of the last connection written: consecutive events mostly share
    /// one, and a compare is cheaper than the hash.
    last_slot: Option<usize>,
    heads: FrameHeads,
    routes: RouteCaches,
}

impl<W: Write> JsonlSink<W> {
    /// A sink that hands `out` each line as it is made: a live timeline
    /// (the proxy, a live capture) shows every event when it happens.
    pub fn new(out: W) -> Self {
        Self::with_batch(out, 0)
    }

    /// A sink that hands `out` its lines [`BATCH`] bytes at a time, for an
    /// offline run whose output is read when it ends: one write call per
    /// ~500 lines rather than one a line (a dynamic call and a copy into the
    /// writer's buffer, ~110 instructions a line on the storm slice in
    /// callgrind). What is left is written by [`Sink::finish`].
    pub fn batched(out: W) -> Self {
        Self::with_batch(out, BATCH)
    }

    fn with_batch(out: W, batch: usize) -> Self {
        JsonlSink {
            out,
            batch,
            line: Vec::with_capacity(batch + 512),
            ts_second: None,
            ts_prefix: String::new(),
            conns: vec![None; CONN_SLOTS],
            last_slot: None,
            heads: FrameHeads::default(),
            routes: RouteCaches {
                deliveries: Routes::new(),
                publishes: Routes::new(),
            },
        }
    }

    /// Hands `out` the lines gathered so far. On an error they are dropped
    /// all the same: the run ends there, and a retry would write them twice.
    fn write_lines(&mut self) -> io::Result<()> {
        let r = self.out.write_all(&self.line);
        self.line.clear();
        r
    }

    /// `Z","conn":"...","dir":"..."` of an event of `conn` travelling `dir`.
    fn conn_text(&mut self, conn: Conn, dir: event::Dir) -> &str {
        let d = usize::from(dir == event::Dir::S2C);
        let slot = match self.last_slot {
            Some(slot) if matches!(&self.conns[slot], Some((c, _)) if *c == conn) => slot,
            _ => self.conn_slot(conn),
        };
        match &self.conns[slot] {
            Some((_, texts)) => &texts[d],
            None => "",
        }
    }

    /// The cache slot of `conn`, its texts made when it is not there.
    fn conn_slot(&mut self, conn: Conn) -> usize {
        let mut h = rustc_hash::FxHasher::default();
        conn.hash(&mut h);
        let slot = (h.finish() as usize) % CONN_SLOTS;
        let fresh = !matches!(&self.conns[slot], Some((c, _)) if *c == conn);
        if fresh {
            // Conn's Display has no character JSON must escape (digits, dots, colons, brackets, '-', '>').
            let text =
                |dir: event::Dir| format!("Z\",\"conn\":\"{conn}\",\"dir\":\"{}\"", dir.as_str());
            self.conns[slot] = Some((conn, [text(event::Dir::C2S), text(event::Dir::S2C)]));
        }
        self.last_slot = Some(slot);
        slot
    }
}

impl<W: Write> Sink for JsonlSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        let line_start = line.len();
        let mut n = itoa::Buffer::new();
        line.extend_from_slice(b"{\"frame\":");
        line.extend_from_slice(n.format(ev.frame).as_bytes());
        if ev.file != 0 {
            line.extend_from_slice(b",\"file\":");
            line.extend_from_slice(n.format(ev.file).as_bytes());
        }
        line.extend_from_slice(b",\"ts\":\"");
        let nanos = ev.ts.as_nanos();
        let second = nanos.div_euclid(1_000_000_000);
        if self.ts_second != Some(second) {
            self.ts_prefix.clear();
            crate::event::Timestamp(second * 1_000_000_000).write_rfc3339(&mut self.ts_prefix);
            // Keep "YYYY-MM-DDTHH:MM:SS." and write the microseconds per event.
            self.ts_prefix.truncate(20);
            self.ts_second = Some(second);
        }
        line.extend_from_slice(self.ts_prefix.as_bytes());
        // The microseconds, six digits with leading zeros, by hand: a copy of
        // constant length, where itoa and the zero padding were three.
        let mut micros = (nanos.rem_euclid(1_000_000_000) / 1000) as u32;
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        line.extend_from_slice(&digits);
        line.extend_from_slice(self.conn_text(ev.conn, ev.dir).as_bytes());
        if write_frame(&mut line, &ev.kind, &mut self.heads, &mut self.routes) {
            line.push(b'}');
        } else {
            // The kind serialises as a map ({"event":...,...}): splice its fields in.
            let mark = line.len();
            if let Err(e) = serde_json::to_writer(&mut line, &ev.kind) {
                // The lines gathered before this one stay, to be written.
                line.truncate(line_start);
                self.line = line;
                return Err(io::Error::other(e));
            }
            if line.get(mark) == Some(&b'{') {
                line[mark] = b',';
            }
        }
        line.push(b'\n');
        self.line = line;
        if self.line.len() > self.batch {
            self.write_lines()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.write_lines()?;
        self.out.flush()
    }
}

/// Appends `"key":value` pairs after the fields already in the line. Keys are
/// JSON-safe literals given with their punctuation (`,"key":`, made by [`key!`]),
/// so that writing one is a copy of a constant; strings are escaped only when
/// they need it.
struct Fields<'a>(&'a mut Vec<u8>);

/// The text written before a field's value: `,"name":`.
macro_rules! key {
    ($name:expr) => {
        concat!(",\"", $name, "\":")
    };
}

impl Fields<'_> {
    #[inline(always)]
    fn field<V: WriteValue + ?Sized>(&mut self, key: &'static str, v: &V) {
        self.0.extend_from_slice(key.as_bytes());
        v.write_value(self.0);
    }
    #[inline(always)]
    fn optional<V: WriteValue>(&mut self, key: &'static str, v: &Option<V>) {
        if let Some(v) = v {
            self.field(key, v);
        }
    }
}

/// A value written as serde would write it.
trait WriteValue {
    fn write_value(&self, out: &mut Vec<u8>);
}

macro_rules! write_values {
    ($($($ty:ty),+: |$v:ident, $out:ident| $write:expr;)*) => {
        $($( impl WriteValue for $ty {
            #[inline(always)]
            fn write_value(&self, $out: &mut Vec<u8>) {
                let $v = self;
                $write
            }
        } )+)*
    };
}

write_values! {
    str, String, Text: |v, out| write_str(out, v);
    MethodKind: |v, out| write_str(out, v.name());
    bool: |v, out| out.extend_from_slice(if *v { b"true" } else { b"false" });
    // A Value always serialises.
    serde_json::Value: |v, out| drop(serde_json::to_writer(&mut *out, v));
    u8, u16, u32, u64: |v, out| out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
}

/// A JSON string: copied as is when it holds nothing JSON must escape.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if is_plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Strings always serialise.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether every byte is printable ASCII other than `"` and `\\` (0x20..0x7f):
/// such a string is its own JSON text. Anything else (controls, quotes,
/// backslashes, DEL, any non-ASCII byte) goes to serde, which knows what to
/// escape. Eight bytes at a time: a byte-by-byte test cost about 10
/// instructions a byte, and consumer tags and connection names are 20-40 bytes.
#[inline]
fn is_plain(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether some byte of `x` is zero, or below `n` (n <= 0x80): exact for
    // "some byte", which is all that is asked (the classic SWAR test).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let zero = |x: u64| below(x, 1);
    let special = |x: u64| {
        (x & HIGH)
            | below(x, 0x20)
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | zero(x ^ (ONES * 0x7f))
    };
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        if special(u64::from_ne_bytes(a)) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The fields of a struct of optional fields that are set, in schema order.
trait WriteFields {
    fn write_fields(&self, w: &mut Fields<'_>);
}

/// [`WriteFields`] from a field list of `event` ([`event::method_args`], [`event::properties`]).
macro_rules! write_fields {
    ($(#[$doc:meta])* $name:ident {
        $( $(#[$field_doc:meta])* $field:ident $(as $key:literal)? : $ty:ty, )*
    }) => {
        impl WriteFields for event::$name {
            fn write_fields(&self, w: &mut Fields<'_>) {
                $( w.optional(key!(event::json_key!($field $($key)?)), &self.$field); )*
            }
        }
    };
}

event::method_args!(write_fields);
event::properties!(write_fields);

/// Slots of the direct-mapped cache of frame heads.
const HEAD_SLOTS: usize = 16;

/// `,"event":"frame","channel":N,"method":"NAME"` of the last frames, by
/// channel and frame name: a busy channel repeats a few (deliver, header,
/// body, ack), and one copy of the text replaces the number's formatting and
/// three copies (~30 instructions a frame).
#[derive(Default)]
struct FrameHeads([Option<(u16, &'static str, Vec<u8>)>; HEAD_SLOTS]);

impl FrameHeads {
    fn write(&mut self, line: &mut Vec<u8>, channel: u16, name: &'static str) {
        // Frame names are constants: one at the same address is the same text.
        let slot = (usize::from(channel) ^ (name.as_ptr() as usize >> 3)) % HEAD_SLOTS;
        if let Some((c, n, text)) = &self.0[slot] {
            if *c == channel && std::ptr::eq(*n, name) {
                line.extend_from_slice(text);
                return;
            }
        }
        let start = line.len();
        line.extend_from_slice(b",\"event\":\"frame\",\"channel\":");
        line.extend_from_slice(itoa::Buffer::new().format(channel).as_bytes());
        line.extend_from_slice(b",\"method\":\"");
        // Frame and method names are ASCII words, dots and dashes: nothing to escape.
        line.extend_from_slice(name.as_bytes());
        line.push(b'"');
        self.0[slot] = Some((channel, name, line[start..].to_vec()));
    }
}

/// Slots of each direct-mapped cache of routes.
const ROUTE_SLOTS: usize = 64;

/// The text of a basic.deliver's exchange, routing key and consumer tag,
/// `,"exchange":"…","routing_key":"…","consumer_tag":"…"` (a basic.publish's
/// first two), and the decoder's shared strings it was written from. Held, the
/// strings cannot be freed, so another string at the same address is the same
/// string: the text is reused when all are the same objects (the escape tests
/// and copies of each less a method; a consumer's deliveries and a publisher's
/// publishes mostly repeat them).
struct Route {
    exchange: Text,
    routing_key: Text,
    consumer_tag: Option<Text>,
    text: Vec<u8>,
}

/// The route texts of deliveries and of publishes.
struct RouteCaches {
    deliveries: Routes,
    publishes: Routes,
}

/// A cache of [`Route`]s, by consumer tag (deliveries) or routing key (publishes).
struct Routes(Vec<Option<Route>>);

impl Routes {
    fn new() -> Self {
        Routes((0..ROUTE_SLOTS).map(|_| None).collect())
    }

    /// Writes `exchange`, `routing_key` and, for a delivery, `consumer_tag` of `a`.
    fn write<const DELIVERY: bool>(&mut self, a: &event::MethodArgs, w: &mut Fields<'_>) {
        use std::sync::Arc;
        let delivery = DELIVERY;
        let ct = if delivery {
            a.consumer_tag.as_ref()
        } else {
            None
        };
        let (Some(x), Some(rk), true) = (&a.exchange, &a.routing_key, ct.is_some() == delivery)
        else {
            w.optional(key!("exchange"), &a.exchange);
            w.optional(key!("routing_key"), &a.routing_key);
            if delivery {
                w.optional(key!("consumer_tag"), &a.consumer_tag);
            }
            return;
        };
        let by = ct.unwrap_or(rk);
        let slot = (Arc::as_ptr(by).cast::<u8>() as usize >> 4) % ROUTE_SLOTS;
        if let Some(r) = &self.0[slot] {
            let same_tag = match (&r.consumer_tag, ct) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same_tag && Arc::ptr_eq(&r.exchange, x) && Arc::ptr_eq(&r.routing_key, rk) {
                w.0.extend_from_slice(&r.text);
                return;
            }
        }
        let start = w.0.len();
        w.field(key!("exchange"), x);
        w.field(key!("routing_key"), rk);
        if let Some(ct) = ct {
            w.field(key!("consumer_tag"), ct);
        }
        self.0[slot] = Some(Route {
            exchange: x.clone(),
            routing_key: rk.clone(),
            consumer_tag: ct.cloned(),
            text: w.0[start..].to_vec(),
        });
    }
}

/// The arguments of a hot method the decoder's fast path read whole
/// ([`crate::event::Method::wire_args_only`]): the ones it carries on the wire,
/// in the schema's order (that of [`event::method_args`]), the same text as
/// [`WriteFields`] gives without testing the other ~60 fields one by one.
fn write_wire_args(m: &event::Method, w: &mut Fields<'_>, routes: &mut RouteCaches) {
    let a = &m.args;
    match m.method {
        MethodKind::BasicDeliver => {
            routes.deliveries.write::<true>(a, w);
            w.optional(key!("delivery_tag"), &a.delivery_tag);
            w.optional(key!("redelivered"), &a.redelivered);
        }
        MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject => {
            w.optional(key!("delivery_tag"), &a.delivery_tag);
            w.optional(key!("multiple"), &a.multiple);
            w.optional(key!("requeue"), &a.requeue);
        }
        MethodKind::BasicPublish => {
            routes.publishes.write::<false>(a, w);
            w.optional(key!("mandatory"), &a.mandatory);
            w.optional(key!("immediate"), &a.immediate);
        }
        // Not a hot method: the flag is never set on one; write them all.
        _ => a.write_fields(w),
    }
}

/// The frame kinds that make up nearly all of a busy capture, written by hand;
/// false for anything else (serde writes those).
fn write_frame(
    line: &mut Vec<u8>,
    kind: &EventKind,
    heads: &mut FrameHeads,
    routes: &mut RouteCaches,
) -> bool {
    let EventKind::Frame { channel, frame } = kind else {
        return false;
    };
    heads.write(line, *channel, frame.name());
    let mut w = Fields(line);
    match frame {
        Frame::Method(m) if m.wire_args_only => write_wire_args(m, &mut w, routes),
        Frame::Method(m) => m.args.write_fields(&mut w),
        Frame::ContentHeader(h) => {
            w.field(key!("class_id"), &h.class_id);
            w.field(key!("body_size"), &h.body_size);
            h.properties.write_fields(&mut w);
        }
        Frame::ContentBody(b) => {
            w.field(key!("size"), &b.size);
            w.optional(key!("body"), &b.body);
            if let Some(n) = b.cut.0 {
                w.field(key!("truncated"), &true);
                w.field(key!("missing_bytes"), &n.get());
            }
        }
        Frame::Heartbeat(_) => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    /// An event between `client` and `broker` (socket addresses).
    fn event(
        frame: u64,
        file: u32,
        ts: i64,
        (client, broker): (&str, &str),
        kind: EventKind,
    ) -> Event {
        let conn = Conn {
            client: client.parse().unwrap(),
            broker: broker.parse().unwrap(),
        };
        Event {
            frame,
            file,
            ts: Timestamp(ts),
            conn,
            dir: Dir::S2C,
            kind,
        }
    }

    #[test]
    fn lines_are_exactly_what_serde_gives() {
        let args = MethodArgs {
            queue: Some("tasks \"quoted\" \u{e9}".into()),
            delivery_tag: Some(7),
            ..MethodArgs::default()
        };
        let kinds = vec![
            EventKind::TcpOpen,
            EventKind::Gap {
                bytes: None,
                reason: GapReason::MidConnection,
            },
            EventKind::Frame {
                channel: 1,
                frame: Frame::Method(Box::new(Method::new(MethodKind::BasicConsume, args))),
            },
            EventKind::Frame {
                channel: 0,
                frame: Frame::Heartbeat(Heartbeat),
            },
        ];
        let mut events = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            for (file, ts) in [
                (0u32, 1_795_614_716_000_001_000i64),
                (2, 1_795_614_716_999_999_999),
                (0, 5),
            ] {
                let conn = ("[::1]:40000", "[::1]:5682");
                events.push(event(i as u64 + 1, file, ts, conn, kind.clone()));
            }
        }
        assert_written_as_serde(events);
    }

    /// Asserts that the sink writes `events` as serde_json writes them, a line
    /// each, as each event comes; and that a batched sink writes the same once finished.
    fn assert_written_as_serde(events: impl IntoIterator<Item = Event>) {
        let mut sink = JsonlSink::new(Vec::new());
        let mut batched = JsonlSink::batched(Vec::new());
        let mut expected = String::new();
        for ev in events {
            sink.event(&ev).unwrap();
            batched.event(&ev).unwrap();
            expected.push_str(&serde_json::to_string(&ev).unwrap());
            expected.push('\n');
            assert_eq!(
                sink.out.len(),
                expected.len(),
                "a line is written as it is made"
            );
        }
        assert_eq!(String::from_utf8(sink.out).unwrap(), expected);
        batched.finish().unwrap();
        assert_eq!(String::from_utf8(batched.out).unwrap(), expected);
    }

    /// Frame heads cached by channel and name: many channels and kinds, so
    /// that slots are shared and replaced, each written as serde writes it.
    #[test]
    fn cached_frame_heads_are_what_serde_gives() {
        let mut events = Vec::new();
        for round in 0..2 {
            for channel in [0u16, 1, 2, 17, 33, 65535] {
                let frames = [
                    Frame::Heartbeat(Heartbeat),
                    Frame::Method(Box::new(Method::new(
                        MethodKind::BasicAck,
                        MethodArgs::default(),
                    ))),
                    Frame::Method(Box::new(Method::new(
                        MethodKind::BasicNack,
                        MethodArgs::default(),
                    ))),
                    Frame::ContentHeader(Box::default()),
                ];
                for frame in frames {
                    let kind = EventKind::Frame { channel, frame };
                    let conn = ("10.0.0.1:40000", "10.0.0.2:5672");
                    events.push(event(round, 0, 5, conn, kind));
                }
            }
        }
        assert_written_as_serde(events);
    }

    /// A batched sink writes in pieces of about [`BATCH`] bytes, whole lines
    /// only, and the rest when it finishes.
    #[test]
    fn batched_lines_are_written_whole_and_all_at_finish() {
        struct Writes(Vec<Vec<u8>>);
        impl Write for Writes {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = JsonlSink::batched(Writes(Vec::new()));
        let ev = event(
            1,
            0,
            5,
            ("10.0.0.1:40000", "10.0.0.2:5672"),
            EventKind::TcpOpen,
        );
        let line = serde_json::to_string(&ev).unwrap() + "\n";
        let n = 3 * BATCH / line.len();
        for _ in 0..n {
            sink.event(&ev).unwrap();
        }
        let before_finish = sink.out.0.len();
        assert!((2..=3).contains(&before_finish), "{before_finish} writes");
        sink.finish().unwrap();
        let writes = &sink.out.0;
        assert_eq!(writes.len(), before_finish + 1);
        for w in writes {
            assert!(w.len() <= BATCH + line.len() && w.ends_with(b"\n"));
        }
        assert_eq!(writes.concat(), line.repeat(n).into_bytes());
    }

    /// Deliveries decoded by the fast path, whose route text is cached: a
    /// changed exchange or routing key under the same consumer tag, a string
    /// that needs escaping, and the same three strings again.
    #[test]
    fn cached_delivery_routes_are_what_serde_gives() {
        let deliver = |ct: &str, x: &str, rk: &str, tag: u64| {
            let mut p = vec![0, 60, 0, 60];
            p.push(ct.len() as u8);
            p.extend_from_slice(ct.as_bytes());
            p.extend_from_slice(&tag.to_be_bytes());
            p.push(1);
            for s in [x, rk] {
                p.push(s.len() as u8);
                p.extend_from_slice(s.as_bytes());
            }
            p
        };
        let mut strings = crate::amqp::fast::Strings::default();
        let mut events = Vec::new();
        let routes = [
            ("ctag-1", "jobs", "work"),
            ("ctag-1", "jobs", "work"),
            ("ctag-1", "other", "work"),
            ("ctag-1", "other", "r\"k"),
            ("ctag-2", "jobs", "work"),
            ("ctag-1", "jobs", "work"),
        ];
        for (i, (ct, x, rk)) in routes.into_iter().enumerate() {
            let m = crate::amqp::fast::method(&deliver(ct, x, rk, i as u64 + 1), &mut strings)
                .expect("a basic.deliver");
            assert!(m.wire_args_only);
            let ev = event(
                i as u64 + 1,
                0,
                1_700_000_000_000_000_000,
                ("10.0.0.1:40000", "10.0.0.2:5672"),
                EventKind::Frame {
                    channel: 1,
                    frame: Frame::Method(m),
                },
            );
            events.push(ev);
        }
        assert_written_as_serde(events);
    }

    #[test]
    fn every_event_of_every_committed_capture_matches_serde() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        let mut files = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                    files.push(p);
                }
            }
        }
        assert!(!files.is_empty());
        let cfg = crate::stream::StreamConfig {
            decoder: crate::amqp::DecoderConfig {
                body_prefix: 24,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut n = 0;
        for f in files {
            let mut sink = JsonlSink::new(Vec::new());
            let mut expected = Vec::new();
            crate::pipeline::run_files(std::slice::from_ref(&f), &cfg, |ev| {
                expected.extend_from_slice(serde_json::to_string(ev).unwrap().as_bytes());
                expected.push(b'\n');
                n += 1;
                sink.event(ev)
            })
            .unwrap();
            let (got, want) = (
                String::from_utf8(sink.out).unwrap(),
                String::from_utf8(expected).unwrap(),
            );
            for (g, w) in got.lines().zip(want.lines()) {
                assert_eq!(g, w, "{}", f.display());
            }
            assert_eq!(got.len(), want.len(), "{}", f.display());
        }
        assert!(n > 3000, "{n} events");
    }

    #[test]
    fn plain_strings_are_told_apart_eight_bytes_at_a_time_as_byte_by_byte() {
        let simple = |b: &[u8]| {
            b.iter()
                .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
        };
        // Every byte value at every position of strings of 0 to 19 bytes.
        for len in 0..20 {
            for at in 0..len {
                for v in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = v;
                    assert_eq!(is_plain(&b), simple(&b), "{v:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn content_frames_with_awkward_strings_match_serde() {
        let header = ContentHeader {
            class_id: 60,
            body_size: 3,
            properties: Properties {
                message_id: Some("id\twith \"tab\" \u{7f} é".into()),
                kind: Some("t".into()),
                headers: Some(serde_json::json!({"x-retries": 3, "k\n": "v"})),
                ..Default::default()
            },
            ..Default::default()
        };
        let kinds = [
            EventKind::Frame {
                channel: 1,
                frame: Frame::ContentHeader(Box::new(header)),
            },
            EventKind::Frame {
                channel: 1,
                frame: Frame::ContentBody(ContentBody {
                    method: ContentBodyTag,
                    size: 3,
                    body: Some("a\u{0}\\".into()),
                    cut: BodyCut(std::num::NonZeroU32::new(2)),
                }),
            },
        ];
        for kind in kinds {
            let ev = event(1, 0, 0, ("127.0.0.1:1", "127.0.0.1:5672"), kind);
            assert_written_as_serde([ev]);
        }
    }
}
