//! pcapng recording of byte streams whose packets were never seen: each TCP
//! connection ("leg") gets synthesised Ethernet, IPv4/IPv6 and TCP headers
//! with the real addresses and ports, consistent sequence and acknowledgement
//! numbers, a three-way handshake, FIN and RST, so that tshark and
//! `amqptrace analyze` read the file like any capture.
//!
//! The proxy records two legs per client connection (client↔proxy and
//! proxy↔broker); this writer knows nothing of proxies, events or AMQP: it is
//! told "leg L opened between A and B on interface I", "A sent these bytes",
//! "B closed". Output is one section with Ethernet interfaces (named and
//! described as the caller says, nanosecond timestamps). Writes go to any
//! `io::Write`; [`PcapngWriter::flush`] pushes them out (the proxy calls it
//! every second and at exit), and [`PcapngWriter::finish`] ends the file with
//! one Interface Statistics Block per interface whose `isb_starttime` and
//! `isb_endtime` say when the recording started and stopped, as dumpcap
//! writes them: a reader then knows that nothing happened between the last
//! packet and the end.

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
    /// Interface (index into the IDBs) the leg's packets are recorded on.
    interface: u32,
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
    interfaces: u32,
    start: Timestamp,
}

/// What an Interface Description Block says about an interface.
#[derive(Debug, Clone, Copy)]
pub struct InterfaceDesc<'a> {
    /// `if_name` (empty: none).
    pub name: &'a str,
    /// `if_description` (empty: none).
    pub description: &'a str,
}

/// pcapng option codes used here (pcapng spec §4.2, §4.6).
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;

/// Appends one option (code, length, value padded to 32 bits).
fn push_option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    b.extend_from_slice(value);
    b.resize(b.len().div_ceil(4) * 4, 0);
}

/// A timestamp as pcapng's 64-bit count of nanoseconds, high word first.
fn ts_words(ts: Timestamp) -> [u8; 8] {
    let nanos = ts.as_nanos().max(0) as u64;
    let mut w = [0u8; 8];
    w[..4].copy_from_slice(&((nanos >> 32) as u32).to_le_bytes());
    w[4..].copy_from_slice(&(nanos as u32).to_le_bytes());
    w
}

/// Frames `body` as a block of `kind`: type, total length, body, total length.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header and one unnamed interface description.
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_interfaces(
            out,
            &[InterfaceDesc {
                name: "",
                description: "",
            }],
            Timestamp(0),
        )
    }

    /// Writes the section header and one interface description per entry of
    /// `interfaces` (interface `i` is `interfaces[i]`); `start` is the moment
    /// the recording starts (`isb_starttime` at the end).
    pub fn with_interfaces(
        mut out: W,
        interfaces: &[InterfaceDesc<'_>],
        start: Timestamp,
    ) -> io::Result<Self> {
        // Section Header Block: byte-order magic, version 1.0, section length unknown.
        let mut shb = Vec::with_capacity(16);
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        out.write_all(&block(0x0A0D_0D0A, &shb))?;
        for iface in interfaces {
            // Interface Description Block: Ethernet, no snaplen limit, if_tsresol = 9 (ns).
            let mut idb = Vec::with_capacity(64);
            idb.extend_from_slice(&1u16.to_le_bytes());
            idb.extend_from_slice(&0u16.to_le_bytes());
            idb.extend_from_slice(&0u32.to_le_bytes());
            if !iface.name.is_empty() {
                push_option(&mut idb, IF_NAME, iface.name.as_bytes());
            }
            if !iface.description.is_empty() {
                push_option(&mut idb, IF_DESCRIPTION, iface.description.as_bytes());
            }
            push_option(&mut idb, IF_TSRESOL, &[9]);
            push_option(&mut idb, OPT_ENDOFOPT, &[]);
            out.write_all(&block(1, &idb))?;
        }
        Ok(PcapngWriter {
            out,
            legs: HashMap::new(),
            packet: Vec::with_capacity(MAX_SEGMENT + 128),
            block: Vec::with_capacity(MAX_SEGMENT + 160),
            packets: 0,
            interfaces: interfaces.len() as u32,
            start,
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

    /// A connection from `client` to `server` on interface 0: SYN, SYN-ACK, ACK.
    pub fn open(
        &mut self,
        leg: u64,
        client: SocketAddr,
        server: SocketAddr,
        ts: Timestamp,
    ) -> io::Result<()> {
        self.open_on(leg, 0, client, server, ts, None)
    }

    /// A connection from `client` to `server` on `interface`: SYN, SYN-ACK,
    /// ACK; `comment` (shown by Wireshark as the packet comment) goes on the SYN.
    pub fn open_on(
        &mut self,
        leg: u64,
        interface: u32,
        client: SocketAddr,
        server: SocketAddr,
        ts: Timestamp,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let (client, server) = same_family(client, server);
        let interface = interface.min(self.interfaces.saturating_sub(1));
        // Initial sequence numbers derived from the leg id: deterministic, and
        // different for the two directions.
        let isn_c = (leg as u32).wrapping_mul(0x9E37_79B9).wrapping_add(1000);
        let isn_s = isn_c.wrapping_add(0x4000_0000);
        self.legs.insert(
            leg,
            Leg {
                interface,
                client,
                server,
                next: [isn_c.wrapping_add(1), isn_s.wrapping_add(1)],
                fin: [false; 2],
            },
        );
        let seg = Segment { interface, comment };
        self.segment(seg, client, server, isn_c, None, Flags::SYN, &[], ts)?;
        let seg = Segment {
            interface,
            comment: None,
        };
        self.segment(
            seg,
            server,
            client,
            isn_s,
            Some(isn_c.wrapping_add(1)),
            Flags::SYN,
            &[],
            ts,
        )?;
        self.segment(
            seg,
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
            let Some((seg, src, dst, seq, ack)) = self.endpoints(leg, from_client) else {
                return Ok(());
            };
            self.segment(seg, src, dst, seq, Some(ack), Flags::PSH, chunk, ts)?;
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
        let Some((seg, src, dst, seq, ack)) = self.endpoints(leg, from_client) else {
            return Ok(());
        };
        let i = usize::from(!from_client);
        if self.legs.get(&leg).is_some_and(|l| l.fin[i]) {
            return Ok(());
        }
        self.segment(seg, src, dst, seq, Some(ack), Flags::FIN, &[], ts)?;
        if let Some(l) = self.legs.get_mut(&leg) {
            l.next[i] = l.next[i].wrapping_add(1);
            l.fin[i] = true;
        }
        Ok(())
    }

    /// RST from the client (`from_client`) or the server; the leg is over.
    pub fn reset(&mut self, leg: u64, from_client: bool, ts: Timestamp) -> io::Result<()> {
        if let Some((seg, src, dst, seq, ack)) = self.endpoints(leg, from_client) {
            self.segment(seg, src, dst, seq, Some(ack), Flags::RST, &[], ts)?;
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

    /// The writer back (flushed), without statistics: the file records no end.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    /// Ends the recording at `end`: one Interface Statistics Block per
    /// interface (`isb_starttime`, `isb_endtime`, as dumpcap writes them at
    /// the end of a capture), then the writer back, flushed.
    pub fn finish(mut self, end: Timestamp) -> io::Result<W> {
        let end = end.max(self.start);
        for interface in 0..self.interfaces {
            let mut isb = Vec::with_capacity(40);
            isb.extend_from_slice(&interface.to_le_bytes());
            isb.extend_from_slice(&ts_words(end));
            push_option(&mut isb, ISB_STARTTIME, &ts_words(self.start));
            push_option(&mut isb, ISB_ENDTIME, &ts_words(end));
            push_option(&mut isb, OPT_ENDOFOPT, &[]);
            self.out.write_all(&block(5, &isb))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn endpoints(
        &self,
        leg: u64,
        from_client: bool,
    ) -> Option<(Segment<'static>, SocketAddr, SocketAddr, u32, u32)> {
        let l = self.legs.get(&leg)?;
        let seg = Segment {
            interface: l.interface,
            comment: None,
        };
        Some(if from_client {
            (seg, l.client, l.server, l.next[0], l.next[1])
        } else {
            (seg, l.server, l.client, l.next[1], l.next[0])
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        seg: Segment<'_>,
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
        self.write_epb(seg, ts)
    }

    /// Enhanced Packet Block for `self.packet`.
    fn write_epb(&mut self, seg: Segment<'_>, ts: Timestamp) -> io::Result<()> {
        let len = self.packet.len();
        let padded = len.div_ceil(4) * 4;
        let b = &mut self.block;
        b.clear();
        b.extend_from_slice(&6u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&seg.interface.to_le_bytes());
        b.extend_from_slice(&ts_words(ts));
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&self.packet);
        b.resize(28 + padded, 0);
        if let Some(c) = seg.comment {
            push_option(b, OPT_COMMENT, c.as_bytes());
            push_option(b, OPT_ENDOFOPT, &[]);
        }
        let total = (b.len() + 4) as u32;
        b[4..8].copy_from_slice(&total.to_le_bytes());
        b.extend_from_slice(&total.to_le_bytes());
        self.packets += 1;
        self.out.write_all(b)
    }
}

/// Where a packet block goes: its interface, and a comment for it.
#[derive(Debug, Clone, Copy)]
struct Segment<'a> {
    interface: u32,
    comment: Option<&'a str>,
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
