//! End-to-end with the real binaries and a real Redis from the redis parcel:
//! a Redis primary and replica (group-level ports keep them apart on one
//! machine) run in cluster `prod` on two agents; the cluster is exported as a
//! template (YAML), uploaded as it is, stopped, and instantiated into cluster
//! `copy` on two other agents by one command (parcel distributed and
//! activated there too). The copy replicates, and each role's rendered
//! redis.conf is the original's apart from the cluster's name.

use std::path::Path;
use std::time::Duration;

use drover_tests::parcels::{build_parcel, install_parcels};
use drover_tests::procs::{ManagerProc, free_port, start_agent};
use drover_tests::resp;
use drover_tests::rest::Rest;
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

async fn finished(rest: &Rest, id: &str) -> Value {
    eventually(WAIT, &format!("command {id} to finish"), || async {
        let c: Value = rest.get(&format!("/api/v1/commands/{id}")).await.ok()?;
        (c["state"] != "running").then_some(c)
    })
    .await
}

/// `role type -> redis.conf` of a cluster's cache service, read from the
/// agents' role directories.
async fn confs(rest: &Rest, cluster: &str, dirs: &[(&str, &Path)]) -> Vec<(String, String)> {
    let v: Value = rest.get(&format!("/api/v1/clusters/{cluster}/services/cache/roles")).await.unwrap();
    let mut out = Vec::new();
    for r in v["items"].as_array().unwrap() {
        let hostname = r["hostname"].as_str().unwrap();
        let dir = dirs.iter().find(|(h, _)| *h == hostname).map(|(_, d)| *d).expect("an agent's data dir");
        let path = dir.join("roles").join(r["id"].as_str().unwrap()).join("redis.conf");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((r["role_type"].as_str().unwrap().to_owned(), text));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_redis_cluster_instantiated_on_other_hosts_renders_and_replicates_the_same() {
    init_logging();
    let redis_parcel = build_parcel("redis", None);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let flags = ["--heartbeat-interval", "300ms", "--host-lost-after", "5s", "--flush-interval", "200ms"];
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();
    let token = rest.enrollment_token(4, 600).await.unwrap();
    let names = ["redis-a", "redis-b", "redis-c", "redis-d"];
    let dirs: Vec<(&str, std::path::PathBuf)> = names.iter().map(|n| (*n, root.join(n))).collect();
    let _agents: Vec<_> =
        dirs.iter().map(|(n, d)| start_agent(d, &url, Some(&token), &["--hostname", n]).unwrap()).collect();
    let hosts = eventually(WAIT, "four healthy hosts", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == 4).then_some(hosts)
    })
    .await;
    let host_id = |name: &str| hosts.iter().find(|h| h["hostname"] == name).unwrap()["id"].as_str().unwrap().to_owned();

    // The original, built through the API.
    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    install_parcels(&rest, "prod", &[host_id("redis-a"), host_id("redis-b")], &[redis_parcel]).await;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let roles = json!([
        {"role_type": "primary", "host_id": host_id("redis-a")},
        {"role_type": "replica", "host_id": host_id("redis-b")},
    ]);
    rest.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(roles)).await;
    let (p_port, r_port) = (free_port(), free_port());
    for (rt, port) in [("primary", p_port), ("replica", r_port)] {
        let group = json!({"role_type": rt, "name": format!("{rt}-default")});
        let body = json!({"values": {"port": port}, "group": group, "message": "own port"});
        rest.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body)).await;
    }
    let body = json!({"values": {"maxmemory": "64mb"}, "message": "cap"});
    rest.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body)).await;
    let cmd = rest.ok(Method::POST, "/clusters/prod/services/cache/commands", Some(json!({"name": "start"}))).await;
    let done = finished(&rest, cmd["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let dir_of = |n: &str| dirs.iter().find(|(h, _)| *h == n).map(|(_, d)| d.as_path()).unwrap();
    let original = confs(&rest, "prod", &[("redis-a", dir_of("redis-a")), ("redis-b", dir_of("redis-b"))]).await;

    // Exported as YAML, uploaded as it is.
    let resp = rest.request(Method::GET, "/api/v1/clusters/prod/template?format=yaml").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let yaml = resp.text().await.unwrap();
    assert!(yaml.contains("name: redis") && yaml.contains("cache-primary"), "{yaml}");
    let resp = rest
        .request(Method::POST, "/api/v1/templates")
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());

    // The original stops (its ports are the copy's); the copy comes up on c and d.
    let cmd = rest.ok(Method::POST, "/clusters/prod/services/cache/commands", Some(json!({"name": "stop"}))).await;
    assert_eq!(finished(&rest, cmd["id"].as_str().unwrap()).await["state"], "succeeded");
    let body = json!({
        "cluster": "copy",
        "host_groups": {"cache-primary": {"hosts": ["redis-c"]}, "cache-replica": {"hosts": ["redis-d"]}},
    });
    let cmd = rest.ok(Method::POST, "/templates/prod/instantiate", Some(body)).await;
    let done = finished(&rest, cmd["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    assert_eq!(resp::command(p_port, &["SET", "greeting", "hello"]).await.unwrap(), resp::Reply::Simple("OK".into()));
    eventually(WAIT, "the key to reach the copy's replica", || async {
        let v = resp::command(r_port, &["GET", "greeting"]).await.ok()?;
        (v.text().as_deref() == Some("hello")).then_some(())
    })
    .await;
    let copy = confs(&rest, "copy", &[("redis-c", dir_of("redis-c")), ("redis-d", dir_of("redis-d"))]).await;
    let copy: Vec<(String, String)> =
        copy.into_iter().map(|(rt, text)| (rt, text.replace("copy/cache", "prod/cache"))).collect();
    assert_eq!(copy, original);
}
