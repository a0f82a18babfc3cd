//! Counts only: how many of each method/event, per connection and in total.
//! The cheapest output; what the benchmark's "counts only" mode measures.

use rustc_hash::{FxHashMap, FxHashSet};
use std::io::{self, Write};

use super::Sink;
use crate::event::{Conn, Event};

pub struct CountsSink<W: Write> {
    out: W,
    /// Keyed by the address of the name, which costs one multiply to hash
    /// where the name's bytes cost a loop; names are merged by text at the end.
    total: FxHashMap<usize, (&'static str, u64)>,
    /// Connections seen. Events come in runs from one connection: the latest
    /// is compared first, and only a change of connection is hashed.
    per_conn: FxHashSet<Conn>,
    last_conn: Option<Conn>,
}

impl<W: Write> CountsSink<W> {
    pub fn new(out: W) -> Self {
        CountsSink {
            out,
            total: FxHashMap::default(),
            per_conn: FxHashSet::default(),
            last_conn: None,
        }
    }
}

impl<W: Write> Sink for CountsSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        let name = ev.kind.name();
        self.total
            .entry(name.as_ptr() as usize)
            .or_insert((name, 0))
            .1 += 1;
        if self.last_conn != Some(ev.conn) {
            self.last_conn = Some(ev.conn);
            self.per_conn.insert(ev.conn);
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut by_name: FxHashMap<&'static str, u64> = FxHashMap::default();
        for (name, n) in self.total.values() {
            *by_name.entry(name).or_default() += n;
        }
        let all: u64 = by_name.values().sum();
        writeln!(
            self.out,
            "{all} events on {} connections",
            self.per_conn.len()
        )?;
        let mut rows: Vec<_> = by_name.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in rows {
            writeln!(self.out, "{n:>12}  {name}")?;
        }
        self.out.flush()
    }
}
