//! End-to-end with the real binaries and a real ZooKeeper: a manager and three
//! agents (separate data dirs, one `server` role each, role-level port
//! overrides keep the servers apart on one machine). The ensemble reaches a
//! quorum, keeps serving a client polling it with four-letter words through a
//! rolling restart, and stops cleanly.

use std::collections::HashMap;
use std::io::ErrorKind::ConnectionRefused;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use drover_tests::procs::{ManagerProc, free_port, start_agent};
use drover_tests::resp;
use drover_tests::rest::Rest;
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};

/// Per phase: three JVMs starting on two shared cores are slow.
const WAIT: Duration = Duration::from_secs(120);
/// A server that does not answer a four-letter word within this is not serving.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const HOSTS: [&str; 3] = ["zk-a", "zk-b", "zk-c"];

fn require(path: &str) {
    assert!(Path::new(path).exists(), "{path} is missing: install Debian's zookeeper and a JRE (scripts/test.sh does)");
}

async fn call(rest: &Rest, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = rest.raw(method.clone(), &format!("/api/v1{path}"), body).await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: HTTP {status}: {v}");
    v
}

/// Runs a command on service `zk` and waits until it succeeds.
async fn run_command(rest: &Rest, body: Value) -> Value {
    let cmd = call(rest, Method::POST, "/clusters/prod/services/zk/commands", Some(body)).await;
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

/// What one server said to `srvr`.
#[derive(Debug, Clone, PartialEq)]
enum Srvr {
    /// Nothing listens on its client port.
    Down,
    /// It runs but does not serve: no quorum, or it dropped the connection
    /// (a follower does when its leader goes away).
    NotServing,
    /// It serves clients in this mode (`leader`, `follower`).
    Serving(String),
}

async fn srvr(port: u16) -> Srvr {
    match tokio::time::timeout(PROBE_TIMEOUT, resp::four_letter_word(port, "srvr")).await {
        Ok(Ok(text)) => match text.lines().find_map(|l| l.strip_prefix("Mode: ")) {
            Some(mode) => Srvr::Serving(mode.trim().to_owned()),
            None => Srvr::NotServing,
        },
        Ok(Err(e)) if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == Some(ConnectionRefused) => {
            Srvr::Down
        }
        Ok(Err(_)) | Err(_) => Srvr::NotServing,
    }
}

/// Waits until the servers on `ports` are one leader and followers.
async fn wait_for_quorum(ports: &[u16], what: &str) {
    eventually(WAIT, what, || async {
        let mut modes = Vec::new();
        for &port in ports {
            let Srvr::Serving(mode) = srvr(port).await else { return None };
            modes.push(mode);
        }
        modes.sort();
        (modes == ["follower", "follower", "leader"]).then_some(())
    })
    .await;
}

/// One round of the polling client: per server, whether it was up (accepted
/// the connection) and whether it was serving (in a quorum).
#[derive(Debug)]
struct Round {
    at: Duration,
    up: [bool; 3],
    serving: [bool; 3],
}

impl Round {
    fn all_serving(&self) -> bool {
        self.serving.iter().all(|s| *s)
    }
}

/// A client asking every server `srvr` about every 100 ms, recording rounds.
struct Client {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Round>>,
}

impl Client {
    /// Starts polling and returns once the first round is recorded.
    async fn start(ports: [u16; 3]) -> Client {
        let done = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let done = done.clone();
            async move {
                let start = Instant::now();
                let mut first_tx = Some(first_tx);
                let mut rounds = Vec::new();
                let mut pace = tokio::time::interval(Duration::from_millis(100));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !done.load(Ordering::SeqCst) {
                    pace.tick().await;
                    let replies = futures::future::join_all(ports.map(srvr)).await;
                    rounds.push(Round {
                        at: start.elapsed(),
                        up: std::array::from_fn(|i| replies[i] != Srvr::Down),
                        serving: std::array::from_fn(|i| matches!(replies[i], Srvr::Serving(_))),
                    });
                    if let Some(tx) = first_tx.take() {
                        let _ = tx.send(());
                    }
                }
                rounds
            }
        });
        first_rx.await.expect("the client's first round");
        Client { done, task }
    }

    async fn finish(self) -> Vec<Round> {
        self.done.store(true, Ordering::SeqCst);
        self.task.await.expect("client task")
    }
}

/// The rounds in which not every server served, one line each: per server
/// `S` serving, `u` up but not serving, `-` down.
fn timeline(rounds: &[Round]) -> String {
    let mut out = String::new();
    for r in rounds.iter().filter(|r| !r.all_serving()) {
        let marks: String = (0..3)
            .map(|i| {
                if r.serving[i] {
                    'S'
                } else if r.up[i] {
                    'u'
                } else {
                    '-'
                }
            })
            .collect();
        out.push_str(&format!("  {:>8.3}s {marks}\n", r.at.as_secs_f64()));
    }
    out
}

/// What is wrong with what the client saw during a rolling restart of three
/// servers, if anything. Each server must have gone down; never two at once;
/// and each must have been taken down only while the whole ensemble served,
/// i.e. after the one before it had rejoined the quorum. (While the leader
/// restarts, the others elect a new one and serve nobody for a moment.)
fn rolling_restart_violation(rounds: &[Round]) -> Option<String> {
    if rounds.len() < 10 {
        return Some(format!("the client polled only {} times", rounds.len()));
    }
    if !rounds[0].all_serving() {
        return Some("the ensemble was not serving when the rolling restart began".into());
    }
    if let Some(i) = (0..3).find(|&i| rounds.iter().all(|r| r.up[i])) {
        return Some(format!("the client never saw zk-{} down", i + 1));
    }
    if let Some(r) = rounds.iter().find(|r| r.up.iter().filter(|u| **u).count() < 2) {
        return Some(format!("two servers were down at once at {:?}", r.at));
    }
    // A server's restart is a run of rounds in which it does not serve and
    // is down in some; the round before the run must show all serving.
    for i in 0..3 {
        let mut k = 1;
        while k < rounds.len() {
            if rounds[k].serving[i] {
                k += 1;
                continue;
            }
            let end = rounds[k..].iter().position(|r| r.serving[i]).map_or(rounds.len(), |n| k + n);
            if rounds[k..end].iter().any(|r| !r.up[i]) && !rounds[k - 1].all_serving() {
                return Some(format!(
                    "zk-{} went down at {:?} while the ensemble was not serving",
                    i + 1,
                    rounds[k].at
                ));
            }
            k = end;
        }
    }
    None
}

/// The longest time in which no server served.
fn longest_outage(rounds: &[Round]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since = None;
    for r in rounds {
        match (r.serving.iter().any(|s| *s), since) {
            (false, None) => since = Some(r.at),
            (true, Some(s)) => {
                longest = longest.max(r.at - s);
                since = None;
            }
            _ => {}
        }
    }
    longest
}

/// Kills, when dropped, any process still running from a role directory under
/// `root`: role processes outlive their agent by design, and a failed test must
/// not leave JVMs behind on a shared machine.
struct RoleReaper(PathBuf);

impl Drop for RoleReaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ensemble_keeps_quorum_through_rolling_restart() {
    init_logging();
    require("/usr/bin/java");
    require("/usr/share/java/zookeeper.jar");
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

    call(&rest, Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    call(&rest, Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    // zoo.cfg lists `server.N=<host address>:<peer>:<election>`: the address
    // is each agent's first non-loopback address, the same local address for
    // all three here, so peers reach each other on it without any override
    // (the descriptor has no parameter for it). Clients use 127.0.0.1: without
    // `clientPortAddress` ZooKeeper listens for them on every interface.
    let mut client_ports = [0u16; 3];
    for (i, host) in HOSTS.iter().enumerate() {
        let name = format!("zk-{}", i + 1);
        call(
            &rest,
            Method::POST,
            "/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_id": host_id(host), "name": name})),
        )
        .await;
        client_ports[i] = free_port();
        let values = json!({"client_port": client_ports[i], "peer_port": free_port(), "election_port": free_port()});
        call(
            &rest,
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
    wait_for_quorum(&client_ports, "one leader and two followers").await;
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
    wait_for_quorum(&client_ports, "one leader and two followers after the rolling restart").await;
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

/// Rounds 100 ms apart from marks as `timeline` prints them.
fn rounds_from(marks: &[&str]) -> Vec<Round> {
    let mut rounds: Vec<Round> = marks
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let m: Vec<char> = m.chars().collect();
            Round {
                at: Duration::from_millis(100 * k as u64),
                up: std::array::from_fn(|i| m[i] != '-'),
                serving: std::array::from_fn(|i| m[i] == 'S'),
            }
        })
        .collect();
    while rounds.len() < 10 {
        rounds.push(Round { at: Duration::from_millis(100 * rounds.len() as u64), up: [true; 3], serving: [true; 3] });
    }
    rounds
}

#[test]
fn rolling_restart_checks() {
    let ok = ["SSS", "-SS", "uSS", "SSS", "S-S", "SuS", "SSS", "SSu", "uu-", "SS-", "SSu", "SSS"];
    assert_eq!(rolling_restart_violation(&rounds_from(&ok)), None);
    assert_eq!(longest_outage(&rounds_from(&ok)), Duration::from_millis(100));
    let cases: &[(&[&str], &str)] = &[
        (&["SSS", "-SS", "uSS", "SSS", "S-S", "SSS"], "never saw zk-3 down"),
        (&["SSS", "-SS", "--S", "SSS", "SS-", "SSS"], "two servers were down at once"),
        (&["SSS", "-SS", "uSS", "u-S", "SuS", "SSS", "SS-", "SSS"], "zk-2 went down at 300ms while"),
        (&["uSS", "-SS", "SSS", "S-S", "SSS", "SS-", "SSS"], "not serving when the rolling restart began"),
    ];
    for (marks, why) in cases {
        let got = rolling_restart_violation(&rounds_from(marks)).unwrap_or_default();
        assert!(got.contains(why), "{marks:?}: expected {why:?}, got {got:?}");
    }
}
