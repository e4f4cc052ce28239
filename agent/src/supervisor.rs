//! The async driver of the [`Reconciler`]: writes role files, runs processes in
//! their own process groups, sends signals, runs health probes, rotates logs,
//! persists what a restarted agent needs, and feeds every outcome back as an
//! event. It runs for the life of the agent, whether or not the manager is
//! reachable, enforcing the last desired state it received.
//!
//! What it keeps in the data directory, besides `roles/<role_id>/`:
//!
//! | file               | written                     | why it must survive a restart              |
//! |--------------------|-----------------------------|--------------------------------------------|
//! | `desired-roles.pb` | per new desired state       | enforce it before the manager is reachable |
//! | `roles-state.json` | per start, exit, file write | re-adopt running processes, know the files |
//!
//! Re-adoption: a restarted agent adopts a recorded process only if `/proc/<pid>`
//! exists, is not a zombie, and has the recorded start time (field 22 of
//! `/proc/<pid>/stat`), so a recycled pid is never mistaken for the role. An
//! adopted process is not our child and cannot be waited for: its liveness is
//! polled every second and its disappearance is an exit with unknown status.
//!
//! Config checks: new files of a role with a config check are written to
//! `staging/<role_id>.<n>/` (the role directory's layout, `${ROLE_DIR}` in
//! them already the role directory), the check runs there as a task with the
//! process's environment and a timeout (its process group is killed at the
//! timeout), and its outcome comes back as `CheckPassed` or `CheckFailed`; the
//! staging directory is then deleted. Only then are the files written into
//! the role directory, as without a check.
//!
//! Metrics: while a role's process runs, one task per metric source of its
//! spec collects at the source's interval into the [`MetricsHub`]
//! ([`Supervisor::metrics`]), which the session drains into every heartbeat
//! together with the process figures; see [`crate::collect`].
//!
//! Parcels: given the parcels' view ([`Supervisor::start_with_parcels`]), the
//! supervisor tells the reconciler which parcels are active, replaces
//! `${PARCELS_ROOT}` like `${ROLE_DIR}` (and in health check fields), and gives
//! a role's process the variables of the env scripts of the parcels its spec
//! lists, under the spec's own environment.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::collect::{self, MetricsHub, SourceState};
use crate::datadir;
use crate::files::{self, FilesError, LogRotation};
use crate::health;
use crate::journal::{ExitRecord, Journal};
use crate::parcels::ParcelsView;
use crate::reconcile::{AdoptedProcess, AppliedFiles, Effect, Event, ExitStatus, Loaded, Policy, Reconciler};
use crate::roles::{self, ConfigCheck, HealthCheck, MetricSource, Probe, ProcessSpec, RoleSpec, RoleStatus};
use crate::wire;

pub const DESIRED_ROLES_FILE: &str = "desired-roles.pb";
pub const ROLES_STATE_FILE: &str = "roles-state.json";
/// Log lines reported with a crash loop.
const LOG_TAIL_LINES: usize = 20;
/// Bytes read of each of a config check's stdout and stderr (the rest is discarded).
const CHECK_READ_BYTES: u64 = 16 * 1024;
/// Characters of a config check's output kept in the role's last error.
const CHECK_OUTPUT_CHARS: usize = 1000;
/// Metric sources are never collected from more often than this.
const MIN_COLLECT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Files(#[from] FilesError),
}

/// How the supervisor runs. Build it with [`SupervisorConfig::supervise`] or
/// [`SupervisorConfig::files_only`] and adjust the public fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Holds `roles/<role_id>/` and, when `persist`, the state files.
    pub data_dir: PathBuf,
    pub policy: Policy,
    pub log_rotation: LogRotation,
    /// Persist the desired roles and processes, and re-adopt them on start.
    pub persist: bool,
    /// How often adopted processes are checked for liveness and logs for size.
    pub poll_interval: Duration,
    /// The absolute parcels directory, what `${PARCELS_ROOT}` stands for;
    /// `None`: no parcels, the placeholder is left as it is.
    pub parcels_root: Option<PathBuf>,
}

impl SupervisorConfig {
    /// Runs processes, persists state and re-adopts processes on start.
    pub fn supervise(data_dir: PathBuf) -> Self {
        SupervisorConfig {
            data_dir,
            policy: Policy::default(),
            log_rotation: LogRotation::default(),
            persist: true,
            poll_interval: Duration::from_secs(1),
            parcels_root: None,
        }
    }

    /// Only writes files (synthetic agents of the load generator).
    pub fn files_only(dir: PathBuf) -> Self {
        SupervisorConfig {
            policy: Policy { run_processes: false, ..Policy::default() },
            persist: false,
            ..SupervisorConfig::supervise(dir)
        }
    }
}

/// A running supervisor. Dropping it stops supervision but leaves the role
/// processes running, for the next agent to re-adopt.
#[derive(Debug)]
pub struct Supervisor {
    desired: watch::Sender<Option<(u64, Arc<Vec<RoleSpec>>)>>,
    statuses: watch::Receiver<Arc<Vec<RoleStatus>>>,
    taken: watch::Receiver<u64>,
    metrics: Arc<MetricsHub>,
    journal: Arc<Journal>,
    roles: watch::Receiver<Arc<Vec<RoleSpec>>>,
    data_dir: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Supervisor {
    /// Loads what an earlier agent left (when `config.persist`), re-adopts its
    /// live processes and starts enforcing the last desired state. Must be
    /// called within a Tokio runtime.
    pub fn start(config: SupervisorConfig) -> Result<Supervisor, SupervisorError> {
        Supervisor::start_with_parcels(config, None)
    }

    /// [`Supervisor::start`], with the parcels' view: roles that list parcels
    /// start only once those are active, and get their env scripts' variables.
    /// Without a view no parcel is active.
    pub fn start_with_parcels(
        config: SupervisorConfig,
        parcels: Option<watch::Receiver<Arc<ParcelsView>>>,
    ) -> Result<Supervisor, SupervisorError> {
        datadir::ensure_dir(&config.data_dir)
            .map_err(|e| FilesError::Invalid(format!("data directory for roles: {e}")))?;
        // Checks of an earlier agent are over.
        files::remove_dir(&config.data_dir.join(files::STAGING_DIR))?;
        let roles_dir = config.data_dir.join(files::ROLES_DIR);
        std::fs::create_dir_all(&roles_dir).map_err(|source| FilesError::Io {
            action: "create",
            path: roles_dir.clone(),
            source,
        })?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let status_tx = watch::Sender::new(Arc::new(Vec::new()));
        let roles_tx = watch::Sender::new(Arc::new(Vec::new()));
        let roles = roles_tx.subscribe();
        let taken_tx = watch::Sender::new(0);
        let taken = taken_tx.subscribe();
        let data_dir = config.data_dir.clone();
        let metrics = Arc::new(MetricsHub::new(status_tx.subscribe()));
        let journal = Arc::new(Journal::default());
        let mut driver = Driver {
            journal: journal.clone(),
            reconciler: Reconciler::new(config.policy.clone()),
            records: BTreeMap::new(),
            dirty: false,
            procs: HashMap::new(),
            probes: HashMap::new(),
            collectors: HashMap::new(),
            metrics: metrics.clone(),
            tasks: JoinSet::new(),
            queue: VecDeque::new(),
            events_tx,
            events_rx,
            status_tx,
            roles_tx,
            taken_tx,
            parcels,
            checks: 0,
            config,
        };
        // Before the persisted desired roles, so they do not fail for nothing.
        driver.parcels_changed();
        if driver.config.persist {
            driver.restore();
        }
        let statuses = driver.status_tx.subscribe();
        let (desired, desired_rx) = watch::channel(None);
        let task = tokio::spawn(driver.run(desired_rx));
        Ok(Supervisor { desired, statuses, taken, metrics, journal, roles, data_dir, task })
    }

    /// Hands over a new desired state; the latest one wins.
    pub fn set_desired(&self, generation: u64, roles: Vec<RoleSpec>) {
        self.desired.send_replace(Some((generation, Arc::new(roles))));
    }

    /// The observed state of every role, updated on every change.
    pub fn statuses(&self) -> watch::Receiver<Arc<Vec<RoleStatus>>> {
        self.statuses.clone()
    }

    /// The generation of the last desired state the supervisor took in: when
    /// it changes, [`Supervisor::statuses`] already shows what that desired
    /// state did at once (files written or refused, processes started,
    /// reloaded or stopped), though not what follows later (a config check's
    /// verdict, a process's exit, health).
    pub fn taken(&self) -> watch::Receiver<u64> {
        self.taken.clone()
    }

    /// The roles' process figures and collected service metrics, for
    /// heartbeats ([`MetricsHub::take`]).
    pub fn metrics(&self) -> Arc<MetricsHub> {
        self.metrics.clone()
    }

    /// The roles' last exits and health check results, for diagnostics.
    pub fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    /// The roles of the desired state being enforced (the persisted one until
    /// the manager sends one), for log and diagnostics requests.
    pub fn roles(&self) -> Arc<Vec<RoleSpec>> {
        self.roles.borrow().clone()
    }

    /// The data directory holding `roles/<role_id>/`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// What `roles-state.json` holds per role.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    applied: Option<AppliedRecord>,
    process: Option<ProcessRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct AppliedRecord {
    revision: u64,
    digests: BTreeMap<String, String>,
    hashes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ProcessRecord {
    pid: u32,
    /// Field 22 of /proc/<pid>/stat: clock ticks after boot.
    start_ticks: u64,
    revision: u64,
    nonce: u64,
    started_at_unix_ms: i64,
    /// The files the process read (at start or its last reload); absent in
    /// records of older agents, whose processes are then never reloaded.
    #[serde(default)]
    loaded: Option<LoadedRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct LoadedRecord {
    digests: BTreeMap<String, String>,
    restart_digest: String,
}

impl From<Loaded> for LoadedRecord {
    fn from(l: Loaded) -> Self {
        LoadedRecord { digests: l.digests, restart_digest: l.restart_digest }
    }
}

#[derive(Debug)]
struct RunningProc {
    record: ProcessRecord,
    /// Not our child: poll /proc instead of waiting.
    adopted: bool,
    waiter: Option<AbortHandle>,
}

struct Driver {
    config: SupervisorConfig,
    reconciler: Reconciler,
    records: BTreeMap<String, Record>,
    dirty: bool,
    procs: HashMap<String, RunningProc>,
    probes: HashMap<String, Vec<AbortHandle>>,
    collectors: HashMap<String, Vec<AbortHandle>>,
    metrics: Arc<MetricsHub>,
    /// Exits and check results with their times (for diagnostics).
    journal: Arc<Journal>,
    /// Waiters, probes and collectors; dropping the driver aborts them all.
    tasks: JoinSet<()>,
    queue: VecDeque<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    status_tx: watch::Sender<Arc<Vec<RoleStatus>>>,
    /// The desired roles, as the last `DesiredRoles` event gave them.
    roles_tx: watch::Sender<Arc<Vec<RoleSpec>>>,
    /// The generation of the last desired state taken in, sent once the
    /// statuses it led to are in `status_tx`.
    taken_tx: watch::Sender<u64>,
    parcels: Option<watch::Receiver<Arc<ParcelsView>>>,
    /// Config checks started, naming their staging directories.
    checks: u64,
}

/// Completes when the parcels' view changes; never without one.
async fn parcels_changed(rx: &mut Option<watch::Receiver<Arc<ParcelsView>>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

impl Driver {
    /// Queues the names of the active parcels for the reconciler.
    fn parcels_changed(&mut self) {
        let Some(rx) = &mut self.parcels else { return };
        let active = rx.borrow_and_update().active.keys().cloned().collect();
        self.queue.push_back(Event::ParcelsChanged { active });
    }

    fn dir(&self, role: &str) -> Result<PathBuf, FilesError> {
        files::role_dir(&self.config.data_dir, role)
    }

    /// Queues `Restored` for every recorded role and the persisted desired state.
    fn restore(&mut self) {
        let data = self.config.data_dir.clone();
        let state_path = data.join(ROLES_STATE_FILE);
        match datadir::read_optional(&state_path) {
            Ok(Some(text)) => match serde_json::from_str::<BTreeMap<String, Record>>(&text) {
                Ok(records) => self.records = records,
                Err(e) => warn!(path = %state_path.display(), error = %e, "ignoring unreadable role state"),
            },
            Ok(None) => {}
            Err(e) => warn!(error = %e, "ignoring unreadable role state"),
        }
        for (role, record) in &mut self.records {
            let process = record.process.clone().and_then(|p| {
                if proc_start_ticks(p.pid) == Some(p.start_ticks) {
                    info!(role = %role, pid = p.pid, "re-adopted running process");
                    Some(p)
                } else {
                    info!(role = %role, pid = p.pid, "recorded process is gone (or its pid was reused); not adopting it");
                    None
                }
            });
            record.process.clone_from(&process);
            if let Some(p) = &process {
                self.procs.insert(role.clone(), RunningProc { record: p.clone(), adopted: true, waiter: None });
            }
            self.queue.push_back(Event::Restored {
                role: role.clone(),
                applied: record.applied.clone().map(|a| AppliedFiles {
                    revision: a.revision,
                    digests: a.digests,
                    hashes: a.hashes,
                }),
                process: process.map(|p| AdoptedProcess {
                    pid: p.pid,
                    revision: p.revision,
                    nonce: p.nonce,
                    started_at_unix_ms: p.started_at_unix_ms,
                    loaded: p.loaded.map(|l| Loaded { digests: l.digests, restart_digest: l.restart_digest }),
                }),
            });
        }
        self.dirty = true;
        let desired_path = data.join(DESIRED_ROLES_FILE);
        match std::fs::read(&desired_path) {
            Ok(bytes) => match wire::decode_desired_roles(&bytes) {
                Ok((generation, roles)) => {
                    info!(generation, roles = roles.len(), "enforcing the last desired state received");
                    self.queue.push_back(Event::DesiredRoles { generation, roles });
                }
                Err(e) => warn!(path = %desired_path.display(), error = %e, "ignoring unreadable desired roles"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %desired_path.display(), error = %e, "ignoring unreadable desired roles"),
        }
    }

    async fn run(mut self, mut desired_rx: watch::Receiver<Option<(u64, Arc<Vec<RoleSpec>>)>>) {
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut taken = None;
            while let Some(event) = self.queue.pop_front() {
                if let Event::DesiredRoles { generation, roles } = &event {
                    self.roles_tx.send_replace(Arc::new(roles.clone()));
                    taken = Some(*generation);
                }
                let effects = self.reconciler.handle(Instant::now(), event);
                self.perform(effects);
            }
            // After the events its effects queued (files written, ...): the
            // statuses now show what the desired state did.
            if let Some(generation) = taken {
                self.taken_tx.send_replace(generation);
            }
            while self.tasks.try_join_next().is_some() {}
            self.save_records();
            let deadline = self.reconciler.deadline();
            let polling = !self.procs.is_empty();
            tokio::select! {
                changed = desired_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some((generation, roles)) = desired_rx.borrow_and_update().clone() else { continue };
                    self.save_desired(generation, &roles);
                    self.queue.push_back(Event::DesiredRoles { generation, roles: roles.as_ref().clone() });
                }
                Some(event) = self.events_rx.recv() => {
                    if let Event::ProcessExited { role, .. } = &event {
                        self.exited(&role.clone());
                    }
                    self.queue.push_back(event);
                }
                () = sleep_until_opt(deadline), if deadline.is_some() => self.queue.push_back(Event::Tick),
                _ = poll.tick(), if polling => self.poll(),
                () = parcels_changed(&mut self.parcels) => self.parcels_changed(),
            }
        }
    }

    fn save_desired(&self, generation: u64, roles: &[RoleSpec]) {
        if !self.config.persist {
            return;
        }
        let path = self.config.data_dir.join(DESIRED_ROLES_FILE);
        if let Err(e) = datadir::write_atomic(&path, &wire::encode_desired_roles(generation, roles)) {
            warn!(error = %e, "could not persist the desired roles; a restarted agent will wait for the manager");
        }
    }

    fn save_records(&mut self) {
        if !self.dirty || !self.config.persist {
            return;
        }
        self.dirty = false;
        let path = self.config.data_dir.join(ROLES_STATE_FILE);
        let result = serde_json::to_vec_pretty(&self.records)
            .map_err(|e| e.to_string())
            .and_then(|json| datadir::write_atomic(&path, &json).map_err(|e| e.to_string()));
        if let Err(e) = result {
            warn!(error = %e, "could not persist role state; a restarted agent may not re-adopt processes");
        }
    }

    /// Checks adopted processes for liveness and logs for size.
    fn poll(&mut self) {
        let mut gone = Vec::new();
        for (role, p) in &self.procs {
            if p.adopted && proc_start_ticks(p.record.pid) != Some(p.record.start_ticks) {
                gone.push(role.clone());
            }
            let roles = self.roles_tx.borrow();
            let spec = roles.iter().find(|r| r.role_id == *role).map(|r| r.log.clone()).unwrap_or_default();
            drop(roles);
            if let Ok(dir) = self.dir(role)
                && let Err(e) = files::rotate_log(&dir, self.config.log_rotation.with_spec(&spec))
            {
                warn!(role = %role, error = %e, "could not rotate the log");
            }
        }
        for role in gone {
            let started = self.procs.get(&role).map(|p| p.record.started_at_unix_ms);
            self.journal.exited(&role, exit_record(ExitStatus::Unknown, started));
            self.exited(&role);
            let log_tail = self.dir(&role).map(|d| files::log_tail(&d, LOG_TAIL_LINES)).unwrap_or_default();
            self.queue.push_back(Event::ProcessExited { role, status: ExitStatus::Unknown, log_tail });
        }
    }

    /// Forgets the process of `role`, which exited.
    fn exited(&mut self, role: &str) {
        self.procs.remove(role);
        if let Some(r) = self.records.get_mut(role) {
            r.process = None;
            self.dirty = true;
        }
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::WriteFiles { role, revision, files } => {
                    let digests = files.iter().map(|f| (f.path.clone(), f.sha256.clone())).collect();
                    let parcels_root = self.config.parcels_root.as_deref();
                    let result = self.dir(&role).and_then(|dir| files::write_files_with(&dir, &files, parcels_root));
                    match result {
                        Ok(hashes) => {
                            debug!(role = %role, revision, files = files.len(), "files written");
                            let record = self.records.entry(role.clone()).or_default();
                            record.applied = Some(AppliedRecord {
                                revision,
                                digests: BTreeMap::clone(&digests),
                                hashes: hashes.clone(),
                            });
                            self.dirty = true;
                            self.queue.push_back(Event::FilesWritten { role, revision, digests, hashes });
                        }
                        Err(e) => {
                            warn!(role = %role, revision, error = %e, "could not write role files");
                            self.queue.push_back(Event::WriteFailed { role, revision, error: e.to_string() });
                        }
                    }
                }
                Effect::CheckFiles { role, revision, files, check, env, parcels } => {
                    self.check(role, revision, &files, check, env, &parcels);
                }
                Effect::Start { role, process, revision, nonce, parcels, loaded } => {
                    self.start(role, &process, &parcels, revision, nonce, loaded);
                }
                Effect::Reload { role, pid, signal, revision, loaded } => {
                    self.reload(role, pid, &signal, revision, loaded)
                }
                Effect::Stop { role, pgid, signal } => {
                    let sig = parse_signal(&signal).unwrap_or_else(|| {
                        warn!(role = %role, signal = %signal, "unknown stop signal; using SIGTERM");
                        Signal::SIGTERM
                    });
                    info!(role = %role, pgid, signal = %sig, "stopping");
                    signal_group(&role, pgid, sig);
                }
                Effect::KillGroup { role, pgid } => signal_group(&role, pgid, Signal::SIGKILL),
                Effect::StartProbes { role, checks } => self.start_probes(role, checks),
                Effect::StopProbes { role } => {
                    for handle in self.probes.remove(&role).unwrap_or_default() {
                        handle.abort();
                    }
                }
                Effect::StartCollectors { role, sources } => self.start_collectors(role, sources),
                Effect::StopCollectors { role } => self.stop_collectors(&role),
                Effect::RemoveRoleDir { role } => {
                    self.journal.forget(&role);
                    if self.records.remove(&role).is_some() {
                        self.dirty = true;
                    }
                    match self.dir(&role).and_then(|dir| files::remove_dir(&dir)) {
                        Ok(()) => info!(role = %role, "role removed"),
                        Err(e) => warn!(role = %role, error = %e, "could not remove the role directory"),
                    }
                }
                Effect::Report(statuses) => {
                    self.status_tx.send_replace(Arc::new(statuses));
                }
            }
        }
    }

    /// Sends the reload signal to the process itself (not its group: nginx's
    /// workers, for one, must not get the master's SIGHUP) and records that it
    /// now runs with the new files.
    fn reload(&mut self, role: String, pid: u32, signal: &str, revision: u64, loaded: Loaded) {
        let result = match (parse_signal(signal), i32::try_from(pid)) {
            (Some(sig), Ok(raw)) if raw > 1 => nix::sys::signal::kill(Pid::from_raw(raw), sig)
                .map_err(|e| format!("{sig} to pid {pid}: {e}"))
                .map(|()| sig),
            (None, _) => Err(format!("unknown reload signal {signal:?}")),
            _ => Err(format!("bad pid {pid}")),
        };
        match result {
            Ok(sig) => {
                info!(role = %role, pid, signal = %sig, revision, "reloaded with new files");
                if let Some(p) = self.records.get_mut(&role).and_then(|r| r.process.as_mut()) {
                    p.revision = revision;
                    p.loaded = Some(loaded.into());
                    self.dirty = true;
                }
                let at_unix_ms =
                    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
                self.queue.push_back(Event::Reloaded { role, at_unix_ms });
            }
            Err(error) => {
                warn!(role = %role, pid, error = %error, "could not reload the process");
                self.queue.push_back(Event::ReloadFailed { role, error });
            }
        }
    }

    /// Stages the files and runs the config check on them in a task.
    fn check(
        &mut self,
        role: String,
        revision: u64,
        files: &[roles::ConfigFile],
        check: ConfigCheck,
        env: BTreeMap<String, String>,
        parcels: &[String],
    ) {
        let digests: BTreeMap<String, String> = files.iter().map(|f| (f.path.clone(), f.sha256.clone())).collect();
        self.checks += 1;
        let stage = self.config.data_dir.join(files::STAGING_DIR).join(format!("{role}.{}", self.checks));
        let parcels_root = self.config.parcels_root.clone();
        let staged = self.dir(&role).and_then(|dir| {
            files::stage_files(&stage, &dir, files, parcels_root.as_deref())?;
            Ok(dir)
        });
        let dir = match staged {
            Ok(dir) => dir,
            Err(e) => {
                warn!(role = %role, revision, error = %e, "could not stage role files for their config check");
                let _ = files::remove_dir(&stage);
                self.queue.push_back(Event::WriteFailed { role, revision, error: e.to_string() });
                return;
            }
        };
        let cmd = parcel_env(parcels_root.as_deref(), parcels).map(|parcel_env| {
            let at_stage = |t: &str| t.replace(roles::CHECK_DIR_PLACEHOLDER, &stage.to_string_lossy());
            let spec = ProcessSpec {
                program: at_stage(&check.program),
                args: check.args.iter().map(|a| at_stage(a)).collect(),
                env,
                working_dir: stage.to_string_lossy().into_owned(),
                ..ProcessSpec::default()
            };
            let mut cmd = command(&spec, &dir, parcels_root.as_deref(), parcel_env);
            cmd.env("CHECK_DIR", &stage);
            (cmd, spec.program)
        });
        let events = self.events_tx.clone();
        self.tasks.spawn(async move {
            let result = match cmd {
                Ok((cmd, program)) => run_check(cmd, &program, check.timeout).await,
                Err(e) => Err(format!("could not run the check: {e}")),
            };
            // A few small files: not worth the blocking pool.
            if let Err(e) = files::remove_dir(&stage) {
                warn!(role = %role, error = %e, "could not remove the staging directory of a config check");
            }
            let event = match result {
                Ok(()) => {
                    info!(role = %role, revision, "config check passed");
                    Event::CheckPassed { role, revision, digests }
                }
                Err(error) => {
                    warn!(role = %role, revision, error = %error, "config check failed; the role keeps its files");
                    Event::CheckFailed { role, revision, digests, error }
                }
            };
            let _ = events.send(event);
        });
    }

    fn start(
        &mut self,
        role: String,
        spec: &ProcessSpec,
        parcels: &[String],
        revision: u64,
        nonce: u64,
        loaded: Loaded,
    ) {
        let parcels_root = self.config.parcels_root.clone();
        let spawned = self.dir(&role).and_then(|dir| {
            let parcel_env = parcel_env(parcels_root.as_deref(), parcels)?;
            let (log, log_err) = files::open_logs(&dir)?;
            let mut cmd = command(spec, &dir, parcels_root.as_deref(), parcel_env);
            cmd.stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
            cmd.spawn().map(|child| (child, dir)).map_err(|e| FilesError::Invalid(format!("{}: {e}", spec.program)))
        });
        let (mut child, dir) = match spawned {
            Ok(ok) => ok,
            Err(e) => {
                warn!(role = %role, error = %e, "could not start the process");
                self.queue.push_back(Event::StartFailed { role, error: e.to_string() });
                return;
            }
        };
        let Some(pid) = child.id() else {
            self.queue.push_back(Event::StartFailed { role, error: "the process vanished at once".into() });
            return;
        };
        let started_at_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        let record = ProcessRecord {
            pid,
            start_ticks: proc_start_ticks(pid).unwrap_or_default(),
            revision,
            nonce,
            started_at_unix_ms,
            loaded: Some(loaded.into()),
        };
        info!(role = %role, pid, revision, nonce, "process started");
        let events = self.events_tx.clone();
        let waiter_role = role.clone();
        let journal = self.journal.clone();
        let waiter = self.tasks.spawn(async move {
            let status = match child.wait().await {
                Ok(s) => exit_status(s),
                Err(_) => ExitStatus::Unknown,
            };
            journal.exited(&waiter_role, exit_record(status, Some(started_at_unix_ms)));
            let log_tail = files::log_tail(&dir, LOG_TAIL_LINES);
            let _ = events.send(Event::ProcessExited { role: waiter_role, status, log_tail });
        });
        self.records.entry(role.clone()).or_default().process = Some(record.clone());
        self.dirty = true;
        self.procs.insert(role.clone(), RunningProc { record, adopted: false, waiter: Some(waiter) });
        self.queue.push_back(Event::ProcessStarted { role, pid, started_at_unix_ms });
    }

    fn start_probes(&mut self, role: String, checks: Vec<HealthCheck>) {
        for handle in self.probes.remove(&role).unwrap_or_default() {
            handle.abort();
        }
        let Ok(dir) = self.dir(&role) else { return };
        let parcels_root = self.config.parcels_root.clone();
        let mut handles = Vec::new();
        self.journal.checks_started(&role, checks.len());
        for (check, mut hc) in checks.into_iter().enumerate() {
            hc.probe = probe_with_parcels_root(hc.probe, parcels_root.as_deref());
            let events = self.events_tx.clone();
            let role = role.clone();
            let dir = dir.clone();
            let journal = self.journal.clone();
            handles.push(self.tasks.spawn(async move {
                let mut ticker = tokio::time::interval_at(Instant::now() + hc.interval, hc.interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let result = health::run(&hc.probe, hc.timeout, &dir).await;
                    journal.checked(&role, check, collect::unix_ms_now(), &result);
                    if let Err(reason) = &result {
                        debug!(role = %role, check, reason = %reason, "health check failed");
                    }
                    let ok = result.is_ok();
                    if events.send(Event::HealthResult { role: role.clone(), check, ok }).is_err() {
                        return;
                    }
                }
            }));
        }
        self.probes.insert(role, handles);
    }
}

impl Driver {
    fn stop_collectors(&mut self, role: &str) {
        for handle in self.collectors.remove(role).unwrap_or_default() {
            handle.abort();
        }
        self.metrics.sources_stopped(role);
    }

    /// One task per source, collecting at its interval (the first time one
    /// interval after the start) into the metrics hub.
    fn start_collectors(&mut self, role: String, sources: Vec<MetricSource>) {
        self.stop_collectors(&role);
        let Ok(dir) = self.dir(&role) else { return };
        let parcels_root = self.config.parcels_root.clone();
        let mut handles = Vec::new();
        for (index, source) in sources.into_iter().enumerate() {
            let kind = collect::with_placeholders(source.kind, &dir, parcels_root.as_deref());
            let interval = source.interval.max(MIN_COLLECT_INTERVAL);
            let (hub, role, dir) = (self.metrics.clone(), role.clone(), dir.clone());
            handles.push(self.tasks.spawn(async move {
                let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut state = SourceState::default();
                loop {
                    ticker.tick().await;
                    let result = collect::collect(&kind, source.timeout, &dir, &mut state).await;
                    if let Err(reason) = &result {
                        debug!(role = %role, source = index, reason = %reason, "metric collection failed");
                    }
                    hub.record(&role, index, &kind, result);
                }
            }));
        }
        self.collectors.insert(role, handles);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Waiters hold the children; aborting them leaves the processes running.
        for p in self.procs.values() {
            if let Some(w) = &p.waiter {
                w.abort();
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The variables the env scripts of `parcels` set, in order: each script sees
/// the agent's `PATH` and the variables of the scripts before it. An error
/// when a parcel is not active (any more).
fn parcel_env(root: Option<&Path>, parcels: &[String]) -> Result<BTreeMap<String, String>, FilesError> {
    let mut env = BTreeMap::new();
    if parcels.is_empty() {
        return Ok(env);
    }
    let root = root.ok_or_else(|| FilesError::Invalid("this agent has no parcels directory".into()))?;
    let mut inherited = BTreeMap::new();
    inherited.insert("PATH".to_owned(), default_path().to_string_lossy().into_owned());
    for name in parcels {
        let vars = drover_parcels::parcel_env(root, name, &inherited)
            .map_err(|e| FilesError::Invalid(format!("parcel {name}: {e}")))?;
        for (k, v) in vars {
            inherited.insert(k.clone(), v.clone());
            env.insert(k, v);
        }
    }
    Ok(env)
}

fn default_path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// `${PARCELS_ROOT}` replaced in every text field of a probe.
fn probe_with_parcels_root(probe: Probe, root: Option<&Path>) -> Probe {
    let sub = |t: String| files::substitute_parcels_root(&t, root);
    match probe {
        Probe::Tcp { host, port } => Probe::Tcp { host: sub(host), port },
        Probe::Http { url, expect_status } => Probe::Http { url: sub(url), expect_status },
        Probe::Command { program, args } => {
            Probe::Command { program: sub(program), args: args.into_iter().map(sub).collect() }
        }
        Probe::Unknown => Probe::Unknown,
    }
}

/// The command for a role process: its own process group, a clean environment
/// (PATH, ROLE_DIR, PARCELS_ROOT, the listed parcels' variables, then the
/// spec's variables, which win), `${PARCELS_ROOT}` and `${ROLE_DIR}` substituted.
fn command(
    spec: &ProcessSpec,
    dir: &Path,
    parcels_root: Option<&Path>,
    parcel_env: BTreeMap<String, String>,
) -> tokio::process::Command {
    let sub = |t: &str| files::substitute_all(t, dir, parcels_root);
    let mut cmd = tokio::process::Command::new(sub(&spec.program));
    cmd.args(spec.args.iter().map(|a| sub(a)));
    cmd.env_clear();
    cmd.env("PATH", default_path());
    cmd.env("ROLE_DIR", dir);
    if let Some(root) = parcels_root {
        cmd.env("PARCELS_ROOT", root);
    }
    cmd.envs(parcel_env);
    for (k, v) in &spec.env {
        cmd.env(k, sub(v));
    }
    let wd = sub(&spec.working_dir);
    cmd.current_dir(if wd.is_empty() { dir.to_path_buf() } else { dir.join(wd) });
    cmd.stdin(Stdio::null());
    cmd.process_group(0);
    cmd.kill_on_drop(false);
    cmd
}

/// Runs a config check to its end or `timeout` (then SIGKILL to its process
/// group): `Ok` on exit status 0, else how it ended with its output.
async fn run_check(mut cmd: tokio::process::Command, program: &str, timeout: Duration) -> Result<(), String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("could not run {program}: {e}"))?;
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let ran = tokio::time::timeout(timeout, async {
        let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
        (child.wait().await, out, err)
    })
    .await;
    match ran {
        Ok((Ok(status), _, _)) if status.success() => Ok(()),
        Ok((Ok(status), out, err)) => {
            Err(format!("{program} {}: {}", exit_status(status).describe(), check_output(&out, &err)))
        }
        Ok((Err(e), _, _)) => Err(format!("could not wait for {program}: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                signal_group("config check", pid, Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Err(format!("{program} did not finish within {}", humantime::format_duration(timeout)))
        }
    }
}

/// The first [`CHECK_READ_BYTES`] of a pipe; the rest is read and dropped so
/// the writer never blocks on it.
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut pipe) = pipe else { return Vec::new() };
    let mut buf = Vec::new();
    let _ = (&mut pipe).take(CHECK_READ_BYTES).read_to_end(&mut buf).await;
    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    buf
}

/// A check's stdout and stderr as one text for the role's last error: lines
/// trimmed, blank ones dropped, at most [`CHECK_OUTPUT_CHARS`] characters.
fn check_output(stdout: &[u8], stderr: &[u8]) -> String {
    let text = [stdout, stderr]
        .iter()
        .flat_map(|b| String::from_utf8_lossy(b).lines().map(|l| l.trim().to_owned()).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if text.is_empty() {
        return "no output".into();
    }
    match text.char_indices().nth(CHECK_OUTPUT_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// An exit as the journal keeps it; `started`: when the process started.
fn exit_record(status: ExitStatus, started: Option<i64>) -> ExitRecord {
    let at_unix_ms = collect::unix_ms_now();
    ExitRecord {
        at_unix_ms,
        code: status.reported(),
        description: status.describe(),
        uptime_ms: started.filter(|s| *s > 0).map(|s| (at_unix_ms - s).max(0)),
    }
}

fn exit_status(s: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        (None, None) => ExitStatus::Unknown,
    }
}

/// `SIGTERM`, `TERM` or `15`; empty means SIGTERM.
pub fn parse_signal(name: &str) -> Option<Signal> {
    let name = name.trim();
    if name.is_empty() {
        return Some(Signal::SIGTERM);
    }
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    Signal::from_str(&upper).or_else(|_| Signal::from_str(&format!("SIG{upper}"))).ok()
}

fn signal_group(role: &str, pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => warn!(role = %role, pgid, signal = %signal, error = %e, "could not signal the process group"),
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks after boot), or
/// `None` if the process does not exist or is a zombie.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        for (name, want) in [
            ("", Some(Signal::SIGTERM)),
            ("SIGINT", Some(Signal::SIGINT)),
            ("quit", Some(Signal::SIGQUIT)),
            ("9", Some(Signal::SIGKILL)),
            ("SIGNOPE", None),
        ] {
            assert_eq!(parse_signal(name), want, "{name}");
        }
    }

    #[test]
    fn check_output_is_trimmed_and_bounded() {
        assert_eq!(check_output(b"  ok line \n\n", b"err: bad\n"), "ok line\nerr: bad");
        assert_eq!(check_output(b"", b" \n"), "no output");
        let long = "é".repeat(3 * CHECK_OUTPUT_CHARS);
        let out = check_output(long.as_bytes(), b"");
        assert_eq!(out.chars().count(), CHECK_OUTPUT_CHARS + 3);
        assert!(out.ends_with("..."));
    }

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id();
        assert!(proc_start_ticks(me).is_some());
        assert_eq!(proc_start_ticks(me), proc_start_ticks(me));
        assert_eq!(proc_start_ticks(u32::MAX), None);
    }
}
