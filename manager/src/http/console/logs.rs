//! The console's log pages: the log viewer section of a role's page and the
//! log search page of a cluster or a service.
//!
//! The lines themselves never pass through a template: `web/static/drover.js`
//! reads them from the REST API (`/api/v1/.../roles/{r}/logs`, with
//! `follow=true` as server-sent events, and `/api/v1/logs/search`) with the
//! session cookie, and inserts them as text. The handlers here check that
//! the user may read the scope (the same domain calls as the REST API) and
//! lay out the forms; the REST API checks every read again.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::clusters::{cluster_href, service_href};
use super::{PageResult, Session, url_encode};
use crate::AppState;
use crate::domain;

/// The line counts the viewer offers; the first is the default.
const TAILS: [u32; 4] = [100, 500, 1000, 5000];
/// The levels the search form offers (the REST API refuses others).
const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clusters/{c}/logs", get(cluster_search))
        .route("/clusters/{c}/services/{s}/logs", get(service_search))
}

/// What the role page's log viewer (`role_logs.hbs`) needs: the REST
/// address of the role's logs, its files for download (stdout and stderr,
/// then the files the role writes itself) and the line counts offered.
pub(crate) fn role_viewer(c: &str, s: &str, r: &str, log_files: &[String]) -> Value {
    let api = format!("/api/v1/clusters/{}/services/{}/roles/{}/logs", url_encode(c), url_encode(s), url_encode(r));
    let mut files = vec!["logs/stdout.log".to_owned(), "logs/stderr.log".to_owned()];
    for f in log_files {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    json!({
        "api": api,
        "download": format!("{api}/download"),
        "files": files,
        "tails": TAILS,
        "search": format!("{}/logs", service_href(c, s)),
    })
}

/// The search form's fields, as the REST API's `/logs/search` takes them.
#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    role_type: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    limit: String,
}

async fn cluster_search(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(c): Path<String>,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    domain::clusters::get(&state, &session.actor(), &c).await?;
    let services = domain::services::list(&state, &session.actor(), &c).await?;
    search_page(&state, &session, &c, None, &services, &q)
}

async fn service_search(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((c, s)): Path<(String, String)>,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    let service = domain::services::get(&state, &session.actor(), &c, &s).await?;
    search_page(&state, &session, &c, Some(&s), std::slice::from_ref(&service), &q)
}

/// One choice of a select: its value, and whether the form asked for it.
fn options(values: BTreeSet<String>, chosen: &str) -> Vec<Value> {
    values.into_iter().map(|v| json!({"selected": v == chosen, "value": v})).collect()
}

fn search_page(
    state: &AppState,
    session: &Session,
    c: &str,
    s: Option<&str>,
    services: &[drover_api::services::ServiceView],
    q: &SearchQuery,
) -> PageResult {
    let roles = services.iter().flat_map(|svc| svc.roles.iter());
    let role_types: BTreeSet<String> = roles.clone().map(|r| r.role_type.clone()).collect();
    let role_names: BTreeSet<String> = roles.clone().map(|r| r.name.clone()).collect();
    let hosts: BTreeSet<String> = roles.map(|r| r.hostname.clone()).collect();
    let levels: BTreeSet<String> = LEVELS.iter().map(|l| (*l).to_owned()).collect();
    let mut api = format!("/api/v1/logs/search?cluster={}", url_encode(c));
    if let Some(s) = s {
        api.push_str(&format!("&service={}", url_encode(s)));
    }
    let (href, scope, title) = match s {
        Some(s) => (format!("{}/logs", service_href(c, s)), format!("{c}/{s}"), format!("Logs of {c}/{s}")),
        None => (format!("{}/logs", cluster_href(c)), c.to_owned(), format!("Logs of cluster {c}")),
    };
    // A search runs once the form has been sent (the page's URL has a query).
    let searched = !(q.q.is_empty()
        && q.role_type.is_empty()
        && q.role.is_empty()
        && q.host.is_empty()
        && q.since.is_empty()
        && q.until.is_empty()
        && q.level.is_empty()
        && q.limit.is_empty());
    Ok(session.page(
        state,
        "logs_search",
        &title,
        "clusters",
        json!({
            "can": session.can(Some(c)),
            "cluster": c,
            "cluster_href": cluster_href(c),
            "service": s,
            "service_href": s.map(|s| service_href(c, s)),
            "scope": scope,
            "href": href,
            "api": api,
            "searched": searched,
            "form": {
                "q": q.q,
                "since": if searched { q.since.as_str() } else { "1h" },
                "until": q.until,
                "limit": if q.limit.is_empty() { "500" } else { q.limit.as_str() },
            },
            "role_types": options(role_types, &q.role_type),
            "roles": options(role_names, &q.role),
            "hosts": options(hosts, &q.host),
            "levels": options(levels, &q.level),
            "no_roles": services.iter().all(|svc| svc.roles.is_empty()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_viewer_encodes_names_and_lists_stdout_stderr_then_the_roles_files() {
        let v = super::role_viewer("prod", "cache", "r/1", &["logs/stdout.log".into(), "log/redis.log".into()]);
        assert_eq!(v["api"], "/api/v1/clusters/prod/services/cache/roles/r%2F1/logs");
        assert_eq!(v["download"], "/api/v1/clusters/prod/services/cache/roles/r%2F1/logs/download");
        assert_eq!(v["files"], serde_json::json!(["logs/stdout.log", "logs/stderr.log", "log/redis.log"]));
    }
}
