//! The HTTP side of the manager: REST API under `/api/v1`, the web console at
//! `/`, `/healthz` and the OpenAPI document.
//!
//! Architecture invariant: only this module imports axum. Every error a client
//! sees is JSON `{"error": {"code", "message"}}` with a 4xx/5xx status; axum's
//! own rejections (bad JSON, bad query, bad path) are converted too.
//!
//! Codes: `invalid_request` 400, `unauthorized` 401, `forbidden` 403,
//! `not_found` 404, `method_not_allowed` 405, `conflict` 409,
//! `payload_too_large` 413, `unsupported_media_type` 415, `unprocessable`
//! 422, `too_many_requests` 429 (with `Retry-After`), `internal` 500, `unavailable` 503; server errors are logged where
//! they become a response. 400 is for requests the OpenAPI document rules
//! out; a request it allows is refused with 404 (a named object does not
//! exist), 409 (the current state forbids it) or 422 (the service's type
//! does not allow it), see [`crate::domain::DomainError`].
//! Every list is answered as `Items<T>`. The console cookie authenticates REST
//! calls only for GET and HEAD: a change needs an `Authorization` header,
//! which a cross-site form cannot add.

pub mod alerts;
pub mod api;
pub mod bootstrap;
pub mod commands;
pub mod console;
pub mod diagnostics;
pub mod environments;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod parcels;
pub mod providers;
pub mod self_metrics;
pub mod services;
pub mod templates;
pub mod tls;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
pub use drover_api::hosts::{
    LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, labels_patch_schema, labels_schema, validate_label,
};
pub use drover_api::{ErrorBody, ErrorDetail, Items};
use serde::Serialize;
use utoipa::openapi::schema::Type;

use crate::AppState;
use crate::auth::sha256_hex;
use crate::domain::access::{Access, Via};
use crate::model::now_millis;
use crate::store::{StoreError, UserRecord};

/// Name of the console session cookie.
pub const SESSION_COOKIE: &str = "drover_session";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .nest(
            "/api/v1",
            api::routes()
                .merge(services::routes())
                .merge(parcels::routes())
                .merge(providers::routes())
                .merge(bootstrap::routes())
                .merge(users::routes())
                .merge(alerts::routes())
                .merge(notifications::routes())
                .merge(metrics::routes())
                .merge(health::routes())
                .merge(logs::routes())
                .merge(diagnostics::routes())
                .merge(templates::routes())
                .merge(environments::routes()),
        )
        // The parcel repository, read-only and public like a package mirror
        // (manifest.json and the files, with range requests for resuming);
        // its hidden files (the index cache, uploads in progress) are not.
        .nest(
            "/repo",
            Router::new()
                .fallback_service(tower_http::services::ServeDir::new(state.parcels.dir()))
                .layer(axum::middleware::from_fn(hide_dot_files)),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(self_metrics::metrics))
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Enforced by the body extractors, so an oversized body gets the JSON
        // 413 of `ApiError` (tower-http's limit layer answers in plain text).
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
        .layer(axum::middleware::from_fn_with_state(state.clone(), self_metrics::track_requests))
        .with_state(state)
}

/// Serves the router on `listener` until `shutdown` resolves: over TLS when
/// `https` is given (see [`tls`]), else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    https: Option<tls::HttpsServer>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(state.clone());
    let Some(https) = https else {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
        return;
    };
    tls::serve(listener, app, https, state, shutdown).await;
}

/// An error returned by a REST handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    Forbidden { message: String, permission: Option<String> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Unprocessable(String),
    /// Too many failed sign-ins: wait `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unsupported(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let permission = match &self {
            ApiError::Forbidden { permission, .. } => permission.clone(),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: self.to_string(), permission } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"drover\", Bearer"));
        }
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::Database(sqlx_err) => ApiError::Unavailable(format!("database: {sqlx_err}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::domain::DomainError> for ApiError {
    fn from(e: crate::domain::DomainError) -> Self {
        use crate::domain::DomainError as D;
        match e {
            D::Invalid(m) => ApiError::BadRequest(m),
            D::Refused(m) => ApiError::Unprocessable(m),
            D::Forbidden { permission, message } => {
                ApiError::Forbidden { message, permission: Some(permission.as_str().to_owned()) }
            }
            D::NotFound(m) => ApiError::NotFound(m),
            D::Conflict(m) => ApiError::Conflict(m),
            D::Unsuitable(m) => ApiError::Unprocessable(m),
            D::Unavailable(m) => ApiError::Unavailable(m),
            D::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::desired::DesiredError> for ApiError {
    fn from(e: crate::desired::DesiredError) -> Self {
        crate::domain::DomainError::from(e).into()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(format!("{e:#}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::Unsupported("request body must be JSON with Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body is larger than 1 MiB".into())
            }
            other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

/// A body that could not be read: too large (413) or broken off (400).
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("request body is larger than 1 MiB".into())
        } else {
            ApiError::BadRequest(format!("could not read the request body: {}", e.body_text()))
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", r.body_text()))
    }
}

/// `axum::Json` with JSON errors, which also refuses an array where the
/// body's schema says object (serde's derived `Deserialize` of a struct takes
/// the fields as an array too).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned + utoipa::PartialSchema,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::Unsupported("request body must be JSON with Content-Type: application/json".into()));
        }
        let bytes = bytes::Bytes::from_request(req, state).await?;
        if bytes.trim_ascii_start().starts_with(b"[") && requires_object(&T::schema()) {
            return Err(ApiError::BadRequest("invalid JSON body: expected an object, got an array".into()));
        }
        if has_escaped_nul(&bytes) {
            return Err(ApiError::Unprocessable(NUL_REFUSED.into()));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// Why a request with a NUL character is refused (422: the OpenAPI document
/// allows any string, so by the API's status rules this is not a 400).
const NUL_REFUSED: &str = "invalid request: text may not contain the NUL character (\\u0000 in JSON, %00 in a URL); PostgreSQL cannot store it";

/// Whether JSON text holds an escaped NUL (`\u0000`) in a string: JSON has
/// no raw NUL and no backslash outside strings, so a lexical scan of escapes
/// is exact (`\\u0000` is a backslash and `u0000`, not a NUL).
fn has_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.get(i + 1..i + 6) == Some(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Refuses, with a JSON 422, a URL whose path
/// or query holds an encoded NUL (`%00`): no route takes one, and
/// PostgreSQL cannot compare or store text that has it.
async fn refuse_nul_in_url(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if req.uri().path_and_query().is_some_and(|pq| pq.as_str().contains("%00")) {
        return ApiError::Unprocessable(NUL_REFUSED.into()).into_response();
    }
    next.run(req).await
}

/// `Content-Type: application/json` or `application/*+json`, as axum's `Json` takes it.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(mime) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || (subtype.ends_with("+json") && !subtype.contains('/')))
}

/// Whether every value a schema admits is an object.
fn requires_object(schema: &utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> bool {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Schema, SchemaType};
    match schema {
        RefOr::T(Schema::Object(o)) => o.schema_type == SchemaType::Type(Type::Object),
        RefOr::T(Schema::OneOf(one)) => !one.items.is_empty() && one.items.iter().all(requires_object),
        RefOr::T(Schema::AnyOf(any)) => !any.items.is_empty() && any.items.iter().all(requires_object),
        RefOr::T(Schema::AllOf(all)) => all.items.iter().any(requires_object),
        _ => false,
    }
}

/// `axum::extract::Query` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRecord,
    /// Client address, for the audit log.
    pub source: String,
    pub via: Via,
    /// The API token's own grants, when it came with a token that has them.
    pub token_grants: Option<Vec<drover_api::users::Grant>>,
}

impl Caller {
    /// Who asks, as the domain layer checks and records it.
    pub fn actor(&self) -> crate::domain::Actor {
        crate::domain::Actor {
            username: self.user.username.clone(),
            source: self.source.clone(),
            via: self.via,
            access: Access::new(self.user.grants.clone(), self.token_grants.clone()),
        }
    }
}

fn source_of(parts: &Parts) -> String {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// Reads the console session cookie, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Authenticates a request: HTTP Basic, `Bearer <api token>`, or (for safe
/// methods only, so a forged cross-site form cannot change anything) the
/// console session cookie.
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Option<Authenticated>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value =
            value.to_str().map_err(|_| ApiError::Unauthorized("Authorization header is not valid text".into()))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        return match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
                match crate::throttle::password_sign_in(state, user, password, source_ip(parts), Via::Password).await? {
                    Ok(user) => Ok(Some(Authenticated { user, via: Via::Password, token_grants: None })),
                    Err(crate::throttle::SignInFailure::Held(held)) => Err(too_many_sign_ins(held)),
                    Err(crate::throttle::SignInFailure::Refused(_)) => Ok(None),
                }
            }
            "bearer" => {
                let found = state.store.user_by_api_token(&sha256_hex(rest.trim()), now_millis()).await?;
                if found.is_none() {
                    // Unknown tokens count against their source only.
                    let source = source_ip(parts);
                    state.throttle.check_source(source).map_err(too_many_sign_ins)?;
                    state.throttle.source_failure(source);
                }
                Ok(found.map(|(user, token_grants)| Authenticated { user, via: Via::Token, token_grants }))
            }
            _ => {
                Err(ApiError::Unauthorized(format!("unsupported authorization scheme {scheme:?}; use Basic or Bearer")))
            }
        };
    }
    if matches!(parts.method, Method::GET | Method::HEAD)
        && let Some(sid) = session_cookie(&parts.headers)
    {
        let user = console::session_user(state, &sid).await?;
        return Ok(user.map(|user| Authenticated { user, via: Via::Console, token_grants: None }));
    }
    Ok(None)
}

fn source_ip(parts: &Parts) -> std::net::IpAddr {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip())
}

fn too_many_sign_ins(held: crate::throttle::Held) -> ApiError {
    let secs = held.retry_after_secs();
    let whose = if held.by_source { "from this address" } else { "for this user name" };
    ApiError::TooManyRequests {
        message: format!("too many failed sign-ins {whose}; try again in {secs} s"),
        retry_after: secs,
    }
}

/// Who a request's credentials belong to.
#[derive(Debug)]
pub struct Authenticated {
    pub user: UserRecord,
    pub via: Via,
    pub token_grants: Option<Vec<drover_api::users::Grant>>,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts).await? {
            Some(a) => Ok(Caller { user: a.user, source: source_of(parts), via: a.via, token_grants: a.token_grants }),
            None if parts.headers.contains_key(header::AUTHORIZATION) => Err(ApiError::Unauthorized(
                "invalid credentials: wrong user name or password, or an unknown or expired API token".into(),
            )),
            None => Err(ApiError::Unauthorized(
                "authentication required: use HTTP Basic (user:password) or Authorization: Bearer <api token>".into(),
            )),
        }
    }
}

/// Whether the manager can do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    /// The database is unreachable, or a service's desired state cannot be
    /// computed.
    Degraded,
}

/// The answer of `/healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    pub status: HealthStatus,
    /// `ok`, or why the database cannot be reached.
    pub database: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub fleet: crate::registry::FleetSummary,
    /// The desired-state owner: `degraded` while a service's desired state
    /// cannot be computed (retried with backoff).
    pub desired_state: crate::desired::DesiredHealth,
}

/// Liveness and readiness, without authentication.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz",
    responses((status = 200, body = HealthReport), (status = 503, description = "the database is unreachable", body = HealthReport)))]
pub async fn healthz(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    let db = state.store.ping().await;
    let desired_state = state.desired.health();
    let body = HealthReport {
        status: if db.is_ok() && desired_state.failing.is_empty() { HealthStatus::Ok } else { HealthStatus::Degraded },
        database: match &db {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        },
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        fleet: state.registry.summary(),
        desired_state,
    };
    let status = if db.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// 404 for any path of the repository with a segment that starts with a
/// dot, percent-encoded or not: those files are the repository's own.
async fn hide_dot_files(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let hidden = req
        .uri()
        .path()
        .split('/')
        .any(|seg| seg.starts_with('.') || seg.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2e")));
    if hidden {
        return not_found(req.uri().clone()).await.into_response();
    }
    next.run(req).await
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
