//! The agent's role reconciler as a plain state machine:
//! `handle(now, Event) -> Vec<Effect>`. It decides which files to write, which
//! processes to start, stop, kill or restart and what to report; the async
//! driver in [`crate::supervisor`] performs the effects and feeds the results
//! back as events. No I/O and no clock in here, so every rule is a table test.
//!
//! Rules:
//! - a role's files are written (atomically, by the driver) before its process
//!   starts; a change that only touches files never restarts the process: the
//!   status shows `applied_revision` ahead of `running_revision` and the manager
//!   decides what is stale;
//! - reload: when the spec has a `reload_signal`, new files reach the running
//!   process by that signal (sent to the process, not its group) once they are
//!   written, provided the spec's `restart_digest` is the one the process
//!   started (or last reloaded) with, i.e. no parameter that needs a restart
//!   changed; the process then counts as running the new revision. A process
//!   up for less than `reload_settle` is signalled only then (it may not handle
//!   the signal yet, and SIGHUP's default action ends a process). A process
//!   whose files are unknown (adopted from an agent that did not record them)
//!   is never reloaded;
//! - config check: when the spec has a `config_check`, new files are first
//!   checked (`CheckFiles`: the driver writes them to a staging directory and
//!   runs the check) and written to the role directory only once the check
//!   passed. While a check runs or after it failed, the live files and the
//!   running process are left alone: no reload, and a restart a new
//!   `restart_nonce` asks for waits for files that pass (a stop does not
//!   wait). A failed check is the role's `last_error` (a role whose process is
//!   not running is `Failed`), and is run again when the files change, when
//!   the active parcels change, or after `check_retry`. The check waits for
//!   the spec's parcels to be active (it usually runs a program from one);
//! - the process runs when the desired run state is `Running`; a new
//!   `restart_nonce` restarts it; `Stopped` stops it;
//! - a graceful stop sends the stop signal to the process group, and SIGKILL to
//!   the group after the stop grace; any exit also sweeps the group with SIGKILL so
//!   no stray child survives its leader;
//! - an exit that was not asked for is a crash: restart after a backoff of 1 s
//!   doubling up to 60 s, reset after 5 minutes up; 5 exits within 2 minutes, or
//!   5 runs in a row shorter than 10 s, are a crash loop: the role is `Failed`
//!   with the last log lines and is not restarted until its desired state
//!   changes (revision, nonce or run state);
//! - a role whose spec lists parcels starts only when each of them is active on
//!   the host; until then it is `Failed` with `parcel NAME is not active on host
//!   HOST` and is tried again whenever the active parcels change (a change of the
//!   active parcels never stops or restarts a running process);
//! - service metrics are collected while the process is up: collectors start
//!   (or are replaced) when the spec's metric sources differ from those being
//!   collected, and stop when the process begins to stop or exits;
//! - roles that leave the desired state are stopped and their directory removed;
//! - every change of the observed state is reported, as the full list of roles.
//!
//! While no process runs, a role reports the `attempt_nonce` of its last
//! start attempt, so a crash loop after a restart carries that restart's nonce
//! and is told apart from an older failure.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::roles::{
    self, ConfigCheck, ConfigFile, HealthCheck, MetricSource, ProcessSpec, RoleHealth, RoleSpec, RoleState, RoleStatus,
    RunState,
};

/// Timing and limits of the reconciler. [`Policy::default`] holds the values
/// in the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `false`: only write files, never run processes (synthetic agents).
    pub run_processes: bool,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A process up this long resets the backoff and the crash history.
    pub reset_after: Duration,
    /// Exits within this window count towards a crash loop.
    pub crash_window: Duration,
    /// Exits within `crash_window`, or consecutive runs shorter than
    /// `min_uptime`, that make a crash loop.
    pub max_crashes: usize,
    pub min_uptime: Duration,
    /// Wait before writing files again after a failed write.
    pub write_retry: Duration,
    /// A process is sent its reload signal only once it has been up this long.
    pub reload_settle: Duration,
    /// Wait before running a failed config check again on the same files.
    pub check_retry: Duration,
    /// The host's name, in messages about it.
    pub host: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            run_processes: true,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            reset_after: Duration::from_secs(300),
            crash_window: Duration::from_secs(120),
            max_crashes: 5,
            min_uptime: Duration::from_secs(10),
            write_retry: Duration::from_secs(10),
            reload_settle: Duration::from_secs(1),
            check_retry: Duration::from_secs(60),
            host: String::new(),
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// The agent re-adopted the process after a restart and could only see it
    /// disappear.
    Unknown,
}

impl ExitStatus {
    /// As reported: the exit code, or -SIGNAL; 0 when unknown.
    pub fn reported(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => -s,
            ExitStatus::Unknown => 0,
        }
    }

    pub(crate) fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("exited with status {c}"),
            ExitStatus::Signal(s) => format!("was killed by signal {s}"),
            ExitStatus::Unknown => "exited (status unknown: adopted after an agent restart)".into(),
        }
    }
}

/// Files on disk: the revision and manager digests they were written from,
/// and the sha256 of what was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedFiles {
    pub revision: u64,
    pub digests: BTreeMap<String, String>,
    pub hashes: BTreeMap<String, String>,
}

/// A process started by an earlier agent and still running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptedProcess {
    pub pid: u32,
    pub revision: u64,
    pub nonce: u64,
    pub started_at_unix_ms: i64,
    /// What it last read, when the earlier agent recorded it.
    pub loaded: Option<Loaded>,
}

/// The files a running process read, when it started or at its last reload,
/// and the restart digest of the spec it read them from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub digests: BTreeMap<String, String>,
    pub restart_digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// What an earlier agent left behind for one role; sent before the first
    /// `DesiredRoles`.
    Restored {
        role: String,
        applied: Option<AppliedFiles>,
        process: Option<AdoptedProcess>,
    },
    DesiredRoles {
        generation: u64,
        roles: Vec<RoleSpec>,
    },
    /// `WriteFiles` for `revision` succeeded; `digests` are the manager's, `hashes` of the written bytes.
    FilesWritten {
        role: String,
        revision: u64,
        digests: BTreeMap<String, String>,
        hashes: BTreeMap<String, String>,
    },
    WriteFailed {
        role: String,
        revision: u64,
        error: String,
    },
    /// The config check of `CheckFiles` for `revision` passed: these files
    /// (the manager's `digests`) may replace the live ones.
    CheckPassed {
        role: String,
        revision: u64,
        digests: BTreeMap<String, String>,
    },
    /// The config check of `CheckFiles` failed or could not run; `error` says
    /// how (exit status and output, trimmed and bounded).
    CheckFailed {
        role: String,
        revision: u64,
        digests: BTreeMap<String, String>,
        error: String,
    },
    ProcessStarted {
        role: String,
        pid: u32,
        started_at_unix_ms: i64,
    },
    StartFailed {
        role: String,
        error: String,
    },
    /// `Reload` was sent at this wall-clock time.
    Reloaded {
        role: String,
        at_unix_ms: i64,
    },
    ReloadFailed {
        role: String,
        error: String,
    },
    ProcessExited {
        role: String,
        status: ExitStatus,
        log_tail: Vec<String>,
    },
    /// Result of health check number `check` of the role's spec.
    HealthResult {
        role: String,
        check: usize,
        ok: bool,
    },
    /// The parcels active on the host are now these (names).
    ParcelsChanged {
        active: BTreeSet<String>,
    },
    /// The deadline returned by [`Reconciler::deadline`] may have passed.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write the files (atomically) into the role directory, creating it.
    WriteFiles {
        role: String,
        revision: u64,
        files: Vec<ConfigFile>,
    },
    /// Write the files into a staging directory (the live ones stay as they
    /// are) and run `check` on them with the process's environment (`env`, the
    /// env scripts of `parcels`); answer with `CheckPassed` or `CheckFailed`,
    /// or `WriteFailed` when the staging files cannot be written.
    CheckFiles {
        role: String,
        revision: u64,
        files: Vec<ConfigFile>,
        check: ConfigCheck,
        env: BTreeMap<String, String>,
        parcels: Vec<String>,
    },
    /// Start the process in its own process group; answer with
    /// `ProcessStarted` or `StartFailed`, later `ProcessExited`.
    Start {
        role: String,
        process: ProcessSpec,
        revision: u64,
        nonce: u64,
        /// Parcels whose env scripts apply to the process.
        parcels: Vec<String>,
        /// The files it starts with (to re-adopt it knowing them).
        loaded: Loaded,
    },
    /// Send `signal` (a name, e.g. `SIGTERM`) to process group `pgid`.
    Stop {
        role: String,
        pgid: u32,
        signal: String,
    },
    /// Send SIGKILL to process group `pgid`.
    KillGroup {
        role: String,
        pgid: u32,
    },
    /// Send `signal` (a name, e.g. `SIGHUP`) to process `pid` so it re-reads
    /// its files, which are now those of `revision` (`loaded`); answer with
    /// `Reloaded` or `ReloadFailed`.
    Reload {
        role: String,
        pid: u32,
        signal: String,
        revision: u64,
        loaded: Loaded,
    },
    /// Run these health checks (replacing any running ones) and report
    /// `HealthResult`s.
    StartProbes {
        role: String,
        checks: Vec<HealthCheck>,
    },
    StopProbes {
        role: String,
    },
    /// Collect the role's service metrics from these sources (replacing any
    /// running collectors), each at its interval, while its process runs.
    StartCollectors {
        role: String,
        sources: Vec<MetricSource>,
    },
    StopCollectors {
        role: String,
    },
    /// Remove the role's directory; the role is forgotten.
    RemoveRoleDir {
        role: String,
    },
    /// The observed state of every role changed.
    Report(Vec<RoleStatus>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunInfo {
    pid: u32,
    revision: u64,
    nonce: u64,
    started_at_unix_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Proc {
    Down,
    Starting { revision: u64, nonce: u64 },
    Up { run: RunInfo, since: Instant },
    Stopping { run: RunInfo, kill_at: Instant, killed: bool },
}

/// Files whose config check failed, and when to run it again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CheckFailure {
    revision: u64,
    digests: BTreeMap<String, String>,
    message: String,
    retry_at: Instant,
}

#[derive(Clone, Debug, Default)]
struct Probe {
    failures: u32,
    seen_ok: bool,
    threshold: u32,
}

#[derive(Debug)]
struct Role {
    /// Last desired spec; `None` for a restored role not yet in a desired state.
    spec: Option<RoleSpec>,
    /// No longer desired: stop, remove the directory, forget.
    removing: bool,
    /// Why the role id is unusable; such a role never touches the disk.
    invalid: Option<String>,
    applied: Option<AppliedFiles>,
    /// A write or a config check is under way.
    writing: bool,
    write_error: Option<String>,
    /// The files (revision, manager digests) that last passed their config check.
    checked: Option<(u64, BTreeMap<String, String>)>,
    check_failure: Option<CheckFailure>,
    write_retry_at: Option<Instant>,
    proc: Proc,
    restart_count: u32,
    last_exit_status: i32,
    last_error: String,
    last_log_lines: Vec<String>,
    exits: VecDeque<Instant>,
    short_runs: usize,
    backoff: Duration,
    start_at: Option<Instant>,
    failed: bool,
    /// Why the process cannot start now (a parcel that is not active).
    blocked: Option<String>,
    probes_for: Option<Vec<HealthCheck>>,
    probes: Vec<Probe>,
    /// The metric sources being collected from; `None`: no collectors.
    collectors_for: Option<Vec<MetricSource>>,
    /// What the running (or starting) process read; `None`: no process, or
    /// unknown.
    loaded: Option<Loaded>,
    reload_count: u32,
    reloaded_at_unix_ms: i64,
    /// The restart nonce of the last start attempt: reported while no
    /// process runs, so a crash loop after a restart is told apart from an
    /// older failure.
    attempt_nonce: u64,
}

impl Role {
    fn new(policy: &Policy) -> Role {
        Role {
            spec: None,
            removing: false,
            invalid: None,
            applied: None,
            writing: false,
            write_error: None,
            checked: None,
            check_failure: None,
            write_retry_at: None,
            proc: Proc::Down,
            restart_count: 0,
            last_exit_status: 0,
            last_error: String::new(),
            last_log_lines: Vec::new(),
            exits: VecDeque::new(),
            short_runs: 0,
            backoff: policy.initial_backoff,
            start_at: None,
            failed: false,
            blocked: None,
            probes_for: None,
            probes: Vec::new(),
            collectors_for: None,
            loaded: None,
            reload_count: 0,
            reloaded_at_unix_ms: 0,
            attempt_nonce: 0,
        }
    }

    /// Whether new files of `spec` are on disk that the running process can
    /// take by reload: it has a reload signal, it read other files, and no
    /// parameter that needs a restart changed since.
    fn reload_due(&self, spec: &RoleSpec) -> bool {
        !spec.process.reload_signal.is_empty()
            && !spec.restart_digest.is_empty()
            && self.files_current(spec)
            && !self.writing
            && self
                .loaded
                .as_ref()
                .is_some_and(|l| l.restart_digest == spec.restart_digest && l.digests != spec.file_digests())
    }

    fn files_current(&self, spec: &RoleSpec) -> bool {
        self.applied.as_ref().is_some_and(|a| a.revision == spec.config_revision && a.digests == spec.file_digests())
    }

    /// Whether the spec's files must pass a config check before they are
    /// written and have not yet.
    fn check_pending(&self, spec: &RoleSpec, policy: &Policy) -> bool {
        policy.run_processes
            && spec.process.config_check.is_some()
            && !self.files_current(spec)
            && self.checked.as_ref().is_none_or(|(r, d)| *r != spec.config_revision || *d != spec.file_digests())
    }

    /// The failed config check of the spec's files, while they are not on disk.
    fn check_failed(&self, spec: &RoleSpec) -> Option<&CheckFailure> {
        self.check_failure
            .as_ref()
            .filter(|f| f.revision == spec.config_revision && f.digests == spec.file_digests())
            .filter(|_| !self.files_current(spec))
    }

    fn wants_process(&self, policy: &Policy) -> bool {
        policy.run_processes
            && !self.removing
            && self.invalid.is_none()
            && self.spec.as_ref().is_some_and(|s| s.run_state == RunState::Running)
    }

    fn stop_params(&self) -> (String, Duration) {
        match &self.spec {
            Some(s) => (s.process.stop_signal.clone(), s.process.stop_grace),
            None => (String::new(), roles::DEFAULT_STOP_GRACE),
        }
    }

    fn health(&self) -> RoleHealth {
        if !matches!(self.proc, Proc::Up { .. }) || self.probes.is_empty() {
            return RoleHealth::Unknown;
        }
        if self.probes.iter().any(|p| p.failures >= p.threshold.max(1)) {
            RoleHealth::Bad
        } else if self.probes.iter().all(|p| p.seen_ok) {
            RoleHealth::Good
        } else {
            RoleHealth::Unknown
        }
    }

    fn status(&self, id: &str, policy: &Policy) -> RoleStatus {
        let run = match &self.proc {
            Proc::Up { run, .. } | Proc::Stopping { run, .. } => Some(*run),
            Proc::Down | Proc::Starting { .. } => None,
        };
        let state = if self.invalid.is_some() || self.failed {
            RoleState::Failed
        } else {
            match self.proc {
                Proc::Up { .. } => RoleState::Running,
                Proc::Stopping { .. } => RoleState::Stopping,
                Proc::Starting { .. } => RoleState::Starting,
                Proc::Down if self.wants_process(policy) => {
                    let check_failed = self.spec.as_ref().is_some_and(|s| self.check_failed(s).is_some());
                    if self.write_error.is_some() || self.blocked.is_some() || check_failed {
                        RoleState::Failed
                    } else {
                        RoleState::Starting
                    }
                }
                Proc::Down => RoleState::Stopped,
            }
        };
        let applied = self.applied.clone().unwrap_or_default();
        RoleStatus {
            role_id: id.to_owned(),
            state,
            pid: run.map_or(0, |r| r.pid),
            last_exit_status: self.last_exit_status,
            restart_count: self.restart_count,
            applied_revision: applied.revision,
            running_revision: run.map_or(0, |r| r.revision),
            file_hashes: applied.hashes,
            last_error: self
                .invalid
                .clone()
                .or_else(|| self.blocked.clone())
                .or_else(|| self.spec.as_ref().and_then(|s| self.check_failed(s)).map(|f| f.message.clone()))
                .unwrap_or_else(|| self.last_error.clone()),
            health: self.health(),
            last_log_lines: self.last_log_lines.clone(),
            restart_nonce: run.map_or(self.attempt_nonce, |r| r.nonce),
            started_at_unix_ms: run.map_or(0, |r| r.started_at_unix_ms),
            reload_count: if run.is_some() { self.reload_count } else { 0 },
            reloaded_at_unix_ms: if run.is_some() { self.reloaded_at_unix_ms } else { 0 },
        }
    }
}

/// The reconciler for all roles of one host.
#[derive(Debug)]
pub struct Reconciler {
    policy: Policy,
    roles: BTreeMap<String, Role>,
    /// Until the first desired state, restored roles are left alone.
    have_desired: bool,
    generation: u64,
    /// Names of the parcels active on the host.
    active_parcels: BTreeSet<String>,
    reported: Option<Vec<RoleStatus>>,
}

impl Reconciler {
    pub fn new(policy: Policy) -> Self {
        Reconciler {
            policy,
            roles: BTreeMap::new(),
            have_desired: false,
            generation: 0,
            active_parcels: BTreeSet::new(),
            reported: None,
        }
    }

    /// Generation of the last desired state handled.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The next time [`Event::Tick`] must be delivered, if any.
    pub fn deadline(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for role in self.roles.values() {
            match role.proc {
                Proc::Stopping { kill_at, killed: false, .. } => consider(Some(kill_at)),
                Proc::Down if role.wants_process(&self.policy) && !role.failed => consider(role.start_at),
                Proc::Up { since, .. } if role.spec.as_ref().is_some_and(|s| role.reload_due(s)) => {
                    consider(Some(since + self.policy.reload_settle))
                }
                _ => {}
            }
            // A check that waits for a parcel waits for `ParcelsChanged`, not a time.
            let waits_for_parcel = role.spec.as_ref().is_some_and(|s| {
                role.check_pending(s, &self.policy) && s.parcels.iter().any(|p| !self.active_parcels.contains(p))
            });
            // While a check runs, its outcome is what comes next.
            let idle = !role.writing && !role.removing && !waits_for_parcel;
            if role.write_error.is_some() && idle {
                consider(role.write_retry_at);
            }
            if idle && let Some(f) = role.spec.as_ref().and_then(|s| role.check_failed(s)) {
                consider(Some(role.write_retry_at.map_or(f.retry_at, |w| w.max(f.retry_at))));
            }
        }
        at
    }

    /// The statuses as last computed.
    pub fn statuses(&self) -> Vec<RoleStatus> {
        self.roles.iter().map(|(id, r)| r.status(id, &self.policy)).collect()
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Restored { role, applied, process } => {
                let r = self.roles.entry(role).or_insert_with(|| Role::new(&self.policy));
                r.applied = applied;
                if let Some(p) = process {
                    let run = RunInfo {
                        pid: p.pid,
                        revision: p.revision,
                        nonce: p.nonce,
                        started_at_unix_ms: p.started_at_unix_ms,
                    };
                    r.proc = Proc::Up { run, since: now };
                    r.loaded = p.loaded;
                }
            }
            Event::DesiredRoles { generation, roles } => self.desired(generation, roles),
            Event::FilesWritten { role, revision, digests, hashes } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    r.writing = false;
                    r.write_error = None;
                    r.write_retry_at = None;
                    if r.last_error.starts_with("could not write") {
                        r.last_error.clear();
                    }
                    r.applied = Some(AppliedFiles { revision, digests, hashes });
                }
            }
            Event::CheckPassed { role, revision, digests } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    r.writing = false;
                    r.check_failure = None;
                    r.checked = Some((revision, digests));
                }
            }
            Event::CheckFailed { role, revision, digests, error } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    r.writing = false;
                    r.check_failure = Some(CheckFailure {
                        revision,
                        digests,
                        message: format!(
                            "config check of revision {revision} failed; its files were not applied: {error}"
                        ),
                        retry_at: now + self.policy.check_retry,
                    });
                }
            }
            Event::WriteFailed { role, revision, error } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    r.writing = false;
                    r.last_error = format!("could not write the files of revision {revision}: {error}");
                    r.write_error = Some(error);
                    r.write_retry_at = Some(now + self.policy.write_retry);
                }
            }
            Event::ProcessStarted { role, pid, started_at_unix_ms } => {
                if let Some(r) = self.roles.get_mut(&role)
                    && let Proc::Starting { revision, nonce } = r.proc
                {
                    r.proc = Proc::Up { run: RunInfo { pid, revision, nonce, started_at_unix_ms }, since: now };
                }
            }
            Event::Reloaded { role, at_unix_ms } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    r.reload_count += 1;
                    r.reloaded_at_unix_ms = at_unix_ms;
                    if r.last_error.starts_with("could not reload") {
                        r.last_error.clear();
                    }
                }
            }
            Event::ReloadFailed { role, error } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    r.last_error = format!("could not reload the process: {error}");
                }
            }
            Event::StartFailed { role, error } => {
                if let Some(r) = self.roles.get_mut(&role)
                    && matches!(r.proc, Proc::Starting { .. })
                {
                    r.proc = Proc::Down;
                    crashed(r, &self.policy, now, Duration::ZERO, format!("could not start: {error}"), Vec::new());
                }
            }
            Event::ProcessExited { role, status, log_tail } => {
                if let Some(r) = self.roles.get_mut(&role) {
                    exited(r, &role, &self.policy, now, status, log_tail, &mut effects);
                }
            }
            Event::HealthResult { role, check, ok } => {
                if let Some(r) = self.roles.get_mut(&role)
                    && matches!(r.proc, Proc::Up { .. })
                    && let Some(p) = r.probes.get_mut(check)
                {
                    if ok {
                        p.failures = 0;
                        p.seen_ok = true;
                    } else {
                        p.failures = p.failures.saturating_add(1);
                    }
                }
            }
            Event::ParcelsChanged { active } => {
                if active != self.active_parcels {
                    // A failed check may have lacked a program from a parcel: run it again.
                    for r in self.roles.values_mut() {
                        if let Some(f) = &mut r.check_failure {
                            f.retry_at = now;
                        }
                    }
                }
                self.active_parcels = active;
            }
            Event::Tick => {
                for (id, r) in &mut self.roles {
                    if let Proc::Stopping { run, kill_at, killed } = &mut r.proc
                        && !*killed
                        && now >= *kill_at
                    {
                        *killed = true;
                        effects.push(Effect::KillGroup { role: id.clone(), pgid: run.pid });
                    }
                }
            }
        }
        self.converge(now, &mut effects);
        let statuses = self.statuses();
        if self.reported.as_ref() != Some(&statuses) {
            self.reported = Some(statuses.clone());
            effects.push(Effect::Report(statuses));
        }
        effects
    }

    fn desired(&mut self, generation: u64, specs: Vec<RoleSpec>) {
        self.have_desired = true;
        self.generation = generation;
        let mut wanted = std::collections::BTreeSet::new();
        for spec in specs {
            let id = spec.role_id.clone();
            wanted.insert(id.clone());
            let r = self.roles.entry(id.clone()).or_insert_with(|| Role::new(&self.policy));
            let key = |s: &RoleSpec| (s.config_revision, s.restart_nonce, s.run_state);
            if r.spec.as_ref().map(key) != Some(key(&spec)) || r.removing {
                // A new desired state: forget the crash loop and try again.
                r.failed = false;
                r.exits.clear();
                r.short_runs = 0;
                r.backoff = self.policy.initial_backoff;
                r.start_at = None;
                r.last_error.clear();
                r.last_log_lines.clear();
                r.write_retry_at = None;
            }
            r.invalid = roles::check_role_id(&id).err();
            r.removing = false;
            r.spec = Some(spec);
        }
        for (id, r) in &mut self.roles {
            if !wanted.contains(id) {
                r.removing = true;
            }
        }
    }

    fn converge(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if !self.have_desired {
            return;
        }
        let policy = &self.policy;
        let active_parcels = &self.active_parcels;
        let mut forget = Vec::new();
        for (id, r) in &mut self.roles {
            if r.removing {
                match &r.proc {
                    Proc::Up { .. } => begin_stop(r, id, now, effects),
                    Proc::Down => {
                        if r.invalid.is_none() {
                            effects.push(Effect::RemoveRoleDir { role: id.clone() });
                        }
                        forget.push(id.clone());
                    }
                    Proc::Starting { .. } | Proc::Stopping { .. } => {}
                }
                continue;
            }
            let Some(spec) = &r.spec else { continue };
            if r.invalid.is_some() {
                continue;
            }
            let files_current = r.files_current(spec);
            let check_pending = r.check_pending(spec, policy);
            let missing_parcel = spec.parcels.iter().find(|p| !active_parcels.contains(*p));
            let mut check_waits = None;
            if !files_current && !r.writing && r.write_retry_at.is_none_or(|t| now >= t) {
                match (&spec.process.config_check, check_pending) {
                    (Some(check), true) => {
                        let retry_due = r.check_failed(spec).is_none_or(|f| now >= f.retry_at);
                        if let Some(p) = missing_parcel {
                            check_waits = Some(format!(
                                "parcel {p} is not active on host {}; the config check of revision {} waits for it",
                                policy.host, spec.config_revision
                            ));
                        } else if retry_due {
                            r.writing = true;
                            effects.push(Effect::CheckFiles {
                                role: id.clone(),
                                revision: spec.config_revision,
                                files: spec.files.clone(),
                                check: check.clone(),
                                env: spec.process.env.clone(),
                                parcels: spec.parcels.clone(),
                            });
                        }
                    }
                    _ => {
                        r.writing = true;
                        effects.push(Effect::WriteFiles {
                            role: id.clone(),
                            revision: spec.config_revision,
                            files: spec.files.clone(),
                        });
                    }
                }
            }
            let want = r.wants_process(policy);
            r.blocked = check_waits;
            match &r.proc {
                Proc::Down => {
                    if want && !r.failed {
                        r.blocked = spec
                            .parcels
                            .iter()
                            .find(|p| !active_parcels.contains(*p))
                            .map(|p| format!("parcel {p} is not active on host {}", policy.host));
                    }
                    if want
                        && !r.failed
                        && r.blocked.is_none()
                        && files_current
                        && !r.writing
                        && r.start_at.is_none_or(|t| now >= t)
                    {
                        r.start_at = None;
                        r.attempt_nonce = spec.restart_nonce;
                        r.proc = Proc::Starting { revision: spec.config_revision, nonce: spec.restart_nonce };
                        let loaded =
                            Loaded { digests: spec.file_digests(), restart_digest: spec.restart_digest.clone() };
                        r.loaded = Some(loaded.clone());
                        r.reload_count = 0;
                        r.reloaded_at_unix_ms = 0;
                        effects.push(Effect::Start {
                            role: id.clone(),
                            process: spec.process.clone(),
                            revision: spec.config_revision,
                            nonce: spec.restart_nonce,
                            parcels: spec.parcels.clone(),
                            loaded,
                        });
                    }
                }
                Proc::Up { run, since } => {
                    // A restart waits for new files to pass their check, so a
                    // process is never stopped for files that will not come.
                    let restart = run.nonce != spec.restart_nonce
                        && !(spec.process.config_check.is_some() && policy.run_processes && !files_current);
                    if !want || restart {
                        begin_stop(r, id, now, effects);
                        continue;
                    }
                    if r.probes_for.as_deref().unwrap_or_default() != spec.health_checks.as_slice() {
                        if spec.health_checks.is_empty() {
                            r.probes_for = None;
                            r.probes.clear();
                            effects.push(Effect::StopProbes { role: id.clone() });
                        } else {
                            r.probes = spec
                                .health_checks
                                .iter()
                                .map(|c| Probe { threshold: c.failure_threshold, ..Probe::default() })
                                .collect();
                            r.probes_for = Some(spec.health_checks.clone());
                            effects.push(Effect::StartProbes { role: id.clone(), checks: spec.health_checks.clone() });
                        }
                    }
                    if r.collectors_for.as_deref().unwrap_or_default() != spec.metric_sources.as_slice() {
                        if spec.metric_sources.is_empty() {
                            r.collectors_for = None;
                            effects.push(Effect::StopCollectors { role: id.clone() });
                        } else {
                            r.collectors_for = Some(spec.metric_sources.clone());
                            effects.push(Effect::StartCollectors {
                                role: id.clone(),
                                sources: spec.metric_sources.clone(),
                            });
                        }
                    }
                    if r.reload_due(spec) && now >= *since + policy.reload_settle {
                        let (mut run, since) = (*run, *since);
                        let loaded =
                            Loaded { digests: spec.file_digests(), restart_digest: spec.restart_digest.clone() };
                        effects.push(Effect::Reload {
                            role: id.clone(),
                            pid: run.pid,
                            signal: spec.process.reload_signal.clone(),
                            revision: spec.config_revision,
                            loaded: loaded.clone(),
                        });
                        run.revision = spec.config_revision;
                        r.proc = Proc::Up { run, since };
                        r.loaded = Some(loaded);
                    }
                }
                Proc::Starting { .. } | Proc::Stopping { .. } => {}
            }
        }
        for id in forget {
            self.roles.remove(&id);
        }
    }
}

fn begin_stop(r: &mut Role, id: &str, now: Instant, effects: &mut Vec<Effect>) {
    let Proc::Up { run, .. } = r.proc else { return };
    let (signal, grace) = r.stop_params();
    // A stopping service cannot answer; its collectors would only report that.
    if r.collectors_for.take().is_some() {
        effects.push(Effect::StopCollectors { role: id.to_owned() });
    }
    effects.push(Effect::Stop { role: id.to_owned(), pgid: run.pid, signal });
    r.proc = Proc::Stopping { run, kill_at: now + grace, killed: false };
}

fn exited(
    r: &mut Role,
    id: &str,
    policy: &Policy,
    now: Instant,
    status: ExitStatus,
    log_tail: Vec<String>,
    effects: &mut Vec<Effect>,
) {
    let (run, since) = match r.proc {
        Proc::Up { run, since } => (run, Some(since)),
        Proc::Stopping { run, .. } => (run, None),
        Proc::Down | Proc::Starting { .. } => return,
    };
    r.proc = Proc::Down;
    r.loaded = None;
    r.last_exit_status = status.reported();
    // Stray members of the group must not outlive their leader.
    effects.push(Effect::KillGroup { role: id.to_owned(), pgid: run.pid });
    if r.probes_for.take().is_some() {
        r.probes.clear();
        effects.push(Effect::StopProbes { role: id.to_owned() });
    }
    if r.collectors_for.take().is_some() {
        effects.push(Effect::StopCollectors { role: id.to_owned() });
    }
    if let Some(since) = since
        && r.wants_process(policy)
    {
        let uptime = now.saturating_duration_since(since);
        crashed(r, policy, now, uptime, status.describe(), log_tail);
    }
}

fn crashed(r: &mut Role, policy: &Policy, now: Instant, uptime: Duration, what: String, log_tail: Vec<String>) {
    if uptime >= policy.reset_after {
        r.backoff = policy.initial_backoff;
        r.exits.clear();
    }
    r.exits.push_back(now);
    while r.exits.front().is_some_and(|t| now.saturating_duration_since(*t) > policy.crash_window) {
        r.exits.pop_front();
    }
    r.short_runs = if uptime < policy.min_uptime { r.short_runs + 1 } else { 0 };
    if r.exits.len() >= policy.max_crashes || r.short_runs >= policy.max_crashes {
        r.failed = true;
        r.start_at = None;
        r.last_error = format!(
            "crash loop: the process {what}; {} exits within {}, {} runs in a row shorter than {}; not restarting until the desired state changes",
            r.exits.len(),
            humantime::format_duration(policy.crash_window),
            r.short_runs,
            humantime::format_duration(policy.min_uptime),
        );
        r.last_log_lines = log_tail;
        return;
    }
    let delay = r.backoff;
    r.backoff = (r.backoff * 2).min(policy.max_backoff);
    r.restart_count += 1;
    r.start_at = Some(now + delay);
    r.last_error = format!("the process {what}; restarting in {}", humantime::format_duration(delay));
}

#[cfg(test)]
mod tests;
