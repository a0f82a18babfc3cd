//! Link, IP and TCP headers of one captured packet → one [`TcpSegment`].
//!
//! Link types: Ethernet (with 802.1Q/802.1ad VLAN tags), Linux cooked SLL and
//! SLL2 (`tcpdump -i any`), BSD loopback/null, raw IPv4/IPv6. IPv4 and IPv6
//! (with the common extension headers). The IP and TCP header parsers are
//! etherparse's; the lengths are checked here so that a packet cut by snaplen
//! reports how much payload is missing instead of pretending it is whole, and
//! Ethernet padding never counts as payload.
//!
//! The plain case (no VLAN tag, IPv4 without options or IPv6 without extension
//! headers, a whole TCP header) is read by hand first ([`plain`]), and anything
//! else by the general path ([`tcp_segment_general`]); the two must agree on
//! every packet the fast path takes (tests/tests/link_fast_path.rs holds them
//! to it).
//!
//! This module owns no state: it knows nothing of connections or AMQP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice};

/// LINKTYPE_* values (https://www.tcpdump.org/linktypes.html).
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_BSD: i32 = 12;
    pub const RAW_BSD2: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// Whether amqptrace can read packets of this link type.
pub fn is_supported_linktype(lt: i32) -> bool {
    use linktype::*;
    matches!(
        lt,
        NULL | ETHERNET | RAW_BSD | RAW_BSD2 | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
    )
}

/// The name of a link type, for messages.
pub fn linktype_name(lt: i32) -> String {
    use linktype::*;
    match lt {
        NULL => "NULL (BSD loopback)".into(),
        ETHERNET => "ETHERNET".into(),
        RAW | RAW_BSD | RAW_BSD2 => "RAW".into(),
        LOOP => "LOOP".into(),
        LINUX_SLL => "LINUX_SLL".into(),
        LINUX_SLL2 => "LINUX_SLL2".into(),
        IPV4 => "IPV4".into(),
        IPV6 => "IPV6".into(),
        105 => "105 (IEEE802_11, Wi-Fi)".into(),
        127 => "127 (IEEE802_11_RADIOTAP)".into(),
        other => format!("LINKTYPE {other}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// The TCP part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// The payload bytes that were captured.
    pub payload: &'a [u8],
    /// Payload bytes that were on the wire but not captured (snaplen).
    pub missing: u32,
    /// The window field as sent (unscaled): 0 says the sender's receive buffer is full.
    pub window: u16,
}

/// Why a packet yields no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(i32),
    /// Not IP, not TCP, or an IP fragment: of no interest to an AMQP tracer.
    #[error("not a TCP packet")]
    NotTcp,
    /// Headers cut short or inconsistent.
    #[error("malformed {0} header")]
    Malformed(&'static str),
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;

/// Decodes the link, IP and TCP headers of a captured packet: [`plain`] when
/// it takes the packet, else [`tcp_segment_general`]. (The etherparse path
/// alone cost 156 instructions a packet on the storm slice, a third of what
/// a packet cost before reassembly; the fast path about 60.)
#[inline]
pub fn tcp_segment(lt: i32, data: &[u8]) -> Result<TcpSegment<'_>, LinkError> {
    match plain(lt, data) {
        Some(seg) => Ok(seg),
        None => tcp_segment_general(lt, data),
    }
}

/// [`tcp_segment`] by the general path alone (etherparse's IP and TCP header
/// parsers): what the fast path [`plain`] is held to.
#[inline(never)]
pub fn tcp_segment_general(lt: i32, data: &[u8]) -> Result<TcpSegment<'_>, LinkError> {
    ip_tcp(ip_of(lt, data)?)
}

/// The segment of a plain packet, read by hand: Ethernet without VLAN tags,
/// Linux cooked, loopback or raw IP; then IPv4 without options, not a
/// fragment, or IPv6 straight to TCP; then a TCP header that is all there.
/// Exactly what [`tcp_segment_general`] returns for such a packet; `None`
/// for anything else (other headers, or anything it would refuse), which
/// then takes the general path.
#[inline(always)]
pub fn plain(lt: i32, data: &[u8]) -> Option<TcpSegment<'_>> {
    let ip = match lt {
        linktype::ETHERNET => match be16(data, 12)? {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => data.get(14..)?,
            _ => return None,
        },
        _ => ip_of(lt, data).ok()?,
    };
    let first = *ip.first()?;
    let (src, dst, tcp_at, total) = if first == 0x45 {
        // IPv4, header length 5 words: no options.
        let h: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
        // Protocol TCP; neither more fragments nor a fragment offset.
        if h[9] != 6 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        // TSO/GSO packets captured on the sending host may carry total_len 0.
        let total = if total == 0 { ip.len() } else { total };
        if total < 20 {
            return None;
        }
        let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
        let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        (IpAddr::V4(src), IpAddr::V4(dst), 20, total)
    } else if first >> 4 == 6 {
        let h: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
        // Next header TCP: no extension headers.
        if h[6] != 6 {
            return None;
        }
        let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let total = if payload_len == 0 {
            ip.len()
        } else {
            40 + payload_len
        };
        let addr = |at: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[at..at + 16]);
            Ipv6Addr::from(a)
        };
        (IpAddr::V6(addr(8)), IpAddr::V6(addr(24)), 40, total)
    } else {
        return None;
    };
    // tcp_at <= ip.len() (the header was all there) and tcp_at <= total.
    let tcp = ip.get(tcp_at..total.min(ip.len()))?;
    let t: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let thl = usize::from((t[12] & 0xf0) >> 2);
    let wire_len = total - tcp_at;
    if thl < 20 || tcp.len() < thl || wire_len < thl {
        return None;
    }
    let payload = &tcp[thl..];
    let missing = (wire_len - thl).saturating_sub(payload.len()) as u32;
    let be32 = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    let flags = t[13];
    Some(TcpSegment {
        src: SocketAddr::new(src, u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([t[2], t[3]])),
        seq: be32(4),
        ack: be32(8),
        flags: TcpFlags {
            syn: flags & 0x02 != 0,
            ack: flags & 0x10 != 0,
            fin: flags & 0x01 != 0,
            rst: flags & 0x04 != 0,
        },
        payload,
        missing,
        window: u16::from_be_bytes([t[14], t[15]]),
    })
}

/// The link header of a captured packet → the bytes from its IP header on.
#[inline]
fn ip_of(lt: i32, data: &[u8]) -> Result<&[u8], LinkError> {
    use linktype::*;
    Ok(match lt {
        ETHERNET => {
            let mut off = 12;
            loop {
                let et = be16(data, off).ok_or(LinkError::Malformed("Ethernet"))?;
                match et {
                    ETHERTYPE_VLAN | ETHERTYPE_QINQ => off += 4,
                    ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => break &data[off + 2..],
                    _ => return Err(LinkError::NotTcp),
                }
            }
        }
        LINUX_SLL => match be16(data, 14).ok_or(LinkError::Malformed("SLL"))? {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => &data[16..],
            _ => return Err(LinkError::NotTcp),
        },
        LINUX_SLL2 => match be16(data, 0).ok_or(LinkError::Malformed("SLL2"))? {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 if data.len() >= 20 => &data[20..],
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => return Err(LinkError::Malformed("SLL2")),
            _ => return Err(LinkError::NotTcp),
        },
        NULL | LOOP => {
            let b = data.get(..4).ok_or(LinkError::Malformed("loopback"))?;
            // NULL stores the address family in the capturing host's byte order,
            // LOOP in network order; look at whichever end is non-zero.
            let family = if b[0] == 0 && b[1] == 0 {
                b[3].max(b[2])
            } else {
                b[0].max(b[1])
            };
            match family {
                2 | 24 | 28 | 30 => &data[4..],
                _ => return Err(LinkError::NotTcp),
            }
        }
        RAW | RAW_BSD | RAW_BSD2 | IPV4 | IPV6 => data,
        other => return Err(LinkError::UnsupportedLinkType(other)),
    })
}

fn be16(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]))
}

/// IP header → TCP header; `ip` is the captured bytes from the IP header on.
fn ip_tcp(ip: &[u8]) -> Result<TcpSegment<'_>, LinkError> {
    let version = ip.first().ok_or(LinkError::Malformed("IP"))? >> 4;
    // Addresses, where the TCP header starts, and where the IP packet ends on the wire.
    let (src, dst, tcp_at, total) = match version {
        4 => {
            let h = Ipv4HeaderSlice::from_slice(ip).map_err(|_| LinkError::Malformed("IPv4"))?;
            if h.protocol() != etherparse::IpNumber::TCP {
                return Err(LinkError::NotTcp);
            }
            if h.more_fragments() || u16::from(h.fragments_offset()) != 0 {
                return Err(LinkError::NotTcp);
            }
            let hl = h.slice().len();
            let total = h.total_len() as usize;
            // TSO/GSO packets captured on the sending host may carry total_len 0.
            let total = if total == 0 { ip.len() } else { total };
            if total < hl {
                return Err(LinkError::Malformed("IPv4"));
            }
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                hl,
                total,
            )
        }
        6 => {
            let h = Ipv6HeaderSlice::from_slice(ip).map_err(|_| LinkError::Malformed("IPv6"))?;
            let mut next = h.next_header().0;
            let mut off = 40usize;
            let payload_len = h.payload_length() as usize;
            // Skip hop-by-hop, routing and destination options headers.
            loop {
                match next {
                    6 => break,
                    0 | 43 | 60 => {
                        let nh = *ip.get(off).ok_or(LinkError::Malformed("IPv6"))?;
                        let len = (*ip.get(off + 1).ok_or(LinkError::Malformed("IPv6"))? as usize
                            + 1)
                            * 8;
                        next = nh;
                        off += len;
                    }
                    _ => return Err(LinkError::NotTcp),
                }
            }
            let total = if payload_len == 0 {
                ip.len()
            } else {
                40 + payload_len
            };
            if total < off || off > ip.len() {
                return Err(LinkError::Malformed("IPv6"));
            }
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                off,
                total,
            )
        }
        _ => return Err(LinkError::NotTcp),
    };
    // Both checked above: tcp_at <= total and tcp_at <= ip.len().
    let tcp = &ip[tcp_at..total.min(ip.len())];
    let wire_len = total - tcp_at;
    let t = TcpHeaderSlice::from_slice(tcp).map_err(|_| LinkError::Malformed("TCP"))?;
    let thl = t.slice().len();
    if wire_len < thl {
        return Err(LinkError::Malformed("TCP"));
    }
    let payload = &tcp[thl..];
    let missing = (wire_len - thl).saturating_sub(payload.len()) as u32;
    Ok(TcpSegment {
        src: SocketAddr::new(src, t.source_port()),
        dst: SocketAddr::new(dst, t.destination_port()),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        flags: TcpFlags {
            syn: t.syn(),
            ack: t.ack(),
            fin: t.fin(),
            rst: t.rst(),
        },
        payload,
        missing,
        window: t.window_size(),
    })
}
