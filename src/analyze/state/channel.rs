//! One open channel: its prefetch windows, its unacknowledged deliveries (in
//! delivery-tag order), its consumers and the replies it still expects.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{FlowRec, Mark, Prefetch, QosRec, QueueArgs};

/// One delivery (basic.deliver or basic.get-ok) awaiting its settle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unacked {
    pub(crate) tag: u64,
    pub(crate) consumer: Option<u32>,
    pub(crate) at: Mark,
    pub(crate) fingerprint: u64,
    /// Where its message's requeue track was when its content header came
    /// (see `RequeueTracks`), `NO_TRACK` when it had none.
    pub(crate) track_hint: u32,
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
    /// The settle or basic.qos that last gave a full channel-wide window room again.
    pub(crate) global_room_since: Option<Mark>,
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

/// The open channels of a connection, by channel number.
///
/// A map of channel numbers to slots of a list, not of channels: the frames of
/// a connection come mostly on the channel of the frame before, so the last
/// channel found is remembered, and a frame on it finds its state with one
/// compare instead of a hash lookup (a delivery, its content header and its
/// settle look up their channel four times; callgrind, storm slice json:
/// 194.8 -> 192.8 M). The map's order is the order of iteration, the one a map of the
/// channels themselves would have (same keys, same hasher, same inserts and
/// removes): what lists channels lists them as before.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    index: FxHashMap<u16, u32>,
    slots: Vec<(u16, ChannelState)>,
    /// The channel found last, and its slot.
    last: Option<(u16, u32)>,
}

impl Channels {
    fn slot(&self, ch: u16) -> Option<usize> {
        match self.last {
            Some((c, i)) if c == ch => Some(i as usize),
            _ => self.index.get(&ch).map(|&i| i as usize),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn contains_key(&self, ch: &u16) -> bool {
        self.slot(*ch).is_some()
    }

    pub(crate) fn get(&self, ch: &u16) -> Option<&ChannelState> {
        let i = self.slot(*ch)?;
        self.slots.get(i).map(|(_, st)| st)
    }

    pub(crate) fn get_mut(&mut self, ch: &u16) -> Option<&mut ChannelState> {
        let i = self.slot(*ch)?;
        self.last = Some((*ch, i as u32));
        self.slots.get_mut(i).map(|(_, st)| st)
    }

    /// The state of channel `ch`, a new one when it has none. Inline, the new
    /// channel out of line: every delivery asks (callgrind, storm slice json:
    /// 148.61 -> 148.06 M).
    #[inline]
    pub(crate) fn get_or_insert(&mut self, ch: u16) -> &mut ChannelState {
        self.get_or_insert_found(ch).0
    }

    /// As `get_or_insert`, and whether the channel was there already.
    #[inline]
    pub(crate) fn get_or_insert_found(&mut self, ch: u16) -> (&mut ChannelState, bool) {
        let (i, found) = match self.slot(ch) {
            Some(i) => (i, true),
            None => (self.push_new(ch), false),
        };
        self.last = Some((ch, i as u32));
        (&mut self.slots[i].1, found)
    }

    /// Adds a new channel `ch` (not open yet); its slot.
    #[cold]
    #[inline(never)]
    fn push_new(&mut self, ch: u16) -> usize {
        let i = self.slots.len();
        self.slots.push((ch, ChannelState::default()));
        self.index.insert(ch, i as u32);
        i
    }

    /// Sets the state of channel `ch`; the one it replaces, if any.
    pub(crate) fn insert(&mut self, ch: u16, st: ChannelState) -> Option<ChannelState> {
        match self.slot(ch) {
            Some(i) => {
                // Into the map too: a map's insert may grow it even when the key is
                // there, and with it the order of iteration.
                self.index.insert(ch, i as u32);
                Some(std::mem::replace(&mut self.slots[i].1, st))
            }
            None => {
                self.index.insert(ch, self.slots.len() as u32);
                self.slots.push((ch, st));
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, ch: &u16) -> Option<ChannelState> {
        let i = self.index.remove(ch)? as usize;
        self.last = None;
        let (_, st) = self.slots.swap_remove(i);
        if let Some((moved, _)) = self.slots.get(i) {
            if let Some(j) = self.index.get_mut(moved) {
                *j = i as u32;
            }
        }
        Some(st)
    }

    /// The channels in the map's order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u16, &ChannelState)> {
        self.index
            .iter()
            .filter_map(|(ch, &i)| Some((ch, &self.slots.get(i as usize)?.1)))
    }

    /// The channels in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &ChannelState> {
        self.slots.iter().map(|(_, st)| st)
    }

    /// The channels in no particular order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut ChannelState> {
        self.slots.iter_mut().map(|(_, st)| st)
    }

    /// Takes every channel out, in the map's order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u16, ChannelState)> {
        self.last = None;
        let mut slots: Vec<Option<ChannelState>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(|(_, st)| Some(st))
            .collect();
        let order: Vec<(u16, u32)> = self.index.drain().collect();
        order
            .into_iter()
            .filter_map(move |(ch, i)| Some((ch, slots.get_mut(i as usize)?.take()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The channels list in the order a map of the channels would (the order
    /// outputs that list channels showed before [`Channels`]).
    #[test]
    fn channels_keep_the_order_of_a_map() {
        let mut map: FxHashMap<u16, u64> = FxHashMap::default();
        let mut chans = Channels::default();
        // A fixed pseudo-random run of opens, reopens, lookups and closes.
        let mut x: u32 = 12345;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let ch = ((x >> 16) % 40) as u16;
            match (x >> 8) % 4 {
                0 => {
                    map.insert(ch, step);
                    let st = ChannelState {
                        live_unacked: step as u32,
                        ..ChannelState::default()
                    };
                    chans.insert(ch, st);
                }
                1 => {
                    map.entry(ch).or_insert(step);
                    let st = chans.get_or_insert(ch);
                    if st.live_unacked == 0 && st.tombstones == 0 {
                        st.live_unacked = step as u32;
                        st.tombstones = 1;
                    }
                    if let Some(v) = map.get_mut(&ch) {
                        assert_eq!(*v as u32, chans.get_mut(&ch).map_or(0, |s| s.live_unacked));
                    }
                }
                2 => {
                    assert_eq!(
                        map.remove(&ch).map(|v| v as u32),
                        chans.remove(&ch).map(|s| s.live_unacked)
                    );
                }
                _ if step % 997 == 0 => {
                    let want: Vec<(u16, u32)> = map.drain().map(|(c, v)| (c, v as u32)).collect();
                    let got: Vec<(u16, u32)> =
                        chans.drain().map(|(c, s)| (c, s.live_unacked)).collect();
                    assert_eq!(want, got);
                }
                _ => {}
            }
            let want: Vec<(u16, u32)> = map.iter().map(|(c, v)| (*c, *v as u32)).collect();
            let got: Vec<(u16, u32)> = chans.iter().map(|(c, s)| (*c, s.live_unacked)).collect();
            assert_eq!(want, got);
            assert_eq!(map.len(), chans.len());
            assert_eq!(map.contains_key(&ch), chans.contains_key(&ch));
        }
    }
}
