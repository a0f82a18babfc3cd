//! Property: the timeline of a real capture does not depend on how TCP cut its bytes.
//!
//! Every committed capture is decoded once as captured, then again with each TCP
//! segment's payload re-split at random points into several segments (sequence numbers
//! adjusted, flags on the right piece). The events must be identical.
//!
//! And a snaplen invents nothing: decoded again with every segment's payload cut
//! to a random length (the rest counted as missing, as a capture's snaplen does),
//! each frame of the cut timeline is one of the whole timeline's, in order, per
//! connection and direction: the same channel and kind, every field it has equal
//! to the whole frame's, and, unless marked `truncated`, no field missing.

use std::path::Path;

use std::collections::BTreeMap;

use amqptrace::event::{Event, EventKind};
use amqptrace::link::{TcpFlags, TcpSegment};
use amqptrace::stream::{StreamConfig, Tracker};
use amqptrace::tcp::{Reassembler, TcpOutput};
use proptest::prelude::*;
use serde_json::Value;

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

/// How `decode` changes each segment before reassembly.
enum Change {
    /// Re-split the payload at random points.
    Split(Rng),
    /// Keep at most this many payload bytes, the rest missing (a snaplen).
    Snap(usize),
}

fn decode(path: &Path, split: Option<Rng>) -> Vec<Event> {
    decode_with(path, split.map(Change::Split))
}

fn decode_with(path: &Path, mut change: Option<Change>) -> Vec<Event> {
    let mut reassembler = Reassembler::new();
    let mut tracker = Tracker::new(StreamConfig::default());
    let mut events = Vec::new();
    let last = util::for_each_tcp_segment(path, |p, seg| {
        let mut feed = |s: &TcpSegment<'_>| {
            reassembler.handle(p, s, &mut |o: TcpOutput<'_>| {
                tracker.handle(o, &mut |e| events.push(e))
            });
        };
        match change.as_mut() {
            Some(Change::Snap(snap)) => {
                let kept = seg.payload.len().min(*snap);
                feed(&TcpSegment {
                    payload: &seg.payload[..kept],
                    missing: seg.missing + (seg.payload.len() - kept) as u32,
                    ..*seg
                });
            }
            Some(Change::Split(rng)) if seg.payload.len() > 1 && !seg.flags.syn => {
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

/// The frames of a timeline per (conn, dir), as JSON objects.
fn frames_by_direction(events: &[Event]) -> BTreeMap<(String, &'static str), Vec<Value>> {
    let mut out: BTreeMap<(String, &'static str), Vec<Value>> = BTreeMap::new();
    for e in events {
        if matches!(e.kind, EventKind::Frame { .. }) {
            let mut v = serde_json::to_value(e).expect("an event serialises");
            if let Some(o) = v.as_object_mut() {
                // Where a frame is reported is not a value of it: a frame the
                // snaplen cut is reported at the packet that cut it.
                o.remove("frame");
                o.remove("ts");
            }
            out.entry((e.conn.to_string(), e.dir.as_str()))
                .or_default()
                .push(v);
        }
    }
    out
}

/// Whether `cut` says nothing `whole` does not: every field it has is the
/// same in `whole`; a frame not marked truncated has all of whole's fields.
fn says_no_more(cut: &Value, whole: &Value) -> bool {
    let (Some(c), Some(w)) = (cut.as_object(), whole.as_object()) else {
        return false;
    };
    let truncated = c.get("truncated") == Some(&Value::Bool(true));
    let marker = |k: &str| k == "truncated" || k == "missing_bytes";
    c.iter().all(|(k, v)| marker(k) || w.get(k) == Some(v))
        && (truncated || w.keys().all(|k| c.contains_key(k)))
}

/// The first frame of the cut timeline that is no frame of the whole one (in order).
fn invented(whole: &[Event], cut: &[Event]) -> Option<String> {
    let whole = frames_by_direction(whole);
    for (key, frames) in frames_by_direction(cut) {
        let candidates = whole.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let mut at = 0;
        for f in &frames {
            match candidates[at..].iter().position(|w| says_no_more(f, w)) {
                Some(i) => at += i + 1,
                None => {
                    return Some(format!(
                        "{} {}: {f} matches no frame of the whole timeline after its #{at}: {:?}",
                        key.0,
                        key.1,
                        candidates.get(at)
                    ))
                }
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn a_snaplen_invents_no_value(snap in 0usize..200) {
        let mut cut_frames = 0;
        for path in util::committed_captures() {
            let whole = decode(&path, None);
            let cut = decode_with(&path, Some(Change::Snap(snap)));
            cut_frames += cut.iter().filter(|e| matches!(&e.kind, EventKind::Frame { frame, .. } if frame.cut().is_some())).count();
            if let Some(what) = invented(&whole, &cut) {
                prop_assert!(false, "{} cut at {} payload bytes: {}", path.display(), snap, what);
            }
        }
        // Below a frame header and a method's ids nothing can be read of a cut frame.
        prop_assert!(snap < 11 || cut_frames > 0, "no frame was cut at {} bytes", snap);
    }
}
