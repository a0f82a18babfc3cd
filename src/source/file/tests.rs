//! The capture reader against its own kinds of source: mapped, in memory,
//! streamed straight or through the read-ahead thread, failing, cut, fuzzed.

use std::io::{self, Read};
use std::path::Path;

use super::backing::MAP_STEP;
use super::streamed::ReadAhead;
use super::*;
use crate::event::Timestamp;

/// Every packet a reader hands out (frame, time, link type, bytes, wire length), and how it ends.
type Outcome = (Vec<(u64, Timestamp, i32, Vec<u8>, u32)>, String);

fn read_all(mut r: CaptureReader<'_>) -> Outcome {
    let mut packets = Vec::new();
    loop {
        match r.next_packet() {
            Ok(Some(p)) => packets.push((p.frame, p.ts, p.linktype, p.data.to_vec(), p.orig_len)),
            Ok(None) => return (packets, "end".into()),
            Err(e) => return (packets, e.to_string()),
        }
    }
}

fn outcome<'a>(r: Result<CaptureReader<'a>, CaptureError>) -> Outcome {
    match r {
        Ok(r) => read_all(r),
        Err(e) => (Vec::new(), e.to_string()),
    }
}

/// A source that hands out `data` in reads of at most `step` bytes and
/// fails with EIO once `fail_at` bytes are out, as a pipe whose writer's
/// disk failed would.
struct FailingAfter {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
    step: usize,
}

impl Read for FailingAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(io::Error::from_raw_os_error(5));
        }
        let n = buf.len().min(self.step).min(self.fail_at - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A read error after the header is an error at its byte offset — never
/// a clean end of file — both straight and through the read-ahead thread
/// (which `open` uses for pipes and files that cannot be mapped); every
/// packet before it is handed out first.
#[test]
fn a_read_error_is_reported_with_its_offset_not_taken_for_the_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["lapin-basic.pcap", "mixed-linktypes.pcapng"] {
        let path = root.join("captures").join(name);
        let bytes = std::fs::read(&path).expect("committed capture");
        for fail_at in [bytes.len() / 4, bytes.len() / 2, bytes.len() - 1] {
            let source = |step| FailingAfter {
                data: bytes.clone(),
                pos: 0,
                fail_at,
                step,
            };
            let before = read_all(CaptureReader::from_bytes(&bytes[..fail_at], &path).unwrap());
            for (how, reader) in [
                ("straight", CaptureReader::new(source(7000), &path)),
                (
                    "read-ahead",
                    CaptureReader::new(ReadAhead::spawn(source(1 << 16)), &path),
                ),
            ] {
                let mut r = reader.expect("the header reads");
                let mut packets = Vec::new();
                let err = loop {
                    match r.next_packet() {
                        Ok(Some(p)) => {
                            packets.push((p.frame, p.ts, p.linktype, p.data.to_vec(), p.orig_len))
                        }
                        Ok(None) => {
                            panic!("{name} failing at {fail_at} ({how}): read as a clean end")
                        }
                        Err(e) => break e,
                    }
                };
                assert!(
                    packets == before.0,
                    "{name} failing at {fail_at} ({how}): packets differ"
                );
                match &err {
                    CaptureError::ReadFailed {
                        offset,
                        frame,
                        error,
                        ..
                    } => {
                        assert_eq!(*offset, fail_at as u64, "{how}: {err}");
                        assert_eq!(*frame, packets.len() as u64, "{how}: {err}");
                        assert_eq!(error.raw_os_error(), Some(5), "{how}: {err}");
                    }
                    other => panic!("{name} failing at {fail_at} ({how}): {other}"),
                }
                assert!(err.is_partial(), "{err}");
                let text = err.to_string();
                assert!(text.contains(&format!("byte {fail_at}")), "{text}");
                assert!(r.next_packet().unwrap().is_none(), "done after an error");
            }
        }
    }
}

#[test]
fn the_in_memory_reader_reads_exactly_what_the_streaming_reader_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["captures", "captures/failures", "tests/data"] {
        for e in std::fs::read_dir(root.join(dir))
            .expect("committed capture folder")
            .flatten()
        {
            let p = e.path();
            if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("pcap" | "pcapng")
            ) {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 20, "{files:?}");
    for path in files {
        let bytes = std::fs::read(&path).expect("read capture");
        // The whole file, and the file cut at places inside headers and blocks.
        let mut cuts = vec![
            bytes.len(),
            0,
            3,
            23,
            24,
            30,
            40,
            100,
            bytes.len() / 3,
            bytes.len() - 1,
        ];
        cuts.retain(|&c| c <= bytes.len());
        for cut in cuts {
            let b = &bytes[..cut];
            let streamed = outcome(CaptureReader::new(b, &path));
            let mapped = outcome(CaptureReader::from_bytes(b, &path));
            assert_eq!(streamed.1, mapped.1, "{} cut at {cut}", path.display());
            assert!(
                streamed.0 == mapped.0,
                "{} cut at {cut}: packets differ",
                path.display()
            );
            if cut == bytes.len() && !path.starts_with(root.join("tests/data")) {
                assert!(
                    !mapped.0.is_empty() && mapped.1 == "end",
                    "{}: {}",
                    path.display(),
                    mapped.1
                );
            }
        }
    }
}

#[test]
fn a_mapped_file_larger_than_several_map_steps_reads_like_a_stream() {
    // 24 MiB of packets: the mapper thread populates ahead and releases behind
    // the parser several times over.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    let mut n = 0u32;
    while bytes.len() < 6 * MAP_STEP {
        let len = 200 + (n % 1300);
        bytes.extend_from_slice(&n.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend((0..len).map(|i| (i ^ n) as u8));
        n += 1;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.pcap");
    std::fs::write(&path, &bytes).expect("write capture");
    let mapped = outcome(CaptureReader::open(&path));
    let streamed = outcome(CaptureReader::new(&bytes[..], &path));
    assert_eq!(mapped.1, "end");
    assert_eq!(mapped.0.len(), n as usize);
    assert!(mapped == streamed, "the mapped file read differently");
}

#[test]
fn a_block_shorter_than_its_own_header_is_corrupt_not_a_panic() {
    // Found by the capture_reader fuzz target: pcap-parser underflows on it.
    let bytes = include_bytes!("../../../tests/data/fuzz-capture-block-len-underflow.pcapng");
    let mut r = CaptureReader::new(&bytes[..], Path::new("fuzzed.pcapng")).expect("header is fine");
    let mut err = None;
    loop {
        match r.next_packet() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(
            err,
            Some(CaptureError::Corrupt { .. }) | Some(CaptureError::Truncated { .. })
        ),
        "{err:?}"
    );
}
