//! REST handlers for metrics: the query of stored series, the list of
//! series, and every latest value in the Prometheus text format.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
pub use drover_api::metrics::{MetricQuery, QueryResult, SeriesInfo, SeriesQuery};

use super::{ApiError, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain;

type Shared = State<Arc<AppState>>;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics/query", get(query))
        .route("/metrics/series", get(series))
        .route("/metrics/prometheus", get(prometheus))
}

/// The steps of the series a selector picks over a time range, each series
/// on its own or aggregated by labels. Points come from raw samples, minute
/// or hour rollups, whichever the range and step allow.
#[utoipa::path(get, path = "/api/v1/metrics/query", operation_id = "query_metrics", params(MetricQuery),
    responses((status = 200, body = QueryResult),
        (status = 400, description = "a bad selector, stat, agg, by label, time, step or an unknown metric", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn query(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<MetricQuery>,
) -> Result<Json<QueryResult>, ApiError> {
    Ok(Json(domain::metrics::query(&state, &caller.actor(), &q).await?))
}

/// The series that exist (those a selector picks, or all), with their
/// labels and latest values.
#[utoipa::path(get, path = "/api/v1/metrics/series", operation_id = "list_metric_series", params(SeriesQuery),
    responses((status = 200, body = Items<SeriesInfo>), (status = 400, description = "a bad selector", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn series(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<Items<SeriesInfo>>, ApiError> {
    Ok(Json(Items::new(domain::metrics::series(&state, &caller.actor(), q.selector.as_deref()).await?)))
}

/// The latest value of every host, role and service metric the caller may
/// see (reported in the last five minutes), in the Prometheus text
/// exposition format, with the labels `cluster`, `service`, `role`,
/// `role_type` and `host`.
#[utoipa::path(get, path = "/api/v1/metrics/prometheus", operation_id = "prometheus_metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
        content_type = "text/plain")),
    security(("basic" = []), ("bearer" = [])))]
pub async fn prometheus(State(state): Shared, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    let text = domain::metrics::prometheus(&state, &caller.actor()).await?;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}
