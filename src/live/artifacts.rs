//! `run`'s artifacts folder: `capture.pcapng` recorded while the command
//! runs, then `timeline.jsonl`, `verdicts.json`, `summary.txt` and
//! `report.html`, all from analysing the finished recording exactly as
//! `amqptrace analyze capture.pcapng` would (the offline pipeline, the
//! recorded end as the horizon), so the verdicts, the timeline's frame
//! numbers and the report's evidence are those of the file you download.
//!
//! [`Artifacts::record`] starts the recording session (a tracer thread that
//! only records, flushing every second); [`RecordSession::serve`] proxies
//! until its shutdown future completes and writes the artifacts. A snapshot
//! (a signal passed on to the command) writes a first copy from the
//! recording so far, so even a SIGKILL of amqptrace leaves them. No child
//! process here: `run` wires its command in ([`super::child`]).

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::channel::{ChannelSource, Recorder, Traced};
use super::{trace, LiveError, NoOutput};
use crate::analyze::{write_summary, Analysis, Analyzer, AnalyzerConfig, Horizon};
use crate::event::{Event, Timestamp};
use crate::pipeline;
use crate::report::ReportBuilder;
use crate::sink::{JsonlSink, Sink};
use crate::source::proxy::{ProxyConfig, Upstream, TRACE_QUEUE_MESSAGES};
use crate::stream::StreamConfig;

pub const CAPTURE: &str = "capture.pcapng";
pub const TIMELINE: &str = "timeline.jsonl";

fn create(path: &Path) -> Result<BufWriter<File>, LiveError> {
    let file = File::create(path).map_err(|source| LiveError::Create {
        path: path.display().to_string(),
        source,
    })?;
    Ok(BufWriter::with_capacity(1 << 16, file))
}

/// An artifacts folder and how its reports are made from its recording.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub dir: PathBuf,
    /// How the recording is decoded (the broker's port).
    pub stream: StreamConfig,
    pub analyzer: AnalyzerConfig,
}

impl Artifacts {
    /// Creates the folder and its recording, and starts the tracer thread
    /// that records into it: an unwritable folder fails here, before the
    /// command starts. `snapshot` asks for a first copy of the reports.
    pub fn record(
        self,
        keep_credentials: bool,
        snapshot: Arc<Notify>,
    ) -> Result<RecordSession, LiveError> {
        fs::create_dir_all(&self.dir).map_err(|source| LiveError::Create {
            path: self.dir.display().to_string(),
            source,
        })?;
        // Written from the recording at the end; created now to fail early.
        create(&self.dir.join(TIMELINE))?;
        let pcap = Box::new(create(&self.dir.join(CAPTURE))?);
        let recorder = Recorder::new(pcap, CAPTURE, "forwarding goes on", keep_credentials)?;
        let copy = self.clone();
        let on_snapshot = Box::new(move |dropped| {
            let _ = copy.write(dropped, Some(Timestamp::now()));
        });
        let traced = Traced::start(TRACE_QUEUE_MESSAGES, move |rx, counters| {
            let source = ChannelSource::new(
                rx,
                counters,
                None,
                Some(recorder),
                Some((snapshot, on_snapshot)),
            )?;
            trace(source, &mut NoOutput).map(|_| ())
        })?;
        Ok(RecordSession {
            traced,
            artifacts: self,
        })
    }

    /// Analyses `capture.pcapng` as `amqptrace analyze` would and writes
    /// timeline.jsonl, verdicts.json, summary.txt and report.html from it.
    /// `still_recording`: the recording goes on (a snapshot), and its evidence
    /// ends at this moment; `None` for the finished recording, whose end it
    /// records. `dropped`: trace messages lost, for summary.txt.
    pub fn write(
        &self,
        dropped: u64,
        still_recording: Option<Timestamp>,
    ) -> Result<Analysis, LiveError> {
        let capture = self.dir.join(CAPTURE);
        let mut analyzer = Analyzer::new(self.analyzer.clone());
        let mut report = ReportBuilder::new();
        // A fresh timeline beside the old one, renamed over it when complete.
        let timeline_tmp = self.dir.join(format!(".{TIMELINE}.part"));
        let mut timeline = JsonlSink::new(create(&timeline_tmp)?);
        let summary = pipeline::run_files(
            std::slice::from_ref(&capture),
            &self.stream,
            |ev: &Event| {
                analyzer.handle(ev);
                report.event(ev);
                timeline.event(ev)
            },
        )
        .map_err(|source| LiveError::Analyse {
            path: capture.display().to_string(),
            source,
        })?;
        let mut failures: Vec<String> = summary.damage.iter().map(|d| d.to_string()).collect();
        let last = summary.last_ts.unwrap_or_default();
        let analysis = analyzer.analyze(match still_recording {
            Some(now) => Horizon::Recorded(now.max(last)),
            None => summary.horizon(),
        });
        let renamed = timeline
            .finish()
            .and_then(|()| fs::rename(&timeline_tmp, self.dir.join(TIMELINE)));
        if let Err(e) = renamed {
            failures.push(format!("{TIMELINE}: {e}"));
        }
        let mut write = |name: &str, f: &dyn Fn(&mut BufWriter<File>) -> io::Result<()>| {
            let r = File::create(self.dir.join(name)).and_then(|file| {
                let mut w = BufWriter::with_capacity(1 << 16, file);
                f(&mut w)?;
                w.flush()
            });
            if let Err(e) = r {
                failures.push(format!("{name}: {e}"));
            }
        };
        write("verdicts.json", &|w| {
            serde_json::to_writer_pretty(&mut *w, &analysis)?;
            writeln!(w)
        });
        write("summary.txt", &|w| {
            write_summary(&analysis, summary.events, dropped, w)
        });
        write("report.html", &|w| {
            report.write_html(&analysis, "amqptrace run", &mut *w)
        });
        if !failures.is_empty() {
            return Err(LiveError::Artifacts(failures));
        }
        Ok(analysis)
    }
}

/// A recording tracer thread, ready to serve the proxy.
pub struct RecordSession {
    traced: Traced<()>,
    artifacts: Artifacts,
}

impl RecordSession {
    /// Forwards the clients of `listener` to `upstream` until `shutdown`
    /// completes (then connections get 1 s to end), finishes the recording
    /// and writes the artifacts from it. A recording cut short (a full disk)
    /// is still analysed as far as it goes, and its failure returned.
    pub async fn serve(
        self,
        listener: TcpListener,
        upstream: Upstream,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Analysis, LiveError> {
        let cfg = ProxyConfig {
            upstream,
            listen_tls: None,
            max_connections: 4096,
            // A command that exits (or is killed) closes its sockets on the way
            // out: its last frames and FINs get a moment to be forwarded and
            // traced. Only a subprocess that outlives it (an orphaned worker)
            // still holds a connection after that, and is cut.
            drain: Duration::from_secs(1),
        };
        let (recorded, dropped) = self.traced.serve(vec![listener], cfg, shutdown).await;
        let artifacts = self.artifacts;
        let written = tokio::task::spawn_blocking(move || artifacts.write(dropped, None))
            .await
            .unwrap_or(Err(LiveError::TracerPanicked));
        recorded.and(written)
    }
}
