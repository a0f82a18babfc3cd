//! One consumer (basic.consume to its end): its window, its counters and its
//! settle latencies, kept after it ends for the verdict and the summary.

use std::ops::{Index, IndexMut};

use super::super::histogram::LatencyHistogram;
use super::super::model::{ConsumerCounts, LatencySummary};
use super::super::secs;
use super::{ConsumeArgs, ConsumerEnd, DeliveryHints, Mark, Prefetch};

#[derive(Debug)]
pub(crate) struct ConsumerState {
    /// Never reused, unlike the index, which changes when ended connections retire.
    pub serial: u64,
    pub conn: u32,
    pub channel: u16,
    pub tag: String,
    pub queue: Option<String>,
    pub no_ack: bool,
    pub nowait: bool,
    /// Its other basic.consume arguments (x-stream-offset, x-priority).
    pub args: ConsumeArgs,
    /// Seen first through a delivery: its basic.consume precedes the capture.
    pub discovered: bool,
    /// Publish-epoch at registration (see `Destination::after`).
    pub epoch: u64,
    /// Its own window (none when discovered through a delivery), and the
    /// channel-wide one in force while it was registered: kept on the consumer
    /// so that it outlives the channel and a later one is not credited to a
    /// consumer already gone.
    pub qos: Prefetch,
    pub marks: ConsumerMarks,
    pub counts: ConsumerCounts,
    pub latency: LatencyHistogram,
    /// What the headers of its deliveries said (x-delivery-count, x-death, Celery's eta).
    pub hints: Box<DeliveryHints>,
    /// How it ended, once it has: basic.cancel, or its channel or connection gone.
    pub end: Option<ConsumerEnd>,
}

/// The steps of a consumer's life whose frame and time its verdicts point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Consume,
    ConsumeOk,
    CancelRequested,
    FirstDelivery,
    LastDelivery,
    LastSettle,
    /// The first settle much slower than the consumer's pace before it.
    FirstSlowSettle,
    /// Since when the prefetch window has been full.
    FullSince,
    /// The settle that last gave a full prefetch window room again.
    RoomSince,
    /// The earliest delivery that brought any message to it for the third time.
    LoopSince,
}

impl Step {
    const COUNT: usize = Step::LoopSince as usize + 1;
}

/// Where each [`Step`] of a consumer's life was seen (the frame and its
/// time), indexed by the step: `marks[Step::ConsumeOk]`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConsumerMarks([Option<Mark>; Step::COUNT]);

impl Index<Step> for ConsumerMarks {
    type Output = Option<Mark>;
    fn index(&self, step: Step) -> &Option<Mark> {
        &self.0[step as usize]
    }
}

impl IndexMut<Step> for ConsumerMarks {
    fn index_mut(&mut self, step: Step) -> &mut Option<Mark> {
        &mut self.0[step as usize]
    }
}

impl ConsumerState {
    /// Deliveries not flagged `redelivered`: messages it was the first to get.
    pub(crate) fn first_deliveries(&self) -> u64 {
        self.counts
            .deliveries
            .saturating_sub(self.counts.redelivered)
    }

    /// The per-consumer prefetch_count in force, when it limits anything.
    pub(crate) fn prefetch_limit(&self) -> Option<u32> {
        match &self.qos.per_consumer {
            Some(q) if q.prefetch_count > 0 && !self.no_ack => Some(q.prefetch_count as u32),
            _ => None,
        }
    }

    /// Delivery→settle latency figures, None before the first settle.
    pub(crate) fn latency_summary(&self) -> Option<LatencySummary> {
        let h = &self.latency;
        if h.count() == 0 {
            return None;
        }
        Some(LatencySummary {
            count: h.count(),
            p50_s: secs(h.quantile_us(0.5).unwrap_or(0) as f64 / 1e6),
            p95_s: secs(h.quantile_us(0.95).unwrap_or(0) as f64 / 1e6),
            max_s: secs(h.max_us() as f64 / 1e6),
        })
    }

    /// The p95 delivery→settle latency, seconds (0 before the first settle).
    pub(crate) fn p95_s(&self) -> f64 {
        self.latency.quantile_us(0.95).unwrap_or(0) as f64 / 1e6
    }
}
