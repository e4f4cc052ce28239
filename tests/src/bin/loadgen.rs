//! `drover-loadgen`: enrolls and runs many real agent sessions (real TLS, real
//! protocol, synthetic facts and metrics) from one process, and prints the
//! figures recorded in docs/benchmarks.md.
//!
//! ```text
//! drover-loadgen enroll   --count 1000 --save /tmp/ids.jsonl
//! drover-loadgen sessions --identities /tmp/ids.jsonl --duration 60s --manager-pid $(pidof drover-manager)
//! drover-loadgen fanout   --identities /tmp/ids.jsonl --count 1000 --changes 5
//! drover-loadgen parcels  --identities /tmp/ids.jsonl --count 100 --size-mb 100
//! ```

#[path = "loadgen/parcels.rs"]
mod parcels;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use drover_agent::enroll::{self, Identity};
use drover_agent::session::{RolesMode, SessionConfig, SessionObserver};
use drover_proto::tls::ManagerAddr;
use drover_proto::token::EnrollmentToken;
use drover_tests::rest::Rest;
use drover_tests::{spawn_synthetic_session, synthetic_facts};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
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
        /// Leave the cluster and service in place at the end.
        #[arg(long)]
        keep: bool,
        /// Manager process to sample CPU time and RSS from /proc.
        #[arg(long)]
        manager_pid: Option<u32>,
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
                roles_per_request,
                create_concurrency,
                connect_rate,
                ref files_dir,
                ref cluster,
                setup_timeout,
                apply_timeout,
                keep,
                manager_pid,
            } => {
                let opts = FanoutOptions {
                    changes,
                    roles_per_request,
                    create_concurrency,
                    connect_rate,
                    files_dir: files_dir.clone(),
                    cluster: cluster.clone(),
                    setup_timeout,
                    apply_timeout,
                    keep,
                    manager_pid,
                };
                fanout(&cli, &load_identities(identities, count)?, opts).await
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

// ---------- config push fan-out ----------

struct FanoutOptions {
    changes: usize,
    roles_per_request: usize,
    create_concurrency: usize,
    connect_rate: u64,
    files_dir: Option<PathBuf>,
    cluster: String,
    setup_timeout: Duration,
    apply_timeout: Duration,
    keep: bool,
    manager_pid: Option<u32>,
}

const FANOUT_SERVICE: &str = "redis-fanout";

/// What the fan-out sessions saw, one slot per agent.
struct FanoutAgents {
    connected: AtomicU64,
    disconnects: AtomicU64,
    /// Latest desired-state generation each agent received and handed to its
    /// supervisor.
    generation: Vec<AtomicU64>,
    /// When (Unix µs) that generation arrived.
    received_us: Vec<AtomicU64>,
}

/// The observer of one agent's session.
struct AgentProbe {
    all: Arc<FanoutAgents>,
    slot: usize,
}

impl SessionObserver for AgentProbe {
    fn connected(&self) {
        self.all.connected.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnected(&self, _reason: &str) {
        self.all.disconnects.fetch_add(1, Ordering::Relaxed);
    }
    fn desired_state(&self, generation: u64) {
        let current = &self.all.generation[self.slot];
        if generation > current.load(Ordering::Acquire) {
            self.all.received_us[self.slot].store(unix_us(), Ordering::Relaxed);
            current.store(generation, Ordering::Release);
        }
    }
}

impl FanoutAgents {
    fn generations(&self) -> Vec<u64> {
        self.generation.iter().map(|g| g.load(Ordering::Acquire)).collect()
    }

    /// Agents whose generation moved past `before`, with when it arrived.
    fn received_since(&self, before: &[u64]) -> Vec<u64> {
        self.generation
            .iter()
            .zip(before)
            .zip(&self.received_us)
            .filter(|((g, old), _)| g.load(Ordering::Acquire) > **old)
            .map(|(_, at)| at.load(Ordering::Relaxed))
            .collect()
    }
}

/// Starts one files-only session per identity, writing under `root/<slot>`,
/// and waits until all are connected.
async fn start_file_agents(
    addr: &ManagerAddr,
    ids: &[SavedIdentity],
    root: &std::path::Path,
    connect_rate: u64,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Arc<FanoutAgents>, Vec<tokio::task::JoinHandle<Result<(), drover_agent::error::AgentError>>>)> {
    let n = ids.len();
    let agents = Arc::new(FanoutAgents {
        connected: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        generation: (0..n).map(|_| AtomicU64::new(0)).collect(),
        received_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut sessions = Vec::with_capacity(n);
    let pace = Duration::from_secs_f64(1.0 / connect_rate.max(1) as f64);
    for (slot, saved) in ids.iter().enumerate() {
        let identity = Identity {
            host_id: saved.host_id.clone(),
            key_pem: saved.key_pem.clone(),
            cert_pem: saved.cert_pem.clone(),
            ca_pem: saved.ca_pem.clone(),
        };
        let mut config = SessionConfig::new(addr.clone(), identity, synthetic_facts(saved.index));
        config.roles = RolesMode::FilesOnly { dir: root.join(slot.to_string()) };
        let observer: Arc<dyn SessionObserver> = Arc::new(AgentProbe { all: agents.clone(), slot });
        sessions.push(spawn_synthetic_session(config, observer, stop.clone()));
        tokio::time::sleep(pace).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while agents.connected.load(Ordering::Relaxed) < n as u64 {
        if Instant::now() > deadline {
            bail!("only {} of {n} sessions connected", agents.connected.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((agents, sessions))
}

fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A REST call that must answer `expect`; returns the JSON body.
async fn call(rest: &Rest, method: reqwest::Method, path: &str, body: Value, expect: u16) -> anyhow::Result<Value> {
    let (status, resp) = rest.raw(method.clone(), path, Some(body)).await?;
    if status != expect {
        bail!("{method} {path}: HTTP {status}: {resp}");
    }
    Ok(resp)
}

/// `role_id -> applied_at` (Unix µs, millisecond precision) of every role
/// that reported `revision` applied, as the manager recorded it.
async fn applied_at(rest: &Rest, base: &str, revision: u64) -> anyhow::Result<HashMap<String, u64>> {
    let rev: Value = rest.get(&format!("{base}/config/revisions/{revision}")).await?;
    let mut out = HashMap::new();
    for a in rev["applied"].as_array().context("revision without an applied list")? {
        let role = a["role_id"].as_str().context("applied entry without role_id")?;
        let at = a["applied_at"].as_str().context("applied entry without applied_at")?;
        let at = humantime::parse_rfc3339(at).with_context(|| format!("applied_at {at:?}"))?;
        out.insert(role.to_owned(), at.duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64);
    }
    Ok(out)
}

/// Polls the revision until `want` roles reported it applied, or `within` passes.
async fn wait_applied(
    rest: &Rest,
    base: &str,
    revision: u64,
    want: usize,
    within: Duration,
) -> anyhow::Result<HashMap<String, u64>> {
    let deadline = Instant::now() + within;
    loop {
        let applied = applied_at(rest, base, revision).await?;
        if applied.len() >= want || Instant::now() >= deadline {
            return Ok(applied);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Manager CPU seconds and RSS (MiB) since `before`, when a pid was given.
fn manager_usage(pid: Option<u32>, before: Option<(u64, u64, u64)>) -> Option<(f64, f64)> {
    let (t0, _, _) = before?;
    let (t1, rss, _) = proc_sample(pid?).ok()?;
    Some(((t1 - t0) as f64 / 100.0, rss as f64 / 1048576.0))
}

/// Creates the cluster, the service and its roles (the primary on the first
/// host, a replica on each other one), `roles_per_request` per `POST`;
/// returns the role id of each host.
async fn create_roles(rest: &Rest, ids: &[SavedIdentity], opts: &FanoutOptions) -> anyhow::Result<Vec<String>> {
    let n = ids.len();
    let cpu_before = opts.manager_pid.and_then(|p| proc_sample(p).ok());
    let started = Instant::now();
    let cluster = opts.cluster.as_str();
    call(rest, reqwest::Method::POST, "/api/v1/clusters", json!({ "name": cluster }), 201)
        .await
        .with_context(|| format!("create cluster {cluster} (pick another --cluster if it exists)"))?;
    let services = format!("/api/v1/clusters/{cluster}/services");
    call(rest, reqwest::Method::POST, &services, json!({ "name": FANOUT_SERVICE, "type": "redis" }), 201).await?;
    let roles_path = format!("{services}/{FANOUT_SERVICE}/roles");
    let name = |slot: usize| if slot == 0 { "primary-0".to_owned() } else { format!("replica-{slot}") };
    let body = |slot: usize| {
        let role_type = if slot == 0 { "primary" } else { "replica" };
        json!({ "role_type": role_type, "host_id": ids[slot].host_id, "name": name(slot) })
    };
    let per_request = opts.roles_per_request.clamp(1, 10_000);
    let slot_of: HashMap<String, usize> = (0..n).map(|slot| (name(slot), slot)).collect();
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let mut role_ids = vec![String::new(); n];
    // The primary first, so replicas always render against it.
    let t = Instant::now();
    let primary = call(rest, reqwest::Method::POST, &roles_path, body(0), 201).await?;
    latency.lock().expect("hist").record(t.elapsed().as_micros() as u64).ok();
    role_ids[0] = primary["id"].as_str().context("role without id")?.to_owned();
    let mut created = 1;
    let mut failures = 0;
    let sem = Arc::new(Semaphore::new(opts.create_concurrency.max(1)));
    let deadline = started + opts.setup_timeout;
    let slots: Vec<usize> = (1..n).collect();
    let mut requests = Vec::new();
    for batch in slots.chunks(per_request) {
        let payload = match batch {
            [one] if per_request == 1 => body(*one),
            many => Value::Array(many.iter().map(|s| body(*s)).collect()),
        };
        let (rest, path, sem, latency) = (rest.clone(), roles_path.clone(), sem.clone(), latency.clone());
        requests.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            if Instant::now() > deadline {
                return Ok(None);
            }
            let t = Instant::now();
            let answer = call(&rest, reqwest::Method::POST, &path, payload, 201).await?;
            let took = t.elapsed();
            latency.lock().expect("hist").record(took.as_micros() as u64).ok();
            let roles = match answer.get("items") {
                Some(items) => items.as_array().cloned().context("items is not an array")?,
                None => vec![answer],
            };
            anyhow::Ok(Some((roles, took)))
        }));
    }
    let mut next_report = 0;
    for r in requests {
        match r.await? {
            Ok(Some((roles, took))) => {
                for role in roles {
                    let name = role["name"].as_str().context("role without name")?;
                    let slot = *slot_of.get(name).with_context(|| format!("unexpected role {name:?}"))?;
                    role_ids[slot] = role["id"].as_str().context("role without id")?.to_owned();
                    created += 1;
                }
                if created >= next_report {
                    eprintln!(
                        "setup: {created}/{n} roles after {:.1} s (last request {:.0} ms)",
                        started.elapsed().as_secs_f64(),
                        took.as_secs_f64() * 1000.0
                    );
                    next_report = created + (n / 10).max(1);
                }
            }
            Ok(None) => {}
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("role creation failed: {e:#}");
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let h = latency.lock().expect("hist");
    println!("fanout.setup_roles_per_request {per_request}");
    println!("fanout.setup_roles_created    {created}");
    println!("fanout.setup_request_failures {failures}");
    println!("fanout.setup_seconds          {secs:.1}");
    println!("fanout.setup_roles_per_s      {:.1}", created as f64 / secs);
    println!("fanout.setup_request_p50_ms   {:.1}", ms(h.value_at_quantile(0.5)));
    println!("fanout.setup_request_p99_ms   {:.1}", ms(h.value_at_quantile(0.99)));
    println!("fanout.setup_request_max_ms   {:.1}", ms(h.max()));
    if let Some((cpu, rss)) = manager_usage(opts.manager_pid, cpu_before) {
        println!("fanout.setup_manager_cpu_s    {cpu:.1}");
        println!("fanout.setup_manager_rss_mib  {rss:.1}");
    }
    if created < n {
        bail!(
            "only {created} of {n} roles created within {} ({failures} requests failed); fan-out not measured",
            humantime::format_duration(opts.setup_timeout)
        );
    }
    Ok(role_ids)
}

/// Figures over every agent and every measured change.
struct ChangeStats {
    /// PATCH request to response.
    patch: Histogram<u64>,
    /// PATCH response to the applied report (0 when the report came first).
    from_response: Histogram<u64>,
    /// PATCH request to the applied report.
    from_request: Histogram<u64>,
    /// PATCH request to the desired state reaching the load generator's session.
    received: Histogram<u64>,
    /// Per change: PATCH response to the last applied report.
    last_agent: Histogram<u64>,
    /// Per change: first to last applied report.
    spread: Histogram<u64>,
    before_response: u64,
    missing: usize,
}

impl ChangeStats {
    fn new() -> anyhow::Result<ChangeStats> {
        Ok(ChangeStats {
            patch: Histogram::new(3)?,
            from_response: Histogram::new(3)?,
            from_request: Histogram::new(3)?,
            received: Histogram::new(3)?,
            last_agent: Histogram::new(3)?,
            spread: Histogram::new(3)?,
            before_response: 0,
            missing: 0,
        })
    }

    fn print(&self) {
        let q = |h: &Histogram<u64>, q: f64| ms(h.value_at_quantile(q));
        println!("fanout.patch_p50_ms           {:.0}", q(&self.patch, 0.5));
        println!("fanout.patch_max_ms           {:.0}", ms(self.patch.max()));
        println!("fanout.applied_p50_ms         {:.0}", q(&self.from_response, 0.5));
        println!("fanout.applied_p99_ms         {:.0}", q(&self.from_response, 0.99));
        println!("fanout.applied_max_ms         {:.0}", ms(self.from_response.max()));
        println!("fanout.last_agent_p50_ms      {:.0}", q(&self.last_agent, 0.5));
        println!("fanout.last_agent_max_ms      {:.0}", ms(self.last_agent.max()));
        println!("fanout.applied_before_response {} of {}", self.before_response, self.from_response.len());
        println!("fanout.applied_from_request_p50_ms {:.0}", q(&self.from_request, 0.5));
        println!("fanout.applied_from_request_p99_ms {:.0}", q(&self.from_request, 0.99));
        println!("fanout.applied_from_request_max_ms {:.0}", ms(self.from_request.max()));
        println!("fanout.received_from_request_p50_ms {:.0}", q(&self.received, 0.5));
        println!("fanout.received_from_request_p99_ms {:.0}", q(&self.received, 0.99));
        println!("fanout.push_spread_max_ms     {:.0}", ms(self.spread.max()));
        println!("fanout.missing_reports        {}", self.missing);
    }
}

/// One measured change: PATCH `maxmemory`, then wait for every agent to
/// receive it (seen by the session observers) and every role to report it
/// applied (the manager's record, same clock as ours).
#[allow(clippy::too_many_arguments)]
async fn measure_change(
    rest: &Rest,
    base: &str,
    agents: &FanoutAgents,
    role_ids: &[String],
    change: usize,
    value_mb: u64,
    within: Duration,
    stats: &mut ChangeStats,
) -> anyhow::Result<()> {
    let n = role_ids.len();
    let before = agents.generations();
    let body = json!({
        "values": { "maxmemory": format!("{value_mb}mb") },
        "message": format!("fan-out benchmark: change {change}"),
    });
    let t_request = unix_us();
    let r = call(rest, reqwest::Method::PATCH, &format!("{base}/config"), body, 200).await?;
    let t_response = unix_us();
    let revision = r["revision"].as_u64().context("PATCH answer without revision")?;
    stats.patch.record(t_response - t_request).ok();

    let deadline = Instant::now() + within;
    let mut received = agents.received_since(&before);
    while received.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        received = agents.received_since(&before);
    }
    for at in &received {
        stats.received.record(at.saturating_sub(t_request)).ok();
    }
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(10));
    let applied = wait_applied(rest, base, revision, n, remaining).await?;
    let (mut first, mut last) = (u64::MAX, 0u64);
    for at in role_ids.iter().filter_map(|id| applied.get(id)).copied() {
        stats.before_response += u64::from(at < t_response);
        stats.from_response.record(at.saturating_sub(t_response)).ok();
        stats.from_request.record(at.saturating_sub(t_request)).ok();
        first = first.min(at);
        last = last.max(at);
    }
    let first = first.min(last);
    stats.last_agent.record(last.saturating_sub(t_response)).ok();
    stats.spread.record(last - first).ok();
    stats.missing += n - applied.len().min(n);
    println!(
        "fanout.change {change} revision {revision}: PATCH {:.0} ms; desired state received by {}/{n}; \
         applied by {}/{n} within {:.0} ms, the first {:.0} ms after the request, the last {:.0} ms after the response",
        ms(t_response - t_request),
        received.len(),
        applied.len(),
        ms(last - first),
        ms(first.saturating_sub(t_request)),
        ms(last.saturating_sub(t_response)),
    );
    Ok(())
}

async fn fanout(cli: &Cli, ids: &[SavedIdentity], opts: FanoutOptions) -> anyhow::Result<()> {
    let n = ids.len();
    if n < 2 {
        bail!("fan-out needs at least 2 identities (one primary and one replica)");
    }
    let password = cli.password.clone().context("--password (or DROVER_PASSWORD) is needed for the REST API")?;
    let rest = Rest::new(&cli.http, &cli.user, &password);
    let addr: ManagerAddr = cli.manager.parse()?;
    let temp = tempfile::tempdir().context("create a directory for role files")?;
    let files_root = opts.files_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());

    // 1. One session per host, announcing roles.v1 and only writing files.
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let (agents, sessions) = start_file_agents(&addr, ids, &files_root, opts.connect_rate, &stop_rx).await?;
    println!("fanout.agents                 {n}");
    println!("fanout.connect_seconds        {:.1}", started.elapsed().as_secs_f64());

    // 2. The service and its roles.
    let role_ids = create_roles(&rest, ids, &opts).await?;
    let base = format!("/api/v1/clusters/{}/services/{FANOUT_SERVICE}", opts.cluster);

    // 3. Every role applied its first revision. Should some host never get
    // its role, one unmeasured change brings every host up to date.
    let service: Value = rest.get(&base).await?;
    let revision = service["revision"].as_u64().context("service without revision")?;
    let mut value_mb = 100u64;
    let settle = Duration::from_secs(30) + Duration::from_millis(5 * n as u64);
    let initial = wait_applied(&rest, &base, revision, n, settle).await?.len();
    println!("fanout.initial_applied        {initial}/{n} (revision {revision})");
    if initial < n {
        eprintln!("{} roles did not report revision {revision}; pushing one unmeasured change", n - initial);
        let body =
            json!({ "values": { "maxmemory": format!("{value_mb}mb") }, "message": "fan-out benchmark: baseline" });
        let t = Instant::now();
        let r = call(&rest, reqwest::Method::PATCH, &format!("{base}/config"), body, 200).await?;
        println!("fanout.baseline_patch_ms      {:.0}", t.elapsed().as_secs_f64() * 1000.0);
        let revision = r["revision"].as_u64().context("PATCH answer without revision")?;
        let applied = wait_applied(&rest, &base, revision, n, opts.apply_timeout).await?;
        println!("fanout.baseline_applied       {}/{n} (revision {revision})", applied.len());
        if applied.len() < n {
            bail!("only {} of {n} roles applied the baseline revision {revision}", applied.len());
        }
    }

    // 4. The measured changes.
    let cpu_before = opts.manager_pid.and_then(|p| proc_sample(p).ok());
    let changes_started = Instant::now();
    let mut stats = ChangeStats::new()?;
    for change in 1..=opts.changes {
        value_mb += 1;
        measure_change(&rest, &base, &agents, &role_ids, change, value_mb, opts.apply_timeout, &mut stats).await?;
    }
    println!("fanout.changes                {}", opts.changes);
    stats.print();
    println!("fanout.disconnects            {}", agents.disconnects.load(Ordering::Relaxed));
    if let Some((cpu, rss)) = manager_usage(opts.manager_pid, cpu_before) {
        let secs = changes_started.elapsed().as_secs_f64();
        println!("fanout.changes_manager_cpu_s  {cpu:.1} over {secs:.1} s");
        println!("fanout.manager_rss_mib        {rss:.1}");
    }

    // 5. The files on the synthetic hosts hold the last value.
    let expected = format!("maxmemory {}\n", value_mb << 20);
    let verified = role_ids
        .iter()
        .enumerate()
        .filter(|(slot, id)| {
            let path = files_root.join(slot.to_string()).join("roles").join(id).join("redis.conf");
            fs::read_to_string(path).is_ok_and(|text| text.contains(&expected))
        })
        .count();
    println!("fanout.files_verified         {verified}/{n}");

    if !opts.keep {
        let cluster = format!("/api/v1/clusters/{}", opts.cluster);
        for path in [&base, &cluster] {
            let (status, body) = rest.raw(reqwest::Method::DELETE, path, None).await?;
            if status != 204 {
                eprintln!("could not delete {path}: HTTP {status}: {body}");
                break;
            }
        }
    }
    stop_tx.send(true)?;
    for s in sessions {
        if let Ok(Err(e)) = s.await {
            eprintln!("session ended with error: {e}");
        }
    }
    if stats.missing > 0 || verified < n {
        bail!("{} applied reports missing, {} agents without the last file", stats.missing, n - verified);
    }
    Ok(())
}
