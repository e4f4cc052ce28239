//! One cluster on real containers, end to end, driven through the REST API as
//! an operator would: a manager on this machine, three `drover/agent`
//! containers and one `drover/sshd` container (sshd only, like a VM) that the
//! manager bootstraps over SSH, on a network the test creates, each with a
//! fixed address.
//!
//! 0. The sshd host is bootstrapped with a key and a pinned host key and joins
//!    as a host like the others.
//! 1. A 3-server ZooKeeper ensemble and a Redis primary with a replica are
//!    deployed from parcels and checked from this process at the containers'
//!    addresses (one leader and two followers; a key written on the primary
//!    is read on the replica).
//! 2. A ZooKeeper setting changes and a rolling restart applies it while a
//!    client keeps polling the ensemble: quorum is never lost, and the new
//!    value is live on every server. Then (2b) nginx: `web` serves a page on
//!    two agent containers, `lb` on the SSH host balances over web's roles; a
//!    third web role appears in lb's upstream by itself and answers through
//!    lb, lb reloading, not restarting.
//! 3. A container is killed: its host turns `lost` with an event, its role is
//!    reported down with the reason; started again, it comes back by itself.
//! 4. A container is cut off from the network while its Redis replica gets a
//!    new setting and a restart: once reconnected, the agent converges by
//!    itself and the new value is live in the running process.
//! 5. The agent inside a container restarts (SIGHUP to PID 1): the roles keep
//!    running with the same pids and the new agent reports them; so does the
//!    agent on the SSH host, killed and started again by its supervisor.
//!
//! The phases share one [`Scenario`] (manager, Docker environment, hosts by
//! name), so more hosts (e.g. one bootstrapped over SSH) and more services can
//! join it. Everything Docker holds for the test is removed when it ends.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use drover_manager::model::{now_millis, rfc3339};
use drover_tests::docker::{DockerEnv, FixedNetwork, TEST_TAG, docker, ensure_images};
use drover_tests::parcels::{build_parcel, install_parcels, wait_command};
use drover_tests::procs::{ManagerProc, free_port};
use drover_tests::resp::{self, Reply};
use drover_tests::rest::Rest;
use drover_tests::ssh::{KeyPair, SshdOptions, bootstrap, enrolled_host_id, ensure_sshd_image, host_fingerprint};
use drover_tests::zk::{self, Client, Srvr, longest_outage, rolling_restart_violation, timeline, wait_for_quorum_at};
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

/// Per wait: JVMs starting in containers on two shared cores are slow.
const WAIT: Duration = Duration::from_secs(180);
/// The manager declares a host lost after this much silence.
const HOST_LOST_AFTER: &str = "3s";
/// The three agent containers, by hostname.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Where the roles run: one ZooKeeper server per node, the Redis primary on
/// node-a and its replica on node-b; node-c runs ZooKeeper only.
const ZK_SERVERS: [(&str, &str); 3] = [("zk-1", "node-a"), ("zk-2", "node-b"), ("zk-3", "node-c")];
const REDIS_PRIMARY: (&str, &str) = ("cache-primary", "node-a");
const REDIS_REPLICA: (&str, &str) = ("cache-replica", "node-b");
/// The host bootstrapped over SSH, and the nginx roles: web on two agent
/// containers (a third later on node-c), lb on the SSH host.
const SSH_HOST: &str = "edge";
const WEB: [(&str, &str); 3] = [("web-1", "node-a"), ("web-2", "node-b"), ("web-3", "node-c")];
const LB: (&str, &str) = ("lb-1", SSH_HOST);
const NGINX_PORT: u16 = 8080;
const ZK_CLIENT_PORT: u16 = 2181;
const REDIS_PORT: u16 = 6379;

/// A host of the scenario: a container running the agent.
#[derive(Debug, Clone)]
struct TestHost {
    hostname: String,
    /// The container's name (Docker's handle for kill, start, exec, ...).
    container: String,
    /// Its fixed address on the test network.
    ip: Ipv4Addr,
    /// Its id at the manager.
    id: String,
    /// Bootstrapped over SSH (drover/sshd): the agent logs to a file, not to
    /// the container's output, and runs under the supervisor, not as PID 1.
    via_ssh: bool,
}

/// The manager, the Docker environment and the hosts of the scenario.
/// Fields drop in order: the manager stops first, then the containers, the
/// network and the volumes go, then the manager's data dir.
struct Scenario {
    manager: ManagerProc,
    rest: Rest,
    env: DockerEnv,
    network: FixedNetwork,
    manager_url: String,
    hosts: BTreeMap<String, TestHost>,
    _data: tempfile::TempDir,
}

impl Scenario {
    /// Builds the images, creates the network and starts a manager on its
    /// gateway with short heartbeat and lost-host timings.
    async fn start() -> Scenario {
        ensure_images();
        ensure_sshd_image();
        let mut env = DockerEnv::new("cluster");
        let network = env.fixed_network("net").expect("create network");
        let gateway = network.gateway().to_string();
        let data = tempfile::tempdir().expect("tempdir");
        let grpc_port = free_port();
        let mut manager = ManagerProc::start_on(
            &data.path().join("manager"),
            free_port(),
            &gateway,
            grpc_port,
            &[
                "--advertise",
                &gateway,
                "--heartbeat-interval",
                "1s",
                "--host-lost-after",
                HOST_LOST_AFTER,
                "--flush-interval",
                "200ms",
            ],
        )
        .expect("start manager");
        manager.wait_ready().await;
        let rest = manager.rest();
        Scenario {
            manager,
            rest,
            env,
            network,
            manager_url: format!("https://{gateway}:{grpc_port}"),
            hosts: BTreeMap::new(),
            _data: data,
        }
    }

    /// Starts an agent container named for `hostname`, with its own volume
    /// and the next free address, and waits until it is a healthy host.
    async fn add_agent_container(&mut self, hostname: &str, token: &str) -> TestHost {
        let ip = self.network.ip(10 + self.hosts.len() as u8);
        let volume = self.env.volume(&format!("{hostname}-data"));
        let (ip_arg, mount) = (ip.to_string(), format!("{volume}:/var/lib/drover-agent"));
        let (manager, token) = (format!("DROVER_MANAGER={}", self.manager_url), format!("DROVER_TOKEN={token}"));
        let image = format!("drover/agent:{TEST_TAG}");
        let args = [
            "--network",
            &self.network.name,
            "--ip",
            &ip_arg,
            "--hostname",
            hostname,
            "-e",
            &manager,
            "-e",
            &token,
            "-v",
            &mount,
            &image,
        ];
        let container = self.env.run(hostname, &args).expect("docker run agent");
        let rest = &self.rest;
        let host = eventually(WAIT, &format!("host {hostname} healthy"), || async move {
            let hosts = rest.hosts(&format!("status=healthy&hostname={hostname}")).await.ok()?;
            hosts.into_iter().find(|h| h["hostname"] == hostname)
        })
        .await;
        assert_eq!(host["kind"], "container", "{host:#}");
        let addresses = host["addresses"].to_string();
        assert!(addresses.contains(&ip.to_string()), "{hostname} does not report {ip}: {host:#}");
        let host = TestHost {
            hostname: hostname.to_owned(),
            container,
            ip,
            id: host["id"].as_str().expect("host id").to_owned(),
            via_ssh: false,
        };
        self.hosts.insert(hostname.to_owned(), host.clone());
        host
    }

    /// Starts a `drover/sshd` container (no agent, no systemd) at the next
    /// free address and has the manager bootstrap it over SSH: key login as
    /// an unprivileged user with sudo, the host key pinned to the fingerprint
    /// the container printed. Waits until it is a healthy host.
    async fn add_ssh_host(&mut self, hostname: &str) -> TestHost {
        let ip = self.network.ip(10 + self.hosts.len() as u8);
        let key = KeyPair::generate(self._data.path());
        let ip_arg = ip.to_string();
        let opts = SshdOptions {
            user: Some("ops"),
            authorized_key: Some(&key.public),
            sudo: true,
            docker_args: ["--network", &self.network.name, "--ip", &ip_arg, "--hostname", hostname]
                .map(str::to_owned)
                .to_vec(),
            ..Default::default()
        };
        let container = drover_tests::ssh::start_sshd(&mut self.env, hostname, &opts);
        drover_tests::ssh::wait_for_sshd(&ip_arg).await;
        let fingerprint = host_fingerprint(&self.env, &container).await;
        let cmd = bootstrap(
            &self.rest,
            json!({
                "addresses": [ip_arg],
                "user": "ops",
                "auth": {"private_key": key.private_pem()},
                "host_key_fingerprints": {ip_arg.clone(): fingerprint},
                "labels": {"via": "ssh"},
            }),
        )
        .await;
        assert_eq!(cmd["state"], "succeeded", "bootstrap of {hostname}: {cmd:#}");
        let step = &cmd["steps"][0];
        assert!(step["message"].as_str().unwrap_or_default().contains(&format!("host key {fingerprint} (pinned)")));
        let id = enrolled_host_id(step).expect("host id in the bootstrap step");
        let h = self.get(&format!("/hosts/{id}")).await;
        assert_eq!((h["status"].as_str(), h["hostname"].as_str()), (Some("healthy"), Some(hostname)), "{h:#}");
        assert_eq!((h["kind"].as_str(), h["labels"]["via"].as_str()), (Some("container"), Some("ssh")), "{h:#}");
        let host = TestHost { hostname: hostname.to_owned(), container, ip, id, via_ssh: true };
        self.hosts.insert(hostname.to_owned(), host.clone());
        host
    }

    fn host(&self, hostname: &str) -> &TestHost {
        self.hosts.get(hostname).unwrap_or_else(|| panic!("no host {hostname} in the scenario"))
    }

    fn host_ids(&self) -> Vec<String> {
        self.hosts.values().map(|h| h.id.clone()).collect()
    }

    /// A REST call under `/api/v1` that must succeed; returns the body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) =
            self.rest.raw(method.clone(), &format!("/api/v1{path}"), body).await.expect("REST call to the manager");
        assert!((200..300).contains(&status), "{method} {path}: HTTP {status}: {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None).await
    }

    /// Places a role of `svc` on the host named `hostname`.
    async fn add_role(&self, svc: &str, role_type: &str, name: &str, hostname: &str) {
        let body = json!({"role_type": role_type, "host_id": self.host(hostname).id, "name": name});
        self.call(Method::POST, &format!("/clusters/prod/services/{svc}/roles"), Some(body)).await;
    }

    /// A configuration change of `svc` (at role level when `role` is given);
    /// returns the new revision.
    async fn patch_config(&self, svc: &str, values: Value, role: Option<&str>, message: &str) -> u64 {
        let mut body = json!({"values": values, "message": message});
        if let Some(role) = role {
            body["role"] = json!(role);
        }
        let v = self.call(Method::PATCH, &format!("/clusters/prod/services/{svc}/config"), Some(body)).await;
        v["revision"].as_u64().unwrap_or_else(|| panic!("no revision in {v}"))
    }

    /// Starts a command on `svc`; returns its id.
    async fn start_command(&self, svc: &str, body: Value) -> String {
        let cmd = self.call(Method::POST, &format!("/clusters/prod/services/{svc}/commands"), Some(body)).await;
        cmd["id"].as_str().expect("command id").to_owned()
    }

    /// Runs a command on `svc` and waits until it has succeeded.
    async fn run_command(&self, svc: &str, body: Value) -> Value {
        let id = self.start_command(svc, body).await;
        let done = wait_command(&self.rest, &id, WAIT).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
        done
    }

    async fn roles(&self, svc: &str) -> Vec<Value> {
        self.get(&format!("/clusters/prod/services/{svc}/roles")).await["items"].as_array().expect("items").clone()
    }

    async fn role(&self, svc: &str, name: &str) -> Value {
        self.get(&format!("/clusters/prod/services/{svc}/roles/{name}")).await
    }

    /// Waits until the role's view satisfies `ok`; returns it.
    async fn wait_role(&self, svc: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, &format!("{name}: {what}"), || async {
            let r = self.role(svc, name).await;
            ok(&r).then_some(r)
        })
        .await
    }

    /// Waits until `GET /hosts/{id}` shows `status`; returns the host.
    async fn wait_host_status(&self, hostname: &str, status: &str) -> Value {
        let path = format!("/hosts/{}", self.host(hostname).id);
        eventually(WAIT, &format!("host {hostname} {status}"), || async {
            let h = self.get(&path).await;
            (h["status"] == status).then_some(h)
        })
        .await
    }

    /// Waits until the host has an event of `kind`; returns it.
    async fn wait_event(&self, hostname: &str, kind: &str) -> Value {
        let path = format!("/events?object_type=host&object_id={}", self.host(hostname).id);
        eventually(WAIT, &format!("a {kind} event for {hostname}"), || async {
            let events = self.get(&path).await;
            events["items"].as_array()?.iter().find(|e| e["kind"] == kind).cloned()
        })
        .await
    }

    fn zk_addr(&self, hostname: &str) -> SocketAddr {
        SocketAddr::from((self.host(hostname).ip, ZK_CLIENT_PORT))
    }

    /// The ZooKeeper servers' client addresses, in ZK_SERVERS order.
    fn zk_addrs(&self) -> [SocketAddr; 3] {
        ZK_SERVERS.map(|(_, node)| self.zk_addr(node))
    }

    fn redis_addr(&self, hostname: &str) -> SocketAddr {
        SocketAddr::from((self.host(hostname).ip, REDIS_PORT))
    }

    /// `docker exec` in the host's container; returns stdout.
    fn exec(&self, hostname: &str, cmd: &[&str]) -> String {
        let host = self.host(hostname);
        let mut args = vec!["exec", &host.container];
        args.extend_from_slice(cmd);
        docker(&args).unwrap_or_else(|e| panic!("{cmd:?} on {}: {e}", host.hostname))
    }

    /// The pid of the agent proper in the container: the drover-agent whose
    /// parent is PID 1 (the init half of the same binary).
    fn agent_pid(&self, hostname: &str) -> Option<String> {
        let table = self.exec(hostname, &["ps", "-eo", "pid=,ppid=,comm="]);
        table.lines().find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [pid, "1", "drover-agent"] => Some(pid.to_owned()),
            _ => None,
        })
    }

    /// The command name and start time of a process in the container, or
    /// None once it is gone.
    fn process(&self, hostname: &str, pid: u64) -> Option<String> {
        let mut args = vec!["exec", &self.host(hostname).container];
        let pid = pid.to_string();
        args.extend_from_slice(&["ps", "-o", "comm=,lstart=", "-p", &pid]);
        docker(&args).ok().filter(|s| !s.is_empty())
    }

    fn agent_starts(&self, hostname: &str) -> usize {
        self.env.logs(&self.host(hostname).container).matches("drover agent starting").count()
    }

    fn manager_errors(&self) -> Vec<String> {
        self.manager.proc.unexpected_errors(&[])
    }

    /// ERROR lines in the agents' logs, each prefixed with its host.
    fn agent_errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.hosts.values() {
            let logs = if h.via_ssh {
                self.exec(&h.hostname, &["cat", "/var/log/drover-agent.log"])
            } else {
                self.env.logs(&h.container)
            };
            out.extend(logs.lines().filter(|l| l.contains(" ERROR ")).map(|l| format!("{}: {l}", h.hostname)));
        }
        out
    }
}

/// What a ZooKeeper server says to `mntr`, as key → value.
async fn mntr(addr: SocketAddr) -> HashMap<String, String> {
    let text = resp::four_letter_word_at(addr, "mntr").await.unwrap_or_default();
    text.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_owned(), v.trim().to_owned())).collect()
}

/// A `key=value` line of a server's `conf` answer.
async fn zk_conf(addr: SocketAddr, key: &str) -> Option<String> {
    let text = resp::four_letter_word_at(addr, "conf").await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(|v| v.trim().to_owned())
}

/// `INFO replication` of a Redis server, as field → value.
async fn replication(addr: SocketAddr) -> HashMap<String, String> {
    let reply = resp::command_at(addr, &["INFO", "replication"]).await.ok().and_then(|r| r.text()).unwrap_or_default();
    reply.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_owned(), v.trim().to_owned())).collect()
}

fn parcels() -> Vec<PathBuf> {
    ["jre", "zookeeper", "redis", "nginx"].map(|p| build_parcel(p, None)).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_containers_survives_restarts_kills_and_partitions() {
    init_logging();
    let started = Instant::now();
    let parcels = parcels();
    eprintln!("== parcels built in {:.1}s", started.elapsed().as_secs_f64());
    let mut phase = Instant::now();
    let mut lap = |name: &str| {
        eprintln!("== {name} in {:.1}s", phase.elapsed().as_secs_f64());
        phase = Instant::now();
    };
    let mut s = Scenario::start().await;
    let token = s.rest.enrollment_token(NODES.len() as u32, 3600).await.expect("token");
    for node in NODES {
        s.add_agent_container(node, &token).await;
    }
    lap("manager and 3 agent containers up");
    // Phase 0: a machine that only runs sshd becomes a host too.
    s.add_ssh_host(SSH_HOST).await;
    lap("phase 0: sshd container bootstrapped over SSH");

    // Phase 1: deploy from parcels and check the services from outside.
    s.call(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    install_parcels(&s.rest, "prod", &s.host_ids(), &parcels).await;
    deploy_zookeeper(&s).await;
    deploy_redis(&s).await;
    lap("phase 1: ZooKeeper and Redis deployed");

    // Phase 2: a ZooKeeper setting rolled out under a polling client.
    zookeeper_rolling_config_change(&s).await;
    lap("phase 2: rolling configuration change");

    // Phase 2b: nginx on the SSH host balances over another service's roles.
    nginx_upstream_follows_web_roles(&s).await;
    lap("phase 2b: nginx upstream rendered from web's roles");

    // Phase 3: a killed container is lost, then comes back.
    killed_host_is_lost_and_comes_back(&s, "node-c").await;
    lap("phase 3: container killed and started again");

    // Phase 4: a partitioned host converges once it reconnects.
    partitioned_host_converges_after_reconnect(&s, "node-b").await;
    lap("phase 4: network partition");

    // Phase 5: the agent restarts inside a container; its roles do not.
    agent_restart_keeps_roles_running(&s, "node-a").await;
    ssh_host_agent_restart_keeps_lb_running(&s).await;
    lap("phase 5: agent restarts");

    let errors = s.manager_errors();
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
    let errors = s.agent_errors();
    assert!(errors.is_empty(), "unexpected ERROR lines in the agents' logs:\n{}", errors.join("\n"));
    eprintln!("scenario finished in {:.1}s", started.elapsed().as_secs_f64());
}

/// Three servers, one per container, on the default ports (each container has
/// its own address, and zoo.cfg lists each server at its host's address).
async fn deploy_zookeeper(s: &Scenario) {
    s.call(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    s.patch_config(
        "zk",
        json!({"heap_size": "256mb", "four_letter_words": "srvr,ruok,stat,mntr,conf"}),
        None,
        "small heaps; conf for checking settings",
    )
    .await;
    for (name, node) in ZK_SERVERS {
        s.add_role("zk", "server", name, node).await;
    }
    s.run_command("zk", json!({"name": "start"})).await;
    let addrs = s.zk_addrs();
    wait_for_quorum_at(&addrs, WAIT, "one leader and two followers").await;
    // The leader has both followers in sync.
    let leader = eventually(WAIT, "the leader to count two synced followers", || async {
        for addr in addrs {
            let m = mntr(addr).await;
            if m.get("zk_server_state").map(String::as_str) == Some("leader")
                && m.get("zk_synced_followers").map(String::as_str) == Some("2")
            {
                return Some(addr);
            }
        }
        None
    })
    .await;
    eprintln!("zookeeper: leader at {leader}");
    for r in s.roles("zk").await {
        assert_eq!((&r["status"], &r["health"]), (&json!("running"), &json!("good")), "{r:#}");
    }
}

/// A primary and a replica on two containers, listening on every address so
/// the replica reaches the primary and this process reaches both.
async fn deploy_redis(s: &Scenario) {
    s.call(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    // Without a password, Redis 7 refuses clients from other hosts (the
    // replica included) unless protected mode is off.
    s.patch_config(
        "cache",
        json!({"bind": "0.0.0.0", "protected_mode": false}),
        None,
        "serve the other containers; the test network is private",
    )
    .await;
    s.add_role("cache", "primary", REDIS_PRIMARY.0, REDIS_PRIMARY.1).await;
    s.add_role("cache", "replica", REDIS_REPLICA.0, REDIS_REPLICA.1).await;
    s.run_command("cache", json!({"name": "start"})).await;
    let (primary, replica) = (s.redis_addr(REDIS_PRIMARY.1), s.redis_addr(REDIS_REPLICA.1));

    assert_eq!(
        resp::command_at(primary, &["SET", "greeting", "hello"]).await.expect("SET"),
        Reply::Simple("OK".into())
    );
    eventually(WAIT, "the key to reach the replica", || async {
        let v = resp::command_at(replica, &["GET", "greeting"]).await.ok()?;
        (v.text().as_deref() == Some("hello")).then_some(())
    })
    .await;
    let on_replica = replication(replica).await;
    assert_eq!(on_replica.get("role").map(String::as_str), Some("slave"), "{on_replica:?}");
    assert_eq!(on_replica.get("master_host"), Some(&s.host(REDIS_PRIMARY.1).ip.to_string()), "{on_replica:?}");
    assert_eq!(on_replica.get("master_link_status").map(String::as_str), Some("up"), "{on_replica:?}");
    let on_primary = replication(primary).await;
    assert_eq!(on_primary.get("connected_slaves").map(String::as_str), Some("1"), "{on_primary:?}");
    let slave = on_primary.get("slave0").cloned().unwrap_or_default();
    assert!(slave.contains(&format!("ip={}", s.host(REDIS_REPLICA.1).ip)), "{on_primary:?}");
}

/// tickTime changes through a new revision; a rolling restart applies it one
/// server at a time while a client polls the ensemble.
async fn zookeeper_rolling_config_change(s: &Scenario) {
    let addrs = s.zk_addrs();
    for addr in addrs {
        assert_eq!(zk_conf(addr, "tickTime").await.as_deref(), Some("2000"), "{addr}");
    }
    let revision = s.patch_config("zk", json!({"tick_time": 1000}), None, "faster ticks").await;
    s.wait_role("zk", "zk-3", "stale with the new revision applied", |r| {
        r["stale"] == true && r["applied_revision"] == revision
    })
    .await;

    let client = Client::start_at(addrs).await;
    let rolled = s.run_command("zk", json!({"name": "rolling-restart", "stale_only": true})).await;
    let rounds = client.finish().await;
    let seen = timeline(&rounds);
    if let Some(why) = rolling_restart_violation(&rounds) {
        panic!("{why}; rounds in which not all servers served:\n{seen}");
    }
    let outage = longest_outage(&rounds);
    eprintln!("rolling restart: {} client rounds, at most {outage:?} with no server serving\n{seen}", rounds.len());
    // Generous: a leader election takes seconds at most, even on a busy machine.
    assert!(outage < Duration::from_secs(60), "no server served for {outage:?}:\n{seen}");
    assert_eq!(rolled["steps"].as_array().map(Vec::len), Some(3), "one server per step: {rolled:#}");

    wait_for_quorum_at(&addrs, WAIT, "one leader and two followers after the rolling restart").await;
    for addr in addrs {
        assert_eq!(zk_conf(addr, "tickTime").await.as_deref(), Some("1000"), "{addr}");
    }
    for r in s.roles("zk").await {
        assert_eq!(r["running_revision"], revision, "{r:#}");
        assert_eq!(r["stale"], false, "{r:#}");
    }
}

/// `docker kill`: the host turns lost with an event and its role is reported
/// down, naming the host; `docker start`: the agent comes back by itself and
/// restarts the role from the last desired state it kept.
async fn killed_host_is_lost_and_comes_back(s: &Scenario, node: &str) {
    let host = s.host(node);
    let (server, _) = ZK_SERVERS.iter().find(|(_, n)| *n == node).copied().expect("a zk server on the node");
    docker(["kill", &host.container]).expect("docker kill");

    let lost = s.wait_host_status(node, "lost").await;
    let event = s.wait_event(node, "host_lost").await;
    assert_eq!(event["severity"], "critical", "{event:#}");
    let role = s.wait_role("zk", server, "reported down", |r| r["status"] == "unknown").await;
    assert_eq!(role["health"], "bad", "{role:#}");
    let why = role["last_error"].as_str().unwrap_or_default();
    let since = why
        .strip_prefix(&format!("host {node} ({}) is lost: no heartbeat since ", host.id))
        .unwrap_or_else(|| panic!("last_error does not name the lost host: {role:#}"));
    assert_eq!(since, lost["last_heartbeat_at"].as_str().unwrap_or_default(), "{role:#}\n{lost:#}");
    assert_eq!(s.get("/clusters/prod/services/zk").await["health"], "concerning");
    // Two of three servers still make a quorum.
    let others: Vec<SocketAddr> = NODES.iter().filter(|n| **n != node).map(|n| s.zk_addr(n)).collect();
    eventually(WAIT, "the two other servers serving", || async {
        let mut modes = Vec::new();
        for addr in &others {
            let Srvr::Serving(mode) = zk::srvr_at(*addr).await else { return None };
            modes.push(mode);
        }
        modes.sort();
        (modes == ["follower", "leader"]).then_some(())
    })
    .await;

    docker(["start", &host.container]).expect("docker start");
    s.wait_host_status(node, "healthy").await;
    s.wait_event(node, "host_recovered").await;
    s.wait_role("zk", server, "running and healthy again", |r| r["status"] == "running" && r["health"] == "good").await;
    wait_for_quorum_at(&s.zk_addrs(), WAIT, "three members again").await;
    assert_eq!(s.get("/clusters/prod/services/zk").await["health"], "good");
}

/// `docker network disconnect`: while the host is away, its Redis replica
/// gets a new maxmemory and a restart. `docker network connect` (same
/// address): the agent reconnects by itself, receives the desired state it
/// missed and applies it; the new value is live in the running process.
async fn partitioned_host_converges_after_reconnect(s: &Scenario, node: &str) {
    assert_eq!(node, REDIS_REPLICA.1, "the partitioned host must hold the replica");
    let host = s.host(node);
    let (primary, replica) = (s.redis_addr(REDIS_PRIMARY.1), s.redis_addr(REDIS_REPLICA.1));
    assert_eq!(resp::config_get_at(replica, "maxmemory").await.expect("CONFIG GET"), "0");
    docker(["network", "disconnect", &s.network.name, &host.container]).expect("docker network disconnect");

    s.wait_host_status(node, "lost").await;
    let role = s.wait_role("cache", REDIS_REPLICA.0, "reported down", |r| r["status"] == "unknown").await;
    assert_eq!(role["health"], "bad", "{role:#}");
    assert!(role["last_error"].as_str().is_some_and(|e| e.contains(" is lost: ")), "{role:#}");
    // Writes go on on the primary meanwhile.
    assert_eq!(
        resp::command_at(primary, &["SET", "partition", "missed"]).await.expect("SET"),
        Reply::Simple("OK".into())
    );

    // Desired state changes while the host is away: a role-level setting and
    // a restart to apply it. The command waits for the host.
    let revision =
        s.patch_config("cache", json!({"maxmemory": "64mb"}), Some(REDIS_REPLICA.0), "cap the replica").await;
    let command = s.start_command("cache", json!({"name": "restart", "roles": [REDIS_REPLICA.0]})).await;
    let c = s.get(&format!("/commands/{command}")).await;
    assert_eq!(c["state"], "running", "{c:#}");

    let ip = host.ip.to_string();
    docker(["network", "connect", "--ip", &ip, &s.network.name, &host.container]).expect("docker network connect");
    s.wait_host_status(node, "healthy").await;
    let done = wait_command(&s.rest, &command, WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");

    assert_eq!(resp::config_get_at(replica, "maxmemory").await.expect("CONFIG GET"), (64u64 << 20).to_string());
    assert_eq!(resp::config_get_at(primary, "maxmemory").await.expect("CONFIG GET"), "0");
    let role = s.role("cache", REDIS_REPLICA.0).await;
    assert_eq!((&role["status"], &role["health"]), (&json!("running"), &json!("good")), "{role:#}");
    assert_eq!(
        (&role["applied_revision"], &role["running_revision"]),
        (&json!(revision), &json!(revision)),
        "{role:#}"
    );
    assert_eq!(role["stale"], false, "{role:#}");
    assert_eq!(role["last_error"], "", "{role:#}");
    // Replication resumes, with what was written during the partition.
    eventually(WAIT, "the replica to catch up", || async {
        let v = resp::command_at(replica, &["GET", "partition"]).await.ok()?;
        let link = replication(replica).await.get("master_link_status").cloned();
        (v.text().as_deref() == Some("missed") && link.as_deref() == Some("up")).then_some(())
    })
    .await;
    // The ZooKeeper server there rejoined too.
    wait_for_quorum_at(&s.zk_addrs(), WAIT, "three members after the partition").await;
}

/// SIGHUP to PID 1 restarts the agent proper only: the role processes keep
/// their pids, keep answering, and the new agent reports them running.
async fn agent_restart_keeps_roles_running(s: &Scenario, node: &str) {
    let host = s.host(node);
    let on_node: Vec<(&str, &str)> = [("cache", REDIS_PRIMARY.0), ("zk", "zk-1")].to_vec();
    assert_eq!(REDIS_PRIMARY.1, node);
    let mut before = HashMap::new();
    for (svc, name) in &on_node {
        let r = s.role(svc, name).await;
        assert_eq!(r["status"], "running", "{r:#}");
        let pid = r["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {r:#}"));
        let process = s.process(node, pid).unwrap_or_else(|| panic!("{name}: no process {pid} in {}", host.container));
        before.insert(*name, (pid, process));
    }
    let agent = s.agent_pid(node).expect("the agent process");
    let starts = s.agent_starts(node);
    // The manager's times are RFC 3339 UTC with milliseconds: they sort as text.
    let restarted_at = rfc3339(now_millis());

    docker(["kill", "--signal", "HUP", &host.container]).expect("docker kill --signal HUP");
    eventually(WAIT, "a new agent process", || async {
        (s.agent_starts(node) > starts && s.agent_pid(node).is_some_and(|p| p != agent)).then_some(())
    })
    .await;
    // The services answer meanwhile.
    let primary = s.redis_addr(node);
    assert_eq!(resp::command_at(primary, &["GET", "greeting"]).await.expect("GET").text().as_deref(), Some("hello"));
    assert!(matches!(zk::srvr_at(s.zk_addr(node)).await, Srvr::Serving(_)));

    // The new agent adopts the processes and reports them; their health is
    // unknown until its first probes pass.
    for (svc, name) in &on_node {
        let r = s
            .wait_role(svc, name, "reported running and healthy by the new agent", |r| {
                r["status"] == "running"
                    && r["health"] == "good"
                    && r["updated_at"].as_str().is_some_and(|t| t >= restarted_at.as_str())
            })
            .await;
        let (pid, process) = &before[name];
        assert_eq!(r["pid"].as_u64(), Some(*pid), "{name} has another pid after the agent restart: {r:#}");
        assert_eq!(r["restart_count"], 0, "{r:#}");
        assert_eq!(s.process(node, *pid).as_ref(), Some(process), "{name}: process {pid} is not the same one");
    }
    assert_eq!(
        docker(["inspect", "-f", "{{.State.Running}} {{.RestartCount}}", &host.container]).expect("inspect"),
        "true 0"
    );
    s.wait_host_status(node, "healthy").await;
}

/// The backend named by a web page (`web-1 on node-a (service prod/web)`).
fn backend(page: &str) -> String {
    page.split_whitespace().next().unwrap_or_default().to_owned()
}

/// GETs through lb until every one of `want` has answered; fails on an
/// answer that is not a web page. Returns how many requests it took.
async fn wait_for_backends(lb: SocketAddr, want: &[&str]) -> usize {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let mut requests = 0;
    eventually(WAIT, &format!("answers through lb from {want:?}"), || {
        requests += 1;
        let request = client.get(format!("http://{lb}/")).send();
        let seen = &seen;
        async move {
            if let Ok(r) = request.await
                && r.status() == 200
                && let Ok(page) = r.text().await
            {
                assert!(page.starts_with("web-"), "lb answered with something else: {page:?}");
                seen.borrow_mut().insert(backend(&page));
            }
            want.iter().all(|w| seen.borrow().contains(*w)).then_some(())
        }
    })
    .await;
    requests
}

/// `web` (nginx serving its own page) on node-a and node-b, `lb` (nginx with
/// `upstream_service = web`) on the SSH host: HTTP through lb reaches both;
/// a third web role on node-c appears in lb's upstream without anyone
/// touching lb's configuration, and lb takes it by reload (same pid).
async fn nginx_upstream_follows_web_roles(s: &Scenario) {
    s.call(Method::POST, "/clusters/prod/services", Some(json!({"name": "web", "type": "nginx"}))).await;
    for (name, node) in &WEB[..2] {
        s.add_role("web", "server", name, node).await;
    }
    s.run_command("web", json!({"name": "start"})).await;
    let page = reqwest::get(format!("http://{}/", SocketAddr::from((s.host(WEB[0].1).ip, NGINX_PORT))))
        .await
        .expect("GET web-1")
        .text()
        .await
        .expect("page");
    assert_eq!(page, "web-1 on node-a (service prod/web)\n");

    s.call(Method::POST, "/clusters/prod/services", Some(json!({"name": "lb", "type": "nginx"}))).await;
    s.patch_config("lb", json!({"upstream_service": "web"}), None, "balance over web").await;
    s.add_role("lb", "server", LB.0, LB.1).await;
    s.run_command("lb", json!({"name": "start"})).await;
    let lb_addr = SocketAddr::from((s.host(LB.1).ip, NGINX_PORT));
    wait_for_backends(lb_addr, &["web-1", "web-2"]).await;
    let lb = s.role("lb", LB.0).await;
    let (lb_pid, lb_revision) = (lb["pid"].as_u64().expect("lb pid"), lb["running_revision"].clone());

    // A third web instance: lb's rendered upstream follows on the SSH host.
    let (name, node) = WEB[2];
    s.add_role("web", "server", name, node).await;
    let listed = format!("server {}:{NGINX_PORT}; # {name} on {node}", s.host(node).ip);
    let conf = format!("/var/lib/drover-agent/roles/{}/nginx.conf", lb["id"].as_str().expect("lb id"));
    eventually(WAIT, "lb's nginx.conf on the SSH host to list web-3", || async {
        docker(["exec", &s.host(LB.1).container, "cat", &conf]).ok().filter(|c| c.contains(&listed)).map(|_| ())
    })
    .await;
    s.wait_role("lb", LB.0, "reloaded", |r| r["reload_count"].as_u64().unwrap_or(0) >= 1).await;
    s.run_command("web", json!({"name": "start", "roles": [name]})).await;
    let requests = wait_for_backends(lb_addr, &["web-1", "web-2", "web-3"]).await;
    eprintln!("nginx: web-3 answered through lb after {requests} requests");
    let lb = s.role("lb", LB.0).await;
    assert_eq!((lb["pid"].as_u64(), &lb["running_revision"]), (Some(lb_pid), &lb_revision), "lb restarted: {lb:#}");
    assert_eq!((&lb["status"], &lb["health"], &lb["stale"]), (&json!("running"), &json!("good"), &json!(false)));
}

/// The agent on the SSH host runs under the bootstrap's supervisor: killed,
/// it is started again, adopts lb (same pid) and reports it running.
async fn ssh_host_agent_restart_keeps_lb_running(s: &Scenario) {
    let before = s.role("lb", LB.0).await;
    let pid = before["pid"].as_u64().expect("lb pid");
    let agent = s.exec(SSH_HOST, &["pgrep", "-x", "drover-agent"]);
    let restarted_at = rfc3339(now_millis());
    s.exec(SSH_HOST, &["pkill", "-TERM", "-x", "drover-agent"]);
    eventually(WAIT, "the supervisor to start a new agent", || async {
        let now = docker(["exec", &s.host(SSH_HOST).container, "pgrep", "-x", "drover-agent"]).unwrap_or_default();
        (!now.is_empty() && now != agent).then_some(())
    })
    .await;
    let r = s
        .wait_role("lb", LB.0, "reported running by the new agent", |r| {
            r["status"] == "running" && r["updated_at"].as_str().is_some_and(|t| t >= restarted_at.as_str())
        })
        .await;
    assert_eq!(r["pid"].as_u64(), Some(pid), "lb has another pid after the agent restart: {r:#}");
    wait_for_backends(SocketAddr::from((s.host(LB.1).ip, NGINX_PORT)), &["web-1"]).await;
}
