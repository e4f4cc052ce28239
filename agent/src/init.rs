//! The agent as PID 1, the entry point of a container: a minimal init in the
//! style of tini. PID 1 has two duties no ordinary program fulfils: it must
//! reap every orphan the kernel re-parents to it (or zombies pile up), and
//! signals reach it only when it asks for them.
//!
//! Reaping with `waitpid(-1)` in the agent itself would steal the exit status
//! of the role processes the supervisor waits for (and of health-check
//! commands, and of whatever else spawns a child). So the PID 1 process does
//! nothing but this: it runs the agent proper (the same binary, same
//! arguments) as its only child, forwards signals to it, and reaps every child
//! that exits. Only the agent is its own child; everything else it reaps is an
//! orphan, whose status nobody wants. Inside the agent process, child handling
//! is unchanged.
//!
//! - SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 are forwarded to the agent;
//!   when the agent exits, PID 1 exits with its status (128 + signal number if
//!   it was killed), which ends the container.
//! - SIGHUP restarts the agent: SIGTERM, then a new agent once it has exited.
//!   Role processes keep running (they are re-parented to PID 1 meanwhile) and
//!   the new agent re-adopts them, as after any agent restart.
//!
//! Under another init (`docker run --init`, systemd) the agent is not PID 1
//! and none of this runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

/// Signals PID 1 passes on to the agent.
const FORWARDED: &[Signal] = &[Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// Whether this process is the init of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Undoes the signal mask an init (ours, or another) may have left blocked, so
/// that the agent's own signal handling and its children behave normally.
pub fn unblock_signals() {
    let _ = SigSet::all().thread_unblock();
}

/// Runs as PID 1: starts the agent (this executable with `args`) as a child
/// and supervises it until it exits. Returns the exit code for PID 1.
pub fn run(args: Vec<OsString>) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            warn!(error = %e, "cannot find the agent executable to run under PID 1");
            return 1;
        }
    };
    let mut waited = SigSet::empty();
    for s in FORWARDED.iter().chain(&[Signal::SIGCHLD, Signal::SIGHUP]) {
        waited.add(*s);
    }
    // Blocked before the child exists, so that no SIGCHLD can be lost; the
    // child inherits the mask and unblocks it first thing (`unblock_signals`).
    if let Err(e) = waited.thread_block() {
        warn!(error = %e, "cannot block signals as PID 1");
        return 1;
    }
    info!("running as PID 1: the agent runs as a child process; orphans are reaped here");
    let mut init = Init { exe, args, agent: None, restart: false };
    if let Err(code) = init.spawn() {
        return code;
    }
    loop {
        let signal = match waited.wait() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "waiting for signals failed");
                continue;
            }
        };
        match signal {
            Signal::SIGCHLD => {
                if let Some(code) = init.reap() {
                    return code;
                }
            }
            Signal::SIGHUP => {
                info!("SIGHUP: restarting the agent; role processes keep running");
                init.restart = true;
                init.signal_agent(Signal::SIGTERM);
            }
            other => init.signal_agent(other),
        }
    }
}

struct Init {
    exe: PathBuf,
    args: Vec<OsString>,
    agent: Option<Pid>,
    restart: bool,
}

impl Init {
    fn spawn(&mut self) -> Result<(), u8> {
        match Command::new(&self.exe).args(&self.args).spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                debug!(pid = pid.as_raw(), "agent started");
                // Reaped through waitpid(-1) below, not through `child`.
                drop(child);
                self.agent = Some(pid);
                Ok(())
            }
            Err(e) => {
                warn!(exe = %self.exe.display(), error = %e, "cannot start the agent");
                Err(1)
            }
        }
    }

    fn signal_agent(&self, signal: Signal) {
        if let Some(pid) = self.agent {
            debug!(signal = %signal, "forwarding to the agent");
            if let Err(e) = kill(pid, signal)
                && e != Errno::ESRCH
            {
                warn!(signal = %signal, error = %e, "cannot signal the agent");
            }
        }
    }

    /// Reaps every exited child. `Some(code)` when PID 1 should exit.
    fn reap(&mut self) -> Option<u8> {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, exit_code(code, None)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, exit_code(0, Some(signal))),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "waitpid failed");
                    return None;
                }
            };
            if Some(pid) != self.agent {
                debug!(pid = pid.as_raw(), "reaped an orphaned process");
                continue;
            }
            self.agent = None;
            if self.restart {
                self.restart = false;
                info!(status = code, "agent exited; starting it again");
                if let Err(code) = self.spawn() {
                    return Some(code);
                }
                continue;
            }
            info!(status = code, "agent exited; PID 1 exits with its status");
            return Some(code);
        }
    }
}

/// The exit code PID 1 passes on: the agent's own, or 128 + the signal that
/// killed it, as shells do.
fn exit_code(code: i32, signal: Option<Signal>) -> u8 {
    match signal {
        Some(s) => 128u8.saturating_add(u8::try_from(s as i32).unwrap_or(127)),
        None => u8::try_from(code).unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(0, None), 0);
        assert_eq!(exit_code(2, None), 2);
        assert_eq!(exit_code(0, Some(Signal::SIGKILL)), 137);
        assert_eq!(exit_code(0, Some(Signal::SIGTERM)), 143);
    }

    #[test]
    fn this_test_is_not_pid_1() {
        assert!(!is_pid1());
    }
}
