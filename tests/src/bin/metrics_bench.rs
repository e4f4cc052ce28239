//! The metrics path at fleet scale (issue 13): starts an in-process manager,
//! enrolls `--hosts` hosts with five roles each (five Redis services of one
//! cluster), then feeds every host's heartbeat (12 host series and 8 process
//! series per role, 52 series a host) at a simulated `--interval` in real
//! time through the registry, as the gRPC session hands heartbeats over; the
//! manager's own flusher and rollups run as in production. It prints the
//! CPU time and memory the ingest costs, the points per second, the bytes
//! per stored point and row and the projected growth a day, one alert cycle
//! of the built-in rules and `--rules` generated threshold rules, and the
//! latencies of a 24 h and a 7 d chart of one series and of 1 h aggregates
//! over every host (history backfilled as rollup rows, so it runs in
//! minutes).
//!
//! `cargo run --release -p drover-tests --bin drover-metrics-bench -- --hosts 10000`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use drover_manager::domain::Actor;
use drover_manager::domain::metrics::{MetricQuery, ProcessFigures, RoleReport, Sample};
use drover_manager::model::{DiskUsage, HostMetrics, now_millis, rfc3339};
use drover_manager::store::{PointRec, PointTable};
use drover_manager::{AppState, Manager, ManagerConfig, fixtures};
use hdrhistogram::Histogram;
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The allocator of the `drover-manager` binary (jemalloc), so that the
/// memory and CPU figures are the manager's, not glibc malloc's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(about = "Measures the manager's metrics path: ingest, storage, queries and alert rules at fleet scale")]
struct Args {
    /// Hosts, each with five roles.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Heartbeat rounds to feed (each `--interval` long, in real time).
    #[arg(long, default_value_t = 24)]
    intervals: u32,
    /// The simulated heartbeat interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Service samples per role per heartbeat besides the 8 process series.
    #[arg(long, default_value_t = 0)]
    samples_per_role: usize,
    /// Database: a SQLite file path (created) or a `postgres://` URL of an
    /// empty database. Default: a SQLite file in a temporary directory.
    #[arg(long)]
    database: Option<String>,
    /// Generated threshold rules besides the built-in ones.
    #[arg(long, default_value_t = 92)]
    rules: usize,
    /// The share of series each generated rule's threshold picks (0.001:
    /// ten of 10,000 hosts), so that few alerts fire, as in a healthy fleet.
    #[arg(long, default_value_t = 0.001)]
    firing: f64,
    /// Alert cycles to time.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Times each query is asked.
    #[arg(long, default_value_t = 20)]
    queries: usize,
}

const PASSWORD: &str = "metrics-bench-password";
const ROLES: usize = 5;
const CLUSTER: &str = "bench";
/// Hosts whose `host_cpu_percent` gets a week of minute rows (the charts).
const CHART_HOSTS: usize = 10;

fn hostname(i: usize) -> String {
    format!("node-{i:05}.dc1.example")
}

fn host_id(i: usize) -> String {
    format!("host-{i:05}")
}

/// Process CPU seconds (user + system) of `who`.
fn cpu_seconds(who: UsageWho) -> f64 {
    getrusage(who)
        .map(|u| {
            let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// `(VmRSS, VmHWM)` of this process in MiB.
fn memory_mib() -> (f64, f64) {
    drover_tests::procs::memory_mib("self")
}

/// A value in `[0, 1)` that changes with host, series and round.
fn wobble(host: usize, series: usize, round: u64) -> f64 {
    let x = (host as u64).wrapping_mul(2_654_435_761) ^ (series as u64).wrapping_mul(40_503) ^ round.wrapping_mul(97);
    (x.wrapping_mul(6_364_136_223_846_793_005) >> 40) as f64 / (1u64 << 24) as f64
}

/// Host `i`'s heartbeat in round `k`.
fn heartbeat(i: usize, k: u64, roles: &[String], samples: usize) -> (HostMetrics, Vec<RoleReport>) {
    let m = HostMetrics {
        at: String::new(),
        cpu_percent: 100.0 * wobble(i, 0, k),
        memory_used_bytes: (8 << 30) + (wobble(i, 1, k) * 1e9) as u64,
        memory_total_bytes: 64 << 30,
        load1: 16.0 * wobble(i, 2, k),
        load5: 8.0 * wobble(i, 3, k / 6),
        load15: 4.0 * wobble(i, 4, k / 18),
        disks: vec![DiskUsage { mount_point: "/".into(), used_bytes: (100 << 30) + k * 4096, total_bytes: 500 << 30 }],
        network_rx_bytes: k * 1_000_000 + i as u64,
        network_tx_bytes: k * 500_000 + i as u64,
        uptime_seconds: 86_400 + k * 10,
    };
    let reports = roles
        .iter()
        .enumerate()
        .map(|(r, role_id)| RoleReport {
            role_id: role_id.clone(),
            process: Some(ProcessFigures {
                cpu_percent: 100.0 * wobble(i, 10 + r, k),
                rss_bytes: (256 << 20) + (wobble(i, 20 + r, k) * 1e8) as u64,
                threads: 8,
                open_fds: 40 + r as u32,
                uptime_seconds: 3600 + k * 10,
                restarts: 0,
                last_exit_status: 0,
            }),
            samples: (0..samples)
                .map(|s| Sample {
                    name: format!("bench_sample_{s}"),
                    value: wobble(i, 100 + s, k),
                    labels: Default::default(),
                    at_ms: 0,
                })
                .collect(),
            collect_error: String::new(),
        })
        .collect();
    (m, reports)
}

struct Rest {
    client: reqwest::Client,
    base: String,
}

impl Rest {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .client
            .request(method.clone(), format!("{}/api/v1{path}", self.base))
            .basic_auth("admin", Some(PASSWORD))
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: HTTP {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Latencies in ms: p50, p99, max.
fn percentiles(h: &Histogram<u64>) -> (f64, f64, f64) {
    let ms = |us: u64| us as f64 / 1000.0;
    (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.max()))
}

fn mib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    config.database_url = args.database.as_ref().map(|d| {
        if d.starts_with("postgres://") || d.starts_with("postgresql://") {
            d.clone()
        } else {
            format!("sqlite://{d}?mode=rwc")
        }
    });
    // The bench runs alert cycles itself, and no host may turn lost while
    // the inventory is built.
    config.alerts_interval = Duration::from_secs(86_400);
    config.desired_resync_interval = Duration::from_secs(86_400);
    config.host_lost_after = Duration::from_secs(86_400);
    let manager =
        Manager::start(config, TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?)
            .await?;
    let state = manager.state.clone();
    anyhow::ensure!(
        state.store.all_series().await?.is_empty(),
        "the database already holds metric series: give an empty one"
    );
    let rest = Rest { client: reqwest::Client::new(), base: format!("http://{}", manager.http_addr) };
    let role_ids = setup(&state, &rest, args.hosts).await?;

    let ingest = ingest(&state, &args, role_ids).await?;
    let alerts = alert_cycles(&state, &args).await?;
    let storage = storage(&state, &args).await?;
    let queries = queries(&state, &args).await?;

    println!();
    println!("== drover-metrics-bench: {} hosts x {ROLES} roles, {} series ==", args.hosts, ingest.series);
    println!("{:<58} {:>22} {:>14}", "what", "measured", "target");
    let row = |what: &str, measured: String, target: &str| println!("{what:<58} {measured:>22} {target:>14}");
    row(
        "ingest: points/s (heartbeats recorded, flushed)",
        format!("{:.0}", ingest.points_per_s),
        &format!("{:.0}", ingest.series as f64 / args.interval.as_secs_f64()),
    );
    row("ingest: manager CPU, cores (process less the generator)", format!("{:.3}", ingest.cores), "<= 0.3");
    row("  of which recording heartbeats (feeder thread)", format!("{:.3}", ingest.record_cores), "");
    row("ingest: RSS growth, MiB (VmRSS after - before)", format!("{:.0}", ingest.rss_growth), "<= 200");
    row("ingest: RSS high-water mark growth, MiB", format!("{:.0}", ingest.hwm_growth), "");
    row("ingest: points dropped", format!("{}", ingest.dropped), "0");
    row("rollups: one minute-rollup run (every minute), s", format!("{:.2}", storage.minute_run), "");
    row("rollups: one hour's rollup (once an hour), projected, s", format!("{:.1}", storage.hour_run), "");
    row("rollups: average cores", format!("{:.3}", storage.minute_run / 60.0 + storage.hour_run / 3600.0), "");
    row("storage: bytes per raw point", format!("{:.1}", storage.raw_point), "");
    row("storage: bytes per minute rollup row", format!("{:.1}", storage.minute_row), "");
    row("storage: bytes per series row (with its indexes)", format!("{:.0}", storage.series_row), "");
    row("storage: raw points a day (kept 1 d by default)", mib(storage.raw_day), "");
    row("storage: minute rollups a day (kept 14 d)", mib(storage.minute_day), "");
    row("storage: hour rollups a day (kept 365 d): growth", mib(storage.hour_day), "<= 1 GiB");
    row("storage: steady state at default retentions", mib(storage.steady), "");
    for (what, (p50, p99, max)) in &queries {
        row(&format!("query: {what}, p50/p99/max ms"), format!("{p50:.1}/{p99:.1}/{max:.1}"), target_of(what));
    }
    for (what, (p50, p99, max)) in &alerts {
        row(&format!("alerts: {what}, p50/p99/max ms"), format!("{p50:.1}/{p99:.1}/{max:.1}"), target_of(what));
    }
    manager.shutdown().await;
    Ok(())
}

fn target_of(what: &str) -> &'static str {
    if what.starts_with("24 h chart") {
        "<= 50"
    } else if what.starts_with("1 h") && what.contains("10,000") || what.starts_with("1 h") && what.contains("hosts") {
        "<= 500"
    } else if what.starts_with("engine cycle,") {
        "<= 100"
    } else {
        ""
    }
}

/// Enrolls the hosts, puts them in one cluster with five Redis services of a
/// role per host each, and waits until the registry knows every role;
/// returns each host's role ids.
async fn setup(state: &Arc<AppState>, rest: &Rest, hosts: usize) -> anyhow::Result<Vec<Vec<String>>> {
    use reqwest::Method;
    let started = Instant::now();
    for i in 0..hosts {
        let facts = fixtures::facts(&hostname(i), &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256));
        fixtures::enroll(state, &host_id(i), facts, Default::default()).await?;
        if (i + 1) % 2000 == 0 {
            eprintln!("setup: {} hosts enrolled ({:.0?})", i + 1, started.elapsed());
        }
    }
    rest.call(Method::POST, "/clusters", json!({ "name": CLUSTER })).await?;
    let ids: Vec<String> = (0..hosts).map(host_id).collect();
    for chunk in ids.chunks(1000) {
        rest.call(Method::POST, &format!("/clusters/{CLUSTER}/hosts"), json!({ "host_ids": chunk })).await?;
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut roles = vec![Vec::with_capacity(ROLES); hosts];
    for s in 0..ROLES {
        let service = format!("svc{s}");
        let base = format!("/clusters/{CLUSTER}/services/{service}");
        rest.call(Method::POST, &format!("/clusters/{CLUSTER}/services"), json!({ "name": service, "type": "redis" }))
            .await?;
        rest.call(
            Method::PATCH,
            &format!("{base}/config"),
            json!({ "values": { "port": 7000 + s }, "message": "metrics bench: a port per service" }),
        )
        .await?;
        let body = |i: usize| json!({ "role_type": if i == 0 { "primary" } else { "replica" }, "host_id": host_id(i) });
        let mut answers = vec![rest.call(Method::POST, &format!("{base}/roles"), body(0)).await?];
        let rest_of: Vec<usize> = (1..hosts).collect();
        for chunk in rest_of.chunks(10_000) {
            let list: Vec<Value> = chunk.iter().map(|i| body(*i)).collect();
            let answer = rest.call(Method::POST, &format!("{base}/roles"), Value::Array(list)).await?;
            answers.extend(answer["items"].as_array().cloned().context("roles answer without items")?);
        }
        for role in answers {
            let host = role["host_id"].as_str().context("role without host_id")?;
            let id = role["id"].as_str().context("role without id")?;
            roles[*index.get(host).context("role on an unknown host")?].push(id.to_owned());
        }
        eprintln!("setup: service {service} with {hosts} roles ({:.0?})", started.elapsed());
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let missing = (0..hosts)
            .flat_map(|i| roles[i].iter().map(move |r| (i, r)))
            .filter(|(i, r)| state.registry.desired_role(&host_id(*i), r).is_none())
            .count();
        if missing == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{missing} roles never reached the registry");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("setup: {hosts} hosts, {} roles in the registry ({:.0?})", hosts * ROLES, started.elapsed());
    Ok(roles)
}

struct Ingest {
    series: u64,
    points_per_s: f64,
    cores: f64,
    record_cores: f64,
    rss_growth: f64,
    hwm_growth: f64,
    dropped: u64,
}

/// Feeds `--intervals` rounds of heartbeats in real time from a thread of
/// its own, each host once a round, spread evenly over the round.
async fn ingest(state: &Arc<AppState>, args: &Args, roles: Vec<Vec<String>>) -> anyhow::Result<Ingest> {
    const SLOTS: usize = 100;
    let hosts = args.hosts;
    let (interval, intervals, samples) = (args.interval, args.intervals, args.samples_per_role);
    let (rss0, hwm0) = memory_mib();
    let cpu0 = cpu_seconds(UsageWho::RUSAGE_SELF);
    let stats0 = state.registry.metrics.stats();
    let started = Instant::now();
    let feeder_state = state.clone();
    let feeder = std::thread::spawn(move || {
        let (mut build, mut record, mut late) = (0.0, 0.0, 0u32);
        for k in 0..u64::from(intervals) {
            let round = Instant::now();
            for slot in 0..SLOTS {
                let t0 = cpu_seconds(UsageWho::RUSAGE_THREAD);
                let batch: Vec<(usize, HostMetrics, Vec<RoleReport>)> = (slot * hosts / SLOTS
                    ..(slot + 1) * hosts / SLOTS)
                    .map(|i| {
                        let (m, r) = heartbeat(i, k, &roles[i], samples);
                        (i, m, r)
                    })
                    .collect();
                let t1 = cpu_seconds(UsageWho::RUSAGE_THREAD);
                for (i, m, r) in batch {
                    feeder_state.registry.heartbeat_with_roles(&host_id(i), m, r);
                }
                let t2 = cpu_seconds(UsageWho::RUSAGE_THREAD);
                build += t1 - t0;
                record += t2 - t1;
                let due = round + interval * (slot as u32 + 1) / SLOTS as u32;
                match due.checked_duration_since(Instant::now()) {
                    Some(wait) => std::thread::sleep(wait),
                    None => late += 1,
                }
            }
        }
        (build, record, late)
    });
    let mut last = (Instant::now(), cpu0);
    while !feeder.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last.0.elapsed() < interval {
            continue;
        }
        let s = state.registry.metrics.stats();
        let cpu = cpu_seconds(UsageWho::RUSAGE_SELF);
        let (rss, _) = memory_mib();
        eprintln!(
            "ingest: {:>4.0?} {} series, {} points, {} written, {} dropped; process {:.2} cores; RSS {:.0} MiB",
            started.elapsed(),
            s.series,
            s.points - stats0.points,
            s.points_written - stats0.points_written,
            s.points_dropped,
            (cpu - last.1) / last.0.elapsed().as_secs_f64(),
            rss
        );
        last = (Instant::now(), cpu);
    }
    let (build, record, late) = feeder.join().map_err(|_| anyhow::anyhow!("the feeder thread panicked"))?;
    // The flusher's last writes.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = state.registry.metrics.stats();
        if s.points_written + s.points_dropped >= s.points || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(UsageWho::RUSAGE_SELF) - cpu0;
    let (rss1, hwm1) = memory_mib();
    let s = state.registry.metrics.stats();
    let points = s.points - stats0.points;
    if late > 0 {
        eprintln!("ingest: the feeder fell behind its schedule in {late} slots");
    }
    eprintln!(
        "ingest: {points} points in {wall:.1} s; process CPU {cpu:.1} s, generator {build:.1} s, recording {record:.1} s"
    );
    Ok(Ingest {
        series: s.series,
        points_per_s: (s.points_written - stats0.points_written) as f64 / wall,
        cores: (cpu - build) / wall,
        record_cores: record / wall,
        rss_growth: rss1 - rss0,
        hwm_growth: hwm1 - hwm0,
        dropped: s.points_dropped - stats0.points_dropped,
    })
}

/// Creates the generated rules and times alert cycles over the ingested
/// values: the whole `run_cycle` (gathering the fleet and the rules from
/// the store, evaluating, recording transitions) and the engine alone.
async fn alert_cycles(state: &Arc<AppState>, args: &Args) -> anyhow::Result<Vec<(String, (f64, f64, f64))>> {
    use drover_manager::domain::alerts::AlertRuleSpec;
    let actor = Actor::system("metrics-bench");
    // Thresholds that about `--firing` of the series cross (values are
    // spread evenly over their range); disk, fds and threads never do.
    let q = 1.0 - args.firing;
    let host_rules = [
        ("host_cpu_percent", 100.0 * q),
        ("host_load1", 16.0 * q),
        ("host_memory_used_bytes", (8u64 << 30) as f64 + 1e9 * q),
        ("host_disk_used_ratio", 0.9),
        ("host_load5", 8.0 * q),
    ];
    let role_rules = [
        ("role_cpu_percent", 100.0 * q),
        ("role_memory_rss_bytes", (256u64 << 20) as f64 + 1e8 * q),
        ("role_open_fds", 1000.0),
        ("role_threads", 100.0),
    ];
    for j in 0..args.rules {
        // Two in five over every host's series, the rest over one
        // service's roles (a role per host); every tenth one aggregated or
        // over a window.
        let expr = if j % 5 < 2 {
            let (m, t) = host_rules[j % host_rules.len()];
            match j % 10 {
                0 => format!("avg_over_time({m}[5m]) > {t}"),
                _ => format!("{m} > {t}"),
            }
        } else {
            let (m, t) = role_rules[j % role_rules.len()];
            let service = format!("svc{}", j % ROLES);
            match j % 10 {
                3 => format!("max by (host) ({m}{{service=\"{service}\"}}) > {t}"),
                _ => format!("{m}{{service=\"{service}\"}} > {t}"),
            }
        };
        let spec: AlertRuleSpec = serde_json::from_value(json!({
            "name": format!("bench-rule-{j}"),
            "expr": expr,
            "for": "1m",
            "severity": "warning",
            "annotations": { "summary": "{{labels.host}} at {{value}}" },
        }))?;
        drover_manager::domain::alerts::create_rule(state, &actor, spec).await?;
    }
    let rules = drover_manager::domain::alerts::effective_rules(state).await?;
    eprintln!("alerts: {} rules ({} generated)", rules.len(), args.rules);
    let (mut whole, mut engine) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    // The cycle runs on several threads: its CPU time (the whole process's, over the cycle
    // and the 200 ms after it, so that frees deferred to other threads count) besides its
    // wall time.
    let mut engine_cpu = Histogram::<u64>::new(3)?;
    let mut transitions = 0;
    for _ in 0..args.cycles {
        let t = Instant::now();
        transitions += drover_manager::alerts::live::run_cycle(state).await?;
        whole.record(t.elapsed().as_micros() as u64)?;
        let now = now_millis();
        let fleet = drover_manager::alerts::live::gather(state, &state.alerts, now).await?;
        let rules = drover_manager::domain::alerts::effective_rules(state).await?;
        let mutes = drover_manager::alerts::live::Mutes::default();
        let (t, cpu) = (Instant::now(), cpu_seconds(UsageWho::RUSAGE_SELF));
        let _ = state.alerts.cycle(&fleet, &state.registry.metrics, rules, &mutes, now);
        engine.record(t.elapsed().as_micros() as u64)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        engine_cpu.record(((cpu_seconds(UsageWho::RUSAGE_SELF) - cpu) * 1e6) as u64)?;
    }
    eprintln!(
        "alerts: {transitions} transitions over {} cycles; {} alerts pending or firing",
        args.cycles,
        state.alerts.active().len()
    );
    let n = 8 + args.rules;
    Ok(vec![
        (format!("engine cycle, {n} rules + health tests"), percentiles(&engine)),
        ("engine cycle: CPU time, all threads".to_owned(), percentiles(&engine_cpu)),
        ("run_cycle (gather, evaluate, record)".to_owned(), percentiles(&whole)),
    ])
}

struct Storage {
    minute_run: f64,
    hour_run: f64,
    raw_point: f64,
    minute_row: f64,
    series_row: f64,
    raw_day: f64,
    minute_day: f64,
    hour_day: f64,
    steady: f64,
}

/// Rolls the ingested points up, then measures what the tables take.
async fn storage(state: &Arc<AppState>, args: &Args) -> anyhow::Result<Storage> {
    // One run of the manager's minute rollup (it runs every minute; with
    // three minutes of points or more behind it, as in steady state).
    let t = Instant::now();
    drover_manager::domain::metrics::roll_up(&state.store, now_millis()).await?;
    let minute_run = t.elapsed().as_secs_f64();
    // Every minute of the run, then its hours: the hour rollup reads every
    // minute row of an hour once, when the hour is over.
    let now_s = now_millis() / 1000;
    let span = i64::from(args.intervals) * args.interval.as_secs() as i64 + 600;
    state.store.rollup_minutes(now_s - span, now_s + 60).await?;
    let minute_rows = state.store.point_count(PointTable::Minute).await?;
    let t = Instant::now();
    state.store.rollup_hours(now_s - span - 3600, now_s + 3600).await?;
    let hours_took = t.elapsed().as_secs_f64();
    let series_n = state.registry.metrics.stats().series as f64;
    let hour_run = hours_took * (series_n * 60.0) / minute_rows.max(1) as f64;
    eprintln!(
        "storage: minute rollup run {minute_run:.2} s; hour rollup of {minute_rows} minute rows {hours_took:.2} s, \
         projected for a full hour {hour_run:.1} s"
    );
    let bytes: HashMap<String, u64> = state.store.metric_table_bytes().await?.into_iter().collect();
    let raw = state.store.point_count(PointTable::Raw).await?;
    let minute = state.store.point_count(PointTable::Minute).await?;
    let hour = state.store.point_count(PointTable::Hour).await?;
    let series = state.store.all_series().await?.len() as f64;
    let per = |table: &str, rows: u64| bytes.get(table).copied().unwrap_or(0) as f64 / rows.max(1) as f64;
    let raw_point = per("metric_points_raw", raw);
    let minute_row = per("metric_points_1m", minute);
    let hour_row = per("metric_points_1h", hour);
    let series_row = per("metric_series", series as u64);
    eprintln!("storage: {raw} raw points, {minute} minute rows, {hour} hour rows, {series} series; bytes {bytes:?}");
    let per_day = 86_400.0 / args.interval.as_secs_f64();
    // Rollup rows are the same size at both resolutions.
    let hour_row = if hour_row > 0.0 { hour_row.max(minute_row) } else { minute_row };
    let raw_day = series * per_day * raw_point;
    let minute_day = series * 1440.0 * minute_row;
    let hour_day = series * 24.0 * hour_row;
    let steady = raw_day + 14.0 * minute_day + series * series_row;
    Ok(Storage { minute_run, hour_run, raw_point, minute_row, series_row, raw_day, minute_day, hour_day, steady })
}

/// Backfills `host_cpu_percent` history (an hour of raw points and minute
/// rows for every host, a week of minute rows for a few), then times the
/// queries through the same domain function the REST API calls.
async fn queries(state: &Arc<AppState>, args: &Args) -> anyhow::Result<Vec<(String, (f64, f64, f64))>> {
    let started = Instant::now();
    let ids: HashMap<String, i64> = state
        .store
        .all_series()
        .await?
        .into_iter()
        .filter(|s| s.name == "host_cpu_percent")
        .map(|s| (s.host, s.id))
        .collect();
    let now_s = now_millis() / 1000;
    let hour_ago = now_s - 3600;
    let mut raw = Vec::new();
    let mut minutes = Vec::new();
    for i in 0..args.hosts {
        let Some(id) = ids.get(&hostname(i)).copied() else { continue };
        for t in (hour_ago..now_s - 600).step_by(args.interval.as_secs().max(1) as usize) {
            raw.push((id, t, 100.0 * wobble(i, 0, t as u64)));
        }
        let days = if i < CHART_HOSTS { 7 } else { 0 };
        for m in (now_s - 3600 - days * 86_400) / 60..(now_s - 600) / 60 {
            let v = 100.0 * wobble(i, 0, m as u64);
            minutes.push(PointRec { series_id: id, t: m * 60, min: v / 2.0, max: v, sum: 6.0 * v, count: 6, last: v });
        }
        if raw.len() >= 500_000 {
            state.store.insert_points(&raw).await?;
            raw.clear();
        }
        if minutes.len() >= 100_000 {
            state.store.insert_rollup_points(PointTable::Minute, &minutes).await?;
            minutes.clear();
        }
    }
    state.store.insert_points(&raw).await?;
    state.store.insert_rollup_points(PointTable::Minute, &minutes).await?;
    eprintln!("queries: history backfilled in {:.1?}", started.elapsed());

    let actor = Actor::system("metrics-bench");
    let at = |s: i64| Some(rfc3339(s * 1000));
    let one = hostname(CHART_HOSTS / 2);
    let cases: Vec<(String, MetricQuery)> = vec![
        (
            "24 h chart of one series".into(),
            MetricQuery {
                series: format!("host_cpu_percent{{host=\"{one}\"}}"),
                from: at(now_s - 86_400),
                ..Default::default()
            },
        ),
        (
            "7 d chart of one series".into(),
            MetricQuery {
                series: format!("host_cpu_percent{{host=\"{one}\"}}"),
                from: at(now_s - 7 * 86_400),
                ..Default::default()
            },
        ),
        (
            format!("1 h sum over {} hosts", args.hosts),
            MetricQuery {
                series: "host_cpu_percent".into(),
                from: at(now_s - 3600),
                agg: Some("sum".into()),
                ..Default::default()
            },
        ),
        (
            format!("1 h avg by (cluster), max stat, over {} hosts", args.hosts),
            MetricQuery {
                series: "host_cpu_percent".into(),
                from: at(now_s - 3600),
                agg: Some("avg".into()),
                by: Some("cluster".into()),
                stat: Some("max".into()),
                ..Default::default()
            },
        ),
        (
            format!("1 h max by (service) over {} role series", args.hosts * ROLES),
            MetricQuery {
                series: "role_cpu_percent".into(),
                from: at(now_s - 3600),
                agg: Some("max".into()),
                by: Some("service".into()),
                ..Default::default()
            },
        ),
    ];
    let mut out = Vec::new();
    for (what, q) in cases {
        let mut h = Histogram::<u64>::new(3)?;
        let mut shape = String::new();
        for _ in 0..args.queries {
            let t = Instant::now();
            let r = drover_manager::domain::metrics::query(state, &actor, &q).await?;
            h.record(t.elapsed().as_micros() as u64)?;
            shape = format!(
                "{} series, {} steps of {} s from {:?}",
                r.series.len(),
                r.series.first().map_or(0, |s| s.values.len()),
                r.step_seconds,
                r.resolution
            );
        }
        eprintln!("queries: {what}: {shape}");
        out.push((what, percentiles(&h)));
    }
    // The same 1 h sum read from raw points (what the query avoids).
    let pairs: Vec<(i64, u32)> = ids.values().map(|id| (*id, 0)).collect();
    let mut h = Histogram::<u64>::new(3)?;
    for _ in 0..args.queries.min(5) {
        let t = Instant::now();
        state
            .store
            .group_steps(
                PointTable::Raw,
                &pairs,
                (now_s - 3600) / 12 * 12,
                now_s,
                12,
                drover_manager::domain::metrics::Stat::Avg,
            )
            .await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    out.push((format!("(store) 1 h sum over {} hosts from raw points, 12 s steps", ids.len()), percentiles(&h)));
    Ok(out)
}
