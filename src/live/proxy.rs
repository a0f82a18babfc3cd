//! The proxy session of `amqptrace proxy`: forwarding on the caller's
//! runtime, a tracer thread decoding the copies for the live output and an
//! optional `--pcap` recording. Served on any listeners with a shutdown
//! future (`serve(listeners, shutdown)`, as mini-redis runs its server), so
//! a test binds `127.0.0.1:0` and drives it in-process.

use std::future::Future;
use std::io::Write;

use tokio::net::TcpListener;

use super::channel::{ChannelSource, Recorder, Traced};
use super::{trace, LiveError, LiveOptions, LiveOutput};
use crate::analyze::Analysis;
use crate::source::proxy::ProxyConfig;
use crate::source::proxy::Tracer;
use crate::stream::StreamConfig;

/// What a proxy session is made of.
pub struct ProxySession {
    pub proxy: ProxyConfig,
    /// Trace messages held for the tracer at most.
    pub trace_queue: usize,
    /// How the copies are decoded (the broker's port, the body prefix).
    pub stream: StreamConfig,
    pub output: LiveOptions,
    /// Where the live output goes (stdout, `-o FILE`, a test's buffer).
    pub writer: Box<dyn Write + Send>,
    /// The `--pcap` recording.
    pub recorder: Option<Recorder>,
}

impl ProxySession {
    /// Forwards until `shutdown` completes and every connection has ended
    /// (the drain), then returns the final analysis, written to the output
    /// at the moment the tracing stopped.
    pub async fn serve(
        self,
        listeners: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Analysis, LiveError> {
        let ProxySession {
            proxy,
            trace_queue,
            stream,
            output,
            writer,
            recorder,
        } = self;
        let traced = Traced::start(trace_queue, move |rx, counters| {
            let source =
                ChannelSource::new(rx, counters, Some(Tracer::new(stream)), recorder, None)?;
            // Built on the thread that uses it (it is not `Send`).
            let mut out = LiveOutput::new(&output, writer);
            let stop = match trace(source, &mut out) {
                Ok(((), stop)) => stop,
                // Already reported when it failed; the trace went on without it.
                Err(LiveError::RecordingIncomplete { .. }) => crate::event::Timestamp::now(),
                Err(e) => return Err(e),
            };
            out.finish(stop)
        })?;
        traced.serve(listeners, proxy, shutdown).await.0
    }
}
