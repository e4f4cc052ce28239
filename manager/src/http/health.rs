//! REST handlers for the health tree and the active alerts, from the alert engine's latest
//! cycle.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
pub use drover_api::alerts::{AlertView, AlertsQuery, HealthNode, HealthQuery};

use super::{ApiError, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain;

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/health", get(health)).route("/alerts", get(alerts))
}

/// The health of a cluster (its services, their roles, and its hosts), a service, a role or a
/// host, with the tests that decided each status and their values; with no parameter, every
/// cluster the caller may read (and, for fleet-wide readers, hosts outside clusters).
#[utoipa::path(get, path = "/api/v1/health", operation_id = "get_health", params(HealthQuery),
    responses((status = 200, body = HealthNode),
        (status = 400, description = "parameters that do not go together", body = ErrorBody),
        (status = 404, description = "no such cluster, service, role or host (or not yet evaluated)", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn health(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<HealthQuery>,
) -> Result<Json<HealthNode>, ApiError> {
    Ok(Json(domain::health::health(&state, &caller.actor(), &q).await?))
}

/// The pending and firing alerts the caller may see, most severe first.
#[utoipa::path(get, path = "/api/v1/alerts", operation_id = "list_alerts", params(AlertsQuery),
    responses((status = 200, body = Items<AlertView>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn alerts(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Json<Items<AlertView>>, ApiError> {
    Ok(Json(Items::new(domain::health::alerts(&caller.actor(), &state.alerts.active(), q.state))))
}
