//! The `amqptrace` binary: argument parsing and wiring of library stages. Thin on purpose.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use amqptrace::pipeline::PipelineError;

mod cli;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// Every verdict is healthy or slow_but_healthy.
    pub const OK: u8 = 0;
    /// A stall (any other verdict) was found.
    pub const STALL: u8 = 1;
    /// Usage error or unreadable input: nothing or not all could be analysed.
    pub const ERROR: u8 = 2;
    /// The input is damaged (cut or corrupt) after some packets: output covers what came before.
    pub const DAMAGED: u8 = 3;
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  no stall: every consumer and connection is healthy, idle or slow but healthy
  1  a stall was found, certain or uncertain (see the causes and verdict block, or
     \"causes\" and \"verdicts\" in --format json)
  2  usage error, or an input that cannot be read (missing, empty, not a capture,
     header cut short, unsupported link type)
  3  an input is damaged after some packets (cut in the middle of a packet, corrupt
     block): everything before the damage was analysed; a stall found there still
     exits 1

Examples:
  amqptrace analyze captures/lapin-basic.pcap
  amqptrace analyze -v --port 5682 trace.pcapng
  amqptrace analyze --format jsonl -o timeline.jsonl a.pcap b.pcap
  amqptrace analyze --format json capture.pcap | jq '.verdicts[] | select(.verdict != \"healthy\")'";

#[derive(Parser, Debug)]
#[command(
    name = "amqptrace",
    version,
    about = "Shows the AMQP 0-9-1 wire and says whether and where consumption stalls.",
    long_about = "amqptrace decodes AMQP 0-9-1 traffic (RabbitMQ and its clients) from packet captures, \
as a transparent proxy, or from a live interface, and answers one question: does consumption stall, \
and exactly where? It prints the conversation as a timeline and ends with a verdict per consumer and \
connection, with the frames that prove it.\n\n\
Start with `amqptrace analyze trace.pcap` (capture with `tcpdump -i lo -w trace.pcap 'tcp port 5672'`), \
`amqptrace proxy --upstream 127.0.0.1:5672` (then point workers at 127.0.0.1:5673), or \
`amqptrace run -- pytest` in CI."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decode pcap/pcapng captures into a timeline and verdicts.
    #[command(after_help = EXIT_CODES_HELP)]
    Analyze(cli::analyze::AnalyzeArgs),
    /// Forward clients to RabbitMQ as a transparent TCP proxy, tracing and diagnosing live.
    #[command(after_help = EXIT_CODES_HELP)]
    Proxy(cli::proxy::ProxyArgs),
    /// Capture on a network interface (libpcap), tracing and diagnosing live.
    #[command(after_help = EXIT_CODES_HELP)]
    Capture(cli::capture::CaptureArgs),
    /// Build one self-contained report.html (verdicts, swimlane timeline, unacked vs prefetch)
    /// from a capture or a `--format jsonl` timeline.
    #[command(after_help = EXIT_CODES_HELP)]
    Report(cli::report::ReportArgs),
    /// Run a command (tests, a worker) through the proxy and leave an artifacts folder behind:
    /// timeline, verdicts, summary, pcapng recording and report.html. For CI.
    #[command(after_help = cli::run::RUN_HELP)]
    Run(cli::run::RunArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AMQPTRACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("amqptrace: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<PipelineError>()
                .is_some_and(|p| matches!(p, PipelineError::Output(io) if io.kind() == io::ErrorKind::BrokenPipe))
    })
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Analyze(args) => cli::analyze::run(args),
        Command::Proxy(args) => cli::proxy::run(args),
        Command::Capture(args) => cli::capture::run(args),
        Command::Report(args) => cli::report::run(args),
        Command::Run(args) => cli::run::run(args),
    }
}
