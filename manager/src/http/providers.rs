//! REST handlers of the Docker provider: create container hosts, list them,
//! remove one or all. The work is in [`crate::providers`]; this file turns
//! requests into its calls and its errors into JSON errors.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::providers::{self, Actor, CreateHosts, CreatedHosts, DEFAULT_IMAGE, ProviderError, ProviderHostView};
pub use drover_api::providers::{CreateDockerHosts, DeleteAllQuery, Memory};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/providers/docker/hosts", get(list).post(create).delete(delete_all))
        .route("/providers/docker/hosts/{id}", delete(delete_one))
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Invalid(m) => ApiError::BadRequest(m),
            ProviderError::NotFound(m) => ApiError::NotFound(m),
            ProviderError::Forbidden(m) => ApiError::Forbidden { message: m, permission: None },
            ProviderError::Engine(m) => ApiError::Unavailable(m),
            ProviderError::Store(s) => s.into(),
        }
    }
}

/// Starts agent containers on the Docker engine with a fresh enrollment token.
#[utoipa::path(post, path = "/api/v1/providers/docker/hosts", operation_id = "create_docker_hosts",
    request_body = CreateDockerHosts,
    responses((status = 201, body = CreatedHosts), (status = 400, body = ErrorBody),
    (status = 503, description = "the Docker engine is unreachable or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateDockerHosts>,
) -> Result<impl IntoResponse, ApiError> {
    let memory = match req.memory {
        None => None,
        Some(Memory::Bytes(b)) => Some(b),
        Some(Memory::Text(t)) => Some(providers::docker::parse_memory(&t).map_err(ApiError::BadRequest)?),
    };
    let request = CreateHosts {
        count: req.count,
        image: req.image.unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
        network: req.network.unwrap_or_else(|| "bridge".to_owned()),
        labels: req.labels,
        cpus: req.cpus,
        memory,
        name_prefix: req.name_prefix.unwrap_or_else(|| "drover-".to_owned()),
        manager_url: req.manager_url,
    };
    let caller = caller.actor();
    let created = providers::create_docker_hosts(&state, Actor::authorize(&caller)?, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The containers this manager created, with their status and host.
#[utoipa::path(get, path = "/api/v1/providers/docker/hosts", operation_id = "list_docker_hosts",
    responses((status = 200, body = Items<ProviderHostView>),
    (status = 503, description = "the Docker engine is unreachable or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(state): Shared, caller: Caller) -> Result<Json<Items<ProviderHostView>>, ApiError> {
    let caller = caller.actor();
    Ok(Json(Items::new(providers::list_docker_hosts(&state, Actor::authorize(&caller)?).await?)))
}

/// Removes every container this manager created, their volumes, and
/// decommissions their hosts.
#[utoipa::path(delete, path = "/api/v1/providers/docker/hosts", operation_id = "delete_all_docker_hosts",
    params(DeleteAllQuery),
    responses((status = 200, description = "what was removed", body = Items<ProviderHostView>),
    (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 503, description = "the Docker engine is unreachable or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_all(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<DeleteAllQuery>,
) -> Result<Json<Items<ProviderHostView>>, ApiError> {
    let caller = caller.actor();
    let actor = Actor::authorize(&caller)?;
    if q.all != Some(true) {
        return Err(ApiError::BadRequest(
            "give ?all=true to remove every container this manager created, or DELETE /providers/docker/hosts/{id}"
                .into(),
        ));
    }
    Ok(Json(Items::new(providers::delete_all_docker_hosts(&state, actor).await?)))
}

/// Removes one container (id, 12+ digit id prefix, or name) and its volume,
/// and decommissions its host.
#[utoipa::path(delete, path = "/api/v1/providers/docker/hosts/{id}", operation_id = "delete_docker_host",
    params(("id" = String, Path)),
    responses((status = 200, description = "the removed container", body = ProviderHostView),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 503, description = "the Docker engine is unreachable or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_one(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ProviderHostView>, ApiError> {
    let caller = caller.actor();
    Ok(Json(providers::delete_docker_host(&state, Actor::authorize(&caller)?, &id).await?))
}
