//! `amqptrace run`: wraps a command (a test suite, a worker) in CI. It starts
//! the proxy on a free loopback port, hands the command the proxy's URL in the
//! environment, runs it with stdin/stdout/stderr passed through, forwards
//! SIGINT/SIGTERM to it, and when it ends writes an artifacts folder:
//! `capture.pcapng`, `timeline.jsonl`, `verdicts.json`, `summary.txt` and
//! `report.html`.
//!
//! This file parses the arguments and wires the library: the recording
//! session and the artifacts ([`amqptrace::live::artifacts`], every report
//! made from the finished recording), the command and its signals
//! ([`amqptrace::live::child`]), the URL ([`amqptrace::url`]), TLS to an
//! `amqps` broker ([`crate::cli::tls`]).
//!
//! Threads: the main thread waits for the child and for signals; a tokio
//! runtime forwards (the proxy module); one tracer thread records, fed
//! through the proxy's bounded trace channel.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use amqptrace::amqp::DecoderConfig;
use amqptrace::analyze::{stall_reasons, write_verdict_block};
use amqptrace::live::artifacts::Artifacts;
use amqptrace::live::child::{exit_code_of, run_child, ChildError};
use amqptrace::live::signals::Signals;
use amqptrace::live::LiveError;
use amqptrace::url::{proxied_url, redacted};

use crate::cli::tls::UpstreamTlsArgs;
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
user, password, vhost and query byte for byte. An amqps:// upstream: the proxy
speaks TLS to the broker, the command gets amqp:// and the query without its
TLS options (cacertfile, certfile, keyfile, verify, server_name_indication, …),
which the proxy takes instead. An upstream without a vhost
(no path, or a bare '/', as the default) means RabbitMQ's default vhost '/',
and the command gets it spelled out as '/%2F': clients that read a bare '/' as
the vhost \"\" (Bunny, rabbitmq-c, as the AMQP URI spec says) reach '/' too.

Examples:
  amqptrace run -- pytest tests/
  amqptrace run --fail-on-stall --artifacts out/ -- python worker_test.py
  amqptrace run --env MY_BROKER --upstream amqp://app:secret@127.0.0.1:5672/app -- ./e2e.sh
  amqptrace run -u 'amqps://app:secret@rabbit.example/app?cacertfile=/etc/ca.pem' -- pytest";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The broker, as an amqp:// or amqps:// URL (or host:port). The command gets this URL with
    /// only host and port replaced by the proxy's (and amqps as amqp, without the TLS options);
    /// user, password, vhost and query are kept (no vhost means '/', passed on as '/%2F').
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

    #[command(flatten)]
    pub upstream_tls: UpstreamTlsArgs,

    /// Set SSLKEYLOGFILE=FILE for the command (Python, curl, Node log their TLS secrets there), and
    /// append the secrets of the proxy's TLS sessions to the broker to FILE as well.
    #[arg(long, value_name = "FILE")]
    pub tls_keylog: Option<PathBuf>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let keylog = crate::cli::tls::keylog(args.tls_keylog.as_deref())?;
    let upstream = crate::cli::tls::upstream(&args.upstream, &args.upstream_tls, keylog)?;
    let analyzer = crate::cli::analyzer_config(args.stall_after)?;
    for name in &args.env {
        anyhow::ensure!(
            !name.is_empty() && !name.contains(['=', '\0']),
            "--env {name:?}: not a variable name"
        );
    }
    let artifacts = Artifacts {
        dir: args.artifacts.clone(),
        stream: crate::cli::tls::stream_config(&upstream, DecoderConfig::default()),
        analyzer,
    };
    let snapshot = Arc::new(tokio::sync::Notify::new());
    let session = artifacts.record(args.pcap_keep_credentials, snapshot.clone())?;

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
    let mut signals = rt
        .block_on(async { Signals::new() })
        .context("cannot handle SIGINT and SIGTERM")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy_task = rt.spawn(session.serve(listener, upstream.clone(), async move {
        let _ = stop_rx.await;
    }));
    eprintln!(
        "amqptrace: proxy on {listen} forwarding to {upstream}{}; {} set to {}",
        crate::cli::tls::describe(&upstream),
        args.env.join(", "),
        redacted(&url)
    );

    let also: Vec<(&str, &std::ffi::OsStr)> = match &args.tls_keylog {
        Some(p) => vec![("SSLKEYLOGFILE", p.as_os_str())],
        None => Vec::new(),
    };
    let status = run_child(
        &rt,
        &args.command,
        &args.env,
        &url,
        &also,
        &mut signals,
        &snapshot,
    );

    // The command is over: close what its subprocesses may still hold open
    // and let the tracer write the artifacts.
    let _ = stop_tx.send(());
    let outcome = rt
        .block_on(proxy_task)
        .unwrap_or(Err(LiveError::TracerPanicked));
    rt.shutdown_timeout(Duration::from_secs(1));

    let child_code = match &status {
        Ok(s) => exit_code_of(*s),
        Err(ChildError { code, .. }) => *code,
    };
    if let Err(ChildError { error, .. }) = &status {
        eprintln!("amqptrace: cannot run {:?}: {error}", args.command[0]);
    }
    let analysis = match outcome {
        Ok(analysis) => analysis,
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!(
                "amqptrace: artifacts in {}: {e:#}",
                args.artifacts.display()
            );
            return Ok(if child_code == 0 {
                exit::ERROR
            } else {
                child_code
            });
        }
    };
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
