//! Commands: every cluster's commands, newest first, filtered by state,
//! cluster and user and paginated; one command's steps and progress, live
//! while it runs; abort.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, CsrfForm, PageResult, Session, commands_row, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::commands::{CommandState, CommandView, StepState};
use crate::domain::{self, DomainError};
use crate::store::CommandFilter;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/commands", get(list))
        .route("/commands/{id}", get(show))
        .route("/commands/{id}/abort", post(abort))
}

/// Page sizes offered; the first is the default.
pub(super) const PAGE_SIZES: [u32; 4] = [50, 25, 100, 200];
/// The deepest page a list goes to.
const MAX_OFFSET: u32 = 100_000;

const STATES: [&str; 4] = ["running", "succeeded", "failed", "aborted"];

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    user: String,
    page: Option<u32>,
    per: Option<u32>,
}

/// `(limit, offset, page)` of a paginated list.
pub(super) fn paging(page: Option<u32>, per: Option<u32>, sizes: &[u32]) -> (u32, u32, u32) {
    let per = per.filter(|p| sizes.contains(p)).unwrap_or(sizes[0]);
    let page = page.unwrap_or(1).clamp(1, MAX_OFFSET / per + 1);
    (per, (page - 1) * per, page)
}

/// `base?k=v&...` from the non-empty pairs.
pub(super) fn href(base: &str, pairs: &[(&str, String)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        ser.append_pair(k, v);
    }
    let q = ser.finish();
    if q.is_empty() { base.to_owned() } else { format!("{base}?{q}") }
}

/// The pager of a list that fetched one row more than a page to know
/// whether a next page exists; `pairs` is the query without `page`.
pub(super) fn pager(base: &str, pairs: &[(&str, String)], page: u32, offset: u32, shown: usize, more: bool) -> Value {
    let at = |p: u32| {
        let mut all = pairs.to_vec();
        all.push(("page", p.to_string()));
        href(base, &all)
    };
    json!({
        "page": page,
        "first": (shown > 0).then(|| offset + 1),
        "last": offset as usize + shown,
        "prev": (page > 1).then(|| at(page - 1)),
        "next": more.then(|| at(page + 1)),
    })
}

/// A command as a row, with the service link only where it has a service
/// (parcel commands act on a cluster's hosts).
fn row(c: &CommandView) -> Value {
    let mut v = commands_row(c);
    if v["has_service"] != json!(true) {
        v["service_href"] = Value::Null;
    }
    v["running"] = json!(c.state == CommandState::Running);
    v
}

async fn list(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<ListQuery>) -> PageResult {
    let (per, offset, page) = paging(q.page, q.per, &PAGE_SIZES);
    let opt = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned);
    let filter = CommandFilter {
        state: opt(&q.state),
        cluster: opt(&q.cluster),
        service: None,
        created_by: opt(&q.user),
        clusters: None,
        limit: per + 1,
        offset,
    };
    let (mut commands, error) = match domain::commands::search(&state, &session.actor(), &filter).await {
        Ok(c) => (c, None),
        Err(e @ DomainError::Invalid(_)) => (Vec::new(), Some(domain_message(&e))),
        Err(e) => return Err(e.into()),
    };
    let more = commands.len() > per as usize;
    commands.truncate(per as usize);
    let running = commands.iter().any(|c| c.state == CommandState::Running);
    let clusters: Vec<String> =
        domain::clusters::list(&state, &session.actor()).await?.into_iter().map(|c| c.name).collect();
    let pairs = [
        ("state", q.state.clone()),
        ("cluster", q.cluster.clone()),
        ("user", q.user.clone()),
        ("per", q.per.map(|p| p.to_string()).unwrap_or_default()),
    ];
    Ok(session.page(
        &state,
        "commands",
        "Commands",
        "commands",
        json!({
            "commands": commands.iter().map(row).collect::<Vec<_>>(),
            "running": running,
            "error": error,
            "q": {"state": q.state, "cluster": q.cluster, "user": q.user, "per": per},
            "states": STATES,
            "clusters": clusters,
            "per_options": PAGE_SIZES,
            "pager": pager("/commands", &pairs, page, offset, commands.len(), more),
        }),
    ))
}

/// Names and links of the objects a step acts on: roles of the command's
/// service, or hosts for a parcel command.
async fn step_targets(state: &AppState, c: &CommandView) -> Result<BTreeMap<String, (String, String)>, DomainError> {
    let mut out = BTreeMap::new();
    if c.service.is_empty() {
        let ids: Vec<String> = c.steps.iter().flat_map(|s| s.roles.iter().cloned()).collect();
        let known = state.store.host_addresses(&ids).await?;
        for id in ids {
            let name = known.get(&id).map(|(h, _)| h.clone()).unwrap_or_else(|| id.clone());
            out.insert(id.clone(), (name, format!("/hosts/{}", url_encode(&id))));
        }
    } else {
        for r in state.store.roles_of_service(&c.cluster, &c.service).await? {
            let link = format!(
                "/clusters/{}/services/{}/roles/{}",
                url_encode(&c.cluster),
                url_encode(&c.service),
                url_encode(&r.name)
            );
            out.insert(r.id.clone(), (r.name.clone(), link));
        }
    }
    Ok(out)
}

async fn show(State(state): State<Arc<AppState>>, session: Session, Path(id): Path<String>) -> PageResult {
    let c = domain::commands::get(&state, &session.actor(), &id).await?;
    let targets = step_targets(&state, &c).await?;
    let total = c.steps.len();
    let done = c.steps.iter().filter(|s| matches!(s.state, StepState::Succeeded | StepState::Skipped)).count();
    let ended = c.steps.iter().filter(|s| !matches!(s.state, StepState::Pending | StepState::Running)).count();
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let steps: Vec<Value> = c
        .steps
        .iter()
        .map(|s| {
            let roles: Vec<Value> = s
                .roles
                .iter()
                .map(|r| match targets.get(r) {
                    Some((name, link)) => json!({"name": name, "href": link}),
                    None => json!({"name": r, "href": null}),
                })
                .collect();
            json!({
                "seq": s.seq, "description": s.description, "state": s.state.as_str(), "message": s.message,
                "roles": roles, "started_at": s.started_at, "finished_at": s.finished_at,
            })
        })
        .collect();
    let running = c.state == CommandState::Running;
    let params = serde_json::to_string_pretty(&c.params).unwrap_or_default();
    let title = format!("Command {}", c.name);
    Ok(session.page(
        &state,
        "command",
        &title,
        "commands",
        json!({
            "can": session.can(Some(&c.cluster)),
            "command": row(&c),
            "params": params,
            "running": running,
            "steps": steps,
            "progress": {"done": done, "ended": ended, "total": total, "percent": percent},
            "href": format!("/commands/{}", url_encode(&c.id)),
        }),
    ))
}

async fn abort(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let c = domain::commands::get(&state, &session.actor(), &id).await?;
    let back = format!("/commands/{}", url_encode(&id));
    let target = if c.service.is_empty() { c.cluster.clone() } else { format!("{}/{}", c.cluster, c.service) };
    if form.confirmed != "yes" {
        let what = format!(
            "Abort command {} of {target}: it stops between steps (or while a step waits); steps already done are not undone.",
            c.name
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        return Ok(confirm_page(&session, &state, &what, true, &format!("{back}/abort"), &hidden, &back, vec![id], 1));
    }
    Ok(match domain::commands::abort(&state, &session.actor(), &id).await {
        Ok(()) => redirect_with(&back, true, &format!("abort requested for command {} of {target}", c.name)),
        Err(e @ DomainError::Conflict(_)) => redirect_with(&back, false, &domain_message(&e)),
        Err(e) => return Err(e.into()),
    })
}
