//! The trace channel between the forwarders and the tracer: what a copy
//! says ([`TraceMsg`], [`TraceKind`], the connection's addresses in
//! [`ConnInfo`]), the bounded channel itself ([`trace_channel`]: messages and
//! payload bytes in flight, past either a copy is dropped and counted, never
//! the client's bytes), its [`TraceCounters`], and the tracer's side of it
//! ([`next_batch`], [`processed`]). Owns no socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::event::{Dir, Timestamp};

/// How long a connection-level trace message (FIN, reset) may wait for room in
/// the channel; it is sent after the forwarding it describes is done, so the
/// wait never holds client bytes back.
const CONTROL_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses of one proxied connection, as the proxy sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The proxy's connection counter (1-based).
    pub id: u64,
    /// The client's address (the peer of the accepted socket).
    pub client: SocketAddr,
    /// The proxy's own address on the client leg (the listen address).
    pub listen: SocketAddr,
    /// The proxy's own address on the upstream leg, once connected.
    pub upstream_local: Option<SocketAddr>,
    /// The broker's address (the first resolved address when the connect failed).
    pub upstream: SocketAddr,
}

/// What a trace message says happened.
#[derive(Debug, Clone)]
pub enum TraceKind {
    /// Both legs are connected.
    Open,
    /// Bytes forwarded in `dir`, starting at stream offset `offset`.
    Data { offset: u64, bytes: Bytes },
    /// The sender in `dir` closed its side (EOF) after `offset` bytes; the FIN was passed on.
    Fin { offset: u64 },
    /// The sender in `dir` reset the connection (or could no longer be written
    /// to); the other side was reset too.
    Reset { error: String },
    /// The upstream could not be reached; the client was closed.
    UpstreamFailed { error: String },
    /// Bytes in `dir` read at `ts` could not be written for [`super::forward::WRITE_STALL`]:
    /// their receiver stopped reading (a broker under a memory alarm does).
    WriteStalled,
    /// The stalled write went through.
    WriteResumed,
    /// Both sockets are closed; the connection's state can be released.
    Closed,
}

/// A copy of what was forwarded, for the tracer.
#[derive(Debug, Clone)]
pub struct TraceMsg {
    pub conn: Arc<ConnInfo>,
    pub dir: Dir,
    /// Wall-clock time the bytes were read (or the event happened).
    pub ts: Timestamp,
    pub kind: TraceKind,
}

impl TraceMsg {
    /// A message about `conn` in `dir`, happening now.
    pub(super) fn now(conn: &Arc<ConnInfo>, dir: Dir, kind: TraceKind) -> Self {
        TraceMsg {
            conn: conn.clone(),
            dir,
            ts: Timestamp::now(),
            kind,
        }
    }
}

/// Counters shared by the forwarders and the tracer.
#[derive(Debug, Default)]
pub struct TraceCounters {
    /// Bytes of copies queued and not yet processed by the tracer.
    pub queued_bytes: AtomicUsize,
    /// Trace messages dropped because the tracer could not keep up.
    pub dropped: AtomicU64,
    /// Bytes whose copy was dropped.
    pub dropped_bytes: AtomicU64,
    /// Bytes forwarded, both directions.
    pub forwarded_bytes: AtomicU64,
    pub connections: AtomicU64,
}

/// The forwarders' end of the trace channel.
#[derive(Debug, Clone)]
pub struct TraceTx {
    tx: mpsc::Sender<TraceMsg>,
    counters: Arc<TraceCounters>,
    max_queued_bytes: usize,
}

/// The tracer's end.
pub type TraceRx = mpsc::Receiver<TraceMsg>;

/// Default bound of the trace channel: messages in flight (one per socket read),
/// and their payload bytes. Past either, copies are dropped and counted.
pub const TRACE_QUEUE_MESSAGES: usize = 16 * 1024;
pub const TRACE_QUEUE_BYTES: usize = 64 << 20;
/// The largest trace channel asked for is clamped to (tokio's channel panics
/// above `usize::MAX >> 3` messages; this is far beyond any need).
pub const MAX_TRACE_QUEUE_MESSAGES: usize = 1 << 24;

/// A bounded trace channel: at most `capacity` messages and about
/// `max_queued_bytes` of copied payload in flight.
pub fn trace_channel(
    capacity: usize,
    max_queued_bytes: usize,
) -> (TraceTx, TraceRx, Arc<TraceCounters>) {
    let (tx, rx) = mpsc::channel(capacity.clamp(1, MAX_TRACE_QUEUE_MESSAGES));
    let counters = Arc::new(TraceCounters::default());
    (
        TraceTx {
            tx,
            counters: counters.clone(),
            max_queued_bytes,
        },
        rx,
        counters,
    )
}

impl TraceTx {
    /// Queues a copy of forwarded bytes, or drops it (counted) when the tracer is behind.
    pub(super) fn data(
        &self,
        conn: &Arc<ConnInfo>,
        dir: Dir,
        ts: Timestamp,
        offset: u64,
        bytes: &[u8],
    ) {
        let c = &self.counters;
        let n = bytes.len();
        if c.queued_bytes.load(Ordering::Relaxed) + n > self.max_queued_bytes {
            self.drop_one(n);
            return;
        }
        let msg = TraceMsg {
            conn: conn.clone(),
            dir,
            ts,
            kind: TraceKind::Data {
                offset,
                bytes: Bytes::copy_from_slice(bytes),
            },
        };
        c.queued_bytes.fetch_add(n, Ordering::Relaxed);
        if self.tx.try_send(msg).is_err() {
            c.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            self.drop_one(n);
        }
    }

    fn drop_one(&self, bytes: usize) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        self.counters
            .dropped_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Queues a message that does not carry bytes without waiting (dropped when full).
    pub(super) fn try_control(&self, msg: TraceMsg) {
        if self.tx.try_send(msg).is_err() {
            self.drop_one(0);
        }
    }

    /// Queues a connection-level message, waiting a little for room: it is
    /// sent only after the forwarding it describes is over.
    pub(super) async fn control(&self, msg: TraceMsg) {
        match tokio::time::timeout(CONTROL_SEND_TIMEOUT, self.tx.send(msg)).await {
            Ok(Ok(())) => {}
            // The tracer is gone (shutting down) or hopelessly behind.
            _ => self.drop_one(0),
        }
    }

    /// The counters this channel shares with the tracer and the caller.
    pub fn counters(&self) -> &Arc<TraceCounters> {
        &self.counters
    }
}

/// How long the tracer lets copies gather after the first one of a batch.
/// Waking the tracer thread for every socket read cost the forwarders a
/// cross-thread wake-up (futex) per read and the tracer a sleep and a wake
/// per read; one wake-up per batch costs the timeline at most this delay.
pub const TRACE_BATCH_WAIT: Duration = Duration::from_millis(5);
/// Messages taken from the channel at most per batch.
pub const TRACE_BATCH_MAX: usize = 4096;

/// Waits for trace messages and moves a batch of them into `batch`: when idle
/// it sleeps until the first message comes (no periodic wake-ups), then waits
/// [`TRACE_BATCH_WAIT`] for more unless a full batch is already queued.
/// Returns `false` when every sender is gone and the channel is empty (what
/// `batch` holds then is the last of it). Cancel-safe: messages already
/// moved stay in `batch`.
pub async fn next_batch(rx: &mut TraceRx, batch: &mut Vec<TraceMsg>) -> bool {
    if batch.is_empty() {
        match rx.recv().await {
            Some(m) => batch.push(m),
            None => return false,
        }
        if rx.len() < TRACE_BATCH_MAX {
            tokio::time::sleep(TRACE_BATCH_WAIT).await;
        }
    }
    while batch.len() < TRACE_BATCH_MAX {
        match rx.try_recv() {
            Ok(m) => batch.push(m),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Releases the byte budget of a processed message (called by the tracer).
pub fn processed(counters: &TraceCounters, msg: &TraceMsg) {
    if let TraceKind::Data { bytes, .. } = &msg.kind {
        counters
            .queued_bytes
            .fetch_sub(bytes.len(), Ordering::Relaxed);
    }
}
