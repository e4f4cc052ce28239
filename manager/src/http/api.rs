//! REST handlers under `/api/v1`: enrollment tokens, hosts, users, API tokens,
//! events, the audit log and the OpenAPI document.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items, validate_label};
use crate::AppState;
use crate::auth::{new_api_token, sha256_hex};
use crate::model::{
    AuditEntry, EnrollmentTokenInfo, Event, Host, HostStatus, Labels, MetricPoint, User, now_millis, rfc3339,
};
use crate::whole;

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

/// The answers of the list operations, by name (the `drover` CLI reads them).
pub type EnrollmentTokenList = Items<EnrollmentTokenInfo>;
pub type EventList = Items<Event>;
pub type AuditList = Items<AuditEntry>;
pub type ApiTokenList = Items<ApiTokenInfo>;

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime in seconds (default 3600, at most one year).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub ttl_seconds: Option<u64>,
    /// How many hosts may enroll with the token (default 1, at most 100000).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_uses: Option<u32>,
    /// Labels given to every host enrolled with the token.
    #[serde(default)]
    #[schema(schema_with = super::labels_schema)]
    pub labels: Labels,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    pub id: String,
    /// The token to give agents (`--token` / `DROVER_TOKEN`). It carries the
    /// CA fingerprint; it is shown once and cannot be retrieved later.
    pub token: String,
    pub expires_at: String,
    pub max_uses: u32,
    pub labels: Labels,
    /// SHA-256 of the manager's CA certificate.
    pub ca_fingerprint: String,
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HostQuery {
    /// Only hosts in this state.
    #[param(value_type = Option<HostStatus>)]
    pub status: Option<String>,
    /// Label selector `key=value[,key!=value...]`; all must hold (a host
    /// without the label matches `key!=value`).
    ///
    /// Whitespace around parts, keys and values is ignored; keys and values
    /// follow the label rules.
    #[param(schema_with = crate::model::label_selector_schema)]
    pub label: Option<String>,
    /// Substring of the hostname.
    pub hostname: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Hosts to skip (default 0).
    #[param(minimum = 0, maximum = 2_147_483_647)]
    pub offset: Option<u32>,
}

/// A page of hosts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub items: Vec<Host>,
    /// Hosts matching the filter, across all pages.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

/// Parses a `key=value,key2=value2` label selector (equalities only; the
/// host list and role placement also take `key!=value`, see
/// [`drover_proto::labels::parse_selector`]).
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, String> {
    let sel = drover_proto::labels::parse_selector(s).map_err(|e| e.to_string())?;
    if let Some((k, v)) = sel.inequalities().next() {
        return Err(format!("invalid label selector {k}!={v}: only key=value is accepted here"));
    }
    Ok(sel.equalities().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchHost {
    /// JSON merge patch of the labels: a string sets a label, null removes it.
    #[schema(schema_with = super::labels_patch_schema)]
    pub labels: BTreeMap<String, Option<String>>,
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

/// A metrics bucket size in seconds: 60 or 3600.
pub struct Resolution;

impl utoipa::PartialSchema for Resolution {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([60, 3600]))
            .into()
    }
}

impl ToSchema for Resolution {}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Bucket size in seconds: 60 (default) or 3600.
    #[param(inline, value_type = Option<Resolution>)]
    pub resolution: Option<u32>,
    /// Start, RFC 3339 (default: one hour ago for minutes, seven days ago for hours).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End, RFC 3339 (default: now).
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// A host's metrics history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    pub host_id: String,
    pub resolution_s: u32,
    pub points: Vec<MetricPoint>,
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events about this kind of object, e.g. `host`.
    pub object_type: Option<String>,
    /// Only events about this object.
    pub object_id: Option<String>,
    /// Only events at or after this time, RFC 3339.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// How many, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only changes by this user.
    pub user: Option<String>,
    /// Only changes to this kind of object, e.g. `cluster`.
    pub object_type: Option<String>,
    /// Only changes to this object.
    pub object_id: Option<String>,
    /// Only changes at or after this time, RFC 3339.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only changes before this time, RFC 3339.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// How many, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    /// What the token is for, e.g. "ci-pipeline": 1-100 characters, not only
    /// spaces, no control characters (spaces around it are dropped).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Lifetime in seconds (at most ten years); omitted means it never expires.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    pub id: String,
    pub name: String,
    /// Use as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    pub expires_at: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::parse_selector;

    #[test]
    fn selectors() {
        assert_eq!(parse_selector("a=1, b=2").unwrap(), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(parse_selector("").unwrap(), vec![]);
        assert!(parse_selector("novalue").is_err());
        assert!(parse_selector("bad key=1").is_err());
    }
}
