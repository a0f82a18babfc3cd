//! Decoder tests on bytes: real frames built with amq-protocol's own
//! generator (the codec of record), fed whole, split at every offset and one
//! byte at a time; malformed input, holes and other protocols.

use super::*;
use crate::event::{Method, MethodKind};
use amq_protocol::auth::{Credentials, SASLMechanism};
use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

const HEARTBEAT: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];
const PASSWORD: &str = "secretpw";
const NEW_SECRET: &str = "fresh-oauth-token-XYZ";

/// The wire bytes of one frame, as amq-protocol writes them.
pub(super) fn wire(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("generating into a Vec cannot run out of space")
        .write
}

fn method_frame(channel: u16, class: AMQPClass) -> Vec<u8> {
    wire(&AMQPFrame::Method(channel, class))
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn decode_chunks<'a>(
    cfg: DecoderConfig,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Decoded> {
    let mut d = FrameDecoder::new(cfg);
    let mut out = Vec::new();
    for chunk in chunks {
        d.push(chunk);
        while let Some(x) = d.poll() {
            out.push(x);
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<Decoded> {
    decode_chunks(DecoderConfig::default(), [bytes])
}

/// `stream` cut in two at every offset decodes to `whole`.
fn assert_every_split_decodes_as(stream: &[u8], whole: &[Decoded], name: &str) {
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        let split = decode_chunks(DecoderConfig::default(), [a, b]);
        assert_eq!(split, whole, "{name} split at {cut}");
    }
}

fn decode_bytewise(bytes: &[u8]) -> Vec<Decoded> {
    decode_chunks(DecoderConfig::default(), bytes.chunks(1))
}

/// The method of a decoded item, or a panic naming what came instead.
fn method_of(d: &Decoded) -> &Method {
    match &d.item {
        DecodedItem::Frame {
            frame: Frame::Method(m),
            ..
        } => m,
        other => panic!("expected a method frame at {}, got {other:?}", d.offset),
    }
}

fn error_of(d: &Decoded) -> &DecodeError {
    match &d.item {
        DecodedItem::Error(e) => e,
        other => panic!("expected an error at {}, got {other:?}", d.offset),
    }
}

/// A lone method frame, decoded from a fresh stream (method frames may open a stream).
fn decode_method(bytes: &[u8]) -> Method {
    let items = decode(bytes);
    assert_eq!(items.len(), 1, "{items:?}");
    method_of(&items[0]).clone()
}

/// The one method frame in `bytes` is `kind` with exactly `args` (as JSON Lines writes them).
fn assert_method(bytes: &[u8], kind: MethodKind, args: serde_json::Value) {
    let m = decode_method(bytes);
    assert_eq!(m.method, kind);
    assert_eq!(serde_json::to_value(&m.args).unwrap(), args);
}

fn connection_start() -> Vec<u8> {
    let capabilities = table(&[
        ("publisher_confirms", AMQPValue::Boolean(true)),
        ("connection.blocked", AMQPValue::Boolean(true)),
    ]);
    method_frame(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: table(&[
                ("product", long("RabbitMQ")),
                ("version", long("4.1.0")),
                ("platform", long("Erlang/OTP 27.1")),
                ("capabilities", AMQPValue::FieldTable(capabilities)),
            ]),
            mechanisms: "AMQPLAIN PLAIN".into(),
            locales: "en_US".into(),
        })),
    )
}

fn start_ok(mechanism: SASLMechanism, mechanism_name: &str) -> Vec<u8> {
    let response = Credentials::new("guest".into(), PASSWORD.into()).sasl_auth_string(mechanism);
    start_ok_with_response(mechanism_name, response)
}

fn start_ok_with_response(mechanism: &str, response: LongString) -> Vec<u8> {
    method_frame(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: table(&[
                ("product", long("lapin")),
                ("version", long("4.0.0")),
                ("connection_name", long("orders-worker")),
            ]),
            mechanism: mechanism.into(),
            response,
            locale: "en_US".into(),
        })),
    )
}

/// basic.qos with prefetch_size patched into the raw bytes: amq-protocol
/// always writes 0 there and drops it when parsing.
fn qos(prefetch_size: u32) -> Vec<u8> {
    let mut b = method_frame(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        })),
    );
    // 7-byte frame header, then class id and method id (2 + 2).
    b[11..15].copy_from_slice(&prefetch_size.to_be_bytes());
    b
}

/// A fixture function per entry: the wire bytes of one method frame,
/// `name = channel, Class(module::Method { arguments })`.
macro_rules! method_frames {
    ($($name:ident = $channel:expr, $class:ident($module:ident::$method:ident { $($body:tt)* });)*) => {
        $( fn $name() -> Vec<u8> {
            method_frame(
                $channel,
                AMQPClass::$class($module::AMQPMethod::$method($module::$method { $($body)* })),
            )
        } )*
    };
}

method_frames! {
    tune = 0, Connection(connection::Tune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 });
    connection_open = 0, Connection(connection::Open { virtual_host: "/".into() });
    channel_open = 1, Channel(channel::Open {});
    consume = 1, Basic(basic::Consume {
        queue: "orders".into(),
        consumer_tag: "ctag-1".into(),
        no_local: false,
        no_ack: false,
        exclusive: false,
        nowait: false,
        arguments: table(&[("x-priority", AMQPValue::LongInt(5))]),
    });
    consume_ok = 1, Basic(basic::ConsumeOk { consumer_tag: "ctag-1".into() });
    publish = 1, Basic(basic::Publish {
        exchange: "shop".into(),
        routing_key: "orders.new".into(),
        mandatory: true,
        immediate: false,
    });
    deliver = 1, Basic(basic::Deliver {
        consumer_tag: "ctag-1".into(),
        delivery_tag: 7,
        redelivered: true,
        exchange: "shop".into(),
        routing_key: "orders.new".into(),
    });
    ack = 1, Basic(basic::Ack { delivery_tag: 7, multiple: true });
    nack = 1, Basic(basic::Nack { delivery_tag: 8, multiple: false, requeue: true });
    reject = 1, Basic(basic::Reject { delivery_tag: 9, requeue: false });
    channel_close_404 = 1, Channel(channel::Close {
        reply_code: 404,
        reply_text: "NOT_FOUND - no queue 'orders' in vhost '/'".into(),
        class_id: 60,
        method_id: 20,
    });
    blocked = 0, Connection(connection::Blocked { reason: "low on memory".into() });
    update_secret = 0, Connection(connection::UpdateSecret {
        new_secret: NEW_SECRET.into(),
        reason: "token refresh".into(),
    });
    exchange_bind = 1, Exchange(exchange::Bind {
        destination: "audit".into(),
        source: "shop".into(),
        routing_key: "orders.#".into(),
        nowait: false,
        arguments: FieldTable::default(),
    });
    confirm_select = 1, Confirm(confirm::Select { nowait: false });
}

const BODY: &[u8] = b"hello world";

fn content_header() -> Vec<u8> {
    let properties = basic::AMQPProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2)
        .with_message_id("m-1".into())
        .with_correlation_id("corr-9".into())
        .with_headers(table(&[
            ("trace", long("abc")),
            ("retries", AMQPValue::LongInt(3)),
        ]));
    wire(&AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: BODY.len() as u64,
            properties,
        },
    ))
}

fn content_body() -> Vec<u8> {
    wire(&AMQPFrame::Body(1, BODY.to_vec()))
}

fn protocol_header() -> Vec<u8> {
    wire(&AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()))
}

/// Every representative frame after the protocol header, each with the name
/// the decoder must give it.
fn representative_frames() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("connection.start", connection_start()),
        (
            "connection.start-ok",
            start_ok(SASLMechanism::Plain, "PLAIN"),
        ),
        (
            "connection.start-ok",
            start_ok(SASLMechanism::AMQPlain, "AMQPLAIN"),
        ),
        ("connection.tune", tune()),
        ("connection.open", connection_open()),
        ("channel.open", channel_open()),
        ("basic.qos", qos(4096)),
        ("basic.consume", consume()),
        ("basic.consume-ok", consume_ok()),
        ("basic.publish", publish()),
        ("content-header", content_header()),
        ("content-body", content_body()),
        ("basic.deliver", deliver()),
        ("basic.ack", ack()),
        ("basic.nack", nack()),
        ("basic.reject", reject()),
        ("channel.close", channel_close_404()),
        ("connection.blocked", blocked()),
        ("connection.update-secret", update_secret()),
        ("exchange.bind", exchange_bind()),
        ("confirm.select", confirm_select()),
        ("heartbeat", HEARTBEAT.to_vec()),
    ]
}

/// Protocol header then every representative frame, as one stream.
fn conversation() -> Vec<u8> {
    let mut b = protocol_header();
    for (_, f) in representative_frames() {
        b.extend_from_slice(&f);
    }
    b
}

fn frame_name(d: &Decoded) -> &'static str {
    match &d.item {
        DecodedItem::Frame { frame, .. } => frame.name(),
        other => panic!("expected a frame at {}, got {other:?}", d.offset),
    }
}

#[test]
fn heartbeat_decodes_from_its_eight_bytes() {
    let items = decode(&HEARTBEAT);
    assert_eq!(
        items,
        vec![Decoded {
            offset: 0,
            item: DecodedItem::Frame {
                channel: 0,
                frame: Frame::Heartbeat(Heartbeat)
            }
        }]
    );
}

#[test]
fn protocol_header_opens_a_client_stream() {
    let items = decode(&protocol_header());
    assert_eq!(
        items,
        vec![Decoded {
            offset: 0,
            item: DecodedItem::ProtocolHeader {
                protocol: "AMQP 0-9-1".into(),
                supported: true
            }
        }]
    );
}

#[test]
fn conversation_decodes_every_frame_with_its_offset_and_name() {
    let stream = conversation();
    let items = decode(&stream);
    let frames = representative_frames();
    assert_eq!(items.len(), frames.len() + 1, "{items:#?}");
    assert!(matches!(
        items[0].item,
        DecodedItem::ProtocolHeader {
            supported: true,
            ..
        }
    ));
    let mut offset = 8u64;
    for ((name, bytes), d) in frames.iter().zip(&items[1..]) {
        assert_eq!(d.offset, offset, "offset of {name}");
        assert_eq!(frame_name(d), *name);
        offset += bytes.len() as u64;
    }
}

#[test]
fn every_frame_split_at_every_offset_decodes_the_same() {
    for (name, bytes) in representative_frames() {
        // A heartbeat first: content frames cannot open a stream.
        let mut stream = HEARTBEAT.to_vec();
        stream.extend_from_slice(&bytes);
        let whole = decode(&stream);
        assert_eq!(whole.len(), 2, "{name}: {whole:?}");
        assert_eq!(frame_name(&whole[1]), name);
        assert_every_split_decodes_as(&stream, &whole, name);
    }
}

#[test]
fn conversation_split_at_every_offset_and_bytewise_decodes_the_same() {
    let stream = conversation();
    let whole = decode(&stream);
    assert_eq!(decode_bytewise(&stream), whole);
    assert_every_split_decodes_as(&stream, &whole, "stream");
    // Three pieces, the middle one short: cuts inside every 7-byte header.
    for cut in 0..stream.len() {
        let end = (cut + 3).min(stream.len());
        let chunks = [&stream[..cut], &stream[cut..end], &stream[end..]];
        assert_eq!(
            decode_chunks(DecoderConfig::default(), chunks),
            whole,
            "split at {cut}..{end}"
        );
    }
}

#[test]
fn connection_start_reports_the_broker() {
    let args = serde_json::json!({"product": "RabbitMQ", "version": "4.1.0",
        "platform": "Erlang/OTP 27.1", "mechanisms": "AMQPLAIN PLAIN", "locale": "en_US"});
    assert_method(&connection_start(), MethodKind::ConnectionStart, args);
}

/// The password must not survive decoding: not in the Debug form of the
/// decoded item (what logs would show), not in the JSON of the frame.
fn assert_no_secret(bytes: &[u8], secret: &str) {
    let items = decode(bytes);
    let debug = format!("{items:?}");
    assert!(!debug.contains(secret), "{secret} in {debug}");
    for d in &items {
        if let DecodedItem::Frame { frame, .. } = &d.item {
            let json = serde_json::to_string(frame).expect("frames serialise");
            assert!(!json.contains(secret), "{secret} in {json}");
        }
    }
}

#[test]
fn start_ok_plain_keeps_the_user_and_drops_the_password() {
    let bytes = start_ok(SASLMechanism::Plain, "PLAIN");
    assert!(bytes
        .windows(PASSWORD.len())
        .any(|w| w == PASSWORD.as_bytes()));
    let m = decode_method(&bytes);
    assert_eq!(m.method, MethodKind::ConnectionStartOk);
    assert_eq!(m.args.mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(m.args.user.as_deref(), Some("guest"));
    assert_eq!(m.args.product.as_deref(), Some("lapin"));
    assert_eq!(m.args.connection_name.as_deref(), Some("orders-worker"));
    assert_no_secret(&bytes, PASSWORD);
}

#[test]
fn start_ok_amqplain_keeps_the_user_and_drops_the_password() {
    let bytes = start_ok(SASLMechanism::AMQPlain, "AMQPLAIN");
    let m = decode_method(&bytes);
    assert_eq!(m.args.mechanism.as_deref(), Some("AMQPLAIN"));
    assert_eq!(m.args.user.as_deref(), Some("guest"));
    assert_no_secret(&bytes, PASSWORD);
}

#[test]
fn start_ok_plain_without_an_authzid_separator_does_not_leak_the_password() {
    // "guest\0secretpw" is not valid PLAIN (authzid \0 authcid \0 passwd):
    // taking the second field as the user would print the password.
    let bytes = start_ok_with_response("PLAIN", format!("guest\0{PASSWORD}").into());
    let m = decode_method(&bytes);
    assert_eq!(m.args.user, None);
    assert_no_secret(&bytes, PASSWORD);
}

#[test]
fn update_secret_keeps_the_reason_only() {
    let bytes = update_secret();
    let m = decode_method(&bytes);
    assert_eq!(m.method, MethodKind::ConnectionUpdateSecret);
    assert_eq!(m.args.reason.as_deref(), Some("token refresh"));
    assert_no_secret(&bytes, NEW_SECRET);
}

#[test]
fn tune_open_and_channel_open() {
    let m = decode_method(&tune());
    assert_eq!(m.method, MethodKind::ConnectionTune);
    assert_eq!(
        (m.args.channel_max, m.args.frame_max, m.args.heartbeat),
        (Some(2047), Some(131_072), Some(60))
    );
    let m = decode_method(&connection_open());
    assert_eq!(m.method, MethodKind::ConnectionOpen);
    assert_eq!(m.args.vhost.as_deref(), Some("/"));
    let items = decode(&channel_open());
    assert!(matches!(
        items[0].item,
        DecodedItem::Frame { channel: 1, .. }
    ));
    assert_eq!(method_of(&items[0]).method, MethodKind::ChannelOpen);
}

#[test]
fn qos_prefetch_size_comes_from_the_raw_payload() {
    let args = serde_json::json!({"prefetch_size": 4096, "prefetch_count": 10, "global": false});
    assert_method(&qos(4096), MethodKind::BasicQos, args);
}

#[test]
fn consume_and_consume_ok() {
    let m = decode_method(&consume());
    assert_eq!(m.method, MethodKind::BasicConsume);
    assert_eq!(m.args.queue.as_deref(), Some("orders"));
    assert_eq!(m.args.consumer_tag.as_deref(), Some("ctag-1"));
    assert_eq!(m.args.no_ack, Some(false));
    assert_eq!(m.args.arguments, Some(serde_json::json!({"x-priority": 5})));
    let m = decode_method(&consume_ok());
    assert_eq!(m.method, MethodKind::BasicConsumeOk);
    assert_eq!(m.args.consumer_tag.as_deref(), Some("ctag-1"));
}

#[test]
fn publish_content_header_and_body() {
    let mut stream = publish();
    stream.extend_from_slice(&content_header());
    stream.extend_from_slice(&content_body());
    let items = decode(&stream);
    assert_eq!(items.len(), 3, "{items:?}");
    let m = method_of(&items[0]);
    assert_eq!(m.method, MethodKind::BasicPublish);
    assert_eq!(m.args.exchange.as_deref(), Some("shop"));
    assert_eq!(m.args.routing_key.as_deref(), Some("orders.new"));
    assert_eq!(m.args.mandatory, Some(true));
    match &items[1].item {
        DecodedItem::Frame {
            channel: 1,
            frame: Frame::ContentHeader(h),
        } => {
            assert_eq!(h.class_id, 60);
            assert_eq!(h.body_size, BODY.len() as u64);
            assert_eq!(h.properties.message_id.as_deref(), Some("m-1"));
            assert_eq!(h.properties.correlation_id.as_deref(), Some("corr-9"));
            assert_eq!(h.properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(h.properties.delivery_mode, Some(2));
            assert_eq!(
                h.properties.headers,
                Some(serde_json::json!({"trace": "abc", "retries": 3}))
            );
        }
        other => panic!("expected a content header, got {other:?}"),
    }
    match &items[2].item {
        DecodedItem::Frame {
            channel: 1,
            frame: Frame::ContentBody(b),
        } => {
            assert_eq!(b.size, BODY.len() as u32);
            assert_eq!(b.body, None, "no body bytes unless asked");
        }
        other => panic!("expected a content body, got {other:?}"),
    }
    let json = serde_json::to_string(&items[2].item_frame()).expect("serialises");
    assert!(!json.contains("hello"), "{json}");
}

impl Decoded {
    fn item_frame(&self) -> &Frame {
        match &self.item {
            DecodedItem::Frame { frame, .. } => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[test]
fn body_prefix_only_when_asked() {
    let mut stream = HEARTBEAT.to_vec();
    stream.extend_from_slice(&content_body());
    let body = |body_prefix: usize| {
        let items = decode_chunks(
            DecoderConfig {
                body_prefix,
                ..DecoderConfig::default()
            },
            [stream.as_slice()],
        );
        match items[1].item_frame() {
            Frame::ContentBody(b) => {
                assert_eq!(b.size, BODY.len() as u32);
                b.body.clone()
            }
            other => panic!("expected a body, got {other:?}"),
        }
    };
    assert_eq!(body(0), None);
    assert_eq!(body(5).as_deref(), Some("hello"));
    assert_eq!(body(1000).as_deref(), Some("hello world"));
}

#[test]
fn deliver_ack_nack_reject() {
    let m = decode_method(&deliver());
    assert_eq!(m.method, MethodKind::BasicDeliver);
    assert_eq!(m.args.consumer_tag.as_deref(), Some("ctag-1"));
    assert_eq!(m.args.delivery_tag, Some(7));
    assert_eq!(m.args.redelivered, Some(true));
    assert_eq!(m.args.routing_key.as_deref(), Some("orders.new"));

    let m = decode_method(&ack());
    assert_eq!(m.method, MethodKind::BasicAck);
    assert_eq!(
        (m.args.delivery_tag, m.args.multiple),
        (Some(7), Some(true))
    );

    let m = decode_method(&nack());
    assert_eq!(m.method, MethodKind::BasicNack);
    assert_eq!(
        (m.args.delivery_tag, m.args.multiple, m.args.requeue),
        (Some(8), Some(false), Some(true))
    );

    let m = decode_method(&reject());
    assert_eq!(m.method, MethodKind::BasicReject);
    assert_eq!(
        (m.args.delivery_tag, m.args.requeue),
        (Some(9), Some(false))
    );
}

#[test]
fn channel_close_names_the_failing_method() {
    let m = decode_method(&channel_close_404());
    assert_eq!(m.method, MethodKind::ChannelClose);
    assert_eq!(m.args.reply_code, Some(404));
    assert!(m
        .args
        .reply_text
        .as_deref()
        .is_some_and(|t| t.starts_with("NOT_FOUND")));
    assert_eq!((m.args.class_id, m.args.method_id), (Some(60), Some(20)));
    assert_eq!(m.args.failing_method, Some(MethodKind::BasicConsume));
    let json = serde_json::to_value(&m).expect("serialises");
    assert_eq!(json["failing_method"], "basic.consume");
    assert_eq!(json["method"], "channel.close");
}

#[test]
fn blocked_exchange_bind_confirm_select() {
    let m = decode_method(&blocked());
    assert_eq!(m.method, MethodKind::ConnectionBlocked);
    assert_eq!(m.args.reason.as_deref(), Some("low on memory"));

    let m = decode_method(&exchange_bind());
    assert_eq!(m.method, MethodKind::ExchangeBind);
    assert_eq!(m.args.destination.as_deref(), Some("audit"));
    assert_eq!(m.args.source.as_deref(), Some("shop"));
    assert_eq!(m.args.routing_key.as_deref(), Some("orders.#"));

    let m = decode_method(&confirm_select());
    assert_eq!(m.method, MethodKind::ConfirmSelect);
    assert_eq!(m.args.nowait, Some(false));
}

/// Heartbeat, `bad`, then a good frame: the error is reported at offset 8 and
/// the good frame after it is found again at its own offset.
fn assert_error_then_resync(bad: &[u8], expected: DecodeError) {
    let good = consume_ok();
    let mut stream = HEARTBEAT.to_vec();
    stream.extend_from_slice(bad);
    stream.extend_from_slice(&good);
    for items in [decode(&stream), decode_bytewise(&stream)] {
        assert_eq!(items.len(), 3, "{items:#?}");
        assert_eq!(frame_name(&items[0]), "heartbeat");
        assert_eq!(items[1].offset, 8);
        assert_eq!(error_of(&items[1]), &expected);
        assert_eq!(items[2].offset, (8 + bad.len()) as u64);
        assert_eq!(method_of(&items[2]).method, MethodKind::BasicConsumeOk);
    }
}

#[test]
fn bad_frame_type_is_an_error_and_decoding_resyncs() {
    assert_error_then_resync(
        &[9, 0, 0, 0, 0, 0, 0, 0xCE],
        DecodeError::BadFrameType { frame_type: 9 },
    );
}

#[test]
fn bad_frame_end_is_an_error_and_decoding_resyncs() {
    let mut bad = ack();
    let last = bad.len() - 1;
    bad[last] = 0x00;
    assert_error_then_resync(&bad, DecodeError::BadFrameEnd { found: 0x00 });
}

#[test]
fn oversize_frame_is_refused_from_its_header_alone() {
    let header = [1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
    let limit = DecoderConfig::default().max_frame_size;
    assert_error_then_resync(
        &header,
        DecodeError::FrameTooLarge {
            size: u32::MAX,
            limit,
        },
    );
    // No waiting for 4 GiB: the header is enough to refuse it.
    let mut d = FrameDecoder::new(DecoderConfig::default());
    d.push(&HEARTBEAT);
    d.push(&header);
    assert!(d.poll().is_some());
    assert!(matches!(
        d.poll().map(|x| x.item),
        Some(DecodedItem::Error(DecodeError::FrameTooLarge { .. }))
    ));
}

#[test]
fn garbage_method_arguments_are_malformed_and_decoding_goes_on() {
    // basic.consume whose arguments stop after one byte of the queue name's length.
    let mut payload = vec![0, 60, 0, 20, 0xFF];
    let mut bad = vec![1, 0, 1];
    bad.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bad.append(&mut payload);
    bad.push(0xCE);
    let items = decode(&[HEARTBEAT.as_slice(), &bad, &consume_ok()].concat());
    match error_of(&items[1]) {
        DecodeError::Malformed { what, channel, .. } => {
            assert_eq!(what, "basic.consume");
            assert_eq!(*channel, 1);
        }
        other => panic!("expected malformed, got {other:?}"),
    }
    assert_eq!(items[1].offset, 8);
    assert_eq!(method_of(&items[2]).method, MethodKind::BasicConsumeOk);
    assert_eq!(items[2].offset, 8 + bad.len() as u64);

    // An unknown class: named by its ids.
    let bad = [1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE];
    let items = decode(&[HEARTBEAT.as_slice(), &bad, &ack()].concat());
    assert_eq!(
        error_of(&items[1]),
        &DecodeError::Malformed {
            what: "unknown method 99.1".into(),
            channel: 1,
            detail: "arguments do not parse".into()
        }
    );
    assert_eq!(method_of(&items[2]).method, MethodKind::BasicAck);
}

#[test]
fn garbage_content_header_is_malformed() {
    let bad = [2, 0, 1, 0, 0, 0, 3, 0, 60, 0, 0xCE];
    let items = decode(&[HEARTBEAT.as_slice(), &bad, &ack()].concat());
    assert!(matches!(
        error_of(&items[1]),
        DecodeError::Malformed { what, channel: 1, .. } if what == "content header"
    ));
    assert_eq!(method_of(&items[2]).method, MethodKind::BasicAck);
}

#[test]
fn gap_mid_frame_resyncs_at_the_next_plausible_frame() {
    let dlv = deliver();
    let half = dlv.len() / 2;
    let body = content_body();
    let mut d = FrameDecoder::new(DecoderConfig::default());
    let mut items = Vec::new();
    d.push(&HEARTBEAT);
    d.push(&dlv[..half]);
    items.extend(std::iter::from_fn(|| d.poll()));
    assert_eq!(items.len(), 1);
    assert_eq!(d.buffered(), half);

    d.gap(Some(100));
    assert_eq!(d.buffered(), 0);
    // After the hole: the tail of some frame, a body frame (never trusted as a
    // boundary: its bytes are arbitrary), then an ack.
    let tail = &dlv[half..];
    d.push(tail);
    d.push(&body);
    d.push(&ack());
    items.extend(std::iter::from_fn(|| d.poll()));
    assert_eq!(items.len(), 2, "{items:#?}");
    let expected_offset = (8 + half + 100 + tail.len() + body.len()) as u64;
    assert_eq!(items[1].offset, expected_offset);
    assert_eq!(method_of(&items[1]).method, MethodKind::BasicAck);

    // In step again: a body frame now decodes.
    d.push(&body);
    let next = d.poll().expect("a body frame");
    assert_eq!(next.item_frame().name(), "content-body");
}

#[test]
fn gap_of_unknown_size_before_the_first_byte_starts_at_a_content_header() {
    // A capture that begins mid-connection: the first whole frame may be a content header.
    let stream = [content_header(), content_body(), deliver()].concat();
    let mut d = FrameDecoder::new(DecoderConfig::default());
    d.gap(None);
    d.push(&stream);
    let names: Vec<_> = std::iter::from_fn(|| d.poll())
        .map(|x| frame_name(&x))
        .collect();
    assert_eq!(names, ["content-header", "content-body", "basic.deliver"]);
}

#[test]
fn amqp_1_0_header_is_unsupported_and_the_stream_is_dropped() {
    for chunked in [false, true] {
        let header = b"AMQP\x00\x01\x00\x00";
        let items = if chunked {
            decode_bytewise(header)
        } else {
            decode(header)
        };
        assert_eq!(
            items,
            vec![Decoded {
                offset: 0,
                item: DecodedItem::Error(DecodeError::UnsupportedProtocol {
                    protocol: "AMQP 1.0".into()
                })
            }]
        );
    }
    let mut d = FrameDecoder::new(DecoderConfig::default());
    d.push(b"AMQP\x03\x01\x00\x00");
    assert!(matches!(
        d.poll().map(|x| x.item),
        Some(DecodedItem::Error(DecodeError::UnsupportedProtocol { protocol })) if protocol == "AMQP 1.0 (SASL)"
    ));
    assert!(d.is_dead());
    d.push(&HEARTBEAT);
    assert_eq!(d.poll(), None);
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.stream_offset(), 16);
}

#[test]
fn http_is_not_amqp() {
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let items = decode(request);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].offset, 0);
    assert!(matches!(
        error_of(&items[0]),
        DecodeError::NotAmqp { first_bytes } if first_bytes.starts_with("GET / HTTP/1.1")
    ));
    // Byte by byte it is still refused at once (the escaped excerpt is shorter).
    let items = decode_bytewise(request);
    assert_eq!(items.len(), 1);
    assert!(matches!(error_of(&items[0]), DecodeError::NotAmqp { .. }));
}

#[test]
fn protocol_header_in_mid_stream_waits_for_its_eighth_byte() {
    // A broker answers an unsupported version with its own header: the
    // decision must not depend on where the segment boundary falls.
    let stream = [HEARTBEAT.as_slice(), b"AMQP\x00\x00\x09\x01", &ack()].concat();
    let whole = decode(&stream);
    assert_eq!(whole.len(), 3, "{whole:#?}");
    assert!(matches!(
        whole[1].item,
        DecodedItem::ProtocolHeader {
            supported: true,
            ..
        }
    ));
    assert_every_split_decodes_as(&stream, &whole, "stream");
}

#[test]
fn buffered_bytes_stay_below_the_frame_limit() {
    let cfg = DecoderConfig {
        max_frame_size: 4096,
        ..DecoderConfig::default()
    };
    let mut d = FrameDecoder::new(cfg.clone());
    d.push(&HEARTBEAT);
    // A body frame announcing 4096 bytes: held until complete, never more.
    d.push(&[3, 0, 1, 0, 0, 0x10, 0]);
    for _ in 0..4096 {
        d.push(&[0x55]);
        while d.poll().is_some() {}
        assert!(d.buffered() <= cfg.max_frame_size as usize + 8);
    }
    d.push(&[0xCE]);
    let body = d.poll().expect("the body frame");
    assert_eq!(body.offset, 8);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn a_false_candidate_with_a_large_size_does_not_hold_resync_back() {
    // After a hole: bytes that look like a method frame header announcing
    // 64 KiB, whose payload does not open with known ids, then a real ack.
    let mut d = FrameDecoder::new(DecoderConfig::default());
    d.gap(None);
    d.push(&[1, 0, 1, 0, 1, 0, 0, b'h', b'e', b'l', b'l', b'o']);
    d.push(&ack());
    let items: Vec<_> = std::iter::from_fn(|| d.poll()).collect();
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0].offset, 12);
    assert_eq!(method_of(&items[0]).method, MethodKind::BasicAck);
}

/// py-amqp (what Celery and kombu use) names its version `product_version`.
#[test]
fn start_ok_product_version_is_read_when_version_is_absent() {
    let bytes = method_frame(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: table(&[
                ("product", long("py-amqp")),
                ("product_version", long("5.3.1")),
            ]),
            mechanism: "AMQPLAIN".into(),
            response: Credentials::new("guest".into(), PASSWORD.into())
                .sasl_auth_string(SASLMechanism::AMQPlain),
            locale: "en_US".into(),
        })),
    );
    let m = decode_method(&bytes);
    assert_eq!(m.args.product.as_deref(), Some("py-amqp"));
    assert_eq!(m.args.version.as_deref(), Some("5.3.1"));
}
