//! One open channel: its prefetch windows, its unacknowledged deliveries (in
//! delivery-tag order), its consumers and the replies it still expects.

use std::collections::VecDeque;

use super::{FlowRec, Mark, Prefetch, QosRec, QueueArgs};

/// One delivery (basic.deliver or basic.get-ok) awaiting its settle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unacked {
    pub(crate) tag: u64,
    pub(crate) consumer: Option<u32>,
    pub(crate) at: Mark,
    pub(crate) fingerprint: u64,
    pub(crate) settled: bool,
}

/// The deliver/get-ok whose content header is expected next on the channel:
/// the delivery as the channel records it, and what the header is matched with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingContent {
    pub(crate) delivery: Unacked,
    pub(crate) route_hash: u64,
    pub(crate) redelivered: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ChannelState {
    pub(crate) qos: Prefetch,
    pub(crate) global_full_since: Option<Mark>,
    pub(crate) flow_paused: Option<FlowRec>,
    pub(crate) confirm: bool,
    /// Sorted by tag (tags grow by one per delivery on a channel); settled
    /// entries are tombstones popped from the front and compacted when many.
    pub(crate) unacked: VecDeque<Unacked>,
    pub(crate) live_unacked: u32,
    pub(crate) tombstones: u32,
    pub(crate) consumers: Vec<u32>,
    /// basic.consume sent, consume-ok not yet seen (replies come in order).
    pub(crate) pending_consumes: VecDeque<u32>,
    pub(crate) pending_content: Option<PendingContent>,
    pub(crate) get_no_ack: bool,
    /// queue.declare sent, declare-ok not yet seen: (exclusive, auto_delete).
    pub(crate) pending_declares: VecDeque<(bool, bool)>,
    /// What explains a broker's close of this channel (see `errors`).
    pub(crate) trail: super::errors::ChannelTrail,
    /// The arguments of those same queue.declare, in the same order (newer queues).
    pub(crate) declare_args: VecDeque<Option<QueueArgs>>,
}

impl ChannelState {
    /// The channel-wide (global=true) QoS, when its window filled, and how many
    /// deliveries are unacknowledged on the channel; None without such a window.
    pub(crate) fn shared_window(&self) -> Option<(&QosRec, Option<Mark>, u32)> {
        let q = self.qos.global.as_ref().filter(|q| q.prefetch_count > 0)?;
        Some((q, self.global_full_since, self.live_unacked))
    }

    /// Unacknowledged deliveries of a consumer (tag, delivered at), oldest first.
    pub(crate) fn unacked_of(&self, consumer: u32) -> Vec<(u64, Mark)> {
        self.unacked
            .iter()
            .filter(|u| !u.settled && u.consumer == Some(consumer))
            .map(|u| (u.tag, u.at))
            .collect()
    }

    /// The oldest delivery still unacknowledged.
    pub(crate) fn oldest_unacked(&self) -> Option<&Unacked> {
        self.unacked.iter().find(|u| !u.settled)
    }
}
