//! The binary's subcommands, one file each; `main.rs` only parses and dispatches.

pub mod analyze;
pub mod capture;
pub mod live;
pub mod proxy;
pub mod report;
pub mod run;
pub mod tls;

use std::io::{self, IsTerminal};
use std::time::Duration;

use amqptrace::analyze::{Analysis, AnalyzerConfig};

/// The analyzer configuration `--stall-after SECS` asks for (default when
/// absent), refusing what is not a number of seconds ≥ 0 that a `Duration` holds.
pub fn analyzer_config(stall_after: Option<f64>) -> anyhow::Result<AnalyzerConfig> {
    let cfg = AnalyzerConfig::default();
    let Some(secs) = stall_after else {
        return Ok(cfg);
    };
    Ok(cfg.with_stall_after(seconds("--stall-after", secs)?))
}

/// A `SECS` argument as a `Duration`: NaN, infinities, negative values and
/// values too large for a `Duration` (about 5.8e11 years) are refused with a
/// message naming the option, where `Duration::from_secs_f64` would panic.
pub fn seconds(option: &str, secs: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        secs.is_finite() && secs >= 0.0,
        "{option} {secs:?}: must be a number of seconds ≥ 0"
    );
    Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow::anyhow!("{option} {secs:?}: too large for a number of seconds"))
}

/// A clap value parser for counts such as `--max-connections N`: a whole
/// number from 1 to `max`, refused with clap's usage error (exit 2) otherwise.
pub fn count_in(max: usize) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=max as u64)
}

/// `--color`: always, never, or (auto) when writing to a terminal and `NO_COLOR` is unset or empty.
pub fn use_color(choice: analyze::ColorChoice, to_stdout: bool) -> bool {
    match choice {
        analyze::ColorChoice::Always => true,
        analyze::ColorChoice::Never => false,
        analyze::ColorChoice::Auto => {
            to_stdout
                && io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// The exit code of a finished analysis: a stall, or none.
pub fn exit_code(analysis: &Analysis) -> u8 {
    if analysis.has_stall() {
        crate::exit::STALL
    } else {
        crate::exit::OK
    }
}

/// Prints an offline run's warnings and damage to standard error; DAMAGED when
/// the input was damaged (everything before the damage was read), else OK.
pub fn warnings_then_code(summary: &amqptrace::pipeline::RunSummary) -> u8 {
    for warning in &summary.warnings {
        eprintln!("amqptrace: warning: {warning}");
    }
    for damage in &summary.damage {
        eprintln!("amqptrace: warning: {damage}");
    }
    if summary.damage.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::DAMAGED
    }
}
