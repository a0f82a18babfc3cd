//! Every failure capture yields its expected verdicts, with default options.
//!
//! One `#[test]` per `captures/failures/NAME.expect.json` (listed in `captures!`
//! below, so that a failure names its capture; `the_list_is_the_folder` fails when
//! the folder is unreadable, empty, or holds a capture the list lacks). Each runs
//! the built `amqptrace analyze --format json NAME.pcap*` and checks that every
//! expected verdict is present: same verdict, scope, queue and consumer_tag (and
//! conn), `frame` within one packet, the explanation containing every
//! `explanation_contains` substring, `certainty` equal when the expectation gives
//! one, and, for `cause_contains`, a top-level cause whose `verdicts` holds this
//! verdict's index and whose text contains each substring (CONTRACT.md of issue
//! 11). Whatever is expected `healthy`, `idle` or `slow_but_healthy` must get no
//! stall verdict, certain or uncertain; a capture whose expectations are all of
//! those gets no stall at all and no cause.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::util::{analyze_json, cause_of, is_stall, read_json, repo};

/// One `#[test]` per capture, named by its file stem with `-` spelled `_`;
/// `LISTED` holds the test names.
macro_rules! captures {
    ($($test:ident),* $(,)?) => {
        /// The captures that have a test, by test name.
        const LISTED: &[&str] = &[$(stringify!($test)),*];
        $(
            #[test]
            fn $test() {
                check_capture(&stringify!($test).replace('_', "-"));
            }
        )*
    };
}

captures! {
    ack_timeout,
    aio_pika_wrong_queue,
    amqp_0_10_header,
    amqp_1_0_header,
    amqp_1_0_sasl_header,
    amqplib_prefetch_quiet,
    amqplib_wrong_queue_quiet,
    blocked,
    blocked_unannounced,
    bunny_prefetch_quiet,
    bunny_wrong_queue_quiet,
    celery_eta,
    celery_healthy,
    celery_wrong_queue,
    channel_max_530,
    consumer_not_restored,
    consumer_timeout_near,
    dead_letter_ttl,
    dramatiq_healthy,
    dramatiq_helpers_idle,
    dramatiq_wrong_queue,
    exclusive_consumer_403,
    exclusive_queue_405,
    fork_interleaved,
    frame_too_large_501,
    healthy,
    heartbeat_timeout,
    inequivalent_args_406,
    lapin_prefetch_exhausted,
    mid_connection,
    missing_queue_404,
    nack_requeue_loop,
    peers_settle_prefetch,
    prefetch_exhausted,
    publish_nacked,
    publish_returned,
    publish_unconfirmed,
    publish_unroutable,
    queue_deleted_cancel,
    quorum_delivery_limit,
    sac_standby,
    slow_but_healthy,
    slow_mid_message,
    stream_no_qos,
    stream_window_full,
    three_consumers_one_stalls,
    unexpected_frame_505,
    unknown_tag_after_reconnect,
    unknown_tag_double_ack,
    unknown_tag_wrong_channel,
    vhost_not_allowed_530,
    wrong_queue,
}

fn failures_dir() -> PathBuf {
    repo("captures/failures")
}

/// The stems of every `NAME.expect.json` in the folder; panics when it cannot be read.
fn expectation_files() -> BTreeSet<String> {
    let dir = failures_dir();
    let rd =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    rd.map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())))
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".expect.json"))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn the_list_is_the_folder() {
    let found = expectation_files();
    assert!(
        !found.is_empty(),
        "no NAME.expect.json in {}",
        failures_dir().display()
    );
    let listed: BTreeSet<String> = LISTED.iter().map(|s| s.replace('_', "-")).collect();
    let unlisted: Vec<&String> = found.difference(&listed).collect();
    let missing: Vec<&String> = listed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "captures! in tests/tests/verdicts.rs and captures/failures/ differ: \
         not listed {unlisted:?}, listed but absent {missing:?}"
    );
}

fn capture_of(name: &str) -> PathBuf {
    let dir = failures_dir();
    ["pcapng", "pcap"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|c| c.exists())
        .unwrap_or_else(|| {
            panic!("{name}.expect.json has no capture beside it ({name}.pcapng or .pcap)")
        })
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn same(a: &Value, b: &Value, k: &str) -> bool {
    a.get(k).unwrap_or(&Value::Null) == b.get(k).unwrap_or(&Value::Null)
}

fn strings<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a str> {
    v.get(k)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The same scope, consumer tag and (when expected) connection.
fn same_consumer(want: &Value, got: &Value) -> bool {
    same(want, got, "scope")
        && same(want, got, "consumer_tag")
        && want.get("conn").is_none_or(|c| got.get("conn") == Some(c))
}

/// The same consumer, channel or connection.
fn same_subject(want: &Value, got: &Value) -> bool {
    same_consumer(want, got) && same(want, got, "queue")
}

/// Why verdict `index` of `doc` does not satisfy `want`, or None when it does.
fn mismatch(want: &Value, doc: &Value, index: usize) -> Option<String> {
    let got = &doc["verdicts"][index];
    for k in ["verdict", "scope", "queue", "consumer_tag"] {
        if !same(want, got, k) {
            return Some(format!("{k}: want {} got {}", want[k], got[k]));
        }
    }
    if let Some(w) = str_field(want, "conn") {
        if str_field(got, "conn") != Some(w) {
            return Some(format!("conn: want {w} got {}", got["conn"]));
        }
    }
    if let Some(wf) = want.get("frame").and_then(Value::as_u64) {
        match got.get("frame").and_then(Value::as_u64) {
            Some(gf) if gf.abs_diff(wf) <= 1 => {}
            other => return Some(format!("frame: want {wf}±1 got {other:?}")),
        }
    }
    if let Some(w) = str_field(want, "certainty") {
        if str_field(got, "certainty") != Some(w) {
            return Some(format!("certainty: want {w} got {}", got["certainty"]));
        }
    }
    let expl = str_field(got, "explanation").unwrap_or("");
    if let Some(s) = strings(want, "explanation_contains").find(|s| !expl.contains(s)) {
        return Some(format!("explanation lacks {s:?}: {expl}"));
    }
    let wanted: Vec<&str> = strings(want, "cause_contains").collect();
    if !wanted.is_empty() {
        let Some(cause) = cause_of(doc, index) else {
            return Some(format!(
                "no cause lists verdict {index}; causes: {}",
                doc["causes"]
            ));
        };
        let text = str_field(cause, "text").unwrap_or("");
        if let Some(s) = wanted.iter().find(|s| !text.contains(**s)) {
            return Some(format!("cause text lacks {s:?}: {text}"));
        }
    }
    None
}

fn describe(v: &Value) -> String {
    let who = v
        .get("consumer_tag")
        .filter(|t| !t.is_null())
        .or(v.get("conn"))
        .unwrap_or(&Value::Null);
    format!("{} {} {}", v["verdict"], v["scope"], who)
}

/// Every way the analysis of capture `name` misses its expectations.
fn problems(name: &str) -> Vec<String> {
    let path = failures_dir().join(format!("{name}.expect.json"));
    expectation_problems(&path, &analyze_json(&capture_of(name)))
}

/// Every way the analysis document `doc` misses the expectations in `path`
/// (also for the captures of AMQP over TLS, analysed with their key log).
pub(crate) fn expectation_problems(path: &std::path::Path, doc: &Value) -> Vec<String> {
    let want = read_json(path);
    let want = want
        .as_array()
        .unwrap_or_else(|| panic!("{} is not a list of verdicts", path.display()));
    assert!(!want.is_empty(), "{} expects nothing", path.display());
    let mut problems = Vec::new();
    if str_field(doc, "schema") != Some("amqptrace.analysis/1") {
        problems.push(format!("schema is {}", doc["schema"]));
    }
    let got = doc["verdicts"].as_array().cloned().unwrap_or_default();
    for w in want {
        if (0..got.len()).any(|i| mismatch(w, doc, i).is_none()) {
            continue;
        }
        // Report against the candidates on the same subject, any verdict.
        let why: Vec<String> = (0..got.len())
            .filter(|&i| same_consumer(w, &got[i]))
            .filter_map(|i| mismatch(w, doc, i))
            .collect();
        problems.push(format!(
            "missing {}: {}",
            describe(w),
            if why.is_empty() {
                "no verdict on that subject".to_string()
            } else {
                why.join(" | ")
            }
        ));
    }
    // Nothing expected to be fine gets a stall, certain or uncertain.
    for w in want
        .iter()
        .filter(|w| !is_stall(str_field(w, "verdict").unwrap_or("")))
    {
        for g in got.iter().filter(|g| same_subject(w, g)) {
            let v = str_field(g, "verdict").unwrap_or("");
            if is_stall(v) {
                problems.push(format!(
                    "{} stall {v} on {} expected {}: {}",
                    str_field(g, "certainty").unwrap_or("(no certainty)"),
                    describe(g),
                    w["verdict"],
                    str_field(g, "explanation").unwrap_or("")
                ));
            }
        }
    }
    // A capture expected healthy throughout: no stall anywhere, no cause.
    if want
        .iter()
        .all(|w| !is_stall(str_field(w, "verdict").unwrap_or("")))
    {
        for g in got
            .iter()
            .filter(|g| is_stall(str_field(g, "verdict").unwrap_or("")))
        {
            problems.push(format!(
                "healthy capture, yet {} ({})",
                describe(g),
                str_field(g, "certainty").unwrap_or("no certainty")
            ));
        }
        if doc["causes"].as_array().is_some_and(|c| !c.is_empty()) {
            problems.push(format!("healthy capture, yet causes: {}", doc["causes"]));
        }
    }
    problems
}

fn check_capture(name: &str) {
    let problems = problems(name);
    assert!(
        problems.is_empty(),
        "{name}: the analysis misses its expectations:\n  {}",
        problems.join("\n  ")
    );
}
