//! AMQP over TLS, offline: the captures under `captures/tls/` (pika over TLS
//! 1.2 with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305, and over TLS 1.3,
//! made by `scripts/make-tls-captures.sh` against a private RabbitMQ node with
//! Python's SSLKEYLOGFILE) decode with `--tls-keylog NAME.keylog` to the
//! method frames tshark shows with the same key log (`-o tls.keylog_file:…
//! -d tcp.port==P,tls -d tls.port==P,amqp`), packet for packet;
//! `NAME.secrets.pcapng` (the key log injected as a Decryption Secrets Block
//! by editcap) gives the same timeline without the option; the verdicts are
//! those of `NAME.expect.json` both ways (a prefetch stall over TLS 1.2 and
//! 1.3 among them), with default options. Without secrets a session is
//! reported as TLS with its server name on a TLS port and not decoded; with
//! wrong secrets it says so. No output holds a secret of the key log or the
//! SASL response. Needs tshark.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use amqptrace::event::MethodKind;
use serde_json::Value;

use crate::util::{self, amqptrace, jsonl, repo, temp_dir};
use crate::verdicts::expectation_problems;

/// Method frames of one direction: `(client port, dir)` → `(packet, channel, method)`.
type Methods = BTreeMap<(u16, String), Vec<(u64, u16, String)>>;

/// The captures, by name: every `NAME.keylog` in `captures/tls/`.
fn captures() -> Vec<String> {
    let dir = repo("captures/tls");
    let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_suffix(".keylog")?.to_string();
            Some(n)
        })
        .collect();
    names.sort();
    // TLS 1.2 with each AEAD, TLS 1.3, and a prefetch stall over each version.
    for want in [
        "tls12-aes128-healthy",
        "tls12-chacha20-healthy",
        "tls12-prefetch-exhausted",
        "tls13-healthy",
        "tls13-prefetch-exhausted",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "captures/tls/{want}.keylog is missing: run scripts/make-tls-captures.sh"
        );
    }
    names
}

fn file(name: &str, ext: &str) -> PathBuf {
    repo("captures/tls").join(format!("{name}.{ext}"))
}

/// `amqptrace analyze --format FORMAT [ARGS…] CAPTURE`, exit 0 or 1, its stdout.
fn analyze(format: &str, capture: &Path, args: &[&OsStr]) -> String {
    let mut all: Vec<&OsStr> = vec![OsStr::new("analyze"), OsStr::new("-f"), OsStr::new(format)];
    all.extend_from_slice(args);
    all.push(capture.as_os_str());
    let run = amqptrace(all);
    assert!(
        matches!(run.code, Some(0 | 1)),
        "analyze {}: {}",
        util::short(capture),
        run.context()
    );
    run.stdout
}

fn with_keylog(format: &str, name: &str) -> String {
    let keylog = file(name, "keylog");
    analyze(
        format,
        &file(name, "pcapng"),
        &[OsStr::new("--tls-keylog"), keylog.as_os_str()],
    )
}

fn ours(timeline: &str) -> (Methods, u16) {
    let mut methods = Methods::new();
    let mut broker_port = 0;
    for ev in jsonl(timeline) {
        let conn = ev["conn"].as_str().unwrap_or_default();
        let Some((client, broker)) = conn.split_once("->") else {
            continue;
        };
        let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        broker_port = port(broker).unwrap_or(0);
        let method = ev["method"].as_str().unwrap_or_default();
        if ev["event"] == "frame" && method.contains('.') {
            methods
                .entry((
                    port(client).unwrap_or(0),
                    ev["dir"].as_str().unwrap_or("").into(),
                ))
                .or_default()
                .push((
                    ev["frame"].as_u64().unwrap_or(0),
                    ev["channel"].as_u64().unwrap_or(0) as u16,
                    method.to_string(),
                ));
        }
    }
    (methods, broker_port)
}

/// tshark's method frames, decrypted with the key log, the broker port decoded as TLS then AMQP.
fn tsharks(name: &str, broker_port: u16) -> Methods {
    let keylog = file(name, "keylog");
    let decode = [
        "-o".to_string(),
        format!("tls.keylog_file:{}", keylog.display()),
        "-d".into(),
        format!("tcp.port=={broker_port},tls"),
        "-d".into(),
        format!("tls.port=={broker_port},amqp"),
    ];
    let fields = [
        "frame.number",
        "tcp.srcport",
        "tcp.dstport",
        "amqp.type",
        "amqp.channel",
        "amqp.method.class",
        "amqp.method.method",
    ];
    let out = util::tshark_amqp_frames(&file(name, "pcapng"), &decode, &fields);
    let mut methods = Methods::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 7, "{name}: unexpected tshark line {line:?}");
        let list = |s: &str| -> Vec<u16> {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(|x| x.parse().unwrap())
                .collect()
        };
        let packet: u64 = f[0].parse().unwrap();
        let (src, dst): (u16, u16) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        let key = if dst == broker_port {
            (src, "c2s".to_string())
        } else {
            (dst, "s2c".to_string())
        };
        let (types, channels) = (list(f[3]), list(f[4]));
        let mut ids = list(f[5]).into_iter().zip(list(f[6]));
        for (t, ch) in types.iter().zip(channels) {
            if *t != 1 {
                continue;
            }
            let (class, method) = ids.next().expect("a class and method per method frame");
            let kind = MethodKind::from_ids(class, method)
                .unwrap_or_else(|| panic!("{name}: tshark shows unknown method {class}.{method}"));
            methods
                .entry(key.clone())
                .or_default()
                .push((packet, ch, kind.name().to_string()));
        }
    }
    methods
}

#[test]
fn with_the_key_log_the_methods_are_tsharks_packet_for_packet() {
    util::require_tshark();
    for name in captures() {
        let (got, broker_port) = ours(&with_keylog("jsonl", &name));
        let frames: usize = got.values().map(Vec::len).sum();
        // Two connections each: publisher and consumer, from connection.start to their end.
        assert!(
            got.len() >= 4 && frames > 30,
            "{name}: only {frames} method frames in {} directions decoded",
            got.len()
        );
        let want = tsharks(&name, broker_port);
        util::assert_same_debug(&format!("{name}: method frames"), &want, &got);
    }
}

#[test]
fn injected_secrets_give_the_same_timeline_without_the_option() {
    for name in captures() {
        let injected = analyze("jsonl", &file(name.as_str(), "secrets.pcapng"), &[]);
        let given = with_keylog("jsonl", &name);
        assert!(!given.is_empty());
        assert!(
            injected == given,
            "{name}: the timeline of {name}.secrets.pcapng differs from --tls-keylog's"
        );
    }
}

#[test]
fn verdicts_hold_over_tls_with_default_options() {
    for name in captures() {
        let expect = file(&name, "expect.json");
        for (how, json) in [
            ("--tls-keylog", with_keylog("json", &name)),
            (
                "injected secrets",
                analyze("json", &file(&name, "secrets.pcapng"), &[]),
            ),
        ] {
            let doc: Value = serde_json::from_str(&json).unwrap();
            let problems = expectation_problems(&expect, &doc);
            assert!(
                problems.is_empty(),
                "{name} ({how}): the analysis misses its expectations:\n  {}",
                problems.join("\n  ")
            );
        }
        // The stall captures are stalls, found offline from the decrypted traffic.
        if name.ends_with("prefetch-exhausted") {
            let doc: Value = serde_json::from_str(&with_keylog("json", &name)).unwrap();
            assert!(
                util::verdicts_of(&doc)
                    .iter()
                    .any(|v| v["verdict"] == "prefetch_exhausted" && v["scope"] == "consumer"),
                "{name}: no prefetch_exhausted verdict"
            );
        }
    }
}

#[test]
fn without_secrets_a_session_is_tls_with_its_server_name_never_guessed() {
    for name in captures() {
        let capture = file(&name, "pcapng");
        // On the TLS port: each connection is one `tls` error naming the server, nothing decoded.
        let port = ours(&with_keylog("jsonl", &name)).1.to_string();
        let timeline = analyze(
            "jsonl",
            &capture,
            &[OsStr::new("--tls-port"), OsStr::new(&port)],
        );
        let events = jsonl(&timeline);
        let tls: Vec<&Value> = events.iter().filter(|e| e["event"] == "error").collect();
        assert_eq!(
            tls.len(),
            2,
            "{name}: one TLS note per connection: {timeline}"
        );
        for e in &tls {
            assert_eq!(e["error"]["kind"], "tls", "{name}: {e}");
            assert_eq!(e["error"]["server_name"], "localhost", "{name}: {e}");
        }
        assert!(
            events.iter().all(|e| e["event"] != "frame"),
            "{name}: frames decoded without secrets"
        );
        // On another port, TLS without secrets is not taken for AMQP at all.
        assert_eq!(analyze("jsonl", &capture, &[]), "", "{name}");
    }
}

#[test]
fn wrong_secrets_are_reported_not_decoded() {
    let dir = temp_dir();
    for name in captures() {
        // The same client randoms, every secret's last byte changed.
        let text = std::fs::read_to_string(file(&name, "keylog")).unwrap();
        let wrong: String = text
            .lines()
            .map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
                [label, random, secret] if !label.starts_with('#') => {
                    let last = if secret.ends_with('0') { '1' } else { '0' };
                    format!("{label} {random} {}{last}\n", &secret[..secret.len() - 1])
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let keylog = util::write(dir.path(), &format!("{name}.keylog"), wrong.as_bytes());
        let timeline = analyze(
            "jsonl",
            &file(&name, "pcapng"),
            &[OsStr::new("--tls-keylog"), keylog.as_os_str()],
        );
        let events = jsonl(&timeline);
        assert!(
            events.iter().all(|e| e["event"] != "frame"),
            "{name}: {timeline}"
        );
        let errors: Vec<&Value> = events
            .iter()
            .filter(|e| e["error"]["kind"] == "tls_decrypt")
            .collect();
        assert!(
            !errors.is_empty(),
            "{name}: wrong secrets not reported: {timeline}"
        );
        for e in errors {
            let detail = e["error"]["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("does not decrypt"), "{name}: {detail}");
        }
    }
}

#[test]
fn no_output_holds_a_secret_or_the_login() {
    for name in captures() {
        let text = std::fs::read_to_string(file(&name, "keylog")).unwrap();
        let secrets: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(' ').nth(2))
            .map(str::to_lowercase)
            .collect();
        assert!(!secrets.is_empty());
        let mut outputs = vec![with_keylog("json", &name), with_keylog("jsonl", &name)];
        let keylog = file(&name, "keylog");
        let verbose = [
            OsStr::new("--tls-keylog"),
            keylog.as_os_str(),
            OsStr::new("-v"),
        ];
        outputs.push(analyze("text", &file(&name, "pcapng"), &verbose));
        let mut logged_in = false;
        for out in &outputs {
            logged_in |= out.contains("connection.start-ok");
            let lower = out.to_lowercase();
            for s in &secrets {
                assert!(
                    !lower.contains(s.as_str()),
                    "{name}: a key log secret in the output"
                );
            }
            for leak in ["\\u0000guest\\u0000guest", "\0guest\0guest", "guestguest"] {
                assert!(
                    !out.contains(leak),
                    "{name}: the SASL response in the output"
                );
            }
        }
        assert!(logged_in, "{name}: no connection.start-ok decoded");
    }
}

#[test]
fn a_key_log_without_secrets_is_a_usage_error_naming_the_file() {
    let dir = temp_dir();
    let bad = util::write(dir.path(), "not-a-keylog.txt", b"hello CLIENT_RANDOM\n");
    let capture = file("tls13-healthy", "pcapng");
    let run = amqptrace([
        OsStr::new("analyze"),
        OsStr::new("--tls-keylog"),
        bad.as_os_str(),
        capture.as_os_str(),
    ]);
    assert_eq!(run.code, Some(2), "{}", run.context());
    assert!(run.stderr.contains("not-a-keylog.txt"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("hello"),
        "the file's contents in: {}",
        run.stderr
    );
}

#[test]
fn tls13_without_the_handshake_secrets_decodes_the_same() {
    let dir = temp_dir();
    for name in captures().into_iter().filter(|n| n.starts_with("tls13")) {
        let text = std::fs::read_to_string(file(&name, "keylog")).unwrap();
        let traffic_only: String = text
            .lines()
            .filter(|l| !l.contains("HANDSHAKE_TRAFFIC_SECRET"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(
            traffic_only, text,
            "{name}: the key log has handshake secrets"
        );
        let keylog = util::write(
            dir.path(),
            &format!("{name}.keylog"),
            traffic_only.as_bytes(),
        );
        let timeline = analyze(
            "jsonl",
            &file(&name, "pcapng"),
            &[OsStr::new("--tls-keylog"), keylog.as_os_str()],
        );
        assert!(
            timeline == with_keylog("jsonl", &name),
            "{name}: the timeline differs without the handshake secrets"
        );
    }
}

#[test]
fn the_captures_cover_every_record_protection() {
    // tshark reads the ServerHellos: TLS 1.2 AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; TLS 1.3.
    for (name, suite) in [
        ("tls12-aes128-healthy", "0xc02f"),
        ("tls12-prefetch-exhausted", "0xc030"),
        ("tls12-chacha20-healthy", "0xcca8"),
        ("tls13-healthy", "0x1302"),
        ("tls13-prefetch-exhausted", "0x1302"),
    ] {
        let out = util::tshark_fields(
            &file(name, "pcapng"),
            None,
            "tls.handshake.type == 2",
            &["tls.handshake.ciphersuite"],
        );
        let suites: Vec<&str> = out.lines().collect();
        assert_eq!(
            suites,
            [suite, suite],
            "{name}: the ServerHellos' cipher suites"
        );
    }
}
