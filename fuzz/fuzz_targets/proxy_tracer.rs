//! Fuzz target: the proxy's trace path on arbitrary sequences of trace
//! messages — what the forwarders hand the tracer thread: data copies at
//! stream offsets (holes where a copy was dropped), FINs, resets, closes, in
//! any order and interleaving over a few connections. Each message goes to
//! `Tracer::handle` (detection, decoding), its events to the analyzer, and to
//! the `--pcap` recorder; live analyses on ticks; a final analysis at the end.
//! The recording must read back as a capture without error.
//!
//! Input: a sequence of ops, each a header byte then its payload:
//!   bits 0-1  connection slot (4 slots; after `Closed` a slot gets a new
//!             connection: new id, new client port)
//!   bit 2     direction (0 client→broker, 1 broker→client)
//!   bits 3-5  0-3 data: 2 bytes big-endian length, then that many bytes;
//!             4 FIN; 5 reset; 6 closed; 7 a dropped copy: the next byte is
//!             the size of the hole left in the stream
//!   bits 6-7  time step before the op: 1 ms, 1 s, 40 s (past the default
//!             stall thresholds), or 0 plus a live tick
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use amqptrace::analyze::{write_verdict_block, Analyzer, AnalyzerConfig};
use amqptrace::event::{Dir, Event, Timestamp};
use amqptrace::sink::PcapRecorder;
use amqptrace::source::file::CaptureReader;
use amqptrace::source::proxy::{ConnInfo, TraceKind, TraceMsg, Tracer};
use amqptrace::stream::StreamConfig;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const BROKER_PORT: u16 = 5672;

fn conn(slot: usize, generation: u64) -> Arc<ConnInfo> {
    let ip = |last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    Arc::new(ConnInfo {
        id: 1 + slot as u64 + 4 * generation,
        client: SocketAddr::new(ip(1), 40000 + (slot as u16) * 1000 + (generation % 1000) as u16),
        listen: SocketAddr::new(ip(1), 5673),
        upstream_local: Some(SocketAddr::new(ip(1), 30000 + slot as u16)),
        upstream: SocketAddr::new(ip(2), BROKER_PORT),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut tracer = Tracer::new(StreamConfig::default());
    let mut analyzer = Analyzer::new(AnalyzerConfig::default());
    let mut recorder = PcapRecorder::new(Vec::new()).expect("writing to a Vec");
    let mut generation = [0u64; 4];
    let mut offsets = [[0u64; 2]; 4];
    let mut ts = Timestamp::from_secs_nanos(1_700_000_000, 0);
    let mut rest = data;
    while let Some((&h, tail)) = rest.split_first() {
        rest = tail;
        let slot = usize::from(h & 3);
        let dir = if h & 4 == 0 { Dir::C2S } else { Dir::S2C };
        let d = dir as usize;
        let mut tick = false;
        ts = Timestamp(
            ts.as_nanos()
                + match h >> 6 {
                    0 => 1_000_000,
                    1 => 1_000_000_000,
                    2 => 40_000_000_000,
                    _ => {
                        tick = true;
                        0
                    }
                },
        );
        let kind = match (h >> 3) & 7 {
            0..=3 => {
                let len = match rest {
                    [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                    _ => 0,
                };
                rest = rest.get(2..).unwrap_or_default();
                let len = len.min(rest.len());
                let (bytes, tail) = rest.split_at(len);
                rest = tail;
                let offset = offsets[slot][d];
                offsets[slot][d] += len as u64;
                TraceKind::Data {
                    offset,
                    bytes: Bytes::copy_from_slice(bytes),
                }
            }
            4 => TraceKind::Fin {
                offset: offsets[slot][d],
            },
            5 => TraceKind::Reset {
                error: "connection reset by peer".into(),
            },
            6 => TraceKind::Closed,
            _ => {
                let hole = rest.first().copied().unwrap_or(1);
                rest = rest.get(1..).unwrap_or_default();
                offsets[slot][d] += u64::from(hole);
                continue;
            }
        };
        let closed = matches!(kind, TraceKind::Closed);
        let msg = TraceMsg {
            conn: conn(slot, generation[slot]),
            dir,
            ts,
            kind,
        };
        recorder.record(&msg).expect("writing to a Vec");
        tracer.handle(&msg, &mut |ev: Event| analyzer.handle(&ev));
        if closed {
            generation[slot] += 1;
            offsets[slot] = [0, 0];
        }
        if tick {
            let a = analyzer.live_analysis(ts);
            assert!(serde_json::to_string(&a).is_ok());
        }
    }
    let analysis = analyzer.live_analysis(ts);
    assert!(serde_json::to_string(&analysis).is_ok());
    let mut text = Vec::new();
    write_verdict_block(&analysis, &mut text).expect("writing to a Vec");

    // The recording reads back: every packet, no damage.
    let pcapng = recorder.finish().expect("writing to a Vec");
    let mut reader = CaptureReader::from_bytes(&pcapng[..], std::path::Path::new("fuzz.pcapng"))
        .expect("the recording opens as a capture");
    loop {
        match reader.next_packet() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("the recording does not read back: {e}"),
        }
    }
});
