//! Service types, services and role groups, and the health roll-up of a
//! service from its roles.

use serde_json::Value;

use super::roles::{RoleView, role_views};
use super::{Actor, DomainError, Permission, Result, Scope, load_cluster, load_context, load_service, validate_name};
use crate::AppState;
use crate::desired::{self, ServiceContext};
use crate::model::{now_millis, rfc3339};
use crate::store::{RevisionRec, ServiceRec};
pub use drover_api::services::{
    ParameterName, ParameterView, RoleGroup, RoleTypeName, RoleTypeView, RollingRestartView, ServiceHealth,
    ServiceTypeName, ServiceTypeView, ServiceView,
};
use drover_service_types::config::ConfigValues;
use drover_service_types::descriptor::ServiceType;
use drover_service_types::params::mask;

// ---------- service types ----------

fn type_view(t: &ServiceType, detail: bool) -> ServiceTypeView {
    ServiceTypeView {
        name: t.name.clone(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        version: t.version.clone(),
        requires: t.requires.clone(),
        role_types: t
            .role_types
            .iter()
            .map(|r| RoleTypeView {
                name: r.name.clone(),
                description: r.description.clone(),
                min_instances: r.min_instances,
                max_instances: r.max_instances,
                start_order: r.start_order,
            })
            .collect(),
        parameters: detail.then(|| {
            t.parameters
                .iter()
                .map(|p| ParameterView {
                    name: p.name.clone(),
                    kind_name: p.kind.name().to_owned(),
                    kind: serde_json::to_value(&p.kind).unwrap_or(Value::Null),
                    default: p.default.as_ref().map(|d| mask(p, d)),
                    description: p.description.clone(),
                    scope: serde_json::to_value(&p.scope).unwrap_or(Value::Null),
                    restart: p.restart,
                    sensitive: p.sensitive(),
                })
                .collect()
        }),
        rolling_restart: detail.then_some(RollingRestartView {
            batch_size: t.rolling_restart.batch_size,
            wait_for_healthy: t.rolling_restart.wait_for_healthy,
            healthy_timeout_seconds: t.rolling_restart.healthy_timeout.as_secs(),
        }),
    }
}

pub fn list_types(state: &AppState) -> Vec<ServiceTypeView> {
    state.catalog.iter().map(|t| type_view(t, false)).collect()
}

pub fn get_type(state: &AppState, name: &str) -> Result<ServiceTypeView> {
    let t = state.catalog.get(name).ok_or_else(|| DomainError::NotFound(format!("service type {name} not found")))?;
    Ok(type_view(t, true))
}

// ---------- services ----------

pub fn rollup(roles: &[RoleView]) -> ServiceHealth {
    use super::roles::{Health, RoleState, RunState};
    let wanted: Vec<&RoleView> = roles.iter().filter(|r| r.run_state == RunState::Running).collect();
    if wanted.is_empty() {
        return if roles.is_empty() { ServiceHealth::Good } else { ServiceHealth::Stopped };
    }
    let ok = wanted.iter().filter(|r| r.status == RoleState::Running && r.health != Health::Bad).count();
    if ok == wanted.len() {
        ServiceHealth::Good
    } else if ok == 0 {
        ServiceHealth::Bad
    } else {
        ServiceHealth::Concerning
    }
}

pub async fn service_view(state: &AppState, ctx: &ServiceContext) -> Result<ServiceView> {
    let roles = role_views(state, ctx).await?;
    Ok(ServiceView {
        cluster: ctx.service.cluster.clone(),
        name: ctx.service.name.clone(),
        service_type: ctx.service.service_type.clone(),
        revision: ctx.service.revision,
        created_at: rfc3339(ctx.service.created_at),
        created_by: ctx.service.created_by.clone(),
        health: rollup(&roles),
        roles,
    })
}

/// Creates a service of a type with the default configuration (revision 1).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    name: &str,
    service_type: &str,
) -> Result<ServiceView> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    load_cluster(state, cluster).await?;
    validate_name("service", name)?;
    let t = state.catalog.get(service_type).ok_or_else(|| {
        let known: Vec<&str> = state.catalog.iter().map(|t| t.name.as_str()).collect();
        DomainError::Invalid(format!("unknown service type {service_type:?}; known types: {}", known.join(", ")))
    })?;
    let existing = state.store.list_services(cluster).await?;
    for required in &t.requires {
        if !existing.iter().any(|s| &s.service_type == required) {
            return Err(DomainError::Conflict(format!(
                "service type {} requires a {required} service in cluster {cluster}; create that first",
                t.name
            )));
        }
    }
    let now = now_millis();
    let svc = ServiceRec {
        cluster: cluster.to_owned(),
        name: name.to_owned(),
        service_type: t.name.clone(),
        revision: 1,
        created_at: now,
        created_by: actor.username.clone(),
    };
    let first = RevisionRec {
        cluster: cluster.to_owned(),
        service: name.to_owned(),
        revision: 1,
        config: serde_json::to_value(ConfigValues::default()).map_err(|e| DomainError::Internal(e.to_string()))?,
        changed_keys: Vec::new(),
        author: actor.username.clone(),
        source: actor.source.clone(),
        message: "service created with default configuration".into(),
        created_at: now,
    };
    state.store.create_service(&svc, &first).await?;
    state
        .audit(granted.audit(
            "service.create",
            "service",
            &format!("{cluster}/{name}"),
            format!("created {} service", t.name),
        ))
        .await;
    let ctx = load_context(state, cluster, name).await?;
    service_view(state, &ctx).await
}

pub async fn list(state: &AppState, actor: &Actor, cluster: &str) -> Result<Vec<ServiceView>> {
    actor.require_read(cluster)?;
    load_cluster(state, cluster).await?;
    let mut items = Vec::new();
    for s in state.store.list_services(cluster).await? {
        let ctx = load_context(state, cluster, &s.name).await?;
        items.push(service_view(state, &ctx).await?);
    }
    Ok(items)
}

pub async fn get(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<ServiceView> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    service_view(state, &ctx).await
}

/// Deletes a service and its roles, unless another service needs it.
pub async fn delete(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<()> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    let svc = load_service(state, cluster, service).await?;
    for other in state.store.list_services(cluster).await? {
        if let Some(t) = state.catalog.get(&other.service_type)
            && t.requires.contains(&svc.service_type)
        {
            return Err(DomainError::Conflict(format!("service {} requires {service}; delete it first", other.name)));
        }
    }
    if let Some((other, parameter)) = desired::referrers(state, cluster, service).await?.into_iter().next() {
        return Err(DomainError::Conflict(format!(
            "service {other} refers to {service} (parameter {parameter}); change that first"
        )));
    }
    let hosts: Vec<String> =
        state.store.roles_of_service(cluster, service).await?.into_iter().map(|r| r.host_id).collect();
    state.store.delete_service(cluster, service).await?;
    state.desired.refresh_service(state, cluster, service, &hosts).await?;
    state
        .audit(granted.audit(
            "service.delete",
            "service",
            &format!("{cluster}/{service}"),
            "deleted service and its roles",
        ))
        .await;
    Ok(())
}

// ---------- role groups ----------

/// The default role group of a role type (CM-style, one per role type).
/// Group overrides are keyed by group name, so the role type is part of it.
pub fn default_group(role_type: &str) -> String {
    format!("{role_type}-default")
}

pub async fn list_groups(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<Vec<RoleGroup>> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let named = state.store.role_groups(cluster, service).await?;
    let mut items: Vec<RoleGroup> = ctx
        .service_type
        .role_types
        .iter()
        .map(|r| RoleGroup { role_type: r.name.clone(), name: default_group(&r.name) })
        .collect();
    items.extend(named.into_iter().map(|(role_type, name)| RoleGroup { role_type, name }));
    Ok(items)
}

pub async fn create_group(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    role_type: &str,
    name: &str,
) -> Result<RoleGroup> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    let ctx = load_context(state, cluster, service).await?;
    if ctx.service_type.role_type(role_type).is_none() {
        return Err(DomainError::Unsuitable(format!(
            "service type {} has no role type {role_type:?}",
            ctx.service_type.name
        )));
    }
    validate_name("role group", name)?;
    // Group overrides are keyed by group name, so names are unique per service.
    let taken = state.store.role_groups(cluster, service).await?.into_iter().any(|(_, g)| g == name);
    let is_default = ctx.service_type.role_types.iter().any(|r| default_group(&r.name) == name);
    if is_default || taken {
        return Err(DomainError::Conflict(format!("role group {name} already exists in service {service}")));
    }
    state.store.create_role_group(cluster, service, role_type, name, now_millis()).await?;
    state
        .audit(granted.audit(
            "role_group.create",
            "service",
            &format!("{cluster}/{service}"),
            format!("created role group {name} for {role_type}"),
        ))
        .await;
    Ok(RoleGroup { role_type: role_type.to_owned(), name: name.to_owned() })
}

pub(crate) async fn group_exists(
    state: &AppState,
    cluster: &str,
    service: &str,
    role_type: &str,
    group: &str,
) -> Result<bool> {
    Ok(group == default_group(role_type)
        || state.store.role_groups(cluster, service).await?.iter().any(|(rt, g)| rt == role_type && g == group))
}

// ---------- a new service checked before anything is created ----------

/// A service to create with its roles and service-level configuration, as
/// the console's add-service wizard gathers it over several steps. Nothing
/// of it exists until it is created.
#[derive(Debug, Clone, Default)]
pub struct NewServicePlan {
    pub name: String,
    pub service_type: String,
    /// One role per `(role type, host id)`; `None`: placement not checked.
    pub roles: Option<Vec<(String, String)>>,
    /// Service-level values as typed (text is fine: it is normalised);
    /// `None`: configuration not checked.
    pub values: Option<std::collections::BTreeMap<String, Value>>,
}

/// What [`check_plan`] found wrong, by field, and the values to store.
#[derive(Debug, Clone, Default)]
pub struct PlanProblems {
    pub name: Option<String>,
    pub service_type: Option<String>,
    /// By role type; `""` for the placement as a whole (hosts, ports).
    pub roles: std::collections::BTreeMap<String, String>,
    /// By parameter; `""` for the configuration as a whole.
    pub values: std::collections::BTreeMap<String, String>,
    /// The values normalised as they would be stored, without those equal
    /// to their parameter's default.
    pub normalised: std::collections::BTreeMap<String, Value>,
}

impl PlanProblems {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.service_type.is_none() && self.roles.is_empty() && self.values.is_empty()
    }
}

/// Checks a new service, its roles and its configuration the way
/// [`create`], [`super::roles::create`] and [`super::config::patch`] will,
/// before any of them runs: name, type and the services it requires; each
/// role type's minimum and maximum instance count (which `roles::create`
/// alone does not hold a new service to), the hosts, port clashes on them;
/// every value against its parameter and required parameters without a
/// default. Stores nothing.
pub async fn check_plan(state: &AppState, actor: &Actor, cluster: &str, plan: &NewServicePlan) -> Result<PlanProblems> {
    actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    use drover_service_types::config::{Level, validate_patch};
    load_cluster(state, cluster).await?;
    let mut out = PlanProblems::default();
    if let Err(e) = validate_name("service", &plan.name) {
        out.name = Some(e.to_string());
    } else if state.store.service(cluster, &plan.name).await?.is_some() {
        out.name = Some(format!("service {} already exists in cluster {cluster}; choose another name", plan.name));
    }
    let Some(t) = state.catalog.get(&plan.service_type) else {
        let known: Vec<&str> = state.catalog.iter().map(|t| t.name.as_str()).collect();
        out.service_type =
            Some(format!("unknown service type {:?}; known types: {}", plan.service_type, known.join(", ")));
        return Ok(out);
    };
    let existing = state.store.list_services(cluster).await?;
    let missing: Vec<&String> = t.requires.iter().filter(|r| !existing.iter().any(|s| &s.service_type == *r)).collect();
    if !missing.is_empty() {
        out.service_type = Some(format!(
            "service type {} requires a {} service in cluster {cluster}; create that first",
            t.name,
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" and a ")
        ));
    }
    let mut values = ConfigValues::default();
    if let Some(given) = &plan.values {
        match validate_patch(t, &Level::Service, given) {
            Ok(normalised) => {
                for (k, v) in normalised {
                    let default = t.parameter(&k).and_then(|p| p.default.as_ref());
                    if !v.is_null() && default != Some(&v) {
                        out.normalised.insert(k, v);
                    }
                }
            }
            Err(errors) => {
                for e in errors {
                    out.values.insert(e.parameter.clone(), e.message.clone());
                }
            }
        }
        for p in &t.parameters {
            if p.required
                && p.default.is_none()
                && !out.normalised.contains_key(&p.name)
                && !out.values.contains_key(&p.name)
            {
                out.values.insert(p.name.clone(), "is required and has no default: give a value".into());
            }
        }
        values.service = out.normalised.clone();
    }
    if let Some(roles) = &plan.roles {
        for (rt, _) in roles {
            if t.role_type(rt).is_none() {
                out.roles.insert(String::new(), format!("service type {} has no role type {rt:?}", t.name));
            }
        }
        for rt in &t.role_types {
            let n = roles.iter().filter(|(r, _)| r == &rt.name).count() as u32;
            let range = match rt.max_instances {
                Some(max) if max == rt.min_instances => format!("exactly {max}"),
                Some(max) => format!("{} to {max}", rt.min_instances),
                None => format!("at least {}", rt.min_instances),
            };
            if n < rt.min_instances || rt.max_instances.is_some_and(|max| n > max) {
                out.roles.insert(rt.name.clone(), format!("role type {} takes {range} role(s); {n} placed", rt.name));
            }
        }
        let ids: Vec<String> = roles.iter().map(|(_, h)| h.clone()).collect();
        let hosts = state.store.host_addresses(&ids).await?;
        for (rt, h) in roles {
            if !hosts.contains_key(h) {
                out.roles.insert(rt.clone(), format!("host {h} not found"));
            } else if state.registry.host_status(h) == Some(crate::model::HostStatus::Decommissioned) {
                out.roles.insert(rt.clone(), format!("host {} ({h}) is decommissioned", hosts[h].0));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (rt, h) in roles {
            if !seen.insert((rt, h)) {
                out.roles.insert(rt.clone(), format!("host {h} is chosen twice for role type {rt}"));
            }
        }
        if out.roles.is_empty() && out.values.is_empty() {
            let now = now_millis();
            let recs: Vec<crate::store::RoleRec> = roles
                .iter()
                .enumerate()
                .map(|(i, (rt, h))| crate::store::RoleRec {
                    id: format!("planned-{i}"),
                    cluster: cluster.to_owned(),
                    service: plan.name.clone(),
                    name: format!("{rt} on {}", hosts.get(h).map(|x| x.0.as_str()).unwrap_or(h)),
                    role_type: rt.clone(),
                    group: default_group(rt),
                    host_id: h.clone(),
                    index: 0,
                    run_state: "stopped".into(),
                    restart_nonce: 0,
                    created_at: now,
                })
                .collect();
            if let Err(e) = super::roles::check_ports(state, cluster, &plan.name, t, &values, &recs).await {
                match e {
                    DomainError::Conflict(m) => {
                        out.roles.insert(String::new(), m);
                    }
                    other => return Err(other),
                }
            }
        }
    }
    Ok(out)
}

// ---------- what a service needs and what needs it ----------

/// The services a service depends on and those that depend on it.
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    /// Required service types, with the cluster's service of that type.
    pub requires: Vec<(String, Option<String>)>,
    /// Services whose type requires this service's type.
    pub required_by: Vec<String>,
    /// `(parameter, service)` this service's configuration refers to.
    pub refers_to: Vec<(String, String)>,
    /// `(service, parameter)` whose configuration refers to this service.
    pub referred_by: Vec<(String, String)>,
}

pub async fn dependencies(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<Dependencies> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let others = state.store.list_services(cluster).await?;
    let requires = ctx
        .service_type
        .requires
        .iter()
        .map(|t| (t.clone(), others.iter().find(|s| &s.service_type == t).map(|s| s.name.clone())))
        .collect();
    let required_by = others
        .iter()
        .filter(|o| o.name != service)
        .filter(|o| state.catalog.get(&o.service_type).is_some_and(|t| t.requires.contains(&ctx.service.service_type)))
        .map(|o| o.name.clone())
        .collect();
    let refers_to = drover_service_types::config::service_refs(&ctx.service_type, &ctx.values)
        .into_iter()
        .map(|r| (r.parameter, r.service))
        .collect();
    let referred_by = desired::referrers(state, cluster, service).await?;
    Ok(Dependencies { requires, required_by, refers_to, referred_by })
}

/// The parcel a service runs from, as its upgrade and rollback see it.
#[derive(Debug, Clone, Default)]
pub struct ServiceParcel {
    pub name: String,
    /// The version active in the cluster.
    pub active: Option<String>,
    /// Versions distributed to the cluster (active one included).
    pub distributed: Vec<String>,
    /// Versions the repositories offer (local and followed remote ones).
    pub available: Vec<String>,
}

/// `None` when the service's type runs from no parcel.
pub async fn parcel(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<Option<ServiceParcel>> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let Some(name) = ctx.service_type.parcels.first().cloned() else { return Ok(None) };
    let wanted = state.store.cluster_parcels(Some(cluster)).await?;
    let active = wanted.iter().find(|w| w.name == name && w.target == "active").map(|w| w.version.clone());
    let distributed = wanted.iter().filter(|w| w.name == name).map(|w| w.version.clone()).collect();
    let mut available: Vec<String> =
        state.parcels.list().into_iter().filter(|k| k.parcel.name == name).map(|k| k.parcel.version).collect();
    available.sort();
    available.dedup();
    Ok(Some(ServiceParcel { name, active, distributed, available }))
}
