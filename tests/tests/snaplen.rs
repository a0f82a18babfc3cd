//! Captures cut short by the snaplen (issue 17): `captures/snaplen/`, made by
//! `scripts/make-snaplen-captures.sh` (a healthy flow and a prefetch stall by
//! pika, each whole and cut by `editcap -s` to 80 and 128 bytes), and the
//! `tcpdump -s 80` capture `captures/snaplen-80.pcap`.
//!
//! - Method frames per connection, direction and method equal tshark's on the
//!   same file, tshark run without `tcp.reassemble_out_of_order` (it dissects
//!   each cut segment from its start, as amqptrace resynchronises). One
//!   documented exception, checked precisely: tshark's AMQP dissector ignores
//!   the 0-9-1 protocol header when it guesses the version (its
//!   `check_amqp_version` knows `AMQP\x01\x01\x00\x09`, not
//!   `AMQP\x00\x00\x09\x01`) and otherwise needs a packet holding exactly one
//!   frame with its frame-end octet, which a cut packet never has; so it decodes
//!   nothing on a connection before its first short packet. amqptrace's
//!   methods in those packets are compared with tshark's on the whole capture
//!   of the same run instead, packet for packet.
//! - With `-s 128` the verdicts are those of the whole capture, field for
//!   field; their explanations too, but for the connection's name and client
//!   library, which `connection.start-ok` carries past its first 128 bytes.
//! - With `-s 80` the tags are cut: no stall is invented, and the verdicts say
//!   what is known, with the counts tshark finds on the whole capture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util;

/// `(conn, dir)` as amqptrace spells them.
type Direction = (String, String);
/// Method name -> count.
type Counts = BTreeMap<String, u64>;

fn snaplen_dir() -> PathBuf {
    util::repo("captures/snaplen")
}

/// amqptrace's method frames: (conn, dir) -> [(packet, method)], and the connections.
fn amqptrace_methods(file: &Path) -> BTreeMap<Direction, Vec<(u64, String)>> {
    let run = util::analyze("jsonl", file);
    assert!(
        matches!(run.code, Some(0 | 1)),
        "{}: {}",
        file.display(),
        run.context()
    );
    let mut out: BTreeMap<Direction, Vec<(u64, String)>> = BTreeMap::new();
    for line in run.stdout.lines() {
        let ev: Value = serde_json::from_str(line).expect("a JSON line");
        let method = ev["method"].as_str().unwrap_or_default();
        if ev["event"] == "frame" && method.contains('.') {
            out.entry((
                ev["conn"].as_str().unwrap_or_default().to_string(),
                ev["dir"].as_str().unwrap_or_default().to_string(),
            ))
            .or_default()
            .push((ev["frame"].as_u64().unwrap_or(0), method.to_string()));
        }
    }
    out
}

/// tshark's named method frames, keyed like amqptrace's: (conn, dir) ->
/// [(packet, method)]; and per conn the first packet tshark decoded AMQP in.
struct Tshark {
    methods: BTreeMap<Direction, Vec<(u64, String)>>,
    first_decoded: BTreeMap<String, u64>,
    /// Method frames whose ids the snaplen cut: neither tool can name them.
    unnamed: u64,
}

fn tshark_methods(file: &Path, conns: &[String]) -> Tshark {
    let decode = [
        "-o",
        "tcp.reassemble_out_of_order:FALSE",
        "-d",
        "tcp.port==5672,amqp",
    ]
    .map(String::from);
    let out = util::tshark_amqp_frames(
        file,
        &decode,
        &[
            "frame.number",
            "tcp.srcport",
            "tcp.dstport",
            "amqp.type",
            "amqp.method.class",
            "amqp.method.method",
        ],
    );
    let mut t = Tshark {
        methods: BTreeMap::new(),
        first_decoded: BTreeMap::new(),
        unnamed: 0,
    };
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let packet: u64 = f[0].parse().expect("frame.number");
        let (src, dst) = (f[1], f[2]);
        let key = conns.iter().find_map(|c| {
            let client_port = c.split("->").next()?.rsplit(':').next()?;
            if client_port == src && dst == "5672" {
                Some((c.clone(), "c2s".to_string()))
            } else if client_port == dst && src == "5672" {
                Some((c.clone(), "s2c".to_string()))
            } else {
                None
            }
        });
        let key = key.unwrap_or_else(|| {
            panic!("{}: packet {packet} on no known connection", file.display())
        });
        t.first_decoded.entry(key.0.clone()).or_insert(packet);
        let list = |s: &str| -> Vec<u16> { s.split(',').filter_map(|x| x.parse().ok()).collect() };
        let (types, classes, ids) = (list(f[3]), list(f[4]), list(f[5]));
        let methods = types.iter().filter(|&&ty| ty == 1).count();
        for i in 0..methods {
            match (classes.get(i), ids.get(i)) {
                (Some(&c), Some(&m)) => {
                    let name = amqptrace::event::MethodKind::from_ids(c, m)
                        .map(|k| k.name().to_string())
                        .unwrap_or_else(|| format!("unknown({c}.{m})"));
                    t.methods
                        .entry(key.clone())
                        .or_default()
                        .push((packet, name));
                }
                _ => t.unnamed += 1,
            }
        }
    }
    t
}

fn counts<'a>(frames: impl Iterator<Item = &'a (u64, String)>) -> Counts {
    let mut c = Counts::new();
    for (_, m) in frames {
        *c.entry(m.clone()).or_default() += 1;
    }
    c
}

/// The whole capture of the same run, for `NAME-sN.pcap`.
fn whole_of(cut: &Path) -> Option<PathBuf> {
    let stem = cut.file_stem()?.to_str()?;
    let (name, _) = stem.rsplit_once("-s")?;
    let p = cut.with_file_name(format!("{name}.pcap"));
    p.exists().then_some(p)
}

/// Compares one cut capture with tshark; returns the disagreements and the number of methods compared.
fn compare_with_tshark(file: &Path) -> (String, u64) {
    let ours = amqptrace_methods(file);
    let conns: Vec<String> = ours.keys().map(|(c, _)| c.clone()).collect();
    let theirs = tshark_methods(file, &conns);
    let whole = whole_of(file).map(|w| tshark_methods(&w, &conns));
    let mut failures = String::new();
    let mut compared = 0;
    let keys: std::collections::BTreeSet<&Direction> =
        ours.keys().chain(theirs.methods.keys()).collect();
    for key in keys {
        let none = Vec::new();
        let o = ours.get(key).unwrap_or(&none);
        let t = theirs.methods.get(key).unwrap_or(&none);
        // tshark decodes nothing on the connection before this packet (module doc).
        let from = theirs
            .first_decoded
            .get(&key.0)
            .copied()
            .unwrap_or(u64::MAX);
        let (before, after): (Vec<_>, Vec<_>) = o.iter().partition(|(p, _)| *p < from);
        let (ca, ct) = (counts(after.into_iter()), counts(t.iter()));
        if ca != ct {
            failures += &format!(
                "\n{} {} {}: from packet {from}, amqptrace {ca:?}\n  tshark {ct:?}",
                util::short(file),
                key.0,
                key.1
            );
        }
        compared += ca.values().sum::<u64>();
        if let Some(w) = &whole {
            let wt = w.methods.get(key).unwrap_or(&none);
            let expected: Vec<&(u64, String)> = wt.iter().filter(|(p, _)| *p < from).collect();
            let got: Vec<&(u64, String)> = before;
            if got != expected {
                failures += &format!(
                    "\n{} {} {}: before packet {from}, amqptrace {got:?}\n  tshark on the whole capture {expected:?}",
                    util::short(file),
                    key.0,
                    key.1
                );
            }
            compared += got.len() as u64;
        }
    }
    eprintln!(
        "snaplen: {}: {compared} method frames compared, {} method frames with cut ids (named by neither)",
        util::short(file),
        theirs.unnamed
    );
    (failures, compared)
}

fn cut_captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(snaplen_dir())
        .expect("captures/snaplen: run scripts/make-snaplen-captures.sh")
        .flatten()
        .map(|e| e.path())
        .filter(|p| whole_of(p).is_some())
        .collect();
    v.sort();
    v
}

/// The captures this module compares with tshark (`oracle.rs` leaves them to it).
pub(crate) fn compared_here() -> Vec<PathBuf> {
    let mut files = cut_captures();
    files.push(util::repo("captures/snaplen-80.pcap"));
    files
}

#[test]
fn the_captures_are_there() {
    let cut = cut_captures();
    let names: Vec<String> = cut.iter().map(|p| util::short(p)).collect();
    for want in [
        "healthy-s80",
        "healthy-s128",
        "prefetch-s80",
        "prefetch-s128",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "captures/snaplen/{want}.pcap is missing (scripts/make-snaplen-captures.sh): {names:?}"
        );
    }
}

#[test]
fn method_counts_equal_tsharks() {
    util::require_tshark();
    let files = compared_here();
    let mut failures = String::new();
    for f in &files {
        let (fail, compared) = compare_with_tshark(f);
        assert!(
            compared > 20,
            "{}: only {compared} methods compared",
            util::short(f)
        );
        failures += &fail;
    }
    assert!(
        failures.is_empty(),
        "amqptrace and tshark disagree:{failures}"
    );
}

/// The verdicts of a capture, without what is the capture's own (none is: the
/// cut capture has the same packets, times and frame numbers).
fn verdicts(file: &Path) -> Value {
    util::analyze_json(file)["verdicts"].clone()
}

/// `connection "NAME" (LIBRARY)` spelled `connection`: what a verdict says of a
/// connection whose `connection.start-ok` the capture has whole.
fn without_connection_names(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("connection \"") {
        out.push_str(&rest[..i + "connection".len()]);
        let after = &rest[i + "connection \"".len()..];
        let Some(close) = after.find('"') else {
            rest = after;
            continue;
        };
        rest = &after[close + 1..];
        if let Some(lib) = rest.strip_prefix(" (") {
            if let Some(end) = lib.find(')') {
                rest = &lib[end + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn at_128_bytes_the_verdicts_are_the_whole_captures() {
    for name in ["healthy", "prefetch"] {
        let mut whole = verdicts(&snaplen_dir().join(format!("{name}.pcap")));
        for v in whole.as_array_mut().into_iter().flatten() {
            let e = without_connection_names(v["explanation"].as_str().unwrap_or_default());
            v["explanation"] = Value::String(e);
        }
        let cut = verdicts(&snaplen_dir().join(format!("{name}-s128.pcap")));
        assert!(
            whole.as_array().is_some_and(|v| v.len() >= 3),
            "{name}: {whole}"
        );
        assert_eq!(
            serde_json::to_string_pretty(&cut).unwrap(),
            serde_json::to_string_pretty(&whole).unwrap(),
            "{name}: the 128-byte capture's verdicts differ from the whole capture's"
        );
    }
    let stall = verdicts(&snaplen_dir().join("prefetch-s128.pcap"));
    assert!(
        stall
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["verdict"] == "prefetch_exhausted" && v["certainty"] == "certain"),
        "the stall is found at 128 bytes: {stall}"
    );
}

/// tshark's count of `method` in direction `dir` on the whole capture.
fn whole_count(whole: &Tshark, dir: &str, method: &str) -> u64 {
    whole
        .methods
        .iter()
        .filter(|((_, d), _)| d == dir)
        .flat_map(|(_, ms)| ms)
        .filter(|(_, m)| m == method)
        .count() as u64
}

#[test]
fn at_80_bytes_the_verdicts_say_what_is_known() {
    util::require_tshark();
    for name in ["healthy", "prefetch"] {
        let cut = snaplen_dir().join(format!("{name}-s80.pcap"));
        let whole_file = snaplen_dir().join(format!("{name}.pcap"));
        let conns: Vec<String> = amqptrace_methods(&whole_file)
            .keys()
            .map(|(c, _)| c.clone())
            .collect();
        let whole = tshark_methods(&whole_file, &conns);
        let deliveries = whole_count(&whole, "s2c", "basic.deliver");
        let acks = whole_count(&whole, "c2s", "basic.ack");
        assert!(
            deliveries >= 5,
            "{name}: {deliveries} deliveries in the whole capture"
        );
        let doc = util::analyze_json(&cut);
        let vs = doc["verdicts"].as_array().cloned().unwrap_or_default();
        // Tags cut: no window can be judged, so no stall is claimed.
        for v in vs.iter().filter(|v| v["scope"] == "consumer") {
            assert!(
                !matches!(
                    v["verdict"].as_str(),
                    Some("prefetch_exhausted") | Some("healthy")
                ),
                "{name}-s80: a consumer judged by a window whose tags were cut: {v}"
            );
        }
        let consumer = vs
            .iter()
            .find(|v| v["scope"] == "consumer")
            .unwrap_or_else(|| panic!("{name}-s80: no consumer verdict: {vs:?}"));
        assert_eq!(consumer["verdict"], "capture_incomplete", "{consumer}");
        let text = consumer["explanation"].as_str().unwrap_or_default();
        assert!(
            text.contains(&format!("{deliveries} deliveries and {acks} settles seen")),
            "{name}-s80: the consumer's verdict does not give tshark's counts \
             ({deliveries} deliveries, {acks} acks): {text}"
        );
        let known = format!("{deliveries} deliveries and {acks} acks");
        let conn = vs
            .iter()
            .find(|v| {
                v["scope"] == "connection"
                    && v["explanation"]
                        .as_str()
                        .is_some_and(|e| e.contains(&known))
            })
            .unwrap_or_else(|| panic!("{name}-s80: no connection verdict says {known:?}: {vs:?}"));
        assert_eq!(conn["verdict"], "capture_incomplete", "{conn}");
        let text = conn["explanation"].as_str().unwrap_or_default();
        assert!(text.contains("cut by the capture's snaplen"), "{text}");
    }
}

#[test]
fn cut_frames_are_marked_in_the_timeline() {
    let file = snaplen_dir().join("healthy-s80.pcap");
    let text = util::analyze("text", &file);
    let deliver = text
        .stdout
        .lines()
        .find(|l| l.contains("basic.deliver"))
        .unwrap_or_else(|| panic!("no basic.deliver in the timeline:\n{}", text.stdout));
    assert!(deliver.contains("[cut: "), "{deliver}");
    let jsonl = util::analyze("jsonl", &file);
    let cut: Vec<Value> = jsonl
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["method"] == "basic.deliver")
        .collect();
    assert!(!cut.is_empty());
    for e in &cut {
        assert_eq!(e["truncated"], true, "{e}");
        assert!(e["missing_bytes"].as_u64().is_some_and(|n| n > 0), "{e}");
        // 14 bytes of payload kept: the ids, not the consumer tag's whole.
        assert!(
            e.get("delivery_tag").is_none(),
            "an invented delivery tag: {e}"
        );
    }
}
