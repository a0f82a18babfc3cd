//! Fuzz target: the capture reader on arbitrary bytes taken as a capture file,
//! both ways it reads files: streamed (pipes) and in place (mapped files).
//! Reads every packet until the end or the first error; checks no panic, that
//! packet numbers count up from 1, and that both readers hand out the same
//! packets and end the same way.
#![no_main]

use std::path::Path;

use amqptrace::source::file::{CaptureError, CaptureReader};
use libfuzzer_sys::fuzz_target;

/// Every packet (number, time, link type, bytes) and how the reading ended.
type Outcome = (Vec<(u64, i64, i32, Vec<u8>)>, String);

fn read(opened: Result<CaptureReader<'_>, CaptureError>, len: usize) -> Outcome {
    let mut reader = match opened {
        Ok(r) => r,
        Err(e) => return (Vec::new(), e.to_string()),
    };
    let mut packets = Vec::new();
    // Bounded: a reader that never ends would be a bug of its own.
    for _ in 0..100_000 {
        match reader.next_packet() {
            Ok(Some(packet)) => {
                assert_eq!(packet.frame, packets.len() as u64 + 1);
                assert!(packet.data.len() <= len);
                packets.push((packet.frame, packet.ts.as_nanos(), packet.linktype, packet.data.to_vec()));
            }
            Ok(None) => return (packets, "end".into()),
            Err(e) => return (packets, e.to_string()),
        }
    }
    panic!("reader did not end on a {len}-byte input");
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.pcap");
    let streamed = read(CaptureReader::new(data, path), data.len());
    let in_place = read(CaptureReader::from_bytes(data, path), data.len());
    assert_eq!(streamed, in_place);
});
