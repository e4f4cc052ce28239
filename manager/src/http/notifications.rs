//! REST handlers for notification receivers, the route tree and the delivery log. The checks,
//! storage and permissions are in [`crate::domain::notifications`]; the types here document
//! the JSON the notify module reads and writes (the same format as `--notify-config`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::notifications::{self as dom, ReceiverEntry};
use crate::notify::{DeliveryAttempt, ReceiverConfig, ReceiverStats, RouteConfig};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/receivers", get(list_receivers))
        .route("/receivers/{name}", get(get_receiver).put(put_receiver).delete(delete_receiver))
        .route("/routes", get(get_routes).put(put_routes))
        .route("/notifications/deliveries", get(deliveries))
}

/// A webhook: the notification as JSON (Alertmanager's webhook format), POSTed, retried with
/// backoff, signed with HMAC-SHA256 when a secret is set (`X-Drover-Signature: sha256=HEX`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://`.
    pub url: String,
    /// Shown as `<redacted>`; sending `<redacted>` back keeps the stored secret.
    pub secret: Option<String>,
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<u32>,
    /// A duration such as `10s`, `500ms`, `1m`.
    pub timeout: Option<String>,
    /// The first wait between attempts (doubled each time, at most 30 s).
    pub backoff: Option<String>,
}

/// E-mail over SMTP.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// The SMTP server's host name.
    pub host: String,
    /// Default 465 with implicit TLS, 587 with STARTTLS, else 25.
    pub port: Option<u16>,
    /// Default `starttls`.
    #[schema(value_type = Option<String>, example = "starttls")]
    pub tls: Option<EmailTls>,
    /// A PEM file on the manager of extra CA certificates.
    pub ca_file: Option<String>,
    pub username: Option<String>,
    /// Shown as `<redacted>`; sending `<redacted>` back keeps the stored password.
    pub password: Option<String>,
    /// `Drover <drover@example.org>` or a bare address.
    pub from: String,
    pub to: Vec<String>,
    pub hello_name: Option<String>,
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<u32>,
    pub timeout: Option<String>,
    pub backoff: Option<String>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    Starttls,
    Opportunistic,
    None,
    Implicit,
}

/// A Prometheus Alertmanager (its v2 API).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSpec {
    /// The base URL; `/api/v2/alerts` is appended.
    pub url: String,
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<u32>,
    pub timeout: Option<String>,
    pub backoff: Option<String>,
}

/// A receiver as set: its integrations (none: alerts routed to it are dropped).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    /// The path's name when left out.
    pub name: Option<String>,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookSpec>,
    #[serde(default)]
    pub email_configs: Vec<EmailSpec>,
    #[serde(default)]
    pub alertmanager_configs: Vec<AlertmanagerSpec>,
}

/// Counters of a receiver since the notifier last started (a change of receivers or routes
/// restarts it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiverCounters {
    /// Notifications delivered (per integration).
    pub sent: u64,
    /// Notifications given up on after their last attempt.
    pub failed: u64,
    /// Attempts that failed, retried or not.
    pub failed_attempts: u64,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<ReceiverStats> for ReceiverCounters {
    fn from(s: ReceiverStats) -> Self {
        ReceiverCounters {
            sent: s.sent,
            failed: s.failed,
            failed_attempts: s.failed_attempts,
            last_error: s.last_error,
            last_attempt_at: s.last_attempt_at,
        }
    }
}

/// A receiver: its integrations with secrets redacted, and its counters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiverView {
    pub name: String,
    #[schema(value_type = Vec<WebhookSpec>)]
    pub webhook_configs: Vec<serde_json::Value>,
    #[schema(value_type = Vec<EmailSpec>)]
    pub email_configs: Vec<serde_json::Value>,
    #[schema(value_type = Vec<AlertmanagerSpec>)]
    pub alertmanager_configs: Vec<serde_json::Value>,
    pub stats: ReceiverCounters,
}

fn view(e: ReceiverEntry) -> ReceiverView {
    let ReceiverConfig { name, webhook_configs, email_configs, alertmanager_configs } = e.config;
    ReceiverView {
        name,
        webhook_configs: json_list(webhook_configs),
        email_configs: json_list(email_configs),
        alertmanager_configs: json_list(alertmanager_configs),
        stats: e.stats.into(),
    }
}

fn json_list<T: Serialize>(v: Vec<T>) -> Vec<serde_json::Value> {
    v.into_iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect()
}

/// A node of the route tree: alerts matching all its matchers land here, then in the first
/// child that matches (all matching children with `continue`); unset fields are inherited.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The receiver (the root must name one; every one named must exist).
    pub receiver: Option<String>,
    /// `severity="critical"`, `cluster=~"prod-.*"`, `service!=redis`, `host!~"test.*"`.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Whether an alert that matched this route also tries the next siblings.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Labels to group by; `["..."]`: one group per alert.
    pub group_by: Option<Vec<String>>,
    /// A duration such as `30s` (default 30s).
    pub group_wait: Option<String>,
    /// Default 5m.
    pub group_interval: Option<String>,
    /// Default 4h.
    pub repeat_interval: Option<String>,
    #[serde(default)]
    #[schema(no_recursion)]
    pub routes: Vec<RouteSpec>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub at: chrono::DateTime<chrono::Utc>,
    pub receiver: String,
    /// `webhook[0]`, `email[1]`, `alertmanager[0]`.
    pub integration: String,
    pub group_key: String,
    /// `firing` or `resolved`: the notification's status.
    #[schema(example = "firing")]
    pub status: String,
    /// How many alerts it carried.
    pub alerts: usize,
    /// 1 for a notification's first attempt.
    pub attempt: u32,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Whether this attempt ended the notification (delivered or given up).
    pub final_attempt: bool,
}

impl From<DeliveryAttempt> for DeliveryView {
    fn from(a: DeliveryAttempt) -> Self {
        DeliveryView {
            at: a.at,
            receiver: a.receiver,
            integration: a.integration,
            group_key: a.group_key,
            status: a.status.as_str().to_owned(),
            alerts: a.alerts,
            attempt: a.attempt,
            ok: a.ok,
            error: a.error,
            duration_ms: a.duration_ms,
            final_attempt: a.final_attempt,
        }
    }
}

/// Every receiver, secrets redacted, with its delivery counters.
#[utoipa::path(get, path = "/api/v1/receivers", operation_id = "list_receivers",
    responses((status = 200, body = Items<ReceiverView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_receivers(State(state): Shared, caller: Caller) -> Result<Json<Items<ReceiverView>>, ApiError> {
    let list = dom::list_receivers(&state, &caller.actor()).await?;
    Ok(Json(Items::new(list.into_iter().map(view).collect())))
}

/// A receiver.
#[utoipa::path(get, path = "/api/v1/receivers/{name}", operation_id = "get_receiver",
    params(("name" = String, Path)),
    responses((status = 200, body = ReceiverView), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_receiver(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ReceiverView>, ApiError> {
    Ok(Json(view(dom::get_receiver(&state, &caller.actor(), &name).await?)))
}

/// Creates (201) or replaces (200) a receiver; a secret or password left as `<redacted>`
/// keeps the stored one. Applied at once (open notification groups restart). Needs
/// `config.write` globally.
#[utoipa::path(put, path = "/api/v1/receivers/{name}", operation_id = "put_receiver",
    params(("name" = String, Path)), request_body = ReceiverSpec,
    responses((status = 200, body = ReceiverView), (status = 201, body = ReceiverView),
        (status = 400, description = "a bad field, named", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_receiver(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (entry, created) = dom::put_receiver(&state, &caller.actor(), &name, body).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(entry))))
}

/// Deletes a receiver; one a route names is a 409 naming the route. Needs `config.write`
/// globally.
#[utoipa::path(delete, path = "/api/v1/receivers/{name}", operation_id = "delete_receiver",
    params(("name" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
        (status = 409, description = "a route uses it", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_receiver(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    dom::delete_receiver(&state, &caller.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The route tree (404 until one is set).
#[utoipa::path(get, path = "/api/v1/routes", operation_id = "get_routes",
    responses((status = 200, body = RouteSpec), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_routes(State(state): Shared, caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    let route = dom::get_routes(&state, &caller.actor()).await?;
    Ok(Json(route_json(&route)))
}

fn route_json(route: &RouteConfig) -> serde_json::Value {
    serde_json::to_value(route).unwrap_or_default()
}

/// Replaces the route tree; every receiver it names must exist (400 naming it). Applied at
/// once (open notification groups restart). Needs `config.write` globally.
#[utoipa::path(put, path = "/api/v1/routes", operation_id = "put_routes", request_body = RouteSpec,
    responses((status = 200, body = RouteSpec),
        (status = 400, description = "a bad field or an unknown receiver, named", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_routes(
    State(state): Shared,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let route: RouteConfig = dom::from_json("route", &body)?;
    let route = dom::put_routes(&state, &caller.actor(), route).await?;
    Ok(Json(route_json(&route)))
}

#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this receiver's attempts.
    pub receiver: Option<String>,
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Delivery attempts since the notifier last started (kept in memory, bounded), newest first.
#[utoipa::path(get, path = "/api/v1/notifications/deliveries", operation_id = "list_deliveries",
    params(DeliveriesQuery),
    responses((status = 200, body = Items<DeliveryView>),
        (status = 400, description = "a bad limit", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn deliveries(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Items<DeliveryView>>, ApiError> {
    let limit = q.limit.unwrap_or(100) as usize;
    let list = dom::deliveries(&state, &caller.actor(), q.receiver.as_deref(), limit)?;
    Ok(Json(Items::new(list.into_iter().map(Into::into).collect())))
}
