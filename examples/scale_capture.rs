//! Bench helper: writes a capture N times longer than its input, for measuring how time and
//! memory grow with capture length.
//!
//! `cargo run --release --example scale_capture -- IN.pcap OUT.pcap N`
//!
//! Copy k (0-based) is shifted in time past the end of copy k-1 and has its TCP port 5672
//! mapped to 5672+k on both sides, so every copy is a set of new connections (nothing
//! looks like a retransmission of the previous copy). Output is a legacy pcap with the
//! input's link type; only Ethernet and Linux SLL/SLL2 inputs carrying IPv4 are supported,
//! which is what the bench captures are. TCP checksums are not recomputed: neither
//! amqptrace nor tshark (by default) checks them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use amqptrace::source::file::CaptureReader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: scale_capture IN.pcap OUT.pcap N");
        std::process::exit(2);
    }
    let (input, output) = (Path::new(&args[1]), Path::new(&args[2]));
    let copies: u32 = args[3].parse()?;

    // First pass: link type and time span.
    let mut r = CaptureReader::open(input)?;
    let (mut first, mut last, mut linktype) = (i64::MAX, i64::MIN, 1);
    while let Some(p) = r.next_packet()? {
        first = first.min(p.ts.0);
        last = last.max(p.ts.0);
        linktype = p.linktype;
    }
    let span = (last - first).max(0) + 1_000_000_000;

    let mut w = BufWriter::with_capacity(1 << 20, File::create(output)?);
    // pcap header, nanosecond magic, little-endian.
    w.write_all(&0xa1b23c4du32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&0i32.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&262144u32.to_le_bytes())?;
    w.write_all(&(linktype as u32).to_le_bytes())?;

    let ip_offset = match linktype {
        1 => 14,
        113 => 16,
        276 => 20,
        other => return Err(format!("unsupported link type {other} for scaling").into()),
    };
    let mut buf = Vec::new();
    for k in 0..copies {
        let mut r = CaptureReader::open(input)?;
        while let Some(p) = r.next_packet()? {
            buf.clear();
            buf.extend_from_slice(p.data);
            if k > 0 && buf.len() > ip_offset + 20 && buf[ip_offset] >> 4 == 4 {
                let ihl = (buf[ip_offset] & 0x0f) as usize * 4;
                let t = ip_offset + ihl;
                if buf.len() >= t + 4 && buf[ip_offset + 9] == 6 {
                    for off in [t, t + 2] {
                        let port = u16::from_be_bytes([buf[off], buf[off + 1]]);
                        if port == 5672 {
                            buf[off..off + 2].copy_from_slice(&(5672 + k as u16).to_be_bytes());
                        }
                    }
                }
            }
            let ts = p.ts.0 + k as i64 * span;
            w.write_all(&((ts / 1_000_000_000) as u32).to_le_bytes())?;
            w.write_all(&((ts % 1_000_000_000) as u32).to_le_bytes())?;
            w.write_all(&(buf.len() as u32).to_le_bytes())?;
            w.write_all(&p.orig_len.to_le_bytes())?;
            w.write_all(&buf)?;
        }
    }
    w.flush()?;
    Ok(())
}
