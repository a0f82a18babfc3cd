//! `amqptrace run`: wraps a command (a test suite, a worker) in CI. It starts
//! the proxy on a free loopback port, hands the command the proxy's URL in the
//! environment, runs it with stdin/stdout/stderr passed through, forwards
//! SIGINT/SIGTERM to it, and when it ends writes an artifacts folder:
//! `capture.pcapng`, `timeline.jsonl`, `verdicts.json`, `summary.txt` and
//! `report.html`.
//!
//! The recording is the source of truth: while the command runs, the tracer
//! thread only records `capture.pcapng` (credentials masked, flushed every
//! second); when the command ends the recording is finished with its end
//! time and every other artifact comes from analysing it exactly as
//! `amqptrace analyze capture.pcapng` would (the offline pipeline, the
//! recorded end as the horizon), so the verdicts, the timeline's frame
//! numbers and the report's evidence are those of the file you download.
//!
//! Threads: the main thread waits for the child and for signals; a tokio
//! runtime forwards (the proxy module); one tracer thread records, fed
//! through the proxy's bounded trace channel. Artifacts are written after the
//! child ends, whatever the way it ended (exit, crash, signal, amqptrace's own
//! SIGTERM forwarded to it). A signal also writes a first copy of the reports
//! at once, from the recording so far, so even a SIGKILL of amqptrace after a
//! CI runner's grace period leaves them (and the recording, flushed).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use amqptrace::amqp::DecoderConfig;
use amqptrace::analyze::{write_verdict_block, Analysis, Analyzer, AnalyzerConfig, Horizon};
use amqptrace::event::{Event, Timestamp};
use amqptrace::pipeline;
use amqptrace::report::ReportBuilder;
use amqptrace::sink::PcapRecorder;
use amqptrace::sink::{JsonlSink, Sink};
use amqptrace::source::proxy::{self, ProxyConfig, TraceCounters, TraceKind, TraceRx, Upstream};
use amqptrace::stream::StreamConfig;

use crate::exit;

/// The variables the common AMQP clients and task queues read their broker URL from.
const DEFAULT_ENV: [&str; 5] = [
    "AMQP_URL",
    "BROKER_URL",
    "CELERY_BROKER_URL",
    "DRAMATIQ_RABBITMQ_URL",
    "RABBITMQ_URL",
];

pub const RUN_HELP: &str = "\
Exit codes:
  the command's own exit code (128+N when it was killed by signal N), except:
  1    with --fail-on-stall, when a stall was found (verdicts.json lists it)
  2    amqptrace could not start (bad --upstream, artifacts folder not writable),
       or the command exited 0 but the artifacts could not be written
  126  the command could not be started; 127 it was not found

Signals: SIGTERM and SIGINT are passed on to the command and amqptrace waits
for it (a Ctrl-C on a terminal already reached it, so it is not sent twice).

Artifacts (written when the command ends, however it ends; on SIGINT/SIGTERM a
first copy is written at once, in case the command ignores the signal). All but
the recording are what `amqptrace analyze capture.pcapng` gives:
  capture.pcapng   the proxied traffic, both legs, with its end time (open it in
                   Wireshark); SASL passwords masked unless --pcap-keep-credentials
  timeline.jsonl   every decoded event (docs/events.md)
  verdicts.json    the --format json analysis (docs/analysis.md)
  summary.txt      the verdict block, then counts per connection and consumer
  report.html      verdicts, swimlanes and unacked vs prefetch, self-contained

The command's URL: the upstream URL with host and port replaced by the proxy's;
user, password, vhost and query byte for byte. An upstream without a vhost
(no path, or a bare '/', as the default) means RabbitMQ's default vhost '/',
and the command gets it spelled out as '/%2F': clients that read a bare '/' as
the vhost \"\" (Bunny, rabbitmq-c, as the AMQP URI spec says) reach '/' too.

Examples:
  amqptrace run -- pytest tests/
  amqptrace run --fail-on-stall --artifacts out/ -- python worker_test.py
  amqptrace run --env MY_BROKER --upstream amqp://app:secret@127.0.0.1:5672/app -- ./e2e.sh";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The broker, as an amqp:// URL (or host:port). The command gets this URL with only host
    /// and port replaced by the proxy's; user, password, vhost and query are kept (no vhost
    /// means '/', passed on as '/%2F').
    #[arg(
        short,
        long,
        value_name = "URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/"
    )]
    pub upstream: String,

    /// Folder for the artifacts (created if missing; files in it are overwritten).
    #[arg(short, long, value_name = "DIR", default_value = "amqptrace-artifacts")]
    pub artifacts: PathBuf,

    /// Environment variable that gets the proxy's URL (repeatable). Given once, it replaces the
    /// defaults.
    #[arg(long = "env", value_name = "NAME", default_values_t = DEFAULT_ENV.map(String::from))]
    pub env: Vec<String>,

    /// Exit 1 when a stall was found, even when the command succeeded.
    #[arg(long)]
    pub fail_on_stall: bool,

    /// Time threshold, for what only time can prove (a connection that never consumes, a
    /// consume never confirmed, a full prefetch window with nothing in the traffic to compare
    /// it with): certain after SECS, uncertain from 1 s. What the frames prove (a publish
    /// routed away from a consumer's queue, a window full while peers settle) needs no wait.
    /// Default 5 (docs/verdicts.md).
    #[arg(long, value_name = "SECS")]
    pub stall_after: Option<f64>,

    /// Record the clients' SASL credentials in capture.pcapng as they were sent (by default the
    /// password in connection.start-ok, secure-ok and update-secret is masked with '*').
    #[arg(long)]
    pub pcap_keep_credentials: bool,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let upstream = Upstream::parse(&args.upstream)?;
    let analyzer_cfg = crate::cli::analyzer_config(args.stall_after)?;
    for name in &args.env {
        anyhow::ensure!(
            !name.is_empty() && !name.contains(['=', '\0']),
            "--env {name:?}: not a variable name"
        );
    }
    fs::create_dir_all(&args.artifacts)
        .with_context(|| format!("cannot create {}", args.artifacts.display()))?;
    let files = ArtifactFiles::create(&args.artifacts)?;

    // One forwarding thread, as in `amqptrace proxy` (see there for the figures).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
        .context("cannot listen on 127.0.0.1")?;
    let listen = listener.local_addr().context("the proxy's own address")?;
    let url = proxied_url(&args.upstream, listen);
    // Registered before the child exists, so a signal in between is not fatal to us.
    let mut signals = rt.block_on(async { Signals::new() })?;

    let artifacts = Artifacts {
        dir: args.artifacts.clone(),
        stream_cfg: StreamConfig {
            ports: vec![upstream.port],
            decoder: DecoderConfig::default(),
            ..StreamConfig::default()
        },
        analyzer_cfg,
    };
    let (tx, rx, counters) =
        proxy::trace_channel(proxy::TRACE_QUEUE_MESSAGES, proxy::TRACE_QUEUE_BYTES);
    let tracer_counters = counters.clone();
    let snapshot = Arc::new(tokio::sync::Notify::new());
    let tracer_snapshot = snapshot.clone();
    let tracer_artifacts = artifacts.clone();
    let keep_credentials = args.pcap_keep_credentials;
    let tracer = std::thread::Builder::new()
        .name("amqptrace-tracer".into())
        .spawn(move || {
            record_loop(
                rx,
                files,
                keep_credentials,
                &tracer_artifacts,
                tracer_counters,
                tracer_snapshot,
            )
        })
        .context("cannot start the tracer thread")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = ProxyConfig {
        upstream: upstream.clone(),
        max_connections: 4096,
        // A command that exits (or is killed) closes its sockets on the way
        // out: its last frames and FINs get a moment to be forwarded and
        // traced. Only a subprocess that outlives it (an orphaned worker)
        // still holds a connection after that, and is cut.
        drain: Duration::from_secs(1),
    };
    let proxy_task = rt.spawn(proxy::run(vec![listener], cfg, tx, async move {
        let _ = stop_rx.await;
    }));
    eprintln!(
        "amqptrace: proxy on {listen} forwarding to {upstream}; {} set to {}",
        args.env.join(", "),
        redacted(&url)
    );

    let status = run_child(&rt, &args, &url, &mut signals, &snapshot);

    // The command is over: close what its subprocesses may still hold open
    // and let the tracer write the artifacts.
    let _ = stop_tx.send(());
    let _ = rt.block_on(proxy_task);
    rt.shutdown_timeout(Duration::from_secs(1));
    let recorded = match tracer.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the tracer thread panicked")),
    };
    report_drops(&counters);
    let dropped = counters.dropped.load(Ordering::Relaxed);
    // The finished recording, analysed as `amqptrace analyze` would. A
    // recording cut short (a full disk) is still analysed as far as it goes
    // (it records no end then: its last packet is the end), and the failure
    // reported.
    let outcome = match recorded {
        Ok(()) => artifacts.write(dropped, None),
        Err(e) => {
            let _ = artifacts.write(dropped, None);
            Err(e)
        }
    };

    let child_code = match &status {
        Ok(s) => exit_code_of(*s),
        Err(ChildError { code, .. }) => *code,
    };
    if let Err(ChildError { error, .. }) = &status {
        eprintln!("amqptrace: cannot run {:?}: {error}", args.command[0]);
    }
    match outcome {
        Ok(analysis) => {
            eprintln!(
                "amqptrace: artifacts in {} ({} connection(s), {} consumer(s))",
                args.artifacts.display(),
                analysis.connections.len(),
                analysis.consumers.len()
            );
            let mut block = Vec::new();
            write_verdict_block(&analysis, &mut block)?;
            for line in String::from_utf8_lossy(&block).lines() {
                eprintln!("amqptrace: {line}");
            }
            if args.fail_on_stall && analysis.has_stall() {
                for why in stall_reasons(&analysis) {
                    eprintln!("amqptrace: --fail-on-stall: {why}");
                }
                eprintln!(
                    "amqptrace: --fail-on-stall: a stall was found; exit {} (the command exited {child_code})",
                    exit::STALL
                );
                return Ok(exit::STALL);
            }
            Ok(child_code)
        }
        Err(e) => {
            eprintln!(
                "amqptrace: artifacts in {}: {e:#}",
                args.artifacts.display()
            );
            Ok(if child_code == 0 {
                exit::ERROR
            } else {
                child_code
            })
        }
    }
}

/// One line per reason an analysis has a stall: its headline causes, or its
/// stall verdicts where it has no cause for them.
fn stall_reasons(analysis: &Analysis) -> Vec<String> {
    let causes: Vec<String> = analysis
        .causes
        .iter()
        .map(|c| format!("{}: {}", c.verdict.name(), c.text))
        .collect();
    if !causes.is_empty() {
        return causes;
    }
    analysis
        .verdicts
        .iter()
        .filter(|v| v.verdict.is_stall())
        .map(|v| format!("{}: {}", v.verdict.name(), v.explanation))
        .collect()
}

/// Why the command did not run, with the shell's exit code for it.
struct ChildError {
    code: u8,
    error: io::Error,
}

/// Spawns the command and waits for it, forwarding SIGINT/SIGTERM.
fn run_child(
    rt: &tokio::runtime::Runtime,
    args: &RunArgs,
    url: &str,
    signals: &mut Signals,
    snapshot: &tokio::sync::Notify,
) -> Result<ExitStatus, ChildError> {
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for name in &args.env {
        cmd.env(name, url);
    }
    let mut child = cmd.spawn().map_err(|error| ChildError {
        // As a POSIX shell: 127 when not found, 126 when found but not runnable.
        code: if error.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        error,
    })?;
    let pid = child.id();
    let wait = rt.spawn_blocking(move || child.wait());
    rt.block_on(async {
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = &mut wait => {
                    return match r {
                        Ok(Ok(status)) => Ok(status),
                        Ok(Err(error)) => Err(ChildError { code: exit::ERROR, error }),
                        Err(e) => Err(ChildError { code: exit::ERROR, error: io::Error::other(e) }),
                    };
                }
                sig = signals.recv() => {
                    if matches!(sig, Sig::Int) && ctrl_c_reached_the_command() {
                        eprintln!("amqptrace: SIGINT came from the terminal, which sent it to the command too; waiting for the command");
                    } else {
                        eprintln!("amqptrace: {} received: passed on to the command; artifacts follow when it ends", sig.name());
                        forward_signal(pid, sig);
                    }
                    snapshot.notify_one();
                }
            }
        }
    })
}

/// The exit code that reports `status`: the code, or 128+signal as a shell does.
fn exit_code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => exit::ERROR,
    }
}

#[derive(Copy, Clone, Debug)]
enum Sig {
    Int,
    Term,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
        }
    }
    fn number(self) -> i32 {
        // Linux and every BSD agree on these two numbers.
        match self {
            Sig::Int => 2,
            Sig::Term => 15,
        }
    }
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }
    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Int,
            _ = self.term.recv() => Sig::Term,
        }
    }
}

fn forward_signal(pid: u32, sig: Sig) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The
    // child is not reaped before the wait above returns, so its pid cannot
    // have been reused by another process yet.
    unsafe {
        kill(pid, sig.number());
    }
}

/// Whether a SIGINT most likely is the terminal's Ctrl-C. The terminal sends
/// it to its whole foreground process group, the command included (it runs
/// in ours); passing on a second one would cut the command's clean-up short
/// (Python raises KeyboardInterrupt again, Dramatiq's second SIGINT kills its
/// workers at once). Without a controlling terminal (CI), or in the
/// background, the signal was meant for amqptrace alone and is passed on.
fn ctrl_c_reached_the_command() -> bool {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn getpgrp() -> i32;
        fn tcgetpgrp(fd: i32) -> i32;
    }
    let Ok(tty) = File::open("/dev/tty") else {
        return false;
    };
    // SAFETY: both take or return plain integers; `tty` stays open for the call.
    unsafe { tcgetpgrp(tty.as_raw_fd()) == getpgrp() }
}

fn report_drops(c: &TraceCounters) {
    let dropped = c.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!(
            "amqptrace: {dropped} trace events dropped ({} bytes not traced): the tracer could not keep up; forwarding was not affected",
            c.dropped_bytes.load(Ordering::Relaxed)
        );
    }
}

/// `upstream` with only its host and port replaced by `listen`: user,
/// password, vhost and query stay byte for byte as the command would have
/// sent them. A URL that names no vhost (no path, or a bare `/`) means
/// RabbitMQ's default vhost `/` (as pika, lapin and Celery read it); it is
/// spelled out as `/%2F` so that clients that read a bare `/` as the vhost
/// `""` (Bunny, rabbitmq-c, as the AMQP URI spec says: the broker answers 530)
/// reach it too. A bare `host:port` becomes `amqp://LISTEN/%2F`.
pub fn proxied_url(upstream: &str, listen: SocketAddr) -> String {
    let Some(scheme_end) = upstream.find("://") else {
        return format!("amqp://{listen}/%2F");
    };
    let after = scheme_end + 3;
    let rest = &upstream[after..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let userinfo = match authority.rfind('@') {
        Some(i) => &authority[..=i],
        None => "",
    };
    let tail = &rest[authority_len..];
    let path_len = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, query) = tail.split_at(path_len);
    let path = if path.is_empty() || path == "/" {
        "/%2F"
    } else {
        path
    };
    format!("{}{userinfo}{listen}{path}{query}", &upstream[..after])
}

/// A URL as it may be printed: the password replaced by `***`.
fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = scheme_end + 3;
    let rest = &url[after..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user = match authority[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => authority[..at].to_string(),
    };
    format!("{}{user}{}", &url[..after], &rest[at..])
}

/// The artifact files, created before the command starts so that an
/// unwritable folder fails at once.
struct ArtifactFiles {
    pcap: BufWriter<File>,
}

impl ArtifactFiles {
    fn create(dir: &Path) -> anyhow::Result<ArtifactFiles> {
        let open = |name: &str| -> anyhow::Result<BufWriter<File>> {
            let p = dir.join(name);
            Ok(BufWriter::with_capacity(
                1 << 16,
                File::create(&p).with_context(|| format!("cannot create {}", p.display()))?,
            ))
        };
        // Written from the recording at the end; created now to fail early.
        open(TIMELINE)?;
        Ok(ArtifactFiles {
            pcap: open(CAPTURE)?,
        })
    }
}

const CAPTURE: &str = "capture.pcapng";
const TIMELINE: &str = "timeline.jsonl";

/// The tracer thread: records every trace message; flushes every second;
/// on a signal, a first copy of the reports from the recording so far.
fn record_loop(
    mut rx: TraceRx,
    files: ArtifactFiles,
    keep_credentials: bool,
    artifacts: &Artifacts,
    counters: Arc<TraceCounters>,
    snapshot: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the tracer's runtime")?;
    let mut pcap = PcapRecorder::new(files.pcap, Timestamp::now(), keep_credentials)
        .with_context(|| format!("cannot write {CAPTURE}"))?;
    let mut failed: Option<io::Error> = None;
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch = Vec::with_capacity(proxy::TRACE_BATCH_MAX);
        loop {
            tokio::select! {
                open = proxy::next_batch(&mut rx, &mut batch) => {
                    for m in batch.drain(..) {
                        proxy::processed(&counters, &m);
                        if let TraceKind::UpstreamFailed { error } = &m.kind {
                            eprintln!(
                                "amqptrace: {}: upstream unreachable ({error}); client closed",
                                m.conn.client
                            );
                        }
                        if failed.is_none() {
                            if let Err(e) = pcap.record(&m) {
                                eprintln!("amqptrace: {CAPTURE}: {e}; recording stopped, forwarding goes on");
                                failed = Some(e);
                            }
                        }
                    }
                    if !open {
                        break;
                    }
                }
                _ = tick.tick() => {
                    let _ = pcap.flush();
                }
                // A signal was passed on to the command: should the command
                // ignore it and amqptrace be killed later, this copy remains.
                _ = snapshot.notified() => {
                    if pcap.flush().is_ok() {
                        let dropped = counters.dropped.load(Ordering::Relaxed);
                        let _ = artifacts.write(dropped, Some(Timestamp::now()));
                    }
                }
            }
        }
    });
    if let Some(e) = failed {
        return Err(e).with_context(|| format!("{CAPTURE}: the recording is incomplete"));
    }
    pcap.finish(Timestamp::now())
        .and_then(|mut w| w.flush())
        .with_context(|| format!("cannot finish {CAPTURE}"))?;
    Ok(())
}

/// How the reports are made from the recording.
#[derive(Clone)]
struct Artifacts {
    dir: PathBuf,
    stream_cfg: StreamConfig,
    analyzer_cfg: AnalyzerConfig,
}

impl Artifacts {
    /// Analyses `capture.pcapng` as `amqptrace analyze` would and writes
    /// timeline.jsonl, verdicts.json, summary.txt and report.html from it.
    /// `still_recording`: the recording goes on (a snapshot), and its evidence
    /// ends at this moment; `None` for the finished recording, whose end it records.
    fn write(&self, dropped: u64, still_recording: Option<Timestamp>) -> anyhow::Result<Analysis> {
        let capture = self.dir.join(CAPTURE);
        let mut analyzer = Analyzer::new(self.analyzer_cfg.clone());
        let mut report = ReportBuilder::new();
        // A fresh timeline beside the old one, renamed over it when complete.
        let timeline_tmp = self.dir.join(format!(".{TIMELINE}.part"));
        let mut timeline = JsonlSink::new(BufWriter::with_capacity(
            1 << 16,
            File::create(&timeline_tmp)
                .with_context(|| format!("cannot create {}", timeline_tmp.display()))?,
        ));
        let summary = pipeline::run_files(
            std::slice::from_ref(&capture),
            &self.stream_cfg,
            |ev: &Event| {
                analyzer.handle(ev);
                report.event(ev);
                timeline.event(ev)
            },
        )
        .with_context(|| format!("cannot analyse {}", capture.display()))?;
        let mut failures: Vec<String> = summary.damage.iter().map(|d| d.to_string()).collect();
        let last = summary.last_ts.unwrap_or_default();
        let horizon = match still_recording {
            Some(now) => Horizon::Recorded(now.max(last)),
            None => crate::cli::analyze::horizon(&summary),
        };
        let analysis = analyzer.analyze(horizon);
        match timeline.finish() {
            Ok(()) => {
                if let Err(e) = fs::rename(&timeline_tmp, self.dir.join(TIMELINE)) {
                    failures.push(format!("{TIMELINE}: {e}"));
                }
            }
            Err(e) => failures.push(format!("{TIMELINE}: {e}")),
        }
        let mut write = |name: &str, f: &dyn Fn(&mut BufWriter<File>) -> io::Result<()>| {
            let p = self.dir.join(name);
            let r = File::create(&p).and_then(|file| {
                let mut w = BufWriter::with_capacity(1 << 16, file);
                f(&mut w)?;
                w.flush()
            });
            if let Err(e) = r {
                failures.push(format!("{name}: {e}"));
            }
        };
        write("verdicts.json", &|w| {
            serde_json::to_writer_pretty(&mut *w, &analysis)?;
            writeln!(w)
        });
        write("summary.txt", &|w| {
            write_summary(&analysis, summary.events, dropped, w)
        });
        write("report.html", &|w| {
            report.write_html(&analysis, "amqptrace run", &mut *w)
        });
        anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
        Ok(analysis)
    }
}

/// The verdict block, then one line per connection and per consumer with its counts.
fn write_summary(
    analysis: &Analysis,
    events: u64,
    dropped: u64,
    w: &mut dyn Write,
) -> io::Result<()> {
    write_verdict_block(analysis, w)?;
    writeln!(w)?;
    writeln!(w, "connections: {}", analysis.connections.len())?;
    for c in &analysis.connections {
        let mut who = Vec::new();
        if let Some(n) = &c.connection_name {
            who.push(format!("\"{n}\""));
        }
        if let Some(p) = &c.client_product {
            who.push(format!(
                "{p}{}",
                c.client_version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(v) = &c.vhost {
            who.push(format!("vhost '{v}'"));
        }
        write!(
            w,
            "  {}  {}\n      channels {}, consumes {}, publishes {}, gets {}, deliveries {}",
            c.conn,
            who.join(", "),
            c.channels_opened,
            c.consumes,
            c.publishes,
            c.gets,
            c.deliveries
        )?;
        if c.gaps > 0 || c.errors > 0 {
            write!(w, ", gaps {}, decode errors {}", c.gaps, c.errors)?;
        }
        match (c.closed_by, c.tcp_end) {
            (Some(by), _) => write!(
                w,
                "; closed by {by}{}",
                c.reply_code
                    .map(|code| format!(" ({code} {})", c.reply_text.as_deref().unwrap_or("")))
                    .unwrap_or_default()
            )?,
            (None, Some(end)) => write!(w, "; TCP {end} without connection.close")?,
            (None, None) => write!(w, "; open at the end")?,
        }
        writeln!(w)?;
    }
    writeln!(w, "consumers: {}", analysis.consumers.len())?;
    for c in &analysis.consumers {
        write!(
            w,
            "  '{}' queue '{}' on {} ch {}\n      prefetch {}, deliveries {} (redelivered {}), acks {}, nacks {}, rejects {}, unacked at the end {}",
            c.consumer_tag,
            c.queue.as_deref().unwrap_or("?"),
            c.conn,
            c.channel,
            c.prefetch_count
                .or(c.channel_prefetch_count)
                .map_or("none".to_string(), |p| p.to_string()),
            c.deliveries,
            c.redelivered,
            c.acks,
            c.nacks_requeue + c.nacks_drop,
            c.rejects_requeue + c.rejects_drop,
            c.unacked
        )?;
        if let Some(l) = &c.latency {
            write!(
                w,
                ", deliver→settle p50 {:.3} s p95 {:.3} s max {:.3} s",
                l.p50_s, l.p95_s, l.max_s
            )?;
        }
        if let Some(by) = c.ended_by {
            write!(w, "; ended by {by}")?;
        }
        writeln!(w)?;
    }
    write!(w, "events traced: {events}")?;
    if dropped > 0 {
        write!(
            w,
            " ({dropped} trace messages dropped: the tracer could not keep up)"
        )?;
    }
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:40123".parse().unwrap()
    }

    #[test]
    fn proxied_url_keeps_all_but_host_and_port() {
        let cases = [
            // The default upstream: no vhost named, so '/', spelled out.
            (
                "amqp://guest:guest@127.0.0.1:5672/",
                "amqp://guest:guest@127.0.0.1:40123/%2F",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672",
                "amqp://guest:guest@127.0.0.1:40123/%2F",
            ),
            // An explicit vhost, byte for byte, in any spelling.
            (
                "amqp://u:p@host/vhost?heartbeat=5",
                "amqp://u:p@127.0.0.1:40123/vhost?heartbeat=5",
            ),
            (
                "amqp://u:p@[::1]:5672/%2f?heartbeat=5&frame_max=8192",
                "amqp://u:p@127.0.0.1:40123/%2f?heartbeat=5&frame_max=8192",
            ),
            ("amqp://u:p@h/%2Fapp", "amqp://u:p@127.0.0.1:40123/%2Fapp"),
            ("amqp://u:p@h/a%20b", "amqp://u:p@127.0.0.1:40123/a%20b"),
            ("amqp://[2001:db8::7]", "amqp://127.0.0.1:40123/%2F"),
            (
                "amqp://rabbit.example:5672?heartbeat=5",
                "amqp://127.0.0.1:40123/%2F?heartbeat=5",
            ),
            (
                "amqp://rabbit.example:5672/?heartbeat=5",
                "amqp://127.0.0.1:40123/%2F?heartbeat=5",
            ),
            // A raw '@' in the password: the host starts after the last one.
            ("amqp://u:p@ss@host:1/v", "amqp://u:p@ss@127.0.0.1:40123/v"),
            ("amqps://u:p@host/v", "amqps://u:p@127.0.0.1:40123/v"),
            ("amqps://u:p@host", "amqps://u:p@127.0.0.1:40123/%2F"),
            ("127.0.0.1:5672", "amqp://127.0.0.1:40123/%2F"),
        ];
        for (upstream, want) in cases {
            assert_eq!(proxied_url(upstream, listen()), want, "{upstream}");
        }
    }

    #[test]
    fn redacted_hides_only_the_password() {
        assert_eq!(
            redacted("amqp://app:s3cret@127.0.0.1:1/v?heartbeat=5"),
            "amqp://app:***@127.0.0.1:1/v?heartbeat=5"
        );
        assert_eq!(
            redacted("amqp://app@127.0.0.1:1/"),
            "amqp://app@127.0.0.1:1/"
        );
        assert_eq!(redacted("amqp://127.0.0.1:1/"), "amqp://127.0.0.1:1/");
        assert!(!redacted("amqp://u:p@ss@h:1/").contains("ss"));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code_of(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code_of(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137);
    }
}
