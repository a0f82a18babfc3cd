//! The analyzer's state records: what it keeps of every connection, channel,
//! consumer, queue and requeued message, and the queries the verdict rules
//! ask of them (the window of a channel, the unacknowledged deliveries of a
//! consumer, ...). The event handlers (`handle/`) write these records; the
//! rules (`verdicts/`) only read them, through these types' methods.

mod channel;
mod conn;
mod consumer;
pub(crate) mod errors;
mod publisher;
mod queue;
pub(crate) mod queue_args;

pub(crate) use channel::{ChannelState, Channels, PendingContent, Unacked};
pub(crate) use conn::{ConnState, FrameName};
pub(crate) use consumer::{ConsumerMarks, ConsumerState, Step};
pub(crate) use publisher::{ConfirmChannel, PublishRec, PublisherState, ReturnsOnChannel};
pub(crate) use queue::{ConsumeArgs, DeliveryHints, QueueArgs, QueueType};

use rustc_hash::FxHashMap;

use crate::event::{Conn, Dir, Event, GapReason, MethodKind, Timestamp};

use super::Analyzer;

/// A moment in the timeline: when, and which packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub ts: Timestamp,
    pub frame: u64,
}

impl Mark {
    pub(crate) fn of(ev: &Event) -> Mark {
        Mark {
            ts: ev.ts,
            frame: ev.frame,
        }
    }
}

// Every `MAX_*` below caps state that would otherwise grow with the capture
// rather than with what is in flight; each stands beside what it bounds.

/// Gaps remembered per connection.
pub(crate) const MAX_GAPS_KEPT: usize = 8;

#[derive(Debug, Clone)]
pub(crate) struct GapRec {
    pub at: Mark,
    pub dir: Dir,
    pub bytes: Option<u64>,
    pub reason: GapReason,
}

#[derive(Debug, Clone)]
pub(crate) struct CloseRec {
    pub at: Mark,
    pub by: Dir,
    pub reply_code: u16,
    pub reply_text: String,
    pub failing: Option<MethodKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpEndKind {
    Fin,
    Rst,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpEnd {
    pub at: Mark,
    pub dir: Dir,
    pub kind: TcpEndKind,
    /// Consumers still registered and deliveries unsettled at that moment.
    pub live_consumers: u32,
    pub unacked: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct QosRec {
    pub at: Mark,
    pub prefetch_count: u16,
    pub global: bool,
}

/// The basic.qos windows in force on a channel, and on a consumer while it is
/// registered: per consumer (`global=false`, for the consumers created after
/// it) and channel-wide (`global=true`, one window shared by the channel's
/// consumers).
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefetch {
    pub per_consumer: Option<QosRec>,
    pub global: Option<QosRec>,
}

/// The oldest delivery still unacknowledged when the broker closed a channel.
#[derive(Debug, Clone)]
pub(crate) struct HeldDelivery {
    pub delivery_tag: u64,
    pub consumer_tag: Option<String>,
    pub delivered: Mark,
    pub unacked: u32,
}

/// A channel the broker closed (or paused), kept after the channel is gone.
#[derive(Debug, Clone)]
pub(crate) struct ChannelCloseRec {
    pub channel: u16,
    pub close: CloseRec,
    pub oldest_unacked: Option<HeldDelivery>,
    pub consumer_tags: Vec<String>,
    /// Why the broker closed it, as far as the capture shows (issue 15).
    pub facts: Option<Box<errors::CloseFacts>>,
}

#[derive(Debug, Clone)]
pub(crate) struct FlowRec {
    pub at: Mark,
    pub dir: Dir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerEnd {
    ClientCancel(Mark),
    BrokerCancel(Mark),
    /// Index into the connection's `channel_closes` when the broker closed the channel.
    ChannelClosed {
        at: Mark,
        by: Dir,
        close: Option<usize>,
    },
    ConnectionClosed {
        at: Mark,
        by: Dir,
    },
    TcpEnded(Mark),
}

impl ConsumerEnd {
    pub(crate) fn at(&self) -> Mark {
        match *self {
            ConsumerEnd::ClientCancel(m)
            | ConsumerEnd::BrokerCancel(m)
            | ConsumerEnd::TcpEnded(m) => m,
            ConsumerEnd::ChannelClosed { at, .. } | ConsumerEnd::ConnectionClosed { at, .. } => at,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LoopEvent {
    pub at: Mark,
    pub method: MethodKind,
    pub delivery_tag: u64,
    pub conn: u32,
    pub channel: u16,
}

/// Requeued messages followed at once.
pub(crate) const MAX_REQUEUED_TRACKED: usize = 10_000;
/// Rounds of delivery after which a requeued message is in a redelivery loop.
pub(crate) const LOOP_ROUNDS: u32 = 3;

/// A message requeued by a nack/reject, followed through its redeliveries.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequeueTrack {
    pub message_id: Option<String>,
    pub rounds: u32,
    /// nack/reject with requeue=true of this message.
    pub requeues: u32,
    pub became_loop: Option<Mark>,
    pub evidence: LoopEvidence,
    /// Where the message is now: `true` once it was delivered again and not yet settled.
    pub outstanding: bool,
}

impl RequeueTrack {
    /// A track that begins with the delivery of the message first requeued.
    pub(crate) fn new(first: LoopEvent) -> Self {
        let mut t = RequeueTrack {
            rounds: 1,
            ..RequeueTrack::default()
        };
        t.push(first);
        t
    }

    /// Keeps an event of the message's loop: the first rounds and the latest one.
    pub(crate) fn push(&mut self, e: LoopEvent) {
        self.evidence.push(e);
    }
}

/// The requeue tracks, by message fingerprint: a map to slots of a list, so
/// that a delivery notes where its message's track is (`Unacked::track_hint`)
/// and its settle finds the track there, checked, without hashing (callgrind,
/// storm slice json: 143.67 -> 142.84 M). Which tracks there are is all anyone
/// sees; a track's slot changes when another is removed, and a stale hint
/// falls back to the map.
#[derive(Debug, Default)]
pub(crate) struct RequeueTracks {
    index: FxHashMap<u64, u32>,
    slots: Vec<(u64, RequeueTrack)>,
}

/// A slot hint that is none.
pub(crate) const NO_TRACK: u32 = u32::MAX;

impl RequeueTracks {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the track of `fingerprint`: `hint` when it holds it still.
    fn slot(&self, fingerprint: u64, hint: u32) -> Option<u32> {
        match self.slots.get(hint as usize) {
            Some((f, _)) if *f == fingerprint => Some(hint),
            _ => self.index.get(&fingerprint).copied(),
        }
    }

    pub(crate) fn find(&self, fingerprint: u64, hint: u32) -> Option<&RequeueTrack> {
        let i = self.slot(fingerprint, hint)?;
        self.slots.get(i as usize).map(|(_, t)| t)
    }

    /// The track of `fingerprint` and its slot, looked for at `hint` first.
    pub(crate) fn find_mut(
        &mut self,
        fingerprint: u64,
        hint: u32,
    ) -> Option<(u32, &mut RequeueTrack)> {
        let i = self.slot(fingerprint, hint)?;
        self.slots.get_mut(i as usize).map(|(_, t)| (i, t))
    }

    /// Sets the track of `fingerprint`.
    pub(crate) fn insert(&mut self, fingerprint: u64, track: RequeueTrack) {
        match self.find_mut(fingerprint, NO_TRACK) {
            Some((_, t)) => *t = track,
            None => {
                self.index.insert(fingerprint, self.slots.len() as u32);
                self.slots.push((fingerprint, track));
            }
        }
    }

    pub(crate) fn remove(&mut self, fingerprint: u64) {
        let Some(i) = self.index.remove(&fingerprint) else {
            return;
        };
        self.slots.swap_remove(i as usize);
        if let Some((moved, _)) = self.slots.get(i as usize) {
            if let Some(j) = self.index.get_mut(moved) {
                *j = i;
            }
        }
    }

    /// Keeps the tracks `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&RequeueTrack) -> bool) {
        self.slots.retain(|(_, t)| keep(t));
        self.index.clear();
        for (i, (f, _)) in self.slots.iter().enumerate() {
            self.index.insert(*f, i as u32);
        }
    }

    pub(crate) fn tracks_mut(&mut self) -> impl Iterator<Item = &mut RequeueTrack> {
        self.slots.iter_mut().map(|(_, t)| t)
    }
}

/// Deliveries and settles kept as evidence of one loop.
pub(crate) const MAX_LOOP_EVIDENCE: usize = 8;

/// The deliveries and settles of one looping message kept as evidence: the
/// first [`MAX_LOOP_EVIDENCE`], the latest always in the last slot, and how
/// many were left out.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoopEvidence {
    pub events: Vec<LoopEvent>,
    pub events_dropped: u32,
}

impl LoopEvidence {
    fn push(&mut self, e: LoopEvent) {
        if self.events.len() < MAX_LOOP_EVIDENCE {
            self.events.push(e);
        } else {
            self.events_dropped += 1;
            if let Some(last) = self.events.last_mut() {
                *last = e;
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct QueueInfo {
    pub declared: Option<Mark>,
    /// Where it was deleted (queue.delete), and by which connection.
    pub deleted: Option<(Mark, u32)>,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// From queue.declare-ok.
    pub message_count: Option<u32>,
    pub consumer_count: Option<u32>,
    /// The arguments of its last queue.declare that the broker accepted (newer queues).
    pub args: Option<QueueArgs>,
    /// Since its last queue.declare-ok, when that counted as many consumers
    /// as the capture shows live on it: what was published and delivered then.
    pub sole: Option<Box<SoleConsumers>>,
}

/// A queue.declare-ok whose `consumer_count` equals the consumers of the
/// queue live in the capture: every message routed to the queue after it goes
/// to a consumer seen here, or stays ready while none has room. The counts at
/// that moment, to subtract from the counts at the end.
#[derive(Debug, Clone)]
pub(crate) struct SoleConsumers {
    /// The queue.declare-ok, and the connection it came on (renumbered when
    /// connections retire).
    pub at: Mark,
    pub conn: u32,
    pub consumer_count: u32,
    /// (consumer serial, its deliveries not flagged redelivered), the live consumers then.
    pub consumers: Vec<(u64, u64)>,
    /// (publishes, returned publishes) of every destination then, by index.
    pub destinations: Vec<(u64, u64)>,
    /// [`super::routing::Routing::publishes_untracked`] then.
    pub untracked: u64,
    /// Consumers retired then: one retired since took its counts away.
    pub retired_consumers: u64,
}

/// Index of a direction in per-direction arrays: [c2s, s2c].
pub(crate) fn dir_index(d: Dir) -> usize {
    match d {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

/// The queries the rules ask across records.
impl Analyzer {
    /// Unacknowledged deliveries of a consumer (tag, delivered at), oldest first.
    pub(crate) fn unacked_of(&self, consumer: u32) -> Vec<(u64, Mark)> {
        let cs = &self.consumers[consumer as usize];
        self.conns[cs.conn as usize]
            .channel(cs.channel)
            .map(|st| st.unacked_of(consumer))
            .unwrap_or_default()
    }

    /// The channel-wide (global=true) QoS of a channel, when its window filled,
    /// and how many deliveries are unacknowledged on it.
    pub(crate) fn channel_window(&self, ci: u32, ch: u16) -> Option<(&QosRec, Option<Mark>, u32)> {
        self.conns[ci as usize].channel(ch)?.shared_window()
    }

    /// The connection a consumer is on.
    pub(crate) fn conn_of(&self, cs: &ConsumerState) -> &ConnState {
        &self.conns[cs.conn as usize]
    }

    /// The 4-tuple of connection `ci`, None once it was retired.
    pub(crate) fn conn_id(&self, ci: u32) -> Option<Conn> {
        self.conns.get(ci as usize).map(|c| c.conn)
    }

    /// The vhost connection `ci` opened, when seen.
    pub(crate) fn vhost_of(&self, ci: u32) -> Option<&str> {
        self.conns.get(ci as usize)?.handshake.vhost.as_deref()
    }

    /// The consumers created on a connection, ended ones included.
    pub(crate) fn consumers_on<'a>(
        &'a self,
        c: &'a ConnState,
    ) -> impl Iterator<Item = &'a ConsumerState> + 'a {
        c.consumers.iter().map(|&i| &self.consumers[i as usize])
    }

    /// What the capture shows of a queue (declare-ok, delete), if anything.
    pub(crate) fn queue(&self, name: &str) -> Option<&QueueInfo> {
        self.queues.get(name)
    }

    /// The requeue track of a message fingerprint.
    pub(crate) fn requeue_track(&self, fingerprint: u64) -> Option<&RequeueTrack> {
        self.requeued.find(fingerprint, NO_TRACK)
    }

    /// Whether a queue was declared or is read by a consumer in the capture.
    pub(crate) fn queue_seen(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
            || self
                .consumers
                .iter()
                .any(|c| c.queue.as_deref() == Some(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::{RequeueTrack, RequeueTracks, NO_TRACK};

    fn track(rounds: u32) -> RequeueTrack {
        RequeueTrack {
            rounds,
            ..RequeueTrack::default()
        }
    }

    /// A slot hint finds its track while it is there, and the map finds it once
    /// it moved or went: a stale hint never yields another message's track.
    #[test]
    fn requeue_tracks_check_their_hints() {
        let mut t = RequeueTracks::default();
        for fp in 1..=3 {
            t.insert(fp, track(fp as u32));
        }
        let (slot, _) = t.find_mut(3, NO_TRACK).expect("3 is tracked");
        assert_eq!(t.find(3, slot).map(|x| x.rounds), Some(3));
        // Removing 1 moves 3 into its slot: the old hint of 3 is stale.
        t.remove(1);
        assert_eq!(t.find(3, slot).map(|x| x.rounds), Some(3));
        assert_eq!(t.find(2, slot).map(|x| x.rounds), Some(2));
        assert!(t.find(1, 0).is_none());
        t.retain(|x| x.rounds == 2);
        assert_eq!(t.len(), 1);
        assert!(t.find(3, slot).is_none());
        assert_eq!(t.find(2, NO_TRACK).map(|x| x.rounds), Some(2));
    }
}
