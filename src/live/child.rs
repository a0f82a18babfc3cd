//! `run`'s command: spawned with the proxy's URL in its environment, waited
//! for while SIGINT/SIGTERM are passed on to it, its exit status turned into
//! the exit code a shell would give.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use tokio::sync::Notify;

use super::signals::{Sig, Signals};

/// The exit code for "amqptrace could not wait for the command".
const ERROR: u8 = 2;

/// Why the command did not run, with the shell's exit code for it.
#[derive(Debug)]
pub struct ChildError {
    pub code: u8,
    pub error: io::Error,
}

/// Spawns `command` with every variable of `env` set to `url` (and the
/// variables of `also`, such as `SSLKEYLOGFILE`) and waits for
/// it, passing SIGINT/SIGTERM on (`snapshot` is notified of each).
pub fn run_child(
    rt: &tokio::runtime::Runtime,
    command: &[OsString],
    env: &[String],
    url: &str,
    also: &[(&str, &std::ffi::OsStr)],
    signals: &mut Signals,
    snapshot: &Notify,
) -> Result<ExitStatus, ChildError> {
    let Some((program, args)) = command.split_first() else {
        return Err(ChildError {
            code: 127,
            error: io::Error::new(io::ErrorKind::NotFound, "no command"),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    for name in env {
        cmd.env(name, url);
    }
    cmd.envs(also.iter().copied());
    let mut child = cmd.spawn().map_err(|error| ChildError {
        // As a POSIX shell: 127 when not found, 126 when found but not runnable.
        code: if error.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        error,
    })?;
    let pid = child.id();
    let wait = rt.spawn_blocking(move || child.wait());
    rt.block_on(async {
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = &mut wait => {
                    return match r {
                        Ok(Ok(status)) => Ok(status),
                        Ok(Err(error)) => Err(ChildError { code: ERROR, error }),
                        Err(e) => Err(ChildError { code: ERROR, error: io::Error::other(e) }),
                    };
                }
                sig = signals.recv() => {
                    if sig == Sig::Int && ctrl_c_reached_the_command() {
                        eprintln!("amqptrace: SIGINT came from the terminal, which sent it to the command too; waiting for the command");
                    } else {
                        eprintln!("amqptrace: {} received: passed on to the command; artifacts follow when it ends", sig.name());
                        forward_signal(pid, sig);
                    }
                    snapshot.notify_one();
                }
            }
        }
    })
}

/// The exit code that reports `status`: the code, or 128+signal as a shell does.
pub fn exit_code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => ERROR,
    }
}

fn forward_signal(pid: u32, sig: Sig) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The
    // child is not reaped before the wait above returns, so its pid cannot
    // have been reused by another process yet.
    unsafe {
        kill(pid, sig.number());
    }
}

/// Whether a SIGINT most likely is the terminal's Ctrl-C. The terminal sends
/// it to its whole foreground process group, the command included (it runs
/// in ours); passing on a second one would cut the command's clean-up short
/// (Python raises KeyboardInterrupt again, Dramatiq's second SIGINT kills its
/// workers at once). Without a controlling terminal (CI), or in the
/// background, the signal was meant for amqptrace alone and is passed on.
fn ctrl_c_reached_the_command() -> bool {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn getpgrp() -> i32;
        fn tcgetpgrp(fd: i32) -> i32;
    }
    let Ok(tty) = File::open("/dev/tty") else {
        return false;
    };
    // SAFETY: both take or return plain integers; `tty` stays open for the call.
    unsafe { tcgetpgrp(tty.as_raw_fd()) == getpgrp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code_of(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code_of(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137);
    }
}
