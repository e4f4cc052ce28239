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

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items, validate_label};
use crate::AppState;
use crate::auth::{new_api_token, sha256_hex};
use crate::model::{AuditEntry, EnrollmentTokenInfo, Event, Host, HostStatus, User, now_millis, rfc3339};

/// The largest page offset (the query says `int32`).
const MAX_OFFSET: u32 = i32::MAX as u32;

/// Checks a page size: 1-1000.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and 1000, got {limit}")));
    }
    Ok(limit)
}
use crate::store::{ApiTokenInfo, ApiTokenRecord, AuditFilter, EventFilter, HostFilter};

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
        .route("/users/me", get(me))
        .route("/openapi.json", get(openapi))
}

const MAX_TOKEN_TTL_S: u64 = 365 * 24 * 3600;

/// Creates an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_enrollment_token(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> Result<impl IntoResponse, ApiError> {
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if ttl == 0 || ttl > MAX_TOKEN_TTL_S {
        return Err(ApiError::BadRequest(format!("ttl_seconds must be between 1 and {MAX_TOKEN_TTL_S}, got {ttl}")));
    }
    let max_uses = req.max_uses.unwrap_or(1);
    if !(1..=100_000).contains(&max_uses) {
        return Err(ApiError::BadRequest(format!("max_uses must be between 1 and 100000, got {max_uses}")));
    }
    for (k, v) in &req.labels {
        validate_label(k, v).map_err(ApiError::BadRequest)?;
    }
    let (rec, token) = crate::auth::issue_enrollment_token(
        &state.store,
        state.pki.ca_fingerprint(),
        &caller.user.username,
        std::time::Duration::from_secs(ttl),
        max_uses,
        req.labels.clone(),
    )
    .await?;
    state
        .audit(caller.audit(
            "enrollment_token.create",
            "enrollment_token",
            &rec.id,
            format!("created enrollment token: ttl {ttl}s, max_uses {max_uses}, labels {:?}", rec.labels),
        ))
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken {
            id: rec.id,
            token: token.to_string(),
            expires_at: rfc3339(rec.expires_at),
            max_uses,
            labels: rec.labels,
            ca_fingerprint: state.pki.ca_fingerprint().to_string(),
        }),
    ))
}

/// Lists enrollment tokens (secrets are never shown again).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", responses((status = 200, body = Items<EnrollmentTokenInfo>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_enrollment_tokens(
    State(state): Shared,
    _caller: Caller,
) -> Result<Json<Items<EnrollmentTokenInfo>>, ApiError> {
    let now = now_millis();
    Ok(Json(Items::new(state.store.list_enrollment_tokens().await?.iter().map(|t| t.to_api(now)).collect())))
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
    if !state.store.revoke_enrollment_token(&id, now_millis()).await? {
        return Err(ApiError::NotFound(format!("enrollment token {id} not found")));
    }
    state.audit(caller.audit("enrollment_token.revoke", "enrollment_token", &id, "revoked enrollment token")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists hosts, filtered by status, labels and hostname, paginated.
#[utoipa::path(get, path = "/api/v1/hosts", params(HostQuery), responses((status = 200, body = HostList),
    (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_hosts(
    State(state): Shared,
    _caller: Caller,
    ApiQuery(q): ApiQuery<HostQuery>,
) -> Result<Json<HostList>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            HostStatus::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!("invalid status {s:?}: use healthy, lost or decommissioned"))
            })
        })
        .transpose()?;
    let selector = drover_proto::labels::parse_selector(q.label.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let labels = selector.equalities().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let not_labels = selector.inequalities().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let limit = page_limit(q.limit)?;
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::BadRequest(format!("offset must be at most {MAX_OFFSET}, got {offset}")));
    }
    let page =
        state.store.list_hosts(&HostFilter { status, labels, not_labels, hostname: q.hostname, limit, offset }).await?;
    Ok(Json(HostList { items: page.items, total: page.total, limit, offset }))
}

async fn load_host(state: &AppState, id: &str) -> Result<Host, ApiError> {
    state.store.host(id).await?.ok_or_else(|| ApiError::NotFound(format!("host {id} not found")))
}

/// One host with its facts, labels, status and latest metrics.
#[utoipa::path(get, path = "/api/v1/hosts/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get_host(
    State(state): Shared,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(load_host(&state, &id).await?))
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
    let before = load_host(&state, &id).await?;
    if before.status == HostStatus::Decommissioned {
        return Err(ApiError::Conflict(format!("host {id} is decommissioned; its labels can no longer change")));
    }
    let mut labels = before.labels.clone();
    for (k, v) in &req.labels {
        match v {
            Some(v) => {
                validate_label(k, v).map_err(ApiError::BadRequest)?;
                labels.insert(k.clone(), v.clone());
            }
            None => {
                // A key no label can have is a mistake, not a no-op.
                validate_label(k, "").map_err(ApiError::BadRequest)?;
                labels.remove(k);
            }
        }
    }
    if !state.store.set_host_labels(&id, &labels).await? {
        return Err(ApiError::NotFound(format!("host {id} not found")));
    }
    state
        .audit(caller.audit("host.update_labels", "host", &id, format!("labels {:?} -> {:?}", before.labels, labels)))
        .await;
    Ok(Json(load_host(&state, &id).await?))
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
    let before = state
        .store
        .decommission_host(&id, &caller.user.username, now_millis())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("host {id} not found")))?;
    if before.status != HostStatus::Decommissioned {
        state.registry.decommission(&id);
        state
            .audit(caller.audit(
                "host.decommission",
                "host",
                &id,
                format!(
                    "decommissioned host {} (was {}); certificate {} revoked",
                    before.hostname,
                    before.status.as_str(),
                    before.cert_serial
                ),
            ))
            .await;
        tracing::info!(host = %id, by = %caller.user.username, "host decommissioned");
    }
    Ok(Json(load_host(&state, &id).await?))
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
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> Result<Json<MetricSeries>, ApiError> {
    load_host(&state, &id).await?;
    let resolution = q.resolution.unwrap_or(60);
    let span = match resolution {
        60 => 3_600_000,
        3600 => 7 * 24 * 3_600_000,
        other => return Err(ApiError::BadRequest(format!("resolution must be 60 or 3600, got {other}"))),
    };
    let to = q.to.as_deref().map(|s| parse_time("to", s)).transpose()?.unwrap_or_else(now_millis);
    let from = q.from.as_deref().map(|s| parse_time("from", s)).transpose()?.unwrap_or(to - span);
    let points = state.store.host_metrics(&id, resolution, from, to).await?;
    Ok(Json(MetricSeries { host_id: id, resolution_s: resolution, points }))
}

/// Recent events (newest first): hosts enrolled, lost, recovered, decommissioned.
#[utoipa::path(get, path = "/api/v1/events", params(EventQuery), responses((status = 200, body = Items<Event>),
    (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_events(
    State(state): Shared,
    _caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<Items<Event>>, ApiError> {
    let filter = EventFilter {
        object_type: q.object_type,
        object_id: q.object_id,
        since: q.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
        limit: page_limit(q.limit)?,
    };
    Ok(Json(Items::new(state.store.list_events(&filter).await?)))
}

/// The audit log (newest first): who changed what, when, from where.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery), responses((status = 200, body = Items<AuditEntry>),
    (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list_audit(
    State(state): Shared,
    _caller: Caller,
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
    Ok(Json(Items::new(state.store.list_audit(&filter).await?)))
}

/// Creates an API token for the calling user.
#[utoipa::path(post, path = "/api/v1/api-tokens", request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken), (status = 400, body = ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create_api_token(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiToken>,
) -> Result<impl IntoResponse, ApiError> {
    let name = req.name.trim();
    if name.is_empty() || req.name.chars().count() > 100 || req.name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be 1-100 characters, not only spaces, without control characters".into(),
        ));
    }
    if let Some(ttl) = req.ttl_seconds
        && (ttl == 0 || ttl > 10 * MAX_TOKEN_TTL_S)
    {
        return Err(ApiError::BadRequest(format!("ttl_seconds must be between 1 and {}", 10 * MAX_TOKEN_TTL_S)));
    }
    let now = now_millis();
    let token = new_api_token();
    let rec = ApiTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: caller.user.id.clone(),
        name: name.to_owned(),
        token_hash: sha256_hex(&token),
        created_at: now,
        expires_at: req.ttl_seconds.map(|t| now + (t as i64) * 1000),
    };
    state.store.insert_api_token(&rec).await?;
    state.audit(caller.audit("api_token.create", "api_token", &rec.id, format!("created API token {name:?}"))).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiToken { id: rec.id, name: rec.name, token, expires_at: rec.expires_at.map(rfc3339) }),
    ))
}

/// Lists the calling user's API tokens (the tokens themselves are never shown again).
#[utoipa::path(get, path = "/api/v1/api-tokens", responses((status = 200, body = Items<ApiTokenInfo>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_api_tokens(State(state): Shared, caller: Caller) -> Result<Json<Items<ApiTokenInfo>>, ApiError> {
    Ok(Json(Items::new(state.store.list_api_tokens(&caller.user.id).await?)))
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
    if !state.store.delete_api_token(&id, &caller.user.id).await? {
        return Err(ApiError::NotFound(format!("API token {id} not found")));
    }
    state.audit(caller.audit("api_token.revoke", "api_token", &id, "revoked API token")).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The calling user.
#[utoipa::path(get, path = "/api/v1/users/me", responses((status = 200, body = User), (status = 401, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<User> {
    Json(caller.user.to_api())
}

/// This API's OpenAPI 3 document (no authentication needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(State(state): Shared) -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document(&state.catalog))
}
