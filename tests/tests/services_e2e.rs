//! End-to-end with the real binaries and a real Redis from the redis parcel: a
//! manager and two agents (separate data dirs, role-level port overrides keep
//! the roles apart on one machine). Replication, a config change making both roles stale, a
//! rolling restart applying it, rollback, history and diff, and an agent
//! restart that leaves its role running with the same pid.

use std::time::Duration;

use drover_tests::parcels::{build_parcel, install_parcels};
use drover_tests::procs::{ManagerProc, free_port, start_agent};
use drover_tests::resp::{self, Reply};
use drover_tests::rest::Rest;
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// Runs a service command and waits until it succeeds.
async fn run_command(rest: &Rest, svc: &str, body: Value) -> Value {
    let cmd = rest.ok(Method::POST, &format!("/clusters/prod/services/{svc}/commands"), Some(body)).await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    let done = eventually(WAIT, &format!("command {id} to finish"), || async {
        let c: Value = rest.get(&format!("/api/v1/commands/{id}")).await.ok()?;
        (c["state"] != "running").then_some(c)
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done
}

async fn roles(rest: &Rest, svc: &str) -> Vec<Value> {
    let v: Value = rest.get(&format!("/api/v1/clusters/prod/services/{svc}/roles")).await.unwrap();
    v["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_primary_and_replica_lifecycle() {
    init_logging();
    let redis_parcel = build_parcel("redis", None);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let flags = ["--heartbeat-interval", "300ms", "--host-lost-after", "5s", "--flush-interval", "200ms"];
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();
    let token = rest.enrollment_token(2, 600).await.unwrap();
    let mut agent_a = start_agent(&root.join("a"), &url, Some(&token), &["--hostname", "redis-a"]).unwrap();
    let _agent_b = start_agent(&root.join("b"), &url, Some(&token), &["--hostname", "redis-b"]).unwrap();
    let hosts = eventually(WAIT, "two healthy hosts", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == 2).then_some(hosts)
    })
    .await;
    let host_id = |name: &str| hosts.iter().find(|h| h["hostname"] == name).unwrap()["id"].as_str().unwrap().to_owned();

    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    install_parcels(&rest, "prod", &[host_id("redis-a"), host_id("redis-b")], &[redis_parcel]).await;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let primary = rest
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "primary", "host_id": host_id("redis-a"), "name": "cache-primary"})),
        )
        .await;
    let replica = rest
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "replica", "host_id": host_id("redis-b"), "name": "cache-replica"})),
        )
        .await;
    assert_eq!(primary["run_state"], "stopped");
    let (p_port, r_port) = (free_port(), free_port());
    for (role, port) in [("cache-primary", p_port), ("cache-replica", r_port)] {
        rest.ok(
            Method::PATCH,
            "/clusters/prod/services/cache/config",
            Some(json!({"values": {"port": port}, "message": format!("{role} on its own port"), "role": role})),
        )
        .await;
    }

    // Start: primary first, then the replica; both report running.
    let started = run_command(&rest, "cache", json!({"name": "start"})).await;
    assert_eq!(started["steps"].as_array().unwrap().len(), 2);
    for r in roles(&rest, "cache").await {
        assert_eq!(r["status"], "running", "{r}");
        assert!(r["pid"].as_u64().unwrap() > 0);
    }

    // Replication: a key written on the primary is read on the replica.
    assert_eq!(resp::command(p_port, &["SET", "greeting", "hello"]).await.unwrap(), Reply::Simple("OK".into()));
    eventually(WAIT, "the key to reach the replica", || async {
        let v = resp::command(r_port, &["GET", "greeting"]).await.ok()?;
        (v.text().as_deref() == Some("hello")).then_some(())
    })
    .await;

    // A config change needing a restart: new revision, both roles stale.
    let before = rest.ok(Method::GET, "/clusters/prod/services/cache/config", None).await["revision"].as_u64().unwrap();
    let patched = rest
        .ok(
            Method::PATCH,
            "/clusters/prod/services/cache/config",
            Some(json!({"values": {"maxmemory": "256mb"}, "message": "cap memory at 256 MiB"})),
        )
        .await;
    let capped = patched["revision"].as_u64().unwrap();
    assert_eq!(capped, before + 1);
    eventually(WAIT, "both roles to be stale", || async {
        let rs = roles(&rest, "cache").await;
        rs.iter().all(|r| r["stale"] == true && r["applied_revision"] == capped).then_some(())
    })
    .await;
    assert_eq!(resp::config_get(p_port, "maxmemory").await.unwrap(), "0");

    // Rolling restart of the stale roles applies it.
    let rolled = run_command(&rest, "cache", json!({"name": "rolling-restart", "stale_only": true})).await;
    assert_eq!(rolled["steps"].as_array().unwrap().len(), 2, "{rolled}");
    for port in [p_port, r_port] {
        assert_eq!(resp::config_get(port, "maxmemory").await.unwrap(), "268435456");
    }
    assert!(roles(&rest, "cache").await.iter().all(|r| r["stale"] == false));

    // History and diff.
    let revs: Value = rest.get("/api/v1/clusters/prod/services/cache/config/revisions").await.unwrap();
    let latest = &revs["items"][0];
    assert_eq!((latest["revision"].as_u64(), latest["author"].as_str()), (Some(capped), Some("admin")));
    assert_eq!(latest["message"], "cap memory at 256 MiB");
    let diff: Value =
        rest.get(&format!("/api/v1/clusters/prod/services/cache/config/diff?from={before}&to={capped}")).await.unwrap();
    let text = diff["roles"][0]["files"][0]["diff"].as_str().unwrap();
    assert!(text.contains("-maxmemory 0") && text.contains("+maxmemory 268435456"), "{text}");
    let rev: Value =
        rest.get(&format!("/api/v1/clusters/prod/services/cache/config/revisions/{capped}")).await.unwrap();
    assert_eq!(rev["applied"].as_array().unwrap().len(), 2, "{rev}");

    // Rollback restores the old value after another rolling restart.
    rest.ok(
        Method::POST,
        "/clusters/prod/services/cache/config/rollback",
        Some(json!({"revision": before, "message": "memory cap too tight"})),
    )
    .await;
    run_command(&rest, "cache", json!({"name": "rolling-restart", "stale_only": true})).await;
    for port in [p_port, r_port] {
        assert_eq!(resp::config_get(port, "maxmemory").await.unwrap(), "0");
    }

    // Restarting an agent leaves its role running with the same pid.
    let pid_of = |rs: &[Value], name: &str| rs.iter().find(|r| r["name"] == name).unwrap()["pid"].as_u64().unwrap();
    let pid_before = pid_of(&roles(&rest, "cache").await, "cache-primary");
    agent_a.terminate();
    agent_a = start_agent(&root.join("a"), &url, None, &["--hostname", "redis-a"]).unwrap();
    eventually(WAIT, "the restarted agent to report its role", || async {
        let rs = roles(&rest, "cache").await;
        let r = rs.iter().find(|r| r["name"] == "cache-primary")?;
        (r["status"] == "running" && r["updated_at"].is_string()).then_some(())
    })
    .await;
    assert_eq!(pid_of(&roles(&rest, "cache").await, "cache-primary"), pid_before);
    assert_eq!(resp::command(p_port, &["GET", "greeting"]).await.unwrap().text().as_deref(), Some("hello"));

    // Stop: replica first, then the primary; the ports close.
    run_command(&rest, "cache", json!({"name": "stop"})).await;
    for port in [p_port, r_port] {
        assert!(resp::command(port, &["PING"]).await.is_err(), "redis still answers on {port}");
    }
    let errors = manager.proc.unexpected_errors(&[]);
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
    drop(replica);
    drop(agent_a);
}
