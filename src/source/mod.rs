//! Sources: every way bytes come in, side by side. Each hands out what it
//! read in the order it read it, with the time the data says, and knows
//! nothing of reassembly, decoding or analysis.
//!
//! - [`file`]: pcap and pcapng files, streamed (mapped, or read ahead on a
//!   second thread), and the one capture-magic check ([`file::sniff`]).
//! - [`live`]: one network interface through libpcap (loaded at run time),
//!   with its optional `-w` savefile.
//! - [`proxy`]: a TCP proxy's sockets; it forwards the bytes and hands a
//!   copy of each read to its tracer.
//! - [`timeline`]: a JSON Lines timeline written by amqptrace, read back into
//!   events (the report and re-analysis start from it).

pub mod file;
pub mod live;
pub mod proxy;
pub mod timeline;
