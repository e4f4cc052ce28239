//! End-to-end with the real binaries: a manager and three agents, each in its
//! own data dir, on loopback. Kills, restarts, decommissioning and every kind
//! of refused enrollment, checked through the REST API and the agents' exit
//! codes and messages.

use std::path::Path;
use std::time::Duration;

use drover_tests::eventually;
use drover_tests::procs::{ManagerProc, Proc, free_port, start_agent};
use drover_tests::rest::Rest;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// Manager log lines that are expected in these scenarios.
const ALLOWED_ERRORS: &[&str] = &[];

async fn host_by_name(rest: &Rest, name: &str) -> Option<Value> {
    rest.hosts("").await.ok()?.into_iter().find(|h| h["hostname"] == name)
}

async fn wait_status(rest: &Rest, name: &str, status: &str) -> Value {
    eventually(WAIT, &format!("host {name} to be {status}"), || async {
        host_by_name(rest, name).await.filter(|h| h["status"] == status)
    })
    .await
}

/// Runs an agent that must be refused; returns its log.
async fn refused_agent(dir: &Path, url: &str, token: &str) -> String {
    let mut agent = start_agent(dir, url, Some(token), &["--hostname", "refused"]).unwrap();
    let status = agent.wait_exit(WAIT).await.expect("refused agent should exit");
    assert_eq!(status.code(), Some(2), "refused agent exit status; log:\n{}", agent.log_text());
    agent.log_text()
}

fn manager_flags() -> Vec<&'static str> {
    vec!["--heartbeat-interval", "300ms", "--host-lost-after", "3s", "--flush-interval", "200ms"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_and_three_agents_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (http_port, grpc_port) = (free_port(), free_port());
    let mut manager = ManagerProc::start(&root.join("manager"), http_port, grpc_port, &manager_flags()).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();

    // Three agents enroll with one three-use token and become healthy.
    let token = rest.enrollment_token(3, 600).await.unwrap();
    let mut agents: Vec<Proc> = ["e2e-a", "e2e-b", "e2e-c"]
        .iter()
        .map(|name| {
            start_agent(&root.join(name), &url, Some(&token), &["--hostname", name, "--labels", "tier=e2e"]).unwrap()
        })
        .collect();
    for name in ["e2e-a", "e2e-b", "e2e-c"] {
        let h = eventually(WAIT, &format!("{name} healthy with metrics"), || async {
            host_by_name(&rest, name).await.filter(|h| h["status"] == "healthy" && !h["metrics"].is_null())
        })
        .await;
        assert_eq!(h["labels"]["tier"], "e2e");
        assert!(h["cpu_cores"].as_u64().unwrap() > 0);
        assert!(h["memory_bytes"].as_u64().unwrap() > 0);
        assert!(!h["kernel"].as_str().unwrap().is_empty());
        assert!(["container", "vm", "physical"].contains(&h["kind"].as_str().unwrap()));
    }
    assert_eq!(rest.count("healthy").await.unwrap(), 3);
    // The token is used up now: a fourth host is refused.
    let log = refused_agent(&root.join("fourth"), &url, &token).await;
    assert!(log.contains("used up"), "fourth agent log:\n{log}");

    // Kill one agent: its host turns lost and an event says so.
    agents[1].kill();
    let b = wait_status(&rest, "e2e-b", "lost").await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    let events: Value = rest.get(&format!("/api/v1/events?object_id={b_id}")).await.unwrap();
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| e["kind"] == "host_lost"),
        "no host_lost event: {events}"
    );

    // Restart the manager: the running agents reconnect on their own.
    let before_restart = host_by_name(&rest, "e2e-a").await.unwrap()["last_heartbeat_at"].clone();
    manager.proc.terminate();
    manager = ManagerProc::start(&root.join("manager"), http_port, grpc_port, &manager_flags()).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    for name in ["e2e-a", "e2e-c"] {
        eventually(WAIT, &format!("{name} heartbeating after manager restart"), || async {
            host_by_name(&rest, name)
                .await
                .filter(|h| h["status"] == "healthy" && h["last_heartbeat_at"] != before_restart)
        })
        .await;
    }
    // The killed agent restarts without a token and is healthy again.
    agents[1] = start_agent(&root.join("e2e-b"), &url, None, &["--hostname", "e2e-b"]).unwrap();
    wait_status(&rest, "e2e-b", "healthy").await;
    let events: Value = rest.get(&format!("/api/v1/events?object_id={b_id}")).await.unwrap();
    assert!(events["items"].as_array().unwrap().iter().any(|e| e["kind"] == "host_recovered"), "{events}");

    // Decommission one host: its agent is told and exits; it stays refused.
    let c = host_by_name(&rest, "e2e-c").await.unwrap();
    let c_id = c["id"].as_str().unwrap();
    let (status, body) = rest.raw(reqwest::Method::DELETE, &format!("/api/v1/hosts/{c_id}"), None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "decommissioned");
    let exit = agents[2].wait_exit(WAIT).await.expect("decommissioned agent should exit");
    assert_eq!(exit.code(), Some(2));
    assert!(agents[2].log_text().contains("decommissioned"), "{}", agents[2].log_text());
    let mut again = start_agent(&root.join("e2e-c"), &url, None, &["--hostname", "e2e-c"]).unwrap();
    let exit = again.wait_exit(WAIT).await.expect("refused agent should exit");
    assert_eq!(exit.code(), Some(2));
    assert!(again.log_text().contains("decommissioned"), "{}", again.log_text());
    assert_eq!(host_by_name(&rest, "e2e-c").await.unwrap()["status"], "decommissioned");

    // Audit trail of the changes above.
    let audit: Value = rest.get("/api/v1/audit").await.unwrap();
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    for want in ["enrollment_token.create", "host.enroll", "host.decommission"] {
        assert!(actions.contains(&want), "audit lacks {want}: {actions:?}");
    }

    let errors = manager.proc.unexpected_errors(ALLOWED_ERRORS);
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
    drop(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &manager_flags()).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();
    let good = rest.enrollment_token(5, 600).await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(parts.len(), 4, "{good}");

    // Malformed.
    let log = refused_agent(&root.join("malformed"), &url, "not-a-token").await;
    assert!(log.contains("drv1.<id>.<secret>"), "{log}");

    // Well-formed but unknown.
    let unknown = format!("drv1.zzzzzzzz.{}.{}", parts[2], parts[3]);
    let log = refused_agent(&root.join("unknown"), &url, &unknown).await;
    assert!(log.contains("unknown enrollment token"), "{log}");

    // Right token, wrong secret: reported like an unknown token.
    let wrong_secret = format!("drv1.{}.{}.{}", parts[1], "0".repeat(32), parts[3]);
    let log = refused_agent(&root.join("wrong-secret"), &url, &wrong_secret).await;
    assert!(log.contains("unknown enrollment token"), "{log}");

    // Wrong CA fingerprint: the agent refuses the manager, not the other way round.
    let wrong_fp = format!("drv1.{}.{}.{}", parts[1], parts[2], "ab".repeat(32));
    let log = refused_agent(&root.join("wrong-fp"), &url, &wrong_fp).await;
    assert!(log.contains("CA fingerprint mismatch"), "{log}");

    // Revoked.
    let (status, created) =
        rest.raw(reqwest::Method::POST, "/api/v1/enrollment-tokens", Some(json!({"max_uses": 1}))).await.unwrap();
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    let (status, _) =
        rest.raw(reqwest::Method::DELETE, &format!("/api/v1/enrollment-tokens/{id}"), None).await.unwrap();
    assert_eq!(status, 204);
    let log = refused_agent(&root.join("revoked"), &url, created["token"].as_str().unwrap()).await;
    assert!(log.contains("revoked"), "{log}");

    // Expired.
    let (_, short) =
        rest.raw(reqwest::Method::POST, "/api/v1/enrollment-tokens", Some(json!({"ttl_seconds": 1}))).await.unwrap();
    let short_id = short["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "token to expire", || async {
        let list: Value = rest.get("/api/v1/enrollment-tokens").await.ok()?;
        list["items"].as_array()?.iter().find(|t| t["id"] == short_id.as_str() && t["state"] == "expired").map(|_| ())
    })
    .await;
    let log = refused_agent(&root.join("expired"), &url, short["token"].as_str().unwrap()).await;
    assert!(log.contains("expired"), "{log}");

    // None of the refusals created a host, and the good token was never used.
    assert_eq!(rest.hosts("").await.unwrap().len(), 0);
    let list: Value = rest.get("/api/v1/enrollment-tokens").await.unwrap();
    let good_rec = list["items"].as_array().unwrap().iter().find(|t| t["id"] == parts[1]).unwrap();
    assert_eq!(good_rec["uses"], 0);

    let errors = manager.proc.unexpected_errors(ALLOWED_ERRORS);
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
}
