//! The event handlers: how each timeline event changes the analyzer's state.
//! [`Analyzer::handle`] finds the connection and hands the event here; a method
//! goes to the handler of its AMQP class (`connection`, `channel`,
//! `queue` with `exchange`, `basic` with `consume`, `publish`, `delivery` and
//! `settle`). Handlers write the state records and the routing; they decide no
//! verdict.

mod basic;
mod channel;
mod connection;
mod consume;
mod cut;
mod delivery;
mod errors;
mod publish;
mod queue;
mod settle;

use std::hash::{BuildHasher, Hash};
use std::net::{SocketAddr, SocketAddrV4};

use rustc_hash::FxBuildHasher;

use crate::event::{Conn, Dir, Event, EventKind, Frame, Method, MethodArgs, MethodKind, Text};

use super::state::{dir_index, ChannelState, ConnState, FrameName, Mark};
use super::Analyzer;

pub(crate) use cut::CutSeen;

/// FxHash of a small key (a route, a message fingerprint): SipHash's DoS
/// resistance buys nothing for a tool reading a capture, at 3-5x the cost.
fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    FxBuildHasher.hash_one(v)
}

/// The hash that ties a delivered message to its publish destination.
fn route_hash(a: &MethodArgs) -> u64 {
    hash_of(&(
        a.exchange.as_deref().unwrap_or(""),
        a.routing_key.as_deref().unwrap_or(""),
    ))
}

/// Whether two of the decoder's shared strings are the same object.
fn same(a: &Text, b: &Text) -> bool {
    std::sync::Arc::ptr_eq(a, b)
}

/// Slots of the cache of connection indices (`Analyzer::recent_conns`): 128,
/// not 64, because Linux gives connect() even ports, so that `port % 64` used
/// half the slots and the storm's 12 connections shared 9 of them (6 % of
/// events missed; callgrind, storm slice json: 152.55 -> 151.51 M).
pub(super) const CONN_SLOTS: usize = 128;

/// An IPv4 4-tuple packed in two words, the key of that cache: two compares,
/// where comparing two `Conn`s field by field took eight and their variants'
/// checks (callgrind, storm slice json: 147.57 -> 145.78 M). Other 4-tuples (IPv6) have
/// none: they are looked up in the map at every event, a cost only IPv6
/// captures pay, where a key of theirs would cost every IPv4 event a compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnKey {
    /// Client address, client port, broker port.
    ends: u64,
    broker: u32,
}

impl ConnKey {
    fn of(c: &Conn) -> Option<ConnKey> {
        // The addresses' octets in the machine's order: a key is only compared,
        // so the byte swaps of `to_bits` would be wasted.
        let ip = |a: &SocketAddrV4| u32::from_ne_bytes(a.ip().octets());
        match (c.client, c.broker) {
            (SocketAddr::V4(a), SocketAddr::V4(b)) => Some(ConnKey {
                ends: u64::from(ip(&a)) << 32 | u64::from(a.port()) << 16 | u64::from(b.port()),
                broker: ip(&b),
            }),
            _ => None,
        }
    }

    /// Its slot in the cache: the client's ephemeral ports differ from
    /// connection to connection, mostly in their low bits (the broker's port
    /// too would cost 6 instructions an event, for nothing on one broker).
    fn slot(self) -> usize {
        (self.ends >> 16) as usize % CONN_SLOTS
    }
}

impl Analyzer {
    /// Applies one event of connection `ci` to the state.
    pub(super) fn on_event(&mut self, ci: u32, ev: &Event, mark: Mark) {
        let EventKind::Frame { channel, frame } = &ev.kind else {
            return self.on_connection_event(ci, ev, mark);
        };
        if ev.dir == Dir::C2S && *channel > 0 {
            self.trail_client_frame(ci, *channel, mark, frame);
        }
        let c = &mut self.conns[ci as usize];
        c.last_frame[dir_index(ev.dir)] = Some((mark, FrameName::of(frame)));
        match frame {
            Frame::Method(m) => self.on_method(ci, ev.dir, mark, *channel, m),
            Frame::ContentHeader(h) if ev.dir == Dir::S2C => {
                self.on_content_header(ci, *channel, h);
                self.on_return_header(ci, *channel, h);
            }
            Frame::ContentHeader(h) => self.on_publish_header(ci, *channel, h),
            _ => {}
        }
    }

    /// The events of a connection that are not frames: TCP's, gaps, errors and
    /// the protocol header. Out of line: kept in `on_event`, they grew the frame
    /// and the saved registers of every event's call (callgrind, storm slice json:
    /// 151.51 -> 148.61 M).
    #[cold]
    #[inline(never)]
    fn on_connection_event(&mut self, ci: u32, ev: &Event, mark: Mark) {
        match &ev.kind {
            EventKind::TcpOpen => self.conns[ci as usize].saw_open = true,
            EventKind::TcpClose | EventKind::TcpReset => self.on_tcp_end(ci, ev, mark),
            EventKind::TcpZeroWindow | EventKind::TcpWindowOpen => {
                let zero = matches!(ev.kind, EventKind::TcpZeroWindow);
                self.conns[ci as usize].publisher.window(ev.dir, mark, zero);
            }
            EventKind::Gap { bytes, reason } => self.on_gap(ci, ev.dir, mark, *bytes, *reason),
            EventKind::Error { error, .. } => {
                self.trail_error(ci, ev.dir, mark, error);
                let c = &mut self.conns[ci as usize];
                c.errors += 1;
                if c.first_error.is_none() {
                    c.first_error = Some((mark, ev.dir, error.to_string()));
                }
            }
            EventKind::ProtocolHeader {
                protocol,
                supported,
                ..
            } => {
                self.trail_protocol(ci, ev.dir, mark, protocol);
                let c = &mut self.conns[ci as usize];
                c.saw_handshake = true;
                if !supported {
                    c.unsupported_protocol = Some(protocol.clone());
                }
            }
            EventKind::Frame { .. } => {}
        }
    }

    pub(super) fn conn_index(&mut self, ev: &Event) -> Option<u32> {
        // The connections of a capture interleave (24 on the storm capture: a
        // one-entry cache of the last connection missed 30 % of events, each
        // miss hashing the 4-tuple). A direct-mapped cache by port hits nearly
        // always, for one compare of the 4-tuple (callgrind, storm slice json:
        // 198.0 -> 194.8 M).
        let Some(key) = ConnKey::of(&ev.conn) else {
            return self.conn_index_slow(ev);
        };
        let slot = key.slot();
        if let Some((k, i)) = self.recent_conns[slot] {
            if k == key && !matches!(ev.kind, EventKind::TcpOpen) {
                return Some(i);
            }
        }
        let i = self.conn_index_slow(ev)?;
        self.recent_conns[slot] = Some((key, i));
        Some(i)
    }

    // Out of line, as a miss of the cache is rare (IPv6 aside).
    #[cold]
    #[inline(never)]
    fn conn_index_slow(&mut self, ev: &Event) -> Option<u32> {
        let syn = matches!(ev.kind, EventKind::TcpOpen);
        if let Some(&i) = self.by_conn.get(&ev.conn) {
            let c = &self.conns[i as usize];
            // A SYN on a finished 4-tuple is a new connection reusing the ports.
            let reused = syn && c.ended.is_some();
            if !reused {
                return Some(i);
            }
        } else if !syn && self.retired.recently(&ev.conn) {
            return None;
        }
        let i = self.conns.len() as u32;
        let serial = self.next_serial;
        self.next_serial += 1;
        self.conns.push(ConnState::new(serial, ev.conn, ev));
        self.by_conn.insert(ev.conn, i);
        Some(i)
    }

    fn channel_mut(&mut self, ci: u32, ch: u16) -> &mut ChannelState {
        self.conns[ci as usize].channels.get_or_insert(ch)
    }

    /// Hands the method to its handler: a whole delivery or settle, nearly every
    /// method of a busy consumer, straight to it, as the errors trail notes
    /// neither before its handler; any other in `on_other_method`.
    // Inline, with the rest out of line: the hot two cost no frame of their own,
    // nor the dispatch by class (callgrind, storm slice json: 129.12 -> 125.40 M).
    #[inline(always)]
    fn on_method(&mut self, ci: u32, dir: Dir, mark: Mark, ch: u16, m: &Method) {
        if m.args.truncated.is_none() {
            match (dir, m.method) {
                (Dir::S2C, MethodKind::BasicDeliver) => {
                    return self.on_deliver(ci, ch, mark, &m.args)
                }
                (
                    Dir::C2S,
                    MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject,
                ) => {
                    self.count_client_method(ci, m.method);
                    return self.settle(ci, ch, mark, Some(m));
                }
                _ => {}
            }
        }
        self.on_other_method(ci, dir, mark, ch, m)
    }

    fn count_client_method(&mut self, ci: u32, method: MethodKind) {
        let n = &mut self.conns[ci as usize].client_methods[method as usize];
        *n = n.saturating_add(1);
    }

    /// Counts the client's methods, then hands the method to its class's handler.
    #[inline(never)]
    fn on_other_method(&mut self, ci: u32, dir: Dir, mark: Mark, ch: u16, m: &Method) {
        self.trail_method(ci, dir, mark, ch, m);
        if dir == Dir::C2S {
            self.count_client_method(ci, m.method);
            if !matches!(
                m.method,
                MethodKind::BasicAck | MethodKind::BasicNack | MethodKind::BasicReject
            ) {
                self.conns[ci as usize].last_client_method = Some((mark, m.method));
            }
        }
        if m.args.truncated.is_some() && self.on_cut_method(ci, dir, mark, ch, m) {
            return;
        }
        // The AMQP class: connection 10, channel 20, exchange 40, queue 50,
        // basic 60, confirm 85 (RabbitMQ's); tx (90) changes nothing here.
        match m.method.class_id() {
            10 => self.on_connection(ci, dir, mark, m),
            20 | 85 => self.on_channel(ci, dir, mark, ch, m),
            40 | 50 => self.on_queue(ci, dir, mark, ch, m),
            60 => self.on_basic(ci, dir, mark, ch, m),
            _ => {}
        }
    }
}
