//! `amqptrace capture -i` and the libpcap it loads at run time: the binary
//! links no libpcap, a real capture on `lo` decodes the real broker's
//! traffic (and its `-w` recording is read by tshark and `analyze`), a
//! missing libpcap is a clear message and exit 2, and a full disk under `-w`
//! is reported once while the capture goes on.
//!
//! Needs libpcap0.8 (the run-time library only), tshark, `ldd` and the
//! RabbitMQ on 127.0.0.1:5672; a missing one fails with the command that
//! installs it (`scripts/test.sh` installs them all).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{
    analyze, capture, connect, exclusive_queue, jsonl, publish, require, require_tshark, temp_dir,
    tshark_fields, unique, Capture, BIN, BROKER_URL, PROTOCOL_HEADER,
};

/// `capture -i lo --port 5672 --format jsonl -o DIR/timeline.jsonl ARGS...`:
/// the shared broker's traffic; returns the capture and its timeline file.
fn capture_broker(dir: &Path, args: &[&str]) -> (Capture, PathBuf) {
    let timeline = dir.join("timeline.jsonl");
    let out = [
        "--port",
        "5672",
        "--format",
        "jsonl",
        "-o",
        timeline.to_str().unwrap(),
    ];
    (Capture::start(&[&out[..], args].concat()), timeline)
}

/// One short AMQP conversation with the real broker: declare `queue`
/// (exclusive: it goes with the connection), publish three messages to it, close.
async fn converse(queue: &str) {
    let conn = connect(BROKER_URL).await;
    let ch = conn.create_channel().await.unwrap();
    exclusive_queue(&ch, queue).await;
    for i in 0..3 {
        publish(&ch, queue, format!("livecap message {i}").as_bytes()).await;
    }
    conn.close(200, "OK".into()).await.unwrap();
}

/// The JSON lines of the file at `path`.
fn jsonl_file(path: &Path) -> Vec<Value> {
    jsonl(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The methods, in order, of the connection that declared `queue` (other
/// tests' connections to the shared broker are in the capture too).
fn methods_of_connection_declaring(events: &[Value], queue: &str) -> Vec<String> {
    let conn = events
        .iter()
        .find(|v| v["method"] == "queue.declare" && v["queue"] == queue)
        .and_then(|v| v["conn"].as_str())
        .unwrap_or_else(|| panic!("no queue.declare of {queue} in the timeline"));
    events
        .iter()
        .filter(|v| v["conn"] == conn && v["event"] == "frame")
        .filter_map(|v| v["method"].as_str().map(str::to_string))
        .collect()
}

fn assert_whole_conversation(methods: &[String]) {
    let want = [
        "protocol-header",
        "connection.start",
        "connection.start-ok",
        "connection.tune",
        "connection.tune-ok",
        "connection.open",
        "connection.open-ok",
        "channel.open",
        "channel.open-ok",
        "queue.declare",
        "queue.declare-ok",
        "basic.publish",
        "basic.publish",
        "basic.publish",
        "connection.close",
        "connection.close-ok",
    ];
    let seen: Vec<&str> = methods
        .iter()
        .map(String::as_str)
        .filter(|m| want.contains(m))
        .collect();
    assert_eq!(seen, want, "all methods: {methods:?}");
}

#[test]
fn the_binary_links_no_libpcap() {
    require("ldd", "--version", "libc-bin");
    let out = Command::new("ldd").arg(BIN).output().unwrap();
    assert!(out.status.success(), "ldd {}: {:?}", BIN, out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("libpcap"), "{text}");
    // Nothing beyond the C library and the compiler's runtime, which every
    // machine that runs a Rust binary has.
    for line in text.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        let ok = [
            "linux-vdso",
            "libc.so",
            "libm.so",
            "libgcc_s.so",
            "ld-linux",
            "/lib64/ld-linux",
        ]
        .iter()
        .any(|p| lib.starts_with(p))
            || lib.starts_with("libpthread")
            || lib.starts_with("libdl")
            || lib.starts_with("librt");
        assert!(ok, "{} links {lib}:\n{text}", BIN);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_on_lo_decodes_the_broker_traffic_and_records_it() {
    require_tshark();
    let dir = temp_dir();
    let recording = dir.path().join("recording.pcap");
    let (cap, timeline) = capture_broker(dir.path(), &["-w", recording.to_str().unwrap()]);
    let queue = unique("livecap-decode");
    converse(&queue).await;
    let (code, err) = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .unwrap();
    // 0 or 1: other tests' connections on the shared broker may stall.
    assert!(matches!(code, Some(0 | 1)), "exit {code:?}\n{err}");
    assert!(!err.contains("dropped"), "{err}");
    let live = methods_of_connection_declaring(&jsonl_file(&timeline), &queue);
    assert_whole_conversation(&live);

    // The recording is a pcap that amqptrace reads back to the same conversation…
    let run = analyze("jsonl", &recording);
    assert!(
        matches!(run.code, Some(0 | 1)),
        "analyze of the recording: {}",
        run.context()
    );
    assert_eq!(
        methods_of_connection_declaring(&jsonl(&run.stdout), &queue),
        live
    );
    // …with the PLAIN password of the login masked byte for byte, the user kept…
    let bytes = std::fs::read(&recording).unwrap();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(b"\0guest\0guest"),
        "a PLAIN password in the -w recording"
    );
    assert!(
        has(b"\0guest\0*****"),
        "the masked PLAIN response is in the recording"
    );
    // …and that tshark decodes as AMQP too.
    let out = tshark_fields(
        &recording,
        None,
        &format!("amqp.method.arguments.queue == \"{queue}\""),
        &["amqp.method.class", "amqp.method.method"],
    );
    let tshark_methods: Vec<String> = out.lines().map(str::to_string).collect();
    // queue.declare is class 50, method 10.
    assert!(
        tshark_methods.iter().any(|m| m == "50\t10"),
        "tshark sees no queue.declare of {queue}: {tshark_methods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_w_is_reported_once_and_the_capture_goes_on() {
    let dir = temp_dir();
    let (cap, timeline) = capture_broker(dir.path(), &["-w", "/dev/full"]);
    let queue = unique("livecap-devfull");
    converse(&queue).await;
    // A second conversation after the failure: the capture still decodes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = unique("livecap-devfull-later");
    converse(&later).await;
    let (code, err) = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .unwrap();
    assert_eq!(
        err.matches("No space left on device").count(),
        1,
        "reported once:\n{err}"
    );
    assert!(err.contains("cannot write /dev/full"), "{err}");
    assert!(err.contains("recording /dev/full is incomplete"), "{err}");
    assert_eq!(code, Some(2), "{err}");
    let events = jsonl_file(&timeline);
    assert_whole_conversation(&methods_of_connection_declaring(&events, &queue));
    assert_whole_conversation(&methods_of_connection_declaring(&events, &later));
}

/// A TCP server of the test's own on 127.0.0.1 that accepts and reads, saying nothing.
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
    });
    (port, h)
}

/// A capture of the shared broker and of a [`silent_server`] beside it, its
/// timeline in JSON Lines to a file.
struct Beside {
    port: u16,
    server: std::thread::JoinHandle<()>,
    cap: Capture,
    timeline: PathBuf,
    _dir: tempfile::TempDir,
}

impl Beside {
    fn start() -> Beside {
        let (port, server) = silent_server();
        let dir = temp_dir();
        let filter = format!("tcp port 5672 or tcp port {port}");
        let (cap, timeline) = capture_broker(dir.path(), &["--filter", &filter]);
        Beside {
            port,
            server,
            cap,
            timeline,
            _dir: dir,
        }
    }
}

/// The `ts` of the events of connections `conns` (client->broker, or a
/// suffix of it), in output order, must never go back. (Only the test's own:
/// other tests' packets on lo may come from another CPU a microsecond early.)
fn assert_time_ordered(events: &[Value], conns: &[String]) {
    let ts: Vec<&str> = events
        .iter()
        .filter(|v| {
            v["conn"]
                .as_str()
                .is_some_and(|c| conns.iter().any(|want| c.ends_with(want.as_str())))
        })
        .filter_map(|v| v["ts"].as_str())
        .collect();
    for w in ts.windows(2) {
        assert!(w[0] <= w[1], "out of time order: {} then {}", w[0], w[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_classified_late_keeps_its_place_in_the_live_timeline() {
    // A broker on a port the capture is not told about: its connection is
    // AMQP only once the client's protocol header comes, 600 ms after the
    // SYN. In between, a conversation with the real broker on 5672.
    let Beside {
        port: late_port,
        server,
        cap,
        timeline,
        _dir,
    } = Beside::start();
    let mut late = std::net::TcpStream::connect(("127.0.0.1", late_port)).unwrap();
    let t0 = Instant::now();
    let queue = unique("livecap-late");
    converse(&queue).await;
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed())).await;
    std::io::Write::write_all(&mut late, PROTOCOL_HEADER).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(late);
    let (code, err) = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .unwrap();
    assert!(matches!(code, Some(0 | 1)), "exit {code:?}\n{err}");
    server.join().unwrap();
    let events = jsonl_file(&timeline);
    let late_conn = format!("127.0.0.1:{late_port}");
    let pos = |pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing event in {events:#?}"))
    };
    let late_open = pos(&|v| {
        v["event"] == "tcp.open" && v["conn"].as_str().is_some_and(|c| c.ends_with(&late_conn))
    });
    let declare = pos(&|v| v["method"] == "queue.declare" && v["queue"] == queue.as_str());
    assert!(
        late_open < declare,
        "the late connection's tcp.open (before the conversation on the wire) came after it"
    );
    let amqp_conn = events[declare]["conn"].as_str().unwrap().to_string();
    assert_time_ordered(&events, &[late_conn, amqp_conn]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_non_amqp_flow_holds_the_live_timeline_back_a_few_seconds_at_most() {
    let Beside {
        port: quiet_port,
        server,
        cap,
        timeline,
        _dir,
    } = Beside::start();
    // Connected and silent, like an idle ssh session: never classified.
    let quiet = std::net::TcpStream::connect(("127.0.0.1", quiet_port)).unwrap();
    let queue = unique("livecap-quiet");
    converse(&queue).await;
    // The conversation reaches the output while the quiet flow is still open
    // and the capture still runs: the wait for classification is bounded
    // (5 s of capture time) and time passes even when no packet comes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let text = std::fs::read_to_string(&timeline).unwrap_or_default();
        if text.contains(&format!("\"queue\":\"{queue}\"")) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(quiet);
    let (_, err) = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .unwrap();
    server.join().unwrap();
    assert!(
        seen,
        "the conversation was held back behind the quiet flow\n{err}"
    );
    let events = jsonl_file(&timeline);
    let conn = events
        .iter()
        .find(|v| v["method"] == "queue.declare" && v["queue"] == queue.as_str())
        .and_then(|v| v["conn"].as_str())
        .unwrap()
        .to_string();
    assert_time_ordered(&events, &[conn]);
}

fn capture_with_libpcap(path: &str) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["capture", "-i", "lo"])
        .env("AMQPTRACE_LIBPCAP", path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_libpcap_that_does_not_exist_is_named_with_its_package_and_exits_2() {
    let missing = PathBuf::from("/nonexistent/amqptrace-test/libpcap.so.1");
    let (code, err) = capture_with_libpcap(missing.to_str().unwrap());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "AMQPTRACE_LIBPCAP={} cannot be loaded",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("apt-get install libpcap0.8"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("capturing on"), "{err}");
}

#[test]
fn a_library_that_is_not_libpcap_is_refused_with_exit_2() {
    require("ldd", "--version", "libc-bin");
    // The C library is surely there, and has no pcap_create.
    let out = Command::new("ldd").arg(BIN).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let libc = text
        .lines()
        .find(|l| l.trim_start().starts_with("libc.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no libc in ldd output: {text}"))
        .to_string();
    let (code, err) = capture_with_libpcap(&libc);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{libc} is not a usable libpcap")) && err.contains("pcap_create"),
        "{err}"
    );
}

#[test]
fn capture_help_documents_the_libpcap_variable() {
    let out = Command::new(BIN)
        .args(["capture", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("AMQPTRACE_LIBPCAP=/path/to/libpcap.so"),
        "{help}"
    );
    assert!(help.contains("libpcap0.8"), "{help}");
}

#[test]
fn analyze_needs_no_libpcap() {
    // Even with the loader pointed at nothing, offline analysis works: it never loads libpcap.
    let out = Command::new(BIN)
        .args(["analyze"])
        .arg(capture("failures/prefetch-exhausted.pcapng"))
        .env("AMQPTRACE_LIBPCAP", "/nonexistent/libpcap.so")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("prefetch_exhausted"));
}
