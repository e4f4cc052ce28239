//! Monitoring end to end (#13, the metrics half) with the real binaries, real
//! services from the shipped parcels and their shipped metric sources
//! (`[[role_types.metrics]]`, collected every 10 s), and a real Prometheus:
//!
//! - a Redis primary and replica: their `redis_*` samples and role process
//!   figures come back through `GET /api/v1/metrics/query` (latest values,
//!   and aggregated by role type) and `/api/v1/metrics/series` (with the
//!   `cluster`, `service`, `role`, `role_type` and `host` labels); the client
//!   count rises with connections the test holds open and used memory with a
//!   4 MiB value it writes; the replica reports its link up. A real
//!   Prometheus scraping `/api/v1/metrics/prometheus` and `/metrics` with an
//!   API token answers PromQL about the Redis role with the manager's value,
//!   and follows it when the connections close;
//! - a ZooKeeper ensemble of three reports one leader (the one `srvr` names)
//!   with two synced followers;
//! - nginx: active connections count connections the test holds, and the
//!   request counter rises with requests.
//!
//! Run with `cargo build --workspace --bins && cargo test -p drover-tests --test monitoring_e2e`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use drover_testkit::prometheus::{Prometheus, Sample, ScrapeJob};
use drover_tests::fleet::{self, wait_for};
use drover_tests::init_logging;
use drover_tests::parcels::build_parcel;
use drover_tests::procs::free_port;
use drover_tests::resp;
use drover_tests::rest::Rest;
use drover_tests::zk::{Srvr, srvr, wait_for_quorum};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Per phase; metric sources collect every 10 s, the first one 10 s after
/// the process started.
const WAIT: Duration = Duration::from_secs(90);
/// ZooKeeper phases: three JVMs starting on two shared cores are slow.
const ZK_WAIT: Duration = Duration::from_secs(180);
const MIB: f64 = 1024.0 * 1024.0;

type Labels = BTreeMap<String, String>;

/// A fleet ([`fleet::Fleet`]) with cluster `prod` and `parcels` active on every host.
async fn start_fleet(hostnames: &[&str], parcels: &[PathBuf]) -> fleet::Fleet {
    fleet::Fleet::start(hostnames, parcels, &["--host-lost-after", "5s"]).await
}

/// `path?params` with the values percent-encoded.
fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(&format!("http://drover.invalid{path}")).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `GET /api/v1/metrics/query` that must answer 200.
async fn query(rest: &Rest, params: &[(&str, &str)]) -> Result<Value, String> {
    rest.get(&with_query("/api/v1/metrics/query", params)).await.map_err(|e| e.to_string())
}

/// The labels and values of a query answer's series at the step starting at
/// `at_ms`, or their latest points when `at_ms` is `None`.
fn points(answer: &Value, at_ms: Option<i64>) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for s in answer["series"].as_array().into_iter().flatten() {
        let labels: Labels = serde_json::from_value(s["labels"].clone()).unwrap();
        let ts: Vec<i64> = serde_json::from_value(s["timestamps"].clone()).unwrap();
        let vs: Vec<f64> = serde_json::from_value(s["values"].clone()).unwrap();
        let i = match at_ms {
            None => vs.len().checked_sub(1),
            Some(at) => ts.iter().position(|t| *t == at),
        };
        if let Some(i) = i {
            out.push((labels, vs[i]));
        }
    }
    out
}

/// The latest point of every series `selector` picks (raw points of the last
/// two minutes, the last of each second), through the query API.
async fn latest(rest: &Rest, selector: &str) -> Result<Vec<(Labels, f64)>, String> {
    let from = rfc3339(SystemTime::now() - Duration::from_secs(120));
    let answer = query(rest, &[("series", selector), ("from", &from), ("step", "1s"), ("stat", "last")]).await?;
    assert_eq!(answer["resolution"], "raw", "{answer}");
    Ok(points(&answer, None))
}

/// The latest value of the one series of `selector` whose label `key` is `value`.
async fn latest_of(rest: &Rest, selector: &str, key: &str, value: &str) -> Result<f64, String> {
    let all = latest(rest, selector).await?;
    let mine: Vec<f64> =
        all.iter().filter(|(l, _)| l.get(key).map(String::as_str) == Some(value)).map(|p| p.1).collect();
    match mine[..] {
        [v] => Ok(v),
        _ => Err(format!("{selector} with {key}={value}: {all:?}")),
    }
}

/// `selector` aggregated with `agg` by `by` over the last complete 30 s step
/// (the last of each series in it, then combined): the groups' labels and
/// values.
async fn last_full_step(rest: &Rest, selector: &str, agg: &str, by: &str) -> Result<Vec<(Labels, f64)>, String> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let start = (now / 30) * 30 - 30;
    let from = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(start));
    let to = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(start * 1000 + 29_999));
    let params = [
        ("series", selector),
        ("from", from.as_str()),
        ("to", to.as_str()),
        ("step", "30s"),
        ("stat", "last"),
        ("agg", agg),
        ("by", by),
    ];
    let answer = query(rest, &params).await?;
    assert_eq!((&answer["resolution"], &answer["step_seconds"]), (&json!("raw"), &json!(30)), "{answer}");
    Ok(points(&answer, Some(start as i64 * 1000)))
}

/// `GET /api/v1/metrics/series?match=selector`: the items.
async fn series(rest: &Rest, selector: &str) -> Result<Vec<Value>, String> {
    let v: Value =
        rest.get(&with_query("/api/v1/metrics/series", &[("match", selector)])).await.map_err(|e| e.to_string())?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// The `last_value` the series list gives for `metric` of role `role`.
async fn manager_value(rest: &Rest, metric: &str, role: &str) -> Result<f64, String> {
    let items = series(rest, &format!("{metric}{{role=\"{role}\"}}")).await?;
    match &items[..] {
        [s] => s["last_value"].as_f64().ok_or_else(|| format!("no last value: {s}")),
        _ => Err(format!("{metric} of {role}: {items:?}")),
    }
}

fn labels_of(s: &Value) -> Labels {
    serde_json::from_value(s["labels"].clone()).unwrap()
}

/// A role's pid as the REST API reports it.
async fn role_pid(rest: &Rest, svc: &str, role: &str) -> u32 {
    let r: Value = rest.get(&format!("/api/v1/clusters/prod/services/{svc}/roles/{role}")).await.unwrap();
    r["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {r}")) as u32
}

/// Resident memory of process `pid` in bytes (`VmRSS` of /proc/PID/status).
fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kb * 1024.0
}

/// `INFO memory`'s `used_memory` of the Redis on 127.0.0.1:`port`.
async fn redis_used_memory(port: u16) -> f64 {
    let info = resp::command(port, &["INFO", "memory"]).await.unwrap().text().unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap()
}

/// `n` Redis client connections to 127.0.0.1:`port`, each having answered PING.
async fn redis_clients(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut pong = [0u8; 7];
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
        held.push(s);
    }
    held
}

fn within(value: f64, reference: f64, factor: f64) -> bool {
    value >= reference / factor && value <= reference * factor
}

/// The one sample of a PromQL answer.
fn single(samples: &[Sample]) -> Option<&Sample> {
    match samples {
        [s] => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_metrics_through_the_query_api_and_a_real_prometheus() {
    init_logging();
    let started = Instant::now();
    let fleet = start_fleet(&["redis-a", "redis-b"], &[build_parcel("redis", None)]).await;
    let rest = &fleet.rest;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let (p_port, r_port) = (free_port(), free_port());
    fleet.add_role("cache", "primary", "redis-a", "cache-primary", json!({"port": p_port})).await;
    fleet.add_role("cache", "replica", "redis-b", "cache-replica", json!({"port": r_port})).await;
    fleet.run_command("cache", json!({"name": "start"}), WAIT).await;
    let running = Instant::now();
    eprintln!("redis: fleet up and both roles running after {:.1}s", started.elapsed().as_secs_f64());

    // The series of both roles, with the five labels the manager adds.
    let wanted = ["redis_used_memory_bytes", "redis_connected_clients", "role_memory_rss_bytes", "role_up"];
    let listed = wait_for(WAIT, "the series of both Redis roles", || async {
        let items = series(rest, r#"{cluster="prod",service="cache"}"#).await?;
        let have = |m: &str, role: &str| {
            items.iter().any(|s| s["metric"] == m && s["labels"]["role"] == role && s["last_value"].is_number())
        };
        let missing: Vec<String> = wanted
            .iter()
            .flat_map(|m| ["cache-primary", "cache-replica"].map(|r| (m, r)))
            .filter(|(m, r)| !have(m, r))
            .map(|(m, r)| format!("{m} of {r}"))
            .collect();
        if missing.is_empty() { Ok(items) } else { Err(format!("missing {missing:?} in {items:?}")) }
    })
    .await;
    eprintln!("redis: first service metrics {:.1}s after the start", running.elapsed().as_secs_f64());
    for s in listed.iter().filter(|s| wanted.contains(&s["metric"].as_str().unwrap())) {
        assert_eq!(s["entity"], "role", "{s}");
        let labels = labels_of(s);
        let (role_type, host) =
            if labels["role"] == "cache-primary" { ("primary", "redis-a") } else { ("replica", "redis-b") };
        let want: Labels = [("cluster", "prod"), ("service", "cache"), ("role_type", role_type), ("host", host)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain([("role".to_owned(), labels["role"].clone())])
            .collect();
        assert_eq!(labels, want, "{s}");
    }

    // Plausible values: both roles up; the primary's RSS close to what /proc
    // says of its pid, its used memory close to what INFO says.
    for role in ["cache-primary", "cache-replica"] {
        assert_eq!(latest_of(rest, "role_up{service=\"cache\"}", "role", role).await, Ok(1.0), "{role}");
    }
    let pid = role_pid(rest, "cache", "cache-primary").await;
    let rss = latest_of(rest, "role_memory_rss_bytes{service=\"cache\"}", "role", "cache-primary").await.unwrap();
    let proc_rss = rss_bytes(pid);
    assert!(rss > MIB && within(rss, proc_rss, 2.0), "role_memory_rss_bytes {rss}, /proc/{pid} says {proc_rss}");
    let used = latest_of(rest, "redis_used_memory_bytes{service=\"cache\"}", "role", "cache-primary").await.unwrap();
    let info_used = redis_used_memory(p_port).await;
    assert!(used > 0.0 && within(used, info_used, 2.0), "redis_used_memory_bytes {used}, INFO says {info_used}");

    // Replication as each side reports it.
    wait_for(WAIT, "the replica's link up and both sides' replication role", || async {
        let sel = |m: &str| format!("{m}{{cluster=\"prod\",service=\"cache\"}}");
        let got = (
            latest_of(rest, &sel("redis_master_link_up"), "role", "cache-replica").await?,
            latest_of(rest, &sel("redis_is_primary"), "role", "cache-replica").await?,
            latest_of(rest, &sel("redis_is_primary"), "role", "cache-primary").await?,
            latest_of(rest, &sel("redis_connected_replicas"), "role", "cache-primary").await?,
        );
        if got == (1.0, 0.0, 1.0, 1.0) {
            Ok(())
        } else {
            Err(format!("(link up, replica is primary, primary is primary, replicas) = {got:?}"))
        }
    })
    .await;

    // Clients the test holds open and a 4 MiB value show in the next collection.
    const HELD: usize = 6;
    // Before: the collector, maybe a health check's connection at that moment.
    let before = latest_of(rest, "redis_connected_clients{service=\"cache\"}", "role", "cache-primary").await.unwrap();
    assert!((1.0..=3.0).contains(&before), "{before} clients before the test opened any");
    let mut held = redis_clients(p_port, HELD).await;
    let ballast = "x".repeat(4 << 20);
    assert_eq!(resp::command(p_port, &["SET", "ballast", &ballast]).await.unwrap(), resp::Reply::Simple("OK".into()));
    let rise = Instant::now();
    let clients = wait_for(WAIT, "the held clients and the 4 MiB value in the primary's metrics", || async {
        let c = latest_of(rest, "redis_connected_clients{service=\"cache\"}", "role", "cache-primary").await?;
        let m = latest_of(rest, "redis_used_memory_bytes{service=\"cache\"}", "role", "cache-primary").await?;
        // The collector's own connection counts too.
        if c >= (HELD + 1) as f64 && m >= used + 4.0 * MIB {
            Ok(c)
        } else {
            Err(format!("clients {c} (before {before}), used memory {m} (before {used})"))
        }
    })
    .await;
    assert!(clients <= (HELD + 3) as f64, "{clients} clients with {HELD} held");
    eprintln!("redis: {clients} clients seen {:.1}s after opening {HELD}", rise.elapsed().as_secs_f64());

    // Aggregated by role type over a whole step: the value replicated, so
    // both role types hold it; the replication role's maximum per type.
    wait_for(WAIT, "used memory and replication role aggregated by role type", || async {
        let mem =
            last_full_step(rest, r#"redis_used_memory_bytes{cluster="prod",service="cache"}"#, "sum", "role_type")
                .await?;
        let role =
            last_full_step(rest, r#"redis_is_primary{cluster="prod",service="cache"}"#, "max", "role_type").await?;
        let by = |pts: &[(Labels, f64)], t: &str| {
            pts.iter().find(|(l, _)| l.len() == 1 && l.get("role_type").map(String::as_str) == Some(t)).map(|p| p.1)
        };
        let ok = mem.len() == 2
            && role.len() == 2
            && by(&mem, "primary").is_some_and(|v| v >= 4.0 * MIB)
            && by(&mem, "replica").is_some_and(|v| v >= 4.0 * MIB)
            && by(&role, "primary") == Some(1.0)
            && by(&role, "replica") == Some(0.0);
        if ok { Ok(()) } else { Err(format!("used memory by role type {mem:?}; is primary by role type {role:?}")) }
    })
    .await;

    // A real Prometheus scrapes the role metrics and the manager's own with an API token.
    let created =
        rest.ok(Method::POST, "/api-tokens", Some(json!({"name": "prometheus", "grants": [{"role": "viewer"}]}))).await;
    let token = created["token"].as_str().unwrap();
    let target = format!("127.0.0.1:{}", fleet.manager.http_port);
    let prom = Prometheus::start(&[
        ScrapeJob::new("drover-roles", &target, "/api/v1/metrics/prometheus").bearer(token),
        ScrapeJob::new("drover-manager", &target, "/metrics").bearer(token),
    ])
    .await;
    let scraping = Instant::now();
    prom.wait_up("drover-roles", WAIT).await;
    prom.wait_up("drover-manager", WAIT).await;
    let promql = r#"redis_connected_clients{cluster="prod",service="cache",role_type="primary"}"#;
    let agree = |want: &'static str, ok: fn(f64) -> bool| {
        let prom = &prom;
        async move {
            wait_for(WAIT, want, || async {
                let m1 = manager_value(rest, "redis_connected_clients", "cache-primary").await?;
                let answer = prom.query(promql).await?;
                let m2 = manager_value(rest, "redis_connected_clients", "cache-primary").await?;
                let s = single(&answer).ok_or_else(|| format!("PromQL {promql}: {answer:?}"))?;
                let expected = [("role", "cache-primary"), ("host", "redis-a"), ("job", "drover-roles")];
                if expected.iter().any(|(k, v)| s.label(k) != *v) {
                    return Err(format!("labels of {s:?}"));
                }
                if m1 == m2 && s.value == m1 && ok(s.value) {
                    Ok(s.value)
                } else {
                    Err(format!("PromQL {} between the manager's {m1} and {m2}", s.value))
                }
            })
            .await
        }
    };
    let seen =
        agree("Prometheus to give the manager's client count with the clients held", |v| v >= (HELD + 1) as f64).await;
    eprintln!("prometheus: {promql} = {seen} {:.1}s after it started", scraping.elapsed().as_secs_f64());
    let sum_by =
        prom.query(r#"sum by (role_type) (redis_used_memory_bytes{cluster="prod",service="cache"})"#).await.unwrap();
    assert_eq!(sum_by.len(), 2, "{sum_by:?}");
    assert!(sum_by.iter().all(|s| s.value >= 4.0 * MIB), "{sum_by:?}");
    let up = prom.query(r#"sum(role_up{service="cache"})"#).await.unwrap();
    assert_eq!(single(&up).map(|s| s.value), Some(2.0), "{up:?}");
    let sessions = prom.query(r#"drover_agent_sessions_open{job="drover-manager"}"#).await.unwrap();
    assert_eq!(single(&sessions).map(|s| s.value), Some(2.0), "{sessions:?}");
    let heartbeats = prom.query("drover_agent_heartbeats_total").await.unwrap();
    assert!(single(&heartbeats).is_some_and(|s| s.value > 0.0), "{heartbeats:?}");

    // Closing the held connections: the manager and Prometheus follow.
    held.clear();
    let fell = agree("Prometheus to follow the client count down", |v| v <= 2.0).await;
    eprintln!("prometheus: {promql} fell to {fell} after the held connections closed");
    eprintln!("redis test: {:.1}s in all", started.elapsed().as_secs_f64());
    drop(prom);
    fleet.assert_quiet_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ensemble_reports_one_leader_and_two_synced_followers() {
    init_logging();
    let started = Instant::now();
    const HOSTS: [&str; 3] = ["zk-a", "zk-b", "zk-c"];
    let fleet = start_fleet(&HOSTS, &[build_parcel("jre", None), build_parcel("zookeeper", None)]).await;
    let rest = &fleet.rest;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    // As in zookeeper_e2e.rs: peers reach each other on the hosts' shared
    // address, clients use 127.0.0.1, each server on its own ports.
    let mut client_ports = BTreeMap::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let name = format!("zk-{}", i + 1);
        let port = free_port();
        let values = json!({"client_port": port, "peer_port": free_port(), "election_port": free_port()});
        fleet.add_role("zk", "server", host, &name, values).await;
        client_ports.insert(name, port);
    }
    fleet.run_command("zk", json!({"name": "start"}), ZK_WAIT).await;
    let ports: Vec<u16> = client_ports.values().copied().collect();
    wait_for_quorum(&ports, ZK_WAIT, "one leader and two followers").await;
    let quorum = Instant::now();
    eprintln!("zookeeper: quorum after {:.1}s", started.elapsed().as_secs_f64());

    let mut leader = None;
    for (name, port) in &client_ports {
        if srvr(*port).await == Srvr::Serving("leader".into()) {
            leader = Some(name.clone());
        }
    }
    let leader = leader.expect("srvr names a leader");

    // Each server's latest values: the leader is the one srvr names, with
    // both followers synced; the modes agree.
    wait_for(ZK_WAIT, "one leader with two synced followers in the servers' metrics", || async {
        let is_leader = latest(rest, r#"zookeeper_is_leader{cluster="prod",service="zk"}"#).await?;
        let synced = latest_of(rest, r#"zookeeper_synced_followers{service="zk"}"#, "role", &leader).await;
        let followers = latest(rest, r#"zookeeper_mode{service="zk",mode="follower"}"#).await?;
        let leaders: Vec<&str> = is_leader.iter().filter(|(_, v)| *v == 1.0).map(|(l, _)| l["role"].as_str()).collect();
        let zeros = is_leader.iter().filter(|(_, v)| *v == 0.0).count();
        let ok = is_leader.len() == 3
            && leaders == [leader.as_str()]
            && zeros == 2
            && synced == Ok(2.0)
            && followers.len() == 2
            && followers.iter().all(|(l, v)| *v == 1.0 && l["role"] != leader);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "is_leader {is_leader:?}, synced followers of {leader} {synced:?}, follower modes {followers:?}"
            ))
        }
    })
    .await;
    eprintln!(
        "zookeeper: leader and synced followers reported {:.1}s after the quorum",
        quorum.elapsed().as_secs_f64()
    );

    // Summed over the service for a whole step: one leader.
    wait_for(WAIT, "zookeeper_is_leader to sum to 1 over the service", || async {
        let sum = last_full_step(rest, r#"zookeeper_is_leader{cluster="prod",service="zk"}"#, "sum", "service").await?;
        let one: Labels = [("service".to_owned(), "zk".to_owned())].into();
        if sum == [(one, 1.0)] { Ok(()) } else { Err(format!("{sum:?}")) }
    })
    .await;
    fleet.run_command("zk", json!({"name": "stop"}), ZK_WAIT).await;
    eprintln!("zookeeper test: {:.1}s in all", started.elapsed().as_secs_f64());
    fleet.assert_quiet_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_counts_held_connections_and_requests() {
    init_logging();
    let started = Instant::now();
    let fleet = start_fleet(&["nginx-a"], &[build_parcel("nginx", None)]).await;
    let rest = &fleet.rest;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "web", "type": "nginx"}))).await;
    let port = free_port();
    fleet.add_role("web", "server", "nginx-a", "web-server-1", json!({"bind": "127.0.0.1", "port": port})).await;
    fleet.run_command("web", json!({"name": "start"}), WAIT).await;
    let role = |m: &str| format!("{m}{{cluster=\"prod\",service=\"web\",role=\"web-server-1\"}}");

    let before = wait_for(WAIT, "nginx_requests_total of web-server-1", || async {
        latest_of(rest, &role("nginx_requests_total"), "role_type", "server").await
    })
    .await;

    // Three connections held in the middle of a request, and 25 requests.
    const HELD: usize = 3;
    const REQUESTS: usize = 25;
    let mut held = Vec::new();
    for _ in 0..HELD {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: held\r\n").await.unwrap();
        held.push(s);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    for _ in 0..REQUESTS {
        let r = client.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let burst = SystemTime::now();
    let rise = Instant::now();
    let (active, requests) = wait_for(WAIT, "the held connections and the requests in nginx's metrics", || async {
        let active = latest_of(rest, &role("nginx_active_connections"), "role_type", "server").await?;
        let reading = latest_of(rest, &role("nginx_reading"), "role_type", "server").await?;
        let requests = latest_of(rest, &role("nginx_requests_total"), "role_type", "server").await?;
        // The collector's own connection is active too.
        if active > HELD as f64 && reading >= HELD as f64 && requests >= before + REQUESTS as f64 {
            Ok((active, requests))
        } else {
            Err(format!("active {active}, reading {reading}, requests {requests} (before {before})"))
        }
    })
    .await;
    eprintln!(
        "nginx: {active} active connections, requests {before} -> {requests}, {:.1}s after the burst",
        rise.elapsed().as_secs_f64()
    );
    // The burst shows as a rate above the collector's own (one request per 10 s).
    let from = rfc3339(burst - Duration::from_secs(15));
    let answer = query(
        rest,
        &[("series", &role("nginx_requests_per_second")), ("from", &from), ("step", "1s"), ("stat", "max")],
    )
    .await
    .unwrap();
    let peak =
        answer["series"][0]["values"].as_array().into_iter().flatten().filter_map(Value::as_f64).fold(0.0, f64::max);
    assert!(peak > 1.0, "nginx_requests_per_second peaked at {peak}: {answer}");
    drop(held);
    eprintln!("nginx test: {:.1}s in all", started.elapsed().as_secs_f64());
    fleet.assert_quiet_logs();
}
