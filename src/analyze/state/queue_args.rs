//! The queue.declare arguments of every queue, as first declared in the
//! capture: what the broker keeps and compares every later declaration with
//! (406 PRECONDITION_FAILED "inequivalent arg"), and who declared it exclusive
//! (405 RESOURCE_LOCKED). A declaration counts once the broker confirmed it
//! (queue.declare-ok); a passive one sets nothing; queue.delete forgets the
//! queue. Kept small on purpose: the flags, the `x-` arguments as declared, the
//! frame and the connection. Bounded by [`MAX_QUEUES_KEPT`].

use rustc_hash::FxHashMap;

use crate::event::Conn;

use super::Mark;

/// Queues whose declaration is remembered; later ones are not.
pub(crate) const MAX_QUEUES_KEPT: usize = 10_000;

/// One queue.declare: its flags and `x-` arguments, where and on which connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeclaredQueue {
    pub at: Mark,
    pub conn: Conn,
    pub channel: u16,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub passive: bool,
    /// The `arguments` table as JSON (`{"x-message-ttl": 60000}`), None when empty.
    pub arguments: Option<serde_json::Value>,
}

/// The first confirmed declaration of each queue.
#[derive(Debug, Default)]
pub(crate) struct QueueArgs {
    by_name: FxHashMap<String, DeclaredQueue>,
}

impl QueueArgs {
    /// A confirmed declaration of `queue`: kept when it is the first (the broker
    /// keeps the arguments of the declaration that created the queue).
    pub(crate) fn declared(&mut self, queue: &str, d: DeclaredQueue) {
        if d.passive || self.by_name.contains_key(queue) || self.by_name.len() >= MAX_QUEUES_KEPT {
            return;
        }
        self.by_name.insert(queue.to_string(), d);
    }

    /// The queue is gone: a new declaration creates it afresh.
    pub(crate) fn deleted(&mut self, queue: &str) {
        self.by_name.remove(queue);
    }

    /// The declaration the broker holds for `queue`, when the capture shows it.
    pub(crate) fn get(&self, queue: &str) -> Option<&DeclaredQueue> {
        self.by_name.get(queue)
    }
}
