//! `GET /metrics`: the manager's own metrics ([`crate::telemetry`]) for a
//! Prometheus, and the middleware that times every HTTP request by route.
//!
//! A scrape needs what a REST read of the fleet needs (HTTP Basic, an API
//! token or a console session; the `read` permission globally) unless
//! `--metrics-unauthenticated`. The route is not under `/api/v1` and not in
//! the OpenAPI document: it is for scrapers, not API clients.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Caller};
use crate::AppState;
use crate::domain::{Permission, Scope};
use crate::telemetry::{
    HttpLabels, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, method_label, status_class,
};

/// The exposition: OpenMetrics text when the `Accept` header asks for it (as
/// Prometheus does), else the Prometheus text format 0.0.4.
pub async fn metrics(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = req.into_parts();
    if !state.config.metrics_unauthenticated {
        let caller = Caller::from_request_parts(&mut parts, &state).await?;
        caller.actor().require(Permission::Read, Scope::Global)?;
    }
    let openmetrics = wants_openmetrics(&parts.headers);
    let body = state
        .telemetry
        .encode(&state.store, openmetrics)
        .await
        .map_err(|e| ApiError::Internal(format!("could not encode the metrics: {e}")))?;
    let content_type = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { PROMETHEUS_TEXT_CONTENT_TYPE };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response())
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/openmetrics-text"))
}

/// Times a request from routing to its response's head, labelled with the
/// route template (never the raw path), the method and the status class.
pub async fn track_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let began = Instant::now();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_owned(),
        // The repository is a nested fallback service: no matched path.
        None if req.uri().path().starts_with("/repo/") => "/repo/{*file}".to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = method_label(req.method().as_str());
    let resp = next.run(req).await;
    let labels = HttpLabels { route, method, status: status_class(resp.status().as_u16()) };
    state.telemetry.http_request(&labels, began.elapsed());
    resp
}
