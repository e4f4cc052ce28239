//! `drover-agent-rss`: the resident memory of a real `drover-agent` that
//! supervises three roles with their metric collectors (Redis `INFO`,
//! ZooKeeper `mntr`, nginx `stub_status`), as #13 asks (≤ 12 MiB).
//!
//! Starts a manager and one agent ([`drover_tests::fleet::Fleet`], the
//! binaries of `DROVER_BIN_DIR`, by default next to this one), makes the
//! shipped Redis, JRE + ZooKeeper and nginx parcels active on it, runs one role
//! of each, waits until each role's service metrics reach the manager, then
//! samples the agent's `VmRSS` every second for `--duration` and prints the
//! figures. The roles' own processes are children of the agent, not counted.

use std::time::{Duration, Instant};

use clap::Parser;
use drover_tests::fleet::{Fleet, wait_for};
use drover_tests::parcels::build_parcel;
use drover_tests::procs::free_port;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Measures a real agent's memory with three supervised roles and their metric collectors")]
struct Args {
    /// How long to sample the agent's memory once every collector reports.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

const WAIT: Duration = Duration::from_secs(180);

/// `VmRSS` and `VmHWM` of `pid` in MiB.
fn memory(pid: u32) -> anyhow::Result<(f64, f64)> {
    anyhow::ensure!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the agent (pid {pid}) is gone");
    Ok(drover_tests::procs::memory_mib(&pid.to_string()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let parcels = ["redis", "jre", "zookeeper", "nginx"].map(|p| build_parcel(p, None));
    eprintln!("agent-rss: parcels ready after {:.0}s", started.elapsed().as_secs_f64());
    let fleet = Fleet::start(&["rss-host"], &parcels, &[]).await;
    let pid = fleet.agents[0].pid().ok_or_else(|| anyhow::anyhow!("the agent has no pid"))?;
    let mut stages = vec![("enrolled, 4 parcels distributed and active", memory(pid)?)];
    let rest = &fleet.rest;
    let services = [
        ("cache", "redis", "primary", json!({"port": free_port()}), "redis_connected_clients"),
        (
            "zk",
            "zookeeper",
            "server",
            json!({"client_port": free_port(), "peer_port": free_port(), "election_port": free_port()}),
            "zookeeper_znode_count",
        ),
        ("web", "nginx", "server", json!({"bind": "127.0.0.1", "port": free_port()}), "nginx_requests_total"),
    ];
    for (name, kind, role_type, values, _) in &services {
        rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": name, "type": kind}))).await;
        fleet.add_role(name, role_type, "rss-host", &format!("{name}-1"), values.clone()).await;
        fleet.run_command(name, json!({"name": "start"}), WAIT).await;
    }
    stages.push(("3 roles started", memory(pid)?));
    for (name, _, _, _, metric) in &services {
        let path = format!("/api/v1/metrics/series?match={metric}%7Bservice%3D%22{name}%22%7D");
        wait_for(WAIT, &format!("{metric} of {name}"), || async {
            let v: Value = rest.get(&path).await.map_err(|e| e.to_string())?;
            let n = v["items"].as_array().map_or(0, |i| i.len());
            if n > 0 { Ok(()) } else { Err(format!("no {metric} yet")) }
        })
        .await;
    }
    eprintln!(
        "agent-rss: 3 roles running, every collector reporting after {:.0}s; sampling for {:?}",
        started.elapsed().as_secs_f64(),
        args.duration
    );
    let (mut max, mut sum, mut n) = (0.0f64, 0.0, 0u32);
    let until = Instant::now() + args.duration;
    while Instant::now() < until {
        let (rss, _) = memory(pid)?;
        (max, sum, n) = (max.max(rss), sum + rss, n + 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (last, hwm) = memory(pid)?;
    println!("== drover-agent-rss: one agent, 3 supervised roles (Redis, ZooKeeper, nginx) with their collectors ==");
    println!(
        "agent VmRSS over {n} samples: mean {:.1} MiB, max {max:.1} MiB, last {last:.1} MiB (target <= 12)",
        sum / f64::from(n.max(1))
    );
    for (stage, (rss, hwm)) in stages {
        println!("agent VmRSS {rss:.1} MiB (VmHWM {hwm:.1} MiB): {stage}");
    }
    println!("agent VmHWM (high-water mark since start): {hwm:.1} MiB");
    println!("agent threads: {}", std::fs::read_dir(format!("/proc/{pid}/task"))?.count());
    Ok(())
}
