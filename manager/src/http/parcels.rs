//! REST handlers for parcels: the repository (list with per-host state,
//! streamed upload), cluster membership of hosts, the cluster-level lifecycle
//! commands (distribute, activate, deactivate, remove) and the per-service
//! upgrade and rollback.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
pub use drover_api::clusters::AddHosts;
pub use drover_api::parcels::{
    ClusterParcel, HostParcel, HostParcelState, NewParcelCommand, ParcelComponent, ParcelEntry, ParcelInCluster,
    ParcelList, ParcelTarget, ParcelView, UploadQuery,
};
use futures::TryStreamExt;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain;
use crate::domain::commands::CommandView;
use crate::parcels::RepoError;
use crate::store::ClusterParcelRec;

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

fn parcel_target(s: &str) -> Result<ParcelTarget, ApiError> {
    ParcelTarget::parse(s)
        .ok_or_else(|| ApiError::Internal(format!("stored parcel target {s:?} is not distributed or active")))
}

/// Every known parcel with its state on every host of each cluster.
#[utoipa::path(get, path = "/api/v1/parcels", operation_id = "list_parcels",
    responses((status = 200, description = "known parcels, followed repositories, per-cluster and per-host state", body = ParcelList)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(state): Shared, caller: Caller) -> Result<Json<ParcelList>, ApiError> {
    Ok(Json(domain::parcels::overview(&state, &caller.actor()).await?))
}

/// Uploads a parcel file (the raw bytes as the body), streamed to disk.
#[utoipa::path(post, path = "/api/v1/parcels", operation_id = "upload_parcel", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the parcel file"),
    responses((status = 201, description = "the stored parcel's manifest entry", body = ParcelEntry),
        (status = 400, description = "not a parcel, or not the one the name and sha256 describe", body = ErrorBody),
        (status = 409, description = "another build of this parcel version is in the repository", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn upload(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let entry =
        domain::parcels::upload(&state, &caller.actor(), &q.file_name, Some(&q.sha256), Box::pin(stream)).await?;
    Ok((StatusCode::CREATED, Json(domain::parcels::parcel_entry(entry))))
}

/// The hosts of a cluster, by id.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/hosts", operation_id = "list_cluster_hosts",
    params(("cluster" = String, Path)),
    responses((status = 200, description = "host ids of the cluster", body = Items<String>), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_hosts(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
) -> Result<Json<Items<String>>, ApiError> {
    Ok(Json(Items::new(domain::clusters::hosts(&state, &caller.actor(), &cluster).await?)))
}

/// Adds hosts to a cluster: they receive the cluster's parcels.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/hosts", operation_id = "add_cluster_hosts",
    params(("cluster" = String, Path)), request_body = AddHosts,
    responses((status = 200, description = "host ids of the cluster", body = Items<String>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "no such cluster or host", body = ErrorBody),
        (status = 409, description = "a host is decommissioned", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn add_hosts(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<AddHosts>,
) -> Result<Json<Items<String>>, ApiError> {
    Ok(Json(Items::new(domain::clusters::add_hosts(&state, &caller.actor(), &cluster, &req.host_ids).await?)))
}

/// Removes a host from a cluster; it must run no role of the cluster.
#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}/hosts/{host}", operation_id = "remove_cluster_host",
    params(("cluster" = String, Path), ("host" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody),
        (status = 409, description = "the host runs a role of the cluster", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn remove_host(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, host)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    domain::clusters::remove_host(&state, &caller.actor(), &cluster, &host).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl TryFrom<ClusterParcelRec> for ClusterParcel {
    type Error = ApiError;

    fn try_from(r: ClusterParcelRec) -> Result<Self, ApiError> {
        Ok(ClusterParcel {
            target: parcel_target(&r.target)?,
            cluster: r.cluster,
            name: r.name,
            version: r.version,
            file_name: r.file_name,
            sha256: r.sha256,
            size: r.size,
            activated_at: r.activated_at,
            updated_at: r.updated_at,
        })
    }
}

/// The parcel versions a cluster wants, with their target.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/parcels", operation_id = "list_cluster_parcels",
    params(("cluster" = String, Path)),
    responses((status = 200, description = "parcel versions the cluster wants, with their target", body = Items<ClusterParcel>),
        (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn cluster_parcels(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
) -> Result<Json<Items<ClusterParcel>>, ApiError> {
    let items =
        domain::clusters::parcels(&state, &caller.actor(), &cluster).await?.into_iter().map(ClusterParcel::try_from);
    Ok(Json(Items::new(items.collect::<Result<_, _>>()?)))
}

/// Starts a cluster-level parcel command with one step per host.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/parcels/commands", operation_id = "create_parcel_command",
    params(("cluster" = String, Path)), request_body = NewParcelCommand,
    responses((status = 202, description = "the command with a step per host", body = CommandView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "no such cluster, or no such parcel version", body = ErrorBody),
        (status = 409, description = "the cluster's state does not allow it (no hosts, not distributed, active)", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_command(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<NewParcelCommand>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let view = domain::parcels::create_command(&state, &caller.actor(), &cluster, req.into()).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
