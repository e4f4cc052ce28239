//! The manager's own metrics at `/metrics`: who may read them, that the
//! exposition is valid (`promtool check metrics`, and a real Prometheus
//! parsing its OpenMetrics), and that a real Prometheus (Debian's
//! `/usr/bin/prometheus`, see `drover_testkit::prometheus`) scraping the
//! manager with an API token answers PromQL about it: the HTTP requests the
//! test made, by route template; a command running then aborted; flushes;
//! the database pool; the process; the build.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{PASSWORD, T};
use drover_testkit::prometheus::{Prometheus, Sample, ScrapeJob};
use reqwest::Method;
use serde_json::json;

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// `GET /metrics` with an optional bearer token and `Accept` header: status,
/// `Content-Type`, body.
async fn scrape(t: &T, bearer: Option<&str>, accept: Option<&str>) -> (u16, String, String) {
    let mut req = t.client.get(t.url("/metrics"));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

/// An API token of admin narrowed to `grants`.
async fn token(t: &T, name: &str, grants: serde_json::Value) -> String {
    let created = t.ok(Method::POST, "/api-tokens", Some(json!({"name": name, "grants": grants}))).await;
    created["token"].as_str().expect("token").to_owned()
}

/// `promtool check metrics` on a Prometheus text exposition: its problems, empty when none.
fn promtool_problems(exposition: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { String::new() } else { format!("{}: {text}", out.status) }
}

#[tokio::test]
async fn metrics_need_read_on_the_fleet_and_are_a_valid_exposition() {
    let t = T::start().await;
    // No credentials: the API's 401.
    let (status, _, body) = scrape(&t, None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authentication required"), "{body}");
    let (status, _, _) = scrape(&t, Some("drvt_not-a-token"), None).await;
    assert_eq!(status, 401);
    // `read` on one cluster only is not enough: the metrics are the fleet's.
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let narrow = token(&t, "prod-viewer", json!([{"role": "viewer", "cluster": "prod"}])).await;
    let (status, _, body) = scrape(&t, Some(&narrow), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"permission\":\"read\""), "{body}");

    // Some requests to count: one route with two different ids, and a path no route takes.
    for id in ["h-one", "h-two"] {
        t.err(Method::GET, &format!("/hosts/{id}"), None, 404).await;
    }
    for path in ["/no/such/page", "/repo/no-such-file.parcel"] {
        let resp = t.client.get(t.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }

    let viewer = token(&t, "fleet-viewer", json!([{"role": "viewer"}])).await;
    let (status, content_type, text) = scrape(&t, Some(&viewer), None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool check metrics: {problems}\n{text}");
    // Route templates, never raw paths.
    assert!(
        text.contains(
            r#"drover_http_request_duration_seconds_count{route="/api/v1/hosts/{id}",method="GET",status="4xx"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(!text.contains("h-one") && !text.contains("/no/such/page") && !text.contains("no-such-file"), "{text}");
    assert!(text.contains(r#"route="/repo/{*file}",method="GET",status="4xx"} 1"#), "{text}");
    for name in [
        "drover_agent_sessions_open 0",
        "drover_agent_heartbeats_total 0",
        r#"drover_commands{state="running"} 0"#,
        "drover_db_pool_connections ",
        "drover_registry_flush_duration_seconds_bucket",
        "drover_desired_push_latency_seconds_count 0",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
        &format!(r#"drover_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
    ] {
        assert!(text.contains(name), "no {name:?} in\n{text}");
    }

    // OpenMetrics for who asks for it (Prometheus does), with a session cookie too.
    let (status, content_type, text) = scrape(&t, Some(&viewer), Some(OPENMETRICS)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let basic = t.client.get(t.url("/metrics")).basic_auth("admin", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(basic.status(), 200);

    // Not an API operation: not in the OpenAPI document.
    let doc = t.ok(Method::GET, "/openapi.json", None).await;
    assert!(doc["paths"].get("/metrics").is_none());
}

#[tokio::test]
async fn metrics_unauthenticated_serves_anyone() {
    let t = T::start_configured(|_| {}, |c| c.metrics_unauthenticated = true).await;
    let (status, _, text) = scrape(&t, None, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("drover_build_info"), "{text}");
    // The API itself still needs credentials.
    assert_eq!(t.client.get(t.url("/api/v1/hosts")).send().await.unwrap().status(), 401);
}

/// The one value of an answer with one sample.
fn single(samples: &[Sample]) -> Option<f64> {
    match samples {
        [s] => Some(s.value),
        _ => None,
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_manager_with_an_api_token() {
    let t = T::start().await;
    let scraper = token(&t, "prometheus", json!([{"role": "viewer"}])).await;
    let target = t.handle.http_addr.to_string();
    let prom = Prometheus::start(&[ScrapeJob::new("drover-manager", &target, "/metrics").bearer(&scraper)]).await;
    prom.wait_up("drover-manager", Duration::from_secs(60)).await;
    let within = Duration::from_secs(30);

    let version = prom
        .eventually("drover_build_info{job=\"drover-manager\"}", within, |s| {
            s.first().map(|s| s.label("version").to_owned())
        })
        .await;
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    // HTTP requests by route template: the count grows with the requests made.
    let requests = r#"sum(drover_http_request_duration_seconds_count{job="drover-manager",route="/api/v1/hosts/{id}",method="GET",status="4xx"})"#;
    for i in 0..3 {
        t.err(Method::GET, &format!("/hosts/first-{i}"), None, 404).await;
    }
    let before = prom.eventually(requests, within, |s| single(s).filter(|v| *v >= 3.0)).await;
    for i in 0..5 {
        t.err(Method::GET, &format!("/hosts/second-{i}"), None, 404).await;
    }
    prom.eventually(requests, within, |s| single(s).filter(|v| *v >= before + 5.0)).await;
    // No series names a raw path.
    let raw = prom.query(r#"drover_http_request_duration_seconds_count{route=~".*(first|second)-.*"}"#).await.unwrap();
    assert!(raw.is_empty(), "{raw:?}");
    // Prometheus's own scrapes are counted under /metrics, as 2xx.
    prom.eventually(
        r#"drover_http_request_duration_seconds_count{job="drover-manager",route="/metrics",status="2xx"}"#,
        within,
        |s| single(s).filter(|v| *v >= 1.0),
    )
    .await;

    // A command runs (waiting for an agent that never reports), then is
    // aborted: the gauges of both states follow.
    t.host("h1", "h1.example", "10.0.0.1").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!({"role_type": "primary", "host_id": "h1", "name": "cache-primary-1"})),
    )
    .await;
    let cmd = t.ok(Method::POST, "/clusters/prod/services/cache/commands", Some(json!({"name": "start"}))).await;
    let running = r#"drover_commands{job="drover-manager",state="running"}"#;
    let aborted = r#"drover_commands{job="drover-manager",state="aborted"}"#;
    prom.eventually(running, within, |s| single(s).filter(|v| *v == 1.0)).await;
    let id = cmd["id"].as_str().unwrap();
    t.ok(Method::POST, &format!("/commands/{id}/abort"), None).await;
    prom.eventually(aborted, within, |s| single(s).filter(|v| *v == 1.0)).await;
    prom.eventually(running, within, |s| single(s).filter(|v| *v == 0.0)).await;

    // Flushes every second, a database pool, the process.
    prom.eventually(
        r#"increase(drover_registry_flush_duration_seconds_count{job="drover-manager"}[10s])"#,
        within,
        |s| single(s).filter(|v| *v > 0.0),
    )
    .await;
    prom.eventually(r#"drover_db_pool_connections{job="drover-manager"}"#, within, |s| single(s).filter(|v| *v >= 1.0))
        .await;
    prom.eventually(r#"process_resident_memory_bytes{job="drover-manager"}"#, within, |s| {
        single(s).filter(|v| *v > 1e6)
    })
    .await;
    let p99 = prom
        .eventually(
            r#"histogram_quantile(0.99, sum by (le) (rate(drover_http_request_duration_seconds_bucket{job="drover-manager"}[1m])))"#,
            within,
            |s| single(s).filter(|v| v.is_finite() && *v > 0.0),
        )
        .await;
    assert!(p99 < 5.0, "p99 of the manager's HTTP requests: {p99} s");
    // Figures (debug build): what a scrape costs as Prometheus sees it.
    let took = prom.query(r#"scrape_duration_seconds{job="drover-manager"}"#).await.ok().as_deref().and_then(single);
    let samples = prom.query(r#"scrape_samples_scraped{job="drover-manager"}"#).await.ok().as_deref().and_then(single);
    let bytes = scrape(&t, Some(&scraper), Some(OPENMETRICS)).await.2.len();
    eprintln!("scrape of /metrics: {took:?} s, {samples:?} samples, {bytes} bytes; HTTP p99 {:.2} ms", p99 * 1e3);
}
