//! REST handlers for clusters, service types, services, role groups, roles,
//! versioned configuration (history, diff, rollback) and service commands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_service_types::config::{self, ConfigValues, Level};
use drover_service_types::descriptor::ServiceType;
use drover_service_types::params::mask;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller};
use crate::AppState;
use crate::desired::{self, DesiredError, ServiceContext};
use crate::model::{HostStatus, UnixMillis, now_millis, rfc3339};
use crate::placement::{Candidate, Placement};
use crate::store::{ClusterRec, RevisionRec, RoleRec, RoleStatusRec, ServiceRec};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clusters", get(list_clusters).post(create_cluster))
        .route("/clusters/{cluster}", get(get_cluster).delete(delete_cluster))
        .route("/service-types", get(list_service_types))
        .route("/service-types/{name}", get(get_service_type))
        .route("/clusters/{cluster}/services", get(list_services).post(create_service))
        .route("/clusters/{cluster}/services/{service}", get(get_service).delete(delete_service))
        .route("/clusters/{cluster}/services/{service}/role-groups", get(list_groups).post(create_group))
        .route("/clusters/{cluster}/services/{service}/roles", get(list_roles).post(create_role))
        .route("/clusters/{cluster}/services/{service}/roles/{role}", get(get_role).delete(delete_role))
        .route("/clusters/{cluster}/services/{service}/config", get(get_config).patch(patch_config))
        .route("/clusters/{cluster}/services/{service}/config/revisions", get(list_revisions))
        .route("/clusters/{cluster}/services/{service}/config/revisions/{revision}", get(get_revision))
        .route("/clusters/{cluster}/services/{service}/config/diff", get(diff_config))
        .route("/clusters/{cluster}/services/{service}/config/rollback", post(rollback_config))
        .route(
            "/clusters/{cluster}/services/{service}/commands",
            get(super::commands::list).post(super::commands::create),
        )
        .route("/commands/{id}", get(super::commands::get))
        .route("/commands/{id}/abort", post(super::commands::abort))
}

impl From<DesiredError> for ApiError {
    fn from(e: DesiredError) -> Self {
        match e {
            DesiredError::Store(s) => s.into(),
            DesiredError::Render { .. } => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Names of clusters, services, roles and groups.
pub fn validate_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} name {name:?}: 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )))
    }
}

// ---------- clusters ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub name: String,
    pub created_at: String,
    pub created_by: String,
    pub services: Vec<String>,
}

async fn cluster_view(state: &AppState, c: ClusterRec) -> Result<Cluster, ApiError> {
    let services = state.store.list_services(&c.name).await?.into_iter().map(|s| s.name).collect();
    Ok(Cluster { name: c.name, created_at: rfc3339(c.created_at), created_by: c.created_by, services })
}

async fn load_cluster(state: &AppState, name: &str) -> Result<ClusterRec, ApiError> {
    state.store.cluster(name).await?.ok_or_else(|| ApiError::NotFound(format!("cluster {name} not found")))
}

#[utoipa::path(post, path = "/api/v1/clusters", request_body = CreateCluster, responses((status = 201, body = Cluster), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_cluster(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateCluster>,
) -> Result<impl IntoResponse, ApiError> {
    validate_name("cluster", &req.name)?;
    let rec = ClusterRec { name: req.name.clone(), created_at: now_millis(), created_by: caller.user.username.clone() };
    state.store.create_cluster(&rec).await?;
    state.audit(caller.audit("cluster.create", "cluster", &rec.name, "created cluster")).await;
    Ok((StatusCode::CREATED, Json(cluster_view(&state, rec).await?)))
}

#[utoipa::path(get, path = "/api/v1/clusters", responses((status = 200, description = "clusters")), security(("basic" = []), ("bearer" = [])))]
pub async fn list_clusters(State(state): Shared, _c: Caller) -> Result<Json<Value>, ApiError> {
    let mut items = Vec::new();
    for c in state.store.list_clusters().await? {
        items.push(cluster_view(&state, c).await?);
    }
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}", params(("cluster" = String, Path)), responses((status = 200, body = Cluster), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_cluster(
    State(state): Shared,
    _c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Cluster>, ApiError> {
    let c = load_cluster(&state, &name).await?;
    Ok(Json(cluster_view(&state, c).await?))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}", params(("cluster" = String, Path)), responses((status = 204), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn delete_cluster(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    load_cluster(&state, &name).await?;
    let services = state.store.list_services(&name).await?;
    if !services.is_empty() {
        let names: Vec<String> = services.into_iter().map(|s| s.name).collect();
        return Err(ApiError::Conflict(format!(
            "cluster {name} still has services ({}); delete them first",
            names.join(", ")
        )));
    }
    state.store.delete_cluster(&name).await?;
    state.audit(caller.audit("cluster.delete", "cluster", &name, "deleted cluster")).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- service types ----------

fn type_view(t: &ServiceType, detail: bool) -> Value {
    let mut v = json!({
        "name": t.name,
        "display_name": t.display_name,
        "description": t.description,
        "version": t.version,
        "requires": t.requires,
        "role_types": t.role_types.iter().map(|r| json!({
            "name": r.name,
            "description": r.description,
            "min_instances": r.min_instances,
            "max_instances": r.max_instances,
            "start_order": r.start_order,
        })).collect::<Vec<_>>(),
    });
    if detail {
        v["parameters"] = t
            .parameters
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "type": p.kind.name(),
                    "kind": serde_json::to_value(&p.kind).unwrap_or(Value::Null),
                    "default": p.default.as_ref().map(|d| mask(p, d)),
                    "description": p.description,
                    "scope": serde_json::to_value(&p.scope).unwrap_or(Value::Null),
                    "restart": p.restart,
                    "sensitive": p.sensitive(),
                })
            })
            .collect();
        v["rolling_restart"] = json!({
            "batch_size": t.rolling_restart.batch_size,
            "wait_for_healthy": t.rolling_restart.wait_for_healthy,
            "healthy_timeout_seconds": t.rolling_restart.healthy_timeout.as_secs(),
        });
    }
    v
}

#[utoipa::path(get, path = "/api/v1/service-types", responses((status = 200, description = "service types")), security(("basic" = []), ("bearer" = [])))]
pub async fn list_service_types(State(state): Shared, _c: Caller) -> Json<Value> {
    Json(json!({ "items": state.catalog.iter().map(|t| type_view(t, false)).collect::<Vec<_>>() }))
}

#[utoipa::path(get, path = "/api/v1/service-types/{name}", params(("name" = String, Path)), responses((status = 200, description = "role types, parameters, rolling restart policy"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_service_type(
    State(state): Shared,
    _c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let t = state.catalog.get(&name).ok_or_else(|| ApiError::NotFound(format!("service type {name} not found")))?;
    Ok(Json(type_view(t, true)))
}

// ---------- services ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
}

async fn load_service(state: &AppState, cluster: &str, service: &str) -> Result<ServiceRec, ApiError> {
    load_cluster(state, cluster).await?;
    state
        .store
        .service(cluster, service)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {service} not found in cluster {cluster}")))
}

async fn context(state: &AppState, cluster: &str, service: &str) -> Result<ServiceContext, ApiError> {
    load_service(state, cluster, service).await?;
    desired::load_service(state, cluster, service)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {service} not found in cluster {cluster}")))
}

/// Service health rolled up from its roles: good when every role that should
/// run is running and not unhealthy, bad when none is, concerning otherwise.
pub fn rollup(roles: &[RoleView]) -> &'static str {
    let wanted: Vec<&RoleView> = roles.iter().filter(|r| r.run_state == "running").collect();
    if wanted.is_empty() {
        return if roles.is_empty() { "good" } else { "stopped" };
    }
    let ok = wanted.iter().filter(|r| r.status == "running" && r.health != "bad").count();
    if ok == wanted.len() {
        "good"
    } else if ok == 0 {
        "bad"
    } else {
        "concerning"
    }
}

async fn service_view(state: &AppState, ctx: &ServiceContext) -> Result<Value, ApiError> {
    let roles = role_views(state, ctx).await?;
    Ok(json!({
        "cluster": ctx.service.cluster,
        "name": ctx.service.name,
        "type": ctx.service.service_type,
        "revision": ctx.service.revision,
        "created_at": rfc3339(ctx.service.created_at),
        "created_by": ctx.service.created_by,
        "health": rollup(&roles),
        "roles": roles,
    }))
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services", params(("cluster" = String, Path)), request_body = CreateService, responses((status = 201, description = "the service"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_service(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<CreateService>,
) -> Result<impl IntoResponse, ApiError> {
    load_cluster(&state, &cluster).await?;
    validate_name("service", &req.name)?;
    let t = state.catalog.get(&req.service_type).ok_or_else(|| {
        let known: Vec<&str> = state.catalog.iter().map(|t| t.name.as_str()).collect();
        ApiError::BadRequest(format!("unknown service type {:?}; known types: {}", req.service_type, known.join(", ")))
    })?;
    let existing = state.store.list_services(&cluster).await?;
    for required in &t.requires {
        if !existing.iter().any(|s| &s.service_type == required) {
            return Err(ApiError::BadRequest(format!(
                "service type {} requires a {required} service in cluster {cluster}; create that first",
                t.name
            )));
        }
    }
    let now = now_millis();
    let svc = ServiceRec {
        cluster: cluster.clone(),
        name: req.name.clone(),
        service_type: t.name.clone(),
        revision: 1,
        created_at: now,
        created_by: caller.user.username.clone(),
    };
    let first = RevisionRec {
        cluster: cluster.clone(),
        service: req.name.clone(),
        revision: 1,
        config: serde_json::to_value(ConfigValues::default()).map_err(|e| ApiError::Internal(e.to_string()))?,
        changed_keys: Vec::new(),
        author: caller.user.username.clone(),
        source: caller.source.clone(),
        message: "service created with default configuration".into(),
        created_at: now,
    };
    state.store.create_service(&svc, &first).await?;
    state
        .audit(caller.audit(
            "service.create",
            "service",
            &format!("{cluster}/{}", req.name),
            format!("created {} service", t.name),
        ))
        .await;
    let ctx = context(&state, &cluster, &req.name).await?;
    Ok((StatusCode::CREATED, Json(service_view(&state, &ctx).await?)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services", params(("cluster" = String, Path)), responses((status = 200, description = "services with roles and health"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_services(
    State(state): Shared,
    _c: Caller,
    ApiPath(cluster): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    load_cluster(&state, &cluster).await?;
    let mut items = Vec::new();
    for s in state.store.list_services(&cluster).await? {
        let ctx = context(&state, &cluster, &s.name).await?;
        items.push(service_view(&state, &ctx).await?);
    }
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "service, roles, health rollup"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_service(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    Ok(Json(service_view(&state, &ctx).await?))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}/services/{service}", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 204), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn delete_service(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let svc = load_service(&state, &cluster, &service).await?;
    for other in state.store.list_services(&cluster).await? {
        if let Some(t) = state.catalog.get(&other.service_type)
            && t.requires.contains(&svc.service_type)
        {
            return Err(ApiError::Conflict(format!("service {} requires {service}; delete it first", other.name)));
        }
    }
    if let Some((other, parameter)) = desired::referrers(&state, &cluster, &service).await?.into_iter().next() {
        return Err(ApiError::Conflict(format!(
            "service {other} refers to {service} (parameter {parameter}); change that first"
        )));
    }
    let hosts: Vec<String> =
        state.store.roles_of_service(&cluster, &service).await?.into_iter().map(|r| r.host_id).collect();
    state.store.delete_service(&cluster, &service).await?;
    desired::refresh_service(&state, &cluster, &service, &hosts).await?;
    state
        .audit(caller.audit(
            "service.delete",
            "service",
            &format!("{cluster}/{service}"),
            "deleted service and its roles",
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- role groups ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub role_type: String,
    pub name: String,
}

/// The default role group of a role type (CM-style, one per role type).
/// Group overrides are keyed by group name, so the role type is part of it.
pub fn default_group(role_type: &str) -> String {
    format!("{role_type}-default")
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/role-groups", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "role groups"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_groups(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    let named = state.store.role_groups(&cluster, &service).await?;
    let mut items: Vec<Value> = ctx
        .service_type
        .role_types
        .iter()
        .map(|r| json!({"role_type": r.name, "name": default_group(&r.name)}))
        .collect();
    items.extend(named.into_iter().map(|(rt, name)| json!({"role_type": rt, "name": name})));
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/role-groups", params(("cluster" = String, Path), ("service" = String, Path)), request_body = CreateGroup, responses((status = 201, description = "the group"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_group(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    if ctx.service_type.role_type(&req.role_type).is_none() {
        return Err(ApiError::BadRequest(format!(
            "service type {} has no role type {:?}",
            ctx.service_type.name, req.role_type
        )));
    }
    validate_name("role group", &req.name)?;
    // Group overrides are keyed by group name, so names are unique per service.
    let taken = state.store.role_groups(&cluster, &service).await?.into_iter().any(|(_, g)| g == req.name);
    let is_default = ctx.service_type.role_types.iter().any(|r| default_group(&r.name) == req.name);
    if is_default || taken {
        return Err(ApiError::Conflict(format!("role group {} already exists in service {service}", req.name)));
    }
    state.store.create_role_group(&cluster, &service, &req.role_type, &req.name, now_millis()).await?;
    state
        .audit(caller.audit(
            "role_group.create",
            "service",
            &format!("{cluster}/{service}"),
            format!("created role group {} for {}", req.name, req.role_type),
        ))
        .await;
    Ok((StatusCode::CREATED, Json(json!({"role_type": req.role_type, "name": req.name}))))
}

async fn group_exists(
    state: &AppState,
    cluster: &str,
    service: &str,
    role_type: &str,
    group: &str,
) -> Result<bool, ApiError> {
    Ok(group == default_group(role_type)
        || state.store.role_groups(cluster, service).await?.iter().any(|(rt, g)| rt == role_type && g == group))
}

// ---------- roles ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    pub role_type: String,
    /// The host to run on. Give either this or `host_selector`.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Label selector (`zk=true,rack!=r1`): the manager picks `count` healthy
    /// hosts matching it, spreading the service's roles over hosts.
    #[serde(default)]
    pub host_selector: Option<String>,
    /// How many roles to place with `host_selector` (default 1), each on its
    /// own host.
    #[serde(default)]
    pub count: Option<u32>,
    /// Role group (default `default`).
    #[serde(default)]
    pub group: Option<String>,
    /// Defaults to `<service>-<role type>-<n>`.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoleView {
    pub id: String,
    pub name: String,
    pub role_type: String,
    pub group: String,
    pub host_id: String,
    pub hostname: String,
    /// What the role should be doing: `running` or `stopped`.
    pub run_state: String,
    /// What the agent reports: `running`, `stopped`, `starting`, `stopping`, `failed` or `unknown`
    /// (no report yet, or the host is not healthy).
    pub status: String,
    /// `good`, `bad` or `unknown`; `bad` while the host is lost or decommissioned.
    pub health: String,
    pub pid: Option<u32>,
    pub restart_count: u32,
    /// Reloads of the running process (new files applied by its reload
    /// signal), and when the last one was sent.
    pub reload_count: u32,
    pub last_reload_at: Option<String>,
    pub applied_revision: Option<u64>,
    pub running_revision: Option<u64>,
    /// Running with an older revision whose changes need a restart.
    pub stale: bool,
    pub stale_keys: Vec<String>,
    /// Why the role failed, or why its host's report cannot be trusted
    /// (`host NAME (ID) is lost: no heartbeat since TIME`).
    pub last_error: String,
    pub last_log_lines: Vec<String>,
    pub updated_at: Option<String>,
}

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
) -> Result<HashMap<u64, ConfigValues>, ApiError> {
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
    cache: &mut HashMap<u64, Vec<desired::DesiredRole>>,
    current: &mut Option<Vec<desired::DesiredRole>>,
    revision: u64,
) -> Result<Vec<String>, ApiError> {
    if let std::collections::hash_map::Entry::Vacant(slot) = cache.entry(revision) {
        let rendered =
            desired::load_with_values(state, ctx.service.clone(), old.clone()).await?.render_all().unwrap_or_default();
        slot.insert(rendered);
    }
    let Some(before) = cache[&revision].iter().find(|d| d.role_id == role_id) else { return Ok(Vec::new()) };
    if current.is_none() {
        *current = Some(ctx.render_all()?);
    }
    let Some(after) = current.iter().flatten().find(|d| d.role_id == role_id) else { return Ok(Vec::new()) };
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

pub async fn role_views(state: &AppState, ctx: &ServiceContext) -> Result<Vec<RoleView>, ApiError> {
    let stored = state.store.role_statuses(&ctx.service.cluster, &ctx.service.name).await?;
    let statuses: Vec<Option<RoleStatusRec>> =
        ctx.roles.iter().map(|r| state.registry.role_status(&r.id).or_else(|| stored.get(&r.id).cloned())).collect();
    let values = values_by_revision(state, ctx, &statuses).await?;
    let mut rendered_cache: HashMap<u64, Vec<desired::DesiredRole>> = HashMap::new();
    let mut current: Option<Vec<desired::DesiredRole>> = None;
    let mut out = Vec::new();
    for (r, s) in ctx.roles.iter().zip(&statuses) {
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
        let inst = ctx.topology.roles.iter().find(|i| i.role_id == r.id);
        let hostname = inst.map(|i| i.hostname.clone()).unwrap_or_default();
        // A role on a lost or decommissioned host is not known to be running:
        // its status is unknown, its health bad, and last_error says why.
        let host_down = host_down(state.registry.host_liveness(&r.host_id), &hostname, &r.host_id);
        let status = match s {
            Some(s) if host_down.is_none() => s.state.clone(),
            _ => "unknown".into(),
        };
        let health = match (&host_down, s) {
            (Some(_), _) => "bad".into(),
            (None, Some(s)) => s.health.clone(),
            (None, None) => "unknown".into(),
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
            run_state: r.run_state.clone(),
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
        });
    }
    Ok(out)
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/roles", params(("cluster" = String, Path), ("service" = String, Path)), request_body = CreateRoles, responses((status = 201, description = "the role (or `{items}` for an array)"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_role(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CreateRoles>,
) -> Result<impl IntoResponse, ApiError> {
    let (requests, single) = match req {
        CreateRoles::One(r) => (vec![r], true),
        CreateRoles::Many(rs) => (rs, false),
    };
    if requests.is_empty() {
        return Err(ApiError::BadRequest("no roles to add".into()));
    }
    if requests.len() > 10_000 {
        return Err(ApiError::BadRequest(format!("at most 10000 roles per request, got {}", requests.len())));
    }
    let ctx = context(&state, &cluster, &service).await?;
    let (requests, single) = place_by_selector(&state, &ctx, requests, single).await?;
    let host_ids: Vec<String> = requests.iter().map(|r| r.host_id.clone()).collect();
    let hosts = state.store.host_addresses(&host_ids).await?;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut next: HashMap<String, u32> = HashMap::new();
    for r in &ctx.roles {
        *counts.entry(r.role_type.clone()).or_default() += 1;
        let n = next.entry(r.role_type.clone()).or_default();
        *n = (*n).max(r.index + 1);
    }
    let mut names: std::collections::HashSet<String> = ctx.roles.iter().map(|r| r.name.clone()).collect();
    let mut new_roles = Vec::with_capacity(requests.len());
    for req in &requests {
        let which = &req.which;
        let rt = role_type_of(&ctx, &req.role_type, which)?;
        let count = counts.entry(rt.name.clone()).or_default();
        if let Some(max) = rt.max_instances
            && *count >= max
        {
            return Err(ApiError::BadRequest(format!(
                "{which}role type {} allows at most {max} instances and service {service} already has {count}",
                rt.name
            )));
        }
        *count += 1;
        if !hosts.contains_key(&req.host_id) {
            return Err(ApiError::BadRequest(format!("{which}unknown host {:?}", req.host_id)));
        }
        if state.registry.host_status(&req.host_id) == Some(HostStatus::Decommissioned) {
            let hostname = &hosts[&req.host_id].0;
            return Err(ApiError::BadRequest(format!("{which}host {} ({hostname}) is decommissioned", req.host_id)));
        }
        let group = req.group.clone().unwrap_or_else(|| default_group(&rt.name));
        if !group_exists(&state, &cluster, &service, &rt.name, &group).await? {
            return Err(ApiError::BadRequest(format!(
                "{which}role type {} of service {service} has no role group {group:?}",
                rt.name
            )));
        }
        let n = next.entry(rt.name.clone()).or_default();
        *n += 1;
        let name = req.name.clone().unwrap_or_else(|| format!("{service}-{}-{n}", rt.name));
        validate_name("role", &name)?;
        if !names.insert(name.clone()) {
            return Err(ApiError::Conflict(format!("{which}role {name:?} already exists in service {service}")));
        }
        new_roles.push(RoleRec {
            id: uuid::Uuid::new_v4().to_string(),
            cluster: cluster.clone(),
            service: service.clone(),
            name,
            role_type: rt.name.clone(),
            group,
            host_id: req.host_id.clone(),
            index: 0,
            run_state: "stopped".into(),
            restart_nonce: 0,
            created_at: now_millis(),
        });
    }
    // Under the refresh lock: the render that checks the new roles is the
    // one pushed, and no other change can slip in between.
    let guard = state.refresh_lock.lock().await;
    let created = state.store.insert_roles(&new_roles).await?;
    // A host running a role of the cluster is a host of the cluster.
    let mut role_hosts: Vec<String> = created.iter().map(|r| r.host_id.clone()).collect();
    role_hosts.sort();
    role_hosts.dedup();
    state.store.add_cluster_hosts(&cluster, &role_hosts, now_millis()).await?;
    // Roles whose files cannot be rendered must not stay.
    let rendered = match desired::load_service(&state, &cluster, &service).await {
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
    desired::refresh_locked(&state, &guard, &cluster, &service, &[], rendered).await?;
    drop(guard);
    desired::refresh_parcels(&state).await?;
    for role in &created {
        let hostname = hosts.get(&role.host_id).map(|h| h.0.as_str()).unwrap_or_default();
        state
            .audit(caller.audit(
                "role.create",
                "role",
                &role.id,
                format!(
                    "added {} role {} on host {hostname} ({}) in {cluster}/{service}",
                    role.role_type, role.name, role.host_id
                ),
            ))
            .await;
    }
    let ctx = context(&state, &cluster, &service).await?;
    let ids: std::collections::HashSet<&str> = created.iter().map(|r| r.id.as_str()).collect();
    let views: Vec<RoleView> =
        role_views(&state, &ctx).await?.into_iter().filter(|v| ids.contains(v.id.as_str())).collect();
    let body = if single { json!(views.into_iter().next()) } else { json!({ "items": views }) };
    Ok((StatusCode::CREATED, Json(body)))
}

fn role_type_of<'a>(
    ctx: &'a ServiceContext,
    role_type: &str,
    which: &str,
) -> Result<&'a drover_service_types::descriptor::RoleType, ApiError> {
    ctx.service_type.role_type(role_type).ok_or_else(|| {
        let known: Vec<&str> = ctx.service_type.role_types.iter().map(|r| r.name.as_str()).collect();
        ApiError::BadRequest(format!(
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

/// Most roles one `count` may ask for.
const MAX_COUNT: u32 = 1000;

/// Turns role requests into one placed role per host: `host_id` requests as
/// they are, `host_selector` requests onto hosts picked by
/// [`crate::placement`]. Also says whether the answer is a single role (one
/// object without `count`). Nothing is stored here.
async fn place_by_selector(
    state: &AppState,
    ctx: &ServiceContext,
    requests: Vec<CreateRole>,
    single: bool,
) -> Result<(Vec<PlacedRole>, bool), ApiError> {
    let one_role = single && requests.iter().all(|r| r.count.is_none());
    let mut placement: Option<Placement> = None;
    let mut out: Vec<PlacedRole> = Vec::with_capacity(requests.len());
    for (i, req) in requests.into_iter().enumerate() {
        let which = if single { String::new() } else { format!("role {}: ", i + 1) };
        match (req.host_id, req.host_selector) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(format!("{which}give either host_id or host_selector, not both")));
            }
            (None, None) => {
                return Err(ApiError::BadRequest(format!(
                    "{which}host_id or host_selector is required: the host to run on, or a label selector such as zk=true"
                )));
            }
            (Some(host_id), None) => {
                if req.count.is_some() {
                    return Err(ApiError::BadRequest(format!(
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
                    return Err(ApiError::BadRequest(format!(
                        "{which}count must be between 1 and {MAX_COUNT}, got {count}"
                    )));
                }
                if count > 1 && req.name.is_some() {
                    return Err(ApiError::BadRequest(format!(
                        "{which}name can only be given for one role; leave it out with count {count}"
                    )));
                }
                role_type_of(ctx, &req.role_type, &which)?;
                let selector = drover_proto::labels::parse_selector(&sel)
                    .map_err(|e| ApiError::BadRequest(format!("{which}{e}")))?;
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
                    ApiError::BadRequest(format!("{which}role type {} {}", req.role_type, e.describe()))
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
    Ok((out, one_role))
}

/// Every host with its live status, labels and role counts, for placement.
async fn candidates(state: &AppState, ctx: &ServiceContext) -> Result<Placement, ApiError> {
    let totals = state.store.role_counts_by_host().await?;
    let mut of_service: HashMap<&str, u32> = HashMap::new();
    for r in &ctx.roles {
        *of_service.entry(r.host_id.as_str()).or_default() += 1;
    }
    let hosts = state.store.all_hosts().await?;
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

/// One role, or an array of roles added in one request (one render and push).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CreateRoles {
    One(CreateRole),
    Many(Vec<CreateRole>),
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/roles", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "roles with status, health, pid, applied revision, stale"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_roles(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    Ok(Json(json!({ "items": role_views(&state, &ctx).await? })))
}

fn find_role<'a>(ctx: &'a ServiceContext, role: &str) -> Result<&'a RoleRec, ApiError> {
    ctx.roles
        .iter()
        .find(|r| r.id == role || r.name == role)
        .ok_or_else(|| ApiError::NotFound(format!("role {role} not found in service {}", ctx.service.name)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/roles/{role}", params(("cluster" = String, Path), ("service" = String, Path), ("role" = String, Path)), responses((status = 200, body = RoleView), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_role(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service, role)): ApiPath<(String, String, String)>,
) -> Result<Json<RoleView>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    let id = find_role(&ctx, &role)?.id.clone();
    let view = role_views(&state, &ctx).await?.into_iter().find(|v| v.id == id);
    view.map(Json).ok_or_else(|| ApiError::NotFound(format!("role {role} not found")))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}/services/{service}/roles/{role}", params(("cluster" = String, Path), ("service" = String, Path), ("role" = String, Path)), responses((status = 204), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn delete_role(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service, role)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    let r = find_role(&ctx, &role)?.clone();
    let rt = ctx.service_type.role_type(&r.role_type);
    let count = ctx.roles.iter().filter(|x| x.role_type == r.role_type).count() as u32;
    if let Some(rt) = rt
        && count <= rt.min_instances
    {
        return Err(ApiError::Conflict(format!(
            "role type {} needs at least {} instances; service {service} would be left with {}",
            rt.name,
            rt.min_instances,
            count - 1
        )));
    }
    state.store.delete_role(&r.id).await?;
    desired::refresh_service(&state, &cluster, &service, std::slice::from_ref(&r.host_id)).await?;
    state
        .audit(caller.audit("role.delete", "role", &r.id, format!("removed role {} from {cluster}/{service}", r.name)))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- configuration ----------

/// Masks sensitive values in a ConfigValues-shaped JSON.
fn masked_values(st: &ServiceType, v: &ConfigValues) -> Value {
    let m = |map: &BTreeMap<String, Value>| -> Value {
        map.iter()
            .map(|(k, v)| (k.clone(), st.parameter(k).map(|p| mask(p, v)).unwrap_or_else(|| v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "service": m(&v.service),
        "groups": v.groups.iter().map(|(g, vals)| (g.clone(), m(vals))).collect::<serde_json::Map<_, _>>(),
        "roles": v.roles.iter().map(|(r, vals)| (r.clone(), m(vals))).collect::<serde_json::Map<_, _>>(),
    })
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "effective values with their source and the current revision"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_config(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    let st = &ctx.service_type;
    let mut roles = serde_json::Map::new();
    for r in &ctx.roles {
        let eff = config::effective(st, &ctx.values, &r.role_type, &r.group, &r.id);
        let view: serde_json::Map<String, Value> = eff
            .into_iter()
            .map(|(k, e)| {
                let value = st.parameter(&k).map(|p| mask(p, &e.value)).unwrap_or(e.value);
                (k, json!({"value": value, "source": e.source.to_string()}))
            })
            .collect();
        roles.insert(r.name.clone(), json!({"id": r.id, "role_type": r.role_type, "group": r.group, "values": view}));
    }
    let service_level: serde_json::Map<String, Value> = st
        .parameters
        .iter()
        .map(|p| {
            let (value, source) = match ctx.values.service.get(&p.name) {
                Some(v) => (Some(mask(p, v)), "service"),
                None => (p.default.as_ref().map(|d| mask(p, d)), "default"),
            };
            (p.name.clone(), json!({"value": value, "source": source, "restart": p.restart, "type": p.kind.name()}))
        })
        .collect();
    Ok(Json(json!({
        "revision": ctx.service.revision,
        "service": service_level,
        "overrides": masked_values(st, &ctx.values),
        "roles": roles,
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    pub role_type: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchConfig {
    /// Parameter name -> value; `null` removes the override at this level.
    pub values: BTreeMap<String, Value>,
    /// Why: shown in the history.
    pub message: String,
    /// Apply to a role group instead of the service.
    #[serde(default)]
    pub group: Option<GroupRef>,
    /// Apply to one role (id or name) instead of the service.
    #[serde(default)]
    pub role: Option<String>,
    /// Refuse unless the service is still at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

/// Stores `values` as a new revision after rendering every role with them, and
/// pushes the result. Nothing is stored when anything fails.
async fn commit_revision(
    state: &AppState,
    caller: &Caller,
    ctx: ServiceContext,
    values: ConfigValues,
    message: &str,
    expected: u64,
    action: &str,
) -> Result<Value, ApiError> {
    let cluster = ctx.service.cluster.clone();
    let service = ctx.service.name.clone();
    let st = ctx.service_type.clone();
    let mut changed = override_diff(&ctx.values, &values);
    if changed.is_empty() {
        return Err(ApiError::BadRequest("the change leaves the configuration as it is; no revision created".into()));
    }
    let problems = desired::reference_problems(state, &ctx.service, &st, &values).await?;
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    let revision = ctx.service.revision + 1;
    // Render every role with the candidate values before storing anything,
    // under the refresh lock so that this very render is what gets pushed.
    let guard = state.refresh_lock.lock().await;
    let mut next = ctx.service.clone();
    next.revision = revision;
    let (_, rendered) = desired::load_with_values(state, next, values.clone()).await?.render_all_blocking().await?;
    let mut keys_by_role = Vec::new();
    // Roles without role-level overrides share the result of their group.
    let mut by_group: HashMap<(&str, &str), (Vec<String>, bool)> = HashMap::new();
    for r in &ctx.roles {
        let own = ctx.values.roles.contains_key(&r.id) || values.roles.contains_key(&r.id);
        let (keys, restart) = match by_group.get(&(r.role_type.as_str(), r.group.as_str())) {
            Some(done) if !own => done.clone(),
            _ => {
                let done = config::changed_keys(&st, &ctx.values, &values, &r.role_type, &r.group, &r.id);
                if !own {
                    by_group.insert((r.role_type.as_str(), r.group.as_str()), done.clone());
                }
                done
            }
        };
        changed.extend(keys.iter().cloned());
        keys_by_role.push((r.name.clone(), keys, restart));
    }
    let changed: Vec<String> = changed.into_iter().collect();
    let rec = RevisionRec {
        cluster: cluster.clone(),
        service: service.clone(),
        revision,
        config: serde_json::to_value(&values).map_err(|e| ApiError::Internal(e.to_string()))?,
        changed_keys: changed.clone(),
        author: caller.user.username.clone(),
        source: caller.source.clone(),
        message: message.to_owned(),
        created_at: now_millis(),
    };
    if !state.store.insert_revision(&rec, expected).await? {
        return Err(ApiError::Conflict(format!(
            "service {service} changed meanwhile (it is no longer at revision {expected}); reload and try again"
        )));
    }
    desired::refresh_locked(state, &guard, &cluster, &service, &[], Some(rendered)).await?;
    drop(guard);
    let before = masked_values(&st, &ctx.values);
    let after = masked_values(&st, &values);
    state
        .audit(caller.audit(
            action,
            "service",
            &format!("{cluster}/{service}"),
            format!("revision {revision} ({message}): changed {changed:?}; before {before}; after {after}"),
        ))
        .await;
    let restart_roles: Vec<&String> = keys_by_role.iter().filter(|(_, _, r)| *r).map(|(n, _, _)| n).collect();
    Ok(json!({
        "revision": revision,
        "changed_keys": changed,
        "message": message,
        "author": caller.user.username,
        "roles_needing_restart": restart_roles,
    }))
}

#[utoipa::path(patch, path = "/api/v1/clusters/{cluster}/services/{service}/config", params(("cluster" = String, Path), ("service" = String, Path)), request_body = PatchConfig, responses((status = 200, description = "the new revision"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn patch_config(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<PatchConfig>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    if req.message.trim().is_empty() {
        return Err(ApiError::BadRequest("message is required: say why the configuration changes".into()));
    }
    if req.values.is_empty() {
        return Err(ApiError::BadRequest("values is empty: nothing to change".into()));
    }
    if req.group.is_some() && req.role.is_some() {
        return Err(ApiError::BadRequest("give either group or role, not both".into()));
    }
    let expected = req.expected_revision.unwrap_or(ctx.service.revision);
    let role_ref = match &req.role {
        Some(role) => Some(find_role(&ctx, role)?.clone()),
        None => None,
    };
    if let Some(g) = &req.group
        && !group_exists(&state, &cluster, &service, &g.role_type, &g.name).await?
    {
        return Err(ApiError::BadRequest(format!("role type {} has no role group {:?}", g.role_type, g.name)));
    }
    let level = match (&req.group, &role_ref) {
        (Some(g), _) => Level::Group { role_type: &g.role_type, group: &g.name },
        (None, Some(r)) => Level::Role { role_type: &r.role_type, role_id: &r.id },
        (None, None) => Level::Service,
    };
    let normalised = config::validate_patch(&ctx.service_type, &level, &req.values).map_err(|errors| {
        ApiError::BadRequest(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    })?;
    let mut values = ctx.values.clone();
    values.apply_patch(&level, &normalised);
    let out = commit_revision(&state, &caller, ctx, values, req.message.trim(), expected, "config.update").await?;
    Ok(Json(out))
}

/// Parameters whose override differs between two sets of values, at any level.
fn override_diff(a: &ConfigValues, b: &ConfigValues) -> std::collections::BTreeSet<String> {
    fn diff_maps(
        x: Option<&BTreeMap<String, Value>>,
        y: Option<&BTreeMap<String, Value>>,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        let empty = BTreeMap::new();
        let (x, y) = (x.unwrap_or(&empty), y.unwrap_or(&empty));
        for k in x.keys().chain(y.keys()) {
            if x.get(k) != y.get(k) {
                out.insert(k.clone());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    diff_maps(Some(&a.service), Some(&b.service), &mut out);
    for g in a.groups.keys().chain(b.groups.keys()) {
        diff_maps(a.groups.get(g), b.groups.get(g), &mut out);
    }
    for r in a.roles.keys().chain(b.roles.keys()) {
        diff_maps(a.roles.get(r), b.roles.get(r), &mut out);
    }
    out
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub revision: u64,
    pub message: String,
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/config/rollback", params(("cluster" = String, Path), ("service" = String, Path)), request_body = Rollback, responses((status = 200, description = "the new revision"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn rollback_config(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<Rollback>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    if req.message.trim().is_empty() {
        return Err(ApiError::BadRequest("message is required: say why the configuration is rolled back".into()));
    }
    let target = state
        .store
        .revision(&cluster, &service, req.revision)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("revision {} of service {service} not found", req.revision)))?;
    let values: ConfigValues = serde_json::from_value(target.config).map_err(|e| ApiError::Internal(e.to_string()))?;
    let expected = ctx.service.revision;
    let message = format!("rollback to revision {}: {}", req.revision, req.message.trim());
    let out = commit_revision(&state, &caller, ctx, values, &message, expected, "config.rollback").await?;
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config/revisions", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "revisions, newest first"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_revisions(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    load_service(&state, &cluster, &service).await?;
    let items: Vec<Value> = state
        .store
        .revisions(&cluster, &service)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "revision": r.revision,
                "author": r.author,
                "source": r.source,
                "created_at": rfc3339(r.created_at),
                "message": r.message,
                "changed_keys": r.changed_keys,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config/revisions/{revision}", params(("cluster" = String, Path), ("service" = String, Path), ("revision" = u64, Path)), responses((status = 200, description = "revision with values and where it took effect"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_revision(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service, revision)): ApiPath<(String, String, u64)>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    let r = state
        .store
        .revision(&cluster, &service, revision)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("revision {revision} of service {service} not found")))?;
    let values: ConfigValues = serde_json::from_value(r.config).map_err(|e| ApiError::Internal(e.to_string()))?;
    let applied: Vec<Value> = state
        .store
        .applied_for_revision(&cluster, &service, revision)
        .await?
        .into_iter()
        .map(|a| {
            let role = ctx.roles.iter().find(|x| x.id == a.role_id);
            let hostname = ctx.topology.roles.iter().find(|x| x.role_id == a.role_id).map(|x| x.hostname.clone());
            json!({
                "role_id": a.role_id,
                "role": role.map(|x| x.name.clone()),
                "host_id": a.host_id,
                "hostname": hostname,
                "applied_at": rfc3339(a.applied_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "revision": r.revision,
        "author": r.author,
        "source": r.source,
        "created_at": rfc3339(r.created_at),
        "message": r.message,
        "changed_keys": r.changed_keys,
        "values": masked_values(&ctx.service_type, &values),
        "applied": applied,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    pub from: u64,
    pub to: u64,
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config/diff", params(("cluster" = String, Path), ("service" = String, Path), DiffQuery), responses((status = 200, description = "value changes and unified diffs of rendered files per role"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn diff_config(
    State(state): Shared,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let ctx = context(&state, &cluster, &service).await?;
    let load = |rev: u64| {
        let state = &state;
        let svc = ctx.service.clone();
        async move {
            state
                .store
                .revision(&svc.cluster, &svc.name, rev)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("revision {rev} of service {} not found", svc.name)))?;
            desired::revision_values(state, &svc, rev).await.map_err(ApiError::from)
        }
    };
    let a = load(q.from).await?;
    let b = load(q.to).await?;
    let st = &ctx.service_type;
    let sensitive: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|v| std::iter::once(&v.service).chain(v.groups.values()).chain(v.roles.values()))
        .flat_map(|m| m.iter())
        .filter(|(k, _)| st.parameter(k).is_some_and(|p| p.sensitive()))
        .filter_map(|(_, v)| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty())
        // Templates may render a secret escaped (e.g. the `quote` helper).
        .flat_map(|s| {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            [s, escaped]
        })
        .collect::<Vec<_>>();
    let mut sensitive = sensitive;
    sensitive.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let redact =
        |text: String| sensitive.iter().fold(text, |t, s| t.replace(s.as_str(), drover_service_types::params::MASK));
    let render = |values: &ConfigValues| {
        let svc = ctx.service.clone();
        let values = values.clone();
        let state = &state;
        async move { desired::load_with_values(state, svc, values).await?.render_all().map_err(ApiError::from) }
    };
    let ra = render(&a).await?;
    let rb = render(&b).await?;
    let mut roles = Vec::new();
    for r in &ctx.roles {
        let eff_a = config::effective(st, &a, &r.role_type, &r.group, &r.id);
        let eff_b = config::effective(st, &b, &r.role_type, &r.group, &r.id);
        let mut changes = Vec::new();
        for (k, vb) in &eff_b {
            let va = eff_a.get(k);
            if va.map(|x| &x.value) != Some(&vb.value) {
                let p = st.parameter(k);
                let show = |v: &Value| p.map(|p| mask(p, v)).unwrap_or_else(|| v.clone());
                changes.push(json!({
                    "parameter": k,
                    "from": va.map(|x| show(&x.value)),
                    "to": show(&vb.value),
                    "source": vb.source.to_string(),
                    "restart": p.is_some_and(|p| p.restart),
                }));
            }
        }
        let fa = ra.iter().find(|x| x.role_id == r.id);
        let fb = rb.iter().find(|x| x.role_id == r.id);
        let mut files = Vec::new();
        if let (Some(fa), Some(fb)) = (fa, fb) {
            let mut paths: Vec<&String> = fa.rendered.files.iter().chain(&fb.rendered.files).map(|f| &f.path).collect();
            paths.sort();
            paths.dedup();
            for path in paths {
                let text = |d: &crate::desired::DesiredRole| {
                    d.rendered
                        .files
                        .iter()
                        .find(|f| &f.path == path)
                        .map(|f| String::from_utf8_lossy(&f.content).into_owned())
                        .unwrap_or_default()
                };
                let (ta, tb) = (text(fa), text(fb));
                if ta != tb {
                    let diff = similar::TextDiff::from_lines(&ta, &tb)
                        .unified_diff()
                        .context_radius(3)
                        .header(&format!("r{}/{}", q.from, path), &format!("r{}/{}", q.to, path))
                        .to_string();
                    files.push(json!({"path": path, "diff": redact(diff)}));
                }
            }
        }
        if !changes.is_empty() || !files.is_empty() {
            let hostname = ctx.topology.roles.iter().find(|x| x.role_id == r.id).map(|x| x.hostname.clone());
            roles.push(json!({
                "role_id": r.id, "role": r.name, "host_id": r.host_id, "hostname": hostname,
                "changes": changes, "files": files,
            }));
        }
    }
    Ok(Json(json!({ "from": q.from, "to": q.to, "roles": roles })))
}
