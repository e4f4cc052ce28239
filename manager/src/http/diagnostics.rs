//! REST handlers for diagnostic bundles and the redaction settings; the
//! rules, permissions and the collection itself are in
//! [`crate::domain::diagnostics`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, ApiJson, ApiPath, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::diagnostics::{self as dom, DiagnosticsView, NewDiagnostics, RedactionRuleView};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/diagnostics", get(list).post(create))
        .route("/diagnostics/{id}", get(get_one).delete(delete))
        .route("/diagnostics/{id}/download", get(download))
        .route("/settings/redaction", get(get_redaction).put(put_redaction))
}

/// Starts a diagnostic bundle of a cluster: a command with one step per
/// host in scope (see `command_id`). Needs `commands.run` on the cluster;
/// the audit log goes in only for a caller with `audit.read`.
#[utoipa::path(post, path = "/api/v1/diagnostics", operation_id = "create_diagnostics", request_body = NewDiagnostics,
    responses((status = 202, body = DiagnosticsView),
        (status = 400, description = "a bad window, size or include, named", body = ErrorBody),
        (status = 404, description = "an unknown cluster, service or host", body = ErrorBody),
        (status = 409, description = "no hosts in scope", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): Shared,
    caller: Caller,
    ApiJson(body): ApiJson<NewDiagnostics>,
) -> Result<(StatusCode, Json<DiagnosticsView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(dom::create(&state, &caller.actor(), body).await?)))
}

/// Bundles of the clusters the caller may read, newest first.
#[utoipa::path(get, path = "/api/v1/diagnostics", operation_id = "list_diagnostics",
    responses((status = 200, body = Items<DiagnosticsView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(state): Shared, caller: Caller) -> Result<Json<Items<DiagnosticsView>>, ApiError> {
    Ok(Json(Items::new(dom::list(&state, &caller.actor()).await?)))
}

/// A bundle.
#[utoipa::path(get, path = "/api/v1/diagnostics/{id}", operation_id = "get_diagnostics",
    params(("id" = String, Path)),
    responses((status = 200, body = DiagnosticsView), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_one(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DiagnosticsView>, ApiError> {
    Ok(Json(dom::get(&state, &caller.actor(), &id).await?))
}

/// The bundle's tar.gz (`ready` or `partial` bundles; 409 while running).
#[utoipa::path(get, path = "/api/v1/diagnostics/{id}/download", operation_id = "download_diagnostics",
    params(("id" = String, Path)),
    responses((status = 200, description = "the bundle", content_type = "application/gzip", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 409, description = "still running or failed", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn download(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (path, name, size) = dom::download(&state, &caller.actor(), &id).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| ApiError::from(dom::file_error(&id, &e)))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

/// Deletes a finished bundle and its file. Needs `commands.run` on its cluster.
#[utoipa::path(delete, path = "/api/v1/diagnostics/{id}", operation_id = "delete_diagnostics",
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
        (status = 409, description = "still running", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    dom::delete(&state, &caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The redaction rules applied to bundles (the built-in defaults until set).
#[utoipa::path(get, path = "/api/v1/settings/redaction", operation_id = "get_redaction_rules",
    responses((status = 200, body = Vec<RedactionRuleView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_redaction(State(state): Shared, caller: Caller) -> Result<Json<Vec<RedactionRuleView>>, ApiError> {
    Ok(Json(dom::get_rules(&state, &caller.actor()).await?))
}

/// Replaces the redaction rules; a pattern that does not compile is named
/// (400). Sensitive parameter values are always redacted besides. Needs
/// `config.write` globally.
#[utoipa::path(put, path = "/api/v1/settings/redaction", operation_id = "put_redaction_rules",
    request_body = Vec<RedactionRuleView>,
    responses((status = 200, body = Vec<RedactionRuleView>),
        (status = 400, description = "a bad rule, named", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_redaction(
    State(state): Shared,
    caller: Caller,
    ApiJson(rules): ApiJson<Vec<RedactionRuleView>>,
) -> Result<Json<Vec<RedactionRuleView>>, ApiError> {
    Ok(Json(dom::put_rules(&state, &caller.actor(), rules).await?))
}
