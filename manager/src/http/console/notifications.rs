//! Where alerts are sent, in the console: the receivers (target, secrets never shown, delivery
//! counters), a form per receiver kind (webhook, e-mail over SMTP, Alertmanager) to add or
//! change one, or its YAML for any receiver; delete (confirmed); the route tree drawn with what
//! each node inherits, edited as YAML or JSON; and the latest delivery attempts. Every read and
//! change goes through [`crate::domain::notifications`] with the session's actor, which checks,
//! stores, applies and audits; refusals are shown by the form, the input kept.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::notifications::{self as dom, REDACTED, ReceiverEntry};
use crate::domain::{self, DomainError};
use crate::notify::route::{DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL};
use crate::notify::{ReceiverConfig, RouteConfig};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/notifications", get(page))
        .route("/notifications/routes", post(set_routes))
        .route("/notifications/receivers", get(new_receiver).post(create_receiver))
        .route("/notifications/receivers/{name}", get(show_receiver).post(update_receiver))
        .route("/notifications/receivers/{name}/yaml", post(update_receiver_yaml))
        .route("/notifications/receivers/{name}/delete", post(delete_receiver))
}

const PAGE: &str = "/notifications";
/// Delivery attempts the page lists.
const DELIVERIES_SHOWN: usize = 50;
const KINDS: [&str; 3] = ["webhook", "email", "alertmanager"];

fn receiver_href(name: &str) -> String {
    format!("/notifications/receivers/{}", url_encode(name))
}

/// What each integration of a receiver sends to, for a list (secrets only as "signed" or
/// "with a password").
fn targets(r: &ReceiverConfig) -> Vec<Value> {
    let mut out = Vec::new();
    for w in &r.webhook_configs {
        let extra = if w.secret.is_some() { "signed (HMAC-SHA256)" } else { "unsigned" };
        out.push(json!({"kind": "webhook", "target": w.url, "extra": extra}));
    }
    for e in &r.email_configs {
        let port = e.port.map(|p| format!(":{p}")).unwrap_or_default();
        let tls = serde_json::to_value(e.tls).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let auth = match (&e.username, &e.password) {
            (Some(u), Some(_)) => format!(", as {u} with a password"),
            (Some(u), None) => format!(", as {u}"),
            _ => String::new(),
        };
        out.push(json!({
            "kind": "email",
            "target": e.to.join(", "),
            "extra": format!("from {} via {}{port} ({tls}{auth})", e.from, e.host),
        }));
    }
    for a in &r.alertmanager_configs {
        out.push(json!({"kind": "alertmanager", "target": a.url, "extra": "Alertmanager v2 API"}));
    }
    out
}

fn receiver_row(e: &ReceiverEntry) -> Value {
    let s = &e.stats;
    json!({
        "name": e.config.name,
        "href": receiver_href(&e.config.name),
        "targets": targets(&e.config),
        "sent": s.sent,
        "failed": s.failed,
        "failed_attempts": s.failed_attempts,
        "last_error": s.last_error,
        "last_attempt_at": s.last_attempt_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    })
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// One node of the route tree as a row: what it sets, and what it inherits (marked).
fn route_rows(route: &RouteConfig, path: &str, depth: usize, parent: &Value, out: &mut Vec<Value>) {
    let pick = |own: Option<String>, key: &str| match own {
        Some(v) => json!({"value": v, "inherited": false}),
        None => json!({"value": parent[key]["value"], "inherited": true}),
    };
    let group_by = route.group_by.as_ref().map(|g| if g.is_empty() { "(one group)".to_owned() } else { g.join(", ") });
    let row = json!({
        "path": path,
        "depth": depth,
        "indent": depth * 2,
        "matchers": route.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "continue": route.continue_,
        "receiver": pick(route.receiver.clone(), "receiver"),
        "receiver_href": route.receiver.as_deref().map(receiver_href),
        "group_by": pick(group_by, "group_by"),
        "group_wait": pick(route.group_wait.map(fmt_duration), "group_wait"),
        "group_interval": pick(route.group_interval.map(fmt_duration), "group_interval"),
        "repeat_interval": pick(route.repeat_interval.map(fmt_duration), "repeat_interval"),
    });
    out.push(row.clone());
    for (i, child) in route.routes.iter().enumerate() {
        route_rows(child, &format!("{path}.routes[{i}]"), depth + 1, &row, out);
    }
}

/// The tree as rows in reading order, the root's unset timings at their defaults.
fn tree_rows(route: &RouteConfig) -> Vec<Value> {
    let defaults = json!({
        "receiver": {"value": null},
        "group_by": {"value": "(one group)"},
        "group_wait": {"value": format!("{} (default)", fmt_duration(DEFAULT_GROUP_WAIT))},
        "group_interval": {"value": format!("{} (default)", fmt_duration(DEFAULT_GROUP_INTERVAL))},
        "repeat_interval": {"value": format!("{} (default)", fmt_duration(DEFAULT_REPEAT_INTERVAL))},
    });
    let mut out = Vec::new();
    route_rows(route, "route", 0, &defaults, &mut out);
    out
}

fn route_yaml(route: &RouteConfig) -> String {
    serde_norway::to_string(route).unwrap_or_default()
}

const ROUTES_EXAMPLE: &str = "receiver: ops\ngroup_by: [alertname, cluster]\ngroup_wait: 30s\ngroup_interval: 5m\nrepeat_interval: 4h\nroutes:\n  - receiver: pager\n    matchers: ['severity=\"critical\"']\n";

async fn page(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    notifications_page(&state, &session, None, None).await
}

/// The page; `routes_text` and `routes_error` after a refused route tree.
async fn notifications_page(
    state: &AppState,
    session: &Session,
    routes_text: Option<&str>,
    routes_error: Option<String>,
) -> PageResult {
    let actor = session.actor();
    let receivers = dom::list_receivers(state, &actor).await?;
    let route = match dom::get_routes(state, &actor).await {
        Ok(r) => Some(r),
        Err(DomainError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let deliveries = dom::deliveries(state, &actor, None, DELIVERIES_SHOWN)?;
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|a| {
            json!({
                "at": a.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "receiver": a.receiver,
                "receiver_href": receiver_href(&a.receiver),
                "integration": a.integration,
                "group_key": a.group_key,
                "status": a.status.as_str(),
                "alerts": a.alerts,
                "attempt": a.attempt,
                "ok": a.ok,
                "final": a.final_attempt,
                "error": a.error,
                "duration_ms": a.duration_ms,
            })
        })
        .collect();
    let text = routes_text.map(str::to_owned).or_else(|| route.as_ref().map(route_yaml)).unwrap_or_default();
    let resp = session.page(
        state,
        "notifications",
        "Notifications",
        "notifications",
        json!({
            "receivers": receivers.iter().map(receiver_row).collect::<Vec<_>>(),
            "has_routes": route.is_some(),
            "tree": route.as_ref().map(tree_rows).unwrap_or_default(),
            "routes_text": text,
            "routes_example": ROUTES_EXAMPLE,
            "routes_error": routes_error,
            "deliveries": deliveries,
            "deliveries_shown": DELIVERIES_SHOWN,
            "kinds": KINDS,
        }),
    );
    Ok(if routes_error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

/// A refusal to show by the form: 409 for the state of things, 422 for the input; anything
/// else (not found, forbidden, the database) is an error page.
fn form_error(e: DomainError) -> Result<(StatusCode, String), ConsoleError> {
    match e {
        DomainError::NotFound(_)
        | DomainError::Forbidden { .. }
        | DomainError::Unavailable(_)
        | DomainError::Internal(_) => Err(e.into()),
        DomainError::Conflict(_) => Ok((StatusCode::CONFLICT, domain_message(&e))),
        e => Ok((StatusCode::UNPROCESSABLE_ENTITY, domain_message(&e))),
    }
}

#[derive(Debug, Default, Deserialize)]
struct RoutesForm {
    #[serde(default)]
    routes: String,
}

/// The route tree from YAML or JSON (JSON is YAML).
async fn set_routes(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<RoutesForm>) -> PageResult {
    let parsed = if form.routes.trim().is_empty() {
        Err(DomainError::Invalid("route: empty; write the route tree as YAML or JSON".into()))
    } else {
        serde_norway::from_str::<Value>(&form.routes)
            .map_err(|e| DomainError::Invalid(format!("route: not YAML or JSON: {e}")))
            .and_then(|v| dom::from_json::<RouteConfig>("route", &v))
    };
    let result = match parsed {
        Ok(route) => dom::put_routes(&state, &session.actor(), route).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(redirect_with(PAGE, true, "route tree set; it applies to the next notifications")),
        Err(e) => {
            let (_, message) = form_error(e)?;
            notifications_page(&state, &session, Some(&form.routes), Some(message)).await
        }
    }
}

/// A receiver form as sent: the fields of its kind are used, the others ignored.
#[derive(Debug, Clone, Default, Deserialize)]
struct ReceiverForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    clear_secret: Option<String>,
    #[serde(default)]
    max_attempts: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    tls: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    clear_password: Option<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// Which receivers the structured form edits: one integration (its kind), or none yet.
fn single_kind(r: &ReceiverConfig) -> Option<&'static str> {
    match (r.webhook_configs.len(), r.email_configs.len(), r.alertmanager_configs.len()) {
        (1, 0, 0) => Some("webhook"),
        (0, 1, 0) => Some("email"),
        (0, 0, 1) => Some("alertmanager"),
        _ => None,
    }
}

impl ReceiverForm {
    /// The form filled from a (redacted) receiver; secrets are never put back in the page.
    fn of(r: &ReceiverConfig, kind: &str) -> ReceiverForm {
        let mut f = ReceiverForm { name: r.name.clone(), kind: kind.into(), ..ReceiverForm::default() };
        if let Some(w) = r.webhook_configs.first().filter(|_| kind == "webhook") {
            f.url = w.url.clone();
            f.max_attempts = w.max_attempts.map(|n| n.to_string()).unwrap_or_default();
        }
        if let Some(e) = r.email_configs.first().filter(|_| kind == "email") {
            f.host = e.host.clone();
            f.port = e.port.map(|p| p.to_string()).unwrap_or_default();
            f.tls = serde_json::to_value(e.tls).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            f.username = e.username.clone().unwrap_or_default();
            f.from = e.from.clone();
            f.to = e.to.join(", ");
            f.max_attempts = e.max_attempts.map(|n| n.to_string()).unwrap_or_default();
        }
        if let Some(a) = r.alertmanager_configs.first().filter(|_| kind == "alertmanager") {
            f.url = a.url.clone();
            f.max_attempts = a.max_attempts.map(|n| n.to_string()).unwrap_or_default();
        }
        f
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name, "kind": self.kind, "url": self.url, "max_attempts": self.max_attempts,
            "host": self.host, "port": self.port, "tls": if self.tls.is_empty() { "starttls" } else { &self.tls },
            "username": self.username, "from": self.from, "to": self.to,
            "clear_secret": self.clear_secret.is_some(), "clear_password": self.clear_password.is_some(),
        })
    }

    /// The receiver body for `dom::put_receiver`: the form's fields over the integration
    /// stored (`old`, redacted), so settings the form does not show (timeouts, backoff, CA
    /// file) stay. A secret left empty keeps the stored one (sent as the redacted
    /// placeholder); "remove" drops it.
    fn body(&self, old: Option<&Value>) -> Result<Value, (&'static str, String)> {
        let mut obj: Map<String, Value> = old.and_then(|v| v.as_object().cloned()).unwrap_or_default();
        let set = |obj: &mut Map<String, Value>, key: &str, v: &str| {
            let v = v.trim();
            if v.is_empty() {
                obj.remove(key);
            } else {
                obj.insert(key.into(), json!(v));
            }
        };
        let number = |field: &'static str, v: &str, max: u64| -> Result<Option<u64>, (&'static str, String)> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err((field, format!("{field}: {v:?} is not a whole number from 1 to {max}"))),
            }
        };
        let secret = |obj: &mut Map<String, Value>, key: &str, new: &str, clear: bool| {
            if clear {
                obj.remove(key);
            } else if !new.is_empty() {
                obj.insert(key.into(), json!(new));
            } else if obj.get(key).and_then(Value::as_str) == Some(REDACTED) {
                // Kept: the domain puts the stored secret back.
            } else {
                obj.remove(key);
            }
        };
        match number("max_attempts", &self.max_attempts, 20)? {
            Some(n) => obj.insert("max_attempts".into(), json!(n)),
            None => obj.remove("max_attempts"),
        };
        let list = match self.kind.as_str() {
            "webhook" => {
                set(&mut obj, "url", &self.url);
                secret(&mut obj, "secret", &self.secret, self.clear_secret.is_some());
                "webhook_configs"
            }
            "email" => {
                set(&mut obj, "host", &self.host);
                match number("port", &self.port, 65535)? {
                    Some(n) => obj.insert("port".into(), json!(n)),
                    None => obj.remove("port"),
                };
                set(&mut obj, "tls", &self.tls);
                set(&mut obj, "username", &self.username);
                secret(&mut obj, "password", &self.password, self.clear_password.is_some());
                obj.insert("from".into(), json!(self.from.trim()));
                let to: Vec<&str> = self.to.split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect();
                obj.insert("to".into(), json!(to));
                "email_configs"
            }
            "alertmanager" => {
                set(&mut obj, "url", &self.url);
                "alertmanager_configs"
            }
            other => return Err(("kind", format!("unknown receiver kind {other:?}: webhook, email or alertmanager"))),
        };
        Ok(json!({ list: [obj] }))
    }
}

/// The form field a receiver refusal names (`...webhook_configs[0].url: ...` → `url`).
fn field_of(message: &str) -> &'static str {
    const FIELDS: [&str; 10] =
        ["url", "secret", "max_attempts", "host", "port", "tls", "username", "password", "from", "to"];
    let Some(at) = message.find("_configs[") else { return "general" };
    let rest = &message[at..];
    let Some(dot) = rest.find("].") else { return "general" };
    let field: String = rest[dot + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    FIELDS.into_iter().find(|f| *f == field).unwrap_or("general")
}

/// The receiver page: its counters and the form (create mode when `entry` is none).
async fn receiver_page(
    state: &AppState,
    session: &Session,
    entry: Option<&ReceiverEntry>,
    form: &ReceiverForm,
    error: Option<(StatusCode, &'static str, String)>,
    yaml_text: Option<&str>,
    yaml_error: Option<(StatusCode, String)>,
) -> PageResult {
    let (title, creating) = match entry {
        Some(e) => (format!("Receiver {}", e.config.name), false),
        None => ("Add a receiver".to_owned(), true),
    };
    let structured = entry.is_none_or(|e| single_kind(&e.config).is_some());
    let yaml = yaml_text.map(str::to_owned).or_else(|| {
        entry.map(|e| {
            let mut v = serde_json::to_value(&e.config).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("name");
            }
            serde_norway::to_string(&v).unwrap_or_default()
        })
    });
    let used_by = match entry {
        Some(e) => match dom::get_routes(state, &session.actor()).await {
            Ok(route) => {
                tree_rows(&route).into_iter().filter(|r| r["receiver"]["value"] == json!(e.config.name)).count()
            }
            Err(DomainError::NotFound(_)) => 0,
            Err(e) => return Err(e.into()),
        },
        None => 0,
    };
    let status = error.as_ref().map(|e| e.0).or(yaml_error.as_ref().map(|e| e.0));
    let (field, message) = error.map(|(_, f, m)| (f, m)).unwrap_or(("", String::new()));
    let resp = session.page(
        state,
        "receiver",
        &title,
        "notifications",
        json!({
            "creating": creating,
            "structured": structured,
            "receiver": entry.map(receiver_row),
            "href": entry.map(|e| receiver_href(&e.config.name)),
            "has_secret": entry.is_some_and(|e| e.config.webhook_configs.first().is_some_and(|w| w.secret.is_some())),
            "has_password": entry.is_some_and(|e| e.config.email_configs.first().is_some_and(|m| m.password.is_some())),
            "used_by": used_by,
            "form": form.json(),
            "kind_webhook": form.kind == "webhook",
            "kind_email": form.kind == "email",
            "kind_alertmanager": form.kind == "alertmanager",
            "kinds": KINDS,
            "errors": if field.is_empty() { json!({}) } else { json!({ field: message }) },
            "yaml": yaml,
            "yaml_error": yaml_error.map(|e| e.1),
        }),
    );
    Ok(match status {
        Some(s) => (s, resp).into_response(),
        None => resp,
    })
}

#[derive(Debug, Deserialize)]
struct KindQuery {
    #[serde(default)]
    kind: Option<String>,
}

/// The form that adds a receiver of one kind (`?kind=webhook|email|alertmanager`).
async fn new_receiver(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<KindQuery>) -> PageResult {
    let kind = q.kind.filter(|k| KINDS.contains(&k.as_str())).unwrap_or_else(|| "webhook".into());
    let form = ReceiverForm { kind, ..ReceiverForm::default() };
    receiver_page(&state, &session, None, &form, None, None, None).await
}

async fn create_receiver(
    State(state): State<Arc<AppState>>,
    CsrfForm(session, form): CsrfForm<ReceiverForm>,
) -> PageResult {
    let name = form.name.trim().to_owned();
    let refused = |field: &'static str, status: StatusCode, message: String| Some((status, field, message));
    // Adding never replaces: a receiver of that name is changed on its own page.
    let error = match dom::get_receiver(&state, &session.actor(), &name).await {
        Ok(_) => {
            refused("name", StatusCode::CONFLICT, format!("receiver {name} already exists; change it on its page"))
        }
        Err(DomainError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if error.is_some() {
        return receiver_page(&state, &session, None, &form, error, None, None).await;
    }
    let body = match form.body(None) {
        Ok(b) => b,
        Err((field, message)) => {
            let error = refused(field, StatusCode::UNPROCESSABLE_ENTITY, message);
            return receiver_page(&state, &session, None, &form, error, None, None).await;
        }
    };
    match dom::put_receiver(&state, &session.actor(), &name, body).await {
        Ok((entry, _)) => Ok(redirect_with(
            &receiver_href(&entry.config.name),
            true,
            &format!("receiver {} added; route alerts to it in the route tree", entry.config.name),
        )),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let field = if message.starts_with("invalid receiver name") { "name" } else { field_of(&message) };
            receiver_page(&state, &session, None, &form, Some((status, field, message)), None, None).await
        }
    }
}

async fn show_receiver(State(state): State<Arc<AppState>>, session: Session, Path(name): Path<String>) -> PageResult {
    let entry = dom::get_receiver(&state, &session.actor(), &name).await?;
    let kind = single_kind(&entry.config).unwrap_or("webhook");
    let form = ReceiverForm::of(&entry.config, kind);
    receiver_page(&state, &session, Some(&entry), &form, None, None, None).await
}

async fn update_receiver(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, mut form): CsrfForm<ReceiverForm>,
) -> PageResult {
    let entry = dom::get_receiver(&state, &session.actor(), &name).await?;
    form.name = name.clone();
    // The stored integration of the same kind, whose other settings the form keeps.
    let old = match single_kind(&entry.config) {
        Some(k) if k == form.kind => {
            serde_json::to_value(&entry.config).ok().and_then(|v| v[format!("{k}_configs")].get(0).cloned())
        }
        _ => None,
    };
    let body = match form.body(old.as_ref()) {
        Ok(b) => b,
        Err((field, message)) => {
            let error = Some((StatusCode::UNPROCESSABLE_ENTITY, field, message));
            return receiver_page(&state, &session, Some(&entry), &form, error, None, None).await;
        }
    };
    match dom::put_receiver(&state, &session.actor(), &name, body).await {
        Ok(_) => Ok(redirect_with(&receiver_href(&name), true, &format!("receiver {name} saved"))),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let error = Some((status, field_of(&message), message));
            receiver_page(&state, &session, Some(&entry), &form, error, None, None).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct YamlForm {
    #[serde(default)]
    yaml: String,
}

/// Any receiver as YAML or JSON (several integrations, timeouts, ...); `<redacted>` keeps a
/// stored secret.
async fn update_receiver_yaml(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<YamlForm>,
) -> PageResult {
    let entry = dom::get_receiver(&state, &session.actor(), &name).await?;
    let parsed = serde_norway::from_str::<Value>(&form.yaml)
        .map_err(|e| DomainError::Invalid(format!("receiver: not YAML or JSON: {e}")));
    let result = match parsed {
        Ok(Value::Null) => Err(DomainError::Invalid("receiver: empty; give at least {} (drops alerts)".into())),
        Ok(body) => dom::put_receiver(&state, &session.actor(), &name, body).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(redirect_with(&receiver_href(&name), true, &format!("receiver {name} saved"))),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let kind = single_kind(&entry.config).unwrap_or("webhook");
            let f = ReceiverForm::of(&entry.config, kind);
            receiver_page(&state, &session, Some(&entry), &f, None, Some(&form.yaml), Some((status, message))).await
        }
    }
}

async fn delete_receiver(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let entry = dom::get_receiver(&state, &session.actor(), &name).await?;
    let href = receiver_href(&name);
    if form.confirmed != "yes" {
        let what = format!(
            "Delete receiver {name} ({} integrations): nothing is sent to it any more. A receiver the route tree \
             names cannot be deleted; change the routes first.",
            targets(&entry.config).len()
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{href}/delete");
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &href, vec![name], 1));
    }
    match domain::notifications::delete_receiver(&state, &session.actor(), &name).await {
        Ok(()) => Ok(redirect_with(PAGE, true, &format!("receiver {name} deleted"))),
        Err(e) => {
            let (_, message) = form_error(e)?;
            Ok(redirect_with(&href, false, &message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_form_field() {
        assert_eq!(field_of("receivers[0].webhook_configs[0].url: invalid URL \"x\""), "url");
        assert_eq!(field_of("receiver: email_configs[0].port: invalid"), "port");
        assert_eq!(field_of("receivers[1].email_configs[0].to[0]: bad address"), "to");
        assert_eq!(field_of("the database is down"), "general");
    }

    #[test]
    fn a_blank_secret_keeps_the_stored_one_and_remove_drops_it() {
        let old = json!({"url": "http://a/", "secret": REDACTED, "timeout": "3s"});
        let form = ReceiverForm { kind: "webhook".into(), url: "http://b/".into(), ..ReceiverForm::default() };
        let body = form.body(Some(&old)).unwrap();
        assert_eq!(body, json!({"webhook_configs": [{"url": "http://b/", "secret": REDACTED, "timeout": "3s"}]}));
        let clear = ReceiverForm { clear_secret: Some("on".into()), ..form.clone() };
        assert_eq!(clear.body(Some(&old)).unwrap()["webhook_configs"][0].get("secret"), None);
        let new = ReceiverForm { secret: "s3".into(), ..form };
        assert_eq!(new.body(Some(&old)).unwrap()["webhook_configs"][0]["secret"], "s3");
        let bad = ReceiverForm { kind: "email".into(), port: "70000".into(), ..ReceiverForm::default() };
        assert_eq!(bad.body(None).unwrap_err().0, "port");
    }

    #[test]
    fn the_tree_marks_what_is_inherited() {
        let route: RouteConfig = serde_norway::from_str(
            "receiver: ops\ngroup_wait: 10s\nroutes:\n  - receiver: pager\n    matchers: ['severity=\"critical\"']\n    routes: [{group_wait: 1s}]\n  - matchers: ['team=db']\n",
        )
        .unwrap();
        let rows = tree_rows(&route);
        let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["route", "route.routes[0]", "route.routes[0].routes[0]", "route.routes[1]"]);
        assert_eq!(rows[1]["group_wait"], json!({"value": "10s", "inherited": true}));
        assert_eq!(rows[2]["receiver"], json!({"value": "pager", "inherited": true}));
        assert_eq!(rows[2]["group_wait"], json!({"value": "1s", "inherited": false}));
        assert_eq!(rows[3]["receiver"]["value"], "ops");
        assert_eq!(rows[0]["repeat_interval"]["value"], "4h (default)");
    }
}
