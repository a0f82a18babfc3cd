//! One AMQP connection: its handshake, its end (connection.close, FIN, RST),
//! the holes in its byte stream, its open channels and its counters. A closed
//! connection keeps only these fields; its channels are released.

use crate::event::{Conn, Dir, Event, EventKind, Frame, MethodKind, Text};

use super::super::model::{ConnectionCounts, Handshake};

use super::{
    dir_index, ChannelCloseRec, ChannelState, Channels, CloseRec, FlowRec, GapRec, Mark,
    PublisherState, TcpEnd,
};

#[derive(Debug)]
pub(crate) struct ConnState {
    /// Never reused, unlike the index, which changes when ended connections retire.
    pub serial: u64,
    pub conn: Conn,
    pub first: Mark,
    pub last: Mark,
    pub saw_open: bool,
    pub saw_handshake: bool,
    /// The first event was neither a SYN nor the start of the AMQP handshake.
    pub start_unseen: bool,
    pub gaps: Vec<GapRec>,
    pub gap_count: u64,
    pub gap_bytes_unknown: bool,
    pub gap_bytes: u64,
    pub errors: u64,
    pub first_error: Option<(Mark, Dir, String)>,
    pub unsupported_protocol: Option<String>,
    pub handshake: Handshake,
    /// Last frame from each direction and which frame it was: [c2s, s2c].
    pub last_frame: [Option<(Mark, FrameName)>; 2],
    /// Name of the first event seen on the connection (`tcp.open`, a method, `gap`...).
    pub first_name: &'static str,
    pub blocked: Option<(Mark, String)>,
    pub last_unblock: Option<(Mark, Mark, String)>,
    pub close: Option<CloseRec>,
    pub close_ok: Option<Mark>,
    pub tcp_end: Option<TcpEnd>,
    pub ended: Option<Mark>,
    pub(crate) channels: Channels,
    pub channel_closes: Vec<ChannelCloseRec>,
    /// Channels paused by channel.flow when the connection ended (kept for the verdict).
    pub flows_paused: Vec<(u16, FlowRec)>,
    pub client_methods: Box<[u32]>,
    pub last_client_method: Option<(Mark, MethodKind)>,
    pub counts: ConnectionCounts,
    pub declared_queues: Vec<String>,
    pub consumers: Vec<u32>,
    /// What explains a broker's close of this connection (see `errors`).
    pub trail: super::errors::ConnTrail,
    /// What the frames the snaplen cut showed (see `handle::cut`).
    pub(crate) cut: super::super::handle::CutSeen,
    /// Lookups the hot methods repeat, remembered by the identity of the decoder's
    /// shared strings (see `event::Text`): same string objects, same answer.
    pub(crate) memo: Memo,
    /// Confirms, nacks and returns of its publishers.
    pub(crate) publisher: Box<PublisherState>,
}

/// Which frame a frame was, noted for every frame: its method, or its type
/// (the name is looked up only when a verdict shows it; callgrind, storm slice
/// json: 188.2 -> 187.1 M).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameName {
    Method(MethodKind),
    ContentHeader,
    ContentBody,
    Heartbeat,
}

impl FrameName {
    pub(crate) fn of(f: &Frame) -> FrameName {
        match f {
            Frame::Method(m) => FrameName::Method(m.method),
            Frame::ContentHeader(_) => FrameName::ContentHeader,
            Frame::ContentBody(_) => FrameName::ContentBody,
            Frame::Heartbeat(_) => FrameName::Heartbeat,
        }
    }

    /// The frame's timeline name, as [`Frame::name`] gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FrameName::Method(m) => m.name(),
            FrameName::ContentHeader => "content-header",
            FrameName::ContentBody => "content-body",
            FrameName::Heartbeat => "heartbeat",
        }
    }
}

/// The last answers of the lookups every publish and delivery makes. A hit is
/// two pointer compares instead of hashing and comparing strings.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// (exchange, routing key) of the last publish -> destination index.
    pub(crate) publish: Option<(Text, Text, u32)>,
    /// (exchange, routing key) of the last delivery -> route hash.
    pub(crate) route: Option<(Text, Text, u64)>,
    /// (channel, consumer tag) of the last delivery -> consumer index, valid while
    /// no consumer has been added since (`consumers_len`) and it has not ended.
    pub(crate) consumer: Option<(u16, Text, u32, usize)>,
}

impl ConnState {
    pub(crate) fn new(serial: u64, conn: Conn, ev: &Event) -> Self {
        let start_unseen = match &ev.kind {
            EventKind::TcpOpen | EventKind::ProtocolHeader { .. } => false,
            EventKind::Frame {
                frame: Frame::Method(m),
                ..
            } => m.method != MethodKind::ConnectionStart,
            _ => true,
        };
        ConnState {
            serial,
            conn,
            first: Mark::of(ev),
            last: Mark::of(ev),
            saw_open: false,
            saw_handshake: false,
            start_unseen,
            gaps: Vec::new(),
            gap_count: 0,
            gap_bytes_unknown: false,
            gap_bytes: 0,
            errors: 0,
            first_error: None,
            unsupported_protocol: None,
            handshake: Handshake::default(),
            last_frame: [None, None],
            first_name: ev.kind.name(),
            blocked: None,
            last_unblock: None,
            close: None,
            close_ok: None,
            tcp_end: None,
            ended: None,
            channels: Channels::default(),
            channel_closes: Vec::new(),
            flows_paused: Vec::new(),
            client_methods: vec![0; MethodKind::ALL.len()].into_boxed_slice(),
            last_client_method: None,
            counts: ConnectionCounts::default(),
            declared_queues: Vec::new(),
            consumers: Vec::new(),
            trail: Default::default(),
            cut: Default::default(),
            memo: Memo::default(),
            publisher: Box::default(),
        }
    }

    pub(crate) fn is_incomplete(&self) -> bool {
        self.start_unseen || self.gap_count > 0 || self.errors > 0
    }

    pub(crate) fn open_channels(&self) -> impl Iterator<Item = (u16, Option<&FlowRec>)> {
        self.channels
            .iter()
            .map(|(ch, st)| (*ch, st.flow_paused.as_ref()))
    }

    /// An open channel's state.
    pub(crate) fn channel(&self, ch: u16) -> Option<&ChannelState> {
        self.channels.get(&ch)
    }

    /// The last frame from `dir` and its name, or the connection's first event.
    pub(crate) fn last_frame_from(&self, dir: Dir) -> (Mark, &'static str) {
        self.last_frame[dir_index(dir)]
            .map(|(m, f)| (m, f.name()))
            .unwrap_or((self.first, self.first_name))
    }
}

#[cfg(test)]
mod tests {
    use super::FrameName;
    use crate::event::{
        BodyCut, ContentBody, ContentBodyTag, Frame, Heartbeat, Method, MethodArgs, MethodKind,
    };

    /// A frame noted as a [`FrameName`] shows the name the frame itself gives.
    #[test]
    fn frame_names_are_the_frames_own() {
        let mut frames: Vec<Frame> = MethodKind::ALL
            .iter()
            .map(|&k| Frame::Method(Box::new(Method::new(k, MethodArgs::default()))))
            .collect();
        frames.push(Frame::ContentHeader(Box::default()));
        frames.push(Frame::ContentBody(ContentBody {
            method: ContentBodyTag,
            size: 1,
            body: None,
            cut: BodyCut::default(),
        }));
        frames.push(Frame::Heartbeat(Heartbeat));
        for f in &frames {
            assert_eq!(FrameName::of(f).name(), f.name());
        }
    }
}
