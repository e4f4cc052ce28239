//! The audit log (who changed what, when, from where) and the events (what
//! happened to hosts and services), each filtered and paginated, newest
//! first.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::commands::{pager, paging};
use super::{PageResult, Session, url_encode};
use crate::AppState;
use crate::domain;
use crate::model::UnixMillis;
use crate::store::{AuditSearch, EventSearch};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/audit", get(audit)).route("/events", get(events))
}

/// Page sizes offered; the first is the default.
const PAGE_SIZES: [u32; 5] = [50, 25, 100, 200, 500];

const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// A time from a `datetime-local` input (`2026-01-02T03:04`, read as UTC)
/// or RFC 3339 text; blank is none.
fn parse_time(name: &str, s: &str) -> Result<Option<UnixMillis>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.timestamp_millis()));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(Some(t.and_utc().timestamp_millis()));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()));
    }
    Err(format!("{name} {s:?} is not a time: use 2026-01-02T03:04 (UTC) or RFC 3339 such as 2026-01-02T03:04:05Z"))
}

/// The input type that shows `value` as given: `datetime-local` for its own
/// format (or nothing), plain text for RFC 3339 or a mistake, so the user's
/// input is kept.
fn time_input(value: &str) -> &'static str {
    let v = value.trim();
    let local = v.is_empty()
        || ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"].iter().any(|f| chrono::NaiveDateTime::parse_from_str(v, f).is_ok());
    if local { "datetime-local" } else { "text" }
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Where an audited or evented object is shown in the console, if anywhere.
fn object_href(object_type: &str, object_id: &str) -> Option<String> {
    match object_type {
        "host" => Some(format!("/hosts/{}", url_encode(object_id))),
        "cluster" => Some(format!("/clusters/{}", url_encode(object_id))),
        "command" => Some(format!("/commands/{}", url_encode(object_id))),
        "service" => {
            object_id.split_once('/').map(|(c, s)| format!("/clusters/{}/services/{}", url_encode(c), url_encode(s)))
        }
        "role" => {
            let mut parts = object_id.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(c), Some(s), Some(r)) => {
                    Some(format!("/clusters/{}/services/{}/roles/{}", url_encode(c), url_encode(s), url_encode(r)))
                }
                _ => None,
            }
        }
        "user" | "api_token" => Some("/account".into()),
        "parcel" => Some("/parcels".into()),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    object_type: String,
    #[serde(default)]
    object_id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    page: Option<u32>,
    per: Option<u32>,
}

async fn audit(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<AuditQuery>) -> PageResult {
    let (per, offset, page) = paging(q.page, q.per, &PAGE_SIZES);
    let times = parse_time("from", &q.from).and_then(|f| Ok((f, parse_time("to", &q.to)?)));
    let (mut entries, error) = match times {
        Ok((since, until)) => {
            let search = AuditSearch {
                username: opt(&q.user),
                action: opt(&q.action),
                object_type: opt(&q.object_type),
                object_id: opt(&q.object_id),
                since,
                until,
                limit: per + 1,
                offset,
            };
            (domain::history::search_audit(&state, &session.actor(), &search).await?, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    };
    let more = entries.len() > per as usize;
    entries.truncate(per as usize);
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "at": e.at, "username": e.username, "source": e.source, "action": e.action,
                "object_type": e.object_type, "object_id": e.object_id, "summary": e.summary,
                "via": e.via, "permission": e.permission,
                "object_href": object_href(&e.object_type, &e.object_id),
                "user_href": super::commands::href("/audit", &[("user", e.username.clone())]),
                "action_href": super::commands::href("/audit", &[("action", e.action.clone())]),
                "object_filter": super::commands::href(
                    "/audit",
                    &[("object_type", e.object_type.clone()), ("object_id", e.object_id.clone())],
                ),
            })
        })
        .collect();
    let pairs = [
        ("user", q.user.clone()),
        ("action", q.action.clone()),
        ("object_type", q.object_type.clone()),
        ("object_id", q.object_id.clone()),
        ("from", q.from.clone()),
        ("to", q.to.clone()),
        ("per", q.per.map(|p| p.to_string()).unwrap_or_default()),
    ];
    Ok(session.page(
        &state,
        "audit",
        "Audit log",
        "audit",
        json!({
            "entries": rows,
            "error": error,
            "q": {"user": q.user, "action": q.action, "object_type": q.object_type, "object_id": q.object_id,
                  "from": q.from, "to": q.to, "per": per,
                  "from_type": time_input(&q.from), "to_type": time_input(&q.to)},
            "per_options": PAGE_SIZES,
            "pager": pager("/audit", &pairs, page, offset, entries.len(), more),
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
struct EventQuery {
    #[serde(default)]
    severity: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    object_type: String,
    #[serde(default)]
    object_id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    page: Option<u32>,
    per: Option<u32>,
}

async fn events(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<EventQuery>) -> PageResult {
    let (per, offset, page) = paging(q.page, q.per, &PAGE_SIZES);
    let times = parse_time("from", &q.from).and_then(|f| Ok((f, parse_time("to", &q.to)?)));
    let (mut events, error) = match times {
        Ok((since, until)) => {
            let search = EventSearch {
                severity: opt(&q.severity),
                kind: opt(&q.kind),
                object_type: opt(&q.object_type),
                object_id: opt(&q.object_id),
                since,
                until,
                limit: per + 1,
                offset,
            };
            (domain::history::search_events(&state, &session.actor(), &search).await?, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    };
    let more = events.len() > per as usize;
    events.truncate(per as usize);
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "at": e.at, "severity": e.severity, "kind": e.kind, "object_type": e.object_type,
                "object_id": e.object_id, "message": e.message,
                "object_href": object_href(&e.object_type, &e.object_id),
                "object_filter": super::commands::href(
                    "/events",
                    &[("object_type", e.object_type.clone()), ("object_id", e.object_id.clone())],
                ),
            })
        })
        .collect();
    let pairs = [
        ("severity", q.severity.clone()),
        ("kind", q.kind.clone()),
        ("object_type", q.object_type.clone()),
        ("object_id", q.object_id.clone()),
        ("from", q.from.clone()),
        ("to", q.to.clone()),
        ("per", q.per.map(|p| p.to_string()).unwrap_or_default()),
    ];
    Ok(session.page(
        &state,
        "events",
        "Events",
        "events",
        json!({
            "events": rows,
            "error": error,
            "q": {"severity": q.severity, "kind": q.kind, "object_type": q.object_type, "object_id": q.object_id,
                  "from": q.from, "to": q.to, "per": per,
                  "from_type": time_input(&q.from), "to_type": time_input(&q.to)},
            "severities": SEVERITIES,
            "per_options": PAGE_SIZES,
            "pager": pager("/events", &pairs, page, offset, events.len(), more),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_from_inputs_and_rfc3339() {
        assert_eq!(parse_time("from", "").unwrap(), None);
        let t = parse_time("from", "2026-01-02T03:04").unwrap().unwrap();
        assert_eq!(Some(t), parse_time("from", "2026-01-02T03:04:00Z").unwrap());
        assert_eq!(Some(t + 3_600_000), parse_time("from", "2026-01-02T03:04:00-01:00").unwrap());
        assert!(parse_time("to", "yesterday").unwrap_err().contains("to \"yesterday\" is not a time"));
    }
}
