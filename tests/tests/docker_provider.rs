//! The Docker provider on a real Docker engine: a real manager on a test
//! network's gateway creates two agent containers with one REST call, they
//! enroll as container hosts with the requested labels, a ZooKeeper role pair
//! is placed on them by label selector, and one call removes the containers
//! and their volumes and decommissions the hosts. Refusals (an image the
//! engine lacks, a container it did not create) are checked too. Whatever
//! happens, a guard removes every container and volume the manager made.

use std::time::Duration;

use drover_tests::docker::{DockerEnv, ManagerLeftovers, TEST_TAG, docker, ensure_images};
use drover_tests::eventually;
use drover_tests::procs::{ManagerProc, free_port};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// A manager on a test network's gateway, and the names the test's
/// containers get. Fields drop in order: the manager stops, the containers it
/// made go, then the network, then the data dir.
struct Setup {
    manager: ManagerProc,
    _leftovers: ManagerLeftovers,
    _env: DockerEnv,
    _data: tempfile::TempDir,
    network: String,
    gateway: String,
    /// Name prefix for the containers the manager makes.
    prefix: String,
    image: String,
}

async fn setup(test: &str) -> Setup {
    ensure_images();
    let mut env = DockerEnv::new(test);
    let (network, gateway) = env.network("net").expect("create network");
    let prefix = env.name("h-");
    let data = tempfile::tempdir().expect("tempdir");
    let mut manager = ManagerProc::start_on(
        &data.path().join("manager"),
        free_port(),
        &gateway,
        free_port(),
        &["--advertise", &gateway, "--heartbeat-interval", "1s"],
    )
    .expect("start manager");
    manager.wait_ready().await;
    Setup {
        manager,
        _leftovers: ManagerLeftovers { prefix: prefix.clone() },
        _env: env,
        _data: data,
        network,
        gateway,
        prefix,
        image: format!("drover/agent:{TEST_TAG}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_brings_up_container_hosts_and_one_tears_them_down() {
    let s = setup("provider").await;
    let (manager, network, gateway, prefix, image) = (&s.manager, &s.network, &s.gateway, &s.prefix, &s.image);
    let rest = manager.rest();

    // An image the engine lacks is refused before anything is made.
    let (status, body) = rest
        .raw(
            Method::POST,
            "/api/v1/providers/docker/hosts",
            Some(json!({"count": 1, "image": "drover/agent:no-such-tag", "network": network, "name_prefix": prefix})),
        )
        .await
        .expect("POST");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "image drover/agent:no-such-tag not found on the engine; build it with scripts/build-images.sh"
    );

    // Two container hosts in one call.
    let (status, created) = rest
        .raw(
            Method::POST,
            "/api/v1/providers/docker/hosts",
            Some(json!({
                "count": 2, "image": image, "network": network, "labels": {"zk": "true"},
                "name_prefix": prefix, "memory": "256m", "cpus": 1
            })),
        )
        .await
        .expect("POST");
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["manager_url"], format!("https://{gateway}:{}", manager.grpc_port));
    let items = created["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2, "{created}");
    let token_labels =
        rest.get::<Value>("/api/v1/enrollment-tokens").await.expect("tokens")["items"][0]["labels"].clone();
    assert_eq!(token_labels, json!({"provider": "docker", "zk": "true"}));
    let mut container_ids = Vec::new();
    for c in &items {
        let id = c["id"].as_str().expect("id").to_owned();
        let name = c["name"].as_str().expect("name");
        assert!(name.starts_with(prefix.as_str()), "{c}");
        assert_eq!(c["container_status"], "running", "{c}");
        let labels = docker(["inspect", "-f", "{{json .Config.Labels}}", &id]).expect("inspect");
        let labels: Value = serde_json::from_str(&labels).expect("labels json");
        assert_eq!(labels["drover.owner"], c["owner"], "{labels}");
        assert_eq!(labels["drover.created_by"], "admin", "{labels}");
        assert!(labels["drover.created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{labels}");
        let mounts =
            docker(["inspect", "-f", "{{range .Mounts}}{{.Name}}:{{.Destination}}{{end}}", &id]).expect("inspect");
        assert_eq!(mounts, format!("{}:/var/lib/drover-agent", c["volume"].as_str().unwrap_or_default()));
        let memory = docker(["inspect", "-f", "{{.HostConfig.Memory}}", &id]).expect("inspect");
        assert_eq!(memory, (256u64 << 20).to_string());
        container_ids.push(id);
    }
    let owner = items[0]["owner"].as_str().expect("owner").to_owned();

    // Both enroll as healthy container hosts with the labels asked for.
    let hosts = eventually(WAIT, "2 healthy container hosts labelled zk=true", || {
        let rest = rest.clone();
        async move {
            let hosts = rest.hosts("status=healthy&label=zk%3Dtrue,provider%3Ddocker").await.ok()?;
            (hosts.len() == 2).then_some(hosts)
        }
    })
    .await;
    for h in &hosts {
        assert_eq!(h["kind"], "container", "{h}");
        assert!(container_ids.iter().any(|id| h["container_id"] == id.as_str()), "{h}");
        assert_eq!(h["memory_bytes"].as_u64(), Some(256 << 20), "{h}");
    }

    // The list shows the host each container became.
    let listed = eventually(WAIT, "containers listed with their hosts", || {
        let rest = rest.clone();
        async move {
            let v: Value = rest.get("/api/v1/providers/docker/hosts").await.ok()?;
            let items = v["items"].as_array()?.clone();
            (items.len() == 2 && items.iter().all(|c| c["host_status"] == "healthy")).then_some(items)
        }
    })
    .await;
    let mut host_ids: Vec<String> = listed.iter().map(|c| c["host_id"].as_str().expect("host_id").to_owned()).collect();
    host_ids.sort();

    // Placement by labels lands on exactly these two hosts.
    rest.raw(Method::POST, "/api/v1/clusters", Some(json!({"name": "prod"}))).await.expect("cluster");
    let (status, body) = rest
        .raw(Method::POST, "/api/v1/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"})))
        .await
        .expect("service");
    assert_eq!(status, 201, "{body}");
    let (status, placed) = rest
        .raw(
            Method::POST,
            "/api/v1/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_selector": "zk=true", "count": 2})),
        )
        .await
        .expect("roles");
    assert_eq!(status, 201, "{placed}");
    let mut placed_on: Vec<String> = placed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["host_id"].as_str().expect("host_id").to_owned())
        .collect();
    placed_on.sort();
    assert_eq!(placed_on, host_ids);
    let (status, body) = rest
        .raw(
            Method::POST,
            "/api/v1/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_selector": "zk=true", "count": 3})),
        )
        .await
        .expect("roles");
    // Valid by the schema, refused by the state of the fleet: 409.
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("needs 3 hosts matching zk=true; 2 match"));

    // A container this manager did not create is not in its list: 404.
    let (status, body) =
        rest.raw(Method::DELETE, "/api/v1/providers/docker/hosts/not-mine", None).await.expect("DELETE");
    assert_eq!(status, 404, "{body}");

    // One call tears everything down.
    let (status, removed) =
        rest.raw(Method::DELETE, "/api/v1/providers/docker/hosts?all=true", None).await.expect("DELETE all");
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["items"].as_array().map(Vec::len), Some(2), "{removed}");
    let label = format!("label=drover.owner={owner}");
    assert_eq!(docker(["ps", "-aq", "--filter", &label]).expect("docker ps"), "");
    assert_eq!(docker(["volume", "ls", "-q", "--filter", &label]).expect("docker volume ls"), "");
    for id in &host_ids {
        let h: Value = rest.get(&format!("/api/v1/hosts/{id}")).await.expect("host");
        assert_eq!(h["status"], "decommissioned", "{h}");
    }
    let v: Value = rest.get("/api/v1/providers/docker/hosts").await.expect("list");
    assert_eq!(v["items"], json!([]));
    let tokens: Value = rest.get("/api/v1/enrollment-tokens").await.expect("tokens");
    assert_eq!(tokens["items"][0]["state"], "revoked", "{tokens}");

    let audit: Value = rest.get("/api/v1/audit?object_type=container").await.expect("audit");
    let actions: Vec<&str> =
        audit["items"].as_array().expect("items").iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "provider.docker.create").count(), 2, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "provider.docker.delete").count(), 2, "{actions:?}");

    let errors = manager.proc.unexpected_errors(&[]);
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
}

/// Runs the `drover` CLI against the manager; returns (success, stdout, stderr).
fn drover_cli(manager: &ManagerProc, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(drover_tests::procs::bin("drover"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DROVER_URL", format!("http://127.0.0.1:{}", manager.http_port))
        .env("DROVER_PASSWORD", &manager.password)
        .args(args)
        .output()
        .expect("run drover");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `drover provider docker up` waits until the containers are healthy hosts
/// and prints them; `list` shows them; `down --all` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_brings_an_environment_up_and_down() {
    let s = setup("providercli").await;
    let (manager, network, prefix, image) = (&s.manager, &s.network, &s.prefix, &s.image);

    let (ok, out, err) = tokio::task::block_in_place(|| {
        drover_cli(
            manager,
            &[
                "provider",
                "docker",
                "up",
                "--count",
                "2",
                "--image",
                image,
                "--network",
                network,
                "--name-prefix",
                prefix,
                "--label",
                "env=cli",
                "--memory",
                "256m",
                "--timeout",
                "90s",
            ],
        )
    });
    assert!(ok, "provider docker up failed:\n{out}\n{err}");
    assert!(err.contains("2 of 2 container host(s) healthy"), "{err}");
    assert!(out.contains("2 host(s) up in") && out.matches(prefix.as_str()).count() >= 2, "{out}");
    let hosts = manager.rest().hosts("status=healthy&label=env=cli").await.expect("hosts");
    assert_eq!(hosts.len(), 2, "{hosts:#?}");
    assert!(hosts.iter().all(|h| h["memory_bytes"] == 256u64 << 20), "{hosts:#?}");

    let (ok, out, err) = tokio::task::block_in_place(|| drover_cli(manager, &["provider", "docker", "list"]));
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains("running") && l.contains("healthy")).count(), 2, "{out}");

    let (ok, out, err) = tokio::task::block_in_place(|| drover_cli(manager, &["provider", "docker", "down", "--all"]));
    assert!(ok, "provider docker down failed:\n{out}\n{err}");
    assert!(out.contains("removed 2 container host(s)"), "{out}");
    let left = docker(["ps", "-aq", "--filter", &format!("name={prefix}")]).expect("docker ps");
    assert!(left.is_empty(), "containers left: {left}");
    let decommissioned = manager.rest().hosts("status=decommissioned").await.expect("hosts");
    assert_eq!(decommissioned.len(), 2, "{decommissioned:#?}");
}
