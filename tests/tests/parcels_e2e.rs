//! End-to-end with the real binaries, real parcels built from the shipped
//! recipes, and real Redis and ZooKeeper on loopback: a manager and three
//! agents (separate data dirs and parcels dirs, role-level port overrides).
//!
//! Redis: two parcel versions, distribute and activate, a primary and two
//! replicas from the parcel, an upgrade with a rolling restart while a client
//! keeps writing (no acknowledged write lost, every process runs from the new
//! version), a rollback, the per-host listing, a start refused while the
//! parcel is not active, and a tampered parcel refused by every agent.
//!
//! ZooKeeper: a three-server ensemble from the zookeeper and jre parcels
//! upgraded to a second zookeeper version while a client polls it: quorum kept
//! and every server runs the new version's jars.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_tests::parcels::{build_parcel, install_parcels, parcel_command, upload_parcel, wait_command};
use drover_tests::procs::{ManagerProc, Proc, RoleReaper, free_port, start_agent};
use drover_tests::resp::{self, Reply};
use drover_tests::rest::Rest;
use drover_tests::zk::{Client, longest_outage, rolling_restart_violation, timeline, wait_for_quorum};
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// The two tests start three agents and three services each; on two cores
/// they run one after the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a command on a service of cluster `prod` and waits until it finishes.
async fn service_command(rest: &Rest, svc: &str, body: Value) -> Value {
    let cmd = rest.ok(Method::POST, &format!("/clusters/prod/services/{svc}/commands"), Some(body)).await;
    wait_command(rest, cmd["id"].as_str().unwrap(), WAIT * 4).await
}

async fn succeeded(rest: &Rest, svc: &str, body: Value) -> Value {
    let done = service_command(rest, svc, body.clone()).await;
    assert_eq!(done["state"], "succeeded", "{body}: {done}");
    done
}

async fn roles(rest: &Rest, svc: &str) -> Vec<Value> {
    let v: Value = rest.get(&format!("/api/v1/clusters/prod/services/{svc}/roles")).await.unwrap();
    v["items"].as_array().unwrap().clone()
}

/// A manager and three agents named `hosts`, each in its own data dir under
/// `root`; returns them with the host ids by name.
async fn start_fleet(root: &Path, hosts: [&str; 3]) -> (ManagerProc, Vec<Proc>, Vec<String>) {
    let flags = ["--heartbeat-interval", "300ms", "--host-lost-after", "5s", "--flush-interval", "200ms"];
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let token = rest.enrollment_token(3, 600).await.unwrap();
    let agents: Vec<Proc> = hosts
        .iter()
        .map(|h| start_agent(&root.join(h), &manager.grpc_url(), Some(&token), &["--hostname", h]).unwrap())
        .collect();
    let listed = eventually(WAIT, "three healthy hosts", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == 3).then_some(hosts)
    })
    .await;
    let ids = hosts
        .iter()
        .map(|name| listed.iter().find(|h| h["hostname"] == *name).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    (manager, agents, ids)
}

/// The file a process runs: `/proc/PID/exe`.
fn exe(pid: u64) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|e| panic!("read /proc/{pid}/exe: {e}"))
}

/// The `.jar` files a process holds open.
fn open_jars(pid: u64) -> Vec<PathBuf> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"));
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|p| p.extension().is_some_and(|x| x == "jar"))
        .collect()
}

/// Per role name: its pid, and the agent data dir of its host.
async fn role_pids(rest: &Rest, svc: &str) -> Vec<(String, u64, String)> {
    roles(rest, svc)
        .await
        .iter()
        .map(|r| {
            let pid = r["pid"].as_u64().filter(|p| *p > 0).unwrap_or_else(|| panic!("no pid: {r}"));
            (r["name"].as_str().unwrap().to_owned(), pid, r["host_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Asserts that every role of `svc` runs `binary` from `<agent dir>/parcels/<dir>/`
/// (`binary` resolved, as the kernel does at exec: Debian's redis-server is a link).
async fn assert_runs_from(rest: &Rest, svc: &str, agent_dir: &dyn Fn(&str) -> PathBuf, dir: &str, binary: &str) {
    for (name, pid, host) in role_pids(rest, svc).await {
        let exe = exe(pid);
        let expected = agent_dir(&host).join("parcels").join(dir);
        let resolved = expected.join(binary).canonicalize().unwrap_or_else(|e| panic!("{dir}/{binary}: {e}"));
        assert!(
            exe.starts_with(&expected) && exe == resolved,
            "{name} (pid {pid}) runs {} instead of {} under {}",
            exe.display(),
            resolved.display(),
            expected.display()
        );
    }
}

/// The parcel listing's state of `name` `version` on every host of `prod`.
async fn parcel_states(rest: &Rest, name: &str, version: &str) -> Vec<String> {
    let list: Value = rest.get("/api/v1/parcels").await.unwrap();
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["version"] == version)
        .unwrap_or_else(|| panic!("{name} {version} not listed: {list}"));
    let prod = item["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == "prod").unwrap();
    prod["hosts"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap().to_owned()).collect()
}

/// A client appending 0, 1, 2, ... to the list `writes` on the primary as
/// fast as it is answered, retrying a number until Redis acknowledges it.
/// Errors while the primary restarts are counted, not failures.
struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Vec<i64>, u64)>,
}

impl Writer {
    /// Starts writing; returns once the first write is acknowledged.
    async fn start(port: u16) -> Writer {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let first = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let first = first.clone();
            async move {
                let (mut acked, mut errors) = (Vec::new(), 0u64);
                let mut pace = tokio::time::interval(Duration::from_millis(5));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut next = 0i64;
                while !*stopped.borrow_and_update() {
                    pace.tick().await;
                    let value = next.to_string();
                    let args = ["RPUSH", "writes", value.as_str()];
                    match tokio::time::timeout(Duration::from_secs(2), resp::command(port, &args)).await {
                        Ok(Ok(Reply::Int(_))) => {
                            acked.push(next);
                            next += 1;
                            if acked.len() == 1 {
                                first.notify_one();
                            }
                        }
                        _ => errors += 1,
                    }
                }
                (acked, errors)
            }
        });
        first.notified().await;
        Writer { stop, task }
    }

    async fn finish(self) -> (Vec<i64>, u64) {
        let _ = self.stop.send(true);
        self.task.await.expect("writer task")
    }
}

/// The list `writes` on a Redis, as numbers.
async fn written(port: u16) -> Vec<i64> {
    match resp::command(port, &["LRANGE", "writes", "0", "-1"]).await.unwrap() {
        Reply::Array(items) => items.iter().map(|i| i.text().unwrap().parse().unwrap()).collect(),
        other => panic!("LRANGE: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_upgrade_and_rollback_from_parcels() {
    let _serial = ONE_AT_A_TIME.lock().await;
    init_logging();
    let (v1, v2, v3) = ("7.0.15-1", "7.0.15-2", "7.0.15-3");
    let files: Vec<PathBuf> = [v1, v2, v3].iter().map(|v| build_parcel("redis", Some(v))).collect();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let _reaper = RoleReaper(root.clone());
    let hosts = ["redis-a", "redis-b", "redis-c"];
    let (manager, agents, ids) = start_fleet(&root, hosts).await;
    let rest = manager.rest();
    let agent_dir = |host_id: &str| root.join(hosts[ids.iter().position(|h| h == host_id).unwrap()]);
    let started = Instant::now();

    // v1 distributed and active on the three hosts, v2 uploaded.
    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    install_parcels(&rest, "prod", &ids, &files[..1]).await;
    upload_parcel(&rest, &files[1]).await;
    for h in hosts {
        let link = std::fs::read_link(root.join(h).join("parcels/redis")).unwrap();
        assert_eq!(link, Path::new("redis-7.0.15-1"), "{h}");
    }

    // A primary and two replicas, persistent so a restarted primary keeps its data.
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let mut ports = Vec::new();
    for (i, (role_type, name)) in
        [("primary", "cache-primary"), ("replica", "cache-replica-1"), ("replica", "cache-replica-2")]
            .iter()
            .enumerate()
    {
        let body = json!({"role_type": role_type, "host_id": ids[i], "name": name});
        rest.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(body)).await;
        let port = free_port();
        ports.push(port);
        let patch = json!({"values": {"port": port}, "message": format!("{name} on its own port"), "role": name});
        rest.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(patch)).await;
    }
    let patch = json!({"values": {"appendonly": true}, "message": "keep every write across restarts"});
    rest.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(patch)).await;
    succeeded(&rest, "cache", json!({"name": "start"})).await;
    let primary = ports[0];
    assert_eq!(resp::config_get(primary, "appendonly").await.unwrap(), "yes");
    assert_runs_from(&rest, "cache", &agent_dir, "redis-7.0.15-1", "usr/bin/redis-server").await;
    assert_eq!(resp::command(primary, &["SET", "greeting", "hello"]).await.unwrap(), Reply::Simple("OK".into()));
    for &replica in &ports[1..] {
        eventually(WAIT, "the key to reach the replicas", || async {
            let v = resp::command(replica, &["GET", "greeting"]).await.ok()?;
            (v.text().as_deref() == Some("hello")).then_some(())
        })
        .await;
    }
    eprintln!("redis from parcel {v1} running after {:.1}s", started.elapsed().as_secs_f64());

    // Upgrade to v2 while a client keeps writing.
    let pids_before = role_pids(&rest, "cache").await;
    let writer = Writer::start(primary).await;
    let upgrade_started = Instant::now();
    let upgraded = service_command(&rest, "cache", json!({"name": "upgrade", "version": v2})).await;
    let upgrade_took = upgrade_started.elapsed();
    let (acked, errors) = writer.finish().await;
    assert_eq!(upgraded["state"], "succeeded", "{upgraded}");
    assert_eq!(upgraded["params"]["to"], v2, "{upgraded}");
    let on_primary = written(primary).await;
    let present: std::collections::HashSet<i64> = on_primary.iter().copied().collect();
    let lost: Vec<i64> = acked.iter().copied().filter(|i| !present.contains(i)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    eprintln!(
        "upgrade to {v2}: {:.1}s, {} steps; the client had {} writes acknowledged and {errors} refused or failed \
         (during the primary's restart); none lost",
        upgrade_took.as_secs_f64(),
        upgraded["steps"].as_array().unwrap().len(),
        acked.len()
    );
    assert!(acked.len() > 10, "the client wrote only {} times", acked.len());
    for (name, pid, _) in role_pids(&rest, "cache").await {
        let before = pids_before.iter().find(|(n, ..)| *n == name).unwrap().1;
        assert_ne!(pid, before, "{name} was not restarted");
    }
    assert_runs_from(&rest, "cache", &agent_dir, "redis-7.0.15-2", "usr/bin/redis-server").await;
    for &replica in &ports[1..] {
        eventually(WAIT, "the replicas to catch up after the upgrade", || async {
            let n = match resp::command(replica, &["LLEN", "writes"]).await.ok()? {
                Reply::Int(n) => n as usize,
                _ => return None,
            };
            (n == on_primary.len()).then_some(())
        })
        .await;
    }
    assert_eq!(parcel_states(&rest, "redis", v1).await, ["distributed"; 3]);
    assert_eq!(parcel_states(&rest, "redis", v2).await, ["active"; 3]);

    // Rollback: v1 again, every role restarted from it.
    let rolled = succeeded(&rest, "cache", json!({"name": "rollback"})).await;
    assert_eq!((&rolled["params"]["from"], &rolled["params"]["to"]), (&json!(v2), &json!(v1)), "{rolled}");
    assert_runs_from(&rest, "cache", &agent_dir, "redis-7.0.15-1", "usr/bin/redis-server").await;
    assert_eq!(written(primary).await.len(), on_primary.len(), "writes lost in the rollback");
    assert_eq!(parcel_states(&rest, "redis", v1).await, ["active"; 3]);
    assert_eq!(parcel_states(&rest, "redis", v2).await, ["distributed"; 3]);

    // Without an active redis parcel a role does not start, and says why.
    let deactivated = parcel_command(&rest, "prod", "deactivate", "redis", v1).await;
    assert_eq!(deactivated["state"], "succeeded", "{deactivated}");
    assert!(resp::command(primary, &["PING"]).await.is_ok(), "deactivating must not stop a running role");
    succeeded(&rest, "cache", json!({"name": "stop"})).await;
    let refused = service_command(&rest, "cache", json!({"name": "start"})).await;
    assert_eq!(refused["state"], "failed", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("parcel redis is not active on host") && message.contains(&ids[0]),
        "the start should name the parcel and host: {refused}"
    );
    let activated = parcel_command(&rest, "prod", "activate", "redis", v1).await;
    assert_eq!(activated["state"], "succeeded", "{activated}");
    // The failed start stopped at the primary; with the parcel active, starting works.
    succeeded(&rest, "cache", json!({"name": "start"})).await;
    assert_runs_from(&rest, "cache", &agent_dir, "redis-7.0.15-1", "usr/bin/redis-server").await;

    // A parcel changed on the manager's disk after its upload: every agent
    // refuses it, and v1 stays active with the roles untouched.
    let id = upload_parcel(&rest, &files[2]).await;
    let stored = root.join("manager/parcel-repo").join(id.file_name());
    let mut bytes = std::fs::read(&stored).unwrap_or_else(|e| panic!("read {}: {e}", stored.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let pids_before = role_pids(&rest, "cache").await;
    let tampered = parcel_command(&rest, "prod", "distribute", "redis", v3).await;
    assert_eq!(tampered["state"], "failed", "{tampered}");
    let failed_steps: Vec<&Value> =
        tampered["steps"].as_array().unwrap().iter().filter(|s| s["state"] == "failed").collect();
    assert!(!failed_steps.is_empty(), "{tampered}");
    for s in &failed_steps {
        assert!(s["message"].as_str().unwrap().contains("sha256 mismatch"), "{s}");
    }
    for h in hosts {
        let link = std::fs::read_link(root.join(h).join("parcels/redis")).unwrap();
        assert_eq!(link, Path::new("redis-7.0.15-1"), "{h}");
        assert!(!root.join(h).join("parcels/redis-7.0.15-3").exists(), "{h} installed the tampered parcel");
    }
    assert_eq!(parcel_states(&rest, "redis", v1).await, ["active"; 3]);
    assert_eq!(role_pids(&rest, "cache").await, pids_before);
    assert!(resp::command(primary, &["PING"]).await.is_ok());

    let errors = manager.proc.unexpected_errors(&[]);
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
    eprintln!("redis parcels test: {:.1}s after the builds", started.elapsed().as_secs_f64());
    drop(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_upgrade_and_rollback_keep_quorum_from_parcels() {
    let _serial = ONE_AT_A_TIME.lock().await;
    init_logging();
    let (v1, v2) = ("3.8.0-1", "3.8.0-2");
    let jre = build_parcel("jre", None);
    let zk1 = build_parcel("zookeeper", None);
    let zk2 = build_parcel("zookeeper", Some(v2));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let _reaper = RoleReaper(root.clone());
    let hosts = ["zk-a", "zk-b", "zk-c"];
    let (manager, agents, ids) = start_fleet(&root, hosts).await;
    let rest = manager.rest();
    let agent_dir = |host_id: &str| root.join(hosts[ids.iter().position(|h| h == host_id).unwrap()]);
    let started = Instant::now();

    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    install_parcels(&rest, "prod", &ids, &[jre, zk1]).await;
    upload_parcel(&rest, &zk2).await;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    let mut client_ports = [0u16; 3];
    for (i, id) in ids.iter().enumerate() {
        let name = format!("zk-{}", i + 1);
        let body = json!({"role_type": "server", "host_id": id, "name": name});
        rest.ok(Method::POST, "/clusters/prod/services/zk/roles", Some(body)).await;
        client_ports[i] = free_port();
        let values = json!({"client_port": client_ports[i], "peer_port": free_port(), "election_port": free_port()});
        let patch = json!({"values": values, "message": format!("{name} on its own ports"), "role": name});
        rest.ok(Method::PATCH, "/clusters/prod/services/zk/config", Some(patch)).await;
    }
    succeeded(&rest, "zk", json!({"name": "start"})).await;
    wait_for_quorum(&client_ports, WAIT, "one leader and two followers").await;
    assert_runs_from(&rest, "zk", &agent_dir, "jre-17.0-1", "usr/lib/jvm/default-java/bin/java").await;
    eprintln!("zookeeper from parcels running after {:.1}s", started.elapsed().as_secs_f64());

    // Upgrade the zookeeper parcel while a client keeps asking every server.
    let client = Client::start(client_ports).await;
    let upgrade_started = Instant::now();
    let upgraded = service_command(&rest, "zk", json!({"name": "upgrade", "version": v2})).await;
    let upgrade_took = upgrade_started.elapsed();
    let rounds = client.finish().await;
    assert_eq!(upgraded["state"], "succeeded", "{upgraded}");
    assert_eq!((&upgraded["params"]["parcel"], &upgraded["params"]["from"]), (&json!("zookeeper"), &json!(v1)));
    let seen = timeline(&rounds);
    if let Some(why) = rolling_restart_violation(&rounds) {
        panic!("{why}; rounds in which not all servers served:\n{seen}");
    }
    eprintln!(
        "upgrade to zookeeper {v2}: {:.1}s, {} client rounds, at most {:?} without a serving server\n{seen}",
        upgrade_took.as_secs_f64(),
        rounds.len(),
        longest_outage(&rounds)
    );
    wait_for_quorum(&client_ports, WAIT, "one leader and two followers after the upgrade").await;

    // Every server runs the jre parcel's java with the new zookeeper parcel's jars. (Where the
    // host has Debian's own jars, java also opens them through zookeeper.jar's absolute
    // manifest Class-Path; they come after every parcel jar in its search order.)
    assert_runs_from(&rest, "zk", &agent_dir, "jre-17.0-1", "usr/lib/jvm/default-java/bin/java").await;
    for (name, pid, host) in role_pids(&rest, "zk").await {
        let jars = open_jars(pid);
        let parcels = agent_dir(&host).join("parcels");
        let new = parcels.join("zookeeper-3.8.0-2/usr/share/java");
        assert!(
            jars.iter().any(|j| j == &new.join("zookeeper.jar")),
            "{name} has no {}/zookeeper.jar open: {jars:?}",
            new.display()
        );
        let old: Vec<&PathBuf> = jars.iter().filter(|j| j.starts_with(&parcels) && !j.starts_with(&new)).collect();
        assert!(old.is_empty(), "{name} has jars of another parcel version open: {old:?}");
        let from_parcel = jars.iter().filter(|j| j.starts_with(&new)).count();
        eprintln!("{name}: {from_parcel} jars open from zookeeper {v2}, {} from elsewhere", jars.len() - from_parcel);
    }
    assert_eq!(parcel_states(&rest, "zookeeper", v2).await, ["active"; 3]);
    assert_eq!(parcel_states(&rest, "zookeeper", v1).await, ["distributed"; 3]);

    // Roll back to the previous version the same way, quorum kept again.
    let client = Client::start(client_ports).await;
    let rollback_started = Instant::now();
    let rolled = service_command(&rest, "zk", json!({"name": "rollback"})).await;
    let rollback_took = rollback_started.elapsed();
    let rounds = client.finish().await;
    assert_eq!(rolled["state"], "succeeded", "{rolled}");
    assert_eq!((&rolled["params"]["from"], &rolled["params"]["to"]), (&json!(v2), &json!(v1)));
    if let Some(why) = rolling_restart_violation(&rounds) {
        panic!(
            "{why} during the rollback; rounds in which not all servers served:
{}",
            timeline(&rounds)
        );
    }
    eprintln!("rollback to zookeeper {v1}: {:.1}s, {} client rounds", rollback_took.as_secs_f64(), rounds.len());
    wait_for_quorum(&client_ports, WAIT, "one leader and two followers after the rollback").await;
    for (name, pid, host) in role_pids(&rest, "zk").await {
        let old = agent_dir(&host).join("parcels").join(format!("zookeeper-{v1}/usr/share/java/zookeeper.jar"));
        assert!(open_jars(pid).contains(&old), "{name} does not run {} after the rollback", old.display());
    }
    assert_eq!(parcel_states(&rest, "zookeeper", v1).await, ["active"; 3]);
    assert_eq!(parcel_states(&rest, "zookeeper", v2).await, ["distributed"; 3]);

    succeeded(&rest, "zk", json!({"name": "stop"})).await;
    for proc in std::iter::once(&manager.proc).chain(&agents) {
        let errors = proc.unexpected_errors(&[]);
        assert!(errors.is_empty(), "unexpected ERROR lines in {}:\n{}", proc.log.display(), errors.join("\n"));
    }
    eprintln!("zookeeper parcels test: {:.1}s after the builds", started.elapsed().as_secs_f64());
}
