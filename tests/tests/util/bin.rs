//! The built `amqptrace` run to its end: what it wrote and how it exited,
//! `analyze` and `run` as most tests call them, and JSON Lines read back.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test, as cargo built it for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_amqptrace");

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// `None` when killed by a signal (a crash).
    pub code: Option<i32>,
}

impl Run {
    /// What a finished child wrote and how it exited.
    pub fn of(out: &Output) -> Run {
        Run {
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
            code: out.status.code(),
        }
    }

    /// The run's stderr, as context for a failed assertion.
    pub fn context(&self) -> String {
        format!("exit {:?}\n--- stderr ---\n{}", self.code, self.stderr)
    }
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the built `amqptrace` with `args`, stdout and stderr captured (so not a tty).
pub fn amqptrace<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    amqptrace_env(args, &[])
}

/// Like [`amqptrace`], with extra environment variables.
pub fn amqptrace_env<I, S>(args: I, env: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::of(
        &cmd.output()
            .expect("cannot start the built amqptrace binary"),
    )
}

/// Like [`amqptrace`], but kills it after `limit`: an argument that should be
/// refused must not leave a proxy running. A run that had to be killed has
/// `code: None` and says so on stderr.
pub fn amqptrace_within(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the built amqptrace binary");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    if status.is_none() {
        stderr.push_str("\n[still running: killed by the test]");
    }
    Run {
        stdout,
        stderr,
        code: status.and_then(|s| s.code()),
    }
}

/// `amqptrace analyze --format FORMAT FILE`.
pub fn analyze(format: &str, file: &Path) -> Run {
    amqptrace([
        OsStr::new("analyze"),
        OsStr::new("--format"),
        OsStr::new(format),
        file.as_os_str(),
    ])
}

/// `amqptrace analyze --format json FILE`, exit 0 or 1 (stall), as JSON.
pub fn analyze_json(file: &Path) -> Value {
    let run = analyze("json", file);
    assert!(
        matches!(run.code, Some(0 | 1)),
        "analyze --format json {}: {}",
        file.display(),
        run.context()
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: stdout is not JSON ({e}):\n{}",
            file.display(),
            run.stdout
        )
    })
}

/// The JSON lines of `text` (lines starting `{`; a text block beside them is skipped).
pub fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// A JSON file.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The URL variables `amqptrace run` sets by default, and one it does not.
const URL_VARIABLES: [&str; 6] = [
    "AMQP_URL",
    "BROKER_URL",
    "CELERY_BROKER_URL",
    "DRAMATIQ_RABBITMQ_URL",
    "RABBITMQ_URL",
    "MY_URL",
];

/// `amqptrace run --artifacts DIR ARGS...`, stdin closed, none of the URL
/// variables inherited (the defaults must come from amqptrace, not from the
/// test's environment).
pub fn amqptrace_run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("--artifacts").arg(dir).args(args);
    for v in URL_VARIABLES {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null()).output().expect("amqptrace runs")
}
