//! What one connection's publishers showed: the channels in confirm mode
//! (confirm.select) with their publishes awaiting basic.ack/nack from the
//! broker, the nacks, the confirm latencies, and the basic.return of mandatory
//! publishes matched with the publish they return. The handlers of
//! `handle/publish.rs` write it; the rules of `verdicts/publisher.rs` read it.
//!
//! Bounded: at most [`MAX_PENDING_CONFIRMS`] publishes awaiting a confirm and
//! [`MAX_MANDATORY_KEPT`] recent mandatory publishes per channel (more are
//! counted, not kept), confirm latencies in a fixed histogram per channel.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::event::Text;

use super::super::histogram::LatencyHistogram;
use super::Mark;

/// Publishes awaiting their confirm kept per channel; more are counted only.
pub(crate) const MAX_PENDING_CONFIRMS: usize = 10_000;
/// Recent mandatory publishes kept per channel to match basic.return with.
pub(crate) const MAX_MANDATORY_KEPT: usize = 256;
/// Channels whose confirm record is kept after the channel closed (for their nacks).
const MAX_CLOSED_KEPT: usize = 16;

/// One basic.publish as the publisher rules name it.
#[derive(Debug, Clone)]
pub(crate) struct PublishRec {
    pub at: Mark,
    pub exchange: Option<Text>,
    pub routing_key: Option<Text>,
    /// From the publish's content header.
    pub message_id: Option<Text>,
    /// Its confirm sequence number on a channel in confirm mode (1, 2, ...), else 0.
    pub seq: u64,
}

impl PublishRec {
    pub(crate) fn exchange(&self) -> &str {
        self.exchange.as_deref().unwrap_or("")
    }
    pub(crate) fn routing_key(&self) -> &str {
        self.routing_key.as_deref().unwrap_or("")
    }
}

/// A publish awaiting its confirm; `done` marks one confirmed out of order.
#[derive(Debug, Clone)]
pub(crate) struct PendingConfirm {
    pub publish: PublishRec,
    pub done: bool,
}

/// A channel in confirm mode.
#[derive(Debug, Default)]
pub(crate) struct ConfirmChannel {
    pub channel: u16,
    pub selected: Option<Mark>,
    /// The sequence number of the last publish since confirm.select.
    pub last_seq: u64,
    /// In sequence order; confirmed entries are popped from the front.
    pub pending: VecDeque<PendingConfirm>,
    pub pending_live: u64,
    /// Publishes awaiting a confirm beyond [`MAX_PENDING_CONFIRMS`], not kept.
    pub untracked: u64,
    pub acked: u64,
    pub nacked: u64,
    /// The first basic.nack and the first publish it nacked.
    pub first_nack: Option<(Mark, Option<PublishRec>)>,
    pub last_confirm: Option<Mark>,
    /// publish -> confirm latency.
    pub latency: LatencyHistogram,
    /// channel.close seen: outstanding publishes are the close's business.
    pub closed: Option<Mark>,
}

impl ConfirmChannel {
    /// The oldest publish still awaiting its confirm.
    pub(crate) fn oldest_pending(&self) -> Option<&PublishRec> {
        self.pending.iter().find(|p| !p.done).map(|p| &p.publish)
    }
}

/// basic.return from the broker, with the publish it returns when found.
#[derive(Debug, Clone)]
pub(crate) struct ReturnRec {
    pub at: Mark,
    pub reply_code: u16,
    pub reply_text: String,
    pub exchange: Option<Text>,
    pub routing_key: Option<Text>,
    /// From the returned message's content header.
    pub message_id: Option<Text>,
    pub publish: Option<PublishRec>,
}

/// The returns on one channel: how many, by reply code, and the first.
#[derive(Debug)]
pub(crate) struct ReturnsOnChannel {
    pub channel: u16,
    pub count: u64,
    /// (reply code, count), in order of first appearance.
    pub codes: Vec<(u16, u64)>,
    pub first: ReturnRec,
}

/// Which record the next content header on a channel belongs to.
#[derive(Debug, Clone, Copy)]
enum Awaiting {
    /// The last mandatory publish kept on that channel.
    Mandatory(u16),
    /// The publish of sequence number `seq` on a confirm channel.
    Confirm(u16, u64),
    /// The first return on that channel (the returned message's header).
    Return(u16),
}

/// Everything publisher-side of one connection.
#[derive(Debug, Default)]
pub(crate) struct PublisherState {
    pub confirms: FxHashMap<u16, ConfirmChannel>,
    /// Confirm channels that closed with nacks, kept for their verdict.
    pub closed_confirms: Vec<ConfirmChannel>,
    mandatory: FxHashMap<u16, VecDeque<PublishRec>>,
    pub returns: Vec<ReturnsOnChannel>,
    /// Content header awaited from the client ([0]) and from the broker ([1]).
    awaiting: [Option<Awaiting>; 2],
    /// Since when the broker advertises a zero TCP window (it stopped reading), and
    /// the first such episode's start and end once it reopened.
    pub broker_zero_window: Option<Mark>,
    pub broker_window_reopened: Option<(Mark, Mark)>,
}

impl PublisherState {
    /// A zero window (`zero`) or a window open again advertised by `dir`'s sender.
    pub(crate) fn window(&mut self, dir: crate::event::Dir, at: Mark, zero: bool) {
        if dir != crate::event::Dir::S2C {
            return;
        }
        if zero {
            self.broker_zero_window.get_or_insert(at);
        } else if let Some(since) = self.broker_zero_window.take() {
            self.broker_window_reopened.get_or_insert((since, at));
        }
    }

    /// confirm.select on `ch`: publishes are numbered from 1 from here on.
    pub(crate) fn confirm_select(&mut self, ch: u16, at: Mark) {
        let cc = self.confirms.entry(ch).or_default();
        cc.channel = ch;
        cc.selected.get_or_insert(at);
    }

    /// A channel (re)opened or closed: its confirm record ends; one with nacks is kept.
    pub(crate) fn channel_ended(&mut self, ch: u16, at: Mark, reopened: bool) {
        self.mandatory.remove(&ch);
        if reopened {
            if let Some(mut cc) = self.confirms.remove(&ch) {
                if cc.nacked > 0 && self.closed_confirms.len() < MAX_CLOSED_KEPT {
                    cc.closed.get_or_insert(at);
                    self.closed_confirms.push(cc);
                }
            }
        } else if let Some(cc) = self.confirms.get_mut(&ch) {
            cc.closed.get_or_insert(at);
        }
    }

    /// A basic.publish on `ch`: numbered when the channel is in confirm mode,
    /// kept when mandatory (to match a basic.return with).
    pub(crate) fn publish(
        &mut self,
        ch: u16,
        at: Mark,
        exchange: &Option<Text>,
        routing_key: &Option<Text>,
        mandatory: bool,
    ) {
        self.awaiting[0] = None;
        if !mandatory && self.confirms.is_empty() {
            // The common publish: nothing to follow.
            return;
        }
        let confirm = self.confirms.get_mut(&ch).filter(|c| c.closed.is_none());
        if confirm.is_none() && !mandatory {
            return;
        }
        let mut rec = PublishRec {
            at,
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            message_id: None,
            seq: 0,
        };
        if let Some(cc) = confirm {
            cc.last_seq += 1;
            rec.seq = cc.last_seq;
            if cc.pending.len() < MAX_PENDING_CONFIRMS {
                cc.pending.push_back(PendingConfirm {
                    publish: rec.clone(),
                    done: false,
                });
                cc.pending_live += 1;
                self.awaiting[0] = Some(Awaiting::Confirm(ch, rec.seq));
            } else {
                cc.untracked += 1;
            }
        }
        if mandatory {
            let kept = self.mandatory.entry(ch).or_default();
            if kept.len() >= MAX_MANDATORY_KEPT {
                kept.pop_front();
            }
            kept.push_back(rec);
            self.awaiting[0] = Some(Awaiting::Mandatory(ch));
        }
    }

    /// The content header of the client's last publish on `ch`: its message_id.
    pub(crate) fn publish_header(&mut self, ch: u16, message_id: &Option<Text>) {
        let Some(w) = self.awaiting[0].take() else {
            return;
        };
        match w {
            Awaiting::Mandatory(c) if c == ch => {
                let seq = self
                    .mandatory
                    .get_mut(&ch)
                    .and_then(|k| k.back_mut())
                    .map(|p| {
                        p.message_id = message_id.clone();
                        p.seq
                    });
                if let Some(seq) = seq.filter(|s| *s > 0) {
                    self.set_confirm_message_id(ch, seq, message_id);
                }
            }
            Awaiting::Confirm(c, seq) if c == ch => {
                self.set_confirm_message_id(ch, seq, message_id)
            }
            _ => {}
        }
    }

    fn set_confirm_message_id(&mut self, ch: u16, seq: u64, message_id: &Option<Text>) {
        if let Some(p) = self
            .confirms
            .get_mut(&ch)
            .and_then(|cc| cc.pending.back_mut())
            .filter(|p| p.publish.seq == seq)
        {
            p.publish.message_id = message_id.clone();
        }
    }

    /// basic.ack (`nack` false) or basic.nack from the broker on `ch`.
    pub(crate) fn confirm(&mut self, ch: u16, at: Mark, tag: u64, multiple: bool, nack: bool) {
        let Some(cc) = self.confirms.get_mut(&ch) else {
            return;
        };
        cc.last_confirm = Some(at);
        let mut first_nacked: Option<PublishRec> = None;
        let mut n = 0u64;
        let mut settle = |p: &mut PendingConfirm, latency: &mut LatencyHistogram| {
            p.done = true;
            n += 1;
            let us = (at.ts.0 - p.publish.at.ts.0).max(0) as u64 / 1_000;
            latency.record_us(us);
            if nack && first_nacked.is_none() {
                first_nacked = Some(p.publish.clone());
            }
        };
        if multiple {
            // tag 0 with multiple: everything outstanding.
            for p in cc.pending.iter_mut() {
                if tag != 0 && p.publish.seq > tag {
                    break;
                }
                if !p.done {
                    settle(p, &mut cc.latency);
                }
            }
        } else if let Ok(i) = cc.pending.binary_search_by_key(&tag, |p| p.publish.seq) {
            if let Some(p) = cc.pending.get_mut(i).filter(|p| !p.done) {
                settle(p, &mut cc.latency);
            }
        }
        cc.pending_live = cc.pending_live.saturating_sub(n);
        while cc.pending.front().is_some_and(|p| p.done) {
            cc.pending.pop_front();
        }
        // Publishes over the cap are not kept: a confirm of everything clears them.
        if multiple && (tag == 0 || tag >= cc.last_seq) {
            cc.untracked = 0;
        }
        let total = n;
        if nack {
            cc.nacked += total.max(1);
            if cc.first_nack.is_none() {
                cc.first_nack = Some((at, first_nacked));
            }
        } else {
            cc.acked += total;
        }
    }

    /// basic.return on `ch`: matched with the earliest kept mandatory publish
    /// to the same exchange and routing key.
    pub(crate) fn returned(
        &mut self,
        ch: u16,
        at: Mark,
        reply_code: u16,
        reply_text: &str,
        exchange: &Option<Text>,
        routing_key: &Option<Text>,
    ) {
        let x = exchange.as_deref().unwrap_or("");
        let rk = routing_key.as_deref().unwrap_or("");
        let publish = self.mandatory.get_mut(&ch).and_then(|kept| {
            let i = kept
                .iter()
                .position(|p| p.exchange() == x && p.routing_key() == rk)?;
            kept.remove(i)
        });
        self.awaiting[1] = None;
        match self.returns.iter_mut().find(|r| r.channel == ch) {
            Some(r) => {
                r.count += 1;
                match r.codes.iter_mut().find(|(c, _)| *c == reply_code) {
                    Some((_, n)) => *n += 1,
                    None => r.codes.push((reply_code, 1)),
                }
            }
            None => {
                self.returns.push(ReturnsOnChannel {
                    channel: ch,
                    count: 1,
                    codes: vec![(reply_code, 1)],
                    first: ReturnRec {
                        at,
                        reply_code,
                        reply_text: reply_text.to_string(),
                        exchange: exchange.clone(),
                        routing_key: routing_key.clone(),
                        message_id: None,
                        publish,
                    },
                });
                self.awaiting[1] = Some(Awaiting::Return(ch));
            }
        }
    }

    /// A content header from the broker on `ch`: the first returned message's properties.
    pub(crate) fn return_header(&mut self, ch: u16, message_id: &Option<Text>) {
        if let Some(Awaiting::Return(c)) = self.awaiting[1].take() {
            if c == ch {
                if let Some(r) = self.returns.iter_mut().find(|r| r.channel == ch) {
                    r.first.message_id = message_id.clone();
                }
            }
        }
    }

    /// Whether the broker's content header on a channel may be a returned message's.
    pub(crate) fn awaits_return_header(&self) -> bool {
        self.awaiting[1].is_some()
    }
}
