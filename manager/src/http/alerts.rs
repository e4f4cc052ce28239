//! REST handlers for alert rules (with YAML export and import), silences, maintenance mode
//! and the alert history. The checks and permissions are in [`crate::domain::alerts`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

pub use drover_api::alerts::{
    AlertHistoryEntry, AlertRuleSpec, AlertRuleView, AlertState, LabelMatcher, MaintenanceView, SilenceSpec,
    SilenceView,
};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::alerts as dom;
use crate::store::AlertHistoryFilter;

type Shared = State<Arc<AppState>>;

/// The content type of the rule export and import.
pub const YAML: &str = "text/yaml; charset=utf-8";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/alert-rules", get(list_rules).post(create_rule))
        .route("/alert-rules/export", get(export_rules))
        .route("/alert-rules/import", post(import_rules))
        .route("/alert-rules/{name}", get(get_rule).put(put_rule).delete(delete_rule))
        .route("/silences", get(list_silences).post(create_silence))
        .route("/silences/{id}", get(get_silence).delete(expire_silence))
        .route("/maintenance", get(list_maintenance))
        .route("/maintenance/{kind}/{target}", put(set_maintenance).delete(clear_maintenance))
        .route(
            "/maintenance/service/{cluster}/{service}",
            put(set_service_maintenance).delete(clear_service_maintenance),
        )
        .route("/alerts/history", get(history))
}

/// Every alert rule: the built-in ones (as shipped or as overridden) and the users' own.
#[utoipa::path(get, path = "/api/v1/alert-rules", operation_id = "list_alert_rules",
    responses((status = 200, body = Items<AlertRuleView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_rules(State(state): Shared, caller: Caller) -> Result<Json<Items<AlertRuleView>>, ApiError> {
    Ok(Json(Items::new(dom::list_rules(&state, &caller.actor()).await?)))
}

/// Creates a rule. Needs `config.write` globally. A rule naming an unknown metric, with an
/// invalid duration, an expression that does not parse or a bad name is refused with 400
/// naming the problem; a rule of that name (or a built-in one) is a 409.
#[utoipa::path(post, path = "/api/v1/alert-rules", operation_id = "create_alert_rule", request_body = AlertRuleSpec,
    responses((status = 201, body = AlertRuleView),
        (status = 400, description = "a bad name, expression, duration, label or annotation", body = ErrorBody),
        (status = 409, description = "a rule of that name exists", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_rule(
    State(state): Shared,
    caller: Caller,
    ApiJson(spec): ApiJson<AlertRuleSpec>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(dom::create_rule(&state, &caller.actor(), spec).await?)))
}

/// Every rule as YAML (a list of rule specs), as the import takes it.
#[utoipa::path(get, path = "/api/v1/alert-rules/export", operation_id = "export_alert_rules",
    responses((status = 200, description = "a YAML list of AlertRuleSpec", body = Vec<AlertRuleSpec>, content_type = "text/yaml")),
    security(("basic" = []), ("bearer" = [])))]
pub async fn export_rules(State(state): Shared, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    let text = dom::export_rules(&state, &caller.actor()).await?;
    Ok(([(header::CONTENT_TYPE, YAML)], text))
}

/// Sets every rule of a YAML list of rule specs (or `{rules: [...]}`), all or nothing: one bad
/// rule refuses the whole import with 400 naming it. Rules not listed are left as they are.
/// Needs `config.write` globally.
#[utoipa::path(post, path = "/api/v1/alert-rules/import", operation_id = "import_alert_rules",
    request_body(content = String, content_type = "text/yaml", description = "a YAML list of AlertRuleSpec"),
    responses((status = 200, body = Items<AlertRuleView>),
        (status = 400, description = "the YAML or one of its rules is invalid (named)", body = ErrorBody),
        (status = 413, description = "the body is larger than 1 MiB", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn import_rules(
    State(state): Shared,
    caller: Caller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Items<AlertRuleView>>, ApiError> {
    let body = body?;
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::BadRequest(format!("the body is not UTF-8: {e}")))?;
    if text.contains('\0') {
        return Err(ApiError::BadRequest("the body holds the NUL character".into()));
    }
    Ok(Json(Items::new(dom::import_rules(&state, &caller.actor(), text).await?)))
}

/// A rule.
#[utoipa::path(get, path = "/api/v1/alert-rules/{name}", operation_id = "get_alert_rule",
    params(("name" = String, Path)),
    responses((status = 200, body = AlertRuleView), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_rule(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AlertRuleView>, ApiError> {
    Ok(Json(dom::get_rule(&state, &caller.actor(), &name).await?))
}

/// Creates or replaces a rule; for a built-in rule, its override (disable it with
/// `enabled: false`, change its expression, `for`, severity, labels or annotations). Needs
/// `config.write` globally.
#[utoipa::path(put, path = "/api/v1/alert-rules/{name}", operation_id = "put_alert_rule",
    params(("name" = String, Path)), request_body = AlertRuleSpec,
    responses((status = 200, body = AlertRuleView),
        (status = 400, description = "a bad name, expression, duration, label or annotation, or the body names another rule", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_rule(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(spec): ApiJson<AlertRuleSpec>,
) -> Result<Json<AlertRuleView>, ApiError> {
    Ok(Json(dom::put_rule(&state, &caller.actor(), &name, spec).await?))
}

/// Deletes a rule; for a built-in rule, resets it to its default. Needs `config.write`
/// globally.
#[utoipa::path(delete, path = "/api/v1/alert-rules/{name}", operation_id = "delete_alert_rule",
    params(("name" = String, Path)),
    responses((status = 204, description = "deleted, or reset to the built-in default"),
        (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_rule(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    dom::delete_rule(&state, &caller.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Active silences and those that ended in the last day, newest first.
#[utoipa::path(get, path = "/api/v1/silences", operation_id = "list_silences",
    responses((status = 200, body = Items<SilenceView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_silences(State(state): Shared, caller: Caller) -> Result<Json<Items<SilenceView>>, ApiError> {
    Ok(Json(Items::new(dom::list_silences(&state, &caller.actor()).await?)))
}

/// Mutes the alerts whose labels match every matcher, from now until `ends_at` or for
/// `duration`. Needs `commands.run` on the cluster of a `cluster=NAME` matcher, else globally.
#[utoipa::path(post, path = "/api/v1/silences", operation_id = "create_silence", request_body = SilenceSpec,
    responses((status = 201, body = SilenceView),
        (status = 400, description = "no matchers, a bad operator, label name or regex, an end not in the future", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_silence(
    State(state): Shared,
    caller: Caller,
    ApiJson(spec): ApiJson<SilenceSpec>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(dom::create_silence(&state, &caller.actor(), spec).await?)))
}

/// A silence.
#[utoipa::path(get, path = "/api/v1/silences/{id}", operation_id = "get_silence",
    params(("id" = String, Path)),
    responses((status = 200, body = SilenceView), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_silence(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SilenceView>, ApiError> {
    Ok(Json(dom::get_silence(&state, &caller.actor(), &id).await?))
}

/// Expires a silence now.
#[utoipa::path(delete, path = "/api/v1/silences/{id}", operation_id = "expire_silence",
    params(("id" = String, Path)),
    responses((status = 200, body = SilenceView), (status = 404, body = ErrorBody),
        (status = 409, description = "it has already expired", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn expire_silence(
    State(state): Shared,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SilenceView>, ApiError> {
    Ok(Json(dom::expire_silence(&state, &caller.actor(), &id).await?))
}

/// Hosts, services and clusters in maintenance mode.
#[utoipa::path(get, path = "/api/v1/maintenance", operation_id = "list_maintenance",
    responses((status = 200, body = Items<MaintenanceView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_maintenance(State(state): Shared, caller: Caller) -> Result<Json<Items<MaintenanceView>>, ApiError> {
    Ok(Json(Items::new(dom::list_maintenance(&state, &caller.actor()).await?)))
}

/// A host or a cluster (path) for maintenance mode.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKind {
    Host,
    Cluster,
}

impl MaintenanceKind {
    fn as_str(self) -> &'static str {
        match self {
            MaintenanceKind::Host => "host",
            MaintenanceKind::Cluster => "cluster",
        }
    }
}

/// Why a host, service or cluster goes into maintenance mode.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSpec {
    #[serde(default)]
    pub comment: String,
}

/// Puts a host (by hostname) or a cluster in maintenance mode: its alerts are suppressed.
/// Needs `commands.run` on the cluster (for a host: on a cluster it is in, or globally).
#[utoipa::path(put, path = "/api/v1/maintenance/{kind}/{target}", operation_id = "set_maintenance",
    params(("kind" = inline(MaintenanceKind), Path), ("target" = String, Path, description = "a hostname or a cluster name")),
    request_body = MaintenanceSpec,
    responses((status = 200, body = MaintenanceView), (status = 404, description = "no such host or cluster", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn set_maintenance(
    State(state): Shared,
    caller: Caller,
    ApiPath((kind, target)): ApiPath<(MaintenanceKind, String)>,
    ApiJson(spec): ApiJson<MaintenanceSpec>,
) -> Result<Json<MaintenanceView>, ApiError> {
    Ok(Json(dom::set_maintenance(&state, &caller.actor(), kind.as_str(), &target, &spec.comment).await?))
}

/// Takes a host or a cluster out of maintenance mode.
#[utoipa::path(delete, path = "/api/v1/maintenance/{kind}/{target}", operation_id = "clear_maintenance",
    params(("kind" = inline(MaintenanceKind), Path), ("target" = String, Path, description = "a hostname or a cluster name")),
    responses((status = 204, description = "out of maintenance mode"),
        (status = 404, description = "no such host or cluster, or not in maintenance mode", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn clear_maintenance(
    State(state): Shared,
    caller: Caller,
    ApiPath((kind, target)): ApiPath<(MaintenanceKind, String)>,
) -> Result<StatusCode, ApiError> {
    dom::clear_maintenance(&state, &caller.actor(), kind.as_str(), &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts a service in maintenance mode. Needs `commands.run` on its cluster.
#[utoipa::path(put, path = "/api/v1/maintenance/service/{cluster}/{service}", operation_id = "set_service_maintenance",
    params(("cluster" = String, Path), ("service" = String, Path)),
    request_body = MaintenanceSpec,
    responses((status = 200, body = MaintenanceView), (status = 404, description = "no such cluster or service", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn set_service_maintenance(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(spec): ApiJson<MaintenanceSpec>,
) -> Result<Json<MaintenanceView>, ApiError> {
    let target = format!("{cluster}/{service}");
    Ok(Json(dom::set_maintenance(&state, &caller.actor(), "service", &target, &spec.comment).await?))
}

/// Takes a service out of maintenance mode.
#[utoipa::path(delete, path = "/api/v1/maintenance/service/{cluster}/{service}", operation_id = "clear_service_maintenance",
    params(("cluster" = String, Path), ("service" = String, Path)),
    responses((status = 204, description = "out of maintenance mode"),
        (status = 404, description = "no such cluster or service, or not in maintenance mode", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn clear_service_maintenance(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = format!("{cluster}/{service}");
    dom::clear_maintenance(&state, &caller.actor(), "service", &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the alert history.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this rule's alerts.
    pub rule: Option<String>,
    /// Only transitions to this state.
    pub state: Option<AlertState>,
    /// RFC 3339: only transitions at or after it.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Transitions of alerts (pending, firing, resolved), newest first, with whether a silence or
/// maintenance mode suppressed their notification.
#[utoipa::path(get, path = "/api/v1/alerts/history", operation_id = "alert_history", params(HistoryQuery),
    responses((status = 200, body = Items<AlertHistoryEntry>),
        (status = 400, description = "a bad since or limit", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn history(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Items<AlertHistoryEntry>>, ApiError> {
    let since = match &q.since {
        Some(s) => Some(chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).map_err(|e| {
            ApiError::BadRequest(format!("since must be an RFC 3339 time such as 2026-01-02T03:04:05Z: {e}"))
        })?),
        None => None,
    };
    let filter = AlertHistoryFilter { rule: q.rule, state: q.state, since, limit: q.limit.unwrap_or(100) };
    Ok(Json(Items::new(dom::history(&state, &caller.actor(), filter).await?)))
}
