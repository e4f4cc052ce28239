//! REST handlers for clusters, service types, services, role groups, roles
//! and versioned configuration: each parses, calls one function of
//! [`crate::domain`] and maps the result.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::clusters::Cluster;
use crate::domain::config::{ConfigChange, ConfigDiff, ConfigPatch, ConfigView, RevisionDetail, RevisionSummary};
use crate::domain::roles::RoleView;
use crate::domain::services::{RoleGroup, ServiceTypeView, ServiceView};
use crate::domain::{clusters, config, roles, services};
pub use drover_api::clusters::CreateCluster;
pub use drover_api::config::{DiffQuery, Rollback};
pub use drover_api::roles::{CreateRoles, CreatedRoles};
pub use drover_api::services::{CreateGroup, CreateService};

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

// ---------- clusters ----------

#[utoipa::path(post, path = "/api/v1/clusters", request_body = CreateCluster, responses((status = 201, body = Cluster), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_cluster(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateCluster>,
) -> Result<impl IntoResponse, ApiError> {
    let c = clusters::create(&state, &caller.actor(), &req.name).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/api/v1/clusters", responses((status = 200, body = Items<Cluster>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_clusters(State(state): Shared, caller: Caller) -> Result<Json<Items<Cluster>>, ApiError> {
    Ok(Json(Items::new(clusters::list(&state, &caller.actor()).await?)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}", params(("cluster" = String, Path)), responses((status = 200, body = Cluster), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_cluster(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Cluster>, ApiError> {
    Ok(Json(clusters::get(&state, &caller.actor(), &name).await?))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}", params(("cluster" = String, Path)), responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn delete_cluster(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    clusters::delete(&state, &caller.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- service types ----------

#[utoipa::path(get, path = "/api/v1/service-types", responses((status = 200, body = Items<ServiceTypeView>), (status = 401, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
/// Any signed-in caller may read the catalog (it holds no cluster's data).
pub async fn list_service_types(State(state): Shared, _caller: Caller) -> Json<Items<ServiceTypeView>> {
    Json(Items::new(services::list_types(&state)))
}

#[utoipa::path(get, path = "/api/v1/service-types/{name}", params(("name" = String, Path)), responses((status = 200, description = "role types, parameters, rolling restart policy", body = ServiceTypeView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_service_type(
    State(state): Shared,
    _caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ServiceTypeView>, ApiError> {
    Ok(Json(services::get_type(&state, &name)?))
}

// ---------- services ----------

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services", params(("cluster" = String, Path)), request_body = CreateService, responses((status = 201, body = ServiceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_service(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiJson(req): ApiJson<CreateService>,
) -> Result<impl IntoResponse, ApiError> {
    let view = services::create(&state, &caller.actor(), &cluster, &req.name, &req.service_type).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services", params(("cluster" = String, Path)), responses((status = 200, body = Items<ServiceView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_services(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
) -> Result<Json<Items<ServiceView>>, ApiError> {
    Ok(Json(Items::new(services::list(&state, &caller.actor(), &cluster).await?)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, body = ServiceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_service(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    Ok(Json(services::get(&state, &caller.actor(), &cluster, &service).await?))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}/services/{service}", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn delete_service(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    services::delete(&state, &caller.actor(), &cluster, &service).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- role groups ----------

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/role-groups", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, body = Items<RoleGroup>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_groups(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Items<RoleGroup>>, ApiError> {
    Ok(Json(Items::new(services::list_groups(&state, &caller.actor(), &cluster, &service).await?)))
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/role-groups", params(("cluster" = String, Path), ("service" = String, Path)), request_body = CreateGroup, responses((status = 201, body = RoleGroup), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "the service's type does not allow it", body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_group(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<impl IntoResponse, ApiError> {
    let g = services::create_group(&state, &caller.actor(), &cluster, &service, &req.role_type, &req.name).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

// ---------- roles ----------

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/roles", params(("cluster" = String, Path), ("service" = String, Path)), request_body = CreateRoles, responses((status = 201, description = "the role (or `{items}` for an array or a count)", body = CreatedRoles), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "the service's type has no such role type, or cannot render the new roles' files", body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
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
    let one_role = single && requests.iter().all(|r| r.count.is_none());
    let mut views = roles::create(&state, &caller.actor(), &cluster, &service, requests, single).await?;
    let body = match views.pop() {
        Some(v) if one_role && views.is_empty() => CreatedRoles::One(Box::new(v)),
        last => {
            views.extend(last);
            CreatedRoles::Many(Items::new(views))
        }
    };
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/roles", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "roles with status, health, pid, applied and running revision, stale", body = Items<RoleView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_roles(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Items<RoleView>>, ApiError> {
    Ok(Json(Items::new(roles::list(&state, &caller.actor(), &cluster, &service).await?)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/roles/{role}", params(("cluster" = String, Path), ("service" = String, Path), ("role" = String, Path)), responses((status = 200, body = RoleView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_role(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service, role)): ApiPath<(String, String, String)>,
) -> Result<Json<RoleView>, ApiError> {
    Ok(Json(roles::get(&state, &caller.actor(), &cluster, &service, &role).await?))
}

#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}/services/{service}/roles/{role}", params(("cluster" = String, Path), ("service" = String, Path), ("role" = String, Path)), responses((status = 204, description = "removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn delete_role(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service, role)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    roles::delete(&state, &caller.actor(), &cluster, &service, &role).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- configuration ----------

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "effective values with their source and the current revision", body = ConfigView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_config(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<ConfigView>, ApiError> {
    Ok(Json(config::get(&state, &caller.actor(), &cluster, &service).await?))
}

#[utoipa::path(patch, path = "/api/v1/clusters/{cluster}/services/{service}/config", params(("cluster" = String, Path), ("service" = String, Path)), request_body = ConfigPatch, responses((status = 200, description = "the new revision", body = ConfigChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "the service's type refuses a parameter or value, or cannot render its files with them", body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn patch_config(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ConfigPatch>,
) -> Result<Json<ConfigChange>, ApiError> {
    Ok(Json(config::patch(&state, &caller.actor(), &cluster, &service, req).await?))
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/config/rollback", params(("cluster" = String, Path), ("service" = String, Path)), request_body = Rollback, responses((status = 200, description = "the new revision", body = ConfigChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "the service's type cannot render its files with the old values", body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn rollback_config(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<Rollback>,
) -> Result<Json<ConfigChange>, ApiError> {
    Ok(Json(config::rollback(&state, &caller.actor(), &cluster, &service, req.revision, &req.message).await?))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config/revisions", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "revisions, newest first", body = Items<RevisionSummary>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_revisions(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Items<RevisionSummary>>, ApiError> {
    Ok(Json(Items::new(config::revisions(&state, &caller.actor(), &cluster, &service).await?)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config/revisions/{revision}", params(("cluster" = String, Path), ("service" = String, Path), ("revision" = u64, Path)), responses((status = 200, description = "revision with values and where it took effect", body = RevisionDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_revision(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service, revision)): ApiPath<(String, String, u64)>,
) -> Result<Json<RevisionDetail>, ApiError> {
    Ok(Json(config::revision(&state, &caller.actor(), &cluster, &service, revision).await?))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/config/diff", params(("cluster" = String, Path), ("service" = String, Path), DiffQuery), responses((status = 200, description = "value changes and unified diffs of rendered files per role", body = ConfigDiff), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "a revision's files cannot be rendered with today's roles", body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn diff_config(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<ConfigDiff>, ApiError> {
    Ok(Json(config::diff(&state, &caller.actor(), &cluster, &service, q.from, q.to).await?))
}
