//! `amqptrace run`: the CI wrapper. Fast tests with `sh` as the command
//! (exit codes, the URL handed to the child, signals, artifacts written
//! however the child ends), and the end-to-end Dramatiq tests against the
//! real RabbitMQ on 127.0.0.1:5672: `tests/dramatiq/run_worker.py` starts a
//! worker with `subprocess.Popen`, which reaches the broker through the
//! proxy because it inherits DRAMATIQ_RABBITMQ_URL.
//!
//! The Dramatiq tests need the virtualenv of `scripts/lib.sh` (pika,
//! dramatiq); they create it when it is missing (about 30 s, from PyPI).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::util::{
    amqptrace_run as run, analyze_json, assert_same_text, cause_of, is_stall, pika_script,
    publishes, python, read_json, repo, temp_dir, text, unique, verdicts_of, wait_until, Cleanup,
    Daemon, BIN,
};

const ARTIFACTS: [&str; 5] = [
    "timeline.jsonl",
    "verdicts.json",
    "summary.txt",
    "capture.pcapng",
    "report.html",
];

/// Every artifact exists; returns verdicts.json.
fn artifacts_written(dir: &Path) -> Value {
    for name in ARTIFACTS {
        assert!(
            dir.join(name).is_file(),
            "{name} missing in {}",
            dir.display()
        );
    }
    let pcap = std::fs::read(dir.join("capture.pcapng")).unwrap();
    assert_eq!(
        &pcap[..4],
        &[0x0a, 0x0d, 0x0d, 0x0a],
        "a pcapng section header"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("<section id=\"verdicts\">"),
        "report.html has its verdicts"
    );
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(
        summary.starts_with("verdicts:") || summary.starts_with("causes:"),
        "{summary}"
    );
    read_json(&dir.join("verdicts.json"))
}

#[test]
fn exit_code_is_the_commands_and_artifacts_are_written() {
    let dir = temp_dir();
    let art = dir.path().join("art");
    let out = run(
        &art,
        &[
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "to-stdout\n",
        "the child's stdout passes through"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("to-stderr\n"), "{stderr}");
    for line in stderr.lines().filter(|l| *l != "to-stderr") {
        assert!(line.starts_with("amqptrace: "), "unprefixed: {line}");
    }
    let v = artifacts_written(&art);
    assert_eq!(v["connections"].as_array().map(Vec::len), Some(0));
}

#[test]
fn killed_child_exits_128_plus_signal_with_artifacts() {
    let dir = temp_dir();
    let out = run(dir.path(), &["--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    artifacts_written(dir.path());
}

#[test]
fn missing_command_exits_127_with_artifacts() {
    let dir = temp_dir();
    let out = run(dir.path(), &["--", "/nonexistent/amqptrace-test-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("amqptrace: cannot run"));
    artifacts_written(dir.path());
}

#[test]
fn child_gets_the_proxy_url_with_only_host_and_port_rewritten() {
    let dir = temp_dir();
    let upstream = "amqp://app:s3cret@127.0.0.1:5672/v1?heartbeat=5";
    let script = "echo \"$AMQP_URL|$BROKER_URL|$CELERY_BROKER_URL|$DRAMATIQ_RABBITMQ_URL|$RABBITMQ_URL|$MY_URL\"";
    let out = run(
        dir.path(),
        &["--upstream", upstream, "--", "sh", "-c", script],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let vars: Vec<&str> = stdout.trim_end().split('|').collect();
    assert_eq!(vars.len(), 6, "{stdout}");
    let url = vars[0];
    let port: u16 = url
        .strip_prefix("amqp://app:s3cret@127.0.0.1:")
        .and_then(|r| r.strip_suffix("/v1?heartbeat=5"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("rewritten URL {url}"));
    assert_ne!(port, 5672);
    assert_eq!(&vars[..5], &[url; 5], "every default variable");
    assert_eq!(vars[5], "", "only the named variables");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password is printed: {stderr}"
    );
    for name in ARTIFACTS {
        let body = std::fs::read(dir.path().join(name)).unwrap();
        assert!(!text(&body).contains("s3cret"), "the password is in {name}");
    }

    // --env replaces the defaults.
    let out = run(
        dir.path(),
        &[
            "--upstream",
            upstream,
            "--env",
            "MY_URL",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let vars: Vec<&str> = stdout.trim_end().split('|').collect();
    assert_eq!(&vars[..5], &[""; 5], "{stdout}");
    assert!(
        vars[5].starts_with("amqp://app:s3cret@127.0.0.1:"),
        "{stdout}"
    );
}

/// `amqptrace run -- COMMAND` started (stderr piped, in its own process
/// group, as under a CI runner: no terminal sends a signal to the command
/// too, so amqptrace must pass it on); returns once the command runs.
fn started(dir: &Path, command: &[&str]) -> Daemon {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--artifacts"])
        .arg(dir)
        .arg("--")
        .args(command)
        .process_group(0);
    let (daemon, _) = Daemon::spawn(&mut cmd, "amqptrace: proxy on");
    // The command is spawned right after that line; give it a moment to exist.
    std::thread::sleep(Duration::from_millis(200));
    daemon
}

/// `amqptrace run -- sleep 30`, sent `signal` once it runs (stopped within
/// 10 s, not 30): returns its exit code and its stderr.
fn signalled(dir: &Path, signal: &str) -> (Option<i32>, String) {
    let mut run = started(dir, &["sleep", "30"]);
    let status = run.stop(signal, Duration::from_secs(10));
    (status.code(), run.stderr())
}

/// `amqptrace run -- sleep 30` sent SIGNAL (`TERM`, number `signo`): it
/// says so, exits 128 + signo as the command did, and writes the artifacts.
fn assert_signal_forwarded(signal: &str, signo: i32) {
    let dir = temp_dir();
    let (code, stderr) = signalled(dir.path(), &format!("-{signal}"));
    assert_eq!(code, Some(128 + signo), "{stderr}");
    assert!(
        stderr.contains(&format!("SIG{signal} received")),
        "{stderr}"
    );
    artifacts_written(dir.path());
}

#[test]
fn sigterm_is_forwarded_and_artifacts_are_written() {
    assert_signal_forwarded("TERM", 15);
}

#[test]
fn sigint_is_forwarded_and_artifacts_are_written() {
    assert_signal_forwarded("INT", 2);
}

#[test]
fn command_ignoring_sigterm_still_leaves_the_artifacts() {
    let dir = temp_dir();
    let mut run = started(dir.path(), &["sh", "-c", "trap '' TERM; sleep 4"]);
    run.signal("-TERM");
    // The command goes on; amqptrace writes what it has at once, so a CI
    // runner that kills it after its grace period still finds the reports.
    wait_until(Duration::from_secs(3), || {
        dir.path().join("report.html").is_file()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(run.running(), "amqptrace waits for the command");
    run.stop("-KILL", Duration::from_secs(10));
    artifacts_written(dir.path());
}

/// `amqptrace run --fail-on-stall -- python run_worker.py MODE`, default thresholds.
fn dramatiq(mode: &str) -> E2e {
    let queue = unique(&format!("e2e-{mode}"));
    let r = e2e(
        "tests/dramatiq/run_worker.py",
        &queue,
        &[mode, "--linger", "5"],
    );
    artifacts_written(&r.art);
    r
}

#[test]
fn client_killed_mid_connection_is_in_the_artifacts() {
    let dir = temp_dir();
    let queue = unique("e2e-crash");
    // Declares a queue, consumes from it, then dies by SIGKILL: no connection.close.
    let consume = format!("ch.basic_consume('{queue}', lambda *a: None)");
    let script = pika_script(
        &queue,
        &[
            &consume,
            "c.process_data_events(0.2)",
            "os.kill(os.getpid(), 9)",
        ],
    );
    let out = run(
        dir.path(),
        &["--", python().to_str().unwrap(), "-c", &script],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let v = artifacts_written(dir.path());
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{v:#}");
    assert!(conns[0]["closed_by"].is_null(), "{v:#}");
    assert!(
        !conns[0]["tcp_end"].is_null(),
        "the TCP end is traced: {v:#}"
    );
    let consumers = v["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 1, "{v:#}");
    assert_eq!(consumers[0]["queue"], queue.as_str());
    let summary = std::fs::read_to_string(dir.path().join("summary.txt")).unwrap();
    assert!(summary.contains("without connection.close"), "{summary}");
}

#[test]
fn dramatiq_worker_healthy() {
    let r = dramatiq("healthy");
    let stderr = text(&r.out.stderr);
    assert_eq!(r.out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("run_worker: worker processed 5 messages"),
        "{stderr}"
    );
    let vs = verdicts_of(&r.verdicts);
    assert!(!vs.is_empty());
    for v in &vs {
        // Dramatiq's delay-queue consumer receives nothing by design: idle.
        let idle_delay = v["verdict"] == "idle" && v["queue"] == format!("{}.DQ", r.queue).as_str();
        assert!(v["verdict"] == "healthy" || idle_delay, "{v:#}");
    }
    // The worker's consumer on its queue got and acknowledged the 5 messages.
    let consumers = r.verdicts["consumers"].as_array().unwrap();
    let worker = consumers
        .iter()
        .find(|c| c["queue"] == r.queue.as_str())
        .unwrap_or_else(|| panic!("no consumer on {} in {consumers:#?}", r.queue));
    assert_eq!(worker["deliveries"], 5);
    assert_eq!(worker["acks"], 5);

    let summary = std::fs::read_to_string(r.art.join("summary.txt")).unwrap();
    assert!(
        summary.contains("healthy: 1 consumer(s)") && summary.contains("idle: 1 consumer(s)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("queue '{}'", r.queue)),
        "{summary}"
    );
    let html = std::fs::read_to_string(r.art.join("report.html")).unwrap();
    assert!(html.contains("No stall: every consumer and connection is healthy."));
    let timeline = std::fs::read_to_string(r.art.join("timeline.jsonl")).unwrap();
    let delivers = timeline
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|e| e["method"] == "basic.deliver")
        .count();
    assert_eq!(delivers, 5, "deliveries in timeline.jsonl");
    // The recording is a capture amqptrace itself reads back.
    let re = analyze_json(&r.art.join("capture.pcapng"));
    assert!(re.to_string().contains(&r.queue), "{re:#}");
}

#[test]
fn dramatiq_worker_stalled_on_a_mistyped_queue() {
    let r = dramatiq("stalled");
    let stderr = text(&r.out.stderr);
    // The script itself succeeds; --fail-on-stall turns the verdict into the exit code.
    assert!(
        stderr.contains("run_worker: 0 message(s) processed"),
        "{stderr}"
    );
    assert_eq!(r.out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("amqptrace: --fail-on-stall: a stall was found"),
        "{stderr}"
    );
    let routing_key = format!("{}-typo", r.queue);
    let stall = verdicts_of(&r.verdicts)
        .into_iter()
        .find(|v| v["verdict"] == "no_messages_routed_to_queue" && v["queue"] == r.queue.as_str())
        .unwrap_or_else(|| panic!("no stall verdict on {}: {:#}", r.queue, r.verdicts));
    let explanation = stall["explanation"].as_str().unwrap();
    assert!(
        explanation.contains(&format!("routing key '{routing_key}'")),
        "{explanation}"
    );
    assert!(stall["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["method"] == "basic.publish" && e["routing_key"] == routing_key.as_str()));
    let summary = std::fs::read_to_string(r.art.join("summary.txt")).unwrap();
    assert!(summary.contains("no_messages_routed_to_queue"), "{summary}");
    let html = std::fs::read_to_string(r.art.join("report.html")).unwrap();
    assert!(html.contains("data-verdict=\"no_messages_routed_to_queue\""));
    assert!(html.contains(&format!("routing key &#39;{routing_key}&#39;")));
    if std::env::var_os("AMQPTRACE_SHOW_STALL").is_some() {
        eprintln!("{stderr}\n--- summary.txt\n{summary}");
    }
}

// ---------------------------------------------------------------------------
// Issue 11: the seed case and Celery under `amqptrace run` with default options
// (no --stall-after): the verdicts of the finished recording, the headline cause,
// no stall on bystanders, and `analyze` on the left capture.pcapng agreeing.

struct E2e {
    out: Output,
    art: PathBuf,
    /// The worker's queue.
    queue: String,
    verdicts: Value,
    dir: tempfile::TempDir,
}

/// `amqptrace run --fail-on-stall -- python SCRIPT ARGS... --queue QUEUE --markers DIR`,
/// nothing else on amqptrace's command line; every artifact written, none empty
/// (their contents are other tests' business).
fn e2e(script: &str, queue: &str, args: &[&str]) -> E2e {
    let py = python();
    let dir = temp_dir();
    let art = dir.path().join("artifacts");
    let markers = dir.path().join("markers");
    let script = repo(script);
    let mut argv = vec![
        "--fail-on-stall",
        "--",
        py.to_str().unwrap(),
        script.to_str().unwrap(),
    ];
    argv.extend(args);
    argv.extend(["--queue", queue, "--markers", markers.to_str().unwrap()]);
    let out = run(&art, &argv);
    for name in ARTIFACTS {
        let len = std::fs::metadata(art.join(name)).map(|m| m.len());
        assert!(
            len.is_ok_and(|l| l > 0),
            "{name} missing or empty: {}",
            text(&out.stderr)
        );
    }
    let verdicts = read_json(&art.join("verdicts.json"));
    E2e {
        out,
        art,
        queue: queue.to_string(),
        verdicts,
        dir,
    }
}

fn is_stall_verdict(v: &Value) -> bool {
    is_stall(v["verdict"].as_str().unwrap_or(""))
}

/// The verdict's subject, for messages.
fn subject(v: &Value) -> String {
    format!(
        "{} {} queue {} on {}",
        v["verdict"], v["scope"], v["queue"], v["conn"]
    )
}

/// The worker's consumer on `queue` is `no_messages_routed_to_queue`, certain, its
/// explanation naming `queue` and `dest` and its cause naming `dest`; no other
/// verdict is a stall (bystanders: Dramatiq's .DQ consumer and helper connections,
/// Celery's pidbox, gossip and reply consumers).
fn assert_only_misrouted(doc: &Value, queue: &str, dest: &str) {
    let vs = verdicts_of(doc);
    let (index, victim) = vs
        .iter()
        .enumerate()
        .find(|(_, v)| v["scope"] == "consumer" && v["queue"] == queue)
        .unwrap_or_else(|| panic!("no verdict on the consumer of {queue}: {doc:#}"));
    assert_eq!(
        victim["verdict"], "no_messages_routed_to_queue",
        "{victim:#}"
    );
    assert_eq!(victim["certainty"], "certain", "{victim:#}");
    let explanation = victim["explanation"].as_str().unwrap_or("");
    for name in [queue, dest] {
        assert!(
            explanation.contains(&format!("'{name}'")),
            "the explanation does not name '{name}': {explanation}"
        );
    }
    let cause = cause_of(doc, index)
        .unwrap_or_else(|| panic!("no cause lists verdict {index}: {:#}", doc["causes"]));
    let text = cause["text"].as_str().unwrap_or("");
    assert!(
        text.contains(dest),
        "the cause does not name {dest}: {text}"
    );
    let others: Vec<String> = vs
        .iter()
        .enumerate()
        .filter(|(i, v)| *i != index && is_stall_verdict(v))
        .map(|(_, v)| subject(v))
        .collect();
    assert!(
        others.is_empty(),
        "stalls besides the worker's consumer: {others:#?}"
    );
}

/// Every verdict healthy, idle or slow_but_healthy, and no cause.
fn assert_no_stall(doc: &Value) {
    let stalls: Vec<String> = verdicts_of(doc)
        .into_iter()
        .filter(|v| is_stall_verdict(v))
        .map(subject)
        .collect();
    assert!(stalls.is_empty(), "stalls in a healthy run: {stalls:#?}");
    assert!(
        doc["causes"].as_array().is_none_or(|c| c.is_empty()),
        "causes in a healthy run: {:#}",
        doc["causes"]
    );
}

/// `amqptrace analyze --format json` on the recording `run` left gives the same
/// verdicts as `run` did, and counts each consumer and each publish once.
fn assert_reanalysis_agrees(r: &E2e) -> Value {
    let doc = analyze_json(&r.art.join("capture.pcapng"));
    let key = |v: &&Value| {
        format!(
            "{} {} {} {} {}",
            v["verdict"], v["scope"], v["queue"], v["consumer_tag"], v["certainty"]
        )
    };
    let mut want: Vec<String> = verdicts_of(&r.verdicts).iter().map(key).collect();
    let mut got: Vec<String> = verdicts_of(&doc).iter().map(key).collect();
    want.sort();
    got.sort();
    assert_same_text(
        "analyze on capture.pcapng vs run's verdicts.json",
        &want.join("\n"),
        &got.join("\n"),
    );
    let consumers = doc["consumers"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for c in consumers {
        let k = format!("{} {}", c["consumer_tag"], c["queue"]);
        assert!(seen.insert(k.clone()), "consumer {k} reported twice");
    }
    assert_eq!(
        consumers.len(),
        r.verdicts["consumers"].as_array().unwrap().len(),
        "consumers in capture.pcapng vs verdicts.json"
    );
    assert_eq!(
        publishes(&doc),
        publishes(&r.verdicts),
        "publishes in capture.pcapng vs verdicts.json"
    );
    doc
}

fn dramatiq_cleanup(queues: &[&str]) -> Cleanup {
    Cleanup {
        queues: queues
            .iter()
            .flat_map(|q| ["", ".DQ", ".XQ"].map(|s| format!("{q}{s}")))
            .collect(),
        exchanges: Vec::new(),
        exchanges_if_unused: Vec::new(),
    }
}

fn celery_cleanup(queues: &[&str]) -> Cleanup {
    Cleanup {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        exchanges: queues.iter().map(|q| q.to_string()).collect(),
        exchanges_if_unused: vec!["celeryev", "celery.pidbox", "reply.celery.pidbox"],
    }
}

/// The worker consumes `queue`, the sender sends to `dest`: the script succeeds,
/// says `processed` (none), and `--fail-on-stall` fails the run for the misrouting.
fn assert_misrouted_run_fails(script: &str, processed: &str, queue: &str, dest: &str) -> E2e {
    let r = e2e(script, queue, &["--send-to", dest]);
    let stderr = text(&r.out.stderr);
    assert!(stderr.contains(processed), "{}", r.context());
    assert_eq!(r.out.status.code(), Some(1), "{}", r.context());
    assert!(
        stderr.contains("amqptrace: --fail-on-stall: a stall was found"),
        "the exit code is the script's, not amqptrace's verdict: {}",
        r.context()
    );
    assert_only_misrouted(&r.verdicts, queue, dest);
    r
}

impl E2e {
    /// What a failed assertion shows: amqptrace's and the script's stderr, the
    /// summary artifact (connections, publishes, consumers' counts) and the end
    /// of the worker's log, so that a failure in CI says where the messages went.
    fn context(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let log = read(self.dir.path().join("markers").join("worker.log"));
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "{}\n--- summary.txt\n{}\n--- worker.log (last 30 lines)\n{}",
            text(&self.out.stderr),
            read(self.art.join("summary.txt")),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// The sender sends to the worker's `queue`: `processed` (all), exit 0, no stall.
fn assert_healthy_run(script: &str, processed: &str, queue: &str) -> E2e {
    let r = e2e(script, queue, &["--send-to", queue]);
    assert!(text(&r.out.stderr).contains(processed), "{}", r.context());
    assert_eq!(r.out.status.code(), Some(0), "{}", r.context());
    assert_no_stall(&r.verdicts);
    r
}

#[test]
fn seed_case_dramatiq_worker_on_another_queue_fails_the_run() {
    let queue = unique("seed-default");
    let dest = unique("other");
    let _cleanup = dramatiq_cleanup(&[&queue, &dest]);
    let r =
        assert_misrouted_run_fails("tests/dramatiq/seed.py", "seed: processed 0", &queue, &dest);
    let doc = assert_reanalysis_agrees(&r);
    assert_eq!(publishes(&doc), 10, "the sender's 10 messages, once each");
}

#[test]
fn seed_case_dramatiq_worker_on_the_right_queue_is_healthy() {
    let queue = unique("seed-healthy");
    let _cleanup = dramatiq_cleanup(&[&queue]);
    let r = assert_healthy_run("tests/dramatiq/seed.py", "seed: processed 10", &queue);
    let doc = assert_reanalysis_agrees(&r);
    assert_eq!(publishes(&doc), 10, "the sender's 10 messages, once each");
}

#[test]
fn celery_task_sent_to_another_queue_fails_the_run() {
    let queue = unique("celery-a");
    let dest = unique("celery-b");
    let _cleanup = celery_cleanup(&[&queue, &dest]);
    let r = assert_misrouted_run_fails(
        "tests/celery/run_celery.py",
        "run_celery: processed 0",
        &queue,
        &dest,
    );
    // Celery's control consumers are there, and idle or healthy (checked above).
    let control = verdicts_of(&r.verdicts)
        .into_iter()
        .filter(|v| {
            v["queue"]
                .as_str()
                .is_some_and(|q| q.ends_with(".celery.pidbox") || q.starts_with("celeryev."))
        })
        .count();
    assert!(control >= 1, "no Celery control consumer: {:#}", r.verdicts);
    assert_reanalysis_agrees(&r);
}

#[test]
fn celery_task_sent_to_the_workers_queue_is_healthy() {
    let queue = unique("celery-a");
    let _cleanup = celery_cleanup(&[&queue]);
    let r = assert_healthy_run(
        "tests/celery/run_celery.py",
        "run_celery: processed 3",
        &queue,
    );
    assert_reanalysis_agrees(&r);
}

/// A publisher that drops its socket after each three publishes, as Celery's
/// `app.pool.force_close_all()` does, against the queue's only consumer with
/// room: the real broker loses some (the script stops at the first loss), and
/// `amqptrace run` with default options names them: `published_not_delivered`,
/// certain, on that consumer, with the abrupt end as the cause.
#[test]
fn publishes_the_broker_dropped_at_an_abrupt_close_are_published_not_delivered() {
    let queue = unique("dropped");
    let _cleanup = Cleanup::queues(&[&queue]);
    let dir = temp_dir();
    let script = repo("tests/dropped_publishes.py");
    let out = run(
        dir.path(),
        &[
            "--fail-on-stall",
            "--",
            python().to_str().unwrap(),
            script.to_str().unwrap(),
            "--queue",
            &queue,
        ],
    );
    let stderr = text(&out.stderr);
    // The script's own count: "published P delivered D", D < P.
    let counts: Vec<u64> = stderr
        .lines()
        .find_map(|l| l.strip_prefix("dropped_publishes: published "))
        .unwrap_or_else(|| panic!("no count from the script: {stderr}"))
        .split(" delivered ")
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let (published, delivered) = (counts[0], counts[1]);
    assert!(delivered < published, "{stderr}");
    assert_eq!(out.status.code(), Some(1), "--fail-on-stall: {stderr}");
    let doc = read_json(&dir.path().join("verdicts.json"));
    let stalls: Vec<&Value> = verdicts_of(&doc)
        .into_iter()
        .filter(|v| is_stall_verdict(v))
        .collect();
    assert_eq!(stalls.len(), 1, "{doc:#}");
    let v = stalls[0];
    assert_eq!(v["verdict"], "published_not_delivered", "{v:#}");
    assert_eq!(v["certainty"], "certain", "{v:#}");
    assert_eq!(v["queue"], queue.as_str(), "{v:#}");
    let explanation = v["explanation"].as_str().unwrap();
    let said = format!(
        "{} of the {published} message(s) published to queue '{queue}'",
        published - delivered
    );
    assert!(explanation.contains(&said), "{explanation}");
    assert!(
        explanation.contains("counted 1 consumer(s) on the queue")
            && explanation.contains("and no connection.close, as did ")
            && explanation.contains(" other connection(s) that published"),
        "{explanation}"
    );
}
