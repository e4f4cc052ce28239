//! REST handlers under `/api/v1`: enrollment tokens, hosts, users, API tokens,
//! events, the audit log and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
pub use drover_api::history::{AuditList, AuditQuery, EventList, EventQuery};
pub use drover_api::hosts::{HostList, HostQuery, MetricSeries, MetricsQuery, PatchHost, Resolution, parse_selector};
pub use drover_api::tokens::{
    ApiTokenList, CreateApiToken, CreateEnrollmentToken, CreatedApiToken, CreatedEnrollmentToken, EnrollmentTokenList,
};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain;
use crate::model::{AuditEntry, EnrollmentTokenInfo, Event, Host, now_millis};

/// The largest page offset (the query says `int32`).
/// Checks a page size: 1-1000.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and 1000, got {limit}")));
    }
    Ok(limit)
}
use crate::store::{ApiTokenInfo, AuditFilter, EventFilter, HostFilter};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/enrollment-tokens", get(list_enrollment_tokens).post(create_enrollment_token))
        .route("/enrollment-tokens/{id}", axum::routing::delete(revoke_enrollment_token))
        .route("/hosts", get(list_hosts))
        .route("/hosts/{id}", get(get_host).patch(patch_host).delete(decommission_host))
        .route("/hosts/{id}/metrics", get(host_metrics))
        .route("/events", get(list_events))
        .route("/audit", get(list_audit))
        .route("/api-tokens", get(list_api_tokens).post(create_api_token))
        .route("/api-tokens/{id}", axum::routing::delete(revoke_api_token))
        .route("/openapi.json", get(openapi))
}

/// Creates an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_enrollment_token(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> Result<impl IntoResponse, ApiError> {
    let created =
        domain::accounts::create_enrollment_token(&state, &caller.actor(), req.ttl_seconds, req.max_uses, &req.labels)
            .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists enrollment tokens (secrets are never shown again).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", responses((status = 200, body = Items<EnrollmentTokenInfo>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_enrollment_tokens(
    State(state): Shared,
    caller: Caller,
) -> Result<Json<Items<EnrollmentTokenInfo>>, ApiError> {
    Ok(Json(Items::new(domain::accounts::list_enrollment_tokens(&state, &caller.actor()).await?)))
}

/// Revokes an enrollment token; hosts already enrolled with it are unaffected.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn revoke_enrollment_token(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    domain::accounts::revoke_enrollment_token(&state, &caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists hosts, filtered by status, labels and hostname, paginated.
#[utoipa::path(get, path = "/api/v1/hosts", params(HostQuery), responses((status = 200, body = HostList),
    (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_hosts(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<HostQuery>,
) -> Result<Json<HostList>, ApiError> {
    let mut filter = HostFilter {
        status: q.status.as_deref().map(domain::hosts::parse_status).transpose()?,
        hostname: q.hostname,
        limit: q.limit.unwrap_or(100),
        offset: q.offset.unwrap_or(0),
        ..Default::default()
    };
    domain::hosts::apply_selector(&mut filter, q.label.as_deref().unwrap_or_default())?;
    let page = domain::hosts::list(&state, &caller.actor(), &filter).await?;
    Ok(Json(HostList { items: page.items, total: page.total, limit: filter.limit, offset: filter.offset }))
}

/// One host with its facts, labels, status and latest metrics.
#[utoipa::path(get, path = "/api/v1/hosts/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_host(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(domain::hosts::get(&state, &caller.actor(), &id).await?))
}

/// Changes a host's labels.
#[utoipa::path(patch, path = "/api/v1/hosts/{id}", params(("id" = String, Path)), request_body = PatchHost,
    responses((status = 200, body = Host), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, description = "the host is decommissioned", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn patch_host(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PatchHost>,
) -> Result<Json<Host>, ApiError> {
    let changes = req.labels.into_iter().collect();
    Ok(Json(domain::hosts::set_labels(&state, &caller.actor(), &id, &changes).await?))
}

/// Decommissions a host: revokes its certificate and closes its session. The
/// agent is refused from then on.
#[utoipa::path(delete, path = "/api/v1/hosts/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "the host, decommissioned", body = Host), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn decommission_host(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(domain::hosts::decommission(&state, &caller.actor(), &id).await?))
}

fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::BadRequest(format!("{name} must be an RFC 3339 time such as 2026-01-02T03:04:05Z: {e}")))
}

/// Downsampled metrics history of a host.
#[utoipa::path(get, path = "/api/v1/hosts/{id}/metrics", params(("id" = String, Path), MetricsQuery),
    responses((status = 200, body = MetricSeries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn host_metrics(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> Result<Json<MetricSeries>, ApiError> {
    let resolution = q.resolution.unwrap_or(60);
    let span = domain::hosts::default_span_ms(resolution)?;
    let to = q.to.as_deref().map(|s| parse_time("to", s)).transpose()?.unwrap_or_else(now_millis);
    let from = q.from.as_deref().map(|s| parse_time("from", s)).transpose()?.unwrap_or(to - span);
    let points = domain::hosts::metrics(&state, &caller.actor(), &id, resolution, from, to).await?;
    Ok(Json(MetricSeries { host_id: id, resolution_s: resolution, points }))
}

/// Recent events (newest first): hosts enrolled, lost, recovered, decommissioned.
#[utoipa::path(get, path = "/api/v1/events", params(EventQuery), responses((status = 200, body = Items<Event>),
    (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_events(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<Items<Event>>, ApiError> {
    let filter = EventFilter {
        object_type: q.object_type,
        object_id: q.object_id,
        since: q.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
        limit: page_limit(q.limit)?,
    };
    Ok(Json(Items::new(domain::history::list_events(&state, &caller.actor(), &filter).await?)))
}

/// The audit log (newest first): who changed what, when, from where.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery), responses((status = 200, body = Items<AuditEntry>),
    (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_audit(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Items<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        username: q.user,
        object_type: q.object_type,
        object_id: q.object_id,
        since: q.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
        until: q.until.as_deref().map(|s| parse_time("until", s)).transpose()?,
        limit: page_limit(q.limit)?,
    };
    Ok(Json(Items::new(domain::history::list_audit(&state, &caller.actor(), &filter).await?)))
}

/// Creates an API token for the calling user.
#[utoipa::path(post, path = "/api/v1/api-tokens", request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken), (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_api_token(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiToken>,
) -> Result<impl IntoResponse, ApiError> {
    let created = domain::accounts::create_api_token(
        &state,
        &caller.actor(),
        &caller.user,
        &req.name,
        req.ttl_seconds,
        req.grants,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists the calling user's API tokens (the tokens themselves are never shown again).
#[utoipa::path(get, path = "/api/v1/api-tokens", responses((status = 200, body = Items<ApiTokenInfo>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_api_tokens(State(state): Shared, caller: Caller) -> Result<Json<Items<ApiTokenInfo>>, ApiError> {
    Ok(Json(Items::new(domain::accounts::list_api_tokens(&state, &caller.actor(), &caller.user).await?)))
}

/// Revokes one of the calling user's API tokens.
#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn revoke_api_token(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    domain::accounts::revoke_api_token(&state, &caller.actor(), &caller.user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This API's OpenAPI 3 document (no authentication needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(State(state): Shared) -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document(&state.catalog))
}
