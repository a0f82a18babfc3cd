//! pcapng recording of byte streams whose packets were never seen: each TCP
//! connection ("leg") gets synthesised Ethernet, IPv4/IPv6 and TCP headers
//! with the real addresses and ports, consistent sequence and acknowledgement
//! numbers, a three-way handshake, FIN and RST, so that tshark and
//! `amqptrace analyze` read the file like any capture.
//!
//! The proxy records two legs per client connection (client↔proxy and
//! proxy↔broker); this writer knows nothing of proxies, events or AMQP: it is
//! told "leg L opened between A and B", "A sent these bytes", "B closed".
//! Output is one section with one Ethernet interface and nanosecond
//! timestamps. Writes go to any `io::Write`; [`PcapngWriter::flush`] pushes
//! them out (the proxy calls it every second and at exit).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use etherparse::PacketBuilder;

use crate::event::Timestamp;

/// Largest payload put in one synthesised segment (IPv4's total length is 16 bits).
const MAX_SEGMENT: usize = 32 * 1024;
const WINDOW: u16 = 65535;
/// Locally administered MAC addresses: `…:01` for a leg's client, `…:02` for its server.
const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Debug)]
struct Leg {
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of what the client / the server sends.
    next: [u32; 2],
    /// Whether each side has sent its FIN (no more acks to advance for it).
    fin: [bool; 2],
}

/// A pcapng file of synthesised TCP connections.
pub struct PcapngWriter<W: Write> {
    out: W,
    legs: HashMap<u64, Leg>,
    packet: Vec<u8>,
    block: Vec<u8>,
    packets: u64,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header and the interface description.
    pub fn new(mut out: W) -> io::Result<Self> {
        // Section Header Block: byte-order magic, version 1.0, section length unknown.
        let mut shb = Vec::with_capacity(28);
        shb.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
        shb.extend_from_slice(&28u32.to_le_bytes());
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        shb.extend_from_slice(&28u32.to_le_bytes());
        out.write_all(&shb)?;
        // Interface Description Block: Ethernet, no snaplen limit, if_tsresol = 9 (ns).
        let mut idb = Vec::with_capacity(32);
        idb.extend_from_slice(&1u32.to_le_bytes());
        idb.extend_from_slice(&32u32.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&9u16.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]);
        idb.extend_from_slice(&32u32.to_le_bytes());
        out.write_all(&idb)?;
        Ok(PcapngWriter {
            out,
            legs: HashMap::new(),
            packet: Vec::with_capacity(MAX_SEGMENT + 128),
            block: Vec::with_capacity(MAX_SEGMENT + 160),
            packets: 0,
        })
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Whether `leg` is open (opened and not yet forgotten).
    pub fn is_open(&self, leg: u64) -> bool {
        self.legs.contains_key(&leg)
    }

    /// A connection from `client` to `server`: SYN, SYN-ACK, ACK.
    pub fn open(
        &mut self,
        leg: u64,
        client: SocketAddr,
        server: SocketAddr,
        ts: Timestamp,
    ) -> io::Result<()> {
        let (client, server) = same_family(client, server);
        // Initial sequence numbers derived from the leg id: deterministic, and
        // different for the two directions.
        let isn_c = (leg as u32).wrapping_mul(0x9E37_79B9).wrapping_add(1000);
        let isn_s = isn_c.wrapping_add(0x4000_0000);
        self.legs.insert(
            leg,
            Leg {
                client,
                server,
                next: [isn_c.wrapping_add(1), isn_s.wrapping_add(1)],
                fin: [false; 2],
            },
        );
        self.segment(client, server, isn_c, None, Flags::SYN, &[], ts)?;
        self.segment(
            server,
            client,
            isn_s,
            Some(isn_c.wrapping_add(1)),
            Flags::SYN,
            &[],
            ts,
        )?;
        self.segment(
            client,
            server,
            isn_c.wrapping_add(1),
            Some(isn_s.wrapping_add(1)),
            Flags::NONE,
            &[],
            ts,
        )
    }

    /// Bytes sent by the leg's client (`from_client`) or server.
    pub fn data(
        &mut self,
        leg: u64,
        from_client: bool,
        payload: &[u8],
        ts: Timestamp,
    ) -> io::Result<()> {
        for chunk in payload.chunks(MAX_SEGMENT) {
            let Some((src, dst, seq, ack)) = self.endpoints(leg, from_client) else {
                return Ok(());
            };
            self.segment(src, dst, seq, Some(ack), Flags::PSH, chunk, ts)?;
            if let Some(l) = self.legs.get_mut(&leg) {
                let i = usize::from(!from_client);
                l.next[i] = l.next[i].wrapping_add(chunk.len() as u32);
            }
        }
        Ok(())
    }

    /// A hole of `bytes` in what the client (`from_client`) or server sent:
    /// the sequence numbers skip it, as a capture that lost those packets would.
    pub fn skip(&mut self, leg: u64, from_client: bool, bytes: u64) {
        if let Some(l) = self.legs.get_mut(&leg) {
            let i = usize::from(!from_client);
            l.next[i] = l.next[i].wrapping_add(bytes as u32);
        }
    }

    /// FIN from the client (`from_client`) or the server.
    pub fn fin(&mut self, leg: u64, from_client: bool, ts: Timestamp) -> io::Result<()> {
        let Some((src, dst, seq, ack)) = self.endpoints(leg, from_client) else {
            return Ok(());
        };
        let i = usize::from(!from_client);
        if self.legs.get(&leg).is_some_and(|l| l.fin[i]) {
            return Ok(());
        }
        self.segment(src, dst, seq, Some(ack), Flags::FIN, &[], ts)?;
        if let Some(l) = self.legs.get_mut(&leg) {
            l.next[i] = l.next[i].wrapping_add(1);
            l.fin[i] = true;
        }
        Ok(())
    }

    /// RST from the client (`from_client`) or the server; the leg is over.
    pub fn reset(&mut self, leg: u64, from_client: bool, ts: Timestamp) -> io::Result<()> {
        if let Some((src, dst, seq, ack)) = self.endpoints(leg, from_client) {
            self.segment(src, dst, seq, Some(ack), Flags::RST, &[], ts)?;
        }
        self.legs.remove(&leg);
        Ok(())
    }

    /// Forgets a leg whose both sides are done.
    pub fn forget(&mut self, leg: u64) {
        self.legs.remove(&leg);
    }

    /// Pushes buffered packets to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer back (flushed).
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn endpoints(&self, leg: u64, from_client: bool) -> Option<(SocketAddr, SocketAddr, u32, u32)> {
        let l = self.legs.get(&leg)?;
        Some(if from_client {
            (l.client, l.server, l.next[0], l.next[1])
        } else {
            (l.server, l.client, l.next[1], l.next[0])
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: Option<u32>,
        flags: Flags,
        payload: &[u8],
        ts: Timestamp,
    ) -> io::Result<()> {
        let (smac, dmac) = if flags_from_client(src, dst) {
            (MAC_CLIENT, MAC_SERVER)
        } else {
            (MAC_SERVER, MAC_CLIENT)
        };
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (s, d) => eth.ipv6(v6(s).octets(), v6(d).octets(), 64),
        };
        let mut tcp = ip.tcp(src.port(), dst.port(), seq, WINDOW);
        if let Some(a) = ack {
            tcp = tcp.ack(a);
        }
        if flags.syn {
            tcp = tcp.syn();
        }
        if flags.fin {
            tcp = tcp.fin();
        }
        if flags.rst {
            tcp = tcp.rst();
        }
        if flags.psh {
            tcp = tcp.psh();
        }
        self.packet.clear();
        tcp.write(&mut self.packet, payload)
            .map_err(io::Error::other)?;
        self.write_epb(ts)
    }

    /// Enhanced Packet Block for `self.packet`.
    fn write_epb(&mut self, ts: Timestamp) -> io::Result<()> {
        let len = self.packet.len();
        let padded = len.div_ceil(4) * 4;
        let total = (32 + padded) as u32;
        let nanos = ts.as_nanos().max(0) as u64;
        let b = &mut self.block;
        b.clear();
        b.extend_from_slice(&6u32.to_le_bytes());
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&((nanos >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(nanos as u32).to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&self.packet);
        b.resize(28 + padded, 0);
        b.extend_from_slice(&total.to_le_bytes());
        self.packets += 1;
        self.out.write_all(b)
    }
}

/// MAC choice only: the lower port is taken as the server's for colouring.
fn flags_from_client(src: SocketAddr, dst: SocketAddr) -> bool {
    src.port() >= dst.port()
}

#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    syn: bool,
    fin: bool,
    rst: bool,
    psh: bool,
}

impl Flags {
    const NONE: Flags = Flags {
        syn: false,
        fin: false,
        rst: false,
        psh: false,
    };
    const SYN: Flags = Flags {
        syn: true,
        ..Flags::NONE
    };
    const FIN: Flags = Flags {
        fin: true,
        ..Flags::NONE
    };
    const RST: Flags = Flags {
        rst: true,
        ..Flags::NONE
    };
    const PSH: Flags = Flags {
        psh: true,
        ..Flags::NONE
    };
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Both ends in one address family: IPv4-mapped IPv6 becomes IPv4 when both
/// can be, otherwise IPv4 is mapped into IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (ca, cb) = (a.ip().to_canonical(), b.ip().to_canonical());
    if ca.is_ipv4() && cb.is_ipv4() {
        (SocketAddr::new(ca, a.port()), SocketAddr::new(cb, b.port()))
    } else {
        (
            SocketAddr::new(IpAddr::V6(v6(ca)), a.port()),
            SocketAddr::new(IpAddr::V6(v6(cb)), b.port()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureReader;
    use crate::link;

    #[test]
    fn written_legs_read_back_as_tcp_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcapng");
        let c: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let s: SocketAddr = "[::1]:5672".parse().unwrap();
        {
            let f = std::fs::File::create(&path).unwrap();
            let mut w = PcapngWriter::new(io::BufWriter::new(f)).unwrap();
            let t = Timestamp(1_700_000_000_123_456_789);
            w.open(1, c, s, t).unwrap();
            w.data(1, true, b"AMQP\x00\x00\x09\x01", t).unwrap();
            w.data(1, false, &[1u8; 70_000], t).unwrap();
            w.fin(1, true, t).unwrap();
            w.reset(1, false, t).unwrap();
            w.into_inner().unwrap();
        }
        let mut r = CaptureReader::open(&path).unwrap();
        let mut segs = Vec::new();
        while let Some(p) = r.next_packet().unwrap() {
            assert_eq!(p.ts, Timestamp(1_700_000_000_123_456_789));
            let seg = link::tcp_segment(p.linktype, p.data).unwrap();
            segs.push((
                seg.flags,
                seg.seq,
                seg.ack,
                seg.payload.len(),
                seg.src,
                seg.dst,
            ));
        }
        // SYN, SYN-ACK, ACK, header, 3 chunks of 70000, FIN, RST.
        assert_eq!(segs.len(), 3 + 1 + 3 + 2);
        assert!(segs[0].0.syn && !segs[0].0.ack);
        assert!(segs[1].0.syn && segs[1].0.ack && segs[1].2 == segs[0].1.wrapping_add(1));
        assert_eq!(segs[3].3, 8);
        assert_eq!(segs[4].1, segs[1].1.wrapping_add(1));
        assert_eq!(segs[5].1, segs[4].1.wrapping_add(MAX_SEGMENT as u32));
        assert!(segs[7].0.fin && segs[7].1 == segs[3].1.wrapping_add(8));
        assert!(segs[8].0.rst);
        // The IPv4 client is mapped into IPv6 next to an IPv6 server.
        assert_eq!(segs[0].4.port(), 40000);
        assert!(segs[0].4.is_ipv6() && segs[0].5 == s);
    }
}
