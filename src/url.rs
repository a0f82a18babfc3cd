//! The parts of an AMQP URL (`amqp://user:pass@host:port/vhost?query`), cut
//! once for every user: the proxied URL `run` hands its command, the
//! redacted URL it prints, the upstream the proxy connects to.
//!
//! Owns the split into scheme, userinfo, host:port, vhost path and query,
//! byte for byte (nothing is decoded, so a URL rebuilt from its parts is the
//! one given). It never resolves or connects, and it keeps no password: the
//! parts borrow the caller's string.

use std::net::SocketAddr;

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

    /// The URL again from its scheme and query with these userinfo, host:port and path.
    fn rebuilt(&self, userinfo: Option<&str>, host_port: &str, path: &str) -> String {
        let at = match userinfo {
            Some(u) => format!("{u}@"),
            None => String::new(),
        };
        format!("{}://{at}{host_port}{path}{}", self.scheme, self.query)
    }
}

/// `upstream` with only its host and port replaced by `listen`: user,
/// password, vhost and query stay byte for byte as the command would have
/// sent them. A URL that names no vhost (no path, or a bare `/`) means
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
    url.rebuilt(url.userinfo, &listen.to_string(), path)
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
            ("amqps://u:p@host/v", "amqps://u:p@127.0.0.1:40123/v"),
            ("amqps://u:p@host", "amqps://u:p@127.0.0.1:40123/%2F"),
            ("127.0.0.1:5672", "amqp://127.0.0.1:40123/%2F"),
        ];
        for (upstream, want) in cases {
            assert_eq!(proxied_url(upstream, listen()), want, "{upstream}");
        }
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
