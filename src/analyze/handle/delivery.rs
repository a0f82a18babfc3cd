//! Deliveries (basic.deliver, basic.get-ok) and their content headers: the
//! unacknowledged list of the channel, the consumer's window, and the message
//! fingerprint that follows a requeued message through its redeliveries.

use crate::event::{ContentHeader, MethodArgs, MethodKind};

use super::super::state::{LoopEvent, Mark, PendingContent, Step, Unacked, LOOP_ROUNDS, NO_TRACK};
use super::super::Analyzer;
use super::{hash_of, route_hash, same};

/// The tag a delivery notes in the errors trail; none for a cut one, which
/// `trail_method` noted.
fn trail_tag(a: &MethodArgs) -> Option<u64> {
    a.delivery_tag.filter(|_| a.truncated.is_none())
}

/// The delivery a basic.deliver or basic.get-ok announces.
fn delivery(a: &MethodArgs, at: Mark, consumer: Option<u32>, route_hash: u64) -> PendingContent {
    PendingContent {
        delivery: Unacked {
            tag: a.delivery_tag.unwrap_or(0),
            consumer,
            at,
            fingerprint: 0,
            track_hint: NO_TRACK,
            settled: false,
        },
        route_hash,
        redelivered: a.redelivered.unwrap_or(false),
    }
}

impl Analyzer {
    pub(super) fn on_deliver(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        let mut trail = trail_tag(a);
        let tag = a.consumer_tag.as_deref().unwrap_or("");
        let memo = match (&a.consumer_tag, &self.conns[ci as usize].memo.consumer) {
            (Some(t), Some((mch, mt, i, len)))
                if *mch == ch
                    && same(t, mt)
                    && *len == self.consumers.len()
                    && self.consumers[*i as usize].end.is_none() =>
            {
                Some(*i)
            }
            _ => None,
        };
        let found = memo.or_else(|| {
            let i = self.find_consumer(ci, ch, tag)?;
            if let Some(t) = &a.consumer_tag {
                let len = self.consumers.len();
                self.conns[ci as usize].memo.consumer = Some((ch, t.clone(), i, len));
            }
            Some(i)
        });
        let idx = match found {
            Some(i) => i,
            None => {
                let c = &self.conns[ci as usize];
                let known_channel = c.channels.contains_key(&ch);
                let ended_here = c.consumers.iter().any(|&i| {
                    let cs = &self.consumers[i as usize];
                    cs.channel == ch && cs.tag == tag
                });
                // In flight when the channel or consumer was closed: nothing to track.
                if ended_here || (!known_channel && !c.start_unseen) {
                    if let (Some(t), true) = (trail, known_channel) {
                        if let Some(st) = self.conns[ci as usize].channels.get_mut(&ch) {
                            st.trail.note_delivered(t, mark);
                        }
                    }
                    return;
                }
                // The errors trail knows only the channels there before the delivery.
                if !known_channel {
                    trail = None;
                }
                self.new_consumer(ci, ch, tag.to_string(), None, false, true)
            }
        };
        let memo = &mut self.conns[ci as usize].memo.route;
        let route_hash = match (&a.exchange, &a.routing_key, &*memo) {
            (Some(x), Some(rk), Some((mx, mrk, h))) if same(x, mx) && same(rk, mrk) => *h,
            _ => {
                let h = route_hash(a);
                if let (Some(x), Some(rk)) = (&a.exchange, &a.routing_key) {
                    *memo = Some((x.clone(), rk.clone(), h));
                }
                h
            }
        };
        self.on_delivery(ci, ch, delivery(a, mark, Some(idx), route_hash), trail);
    }

    pub(super) fn on_get_ok(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        self.on_delivery(ci, ch, delivery(a, mark, None, route_hash(a)), trail_tag(a));
    }

    /// A delivery to `p.delivery.consumer` (None: basic.get-ok), whose content
    /// header comes next; `trail`, the tag for the errors trail of a channel
    /// there before the delivery (noted in this lookup of the channel, not one
    /// of its own: callgrind, storm slice json: 129.44 -> 129.12 M).
    // Inlined into its two callers (callgrind, storm slice json: 190.9 -> 189.2 M;
    // `settle` inlined the same way cost more than it saved, and so did the whole
    // `on_method`, now a thin dispatch inlined into `handle`).
    #[inline(always)]
    fn on_delivery(&mut self, ci: u32, ch: u16, p: PendingContent, trail: Option<u64>) {
        let Unacked {
            consumer, at: mark, ..
        } = p.delivery;
        let redelivered = p.redelivered;
        let c = &mut self.conns[ci as usize];
        c.counts.deliveries += 1;
        // One lookup of the channel for the whole delivery.
        let (st, found) = c.channels.get_or_insert_found(ch);
        if let (Some(tag), true) = (trail, found) {
            st.trail.note_delivered(tag, mark);
        }
        let settled_on_delivery = match consumer {
            Some(i) => self.consumers[i as usize].no_ack,
            None => st.get_no_ack,
        };
        st.pending_content = Some(p);
        if !settled_on_delivery {
            st.unacked.push_back(p.delivery);
            st.live_unacked += 1;
        }
        let global_limit = st
            .qos
            .global
            .as_ref()
            .filter(|q| q.prefetch_count > 0)
            .map(|q| q.prefetch_count as u32);
        if let Some(limit) = global_limit {
            if !settled_on_delivery && st.live_unacked >= limit && st.global_full_since.is_none() {
                st.global_full_since = Some(mark);
            }
        }
        if let Some(i) = consumer {
            let cs = &mut self.consumers[i as usize];
            cs.counts.deliveries += 1;
            if redelivered {
                cs.counts.redelivered += 1;
            }
            cs.marks[Step::FirstDelivery].get_or_insert(mark);
            cs.marks[Step::LastDelivery] = Some(mark);
            if !cs.no_ack {
                cs.counts.unacked += 1;
                if let Some(limit) = cs.prefetch_limit() {
                    if cs.counts.unacked >= limit && cs.marks[Step::FullSince].is_none() {
                        cs.marks[Step::FullSince] = Some(mark);
                    }
                }
            }
        }
    }

    pub(super) fn on_content_header(&mut self, ci: u32, ch: u16, h: &ContentHeader) {
        let Some(st) = self.conns[ci as usize].channels.get_mut(&ch) else {
            return;
        };
        let Some(p) = st.pending_content.take() else {
            return;
        };
        let props = &h.properties;
        // The route (exchange and routing key of the delivery, which a requeued
        // message keeps) is part of the identity: the same message_id published
        // to two queues is two messages. A dead-lettered copy (x-death) is another
        // message for the loop rule: its settle in the dead-letter queue says
        // nothing of the original's loop.
        let dead_lettered = props
            .headers
            .as_ref()
            .is_some_and(|h| h.get("x-death").is_some());
        let fingerprint = match &props.message_id {
            Some(id) if dead_lettered => hash_of(&(2u8, p.route_hash, &**id)),
            Some(id) => hash_of(&(0u8, p.route_hash, &**id)),
            None => hash_of(&(
                1u8,
                p.route_hash,
                h.body_size,
                props.correlation_id.as_deref(),
                props.timestamp,
            )),
        }
        .max(1);
        // The requeue track of a message delivered again, and where it is, noted
        // on the delivery for its settle.
        let track = if p.redelivered {
            self.requeued.find_mut(fingerprint, NO_TRACK)
        } else {
            None
        };
        if let Some(last) = st.unacked.back_mut() {
            if last.tag == p.delivery.tag {
                last.fingerprint = fingerprint;
                last.track_hint = track.as_ref().map_or(NO_TRACK, |(i, _)| *i);
            }
        }
        if let (Some(headers), Some(i)) = (&props.headers, p.delivery.consumer) {
            let cs = &mut self.consumers[i as usize];
            cs.hints
                .read(headers, p.delivery.tag, p.delivery.at, cs.queue.as_deref());
        }
        let Some((slot, track)) = track else {
            return;
        };
        track.rounds += 1;
        track.outstanding = true;
        if track.message_id.is_none() {
            track.message_id = props.message_id.as_deref().map(str::to_owned);
        }
        track.push(LoopEvent {
            at: p.delivery.at,
            method: MethodKind::BasicDeliver,
            delivery_tag: p.delivery.tag,
            conn: ci,
            channel: ch,
        });
        if track.rounds >= LOOP_ROUNDS && track.became_loop.is_none() {
            track.became_loop = Some(p.delivery.at);
        }
        if track.became_loop.is_some() {
            let rounds = track.rounds;
            if let Some(i) = p.delivery.consumer {
                let cs = &mut self.consumers[i as usize];
                cs.marks[Step::LoopSince].get_or_insert(p.delivery.at);
                // Name the message delivered most often to this consumer (the
                // one named already needs no lookup of its track).
                let named = cs.hints.loop_fp == Some(fingerprint);
                if !named {
                    let other = cs
                        .hints
                        .loop_fp
                        .and_then(|f| self.requeued.find(f, cs.hints.loop_track_hint));
                    let more = match other {
                        Some(t) => rounds > t.rounds,
                        None => true,
                    };
                    if more {
                        cs.hints.loop_fp = Some(fingerprint);
                        cs.hints.loop_track_hint = slot;
                    }
                }
            }
        }
    }
}
