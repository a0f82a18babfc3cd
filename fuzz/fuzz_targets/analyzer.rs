//! Fuzz target: arbitrary bytes as a capture file, through the whole offline
//! path — capture reader, TCP reassembly, AMQP detection and decoding, the
//! analyzer — ending with `Analyzer::analyze` at every kind of horizon.
//!
//! The first input byte sets `--stall-after` (0..=255 ms, so time-proven
//! verdicts are reachable with the small time spans of mutated captures); the
//! rest is the file. It goes through a real file (`pipeline::run_files` maps
//! it), as `amqptrace analyze` reads one. Checks: no panic, events in time
//! order as the pipeline promises, every analysis serialises and prints.
//! A slow input (e.g. a matcher with exponential work) is a libFuzzer timeout.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use amqptrace::analyze::{write_verdict_block, Analyzer, AnalyzerConfig, Horizon};
use amqptrace::event::Event;
use amqptrace::pipeline;
use amqptrace::stream::StreamConfig;
use libfuzzer_sys::fuzz_target;

/// One scratch file per fuzzing process, in memory where /dev/shm exists.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("amqptrace-fuzz-analyzer-{}.pcap", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&steer, file)) = data.split_first() else {
        return;
    };
    let path = scratch();
    if std::fs::write(path, file).is_err() {
        return;
    }
    let cfg = AnalyzerConfig::default().with_stall_after(Duration::from_millis(u64::from(steer)));
    let mut analyzer = Analyzer::new(cfg);
    let mut events = 0u64;
    let summary = pipeline::run_files(std::slice::from_ref(path), &StreamConfig::default(), |ev: &Event| {
        analyzer.handle(ev);
        events += 1;
        // A live tick now and then, as the proxy does every second.
        if events % 64 == 0 {
            let a = analyzer.live_analysis(ev.ts);
            assert!(serde_json::to_string(&a).is_ok());
        }
        Ok(())
    });
    let Ok(summary) = summary else {
        return;
    };
    let end = summary.last_ts.unwrap_or_default();
    for horizon in [Horizon::LastPacket(end), Horizon::Recorded(end), Horizon::Live(end)] {
        let analysis = analyzer.analyze(horizon);
        let json = serde_json::to_string(&analysis);
        assert!(json.is_ok(), "{json:?}");
        let mut text = Vec::new();
        write_verdict_block(&analysis, &mut text).expect("writing to a Vec");
    }
});
