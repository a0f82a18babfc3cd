//! Small helpers shared by the integration tests: run the built binary, find
//! the committed captures, run tshark, and write synthesised captures.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

/// Calls `f` with every TCP segment of the capture at `path` and the packet it
/// came in, numbered as the pipeline numbers them; returns the last such
/// packet (for `Reassembler::finish`). Packets that carry no TCP are skipped.
pub fn for_each_tcp_segment(
    path: &Path,
    mut f: impl FnMut(amqptrace::tcp::PacketRef, &amqptrace::link::TcpSegment<'_>),
) -> amqptrace::tcp::PacketRef {
    let mut reader =
        amqptrace::capture::CaptureReader::open(path).expect("committed capture opens");
    let mut last = amqptrace::tcp::PacketRef {
        file: 0,
        frame: 0,
        ts: Default::default(),
        seq: 0,
    };
    while let Ok(Some(pkt)) = reader.next_packet() {
        let Ok(seg) = amqptrace::link::tcp_segment(pkt.linktype, pkt.data) else {
            continue;
        };
        last = amqptrace::tcp::PacketRef {
            file: 0,
            frame: pkt.frame,
            ts: pkt.ts,
            seq: last.seq + 1,
        };
        f(last, &seg);
    }
    last
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// `None` when killed by a signal (a crash).
    pub code: Option<i32>,
}

impl Run {
    /// The run's stderr, as context for a failed assertion.
    pub fn context(&self) -> String {
        format!("exit {:?}\n--- stderr ---\n{}", self.code, self.stderr)
    }
}

/// Runs the built `amqptrace` with `args`, stdout and stderr captured (so not a tty).
pub fn amqptrace<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    amqptrace_env(args, &[])
}

/// Like [`amqptrace`], with extra environment variables.
pub fn amqptrace_env<I, S>(args: I, env: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amqptrace"));
    cmd.args(args).stdin(Stdio::null()).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("cannot start the built amqptrace binary");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// Every `*.pcap` and `*.pcapng` under `captures/`, recursively, sorted.
pub fn committed_captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pcap") | Some("pcapng")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&captures_dir(), &mut out);
    out.sort();
    out
}

/// The path relative to the crate root, for messages.
pub fn short(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Whether tshark can be run: always true, since a test never passes by
/// skipping its oracle. Without tshark it fails with the command that installs it.
pub fn tshark_available() -> bool {
    let found = Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "tshark is not installed: apt-get install -y tshark (scripts/test.sh installs \
         everything the tests need)"
    );
    found
}

/// Runs `tshark -n -r FILE ARGS...` and returns its stdout; panics with its stderr on failure.
pub fn tshark(file: &Path, args: &[String]) -> String {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("cannot start tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}\n{}",
        short(file),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One TCP segment of a synthesised conversation.
pub struct Segment {
    pub from_client: bool,
    /// TCP flags byte (SYN 0x02, ACK 0x10, PSH 0x08, FIN 0x01).
    pub flags: u8,
    pub payload: Vec<u8>,
    /// False for a segment sent but missing from the capture (a lost packet):
    /// its sequence numbers are used, and later ACKs cover it.
    pub captured: bool,
}

pub const SYN: u8 = 0x02;
pub const SYN_ACK: u8 = 0x12;
pub const ACK: u8 = 0x10;
pub const PSH_ACK: u8 = 0x18;

/// A segment with `flags` and `payload`, captured.
pub fn segment(from_client: bool, flags: u8, payload: &[u8]) -> Segment {
    Segment {
        from_client,
        flags,
        payload: payload.to_vec(),
        captured: true,
    }
}

/// The wire bytes of one AMQP method frame, generated by amq-protocol.
pub fn method_frame(channel: u16, class: AMQPClass) -> Vec<u8> {
    gen_frame(&AMQPFrame::Method(channel, class))(WriteContext::from(Vec::new()))
        .expect("generating into a Vec cannot run out of space")
        .write
}

/// The segments of a TCP and AMQP connection setup, from SYN to
/// `connection.open-ok`, with `connection.start-ok` carrying `mechanism` and
/// `response`.
pub fn handshake(mechanism: &str, response: LongString) -> Vec<Segment> {
    let long = |s: &str| AMQPValue::LongString(s.into());
    let mut server_props = FieldTable::default();
    server_props.insert("product".into(), long("RabbitMQ"));
    let mut client_props = FieldTable::default();
    client_props.insert("product".into(), long("synthesised-test-client"));
    let conn = |m| method_frame(0, AMQPClass::Connection(m));
    vec![
        segment(true, SYN, &[]),
        segment(false, SYN_ACK, &[]),
        segment(true, ACK, &[]),
        segment(true, PSH_ACK, b"AMQP\x00\x00\x09\x01"),
        segment(
            false,
            PSH_ACK,
            &conn(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_props,
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            })),
        ),
        segment(
            true,
            PSH_ACK,
            &conn(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_props,
                mechanism: mechanism.into(),
                response,
                locale: "en_US".into(),
            })),
        ),
        segment(
            false,
            PSH_ACK,
            &conn(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            })),
        ),
        segment(
            true,
            PSH_ACK,
            &conn(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            })),
        ),
        segment(
            true,
            PSH_ACK,
            &conn(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ),
        segment(
            false,
            PSH_ACK,
            &conn(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        ),
    ]
}

/// A synthesised capture: a classic pcap (microseconds, Ethernet) holding
/// hand-built Ethernet/IPv4/TCP packets of one conversation between
/// `client` and `server` ports on 127.0.0.1, sequence numbers kept consistent.
/// It is not a recording of real traffic; tests that need a real peer use `captures/`.
pub fn synthesised_tcp_pcap(client_port: u16, server_port: u16, segments: &[Segment]) -> Vec<u8> {
    let mut pcap = pcap_file_header(1);
    let (mut client_seq, mut server_seq) = (1_000u32, 5_000_000u32);
    for (i, seg) in segments.iter().enumerate() {
        let (sport, dport, seq, ack) = if seg.from_client {
            (client_port, server_port, client_seq, server_seq)
        } else {
            (server_port, client_port, server_seq, client_seq)
        };
        let packet = ethernet_ipv4_tcp(sport, dport, seq, ack, seg.flags, &seg.payload);
        // SYN and FIN each take one sequence number.
        let advance = seg.payload.len() as u32 + u32::from(seg.flags & 0x03 != 0);
        if seg.from_client {
            client_seq = client_seq.wrapping_add(advance);
        } else {
            server_seq = server_seq.wrapping_add(advance);
        }
        if seg.captured {
            // Each conversation starts at a second of its own (its client
            // port's), so that several can be concatenated in time order.
            let sec = 1_764_077_000 + u32::from(client_port);
            pcap_record(&mut pcap, sec, i as u32 * 1000, &packet);
        }
    }
    pcap
}

/// A classic pcap file header (little-endian, microseconds, snaplen 65535).
pub fn pcap_file_header(linktype: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&65_535u32.to_le_bytes());
    h.extend_from_slice(&linktype.to_le_bytes());
    h
}

/// Appends one pcap record holding all of `data`.
pub fn pcap_record(out: &mut Vec<u8>, sec: u32, usec: u32, data: &[u8]) {
    out.extend_from_slice(&sec.to_le_bytes());
    out.extend_from_slice(&usec.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

fn ethernet_ipv4_tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(54 + payload.len());
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // destination MAC
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // source MAC
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let total_len = (20 + 20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id, DF, ttl, TCP, checksum
    ip.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&ip);
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&(if flags & 0x10 != 0 { ack } else { 0 }).to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]); // offset 5, window, checksum, urg
    tcp.extend_from_slice(payload);
    let mut pseudo = vec![127, 0, 0, 1, 127, 0, 0, 1, 0, 6];
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let sum = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&tcp);
    p
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
