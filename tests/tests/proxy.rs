//! `amqptrace proxy` (and `capture -i`) against the real RabbitMQ on
//! 127.0.0.1:5672 (guest/guest) and against small TCP servers of the tests'
//! own. Every test runs its own proxy process on 127.0.0.1:0 and reads the
//! chosen port from its "listening on ADDR" line on stderr.
//!
//! `upstream_stopped_mid_run` stops and restarts the shared broker; it runs
//! only with `AMQPTRACE_DISRUPTIVE=1` (other developers' tests use the broker).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicQosOptions};
use lapin::{Connection, Consumer};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::util::{
    amqptrace, analyze, analyze_json, assert_client_closed, assert_same_debug, auto_delete_queue,
    connect, consume, deliveries, exclusive_queue, free_port, jsonl, next_delivery, publish,
    temp_dir, tshark_fields, unique, Capture, Launch, Proxy, BIN, BROKER, OUT, PCAP,
};

/// A proxy to `upstream` writing its timeline to a file ([`Proxy::output`]).
fn traced(upstream: &str, args: &[&str]) -> Proxy {
    Proxy::start(upstream, &[&["-o", OUT], args].concat())
}

fn method(v: &Value) -> &str {
    v["method"].as_str().unwrap_or("")
}

fn events<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| v["event"] == name).collect()
}

/// (dir, channel, method) of every AMQP frame, per client address.
fn method_sequences(
    all: &[Value],
    broker_port: u16,
) -> BTreeMap<String, Vec<(String, u64, String)>> {
    let mut m: BTreeMap<String, Vec<(String, u64, String)>> = BTreeMap::new();
    for v in all.iter().filter(|v| v["event"] == "frame") {
        let conn = v["conn"].as_str().unwrap();
        let (client, broker) = conn.split_once("->").unwrap();
        if !broker.ends_with(&format!(":{broker_port}")) {
            continue;
        }
        m.entry(client.to_string()).or_default().push((
            v["dir"].as_str().unwrap().to_string(),
            v["channel"].as_u64().unwrap_or(0),
            method(v).to_string(),
        ));
    }
    m
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Publish/consume/ack on several channels: two consumers on two queues with
/// prefetch, one publisher; bodies of many sizes (up to 200 KB, several
/// frames each) must come back byte for byte.
async fn workload(uri: &str, messages: usize) {
    let conn = connect(uri).await;
    let publisher = conn.create_channel().await.unwrap();
    let mut consumers = Vec::new();
    let mut queues = Vec::new();
    for i in 0..2 {
        let q = unique(&format!("proxy-wl{i}"));
        auto_delete_queue(&publisher, &q).await;
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let consumer = consume(&ch, &q, &format!("ctag-{i}")).await;
        let rx = deliveries(&consumer);
        consumers.push((ch, rx));
        queues.push(q);
    }
    let bodies: Vec<Vec<u8>> = (0..messages)
        .map(|i| random_bytes(i as u64 + 7, [10, 100, 5000, 200_000][i % 4]))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        publish(&publisher, &queues[i % 2], b).await;
    }
    for (k, (_, rx)) in consumers.iter_mut().enumerate() {
        let expected: Vec<&Vec<u8>> = bodies.iter().skip(k).step_by(2).collect();
        for want in expected {
            let d = next_delivery(rx, Duration::from_secs(30)).await;
            assert_eq!(&d.data, want, "body changed on its way through the proxy");
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    // The auto-delete queues go with their consumers (deleting them first
    // would cancel the consumers: consumer_cancelled_by_broker).
    conn.close(200, "OK".into()).await.unwrap();
}

/// A connection of its own consuming `queue` as `consumer_tag` with
/// `prefetch`: the connection, the consumer, and its deliveries.
async fn prefetch_consumer(
    uri: &str,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> (Connection, Consumer, UnboundedReceiver<Delivery>) {
    let conn = connect(uri).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = consume(&ch, queue, consumer_tag).await;
    let rx = deliveries(&consumer);
    (conn, consumer, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_through_proxy_timeline_and_verdicts() {
    let proxy = traced(BROKER, &["--format", "jsonl"]);
    workload(&proxy.uri(), 40).await;
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let all = jsonl(&s.out);
    let seq = method_sequences(&all, 5672);
    assert_eq!(seq.len(), 1, "one connection: {:?}", seq.keys());
    let frames = seq.values().next().unwrap();
    let count = |dir: &str, m: &str| {
        frames
            .iter()
            .filter(|(d, _, mm)| d == dir && mm == m)
            .count()
    };
    assert_eq!(count("c2s", "protocol-header"), 1);
    assert_eq!(count("s2c", "connection.start"), 1);
    assert_eq!(count("c2s", "basic.qos"), 2);
    assert_eq!(count("c2s", "basic.consume"), 2);
    assert_eq!(count("s2c", "basic.consume-ok"), 2);
    assert_eq!(count("c2s", "basic.publish"), 40);
    assert_eq!(count("s2c", "basic.deliver"), 40);
    assert_eq!(count("c2s", "basic.ack"), 40);
    assert_eq!(count("c2s", "connection.close"), 1);
    assert_eq!(count("s2c", "connection.close-ok"), 1);
    let channels: HashSet<u64> = frames.iter().map(|(_, c, _)| *c).collect();
    assert!(channels.len() >= 4, "channels 0..=3 used: {channels:?}");
    // Connection ids show the client's real address and the broker's.
    let conn = all[0]["conn"].as_str().unwrap();
    assert!(
        conn.starts_with("127.0.0.1:") && conn.ends_with("->127.0.0.1:5672"),
        "{conn}"
    );
    assert_eq!(events(&all, "tcp.open").len(), 1);
    assert!(all
        .iter()
        .all(|v| v["event"] != "error" && v["event"] != "gap"));
    let verdicts: Vec<&Value> = events(&all, "verdict");
    assert_eq!(
        verdicts.len(),
        3,
        "two consumers and one connection: {verdicts:?}"
    );
    assert!(
        verdicts.iter().all(|v| v["verdict"] == "healthy"),
        "{verdicts:?}"
    );
    assert!(
        s.stderr.contains("verdicts:"),
        "final block on stderr with jsonl: {}",
        s.stderr
    );
    assert!(!s.stderr.contains("dropped"), "{}", s.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    let proxy = traced(BROKER, &["--format", "jsonl", "--quiet"]);
    let uri = proxy.uri();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let conn = connect(&uri).await;
            let ch = conn.create_channel().await.unwrap();
            let q = exclusive_queue(&ch, "").await;
            publish(&ch, q.name().as_str(), b"hello").await;
            conn
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    // All 200 are open at once here.
    assert_eq!(conns.iter().filter(|c| c.status().connected()).count(), 200);
    for c in conns {
        c.close(200, "OK".into()).await.unwrap();
    }
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert!(!s.stderr.contains("dropped"), "{}", s.stderr);
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    // --quiet: only verdicts; one per connection, all healthy.
    let all = jsonl(&s.out);
    assert!(all.iter().all(|v| v["event"] == "verdict"));
    let conns: HashSet<&str> = all.iter().map(|v| v["conn"].as_str().unwrap()).collect();
    assert_eq!(conns.len(), 200);
    assert!(all.iter().all(|v| v["verdict"] == "healthy"), "{all:?}");
}

/// A server that records everything it receives and sends `reply` meanwhile.
fn recording_server(reply: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            for chunk in reply.chunks(50_000) {
                w.write_all(chunk).unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    });
    (addr, h)
}

#[test]
fn byte_exact_both_directions() {
    let to_server = random_bytes(1, 24 << 20);
    let to_client = random_bytes(2, 24 << 20);
    let (server, h) = recording_server(to_client.clone());
    let proxy = traced(&server.to_string(), &["--format", "jsonl", "--pcap", PCAP]);
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    let mut w = c.try_clone().unwrap();
    let sent = to_server.clone();
    let writer = std::thread::spawn(move || {
        // Odd write sizes so reads on the way split everywhere.
        let mut pos = 0;
        let mut k = 1usize;
        while pos < sent.len() {
            let n = (k * 7919 % 70_000 + 1).min(sent.len() - pos);
            w.write_all(&sent[pos..pos + n]).unwrap();
            pos += n;
            k += 1;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    let server_got = h.join().unwrap();
    assert!(
        server_got == to_server,
        "client→server bytes differ ({} vs {} bytes)",
        server_got.len(),
        to_server.len()
    );
    assert!(
        got == to_client,
        "server→client bytes differ ({} vs {} bytes)",
        got.len(),
        to_client.len()
    );
    let s = proxy.stop();
    // Not AMQP: reported, and forwarded untouched all the same.
    assert!(
        s.out.contains("not_amqp"),
        "{}",
        &s.out[..s.out.len().min(2000)]
    );
    assert!(!s.stderr.contains("dropped"), "{}", s.stderr);
    // The analyzer cannot vouch for a connection it could not decode: not "no stall".
    assert_eq!(s.code, Some(1), "{}", s.stderr);
}

#[test]
fn http_request_forwarded_untouched_and_reported_not_amqp() {
    let response =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec();
    let (server, h) = recording_server(response.clone());
    let proxy = traced(&server.to_string(), &[]);
    let request = b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.write_all(request).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, response);
    assert_eq!(h.join().unwrap(), request);
    let s = proxy.stop();
    assert!(s.out.contains("not AMQP: stream starts with"), "{}", s.out);
    assert!(s.out.contains("GET /api"), "{}", s.out);
    assert_eq!(s.code, Some(1), "{}", s.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcapng_reanalysed_matches_live_timeline() {
    let proxy = traced(BROKER, &["--format", "jsonl", "--pcap", PCAP]);
    let listen_port = proxy.addr.port();
    workload(&proxy.uri(), 24).await;
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let kept = s.pcap.clone();
    assert!(s.dir.path().exists());
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let live = method_sequences(&jsonl(&s.out), 5672);
    let analyzed = analyze("jsonl", &kept);
    assert_eq!(analyzed.code, Some(0), "{}", analyzed.context());
    let recorded = jsonl(&analyzed.stdout);
    // One connection, not two: the recording's legs are paired, and the
    // connection is named as the live proxy names it (the client's address,
    // the broker's), so live and offline timelines are the same.
    let front = method_sequences(&recorded, listen_port);
    let back = method_sequences(&recorded, 5672);
    assert_eq!(live.len(), 1);
    assert!(
        front.is_empty(),
        "the client leg is read once, as the broker leg"
    );
    assert_same_debug("the recording vs the live timeline", &live, &back);
    let publishes = recorded
        .iter()
        .filter(|v| v["event"] == "frame" && method(v) == "basic.publish")
        .count();
    assert_eq!(publishes, 24, "each publish once");
    // tshark reads it too, as AMQP on both legs.
    let t = tshark_fields(
        &kept,
        Some(listen_port),
        "amqp",
        &["amqp.method.class", "amqp.method.method"],
    );
    {
        // One line per packet; several frames in a packet give comma-separated lists.
        let mut delivers = 0;
        for line in t.lines() {
            let (classes, methods) = line.split_once('\t').unwrap_or((line, ""));
            delivers += classes
                .split(',')
                .zip(methods.split(','))
                .filter(|p| *p == ("60", "60"))
                .count();
        }
        assert_eq!(
            delivers,
            2 * 24,
            "tshark finds every basic.deliver on both legs"
        );
    }
    // And the re-analysis gives the same verdicts, each connection and consumer once.
    let doc = analyze_json(&kept);
    assert_eq!(
        doc["connections"].as_array().map(Vec::len),
        Some(1),
        "{doc:#}"
    );
    assert_eq!(
        doc["consumers"].as_array().map(Vec::len),
        Some(2),
        "{doc:#}"
    );
    let verdicts = doc["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 3);
    assert!(
        verdicts.iter().all(|v| v["verdict"] == "healthy"),
        "{verdicts:?}"
    );
}

/// `--stall-after` sets the live time threshold: a lone consumer's full window,
/// with nothing in the traffic to compare it with, is certain after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_after_sets_the_live_threshold_of_a_lone_full_window() {
    let proxy = traced(BROKER, &["--format", "jsonl", "--stall-after", "3"]);
    let conn = connect(&proxy.uri()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = unique("proxy-stall");
    auto_delete_queue(&ch, &q).await;
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let consumer = consume(&ch, &q, "stuck").await;
    let mut rx = deliveries(&consumer);
    for i in 0..10u8 {
        publish(&ch, &q, &[i; 10]).await;
    }
    for _ in 0..5 {
        next_delivery(&mut rx, Duration::from_secs(10)).await;
    }
    // The fifth delivery filled the window; never ack.
    let t0 = Instant::now();
    let proxy = Arc::new(proxy);
    let p2 = proxy.clone();
    let line = tokio::task::spawn_blocking(move || {
        p2.wait_for_line(Duration::from_secs(8), |l| {
            l.contains("\"verdict\":\"prefetch_exhausted\"")
        })
    })
    .await
    .unwrap();
    let elapsed = t0.elapsed();
    let line =
        line.unwrap_or_else(|| panic!("no live prefetch_exhausted verdict: {}", proxy.output()));
    assert!(
        elapsed <= Duration::from_secs(5),
        "reported after {elapsed:?} (stall-after 3 s + 2 s)"
    );
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["live"], true);
    assert_eq!(v["consumer_tag"], "stuck");
    assert_eq!(v["queue"], q.as_str());
    // Stopping while the consumer still holds its window: exit code "stall found".
    let proxy = Arc::try_unwrap(proxy).ok().unwrap();
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert_eq!(s.code, Some(1), "{}", s.stderr);
    // The proxy's own shutdown is not the client's doing: the final block still
    // shows the state at shutdown.
    assert!(s.stderr.contains("prefetch_exhausted"), "{}", s.stderr);
    // The live verdict was printed once, not on every tick.
    let live = jsonl(&s.out)
        .into_iter()
        .filter(|v| {
            v["event"] == "verdict" && v["live"] == true && v["verdict"] == "prefetch_exhausted"
        })
        .count();
    assert_eq!(live, 1);
    drop(conn);
}

#[test]
fn upstream_down_at_start_closes_client_and_reports() {
    let port = free_port();
    let proxy = traced(&format!("127.0.0.1:{port}"), &[]);
    let t0 = Instant::now();
    assert_client_closed(
        proxy.addr,
        Duration::from_secs(5),
        "when the upstream is down",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        t0.elapsed()
    );
    let out = proxy.wait_for_line(Duration::from_secs(3), |l| {
        l.contains("upstream unreachable")
    });
    assert!(
        out.is_some_and(|l| l.contains("Connection refused")),
        "{}",
        proxy.output()
    );
    let s = proxy.stop();
    assert!(
        s.stderr.contains("upstream unreachable") && s.stderr.contains("os error 111"),
        "{}",
        s.stderr
    );
    assert_eq!(s.code, Some(0));
}

#[test]
fn credentials_in_upstream_url_never_printed() {
    let secret = "Sup3rS3cretPw";
    let proxy = traced(
        &format!("amqp://guest:{secret}@127.0.0.1:5672/%2f"),
        &["--format", "jsonl"],
    );
    assert!(
        proxy.stderr().contains("forwarding to 127.0.0.1:5672"),
        "{}",
        proxy.stderr()
    );
    let s = proxy.stop();
    assert!(
        !s.stderr.contains(secret) && !s.out.contains(secret),
        "{}{}",
        s.stderr,
        s.out
    );
    // A bad URL is refused without echoing the password either.
    let bad = amqptrace([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("amqp://guest:{secret}@127.0.0.1:99999/"),
    ]);
    assert_eq!(bad.code, Some(2));
    let text = format!("{}{}", bad.stdout, bad.stderr);
    assert!(text.contains("port") && !text.contains(secret), "{text}");
}

/// Run as a child process by `client_killed_with_sigkill`: connects through
/// the proxy given in the environment, opens a channel, says so, and waits.
#[tokio::test]
async fn sigkill_helper_client() {
    let Ok(uri) = std::env::var("AMQPTRACE_TEST_HELPER_URI") else {
        return;
    };
    let conn = connect(&uri).await;
    let ch = conn.create_channel().await.unwrap();
    let q = exclusive_queue(&ch, "").await;
    let _consumer = consume(&ch, q.name().as_str(), "doomed").await;
    println!("HELPER READY");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn client_killed_with_sigkill() {
    let proxy = traced(BROKER, &["--format", "jsonl"]);
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "proxy::sigkill_helper_client",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("AMQPTRACE_TEST_HELPER_URI", proxy.uri())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.contains("HELPER READY")));
    assert!(ready, "helper did not connect");
    assert!(proxy
        .wait_for_line(Duration::from_secs(5), |l| l.contains("basic.consume-ok"))
        .is_some());
    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();
    // The kernel closes the killed process's socket (FIN, or RST with unread data).
    let end = proxy.wait_for_line(Duration::from_secs(5), |l| {
        (l.contains("\"tcp.close\"") || l.contains("\"tcp.reset\"")) && l.contains("\"c2s\"")
    });
    assert!(end.is_some(), "{}", proxy.output());
    // The proxy goes on serving.
    crate::util::runtime().block_on(async {
        let conn = connect(&proxy.uri()).await;
        conn.close(200, "OK".into()).await.unwrap();
    });
    let s = proxy.stop();
    let all = jsonl(&s.out);
    assert_eq!(events(&all, "tcp.open").len(), 2);
    // The killed client's connection ended without connection.close: connection_lost.
    assert!(
        all.iter()
            .any(|v| v["event"] == "verdict" && v["verdict"] == "connection_lost"),
        "{}",
        s.out
    );
}

#[test]
fn sigterm_drains_live_connections_then_exits() {
    // An echo server: the connection stays usable during the drain.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let proxy = traced(&addr.to_string(), &["--drain", "2"]);
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    proxy.signal("-TERM");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // New clients are refused, the live one still works.
    assert!(
        TcpStream::connect(proxy.addr).is_err(),
        "still accepting after SIGTERM"
    );
    c.write_all(b"pong").unwrap();
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    // After the drain the proxy closes it.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let closed = t0.elapsed();
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_secs(5),
        "closed after {closed:?}"
    );
    let s = proxy.stop_with("-0");
    assert_eq!(s.code, Some(1), "not AMQP: not vouched for; {}", s.stderr);
    assert!(s.out.contains("verdicts:"), "{}", s.out);
}

/// Restarts the broker's app on drop, even when the test fails.
struct StartAppGuard;

impl Drop for StartAppGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        let _ = Command::new("rabbitmqctl").arg("await_startup").status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stopped_mid_run() {
    if std::env::var("AMQPTRACE_DISRUPTIVE").ok().as_deref() != Some("1") {
        eprintln!("skipped: stops the shared broker; run with AMQPTRACE_DISRUPTIVE=1");
        return;
    }
    let proxy = traced(BROKER, &["--format", "jsonl"]);
    let conn = connect(&proxy.uri()).await;
    let _ch = conn.create_channel().await.unwrap();
    let guard = StartAppGuard;
    assert!(Command::new("rabbitmqctl")
        .arg("stop_app")
        .status()
        .unwrap()
        .success());
    let p = Arc::new(proxy);
    let p2 = p.clone();
    let forced = tokio::task::spawn_blocking(move || {
        p2.wait_for_line(Duration::from_secs(15), |l| {
            l.contains("connection.close") && l.contains("\"s2c\"")
        })
    })
    .await
    .unwrap();
    let forced = forced.unwrap_or_else(|| panic!("{}", p.output()));
    assert!(forced.contains("320"), "{forced}");
    // While the broker is down, new clients are closed and reported.
    let mut c = TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    let _ = c.read(&mut b);
    drop(guard);
    assert!(
        p.stderr().contains("upstream unreachable"),
        "{}",
        p.stderr()
    );
    // Back up: the proxy serves again.
    let conn = connect(&p.uri()).await;
    conn.close(200, "OK".into()).await.unwrap();
    let proxy = Arc::try_unwrap(p).ok().unwrap();
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let all = jsonl(&s.out);
    assert!(
        all.iter()
            .any(|v| v["event"] == "verdict" && v["verdict"] == "connection_closed_by_broker"),
        "{}",
        s.out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_on_lo_sees_same_frames_as_proxy() {
    let proxy = traced(BROKER, &["--format", "jsonl"]);
    let dir = temp_dir();
    let cap_out = dir.path().join("capture.jsonl");
    // The client leg (client → proxy port): the same bytes the proxy traces.
    let cap = Capture::start(&[
        "--port",
        &proxy.addr.port().to_string(),
        "--format",
        "jsonl",
        "-o",
        cap_out.to_str().unwrap(),
    ]);
    workload(&proxy.uri(), 12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let port = proxy.addr.port();
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    let (code, err) = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .unwrap();
    assert!(code.is_some_and(|c| c <= 1), "{err}");
    assert!(!err.contains("dropped"), "{err}");
    let captured = method_sequences(&jsonl(&std::fs::read_to_string(&cap_out).unwrap()), port);
    let live = method_sequences(&jsonl(&s.out), 5672);
    assert_eq!(live.len(), 1);
    // Per direction: the order across directions is the order two observers
    // saw them in (the wire vs the proxy's reads), which may differ by a frame.
    let by_dir = |m: &BTreeMap<String, Vec<(String, u64, String)>>| {
        let mut out = BTreeMap::new();
        for (client, frames) in m {
            for (d, ch, meth) in frames {
                out.entry((client.clone(), d.clone()))
                    .or_insert_with(Vec::new)
                    .push((*ch, meth.clone()));
            }
        }
        out
    };
    assert_same_debug(
        "capture -i lo vs the proxy's live timeline",
        &by_dir(&live),
        &by_dir(&captured),
    );
}

/// Runs a 24 MiB each-way transfer through `proxy` (already listening on
/// `addr`) to `recording_server`, and checks both directions byte for byte.
fn transfer_through(addr: SocketAddr, server: std::thread::JoinHandle<Vec<u8>>, to_client: &[u8]) {
    let to_server = random_bytes(3, 24 << 20);
    let mut c = TcpStream::connect(addr).unwrap();
    let mut w = c.try_clone().unwrap();
    let sent = to_server.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(
        server.join().unwrap() == to_server,
        "client→server bytes differ"
    );
    assert!(got == to_client, "server→client bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sink_drops_trace_events_never_bytes() {
    // Standard output is a pipe nobody reads: the tracer blocks once the pipe
    // is full, the (small) trace queue fills, and only trace events are lost;
    // the workload checks every body byte for byte.
    let how = Launch {
        unread_stdout: true,
        ..Launch::default()
    };
    let mut proxy = Proxy::launch(BROKER, &["-v", "--trace-queue", "32"], how);
    let t0 = Instant::now();
    workload(&proxy.uri(), 200).await;
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "forwarding slowed down: {:?}",
        t0.elapsed()
    );
    let mut out = proxy.take_stdout();
    let drain = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let rest = tokio::task::spawn_blocking(move || proxy.stop().stderr)
        .await
        .unwrap();
    let _ = drain.join();
    assert!(rest.contains("trace events dropped"), "{rest}");
    assert!(rest.contains("forwarding was not affected"), "{rest}");
}

#[test]
fn full_output_disk_never_affects_forwarding() {
    let to_client = random_bytes(5, 24 << 20);
    let (server, h) = recording_server(to_client.clone());
    let proxy = Proxy::start(
        &server.to_string(),
        &["-o", "/dev/full", "--pcap", "/dev/full"],
    );
    transfer_through(proxy.addr, h, &to_client);
    let rest = proxy.stop().stderr;
    assert!(
        rest.contains("No space left on device"),
        "the failure is reported: {rest}"
    );
}

#[test]
fn capture_without_rights_says_so() {
    // As the unprivileged user `nobody` (skipped where it cannot be used).
    let Ok(out) = Command::new("su")
        .args([
            "nobody",
            "-s",
            "/bin/sh",
            "-c",
            &format!("{BIN} capture -i lo"),
        ])
        .output()
    else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && !err.contains("cannot capture") {
        return; // the binary is not reachable for `nobody` here
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot capture on lo") && err.contains("CAP_NET_RAW"),
        "{err}"
    );
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as amqptrace writes
/// them ("2026-12-01T09:25:47.390801Z").
fn rfc3339_secs(ts: &str) -> f64 {
    fn bad(ts: &str) -> ! {
        panic!("timestamp {ts:?}")
    }
    let (date, time) = ts
        .strip_suffix('Z')
        .and_then(|t| t.split_once('T'))
        .unwrap_or_else(|| bad(ts));
    let num = |s: &str| s.parse::<i64>().unwrap_or_else(|_| bad(ts));
    let d: Vec<i64> = date.split('-').map(num).collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        bad(ts);
    }
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs: f64 = t[2].parse().unwrap_or_else(|_| bad(ts));
    (days * 86_400 + num(t[0]) * 3_600 + num(t[1]) * 60) as f64 + secs
}

#[test]
fn rfc3339_secs_reads_amqptrace_timestamps() {
    // Values from Python's datetime(..., tzinfo=timezone.utc).timestamp().
    assert!((rfc3339_secs("2026-12-01T09:25:47.390801Z") - 1_796_117_147.390_801).abs() < 1e-6);
    assert_eq!(rfc3339_secs("2024-02-29T23:59:59Z"), 1_709_251_199.0);
    assert_eq!(rfc3339_secs("1970-01-01T00:00:00.5Z"), 0.5);
}

/// Issue 11: with default options (no --stall-after), a full prefetch window while
/// a peer on the same queue keeps settling is reported live within 5 s of the
/// window filling. Judged on the proxy's own timestamps (the verdict line's `at`
/// against the delivery that filled the window), not on the test's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_window_beside_a_settling_peer_reported_live_within_5_s() {
    let proxy = traced(BROKER, &["--format", "jsonl"]);
    let q = unique("proxy-peer-stall");
    let publisher_conn = connect(&proxy.uri()).await;
    let publisher = publisher_conn.create_channel().await.unwrap();
    auto_delete_queue(&publisher, &q).await;
    let send = |i: u32| {
        let publisher = publisher.clone();
        let q = q.clone();
        async move {
            publish(&publisher, &q, &i.to_be_bytes()).await;
        }
    };
    // The stuck consumer takes 3 and never settles.
    let (stuck_conn, _stuck, mut stuck_rx) = prefetch_consumer(&proxy.uri(), &q, "stuck", 3).await;
    for i in 0..3 {
        send(i).await;
    }
    for _ in 0..3 {
        next_delivery(&mut stuck_rx, Duration::from_secs(10)).await;
    }
    // The peer on the same queue settles everything that comes.
    let (peer_conn, peer, mut peer_rx) = prefetch_consumer(&proxy.uri(), &q, "peer", 3).await;
    let acker = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(d) = peer_rx.recv().await {
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
            n += 1;
        }
        n
    });
    // Traffic flows past the full window until the proxy says so (or 30 s).
    let is_verdict = |v: &Value| {
        v["event"] == "verdict"
            && v["live"] == true
            && v["verdict"] == "prefetch_exhausted"
            && v["consumer_tag"] == "stuck"
    };
    let mut verdict = None;
    for i in 3..300 {
        send(i).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        verdict = jsonl(&proxy.output()).into_iter().find(|v| is_verdict(v));
        if verdict.is_some() {
            break;
        }
    }
    let out = proxy.output();
    let verdict =
        verdict.unwrap_or_else(|| panic!("no live prefetch_exhausted on 'stuck' in 30 s:\n{out}"));
    let all = jsonl(&out);
    let fill = events(&all, "frame")
        .into_iter()
        .filter(|v| method(v) == "basic.deliver" && v["consumer_tag"] == "stuck")
        .nth(2)
        .unwrap_or_else(|| panic!("the stuck consumer's third delivery is not in the timeline"));
    let filled = rfc3339_secs(fill["ts"].as_str().unwrap());
    let reported = rfc3339_secs(verdict["at"].as_str().expect("the verdict's `at`"));
    assert!(
        reported >= filled && reported - filled <= 5.0,
        "the window filled at {} (frame {}), reported at {}: {:.2} s later\n{verdict:#}",
        fill["ts"],
        fill["frame"],
        verdict["at"],
        reported - filled
    );
    // The peer settled while the window stayed full: that is the evidence.
    let peer_acks_before = events(&all, "frame")
        .into_iter()
        .filter(|v| {
            method(v) == "basic.ack"
                && v["dir"] == "c2s"
                && v["ts"]
                    .as_str()
                    .map(rfc3339_secs)
                    .is_some_and(|t| t > filled && t <= reported)
        })
        .count();
    assert!(
        peer_acks_before > 0,
        "no peer settle before the verdict:\n{out}"
    );
    assert_eq!(verdict["queue"], q.as_str());
    drop(peer);
    peer_conn.close(200, "OK".into()).await.unwrap();
    assert!(acker.await.unwrap() > 0);
    stuck_conn.close(200, "OK".into()).await.unwrap();
    publisher_conn.close(200, "OK".into()).await.unwrap();
    let s = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert!(s.code.is_some(), "{}", s.stderr);
}

/// A TCP server (not AMQP) that accepts, reads nothing for `hold`, then reads
/// everything: a receiver that stops reading, as RabbitMQ does to a publisher
/// under a memory alarm (at the TCP level, which is all this test looks at).
fn server_that_stops_reading(hold: Duration) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        std::thread::sleep(hold);
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    (addr, h)
}

#[test]
fn writes_to_an_upstream_that_stops_reading_are_recorded_as_its_zero_window() {
    let (server, h) = server_that_stops_reading(Duration::from_secs(3));
    let proxy = traced(&server.to_string(), &["--format", "jsonl", "--pcap", PCAP]);
    let upstream_port = server.port();
    let listen_port = proxy.addr.port();
    // More than the socket buffers on the way hold: the proxy's write blocks.
    let to_server = random_bytes(4, 32 << 20);
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.write_all(&to_server).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(h.join().unwrap() == to_server, "client→server bytes differ");
    let s = proxy.stop();
    let zero = |port: u16| {
        tshark_fields(
            &s.pcap,
            None,
            &format!("tcp.analysis.zero_window && tcp.srcport == {port}"),
            &["frame.number"],
        )
        .lines()
        .count()
    };
    // The upstream's window on the back leg, the proxy's own on the client's leg.
    assert!(zero(upstream_port) >= 1, "no zero window from the upstream");
    assert!(
        zero(listen_port) >= 1,
        "no zero window from the proxy to the client"
    );
}
