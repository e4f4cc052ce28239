//! Hosts: the filtered, sorted, paginated list with bulk actions; one host's
//! page with facts, labels, roles, parcels, charts and events; adding hosts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::health;
use super::metrics::{self, HOST_CHARTS, Window, WindowQuery};
use super::{
    ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, human_bytes, redirect_with, url_encode,
};
use crate::AppState;
use crate::domain::{self, DomainError};
use crate::model::{Host, HostStatus, now_millis};
use crate::store::{EventFilter, HostFilter, HostSort};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/hosts", get(list))
        .route("/hosts/bulk", post(bulk))
        .route("/hosts/add", get(add_page))
        .route("/hosts/add/token", post(create_token))
        .route("/hosts/add/tokens/{id}/revoke", post(revoke_token))
        .route("/hosts/{id}", get(show))
        .route("/hosts/{id}/labels", post(edit_labels))
        .route("/hosts/{id}/decommission", post(decommission))
}

/// The most enrollment tokens `/hosts/add` lists, and how many used up,
/// expired or revoked ones it lists at least.
const MAX_TOKENS_SHOWN: usize = 100;
const RECENT_INACTIVE_TOKENS: usize = 10;

/// Page sizes offered; the first is the default.
const PAGE_SIZES: [u32; 6] = [50, 25, 100, 200, 500, 1000];
/// The most hosts one bulk action over "all filtered" touches.
const MAX_BULK: usize = 10_000;

/// The list's filter as it appears in the URL (and in the bulk form).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    dir: String,
    page: Option<u32>,
    per: Option<u32>,
}

impl ListQuery {
    /// The store filter, or why the query is wrong.
    fn filter(&self) -> Result<HostFilter, DomainError> {
        let mut f = HostFilter {
            status: Some(self.status.trim()).filter(|s| !s.is_empty()).map(domain::hosts::parse_status).transpose()?,
            kind: Some(self.kind.trim()).filter(|s| !s.is_empty()).map(domain::hosts::parse_kind).transpose()?,
            text: Some(self.q.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
            sort: HostSort::parse(&self.sort).unwrap_or_default(),
            descending: self.dir == "desc",
            ..Default::default()
        };
        domain::hosts::apply_selector(&mut f, self.label.trim())?;
        let per = self.per.filter(|p| PAGE_SIZES.contains(p)).unwrap_or(PAGE_SIZES[0]);
        f.limit = per;
        f.offset = self.page.unwrap_or(1).max(1).saturating_sub(1).saturating_mul(per).min(domain::hosts::MAX_OFFSET);
        Ok(f)
    }

    /// This query as URL parameters, with `changes` applied (empty values left out).
    fn href(&self, changes: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("status", self.status.clone()),
            ("kind", self.kind.clone()),
            ("label", self.label.clone()),
            ("q", self.q.clone()),
            ("sort", self.sort.clone()),
            ("dir", self.dir.clone()),
            ("per", self.per.map(|p| p.to_string()).unwrap_or_default()),
            ("page", self.page.map(|p| p.to_string()).unwrap_or_default()),
        ];
        for (k, v) in changes {
            if let Some(p) = pairs.iter_mut().find(|(pk, _)| pk == k) {
                p.1 = v.clone();
            }
        }
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            ser.append_pair(k, v);
        }
        format!("/hosts?{}", ser.finish())
    }
}

fn host_row(h: &Host) -> Value {
    let m = h.metrics.as_ref();
    json!({
        "id": h.id,
        "href": format!("/hosts/{}", url_encode(&h.id)),
        "hostname": h.hostname,
        "addresses": h.addresses.join(", "),
        "kind": h.kind.as_str(),
        "os": h.os,
        "cpu_cores": h.cpu_cores,
        "memory": human_bytes(h.memory_bytes as f64),
        "status": h.status.as_str(),
        "labels": h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "last_heartbeat_at": h.last_heartbeat_at.clone().unwrap_or_else(|| "never".into()),
        "cpu": m.map(|m| format!("{:.1}%", m.cpu_percent)),
        "memory_used": m.map(|m| human_bytes(m.memory_used_bytes as f64)),
        "load1": m.map(|m| format!("{:.2}", m.load1)),
        "agent_version": h.agent_version,
    })
}

async fn list(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<ListQuery>) -> PageResult {
    let (hosts, total, error, filter) = match q.filter() {
        Ok(f) => {
            let page = domain::hosts::list(&state, &session.actor(), &f).await?;
            (page.items, page.total, None, f)
        }
        Err(e @ DomainError::Invalid(_)) => (Vec::new(), 0, Some(e.to_string()), HostFilter::default()),
        Err(e) => return Err(e.into()),
    };
    let per = filter.limit.max(1);
    let page = filter.offset / per + 1;
    let pages = total.div_ceil(per as u64).max(1);
    let sort = HostSort::parse(&q.sort).unwrap_or_default();
    let columns: Vec<Value> = [
        ("status", "Status"),
        ("hostname", "Host"),
        ("kind", "Kind"),
        ("cores", "CPU"),
        ("memory", "Memory"),
        ("heartbeat", "Last heartbeat"),
    ]
    .iter()
    .map(|(key, title)| {
        let active = sort.as_str() == *key;
        let next_dir = if active && !filter.descending { "desc" } else { "asc" };
        json!({
            "title": title,
            "href": q.href(&[("sort", key.to_string()), ("dir", next_dir.into()), ("page", String::new())]),
            "sorted": if active { if filter.descending { "descending" } else { "ascending" } } else { "none" },
            "arrow": if active { if filter.descending { "▼" } else { "▲" } } else { "" },
        })
    })
    .collect();
    let clusters: Vec<String> =
        domain::clusters::list(&state, &session.actor()).await?.into_iter().map(|c| c.name).collect();
    let pager = json!({
        "page": page, "pages": pages, "total": total,
        "first": (total > 0).then(|| filter.offset + 1),
        "last": filter.offset as u64 + hosts.len() as u64,
        "prev": (page > 1).then(|| q.href(&[("page", (page - 1).to_string())])),
        "next": ((page as u64) < pages).then(|| q.href(&[("page", (page + 1).to_string())])),
    });
    let summary = domain::hosts::summary(&state, &session.actor()).await?;
    let maintenance =
        health::Maintenance::load(&state, &session.actor()).await?.hosts(&state, &session.actor()).await?;
    let rows: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let mut row = host_row(h);
            row["maintenance"] = json!(maintenance.on(&h.id, &h.hostname));
            row
        })
        .collect();
    Ok(session.page(
        &state,
        "hosts",
        "Hosts",
        "hosts",
        json!({
            "hosts": rows,
            "total": total,
            "summary": summary,
            "error": error,
            "q": {"status": q.status, "kind": q.kind, "label": q.label, "q": q.q, "sort": q.sort, "dir": q.dir,
                  "per": per},
            "statuses": ["healthy", "lost", "decommissioned"],
            "kinds": ["container", "vm", "physical", "unknown"],
            "per_options": PAGE_SIZES,
            "columns": columns,
            "pager": pager,
            "clusters": clusters,
        }),
    ))
}

/// The bulk form: an action over the selected hosts or over every host the
/// filter matches.
#[derive(Debug, Deserialize)]
struct BulkForm {
    action: String,
    #[serde(default)]
    host: Vec<String>,
    /// `selected` or `filtered`.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    confirmed: String,
    #[serde(flatten)]
    filter: ListQuery,
}

async fn bulk(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<BulkForm>) -> PageResult {
    let back = form.filter.href(&[]);
    let ids: Vec<String> = if form.scope == "filtered" {
        let mut f = match form.filter.filter() {
            Ok(f) => f,
            Err(e) => return Ok(redirect_with(&back, false, &domain_message(&e))),
        };
        f.limit = domain::hosts::MAX_PAGE;
        f.offset = 0;
        let mut ids = Vec::new();
        loop {
            let page = domain::hosts::list(&state, &session.actor(), &f).await?;
            let n = page.items.len();
            ids.extend(page.items.into_iter().map(|h| h.id));
            if n < f.limit as usize || ids.len() >= MAX_BULK {
                break;
            }
            f.offset += f.limit;
        }
        ids
    } else {
        form.host.clone()
    };
    if ids.is_empty() {
        return Ok(redirect_with(
            &back,
            false,
            "no host selected: tick hosts in the list, or choose all filtered hosts",
        ));
    }
    if ids.len() > MAX_BULK {
        return Ok(redirect_with(&back, false, &format!("at most {MAX_BULK} hosts at once; narrow the filter")));
    }
    let labels = match parse_labels(&form.labels) {
        Ok(l) => l,
        Err(e) => return Ok(redirect_with(&back, false, &e)),
    };
    let n = ids.len();
    let (what, destructive) = match form.action.as_str() {
        "label" if labels.is_empty() => {
            return Ok(redirect_with(&back, false, "give the labels to set, as key=value[,key=value]"));
        }
        "label" => (format!("Set labels {} on {n} host(s)", form.labels.trim()), false),
        "cluster" if form.cluster.is_empty() => return Ok(redirect_with(&back, false, "choose a cluster")),
        "cluster" => (format!("Add {n} host(s) to cluster {}", form.cluster), false),
        "decommission" => (
            format!(
                "Decommission {n} host(s): their certificates are revoked and their agents disconnected. This cannot be undone."
            ),
            true,
        ),
        other => return Err(ConsoleError::new(StatusCode::BAD_REQUEST, format!("unknown bulk action {other:?}"))),
    };
    if form.confirmed != "yes" {
        let names = hostnames(&state, &ids, 20).await?;
        let mut hidden: Vec<(String, String)> = vec![
            ("action".into(), form.action.clone()),
            ("labels".into(), form.labels.clone()),
            ("cluster".into(), form.cluster.clone()),
            ("confirmed".into(), "yes".into()),
        ];
        hidden.extend(ids.iter().map(|id| ("host".to_owned(), id.clone())));
        for (k, v) in [
            ("status", &form.filter.status),
            ("kind", &form.filter.kind),
            ("label", &form.filter.label),
            ("q", &form.filter.q),
        ] {
            hidden.push((k.into(), v.clone()));
        }
        return Ok(confirm_page(&session, &state, &what, destructive, "/hosts/bulk", &hidden, &back, names, n));
    }
    let actor = session.actor();
    let result: Result<String, DomainError> = match form.action.as_str() {
        "label" => {
            let changes: BTreeMap<String, Option<String>> = labels.into_iter().map(|(k, v)| (k, Some(v))).collect();
            let mut done = 0;
            let mut failed = Vec::new();
            for id in &ids {
                match domain::hosts::set_labels(&state, &actor, id, &changes).await {
                    Ok(_) => done += 1,
                    Err(e @ DomainError::Conflict(_)) => failed.push(e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
            if failed.is_empty() {
                Ok(format!("labels set on {done} host(s)"))
            } else {
                Err(DomainError::Conflict(format!(
                    "labels set on {done} host(s); {} refused: {}",
                    failed.len(),
                    failed.join("; ")
                )))
            }
        }
        "cluster" => domain::clusters::add_hosts(&state, &actor, &form.cluster, &ids)
            .await
            .map(|all| format!("added {n} host(s) to cluster {} (now {} hosts)", form.cluster, all.len())),
        _ => {
            for id in &ids {
                domain::hosts::decommission(&state, &actor, id).await?;
            }
            Ok(format!("decommissioned {n} host(s)"))
        }
    };
    Ok(match result {
        Ok(msg) => redirect_with(&back, true, &msg),
        Err(e) => redirect_with(&back, false, &domain_message(&e)),
    })
}

async fn hostnames(state: &AppState, ids: &[String], max: usize) -> Result<Vec<String>, ConsoleError> {
    let take: Vec<String> = ids.iter().take(max).cloned().collect();
    let known = state.store.host_addresses(&take).await.map_err(DomainError::from)?;
    Ok(take.iter().map(|id| known.get(id).map(|(h, _)| h.clone()).unwrap_or_else(|| id.clone())).collect())
}

/// The confirmation step of an action: what it does, on how many objects
/// (and the first names), with a form that repeats the request confirmed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn confirm_page(
    session: &Session,
    state: &AppState,
    what: &str,
    destructive: bool,
    action: &str,
    hidden: &[(String, String)],
    cancel: &str,
    names: Vec<String>,
    count: usize,
) -> axum::response::Response {
    let more = count.saturating_sub(names.len());
    session.page(
        state,
        "confirm",
        "Confirm",
        "",
        json!({
            "what": what, "destructive": destructive, "action": action,
            "hidden": hidden.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "cancel": cancel, "names": names, "more": more,
        }),
    )
}

/// `key=value[,key=value...]` (blank: none).
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("label {part:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        drover_api::hosts::validate_label(k, v)?;
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

async fn show(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<WindowQuery>,
) -> PageResult {
    let host = domain::hosts::get(&state, &session.actor(), &id).await?;
    let window = Window::parse(&q, now_millis())?;
    let href = format!("/hosts/{}", url_encode(&id));
    // Host series are labelled with the hostname.
    let charts =
        metrics::section(&state, &session.actor(), HOST_CHARTS, &[("host", &host.hostname)], false, &window, &href)
            .await?;
    let roles: Vec<Value> = state
        .store
        .roles_on_host(&id)
        .await
        .map_err(DomainError::from)?
        .iter()
        .map(|r| {
            let live = state.registry.role_status(&r.id);
            json!({
                "name": r.name, "role_type": r.role_type, "cluster": r.cluster, "service": r.service,
                "href": format!("/clusters/{}/services/{}/roles/{}", url_encode(&r.cluster), url_encode(&r.service), url_encode(&r.name)),
                "service_href": format!("/clusters/{}/services/{}", url_encode(&r.cluster), url_encode(&r.service)),
                "status": live.map(|s| s.state.clone()).unwrap_or_else(|| "unknown".into()),
            })
        })
        .collect();
    let parcels: Vec<Value> = state
        .registry
        .parcel_status(&id)
        .iter()
        .map(|p| {
            json!({"name": p.name, "version": p.version, "state": p.state, "error": p.error,
                   "percent": (p.total_bytes > 0 && p.state == "downloading").then(|| p.downloaded_bytes * 100 / p.total_bytes)})
        })
        .collect();
    let events = state
        .store
        .list_events(&EventFilter {
            object_type: Some("host".into()),
            object_id: Some(id.clone()),
            since: None,
            limit: 20,
        })
        .await
        .map_err(DomainError::from)?;
    let m = host.metrics.as_ref();
    let disks: Vec<Value> = host
        .disks
        .iter()
        .map(|d| {
            let used = m.and_then(|m| m.disks.iter().find(|u| u.mount_point == d.mount_point)).map(|u| u.used_bytes);
            json!({"mount": d.mount_point, "device": d.device, "fs": d.fs_type, "total": human_bytes(d.total_bytes as f64),
                   "used": used.map(|u| human_bytes(u as f64)),
                   "used_pct": used.filter(|_| d.total_bytes > 0).map(|u| format!("{:.0}%", u as f64 * 100.0 / d.total_bytes as f64))})
        })
        .collect();
    let title = host.hostname.clone();
    let (health, _) = health::entity(&state, &session.actor(), health::host_query(&host.hostname), "host").await?;
    let maintenance = health::Maintenance::load(&state, &session.actor())
        .await?
        .host_section(&state, &session, &id, &host.hostname)
        .await?;
    Ok(session.page(
        &state,
        "host",
        &title,
        "hosts",
        json!({
            "can_write": domain::hosts::require_on_host(&state, &session.actor(), domain::Permission::HostsWrite, &id).await.is_ok(),
            "host": host,
            "href": format!("/hosts/{}", url_encode(&id)),
            "cert_serial": host.cert_serial,
            "status": host.status.as_str(),
            "decommissioned": host.status == HostStatus::Decommissioned,
            "labels": host.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "cpu": format!("{} cores{}", host.cpu_cores, if host.machine_cpu_cores > host.cpu_cores { format!(" (machine: {})", host.machine_cpu_cores) } else { String::new() }),
            "memory": format!("{}{}", human_bytes(host.memory_bytes as f64), if host.machine_memory_bytes > host.memory_bytes { format!(" (machine: {})", human_bytes(host.machine_memory_bytes as f64)) } else { String::new() }),
            "metrics": m.map(|m| json!({"at": m.at, "cpu": format!("{:.1}%", m.cpu_percent), "memory": human_bytes(m.memory_used_bytes as f64),
                                         "load": format!("{:.2} {:.2} {:.2}", m.load1, m.load5, m.load15), "uptime": humantime::format_duration(std::time::Duration::from_secs(m.uptime_seconds)).to_string()})),
            "disks": disks,
            "roles": roles,
            "parcels": parcels,
            "events": events,
            "charts": charts.to_json("Charts appear here once the host's agent reports its metrics."),
            "chart_nav": window.nav(&href),
            "health": health,
            "maintenance": maintenance,
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct LabelsForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    remove: Vec<String>,
}

async fn edit_labels(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<LabelsForm>,
) -> PageResult {
    let back = format!("/hosts/{}", url_encode(&id));
    let mut changes: BTreeMap<String, Option<String>> = form.remove.iter().map(|k| (k.clone(), None)).collect();
    if !form.key.trim().is_empty() {
        changes.insert(form.key.trim().to_owned(), Some(form.value.trim().to_owned()));
    }
    if changes.is_empty() {
        return Ok(redirect_with(&back, false, "nothing to change: give a key and a value, or remove a label"));
    }
    Ok(match domain::hosts::set_labels(&state, &session.actor(), &id, &changes).await {
        Ok(h) => redirect_with(&back, true, &format!("labels are now {}", labels_text(&h))),
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_))) => redirect_with(&back, false, &e.to_string()),
        Err(e) => return Err(e.into()),
    })
}

fn labels_text(h: &Host) -> String {
    if h.labels.is_empty() {
        return "none".into();
    }
    h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

async fn decommission(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let host = domain::hosts::get(&state, &session.actor(), &id).await?;
    let back = format!("/hosts/{}", url_encode(&id));
    if form.confirmed != "yes" {
        let what = format!(
            "Decommission host {}: its certificate is revoked and its agent disconnected. This cannot be undone.",
            host.hostname
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{back}/decommission");
        return Ok(confirm_page(
            &session,
            &state,
            &what,
            true,
            &action,
            &hidden,
            &back,
            vec![host.hostname.clone()],
            1,
        ));
    }
    domain::hosts::decommission(&state, &session.actor(), &id).await?;
    Ok(redirect_with(&back, true, &format!("host {} decommissioned", host.hostname)))
}

/// Enrollment tokens, with links to the SSH bootstrap and Docker provider pages.
async fn add_page(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    add_page_with(&state, &session, None, None).await
}

async fn add_page_with(
    state: &AppState,
    session: &Session,
    created: Option<Value>,
    error: Option<String>,
) -> PageResult {
    // Every active token (they can still enroll a host) up to 100, newest
    // first, and the most recent others; the rest are counted, not listed
    // (the SSH bootstrap and the Docker provider make one token per run).
    let (active, inactive, total) = domain::accounts::enrollment_tokens_page(
        state,
        &session.actor(),
        MAX_TOKENS_SHOWN as u32,
        RECENT_INACTIVE_TOKENS as u32,
    )
    .await?;
    let (shown_active, shown_inactive) = (active.len(), inactive.len());
    let hidden = (total as usize).saturating_sub(shown_active + shown_inactive);
    let tokens: Vec<Value> = active
        .iter()
        .take(shown_active)
        .chain(inactive.iter().take(shown_inactive))
        .map(|t| {
            json!({"id": t.id, "state": t.state.as_str(), "uses": t.uses, "max_uses": t.max_uses, "created_by": t.created_by,
                   "expires_at": t.expires_at, "labels": t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                   "revocable": t.state.as_str() == "active",
                   "revoke": format!("/hosts/add/tokens/{}/revoke", url_encode(&t.id))})
        })
        .collect();
    Ok(session.page(
        state,
        "hosts_add",
        "Add hosts",
        "hosts",
        json!({"tokens": tokens, "hidden_tokens": hidden, "created": created, "error": error}),
    ))
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    ttl_hours: String,
    #[serde(default)]
    max_uses: String,
    #[serde(default)]
    labels: String,
}

fn agent_url(state: &AppState) -> (String, Option<String>) {
    match crate::bootstrap::manager_url(state, None) {
        Ok(u) => (u, None),
        Err(why) => (
            format!("https://127.0.0.1:{}", state.config.grpc_addr.port()),
            Some(format!("This command works on the manager's own machine only: {why}")),
        ),
    }
}

/// Creates a token and shows it once with the commands that use it.
async fn create_token(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<TokenForm>) -> PageResult {
    let parsed = (|| -> Result<(u64, u32, BTreeMap<String, String>), String> {
        let hours: f64 = match form.ttl_hours.trim() {
            "" => 1.0,
            t => t.parse().map_err(|_| format!("valid for (hours) must be a number, got {t:?}"))?,
        };
        if hours.is_nan() || hours <= 0.0 || !hours.is_finite() {
            return Err("valid for (hours) must be more than 0".into());
        }
        let uses: u32 = match form.max_uses.trim() {
            "" => 1,
            u => u.parse().map_err(|_| format!("uses must be a whole number, got {u:?}"))?,
        };
        Ok(((hours * 3600.0).round().max(1.0) as u64, uses, parse_labels(&form.labels)?.into_iter().collect()))
    })();
    let (ttl, uses, labels) = match parsed {
        Ok(p) => p,
        Err(e) => return add_page_with(&state, &session, None, Some(e)).await,
    };
    match domain::accounts::create_enrollment_token(&state, &session.actor(), Some(ttl), Some(uses), &labels).await {
        Ok(t) => {
            let (url, warning) = agent_url(&state);
            let command = format!("drover-agent --manager {url} --token {}", t.token);
            let docker = format!(
                "docker run -d --name drover-host -e DROVER_MANAGER={url} -e DROVER_TOKEN={} drover/agent",
                t.token
            );
            let dockerfile = format!(
                "FROM drover/agent\n# The token is given when the container starts, never baked into the image:\n#   docker run -e DROVER_TOKEN=... IMAGE\nENV DROVER_MANAGER={url}"
            );
            let created = json!({"token": t.token, "expires_at": t.expires_at, "max_uses": t.max_uses,
                                 "command": command, "docker": docker, "dockerfile": dockerfile, "warning": warning});
            add_page_with(&state, &session, Some(created), None).await
        }
        Err(e @ DomainError::Invalid(_)) => add_page_with(&state, &session, None, Some(e.to_string())).await,
        Err(e) => Err(e.into()),
    }
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    if form.confirmed != "yes" {
        let what =
            format!("Revoke enrollment token {id}: agents can no longer enroll with it (hosts it enrolled stay).");
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/hosts/add/tokens/{}/revoke", url_encode(&id));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, "/hosts/add", Vec::new(), 1));
    }
    domain::accounts::revoke_enrollment_token(&state, &session.actor(), &id).await?;
    Ok(redirect_with("/hosts/add", true, &format!("enrollment token {id} revoked")))
}
