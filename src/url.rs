//! The parts of an AMQP URL (`amqp://user:pass@host:port/vhost?query`), cut
//! once for every user: the proxied URL `run` hands its command, the
//! redacted URL it prints, the upstream the proxy connects to, and the TLS
//! options an `amqps` URL's query carries ([`TlsQuery`]), which the proxy
//! takes instead of the command.
//!
//! Owns the split into scheme, userinfo, host:port, vhost path and query,
//! byte for byte (nothing is decoded, so a URL rebuilt from its parts is the
//! one given; only the values of TLS options, file names, are
//! percent-decoded). It never resolves or connects, and it keeps no
//! password: the parts borrow the caller's string.

use std::net::SocketAddr;
use std::path::PathBuf;

/// An AMQP URL cut into its parts, each a slice of the string parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpUrl<'a> {
    /// `amqp` or `amqps` (any scheme is cut the same; see [`AmqpUrl::default_port`]).
    pub scheme: &'a str,
    /// `user` or `user:password`, before the last `@` of the authority.
    pub userinfo: Option<&'a str>,
    /// `host`, `host:port` or `[v6]:port`.
    pub host_port: &'a str,
    /// The vhost path: empty, `/` or `/vhost` (percent-encoded as given).
    pub path: &'a str,
    /// From the `?` (or a `#`) to the end, empty when absent.
    pub query: &'a str,
}

impl<'a> AmqpUrl<'a> {
    /// Cuts `s`; `None` when it has no `scheme://` (a bare `host:port`).
    pub fn parse(s: &'a str) -> Option<AmqpUrl<'a>> {
        let (scheme, rest) = s.split_once("://")?;
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_len);
        // A raw '@' in a password: the host starts after the last one.
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let path_len = tail.find(['?', '#']).unwrap_or(tail.len());
        let (path, query) = tail.split_at(path_len);
        Some(AmqpUrl {
            scheme,
            userinfo,
            host_port,
            path,
            query,
        })
    }

    /// The port a URL of this scheme means when it names none: 5671 for
    /// `amqps`, 5672 otherwise.
    pub fn default_port(&self) -> u16 {
        if self.scheme == "amqps" {
            5671
        } else {
            5672
        }
    }

    /// Whether the URL names no vhost (no path, or a bare `/`), which means
    /// RabbitMQ's default vhost `/`.
    pub fn default_vhost(&self) -> bool {
        self.path.is_empty() || self.path == "/"
    }

    /// Whether the scheme is `amqps` (AMQP over TLS).
    pub fn tls(&self) -> bool {
        self.scheme == "amqps"
    }

    /// The URL again from its scheme and query with these userinfo, host:port and path.
    fn rebuilt(&self, userinfo: Option<&str>, host_port: &str, path: &str) -> String {
        let at = match userinfo {
            Some(u) => format!("{u}@"),
            None => String::new(),
        };
        format!("{}://{at}{host_port}{path}{}", self.scheme, self.query)
    }
}

/// The query options of an `amqps` URL that configure TLS, not AMQP (the
/// names of RabbitMQ's URI spec for its Erlang client, and pika's
/// `ssl_options`): when the proxy speaks TLS to the broker, they are its
/// business, and the command, which speaks plain AMQP to the proxy, never
/// sees them.
pub const TLS_QUERY_OPTIONS: [&str; 9] = [
    "cacertfile",
    "certfile",
    "keyfile",
    "verify",
    "server_name_indication",
    "fail_if_no_peer_cert",
    "depth",
    "password",
    "ssl_options",
];

/// The TLS options of a URL's query, their values percent-decoded, and
/// the query without them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsQuery {
    /// `cacertfile`, `certfile`, `keyfile`.
    pub files: TlsFiles,
    /// `verify`: `verify_peer` or `verify_none`.
    pub verify: Option<String>,
    /// `server_name_indication`: the name to send and verify, or `disable`.
    pub server_name_indication: Option<String>,
    /// The options of [`TLS_QUERY_OPTIONS`] that the proxy has no use for
    /// (`depth`, a key `password`, pika's `ssl_options`): named, not kept.
    pub ignored: Vec<String>,
    /// The rest of the query, byte for byte in its order: `?a=1&b=2`, or
    /// empty when nothing is left; a `#fragment` stays at its end.
    pub rest: String,
}

/// The PEM files of a TLS client: the CAs to trust, and a certificate to
/// present with its key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates to trust; `None`: the system's root store.
    pub ca: Option<PathBuf>,
    /// A client certificate chain.
    pub cert: Option<PathBuf>,
    /// Its private key: PKCS#8, PKCS#1 or SEC1.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Each file of `self`, or else of `fallback`.
    pub fn or(self, fallback: TlsFiles) -> TlsFiles {
        TlsFiles {
            ca: self.ca.or(fallback.ca),
            cert: self.cert.or(fallback.cert),
            key: self.key.or(fallback.key),
        }
    }
}

impl TlsQuery {
    /// Cuts `query` (`?…`, as [`AmqpUrl::query`] holds it; empty or a bare
    /// `#fragment` too).
    pub fn parse(query: &str) -> TlsQuery {
        let (q, fragment) = match query.find('#') {
            Some(i) => query.split_at(i),
            None => (query, ""),
        };
        let mut t = TlsQuery::default();
        let mut kept: Vec<&str> = Vec::new();
        for pair in q.strip_prefix('?').unwrap_or(q).split('&') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = Some(percent_decoded(value));
            match key {
                "cacertfile" => t.files.ca = value.map(PathBuf::from),
                "certfile" => t.files.cert = value.map(PathBuf::from),
                "keyfile" => t.files.key = value.map(PathBuf::from),
                "verify" => t.verify = value,
                "server_name_indication" => t.server_name_indication = value,
                k if TLS_QUERY_OPTIONS.contains(&k) => t.ignored.push(k.to_string()),
                _ => kept.push(pair),
            }
        }
        if !kept.is_empty() {
            t.rest = format!("?{}", kept.join("&"));
        }
        t.rest.push_str(fragment);
        t
    }
}

/// `%XX` escapes decoded (and `+` left as it is: these are file names);
/// a malformed escape is kept as written.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                // Two hex digits: at most 0xff.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `upstream` with only its host and port replaced by `listen`: user,
/// password, vhost and query stay byte for byte as the command would have
/// sent them. An `amqps` URL becomes `amqp` (the command speaks plain AMQP
/// to the proxy, which speaks TLS to the broker), without the query's TLS
/// options ([`TLS_QUERY_OPTIONS`]), which the proxy takes instead. A URL
/// that names no vhost (no path, or a bare `/`) means
/// RabbitMQ's default vhost `/` (as pika, lapin and Celery read it); it is
/// spelled out as `/%2F` so that clients that read a bare `/` as the vhost
/// `""` (Bunny, rabbitmq-c, as the AMQP URI spec says: the broker answers 530)
/// reach it too. A bare `host:port` becomes `amqp://LISTEN/%2F`.
pub fn proxied_url(upstream: &str, listen: SocketAddr) -> String {
    let Some(url) = AmqpUrl::parse(upstream) else {
        return format!("amqp://{listen}/%2F");
    };
    let path = if url.default_vhost() {
        "/%2F"
    } else {
        url.path
    };
    if !url.tls() {
        return url.rebuilt(url.userinfo, &listen.to_string(), path);
    }
    let rest = TlsQuery::parse(url.query).rest;
    let plain = AmqpUrl {
        scheme: "amqp",
        query: &rest,
        ..url
    };
    plain.rebuilt(url.userinfo, &listen.to_string(), path)
}

/// A URL as it may be printed: the password replaced by `***`.
pub fn redacted(s: &str) -> String {
    let Some(url) = AmqpUrl::parse(s) else {
        return s.to_string();
    };
    let Some(userinfo) = url.userinfo else {
        return s.to_string();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    url.rebuilt(Some(&user), url.host_port, url.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:40123".parse().unwrap()
    }

    #[test]
    fn parts_byte_for_byte() {
        let u = AmqpUrl::parse("amqps://u:p@ss@[::1]:5671/%2f?heartbeat=5").unwrap();
        assert_eq!(u.scheme, "amqps");
        assert_eq!(u.userinfo, Some("u:p@ss"));
        assert_eq!(u.host_port, "[::1]:5671");
        assert_eq!(u.path, "/%2f");
        assert_eq!(u.query, "?heartbeat=5");
        assert_eq!(u.default_port(), 5671);
        let u = AmqpUrl::parse("amqp://h#frag").unwrap();
        assert_eq!(
            (u.userinfo, u.host_port, u.path, u.query),
            (None, "h", "", "#frag")
        );
        assert!(u.default_vhost());
        assert_eq!(AmqpUrl::parse("127.0.0.1:5672"), None);
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
            // amqps: plain AMQP to the proxy, the TLS options left to it.
            ("amqps://u:p@host/v", "amqp://u:p@127.0.0.1:40123/v"),
            ("amqps://u:p@host", "amqp://u:p@127.0.0.1:40123/%2F"),
            (
                "amqps://u:p@h:5671/v?heartbeat=5&cacertfile=%2Fetc%2Fca.pem&verify=verify_peer\
                 &server_name_indication=h&certfile=/c.pem&keyfile=/k.pem&channel_max=9",
                "amqp://u:p@127.0.0.1:40123/v?heartbeat=5&channel_max=9",
            ),
            (
                "amqps://h/?cacertfile=/ca.pem#frag",
                "amqp://127.0.0.1:40123/%2F#frag",
            ),
            // A plain URL keeps its query whole, whatever it says.
            (
                "amqp://h/v?cacertfile=/ca.pem",
                "amqp://127.0.0.1:40123/v?cacertfile=/ca.pem",
            ),
            ("127.0.0.1:5672", "amqp://127.0.0.1:40123/%2F"),
        ];
        for (upstream, want) in cases {
            assert_eq!(proxied_url(upstream, listen()), want, "{upstream}");
        }
    }

    #[test]
    fn tls_query_options() {
        let t = TlsQuery::parse(
            "?cacertfile=%2Ftmp%2Fmy%20ca.pem&verify=verify_none&depth=3\
             &server_name_indication=disable&heartbeat=5&x&bad=%zz%4",
        );
        assert_eq!(
            t.files.ca.as_deref(),
            Some(std::path::Path::new("/tmp/my ca.pem"))
        );
        assert_eq!(t.verify.as_deref(), Some("verify_none"));
        assert_eq!(t.server_name_indication.as_deref(), Some("disable"));
        assert_eq!((t.files.cert, t.files.key), (None, None));
        assert_eq!(t.ignored, vec!["depth".to_string()]);
        assert_eq!(t.rest, "?heartbeat=5&x&bad=%zz%4");
        assert_eq!(TlsQuery::parse("").rest, "");
        assert_eq!(TlsQuery::parse("?keyfile=/k").rest, "");
        assert_eq!(percent_decoded("%41%4a%"), "AJ%");
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
}
