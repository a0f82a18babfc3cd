//! The link layer's hand-read fast path (`link::plain`) must agree with the
//! general path (`link::tcp_segment_general`, etherparse's IP and TCP header
//! parsers) on every packet it takes: on every packet of every committed
//! capture, on hand-built edge packets (IP options, fragments, VLAN tags,
//! extension headers, lengths that lie) and on generated ones.

use amqptrace::link::{self, linktype};
use proptest::prelude::*;

use crate::util;

/// Checks one packet; returns 1 when the fast path took it.
#[track_caller]
fn check(lt: i32, data: &[u8], ctx: &str) -> usize {
    let general = link::tcp_segment_general(lt, data);
    assert_eq!(link::tcp_segment(lt, data), general, "{ctx}");
    match link::plain(lt, data) {
        Some(fast) => {
            assert_eq!(Ok(fast), general, "{ctx}: the fast path disagrees");
            1
        }
        None => 0,
    }
}

#[test]
fn fast_path_agrees_with_etherparse_on_every_captured_packet() {
    let (mut packets, mut fast) = (0, 0);
    for path in util::all_captures() {
        let mut reader =
            amqptrace::source::file::CaptureReader::open(&path).expect("committed capture opens");
        while let Ok(Some(pkt)) = reader.next_packet() {
            packets += 1;
            let ctx = format!("{} packet {}", path.display(), pkt.frame);
            fast += check(pkt.linktype, pkt.data, &ctx);
        }
    }
    // Nearly every committed packet is a plain one (the rest: VLAN, ARP, ...).
    assert!(
        fast * 10 > packets * 9,
        "only {fast} of {packets} packets took the fast path"
    );
    eprintln!("{fast} of {packets} packets compared");
}

/// An IPv4 header (20 bytes and `options`) of a packet of `payload_len` bytes after it.
fn ipv4(protocol: u8, options: &[u8], frag: u16, payload_len: usize) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + payload_len) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, protocol, 0, 0, 10, 0, 0, 1, 192, 168, 7, 9]);
    h.extend_from_slice(options);
    h
}

/// An IPv6 header of `payload_len` bytes after it, the first of them `next`.
fn ipv6(next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, 2]);
    h
}

/// A TCP header with `options` (a multiple of 4 bytes), `flags`, then `payload`.
fn tcp(options: &[u8], flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0x9c, 0x40, 0x16, 0x28, 1, 2, 3, 4, 5, 6, 7, 8];
    t.push(((5 + options.len() / 4) as u8) << 4);
    t.extend_from_slice(&[flags, 0x01, 0xf5, 0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

fn ethernet(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(ip);
    p
}

/// The same IP packet behind every link header amqptrace reads.
fn framings(ip: &[u8], v6: bool) -> Vec<(i32, Vec<u8>)> {
    let et: u16 = if v6 { 0x86dd } else { 0x0800 };
    let mut vlan = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 7];
    vlan.extend_from_slice(&et.to_be_bytes());
    vlan.extend_from_slice(ip);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll.extend_from_slice(&et.to_be_bytes());
    sll.extend_from_slice(ip);
    let mut sll2 = et.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    sll2.extend_from_slice(ip);
    let family: u32 = if v6 { 30 } else { 2 };
    let mut null = family.to_le_bytes().to_vec();
    null.extend_from_slice(ip);
    let mut lo = family.to_be_bytes().to_vec();
    lo.extend_from_slice(ip);
    vec![
        (linktype::ETHERNET, ethernet(et, ip)),
        (linktype::ETHERNET, vlan),
        (linktype::LINUX_SLL, sll),
        (linktype::LINUX_SLL2, sll2),
        (linktype::NULL, null),
        (linktype::LOOP, lo),
        (linktype::RAW, ip.to_vec()),
        (
            if v6 { linktype::IPV6 } else { linktype::IPV4 },
            ip.to_vec(),
        ),
    ]
}

/// Hand-built edge packets: each in every framing, and cut at every length.
fn edge_packets() -> Vec<(String, Vec<u8>, bool)> {
    let payload = b"AMQP\x00\x00\x09\x01";
    let seg = tcp(&[], 0x18, payload);
    let seg_opts = tcp(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 0x10, payload);
    let with = |mut ip: Vec<u8>, t: &[u8]| {
        ip.extend_from_slice(t);
        ip
    };
    let mut v: Vec<(String, Vec<u8>, bool)> = vec![
        (
            "plain".into(),
            with(ipv4(6, &[], 0x4000, seg.len()), &seg),
            false,
        ),
        (
            "tcp options".into(),
            with(ipv4(6, &[], 0, seg_opts.len()), &seg_opts),
            false,
        ),
        (
            "ip options".into(),
            with(ipv4(6, &[1, 1, 1, 0], 0, seg.len()), &seg),
            false,
        ),
        (
            "more fragments".into(),
            with(ipv4(6, &[], 0x2000, seg.len()), &seg),
            false,
        ),
        (
            "fragment offset".into(),
            with(ipv4(6, &[], 0x0010, seg.len()), &seg),
            false,
        ),
        ("udp".into(), with(ipv4(17, &[], 0, seg.len()), &seg), false),
        ("v6".into(), with(ipv6(6, seg.len()), &seg), true),
        (
            "v6 tcp options".into(),
            with(ipv6(6, seg_opts.len()), &seg_opts),
            true,
        ),
        ("v6 udp".into(), with(ipv6(17, seg.len()), &seg), true),
    ];
    // IPv6 hop-by-hop options before TCP.
    let mut hbh = ipv6(0, 8 + seg.len());
    hbh.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    hbh.extend_from_slice(&seg);
    v.push(("v6 hop-by-hop".into(), hbh, true));
    // Lengths that lie: total length 0 (TSO), shorter than the headers, longer than captured.
    for (name, total) in [
        ("total 0", 0u16),
        ("total 19", 19),
        ("total 20", 20),
        ("total 39", 39),
        ("total 40", 40),
        ("total short of payload", 44),
        ("total past the capture", 1500),
    ] {
        let mut p = with(ipv4(6, &[], 0, seg.len()), &seg);
        p[2..4].copy_from_slice(&total.to_be_bytes());
        v.push((name.into(), p, false));
        let mut p = with(ipv6(6, seg.len()), &seg);
        p[4..6].copy_from_slice(&total.to_be_bytes());
        v.push((format!("v6 payload {name}"), p, true));
    }
    // TCP data offsets below 5 and beyond what is there.
    for off in [0u8, 4, 5, 6, 15] {
        let mut p = with(ipv4(6, &[], 0, seg.len()), &seg);
        p[20 + 12] = off << 4;
        v.push((format!("tcp offset {off}"), p, false));
    }
    // IPv4 header lengths below 5 and version numbers that are neither.
    for first in [0x44u8, 0x40, 0x4f, 0x55, 0x65, 0x05] {
        let mut p = with(ipv4(6, &[], 0, seg.len()), &seg);
        p[0] = first;
        v.push((format!("first byte {first:#x}"), p, false));
    }
    v
}

#[test]
fn fast_path_agrees_with_etherparse_on_edge_packets() {
    let mut fast = 0;
    for (name, ip, v6) in edge_packets() {
        for (lt, packet) in framings(&ip, v6) {
            for cut in 0..=packet.len() {
                let ctx = format!("{name}, link type {lt}, cut at {cut}");
                fast += check(lt, &packet[..cut], &ctx);
            }
        }
    }
    assert!(fast > 100, "only {fast} edge packets took the fast path");
}

proptest! {
    /// Any bytes in any header field of a plain packet, cut anywhere.
    #[test]
    fn fast_path_agrees_with_etherparse_on_generated_packets(
        v6 in any::<bool>(),
        framing in 0usize..8,
        pokes in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let seg = tcp(&[], 0x18, b"AMQP\x00\x00\x09\x01 and some more bytes");
        let mut ip = if v6 { ipv6(6, seg.len()) } else { ipv4(6, &[], 0, seg.len()) };
        ip.extend_from_slice(&seg);
        let (lt, mut packet) = framings(&ip, v6).swap_remove(framing);
        for (at, b) in pokes {
            if let Some(x) = packet.get_mut(at) {
                *x = b;
            }
        }
        let n = cut.index(packet.len() + 1);
        check(lt, &packet[..n], "generated");
    }
}
