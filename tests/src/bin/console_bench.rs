//! Console page budgets (issue 11): starts an in-process manager on SQLite,
//! fills the inventory with `--hosts` hosts (enrolled through the store, as
//! agents enrolling would), a week of metric history for one host and a
//! cluster with services, signs in, then requests each page `--requests`
//! times one after another and prints latency percentiles (measured at the
//! client over loopback: an upper bound of the server's time) and the bytes
//! each page transfers, with and without its stylesheet and script (a cold
//! cache).
//!
//! `cargo run --release -p drover-tests --bin drover-console-bench -- --hosts 10000`

use std::time::{Duration, Instant};

use clap::Parser;
use drover_manager::model::{DiskUsage, HostKind, HostMetrics, Labels, now_millis, rfc3339};
use drover_manager::store::{PointRec, PointTable};
use drover_manager::{Manager, ManagerConfig, fixtures};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(about = "Measures the console's page times and sizes with a large inventory")]
struct Args {
    /// Hosts in the inventory.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Sign in as a user with this role (`viewer@prod`, `operator@prod`, ...)
    /// instead of `admin`; half the hosts then join cluster `prod`, so the
    /// user's lists are filtered to them. Pages the role may not open are
    /// reported as forbidden.
    #[arg(long, value_name = "ROLE[@CLUSTER]")]
    as_role: Option<String>,
}

const USER: &str = "bench-user";

const PASSWORD: &str = "console-bench-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    let manager =
        Manager::start(config, TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?)
            .await?;
    let state = manager.state.clone();
    let started = Instant::now();
    let now = now_millis();
    for i in 0..args.hosts {
        let mut facts = fixtures::facts(
            &format!("node-{i:05}.dc1.example"),
            &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
        );
        facts.kind = if i % 3 == 0 { HostKind::Container } else { HostKind::Vm };
        facts.cpu_cores = 16;
        facts.memory_bytes = 64 << 30;
        let labels: Labels = [
            ("rack".to_owned(), format!("r{}", i % 40)),
            ("tier".to_owned(), ["web", "db", "cache"][i % 3].to_owned()),
        ]
        .into();
        fixtures::enroll(&state, &format!("host-{i:05}"), facts, labels).await?;
    }
    eprintln!("{} hosts enrolled in {:.1?}", args.hosts, started.elapsed());

    // A week of history for host-00000: one heartbeat through the registry
    // creates its series, then hourly rollups for the week and minute rollups
    // for the last hour, as the manager's rollups write them.
    let metrics = HostMetrics {
        at: rfc3339(now),
        cpu_percent: 50.0,
        memory_used_bytes: 8 << 30,
        memory_total_bytes: 64 << 30,
        load1: 1.0,
        load5: 1.0,
        load15: 1.0,
        disks: vec![DiskUsage { mount_point: "/".into(), used_bytes: 10 << 30, total_bytes: 100 << 30 }],
        network_rx_bytes: 0,
        network_tx_bytes: 0,
        uptime_seconds: 3600,
    };
    anyhow::ensure!(state.registry.heartbeat_with_roles("host-00000", metrics, vec![]), "host-00000 is not live");
    state.registry.flush().await?;
    let series: Vec<(i64, String)> = state
        .store
        .all_series()
        .await?
        .into_iter()
        .filter(|s| s.entity_kind == "host" && s.entity_id == "host-00000")
        .map(|s| (s.id, s.name))
        .collect();
    let now_s = now / 1000;
    for (table, step, n) in [(PointTable::Hour, 3600, 7 * 24), (PointTable::Minute, 60, 60)] {
        let mut points = Vec::new();
        for (id, name) in &series {
            for k in 1..=n {
                let v = match name.as_str() {
                    "host_cpu_percent" => (k % 100) as f64,
                    "host_network_rx_bytes_total" => (n - k) as f64 * 1e6,
                    "host_network_tx_bytes_total" => (n - k) as f64 * 5e5,
                    "host_disk_used_ratio" => 0.1,
                    "host_load1" | "host_load5" | "host_load15" => 1.0,
                    other if other.starts_with("host_disk") => (10u64 << 30) as f64,
                    _ => (8u64 << 30) as f64,
                };
                let t = now_s / step * step - k * step;
                points.push(PointRec { series_id: *id, t, min: v, max: v, sum: v, count: 1, last: v });
            }
        }
        state.store.insert_rollup_points(table, &points).await?;
    }

    let api = reqwest::Client::new();
    let base = format!("http://{}", manager.http_addr);
    let rest = |m: reqwest::Method, path: &str, body: serde_json::Value| {
        api.request(m, format!("{base}/api/v1{path}")).basic_auth("admin", Some(PASSWORD)).json(&body).send()
    };
    rest(reqwest::Method::POST, "/clusters", json!({"name": "prod"})).await?.error_for_status()?;
    for s in ["cache", "sessions", "queue"] {
        rest(reqwest::Method::POST, "/clusters/prod/services", json!({"name": s, "type": "redis"}))
            .await?
            .error_for_status()?;
    }

    let mut user = "admin";
    if let Some(role) = &args.as_role {
        let grant = drover_manager::users::Grant::parse(role)
            .ok_or_else(|| anyhow::anyhow!("--as-role {role:?}: use ROLE or ROLE@CLUSTER"))?;
        let ids: Vec<String> = (0..args.hosts).step_by(2).map(|i| format!("host-{i:05}")).collect();
        for chunk in ids.chunks(1000) {
            rest(reqwest::Method::POST, "/clusters/prod/hosts", json!({"host_ids": chunk}))
                .await?
                .error_for_status()?;
        }
        rest(reqwest::Method::POST, "/users", json!({"username": USER, "password": PASSWORD, "grants": [grant]}))
            .await?
            .error_for_status()?;
        user = USER;
        println!("signed in as {USER} with {role}; {} hosts in cluster prod", ids.len());
    }

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let login = client
        .post(format!("{base}/login"))
        .form(&[("username", user), ("password", PASSWORD), ("next", "/")])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("drover_session="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("sign-in set no session cookie"))?
        .to_owned();

    let assets: usize = {
        let mut n = 0;
        for a in ["/static/drover.css", "/static/drover.js"] {
            n += client.get(format!("{base}{a}")).send().await?.bytes().await?.len();
        }
        n
    };
    println!(
        "{} hosts; {} requests per page, one at a time; stylesheet + script {} bytes",
        args.hosts, args.requests, assets
    );
    println!("{:<44} {:>8} {:>8} {:>8} {:>10} {:>10}", "page", "p50 ms", "p99 ms", "max ms", "bytes", "cold bytes");
    for page in [
        "/",
        "/hosts",
        "/hosts?per=200",
        "/hosts?label=rack%3Dr7%2Ctier!%3Ddb",
        "/hosts?q=node-0999&sort=memory&dir=desc",
        "/hosts?page=150",
        "/hosts/host-00000",
        "/hosts/host-00000?range=24h",
        "/hosts/host-00000?range=7d",
        "/hosts/add",
        "/clusters",
        "/clusters/prod",
        "/clusters/prod/services/new",
        "/clusters/prod/services/cache",
        "/clusters/prod/services/cache/config",
        "/clusters/prod/services/cache/config/history",
        "/commands",
        "/parcels",
        "/audit",
        "/events",
        "/account",
    ] {
        let mut hist = Histogram::<u64>::new(3)?;
        let mut bytes = 0;
        for _ in 0..args.requests {
            let t = Instant::now();
            let resp = client.get(format!("{base}{page}")).header("cookie", &cookie).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            hist.record(t.elapsed().as_micros() as u64)?;
            if status == 403 && args.as_role.is_some() {
                break;
            }
            anyhow::ensure!(status == 200, "{page}: HTTP {status}");
            bytes = body.len();
        }
        if bytes == 0 {
            println!("{page:<44} forbidden for this role");
            continue;
        }
        let ms = |v: u64| Duration::from_micros(v).as_secs_f64() * 1000.0;
        println!(
            "{:<44} {:>8.1} {:>8.1} {:>8.1} {:>10} {:>10}",
            page,
            ms(hist.value_at_quantile(0.5)),
            ms(hist.value_at_quantile(0.99)),
            ms(hist.max()),
            bytes,
            bytes + assets
        );
    }
    manager.shutdown().await;
    Ok(())
}
