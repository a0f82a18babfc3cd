//! The `amqptrace` binary as a user meets it: bad inputs, a capture cut in a
//! packet, password redaction in every output format, `--help`, and the text
//! format's shape and colour rules.

use std::path::Path;
use std::time::Duration;

use amq_protocol::auth::{Credentials, SASLMechanism};
use serde_json::Value;

use crate::util::{
    self, amqptrace, amqptrace_env, amqptrace_within, analyze, assert_same_text, capture, jsonl,
    temp_dir, write, Run,
};

/// The password the synthesised captures carry; distinct from the user name.
const PASSWORD: &str = "S3cr3t-pw";
const USER: &str = "guest";

/// Asserts the contract for an input that cannot be read at all: exit 2, and
/// one clear line on stderr naming the file and `problem`, no panic.
fn assert_unreadable(path: &Path, problem: &[&str]) {
    let run = amqptrace([Path::new("analyze"), path]);
    assert_eq!(run.code, Some(2), "{}: {}", path.display(), run.context());
    assert!(
        !run.stderr.contains("panicked"),
        "{}: {}",
        path.display(),
        run.context()
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr: {}",
        run.context()
    );
    let file_name = path.file_name().unwrap().to_string_lossy();
    assert!(
        lines[0].contains(&*file_name),
        "stderr does not name {file_name}: {}",
        run.context()
    );
    let lower = lines[0].to_lowercase();
    assert!(
        problem.iter().any(|p| lower.contains(p)),
        "stderr does not say the problem (one of {problem:?}): {}",
        run.context()
    );
    assert!(
        run.stdout.is_empty(),
        "nothing may be written for an unreadable input: {}",
        run.stdout
    );
}

#[test]
fn missing_file() {
    let dir = temp_dir();
    assert_unreadable(
        &dir.path().join("no-such-capture.pcap"),
        &["no such file", "cannot open", "not found"],
    );
}

#[test]
fn empty_file() {
    let dir = temp_dir();
    assert_unreadable(&write(dir.path(), "empty.pcap", b""), &["empty"]);
}

#[test]
fn text_file() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "notes.pcap",
        b"these are notes, not a capture\n",
    );
    assert_unreadable(&path, &["not a pcap", "not a capture"]);
}

#[test]
fn pcap_cut_in_its_file_header() {
    let dir = temp_dir();
    let whole = std::fs::read(capture("lapin-basic.pcap")).unwrap();
    for cut in [4, 10, 23] {
        let path = write(dir.path(), &format!("header-cut-{cut}.pcap"), &whole[..cut]);
        assert_unreadable(&path, &["cut short", "truncated", "incomplete"]);
    }
}

#[test]
fn pcapng_cut_in_its_section_header() {
    let dir = temp_dir();
    let whole = std::fs::read(capture("pika-basic.pcapng")).unwrap();
    // The magic alone, inside the fixed part, and inside the options of the
    // section header block (108 bytes long in this file, as Wireshark writes it).
    for cut in [8, 20, 27, 64, 107] {
        let path = write(dir.path(), &format!("shb-cut-{cut}.pcapng"), &whole[..cut]);
        assert_unreadable(&path, &["cut short", "truncated", "incomplete"]);
    }
}

#[test]
fn unsupported_link_type() {
    let dir = temp_dir();
    // Link type 105 is IEEE 802.11 (Wi-Fi frames without radiotap): not decoded.
    let mut pcap = util::pcap_file_header(105);
    util::pcap_record(
        &mut pcap,
        1_764_077_000,
        0,
        &[0x08, 0x02, 0, 0, 0xff, 0xff, 0xff, 0xff],
    );
    let path = write(dir.path(), "wifi.pcap", &pcap);
    assert_unreadable(&path, &["link type", "linktype"]);
    let run = amqptrace([Path::new("analyze"), &path]);
    assert!(
        run.stderr.contains("105") || run.stderr.contains("802"),
        "the link type should be named (105, IEEE 802.11): {}",
        run.context()
    );
}

/// `(1-based packet number, offset of its record)` for each record of a classic
/// little-endian pcap.
fn pcap_records(bytes: &[u8]) -> Vec<(u64, usize, usize)> {
    assert_eq!(
        &bytes[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "a little-endian microsecond pcap"
    );
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push((out.len() as u64 + 1, off, incl));
        off += 16 + incl;
    }
    out
}

#[test]
fn pcap_cut_in_a_packet_keeps_everything_before_it() {
    let dir = temp_dir();
    let original = capture("lapin-basic.pcap");
    let whole = std::fs::read(&original).unwrap();
    let records = pcap_records(&whole);
    assert!(
        records.len() > 20,
        "lapin-basic.pcap should hold a real conversation"
    );
    let full = analyze("jsonl", &original);
    assert!(matches!(full.code, Some(0 | 1)), "{}", full.context());
    // Cut inside the payload of a packet in the middle, and inside a record header.
    let (packet, off, incl) = records[records.len() / 2];
    for (what, cut) in [
        ("packet data", off + 16 + incl / 2),
        ("record header", off + 7),
    ] {
        let path = write(dir.path(), "cut.pcap", &whole[..cut]);
        let run = analyze("jsonl", &path);
        assert!(!run.stderr.contains("panicked"), "{}", run.context());
        // Everything the whole capture yields before the cut packet comes first, unchanged.
        let before: Vec<&str> = full
            .stdout
            .lines()
            .take_while(|l| {
                serde_json::from_str::<Value>(l).unwrap()["frame"]
                    .as_u64()
                    .unwrap()
                    < packet
            })
            .collect();
        let got: Vec<&str> = run.stdout.lines().collect();
        assert!(
            before.len() > 10,
            "too little before packet {packet} to be a meaningful check"
        );
        assert_same_text(
            &format!("cut in {what} of packet {packet}: the untruncated run's prefix"),
            &before.join("\n"),
            &got[..before.len().min(got.len())].join("\n"),
        );
        assert!(
            got[before.len()..].iter().all(|l| {
                serde_json::from_str::<Value>(l).unwrap()["frame"]
                    .as_u64()
                    .unwrap()
                    < packet
            }),
            "nothing from or after the cut packet may be invented: {:?}",
            &got[before.len()..]
        );
        let warning = run
            .stderr
            .lines()
            .find(|l| l.contains("warning"))
            .unwrap_or_else(|| panic!("cut in {what}: no warning on stderr: {}", run.context()));
        assert!(
            warning.contains("cut.pcap"),
            "the warning should name the file: {warning}"
        );
        assert!(
            warning.contains(&packet.to_string()),
            "the warning should name packet {packet}: {warning}"
        );
        // 3 (damaged) unless the cut leaves a stall behind, which takes precedence (1).
        match run.code {
            Some(3) => {}
            Some(1) => {
                let json = analyze("json", &path);
                let doc: Value = serde_json::from_str(&json.stdout).unwrap();
                assert!(
                    doc["verdicts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| !matches!(
                            v["verdict"].as_str(),
                            Some("healthy" | "slow_but_healthy")
                        )),
                    "exit 1 without a stall verdict: {}",
                    json.stdout
                );
            }
            _ => panic!(
                "cut in {what}: expected exit 3 (or 1 for a stall): {}",
                run.context()
            ),
        }
    }
}

/// A synthesised capture (hand-built packets, see `util::synthesised_tcp_pcap`)
/// of one connection's handshake whose `connection.start-ok` authenticates as
/// `guest` / [`PASSWORD`] with `mechanism`.
fn synthesised_login_capture(
    mechanism: SASLMechanism,
    mechanism_name: &str,
    client_port: u16,
) -> Vec<u8> {
    let response = Credentials::new(USER.into(), PASSWORD.into()).sasl_auth_string(mechanism);
    assert!(
        String::from_utf8_lossy(response.as_bytes()).contains(PASSWORD),
        "the synthesised response must carry the password for the test to mean anything"
    );
    let segments = util::handshake(mechanism_name, response);
    util::synthesised_tcp_pcap(client_port, 5672, &segments)
}

/// Every output the CLI can write for `path`, named by its arguments.
fn every_output(path: &Path, dir: &Path) -> Vec<(String, String)> {
    let formats: &[&[&str]] = &[
        &["--format", "text"],
        &["--format", "text", "-v"],
        &["--format", "text", "-v", "--color", "always"],
        &["--format", "jsonl"],
        &["--format", "json"],
        &["--format", "counts"],
        &["--format", "jsonl", "--bodies", "100"],
        &["--format", "text", "-v", "--bodies", "100"],
    ];
    let mut out = Vec::new();
    for args in formats {
        let mut argv: Vec<&std::ffi::OsStr> = vec!["analyze".as_ref()];
        argv.extend(args.iter().map(std::ffi::OsStr::new));
        argv.push(path.as_os_str());
        let run = amqptrace(&argv);
        assert!(
            matches!(run.code, Some(0 | 1)),
            "{args:?}: {}",
            run.context()
        );
        out.push((format!("{args:?} stdout"), run.stdout));
        out.push((format!("{args:?} stderr"), run.stderr));
        // And written to a file with -o.
        let file = dir.join("out");
        argv.extend(["-o".as_ref(), file.as_os_str()]);
        let run = amqptrace(&argv);
        assert!(
            matches!(run.code, Some(0 | 1)),
            "{args:?} -o: {}",
            run.context()
        );
        out.push((
            format!("{args:?} -o FILE"),
            std::fs::read_to_string(&file).unwrap(),
        ));
    }
    out
}

fn assert_no_password(outputs: &[(String, String)], what: &str) {
    for (name, text) in outputs {
        assert!(
            !text.contains(PASSWORD),
            "{what}: the password appears in {name}:\n{text}"
        );
    }
}

#[test]
fn password_never_appears_in_any_output_format() {
    let dir = temp_dir();
    for (mechanism, name, port) in [
        (SASLMechanism::Plain, "PLAIN", 40_001),
        (SASLMechanism::AMQPlain, "AMQPLAIN", 40_002),
    ] {
        let bytes = synthesised_login_capture(mechanism, name, port);
        assert!(
            bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the synthesised capture must carry the password"
        );
        let path = write(dir.path(), &format!("synthesised-{name}.pcap"), &bytes);
        let outputs = every_output(&path, dir.path());
        assert_no_password(&outputs, name);
        // Redaction keeps the mechanism and the user: the frame was decoded, not dropped.
        let jsonl = &outputs
            .iter()
            .find(|(n, _)| n == "[\"--format\", \"jsonl\"] stdout")
            .unwrap()
            .1;
        let start_ok: Value = jsonl
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["method"] == "connection.start-ok")
            .unwrap_or_else(|| panic!("{name}: no connection.start-ok decoded:\n{jsonl}"));
        assert_eq!(start_ok["user"], USER, "{name}: {start_ok}");
        assert_eq!(start_ok["mechanism"], name, "{name}: {start_ok}");
        let text = &outputs
            .iter()
            .find(|(n, _)| n == "[\"--format\", \"text\"] stdout")
            .unwrap()
            .1;
        assert!(
            text.contains(&format!("user={USER}")),
            "{name}: text shows the user:\n{text}"
        );
    }
}

#[test]
fn committed_captures_with_a_login_leak_no_response() {
    // The committed captures log in as guest/guest, so the password equals the
    // user name and cannot be searched for; check instead that no output holds
    // the SASL response itself (PLAIN's "\0guest\0guest", shown in any escaping).
    let dir = temp_dir();
    let captures = util::committed_captures();
    assert!(
        captures.len() >= 10,
        "only {} captures under captures/",
        captures.len()
    );
    let mut with_login = 0;
    for path in &captures {
        let jsonl = analyze("jsonl", path);
        if !jsonl.stdout.contains("\"connection.start-ok\"") {
            continue;
        }
        with_login += 1;
        for (name, text) in every_output(path, dir.path()) {
            for leak in [
                "\\u0000guest\\u0000guest",
                "\0guest\0guest",
                "guestguest",
                "PASSWORD",
                "\"response\"",
            ] {
                assert!(
                    !text.contains(leak),
                    "{}: {name} holds {leak:?}",
                    util::short(path)
                );
            }
        }
    }
    assert!(
        with_login >= 3,
        "expected several committed captures with a connection.start-ok"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let run = amqptrace(["analyze", "--help"]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    for needle in ["Exit codes", "0 ", "1 ", "2 ", "3 ", "stall", "cut"] {
        assert!(
            run.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            run.stdout
        );
    }
}

/// Whether `line` is a timeline line: relative time, `client->broker`, arrow.
fn is_timeline_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(time), Some(conn), Some(arrow)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    time.parse::<f64>().is_ok_and(|t| t >= 0.0)
        && time
            .split_once('.')
            .is_some_and(|(_, frac)| frac.len() == 6)
        && conn.contains("->")
        && matches!(arrow, "→" | "←")
}

fn jsonl_events(path: &Path) -> Vec<Value> {
    jsonl(&analyze("jsonl", path).stdout)
}

#[test]
fn text_shows_one_line_per_frame_with_time_conn_and_arrow() {
    let path = capture("lapin-basic.pcap");
    let events = jsonl_events(&path);
    let folded = |e: &Value| {
        matches!(
            e["method"].as_str(),
            Some("heartbeat" | "content-header" | "content-body")
        )
    };
    for (verbose, expected) in [
        (false, events.iter().filter(|e| !folded(e)).count()),
        (true, events.len()),
    ] {
        let mut args = vec!["analyze", "--format", "text"];
        if verbose {
            args.push("-v");
        }
        let p = path.to_str().unwrap();
        args.push(p);
        let run: Run = amqptrace(&args);
        assert!(matches!(run.code, Some(0 | 1)), "{}", run.context());
        let lines: Vec<&str> = run.stdout.lines().filter(|l| is_timeline_line(l)).collect();
        assert_eq!(
            lines.len(),
            expected,
            "-v={verbose}: one timeline line per event expected\n{}",
            run.stdout
        );
        // The first line is at relative time zero; times never go backwards.
        let times: Vec<f64> = lines
            .iter()
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(times[0], 0.0);
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "relative times go backwards"
        );
        // Every frame line names its packet, as the JSONL does.
        for (line, ev) in lines
            .iter()
            .zip(events.iter().filter(|e| verbose || !folded(e)))
        {
            assert!(
                line.ends_with(&format!("#{}", ev["frame"])),
                "line {line:?} vs event {ev}"
            );
            let arrow = if ev["dir"] == "c2s" { "→" } else { "←" };
            assert!(line.contains(arrow), "line {line:?} vs event {ev}");
            assert!(
                line.contains(ev["conn"].as_str().unwrap()),
                "line {line:?} vs event {ev}"
            );
        }
    }
}

#[test]
fn no_colour_off_a_terminal_or_with_no_color() {
    let path = capture("lapin-basic.pcap");
    let p = path.to_str().unwrap();
    let plain = amqptrace(["analyze", "-v", p]);
    assert!(
        !plain.stdout.contains('\x1b'),
        "ANSI escapes written to a pipe"
    );
    let with_no_color = amqptrace_env(["analyze", "-v", p], &[("NO_COLOR", "1")]);
    assert!(
        !with_no_color.stdout.contains('\x1b'),
        "ANSI escapes despite NO_COLOR"
    );
    // The check can see escapes when there are some.
    let forced = amqptrace(["analyze", "-v", "--color", "always", p]);
    assert!(
        forced.stdout.contains("\x1b["),
        "--color always should colour"
    );
    // On a real terminal (a pty from util-linux `script`, when present):
    // coloured, unless NO_COLOR is set.
    let on_tty = |no_color: bool| -> Option<String> {
        let bin = util::BIN;
        let env = if no_color { "NO_COLOR=1 " } else { "" };
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("env -u NO_COLOR {env}'{bin}' analyze '{p}'"),
                "/dev/null",
            ])
            .output()
            .ok()?;
        out.status.code()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    match (on_tty(false), on_tty(true)) {
        (Some(coloured), Some(uncoloured)) => {
            assert!(coloured.contains("\x1b["), "no colour on a terminal");
            assert!(
                !uncoloured.contains('\x1b'),
                "NO_COLOR ignored on a terminal"
            );
        }
        _ => eprintln!("note: `script` is not available; terminal colour not checked"),
    }
}

/// A refused argument: exit 2, no panic, and stderr names the option.
fn assert_usage_error(args: &[&str], option: &str) {
    let run = amqptrace_within(args, Duration::from_secs(20));
    assert_eq!(run.code, Some(2), "{args:?}: {}", run.context());
    assert!(
        !run.stderr.contains("panicked"),
        "{args:?}: {}",
        run.context()
    );
    assert!(
        run.stderr.contains(option),
        "{args:?}: stderr does not name {option}: {}",
        run.context()
    );
}

/// A proxy whose upstream is never reached: the arguments after it are refused first.
const PROXY_NOWHERE: [&str; 5] = [
    "proxy",
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    "127.0.0.1:9",
];

/// Seconds a `Duration` cannot hold (1e300, 1e20 > 1.8e19), NaN, infinities and
/// negative values are usage errors for every SECS option of every subcommand,
/// not panics in `Duration::from_secs_f64`.
#[test]
fn absurd_seconds_are_usage_errors_for_every_subcommand() {
    let dir = temp_dir();
    let cap = capture("lapin-basic.pcap");
    let cap = cap.to_str().unwrap();
    let html = dir.path().join("r.html");
    let html = html.to_str().unwrap();
    let artifacts = dir.path().join("artifacts");
    let artifacts = artifacts.to_str().unwrap();
    let proxy = PROXY_NOWHERE;
    for value in ["1e300", "1e20", "NaN", "inf", "-inf", "-1", "-0.5"] {
        let stall = format!("--stall-after={value}");
        let drain = format!("--drain={value}");
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["analyze", &stall, cap], "--stall-after"),
            (vec!["report", &stall, "-o", html, cap], "--stall-after"),
            (
                vec!["run", &stall, "--artifacts", artifacts, "--", "true"],
                "--stall-after",
            ),
            ([&proxy[..], &[&stall]].concat(), "--stall-after"),
            ([&proxy[..], &[&drain]].concat(), "--drain"),
            (vec!["capture", "-i", "lo", &stall], "--stall-after"),
        ];
        for (args, option) in cases {
            assert_usage_error(&args, option);
        }
    }
    // The largest values a Duration holds are still accepted.
    let run = amqptrace(["analyze", "--stall-after", "1e15", cap]);
    assert_eq!(run.code, Some(0), "{}", run.context());
}

/// `--max-connections` and `--trace-queue` take 1..=a bound: 0 was quietly
/// 1, 2^32+1 wrapped to 1 permit, and usize::MAX panicked in
/// `Semaphore::new` / `mpsc::channel`.
#[test]
fn connection_and_trace_queue_limits_are_bounded() {
    let proxy = PROXY_NOWHERE;
    for (option, values) in [
        (
            "--max-connections",
            &["0", "1048577", "4294967297", "18446744073709551615", "-1"][..],
        ),
        (
            "--trace-queue",
            &["0", "16777217", "18446744073709551615"][..],
        ),
    ] {
        for value in values {
            let arg = format!("{option}={value}");
            assert_usage_error(&[&proxy[..], &[&arg]].concat(), option);
        }
    }
    // --bodies N only caps a copy of each body: any usize is harmless.
    let cap = capture("lapin-basic.pcap");
    let run = amqptrace([
        "analyze",
        "--bodies",
        "18446744073709551615",
        cap.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.context());
}

/// A read error on a pipe is reported with its byte offset and exit 3 (the
/// packets before it are analysed), never taken for the end of the capture.
/// The error is a real EIO from read(2): strace injects it into the third
/// read of the FIFO that amqptrace reads (a pipe goes through the read-ahead
/// thread, not the mapped path), while a writer feeds the FIFO a committed
/// capture in 4 KiB pieces.
#[test]
fn a_read_error_on_a_pipe_exits_3_with_its_offset() {
    use std::io::Write;
    let strace_ok = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !strace_ok {
        eprintln!("note: strace is not installed; read error injection not checked");
        return;
    }
    let dir = temp_dir();
    let fifo = dir.path().join("capture.pcap");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(capture("lapin-basic.pcap")).unwrap();
    let len = bytes.len();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&writer_path) else {
            return;
        };
        for piece in bytes.chunks(4096) {
            if f.write_all(piece).is_err() {
                return; // the reader is gone, as it should be after the error
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    });
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(&fifo)
        .args(["-e", "trace=read", "-e", "inject=read:error=EIO:when=3"])
        .arg(util::BIN)
        .arg("analyze")
        .arg(&fifo)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Unblock the writer if amqptrace never opened the FIFO.
    let _ = std::fs::File::open(&fifo);
    writer.join().unwrap();
    let run = Run::of(&out);
    assert_eq!(run.code, Some(3), "{}", run.context());
    assert!(!run.stderr.contains("panicked"), "{}", run.context());
    let offset: u64 = run
        .stderr
        .split("read error at byte ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset on stderr: {}", run.context()));
    assert!(
        offset >= 4096 && offset < len as u64,
        "offset {offset} of {len}: {}",
        run.context()
    );
    assert!(
        run.stderr.contains("Input/output error"),
        "the cause is not named: {}",
        run.context()
    );
    // What came before the error was analysed: a timeline and the verdict block.
    assert!(run.stdout.lines().any(is_timeline_line), "{}", run.stdout);
    assert!(run.stdout.contains("verdicts:"), "{}", run.stdout);
}
