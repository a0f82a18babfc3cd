//! Terminal text: one readable line per frame or connection event.
//!
//! `   0.001234  127.0.0.1:40000->127.0.0.1:5672  →  ch1  basic.consume  queue=tasks consumer_tag=c1`
//!
//! Time is relative to the first event. `→` is client to broker, `←` broker
//! to client. Heartbeats and content frames are folded (counted, not shown)
//! unless `verbose`. A frame the snaplen cut ends with `[cut: N bytes]`, the
//! bytes of it the capture lacks. Colour only when asked (the CLI decides: tty, NO_COLOR).

use std::fmt::Write as _;
use std::io::{self, Write};

use super::Sink;
use crate::event::{Dir, Event, EventKind, Frame, Timestamp};

#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    pub verbose: bool,
    pub color: bool,
}

pub struct TextSink<W: Write> {
    out: W,
    opts: TextOptions,
    start: Option<Timestamp>,
    folded_heartbeats: u64,
    folded_content: u64,
    line: String,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, opts: TextOptions) -> Self {
        TextSink {
            out,
            opts,
            start: None,
            folded_heartbeats: 0,
            folded_content: 0,
            line: String::with_capacity(256),
        }
    }

    /// The writer back, e.g. to append a verdict block after the timeline.
    pub fn into_inner(self) -> W {
        self.out
    }
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        if !self.opts.verbose {
            if let EventKind::Frame { frame, .. } = &ev.kind {
                match frame {
                    Frame::Heartbeat(_) => {
                        self.folded_heartbeats += 1;
                        return Ok(());
                    }
                    Frame::ContentHeader(_) | Frame::ContentBody(_) => {
                        self.folded_content += 1;
                        return Ok(());
                    }
                    Frame::Method(_) => {}
                }
            }
        }
        let start = *self.start.get_or_insert(ev.ts);
        let c = self.opts.color;
        let paint = |s: &mut String, code: &str, text: &str| {
            if c {
                s.push_str(code);
                s.push_str(text);
                s.push_str(RESET);
            } else {
                s.push_str(text);
            }
        };
        let line = &mut self.line;
        line.clear();
        let _ = write!(line, "{:>11.6}  ", ev.ts.secs_since(start));
        paint(line, DIM, &ev.conn.to_string());
        let arrow = match ev.dir {
            Dir::C2S => "  →  ",
            Dir::S2C => "  ←  ",
        };
        paint(line, if ev.dir == Dir::C2S { CYAN } else { GREEN }, arrow);
        match &ev.kind {
            EventKind::Frame { channel, frame } => {
                let _ = write!(line, "ch{channel:<3} ");
                let name = frame.name();
                let code = if name.ends_with(".close")
                    || name == "connection.blocked"
                    || name == "basic.cancel"
                {
                    YELLOW
                } else {
                    BOLD
                };
                paint(line, code, name);
                let fields = match frame {
                    Frame::Method(m) => serde_json::to_value(&m.args),
                    Frame::ContentHeader(h) => serde_json::to_value(h.as_ref()),
                    Frame::ContentBody(b) => serde_json::to_value(b),
                    Frame::Heartbeat(_) => Ok(serde_json::Value::Null),
                };
                if let Ok(serde_json::Value::Object(map)) = fields {
                    for (k, v) in map {
                        // The cut marker is said once, after the fields.
                        if matches!(k.as_str(), "method" | "truncated" | "missing_bytes") {
                            continue;
                        }
                        line.push(' ');
                        line.push_str(&k);
                        line.push('=');
                        match v {
                            serde_json::Value::String(s)
                                if !s.is_empty() && !s.contains([' ', '"', '=']) =>
                            {
                                line.push_str(&s)
                            }
                            other => line.push_str(&other.to_string()),
                        }
                    }
                }
                if let Some(cut) = frame.cut() {
                    let _ = write!(line, " [cut: {} bytes]", cut.missing_bytes);
                }
            }
            EventKind::ProtocolHeader { protocol, .. } => {
                line.push_str("     protocol-header ");
                line.push_str(protocol);
            }
            EventKind::TcpOpen => paint(line, DIM, "     tcp.open (SYN)"),
            EventKind::TcpClose => paint(line, YELLOW, "     tcp.close (FIN)"),
            EventKind::TcpReset => paint(line, RED, "     tcp.reset (RST)"),
            EventKind::TcpZeroWindow => paint(line, YELLOW, "     tcp.zero-window (window 0)"),
            EventKind::TcpWindowOpen => paint(line, DIM, "     tcp.window-open"),
            EventKind::Gap { bytes, reason } => {
                let what = match bytes {
                    Some(n) => format!("     gap: {n} bytes missing ({})", gap_reason(*reason)),
                    None => format!("     gap: unknown bytes missing ({})", gap_reason(*reason)),
                };
                paint(line, YELLOW, &what);
            }
            EventKind::Error { offset, error } => {
                paint(
                    line,
                    RED,
                    &format!("     error at stream offset {offset}: {error}"),
                );
            }
        }
        let _ = write!(
            line,
            "  {DIM_OPEN}#{}{DIM_CLOSE}",
            ev.frame,
            DIM_OPEN = if c { DIM } else { "" },
            DIM_CLOSE = if c { RESET } else { "" }
        );
        line.push('\n');
        self.out.write_all(line.as_bytes())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.folded_heartbeats + self.folded_content > 0 {
            writeln!(
                self.out,
                "({} heartbeats and {} content frames not shown; -v shows them)",
                self.folded_heartbeats, self.folded_content
            )?;
        }
        self.out.flush()
    }
}

fn gap_reason(r: crate::event::GapReason) -> &'static str {
    use crate::event::GapReason::*;
    match r {
        MidConnection => "capture started mid-connection",
        Lost => "segments missing from the capture",
        Truncated => "payload cut by snaplen",
    }
}
