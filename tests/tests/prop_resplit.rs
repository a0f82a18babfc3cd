//! Property: the timeline of a real capture does not depend on how TCP cut its bytes.
//!
//! Every committed capture is decoded once as captured, then again with each TCP
//! segment's payload re-split at random points into several segments (sequence numbers
//! adjusted, flags on the right piece). The events must be identical.

use std::path::Path;

use amqptrace::event::Event;
use amqptrace::link::{TcpFlags, TcpSegment};
use amqptrace::stream::{StreamConfig, Tracker};
use amqptrace::tcp::{Reassembler, TcpOutput};
use proptest::prelude::*;

use crate::util;

/// xorshift64*: a tiny deterministic generator driven by proptest's seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn decode(path: &Path, mut split: Option<Rng>) -> Vec<Event> {
    let mut reassembler = Reassembler::new();
    let mut tracker = Tracker::new(StreamConfig::default());
    let mut events = Vec::new();
    let last = util::for_each_tcp_segment(path, |p, seg| {
        let mut feed = |s: &TcpSegment<'_>| {
            reassembler.handle(p, s, &mut |o: TcpOutput<'_>| {
                tracker.handle(o, &mut |e| events.push(e))
            });
        };
        match split.as_mut() {
            Some(rng) if seg.payload.len() > 1 && !seg.flags.syn => {
                let mut cuts: Vec<usize> = (0..1 + rng.next() % 4)
                    .map(|_| 1 + (rng.next() as usize) % (seg.payload.len() - 1))
                    .collect();
                cuts.sort();
                cuts.dedup();
                cuts.push(seg.payload.len());
                let mut start = 0;
                for (i, &end) in cuts.iter().enumerate() {
                    let lastpiece = i == cuts.len() - 1;
                    let piece = TcpSegment {
                        seq: seg.seq.wrapping_add(start as u32),
                        payload: &seg.payload[start..end],
                        missing: if lastpiece { seg.missing } else { 0 },
                        flags: TcpFlags {
                            fin: seg.flags.fin && lastpiece,
                            rst: seg.flags.rst && lastpiece,
                            ..seg.flags
                        },
                        ..*seg
                    };
                    feed(&piece);
                    start = end;
                }
            }
            _ => feed(seg),
        }
    });
    reassembler.finish(last, &mut |o: TcpOutput<'_>| {
        tracker.handle(o, &mut |e| events.push(e))
    });
    events
}

#[test]
fn there_are_captures_to_check() {
    assert!(
        util::committed_captures().len() >= 5,
        "expected committed captures under captures/"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn resplitting_tcp_payloads_changes_nothing(seed in 1u64..u64::MAX) {
        for path in util::committed_captures() {
            let whole = decode(&path, None);
            prop_assert!(!whole.is_empty(), "{} decodes to nothing", path.display());
            let resplit = decode(&path, Some(Rng(seed)));
            if whole != resplit {
                let at = whole.iter().zip(&resplit).position(|(a, b)| a != b).unwrap_or(whole.len().min(resplit.len()));
                prop_assert!(false, "{}: events differ at index {} (of {} vs {}):\n whole:   {:?}\n resplit: {:?}",
                    path.display(), at, whole.len(), resplit.len(), whole.get(at), resplit.get(at));
            }
        }
    }
}
