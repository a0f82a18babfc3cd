//! Settles (basic.ack, basic.nack, basic.reject, basic.recover): the channel's
//! unacknowledged list, the consumer's counters and latency, and the requeue
//! tracks that reveal a redelivery loop.

use std::collections::VecDeque;

use crate::event::{Method, MethodKind};

use super::super::state::{
    LoopEvent, Mark, RequeueTrack, Step, Unacked, LOOP_ROUNDS, MAX_REQUEUED_TRACKED,
};
use super::super::Analyzer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SettleKind {
    Ack,
    Nack,
    Reject,
}

/// One settle as the client sent it.
#[derive(Debug, Clone, Copy)]
struct Settle {
    /// The delivery tag; 0 with `multiple` is everything outstanding.
    tag: u64,
    multiple: bool,
    kind: SettleKind,
    requeue: bool,
}

impl Settle {
    /// basic.ack, basic.nack or basic.reject, by its arguments. Inlined by
    /// force: left out of line, one call more a settle (callgrind, storm slice
    /// json: 142.84 -> 142.67 M).
    #[inline(always)]
    fn of(m: &Method) -> Settle {
        let a = &m.args;
        let (kind, multiple, requeue) = match m.method {
            MethodKind::BasicAck => (SettleKind::Ack, a.multiple.unwrap_or(false), false),
            MethodKind::BasicNack => (
                SettleKind::Nack,
                a.multiple.unwrap_or(false),
                a.requeue.unwrap_or(true),
            ),
            _ => (SettleKind::Reject, false, a.requeue.unwrap_or(true)),
        };
        Settle {
            tag: a.delivery_tag.unwrap_or(0),
            multiple,
            kind,
            requeue,
        }
    }

    /// basic.recover: everything unacknowledged goes back to the queue.
    fn everything_requeued() -> Settle {
        Settle {
            tag: 0,
            multiple: true,
            kind: SettleKind::Nack,
            requeue: true,
        }
    }
}

/// Where `tag` is in the unacknowledged list (sorted by tag), as its binary
/// search finds it. The oldest delivery is looked at first: a consumer settles
/// in order (a requeue storm's every nack), and the search is then not needed.
/// The second entry's tag is looked at too because the search, among equal
/// tags, may find another than the first.
fn position_of(unacked: &VecDeque<Unacked>, tag: u64) -> Option<usize> {
    match (unacked.front(), unacked.get(1)) {
        (Some(f), next) if f.tag == tag && next.is_none_or(|n| n.tag != tag) => Some(0),
        _ => unacked.binary_search_by_key(&tag, |u| u.tag).ok(),
    }
}

impl Analyzer {
    /// The settle of basic.ack, basic.nack or basic.reject `m`, or with None
    /// basic.recover's. The method, not its `Settle`, as the argument: a pointer
    /// in a register, where a `Settle` went by the caller's stack and kept
    /// `handle` from calling this last (with the buffer below taken only where
    /// needed, callgrind, storm slice json: 125.40 -> 124.77 M).
    pub(super) fn settle(&mut self, ci: u32, ch: u16, mark: Mark, m: Option<&Method>) {
        let Settle {
            tag,
            multiple,
            kind,
            requeue,
        } = m.map_or_else(Settle::everything_requeued, Settle::of);
        let Some(st) = self.conns[ci as usize].channels.get_mut(&ch) else {
            return;
        };
        let method = match kind {
            SettleKind::Ack => MethodKind::BasicAck,
            SettleKind::Nack => MethodKind::BasicNack,
            SettleKind::Reject => MethodKind::BasicReject,
        };
        // The reused buffer (no allocation per settle) of the settles that gather
        // deliveries, taken only by them: the oldest delivery settled alone needs
        // none (with the method as the argument, callgrind, storm slice json:
        // 125.40 -> 124.77 M).
        let mut scratch = Vec::new();
        let mut take_scratch = || {
            let mut s = std::mem::take(&mut self.settle_scratch);
            s.clear();
            s
        };
        let oldest: Option<Unacked>;
        let position = if multiple {
            None
        } else {
            position_of(&st.unacked, tag)
        };
        let settled: &[Unacked] = match (multiple, position) {
            (true, _) => {
                scratch = take_scratch();
                // tag 0 with multiple: everything outstanding on the channel.
                while st.unacked.front().is_some_and(|f| tag == 0 || f.tag <= tag) {
                    let Some(e) = st.unacked.pop_front() else {
                        break;
                    };
                    if e.settled {
                        st.tombstones -= 1;
                    } else {
                        scratch.push(e);
                    }
                }
                if tag == 0 {
                    st.tombstones = 0;
                }
                &scratch
            }
            // The oldest delivery, with nothing settled out of order behind it
            // (every nack of a requeue storm): popped and settled as it is, not
            // marked, copied and popped as below (callgrind, storm slice json
            // 159.3 -> 157.8 M). An Option as the slice, not an array of one
            // filled by a match: 145.80 -> 145.34 M.
            (false, Some(0)) if st.tombstones == 0 => {
                oldest = st
                    .unacked
                    .pop_front()
                    .map(|e| Unacked { settled: true, ..e });
                oldest.as_slice()
            }
            (false, Some(pos)) => {
                scratch = take_scratch();
                let e = &mut st.unacked[pos];
                if !e.settled {
                    e.settled = true;
                    scratch.push(*e);
                    st.tombstones += 1;
                }
                while st.unacked.front().is_some_and(|u| u.settled) {
                    st.unacked.pop_front();
                    st.tombstones -= 1;
                }
                if st.tombstones as usize > 64 && st.tombstones as usize > st.unacked.len() / 2 {
                    st.unacked.retain(|u| !u.settled);
                    st.tombstones = 0;
                }
                &scratch
            }
            (false, None) => &scratch,
        };
        // For the explanation of a broker's "unknown delivery tag" (handle/errors.rs).
        super::errors::trail_settle(&mut st.trail, mark, method, tag, multiple, settled);
        if !settled.is_empty() {
            st.live_unacked = st.live_unacked.saturating_sub(settled.len() as u32);
            if st.global_full_since.take().is_some() {
                st.global_room_since = Some(mark);
            }
            let slow_us = self.slow_ack_us;
            for e in settled {
                self.settle_one(ci, ch, mark, kind, requeue, method, slow_us, e);
            }
        }
        if scratch.capacity() > 0 {
            self.settle_scratch = scratch;
        }
    }

    /// One delivery settled: its consumer's counters and latency, and the
    /// message's requeue track. Inlined by force: left to the compiler it
    /// stayed out of line, one call a settle (storm slice json 158.8 M that way).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn settle_one(
        &mut self,
        ci: u32,
        ch: u16,
        mark: Mark,
        kind: SettleKind,
        requeue: bool,
        method: MethodKind,
        slow_us: u64,
        e: &Unacked,
    ) {
        if let Some(i) = e.consumer {
            let cs = &mut self.consumers[i as usize];
            cs.counts.unacked = cs.counts.unacked.saturating_sub(1);
            if cs.marks[Step::FullSince].take().is_some() {
                cs.marks[Step::RoomSince] = Some(mark);
            }
            cs.marks[Step::LastSettle] = Some(mark);
            let lat_us = ((mark.ts.0 - e.at.ts.0).max(0) / 1000) as u64;
            cs.latency.record_us(lat_us);
            if lat_us >= slow_us && cs.marks[Step::FirstSlowSettle].is_none() {
                cs.marks[Step::FirstSlowSettle] = Some(mark);
            }
            match (kind, requeue) {
                (SettleKind::Ack, _) => cs.counts.acks += 1,
                (SettleKind::Nack, true) => cs.counts.nacks_requeue += 1,
                (SettleKind::Nack, false) => cs.counts.nacks_drop += 1,
                (SettleKind::Reject, true) => cs.counts.rejects_requeue += 1,
                (SettleKind::Reject, false) => cs.counts.rejects_drop += 1,
            }
        }
        if e.fingerprint == 0 {
            return;
        }
        let ev = LoopEvent {
            at: mark,
            method,
            delivery_tag: e.tag,
            conn: ci,
            channel: ch,
        };
        if kind != SettleKind::Ack && requeue {
            // The message's track, found with one lookup when it has one (every
            // requeue after its first).
            if let Some((_, t)) = self.requeued.find_mut(e.fingerprint, e.track_hint) {
                t.outstanding = false;
                t.requeues += 1;
                t.push(ev);
                return;
            }
            if self.requeued.len() >= MAX_REQUEUED_TRACKED {
                // Forget messages that are not looping to make room.
                self.requeued.retain(|t| t.became_loop.is_some());
                if self.requeued.len() >= MAX_REQUEUED_TRACKED {
                    return;
                }
            }
            let mut t = RequeueTrack::new(LoopEvent {
                at: e.at,
                method: MethodKind::BasicDeliver,
                delivery_tag: e.tag,
                conn: ci,
                channel: ch,
            });
            t.outstanding = false;
            t.requeues += 1;
            t.push(ev);
            self.requeued.insert(e.fingerprint, t);
        } else if let Some((_, t)) = self.requeued.find_mut(e.fingerprint, e.track_hint) {
            // Acked, or dropped/dead-lettered: the message left the queue.
            if t.became_loop.is_some() {
                t.outstanding = false;
                t.push(ev);
                t.rounds = t.rounds.max(LOOP_ROUNDS);
                t.became_loop = None;
            } else {
                self.requeued.remove(e.fingerprint);
            }
        }
    }
}
