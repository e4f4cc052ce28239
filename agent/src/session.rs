//! The agent's long-lived `Session` stream with the manager, kept open forever:
//! connect with the client certificate, run the protocol (see the private
//! `protocol` module) until the stream breaks, wait with jittered backoff,
//! connect again. Only shutdown or a fatal refusal (decommissioned host, revoked
//! certificate) ends [`run`].
//!
//! Each attempt opens a fresh TCP and TLS connection, so a session declared dead
//! for silence is never retried over the same half-open connection.
//!
//! With roles enabled ([`SessionConfig::roles`]), `run` also starts the
//! [`Supervisor`] before the first connection attempt and keeps it for its whole
//! life: desired roles go to it, and every change of their observed state is
//! reported in a `StatusReport`, at most one every 100 ms. With a parcels
//! directory too ([`SessionConfig::parcels_dir`]), `run` starts the
//! [`Parcels`] driver, announces `parcels.v1`, hands it the desired parcels,
//! and reports their state in the same `StatusReport`s; parcel files are
//! fetched over their own connection with the same client certificate
//! ([`ManagerParcelFetcher`]).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_proto::tls::{self, ManagerAddr, ServerTrust};
use drover_proto::v1;
use drover_proto::v1::agent_service_client::AgentServiceClient;
use rustls::ClientConfig;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::backoff::{Backoff, BackoffConfig};
use crate::collect;
use crate::datadir;
use crate::enroll::Identity;
use crate::error::{AgentError, Rpc, classify};
use crate::facts::HostFacts;
use crate::metrics::Metrics;
use crate::parcels::{self, FetchFuture, ParcelFetcher, ParcelStatus, Parcels, ParcelsConfig, ParcelsView};
use crate::protocol::{Effect, Event, Outbound, Protocol};
use crate::requests::{self, Requests};
use crate::roles::{self, RoleStatus};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::wire::{self, OutboundContext};

/// Messages the agent may queue for a manager that is not reading before the
/// session is considered stuck.
const OUTBOUND_QUEUE: usize = 16;
/// How long a shutting-down agent waits for the manager to close the stream.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Clock differences above this are logged.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Role status reports are coalesced to at most one per this interval.
const ROLES_REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// A desired state is answered once the supervisor has taken it in, or after
/// this long regardless (with the roles as they are).
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// What a session does with the roles the manager assigns to the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RolesMode {
    /// Do not announce `roles.v1`: the manager sends no roles (the default, and
    /// what the load generator's plain synthetic agents do).
    #[default]
    Disabled,
    /// Write files and supervise processes under `data_dir/roles/`, persist the
    /// desired state and re-adopt running processes after a restart.
    Supervise { data_dir: PathBuf },
    /// Only write the files under `dir/roles/`; no processes, nothing persisted
    /// (synthetic agents measuring config push).
    FilesOnly { dir: PathBuf },
    /// A supervisor configured by the caller (tests, tuning); boxed, as the
    /// configuration is much larger than the other variants.
    Custom(Box<SupervisorConfig>),
}

impl RolesMode {
    fn supervisor_config(&self) -> Option<SupervisorConfig> {
        match self {
            RolesMode::Disabled => None,
            RolesMode::Supervise { data_dir } => Some(SupervisorConfig::supervise(data_dir.clone())),
            RolesMode::FilesOnly { dir } => Some(SupervisorConfig::files_only(dir.clone())),
            RolesMode::Custom(config) => Some(SupervisorConfig::clone(config)),
        }
    }
}

/// Everything a session needs. Build it with [`SessionConfig::new`] and adjust
/// the public fields.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub manager: ManagerAddr,
    pub identity: Identity,
    pub facts: HostFacts,
    /// Reported in `Hello`; defaults to this crate's version.
    pub agent_version: String,
    /// Generation of the last applied desired state when `run` starts (0: none).
    pub applied_generation: u64,
    /// Where to persist the applied generation (`applied-generation`); `None`
    /// keeps it in memory only, as synthetic agents do.
    pub state_dir: Option<PathBuf>,
    /// Limit on the TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// How long to wait for `Welcome` after opening the stream.
    pub welcome_timeout: Duration,
    pub backoff: BackoffConfig,
    /// Whether and how roles are run; [`RolesMode::Disabled`] by default.
    pub roles: RolesMode,
    /// With roles enabled: the parcels directory, where parcels are downloaded,
    /// unpacked and activated (`parcels.v1`). `None` (the default): no parcels.
    pub parcels_dir: Option<PathBuf>,
}

impl SessionConfig {
    /// A configuration with defaults: this crate's version, generation 0, no
    /// state directory, 10 s connect and 30 s welcome timeouts, default backoff.
    pub fn new(manager: ManagerAddr, identity: Identity, facts: HostFacts) -> Self {
        SessionConfig {
            manager,
            identity,
            facts,
            agent_version: crate::VERSION.to_owned(),
            applied_generation: 0,
            state_dir: None,
            connect_timeout: Duration::from_secs(10),
            welcome_timeout: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            roles: RolesMode::Disabled,
            parcels_dir: None,
        }
    }
}

/// Hooks for what happens in a session, for tests and the load generator. Every
/// method has an empty default. Calls are made from the task running [`run`]
/// and must not block.
pub trait SessionObserver: Send + Sync {
    /// The manager welcomed the agent: the session is established.
    fn connected(&self) {}
    /// A heartbeat was acknowledged after `rtt`.
    fn heartbeat_acked(&self, rtt: Duration) {
        let _ = rtt;
    }
    /// An attempt ended (before or after `connected`), other than by shutdown;
    /// `reason` is the error's message. Fatal errors are reported here too,
    /// just before `run` returns them.
    fn disconnected(&self, reason: &str) {
        let _ = reason;
    }
    /// Desired state `generation` was recorded as applied and handed to the
    /// supervisor, if any.
    fn desired_state(&self, generation: u64) {
        let _ = generation;
    }
    /// A status report carrying `applied_generation` was queued for the
    /// manager. With a supervisor, the first one after a desired state answers
    /// it with what it did to the roles (files written, processes started).
    fn reported(&self, applied_generation: u64) {
        let _ = applied_generation;
    }
}

/// A [`SessionObserver`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl SessionObserver for NoopObserver {}

/// Fetches parcel files for the [`Parcels`] driver with the manager's
/// `FetchParcel`, over a channel of its own authenticated like the session.
#[derive(Clone, Debug)]
pub struct ManagerParcelFetcher {
    channel: tonic::transport::Channel,
}

impl ManagerParcelFetcher {
    /// `channel` may be lazy: it connects when the first download starts.
    pub fn new(channel: tonic::transport::Channel) -> Self {
        ManagerParcelFetcher { channel }
    }
}

impl ParcelFetcher for ManagerParcelFetcher {
    fn fetch<'a>(&'a self, file_name: &'a str, offset: u64) -> FetchFuture<'a> {
        Box::pin(wire::fetch_parcel(self.channel.clone(), file_name, offset))
    }
}

/// Runs the session until `shutdown` completes (returns `Ok`, after closing the
/// stream) or the manager refuses the agent for good (returns the fatal error).
/// Every other failure is logged and retried with backoff.
///
/// `metrics` is called once per heartbeat. The returned future is `Send` when
/// `shutdown` is, so many sessions can run on one multi-threaded runtime.
pub async fn run(
    config: SessionConfig,
    mut metrics: impl FnMut() -> Metrics + Send,
    observer: Arc<dyn SessionObserver>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let trust = ServerTrust::CaPem(config.identity.ca_pem.clone());
    let tls_config = tls::client_config(&trust, Some(&config.identity.client_identity()))?;
    let facts = wire::facts(&config.facts);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(config.backoff);
    let mut applied = config.applied_generation;
    let host = config.identity.host_id.as_str();
    let mut supervisor_config = config.roles.supervisor_config();
    let parcels = match (&supervisor_config, &config.parcels_dir) {
        (Some(_), Some(dir)) => {
            // Lazy: it connects when the first download starts, and again after a failure.
            let channel = tls::channel(&config.manager, tls_config.clone(), config.connect_timeout)?;
            let fetcher = Arc::new(ManagerParcelFetcher::new(channel));
            let parcels = Parcels::start(ParcelsConfig::new(dir.clone(), fetcher))
                .map_err(|e| AgentError::Config(format!("could not start parcel handling: {e}")))?;
            Some(parcels)
        }
        _ => None,
    };
    if let Some(sc) = &mut supervisor_config {
        sc.parcels_root = parcels.as_ref().map(|p| p.root().to_path_buf());
        if sc.policy.host.is_empty() {
            sc.policy.host = config.facts.hostname.clone();
        }
    }
    let supervisor = match supervisor_config {
        None => None,
        Some(sc) => Some(
            Supervisor::start_with_parcels(sc, parcels.as_ref().map(Parcels::view))
                .map_err(|e| AgentError::Config(format!("could not start role supervision: {e}")))?,
        ),
    };
    loop {
        let attempt = Attempt {
            config: &config,
            tls: &tls_config,
            facts: &facts,
            observer: &*observer,
            supervisor: supervisor.as_ref(),
            parcels: parcels.as_ref(),
        };
        let (error, up_for) = match attempt.run(&mut applied, &mut metrics, shutdown.as_mut()).await {
            Ended::Shutdown => {
                info!(host, "session closed for shutdown");
                return Ok(());
            }
            Ended::Failed { error, up_for } => (error, up_for),
        };
        observer.disconnected(&error.to_string());
        if error.is_fatal() {
            return Err(error);
        }
        warn!(host, manager = %config.manager, reason = %error, "disconnected from the manager");
        if backoff.should_reset(up_for) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        info!(host, delay = %humantime::format_duration(delay), "reconnecting to the manager");
        tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

enum Ended {
    Shutdown,
    Failed { error: AgentError, up_for: Duration },
}

/// One connection attempt and the session on it.
struct Attempt<'a> {
    config: &'a SessionConfig,
    tls: &'a ClientConfig,
    facts: &'a v1::HostFacts,
    observer: &'a dyn SessionObserver,
    supervisor: Option<&'a Supervisor>,
    parcels: Option<&'a Parcels>,
}

/// Completes when the parcels' view changes; never without parcels.
async fn parcels_changed(rx: &mut Option<watch::Receiver<Arc<ParcelsView>>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

fn parcel_statuses(rx: &Option<watch::Receiver<Arc<ParcelsView>>>) -> Option<Arc<Vec<ParcelStatus>>> {
    rx.as_ref().map(|rx| Arc::new(rx.borrow().statuses.clone()))
}

/// Completes when the supervisor has taken in the unanswered desired state
/// (or a later one), at its deadline, or at once without a supervisor; never
/// when nothing is unanswered.
async fn taken_in(rx: &mut Option<watch::Receiver<u64>>, unanswered: Option<(u64, Instant)>) {
    let Some((generation, deadline)) = unanswered else { return std::future::pending().await };
    if let Some(rx) = rx {
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|taken| *taken >= generation)).await;
    }
}

/// Completes when the role statuses change; never without a supervisor.
async fn roles_changed(rx: &mut Option<watch::Receiver<Arc<Vec<RoleStatus>>>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

impl Attempt<'_> {
    async fn run<M, S>(&self, applied: &mut u64, metrics: &mut M, mut shutdown: Pin<&mut S>) -> Ended
    where
        M: FnMut() -> Metrics + Send,
        S: Future<Output = ()> + ?Sized,
    {
        let config = self.config;
        let supervised = self.supervisor.is_some();
        let (mut protocol, effects) = Protocol::new(Instant::now(), *applied, config.welcome_timeout, supervised);
        let failed = |error: AgentError, protocol: &Protocol| Ended::Failed {
            error,
            up_for: protocol.established_at().map_or(Duration::ZERO, |at| at.elapsed()),
        };
        let channel = match tls::channel(&config.manager, self.tls.clone(), config.connect_timeout) {
            Ok(channel) => channel,
            Err(e) => return failed(AgentError::Tls(e), &protocol),
        };
        let mut requests = Requests::new(channel.clone());
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let mut capabilities: Vec<&str> = Vec::new();
        if self.supervisor.is_some() {
            capabilities.push(roles::CAPABILITY);
            capabilities.push(collect::CAPABILITY);
        }
        if self.parcels.is_some() {
            capabilities.push(parcels::CAPABILITY);
        }
        if self.supervisor.is_some() || config.state_dir.is_some() {
            capabilities.push(requests::CAPABILITY);
        }
        let mut roles_rx = self.supervisor.map(Supervisor::statuses);
        let mut taken_rx = self.supervisor.map(Supervisor::taken);
        let mut parcels_rx = self.parcels.map(Parcels::view);
        // Report the roles once the session is up, then on every change.
        let mut roles_pending = roles_rx.is_some();
        let mut roles_not_before = Instant::now();
        // A desired state handed to the supervisor and not answered yet, and
        // when to answer it regardless.
        let mut unanswered: Option<(u64, Instant)> = None;
        let mut ctx = OutboundContext {
            facts: self.facts,
            agent_version: &config.agent_version,
            metrics,
            capabilities: &capabilities,
            roles: roles_rx.as_ref().map(|rx| rx.borrow().clone()),
            parcels: parcel_statuses(&parcels_rx),
            role_metrics: self.supervisor.map(Supervisor::metrics),
        };
        if let Err(e) = self.perform(effects, &tx, &mut ctx, applied) {
            return failed(e, &protocol);
        }

        debug!(manager = %config.manager, "opening session");
        let mut inbound = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ended::Shutdown,
            opened = tokio::time::timeout_at(protocol.deadline(), client.session(ReceiverStream::new(rx))) => {
                match opened {
                    Err(_) => {
                        let error = AgentError::Unavailable(format!(
                            "no answer from {} within {}",
                            config.manager,
                            humantime::format_duration(config.welcome_timeout)
                        ));
                        return failed(error, &protocol);
                    }
                    Ok(Err(status)) => return failed(classify(Rpc::Session, &status), &protocol),
                    Ok(Ok(response)) => response.into_inner(),
                }
            }
        };

        loop {
            let effects = tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    // Ending our half of the stream tells the manager we are leaving;
                    // give it a moment to end its half so nothing is cut mid-frame.
                    drop(tx);
                    let _ = tokio::time::timeout(CLOSE_GRACE, async {
                        while let Ok(Some(_)) = inbound.message().await {}
                    })
                    .await;
                    return Ended::Shutdown;
                }
                received = inbound.message() => match received {
                    Ok(Some(msg)) => match wire::request(msg) {
                        Ok(request) => {
                            requests.start(request, self.request_context());
                            Vec::new()
                        }
                        Err(msg) => protocol.handle(Instant::now(), Event::Received(wire::inbound(*msg))),
                    },
                    Ok(None) => {
                        let error = AgentError::Disconnected("the manager closed the session".into());
                        return failed(error, &protocol);
                    }
                    Err(status) => return failed(classify(Rpc::Session, &status), &protocol),
                },
                () = tokio::time::sleep_until(protocol.deadline()) => protocol.handle(Instant::now(), Event::Tick),
                () = taken_in(&mut taken_rx, unanswered), if unanswered.is_some() => {
                    // One report answers the desired state with what it did to
                    // the roles; the change it made to them is reported with it.
                    unanswered = None;
                    roles_pending = false;
                    roles_not_before = Instant::now() + ROLES_REPORT_INTERVAL;
                    if let Some(rx) = &mut roles_rx {
                        rx.borrow_and_update();
                    }
                    protocol.handle(Instant::now(), Event::RolesChanged)
                }
                () = roles_changed(&mut roles_rx), if !roles_pending => {
                    roles_pending = true;
                    Vec::new()
                }
                () = parcels_changed(&mut parcels_rx), if !roles_pending => {
                    roles_pending = true;
                    Vec::new()
                }
                () = tokio::time::sleep_until(roles_not_before),
                    if roles_pending && unanswered.is_none() && protocol.established_at().is_some() => {
                    roles_pending = false;
                    roles_not_before = Instant::now() + ROLES_REPORT_INTERVAL;
                    protocol.handle(Instant::now(), Event::RolesChanged)
                }
            };
            ctx.roles = roles_rx.as_ref().map(|rx| rx.borrow().clone());
            ctx.parcels = parcel_statuses(&parcels_rx);
            match self.perform(effects, &tx, &mut ctx, applied) {
                Err(e) => return failed(e, &protocol),
                Ok(Some(generation)) if supervised => unanswered = Some((generation, Instant::now() + ANSWER_WAIT)),
                Ok(_) => {}
            }
        }
    }

    /// What a log or diagnostics request reads: the roles, their state, the
    /// data directory (the supervisor's, else the state directory).
    fn request_context(&self) -> requests::Context {
        let data_dir = self.supervisor.map(|s| s.data_dir().to_path_buf()).or_else(|| self.config.state_dir.clone());
        requests::Context {
            data_dir,
            roles: self.supervisor.map(Supervisor::roles).unwrap_or_default(),
            statuses: self.supervisor.map(|s| s.statuses().borrow().clone()).unwrap_or_default(),
            facts: Some(self.config.facts.clone()),
            hub: self.supervisor.map(Supervisor::metrics),
            journal: self.supervisor.map(Supervisor::journal),
        }
    }

    /// Carries out what the protocol decided; returns the generation of the
    /// desired state it applied, if it did.
    fn perform<M: FnMut() -> Metrics>(
        &self,
        effects: Vec<Effect>,
        tx: &mpsc::Sender<v1::AgentMessage>,
        ctx: &mut OutboundContext<'_, M>,
        applied: &mut u64,
    ) -> Result<Option<u64>, AgentError> {
        let host = self.config.identity.host_id.as_str();
        let mut desired = None;
        for effect in effects {
            match effect {
                Effect::Send(msg) => {
                    let reported = match msg {
                        Outbound::Status { applied_generation } => Some(applied_generation),
                        _ => None,
                    };
                    tx.try_send(wire::outbound(msg, ctx)).map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => AgentError::Disconnected(format!(
                            "the manager is not reading the session stream ({OUTBOUND_QUEUE} messages queued)"
                        )),
                        mpsc::error::TrySendError::Closed(_) => {
                            AgentError::Disconnected("the session stream was closed".into())
                        }
                    })?;
                    if let Some(generation) = reported {
                        self.observer.reported(generation);
                    }
                }
                Effect::Established { welcome, heartbeat_interval } => {
                    info!(
                        host,
                        manager = %self.config.manager,
                        manager_version = %welcome.manager_version,
                        heartbeat_interval = %humantime::format_duration(heartbeat_interval),
                        "session established"
                    );
                    if welcome.host_id != host && !welcome.host_id.is_empty() {
                        warn!(host, manager_says = %welcome.host_id, "the manager welcomed us under another host id");
                    }
                    if let Some(skew) = clock_skew(unix_ms_now(), welcome.server_time_unix_ms) {
                        warn!(
                            host,
                            skew = %humantime::format_duration(skew),
                            "this host's clock differs from the manager's by more than 5s; certificates and timestamps may be misjudged, check NTP"
                        );
                    }
                    self.observer.connected();
                }
                Effect::Acked { seq, rtt } => {
                    debug!(host, seq, rtt_ms = rtt.as_secs_f64() * 1000.0, "heartbeat acknowledged");
                    self.observer.heartbeat_acked(rtt);
                }
                Effect::Applied { generation, changed, roles, parcels } => {
                    *applied = generation;
                    if let Some(supervisor) = self.supervisor {
                        supervisor.set_desired(generation, roles);
                    }
                    if let Some(p) = self.parcels {
                        p.set_desired(parcels);
                    }
                    if changed {
                        info!(host, generation, "desired state applied");
                        if let Some(dir) = &self.config.state_dir {
                            // Not fatal: the manager resends the desired state after
                            // a restart, we only report an older generation first.
                            if let Err(e) = datadir::save_applied_generation(dir, generation) {
                                warn!(host, generation, error = %e, "could not record the applied generation");
                            }
                        }
                    }
                    self.observer.desired_state(generation);
                    desired = Some(generation);
                }
                Effect::Close(reason) => return Err(AgentError::Disconnected(reason)),
            }
        }
        Ok(desired)
    }
}

/// The difference between the local and the manager's clock, if it exceeds 5 s.
/// A manager that sent no time (0) gives no skew.
pub(crate) fn clock_skew(local_unix_ms: i64, server_unix_ms: i64) -> Option<Duration> {
    if server_unix_ms == 0 {
        return None;
    }
    let skew = Duration::from_millis(local_unix_ms.abs_diff(server_unix_ms));
    (skew > MAX_CLOCK_SKEW).then_some(skew)
}

fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_is_reported_above_5s() {
        assert_eq!(clock_skew(10_000, 0), None, "no server time");
        assert_eq!(clock_skew(1_000_000, 1_004_000), None);
        assert_eq!(clock_skew(1_000_000, 1_005_000), None);
        assert_eq!(clock_skew(1_000_000, 1_005_001), Some(Duration::from_millis(5_001)));
        assert_eq!(clock_skew(1_010_000, 1_000_000), Some(Duration::from_secs(10)));
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_is_send_for_many_agents_on_one_runtime() {
        let (identity, _) = crate::enroll::tests::issue("h-1");
        let config = SessionConfig::new(
            "https://127.0.0.1:1".parse().expect("addr"),
            identity,
            crate::facts::collect(Some("h")),
        );
        let fut = run(config, Metrics::default, Arc::new(NoopObserver), std::future::pending());
        assert_send(&fut);
    }

    #[derive(Default)]
    struct Recorder {
        disconnects: std::sync::Mutex<Vec<String>>,
    }

    impl SessionObserver for Recorder {
        fn disconnected(&self, reason: &str) {
            if let Ok(mut d) = self.disconnects.lock() {
                d.push(reason.to_owned());
            }
        }
    }

    /// With no manager listening, `run` keeps retrying and reports each failed
    /// attempt, and returns `Ok` as soon as it is told to shut down.
    #[tokio::test]
    async fn retries_until_shutdown_when_the_manager_is_down() {
        // A port that was just free: connections to it are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let (identity, _) = crate::enroll::tests::issue("h-1");
        let mut config = SessionConfig::new(
            format!("https://127.0.0.1:{port}").parse().expect("addr"),
            identity,
            crate::facts::collect(Some("h")),
        );
        config.backoff = BackoffConfig {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            reset_after: Duration::from_secs(60),
        };
        let recorder = Arc::new(Recorder::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(config, Metrics::default, recorder.clone(), async move {
            let _ = stop_rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = recorder.disconnects.lock().map(|d| d.len()).unwrap_or(0);
            if n >= 3 {
                break;
            }
            assert!(Instant::now() < deadline, "fewer than 3 attempts in 20s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(());
        let result = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
        let reasons = recorder.disconnects.lock().map(|d| d.clone()).unwrap_or_default();
        assert!(reasons[0].starts_with("manager unavailable"), "{reasons:?}");
    }
}
