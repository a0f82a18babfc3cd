//! The NSS key log (`SSLKEYLOGFILE`, Wireshark's `tls.keylog_file`, a pcapng's
//! Decryption Secrets Block): TLS secrets by the ClientHello's random.
//!
//! Lines are `LABEL <client_random hex> <secret hex>`; `#` starts a comment.
//! TLS 1.2 needs `CLIENT_RANDOM` (the master secret); TLS 1.3 the traffic
//! secrets (`CLIENT_TRAFFIC_SECRET_0`, `SERVER_TRAFFIC_SECRET_0`, and the
//! `*_HANDSHAKE_TRAFFIC_SECRET`s for the encrypted handshake). Other labels
//! (`EXPORTER_SECRET`, early data) are skipped, and so are lines that do not
//! parse, as Wireshark does. Secrets never reach an output: [`Secrets`] prints
//! as `..`, and errors name the file, never its contents.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap as HashMap;

/// The random of a ClientHello: what every key log line is keyed by.
pub type ClientRandom = [u8; 32];

/// The secrets of one TLS session.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// TLS 1.2: the master secret (`CLIENT_RANDOM`).
    pub master: Option<Vec<u8>>,
    /// TLS 1.3: `CLIENT_HANDSHAKE_TRAFFIC_SECRET`, `SERVER_HANDSHAKE_TRAFFIC_SECRET`.
    pub client_handshake: Option<Vec<u8>>,
    pub server_handshake: Option<Vec<u8>>,
    /// TLS 1.3: `CLIENT_TRAFFIC_SECRET_0`, `SERVER_TRAFFIC_SECRET_0`.
    pub client_traffic: Option<Vec<u8>>,
    pub server_traffic: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// Every session's secrets found so far.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyLog {
    sessions: HashMap<ClientRandom, Secrets>,
}

impl std::fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyLog {{ {} session(s) }}", self.sessions.len())
    }
}

/// Why a key log file gave no secrets. Never carries the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyLogError {
    #[error("{path}: cannot read the TLS key log")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no TLS secrets in it (an NSS key log has lines such as CLIENT_RANDOM or CLIENT_TRAFFIC_SECRET_0, as SSLKEYLOGFILE writes them)")]
    Empty { path: PathBuf },
}

impl KeyLog {
    /// Reads a key log file; a file without a single secret is an error (the wrong file).
    pub fn read(path: &Path) -> Result<KeyLog, KeyLogError> {
        let text = std::fs::read(path).map_err(|source| KeyLogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut log = KeyLog::default();
        if log.add(&text) == 0 {
            return Err(KeyLogError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(log)
    }

    /// Adds the secrets of a key log text; returns how many lines gave one.
    pub fn add(&mut self, text: &[u8]) -> usize {
        let mut n = 0;
        for line in text.split(|&b| b == b'\n') {
            if self.add_line(line) {
                n += 1;
            }
        }
        n
    }

    fn add_line(&mut self, line: &[u8]) -> bool {
        let Ok(line) = std::str::from_utf8(line) else {
            return false;
        };
        let mut parts = line.split_ascii_whitespace();
        let (Some(label), Some(random), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Some(random), Some(secret)) = (unhex(random), unhex(secret)) else {
            return false;
        };
        let Ok(random) = ClientRandom::try_from(random.as_slice()) else {
            return false;
        };
        let entry = self.sessions.entry(random).or_default();
        let slot = match label {
            "CLIENT_RANDOM" => &mut entry.master,
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET" => &mut entry.client_handshake,
            "SERVER_HANDSHAKE_TRAFFIC_SECRET" => &mut entry.server_handshake,
            "CLIENT_TRAFFIC_SECRET_0" => &mut entry.client_traffic,
            "SERVER_TRAFFIC_SECRET_0" => &mut entry.server_traffic,
            _ => return false,
        };
        *slot = Some(secret);
        true
    }

    /// The secrets of the session that began with this ClientHello random.
    pub fn get(&self, random: &ClientRandom) -> Option<&Secrets> {
        self.sessions.get(random)
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_keyed_by_the_client_random_and_bad_lines_skipped() {
        let cr = "ab".repeat(32);
        let text = format!(
            "# comment\nCLIENT_RANDOM {cr} {}\nCLIENT_TRAFFIC_SECRET_0 {cr} {}\n\
             EXPORTER_SECRET {cr} 00\nCLIENT_RANDOM zz 00\nCLIENT_RANDOM {} 00\r\n",
            "01".repeat(48),
            "02".repeat(32),
            "cd".repeat(31)
        );
        let mut log = KeyLog::default();
        assert_eq!(log.add(text.as_bytes()), 2);
        let s = log.get(&[0xab; 32]).unwrap();
        assert_eq!(s.master.as_deref(), Some(&[1u8; 48][..]));
        assert_eq!(s.client_traffic.as_deref(), Some(&[2u8; 32][..]));
        assert_eq!(s.server_traffic, None);
        // Secrets never show in debug output.
        assert_eq!(format!("{s:?}"), "Secrets { .. }");
        assert_eq!(format!("{log:?}"), "KeyLog { 1 session(s) }");
    }
}
