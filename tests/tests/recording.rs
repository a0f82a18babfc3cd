//! Recordings amqptrace writes (`proxy --pcap`, `run`'s capture.pcapng), against
//! the real RabbitMQ on 127.0.0.1:5672 with real clients: they record their end
//! (read back as `analyze`'s horizon, as dumpcap's files are), pair their two
//! legs so that `analyze` reports each connection once, mask the clients'
//! passwords byte for byte (tshark still decodes every frame), and `run` hands
//! its command a URL that strict clients (rabbitmq-c) read as vhost '/'.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use amqptrace::pipeline;
use amqptrace::source::file::CaptureReader;
use amqptrace::stream::StreamConfig;
use serde_json::Value;

use crate::util::{
    amqp_url, amqptrace_run, analyze_json, assert_same_json, capture, connect, pika_script,
    publishes, python, read_json, temp_dir, text, tshark_fields, unique, Cleanup, Proxy, BROKER,
    BROKER_URL,
};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// PLAIN's response for guest/guest and AMQPLAIN's PASSWORD field, as clients send them.
const PLAIN_SECRET: &[u8] = b"\0guest\0guest";
const AMQPLAIN_SECRET: &[u8] = b"\x08PASSWORDS\x00\x00\x00\x05guest";

/// tshark decodes every AMQP frame of the file (no malformed packet) and finds
/// the start-ok of each login with its mechanism; returns the mechanisms seen.
fn tshark_decodes_logins(file: &Path, amqp_port: Option<u16>) -> Vec<String> {
    let malformed = tshark_fields(
        file,
        amqp_port,
        "_ws.malformed || _ws.expert.severity >= error",
        &["frame.number"],
    );
    assert_eq!(
        malformed.trim(),
        "",
        "tshark finds malformed packets in {}",
        file.display()
    );
    let mechanisms: Vec<String> = tshark_fields(
        file,
        amqp_port,
        "amqp.method.class == 10 && amqp.method.method == 11",
        &["amqp.method.arguments.mechanism"],
    )
    .lines()
    .map(str::to_string)
    .collect();
    assert!(
        !mechanisms.is_empty(),
        "no connection.start-ok decoded in {}",
        file.display()
    );
    mechanisms
}

/// The recorded end of a capture, and its last packet's time.
fn end_and_last(
    file: &Path,
) -> (
    Option<amqptrace::event::Timestamp>,
    amqptrace::event::Timestamp,
) {
    let mut r = CaptureReader::open(file).unwrap();
    let mut last = amqptrace::event::Timestamp(0);
    while let Some(p) = r.next_packet().unwrap() {
        last = last.max(p.ts);
    }
    (r.recorded_end(), last)
}

/// A shell script that declares `queue`, publishes one message to it, consumes it
/// and deletes the queue, all with rabbitmq-c's amqp-tools on `$AMQP_URL`.
fn rabbitmq_c_script(queue: &str) -> String {
    format!(
        "set -e; u=\"$AMQP_URL\"; \
         amqp-declare-queue -u \"$u\" -q {queue} >/dev/null; \
         amqp-publish -u \"$u\" -r {queue} -b hello-{queue}; \
         amqp-consume -u \"$u\" -q {queue} -c 1 cat; echo; \
         amqp-delete-queue -u \"$u\" -q {queue} >/dev/null"
    )
}

/// `amqptrace run --artifacts DIR EXTRA... -- sh -c SCRIPT`.
fn run(dir: &Path, extra: &[&str], script: &str) -> Output {
    let args = [extra, &["--", "sh", "-c", script]].concat();
    amqptrace_run(dir, &args)
}

/// rabbitmq-c reads `amqp://host:port/` as vhost "" (the broker answers 530):
/// under `run` with the default upstream it must reach vhost '/'. The
/// artifacts are what `analyze` gives on the left recording, which records its
/// end, holds no password, and which tshark decodes.
#[test]
fn run_with_the_default_upstream_serves_a_strict_vhost_client() {
    let dir = temp_dir();
    let queue = unique("rec-rabbitmq-c");
    let _cleanup = Cleanup::queues(&[&queue]);
    let out = run(dir.path(), &[], &rabbitmq_c_script(&queue));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Reply code 530 (NOT_ALLOWED) as a number of its own: a port such as
    // 45309 holds the digits too.
    let reply_530 = stderr
        .split(|c: char| !c.is_ascii_digit())
        .any(|n| n == "530");
    assert!(!reply_530, "{stderr}");
    assert!(
        text(&out.stdout).contains(&format!("hello-{queue}")),
        "the message came back: {}",
        text(&out.stdout)
    );
    let art = dir.path();
    let verdicts = read_json(&art.join("verdicts.json"));
    let conns = verdicts["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 4, "{verdicts:#}");
    for c in conns {
        assert_eq!(c["vhost"], "/", "{c:#}");
        assert_eq!(c["client_product"], "rabbitmq-c", "{c:#}");
    }
    assert_eq!(
        publishes(&verdicts),
        1,
        "the publish once, not once per leg"
    );
    assert_eq!(verdicts["consumers"].as_array().map(Vec::len), Some(1));

    let capture = art.join("capture.pcapng");
    let (end, last) = end_and_last(&capture);
    let end = end.expect("capture.pcapng records its end");
    assert!(
        end >= last,
        "the end {end:?} is not before the last packet {last:?}"
    );
    // verdicts.json is the analysis `analyze` gives on the recording.
    let offline = analyze_json(&capture);
    for part in ["verdicts", "connections", "consumers"] {
        assert_same_json(
            &format!("{part} of analyze on capture.pcapng vs verdicts.json"),
            &verdicts[part],
            &offline[part],
        );
    }
    // The timeline's frame numbers are packet numbers of capture.pcapng.
    let timeline = std::fs::read_to_string(art.join("timeline.jsonl")).unwrap();
    let publish = timeline
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["method"] == "basic.publish")
        .expect("the publish in timeline.jsonl");
    let frame = publish["frame"].as_u64().unwrap();
    let at_frame = tshark_fields(
        &capture,
        Some(5672),
        &format!("frame.number == {frame}"),
        &["amqp.method.arguments.routing_key"],
    );
    assert_eq!(
        at_frame.trim(),
        queue,
        "frame {frame} of capture.pcapng is the publish"
    );

    let bytes = std::fs::read(&capture).unwrap();
    assert!(
        !contains(&bytes, PLAIN_SECRET),
        "the PLAIN password is in capture.pcapng"
    );
    for name in [
        "timeline.jsonl",
        "verdicts.json",
        "summary.txt",
        "report.html",
    ] {
        let body = std::fs::read(art.join(name)).unwrap();
        assert!(!contains(&body, PLAIN_SECRET), "the password is in {name}");
    }
    let mechanisms = tshark_decodes_logins(&capture, None);
    // Both legs of 4 connections (the client leg is on run's own port, not decoded here).
    assert_eq!(mechanisms, vec!["PLAIN"; 4]);
}

/// One PLAIN login (rabbitmq-c) and one AMQPLAIN login (lapin) through `proxy --pcap`.
fn logins_through_proxy(pcap: &Path, extra: &[&str]) -> std::net::SocketAddr {
    let args = [&["-q", "--pcap", pcap.to_str().unwrap()], extra].concat();
    let proxy = Proxy::start(BROKER, &args);
    let addr = proxy.addr;
    let queue = unique("rec-proxy");
    let _cleanup = Cleanup::queues(&[&queue]);
    let st = Command::new("sh")
        .args(["-c", &rabbitmq_c_script(&queue)])
        .env("AMQP_URL", amqp_url(addr))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "rabbitmq-c through the proxy");
    crate::util::runtime().block_on(async {
        let conn = connect(&format!("{}?auth_mechanism=amqplain", amqp_url(addr))).await;
        let ch = conn.create_channel().await.unwrap();
        ch.close(200, "OK".into()).await.unwrap();
        conn.close(200, "OK".into()).await.unwrap();
    });
    // Let the tracer see the last closes before the proxy stops.
    std::thread::sleep(Duration::from_millis(300));
    proxy.stop();
    addr
}

#[test]
fn proxy_pcap_masks_plain_and_amqplain_passwords_and_records_its_end() {
    let dir = temp_dir();
    let pcap = dir.path().join("masked.pcapng");
    let addr = logins_through_proxy(&pcap, &[]);
    let bytes = std::fs::read(&pcap).unwrap();
    assert!(!contains(&bytes, PLAIN_SECRET), "PLAIN password recorded");
    assert!(
        !contains(&bytes, AMQPLAIN_SECRET),
        "AMQPLAIN password recorded"
    );
    // The user stays readable; the password is masked in place, same length.
    assert!(contains(&bytes, b"\0guest\0*****"));
    assert!(contains(&bytes, b"\x08PASSWORDS\x00\x00\x00\x05*****"));
    // tshark decodes both legs of every login, the masked response included.
    let mut mechanisms = tshark_decodes_logins(&pcap, Some(addr.port()));
    mechanisms.sort();
    assert_eq!(
        mechanisms,
        [
            "AMQPLAIN", "AMQPLAIN", "PLAIN", "PLAIN", "PLAIN", "PLAIN", "PLAIN", "PLAIN", "PLAIN",
            "PLAIN"
        ]
    );
    // Each connection once, under the names the live proxy uses.
    let doc = analyze_json(&pcap);
    let conns = doc["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 5, "{doc:#}");
    for c in conns {
        let name = c["conn"].as_str().unwrap();
        assert!(name.ends_with("->127.0.0.1:5672"), "{name}");
        assert_eq!(c["user"], "guest", "{c:#}");
    }
    assert_eq!(publishes(&doc), 1);
    // The recording says when it stopped; the pipeline reports it as the horizon.
    let (end, last) = end_and_last(&pcap);
    assert!(end.is_some_and(|e| e >= last), "{end:?} vs {last:?}");
    let summary = pipeline::run_files(
        std::slice::from_ref(&pcap),
        &StreamConfig::default(),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(summary.recorded_end, end);
    if let Some(h) = doc.get("horizon") {
        assert_eq!(h, "recorded");
    }

    // Asked to keep them, the recording holds the credentials as sent.
    let kept = dir.path().join("kept.pcapng");
    logins_through_proxy(&kept, &["--pcap-keep-credentials"]);
    let bytes = std::fs::read(&kept).unwrap();
    assert!(contains(&bytes, PLAIN_SECRET));
    assert!(contains(&bytes, AMQPLAIN_SECRET));
}

/// dumpcap (what Wireshark and `tshark -w` capture with) writes the end of its
/// capture in interface statistics; a pcap (tcpdump) records none.
#[test]
fn dumpcap_records_its_end_and_a_pcap_does_not() {
    let dir = temp_dir();
    let file = dir.path().join("dumpcap.pcapng");
    let dumpcap = Command::new("dumpcap")
        .args([
            "-q",
            "-i",
            "lo",
            "-f",
            "tcp port 5672",
            "-a",
            "duration:2",
            "-w",
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut dumpcap =
        dumpcap.expect("dumpcap (apt-get install wireshark-common; scripts/test.sh installs it)");
    // Some traffic inside the capture: an unroutable publish (dropped by the broker).
    std::thread::sleep(Duration::from_millis(700));
    let _ = Command::new("amqp-publish")
        .args(["-u", BROKER_URL])
        .args(["-r", &unique("rec-nowhere"), "-b", "x"])
        .status();
    match dumpcap.wait() {
        Ok(st) if st.success() => {}
        // No capture rights here: nothing to check against.
        _ => return eprintln!("dumpcap cannot capture on lo; skipped"),
    }
    let (end, last) = end_and_last(&file);
    let end = end.expect("dumpcap's isb_endtime");
    // dumpcap stops about 1.3 s after the publish.
    let after = end.secs_since(last);
    assert!(
        (0.0..3.0).contains(&after),
        "end {after} s after the last packet"
    );
    let summary = pipeline::run_files(
        std::slice::from_ref(&file),
        &StreamConfig::default(),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(summary.recorded_end, Some(end));

    let pcap = capture("lapin-basic.pcap");
    assert_eq!(end_and_last(&pcap).0, None);
    // Several files: the end is known only when every file records one.
    let both = [file.clone(), pcap];
    let summary = pipeline::run_files(&both, &StreamConfig::default(), |_| Ok(())).unwrap();
    assert_eq!(summary.recorded_end, None);
}

/// A consumer (rabbitmq-c, prefetch 1) whose handler never returns holds its
/// one unacked delivery for 7 s until the command ends: `run --fail-on-stall`
/// exits 1 from the analysis of its recording and says why on stderr.
#[test]
fn run_fail_on_stall_exits_1_and_says_why() {
    let dir = temp_dir();
    let queue = unique("rec-stuck");
    let _cleanup = Cleanup::queues(&[&queue]);
    let pidfile = dir.path().join("consumer.pid");
    let art = dir.path().join("art");
    // The consumer outlives the script (an orphaned worker): run's proxy cuts
    // it when the command ends, which is not the consumer's doing.
    let script = format!(
        "set -e; u=\"$AMQP_URL\"; \
         amqp-declare-queue -u \"$u\" -q {queue} >/dev/null; \
         amqp-publish -u \"$u\" -r {queue} -b one; amqp-publish -u \"$u\" -r {queue} -b two; \
         amqp-consume -u \"$u\" -q {queue} -p 1 sleep 15 </dev/null >/dev/null 2>&1 & \
         echo $! > {pid}; \
         sleep 7",
        pid = pidfile.display()
    );
    let out = run(&art, &["--fail-on-stall"], &script);
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let why: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("amqptrace: --fail-on-stall: "))
        .collect();
    assert!(
        why.iter()
            .any(|l| l.contains("prefetch_exhausted") && l.contains(&queue)),
        "no reason naming the stall: {stderr}"
    );
    assert!(
        why.last()
            .is_some_and(|l| l.contains("a stall was found; exit 1 (the command exited 0)")),
        "{stderr}"
    );
    let verdicts = read_json(&art.join("verdicts.json"));
    assert!(
        verdicts["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["verdict"] == "prefetch_exhausted" && v["queue"] == queue.as_str()),
        "{verdicts:#}"
    );
    // And analyze on the recording agrees.
    let offline = analyze_json(&art.join("capture.pcapng"));
    assert_same_json(
        "analyze on capture.pcapng vs verdicts.json",
        &verdicts["verdicts"],
        &offline["verdicts"],
    );
}

/// pika logs in with PLAIN: none of the files `run` leaves holds the password,
/// and tshark decodes the recorded login.
#[test]
fn run_leaves_no_pika_password_in_any_artifact() {
    let dir = temp_dir();
    let queue = unique("rec-pika");
    let publish = format!("ch.basic_publish('', '{queue}', b'x')");
    let delete = format!("ch.queue_delete('{queue}')");
    let pika = pika_script(&queue, &[&publish, &delete, "c.close()"]);
    let script = format!("{} -c \"{pika}\"", python().display());
    let out = run(dir.path(), &[], &script);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        assert!(
            !contains(&body, PLAIN_SECRET),
            "the password is in {}",
            path.display()
        );
        files += 1;
    }
    assert!(files >= 5, "{files} artifacts");
    let capture = dir.path().join("capture.pcapng");
    assert!(contains(
        &std::fs::read(&capture).unwrap(),
        b"\0guest\0*****"
    ));
    assert_eq!(tshark_decodes_logins(&capture, None), ["PLAIN"]);
}
