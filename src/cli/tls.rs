//! The TLS options of `proxy` and `run`: TLS to an `amqps` broker (its CA,
//! a client certificate, verification, merged with the TLS options of the
//! URL's query) and, for `proxy`, TLS to the clients; turned into the
//! library's [`UpstreamTls`] and [`ListenTls`]. Says on every start when
//! the broker's certificate is not verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use amqptrace::amqp::DecoderConfig;
use amqptrace::source::proxy::{KeyLogFile, ListenTls, Upstream, UpstreamTls, UpstreamTlsOptions};
use amqptrace::stream::StreamConfig;
use amqptrace::url::{AmqpUrl, TlsFiles, TlsQuery};

#[derive(clap::Args, Debug, Clone)]
pub struct UpstreamTlsArgs {
    /// An amqps:// upstream: trust only the CA certificates in FILE (PEM) for the broker's
    /// certificate (default: the system's root store). The URL's cacertfile= does the same.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,

    /// An amqps:// upstream: present this client certificate chain (PEM) to the broker, with
    /// --upstream-key (the URL's certfile= and keyfile= do the same).
    #[arg(long, value_name = "FILE", requires = "upstream_key")]
    pub upstream_cert: Option<PathBuf>,

    /// The private key (PEM) of --upstream-cert.
    #[arg(long, value_name = "FILE", requires = "upstream_cert")]
    pub upstream_key: Option<PathBuf>,

    /// An amqps:// upstream: do NOT verify the broker's certificate (as the URL's
    /// verify=verify_none). Said on every start; anyone on the path can then read the traffic.
    #[arg(long)]
    pub upstream_insecure: bool,
}

impl UpstreamTlsArgs {
    fn given(&self) -> Option<&'static str> {
        if self.upstream_ca.is_some() {
            Some("--upstream-ca")
        } else if self.upstream_cert.is_some() {
            Some("--upstream-cert")
        } else if self.upstream_insecure {
            Some("--upstream-insecure")
        } else {
            None
        }
    }
}

/// The `--upstream` value with the TLS to speak to it: an `amqps://` URL's
/// query options, overridden by the options given. `keylog` gets the
/// sessions' secrets.
pub fn upstream(
    value: &str,
    args: &UpstreamTlsArgs,
    keylog: Option<Arc<KeyLogFile>>,
) -> anyhow::Result<Upstream> {
    let mut upstream = Upstream::parse(value)?;
    let Some(url) = AmqpUrl::parse(value).filter(|u| u.tls()) else {
        if let Some(option) = args.given() {
            anyhow::bail!("{option}: the upstream is not amqps:// (plain TCP has no certificate)");
        }
        return Ok(upstream);
    };
    let q = TlsQuery::parse(url.query);
    let verify = match q.verify.as_deref() {
        None | Some("verify_peer") => !args.upstream_insecure,
        Some("verify_none") => false,
        Some(other) => {
            anyhow::bail!("the upstream URL's verify={other}: expected verify_peer or verify_none")
        }
    };
    let sni = q.server_name_indication;
    let no_sni = sni.as_deref() == Some("disable");
    let opts = UpstreamTlsOptions {
        files: TlsFiles {
            ca: args.upstream_ca.clone(),
            cert: args.upstream_cert.clone(),
            key: args.upstream_key.clone(),
        }
        .or(q.files),
        server_name: sni.filter(|_| !no_sni),
        no_sni,
        verify,
    };
    if !q.ignored.is_empty() {
        eprintln!(
            "amqptrace: the upstream URL's {} ignored: TLS options the proxy does not take",
            q.ignored.join(", ")
        );
    }
    if !verify {
        eprintln!(
            "amqptrace: WARNING: the broker's TLS certificate is NOT verified \
             (--upstream-insecure or verify=verify_none): whoever answers at {upstream} gets \
             the traffic, credentials included"
        );
    }
    upstream.tls = Some(Arc::new(UpstreamTls::new(&opts, &upstream.host, keylog)?));
    Ok(upstream)
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListenTlsArgs {
    /// Speak TLS to the clients (for clients that insist on amqps), with --cert and --key; the
    /// tracing behind it is the same.
    #[arg(long, requires_all = ["cert", "key"])]
    pub listen_tls: bool,

    /// --listen-tls: the proxy's certificate chain (PEM), as the clients should verify it.
    #[arg(long, value_name = "FILE", requires = "listen_tls")]
    pub cert: Option<PathBuf>,

    /// --listen-tls: the private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "listen_tls")]
    pub key: Option<PathBuf>,
}

impl ListenTlsArgs {
    /// The TLS for the clients, when asked.
    pub fn open(&self, keylog: Option<Arc<KeyLogFile>>) -> anyhow::Result<Option<Arc<ListenTls>>> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) if self.listen_tls => {
                Ok(Some(Arc::new(ListenTls::new((cert, key), keylog)?)))
            }
            _ => Ok(None),
        }
    }
}

/// `--tls-keylog FILE`, opened for appending (0600) before anything starts.
pub fn keylog(path: Option<&Path>) -> anyhow::Result<Option<Arc<KeyLogFile>>> {
    Ok(match path {
        Some(p) => Some(Arc::new(KeyLogFile::open(p)?)),
        None => None,
    })
}

/// How the proxied bytes to `upstream` are decoded: AMQP on its port. The
/// tracer and the recording hold the plaintext, so with TLS to the broker
/// even port 5671 is not taken for TLS.
pub fn stream_config(upstream: &Upstream, decoder: DecoderConfig) -> StreamConfig {
    let mut cfg = StreamConfig {
        ports: vec![upstream.port],
        decoder,
        ..StreamConfig::default()
    };
    if upstream.tls.is_some() {
        cfg.tls_ports.clear();
    }
    cfg
}

/// "over TLS" and how the broker is verified, for the start-up line.
pub fn describe(upstream: &Upstream) -> &'static str {
    match &upstream.tls {
        None => "",
        Some(t) if t.verifies() => " over TLS",
        Some(_) => " over TLS, certificate NOT verified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> UpstreamTlsArgs {
        UpstreamTlsArgs {
            upstream_ca: None,
            upstream_cert: None,
            upstream_key: None,
            upstream_insecure: false,
        }
    }

    #[test]
    fn tls_only_for_amqps_and_verified_unless_asked() {
        let plain = upstream("amqp://u:p@broker:5672/v", &none(), None).unwrap();
        assert!(plain.tls.is_none());
        let ca = UpstreamTlsArgs {
            upstream_ca: Some("ca.pem".into()),
            ..none()
        };
        let e = upstream("broker:5672", &ca, None).unwrap_err().to_string();
        assert!(
            e.contains("--upstream-ca") && e.contains("not amqps"),
            "{e}"
        );
        // The system's root store (Debian's ca-certificates).
        let tls = upstream("amqps://u:p@broker/v", &none(), None).unwrap();
        assert_eq!(tls.port, 5671);
        assert!(tls.tls.as_ref().is_some_and(|t| t.verifies()));
        assert_eq!(describe(&tls), " over TLS");
        let off = upstream("amqps://broker/?verify=verify_none", &none(), None).unwrap();
        assert!(off.tls.as_ref().is_some_and(|t| !t.verifies()));
        let insecure = UpstreamTlsArgs {
            upstream_insecure: true,
            ..none()
        };
        let off = upstream("amqps://broker", &insecure, None).unwrap();
        assert_eq!(describe(&off), " over TLS, certificate NOT verified");
        let e = upstream("amqps://broker/?verify=maybe", &none(), None).unwrap_err();
        assert!(e.to_string().contains("verify=maybe"), "{e}");
        // The URL's cacertfile is read (and a missing file said, with its option).
        let e = upstream(
            "amqps://broker/?cacertfile=%2Fnonexistent%2Fca.pem",
            &none(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn the_tracer_takes_no_port_for_tls_behind_a_tls_upstream() {
        let tls = upstream("amqps://broker", &none(), None).unwrap();
        let cfg = stream_config(&tls, DecoderConfig::default());
        assert_eq!((cfg.ports, cfg.tls_ports), (vec![5671], vec![]));
        let plain = upstream("broker:5671", &none(), None).unwrap();
        let cfg = stream_config(&plain, DecoderConfig::default());
        assert_eq!(cfg.tls_ports, StreamConfig::default().tls_ports);
    }
}
