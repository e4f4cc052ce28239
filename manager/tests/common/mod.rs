//! The in-process manager that the REST test binaries share: a real
//! `Manager` (SQLite in a temp dir, HTTP and gRPC on ephemeral loopback ports)
//! driven through its REST API with reqwest, and hosts enrolled straight
//! through the store (no agents). Each test binary includes this module with
//! `mod common;` and adds its own helpers in an `impl T` block.
#![allow(dead_code)] // every test binary uses a different part of it

use std::path::Path;

use drover_manager::model::Labels;
use drover_manager::{Manager, ManagerConfig, ManagerHandle, fixtures};
use reqwest::Method;
use serde_json::Value;
use tokio::net::TcpListener;

/// Saves a console page as `DIR/NAME.html` (its stylesheet linked from the
/// source tree) when `DROVER_CONSOLE_SHOTS=DIR`, for screenshots.
pub fn shot(name: &str, html: &str) {
    let Ok(dir) = std::env::var("DROVER_CONSOLE_SHOTS") else { return };
    let css = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/static/drover.css");
    let html = html.replace("/static/drover.css", &format!("file://{css}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/{name}.html"), html).unwrap();
}

/// The `admin` password of every test manager.
pub const PASSWORD: &str = "rest-test-admin-password";

/// A running test manager.
pub struct T {
    pub handle: ManagerHandle,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl T {
    pub async fn start() -> T {
        Self::start_configured(|_| {}, |_| {}).await
    }

    /// Starts a manager after `prepare` has filled its data dir.
    pub async fn start_with(prepare: impl FnOnce(&Path)) -> T {
        Self::start_configured(prepare, |_| {}).await
    }

    /// Starts a manager after `prepare` has filled the temp dir (the data dir
    /// unless `configure` moves it) and `configure` has adjusted its
    /// configuration.
    pub async fn start_configured(prepare: impl FnOnce(&Path), configure: impl FnOnce(&mut ManagerConfig)) -> T {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let mut config = ManagerConfig::for_data_dir(dir.path());
        config.admin_password = Some(PASSWORD.into());
        configure(&mut config);
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = Manager::start(config, http, grpc).await.unwrap();
        T { handle, client: reqwest::Client::new(), dir }
    }

    /// `http://ADDR{path}` of this manager.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.http_addr)
    }

    /// A call under `/api/v1` as admin; returns the status and the JSON body
    /// (`null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req =
            self.client.request(method, self.url(&format!("/api/v1{path}"))).basic_auth("admin", Some(PASSWORD));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    /// A call that must succeed (2xx); returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: HTTP {status}: {v}");
        v
    }

    /// Expects status `want` and returns the error message.
    pub async fn err(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> String {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        v["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// Enrolls host `id` through the store (a container with 2 CPUs and
    /// 1 GiB) and registers it live, as an agent's enrollment would.
    pub async fn host(&self, id: &str, hostname: &str, address: &str) {
        self.host_labelled(id, hostname, address, &[]).await
    }

    /// [`T::host`] with labels.
    pub async fn host_labelled(&self, id: &str, hostname: &str, address: &str, labels: &[(&str, &str)]) {
        let labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        fixtures::enroll(&self.handle.state, id, fixtures::facts(hostname, address), labels).await.unwrap();
    }
}

/// A signed-in console user, as a browser without scripts is: pages are
/// fetched with the session cookie, forms are posted with the page's CSRF
/// token, redirects are not followed (so a test sees where a form leads).
pub struct Console {
    base: String,
    client: reqwest::Client,
    cookie: String,
    pub csrf: String,
}

/// A console answer: status, `Location` of a redirect, flash cookie, body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    /// The flash message a redirect sets (`ok=...` or `error=...`, decoded).
    pub flash: Option<String>,
    /// The body, with the entities handlebars writes for `= ' \` < > &` decoded.
    pub html: String,
}

impl T {
    /// Signs in to the console as admin.
    pub async fn console(&self) -> Console {
        self.console_as("admin", PASSWORD).await
    }

    /// Posts the console's sign-in form as `user`: the status, and the
    /// `drover_session=...` cookie pair or, without one, the page.
    pub async fn sign_in(&self, user: &str, password: &str) -> (u16, Result<String, String>) {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let resp = client
            .post(self.url("/login"))
            .form(&[("username", user), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("drover_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        match cookie {
            Some(c) => (status, Ok(c)),
            None => (status, Err(resp.text().await.unwrap())),
        }
    }

    /// Signs in to the console as `user`.
    pub async fn console_as(&self, user: &str, password: &str) -> Console {
        let (status, cookie) = self.sign_in(user, password).await;
        assert_eq!(status, 303, "sign-in: {cookie:?}");
        let cookie = cookie.expect("a session cookie");
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut c = Console { base: self.url(""), client, cookie, csrf: String::new() };
        let home = c.get("/hosts").await;
        assert_eq!(home.status, 200, "{}", home.html);
        c.csrf = between(&home.html, "name=\"_csrf\" value=\"", "\"").expect("a CSRF token on the page").to_owned();
        c
    }
}

impl Console {
    /// The `drover_session=...` cookie pair.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    pub async fn get(&self, path: &str) -> Page {
        let resp = self.client.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.unwrap();
        Self::page(resp).await
    }

    /// Posts a form with the session's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(&str, &str)> = vec![("_csrf", &self.csrf)];
        form.extend_from_slice(fields);
        self.post_raw(path, &form).await
    }

    /// Posts a form exactly as given (no CSRF token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap();
        Self::page(resp).await
    }

    async fn page(resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let flash = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("drover_flash=") && !v.starts_with("drover_flash=;"))
            .and_then(|v| v.trim_start_matches("drover_flash=").split(';').next())
            .map(|v| {
                let (k, m) = v.split_once('=').unwrap_or((v, ""));
                let m = m.replace('+', " ");
                let bytes: Vec<u8> = percent_decode(&m);
                format!("{k}={}", String::from_utf8_lossy(&bytes))
            });
        // Handlebars escapes `=`, quotes and backticks as entities; tests read the text.
        let html = resp
            .text()
            .await
            .unwrap()
            .replace("&#x3D;", "=")
            .replace("&#x27;", "'")
            .replace("&#x60;", "`")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        Page { status, location, flash, html }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The text between the first `start` and the next `end`.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A host's heartbeat figures: idle, 1 of 4 GiB memory used, with `disks`.
pub fn host_metrics(disks: Vec<drover_manager::model::DiskUsage>) -> drover_manager::model::HostMetrics {
    drover_manager::model::HostMetrics {
        cpu_percent: 5.0,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        load1: 0.1,
        load5: 0.1,
        load15: 0.1,
        disks,
        network_rx_bytes: 0,
        network_tx_bytes: 0,
        uptime_seconds: 60,
        at: String::new(),
    }
}

/// The alert tests' manager: its engine runs only when the test says (`run_cycle`; the
/// timer's interval is an hour) and has run once; host `h1` named `hostname` in cluster
/// `prod` runs the Redis role `cache-primary` of service `cache`; the other `clusters` are
/// created empty. Returns the manager and the role's id, once the registry holds the role.
pub async fn redis_alert_fleet(hostname: &str, clusters: &[&str]) -> (T, String) {
    let t = T::start_configured(|_| {}, |c| c.alerts_interval = std::time::Duration::from_secs(3600)).await;
    let state = t.handle.state.clone();
    drover_testkit::eventually_true(std::time::Duration::from_secs(10), "the engine's first cycle", || {
        state.alerts.health().at > 0
    })
    .await;
    t.host("h1", hostname, "10.0.0.1").await;
    for c in std::iter::once(&"prod").chain(clusters.iter().filter(|c| **c != "prod")) {
        t.ok(Method::POST, "/clusters", Some(serde_json::json!({"name": c}))).await;
    }
    t.ok(Method::POST, "/clusters/prod/hosts", Some(serde_json::json!({"host_ids": ["h1"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(serde_json::json!({"name": "cache", "type": "redis"}))).await;
    let role = t
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(serde_json::json!({"role_type": "primary", "host_id": "h1", "name": "cache-primary"})),
        )
        .await;
    let primary = role["id"].as_str().unwrap().to_owned();
    drover_testkit::eventually_true(std::time::Duration::from_secs(10), "the role in the registry", || {
        state.registry.desired_role("h1", &primary).is_some()
    })
    .await;
    (t, primary)
}

/// What the webhook test server received: (signature header, body) per POST.
pub type Got = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A loopback HTTP server recording every POST (signature header, body).
pub async fn hook_server() -> (String, Got) {
    let got: Got = std::sync::Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let sig = headers
                    .get(drover_manager::notify::webhook::SIGNATURE_HEADER)
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                sink.lock().unwrap().push((sig, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}
