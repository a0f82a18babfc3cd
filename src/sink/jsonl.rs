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
use crate::event::{Conn, Event};

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
        // The kind serialises as a map ({"event":...,...}): splice its fields in.
        let mark = line.len();
        serde_json::to_writer(&mut line, &ev.kind).map_err(io::Error::other)?;
        if line.get(mark) == Some(&b'{') {
            line[mark] = b',';
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
            for (file, ts) in [(0u32, 1_795_614_716_000_001_000i64), (2, 1_795_614_716_999_999_999), (0, 5)] {
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
}
