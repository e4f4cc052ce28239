//! Clusters: the list with each cluster's services, hosts and health counts
//! and the form that creates one; one cluster's page with its hosts (add,
//! remove), its services filtered by health, its parcels, and deleting it
//! when it is empty.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::health;
use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError};
use crate::model::rfc3339;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clusters", get(list).post(create))
        .route("/clusters/{c}", get(show))
        .route("/clusters/{c}/delete", post(delete))
        .route("/clusters/{c}/hosts", post(add_hosts))
        .route("/clusters/{c}/hosts/{host}/remove", post(remove_host))
}

/// The health values a service list is filtered by, in display order.
pub(crate) const HEALTHS: [&str; 4] = ["good", "concerning", "bad", "stopped"];
/// The most candidate hosts the add-hosts form lists.
const MAX_CANDIDATES: u32 = 500;
/// Members listed on the cluster page (the first by hostname).
const MAX_MEMBERS_SHOWN: u32 = 200;

pub(crate) fn cluster_href(c: &str) -> String {
    format!("/clusters/{}", url_encode(c))
}

pub(crate) fn service_href(c: &str, s: &str) -> String {
    format!("/clusters/{}/services/{}", url_encode(c), url_encode(s))
}

async fn list(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    list_page(&state, &session, "", None).await
}

async fn list_page(state: &AppState, session: &Session, name: &str, error: Option<String>) -> PageResult {
    let mut rows = Vec::new();
    for c in domain::clusters::list(state, &session.actor()).await? {
        let services = domain::services::list(state, &session.actor(), &c.name).await?;
        let hosts = domain::clusters::hosts(state, &session.actor(), &c.name).await?.len();
        let counts: Vec<Value> = HEALTHS
            .iter()
            .map(|h| {
                let n = services.iter().filter(|s| s.health.as_str() == *h).count();
                json!({"health": h, "count": n, "href": format!("{}?health={h}", cluster_href(&c.name))})
            })
            .collect();
        rows.push(json!({
            "name": c.name, "href": cluster_href(&c.name), "services": services.len(), "hosts": hosts,
            "counts": counts, "created_by": c.created_by, "created_at": c.created_at,
        }));
    }
    let resp = session.page(
        state,
        "clusters",
        "Clusters",
        "clusters",
        json!({"clusters": rows, "form": {"name": name}, "error": error}),
    );
    Ok(if error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

#[derive(Debug, Deserialize)]
struct CreateForm {
    #[serde(default)]
    name: String,
}

async fn create(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<CreateForm>) -> PageResult {
    let name = form.name.trim();
    match domain::clusters::create(&state, &session.actor(), name).await {
        Ok(c) => Ok(redirect_with(&cluster_href(&c.name), true, &format!("cluster {} created", c.name))),
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_))) => {
            list_page(&state, &session, &form.name, Some(domain_message(&e))).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ShowQuery {
    #[serde(default)]
    health: String,
}

async fn show(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(c): Path<String>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    let cluster = domain::clusters::get(&state, &session.actor(), &c).await?;
    let health = q.health.trim();
    if !health.is_empty() && !HEALTHS.contains(&health) {
        return Err(ConsoleError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown health {health:?}: use good, concerning, bad or stopped"),
        ));
    }
    let href = cluster_href(&c);
    // The first members by hostname, and how many there are: a cluster of
    // thousands of hosts must not make a page of megabytes.
    let filter =
        crate::store::HostFilter { in_cluster: Some(c.clone()), limit: MAX_MEMBERS_SHOWN, ..Default::default() };
    let page = domain::hosts::list(&state, &session.actor(), &filter).await?;
    let (members, members_total) = (page.items, page.total);
    let services = domain::services::list(&state, &session.actor(), &c).await?;
    // Which roles of the cluster each host runs, so a busy host is not offered for removal.
    let mut roles_on: std::collections::HashMap<&str, Vec<String>> = std::collections::HashMap::new();
    for s in &services {
        for r in &s.roles {
            roles_on.entry(r.host_id.as_str()).or_default().push(format!("{}/{}", s.name, r.name));
        }
    }
    let hosts: Vec<Value> = members
        .iter()
        .map(|h| {
            let status = state.registry.host_status(&h.id).unwrap_or(h.status);
            let roles = roles_on.get(h.id.as_str()).cloned().unwrap_or_default();
            json!({
                "id": h.id, "hostname": h.hostname, "href": format!("/hosts/{}", url_encode(&h.id)),
                "status": status.as_str(), "addresses": h.addresses.join(", "),
                "labels": h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "roles": roles.len(), "busy": !roles.is_empty(),
                "remove": format!("{href}/hosts/{}/remove", url_encode(&h.id)),
            })
        })
        .collect();
    let counts: Vec<Value> = HEALTHS
        .iter()
        .map(|h| {
            let n = services.iter().filter(|s| s.health.as_str() == *h).count();
            json!({"health": h, "count": n, "href": format!("{href}?health={h}"), "active": *h == health})
        })
        .collect();
    let (engine, engine_node) =
        health::entity(&state, &session.actor(), health::query(&c, None, None), "cluster").await?;
    let maintenance = health::Maintenance::load(&state, &session.actor()).await?;
    let shown: Vec<Value> = services
        .iter()
        .filter(|s| health.is_empty() || s.health.as_str() == health)
        .map(|s| {
            let running = s.roles.iter().filter(|r| r.status.as_str() == "running").count();
            json!({
                "name": s.name, "href": service_href(&c, &s.name), "type": s.service_type,
                "health": s.health.as_str(), "roles": s.roles.len(), "running": running, "revision": s.revision,
                "engine": health::child_status(engine_node.as_ref(), &format!("{c}/{}", s.name)),
                "maintenance": maintenance.service_on(&c, &s.name),
            })
        })
        .collect();
    let actor = session.actor();
    // Only who may move fleet hosts into the cluster is offered them.
    let (candidates, more) = if actor.may(domain::Permission::HostsWrite, domain::Scope::Global) {
        domain::clusters::candidate_hosts(&state, &actor, &c, MAX_CANDIDATES).await?
    } else {
        (Vec::new(), false)
    };
    let candidates: Vec<Value> = candidates
        .iter()
        .map(|h| {
            let status = state.registry.host_status(&h.id).unwrap_or(h.status);
            json!({"id": h.id, "hostname": h.hostname, "status": status.as_str(),
                   "addresses": h.addresses.join(", ")})
        })
        .collect();
    let parcels: Vec<Value> = domain::clusters::parcels(&state, &session.actor(), &c)
        .await?
        .iter()
        .map(|p| {
            json!({"name": p.name, "version": p.version, "target": p.target,
                   "activated_at": (p.activated_at > 0).then(|| rfc3339(p.activated_at)),
                   "size": super::human_bytes(p.size as f64)})
        })
        .collect();
    let title = format!("Cluster {c}");
    Ok(session.page(
        &state,
        "cluster",
        &title,
        "clusters",
        json!({
            "cluster": cluster,
            "can": session.can(Some(&c)),
            "href": href,
            "hosts_count": members_total,
            "hosts_more": (members_total > hosts.len() as u64).then_some(hosts.len()),
            "hosts": hosts,
            "services": shown,
            "services_total": services.len(),
            "counts": counts,
            "health": health,
            "candidates": candidates,
            "more_candidates": more,
            "max_candidates": MAX_CANDIDATES,
            "parcels": parcels,
            "empty": services.is_empty(),
            "new_service": format!("{href}/services/new"),
            "health_tests": engine,
            "maintenance": maintenance.cluster_section(&session, &c),
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct HostsForm {
    #[serde(default)]
    host: Vec<String>,
}

async fn add_hosts(
    State(state): State<Arc<AppState>>,
    Path(c): Path<String>,
    CsrfForm(session, form): CsrfForm<HostsForm>,
) -> PageResult {
    let back = cluster_href(&c);
    if form.host.is_empty() {
        return Ok(redirect_with(&back, false, "no host selected: tick the hosts to add"));
    }
    Ok(match domain::clusters::add_hosts(&state, &session.actor(), &c, &form.host).await {
        Ok(all) => redirect_with(
            &back,
            true,
            &format!("added {} host(s) to cluster {c} (now {} hosts)", form.host.len(), all.len()),
        ),
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_) | DomainError::NotFound(_))) => {
            redirect_with(&back, false, &domain_message(&e))
        }
        Err(e) => return Err(e.into()),
    })
}

async fn remove_host(
    State(state): State<Arc<AppState>>,
    Path((c, host)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let back = cluster_href(&c);
    domain::clusters::get(&state, &session.actor(), &c).await?;
    let hostname =
        domain::hosts::get(&state, &session.actor(), &host).await.map(|h| h.hostname).unwrap_or_else(|_| host.clone());
    if form.confirmed != "yes" {
        let what = format!(
            "Remove host {hostname} from cluster {c}: it no longer receives the cluster's parcels. The host itself stays enrolled."
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{back}/hosts/{}/remove", url_encode(&host));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &back, vec![hostname], 1));
    }
    Ok(match domain::clusters::remove_host(&state, &session.actor(), &c, &host).await {
        Ok(()) => redirect_with(&back, true, &format!("host {hostname} removed from cluster {c}")),
        Err(e @ (DomainError::Conflict(_) | DomainError::NotFound(_))) => {
            redirect_with(&back, false, &domain_message(&e))
        }
        Err(e) => return Err(e.into()),
    })
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(c): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let back = cluster_href(&c);
    let cluster = domain::clusters::get(&state, &session.actor(), &c).await?;
    if form.confirmed != "yes" {
        let what = format!("Delete cluster {c}. Its hosts stay enrolled. This cannot be undone.");
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        return Ok(confirm_page(
            &session,
            &state,
            &what,
            true,
            &format!("{back}/delete"),
            &hidden,
            &back,
            vec![cluster.name],
            1,
        ));
    }
    Ok(match domain::clusters::delete(&state, &session.actor(), &c).await {
        Ok(()) => redirect_with("/clusters", true, &format!("cluster {c} deleted")),
        Err(e @ DomainError::Conflict(_)) => redirect_with(&back, false, &domain_message(&e)),
        Err(e) => return Err(e.into()),
    })
}
