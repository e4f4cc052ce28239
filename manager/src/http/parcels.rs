//! REST handlers for parcels: the repository (list with per-host state,
//! streamed upload), cluster membership of hosts, the cluster-level lifecycle
//! commands (distribute, activate, deactivate, remove) and the per-service
//! upgrade and rollback.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller};
use crate::AppState;
use crate::commands::{CommandName, plan};
use crate::desired;
use crate::model::{HostStatus, now_millis};
use crate::parcel_commands::{self, Phase, Stage, step_description};
use crate::parcels::RepoError;
use crate::store::{CommandRec, StepRec};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/parcels", get(list).post(upload))
        .route("/clusters/{cluster}/hosts", get(list_hosts).post(add_hosts))
        .route("/clusters/{cluster}/hosts/{host}", delete(remove_host))
        .route("/clusters/{cluster}/parcels", get(cluster_parcels))
        .route("/clusters/{cluster}/parcels/commands", post(create_command))
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadRequest(m) => ApiError::BadRequest(m),
            RepoError::NotFound(m) => ApiError::NotFound(m),
            RepoError::Conflict(m) => ApiError::Conflict(m),
            RepoError::Internal(m) => ApiError::Internal(m),
        }
    }
}

async fn cluster_exists(state: &AppState, cluster: &str) -> Result<(), ApiError> {
    match state.store.cluster(cluster).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("cluster {cluster} not found"))),
    }
}

/// Every known parcel with its state on every host of each cluster.
#[utoipa::path(get, path = "/api/v1/parcels", responses((status = 200, description = "known parcels, followed repositories, per-cluster and per-host state")), security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(state): Shared, _c: Caller) -> Result<Json<Value>, ApiError> {
    let wanted = state.store.cluster_parcels(None).await?;
    let members = state.store.all_cluster_hosts().await?;
    let mut hosts_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, h) in &members {
        hosts_of.entry(c.as_str()).or_default().push(h.as_str());
    }
    let clusters: Vec<String> = state.store.list_clusters().await?.into_iter().map(|c| c.name).collect();
    let status: BTreeMap<&str, Vec<desired::ParcelStatusRec>> =
        members.iter().map(|(_, h)| (h.as_str(), state.registry.parcel_status(h))).collect();
    let items: Vec<Value> = state
        .parcels
        .list()
        .into_iter()
        .map(|k| {
            let p = &k.parcel;
            let per_cluster: Vec<Value> = clusters
                .iter()
                .map(|c| {
                    let target = wanted
                        .iter()
                        .find(|w| &w.cluster == c && w.name == p.name && w.version == p.version)
                        .map(|w| w.target.clone());
                    let hosts: Vec<Value> = hosts_of
                        .get(c.as_str())
                        .into_iter()
                        .flatten()
                        .map(|h| {
                            let s = status
                                .get(h)
                                .and_then(|all| all.iter().find(|s| s.name == p.name && s.version == p.version));
                            let (st, percent, error) = match s {
                                None => ("available", None, String::new()),
                                Some(s) => (
                                    s.state.as_str(),
                                    (s.state == "downloading" && s.total_bytes > 0)
                                        .then(|| s.downloaded_bytes * 100 / s.total_bytes),
                                    s.error.clone(),
                                ),
                            };
                            json!({"host_id": h, "state": st, "percent": percent, "error": error})
                        })
                        .collect();
                    json!({"cluster": c, "target": target, "hosts": hosts})
                })
                .collect();
            json!({
                "parcel_name": p.parcel_name,
                "name": p.name,
                "version": p.version,
                "distro": p.distro,
                "sha256": p.sha256,
                "size": p.size,
                "components": p.components,
                "depends": p.depends,
                "source": k.source,
                "clusters": per_cluster,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "repositories": state.parcels.remotes() })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `NAME-VERSION-DISTRO.parcel`.
    pub file_name: String,
    /// What the uploader says the file's sha256 is (hex); checked.
    pub sha256: String,
}

/// Uploads a parcel file (the raw bytes as the body), streamed to disk.
#[utoipa::path(post, path = "/api/v1/parcels", params(UploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, description = "the stored parcel's manifest entry"), (status = 400, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn upload(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let entry = state.parcels.upload(&q.file_name, &q.sha256, Box::pin(stream)).await?;
    state
        .audit(caller.audit(
            "parcel.upload",
            "parcel",
            &entry.parcel_name,
            format!("uploaded {} ({} bytes, sha256 {})", entry.parcel_name, entry.size, entry.sha256),
        ))
        .await;
    Ok((StatusCode::CREATED, Json(json!(entry))))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/hosts", params(("cluster" = String, Path)), responses((status = 200, description = "host ids of the cluster")), security(("basic" = []), ("bearer" = [])))]
pub async fn list_hosts(
    State(state): Shared,
    _c: Caller,
    ApiPath(cluster): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    cluster_exists(&state, &cluster).await?;
    Ok(Json(json!({ "items": state.store.cluster_hosts(&cluster).await? })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddHosts {
    pub host_ids: Vec<String>,
}

/// Adds hosts to a cluster: they receive the cluster's parcels.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/hosts", params(("cluster" = String, Path)), request_body = AddHosts, responses((status = 200, description = "host ids of the cluster"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn add_hosts(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<AddHosts>,
) -> Result<Json<Value>, ApiError> {
    cluster_exists(&state, &cluster).await?;
    if req.host_ids.is_empty() {
        return Err(ApiError::BadRequest("host_ids is empty".into()));
    }
    let known = state.store.host_addresses(&req.host_ids).await?;
    for h in &req.host_ids {
        if !known.contains_key(h) {
            return Err(ApiError::BadRequest(format!("unknown host {h:?}")));
        }
        if state.registry.host_status(h) == Some(HostStatus::Decommissioned) {
            return Err(ApiError::BadRequest(format!("host {h} is decommissioned")));
        }
    }
    state.store.add_cluster_hosts(&cluster, &req.host_ids, now_millis()).await?;
    desired::refresh_parcels(&state).await?;
    state
        .audit(caller.audit("cluster.hosts.add", "cluster", &cluster, format!("added hosts {:?}", req.host_ids)))
        .await;
    Ok(Json(json!({ "items": state.store.cluster_hosts(&cluster).await? })))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}/hosts/{host}", params(("cluster" = String, Path), ("host" = String, Path)), responses((status = 204), (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn remove_host(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, host)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    cluster_exists(&state, &cluster).await?;
    for svc in state.store.list_services(&cluster).await? {
        if let Some(r) =
            state.store.roles_of_service(&cluster, &svc.name).await?.into_iter().find(|r| r.host_id == host)
        {
            return Err(ApiError::Conflict(format!(
                "host {host} runs role {} of service {}; delete the role first",
                r.name, svc.name
            )));
        }
    }
    if !state.store.remove_cluster_host(&cluster, &host).await? {
        return Err(ApiError::NotFound(format!("host {host} is not in cluster {cluster}")));
    }
    desired::refresh_parcels(&state).await?;
    state.audit(caller.audit("cluster.hosts.remove", "cluster", &cluster, format!("removed host {host}"))).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/parcels", params(("cluster" = String, Path)), responses((status = 200, description = "parcel versions the cluster wants, with their target")), security(("basic" = []), ("bearer" = [])))]
pub async fn cluster_parcels(
    State(state): Shared,
    _c: Caller,
    ApiPath(cluster): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    cluster_exists(&state, &cluster).await?;
    Ok(Json(json!({ "items": state.store.cluster_parcels(Some(&cluster)).await? })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelCommand {
    /// `distribute`, `activate`, `deactivate` or `remove`.
    pub name: String,
    /// Parcel name, e.g. `redis`.
    pub parcel: String,
    /// Version; for `deactivate` it may be omitted.
    #[serde(default)]
    pub version: Option<String>,
}

async fn host_steps(
    state: &AppState,
    hosts: &[String],
    phase: Phase,
    name: &str,
    version: &str,
    steps: &mut Vec<StepRec>,
) -> Result<Vec<u32>, ApiError> {
    let names = state.store.host_addresses(hosts).await?;
    let mut seqs = Vec::new();
    for h in hosts {
        let seq = steps.len() as u32 + 1;
        let hostname = names.get(h).map(|n| n.0.clone()).unwrap_or_default();
        steps.push(StepRec::pending(seq, step_description(phase, name, version, h, &hostname), vec![h.clone()]));
        seqs.push(seq);
    }
    Ok(seqs)
}

async fn start(
    state: &Arc<AppState>,
    cmd: CommandRec,
    steps: Vec<StepRec>,
    stages: Vec<Stage>,
    healthy_timeout: std::time::Duration,
) -> Result<Value, ApiError> {
    state.store.insert_command(&cmd, &steps).await?;
    let view = super::commands::view(&cmd, &steps);
    tokio::spawn(parcel_commands::execute(state.clone(), cmd, steps, stages, healthy_timeout));
    Ok(view)
}

/// Starts a cluster-level parcel command with one step per host.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/parcels/commands", params(("cluster" = String, Path)), request_body = ParcelCommand, responses((status = 202, description = "the command with a step per host"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_command(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<ParcelCommand>,
) -> Result<impl IntoResponse, ApiError> {
    cluster_exists(&state, &cluster).await?;
    let phase = Phase::parse(&req.name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown parcel command {:?}: use distribute, activate, deactivate or remove",
            req.name
        ))
    })?;
    let wanted = state.store.cluster_parcels(Some(&cluster)).await?;
    let version = match (&req.version, phase) {
        (Some(v), _) => v.clone(),
        (None, Phase::Deactivate) => {
            wanted.iter().find(|w| w.name == req.parcel && w.target == "active").map(|w| w.version.clone()).ok_or_else(
                || ApiError::Conflict(format!("no version of {} is active in cluster {cluster}", req.parcel)),
            )?
        }
        (None, _) => return Err(ApiError::BadRequest(format!("version is required for {}", req.name))),
    };
    let this = wanted.iter().find(|w| w.name == req.parcel && w.version == version);
    match phase {
        Phase::Distribute if state.parcels.find(&req.parcel, &version).is_none() => {
            return Err(ApiError::NotFound(format!(
                "no parcel {} {version} in the manager's repository or any followed repository",
                req.parcel
            )));
        }
        Phase::Activate if this.is_none() => {
            return Err(ApiError::Conflict(format!(
                "{} {version} is not distributed to cluster {cluster}; distribute it first",
                req.parcel
            )));
        }
        Phase::Remove if this.is_some_and(|w| w.target == "active") => {
            return Err(ApiError::Conflict(format!(
                "{} {version} is active in cluster {cluster}; deactivate it or activate another version first",
                req.parcel
            )));
        }
        Phase::Remove if this.is_none() => {
            return Err(ApiError::NotFound(format!(
                "{} {version} is not distributed to cluster {cluster}",
                req.parcel
            )));
        }
        _ => {}
    }
    let hosts = state.store.cluster_hosts(&cluster).await?;
    if hosts.is_empty() {
        return Err(ApiError::Conflict(format!(
            "cluster {cluster} has no hosts; add hosts with POST /api/v1/clusters/{cluster}/hosts"
        )));
    }
    if phase == Phase::Activate {
        // Never activate where the download is not complete.
        for h in &hosts {
            let ready = state.registry.parcel_status(h).iter().any(|s| {
                s.name == req.parcel && s.version == version && (s.state == "distributed" || s.state == "active")
            });
            if !ready {
                return Err(ApiError::Conflict(format!(
                    "{} {version} is not distributed on host {h} yet; wait for the distribute command",
                    req.parcel
                )));
            }
        }
    }
    let mut steps = Vec::new();
    let seqs = host_steps(&state, &hosts, phase, &req.parcel, &version, &mut steps).await?;
    let cmd = CommandRec {
        id: uuid::Uuid::new_v4().to_string(),
        cluster: cluster.clone(),
        service: String::new(),
        name: format!("parcel-{}", phase.as_str()),
        params: json!({"parcel": req.parcel, "version": version}),
        state: "running".into(),
        message: String::new(),
        created_by: caller.user.username.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    state
        .audit(caller.audit(
            &format!("parcel.{}", phase.as_str()),
            "cluster",
            &cluster,
            format!("{} {} {version} on {} hosts (command {})", phase.as_str(), req.parcel, hosts.len(), cmd.id),
        ))
        .await;
    let stages = vec![Stage::Hosts { phase, name: req.parcel.clone(), version, seqs }];
    let view = start(&state, cmd, steps, stages, std::time::Duration::from_secs(300)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// `upgrade` (to `version`) or `rollback` (to the previously active version)
/// of the parcel a service runs from: distribute and activate on the
/// cluster's hosts, then a rolling restart of the service's roles.
pub async fn upgrade_or_rollback(
    state: &Arc<AppState>,
    caller: &Caller,
    cluster: &str,
    service: &str,
    rollback: bool,
    version: Option<String>,
) -> Result<Value, ApiError> {
    let ctx = desired::load_service(state, cluster, service)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {service} not found in cluster {cluster}")))?;
    let st = &ctx.service_type;
    let parcel = st.parcels.first().cloned().ok_or_else(|| {
        ApiError::BadRequest(format!("service type {} runs from no parcel; nothing to upgrade", st.name))
    })?;
    let wanted = state.store.cluster_parcels(Some(cluster)).await?;
    let current = wanted.iter().find(|w| w.name == parcel && w.target == "active").map(|w| w.version.clone());
    let target = if rollback {
        if version.is_some() {
            return Err(ApiError::BadRequest(
                "rollback takes no version: it returns to the previously active one".into(),
            ));
        }
        wanted
            .iter()
            .filter(|w| w.name == parcel && Some(&w.version) != current.as_ref() && w.activated_at > 0)
            .max_by_key(|w| w.activated_at)
            .map(|w| w.version.clone())
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "no earlier active version of {parcel} is still distributed in cluster {cluster}"
                ))
            })?
    } else {
        let v = version.ok_or_else(|| ApiError::BadRequest("upgrade needs the parcel version to go to".into()))?;
        if state.parcels.find(&parcel, &v).is_none() {
            return Err(ApiError::NotFound(format!(
                "no parcel {parcel} {v} in the manager's repository or any followed repository"
            )));
        }
        if current.as_deref() == Some(v.as_str()) {
            return Err(ApiError::Conflict(format!("{parcel} {v} is already active in cluster {cluster}")));
        }
        v
    };
    let hosts = state.store.cluster_hosts(cluster).await?;
    let mut steps = Vec::new();
    let mut stages = Vec::new();
    let seqs = host_steps(state, &hosts, Phase::Distribute, &parcel, &target, &mut steps).await?;
    stages.push(Stage::Hosts { phase: Phase::Distribute, name: parcel.clone(), version: target.clone(), seqs });
    let seqs = host_steps(state, &hosts, Phase::Activate, &parcel, &target, &mut steps).await?;
    stages.push(Stage::Hosts { phase: Phase::Activate, name: parcel.clone(), version: target.clone(), seqs });
    let ordered: Vec<_> =
        ctx.roles.iter().map(|r| (r.clone(), st.role_type(&r.role_type).map(|t| t.start_order).unwrap_or(0))).collect();
    for (description, roles) in plan(CommandName::RollingRestart, &ordered, st.rolling_restart.batch_size) {
        let seq = steps.len() as u32 + 1;
        steps.push(StepRec::pending(seq, description, roles));
        stages.push(Stage::Restart { seq });
    }
    let name = if rollback { "rollback" } else { "upgrade" };
    let cmd = CommandRec {
        id: uuid::Uuid::new_v4().to_string(),
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        name: name.to_owned(),
        params: json!({"parcel": parcel, "from": current, "to": target}),
        state: "running".into(),
        message: String::new(),
        created_by: caller.user.username.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    state
        .audit(caller.audit(
            &format!("parcel.{name}"),
            "service",
            &format!("{cluster}/{service}"),
            format!("{name} {parcel} from {} to {target} (command {})", current.as_deref().unwrap_or("none"), cmd.id),
        ))
        .await;
    start(state, cmd, steps, stages, st.rolling_restart.healthy_timeout).await
}
