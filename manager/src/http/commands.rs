//! REST handlers for service commands; the rules live in
//! [`crate::domain::commands`], planning and execution in `crate::commands`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{ApiError, ApiJson, ApiPath, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::commands::{self, CommandView, NewCommand};
pub use drover_api::commands::Aborting;

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/commands", params(("cluster" = String, Path), ("service" = String, Path)), request_body = NewCommand, responses((status = 202, description = "the command with its planned steps", body = CommandView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "the service's type runs from no parcel (upgrade, rollback)", body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<NewCommand>,
) -> Result<impl IntoResponse, ApiError> {
    let view = commands::create(&state, &caller.actor(), &cluster, &service, req).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/commands/{id}", params(("id" = String, Path)), responses((status = 200, description = "state and steps", body = CommandView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CommandView>, ApiError> {
    Ok(Json(commands::get(&state, &caller.actor(), &id).await?))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/commands", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "recent commands, without steps", body = Items<CommandView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Items<CommandView>>, ApiError> {
    Ok(Json(Items::new(commands::list(&state, &caller.actor(), &cluster, &service).await?)))
}

#[utoipa::path(post, path = "/api/v1/commands/{id}/abort", params(("id" = String, Path)), responses((status = 200, description = "abort requested", body = Aborting), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn abort(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Aborting>, ApiError> {
    commands::abort(&state, &caller.actor(), &id).await?;
    Ok(Json(Aborting { id, state: "aborting".into() }))
}
