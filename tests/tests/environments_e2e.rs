//! Environments on a real Docker engine, with real services from parcels.
//!
//! 1. `dev` from templates/stack.yaml comes up on six new agent containers in
//!    one call: ZooKeeper reaches quorum, the Redis replica replicates (with
//!    the password given as a variable), HTTP through the nginx `lb` reaches
//!    the `web` tier; the environment lists its containers and endpoints.
//!    Meanwhile `short` (ttl 1m) is reaped by the manager, with an event.
//!    `dev` goes down in one call leaving no container, volume, host record,
//!    cluster or usable token.
//! 2. An instantiation whose container never enrolls (the manager hands out a
//!    URL nothing listens on) fails at its first step; run again by a manager
//!    with the right URL, it replaces that container and completes.
//! 3. A snapshot of an environment with Redis data, taken while it runs, is
//!    brought up again as another environment: the data is there as it was at
//!    the snapshot. Deleting the snapshot removes its images and template.
//!
//! Whatever happens, a guard removes every container and volume the
//! managers made.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use drover_tests::docker::{DockerEnv, ManagerLeftovers, TEST_TAG, docker, ensure_images};
use drover_tests::parcels::{build_parcel, repo_root, upload_parcel, wait_command};
use drover_tests::procs::{ManagerProc, free_port};
use drover_tests::resp::{self, Reply};
use drover_tests::rest::Rest;
use drover_tests::zk::wait_for_quorum_at;
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(300);

/// One Redis primary on one host: the smallest environment.
const SOLO: &str = "\
name: solo
parcels:
  - {name: redis, version: 7.0.15-1}
services:
  - name: cache
    type: redis
    config: {bind: 0.0.0.0, protected_mode: false}
host_groups:
  - name: primary
    cardinality: 1
    roles:
      - {service: cache, role_type: primary}
";

/// Fields drop in order: the manager stops, the containers go, then the
/// network, then the data dir.
struct Setup {
    manager: ManagerProc,
    _leftovers: ManagerLeftovers,
    _env: DockerEnv,
    data: tempfile::TempDir,
    network: String,
    gateway: String,
    /// Environment names start with this (so containers do too).
    names: String,
    image: String,
}

fn manager(data: &std::path::Path, http: u16, gateway: &str, grpc: u16, extra: &[&str]) -> ManagerProc {
    let mut flags = vec!["--advertise", gateway, "--heartbeat-interval", "1s", "--env-reap-interval", "2s"];
    flags.extend_from_slice(extra);
    ManagerProc::start_on(&data.join("manager"), http, gateway, grpc, &flags).expect("start manager")
}

async fn setup(test: &str, extra: &[&str]) -> Setup {
    init_logging();
    ensure_images();
    let mut env = DockerEnv::new(test);
    let (network, gateway) = env.network("net").expect("create network");
    // Environment names are cluster names: lowercase, at most 63.
    let names = format!("{test}{:04x}-", rand::random::<u16>());
    let data = tempfile::tempdir().expect("tempdir");
    let mut m = manager(data.path(), free_port(), &gateway, free_port(), extra);
    m.wait_ready().await;
    Setup {
        manager: m,
        // Containers are named CLUSTER-GROUP-xxxxxx (the cluster cut to 20).
        _leftovers: ManagerLeftovers { prefix: names.chars().take(20).collect() },
        _env: env,
        data,
        network,
        gateway,
        names,
        image: format!("drover/agent:{TEST_TAG}"),
    }
}

async fn upload_template(rest: &Rest, yaml: String) {
    let resp = rest
        .request(Method::POST, "/api/v1/templates")
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("upload template");
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
}

/// The endpoint of `service`'s role type `role_type` (the first one).
fn endpoints<'a>(env: &'a Value, service: &str, role_type: &str) -> Vec<&'a Value> {
    env["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["service"] == service && e["role_type"] == role_type)
        .collect()
}

fn addr(endpoint: &Value, port: &str) -> SocketAddr {
    let ip = endpoint["address"].as_str().expect("address");
    let port = endpoint["ports"][port].as_u64().unwrap_or_else(|| panic!("no port {port} in {endpoint}"));
    format!("{ip}:{port}").parse().unwrap_or_else(|e| panic!("{ip}:{port}: {e}"))
}

fn containers_named(prefix: &str) -> Vec<String> {
    let filter = format!("name={prefix}");
    docker(["ps", "-aq", "--filter", &filter]).expect("docker ps").split_whitespace().map(str::to_owned).collect()
}

fn volumes_named(prefix: &str) -> Vec<String> {
    let filter = format!("name={prefix}");
    docker(["volume", "ls", "-q", "--filter", &filter])
        .expect("docker volume ls")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_of_the_stack_comes_up_on_containers_works_and_goes_down_leaving_nothing() {
    let s = setup("envs", &[]).await;
    let rest = s.manager.rest();
    let started = Instant::now();
    let parcels: Vec<PathBuf> = ["jre", "zookeeper", "redis", "nginx"].map(|p| build_parcel(p, None)).to_vec();
    for p in &parcels {
        upload_parcel(&rest, p).await;
    }
    eprintln!("== parcels built and uploaded in {:.1}s", started.elapsed().as_secs_f64());
    let stack = std::fs::read_to_string(repo_root().join("templates/stack.yaml")).expect("templates/stack.yaml");
    upload_template(&rest, stack).await;
    upload_template(&rest, SOLO.to_owned()).await;
    let (dev, short) = (format!("{}dev", s.names), format!("{}short", s.names));

    // `short` lives a minute; the reaper takes it down while dev comes up.
    let body = json!({"name": short, "template": "solo", "ttl": "1m", "image": s.image, "network": s.network});
    let (status, v) = rest.raw(Method::POST, "/api/v1/environments", Some(body)).await.unwrap();
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["owner"], "admin", "{v}");

    let up = Instant::now();
    let body = json!({
        "name": dev, "template": "stack", "ttl": "2h", "image": s.image, "network": s.network,
        "variables": {"cache_requirepass": "s3cret"},
    });
    let (status, v) = rest.raw(Method::POST, "/api/v1/environments", Some(body)).await.unwrap();
    assert_eq!(status, 202, "{v}");
    assert_eq!((&v["state"], &v["template"], &v["template_version"]), (&json!("creating"), &json!("stack"), &json!(1)));
    let cmd = wait_command(&rest, v["command_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(cmd["state"], "succeeded", "{cmd:#}");
    eprintln!("== environment {dev} (6 containers, 4 services) up in {:.1}s", up.elapsed().as_secs_f64());
    let first = &cmd["steps"][0];
    assert!(first["description"].as_str().unwrap().starts_with("create Docker containers"), "{first}");
    assert!(first["message"].as_str().unwrap().contains("6 containers enrolled and healthy"), "{first}");

    let env: Value = rest.get(&format!("/api/v1/environments/{dev}")).await.unwrap();
    assert_eq!((&env["state"], &env["hosts"]), (&json!("ready"), &json!(6)), "{env:#}");
    assert_eq!(env["containers"].as_array().unwrap().len(), 6, "{env:#}");
    assert!(env["expires_at"].is_string(), "{env:#}");

    // Redis: the replica replicates from the primary, both behind the password.
    let primary = addr(endpoints(&env, "cache", "primary")[0], "port");
    let replicas: Vec<SocketAddr> = endpoints(&env, "cache", "replica").iter().map(|e| addr(e, "port")).collect();
    assert_eq!(replicas.len(), 2, "{env:#}");
    assert_eq!(
        resp::command_auth_at(primary, "s3cret", &["SET", "greeting", "hello"]).await.expect("SET"),
        Reply::Simple("OK".into())
    );
    for replica in &replicas {
        eventually(WAIT, "the key to reach a replica", || async {
            let v = resp::command_auth_at(*replica, "s3cret", &["GET", "greeting"]).await.ok()?;
            (v.text().as_deref() == Some("hello")).then_some(())
        })
        .await;
    }
    // ZooKeeper: one leader and two followers.
    let zk: Vec<SocketAddr> = endpoints(&env, "zk", "server").iter().map(|e| addr(e, "client_port")).collect();
    assert_eq!(zk.len(), 3, "{env:#}");
    wait_for_quorum_at(&zk, WAIT, "one leader and two followers").await;
    // nginx: lb answers with the web tier's pages.
    let lb = addr(endpoints(&env, "lb", "server")[0], "port");
    let page = eventually(WAIT, "a web page through lb", || async move {
        let r = reqwest::get(format!("http://{lb}/")).await.ok()?;
        if r.status() != 200 {
            return None;
        }
        r.text().await.ok()
    })
    .await;
    assert!(page.contains(&format!("{dev}/web")), "lb answered {page:?}");

    let list: Value = rest.get("/api/v1/environments").await.unwrap();
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.contains(&dev.as_str()), "{list:#}");

    // The reaper took `short` down, with an event.
    eventually(Duration::from_secs(150), "the expired environment to be reaped", || async {
        let (status, _) = rest.raw(Method::GET, &format!("/api/v1/environments/{short}"), None).await.ok()?;
        (status == 404).then_some(())
    })
    .await;
    let events: Value = rest.get(&format!("/api/v1/events?object_type=environment&object_id={short}")).await.unwrap();
    let event = events["items"].as_array().unwrap().iter().find(|e| e["kind"] == "environment_expired").cloned();
    let event = event.unwrap_or_else(|| panic!("no environment_expired event for {short}: {events:#}"));
    assert!(event["message"].as_str().unwrap().contains("expired and was taken down"), "{event}");
    assert_eq!(containers_named(&format!("{short}-")), Vec::<String>::new());

    // Down: nothing is left.
    let down = Instant::now();
    let (status, t) = rest.raw(Method::DELETE, &format!("/api/v1/environments/{dev}"), None).await.unwrap();
    assert_eq!(status, 200, "{t}");
    eprintln!("== environment {dev} down in {:.1}s", down.elapsed().as_secs_f64());
    assert_eq!(t["services"].as_array().unwrap().len(), 4, "{t:#}");
    assert_eq!(t["containers"].as_array().unwrap().len(), 6, "{t:#}");
    assert_eq!(t["hosts"].as_array().unwrap().len(), 6, "{t:#}");
    assert_eq!(containers_named(&s.names[..20.min(s.names.len())]), Vec::<String>::new());
    assert_eq!(volumes_named(&s.names[..20.min(s.names.len())]), Vec::<String>::new());
    let hosts: Value = rest.get("/api/v1/hosts").await.unwrap();
    assert_eq!(hosts["items"], json!([]), "every host was an environment's: {hosts:#}");
    let (status, _) = rest.raw(Method::GET, &format!("/api/v1/clusters/{dev}"), None).await.unwrap();
    assert_eq!(status, 404);
    let tokens: Value = rest.get("/api/v1/enrollment-tokens").await.unwrap();
    for token in tokens["items"].as_array().unwrap() {
        assert!(!token["revoked_at"].is_null() || token["uses_left"] == 0, "a token still enrolls: {token}");
    }
    let list: Value = rest.get("/api/v1/environments").await.unwrap();
    assert_eq!(list["items"], json!([]));
    let audit: Value = rest.get("/api/v1/audit?object_type=environment").await.unwrap();
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    for want in ["environment.create", "environment.expire", "environment.delete"] {
        assert!(actions.contains(&want), "{want} not audited: {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instantiation_whose_container_never_enrolls_completes_when_run_again() {
    let nowhere = free_port();
    let mut s = setup("retry", &[]).await;
    // Restarted at once with a URL nothing listens on and a short wait (the
    // URL needs the network's gateway, known only now).
    let (http, grpc) = (s.manager.http_port, s.manager.grpc_port);
    let bad_url = format!("https://{}:{nowhere}", s.gateway);
    let extra = ["--docker-manager-url", bad_url.as_str(), "--provision-timeout", "8s"];
    s.manager.proc.terminate();
    s.manager = manager(s.data.path(), http, &s.gateway, grpc, &extra);
    s.manager.wait_ready().await;
    let rest = s.manager.rest();
    upload_parcel(&rest, &build_parcel("redis", None)).await;
    upload_template(&rest, SOLO.to_owned()).await;
    let cluster = format!("{}c", s.names);
    let body = json!({
        "cluster": cluster,
        "host_groups": {"primary": {"provider": "docker", "count": 1, "image": s.image, "network": s.network}},
    });

    let cmd = rest.ok(Method::POST, "/templates/solo/instantiate", Some(body.clone())).await;
    let done = wait_command(&rest, cmd["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["state"], "failed", "{done:#}");
    let first = &done["steps"][0];
    assert_eq!(first["state"], "failed", "{first}");
    assert!(first["message"].as_str().unwrap().contains("did not enroll as healthy hosts within 8s"), "{first}");
    assert!(done["steps"].as_array().unwrap()[1..].iter().all(|s| s["state"] == "skipped"), "{done:#}");
    let made: Value = rest.get("/api/v1/providers/docker/hosts").await.unwrap();
    let stale = made["items"][0]["name"].as_str().expect("the container of the first run").to_owned();
    assert!(made["items"][0]["host_id"].is_null(), "{made:#}");

    // The right URL now: the same instantiation replaces the container.
    s.manager.proc.terminate();
    s.manager = manager(s.data.path(), http, &s.gateway, grpc, &[]);
    s.manager.wait_ready().await;
    let cmd = rest.ok(Method::POST, "/templates/solo/instantiate", Some(body)).await;
    let done = wait_command(&rest, cmd["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let first = &done["steps"][0]["message"];
    assert!(first.as_str().unwrap().contains(&format!("replaced {stale}")), "{first}");
    let made: Value = rest.get("/api/v1/providers/docker/hosts").await.unwrap();
    let items = made["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{made:#}");
    assert_ne!(items[0]["name"], stale.as_str());
    assert_eq!(containers_named(&stale), Vec::<String>::new(), "the stale container is gone");
    let roles: Value = rest.get(&format!("/api/v1/clusters/{cluster}/services/cache/roles")).await.unwrap();
    let role = &roles["items"][0];
    assert_eq!((&role["status"], &role["host_id"]), (&json!("running"), &items[0]["host_id"]), "{roles:#}");
    let ip = eventually(Duration::from_secs(30), "the host's address", || async {
        let h: Value = rest.get(&format!("/api/v1/hosts/{}", role["host_id"].as_str()?)).await.ok()?;
        h["addresses"].as_array()?.first()?.as_str().map(str::to_owned)
    })
    .await;
    let primary: SocketAddr = format!("{ip}:6379").parse().unwrap();
    assert_eq!(resp::command_at(primary, &["PING"]).await.expect("PING"), Reply::Simple("PONG".into()));
    rest.ok(Method::DELETE, "/providers/docker/hosts?all=true", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_brings_an_environment_back_with_its_data() {
    let s = setup("snap", &[]).await;
    let rest = s.manager.rest();
    upload_parcel(&rest, &build_parcel("redis", None)).await;
    upload_template(&rest, SOLO.to_owned()).await;
    let (orig, copy, snap) = (format!("{}orig", s.names), format!("{}copy", s.names), format!("{}s1", s.names));
    let up = |name: &str, source: Value| {
        let mut body = json!({"name": name, "image": s.image, "network": s.network, "ttl": "1h"});
        body.as_object_mut().unwrap().extend(source.as_object().unwrap().clone());
        body
    };
    let primary_of = |env: &Value| addr(endpoints(env, "cache", "primary")[0], "port");

    let v = rest.ok(Method::POST, "/environments", Some(up(&orig, json!({"template": "solo"})))).await;
    let cmd = wait_command(&rest, v["command_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(cmd["state"], "succeeded", "{cmd:#}");
    let env: Value = rest.get(&format!("/api/v1/environments/{orig}")).await.unwrap();
    let primary = primary_of(&env);
    assert_eq!(resp::command_at(primary, &["SET", "greeting", "hello"]).await.unwrap(), Reply::Simple("OK".into()));
    // A snapshot takes files as they are on disk: Redis writes its dump first.
    assert_eq!(resp::command_at(primary, &["SAVE"]).await.unwrap(), Reply::Simple("OK".into()));

    let taken = Instant::now();
    let (status, sv) = rest
        .raw(Method::POST, &format!("/api/v1/environments/{orig}/snapshots"), Some(json!({"name": snap})))
        .await
        .unwrap();
    assert_eq!(status, 201, "{sv}");
    eprintln!("== snapshot of {orig} in {:.1}s", taken.elapsed().as_secs_f64());
    assert_eq!(sv["template"], format!("snapshot-{snap}"));
    assert_eq!(sv["hosts"][0]["image"], format!("drover-snapshot/{snap}:primary-1"), "{sv:#}");
    assert_eq!(sv["hosts"][0]["roles"], json!(["cache/primary"]));
    // Nothing stopped: the original still answers, and changes after the snapshot stay its own.
    assert_eq!(resp::command_at(primary, &["SET", "greeting", "changed"]).await.unwrap(), Reply::Simple("OK".into()));
    let (status, dup) = rest
        .raw(Method::POST, &format!("/api/v1/environments/{orig}/snapshots"), Some(json!({"name": snap})))
        .await
        .unwrap();
    assert_eq!(status, 409, "{dup}");
    let list: Value = rest.get("/api/v1/snapshots").await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list:#}");

    let v = rest.ok(Method::POST, "/environments", Some(up(&copy, json!({"from_snapshot": snap})))).await;
    assert_eq!(v["template"], format!("snapshot-{snap}"));
    let cmd = wait_command(&rest, v["command_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(cmd["state"], "succeeded", "{cmd:#}");
    let restore = cmd["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["description"].as_str().unwrap_or_default().starts_with("put the snapshot's role data back"));
    let restore = restore.unwrap_or_else(|| panic!("no restore step: {cmd:#}"));
    assert_eq!(restore["message"], "role data of 1 roles put back", "{restore}");
    let env: Value = rest.get(&format!("/api/v1/environments/{copy}")).await.unwrap();
    let restored = primary_of(&env);
    assert_ne!(restored, primary);
    let got = resp::command_at(restored, &["GET", "greeting"]).await.unwrap();
    assert_eq!(got.text().as_deref(), Some("hello"), "the data as it was at the snapshot");

    for name in [&orig, &copy] {
        rest.ok(Method::DELETE, &format!("/environments/{name}"), None).await;
    }
    let (status, _) = rest.raw(Method::DELETE, &format!("/api/v1/snapshots/{snap}"), None).await.unwrap();
    assert_eq!(status, 204);
    let images = docker(["images", "-q", &format!("drover-snapshot/{snap}")]).unwrap();
    assert_eq!(images.trim(), "", "the snapshot's images are gone");
    let (status, _) = rest.raw(Method::GET, &format!("/api/v1/templates/snapshot-{snap}"), None).await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(containers_named(&s.names[..20.min(s.names.len())]), Vec::<String>::new());
}
