//! Processes the tests start and watch: a long-running child whose stderr is
//! collected as it comes (a proxy, a capture, tcpdump), signals, polling, and
//! free ports on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running child with its stderr collected line by line; killed on drop.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Spawns `cmd` (stdin closed, stderr piped) and waits up to 15 s for a
    /// stderr line containing `ready`; returns the daemon and that line.
    /// Panics with what stderr said when the line does not come.
    pub fn spawn(cmd: &mut Command, ready: &str) -> (Daemon, String) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let collected = stderr.clone();
        let ready_marker = ready.to_string();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                collected.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains(&ready_marker) {
                    let _ = tx.send(line);
                }
            }
        });
        let mut daemon = Daemon {
            child,
            stderr,
            reader: Some(reader),
        };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => (daemon, line),
            Err(_) => {
                let _ = daemon.child.kill();
                panic!("no {ready:?} from {cmd:?}:\n{}", daemon.stderr());
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The child's stdout, when it was piped.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// `kill SIG`; asserts that the signal was delivered.
    pub fn signal(&self, sig: &str) {
        assert!(kill(sig, self.pid()), "kill {sig} {}", self.pid());
    }

    /// Sends `sig` and waits at most `limit` for the exit (panics past it);
    /// then stderr is complete.
    pub fn stop(&mut self, sig: &str, limit: Duration) -> ExitStatus {
        self.signal(sig);
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit after {sig}:\n{}",
                    self.pid(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends when the pipe closes; a grandchild could hold it open.
        if let Some(reader) = self.reader.take() {
            let done = wait_until(Duration::from_secs(5), || reader.is_finished());
            if done {
                let _ = reader.join();
            }
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill SIG PID`; whether it was delivered.
pub fn kill(sig: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `cond` every 50 ms for at most `limit`; true when it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A port on 127.0.0.1 that nothing listens on (just now).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
