//! `POST /api/v1/hosts/bootstrap`: installs the agent over SSH on machines
//! that run sshd. The request is checked here (a bad one is a 400 and touches
//! no host); the work runs as a command in [`crate::bootstrap`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use super::{ApiError, ApiJson, Caller, ErrorBody};
use crate::AppState;
use crate::bootstrap::{self, Actor, BootstrapRequest, StartError};
use crate::domain::commands::CommandView;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/hosts/bootstrap", post(create))
}

/// Starts a bootstrap command with a step per address; follow it at
/// `GET /api/v1/commands/{id}`.
#[utoipa::path(post, path = "/api/v1/hosts/bootstrap", operation_id = "bootstrap_hosts", request_body = BootstrapRequest,
    responses((status = 202, description = "the command with a step per host", body = CommandView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<BootstrapRequest>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let actor = Actor::authorize(&caller.actor())?;
    let (cmd, steps) = bootstrap::request(state, actor, req).await.map_err(|e| match e {
        StartError::Invalid(m) => ApiError::BadRequest(m),
        StartError::Store(s) => s.into(),
        e @ StartError::Internal(_) => ApiError::Internal(e.to_string()),
    })?;
    Ok((StatusCode::ACCEPTED, Json(crate::domain::commands::view(&cmd, &steps))))
}
