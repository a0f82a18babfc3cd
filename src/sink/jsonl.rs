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

pub struct JsonlSink<W: Write> {
    out: W,
    line: Vec<u8>,
    /// Second of the last timestamp, and its `"YYYY-MM-DDTHH:MM:SS.` text.
    ts_second: Option<i64>,
    ts_prefix: String,
    conns: Vec<Option<(Conn, String)>>,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        JsonlSink {
            out,
            line: Vec::with_capacity(512),
            ts_second: None,
            ts_prefix: String::new(),
            conns: vec![None; CONN_SLOTS],
        }
    }

    fn conn_text(&mut self, conn: Conn) -> &str {
        let mut h = rustc_hash::FxHasher::default();
        conn.hash(&mut h);
        let slot = (h.finish() as usize) % CONN_SLOTS;
        let fresh = !matches!(&self.conns[slot], Some((c, _)) if *c == conn);
        if fresh {
            // Conn's Display has no character JSON must escape (digits, dots, colons, brackets, '-', '>').
            self.conns[slot] = Some((conn, conn.to_string()));
        }
        match &self.conns[slot] {
            Some((_, text)) => text,
            None => "",
        }
    }
}

impl<W: Write> Sink for JsonlSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
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
        let micros = nanos.rem_euclid(1_000_000_000) / 1000;
        let digits = n.format(micros);
        line.extend(std::iter::repeat_n(b'0', 6 - digits.len()));
        line.extend_from_slice(digits.as_bytes());
        line.extend_from_slice(b"Z\",\"conn\":\"");
        line.extend_from_slice(self.conn_text(ev.conn).as_bytes());
        line.extend_from_slice(b"\",\"dir\":\"");
        line.extend_from_slice(ev.dir.as_str().as_bytes());
        line.extend_from_slice(b"\"");
        if write_frame(&mut line, &ev.kind) {
            line.push(b'}');
        } else {
            // The kind serialises as a map ({"event":...,...}): splice its fields in.
            let mark = line.len();
            serde_json::to_writer(&mut line, &ev.kind).map_err(io::Error::other)?;
            if line.get(mark) == Some(&b'{') {
                line[mark] = b',';
            }
        }
        line.push(b'\n');
        let r = self.out.write_all(&line);
        self.line = line;
        r
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Appends `"key":value` pairs after the fields already in the line. Keys are
/// JSON-safe literals; strings are escaped only when they need it.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn field<V: WriteValue + ?Sized>(&mut self, key: &str, v: &V) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        v.write_value(self.0);
    }
    fn optional<V: WriteValue>(&mut self, key: &str, v: &Option<V>) {
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
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Strings always serialise.
        let _ = serde_json::to_writer(&mut *out, s);
    }
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
                $( w.optional(event::json_key!($field $($key)?), &self.$field); )*
            }
        }
    };
}

event::method_args!(write_fields);
event::properties!(write_fields);

/// The frame kinds that make up nearly all of a busy capture, written by hand;
/// false for anything else (serde writes those).
fn write_frame(line: &mut Vec<u8>, kind: &EventKind) -> bool {
    let EventKind::Frame { channel, frame } = kind else {
        return false;
    };
    line.extend_from_slice(b",\"event\":\"frame\",\"channel\":");
    line.extend_from_slice(itoa::Buffer::new().format(*channel).as_bytes());
    line.extend_from_slice(b",\"method\":");
    write_str(line, frame.name());
    let mut w = Fields(line);
    match frame {
        Frame::Method(m) => m.args.write_fields(&mut w),
        Frame::ContentHeader(h) => {
            w.field("class_id", &h.class_id);
            w.field("body_size", &h.body_size);
            h.properties.write_fields(&mut w);
        }
        Frame::ContentBody(b) => {
            w.field("size", &b.size);
            w.optional("body", &b.body);
            if let Some(n) = b.cut.0 {
                w.field("truncated", &true);
                w.field("missing_bytes", &n.get());
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
                frame: Frame::Method(Box::new(Method {
                    method: MethodKind::BasicConsume,
                    args,
                })),
            },
            EventKind::Frame {
                channel: 0,
                frame: Frame::Heartbeat(Heartbeat),
            },
        ];
        let mut sink = JsonlSink::new(Vec::new());
        let mut expected = String::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            for (file, ts) in [
                (0u32, 1_795_614_716_000_001_000i64),
                (2, 1_795_614_716_999_999_999),
                (0, 5),
            ] {
                let ev = event(
                    i as u64 + 1,
                    file,
                    ts,
                    ("[::1]:40000", "[::1]:5682"),
                    kind.clone(),
                );
                sink.event(&ev).unwrap();
                expected.push_str(&serde_json::to_string(&ev).unwrap());
                expected.push('\n');
            }
        }
        assert_eq!(String::from_utf8(sink.out).unwrap(), expected);
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
            let mut sink = JsonlSink::new(Vec::new());
            sink.event(&ev).unwrap();
            assert_eq!(
                String::from_utf8(sink.out).unwrap(),
                serde_json::to_string(&ev).unwrap() + "\n"
            );
        }
    }
}
