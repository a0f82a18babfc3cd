//! `amqptrace capture -i IFACE`: live interface capture through libpcap
//! (loaded when the capture starts), with the same live timeline, live
//! verdicts and final verdict block as `proxy` (the library's live session:
//! [`CaptureSource`] in its trace loop, [`LiveOutput`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use amqptrace::amqp::DecoderConfig;
use amqptrace::live::{self, capture::CaptureSource, signals::stop_on_signal, LiveOutput};
use amqptrace::source::live::{port_filter, LiveCapture, LIBPCAP_ENV};
use amqptrace::stream::StreamConfig;

use crate::cli::live::LiveArgs;

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// Interface to capture on (e.g. lo, eth0, any). Capturing loads libpcap when it starts
    /// (only `capture` needs it): libpcap.so.1, libpcap.so.0.8 (Debian, Ubuntu: apt-get
    /// install libpcap0.8), libpcap.so, or libpcap.A.dylib on macOS;
    /// AMQPTRACE_LIBPCAP=/path/to/libpcap.so loads that file instead. Without libpcap,
    /// capture says so and exits 2.
    #[arg(short, long, value_name = "IFACE")]
    pub interface: String,

    /// Broker port (repeatable): the capture filter is built from these, and connections on them
    /// are AMQP.
    #[arg(short, long = "port", value_name = "PORT", default_values_t = [5672])]
    pub ports: Vec<u16>,

    /// A BPF capture filter of your own instead of the one built from --port.
    #[arg(long, value_name = "BPF")]
    pub filter: Option<String>,

    /// Also write the captured packets to FILE (pcap, the interface's link type). A write
    /// error (a full disk) is reported once; the recording stops, the capture goes on, and
    /// the exit code is 2.
    #[arg(short, long, value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// With -w: record connection.start-ok's SASL response (the password) as captured.
    /// By default it is masked byte for byte in the file (same length, so tshark still
    /// decodes it), as in every recording amqptrace writes.
    #[arg(long, requires = "write")]
    pub keep_credentials: bool,

    #[command(flatten)]
    pub live: LiveArgs,
}

pub fn run(args: CaptureArgs) -> anyhow::Result<u8> {
    let cfg = StreamConfig {
        ports: args.ports.clone(),
        decoder: DecoderConfig {
            body_prefix: args.live.bodies,
            ..DecoderConfig::default()
        },
        ..StreamConfig::default()
    };
    let filter = args
        .filter
        .clone()
        .unwrap_or_else(|| port_filter(&args.ports));
    let (opts, writer) = args.live.open()?;
    let cap = LiveCapture::open(
        &args.interface,
        &filter,
        cfg,
        args.write.as_deref(),
        args.keep_credentials,
    )?;
    tracing::info!(libpcap = %cap.libpcap_version(), "libpcap loaded (set {LIBPCAP_ENV} to choose the file)");
    eprintln!(
        "amqptrace: capturing on {} ({}), filter '{filter}'",
        args.interface,
        cap.linktype_name()
    );
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone()).context("cannot install the signal handlers")?;
    let mut output = LiveOutput::new(&opts, writer);
    let (stats, end) = live::trace(CaptureSource::new(cap, stop), &mut output)?;
    let code = crate::cli::exit_code(&output.finish(end)?);
    if stats.savefile_failed {
        if let Some(path) = &args.write {
            eprintln!(
                "amqptrace: the recording {} is incomplete (see the write error above)",
                path.display()
            );
        }
        return Ok(crate::exit::ERROR);
    }
    Ok(code)
}
