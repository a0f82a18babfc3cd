//! The 8-byte protocol header that opens an AMQP connection, named: AMQP
//! 0-9-1 (the one decoded), and the others a client may send to the same port
//! — AMQP 1.0 and its SASL and TLS layer headers, 0-10, 0-9, 0-8 — so that a
//! client speaking another protocol is reported as such, not as bytes that
//! are "not AMQP". RabbitMQ answers a header it does not take with its own
//! 0-9-1 header and closes the socket (AMQP 0-9-1 spec, 4.2.2).

/// The name of the one protocol decoded, as [`describe_protocol_header`] gives it.
pub const PROTOCOL_0_9_1_NAME: &str = "AMQP 0-9-1";

/// Names an 8-byte protocol header: `("AMQP 0-9-1", true)`, `("AMQP 1.0", false)`…
pub fn describe_protocol_header(h: &[u8]) -> (String, bool) {
    if h.len() < 8 || &h[..4] != b"AMQP" {
        return (super::escape_bytes(h), false);
    }
    let v = [h[4], h[5], h[6], h[7]];
    let name = match v {
        [0, 0, 9, 1] => return (PROTOCOL_0_9_1_NAME.into(), true),
        // AMQP 1.0 (OASIS): protocol id 0 (plain), 2 (TLS), 3 (SASL), then 1.0.0.
        [0, 1, 0, 0] => "AMQP 1.0",
        [2, 1, 0, 0] => "AMQP 1.0 (TLS)",
        [3, 1, 0, 0] => "AMQP 1.0 (SASL)",
        // The pre-0-9-1 headers: class 1, instance 1, then the version.
        [1, 1, 0, 10] => "AMQP 0-10",
        [1, 1, 0, 9] => "AMQP 0-9",
        [1, 1, 0, 8] | [1, 1, 8, 0] | [1, 1, 9, 1] => "AMQP 0-8",
        [a, b, c, d] => return (format!("AMQP {a}.{b}.{c}.{d}"), false),
    };
    (name.into(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_other_protocols_are_named() {
        let cases: &[(&[u8], &str, bool)] = &[
            (b"AMQP\x00\x00\x09\x01", "AMQP 0-9-1", true),
            (b"AMQP\x00\x01\x00\x00", "AMQP 1.0", false),
            (b"AMQP\x03\x01\x00\x00", "AMQP 1.0 (SASL)", false),
            (b"AMQP\x02\x01\x00\x00", "AMQP 1.0 (TLS)", false),
            (b"AMQP\x01\x01\x00\x0a", "AMQP 0-10", false),
            (b"AMQP\x01\x01\x00\x09", "AMQP 0-9", false),
            (b"AMQP\x01\x01\x08\x00", "AMQP 0-8", false),
            (b"AMQP\x07\x07\x07\x07", "AMQP 7.7.7.7", false),
            (b"HTTP/1.1", "HTTP/1.1", false),
        ];
        for (h, name, supported) in cases {
            assert_eq!(describe_protocol_header(h), (name.to_string(), *supported));
        }
    }
}
