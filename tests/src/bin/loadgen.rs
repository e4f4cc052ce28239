//! `drover-loadgen`: enrolls and runs many real agent sessions (real TLS, real
//! protocol, synthetic facts and metrics) from one process, and prints the
//! figures recorded in docs/benchmarks.md.
//!
//! ```text
//! drover-loadgen enroll   --count 1000 --save /tmp/ids.jsonl
//! drover-loadgen sessions --identities /tmp/ids.jsonl --duration 60s --manager-pid $(pidof drover-manager)
//! drover-loadgen fanout   --identities /tmp/ids.jsonl --count 1000 --changes 5
//! drover-loadgen parcels  --identities /tmp/ids.jsonl --count 100 --size-mb 100
//! drover-loadgen logs     --identities /tmp/ids.jsonl --count 100 --size-mb 100 --bundle-hosts 20
//! ```

#[path = "loadgen/fanout.rs"]
mod fanout;
#[path = "loadgen/logs.rs"]
mod logs;
#[path = "loadgen/parcels.rs"]
mod parcels;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use drover_agent::enroll::{self, Identity};
use drover_agent::session::{SessionConfig, SessionObserver};
use drover_proto::tls::ManagerAddr;
use drover_proto::token::EnrollmentToken;
use drover_tests::rest::Rest;
use drover_tests::{spawn_synthetic_session, synthetic_facts};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

/// Load generator for the Drover manager.
#[derive(Parser)]
#[command(name = "drover-loadgen", version, about)]
struct Cli {
    /// Manager REST address.
    #[arg(long, env = "DROVER_HTTP_ADDR", default_value = "127.0.0.1:7180", global = true)]
    http: String,
    /// Manager gRPC URL.
    #[arg(long, env = "DROVER_MANAGER", default_value = "https://127.0.0.1:7182", global = true)]
    manager: String,
    /// Admin user.
    #[arg(long, default_value = "admin", global = true)]
    user: String,
    /// Admin password (or DROVER_PASSWORD).
    #[arg(long, env = "DROVER_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll COUNT synthetic agents and report the enrollment rate.
    Enroll {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Save the identities (JSON lines) for `sessions --identities`.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Run one session per saved identity and report heartbeat latency and
    /// the manager's resource use.
    Sessions {
        /// Identities saved by `enroll --save`.
        #[arg(long)]
        identities: PathBuf,
        /// Use only the first N identities.
        #[arg(long)]
        count: Option<usize>,
        /// New sessions started per second (spreads the TLS handshakes).
        #[arg(long, default_value_t = 1000)]
        connect_rate: u64,
        /// How long to measure once every session is connected.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Manager process to sample RSS and CPU time from /proc.
        #[arg(long)]
        manager_pid: Option<u32>,
    },
    /// Measure config push fan-out: one session per saved identity writing the
    /// role files it receives (no processes), a Redis service with one role on
    /// each of those hosts, then CHANGES service-level `maxmemory` changes, each
    /// timed from the PATCH request and from its response to every role's
    /// applied report.
    Fanout {
        /// Identities saved by `enroll --save`.
        #[arg(long)]
        identities: PathBuf,
        /// Use only the first N identities (= roles).
        #[arg(long)]
        count: Option<usize>,
        /// Configuration changes to time.
        #[arg(long, default_value_t = 5)]
        changes: usize,
        /// Split the hosts into this many services on disjoint hosts; the
        /// changes are timed on the first alone, then on all at once.
        #[arg(long, default_value_t = 1)]
        services: usize,
        /// Roles added per `POST .../roles` during setup (the manager takes up
        /// to 10,000 as one array; 1 sends single-role requests).
        #[arg(long, default_value_t = 10_000)]
        roles_per_request: usize,
        /// Role-creation requests in flight at once during setup.
        #[arg(long, default_value_t = 8)]
        create_concurrency: usize,
        /// New sessions started per second (spreads the TLS handshakes).
        #[arg(long, default_value_t = 1000)]
        connect_rate: u64,
        /// Where the agents write role files, one subdirectory per agent (a
        /// temporary directory, removed at the end, by default).
        #[arg(long)]
        files_dir: Option<PathBuf>,
        /// Cluster to create (must not exist); the service is `redis-fanout`.
        #[arg(long, default_value = "fanout")]
        cluster: String,
        /// Give up creating roles after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        setup_timeout: Duration,
        /// Give up waiting for one change to reach every agent after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        apply_timeout: Duration,
        /// Pause between one change's last applied report and the next
        /// change's request, so each starts on a manager that has stored the
        /// one before (its flusher runs every second), as an operator's
        /// changes would; `0s` sends them back to back.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Leave the cluster and service in place at the end.
        #[arg(long)]
        keep: bool,
        /// Manager process to sample CPU time and RSS from /proc.
        #[arg(long)]
        manager_pid: Option<u32>,
        /// End with a manager restart: write this file when ready for it (the
        /// caller then restarts the manager and writes its pid to
        /// --restart-pid-file), then time every session's return.
        #[arg(long, requires = "restart_pid_file")]
        restart_ready_file: Option<PathBuf>,
        /// Where the caller writes the restarted manager's pid.
        #[arg(long, requires = "restart_ready_file")]
        restart_pid_file: Option<PathBuf>,
        /// Give up waiting for the sessions to come back after this long.
        #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
        restart_within: Duration,
    },
    /// Measure parcel distribution: build a parcel of SIZE_MB MiB of random
    /// data, upload it over REST, then let COUNT saved identities download it
    /// with FetchParcel at once (each verified by size and sha256), sampling
    /// the manager's RSS and CPU; then one download resumed from the middle.
    Parcels {
        /// Identities saved by `enroll --save`.
        #[arg(long)]
        identities: PathBuf,
        /// Use only the first N identities (= downloads).
        #[arg(long)]
        count: Option<usize>,
        /// Size of the random payload in MiB (the parcel is a little larger).
        #[arg(long, default_value_t = 100)]
        size_mb: u64,
        /// Downloads in flight at once (default: all).
        #[arg(long)]
        concurrency: Option<usize>,
        /// How often to sample the manager's /proc.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        sample_interval: Duration,
        /// Manager process to sample RSS (VmRSS, VmHWM) and CPU time from /proc.
        #[arg(long)]
        manager_pid: Option<u32>,
    },
    /// Measure log search and diagnostic bundles: one files-only session per
    /// saved identity, a Redis role on each host with SIZE_MB MiB of log lines
    /// (a current file and five rotated copies), then timed searches across
    /// every host (streamed: first match and whole; JSON: whole) and a bundle
    /// of the first BUNDLE_HOSTS hosts under BUNDLE_MAX_MB, sampling the
    /// manager's RSS and CPU.
    Logs {
        /// Identities saved by `enroll --save`.
        #[arg(long)]
        identities: PathBuf,
        /// Use only the first N identities (= hosts searched).
        #[arg(long)]
        count: Option<usize>,
        /// Log MiB per host.
        #[arg(long, default_value_t = 100)]
        size_mb: u64,
        /// Hours the log lines span, ending now.
        #[arg(long, default_value_t = 24)]
        span_hours: u64,
        /// Searches of each kind to time.
        #[arg(long, default_value_t = 3)]
        searches: usize,
        /// The regular expression searched for (the synthetic logs hold one
        /// such line in 5,000).
        #[arg(long, default_value = r"Connection with replica \S+ lost")]
        pattern: String,
        /// Hosts in the diagnostic bundle (0: none).
        #[arg(long, default_value_t = 20)]
        bundle_hosts: usize,
        /// The bundle's cap in MiB.
        #[arg(long, default_value_t = 200)]
        bundle_max_mb: u64,
        /// Where the agents keep role files and logs (a temporary directory by default).
        #[arg(long)]
        files_dir: Option<PathBuf>,
        /// Cluster to create (must not exist); the service is `redis-logs`.
        #[arg(long, default_value = "logs")]
        cluster: String,
        /// New sessions started per second.
        #[arg(long, default_value_t = 1000)]
        connect_rate: u64,
        /// How often to sample the manager's /proc.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        sample_interval: Duration,
        /// Leave the cluster and service in place at the end.
        #[arg(long)]
        keep: bool,
        /// Manager process to sample RSS and CPU time from /proc.
        #[arg(long)]
        manager_pid: Option<u32>,
    },
}

#[derive(Serialize, Deserialize)]
struct SavedIdentity {
    index: usize,
    host_id: String,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    drover_proto::tls::provider();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Enroll { count, concurrency, ref save } => {
                enroll_many(&cli, count, concurrency, save.clone()).await
            }
            Command::Sessions { ref identities, count, connect_rate, duration, manager_pid } => {
                sessions(&cli, identities, count, connect_rate, duration, manager_pid).await
            }
            Command::Fanout {
                ref identities,
                count,
                changes,
                services,
                roles_per_request,
                create_concurrency,
                connect_rate,
                ref files_dir,
                ref cluster,
                setup_timeout,
                apply_timeout,
                settle,
                keep,
                manager_pid,
                ref restart_ready_file,
                ref restart_pid_file,
                restart_within,
            } => {
                let restart = match (restart_ready_file, restart_pid_file) {
                    (Some(ready), Some(pid)) => {
                        Some(fanout::RestartOptions { ready: ready.clone(), pid: pid.clone(), within: restart_within })
                    }
                    _ => None,
                };
                let opts = fanout::FanoutOptions {
                    changes,
                    services,
                    setup: fanout::RoleSetup {
                        cluster: cluster.clone(),
                        roles_per_request,
                        create_concurrency,
                        setup_timeout,
                        manager_pid,
                    },
                    connect_rate,
                    files_dir: files_dir.clone(),
                    apply_timeout,
                    settle,
                    keep,
                    restart,
                };
                fanout::run(&cli, &load_identities(identities, count)?, opts).await
            }
            Command::Parcels { ref identities, count, size_mb, concurrency, sample_interval, manager_pid } => {
                let ids = load_identities(identities, count)?;
                let opts = parcels::ParcelsOptions {
                    size_mb,
                    concurrency: concurrency.unwrap_or(ids.len()),
                    manager_pid,
                    sample_interval,
                };
                parcels::run(&cli, &ids, opts).await
            }
            Command::Logs {
                ref identities,
                count,
                size_mb,
                span_hours,
                searches,
                ref pattern,
                bundle_hosts,
                bundle_max_mb,
                ref files_dir,
                ref cluster,
                connect_rate,
                sample_interval,
                keep,
                manager_pid,
            } => {
                let ids = load_identities(identities, count)?;
                let opts = logs::LogsOptions {
                    setup: fanout::RoleSetup {
                        cluster: cluster.clone(),
                        roles_per_request: 10_000,
                        create_concurrency: 1,
                        setup_timeout: Duration::from_secs(600),
                        manager_pid,
                    },
                    connect_rate,
                    files_dir: files_dir.clone(),
                    size_mb,
                    span_hours,
                    searches,
                    pattern: pattern.clone(),
                    bundle_hosts,
                    bundle_max_mb,
                    sample_interval,
                    keep,
                };
                logs::run(&cli, &ids, opts).await
            }
        }
    })
}

async fn enroll_many(cli: &Cli, count: usize, concurrency: usize, save: Option<PathBuf>) -> anyhow::Result<()> {
    let password = cli.password.clone().context("--password (or DROVER_PASSWORD) is needed to create a token")?;
    let rest = Rest::new(&cli.http, &cli.user, &password);
    let token: EnrollmentToken = rest.enrollment_token(count as u32, 3600).await?.parse()?;
    let addr: ManagerAddr = cli.manager.parse()?;
    let sem = Arc::new(Semaphore::new(concurrency));
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (addr, token, sem, latencies) = (addr.clone(), token.clone(), sem.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let t = Instant::now();
            let id = enroll::enroll(&addr, &token, None, &synthetic_facts(i), &BTreeMap::new()).await;
            latencies.lock().expect("hist").record(t.elapsed().as_micros() as u64).ok();
            id.map(|id| (i, id))
        }));
    }
    let mut ids = Vec::with_capacity(count);
    let mut failures = 0;
    for t in tasks {
        match t.await? {
            Ok(id) => ids.push(id),
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("enrollment failed: {e}");
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let h = latencies.lock().expect("hist");
    println!("enroll.count            {}", ids.len());
    println!("enroll.failures         {failures}");
    println!("enroll.seconds          {secs:.2}");
    println!("enroll.rate_per_s       {:.0}", ids.len() as f64 / secs);
    println!("enroll.latency_p50_ms   {:.1}", h.value_at_quantile(0.5) as f64 / 1000.0);
    println!("enroll.latency_p99_ms   {:.1}", h.value_at_quantile(0.99) as f64 / 1000.0);
    if let Some(path) = save {
        let mut f =
            std::io::BufWriter::new(fs::File::create(&path).with_context(|| format!("create {}", path.display()))?);
        for (index, id) in ids {
            let saved = SavedIdentity {
                index,
                host_id: id.host_id,
                key_pem: id.key_pem,
                cert_pem: id.cert_pem,
                ca_pem: id.ca_pem,
            };
            writeln!(f, "{}", serde_json::to_string(&saved)?)?;
        }
        f.flush()?;
        eprintln!("saved identities to {}", path.display());
    }
    if failures > 0 {
        bail!("{failures} enrollments failed");
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    disconnected: AtomicU64,
    acked: AtomicU64,
    recording: std::sync::atomic::AtomicBool,
    rtt: Mutex<Option<Histogram<u64>>>,
}

impl SessionObserver for Stats {
    fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnected(&self, _reason: &str) {
        self.disconnected.fetch_add(1, Ordering::Relaxed);
    }
    fn heartbeat_acked(&self, rtt: Duration) {
        if self.recording.load(Ordering::Relaxed) {
            self.acked.fetch_add(1, Ordering::Relaxed);
            if let Some(h) = self.rtt.lock().expect("hist").as_mut() {
                let _ = h.record(rtt.as_micros() as u64);
            }
        }
    }
}

/// Identities saved by `enroll --save`, the first `count` of them if given.
fn load_identities(path: &PathBuf, count: Option<usize>) -> anyhow::Result<Vec<SavedIdentity>> {
    let file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut ids: Vec<SavedIdentity> = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        ids.push(serde_json::from_str(&line?).with_context(|| format!("parse {}", path.display()))?);
    }
    if let Some(n) = count {
        if ids.len() < n {
            bail!("{} holds {} identities, fewer than the {n} asked for", path.display(), ids.len());
        }
        ids.truncate(n);
    }
    Ok(ids)
}

/// CPU ticks (user + system) and RSS of a process, from /proc.
fn proc_sample(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((ticks, kb("VmRSS:") * 1024, kb("VmHWM:") * 1024))
}

async fn sessions(
    cli: &Cli,
    path: &PathBuf,
    count: Option<usize>,
    connect_rate: u64,
    duration: Duration,
    manager_pid: Option<u32>,
) -> anyhow::Result<()> {
    let addr: ManagerAddr = cli.manager.parse()?;
    let ids = load_identities(path, count)?;
    let n = ids.len() as u64;
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let pace = Duration::from_secs_f64(1.0 / connect_rate.max(1) as f64);
    let started = Instant::now();
    for saved in ids {
        let identity =
            Identity { host_id: saved.host_id, key_pem: saved.key_pem, cert_pem: saved.cert_pem, ca_pem: saved.ca_pem };
        let config = SessionConfig::new(addr.clone(), identity, synthetic_facts(saved.index));
        let observer: Arc<dyn SessionObserver> = stats.clone();
        tasks.push(spawn_synthetic_session(config, observer, stop_rx.clone()));
        tokio::time::sleep(pace).await;
    }
    // Wait for every session to be up.
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.connected.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!("only {} of {n} sessions connected", stats.connected.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("sessions.count              {n}");
    println!("sessions.connect_seconds    {:.1}", started.elapsed().as_secs_f64());
    // Let the connect storm settle, then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    *stats.rtt.lock().expect("hist") = Some(Histogram::new(3)?);
    stats.recording.store(true, Ordering::Relaxed);
    let before = manager_pid.map(proc_sample).transpose()?;
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    stats.recording.store(false, Ordering::Relaxed);
    let after = manager_pid.map(proc_sample).transpose()?;
    let acked = stats.acked.load(Ordering::Relaxed);
    let h = stats.rtt.lock().expect("hist").take().context("histogram")?;
    println!("heartbeats.acked            {acked}");
    println!("heartbeats.per_second       {:.0}", acked as f64 / elapsed);
    println!("heartbeats.rtt_p50_ms       {:.2}", h.value_at_quantile(0.5) as f64 / 1000.0);
    println!("heartbeats.rtt_p99_ms       {:.2}", h.value_at_quantile(0.99) as f64 / 1000.0);
    println!("heartbeats.rtt_max_ms       {:.2}", h.max() as f64 / 1000.0);
    println!("sessions.disconnects        {}", stats.disconnected.load(Ordering::Relaxed));
    if let (Some((t_before, _, _)), Some((t_after, rss, hwm))) = (before, after) {
        // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
        let tck = 100.0;
        let cores = (t_after - t_before) as f64 / tck / elapsed;
        println!("manager.cpu_cores           {cores:.3}");
        println!("manager.rss_mib             {:.1}", rss as f64 / 1048576.0);
        println!("manager.peak_rss_mib        {:.1}", hwm as f64 / 1048576.0);
        if cores > 0.0 {
            println!("heartbeats.per_core_second  {:.0}", acked as f64 / elapsed / cores);
        }
    }
    stop_tx.send(true)?;
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("session ended with error: {e}");
        }
    }
    Ok(())
}
