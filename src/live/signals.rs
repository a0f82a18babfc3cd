//! The one signal handling of the live commands: SIGINT and SIGTERM, as a
//! stream ([`Signals`], `run` passes each on to its command, `proxy` stops on
//! the first) or as a stop flag (`capture`, whose loop reads libpcap).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals a live command stops on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Sig {
    Int,
    Term,
}

impl Sig {
    pub fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
        }
    }

    /// The signal's number (Linux and every BSD agree on these two).
    pub fn number(self) -> i32 {
        match self {
            Sig::Int => 2,
            Sig::Term => 15,
        }
    }
}

/// SIGINT and SIGTERM, handled from creation on (no longer fatal to the process).
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Registers the handlers; must run inside a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Int,
            _ = self.term.recv() => Sig::Term,
        }
    }
}

/// Sets `stop` on the first SIGINT or SIGTERM: a thread with a small
/// runtime waits for them, a blocking loop checks the flag between reads.
pub fn stop_on_signal(stop: Arc<AtomicBool>) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, not in the thread, so no signal is missed after this returns.
    let mut signals = rt.block_on(async { Signals::new() })?;
    std::thread::Builder::new()
        .name("amqptrace-signals".into())
        .spawn(move || {
            rt.block_on(signals.recv());
            stop.store(true, Ordering::Relaxed);
        })?;
    Ok(())
}
