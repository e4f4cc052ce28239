//! The console's diagnostic bundles page (`/diagnostics`): a form that
//! starts collecting one (the same domain call as `POST /api/v1/diagnostics`,
//! so it is checked and audited alike) and leads to its command's page,
//! where each host's step shows its progress; the list of bundles with
//! their state, size and failed hosts, a download link (the REST download,
//! which the session cookie authenticates) and delete, confirmed first.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use drover_api::diagnostics::{DiagnosticsState, DiagnosticsView, INCLUDE_ALL, NewDiagnostics, parse_size};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError, Permission, Scope};

/// What each part of a bundle holds, as the form explains it.
const PARTS: [(&str, &str); 12] = [
    ("logs", "role log files within the window"),
    ("config", "rendered configuration files"),
    ("processes", "process state: pid, command line, uptime, restarts, exits"),
    ("health", "health check results"),
    ("facts", "host facts"),
    ("metrics", "recent host and role metrics"),
    ("agent_log", "the agent's own log"),
    ("topology", "the cluster's services, roles and hosts"),
    ("revisions", "configuration revisions and their history"),
    ("commands", "commands in the window"),
    ("events", "events in the window"),
    ("audit", "audit entries in the window"),
];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/diagnostics", get(list).post(start)).route("/diagnostics/{id}/delete", post(delete))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    cluster: String,
}

/// The start form's fields as sent.
#[derive(Debug, Default, Deserialize)]
struct StartForm {
    #[serde(default)]
    cluster: String,
    /// Service names, comma- or space-separated; blank: all.
    #[serde(default)]
    services: String,
    /// Hostnames or ids, comma- or space-separated; blank: all.
    #[serde(default)]
    hosts: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// A size such as `200MiB`; blank: the manager's cap.
    #[serde(default)]
    max_size: String,
    #[serde(default)]
    include: Vec<String>,
}

impl StartForm {
    fn defaults(cluster: &str) -> StartForm {
        StartForm {
            cluster: cluster.to_owned(),
            since: "2h".into(),
            include: INCLUDE_ALL.iter().map(|s| (*s).to_owned()).collect(),
            ..StartForm::default()
        }
    }

    /// The REST request the form stands for, or what is wrong with it.
    fn request(&self) -> Result<NewDiagnostics, String> {
        let list = |s: &str| -> Vec<String> {
            s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).map(str::to_owned).collect()
        };
        if self.cluster.trim().is_empty() {
            return Err("choose the cluster to collect from".into());
        }
        if self.since.trim().is_empty() {
            return Err("since is required: a duration back from now such as 2h, or an RFC 3339 time".into());
        }
        if self.include.is_empty() {
            return Err("choose at least one part to include".into());
        }
        let max_bytes = match self.max_size.trim() {
            "" => None,
            s => Some(parse_size(s)?),
        };
        let until = Some(self.until.trim()).filter(|u| !u.is_empty()).map(str::to_owned);
        Ok(NewDiagnostics {
            cluster: self.cluster.trim().to_owned(),
            services: list(&self.services),
            hosts: list(&self.hosts),
            since: self.since.trim().to_owned(),
            until,
            max_bytes,
            include: self.include.clone(),
        })
    }
}

async fn list(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<ListQuery>) -> PageResult {
    page(&state, &session, &StartForm::defaults(&q.cluster), None).await
}

fn bundle_row(d: &DiagnosticsView) -> Value {
    let id = url_encode(&d.id);
    let finished = matches!(d.state, DiagnosticsState::Ready | DiagnosticsState::Partial);
    json!({
        "id": d.id,
        "cluster": d.cluster,
        "cluster_href": super::clusters::cluster_href(&d.cluster),
        "services": if d.services.is_empty() { "all services".to_owned() } else { d.services.join(", ") },
        "hosts": d.hosts.join(", "),
        "hosts_count": d.hosts.len(),
        "since": d.since,
        "until": d.until,
        "created_by": d.created_by,
        "created_at": d.created_at,
        "state": d.state.as_str(),
        "size": finished.then(|| super::human_bytes(d.size_bytes as f64)),
        "max_size": super::human_bytes(d.max_bytes as f64),
        "failed_hosts": d.failed_hosts,
        "command_href": format!("/commands/{}", url_encode(&d.command_id)),
        "download": finished.then(|| format!("/api/v1/diagnostics/{id}/download")),
        "delete": format!("/diagnostics/{id}/delete"),
        "running": d.state == DiagnosticsState::Running,
    })
}

async fn page(state: &AppState, session: &Session, form: &StartForm, error: Option<String>) -> PageResult {
    let actor = session.actor();
    let bundles = domain::diagnostics::list(state, &actor).await?;
    let clusters = domain::clusters::list(state, &actor).await?;
    // The clusters the user may collect from (the domain checks again).
    let startable: Vec<Value> = clusters
        .iter()
        .filter(|c| actor.may(Permission::CommandsRun, Scope::Cluster(&c.name)))
        .map(|c| json!({"name": c.name, "selected": c.name == form.cluster}))
        .collect();
    // With a cluster chosen, its services are named as a hint.
    let services = match clusters.iter().find(|c| c.name == form.cluster) {
        Some(c) => domain::services::list(state, &actor, &c.name).await?.into_iter().map(|s| s.name).collect(),
        None => Vec::new(),
    };
    let parts: Vec<Value> = PARTS
        .iter()
        .map(|(name, what)| json!({"name": name, "what": what, "checked": form.include.iter().any(|i| i == name)}))
        .collect();
    let shown: Vec<&DiagnosticsView> =
        bundles.iter().filter(|d| form.cluster.is_empty() || error.is_some() || d.cluster == form.cluster).collect();
    let running = shown.iter().any(|d| d.state == DiagnosticsState::Running);
    let rows: Vec<Value> = shown.into_iter().map(bundle_row).collect();
    let resp = session.page(
        state,
        "diagnostics",
        "Diagnostic bundles",
        "diagnostics",
        json!({
            "bundles": rows,
            "running": running,
            "clusters": startable,
            "filter_cluster": form.cluster,
            "may_start": !startable.is_empty(),
            "cluster_services": services,
            "parts": parts,
            "form": {
                "services": form.services, "hosts": form.hosts, "since": form.since,
                "until": form.until, "max_size": form.max_size,
            },
            "error": error,
        }),
    );
    Ok(if error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

async fn start(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<StartForm>) -> PageResult {
    let req = match form.request() {
        Ok(r) => r,
        Err(e) => return page(&state, &session, &form, Some(e)).await,
    };
    match domain::diagnostics::create(&state, &session.actor(), req).await {
        Ok(d) => {
            let message = format!(
                "diagnostic bundle {} of {} started, one step per host; download it from Diagnostics when it is ready",
                d.id, d.cluster
            );
            Ok(redirect_with(&format!("/commands/{}", url_encode(&d.command_id)), true, &message))
        }
        Err(e @ (DomainError::Forbidden { .. } | DomainError::Unavailable(_) | DomainError::Internal(_))) => {
            Err(e.into())
        }
        Err(e) => page(&state, &session, &form, Some(domain_message(&e))).await,
    }
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let actor = session.actor();
    if form.confirmed != "yes" {
        let d = domain::diagnostics::get(&state, &actor, &id).await?;
        let what = format!(
            "Delete diagnostic bundle {} of cluster {} (created {} by {}, {})? Its file is removed for good.",
            d.id,
            d.cluster,
            d.created_at,
            d.created_by,
            super::human_bytes(d.size_bytes as f64)
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/diagnostics/{}/delete", url_encode(&id));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, "/diagnostics", Vec::new(), 1));
    }
    match domain::diagnostics::delete(&state, &actor, &id).await {
        Ok(()) => Ok(redirect_with("/diagnostics", true, &format!("diagnostic bundle {id} deleted"))),
        Err(e @ DomainError::Conflict(_)) => Ok(redirect_with("/diagnostics", false, &domain_message(&e))),
        Err(e) => Err(ConsoleError::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::StartForm;

    #[test]
    fn the_form_becomes_the_rest_request() {
        let mut f = StartForm::defaults("prod");
        f.services = "cache, queue".into();
        f.hosts = "db1.example db2".into();
        f.max_size = "200MiB".into();
        let r = f.request().unwrap();
        assert_eq!(r.cluster, "prod");
        assert_eq!(r.services, ["cache", "queue"]);
        assert_eq!(r.hosts, ["db1.example", "db2"]);
        assert_eq!(r.since, "2h");
        assert_eq!(r.until, None);
        assert_eq!(r.max_bytes, Some(200 << 20));
        assert_eq!(r.include.len(), 12);
        f.max_size = "lots".into();
        assert!(f.request().unwrap_err().contains("invalid size"));
        f.max_size.clear();
        f.include.clear();
        assert!(f.request().unwrap_err().contains("at least one part"));
        assert!(StartForm::defaults("").request().unwrap_err().contains("cluster"));
    }
}
