//! Broker errors explained (issue 15): the words and evidence that say why
//! the broker closed a channel or connection, from the [`CloseFacts`] the
//! handlers kept with the close — the settle the broker did not know and
//! where its tag came from, the consumer or connection that holds a queue,
//! both argument sets of an inequivalent queue.declare, channel_max,
//! frame_max, the frame out of content order — appended to the
//! `channel_closed_by_broker` and `connection_closed_by_broker` explanations
//! (the verdict names stay). And the `other_protocol` verdict: a client that
//! opened with another protocol's header, and the broker's answer.

use crate::event::Conn;

use super::super::routing::name_list;
use super::super::state::errors::{CloseFacts, OtherProtocol, TagOrigin};
use super::super::state::queue_args::DeclaredQueue;
use super::super::state::TcpEndKind;
use super::connection::tcp_end_ev;
use super::*;

/// `"; why: …"` and the frames that prove it, for a broker close with these facts.
pub(super) fn explain(f: &CloseFacts) -> (String, Vec<EvidenceRef>) {
    let mut s = String::from("; why: ");
    let mut evidence = Vec::new();
    match f {
        CloseFacts::UnknownTag {
            settle,
            channel,
            origin,
        } => {
            let _ = write!(
                s,
                "the {} at frame {} settles delivery tag {}{}, which channel {channel} does not hold: ",
                settle.method,
                settle.at.frame,
                settle.tag,
                if settle.multiple { " (multiple=true)" } else { "" }
            );
            let mut e = ev_on(settle.at, settle.method.name(), Dir::C2S, *channel);
            e.delivery_tag = Some(settle.tag);
            e.note = Some("the settle the broker did not know".into());
            evidence.push(e);
            explain_tag(&mut s, &mut evidence, settle.tag, *channel, origin);
        }
        CloseFacts::ExclusiveUse {
            here,
            queue,
            holder,
            own_exclusive,
            others,
        } => match holder {
            Some(h) => {
                let _ = write!(
                    s,
                    "consumer '{}' holds queue '{queue}' exclusively (basic.consume exclusive=true at \
                     frame {} on {}): while it is registered no other consumer may consume the queue",
                    h.tag,
                    h.at.frame,
                    where_(h.conn, h.channel, *here)
                );
                let mut e = ev_on(h.at, "basic.consume", Dir::C2S, h.channel);
                e.conn = (h.conn != *here).then_some(h.conn);
                e.consumer_tag = Some(h.tag.clone());
                e.queue = Some(queue.clone());
                e.note = Some("exclusive=true".into());
                evidence.push(e);
            }
            None if *own_exclusive && !others.is_empty() => {
                let tags: Vec<String> = others.iter().map(|(t, _)| t.clone()).collect();
                let _ = write!(
                    s,
                    "this basic.consume asked for exclusive=true while queue '{queue}' already had \
                     consumer(s) {}: exclusive use needs a queue no one else consumes",
                    name_list(&tags)
                );
            }
            None => {
                let _ = write!(
                    s,
                    "another consumer holds queue '{queue}' exclusively; its basic.consume \
                     (exclusive=true) is not in the capture"
                );
            }
        },
        CloseFacts::Locked { here, queue, owner } => match owner {
            Some(d) if d.conn != *here => {
                let _ = write!(
                    s,
                    "queue '{queue}' was declared exclusive=true by connection {} at frame {}: an \
                     exclusive queue belongs to the connection that declared it, and no other \
                     connection may declare, consume, bind or purge it while that one is open",
                    d.conn, d.at.frame
                );
                evidence.push(declare_ev(d, *here, "exclusive=true"));
            }
            Some(d) => {
                let _ = write!(
                    s,
                    "queue '{queue}' was declared exclusive=true at frame {} on this connection, and \
                     this declaration's exclusive flag differs from it",
                    d.at.frame
                );
                evidence.push(declare_ev(d, *here, "exclusive=true"));
            }
            None => {
                let _ = write!(
                    s,
                    "queue '{queue}' is exclusive to another connection; its queue.declare \
                     (exclusive=true) is not in the capture"
                );
            }
        },
        CloseFacts::Inequivalent {
            queue,
            arg,
            existing,
            this,
        } => {
            let differs = if arg.is_empty() {
                String::new()
            } else {
                format!("argument '{arg}' differs; ")
            };
            match existing {
                Some(d) => {
                    let _ = write!(
                        s,
                        "queue '{queue}' was declared at frame {} with {}",
                        d.at.frame,
                        declared(d)
                    );
                    evidence.push(declare_ev(d, d.conn, "the declaration the queue keeps"));
                }
                None => {
                    let _ = write!(
                        s,
                        "queue '{queue}' was created before the capture (its arguments are not in it)"
                    );
                }
            }
            if let Some(t) = this {
                let _ = write!(
                    s,
                    ", and is declared again at frame {} with {}",
                    t.at.frame,
                    declared(t)
                );
                evidence.push(declare_ev(t, t.conn, "the refused declaration"));
            }
            let _ = write!(
                s,
                ": {differs}a queue keeps the arguments it was created with (declare it with the \
                 same ones, delete it first, or set the value by policy)"
            );
            // Both declarations are on connections of their own: the evidence says which.
            if let (Some(first), Some(e)) = (existing, evidence.first_mut()) {
                if this.as_ref().is_some_and(|t| t.conn != first.conn) {
                    e.conn = Some(first.conn);
                }
            }
        }
        CloseFacts::ChannelMax { open, channel_max } => {
            match open {
                Some((ch, at, n)) => {
                    let _ = write!(
                        s,
                        "channel.open of channel {ch} at frame {} would make {n} channel(s) open",
                        at.frame
                    );
                    evidence.push(ev_on(*at, "channel.open", Dir::C2S, *ch));
                }
                None => s.push_str("a channel.open"),
            }
            match channel_max {
                Some((max, at)) => {
                    let _ = write!(
                        s,
                        ", above the negotiated channel_max {max} (connection.tune-ok at frame {})",
                        at.frame
                    );
                    let mut e = ev(*at, "connection.tune-ok");
                    e.note = Some(format!("channel_max={max}"));
                    evidence.push(e);
                }
                None => s.push_str(", above the negotiated channel_max (not in the capture)"),
            }
            s.push_str(": the client must close channels it no longer uses, or reuse them");
        }
        CloseFacts::Vhost { vhost, user, open } => {
            let v = vhost.as_deref().unwrap_or("?");
            let _ = write!(s, "connection.open");
            if let Some(at) = open {
                let _ = write!(s, " at frame {}", at.frame);
                let mut e = ev(*at, "connection.open");
                e.note = Some(format!("vhost '{v}'"));
                evidence.push(e);
            }
            let _ = write!(s, " asked for vhost '{v}'");
            if let Some(u) = user {
                let _ = write!(s, " as user '{u}'");
            }
            s.push_str(
                ": the vhost does not exist on this broker or the user may not use it (the \
                 broker's text says which); create it or grant the user access to it",
            );
        }
        CloseFacts::FrameTooLarge {
            frame,
            frame_max,
            told,
        } => {
            match (frame, told) {
                (Some((at, ch, size)), _) => {
                    let _ = write!(
                        s,
                        "the client's content-body frame at frame {} on channel {ch} carries {size} bytes",
                        at.frame
                    );
                    let mut e = ev_on(*at, "content-body", Dir::C2S, *ch);
                    e.note = Some(format!("{size} bytes"));
                    evidence.push(e);
                }
                (None, Some((size, _))) => {
                    let _ = write!(s, "the broker read a frame of {size} bytes from the client");
                }
                (None, None) => s.push_str("the broker read a frame it could not take"),
            }
            match (frame_max, told) {
                (Some((max, at)), _) => {
                    let _ = write!(
                        s,
                        ", more than the {} a frame may carry under the negotiated frame_max {max} \
                         (connection.tune-ok at frame {}; frame_max counts the 8 bytes of frame \
                         header and end): a client must cut a message body into frames of at most \
                         frame_max",
                        max.saturating_sub(8),
                        at.frame
                    );
                    let mut e = ev(*at, "connection.tune-ok");
                    e.note = Some(format!("frame_max={max}"));
                    evidence.push(e);
                }
                (None, Some((_, limit))) => {
                    let _ = write!(s, ", more than the {limit} bytes the broker takes");
                }
                (None, None) => {}
            }
        }
        CloseFacts::Unexpected { anomaly, anomalies } => {
            let Some(a) = anomaly else {
                return (String::new(), Vec::new());
            };
            let mut e = ev_on(a.at, a.got, Dir::C2S, a.channel);
            match a.publish {
                Some(p) => {
                    let missing = if a.body_size == 0 {
                        "its content header had not come".to_string()
                    } else {
                        format!(
                            "{} of its {} body bytes were still to come",
                            a.left, a.body_size
                        )
                    };
                    let _ = write!(
                        s,
                        "on channel {} the client sent a {} at frame {} while the message of the \
                         basic.publish at frame {} was incomplete ({missing}): the frames of two \
                         messages interleave on one channel, the sign of two threads or processes \
                         writing to one connection's socket (a connection opened before fork() and \
                         used by parent and child, or a channel shared between threads)",
                        a.channel, a.got, a.at.frame, p.frame
                    );
                    let mut pe = ev_on(p, "basic.publish", Dir::C2S, a.channel);
                    pe.note = Some("its content was incomplete".into());
                    evidence.push(pe);
                    e.note = Some("inside the content of another message".into());
                }
                None => {
                    let _ = write!(
                        s,
                        "the client sent a {} at frame {} on channel {} with no basic.publish before \
                         it: a message's content header and body frames must follow its \
                         basic.publish",
                        a.got, a.at.frame, a.channel
                    );
                    e.note = Some("no basic.publish before it".into());
                }
            }
            evidence.push(e);
            if *anomalies > 1 {
                let _ = write!(
                    s,
                    " ({anomalies} client frames out of content order in all)"
                );
            }
        }
    }
    evidence.sort_by_key(|e| e.frame);
    (s, evidence)
}

/// Where a refused delivery tag came from, in words and frames.
fn explain_tag(
    s: &mut String,
    evidence: &mut Vec<EvidenceRef>,
    tag: u64,
    channel: u16,
    origin: &TagOrigin,
) {
    match origin {
        TagOrigin::Settled(d) => {
            if d.from == d.to {
                let _ = write!(
                    s,
                    "it was already settled by the {} at frame {}",
                    d.method, d.at.frame
                );
            } else {
                let _ = write!(
                    s,
                    "it was already settled by the {} multiple=true at frame {} (tags {} to {})",
                    d.method, d.at.frame, d.from, d.to
                );
            }
            if let Some(at) = d.delivered {
                let _ = write!(s, " (basic.deliver at frame {})", at.frame);
            }
            s.push_str(
                ": a delivery is settled once, and a second settle of it closes the channel",
            );
            let mut e = ev_on(d.at, d.method.name(), Dir::C2S, channel);
            e.delivery_tag = Some(d.to);
            e.note = Some(format!("settled delivery tag {tag} first"));
            evidence.push(e);
        }
        TagOrigin::SettledEarlier { last_delivered } => {
            let _ = write!(
                s,
                "channel {channel} delivered tags up to {} (the last at frame {}), and tag {tag} was \
                 settled before the settles kept here: most likely a second settle of it",
                last_delivered.0, last_delivered.1.frame
            );
        }
        TagOrigin::OtherChannel {
            channel: other,
            delivered,
            settled,
        } => {
            let _ = write!(
                s,
                "delivery tag {tag} was delivered on channel {other} (basic.deliver at frame {}){}: \
                 delivery tags are numbered per channel, and a delivery is settled on the channel \
                 that received it",
                delivered.frame,
                if *settled {
                    ", and settled there"
                } else {
                    ", where it is still unacknowledged"
                }
            );
            let mut e = ev_on(*delivered, "basic.deliver", Dir::S2C, *other);
            e.delivery_tag = Some(tag);
            e.note = Some(format!("delivered on channel {other}"));
            evidence.push(e);
        }
        TagOrigin::PreviousConnection {
            conn,
            tag: t,
            same_connection: true,
        } => {
            let _ = write!(
                s,
                "delivery tag {tag} was delivered on channel {channel} of this connection before \
                 the channel was closed at frame {} (basic.deliver at frame {}) with it \
                 unacknowledged: delivery tags do not outlive their channel, and the channel \
                 opened again numbers its deliveries afresh",
                conn.ended.frame, t.delivered.frame
            );
            let mut e = ev_on(t.delivered, "basic.deliver", Dir::S2C, t.channel);
            e.delivery_tag = Some(tag);
            e.note = Some("delivered before the channel was closed".into());
            evidence.push(e);
        }
        TagOrigin::PreviousConnection { conn, tag: t, .. } => {
            let who = conn
                .connection_name
                .as_deref()
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            let _ = write!(
                s,
                "this channel never delivered it; delivery tag {tag} was delivered on channel {} of \
                 the client's previous connection{who} {} (basic.deliver at frame {}), which closed \
                 at frame {} with it unacknowledged: delivery tags do not outlive their connection \
                 (the broker requeued that message when the connection ended), so an ack after a \
                 reconnect must not reuse them",
                t.channel, conn.conn, t.delivered.frame, conn.ended.frame
            );
            let mut e = ev_on(t.delivered, "basic.deliver", Dir::S2C, t.channel);
            e.conn = Some(conn.conn);
            e.delivery_tag = Some(tag);
            e.note = Some("delivered on the previous connection".into());
            evidence.push(e);
        }
        TagOrigin::Unknown { last_delivered } => match last_delivered {
            Some((last, at)) => {
                let _ = write!(
                    s,
                    "nothing in the capture delivered tag {tag} on channel {channel} (its last \
                         delivery is tag {last} at frame {})",
                    at.frame
                );
            }
            None => {
                let _ = write!(
                    s,
                    "nothing in the capture was delivered on channel {channel}"
                );
            }
        },
    }
}

/// `durable=false exclusive=false auto_delete=false arguments {"x-message-ttl":60000}`.
fn declared(d: &DeclaredQueue) -> String {
    let mut s = format!(
        "durable={} exclusive={} auto_delete={}",
        d.durable, d.exclusive, d.auto_delete
    );
    match &d.arguments {
        Some(a) => {
            let _ = write!(s, " arguments {a}");
        }
        None => s.push_str(" and no arguments"),
    }
    if d.passive {
        s.push_str(" (passive)");
    }
    s
}

fn declare_ev(d: &DeclaredQueue, here: Conn, note: &str) -> EvidenceRef {
    let mut e = ev_on(d.at, "queue.declare", Dir::C2S, d.channel);
    e.conn = (d.conn != here).then_some(d.conn);
    e.note = Some(note.to_string());
    e
}

/// "channel 1 of this connection" or "channel 1 of 127.0.0.1:5000->…".
fn where_(conn: Conn, channel: u16, here: Conn) -> String {
    if conn == here {
        format!("channel {channel} of this connection")
    } else {
        format!("channel {channel} of connection {conn}")
    }
}

/// The `other_protocol` verdict of a connection that opened with another
/// protocol's header: what the client asked for and what the broker answered.
pub(super) fn other_protocol(c: &ConnState, p: &OtherProtocol, mut v: Verdict) -> Verdict {
    let hint = match p.protocol.as_str() {
        "AMQP 1.0" => " (AMQP 1.0 is another protocol, not a newer version of 0-9-1)",
        "AMQP 1.0 (SASL)" => " (the SASL layer an AMQP 1.0 client opens with)",
        "AMQP 1.0 (TLS)" => " (AMQP 1.0 asking to start TLS in-band)",
        "AMQP 0-10" => " (the protocol of Apache Qpid)",
        _ => "",
    };
    let mut s = format!(
        "the client opened the connection with the {} protocol header at frame {}, not AMQP \
         0-9-1{hint}",
        p.protocol, p.at.frame
    );
    let mut e = ev(p.at, "protocol-header");
    e.dir = Some(Dir::C2S);
    e.note = Some(p.protocol.clone());
    v.evidence.push(e);
    match &p.answer {
        Some((at, answer)) if *answer == p.protocol => {
            let _ = write!(
                s,
                "; the broker accepted it (it answered with the same header at frame {}): the rest \
                 of the connection is {answer}, which amqptrace does not decode",
                at.frame
            );
        }
        Some((at, answer)) => {
            let _ = write!(
                s,
                "; the broker answered with its own {answer} protocol header at frame {}, the \
                 spec's way of refusing a protocol it does not speak",
                at.frame
            );
        }
        None => s.push_str("; the broker's answer is not in the capture"),
    }
    if let Some((at, _)) = &p.answer {
        let mut e = ev(*at, "protocol-header");
        e.dir = Some(Dir::S2C);
        e.note = Some("the broker's answer".into());
        v.evidence.push(e);
    }
    if let Some(end) = c.tcp_end {
        let how = match end.kind {
            TcpEndKind::Fin => "closed the TCP connection (FIN)",
            TcpEndKind::Rst => "reset the TCP connection (RST)",
        };
        let _ = write!(
            s,
            ", then the {} {how} at frame {}",
            peer(end.dir),
            end.at.frame
        );
        v.evidence.push(tcp_end_ev(end));
    }
    let refused = p.answer.as_ref().is_some_and(|(_, a)| *a != p.protocol);
    if refused && p.protocol.starts_with("AMQP 1.0") {
        s.push_str(
            "; RabbitMQ speaks AMQP 1.0 only with its amqp1_0 plugin enabled (on the same port): \
             as configured, this client cannot talk to it",
        );
    } else if refused {
        s.push_str("; this client cannot talk to this broker");
    }
    set(&mut v, VerdictKind::OtherProtocol, p.at, s);
    v
}
