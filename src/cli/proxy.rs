//! `amqptrace proxy`: a transparent TCP proxy in front of RabbitMQ whose
//! traffic is traced and diagnosed live; plus [`LiveOutput`], the live
//! timeline + verdict printer that `capture` shares.
//!
//! Threads: the main thread forwards (the proxy module, on a current-thread
//! tokio runtime); one tracer thread owns the decoder, the analyzer and every
//! sink, fed through a bounded channel, so a slow or failing output can only
//! cost trace events.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

use amqptrace::amqp::DecoderConfig;
use amqptrace::analyze::{
    write_verdict_block, Analysis, Analyzer, Certainty, Horizon, Scope, Verdict, VerdictKind,
};
use amqptrace::event::{Conn, Event, Timestamp};
use amqptrace::sink::PcapRecorder;
use amqptrace::sink::{JsonlSink, Sink, TextOptions, TextSink};
use amqptrace::source::proxy::Tracer;
use amqptrace::source::proxy::{
    self, ProxyConfig, TraceCounters, TraceKind, TraceMsg, TraceRx, Upstream,
};
use amqptrace::stream::StreamConfig;

use crate::cli::analyze::ColorChoice;
use crate::exit;

/// Output options shared by the live commands (`proxy`, `capture`).
#[derive(clap::Args, Debug, Clone)]
pub struct LiveArgs {
    /// Output format: text (timeline, live verdicts, final verdict block) or jsonl (one event per
    /// line, docs/events.md; verdicts as {"event":"verdict",...} lines).
    #[arg(short, long, value_enum, default_value_t = LiveFormat::Text)]
    pub format: LiveFormat,

    /// Write the timeline to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Time threshold, for what only time can prove (a connection that never consumes, a
    /// consume never confirmed, a full prefetch window with nothing in the traffic to compare
    /// it with): certain after SECS, uncertain from 1 s. What the frames prove (a publish
    /// routed away from a consumer's queue, a window full while peers settle) needs no wait.
    /// Default 5 (docs/verdicts.md).
    #[arg(long, value_name = "SECS")]
    pub stall_after: Option<f64>,

    /// Print only verdicts (live and final), not the timeline.
    #[arg(short, long)]
    pub quiet: bool,

    /// Show heartbeats and content header/body frames (folded by default).
    #[arg(short, long)]
    pub verbose: bool,

    /// Record the first N bytes of each message body (never recorded by default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub bodies: usize,

    /// Colour in text output: auto, always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LiveFormat {
    Text,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Address to accept clients on (repeatable). Loopback unless told otherwise; port 0 picks a
    /// free port. The chosen address is printed on stderr as "listening on ADDR".
    #[arg(short, long, value_name = "HOST:PORT", default_values_t = ["127.0.0.1:5673".to_string()])]
    pub listen: Vec<String>,

    /// The broker: host:port, [ipv6]:port, a host name, or amqp://user:pass@host:port/vhost
    /// (credentials are ignored and never printed).
    #[arg(short, long, value_name = "ADDR")]
    pub upstream: String,

    /// Record the proxied traffic (both legs) as pcapng. The SASL secrets the clients send
    /// (connection.start-ok's password, secure-ok, update-secret) are masked in it with '*',
    /// byte for byte, unless --pcap-keep-credentials.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Record the clients' credentials in --pcap as they were sent (masked by default).
    #[arg(long, requires = "pcap")]
    pub pcap_keep_credentials: bool,

    /// On SIGINT/SIGTERM, seconds live connections may go on before they are closed.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub drain: f64,

    /// Clients served at once (1 to 1048576); more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = crate::cli::count_in(proxy::MAX_CONNECTIONS))]
    pub max_connections: usize,

    /// Trace messages (one per socket read) held for the tracer at most (1 to 16777216); when it
    /// falls behind further, copies are dropped and counted, never the forwarded bytes.
    #[arg(long, value_name = "N", default_value_t = proxy::TRACE_QUEUE_MESSAGES,
          value_parser = crate::cli::count_in(proxy::MAX_TRACE_QUEUE_MESSAGES))]
    pub trace_queue: usize,

    #[command(flatten)]
    pub live: LiveArgs,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<u8> {
    let upstream = Upstream::parse(&args.upstream)?;
    let drain = crate::cli::seconds("--drain", args.drain)?;
    // One forwarding thread: forwarding is a few syscalls per read, and on a
    // loaded machine the wake-ups between worker threads cost more than a
    // second worker gains (measured: ~15% less CPU per GB at 4000 msg/s, more
    // throughput at full speed; a bulk transfer costs the whole process 0.9 CPU
    // s/GB here, so one thread forwards about 1 GB/s).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut listeners = Vec::new();
    for l in &args.listen {
        for addr in rt.block_on(proxy::resolve_listen(l))? {
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("cannot listen on {addr}"))?;
            listeners.push(listener);
        }
    }
    let stream_cfg = StreamConfig {
        ports: vec![upstream.port],
        decoder: DecoderConfig {
            body_prefix: args.live.bodies,
            ..DecoderConfig::default()
        },
        ..StreamConfig::default()
    };
    // Open every output before accepting anyone, so a bad path fails at once.
    let writer = open_output(&args.live)?;
    let live = args.live.clone();
    let pcap = match &args.pcap {
        // Large writes: every forwarded byte is recorded twice (both legs).
        Some(p) => Some(PcapRecorder::new(
            BufWriter::with_capacity(
                1 << 20,
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            ),
            Timestamp::now(),
            args.pcap_keep_credentials,
        )?),
        None => None,
    };
    for l in &listeners {
        if let Ok(a) = l.local_addr() {
            eprintln!("amqptrace: listening on {a}, forwarding to {upstream}");
        }
    }
    let (tx, rx, counters) = proxy::trace_channel(args.trace_queue, proxy::TRACE_QUEUE_BYTES);
    let tracer_counters = counters.clone();
    let tracer = std::thread::Builder::new()
        .name("amqptrace-tracer".into())
        .spawn(move || {
            trace_loop(
                rx,
                stream_cfg,
                LiveOutput::new(&live, writer),
                pcap,
                tracer_counters,
            )
        })
        .context("cannot start the tracer thread")?;
    let cfg = ProxyConfig {
        upstream,
        max_connections: args.max_connections,
        drain,
    };
    let drain = args.drain;
    rt.block_on(proxy::run(listeners, cfg, tx, async move {
        shutdown_signal().await;
        eprintln!("amqptrace: stopping: no new connections; live ones get {drain} s");
    }));
    rt.shutdown_timeout(Duration::from_secs(1));
    let code = match tracer.join() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the tracer thread panicked"),
    };
    report_drops(&counters);
    Ok(code)
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

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The tracer thread: decode, analyse, write; verdicts every second.
fn trace_loop(
    mut rx: TraceRx,
    cfg: StreamConfig,
    mut output: LiveOutput,
    mut pcap: Option<PcapRecorder<BufWriter<File>>>,
    counters: Arc<TraceCounters>,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the tracer's runtime")?;
    let mut tracer = Tracer::new(cfg);
    let mut pcap_failed = false;
    let mut handle = |msg: TraceMsg,
                      output: &mut LiveOutput,
                      pcap: &mut Option<PcapRecorder<BufWriter<File>>>| {
        proxy::processed(&counters, &msg);
        if let Some(p) = pcap.as_mut() {
            if let Err(e) = p.record(&msg) {
                if !pcap_failed {
                    eprintln!(
                        "amqptrace: --pcap: {e}; recording stopped, forwarding and tracing go on"
                    );
                    pcap_failed = true;
                }
                *pcap = None;
            }
        }
        if let TraceKind::UpstreamFailed { error } = &msg.kind {
            output.upstream_failed(
                msg.ts,
                Conn {
                    client: msg.conn.client,
                    broker: msg.conn.upstream,
                },
                error,
            );
            return;
        }
        tracer.handle(&msg, &mut |ev: Event| output.event(&ev));
    };
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch = Vec::with_capacity(proxy::TRACE_BATCH_MAX);
        loop {
            tokio::select! {
                open = proxy::next_batch(&mut rx, &mut batch) => {
                    for m in batch.drain(..) {
                        handle(m, &mut output, &mut pcap);
                    }
                    // One write per batch (the timeline trails by a few ms at most).
                    output.flush();
                    if !open {
                        break;
                    }
                }
                _ = tick.tick() => {
                    output.tick(Timestamp::now());
                    if let Some(p) = pcap.as_mut() {
                        let _ = p.flush();
                    }
                }
            }
        }
    });
    // The recording and the final verdicts end at the same, known moment.
    let stop = Timestamp::now();
    if let Some(p) = pcap.take() {
        p.finish(stop)
            .context("--pcap: cannot finish the recording")?;
    }
    output.finish(stop)
}

/// Checks the live options and opens `-o FILE` (or stdout).
pub fn open_output(args: &LiveArgs) -> anyhow::Result<Box<dyn Write + Send>> {
    crate::cli::analyzer_config(args.stall_after)?;
    Ok(match &args.output {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout())),
    })
}

/// A writer shared by a sink and the live verdict lines on the tracer thread.
#[derive(Clone)]
struct Shared(Rc<RefCell<Box<dyn Write>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

type VerdictKey = (Scope, Conn, Option<u16>, Option<String>, VerdictKind);

/// Whether a live verdict is printed as it comes: a finding (not `healthy`
/// or `idle`) that the analyzer calls certain; an uncertain stall may still
/// become certain (it is printed then) or go away.
fn worth_printing_live(v: &Verdict) -> bool {
    !matches!(v.verdict, VerdictKind::Healthy | VerdictKind::Idle)
        && v.certainty == Certainty::Certain
}

/// Live timeline, live verdicts and the final verdict block of a live source.
pub struct LiveOutput {
    analyzer: Analyzer,
    sink: Option<Box<dyn Sink>>,
    out: Shared,
    format: LiveFormat,
    quiet: bool,
    reported: BTreeSet<VerdictKey>,
    start: Option<Timestamp>,
    failed: bool,
}

impl LiveOutput {
    /// Built on the thread that uses it, writing to `w` (from [`open_output`]).
    pub fn new(args: &LiveArgs, w: Box<dyn Write + Send>) -> Self {
        // Checked by `open_output`, which runs first.
        let cfg = crate::cli::analyzer_config(args.stall_after).unwrap_or_default();
        let color = crate::cli::use_color(args.color, args.output.is_none());
        let w: Box<dyn Write> = w;
        let out = Shared(Rc::new(RefCell::new(w)));
        let sink: Option<Box<dyn Sink>> = if args.quiet {
            None
        } else {
            Some(match args.format {
                LiveFormat::Text => Box::new(TextSink::new(
                    out.clone(),
                    TextOptions {
                        verbose: args.verbose,
                        color,
                    },
                )),
                LiveFormat::Jsonl => Box::new(JsonlSink::new(out.clone())),
            })
        };
        LiveOutput {
            analyzer: Analyzer::new(cfg),
            sink,
            out,
            format: args.format,
            quiet: args.quiet,
            reported: BTreeSet::new(),
            start: None,
            failed: false,
        }
    }

    /// One timeline event: to the analyzer always, to the sink unless `--quiet`.
    pub fn event(&mut self, ev: &Event) {
        self.start.get_or_insert(ev.ts);
        self.analyzer.handle(ev);
        if let Some(s) = self.sink.as_mut() {
            let r = s.event(ev);
            self.check(r);
        }
    }

    /// The proxy could not reach the broker for this client.
    pub fn upstream_failed(&mut self, ts: Timestamp, conn: Conn, error: &str) {
        eprintln!(
            "amqptrace: {}: upstream unreachable ({error}); client closed",
            conn.client
        );
        if self.quiet {
            return;
        }
        let start = *self.start.get_or_insert(ts);
        let r = match self.format {
            LiveFormat::Text => writeln!(
                self.out,
                "{:>11.6}  {conn}  ✗       proxy: upstream unreachable: {error}; client closed",
                ts.secs_since(start)
            ),
            LiveFormat::Jsonl => {
                let v = serde_json::json!({
                    "ts": ts, "conn": conn, "dir": "s2c", "event": "proxy.upstream-error", "error": error,
                });
                writeln!(self.out, "{v}")
            }
        };
        self.check(r);
    }

    /// Prints the verdicts that have become certain since the last tick
    /// (called about once a second: a verdict is printed within a second of
    /// the analyzer calling it certain; the waiting is the analyzer's rules, none here).
    pub fn tick(&mut self, now: Timestamp) {
        let started = std::time::Instant::now();
        let analysis = self.analyzer.live_analysis(now);
        // What scripts/bench-soak.sh reads (AMQPTRACE_LOG=amqptrace::tick=debug):
        // the live analysis must not grow with the proxy's history.
        tracing::debug!(
            target: "amqptrace::tick",
            micros = started.elapsed().as_micros() as u64,
            verdicts = analysis.verdicts.len(),
            "live analysis"
        );
        let start = *self.start.get_or_insert(now);
        for v in analysis.verdicts.iter().filter(|v| worth_printing_live(v)) {
            let key = (
                v.scope,
                v.conn,
                v.channel,
                v.consumer_tag.clone(),
                v.verdict,
            );
            if !self.reported.insert(key) {
                continue;
            }
            let r = self.write_verdict(v, now, start, true);
            self.check(r);
        }
        self.flush();
    }

    fn write_verdict(
        &mut self,
        v: &Verdict,
        now: Timestamp,
        start: Timestamp,
        live: bool,
    ) -> io::Result<()> {
        match self.format {
            LiveFormat::Text => {
                let mut subject = match v.scope {
                    Scope::Consumer => {
                        format!("consumer '{}'", v.consumer_tag.as_deref().unwrap_or("?"))
                    }
                    Scope::Channel => format!("channel {}", v.channel.unwrap_or(0)),
                    Scope::Connection => "connection".to_string(),
                };
                if let Some(q) = &v.queue {
                    subject.push_str(&format!(" queue '{q}'"));
                }
                subject.push_str(&format!(" on {}", v.conn));
                if let (Scope::Consumer, Some(ch)) = (v.scope, v.channel) {
                    subject.push_str(&format!(" ch {ch}"));
                }
                let verdict = serde_json::to_value(v.verdict).ok();
                let name = verdict.as_ref().and_then(|n| n.as_str()).unwrap_or("?");
                writeln!(
                    self.out,
                    "{:>11.6}  VERDICT {name}: {subject}\n             {}",
                    now.secs_since(start),
                    v.explanation
                )
            }
            LiveFormat::Jsonl => {
                let mut obj = serde_json::to_value(v).map_err(io::Error::other)?;
                if let Some(m) = obj.as_object_mut() {
                    m.insert("event".into(), "verdict".into());
                    m.insert(
                        "at".into(),
                        serde_json::to_value(now).map_err(io::Error::other)?,
                    );
                    m.insert("live".into(), live.into());
                }
                writeln!(self.out, "{obj}")
            }
        }
    }

    pub fn flush(&mut self) {
        let r = self.out.flush();
        self.check(r);
    }

    /// An output error stops the output, never the source (forwarding, capture).
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            if !self.failed {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("amqptrace: writing output: {e}; output stopped, tracing goes on");
                }
                self.failed = true;
            }
            self.sink = None;
            // Replace the writer so that later writes are not attempted.
            *self.out.0.borrow_mut() = Box::new(io::sink());
        }
    }

    /// Flushes the sinks, prints the final verdict block, returns the exit code.
    pub fn finish(mut self, now: Timestamp) -> anyhow::Result<u8> {
        if let Some(s) = self.sink.as_mut() {
            let r = s.finish();
            self.check(r);
        }
        // The source stopped at `now`: a recorded end, not "so far".
        let analysis: Analysis = self.analyzer.analyze(Horizon::Recorded(now));
        let start = self.start.unwrap_or(now);
        match self.format {
            LiveFormat::Text => {
                let mut block = Vec::new();
                writeln!(block)?;
                write_verdict_block(&analysis, &mut block)?;
                let r = self.out.write_all(&block);
                self.check(r);
            }
            LiveFormat::Jsonl => {
                for v in &analysis.verdicts {
                    let r = self.write_verdict(v, now, start, false);
                    self.check(r);
                }
                let mut err = io::stderr().lock();
                write_verdict_block(&analysis, &mut err)?;
            }
        }
        self.flush();
        Ok(if analysis.has_stall() {
            exit::STALL
        } else {
            exit::OK
        })
    }
}
