//! `--threads N` (src/pipeline/shard.rs): connections decoded on N worker
//! threads and merged back give the same bytes as one thread, on every
//! committed capture in every format (stdout, stderr, exit code), on merged
//! files, on a capture of many connections whose times go backwards between
//! packets, and in `report`. Needs nothing but the built binary.

use std::path::Path;

use crate::util::{self, amqptrace, assert_same_text, Run, ACK};

/// The outputs of `analyze`, as `scripts/output-checksums.sh` lists them.
const FORMATS: &[&[&str]] = &[
    &["--color", "never"],
    &["--color", "always", "--verbose"],
    &["-f", "jsonl"],
    &["-f", "jsonl", "--bodies", "64"],
    &["-f", "json"],
    &["-f", "counts"],
    &["-f", "chrome-trace"],
];

fn with_threads(args: &[&str], n: &str) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--threads", n]);
    amqptrace(&all)
}

/// `args` with `--threads 2` and `--threads 3` give what `--threads 1` gives.
#[track_caller]
fn same_with_threads(what: &str, args: &[&str]) {
    let one = with_threads(args, "1");
    for n in ["2", "3"] {
        let got = with_threads(args, n);
        let what = format!("{what} --threads {n}");
        assert_same_text(&format!("{what}: stdout"), &one.stdout, &got.stdout);
        assert_same_text(&format!("{what}: stderr"), &one.stderr, &got.stderr);
        assert_eq!(one.code, got.code, "{what}: exit code");
    }
}

#[test]
fn every_committed_capture_in_every_format_is_the_same_with_any_thread_count() {
    let captures = util::all_captures();
    assert!(captures.len() > 50, "captures/ is there");
    for capture in &captures {
        let path = capture.to_str().expect("a UTF-8 path");
        for format in FORMATS {
            let mut args = vec!["analyze", path];
            args.extend_from_slice(format);
            same_with_threads(
                &format!("{} {}", util::short(capture), format.join(" ")),
                &args,
            );
        }
    }
}

#[test]
fn tls_captures_with_their_secrets_are_the_same_with_any_thread_count() {
    let dir = util::repo("captures/tls");
    let keylog = dir.join("tls12-aes128-healthy.keylog");
    let keylog = keylog.to_str().expect("a UTF-8 path");
    for (name, extra) in [
        ("tls12-aes128-healthy.pcapng", vec!["--tls-keylog", keylog]),
        ("tls12-aes128-healthy.secrets.pcapng", vec![]),
    ] {
        let path = dir.join(name);
        let path = path.to_str().expect("a UTF-8 path");
        let mut args = vec!["analyze", path, "-f", "jsonl"];
        args.extend(extra);
        same_with_threads(name, &args);
    }
}

#[test]
fn merged_files_are_the_same_with_any_thread_count() {
    let a = util::capture("lapin-basic.pcap");
    let b = util::capture("pika-basic.pcapng");
    let c = util::capture("failures/nack-requeue-loop.pcapng");
    let (a, b, c) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    );
    for format in FORMATS {
        let mut args = vec!["analyze", a, b, c];
        args.extend_from_slice(format);
        same_with_threads(&format!("three files merged {}", format.join(" ")), &args);
    }
}

/// `copies` copies of the TCP conversations of `source`, each on its own
/// client port (and half on a port amqptrace only finds by the protocol
/// header, so that they wait to be classified), interleaved packet by
/// packet; copy k runs k × 7 µs late, so that times go backwards between
/// copies when packets follow closer than that.
fn many_connections(source: &Path, copies: u16) -> Vec<u8> {
    let mut packets = Vec::new();
    util::for_each_tcp_segment(source, |p, seg| {
        let mut flags = 0;
        for (set, bit) in [
            (seg.flags.fin, 0x01),
            (seg.flags.syn, 0x02),
            (seg.flags.rst, 0x04),
            (seg.flags.ack, ACK),
        ] {
            if set {
                flags |= bit;
            }
        }
        if !seg.payload.is_empty() {
            flags |= 0x08;
        }
        let v4 = |a: std::net::SocketAddr| match a.ip() {
            std::net::IpAddr::V4(ip) => Some((ip.octets(), a.port())),
            std::net::IpAddr::V6(_) => None,
        };
        if let (Some(src), Some(dst)) = (v4(seg.src), v4(seg.dst)) {
            packets.push((
                p.ts,
                src,
                dst,
                seg.seq,
                seg.ack,
                flags,
                seg.payload.to_vec(),
            ));
        }
    });
    let mut pcap = util::pcap_file_header(101); // LINKTYPE_RAW
    for (ts, src, dst, seq, ack, flags, payload) in &packets {
        for k in 0..copies {
            let shift = |(ip, port): ([u8; 4], u16)| {
                if port == 5672 {
                    // Even copies keep the broker port; odd ones use another.
                    (ip, if k % 2 == 0 { 5672 } else { 15_999 })
                } else {
                    (ip, port.wrapping_add(100 * k))
                }
            };
            let packet = util::ipv4_tcp(shift(*src), shift(*dst), *seq, *ack, *flags, payload);
            let at = ts.0 / 1000 + i64::from(k) * 7;
            let (sec, usec) = (at / 1_000_000, at % 1_000_000);
            util::pcap_record(&mut pcap, sec as u32, usec as u32, &packet);
        }
    }
    pcap
}

#[test]
fn a_capture_of_many_connections_is_the_same_with_any_thread_count() {
    let dir = util::temp_dir();
    let bytes = many_connections(&util::capture("failures/nack-requeue-loop.pcapng"), 12);
    let path = util::write(dir.path(), "many.pcap", &bytes);
    let path = path.to_str().expect("a UTF-8 path");
    let json = with_threads(&["analyze", path, "-f", "json"], "1");
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("an analysis");
    let connections = doc["connections"].as_array().map_or(0, |c| c.len());
    assert!(
        connections >= 12,
        "{connections} connections\n{}",
        json.context()
    );
    for format in FORMATS {
        let mut args = vec!["analyze", path];
        args.extend_from_slice(format);
        same_with_threads(&format!("12 connections {}", format.join(" ")), &args);
    }
}

#[test]
fn report_is_the_same_with_any_thread_count() {
    let dir = util::temp_dir();
    for name in [
        "pika-basic.pcapng",
        "failures/three-consumers-one-stalls.pcapng",
    ] {
        let capture = util::capture(name);
        let mut html = Vec::new();
        for n in ["1", "2", "3"] {
            let out = dir.path().join(format!("report-{n}.html"));
            let run = amqptrace([
                "report",
                capture.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--threads",
                n,
            ]);
            html.push((run.code, std::fs::read_to_string(&out).unwrap_or_default()));
        }
        for (n, got) in html.iter().enumerate().skip(1) {
            assert_eq!(html[0].0, got.0, "{name}: exit code with {} threads", n + 1);
            assert_same_text(&format!("{name}: report.html"), &html[0].1, &got.1);
        }
    }
}

#[test]
fn a_pipe_as_input_is_the_same_with_threads() {
    let capture = util::capture("pika-basic.pcapng");
    let one = with_threads(&["analyze", capture.to_str().unwrap(), "-f", "jsonl"], "1");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | '{}' analyze /dev/stdin -f jsonl --threads 2",
            capture.display(),
            util::BIN
        ))
        .output()
        .expect("sh runs");
    assert_same_text("a pipe", &one.stdout, &util::text(&out.stdout));
}
