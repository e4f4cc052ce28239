//! Desired state: what each host must run, computed from services, roles and
//! their latest configuration revision, and pushed to agents as soon as it
//! changes.
//!
//! The registry keeps every host's desired roles (intent); [`Desired`]
//! (in `owner.rs`) is the one component that changes it. Whenever a
//! service's configuration, roles or commands change, it renders the
//! service's roles again, replaces them on their hosts, and every host whose
//! desired state actually changed gets a new generation, which its session
//! pushes at once. Hosts whose state did not change are not touched. It is
//! also level-triggered: a periodic resync re-derives everything and corrects
//! drift, and failed refreshes are retried with backoff.
//!
//! This file holds the types and the pure-ish loading and rendering of a
//! service ([`ServiceContext`]); `owner.rs` the ordering, publishing, resync
//! and retry.
//!
//! A service's templates also see the services it depends on: the services of
//! the types it `requires`, and the services its `service` parameters refer
//! to by name (an nginx `upstream_service`). A refresh of a service therefore
//! re-renders the services that depend on it too, and records an event on each
//! of them whose files changed that way.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_service_types::config::{self, ConfigValues};
use drover_service_types::descriptor::ServiceType;
use drover_service_types::params::ParamKind;
use drover_service_types::render::{DependencyTopology, RenderedRole, Renderer, RoleInstance, Topology};

mod owner;

pub use owner::{Desired, DesiredHealth, FailingRefresh, ServiceGuard};

use crate::AppState;
use crate::store::{RoleRec, ServiceRec, ServiceRoles, StoreError};

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
    /// [`DesiredRole::compute_digest`], taken once when the role is rendered
    /// (on the blocking pool), not on every host's publish.
    pub digest: [u8; 32],
}

impl DesiredRole {
    /// A stable digest of everything the agent acts on.
    pub fn compute_digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.role_id.as_bytes());
        h.update(self.config_revision.to_le_bytes());
        h.update(self.restart_nonce.to_le_bytes());
        h.update(self.rendered.restart_digest.as_bytes());
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
        // Serialised, not Debug: Debug hides a Redis source's password, and a
        // new password must reach the agent. (A changed source is pushed; it
        // never restarts the role: the restart digest leaves sources out.)
        h.update(serde_json::to_vec(&self.rendered.metric_sources).unwrap_or_default());
        h.update(serde_json::to_vec(&self.rendered.log).unwrap_or_default());
        h.finalize().into()
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
    /// The service's roles and their hosts, as the store keeps them between
    /// renders (shared, not copied, per change).
    pub service_roles: Arc<ServiceRoles>,
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
    // Encrypted values decrypted here, once (`crate::secrets`).
    state.secrets.open_values(rev.config).map_err(|e| DesiredError::BadRevision {
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
    let service_roles = state.store.service_roles(&svc.cluster, &svc.name).await?;
    let own = instances(&service_roles);
    let mut dependencies = BTreeMap::new();
    for required in &service_type.requires {
        // The first service of the required type in the same cluster.
        let candidates = state.store.list_services(&svc.cluster).await?;
        if let Some(dep) = candidates.into_iter().find(|s| &s.service_type == required) {
            let dep_values = revision_values(state, &dep, dep.revision).await?;
            let dep_roles = state.store.service_roles(&dep.cluster, &dep.name).await?;
            let Some(dep_type) = state.catalog.get(&dep.service_type).cloned() else { continue };
            dependencies.insert(
                required.clone(),
                DependencyTopology {
                    service: dep.name.clone(),
                    service_type: dep_type,
                    roles: instances(&dep_roles),
                    values: dep_values,
                },
            );
        }
    }
    // The services its `service` parameters name. One that does not exist is
    // left out: rendering a role that refers to it then fails, naming it.
    let mut references = BTreeMap::new();
    for r in config::service_refs(&service_type, &values) {
        if references.contains_key(&r.service) || r.service == svc.name {
            continue;
        }
        let Some(other) = state.store.service(&svc.cluster, &r.service).await? else { continue };
        let Some(other_type) = state.catalog.get(&other.service_type).cloned() else { continue };
        let other_values = revision_values(state, &other, other.revision).await?;
        let other_roles = state.store.service_roles(&other.cluster, &other.name).await?;
        references.insert(
            r.service.clone(),
            DependencyTopology {
                service: other.name.clone(),
                service_type: other_type,
                roles: instances(&other_roles),
                values: other_values,
            },
        );
    }
    let topology =
        Topology { cluster: svc.cluster.clone(), service: svc.name.clone(), roles: own, dependencies, references };
    Ok(ServiceContext { service: svc, service_type, values, service_roles, topology })
}

/// A `service` parameter that names a service it cannot refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefProblem {
    /// No service of that name exists in the cluster (otherwise it is the
    /// service itself, or one of a type the parameter does not take).
    pub missing: bool,
    pub message: String,
}

/// What is wrong with the service references of `values` (a candidate
/// configuration of `svc`): every `service` parameter set at any level must
/// name another service of the same cluster, of one of the parameter's
/// `service_types` when it has some. Empty when all is well.
pub async fn reference_problems(
    state: &AppState,
    svc: &ServiceRec,
    st: &ServiceType,
    values: &ConfigValues,
) -> Result<Vec<RefProblem>, DesiredError> {
    let refs = config::service_refs(st, values);
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let services = state.store.list_services(&svc.cluster).await?;
    let mut problems = Vec::new();
    for r in refs {
        let param = format!("parameter `{}`", r.parameter);
        if r.service == svc.name {
            problems.push(RefProblem {
                missing: false,
                message: format!("{param}: service {} cannot refer to itself", svc.name),
            });
            continue;
        }
        let Some(other) = services.iter().find(|s| s.name == r.service) else {
            let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).filter(|n| *n != svc.name).collect();
            names.sort_unstable();
            let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            problems.push(RefProblem {
                missing: true,
                message: format!(
                    "{param}: service {} not found in cluster {} (its other services: {known})",
                    r.service, svc.cluster
                ),
            });
            continue;
        };
        let allowed = match st.parameter(&r.parameter).map(|p| &p.kind) {
            Some(ParamKind::Service { service_types }) => service_types.as_slice(),
            _ => &[],
        };
        if !allowed.is_empty() && !allowed.contains(&other.service_type) {
            problems.push(RefProblem {
                missing: false,
                message: format!(
                    "{param}: service {} is a {} service; expected a service of type {}",
                    other.name,
                    other.service_type,
                    allowed.join(" or ")
                ),
            });
        }
    }
    Ok(problems)
}

/// The services of `cluster` whose current configuration refers to `service`
/// through a `service` parameter, with the parameter: `(service, parameter)`,
/// sorted.
pub async fn referrers(state: &AppState, cluster: &str, service: &str) -> Result<Vec<(String, String)>, DesiredError> {
    let mut out = Vec::new();
    for other in state.store.list_services(cluster).await? {
        if other.name == service {
            continue;
        }
        let Some(st) = state.catalog.get(&other.service_type) else { continue };
        if !st.parameters.iter().any(|p| matches!(p.kind, ParamKind::Service { .. })) {
            continue;
        }
        let values = revision_values(state, &other, other.revision).await?;
        for r in config::service_refs(st, &values) {
            if r.service == service {
                out.push((other.name.clone(), r.parameter));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn instances(service: &ServiceRoles) -> Vec<RoleInstance> {
    service
        .roles
        .iter()
        .map(|r| {
            let (hostname, address) = match service.hosts.get(&r.host_id) {
                Some((name, addresses)) => (name.clone(), addresses.first().unwrap_or(name).clone()),
                None => (String::new(), String::new()),
            };
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
        .collect()
}

impl ServiceContext {
    /// The service's roles.
    pub fn roles(&self) -> &[RoleRec] {
        &self.service_roles.roles
    }

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

    /// Renders every role of the service. A large service is rendered in
    /// chunks on as many threads as the machine has cores: before a change
    /// is pushed, rendering is all the manager has to do.
    pub fn render_all(&self) -> Result<Vec<DesiredRole>, DesiredError> {
        const MIN_CHUNK: usize = 256;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = self.roles().len().div_ceil(threads).max(MIN_CHUNK);
        if self.roles().len() <= chunk {
            return self.render_roles(self.roles());
        }
        std::thread::scope(|scope| {
            let parts: Vec<_> =
                self.roles().chunks(chunk).map(|roles| scope.spawn(move || self.render_roles(roles))).collect();
            let mut out = Vec::with_capacity(self.roles().len());
            for part in parts {
                out.extend(part.join().map_err(|_| DesiredError::Internal("a rendering thread panicked".into()))??);
            }
            Ok(out)
        })
    }

    /// Renders `roles` (some of this service's) in order.
    fn render_roles(&self, roles: &[RoleRec]) -> Result<Vec<DesiredRole>, DesiredError> {
        let mut renderer = Renderer::new(&self.service_type, &self.topology, &self.values)
            .map_err(|e| DesiredError::Render { role: self.service.name.clone(), message: e.to_string() })?;
        roles
            .iter()
            .map(|r| {
                let rendered = renderer
                    .render(&r.id)
                    .map_err(|e| DesiredError::Render { role: r.name.clone(), message: e.to_string() })?;
                let mut role = DesiredRole {
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
                    digest: [0; 32],
                };
                role.digest = role.compute_digest();
                Ok(role)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use drover_service_types::render::{MetricSource, MetricSourceKind, ProcessSpec, RenderedRole};

    use super::DesiredRole;

    fn role(password: &str) -> DesiredRole {
        let source = MetricSource {
            kind: MetricSourceKind::Redis { host: "127.0.0.1".into(), port: 6379, password: password.into() },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        };
        DesiredRole {
            role_id: "r1".into(),
            host_id: "h1".into(),
            service: "prod/cache".into(),
            role_type: "primary".into(),
            name: "cache-primary-1".into(),
            config_revision: 3,
            rendered: RenderedRole {
                files: Vec::new(),
                process: ProcessSpec { program: "redis-server".into(), ..ProcessSpec::default() },
                health_checks: Vec::new(),
                log_files: Vec::new(),
                restart_digest: "d".repeat(64),
                metric_sources: vec![source],
                log: Default::default(),
            },
            parcels: Vec::new(),
            running: true,
            restart_nonce: 0,
            digest: [0; 32],
        }
    }

    /// A changed metric source (even only its password, which Debug hides) is pushed to the
    /// agent; the restart digest and nonce, which decide restarts, are untouched.
    #[test]
    fn a_changed_metric_source_changes_the_pushed_digest_only() {
        let (a, b) = (role("one"), role("two"));
        assert_ne!(a.compute_digest(), b.compute_digest());
        assert_eq!(a.compute_digest(), role("one").compute_digest());
        assert_eq!(a.rendered.restart_digest, b.rendered.restart_digest);
        assert_eq!(format!("{:?}", a.rendered.metric_sources), format!("{:?}", b.rendered.metric_sources));
    }
}
