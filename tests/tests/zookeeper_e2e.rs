//! End-to-end with the real binaries and a real ZooKeeper from the zookeeper
//! and jre parcels: a manager and three agents (separate data dirs, one `server` role each, role-level port
//! overrides keep the servers apart on one machine). The ensemble reaches a
//! quorum, keeps serving a client polling it with four-letter words through a
//! rolling restart, and stops cleanly.

use std::collections::HashMap;
use std::time::Duration;

use drover_tests::parcels::{build_parcel, install_parcels};
use drover_tests::procs::{ManagerProc, RoleReaper, free_port, start_agent};
use drover_tests::rest::Rest;
use drover_tests::zk::{Client, longest_outage, rolling_restart_violation, timeline, wait_for_quorum};
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

/// Per phase: three JVMs starting on two shared cores are slow.
const WAIT: Duration = Duration::from_secs(120);
const HOSTS: [&str; 3] = ["zk-a", "zk-b", "zk-c"];

/// Runs a command on service `zk` and waits until it succeeds.
async fn run_command(rest: &Rest, body: Value) -> Value {
    let cmd = rest.ok(Method::POST, "/clusters/prod/services/zk/commands", Some(body)).await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    let done = eventually(WAIT * 3, &format!("command {id} to finish"), || async {
        let c: Value = rest.get(&format!("/api/v1/commands/{id}")).await.ok()?;
        (c["state"] != "running").then_some(c)
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done
}

async fn roles(rest: &Rest) -> Vec<Value> {
    let v: Value = rest.get("/api/v1/clusters/prod/services/zk/roles").await.unwrap();
    v["items"].as_array().unwrap().clone()
}

async fn pids(rest: &Rest) -> HashMap<String, u64> {
    roles(rest)
        .await
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {r}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ensemble_keeps_quorum_through_rolling_restart() {
    init_logging();
    let parcels = [build_parcel("jre", None), build_parcel("zookeeper", None)];
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let flags = ["--heartbeat-interval", "300ms", "--host-lost-after", "5s", "--flush-interval", "200ms"];
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();
    let token = rest.enrollment_token(3, 600).await.unwrap();
    // Dropped after the agents (so none restarts a role it kills), before `tmp`.
    let _reaper = RoleReaper(root.to_path_buf());
    let agents: Vec<_> =
        HOSTS.iter().map(|h| start_agent(&root.join(h), &url, Some(&token), &["--hostname", h]).unwrap()).collect();
    let hosts = eventually(WAIT, "three healthy hosts", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == 3).then_some(hosts)
    })
    .await;
    let host_id = |name: &str| hosts.iter().find(|h| h["hostname"] == name).unwrap()["id"].as_str().unwrap().to_owned();

    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let ids: Vec<String> = HOSTS.iter().map(|h| host_id(h)).collect();
    install_parcels(&rest, "prod", &ids, &parcels).await;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    // zoo.cfg lists `server.N=<host address>:<peer>:<election>`: the address
    // is each agent's first non-loopback address, the same local address for
    // all three here, so peers reach each other on it without any override
    // (the descriptor has no parameter for it). Clients use 127.0.0.1: without
    // `clientPortAddress` ZooKeeper listens for them on every interface.
    let mut client_ports = [0u16; 3];
    for (i, host) in HOSTS.iter().enumerate() {
        let name = format!("zk-{}", i + 1);
        rest.ok(
            Method::POST,
            "/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_id": host_id(host), "name": name})),
        )
        .await;
        client_ports[i] = free_port();
        let values = json!({"client_port": client_ports[i], "peer_port": free_port(), "election_port": free_port()});
        rest.ok(
            Method::PATCH,
            "/clusters/prod/services/zk/config",
            Some(json!({"values": values, "message": format!("{name} on its own ports"), "role": name})),
        )
        .await;
    }

    // Start: all three servers run, and elect one leader.
    let started = run_command(&rest, json!({"name": "start"})).await;
    assert!(!started["steps"].as_array().unwrap().is_empty(), "{started}");
    for r in roles(&rest).await {
        assert_eq!((&r["status"], &r["health"]), (&json!("running"), &json!("good")), "{r}");
    }
    wait_for_quorum(&client_ports, WAIT, "one leader and two followers").await;
    let pids_before = pids(&rest).await;

    // A client keeps asking the servers while they restart one at a time.
    let client = Client::start(client_ports).await;
    let rolled = run_command(&rest, json!({"name": "rolling-restart"})).await;
    let rounds = client.finish().await;
    let seen = timeline(&rounds);
    if let Some(why) = rolling_restart_violation(&rounds) {
        panic!("{why}; rounds in which not all servers served:\n{seen}");
    }
    let down: Vec<usize> = (0..3).map(|i| rounds.iter().filter(|r| !r.up[i]).count()).collect();
    eprintln!(
        "rolling restart: {} client rounds, rounds down per server {down:?}, \
         at most {:?} without a serving server (leader election)\n{seen}",
        rounds.len(),
        longest_outage(&rounds)
    );
    assert_eq!(rolled["steps"].as_array().unwrap().len(), 3, "one server per batch: {rolled}");
    wait_for_quorum(&client_ports, WAIT, "one leader and two followers after the rolling restart").await;
    let pids_after = pids(&rest).await;
    for (name, pid) in &pids_before {
        assert_ne!(pids_after[name], *pid, "{name} was not restarted");
    }

    // Stop: the client ports close.
    run_command(&rest, json!({"name": "stop"})).await;
    for port in client_ports {
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "port {port} still open");
    }
    for r in roles(&rest).await {
        assert_eq!(r["status"], "stopped", "{r}");
    }
    for proc in std::iter::once(&manager.proc).chain(&agents) {
        let errors = proc.unexpected_errors(&[]);
        assert!(errors.is_empty(), "unexpected ERROR lines in {}:\n{}", proc.log.display(), errors.join("\n"));
    }
}
