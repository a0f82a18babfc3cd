//! The binary's subcommands, one file each; `main.rs` only parses and dispatches.

pub mod analyze;
pub mod capture;
pub mod proxy;
pub mod report;
pub mod run;

use std::io::{self, IsTerminal};
use std::time::Duration;

use amqptrace::analyze::AnalyzerConfig;

/// The analyzer configuration `--stall-after SECS` asks for (default when
/// absent), refusing what is not a number of seconds ≥ 0.
pub fn analyzer_config(stall_after: Option<f64>) -> anyhow::Result<AnalyzerConfig> {
    let cfg = AnalyzerConfig::default();
    let Some(secs) = stall_after else {
        return Ok(cfg);
    };
    anyhow::ensure!(
        secs.is_finite() && secs >= 0.0,
        "--stall-after must be a number of seconds ≥ 0"
    );
    Ok(cfg.with_stall_after(Duration::from_secs_f64(secs)))
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
