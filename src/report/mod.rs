//! The HTML report: one self-contained `report.html` built from the timeline
//! and the analysis — verdicts in words first, then a swimlane timeline and
//! each consumer's unacked count against its prefetch limit, drawn on
//! `<canvas>` by the inline script in `page.js`. No network access, no CDN:
//! CSS, script and data are all inside the file, so it opens offline years
//! later.
//!
//! It is a sink (it sees [`Event`]s one at a time and never touches bytes or
//! files) that also needs the [`Analysis`] at the end. Memory stays bounded
//! for a million events: each event becomes a row of compact columns (time,
//! lane, method, direction, frame, delivery tag, an index into a table of
//! distinct argument strings), never a clone of the event. Content header
//! and body frames are counted, not drawn (their deliver or publish is).
//! The unacked step series is computed here from deliver/ack/nack/reject
//! (with `multiple`), recover and closes, per consumer, by the same delivery
//! bookkeeping the chrome-trace sink uses; the analyzer is only read.
//!
//! A report built from a `--format jsonl` timeline file reads it back with
//! [`crate::source::timeline`], and gets the same verdicts.

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::analyze::{Analysis, Certainty, Scope};
use crate::event::{Conn, Dir, Event, EventKind, Frame, Timestamp};
use crate::sink::deliveries::{DeliveryTracker, Ended};
use crate::sink::Sink;

/// Version of the data block embedded in the page (`docs/report.md`).
pub const REPORT_SCHEMA: &str = "amqptrace.report/1";

const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LaneKey {
    conn: u32,
    channel: Option<u16>,
    consumer: Option<u32>,
}

#[derive(Debug, Default)]
struct Series {
    t: Vec<i64>,
    v: Vec<u32>,
    current: u32,
    max: u32,
}

impl Series {
    fn push(&mut self, t: i64, v: u32) {
        self.current = v;
        self.max = self.max.max(v);
        // Several changes in one instant (a multiple ack) keep only the last value.
        if self.t.last() == Some(&t) {
            if let Some(last) = self.v.last_mut() {
                *last = v;
            }
            return;
        }
        self.t.push(t);
        self.v.push(v);
    }
}

/// Collects events into columns; [`ReportBuilder::write_html`] writes the page.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    t0: Option<Timestamp>,
    t_end: i64,
    conns: Vec<Conn>,
    conn_idx: HashMap<Conn, u32>,
    lanes: Vec<LaneKey>,
    lane_idx: HashMap<LaneKey, u32>,
    kinds: Vec<&'static str>,
    kind_idx: HashMap<&'static str, u16>,
    strings: Vec<String>,
    string_idx: HashMap<String, u32>,
    col_t: Vec<i64>,
    col_lane: Vec<u32>,
    col_kind: Vec<u16>,
    col_dir: Vec<u8>,
    col_frame: Vec<u64>,
    col_tag: Vec<u64>,
    col_str: Vec<u32>,
    tracker: DeliveryTracker,
    ended: Vec<Ended>,
    series: Vec<Series>,
    events_seen: u64,
    folded_content: u64,
}

/// Keys of an event's JSON object that the columns already hold.
const KEYS_IN_COLUMNS: &[&str] = &[
    "frame",
    "file",
    "ts",
    "conn",
    "dir",
    "event",
    "channel",
    "method",
    "delivery_tag",
];

impl ReportBuilder {
    pub fn new() -> Self {
        let mut b = ReportBuilder::default();
        b.intern(String::new());
        b
    }

    /// Events taken so far (content frames included).
    pub fn events_seen(&self) -> u64 {
        self.events_seen
    }

    /// Events drawn as marks.
    pub fn marks(&self) -> usize {
        self.col_t.len()
    }

    fn intern(&mut self, s: String) -> u32 {
        if let Some(&i) = self.string_idx.get(&s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.string_idx.insert(s.clone(), i);
        self.strings.push(s);
        i
    }

    fn lane(&mut self, key: LaneKey) -> u32 {
        if let Some(&i) = self.lane_idx.get(&key) {
            return i;
        }
        // A consumer's or channel's lane sits under its connection's (and channel's) lane.
        if key.channel.is_some() {
            self.lane(LaneKey {
                conn: key.conn,
                channel: None,
                consumer: None,
            });
        }
        let i = self.lanes.len() as u32;
        self.lanes.push(key);
        self.lane_idx.insert(key, i);
        i
    }

    fn us(&self, ts: Timestamp) -> i64 {
        (ts.as_nanos() - self.t0.unwrap_or(ts).as_nanos()) / 1000
    }

    /// Takes one event of the timeline.
    pub fn event(&mut self, ev: &Event) {
        self.events_seen += 1;
        if self.t0.is_none() {
            self.t0 = Some(ev.ts);
        }
        let t = self.us(ev.ts);
        self.t_end = self.t_end.max(t);
        let mut ended = std::mem::take(&mut self.ended);
        ended.clear();
        let h = self.tracker.handle(ev, &mut ended);
        while self.series.len() < self.tracker.consumers.len() {
            self.series.push(Series::default());
        }
        if let (Some(_), Some(c)) = (h.outstanding, h.consumer) {
            let s = &mut self.series[c as usize];
            s.push(t, s.current + 1);
        }
        for e in &ended {
            if let Some(c) = e.delivery.consumer {
                let s = &mut self.series[c as usize];
                s.push(t, s.current.saturating_sub(1));
            }
        }
        self.ended = ended;

        let (kind, channel): (&'static str, Option<u16>) = match &ev.kind {
            EventKind::TcpOpen => ("tcp.open", None),
            EventKind::TcpClose => ("tcp.close", None),
            EventKind::TcpReset => ("tcp.reset", None),
            EventKind::TcpZeroWindow => ("tcp.zero-window", None),
            EventKind::TcpWindowOpen => ("tcp.window-open", None),
            EventKind::Gap { .. } => ("gap", None),
            EventKind::Error { .. } => ("error", None),
            EventKind::ProtocolHeader { .. } => ("protocol-header", None),
            EventKind::Frame {
                frame: Frame::ContentHeader(_) | Frame::ContentBody(_),
                ..
            } => {
                self.folded_content += 1;
                return;
            }
            EventKind::Frame { channel, frame } => {
                (frame.name(), (*channel != 0).then_some(*channel))
            }
        };
        let conn = match self.conn_idx.get(&ev.conn) {
            Some(&c) => c,
            None => {
                let c = self.conns.len() as u32;
                self.conns.push(ev.conn);
                self.conn_idx.insert(ev.conn, c);
                c
            }
        };
        let lane = self.lane(LaneKey {
            conn,
            channel,
            consumer: channel.and(h.consumer),
        });
        let kind_i = match self.kind_idx.get(kind) {
            Some(&k) => k,
            None => {
                let k = self.kinds.len() as u16;
                self.kinds.push(kind);
                self.kind_idx.insert(kind, k);
                k
            }
        };
        let (tag, detail) = match &ev.kind {
            EventKind::Frame {
                frame: Frame::Method(m),
                ..
            } => (m.args.delivery_tag.unwrap_or(0), args_string(ev)),
            EventKind::TcpOpen | EventKind::TcpClose | EventKind::TcpReset => (0, String::new()),
            _ => (0, args_string(ev)),
        };
        let s = self.intern(detail);
        self.col_t.push(t);
        self.col_lane.push(lane);
        self.col_kind.push(kind_i);
        self.col_dir.push(match ev.dir {
            Dir::C2S => 0,
            Dir::S2C => 1,
        });
        self.col_frame.push(ev.frame);
        self.col_tag.push(tag);
        self.col_str.push(s);
    }

    /// Writes the page: verdicts (also as plain HTML, readable without script), then the data block.
    pub fn write_html<W: Write>(
        &self,
        analysis: &Analysis,
        title: &str,
        mut out: W,
    ) -> io::Result<()> {
        let data = self.data(analysis);
        write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
             <title>amqptrace report: {}</title>\n<style>\n{PAGE_CSS}</style>\n</head>\n<body>\n",
            html_escape(title)
        )?;
        writeln!(
            out,
            "<header><h1>amqptrace report</h1><p class=\"sub\">{} · {} events ({} marks drawn, {} content frames folded) · {} connections · {} consumers · from {} to {}</p></header>",
            html_escape(title),
            self.events_seen,
            self.marks(),
            self.folded_content,
            self.conns.len(),
            self.tracker.consumers.len(),
            self.t0.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.t0
                .map(|t| Timestamp(t.as_nanos() + self.t_end * 1000).to_rfc3339())
                .unwrap_or_default(),
        )?;
        write_verdicts(analysis, &mut out)?;
        out.write_all(
            b"<section id=\"controls\">\
              <label>Connection <select id=\"f-conn\"><option value=\"\">all</option></select></label> \
              <label>Consumer <select id=\"f-consumer\"><option value=\"\">all</option></select></label> \
              <button id=\"reset\">Reset zoom</button> \
              <span class=\"hint\">wheel: zoom, drag: pan, hover: fields, click: pin</span>\
              <span id=\"range\"></span></section>\n\
              <section id=\"timeline-box\"><canvas id=\"timeline\" height=\"200\"></canvas></section>\n\
              <div id=\"tooltip\" hidden></div>\n\
              <section id=\"details\"><h2>Selected frame</h2><pre id=\"selected\">Click a mark to pin its fields here.</pre></section>\n\
              <section id=\"charts-box\"><h2>Unacked deliveries against the prefetch limit, per consumer</h2>\
              <canvas id=\"charts\" height=\"100\"></canvas></section>\n\
              <section id=\"legend\"></section>\n",
        )?;
        out.write_all(b"<script type=\"application/json\" id=\"amqptrace-data\">")?;
        // `<` never appears outside a JSON string, and inside one `\u003c` means the same:
        // the data can then never close the script element.
        serde_json::to_writer(HtmlSafe(&mut out), &data).map_err(io::Error::other)?;
        write!(
            out,
            "</script>\n<script>\n{PAGE_JS}</script>\n</body>\n</html>\n"
        )?;
        out.flush()
    }

    fn data<'a>(&'a self, analysis: &'a Analysis) -> Data<'a> {
        let lane_label = |k: &LaneKey| -> String {
            match (k.channel, k.consumer) {
                (None, _) => format!("conn {}", self.conns[k.conn as usize]),
                (Some(ch), None) => format!("channel {ch}"),
                (Some(_), Some(c)) => {
                    let c = &self.tracker.consumers[c as usize];
                    match &c.queue {
                        Some(q) => format!("consumer {} ← {}", c.consumer_tag, q),
                        None => format!("consumer {}", c.consumer_tag),
                    }
                }
            }
        };
        let mut lanes: Vec<LaneOut> = self
            .lanes
            .iter()
            .map(|k| LaneOut {
                conn: k.conn,
                channel: k.channel,
                consumer: k.consumer,
                label: lane_label(k),
                verdict: None,
                since_us: None,
            })
            .collect();
        let mut consumers: Vec<ConsumerOut> = self
            .tracker
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let summary = analysis.consumers.iter().find(|s| {
                    s.conn == c.conn && s.channel == c.channel && s.consumer_tag == c.consumer_tag
                });
                let s = &self.series[i];
                ConsumerOut {
                    conn: self.conn_idx.get(&c.conn).copied().unwrap_or(0),
                    channel: c.channel,
                    consumer_tag: &c.consumer_tag,
                    queue: c.queue.as_deref(),
                    no_ack: c.no_ack,
                    lane: self
                        .lane_idx
                        .get(&LaneKey {
                            conn: self.conn_idx.get(&c.conn).copied().unwrap_or(0),
                            channel: Some(c.channel),
                            consumer: Some(i as u32),
                        })
                        .copied(),
                    prefetch_count: summary.and_then(|s| s.prefetch_count),
                    channel_prefetch_count: summary.and_then(|s| s.channel_prefetch_count),
                    max_unacked: s.max,
                    t: delta(&s.t),
                    v: &s.v,
                    verdict: None,
                    since_us: None,
                    stall_frame: None,
                }
            })
            .collect();
        for v in analysis.verdicts.iter().filter(|v| v.verdict.is_stall()) {
            let Some(&conn) = self.conn_idx.get(&v.conn) else {
                continue;
            };
            let since = v.since.map(|t| self.us(t));
            let key = match v.scope {
                Scope::Connection => LaneKey {
                    conn,
                    channel: None,
                    consumer: None,
                },
                Scope::Channel => LaneKey {
                    conn,
                    channel: v.channel,
                    consumer: None,
                },
                Scope::Consumer => {
                    let ci = self.tracker.consumers.iter().position(|c| {
                        c.conn == v.conn
                            && Some(c.channel) == v.channel
                            && Some(&c.consumer_tag) == v.consumer_tag.as_ref()
                    });
                    if let Some(ci) = ci {
                        let co = &mut consumers[ci];
                        if co.verdict.is_none() {
                            co.verdict = Some(v.verdict.name());
                            co.since_us = since;
                            co.stall_frame = v.frame;
                        }
                    }
                    LaneKey {
                        conn,
                        channel: v.channel,
                        consumer: ci.map(|c| c as u32),
                    }
                }
            };
            if let Some(&l) = self.lane_idx.get(&key) {
                let lo = &mut lanes[l as usize];
                if lo.verdict.is_none() {
                    lo.verdict = Some(v.verdict.name());
                    lo.since_us = since;
                }
            }
        }
        // Display order: by connection, then its channels, each followed by its consumers.
        let mut order: Vec<u32> = (0..self.lanes.len() as u32).collect();
        order.sort_by_key(|&i| {
            let k = self.lanes[i as usize];
            (
                k.conn,
                k.channel.map_or(-1, |c| c as i32),
                k.consumer.map_or(-1, |c| c as i64),
            )
        });
        Data {
            schema: REPORT_SCHEMA,
            t0: self.t0.map(|t| t.to_rfc3339()).unwrap_or_default(),
            t0_ms: self.t0.map_or(0.0, |t| t.as_nanos() as f64 / 1e6),
            end_us: self.t_end,
            events_seen: self.events_seen,
            folded_content: self.folded_content,
            conns: self.conns.iter().map(|c| c.to_string()).collect(),
            lanes,
            lane_order: order,
            kinds: &self.kinds,
            strings: &self.strings,
            ev: Columns {
                t: delta(&self.col_t),
                lane: &self.col_lane,
                kind: &self.col_kind,
                dir: &self.col_dir,
                frame: delta(&self.col_frame.iter().map(|&f| f as i64).collect::<Vec<_>>()),
                tag: &self.col_tag,
                s: &self.col_str,
            },
            consumers,
            analysis,
        }
    }
}

impl Sink for ReportBuilder {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        ReportBuilder::event(self, ev);
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The event's arguments as compact JSON, without what the columns already hold.
fn args_string(ev: &Event) -> String {
    match serde_json::to_value(ev) {
        Ok(serde_json::Value::Object(mut o)) => {
            for k in KEYS_IN_COLUMNS {
                o.remove(*k);
            }
            if o.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(o).to_string()
            }
        }
        _ => String::new(),
    }
}

fn delta(v: &[i64]) -> Vec<i64> {
    let mut prev = 0;
    v.iter()
        .map(|&x| {
            let d = x - prev;
            prev = x;
            d
        })
        .collect()
}

#[derive(Serialize)]
struct LaneOut {
    conn: u32,
    channel: Option<u16>,
    consumer: Option<u32>,
    label: String,
    verdict: Option<&'static str>,
    since_us: Option<i64>,
}

#[derive(Serialize)]
struct ConsumerOut<'a> {
    conn: u32,
    channel: u16,
    consumer_tag: &'a str,
    queue: Option<&'a str>,
    no_ack: bool,
    lane: Option<u32>,
    prefetch_count: Option<u16>,
    channel_prefetch_count: Option<u16>,
    max_unacked: u32,
    /// Step series: times (µs since t0, delta-encoded) and the unacked count from then on.
    t: Vec<i64>,
    v: &'a [u32],
    verdict: Option<&'static str>,
    since_us: Option<i64>,
    stall_frame: Option<u64>,
}

/// One array per field, one entry per drawn event; `t` and `frame` delta-encoded.
#[derive(Serialize)]
struct Columns<'a> {
    t: Vec<i64>,
    lane: &'a [u32],
    kind: &'a [u16],
    dir: &'a [u8],
    frame: Vec<i64>,
    tag: &'a [u64],
    s: &'a [u32],
}

#[derive(Serialize)]
struct Data<'a> {
    schema: &'static str,
    t0: String,
    t0_ms: f64,
    end_us: i64,
    events_seen: u64,
    folded_content: u64,
    conns: Vec<String>,
    lanes: Vec<LaneOut>,
    lane_order: Vec<u32>,
    kinds: &'a [&'static str],
    strings: &'a [String],
    ev: Columns<'a>,
    consumers: Vec<ConsumerOut<'a>>,
    analysis: &'a Analysis,
}

fn write_verdicts<W: Write>(analysis: &Analysis, out: &mut W) -> io::Result<()> {
    let (stalls, fine): (Vec<_>, Vec<_>) =
        analysis.verdicts.iter().partition(|v| v.verdict.is_stall());
    out.write_all(b"<section id=\"verdicts\"><h2>Verdicts</h2>\n")?;
    if !analysis.causes.is_empty() {
        out.write_all(b"<ul class=\"causes\">\n")?;
        for c in &analysis.causes {
            let mark = match c.certainty {
                Certainty::Certain => "",
                Certainty::Uncertain => " <span class=\"uncertain\">(uncertain)</span>",
            };
            writeln!(
                out,
                "<li class=\"cause\" data-verdict=\"{0}\"><span class=\"vname\">{0}</span> {1}{mark}</li>",
                c.verdict.name(),
                html_escape(&c.text)
            )?;
        }
        out.write_all(b"</ul>\n")?;
    }
    if stalls.is_empty() {
        out.write_all(
            b"<p class=\"ok\">No stall: every consumer and connection is healthy.</p>\n",
        )?;
    } else {
        out.write_all(b"<ol class=\"stalls\">\n")?;
        for v in &stalls {
            let who = match (&v.consumer_tag, v.channel) {
                (Some(tag), Some(ch)) => format!(
                    "consumer {tag}{} on channel {ch} of {}",
                    v.queue
                        .as_deref()
                        .map(|q| format!(" (queue {q})"))
                        .unwrap_or_default(),
                    v.conn
                ),
                (None, Some(ch)) => format!("channel {ch} of {}", v.conn),
                _ => format!("connection {}", v.conn),
            };
            let since = match (v.since, v.frame) {
                (Some(t), Some(f)) => format!(" — since {t}, frame {f}"),
                (Some(t), None) => format!(" — since {t}"),
                _ => String::new(),
            };
            let certainty = match v.certainty {
                Certainty::Certain => "",
                Certainty::Uncertain => " (uncertain)",
            };
            writeln!(
                out,
                "<li class=\"verdict stall\" data-verdict=\"{0}\" data-certainty=\"{4}\"><span class=\"vname\">{0}{5}</span> <span class=\"who\">{1}</span><span class=\"since\">{2}</span><p class=\"expl\">{3}</p></li>",
                v.verdict.name(),
                html_escape(&who),
                html_escape(&since),
                html_escape(&v.explanation),
                v.certainty.name(),
                certainty
            )?;
        }
        out.write_all(b"</ol>\n")?;
    }
    if !fine.is_empty() {
        let mut names: Vec<String> = fine
            .iter()
            .map(|v| match &v.consumer_tag {
                Some(t) => format!("{} (consumer {t})", v.verdict.name()),
                None => format!("{} (connection {})", v.verdict.name(), v.conn),
            })
            .collect();
        names.dedup();
        writeln!(
            out,
            "<p class=\"fine\">{} not stalled: {}</p>",
            fine.len(),
            html_escape(&names.join(", "))
        )?;
    }
    out.write_all(b"</section>\n")
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Writes JSON with every `<` as `\u003c`, so it can sit inside `<script>`.
struct HtmlSafe<W: Write>(W);

impl<W: Write> Write for HtmlSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'<') {
            self.0.write_all(&rest[..i])?;
            self.0.write_all(b"\\u003c")?;
            rest = &rest[i + 1..];
        }
        self.0.write_all(rest)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_safe_escapes_every_lt() {
        let mut v = Vec::new();
        serde_json::to_writer(HtmlSafe(&mut v), &serde_json::json!({"a": "</script><b>"})).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            r#"{"a":"\u003c/script>\u003cb>"}"#
        );
    }

    #[test]
    fn delta_encoding() {
        assert_eq!(delta(&[5, 7, 7, 10]), vec![5, 2, 0, 3]);
    }
}
