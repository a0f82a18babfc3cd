//! A consumer's life: basic.qos (the prefetch windows), basic.consume and its
//! consume-ok, basic.cancel and its cancel-ok; finding a consumer by tag.

use crate::event::{Dir, MethodArgs};

use super::super::histogram::LatencyHistogram;
use super::super::model::ConsumerCounts;
use super::super::state::{
    ConsumeArgs, ConsumerEnd, ConsumerMarks, ConsumerState, Mark, QosRec, Step,
};
use super::super::Analyzer;

impl Analyzer {
    /// global=false: for consumers created after it; global=true: one window for the channel.
    pub(super) fn on_qos(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        let rec = QosRec {
            at: mark,
            prefetch_count: a.prefetch_count.unwrap_or(0),
            global: a.global.unwrap_or(false),
        };
        let st = self.channel_mut(ci, ch);
        if rec.global {
            // A new channel-wide limit holds from now on: the window is full only
            // if what is unacknowledged fills the new limit (Celery raises it by
            // one for each ETA task it holds, so that it keeps receiving).
            let limit = rec.prefetch_count as u32;
            if limit == 0 || st.live_unacked < limit {
                if st.global_full_since.take().is_some() {
                    st.global_room_since = Some(mark);
                }
            } else if st.global_full_since.is_none() {
                st.global_full_since = Some(mark);
            }
            st.qos.global = Some(rec.clone());
            // A channel-wide limit applies at once to the consumers registered on it.
            let live: Vec<u32> = st.consumers.clone();
            for i in live {
                let cs = &mut self.consumers[i as usize];
                if cs.end.is_none() {
                    cs.qos.global = Some(rec.clone());
                }
            }
        } else {
            st.qos.per_consumer = Some(rec);
        }
    }

    pub(super) fn on_consume(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        let nowait = a.nowait.unwrap_or(false);
        let idx = self.new_consumer(
            ci,
            ch,
            a.consumer_tag.as_deref().unwrap_or_default().to_string(),
            a.queue.clone(),
            a.no_ack.unwrap_or(false),
            false,
        );
        let cs = &mut self.consumers[idx as usize];
        cs.marks[Step::Consume] = Some(mark);
        cs.nowait = nowait;
        cs.args = ConsumeArgs::of(a.arguments.as_ref());
        if nowait {
            self.epoch += 1;
            self.consumers[idx as usize].epoch = self.epoch;
        } else {
            self.channel_mut(ci, ch).pending_consumes.push_back(idx);
        }
        self.conns[ci as usize].counts.consumes += 1;
    }

    pub(super) fn on_consume_ok(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        let popped = self.channel_mut(ci, ch).pending_consumes.pop_front();
        let idx = match popped {
            Some(i) => i,
            None => {
                // consume-ok whose consume precedes the capture.
                let tag = a.consumer_tag.as_deref().unwrap_or_default().to_string();
                match self.find_consumer(ci, ch, &tag) {
                    Some(i) => i,
                    None => self.new_consumer(ci, ch, tag, None, false, true),
                }
            }
        };
        self.epoch += 1;
        let cs = &mut self.consumers[idx as usize];
        if let Some(tag) = &a.consumer_tag {
            if cs.tag.is_empty() {
                cs.tag = tag.to_string();
            }
        }
        cs.marks[Step::ConsumeOk] = Some(mark);
        cs.epoch = self.epoch;
    }

    /// basic.cancel from the broker ends the consumer; from the client it ends
    /// it at once only with nowait, else at the cancel-ok.
    pub(super) fn on_cancel(&mut self, ci: u32, ch: u16, mark: Mark, dir: Dir, a: &MethodArgs) {
        let Some(cs) = self.registered_mut(ci, ch, a) else {
            return;
        };
        if dir == Dir::S2C {
            cs.end = Some(ConsumerEnd::BrokerCancel(mark));
        } else {
            cs.marks[Step::CancelRequested].get_or_insert(mark);
            if a.nowait == Some(true) {
                cs.end = Some(ConsumerEnd::ClientCancel(mark));
            }
        }
    }

    pub(super) fn on_cancel_ok(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        if let Some(cs) = self.registered_mut(ci, ch, a) {
            let at = cs.marks[Step::CancelRequested].unwrap_or(mark);
            cs.end = Some(ConsumerEnd::ClientCancel(at));
        }
    }

    /// The consumer still registered on the channel under the method's consumer tag.
    fn registered_mut(&mut self, ci: u32, ch: u16, a: &MethodArgs) -> Option<&mut ConsumerState> {
        let tag = a.consumer_tag.as_deref().unwrap_or("");
        let i = self.find_consumer(ci, ch, tag)?;
        Some(&mut self.consumers[i as usize]).filter(|cs| cs.end.is_none())
    }

    pub(super) fn new_consumer(
        &mut self,
        ci: u32,
        ch: u16,
        tag: String,
        queue: Option<String>,
        no_ack: bool,
        discovered: bool,
    ) -> u32 {
        let idx = self.consumers.len() as u32;
        let serial = self.next_serial;
        self.next_serial += 1;
        let st = self.channel_mut(ci, ch);
        let mut qos = st.qos.clone();
        if discovered {
            qos.per_consumer = None;
        }
        self.consumers.push(ConsumerState {
            serial,
            conn: ci,
            channel: ch,
            tag,
            queue,
            no_ack,
            nowait: false,
            discovered,
            epoch: self.epoch,
            qos,
            counts: ConsumerCounts::default(),
            marks: ConsumerMarks::default(),
            latency: LatencyHistogram::default(),
            end: None,
            args: ConsumeArgs::default(),
            hints: Box::default(),
        });
        self.channel_mut(ci, ch).consumers.push(idx);
        self.conns[ci as usize].consumers.push(idx);
        idx
    }

    pub(super) fn find_consumer(&self, ci: u32, ch: u16, tag: &str) -> Option<u32> {
        let st = self.conns[ci as usize].channels.get(&ch)?;
        st.consumers.iter().rev().copied().find(|&i| {
            self.consumers[i as usize].tag == tag && self.consumers[i as usize].end.is_none()
        })
    }
}
