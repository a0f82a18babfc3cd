//! amqptrace: a protocol-level AMQP 0-9-1 traffic tracer.
//!
//! Data flows one way through stages that know only the types of the stage
//! before them:
//!
//! ```text
//! source (capture file | proxy socket | live interface)
//!   -> link   (link/IP/TCP headers of one packet)
//!   -> tcp    (reassembly per connection and direction)
//!   -> stream (AMQP detection, client/broker roles)
//!   -> amqp   (sans-IO frame decoder)
//!   -> event  (typed timeline)
//!   -> analyze (state, verdicts)
//!   -> sink   (text, JSON Lines, JSON summary, ...)
//! ```
//!
//! Beside the stages: [`redact`] masks the credentials in the bytes of a
//! recording amqptrace writes.

pub mod amqp;
pub mod analyze;
pub mod capture;
pub mod event;
pub mod link;
pub mod livecap;
pub mod pipeline;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod sink;
pub mod source;
pub mod stream;
pub mod tcp;
