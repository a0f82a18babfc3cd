//! `amqptrace proxy` under faults, against a private RabbitMQ node that this
//! test binary starts on its own ports, Erlang cookie and data directory (and
//! stops afterwards, also when a scenario fails): never the shared node on
//! 5672, which other tests use. The node is stopped and started again in the
//! middle, which nobody else may see.
//!
//! One `#[test]` runs every scenario in turn against one node, because
//! starting a node takes seconds and a static would never be dropped (so
//! never stopped). Each scenario starts its own proxy on 127.0.0.1:0.
//!
//! Oracles: tcpdump on loopback for "every forwarded byte is in --pcap",
//! /proc for the proxy's CPU time while it cannot accept, and the bytes a
//! direct connection to the broker receives for the half-close.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::BasicAckOptions;
use lapin::Connection;

use crate::util::{
    self, assert_client_closed, connect, consume, deliveries, exclusive_queue, next_delivery,
    publish, runtime, temp_dir, wait_until, Daemon, Launch, PrivateBroker as Broker, Proxy, OUT,
    PCAP, PROTOCOL_HEADER, RABBITMQ_SERVER,
};

/// `prefix... amqptrace proxy` to `upstream` (`prefix` e.g. prlimit), its
/// timeline in JSON Lines to a file and a --pcap recording.
fn start_proxy(prefix: &[&str], upstream: &str) -> Proxy {
    let args = ["--format", "jsonl", "-o", OUT, "--pcap", PCAP];
    Proxy::launch(
        upstream,
        &args,
        Launch {
            prefix,
            ..Launch::default()
        },
    )
}

/// User + system CPU seconds of process `pid` so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = rest[11].parse::<f64>().unwrap() + rest[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A tcpdump on loopback writing to a file: the oracle of what went over the wire.
struct Tcpdump {
    daemon: Daemon,
    file: PathBuf,
}

impl Tcpdump {
    fn start(dir: &Path, filter: &str) -> Tcpdump {
        let file = dir.join("wire.pcap");
        let mut cmd = Command::new("tcpdump");
        // Not --immediate-mode: it drops packets on a loaded machine.
        // Packets then reach the file when a ring block is retired, up to
        // a second (the buffer timeout) after they were taken.
        cmd.args(["-i", "lo", "-U", "-B", "16384", "-s", "0", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null());
        // tcpdump says "listening on lo" once its capture runs.
        let (daemon, _) = Daemon::spawn(&mut cmd, "listening on");
        Tcpdump { daemon, file }
    }

    fn stop(mut self) -> PathBuf {
        // Let the last packets reach the file (a loaded machine can leave
        // tcpdump behind), then stop it cleanly: SIGINT drops what it has
        // not taken yet. The file standing still for 2.5 s (past the 1 s
        // buffer timeout) means caught up.
        let len = || std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let mut last = len();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(2500));
            let now = len();
            if now == last {
                break;
            }
            last = now;
        }
        self.daemon.stop("-INT", Duration::from_secs(30));
        // An oracle that lost packets proves nothing.
        let stats = self.daemon.stderr();
        assert!(
            stats
                .lines()
                .any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump lost packets: {stats}"
        );
        self.file.clone()
    }
}

/// TCP payload bytes per direction (sender, receiver) in a capture. An
/// address pair used by two connections in turn (ports are reused) sums
/// both. With `retransmissions`, a segment seen again (same sequence number
/// and length: loopback retransmits too, under load) counts once; the
/// proxy's recording has none, and its synthetic sequence numbers repeat
/// across connections.
fn payload_bytes(path: &Path, retransmissions: bool) -> BTreeMap<(SocketAddr, SocketAddr), u64> {
    let mut seen: HashSet<(SocketAddr, SocketAddr, u32, usize)> = HashSet::new();
    let mut bytes = BTreeMap::new();
    util::for_each_tcp_segment(path, |_, seg| {
        let n = seg.payload.len();
        if n > 0 && (!retransmissions || seen.insert((seg.src, seg.dst, seg.seq, n))) {
            *bytes.entry((seg.src, seg.dst)).or_insert(0) += n as u64;
        }
    });
    bytes.retain(|_, n| *n > 0);
    bytes
}

/// One client's round: a server-named queue, 5 publishes to it, 5
/// deliveries acked. Returns the connection, left open.
async fn client_round(uri: String) -> Connection {
    let conn = connect(&uri).await;
    let ch = conn.create_channel().await.unwrap();
    let q = exclusive_queue(&ch, "").await;
    let q = q.name().as_str();
    for i in 0..5u8 {
        publish(&ch, q, &[i; 64]).await.await.unwrap();
    }
    let mut rx = deliveries(&consume(&ch, q, "faults").await);
    for _ in 0..5 {
        let d = next_delivery(&mut rx, Duration::from_secs(20)).await;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    conn
}

/// 50 lapin clients through the proxy; the broker stops (closing them all)
/// and starts again; 50 clients connect again through the same proxy, which
/// never stopped. While the broker is down, a new client is refused cleanly.
/// Every byte the proxy forwarded is in its --pcap, leg by leg and direction
/// by direction, as tcpdump saw it on the wire.
fn broker_restart_with_fifty_clients(broker: &Broker, rt: &tokio::runtime::Runtime) {
    let mut proxy = start_proxy(&[], &broker.addr());
    let wire_dir = temp_dir();
    let dump = Tcpdump::start(
        wire_dir.path(),
        &format!("tcp port {} or tcp port {}", broker.port, proxy.addr.port()),
    );
    let uri = proxy.uri();
    let round = |uri: &str| -> Vec<Connection> {
        rt.block_on(async {
            let tasks: Vec<_> = (0..50)
                .map(|_| tokio::spawn(client_round(uri.to_string())))
                .collect();
            let mut conns = Vec::new();
            for t in tasks {
                conns.push(t.await.unwrap());
            }
            conns
        })
    };
    let first = round(&uri);
    broker.stop();
    let closed = wait_until(Duration::from_secs(20), || {
        first.iter().all(|c| !c.status().connected())
    });
    assert!(closed, "clients still connected after the broker stopped");
    assert!(
        proxy.running(),
        "the proxy exited with the broker: {}",
        proxy.stderr()
    );

    // The upstream refuses connections: the client is closed at once, the
    // reason is printed, the proxy goes on.
    assert_client_closed(
        proxy.addr,
        Duration::from_secs(10),
        "while the upstream refuses",
    );
    let said = wait_until(Duration::from_secs(5), || {
        proxy.stderr().contains("upstream unreachable")
            && proxy.stderr().contains("Connection refused")
    });
    assert!(
        said,
        "no clear message for a refused upstream: {}",
        proxy.stderr()
    );
    assert!(proxy.running(), "{}", proxy.stderr());
    drop(first);

    broker.boot();
    let second = round(&uri);
    rt.block_on(async {
        for c in &second {
            c.close(200, "OK".into()).await.unwrap();
        }
    });
    drop(second);
    // The broker's closing of the first 50 is a stall each (exit 1): the
    // verdicts name it, once per connection of the first round.
    let proxy_port = proxy.addr.port();
    let stopped = proxy.stop();
    assert_eq!(stopped.code, Some(1), "{}", stopped.stderr);
    let closed_by_broker = stopped
        .stderr
        .lines()
        .filter(|l| {
            l.trim_start()
                .starts_with("connection_closed_by_broker  connection on")
        })
        .count();
    assert_eq!(closed_by_broker, 50, "{}", stopped.stderr);
    let wire_file = dump.stop();
    if std::env::var_os("FAULTS_KEEP").is_some() {
        let keep = std::env::temp_dir().join("amqptrace-faults-kept");
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&wire_file, keep.join("wire.pcap"));
        let _ = std::fs::copy(&stopped.pcap, keep.join("proxy.pcapng"));
        let _ = std::fs::write(keep.join("stderr"), &stopped.stderr);
        eprintln!("kept in {}", keep.display());
    }
    let wire = payload_bytes(&wire_file, true);
    let recorded = payload_bytes(&stopped.pcap, false);

    // Legs: client↔proxy (the proxy's listen port) and proxy↔broker.
    let probes = broker.probes.lock().unwrap().clone();
    let (mut legs, mut bytes, mut exact, mut unsent) = (0, 0, 0, 0);
    for (&(src, dst), &on_wire) in &wire {
        if probes.contains(&src) || probes.contains(&dst) {
            continue;
        }
        let in_pcap = recorded.get(&(src, dst)).copied().unwrap_or(0);
        let proxy_sends = src.port() == proxy_port || dst.port() == broker.port;
        if proxy_sends {
            // Forwarded = handed to the kernel, then recorded. The kernel
            // drops what is still unsent when the peer resets (a client's
            // close-ok to a broker that shut down): a small surplus.
            assert!(
                in_pcap >= on_wire && in_pcap - on_wire <= 64,
                "{src} -> {dst}: the proxy sent {on_wire} bytes on the wire, {in_pcap} in --pcap"
            );
            unsent += in_pcap - on_wire;
        } else {
            // Read by the proxy: recorded once written on; what could not
            // be written on (the other side gone) is not forwarded.
            assert!(
                in_pcap <= on_wire && on_wire - in_pcap <= 64,
                "{src} -> {dst}: {on_wire} bytes read from the wire, {in_pcap} in --pcap"
            );
        }
        exact += usize::from(in_pcap == on_wire);
        legs += 1;
        bytes += in_pcap;
    }
    // Almost every direction matches to the byte; only connections torn
    // down by the broker's shutdown may differ by their last small frame.
    assert!(
        exact + 5 >= legs,
        "only {exact} of {legs} directions match exactly"
    );
    for key in recorded.keys() {
        assert!(
            wire.contains_key(key),
            "{key:?} recorded but never on the wire"
        );
    }
    // 100 connections × 2 legs × 2 directions, and one refused client;
    // a client port reused in the second round merges two into one pair.
    assert!(legs >= 350, "{legs} directions on the wire");
    assert!(bytes > 100_000, "{bytes} bytes recorded");
    // The broker's closing of the first 50 is in the timeline.
    let forced = stopped
        .out
        .lines()
        .filter(|l| l.contains("\"connection.close\"") && l.contains("320"))
        .count();
    assert!(
        forced >= 50,
        "{forced} connection.close 320 in the timeline"
    );
    eprintln!(
        "broker restart: {legs} directions, {bytes} bytes recorded, {exact} exact, \
         {unsent} recorded bytes the kernel dropped unsent after a reset"
    );
}

/// A client that connects and sends nothing takes no more than a
/// connection: others are served meanwhile, and the broker's handshake
/// timeout (2 s here) closes it through the proxy. Its connection is in the
/// timeline, opened and reset by the broker.
fn silent_client(broker: &Broker, rt: &tokio::runtime::Runtime) {
    let mut proxy = start_proxy(&[], &broker.addr());
    let mut silent = TcpStream::connect(proxy.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let conn = rt.block_on(client_round(proxy.uri()));
    rt.block_on(conn.close(200, "OK".into())).unwrap();
    let mut got = Vec::new();
    let r = silent.read_to_end(&mut got);
    assert!(
        r.is_ok()
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the silent client was not closed by the broker: {r:?}"
    );
    assert!(proxy.running(), "{}", proxy.stderr());
    // RabbitMQ resets a connection whose handshake timed out: the one stall
    // of the run (exit 1), on the silent client's connection.
    let stopped = proxy.stop();
    assert_eq!(stopped.code, Some(1), "{}", stopped.stderr);
    let client = silent.local_addr().unwrap().to_string();
    assert!(
        stopped
            .stderr
            .lines()
            .any(|l| l.contains("connection_lost") && l.contains(&client)),
        "{}",
        stopped.stderr
    );
    let lines: Vec<String> = stopped
        .out
        .lines()
        .filter(|l| l.contains(&client))
        .map(String::from)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("tcp.open"))
            && lines
                .iter()
                .any(|l| l.contains("tcp.fin") || l.contains("tcp.reset")),
        "{lines:?}"
    );
}

/// A client that half-closes (shutdown write) after the protocol header
/// still receives what the broker sends afterwards (connection.start), then
/// the broker's FIN — exactly the bytes a direct connection receives.
fn half_close(broker: &Broker) {
    let half_closed_read = |addr: &str| -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(PROTOCOL_HEADER).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    let direct = half_closed_read(&broker.addr());
    assert!(
        direct.len() > 100 && direct[0] == 1,
        "the broker sent no connection.start to a half-closed client: {direct:?}"
    );
    let proxy = start_proxy(&[], &broker.addr());
    let proxied = half_closed_read(&proxy.addr.to_string());
    assert_eq!(
        proxied.len(),
        direct.len(),
        "bytes after the half-close differ"
    );
    assert!(proxied == direct, "bytes after the half-close differ");
    let stopped = proxy.stop();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr);
    // The recording has the client's FIN and the broker's bytes after it.
    let timeline = stopped.out;
    assert!(timeline.contains("connection.start"), "{timeline}");
}

/// A descriptor limit too low for `--max-connections` (`prlimit --nofile
/// 40`, default 4096 connections): the proxy says at start how many
/// connections it serves at once (two descriptors each), and clients past
/// that wait in the accept backlog instead of being accepted and reset for
/// EMFILE; waiting costs no CPU (seconds from /proc while 30 clients knock);
/// every one of them is served in turn.
fn out_of_file_descriptors(broker: &Broker) {
    let mut proxy = start_proxy(&["prlimit", "--nofile=40:40", "--"], &broker.addr());
    let said = wait_until(Duration::from_secs(5), || {
        proxy
            .stderr()
            .contains("serving at most 4 connections at once")
    });
    assert!(
        said,
        "no word about the descriptor limit: {}",
        proxy.stderr()
    );
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        c.write_all(PROTOCOL_HEADER).unwrap();
        clients.push(c);
    }
    let cpu0 = cpu_seconds(proxy.pid());
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_seconds(proxy.pid()) - cpu0;
    assert!(
        cpu < 0.5,
        "{cpu:.2} CPU s in 3 s with clients waiting for descriptors: a busy loop"
    );
    assert!(proxy.running(), "{}", proxy.stderr());
    // Each client gets connection.start once it is accepted; leaving frees its slot.
    for (i, mut c) in clients.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(1) => assert_eq!(b[0], 1, "client {i}: not a method frame"),
            // Served early: the broker's handshake timeout (2 s) closed it.
            Ok(0) => {}
            other => panic!("client {i}: {other:?}: {}", proxy.stderr()),
        }
    }
    let stderr = proxy.stderr();
    assert!(
        !stderr.contains("Too many open files"),
        "clients were accepted without descriptors to serve them:\n{stderr}"
    );
    proxy.stop();
}

#[test]
fn proxy_faults_against_a_private_rabbitmq() {
    if !Path::new(RABBITMQ_SERVER).exists() {
        panic!("{RABBITMQ_SERVER} missing: the fault tests need a RabbitMQ installation");
    }
    let rt = runtime();
    let t0 = Instant::now();
    let broker = Broker::start();
    eprintln!(
        "private RabbitMQ on {} up after {:?}",
        broker.addr(),
        t0.elapsed()
    );
    half_close(&broker);
    silent_client(&broker, &rt);
    out_of_file_descriptors(&broker);
    broker_restart_with_fifty_clients(&broker, &rt);
    eprintln!("all fault scenarios after {:?}", t0.elapsed());
}

/// Bytes a peer's socket has not had acknowledged yet (the proxy's own `TIOCOUTQ` reading).
fn unsent(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    amqptrace::source::proxy::socket::unacknowledged(s.as_raw_fd())
        .unwrap_or_else(|| panic!("TIOCOUTQ: {}", std::io::Error::last_os_error()))
}

/// A scripted fake broker, for a failure RabbitMQ cannot be made to produce
/// on cue: it sends 512 KiB to a client that reads nothing yet, gives the
/// proxy's kernel time to take what it will, then resets the connection.
/// Every byte the proxy took reaches the client before the reset does: the
/// proxy hands over what it holds before it resets the client's side (a
/// reset with zero linger discards a socket's unsent bytes). The proxy sees
/// the reset on reading from the broker.
#[test]
fn every_byte_taken_before_a_broker_reset_reaches_the_client() {
    broker_resets(512 << 10, false, Duration::ZERO);
}

/// As above, with more than the proxy's socket buffers hold (the proxy still
/// has the broker's bytes to read when the reset comes), and a client that
/// writes after the reset: the proxy sees the reset on writing to the broker,
/// and goes on reading what the broker sent before it.
#[test]
fn every_byte_taken_before_a_broker_reset_reaches_a_client_that_writes() {
    broker_resets(32 << 20, true, Duration::ZERO);
}

/// As above, with a client that reads slowly (16 KiB at a time, 20 ms
/// apart: several seconds for what the proxy holds): the proxy goes on as
/// long as it moves bytes, not for a fixed time.
#[test]
fn every_byte_taken_before_a_broker_reset_reaches_a_slow_client() {
    broker_resets(32 << 20, true, Duration::from_millis(20));
}

/// The mirror image: a client sends up to 32 MiB to a broker that reads
/// nothing yet, then resets; the scripted broker then reads every byte the
/// proxy took, then the reset.
#[test]
fn every_byte_taken_before_a_client_reset_reaches_the_broker() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    let proxy = Proxy::start(&upstream, &["--format", "jsonl", "-o", OUT]);
    let client = TcpStream::connect(proxy.addr).unwrap();
    let (broker, _) = listener.accept().unwrap();
    let (data, written, taken) = send_then_reset(client, 32 << 20);
    let (got, end) = read_to_end_or_error(broker, Duration::ZERO);
    assert_eq!(
        got.len(),
        taken,
        "the client sent {written} bytes, the proxy took {taken}, the broker got {} \
         before {end}; proxy stderr:\n{}",
        got.len(),
        proxy.stderr()
    );
    assert!(got == data[..taken], "the bytes differ from those sent");
    assert!(end.contains("reset"), "the broker saw {end}, not the reset");
}

fn broker_resets(sent: usize, client_writes: bool, client_pause: Duration) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    let proxy = Proxy::start(&upstream, &["--format", "jsonl", "-o", OUT]);
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    let (broker, _) = listener.accept().unwrap();
    let (data, written, taken) = send_then_reset(broker, sent);
    if client_writes {
        client.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (got, end) = read_to_end_or_error(client, client_pause);
    assert_eq!(
        got.len(),
        taken,
        "the fake broker sent {written} bytes, the proxy took {taken}, the client got {} \
         before {end}; proxy stderr:\n{}",
        got.len(),
        proxy.stderr()
    );
    assert!(got == data[..taken], "the bytes differ from those sent");
    assert!(end.contains("reset"), "the client saw {end}, not the reset");
}

/// Writes up to `sent` bytes to `peer` for at most 2 s, waits until the
/// proxy's side takes no more (nobody reads on the far side), then resets
/// (`SO_LINGER` 0: what was not taken is discarded). Returns the bytes, how
/// many were written, and how many the proxy's side had taken.
fn send_then_reset(mut peer: TcpStream, sent: usize) -> (Vec<u8>, usize, usize) {
    use std::os::fd::AsRawFd;
    peer.set_nonblocking(true).unwrap();
    let data: Vec<u8> = (0..sent).map(|i| (i % 251) as u8).collect();
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while written < sent && Instant::now() < deadline {
        match peer.write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("scripted peer write: {e}"),
        }
    }
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = unsent(&peer);
        if now == last || now == 0 {
            break;
        }
        last = now;
    }
    let taken = written - unsent(&peer);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid linger struct of its own size on an open descriptor.
    let r = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    drop(peer);
    assert!(taken > 64 << 10, "the proxy took only {taken} bytes");
    std::thread::sleep(Duration::from_millis(200));
    (data, written, taken)
}

/// Everything `s` reads until EOF or an error, and which ended it; with a
/// `pause`, 16 KiB at a time and the pause after each read.
fn read_to_end_or_error(mut s: TcpStream, pause: Duration) -> (Vec<u8>, String) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let size = if pause.is_zero() { 64 << 10 } else { 16 << 10 };
    let (mut got, mut buf) = (Vec::new(), vec![0u8; size]);
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.to_string(),
        }
        std::thread::sleep(pause);
    };
    (got, end)
}
