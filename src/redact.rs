//! Credential masking for recordings: finds the secrets a client sends in
//! the client→broker byte stream and overwrites them in place, byte for byte,
//! so that a recording amqptrace writes can be shared (a CI artifact) without
//! the password in it.
//!
//! What is masked, in method frames on channel 0 (AMQP 0-9-1 §1.4.2):
//! - `connection.start-ok` (10, 11): the `response` (after `client-properties`
//!   and `mechanism`). PLAIN (`authzid\0user\0password`): all but the user
//!   (the password, and the authzid, which is nearly always empty), so the
//!   recording still shows who logged in. AMQPLAIN (a field table
//!   without its length prefix, RabbitMQ's `LOGIN`/`PASSWORD`): the value of
//!   `PASSWORD` only, or everything from the first field it cannot walk.
//!   Any other mechanism: the whole response.
//! - `connection.secure-ok` (10, 21): the whole `response`.
//! - `connection.update-secret` (10, 70): the whole `new-secret`.
//!
//! Same length, so every frame still parses and tshark still decodes the
//! file. Sans-IO: fed the bytes of one direction with their stream offsets,
//! in any chunks (a socket read, a TCP segment); no buffering of payload, a
//! few bytes of state per stream. Frame boundaries come from the 7-byte frame
//! headers, so a frame split at any offset is masked the same.
//!
//! Chunks may repeat or overlap what came before (a retransmitted segment):
//! the stretches already found are remembered by stream offset and masked
//! again. After a hole (bytes never seen) the frame boundaries are unknown;
//! the masker picks them up again at the start of a later chunk that begins
//! with a plausible frame header (a client writes whole frames, so reads and
//! segments usually start on one), and masks nothing it cannot place.
//!
//! This module owns the masking rules only; it never touches what is
//! forwarded (the proxy masks its trace copy, never the client's bytes).

use std::ops::Range;

/// The byte that replaces a secret.
pub const MASK: u8 = b'*';
/// Stretches remembered for re-masking retransmitted bytes (a few per connection are real).
const REMEMBERED: usize = 32;
/// The AMQP 0-9-1 protocol header a client stream starts with.
const PROTOCOL_HEADER_LEN: u64 = 8;

/// What a length-prefixed field is, and what to do with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// start-ok's client-properties table (u32 length): skipped.
    ClientProperties,
    /// start-ok's mechanism shortstr (u8 length): read, it says how to mask the response.
    Mechanism,
    /// start-ok's or secure-ok's response, update-secret's new-secret (u32 length).
    Secret,
}

/// How a secret's bytes are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretRule {
    /// Everything.
    All,
    /// PLAIN: everything but the user (between the first and second NUL).
    Plain { nuls: u8 },
    /// AMQPLAIN: a field table's contents, walked field by field.
    AmqPlain(TableWalk),
}

/// Where the walk of an AMQPLAIN table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableWalk {
    /// Next byte is a field name's length.
    NameLen,
    /// Inside the name: `left` bytes of it, `matched` still equal to "PASSWORD".
    Name { left: u8, pos: u8, matched: bool },
    /// The value's type byte.
    Type { password: bool },
    /// A longstr's 4-byte length.
    ValueLen { password: bool, len: u32, have: u8 },
    /// Inside the value.
    Value { password: bool, left: u32 },
    /// A field it cannot walk: the rest of the response is masked.
    Rest,
}

/// A field's length prefix being collected: `have` of its `width` bytes,
/// `left` bytes of the frame's payload to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LenPrefix {
    field: Field,
    len: u32,
    have: u8,
    width: u8,
    left: u32,
    rule: SecretRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a frame header (or the protocol header, when it starts with 'A').
    Header { buf: [u8; 7], have: u8 },
    /// Skipping `left` bytes (the rest of the protocol header, a payload, the frame end).
    Skip { left: u64 },
    /// A method frame on channel 0: collecting class and method ids.
    MethodId { buf: [u8; 4], have: u8, left: u32 },
    /// Collecting a field's length prefix.
    Len(LenPrefix),
    /// Inside a field's bytes.
    Body {
        field: Field,
        flen: u32,
        pos: u32,
        left: u32,
        rule: SecretRule,
    },
    /// Frame boundaries unknown (after a hole, or a header that cannot be a frame's).
    Lost,
}

/// The masker of one client→broker stream.
#[derive(Debug, Clone)]
pub struct CredentialMask {
    state: State,
    /// Stream offset of the next byte not yet parsed.
    next: u64,
    /// Stream offsets found to be secret, for bytes that come again.
    found: Vec<Range<u64>>,
    /// The mechanism named in start-ok (at most its first 16 bytes).
    mechanism: [u8; 16],
    mechanism_len: u8,
}

impl Default for CredentialMask {
    fn default() -> Self {
        CredentialMask::new()
    }
}

impl CredentialMask {
    /// A masker for a stream that starts at offset 0.
    pub fn new() -> Self {
        CredentialMask {
            state: State::Header {
                buf: [0; 7],
                have: 0,
            },
            next: 0,
            found: Vec::new(),
            mechanism: [0; 16],
            mechanism_len: 0,
        }
    }

    /// Masks the secrets in `bytes`, the stream's bytes from offset `offset`.
    /// Returns whether anything in `bytes` was changed.
    pub fn mask(&mut self, offset: u64, bytes: &mut [u8]) -> bool {
        let ranges = self.secrets(offset, bytes);
        for r in &ranges {
            bytes[r.clone()].fill(MASK);
        }
        !ranges.is_empty()
    }

    /// The stretches of `bytes` (the stream's bytes from offset `offset`) that
    /// are secret, as ranges into `bytes`; empty for nearly every chunk, so a
    /// caller holding shared bytes copies only when there is something to mask.
    pub fn secrets(&mut self, offset: u64, bytes: &[u8]) -> Vec<Range<usize>> {
        let end = offset.saturating_add(bytes.len() as u64);
        if offset > self.next {
            // A hole: resume only if this chunk starts like a frame.
            self.next = offset;
            self.state = if plausible_frame_start(bytes) {
                State::Header {
                    buf: [0; 7],
                    have: 0,
                }
            } else {
                State::Lost
            };
        } else if matches!(self.state, State::Lost)
            && offset == self.next
            && plausible_frame_start(bytes)
        {
            self.state = State::Header {
                buf: [0; 7],
                have: 0,
            };
        }
        if end > self.next {
            let from = (self.next - offset) as usize;
            self.parse(&bytes[from..]);
        }
        let mut out = Vec::new();
        for r in &self.found {
            let (s, e) = (r.start.max(offset), r.end.min(end));
            if s < e {
                out.push((s - offset) as usize..(e - offset) as usize);
            }
        }
        out
    }

    /// Records stream offset `at` as secret.
    fn found_at(&mut self, at: u64) {
        if let Some(last) = self.found.last_mut() {
            if last.end == at {
                last.end += 1;
                return;
            }
        }
        if self.found.len() == REMEMBERED {
            self.found.remove(0);
        }
        self.found.push(at..at + 1);
    }

    /// Parses new bytes (starting at `self.next`), recording secrets.
    fn parse(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let at = self.next;
            match self.state {
                State::Lost => {
                    self.next += (bytes.len() - i) as u64;
                    return;
                }
                State::Skip { left } => {
                    let n = left.min((bytes.len() - i) as u64);
                    i += n as usize;
                    self.next += n;
                    self.state = if n == left {
                        State::Header {
                            buf: [0; 7],
                            have: 0,
                        }
                    } else {
                        State::Skip { left: left - n }
                    };
                    continue;
                }
                State::Header { mut buf, have } => {
                    let b = bytes[i];
                    i += 1;
                    self.next += 1;
                    if have == 0 && b == b'A' {
                        // "AMQP" + version: the protocol header.
                        self.state = State::Skip {
                            left: PROTOCOL_HEADER_LEN - 1,
                        };
                        continue;
                    }
                    buf[usize::from(have)] = b;
                    let have = have + 1;
                    if have < 7 {
                        self.state = State::Header { buf, have };
                        continue;
                    }
                    let kind = buf[0];
                    let channel = u16::from_be_bytes([buf[1], buf[2]]);
                    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
                    self.state = match kind {
                        1 if channel == 0 && size >= 4 => State::MethodId {
                            buf: [0; 4],
                            have: 0,
                            left: size,
                        },
                        1..=3 | 8 => State::Skip {
                            left: u64::from(size) + 1,
                        },
                        _ => State::Lost,
                    };
                }
                State::MethodId {
                    mut buf,
                    have,
                    left,
                } => {
                    buf[usize::from(have)] = bytes[i];
                    i += 1;
                    self.next += 1;
                    let (have, left) = (have + 1, left - 1);
                    if have < 4 {
                        self.state = State::MethodId { buf, have, left };
                        continue;
                    }
                    let class = u16::from_be_bytes([buf[0], buf[1]]);
                    let method = u16::from_be_bytes([buf[2], buf[3]]);
                    let first = match (class, method) {
                        (10, 11) => Some(Field::ClientProperties),
                        (10, 21) | (10, 70) => Some(Field::Secret),
                        _ => None,
                    };
                    self.state = match first {
                        Some(field) => len_state(field, left, SecretRule::All),
                        None => State::Skip {
                            left: u64::from(left) + 1,
                        },
                    };
                }
                State::Len(mut p) => {
                    let Some(b) = self.field_byte(bytes, &mut i, p.left) else {
                        continue;
                    };
                    p.len = (p.len << 8) | u32::from(b);
                    p.have += 1;
                    p.left -= 1;
                    self.state = if p.have < p.width {
                        State::Len(p)
                    } else {
                        if p.field == Field::Mechanism {
                            self.mechanism_len = 0;
                        }
                        let rule = if p.field == Field::Secret {
                            p.rule
                        } else {
                            SecretRule::All
                        };
                        self.field_body(p.field, p.len, 0, p.left, rule)
                    };
                }
                State::Body {
                    field,
                    flen,
                    pos,
                    left,
                    rule,
                } => {
                    let Some(b) = self.field_byte(bytes, &mut i, left) else {
                        continue;
                    };
                    let mut rule = rule;
                    match field {
                        Field::ClientProperties => {
                            // Skip the table in one step.
                            let n = (flen - pos)
                                .min(left)
                                .min((bytes.len() - i + 1) as u32)
                                .max(1);
                            let extra = n - 1;
                            i += extra as usize;
                            self.next += u64::from(extra);
                            self.state = self.field_body(field, flen, pos + n, left - n, rule);
                            continue;
                        }
                        Field::Mechanism => {
                            let m = usize::from(self.mechanism_len);
                            if m < self.mechanism.len() {
                                self.mechanism[m] = b;
                                self.mechanism_len += 1;
                            }
                        }
                        Field::Secret => {
                            if secret_byte(&mut rule, b) {
                                self.found_at(at);
                            }
                        }
                    }
                    self.state = self.field_body(field, flen, pos + 1, left - 1, rule);
                }
            }
        }
    }

    /// The next byte of a field (at `bytes[*i]`) in a frame with `left`
    /// payload bytes to go; `None` when the payload ended before the field
    /// (a short frame: its frame end is skipped and parsing moves on).
    fn field_byte(&mut self, bytes: &[u8], i: &mut usize, left: u32) -> Option<u8> {
        if left == 0 {
            self.state = State::Skip { left: 1 };
            return None;
        }
        let b = bytes[*i];
        *i += 1;
        self.next += 1;
        Some(b)
    }

    /// The state for a field's body at `pos` of `flen`, or what follows it when it is done.
    fn field_body(&self, field: Field, flen: u32, pos: u32, left: u32, rule: SecretRule) -> State {
        if pos < flen {
            return State::Body {
                field,
                flen,
                pos,
                left,
                rule,
            };
        }
        match field {
            Field::ClientProperties => len_state(Field::Mechanism, left, SecretRule::All),
            Field::Mechanism => {
                let name = &self.mechanism[..usize::from(self.mechanism_len)];
                let rule = if name.eq_ignore_ascii_case(b"PLAIN") {
                    SecretRule::Plain { nuls: 0 }
                } else if name.eq_ignore_ascii_case(b"AMQPLAIN") {
                    SecretRule::AmqPlain(TableWalk::NameLen)
                } else {
                    SecretRule::All
                };
                len_state(Field::Secret, left, rule)
            }
            // The rest of the frame (locale, reason) holds nothing secret.
            Field::Secret => State::Skip {
                left: u64::from(left) + 1,
            },
        }
    }
}

/// The state that reads `field`'s length prefix.
fn len_state(field: Field, left: u32, rule: SecretRule) -> State {
    State::Len(LenPrefix {
        field,
        len: 0,
        have: 0,
        width: if field == Field::Mechanism { 1 } else { 4 },
        left,
        rule,
    })
}

/// Whether byte `b` of a secret is masked under `rule` (which it advances).
fn secret_byte(rule: &mut SecretRule, b: u8) -> bool {
    match rule {
        SecretRule::All => true,
        SecretRule::Plain { nuls } => {
            // authzid NUL authcid NUL password: only the authcid (the user)
            // stays. The authzid is masked too (nearly always empty), so a
            // response without the two NULs is masked rather than kept.
            if b == 0 {
                *nuls = nuls.saturating_add(1);
                return false;
            }
            *nuls != 1
        }
        SecretRule::AmqPlain(walk) => {
            let (next, masked) = amqplain_byte(*walk, b);
            *walk = next;
            masked
        }
    }
}

/// One byte of an AMQPLAIN table: the next walk state and whether it is masked.
fn amqplain_byte(walk: TableWalk, b: u8) -> (TableWalk, bool) {
    const PASSWORD: &[u8] = b"PASSWORD";
    match walk {
        TableWalk::NameLen if b == 0 => (TableWalk::Type { password: false }, false),
        TableWalk::NameLen => (
            TableWalk::Name {
                left: b,
                pos: 0,
                matched: usize::from(b) == PASSWORD.len(),
            },
            false,
        ),
        TableWalk::Name { left, pos, matched } => {
            let matched = matched
                && PASSWORD
                    .get(usize::from(pos))
                    .is_some_and(|p| p.eq_ignore_ascii_case(&b));
            if left == 1 {
                (TableWalk::Type { password: matched }, false)
            } else {
                (
                    TableWalk::Name {
                        left: left - 1,
                        pos: pos + 1,
                        matched,
                    },
                    false,
                )
            }
        }
        // Long string ('S') and byte array ('x') share the u32-length layout.
        TableWalk::Type { password } if b == b'S' || b == b'x' => (
            TableWalk::ValueLen {
                password,
                len: 0,
                have: 0,
            },
            false,
        ),
        // Anything else: the walk cannot know its size; mask what follows.
        TableWalk::Type { .. } => (TableWalk::Rest, false),
        TableWalk::ValueLen {
            password,
            len,
            have,
        } => {
            let len = (len << 8) | u32::from(b);
            if have < 3 {
                (
                    TableWalk::ValueLen {
                        password,
                        len,
                        have: have + 1,
                    },
                    false,
                )
            } else if len == 0 {
                (TableWalk::NameLen, false)
            } else {
                (
                    TableWalk::Value {
                        password,
                        left: len,
                    },
                    false,
                )
            }
        }
        TableWalk::Value { password, left } => {
            let next = if left == 1 {
                TableWalk::NameLen
            } else {
                TableWalk::Value {
                    password,
                    left: left - 1,
                }
            };
            (next, password)
        }
        TableWalk::Rest => (TableWalk::Rest, true),
    }
}

/// Whether `bytes` can begin a client frame (or the protocol header).
fn plausible_frame_start(bytes: &[u8]) -> bool {
    match bytes.first() {
        Some(b'A') => bytes.len() < 4 || &bytes[..4] == b"AMQP",
        Some(1..=3 | 8) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A method frame on channel 0 with `args` after class and method.
    fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&class.to_be_bytes());
        payload.extend_from_slice(&method.to_be_bytes());
        payload.extend_from_slice(args);
        let mut f = vec![1, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        f.push(0xCE);
        f
    }

    fn shortstr(s: &[u8]) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s);
        v
    }

    fn longstr(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    fn start_ok(mechanism: &str, response: &[u8]) -> Vec<u8> {
        // client-properties: {"product": S "pika"}
        let mut table = shortstr(b"product");
        table.push(b'S');
        table.extend(longstr(b"pika"));
        let mut args = longstr(&table);
        args.extend(shortstr(mechanism.as_bytes()));
        args.extend(longstr(response));
        args.extend(shortstr(b"en_US"));
        method(10, 11, &args)
    }

    fn amqplain(user: &[u8], password: &[u8]) -> Vec<u8> {
        let mut t = shortstr(b"LOGIN");
        t.push(b'S');
        t.extend(longstr(user));
        t.extend(shortstr(b"PASSWORD"));
        t.push(b'S');
        t.extend(longstr(password));
        t
    }

    /// A client stream: protocol header, start-ok, then more frames.
    fn stream(start_ok: Vec<u8>) -> Vec<u8> {
        let mut s = b"AMQP\x00\x00\x09\x01".to_vec();
        s.extend(start_ok);
        // tune-ok, open, a heartbeat, a publish on channel 1 carrying "s3cret" in its body.
        s.extend(method(10, 31, &[0, 0, 0, 2, 0, 0, 0, 0]));
        s.extend(method(10, 40, &[1, b'/', 0, 0]));
        s.extend([8, 0, 0, 0, 0, 0, 0, 0xCE]);
        s.extend([3, 0, 1, 0, 0, 0, 6]);
        s.extend(b"s3cret");
        s.push(0xCE);
        s
    }

    fn masked_whole(s: &[u8]) -> Vec<u8> {
        let mut m = s.to_vec();
        CredentialMask::new().mask(0, &mut m);
        m
    }

    fn contains(h: &[u8], n: &[u8]) -> bool {
        h.windows(n.len()).any(|w| w == n)
    }

    #[test]
    fn plain_keeps_the_user_and_masks_the_password() {
        let s = stream(start_ok("PLAIN", b"\0guest\0s3cret-pw"));
        let m = masked_whole(&s);
        assert_eq!(m.len(), s.len());
        assert!(!contains(&m, b"s3cret-pw"));
        assert!(contains(&m, b"\0guest\0*********"));
        // Only the password's bytes differ; the body's "s3cret" is not a credential.
        let diff = s.iter().zip(&m).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 9);
        assert!(contains(&m, b"s3cret\xCE"));
    }

    #[test]
    fn a_plain_response_without_its_nuls_is_masked_whole() {
        let m = masked_whole(&stream(start_ok("PLAIN", b"s3cret-pw")));
        assert!(!contains(&m, b"s3cret-pw"));
        assert!(contains(&m, b"\x00\x00\x00\x09*********"));
    }

    #[test]
    fn amqplain_masks_the_password_value_only() {
        let s = stream(start_ok("AMQPLAIN", &amqplain(b"guest", b"hunter2")));
        let m = masked_whole(&s);
        assert!(!contains(&m, b"hunter2"));
        assert!(contains(&m, b"\x05LOGINS\x00\x00\x00\x05guest"));
        assert!(contains(&m, b"\x08PASSWORDS\x00\x00\x00\x07*******"));
        assert_eq!(s.iter().zip(&m).filter(|(a, b)| a != b).count(), 7);
    }

    #[test]
    fn amqplain_with_a_field_it_cannot_walk_masks_the_rest() {
        let mut t = shortstr(b"X");
        t.extend([b'I', 0, 0, 0, 1]);
        t.extend(amqplain(b"guest", b"hunter2"));
        let m = masked_whole(&stream(start_ok("AMQPLAIN", &t)));
        assert!(!contains(&m, b"hunter2"));
        assert!(!contains(&m, b"guest"));
    }

    #[test]
    fn other_mechanisms_secure_ok_and_update_secret_are_masked_whole() {
        let mut s = stream(start_ok("RABBIT-CR-DEMO", b"guest"));
        s.extend(method(10, 21, &longstr(b"My password is hunter2")));
        let mut us = longstr(b"jwt-token-xyz");
        us.extend(shortstr(b"refresh"));
        s.extend(method(10, 70, &us));
        let m = masked_whole(&s);
        assert!(!contains(&m, b"guest"));
        assert!(!contains(&m, b"hunter2"));
        assert!(!contains(&m, b"jwt-token-xyz"));
        assert!(contains(&m, b"\x07refresh"));
        assert_eq!(m.len(), s.len());
    }

    #[test]
    fn every_split_offset_masks_the_same() {
        for s in [
            stream(start_ok("PLAIN", b"\0guest\0s3cret-pw")),
            stream(start_ok("AMQPLAIN", &amqplain(b"guest", b"hunter2"))),
        ] {
            let want = masked_whole(&s);
            for cut in 0..=s.len() {
                let mut m = CredentialMask::new();
                let (mut a, mut b) = (s[..cut].to_vec(), s[cut..].to_vec());
                m.mask(0, &mut a);
                m.mask(cut as u64, &mut b);
                a.extend(b);
                assert_eq!(a, want, "split at {cut}");
            }
            // Byte by byte too.
            let mut m = CredentialMask::new();
            let mut got = Vec::new();
            for (i, &b) in s.iter().enumerate() {
                let mut one = [b];
                m.mask(i as u64, &mut one);
                got.push(one[0]);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn bytes_seen_again_are_masked_again() {
        let s = stream(start_ok("PLAIN", b"\0guest\0s3cret-pw"));
        let want = masked_whole(&s);
        let mut m = CredentialMask::new();
        let mut all = s.clone();
        m.mask(0, &mut all);
        // A retransmission of a segment in the middle of the password.
        let mut again = s[30..60].to_vec();
        m.mask(30, &mut again);
        assert_eq!(again, want[30..60]);
        assert!(m.secrets(200, &[1, 2, 3]).is_empty());
    }

    #[test]
    fn after_a_hole_it_resumes_at_a_frame_start() {
        let first = b"AMQP\x00\x00\x09\x01".to_vec();
        let so = start_ok("PLAIN", b"\0guest\0s3cret-pw");
        let mut m = CredentialMask::new();
        let mut a = first.clone();
        m.mask(0, &mut a);
        // 100 bytes were never seen; the next chunk starts with start-ok.
        let mut b = so.clone();
        assert!(m.mask(108, &mut b));
        assert!(!contains(&b, b"s3cret-pw"));
        // A chunk that starts mid-frame after a hole is left alone (and does not panic).
        let mut m = CredentialMask::new();
        let mut c = so[5..].to_vec();
        assert!(!m.mask(50, &mut c));
        let mut d = so.clone();
        assert!(m.mask(50 + c.len() as u64, &mut d));
    }

    #[test]
    fn heartbeats_and_garbage_never_panic() {
        let mut m = CredentialMask::new();
        let mut hb = [8u8, 0, 0, 0, 0, 0, 0, 0xCE];
        assert!(!m.mask(0, &mut hb));
        let mut garbage = vec![0xFFu8; 64];
        assert!(!m.mask(8, &mut garbage));
        // A start-ok whose payload ends before its fields.
        let mut short = method(10, 11, &[0, 0]);
        let mut m = CredentialMask::new();
        m.mask(0, &mut short);
    }

    #[test]
    fn a_masked_start_ok_still_parses_with_its_user() {
        use amq_protocol::frame::{parse_frame, AMQPFrame};
        use amq_protocol::protocol::{connection::AMQPMethod, AMQPClass};
        for (mech, response) in [
            ("PLAIN", b"\0guest\0s3cret-pw".to_vec()),
            ("AMQPLAIN", amqplain(b"guest", b"hunter2")),
        ] {
            let mut f = start_ok(mech, &response);
            assert!(CredentialMask::new().mask(0, &mut f));
            let Ok((rest, AMQPFrame::Method(0, AMQPClass::Connection(AMQPMethod::StartOk(m))))) =
                parse_frame(f.as_slice())
            else {
                panic!("{mech}: the masked frame does not parse");
            };
            assert!(rest.is_empty());
            assert_eq!(m.mechanism.as_str(), mech);
            let r = m.response.as_bytes();
            assert_eq!(r.len(), response.len());
            assert!(contains(r, b"guest") && !contains(r, b"s3cret") && !contains(r, b"hunter2"));
        }
    }

    proptest::proptest! {
        /// Any chunking, with chunks that repeat part of what came before (a
        /// retransmission), masks exactly what the whole stream at once masks.
        #[test]
        fn any_chunking_with_overlaps_masks_the_same(
            cuts in proptest::collection::vec((1usize..40, 0usize..12), 1..40),
            amqplain_login in proptest::bool::ANY,
        ) {
            let s = if amqplain_login {
                stream(start_ok("AMQPLAIN", &amqplain(b"guest", b"hunter2")))
            } else {
                stream(start_ok("PLAIN", b"\0guest\0s3cret-pw"))
            };
            let want = masked_whole(&s);
            let mut m = CredentialMask::new();
            let mut got = s.clone();
            let mut pos = 0usize;
            let mut i = 0;
            while pos < s.len() {
                let (len, back) = cuts[i % cuts.len()];
                i += 1;
                let start = pos.saturating_sub(back);
                let end = (pos + len).min(s.len());
                let mut chunk = s[start..end].to_vec();
                m.mask(start as u64, &mut chunk);
                proptest::prop_assert_eq!(&chunk[..], &want[start..end]);
                got[start..end].copy_from_slice(&chunk);
                pos = end;
            }
            proptest::prop_assert_eq!(got, want);
        }
    }
}
