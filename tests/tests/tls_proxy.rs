//! `amqptrace proxy` and `amqptrace run` with TLS, against a private
//! RabbitMQ node with a TLS listener ([`PrivateBroker`], certificates made
//! by openssl for this run, a client certificate required; stopped
//! afterwards, also when a scenario fails; the node on 5672 is not used).
//!
//! Real clients: pika, speaking plain AMQP to `proxy --upstream amqps://`
//! (the proxy speaks TLS to the node), and pika speaking TLS to
//! `proxy --listen-tls`. The oracle is the same scenario over plain TCP
//! through the same proxy: per connection, the methods of the traced
//! timeline, and the verdicts, live and final, must be the same (ports,
//! times, queue names and consumer tags aside). The scenario is a prefetch
//! stall, judged live with default options.
//!
//! One `#[test]` runs every scenario against one node, as `faults` does:
//! starting a node takes seconds.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{
    amqptrace_run, assert_client_closed, python, temp_dir, unique, wait_until, Certs,
    PrivateBroker, PrivateBrokerOptions, Proxy, Stopped, OUT, PCAP,
};

const USER: &str = "amqptrace-tls";

/// The node's password: unique, so that its absence from every output proves something.
fn password() -> String {
    format!("tls-pw-{}", std::process::id())
}

/// A pika prefetch stall: a consumer with `basic.qos prefetch_count=3` on
/// queue argv[1] that never acknowledges, a publisher that sends it 5
/// messages and closes. Prints "window full" once 3 deliveries are in,
/// then holds the window: for argv[2] seconds and closes, or (argv[2] = 0)
/// until its connection goes. `AMQPTRACE_TEST_CA` set: TLS to the URL's
/// host, verified against that CA as `localhost`.
const STALL: &str = r#"
import os, sys, time, pika
url, queue, hold = os.environ['AMQP_URL'], sys.argv[1], float(sys.argv[2])
out = os.environ.get('AMQPTRACE_TEST_ENV_OUT')
if out:
    with open(out, 'w') as f:
        f.write(os.environ['AMQP_URL'] + '\n' + os.environ.get('SSLKEYLOGFILE', '') + '\n')
def connect(name):
    p = pika.URLParameters(url)
    p.client_properties = {'connection_name': name}
    ca = os.environ.get('AMQPTRACE_TEST_CA')
    if ca:
        import ssl
        p.ssl_options = pika.SSLOptions(ssl.create_default_context(cafile=ca), 'localhost')
    return pika.BlockingConnection(p)
consumer = connect('stall-consumer')
ch = consumer.channel()
ch.queue_declare(queue, auto_delete=True)
ch.basic_qos(prefetch_count=3)
got = []
ch.basic_consume(queue, lambda c, m, p, b: got.append(m.delivery_tag), consumer_tag='stuck')
publisher = connect('stall-publisher')
pch = publisher.channel()
for i in range(5):
    pch.basic_publish('', queue, b'message %d' % i)
publisher.close()
while len(got) < 3:
    consumer.process_data_events(time_limit=0.2)
print('window full', flush=True)
t0 = time.monotonic()
while hold == 0 or time.monotonic() - t0 < hold:
    consumer.process_data_events(time_limit=0.2)
consumer.close()
print('closed', flush=True)
"#;

/// The stall scenario with `AMQP_URL=url` (and `env`), holding the window until killed.
fn start_stall(url: &str, queue: &str, env: &[(&str, String)]) -> Child {
    Command::new(python())
        .args(["-c", STALL, queue, "0"])
        .env("AMQP_URL", url)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python runs")
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What a run must share with the same scenario over plain TCP: per
/// connection, in the order they opened, its methods (heartbeats aside:
/// their number is time's); and the verdicts, live and final, with the
/// connection as its index in that order.
#[derive(Debug, PartialEq)]
struct Traced {
    methods: Vec<Vec<String>>,
    live: Vec<String>,
    verdicts: Vec<String>,
}

fn traced(events: &[Value], queue: &str) -> Traced {
    let mut conns: Vec<String> = Vec::new();
    let mut methods: Vec<Vec<String>> = Vec::new();
    for e in events {
        let Some(conn) = e["conn"].as_str() else {
            continue;
        };
        if e["event"] == "verdict" {
            continue;
        }
        let i = match conns.iter().position(|c| c == conn) {
            Some(i) => i,
            None => {
                conns.push(conn.to_string());
                methods.push(Vec::new());
                conns.len() - 1
            }
        };
        if let Some(m) = e["method"].as_str().filter(|m| *m != "heartbeat") {
            methods[i].push(m.to_string());
        }
    }
    let verdict = |v: &Value| {
        let conn = v["conn"]
            .as_str()
            .and_then(|c| conns.iter().position(|k| k == c));
        format!(
            "{} {} conn#{conn:?} ch{} {} {} ours={}",
            v["verdict"].as_str().unwrap_or("?"),
            v["scope"].as_str().unwrap_or("?"),
            v["channel"],
            v["role"].as_str().unwrap_or("-"),
            v["certainty"].as_str().unwrap_or("-"),
            v["queue"] == queue,
        )
    };
    let verdicts_of = |live: bool| {
        let mut vs: Vec<String> = events
            .iter()
            .filter(|e| e["event"] == "verdict" && e["live"] == live)
            .map(verdict)
            .collect();
        vs.sort();
        vs
    };
    Traced {
        methods,
        live: verdicts_of(true),
        verdicts: verdicts_of(false),
    }
}

/// How one run of the scenario reaches the node.
struct Way<'a> {
    name: &'a str,
    /// `--upstream` and the proxy's other options.
    upstream: String,
    proxy_args: Vec<String>,
    /// The scenario speaks TLS to the proxy (verified against this CA).
    client_ca: Option<String>,
}

/// The scenario through `proxy` as `way` says: waits for its live
/// prefetch_exhausted verdict (default options), then stops the proxy
/// while the window is still full and returns what it traced.
fn through_proxy(way: &Way<'_>) -> (Traced, Stopped) {
    let mut args: Vec<&str> = vec!["--format", "jsonl", "-o", OUT, "--pcap", PCAP];
    args.extend(way.proxy_args.iter().map(String::as_str));
    let proxy = Proxy::start(&way.upstream, &args);
    let queue = unique(&format!("tls-{}", way.name));
    let scheme = if way.client_ca.is_some() {
        "amqps"
    } else {
        "amqp"
    };
    let url = format!("{scheme}://{USER}:{}@{}/%2F", password(), proxy.addr);
    let env: Vec<(&str, String)> = way
        .client_ca
        .iter()
        .map(|ca| ("AMQPTRACE_TEST_CA", ca.clone()))
        .collect();
    let mut client = start_stall(&url, &queue, &env);
    let t0 = Instant::now();
    let live = proxy.wait_for_line(Duration::from_secs(60), |l| {
        l.contains("\"event\":\"verdict\"") && l.contains("prefetch_exhausted")
    });
    if live.is_none() {
        let _ = client.kill();
    }
    assert!(
        live.is_some(),
        "{}: no live prefetch_exhausted after {:?}:\n{}\n{}",
        way.name,
        t0.elapsed(),
        proxy.stderr(),
        proxy.output()
    );
    // Stopped while the window is full: the final verdicts judge that
    // state, as a capture that ends here would (the client's end is not in it).
    let stopped = proxy.stop();
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(stopped.code, Some(1), "{}: {}", way.name, stopped.stderr);
    let t = traced(&jsonl(&stopped.out), &queue);
    (t, stopped)
}

/// No output of a run holds the node's password (or `secret`, a key log's).
fn assert_nowhere(what: &str, secret: &str, texts: &[(&str, &[u8])]) {
    for (name, bytes) in texts {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{what} in {name}");
    }
}

/// Plain TCP, TLS to the node, TLS from the client, TLS on both sides: the
/// same timeline and verdicts; the live verdict comes through every one.
fn same_as_plain(broker: &PrivateBroker, certs: &Certs) {
    let tls_port = broker.tls_port.unwrap();
    let amqps = format!("amqps://localhost:{tls_port}");
    let upstream_tls = vec![
        "--upstream-ca".to_string(),
        certs.arg("ca.pem"),
        "--upstream-cert".to_string(),
        certs.arg("client.pem"),
        "--upstream-key".to_string(),
        certs.arg("client.key"),
    ];
    let listen_tls = vec![
        "--listen-tls".to_string(),
        "--cert".to_string(),
        certs.arg("server.pem"),
        "--key".to_string(),
        certs.arg("server.key"),
    ];
    let ways = [
        Way {
            name: "plain",
            upstream: broker.addr(),
            proxy_args: vec![],
            client_ca: None,
        },
        Way {
            name: "upstream-tls",
            upstream: amqps.clone(),
            proxy_args: upstream_tls.clone(),
            client_ca: None,
        },
        Way {
            name: "listen-tls",
            upstream: broker.addr(),
            proxy_args: listen_tls.clone(),
            client_ca: Some(certs.arg("ca.pem")),
        },
        Way {
            name: "both-tls",
            upstream: amqps,
            proxy_args: [upstream_tls, listen_tls].concat(),
            client_ca: Some(certs.arg("ca.pem")),
        },
    ];
    let mut runs = Vec::new();
    for way in &ways {
        let (t, stopped) = through_proxy(way);
        let pcap = std::fs::read(&stopped.pcap).unwrap_or_default();
        assert_nowhere(
            "the node's password",
            &password(),
            &[
                ("stderr", stopped.stderr.as_bytes()),
                ("the timeline", stopped.out.as_bytes()),
                ("--pcap", &pcap),
            ],
        );
        if way.upstream.starts_with("amqps://") {
            assert!(
                stopped.stderr.contains("over TLS"),
                "{}: {}",
                way.name,
                stopped.stderr
            );
        }
        eprintln!("{}: {t:?}", way.name);
        runs.push((way.name, t, stopped));
    }
    let (_, plain, plain_stopped) = &runs[0];
    // The oracle itself shows the stall: the consumer's methods, its
    // window's three deliveries, the live verdict and the final one.
    let consumer = &plain.methods[0];
    for m in ["connection.start-ok", "basic.qos", "basic.consume-ok"] {
        assert!(consumer.contains(&m.to_string()), "{consumer:?}");
    }
    assert_eq!(
        consumer.iter().filter(|m| *m == "basic.deliver").count(),
        3,
        "{consumer:?}"
    );
    let full = |vs: &[String]| {
        vs.iter().any(|v| {
            v.starts_with("prefetch_exhausted consumer conn#Some(0)") && v.ends_with("ours=true")
        })
    };
    assert!(full(&plain.live), "{plain:?}\n{}", plain_stopped.out);
    assert!(full(&plain.verdicts), "{plain:?}\n{}", plain_stopped.out);
    for (name, t, stopped) in &runs[1..] {
        assert_eq!(t, plain, "{name} differs from plain TCP:\n{}", stopped.out);
    }
}

/// The broker's certificate is verified by default: against the system's
/// roots (which do not know the test CA) and against a CA that did not
/// sign it the client is closed and the reason said; a missing client
/// certificate is refused by the node; `--upstream-insecure` connects and
/// says on start that nothing is verified. A plain client to `--listen-tls`
/// is closed.
fn verification(broker: &PrivateBroker, certs: &Certs) {
    let tls_port = broker.tls_port.unwrap();
    let amqps = format!("amqps://localhost:{tls_port}");
    let client_cert = [
        "--upstream-cert",
        &certs.arg("client.pem"),
        "--upstream-key",
        &certs.arg("client.key"),
    ]
    .map(String::from);
    let cases: [(&str, Vec<String>, &str); 3] = [
        (
            "system roots",
            client_cert.to_vec(),
            "invalid peer certificate",
        ),
        (
            "another CA",
            [
                vec!["--upstream-ca".to_string(), certs.arg("other-ca.pem")],
                client_cert.to_vec(),
            ]
            .concat(),
            "invalid peer certificate",
        ),
        (
            "no client certificate",
            vec!["--upstream-ca".to_string(), certs.arg("ca.pem")],
            // TLS 1.3: the node refuses after the client's Finished, at the first read.
            "",
        ),
    ];
    for (name, args, said) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proxy = Proxy::start(&amqps, &args);
        assert_client_closed(proxy.addr, Duration::from_secs(15), name);
        if !said.is_empty() {
            let told = wait_until(Duration::from_secs(5), || {
                proxy.stderr().contains("upstream unreachable") && proxy.stderr().contains(said)
            });
            assert!(told, "{name}: {}", proxy.stderr());
        }
        let stopped = proxy.stop();
        assert!(
            !stopped.out.contains("connection.start"),
            "{name}: the node spoke AMQP: {}",
            stopped.out
        );
    }
    // Insecure: the other CA, accepted, and said on start.
    let args = [
        "--upstream-insecure",
        "--upstream-cert",
        &certs.arg("client.pem"),
        "--upstream-key",
        &certs.arg("client.key"),
    ];
    let proxy = Proxy::start(&amqps, &args);
    let warned = proxy
        .stderr()
        .lines()
        .any(|l| l.contains("WARNING") && l.contains("NOT verified"));
    assert!(warned, "{}", proxy.stderr());
    let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    std::io::Write::write_all(&mut s, crate::util::PROTOCOL_HEADER).unwrap();
    let mut b = [0u8; 1];
    let n = std::io::Read::read(&mut s, &mut b).unwrap_or(0);
    assert_eq!((n, b[0]), (1, 1), "no connection.start: {}", proxy.stderr());
    drop(s);
    proxy.stop();

    // A client that does not speak TLS to --listen-tls: closed, said, not traced.
    let args = [
        "--listen-tls",
        "--cert",
        &certs.arg("server.pem"),
        "--key",
        &certs.arg("server.key"),
        "--format",
        "jsonl",
        "-o",
        OUT,
    ];
    let proxy = Proxy::start(&broker.addr(), &args);
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    std::io::Write::write_all(&mut c, crate::util::PROTOCOL_HEADER).unwrap();
    let mut got = Vec::new();
    let end = std::io::Read::read_to_end(&mut c, &mut got);
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "plain AMQP to --listen-tls: not closed: {end:?}"
    );
    // At most a TLS alert record (content type 21), never an AMQP frame.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    let said = wait_until(Duration::from_secs(5), || {
        proxy.stderr().contains("TLS handshake failed")
    });
    assert!(said, "{}", proxy.stderr());
    let stopped = proxy.stop();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr);
    assert!(!stopped.out.contains("tcp.open"), "{}", stopped.out);
}

/// `run --upstream amqps://…?cacertfile=…&certfile=…&keyfile=…`: the command
/// gets `amqp://user:pass@127.0.0.1:PORT/%2F` with the other query options
/// and `SSLKEYLOGFILE` (--tls-keylog), the proxy's sessions' secrets land in
/// that file and nowhere else, the password in no artifact, and the
/// artifacts say what a plain run says.
fn run_with_amqps(broker: &PrivateBroker, certs: &Certs) {
    let tls_port = broker.tls_port.unwrap();
    let work = temp_dir();
    let keylog = work.path().join("keys.log");
    let env_out = work.path().join("child-env");
    let pw = password();
    let runs = [
        (
            "tls",
            format!(
                "amqps://{USER}:{pw}@localhost:{tls_port}/?heartbeat=30&cacertfile={}&certfile={}&keyfile={}&verify=verify_peer",
                certs.arg("ca.pem"),
                certs.arg("client.pem"),
                certs.arg("client.key"),
            ),
        ),
        ("plain", format!("amqp://{USER}:{pw}@{}/?heartbeat=30", broker.addr())),
    ];
    let mut seen = Vec::new();
    for (name, upstream) in &runs {
        let art = work.path().join(name);
        let queue = unique(&format!("tls-run-{name}"));
        let args = [
            "--upstream",
            upstream,
            "--tls-keylog",
            keylog.to_str().unwrap(),
            "--",
            "env",
            &format!("AMQPTRACE_TEST_ENV_OUT={}", env_out.display()),
            python().to_str().unwrap(),
            "-c",
            STALL,
            &queue,
            "6.5",
        ];
        let out = amqptrace_run(&art, &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        let child_env = std::fs::read_to_string(&env_out).unwrap();
        let mut lines = child_env.lines();
        let url = lines.next().unwrap_or_default();
        let prefix = format!("amqp://{USER}:{pw}@127.0.0.1:");
        assert!(url.starts_with(&prefix), "{name}: {url}");
        assert!(
            url.ends_with("/%2F?heartbeat=30"),
            "{name}: the child's URL {url}"
        );
        assert_eq!(
            lines.next(),
            Some(keylog.to_str().unwrap()),
            "{name}: SSLKEYLOGFILE"
        );
        let timeline = std::fs::read_to_string(art.join("timeline.jsonl")).unwrap();
        let mut t = traced(&jsonl(&timeline), &queue);
        let doc: Value =
            serde_json::from_slice(&std::fs::read(art.join("verdicts.json")).unwrap()).unwrap();
        t.verdicts = doc["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                format!(
                    "{} {} {}",
                    v["verdict"],
                    v["scope"],
                    v["queue"] == queue.as_str()
                )
            })
            .collect();
        t.verdicts.sort();
        let mut files: Vec<(String, Vec<u8>)> = vec![("stderr".into(), out.stderr.clone())];
        for e in std::fs::read_dir(&art).unwrap().flatten() {
            files.push((
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
        let texts: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        assert_nowhere("the node's password", &pw, &texts);
        if *name == "tls" {
            // The proxy's TLS 1.3 session to the node: its secrets, NSS format.
            let keys = std::fs::read_to_string(&keylog).unwrap();
            let secrets: Vec<&str> = keys
                .lines()
                .filter(|l| {
                    l.starts_with("CLIENT_TRAFFIC_SECRET_0 ") || l.starts_with("CLIENT_RANDOM ")
                })
                .filter_map(|l| l.split(' ').nth(2))
                .collect();
            assert!(secrets.len() >= 2, "{keys}");
            for s in &secrets {
                assert_nowhere("a key log secret", s, &texts);
            }
        }
        seen.push((name, t, stderr));
    }
    let (_, tls, tls_err) = &seen[0];
    let (_, plain, _) = &seen[1];
    assert_eq!(tls, plain, "run over amqps differs from plain: {tls_err}");
    assert!(
        tls.verdicts
            .iter()
            .any(|v| v == "\"prefetch_exhausted\" \"consumer\" true"),
        "{tls:?}"
    );
}

#[test]
fn tls_proxy_against_a_private_rabbitmq() {
    let t0 = Instant::now();
    let broker = PrivateBroker::start_with(PrivateBrokerOptions {
        name: "tls",
        tls: true,
        user: USER,
        password: &password(),
    });
    eprintln!(
        "private RabbitMQ on {} and TLS {:?} up after {:?}",
        broker.addr(),
        broker.tls_port,
        t0.elapsed()
    );
    let certs = broker.certs.as_ref().unwrap();
    assert!(Path::new(&certs.arg("client.key")).exists());
    verification(&broker, certs);
    same_as_plain(&broker, certs);
    run_with_amqps(&broker, certs);
    eprintln!("all TLS scenarios after {:?}", t0.elapsed());
}
