//! The connection class (start, tune, open, close, blocked) and the ends of a
//! connection: connection.close, close-ok, FIN, RST, and the holes in its byte
//! stream.

use crate::event::{Dir, Event, EventKind, GapReason, Method, MethodKind};

use super::super::state::{CloseRec, ConsumerEnd, GapRec, Mark, TcpEnd, TcpEndKind, MAX_GAPS_KEPT};
use super::super::Analyzer;

impl Analyzer {
    pub(super) fn on_connection(&mut self, ci: u32, dir: Dir, mark: Mark, m: &Method) {
        let a = &m.args;
        match (dir, m.method) {
            (Dir::S2C, MethodKind::ConnectionStart) => {
                let c = &mut self.conns[ci as usize];
                c.saw_handshake = true;
                c.handshake.broker_product = a.product.clone();
                c.handshake.broker_version = a.version.clone();
            }
            (Dir::C2S, MethodKind::ConnectionStartOk) => {
                let c = &mut self.conns[ci as usize];
                c.handshake.client_product = a.product.clone();
                c.handshake.client_version = a.version.clone();
                c.handshake.user = a.user.clone();
                c.handshake.connection_name = a.connection_name.clone();
            }
            (Dir::S2C, MethodKind::ConnectionTune) => {
                // The broker's proposal stands until the client answers.
                let c = &mut self.conns[ci as usize];
                c.handshake.heartbeat = c.handshake.heartbeat.or(a.heartbeat);
                c.handshake.frame_max = c.handshake.frame_max.or(a.frame_max);
            }
            (Dir::C2S, MethodKind::ConnectionTuneOk) => {
                // The client's answer is what both peers use.
                let c = &mut self.conns[ci as usize];
                c.handshake.heartbeat = a.heartbeat.or(c.handshake.heartbeat);
                c.handshake.frame_max = a.frame_max.or(c.handshake.frame_max);
            }
            (Dir::C2S, MethodKind::ConnectionOpen) => {
                self.conns[ci as usize].handshake.vhost = a.vhost.clone();
            }
            (dir, MethodKind::ConnectionClose) => {
                let c = &mut self.conns[ci as usize];
                if c.close.is_none() {
                    c.close = Some(CloseRec {
                        at: mark,
                        by: dir,
                        reply_code: a.reply_code.unwrap_or(0),
                        reply_text: a.reply_text.clone().unwrap_or_default(),
                        failing: a.failing_method,
                    });
                }
                self.end_connection(ci, mark, Some(dir));
            }
            (_, MethodKind::ConnectionCloseOk) => {
                let c = &mut self.conns[ci as usize];
                c.close_ok.get_or_insert(mark);
                self.end_connection(ci, mark, None);
            }
            (Dir::S2C, MethodKind::ConnectionBlocked) => {
                let c = &mut self.conns[ci as usize];
                if c.blocked.is_none() {
                    c.blocked = Some((mark, a.reason.clone().unwrap_or_default()));
                }
            }
            (Dir::S2C, MethodKind::ConnectionUnblocked) => {
                let c = &mut self.conns[ci as usize];
                if let Some((since, reason)) = c.blocked.take() {
                    c.last_unblock = Some((since, mark, reason));
                }
            }
            _ => {}
        }
    }

    /// FIN or RST: what was still in flight, then the end of the connection.
    pub(super) fn on_tcp_end(&mut self, ci: u32, ev: &Event, mark: Mark) {
        let kind = if matches!(ev.kind, EventKind::TcpReset) {
            TcpEndKind::Rst
        } else {
            TcpEndKind::Fin
        };
        let c = &self.conns[ci as usize];
        if c.tcp_end.is_none() {
            let live_consumers = c
                .consumers
                .iter()
                .filter(|&&i| self.consumers[i as usize].end.is_none())
                .count() as u32;
            let unacked = c.channels.values().map(|st| st.live_unacked).sum();
            self.conns[ci as usize].tcp_end = Some(TcpEnd {
                at: mark,
                dir: ev.dir,
                kind,
                live_consumers,
                unacked,
            });
        }
        self.end_connection(ci, mark, None);
    }

    /// A hole in the byte stream: counted, its bytes summed, the first few kept.
    pub(super) fn on_gap(
        &mut self,
        ci: u32,
        dir: Dir,
        mark: Mark,
        bytes: Option<u64>,
        reason: GapReason,
    ) {
        let c = &mut self.conns[ci as usize];
        c.gap_count += 1;
        match bytes {
            Some(b) => c.gap_bytes += b,
            None => c.gap_bytes_unknown = true,
        }
        if reason == GapReason::MidConnection {
            c.start_unseen = true;
        }
        if c.gaps.len() < MAX_GAPS_KEPT {
            c.gaps.push(GapRec {
                at: mark,
                dir,
                bytes,
                reason,
            });
        }
    }

    /// The connection is over (close, close-ok, FIN or RST): its consumers end
    /// and its per-channel state is released; the summary stays.
    pub(super) fn end_connection(&mut self, ci: u32, mark: Mark, close_by: Option<Dir>) {
        self.trail_connection_end(ci, mark);
        let c = &mut self.conns[ci as usize];
        let end = match (close_by, c.close.as_ref()) {
            (Some(by), _) => ConsumerEnd::ConnectionClosed { at: mark, by },
            (None, Some(cl)) => ConsumerEnd::ConnectionClosed {
                at: cl.at,
                by: cl.by,
            },
            (None, None) => ConsumerEnd::TcpEnded(mark),
        };
        if c.ended.is_none() {
            c.ended = Some(mark);
        }
        if close_by.is_some() {
            // connection.close: wait for close-ok or the TCP end to drop the state,
            // but the consumers are over now.
        } else {
            for (ch, st) in c.channels.drain() {
                if let Some(f) = st.flow_paused {
                    c.flows_paused.push((ch, f));
                }
            }
        }
        for &i in &c.consumers {
            let cs = &mut self.consumers[i as usize];
            if cs.end.is_none() {
                cs.end = Some(end);
            }
        }
    }
}
