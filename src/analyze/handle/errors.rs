//! The evidence behind broker errors (issue 15): every event that can explain
//! a later channel.close or connection.close from the broker is noted in the
//! trails of `state/errors.rs` and `state/queue_args.rs` — settles and the
//! settle that matched nothing, the client's content sequence, queue.declare
//! arguments, exclusive consumers, channel_max, oversize frames, another
//! protocol's header — and when the broker closes, what explains the close is
//! gathered into [`CloseFacts`], kept with the close. These handlers only
//! write state; `verdicts/errors.rs` words it.

use crate::event::{DecodeError, Dir, Frame, Method, MethodArgs, MethodKind};

use super::super::state::errors::ChannelTrail;
use super::super::state::errors::{
    CloseFacts, ContentAnomaly, ContentSeq, EndedConn, EndedTag, ExclusiveConsumer, OtherProtocol,
    RefusedSettle, SettledTags, TagOrigin, MAX_CONTENT_CHANNELS, MAX_DECLARES_PENDING,
    MAX_ENDED_TAGS,
};
use super::super::state::queue_args::DeclaredQueue;
use super::super::state::{ChannelState, ConnState, Mark, Step, Unacked};
use super::super::Analyzer;

/// Reply codes of the AMQP 0-9-1 spec that the explanations cover.
const ACCESS_REFUSED: u16 = 403;
const RESOURCE_LOCKED: u16 = 405;
const PRECONDITION_FAILED: u16 = 406;
const FRAME_ERROR: u16 = 501;
const UNEXPECTED_FRAME: u16 = 505;
const NOT_ALLOWED: u16 = 530;

impl Analyzer {
    /// A method, before its class's handler sees it.
    pub(super) fn trail_method(&mut self, ci: u32, dir: Dir, mark: Mark, ch: u16, m: &Method) {
        let a = &m.args;
        match (dir, m.method) {
            (Dir::S2C, MethodKind::ConnectionTune) => {
                let t = &mut self.conns[ci as usize].trail;
                if let Some(n) = a.channel_max.filter(|_| t.channel_max.is_none()) {
                    t.channel_max = Some((n, mark));
                }
            }
            (Dir::C2S, MethodKind::ConnectionTuneOk) => {
                let t = &mut self.conns[ci as usize].trail;
                t.tune_ok = Some(mark);
                // 0 from the client leaves the broker's proposal in force.
                if let Some(n) = a.channel_max.filter(|n| *n > 0) {
                    t.channel_max = Some((n, mark));
                }
            }
            (Dir::C2S, MethodKind::ConnectionOpen) => {
                self.conns[ci as usize].trail.open = Some(mark)
            }
            (Dir::C2S, MethodKind::ChannelOpen) => {
                let c = &mut self.conns[ci as usize];
                let open = c.channels.len() + usize::from(!c.channels.contains_key(&ch));
                c.trail.last_channel_open = Some((ch, mark, open));
                // A channel (re)opened starts with no message under way.
                c.trail.content.retain(|(n, _)| *n != ch);
            }
            (Dir::C2S, MethodKind::QueueDeclare) => {
                let d = DeclaredQueue {
                    at: mark,
                    conn: self.conns[ci as usize].conn,
                    channel: ch,
                    durable: a.durable.unwrap_or(false),
                    exclusive: a.exclusive.unwrap_or(false),
                    auto_delete: a.auto_delete.unwrap_or(false),
                    passive: a.passive.unwrap_or(false),
                    arguments: a.arguments.clone(),
                };
                if a.nowait == Some(true) {
                    if let Some(q) = a.queue.as_deref().filter(|q| !q.is_empty()) {
                        self.queue_args.declared(q, d);
                    }
                    return;
                }
                let t = &mut self.channel_mut(ci, ch).trail;
                if t.declares.len() < MAX_DECLARES_PENDING {
                    t.declares.push_back(d);
                }
            }
            (Dir::S2C, MethodKind::QueueDeclareOk) => {
                let d = self
                    .conns
                    .get_mut(ci as usize)
                    .and_then(|c| c.channels.get_mut(&ch))
                    .and_then(|st| st.trail.declares.pop_front());
                if let (Some(d), Some(q)) = (d, a.queue.as_deref()) {
                    self.queue_args.declared(q, d);
                }
            }
            (Dir::C2S, MethodKind::QueueDelete) => {
                if let Some(q) = a.queue.as_deref() {
                    self.queue_args.deleted(q);
                }
            }
            (Dir::C2S, MethodKind::BasicConsume) => {
                let q = a.queue.clone().unwrap_or_default();
                let exclusive = a.exclusive.unwrap_or(false);
                if exclusive {
                    let tag = a.consumer_tag.as_deref().unwrap_or_default().to_string();
                    let e = ExclusiveConsumer {
                        conn: self.conns[ci as usize].conn,
                        channel: ch,
                        tag,
                        at: mark,
                    };
                    self.trail.exclusive_consume(&q, e);
                }
                self.channel_mut(ci, ch).trail.last_consume = Some((mark, q, exclusive));
            }
            // A whole delivery is noted by `on_delivery`, in its own lookup of the
            // channel; a cut one here, as the cut handler may keep it from there.
            (Dir::S2C, MethodKind::BasicDeliver | MethodKind::BasicGetOk)
                if a.truncated.is_some() =>
            {
                if let (Some(tag), Some(st)) = (
                    a.delivery_tag,
                    self.conns[ci as usize].channels.get_mut(&ch),
                ) {
                    st.trail.note_delivered(tag, mark);
                }
            }
            (Dir::S2C, MethodKind::ChannelClose) => {
                let facts = self.channel_close_facts(ci, ch, a);
                if let Some(st) = self.conns[ci as usize].channels.get_mut(&ch) {
                    st.trail.facts = facts;
                }
            }
            (Dir::S2C, MethodKind::ConnectionClose) => {
                let facts = self.connection_close_facts(ci, a);
                self.conns[ci as usize].trail.close_facts = facts;
            }
            _ => {}
        }
    }

    /// A frame from the client on channel `ch` > 0: the content sequence
    /// (basic.publish, content header, body frames) and oversize bodies.
    pub(super) fn trail_client_frame(&mut self, ci: u32, ch: u16, mark: Mark, frame: &Frame) {
        let c = &mut self.conns[ci as usize];
        let t = &mut c.trail;
        let i = match t.content.iter().position(|(n, _)| *n == ch) {
            Some(i) => i,
            None if t.content.len() < MAX_CONTENT_CHANNELS => {
                t.content.push((ch, ContentSeq::Idle));
                t.content.len() - 1
            }
            None => return,
        };
        let seq = t.content[i].1;
        // A method other than basic.publish, on a channel sending no message
        // (every settle of a consumer), changes nothing: left before the match
        // below (callgrind, storm slice json: 145.35 -> 144.21 M).
        if seq == ContentSeq::Idle
            && matches!(frame, Frame::Method(m) if m.method != MethodKind::BasicPublish)
        {
            return;
        }
        let (next, odd) = match frame {
            Frame::Method(m) if m.method == MethodKind::BasicPublish => (
                ContentSeq::Header { publish: mark },
                seq != ContentSeq::Idle,
            ),
            Frame::Method(_) => (ContentSeq::Idle, seq != ContentSeq::Idle),
            Frame::ContentHeader(h) => match seq {
                ContentSeq::Header { publish } if h.body_size > 0 => (
                    ContentSeq::Body {
                        publish,
                        body_size: h.body_size,
                        left: h.body_size,
                    },
                    false,
                ),
                ContentSeq::Header { .. } => (ContentSeq::Idle, false),
                _ => (ContentSeq::Idle, true),
            },
            Frame::ContentBody(b) => {
                if let Some(max) = c.handshake.frame_max.filter(|f| *f > 0) {
                    // frame_max counts the 8 bytes of frame header and end.
                    if u64::from(b.size) + 8 > u64::from(max) && t.oversize_body.is_none() {
                        t.oversize_body = Some((mark, ch, b.size));
                    }
                }
                match seq {
                    ContentSeq::Body {
                        publish,
                        body_size,
                        left,
                    } if u64::from(b.size) < left => (
                        ContentSeq::Body {
                            publish,
                            body_size,
                            left: left - u64::from(b.size),
                        },
                        false,
                    ),
                    ContentSeq::Body { .. } => (ContentSeq::Idle, false),
                    _ => (ContentSeq::Idle, true),
                }
            }
            Frame::Heartbeat(_) => return,
        };
        t.content[i].1 = next;
        if odd {
            t.anomalies = t.anomalies.saturating_add(1);
            if t.anomaly.is_none() {
                let (publish, body_size, left) = match seq {
                    ContentSeq::Idle => (None, 0, 0),
                    ContentSeq::Header { publish } => (Some(publish), 0, 0),
                    ContentSeq::Body {
                        publish,
                        body_size,
                        left,
                    } => (Some(publish), body_size, left),
                };
                t.anomaly = Some(ContentAnomaly {
                    at: mark,
                    channel: ch,
                    got: frame.name(),
                    publish,
                    left,
                    body_size,
                });
            }
        }
    }

    /// A decode error: another protocol's header is kept for its verdict.
    pub(super) fn trail_error(&mut self, ci: u32, dir: Dir, mark: Mark, error: &DecodeError) {
        if let DecodeError::UnsupportedProtocol { protocol } = error {
            self.trail_protocol(ci, dir, mark, protocol);
        }
    }

    /// A protocol header (any version, from either side).
    pub(super) fn trail_protocol(&mut self, ci: u32, dir: Dir, mark: Mark, protocol: &str) {
        let t = &mut self.conns[ci as usize].trail;
        match (dir, t.other_protocol.as_mut()) {
            (Dir::C2S, None) if protocol != crate::amqp::PROTOCOL_0_9_1_NAME => {
                t.other_protocol = Some(OtherProtocol {
                    at: mark,
                    protocol: protocol.to_string(),
                    answer: None,
                });
            }
            (Dir::S2C, Some(p)) if p.answer.is_none() => {
                p.answer = Some((mark, protocol.to_string()));
            }
            _ => {}
        }
    }

    /// The connection ends: its unacknowledged deliveries are remembered, so
    /// that an ack of one of them on the client's next connection is explained.
    pub(super) fn trail_connection_end(&mut self, ci: u32, mark: Mark) {
        let c = &self.conns[ci as usize];
        if c.ended.is_some() {
            return;
        }
        let e = ended_with(c, c.channels.iter().map(|(&ch, st)| (ch, st)), mark);
        if let Some(e) = e {
            self.trail.ended(e);
        }
    }

    /// A channel closes (by either peer): its unacknowledged deliveries are
    /// remembered, for an ack of one of them on the channel reopened.
    pub(super) fn trail_channel_end(&mut self, ci: u32, ch: u16, st: &ChannelState, mark: Mark) {
        if let Some(e) = ended_with(&self.conns[ci as usize], std::iter::once((ch, st)), mark) {
            self.trail.ended(e);
        }
    }

    /// What explains a channel.close from the broker, from the state before it.
    fn channel_close_facts(&self, ci: u32, ch: u16, a: &MethodArgs) -> Option<Box<CloseFacts>> {
        let c = &self.conns[ci as usize];
        let st = c.channels.get(&ch)?;
        let text = a.reply_text.as_deref().unwrap_or("");
        let facts = match (a.reply_code.unwrap_or(0), a.failing_method) {
            (
                PRECONDITION_FAILED,
                Some(MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject),
            ) if text.contains("unknown delivery tag") => {
                let settle = st.trail.refused?;
                CloseFacts::UnknownTag {
                    settle,
                    channel: ch,
                    origin: self.tag_origin(ci, ch, st, settle.tag),
                }
            }
            (ACCESS_REFUSED, Some(MethodKind::BasicConsume)) if text.contains("exclusive use") => {
                let (_, queue, own_exclusive) = st.trail.last_consume.clone()?;
                let holder = self
                    .trail
                    .exclusive
                    .get(&queue)
                    .filter(|h| h.conn != c.conn || h.channel != ch)
                    .cloned();
                let others = self
                    .consumers
                    .iter()
                    .filter(|cs| {
                        cs.queue.as_deref() == Some(queue.as_str())
                            && cs.end.is_none()
                            && cs.marks[Step::ConsumeOk].is_some()
                    })
                    .filter_map(|cs| Some((cs.tag.clone(), self.conn_id(cs.conn)?)))
                    .take(8)
                    .collect();
                CloseFacts::ExclusiveUse {
                    here: c.conn,
                    queue,
                    holder,
                    own_exclusive,
                    others,
                }
            }
            (RESOURCE_LOCKED, _) => {
                let queue = quoted_after(text, "queue '")?;
                let owner = self.queue_args.get(&queue).filter(|d| d.exclusive).cloned();
                CloseFacts::Locked {
                    here: c.conn,
                    queue,
                    owner,
                }
            }
            (PRECONDITION_FAILED, Some(MethodKind::QueueDeclare))
                if text.contains("inequivalent arg") =>
            {
                let queue = quoted_after(text, "for queue '")?;
                let arg = quoted_after(text, "inequivalent arg '").unwrap_or_default();
                CloseFacts::Inequivalent {
                    existing: self.queue_args.get(&queue).cloned(),
                    this: st.trail.declares.front().cloned(),
                    queue,
                    arg,
                }
            }
            _ => return None,
        };
        Some(Box::new(facts))
    }

    /// Where a delivery tag the broker did not know came from.
    fn tag_origin(&self, ci: u32, ch: u16, st: &ChannelState, tag: u64) -> TagOrigin {
        if let Some(s) = st.trail.settle_of(tag) {
            return TagOrigin::Settled(*s);
        }
        if let Some(last) = st.trail.last_delivered.filter(|(t, _)| *t >= tag) {
            return TagOrigin::SettledEarlier {
                last_delivered: last,
            };
        }
        let c = &self.conns[ci as usize];
        let mut elsewhere: Vec<(u16, Mark, bool)> = Vec::new();
        for (&other, ost) in c.channels.iter().filter(|(&o, _)| o != ch) {
            if let Ok(i) = ost.unacked.binary_search_by_key(&tag, |u| u.tag) {
                let u = &ost.unacked[i];
                elsewhere.push((other, u.at, u.settled));
            } else if let Some(s) = ost.trail.settle_of(tag) {
                if let Some(d) = s.delivered {
                    elsewhere.push((other, d, true));
                }
            }
        }
        // The unsettled one first, then the lowest channel number.
        elsewhere.sort_by_key(|&(other, _, settled)| (settled, other));
        if let Some(&(channel, delivered, settled)) = elsewhere.first() {
            return TagOrigin::OtherChannel {
                channel,
                delivered,
                settled,
            };
        }
        let hs = &c.handshake;
        let previous = self.trail.ended.iter().rev().find_map(|e| {
            // The same channel closed and reopened, or the client's connection before this one.
            let same_connection = e.conn == c.conn;
            let same_client = e.conn.client.ip() == c.conn.client.ip()
                && e.connection_name == hs.connection_name
                && e.client_product == hs.client_product
                && e.ended.ts <= c.first.ts;
            let on_same = e.tags.iter().find(|t| t.tag == tag && t.channel == ch);
            let t = if same_connection {
                on_same?
            } else if same_client {
                on_same.or_else(|| e.tags.iter().find(|t| t.tag == tag))?
            } else {
                return None;
            };
            Some((e.clone(), *t, same_connection))
        });
        match previous {
            Some((conn, tag, same_connection)) => TagOrigin::PreviousConnection {
                conn,
                tag,
                same_connection,
            },
            None => TagOrigin::Unknown {
                last_delivered: st.trail.last_delivered,
            },
        }
    }

    /// What explains a connection.close from the broker, from the state before it.
    fn connection_close_facts(&self, ci: u32, a: &MethodArgs) -> Option<Box<CloseFacts>> {
        let c = &self.conns[ci as usize];
        let text = a.reply_text.as_deref().unwrap_or("");
        let facts = match (a.reply_code.unwrap_or(0), a.failing_method) {
            // RabbitMQ names no failing method for channel_max (class and method 0).
            (NOT_ALLOWED, f)
                if f == Some(MethodKind::ChannelOpen) || text.contains("channel_max") =>
            {
                CloseFacts::ChannelMax {
                    open: c.trail.last_channel_open,
                    channel_max: c.trail.channel_max,
                }
            }
            (NOT_ALLOWED, f) if f == Some(MethodKind::ConnectionOpen) || text.contains("vhost") => {
                CloseFacts::Vhost {
                    vhost: c.handshake.vhost.clone(),
                    user: c.handshake.user.clone(),
                    open: c.trail.open,
                }
            }
            (FRAME_ERROR, _) => CloseFacts::FrameTooLarge {
                frame: c.trail.oversize_body,
                frame_max: c.handshake.frame_max.zip(c.trail.tune_ok),
                told: frame_too_large(text),
            },
            (UNEXPECTED_FRAME, _) => CloseFacts::Unexpected {
                anomaly: c.trail.anomaly.clone(),
                anomalies: c.trail.anomalies,
            },
            _ => return None,
        };
        Some(Box::new(facts))
    }
}

/// The unacknowledged deliveries of `channels` of `c`, which end at `mark`;
/// None when there are none.
fn ended_with<'a>(
    c: &ConnState,
    channels: impl Iterator<Item = (u16, &'a ChannelState)>,
    mark: Mark,
) -> Option<EndedConn> {
    let mut tags: Vec<EndedTag> = Vec::new();
    for (channel, st) in channels {
        let live = st.unacked.iter().filter(|u| !u.settled);
        for u in live.take(MAX_ENDED_TAGS.saturating_sub(tags.len())) {
            tags.push(EndedTag {
                channel,
                tag: u.tag,
                delivered: u.at,
            });
        }
    }
    if tags.is_empty() {
        return None;
    }
    tags.sort_by_key(|t| (t.channel, t.tag));
    Some(EndedConn {
        conn: c.conn,
        connection_name: c.handshake.connection_name.clone(),
        client_product: c.handshake.client_product.clone(),
        ended: mark,
        tags,
    })
}

/// A settle as the settle handler applied it (`settled`: the deliveries it
/// settled, in tag order): the tags it covered are remembered, or, when the
/// tag itself was not outstanding, it is the settle the broker refuses
/// ("unknown delivery tag"; RabbitMQ refuses a multiple=true settle whose own
/// tag is unknown too). Tag 0 with multiple=true means all (basic.recover is
/// one): never refused.
pub(super) fn trail_settle(
    t: &mut ChannelTrail,
    at: Mark,
    method: MethodKind,
    tag: u64,
    multiple: bool,
    settled: &[Unacked],
) {
    if multiple && tag == 0 {
        return;
    }
    match settled
        .first()
        .filter(|_| settled.last().is_some_and(|u| u.tag == tag))
    {
        Some(first) => t.settled(SettledTags {
            from: first.tag,
            to: tag,
            at,
            method,
            delivered: (first.tag == tag).then_some(first.at),
        }),
        None => {
            t.refused = Some(RefusedSettle {
                at,
                method,
                tag,
                multiple,
            })
        }
    }
}

/// The text between `after` and the next `'` in `text`.
fn quoted_after(text: &str, after: &str) -> Option<String> {
    let rest = &text[text.find(after)? + after.len()..];
    Some(rest[..rest.find('\'')?].to_string())
}

/// `(size, limit)` from RabbitMQ's `{frame_too_large,10000,4088}`.
fn frame_too_large(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.find("frame_too_large,")? + "frame_too_large,".len()..];
    let rest = &rest[..rest.find('}')?];
    let (size, limit) = rest.split_once(',')?;
    Some((size.trim().parse().ok()?, limit.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_texts_are_read() {
        let t = "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,10000,4088}";
        assert_eq!(frame_too_large(t), Some((10000, 4088)));
        assert_eq!(frame_too_large("FRAME_ERROR - bad"), None);
        let t =
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'ttl-1' in vhost '/'";
        assert_eq!(quoted_after(t, "for queue '").as_deref(), Some("ttl-1"));
        assert_eq!(
            quoted_after(t, "inequivalent arg '").as_deref(),
            Some("x-message-ttl")
        );
        assert_eq!(quoted_after("no quote", "queue '"), None);
    }
}
