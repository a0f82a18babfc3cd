//! Live output of `proxy` and `capture`: the timeline as it comes (text or
//! JSON Lines), a verdict line as a verdict becomes certain, and the final
//! verdicts when the source stops. Verdict text is
//! [`crate::analyze`]'s one renderer; this module owns what is printed
//! when, and that an output error stops the output, never the source.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::rc::Rc;

use super::{LiveError, LiveSink};
use crate::analyze::{
    write_live_verdict, write_verdict_block, Analysis, Analyzer, AnalyzerConfig, Certainty,
    Horizon, Scope, Verdict, VerdictKind,
};
use crate::event::{Conn, Event, Timestamp};
use crate::sink::{JsonlSink, Sink, TextOptions, TextSink};

/// The live output's format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LiveFormat {
    /// Timeline, live verdicts, final verdict block.
    Text,
    /// One event per line (docs/events.md); verdicts as `{"event":"verdict",...}` lines.
    Jsonl,
}

/// How a live source's output is written.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub format: LiveFormat,
    /// Only verdicts (live and final), not the timeline.
    pub quiet: bool,
    /// Heartbeats and content frames too (folded by default).
    pub verbose: bool,
    pub color: bool,
    pub analyzer: AnalyzerConfig,
}

/// A writer shared by a sink and the live verdict lines on the tracer thread.
#[derive(Clone)]
struct Shared(Rc<RefCell<Box<dyn Write>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

type VerdictKey = (Scope, Conn, Option<u16>, Option<String>, VerdictKind);

/// Whether a live verdict is printed as it comes: a finding (not `healthy`
/// or `idle`) that the analyzer calls certain; an uncertain stall may still
/// become certain (it is printed then) or go away.
fn worth_printing_live(v: &Verdict) -> bool {
    !matches!(
        v.verdict,
        VerdictKind::Healthy | VerdictKind::Idle | VerdictKind::Standby
    ) && v.certainty == Certainty::Certain
}

/// Live timeline, live verdicts and the final verdicts of a live source.
pub struct LiveOutput {
    analyzer: Analyzer,
    sink: Option<Box<dyn Sink>>,
    out: Shared,
    format: LiveFormat,
    quiet: bool,
    reported: BTreeSet<VerdictKey>,
    start: Option<Timestamp>,
    failed: bool,
}

impl LiveOutput {
    /// Built on the thread that uses it, writing to `w`.
    pub fn new(opts: &LiveOptions, w: Box<dyn Write + Send>) -> Self {
        let w: Box<dyn Write> = w;
        let out = Shared(Rc::new(RefCell::new(w)));
        let sink: Option<Box<dyn Sink>> = match (opts.quiet, opts.format) {
            (true, _) => None,
            (false, LiveFormat::Text) => Some(Box::new(TextSink::new(
                out.clone(),
                TextOptions {
                    verbose: opts.verbose,
                    color: opts.color,
                },
            ))),
            (false, LiveFormat::Jsonl) => Some(Box::new(JsonlSink::new(out.clone()))),
        };
        LiveOutput {
            analyzer: Analyzer::new(opts.analyzer.clone()),
            sink,
            out,
            format: opts.format,
            quiet: opts.quiet,
            reported: BTreeSet::new(),
            start: None,
            failed: false,
        }
    }

    fn write_verdict(&mut self, v: &Verdict, now: Timestamp, live: bool) -> io::Result<()> {
        match self.format {
            LiveFormat::Text => {
                let start = self.start.unwrap_or(now);
                write_live_verdict(v, now.secs_since(start), &mut self.out)
            }
            LiveFormat::Jsonl => {
                let mut obj = serde_json::to_value(v).map_err(io::Error::other)?;
                if let Some(m) = obj.as_object_mut() {
                    m.insert("event".into(), "verdict".into());
                    m.insert(
                        "at".into(),
                        serde_json::to_value(now).map_err(io::Error::other)?,
                    );
                    m.insert("live".into(), live.into());
                }
                writeln!(self.out, "{obj}")
            }
        }
    }

    /// An output error stops the output, never the source (forwarding, capture).
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            if !self.failed {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("amqptrace: writing output: {e}; output stopped, tracing goes on");
                }
                self.failed = true;
            }
            self.sink = None;
            // Replace the writer so that later writes are not attempted.
            *self.out.0.borrow_mut() = Box::new(io::sink());
        }
    }

    /// Flushes the sinks and writes the final verdicts of a source that
    /// stopped at `now` (a recorded end, not "so far"): the verdict block
    /// (on stderr for JSON Lines, whose verdicts are lines).
    pub fn finish(mut self, now: Timestamp) -> Result<Analysis, LiveError> {
        if let Some(s) = self.sink.as_mut() {
            let r = s.finish();
            self.check(r);
        }
        let analysis = self.analyzer.analyze(Horizon::Recorded(now));
        self.start.get_or_insert(now);
        match self.format {
            LiveFormat::Text => {
                let mut block = b"\n".to_vec();
                write_verdict_block(&analysis, &mut block).map_err(LiveError::Output)?;
                let r = self.out.write_all(&block);
                self.check(r);
            }
            LiveFormat::Jsonl => {
                for v in &analysis.verdicts {
                    let r = self.write_verdict(v, now, false);
                    self.check(r);
                }
                write_verdict_block(&analysis, &mut io::stderr().lock())
                    .map_err(LiveError::Output)?;
            }
        }
        self.flush();
        Ok(analysis)
    }
}

impl LiveSink for LiveOutput {
    /// To the analyzer always, to the sink unless quiet.
    fn event(&mut self, ev: &Event) {
        self.start.get_or_insert(ev.ts);
        self.analyzer.handle(ev);
        if let Some(s) = self.sink.as_mut() {
            let r = s.event(ev);
            self.check(r);
        }
    }

    fn upstream_failed(&mut self, ts: Timestamp, conn: Conn, error: &str) {
        if self.quiet {
            return;
        }
        let start = *self.start.get_or_insert(ts);
        let r = match self.format {
            LiveFormat::Text => writeln!(
                self.out,
                "{:>11.6}  {conn}  ✗       proxy: upstream unreachable: {error}; client closed",
                ts.secs_since(start)
            ),
            LiveFormat::Jsonl => {
                let v = serde_json::json!({
                    "ts": ts, "conn": conn, "dir": "s2c", "event": "proxy.upstream-error", "error": error,
                });
                writeln!(self.out, "{v}")
            }
        };
        self.check(r);
    }

    /// Prints the verdicts that have become certain since the last tick: a
    /// verdict is printed within a second of the analyzer calling it
    /// certain; the waiting is the analyzer's rules, none here.
    fn tick(&mut self, now: Timestamp) {
        let started = std::time::Instant::now();
        let analysis = self.analyzer.live_analysis(now);
        // What scripts/bench-soak.sh reads (AMQPTRACE_LOG=amqptrace::tick=debug):
        // the live analysis must not grow with the proxy's history.
        tracing::debug!(
            target: "amqptrace::tick",
            micros = started.elapsed().as_micros() as u64,
            verdicts = analysis.verdicts.len(),
            "live analysis"
        );
        self.start.get_or_insert(now);
        for v in analysis.verdicts.iter().filter(|v| worth_printing_live(v)) {
            let key = (
                v.scope,
                v.conn,
                v.channel,
                v.consumer_tag.clone(),
                v.verdict,
            );
            if self.reported.insert(key) {
                let r = self.write_verdict(v, now, true);
                self.check(r);
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        let r = self.out.flush();
        self.check(r);
    }
}

/// No live output: `run` records only, its reports come from the recording.
pub struct NoOutput;

impl LiveSink for NoOutput {
    fn event(&mut self, _: &Event) {}
    fn upstream_failed(&mut self, _: Timestamp, _: Conn, _: &str) {}
    fn tick(&mut self, _: Timestamp) {}
    fn flush(&mut self) {}
}
