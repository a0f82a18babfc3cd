//! Property tests: the frame decoder gives the same items however its input is
//! split, never panics and keeps its buffer bounded on arbitrary bytes; the
//! capture reader never panics on arbitrary, cut or corrupted files.

use std::path::Path;

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use amqptrace::amqp::{Decoded, DecodedItem, DecoderConfig, FrameDecoder};
use amqptrace::event::{DecodeError, MethodKind};
use amqptrace::source::file::CaptureReader;
use proptest::prelude::*;

use crate::util;

// ---------------------------------------------------------------- frames

fn wire(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("generating into a Vec cannot run out of space")
        .write
}

fn short() -> impl Strategy<Value = ShortString> {
    "[a-zA-Z0-9._-]{0,24}".prop_map(ShortString::from)
}

fn value() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        ".{0,40}".prop_map(|s| AMQPValue::LongString(LongString::from(s))),
    ]
}

fn table() -> impl Strategy<Value = FieldTable> {
    prop::collection::vec(("[a-z-]{1,12}", value()), 0..4).prop_map(|entries| {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(k.into(), v);
        }
        t
    })
}

/// A method of AMQP 0-9-1 with random arguments: the ones a trace is made of.
fn method() -> impl Strategy<Value = AMQPClass> {
    use AMQPClass as C;
    prop_oneof![
        (table(), ".{0,30}").prop_map(|(server_properties, mechanisms)| C::Connection(
            connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties,
                mechanisms: mechanisms.into(),
                locales: "en_US".into(),
            })
        )),
        (table(), short(), ".{0,40}").prop_map(
            |(client_properties, user, password)| C::Connection(connection::AMQPMethod::StartOk(
                connection::StartOk {
                    client_properties,
                    mechanism: "PLAIN".into(),
                    response: format!("\0{user}\0{password}").into(),
                    locale: "en_US".into(),
                }
            ))
        ),
        (any::<u16>(), any::<u32>(), any::<u16>()).prop_map(
            |(channel_max, frame_max, heartbeat)| {
                C::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max,
                    frame_max,
                    heartbeat,
                }))
            }
        ),
        short().prop_map(|virtual_host| C::Connection(connection::AMQPMethod::Open(
            connection::Open { virtual_host }
        ))),
        short().prop_map(|reason| C::Connection(connection::AMQPMethod::Blocked(
            connection::Blocked { reason }
        ))),
        Just(C::Channel(channel::AMQPMethod::Open(channel::Open {}))),
        (any::<u16>(), short(), any::<u16>(), any::<u16>()).prop_map(
            |(reply_code, reply_text, class_id, method_id)| C::Channel(channel::AMQPMethod::Close(
                channel::Close {
                    reply_code,
                    reply_text,
                    class_id,
                    method_id,
                }
            ))
        ),
        (short(), any::<[bool; 5]>(), table()).prop_map(|(queue, b, arguments)| C::Queue(
            queue::AMQPMethod::Declare(queue::Declare {
                queue,
                passive: b[0],
                durable: b[1],
                exclusive: b[2],
                auto_delete: b[3],
                nowait: b[4],
                arguments,
            })
        )),
        (short(), short(), short(), table()).prop_map(
            |(destination, source, routing_key, arguments)| {
                C::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                    destination,
                    source,
                    routing_key,
                    nowait: false,
                    arguments,
                }))
            }
        ),
        (any::<u16>(), any::<bool>()).prop_map(|(prefetch_count, global)| C::Basic(
            basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count,
                global
            })
        )),
        (short(), short(), any::<[bool; 4]>(), table()).prop_map(
            |(queue, consumer_tag, b, arguments)| {
                C::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue,
                    consumer_tag,
                    no_local: b[0],
                    no_ack: b[1],
                    exclusive: b[2],
                    nowait: b[3],
                    arguments,
                }))
            }
        ),
        short().prop_map(
            |consumer_tag| C::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag
            }))
        ),
        (short(), any::<u64>(), any::<bool>(), short(), short()).prop_map(
            |(consumer_tag, delivery_tag, redelivered, exchange, routing_key)| C::Basic(
                basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    exchange,
                    routing_key,
                })
            )
        ),
        // The three settlements: ack, nack, reject.
        (any::<u64>(), any::<[bool; 2]>(), 0u8..3).prop_map(
            |(delivery_tag, [multiple, requeue], which)| C::Basic(match which {
                0 => basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag,
                    multiple,
                }),
                1 => basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag,
                    multiple,
                    requeue,
                }),
                _ => basic::AMQPMethod::Reject(basic::Reject {
                    delivery_tag,
                    requeue,
                }),
            })
        ),
        any::<bool>()
            .prop_map(|nowait| C::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait }))),
    ]
}

/// A publish: method, content header, body split into frames of at most 64 bytes.
fn message() -> impl Strategy<Value = Vec<AMQPFrame>> {
    (
        1u16..8,
        short(),
        short(),
        prop::option::of(short()),
        prop::option::of(table()),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(channel, exchange, routing_key, message_id, headers, body)| {
                let mut properties = basic::AMQPProperties::default();
                if let Some(id) = message_id {
                    properties = properties.with_message_id(id);
                }
                if let Some(h) = headers {
                    properties = properties.with_headers(h);
                }
                let mut frames = vec![
                    AMQPFrame::Method(
                        channel,
                        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                            exchange,
                            routing_key,
                            mandatory: false,
                            immediate: false,
                        })),
                    ),
                    AMQPFrame::Header(
                        channel,
                        AMQPContentHeader {
                            class_id: 60,
                            body_size: body.len() as u64,
                            properties,
                        },
                    ),
                ];
                frames.extend(
                    body.chunks(64)
                        .map(|c| AMQPFrame::Body(channel, c.to_vec())),
                );
                frames
            },
        )
}

/// A stream of one direction: optionally the protocol header, then methods,
/// messages and heartbeats.
fn stream() -> impl Strategy<Value = Vec<AMQPFrame>> {
    let step = prop_oneof![
        4 => (0u16..8, method()).prop_map(|(ch, m)| vec![AMQPFrame::Method(ch, m)]),
        2 => message(),
        1 => Just(vec![AMQPFrame::Heartbeat]),
    ];
    (any::<bool>(), prop::collection::vec(step, 1..12)).prop_map(|(header, steps)| {
        let mut frames = Vec::new();
        if header {
            frames.push(AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()));
        }
        frames.extend(steps.into_iter().flatten());
        frames
    })
}

// ---------------------------------------------------------------- decoding

fn cfg(body_prefix: usize) -> DecoderConfig {
    DecoderConfig {
        body_prefix,
        ..DecoderConfig::default()
    }
}

fn drain(d: &mut FrameDecoder, out: &mut Vec<Decoded>) {
    while let Some(x) = d.poll() {
        out.push(x);
    }
}

/// Decodes `bytes` pushed in pieces cut at `cuts` (positions, any order, clamped).
fn decode_cut(cfg: DecoderConfig, bytes: &[u8], cuts: &[usize]) -> Vec<Decoded> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut d = FrameDecoder::new(cfg);
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        d.push(&bytes[from..c]);
        drain(&mut d, &mut out);
        from = c;
    }
    out
}

/// NotAmqp quotes as many first bytes as had arrived: not a property of the stream.
fn normalise(mut items: Vec<Decoded>) -> Vec<Decoded> {
    for d in &mut items {
        if let DecodedItem::Error(DecodeError::NotAmqp { first_bytes }) = &mut d.item {
            first_bytes.clear();
        }
    }
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Generated frames decode to themselves (names, offsets, no error), and
    /// re-splitting the bytes anywhere, or one byte at a time, changes nothing.
    #[test]
    fn resplitting_frames_decodes_the_same(
        frames in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        body_prefix in prop_oneof![Just(0usize), 1usize..100],
    ) {
        let pieces: Vec<Vec<u8>> = frames.iter().map(wire).collect();
        let bytes = pieces.concat();
        let whole = decode_cut(cfg(body_prefix), &bytes, &[]);
        prop_assert_eq!(whole.len(), frames.len(), "{:#?}", whole);
        let mut offset = 0u64;
        for ((frame, piece), d) in frames.iter().zip(&pieces).zip(&whole) {
            prop_assert_eq!(d.offset, offset);
            offset += piece.len() as u64;
            match (&d.item, frame) {
                (DecodedItem::ProtocolHeader { supported, .. }, AMQPFrame::ProtocolHeader(_)) => {
                    prop_assert!(*supported)
                }
                (DecodedItem::Frame { channel, frame: ours }, theirs) => {
                    prop_assert_eq!(*channel, theirs.channel_id());
                    let expected = match theirs {
                        AMQPFrame::Method(_, class) => MethodKind::from_ids(
                            class.get_amqp_class_id(),
                            class.get_amqp_method_id(),
                        )
                        .map_or("unknown", MethodKind::name),
                        AMQPFrame::Header(..) => "content-header",
                        AMQPFrame::Body(..) => "content-body",
                        _ => "heartbeat",
                    };
                    prop_assert_eq!(ours.name(), expected);
                }
                (ours, theirs) => prop_assert!(false, "{:?} decoded as {:?}", theirs, ours),
            }
        }
        prop_assert_eq!(&decode_cut(cfg(body_prefix), &bytes, &cuts), &whole);
        let bytewise: Vec<usize> = (0..bytes.len()).collect();
        prop_assert_eq!(&decode_cut(cfg(body_prefix), &bytes, &bytewise), &whole);
    }

    /// Any bytes, with holes at fixed stream positions: the items do not depend
    /// on how the bytes between holes are split.
    #[test]
    fn resplitting_arbitrary_bytes_decodes_the_same(
        prefix in stream(),
        segments in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..200), prop::option::of(0u64..1000)),
            1..5,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let prefix = prefix.iter().map(wire).collect::<Vec<_>>().concat();
        let run = |split: bool| {
            let mut d = FrameDecoder::new(DecoderConfig::default());
            let mut out = Vec::new();
            let mut first = true;
            for (bytes, gap) in &segments {
                let bytes = if first { [prefix.as_slice(), bytes].concat() } else { bytes.clone() };
                first = false;
                let cuts: &[usize] = if split { &cuts } else { &[] };
                let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut from = 0;
                for c in cuts.into_iter().chain([bytes.len()]) {
                    d.push(&bytes[from..c]);
                    drain(&mut d, &mut out);
                    from = c;
                }
                if let Some(len) = gap {
                    d.gap(Some(*len));
                    drain(&mut d, &mut out);
                }
            }
            normalise(out)
        };
        prop_assert_eq!(run(true), run(false));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(Vec<u8>),
    Gap(Option<u64>),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Op::Push),
        // Frame-like bytes: a plausible header with a random size, to reach the long-frame paths.
        3 => (prop::sample::select(vec![1u8, 2, 3, 8, b'A']), any::<u16>(), 0u32..6000, prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(t, ch, size, rest)| {
                let mut b = vec![t];
                b.extend_from_slice(&ch.to_be_bytes());
                b.extend_from_slice(&size.to_be_bytes());
                b.extend(rest);
                Op::Push(b)
            }),
        1 => prop::option::of(0u64..1 << 40).prop_map(Op::Gap),
    ];
    prop::collection::vec(op, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes (alone, after a valid prefix, with holes) never panic;
    /// offsets never go backwards; buffered bytes stay within the frame limit.
    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded(
        prefix in prop::option::of(stream()),
        ops in ops(),
        max_frame_size in 16u32..4096,
        body_prefix in 0usize..32,
    ) {
        let cfg = DecoderConfig { max_frame_size, body_prefix, ..DecoderConfig::default() };
        let bound = max_frame_size as usize + 8;
        let mut d = FrameDecoder::new(cfg);
        let mut out = Vec::new();
        if let Some(frames) = prefix {
            for f in &frames {
                d.push(&wire(f));
            }
        }
        for op in ops {
            match op {
                Op::Push(b) => d.push(&b),
                Op::Gap(len) => d.gap(len),
            }
            let before = out.len();
            drain(&mut d, &mut out);
            prop_assert!(d.buffered() <= bound, "{} bytes buffered, limit {}", d.buffered(), max_frame_size);
            for pair in out[before.saturating_sub(1)..].windows(2) {
                prop_assert!(pair[0].offset <= pair[1].offset, "offsets go back: {:?}", pair);
            }
            for x in &out[before..] {
                prop_assert!(x.offset <= d.stream_offset());
                if let DecodedItem::Frame { frame, .. } = &x.item {
                    prop_assert!(serde_json::to_string(frame).is_ok());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- capture reader

/// A pcap file (little-endian, microseconds, Ethernet) with these packets.
fn pcap(packets: &[Vec<u8>], nanos: bool) -> Vec<u8> {
    let mut f = util::pcap_file_header(1);
    if nanos {
        f[..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    }
    for (i, p) in packets.iter().enumerate() {
        util::pcap_record(&mut f, 1_700_000_000 + i as u32, i as u32 * 10, p);
    }
    f
}

fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// A pcapng file with two interfaces (Ethernet, and Linux SLL2 with a
/// nanosecond resolution option); packets alternate between them.
fn pcapng(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut f = pcapng_block(0x0a0d0d0a, &shb);
    let idb = |linktype: u16, options: &[u8]| {
        let mut b = Vec::new();
        b.extend_from_slice(&linktype.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(options);
        pcapng_block(1, &b)
    };
    f.extend(idb(1, &[]));
    // if_tsresol = 9 (nanoseconds), then opt_endofopt.
    f.extend(idb(276, &[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]));
    for (i, p) in packets.iter().enumerate() {
        let mut b = Vec::new();
        b.extend_from_slice(&((i % 2) as u32).to_le_bytes());
        let ts = 1_700_000_000_000_000u64 + i as u64;
        b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts as u32).to_le_bytes());
        b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        b.extend_from_slice(p);
        let padded = p.len().div_ceil(4) * 4;
        b.resize(20 + padded, 0);
        f.extend(pcapng_block(6, &b));
    }
    f
}

/// Reads every packet of `bytes`; returns the packets read and whether it ended in an error.
fn read_all(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, bool), String> {
    let mut reader = match CaptureReader::new(bytes, Path::new("prop.pcap")) {
        Ok(r) => r,
        Err(e) => return Err(e.to_string()),
    };
    let mut packets = Vec::new();
    // A reader must end: more packets than bytes would mean it loops.
    for _ in 0..=bytes.len() {
        match reader.next_packet() {
            Ok(Some(p)) => {
                if p.frame != packets.len() as u64 + 1 {
                    return Err(format!(
                        "packet numbered {} after {}",
                        p.frame,
                        packets.len()
                    ));
                }
                packets.push(p.data.to_vec());
            }
            Ok(None) => return Ok((packets, false)),
            Err(e) => {
                let _ = e.to_string();
                return Ok((packets, true));
            }
        }
    }
    panic!("the reader did not end on {} bytes", bytes.len());
}

fn packets() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..8)
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Pcap,
    PcapNanos,
    Pcapng,
}

fn capture(format: Format, packets: &[Vec<u8>]) -> Vec<u8> {
    match format {
        Format::Pcap => pcap(packets, false),
        Format::PcapNanos => pcap(packets, true),
        Format::Pcapng => pcapng(packets),
    }
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Pcap),
        Just(Format::PcapNanos),
        Just(Format::Pcapng)
    ]
}

proptest! {
    // Few cases: for a corrupt block length the reader doubles its buffer up
    // to 256 MiB before giving up (about 2 s a case in a debug build, most
    // arbitrary inputs); the capture_reader fuzz target goes further.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn capture_reader_never_panics_on_arbitrary_bytes(
        magic in prop::sample::select(vec![
            vec![], vec![0xd4, 0xc3, 0xb2, 0xa1], vec![0x4d, 0x3c, 0xb2, 0xa1],
            vec![0xa1, 0xb2, 0xc3, 0xd4], vec![0x0a, 0x0d, 0x0d, 0x0a],
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let _ = read_all(&[magic, rest].concat());
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Corrupted bytes anywhere in a valid capture: no panic, no endless read.
    #[test]
    fn capture_reader_never_panics_on_corrupted_files(
        format in format(),
        packets in packets(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<usize>()),
    ) {
        let mut file = capture(format, &packets);
        for (at, byte) in flips {
            let len = file.len();
            file[at % len] = byte;
        }
        if let Some(cut) = cut {
            file.truncate(cut % (file.len() + 1));
        }
        let _ = read_all(&file);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A well-formed capture reads back whole; cut anywhere, it yields the
    /// packets that end before the cut (and maybe an error), never a panic.
    #[test]
    fn capture_reader_reads_whole_and_cut_files(
        format in format(),
        packets in packets(),
        cut in any::<usize>(),
    ) {
        let file = capture(format, &packets);
        let (read, failed) = read_all(&file).map_err(TestCaseError::fail)?;
        prop_assert!(!failed);
        prop_assert_eq!(&read, &packets);

        let cut = cut % (file.len() + 1);
        if let Ok((read, _)) = read_all(&file[..cut]) {
            prop_assert!(read.len() <= packets.len());
            prop_assert_eq!(&read[..], &packets[..read.len()]);
        }
    }
}

/// Found by reading the reader for its fuzz target: an interface whose `if_tsoffset` option is near
/// i64::MAX, with a large packet timestamp, overflows `secs + offset` in
/// `CaptureReader::next_packet` (a panic in debug builds, a wrapped time in
/// release). The addition now saturates.
#[test]
fn pcapng_timestamp_offset_near_the_limit_does_not_panic() {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b3c4du32.to_le_bytes());
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut file = pcapng_block(0x0a0d0d0a, &shb);
    // Ethernet, snaplen 0, option if_tsoffset (14) of 8 bytes, end of options.
    let mut idb = vec![1, 0, 0, 0, 0, 0, 0, 0, 14, 0, 8, 0];
    idb.extend_from_slice(&i64::MAX.to_le_bytes());
    idb.extend_from_slice(&[0, 0, 0, 0]);
    file.extend(pcapng_block(1, &idb));
    let mut epb = Vec::new();
    for word in [0, u32::MAX, u32::MAX, 4, 4] {
        epb.extend_from_slice(&word.to_le_bytes());
    }
    epb.extend_from_slice(&[1, 2, 3, 4]);
    file.extend(pcapng_block(6, &epb));
    let (packets, _) = read_all(&file).expect("a valid file");
    assert_eq!(packets, vec![vec![1, 2, 3, 4]]);
}
