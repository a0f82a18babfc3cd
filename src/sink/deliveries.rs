//! Which consumer each delivery belongs to, and when it is settled: the small
//! bookkeeping the chrome-trace sink and the HTML report share.
//!
//! It follows `basic.consume`/`consume-ok`, `basic.deliver`/`get-ok` and the
//! settling methods (`basic.ack`/`nack`/`reject` with `multiple`, `recover`),
//! plus the ends that hand unsettled deliveries back to the queue (channel or
//! connection close, TCP end). It is not the analyzer and draws no
//! conclusion: it only tells a sink "this event belongs to consumer N" and
//! "these deliveries just ended". Memory is what is in flight: one entry per
//! unsettled delivery and one per consumer seen.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::event::{Conn, Dir, Event, EventKind, Frame, MethodKind, Timestamp};

/// A consumer as the wire shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInfo {
    pub conn: Conn,
    pub channel: u16,
    pub consumer_tag: String,
    pub queue: Option<String>,
    pub no_ack: bool,
}

/// An unsettled delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outstanding {
    pub ts: Timestamp,
    pub frame: u64,
    /// Index into [`DeliveryTracker::consumers`]; `None` for a `basic.get-ok`.
    pub consumer: Option<u32>,
    /// Free for the caller (the chrome-trace sink keeps its slot number here).
    pub aux: u32,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// The client settled it: basic.ack, basic.nack or basic.reject.
    Settled(MethodKind),
    /// It went back to the queue unsettled: basic.recover, channel or connection close, TCP end.
    Returned(&'static str),
}

/// One delivery that ended with the current event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub channel: u16,
    pub delivery_tag: u64,
    pub delivery: Outstanding,
    pub how: EndKind,
}

/// What [`DeliveryTracker::handle`] learnt from one event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Handled {
    /// The consumer the event is about (consume, consume-ok, deliver, cancel, a settle of its delivery).
    pub consumer: Option<u32>,
    /// Set when the event made a delivery outstanding (a deliver or get-ok that needs a settle).
    pub outstanding: Option<u64>,
}

type ChanKey = (Conn, u16);

/// Per-channel consumers and unsettled deliveries.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    pub consumers: Vec<ConsumerInfo>,
    by_tag: HashMap<(Conn, u16, String), u32>,
    /// basic.consume without a consumer_tag waits for consume-ok to learn it: (queue, no_ack).
    pending_consume: HashMap<ChanKey, VecDeque<(Option<String>, bool)>>,
    /// no_ack of the basic.get in flight on the channel.
    pending_get: HashMap<ChanKey, bool>,
    outstanding: HashMap<ChanKey, BTreeMap<u64, Outstanding>>,
}

impl DeliveryTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The unsettled delivery `tag` on `(conn, channel)`, for the caller's `aux`.
    pub fn outstanding_mut(
        &mut self,
        conn: Conn,
        channel: u16,
        tag: u64,
    ) -> Option<&mut Outstanding> {
        self.outstanding.get_mut(&(conn, channel))?.get_mut(&tag)
    }

    /// Every delivery still unsettled, per channel in tag order.
    pub fn unsettled(&self) -> impl Iterator<Item = (Conn, u16, u64, &Outstanding)> {
        self.outstanding
            .iter()
            .flat_map(|((c, ch), m)| m.iter().map(move |(t, o)| (*c, *ch, *t, o)))
    }

    fn consumer(
        &mut self,
        conn: Conn,
        channel: u16,
        tag: &str,
        queue: Option<String>,
        no_ack: bool,
    ) -> u32 {
        if let Some(&i) = self.by_tag.get(&(conn, channel, tag.to_string())) {
            let c = &mut self.consumers[i as usize];
            if c.queue.is_none() {
                c.queue = queue;
            }
            return i;
        }
        let i = self.consumers.len() as u32;
        self.consumers.push(ConsumerInfo {
            conn,
            channel,
            consumer_tag: tag.to_string(),
            queue,
            no_ack,
        });
        self.by_tag.insert((conn, channel, tag.to_string()), i);
        i
    }

    /// Follows one event; deliveries it ends are appended to `ended`.
    pub fn handle(&mut self, ev: &Event, ended: &mut Vec<Ended>) -> Handled {
        let conn = ev.conn;
        let (channel, m) = match &ev.kind {
            EventKind::TcpClose | EventKind::TcpReset => {
                self.drain(conn, None, EndKind::Returned(tcp_end_name(&ev.kind)), ended);
                return Handled::default();
            }
            EventKind::Frame {
                channel,
                frame: Frame::Method(m),
            } => (*channel, m),
            _ => return Handled::default(),
        };
        let a = &m.args;
        let key = (conn, channel);
        let mut h = Handled::default();
        match (ev.dir, m.method) {
            (Dir::C2S, MethodKind::BasicConsume) => {
                let queue = a.queue.clone();
                let no_ack = a.no_ack.unwrap_or(false);
                match a.consumer_tag.as_deref() {
                    Some(tag) if !tag.is_empty() => {
                        h.consumer = Some(self.consumer(conn, channel, tag, queue, no_ack));
                    }
                    _ => self
                        .pending_consume
                        .entry(key)
                        .or_default()
                        .push_back((queue, no_ack)),
                }
            }
            (Dir::S2C, MethodKind::BasicConsumeOk) => {
                let tag = a.consumer_tag.as_deref().unwrap_or("");
                let known = self.by_tag.get(&(conn, channel, tag.to_string())).copied();
                h.consumer = Some(match known {
                    Some(i) => i,
                    None => {
                        let (queue, no_ack) = self
                            .pending_consume
                            .get_mut(&key)
                            .and_then(|q| q.pop_front())
                            .unwrap_or((None, false));
                        self.consumer(conn, channel, tag, queue, no_ack)
                    }
                });
            }
            (_, MethodKind::BasicCancel | MethodKind::BasicCancelOk) => {
                let tag = a.consumer_tag.as_deref().unwrap_or("");
                h.consumer = self.by_tag.get(&(conn, channel, tag.to_string())).copied();
            }
            (Dir::S2C, MethodKind::BasicDeliver) => {
                let tag = a.consumer_tag.as_deref().unwrap_or("");
                // A capture that starts mid-connection shows deliveries of a consumer
                // whose consume is not in it: assume it acknowledges (the common case).
                let c = self.consumer(conn, channel, tag, None, false);
                h.consumer = Some(c);
                if let Some(dt) = a.delivery_tag {
                    if !self.consumers[c as usize].no_ack {
                        self.outstanding.entry(key).or_default().insert(
                            dt,
                            Outstanding {
                                ts: ev.ts,
                                frame: ev.frame,
                                consumer: Some(c),
                                aux: 0,
                            },
                        );
                        h.outstanding = Some(dt);
                    }
                }
            }
            (Dir::C2S, MethodKind::BasicGet) => {
                self.pending_get.insert(key, a.no_ack.unwrap_or(false));
            }
            (Dir::S2C, MethodKind::BasicGetOk) => {
                let no_ack = self.pending_get.remove(&key).unwrap_or(false);
                if let (false, Some(dt)) = (no_ack, a.delivery_tag) {
                    self.outstanding.entry(key).or_default().insert(
                        dt,
                        Outstanding {
                            ts: ev.ts,
                            frame: ev.frame,
                            consumer: None,
                            aux: 0,
                        },
                    );
                    h.outstanding = Some(dt);
                }
            }
            (Dir::C2S, MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject) => {
                let tag = a.delivery_tag.unwrap_or(0);
                let multiple = a.multiple.unwrap_or(false) && m.method != MethodKind::BasicReject;
                if let Some(map) = self.outstanding.get_mut(&key) {
                    h.consumer = map.get(&tag).and_then(|o| o.consumer);
                    let how = EndKind::Settled(m.method);
                    if multiple {
                        // multiple with tag 0 means "everything outstanding" (spec, basic.ack).
                        let upto = if tag == 0 { u64::MAX } else { tag };
                        let rest = map.split_off(&upto.saturating_add(1));
                        let done = std::mem::replace(map, rest);
                        if upto == u64::MAX {
                            if let Some(o) = map.remove(&u64::MAX) {
                                ended.push(end(channel, u64::MAX, o, how));
                            }
                        }
                        for (t, o) in done {
                            h.consumer = h.consumer.or(o.consumer);
                            ended.push(end(channel, t, o, how));
                        }
                    } else if let Some(o) = map.remove(&tag) {
                        ended.push(end(channel, tag, o, how));
                    }
                }
            }
            (Dir::C2S, MethodKind::BasicRecover | MethodKind::BasicRecoverAsync) => {
                self.drain(
                    conn,
                    Some(channel),
                    EndKind::Returned(m.method.name()),
                    ended,
                );
            }
            (_, MethodKind::ChannelClose) => {
                self.drain(
                    conn,
                    Some(channel),
                    EndKind::Returned("channel.close"),
                    ended,
                );
            }
            (_, MethodKind::ConnectionClose) => {
                self.drain(conn, None, EndKind::Returned("connection.close"), ended);
            }
            _ => {}
        }
        h
    }

    fn drain(&mut self, conn: Conn, channel: Option<u16>, how: EndKind, ended: &mut Vec<Ended>) {
        let keys: Vec<ChanKey> = self
            .outstanding
            .keys()
            .filter(|(c, ch)| *c == conn && channel.is_none_or(|x| x == *ch))
            .copied()
            .collect();
        for k in keys {
            if let Some(map) = self.outstanding.remove(&k) {
                ended.extend(map.into_iter().map(|(t, o)| end(k.1, t, o, how)));
            }
        }
    }
}

fn end(channel: u16, delivery_tag: u64, delivery: Outstanding, how: EndKind) -> Ended {
    Ended {
        channel,
        delivery_tag,
        delivery,
        how,
    }
}

fn tcp_end_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::TcpReset => "tcp.reset",
        _ => "tcp.close",
    }
}
