//! Forwarding: the accept loop (a connection limit within the descriptor
//! budget, back-off on failed accepts), one task per connection that
//! connects upstream and pumps bytes both ways, TCP's half-close and reset
//! passed through (a reset only once the other side has every byte taken
//! before it, [`RESET_GRACE`]), and the drain on shutdown ([`run`],
//! [`ProxyConfig`]).
//! Bytes are written before their copy is offered to the trace channel.
//! Either side may be TLS ([`super::tls`]): the handshakes happen here,
//! before the first byte is forwarded, and only plaintext is forwarded and
//! traced.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::socket::{unacknowledged, Socket};
use super::tls::ListenTls;
use super::{ConnInfo, TraceKind, TraceMsg, TraceTx, Upstream};
use crate::event::{Dir, Timestamp};

/// Bytes read per direction at a time; the per-connection memory is two of these.
pub const BUF_SIZE: usize = 32 * 1024;
/// How long an upstream connect may take before the client is closed; and
/// a TLS handshake, on either side.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long is reported (`TraceKind::WriteStalled`):
/// peers on a working connection take bytes within milliseconds.
pub const WRITE_STALL: Duration = Duration::from_secs(1);
/// When one side of a connection fails, the proxy goes on handing the other
/// side what it already took (bytes the failed side sent before failing,
/// bytes still in the kernel's send queue) before it resets that side too:
/// as long as the receiver takes bytes, until it has taken none for this
/// long. A reset with zero linger discards unsent bytes, and a
/// direct peer would have had them before the reset.
pub const RESET_GRACE: Duration = Duration::from_secs(1);
/// How long the accept loop waits after a failed accept (EMFILE: out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The largest `max_connections` honoured (two 32 KiB buffers each, so 64 GiB
/// of buffers); larger values are clamped. Keeps the permit count within the
/// `u32` that `Semaphore::acquire_many` takes.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// Settings of one proxy run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstream: Upstream,
    /// TLS towards the clients (`--listen-tls`): every client must handshake first.
    pub listen_tls: Option<Arc<ListenTls>>,
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
        trace.counters().connections.fetch_add(1, Ordering::Relaxed);
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
    let client = match &cfg.listen_tls {
        None => Socket::Plain(client),
        Some(tls) => match tokio::time::timeout(CONNECT_TIMEOUT, tls.accept(client)).await {
            Ok(Ok(s)) => Socket::from(s),
            // Nothing AMQP came through: not a connection of the timeline.
            Ok(Err(e)) => {
                tracing::warn!("{client_addr}: TLS handshake failed: {e}; client closed");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "{client_addr}: no TLS handshake within {} s; client closed",
                    CONNECT_TIMEOUT.as_secs()
                );
                return;
            }
        },
    };
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
            let _ = client.tcp().set_zero_linger();
            drop(client);
            trace
                .control(TraceMsg::now(
                    &info,
                    Dir::S2C,
                    TraceKind::UpstreamFailed { error },
                ))
                .await;
            trace
                .control(TraceMsg::now(&info, Dir::S2C, TraceKind::Closed))
                .await;
            return;
        }
    };
    let info = Arc::new(ConnInfo {
        id,
        client: client_addr,
        listen,
        upstream_local: upstream.tcp().local_addr().ok(),
        upstream: upstream_addr,
    });
    trace.try_control(TraceMsg::now(&info, Dir::C2S, TraceKind::Open));
    let mut client = client;
    let mut upstream = upstream;
    let sides = Sides::default();
    // The side that did not fail, when the side sending `failed` did: the
    // one the proxy goes on writing to before it resets it.
    let fds = (client.tcp().as_raw_fd(), upstream.tcp().as_raw_fd());
    let survivor = |failed: Dir| match failed {
        Dir::S2C => fds.0,
        Dir::C2S => fds.1,
    };
    let failure = {
        let (mut cr, mut cw) = client.halves();
        let (mut ur, mut uw) = upstream.halves();
        let c2s = pump(&mut cr, &mut uw, Dir::C2S, &info, trace, &sides);
        let s2c = pump(&mut ur, &mut cw, Dir::S2C, &info, trace, &sides);
        tokio::pin!(c2s, s2c);
        let (mut c2s_done, mut s2c_done) = (false, false);
        let mut failure: Option<(Dir, Outcome)> = None;
        while !(c2s_done && s2c_done) && failure.is_none() {
            tokio::select! {
                r = &mut c2s, if !c2s_done => {
                    c2s_done = true;
                    if !matches!(r, Outcome::Eof) { failure = Some((Dir::C2S, r)); sides.failed.store(true, Ordering::Relaxed); }
                }
                r = &mut s2c, if !s2c_done => {
                    s2c_done = true;
                    if !matches!(r, Outcome::Eof) { failure = Some((Dir::S2C, r)); sides.failed.store(true, Ordering::Relaxed); }
                }
                _ = stop_rx.wait_for(|s| *s) => {
                    break;
                }
            }
        }
        // A side that failed on a write may have sent bytes before failing:
        // the other direction reads them from it and hands them on, until
        // its own end or error, as long as it moves bytes.
        if let Some((dir, outcome @ Outcome::WriteFailed(_))) = &failure {
            let rest = async {
                match dir {
                    Dir::C2S if !s2c_done => Some((&mut s2c).await),
                    Dir::S2C if !c2s_done => Some((&mut c2s).await),
                    _ => None,
                }
            };
            let receiver = survivor(failed_side(*dir, outcome));
            while_moving(id, rest, receiver, &sides.forwarded).await;
        }
        failure
    };
    if let Some((pump_dir, outcome)) = failure {
        let failed_dir = failed_side(pump_dir, &outcome);
        let error = match outcome {
            Outcome::ReadFailed(e) | Outcome::WriteFailed(e) => e,
            Outcome::Eof => io::Error::other("eof"),
        };
        tracing::debug!(
            conn = id,
            ?pump_dir,
            ?failed_dir,
            "connection reset: {error}"
        );
        // Reset the other side so that it sees what a direct peer would have
        // seen: every byte forwarded, then the reset.
        let receiver = survivor(failed_dir);
        let acknowledged = async {
            while unacknowledged(receiver).is_some_and(|n| n > 0) {
                tokio::time::sleep(PROGRESS_TICK).await;
            }
        };
        while_moving(id, acknowledged, receiver, &sides.forwarded).await;
        let _ = client.tcp().set_zero_linger();
        let _ = upstream.tcp().set_zero_linger();
        drop(client);
        drop(upstream);
        trace
            .control(TraceMsg::now(
                &info,
                failed_dir,
                TraceKind::Reset {
                    error: error.to_string(),
                },
            ))
            .await;
    } else {
        drop(client);
        drop(upstream);
    }
    trace
        .control(TraceMsg::now(&info, Dir::C2S, TraceKind::Closed))
        .await;
}

/// What the two directions of one connection tell each other.
#[derive(Default)]
struct Sides {
    /// A direction failed: the other passes no FIN on (the failed side's
    /// end is a reset, which follows).
    failed: AtomicBool,
    /// Bytes forwarded both ways so far: how the wait after a failure sees
    /// the other direction still at work.
    forwarded: AtomicU64,
}

/// Which side failed, as the direction it sends: a read error is the
/// sender's, a write error the receiver's.
fn failed_side(pump_dir: Dir, outcome: &Outcome) -> Dir {
    match outcome {
        Outcome::WriteFailed(_) => pump_dir.reverse(),
        Outcome::ReadFailed(_) | Outcome::Eof => pump_dir,
    }
}

/// How often [`while_moving`] looks at the bytes moving.
const PROGRESS_TICK: Duration = Duration::from_millis(1);

/// Runs `work` (handing a `receiver` what the proxy holds for it) until it
/// is done or no byte has moved towards the receiver for [`RESET_GRACE`]:
/// none forwarded (`forwarded`, counted by the pumps) and none newly
/// acknowledged by it (its unacknowledged bytes at no new low). A writer
/// on a large send buffer waits for a third of it to drain, so forwarding
/// alone can pause for longer than the grace while the receiver reads.
async fn while_moving(
    conn: u64,
    work: impl std::future::Future,
    receiver: RawFd,
    forwarded: &AtomicU64,
) {
    tokio::pin!(work);
    let mut seen = (forwarded.load(Ordering::Relaxed), usize::MAX);
    let mut moved = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut work => return,
            _ = tokio::time::sleep(PROGRESS_TICK) => {}
        }
        let now = (
            forwarded.load(Ordering::Relaxed),
            unacknowledged(receiver).unwrap_or(0),
        );
        if now.0 != seen.0 || now.1 < seen.1 {
            seen = (now.0, now.1.min(seen.1));
            moved = tokio::time::Instant::now();
        } else if moved.elapsed() >= RESET_GRACE {
            tracing::debug!(
                conn,
                "no byte moved for {RESET_GRACE:?}, {} unacknowledged: reset",
                now.1
            );
            return;
        }
    }
}

/// Connects to the first address of the upstream that answers, then
/// handshakes TLS with it when the upstream is `amqps`.
async fn connect_upstream(
    up: &Upstream,
) -> Result<(Socket, SocketAddr), (Option<SocketAddr>, String)> {
    let addrs = up.resolve().await.map_err(|e| (None, e.to_string()))?;
    let mut last = String::new();
    for addr in &addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                let Some(tls) = &up.tls else {
                    return Ok((Socket::Plain(s), *addr));
                };
                // A broker whose certificate fails verification is not tried
                // at its next address: the same name fails the same way.
                let error = match tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(s)).await {
                    Ok(Ok(t)) => return Ok((Socket::from(t), *addr)),
                    Ok(Err(e)) => format!("TLS handshake with {addr}: {e}"),
                    Err(_) => format!(
                        "TLS handshake with {addr}: timed out after {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                };
                return Err((Some(*addr), error));
            }
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
/// their copy is offered to the tracer. An EOF after the other direction
/// failed (and with it the connection, [`Sides::failed`]) is not passed on.
async fn pump<R, W>(
    rd: &mut R,
    wr: &mut W,
    dir: Dir,
    info: &Arc<ConnInfo>,
    trace: &TraceTx,
    sides: &Sides,
) -> Outcome
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    let mut offset: u64 = 0;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) if sides.failed.load(Ordering::Relaxed) => return Outcome::Eof,
            Ok(0) => {
                // Half-close: pass the FIN on and keep the other direction going.
                let r = wr.shutdown().await;
                trace
                    .control(TraceMsg::now(info, dir, TraceKind::Fin { offset }))
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
        // TLS holds written bytes in its session until flushed (a no-op on TCP).
        let write = async {
            wr.write_all(&buf[..n]).await?;
            wr.flush().await
        };
        tokio::pin!(write);
        let written = match tokio::time::timeout(WRITE_STALL, &mut write).await {
            Ok(r) => r,
            Err(_) => {
                // The receiver stopped reading: said at the moment the bytes came,
                // and again when they go through.
                let stalled = TraceMsg {
                    ts,
                    ..TraceMsg::now(info, dir, TraceKind::WriteStalled)
                };
                trace.try_control(stalled);
                let r = write.await;
                if r.is_ok() {
                    trace.try_control(TraceMsg::now(info, dir, TraceKind::WriteResumed));
                }
                r
            }
        };
        if let Err(e) = written {
            return Outcome::WriteFailed(e);
        }
        trace
            .counters()
            .forwarded_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        trace.data(info, dir, ts, offset, &buf[..n]);
        offset += n as u64;
        sides.forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
}
