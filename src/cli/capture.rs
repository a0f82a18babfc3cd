//! `amqptrace capture -i IFACE`: live interface capture through libpcap
//! (loaded when the capture starts), with the same live timeline, live
//! verdicts and final verdict block as `proxy` (they share [`LiveOutput`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use amqptrace::amqp::DecoderConfig;
use amqptrace::event::{Event, Timestamp};
use amqptrace::source::live::{port_filter, LiveCapture, LIBPCAP_ENV};
use amqptrace::stream::StreamConfig;

use crate::cli::proxy::{open_output, LiveArgs, LiveOutput};

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
    let writer = open_output(&args.live)?;
    let mut cap = LiveCapture::open(
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
    watch_signals(stop.clone()).context("cannot install the signal handlers")?;
    let mut output = LiveOutput::new(&args.live, writer);
    let mut last_tick = Instant::now();
    let report_savefile = |cap: &mut LiveCapture| {
        if let Some(e) = cap.take_savefile_error() {
            eprintln!("amqptrace: -w: {e}; recording stopped, the capture goes on");
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let got = cap.poll(&mut |ev: &Event| output.event(ev))?;
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            output.tick(Timestamp::now());
            cap.flush();
        } else if !got {
            output.flush();
        }
        report_savefile(&mut cap);
    }
    let stats = cap.finish(Timestamp::now(), &mut |ev: &Event| output.event(ev));
    if let Some(e) = &stats.savefile_error {
        eprintln!("amqptrace: -w: {e}; recording stopped");
    }
    if stats.dropped + stats.if_dropped > 0 {
        eprintln!(
            "amqptrace: {} packets dropped by the kernel, {} by the interface: the timeline has holes there",
            stats.dropped, stats.if_dropped
        );
    }
    let code = output.finish(Timestamp::now())?;
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

/// Sets `stop` on the first SIGINT or SIGTERM (a thread with a small runtime
/// waits for them; the capture loop checks the flag between reads).
fn watch_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registering here (not in the thread) means no signal is missed after `open`.
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("amqptrace-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            stop.store(true, Ordering::Relaxed);
        })?;
    Ok(())
}
