//! The web console: server-rendered pages from the handlebars templates in
//! `web/templates` (embedded in the binary), with `web/static/drover.js`
//! adding live updates where a script runs.
//!
//! Architecture invariants:
//! - page handlers read and change through [`crate::domain`] only: no
//!   validation, permission or audit logic of their own, so a change from
//!   the console is checked and audited exactly like the REST call;
//! - every change is a `POST` through [`CsrfForm`], which requires a signed
//!   in [`Session`] and the form's CSRF token (derived from the session id,
//!   which only the browser holding the `HttpOnly` cookie knows);
//! - a destructive action first answers a confirmation page naming what it
//!   will do; the action runs when that page's form is sent (`confirmed=yes`);
//! - after a change the handler redirects (303) to a page, carrying the
//!   outcome in a short-lived flash cookie, so a reload never repeats it.

mod account;
mod alert_rules;
mod alerts;
mod charts;
mod cluster_templates;
mod clusters;
mod commands;
mod config;
mod diagnostics;
mod environments;
mod health;
mod history;
mod home;
mod hosts;
mod logs;
mod metrics;
mod notifications;
mod parcels;
mod provision;
mod services;
mod users;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use handlebars::Handlebars;
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{SESSION_COOKIE, session_cookie};
use crate::AppState;
use crate::auth::{new_session_id, sha256_hex};
use crate::domain::{Actor, DomainError, Via};
use crate::model::now_millis;
use crate::store::UserRecord;

const FLASH_COOKIE: &str = "drover_flash";

#[derive(RustEmbed)]
#[folder = "../web/"]
struct Assets;

/// Compiled console templates: every `web/templates/NAME.hbs`, registered as
/// `NAME` (and so usable as a partial `{{> NAME}}`).
pub struct Templates {
    hb: Handlebars<'static>,
}

impl Templates {
    pub fn load() -> anyhow::Result<Templates> {
        let mut hb = Handlebars::new();
        for path in Assets::iter().filter(|p| p.starts_with("templates/") && p.ends_with(".hbs")) {
            let name = path.trim_start_matches("templates/").trim_end_matches(".hbs").to_owned();
            let file = Assets::get(&path).with_context(|| format!("template {name} missing"))?;
            let text = std::str::from_utf8(&file.data).with_context(|| format!("template {name} is not UTF-8"))?;
            hb.register_template_string(&name, text).with_context(|| format!("compile template {name}"))?;
        }
        hb.register_helper("bytes", Box::new(bytes_helper));
        hb.register_helper("pct", Box::new(pct_helper));
        Ok(Templates { hb })
    }

    fn render(&self, name: &str, data: &Value) -> Response {
        match self.hb.render(name, data) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "template render failed");
                ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, "console template error; see the manager log")
                    .into_response()
            }
        }
    }
}

pub(crate) fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{v:.0} {}", UNITS[i]) } else { format!("{v:.1} {}", UNITS[i]) }
}

handlebars::handlebars_helper!(bytes_helper: |v: f64| human_bytes(v));
handlebars::handlebars_helper!(pct_helper: |v: f64| format!("{v:.1}%"));

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .merge(home::routes())
        .merge(alerts::routes())
        .merge(alert_rules::routes())
        .merge(notifications::routes())
        .merge(hosts::routes())
        .merge(clusters::routes())
        .merge(health::routes())
        .merge(services::routes())
        .merge(logs::routes())
        .merge(diagnostics::routes())
        .merge(environments::routes())
        .merge(config::routes())
        .merge(commands::routes())
        .merge(history::routes())
        .merge(account::routes())
        .merge(parcels::routes())
        .merge(provision::routes())
        .merge(cluster_templates::routes())
        .merge(users::routes())
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/static/{*path}", get(static_file))
}

/// A signed-in console user. Extracting it from a request without a valid
/// session redirects to the sign-in page, which returns here afterwards.
pub struct Session {
    pub user: UserRecord,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    pub source: String,
    flash: Option<(String, String)>,
}

impl Session {
    pub fn actor(&self) -> Actor {
        Actor {
            username: self.user.username.clone(),
            source: self.source.clone(),
            via: crate::domain::Via::Console,
            access: crate::domain::access::Access::new(self.user.grants.clone(), None),
        }
    }

    /// What the user may do, for templates to show only those actions: on
    /// `cluster`, or on the fleet. Hiding a button is a courtesy; the domain
    /// layer checks every action again.
    pub fn can(&self, cluster: Option<&str>) -> Value {
        use crate::domain::{Permission, Scope};
        let actor = self.actor();
        let scope = cluster.map_or(Scope::Global, Scope::Cluster);
        let mut can = serde_json::Map::new();
        for p in Permission::ALL {
            let key = p.as_str().replace('.', "_");
            can.insert(key, json!(actor.may(p, scope)));
        }
        Value::Object(can)
    }

    /// Renders `template` inside the layout: `data` plus the page's title,
    /// the active navigation entry, the user, the CSRF token and the flash
    /// message (which is then cleared).
    pub fn page(&self, state: &AppState, template: &str, title: &str, nav: &str, mut data: Value) -> Response {
        if let Value::Object(m) = &mut data {
            m.insert("title".into(), json!(title));
            m.insert(format!("nav_{nav}"), json!(true));
            m.insert("user".into(), json!(self.user.username));
            // The navigation shows only what the user may open (`fleet_can`);
            // cluster pages put their cluster's rights in `can` first.
            let fleet = self.can(None);
            if !m.contains_key("can") {
                m.insert("can".into(), fleet.clone());
            }
            m.insert("fleet_can".into(), fleet);
            // Pages any reader may open (alert rules, notifications): read on any cluster.
            let reads_any = self.actor().may(crate::domain::Permission::Read, crate::domain::Scope::Any);
            m.insert("reads_any".into(), json!(reads_any));
            m.insert("csrf".into(), json!(self.csrf));
            m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
            if let Some((kind, message)) = &self.flash {
                m.insert("flash".into(), json!({"kind": kind, "message": message}));
            }
        }
        let mut resp = state.console.render(template, &data);
        if self.flash.is_some() {
            resp.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static("drover_flash=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            );
        }
        resp
    }
}

/// The user of the console session `sid` when it has neither expired
/// (`--session-lifetime` after sign-in) nor been unused for
/// `--session-idle-timeout`; notes the use.
pub(crate) async fn session_user(state: &AppState, sid: &str) -> crate::store::Result<Option<UserRecord>> {
    let idle = millis(state.config.session_idle_timeout);
    state.store.use_web_session(&sha256_hex(sid), now_millis(), idle).await
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// The CSRF token of a session: only who holds the session id can compute it.
fn csrf_token(session_id: &str) -> String {
    sha256_hex(&format!("drover-console-csrf:{session_id}"))
}

fn read_flash(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == FLASH_COOKIE)
        .map(|(_, v)| v.to_owned())?;
    let mut pairs = form_urlencoded::parse(raw.as_bytes());
    let (kind, message) = pairs.next()?;
    let kind = if kind == "error" { "error" } else { "ok" };
    Some((kind.to_owned(), message.into_owned()))
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Response> {
        let to_login = || {
            let here = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Redirect::to(&format!("/login?next={next}")).into_response()
        };
        let Some(sid) = session_cookie(&parts.headers) else {
            return Err(to_login());
        };
        let user = match session_user(state, &sid).await {
            Ok(Some(u)) => u,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(ConsoleError::from(DomainError::from(e)).into_response()),
        };
        let source = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(Session { user, csrf: csrf_token(&sid), source, flash: read_flash(&parts.headers) })
    }
}

/// A console form sent by a signed-in user, with the session's CSRF token
/// in the `_csrf` field (or the `X-CSRF-Token` header of a script's fetch).
/// Repeated fields (`host=a&host=b`) fill a `Vec`.
pub struct CsrfForm<T>(pub Session, pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let header_token = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let req = axum::extract::Request::from_parts(parts, body);
        let bytes = bytes::Bytes::from_request(req, state).await.map_err(|e| {
            ConsoleError::new(e.status(), format!("could not read the form: {}", e.body_text())).into_response()
        })?;
        let form_token = form_urlencoded::parse(&bytes).find(|(k, _)| k == "_csrf").map(|(_, v)| v.into_owned());
        let sent = form_token.or(header_token).unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            tracing::warn!(user = %session.user.username, source = %session.source, "console form refused: bad CSRF token");
            return Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "This form was refused: its security token is missing or out of date (forms only work from a \
                 Drover page of your current session). Reload the page and try again.",
            )
            .into_response());
        }
        let value = serde_html_form::from_bytes::<T>(&bytes).map_err(|e| {
            ConsoleError::new(StatusCode::BAD_REQUEST, format!("the form is not what this page expects: {e}"))
                .into_response()
        })?;
        Ok(CsrfForm(session, value))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The form of a confirmation step: `confirmed=yes` once the user has seen
/// what the action will do (see `hosts::confirm_page`).
#[derive(Debug, Deserialize)]
pub(crate) struct ConfirmForm {
    #[serde(default)]
    pub confirmed: String,
}

/// A 303 redirect to `to` with a flash message shown on the next page.
pub fn redirect_with(to: &str, ok: bool, message: &str) -> Response {
    let value: String =
        form_urlencoded::Serializer::new(String::new()).append_pair(if ok { "ok" } else { "error" }, message).finish();
    let mut resp = Redirect::to(to).into_response();
    if let Ok(v) =
        HeaderValue::from_str(&format!("{FLASH_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=120"))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `s` percent-encoded for a URL path segment or query value.
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error page: what went wrong, with the status code the REST API would
/// answer for the same failure.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ConsoleError {
        ConsoleError { status, message: message.into() }
    }
}

impl From<DomainError> for ConsoleError {
    fn from(e: DomainError) -> Self {
        let message = domain_message(&e);
        let status = super::ApiError::from(e).status_and_code().0;
        ConsoleError { status, message }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let heading = self.status.canonical_reason().unwrap_or("Error");
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{heading} · Drover</title>\
             <link rel=\"stylesheet\" href=\"/static/drover.css\"></head><body><header class=\"top\">\
             <a class=\"brand\" href=\"/\">Drover</a></header><main><h1>{heading}</h1>\
             <p class=\"error\" role=\"alert\">{}</p><p><a href=\"javascript:history.back()\">Back</a> · \
             <a href=\"/\">Home</a></p></main></body></html>",
            html_escape(&self.message)
        );
        (self.status, Html(html)).into_response()
    }
}

pub(crate) fn html_escape(s: &str) -> String {
    handlebars::html_escape(s)
}

/// The message of a domain error as a user sees it next to a form.
pub fn domain_message(e: &DomainError) -> String {
    match e {
        DomainError::Unavailable(_) => "the database is unavailable; try again shortly".into(),
        DomainError::Internal(_) => "internal error; see the manager log".into(),
        other => other.to_string(),
    }
}

pub type PageResult = Result<Response, ConsoleError>;

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this site (not `//host`, not a scheme) is followed after
/// sign-in.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

async fn login_page(State(state): State<Arc<AppState>>, Query(q): Query<LoginQuery>) -> Response {
    state.console.render("login", &json!({"title": "Sign in", "error": null, "next": safe_next(q.next.as_deref())}))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    axum::extract::Form(form): axum::extract::Form<LoginForm>,
) -> Response {
    use crate::throttle::SignInFailure;
    let next = safe_next(form.next.as_deref()).to_owned();
    let source = addr.ip();
    let failed = |status: StatusCode, error: String| {
        let page = state.console.render("login", &json!({"title": "Sign in", "error": error, "next": next}));
        (status, page).into_response()
    };
    let signed_in = crate::throttle::password_sign_in(&state, &form.username, &form.password, source, Via::Console);
    let user = match signed_in.await {
        Ok(Ok(u)) => u,
        Ok(Err(SignInFailure::Refused(refusal))) => {
            return failed(StatusCode::UNAUTHORIZED, refusal.message().into());
        }
        Ok(Err(SignInFailure::Held(held))) => {
            let secs = held.retry_after_secs();
            let whose = if held.by_source { "from this address" } else { "for this user name" };
            let mut resp = failed(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed sign-ins {whose}. Wait {secs} seconds, then try again."),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
        Err(e) => {
            tracing::error!(error = %e, "console login");
            return ConsoleError::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable").into_response();
        }
    };
    match start_session(&state, &user).await {
        Ok(cookie) => {
            let mut entry = crate::audit_entry(
                &user.username,
                &source.to_string(),
                "session.sign_in",
                "user",
                &user.username,
                "console sign-in",
            );
            entry.via = Via::Console.as_str().to_owned();
            entry.permission = String::new();
            state.audit(entry).await;
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Stores a new console session for `user` (pruning ended ones); answers
/// its cookie: `HttpOnly` (no script reads it), `SameSite=Lax` (not sent
/// with another site's POST), `Secure` under HTTPS, and no longer-lived
/// than the session.
pub(crate) async fn start_session(state: &AppState, user: &UserRecord) -> Result<HeaderValue, ConsoleError> {
    let sid = new_session_id();
    let now = now_millis();
    let lifetime = millis(state.config.session_lifetime);
    let store_error = |e| ConsoleError::from(DomainError::from(e));
    state.store.prune_web_sessions(now, millis(state.config.session_idle_timeout)).await.map_err(store_error)?;
    state.store.insert_web_session(&sha256_hex(&sid), &user.id, now, now + lifetime).await.map_err(store_error)?;
    let secure = if state.https { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", lifetime / 1000);
    HeaderValue::from_str(&cookie).map_err(|e| ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize)]
struct Empty {}

/// Ends the session on the server (its id no longer works, whoever holds
/// it) and clears the cookie.
async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    CsrfForm(session, Empty {}): CsrfForm<Empty>,
) -> Response {
    if let Some(sid) = session_cookie(&headers) {
        match state.store.delete_web_session(&sha256_hex(&sid)).await {
            Ok(_) => {
                let mut entry = crate::audit_entry(
                    &session.user.username,
                    &session.source,
                    "session.sign_out",
                    "user",
                    &session.user.username,
                    "console sign-out",
                );
                entry.via = Via::Console.as_str().to_owned();
                entry.permission = String::new();
                state.audit(entry).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "console: delete session");
                return ConsoleError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not end the session: the database is unavailable; try again",
                )
                .into_response();
            }
        }
    }
    let secure = if state.https { "; Secure" } else { "" };
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) =
        HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn static_file(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match Assets::get(&format!("static/{path}")) {
        Some(f) => {
            let mime = if path.ends_with(".css") {
                "text/css; charset=utf-8"
            } else if path.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else if path.ends_with(".svg") {
                "image/svg+xml"
            } else if path.ends_with(".txt") {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "public, max-age=3600")], f.data.into_owned())
                .into_response()
        }
        None => ConsoleError::new(StatusCode::NOT_FOUND, format!("no static file {path}")).into_response(),
    }
}

/// Every console page that is not found: an HTML 404, not the API's JSON.
pub async fn not_found_page() -> Response {
    ConsoleError::new(StatusCode::NOT_FOUND, "There is no such page.").into_response()
}

/// One command as a row of a list. A command has a service, or acts on a
/// cluster's hosts (parcels), or on hosts outside any cluster (SSH bootstrap).
pub(crate) fn commands_row(c: &crate::domain::commands::CommandView) -> Value {
    let href = format!("/commands/{}", url_encode(&c.id));
    let (cluster, service, service_href, cluster_href) = if c.cluster.is_empty() {
        let progress = format!("/hosts/add/ssh/{}", url_encode(&c.id));
        ("hosts".to_owned(), "SSH bootstrap".to_owned(), Some(progress.clone()), progress)
    } else {
        let cluster_href = format!("/clusters/{}", url_encode(&c.cluster));
        let service_href = (!c.service.is_empty())
            .then(|| format!("/clusters/{}/services/{}", url_encode(&c.cluster), url_encode(&c.service)));
        (c.cluster.clone(), c.service.clone(), service_href, cluster_href)
    };
    json!({
        "id": c.id,
        "href": href,
        "name": c.name,
        "cluster": cluster,
        "service": service,
        "service_href": service_href.clone().unwrap_or_else(|| cluster_href.clone()),
        "cluster_href": cluster_href,
        "has_service": service_href.is_some(),
        "state": c.state.as_str(),
        "message": c.message,
        "created_by": c.created_by,
        "created_at": c.created_at,
        "finished_at": c.finished_at,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_compile() {
        super::Templates::load().unwrap();
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(super::human_bytes(512.0), "512 B");
        assert_eq!(super::human_bytes(1536.0), "1.5 KiB");
        assert_eq!(super::human_bytes(8.0 * 1024.0 * 1024.0 * 1024.0), "8.0 GiB");
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(super::safe_next(Some("/hosts?status=lost")), "/hosts?status=lost");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil.example", "hosts"] {
            assert_eq!(super::safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(super::safe_next(None), "/");
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = super::csrf_token("session-a");
        assert_ne!(a, super::csrf_token("session-b"));
        assert!(super::constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!super::constant_time_eq(a.as_bytes(), &a.as_bytes()[1..]));
    }
}
