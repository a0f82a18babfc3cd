//! Broker errors explained, and other protocols on the port (issue 15): each
//! broker close names the frames that explain it; a close the capture cannot
//! explain says only what the broker said.

use super::*;
use crate::event::{ContentBody, ContentBodyTag, DecodeError, ProtocolHeaderTag};

/// channel.close from the broker with a code, a text and the method it
/// blames; the channel's verdict then.
fn refused(s: &mut Sim, c: Conn, ch: u16, code: u16, text: &str, m: MethodKind) -> Verdict {
    let close = args!(reply_code: code, reply_text: text, failing_method: m);
    s.s2c(c, ch, MethodKind::ChannelClose, close);
    channel_verdict(&s.analysis(), c, ch).clone()
}

/// An ack the broker refuses as an unknown delivery tag on channel `ch`.
fn unknown_tag(s: &mut Sim, c: Conn, ch: u16) -> Verdict {
    refused(s, c, ch, 406, UNKNOWN_TAG, MethodKind::BasicAck)
}

fn broker_connection_close(s: &mut Sim, c: Conn, code: u16, text: &str) -> u64 {
    s.s2c(
        c,
        0,
        MethodKind::ConnectionClose,
        args!(reply_code: code, reply_text: text),
    )
}

/// basic.publish on channel 1, the content header of a 10-byte message and
/// one body frame of `size` bytes from the client; the body frame's packet.
fn message(s: &mut Sim, c: Conn, size: u32) -> u64 {
    s.publish(c, 1, "", "q");
    s.event(c, Dir::C2S, content_header(1, None));
    let body = Frame::ContentBody(ContentBody {
        method: ContentBodyTag,
        size,
        body: None,
        cut: Default::default(),
    });
    s.event(
        c,
        Dir::C2S,
        EventKind::Frame {
            channel: 1,
            frame: body,
        },
    )
}

const UNKNOWN_TAG: &str = "PRECONDITION_FAILED - unknown delivery tag 1";

#[test]
fn a_double_ack_names_the_first_ack() {
    let (mut s, w) = Sim::with_worker(40001, "q", "w", 10);
    let delivered = s.deliver(w, 1, "w", 1, false, Some("m1"));
    let first = s.ack(w, 1, 1, false);
    let second = s.ack(w, 1, 1, false);
    let v = &unknown_tag(&mut s, w, 1);
    assert_verdict(
        v,
        VerdictKind::ChannelClosedByBroker,
        &[
            &format!("the basic.ack at frame {second} settles delivery tag 1"),
            &format!("already settled by the basic.ack at frame {first}"),
            &format!("(basic.deliver at frame {delivered})"),
        ],
    );
    let frames: Vec<u64> = v.evidence.iter().map(|e| e.frame).collect();
    assert!(
        frames.contains(&first) && frames.contains(&second),
        "{frames:?}"
    );
    // The consumer's verdict carries the same explanation.
    assert_says(&s.consumer("w"), &["already settled by the basic.ack"]);
}

#[test]
fn an_ack_after_a_multiple_ack_names_the_range() {
    let (mut s, w) = Sim::with_worker(40002, "q", "w", 10);
    for t in 1..=3 {
        s.deliver(w, 1, "w", t, false, None);
    }
    let multiple = s.ack(w, 1, 3, true);
    s.ack(w, 1, 2, false);
    assert_says(
        &unknown_tag(&mut s, w, 1),
        &[&format!(
            "basic.ack multiple=true at frame {multiple} (tags 1 to 3)"
        )],
    );
}

#[test]
fn an_ack_on_the_wrong_channel_names_the_channel_of_the_delivery() {
    let (mut s, w) = Sim::with_worker(40003, "q", "w", 10);
    let delivered = s.deliver(w, 1, "w", 1, false, None);
    s.channel(w, 2);
    s.ack(w, 2, 1, false);
    assert_verdict(
        &unknown_tag(&mut s, w, 2),
        VerdictKind::ChannelClosedByBroker,
        &[
            &format!("delivered on channel 1 (basic.deliver at frame {delivered})"),
            "still unacknowledged",
        ],
    );
}

#[test]
fn an_ack_after_a_reconnect_names_the_previous_connection() {
    let (mut s, first) = Sim::with_worker(40004, "q", "w", 10);
    let delivered = s.deliver(first, 1, "w", 1, false, None);
    s.at(1.0);
    s.event(first, Dir::S2C, EventKind::TcpReset);
    s.at(2.0);
    let second = conn(40005);
    publisher(&mut s, second);
    s.ack(second, 1, 1, false);
    assert_says(
        &unknown_tag(&mut s, second, 1),
        &[
            "previous connection",
            &first.to_string(),
            &format!("(basic.deliver at frame {delivered})"),
        ],
    );
}

#[test]
fn an_ack_on_a_reopened_channel_names_the_closed_one() {
    let (mut s, w) = Sim::with_worker(40006, "q", "w", 10);
    let delivered = s.deliver(w, 1, "w", 1, false, None);
    s.c2s(w, 1, MethodKind::ChannelClose, args!(reply_code: 200u16));
    s.s2c(w, 1, MethodKind::ChannelCloseOk, args!());
    s.channel(w, 1);
    s.ack(w, 1, 1, false);
    assert_says(
        &unknown_tag(&mut s, w, 1),
        &[
            "before the channel was closed",
            &format!("(basic.deliver at frame {delivered})"),
        ],
    );
}

#[test]
fn an_unknown_tag_the_capture_never_delivered_says_so() {
    let (mut s, p) = Sim::with_publisher(40007);
    s.ack(p, 1, 7, false);
    assert_says(
        &unknown_tag(&mut s, p, 1),
        &["nothing in the capture was delivered on channel 1"],
    );
}

#[test]
fn an_exclusive_consumer_is_named_for_403() {
    let (mut s, holder) = Sim::with_publisher(40008);
    let consume = args!(queue: "q", consumer_tag: "sole", exclusive: true);
    let at = s.c2s(holder, 1, MethodKind::BasicConsume, consume);
    s.s2c(
        holder,
        1,
        MethodKind::BasicConsumeOk,
        args!(consumer_tag: "sole"),
    );
    let other = conn(40009);
    publisher(&mut s, other);
    s.consume_only(other, 1, "q", "second");
    let text = "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use";
    let v = &refused(&mut s, other, 1, 403, text, MethodKind::BasicConsume);
    assert_says(
        v,
        &[
            "consumer 'sole' holds queue 'q' exclusively",
            &format!("at frame {at}"),
            &holder.to_string(),
        ],
    );
    assert!(v.evidence.iter().any(|e| e.conn == Some(holder)));
}

#[test]
fn the_owner_of_an_exclusive_queue_is_named_for_405() {
    let (mut s, owner) = Sim::with_publisher(40010);
    let declare = args!(queue: "q", exclusive: true);
    let at = s.c2s(owner, 1, MethodKind::QueueDeclare, declare);
    s.s2c(owner, 1, MethodKind::QueueDeclareOk, args!(queue: "q"));
    let other = conn(40011);
    publisher(&mut s, other);
    s.c2s(other, 1, MethodKind::QueueDeclare, args!(queue: "q"));
    let text = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q' in vhost '/'.";
    assert_says(
        &refused(&mut s, other, 1, 405, text, MethodKind::QueueDeclare),
        &[&format!(
            "declared exclusive=true by connection {owner} at frame {at}"
        )],
    );
}

#[test]
fn both_argument_sets_are_named_for_an_inequivalent_declare() {
    let (mut s, first) = Sim::with_publisher(40012);
    let ttl = |v: u32| serde_json::json!({ "x-message-ttl": v });
    let declare = args!(queue: "q", durable: true, arguments: ttl(60000));
    let at = s.c2s(first, 1, MethodKind::QueueDeclare, declare);
    s.s2c(first, 1, MethodKind::QueueDeclareOk, args!(queue: "q"));
    let second = conn(40013);
    publisher(&mut s, second);
    let declare = args!(queue: "q", durable: true, arguments: ttl(30000));
    let again = s.c2s(second, 1, MethodKind::QueueDeclare, declare);
    let text =
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': \
                received '30000' but current is '60000'";
    assert_says(
        &refused(&mut s, second, 1, 406, text, MethodKind::QueueDeclare),
        &[
            &format!("declared at frame {at} with durable=true"),
            "{\"x-message-ttl\":60000}",
            &format!("declared again at frame {again}"),
            "{\"x-message-ttl\":30000}",
            "argument 'x-message-ttl' differs",
        ],
    );
}

#[test]
fn a_second_declaration_does_not_replace_the_first() {
    let mut q = crate::analyze::state::queue_args::QueueArgs::default();
    let d = |frame: u64, exclusive: bool| crate::analyze::state::queue_args::DeclaredQueue {
        at: crate::analyze::state::Mark {
            ts: Timestamp(0),
            frame,
        },
        conn: conn(1),
        channel: 1,
        durable: false,
        exclusive,
        auto_delete: false,
        passive: false,
        arguments: None,
    };
    q.declared("q", d(1, true));
    q.declared("q", d(2, false));
    assert_eq!(q.get("q").map(|d| d.at.frame), Some(1));
    q.deleted("q");
    q.declared("q", d(3, false));
    assert_eq!(q.get("q").map(|d| d.at.frame), Some(3));
}

#[test]
fn channel_max_is_compared_with_the_channel_open() {
    let (mut s, c) = Sim::on(40014);
    s.event(c, Dir::C2S, EventKind::TcpOpen);
    s.s2c(c, 0, MethodKind::ConnectionStart, args!());
    s.c2s(c, 0, MethodKind::ConnectionStartOk, args!(product: "raw"));
    s.s2c(
        c,
        0,
        MethodKind::ConnectionTune,
        args!(channel_max: 2047u16),
    );
    let tune_ok = s.c2s(c, 0, MethodKind::ConnectionTuneOk, args!(channel_max: 2u16));
    s.c2s(c, 0, MethodKind::ConnectionOpen, args!(vhost: "/"));
    s.s2c(c, 0, MethodKind::ConnectionOpenOk, args!());
    s.channel(c, 1);
    s.channel(c, 2);
    let open = s.c2s(c, 3, MethodKind::ChannelOpen, args!());
    let text =
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)";
    broker_connection_close(&mut s, c, 530, text);
    assert_verdict(
        &s.connection(c),
        VerdictKind::ConnectionClosedByBroker,
        &[
            &format!("channel.open of channel 3 at frame {open} would make 3 channel(s) open"),
            &format!("channel_max 2 (connection.tune-ok at frame {tune_ok})"),
        ],
    );
}

#[test]
fn a_body_frame_over_frame_max_is_named_for_501() {
    let (mut s, c) = Sim::on(40015);
    s.event(c, Dir::C2S, EventKind::TcpOpen);
    s.s2c(
        c,
        0,
        MethodKind::ConnectionTune,
        args!(frame_max: 131072u32),
    );
    let tune_ok = s.c2s(
        c,
        0,
        MethodKind::ConnectionTuneOk,
        args!(frame_max: 4096u32),
    );
    s.channel(c, 1);
    let big = message(&mut s, c, 10000);
    let text = "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,10000,4088}";
    broker_connection_close(&mut s, c, 501, text);
    assert_says(
        &s.connection(c),
        &[
            &format!("content-body frame at frame {big} on channel 1 carries 10000 bytes"),
            &format!("the 4088 a frame may carry under the negotiated frame_max 4096 (connection.tune-ok at frame {tune_ok}"),
        ],
    );
}

#[test]
fn interleaved_publishes_are_named_as_two_writers() {
    let (mut s, c) = Sim::with_publisher(40016);
    let first = s.publish(c, 1, "", "q");
    let second = s.publish(c, 1, "", "q");
    let text = "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead";
    broker_connection_close(&mut s, c, 505, text);
    assert_says(
        &s.connection(c),
        &[
            &format!("basic.publish at frame {second} while the message of the basic.publish at frame {first} was incomplete"),
            "interleave",
            "fork()",
        ],
    );
}

#[test]
fn a_content_header_without_its_publish_is_named() {
    let (mut s, c) = Sim::with_publisher(40017);
    // A whole message first: its frames are in order.
    message(&mut s, c, 10);
    let header = s.event(c, Dir::C2S, content_header(1, None));
    let text = "UNEXPECTED_FRAME - expected method frame, got non method frame instead";
    broker_connection_close(&mut s, c, 505, text);
    assert_says(
        &s.connection(c),
        &[&format!(
            "content-header at frame {header} on channel 1 with no basic.publish before it"
        )],
    );
}

#[test]
fn a_close_without_facts_keeps_the_broker_words_only() {
    let (mut s, w) = Sim::with_worker(40018, "q", "w", 10);
    broker_connection_close(
        &mut s,
        w,
        320,
        "CONNECTION_FORCED - broker forced connection closure",
    );
    let v = s.connection(w);
    assert_kind(&v, VerdictKind::ConnectionClosedByBroker);
    assert!(!v.explanation.contains("why:"), "{}", v.explanation);
}

fn other_protocol(s: &mut Sim, c: Conn, header: &str) -> (u64, u64, u64) {
    s.event(c, Dir::C2S, EventKind::TcpOpen);
    let unsupported = DecodeError::UnsupportedProtocol {
        protocol: header.into(),
    };
    let sent = s.event(
        c,
        Dir::C2S,
        EventKind::Error {
            offset: 0,
            error: unsupported,
        },
    );
    let answer = s.event(
        c,
        Dir::S2C,
        EventKind::ProtocolHeader {
            method: ProtocolHeaderTag,
            protocol: "AMQP 0-9-1".into(),
            supported: true,
        },
    );
    let reset = s.event(c, Dir::S2C, EventKind::TcpReset);
    (sent, answer, reset)
}

#[test]
fn another_protocol_is_named_with_the_broker_answer() {
    for (port, header) in [
        (40019, "AMQP 1.0"),
        (40020, "AMQP 1.0 (SASL)"),
        (40021, "AMQP 0-10"),
    ] {
        let (mut s, c) = Sim::on(port);
        let (sent, answer, reset) = other_protocol(&mut s, c, header);
        let v = s.connection(c);
        assert_kind_at(&v, VerdictKind::OtherProtocol, sent);
        assert_says(
            &v,
            &[
                &format!("the {header} protocol header at frame {sent}"),
                &format!("its own AMQP 0-9-1 protocol header at frame {answer}"),
                &format!("reset the TCP connection (RST) at frame {reset}"),
            ],
        );
        assert!(v.verdict.is_stall());
        let an = s.analysis();
        assert!(
            !an.verdicts
                .iter()
                .any(|v| v.verdict == VerdictKind::CaptureIncomplete),
            "{:#?}",
            an.verdicts
        );
    }
}

#[test]
fn a_multiple_ack_of_an_unknown_tag_is_the_refused_settle() {
    // RabbitMQ refuses basic.ack multiple=true when its own tag is not outstanding.
    let (mut s, w) = Sim::with_worker(40022, "q", "w", 10);
    s.deliver(w, 1, "w", 1, false, None);
    let last = s.deliver(w, 1, "w", 2, false, None);
    let ack = s.ack(w, 1, 5, true);
    let text = "PRECONDITION_FAILED - unknown delivery tag 5";
    let v = refused(&mut s, w, 1, 406, text, MethodKind::BasicAck);
    assert_says(
        &v,
        &[
            &format!("the basic.ack at frame {ack} settles delivery tag 5 (multiple=true)"),
            &format!("nothing in the capture delivered tag 5 on channel 1 (its last delivery is tag 2 at frame {last})"),
        ],
    );
}
