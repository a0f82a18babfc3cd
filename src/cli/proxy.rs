//! `amqptrace proxy`: a transparent TCP proxy in front of RabbitMQ whose
//! traffic is traced and diagnosed live, with TLS on either side when asked
//! (`--upstream amqps://…`, `--listen-tls`: [`crate::cli::tls`]). Parses the
//! arguments, binds the listeners, opens the outputs and serves the
//! library's [`ProxySession`] until SIGINT/SIGTERM.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use amqptrace::amqp::DecoderConfig;
use amqptrace::live::channel::Recorder;
use amqptrace::live::proxy::ProxySession;
use amqptrace::live::signals::Signals;
use amqptrace::source::proxy::{self, ProxyConfig};

use crate::cli::live::LiveArgs;
use crate::cli::tls::{ListenTlsArgs, UpstreamTlsArgs};

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Address to accept clients on (repeatable). Loopback unless told otherwise; port 0 picks a
    /// free port. The chosen address is printed on stderr as "listening on ADDR".
    #[arg(short, long, value_name = "HOST:PORT", default_values_t = ["127.0.0.1:5673".to_string()])]
    pub listen: Vec<String>,

    /// The broker: host:port, [ipv6]:port, a host name, amqp://user:pass@host:port/vhost
    /// (credentials are ignored and never printed), or amqps://host:port for TLS to the broker
    /// (default port 5671; the clients still speak plain AMQP to the proxy).
    #[arg(short, long, value_name = "ADDR")]
    pub upstream: String,

    #[command(flatten)]
    pub upstream_tls: UpstreamTlsArgs,

    #[command(flatten)]
    pub listen_tls: ListenTlsArgs,

    /// Append the secrets of the proxy's own TLS sessions (either side) to FILE, in the NSS key
    /// log format that Wireshark and `analyze --tls-keylog` read (created 0600).
    #[arg(long, value_name = "FILE")]
    pub tls_keylog: Option<PathBuf>,

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
    let keylog = crate::cli::tls::keylog(args.tls_keylog.as_deref())?;
    let upstream = crate::cli::tls::upstream(&args.upstream, &args.upstream_tls, keylog.clone())?;
    let listen_tls = args.listen_tls.open(keylog)?;
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
    let stream = crate::cli::tls::stream_config(
        &upstream,
        DecoderConfig {
            body_prefix: args.live.bodies,
            ..DecoderConfig::default()
        },
    );
    // Open every output before accepting anyone, so a bad path fails at once.
    let (output, writer) = args.live.open()?;
    let recorder = match &args.pcap {
        // Large writes: every forwarded byte is recorded twice (both legs).
        Some(p) => Some(Recorder::new(
            Box::new(BufWriter::with_capacity(
                1 << 20,
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            "--pcap",
            "forwarding and tracing go on",
            args.pcap_keep_credentials,
        )?),
        None => None,
    };
    // Handled before "listening on" is printed: a SIGINT sent as soon as that
    // line shows (by a script, or a test) must stop the proxy, and where the
    // shell started it with SIGINT ignored, one sent earlier would be lost.
    let mut signals = rt
        .block_on(async { Signals::new() })
        .context("cannot install the signal handlers")?;
    for l in &listeners {
        if let Ok(a) = l.local_addr() {
            eprintln!(
                "amqptrace: listening on {a}, forwarding to {upstream}{}{}",
                crate::cli::tls::describe(&upstream),
                if listen_tls.is_some() {
                    "; TLS to the clients"
                } else {
                    ""
                }
            );
        }
    }
    let session = ProxySession {
        proxy: ProxyConfig {
            upstream,
            listen_tls,
            max_connections: args.max_connections,
            drain,
        },
        trace_queue: args.trace_queue,
        stream,
        output,
        writer,
        recorder,
    };
    let drain = args.drain;
    let analysis = rt.block_on(session.serve(listeners, async move {
        signals.recv().await;
        eprintln!("amqptrace: stopping: no new connections; live ones get {drain} s");
    }))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(crate::cli::exit_code(&analysis))
}
