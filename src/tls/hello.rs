//! The plaintext start of a TLS session: whether a stream begins with a
//! ClientHello, and its random and server name (SNI); the ServerHello's
//! random, version and cipher suite. Hello parsing is tls-parser's; this file
//! only reassembles handshake messages out of records.

use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake,
    parse_tls_server_hello_extensions, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake,
};

use super::keylog::ClientRandom;
use super::schedule::Version;

/// Record content types (RFC 8446 §5.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;
/// Handshake message types.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// The most a handshake message is buffered for (a ClientHello or ServerHello
/// is a few hundred bytes; this also covers large key shares).
pub const MAX_HELLO: usize = 64 * 1024;
/// RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// What the first bytes of a client's stream say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStart {
    /// Not a TLS ClientHello.
    NotTls,
    /// A ClientHello, not complete yet.
    Incomplete,
    /// A complete ClientHello.
    Hello(ClientHello),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub random: ClientRandom,
    /// The first host name of its server_name extension, printable characters only.
    pub server_name: Option<String>,
}

/// Reads the ClientHello a client's stream starts with (`head`: the stream's
/// first bytes, as many as were captured so far).
pub fn client_start(head: &[u8]) -> ClientStart {
    // A handshake record of TLS 1.0–1.3 (legacy version 3.1–3.3; 3.0 is not
    // decrypted either way) whose first message is a ClientHello.
    match head {
        [HANDSHAKE, 3, 1..=3, _, _, CLIENT_HELLO, ..] => {}
        [HANDSHAKE] | [HANDSHAKE, 3] | [HANDSHAKE, 3, 1..=3] => return ClientStart::Incomplete,
        [HANDSHAKE, 3, 1..=3, _] | [HANDSHAKE, 3, 1..=3, _, _] => return ClientStart::Incomplete,
        _ => return ClientStart::NotTls,
    }
    let mut messages = Handshakes::default();
    let mut rest = head;
    while let [t, 3, _, hi, lo, ..] = *rest {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(body) = rest.get(5..5 + len) else {
            break;
        };
        if t != HANDSHAKE || messages.push(body).is_err() {
            return ClientStart::NotTls;
        }
        if let Some(msg) = messages.next() {
            return match parse_client_hello(&msg) {
                Some(h) => ClientStart::Hello(h),
                None => ClientStart::NotTls,
            };
        }
        rest = &rest[5 + len..];
    }
    if head.len() > MAX_HELLO {
        return ClientStart::NotTls;
    }
    ClientStart::Incomplete
}

fn parse_client_hello(msg: &[u8]) -> Option<ClientHello> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        parse_tls_message_handshake(msg)
    else {
        return None;
    };
    let random = ClientRandom::try_from(ch.random).ok()?;
    let server_name = ch
        .ext
        .and_then(|ext| parse_tls_client_hello_extensions(ext).ok())
        .and_then(|(_, exts)| {
            exts.into_iter().find_map(|e| match e {
                TlsExtension::SNI(names) => names
                    .into_iter()
                    .find(|(t, _)| *t == SNIType::HostName)
                    .map(|(_, name)| printable(name)),
                _ => None,
            })
        });
    Some(ClientHello {
        random,
        server_name,
    })
}

/// A host name as it may be shown: bytes outside printable ASCII become `?`.
fn printable(name: &[u8]) -> String {
    name.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// What a ServerHello negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    pub random: [u8; 32],
    pub version: Version,
    pub cipher_suite: u16,
    /// A HelloRetryRequest: the client sends a second ClientHello.
    pub retry: bool,
}

/// Parses a ServerHello handshake message (header included); `Err` with the
/// message type when it is another message, `None` when it does not parse.
pub fn parse_server_hello(msg: &[u8]) -> Result<Option<ServerHello>, u8> {
    match msg.first() {
        Some(&SERVER_HELLO) => {}
        Some(&t) => return Err(t),
        None => return Ok(None),
    }
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) =
        parse_tls_message_handshake(msg)
    else {
        return Ok(None);
    };
    let Ok(random) = <[u8; 32]>::try_from(sh.random) else {
        return Ok(None);
    };
    // TLS 1.3 says so in supported_versions (its legacy_version stays 1.2).
    let tls13 = sh
        .ext
        .and_then(|ext| parse_tls_server_hello_extensions(ext).ok())
        .is_some_and(|(_, exts)| {
            exts.iter().any(|e| match e {
                TlsExtension::SupportedVersions(v) => v.iter().any(|v| v.0 == 0x0304),
                _ => false,
            })
        });
    let version = match (tls13, sh.version.0) {
        (true, _) => Version::Tls13,
        (false, 0x0303) => Version::Tls12,
        // TLS 1.0/1.1 suites are CBC: not decrypted.
        (false, _) => return Ok(None),
    };
    Ok(Some(ServerHello {
        random,
        version,
        cipher_suite: sh.cipher.0,
        retry: random == HELLO_RETRY_RANDOM,
    }))
}

/// Handshake messages reassembled out of handshake records (a message may
/// span records, a record may hold several), bounded by [`MAX_HELLO`].
#[derive(Debug, Default)]
pub struct Handshakes {
    buf: Vec<u8>,
}

impl Handshakes {
    /// Adds one record's payload; `Err` when a message would exceed the bound.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), ()> {
        if self.buf.len() + payload.len() > MAX_HELLO {
            return Err(());
        }
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    /// The next complete message (its 4-byte header included).
    pub fn next(&mut self) -> Option<Vec<u8>> {
        let [_, a, b, c, ..] = *self.buf.as_slice() else {
            return None;
        };
        let end = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
        if self.buf.len() < end {
            return None;
        }
        let rest = self.buf.split_off(end);
        Some(std::mem::replace(&mut self.buf, rest))
    }
}
