//! The proxy's side of a live session: the tracer thread, fed batches of
//! [`TraceMsg`] through the bounded trace channel, decoding them
//! ([`Tracer`]) for the live output and recording them ([`Recorder`], the
//! pcapng of `--pcap` and `run`); and [`Traced`], which serves the proxy on
//! the forwarding runtime while that thread traces.
//!
//! Forwarding first: this side only ever loses trace copies (counted by the
//! channel), and a recording that fails stops, never the forwarding.

use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::{report_drops, LiveError, LiveSink, Poll, Source};
use crate::event::{Conn, Timestamp};
use crate::sink::PcapRecorder;
use crate::source::proxy::Tracer;
use crate::source::proxy::{
    self, ProxyConfig, TraceCounters, TraceKind, TraceMsg, TraceRx, TraceTx,
};

/// A pcapng recording of the proxied traffic, named `label` in messages
/// (`--pcap`, `capture.pcapng`). Its first write error stops it.
pub struct Recorder {
    label: String,
    /// What goes on when the recording stops, for the message.
    goes_on: &'static str,
    pcap: PcapRecorder<Box<dyn Write + Send>>,
    failed: Option<io::Error>,
}

impl Recorder {
    /// A recording into `w` from now; `keep_credentials` records the
    /// clients' SASL secrets as sent (masked otherwise).
    pub fn new(
        w: Box<dyn Write + Send>,
        label: &str,
        goes_on: &'static str,
        keep_credentials: bool,
    ) -> Result<Recorder, LiveError> {
        let pcap = PcapRecorder::new(w, Timestamp::now(), keep_credentials).map_err(|source| {
            LiveError::RecordingStart {
                label: label.to_string(),
                source,
            }
        })?;
        Ok(Recorder {
            label: label.to_string(),
            goes_on,
            pcap,
            failed: None,
        })
    }

    fn record(&mut self, msg: &TraceMsg) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.pcap.record(msg) {
            eprintln!(
                "amqptrace: {}: {e}; recording stopped, {}",
                self.label, self.goes_on
            );
            self.failed = Some(e);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.failed {
            Some(_) => Err(io::Error::other("the recording stopped")),
            None => self.pcap.flush(),
        }
    }

    /// Ends the recording at `end` (its `isb_endtime`), or says that it was cut short.
    fn finish(self, end: Timestamp) -> Result<(), LiveError> {
        let label = self.label;
        if let Some(source) = self.failed {
            return Err(LiveError::RecordingIncomplete { label, source });
        }
        self.pcap
            .finish(end)
            .and_then(|mut w| w.flush())
            .map_err(|source| LiveError::RecordingFinish { label, source })
    }
}

/// Called with the count of dropped trace messages when a snapshot is asked
/// for (`run` writes a first copy of its reports).
pub type OnSnapshot = Box<dyn FnMut(u64) + Send>;

/// The trace channel as a [`Source`].
pub struct ChannelSource {
    rt: tokio::runtime::Runtime,
    rx: TraceRx,
    counters: Arc<TraceCounters>,
    /// `None`: record only (`run`, whose timeline comes from the recording).
    tracer: Option<Tracer>,
    recorder: Option<Recorder>,
    snapshot: Option<(Arc<Notify>, OnSnapshot)>,
    batch: Vec<TraceMsg>,
}

impl ChannelSource {
    /// `snapshot`: a notification that flushes the recording and calls its function.
    pub fn new(
        rx: TraceRx,
        counters: Arc<TraceCounters>,
        tracer: Option<Tracer>,
        recorder: Option<Recorder>,
        snapshot: Option<(Arc<Notify>, OnSnapshot)>,
    ) -> Result<ChannelSource, LiveError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(LiveError::TracerRuntime)?;
        Ok(ChannelSource {
            rt,
            rx,
            counters,
            tracer,
            recorder,
            snapshot,
            batch: Vec::with_capacity(proxy::TRACE_BATCH_MAX),
        })
    }

    fn handle<O: LiveSink>(&mut self, msg: TraceMsg, out: &mut O) {
        proxy::processed(&self.counters, &msg);
        if let Some(r) = self.recorder.as_mut() {
            r.record(&msg);
        }
        if let TraceKind::UpstreamFailed { error } = &msg.kind {
            eprintln!(
                "amqptrace: {}: upstream unreachable ({error}); client closed",
                msg.conn.client
            );
            let conn = Conn {
                client: msg.conn.client,
                broker: msg.conn.upstream,
            };
            out.upstream_failed(msg.ts, conn, error);
        } else if let Some(t) = self.tracer.as_mut() {
            t.handle(&msg, &mut |ev| out.event(&ev));
        }
    }
}

enum Woke {
    Batch(bool),
    Tick,
    Snapshot,
}

impl Source for ChannelSource {
    type Finished = ();

    fn poll<O: LiveSink>(&mut self, deadline: Instant, out: &mut O) -> Result<Poll, LiveError> {
        let (rx, batch, snapshot) = (&mut self.rx, &mut self.batch, &self.snapshot);
        let woke = self.rt.block_on(async {
            tokio::select! {
                open = proxy::next_batch(rx, batch) => Woke::Batch(open),
                _ = tokio::time::sleep_until(deadline.into()) => Woke::Tick,
                _ = async {
                    match snapshot {
                        Some((n, _)) => n.notified().await,
                        None => std::future::pending().await,
                    }
                } => Woke::Snapshot,
            }
        });
        Ok(match woke {
            Woke::Batch(open) => {
                let mut batch = std::mem::take(&mut self.batch);
                for m in batch.drain(..) {
                    self.handle(m, out);
                }
                self.batch = batch;
                if open {
                    Poll::Batch
                } else {
                    Poll::Ended
                }
            }
            Woke::Tick => Poll::Tick,
            // A signal was passed on to `run`'s command: should the command
            // ignore it and amqptrace be killed later, this copy remains.
            Woke::Snapshot => {
                let flushed = self.recorder.as_mut().is_none_or(|r| r.flush().is_ok());
                if let (true, Some((_, f))) = (flushed, self.snapshot.as_mut()) {
                    f(self
                        .counters
                        .dropped
                        .load(std::sync::atomic::Ordering::Relaxed));
                }
                Poll::Batch
            }
        })
    }

    fn tick(&mut self) {
        if let Some(r) = self.recorder.as_mut() {
            let _ = r.flush();
        }
    }

    fn finish<O: LiveSink>(self, stop: Timestamp, _: &mut O) -> Result<(), LiveError> {
        match self.recorder {
            Some(r) => r.finish(stop),
            None => Ok(()),
        }
    }
}

/// A proxy whose copies a tracer thread is tracing: start the thread with
/// [`Traced::start`], then [`Traced::serve`] on the forwarding runtime.
pub struct Traced<T> {
    tx: TraceTx,
    counters: Arc<TraceCounters>,
    tracer: std::thread::JoinHandle<Result<T, LiveError>>,
}

impl<T: Send + 'static> Traced<T> {
    /// A trace channel of `trace_queue` messages and the tracer thread,
    /// running `trace` on its receiving end.
    pub fn start<F>(trace_queue: usize, trace: F) -> Result<Traced<T>, LiveError>
    where
        F: FnOnce(TraceRx, Arc<TraceCounters>) -> Result<T, LiveError> + Send + 'static,
    {
        let (tx, rx, counters) = proxy::trace_channel(trace_queue, proxy::TRACE_QUEUE_BYTES);
        let tracer_counters = counters.clone();
        let tracer = std::thread::Builder::new()
            .name("amqptrace-tracer".into())
            .spawn(move || trace(rx, tracer_counters))
            .map_err(LiveError::TracerThread)?;
        Ok(Traced {
            tx,
            counters,
            tracer,
        })
    }

    /// Forwards clients of `listeners` until `shutdown` completes and every
    /// connection has ended (see [`proxy::run`]), then waits for the tracer
    /// to trace the last copies and says how many were dropped. Returns the
    /// tracer's result and the dropped count.
    pub async fn serve(
        self,
        listeners: Vec<TcpListener>,
        cfg: ProxyConfig,
        shutdown: impl Future<Output = ()>,
    ) -> (Result<T, LiveError>, u64) {
        proxy::run(listeners, cfg, self.tx, shutdown).await;
        // Every sender is gone now: the tracer ends once it has drained the channel.
        let tracer = self.tracer;
        let joined = tokio::task::spawn_blocking(move || tracer.join()).await;
        report_drops(&self.counters);
        let dropped = self
            .counters
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        match joined {
            Ok(Ok(r)) => (r, dropped),
            _ => (Err(LiveError::TracerPanicked), dropped),
        }
    }
}
