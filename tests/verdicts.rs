//! Every failure capture yields its expected verdicts.
//!
//! For each `captures/failures/NAME.expect.json` beside a `NAME.pcap*`, runs the
//! built `amqptrace analyze --format json NAME.pcap*` and checks that each
//! expected verdict is present (same verdict, scope, queue and consumer_tag;
//! `frame` within one packet; explanation containing every listed substring),
//! and that nothing expected healthy got a stall verdict.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/failures")
}

/// `(expect.json, capture)` pairs, sorted by name.
fn cases() -> Vec<(PathBuf, PathBuf)> {
    let dir = failures_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".expect.json") else {
            continue;
        };
        let capture = ["pcapng", "pcap"]
            .iter()
            .map(|ext| dir.join(format!("{stem}.{ext}")))
            .find(|c| c.exists());
        match capture {
            Some(c) => out.push((p, c)),
            None => panic!("{name} has no capture beside it ({stem}.pcap or .pcapng)"),
        }
    }
    out.sort();
    out
}

fn analyze_json(capture: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_amqptrace"))
        .args(["analyze", "--format", "json"])
        .arg(capture)
        .output()
        .expect("run amqptrace");
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}: exit {:?}\nstderr:\n{}",
        capture.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: stdout is not JSON ({e}):\n{}",
            capture.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn same(a: &Value, b: &Value, k: &str) -> bool {
    a.get(k).unwrap_or(&Value::Null) == b.get(k).unwrap_or(&Value::Null)
}

/// Why `got` does not satisfy `want`, or None when it does.
fn mismatch(want: &Value, got: &Value) -> Option<String> {
    for k in ["verdict", "scope", "queue", "consumer_tag"] {
        if !same(want, got, k) {
            return Some(format!("{k}: want {} got {}", want[k], got[k]));
        }
    }
    if let Some(w) = want.get("conn").and_then(Value::as_str) {
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
    let expl = str_field(got, "explanation").unwrap_or("");
    for s in want
        .get("explanation_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !expl.contains(s) {
            return Some(format!("explanation lacks {s:?}: {expl}"));
        }
    }
    None
}

fn is_stall(verdict: &str) -> bool {
    !matches!(verdict, "healthy" | "slow_but_healthy")
}

fn check(expect_path: &Path, capture: &Path) -> Vec<String> {
    let want: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(expect_path).expect("read expect.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let doc = analyze_json(capture);
    let mut problems = Vec::new();
    if str_field(&doc, "schema") != Some("amqptrace.analysis/1") {
        problems.push(format!("schema is {}", doc["schema"]));
    }
    let got = doc["verdicts"].as_array().cloned().unwrap_or_default();
    for w in &want {
        if got.iter().any(|g| mismatch(w, g).is_none()) {
            continue;
        }
        // Report against the closest candidate: same subject, any verdict.
        let subject: Vec<&Value> = got
            .iter()
            .filter(|g| {
                same(w, g, "scope")
                    && same(w, g, "consumer_tag")
                    && w.get("conn").is_none_or(|c| g.get("conn") == Some(c))
            })
            .collect();
        let why: Vec<String> = subject.iter().filter_map(|g| mismatch(w, g)).collect();
        problems.push(format!(
            "missing {} {} {}: {}",
            w["verdict"],
            w["scope"],
            w.get("consumer_tag")
                .or(w.get("conn"))
                .unwrap_or(&Value::Null),
            if why.is_empty() {
                "no verdict on that subject".to_string()
            } else {
                why.join(" | ")
            }
        ));
        // No stall on what is expected healthy.
    }
    for w in want
        .iter()
        .filter(|w| str_field(w, "verdict") == Some("healthy"))
    {
        for g in &got {
            let subject = same(w, g, "scope")
                && same(w, g, "consumer_tag")
                && same(w, g, "queue")
                && w.get("conn").is_none_or(|c| g.get("conn") == Some(c));
            let v = str_field(g, "verdict").unwrap_or("");
            if subject && is_stall(v) {
                problems.push(format!(
                    "stall verdict {v} on {} expected healthy: {}",
                    g.get("consumer_tag")
                        .filter(|t| !t.is_null())
                        .unwrap_or(&g["conn"]),
                    str_field(g, "explanation").unwrap_or("")
                ));
            }
        }
    }
    problems
}

#[test]
fn failure_captures_yield_their_expected_verdicts() {
    let cases = cases();
    let mut failed = Vec::new();
    for (expect, capture) in &cases {
        let problems = check(expect, capture);
        let name = capture
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if problems.is_empty() {
            eprintln!("ok   {name}");
        } else {
            eprintln!("FAIL {name}");
            for p in &problems {
                eprintln!("     {p}");
            }
            failed.push(name);
        }
    }
    eprintln!("{} capture(s), {} failed", cases.len(), failed.len());
    assert!(
        failed.is_empty(),
        "captures with wrong verdicts: {failed:?}"
    );
}
