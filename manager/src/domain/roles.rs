//! Roles: what each role is doing (its view, with staleness), placing new
//! roles on hosts (by id or label selector), removing them, and the rule that
//! no two roles on one host listen on the same port.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::services::default_group;
use super::{Actor, DomainError, Permission, Result, Scope, load_context, validate_name};
use crate::AppState;
use crate::desired::{self, DesiredRole, ServiceContext};
use crate::model::{HostStatus, UnixMillis, now_millis, rfc3339};
use crate::placement::{Candidate, Placement};
use crate::store::{RoleRec, RoleStatusRec};
pub use drover_api::roles::{Health, MAX_COUNT, MAX_ROLES_PER_REQUEST, NewRole, RoleState, RoleView, RunState};
use drover_service_types::config::{self, ConfigValues};
use drover_service_types::descriptor::{RoleType, ServiceType};
use drover_service_types::params::ParamKind;

/// Decides staleness: the role runs a revision older than the current one
/// and some parameter that needs a restart changed since.
pub fn staleness(
    st: &ServiceType,
    role: &RoleRec,
    status: Option<&RoleStatusRec>,
    current: u64,
    values: &HashMap<u64, ConfigValues>,
) -> (bool, Vec<String>) {
    let Some(s) = status else { return (false, Vec::new()) };
    if s.state != "running" || s.running_revision == 0 || s.running_revision >= current {
        return (false, Vec::new());
    }
    match (values.get(&s.running_revision), values.get(&current)) {
        (Some(old), Some(new)) => {
            let (keys, restart) = config::changed_keys(st, old, new, &role.role_type, &role.group, &role.id);
            let restart_keys: Vec<String> =
                keys.into_iter().filter(|k| st.parameter(k).is_some_and(|p| p.restart)).collect();
            (restart, restart_keys)
        }
        _ => (false, Vec::new()),
    }
}

/// Values of every revision the roles run, plus the current one.
async fn values_by_revision(
    state: &AppState,
    ctx: &ServiceContext,
    statuses: &[Option<RoleStatusRec>],
) -> Result<HashMap<u64, ConfigValues>> {
    let mut out = HashMap::new();
    out.insert(ctx.service.revision, ctx.values.clone());
    for s in statuses.iter().flatten() {
        if s.running_revision > 0
            && !out.contains_key(&s.running_revision)
            && let Ok(v) = desired::revision_values(state, &ctx.service, s.running_revision).await
        {
            out.insert(s.running_revision, v);
        }
    }
    Ok(out)
}

/// Files of a role whose rendering differs between an old revision's values
/// (with today's topology) and the current ones.
async fn changed_files(
    state: &AppState,
    ctx: &ServiceContext,
    old: &ConfigValues,
    role_id: &str,
    cache: &mut HashMap<u64, HashMap<String, DesiredRole>>,
    current: &mut Option<HashMap<String, DesiredRole>>,
    revision: u64,
) -> Result<Vec<String>> {
    let by_id = |roles: Vec<DesiredRole>| roles.into_iter().map(|d| (d.role_id.clone(), d)).collect();
    if let std::collections::hash_map::Entry::Vacant(slot) = cache.entry(revision) {
        let rendered =
            desired::load_with_values(state, ctx.service.clone(), old.clone()).await?.render_all().unwrap_or_default();
        slot.insert(by_id(rendered));
    }
    let Some(before) = cache[&revision].get(role_id) else { return Ok(Vec::new()) };
    if current.is_none() {
        // A render that fails says nothing about staleness; a view must not
        // fail for it.
        *current = Some(by_id(ctx.render_all().unwrap_or_default()));
    }
    let Some(after) = current.as_ref().and_then(|c| c.get(role_id)) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for f in &after.rendered.files {
        let same = before.rendered.files.iter().any(|b| b.path == f.path && b.sha256 == f.sha256);
        if !same {
            out.push(f.path.clone());
        }
    }
    Ok(out)
}

/// Why a role's last report cannot be trusted, when its host is not healthy:
/// the message a role view shows as `last_error`.
fn host_down(liveness: Option<(HostStatus, UnixMillis)>, hostname: &str, host_id: &str) -> Option<String> {
    let host = if hostname.is_empty() { host_id.to_owned() } else { format!("{hostname} ({host_id})") };
    match liveness {
        Some((HostStatus::Healthy, _)) => None,
        Some((HostStatus::Lost, 0)) => Some(format!("host {host} is lost: no heartbeat received from its agent")),
        Some((HostStatus::Lost, last)) => Some(format!("host {host} is lost: no heartbeat since {}", rfc3339(last))),
        Some((HostStatus::Decommissioned, _)) => Some(format!("host {host} is decommissioned")),
        None => Some(format!("host {host} is unknown to this manager")),
    }
}

/// Every role of a service as users see it: intent, the agent's last report
/// (live, or stored when the agent has not reported since the manager
/// started), health, revisions and staleness.
pub async fn role_views(state: &AppState, ctx: &ServiceContext) -> Result<Vec<RoleView>> {
    let stored = state.store.role_statuses(&ctx.service.cluster, &ctx.service.name).await?;
    let statuses: Vec<Option<RoleStatusRec>> =
        ctx.roles().iter().map(|r| state.registry.role_status(&r.id).or_else(|| stored.get(&r.id).cloned())).collect();
    let values = values_by_revision(state, ctx, &statuses).await?;
    let mut rendered_cache: HashMap<u64, HashMap<String, DesiredRole>> = HashMap::new();
    let mut current: Option<HashMap<String, DesiredRole>> = None;
    let hostnames: HashMap<&str, &str> =
        ctx.topology.roles.iter().map(|i| (i.role_id.as_str(), i.hostname.as_str())).collect();
    let mut out = Vec::new();
    for (r, s) in ctx.roles().iter().zip(&statuses) {
        let (mut stale, mut stale_keys) = staleness(&ctx.service_type, r, s.as_ref(), ctx.service.revision, &values);
        if !stale
            && stale_keys.is_empty()
            && let Some(s) = s
            && s.state == "running"
            && s.running_revision > 0
            && s.running_revision < ctx.service.revision
            && let Some(old) = values.get(&s.running_revision)
        {
            // None of the role's own parameters changed, yet its files may have:
            // a peer's port or the topology did (e.g. zoo.cfg's server list).
            let (own, _) = config::changed_keys(&ctx.service_type, old, &ctx.values, &r.role_type, &r.group, &r.id);
            if own.is_empty() {
                let files =
                    changed_files(state, ctx, old, &r.id, &mut rendered_cache, &mut current, s.running_revision)
                        .await?;
                if !files.is_empty() {
                    stale = true;
                    stale_keys = files.into_iter().map(|f| format!("file:{f}")).collect();
                }
            }
        }
        // Files re-rendered because a peer moved or a referenced service
        // changed, while the process still runs with the old ones.
        if !stale
            && let Some(s) = s
            && s.state == "running"
            && let Some(reason) = state.desired.rerendered_since(&r.id, s.started_at)
        {
            stale = true;
            stale_keys = reason;
        }
        let hostname = hostnames.get(r.id.as_str()).map(|h| (*h).to_owned()).unwrap_or_default();
        // A role on a lost or decommissioned host is not known to be running:
        // its status is unknown, its health bad, and last_error says why.
        let host_down = host_down(state.registry.host_liveness(&r.host_id), &hostname, &r.host_id);
        let status = match s {
            Some(s) if host_down.is_none() => RoleState::parse(&s.state),
            _ => RoleState::Unknown,
        };
        let health = match (&host_down, s) {
            (Some(_), _) => Health::Bad,
            (None, Some(s)) => Health::parse(&s.health),
            (None, None) => Health::Unknown,
        };
        let last_error = match host_down {
            Some(why) => why,
            None => s.as_ref().map(|s| s.last_error.clone()).unwrap_or_default(),
        };
        out.push(RoleView {
            id: r.id.clone(),
            name: r.name.clone(),
            role_type: r.role_type.clone(),
            group: r.group.clone(),
            host_id: r.host_id.clone(),
            hostname,
            run_state: RunState::parse(&r.run_state),
            status,
            health,
            pid: s.as_ref().filter(|s| s.pid > 0).map(|s| s.pid),
            restart_count: s.as_ref().map(|s| s.restart_count).unwrap_or(0),
            reload_count: s.as_ref().map(|s| s.reload_count).unwrap_or(0),
            last_reload_at: s.as_ref().and_then(|s| s.reloaded_at).map(rfc3339),
            applied_revision: s.as_ref().map(|s| s.applied_revision).filter(|r| *r > 0),
            running_revision: s.as_ref().map(|s| s.running_revision).filter(|r| *r > 0),
            stale,
            stale_keys,
            last_error,
            last_log_lines: s.as_ref().map(|s| s.last_log_lines.clone()).unwrap_or_default(),
            updated_at: s.as_ref().map(|s| rfc3339(s.updated_at)),
            log: log_view(ctx, &r.role_type),
        });
    }
    Ok(out)
}

fn log_view(ctx: &ServiceContext, role_type: &str) -> drover_api::roles::RoleLogView {
    let spec = ctx.service_type.role_type(role_type).map(|rt| rt.log.clone()).unwrap_or_default();
    drover_api::roles::RoleLogView {
        max_bytes: spec.max_bytes,
        max_files: spec.max_files,
        format: spec.format.map(|f| f.name),
    }
}

pub async fn list(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<Vec<RoleView>> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    role_views(state, &ctx).await
}

pub(crate) fn find_role<'a>(ctx: &'a ServiceContext, role: &str) -> Result<&'a RoleRec> {
    ctx.roles()
        .iter()
        .find(|r| r.id == role || r.name == role)
        .ok_or_else(|| DomainError::NotFound(format!("role {role} not found in service {}", ctx.service.name)))
}

pub async fn get(state: &AppState, actor: &Actor, cluster: &str, service: &str, role: &str) -> Result<RoleView> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let id = find_role(&ctx, role)?.id.clone();
    let view = role_views(state, &ctx).await?.into_iter().find(|v| v.id == id);
    view.ok_or_else(|| DomainError::NotFound(format!("role {role} not found")))
}

fn role_type_of<'a>(ctx: &'a ServiceContext, role_type: &str, which: &str) -> Result<&'a RoleType> {
    ctx.service_type.role_type(role_type).ok_or_else(|| {
        let known: Vec<&str> = ctx.service_type.role_types.iter().map(|r| r.name.as_str()).collect();
        DomainError::Unsuitable(format!(
            "{which}service type {} has no role type {role_type:?}; role types: {}",
            ctx.service_type.name,
            known.join(", ")
        ))
    })
}

/// A role request with its host decided: given, or picked by selector.
#[derive(Debug)]
struct PlacedRole {
    /// `role N: ` in a bulk request (N counts request entries), else empty.
    which: String,
    role_type: String,
    host_id: String,
    group: Option<String>,
    name: Option<String>,
}

/// The name of the `n`th role of a type when the request names none:
/// `<service>-<role type>-<n>`, a valid role name for any service and role
/// type (`_` in a role type becomes `-`, and a long service name is cut).
fn default_name(service: &str, role_type: &str, n: u32) -> String {
    let suffix = format!("-{}-{n}", role_type.replace('_', "-"));
    let keep = 63usize.saturating_sub(suffix.chars().count()).max(1);
    service.chars().take(keep).chain(suffix.chars()).take(63).collect()
}

/// Adds roles in one step: places them (by id or selector), checks instance
/// counts, hosts, groups, names and ports, stores them, renders the service
/// (a role that cannot be rendered is not kept) and pushes the result.
/// Nothing is stored when a check fails. `single` asks for one role placed by
/// one request (the answer is then one role).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    requests: Vec<NewRole>,
    single: bool,
) -> Result<Vec<RoleView>> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    if requests.is_empty() {
        return Err(DomainError::Invalid("no roles to add".into()));
    }
    if requests.len() > MAX_ROLES_PER_REQUEST {
        return Err(DomainError::Invalid(format!(
            "at most {MAX_ROLES_PER_REQUEST} roles per request, got {}",
            requests.len()
        )));
    }
    // Under the service's lock from reading it to publishing: the render that
    // checks the new roles is the one pushed, and nothing else of the
    // service can slip in between.
    let guard = state.desired.lock_service(cluster, service).await;
    let ctx = load_context(state, cluster, service).await?;
    let requests = place_by_selector(state, &ctx, requests, single).await?;
    let host_ids: Vec<String> = requests.iter().map(|r| r.host_id.clone()).collect();
    let hosts = state.store.host_addresses(&host_ids).await?;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut next: HashMap<String, u32> = HashMap::new();
    for r in ctx.roles() {
        *counts.entry(r.role_type.clone()).or_default() += 1;
        let n = next.entry(r.role_type.clone()).or_default();
        *n = (*n).max(r.index + 1);
    }
    let groups = state.store.role_groups(cluster, service).await?;
    let mut names: HashSet<String> = ctx.roles().iter().map(|r| r.name.clone()).collect();
    let mut new_roles = Vec::with_capacity(requests.len());
    for req in &requests {
        let which = &req.which;
        let rt = role_type_of(&ctx, &req.role_type, which)?;
        let count = counts.entry(rt.name.clone()).or_default();
        if let Some(max) = rt.max_instances
            && *count >= max
        {
            return Err(DomainError::Conflict(format!(
                "{which}role type {} allows at most {max} instances and service {service} already has {count}",
                rt.name
            )));
        }
        *count += 1;
        if !hosts.contains_key(&req.host_id) {
            return Err(DomainError::NotFound(format!("{which}host {} not found", req.host_id)));
        }
        if state.registry.host_status(&req.host_id) == Some(HostStatus::Decommissioned) {
            let hostname = &hosts[&req.host_id].0;
            return Err(DomainError::Conflict(format!("{which}host {} ({hostname}) is decommissioned", req.host_id)));
        }
        let group = req.group.clone().unwrap_or_else(|| default_group(&rt.name));
        let known_group = group == default_group(&rt.name) || groups.iter().any(|(t, g)| *t == rt.name && *g == group);
        if !known_group {
            return Err(DomainError::NotFound(format!(
                "{which}role type {} of service {service} has no role group {group:?}",
                rt.name
            )));
        }
        let n = next.entry(rt.name.clone()).or_default();
        *n += 1;
        let name = req.name.clone().unwrap_or_else(|| default_name(service, &rt.name, *n));
        validate_name("role", &name)?;
        if !names.insert(name.clone()) {
            return Err(DomainError::Conflict(format!("{which}role {name:?} already exists in service {service}")));
        }
        new_roles.push(RoleRec {
            id: uuid::Uuid::new_v4().to_string(),
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            name,
            role_type: rt.name.clone(),
            group,
            host_id: req.host_id.clone(),
            index: 0,
            run_state: RunState::Stopped.as_str().into(),
            restart_nonce: 0,
            created_at: now_millis(),
        });
    }
    let all = ctx.roles().iter().chain(&new_roles);
    check_ports(state, &ctx.service.cluster, &ctx.service.name, &ctx.service_type, &ctx.values, all).await?;
    let created = state.store.insert_roles(&new_roles).await?;
    // A host running a role of the cluster is a host of the cluster.
    let mut role_hosts: Vec<String> = created.iter().map(|r| r.host_id.clone()).collect();
    role_hosts.sort();
    role_hosts.dedup();
    state.store.add_cluster_hosts(cluster, &role_hosts, now_millis()).await?;
    // Roles whose files cannot be rendered must not stay.
    let rendered = match desired::load_service(state, cluster, service).await {
        Ok(Some(c)) => c.render_all_blocking().await.map(|(_, r)| Some(r)),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let rendered = match rendered {
        Ok(r) => r,
        Err(e) => {
            for r in &created {
                state.store.delete_role(&r.id).await?;
            }
            return Err(e.into());
        }
    };
    state.desired.publish(state, guard, &[], rendered).await?;
    state.desired.refresh_parcels(state).await?;
    let audits: Vec<_> = created
        .iter()
        .map(|role| {
            let hostname = hosts.get(&role.host_id).map(|h| h.0.as_str()).unwrap_or_default();
            granted.audit(
                "role.create",
                "role",
                &role.id,
                format!(
                    "added {} role {} on host {hostname} ({}) in {cluster}/{service}",
                    role.role_type, role.name, role.host_id
                ),
            )
        })
        .collect();
    state.audit_many(audits).await;
    let ctx = load_context(state, cluster, service).await?;
    let ids: HashSet<&str> = created.iter().map(|r| r.id.as_str()).collect();
    Ok(role_views(state, &ctx).await?.into_iter().filter(|v| ids.contains(v.id.as_str())).collect())
}

/// Turns role requests into one placed role per host: `host_id` requests as
/// they are, `host_selector` requests onto hosts picked by
/// [`crate::placement`]. Nothing is stored here.
async fn place_by_selector(
    state: &AppState,
    ctx: &ServiceContext,
    requests: Vec<NewRole>,
    single: bool,
) -> Result<Vec<PlacedRole>> {
    let mut placement: Option<Placement> = None;
    let mut out: Vec<PlacedRole> = Vec::with_capacity(requests.len());
    for (i, req) in requests.into_iter().enumerate() {
        let which = if single { String::new() } else { format!("role {}: ", i + 1) };
        match (req.host_id, req.host_selector) {
            (Some(_), Some(_)) => {
                return Err(DomainError::Invalid(format!("{which}give either host_id or host_selector, not both")));
            }
            (None, None) => {
                return Err(DomainError::Invalid(format!(
                    "{which}host_id or host_selector is required: the host to run on, or a label selector such as zk=true"
                )));
            }
            (Some(host_id), None) => {
                if req.count.is_some() {
                    return Err(DomainError::Invalid(format!(
                        "{which}count needs host_selector; with host_id, one role is placed"
                    )));
                }
                if let Some(p) = placement.as_mut() {
                    p.record(&host_id);
                }
                out.push(PlacedRole { which, role_type: req.role_type, host_id, group: req.group, name: req.name });
            }
            (None, Some(sel)) => {
                let count = req.count.unwrap_or(1);
                if !(1..=MAX_COUNT).contains(&count) {
                    return Err(DomainError::Invalid(format!(
                        "{which}count must be between 1 and {MAX_COUNT}, got {count}"
                    )));
                }
                if count > 1 && req.name.is_some() {
                    return Err(DomainError::Invalid(format!(
                        "{which}name can only be given for one role; leave it out with count {count}"
                    )));
                }
                role_type_of(ctx, &req.role_type, &which)?;
                let selector = drover_proto::labels::parse_selector(&sel)
                    .map_err(|e| DomainError::Invalid(format!("{which}{e}")))?;
                let p = match placement.as_mut() {
                    Some(p) => p,
                    None => {
                        let mut p = candidates(state, ctx).await?;
                        // Hosts given by id earlier in this body count too.
                        for earlier in &out {
                            p.record(&earlier.host_id);
                        }
                        placement.insert(p)
                    }
                };
                let picked = p.pick(&selector, count as usize).map_err(|e| {
                    DomainError::Conflict(format!("{which}role type {} {}", req.role_type, e.describe()))
                })?;
                for host_id in picked {
                    out.push(PlacedRole {
                        which: which.clone(),
                        role_type: req.role_type.clone(),
                        host_id,
                        group: req.group.clone(),
                        name: req.name.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Every host with its live status, labels and role counts, for placement.
async fn candidates(state: &AppState, ctx: &ServiceContext) -> Result<Placement> {
    let mut of_service: HashMap<&str, u32> = HashMap::new();
    for r in ctx.roles() {
        *of_service.entry(r.host_id.as_str()).or_default() += 1;
    }
    candidates_among(state, state.store.all_hosts().await?, &of_service).await
}

/// `hosts` with their live status, labels and role counts, for placement.
async fn candidates_among(
    state: &AppState,
    hosts: Vec<crate::model::Host>,
    of_service: &HashMap<&str, u32>,
) -> Result<Placement> {
    let totals = state.store.role_counts_by_host().await?;
    Ok(Placement::new(
        hosts
            .into_iter()
            .map(|h| Candidate {
                status: state.registry.host_status(&h.id).unwrap_or(h.status),
                service_roles: of_service.get(h.id.as_str()).copied().unwrap_or_default(),
                total_roles: totals.get(&h.id).copied().unwrap_or_default(),
                id: h.id,
                hostname: h.hostname,
                labels: h.labels,
            })
            .collect(),
    ))
}

/// Roles of one type of a service not created yet, placed by label
/// selector: `count` of them on hosts matching `selector` (empty: any host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorPlacement {
    pub role_type: String,
    pub selector: String,
    pub count: u32,
}

/// Where [`place_new_service`] puts the roles, and what it cannot place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewServicePlacement {
    /// `(role type, host id)`: the hosts chosen by id, then those picked by
    /// each selector in order.
    pub roles: Vec<(String, String)>,
    /// Why a role type's selector placed nothing, by role type; `""` for the
    /// placement as a whole.
    pub problems: BTreeMap<String, String>,
}

/// Places the roles of a service of type `service_type` not created yet in
/// `cluster` the way [`create`] places `host_selector` requests (rules in
/// [`crate::placement`]), among the cluster's hosts only: the hosts chosen
/// by id first (they count for the spread), then each selector in order. A
/// role type is placed by chosen hosts or by one selector, not both.
/// Instance counts are left to [`super::services::check_plan`]. Stores
/// nothing: the same inventory gives the same hosts.
pub async fn place_new_service(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service_type: &str,
    chosen: &[(String, String)],
    by_selector: &[SelectorPlacement],
) -> Result<NewServicePlacement> {
    actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    let mut out = NewServicePlacement { roles: chosen.to_vec(), ..Default::default() };
    if by_selector.is_empty() {
        return Ok(out);
    }
    let st = state
        .catalog
        .get(service_type)
        .ok_or_else(|| DomainError::Unsuitable(format!("unknown service type {service_type:?}")))?;
    let hosts = super::clusters::member_hosts(state, actor, cluster).await?;
    let mut placement = candidates_among(state, hosts, &HashMap::new()).await?;
    for (_, host_id) in chosen {
        placement.record(host_id);
    }
    let mut seen = HashSet::new();
    for want in by_selector {
        let rt = &want.role_type;
        let problem = if st.role_type(rt).is_none() {
            out.problems.insert(String::new(), format!("service type {} has no role type {rt:?}", st.name));
            continue;
        } else if !seen.insert(rt.as_str()) {
            Some(format!("role type {rt} takes one label selector"))
        } else if chosen.iter().any(|(t, _)| t == rt) {
            Some(format!("role type {rt}: tick hosts or give a label selector, not both"))
        } else if !(1..=MAX_COUNT).contains(&want.count) {
            Some(format!("role type {rt}: the count must be between 1 and {MAX_COUNT}, got {}", want.count))
        } else {
            match drover_proto::labels::parse_selector(&want.selector) {
                Err(e) => Some(format!("role type {rt}: {e}")),
                Ok(selector) => match placement.pick(&selector, want.count as usize) {
                    Ok(picked) => {
                        out.roles.extend(picked.into_iter().map(|h| (rt.clone(), h)));
                        None
                    }
                    Err(e) => Some(format!("role type {rt} {}; only hosts of cluster {cluster} count", e.describe())),
                },
            }
        };
        if let Some(p) = problem {
            out.problems.insert(rt.clone(), p);
        }
    }
    Ok(out)
}

/// Removes a role, unless its type would fall below its minimum count.
pub async fn delete(state: &AppState, actor: &Actor, cluster: &str, service: &str, role: &str) -> Result<()> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Cluster(cluster))?;
    let ctx = load_context(state, cluster, service).await?;
    let r = find_role(&ctx, role)?.clone();
    let rt = ctx.service_type.role_type(&r.role_type);
    let count = ctx.roles().iter().filter(|x| x.role_type == r.role_type).count() as u32;
    if let Some(rt) = rt
        && count <= rt.min_instances
    {
        return Err(DomainError::Conflict(format!(
            "role type {} needs at least {} instances; service {service} would be left with {}",
            rt.name,
            rt.min_instances,
            count - 1
        )));
    }
    state.store.delete_role(&r.id).await?;
    state.desired.refresh_service(state, cluster, service, std::slice::from_ref(&r.host_id)).await?;
    state
        .audit(granted.audit("role.delete", "role", &r.id, format!("removed role {} from {cluster}/{service}", r.name)))
        .await;
    Ok(())
}

// ---------- ports ----------

/// A role's listening ports: `(parameter, port)`, from the effective values
/// of every `port` parameter that applies to its role type.
pub(crate) fn role_ports(st: &ServiceType, values: &ConfigValues, role: &RoleRec) -> Vec<(String, u64)> {
    if !st.parameters.iter().any(|p| matches!(p.kind, ParamKind::Port)) {
        return Vec::new();
    }
    config::effective(st, values, &role.role_type, &role.group, &role.id)
        .into_iter()
        .filter(|(k, _)| st.parameter(k).is_some_and(|p| matches!(p.kind, ParamKind::Port)))
        .filter_map(|(k, e)| e.value.as_u64().map(|port| (k, port)))
        .collect()
}

/// One listener: which role of which service, by which parameter.
#[derive(Debug, Clone)]
struct Listener {
    service: String,
    role: String,
    parameter: String,
}

/// Refuses a set of roles of `cluster/service` (with the values they would
/// have) when two roles on one host would listen on the same port: among
/// these roles, or against the roles of every other service on the same hosts
/// (at their current revision). The error names both roles, the port and
/// the host. Clashes between two other services are not this change's doing
/// and are not reported.
pub(crate) async fn check_ports(
    state: &AppState,
    cluster: &str,
    service: &str,
    st: &ServiceType,
    values: &ConfigValues,
    roles: impl IntoIterator<Item = &RoleRec>,
) -> Result<()> {
    let key = format!("{cluster}/{service}");
    // (host, port) -> listeners of this service.
    let mut ours: BTreeMap<(String, u64), Vec<Listener>> = BTreeMap::new();
    for r in roles {
        for (parameter, port) in role_ports(st, values, r) {
            let l = Listener { service: key.clone(), role: r.name.clone(), parameter };
            ours.entry((r.host_id.clone(), port)).or_default().push(l);
        }
    }
    if ours.is_empty() {
        return Ok(());
    }
    let hosts: HashSet<&str> = ours.keys().map(|(h, _)| h.as_str()).collect();
    let mut clashes: Vec<(String, u64, Listener, Listener)> = Vec::new();
    for ((host, port), ls) in &ours {
        for pair in ls.windows(2) {
            clashes.push((host.clone(), *port, pair[0].clone(), pair[1].clone()));
        }
    }
    for other in state.store.all_services().await? {
        if other.cluster == cluster && other.name == service {
            continue;
        }
        let Some(ot) = state.catalog.get(&other.service_type) else { continue };
        if !ot.parameters.iter().any(|p| matches!(p.kind, ParamKind::Port)) {
            continue;
        }
        let other_roles = state.store.roles_of_service(&other.cluster, &other.name).await?;
        let on_ours: Vec<&RoleRec> = other_roles.iter().filter(|r| hosts.contains(r.host_id.as_str())).collect();
        if on_ours.is_empty() {
            continue;
        }
        let other_values = desired::revision_values(state, &other, other.revision).await?;
        for r in on_ours {
            for (parameter, port) in role_ports(ot, &other_values, r) {
                if let Some(ls) = ours.get(&(r.host_id.clone(), port)) {
                    let theirs = Listener {
                        service: format!("{}/{}", other.cluster, other.name),
                        role: r.name.clone(),
                        parameter: parameter.clone(),
                    };
                    clashes.push((r.host_id.clone(), port, ls[0].clone(), theirs));
                }
            }
        }
    }
    if clashes.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = clashes.iter().map(|c| c.0.clone()).collect();
    let names = state.store.host_addresses(&ids).await?;
    let describe = |l: &Listener| format!("role {} of {} (parameter {})", l.role, l.service, l.parameter);
    let lines: Vec<String> = clashes
        .iter()
        .map(|(host, port, a, b)| {
            let hostname = names.get(host).map(|h| h.0.as_str()).unwrap_or_default();
            let what = if a.role == b.role && a.service == b.service {
                format!("{} would listen twice (parameters {} and {})", describe(a), a.parameter, b.parameter)
            } else {
                format!("{} and {} would both listen", describe(a), describe(b))
            };
            format!("port clash on host {hostname} ({host}): {what} on port {port}")
        })
        .collect();
    Err(DomainError::Conflict(format!("{}; give one of them another port", lines.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::default_name;
    use crate::domain::validate_name;

    #[test]
    fn default_names_are_valid_role_names() {
        let long = "s".repeat(63);
        let cases = [
            ("cache", "replica", 2, "cache-replica-2".to_owned()),
            ("etl", "data_node", 1, "etl-data-node-1".to_owned()),
            (&long, "server", 12, format!("{}-server-12", "s".repeat(53))),
        ];
        for (service, role_type, n, want) in cases {
            let name = default_name(service, role_type, n);
            assert_eq!(name, want);
            assert!(validate_name("role", &name).is_ok(), "{name}");
        }
        // A role type as long as a descriptor allows still leaves a name
        // that starts with the service.
        let name = default_name("a", &"r".repeat(64), 1);
        assert!(name.starts_with("a-r") && validate_name("role", &name).is_ok(), "{name}");
    }
}

// ---------- one role in detail ----------

/// One rendered file of a role, sensitive values masked.
#[derive(Debug, Clone)]
pub struct RoleFile {
    pub path: String,
    pub mode: u32,
    pub content: String,
}

/// A role with what its agent is told to run (files, process, health
/// checks), secrets masked, and what the manager knows of its process.
#[derive(Debug, Clone)]
pub struct RoleDetail {
    pub view: RoleView,
    /// When the running process started, as last reported.
    pub started_at: Option<String>,
    /// The exit status of the last process that ended (0 when none did).
    pub last_exit_status: i32,
    pub files: Vec<RoleFile>,
    /// Program and arguments, secrets masked.
    pub command_line: String,
    /// One line per health check: probe, interval, timeout, threshold.
    pub health_checks: Vec<String>,
    pub log_files: Vec<String>,
    /// Why the role's files cannot be rendered with the current values.
    pub render_error: Option<String>,
}

pub async fn detail(state: &AppState, actor: &Actor, cluster: &str, service: &str, role: &str) -> Result<RoleDetail> {
    actor.require_read(cluster)?;
    use drover_service_types::params::MASK;
    use drover_service_types::render::Probe;
    let ctx = load_context(state, cluster, service).await?;
    let rec = find_role(&ctx, role)?.clone();
    let view = role_views(state, &ctx)
        .await?
        .into_iter()
        .find(|v| v.id == rec.id)
        .ok_or_else(|| DomainError::NotFound(format!("role {role} not found")))?;
    let status = match state.registry.role_status(&rec.id) {
        Some(s) => Some(s),
        None => state.store.role_statuses(cluster, service).await?.remove(&rec.id),
    };
    let st = ctx.service_type.clone();
    // Every sensitive value the role sees, longest first, also as templates
    // may escape it.
    let mut secrets: Vec<String> = config::effective(&st, &ctx.values, &rec.role_type, &rec.group, &rec.id)
        .into_iter()
        .filter(|(k, _)| st.parameter(k).is_some_and(|p| p.sensitive()))
        .filter_map(|(_, e)| e.value.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            [s, escaped]
        })
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let redact = |text: String| secrets.iter().fold(text, |t, s| t.replace(s.as_str(), MASK));
    let (files, command_line, health_checks, log_files, render_error) =
        match ctx.render_all_blocking().await.map(|(_, r)| r.into_iter().find(|d| d.role_id == rec.id)) {
            Ok(Some(d)) => {
                let r = d.rendered;
                let files = r
                    .files
                    .iter()
                    .map(|f| RoleFile {
                        path: f.path.clone(),
                        mode: if f.mode == 0 { 0o644 } else { f.mode },
                        content: redact(String::from_utf8_lossy(&f.content).into_owned()),
                    })
                    .collect();
                let command_line = redact(
                    std::iter::once(&r.process.program).chain(&r.process.args).cloned().collect::<Vec<_>>().join(" "),
                );
                let checks = r
                    .health_checks
                    .iter()
                    .map(|h| {
                        let probe = match &h.probe {
                            Probe::Tcp { host, port } => {
                                format!("TCP connect to {}:{port}", if host.is_empty() { "127.0.0.1" } else { host })
                            }
                            Probe::Http { url, expect_status } => {
                                let want =
                                    if *expect_status == 0 { "any 2xx".to_string() } else { expect_status.to_string() };
                                format!("HTTP GET {} expecting {want}", redact(url.clone()))
                            }
                            Probe::Command { program, args } => {
                                format!("run {}", redact(format!("{program} {}", args.join(" "))))
                            }
                            Probe::Unknown => "unknown probe".to_string(),
                        };
                        format!(
                            "{probe}, every {}, timeout {}, unhealthy after {} failure(s)",
                            humantime::format_duration(h.interval),
                            humantime::format_duration(h.timeout),
                            h.failure_threshold
                        )
                    })
                    .collect();
                (files, command_line, checks, r.log_files.clone(), None)
            }
            Ok(None) => (Vec::new(), String::new(), Vec::new(), Vec::new(), None),
            Err(e) => (Vec::new(), String::new(), Vec::new(), Vec::new(), Some(redact(e.to_string()))),
        };
    let view = RoleView { last_log_lines: view.last_log_lines.into_iter().map(&redact).collect(), ..view };
    Ok(RoleDetail {
        view,
        started_at: status.as_ref().and_then(|s| s.started_at).map(rfc3339),
        last_exit_status: status.as_ref().map(|s| s.last_exit_status).unwrap_or(0),
        files,
        command_line,
        health_checks,
        log_files,
        render_error,
    })
}

/// When the running process of each role of a service started (role id ->
/// time), as its agent last reported; roles without a process are absent.
pub async fn started_at(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
) -> Result<HashMap<String, UnixMillis>> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let mut stored = state.store.role_statuses(cluster, service).await?;
    Ok(ctx
        .roles()
        .iter()
        .filter_map(|r| {
            let s = state.registry.role_status(&r.id).or_else(|| stored.remove(&r.id))?;
            (s.state == "running").then_some(s.started_at).flatten().map(|t| (r.id.clone(), t))
        })
        .collect())
}
