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

pub mod tracer;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::event::{Dir, Timestamp};

/// Bytes read per direction at a time; the per-connection memory is two of these.
pub const BUF_SIZE: usize = 32 * 1024;
/// How long an upstream connect may take before the client is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accept loop waits after a failed accept (EMFILE: out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long a connection-level trace message (FIN, reset) may wait for room in
/// the channel; it is sent after the forwarding it describes is done, so the
/// wait never holds client bytes back.
const CONTROL_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The broker to forward to, as given on the command line (credentials removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

/// Why an `--upstream` or `--listen` value is not usable.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}': expected host:port, [ipv6]:port or amqp://host:port/vhost")]
    Syntax(String),
    #[error("'{0}': the port is not a number from 1 to 65535")]
    Port(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

impl Upstream {
    /// Parses `host:port`, `[v6]:port`, `host` (port 5672) or an
    /// `amqp://user:pass@host:port/vhost?query` URL. User name and password
    /// are dropped here and never stored, so nothing can print them. The
    /// error message does not repeat a URL's credentials either.
    pub fn parse(s: &str) -> Result<Upstream, AddressError> {
        let (rest, default_port) = if let Some(r) = s.strip_prefix("amqp://") {
            (r, 5672)
        } else if let Some(r) = s.strip_prefix("amqps://") {
            (r, 5671)
        } else {
            (s, 5672)
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hostport = match authority.rfind('@') {
            Some(i) => &authority[i + 1..],
            None => authority,
        };
        let shown = || {
            if rest.len() == s.len() {
                s.to_string()
            } else {
                hostport.to_string()
            }
        };
        let (host, port) =
            split_host_port(hostport, default_port).ok_or_else(|| AddressError::Syntax(shown()))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AddressError::Port(shown()))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(AddressError::Syntax(shown()));
        }
        Ok(Upstream {
            host: host.to_string(),
            port,
        })
    }

    /// Resolves the host (every connect resolves again, so DNS changes are followed).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, AddressError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| AddressError::Resolve {
                host: self.host.clone(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(AddressError::NoAddress(self.to_string()));
        }
        Ok(addrs)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port`, `host`, `[v6]` → (host, port text).
fn split_host_port(s: &str, _default: u16) -> Option<(&str, Option<&str>)> {
    if let Some(r) = s.strip_prefix('[') {
        let end = r.find(']')?;
        let host = &r[..end];
        let after = &r[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.matches(':').count() {
        0 => Some((s, None)),
        1 => {
            let (h, p) = s.split_once(':')?;
            Some((h, Some(p)))
        }
        // A bare IPv6 address without a port.
        _ => Some((s, None)),
    }
}

/// Resolves a `--listen` value (`host:port`, `[v6]:port`, a host name).
pub async fn resolve_listen(s: &str) -> Result<Vec<SocketAddr>, AddressError> {
    let (host, port) = split_host_port(s, 0).ok_or_else(|| AddressError::Syntax(s.to_string()))?;
    let port = port
        .ok_or_else(|| AddressError::Syntax(s.to_string()))?
        .parse::<u16>()
        .map_err(|_| AddressError::Port(s.to_string()))?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| AddressError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AddressError::NoAddress(s.to_string()));
    }
    Ok(addrs)
}

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
/// The largest `max_connections` honoured (two 32 KiB buffers each, so 64 GiB
/// of buffers); larger values are clamped. Keeps the permit count within the
/// `u32` that `Semaphore::acquire_many` takes.
pub const MAX_CONNECTIONS: usize = 1 << 20;

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
    fn data(&self, conn: &Arc<ConnInfo>, dir: Dir, ts: Timestamp, offset: u64, bytes: &[u8]) {
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
    fn try_control(&self, msg: TraceMsg) {
        if self.tx.try_send(msg).is_err() {
            self.drop_one(0);
        }
    }

    /// Queues a connection-level message, waiting a little for room: it is
    /// sent only after the forwarding it describes is over.
    async fn control(&self, msg: TraceMsg) {
        match tokio::time::timeout(CONTROL_SEND_TIMEOUT, self.tx.send(msg)).await {
            Ok(Ok(())) => {}
            // The tracer is gone (shutting down) or hopelessly behind.
            _ => self.drop_one(0),
        }
    }

    /// Called by the tracer when it has processed a data copy of `n` bytes.
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

/// Settings of one proxy run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstream: Upstream,
    /// Connections served at once; further clients wait in the accept queue.
    /// Clamped to 1..=[`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// After shutdown is asked, how long live connections may go on.
    pub drain: Duration,
}

/// Descriptors the proxy process needs besides its connections: standard
/// streams, the two runtimes' epoll and wake-up descriptors, signal pipes,
/// listeners, `-o` and `--pcap` files, with room to spare.
const RESERVED_DESCRIPTORS: u64 = 32;

/// The soft descriptor limit (`ulimit -n`) of this process and the
/// connections it leaves room for (two descriptors each, after
/// [`RESERVED_DESCRIPTORS`]); `None` where it cannot be read (no /proc) or
/// is unlimited.
pub fn descriptor_budget() -> Option<(u64, usize)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let soft: u64 = rest.split_whitespace().next()?.parse().ok()?;
    let budget = soft.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    Some((soft, usize::try_from(budget).unwrap_or(usize::MAX).max(1)))
}

/// Accepts and forwards until `shutdown` completes, then lets live
/// connections run for `cfg.drain` and closes the rest. Returns when every
/// connection task has ended (their trace messages are sent by then).
pub async fn run(
    listeners: Vec<TcpListener>,
    cfg: ProxyConfig,
    trace: TraceTx,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut permits = cfg.max_connections.clamp(1, MAX_CONNECTIONS);
    // Past the descriptor limit every accept or upstream connect fails with
    // EMFILE and clients are reset; within it, extra clients wait to be accepted.
    if let Some((limit, budget)) = descriptor_budget().filter(|&(_, b)| b < permits) {
        tracing::warn!(
            "serving at most {budget} connections at once, not {permits}: the descriptor \
             limit (ulimit -n) is {limit} and each connection takes two; more clients wait \
             to be accepted"
        );
        permits = budget;
    }
    let limit = Arc::new(Semaphore::new(permits));
    let (stop_tx, stop_rx) = watch::channel(false);
    let next_id = Arc::new(AtomicU64::new(0));
    let cfg = Arc::new(cfg);
    let mut accepts = JoinSet::new();
    for listener in listeners {
        let limit = limit.clone();
        let cfg = cfg.clone();
        let trace = trace.clone();
        let stop_rx = stop_rx.clone();
        let next_id = next_id.clone();
        accepts.spawn(accept_loop(listener, limit, cfg, trace, stop_rx, next_id));
    }
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = async { while accepts.join_next().await.is_some() {} } => {}
    }
    accepts.abort_all();
    while accepts.join_next().await.is_some() {}
    // Every connection task holds one permit: all permits back means all ended.
    // Fits: `permits` ≤ MAX_CONNECTIONS < u32::MAX.
    let all = permits as u32;
    // Drain: wait until every connection has ended or the drain time is over.
    let drained = tokio::time::timeout(cfg.drain, limit.acquire_many(all)).await;
    if drained.is_err() {
        let _ = stop_tx.send(true);
        let _ = limit.acquire_many(all).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    cfg: Arc<ProxyConfig>,
    trace: TraceTx,
    stop_rx: watch::Receiver<bool>,
    next_id: Arc<AtomicU64>,
) {
    // Failed accepts: said when they start and then at most once a minute
    // with their count, not every retry (ten lines a second otherwise).
    let mut failing: u64 = 0;
    let mut said: Option<tokio::time::Instant> = None;
    let local = listener.local_addr().ok();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (client, client_addr) = match listener.accept().await {
            Ok(c) => {
                if failing > 0 {
                    // Not reset: `said` keeps the warning at once a minute when it flaps.
                    tracing::debug!("accepting on {local:?} again after {failing} failed attempts");
                    failing = 0;
                }
                c
            }
            Err(e) => {
                // EMFILE and friends: the connection waits in the backlog; back
                // off instead of spinning, keep serving the others.
                failing += 1;
                if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        "cannot accept a connection on {local:?}: {e} ({failing} failed \
                         attempts); retrying every {} ms (out of file descriptors? raise \
                         `ulimit -n` or lower --max-connections)",
                        ACCEPT_RETRY.as_millis()
                    );
                    said = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        trace.counters.connections.fetch_add(1, Ordering::Relaxed);
        let cfg = cfg.clone();
        let trace = trace.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            serve(id, client, client_addr, &cfg, &trace, stop_rx).await;
            drop(permit);
        });
    }
}

/// How one direction ended.
#[derive(Debug)]
enum Outcome {
    /// EOF read and passed on as FIN.
    Eof,
    /// Reading the sender failed (reset).
    ReadFailed(io::Error),
    /// Writing to the receiver failed (it reset or went away).
    WriteFailed(io::Error),
}

async fn serve(
    id: u64,
    client: TcpStream,
    client_addr: SocketAddr,
    cfg: &ProxyConfig,
    trace: &TraceTx,
    mut stop_rx: watch::Receiver<bool>,
) {
    let listen = client.local_addr().unwrap_or(client_addr);
    let _ = client.set_nodelay(true);
    let (upstream, upstream_addr) = match connect_upstream(&cfg.upstream).await {
        Ok(u) => u,
        Err((addr, error)) => {
            let info = Arc::new(ConnInfo {
                id,
                client: client_addr,
                listen,
                upstream_local: None,
                upstream: addr.unwrap_or_else(|| SocketAddr::new(listen.ip(), cfg.upstream.port)),
            });
            // A reset tells the client at once that the broker is not there,
            // as a refused connection would.
            let _ = client.set_zero_linger();
            drop(client);
            trace
                .control(TraceMsg {
                    conn: info.clone(),
                    dir: Dir::S2C,
                    ts: Timestamp::now(),
                    kind: TraceKind::UpstreamFailed { error },
                })
                .await;
            trace
                .control(TraceMsg {
                    conn: info,
                    dir: Dir::S2C,
                    ts: Timestamp::now(),
                    kind: TraceKind::Closed,
                })
                .await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let info = Arc::new(ConnInfo {
        id,
        client: client_addr,
        listen,
        upstream_local: upstream.local_addr().ok(),
        upstream: upstream_addr,
    });
    trace.try_control(TraceMsg {
        conn: info.clone(),
        dir: Dir::C2S,
        ts: Timestamp::now(),
        kind: TraceKind::Open,
    });
    let mut client = client;
    let mut upstream = upstream;
    let failure = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let c2s = pump(&mut cr, &mut uw, Dir::C2S, &info, trace);
        let s2c = pump(&mut ur, &mut cw, Dir::S2C, &info, trace);
        tokio::pin!(c2s, s2c);
        let (mut c2s_done, mut s2c_done) = (false, false);
        let mut failure: Option<(Dir, Outcome)> = None;
        while !(c2s_done && s2c_done) && failure.is_none() {
            tokio::select! {
                r = &mut c2s, if !c2s_done => {
                    c2s_done = true;
                    if !matches!(r, Outcome::Eof) { failure = Some((Dir::C2S, r)); }
                }
                r = &mut s2c, if !s2c_done => {
                    s2c_done = true;
                    if !matches!(r, Outcome::Eof) { failure = Some((Dir::S2C, r)); }
                }
                _ = stop_rx.wait_for(|s| *s) => {
                    break;
                }
            }
        }
        failure
    };
    if let Some((pump_dir, outcome)) = failure {
        // Which side failed: a read error is the sender's, a write error the receiver's.
        let (failed_dir, error) = match outcome {
            Outcome::ReadFailed(e) => (pump_dir, e),
            Outcome::WriteFailed(e) => (pump_dir.reverse(), e),
            Outcome::Eof => (pump_dir, io::Error::other("eof")),
        };
        tracing::debug!(
            conn = id,
            ?pump_dir,
            ?failed_dir,
            "connection reset: {error}"
        );
        // Reset the other side so that it sees what a direct peer would have seen.
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
        drop(client);
        drop(upstream);
        trace
            .control(TraceMsg {
                conn: info.clone(),
                dir: failed_dir,
                ts: Timestamp::now(),
                kind: TraceKind::Reset {
                    error: error.to_string(),
                },
            })
            .await;
    } else {
        drop(client);
        drop(upstream);
    }
    trace
        .control(TraceMsg {
            conn: info,
            dir: Dir::C2S,
            ts: Timestamp::now(),
            kind: TraceKind::Closed,
        })
        .await;
}

/// Connects to the first address of the upstream that answers.
async fn connect_upstream(
    up: &Upstream,
) -> Result<(TcpStream, SocketAddr), (Option<SocketAddr>, String)> {
    let addrs = up.resolve().await.map_err(|e| (None, e.to_string()))?;
    let mut last = String::new();
    for addr in &addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok((s, *addr)),
            Ok(Err(e)) => last = format!("connect to {addr}: {e}"),
            Err(_) => {
                last = format!(
                    "connect to {addr}: timed out after {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
            }
        }
    }
    Err((addrs.first().copied(), last))
}

/// Forwards one direction until EOF or an error. Bytes are written before
/// their copy is offered to the tracer.
async fn pump<R, W>(
    rd: &mut R,
    wr: &mut W,
    dir: Dir,
    info: &Arc<ConnInfo>,
    trace: &TraceTx,
) -> Outcome
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    let mut offset: u64 = 0;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => {
                // Half-close: pass the FIN on and keep the other direction going.
                let r = wr.shutdown().await;
                trace
                    .control(TraceMsg {
                        conn: info.clone(),
                        dir,
                        ts: Timestamp::now(),
                        kind: TraceKind::Fin { offset },
                    })
                    .await;
                return match r {
                    Ok(()) => Outcome::Eof,
                    // The receiver is already gone; its own direction reports it.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Outcome::Eof,
                    Err(e) => Outcome::WriteFailed(e),
                };
            }
            Ok(n) => n,
            Err(e) => return Outcome::ReadFailed(e),
        };
        let ts = Timestamp::now();
        if let Err(e) = wr.write_all(&buf[..n]).await {
            return Outcome::WriteFailed(e);
        }
        trace
            .counters
            .forwarded_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        trace.data(info, dir, ts, offset, &buf[..n]);
        offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let u = |s: &str| {
            Upstream::parse(s)
                .map(|u| (u.host, u.port))
                .map_err(|e| e.to_string())
        };
        assert_eq!(u("127.0.0.1:5672"), Ok(("127.0.0.1".into(), 5672)));
        assert_eq!(u("[::1]:5673"), Ok(("::1".into(), 5673)));
        assert_eq!(u("rabbit.local"), Ok(("rabbit.local".into(), 5672)));
        assert_eq!(u("::1"), Ok(("::1".into(), 5672)));
        assert_eq!(
            u("amqp://user:s3cret@broker:5673/%2f?heartbeat=5"),
            Ok(("broker".into(), 5673))
        );
        assert_eq!(
            u("amqp://guest:guest@[::1]/vhost"),
            Ok(("::1".into(), 5672))
        );
        assert_eq!(u("amqps://h"), Ok(("h".into(), 5671)));
        let e = u("amqp://user:s3cret@broker:99999/").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(u("host:0").is_err());
        assert_eq!(
            Upstream::parse("[::1]:1").map(|u| u.to_string()).ok(),
            Some("[::1]:1".into())
        );
    }
}
