//! The live session: what `proxy`, `capture` and `run` share once a live
//! source is open, as library code a test drives in-process.
//!
//! It owns the one trace loop ([`trace`]: input from a [`Source`], the 1 s
//! tick, one stop time for the recording and the final verdicts), the live
//! output ([`output`]: timeline lines, live verdicts, the final block), the
//! recorder wiring and the tracer thread ([`channel`]), the proxy session
//! ([`proxy`], served on any listener with a shutdown future), `run`'s
//! artifacts ([`artifacts`]) and command ([`child`]), and signal handling
//! ([`signals`]). It never parses arguments or picks exit codes (the
//! binary's `cli` does), and never decodes bytes itself: the proxy's
//! [`Tracer`](crate::source::proxy::Tracer) and the live capture do.

pub mod artifacts;
pub mod capture;
pub mod channel;
pub mod child;
pub mod output;
pub mod proxy;
pub mod signals;

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::event::{Conn, Event, Timestamp};
use crate::pipeline::PipelineError;
use crate::source::live::LiveCaptureError;
use crate::source::proxy::TraceCounters;

pub use output::{LiveFormat, LiveOptions, LiveOutput, NoOutput};

/// How often live verdicts are evaluated and recordings flushed.
pub const TICK: Duration = Duration::from_secs(1);

/// Why a live session could not start, go on or end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot start the tracer's runtime")]
    TracerRuntime(#[source] io::Error),
    #[error("cannot start the tracer thread")]
    TracerThread(#[source] io::Error),
    #[error("the tracer thread panicked")]
    TracerPanicked,
    #[error("cannot install the signal handlers")]
    Signals(#[source] io::Error),
    #[error("cannot write {label}")]
    RecordingStart {
        label: String,
        #[source]
        source: io::Error,
    },
    /// A write failed during the run (reported then); the file is cut short.
    #[error("{label}: the recording is incomplete")]
    RecordingIncomplete {
        label: String,
        #[source]
        source: io::Error,
    },
    #[error("{label}: cannot finish the recording")]
    RecordingFinish {
        label: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Capture(#[from] LiveCaptureError),
    #[error("writing the final verdicts")]
    Output(#[source] io::Error),
    #[error("cannot create {path}")]
    Create {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot analyse {path}")]
    Analyse {
        path: String,
        #[source]
        source: PipelineError,
    },
    /// Artifacts that could not be written, each with its cause.
    #[error("{}", .0.join("; "))]
    Artifacts(Vec<String>),
}

/// Where the live output of a session goes: a [`LiveOutput`], or nowhere
/// ([`NoOutput`], for `run`, whose reports come from its recording).
pub trait LiveSink {
    /// One timeline event.
    fn event(&mut self, ev: &Event);
    /// The proxy could not reach the broker for the client of `conn`.
    fn upstream_failed(&mut self, ts: Timestamp, conn: Conn, error: &str);
    /// Once a [`TICK`]: the live verdicts that have become certain.
    fn tick(&mut self, now: Timestamp);
    /// After a batch of input.
    fn flush(&mut self);
}

/// What one [`Source::poll`] came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Input was handled (or none is waiting): time to flush the output.
    Batch,
    /// The tick's deadline passed.
    Tick,
    /// The source has ended: nothing more will come.
    Ended,
}

/// Where a live session's input comes from: the proxy's trace channel
/// ([`channel::ChannelSource`]) or a live capture ([`capture::CaptureSource`]).
pub trait Source {
    /// What the source tells when it has finished.
    type Finished;
    /// Waits for input at most until `deadline`, passing what came to `out`.
    fn poll<O: LiveSink>(&mut self, deadline: Instant, out: &mut O) -> Result<Poll, LiveError>;
    /// Once a [`TICK`]: flush the recording.
    fn tick(&mut self);
    /// The source stopped at `stop`: pass what it still holds to `out`, end the recording.
    fn finish<O: LiveSink>(self, stop: Timestamp, out: &mut O)
        -> Result<Self::Finished, LiveError>;
}

/// The trace loop: feeds `source`'s input to `out` until it ends, with a
/// tick every second; finishes the source at the stop time, returned so that
/// the final verdicts end at the same, known moment as the recording.
pub fn trace<S: Source, O: LiveSink>(
    mut source: S,
    out: &mut O,
) -> Result<(S::Finished, Timestamp), LiveError> {
    let mut next_tick = Instant::now() + TICK;
    loop {
        match source.poll(next_tick, out)? {
            // One write per batch (the timeline trails by a few ms at most).
            Poll::Batch => out.flush(),
            Poll::Tick => {
                out.tick(Timestamp::now());
                source.tick();
                next_tick = Instant::now() + TICK;
            }
            Poll::Ended => break,
        }
    }
    let stop = Timestamp::now();
    let finished = source.finish(stop, out)?;
    Ok((finished, stop))
}

/// Says on stderr how many trace messages the tracer lost, if any.
pub fn report_drops(c: &TraceCounters) {
    let dropped = c.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!(
            "amqptrace: {dropped} trace events dropped ({} bytes not traced): the tracer could not keep up; forwarding was not affected",
            c.dropped_bytes.load(Ordering::Relaxed)
        );
    }
}
