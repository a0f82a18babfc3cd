//! Paths: the repository, its committed captures, a temporary folder per
//! test, and the Python virtualenv of the real clients (with a pika script
//! to run in it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `p` under the crate root.
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The path relative to the crate root, for messages.
pub fn short(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `captures/NAME`.
pub fn capture(name: &str) -> PathBuf {
    repo("captures").join(name)
}

/// Every `*.pcap` and `*.pcapng` under `captures/`, recursively, sorted;
/// not those of `captures/tls/` (see [`all_captures`]).
pub fn committed_captures() -> Vec<PathBuf> {
    captures_under(false)
}

/// [`committed_captures`] and those of `captures/tls/`, sorted: for the tests
/// of what every capture goes through alike (the link layer, `--threads`),
/// where TLS captures decode as TLS without their key log.
pub fn all_captures() -> Vec<PathBuf> {
    captures_under(true)
}

fn captures_under(with_tls: bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, with_tls: bool, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            // captures/tls/ is AMQP over TLS: it decodes only with its key log,
            // and tshark only with its TLS options (tests/tests/tls_offline.rs).
            if path.is_dir() && (with_tls || !path.ends_with("tls")) {
                walk(&path, with_tls, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pcap") | Some("pcapng")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo("captures"), with_tls, &mut out);
    out.sort();
    out
}

/// A fresh temporary folder, deleted when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary folder")
}

/// Writes `bytes` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// The Python of the virtualenv of `scripts/lib.sh` (pika, Dramatiq,
/// Celery), made once per test run when missing (about 30 s, from PyPI).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let st = Command::new("bash")
            .args(["-c", ". scripts/lib.sh; ensure_venv"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("bash runs");
        assert!(st.success(), "ensure_venv failed");
        std::env::var_os("AMQPTRACE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo("target/venv"))
            .join("bin/python")
    })
}

/// A pika (BlockingConnection) script: connects to `$AMQP_URL`, declares the
/// auto-delete queue `queue` on a channel `ch`, then runs `then`, one line each.
pub fn pika_script(queue: &str, then: &[&str]) -> String {
    let mut script = format!(
        "import os, pika\n\
         c = pika.BlockingConnection(pika.URLParameters(os.environ['AMQP_URL']))\n\
         ch = c.channel()\n\
         ch.queue_declare('{queue}', auto_delete=True)\n"
    );
    for line in then {
        script.push_str(line);
        script.push('\n');
    }
    script
}
