//! Methods the capture's snaplen cut (`truncated` in the timeline): what they
//! still tell. A delivery or settle whose delivery tag (or a flag that says
//! what it settles) was cut is counted on its channel but cannot be matched,
//! so it never enters the unacknowledged list; a basic.qos or basic.consume
//! cut before its window or its no_ack is remembered, so that no verdict
//! leans on a default in its place. The counts are kept on the connection
//! ([`CutSeen`]), which outlives its channels, for the verdicts to say what is
//! known.

use rustc_hash::FxHashMap;

use crate::event::{Dir, Method, MethodKind};

use super::super::state::{ConnState, Mark};
use super::super::Analyzer;

/// What a connection's cut frames showed, per channel.
#[derive(Debug, Default)]
pub(crate) struct CutSeen {
    /// Frames cut by the snaplen, and the first of them.
    pub frames: u64,
    pub first: Option<Mark>,
    pub channels: FxHashMap<u16, CutChannel>,
}

/// One channel's deliveries and settles that could not be matched by tag.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CutChannel {
    /// basic.deliver / basic.get-ok whose delivery tag was cut.
    pub deliveries: u64,
    /// basic.ack / nack / reject whose delivery tag or flags were cut.
    pub settles: u64,
    /// A basic.qos cut before its prefetch_count, or a basic.consume before its no_ack.
    pub window_unknown: bool,
    /// The first of them.
    pub first: Option<Mark>,
}

impl CutSeen {
    /// The channel's record, when something on it could not be matched.
    pub(crate) fn channel(&self, ch: u16) -> Option<&CutChannel> {
        self.channels
            .get(&ch)
            .filter(|c| c.deliveries + c.settles > 0 || c.window_unknown)
    }
}

impl Analyzer {
    /// Takes a method the snaplen cut. Returns true when it was fully handled
    /// here (its arguments too incomplete for the ordinary handlers), false
    /// when the ordinary handlers should see it (what it lacks changes nothing
    /// they decide).
    pub(super) fn on_cut_method(
        &mut self,
        ci: u32,
        dir: Dir,
        mark: Mark,
        ch: u16,
        m: &Method,
    ) -> bool {
        let a = &m.args;
        let c = &mut self.conns[ci as usize];
        c.cut.frames += 1;
        c.cut.first.get_or_insert(mark);
        fn entry(c: &mut ConnState, ch: u16, mark: Mark) -> &mut CutChannel {
            let e = c.cut.channels.entry(ch).or_default();
            e.first.get_or_insert(mark);
            e
        }
        match (dir, m.method) {
            (Dir::S2C, MethodKind::BasicDeliver | MethodKind::BasicGetOk)
                if a.delivery_tag.is_none() =>
            {
                c.counts.deliveries += 1;
                entry(c, ch, mark).deliveries += 1;
                true
            }
            (Dir::C2S, MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject) => {
                let whole = a.delivery_tag.is_some()
                    && match m.method {
                        MethodKind::BasicAck => a.multiple.is_some(),
                        MethodKind::BasicNack => a.multiple.is_some() && a.requeue.is_some(),
                        _ => a.requeue.is_some(),
                    };
                if !whole {
                    entry(c, ch, mark).settles += 1;
                }
                !whole
            }
            (Dir::C2S, MethodKind::BasicQos) if a.prefetch_count.is_none() => {
                entry(c, ch, mark).window_unknown = true;
                true
            }
            (Dir::C2S, MethodKind::BasicConsume) if a.no_ack.is_none() => {
                entry(c, ch, mark).window_unknown = true;
                false
            }
            _ => false,
        }
    }
}
