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
use crate::event::{Conn, Event, EventKind, Frame, MethodArgs, MethodKind, Properties};

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
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
    fn string<S: std::ops::Deref<Target = str>>(&mut self, key: &str, v: &Option<S>) {
        if let Some(v) = v {
            self.key(key);
            write_str(self.0, v);
        }
    }
    fn number(&mut self, key: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.key(key);
            self.0
                .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
    }
    fn boolean(&mut self, key: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.key(key);
            self.0.extend_from_slice(if v { b"true" } else { b"false" });
        }
    }
    fn value(&mut self, key: &str, v: &Option<serde_json::Value>) {
        if let Some(v) = v {
            self.key(key);
            // A Value always serialises.
            let _ = serde_json::to_writer(&mut *self.0, v);
        }
    }
    fn method_kind(&mut self, key: &str, v: Option<MethodKind>) {
        if let Some(v) = v {
            self.key(key);
            write_str(self.0, v.name());
        }
    }
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

fn write_method_args(w: &mut Fields<'_>, a: &MethodArgs) {
    w.string("queue", &a.queue);
    w.string("exchange", &a.exchange);
    w.string("routing_key", &a.routing_key);
    w.string("consumer_tag", &a.consumer_tag);
    w.number("delivery_tag", a.delivery_tag);
    w.boolean("multiple", a.multiple);
    w.boolean("requeue", a.requeue);
    w.boolean("redelivered", a.redelivered);
    w.number("prefetch_count", a.prefetch_count.map(u64::from));
    w.number("prefetch_size", a.prefetch_size.map(u64::from));
    w.boolean("global", a.global);
    w.boolean("no_ack", a.no_ack);
    w.boolean("no_local", a.no_local);
    w.boolean("exclusive", a.exclusive);
    w.boolean("passive", a.passive);
    w.boolean("durable", a.durable);
    w.boolean("auto_delete", a.auto_delete);
    w.boolean("internal", a.internal);
    w.boolean("if_unused", a.if_unused);
    w.boolean("if_empty", a.if_empty);
    w.boolean("mandatory", a.mandatory);
    w.boolean("immediate", a.immediate);
    w.boolean("nowait", a.nowait);
    w.string("exchange_type", &a.exchange_type);
    w.string("source", &a.source);
    w.string("destination", &a.destination);
    w.number("message_count", a.message_count.map(u64::from));
    w.number("consumer_count", a.consumer_count.map(u64::from));
    w.value("arguments", &a.arguments);
    w.number("reply_code", a.reply_code.map(u64::from));
    w.string("reply_text", &a.reply_text);
    w.number("class_id", a.class_id.map(u64::from));
    w.number("method_id", a.method_id.map(u64::from));
    w.method_kind("failing_method", a.failing_method);
    w.boolean("active", a.active);
    w.string("reason", &a.reason);
    w.string("vhost", &a.vhost);
    w.number("channel_max", a.channel_max.map(u64::from));
    w.number("frame_max", a.frame_max.map(u64::from));
    w.number("heartbeat", a.heartbeat.map(u64::from));
    w.string("mechanism", &a.mechanism);
    w.string("mechanisms", &a.mechanisms);
    w.string("user", &a.user);
    w.string("locale", &a.locale);
    w.string("product", &a.product);
    w.string("version", &a.version);
    w.string("platform", &a.platform);
    w.string("connection_name", &a.connection_name);
    w.string("realm", &a.realm);
}

fn write_properties(w: &mut Fields<'_>, p: &Properties) {
    w.string("content_type", &p.content_type);
    w.string("content_encoding", &p.content_encoding);
    w.value("headers", &p.headers);
    w.number("delivery_mode", p.delivery_mode.map(u64::from));
    w.number("priority", p.priority.map(u64::from));
    w.string("correlation_id", &p.correlation_id);
    w.string("reply_to", &p.reply_to);
    w.string("expiration", &p.expiration);
    w.string("message_id", &p.message_id);
    w.number("timestamp", p.timestamp);
    w.string("type", &p.kind);
    w.string("user_id", &p.user_id);
    w.string("app_id", &p.app_id);
}

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
        Frame::Method(m) => write_method_args(&mut w, &m.args),
        Frame::ContentHeader(h) => {
            w.number("class_id", Some(u64::from(h.class_id)));
            w.number("body_size", Some(h.body_size));
            write_properties(&mut w, &h.properties);
        }
        Frame::ContentBody(b) => {
            w.number("size", Some(u64::from(b.size)));
            w.string("body", &b.body);
        }
        Frame::Heartbeat(_) => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    #[test]
    fn lines_are_exactly_what_serde_gives() {
        let conn = Conn {
            client: "[::1]:40000".parse().unwrap(),
            broker: "[::1]:5682".parse().unwrap(),
        };
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
                let ev = Event {
                    frame: i as u64 + 1,
                    file,
                    ts: Timestamp(ts),
                    conn,
                    dir: Dir::S2C,
                    kind: kind.clone(),
                };
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
        let conn = Conn {
            client: "127.0.0.1:1".parse().unwrap(),
            broker: "127.0.0.1:5672".parse().unwrap(),
        };
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
                }),
            },
        ];
        for kind in kinds {
            let ev = Event {
                frame: 1,
                file: 0,
                ts: Timestamp(0),
                conn,
                dir: Dir::C2S,
                kind,
            };
            let mut sink = JsonlSink::new(Vec::new());
            sink.event(&ev).unwrap();
            assert_eq!(
                String::from_utf8(sink.out).unwrap(),
                serde_json::to_string(&ev).unwrap() + "\n"
            );
        }
    }
}
