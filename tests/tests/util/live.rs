//! The live subcommands as the tests run them: `amqptrace proxy` on
//! 127.0.0.1:0 (its port read from its "listening on ADDR" line) and
//! `amqptrace capture -i lo`. Every test starts its own.
//!
//! [`Proxy::launch`] is the one place that starts a proxy: it spawns the
//! built binary today; making it an in-process library call (as mini-redis
//! tests its server) changes that function and what [`Proxy`] holds, not the
//! tests.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Daemon;
use super::{BIN, PROTOCOL_HEADER};

/// In a proxy's arguments: the path of its timeline file (read by [`Proxy::output`]).
pub const OUT: &str = "{OUT}";
/// In a proxy's arguments: the path of its recording ([`Stopped::pcap`]).
pub const PCAP: &str = "{PCAP}";

/// How a proxy process is started, beyond its arguments.
#[derive(Default)]
pub struct Launch<'a> {
    /// Runs `prefix... amqptrace proxy ...` (e.g. prlimit).
    pub prefix: &'a [&'a str],
    /// Standard output is a pipe nobody reads until [`Proxy::take_stdout`].
    pub unread_stdout: bool,
}

/// A running `amqptrace proxy`, killed on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

/// What a stopped proxy left.
pub struct Stopped {
    pub code: Option<i32>,
    /// The timeline file ([`OUT`]).
    pub out: String,
    pub stderr: String,
    /// The recording ([`PCAP`]); kept while `dir` lives.
    pub pcap: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// `amqptrace proxy --listen 127.0.0.1:0 --upstream UPSTREAM ARGS...`.
    pub fn start(upstream: &str, args: &[&str]) -> Proxy {
        Proxy::launch(upstream, args, Launch::default())
    }

    /// Like [`Proxy::start`], with `how`.
    pub fn launch(upstream: &str, args: &[&str], how: Launch<'_>) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<OsString> = args
            .iter()
            .map(|a| match *a {
                OUT => dir.path().join("out").into(),
                PCAP => dir.path().join("proxy.pcapng").into(),
                a => a.into(),
            })
            .collect();
        let mut cmd = match how.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(&args)
            .stdout(if how.unread_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let (daemon, line) = Daemon::spawn(&mut cmd, "amqptrace: listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in {line:?}"));
        Proxy { addr, daemon, dir }
    }

    /// The guest/guest URL of vhost `/` through the proxy.
    pub fn uri(&self) -> String {
        super::amqp_url(self.addr)
    }

    /// The timeline file ([`OUT`]) so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.daemon.stderr()
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    pub fn signal(&self, sig: &str) {
        self.daemon.signal(sig)
    }

    /// Standard output, with [`Launch::unread_stdout`].
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.daemon
            .take_stdout()
            .expect("launched with unread_stdout")
    }

    /// Waits until the timeline has a line for which `pred` holds; returns it.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(l) = self.output().lines().find(|l| pred(l)) {
                return Some(l.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGINT, then waits for the exit (at most 30 s).
    pub fn stop(self) -> Stopped {
        self.stop_with("-INT")
    }

    pub fn stop_with(mut self, sig: &str) -> Stopped {
        let status = self.daemon.stop(sig, Duration::from_secs(30));
        Stopped {
            code: status.code(),
            out: self.output(),
            stderr: self.stderr(),
            pcap: self.dir.path().join("proxy.pcapng"),
            dir: self.dir,
        }
    }
}

/// Connects to the proxy at `addr` and sends the protocol header: the proxy
/// must close the connection (end of stream, or a reset) within `limit`;
/// `when` says in what situation, for a failure.
pub fn assert_client_closed(addr: SocketAddr, limit: Duration, when: &str) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(limit)).unwrap();
    let _ = c.write_all(PROTOCOL_HEADER);
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("client not closed {when}: {other:?}"),
    }
}

/// A running `amqptrace capture -i lo ARGS...` (stdout discarded), killed on drop.
pub struct Capture(Daemon);

impl Capture {
    /// Starts the capture and waits until it says it captures on lo.
    pub fn start(args: &[&str]) -> Capture {
        let mut cmd = Command::new(BIN);
        cmd.args(["capture", "-i", "lo"])
            .args(args)
            .stdout(Stdio::null());
        let (daemon, line) = Daemon::spawn(&mut cmd, "capturing on");
        assert!(
            line.contains("capturing on lo"),
            "capture did not start:\n{}",
            daemon.stderr()
        );
        Capture(daemon)
    }

    /// SIGINT, then the exit code and the whole stderr.
    pub fn stop(mut self) -> (Option<i32>, String) {
        // Let the last packets reach libpcap's buffer.
        std::thread::sleep(Duration::from_millis(300));
        let status = self.0.stop("-INT", Duration::from_secs(20));
        (status.code(), self.0.stderr())
    }
}
