//! The live session driven in-process, no child process: the proxy session
//! served on `127.0.0.1:0` with a shutdown future, lapin talking to the real
//! RabbitMQ on 127.0.0.1:5672 through it; `run`'s recording session and its
//! artifacts writer, through the same proxy and from a committed capture.
//!
//! Queues are server-named and exclusive (gone with their connection), so
//! the shared broker is left as found.

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

use amqptrace::analyze::{AnalyzerConfig, VerdictKind};
use amqptrace::live::artifacts::{Artifacts, CAPTURE, TIMELINE};
use amqptrace::live::channel::Recorder;
use amqptrace::live::proxy::ProxySession;
use amqptrace::live::{LiveFormat, LiveOptions};
use amqptrace::source::proxy::{ProxyConfig, Upstream, TRACE_QUEUE_MESSAGES};
use amqptrace::stream::StreamConfig;
use amqptrace::url::proxied_url;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/";

/// A writer a test reads back after the session wrote to it.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn upstream() -> Upstream {
    Upstream::parse(BROKER).unwrap()
}

fn stream_cfg() -> StreamConfig {
    StreamConfig {
        ports: vec![5672],
        ..StreamConfig::default()
    }
}

/// Through `uri`: one consumer with prefetch 5 on an exclusive queue, `n`
/// messages published, delivered and acked, the connection closed.
async fn publish_consume_ack(uri: &str, n: usize) {
    let conn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri}: {e}"));
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "live-session".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |d: lapin::message::DeliveryResult| {
        if let Ok(Some(d)) = d {
            let _ = tx.send(d);
        }
        std::future::ready(())
    });
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.name().as_str().into(),
            BasicPublishOptions::default(),
            format!("message {i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a delivery in time")
            .expect("a delivery");
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    conn.close(200, "OK".into()).await.unwrap();
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn count(events: &[Value], method: &str) -> usize {
    events.iter().filter(|v| v["method"] == method).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_session_in_process_traces_and_judges() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let out = Buffer::default();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("proxy.pcapng");
    let recorder = Recorder::new(
        Box::new(std::fs::File::create(&pcap).unwrap()),
        "--pcap",
        "forwarding and tracing go on",
        false,
    )
    .unwrap();
    let session = ProxySession {
        proxy: ProxyConfig {
            upstream: upstream(),
            listen_tls: None,
            max_connections: 64,
            drain: Duration::from_secs(1),
        },
        trace_queue: TRACE_QUEUE_MESSAGES,
        stream: stream_cfg(),
        output: LiveOptions {
            format: LiveFormat::Jsonl,
            quiet: false,
            verbose: false,
            color: false,
            analyzer: AnalyzerConfig::default(),
        },
        writer: Box::new(out.clone()),
        recorder: Some(recorder),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(session.serve(vec![listener], async {
        let _ = stopped.await;
    }));

    publish_consume_ack(&format!("amqp://guest:guest@{addr}/%2F"), 10).await;
    stop.send(()).unwrap();
    let analysis = served.await.unwrap().expect("the session ends cleanly");

    assert_eq!(analysis.connections.len(), 1, "{analysis:?}");
    assert_eq!(analysis.consumers.len(), 1, "{analysis:?}");
    assert!(!analysis.has_stall(), "{:?}", analysis.verdicts);
    assert!(
        analysis
            .verdicts
            .iter()
            .all(|v| v.verdict == VerdictKind::Healthy),
        "{:?}",
        analysis.verdicts
    );
    let all = lines(&out.text());
    assert_eq!(count(&all, "basic.publish"), 10);
    assert_eq!(count(&all, "basic.deliver"), 10);
    assert_eq!(count(&all, "basic.ack"), 10);
    assert_eq!(count(&all, "connection.close-ok"), 1);
    // The final verdicts close the output, one line each, not live.
    let verdicts: Vec<&Value> = all.iter().filter(|v| v["event"] == "verdict").collect();
    assert_eq!(verdicts.len(), analysis.verdicts.len());
    assert!(verdicts
        .iter()
        .all(|v| v["live"] == false && v["verdict"] == "healthy"));
    assert_eq!(all.last().unwrap()["event"], "verdict");
    // The recording is finished, with the password masked.
    let recorded = std::fs::read(&pcap).unwrap();
    assert_eq!(&recorded[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
    assert!(
        !recorded.windows(12).any(|w| w == b"\0guest\0guest"),
        "the password is masked in the recording"
    );
}

/// Every artifact of `dir` is there and agrees with the others; returns verdicts.json.
fn check_artifacts(dir: &Path) -> Value {
    let timeline = std::fs::read_to_string(dir.join(TIMELINE)).unwrap();
    let events = lines(&timeline);
    assert!(!events.is_empty(), "timeline.jsonl has events");
    let verdicts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("verdicts.json")).unwrap()).unwrap();
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(
        summary.starts_with("verdicts:") || summary.starts_with("causes:"),
        "{summary}"
    );
    let connections = verdicts["connections"].as_array().unwrap().len();
    assert!(
        summary.contains(&format!("\nconnections: {connections}\n")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("\nevents traced: {}", events.len())),
        "summary.txt counts the timeline's events:\n{summary}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<section id=\"verdicts\">"));
    assert!(!dir.join(format!(".{TIMELINE}.part")).exists());
    verdicts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_recording_session_writes_artifacts_from_its_recording() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifacts");
    let artifacts = Artifacts {
        dir: art.clone(),
        stream: stream_cfg(),
        analyzer: AnalyzerConfig::default(),
    };
    let session = artifacts.record(false, Arc::new(Notify::new())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = proxied_url(BROKER, listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(session.serve(listener, upstream(), async {
        let _ = stopped.await;
    }));

    publish_consume_ack(&url, 6).await;
    stop.send(()).unwrap();
    let analysis = served.await.unwrap().expect("the artifacts are written");

    let verdicts = check_artifacts(&art);
    assert_eq!(verdicts["connections"].as_array().unwrap().len(), 1);
    assert_eq!(analysis.consumers.len(), 1);
    assert_eq!(analysis.consumers[0].counts.acks, 6);
    assert!(!analysis.has_stall(), "{:?}", analysis.verdicts);
    let timeline = std::fs::read_to_string(art.join(TIMELINE)).unwrap();
    assert_eq!(count(&lines(&timeline), "basic.ack"), 6);
    let recorded = std::fs::read(art.join(CAPTURE)).unwrap();
    assert!(!recorded.windows(12).any(|w| w == b"\0guest\0guest"));
}

#[test]
fn artifacts_of_a_committed_capture() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("captures/pika-basic.pcapng"),
        dir.path().join(CAPTURE),
    )
    .unwrap();
    let artifacts = Artifacts {
        dir: dir.path().to_path_buf(),
        stream: stream_cfg(),
        analyzer: AnalyzerConfig::default(),
    };
    let analysis = artifacts.write(3, None).unwrap();
    let verdicts = check_artifacts(dir.path());
    assert_eq!(
        verdicts["verdicts"].as_array().unwrap().len(),
        analysis.verdicts.len()
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.txt")).unwrap();
    let mut block = Vec::new();
    amqptrace::analyze::write_verdict_block(&analysis, &mut block).unwrap();
    assert!(summary.starts_with(std::str::from_utf8(&block).unwrap()));
    assert!(
        summary.contains("(3 trace messages dropped: the tracer could not keep up)"),
        "{summary}"
    );
    // Written again (a snapshot, then the end): the same files, overwritten.
    artifacts.write(3, None).unwrap();
    check_artifacts(dir.path());
}
