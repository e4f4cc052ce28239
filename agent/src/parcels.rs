//! Parcels on the agent: the versions the manager wants on this host
//! ([`ParcelSpec`], from `DesiredState.parcels`), what is on disk, and the work
//! in between: download through a [`ParcelFetcher`] (resumed from the partial
//! file, two at a time, after a free-space check), verify and unpack with the
//! parcel library's [`install`], then `activate`, `deactivate` and `remove`.
//! The fetcher is injected: the session's calls the manager's `FetchParcel`,
//! so this module knows nothing of gRPC.
//!
//! The decisions are a plain state machine, [`ParcelReconciler`]:
//! `handle(now, Event) -> Vec<Effect>`, with no I/O and no clock, so every
//! rule is a table test. [`Parcels`] is its async driver: downloads run as
//! tasks, unpacking and symlink switches on the blocking pool, and each outcome
//! comes back as an event carrying a fresh look at the disk.
//!
//! Rules:
//! - nothing is touched before the first desired state: an agent restarted
//!   without its manager keeps whatever is installed and active;
//! - a listed version that is not installed is downloaded into
//!   `.downloads/FILE.part`, resuming from its length; a complete download is
//!   renamed to `.downloads/FILE`, installed (size and sha256 checked first, so a
//!   partial or corrupt download is never unpacked, let alone activated) and
//!   deleted; a failure is reported `FAILED` and retried with backoff while the
//!   other parcels go on;
//! - for each name, the first listed version with target `ACTIVE` is activated
//!   once installed (the previous version stays on disk); a name without a
//!   listed `ACTIVE` version is deactivated; an installed version that is
//!   neither listed nor active is removed. One such operation runs at a time;
//!   a failed one is reported `FAILED` on that version and retried later (a
//!   failed activation leaves the previous version active);
//! - activation enforces the parcel's `depends` and `conflicts` against the
//!   other active parcels (in the parcel library): a refusal names both
//!   parcels and is reported `FAILED` like any failed activation; since
//!   another activation or deactivation may settle it, every failed
//!   activation is tried again at once after one succeeds (activations run in
//!   name order, so `app` depending on `base` waits for `base`);
//! - switching the active version never restarts a role: processes keep the
//!   versioned directory they started with, and the manager's upgrade command
//!   restarts roles when it wants them on the new version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use drover_parcels::{self as parcel, Expected, ParcelError, ParcelId};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tracing::{debug, info, warn};

/// The capability an agent announces in `Hello` when it handles parcels.
pub const CAPABILITY: &str = "parcels.v1";
/// Subdirectory of the parcels directory holding downloads in progress.
pub const DOWNLOADS_DIR: &str = ".downloads";
/// Suffix of a download in progress.
const PART_SUFFIX: &str = ".part";

/// What the manager wants done with one parcel version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParcelTarget {
    /// Downloaded, verified and unpacked, not active.
    #[default]
    Distributed,
    /// Distributed and the active version of its name.
    Active,
}

/// One parcel version the host must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParcelSpec {
    pub name: String,
    pub version: String,
    /// `NAME-VERSION-DISTRO.parcel`, fetched with `FetchParcel`.
    pub file_name: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    pub size: u64,
    pub target: ParcelTarget,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParcelState {
    #[default]
    Downloading,
    /// Downloaded, verified and unpacked; not active.
    Distributed,
    Active,
    /// See `error`.
    Failed,
}

/// Observed state of one parcel version, reported to the manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParcelStatus {
    pub name: String,
    pub version: String,
    pub state: ParcelState,
    pub downloaded_bytes: u64,
    pub total_bytes: u64,
    pub error: String,
}

/// What is on disk under the parcels directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalParcels {
    /// Complete installs, as `(name, version)`.
    pub installed: BTreeSet<(String, String)>,
    /// Active version by name.
    pub active: BTreeMap<String, String>,
}

impl LocalParcels {
    /// Reads the installs and active links under `root`.
    pub fn scan(root: &Path) -> Result<LocalParcels, ParcelError> {
        let mut local = LocalParcels::default();
        for v in parcel::installed(root)? {
            if v.active {
                local.active.insert(v.name.clone(), v.version.clone());
            }
            local.installed.insert((v.name, v.version));
        }
        Ok(local)
    }

    fn is_active(&self, name: &str, version: &str) -> bool {
        self.active.get(name).is_some_and(|v| v == version)
    }
}

/// Timing and limits of parcel handling. [`ParcelPolicy::default`] holds the
/// production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParcelPolicy {
    /// Downloads running at the same time.
    pub max_downloads: usize,
    /// Wait before the first retry of a failed download; doubles per attempt.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Wait before retrying a failed activate, deactivate or remove.
    pub op_retry: Duration,
    /// Download progress is reported at most this often per parcel.
    pub progress_interval: Duration,
    /// Bytes to keep free on top of what a parcel needs (twice its size).
    pub reserve_bytes: u64,
}

impl Default for ParcelPolicy {
    fn default() -> Self {
        ParcelPolicy {
            max_downloads: 2,
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            op_retry: Duration::from_secs(30),
            progress_interval: Duration::from_millis(500),
            reserve_bytes: 0,
        }
    }
}

/// A filesystem operation on installed parcels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Activate {
        name: String,
        version: String,
    },
    /// Deactivate `name`, whose active version is `version`.
    Deactivate {
        name: String,
        version: String,
    },
    Remove {
        name: String,
        version: String,
    },
}

impl Op {
    /// The version the operation is about; its status carries the error.
    fn key(&self) -> Key {
        match self {
            Op::Activate { name, version } | Op::Deactivate { name, version } | Op::Remove { name, version } => {
                (name.clone(), version.clone())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The parcels the manager wants (the whole list).
    Desired(Vec<ParcelSpec>),
    /// A download in progress reached `downloaded` bytes.
    Progress { name: String, version: String, downloaded: u64 },
    /// A `Distribute` ended; `local` is the disk as it is now (`None`: it could
    /// not be read, the last look stands).
    Distributed { name: String, version: String, result: Result<(), String>, local: Option<LocalParcels> },
    /// A `Run` ended; `local` as for `Distributed`.
    OpDone { op: Op, result: Result<(), String>, local: Option<LocalParcels> },
    /// The deadline returned by [`ParcelReconciler::deadline`] may have passed.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Download, verify and install; answer with `Progress` events and one `Distributed`.
    Distribute(ParcelSpec),
    /// Run the operation; answer with `OpDone`.
    Run(Op),
    /// Delete files in `.downloads/` that belong to none of these parcel files.
    PruneDownloads { keep: BTreeSet<String> },
    /// The observed state changed.
    Report(Vec<ParcelStatus>),
}

type Key = (String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum DownloadState {
    Queued,
    Running,
    Failed { error: String, retry_at: Instant },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Download {
    spec: ParcelSpec,
    state: DownloadState,
    downloaded: u64,
    attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct OpFailure {
    op: Op,
    error: String,
    retry_at: Instant,
}

/// The parcel reconciler of one host.
#[derive(Debug)]
pub struct ParcelReconciler {
    policy: ParcelPolicy,
    desired: Option<Vec<ParcelSpec>>,
    local: LocalParcels,
    downloads: BTreeMap<Key, Download>,
    running_op: Option<Op>,
    op_failures: BTreeMap<Key, OpFailure>,
    reported: Option<Vec<ParcelStatus>>,
}

impl ParcelReconciler {
    /// Starts from what is on disk; nothing is done before the first `Desired`.
    pub fn new(policy: ParcelPolicy, local: LocalParcels) -> Self {
        ParcelReconciler {
            policy,
            desired: None,
            local,
            downloads: BTreeMap::new(),
            running_op: None,
            op_failures: BTreeMap::new(),
            reported: None,
        }
    }

    /// The disk as last seen.
    pub fn local(&self) -> &LocalParcels {
        &self.local
    }

    /// The next time [`Event::Tick`] must be delivered, if any.
    pub fn deadline(&self) -> Option<Instant> {
        let downloads = self.downloads.values().filter_map(|d| match &d.state {
            DownloadState::Failed { retry_at, .. } => Some(*retry_at),
            _ => None,
        });
        let ops = self.op_failures.values().map(|f| f.retry_at);
        downloads.chain(ops).min()
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Desired(specs) => {
                let keep: BTreeSet<String> = specs
                    .iter()
                    .map(|s| s.file_name.clone())
                    .chain(self.downloads.values().map(|d| d.spec.file_name.clone()))
                    .collect();
                if self.desired.as_ref() != Some(&specs) {
                    effects.push(Effect::PruneDownloads { keep });
                    // A new desired state: failed operations are tried again at once.
                    for f in self.op_failures.values_mut() {
                        f.retry_at = now;
                    }
                }
                self.desired = Some(specs);
            }
            Event::Progress { name, version, downloaded } => {
                if let Some(d) = self.downloads.get_mut(&(name, version))
                    && d.state == DownloadState::Running
                {
                    d.downloaded = downloaded;
                }
            }
            Event::Distributed { name, version, result, local } => {
                if let Some(local) = local {
                    self.local = local;
                }
                let key = (name, version);
                match result {
                    Ok(()) => {
                        self.downloads.remove(&key);
                    }
                    Err(error) => {
                        if let Some(d) = self.downloads.get_mut(&key) {
                            d.attempts = d.attempts.saturating_add(1);
                            let retry_at = now + retry_delay(&self.policy, d.attempts);
                            d.state = DownloadState::Failed { error, retry_at };
                        }
                    }
                }
            }
            Event::OpDone { op, result, local } => {
                if let Some(local) = local {
                    self.local = local;
                }
                if self.running_op.as_ref() == Some(&op) {
                    self.running_op = None;
                }
                let key = op.key();
                match result {
                    Ok(()) => {
                        self.op_failures.remove(&key);
                        if matches!(op, Op::Activate { .. } | Op::Deactivate { .. }) {
                            // The active set changed: a refused activation may pass now.
                            for f in self.op_failures.values_mut() {
                                if matches!(f.op, Op::Activate { .. }) {
                                    f.retry_at = now;
                                }
                            }
                        }
                    }
                    Err(error) => {
                        let retry_at = now + self.policy.op_retry;
                        self.op_failures.insert(key, OpFailure { op, error, retry_at });
                    }
                }
            }
            Event::Tick => {}
        }
        self.converge(now, &mut effects);
        let statuses = self.statuses();
        if self.reported.as_ref() != Some(&statuses) {
            self.reported = Some(statuses.clone());
            effects.push(Effect::Report(statuses));
        }
        effects
    }

    /// The version of each name the manager wants active: the first listed one.
    fn wanted_active(desired: &[ParcelSpec]) -> BTreeMap<&str, &str> {
        let mut wanted = BTreeMap::new();
        for s in desired.iter().filter(|s| s.target == ParcelTarget::Active) {
            wanted.entry(s.name.as_str()).or_insert(s.version.as_str());
        }
        wanted
    }

    /// Every operation the desired state calls for, in the order they run:
    /// activations, deactivations, removals.
    fn needed_ops(&self, desired: &[ParcelSpec]) -> Vec<Op> {
        let wanted = Self::wanted_active(desired);
        let listed: BTreeSet<(&str, &str)> = desired.iter().map(|s| (s.name.as_str(), s.version.as_str())).collect();
        let mut ops = Vec::new();
        for (name, version) in &wanted {
            if !self.local.is_active(name, version)
                && self.local.installed.contains(&((*name).into(), (*version).into()))
            {
                ops.push(Op::Activate { name: (*name).into(), version: (*version).into() });
            }
        }
        for (name, version) in &self.local.active {
            if !wanted.contains_key(name.as_str()) {
                ops.push(Op::Deactivate { name: name.clone(), version: version.clone() });
            }
        }
        for (name, version) in &self.local.installed {
            if !listed.contains(&(name.as_str(), version.as_str())) && !self.local.is_active(name, version) {
                ops.push(Op::Remove { name: name.clone(), version: version.clone() });
            }
        }
        ops
    }

    fn converge(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let Some(desired) = self.desired.clone() else { return };

        // Downloads: one per listed version that is not installed.
        let mut listed = BTreeSet::new();
        for spec in &desired {
            let key = (spec.name.clone(), spec.version.clone());
            if !listed.insert(key.clone()) || self.local.installed.contains(&key) {
                continue;
            }
            self.downloads.entry(key).or_insert_with(|| Download {
                spec: spec.clone(),
                state: DownloadState::Queued,
                downloaded: 0,
                attempts: 0,
            });
        }
        let installed = &self.local.installed;
        // A running download finishes even if it is no longer wanted; its result is dropped.
        self.downloads
            .retain(|key, d| d.state == DownloadState::Running || (listed.contains(key) && !installed.contains(key)));
        let mut running = self.downloads.values().filter(|d| d.state == DownloadState::Running).count();
        for (key, d) in &mut self.downloads {
            if running >= self.policy.max_downloads {
                break;
            }
            let ready = match &d.state {
                DownloadState::Queued => true,
                DownloadState::Failed { retry_at, .. } => now >= *retry_at,
                DownloadState::Running => false,
            };
            if ready && listed.contains(key) {
                d.state = DownloadState::Running;
                running += 1;
                effects.push(Effect::Distribute(d.spec.clone()));
            }
        }

        // Activate, deactivate, remove: one at a time.
        let needed = self.needed_ops(&desired);
        let needed_keys: BTreeSet<Key> = needed.iter().map(Op::key).collect();
        self.op_failures.retain(|key, f| needed_keys.contains(key) && needed.contains(&f.op));
        if self.running_op.is_none()
            && let Some(op) = needed
                .into_iter()
                .find(|op| self.op_failures.get(&op.key()).is_none_or(|f| f.op != *op || now >= f.retry_at))
        {
            self.running_op = Some(op.clone());
            effects.push(Effect::Run(op));
        }
    }

    /// Every parcel version on the host or on its way, sorted by name and version.
    pub fn statuses(&self) -> Vec<ParcelStatus> {
        let sizes: BTreeMap<Key, u64> =
            self.desired.iter().flatten().map(|s| ((s.name.clone(), s.version.clone()), s.size)).collect();
        let mut out: BTreeMap<Key, ParcelStatus> = BTreeMap::new();
        for key in &self.local.installed {
            let size = sizes.get(key).copied().unwrap_or(0);
            let state =
                if self.local.is_active(&key.0, &key.1) { ParcelState::Active } else { ParcelState::Distributed };
            out.insert(key.clone(), status(key, state, size, size, String::new()));
        }
        for (key, d) in &self.downloads {
            if out.contains_key(key) {
                continue;
            }
            let (state, error) = match &d.state {
                DownloadState::Queued | DownloadState::Running => (ParcelState::Downloading, String::new()),
                DownloadState::Failed { error, .. } => (ParcelState::Failed, error.clone()),
            };
            out.insert(key.clone(), status(key, state, d.downloaded, d.spec.size, error));
        }
        for (key, f) in &self.op_failures {
            if let Some(s) = out.get_mut(key) {
                s.state = ParcelState::Failed;
                s.error = f.error.clone();
            }
        }
        out.into_values().collect()
    }
}

/// `retry_initial`, doubling per attempt up to `retry_max`.
fn retry_delay(policy: &ParcelPolicy, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    policy.retry_initial.saturating_mul(factor).min(policy.retry_max)
}

fn status(key: &Key, state: ParcelState, downloaded: u64, total: u64, error: String) -> ParcelStatus {
    ParcelStatus {
        name: key.0.clone(),
        version: key.1.clone(),
        state,
        downloaded_bytes: downloaded,
        total_bytes: total,
        error,
    }
}

// ---- the driver ----

/// One piece of a parcel file: its bytes and the size of the whole file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParcelChunk {
    pub data: Vec<u8>,
    pub total_size: u64,
}

/// The rest of a parcel file, chunk by chunk. An `Err` item means the download
/// broke off; the message says why.
pub type ParcelChunks = Pin<Box<dyn Stream<Item = Result<ParcelChunk, String>> + Send>>;

/// A download being opened by [`ParcelFetcher::fetch`].
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<ParcelChunks, String>> + Send + 'a>>;

/// Where the driver gets parcel files from. The agent's fetcher
/// ([`crate::session::ManagerParcelFetcher`]) calls the manager's
/// `FetchParcel`; tests may serve files from memory.
pub trait ParcelFetcher: Send + Sync {
    /// Opens `file_name` (`NAME-VERSION-DISTRO.parcel`) from byte `offset` on.
    /// The error is a message naming what failed.
    fn fetch<'a>(&'a self, file_name: &'a str, offset: u64) -> FetchFuture<'a>;
}

/// Where parcels live and how they are fetched.
#[derive(Clone)]
pub struct ParcelsConfig {
    /// The parcels root: `NAME-VERSION/` installs, `NAME` links, `.downloads/`.
    pub dir: PathBuf,
    pub policy: ParcelPolicy,
    /// Where parcel files come from.
    pub fetcher: Arc<dyn ParcelFetcher>,
}

impl ParcelsConfig {
    pub fn new(dir: PathBuf, fetcher: Arc<dyn ParcelFetcher>) -> Self {
        ParcelsConfig { dir, policy: ParcelPolicy::default(), fetcher }
    }
}

impl fmt::Debug for ParcelsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParcelsConfig").field("dir", &self.dir).field("policy", &self.policy).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParcelsError {
    #[error("parcels directory {}: {message}", dir.display())]
    Dir { dir: PathBuf, message: String },
}

/// What the rest of the agent sees of the parcels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParcelsView {
    pub statuses: Vec<ParcelStatus>,
    /// Active version by name.
    pub active: BTreeMap<String, String>,
}

/// A running parcel driver. Dropping it stops downloads (partial files stay
/// for the next agent to resume); an unpack already under way finishes.
#[derive(Debug)]
pub struct Parcels {
    root: PathBuf,
    desired: watch::Sender<Option<Arc<Vec<ParcelSpec>>>>,
    view: watch::Receiver<Arc<ParcelsView>>,
    task: JoinHandle<()>,
}

impl Drop for Parcels {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Parcels {
    /// Creates the parcels directory, deletes leftovers of interrupted
    /// installs, reads what is installed and starts the driver. Must be called
    /// within a Tokio runtime.
    pub fn start(config: ParcelsConfig) -> Result<Parcels, ParcelsError> {
        let dir_err = |message: String| ParcelsError::Dir { dir: config.dir.clone(), message };
        let root = std::path::absolute(&config.dir).map_err(|e| dir_err(e.to_string()))?;
        std::fs::create_dir_all(root.join(DOWNLOADS_DIR)).map_err(|e| dir_err(format!("could not create: {e}")))?;
        match parcel::cleanup_partials(&root) {
            Ok(removed) => {
                for path in removed {
                    info!(path = %path.display(), "removed the leftover of an interrupted parcel install");
                }
            }
            Err(e) => warn!(error = %e, "could not clean up interrupted parcel installs"),
        }
        let local = LocalParcels::scan(&root).map_err(|e| dir_err(e.to_string()))?;
        let reconciler = ParcelReconciler::new(config.policy.clone(), local.clone());
        let view = ParcelsView { statuses: reconciler.statuses(), active: local.active };
        let (view_tx, view_rx) = watch::channel(Arc::new(view));
        let (desired, desired_rx) = watch::channel(None);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let driver =
            Driver { root: root.clone(), config, reconciler, tasks: JoinSet::new(), events_tx, events_rx, view_tx };
        let task = tokio::spawn(driver.run(desired_rx));
        Ok(Parcels { root, desired, view: view_rx, task })
    }

    /// The absolute parcels root, what `${PARCELS_ROOT}` stands for.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Hands over the parcels the manager wants; the latest list wins.
    pub fn set_desired(&self, parcels: Vec<ParcelSpec>) {
        self.desired.send_replace(Some(Arc::new(parcels)));
    }

    /// The parcels' observed state, updated on every change.
    pub fn view(&self) -> watch::Receiver<Arc<ParcelsView>> {
        self.view.clone()
    }
}

struct Driver {
    root: PathBuf,
    config: ParcelsConfig,
    reconciler: ParcelReconciler,
    /// Downloads and operations; dropping the driver aborts them.
    tasks: JoinSet<()>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    view_tx: watch::Sender<Arc<ParcelsView>>,
}

impl Driver {
    async fn run(mut self, mut desired_rx: watch::Receiver<Option<Arc<Vec<ParcelSpec>>>>) {
        loop {
            while self.tasks.try_join_next().is_some() {}
            let deadline = self.reconciler.deadline();
            let event = tokio::select! {
                changed = desired_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(specs) = desired_rx.borrow_and_update().clone() else { continue };
                    Event::Desired(specs.as_ref().clone())
                }
                Some(event) = self.events_rx.recv() => event,
                () = sleep_until_opt(deadline), if deadline.is_some() => Event::Tick,
            };
            let effects = self.reconciler.handle(Instant::now(), event);
            self.perform(effects);
        }
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Distribute(spec) => {
                    info!(parcel = %spec.name, version = %spec.version, file = %spec.file_name, "distributing parcel");
                    let fetcher = self.config.fetcher.clone();
                    let root = self.root.clone();
                    let policy = self.config.policy.clone();
                    let events = self.events_tx.clone();
                    self.tasks.spawn(async move {
                        let result = distribute(fetcher.as_ref(), &root, &spec, &policy, &events).await;
                        match &result {
                            Ok(()) => info!(parcel = %spec.name, version = %spec.version, "parcel distributed"),
                            Err(e) => warn!(parcel = %spec.name, version = %spec.version, error = %e, "parcel distribution failed"),
                        }
                        let local = scan_blocking(root).await;
                        let _ = events.send(Event::Distributed { name: spec.name, version: spec.version, result, local });
                    });
                }
                Effect::Run(op) => {
                    let root = self.root.clone();
                    let events = self.events_tx.clone();
                    self.tasks.spawn(async move {
                        let job = {
                            let op = op.clone();
                            tokio::task::spawn_blocking(move || {
                                let result = run_op(&root, &op);
                                (result, LocalParcels::scan(&root))
                            })
                        };
                        let (result, local) = match job.await {
                            Ok((result, Ok(local))) => (result, Some(local)),
                            Ok((result, Err(e))) => {
                                warn!(error = %e, "could not read the parcels directory");
                                (result, None)
                            }
                            Err(e) => (Err(format!("the parcel operation failed: {e}")), None),
                        };
                        let _ = events.send(Event::OpDone { op, result, local });
                    });
                }
                Effect::PruneDownloads { keep } => prune_downloads(&self.root.join(DOWNLOADS_DIR), &keep),
                Effect::Report(statuses) => {
                    let active = self.reconciler.local().active.clone();
                    self.view_tx.send_replace(Arc::new(ParcelsView { statuses, active }));
                }
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

async fn scan_blocking(root: PathBuf) -> Option<LocalParcels> {
    let scanned = tokio::task::spawn_blocking(move || LocalParcels::scan(&root)).await;
    match scanned {
        Ok(Ok(local)) => Some(local),
        Ok(Err(e)) => {
            warn!(error = %e, "could not read the parcels directory");
            None
        }
        Err(e) => {
            warn!(error = %e, "could not read the parcels directory");
            None
        }
    }
}

fn run_op(root: &Path, op: &Op) -> Result<(), String> {
    match op {
        Op::Activate { name, version } => {
            let previous = parcel::activate(root, name, version).map_err(|e| match e {
                // Already "activate NAME-VERSION: ..." naming both parcels.
                ParcelError::Refused { .. } => e.to_string(),
                e => format!("could not activate parcel {name} {version}: {e}"),
            })?;
            info!(parcel = %name, version = %version, previous = ?previous, "parcel activated");
        }
        Op::Deactivate { name, version } => {
            parcel::deactivate(root, name).map_err(|e| format!("could not deactivate parcel {name} {version}: {e}"))?;
            info!(parcel = %name, version = %version, "parcel deactivated");
        }
        Op::Remove { name, version } => {
            parcel::remove(root, name, version)
                .map_err(|e| format!("could not remove parcel {name} {version}: {e}"))?;
            info!(parcel = %name, version = %version, "parcel removed");
        }
    }
    Ok(())
}

/// Deletes downloads (complete or partial) of files not in `keep`.
fn prune_downloads(dir: &Path, keep: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let file = name.strip_suffix(PART_SUFFIX).unwrap_or(&name);
        if !keep.contains(file) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => debug!(file = %name, "deleted a download no longer wanted"),
                Err(e) => warn!(file = %name, error = %e, "could not delete a download no longer wanted"),
            }
        }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let free = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    Ok(free)
}

/// Refuses a download that would not fit: the archive's missing bytes plus
/// about its size again unpacked, plus the reserve.
pub fn check_space(spec: &ParcelSpec, have: u64, free: u64, reserve: u64, root: &Path) -> Result<(), String> {
    let needed = spec.size.saturating_mul(2).saturating_sub(have).saturating_add(reserve);
    if free < needed {
        return Err(format!(
            "not enough free disk space for parcel {} {} in {}: {needed} bytes needed (the archive and about as much unpacked), {free} bytes free",
            spec.name,
            spec.version,
            root.display()
        ));
    }
    Ok(())
}

/// Downloads (resuming), verifies and installs one parcel; the archive is
/// deleted afterwards, whatever the outcome of the install.
async fn distribute(
    fetcher: &dyn ParcelFetcher,
    root: &Path,
    spec: &ParcelSpec,
    policy: &ParcelPolicy,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let id = ParcelId::parse(&spec.file_name).map_err(|e| format!("parcel {} {}: {e}", spec.name, spec.version))?;
    if id.name != spec.name || id.version != spec.version {
        return Err(format!("parcel file {} does not hold parcel {} {}", spec.file_name, spec.name, spec.version));
    }
    let downloads = root.join(DOWNLOADS_DIR);
    tokio::fs::create_dir_all(&downloads)
        .await
        .map_err(|e| format!("could not create {}: {e}", downloads.display()))?;
    let complete = downloads.join(&spec.file_name);
    if tokio::fs::metadata(&complete).await.is_err() {
        let part = downloads.join(format!("{}{PART_SUFFIX}", spec.file_name));
        download(fetcher, root, &part, spec, policy, events).await?;
        tokio::fs::rename(&part, &complete)
            .await
            .map_err(|e| format!("could not rename {} into place: {e}", part.display()))?;
    }
    let expected = Expected { sha256: spec.sha256.to_ascii_lowercase(), size: spec.size };
    let (archive, parcels_root) = (complete.clone(), root.to_path_buf());
    let installed = tokio::task::spawn_blocking(move || parcel::install(&archive, Some(&expected), &parcels_root))
        .await
        .map_err(|e| format!("installing parcel {} {} failed: {e}", spec.name, spec.version));
    if let Err(e) = tokio::fs::remove_file(&complete).await {
        warn!(file = %complete.display(), error = %e, "could not delete the parcel archive");
    }
    let installed = installed?.map_err(|e| format!("could not install parcel {} {}: {e}", spec.name, spec.version))?;
    debug!(parcel = %spec.name, version = %spec.version, dir = %installed.dir.display(), already = installed.already_present, "parcel installed");
    Ok(())
}

/// Appends the rest of the file to `part`, starting at its current length.
async fn download(
    fetcher: &dyn ParcelFetcher,
    root: &Path,
    part: &Path,
    spec: &ParcelSpec,
    policy: &ParcelPolicy,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let show = part.display();
    let mut have = match tokio::fs::metadata(part).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    if have > spec.size {
        tokio::fs::remove_file(part).await.map_err(|e| format!("could not delete {show}: {e}"))?;
        have = 0;
    }
    let free = free_bytes(root).map_err(|e| format!("could not read the free space in {}: {e}", root.display()))?;
    check_space(spec, have, free, policy.reserve_bytes, root)?;
    let progress = |downloaded: u64| {
        let _ = events.send(Event::Progress { name: spec.name.clone(), version: spec.version.clone(), downloaded });
    };
    progress(have);
    if have == spec.size {
        return Ok(());
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(|e| format!("could not open {show}: {e}"))?;
    debug!(file = %spec.file_name, offset = have, "fetching parcel");
    let mut last_progress = Instant::now();
    let received = async {
        let mut chunks = fetcher
            .fetch(&spec.file_name, have)
            .await
            .map_err(|e| format!("could not fetch {} from the manager: {e}", spec.file_name))?;
        while let Some(chunk) = chunks.next().await {
            let ParcelChunk { data, total_size: total } =
                chunk.map_err(|e| format!("the download of {} broke off after {have} bytes: {e}", spec.file_name))?;
            if total != spec.size {
                return Err(format!(
                    "the manager has {} with {total} bytes, the desired state says {}",
                    spec.file_name, spec.size
                ));
            }
            if have + data.len() as u64 > spec.size {
                return Err(format!("the manager sent more than the {} bytes of {}", spec.size, spec.file_name));
            }
            file.write_all(&data).await.map_err(|e| format!("could not write {show}: {e}"))?;
            have += data.len() as u64;
            if last_progress.elapsed() >= policy.progress_interval {
                last_progress = Instant::now();
                progress(have);
            }
        }
        Ok(())
    }
    .await;
    // Keep what arrived, so the next attempt resumes after it.
    let flushed = async {
        file.flush().await?;
        file.sync_all().await
    }
    .await
    .map_err(|e| format!("could not write {show}: {e}"));
    progress(have);
    received?;
    flushed?;
    if have < spec.size {
        return Err(format!(
            "the download of {} stopped after {have} of {} bytes; it resumes from there",
            spec.file_name, spec.size
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
