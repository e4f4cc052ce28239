//! SSH bootstrap: turns machines that run sshd (VMs, bare metal, containers
//! without an agent) into hosts. `POST /api/v1/hosts/bootstrap` starts a
//! command with a step per address; each step connects (russh), checks the
//! host key, logs in, detects the OS and architecture, uploads the agent
//! binary and its environment file (with a single-use enrollment token),
//! installs it, starts it (systemd unit, or a supervisor process where systemd
//! does not run) and waits until the agent has enrolled and its session is
//! up. Hosts run in parallel up to a limit, each within a timeout.
//!
//! Credentials (private key, passphrase, password) live only in memory for
//! the command's lifetime, zeroed on drop, and never reach the store, the
//! audit log or the logs: the stored parameters say only which method was
//! used. See docs/containers.md ("The SSH path").

pub mod remote;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use zeroize::Zeroizing;

use crate::AppState;
use crate::model::HostStatus;
use crate::model::{Labels, now_millis};
use crate::store::{CommandRec, StepRec};
pub use drover_api::bootstrap::{AuthRequest, BootstrapRequest, Secret};
use remote::Privilege;
use ssh::{Connection, Credentials, HostKeyPolicy, KeyCheck, KeyVerdict};

/// Name of bootstrap commands in the command list.
pub const COMMAND_NAME: &str = "bootstrap-hosts";
pub const DEFAULT_PARALLELISM: u32 = 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// An SSH target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As the request gave it (the key for pinned fingerprints).
    pub given: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn parse_target(given: &str, default_port: u16) -> Result<Target, String> {
    let s = given.trim();
    let bad = || format!("invalid address {given:?}: use HOST, HOST:PORT or [IPv6]:PORT");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h.to_owned(), default_port),
            p => (h.to_owned(), p.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').ok_or_else(bad)?;
        (h.to_owned(), p.parse().map_err(|_| bad())?)
    } else {
        (s.to_owned(), default_port)
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
        && !host.starts_with('-');
    if !host_ok || port == 0 {
        return Err(bad());
    }
    Ok(Target { given: given.to_owned(), host, port })
}

/// A checked request, ready to run.
#[derive(Debug)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub user: String,
    pub credentials: Arc<Credentials>,
    pub privilege: Privilege,
    pub labels: Labels,
    pub policy: HostKeyPolicy,
    pub pins: BTreeMap<String, String>,
    pub manager_url: String,
    pub parallelism: u32,
    pub timeout: Duration,
    pub agent: AgentBinary,
    pub known_hosts: PathBuf,
}

/// The agent binary hosts get.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub arch: &'static str,
    pub size: u64,
    pub sha256: String,
}

impl AgentBinary {
    /// Reads and hashes the binary, and finds its architecture.
    pub fn load(path: &Path) -> Result<AgentBinary, String> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| {
            format!("cannot open the agent binary {}: {e}; set --agent-binary (DROVER_AGENT_BINARY)", path.display())
        })?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("read {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            if head.len() < 64 {
                head.extend_from_slice(&buf[..n.min(64 - head.len())]);
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let arch = remote::elf_arch(&head)
            .ok_or_else(|| format!("{} is not a Linux executable of a known architecture", path.display()))?;
        Ok(AgentBinary { path: path.to_owned(), arch, size, sha256: hex::encode(hasher.finalize()) })
    }
}

/// Where the manager takes the agent binary from.
pub fn agent_binary_path(state: &AppState) -> PathBuf {
    state.config.agent_binary.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("drover-agent")))
            .unwrap_or_else(|| PathBuf::from("drover-agent"))
    })
}

/// The gRPC URL bootstrapped agents are given: it must be one the manager's
/// certificate names, or the agents would refuse the manager.
pub(crate) fn manager_url(state: &AppState, asked: Option<&str>) -> Result<String, String> {
    let port = state.config.grpc_addr.port();
    let url = match asked.map(str::to_owned).or_else(|| state.config.agent_manager_url.clone()) {
        Some(u) => u,
        None => {
            let name = state.config.advertise.first().ok_or_else(|| {
                "no manager_url given and the manager advertises no name: give manager_url (the manager's gRPC URL \
                 as the hosts reach it) or start the manager with --advertise NAME (or --agent-manager-url)"
                    .to_owned()
            })?;
            let host = if name.contains(':') { format!("[{name}]") } else { name.clone() };
            format!("https://{host}:{port}")
        }
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid manager_url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("manager_url {url:?} must be https://HOST:PORT (agents use mutual TLS)"));
    }
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let named = ["localhost", "127.0.0.1", "::1"].contains(&host) || state.config.advertise.iter().any(|a| a == host);
    if !named {
        return Err(format!(
            "the manager's certificate does not name {host:?} (from manager_url {url}); start the manager with \
             --advertise {host}"
        ));
    }
    Ok(url)
}

/// Checks a request without touching any host. Errors are the 400 message.
pub fn plan(state: &AppState, req: BootstrapRequest) -> Result<Plan, String> {
    if req.addresses.is_empty() {
        return Err("addresses must name at least one host".into());
    }
    if req.addresses.len() > 1000 {
        return Err(format!("at most 1000 addresses per request, got {}", req.addresses.len()));
    }
    let mut targets: Vec<Target> = Vec::new();
    for a in &req.addresses {
        let t = parse_target(a, req.port)?;
        if let Some(dup) = targets.iter().find(|o| o.host == t.host && o.port == t.port) {
            return Err(format!("{a:?} and {:?} are the same host", dup.given));
        }
        targets.push(t);
    }
    for pinned in req.host_key_fingerprints.keys() {
        if !req.addresses.contains(pinned) {
            return Err(format!("host_key_fingerprints names {pinned:?}, which is not in addresses"));
        }
    }
    for (a, fp) in &req.host_key_fingerprints {
        let body = fp.trim().strip_prefix("SHA256:").unwrap_or(fp.trim());
        if body.len() < 40 || !body.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)) {
            return Err(format!(
                "the fingerprint for {a} is not a SHA256 fingerprint (SHA256:... as `ssh-keygen -l` prints it): {fp:?}"
            ));
        }
    }
    let user = req.user.trim().to_owned();
    if user.is_empty() || user.len() > 64 || !user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("invalid user {:?}", req.user));
    }
    let credentials = match (&req.auth.private_key, &req.auth.password) {
        (Some(key), None) => Credentials::private_key(key, req.auth.passphrase.as_ref())?,
        (None, Some(pw)) => {
            if req.auth.passphrase.is_some() {
                return Err("auth.passphrase goes with auth.private_key, not with a password".into());
            }
            Credentials::Password(pw.clone())
        }
        (Some(_), Some(_)) => return Err("give either auth.private_key or auth.password, not both".into()),
        (None, None) => return Err("auth needs private_key or password".into()),
    };
    let sudo = req.sudo.unwrap_or(user != "root");
    let privilege = match (sudo, &credentials) {
        (false, _) => Privilege::Root,
        (true, Credentials::Password(_)) => Privilege::SudoWithPassword,
        (true, Credentials::PrivateKey { .. }) => Privilege::SudoNoPassword,
    };
    for (k, v) in &req.labels {
        drover_proto::labels::validate(k, v).map_err(|e| format!("invalid label {k}={v}: {e}"))?;
    }
    let parallelism = req.parallelism.unwrap_or(DEFAULT_PARALLELISM);
    if !(1..=200).contains(&parallelism) {
        return Err(format!("parallelism must be between 1 and 200, got {parallelism}"));
    }
    let timeout = req.timeout_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    if timeout < Duration::from_secs(30) || timeout > Duration::from_secs(3600) {
        return Err(format!("timeout_seconds must be between 30 and 3600, got {}", timeout.as_secs()));
    }
    let manager_url = manager_url(state, req.manager_url.as_deref())?;
    let agent = AgentBinary::load(&agent_binary_path(state))?;
    Ok(Plan {
        targets,
        user,
        credentials: Arc::new(credentials),
        privilege,
        labels: req.labels,
        policy: req.host_key_policy.unwrap_or(HostKeyPolicy::KnownHosts),
        pins: req.host_key_fingerprints,
        manager_url,
        parallelism,
        timeout,
        agent,
        known_hosts: known_hosts_path(state),
    })
}

pub fn known_hosts_path(state: &AppState) -> PathBuf {
    state.config.ssh_known_hosts.clone().unwrap_or_else(|| ssh::default_known_hosts(&state.config.data_dir))
}

/// Who asked, for tokens and the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: String,
    pub source: String,
    via: &'static str,
}

impl Actor {
    /// Hosts are bootstrapped only for a caller with `fleet.enroll`.
    pub fn authorize(actor: &crate::domain::Actor) -> crate::domain::Result<Actor> {
        actor.require(crate::domain::Permission::FleetEnroll, crate::domain::Scope::Global)?;
        Ok(Actor { user: actor.username.clone(), source: actor.source.clone(), via: actor.via.as_str() })
    }

    fn audit(
        &self,
        action: &str,
        object_type: &str,
        object_id: &str,
        summary: impl Into<String>,
    ) -> crate::store::NewAudit {
        let mut entry = crate::audit_entry(&self.user, &self.source, action, object_type, object_id, summary);
        entry.via = self.via.to_owned();
        entry.permission = crate::domain::Permission::FleetEnroll.as_str().to_owned();
        entry
    }
}

/// Why a bootstrap request did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The request is wrong (a 400): nothing was stored, no host touched.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("bootstrap planning failed: {0}")]
    Internal(String),
}

/// Checks `req` ([`plan`], off the async workers: it reads and hashes the
/// agent binary), then stores and starts the command ([`start`]). The REST
/// handler and the console page both call this.
pub async fn request(
    state: Arc<AppState>,
    actor: Actor,
    req: BootstrapRequest,
) -> Result<(CommandRec, Vec<StepRec>), StartError> {
    let planned = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || plan(&state, req)).await.map_err(|e| StartError::Internal(e.to_string()))?
    };
    let plan = planned.map_err(StartError::Invalid)?;
    Ok(start(state, actor, plan).await?)
}

/// The stages of one host's bootstrap, in order, as its step's messages name
/// them.
pub const STAGES: [&str; 9] = [
    "connect",
    "check host key",
    "authenticate",
    "detect",
    "sudo",
    "upload agent",
    "install agent",
    "start agent",
    "wait for enrollment",
];

/// The stage a host's step is at (running) or failed in (failed, aborted),
/// read from its state and message as [`execute`] and `Progress` write them;
/// `None` for a step that has not started or has succeeded.
pub fn stage_of(step_state: &str, message: &str) -> Option<&'static str> {
    match step_state {
        "running" => {
            let running = [
                ("connecting", "connect"),
                ("detecting", "detect"),
                ("creating a staging directory", "upload agent"),
                ("uploading the agent", "upload agent"),
                ("installing", "install agent"),
                ("starting the agent", "start agent"),
                ("agent started", "wait for enrollment"),
            ];
            running.iter().find(|(prefix, _)| message.starts_with(prefix)).map(|(_, stage)| *stage)
        }
        "failed" | "aborted" => {
            // "{target}: {stage} failed: {why}"
            let (head, _) = message.split_once(" failed: ")?;
            STAGES.iter().chain(["start"].iter()).find(|s| head.ends_with(&format!(": {s}"))).copied()
        }
        _ => None,
    }
}

/// Stores the command and its steps and starts it. Returns them as planned.
pub async fn start(state: Arc<AppState>, actor: Actor, plan: Plan) -> crate::store::Result<(CommandRec, Vec<StepRec>)> {
    let id = uuid::Uuid::new_v4().to_string();
    let params = json!({
        "addresses": plan.targets.iter().map(|t| t.given.clone()).collect::<Vec<_>>(),
        "user": plan.user,
        "auth_method": plan.credentials.method(),
        "sudo": plan.privilege != Privilege::Root,
        "labels": plan.labels,
        "host_key_policy": plan.policy,
        "pinned": plan.pins.keys().collect::<Vec<_>>(),
        "manager_url": plan.manager_url,
        "parallelism": plan.parallelism,
        "timeout_seconds": plan.timeout.as_secs(),
        "agent_sha256": plan.agent.sha256,
    });
    let cmd = CommandRec {
        id: id.clone(),
        cluster: String::new(),
        service: String::new(),
        name: COMMAND_NAME.into(),
        params,
        state: "running".into(),
        message: String::new(),
        created_by: actor.user.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    let steps: Vec<StepRec> = plan
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| StepRec::pending(i as u32 + 1, format!("bootstrap {}@{}", plan.user, t.display()), Vec::new()))
        .collect();
    state.store.insert_command(&cmd, &steps).await?;
    state
        .audit(actor.audit(
            "hosts.bootstrap",
            "command",
            &id,
            format!(
                "bootstrap over SSH of {} host(s) ({}) as {} with {} login, host key policy {}, {} pinned, labels {:?}",
                plan.targets.len(),
                plan.targets.iter().map(Target::display).collect::<Vec<_>>().join(", "),
                plan.user,
                plan.credentials.method().replace('_', " "),
                serde_json::to_value(plan.policy).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                plan.pins.len(),
                plan.labels
            ),
        ))
        .await;
    tokio::spawn(execute(state, actor, cmd.clone(), steps.clone(), Arc::new(plan)));
    Ok((cmd, steps))
}

/// A failure: the bootstrap stage and why.
#[derive(Debug)]
struct Failure {
    stage: &'static str,
    message: String,
}

fn fail(stage: &'static str, message: impl Into<String>) -> Failure {
    Failure { stage, message: message.into() }
}

async fn execute(state: Arc<AppState>, actor: Actor, cmd: CommandRec, steps: Vec<StepRec>, plan: Arc<Plan>) {
    let abort = state.commands.flag(&cmd.id);
    let limit = Arc::new(tokio::sync::Semaphore::new(plan.parallelism as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for (step, target) in steps.iter().zip(plan.targets.iter()) {
        let (state, actor, plan, limit, abort) =
            (state.clone(), actor.clone(), plan.clone(), limit.clone(), abort.clone());
        let (cmd_id, seq, target) = (cmd.id.clone(), step.seq, target.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closes");
            if abort.load(Ordering::SeqCst) {
                let _ =
                    state.store.update_step(&cmd_id, seq, "aborted", "aborted by user", None, Some(now_millis())).await;
                return (target, Err(fail("start", "aborted by user")));
            }
            let _ = state.store.update_step(&cmd_id, seq, "running", "connecting", Some(now_millis()), None).await;
            let progress =
                Progress { state: state.clone(), cmd: cmd_id.clone(), seq, stage: std::sync::Mutex::new("connect") };
            let started = Instant::now();
            let result =
                match tokio::time::timeout(plan.timeout, run_host(&state, &actor, &plan, &target, &progress, &abort))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(fail(
                        progress.stage(),
                        format!("timed out after {} s (timeout_seconds)", plan.timeout.as_secs()),
                    )),
                };
            let (st, msg) = match &result {
                Ok(msg) => ("succeeded", format!("{msg} ({:.1} s)", started.elapsed().as_secs_f64())),
                Err(f) => (
                    if abort.load(Ordering::SeqCst) { "aborted" } else { "failed" },
                    format!("{}: {} failed: {}", target.display(), f.stage, f.message),
                ),
            };
            let _ = state.store.update_step(&cmd_id, seq, st, &msg, None, Some(now_millis())).await;
            tracing::info!(command = %cmd_id, host = %target.display(), state = st, "{msg}");
            (target, result.map_err(|f| fail(f.stage, msg)))
        });
    }
    let mut failed = Vec::new();
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(_))) => ok += 1,
            Ok((_, Err(f))) => failed.push(f.message),
            Err(e) => failed.push(format!("a bootstrap task panicked: {e}")),
        }
    }
    let (st, msg) = if failed.is_empty() {
        ("succeeded", format!("{ok} host(s) bootstrapped"))
    } else if abort.load(Ordering::SeqCst) {
        ("aborted", format!("aborted by user; {ok} host(s) bootstrapped"))
    } else {
        ("failed", format!("{} of {} host(s) failed: {}", failed.len(), ok + failed.len(), failed.join("; ")))
    };
    if let Err(e) = state.store.finish_command(&cmd.id, st, &msg, now_millis()).await {
        tracing::error!(command = %cmd.id, error = %e, "could not record command outcome");
    }
    state.commands.forget(&cmd.id);
}

/// Writes a host's progress into its step's message and remembers the stage,
/// so a timeout can name it.
struct Progress {
    state: Arc<AppState>,
    cmd: String,
    seq: u32,
    stage: std::sync::Mutex<&'static str>,
}

impl Progress {
    async fn set(&self, stage: &'static str, message: impl Into<String>) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
        let _ = self.state.store.update_step(&self.cmd, self.seq, "running", &message.into(), None, None).await;
    }

    fn stage(&self) -> &'static str {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_abort(abort: &AtomicBool, stage: &'static str) -> Result<(), Failure> {
    if abort.load(Ordering::SeqCst) { Err(fail(stage, "aborted by user")) } else { Ok(()) }
}

async fn run_host(
    state: &AppState,
    actor: &Actor,
    plan: &Plan,
    target: &Target,
    progress: &Progress,
    abort: &AtomicBool,
) -> Result<String, Failure> {
    // Connect, check the host key, log in.
    progress.set("connect", format!("connecting to {}", target.display())).await;
    let check = KeyCheck {
        host: target.host.clone(),
        port: target.port,
        policy: plan.policy,
        pinned: plan.pins.get(&target.given).cloned(),
        known_hosts: plan.known_hosts.clone(),
    };
    let conn = Connection::open(check, &plan.user, &plan.credentials, CONNECT_TIMEOUT)
        .await
        .map_err(|e| fail(e.stage, e.message))?;
    let key_note = match &conn.verdict {
        KeyVerdict::Pinned { fingerprint } => format!("host key {fingerprint} (pinned)"),
        KeyVerdict::Known { fingerprint } => format!("host key {fingerprint} (known_hosts)"),
        KeyVerdict::AcceptedNew { algorithm, fingerprint } => {
            state
                .audit(actor.audit(
                    "hosts.bootstrap.host_key",
                    "command",
                    &progress.cmd,
                    format!(
                        "accepted new {algorithm} host key {fingerprint} of {} (accept-new); recorded in {}",
                        target.display(),
                        plan.known_hosts.display()
                    ),
                ))
                .await;
            format!("host key {fingerprint} (accepted new)")
        }
        KeyVerdict::Refused(why) => return Err(fail("check host key", why.clone())),
    };
    let result = install_and_enroll(state, actor, plan, target, progress, abort, &conn).await;
    conn.close().await;
    result.map(|done| format!("{done}; {key_note}"))
}

/// Runs `script` with root rights; the password goes to `sudo -S` when needed.
async fn privileged(conn: &Connection, plan: &Plan, script: &str) -> Result<ssh::Output, String> {
    let command = plan.privilege.wrap(script);
    match (&plan.privilege, plan.credentials.as_ref()) {
        (Privilege::SudoWithPassword, Credentials::Password(pw)) => {
            let input = Zeroizing::new(format!("{}\n", pw.expose()));
            let mut reader: &[u8] = input.as_bytes();
            conn.run(&command, Some(&mut reader)).await
        }
        _ => conn.run(&command, None).await,
    }
}

async fn install_and_enroll(
    state: &AppState,
    actor: &Actor,
    plan: &Plan,
    target: &Target,
    progress: &Progress,
    abort: &AtomicBool,
    conn: &Connection,
) -> Result<String, Failure> {
    // Detect the OS and architecture, and check root rights.
    check_abort(abort, "detect")?;
    progress.set("detect", "detecting OS and architecture").await;
    let out = conn.run(remote::DETECT, None).await.map_err(|e| fail("detect", e))?;
    if !out.success() {
        return Err(fail("detect", out.error_text()));
    }
    let host = remote::parse_detect(&String::from_utf8_lossy(&out.stdout)).map_err(|e| fail("detect", e))?;
    if host.arch != plan.agent.arch {
        return Err(fail(
            "detect",
            format!(
                "the host is {} but the agent binary ({}) is built for {}; set --agent-binary to a {} build",
                host.arch,
                plan.agent.path.display(),
                plan.agent.arch,
                host.arch
            ),
        ));
    }
    if plan.privilege == Privilege::Root && host.uid != 0 {
        return Err(fail(
            "detect",
            format!("user {} is not root (uid {}); set sudo to install with sudo", plan.user, host.uid),
        ));
    }
    if plan.privilege != Privilege::Root {
        let out = privileged(conn, plan, "id -u").await.map_err(|e| fail("sudo", e))?;
        if !out.success() || out.stdout_text() != "0" {
            let hint = if plan.privilege == Privilege::SudoNoPassword {
                " (key logins need passwordless sudo: NOPASSWD in sudoers)"
            } else {
                ""
            };
            return Err(fail("sudo", format!("sudo did not give root rights{hint}: {}", out.error_text())));
        }
    }

    // Upload the agent and its environment file into a private staging dir.
    check_abort(abort, "upload agent")?;
    progress.set("upload agent", "creating a staging directory").await;
    let out = conn.run(remote::MAKE_STAGING, None).await.map_err(|e| fail("upload agent", e))?;
    if !out.success() {
        return Err(fail("upload agent", format!("mktemp: {}", out.error_text())));
    }
    let staging = out.stdout_text();
    if !staging.starts_with("/tmp/drover-bootstrap.") || staging.contains(char::is_whitespace) {
        return Err(fail("upload agent", format!("unexpected staging directory {staging:?}")));
    }
    upload_agent(conn, plan, progress, &staging).await.map_err(|e| fail("upload agent", e))?;

    let ttl = plan.timeout + Duration::from_secs(60);
    let (token_rec, token) = crate::auth::issue_enrollment_token(
        &state.store,
        state.pki.ca_fingerprint(),
        &actor.user,
        ttl,
        1,
        plan.labels.clone(),
    )
    .await
    .map_err(|e| fail("upload agent", format!("could not issue an enrollment token: {e}")))?;
    state
        .audit(actor.audit(
            "enrollment_token.create",
            "enrollment_token",
            &token_rec.id,
            format!(
                "created single-use enrollment token for SSH bootstrap of {} (command {}): ttl {}s, labels {:?}",
                target.display(),
                progress.cmd,
                ttl.as_secs(),
                plan.labels
            ),
        ))
        .await;
    let env =
        Zeroizing::new(remote::env_file(&plan.manager_url, &token.to_string()).map_err(|e| fail("upload agent", e))?);
    let mut reader: &[u8] = env.as_bytes();
    let out = conn
        .run(&remote::receive_file(&format!("{staging}/agent.env")), Some(&mut reader))
        .await
        .map_err(|e| fail("upload agent", e))?;
    if !out.success() {
        return Err(fail("upload agent", format!("agent.env: {}", out.error_text())));
    }

    // Install.
    check_abort(abort, "install agent")?;
    progress.set("install agent", format!("installing {}", remote::AGENT_BIN)).await;
    let out = privileged(conn, plan, &remote::install(&staging)).await.map_err(|e| fail("install agent", e))?;
    if !out.success() {
        return Err(fail(
            "install agent",
            format!("the agent does not install or run on this host: {}", out.error_text()),
        ));
    }

    // Start.
    check_abort(abort, "start agent")?;
    let how = if host.systemd { "systemd unit drover-agent.service" } else { "supervisor process" };
    progress.set("start agent", format!("starting the agent ({how})")).await;
    let script = if host.systemd { remote::start_systemd() } else { remote::start_supervised() };
    let out = privileged(conn, plan, &script).await.map_err(|e| fail("start agent", e))?;
    if !out.success() {
        let log = agent_log(conn, plan, host.systemd).await;
        return Err(fail("start agent", format!("{}; agent log: {log}", out.error_text())));
    }

    // Wait until the agent has enrolled and its session is up.
    progress.set("wait for enrollment", format!("agent started ({how}); waiting for it to enroll")).await;
    let deadline = Instant::now() + plan.timeout.saturating_sub(Duration::from_secs(10)).max(Duration::from_secs(10));
    let mut host_id = String::new();
    loop {
        check_abort(abort, "wait for enrollment")?;
        if host_id.is_empty() {
            let out = privileged(conn, plan, &remote::enrolled_host_id())
                .await
                .map_err(|e| fail("wait for enrollment", e))?;
            host_id = out.stdout_text();
        }
        if !host_id.is_empty() && state.registry.host_status(&host_id) == Some(HostStatus::Healthy) {
            break;
        }
        if Instant::now() > deadline {
            let log = agent_log(conn, plan, host.systemd).await;
            let what = if host_id.is_empty() {
                "the agent did not enroll".to_owned()
            } else {
                format!("the agent enrolled as host {host_id} but its session did not come up")
            };
            return Err(fail("wait for enrollment", format!("{what} in time; agent log: {log}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The token has done its job: take it off the host and revoke it.
    let _ = privileged(conn, plan, &remote::forget_token()).await;
    let _ = state.store.revoke_enrollment_token(&token_rec.id, now_millis()).await;
    let hostname =
        state.store.host(&host_id).await.ok().flatten().map(|h| h.hostname).unwrap_or_else(|| target.host.clone());
    Ok(format!(
        "enrolled as host {host_id} ({hostname}); {} {}, {}; agent under {how}",
        host.os, host.arch, host.kernel
    ))
}

/// The last lines of the agent's log (journal or log file), for an error
/// message; empty when they cannot be read.
async fn agent_log(conn: &Connection, plan: &Plan, systemd: bool) -> String {
    privileged(conn, plan, &remote::log_tail(systemd)).await.map(|o| o.stdout_text()).unwrap_or_default()
}

/// Streams the agent binary to the host and checks its SHA-256 there.
async fn upload_agent(conn: &Connection, plan: &Plan, progress: &Progress, staging: &str) -> Result<(), String> {
    let file = tokio::fs::File::open(&plan.agent.path)
        .await
        .map_err(|e| format!("open {}: {e}", plan.agent.path.display()))?;
    let sent = Arc::new(AtomicU64::new(0));
    let mut reader = Counting { inner: file, count: sent.clone() };
    let total = plan.agent.size;
    let ticker = {
        let (state, cmd, seq, sent) = (progress.state.clone(), progress.cmd.clone(), progress.seq, sent.clone());
        tokio::spawn(async move {
            loop {
                let done = sent.load(Ordering::Relaxed);
                let msg = format!(
                    "uploading the agent: {}% of {:.1} MiB",
                    (done * 100).checked_div(total).unwrap_or(100),
                    total as f64 / (1024.0 * 1024.0)
                );
                let _ = state.store.update_step(&cmd, seq, "running", &msg, None, None).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let result = conn.run(&remote::receive_file(&format!("{staging}/drover-agent")), Some(&mut reader)).await;
    ticker.abort();
    let out = result?;
    if !out.success() {
        return Err(out.error_text());
    }
    let remote_sum = out.stdout_text().split_whitespace().next().unwrap_or_default().to_owned();
    if remote_sum != plan.agent.sha256 {
        return Err(format!(
            "the uploaded binary's SHA-256 is {remote_sum:?} on the host, expected {} ({} of {} bytes sent)",
            plan.agent.sha256,
            sent.load(Ordering::Relaxed),
            total
        ));
    }
    Ok(())
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("10.0.0.5", 22).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 22));
        let t = parse_target("db1.example.com:2222", 22).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.display()), ("db1.example.com", 2222, "db1.example.com:2222".into()));
        let t = parse_target("[fd00::5]:2200", 22).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.display()), ("fd00::5", 2200, "[fd00::5]:2200".into()));
        let t = parse_target("[fd00::5]", 23).unwrap();
        assert_eq!(t.port, 23);
        for bad in ["", "host:", "host:0", "host:99999", "-oProxyCommand=x", "a b", "[::1", "h;rm"] {
            let e = parse_target(bad, 22).unwrap_err();
            assert!(e.contains("invalid address"), "{bad}: {e}");
        }
    }

    #[test]
    fn stages_are_read_from_step_messages() {
        assert_eq!(stage_of("running", "connecting"), Some("connect"));
        assert_eq!(stage_of("running", "uploading the agent: 40% of 20.0 MiB"), Some("upload agent"));
        assert_eq!(
            stage_of("running", "agent started (systemd unit); waiting for it to enroll"),
            Some("wait for enrollment")
        );
        assert_eq!(stage_of("failed", "10.0.0.5:22: check host key failed: unknown key"), Some("check host key"));
        assert_eq!(stage_of("failed", "[fd00::5]:22: connect failed: Connection refused"), Some("connect"));
        assert_eq!(stage_of("succeeded", "enrolled as host h1"), None);
        assert_eq!(stage_of("pending", ""), None);
    }

    #[test]
    fn secrets_never_print() {
        let req: BootstrapRequest = serde_json::from_value(json!({
            "addresses": ["h1"],
            "auth": {"password": "hunter2-very-secret"}
        }))
        .unwrap();
        let shown = format!("{req:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(req.port, 22);
        assert_eq!(req.user, "root");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<BootstrapRequest>(json!({
            "addresses": ["h1"], "auth": {"password": "x"}, "pasword": "typo"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `pasword`"), "{e}");
    }
}
