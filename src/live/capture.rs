//! A live interface capture as a [`Source`] of the trace loop: packets read
//! from libpcap until a stop flag is set (a signal), its `-w` recording
//! flushed every tick, its failures and the kernel's drops reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{LiveError, LiveSink, Poll, Source};
use crate::event::{Event, Timestamp};
use crate::source::live::{LiveCapture, LiveStats};

/// An open live capture, read until `stop` is set.
pub struct CaptureSource {
    cap: LiveCapture,
    stop: Arc<AtomicBool>,
}

impl CaptureSource {
    pub fn new(cap: LiveCapture, stop: Arc<AtomicBool>) -> Self {
        CaptureSource { cap, stop }
    }
}

impl Source for CaptureSource {
    type Finished = LiveStats;

    fn poll<O: LiveSink>(&mut self, deadline: Instant, out: &mut O) -> Result<Poll, LiveError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Poll::Ended);
            }
            let got = self.cap.poll(&mut |ev: &Event| out.event(ev))?;
            if let Some(e) = self.cap.take_savefile_error() {
                eprintln!("amqptrace: -w: {e}; recording stopped, the capture goes on");
            }
            if Instant::now() >= deadline {
                return Ok(Poll::Tick);
            }
            if !got {
                return Ok(Poll::Batch);
            }
        }
    }

    fn tick(&mut self) {
        self.cap.flush();
    }

    fn finish<O: LiveSink>(self, stop: Timestamp, out: &mut O) -> Result<LiveStats, LiveError> {
        let stats = self.cap.finish(stop, &mut |ev: &Event| out.event(ev));
        if let Some(e) = &stats.savefile_error {
            eprintln!("amqptrace: -w: {e}; recording stopped");
        }
        if stats.dropped + stats.if_dropped > 0 {
            eprintln!(
                "amqptrace: {} packets dropped by the kernel, {} by the interface: the timeline has holes there",
                stats.dropped, stats.if_dropped
            );
        }
        Ok(stats)
    }
}
