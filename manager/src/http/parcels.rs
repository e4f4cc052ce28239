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
use crate::desired;
use crate::domain;
use crate::domain::parcels::ParcelCommand;
use crate::model::{HostStatus, now_millis};
use crate::parcels::RepoError;

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
    state.desired.refresh_parcels(&state).await?;
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
    state.desired.refresh_parcels(&state).await?;
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

/// Starts a cluster-level parcel command with one step per host.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/parcels/commands", params(("cluster" = String, Path)), request_body = crate::domain::parcels::ParcelCommand, responses((status = 202, description = "the command with a step per host"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_command(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<ParcelCommand>,
) -> Result<impl IntoResponse, ApiError> {
    let view = domain::parcels::create_command(&state, &caller.actor(), &cluster, req).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
