//! `/`: the firing alerts (counted by severity, the first listed), every
//! cluster with its services' health counted, hosts by status,
//! commands running and recently ended, the latest events. Each count links
//! to the list it counts.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::json;

use super::{PageResult, Session, url_encode};
use crate::AppState;
use crate::domain;
use crate::store::{CommandFilter, EventFilter};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/", get(home))
}

const HEALTHS: [&str; 4] = ["good", "concerning", "bad", "stopped"];

async fn home(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    let mut clusters = Vec::new();
    for c in domain::clusters::list(&state, &session.actor()).await? {
        let services = domain::services::list(&state, &session.actor(), &c.name).await?;
        let counts: Vec<_> = HEALTHS
            .iter()
            .map(|h| {
                let n = services.iter().filter(|s| s.health.as_str() == *h).count();
                json!({"health": h, "count": n, "href": format!("/clusters/{}?health={h}", url_encode(&c.name))})
            })
            .collect();
        let services: Vec<_> = services
            .iter()
            .map(|s| {
                json!({"name": s.name, "type": s.service_type, "health": s.health.as_str(),
                       "roles": s.roles.len(), "href": format!("/clusters/{}/services/{}", url_encode(&c.name), url_encode(&s.name))})
            })
            .collect();
        clusters.push(json!({"name": c.name, "href": format!("/clusters/{}", url_encode(&c.name)),
                             "counts": counts, "services": services}));
    }
    let fleet = domain::hosts::summary(&state, &session.actor()).await?;
    let host_counts = json!([
        {"status": "healthy", "count": fleet.healthy, "href": "/hosts?status=healthy"},
        {"status": "lost", "count": fleet.lost, "href": "/hosts?status=lost"},
        {"status": "decommissioned", "count": fleet.decommissioned, "href": "/hosts?status=decommissioned"},
    ]);
    let running = domain::commands::search(
        &state,
        &session.actor(),
        &CommandFilter { state: Some("running".into()), limit: 20, ..Default::default() },
    )
    .await?;
    let recent: Vec<_> =
        domain::commands::search(&state, &session.actor(), &CommandFilter { limit: 30, ..Default::default() })
            .await?
            .into_iter()
            .filter(|c| c.finished_at.is_some())
            .take(10)
            .collect();
    // Events name hosts of every cluster: only for who reads the fleet.
    let actor = session.actor();
    let events = if actor.may(domain::Permission::Read, domain::Scope::Global) {
        domain::history::list_events(&state, &actor, &EventFilter { limit: 10, ..Default::default() }).await?
    } else {
        Vec::new()
    };
    Ok(session.page(
        &state,
        "home",
        "Home",
        "home",
        json!({
            "clusters": clusters,
            "hosts_total": fleet.hosts,
            "host_counts": host_counts,
            "connected": fleet.connected_sessions,
            "running_count": running.len(),
            "running": running.iter().map(super::commands_row).collect::<Vec<_>>(),
            "recent": recent.iter().map(super::commands_row).collect::<Vec<_>>(),
            "events": events,
            "alerts": super::alerts::firing_panel(&state, &session),
        }),
    ))
}
