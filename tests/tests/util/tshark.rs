//! The external tools the tests lean on, tshark (the decoding oracle) first.
//! A missing tool fails the test with the command that installs it: a test
//! never passes by skipping its oracle.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{short, text};

/// Fails the test when `tool VERSION_ARG` cannot be run, naming the package.
pub fn require(tool: &str, version_arg: &str, package: &str) {
    let ok = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} is not installed: apt-get install -y {package} (scripts/test.sh installs \
         everything the tests need)"
    );
}

pub fn require_tshark() {
    require("tshark", "--version", "tshark");
}

/// Runs `tshark -n -r FILE ARGS...` and returns its stdout; panics with its stderr on failure.
pub fn tshark(file: &Path, args: &[String]) -> String {
    require_tshark();
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("cannot start tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}\n{}",
        short(file),
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `tshark -r FILE [-d tcp.port==PORT,amqp] -Y FILTER -T fields -e F...`:
/// one line per packet, fields separated by tabs.
pub fn tshark_fields(file: &Path, amqp_port: Option<u16>, filter: &str, fields: &[&str]) -> String {
    let mut args = Vec::new();
    if let Some(p) = amqp_port {
        args.extend(["-d".to_string(), format!("tcp.port=={p},amqp")]);
    }
    args.extend(["-Y", filter, "-T", "fields"].map(String::from));
    for f in fields {
        args.extend(["-e".to_string(), f.to_string()]);
    }
    tshark(file, &args)
}

/// `tshark -r FILE DECODE... -Y amqp -T fields -E occurrence=a -E aggregator=, -e F...`:
/// one line per packet with AMQP, fields separated by tabs, every frame's value of a
/// field (a packet may carry several frames) joined by commas. `decode` holds the
/// options that make tshark see AMQP (`-d tcp.port==P,amqp`, a key log, …).
pub fn tshark_amqp_frames(file: &Path, decode: &[String], fields: &[&str]) -> String {
    let mut args = decode.to_vec();
    args.extend(
        [
            "-Y",
            "amqp",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]
        .map(String::from),
    );
    for f in fields {
        args.extend(["-e".to_string(), f.to_string()]);
    }
    tshark(file, &args)
}
