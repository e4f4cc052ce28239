//! Desired state: what each host must run, computed from services, roles and
//! their latest configuration revision, and pushed to agents as soon as it
//! changes.
//!
//! The registry keeps every host's desired roles (intent). Whenever a service's
//! configuration, roles or commands change, [`refresh_service`] renders the
//! service's roles again, replaces them on their hosts, and every host whose
//! desired state actually changed gets a new generation, which its session
//! pushes at once. Hosts whose state did not change are not touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use drover_parcels::config::ConfigValues;
use drover_parcels::descriptor::ServiceType;
use drover_parcels::render::{DependencyTopology, RenderedRole, Renderer, RoleInstance, Topology};

use crate::AppState;
use crate::store::{RoleRec, ServiceRec, StoreError};

/// One role as its host must run it.
#[derive(Debug, Clone)]
pub struct DesiredRole {
    pub role_id: String,
    pub host_id: String,
    /// `<cluster>/<service>`.
    pub service: String,
    pub role_type: String,
    pub name: String,
    pub config_revision: u64,
    pub rendered: RenderedRole,
    /// Parcels that must be active on the host before the role starts.
    pub parcels: Vec<String>,
    pub running: bool,
    pub restart_nonce: u64,
}

impl DesiredRole {
    /// A stable digest of everything the agent acts on.
    pub fn digest_into(&self, h: &mut sha2::Sha256) {
        use sha2::Digest;
        h.update(self.role_id.as_bytes());
        h.update(self.config_revision.to_le_bytes());
        h.update(self.restart_nonce.to_le_bytes());
        h.update([u8::from(self.running)]);
        for p in &self.parcels {
            h.update(p.as_bytes());
            h.update([0]);
        }
        for f in &self.rendered.files {
            h.update(f.path.as_bytes());
            h.update(f.sha256.as_bytes());
            h.update(f.mode.to_le_bytes());
        }
        h.update(format!("{:?}{:?}", self.rendered.process, self.rendered.health_checks).as_bytes());
    }
}

/// The desired state of one host.
#[derive(Debug, Clone, Default)]
pub struct HostDesired {
    pub generation: u64,
    pub roles: Vec<Arc<DesiredRole>>,
    pub parcels: Vec<DesiredParcel>,
}

/// A parcel version a host must hold, and whether it must be the active one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredParcel {
    pub name: String,
    pub version: String,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub active: bool,
}

/// What an agent reports about one parcel on its host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ParcelStatusRec {
    pub name: String,
    pub version: String,
    /// `downloading`, `distributed`, `active` or `failed`.
    pub state: String,
    pub downloaded_bytes: u64,
    pub total_bytes: u64,
    pub error: String,
}

/// Recomputes the parcels every host must hold from the clusters it belongs
/// to and what each cluster wants, and pushes the hosts whose set changed.
/// When two clusters of one host want different active versions of a name,
/// the first cluster by name wins.
pub async fn refresh_parcels(state: &AppState) -> Result<(), DesiredError> {
    let _guard = state.refresh_lock.lock().await;
    let members = state.store.all_cluster_hosts().await?;
    let wanted = state.store.cluster_parcels(None).await?;
    let mut by_cluster: BTreeMap<&str, Vec<&crate::store::ClusterParcelRec>> = BTreeMap::new();
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
        let parcels: Vec<DesiredParcel> = per_host.remove(&host).map(|m| m.into_values().collect()).unwrap_or_default();
        if let Some(generation) = state.registry.set_host_parcels(&host, parcels) {
            changed.push((host, generation));
        }
    }
    state.store.set_desired_generations(&changed).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("service type {0:?} is not known to this manager")]
    UnknownType(String),
    #[error("render {role}: {message}")]
    Render { role: String, message: String },
    #[error("{0}")]
    Internal(String),
    #[error("revision {revision} of {service} holds invalid configuration: {message}")]
    BadRevision { service: String, revision: u64, message: String },
}

/// Everything needed to render a service's roles.
pub struct ServiceContext {
    pub service: ServiceRec,
    pub service_type: ServiceType,
    pub values: ConfigValues,
    pub roles: Vec<RoleRec>,
    pub topology: Topology,
}

/// Loads a service with its roles, latest values and topology (including the
/// services it requires in the same cluster).
pub async fn load_service(
    state: &AppState,
    cluster: &str,
    service: &str,
) -> Result<Option<ServiceContext>, DesiredError> {
    let Some(svc) = state.store.service(cluster, service).await? else { return Ok(None) };
    let values = revision_values(state, &svc, svc.revision).await?;
    load_with_values(state, svc, values).await.map(Some)
}

/// The values of one revision of a service.
pub async fn revision_values(state: &AppState, svc: &ServiceRec, revision: u64) -> Result<ConfigValues, DesiredError> {
    let rev =
        state.store.revision(&svc.cluster, &svc.name, revision).await?.ok_or_else(|| DesiredError::BadRevision {
            service: format!("{}/{}", svc.cluster, svc.name),
            revision,
            message: "revision missing".into(),
        })?;
    serde_json::from_value(rev.config).map_err(|e| DesiredError::BadRevision {
        service: format!("{}/{}", svc.cluster, svc.name),
        revision,
        message: e.to_string(),
    })
}

/// Builds the render context of a service with the given values (the latest
/// revision's, or a candidate being validated).
pub async fn load_with_values(
    state: &AppState,
    svc: ServiceRec,
    values: ConfigValues,
) -> Result<ServiceContext, DesiredError> {
    let service_type = state
        .catalog
        .get(&svc.service_type)
        .cloned()
        .ok_or_else(|| DesiredError::UnknownType(svc.service_type.clone()))?;
    let roles = state.store.roles_of_service(&svc.cluster, &svc.name).await?;
    let own = instances(state, &roles).await?;
    let mut dependencies = BTreeMap::new();
    for required in &service_type.requires {
        // The first service of the required type in the same cluster.
        let candidates = state.store.list_services(&svc.cluster).await?;
        if let Some(dep) = candidates.into_iter().find(|s| &s.service_type == required) {
            let dep_values = revision_values(state, &dep, dep.revision).await?;
            let dep_roles = state.store.roles_of_service(&dep.cluster, &dep.name).await?;
            let Some(dep_type) = state.catalog.get(&dep.service_type).cloned() else { continue };
            dependencies.insert(
                required.clone(),
                DependencyTopology {
                    service: dep.name.clone(),
                    service_type: dep_type,
                    roles: instances(state, &dep_roles).await?,
                    values: dep_values,
                },
            );
        }
    }
    let topology = Topology { cluster: svc.cluster.clone(), service: svc.name.clone(), roles: own, dependencies };
    Ok(ServiceContext { service: svc, service_type, values, roles, topology })
}

async fn instances(state: &AppState, roles: &[RoleRec]) -> Result<Vec<RoleInstance>, DesiredError> {
    let mut ids: Vec<String> = roles.iter().map(|r| r.host_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let hosts = state.store.host_addresses(&ids).await?;
    Ok(roles
        .iter()
        .map(|r| {
            let (hostname, addresses) = hosts.get(&r.host_id).cloned().unwrap_or_default();
            let address = addresses.first().cloned().unwrap_or_else(|| hostname.clone());
            RoleInstance {
                role_id: r.id.clone(),
                name: r.name.clone(),
                role_type: r.role_type.clone(),
                group: r.group.clone(),
                host_id: r.host_id.clone(),
                hostname,
                address,
                index: r.index,
            }
        })
        .collect())
}

impl ServiceContext {
    /// [`ServiceContext::render_all`] on the blocking pool: rendering thousands
    /// of roles must not hold up the async workers that serve agent sessions.
    pub async fn render_all_blocking(self) -> Result<(Self, Vec<DesiredRole>), DesiredError> {
        tokio::task::spawn_blocking(move || {
            let out = self.render_all()?;
            Ok((self, out))
        })
        .await
        .map_err(|e| DesiredError::Internal(format!("rendering task failed: {e}")))?
    }

    /// Renders every role of the service.
    pub fn render_all(&self) -> Result<Vec<DesiredRole>, DesiredError> {
        let mut renderer = Renderer::new(&self.service_type, &self.topology, &self.values)
            .map_err(|e| DesiredError::Render { role: self.service.name.clone(), message: e.to_string() })?;
        self.roles
            .iter()
            .map(|r| {
                let rendered = renderer
                    .render(&r.id)
                    .map_err(|e| DesiredError::Render { role: r.name.clone(), message: e.to_string() })?;
                Ok(DesiredRole {
                    role_id: r.id.clone(),
                    host_id: r.host_id.clone(),
                    service: format!("{}/{}", self.service.cluster, self.service.name),
                    role_type: r.role_type.clone(),
                    name: r.name.clone(),
                    config_revision: self.service.revision,
                    rendered,
                    parcels: self.service_type.parcels.clone(),
                    running: r.run_state == "running",
                    restart_nonce: r.restart_nonce,
                })
            })
            .collect()
    }
}

/// Renders a service again and pushes the result to every host concerned:
/// hosts of its roles, hosts that lost one of its roles (`also_hosts`), and
/// services in the cluster that require this one.
pub async fn refresh_service(
    state: &AppState,
    cluster: &str,
    service: &str,
    also_hosts: &[String],
) -> Result<(), DesiredError> {
    // One refresh at a time: each reads the latest revisions, so concurrent
    // changes cannot leave a host with an older state than the store's.
    let guard = state.refresh_lock.lock().await;
    refresh_locked(state, &guard, cluster, service, also_hosts, None).await
}

/// [`refresh_service`] for a caller that already holds `state.refresh_lock`
/// (the guard proves it). `rendered`, when given, is this service's roles as
/// rendered under that same lock from the store's current state (a config
/// change renders once to validate and pushes that very result).
pub async fn refresh_locked(
    state: &AppState,
    _lock: &tokio::sync::MutexGuard<'_, ()>,
    cluster: &str,
    service: &str,
    also_hosts: &[String],
    mut rendered: Option<Vec<DesiredRole>>,
) -> Result<(), DesiredError> {
    let mut to_refresh = vec![(cluster.to_owned(), service.to_owned())];
    if let Some(svc) = state.store.service(cluster, service).await? {
        for other in state.store.list_services(cluster).await? {
            if let Some(t) = state.catalog.get(&other.service_type)
                && t.requires.contains(&svc.service_type)
            {
                to_refresh.push((other.cluster.clone(), other.name.clone()));
            }
        }
    }
    for (c, s) in to_refresh {
        let key = format!("{c}/{s}");
        // Only the first entry (this service) can have been rendered already.
        let roles = match rendered.take() {
            Some(r) => r,
            None => match load_service(state, &c, &s).await? {
                Some(ctx) => ctx.render_all_blocking().await?.1,
                None => Vec::new(),
            },
        };
        publish(state, &key, roles, also_hosts).await?;
    }
    Ok(())
}

/// Replaces a service's roles on every host concerned; hosts whose desired
/// state changed get a new generation, which their sessions push at once.
async fn publish(
    state: &AppState,
    key: &str,
    roles: Vec<DesiredRole>,
    also_hosts: &[String],
) -> Result<(), DesiredError> {
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
    // The push already happened (sessions watch the registry); persist after.
    state.store.set_desired_generations(&changed).await?;
    Ok(())
}

/// Renders every service at start-up so sessions push the right state.
pub async fn load_all(state: &AppState) -> Result<(), DesiredError> {
    refresh_parcels(state).await?;
    for svc in state.store.all_services().await? {
        if let Err(e) = refresh_service(state, &svc.cluster, &svc.name, &[]).await {
            tracing::error!(service = %format!("{}/{}", svc.cluster, svc.name), error = %e, "could not compute desired state");
        }
    }
    Ok(())
}
