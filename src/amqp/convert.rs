//! Conversion at the boundary: amq-protocol's parsed methods and content
//! headers into amqptrace's own [`Method`] and [`ContentHeader`].
//!
//! Redaction happens here, once, so no later stage can leak a credential:
//! `connection.start-ok` keeps only the mechanism and the user name,
//! `connection.secure`/`secure-ok` and `connection.update-secret` keep nothing
//! of their challenge, response or secret.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass,
};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::event::{ContentHeader, ContentHeaderTag, Method, MethodArgs, MethodKind, Properties};

/// Our [`Method`] from amq-protocol's parse of a method frame; `payload` is
/// the frame's raw payload, used for the one field amq-protocol drops
/// (`basic.qos` prefetch_size, which RabbitMQ ignores but clients still send).
pub fn method_from_class(class: AMQPClass, payload: &[u8]) -> Method {
    use MethodKind as K;
    let mut a = MethodArgs::default();
    let kind = match class {
        AMQPClass::Connection(m) => match m {
            connection::AMQPMethod::Start(s) => {
                a.version = Some(format!("{}-{}", s.version_major, s.version_minor));
                a.product = table_str(&s.server_properties, "product");
                if let Some(v) = table_str(&s.server_properties, "version") {
                    a.version = Some(v);
                }
                a.platform = table_str(&s.server_properties, "platform");
                a.mechanisms = Some(String::from_utf8_lossy(s.mechanisms.as_bytes()).into_owned());
                a.locale = Some(String::from_utf8_lossy(s.locales.as_bytes()).into_owned());
                K::ConnectionStart
            }
            connection::AMQPMethod::StartOk(s) => {
                a.product = table_str(&s.client_properties, "product");
                // py-amqp (Celery, kombu) says `product_version`, most clients `version`.
                a.version = table_str(&s.client_properties, "version")
                    .or_else(|| table_str(&s.client_properties, "product_version"));
                a.platform = table_str(&s.client_properties, "platform");
                a.connection_name = table_str(&s.client_properties, "connection_name");
                a.user = sasl_user(s.mechanism.as_str(), s.response.as_bytes());
                a.mechanism = Some(s.mechanism.into());
                a.locale = Some(s.locale.into());
                K::ConnectionStartOk
            }
            // Challenge and response are credentials material: never kept.
            connection::AMQPMethod::Secure(_) => K::ConnectionSecure,
            connection::AMQPMethod::SecureOk(_) => K::ConnectionSecureOk,
            connection::AMQPMethod::Tune(t) => {
                a.channel_max = Some(t.channel_max);
                a.frame_max = Some(t.frame_max);
                a.heartbeat = Some(t.heartbeat);
                K::ConnectionTune
            }
            connection::AMQPMethod::TuneOk(t) => {
                a.channel_max = Some(t.channel_max);
                a.frame_max = Some(t.frame_max);
                a.heartbeat = Some(t.heartbeat);
                K::ConnectionTuneOk
            }
            connection::AMQPMethod::Open(o) => {
                a.vhost = Some(o.virtual_host.into());
                K::ConnectionOpen
            }
            connection::AMQPMethod::OpenOk(_) => K::ConnectionOpenOk,
            connection::AMQPMethod::Close(c) => {
                close_args(
                    &mut a,
                    c.reply_code,
                    c.reply_text.into(),
                    c.class_id,
                    c.method_id,
                );
                K::ConnectionClose
            }
            connection::AMQPMethod::CloseOk(_) => K::ConnectionCloseOk,
            connection::AMQPMethod::Blocked(b) => {
                a.reason = Some(b.reason.into());
                K::ConnectionBlocked
            }
            connection::AMQPMethod::Unblocked(_) => K::ConnectionUnblocked,
            connection::AMQPMethod::UpdateSecret(u) => {
                a.reason = Some(u.reason.into());
                K::ConnectionUpdateSecret
            }
            connection::AMQPMethod::UpdateSecretOk(_) => K::ConnectionUpdateSecretOk,
        },
        AMQPClass::Channel(m) => match m {
            channel::AMQPMethod::Open(_) => K::ChannelOpen,
            channel::AMQPMethod::OpenOk(_) => K::ChannelOpenOk,
            channel::AMQPMethod::Flow(f) => {
                a.active = Some(f.active);
                K::ChannelFlow
            }
            channel::AMQPMethod::FlowOk(f) => {
                a.active = Some(f.active);
                K::ChannelFlowOk
            }
            channel::AMQPMethod::Close(c) => {
                close_args(
                    &mut a,
                    c.reply_code,
                    c.reply_text.into(),
                    c.class_id,
                    c.method_id,
                );
                K::ChannelClose
            }
            channel::AMQPMethod::CloseOk(_) => K::ChannelCloseOk,
        },
        AMQPClass::Access(m) => match m {
            access::AMQPMethod::Request(r) => {
                a.realm = Some(r.realm.into());
                a.exclusive = Some(r.exclusive);
                a.passive = Some(r.passive);
                a.active = Some(r.active);
                K::AccessRequest
            }
            access::AMQPMethod::RequestOk(_) => K::AccessRequestOk,
        },
        AMQPClass::Exchange(m) => match m {
            exchange::AMQPMethod::Declare(d) => {
                a.exchange = Some(d.exchange.as_str().into());
                a.exchange_type = Some(d.kind.into());
                a.passive = Some(d.passive);
                a.durable = Some(d.durable);
                a.auto_delete = Some(d.auto_delete);
                a.internal = Some(d.internal);
                a.nowait = Some(d.nowait);
                a.arguments = table_json(&d.arguments);
                K::ExchangeDeclare
            }
            exchange::AMQPMethod::DeclareOk(_) => K::ExchangeDeclareOk,
            exchange::AMQPMethod::Delete(d) => {
                a.exchange = Some(d.exchange.as_str().into());
                a.if_unused = Some(d.if_unused);
                a.nowait = Some(d.nowait);
                K::ExchangeDelete
            }
            exchange::AMQPMethod::DeleteOk(_) => K::ExchangeDeleteOk,
            exchange::AMQPMethod::Bind(b) => {
                a.destination = Some(b.destination.into());
                a.source = Some(b.source.into());
                a.routing_key = Some(b.routing_key.as_str().into());
                a.nowait = Some(b.nowait);
                a.arguments = table_json(&b.arguments);
                K::ExchangeBind
            }
            exchange::AMQPMethod::BindOk(_) => K::ExchangeBindOk,
            exchange::AMQPMethod::Unbind(b) => {
                a.destination = Some(b.destination.into());
                a.source = Some(b.source.into());
                a.routing_key = Some(b.routing_key.as_str().into());
                a.nowait = Some(b.nowait);
                a.arguments = table_json(&b.arguments);
                K::ExchangeUnbind
            }
            exchange::AMQPMethod::UnbindOk(_) => K::ExchangeUnbindOk,
        },
        AMQPClass::Queue(m) => match m {
            queue::AMQPMethod::Declare(d) => {
                a.queue = Some(d.queue.into());
                a.passive = Some(d.passive);
                a.durable = Some(d.durable);
                a.exclusive = Some(d.exclusive);
                a.auto_delete = Some(d.auto_delete);
                a.nowait = Some(d.nowait);
                a.arguments = table_json(&d.arguments);
                K::QueueDeclare
            }
            queue::AMQPMethod::DeclareOk(d) => {
                a.queue = Some(d.queue.into());
                a.message_count = Some(d.message_count);
                a.consumer_count = Some(d.consumer_count);
                K::QueueDeclareOk
            }
            queue::AMQPMethod::Bind(b) => {
                a.queue = Some(b.queue.into());
                a.exchange = Some(b.exchange.as_str().into());
                a.routing_key = Some(b.routing_key.as_str().into());
                a.nowait = Some(b.nowait);
                a.arguments = table_json(&b.arguments);
                K::QueueBind
            }
            queue::AMQPMethod::BindOk(_) => K::QueueBindOk,
            queue::AMQPMethod::Purge(p) => {
                a.queue = Some(p.queue.into());
                a.nowait = Some(p.nowait);
                K::QueuePurge
            }
            queue::AMQPMethod::PurgeOk(p) => {
                a.message_count = Some(p.message_count);
                K::QueuePurgeOk
            }
            queue::AMQPMethod::Delete(d) => {
                a.queue = Some(d.queue.into());
                a.if_unused = Some(d.if_unused);
                a.if_empty = Some(d.if_empty);
                a.nowait = Some(d.nowait);
                K::QueueDelete
            }
            queue::AMQPMethod::DeleteOk(d) => {
                a.message_count = Some(d.message_count);
                K::QueueDeleteOk
            }
            queue::AMQPMethod::Unbind(b) => {
                a.queue = Some(b.queue.into());
                a.exchange = Some(b.exchange.as_str().into());
                a.routing_key = Some(b.routing_key.as_str().into());
                a.arguments = table_json(&b.arguments);
                K::QueueUnbind
            }
            queue::AMQPMethod::UnbindOk(_) => K::QueueUnbindOk,
        },
        AMQPClass::Basic(m) => match m {
            basic::AMQPMethod::Qos(q) => {
                // class id (2) + method id (2) + prefetch-size (4): see module doc.
                a.prefetch_size = payload
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                a.prefetch_count = Some(q.prefetch_count);
                a.global = Some(q.global);
                K::BasicQos
            }
            basic::AMQPMethod::QosOk(_) => K::BasicQosOk,
            basic::AMQPMethod::Consume(c) => {
                a.queue = Some(c.queue.into());
                a.consumer_tag = Some(c.consumer_tag.as_str().into());
                a.no_local = Some(c.no_local);
                a.no_ack = Some(c.no_ack);
                a.exclusive = Some(c.exclusive);
                a.nowait = Some(c.nowait);
                a.arguments = table_json(&c.arguments);
                K::BasicConsume
            }
            basic::AMQPMethod::ConsumeOk(c) => {
                a.consumer_tag = Some(c.consumer_tag.as_str().into());
                K::BasicConsumeOk
            }
            basic::AMQPMethod::Cancel(c) => {
                a.consumer_tag = Some(c.consumer_tag.as_str().into());
                a.nowait = Some(c.nowait);
                K::BasicCancel
            }
            basic::AMQPMethod::CancelOk(c) => {
                a.consumer_tag = Some(c.consumer_tag.as_str().into());
                K::BasicCancelOk
            }
            basic::AMQPMethod::Publish(p) => {
                a.exchange = Some(p.exchange.as_str().into());
                a.routing_key = Some(p.routing_key.as_str().into());
                a.mandatory = Some(p.mandatory);
                a.immediate = Some(p.immediate);
                K::BasicPublish
            }
            basic::AMQPMethod::Return(r) => {
                a.reply_code = Some(r.reply_code);
                a.reply_text = Some(r.reply_text.into());
                a.exchange = Some(r.exchange.as_str().into());
                a.routing_key = Some(r.routing_key.as_str().into());
                K::BasicReturn
            }
            basic::AMQPMethod::Deliver(d) => {
                a.consumer_tag = Some(d.consumer_tag.as_str().into());
                a.delivery_tag = Some(d.delivery_tag);
                a.redelivered = Some(d.redelivered);
                a.exchange = Some(d.exchange.as_str().into());
                a.routing_key = Some(d.routing_key.as_str().into());
                K::BasicDeliver
            }
            basic::AMQPMethod::Get(g) => {
                a.queue = Some(g.queue.into());
                a.no_ack = Some(g.no_ack);
                K::BasicGet
            }
            basic::AMQPMethod::GetOk(g) => {
                a.delivery_tag = Some(g.delivery_tag);
                a.redelivered = Some(g.redelivered);
                a.exchange = Some(g.exchange.as_str().into());
                a.routing_key = Some(g.routing_key.as_str().into());
                a.message_count = Some(g.message_count);
                K::BasicGetOk
            }
            basic::AMQPMethod::GetEmpty(_) => K::BasicGetEmpty,
            basic::AMQPMethod::Ack(x) => {
                a.delivery_tag = Some(x.delivery_tag);
                a.multiple = Some(x.multiple);
                K::BasicAck
            }
            basic::AMQPMethod::Reject(x) => {
                a.delivery_tag = Some(x.delivery_tag);
                a.requeue = Some(x.requeue);
                K::BasicReject
            }
            basic::AMQPMethod::RecoverAsync(r) => {
                a.requeue = Some(r.requeue);
                K::BasicRecoverAsync
            }
            basic::AMQPMethod::Recover(r) => {
                a.requeue = Some(r.requeue);
                K::BasicRecover
            }
            basic::AMQPMethod::RecoverOk(_) => K::BasicRecoverOk,
            basic::AMQPMethod::Nack(x) => {
                a.delivery_tag = Some(x.delivery_tag);
                a.multiple = Some(x.multiple);
                a.requeue = Some(x.requeue);
                K::BasicNack
            }
        },
        AMQPClass::Tx(m) => match m {
            tx::AMQPMethod::Select(_) => K::TxSelect,
            tx::AMQPMethod::SelectOk(_) => K::TxSelectOk,
            tx::AMQPMethod::Commit(_) => K::TxCommit,
            tx::AMQPMethod::CommitOk(_) => K::TxCommitOk,
            tx::AMQPMethod::Rollback(_) => K::TxRollback,
            tx::AMQPMethod::RollbackOk(_) => K::TxRollbackOk,
        },
        AMQPClass::Confirm(m) => match m {
            confirm::AMQPMethod::Select(s) => {
                a.nowait = Some(s.nowait);
                K::ConfirmSelect
            }
            confirm::AMQPMethod::SelectOk(_) => K::ConfirmSelectOk,
        },
    };
    Method {
        method: kind,
        args: a,
    }
}

fn close_args(
    a: &mut MethodArgs,
    reply_code: u16,
    reply_text: String,
    class_id: u16,
    method_id: u16,
) {
    a.reply_code = Some(reply_code);
    a.reply_text = Some(reply_text);
    a.class_id = Some(class_id);
    a.method_id = Some(method_id);
    a.failing_method = MethodKind::from_ids(class_id, method_id);
}

/// The user name in a SASL response, for the mechanisms that carry one in clear
/// (PLAIN: `authzid \0 authcid \0 password`; AMQPLAIN: a field table without its
/// length prefix, with LOGIN and PASSWORD). The password is never returned.
pub fn sasl_user(mechanism: &str, response: &[u8]) -> Option<String> {
    match mechanism {
        "PLAIN" => plain_user(response),
        "AMQPLAIN" => {
            let mut framed = Vec::with_capacity(response.len() + 4);
            framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
            framed.extend_from_slice(response);
            let (_, table) =
                amq_protocol::types::parsing::parse_field_table(framed.as_slice()).ok()?;
            table_str(&table, "LOGIN")
        }
        _ => None,
    }
}

/// The authentication identity of a SASL PLAIN response.
pub fn plain_user(response: &[u8]) -> Option<String> {
    let mut parts = response.split(|&b| b == 0);
    let _authzid = parts.next()?;
    let authcid = parts.next()?;
    // Without the third field this is not PLAIN's shape, and the second
    // field may well be the password: report no user rather than leak it.
    let _password = parts.next()?;
    Some(String::from_utf8_lossy(authcid).into_owned())
}

fn table_str(t: &FieldTable, key: &str) -> Option<String> {
    t.inner().get(key).and_then(|v| match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    })
}

fn table_json(t: &FieldTable) -> Option<serde_json::Value> {
    if t.inner().is_empty() {
        None
    } else {
        Some(field_table_to_json(t))
    }
}

/// A field table as plain JSON (strings as UTF-8, lossily; byte arrays as arrays of numbers).
pub fn field_table_to_json(t: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        AMQPValue::Boolean(b) => J::from(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Float(n) => J::from(*n),
        AMQPValue::Double(n) => J::from(*n),
        AMQPValue::DecimalValue(d) => J::from(d.value as f64 / 10f64.powi(d.scale as i32)),
        AMQPValue::ShortString(s) => J::from(s.as_str()),
        AMQPValue::LongString(s) => J::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(a) => J::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => J::from(*t),
        AMQPValue::FieldTable(t) => field_table_to_json(t),
        AMQPValue::ByteArray(b) => J::Array(b.as_slice().iter().map(|&x| J::from(x)).collect()),
        AMQPValue::Void => J::Null,
    }
}

/// Our [`ContentHeader`] from amq-protocol's parse.
pub fn content_header(h: AMQPContentHeader) -> ContentHeader {
    let p = &h.properties;
    let s = |v: &Option<amq_protocol::types::ShortString>| v.as_ref().map(|x| x.as_str().into());
    ContentHeader {
        method: ContentHeaderTag,
        class_id: h.class_id,
        body_size: h.body_size,
        properties: Properties {
            content_type: s(p.content_type()),
            content_encoding: s(p.content_encoding()),
            headers: p.headers().as_ref().map(field_table_to_json),
            delivery_mode: *p.delivery_mode(),
            priority: *p.priority(),
            correlation_id: s(p.correlation_id()),
            reply_to: s(p.reply_to()),
            expiration: s(p.expiration()),
            message_id: s(p.message_id()),
            timestamp: *p.timestamp(),
            kind: s(p.kind()),
            user_id: s(p.user_id()),
            app_id: s(p.app_id()),
        },
    }
}
