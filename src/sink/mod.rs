//! Sinks: where the timeline goes. Terminal text, JSON Lines, per-method
//! counts, Chrome trace, and pcapng recordings.
//!
//! A sink takes [`Event`]s one at a time and writes them to any `io::Write`;
//! it knows nothing of sources, reassembly or decoding. One sink records
//! bytes rather than events: [`PcapRecorder`] writes the proxy's trace
//! messages as pcapng (through [`PcapngWriter`]), so it reads the proxy
//! source's message type and the leg names the capture reader expects. Output is buffered and
//! flushed by [`Sink::finish`] (and on drop of the writer), so nothing already
//! traced is lost at exit.

mod chrome_trace;
mod counts;
pub mod deliveries;
mod jsonl;
pub mod pcapng;
mod recorder;
mod text;

use std::io;

use crate::event::Event;

pub use chrome_trace::ChromeTraceSink;
pub use counts::CountsSink;
pub use jsonl::JsonlSink;
pub use pcapng::PcapngWriter;
pub use recorder::PcapRecorder;
pub use text::{TextOptions, TextSink};

/// A consumer of timeline events.
pub trait Sink {
    fn event(&mut self, ev: &Event) -> io::Result<()>;
    /// Writes whatever is pending (a summary, buffered bytes).
    fn finish(&mut self) -> io::Result<()>;
}
