//! Keys from secrets: the cipher suites amqptrace decrypts, the TLS 1.2 PRF
//! key block (RFC 5246 §6.3, RFC 5288, RFC 7905), the TLS 1.3
//! HKDF-Expand-Label traffic keys (RFC 8446 §7.1, §7.3), and one record's
//! AEAD open with the nonce and additional data each version prescribes.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384};

/// The hash of a suite's PRF / HKDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
}

impl Hash {
    pub fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
        }
    }
}

/// The record protection of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305 => 32,
        }
    }
}

/// A cipher suite amqptrace can decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub cipher: Cipher,
    pub hash: Hash,
}

impl Suite {
    /// The AEAD suites of TLS 1.2 (RFC 5288, RFC 5289, RFC 7905) and TLS 1.3.
    pub fn by_id(id: u16) -> Option<Suite> {
        use Cipher::*;
        use Hash::*;
        let (cipher, hash) = match id {
            // TLS 1.3: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256.
            0x1301 => (Aes128Gcm, Sha256),
            0x1302 => (Aes256Gcm, Sha384),
            0x1303 => (ChaCha20Poly1305, Sha256),
            // TLS 1.2 *_WITH_AES_128_GCM_SHA256 (RSA, DHE-RSA, ECDHE-ECDSA, ECDHE-RSA).
            0x009c | 0x009e | 0xc02b | 0xc02f => (Aes128Gcm, Sha256),
            // *_WITH_AES_256_GCM_SHA384.
            0x009d | 0x009f | 0xc02c | 0xc030 => (Aes256Gcm, Sha384),
            // *_WITH_CHACHA20_POLY1305_SHA256 (ECDHE-RSA, ECDHE-ECDSA, DHE-RSA).
            0xcca8..=0xccaa => (ChaCha20Poly1305, Sha256),
            _ => return None,
        };
        Some(Suite { cipher, hash })
    }
}

/// The TLS version a session negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

/// One direction's record protection: the AEAD, its IV, the record sequence number.
pub struct Protection {
    aead: Aead,
    version: Version,
    /// TLS 1.2 GCM: the 4-byte salt; ChaCha20 and TLS 1.3: the 12-byte IV.
    iv: [u8; 12],
    pub seq: u64,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protection {{ {:?}, seq {} }}", self.version, self.seq)
    }
}

enum Aead {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// Why a record did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inauthentic;

impl Protection {
    fn new(cipher: Cipher, version: Version, key: &[u8], iv: &[u8]) -> Option<Protection> {
        let aead = match cipher {
            Cipher::Aes128Gcm => Aead::Aes128(Box::new(Aes128Gcm::new_from_slice(key).ok()?)),
            Cipher::Aes256Gcm => Aead::Aes256(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            Cipher::ChaCha20Poly1305 => {
                Aead::ChaCha(Box::new(ChaCha20Poly1305::new_from_slice(key).ok()?))
            }
        };
        let mut fixed = [0u8; 12];
        fixed.get_mut(..iv.len())?.copy_from_slice(iv);
        Some(Protection {
            aead,
            version,
            iv: fixed,
            seq: 0,
        })
    }

    /// Opens one record (`header` its 5 bytes, `body` what follows) into
    /// `plain`; on success the sequence number moves on.
    pub fn open(
        &mut self,
        header: &[u8; 5],
        body: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), Inauthentic> {
        const TAG: usize = 16;
        let seq = self.seq.to_be_bytes();
        let mut nonce = self.iv;
        let (ciphertext, aad) = match (self.version, &self.aead) {
            (Version::Tls12, Aead::Aes128(_) | Aead::Aes256(_)) => {
                // RFC 5288: salt || the record's explicit 8-byte nonce.
                let explicit = body.get(..8).ok_or(Inauthentic)?;
                nonce[4..].copy_from_slice(explicit);
                let ct = &body[8..];
                (
                    ct,
                    aad12(&seq, header, ct.len().checked_sub(TAG).ok_or(Inauthentic)?),
                )
            }
            (Version::Tls12, Aead::ChaCha(_)) => {
                xor_seq(&mut nonce, &seq);
                (
                    body,
                    aad12(
                        &seq,
                        header,
                        body.len().checked_sub(TAG).ok_or(Inauthentic)?,
                    ),
                )
            }
            (Version::Tls13, _) => {
                xor_seq(&mut nonce, &seq);
                let mut aad = [0u8; 13];
                aad[..5].copy_from_slice(header);
                (body, (aad, 5))
            }
        };
        let (aad, aad_len) = aad;
        plain.clear();
        plain.extend_from_slice(ciphertext);
        let aad = &aad[..aad_len];
        let nonce = &nonce.into();
        let opened = match &self.aead {
            Aead::Aes128(c) => c.decrypt_in_place(nonce, aad, plain),
            Aead::Aes256(c) => c.decrypt_in_place(nonce, aad, plain),
            Aead::ChaCha(c) => c.decrypt_in_place(nonce, aad, plain),
        };
        opened.map_err(|_| Inauthentic)?;
        self.seq += 1;
        Ok(())
    }
}

/// TLS 1.2 additional data: seq_num || type || version || plaintext length.
fn aad12(seq: &[u8; 8], header: &[u8; 5], plain_len: usize) -> ([u8; 13], usize) {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(seq);
    aad[8..11].copy_from_slice(&header[..3]);
    aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
    (aad, 13)
}

/// RFC 8446 §5.3 / RFC 7905: the IV XOR the sequence number, left-padded.
fn xor_seq(nonce: &mut [u8; 12], seq: &[u8; 8]) {
    for (n, s) in nonce[4..].iter_mut().zip(seq) {
        *n ^= s;
    }
}

/// TLS 1.2: both directions' protections from the master secret (RFC 5246
/// §6.3: key_block = PRF(master, "key expansion", server_random + client_random)).
pub fn tls12_keys(
    suite: Suite,
    master: &[u8],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> Option<(Protection, Protection)> {
    let key_len = suite.cipher.key_len();
    // GCM takes a 4-byte implicit salt (the rest of its nonce is in each record); ChaCha20 a 12-byte IV.
    let iv_len = match suite.cipher {
        Cipher::ChaCha20Poly1305 => 12,
        _ => 4,
    };
    let mut seed = Vec::with_capacity(64);
    seed.extend_from_slice(server_random);
    seed.extend_from_slice(client_random);
    let mut block = vec![0u8; 2 * (key_len + iv_len)];
    prf(suite.hash, master, b"key expansion", &seed, &mut block);
    let (client_key, rest) = block.split_at(key_len);
    let (server_key, rest) = rest.split_at(key_len);
    let (client_iv, server_iv) = rest.split_at(iv_len);
    Some((
        Protection::new(suite.cipher, Version::Tls12, client_key, client_iv)?,
        Protection::new(suite.cipher, Version::Tls12, server_key, server_iv)?,
    ))
}

/// RFC 5246 §5: P_hash(secret, label + seed), filling `out`.
pub(super) fn prf(hash: Hash, secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    fn p_hash<M: Mac + hmac::KeyInit + Clone>(secret: &[u8], seed: &[u8], out: &mut [u8]) {
        // HMAC takes a key of any length: new_from_slice cannot fail for it.
        let Ok(mac) = <M as hmac::KeyInit>::new_from_slice(secret) else {
            return;
        };
        let mut a = mac
            .clone()
            .chain_update(seed)
            .finalize()
            .into_bytes()
            .to_vec();
        let mut filled = 0;
        while filled < out.len() {
            let chunk = mac
                .clone()
                .chain_update(&a)
                .chain_update(seed)
                .finalize()
                .into_bytes();
            let n = chunk.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            a = mac
                .clone()
                .chain_update(&a)
                .finalize()
                .into_bytes()
                .to_vec();
        }
    }
    let mut full = Vec::with_capacity(label.len() + seed.len());
    full.extend_from_slice(label);
    full.extend_from_slice(seed);
    match hash {
        Hash::Sha256 => p_hash::<Hmac<Sha256>>(secret, &full, out),
        Hash::Sha384 => p_hash::<Hmac<Sha384>>(secret, &full, out),
    }
}

/// RFC 8446 §7.1: HKDF-Expand-Label(secret, label, context, out.len()).
pub fn hkdf_expand_label(
    hash: Hash,
    secret: &[u8],
    label: &str,
    context: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let full = [b"tls13 ", label.as_bytes()].concat();
    let mut info = Vec::with_capacity(4 + full.len() + context.len());
    info.extend_from_slice(&(out.len() as u16).to_be_bytes());
    info.push(u8::try_from(full.len()).ok()?);
    info.extend_from_slice(&full);
    info.push(u8::try_from(context.len()).ok()?);
    info.extend_from_slice(context);
    match hash {
        Hash::Sha256 => hkdf::Hkdf::<Sha256>::from_prk(secret)
            .ok()?
            .expand(&info, out)
            .ok(),
        Hash::Sha384 => hkdf::Hkdf::<Sha384>::from_prk(secret)
            .ok()?
            .expand(&info, out)
            .ok(),
    }
}

/// TLS 1.3: a direction's protection from its traffic secret (RFC 8446 §7.3).
pub fn tls13_keys(suite: Suite, secret: &[u8]) -> Option<Protection> {
    let mut key = [0u8; 32];
    let key = &mut key[..suite.cipher.key_len()];
    let mut iv = [0u8; 12];
    hkdf_expand_label(suite.hash, secret, "key", &[], key)?;
    hkdf_expand_label(suite.hash, secret, "iv", &[], &mut iv)?;
    Protection::new(suite.cipher, Version::Tls13, key, &iv)
}

/// TLS 1.3 KeyUpdate: the next traffic secret (RFC 8446 §7.2).
pub fn tls13_next_secret(suite: Suite, secret: &[u8]) -> Option<Vec<u8>> {
    let mut next = vec![0u8; suite.hash.len()];
    hkdf_expand_label(suite.hash, secret, "traffic upd", &[], &mut next)?;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8448 §3 (simple 1-RTT handshake, TLS_AES_128_GCM_SHA256): the
    /// server's handshake and application traffic secrets give the write
    /// keys and IVs the RFC lists.
    #[test]
    fn tls13_traffic_keys_match_rfc_8448() {
        let vectors = [
            (
                "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4
                 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
                "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc",
                "5d 31 3e b2 67 12 76 ee 13 00 0b 30",
            ),
            (
                "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32
                 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43",
                "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56",
                "cf 78 2b 88 dd 83 54 9a ad f1 e9 84",
            ),
        ];
        for (secret, want_key, want_iv) in vectors {
            let (mut key, mut iv) = ([0u8; 16], [0u8; 12]);
            hkdf_expand_label(Hash::Sha256, &hex(secret), "key", &[], &mut key).unwrap();
            hkdf_expand_label(Hash::Sha256, &hex(secret), "iv", &[], &mut iv).unwrap();
            assert_eq!((key.to_vec(), iv.to_vec()), (hex(want_key), hex(want_iv)));
        }
    }

    /// The TLS 1.2 PRF with SHA-256 against the widely used test vector
    /// (IETF TLS WG, "TLS 1.2 PRF test vectors", P_SHA256, 100 bytes).
    #[test]
    fn tls12_prf_sha256_matches_the_known_vector() {
        let secret = hex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
        let seed = hex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c");
        let mut out = [0u8; 100];
        prf(Hash::Sha256, &secret, b"test label", &seed, &mut out);
        let want = hex("e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53
             c2 aa b2 1d 07 c3 d4 95 32 9b 52 d4 e6 1e db 5a
             6b 30 17 91 e9 0d 35 c9 c9 a4 6b 4e 14 ba f9 af
             0f a0 22 f7 07 7d ef 17 ab fd 37 97 c0 56 4b ab
             4f bc 91 66 6e 9d ef 9b 97 fc e3 4f 79 67 89 ba
             a4 80 82 d1 22 ee 42 c5 a7 2e 5a 51 10 ff f7 01
             87 34 7b 66");
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn a_record_with_a_wrong_tag_does_not_open_and_keeps_its_sequence_number() {
        let suite = Suite::by_id(0x1301).unwrap();
        let mut p = tls13_keys(suite, &[7u8; 32]).unwrap();
        let mut plain = Vec::new();
        let header = [23, 3, 3, 0, 20];
        assert_eq!(p.open(&header, &[0u8; 20], &mut plain), Err(Inauthentic));
        assert_eq!(p.seq, 0);
        assert_eq!(p.open(&header, &[0u8; 3], &mut plain), Err(Inauthentic));
    }
}
