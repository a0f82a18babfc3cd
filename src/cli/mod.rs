//! The binary's subcommands, one file each; `main.rs` only parses and dispatches.

pub mod analyze;
pub mod capture;
pub mod proxy;
pub mod report;
pub mod run;
