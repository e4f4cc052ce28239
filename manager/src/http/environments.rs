//! REST handlers for environments (`/api/v1/environments`): up, list, show,
//! down. The rules live in [`crate::domain::environments`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, ApiJson, ApiPath, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::environments;
pub use drover_api::environments::{
    CreateEnvironment, CreateSnapshot, EnvironmentDetail, EnvironmentView, SnapshotView, Teardown,
};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/environments", get(list).post(create))
        .route("/environments/{name}", get(show).delete(delete))
        .route("/environments/{name}/snapshots", axum::routing::post(create_snapshot))
        .route("/snapshots", get(list_snapshots))
        .route("/snapshots/{name}", get(show_snapshot).delete(delete_snapshot))
}

/// Brings an environment up: containers from the Docker provider for every
/// host group of the template and one instantiation command on them (its
/// steps show the progress). For an environment that exists from the same
/// template, runs its instantiation again. Refused before anything is made
/// when the template, a variable, the image or the owner's host limit says
/// no. Needs `hosts.write` and `fleet.enroll` globally, like the
/// instantiation and the provider it uses; another owner needs `users.write`.
#[utoipa::path(post, path = "/api/v1/environments", operation_id = "create_environment",
    request_body = CreateEnvironment,
    responses((status = 202, description = "the environment, its instantiation started", body = EnvironmentDetail),
        (status = 400, description = "a bad name, ttl, host group or variable; the template does not validate", body = ErrorBody),
        (status = 404, description = "no such template or version", body = ErrorBody),
        (status = 409, description = "the name is taken, an instantiation runs, or the owner's host limit is reached", body = ErrorBody),
        (status = 503, description = "the Docker engine is unreachable", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateEnvironment>,
) -> Result<(StatusCode, Json<EnvironmentDetail>), ApiError> {
    let env = environments::create(&state, &caller.actor(), req).await?;
    Ok((StatusCode::ACCEPTED, Json(env)))
}

/// Every environment whose cluster the caller may read, with owner,
/// template, expiry, container count and health.
#[utoipa::path(get, path = "/api/v1/environments", operation_id = "list_environments",
    responses((status = 200, body = Items<EnvironmentView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(state): Shared, caller: Caller) -> Result<Json<Items<EnvironmentView>>, ApiError> {
    Ok(Json(Items::new(environments::list(&state, &caller.actor()).await?)))
}

/// One environment with its containers and the address and ports of every
/// role.
#[utoipa::path(get, path = "/api/v1/environments/{name}", operation_id = "get_environment",
    params(("name" = String, Path)),
    responses((status = 200, body = EnvironmentDetail), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn show(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<EnvironmentDetail>, ApiError> {
    Ok(Json(environments::detail(&state, &caller.actor(), &name).await?))
}

/// Takes an environment down: aborts its instantiation if it runs, removes
/// its containers with their volumes (revoking their token), its services,
/// hosts and cluster. Its owner may; others need `clusters.write` globally.
#[utoipa::path(delete, path = "/api/v1/environments/{name}", operation_id = "delete_environment",
    params(("name" = String, Path)),
    responses((status = 200, description = "what was removed", body = Teardown), (status = 404, body = ErrorBody),
        (status = 503, description = "the Docker engine is unreachable", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Teardown>, ApiError> {
    Ok(Json(environments::delete(&state, &caller.actor(), &name).await?))
}

/// Snapshots an environment without stopping anything: its configuration
/// as the stored template `snapshot-NAME` (a host group per container with
/// the roles it runs; sensitive values become variables, given again when
/// it comes back), and every container committed to an image with its
/// roles' data (`docker commit`; files as they are on disk: have a service
/// that buffers writes flush first). Its owner may; others need
/// `clusters.write` on the fleet; both need `fleet.enroll`.
#[utoipa::path(post, path = "/api/v1/environments/{name}/snapshots", operation_id = "create_snapshot",
    params(("name" = String, Path)), request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the name is taken, or a container has not enrolled", body = ErrorBody),
        (status = 503, description = "the Docker engine is unreachable or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_snapshot(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<CreateSnapshot>,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    Ok((StatusCode::CREATED, Json(environments::snapshot(&state, &caller.actor(), &name, req).await?)))
}

/// Every snapshot with its containers' images; `POST /api/v1/environments`
/// with `from_snapshot` brings one back.
#[utoipa::path(get, path = "/api/v1/snapshots", operation_id = "list_snapshots",
    responses((status = 200, body = Items<SnapshotView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_snapshots(State(state): Shared, caller: Caller) -> Result<Json<Items<SnapshotView>>, ApiError> {
    Ok(Json(Items::new(environments::snapshots(&state, &caller.actor()).await?)))
}

#[utoipa::path(get, path = "/api/v1/snapshots/{name}", operation_id = "get_snapshot",
    params(("name" = String, Path)),
    responses((status = 200, body = SnapshotView), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn show_snapshot(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SnapshotView>, ApiError> {
    Ok(Json(environments::get_snapshot(&state, &caller.actor(), &name).await?))
}

/// Deletes a snapshot: its images and its template. Needs `fleet.enroll`.
#[utoipa::path(delete, path = "/api/v1/snapshots/{name}", operation_id = "delete_snapshot",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 503, description = "the Docker engine is unreachable or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_snapshot(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    environments::delete_snapshot(&state, &caller.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
