//! The proxy's pcapng recording (`proxy --pcap`, `run`): the forwarders'
//! trace messages written as the two TCP legs of each proxied connection, with
//! the credentials the client sends masked. Built on [`PcapngWriter`], which
//! synthesises the packets; the legs are named and aliased as
//! [`crate::source::file::legs`] says, so that the capture reader reads each
//! connection once.

use std::collections::HashMap;
use std::io::{self, Write};

use super::pcapng::InterfaceDesc;
use super::PcapngWriter;
use crate::event::{Dir, Timestamp};
use crate::redact::CredentialMask;
use crate::source::file::{LegAlias, BROKER_LEG_IF_NAME, CLIENT_LEG_IF_NAME};
use crate::source::proxy::{TraceKind, TraceMsg};

/// Records trace messages as pcapng: two legs per proxied connection,
/// client↔proxy (leg `2·id`, on interface 0, named
/// [`CLIENT_LEG_IF_NAME`]) and proxy↔broker (leg `2·id+1`, on interface 1,
/// named [`BROKER_LEG_IF_NAME`], its SYN commented with the client it
/// carries, see [`LegAlias`]), with the addresses the proxy's sockets really
/// have. `analyze` reads such a file once per connection, under the names the
/// live proxy shows; Wireshark shows both legs.
///
/// Unless told to keep them, the SASL secrets the client sends (start-ok's
/// password, secure-ok, update-secret) are masked in the recorded copy
/// ([`CredentialMask`]); forwarding never sees this. [`PcapRecorder::finish`]
/// writes when the recording stopped.
pub struct PcapRecorder<W: Write> {
    w: PcapngWriter<W>,
    next: HashMap<u64, [u64; 2]>,
    /// Per connection, the masker of its client→broker stream; `None` when credentials are kept.
    masks: Option<HashMap<u64, CredentialMask>>,
    scratch: Vec<u8>,
}

impl<W: Write> PcapRecorder<W> {
    /// A recording that starts at `start`; `keep_credentials` records the
    /// client's bytes as they were, secrets included.
    pub fn new(out: W, start: Timestamp, keep_credentials: bool) -> io::Result<Self> {
        let interfaces = [
            InterfaceDesc {
                name: CLIENT_LEG_IF_NAME,
                description: "amqptrace proxy: client <-> proxy leg",
            },
            InterfaceDesc {
                name: BROKER_LEG_IF_NAME,
                description: "amqptrace proxy: proxy <-> broker leg",
            },
        ];
        Ok(PcapRecorder {
            w: PcapngWriter::with_interfaces(out, &interfaces, start)?,
            next: HashMap::new(),
            masks: (!keep_credentials).then(HashMap::new),
            scratch: Vec::new(),
        })
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Ends the recording: it stopped at `end` (written as each interface's `isb_endtime`).
    pub fn finish(self, end: Timestamp) -> io::Result<W> {
        self.w.finish(end)
    }

    pub fn record(&mut self, msg: &TraceMsg) -> io::Result<()> {
        let info = &*msg.conn;
        let (front, back) = (info.id * 2, info.id * 2 + 1);
        let ts = msg.ts;
        if matches!(msg.kind, TraceKind::UpstreamFailed { .. }) {
            // The client leg was accepted and then reset by the proxy.
            self.w
                .open_on(front, 0, info.client, info.listen, ts, None)?;
            self.w.reset(front, false, ts)?;
            return Ok(());
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.next.entry(info.id) {
            if matches!(msg.kind, TraceKind::Closed) {
                return Ok(());
            }
            e.insert([0, 0]);
            self.w
                .open_on(front, 0, info.client, info.listen, ts, None)?;
            if let Some(local) = info.upstream_local {
                let alias = LegAlias {
                    client: info.client,
                    via: local,
                };
                self.w
                    .open_on(back, 1, local, info.upstream, ts, Some(&alias.comment()))?;
            }
        }
        // Client→broker bytes are sent by the client on the front leg and by
        // the proxy (the back leg's client) on the back leg.
        let c2s = msg.dir == Dir::C2S;
        let d = msg.dir as usize;
        match &msg.kind {
            TraceKind::Open | TraceKind::UpstreamFailed { .. } => {}
            TraceKind::Data { offset, bytes } => {
                if let Some(next) = self.next.get_mut(&info.id) {
                    if *offset > next[d] {
                        let hole = offset - next[d];
                        self.w.skip(front, c2s, hole);
                        self.w.skip(back, c2s, hole);
                    }
                    next[d] = offset + bytes.len() as u64;
                }
                let mut recorded: &[u8] = bytes;
                if let (true, Some(masks)) = (c2s, self.masks.as_mut()) {
                    let mask = masks.entry(info.id).or_default();
                    let secrets = mask.secrets(*offset, bytes);
                    if !secrets.is_empty() {
                        self.scratch.clear();
                        self.scratch.extend_from_slice(bytes);
                        for r in secrets {
                            self.scratch[r].fill(crate::redact::MASK);
                        }
                        recorded = &self.scratch;
                    }
                }
                // The sending side's leg first: the proxy read before it wrote.
                let (first, second) = if c2s { (front, back) } else { (back, front) };
                self.w.data(first, c2s, recorded, ts)?;
                self.w.data(second, c2s, recorded, ts)?;
            }
            TraceKind::Fin { .. } => {
                let (first, second) = if c2s { (front, back) } else { (back, front) };
                self.w.fin(first, c2s, ts)?;
                self.w.fin(second, c2s, ts)?;
            }
            TraceKind::Reset { .. } => {
                // The failed side reset its leg; the proxy reset the other.
                let (first, second) = if c2s { (front, back) } else { (back, front) };
                // On both legs the RST comes from the same end: the client and
                // the proxy (front leg's client, back leg's client) for c2s, the
                // broker and the proxy (servers) for s2c.
                self.w.reset(first, c2s, ts)?;
                self.w.reset(second, c2s, ts)?;
            }
            TraceKind::WriteStalled | TraceKind::WriteResumed => {
                // The receiver of `dir` stopped reading (or reads again): its zero
                // window on the leg it receives on, and the proxy's on the leg it
                // stopped reading from.
                let zero = matches!(msg.kind, TraceKind::WriteStalled);
                self.w.window(front, !c2s, zero, ts)?;
                self.w.window(back, !c2s, zero, ts)?;
            }
            TraceKind::Closed => {
                // As in the timeline: no FIN the peers did not send.
                self.w.forget(front);
                self.w.forget(back);
                self.next.remove(&info.id);
                if let Some(m) = self.masks.as_mut() {
                    m.remove(&info.id);
                }
            }
        }
        Ok(())
    }
}
