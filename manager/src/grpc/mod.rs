//! The agent-facing gRPC service: enrollment and the long-lived session.
//!
//! Architecture invariant: prost types stop here. Messages are converted to
//! `crate::model` types on the way in and built from them on the way out.
//!
//! The session: a `Hello` must come within 30 s; its facts are stored (and a
//! changed hostname or address re-renders the host's services through
//! `Desired::host_identity_changed`). A second session of a host supersedes
//! the first (`ABORTED`). A [`Session`] pushes every new desired state seen on
//! the host's watch channel, roles only to agents announcing `roles.v1` and
//! parcels only with `parcels.v1`; reports about roles the host is not meant
//! to run are dropped. `FetchParcel` streams a repository file by offset.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::identity::peer_identity;
use drover_proto::token::EnrollmentToken;
use drover_proto::v1::{
    self, AgentMessage, EnrollRequest, EnrollResponse, ManagerMessage, agent_message, manager_message,
};
mod requests;

pub use requests::CAPABILITY_LOGS;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::AppState;
use crate::auth::sha256_hex;
use crate::desired::{DesiredParcel, DesiredRole, HostDesired, ParcelStatusRec};
use crate::model::{Disk, DiskUsage, HostFacts, HostKind, HostMetrics, UnixMillis, now_millis, rfc3339};
use crate::registry::{Kill, Refusal};
use crate::store::{AppliedRec, AppliedRevision, EnrollError, NewAudit, NewHost, RoleStatusRec};
use crate::telemetry::PushTrigger;

/// How long a new session may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Outbound messages buffered per session before acks are dropped.
const OUTBOUND_BUFFER: usize = 16;

#[derive(Clone)]
pub struct AgentGrpc {
    state: Arc<AppState>,
}

impl AgentGrpc {
    pub fn new(state: Arc<AppState>) -> Self {
        AgentGrpc { state }
    }

    pub fn into_server(self) -> v1::agent_service_server::AgentServiceServer<AgentGrpc> {
        v1::agent_service_server::AgentServiceServer::new(self)
    }
}

pub fn facts_from_proto(f: Option<v1::HostFacts>) -> Result<HostFacts, Status> {
    let f = f.ok_or_else(|| Status::invalid_argument("host facts are missing"))?;
    if f.hostname.trim().is_empty() {
        return Err(Status::invalid_argument("host facts: hostname is empty"));
    }
    let kind = match v1::HostKind::try_from(f.kind).unwrap_or(v1::HostKind::Unspecified) {
        v1::HostKind::Container => HostKind::Container,
        v1::HostKind::Vm => HostKind::Vm,
        v1::HostKind::Physical => HostKind::Physical,
        v1::HostKind::Unspecified => HostKind::Unknown,
    };
    Ok(HostFacts {
        hostname: f.hostname,
        addresses: f.addresses,
        kind,
        kind_evidence: f.kind_evidence,
        os: f.os,
        kernel: f.kernel,
        arch: f.arch,
        cpu_cores: f.cpu_cores,
        memory_bytes: f.memory_bytes,
        disks: f
            .disks
            .into_iter()
            .map(|d| Disk {
                mount_point: d.mount_point,
                device: d.device,
                fs_type: d.fs_type,
                total_bytes: d.total_bytes,
            })
            .collect(),
        fqdn: f.fqdn,
        container_id: f.container_id,
        machine_cpu_cores: f.machine_cpu_cores,
        machine_memory_bytes: f.machine_memory_bytes,
        capacity_evidence: f.capacity_evidence,
    })
}

fn metrics_from_proto(m: v1::Metrics) -> HostMetrics {
    HostMetrics {
        at: rfc3339(now_millis()),
        cpu_percent: if m.cpu_percent.is_finite() { m.cpu_percent.clamp(0.0, 100.0) } else { 0.0 },
        memory_used_bytes: m.memory_used_bytes,
        memory_total_bytes: m.memory_total_bytes,
        load1: finite(m.load1),
        load5: finite(m.load5),
        load15: finite(m.load15),
        disks: m
            .disks
            .into_iter()
            .map(|d| DiskUsage { mount_point: d.mount_point, used_bytes: d.used_bytes, total_bytes: d.total_bytes })
            .collect(),
        network_rx_bytes: m.network_rx_bytes,
        network_tx_bytes: m.network_tx_bytes,
        uptime_seconds: m.uptime_seconds,
    }
}

/// The role reports of a heartbeat (agents with the "metrics.v1" capability).
fn roles_from_proto(roles: Vec<v1::RoleMetrics>) -> Vec<crate::domain::metrics::RoleReport> {
    use crate::domain::metrics::{ProcessFigures, RoleReport, Sample};
    roles
        .into_iter()
        .map(|r| RoleReport {
            role_id: r.role_id,
            process: r.process.map(|p| ProcessFigures {
                cpu_percent: p.cpu_percent,
                rss_bytes: p.rss_bytes,
                threads: p.threads,
                open_fds: p.open_fds,
                uptime_seconds: p.uptime_seconds,
                restarts: p.restarts,
                last_exit_status: p.last_exit_status,
            }),
            samples: r
                .samples
                .into_iter()
                .map(|s| Sample {
                    name: s.name,
                    value: s.value,
                    labels: s.labels.into_iter().collect(),
                    at_ms: s.at_unix_ms,
                })
                .collect(),
            collect_error: r.collect_error,
        })
        .collect()
}

fn finite(v: f64) -> f64 {
    if v.is_finite() && v >= 0.0 { v } else { 0.0 }
}

fn msg(kind: manager_message::Kind) -> Outgoing {
    Ok(Box::new(ManagerMessage { kind: Some(kind) }))
}

fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::UnknownHost(_) => Status::permission_denied(r.to_string()),
        Refusal::Decommissioned { .. } | Refusal::RevokedCertificate { .. } => Status::permission_denied(r.to_string()),
        Refusal::ShuttingDown => Status::unavailable(r.to_string()),
    }
}

#[tonic::async_trait]
impl v1::agent_service_server::AgentService for AgentGrpc {
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let source = request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let req = request.into_inner();
        let (token_id, secret) = EnrollmentToken::parse_credential(&req.token)
            .map_err(|e| Status::invalid_argument(format!("enrollment refused: {e}")))?;
        let facts = facts_from_proto(req.facts)?;
        for (k, v) in &req.labels {
            drover_proto::labels::validate(k, v)
                .map_err(|e| Status::invalid_argument(format!("enrollment refused: {e}")))?;
        }
        let host_id = uuid::Uuid::new_v4().to_string();
        // Sign before consuming a token use: a bad CSR must not burn the token.
        let issued = self
            .state
            .pki
            .sign_host_csr(&req.csr_pem, &host_id)
            .map_err(|e| Status::invalid_argument(format!("enrollment refused: {e}")))?;
        let new_host = NewHost {
            id: host_id.clone(),
            facts,
            agent_version: req.agent_version,
            labels: req.labels.into_iter().collect(),
            cert_serial: issued.serial.clone(),
        };
        let now = now_millis();
        let host = match self.state.store.enroll_host(&token_id, &sha256_hex(&secret), now, &new_host).await {
            Ok(h) => h,
            Err(EnrollError::Store(e)) => {
                tracing::error!(error = %e, "enrollment failed in the store");
                return Err(Status::unavailable(
                    "enrollment failed: the manager's database is unavailable; retry later",
                ));
            }
            Err(e @ EnrollError::Unknown(_)) => {
                tracing::warn!(token = %token_id, %source, "enrollment refused: {e}");
                return Err(Status::unauthenticated(format!("enrollment refused: {e}")));
            }
            Err(e) => {
                tracing::warn!(token = %token_id, %source, "enrollment refused: {e}");
                return Err(Status::permission_denied(format!("enrollment refused: {e}")));
            }
        };
        self.state.registry.add_enrolled(&host);
        self.state
            .audit(NewAudit {
                at: now,
                username: format!("enrollment-token:{token_id}"),
                source,
                action: "host.enroll".into(),
                object_type: "host".into(),
                object_id: host.id.clone(),
                summary: format!("enrolled host {} ({}), labels {:?}", host.hostname, host.kind.as_str(), host.labels),
                via: "enrollment-token".into(),
                permission: String::new(),
            })
            .await;
        tracing::info!(host = %host.id, hostname = %host.hostname, token = %token_id, "host enrolled");
        Ok(Response::new(EnrollResponse {
            host_id,
            certificate_pem: issued.pem,
            ca_certificate_pem: self.state.pki.ca_pem().to_owned(),
        }))
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<ManagerMessage, Status>> + Send + 'static>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = client_identity(&request, "a session")?;
        let remote = request.remote_addr();
        let opened = match self.state.registry.open_session(&identity.host_id, &identity.serial) {
            Ok(o) => o,
            Err(r) => {
                tracing::warn!(host = %identity.host_id, remote = ?remote, "session refused: {r}");
                return Err(refusal_status(r));
            }
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        self.state.telemetry.session_opened();
        let session = Session {
            state: self.state.clone(),
            host_id: identity.host_id,
            session_id: opened.session_id,
            kill: opened.kill,
            desired_rx: opened.desired,
            inbound: request.into_inner(),
            tx,
        };
        tokio::spawn(session.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|m| m.map(|b| *b)))))
    }

    async fn reply(&self, request: Request<Streaming<v1::ReplyChunk>>) -> Result<Response<v1::ReplyAck>, Status> {
        let identity = client_identity(&request, "a reply")?;
        self.state.registry.admit(&identity.host_id, &identity.serial).map_err(refusal_status)?;
        let ack = requests::forward_reply(&self.state.agent_requests, &identity.host_id, request.into_inner()).await?;
        Ok(Response::new(ack))
    }

    type FetchParcelStream = Pin<Box<dyn Stream<Item = Result<v1::ParcelChunk, Status>> + Send + 'static>>;

    async fn fetch_parcel(
        &self,
        request: Request<v1::FetchParcelRequest>,
    ) -> Result<Response<Self::FetchParcelStream>, Status> {
        let identity = client_identity(&request, "fetching a parcel")?;
        self.state.registry.admit(&identity.host_id, &identity.serial).map_err(refusal_status)?;
        let req = request.into_inner();
        let (file, total) = self
            .state
            .parcels
            .open_for_download(&req.file_name, req.offset)
            .await
            .map_err(|e| Status::not_found(e.to_string()))?;
        tracing::debug!(host = %identity.host_id, file = %req.file_name, offset = req.offset, "parcel download");
        let stream = tokio_util::io::ReaderStream::with_capacity(file, PARCEL_CHUNK).map(move |chunk| match chunk {
            Ok(data) => Ok(v1::ParcelChunk { data: data.to_vec(), total_size: total }),
            Err(e) => Err(Status::internal(format!("read parcel: {e}"))),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The host identity in the client certificate of a call; `what` names the
/// call in the refusal ("a session needs the client certificate ...").
fn client_identity<T>(request: &Request<T>, what: &str) -> Result<drover_proto::identity::PeerIdentity, Status> {
    let missing = || Status::unauthenticated(format!("{what} needs the client certificate issued at enrollment"));
    let certs = request.peer_certs().ok_or_else(missing)?;
    let leaf = certs.first().ok_or_else(missing)?;
    peer_identity(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// Bytes per `ParcelChunk`: big enough to keep the stream busy, small enough
/// that thousands of concurrent downloads hold little memory.
const PARCEL_CHUNK: usize = 256 * 1024;

/// A message on its way to an agent. Boxed so that each session's channel
/// holds a block of pointers (tokio allocates 32 slots per channel up
/// front), not of messages: 10,000 sessions kept 50 MiB of empty slots.
type Outgoing = Result<Box<ManagerMessage>, Status>;
type Outbound = mpsc::Sender<Outgoing>;

/// Agents that announce this capability receive roles in `DesiredState`.
pub const CAPABILITY_ROLES: &str = "roles.v1";

/// Agents that announce this capability receive parcels in `DesiredState`.
pub const CAPABILITY_PARCELS: &str = "parcels.v1";

/// What an agent said it understands.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    roles: bool,
    parcels: bool,
    logs: bool,
}

fn desired_message(d: &HostDesired, caps: Capabilities) -> manager_message::Kind {
    manager_message::Kind::DesiredState(v1::DesiredState {
        generation: d.generation,
        roles: if caps.roles { d.roles.iter().map(|r| role_spec(r)).collect() } else { Vec::new() },
        parcels: if caps.parcels { d.parcels.iter().map(parcel_spec).collect() } else { Vec::new() },
    })
}

fn parcel_spec(p: &DesiredParcel) -> v1::ParcelSpec {
    v1::ParcelSpec {
        name: p.name.clone(),
        version: p.version.clone(),
        file_name: p.file_name.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        target: if p.active { v1::ParcelTarget::Active } else { v1::ParcelTarget::Distributed } as i32,
    }
}

fn parcel_status(p: v1::ParcelStatus) -> ParcelStatusRec {
    let state = match v1::ParcelState::try_from(p.state) {
        Ok(v1::ParcelState::Downloading) => "downloading",
        Ok(v1::ParcelState::Distributed) => "distributed",
        Ok(v1::ParcelState::Active) => "active",
        Ok(v1::ParcelState::Failed) => "failed",
        _ => "unknown",
    };
    ParcelStatusRec {
        name: p.name,
        version: p.version,
        state: state.to_owned(),
        downloaded_bytes: p.downloaded_bytes,
        total_bytes: p.total_bytes,
        error: p.error,
    }
}

fn role_spec(r: &DesiredRole) -> v1::RoleSpec {
    v1::RoleSpec {
        role_id: r.role_id.clone(),
        service: r.service.clone(),
        role_type: r.role_type.clone(),
        name: r.name.clone(),
        config_revision: r.config_revision,
        files: r.rendered.files.iter().map(v1::ConfigFile::from).collect(),
        process: Some(v1::ProcessSpec::from(&r.rendered.process)),
        run_state: if r.running { v1::RunState::Running } else { v1::RunState::Stopped } as i32,
        restart_nonce: r.restart_nonce,
        health_checks: r.rendered.health_checks.iter().map(v1::HealthCheck::from).collect(),
        log_files: r.rendered.log_files.clone(),
        parcels: r.parcels.clone(),
        restart_digest: r.rendered.restart_digest.clone(),
        metric_sources: r.rendered.metric_sources.iter().map(v1::MetricSource::from).collect(),
        log: Some(v1::LogSpec::from(&r.rendered.log)),
    }
}

fn role_state_name(s: i32) -> &'static str {
    match v1::RoleState::try_from(s).unwrap_or(v1::RoleState::Unspecified) {
        v1::RoleState::Stopped => "stopped",
        v1::RoleState::Starting => "starting",
        v1::RoleState::Running => "running",
        v1::RoleState::Stopping => "stopping",
        v1::RoleState::Failed => "failed",
        v1::RoleState::Unspecified => "unknown",
    }
}

fn role_health_name(h: i32) -> &'static str {
    match v1::RoleHealth::try_from(h).unwrap_or(v1::RoleHealth::Unknown) {
        v1::RoleHealth::Good => "good",
        v1::RoleHealth::Bad => "bad",
        v1::RoleHealth::Unknown => "unknown",
    }
}

/// A role's report as the registry keeps it, received at `now`.
fn role_status_rec(r: v1::RoleStatus, now: UnixMillis) -> RoleStatusRec {
    RoleStatusRec {
        role_id: r.role_id,
        state: role_state_name(r.state).to_owned(),
        health: role_health_name(r.health).to_owned(),
        pid: r.pid,
        last_exit_status: r.last_exit_status,
        restart_count: r.restart_count,
        applied_revision: r.applied_revision,
        running_revision: r.running_revision,
        restart_nonce: r.restart_nonce,
        file_hashes: r.file_hashes.into_iter().collect(),
        last_error: r.last_error,
        last_log_lines: r.last_log_lines,
        started_at: (r.started_at_unix_ms > 0).then_some(r.started_at_unix_ms),
        reload_count: r.reload_count,
        reloaded_at: (r.reloaded_at_unix_ms > 0).then_some(r.reloaded_at_unix_ms),
        updated_at: now,
    }
}

/// Stores what an agent reports about its roles and records when each role
/// first applied each revision.
async fn record_role_status(state: &AppState, host_id: &str, roles: Vec<v1::RoleStatus>) {
    let now = now_millis();
    // Only roles this host is meant to run; anything else is stale news.
    let (desired, reports): (Vec<_>, Vec<_>) = roles
        .into_iter()
        .filter_map(|r| Some((state.registry.desired_role(host_id, &r.role_id)?, role_status_rec(r, now))))
        .unzip();
    // Written to the store by the registry's flusher, in batches.
    let mut applied = Vec::new();
    for (before, s) in state.registry.update_role_status(reports) {
        let Some(desired) = desired.iter().find(|d| d.role_id == s.role_id) else { continue };
        let transitions = crate::registry::role_transitions(before.as_ref(), &s);
        if !transitions.is_empty() {
            let object_id = format!("{}/{}", desired.service, desired.name);
            for (severity, kind, message) in transitions {
                state.registry.push_role_event(severity, kind, &object_id, message);
            }
        }
        if s.applied_revision == 0 {
            continue;
        }
        if let Some((cluster, service)) = desired.service.split_once('/') {
            applied.push(AppliedRevision {
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                revision: s.applied_revision,
                applied: AppliedRec { role_id: s.role_id.clone(), host_id: host_id.to_owned(), applied_at: now },
            });
        }
    }
    state.registry.queue_applied(applied);
}

/// Reads the agent's hello, stores its facts and sends the welcome and the
/// host's desired state.
async fn greet(
    state: &AppState,
    host_id: &str,
    session_id: u64,
    inbound: &mut Streaming<AgentMessage>,
    desired_rx: &mut tokio::sync::watch::Receiver<Arc<HostDesired>>,
    tx: &Outbound,
) -> Result<Greeted, String> {
    // The first message must be a hello; say why when it is not.
    let refuse = |status: Status| async move {
        let reason = status.message().to_owned();
        let _ = tx.send(Err(status)).await;
        reason
    };
    let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Err(_) => return Err(refuse(Status::deadline_exceeded("no hello within 30 s of opening the session")).await),
        Ok(Err(s)) => return Err(format!("stream error before hello: {s}")),
        Ok(Ok(None)) => return Err("stream closed before hello".into()),
        Ok(Ok(Some(m))) => m,
    };
    let Some(agent_message::Kind::Hello(hello)) = first.kind else {
        return Err(refuse(Status::failed_precondition("the first session message must be a hello")).await);
    };
    let facts = match facts_from_proto(hello.facts) {
        Ok(f) => f,
        Err(status) => return Err(refuse(status).await),
    };
    let before = state.store.host(host_id).await.ok().flatten().map(|h| (h.hostname, h.addresses));
    if let Err(e) = state.store.update_host_facts(host_id, &facts, &hello.agent_version).await {
        tracing::error!(host = %host_id, error = %e, "could not store host facts");
    } else if before.is_some_and(|(name, addrs)| name != facts.hostname || addrs != facts.addresses) {
        // A container started again elsewhere, a VM with a new lease: the
        // files of its peers name it, so render them again.
        tracing::info!(host = %host_id, hostname = %facts.hostname, addresses = ?facts.addresses, "host name or addresses changed; rendering its services again");
        if let Err(e) = state.desired.host_identity_changed(state, host_id).await {
            tracing::error!(host = %host_id, error = %e, "could not render the services of a host whose addresses changed");
        }
    }
    state.registry.applied(host_id, hello.applied_generation);
    let interval = state.registry.config().heartbeat_interval;
    let welcome = manager_message::Kind::Welcome(v1::Welcome {
        host_id: host_id.to_owned(),
        heartbeat_interval_ms: interval.as_millis() as u64,
        server_time_unix_ms: now_millis(),
        manager_version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    let caps = Capabilities {
        roles: hello.capabilities.iter().any(|c| c == CAPABILITY_ROLES),
        parcels: hello.capabilities.iter().any(|c| c == CAPABILITY_PARCELS),
        logs: hello.capabilities.iter().any(|c| c == CAPABILITY_LOGS),
    };
    let agent_requests = state.agent_requests.attach(host_id, session_id, caps.logs);
    let current = desired_rx.borrow_and_update().clone();
    let desired = desired_message(&current, caps);
    for m in [welcome, desired] {
        tx.send(msg(m)).await.map_err(|_| "agent went away".to_owned())?;
    }
    state.telemetry.pushed(PushTrigger::SessionOpen, None);
    tracing::info!(host = %host_id, hostname = %facts.hostname, agent_version = %hello.agent_version, "agent session open");
    Ok(Greeted { caps, interval, agent_requests })
}

/// What a session runs on once its agent said hello.
struct Greeted {
    caps: Capabilities,
    interval: Duration,
    agent_requests: mpsc::Receiver<crate::agent_requests::Queued>,
}

/// One agent session, moved whole into its task, which then holds each part
/// once. An `async move` block that handed them to a session function held
/// the stream, the channels and the identity twice: a session's task was
/// 2.4 KiB, and 10,000 sessions held about 6 MiB more than now.
struct Session {
    state: Arc<AppState>,
    host_id: String,
    session_id: u64,
    kill: tokio::sync::oneshot::Receiver<Kill>,
    desired_rx: tokio::sync::watch::Receiver<Arc<HostDesired>>,
    inbound: Streaming<AgentMessage>,
    tx: Outbound,
}

impl Session {
    /// Serves the session until either side ends it, then lets go of it.
    async fn run(mut self) {
        if let Err(reason) = self.serve().await {
            tracing::debug!(host = %self.host_id, %reason, "session ended");
        }
        self.state.agent_requests.detach(&self.host_id, self.session_id);
        self.state.registry.close_session(&self.host_id, self.session_id);
        self.state.telemetry.session_closed();
    }

    /// Drives the session until either side ends it.
    ///
    /// The hello is handled in its own boxed future: its store calls would
    /// otherwise make the state of every session's task as large as theirs for
    /// the session's whole life (6 KiB each, 60 MiB at 10,000 sessions).
    async fn serve(&mut self) -> Result<(), String> {
        let Session { state, host_id, session_id, kill, desired_rx, inbound, tx } = self;
        let (state, host_id): (&AppState, &str) = (state, host_id);
        let greeted = Box::pin(greet(state, host_id, *session_id, inbound, desired_rx, tx)).await?;
        serve_greeted(state, host_id, greeted, kill, desired_rx, inbound, tx).await
    }
}

/// The session once its agent said hello.
async fn serve_greeted(
    state: &AppState,
    host_id: &str,
    greeted: Greeted,
    kill: &mut tokio::sync::oneshot::Receiver<Kill>,
    desired_rx: &mut tokio::sync::watch::Receiver<Arc<HostDesired>>,
    inbound: &mut Streaming<AgentMessage>,
    tx: &Outbound,
) -> Result<(), String> {
    let Greeted { caps, interval, mut agent_requests } = greeted;
    // Ping when the agent has been silent for three heartbeat intervals.
    let mut ping = tokio::time::interval(interval * 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            k = &mut *kill => {
                let status = match k {
                    Ok(Kill::Decommissioned(at)) => Status::permission_denied(
                        Refusal::Decommissioned { host: host_id.to_owned(), at }.to_string()),
                    Ok(Kill::Superseded) => Status::aborted("session superseded by a newer session of the same host"),
                    Ok(Kill::Shutdown) => Status::unavailable("the manager is shutting down; reconnect later"),
                    Err(_) => Status::unavailable("manager is shutting down"),
                };
                let _ = tx.send(Err(status.clone())).await;
                return Err(status.message().to_owned());
            }
            m = inbound.message() => {
                let m = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err("agent closed the session".into()),
                    Err(s) => return Err(format!("stream error: {}", s.message())),
                };
                ping.reset();
                match m.kind {
                    Some(agent_message::Kind::Heartbeat(hb)) => {
                        state.telemetry.heartbeat();
                        let host_metrics = metrics_from_proto(hb.metrics.unwrap_or_default());
                        if !state.registry.heartbeat_with_roles(host_id, host_metrics, roles_from_proto(hb.roles)) {
                            return Err("host no longer admitted".into());
                        }
                        // Never block on a slow reader: an ack can be dropped.
                        let _ = tx.try_send(msg(manager_message::Kind::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq })));
                    }
                    Some(agent_message::Kind::Status(report)) => {
                        state.registry.touch(host_id);
                        if !report.error.is_empty() {
                            tracing::warn!(host = %host_id, generation = report.applied_generation, error = %report.error, "agent could not apply desired state");
                        }
                        if !report.roles.is_empty() {
                            // Boxed: see `Session::serve`.
                            Box::pin(record_role_status(state, host_id, report.roles)).await;
                        }
                        if caps.parcels {
                            state.registry.set_parcel_status(host_id, report.parcels.into_iter().map(parcel_status).collect());
                        }
                        // Persisted by the registry's flusher, in batches.
                        state.registry.applied(host_id, report.applied_generation);
                    }
                    Some(agent_message::Kind::Pong(_)) => state.registry.touch(host_id),
                    Some(agent_message::Kind::Hello(_)) => {
                        tracing::debug!(host = %host_id, "ignoring a second hello");
                    }
                    // A newer agent's message we do not know: ignore it.
                    None => {}
                }
            }
            Some(queued) = agent_requests.recv() => {
                let (id, request) = *queued;
                let m = msg(requests::request_message(id, request));
                tx.send(m).await.map_err(|_| "agent went away".to_owned())?;
            }
            changed = desired_rx.changed() => {
                if changed.is_err() {
                    return Err("host removed".into());
                }
                let current = desired_rx.borrow_and_update().clone();
                tx.send(msg(desired_message(&current, caps))).await.map_err(|_| "agent went away".to_owned())?;
                let latency = state.registry.desired_published_at(host_id).map(|at| at.elapsed());
                state.telemetry.pushed(PushTrigger::Change, latency);
                tracing::debug!(host = %host_id, generation = current.generation, roles = current.roles.len(), "desired state pushed");
            }
            _ = ping.tick() => {
                nonce += 1;
                if tx.try_send(msg(manager_message::Kind::Ping(v1::Ping { nonce }))).is_err() && tx.is_closed() {
                    return Err("agent went away".into());
                }
            }
        }
    }
}
