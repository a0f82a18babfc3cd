//! Counts only: how many of each method/event, per connection and in total.
//! The cheapest output; what the benchmark's "counts only" mode measures.

use rustc_hash::FxHashMap;
use std::io::{self, Write};

use super::Sink;
use crate::event::{Conn, Event, EventKind};

pub struct CountsSink<W: Write> {
    out: W,
    total: FxHashMap<&'static str, u64>,
    per_conn: FxHashMap<Conn, u64>,
}

impl<W: Write> CountsSink<W> {
    pub fn new(out: W) -> Self {
        CountsSink {
            out,
            total: FxHashMap::default(),
            per_conn: FxHashMap::default(),
        }
    }
}

/// The name an event is counted under: its method, or its connection event.
pub fn event_name(ev: &Event) -> &'static str {
    match &ev.kind {
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

impl<W: Write> Sink for CountsSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        *self.total.entry(event_name(ev)).or_default() += 1;
        *self.per_conn.entry(ev.conn).or_default() += 1;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let all: u64 = self.total.values().sum();
        writeln!(
            self.out,
            "{all} events on {} connections",
            self.per_conn.len()
        )?;
        let mut rows: Vec<_> = self.total.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in rows {
            writeln!(self.out, "{n:>12}  {name}")?;
        }
        self.out.flush()
    }
}
