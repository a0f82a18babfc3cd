//! The exchange and queue classes: declarations, bindings and deletions. The
//! bindings and exchange types go to the routing; what a queue.declare-ok
//! reports goes to the queue's record.

use crate::event::{Dir, Method, MethodKind};

use super::super::routing::MAX_BINDINGS_PER_QUEUE;
use super::super::state::{Mark, QueueArgs, QueueInfo, SoleConsumers, Step};
use super::super::Analyzer;

/// Destinations past which a queue.declare-ok keeps no baseline (each one
/// keeps two counts per destination).
const MAX_SOLE_DESTINATIONS: usize = 256;

impl Analyzer {
    pub(super) fn on_queue(&mut self, ci: u32, dir: Dir, mark: Mark, ch: u16, m: &Method) {
        let a = &m.args;
        match (dir, m.method) {
            (Dir::C2S, MethodKind::ExchangeDeclare) => {
                if let (Some(x), Some(t)) = (&a.exchange, &a.exchange_type) {
                    self.routing.declare_exchange(x, t);
                }
            }
            (Dir::C2S, MethodKind::QueueDeclare) => {
                let st = self.channel_mut(ci, ch);
                if st.pending_declares.len() < MAX_BINDINGS_PER_QUEUE && a.nowait != Some(true) {
                    st.pending_declares
                        .push_back((a.exclusive.unwrap_or(false), a.auto_delete.unwrap_or(false)));
                    let args = match a.passive {
                        Some(true) => None,
                        _ => QueueArgs::of(a.arguments.as_ref(), mark),
                    };
                    st.declare_args.push_back(args);
                }
                // A passive declare only checks that the queue exists: its arguments say nothing.
                if a.nowait == Some(true) && a.passive != Some(true) {
                    if let (Some(q), Some(args)) =
                        (&a.queue, QueueArgs::of(a.arguments.as_ref(), mark))
                    {
                        self.queue_info(q).args = Some(args);
                    }
                }
            }
            (Dir::S2C, MethodKind::QueueDeclareOk) => {
                let flags = self.channel_mut(ci, ch).pending_declares.pop_front();
                let declared_args = self.channel_mut(ci, ch).declare_args.pop_front().flatten();
                if let Some(q) = &a.queue {
                    let c = &mut self.conns[ci as usize];
                    if c.declared_queues.len() < MAX_BINDINGS_PER_QUEUE
                        && !c.declared_queues.contains(q)
                    {
                        c.declared_queues.push(q.clone());
                    }
                    let sole = self.sole_consumers(ci, q, mark, a.consumer_count);
                    let info = self.queue_info(q);
                    info.declared = Some(mark);
                    info.message_count = a.message_count;
                    info.consumer_count = a.consumer_count;
                    info.deleted = None;
                    info.sole = sole;
                    if let Some((exclusive, auto_delete)) = flags {
                        info.exclusive = exclusive;
                        info.auto_delete = auto_delete;
                    }
                    // A passive declare (no arguments) keeps what an earlier one declared.
                    if declared_args.is_some() {
                        info.args = declared_args;
                    }
                }
            }
            (Dir::C2S, MethodKind::QueueBind) => {
                if let (Some(q), Some(x)) = (&a.queue, &a.exchange) {
                    let rk = a.routing_key.as_deref().unwrap_or_default();
                    self.routing.bind(q, x, rk);
                }
            }
            (Dir::C2S, MethodKind::QueueUnbind) => {
                if let (Some(q), Some(x)) = (&a.queue, &a.exchange) {
                    self.routing
                        .unbind(q, x, a.routing_key.as_deref().unwrap_or(""));
                }
            }
            (Dir::C2S, MethodKind::QueueDelete) => {
                if let Some(q) = &a.queue {
                    self.queue_info(q).deleted = Some((mark, ci));
                }
            }
            _ => {}
        }
    }

    /// What queue.declare-ok's `consumer_count` proves about queue `q`: when
    /// it counts as many consumers as are live on `q` here (one at least),
    /// every consumer of the queue is in the capture, and the counts of now
    /// are the baseline of the `published_not_delivered` rule.
    fn sole_consumers(
        &self,
        ci: u32,
        q: &str,
        mark: Mark,
        consumer_count: Option<u32>,
    ) -> Option<Box<SoleConsumers>> {
        let n = consumer_count.filter(|n| *n > 0)?;
        if self.routing.destinations.len() > MAX_SOLE_DESTINATIONS {
            return None;
        }
        let vhost = self.vhost_of(ci);
        let consumers: Vec<(u64, u64)> = self
            .consumers
            .iter()
            .filter(|cs| {
                cs.end.is_none()
                    && cs.queue.as_deref() == Some(q)
                    && (cs.marks[Step::ConsumeOk].is_some() || cs.nowait)
                    && (vhost.is_none() || self.vhost_of(cs.conn) == vhost)
            })
            .map(|cs| (cs.serial, cs.first_deliveries()))
            .collect();
        if consumers.len() != n as usize {
            return None;
        }
        Some(Box::new(SoleConsumers {
            at: mark,
            conn: ci,
            consumer_count: n,
            consumers,
            destinations: self
                .routing
                .destinations
                .iter()
                .map(|d| (d.count, d.returned))
                .collect(),
            untracked: self.routing.publishes_untracked,
            retired_consumers: self.retired.counts.consumers,
        }))
    }

    fn queue_info(&mut self, q: &str) -> &mut QueueInfo {
        self.queues.entry(q.to_string()).or_default()
    }
}
