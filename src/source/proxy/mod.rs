//! The live proxy source: accepts client connections, opens one upstream
//! connection for each, and forwards bytes both ways exactly as received.
//!
//! Forwarding first, tracing second. Each direction reads into a fixed buffer,
//! writes the bytes to the other side, and only then hands a *copy* to the
//! tracer through a bounded channel with `try_send`: when the channel (or its
//! byte budget) is full the copy is dropped and counted, never the client's
//! bytes. The tracer ([`tracer`]) turns the copies into TCP-like events for
//! the same [`crate::stream::Tracker`] that reads capture files, so decoding,
//! analysis and sinks are shared with `analyze` unchanged.
//!
//! TCP semantics are passed through: an EOF on one side becomes a write
//! shutdown (FIN) on the other (half-close); a reset or a failed write on one
//! side resets the other (`SO_LINGER` 0, then close); an upstream that cannot
//! be reached closes the client at once with a reset and is reported with its
//! OS error. Memory per connection is two fixed buffers of [`BUF_SIZE`].
//!
//! This module owns sockets, tasks and shutdown; it knows nothing of AMQP.
//!
//! By concern: [`address`] (what to listen on and forward to), [`channel`]
//! (the trace channel and its counters), [`forward`] (sockets, tasks and
//! shutdown), [`tracer`] (trace messages to timeline events, one thread, in
//! order), [`tls`] (TLS towards the broker or the clients: certificates,
//! verification, key log), [`socket`] (a side of a connection, plain or
//! TLS, and its halves). The recording of the same messages as pcapng is a sink,
//! [`crate::sink::PcapRecorder`].

pub mod address;
pub mod channel;
pub mod forward;
pub mod socket;
pub mod tls;
pub mod tracer;

pub use address::{resolve_listen, AddressError, Upstream};
pub use channel::{
    next_batch, processed, trace_channel, ConnInfo, TraceCounters, TraceKind, TraceMsg, TraceRx,
    TraceTx, MAX_TRACE_QUEUE_MESSAGES, TRACE_BATCH_MAX, TRACE_BATCH_WAIT, TRACE_QUEUE_BYTES,
    TRACE_QUEUE_MESSAGES,
};
pub use forward::{
    descriptor_budget, run, ProxyConfig, BUF_SIZE, CONNECT_TIMEOUT, MAX_CONNECTIONS,
};
pub use tls::{KeyLogFile, ListenTls, TlsError, UpstreamTls, UpstreamTlsOptions};
pub use tracer::Tracer;
