//! `drover-loadgen fanout`: config push fan-out. One files-only session per
//! saved identity (real TLS, the real protocol, the role files written to
//! disk, no processes), one or more Redis services with one role on each of
//! those hosts, then timed service-level `maxmemory` changes, each from the
//! PATCH request and from its response to every role's applied report.
//!
//! With `--services K` the hosts are split into K disjoint sets, one service
//! each: the changes are first timed on the first service alone, then on
//! every service at the same moment, so the two can be compared. With
//! `--restart-ready-file` and `--restart-pid-file`, the run ends with a
//! manager restart (done by the caller, see `scripts/bench.sh`) and times how
//! fast every session comes back and gets its desired state again.

use std::collections::HashMap;
use std::fs;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drover_agent::enroll::Identity;
use drover_agent::session::{RolesMode, SessionConfig, SessionObserver};
use drover_proto::tls::ManagerAddr;
use drover_tests::rest::Rest;
use drover_tests::{spawn_synthetic_session, synthetic_facts};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::{Cli, SavedIdentity, proc_sample};

/// What `drover-loadgen fanout` was asked to do.
pub struct FanoutOptions {
    pub changes: usize,
    pub services: usize,
    pub setup: RoleSetup,
    pub connect_rate: u64,
    pub files_dir: Option<PathBuf>,
    pub apply_timeout: Duration,
    /// Pause between one change's end and the next change's request.
    pub settle: Duration,
    pub keep: bool,
    pub restart: Option<RestartOptions>,
}

/// How a run's Redis roles are created (also used by `drover-loadgen logs`).
pub struct RoleSetup {
    /// The cluster (created by the run).
    pub cluster: String,
    pub roles_per_request: usize,
    pub create_concurrency: usize,
    pub setup_timeout: Duration,
    pub manager_pid: Option<u32>,
}

/// The manager-restart step: the load generator writes `ready` once the
/// changes are measured; the caller then restarts the manager and writes the
/// new process id to `pid`.
pub struct RestartOptions {
    pub ready: PathBuf,
    pub pid: PathBuf,
    /// Give up waiting for every session to come back after this long.
    pub within: Duration,
}

/// Sends the timed PATCH requests as an operator's client would: from its
/// own thread and runtime, so the request is not queued behind the
/// thousands of agent sessions this process also runs.
#[derive(Clone)]
struct Operator {
    http: String,
    user: String,
    password: String,
}

impl Operator {
    /// PATCHes `path`; returns the JSON answer with when (Unix µs) the
    /// request went out and when its answer was in.
    async fn patch(&self, path: String, body: Value) -> anyhow::Result<(Value, u64, u64)> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let rest = Rest::new(&me.http, &me.user, &me.password);
                let t_request = unix_us();
                let answer = call(&rest, reqwest::Method::PATCH, &path, body, 200).await?;
                Ok((answer, t_request, unix_us()))
            })
        })
        .await?
    }
}

/// One service of the run and the hosts it holds.
struct Service {
    name: String,
    base: String,
    /// Indexes of its hosts in the identity list (= agent slots).
    slots: Range<usize>,
    /// Role id per host, in slot order.
    role_ids: Vec<String>,
    /// The last `maxmemory` value set, in MiB.
    value_mb: u64,
}

/// What the fan-out sessions saw, one slot per agent.
pub(super) struct FanoutAgents {
    connected: AtomicU64,
    pub(super) disconnects: AtomicU64,
    /// Latest desired-state generation each agent received and handed to its
    /// supervisor.
    generation: Vec<AtomicU64>,
    /// When (Unix µs) that generation arrived.
    received_us: Vec<AtomicU64>,
    /// Latest generation each agent reported back to the manager.
    reported: Vec<AtomicU64>,
    /// Sessions established per agent, counting reconnections.
    connects: Vec<AtomicU64>,
    /// When (Unix µs) the latest session was established.
    connected_us: Vec<AtomicU64>,
    /// The value of `connects` when a desired state last arrived: equal to
    /// `connects` once the current session got its desired state.
    desired_epoch: Vec<AtomicU64>,
    /// When (Unix µs) the current session got its first desired state.
    desired_us: Vec<AtomicU64>,
}

/// The observer of one agent's session.
struct AgentProbe {
    all: Arc<FanoutAgents>,
    slot: usize,
}

impl SessionObserver for AgentProbe {
    fn connected(&self) {
        self.all.connected_us[self.slot].store(unix_us(), Ordering::Relaxed);
        self.all.connects[self.slot].fetch_add(1, Ordering::AcqRel);
        self.all.connected.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnected(&self, _reason: &str) {
        self.all.disconnects.fetch_add(1, Ordering::Relaxed);
    }
    fn reported(&self, applied_generation: u64) {
        self.all.reported[self.slot].fetch_max(applied_generation, Ordering::AcqRel);
    }
    fn desired_state(&self, generation: u64) {
        let now = unix_us();
        let current = &self.all.generation[self.slot];
        if generation > current.load(Ordering::Acquire) {
            self.all.received_us[self.slot].store(now, Ordering::Relaxed);
            current.store(generation, Ordering::Release);
        }
        let epoch = self.all.connects[self.slot].load(Ordering::Acquire);
        if self.all.desired_epoch[self.slot].load(Ordering::Acquire) != epoch {
            self.all.desired_us[self.slot].store(now, Ordering::Relaxed);
            self.all.desired_epoch[self.slot].store(epoch, Ordering::Release);
        }
    }
}

impl FanoutAgents {
    fn new(n: usize) -> FanoutAgents {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        FanoutAgents {
            connected: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            generation: zeros(),
            received_us: zeros(),
            reported: zeros(),
            connects: zeros(),
            connected_us: zeros(),
            desired_epoch: zeros(),
            desired_us: zeros(),
        }
    }

    fn generations(&self, slots: Range<usize>) -> Vec<u64> {
        self.generation[slots].iter().map(|g| g.load(Ordering::Acquire)).collect()
    }

    /// The agents (slot numbers) of `slots` whose generation moved past
    /// `before` (same order as `slots`), with the generation each has now.
    fn moved_since<'a>(&'a self, before: &'a [u64], slots: Range<usize>) -> impl Iterator<Item = (usize, u64)> + 'a {
        slots.zip(before).filter_map(|(slot, old)| {
            let g = self.generation[slot].load(Ordering::Acquire);
            (g > *old).then_some((slot, g))
        })
    }

    /// When each agent that moved past `before` received its generation.
    fn received_since(&self, before: &[u64], slots: Range<usize>) -> Vec<u64> {
        self.moved_since(before, slots).map(|(slot, _)| self.received_us[slot].load(Ordering::Relaxed)).collect()
    }

    /// How many agents that moved past `before` reported the generation they
    /// last received back.
    fn reported_since(&self, before: &[u64], slots: Range<usize>) -> usize {
        self.moved_since(before, slots).filter(|(slot, g)| self.reported[*slot].load(Ordering::Acquire) >= *g).count()
    }

    fn connects(&self) -> Vec<u64> {
        self.connects.iter().map(|c| c.load(Ordering::Acquire)).collect()
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
    let agents = Arc::new(FanoutAgents::new(n));
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

/// What a run over file-writing agents in a new cluster starts from.
pub(super) struct FileAgentsRun {
    pub rest: Rest,
    pub password: String,
    /// Where the agents write, one subdirectory per agent slot.
    pub files_root: PathBuf,
    /// Holds the default `files_root` until the run ends.
    _temp: tempfile::TempDir,
    pub stop_tx: watch::Sender<bool>,
    pub agents: Arc<FanoutAgents>,
    pub sessions: Vec<tokio::task::JoinHandle<Result<(), drover_agent::error::AgentError>>>,
}

/// Starts one files-only session per identity (printing `{prefix}.agents` and
/// `{prefix}.connect_seconds`), then creates `cluster`.
pub(super) async fn start_run(
    cli: &Cli,
    ids: &[SavedIdentity],
    cluster: &str,
    connect_rate: u64,
    files_dir: Option<PathBuf>,
    prefix: &str,
) -> anyhow::Result<FileAgentsRun> {
    let password = cli.password.clone().context("--password (or DROVER_PASSWORD) is needed for the REST API")?;
    let rest = Rest::new(&cli.http, &cli.user, &password);
    let addr: ManagerAddr = cli.manager.parse()?;
    let temp = tempfile::tempdir().context("create a directory for role files")?;
    let files_root = files_dir.unwrap_or_else(|| temp.path().to_path_buf());
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let (agents, sessions) = start_file_agents(&addr, ids, &files_root, connect_rate, &stop_rx).await?;
    println!("{:<30}{}", format!("{prefix}.agents"), ids.len());
    println!("{:<30}{:.1}", format!("{prefix}.connect_seconds"), started.elapsed().as_secs_f64());
    call(&rest, reqwest::Method::POST, "/api/v1/clusters", json!({ "name": cluster }), 201)
        .await
        .with_context(|| format!("create cluster {cluster} (pick another --cluster if it exists)"))?;
    Ok(FileAgentsRun { rest, password, files_root, _temp: temp, stop_tx, agents, sessions })
}

/// Deletes `paths` (services, then their cluster; stops at the first
/// refusal), then ends every session.
pub(super) async fn finish_run(
    rest: &Rest,
    paths: &[String],
    stop_tx: watch::Sender<bool>,
    sessions: Vec<tokio::task::JoinHandle<Result<(), drover_agent::error::AgentError>>>,
) -> anyhow::Result<()> {
    for path in paths {
        let (status, body) = rest.raw(reqwest::Method::DELETE, path, None).await?;
        if status != 204 {
            eprintln!("could not delete {path}: HTTP {status}: {body}");
            break;
        }
    }
    stop_tx.send(true)?;
    for s in sessions {
        if let Ok(Err(e)) = s.await {
            eprintln!("session ended with error: {e}");
        }
    }
    Ok(())
}

fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A REST call that must answer `expect`; returns the JSON body.
pub(super) async fn call(
    rest: &Rest,
    method: reqwest::Method,
    path: &str,
    body: Value,
    expect: u16,
) -> anyhow::Result<Value> {
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
pub(super) async fn wait_applied(
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
pub(super) fn manager_usage(pid: Option<u32>, before: Option<(u64, u64, u64)>) -> Option<(f64, f64)> {
    let (t0, _, _) = before?;
    let (t1, rss, _) = proc_sample(pid?).ok()?;
    Some(((t1 - t0) as f64 / 100.0, rss as f64 / 1048576.0))
}

/// Creates the service and its roles (the primary on the first host of its
/// slots, a replica on each other one), `roles_per_request` per `POST`;
/// returns the role id of each host.
pub(super) async fn create_roles(
    rest: &Rest,
    ids: &[SavedIdentity],
    opts: &RoleSetup,
    service: &str,
) -> anyhow::Result<Vec<String>> {
    let n = ids.len();
    let cpu_before = opts.manager_pid.and_then(|p| proc_sample(p).ok());
    let started = Instant::now();
    let services = format!("/api/v1/clusters/{}/services", opts.cluster);
    call(rest, reqwest::Method::POST, &services, json!({ "name": service, "type": "redis" }), 201).await?;
    let roles_path = format!("{services}/{service}/roles");
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
                        "setup {service}: {created}/{n} roles after {:.1} s (last request {:.0} ms)",
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
    println!("fanout.setup_service          {service}");
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

    fn p99_since_request_ms(&self) -> f64 {
        ms(self.from_request.value_at_quantile(0.99))
    }

    /// Prints every figure as `PREFIX.name value`.
    fn print(&self, prefix: &str) {
        let q = |h: &Histogram<u64>, q: f64| ms(h.value_at_quantile(q));
        let line = |name: &str, value: String| println!("{:<40} {value}", format!("{prefix}.{name}"));
        line("patch_p50_ms", format!("{:.0}", q(&self.patch, 0.5)));
        line("patch_p99_ms", format!("{:.0}", q(&self.patch, 0.99)));
        line("patch_max_ms", format!("{:.0}", ms(self.patch.max())));
        line("applied_p50_ms", format!("{:.0}", q(&self.from_response, 0.5)));
        line("applied_p99_ms", format!("{:.0}", q(&self.from_response, 0.99)));
        line("applied_max_ms", format!("{:.0}", ms(self.from_response.max())));
        line("last_agent_p50_ms", format!("{:.0}", q(&self.last_agent, 0.5)));
        line("last_agent_max_ms", format!("{:.0}", ms(self.last_agent.max())));
        line("applied_before_response", format!("{} of {}", self.before_response, self.from_response.len()));
        line("applied_from_request_p50_ms", format!("{:.0}", q(&self.from_request, 0.5)));
        line("applied_from_request_p99_ms", format!("{:.0}", q(&self.from_request, 0.99)));
        line("applied_from_request_max_ms", format!("{:.0}", ms(self.from_request.max())));
        line("received_from_request_p50_ms", format!("{:.0}", q(&self.received, 0.5)));
        line("received_from_request_p99_ms", format!("{:.0}", q(&self.received, 0.99)));
        line("push_spread_max_ms", format!("{:.0}", ms(self.spread.max())));
        line("missing_reports", format!("{}", self.missing));
    }
}

/// One measured change of `svc`: PATCH `maxmemory`, then wait for every
/// agent of the service to receive it (seen by the session observers) and
/// every role to report it applied (the manager's record, same clock as ours).
/// Returns when its request left and when the last role applied it (Unix µs).
async fn measure_change(
    rest: &Rest,
    operator: &Operator,
    svc: &mut Service,
    agents: &FanoutAgents,
    change: usize,
    within: Duration,
    stats: &mut ChangeStats,
) -> anyhow::Result<(u64, u64)> {
    let n = svc.role_ids.len();
    svc.value_mb += 1;
    let before = agents.generations(svc.slots.clone());
    let body = json!({
        "values": { "maxmemory": format!("{}mb", svc.value_mb) },
        "message": format!("fan-out benchmark: change {change}"),
    });
    let (r, t_request, t_response) = operator.patch(format!("{}/config", svc.base), body).await?;
    let revision = r["revision"].as_u64().context("PATCH answer without revision")?;
    stats.patch.record(t_response - t_request).ok();

    let deadline = Instant::now() + within;
    let mut received = agents.received_since(&before, svc.slots.clone());
    while received.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        received = agents.received_since(&before, svc.slots.clone());
    }
    for at in &received {
        stats.received.record(at.saturating_sub(t_request)).ok();
    }
    // The manager is asked for its record only once every agent has sent its
    // report: polling it sooner would load the machine inside the tail being
    // measured.
    while agents.reported_since(&before, svc.slots.clone()) < received.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(10));
    let applied = wait_applied(rest, &svc.base, revision, n, remaining).await?;
    let (mut first, mut last) = (u64::MAX, 0u64);
    for at in svc.role_ids.iter().filter_map(|id| applied.get(id)).copied() {
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
        "fanout.change {change} of {} revision {revision}: PATCH {:.0} ms; desired state received by {}/{n}; \
         applied by {}/{n} within {:.0} ms, the first {:.0} ms after the request, the last {:.0} ms after the \
         response ({:.0} ms after the request)",
        svc.name,
        ms(t_response - t_request),
        received.len(),
        applied.len(),
        ms(last - first),
        ms(first.saturating_sub(t_request)),
        ms(last.saturating_sub(t_response)),
        ms(last.saturating_sub(t_request)),
    );
    if let Some(heap) = heap_figures(rest).await {
        println!("fanout.change {change} of {} heap: {heap}", svc.name);
    }
    Ok((t_request, last.max(t_request)))
}

/// The manager's allocator statistics from its `/metrics` (`drover_heap_*`,
/// in MiB), with its resident memory: live data against pages held. `None`
/// when the manager does not export them (not on jemalloc).
async fn heap_figures(rest: &Rest) -> Option<String> {
    let text = rest.request(reqwest::Method::GET, "/metrics").send().await.ok()?.text().await.ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .map(|b| b / 1048576.0)
    };
    let figures = [
        ("allocated", value("drover_heap_allocated_bytes")?),
        ("active", value("drover_heap_active_bytes")?),
        ("resident", value("drover_heap_resident_bytes")?),
        ("metadata", value("drover_heap_metadata_bytes")?),
        ("process_rss", value("process_resident_memory_bytes")?),
    ];
    Some(figures.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", "))
}

/// Brings every role of `svc` to one applied revision: waits for the
/// current one, and should some host never get its role, pushes one
/// unmeasured change.
async fn settle(rest: &Rest, svc: &mut Service, apply_timeout: Duration) -> anyhow::Result<()> {
    let n = svc.role_ids.len();
    let service: Value = rest.get(&svc.base).await?;
    let revision = service["revision"].as_u64().context("service without revision")?;
    let within = Duration::from_secs(30) + Duration::from_millis(5 * n as u64);
    let initial = wait_applied(rest, &svc.base, revision, n, within).await?.len();
    println!("fanout.initial_applied        {initial}/{n} (revision {revision} of {})", svc.name);
    if initial < n {
        eprintln!("{} roles did not report revision {revision}; pushing one unmeasured change", n - initial);
        let body = json!({ "values": { "maxmemory": format!("{}mb", svc.value_mb) }, "message": "fan-out benchmark: baseline" });
        let t = Instant::now();
        let r = call(rest, reqwest::Method::PATCH, &format!("{}/config", svc.base), body, 200).await?;
        println!("fanout.baseline_patch_ms      {:.0}", t.elapsed().as_secs_f64() * 1000.0);
        let revision = r["revision"].as_u64().context("PATCH answer without revision")?;
        let applied = wait_applied(rest, &svc.base, revision, n, apply_timeout).await?;
        println!("fanout.baseline_applied       {}/{n} (revision {revision})", applied.len());
        if applied.len() < n {
            bail!("only {} of {n} roles applied the baseline revision {revision}", applied.len());
        }
    }
    Ok(())
}

pub async fn run(cli: &Cli, ids: &[SavedIdentity], opts: FanoutOptions) -> anyhow::Result<()> {
    let n = ids.len();
    let k = opts.services.max(1);
    if n < 2 * k {
        bail!("fan-out needs at least 2 identities per service (one primary and one replica)");
    }
    // 1. One session per host, announcing roles.v1 and only writing files; the cluster.
    let cluster = opts.setup.cluster.as_str();
    let run = start_run(cli, ids, cluster, opts.connect_rate, opts.files_dir.clone(), "fanout").await?;
    let FileAgentsRun { rest, password, files_root, stop_tx, agents, sessions, _temp } = run;
    let operator = Operator { http: cli.http.clone(), user: cli.user.clone(), password };

    // 2. The services and their roles, on disjoint runs of hosts.
    let per_service = n.div_ceil(k);
    let mut services = Vec::with_capacity(k);
    for i in 0..k {
        let slots = i * per_service..((i + 1) * per_service).min(n);
        let name = if k == 1 { "redis-fanout".to_owned() } else { format!("redis-fanout-{i}") };
        let role_ids = create_roles(&rest, &ids[slots.clone()], &opts.setup, &name).await?;
        let base = format!("/api/v1/clusters/{cluster}/services/{name}");
        services.push(Service { name, base, slots, role_ids, value_mb: 100 });
    }

    // 3. Every role applied its service's revision.
    for svc in &mut services {
        settle(&rest, svc, opts.apply_timeout).await?;
    }

    // 4. The measured changes: the first service alone, then (with several
    // services) all of them at the same moment.
    let cpu_before = opts.setup.manager_pid.and_then(|p| proc_sample(p).ok());
    let changes_started = Instant::now();
    let sampler = CpuSampler::start();
    let mut lone = ChangeStats::new()?;
    let mut lone_cpu = MachineCpu::default();
    for change in 1..=opts.changes {
        if change > 1 {
            tokio::time::sleep(opts.settle).await;
        }
        let window =
            measure_change(&rest, &operator, &mut services[0], &agents, change, opts.apply_timeout, &mut lone).await?;
        lone_cpu.add(&sampler, window);
    }
    println!("fanout.changes                {}", opts.changes);
    lone.print("fanout");
    lone_cpu.print("fanout");
    let mut missing = lone.missing;
    if k > 1 {
        let mut parallel: Vec<ChangeStats> = (0..k).map(|_| ChangeStats::new()).collect::<anyhow::Result<_>>()?;
        let mut parallel_cpu = MachineCpu::default();
        for change in 1..=opts.changes {
            tokio::time::sleep(opts.settle).await;
            let rounds = services
                .iter_mut()
                .zip(parallel.iter_mut())
                .map(|(svc, stats)| measure_change(&rest, &operator, svc, &agents, change, opts.apply_timeout, stats));
            let mut window = (u64::MAX, 0);
            for r in futures::future::join_all(rounds).await {
                let (from, to) = r?;
                window = (window.0.min(from), window.1.max(to));
            }
            parallel_cpu.add(&sampler, window);
        }
        parallel_cpu.print("fanout.parallel");
        // The earliest the changes at once could end if the machine did
        // nothing else: their CPU spread over every core, against the time
        // of a lone change (from its request to its last applied report).
        println!(
            "{:<40} {:.2} (the changes at once need {:.2} s of all {} cores, a lone change takes {:.2} s)",
            "fanout.parallel.cpu_floor_ratio",
            parallel_cpu.floor_seconds() / lone_cpu.mean_wall_seconds().max(1e-3),
            parallel_cpu.floor_seconds(),
            MachineCpu::cores(),
            lone_cpu.mean_wall_seconds(),
        );
        let alone = lone.p99_since_request_ms();
        for (svc, stats) in services.iter().zip(&parallel) {
            stats.print(&format!("fanout.parallel.{}", svc.name));
            println!(
                "{:<40} {:.2} (p99 from the request, {:.0} ms, against {alone:.0} ms for the first service alone)",
                format!("fanout.parallel.{}.ratio_to_lone", svc.name),
                stats.p99_since_request_ms() / alone.max(1.0),
                stats.p99_since_request_ms(),
            );
            missing += stats.missing;
        }
    }
    println!("fanout.disconnects            {}", agents.disconnects.load(Ordering::Relaxed));
    if let Some((cpu, rss)) = manager_usage(opts.setup.manager_pid, cpu_before) {
        let secs = changes_started.elapsed().as_secs_f64();
        println!("fanout.changes_manager_cpu_s  {cpu:.1} over {secs:.1} s");
        println!("fanout.manager_rss_mib        {rss:.1}");
    }

    // 5. The files on the synthetic hosts hold each service's last value.
    let verified = verify_files(&files_root, &services);
    println!("fanout.files_verified         {verified}/{n}");

    // 6. A manager restart, if asked for.
    let mut gave_up = 0;
    if let Some(restart) = &opts.restart {
        gave_up = reconnect(&agents, &sessions, restart, opts.setup.manager_pid).await?;
    }

    let mut paths: Vec<String> = services.iter().map(|s| s.base.clone()).collect();
    paths.push(format!("/api/v1/clusters/{cluster}"));
    finish_run(&rest, if opts.keep { &[] } else { &paths }, stop_tx, sessions).await?;
    if missing > 0 || verified < n || gave_up > 0 {
        bail!(
            "{missing} applied reports missing, {} agents without the last file, {gave_up} sessions gave up",
            n - verified
        );
    }
    Ok(())
}

/// The whole machine's CPU time (every process: the manager, these agents
/// and anything else) over a phase's changes, each from its request to its
/// last applied report: whether the changes were bound by the cores rather
/// than by waiting.
#[derive(Default)]
struct MachineCpu {
    rounds: u32,
    total_busy_seconds: f64,
    total_wall_seconds: f64,
}

impl MachineCpu {
    /// Adds the round that ran over `window` (Unix µs).
    fn add(&mut self, sampler: &CpuSampler, window: (u64, u64)) {
        let Some((busy, wall)) = sampler.between(window.0, window.1) else { return };
        self.rounds += 1;
        self.total_busy_seconds += busy;
        self.total_wall_seconds += wall;
    }

    fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// Mean seconds of a round.
    fn mean_wall_seconds(&self) -> f64 {
        self.total_wall_seconds / f64::from(self.rounds.max(1))
    }

    /// Mean CPU-seconds of a round.
    fn mean_busy_seconds(&self) -> f64 {
        self.total_busy_seconds / f64::from(self.rounds.max(1))
    }

    /// A round's mean CPU spread over every core: no round could end sooner.
    fn floor_seconds(&self) -> f64 {
        self.mean_busy_seconds() / Self::cores() as f64
    }

    fn print(&self, prefix: &str) {
        if self.rounds == 0 {
            return;
        }
        let round = self.mean_busy_seconds();
        println!(
            "{:<40} {round:.2} CPU-s a change over {:.2} s from the request to the last report: {:.2} of {} cores busy",
            format!("{prefix}.machine_cpu"),
            self.mean_wall_seconds(),
            round / self.mean_wall_seconds().max(1e-3),
            Self::cores(),
        );
    }
}

/// Samples the machine's busy CPU ticks every 10 ms on a thread of its own
/// while it lives, so that a change's CPU is known once its last report's
/// time is.
struct CpuSampler {
    samples: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CpuSampler {
    fn start() -> CpuSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, stopped) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Some(ticks) = busy_ticks() {
                    into.lock().expect("cpu samples").push((unix_us(), ticks));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        CpuSampler { samples, stop }
    }

    /// Busy CPU-seconds and wall seconds between the last sample at or
    /// before `from` and the first at or after `to` (Unix µs).
    fn between(&self, from: u64, to: u64) -> Option<(f64, f64)> {
        let samples = self.samples.lock().expect("cpu samples");
        let start = samples.iter().rev().find(|(t, _)| *t <= from).or(samples.first())?;
        let end = samples.iter().find(|(t, _)| *t >= to).or(samples.last())?;
        (end.0 > start.0).then(|| (end.1.saturating_sub(start.1) as f64 / 100.0, (end.0 - start.0) as f64 / 1e6))
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Busy clock ticks (USER_HZ, 100 a second) of every CPU since boot: the
/// first line of `/proc/stat` less idle and iowait.
fn busy_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    Some(fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?)
}

/// Hosts whose role file holds their service's last `maxmemory`.
fn verify_files(root: &std::path::Path, services: &[Service]) -> usize {
    let mut verified = 0;
    for svc in services {
        let expected = format!("maxmemory {}\n", svc.value_mb << 20);
        verified += svc
            .role_ids
            .iter()
            .zip(svc.slots.clone())
            .filter(|(id, slot)| {
                let path = root.join(slot.to_string()).join("roles").join(id).join("redis.conf");
                fs::read_to_string(path).is_ok_and(|text| text.contains(&expected))
            })
            .count();
    }
    verified
}

/// The manager-restart step: asks the caller for the restart, then samples
/// once a second how many sessions are back and how many got their desired
/// state again, with the new manager's CPU and RSS, until all have or
/// `within` passes. Returns how many sessions gave up.
async fn reconnect(
    agents: &FanoutAgents,
    sessions: &[tokio::task::JoinHandle<Result<(), drover_agent::error::AgentError>>],
    restart: &RestartOptions,
    old_pid: Option<u32>,
) -> anyhow::Result<usize> {
    let n = sessions.len();
    let before = agents.connects();
    let disconnects_before = agents.disconnects.load(Ordering::Relaxed);
    fs::write(&restart.ready, "ready\n").with_context(|| format!("write {}", restart.ready.display()))?;
    eprintln!("reconnect: asked for a manager restart ({})", restart.ready.display());

    // The restart: the first session to break, and the new process.
    let asked = Instant::now();
    while agents.disconnects.load(Ordering::Relaxed) == disconnects_before {
        if asked.elapsed() > Duration::from_secs(120) {
            bail!("no session broke within 120 s of asking for the manager restart");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t_down = unix_us();
    let read_pid = || fs::read_to_string(&restart.pid).ok().and_then(|s| s.trim().parse::<u32>().ok());
    let mut new_pid = None;
    let mut t_started = None;

    let mut per_second = Vec::new();
    let mut last_cpu: Option<(u64, Instant)> = None;
    let (mut peak_cpu, mut peak_rss, mut peak_hwm) = (0f64, 0u64, 0u64);
    let mut prev_back = 0usize;
    let mut peak_rate = 0usize;
    let deadline = Instant::now() + restart.within;
    let (back, resynced) = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if new_pid.is_none()
            && let Some(pid) = read_pid().filter(|p| Some(*p) != old_pid)
        {
            new_pid = Some(pid);
            t_started = Some(unix_us());
        }
        let connects = agents.connects();
        let back = connects.iter().zip(&before).filter(|(c, b)| c > b).count();
        let resynced = (0..n)
            .filter(|&s| connects[s] > before[s] && agents.desired_epoch[s].load(Ordering::Acquire) == connects[s])
            .count();
        let tick = per_second.len() as f64 + 1.0;
        if Instant::now() >= deadline || resynced == n || unix_us() >= t_down + (tick * 1e6) as u64 {
            let mut line = format!(
                "reconnect.t+{:>3.0}s  sessions back {back:>6}/{n}  desired state re-sent {resynced:>6}/{n}",
                ms(unix_us() - t_down) / 1000.0
            );
            if let Some(pid) = new_pid
                && let Ok((ticks, rss, hwm)) = proc_sample(pid)
            {
                let now = Instant::now();
                if let Some((t0, at)) = last_cpu {
                    let cores = (ticks - t0) as f64 / 100.0 / now.duration_since(at).as_secs_f64();
                    peak_cpu = peak_cpu.max(cores);
                    line += &format!("  manager {cores:.2} cores");
                }
                last_cpu = Some((ticks, now));
                peak_rss = peak_rss.max(rss);
                peak_hwm = peak_hwm.max(hwm);
                line += &format!("  {:.0} MiB", rss as f64 / 1048576.0);
            }
            println!("{line}");
            peak_rate = peak_rate.max(back - prev_back);
            prev_back = back;
            per_second.push(back);
        }
        if resynced == n || Instant::now() >= deadline {
            break (back, resynced);
        }
    };
    let gave_up = sessions.iter().filter(|s| s.is_finished()).count();
    let last = |times: &[AtomicU64]| {
        (0..n)
            .filter(|&s| agents.connects[s].load(Ordering::Acquire) > before[s])
            .map(|s| times[s].load(Ordering::Relaxed))
            .max()
    };
    let from = |t: u64| {
        t_started.map_or(String::new(), |s| {
            format!(", {:.1} s after the new manager started", ms(t.saturating_sub(s)) / 1000.0)
        })
    };
    println!("reconnect.agents                        {n}");
    println!("reconnect.sessions_back                 {back}/{n}");
    println!("reconnect.desired_state_resent          {resynced}/{n}");
    if let Some(t) = last(&agents.connected_us) {
        println!(
            "reconnect.last_session_back_s           {:.1} after the first break{}",
            ms(t - t_down) / 1000.0,
            from(t)
        );
    }
    if let Some(t) = last(&agents.desired_us) {
        println!(
            "reconnect.last_desired_state_s          {:.1} after the first break{}",
            ms(t.saturating_sub(t_down)) / 1000.0,
            from(t)
        );
    }
    println!("reconnect.peak_sessions_per_s           {peak_rate}");
    println!("reconnect.sessions_gave_up              {gave_up}");
    if new_pid.is_some() {
        println!("reconnect.manager_peak_cpu_cores        {peak_cpu:.2}");
        println!(
            "reconnect.manager_peak_rss_mib          {:.0} (VmHWM {:.0})",
            peak_rss as f64 / 1048576.0,
            peak_hwm as f64 / 1048576.0
        );
    }
    if resynced < n {
        bail!(
            "only {resynced} of {n} sessions were back with their desired state within {}",
            humantime::format_duration(restart.within)
        );
    }
    Ok(gave_up)
}
