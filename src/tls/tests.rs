//! Sessions built in memory: hellos written by hand, records sealed with the
//! RustCrypto AEADs under keys derived here from the RFCs' layouts, and fed
//! to a [`Session`] whole and split at every offset; and how the stream
//! stage classifies a TLS port with them.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};

use super::schedule::{hkdf_expand_label, prf, Hash};
use super::*;

const CLIENT_RANDOM: [u8; 32] = [0x11; 32];
const SERVER_RANDOM: [u8; 32] = [0x22; 32];

fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

pub(crate) fn client_hello(server_name: &str) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&CLIENT_RANDOM);
    b.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]); // no session id; one suite; null compression
    let name = server_name.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    let mut r = record(hello::HANDSHAKE, &handshake(1, &b));
    r[2] = 1; // a ClientHello's record says TLS 1.0
    r
}

fn server_hello(suite: u16, tls13: bool) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&SERVER_RANDOM);
    b.push(0);
    b.extend_from_slice(&suite.to_be_bytes());
    b.push(0);
    let ext: &[u8] = if tls13 { &[0, 0x2b, 0, 2, 3, 4] } else { &[] };
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(ext);
    record(hello::HANDSHAKE, &handshake(2, &b))
}

fn seal<A: AeadInOut + KeyInit>(key: &[u8], nonce: [u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let aead = A::new_from_slice(key).unwrap();
    let mut buf = plain.to_vec();
    let nonce = aes_gcm::aead::Nonce::<A>::try_from(&nonce[..]).unwrap();
    aead.encrypt_in_place(&nonce, aad, &mut buf).unwrap();
    buf
}

/// A TLS 1.2 AES-128-GCM record (RFC 5288): explicit nonce = the sequence number.
fn sealed12(key: &[u8], salt: &[u8], seq: u64, content_type: u8, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let mut aad = seq.to_be_bytes().to_vec();
    aad.extend_from_slice(&[content_type, 3, 3]);
    aad.extend_from_slice(&(plain.len() as u16).to_be_bytes());
    let mut body = seq.to_be_bytes().to_vec();
    body.extend(seal::<Aes128Gcm>(key, nonce, &aad, plain));
    record(content_type, &body)
}

/// A TLS 1.3 record: inner content type, padding, the header as additional data.
fn sealed13(secret: &[u8], seq: u64, inner_type: u8, plain: &[u8]) -> Vec<u8> {
    let (mut key, mut iv) = ([0u8; 32], [0u8; 12]);
    hkdf_expand_label(Hash::Sha384, secret, "key", &[], &mut key).unwrap();
    hkdf_expand_label(Hash::Sha384, secret, "iv", &[], &mut iv).unwrap();
    for (n, s) in iv[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    let mut inner = plain.to_vec();
    inner.extend_from_slice(&[inner_type, 0, 0, 0]);
    let header = [hello::APPLICATION_DATA, 3, 3, 0, (inner.len() + 16) as u8];
    record(
        hello::APPLICATION_DATA,
        &seal::<Aes256Gcm>(&key, iv, &header, &inner),
    )
}

/// Feeds the client's hello, the server's bytes, then the rest of the
/// client's (the order of the wire), each split at `cut`; returns the
/// plaintext of each direction.
fn run(s: &mut Session, c2s: &[u8], s2c: &[u8], cut: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut client, mut server) = (Vec::new(), Vec::new());
    let hello = client_hello("localhost").len();
    for (from_client, bytes) in [(true, &c2s[..hello]), (false, s2c), (true, &c2s[hello..])] {
        let cut = cut.min(bytes.len());
        for piece in [&bytes[..cut], &bytes[cut..]] {
            let out = if from_client {
                &mut client
            } else {
                &mut server
            };
            s.feed(from_client, piece, &mut |p| out.extend_from_slice(p))
                .unwrap();
        }
    }
    (client, server)
}

#[test]
fn a_client_hello_gives_its_random_and_server_name_once_complete() {
    let hello = client_hello("broker.example");
    assert_eq!(
        client_start(&hello),
        ClientStart::Hello(ClientHello {
            random: CLIENT_RANDOM,
            server_name: Some("broker.example".into()),
        })
    );
    for cut in 1..hello.len() {
        assert_eq!(
            client_start(&hello[..cut]),
            ClientStart::Incomplete,
            "cut at {cut}"
        );
    }
    assert_eq!(client_start(b"AMQP\x00\x00\x09\x01"), ClientStart::NotTls);
    assert_eq!(
        client_start(&[8, 0, 0, 0, 0, 0, 0, 0xce]),
        ClientStart::NotTls
    );
}

#[test]
fn tls12_aes_gcm_decrypts_the_same_at_every_split() {
    let master = [0x33u8; 48];
    let mut seed = SERVER_RANDOM.to_vec();
    seed.extend_from_slice(&CLIENT_RANDOM);
    let mut block = [0u8; 40]; // two 16-byte keys, two 4-byte salts
    prf(Hash::Sha256, &master, b"key expansion", &seed, &mut block);
    let (ck, sk, cs, ss) = (&block[..16], &block[16..32], &block[32..36], &block[36..]);
    let finished = handshake(20, &[0xaa; 12]);
    let mut c2s = client_hello("localhost");
    c2s.extend(record(hello::HANDSHAKE, &handshake(16, &[0; 66]))); // ClientKeyExchange
    c2s.extend(record(hello::CHANGE_CIPHER_SPEC, &[1]));
    c2s.extend(sealed12(ck, cs, 0, hello::HANDSHAKE, &finished));
    c2s.extend(sealed12(
        ck,
        cs,
        1,
        hello::APPLICATION_DATA,
        b"AMQP\x00\x00\x09\x01",
    ));
    c2s.extend(sealed12(ck, cs, 2, hello::APPLICATION_DATA, b"more"));
    let mut s2c = server_hello(0xc02f, false);
    s2c.extend(record(hello::HANDSHAKE, &handshake(14, &[]))); // ServerHelloDone
    s2c.extend(record(hello::CHANGE_CIPHER_SPEC, &[1]));
    s2c.extend(sealed12(sk, ss, 0, hello::HANDSHAKE, &finished));
    s2c.extend(sealed12(sk, ss, 1, hello::APPLICATION_DATA, &[1, 0, 0]));
    let secrets = Secrets {
        master: Some(master.to_vec()),
        ..Secrets::default()
    };
    for cut in 0..=c2s.len().max(s2c.len()) {
        let mut s = Session::new(CLIENT_RANDOM, secrets.clone());
        let (client, server) = run(&mut s, &c2s, &s2c, cut);
        assert_eq!(client, b"AMQP\x00\x00\x09\x01more", "cut at {cut}");
        assert_eq!(server, [1, 0, 0], "cut at {cut}");
    }
    // Without the master secret: said once, then nothing.
    let mut s = Session::new(CLIENT_RANDOM, Secrets::default());
    let err = s.feed(false, &s2c, &mut |_| panic!("decrypted without a secret"));
    assert!(matches!(err, Err(TlsProblem::NoSecret { .. })), "{err:?}");
    assert_eq!(s.feed(false, &s2c, &mut |_| {}), Ok(()));
}

#[test]
fn tls13_switches_to_traffic_keys_and_follows_a_key_update() {
    let (chs, shs, cts, sts) = ([1u8; 48], [2u8; 48], [3u8; 48], [4u8; 48]);
    let mut next = [0u8; 48];
    hkdf_expand_label(Hash::Sha384, &sts, "traffic upd", &[], &mut next).unwrap();
    let finished = handshake(20, &[0xbb; 48]);
    let mut c2s = client_hello("localhost");
    c2s.extend(record(hello::CHANGE_CIPHER_SPEC, &[1]));
    c2s.extend(sealed13(&chs, 0, hello::HANDSHAKE, &finished));
    c2s.extend(sealed13(
        &cts,
        0,
        hello::APPLICATION_DATA,
        b"AMQP\x00\x00\x09\x01",
    ));
    let mut s2c = server_hello(0x1302, true);
    s2c.extend(record(hello::CHANGE_CIPHER_SPEC, &[1]));
    let mut flight = handshake(8, &[0, 0]); // EncryptedExtensions
    flight.extend(finished);
    s2c.extend(sealed13(&shs, 0, hello::HANDSHAKE, &flight));
    s2c.extend(sealed13(&sts, 0, hello::APPLICATION_DATA, b"start"));
    s2c.extend(sealed13(&sts, 1, hello::HANDSHAKE, &handshake(24, &[0])));
    s2c.extend(sealed13(&next, 0, hello::APPLICATION_DATA, b"-after"));
    let full = Secrets {
        client_handshake: Some(chs.to_vec()),
        server_handshake: Some(shs.to_vec()),
        client_traffic: Some(cts.to_vec()),
        server_traffic: Some(sts.to_vec()),
        ..Secrets::default()
    };
    // Without the handshake secrets the handshake is skipped, the data still read.
    let traffic_only = Secrets {
        client_handshake: None,
        server_handshake: None,
        ..full.clone()
    };
    for secrets in [full, traffic_only] {
        for cut in 0..=c2s.len().max(s2c.len()) {
            let mut s = Session::new(CLIENT_RANDOM, secrets.clone());
            let (client, server) = run(&mut s, &c2s, &s2c, cut);
            assert_eq!(client, b"AMQP\x00\x00\x09\x01", "cut at {cut}");
            assert_eq!(server, b"start-after", "cut at {cut}");
        }
    }
}

#[test]
fn a_gap_or_an_oversized_record_stops_the_direction_once() {
    let mut s = Session::new(CLIENT_RANDOM, Secrets::default());
    assert_eq!(s.gap(true), Some(TlsProblem::Gap));
    assert_eq!(s.gap(true), None);
    let err = s.feed(false, &[23, 3, 3, 0xff, 0xff], &mut |_| {});
    assert!(
        matches!(err, Err(TlsProblem::RecordTooLarge { .. })),
        "{err:?}"
    );
}

#[test]
fn a_tls_port_waits_for_the_client_hello_and_names_the_server() {
    use crate::event::{DecodeError, EventKind, Timestamp};
    use crate::stream::{StreamConfig, Tracker};
    use crate::tcp::{PacketRef, TcpEvent, TcpOutput};
    let client: std::net::SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let feed = |t: &mut Tracker, frame: u64, event: TcpEvent<'_>| {
        let mut kinds = Vec::new();
        let packet = PacketRef {
            file: 0,
            frame,
            ts: Timestamp(frame as i64 * 1_000_000),
            seq: frame,
        };
        let (src, dst, initiator) = (client, "10.0.0.1:2222".parse().unwrap(), Some(client));
        let o = TcpOutput {
            flow: 1,
            packet,
            src,
            dst,
            initiator,
            event,
        };
        t.handle(o, &mut |e| kinds.push(e.kind));
        kinds
    };
    let cfg = StreamConfig {
        tls_ports: vec![2222],
        ..StreamConfig::default()
    };
    let mut t = Tracker::new(cfg.clone());
    assert!(feed(&mut t, 1, TcpEvent::Open).is_empty());
    assert!(t.has_held(), "decided before the ClientHello");
    let events = feed(&mut t, 2, TcpEvent::Data(&client_hello("broker.example")));
    let error = DecodeError::Tls {
        port: 2222,
        server_name: Some("broker.example".into()),
    };
    assert!(matches!(events[0], EventKind::TcpOpen), "{events:?}");
    assert!(
        matches!(&events[1], EventKind::Error { error: e, .. } if *e == error),
        "{events:?}"
    );
    assert_eq!(t.stats().tls_connections, 1);
    // The protocol header in the clear on a TLS port is AMQP.
    let mut t = Tracker::new(cfg);
    feed(&mut t, 1, TcpEvent::Open);
    feed(&mut t, 2, TcpEvent::Data(b"AMQP\x00\x00\x09\x01"));
    assert_eq!(t.stats().amqp_connections, 1);
}
