//! Output options shared by the live commands (`proxy`, `capture`), turned
//! into the library's [`LiveOptions`] and output writer.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;

use amqptrace::live::{LiveFormat, LiveOptions};

use crate::cli::analyze::ColorChoice;

#[derive(clap::Args, Debug, Clone)]
pub struct LiveArgs {
    /// Output format: text (timeline, live verdicts, final verdict block) or jsonl (one event per
    /// line, docs/events.md; verdicts as {"event":"verdict",...} lines).
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the timeline to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Time threshold, for what only time can prove (a connection that never consumes, a
    /// consume never confirmed, a full prefetch window with nothing in the traffic to compare
    /// it with): certain after SECS, uncertain from 1 s. What the frames prove (a publish
    /// routed away from a consumer's queue, a window full while peers settle) needs no wait.
    /// Default 5 (docs/verdicts.md).
    #[arg(long, value_name = "SECS")]
    pub stall_after: Option<f64>,

    /// Print only verdicts (live and final), not the timeline.
    #[arg(short, long)]
    pub quiet: bool,

    /// Show heartbeats and content header/body frames (folded by default).
    #[arg(short, long)]
    pub verbose: bool,

    /// Record the first N bytes of each message body (never recorded by default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub bodies: usize,

    /// Colour in text output: auto, always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Jsonl,
}

impl LiveArgs {
    /// Checks the options and opens `-o FILE` (or stdout), before the source
    /// starts, so that a bad value or path fails at once.
    pub fn open(&self) -> anyhow::Result<(LiveOptions, Box<dyn Write + Send>)> {
        let opts = LiveOptions {
            format: match self.format {
                Format::Text => LiveFormat::Text,
                Format::Jsonl => LiveFormat::Jsonl,
            },
            quiet: self.quiet,
            verbose: self.verbose,
            color: crate::cli::use_color(self.color, self.output.is_none()),
            analyzer: crate::cli::analyzer_config(self.stall_after)?,
        };
        let w: Box<dyn Write + Send> = match &self.output {
            Some(path) => Box::new(BufWriter::with_capacity(
                1 << 16,
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout())),
        };
        Ok((opts, w))
    }
}
