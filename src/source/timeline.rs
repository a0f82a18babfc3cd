//! Reading a timeline back: JSON Lines written by `amqptrace analyze --format
//! jsonl` (schema in `docs/events.md`) turned into [`Event`]s again, so that a
//! report built from a timeline file gets the same verdicts as one built from
//! the capture.
//!
//! It reads through `serde_json::Value` and fills the event types field by
//! field instead of deriving `Deserialize` on them: `src/event.rs` keeps its
//! serialisation-only types, and a field added there without a line here is
//! simply not read back (the JSON is the contract, not the Rust layout).
//! What the schema never carries (message bodies beyond `--bodies`, the
//! password) cannot come back either.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::event::{
    self, Conn, ContentBody, ContentBodyTag, ContentHeader, ContentHeaderTag, DecodeError, Dir,
    Event, EventKind, Frame, GapReason, Heartbeat, Method, MethodArgs, MethodKind, Properties,
    ProtocolHeaderTag, Timestamp,
};

/// Why a line of a timeline file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: not JSON: {source}")]
    Json {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: {what}")]
    Schema { line: u64, what: String },
}

/// Reads every event of a JSON Lines timeline, calling `on_event` for each; blank lines are skipped.
pub fn read_events<R: BufRead>(
    input: R,
    mut on_event: impl FnMut(&Event),
) -> Result<u64, TimelineError> {
    let mut n = 0;
    for (i, line) in input.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|source| TimelineError::Io {
            line: line_no,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|source| TimelineError::Json {
            line: line_no,
            source,
        })?;
        let ev = event_from_value(v).map_err(|what| TimelineError::Schema {
            line: line_no,
            what,
        })?;
        on_event(&ev);
        n += 1;
    }
    Ok(n)
}

/// One JSON object of the schema → its [`Event`].
pub fn event_from_value(v: Value) -> Result<Event, String> {
    let Value::Object(o) = v else {
        return Err("not a JSON object".into());
    };
    let frame = o.get("frame").and_then(Value::as_u64).ok_or("no frame")?;
    let file = o.get("file").and_then(Value::as_u64).unwrap_or(0) as u32;
    let ts = parse_rfc3339(o.get("ts").and_then(Value::as_str).ok_or("no ts")?)?;
    let conn = parse_conn(o.get("conn").and_then(Value::as_str).ok_or("no conn")?)?;
    let dir = match o.get("dir").and_then(Value::as_str) {
        Some("c2s") => Dir::C2S,
        Some("s2c") => Dir::S2C,
        _ => return Err("dir is neither c2s nor s2c".into()),
    };
    let kind = match o.get("event").and_then(Value::as_str).ok_or("no event")? {
        "tcp.open" => EventKind::TcpOpen,
        "tcp.close" => EventKind::TcpClose,
        "tcp.reset" => EventKind::TcpReset,
        "tcp.zero-window" => EventKind::TcpZeroWindow,
        "tcp.window-open" => EventKind::TcpWindowOpen,
        "gap" => EventKind::Gap {
            bytes: get(&o, "bytes"),
            reason: match o.get("reason").and_then(Value::as_str) {
                Some("mid_connection") => GapReason::MidConnection,
                Some("truncated") => GapReason::Truncated,
                _ => GapReason::Lost,
            },
        },
        "error" => EventKind::Error {
            offset: get(&o, "offset").unwrap_or(0),
            error: decode_error(o.get("error")),
        },
        "frame" => frame_kind(&o)?,
        other => return Err(format!("unknown event {other:?}")),
    };
    Ok(Event {
        frame,
        file,
        ts,
        conn,
        dir,
        kind,
    })
}

fn get<T: ReadValue>(o: &Map<String, Value>, key: &str) -> Option<T> {
    o.get(key).and_then(T::read_value)
}

fn decode_error(v: Option<&Value>) -> DecodeError {
    let Some(Value::Object(o)) = v else {
        return DecodeError::NotAmqp {
            first_bytes: String::new(),
        };
    };
    let s = |k: &str| get::<String>(o, k).unwrap_or_default();
    match o.get("kind").and_then(Value::as_str) {
        Some("unsupported_protocol") => DecodeError::UnsupportedProtocol {
            protocol: s("protocol"),
        },
        Some("tls") => DecodeError::Tls {
            port: get(o, "port").unwrap_or(0),
            server_name: get(o, "server_name"),
        },
        Some("tls_decrypt") => DecodeError::TlsDecrypt {
            detail: s("detail"),
        },
        Some("bad_frame_type") => DecodeError::BadFrameType {
            frame_type: get(o, "frame_type").unwrap_or(0),
        },
        Some("frame_too_large") => DecodeError::FrameTooLarge {
            size: get(o, "size").unwrap_or(0),
            limit: get(o, "limit").unwrap_or(0),
        },
        Some("bad_frame_end") => DecodeError::BadFrameEnd {
            found: get(o, "found").unwrap_or(0),
        },
        Some("malformed") => DecodeError::Malformed {
            what: s("what"),
            channel: get(o, "channel").unwrap_or(0),
            detail: s("detail"),
        },
        _ => DecodeError::NotAmqp {
            first_bytes: s("first_bytes"),
        },
    }
}

/// Sets one field of a `T` from its JSON value.
type Setter<T> = fn(&mut T, &Value);

/// A value read back from its JSON (None for null or a value of another type).
trait ReadValue: Sized {
    fn read_value(v: &Value) -> Option<Self>;
}

impl<T: DeserializeOwned> ReadValue for T {
    fn read_value(v: &Value) -> Option<T> {
        if v.is_null() {
            return None;
        }
        T::deserialize(v).ok()
    }
}

impl ReadValue for MethodKind {
    fn read_value(v: &Value) -> Option<MethodKind> {
        v.as_str().and_then(method_by_name)
    }
}

/// A struct of optional fields, filled from the keys of a JSON object.
trait ReadFields: Default + 'static {
    /// JSON key → setter.
    fn setters() -> &'static HashMap<&'static str, Setter<Self>>;

    /// Walks the object's keys once (instead of looking up every field's key).
    fn read_fields(o: &Map<String, Value>) -> Self {
        let table = Self::setters();
        let mut t = Self::default();
        for (k, v) in o {
            if let Some(set) = table.get(k.as_str()) {
                set(&mut t, v);
            }
        }
        t
    }
}

/// [`ReadFields`] from a field list of `event` ([`event::method_args`], [`event::properties`]).
macro_rules! read_fields {
    ($(#[$doc:meta])* $name:ident {
        $( $(#[$field_doc:meta])* $field:ident $(as $key:literal)? : $ty:ty, )*
    }) => {
        impl ReadFields for event::$name {
            fn setters() -> &'static HashMap<&'static str, Setter<Self>> {
                static TABLE: OnceLock<HashMap<&'static str, Setter<event::$name>>> =
                    OnceLock::new();
                TABLE.get_or_init(|| {
                    HashMap::from([$((
                        event::json_key!($field $($key)?),
                        (|t: &mut Self, v: &Value| t.$field = ReadValue::read_value(v))
                            as Setter<Self>,
                    )),*])
                })
            }
        }
    };
}

event::method_args!(read_fields);
event::properties!(read_fields);

fn frame_kind(o: &Map<String, Value>) -> Result<EventKind, String> {
    let method = o.get("method").and_then(Value::as_str).ok_or("no method")?;
    if method == "protocol-header" {
        return Ok(EventKind::ProtocolHeader {
            method: ProtocolHeaderTag,
            protocol: get(o, "protocol").unwrap_or_default(),
            supported: get(o, "supported").unwrap_or(false),
        });
    }
    let channel = get(o, "channel").unwrap_or(0);
    let frame = match method {
        "heartbeat" => Frame::Heartbeat(Heartbeat),
        "content-body" => Frame::ContentBody(ContentBody {
            method: ContentBodyTag,
            size: get(o, "size").unwrap_or(0),
            body: get(o, "body"),
            cut: event::BodyCut(get(o, "missing_bytes")),
        }),
        "content-header" => Frame::ContentHeader(Box::new(ContentHeader {
            method: ContentHeaderTag,
            class_id: get(o, "class_id").unwrap_or(60),
            body_size: get(o, "body_size").unwrap_or(0),
            properties: Properties::read_fields(o),
        })),
        name => {
            let kind = method_by_name(name).ok_or_else(|| format!("unknown method {name:?}"))?;
            let args = MethodArgs::read_fields(o);
            Frame::Method(Box::new(Method::new(kind, args)))
        }
    };
    Ok(EventKind::Frame { channel, frame })
}

fn method_by_name(name: &str) -> Option<MethodKind> {
    static BY_NAME: OnceLock<HashMap<&'static str, MethodKind>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| MethodKind::ALL.iter().map(|m| (m.name(), *m)).collect())
        .get(name)
        .copied()
}

fn parse_conn(s: &str) -> Result<Conn, String> {
    let (c, b) = s
        .split_once("->")
        .ok_or_else(|| format!("conn {s:?} is not client->broker"))?;
    let addr = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|e| format!("conn {s:?}: {a:?}: {e}"))
    };
    Ok(Conn {
        client: addr(c)?,
        broker: addr(b)?,
    })
}

/// `2026-11-25T13:24:32.123456Z` (what [`Timestamp::to_rfc3339`] writes; any
/// number of fraction digits, `Z` or a numeric offset).
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    // A zone (`Z` or an offset) is required: 19 characters are a bare local time.
    Some(s)
        .filter(|s| s.len() >= 20)
        .and_then(Timestamp::parse_iso8601)
        .ok_or_else(|| format!("ts {s:?} is not RFC 3339"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for ns in [0i64, 1_764_077_072_123_456_000, 951_782_400_000_001_000] {
            let t = Timestamp(ns);
            assert_eq!(parse_rfc3339(&t.to_rfc3339()), Ok(t));
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(Timestamp(0)));
        assert!(parse_rfc3339("yesterday").is_err());
    }

    /// Every event of committed captures comes back equal from its own JSON.
    #[test]
    fn events_of_committed_captures_round_trip() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let paths: Vec<std::path::PathBuf> = [
            "captures/pika-basic.pcapng",
            "captures/lapin-basic.pcap",
            "captures/snaplen-80.pcap",
            "captures/failures/missing-queue-404.pcapng",
        ]
        .iter()
        .map(|p| root.join(p))
        .collect();
        let mut n = 0;
        for p in paths {
            crate::pipeline::run_files(&[p], &crate::stream::StreamConfig::default(), |ev| {
                let json = serde_json::to_value(ev).unwrap();
                let back = event_from_value(json.clone()).unwrap();
                assert_eq!(serde_json::to_value(&back).unwrap(), json);
                n += 1;
                Ok(())
            })
            .unwrap();
        }
        assert!(n > 300, "{n} events");
    }
}
