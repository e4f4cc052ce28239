//! [`Desired`]: the one owner of every host's intent.
//!
//! - **Ordered per service, parallel across services.** Each service has its
//!   own lock ([`Desired::lock_service`]); a refresh reads the store's latest
//!   state and publishes under that lock, so the latest revision always wins,
//!   while changes to different services proceed side by side. Services that
//!   render this one (those that `require` its type or refer to it by a
//!   `service` parameter) are re-rendered afterwards, each under its own
//!   lock, one lock held at a time (no lock-order deadlock).
//! - **Level-triggered.** [`Desired::resync`] (every
//!   `--desired-resync-interval`) derives every service's roles again and
//!   corrects any host whose intent drifted from the store, counting the
//!   corrections and recording a `desired_state_corrected` event for each.
//! - **Failures are retried and visible.** A refresh that fails is retried
//!   with backoff (1 s doubling to 60 s) and shows in `/healthz` as degraded
//!   ([`Desired::health`]) until it succeeds.
//! - **Re-renders are remembered.** When a role's files change while its
//!   revision stays (a peer moved, a referenced service gained a role), the
//!   role is stale until its process restarts, with the files as the reason
//!   ([`Desired::rerendered_since`]), unless its type applies files by reload.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::OwnedMutexGuard;
use utoipa::ToSchema;

use super::{DesiredError, DesiredParcel, DesiredRole, load_service, referrers};
use crate::AppState;
use crate::model::{UnixMillis, now_millis, rfc3339};
use crate::store::{ClusterParcelRec, NewEvent};

/// Longest wait between two retries of a failing refresh.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// Proof that the caller holds a service's lock.
pub struct ServiceGuard {
    cluster: String,
    service: String,
    _guard: OwnedMutexGuard<()>,
}

impl ServiceGuard {
    fn key(&self) -> String {
        format!("{}/{}", self.cluster, self.service)
    }
}

#[derive(Debug, Clone)]
struct Failure {
    error: String,
    attempts: u32,
    since: UnixMillis,
    next_at: Instant,
}

/// A service whose desired state could not be computed, and is being retried.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailingRefresh {
    /// `cluster/service`.
    pub service: String,
    pub error: String,
    pub attempts: u32,
    pub since: String,
}

/// The state of the desired-state owner, for `/healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DesiredHealth {
    /// `ok`, or `degraded` while some refresh fails.
    pub status: String,
    pub failing: Vec<FailingRefresh>,
    /// Hosts whose drifted intent a resync corrected since start.
    pub corrections: u64,
    /// Completed resyncs since start.
    pub resyncs: u64,
    pub last_resync_at: Option<String>,
    pub resync_interval_seconds: u64,
}

/// What one resync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncReport {
    pub services: usize,
    /// Host intents that differed from the store's and were corrected.
    pub corrections: usize,
    /// Services that could not be refreshed (retried with backoff).
    pub failed: usize,
}

/// The owner of every host's intent. See the module docs.
pub struct Desired {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    parcels: tokio::sync::Mutex<()>,
    failing: Mutex<BTreeMap<(String, String), Failure>>,
    /// Role id -> when its files were last re-rendered with its revision
    /// unchanged, and the files (`file:PATH`).
    rerenders: Mutex<HashMap<String, (UnixMillis, Vec<String>)>>,
    corrections: AtomicU64,
    resyncs: AtomicU64,
    last_resync_at: AtomicI64,
    resync_interval: Duration,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired").field("resync_interval", &self.resync_interval).finish_non_exhaustive()
    }
}

impl Desired {
    pub fn new(resync_interval: Duration) -> Desired {
        Desired {
            locks: Mutex::new(HashMap::new()),
            parcels: tokio::sync::Mutex::new(()),
            failing: Mutex::new(BTreeMap::new()),
            rerenders: Mutex::new(HashMap::new()),
            corrections: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            last_resync_at: AtomicI64::new(0),
            resync_interval,
        }
    }

    pub fn resync_interval(&self) -> Duration {
        self.resync_interval
    }

    /// Waits for and takes a service's lock. Changes that render a service
    /// to validate it take this lock first, so the render they validated is
    /// the one published ([`Desired::publish`]).
    pub async fn lock_service(&self, cluster: &str, service: &str) -> ServiceGuard {
        let lock = {
            let mut locks = self.locks.lock().expect("locks lock");
            locks.entry(format!("{cluster}/{service}")).or_default().clone()
        };
        ServiceGuard { cluster: cluster.to_owned(), service: service.to_owned(), _guard: lock.lock_owned().await }
    }

    /// Renders a service again from the store and pushes the result to every
    /// host concerned: hosts of its roles, hosts that lost one of its roles
    /// (`also_hosts`), then the services that render this one.
    pub async fn refresh_service(
        &self,
        state: &AppState,
        cluster: &str,
        service: &str,
        also_hosts: &[String],
    ) -> Result<(), DesiredError> {
        let guard = self.lock_service(cluster, service).await;
        self.publish(state, guard, also_hosts, None).await
    }

    /// Publishes a service's roles under its lock (`rendered`: as the caller
    /// rendered them under that lock, or `None` to render from the store),
    /// releases the lock, then re-renders the services that depend on it.
    pub async fn publish(
        &self,
        state: &AppState,
        guard: ServiceGuard,
        also_hosts: &[String],
        rendered: Option<Vec<DesiredRole>>,
    ) -> Result<(), DesiredError> {
        let (cluster, service) = (guard.cluster.clone(), guard.service.clone());
        let own = self.publish_one(state, &guard, also_hosts, rendered, None).await;
        drop(guard);
        self.note_outcome(&cluster, &service, &own);
        own?;
        self.refresh_dependents(state, &cluster, &service).await;
        Ok(())
    }

    /// Renders (unless given) and pushes one service's roles; records
    /// re-rendered files. Returns how many hosts' intent changed.
    async fn publish_one(
        &self,
        state: &AppState,
        guard: &ServiceGuard,
        also_hosts: &[String],
        rendered: Option<Vec<DesiredRole>>,
        because: Option<&str>,
    ) -> Result<usize, DesiredError> {
        let key = guard.key();
        let roles = match rendered {
            Some(r) => r,
            None => match load_service(state, &guard.cluster, &guard.service).await? {
                Some(ctx) => ctx.render_all_blocking().await?.1,
                None => Vec::new(),
            },
        };
        let changed = self.note_rerenders(state, &roles);
        let reload_signal = roles.first().map(|r| r.rendered.process.reload_signal.clone()).unwrap_or_default();
        let n = push(state, &key, roles, also_hosts).await?;
        if !changed.is_empty() {
            let because = because.unwrap_or("the hosts or roles it renders changed");
            record_rerender(state, &key, because, &reload_signal, &changed).await;
        }
        Ok(n)
    }

    /// Re-renders, each under its own lock, the services of the cluster that
    /// require this service's type or refer to it. A failure is recorded on
    /// that service (and retried), not returned: the change itself is done.
    async fn refresh_dependents(&self, state: &AppState, cluster: &str, service: &str) {
        let dependents = match dependents(state, cluster, service).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(service = %format!("{cluster}/{service}"), error = %e, "could not list the services that depend on it");
                return;
            }
        };
        let because = format!("{cluster}/{service} changed");
        for other in dependents {
            let guard = self.lock_service(cluster, &other).await;
            let r = self.publish_one(state, &guard, &[], None, Some(&because)).await;
            drop(guard);
            self.note_outcome(cluster, &other, &r);
        }
    }

    /// Records, for roles whose files change while their revision does not,
    /// when and which files (unless the role applies files by reload).
    /// Returns `(role name, paths)` of those roles.
    fn note_rerenders(&self, state: &AppState, roles: &[DesiredRole]) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        let now = now_millis();
        for role in roles {
            let Some(before) = state.registry.desired_role(&role.host_id, &role.role_id) else { continue };
            if before.config_revision != role.config_revision {
                continue;
            }
            let paths: Vec<String> = role
                .rendered
                .files
                .iter()
                .filter(|f| !before.rendered.files.iter().any(|b| b.path == f.path && b.sha256 == f.sha256))
                .map(|f| f.path.clone())
                .collect();
            if paths.is_empty() {
                continue;
            }
            if role.rendered.process.reload_signal.is_empty() {
                let keys = paths.iter().map(|p| format!("file:{p}")).collect();
                self.rerenders.lock().expect("rerenders lock").insert(role.role_id.clone(), (now, keys));
            }
            out.push((role.name.clone(), paths));
        }
        out
    }

    /// The files of a role re-rendered (its revision unchanged) after its
    /// process started at `started_at`: the process runs with older files.
    pub fn rerendered_since(&self, role_id: &str, started_at: Option<UnixMillis>) -> Option<Vec<String>> {
        let started_at = started_at?;
        let rerenders = self.rerenders.lock().expect("rerenders lock");
        let (at, keys) = rerenders.get(role_id)?;
        (started_at < *at).then(|| keys.clone())
    }

    fn note_outcome<T>(&self, cluster: &str, service: &str, r: &Result<T, DesiredError>) {
        let key = (cluster.to_owned(), service.to_owned());
        let mut failing = self.failing.lock().expect("failing lock");
        match r {
            Ok(_) => {
                if failing.remove(&key).is_some() {
                    tracing::info!(service = %format!("{cluster}/{service}"), "desired state computed again after failures");
                }
            }
            Err(e) => {
                let f = failing.entry(key).or_insert_with(|| Failure {
                    error: String::new(),
                    attempts: 0,
                    since: now_millis(),
                    next_at: Instant::now(),
                });
                f.attempts += 1;
                f.error = e.to_string();
                let backoff = Duration::from_secs(1u64 << f.attempts.saturating_sub(1).min(6)).min(MAX_RETRY_BACKOFF);
                f.next_at = Instant::now() + backoff;
                tracing::error!(service = %format!("{cluster}/{service}"), attempts = f.attempts, retry_in = ?backoff, error = %e, "could not compute desired state");
            }
        }
    }

    /// Retries the failing refreshes whose backoff has passed.
    pub async fn retry_due(&self, state: &AppState) {
        let now = Instant::now();
        let due: Vec<(String, String)> = {
            let failing = self.failing.lock().expect("failing lock");
            failing.iter().filter(|(_, f)| f.next_at <= now).map(|(k, _)| k.clone()).collect()
        };
        for (cluster, service) in due {
            let _ = self.refresh_service(state, &cluster, &service, &[]).await;
        }
    }

    /// Recomputes the parcels every host must hold from the clusters it
    /// belongs to and what each cluster wants, and pushes the hosts whose set
    /// changed. When two clusters of one host want different active versions
    /// of a name, the first cluster by name wins. Returns how many hosts
    /// changed.
    pub async fn refresh_parcels(&self, state: &AppState) -> Result<usize, DesiredError> {
        let _guard = self.parcels.lock().await;
        let members = state.store.all_cluster_hosts().await?;
        let wanted = state.store.cluster_parcels(None).await?;
        let mut by_cluster: BTreeMap<&str, Vec<&ClusterParcelRec>> = BTreeMap::new();
        for p in &wanted {
            by_cluster.entry(p.cluster.as_str()).or_default().push(p);
        }
        let mut per_host: BTreeMap<String, BTreeMap<(String, String), DesiredParcel>> = BTreeMap::new();
        for (cluster, host) in &members {
            let set = per_host.entry(host.clone()).or_default();
            for p in by_cluster.get(cluster.as_str()).into_iter().flatten() {
                let active_taken = set.values().any(|d| d.name == p.name && d.active);
                let entry = set.entry((p.name.clone(), p.version.clone())).or_insert_with(|| DesiredParcel {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    file_name: p.file_name.clone(),
                    sha256: p.sha256.clone(),
                    size: p.size,
                    active: false,
                });
                if p.target == "active" && !active_taken {
                    entry.active = true;
                }
            }
        }
        let mut changed = Vec::new();
        for host in state.registry.host_ids() {
            let parcels: Vec<DesiredParcel> =
                per_host.remove(&host).map(|m| m.into_values().collect()).unwrap_or_default();
            if let Some(generation) = state.registry.set_host_parcels(&host, parcels) {
                changed.push((host, generation));
            }
        }
        Ok(changed.len())
    }

    /// A host's name or addresses changed (reported in its hello): peers
    /// render them into their files (ZooKeeper's server list, Redis's
    /// `replicaof`, nginx upstreams), so every service with a role on the
    /// host is rendered again and pushed, with the services that depend on it.
    pub async fn host_identity_changed(&self, state: &AppState, host_id: &str) -> Result<(), DesiredError> {
        let mut services: Vec<(String, String)> =
            state.store.roles_on_host(host_id).await?.into_iter().map(|r| (r.cluster, r.service)).collect();
        services.dedup();
        for (cluster, service) in services {
            self.refresh_service(state, &cluster, &service, &[]).await?;
        }
        Ok(())
    }

    /// Computes every service's desired state at start-up so sessions push
    /// the right state. A service that fails is recorded (degraded health)
    /// and retried; the others go on.
    pub async fn load_all(&self, state: &AppState) -> Result<(), DesiredError> {
        self.refresh_parcels(state).await?;
        for svc in state.store.all_services().await? {
            let guard = self.lock_service(&svc.cluster, &svc.name).await;
            let r = self.publish_one(state, &guard, &[], None, None).await;
            drop(guard);
            self.note_outcome(&svc.cluster, &svc.name, &r);
        }
        Ok(())
    }

    /// Derives every host's intent again from the store and corrects what
    /// drifted: roles of existing services, roles of services that no longer
    /// exist, and parcels. Each correction is counted and recorded as an
    /// event on its service.
    pub async fn resync(&self, state: &AppState) -> Result<ResyncReport, DesiredError> {
        let mut report = ResyncReport::default();
        let parcels = self.refresh_parcels(state).await?;
        if parcels > 0 {
            tracing::warn!(hosts = parcels, "resync corrected the desired parcels of hosts");
            report.corrections += parcels;
        }
        let services = state.store.all_services().await?;
        let mut known: BTreeSet<String> = BTreeSet::new();
        for svc in &services {
            known.insert(format!("{}/{}", svc.cluster, svc.name));
            let guard = self.lock_service(&svc.cluster, &svc.name).await;
            let r = self.publish_one(state, &guard, &[], None, None).await;
            drop(guard);
            self.note_outcome(&svc.cluster, &svc.name, &r);
            report.services += 1;
            match r {
                Ok(0) => {}
                Ok(n) => {
                    report.corrections += n;
                    record_correction(state, &format!("{}/{}", svc.cluster, svc.name), n).await;
                }
                Err(_) => report.failed += 1,
            }
        }
        // Roles of services that are gone (a deletion whose refresh failed).
        for key in state.registry.service_keys() {
            if known.contains(&key) {
                continue;
            }
            let Some((cluster, service)) = key.split_once('/') else { continue };
            let guard = self.lock_service(cluster, service).await;
            let n = push(state, &key, Vec::new(), &[]).await?;
            drop(guard);
            if n > 0 {
                report.corrections += n;
                record_correction(state, &key, n).await;
            }
        }
        self.corrections.fetch_add(report.corrections as u64, Ordering::Relaxed);
        self.resyncs.fetch_add(1, Ordering::Relaxed);
        self.last_resync_at.store(now_millis(), Ordering::Relaxed);
        Ok(report)
    }

    /// Failing refreshes and resync counters.
    pub fn health(&self) -> DesiredHealth {
        let failing: Vec<FailingRefresh> = self
            .failing
            .lock()
            .expect("failing lock")
            .iter()
            .map(|((c, s), f)| FailingRefresh {
                service: format!("{c}/{s}"),
                error: f.error.clone(),
                attempts: f.attempts,
                since: rfc3339(f.since),
            })
            .collect();
        let last = self.last_resync_at.load(Ordering::Relaxed);
        DesiredHealth {
            status: if failing.is_empty() { "ok" } else { "degraded" }.into(),
            failing,
            corrections: self.corrections.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            last_resync_at: (last > 0).then(|| rfc3339(last)),
            resync_interval_seconds: self.resync_interval.as_secs(),
        }
    }
}

/// Services of the cluster whose roles render this one: those whose type
/// requires its type, and those that refer to it by a `service` parameter.
async fn dependents(state: &AppState, cluster: &str, service: &str) -> Result<Vec<String>, DesiredError> {
    let mut out = Vec::new();
    if let Some(svc) = state.store.service(cluster, service).await? {
        for other in state.store.list_services(cluster).await? {
            if let Some(t) = state.catalog.get(&other.service_type)
                && t.requires.contains(&svc.service_type)
                && other.name != service
            {
                out.push(other.name.clone());
            }
        }
    }
    for (other, _) in referrers(state, cluster, service).await? {
        if !out.contains(&other) {
            out.push(other);
        }
    }
    Ok(out)
}

/// Replaces a service's roles on every host concerned; hosts whose desired
/// state changed get a new generation, which their sessions push at once.
/// Returns how many hosts changed.
async fn push(
    state: &AppState,
    key: &str,
    roles: Vec<DesiredRole>,
    also_hosts: &[String],
) -> Result<usize, DesiredError> {
    let mut by_host: BTreeMap<String, Vec<Arc<DesiredRole>>> = BTreeMap::new();
    let mut hosts: BTreeSet<String> = also_hosts.iter().cloned().collect();
    hosts.extend(state.registry.hosts_with_service(key));
    for role in roles {
        hosts.insert(role.host_id.clone());
        by_host.entry(role.host_id.clone()).or_default().push(Arc::new(role));
    }
    let mut changed = Vec::new();
    for host in hosts {
        let roles = by_host.remove(&host).unwrap_or_default();
        if let Some(generation) = state.registry.set_service_roles(&host, key, roles) {
            tracing::debug!(host = %host, generation, service = %key, "desired state changed");
            changed.push((host, generation));
        }
    }
    // Sessions push at once (they watch the registry); the registry's
    // flusher stores the generations with its next batch.
    Ok(changed.len())
}

/// Records that a service's files changed while its revision did not
/// (`because` says why): this event is what shows the change in its history.
async fn record_rerender(
    state: &AppState,
    service: &str,
    because: &str,
    reload_signal: &str,
    changed: &[(String, Vec<String>)],
) {
    let mut paths: Vec<&str> = changed.iter().flat_map(|(_, p)| p.iter().map(String::as_str)).collect();
    paths.sort_unstable();
    paths.dedup();
    let names: Vec<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
    let how = if reload_signal.is_empty() {
        "running roles apply them when restarted (they show as stale until then)".to_string()
    } else {
        format!("running roles reload ({reload_signal})")
    };
    let message = format!("re-rendered because {because}: {} of {}; {how}", paths.join(", "), names.join(", "));
    tracing::info!(service = %service, because = %because, roles = names.len(), "service re-rendered");
    insert_event(state, "info", "config_rerendered", service, message).await;
}

async fn record_correction(state: &AppState, service: &str, hosts: usize) {
    tracing::warn!(service = %service, hosts, "resync corrected drifted desired state");
    let message = format!(
        "resync found the desired state of {service} on {hosts} host(s) different from the store's and corrected it"
    );
    insert_event(state, "warning", "desired_state_corrected", service, message).await;
}

async fn insert_event(state: &AppState, severity: &'static str, kind: &'static str, service: &str, message: String) {
    let event =
        NewEvent { at: now_millis(), severity, kind, object_type: "service", object_id: service.to_owned(), message };
    if let Err(e) = state.store.insert_event(&event).await {
        tracing::warn!(service = %service, error = %e, "could not record an event");
    }
}
