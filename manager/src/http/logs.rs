//! REST handlers for logs: a role's tail and follow (JSON, or server-sent
//! events with `follow=true` or `Accept: text/event-stream`), a role's whole
//! log file, the agent's own log and the search across hosts. The work is
//! `domain::logs`; here are the shapes on the wire.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;

use super::{ApiError, ApiPath, ApiQuery, Caller, ErrorBody};
use crate::AppState;
use crate::agent_requests::ReplyPart;
use crate::domain;
use crate::domain::logs::{
    LogDownloadQuery, LogEnd, LogLineView, LogSearchQuery, LogSearchResult, LogSearchSummary, LogTail, LogsQuery,
    LogsResult, SearchEvent,
};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clusters/{cluster}/services/{service}/roles/{role}/logs", get(role_logs))
        .route("/clusters/{cluster}/services/{service}/roles/{role}/logs/download", get(download))
        .route("/hosts/{id}/agent-log", get(agent_log))
        .route("/logs/search", get(search))
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"))
}

fn json_event(name: &str, value: &impl serde::Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// `event: line` per line as the agent sends them, then `event: end` when
/// the agent's answer ends. The client going away drops the stream, which
/// ends the agent's follow.
fn line_events(tail: LogTail) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some((tail, Vec::<LogLineView>::new())), |state| async move {
        let (mut tail, mut queued) = state?;
        loop {
            if let Some(line) = queued.pop() {
                return Some((Ok(json_event("line", &line)), Some((tail, queued))));
            }
            match tail.replies.next().await {
                Some(ReplyPart::Lines(lines)) => {
                    queued = lines.into_iter().rev().map(|l| tail.labeller.view(l)).collect();
                }
                Some(ReplyPart::Archive(_)) => {}
                Some(ReplyPart::End(end)) => {
                    let end = LogEnd { error: (!end.error.is_empty()).then_some(end.error) };
                    return Some((Ok(json_event("end", &end)), None));
                }
                None => {
                    let end = LogEnd { error: Some("the agent's answer ended".into()) };
                    return Some((Ok(json_event("end", &end)), None));
                }
            }
        }
    })
}

async fn answer(tail: LogTail, events: bool) -> Response {
    if tail.follow || events {
        Sse::new(line_events(tail)).keep_alive(KeepAlive::default()).into_response()
    } else {
        Json(tail.collect().await).into_response()
    }
}

/// A role's log lines: the last `tail` (default 100) of its stdout, stderr
/// and own log files within the window, oldest first. With `follow=true`
/// (or `Accept: text/event-stream`) server-sent events: `event: line` (data:
/// a LogLineView) for those lines and every new one, until the client goes
/// away; `event: end` (data: `{"error":..}`) if the agent's answer ends.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/roles/{role}/logs",
    operation_id = "role_logs",
    params(("cluster" = String, Path), ("service" = String, Path), ("role" = String, Path, description = "role name or id"), LogsQuery),
    responses((status = 200, body = LogsResult, description = "JSON, or text/event-stream when following"),
        (status = 400, description = "a bad regex, window, level, stream or tail", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, description = "the role's host is not connected", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn role_logs(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((cluster, service, role)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let tail = domain::logs::role_logs(&state, &caller.actor(), &cluster, &service, &role, &q).await?;
    Ok(answer(tail, wants_events(&headers)).await)
}

/// One log file of a role, whole, as text (an attachment).
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/roles/{role}/logs/download",
    operation_id = "download_role_log",
    params(("cluster" = String, Path), ("service" = String, Path), ("role" = String, Path), LogDownloadQuery),
    responses((status = 200, body = String, content_type = "text/plain"),
        (status = 400, description = "not a log file of the role", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn download(
    State(state): Shared,
    caller: Caller,
    ApiPath((cluster, service, role)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<LogDownloadQuery>,
) -> Result<Response, ApiError> {
    let tail = domain::logs::role_log_file(&state, &caller.actor(), &cluster, &service, &role, &q.file).await?;
    let file = q.file.clone();
    let body = futures::stream::unfold(Some(tail), move |state| {
        let file = file.clone();
        async move {
            let mut tail = state?;
            loop {
                match tail.replies.next().await {
                    Some(ReplyPart::Lines(lines)) => {
                        let mut chunk = String::new();
                        for l in lines.into_iter().filter(|l| l.file == file) {
                            chunk.push_str(&l.text);
                            chunk.push('\n');
                        }
                        if !chunk.is_empty() {
                            return Some((Ok::<_, Infallible>(chunk), Some(tail)));
                        }
                    }
                    Some(ReplyPart::Archive(_)) => {}
                    Some(ReplyPart::End(_)) | None => return None,
                }
            }
        }
    });
    let name = q.file.rsplit('/').next().unwrap_or("log").replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{role}-{name}\"")),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The agent's own log on a host (needs read access to the fleet); the same
/// parameters and answers as a role's log, without `stream`.
#[utoipa::path(get, path = "/api/v1/hosts/{id}/agent-log", operation_id = "agent_log",
    params(("id" = String, Path, description = "host id"), LogsQuery),
    responses((status = 200, body = LogsResult, description = "JSON, or text/event-stream when following"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, description = "the host is not connected", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn agent_log(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let tail = domain::logs::agent_log(&state, &caller.actor(), &id, &q).await?;
    Ok(answer(tail, wants_events(&headers)).await)
}

/// Searches the logs of every role the filters pick, on all their hosts at
/// once: each host returns at most `limit` matches within its `timeout`; the
/// result keeps the `limit` newest, oldest first, and names every host with
/// how it answered. With `Accept: text/event-stream`: `event: match` per
/// line as it arrives, then `event: summary` (the hosts part).
#[utoipa::path(get, path = "/api/v1/logs/search", operation_id = "search_logs", params(LogSearchQuery),
    responses((status = 200, body = LogSearchResult, description = "JSON, or text/event-stream"),
        (status = 400, description = "a bad regex, window, level, limit or timeout", body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn search(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogSearchQuery>,
) -> Result<Response, ApiError> {
    if !wants_events(&headers) {
        return Ok(Json(domain::logs::search(&state, &caller.actor(), &q).await?).into_response());
    }
    let started = Instant::now();
    let plan = domain::logs::plan_search(&state, &caller.actor(), &q).await?;
    let rx = domain::logs::search_events(&state.agent_requests, plan);
    let events = futures::stream::unfold(Some((rx, Vec::new())), move |s| async move {
        let (mut rx, mut hosts) = s?;
        match rx.recv().await {
            Some(SearchEvent::Match(line)) => {
                Some((Ok::<_, Infallible>(json_event("match", &*line)), Some((rx, hosts))))
            }
            Some(SearchEvent::Host(h)) => {
                hosts.push(h);
                Some((Ok(Event::default().comment("host done")), Some((rx, hosts))))
            }
            None => {
                let summary: LogSearchSummary = domain::logs::summary(hosts, false, started);
                Some((Ok(json_event("summary", &summary)), None))
            }
        }
    });
    // A streamed search holds no lines; only the JSON answer merges.
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
