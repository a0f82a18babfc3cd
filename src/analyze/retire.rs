//! Retiring ended connections, so that the analyzer's memory and the cost of
//! each analysis stay bounded by what is in flight, not by how long the proxy
//! runs or how big the capture is.
//!
//! A connection whose end is complete (its TCP connection ended, or
//! connection.close-ok was seen) and at least [`RETIRE_AFTER_S`] in the past
//! has final verdicts: nothing later changes them. When enough such
//! connections pile up, their verdicts and summaries (and their consumers')
//! are computed once and kept, capped, and their state is dropped; the indices
//! of what stays are renumbered in one pass. A capture of a few hundred
//! connections never retires anything, so its analysis is exactly what it was.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

use serde::Serialize;

use crate::event::{Conn, Timestamp};

use super::causes::CauseSeed;
use super::model::{ConnectionSummary, ConsumerSummary, Verdict};
use super::state::ConnState;
use super::summary::{connection_summary, consumer_summary};
use super::{verdicts, Analyzer, Horizon};

/// Events between two looks for connections to retire.
pub(crate) const CHECK_EVERY: u32 = 4096;
/// How long after its end a connection's late packets (a FIN after a RST,
/// retransmissions) may still come: only older ends retire.
const RETIRE_AFTER_S: f64 = 10.0;
/// Retire only when at least this many connections can go at once, and they
/// are at least a quarter of all: the renumbering pass is then amortised.
const RETIRE_MIN: usize = 512;
/// Stall verdicts of retired connections kept for the final analysis; more are counted.
const MAX_RETIRED_STALLS: usize = 1_000;
/// Healthy and idle verdicts, and summaries, of retired connections kept; more are counted.
const MAX_RETIRED_OTHERS: usize = 256;
/// 4-tuples remembered after retiring, so that their late packets are dropped
/// instead of opening a connection that seems to start mid-stream.
const MAX_RECENT: usize = 8_192;

/// How much of the history was retired and is only counted, not listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetiredCounts {
    /// Connections retired (their state dropped once their verdicts were final).
    pub connections: u64,
    pub consumers: u64,
    /// Verdicts of retired connections and consumers not listed (over the caps).
    pub verdicts_not_listed: u64,
    /// Summaries of retired connections and consumers not listed (over the caps).
    pub summaries_not_listed: u64,
}

impl RetiredCounts {
    pub fn is_empty(&self) -> bool {
        self.connections == 0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Retired {
    pub verdicts: Vec<(Verdict, Option<CauseSeed>)>,
    stalls_kept: usize,
    others_kept: usize,
    pub connections: Vec<ConnectionSummary>,
    pub consumers: Vec<ConsumerSummary>,
    pub counts: RetiredCounts,
    recent: FxHashSet<Conn>,
    recent_order: VecDeque<Conn>,
}

impl Retired {
    pub(crate) fn recently(&self, conn: &Conn) -> bool {
        self.recent.contains(conn)
    }

    fn remember(&mut self, conn: Conn) {
        if self.recent.insert(conn) {
            self.recent_order.push_back(conn);
        }
        while self.recent_order.len() > MAX_RECENT {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    fn keep_verdict(&mut self, v: (Verdict, Option<CauseSeed>)) {
        let stall = v.0.verdict.is_stall();
        let room = if stall {
            self.stalls_kept < MAX_RETIRED_STALLS
        } else {
            self.others_kept < MAX_RETIRED_OTHERS
        };
        if !room {
            self.counts.verdicts_not_listed += 1;
            return;
        }
        if stall {
            self.stalls_kept += 1;
        } else {
            self.others_kept += 1;
        }
        self.verdicts.push(v);
    }
}

/// Marks a reference to a connection that was retired.
pub(crate) const GONE: u32 = u32::MAX;

impl Analyzer {
    /// Retires the connections whose verdicts are final, when enough have piled up.
    /// Out of line: inlined into `handle`, with the verdict rules it runs, it gave
    /// every event a 4 KiB frame (callgrind, storm slice json: 144.21 -> 143.67 M).
    #[cold]
    #[inline(never)]
    pub(crate) fn maybe_retire(&mut self, now: Timestamp) {
        if self.conns.len() < RETIRE_MIN {
            return;
        }
        let retiring: Vec<bool> = self.conns.iter().map(|c| is_final(c, now)).collect();
        let n = retiring.iter().filter(|&&r| r).count();
        if n < RETIRE_MIN / 2 || n * 4 < self.conns.len() {
            return;
        }
        self.retire(&retiring, now);
    }

    fn retire(&mut self, retiring: &[bool], now: Timestamp) {
        // Final verdicts and summaries first, while every index is valid.
        let t = self.cfg.stall_after.min(self.cfg.capture_stall_after);
        let out = verdicts::verdicts_of(self, Horizon::LastPacket(now), t, &|ci| {
            retiring[ci as usize]
        });
        for v in out {
            self.retired.keep_verdict(v);
        }
        for (ci, c) in self.conns.iter().enumerate() {
            if !retiring[ci] {
                continue;
            }
            self.retired.counts.connections += 1;
            if self.retired.connections.len() < MAX_RETIRED_OTHERS {
                self.retired.connections.push(connection_summary(c));
            } else {
                self.retired.counts.summaries_not_listed += 1;
            }
        }
        for cs in &self.consumers {
            if !retiring[cs.conn as usize] {
                continue;
            }
            self.retired.counts.consumers += 1;
            if self.retired.consumers.len() < MAX_RETIRED_OTHERS {
                self.retired.consumers.push(consumer_summary(self, cs));
            } else {
                self.retired.counts.summaries_not_listed += 1;
            }
        }

        // Renumber what stays.
        let mut conn_map = vec![GONE; self.conns.len()];
        let mut next = 0u32;
        for (ci, r) in retiring.iter().enumerate() {
            if !r {
                conn_map[ci] = next;
                next += 1;
            }
        }
        let mut consumer_map = vec![GONE; self.consumers.len()];
        let mut next = 0u32;
        for (i, cs) in self.consumers.iter().enumerate() {
            if !retiring[cs.conn as usize] {
                consumer_map[i] = next;
                next += 1;
            }
        }
        let remap_consumer = |i: u32| consumer_map[i as usize];
        let conns = std::mem::take(&mut self.conns);
        for (ci, mut c) in conns.into_iter().enumerate() {
            if retiring[ci] {
                self.retired.remember(c.conn);
                continue;
            }
            for i in &mut c.consumers {
                *i = remap_consumer(*i);
            }
            for st in c.channels.values_mut() {
                for i in &mut st.consumers {
                    *i = remap_consumer(*i);
                }
                for i in &mut st.pending_consumes {
                    *i = remap_consumer(*i);
                }
                for u in &mut st.unacked {
                    u.consumer = u.consumer.map(remap_consumer);
                }
                if let Some(p) = &mut st.pending_content {
                    p.delivery.consumer = p.delivery.consumer.map(remap_consumer);
                }
            }
            c.memo.consumer = None;
            self.conns.push(c);
        }
        let consumers = std::mem::take(&mut self.consumers);
        self.consumers = consumers
            .into_iter()
            .filter(|cs| !retiring[cs.conn as usize])
            .map(|mut cs| {
                cs.conn = conn_map[cs.conn as usize];
                cs
            })
            .collect();
        let remap_conn = |i: u32| conn_map.get(i as usize).copied().unwrap_or(GONE);
        // The first publish after an epoch older than every consumer still here
        // is no one's evidence: keep the last such entry and what follows.
        let oldest_epoch = self.consumers.iter().map(|c| c.epoch).min();
        for d in &mut self.routing.destinations {
            d.last_conn = remap_conn(d.last_conn);
            for e in &mut d.after {
                e.2 = remap_conn(e.2);
            }
            if let Some(oldest) = oldest_epoch {
                let older = d.after.iter().take_while(|e| e.0 < oldest).count();
                if older > 1 {
                    d.after.drain(..older - 1);
                }
            }
        }
        for t in self.requeued.tracks_mut() {
            for e in &mut t.evidence.events {
                e.conn = remap_conn(e.conn);
            }
        }
        for q in self.queues.values_mut() {
            if let Some((_, c)) = &mut q.deleted {
                *c = remap_conn(*c);
            }
            if let Some(sole) = &mut q.sole {
                sole.conn = remap_conn(sole.conn);
            }
        }
        self.by_conn.clear();
        for (i, c) in self.conns.iter().enumerate() {
            self.by_conn.insert(c.conn, i as u32);
        }
        self.recent_conns.fill(None);
    }
}

/// Whether a connection's verdicts can no longer change: its end is complete
/// and old enough that no late packet of it is expected.
fn is_final(c: &ConnState, now: Timestamp) -> bool {
    let complete = c.tcp_end.is_some() || c.close_ok.is_some();
    match c.ended {
        Some(end) if complete => now.secs_since(end.ts) >= RETIRE_AFTER_S,
        _ => false,
    }
}
