//! `amqptrace analyze`: capture files → timeline, verdicts.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use amqptrace::amqp::DecoderConfig;
use amqptrace::analyze::{write_verdict_block, Analyzer};
use amqptrace::event::Event;
use amqptrace::pipeline::{Input, RunSummary};
use amqptrace::sink::{ChromeTraceSink, CountsSink, JsonlSink, Sink, TextOptions, TextSink};
use amqptrace::stream::StreamConfig;
use amqptrace::tls::KeyLog;

use crate::exit;

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng, e.g. from `tcpdump -w` or Wireshark). Several are merged by time.
    #[arg(required = true, value_name = "CAPTURE")]
    captures: Vec<PathBuf>,

    /// Output format: text (timeline + verdict block), jsonl (one event per line, docs/events.md),
    /// json (the analysis document with verdicts, docs/analysis.md), counts (events per method;
    /// decode only, no verdicts), chrome-trace (Trace Event Format JSON for ui.perfetto.dev and
    /// chrome://tracing: connections as processes, channels as threads, deliveries as slices).
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    capture: CaptureOptions,

    /// Show heartbeats and content header/body frames (folded by default).
    #[arg(short, long)]
    verbose: bool,

    /// Record the first N bytes of each message body (never recorded by default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    bodies: usize,

    /// Time threshold, for what only time can prove (a connection that never consumes, a
    /// consume never confirmed, a full prefetch window with nothing in the traffic to compare
    /// it with): certain after SECS, uncertain from 1 s. What the frames prove (a publish
    /// routed away from a consumer's queue, a window full while peers settle) needs no wait.
    /// Default 5 (docs/verdicts.md).
    #[arg(long, value_name = "SECS")]
    stall_after: Option<f64>,

    /// Colour in text output: auto (only on a terminal, and not when NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// Where AMQP is in a capture: the ports, and the TLS secrets (`analyze`, `report`).
#[derive(Args, Debug)]
pub struct CaptureOptions {
    /// Broker port (repeatable). Connections on other ports are still found by their
    /// protocol header or their frames.
    #[arg(short, long = "port", value_name = "PORT", default_values_t = [5672])]
    pub ports: Vec<u16>,

    /// Port of AMQP over TLS (repeatable): noted with the server name, decoded only
    /// with the session's secrets (--tls-keylog).
    #[arg(long = "tls-port", value_name = "PORT", default_values_t = [5671])]
    pub tls_ports: Vec<u16>,

    /// NSS key log (what SSLKEYLOGFILE makes Python, curl, Firefox and Node write): the TLS
    /// sessions it has secrets for are decrypted and decoded as AMQP, on any port (TLS 1.2
    /// AES-GCM and ChaCha20-Poly1305, TLS 1.3). A pcapng's own decryption secrets
    /// (editcap --inject-secrets) are used without it. Secrets never reach any output.
    #[arg(long, value_name = "FILE")]
    pub tls_keylog: Option<PathBuf>,

    /// Worker threads for TCP reassembly, AMQP detection and frame decoding: connections
    /// are spread over N threads (both directions of a connection on one), a further thread
    /// reads the capture, and their events are merged back in time order into the one
    /// analysis and output on the main thread. The output is the same, byte for byte, with
    /// any N; the one exception (a connection left unclassified behind tens of thousands of
    /// other events) is in README "Performance". 1 runs everything on one thread, as before
    /// there were threads, and is the default: on the 2-core machine amqptrace is measured
    /// on, 2 threads take about 2x the time and 3-4x the CPU of one (splitting each
    /// packet's work between threads costs more than the decoding it shares out, even
    /// with no event handed over; README "Performance" has the figures).
    #[arg(long, value_name = "N", default_value = "1")]
    pub threads: std::num::NonZeroUsize,
}

impl CaptureOptions {
    /// The stream stage's configuration for these ports, with this decoder.
    pub fn stream_config(&self, decoder: DecoderConfig) -> StreamConfig {
        StreamConfig {
            ports: self.ports.clone(),
            tls_ports: self.tls_ports.clone(),
            decoder,
        }
    }

    /// Worker threads to use (`--threads`).
    pub fn threads(&self) -> usize {
        self.threads.get()
    }

    /// The key log's secrets (none without `--tls-keylog`).
    pub fn keylog(&self) -> anyhow::Result<KeyLog> {
        tls_keylog(self.tls_keylog.as_deref())
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Jsonl,
    Json,
    Counts,
    /// Trace Event Format JSON for ui.perfetto.dev and chrome://tracing.
    ChromeTrace,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<u8> {
    let stream_cfg = args.capture.stream_config(DecoderConfig {
        body_prefix: args.bodies,
        // The analyzer reads a few headers (x-delivery-count, x-death, Celery's task
        // and eta) into bounded facts; only `counts`, which runs no analyzer, skips them.
        headers: args.format != Format::Counts,
        ..DecoderConfig::default()
    });
    let input = Input {
        captures: &args.captures,
        cfg: &stream_cfg,
        keylog: args.capture.keylog()?,
        threads: args.capture.threads(),
    };
    let analyzer_cfg = crate::cli::analyzer_config(args.stall_after)?;
    let color = crate::cli::use_color(args.color, args.output.is_none());
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    };

    let mut analyzer = Analyzer::new(analyzer_cfg);
    let (summary, mut out) = match args.format {
        Format::Text => {
            let mut sink = TextSink::new(
                out,
                TextOptions {
                    verbose: args.verbose,
                    color,
                },
            );
            let summary = drive(input, &mut analyzer, &mut sink)?;
            (summary, Some(sink.into_inner()))
        }
        Format::Jsonl => {
            let sink = &mut JsonlSink::batched(out);
            (drive(input, &mut analyzer, sink)?, None)
        }
        Format::Counts => {
            // Decode only: no analyzer, so this is also the baseline the analysis cost is measured against.
            let mut sink = CountsSink::new(out);
            let summary = input.run(|ev| sink.event(ev))?;
            sink.finish()?;
            return Ok(crate::cli::warnings_then_code(&summary));
        }
        Format::ChromeTrace => {
            let sink = &mut ChromeTraceSink::new(out);
            (drive(input, &mut analyzer, sink)?, None)
        }
        Format::Json => {
            // The analyzer alone, in an instance of the pipeline of its own: through
            // `drive` it shared the text sink's, whose closure asked for the sink at
            // every event (callgrind, storm slice json: 157.12 -> 152.55 M).
            let summary = input.run(|ev| {
                analyzer.handle(ev);
                Ok(())
            })?;
            (summary, Some(out))
        }
    };

    let analysis = analyzer.analyze(summary.horizon());
    let stall = analysis.verdicts.iter().any(|v| v.verdict.is_stall());
    if let Some(w) = out.as_mut() {
        match args.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut *w, &analysis)?;
                writeln!(w)?;
            }
            _ => {
                writeln!(w)?;
                write_verdict_block(&analysis, &mut *w)?;
            }
        }
        w.flush()?;
    }
    let code = crate::cli::warnings_then_code(&summary);
    Ok(if stall { exit::STALL } else { code })
}

/// The key log `--tls-keylog FILE` names (read whole, before any output), or none.
pub fn tls_keylog(path: Option<&std::path::Path>) -> anyhow::Result<KeyLog> {
    Ok(match path {
        Some(p) => KeyLog::read(p)?,
        None => KeyLog::default(),
    })
}

/// Runs the pipeline, feeding every event to the analyzer and the sink, then finishes the sink.
fn drive<S: Sink>(
    input: Input<'_>,
    analyzer: &mut Analyzer,
    sink: &mut S,
) -> anyhow::Result<RunSummary> {
    let summary = input.run(|ev: &Event| {
        analyzer.handle(ev);
        sink.event(ev)
    })?;
    sink.finish()?;
    Ok(summary)
}
