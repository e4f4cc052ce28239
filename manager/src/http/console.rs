//! The web console: login, logout, the hosts page and the read-only services
//! page, rendered server-side from the handlebars templates in
//! `web/templates` (embedded in the binary).

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use handlebars::Handlebars;
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::json;

use super::{SESSION_COOKIE, session_cookie};
use crate::AppState;
use crate::auth::{new_session_id, sha256_hex};
use crate::model::{HostStatus, now_millis};
use crate::store::HostFilter;

const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

#[derive(RustEmbed)]
#[folder = "../web/"]
struct Assets;

/// Compiled console templates.
pub struct Templates {
    hb: Handlebars<'static>,
}

impl Templates {
    pub fn load() -> anyhow::Result<Templates> {
        let mut hb = Handlebars::new();
        for name in ["layout", "login", "hosts", "services"] {
            let file =
                Assets::get(&format!("templates/{name}.hbs")).with_context(|| format!("template {name} missing"))?;
            let text = std::str::from_utf8(&file.data).with_context(|| format!("template {name} is not UTF-8"))?;
            hb.register_template_string(name, text).with_context(|| format!("compile template {name}"))?;
        }
        hb.register_helper("bytes", Box::new(bytes_helper));
        hb.register_helper("pct", Box::new(pct_helper));
        Ok(Templates { hb })
    }

    fn render(&self, name: &str, data: &serde_json::Value) -> Response {
        match self.hb.render(name, data) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "template render failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "console template error; see manager log").into_response()
            }
        }
    }
}

fn human_bytes(v: f64) -> String {
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
        .route("/", get(hosts_page))
        .route("/services", get(services_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/static/{*path}", get(static_file))
}

async fn current_user(state: &AppState, headers: &HeaderMap) -> Option<crate::store::UserRecord> {
    let sid = session_cookie(headers)?;
    state.store.user_by_web_session(&sha256_hex(&sid), now_millis()).await.ok().flatten()
}

async fn hosts_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(user) = current_user(&state, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    let page = match state.store.list_hosts(&HostFilter { limit: 1000, ..Default::default() }).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "console: list hosts");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
        }
    };
    let summary = state.registry.summary();
    let hosts: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|h| {
            let m = h.metrics.as_ref();
            json!({
                "id": h.id,
                "hostname": h.hostname,
                "addresses": h.addresses.join(", "),
                "kind": h.kind.as_str(),
                "os": h.os,
                "cpu_cores": h.cpu_cores,
                "memory_bytes": h.memory_bytes as f64,
                "status": h.status.as_str(),
                "healthy": h.status == HostStatus::Healthy,
                "labels": h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "last_heartbeat_at": h.last_heartbeat_at.clone().unwrap_or_else(|| "never".into()),
                "has_metrics": m.is_some(),
                "cpu_percent": m.map(|m| m.cpu_percent).unwrap_or(0.0),
                "memory_used_bytes": m.map(|m| m.memory_used_bytes as f64).unwrap_or(0.0),
                "load1": m.map(|m| format!("{:.2}", m.load1)).unwrap_or_default(),
                "agent_version": h.agent_version,
            })
        })
        .collect();
    let data = json!({
        "title": "Hosts",
        "user": user.username,
        "hosts": hosts,
        "total": page.total,
        "summary": summary,
        "version": env!("CARGO_PKG_VERSION"),
    });
    state.console.render("hosts", &data)
}

/// Every cluster's services with their health, roles and recent revisions.
async fn services_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(user) = current_user(&state, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    match services_data(&state).await {
        Ok(clusters) => state.console.render(
            "services",
            &json!({"title": "Services", "user": user.username, "clusters": clusters, "version": env!("CARGO_PKG_VERSION")}),
        ),
        Err(e) => {
            tracing::error!(error = %e, "console: services page");
            (StatusCode::SERVICE_UNAVAILABLE, "could not load services; see the manager log").into_response()
        }
    }
}

async fn services_data(state: &AppState) -> Result<Vec<serde_json::Value>, super::ApiError> {
    use crate::domain;
    let mut clusters = Vec::new();
    for c in domain::clusters::list(state).await? {
        let mut services = Vec::new();
        for s in domain::services::list(state, &c.name).await? {
            let revisions: Vec<serde_json::Value> = domain::config::revisions(state, &c.name, &s.name)
                .await?
                .into_iter()
                .take(5)
                .map(|r| {
                    json!({"revision": r.revision, "author": r.author, "message": r.message,
                           "at": r.created_at, "changed": r.changed_keys.join(", ")})
                })
                .collect();
            services.push(json!({
                "name": s.name, "type": s.service_type, "revision": s.revision, "health": s.health,
                "roles": s.roles, "revisions": revisions,
            }));
        }
        clusters.push(json!({"name": c.name, "services": services}));
    }
    Ok(clusters)
}

async fn login_page(State(state): State<Arc<AppState>>) -> Response {
    state.console.render("login", &json!({"title": "Sign in", "error": null}))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let user = match state.basic_cache.verify(&state.store, &form.username, &form.password).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            tracing::warn!(user = %form.username, source = %addr.ip(), "console login failed");
            let page =
                state.console.render("login", &json!({"title": "Sign in", "error": "Wrong user name or password."}));
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "console login");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
        }
    };
    let sid = new_session_id();
    let now = now_millis();
    if let Err(e) = state.store.insert_web_session(&sha256_hex(&sid), &user.id, now, now + SESSION_TTL_MS).await {
        tracing::error!(error = %e, "console: store session");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    state
        .audit(crate::audit_entry(
            &user.username,
            &addr.ip().to_string(),
            "user.login",
            "user",
            &user.id,
            "console sign-in",
        ))
        .await;
    let cookie =
        format!("{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL_MS / 1000);
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(sid) = session_cookie(&headers)
        && let Err(e) = state.store.delete_web_session(&sha256_hex(&sid)).await
    {
        tracing::error!(error = %e, "console: delete session");
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("drover_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
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
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "public, max-age=3600")], f.data.into_owned())
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
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
}
