//! Fuzz target: the capture reader on arbitrary bytes taken as a capture file.
//! Reads every packet until the end or the first error; checks no panic and
//! that packet numbers count up from 1.
#![no_main]

use std::path::Path;

use amqptrace::capture::CaptureReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(data, Path::new("fuzz.pcap")) else {
        return;
    };
    let mut expected = 1;
    // Bounded: a reader that never ends would be a bug of its own.
    for _ in 0..100_000 {
        match reader.next_packet() {
            Ok(Some(packet)) => {
                assert_eq!(packet.frame, expected);
                assert!(packet.data.len() <= data.len());
                expected += 1;
            }
            Ok(None) => return,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
    panic!("reader did not end on a {}-byte input", data.len());
});
