//! Fuzz target: the sans-IO frame decoder on arbitrary bytes.
//!
//! The first input byte steers the run: bits 0-4 the chunk size (1..=32
//! bytes per push), bit 5 a body prefix, bit 6 gap() and cut() (a snaplen
//! hole after the chunk) calls between chunks,
//! bit 7 a small frame limit (so oversize frames are reachable within
//! libFuzzer's input lengths). The rest is the stream. Checks: no panic,
//! buffering bounded by the frame limit, every item serialises.
#![no_main]

use amqptrace::amqp::{DecodedItem, DecoderConfig, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&steer, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(steer & 0x1f) + 1;
    let cfg = DecoderConfig {
        max_frame_size: if steer & 0x80 != 0 { 512 } else { 1 << 16 },
        body_prefix: if steer & 0x20 != 0 { 16 } else { 0 },
        ..DecoderConfig::default()
    };
    let bound = cfg.max_frame_size as usize + 8;
    let mut decoder = FrameDecoder::new(cfg);
    let mut last_offset = 0;
    for (i, piece) in stream.chunks(chunk).enumerate() {
        if steer & 0x40 != 0 && i % 5 == 4 {
            // Size of the hole taken from the data, sometimes unknown.
            let len = piece.first().map(|&b| u64::from(b)).filter(|&b| b != 0xff);
            decoder.gap(len);
        }
        decoder.push(piece);
        let mut check = |decoded: amqptrace::amqp::Decoded| {
            assert!(decoded.offset >= last_offset, "offsets go backwards");
            last_offset = decoded.offset;
            if let DecodedItem::Frame { frame, .. } = &decoded.item {
                let json = serde_json::to_string(frame);
                assert!(json.is_ok(), "{json:?}");
            }
        };
        while let Some(decoded) = decoder.poll() {
            check(decoded);
        }
        if steer & 0x40 != 0 && i % 5 == 2 {
            let missing = piece.last().map_or(1, |&b| u64::from(b) * 7);
            let unknown = decoder.cut(missing, &mut check);
            assert!(unknown <= missing, "{unknown} unknown of {missing} missing");
        }
        assert!(decoder.buffered() <= bound, "{} buffered", decoder.buffered());
    }
});
