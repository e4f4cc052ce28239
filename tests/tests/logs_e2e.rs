//! Logs with real agents, Redis and ZooKeeper: three Redis roles on three agents
//! write their logs; a search finds the startup line on all three with host
//! and role; `since` leaves older lines out; a followed role log delivers a
//! line Redis writes while it is followed (latency printed, not asserted);
//! the agent-log endpoint returns the agent's own lines; `drover logs` run as
//! a process prints prefixed lines; ZooKeeper's zookeeper.log is searched
//! with its level and time; a host whose agent is killed is named in
//! the search result.

use std::time::{Duration, Instant, SystemTime};

use drover_tests::fleet::{Fleet, wait_for};
use drover_tests::init_logging;
use drover_tests::parcels::build_parcel;
use drover_tests::procs::{bin, free_port};
use drover_tests::resp;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
const HOSTS: [&str; 3] = ["logs-a", "logs-b", "logs-c"];
const READY: &str = "Ready to accept connections";

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

async fn search(fleet: &Fleet, params: &str) -> Value {
    fleet.rest.get::<Value>(&format!("/api/v1/logs/search?cluster=prod&service=cache&{params}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_zookeeper_logs_searched_followed_and_printed_across_three_agents() {
    init_logging();
    let parcels = [build_parcel("redis", None), build_parcel("jre", None), build_parcel("zookeeper", None)];
    let mut fleet = Fleet::start(&HOSTS, &parcels, &[]).await;
    let rest = &fleet.rest;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let primary_port = free_port();
    fleet.add_role("cache", "primary", HOSTS[0], "cache-primary", json!({"port": primary_port})).await;
    fleet.add_role("cache", "replica", HOSTS[1], "cache-replica-b", json!({"port": free_port()})).await;
    fleet.add_role("cache", "replica", HOSTS[2], "cache-replica-c", json!({"port": free_port()})).await;
    fleet.run_command("cache", json!({"name": "start"}), WAIT).await;

    // A search finds Redis's startup line on all three hosts, with host and role.
    let q = format!("q={}", enc(READY));
    let found = wait_for(WAIT, "the startup line of every Redis role", || async {
        let r = search(&fleet, &q).await;
        let mut seen: Vec<(String, String)> = r["matches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| (m["hostname"].as_str().unwrap_or("").to_owned(), m["role"].as_str().unwrap_or("").to_owned()))
            .collect();
        seen.sort();
        seen.dedup();
        if seen.len() == 3 { Ok(r) } else { Err(format!("{seen:?} in {r}")) }
    })
    .await;
    let m = &found["matches"][0];
    assert_eq!(
        (&m["cluster"], &m["service"], &m["stream"]),
        (&json!("prod"), &json!("cache"), &json!("stdout")),
        "{m}"
    );
    assert!(m["time"].is_string() && m["level"] == "info", "the redis format gives time and level: {m}");
    assert!(found["failed_hosts"].as_array().unwrap().is_empty(), "{found}");

    // `since` after the startup leaves those lines out.
    let after = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(1)).to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = search(&fleet, &format!("{q}&since={}", enc(&after))).await;
    assert_eq!(r["matches"], json!([]), "{r}");

    // Follow the primary's log while Redis writes a line (BGSAVE logs at notice).
    let url = fleet.rest.url("/api/v1/clusters/prod/services/cache/roles/cache-primary/logs?follow=true&tail=1");
    let resp = reqwest::Client::new().get(url).basic_auth("admin", Some(&fleet.manager.password)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    // The tail line first, so the follow is established before Redis writes.
    while !text.contains("event: line") {
        let chunk = tokio::time::timeout(WAIT, body.next()).await.expect("the tail line").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let asked = Instant::now();
    resp::command(primary_port, &["BGSAVE"]).await.unwrap();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("Background saving started") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no BGSAVE line in the followed log: {text}");
    eprintln!("logs: a followed line arrived {:.0} ms after BGSAVE", asked.elapsed().as_secs_f64() * 1000.0);
    drop(body);

    // The agent's own log.
    let id = fleet.host_id(HOSTS[0]).to_owned();
    let r: Value = fleet.rest.get(&format!("/api/v1/hosts/{id}/agent-log?tail=20")).await.unwrap();
    let lines = r["lines"].as_array().cloned().unwrap_or_default();
    assert!(!lines.is_empty() && lines.iter().all(|l| l["stream"] == "agent"), "{r}");

    // The CLI as a process: prefixed lines.
    let out = std::process::Command::new(bin("drover"))
        .args(["--url", &fleet.rest.url(""), "--user", "admin", "--password", &fleet.manager.password])
        .args(["logs", "prod/cache", "--grep", READY])
        .output()
        .expect("run drover logs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for (host, role) in [(HOSTS[0], "cache-primary"), (HOSTS[1], "cache-replica-b"), (HOSTS[2], "cache-replica-c")] {
        assert!(stdout.contains(&format!("{host} {role} | ")), "{host} {role} missing in:\n{stdout}");
    }

    // ZooKeeper's own log file (log4j, stream `file`) read with the zookeeper format.
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    let zk = json!({"client_port": free_port(), "peer_port": free_port(), "election_port": free_port()});
    fleet.add_role("zk", "server", HOSTS[1], "zk-1", zk).await;
    fleet.run_command("zk", json!({"name": "start"}), Duration::from_secs(180)).await;
    let r = wait_for(Duration::from_secs(180), "ZooKeeper's log line binding its client port", || async {
        let r: Value = rest.get("/api/v1/logs/search?cluster=prod&service=zk&q=binding%20to%20port").await.unwrap();
        let m = r["matches"].as_array().and_then(|m| m.iter().find(|m| m["stream"] == "file").cloned());
        m.ok_or_else(|| r.to_string())
    })
    .await;
    assert_eq!(
        (&r["hostname"], &r["role"], &r["file"]),
        (&json!(HOSTS[1]), &json!("zk-1"), &json!("zookeeper.log")),
        "{r}"
    );
    assert!(r["time"].is_string() && r["level"] == "info", "the zookeeper format gives time and level: {r}");

    // A host whose agent is down is named.
    fleet.agents[2].kill();
    let r = wait_for(WAIT, "the killed agent's host named in the search", || async {
        let r = search(&fleet, &q).await;
        if r["failed_hosts"] == json!([HOSTS[2]]) { Ok(r) } else { Err(r.to_string()) }
    })
    .await;
    assert!(r["matches"].as_array().unwrap().iter().any(|m| m["hostname"] == HOSTS[0]), "{r}");
    fleet.restart_agent(2, HOSTS[2]);
}
