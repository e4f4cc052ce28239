//! A service's configuration: the editor (every parameter at a scope, with
//! where its value comes from and what overrides it), the history of
//! revisions with where each was applied, the comparison of two revisions
//! (value changes and rendered files as a unified or side-by-side diff) and
//! rollback to an older revision.
//!
//! Everything goes through [`crate::domain::config`]: the editor sends only
//! the parameters whose input differs from what it showed, at the revision it
//! showed ([`ConfigPatch::expected_revision`]), and shows what the domain
//! refuses next to the field concerned ([`domain::config::validate`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::config::{ConfigPatch, ConfigView, GroupRef};
use crate::domain::{self, DomainError};
use drover_api::commands::{NewCommand, ServiceCommand};
use drover_service_types::descriptor::ServiceType;
use drover_service_types::params::{ParamKind, Parameter, Scope, format_memory};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/clusters/{cluster}/services/{service}/config", get(editor).post(save))
        .route("/clusters/{cluster}/services/{service}/config/rolling-restart", post(rolling_restart))
        .route("/clusters/{cluster}/services/{service}/config/history", get(history))
        .route("/clusters/{cluster}/services/{service}/config/compare", get(compare))
        .route("/clusters/{cluster}/services/{service}/config/rollback", post(rollback))
}

/// Units offered next to a memory size, as the descriptor's parser reads them.
const MEMORY_UNITS: [(&str, &str); 5] = [("b", "bytes"), ("kb", "KiB"), ("mb", "MiB"), ("gb", "GiB"), ("tb", "TiB")];
/// Revisions per history page.
const HISTORY_PAGE: usize = 50;

fn service_href(cluster: &str, service: &str) -> String {
    format!("/clusters/{}/services/{}", url_encode(cluster), url_encode(service))
}

fn config_href(cluster: &str, service: &str) -> String {
    format!("{}/config", service_href(cluster, service))
}

/// The level the editor works at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EditScope {
    Service,
    Group { role_type: String, name: String },
    Role(String),
}

impl EditScope {
    /// `service`, `group:<role_type>/<name>` or `role:<name>`; blank is the service.
    fn parse(s: &str) -> Result<EditScope, String> {
        let s = s.trim();
        if s.is_empty() || s == "service" {
            return Ok(EditScope::Service);
        }
        if let Some(g) = s.strip_prefix("group:") {
            return match g.split_once('/') {
                Some((rt, name)) if !rt.is_empty() && !name.is_empty() => {
                    Ok(EditScope::Group { role_type: rt.to_owned(), name: name.to_owned() })
                }
                _ => Err(format!("scope {s:?}: a group scope is group:<role type>/<group name>")),
            };
        }
        match s.strip_prefix("role:") {
            Some(r) if !r.is_empty() => Ok(EditScope::Role(r.to_owned())),
            _ => Err(format!("scope {s:?} is not service, group:<role type>/<name> or role:<name>")),
        }
    }

    fn key(&self) -> String {
        match self {
            EditScope::Service => "service".into(),
            EditScope::Group { role_type, name } => format!("group:{role_type}/{name}"),
            EditScope::Role(r) => format!("role:{r}"),
        }
    }

    fn label(&self) -> String {
        match self {
            EditScope::Service => "the whole service".into(),
            EditScope::Group { role_type, name } => format!("role group {name} ({role_type})"),
            EditScope::Role(r) => format!("role {r}"),
        }
    }
}

/// A parameter's value as text for people: memory sizes with their unit,
/// nothing for "not set". Values are already masked.
fn value_text(p: Option<&Parameter>, v: &Value) -> String {
    match (p.map(|p| &p.kind), v) {
        (_, Value::Null) => String::new(),
        (Some(ParamKind::MemorySize), Value::Number(n)) => match n.as_u64() {
            Some(b) if format_memory(b) != b.to_string() => format!("{} ({b} bytes)", format_memory(b)),
            _ => n.to_string(),
        },
        (Some(ParamKind::Duration), Value::Number(n)) => format!("{n} ms"),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

/// The text an input shows for a value, and that a form sends back
/// unchanged: what "changed" is measured against. Memory sizes as `256mb`.
fn input_text(p: &Parameter, v: &Value) -> String {
    match (&p.kind, v) {
        (_, Value::Null) => String::new(),
        (ParamKind::MemorySize, Value::Number(n)) => n.as_u64().map(format_memory).unwrap_or_else(|| n.to_string()),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

/// A memory size input split into its number and unit (`256mb` -> `256`, `mb`).
fn split_memory(text: &str) -> (String, String) {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (n, u) = text.split_at(split);
    let u = u.trim().to_ascii_lowercase();
    if n.is_empty() || !MEMORY_UNITS.iter().any(|(k, _)| *k == u) && !u.is_empty() {
        return (text.to_owned(), "b".into());
    }
    (n.to_owned(), if u.is_empty() { "b".into() } else { u })
}

/// The value a memory size's number and unit inputs make: the unit joins a
/// plain number; anything else (`"1.5g"`, `"lots"`) is sent as typed.
fn join_memory(number: &str, unit: &str) -> String {
    let n = number.trim();
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit() || c == '.') || unit.is_empty() || unit == "b" {
        n.to_owned()
    } else {
        format!("{n}{unit}")
    }
}

/// One parameter's value at a scope: the value (masked), where it comes
/// from, whether it is set at this very scope, and what below overrides it.
struct AtScope {
    value: Value,
    source: String,
    here: bool,
    overridden_by: Vec<(String, String)>,
}

fn at_scope(view: &ConfigView, p: &Parameter, scope: &EditScope, cluster: &str, service: &str) -> Option<AtScope> {
    let role_names: HashMap<&str, &str> = view.roles.iter().map(|(n, r)| (r.id.as_str(), n.as_str())).collect();
    let role_link =
        |name: &str| (format!("role {name}"), format!("{}/roles/{}", service_href(cluster, service), url_encode(name)));
    let service_level = || {
        view.service
            .get(&p.name)
            .map(|s| (s.value.clone().unwrap_or(Value::Null), s.source.clone()))
            .unwrap_or((Value::Null, "default".into()))
    };
    match scope {
        EditScope::Service => {
            let (value, source) = service_level();
            let mut by = Vec::new();
            for (g, vals) in &view.overrides.groups {
                if vals.contains_key(&p.name) {
                    let rt = view.roles.values().find(|r| &r.group == g).map(|r| r.role_type.clone());
                    let href = match rt {
                        Some(rt) => format!(
                            "{}?scope={}",
                            config_href(cluster, service),
                            url_encode(&EditScope::Group { role_type: rt, name: g.clone() }.key())
                        ),
                        None => String::new(),
                    };
                    by.push((format!("group {g}"), href));
                }
            }
            for (id, vals) in &view.overrides.roles {
                if vals.contains_key(&p.name) {
                    by.push(role_link(role_names.get(id.as_str()).copied().unwrap_or(id)));
                }
            }
            Some(AtScope { here: source == "service", value, source, overridden_by: by })
        }
        EditScope::Group { role_type, name } => {
            if !p.applies_to(role_type) {
                return None;
            }
            let (value, source, here) = match view.overrides.groups.get(name).and_then(|g| g.get(&p.name)) {
                Some(v) => (v.clone(), format!("group:{name}"), true),
                None => {
                    let (v, s) = service_level();
                    (v, s, false)
                }
            };
            let by = view
                .roles
                .iter()
                .filter(|(_, r)| &r.group == name && &r.role_type == role_type)
                .filter(|(_, r)| view.overrides.roles.get(&r.id).is_some_and(|o| o.contains_key(&p.name)))
                .map(|(n, _)| role_link(n))
                .collect();
            Some(AtScope { value, source, here, overridden_by: by })
        }
        EditScope::Role(role) => {
            let e = view.roles.get(role)?.values.get(&p.name)?;
            Some(AtScope {
                value: e.value.clone(),
                here: e.source == "role",
                source: e.source.clone(),
                overridden_by: vec![],
            })
        }
    }
}

fn source_label(source: &str) -> String {
    match source.strip_prefix("group:") {
        Some(g) => format!("group {g}"),
        None => source.to_owned(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct EditorQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    scope: String,
    /// The revision just saved: the page says what it takes to apply it.
    saved: Option<u64>,
}

/// What the user typed, kept when the form comes back with errors.
#[derive(Default)]
struct Submitted {
    inputs: HashMap<String, String>,
    units: HashMap<String, String>,
    unset: Vec<String>,
    message: String,
    field_errors: BTreeMap<String, String>,
    message_error: Option<String>,
    form_error: Option<String>,
}

async fn editor(
    State(state): State<Arc<AppState>>,
    Path((cluster, service)): Path<(String, String)>,
    Query(q): Query<EditorQuery>,
    session: Session,
) -> PageResult {
    let scope = EditScope::parse(&q.scope).map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, e))?;
    render_editor(&state, &session, &cluster, &service, &scope, &q.q, q.saved, None).await
}

/// The editor page; with `submitted`, the user's input and the errors found
/// replace the stored values (answered 422).
#[allow(clippy::too_many_arguments)]
async fn render_editor(
    state: &Arc<AppState>,
    session: &Session,
    cluster: &str,
    service: &str,
    scope: &EditScope,
    filter: &str,
    saved: Option<u64>,
    submitted: Option<&Submitted>,
) -> PageResult {
    let ctx = domain::context(state, &session.actor(), cluster, service).await?;
    let st: &ServiceType = &ctx.service_type;
    let view = domain::config::get(state, &session.actor(), cluster, service).await?;
    let groups = domain::services::list_groups(state, &session.actor(), cluster, service).await?;
    match scope {
        EditScope::Group { role_type, name }
            if !groups.iter().any(|g| &g.role_type == role_type && &g.name == name) =>
        {
            return Err(ConsoleError::new(
                StatusCode::NOT_FOUND,
                format!("service {service} has no role group {name} of role type {role_type}"),
            ));
        }
        EditScope::Role(r) if !view.roles.contains_key(r) => {
            return Err(ConsoleError::new(StatusCode::NOT_FOUND, format!("role {r} not found in service {service}")));
        }
        _ => {}
    }
    let mut scopes =
        vec![json!({"value": "service", "label": "Service (all roles)", "selected": *scope == EditScope::Service})];
    for g in &groups {
        let s = EditScope::Group { role_type: g.role_type.clone(), name: g.name.clone() };
        scopes.push(json!({"value": s.key(), "label": format!("Role group {} ({})", g.name, g.role_type), "selected": *scope == s}));
    }
    for (name, r) in &view.roles {
        let s = EditScope::Role(name.clone());
        scopes.push(
            json!({"value": s.key(), "label": format!("Role {name} ({})", r.role_type), "selected": *scope == s}),
        );
    }

    // The services of the cluster a `service` parameter may name.
    let others: Vec<(String, String)> = if st.parameters.iter().any(|p| matches!(p.kind, ParamKind::Service { .. })) {
        domain::services::list(state, &session.actor(), cluster)
            .await?
            .into_iter()
            .filter(|s| s.name != service)
            .map(|s| (s.name, s.service_type))
            .collect()
    } else {
        Vec::new()
    };
    let needle = filter.trim().to_lowercase();
    let mut sections: Vec<(String, Vec<Value>)> = Vec::new();
    let mut shown = 0usize;
    for p in &st.parameters {
        let Some(at) = at_scope(&view, p, scope, cluster, service) else { continue };
        let sensitive = p.sensitive();
        let shown_value = value_text(Some(p), &at.value);
        if !needle.is_empty() {
            let hay = format!(
                "{} {} {}",
                p.name.to_lowercase(),
                p.description.to_lowercase(),
                if sensitive { String::new() } else { shown_value.to_lowercase() }
            );
            if !hay.contains(&needle) {
                continue;
            }
        }
        shown += 1;
        let current = if sensitive { String::new() } else { input_text(p, &at.value) };
        let typed = submitted.and_then(|s| s.inputs.get(&p.name)).cloned();
        let (mut input, mut unit) = (typed.clone().unwrap_or_else(|| current.clone()), String::new());
        if matches!(p.kind, ParamKind::MemorySize) {
            if typed.is_some() {
                unit = submitted.and_then(|s| s.units.get(&p.name)).cloned().unwrap_or_else(|| "b".into());
            } else {
                (input, unit) = split_memory(&current);
                if current.is_empty() {
                    unit = "mb".into();
                }
            }
        }
        if sensitive {
            // A secret is never printed, not even the one just typed.
            input = String::new();
        }
        let (min, max) = match &p.kind {
            ParamKind::Integer { min, max } => (*min, *max),
            ParamKind::Port => (Some(1), Some(65535)),
            ParamKind::MemorySize | ParamKind::Duration => (Some(0), None),
            _ => (None, None),
        };
        let options: Vec<Value> = match &p.kind {
            ParamKind::Service { service_types } => {
                let mut o: Vec<Value> = others
                    .iter()
                    .filter(|(_, t)| service_types.is_empty() || service_types.contains(t))
                    .map(|(n, t)| json!({"value": n, "label": format!("{n} ({t})"), "selected": *n == input}))
                    .collect();
                if !others.iter().any(|(n, _)| *n == input) {
                    let label = if input.is_empty() { "(not set)".to_owned() } else { input.clone() };
                    o.insert(0, json!({"value": input, "label": label, "selected": true}));
                }
                o
            }
            ParamKind::Enum { values } => {
                let mut o: Vec<Value> = values.iter().map(|v| json!({"value": v, "selected": *v == input})).collect();
                if input.is_empty() || !values.contains(&input) {
                    o.insert(0, json!({"value": input, "label": if input.is_empty() { "(not set)" } else { input.as_str() }, "selected": true}));
                }
                o
            }
            ParamKind::Boolean => {
                let mut o: Vec<Value> =
                    ["true", "false"].iter().map(|v| json!({"value": v, "selected": *v == input})).collect();
                if input != "true" && input != "false" {
                    o.insert(0, json!({"value": input, "label": if input.is_empty() { "(not set)" } else { input.as_str() }, "selected": true}));
                }
                o
            }
            _ => Vec::new(),
        };
        let widget = match &p.kind {
            ParamKind::Enum { .. } | ParamKind::Boolean | ParamKind::Service { .. } => "select",
            ParamKind::Integer { .. } | ParamKind::Port => "number",
            ParamKind::MemorySize => "memory",
            ParamKind::Password => "password",
            _ => "text",
        };
        let units: Vec<Value> =
            MEMORY_UNITS.iter().map(|(k, l)| json!({"value": k, "label": l, "selected": *k == unit})).collect();
        let unset_checked = submitted.is_some_and(|s| s.unset.contains(&p.name));
        let error = submitted.and_then(|s| s.field_errors.get(&p.name)).cloned();
        let row = json!({
            "name": p.name,
            "description": p.description,
            "kind": p.kind.name(),
            "restart": p.restart,
            "required": p.required,
            "sensitive": sensitive,
            "is_set": !at.value.is_null(),
            "value": if sensitive { if at.value.is_null() { "not set".to_owned() } else { "set (hidden)".to_owned() } } else { shown_value },
            "source": source_label(&at.source),
            "source_kind": at.source.split(':').next().unwrap_or_default(),
            "here": at.here,
            "overridden_by": at.overridden_by.iter().map(|(l, h)| json!({"label": l, "href": h})).collect::<Vec<_>>(),
            "default": p.default.as_ref().map(|d| if sensitive { "set (hidden)".to_owned() } else { value_text(Some(p), d) }),
            "widget": widget,
            "is_select": widget == "select",
            "is_number": widget == "number",
            "is_memory": widget == "memory",
            "is_password": widget == "password",
            "is_text": widget == "text",
            "input": input,
            "options": options,
            "units": units,
            "min": min.map(|m| m.to_string()),
            "max": max.map(|m| m.to_string()),
            "unset_checked": unset_checked,
            "error": error,
        });
        let section = match &p.scope {
            Scope::Service => "Service-wide: every role type".to_owned(),
            Scope::RoleTypes(types) => format!("Role types: {}", types.join(", ")),
        };
        match sections.iter_mut().find(|(t, _)| *t == section) {
            Some((_, rows)) => rows.push(row),
            None => sections.push((section, vec![row])),
        }
    }
    let sections: Vec<Value> = sections.into_iter().map(|(t, rows)| json!({"title": t, "params": rows})).collect();

    // Which roles run an older revision whose changes need a restart.
    let role_views = domain::roles::list(state, &session.actor(), cluster, service).await?;
    let stale: Vec<Value> = role_views
        .iter()
        .filter(|r| r.stale)
        .map(|r| {
            json!({"name": r.name, "href": format!("{}/roles/{}", service_href(cluster, service), url_encode(&r.name)),
                   "keys": r.stale_keys.join(", "), "running_revision": r.running_revision})
        })
        .collect();
    let banner = match saved {
        Some(rev) => Some(after_save(state, session, &ctx.service_type, cluster, service, rev, &role_views).await?),
        None => None,
    };
    let base = config_href(cluster, service);
    let status = if submitted.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let data = json!({
        "cluster": cluster,
        "service": service,
        "service_type": st.name,
        "cluster_href": format!("/clusters/{}", url_encode(cluster)),
        "service_href": service_href(cluster, service),
        "config_href": base,
        "history_href": format!("{base}/history"),
        "restart_href": format!("{base}/rolling-restart"),
        "revision": view.revision,
        "q": filter,
        "scope": scope.key(),
        "scope_label": scope.label(),
        "scope_is_service": *scope == EditScope::Service,
        "scopes": scopes,
        "sections": sections,
        "shown": shown,
        "total": st.parameters.len(),
        "stale": stale,
        "banner": banner,
        "message": submitted.map(|s| s.message.clone()).unwrap_or_default(),
        "message_error": submitted.and_then(|s| s.message_error.clone()),
        "form_error": submitted.and_then(|s| s.form_error.clone()),
        "errors": submitted.is_some_and(|s| s.form_error.is_some() || s.message_error.is_some() || !s.field_errors.is_empty()),
    });
    let title = format!("Configuration of {service}");
    let mut data = data;
    data["can"] = session.can(Some(cluster));
    let mut resp = session.page(state, "config", &title, "clusters", data);
    if resp.status() == StatusCode::OK {
        *resp.status_mut() = status;
    }
    Ok(resp)
}

/// What a saved revision takes to apply: the roles whose changes need a
/// restart (and which of them run now, so are stale), or that the roles take
/// it by reload, or that nothing more is needed.
async fn after_save(
    state: &AppState,
    session: &Session,
    st: &ServiceType,
    cluster: &str,
    service: &str,
    rev: u64,
    role_views: &[domain::roles::RoleView],
) -> Result<Value, ConsoleError> {
    if rev <= 1 {
        return Ok(json!({"revision": rev, "kind": "none", "text": "applied, no restart needed"}));
    }
    let diff = match domain::config::diff(state, &session.actor(), cluster, service, rev - 1, rev).await {
        Ok(d) => d,
        Err(DomainError::NotFound(_)) => return Ok(Value::Null),
        Err(e) => return Err(e.into()),
    };
    let restart: Vec<&str> =
        diff.roles.iter().filter(|r| r.changes.iter().any(|c| c.restart)).map(|r| r.role.as_str()).collect();
    let changed: Vec<&domain::config::RoleDiff> = diff.roles.iter().collect();
    if !restart.is_empty() {
        let stale: Vec<&str> = role_views
            .iter()
            .filter(|v| v.stale && restart.contains(&v.name.as_str()))
            .map(|v| v.name.as_str())
            .collect();
        let running = role_views
            .iter()
            .filter(|v| restart.contains(&v.name.as_str()) && v.status == domain::roles::RoleState::Running)
            .count();
        let n = restart.len();
        return Ok(json!({
            "revision": rev,
            "kind": "restart",
            "text": format!("restart needed: {n} role{}", if n == 1 { "" } else { "s" }),
            "roles": restart,
            "stale_count": stale.len(),
            "stale": stale,
            "running": running,
        }));
    }
    let by_reload = changed.iter().any(|r| {
        role_views
            .iter()
            .find(|v| v.id == r.role_id)
            .and_then(|v| st.role_type(&v.role_type))
            .is_some_and(|t| t.process.reload_signal.is_some())
    });
    Ok(if by_reload {
        json!({"revision": rev, "kind": "reload", "text": "applied by reload: the roles take the new files without a restart",
               "roles": changed.iter().map(|r| r.role.as_str()).collect::<Vec<_>>()})
    } else {
        json!({"revision": rev, "kind": "none", "text": "applied, no restart needed"})
    })
}

/// Reads the editor's form: `v.<name>` inputs (and `u.<name>` units of
/// memory sizes), `unset` (repeated), `scope`, `rev`, `q`, `message`.
fn read_form(fields: &[(String, String)]) -> (Submitted, HashMap<&str, &str>) {
    let mut s = Submitted::default();
    let mut plain = HashMap::new();
    for (k, v) in fields {
        if let Some(name) = k.strip_prefix("v.") {
            s.inputs.insert(name.to_owned(), v.clone());
        } else if let Some(name) = k.strip_prefix("u.") {
            s.units.insert(name.to_owned(), v.clone());
        } else if k == "unset" {
            s.unset.push(v.clone());
        } else if k == "message" {
            s.message = v.clone();
        } else {
            plain.insert(k.as_str(), v.as_str());
        }
    }
    (s, plain)
}

/// Where a redirect after saving goes: the same scope and filter.
fn editor_url(cluster: &str, service: &str, scope: &EditScope, q: &str, saved: Option<u64>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    if *scope != EditScope::Service {
        ser.append_pair("scope", &scope.key());
    }
    if !q.is_empty() {
        ser.append_pair("q", q);
    }
    if let Some(rev) = saved {
        ser.append_pair("saved", &rev.to_string());
    }
    let query = ser.finish();
    if query.is_empty() { config_href(cluster, service) } else { format!("{}?{query}", config_href(cluster, service)) }
}

/// Error messages of the domain (`parameter `x`: ...; parameter `y`: ...`)
/// by parameter; what names no parameter under `""`.
fn split_param_errors(message: &str) -> Vec<(String, String)> {
    message
        .split("; ")
        .map(|part| match part.strip_prefix("parameter `").and_then(|r| r.split_once("`: ")) {
            Some((name, m)) => (name.to_owned(), m.to_owned()),
            None => (String::new(), part.to_owned()),
        })
        .collect()
}

async fn save(
    State(state): State<Arc<AppState>>,
    Path((cluster, service)): Path<(String, String)>,
    CsrfForm(session, fields): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let (mut sub, plain) = read_form(&fields);
    let scope = EditScope::parse(plain.get("scope").copied().unwrap_or_default())
        .map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, e))?;
    let q = plain.get("q").copied().unwrap_or_default().to_owned();
    let expected: Option<u64> = plain.get("rev").and_then(|r| r.trim().parse().ok());
    let ctx = domain::context(&state, &session.actor(), &cluster, &service).await?;
    let view = domain::config::get(&state, &session.actor(), &cluster, &service).await?;

    // Only what differs from what the page showed is sent.
    let mut values: BTreeMap<String, Value> = BTreeMap::new();
    for p in &ctx.service_type.parameters {
        let Some(typed) = sub.inputs.get(&p.name) else { continue };
        let Some(at) = at_scope(&view, p, &scope, &cluster, &service) else { continue };
        if p.sensitive() {
            // Empty keeps the secret.
            if !typed.is_empty() {
                values.insert(p.name.clone(), Value::String(typed.clone()));
            }
            continue;
        }
        let sent = match p.kind {
            ParamKind::MemorySize => join_memory(typed, sub.units.get(&p.name).map(String::as_str).unwrap_or("b")),
            ParamKind::String | ParamKind::Path | ParamKind::Password => typed.clone(),
            _ => typed.trim().to_owned(),
        };
        if sent != input_text(p, &at.value) {
            values.insert(p.name.clone(), Value::String(sent));
        }
    }
    for name in &sub.unset {
        values.insert(name.clone(), Value::Null);
    }
    let (group, role) = match &scope {
        EditScope::Service => (None, None),
        EditScope::Group { role_type, name } => {
            (Some(GroupRef { role_type: role_type.clone(), name: name.clone() }), None)
        }
        EditScope::Role(r) => (None, Some(r.clone())),
    };
    let req = ConfigPatch { values, message: sub.message.clone(), group, role, expected_revision: expected };
    drop(ctx);

    if req.values.is_empty() {
        sub.form_error = Some("nothing changed: edit a value, or tick \"remove override\" for a parameter".into());
    } else {
        for e in domain::config::validate(&state, &session.actor(), &cluster, &service, &req).await? {
            if e.parameter.is_empty() {
                sub.form_error = Some(e.message);
            } else {
                sub.field_errors.insert(e.parameter, e.message);
            }
        }
    }
    if req.message.trim().is_empty() {
        sub.message_error = Some("say why the configuration changes (shown in the history)".into());
    }
    if sub.form_error.is_some() || sub.message_error.is_some() || !sub.field_errors.is_empty() {
        return render_editor(&state, &session, &cluster, &service, &scope, &q, None, Some(&sub)).await;
    }
    match domain::config::patch(&state, &session.actor(), &cluster, &service, req).await {
        Ok(change) => {
            let to = editor_url(&cluster, &service, &scope, &q, Some(change.revision));
            let msg = format!(
                "revision {} saved ({}): changed {}",
                change.revision,
                change.message,
                change.changed_keys.join(", ")
            );
            Ok(redirect_with(&to, true, &msg))
        }
        Err(DomainError::Unsuitable(m)) => {
            for (name, m) in split_param_errors(&m) {
                if name.is_empty() {
                    sub.form_error = Some(m);
                } else {
                    sub.field_errors.insert(name, m);
                }
            }
            render_editor(&state, &session, &cluster, &service, &scope, &q, None, Some(&sub)).await
        }
        Err(e @ DomainError::Invalid(_)) if e.to_string().starts_with("message") => {
            sub.message_error = Some(e.to_string());
            render_editor(&state, &session, &cluster, &service, &scope, &q, None, Some(&sub)).await
        }
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_) | DomainError::NotFound(_))) => {
            sub.form_error = Some(domain_message(&e));
            render_editor(&state, &session, &cluster, &service, &scope, &q, None, Some(&sub)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// A rolling restart of the service's stale roles, from the banner after a
/// save; the command's page follows it.
async fn rolling_restart(
    State(state): State<Arc<AppState>>,
    Path((cluster, service)): Path<(String, String)>,
    CsrfForm(session, _fields): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let req = NewCommand { name: ServiceCommand::RollingRestart, roles: None, stale_only: true, version: None };
    match domain::commands::create(&state, &session.actor(), &cluster, &service, req).await {
        Ok(c) => Ok(redirect_with(
            &format!("/commands/{}", url_encode(&c.id)),
            true,
            &format!("rolling restart of the stale roles of {service} started"),
        )),
        Err(e @ (DomainError::Conflict(_) | DomainError::Invalid(_) | DomainError::Unsuitable(_))) => {
            Ok(redirect_with(&config_href(&cluster, &service), false, &domain_message(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    page: Option<usize>,
}

async fn history(
    State(state): State<Arc<AppState>>,
    Path((cluster, service)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
    session: Session,
) -> PageResult {
    render_history(&state, &session, &cluster, &service, q.page.unwrap_or(1), None).await
}

/// The history page; `error` is a rollback form's problem: (revision, message).
async fn render_history(
    state: &AppState,
    session: &Session,
    cluster: &str,
    service: &str,
    page: usize,
    error: Option<(u64, String, String)>,
) -> PageResult {
    let revisions = domain::config::revisions(state, &session.actor(), cluster, service).await?;
    let latest = revisions.first().map(|r| r.revision).unwrap_or(0);
    let page = page.max(1);
    let pages = revisions.len().div_ceil(HISTORY_PAGE).max(1);
    let base = config_href(cluster, service);
    let mut rows = Vec::new();
    for (i, r) in revisions.iter().enumerate().skip((page - 1) * HISTORY_PAGE).take(HISTORY_PAGE) {
        let applied = match domain::config::revision(state, &session.actor(), cluster, service, r.revision).await {
            Ok(d) => d.applied,
            Err(DomainError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let applied: Vec<Value> = applied
            .iter()
            .map(|a| {
                let role = a.role.clone().unwrap_or_else(|| a.role_id.clone());
                json!({
                    "role": role,
                    "role_href": format!("{}/roles/{}", service_href(cluster, service), url_encode(&role)),
                    "host": a.hostname.clone().unwrap_or_else(|| a.host_id.clone()),
                    "host_href": format!("/hosts/{}", url_encode(&a.host_id)),
                    "at": a.applied_at,
                })
            })
            .collect();
        let err = error.as_ref().filter(|(rev, _, _)| *rev == r.revision);
        rows.push(json!({
            "revision": r.revision,
            "author": r.author,
            "source": r.source,
            "created_at": r.created_at,
            "message": r.message,
            "changed_keys": r.changed_keys,
            "applied": applied,
            "current": r.revision == latest,
            "from_checked": i == 1,
            "to_checked": i == 0,
            "previous_href": (r.revision > 1).then(|| format!("{base}/compare?from={}&to={}", r.revision - 1, r.revision)),
            "rollback_error": err.map(|e| e.2.clone()),
            "rollback_message": err.map(|e| e.1.clone()).unwrap_or_default(),
        }));
    }
    let page_href = |p: usize| format!("{base}/history?page={p}");
    let data = json!({
        "cluster": cluster,
        "service": service,
        "cluster_href": format!("/clusters/{}", url_encode(cluster)),
        "service_href": service_href(cluster, service),
        "config_href": base,
        "compare_href": format!("{base}/compare"),
        "rollback_href": format!("{base}/rollback"),
        "revisions": rows,
        "count": revisions.len(),
        "latest": latest,
        "page": page,
        "pages": pages,
        "prev_href": (page > 1).then(|| page_href(page - 1)),
        "next_href": (page < pages).then(|| page_href(page + 1)),
    });
    let mut data = data;
    data["can"] = session.can(Some(cluster));
    let mut resp =
        session.page(state, "config_history", &format!("Configuration history of {service}"), "clusters", data);
    if error.is_some() && resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
struct RollbackForm {
    #[serde(default)]
    revision: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    confirmed: String,
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    Path((cluster, service)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<RollbackForm>,
) -> PageResult {
    let back = format!("{}/history", config_href(&cluster, &service));
    let Ok(to) = form.revision.trim().parse::<u64>() else {
        return Err(ConsoleError::new(
            StatusCode::BAD_REQUEST,
            format!("revision {:?} is not a number", form.revision),
        ));
    };
    let message = form.message.trim();
    if message.is_empty() {
        let why = "say why you roll back (shown in the history)".to_owned();
        return render_history(&state, &session, &cluster, &service, 1, Some((to, String::new(), why))).await;
    }
    if form.confirmed != "yes" {
        let latest = domain::config::revisions(&state, &session.actor(), &cluster, &service)
            .await?
            .first()
            .map(|r| r.revision)
            .unwrap_or(0);
        let what = format!(
            "Roll back the configuration of service {service} to the values of revision {to}: this makes a new \
             revision {} with those values (reason: \"{message}\") and pushes it to every role; roles whose changed \
             parameters need a restart become stale until restarted.",
            latest + 1
        );
        let hidden = vec![
            ("revision".to_owned(), to.to_string()),
            ("message".to_owned(), message.to_owned()),
            ("confirmed".to_owned(), "yes".to_owned()),
        ];
        let action = format!("{}/rollback", config_href(&cluster, &service));
        let names = vec![format!("{cluster}/{service}: revision {latest} -> values of revision {to}")];
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &back, names, 1));
    }
    match domain::config::rollback(&state, &session.actor(), &cluster, &service, to, message).await {
        Ok(c) => Ok(redirect_with(
            &back,
            true,
            &format!("revision {} created with the values of revision {to} ({})", c.revision, c.message),
        )),
        Err(
            e @ (DomainError::Conflict(_)
            | DomainError::Invalid(_)
            | DomainError::NotFound(_)
            | DomainError::Unsuitable(_)),
        ) => Ok(redirect_with(&back, false, &domain_message(&e))),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct CompareQuery {
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    view: String,
}

/// One line of a diff for the page: its kind (`add`, `del`, `ctx`, `hunk`,
/// `head`), the sign shown as text, and the text without the sign.
fn unified_lines(diff: &str) -> Vec<Value> {
    diff.lines()
        .map(|l| {
            let (kind, sign, text) = if l.starts_with("+++") || l.starts_with("---") {
                ("head", "", l)
            } else if l.starts_with("@@") {
                ("hunk", "", l)
            } else if let Some(t) = l.strip_prefix('+') {
                ("add", "+", t)
            } else if let Some(t) = l.strip_prefix('-') {
                ("del", "-", t)
            } else if l.starts_with('\\') {
                ("ctx", "", l)
            } else {
                ("ctx", " ", l.strip_prefix(' ').unwrap_or(l))
            };
            json!({"kind": kind, "sign": sign, "text": text, "add": kind == "add", "del": kind == "del"})
        })
        .collect()
}

/// The side-by-side form of a unified diff: rows of (old line, new line),
/// removed lines paired with the added lines that replace them.
fn split_rows(diff: &str) -> Vec<Value> {
    fn hunk_starts(l: &str) -> (u64, u64) {
        // @@ -a,b +c,d @@
        let mut parts = l.split_whitespace().skip(1);
        let num = |s: Option<&str>| {
            s.map(|s| s.trim_start_matches(['-', '+']).split(',').next().unwrap_or("0").parse().unwrap_or(0))
                .unwrap_or(0)
        };
        (num(parts.next()), num(parts.next()))
    }
    let mut rows = Vec::new();
    let (mut a, mut b) = (0u64, 0u64);
    let mut dels: Vec<(u64, String)> = Vec::new();
    let mut adds: Vec<(u64, String)> = Vec::new();
    let flush = |rows: &mut Vec<Value>, dels: &mut Vec<(u64, String)>, adds: &mut Vec<(u64, String)>| {
        for i in 0..dels.len().max(adds.len()) {
            let d = dels.get(i);
            let ad = adds.get(i);
            rows.push(json!({
                "left_no": d.map(|x| x.0), "left": d.map(|x| x.1.clone()), "left_del": d.is_some(),
                "right_no": ad.map(|x| x.0), "right": ad.map(|x| x.1.clone()), "right_add": ad.is_some(),
            }));
        }
        dels.clear();
        adds.clear();
    };
    for l in diff.lines() {
        if l.starts_with("+++") || l.starts_with("---") || l.starts_with('\\') {
            continue;
        }
        if l.starts_with("@@") {
            flush(&mut rows, &mut dels, &mut adds);
            (a, b) = hunk_starts(l);
            rows.push(json!({"hunk": l}));
        } else if let Some(t) = l.strip_prefix('-') {
            dels.push((a, t.to_owned()));
            a += 1;
        } else if let Some(t) = l.strip_prefix('+') {
            adds.push((b, t.to_owned()));
            b += 1;
        } else {
            flush(&mut rows, &mut dels, &mut adds);
            let t = l.strip_prefix(' ').unwrap_or(l);
            rows.push(json!({"left_no": a, "left": t, "right_no": b, "right": t}));
            a += 1;
            b += 1;
        }
    }
    flush(&mut rows, &mut dels, &mut adds);
    rows
}

async fn compare(
    State(state): State<Arc<AppState>>,
    Path((cluster, service)): Path<(String, String)>,
    Query(q): Query<CompareQuery>,
    session: Session,
) -> PageResult {
    let revisions = domain::config::revisions(&state, &session.actor(), &cluster, &service).await?;
    let latest = revisions.first().map(|r| r.revision).unwrap_or(0);
    let parse = |s: &Option<String>, default: u64, what: &str| -> Result<u64, ConsoleError> {
        match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                ConsoleError::new(StatusCode::BAD_REQUEST, format!("{what} revision {s:?} is not a revision number"))
            }),
        }
    };
    let from = parse(&q.from, latest.saturating_sub(1).max(1), "from")?;
    let to = parse(&q.to, latest, "to")?;
    let split = q.view == "split";
    let diff = domain::config::diff(&state, &session.actor(), &cluster, &service, from, to).await?;
    let ctx = domain::context(&state, &session.actor(), &cluster, &service).await?;
    let st = &ctx.service_type;
    let base = config_href(&cluster, &service);
    let roles: Vec<Value> = diff
        .roles
        .iter()
        .map(|r| {
            let changes: Vec<Value> = r
                .changes
                .iter()
                .map(|c| {
                    let p = st.parameter(&c.parameter);
                    json!({
                        "parameter": c.parameter,
                        "from": c.from.as_ref().map(|v| value_text(p, v)).filter(|s| !s.is_empty()),
                        "to": Some(value_text(p, &c.to)).filter(|s| !s.is_empty()),
                        "source": source_label(&c.source),
                        "restart": c.restart,
                    })
                })
                .collect();
            let files: Vec<Value> = r
                .files
                .iter()
                .map(|f| {
                    json!({"path": f.path, "lines": if split { Vec::new() } else { unified_lines(&f.diff) },
                           "rows": if split { split_rows(&f.diff) } else { Vec::new() }})
                })
                .collect();
            json!({
                "role": r.role,
                "role_href": format!("{}/roles/{}", service_href(&cluster, &service), url_encode(&r.role)),
                "host": r.hostname.clone().unwrap_or_else(|| r.host_id.clone()),
                "host_href": format!("/hosts/{}", url_encode(&r.host_id)),
                "changes": changes,
                "files": files,
            })
        })
        .collect();
    let options = |selected: u64| -> Vec<Value> {
        revisions
            .iter()
            .map(|r| json!({"value": r.revision, "label": format!("{} · {} · {}", r.revision, r.author, r.message), "selected": r.revision == selected}))
            .collect()
    };
    let view_href = |v: &str| format!("{base}/compare?from={from}&to={to}&view={v}");
    let data = json!({
        "cluster": cluster,
        "service": service,
        "cluster_href": format!("/clusters/{}", url_encode(&cluster)),
        "service_href": service_href(&cluster, &service),
        "config_href": base,
        "history_href": format!("{base}/history"),
        "compare_href": format!("{base}/compare"),
        "from": from,
        "to": to,
        "from_options": options(from),
        "to_options": options(to),
        "split": split,
        "view": if split { "split" } else { "unified" },
        "unified_href": view_href("unified"),
        "split_href": view_href("split"),
        "roles": roles,
    });
    Ok(session.page(
        &state,
        "config_compare",
        &format!("Compare revisions {from} and {to} of {service}"),
        "clusters",
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print_back() {
        for s in ["service", "group:primary/primary-default", "role:cache-primary-1"] {
            assert_eq!(EditScope::parse(s).unwrap().key(), s);
        }
        assert_eq!(EditScope::parse("").unwrap(), EditScope::Service);
        assert!(EditScope::parse("group:primary").is_err());
        assert!(EditScope::parse("host:x").is_err());
    }

    #[test]
    fn memory_inputs_round_trip() {
        assert_eq!(split_memory("256mb"), ("256".into(), "mb".into()));
        assert_eq!(split_memory("0"), ("0".into(), "b".into()));
        assert_eq!(join_memory("256", "mb"), "256mb");
        assert_eq!(join_memory("0", "b"), "0");
        assert_eq!(join_memory("lots", "mb"), "lots");
        assert_eq!(join_memory("1g", "mb"), "1g");
    }

    #[test]
    fn domain_errors_split_by_parameter() {
        let m = "parameter `maxmemory`: expected a memory size; parameter `port`: 0 is not a valid port; whole";
        assert_eq!(
            split_param_errors(m),
            vec![
                ("maxmemory".into(), "expected a memory size".into()),
                ("port".into(), "0 is not a valid port".into()),
                (String::new(), "whole".into())
            ]
        );
    }

    #[test]
    fn split_view_pairs_removed_with_added_lines() {
        let d = "--- a\n+++ b\n@@ -1,3 +1,3 @@\n port 1\n-maxmemory 0\n+maxmemory 268435456\n bind x\n";
        let rows = split_rows(d);
        assert_eq!(rows[0]["hunk"], "@@ -1,3 +1,3 @@");
        assert_eq!(rows[2]["left"], "maxmemory 0");
        assert_eq!(rows[2]["right"], "maxmemory 268435456");
        assert_eq!((rows[2]["left_no"].as_u64(), rows[2]["right_no"].as_u64()), (Some(2), Some(2)));
        let lines = unified_lines(d);
        assert_eq!(lines[4]["sign"], "-");
        assert_eq!(lines[5]["kind"], "add");
    }
}
