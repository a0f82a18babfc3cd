//! What the analyzer keeps to explain a broker's channel.close or
//! connection.close (issue 15, "broker errors explained"): per channel, the
//! recent settles, the last settle that matched nothing, the client's content
//! sequence and its queue.declare arguments; per connection, the negotiated
//! channel_max, the client's oversize frames, the first frame out of content
//! order and another protocol's header; across connections, the deliveries a
//! connection left unacknowledged when it ended and the exclusive consumers.
//! When the broker closes, the handlers (`handle/errors.rs`) turn these into
//! [`CloseFacts`], kept with the close; `verdicts/errors.rs` words them. All of
//! it is bounded (the `MAX_*` caps, each beside what it bounds), and none of it decides a verdict.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::event::{Conn, MethodKind};

use super::queue_args::DeclaredQueue;
use super::Mark;

/// Delivery tags `from..=to` of a channel, settled by one client method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SettledTags {
    pub from: u64,
    pub to: u64,
    pub at: Mark,
    pub method: MethodKind,
    /// The basic.deliver of `from` when the range is that one tag.
    pub delivered: Option<Mark>,
}

/// A basic.ack/nack/reject that matched no outstanding delivery of its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefusedSettle {
    pub at: Mark,
    pub method: MethodKind,
    pub tag: u64,
    pub multiple: bool,
}

/// Where the client is in sending a message on a channel: basic.publish, then
/// its content header, then body frames until `body_size` bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ContentSeq {
    #[default]
    Idle,
    Header {
        publish: Mark,
    },
    Body {
        publish: Mark,
        body_size: u64,
        left: u64,
    },
}

/// The first client frame out of content order on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentAnomaly {
    pub at: Mark,
    pub channel: u16,
    /// The frame that came: a method's name, `content-header` or `content-body`.
    pub got: &'static str,
    /// The publish whose content was incomplete, when there was one.
    pub publish: Option<Mark>,
    /// Body bytes that publish still awaited.
    pub left: u64,
    pub body_size: u64,
}

/// Settles remembered per channel (ranges: one basic.ack multiple=true is one).
pub(crate) const MAX_SETTLES_KEPT: usize = 64;
/// queue.declare awaiting declare-ok remembered per channel.
pub(crate) const MAX_DECLARES_PENDING: usize = 16;

/// What a channel keeps for the explanations.
#[derive(Debug, Default)]
pub(crate) struct ChannelTrail {
    /// The last [`MAX_SETTLES_KEPT`] settles, a ring: `settled[next]` is the
    /// oldest once it is full (a write a settle, no shifting: callgrind, storm
    /// slice json: 188.7 -> 188.2 M).
    settled: Vec<SettledTags>,
    next: usize,
    pub refused: Option<RefusedSettle>,
    /// The highest delivery tag delivered on the channel, and its basic.deliver.
    pub last_delivered: Option<(u64, Mark)>,
    /// The client's queue.declare awaiting its declare-ok, oldest first.
    pub declares: VecDeque<DeclaredQueue>,
    /// The last basic.consume: (frame, queue, exclusive).
    pub last_consume: Option<(Mark, String, bool)>,
    /// Why the broker is closing the channel, gathered from the state before
    /// its channel.close; the close record takes it.
    pub facts: Option<Box<CloseFacts>>,
}

impl ChannelTrail {
    /// Remembers a settle of tags `from..=to`.
    pub(crate) fn settled(&mut self, s: SettledTags) {
        match self.settled.get_mut(self.next) {
            Some(oldest) => *oldest = s,
            None => self.settled.push(s),
        }
        self.next = (self.next + 1) % MAX_SETTLES_KEPT;
    }

    /// Notes delivery tag `tag` (its basic.deliver or get-ok at `mark`).
    #[inline]
    pub(crate) fn note_delivered(&mut self, tag: u64, mark: Mark) {
        if self.last_delivered.is_none_or(|(t, _)| tag > t) {
            self.last_delivered = Some((tag, mark));
        }
    }

    /// The latest settle that covered `tag`.
    pub(crate) fn settle_of(&self, tag: u64) -> Option<&SettledTags> {
        // Newest first: those before `next`, then (once the ring is full) the
        // older ones from its end.
        let (newer, older) = self.settled.split_at(self.next.min(self.settled.len()));
        newer
            .iter()
            .rev()
            .chain(older.iter().rev())
            .find(|s| s.from <= tag && tag <= s.to)
    }
}

/// Another protocol's header on the port, and the broker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtherProtocol {
    pub at: Mark,
    pub protocol: String,
    /// The broker's protocol header in answer (RabbitMQ sends its own 0-9-1 one).
    pub answer: Option<(Mark, String)>,
}

/// Channels per connection whose content sequence is followed.
pub(crate) const MAX_CONTENT_CHANNELS: usize = 64;

/// What a connection keeps for the explanations.
#[derive(Debug, Default)]
pub(crate) struct ConnTrail {
    /// channel_max in force: the client's connection.tune-ok value (0: the
    /// broker's), and that frame.
    pub channel_max: Option<(u16, Mark)>,
    /// The connection.tune-ok that fixed frame_max.
    pub tune_ok: Option<Mark>,
    pub open: Option<Mark>,
    /// The last channel.open: channel number, frame, channels then open.
    pub last_channel_open: Option<(u16, Mark, usize)>,
    /// The first body frame from the client above frame_max: frame, channel, size.
    pub oversize_body: Option<(Mark, u16, u32)>,
    /// The content sequence of each channel the client sends on (a short list:
    /// cheaper than a map lookup per frame; at most [`MAX_CONTENT_CHANNELS`]).
    pub content: Vec<(u16, ContentSeq)>,
    pub anomaly: Option<ContentAnomaly>,
    pub anomalies: u32,
    pub other_protocol: Option<OtherProtocol>,
    /// Why the broker closed the connection, when the capture shows it.
    pub close_facts: Option<Box<CloseFacts>>,
}

/// One unacknowledged delivery of an ended connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndedTag {
    pub channel: u16,
    pub tag: u64,
    pub delivered: Mark,
}

/// Ended connections whose unacknowledged deliveries are remembered.
pub(crate) const MAX_ENDED_KEPT: usize = 64;
/// Unacknowledged deliveries remembered per ended connection.
pub(crate) const MAX_ENDED_TAGS: usize = 16;

/// A connection or channel that ended with deliveries unacknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndedConn {
    pub conn: Conn,
    pub connection_name: Option<String>,
    pub client_product: Option<String>,
    pub ended: Mark,
    pub tags: Vec<EndedTag>,
}

/// Exclusive consumers remembered (by queue).
pub(crate) const MAX_EXCLUSIVE_KEPT: usize = 4096;

/// A basic.consume with exclusive=true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExclusiveConsumer {
    pub conn: Conn,
    pub channel: u16,
    pub tag: String,
    pub at: Mark,
}

/// What the analyzer keeps across connections.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    pub ended: VecDeque<EndedConn>,
    pub exclusive: FxHashMap<String, ExclusiveConsumer>,
}

impl Trail {
    pub(crate) fn ended(&mut self, e: EndedConn) {
        if self.ended.len() >= MAX_ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back(e);
    }

    pub(crate) fn exclusive_consume(&mut self, queue: &str, e: ExclusiveConsumer) {
        if self.exclusive.len() < MAX_EXCLUSIVE_KEPT || self.exclusive.contains_key(queue) {
            self.exclusive.insert(queue.to_string(), e);
        }
    }
}

/// Where a delivery tag the broker did not know came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TagOrigin {
    /// Settled before on the same channel.
    Settled(SettledTags),
    /// Delivered on the same channel and settled before the kept history.
    SettledEarlier { last_delivered: (u64, Mark) },
    /// Delivered on another channel of the same connection.
    OtherChannel {
        channel: u16,
        delivered: Mark,
        settled: bool,
    },
    /// Delivered on an earlier connection of the same client, or on the same
    /// channel of this connection before it was closed and reopened.
    PreviousConnection {
        conn: EndedConn,
        tag: EndedTag,
        same_connection: bool,
    },
    /// Nothing in the capture delivered it.
    Unknown { last_delivered: Option<(u64, Mark)> },
}

/// Why the broker closed a channel or connection, as far as the capture shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CloseFacts {
    /// 406 unknown delivery tag.
    UnknownTag {
        settle: RefusedSettle,
        channel: u16,
        origin: TagOrigin,
    },
    /// 403 ACCESS_REFUSED, a queue in exclusive use.
    ExclusiveUse {
        /// The connection the refused consume is on.
        here: Conn,
        queue: String,
        /// The exclusive consumer that holds it.
        holder: Option<ExclusiveConsumer>,
        /// This consume asked for exclusive use, and these consumers (tag, conn) were on it.
        own_exclusive: bool,
        others: Vec<(String, Conn)>,
    },
    /// 405 RESOURCE_LOCKED.
    Locked {
        here: Conn,
        queue: String,
        owner: Option<DeclaredQueue>,
    },
    /// 406 inequivalent arg.
    Inequivalent {
        queue: String,
        arg: String,
        existing: Option<DeclaredQueue>,
        this: Option<DeclaredQueue>,
    },
    /// 530 NOT_ALLOWED on channel.open.
    ChannelMax {
        open: Option<(u16, Mark, usize)>,
        channel_max: Option<(u16, Mark)>,
    },
    /// 530 NOT_ALLOWED on connection.open.
    Vhost {
        vhost: Option<String>,
        user: Option<String>,
        open: Option<Mark>,
    },
    /// 501 FRAME_ERROR.
    FrameTooLarge {
        frame: Option<(Mark, u16, u32)>,
        frame_max: Option<(u32, Mark)>,
        /// Size and limit from the broker's text (`{frame_too_large,S,L}`).
        told: Option<(u64, u64)>,
    },
    /// 505 UNEXPECTED_FRAME.
    Unexpected {
        anomaly: Option<ContentAnomaly>,
        anomalies: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    /// The ring finds the latest settle of a tag, as the list it replaced did.
    #[test]
    fn the_settle_ring_finds_the_latest_settle() {
        let mut t = ChannelTrail::default();
        let mut list: VecDeque<SettledTags> = VecDeque::new();
        for i in 0..300u64 {
            // Overlapping ranges, so that "latest" matters.
            let s = SettledTags {
                from: i / 3,
                to: i / 3 + i % 5,
                at: Mark {
                    ts: Timestamp(i as i64),
                    frame: i,
                },
                method: MethodKind::BasicAck,
                delivered: None,
            };
            t.settled(s);
            if list.len() >= MAX_SETTLES_KEPT {
                list.pop_front();
            }
            list.push_back(s);
            for tag in 0..110 {
                let want = list.iter().rev().find(|s| s.from <= tag && tag <= s.to);
                assert_eq!(t.settle_of(tag), want, "after {i} settles, tag {tag}");
            }
        }
    }
}
