//! AMQP over TLS, offline: decrypts the TLS sessions of a capture whose
//! secrets are known (an NSS key log given with `--tls-keylog`, or a pcapng's
//! Decryption Secrets Block) so that their AMQP is decoded like any other.
//!
//! Sans-IO and between TCP reassembly and the AMQP decoder: the stream stage
//! ([`crate::stream`]) asks [`client_start`] whether a connection begins with
//! a ClientHello, looks its random up in the [`KeyLog`], and feeds a
//! decrypted connection's bytes through a [`Session`], whose application data
//! goes to the frame decoder. Neither the decoder nor the analyzer knows TLS
//! exists. What this module never does: guess (a session without secrets is
//! reported as TLS with its server name, never decoded), or let a secret reach
//! an output (secrets print as `..`; problems name the client random, which
//! is public on the wire, never a key).
//!
//! Parsing of hellos and the cipher table are tls-parser's; the AEADs, HMAC
//! and HKDF are RustCrypto's (aes-gcm, chacha20poly1305, hmac, hkdf, sha2).
//! This module is the glue: key log, handshake tracking, key schedule,
//! records per direction.

mod hello;
mod keylog;
mod schedule;
mod session;

pub use hello::{client_start, ClientHello, ClientStart, HANDSHAKE};

/// How much of a client's first bytes [`client_start`] needs at most: past
/// it, a stream is not a ClientHello.
pub const MAX_HELLO_HEAD: usize = hello::MAX_HELLO + 1;
pub use keylog::{ClientRandom, KeyLog, KeyLogError, Secrets};
pub use session::{Session, TlsProblem};

#[cfg(test)]
pub(crate) mod tests;
