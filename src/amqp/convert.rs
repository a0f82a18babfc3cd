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
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use crate::event::{
    ContentHeader, ContentHeaderTag, Method, MethodArgs, MethodKind, Properties, Text,
};

/// Converts an amq-protocol argument into ours: the same value, or a
/// short string as an owned or a shared string.
trait IntoArg<T> {
    fn into_arg(self) -> T;
}

impl<T> IntoArg<T> for T {
    fn into_arg(self) -> T {
        self
    }
}

impl IntoArg<String> for ShortString {
    fn into_arg(self) -> String {
        self.into()
    }
}

impl IntoArg<Text> for ShortString {
    fn into_arg(self) -> Text {
        self.as_str().into()
    }
}

/// Sets the arguments named after amq-protocol's fields of the same name from
/// method `m`, `arguments` from its field table, and evaluates to `kind`.
macro_rules! args {
    ($a:ident, $m:ident: $($field:ident),*; table => $kind:expr) => {{
        $a.arguments = table_json(&$m.arguments);
        args!($a, $m: $($field),* => $kind)
    }};
    ($a:ident, $m:ident: $($field:ident),* => $kind:expr) => {{
        $( $a.$field = Some(IntoArg::into_arg($m.$field)); )*
        $kind
    }};
}

/// Our [`Method`] from amq-protocol's parse of a method frame; `payload` is
/// the frame's raw payload, used for the one field amq-protocol drops
/// (`basic.qos` prefetch_size, which RabbitMQ ignores but clients still send).
pub fn method_from_class(class: AMQPClass, payload: &[u8]) -> Method {
    use MethodKind as K;
    let mut a = MethodArgs::default();
    let kind = match class {
        AMQPClass::Connection(m) => connection_method(&mut a, m),
        AMQPClass::Channel(m) => match m {
            channel::AMQPMethod::Open(_) => K::ChannelOpen,
            channel::AMQPMethod::OpenOk(_) => K::ChannelOpenOk,
            channel::AMQPMethod::Flow(f) => args!(a, f: active => K::ChannelFlow),
            channel::AMQPMethod::FlowOk(f) => args!(a, f: active => K::ChannelFlowOk),
            channel::AMQPMethod::Close(c) => {
                close_args(&mut a, c.class_id, c.method_id);
                args!(a, c: reply_code, reply_text => K::ChannelClose)
            }
            channel::AMQPMethod::CloseOk(_) => K::ChannelCloseOk,
        },
        AMQPClass::Access(m) => match m {
            access::AMQPMethod::Request(r) => {
                args!(a, r: realm, exclusive, passive, active => K::AccessRequest)
            }
            access::AMQPMethod::RequestOk(_) => K::AccessRequestOk,
        },
        AMQPClass::Exchange(m) => exchange_method(&mut a, m),
        AMQPClass::Queue(m) => queue_method(&mut a, m),
        AMQPClass::Basic(m) => basic_method(&mut a, m, payload),
        AMQPClass::Tx(m) => match m {
            tx::AMQPMethod::Select(_) => K::TxSelect,
            tx::AMQPMethod::SelectOk(_) => K::TxSelectOk,
            tx::AMQPMethod::Commit(_) => K::TxCommit,
            tx::AMQPMethod::CommitOk(_) => K::TxCommitOk,
            tx::AMQPMethod::Rollback(_) => K::TxRollback,
            tx::AMQPMethod::RollbackOk(_) => K::TxRollbackOk,
        },
        AMQPClass::Confirm(m) => match m {
            confirm::AMQPMethod::Select(s) => args!(a, s: nowait => K::ConfirmSelect),
            confirm::AMQPMethod::SelectOk(_) => K::ConfirmSelectOk,
        },
    };
    Method::new(kind, a)
}

fn connection_method(a: &mut MethodArgs, m: connection::AMQPMethod) -> MethodKind {
    use connection::AMQPMethod as M;
    use MethodKind as K;
    match m {
        M::Start(s) => {
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
        M::StartOk(s) => {
            let props = &s.client_properties;
            a.product = table_str(props, "product");
            // py-amqp (Celery, kombu) says `product_version`, most clients `version`.
            a.version = table_str(props, "version").or_else(|| table_str(props, "product_version"));
            a.platform = table_str(props, "platform");
            a.connection_name = table_str(props, "connection_name");
            a.user = sasl_user(s.mechanism.as_str(), s.response.as_bytes());
            args!(a, s: mechanism, locale => K::ConnectionStartOk)
        }
        // Challenge and response are credentials material: never kept.
        M::Secure(_) => K::ConnectionSecure,
        M::SecureOk(_) => K::ConnectionSecureOk,
        M::Tune(t) => args!(a, t: channel_max, frame_max, heartbeat => K::ConnectionTune),
        M::TuneOk(t) => args!(a, t: channel_max, frame_max, heartbeat => K::ConnectionTuneOk),
        M::Open(o) => {
            a.vhost = Some(o.virtual_host.into());
            K::ConnectionOpen
        }
        M::OpenOk(_) => K::ConnectionOpenOk,
        M::Close(c) => {
            close_args(a, c.class_id, c.method_id);
            args!(a, c: reply_code, reply_text => K::ConnectionClose)
        }
        M::CloseOk(_) => K::ConnectionCloseOk,
        M::Blocked(b) => args!(a, b: reason => K::ConnectionBlocked),
        M::Unblocked(_) => K::ConnectionUnblocked,
        // The new secret is a credential: only the reason is kept.
        M::UpdateSecret(u) => args!(a, u: reason => K::ConnectionUpdateSecret),
        M::UpdateSecretOk(_) => K::ConnectionUpdateSecretOk,
    }
}

fn exchange_method(a: &mut MethodArgs, m: exchange::AMQPMethod) -> MethodKind {
    use exchange::AMQPMethod as M;
    use MethodKind as K;
    match m {
        M::Declare(d) => {
            a.exchange_type = Some(d.kind.into());
            let kind = K::ExchangeDeclare;
            args!(a, d: exchange, passive, durable, auto_delete, internal, nowait; table => kind)
        }
        M::DeclareOk(_) => K::ExchangeDeclareOk,
        M::Delete(d) => args!(a, d: exchange, if_unused, nowait => K::ExchangeDelete),
        M::DeleteOk(_) => K::ExchangeDeleteOk,
        M::Bind(b) => {
            args!(a, b: destination, source, routing_key, nowait; table => K::ExchangeBind)
        }
        M::BindOk(_) => K::ExchangeBindOk,
        M::Unbind(b) => {
            args!(a, b: destination, source, routing_key, nowait; table => K::ExchangeUnbind)
        }
        M::UnbindOk(_) => K::ExchangeUnbindOk,
    }
}

fn queue_method(a: &mut MethodArgs, m: queue::AMQPMethod) -> MethodKind {
    use queue::AMQPMethod as M;
    use MethodKind as K;
    match m {
        M::Declare(d) => {
            let kind = K::QueueDeclare;
            args!(a, d: queue, passive, durable, exclusive, auto_delete, nowait; table => kind)
        }
        M::DeclareOk(d) => {
            args!(a, d: queue, message_count, consumer_count => K::QueueDeclareOk)
        }
        M::Bind(b) => args!(a, b: queue, exchange, routing_key, nowait; table => K::QueueBind),
        M::BindOk(_) => K::QueueBindOk,
        M::Purge(p) => args!(a, p: queue, nowait => K::QueuePurge),
        M::PurgeOk(p) => args!(a, p: message_count => K::QueuePurgeOk),
        M::Delete(d) => args!(a, d: queue, if_unused, if_empty, nowait => K::QueueDelete),
        M::DeleteOk(d) => args!(a, d: message_count => K::QueueDeleteOk),
        M::Unbind(b) => args!(a, b: queue, exchange, routing_key; table => K::QueueUnbind),
        M::UnbindOk(_) => K::QueueUnbindOk,
    }
}

fn basic_method(a: &mut MethodArgs, m: basic::AMQPMethod, payload: &[u8]) -> MethodKind {
    use basic::AMQPMethod as M;
    use MethodKind as K;
    match m {
        M::Qos(q) => {
            // class id (2) + method id (2) + prefetch-size (4): see method_from_class.
            a.prefetch_size = payload
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            args!(a, q: prefetch_count, global => K::BasicQos)
        }
        M::QosOk(_) => K::BasicQosOk,
        M::Consume(c) => {
            let kind = K::BasicConsume;
            args!(a, c: queue, consumer_tag, no_local, no_ack, exclusive, nowait; table => kind)
        }
        M::ConsumeOk(c) => args!(a, c: consumer_tag => K::BasicConsumeOk),
        M::Cancel(c) => args!(a, c: consumer_tag, nowait => K::BasicCancel),
        M::CancelOk(c) => args!(a, c: consumer_tag => K::BasicCancelOk),
        M::Publish(p) => {
            args!(a, p: exchange, routing_key, mandatory, immediate => K::BasicPublish)
        }
        M::Return(r) => {
            args!(a, r: reply_code, reply_text, exchange, routing_key => K::BasicReturn)
        }
        M::Deliver(d) => {
            let kind = K::BasicDeliver;
            args!(a, d: consumer_tag, delivery_tag, redelivered, exchange, routing_key => kind)
        }
        M::Get(g) => args!(a, g: queue, no_ack => K::BasicGet),
        M::GetOk(g) => {
            let kind = K::BasicGetOk;
            args!(a, g: delivery_tag, redelivered, exchange, routing_key, message_count => kind)
        }
        M::GetEmpty(_) => K::BasicGetEmpty,
        M::Ack(x) => args!(a, x: delivery_tag, multiple => K::BasicAck),
        M::Reject(x) => args!(a, x: delivery_tag, requeue => K::BasicReject),
        M::RecoverAsync(r) => args!(a, r: requeue => K::BasicRecoverAsync),
        M::Recover(r) => args!(a, r: requeue => K::BasicRecover),
        M::RecoverOk(_) => K::BasicRecoverOk,
        M::Nack(x) => args!(a, x: delivery_tag, multiple, requeue => K::BasicNack),
    }
}

/// The ids of the method a close names, and its name when AMQP has one.
fn close_args(a: &mut MethodArgs, class_id: u16, method_id: u16) {
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
            ..Properties::default()
        },
    }
}
