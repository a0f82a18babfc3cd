//! The analysis document and the verdict vocabulary, and the throughput check.

use super::*;

#[test]
fn every_verdict_name_is_snake_case_and_severity_orders_the_block() {
    for k in VerdictKind::ALL {
        let json = serde_json::to_string(k).expect("serialise");
        assert_eq!(json, format!("\"{}\"", k.name()));
        assert_eq!(
            k.is_stall(),
            !matches!(
                k,
                VerdictKind::Healthy
                    | VerdictKind::Idle
                    | VerdictKind::SlowButHealthy
                    | VerdictKind::Standby
            )
        );
    }
    assert!(VerdictKind::ConnectionLost.severity() > VerdictKind::PrefetchExhausted.severity());
}

/// docs/verdicts.md's vocabulary table names every verdict, and nothing else.
#[test]
fn the_vocabulary_table_lists_every_verdict() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/verdicts.md"));
    let table = doc
        .split("## The vocabulary")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/verdicts.md has a section '## The vocabulary'");
    let mut listed = std::collections::BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or("");
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                listed.insert(part.to_string());
            }
        }
    }
    let known: std::collections::BTreeSet<String> = VerdictKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    let missing: Vec<_> = known.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&known).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/verdicts.md's vocabulary lacks {missing:?} and names {unknown:?}, which are no verdicts"
    );
}

#[test]
fn json_document_and_text_block() {
    let mut s = Sim::with(AnalyzerConfig::default().with_stall_after(Duration::from_secs(2)));
    let w = conn(1031);
    worker(&mut s, w, "pq", "stuck", 1);
    s.deliver(w, 1, "stuck", 1, false, None);
    s.at(3.0);
    let an = s.analysis();
    assert_eq!(an.stall_after_s, 2.0);
    let doc: serde_json::Value = serde_json::to_value(&an).expect("serialise");
    assert_eq!(doc["schema"], "amqptrace.analysis/1");
    let v = &doc["verdicts"][0];
    assert_eq!(v["verdict"], "prefetch_exhausted");
    assert_eq!(v["scope"], "consumer");
    assert_eq!(v["conn"], "127.0.0.1:1031->127.0.0.1:5672");
    assert_eq!(v["queue"], "pq");
    assert_eq!(v["certainty"], "certain");
    assert_eq!(doc["horizon"], "last_packet");
    assert_eq!(doc["causes"][0]["verdict"], "prefetch_exhausted");
    assert_eq!(doc["causes"][0]["verdicts"], serde_json::json!([0]));
    assert!(v["since"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(v["evidence"][0]["frame"].is_u64());
    let healthy = doc["verdicts"][1].clone();
    assert_eq!(healthy["channel"], serde_json::Value::Null);
    assert_eq!(healthy["consumer_tag"], serde_json::Value::Null);
    let mut out = Vec::new();
    write_verdict_block(&an, &mut out).expect("write to a Vec");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "causes:");
    assert!(
        lines[1].starts_with("  - prefetch_exhausted: Consumer 'stuck' on queue 'pq'"),
        "{text}"
    );
    assert_eq!(lines[2], "verdicts:");
    assert!(
        lines[3].trim_start().starts_with("prefetch_exhausted"),
        "{text}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("healthy: 0 consumer(s), 1 connection(s)")),
        "{text}"
    );
}

/// Throughput check (run with `cargo test --release -- --ignored analyzer_throughput --nocapture`):
/// the publish/deliver/header/ack cycle of one message, events hot in cache as
/// they are when they come straight from the decoder.
#[test]
#[ignore]
fn analyzer_throughput() {
    let (mut s, p, w) = Sim::with_worker_and_publisher((3000, 3001), "jobs", "w1", 100);
    let m = |k: MethodKind, args: MethodArgs| EventKind::Frame {
        channel: 1,
        frame: Frame::Method(Box::new(Method::new(k, args))),
    };
    let ev = |c: Conn, dir: Dir, kind: EventKind| Event {
        frame: 0,
        file: 0,
        ts: Timestamp(T0),
        conn: c,
        dir,
        kind,
    };
    let mut cycle = [
        ev(
            p,
            Dir::C2S,
            m(
                MethodKind::BasicPublish,
                MethodArgs {
                    exchange: Some("".into()),
                    routing_key: Some("jobs".into()),
                    ..Default::default()
                },
            ),
        ),
        ev(
            w,
            Dir::S2C,
            m(
                MethodKind::BasicDeliver,
                MethodArgs {
                    consumer_tag: Some("w1".into()),
                    delivery_tag: Some(1),
                    redelivered: Some(false),
                    exchange: Some("".into()),
                    routing_key: Some("jobs".into()),
                    ..Default::default()
                },
            ),
        ),
        ev(
            w,
            Dir::S2C,
            EventKind::Frame {
                channel: 1,
                frame: Frame::ContentHeader(Box::new(ContentHeader {
                    class_id: 60,
                    body_size: 10,
                    properties: Properties {
                        message_id: Some("m-000001".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                })),
            },
        ),
        ev(
            w,
            Dir::C2S,
            m(
                MethodKind::BasicAck,
                MethodArgs {
                    delivery_tag: Some(1),
                    multiple: Some(false),
                    ..Default::default()
                },
            ),
        ),
    ];
    let n = 500_000u64;
    let mut ts = T0;
    let start = std::time::Instant::now();
    for i in 1..=n {
        for (k, e) in cycle.iter_mut().enumerate() {
            ts += 10_000;
            e.ts = Timestamp(ts);
            e.frame = i * 4 + k as u64;
            if let EventKind::Frame {
                frame: Frame::Method(mm),
                ..
            } = &mut e.kind
            {
                if mm.args.delivery_tag.is_some() {
                    mm.args.delivery_tag = Some(i);
                }
            }
            s.a.handle(e);
        }
    }
    let el = start.elapsed();
    eprintln!(
        "{} events in {:?}: {:.0} ns/event",
        n * 4,
        el,
        el.as_nanos() as f64 / (n * 4) as f64
    );
    assert!(!s.a.analysis(Timestamp(ts)).has_stall());
}
