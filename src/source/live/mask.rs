//! The credential mask of `capture -w`: the recording of a live interface
//! holds whole packets, so each packet's TCP payload goes through a
//! [`CredentialMask`] of its direction, keyed by the 4-tuple, at its stream
//! offset (from the SYN when seen, else from the first segment). Only the
//! SASL secrets change, byte for byte: every header, length and checksum-less
//! field stays, so the file still parses and tshark still decodes it.
//!
//! Owns the per-flow maskers, bounded; knows nothing of files or the analyzer.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::link;
use crate::redact::{CredentialMask, MASK};

/// Flows followed at once; more and the oldest knowledge is dropped (a flow
/// met again starts from its next segment, as after a hole).
const MAX_FLOWS: usize = 16_384;

struct Flow {
    /// Sequence number of stream offset 0.
    base: u32,
    mask: CredentialMask,
}

/// Maskers of every direction of every TCP flow seen.
#[derive(Default)]
pub struct PacketMask {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
}

impl PacketMask {
    /// `data` with the secrets of its TCP payload masked: borrowed unchanged
    /// for nearly every packet, a masked copy when it carries a secret.
    pub fn apply<'a>(&mut self, linktype: i32, data: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        use std::borrow::Cow;
        let Ok(seg) = link::tcp_segment(linktype, data) else {
            return Cow::Borrowed(data);
        };
        let key = (seg.src, seg.dst);
        if seg.flags.syn {
            self.flows.remove(&key);
        }
        let payload_at = (seg.payload.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        let mut out = Cow::Borrowed(data);
        if !seg.payload.is_empty() && payload_at <= data.len() {
            if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(&key) {
                self.flows.clear();
            }
            let flow = self.flows.entry(key).or_insert_with(|| Flow {
                // After a SYN the first payload byte is at seq + 1 of the SYN,
                // which is this segment's seq when the SYN was seen just before.
                base: seg.seq,
                mask: CredentialMask::new(),
            });
            let offset = u64::from(seg.seq.wrapping_sub(flow.base));
            let ranges = flow.mask.secrets(offset, seg.payload);
            if !ranges.is_empty() {
                let mut copy = data.to_vec();
                for r in ranges {
                    copy[payload_at + r.start..payload_at + r.end].fill(MASK);
                }
                out = Cow::Owned(copy);
            }
        }
        if seg.flags.fin || seg.flags.rst {
            self.flows.remove(&key);
        }
        out
    }
}
