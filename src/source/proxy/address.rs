//! Where the proxy listens and forwards to: the `--upstream` value
//! ([`Upstream`], an AMQP URL's credentials dropped as it is parsed, with
//! the TLS to speak to it when it is `amqps`), the
//! `--listen` value ([`resolve_listen`]), their resolution, and why either
//! is not usable ([`AddressError`]). Owns no socket.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::tls::UpstreamTls;
use crate::url::AmqpUrl;

/// The broker to forward to, as given on the command line (credentials removed).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// TLS to the broker (`amqps`); `None`: plain TCP. [`Upstream::parse`]
    /// leaves it to the caller, who knows the TLS options.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// Why an `--upstream` or `--listen` value is not usable.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}': expected host:port, [ipv6]:port or amqp://host:port/vhost")]
    Syntax(String),
    #[error("'{0}': the port is not a number from 1 to 65535")]
    Port(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

impl Upstream {
    /// Parses `host:port`, `[v6]:port`, `host` (port 5672) or an
    /// `amqp://user:pass@host:port/vhost?query` URL. User name and password
    /// are dropped here and never stored, so nothing can print them. The
    /// error message does not repeat a URL's credentials either.
    pub fn parse(s: &str) -> Result<Upstream, AddressError> {
        let url = AmqpUrl::parse(s).filter(|u| matches!(u.scheme, "amqp" | "amqps"));
        let (hostport, default_port) = match &url {
            Some(u) => (u.host_port, u.default_port()),
            // A bare `host:port` (anything before a stray '@' is dropped all the same).
            None => {
                let authority = s.split(['/', '?', '#']).next().unwrap_or("");
                let hostport = authority.rsplit('@').next().unwrap_or(authority);
                (hostport, 5672)
            }
        };
        // A URL is shown by its host:port only: the rest may hold a password.
        let shown = || match url {
            Some(_) => hostport.to_string(),
            None => s.to_string(),
        };
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| AddressError::Syntax(shown()))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AddressError::Port(shown()))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(AddressError::Syntax(shown()));
        }
        Ok(Upstream {
            host: host.to_string(),
            port,
            tls: None,
        })
    }

    /// Resolves the host (every connect resolves again, so DNS changes are followed).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, AddressError> {
        lookup(&self.host, self.port, || self.to_string()).await
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port`, `host`, `[v6]` → (host, port text).
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(r) = s.strip_prefix('[') {
        let end = r.find(']')?;
        let host = &r[..end];
        let after = &r[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.matches(':').count() {
        0 => Some((s, None)),
        1 => {
            let (h, p) = s.split_once(':')?;
            Some((h, Some(p)))
        }
        // A bare IPv6 address without a port.
        _ => Some((s, None)),
    }
}

/// Resolves a `--listen` value (`host:port`, `[v6]:port`, a host name).
pub async fn resolve_listen(s: &str) -> Result<Vec<SocketAddr>, AddressError> {
    let (host, port) = split_host_port(s).ok_or_else(|| AddressError::Syntax(s.to_string()))?;
    let port = port
        .ok_or_else(|| AddressError::Syntax(s.to_string()))?
        .parse::<u16>()
        .map_err(|_| AddressError::Port(s.to_string()))?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    lookup(host, port, || s.to_string()).await
}

/// The addresses `host` resolves to with `port`; `named` says what was asked
/// for when it resolves to none.
async fn lookup(
    host: &str,
    port: u16,
    named: impl FnOnce() -> String,
) -> Result<Vec<SocketAddr>, AddressError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| AddressError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AddressError::NoAddress(named()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let u = |s: &str| {
            Upstream::parse(s)
                .map(|u| (u.host, u.port))
                .map_err(|e| e.to_string())
        };
        assert_eq!(u("127.0.0.1:5672"), Ok(("127.0.0.1".into(), 5672)));
        assert_eq!(u("[::1]:5673"), Ok(("::1".into(), 5673)));
        assert_eq!(u("rabbit.local"), Ok(("rabbit.local".into(), 5672)));
        assert_eq!(u("::1"), Ok(("::1".into(), 5672)));
        assert_eq!(
            u("amqp://user:s3cret@broker:5673/%2f?heartbeat=5"),
            Ok(("broker".into(), 5673))
        );
        assert_eq!(
            u("amqp://guest:guest@[::1]/vhost"),
            Ok(("::1".into(), 5672))
        );
        assert_eq!(u("amqps://h"), Ok(("h".into(), 5671)));
        let e = u("amqp://user:s3cret@broker:99999/").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(u("host:0").is_err());
        assert_eq!(
            Upstream::parse("[::1]:1").map(|u| u.to_string()).ok(),
            Some("[::1]:1".into())
        );
    }
}
