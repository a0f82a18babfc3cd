//! report.html in a real headless Chromium, and the chrome-trace export checked
//! against the Trace Event Format's rules.
//!
//! The browser is Debian's `chromium` (`/usr/bin/chromium`, or `$CHROMIUM`),
//! driven over the DevTools protocol through `--remote-debugging-pipe` (fd 3
//! in, fd 4 out, NUL-separated JSON): no WebDriver server, no crate, nothing
//! downloaded at run time. The page's test hook `window.__amqptrace` says
//! what it drew; the canvas pixels are checked too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{self, assert_same_text, repo, temp_dir, Run};

/// `amqptrace ARGS...`, which must exit 0, 1 (a stall) or 3 (a damaged capture).
fn amqptrace(args: &[&str]) -> Run {
    let run = util::amqptrace(args);
    assert!(
        matches!(run.code, Some(0 | 1 | 3)),
        "amqptrace {args:?} failed: {}",
        run.context()
    );
    run
}

fn build_report(input: &Path, dir: &Path) -> PathBuf {
    let html = dir.join("report.html");
    amqptrace(&[
        "report",
        input.to_str().unwrap(),
        "-o",
        html.to_str().unwrap(),
    ]);
    html
}

// ---- a minimal DevTools-protocol client over Chromium's pipe ----

struct Browser {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    /// Events received so far (console messages, network requests, …).
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let exe = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&exe).exists(),
            "{exe} not found: install Debian's chromium (apt-get install -y chromium), as .ci/run does"
        );
        let profile = temp_dir();
        // The pipe protocol wants our write end on the browser's fd 3 and our read end on its fd 4.
        let script = r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#;
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1400,1000",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let to = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1 << 16];
            loop {
                let n = match out.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(i) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        }
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == json!(id) => {
                    assert!(v.get("error").is_none(), "{method} failed: {v}");
                    return v["result"].clone();
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => panic!("no answer to {method} within 60 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium went away during {method}"),
            }
        }
    }

    /// Opens `url` in a new page with the given viewport; returns the page's session id.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        let s = Some(session.as_str());
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
            "Page.enable",
        ] {
            self.call(s, domain, json!({}));
        }
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        self.call(s, "Page.navigate", json!({"url": url}));
        session
    }

    fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    fn wait_for(&mut self, session: &str, expr: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(session, expr);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mouse(&mut self, session: &str, kind: &str, x: f64, y: f64, extra: Value) {
        let mut p = json!({"type": kind, "x": x, "y": y});
        if let (Value::Object(p), Value::Object(e)) = (&mut p, extra) {
            p.extend(e);
        }
        self.call(Some(session), "Input.dispatchMouseEvent", p);
    }

    /// The left button pressed (`mousePressed`) or released (`mouseReleased`) at (x, y).
    fn left_button(&mut self, session: &str, kind: &str, x: f64, y: f64) {
        let left = json!({"button": "left", "clickCount": 1});
        self.mouse(session, kind, x, y, left);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for ch in bytes.chunks(4) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &v)| acc | (v as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..ch.len()]);
    }
    out
}

/// Pixels that differ from the canvas background, in a region of a canvas (CSS pixels).
const INKED: &str = r#"(function (id, x, y, w, h) {
  const c = document.getElementById(id), g = c.getContext('2d');
  const d = g.getImageData(x, y, w, h).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240)) n++;
  return n; })"#;

#[test]
fn stalled_report_in_headless_chromium() {
    let dir = temp_dir();
    let html = build_report(
        &repo("captures/failures/prefetch-exhausted.pcapng"),
        dir.path(),
    );
    let url = format!("file://{}", html.display());
    let mut b = Browser::launch();
    let s = b.open(&url);
    let ready = b.wait_for(
        &s,
        "window.__amqptrace && window.__amqptrace.ready",
        Duration::from_secs(30),
    );
    assert!(ready.as_f64().unwrap() > 0.0);

    // Verdicts first, in words.
    let verdicts = b.eval(&s, "document.getElementById('verdicts').innerText");
    let verdicts = verdicts.as_str().unwrap();
    assert!(verdicts.contains("prefetch_exhausted"), "{verdicts}");
    assert!(
        verdicts.contains("delivery tags 1, 2, 3, 4, 5 are unacknowledged"),
        "{verdicts}"
    );

    // The stalled consumer's lane and its unacked chart are drawn.
    let lanes = b.eval(&s, "window.__amqptrace.lanes");
    let stalled: Vec<&Value> = lanes
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["verdict"] == json!("prefetch_exhausted"))
        .collect();
    assert_eq!(stalled.len(), 1, "{lanes}");
    assert!(stalled[0]["label"]
        .as_str()
        .unwrap()
        .starts_with("consumer stuck-"));
    assert!(stalled[0]["drawn"].as_u64().unwrap() > 0, "{lanes}");
    let charts = b.eval(&s, "window.__amqptrace.charts");
    let chart = &charts[0];
    assert_eq!(chart["verdict"], json!("prefetch_exhausted"), "{charts}");
    assert_eq!(chart["limit"], json!(5));
    assert_eq!(chart["max_unacked"], json!(5));
    let tl_ink = b.eval(&s, &format!("{INKED}('timeline', 320, 0, 1000, 120)"));
    let chart_ink = b.eval(&s, &format!("{INKED}('charts', 320, 0, 1000, 70)"));
    assert!(
        tl_ink.as_u64().unwrap() > 1000,
        "timeline canvas nearly blank: {tl_ink}"
    );
    assert!(
        chart_ink.as_u64().unwrap() > 1000,
        "chart canvas nearly blank: {chart_ink}"
    );

    // Save the picture for docs/ before any interaction.
    let shot = b.call(Some(&s), "Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let target = repo("target/report-stalled.png");
    std::fs::write(&target, &png).unwrap();
    if std::env::var_os("AMQPTRACE_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(repo("docs/report-stalled.png"), &png).unwrap();
    }

    // Zoom in with the wheel around the deliveries (re-aiming at the first one after each
    // step), so each mark gets its own pixels.
    let before = b.eval(&s, "document.getElementById('range').textContent");
    let mark = "new Promise(r => requestAnimationFrame(() => \
                r(window.__amqptrace.markPos('basic.deliver', 'consumer'))))";
    for _ in 0..6 {
        let pos = b.wait_for(&s, mark, Duration::from_secs(10));
        let (x, y) = (pos["x"].as_f64().unwrap(), pos["y"].as_f64().unwrap());
        b.mouse(&s, "mouseWheel", x, y, json!({"deltaX": 0, "deltaY": -600}));
    }
    let after = b.eval(&s, "document.getElementById('range').textContent");
    assert_ne!(before, after, "the wheel zooms");
    // Click a deliver mark: its delivery_tag appears in the pinned fields.
    let pos = b.wait_for(&s, mark, Duration::from_secs(10));
    let (x, y) = (pos["x"].as_f64().unwrap(), pos["y"].as_f64().unwrap());
    let tag = pos["delivery_tag"].as_u64().unwrap();
    b.mouse(&s, "mouseMoved", x, y, json!({}));
    b.left_button(&s, "mousePressed", x, y);
    b.left_button(&s, "mouseReleased", x, y);
    let selected = b.eval(&s, "document.getElementById('selected').textContent");
    let selected = selected.as_str().unwrap();
    assert!(selected.contains("method: basic.deliver"), "{selected}");
    assert!(
        selected.contains(&format!("delivery_tag: {tag}\n")),
        "{selected}"
    );
    let tooltip = b.eval(&s, "document.getElementById('tooltip').hidden");
    assert_eq!(tooltip, json!(false), "hover shows the fields");

    // Drag pans the time axis.
    let before = b.eval(&s, "document.getElementById('range').textContent");
    b.left_button(&s, "mousePressed", x, y);
    let held = json!({"button": "left", "buttons": 1});
    b.mouse(&s, "mouseMoved", x + 200.0, y, held);
    b.left_button(&s, "mouseReleased", x + 200.0, y);
    let after = b.wait_for(
        &s,
        "new Promise(r => requestAnimationFrame(() => r(document.getElementById('range').textContent)))",
        Duration::from_secs(10),
    );
    assert_ne!(before, after, "dragging pans");

    // Filter by consumer: only its connection, channel and consumer lanes remain.
    b.eval(
        &s,
        "(() => { const f = document.getElementById('f-consumer'); f.value = '0'; f.dispatchEvent(new Event('change')); })()",
    );
    let n = b.eval(&s, "window.__amqptrace.lanes.length");
    assert_eq!(n, json!(3), "{}", b.eval(&s, "window.__amqptrace.lanes"));

    // No console error, no exception, no request but the file itself.
    for e in &b.events {
        let m = e["method"].as_str().unwrap_or("");
        let p = &e["params"];
        match m {
            "Runtime.exceptionThrown" => panic!("exception in the page: {p}"),
            "Runtime.consoleAPICalled" => {
                assert!(
                    !matches!(p["type"].as_str(), Some("error" | "assert")),
                    "console: {p}"
                )
            }
            "Log.entryAdded" => assert_ne!(p["entry"]["level"], json!("error"), "log: {p}"),
            "Network.requestWillBeSent" => {
                let u = p["request"]["url"].as_str().unwrap_or("");
                assert!(u == url || u == "about:blank", "network request to {u}");
            }
            _ => {}
        }
    }
    let requests = b
        .events
        .iter()
        .filter(|e| e["method"] == json!("Network.requestWillBeSent"))
        .count();
    assert_eq!(requests, 1, "exactly one request: the file itself");
}

#[test]
fn healthy_report_says_no_stall() {
    let dir = temp_dir();
    let html = build_report(&repo("captures/failures/healthy.pcapng"), dir.path());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("No stall: every consumer and connection is healthy."));
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
}

/// The headline causes come first, above the verdict list, one per cause.
#[test]
fn stalled_report_leads_with_the_causes() {
    let dir = temp_dir();
    let html = build_report(&repo("captures/failures/wrong-queue.pcapng"), dir.path());
    let page = std::fs::read_to_string(&html).unwrap();
    let cause = page
        .find("<li class=\"cause\"")
        .expect("a cause in the page");
    let verdict = page
        .find("<li class=\"verdict stall\"")
        .expect("a stall verdict");
    assert!(cause < verdict, "causes come before the verdict list");
    assert_eq!(page.matches("<li class=\"cause\"").count(), 1);
    assert!(page.contains("which no consumer here reads"));
}

/// A report built from the JSON Lines timeline has the same verdicts as one built from the capture.
#[test]
fn report_from_jsonl_timeline_matches_capture() {
    let dir = temp_dir();
    for name in ["dramatiq-wrong-queue", "three-consumers-one-stalls"] {
        let cap = repo(&format!("captures/failures/{name}.pcapng"));
        let jsonl = dir.path().join(format!("{name}.jsonl"));
        let timeline = amqptrace(&["analyze", "--format", "jsonl", cap.to_str().unwrap()]);
        std::fs::write(&jsonl, timeline.stdout).unwrap();
        let verdicts = |p: &Path| {
            let page = std::fs::read_to_string(p).unwrap();
            let a = page.find("<section id=\"verdicts\">").unwrap();
            let b = a + page[a..].find("</section>").unwrap();
            page[a..b].to_string()
        };
        let d1 = dir.path().join("a");
        let d2 = dir.path().join("b");
        std::fs::create_dir_all(&d1).unwrap();
        std::fs::create_dir_all(&d2).unwrap();
        let from_cap = verdicts(&build_report(&cap, &d1));
        let from_jsonl = verdicts(&build_report(&jsonl, &d2));
        assert!(
            from_cap.contains("class=\"verdict stall\""),
            "{name}: {from_cap}"
        );
        assert_same_text(
            &format!("{name}: verdicts from the timeline vs from the capture"),
            &from_cap,
            &from_jsonl,
        );
    }
}

// ---- chrome-trace ----

/// The checks Perfetto's JSON importer relies on, written out (the `perfetto`
/// PyPI package's TraceProcessor downloads its trace_processor binary at run
/// time, which this environment cannot do). Returns the number of `X` slices.
fn check_trace_event_format(doc: &Value) -> (usize, usize) {
    let evs = doc["traceEvents"].as_array().expect("traceEvents array");
    let mut procs = std::collections::HashSet::new();
    let mut threads = std::collections::HashSet::new();
    for e in evs.iter().filter(|e| e["ph"] == json!("M")) {
        match e["name"].as_str() {
            Some("process_name") => {
                procs.insert(e["pid"].as_u64().unwrap());
            }
            Some("thread_name") => {
                threads.insert((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()));
            }
            _ => {}
        }
        assert!(e["args"].is_object(), "{e}");
    }
    // Per thread: time order in the file, and X slices that never overlap
    // (a slice on a thread must nest; ours never share time at all).
    let mut last: std::collections::HashMap<(u64, u64), (f64, f64)> = Default::default();
    let (mut slices, mut instants) = (0, 0);
    for e in evs.iter().filter(|e| e["ph"] != json!("M")) {
        let ph = e["ph"].as_str().unwrap();
        let pid = e["pid"].as_u64().expect("pid");
        let tid = e["tid"].as_u64().expect("tid");
        assert!(procs.contains(&pid), "pid {pid} has no process_name: {e}");
        assert!(
            threads.contains(&(pid, tid)),
            "tid {tid} has no thread_name: {e}"
        );
        assert!(e["name"].is_string(), "{e}");
        let ts = e["ts"].as_f64().expect("ts");
        assert!(ts >= 0.0, "{e}");
        let end = match ph {
            "X" => {
                slices += 1;
                let dur = e["dur"].as_f64().expect("dur");
                assert!(dur >= 0.0, "{e}");
                ts + dur
            }
            "i" => {
                instants += 1;
                assert!(matches!(e["s"].as_str(), Some("t" | "p" | "g")), "{e}");
                ts
            }
            other => panic!("unexpected phase {other}: {e}"),
        };
        if let Some((prev_ts, prev_end)) = last.get(&(pid, tid)) {
            assert!(ts >= *prev_ts, "ts goes back on thread {pid}/{tid}: {e}");
            if ph == "X" {
                assert!(
                    ts >= *prev_end,
                    "slice overlaps the previous one on {pid}/{tid}: {e}"
                );
            }
        }
        let prev_end = last.get(&(pid, tid)).map_or(end, |p| p.1.max(end));
        last.insert((pid, tid), (ts, prev_end));
    }
    (slices, instants)
}

fn chrome_trace(capture: &str) -> Value {
    let out = amqptrace(&[
        "analyze",
        "--format",
        "chrome-trace",
        repo(capture).to_str().unwrap(),
    ]);
    serde_json::from_str(&out.stdout).expect("chrome-trace output is JSON")
}

#[test]
fn chrome_trace_slices_are_the_settled_deliveries() {
    // lapin-basic: 20 deliveries, every one settled (acks with and without multiple, one nack).
    let doc = chrome_trace("captures/lapin-basic.pcap");
    let (slices, _) = check_trace_event_format(&doc);
    assert_eq!(slices, 20);
    let nacked: Vec<&Value> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["args"]["settled_by"] == json!("basic.nack"))
        .collect();
    assert_eq!(nacked.len(), 1);
    assert_eq!(nacked[0]["args"]["delivery_tag"], json!(7));

    // prefetch-exhausted: five deliveries, none settled: no slice, five "never settled" instants.
    let doc = chrome_trace("captures/failures/prefetch-exhausted.pcapng");
    let (slices, _) = check_trace_event_format(&doc);
    assert_eq!(slices, 0);
    let never = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("never settled"))
        })
        .count();
    assert_eq!(never, 5);
}

/// Every committed capture exports a trace that follows the format's rules.
#[test]
fn chrome_trace_of_every_capture_is_well_formed() {
    let captures = util::committed_captures();
    for p in &captures {
        check_trace_event_format(&chrome_trace(&util::short(p)));
    }
    assert!(
        captures.len() >= 20,
        "only {} captures found",
        captures.len()
    );
}
