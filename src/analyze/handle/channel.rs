//! The channel class (open, flow, close) and confirm.select: a channel's
//! life, and what its end does to its consumers.

use crate::event::{Dir, Method, MethodArgs, MethodKind};

use super::super::state::{
    ChannelCloseRec, ChannelState, CloseRec, ConsumerEnd, FlowRec, HeldDelivery, Mark,
};
use super::super::Analyzer;

impl Analyzer {
    pub(super) fn on_channel(&mut self, ci: u32, dir: Dir, mark: Mark, ch: u16, m: &Method) {
        let a = &m.args;
        match (dir, m.method) {
            (Dir::C2S, MethodKind::ChannelOpen) => {
                let c = &mut self.conns[ci as usize];
                c.counts.channels_opened += 1;
                c.publisher.channel_ended(ch, mark, true);
                let old = c.channels.insert(ch, ChannelState::default());
                if old.is_some() {
                    // Reopened without a close we saw: its consumers are gone.
                    self.end_channel_consumers(old, mark, Dir::C2S, None);
                }
            }
            (dir, MethodKind::ChannelFlow) => {
                let st = self.channel_mut(ci, ch);
                if a.active == Some(false) {
                    if st.flow_paused.is_none() {
                        st.flow_paused = Some(FlowRec { at: mark, dir });
                    }
                } else {
                    st.flow_paused = None;
                }
            }
            (dir, MethodKind::ChannelClose) => self.close_channel(ci, ch, mark, dir, a),
            (Dir::C2S, MethodKind::ConfirmSelect) => {
                self.channel_mut(ci, ch).confirm = true;
                self.conns[ci as usize].publisher.confirm_select(ch, mark);
            }
            _ => {}
        }
    }

    fn close_channel(&mut self, ci: u32, ch: u16, mark: Mark, dir: Dir, a: &MethodArgs) {
        let mut st = self.conns[ci as usize].channels.remove(&ch);
        if let Some(st) = &st {
            self.trail_channel_end(ci, ch, st, mark);
        }
        self.conns[ci as usize]
            .publisher
            .channel_ended(ch, mark, false);
        let mut close_idx = None;
        if dir == Dir::S2C {
            let oldest = st.as_ref().and_then(|st| {
                st.oldest_unacked().map(|u| HeldDelivery {
                    delivery_tag: u.tag,
                    consumer_tag: u.consumer.map(|i| self.consumers[i as usize].tag.clone()),
                    delivered: u.at,
                    unacked: st.live_unacked,
                })
            });
            let consumer_tags = st
                .as_ref()
                .map(|st| {
                    st.consumers
                        .iter()
                        .filter(|&&i| self.consumers[i as usize].end.is_none())
                        .map(|&i| self.consumers[i as usize].tag.clone())
                        .collect()
                })
                .unwrap_or_default();
            let facts = st.as_mut().and_then(|st| st.trail.facts.take());
            let c = &mut self.conns[ci as usize];
            c.channel_closes.push(ChannelCloseRec {
                channel: ch,
                close: CloseRec {
                    at: mark,
                    by: dir,
                    reply_code: a.reply_code.unwrap_or(0),
                    reply_text: a.reply_text.clone().unwrap_or_default(),
                    failing: a.failing_method,
                },
                oldest_unacked: oldest,
                consumer_tags,
                facts,
            });
            close_idx = Some(c.channel_closes.len() - 1);
        }
        self.end_channel_consumers(st, mark, dir, close_idx);
    }

    /// The consumers of a channel that is gone end with it; `close` indexes the
    /// connection's `channel_closes` when the broker closed it.
    fn end_channel_consumers(
        &mut self,
        st: Option<ChannelState>,
        mark: Mark,
        by: Dir,
        close: Option<usize>,
    ) {
        let Some(st) = st else { return };
        for i in st.consumers {
            let cs = &mut self.consumers[i as usize];
            if cs.end.is_none() {
                cs.end = Some(ConsumerEnd::ChannelClosed {
                    at: mark,
                    by,
                    close,
                });
            }
        }
    }
}
