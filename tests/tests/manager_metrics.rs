//! The manager's own metrics with real agent sessions: a real manager (TLS,
//! gRPC, SQLite) and three agent sessions from the agent library in this
//! process. `/metrics` counts the sessions opened and closed, the heartbeats,
//! the desired states pushed when a session opens and when a host's desired
//! state changes, with the publish-to-written latency of the latter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_agent::enroll;
use drover_agent::session::{SessionConfig, SessionObserver};
use drover_manager::{Manager, ManagerConfig};
use drover_proto::tls::ManagerAddr;
use drover_proto::token::EnrollmentToken;
use drover_tests::rest::Rest;
use drover_tests::{eventually, spawn_synthetic_session, synthetic_facts};
use reqwest::Method;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

const AGENTS: usize = 3;
const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "manager-metrics-test-password";

struct Quiet;
impl SessionObserver for Quiet {}

/// The value of the series `series` (name and labels exactly as exposed) in
/// a Prometheus text exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(client: &reqwest::Client, http: std::net::SocketAddr) -> Option<String> {
    let resp = client.get(format!("http://{http}/metrics")).basic_auth("admin", Some(PASSWORD)).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_heartbeats_and_pushes_are_counted() {
    drover_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    config.heartbeat_interval = Duration::from_millis(200);
    config.host_lost_after = Duration::from_secs(2);
    let manager = Manager::start(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let http = manager.http_addr;
    let rest = Rest::new(http, "admin", PASSWORD);
    let client = reqwest::Client::new();
    let token: EnrollmentToken = rest.enrollment_token(AGENTS as u32, 600).await.unwrap().parse().unwrap();
    let addr: ManagerAddr = format!("https://127.0.0.1:{}", manager.grpc_addr.port()).parse().unwrap();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = Vec::new();
    let mut host_ids = Vec::new();
    for i in 0..AGENTS {
        let identity = enroll::enroll(&addr, &token, None, &synthetic_facts(i), &BTreeMap::new()).await.unwrap();
        host_ids.push(identity.host_id.clone());
        let config = SessionConfig::new(addr.clone(), identity, synthetic_facts(i));
        sessions.push(spawn_synthetic_session(config, Arc::new(Quiet), stop_rx.clone()));
    }

    let n = AGENTS as f64;
    let text = eventually(WAIT, "every session open, heartbeating, with its first push", || async {
        let text = scrape(&client, http).await?;
        let ready = value(&text, "drover_agent_sessions_open") == Some(n)
            && value(&text, "drover_agent_heartbeats_total")? >= 2.0 * n
            && value(&text, r#"drover_desired_pushes_total{trigger="session_open"}"#) == Some(n);
        ready.then_some(text)
    })
    .await;
    assert_eq!(value(&text, "drover_agent_sessions_opened_total"), Some(n), "{text}");
    assert_eq!(value(&text, "drover_agent_sessions_closed_total"), Some(0.0), "{text}");
    assert_eq!(value(&text, "drover_desired_push_latency_seconds_count"), Some(0.0), "{text}");

    // A role placed on the first host changes its desired state: one push.
    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    rest.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": [host_ids[0]]}))).await;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    rest.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!({"role_type": "primary", "host_id": host_ids[0], "name": "cache-primary-1"})),
    )
    .await;
    let text = eventually(WAIT, "the change pushed and its latency observed", || async {
        let text = scrape(&client, http).await?;
        (value(&text, r#"drover_desired_pushes_total{trigger="change"}"#)? >= 1.0).then_some(text)
    })
    .await;
    let pushes = value(&text, r#"drover_desired_pushes_total{trigger="change"}"#).unwrap();
    assert_eq!(value(&text, "drover_desired_push_latency_seconds_count"), Some(pushes), "{text}");
    let latency = value(&text, "drover_desired_push_latency_seconds_sum").unwrap() / pushes;
    assert!(latency < 5.0, "mean push latency {latency} s");
    eprintln!("desired-state push latency (published to written): mean {:.3} ms over {pushes} push(es)", latency * 1e3);

    // The sessions end: closed, none open.
    stop_tx.send(true).unwrap();
    for s in sessions {
        tokio::time::timeout(WAIT, s).await.expect("session stops").unwrap().unwrap();
    }
    let text = eventually(WAIT, "every session closed", || async {
        let text = scrape(&client, http).await?;
        (value(&text, "drover_agent_sessions_open") == Some(0.0)).then_some(text)
    })
    .await;
    assert_eq!(value(&text, "drover_agent_sessions_closed_total"), Some(n), "{text}");
    manager.shutdown().await;
}
