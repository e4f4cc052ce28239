//! What a diagnostic bundle wants to know about a role that its status does
//! not carry: its last exits and the latest result of each health check,
//! with wall-clock times. Kept apart from [`crate::roles::RoleStatus`] on
//! purpose: the status is reported to the manager on every change, and a
//! health check's time changes at every run.
//!
//! The supervisor's process waiters and probe tasks write here; log and
//! diagnostics requests read a copy.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Exits kept per role, newest last.
pub const KEPT_EXITS: usize = 10;

/// One exit of a role's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub at_unix_ms: i64,
    /// Exit code, or -SIGNAL when killed by a signal (0 when unknown).
    pub code: i32,
    /// `exited with status 1`, `was killed by signal 9`, ...
    pub description: String,
    /// How long the process ran, when its start is known.
    pub uptime_ms: Option<i64>,
}

/// The latest result of one health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub ok: bool,
    pub at_unix_ms: i64,
    /// Why it failed (empty when it passed).
    pub error: String,
    /// Failures in a row up to this result.
    pub consecutive_failures: u32,
}

/// One role's journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleJournal {
    pub exits: VecDeque<ExitRecord>,
    /// By check number in the role's spec; `None`: not run yet.
    pub checks: Vec<Option<CheckRecord>>,
}

/// Every role's journal, shared by the supervisor's tasks.
#[derive(Debug, Default)]
pub struct Journal {
    roles: Mutex<HashMap<String, RoleJournal>>,
}

impl Journal {
    fn with<T>(&self, role: &str, f: impl FnOnce(&mut RoleJournal) -> T) -> T {
        let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
        f(roles.entry(role.to_owned()).or_default())
    }

    /// Records an exit of `role`'s process.
    pub fn exited(&self, role: &str, exit: ExitRecord) {
        self.with(role, |j| {
            if j.exits.len() == KEPT_EXITS {
                j.exits.pop_front();
            }
            j.exits.push_back(exit);
        });
    }

    /// A new set of `count` health checks starts for `role`: earlier
    /// results no longer apply.
    pub fn checks_started(&self, role: &str, count: usize) {
        self.with(role, |j| j.checks = vec![None; count]);
    }

    /// Records the result of check number `check` of `role`.
    pub fn checked(&self, role: &str, check: usize, at_unix_ms: i64, result: &Result<(), String>) {
        self.with(role, |j| {
            if j.checks.len() <= check {
                j.checks.resize(check + 1, None);
            }
            let before = j.checks[check].as_ref().map_or(0, |c| c.consecutive_failures);
            j.checks[check] = Some(CheckRecord {
                ok: result.is_ok(),
                at_unix_ms,
                error: result.as_ref().err().cloned().unwrap_or_default(),
                consecutive_failures: if result.is_ok() { 0 } else { before.saturating_add(1) },
            });
        });
    }

    /// A role no longer on the host.
    pub fn forget(&self, role: &str) {
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).remove(role);
    }

    /// A copy of every role's journal.
    pub fn snapshot(&self) -> HashMap<String, RoleJournal> {
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_kept_newest_last_and_bounded() {
        let j = Journal::default();
        for i in 0..(KEPT_EXITS as i64 + 3) {
            j.exited("r1", ExitRecord { at_unix_ms: i, code: 1, description: "exited".into(), uptime_ms: Some(5) });
        }
        let exits = &j.snapshot()["r1"].exits;
        assert_eq!(exits.len(), KEPT_EXITS);
        assert_eq!((exits.front().map(|e| e.at_unix_ms), exits.back().map(|e| e.at_unix_ms)), (Some(3), Some(12)));
    }

    #[test]
    fn check_results_count_failures_in_a_row_and_reset() {
        let j = Journal::default();
        j.checks_started("r1", 2);
        j.checked("r1", 1, 10, &Err("connection refused".into()));
        j.checked("r1", 1, 20, &Err("connection refused".into()));
        let checks = j.snapshot()["r1"].checks.clone();
        assert_eq!(checks[0], None);
        let c = checks[1].clone().expect("result");
        assert_eq!(
            (c.ok, c.at_unix_ms, c.consecutive_failures, c.error.as_str()),
            (false, 20, 2, "connection refused")
        );
        j.checked("r1", 1, 30, &Ok(()));
        let c = j.snapshot()["r1"].checks[1].clone().expect("result");
        assert_eq!((c.ok, c.consecutive_failures, c.error.as_str()), (true, 0, ""));
        j.checks_started("r1", 1);
        assert_eq!(j.snapshot()["r1"].checks, vec![None]);
        j.forget("r1");
        assert!(j.snapshot().is_empty());
    }
}
