//! Drover manager: the store, the live host registry, the agent gRPC service,
//! the REST API and the web console, assembled by [`Manager::start`].
//!
//! `start` takes its listeners from the caller (linkerd2-proxy style), so tests
//! bind port 0 and run many managers in one process; it returns a
//! [`ManagerHandle`] for graceful shutdown.
//!
//! Start order: config checked, data dir, database and migrations, first
//! admin, CA and a fresh server certificate, registry, service type catalog (a
//! bad descriptor stops the start), parcel repository, every host's desired
//! state (`Desired::load_all`), interrupted commands marked failed; then gRPC
//! and HTTP are served and the background tasks spawned (flusher, lost-host
//! watchdog, metrics maintenance, the desired-state resync and retry loop).
//! `ManagerHandle::shutdown` ends every agent session with `UNAVAILABLE` (HTTP/2
//! graceful shutdown would wait on them forever) and flushes.

pub mod agent_requests;
pub mod alerts;
pub mod auth;
pub mod bootstrap;
pub mod commands;
pub mod config;
pub mod desired;
pub mod domain;
pub mod fixtures;
pub mod grpc;
pub mod http;
pub mod ldap;
pub mod notify;
pub mod parcel_commands;
pub mod parcels;
pub mod pki;
pub mod placement;
pub mod providers;
pub mod registry;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod throttle;

/// The plain data types shared with the REST API (`drover-api`), under the
/// paths the manager's modules have always used.
pub use drover_api::{model, users, whole};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use config::ManagerConfig;
use model::now_millis;
use registry::{Registry, RegistryConfig};
use store::{NewAudit, Store};

/// Everything request handlers share.
pub struct AppState {
    pub config: ManagerConfig,
    pub store: Store,
    pub registry: Registry,
    pub pki: pki::Pki,
    pub basic_cache: auth::BasicCache,
    /// Sign-in throttling (console and HTTP Basic), in memory.
    pub throttle: throttle::SignInThrottle,
    pub console: http::console::Templates,
    /// Service types: built in (`parcels/`) and from DATA_DIR/service-types.
    pub catalog: drover_service_types::descriptor::Catalog,
    /// Encrypts sensitive configuration values at rest (`secrets`).
    pub secrets: secrets::Keyring,
    pub commands: commands::Commands,
    /// The owner of every host's intent: per-service ordering, resync, retry.
    pub desired: desired::Desired,
    /// The parcel repository (own and followed).
    pub parcels: parcels::ParcelRepo,
    pub started_at: Instant,
    /// The manager's own metrics, served at `/metrics`.
    pub telemetry: telemetry::Telemetry,
    /// Health tests and alert rules: the latest health and active alerts, and the notifier.
    pub alerts: alerts::Alerts,
    /// Log and diagnostics requests to agents, awaiting their `Reply` calls.
    pub agent_requests: agent_requests::AgentRequests,
    /// Whether the REST API and console are served over HTTPS (session
    /// cookies are then `Secure`).
    pub https: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// Records a change in the audit log. A failure is logged, not returned:
    /// the change itself has already happened.
    pub async fn audit(&self, entry: NewAudit) {
        if let Err(e) = self.store.insert_audit(&entry).await {
            tracing::error!(error = %e, action = %entry.action, object = %entry.object_id, "could not write audit entry");
        }
    }

    /// [`AppState::audit`] for many entries, in one transaction.
    pub async fn audit_many(&self, entries: Vec<NewAudit>) {
        if let Err(e) = self.store.insert_audits(&entries).await {
            tracing::error!(error = %e, entries = entries.len(), "could not write audit entries");
        }
    }
}

/// A running manager.
pub struct ManagerHandle {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for ManagerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerHandle")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .finish_non_exhaustive()
    }
}

impl ManagerHandle {
    /// The CA certificate agents trust, PEM.
    pub fn ca_pem(&self) -> &str {
        self.state.pki.ca_pem()
    }

    /// Stops accepting connections, ends sessions, writes pending state and
    /// waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Graceful HTTP/2 shutdown waits for open streams, and agent sessions
        // never end by themselves: end them (agents will reconnect to the next
        // manager), repeatedly in case one opened meanwhile.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.state.registry.end_all_sessions();
            match tokio::time::timeout(Duration::from_millis(100), self.tasks.join_next()).await {
                Ok(None) => break,
                Ok(Some(_)) => {}
                Err(_) if Instant::now() > deadline => {
                    tracing::warn!("connections still open after 15 s; closing them");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
                Err(_) => {}
            }
        }
        if let Err(e) = self.state.registry.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        self.state.store.close().await;
    }

    /// Waits until a task ends on its own (a listener failed).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}

pub struct Manager;

impl Manager {
    /// Opens the store, loads the CA and registry, and serves HTTP and gRPC on
    /// the given listeners.
    pub async fn start(
        mut config: ManagerConfig,
        http: TcpListener,
        grpc: TcpListener,
    ) -> anyhow::Result<ManagerHandle> {
        config.validate()?;
        let directory = ldap::Directory::from_config(&config)?;
        // The addresses actually bound (a port 0 asked for becomes a real one),
        // for the URLs the manager gives out.
        config.http_addr = http.local_addr()?;
        config.grpc_addr = grpc.local_addr()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("create data dir {}", config.data_dir.display()))?;
        let http_tls = http::tls::HttpTls::choose(&config)?;
        let url = config.database_url();
        let store = Store::open(&url).await.with_context(|| format!("open database {}", redact_url(&url)))?;
        auth::bootstrap_admin(&store, &config.data_dir, config.admin_password.as_deref()).await?;
        let pki = pki::Pki::load_or_create(&config.data_dir, &config.advertise)?;
        let registry = Registry::load(
            store.clone(),
            RegistryConfig { heartbeat_interval: config.heartbeat_interval, host_lost_after: config.host_lost_after },
        )
        .await
        .context("load hosts")?;
        let user_types = config.data_dir.join("service-types");
        let extra = if user_types.is_dir() { vec![user_types] } else { Vec::new() };
        let catalog = drover_service_types::descriptor::Catalog::load(true, &extra).context("load service types")?;
        let (key_path, create_key) = config.secrets_key_path();
        let secrets = secrets::Keyring::load(&key_path, create_key)?;
        let parcels = parcels::ParcelRepo::open(&config.data_dir.join("parcel-repo"), &config.parcel_repos)
            .context("open the parcel repository")?;
        let file_notify = match &config.notify_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read --notify-config {}", path.display()))?;
                Some(
                    notify::NotifyConfig::parse(&text)
                        .map_err(|e| anyhow::anyhow!("--notify-config {}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        // The stored configuration (set through /api/v1/receivers and /routes) wins; the file
        // seeds the store when nothing is stored yet.
        let stored_notify = domain::notifications::load_from(&store, &secrets)
            .await
            .map_err(|e| anyhow::anyhow!("load the notification configuration: {e}"))?;
        let notify = match (stored_notify, file_notify) {
            (Some(stored), Some(_)) => {
                tracing::warn!(
                    "--notify-config ignored: a notification configuration is stored (change it through \
                     /api/v1/receivers and /api/v1/routes)"
                );
                Some(stored)
            }
            (Some(stored), None) => Some(stored),
            (None, Some(file)) => {
                domain::notifications::store_config(&store, &secrets, &file, "--notify-config")
                    .await
                    .map_err(|e| anyhow::anyhow!("store --notify-config: {e}"))?;
                Some(file)
            }
            (None, None) => None,
        };
        let notify = notify.filter(domain::notifications::has_routes);
        let alerts = alerts::Alerts::new(notify.as_ref()).map_err(|e| anyhow::anyhow!(e))?;
        let state = Arc::new(AppState {
            alerts,
            agent_requests: agent_requests::AgentRequests::default(),
            catalog,
            secrets,
            parcels,
            commands: commands::Commands::default(),
            desired: desired::Desired::new(config.desired_resync_interval),
            console: http::console::Templates::load()?,
            throttle: throttle::SignInThrottle::new(config.sign_in_delay),
            config,
            store,
            registry,
            pki,
            basic_cache: auth::BasicCache::with_directory(directory),
            started_at: Instant::now(),
            telemetry: telemetry::Telemetry::new(),
            https: http_tls.is_https(),
        });

        state.desired.load_all(&state).await.context("compute desired state")?;
        commands::Commands::fail_interrupted(&state).await.context("recover commands")?;

        let http_addr = http.local_addr()?;
        let grpc_addr = grpc.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&state.pki.server_chain_pem, &state.pki.server_key_pem))
            .client_ca_root(Certificate::from_pem(state.pki.ca_pem()))
            .client_auth_optional(true);
        let grpc_server = Server::builder()
            .tls_config(tls)
            .context("gRPC TLS configuration")?
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(grpc::AgentGrpc::new(state.clone()).into_server());
        let mut stop = shutdown.subscribe();
        tasks.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
            let res = grpc_server.serve_with_incoming_shutdown(incoming, async move { stopped(&mut stop).await }).await;
            if let Err(e) = res {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });

        let https = http_tls.server(&state.pki, state.config.http_tls_reload_interval)?;
        let mut stop = shutdown.subscribe();
        tasks.spawn(http::serve(http, state.clone(), https, async move { stopped(&mut stop).await }));

        tasks.spawn(background(state.clone(), shutdown.subscribe()));
        tasks.spawn(desired_loop(state.clone(), shutdown.subscribe()));
        tasks.spawn(alerts::live::run(state.clone(), state.config.alerts_interval, shutdown.subscribe()));
        tracing::info!(%http_addr, %grpc_addr, ca = %state.pki.ca_fingerprint(), "manager started");
        Ok(ManagerHandle { http_addr, grpc_addr, state, shutdown, tasks })
    }
}

/// Resolves once shutdown has been requested.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The flusher, the lost-host watchdog and metrics maintenance.
async fn background(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut flush = tokio::time::interval(state.config.flush_interval);
    let watchdog_period = (state.config.host_lost_after / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut watchdog = tokio::time::interval(watchdog_period);
    let mut maintenance = tokio::time::interval(Duration::from_secs(300));
    // Minute and hour rollups of the metric series, so charts over minutes
    // are at most a minute behind.
    let mut rollups = tokio::time::interval(Duration::from_secs(60));
    rollups.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut repos = tokio::time::interval(state.config.parcel_repo_refresh.max(Duration::from_secs(1)));
    let mut reap = tokio::time::interval(state.config.env_reap_interval);
    for t in [&mut flush, &mut watchdog, &mut maintenance, &mut repos, &mut reap] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = flush.tick() => {
                let began = Instant::now();
                let flushed = state.registry.flush().await;
                state.telemetry.flushed(began.elapsed(), flushed.as_ref().map(|rows| *rows).map_err(|_| ()));
                if let Err(e) = flushed {
                    tracing::error!(error = %e, "could not write host state; will retry");
                }
            }
            _ = watchdog.tick() => { state.registry.check_lost(); }
            _ = repos.tick(), if !state.config.parcel_repos.is_empty() => {
                // Off the loop: a slow remote must not delay the flusher.
                let s = state.clone();
                tokio::spawn(async move { s.parcels.refresh_remotes().await });
            }
            _ = reap.tick() => {
                // Off the loop: a teardown waits for containers to stop.
                let s = state.clone();
                tokio::spawn(async move { domain::environments::reap(&s).await });
            }
            _ = rollups.tick() => {
                if let Err(e) = domain::metrics::roll_up(&state.store, now_millis()).await {
                    tracing::error!(error = %e, "metric rollups failed; will run again");
                }
            }
            _ = maintenance.tick() => {
                if let Err(e) = maintain_metrics(&state).await {
                    tracing::error!(error = %e, "metrics maintenance failed");
                }
                if let Err(e) = domain::diagnostics::sweep(&state).await {
                    tracing::error!(error = %e, "diagnostic bundle sweep failed; will run again");
                }
            }
        }
    }
}

/// The desired-state owner's own work: retries of failed refreshes (checked
/// every second) and the periodic resync. Apart from the flusher, so a long
/// resync never delays host state writes.
async fn desired_loop(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let period = state.desired.resync_interval();
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    for t in [&mut retry, &mut resync] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = retry.tick() => state.desired.retry_due(&state).await,
            _ = resync.tick() => {
                let began = Instant::now();
                let report = state.desired.resync(&state).await;
                state.telemetry.resynced(began.elapsed(), report.as_ref().map(|r| r.corrections).map_err(|_| ()));
                match report {
                    Ok(r) if r.corrections > 0 => tracing::warn!(services = r.services, corrections = r.corrections, "resync corrected drifted desired state"),
                    Ok(r) => tracing::debug!(services = r.services, "resync found no drift"),
                    Err(e) => tracing::error!(error = %e, "desired-state resync failed; will run again"),
                }
            }
        }
    }
}

/// Applies the retention of metrics, events and the audit log.
async fn maintain_metrics(state: &AppState) -> store::Result<()> {
    let now = now_millis();
    domain::metrics::prune(&state.store, now, domain::metrics::Retention::of(state)).await?;
    let events_keep = state.config.events_retention.as_millis() as i64;
    let audit_keep = state.config.audit_retention.as_millis() as i64;
    state.store.prune_history(now - events_keep, now - audit_keep).await?;
    state.store.prune_alert_history(now - events_keep).await?;
    Ok(())
}

/// Hides the password in a database URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Records a change made on behalf of a user.
pub fn audit_entry(
    username: &str,
    source: &str,
    action: &str,
    object_type: &str,
    object_id: &str,
    summary: impl Into<String>,
) -> NewAudit {
    NewAudit {
        at: now_millis(),
        username: username.to_owned(),
        source: source.to_owned(),
        action: action.to_owned(),
        object_type: object_type.to_owned(),
        object_id: object_id.to_owned(),
        summary: summary.into(),
        via: String::new(),
        permission: String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_database_passwords() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
