//! amqptrace: a protocol-level AMQP 0-9-1 traffic tracer.
//!
//! Data flows one way through stages that know only the types of the stage
//! before them:
//!
//! ```text
//! source (file: pcap/pcapng | live: interface | proxy: socket | timeline: JSON Lines)
//!   -> pipeline (one ordering driver, for files and the live interface)
//!   -> link   (link/IP/TCP headers of one packet)
//!   -> tcp    (reassembly per connection and direction)
//!   -> stream (AMQP detection, client/broker roles; through tls, TLS sessions
//!              whose secrets are known, decrypted)
//!   -> amqp   (sans-IO frame decoder)
//!   -> event  (typed timeline)
//!   -> analyze (state, verdicts)
//!   -> sink   (text, JSON Lines, JSON summary, ...)
//! ```
//!
//! Every way bytes come in lives in [`source`], side by side. The proxy's
//! tracer feeds its copies straight to the stream stage (they are byte
//! streams already, not packets); the timeline reader yields events.
//!
//! Beside the stages: [`live`] runs a live source (proxy, interface) as a
//! session with live output, recording and `run`'s artifacts; [`redact`]
//! masks the credentials in the bytes of a recording amqptrace writes;
//! [`url`] cuts an AMQP URL into its parts.

pub mod amqp;
pub mod analyze;
pub mod event;
pub mod link;
pub mod live;
pub mod pipeline;
pub mod redact;
pub mod report;
pub mod sink;
pub mod source;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod url;
