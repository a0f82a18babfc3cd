//! The borrowed fast path (`amqp::fast`) must agree with amq-protocol's full parse,
//! the codec of record, on every method and content-header frame of every committed
//! capture and on generated frames.

use std::collections::HashMap;

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{gen_frame, AMQPFrame};
use amq_protocol::protocol::{basic, parse_class, AMQPClass, BasicProperties};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use amqptrace::amqp::{convert, fast, method_from_class};
use amqptrace::tcp::{Reassembler, TcpEvent, TcpOutput};
use proptest::prelude::*;

use crate::util;

/// Checks one frame payload; returns 1 when the fast path took it. `strings`
/// is the decoder's cache of recent strings: a repeated consumer tag, exchange
/// or routing key comes out of it, and must still be what amq-protocol reads.
fn check(frame_type: u8, payload: &[u8], ctx: &str, strings: &mut fast::Strings) -> usize {
    match frame_type {
        1 => {
            let Some(f) = fast::method(payload, strings) else {
                return 0;
            };
            let (_, class) = parse_class(payload).unwrap_or_else(|e| {
                panic!("{ctx}: fast path accepted what amq-protocol refuses: {e:?}")
            });
            let mut full = method_from_class(class, payload);
            assert_eq!(*f, full, "{ctx}");
            // What a spare box is cleared of is all amq-protocol sets for this method.
            assert!(fast::clear_for_reuse(&mut full), "{ctx}");
            assert_eq!(full.args, Default::default(), "{ctx}: left after clearing");
            // Back to the spares: the next method decoded on this thread reuses the box.
            fast::recycle_frame(amqptrace::event::Frame::Method(f));
            1
        }
        2 => {
            let mut n = 0;
            for with_headers in [true, false] {
                let Some(f) =
                    fast::content_header(payload, with_headers, strings, fast::Extent::Whole)
                else {
                    continue;
                };
                let (_, h) =
                    parse_content_header(payload).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                let mut full = convert::content_header(h);
                if !with_headers {
                    full.properties.headers = None;
                }
                assert_eq!(*f, full, "{ctx}");
                fast::recycle_frame(amqptrace::event::Frame::ContentHeader(f));
                n = 1;
            }
            n
        }
        _ => 0,
    }
}

#[test]
fn fast_path_agrees_with_amq_protocol_on_every_captured_frame() {
    let mut checked = 0;
    let paths = util::committed_captures();
    assert!(paths.len() >= 5, "expected committed captures");
    for path in paths {
        // Reassemble every direction that starts inside the capture, then walk its frames.
        let mut streams: HashMap<(u64, std::net::SocketAddr), (bool, Vec<u8>)> = HashMap::new();
        let mut re = Reassembler::new();
        util::for_each_tcp_segment(&path, |p, seg| {
            re.handle(p, seg, &mut |o: TcpOutput<'_>| {
                let e = streams.entry((o.flow, o.src)).or_insert((true, Vec::new()));
                match o.event {
                    TcpEvent::Data(b) if e.0 => e.1.extend_from_slice(b),
                    TcpEvent::Gap { .. } => e.0 = false, // stop at the first hole
                    _ => {}
                }
            });
        });
        for ((_, src), (_, bytes)) in streams {
            let mut strings = fast::Strings::default();
            let mut pos = if bytes.starts_with(b"AMQP") { 8 } else { 0 };
            while bytes.len() >= pos + 8 {
                let t = bytes[pos];
                if !matches!(t, 1 | 2 | 3 | 8) {
                    break; // mid-connection start or not AMQP: not this test's business
                }
                let size = u32::from_be_bytes([
                    bytes[pos + 3],
                    bytes[pos + 4],
                    bytes[pos + 5],
                    bytes[pos + 6],
                ]) as usize;
                let end = pos + 7 + size;
                if end >= bytes.len() || bytes[end] != 0xCE {
                    break;
                }
                checked += check(
                    t,
                    &bytes[pos + 7..end],
                    &format!("{} {src} offset {pos}", path.display()),
                    &mut strings,
                );
                pos = end + 1;
            }
        }
    }
    assert!(
        checked > 1000,
        "only {checked} frames went through the fast path"
    );
    eprintln!("{checked} frames compared");
}

fn payload_of(frame: &AMQPFrame) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let (_, n) = gen_frame(frame)((&mut buf[..]).into())
        .map(|w| ((), w.position))
        .expect("frame fits");
    buf.truncate(n as usize);
    buf[7..buf.len() - 1].to_vec()
}

fn short() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9._:-]{0,40}").expect("regex")
}

proptest! {
    #[test]
    fn fast_path_agrees_on_generated_methods(
        tag in any::<u64>(), b1 in any::<bool>(), b2 in any::<bool>(),
        s1 in short(), s2 in short(), s3 in short(), which in 0u8..5,
    ) {
        let m = |tag: u64, b1: bool| match which {
            0 => basic::AMQPMethod::Deliver(basic::Deliver { consumer_tag: s1.clone().into(), delivery_tag: tag, redelivered: b1, exchange: s2.clone().into(), routing_key: s3.clone().into() }),
            1 => basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple: b1 }),
            2 => basic::AMQPMethod::Nack(basic::Nack { delivery_tag: tag, multiple: b1, requeue: b2 }),
            3 => basic::AMQPMethod::Reject(basic::Reject { delivery_tag: tag, requeue: b1 }),
            _ => basic::AMQPMethod::Publish(basic::Publish { exchange: s1.clone().into(), routing_key: s2.clone().into(), mandatory: b1, immediate: b2 }),
        };
        let payload = payload_of(&AMQPFrame::Method(1, AMQPClass::Basic(m(tag, b1))));
        let mut strings = fast::Strings::default();
        // Twice: the second time the strings come out of the cache.
        prop_assert_eq!(check(1, &payload, "generated", &mut strings), 1);
        prop_assert_eq!(check(1, &payload, "generated again", &mut strings), 1);
        // The next delivery of the same consumer: only its tag and flag differ
        // (the fast path's repeat of the last delivery).
        let next = payload_of(&AMQPFrame::Method(1, AMQPClass::Basic(m(tag ^ 1, !b1))));
        prop_assert_eq!(check(1, &next, "generated next", &mut strings), 1);
    }

    #[test]
    fn fast_path_agrees_on_generated_content_headers(
        size in any::<u64>(), mid in proptest::option::of(short()), cid in proptest::option::of(short()),
        ct in proptest::option::of(short()), mode in proptest::option::of(1u8..3), ts in proptest::option::of(any::<u64>()),
        hdr in proptest::option::of((short(), any::<i32>())),
    ) {
        let mut p = BasicProperties::default();
        if let Some(v) = mid { p = p.with_message_id(ShortString::from(v)); }
        if let Some(v) = cid { p = p.with_correlation_id(ShortString::from(v)); }
        if let Some(v) = ct { p = p.with_content_type(ShortString::from(v)); }
        if let Some(v) = mode { p = p.with_delivery_mode(v); }
        if let Some(v) = ts { p = p.with_timestamp(v); }
        if let Some((k, v)) = hdr {
            let mut t = FieldTable::default();
            t.insert(ShortString::from(k), AMQPValue::LongInt(v));
            p = p.with_headers(t);
        }
        let header = amq_protocol::frame::AMQPContentHeader { class_id: 60, body_size: size, properties: p };
        let payload = payload_of(&AMQPFrame::Header(1, header));
        let mut strings = fast::Strings::default();
        prop_assert_eq!(check(2, &payload, "generated", &mut strings), 1);
        prop_assert_eq!(check(2, &payload, "generated again", &mut strings), 1);
    }
}
