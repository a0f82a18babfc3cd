//! One TLS session's decryption, both directions: records framed out of each
//! TCP byte stream, the ServerHello read for the server random, version and
//! cipher suite, keys derived from the key log's secrets, and every protected
//! record opened in order. Application data comes out as the plaintext byte
//! stream of its direction; handshake, alert and ChangeCipherSpec records are
//! consumed here. Memory: at most one record (2^14 + 2048 bytes) per
//! direction in flight, and a hello being reassembled ([`MAX_HELLO`]).

use super::hello::{
    parse_server_hello, Handshakes, ServerHello, ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC,
    HANDSHAKE, MAX_HELLO,
};
use super::keylog::{ClientRandom, Secrets};
use super::schedule::{self, Protection, Suite, Version};

/// RFC 5246 §6.2.3: a protected record is at most 2^14 + 2048 bytes.
const MAX_RECORD: usize = (1 << 14) + 2048;
/// TLS 1.3 without the handshake secrets: encrypted handshake records passed
/// over before the traffic keys must open one.
const MAX_UNREAD_HANDSHAKE: usize = 16;
/// TLS 1.3 KeyUpdate handshake message type.
const KEY_UPDATE: u8 = 24;

/// Why a direction of a session stops being decrypted. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    #[error("the key log has no {what} for this session (client random {random})")]
    NoSecret { what: &'static str, random: String },
    #[error("cipher suite {name} (0x{id:04x}) is not decrypted: amqptrace decrypts AES-GCM and ChaCha20-Poly1305")]
    UnsupportedSuite { id: u16, name: String },
    #[error("the ServerHello negotiates neither TLS 1.2 nor TLS 1.3: not decrypted")]
    UnsupportedVersion,
    #[error("record {seq} does not decrypt with the key log's secrets: not this session's keys")]
    Inauthentic { seq: u64 },
    #[error("record length {len} exceeds the TLS limit: the stream is not TLS records")]
    RecordTooLarge { len: usize },
    #[error("a ServerHello longer than {MAX_HELLO} bytes")]
    HelloTooLarge,
    #[error("bytes missing from the capture: the records after them cannot be decrypted")]
    Gap,
}

/// Where a direction stands.
#[derive(Debug)]
enum Keys {
    /// Records are not protected yet (hellos, TLS 1.2 key exchange).
    Plain,
    /// Records are opened with `current`; in TLS 1.3, `next` holds the
    /// application keys while `current` holds the handshake keys.
    Protected {
        current: Option<Protection>,
        next: Option<Protection>,
    },
    /// After a problem: input is dropped.
    Stopped,
}

#[derive(Debug)]
struct Direction {
    keys: Keys,
    /// TLS 1.2: the keys that a ChangeCipherSpec from this side turns on.
    pending: Option<Protection>,
    /// TLS 1.3: this side's current application traffic secret (KeyUpdate).
    traffic_secret: Option<Vec<u8>>,
    /// Bytes of a record not complete yet.
    partial: Vec<u8>,
    /// TLS 1.3 without the handshake secret: handshake records passed over.
    unread_handshake: usize,
}

impl Direction {
    fn new() -> Self {
        Direction {
            keys: Keys::Plain,
            pending: None,
            traffic_secret: None,
            partial: Vec::new(),
            unread_handshake: 0,
        }
    }
}

/// One session, fed both directions' TCP bytes in capture order.
#[derive(Debug)]
pub struct Session {
    client_random: ClientRandom,
    secrets: Secrets,
    server: Option<ServerHello>,
    suite: Option<Suite>,
    /// [client→server, server→client].
    dirs: [Direction; 2],
    /// The server's plaintext handshake messages until its ServerHello.
    server_handshakes: Option<Handshakes>,
    plain: Vec<u8>,
}

impl Session {
    pub fn new(client_random: ClientRandom, secrets: Secrets) -> Self {
        Session {
            client_random,
            secrets,
            server: None,
            suite: None,
            dirs: [Direction::new(), Direction::new()],
            server_handshakes: Some(Handshakes::default()),
            plain: Vec::new(),
        }
    }

    /// Feeds bytes sent by the client (`from_client`) or the server; `out`
    /// gets each piece of application data. A problem is returned once, and
    /// that direction (both, for the ServerHello's) is dropped from then on.
    pub fn feed(
        &mut self,
        from_client: bool,
        mut bytes: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), TlsProblem> {
        let d = usize::from(!from_client);
        while !bytes.is_empty() {
            if matches!(self.dirs[d].keys, Keys::Stopped) {
                return Ok(());
            }
            // Whole records straight from the segment; only a record cut by
            // the segment's end is copied, into `partial`.
            if self.dirs[d].partial.is_empty() {
                if let Some(n) = record_len(bytes) {
                    if n > MAX_RECORD + 5 {
                        return self.stop(d, TlsProblem::RecordTooLarge { len: n - 5 });
                    }
                    if n <= bytes.len() {
                        let (record, rest) = bytes.split_at(n);
                        bytes = rest;
                        self.record(d, record, out)?;
                        continue;
                    }
                }
            }
            let partial = &mut self.dirs[d].partial;
            // The header first (5 bytes), then up to the end of its record.
            let want = record_len(partial).unwrap_or(5);
            if want > MAX_RECORD + 5 {
                return self.stop(d, TlsProblem::RecordTooLarge { len: want - 5 });
            }
            let take = (want - partial.len()).min(bytes.len());
            partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if record_len(partial) == Some(partial.len()) {
                let mut record = std::mem::take(partial);
                let r = self.record(d, &record, out);
                // Keep the allocation for the next cut record.
                record.clear();
                let dir = &mut self.dirs[d];
                if dir.partial.capacity() == 0 && !matches!(dir.keys, Keys::Stopped) {
                    dir.partial = record;
                }
                r?;
            }
        }
        Ok(())
    }

    /// Bytes of this direction are missing: its records cannot be framed or
    /// numbered any more. Returns the problem the first time.
    pub fn gap(&mut self, from_client: bool) -> Option<TlsProblem> {
        let d = usize::from(!from_client);
        if matches!(self.dirs[d].keys, Keys::Stopped) {
            return None;
        }
        self.stop(d, TlsProblem::Gap).err()
    }

    fn stop(&mut self, d: usize, problem: TlsProblem) -> Result<(), TlsProblem> {
        let dir = &mut self.dirs[d];
        dir.keys = Keys::Stopped;
        dir.partial = Vec::new();
        dir.pending = None;
        Err(problem)
    }

    /// One complete record (header included).
    fn record(
        &mut self,
        d: usize,
        record: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), TlsProblem> {
        let Ok(header) = <[u8; 5]>::try_from(&record[..5]) else {
            return Ok(());
        };
        let body = &record[5..];
        let content_type = header[0];
        let tls13 = self.server.is_some_and(|s| s.version == Version::Tls13);
        match (&mut self.dirs[d].keys, content_type) {
            (Keys::Stopped, _) => Ok(()),
            // TLS 1.3 sends ChangeCipherSpec only for middlebox compatibility.
            (_, CHANGE_CIPHER_SPEC) if tls13 => Ok(()),
            // TLS 1.2: the keys of the ServerHello go on. (Without them, as after a
            // TLS 1.3 HelloRetryRequest, there is nothing to turn on.)
            (Keys::Plain, CHANGE_CIPHER_SPEC) if self.dirs[d].pending.is_some() => {
                let dir = &mut self.dirs[d];
                dir.keys = Keys::Protected {
                    current: dir.pending.take(),
                    next: None,
                };
                Ok(())
            }
            (Keys::Plain, HANDSHAKE) if d == 1 => self.server_handshake(body),
            (Keys::Plain, _) => Ok(()),
            (Keys::Protected { .. }, _) => self.open(d, &header, body, out),
        }
    }

    /// The server's plaintext handshake records, read until its ServerHello.
    fn server_handshake(&mut self, body: &[u8]) -> Result<(), TlsProblem> {
        let Some(hs) = self.server_handshakes.as_mut() else {
            return Ok(());
        };
        if hs.push(body).is_err() {
            self.server_handshakes = None;
            self.stop(0, TlsProblem::HelloTooLarge).ok();
            return self.stop(1, TlsProblem::HelloTooLarge);
        }
        while let Some(msg) = hs.next() {
            match parse_server_hello(&msg) {
                Ok(Some(sh)) if sh.retry => {}
                Ok(Some(sh)) => {
                    self.server_handshakes = None;
                    return self.keys_from(sh);
                }
                // Another message, or a ServerHello that does not parse: go on.
                Ok(None) | Err(_) => {}
            }
        }
        Ok(())
    }

    /// Derives both directions' keys once the ServerHello is known.
    fn keys_from(&mut self, sh: ServerHello) -> Result<(), TlsProblem> {
        self.server = Some(sh);
        let result = self.derive(sh);
        if let Err(p) = result {
            self.stop(0, p.clone()).ok();
            return self.stop(1, p);
        }
        Ok(())
    }

    fn derive(&mut self, sh: ServerHello) -> Result<(), TlsProblem> {
        let suite = Suite::by_id(sh.cipher_suite).ok_or_else(|| TlsProblem::UnsupportedSuite {
            id: sh.cipher_suite,
            name: tls_parser::TlsCipherSuiteID(sh.cipher_suite)
                .get_ciphersuite()
                .map_or_else(|| "unknown".to_string(), |s| s.name.to_string()),
        })?;
        self.suite = Some(suite);
        let random = || hex(&self.client_random);
        match sh.version {
            Version::Tls12 => {
                let master = self.secrets.master.as_deref().ok_or(TlsProblem::NoSecret {
                    what: "CLIENT_RANDOM (TLS 1.2 master secret)",
                    random: random(),
                })?;
                let (client, server) =
                    schedule::tls12_keys(suite, master, &self.client_random, &sh.random)
                        .ok_or(TlsProblem::UnsupportedVersion)?;
                self.dirs[0].pending = Some(client);
                self.dirs[1].pending = Some(server);
            }
            Version::Tls13 => {
                let s = &self.secrets;
                if s.client_traffic.is_none() || s.server_traffic.is_none() {
                    return Err(TlsProblem::NoSecret {
                        what: "CLIENT_TRAFFIC_SECRET_0 and SERVER_TRAFFIC_SECRET_0",
                        random: random(),
                    });
                }
                let pairs = [
                    (&s.client_handshake, &s.client_traffic),
                    (&s.server_handshake, &s.server_traffic),
                ];
                for (d, (handshake, traffic)) in pairs.into_iter().enumerate() {
                    // Without the handshake secret, the encrypted handshake is
                    // skipped: the first record the traffic keys open ends it.
                    let current = handshake
                        .as_deref()
                        .and_then(|h| schedule::tls13_keys(suite, h));
                    let next = traffic
                        .as_deref()
                        .and_then(|t| schedule::tls13_keys(suite, t));
                    self.dirs[d].keys = Keys::Protected { current, next };
                    self.dirs[d].traffic_secret = traffic.clone();
                }
            }
        }
        Ok(())
    }

    /// Opens one protected record and hands on what it carries.
    fn open(
        &mut self,
        d: usize,
        header: &[u8; 5],
        body: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), TlsProblem> {
        let dir = &mut self.dirs[d];
        let Keys::Protected { current, next } = &mut dir.keys else {
            return Ok(());
        };
        let plain = &mut self.plain;
        let opened = current
            .as_mut()
            .is_some_and(|c| c.open(header, body, plain).is_ok());
        if !opened {
            // TLS 1.3: the end of the encrypted handshake shows as the first
            // record that the application keys open.
            let switched = next
                .as_mut()
                .is_some_and(|n| n.open(header, body, plain).is_ok());
            if !switched {
                // Without the handshake secret, the handshake's records are
                // passed over (a flight is a handful of records).
                if current.is_none()
                    && next.is_some()
                    && dir.unread_handshake < MAX_UNREAD_HANDSHAKE
                {
                    dir.unread_handshake += 1;
                    return Ok(());
                }
                let seq = current.as_ref().or(next.as_ref()).map_or(0, |p| p.seq);
                return self.stop(d, TlsProblem::Inauthentic { seq });
            }
            *current = next.take();
        }
        let tls13 = self.server.is_some_and(|s| s.version == Version::Tls13);
        let (content_type, content) = if tls13 {
            // RFC 8446 §5.2: content, its type, then zero padding.
            let end = self.plain.iter().rposition(|&b| b != 0);
            match end {
                Some(i) => (self.plain[i], &self.plain[..i]),
                None => return Ok(()),
            }
        } else {
            (header[0], &self.plain[..])
        };
        match content_type {
            APPLICATION_DATA => out(content),
            HANDSHAKE if tls13 && content.first() == Some(&KEY_UPDATE) => self.key_update(d),
            HANDSHAKE | ALERT => {}
            _ => {}
        }
        Ok(())
    }

    /// TLS 1.3 KeyUpdate from side `d`: its next records use the next secret.
    fn key_update(&mut self, d: usize) {
        let (Some(suite), Some(secret)) = (self.suite, self.dirs[d].traffic_secret.as_deref())
        else {
            return;
        };
        let Some(next) = schedule::tls13_next_secret(suite, secret) else {
            return;
        };
        let keys = schedule::tls13_keys(suite, &next);
        let dir = &mut self.dirs[d];
        dir.traffic_secret = Some(next);
        dir.keys = Keys::Protected {
            current: keys,
            next: None,
        };
    }
}

/// The length of the record `b` starts with (header included), once its header is in.
fn record_len(b: &[u8]) -> Option<usize> {
    match *b {
        [_, _, _, hi, lo, ..] => Some(5 + usize::from(u16::from_be_bytes([hi, lo]))),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
