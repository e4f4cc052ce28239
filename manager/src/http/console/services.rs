//! Services: the add-service wizard (`/clusters/{c}/services/new`), one
//! service's page (roles with applied and running revisions, commands,
//! roles added and removed, dependencies, parcel upgrade and rollback) and
//! one role's page (status, health checks, rendered files, log lines).
//!
//! The wizard keeps its state in the forms it sends (hidden fields), never
//! on the server: each step is a `POST /clusters/{c}/services/new` with a
//! `step` field, checked by [`domain::services::check_plan`], and nothing is
//! created before the last step has passed every check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::clusters::{cluster_href, service_href};
use super::health;
use super::hosts::confirm_page;
use super::metrics::{self, ChartSpec, Window, WindowQuery};
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::commands::{NewCommand, ServiceCommand};
use crate::domain::config::ConfigPatch;
use crate::domain::roles::{NewRole, NewServicePlacement, RoleView, RunState, SelectorPlacement};
use crate::domain::services::{NewServicePlan, PlanProblems, ServiceTypeView};
use crate::domain::{self, DomainError};
use crate::model::{Host, now_millis};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clusters/{c}/services/new", get(wizard_start).post(wizard_step))
        .route("/clusters/{c}/services/{s}", get(show))
        .route("/clusters/{c}/services/{s}/commands", post(run_command))
        .route("/clusters/{c}/services/{s}/parcel", post(parcel_command))
        .route("/clusters/{c}/services/{s}/delete", post(delete_service))
        .route("/clusters/{c}/services/{s}/roles", post(add_role))
        .route("/clusters/{c}/services/{s}/roles/{r}", get(role_page))
        .route("/clusters/{c}/services/{s}/roles/{r}/remove", post(remove_role))
}

/// The message stored with the configuration the wizard sets.
pub const WIZARD_MESSAGE: &str = "initial configuration from the add-service wizard";

/// The window of a page drawn again after a form (the last hour).
fn default_window() -> Window {
    Window::last(now_millis(), metrics::RANGES[0])
}

fn role_href(c: &str, s: &str, r: &str) -> String {
    format!("{}/roles/{}", service_href(c, s), url_encode(r))
}

fn host_href(id: &str) -> String {
    format!("/hosts/{}", url_encode(id))
}

fn uptime(started: Option<i64>) -> Option<String> {
    let started = started?;
    let secs = ((now_millis() - started) / 1000).max(0) as u64;
    Some(humantime::format_duration(std::time::Duration::from_secs(secs)).to_string())
}

fn revision_text(r: Option<u64>) -> String {
    r.map(|r| r.to_string()).unwrap_or_else(|| "none".into())
}

fn role_row(c: &str, s: &str, latest: u64, r: &RoleView, started: Option<i64>) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "href": role_href(c, s, &r.name),
        "role_type": r.role_type,
        "group": r.group,
        "host_id": r.host_id,
        "hostname": if r.hostname.is_empty() { r.host_id.clone() } else { r.hostname.clone() },
        "host_href": host_href(&r.host_id),
        "run_state": r.run_state.as_str(),
        "status": r.status.as_str(),
        "health": r.health.as_str(),
        "applied": revision_text(r.applied_revision),
        "running": revision_text(r.running_revision),
        "applied_behind": r.applied_revision.is_some_and(|a| a < latest),
        "running_behind": r.running_revision.is_some_and(|a| a < latest),
        "stale": r.stale,
        "stale_keys": r.stale_keys,
        "pid": r.pid,
        "uptime": uptime(started),
        "restart_count": r.restart_count,
        "reload_count": r.reload_count,
        "last_error": r.last_error,
        "remove": format!("{}/remove", role_href(c, s, &r.name)),
    })
}

// ---------- the service page ----------

/// The add-role form as sent, kept when it is refused.
#[derive(Debug, Default, Clone, Deserialize)]
struct AddRoleForm {
    #[serde(default)]
    role_type: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    name: String,
}

async fn show(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((c, s)): Path<(String, String)>,
    Query(q): Query<WindowQuery>,
) -> PageResult {
    let window = Window::parse(&q, now_millis())?;
    service_page(&state, &session, &c, &s, &AddRoleForm::default(), None, &window).await
}

async fn service_page(
    state: &AppState,
    session: &Session,
    c: &str,
    s: &str,
    form: &AddRoleForm,
    error: Option<String>,
    window: &Window,
) -> PageResult {
    let svc = domain::services::get(state, &session.actor(), c, s).await?;
    let started = domain::roles::started_at(state, &session.actor(), c, s).await?;
    let href = service_href(c, s);
    let (health, health_node) =
        health::entity(state, &session.actor(), health::query(c, Some(s), None), "service").await?;
    let roles: Vec<Value> = svc
        .roles
        .iter()
        .map(|r| {
            let mut row = role_row(c, s, svc.revision, r, started.get(&r.id).copied());
            row["engine"] = json!(health::child_status(health_node.as_ref(), &format!("{c}/{s}/{}", r.name)));
            row
        })
        .collect();
    let maintenance = health::Maintenance::load(state, &session.actor()).await?.service_section(session, c, s);
    let stale = svc.roles.iter().filter(|r| r.stale).count();
    let st = domain::services::get_type(state, &svc.service_type)?;
    let deps = domain::services::dependencies(state, &session.actor(), c, s).await?;
    let parcel = domain::services::parcel(state, &session.actor(), c, s).await?;
    let commands: Vec<Value> =
        domain::commands::list(state, &session.actor(), c, s).await?.iter().take(10).map(super::commands_row).collect();
    // The add-role form's hosts, only for who may add roles.
    let hosts: Vec<Value> = if session.actor().may(domain::Permission::ServicesWrite, domain::Scope::Cluster(c)) {
        domain::clusters::member_hosts(state, &session.actor(), c)
            .await?
            .iter()
            .map(|h| json!({"id": h.id, "hostname": h.hostname, "selected": h.id == form.host}))
            .collect()
    } else {
        Vec::new()
    };
    let role_types: Vec<Value> = st
        .role_types
        .iter()
        .map(|rt| {
            let n = svc.roles.iter().filter(|r| r.role_type == rt.name).count();
            json!({"name": rt.name, "count": n, "min": rt.min_instances, "max": rt.max_instances,
                   "selected": rt.name == form.role_type})
        })
        .collect();
    let svc_link = |name: &str| json!({"name": name, "href": service_href(c, name)});
    let dependencies = json!({
        "requires": deps.requires.iter().map(|(t, s)| json!({"type": t, "service": s.as_deref().map(svc_link)})).collect::<Vec<_>>(),
        "required_by": deps.required_by.iter().map(|n| svc_link(n)).collect::<Vec<_>>(),
        "refers_to": deps.refers_to.iter().map(|(p, n)| json!({"parameter": p, "service": svc_link(n)})).collect::<Vec<_>>(),
        "referred_by": deps.referred_by.iter().map(|(n, p)| json!({"parameter": p, "service": svc_link(n)})).collect::<Vec<_>>(),
    });
    let parcel = parcel.map(|p| {
        let upgrades: Vec<&String> = p.available.iter().filter(|v| Some(*v) != p.active.as_ref()).collect();
        json!({"name": p.name, "active": p.active, "distributed": p.distributed, "upgrades": upgrades,
               "can_rollback": p.distributed.iter().any(|v| Some(v) != p.active.as_ref())})
    });
    // A dashboard of the type's metrics, a line per role, and the roles up per type.
    let dashboard = metrics::service_charts(state, &svc.service_type, None);
    let has_dashboard = !dashboard.is_empty();
    let mut specs: Vec<ChartSpec> = metrics::ROLES_UP_CHART.to_vec();
    specs.extend(dashboard);
    let charts =
        metrics::section(state, &session.actor(), &specs, &[("cluster", c), ("service", s)], true, window, &href)
            .await?;
    let title = format!("{c}/{s}");
    let resp = session.page(
        state,
        "service",
        &title,
        "clusters",
        json!({
            "can": session.can(Some(c)),
            "cluster": c,
            "cluster_href": cluster_href(c),
            "service": svc.name,
            "href": href,
            "type": svc.service_type,
            "type_name": st.display_name,
            "revision": svc.revision,
            "health": svc.health.as_str(),
            "created_at": svc.created_at,
            "created_by": svc.created_by,
            "roles": roles,
            "roles_count": svc.roles.len(),
            "stale": stale,
            "batch_size": st.rolling_restart.as_ref().map(|r| r.batch_size).unwrap_or(1),
            "commands": commands,
            "role_types": role_types,
            "hosts": hosts,
            "form": {"name": form.name},
            "error": error,
            "deps": dependencies,
            "parcel": parcel,
            "charts": charts.to_json("Charts appear here once the agents report the metrics of this service's roles."),
            "chart_nav": window.nav(&href),
            "no_dashboard": (!has_dashboard).then_some(metrics::NO_DASHBOARD),
            "health_tests": health,
            "maintenance": maintenance,
        }),
    );
    Ok(if error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

#[derive(Debug, Deserialize)]
struct CommandForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    stale_only: String,
    #[serde(default)]
    batch_size: String,
    #[serde(default)]
    confirmed: String,
}

async fn run_command(
    State(state): State<Arc<AppState>>,
    Path((c, s)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<CommandForm>,
) -> PageResult {
    let back = service_href(&c, &s);
    let svc = domain::services::get(&state, &session.actor(), &c, &s).await?;
    let (name, verb) = match form.name.as_str() {
        "start" => (ServiceCommand::Start, "Start"),
        "stop" => (ServiceCommand::Stop, "Stop"),
        "restart" => (ServiceCommand::Restart, "Restart"),
        "rolling-restart" => (ServiceCommand::RollingRestart, "Rolling restart"),
        other => return Err(ConsoleError::new(StatusCode::BAD_REQUEST, format!("unknown command {other:?}"))),
    };
    let rolling = name == ServiceCommand::RollingRestart;
    let stale_only = rolling && form.stale_only == "yes";
    let batch_size = match form.batch_size.trim() {
        "" => None,
        _ if !rolling => None,
        b => match b.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Ok(redirect_with(&back, false, &format!("the batch size must be a whole number, got {b:?}")));
            }
        },
    };
    if form.confirmed != "yes" {
        let roles: Vec<&RoleView> = svc.roles.iter().filter(|r| !stale_only || r.stale).collect();
        let mut what = format!("{verb} service {c}/{s}: {} role(s)", roles.len());
        if stale_only {
            what.push_str(" whose configuration is stale");
        }
        if let Some(b) = batch_size {
            what.push_str(&format!(", {b} at a time"));
        }
        let names: Vec<String> = roles.iter().take(20).map(|r| format!("{} on {}", r.name, r.hostname)).collect();
        let hidden = vec![
            ("name".to_owned(), form.name.clone()),
            ("stale_only".to_owned(), if stale_only { "yes".into() } else { String::new() }),
            ("batch_size".to_owned(), batch_size.map(|b| b.to_string()).unwrap_or_default()),
            ("confirmed".to_owned(), "yes".to_owned()),
        ];
        let destructive = name != ServiceCommand::Start;
        let action = format!("{back}/commands");
        return Ok(confirm_page(&session, &state, &what, destructive, &action, &hidden, &back, names, roles.len()));
    }
    let req = NewCommand { name, roles: None, stale_only, version: None };
    Ok(match domain::commands::create_with_batch_size(&state, &session.actor(), &c, &s, req, batch_size).await {
        Ok(cmd) => redirect_with(
            &format!("/commands/{}", url_encode(&cmd.id)),
            true,
            &format!("{} of {c}/{s} started ({} steps)", cmd.name, cmd.steps.len()),
        ),
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_) | DomainError::NotFound(_))) => {
            redirect_with(&back, false, &domain_message(&e))
        }
        Err(e) => return Err(e.into()),
    })
}

#[derive(Debug, Deserialize)]
struct ParcelForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    confirmed: String,
}

async fn parcel_command(
    State(state): State<Arc<AppState>>,
    Path((c, s)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<ParcelForm>,
) -> PageResult {
    let back = service_href(&c, &s);
    let parcel = domain::services::parcel(&state, &session.actor(), &c, &s)
        .await?
        .ok_or_else(|| ConsoleError::new(StatusCode::BAD_REQUEST, format!("service {s} runs from no parcel")))?;
    let rollback = match form.action.as_str() {
        "upgrade" => false,
        "rollback" => true,
        other => return Err(ConsoleError::new(StatusCode::BAD_REQUEST, format!("unknown parcel action {other:?}"))),
    };
    let version = (!rollback).then(|| form.version.trim().to_owned());
    if version.as_deref() == Some("") {
        return Ok(redirect_with(&back, false, "choose the version to upgrade to"));
    }
    if form.confirmed != "yes" {
        let from = parcel.active.as_deref().unwrap_or("none");
        let what = match &version {
            Some(v) => format!(
                "Upgrade {c}/{s}: distribute and activate {} {v} (now {from}) on the cluster's hosts, then restart every role in batches",
                parcel.name
            ),
            None => format!(
                "Roll back {c}/{s}: activate the previously active version of {} (now {from}) on the cluster's hosts, then restart every role in batches",
                parcel.name
            ),
        };
        let hidden = vec![
            ("action".to_owned(), form.action.clone()),
            ("version".to_owned(), form.version.clone()),
            ("confirmed".to_owned(), "yes".to_owned()),
        ];
        return Ok(confirm_page(
            &session,
            &state,
            &what,
            true,
            &format!("{back}/parcel"),
            &hidden,
            &back,
            Vec::new(),
            0,
        ));
    }
    Ok(match domain::parcels::upgrade_or_rollback(&state, &session.actor(), &c, &s, rollback, version).await {
        Ok(cmd) => redirect_with(
            &format!("/commands/{}", url_encode(&cmd.id)),
            true,
            &format!("{} of {c}/{s} started", cmd.name),
        ),
        Err(
            e @ (DomainError::Invalid(_)
            | DomainError::Conflict(_)
            | DomainError::NotFound(_)
            | DomainError::Unsuitable(_)),
        ) => redirect_with(&back, false, &domain_message(&e)),
        Err(e) => return Err(e.into()),
    })
}

async fn add_role(
    State(state): State<Arc<AppState>>,
    Path((c, s)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<AddRoleForm>,
) -> PageResult {
    let req = NewRole {
        role_type: form.role_type.trim().to_owned(),
        host_id: Some(form.host.trim().to_owned()).filter(|h| !h.is_empty()),
        name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
        ..Default::default()
    };
    if req.host_id.is_none() {
        return service_page(
            &state,
            &session,
            &c,
            &s,
            &form,
            Some("choose the host to run the role on".into()),
            &default_window(),
        )
        .await;
    }
    match domain::roles::create(&state, &session.actor(), &c, &s, vec![req], true).await {
        Ok(created) => {
            let names: Vec<String> = created.iter().map(|r| format!("{} on {}", r.name, r.hostname)).collect();
            Ok(redirect_with(
                &service_href(&c, &s),
                true,
                &format!("role {} added (stopped until started)", names.join(", ")),
            ))
        }
        Err(
            e @ (DomainError::Invalid(_)
            | DomainError::Conflict(_)
            | DomainError::NotFound(_)
            | DomainError::Unsuitable(_)),
        ) => service_page(&state, &session, &c, &s, &form, Some(domain_message(&e)), &default_window()).await,
        Err(e) => Err(e.into()),
    }
}

async fn remove_role(
    State(state): State<Arc<AppState>>,
    Path((c, s, r)): Path<(String, String, String)>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let back = service_href(&c, &s);
    let role = domain::roles::get(&state, &session.actor(), &c, &s, &r).await?;
    if form.confirmed != "yes" {
        let what = format!(
            "Remove role {} ({}) of {c}/{s} from host {}: its process is stopped and its files removed. This cannot be undone.",
            role.name, role.role_type, role.hostname
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{}/remove", role_href(&c, &s, &role.name));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &back, vec![role.name.clone()], 1));
    }
    Ok(match domain::roles::delete(&state, &session.actor(), &c, &s, &role.id).await {
        Ok(()) => redirect_with(&back, true, &format!("role {} removed", role.name)),
        Err(e @ DomainError::Conflict(_)) => redirect_with(&back, false, &domain_message(&e)),
        Err(e) => return Err(e.into()),
    })
}

async fn delete_service(
    State(state): State<Arc<AppState>>,
    Path((c, s)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let back = service_href(&c, &s);
    let svc = domain::services::get(&state, &session.actor(), &c, &s).await?;
    if form.confirmed != "yes" {
        let what = format!(
            "Delete service {c}/{s} and its {} role(s): their processes are stopped and their files removed. This cannot be undone.",
            svc.roles.len()
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let names = svc.roles.iter().take(20).map(|r| r.name.clone()).collect();
        return Ok(confirm_page(
            &session,
            &state,
            &what,
            true,
            &format!("{back}/delete"),
            &hidden,
            &back,
            names,
            svc.roles.len(),
        ));
    }
    Ok(match domain::services::delete(&state, &session.actor(), &c, &s).await {
        Ok(()) => redirect_with(&cluster_href(&c), true, &format!("service {s} deleted")),
        Err(e @ DomainError::Conflict(_)) => redirect_with(&back, false, &domain_message(&e)),
        Err(e) => return Err(e.into()),
    })
}

// ---------- the role page ----------

async fn role_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((c, s, r)): Path<(String, String, String)>,
    Query(q): Query<WindowQuery>,
) -> PageResult {
    let window = Window::parse(&q, now_millis())?;
    let svc = domain::services::get(&state, &session.actor(), &c, &s).await?;
    let d = domain::roles::detail(&state, &session.actor(), &c, &s, &r).await?;
    let href = role_href(&c, &s, &d.view.name);
    let scope = [("cluster", c.as_str()), ("service", s.as_str()), ("role", d.view.name.as_str())];
    let actor = session.actor();
    let dashboard = metrics::service_charts(&state, &svc.service_type, Some(&d.view.role_type));
    let (process, service) = futures::try_join!(
        metrics::section(&state, &actor, metrics::PROCESS_CHARTS, &scope, false, &window, &href),
        metrics::section(&state, &actor, &dashboard, &scope, false, &window, &href),
    )?;
    let stopped = d.view.run_state == RunState::Stopped;
    let empty = if stopped {
        "This role is stopped: its metrics appear once it runs and its agent reports them."
    } else {
        "Charts appear here once the agent reports this role's metrics."
    };
    let service_empty = if dashboard.is_empty() { metrics::no_dashboard(&state, &svc.service_type) } else { empty };
    let charts = json!({
        "stopped": stopped,
        "process": process.to_json(empty),
        "service": service.to_json(service_empty),
    });
    let started = d
        .started_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    let row = role_row(&c, &s, svc.revision, &d.view, started);
    let role_query = health::query(&c, Some(&s), Some(&d.view.name));
    let (health, _) = health::entity(&state, &session.actor(), role_query, "role").await?;
    let maintenance_via = health::Maintenance::load(&state, &session.actor()).await?.role_via(&c, &s);
    let files: Vec<Value> = d
        .files
        .iter()
        .map(|f| json!({"path": f.path, "mode": format!("{:o}", f.mode), "content": f.content}))
        .collect();
    let title = format!("{} · {c}/{s}", d.view.name);
    // Starts, crash restarts, failures and health changes, as the agent's
    // reports showed them (see registry::role_transitions).
    let history = state
        .store
        .list_events(&crate::store::EventFilter {
            object_type: Some("role".into()),
            object_id: Some(format!("{c}/{s}/{}", d.view.name)),
            since: None,
            limit: 50,
        })
        .await
        .map_err(domain::DomainError::from)?;
    Ok(session.page(
        &state,
        "role",
        &title,
        "clusters",
        json!({
            "can": session.can(Some(&c)),
            "cluster": c,
            "cluster_href": cluster_href(&c),
            "service": s,
            "service_href": service_href(&c, &s),
            "revision": svc.revision,
            "role": row,
            "updated_at": d.view.updated_at,
            "started_at": d.started_at,
            "last_exit_status": d.last_exit_status,
            "last_reload_at": d.view.last_reload_at,
            "files": files,
            "command_line": d.command_line,
            "health_checks": d.health_checks,
            "log_files": d.log_files,
            "logs": super::logs::role_viewer(&c, &s, &d.view.name, &d.log_files),
            "render_error": d.render_error,
            "log_lines": d.view.last_log_lines,
            "history": history,
            "remove": format!("{}/remove", role_href(&c, &s, &d.view.name)),
            "charts": charts,
            "chart_nav": window.nav(&href),
            "health": health,
            "maintenance_via": maintenance_via,
        }),
    ))
}

// ---------- the add-service wizard ----------

/// Everything the wizard's forms carry, whatever the step.
#[derive(Debug, Default, Clone, Deserialize)]
struct WizardForm {
    /// The step asked for: `type`, `place`, `config` or `create`.
    #[serde(default)]
    step: String,
    #[serde(default, rename = "type")]
    service_type: String,
    #[serde(default)]
    name: String,
    /// `role type:host id`, one per role.
    #[serde(default)]
    place: Vec<String>,
    /// The label selector filtering the hosts of step 2.
    #[serde(default)]
    selector: String,
    /// Placement by label selector, one triple per role type: the role
    /// type, its selector and its count (blank: 1). A triple with both
    /// blank places nothing.
    #[serde(default)]
    srt: Vec<String>,
    #[serde(default)]
    ssel: Vec<String>,
    #[serde(default)]
    scount: Vec<String>,
    /// `role type:host id`, one per role placed by selector at the review
    /// (step 3): the hosts created on, checked again at the last step.
    #[serde(default)]
    picked: Vec<String>,
    /// Parameter names and values, pairwise.
    #[serde(default)]
    pn: Vec<String>,
    #[serde(default)]
    pv: Vec<String>,
    #[serde(default)]
    start: String,
}

/// `role type:host id` fields as pairs, in order, repeats left out.
fn pairs(fields: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        fields.iter().filter_map(|p| p.split_once(':')).map(|(rt, h)| (rt.to_owned(), h.to_owned())).collect();
    out.dedup();
    out
}

impl WizardForm {
    /// The hosts ticked, as `(role type, host id)`.
    fn placements(&self) -> Vec<(String, String)> {
        pairs(&self.place)
    }

    /// The hosts picked by selector at the review, as `(role type, host id)`.
    fn picked(&self) -> Vec<(String, String)> {
        pairs(&self.picked)
    }

    /// Selector placements as typed: `(role type, selector, count)`, those
    /// with a selector or a count only.
    fn selectors(&self) -> Vec<(String, String, String)> {
        self.srt
            .iter()
            .zip(&self.ssel)
            .zip(&self.scount)
            .map(|((rt, sel), n)| (rt.trim().to_owned(), sel.trim().to_owned(), n.trim().to_owned()))
            .filter(|(rt, sel, n)| !rt.is_empty() && (!sel.is_empty() || !n.is_empty()))
            .collect()
    }

    /// The selector and count typed for role type `rt`.
    fn selector_of(&self, rt: &str) -> Option<(String, String)> {
        self.selectors().into_iter().find(|(t, _, _)| t == rt).map(|(_, sel, n)| (sel, n))
    }

    /// The values typed (blank: the default).
    fn values(&self) -> BTreeMap<String, String> {
        self.pn
            .iter()
            .zip(&self.pv)
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.clone(), v.trim().to_owned()))
            .collect()
    }

    fn plan(&self, roles: Option<Vec<(String, String)>>, values: bool) -> NewServicePlan {
        NewServicePlan {
            name: self.name.trim().to_owned(),
            service_type: self.service_type.trim().to_owned(),
            roles,
            values: values.then(|| self.values().into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
        }
    }

    /// Hidden fields carrying the state to another step, leaving out those
    /// the step shows as inputs.
    fn hidden(&self, skip_type: bool, skip_place: bool, skip_values: bool) -> Vec<Value> {
        let mut out = Vec::new();
        if !skip_type {
            out.push(json!({"name": "type", "value": self.service_type}));
            out.push(json!({"name": "name", "value": self.name}));
        }
        if !skip_place {
            for p in &self.place {
                out.push(json!({"name": "place", "value": p}));
            }
            for (rt, sel, n) in self.selectors() {
                out.push(json!({"name": "srt", "value": rt}));
                out.push(json!({"name": "ssel", "value": sel}));
                out.push(json!({"name": "scount", "value": n}));
            }
        }
        if !skip_values {
            for (k, v) in self.values() {
                out.push(json!({"name": "pn", "value": k}));
                out.push(json!({"name": "pv", "value": v}));
            }
        }
        out
    }
}

/// Step 1, or step 2 with `step=place`, filled from the query string: the
/// wizard can be linked to (`?type=redis&name=cache&step=place&place=primary:h1`;
/// keys may repeat, as in the forms).
async fn wizard_start(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    domain::clusters::get(&state, &session.actor(), &c).await?;
    let form: WizardForm = serde_html_form::from_str(query.as_deref().unwrap_or_default()).map_err(|e| {
        ConsoleError::new(StatusCode::BAD_REQUEST, format!("the link's query is not what this page expects: {e}"))
    })?;
    if form.step != "place" {
        return wizard_type(&state, &session, &c, &form, &PlanProblems::default(), None);
    }
    let problems = domain::services::check_plan(&state, &session.actor(), &c, &form.plan(None, false)).await?;
    if problems.name.is_some() || problems.service_type.is_some() {
        return wizard_type(&state, &session, &c, &form, &problems, Some(StatusCode::UNPROCESSABLE_ENTITY));
    }
    let st = domain::services::get_type(&state, form.service_type.trim())?;
    wizard_place(&state, &session, &c, &form, &st, &PlanProblems::default(), None).await
}

/// The roles of the form placed: the hosts ticked, then those picked by
/// each label selector ([`domain::roles::place_new_service`]); what could
/// not be placed is in `problems`, by role type.
async fn resolve_placement(
    state: &AppState,
    session: &Session,
    c: &str,
    form: &WizardForm,
) -> Result<NewServicePlacement, ConsoleError> {
    let ticked = form.placements();
    let mut wanted = Vec::new();
    let mut unreadable = BTreeMap::new();
    for (rt, selector, n) in form.selectors() {
        let count = if n.is_empty() { Ok(1) } else { n.parse::<u32>() };
        match count {
            Ok(count) => wanted.push(SelectorPlacement { role_type: rt, selector, count }),
            Err(_) => {
                unreadable.insert(rt.clone(), format!("role type {rt}: the count must be a whole number, got {n:?}"));
            }
        }
    }
    let mut placed =
        match domain::roles::place_new_service(state, &session.actor(), c, form.service_type.trim(), &ticked, &wanted)
            .await
        {
            Ok(p) => p,
            // An unknown type is reported by the plan's check.
            Err(DomainError::Unsuitable(_)) => NewServicePlacement { roles: ticked, ..Default::default() },
            Err(e) => return Err(e.into()),
        };
    placed.problems.extend(unreadable);
    Ok(placed)
}

async fn wizard_step(
    State(state): State<Arc<AppState>>,
    Path(c): Path<String>,
    CsrfForm(session, form): CsrfForm<WizardForm>,
) -> PageResult {
    domain::clusters::get(&state, &session.actor(), &c).await?;
    let step = form.step.as_str();
    if step == "type" {
        return wizard_type(&state, &session, &c, &form, &PlanProblems::default(), None);
    }
    let placed = match step {
        "config" | "create" => Some(resolve_placement(&state, &session, &c, &form).await?),
        _ => None,
    };
    let values = step == "create";
    let roles = placed.as_ref().map(|p| p.roles.clone());
    let mut problems = domain::services::check_plan(&state, &session.actor(), &c, &form.plan(roles, values)).await?;
    if problems.name.is_some() || problems.service_type.is_some() {
        return wizard_type(&state, &session, &c, &form, &problems, Some(StatusCode::UNPROCESSABLE_ENTITY));
    }
    let st = domain::services::get_type(&state, form.service_type.trim())?;
    let Some(placed) = placed else {
        if step != "place" {
            return Err(ConsoleError::new(StatusCode::BAD_REQUEST, format!("unknown wizard step {step:?}")));
        }
        return wizard_place(&state, &session, &c, &form, &st, &PlanProblems::default(), None).await;
    };
    // Why a selector placed nothing says more than the count it left.
    problems.roles.extend(placed.problems.clone());
    if !problems.roles.is_empty() {
        return wizard_place(&state, &session, &c, &form, &st, &problems, Some(StatusCode::UNPROCESSABLE_ENTITY)).await;
    }
    if step == "config" {
        return wizard_config(&state, &session, &c, &form, &st, &placed.roles, &PlanProblems::default(), None, None)
            .await;
    }
    // The hosts picked by selector must be those reviewed.
    let by_selector = |roles: &[(String, String)]| {
        let types: Vec<String> = form.selectors().into_iter().map(|(rt, _, _)| rt).collect();
        let mut out: Vec<(String, String)> = roles.iter().filter(|(rt, _)| types.contains(rt)).cloned().collect();
        out.sort();
        out
    };
    let mut reviewed = form.picked();
    reviewed.sort();
    if by_selector(&placed.roles) != reviewed {
        let now: Vec<String> = by_selector(&placed.roles).iter().map(|(rt, h)| format!("{rt} on {h}")).collect();
        let why = format!(
            "nothing was created: the hosts the label selectors pick are not those reviewed (now {}); check the roles above and create again",
            if now.is_empty() { "none".to_owned() } else { now.join(", ") }
        );
        return wizard_config(
            &state,
            &session,
            &c,
            &form,
            &st,
            &placed.roles,
            &PlanProblems::default(),
            Some(why),
            Some(StatusCode::CONFLICT),
        )
        .await;
    }
    if !problems.values.is_empty() {
        return wizard_config(
            &state,
            &session,
            &c,
            &form,
            &st,
            &placed.roles,
            &problems,
            None,
            Some(StatusCode::UNPROCESSABLE_ENTITY),
        )
        .await;
    }
    create_service(&state, &session, &c, &form, &st, &placed.roles, problems).await
}

fn wizard_frame(c: &str, step: u8, form: &WizardForm) -> Value {
    json!({
        "cluster": c,
        "cluster_href": cluster_href(c),
        "action": format!("{}/services/new", cluster_href(c)),
        "step": step,
        "steps": [
            {"n": 1, "title": "Choose the type", "current": step == 1},
            {"n": 2, "title": "Place roles", "current": step == 2},
            {"n": 3, "title": "Review configuration", "current": step == 3},
            {"n": 4, "title": "Create", "current": step == 4},
        ],
        "name": form.name,
        "type": form.service_type,
    })
}

fn with_status(resp: axum::response::Response, status: Option<StatusCode>) -> axum::response::Response {
    match status {
        Some(s) => (s, resp).into_response(),
        None => resp,
    }
}

fn wizard_type(
    state: &AppState,
    session: &Session,
    c: &str,
    form: &WizardForm,
    problems: &PlanProblems,
    status: Option<StatusCode>,
) -> PageResult {
    let types: Vec<Value> = domain::services::list_types(state)
        .iter()
        .map(|t| {
            let role_types: Vec<Value> = t
                .role_types
                .iter()
                .map(|r| json!({"name": r.name, "description": r.description, "range": instance_range(r.min_instances, r.max_instances)}))
                .collect();
            json!({"name": t.name, "display_name": t.display_name, "description": t.description, "version": t.version,
                   "requires": t.requires, "role_types": role_types, "checked": t.name == form.service_type})
        })
        .collect();
    let mut data = wizard_frame(c, 1, form);
    data["types"] = json!(types);
    data["name_error"] = json!(problems.name);
    data["type_error"] = json!(problems.service_type);
    data["hidden"] = json!(form.hidden(true, false, false));
    let title = format!("Add a service to {c}");
    Ok(with_status(session.page(state, "service_new", &title, "clusters", data), status))
}

fn instance_range(min: u32, max: Option<u32>) -> String {
    match max {
        Some(max) if max == min => format!("exactly {min}"),
        Some(max) => format!("{min} to {max}"),
        None => format!("{min} or more"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn wizard_place(
    state: &AppState,
    session: &Session,
    c: &str,
    form: &WizardForm,
    st: &ServiceTypeView,
    problems: &PlanProblems,
    status: Option<StatusCode>,
) -> PageResult {
    let hosts: Vec<Host> = domain::clusters::member_hosts(state, &session.actor(), c).await?;
    let selector = form.selector.trim();
    let (matcher, selector_error) = if selector.is_empty() {
        (None, None)
    } else {
        match drover_proto::labels::parse_selector(selector) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let placed = form.placements();
    let mut hidden = form.hidden(false, true, false);
    let role_types: Vec<Value> = st
        .role_types
        .iter()
        .map(|rt| {
            let mut rows = Vec::new();
            for h in &hosts {
                let chosen = placed.iter().any(|(t, id)| t == &rt.name && id == &h.id);
                let shown = matcher.as_ref().is_none_or(|m| m.matches(&h.labels));
                if !shown {
                    // Hidden by the filter, still placed: carried along.
                    if chosen {
                        hidden.push(json!({"name": "place", "value": format!("{}:{}", rt.name, h.id)}));
                    }
                    continue;
                }
                let status = state.registry.host_status(&h.id).unwrap_or(h.status);
                rows.push(json!({
                    "value": format!("{}:{}", rt.name, h.id), "id": h.id, "hostname": h.hostname,
                    "href": host_href(&h.id), "status": status.as_str(), "checked": chosen,
                    "addresses": h.addresses.join(", "),
                    "labels": h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                    "input_id": format!("place-{}-{}", rt.name, h.id),
                }));
            }
            let n = placed.iter().filter(|(t, _)| t == &rt.name).count();
            let (sel, count) = form.selector_of(&rt.name).unzip();
            json!({"name": rt.name, "description": rt.description, "range": instance_range(rt.min_instances, rt.max_instances),
                   "min": rt.min_instances, "max": rt.max_instances, "placed": n, "hosts": rows,
                   "error": problems.roles.get(&rt.name), "by_selector": sel.is_some(),
                   "sel": sel, "count": count})
        })
        .collect();
    let mut data = wizard_frame(c, 2, form);
    data["type_name"] = json!(st.display_name);
    data["role_types"] = json!(role_types);
    data["hosts_total"] = json!(hosts.len());
    data["selector"] = json!(form.selector);
    data["selector_error"] = json!(selector_error);
    data["placement_error"] = json!(problems.roles.get(""));
    data["hidden"] = json!(hidden);
    let title = format!("Add a service to {c}");
    Ok(with_status(session.page(state, "service_new", &title, "clusters", data), status))
}

/// A parameter's default as shown (a memory size in the units it is typed).
fn show_default(kind: &str, v: &Value) -> String {
    match (kind, v) {
        ("memory_size", Value::Number(n)) => {
            n.as_u64().map(drover_service_types::params::format_memory).unwrap_or_else(|| n.to_string())
        }
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn wizard_config(
    state: &AppState,
    session: &Session,
    c: &str,
    form: &WizardForm,
    st: &ServiceTypeView,
    roles: &[(String, String)],
    problems: &PlanProblems,
    error: Option<String>,
    status: Option<StatusCode>,
) -> PageResult {
    let typed = form.values();
    let params = st.parameters.clone().unwrap_or_default();
    let mut ordered: Vec<_> = params.iter().filter(|p| p.default.is_none()).collect();
    ordered.extend(params.iter().filter(|p| p.default.is_some()));
    let rows: Vec<Value> = ordered
        .iter()
        .map(|p| {
            let value = typed.get(&p.name).cloned().unwrap_or_default();
            let default = p.default.as_ref().filter(|d| !d.is_null()).map(|d| show_default(&p.kind_name, d));
            let choices: Vec<Value> = match p.kind_name.as_str() {
                "enum" => p.kind["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|v| json!({"value": v, "selected": v == value}))
                    .collect(),
                "boolean" => ["true", "false"].iter().map(|v| json!({"value": v, "selected": *v == value})).collect(),
                _ => Vec::new(),
            };
            let bounds = match (p.kind.get("min").and_then(Value::as_i64), p.kind.get("max").and_then(Value::as_i64)) {
                (Some(a), Some(b)) => Some(format!("{a} to {b}")),
                (Some(a), None) => Some(format!("at least {a}")),
                (None, Some(b)) => Some(format!("at most {b}")),
                _ if p.kind_name == "port" => Some("1 to 65535".into()),
                _ => None,
            };
            let scope = match &p.scope {
                Value::Array(types) => Some(types.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(", ")),
                _ => None,
            };
            json!({
                "name": p.name, "kind": p.kind_name, "description": p.description, "default": default,
                "no_default": p.default.as_ref().is_none_or(|d| d.is_null()),
                "value": value, "choices": choices, "select": !choices.is_empty(),
                "password": p.sensitive, "bounds": bounds, "scope": scope, "restart": p.restart,
                "error": problems.values.get(&p.name), "input_id": format!("param-{}", p.name),
            })
        })
        .collect();
    let names: HashMap<String, String> = domain::clusters::member_hosts(state, &session.actor(), c)
        .await?
        .into_iter()
        .map(|h| (h.id, h.hostname))
        .collect();
    let selectors = form.selectors();
    let mut hidden = form.hidden(false, false, true);
    let placements: Vec<Value> = roles
        .iter()
        .map(|(rt, h)| {
            let by = selectors.iter().find(|(t, _, _)| t == rt).map(|(_, sel, n)| {
                hidden.push(json!({"name": "picked", "value": format!("{rt}:{h}")}));
                let sel = if sel.is_empty() { "any labels" } else { sel };
                format!("{sel}, count {}", if n.is_empty() { "1" } else { n })
            });
            json!({"role_type": rt, "host": names.get(h).cloned().unwrap_or_else(|| h.clone()), "href": host_href(h),
                   "by": by})
        })
        .collect();
    let mut data = wizard_frame(c, 3, form);
    data["type_name"] = json!(st.display_name);
    data["params"] = json!(rows);
    data["placements"] = json!(placements);
    data["values_error"] = json!(problems.values.get(""));
    data["error"] = json!(error);
    data["start"] = json!(form.start == "yes" || form.step != "create");
    data["hidden"] = json!(hidden);
    let title = format!("Add a service to {c}");
    Ok(with_status(session.page(state, "service_new", &title, "clusters", data), status))
}

/// Creates the service checked by [`domain::services::check_plan`]: the
/// service, its configuration, its roles, then the start command if asked.
/// A step refused after the service exists is reported on the service's
/// page, saying what was created.
async fn create_service(
    state: &Arc<AppState>,
    session: &Session,
    c: &str,
    form: &WizardForm,
    st: &ServiceTypeView,
    roles: &[(String, String)],
    problems: PlanProblems,
) -> PageResult {
    let actor = session.actor();
    let name = form.name.trim().to_owned();
    let svc = match domain::services::create(state, &actor, c, &name, &st.name).await {
        Ok(s) => s,
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_) | DomainError::NotFound(_))) => {
            let problems = PlanProblems::default();
            let why = format!("nothing was created: {}", domain_message(&e));
            return wizard_config(state, session, c, form, st, roles, &problems, Some(why), Some(StatusCode::CONFLICT))
                .await;
        }
        Err(e) => return Err(e.into()),
    };
    let page = service_href(c, &svc.name);
    let refused = |what: &str, e: &DomainError| {
        redirect_with(
            &page,
            false,
            &format!(
                "service {} was created ({what}) but the next step was refused: {}. Finish it on this page, or delete the service.",
                svc.name,
                domain_message(e)
            ),
        )
    };
    // The configuration first: the roles are then rendered with it (a
    // required parameter without a default would make their render fail).
    if !problems.normalised.is_empty() {
        let patch = ConfigPatch {
            values: problems.normalised.clone(),
            message: WIZARD_MESSAGE.into(),
            group: None,
            role: None,
            expected_revision: Some(svc.revision),
        };
        if let Err(e) = domain::config::patch(state, &actor, c, &svc.name, patch).await {
            return Ok(refused("with its default configuration and no roles; the configuration was not stored", &e));
        }
    }
    let requests: Vec<NewRole> = roles
        .iter()
        .map(|(rt, h)| NewRole { role_type: rt.clone(), host_id: Some(h.clone()), ..Default::default() })
        .collect();
    let configured = if problems.normalised.is_empty() { "default configuration" } else { "its configuration" };
    if !requests.is_empty()
        && let Err(e) = domain::roles::create(state, &actor, c, &svc.name, requests, false).await
    {
        return Ok(refused(&format!("with {configured} and no roles; no role was added"), &e));
    }
    let created = format!("service {} created with {} role(s) and {configured}", svc.name, roles.len());
    if form.start == "yes" {
        let req = NewCommand { name: ServiceCommand::Start, roles: None, stale_only: false, version: None };
        return Ok(match domain::commands::create(state, &actor, c, &svc.name, req).await {
            Ok(cmd) => {
                redirect_with(&format!("/commands/{}", url_encode(&cmd.id)), true, &format!("{created}; starting it"))
            }
            Err(e) => refused(&format!("with {} role(s) and {configured}; it was not started", roles.len()), &e),
        });
    }
    Ok(redirect_with(&page, true, &created))
}
