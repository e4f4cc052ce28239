//! The live host registry: per-host *intent* (desired generation) and
//! *observed* state (session, last heartbeat, latest metrics, status), kept in
//! memory and flushed to the store in batches.
//!
//! Heartbeats never wait on the database: handling one is a map lookup, a
//! short mutex and a channel send. A flusher task writes the hosts that changed
//! since its last run and the events that happened, in one transaction per
//! interval, and the queued metric points ([`crate::domain::metrics::LiveMetrics`]). A watchdog marks hosts `lost`
//! when their heartbeats stop, and a host turns `healthy` again as soon as it
//! reconnects.
//!
//! On start-up the registry is loaded from the store and every host that was
//! healthy gets a fresh grace period of `--host-lost-after`, so a manager
//! restart does not flag the whole fleet lost before agents reconnect.
//!
//! Also here: each host's intent as `Desired` set it (desired roles and
//! parcels, with a generation bumped only when their digest changes, published
//! on a `watch` channel the session pushes from) and what its agent last
//! reported about roles and parcels. Role states, first-applied records and
//! desired and applied generations reach the store through the same flusher;
//! a host's `host_live` row is updated once per flush whatever touched it, its
//! status and metrics only when they changed since they were last written.
//! First-applied records stay readable here until their flush commits
//! (`unstored_applied`), so a revision's applied list never lags the reports.
//! `watch(roles, hosts)` wakes only the waiters of those roles and hosts, so a
//! command waiting on three roles is not woken by a fleet's reports. Time is
//! the tokio clock (`tokio::time::Instant`), so tests pause and advance it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

// tokio's clock, so tests can pause and advance it (lost-host detection).
use tokio::time::Instant;

use sha2::Digest;
use tokio::sync::{Notify, oneshot, watch};

use crate::desired::{DesiredParcel, DesiredRole, HostDesired, ParcelStatusRec};

use crate::model::{Host, HostMetrics, HostStatus, UnixMillis, now_millis, rfc3339};
use crate::store::{AppliedRec, AppliedRevision, HeartbeatRow, NewEvent, RoleStatusRec, Store};

/// The events a role's new report makes against its previous one (`None`:
/// the first since the manager started): a process started, restarted after
/// a crash, failed, or its health changed. Severity, kind, message.
pub fn role_transitions(old: Option<&RoleStatusRec>, new: &RoleStatusRec) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let Some(old) = old else { return out };
    if new.restart_count > old.restart_count {
        out.push((
            "warning",
            "role_restarted",
            format!(
                "restarted after a crash (last exit status {}); {} restart(s) so far",
                new.last_exit_status, new.restart_count
            ),
        ));
    } else if new.state == "running" && new.pid != 0 && (old.pid != new.pid || old.state != "running") {
        out.push((
            "info",
            "role_started",
            format!("process started: pid {}, configuration revision {}", new.pid, new.running_revision),
        ));
    }
    if new.state != old.state && new.state == "failed" {
        let why = if new.last_error.is_empty() { "no reason given".to_owned() } else { new.last_error.clone() };
        out.push(("critical", "role_failed", format!("failed: {why}")));
    } else if new.state != old.state && new.state == "stopped" && old.state != "stopped" {
        out.push(("info", "role_stopped", format!("stopped (was {})", old.state)));
    }
    if new.health != old.health {
        let severity = match new.health.as_str() {
            "bad" => "critical",
            "concerning" => "warning",
            _ => "info",
        };
        out.push((severity, "role_health", format!("health {} -> {}", old.health, new.health)));
    }
    out
}

/// Upper bound on queued events if the database is down.
const MAX_PENDING: usize = 200_000;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub heartbeat_interval: Duration,
    pub host_lost_after: Duration,
}

/// Why a session is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("host {0} is not enrolled with this manager; clear the agent's data dir and enroll again with a new token")]
    UnknownHost(String),
    #[error(
        "host {host} was decommissioned at {at} and its certificate revoked; clear the agent's data dir and enroll again with a new token"
    )]
    Decommissioned { host: String, at: String },
    #[error("certificate {serial} is not the current certificate of host {host}; it has been revoked")]
    RevokedCertificate { host: String, serial: String },
    #[error("the manager is shutting down; reconnect later")]
    ShuttingDown,
}

/// A reason to end a session from the manager's side.
#[derive(Debug, Clone)]
pub enum Kill {
    /// The host was decommissioned: refuse for good.
    Decommissioned(String),
    /// A newer session of the same host took over.
    Superseded,
    /// The manager is shutting down; the agent should reconnect later.
    Shutdown,
}

struct SessionSlot {
    id: u64,
    kill: Option<oneshot::Sender<Kill>>,
}

struct HostLive {
    status: HostStatus,
    /// The host name, for the `host` label of its metrics.
    hostname: String,
    decommissioned_at: Option<String>,
    cert_serial: String,
    last_seen: Instant,
    last_heartbeat_at: UnixMillis,
    metrics: Option<HostMetrics>,
    /// The status last given to the flusher (`None`: not known to be stored).
    saved_status: Option<HostStatus>,
    /// Whether `metrics` changed since they were last given to the flusher.
    metrics_unsaved: bool,
    session: Option<SessionSlot>,
    applied_generation: u64,
    /// Desired roles by service (`cluster/service`): the host's intent.
    roles: HashMap<String, Vec<Arc<DesiredRole>>>,
    roles_digest: [u8; 32],
    /// Parcel versions the host must hold (intent), sorted.
    parcels: Vec<DesiredParcel>,
    /// What the agent last reported about its parcels (observed).
    parcel_status: Vec<ParcelStatusRec>,
    /// The latest desired state; sessions watch it and push every change.
    desired: watch::Sender<Arc<HostDesired>>,
    /// When `desired` was last published (the push latency's start).
    desired_published_at: Instant,
}

/// What a newly opened session needs to know.
#[derive(Debug)]
pub struct OpenedSession {
    pub session_id: u64,
    pub kill: oneshot::Receiver<Kill>,
    pub desired: watch::Receiver<Arc<HostDesired>>,
}

/// A point-in-time summary of the fleet, for `/healthz` and the console.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct FleetSummary {
    pub hosts: usize,
    pub healthy: usize,
    pub lost: usize,
    pub decommissioned: usize,
    pub connected_sessions: usize,
}

/// First-applied records on their way to the store.
#[derive(Default)]
struct UnstoredApplied {
    /// Waiting for the next flush.
    queued: Vec<AppliedRevision>,
    /// Taken by a flush that has not committed yet.
    writing: Vec<Arc<Vec<AppliedRevision>>>,
}

impl UnstoredApplied {
    fn queue(&mut self, applied: Vec<AppliedRevision>) {
        if self.queued.len() + applied.len() <= MAX_PENDING {
            self.queued.extend(applied);
        }
    }

    /// Everything queued, to write; it stays visible until [`Self::written`].
    fn take_for_writing(&mut self) -> Arc<Vec<AppliedRevision>> {
        let batch = Arc::new(std::mem::take(&mut self.queued));
        if !batch.is_empty() {
            self.writing.push(batch.clone());
        }
        batch
    }

    /// `batch` was stored, or (`stored` false) goes back in the queue.
    fn written(&mut self, batch: &Arc<Vec<AppliedRevision>>, stored: bool) {
        self.writing.retain(|b| !Arc::ptr_eq(b, batch));
        if !stored {
            self.queue(batch.to_vec());
        }
    }
}

pub struct Registry {
    config: RegistryConfig,
    store: Store,
    hosts: RwLock<HashMap<String, Arc<Mutex<HostLive>>>>,
    dirty: Mutex<HashSet<String>>,
    events: Mutex<Vec<NewEvent>>,
    next_session: AtomicU64,
    heartbeats: AtomicU64,
    closing: AtomicBool,
    /// Last reported state of every role, by role id.
    role_status: Mutex<HashMap<String, RoleStatusRec>>,
    /// Tasks (commands) waiting on some roles or hosts, by [`WatchKey`]:
    /// a report wakes only those waiting on what it is about.
    waiters: Mutex<HashMap<WatchKey, Vec<Arc<Notify>>>>,
    /// Role states waiting for the flusher.
    pending_roles: Mutex<HashMap<String, RoleStatusRec>>,
    /// First-applied records not in the store yet (see [`Registry::unstored_applied`]).
    unstored_applied: Mutex<UnstoredApplied>,
    /// Generations agents reported applied, waiting for the flusher.
    pending_generations: Mutex<HashMap<String, u64>>,
    /// Desired generations published, waiting for the flusher: a change
    /// never waits on the database for them.
    pending_desired: Mutex<HashMap<String, u64>>,
    /// Host, role and service metric series, their latest values and the
    /// points waiting for the flusher.
    pub metrics: crate::domain::metrics::LiveMetrics,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Registry {
    /// Loads every host from the store.
    pub async fn load(store: Store, config: RegistryConfig) -> crate::store::Result<Registry> {
        let now = Instant::now();
        let generations = store.desired_generations().await?;
        let metrics = crate::domain::metrics::LiveMetrics::load_from(&store).await?;
        let mut hosts = HashMap::new();
        for h in store.all_hosts().await? {
            // Never below what the agent applied: a desired generation the
            // flusher had not written before a crash is not handed out twice.
            let generation = generations.get(&h.id).copied().unwrap_or(1).max(h.applied_generation);
            hosts.insert(h.id.clone(), Arc::new(Mutex::new(live_from(&h, now, generation))));
        }
        Ok(Registry {
            config,
            store,
            hosts: RwLock::new(hosts),
            dirty: Mutex::new(HashSet::new()),
            events: Mutex::new(Vec::new()),
            next_session: AtomicU64::new(1),
            heartbeats: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            role_status: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            pending_roles: Mutex::new(HashMap::new()),
            unstored_applied: Mutex::new(UnstoredApplied::default()),
            pending_generations: Mutex::new(HashMap::new()),
            pending_desired: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    fn entry(&self, host_id: &str) -> Option<Arc<Mutex<HostLive>>> {
        self.hosts.read().expect("registry lock").get(host_id).cloned()
    }

    fn mark_dirty(&self, host_id: &str) {
        self.dirty.lock().expect("dirty lock").insert(host_id.to_owned());
    }

    fn push_event(&self, severity: &'static str, kind: &'static str, host_id: &str, message: String) {
        let mut events = self.events.lock().expect("events lock");
        if events.len() < MAX_PENDING {
            events.push(NewEvent {
                at: now_millis(),
                severity,
                kind,
                object_type: "host",
                object_id: host_id.to_owned(),
                message,
            });
        }
    }

    /// Records an event about role `object_id` (`cluster/service/role`).
    pub fn push_role_event(&self, severity: &'static str, kind: &'static str, object_id: &str, message: String) {
        let mut events = self.events.lock().expect("events lock");
        if events.len() < MAX_PENDING {
            events.push(NewEvent {
                at: now_millis(),
                severity,
                kind,
                object_type: "role",
                object_id: object_id.to_owned(),
                message,
            });
        }
    }

    /// Adds a freshly enrolled host.
    pub fn add_enrolled(&self, host: &Host) {
        let live = live_from(host, Instant::now(), 1);
        self.hosts.write().expect("registry lock").insert(host.id.clone(), Arc::new(Mutex::new(live)));
        self.push_event("info", "host_enrolled", &host.id, format!("host {} enrolled", host.hostname));
    }

    /// Admits a session for the host named by a verified client certificate.
    /// Checks that a client certificate still admits its host (known, not
    /// decommissioned, the certificate it was last issued), without opening a
    /// session: for calls such as parcel downloads.
    pub fn admit(&self, host_id: &str, cert_serial: &str) -> Result<(), Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Refusal::ShuttingDown);
        }
        let entry = self.entry(host_id).ok_or_else(|| Refusal::UnknownHost(host_id.to_owned()))?;
        let h = entry.lock().expect("host lock");
        if h.status == HostStatus::Decommissioned {
            return Err(Refusal::Decommissioned {
                host: host_id.to_owned(),
                at: h.decommissioned_at.clone().unwrap_or_default(),
            });
        }
        if !h.cert_serial.eq_ignore_ascii_case(cert_serial) {
            return Err(Refusal::RevokedCertificate { host: host_id.to_owned(), serial: cert_serial.to_owned() });
        }
        Ok(())
    }

    pub fn open_session(&self, host_id: &str, cert_serial: &str) -> Result<OpenedSession, Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Refusal::ShuttingDown);
        }
        let entry = self.entry(host_id).ok_or_else(|| Refusal::UnknownHost(host_id.to_owned()))?;
        let mut h = entry.lock().expect("host lock");
        if h.status == HostStatus::Decommissioned {
            return Err(Refusal::Decommissioned {
                host: host_id.to_owned(),
                at: h.decommissioned_at.clone().unwrap_or_default(),
            });
        }
        if !h.cert_serial.eq_ignore_ascii_case(cert_serial) {
            return Err(Refusal::RevokedCertificate { host: host_id.to_owned(), serial: cert_serial.to_owned() });
        }
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Some(mut old) = h.session.replace(SessionSlot { id: session_id, kill: Some(tx) })
            && let Some(k) = old.kill.take()
        {
            let _ = k.send(Kill::Superseded);
        }
        self.seen(host_id, &mut h);
        Ok(OpenedSession { session_id, kill: rx, desired: h.desired.subscribe() })
    }

    /// Refuses new sessions and ends every open one (manager shutdown).
    /// Returns how many sessions were told to end.
    pub fn end_all_sessions(&self) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let entries: Vec<Arc<Mutex<HostLive>>> = self.hosts.read().expect("registry lock").values().cloned().collect();
        let mut ended = 0;
        for entry in entries {
            let mut h = entry.lock().expect("host lock");
            if let Some(k) = h.session.as_mut().and_then(|s| s.kill.take()) {
                let _ = k.send(Kill::Shutdown);
                ended += 1;
            }
        }
        ended
    }

    /// Forgets a session that ended, unless a newer one already replaced it.
    pub fn close_session(&self, host_id: &str, session_id: u64) {
        if let Some(entry) = self.entry(host_id) {
            let mut h = entry.lock().expect("host lock");
            if h.session.as_ref().is_some_and(|s| s.id == session_id) {
                h.session = None;
            }
        }
    }

    /// Marks the host alive now; a lost host turns healthy again.
    fn seen(&self, host_id: &str, h: &mut HostLive) {
        h.last_seen = Instant::now();
        h.last_heartbeat_at = now_millis();
        if h.status == HostStatus::Lost {
            h.status = HostStatus::Healthy;
            self.wake(&WatchKey::Host(host_id.to_owned()));
            self.push_event("info", "host_recovered", host_id, "host is healthy again: agent reconnected".into());
            tracing::info!(host = %host_id, "host healthy again");
        }
        self.mark_dirty(host_id);
    }

    /// Records a heartbeat; returns false if the host is unknown or decommissioned.
    pub fn heartbeat(&self, host_id: &str, metrics: HostMetrics) -> bool {
        let Some(entry) = self.entry(host_id) else { return false };
        let mut h = entry.lock().expect("host lock");
        if h.status == HostStatus::Decommissioned {
            return false;
        }
        self.seen(host_id, &mut h);
        h.metrics = Some(metrics);
        h.metrics_unsaved = true;
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// [`Registry::heartbeat`] with the heartbeat's role reports: the host's
    /// and roles' metric points are queued for the flusher and their latest
    /// values kept (see [`crate::domain::metrics`]).
    pub fn heartbeat_with_roles(
        &self,
        host_id: &str,
        metrics: HostMetrics,
        roles: Vec<crate::domain::metrics::RoleReport>,
    ) -> bool {
        let now = now_millis();
        let Some(entry) = self.entry(host_id) else { return false };
        let hostname = {
            let h = entry.lock().expect("host lock");
            if h.status == HostStatus::Decommissioned {
                return false;
            }
            h.hostname.clone()
        };
        let roles: Vec<_> = roles
            .into_iter()
            .map(|r| {
                let desired = self.desired_role(host_id, &r.role_id);
                (r, desired)
            })
            .collect();
        self.metrics.record(host_id, &hostname, now, &metrics, &roles);
        self.heartbeat(host_id, metrics)
    }

    /// Any sign of life other than a heartbeat (a pong, a status report).
    pub fn touch(&self, host_id: &str) {
        if let Some(entry) = self.entry(host_id) {
            let mut h = entry.lock().expect("host lock");
            if h.status != HostStatus::Decommissioned {
                self.seen(host_id, &mut h);
            }
        }
    }

    /// Records the generation an agent reports applied; true if it changed.
    /// The flusher writes it to the store with the next batch.
    pub fn applied(&self, host_id: &str, generation: u64) -> bool {
        let Some(entry) = self.entry(host_id) else { return false };
        let mut h = entry.lock().expect("host lock");
        let changed = h.applied_generation != generation;
        h.applied_generation = generation;
        drop(h);
        if changed {
            self.pending_generations.lock().expect("pending lock").insert(host_id.to_owned(), generation);
        }
        changed
    }

    /// Marks the host decommissioned and ends its session, if any.
    pub fn decommission(&self, host_id: &str) {
        let Some(entry) = self.entry(host_id) else { return };
        let mut h = entry.lock().expect("host lock");
        h.status = HostStatus::Decommissioned;
        let at = rfc3339(now_millis());
        h.decommissioned_at = Some(at.clone());
        if let Some(mut s) = h.session.take()
            && let Some(k) = s.kill.take()
        {
            let _ = k.send(Kill::Decommissioned(at));
        }
        drop(h);
        self.wake(&WatchKey::Host(host_id.to_owned()));
        self.push_event("warning", "host_decommissioned", host_id, "host decommissioned; certificate revoked".into());
    }

    /// Marks hosts lost whose last sign of life is older than `--host-lost-after`.
    /// Returns how many turned lost.
    pub fn check_lost(&self) -> usize {
        let entries: Vec<(String, Arc<Mutex<HostLive>>)> =
            self.hosts.read().expect("registry lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut lost = 0;
        for (id, entry) in entries {
            let mut h = entry.lock().expect("host lock");
            if h.status == HostStatus::Healthy && h.last_seen.elapsed() > self.config.host_lost_after {
                h.status = HostStatus::Lost;
                let silent = h.last_seen.elapsed().as_secs();
                drop(h);
                self.wake(&WatchKey::Host(id.clone()));
                lost += 1;
                tracing::warn!(host = %id, silent_s = silent, "host lost: no heartbeat");
                self.push_event(
                    "critical",
                    "host_lost",
                    &id,
                    format!(
                        "host lost: no heartbeat for {silent} s (limit {} s)",
                        self.config.host_lost_after.as_secs()
                    ),
                );
                self.mark_dirty(&id);
            }
        }
        lost
    }

    /// Writes pending host state, metric points and events to the store.
    /// On failure everything is queued again for the next run.
    pub async fn flush(&self) -> crate::store::Result<usize> {
        let dirty: Vec<String> = std::mem::take(&mut *self.dirty.lock().expect("dirty lock")).into_iter().collect();
        let events = std::mem::take(&mut *self.events.lock().expect("events lock"));
        let rows = self.live_rows(&dirty);
        let roles: Vec<RoleStatusRec> =
            std::mem::take(&mut *self.pending_roles.lock().expect("pending lock")).into_values().collect();
        let applied = self.unstored_applied.lock().expect("applied lock").take_for_writing();
        let generations: Vec<(String, u64)> =
            std::mem::take(&mut *self.pending_generations.lock().expect("pending lock")).into_iter().collect();
        let desired: Vec<(String, u64)> =
            std::mem::take(&mut *self.pending_desired.lock().expect("pending lock")).into_iter().collect();
        if let Err(e) = self.metrics.flush(&self.store).await {
            tracing::warn!(error = %e, "could not store metric points; retrying with the next flush");
        }
        let batch = crate::store::FlushBatch {
            heartbeats: &rows,
            events: &events,
            desired_generations: &desired,
            applied_generations: &generations,
            statuses: &roles,
            applied: &applied,
        };
        let written = self.store.flush_batch(batch).await;
        // Until here a reader finds the records among those being written;
        // from here in the store, or (on failure) queued again.
        self.unstored_applied.lock().expect("applied lock").written(&applied, written.is_ok());
        match written {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                // Nothing was written: all of it goes back, behind anything newer.
                self.unsave(&rows);
                for (queue, items) in [(&self.pending_desired, desired), (&self.pending_generations, generations)] {
                    let mut pending = queue.lock().expect("pending lock");
                    for (host, generation) in items {
                        pending.entry(host).or_insert(generation);
                    }
                }
                let mut pending = self.pending_roles.lock().expect("pending lock");
                for r in roles {
                    pending.entry(r.role_id.clone()).or_insert(r);
                }
                drop(pending);
                self.dirty.lock().expect("dirty lock").extend(dirty);
                let mut ev = self.events.lock().expect("events lock");
                if ev.len() + events.len() <= MAX_PENDING {
                    ev.extend(events);
                }
                Err(e)
            }
        }
    }

    /// The live state of hosts `ids` to write (decommissioned ones left out):
    /// each row's status and metrics only when they changed since the last
    /// rows taken; they count as saved from now on.
    fn live_rows(&self, ids: &[String]) -> Vec<HeartbeatRow> {
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(entry) = self.entry(id) else { continue };
            let mut h = entry.lock().expect("host lock");
            if h.status == HostStatus::Decommissioned {
                continue;
            }
            let status = (h.saved_status != Some(h.status)).then_some(h.status);
            h.saved_status = Some(h.status);
            let metrics = if std::mem::take(&mut h.metrics_unsaved) { h.metrics.clone() } else { None };
            rows.push(HeartbeatRow { host_id: id.clone(), status, last_heartbeat_at: h.last_heartbeat_at, metrics });
        }
        rows
    }

    /// `rows` were not written: their hosts' status and metrics go out again
    /// with the next rows taken.
    fn unsave(&self, rows: &[HeartbeatRow]) {
        for row in rows {
            if let Some(entry) = self.entry(&row.host_id) {
                let mut h = entry.lock().expect("host lock");
                h.saved_status = None;
                h.metrics_unsaved |= row.metrics.is_some();
            }
        }
    }

    pub fn summary(&self) -> FleetSummary {
        self.summary_where(|_| true)
    }

    /// [`Registry::summary`] of the hosts whose id `keep` accepts.
    pub fn summary_where(&self, keep: impl Fn(&str) -> bool) -> FleetSummary {
        let hosts = self.hosts.read().expect("registry lock");
        let mut s = FleetSummary::default();
        for (_, entry) in hosts.iter().filter(|(id, _)| keep(id)) {
            s.hosts += 1;
            let h = entry.lock().expect("host lock");
            match h.status {
                HostStatus::Healthy => s.healthy += 1,
                HostStatus::Lost => s.lost += 1,
                HostStatus::Decommissioned => s.decommissioned += 1,
            }
            if h.session.is_some() {
                s.connected_sessions += 1;
            }
        }
        s
    }

    /// Replaces the desired roles of one service on a host. When the host's
    /// desired state changes, bumps its generation, publishes it to the
    /// host's session and returns the new generation.
    pub fn set_service_roles(&self, host_id: &str, service: &str, roles: Vec<Arc<DesiredRole>>) -> Option<u64> {
        let entry = self.entry(host_id)?;
        let mut h = entry.lock().expect("host lock");
        if roles.is_empty() {
            h.roles.remove(service);
        } else {
            h.roles.insert(service.to_owned(), roles);
        }
        let digest = digest_roles(&h.roles);
        if digest == h.roles_digest {
            return None;
        }
        h.roles_digest = digest;
        let generation = publish_desired(&mut h);
        drop(h);
        self.pending_desired.lock().expect("pending lock").insert(host_id.to_owned(), generation);
        Some(generation)
    }

    /// When the host's current desired state was published, for the push
    /// latency in the manager's metrics.
    pub fn desired_published_at(&self, host_id: &str) -> Option<Instant> {
        Some(self.entry(host_id)?.lock().expect("host lock").desired_published_at)
    }

    /// Replaces the parcels a host must hold. Returns the new generation if
    /// that changed its desired state.
    pub fn set_host_parcels(&self, host_id: &str, mut parcels: Vec<DesiredParcel>) -> Option<u64> {
        let entry = self.entry(host_id)?;
        let mut h = entry.lock().expect("host lock");
        parcels.sort();
        if parcels == h.parcels {
            return None;
        }
        h.parcels = parcels;
        let generation = publish_desired(&mut h);
        drop(h);
        self.pending_desired.lock().expect("pending lock").insert(host_id.to_owned(), generation);
        Some(generation)
    }

    /// Records what an agent reports about its parcels and wakes up commands
    /// waiting on hosts.
    pub fn set_parcel_status(&self, host_id: &str, status: Vec<ParcelStatusRec>) {
        let Some(entry) = self.entry(host_id) else { return };
        entry.lock().expect("host lock").parcel_status = status;
        self.wake(&WatchKey::Host(host_id.to_owned()));
    }

    /// What a host last reported about its parcels (empty until it reports).
    pub fn parcel_status(&self, host_id: &str) -> Vec<ParcelStatusRec> {
        self.entry(host_id).map(|e| e.lock().expect("host lock").parcel_status.clone()).unwrap_or_default()
    }

    /// Every host's id, hostname, status and desired roles, for the alert engine.
    pub fn fleet(&self) -> Vec<(String, String, HostStatus, Vec<Arc<DesiredRole>>)> {
        self.hosts
            .read()
            .expect("registry lock")
            .iter()
            .map(|(id, e)| {
                let h = e.lock().expect("host lock");
                (id.clone(), h.hostname.clone(), h.status, h.roles.values().flatten().cloned().collect())
            })
            .collect()
    }

    /// Records an alert transition (`alert_pending`, `alert_firing`, `alert_resolved`) about
    /// the alert with fingerprint `object_id`.
    pub fn push_alert_event(&self, severity: &'static str, kind: &'static str, object_id: &str, message: String) {
        let mut events = self.events.lock().expect("events lock");
        if events.len() < MAX_PENDING {
            events.push(NewEvent {
                at: now_millis(),
                severity,
                kind,
                object_type: "alert",
                object_id: object_id.to_owned(),
                message,
            });
        }
    }

    /// Every host id the registry knows.
    pub fn host_ids(&self) -> Vec<String> {
        self.hosts.read().expect("registry lock").keys().cloned().collect()
    }

    /// Every host's name by host id (a host's metrics carry its name as the `host` label).
    pub fn hostnames(&self) -> HashMap<String, String> {
        self.hosts
            .read()
            .expect("registry lock")
            .iter()
            .map(|(id, e)| (id.clone(), e.lock().expect("host lock").hostname.clone()))
            .collect()
    }

    /// Live status of a host.
    pub fn host_status(&self, host_id: &str) -> Option<HostStatus> {
        self.entry(host_id).map(|e| e.lock().expect("host lock").status)
    }

    /// Live status of a host and its last sign of life (0: none since it was
    /// enrolled), for saying why a host's roles are not known to run.
    pub fn host_liveness(&self, host_id: &str) -> Option<(HostStatus, UnixMillis)> {
        self.entry(host_id).map(|e| {
            let h = e.lock().expect("host lock");
            (h.status, h.last_heartbeat_at)
        })
    }

    /// Hosts that have desired roles of a service.
    pub fn hosts_with_service(&self, service: &str) -> Vec<String> {
        self.hosts
            .read()
            .expect("registry lock")
            .iter()
            .filter(|(_, e)| e.lock().expect("host lock").roles.contains_key(service))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every service (`cluster/service`) some host has desired roles of.
    pub fn service_keys(&self) -> Vec<String> {
        let mut keys = HashSet::new();
        for entry in self.hosts.read().expect("registry lock").values() {
            keys.extend(entry.lock().expect("host lock").roles.keys().cloned());
        }
        keys.into_iter().collect()
    }

    /// The desired role `role_id` on `host_id`, if the host should run it.
    pub fn desired_role(&self, host_id: &str, role_id: &str) -> Option<Arc<DesiredRole>> {
        let entry = self.entry(host_id)?;
        let h = entry.lock().expect("host lock");
        h.roles.values().flatten().find(|r| r.role_id == role_id).cloned()
    }

    /// Records reported role states; returns those that changed, each with the
    /// report it replaced (none before the role's first report since start).
    pub fn update_role_status(&self, reports: Vec<RoleStatusRec>) -> Vec<(Option<RoleStatusRec>, RoleStatusRec)> {
        let mut changed = Vec::new();
        {
            let mut all = self.role_status.lock().expect("role status lock");
            for mut r in reports {
                if let Some(old) = all.get(&r.role_id) {
                    // The same report received again: compared as it is,
                    // whenever it arrived, without copying either.
                    let at = std::mem::replace(&mut r.updated_at, old.updated_at);
                    if *old == r {
                        continue;
                    }
                    r.updated_at = at;
                }
                let before = all.insert(r.role_id.clone(), r.clone());
                changed.push((before, r));
            }
        }
        if !changed.is_empty() {
            let mut pending = self.pending_roles.lock().expect("pending lock");
            for (_, r) in &changed {
                pending.insert(r.role_id.clone(), r.clone());
            }
            drop(pending);
            for (_, r) in &changed {
                self.wake(&WatchKey::Role(r.role_id.clone()));
            }
        }
        changed
    }

    /// Queues first-applied records for the flusher.
    pub fn queue_applied(&self, applied: Vec<AppliedRevision>) {
        self.unstored_applied.lock().expect("applied lock").queue(applied);
    }

    /// The first-applied records of one revision that are not in the store
    /// yet: queued for the flusher or being written by it. Read before the
    /// store's, they make a revision's applied list current (a record leaves
    /// here only once its flush committed).
    pub fn unstored_applied(&self, cluster: &str, service: &str, revision: u64) -> Vec<AppliedRec> {
        let unstored = self.unstored_applied.lock().expect("applied lock");
        unstored
            .writing
            .iter()
            .flat_map(|batch| batch.iter())
            .chain(&unstored.queued)
            .filter(|a| a.revision == revision && a.service == service && a.cluster == cluster)
            .map(|a| a.applied.clone())
            .collect()
    }

    /// Last reported state of a role, if any since the manager started.
    pub fn role_status(&self, role_id: &str) -> Option<RoleStatusRec> {
        self.role_status.lock().expect("role status lock").get(role_id).cloned()
    }

    /// Starts watching roles and hosts: [`Watch::changed`] resolves when one
    /// of the roles reports a new state or one of the hosts changes status
    /// or reports its parcels. Reports about anything else do not wake it.
    pub fn watch(&self, roles: &[String], hosts: &[String]) -> Watch<'_> {
        let notify = Arc::new(Notify::new());
        let keys: Vec<WatchKey> = roles
            .iter()
            .map(|r| WatchKey::Role(r.clone()))
            .chain(hosts.iter().map(|h| WatchKey::Host(h.clone())))
            .collect();
        let mut waiters = self.waiters.lock().expect("waiters lock");
        for k in &keys {
            waiters.entry(k.clone()).or_default().push(notify.clone());
        }
        Watch { registry: self, keys, notify }
    }

    fn wake(&self, key: &WatchKey) {
        let waiters = self.waiters.lock().expect("waiters lock");
        for n in waiters.get(key).into_iter().flatten() {
            // Stores a permit when nobody is waiting yet: no lost wake-up.
            n.notify_one();
        }
    }

    /// How many tasks wait on something, for tests and metrics.
    pub fn waiter_count(&self) -> usize {
        self.waiters.lock().expect("waiters lock").values().map(Vec::len).sum()
    }

    /// Total heartbeats handled since start.
    pub fn heartbeat_count(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }
}

/// What a [`Watch`] waits on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WatchKey {
    Role(String),
    Host(String),
}

/// A registration to be woken when some roles or hosts change; dropping it
/// unregisters.
pub struct Watch<'a> {
    registry: &'a Registry,
    keys: Vec<WatchKey>,
    notify: Arc<Notify>,
}

impl Watch<'_> {
    /// Resolves at the next change of a watched role or host (at once if one
    /// happened since the last call).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut waiters = self.registry.waiters.lock().expect("waiters lock");
        for k in &self.keys {
            if let Some(list) = waiters.get_mut(k) {
                list.retain(|n| !Arc::ptr_eq(n, &self.notify));
                if list.is_empty() {
                    waiters.remove(k);
                }
            }
        }
    }
}

fn live_from(h: &Host, now: Instant, generation: u64) -> HostLive {
    HostLive {
        status: h.status,
        hostname: h.hostname.clone(),
        decommissioned_at: h.decommissioned_at.clone(),
        cert_serial: h.cert_serial.clone(),
        last_seen: now,
        // Keep the stored time: a host that never reconnects after a manager
        // restart must not appear to have sent a heartbeat at start-up.
        last_heartbeat_at: h
            .last_heartbeat_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .unwrap_or(0),
        metrics: h.metrics.clone(),
        saved_status: Some(h.status),
        metrics_unsaved: false,
        session: None,
        applied_generation: h.applied_generation,
        roles: HashMap::new(),
        roles_digest: digest_roles(&HashMap::new()),
        parcels: Vec::new(),
        parcel_status: Vec::new(),
        desired: watch::Sender::new(Arc::new(HostDesired { generation, roles: Vec::new(), parcels: Vec::new() })),
        desired_published_at: now,
    }
}

/// Publishes a host's desired state with the next generation; its session
/// pushes it at once.
fn publish_desired(h: &mut HostLive) -> u64 {
    h.desired_published_at = Instant::now();
    let generation = h.desired.borrow().generation + 1;
    let mut keys: Vec<&String> = h.roles.keys().collect();
    keys.sort();
    let all: Vec<Arc<DesiredRole>> = keys.into_iter().flat_map(|k| h.roles[k].iter().cloned()).collect();
    h.desired.send_replace(Arc::new(HostDesired { generation, roles: all, parcels: h.parcels.clone() }));
    generation
}

/// Digest of a host's desired roles, in a stable order.
fn digest_roles(roles: &HashMap<String, Vec<Arc<DesiredRole>>>) -> [u8; 32] {
    let mut keys: Vec<&String> = roles.keys().collect();
    keys.sort();
    let mut h = sha2::Sha256::new();
    for k in keys {
        h.update(k.as_bytes());
        for r in &roles[k] {
            h.update(r.digest);
        }
    }
    h.finalize().into()
}

/// A registry over a fresh store in `dir` with healthy hosts `ids`, for unit
/// tests (of the registry and of what waits on it).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::model::HostKind;

    /// A heartbeat's host metrics with `cpu_percent`, the rest small constants.
    pub(crate) fn host_metrics(cpu_percent: f64) -> HostMetrics {
        HostMetrics {
            at: String::new(),
            cpu_percent,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            load1: 0.0,
            load5: 0.0,
            load15: 0.0,
            disks: Vec::new(),
            network_rx_bytes: 0,
            network_tx_bytes: 0,
            uptime_seconds: 1,
        }
    }

    pub(crate) async fn registry(dir: &std::path::Path, ids: &[&str], host_lost_after: Duration) -> Registry {
        let store = Store::open(&format!("sqlite://{}/t.db?mode=rwc", dir.display())).await.expect("store");
        let config = RegistryConfig { heartbeat_interval: host_lost_after / 4, host_lost_after };
        let registry = Registry::load(store, config).await.expect("registry");
        for id in ids {
            registry.add_enrolled(&Host {
                id: (*id).to_owned(),
                hostname: format!("node-{id}"),
                addresses: vec!["10.0.0.1".into()],
                kind: HostKind::Container,
                kind_evidence: String::new(),
                os: String::new(),
                kernel: String::new(),
                arch: String::new(),
                cpu_cores: 1,
                memory_bytes: 1 << 30,
                disks: Vec::new(),
                fqdn: String::new(),
                container_id: String::new(),
                machine_cpu_cores: 1,
                machine_memory_bytes: 1 << 30,
                capacity_evidence: String::new(),
                agent_version: String::new(),
                labels: Default::default(),
                status: HostStatus::Healthy,
                enrolled_at: String::new(),
                last_heartbeat_at: None,
                decommissioned_at: None,
                applied_generation: 0,
                metrics: None,
                cert_serial: "01".into(),
            });
        }
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lost-host detection on tokio's paused clock: exact, whatever the
    /// machine's speed.
    #[tokio::test]
    async fn a_host_turns_lost_exactly_after_host_lost_after() {
        let dir = tempfile::tempdir().unwrap();
        let lost_after = Duration::from_secs(30);
        let registry = testing::registry(dir.path(), &["h1", "h2"], lost_after).await;
        tokio::time::pause();
        registry.touch("h1");
        registry.touch("h2");
        tokio::time::advance(lost_after - Duration::from_millis(1)).await;
        registry.touch("h2");
        assert_eq!(registry.check_lost(), 0, "nothing is lost before host_lost_after");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(registry.check_lost(), 1);
        assert_eq!(registry.host_status("h1"), Some(HostStatus::Lost));
        assert_eq!(registry.host_status("h2"), Some(HostStatus::Healthy));
        // A sign of life brings it back, and wakes whoever waits on the host.
        let watch = registry.watch(&[], &["h1".to_owned()]);
        registry.touch("h1");
        assert_eq!(registry.host_status("h1"), Some(HostStatus::Healthy));
        tokio::time::timeout(Duration::from_secs(1), watch.changed()).await.expect("the watcher was woken");
    }

    /// Status and metrics go to the store when they changed, not with every
    /// sign of life; rows that failed to be written send them again.
    #[tokio::test]
    async fn live_rows_carry_status_and_metrics_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let registry = testing::registry(dir.path(), &["h1"], Duration::from_secs(30)).await;
        tokio::time::pause();
        let ids = ["h1".to_owned()];
        let row = |rows: Vec<HeartbeatRow>| {
            let r = rows.into_iter().next().expect("a row for h1");
            (r.status, r.metrics.map(|m| m.cpu_percent))
        };
        // Enrolled healthy: the status is what the store holds.
        assert_eq!(row(registry.live_rows(&ids)), (None, None));
        let metrics = testing::host_metrics;
        assert!(registry.heartbeat("h1", metrics(12.0)));
        assert_eq!(row(registry.live_rows(&ids)), (None, Some(12.0)));
        registry.touch("h1");
        assert_eq!(row(registry.live_rows(&ids)), (None, None));

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(registry.check_lost(), 1);
        let lost = registry.live_rows(&ids);
        assert_eq!(row(lost.clone()), (Some(HostStatus::Lost), None));
        assert_eq!(row(registry.live_rows(&ids)), (None, None));

        assert!(registry.heartbeat("h1", metrics(40.0)));
        let rows = registry.live_rows(&ids);
        assert_eq!(row(rows.clone()), (Some(HostStatus::Healthy), Some(40.0)));
        registry.unsave(&rows);
        assert_eq!(row(registry.live_rows(&ids)), (Some(HostStatus::Healthy), Some(40.0)));
    }

    #[tokio::test]
    async fn first_applied_records_stay_readable_until_stored_even_when_a_flush_fails() {
        let dir = tempfile::tempdir().unwrap();
        let registry = testing::registry(dir.path(), &["h1"], Duration::from_secs(30)).await;
        let rec = |role: &str, revision: u64| AppliedRevision {
            cluster: "c".into(),
            service: "s".into(),
            revision,
            applied: AppliedRec { role_id: role.into(), host_id: "h1".into(), applied_at: 1 },
        };
        let roles = |v: Vec<AppliedRec>| v.into_iter().map(|a| a.role_id).collect::<Vec<_>>();
        registry.queue_applied(vec![rec("r1", 2), rec("r2", 3)]);
        assert_eq!(roles(registry.unstored_applied("c", "s", 2)), ["r1"]);
        assert!(registry.unstored_applied("c", "other", 2).is_empty());
        // Taken by a flush that has not committed: still there.
        let batch = registry.unstored_applied.lock().unwrap().take_for_writing();
        assert_eq!(roles(registry.unstored_applied("c", "s", 3)), ["r2"]);
        registry.unstored_applied.lock().unwrap().written(&batch, true);
        assert!(registry.unstored_applied("c", "s", 3).is_empty());

        // A flush that fails queues them again.
        registry.queue_applied(vec![rec("r3", 2)]);
        registry.store.close().await;
        assert!(registry.flush().await.is_err());
        assert_eq!(roles(registry.unstored_applied("c", "s", 2)), ["r3"]);
        assert!(registry.unstored_applied.lock().unwrap().writing.is_empty());
    }

    #[tokio::test]
    async fn a_watch_wakes_only_for_its_roles_and_unregisters_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let registry = testing::registry(dir.path(), &["h1"], Duration::from_secs(30)).await;
        let report = |id: &str, state: &str| RoleStatusRec {
            role_id: id.to_owned(),
            state: state.to_owned(),
            ..Default::default()
        };
        let watch = registry.watch(&["r1".to_owned()], &[]);
        assert_eq!(registry.waiter_count(), 1);
        tokio::time::pause();
        registry.update_role_status(vec![report("r2", "running")]);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), watch.changed()).await.is_err(),
            "a report about another role woke the watcher"
        );
        registry.update_role_status(vec![report("r1", "running")]);
        tokio::time::timeout(Duration::from_secs(5), watch.changed()).await.expect("woken by r1's report");
        drop(watch);
        assert_eq!(registry.waiter_count(), 0);
    }

    #[test]
    fn role_reports_make_events_for_starts_crashes_failures_and_health() {
        let rec = |state: &str, pid: u32, restarts: u32, health: &str| RoleStatusRec {
            role_id: "r1".into(),
            state: state.into(),
            pid,
            restart_count: restarts,
            health: health.into(),
            running_revision: 3,
            last_exit_status: 137,
            ..Default::default()
        };
        let kinds = |old: Option<&RoleStatusRec>, new: &RoleStatusRec| -> Vec<&str> {
            role_transitions(old, new).into_iter().map(|(_, k, _)| k).collect()
        };
        let stopped = rec("stopped", 0, 0, "unknown");
        let running = rec("running", 10, 0, "unknown");
        assert_eq!(kinds(None, &running), Vec::<&str>::new(), "nothing known before: no event");
        assert_eq!(kinds(Some(&stopped), &running), ["role_started"]);
        assert_eq!(kinds(Some(&running), &running), Vec::<&str>::new());
        let good = rec("running", 10, 0, "good");
        let events = role_transitions(Some(&running), &good);
        assert_eq!(events, vec![("info", "role_health", "health unknown -> good".to_owned())]);
        let crashed = rec("running", 11, 1, "good");
        let events = role_transitions(Some(&good), &crashed);
        assert_eq!(events[0].1, "role_restarted");
        assert!(events[0].2.contains("exit status 137") && events[0].2.contains("1 restart(s)"), "{events:?}");
        assert_eq!(events.len(), 1, "a crash restart is not also a start: {events:?}");
        let failed = RoleStatusRec { last_error: "port in use".into(), ..rec("failed", 0, 1, "bad") };
        let events = role_transitions(Some(&crashed), &failed);
        assert_eq!(
            events.iter().map(|(s, k, _)| (*s, *k)).collect::<Vec<_>>(),
            [("critical", "role_failed"), ("critical", "role_health")]
        );
        assert_eq!(events[0].2, "failed: port in use");
        assert_eq!(kinds(Some(&good), &rec("stopped", 0, 0, "good")), ["role_stopped"]);
    }
}
