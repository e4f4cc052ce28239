//! Containers as hosts, on a real Docker engine: the `drover/agent` image
//! built by `scripts/build-images.sh` from the agent under test, a real
//! manager on this machine, agent containers on a network the test creates.
//! Checks the facts a container reports (kind, container id, cgroup limits as
//! capacity), that a restarted container keeps its host identity, and that the
//! agent as PID 1 reaps orphans, restarts in place on SIGHUP, and also runs
//! under `docker run --init`.

use std::time::Duration;

use drover_tests::docker::{DockerEnv, TEST_TAG, docker, ensure_images};
use drover_tests::eventually;
use drover_tests::procs::{ManagerProc, free_port};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A manager whose gRPC endpoint containers on `network` can reach.
struct Setup {
    env: DockerEnv,
    network: String,
    manager: ManagerProc,
    manager_url: String,
    _data: tempfile::TempDir,
}

async fn setup(test: &str) -> Setup {
    ensure_images();
    let mut env = DockerEnv::new(test);
    let (network, gateway) = env.network("net").expect("create network");
    let data = tempfile::tempdir().expect("tempdir");
    let grpc_port = free_port();
    // The gateway is this machine's address on the container network; the
    // server certificate must name it for the agents to accept the manager.
    let mut manager = ManagerProc::start_on(
        &data.path().join("manager"),
        free_port(),
        &gateway,
        grpc_port,
        &["--advertise", &gateway, "--heartbeat-interval", "1s"],
    )
    .expect("start manager");
    manager.wait_ready().await;
    Setup { env, network, manager, manager_url: format!("https://{gateway}:{grpc_port}"), _data: data }
}

impl Setup {
    /// Starts an agent container with its own named volume for the identity.
    fn agent(&mut self, what: &str, token: &str, extra: &[&str]) -> String {
        let volume = self.env.volume(&format!("{what}-data"));
        let hostname = self.env.name(what);
        let manager = format!("DROVER_MANAGER={}", self.manager_url);
        let token = format!("DROVER_TOKEN={token}");
        let mount = format!("{volume}:/var/lib/drover-agent");
        let image = format!("drover/agent:{TEST_TAG}");
        let mut args =
            vec!["--network", &self.network, "--hostname", &hostname, "-e", &manager, "-e", &token, "-v", &mount];
        args.extend_from_slice(extra);
        args.push(&image);
        self.env.run(what, &args).expect("docker run agent")
    }

    /// The healthy host whose hostname is `name`, once there is one.
    async fn healthy_host(&self, name: &str) -> Value {
        let rest = self.manager.rest();
        eventually(WAIT, &format!("host {name} healthy"), || {
            let rest = rest.clone();
            async move {
                let hosts = rest.hosts(&format!("status=healthy&hostname={name}")).await.ok()?;
                hosts.into_iter().find(|h| h["hostname"] == name)
            }
        })
        .await
    }

    fn manager_errors(&self) -> Vec<String> {
        self.manager.proc.unexpected_errors(&[])
    }
}

fn inspect(container: &str, format: &str) -> String {
    docker(["inspect", "-f", format, container]).expect("docker inspect")
}

fn exec(container: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", container];
    args.extend_from_slice(cmd);
    docker(&args).expect("docker exec")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_containers_are_hosts_with_their_limits_and_keep_their_identity() {
    let mut s = setup("facts").await;
    let token = s.manager.rest().enrollment_token(3, 3600).await.expect("token");
    let limited = s.agent("limited", &token, &["--cpus", "1", "--memory", "256m"]);
    let plain = s.agent("plain", &token, &[]);
    let under_init = s.agent("init", &token, &["--init"]);

    let machine_cpus = std::thread::available_parallelism().map(|n| n.get() as u64).expect("cpus");
    let mut ids = Vec::new();
    for c in [&limited, &plain, &under_init] {
        let host = s.healthy_host(c).await;
        assert_eq!(host["kind"], "container", "{host:#}");
        let docker_id = inspect(c, "{{.Id}}");
        assert_eq!(host["container_id"], docker_id.as_str(), "{host:#}");
        assert_eq!(host["machine_cpu_cores"].as_u64(), Some(machine_cpus), "{host:#}");
        let machine_memory = host["machine_memory_bytes"].as_u64().expect("machine memory");
        if c == &limited {
            assert_eq!(host["cpu_cores"].as_u64(), Some(1), "{host:#}");
            assert_eq!(host["memory_bytes"].as_u64(), Some(256 << 20), "{host:#}");
            let evidence = host["capacity_evidence"].as_str().unwrap_or_default();
            assert!(evidence.contains("memory"), "{host:#}");
        } else {
            assert_eq!(host["cpu_cores"].as_u64(), Some(machine_cpus), "{host:#}");
            assert_eq!(host["memory_bytes"].as_u64(), Some(machine_memory), "{host:#}");
        }
        ids.push(host["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(s.manager.rest().hosts("").await.expect("hosts").len(), 3);

    // As PID 1 the agent runs itself as a child; under --init, tini is PID 1.
    let pid1 = |c: &str| exec(c, &["ps", "-o", "comm=", "-p", "1"]);
    assert_eq!(pid1(&limited), "drover-agent");
    assert_eq!(pid1(&under_init), "docker-init");

    // A restarted container comes back as the same host, from its volume.
    let before = s.manager.rest().get::<Value>(&format!("/api/v1/hosts/{}", ids[1])).await.expect("host");
    docker(["restart", "-t", "10", &plain]).expect("docker restart");
    let logs = eventually(WAIT, "agent started twice", || {
        let logs = s.env.logs(&plain);
        async move { (count(&logs, "drover agent starting") == 2).then_some(logs) }
    })
    .await;
    assert_eq!(count(&logs, "enrolling with the manager"), 1, "enrolled again after a restart:\n{logs}");
    let rest = s.manager.rest();
    let id = ids[1].clone();
    let previous = before["last_heartbeat_at"].clone();
    eventually(WAIT, "restarted host healthy with new heartbeats", || {
        let rest = rest.clone();
        let id = id.clone();
        let previous = previous.clone();
        async move {
            let host: Value = rest.get(&format!("/api/v1/hosts/{id}")).await.ok()?;
            (host["status"] == "healthy" && host["last_heartbeat_at"] != previous).then_some(())
        }
    })
    .await;
    let host = s.healthy_host(&plain).await;
    assert_eq!(host["id"], ids[1].as_str());
    assert_eq!(s.manager.rest().hosts("").await.expect("hosts").len(), 3, "a restart created a new host");

    assert_eq!(s.manager_errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_as_pid_1_reaps_orphans_and_restarts_on_sighup() {
    let mut s = setup("pid1").await;
    let token = s.manager.rest().enrollment_token(1, 3600).await.expect("token");
    let c = s.agent("agent", &token, &[]);
    let host = s.healthy_host(&c).await;

    // An orphan: the shell exits at once, its background sleep is re-parented
    // to PID 1 and exits a little later. Unless PID 1 reaps it, it stays a zombie.
    let pid = exec(&c, &["sh", "-c", "sleep 2 >/dev/null 2>&1 & echo $!"]);
    let ppid = exec(&c, &["ps", "-o", "ppid=", "-p", &pid]);
    assert_eq!(ppid.trim(), "1", "the orphan {pid} was not re-parented to PID 1");
    eventually(Duration::from_secs(20), "the orphan reaped (gone, not a zombie)", || {
        let table = exec(&c, &["ps", "-eo", "pid=,stat=,comm="]);
        let present = table.lines().any(|l| l.split_whitespace().next() == Some(pid.as_str()));
        let zombie = table.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|s| s.starts_with('Z')));
        async move { (!present && !zombie).then_some(()) }
    })
    .await;

    // SIGHUP restarts the agent inside the running container, same identity.
    // The agent proper: the drover-agent process whose parent is PID 1.
    let agent_pid = |c: &str| {
        let table = exec(c, &["ps", "-eo", "pid=,ppid=,comm="]);
        let agent = table.lines().find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [pid, "1", "drover-agent"] => Some(pid.to_owned()),
            _ => None,
        });
        agent.unwrap_or_else(|| panic!("no agent process under PID 1:\n{table}"))
    };
    let first = agent_pid(&c);
    docker(["kill", "-s", "HUP", &c]).expect("docker kill -s HUP");
    eventually(WAIT, "agent restarted by SIGHUP", || {
        let logs = s.env.logs(&c);
        async move { (count(&logs, "drover agent starting") == 2).then_some(()) }
    })
    .await;
    assert_eq!(inspect(&c, "{{.State.Running}} {{.RestartCount}}"), "true 0");
    assert_ne!(agent_pid(&c), first);
    let again = s.healthy_host(&c).await;
    assert_eq!(again["id"], host["id"]);

    // docker stop: SIGTERM reaches the agent through PID 1, which exits with its status.
    docker(["stop", "-t", "20", &c]).expect("docker stop");
    assert_eq!(inspect(&c, "{{.State.ExitCode}}"), "0", "{}", s.env.logs(&c));
    let logs = s.env.logs(&c);
    assert!(logs.contains("shutting down"), "{logs}");
    assert_eq!(s.manager_errors(), Vec::<String>::new());
}
