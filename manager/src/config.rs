//! Operator-facing configuration of `drover-manager`: every flag has a
//! `DROVER_*` environment variable so container images can set them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Drover manager: keeps the inventory of hosts, serves the REST API and web
/// console, and holds a mutual-TLS gRPC session with the agent on every host.
#[derive(Debug, Clone, Parser)]
#[command(name = "drover-manager", version, about, long_about = None)]
pub struct ManagerConfig {
    /// Directory for the embedded database, the CA and the initial admin password.
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://PATH` (default: DATA_DIR/drover.db) or
    /// `postgres://USER:PASSWORD@HOST/DB` for production.
    #[arg(long, env = "DROVER_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Address of the REST API and web console.
    #[arg(long, env = "DROVER_HTTP_ADDR", default_value = "127.0.0.1:7180")]
    pub http_addr: SocketAddr,

    /// PEM certificate chain (server certificate first) for HTTPS on
    /// --http-addr; needs --http-tls-key. Reloaded on SIGHUP and when the file
    /// changes. Without it, a non-loopback --http-addr is served over HTTPS
    /// with a certificate from the manager's own CA (see docs/tls.md).
    #[arg(long, env = "DROVER_HTTP_TLS_CERT", value_name = "FILE", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,

    /// PEM private key of --http-tls-cert.
    #[arg(long, env = "DROVER_HTTP_TLS_KEY", value_name = "FILE", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,

    /// Serve plain HTTP on a non-loopback --http-addr (behind a TLS-terminating
    /// proxy, say). Without it such an address gets HTTPS.
    #[arg(long, env = "DROVER_HTTP_INSECURE")]
    pub http_insecure: bool,

    /// How often the --http-tls-cert and --http-tls-key files are checked for
    /// changes (0s: only on SIGHUP).
    #[arg(long, env = "DROVER_HTTP_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub http_tls_reload_interval: Duration,

    /// Address agents connect to (gRPC over mutual TLS).
    #[arg(long, env = "DROVER_GRPC_ADDR", default_value = "0.0.0.0:7182")]
    pub grpc_addr: SocketAddr,

    /// How often agents send heartbeats (announced to them when they connect).
    #[arg(long, env = "DROVER_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// A host with no heartbeat for this long is marked `lost`.
    #[arg(long, env = "DROVER_HOST_LOST_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub host_lost_after: Duration,

    /// Extra DNS names or IP addresses agents use to reach the manager; they go
    /// into the server certificate (localhost, 127.0.0.1 and ::1 always do).
    /// Comma-separated or repeated.
    #[arg(long, env = "DROVER_ADVERTISE", value_delimiter = ',')]
    pub advertise: Vec<String>,

    /// Password of the `admin` user created on first start. When unset a random
    /// one is written to DATA_DIR/initial-admin-password.
    #[arg(long, env = "DROVER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// How often live host state is written to the database.
    #[arg(long, env = "DROVER_FLUSH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,

    /// How often every host's desired state is derived again from the store
    /// and any drift corrected (level-triggered desired state; an event names
    /// each correction).
    #[arg(long, env = "DROVER_DESIRED_RESYNC_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub desired_resync_interval: Duration,

    /// How long 1-minute rollups of every metric (hosts, roles, services)
    /// are kept.
    #[arg(long, env = "DROVER_METRICS_MINUTE_RETENTION", default_value = "14d", value_parser = humantime::parse_duration)]
    pub metrics_minute_retention: Duration,

    /// How long 1-hour rollups of every metric (hosts, roles, services) are
    /// kept.
    #[arg(long, env = "DROVER_METRICS_HOUR_RETENTION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub metrics_hour_retention: Duration,

    /// How long events (host lost, recovered, enrolled...) are kept.
    #[arg(long, env = "DROVER_EVENTS_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    pub events_retention: Duration,

    /// How long audit log entries are kept.
    #[arg(long, env = "DROVER_AUDIT_RETENTION", default_value = "400d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

    /// A remote parcel repository to follow (a URL whose `manifest.json`
    /// lists parcels). Repeatable or comma-separated. The manager's own
    /// repository (DATA_DIR/parcel-repo, served at `/repo/`) is always used.
    #[arg(long = "parcel-repo", env = "DROVER_PARCEL_REPOS", value_delimiter = ',')]
    pub parcel_repos: Vec<String>,

    /// How often remote parcel repositories' manifests are fetched again.
    #[arg(long, env = "DROVER_PARCEL_REPO_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    pub parcel_repo_refresh: Duration,

    /// Unix socket of the Docker engine the Docker provider creates container
    /// hosts on.
    #[arg(long, env = "DROVER_DOCKER_SOCKET", default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,

    /// The manager's gRPC URL as containers made by the Docker provider reach
    /// it (`https://GATEWAY:7182`). Default: the gateway of the container's
    /// network and the port of --grpc-addr; the gateway must be in --advertise.
    #[arg(long, env = "DROVER_DOCKER_MANAGER_URL")]
    pub docker_manager_url: Option<String>,

    /// How long an instantiation waits for the containers it made to enroll
    /// and turn healthy before its step fails.
    #[arg(long, env = "DROVER_PROVISION_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub provision_timeout: Duration,

    /// Lifetime of an environment created without `ttl` (`never`: none).
    #[arg(long, env = "DROVER_ENV_DEFAULT_TTL", default_value = "8h")]
    pub env_default_ttl: String,

    /// Most container hosts one owner's environments may have together.
    #[arg(long, env = "DROVER_ENV_MAX_HOSTS_PER_OWNER", default_value_t = 20)]
    pub env_max_hosts_per_owner: u32,

    /// How often the manager looks for expired environments to tear down.
    #[arg(long, env = "DROVER_ENV_REAP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub env_reap_interval: Duration,

    /// The agent binary SSH bootstrap uploads to hosts. Default: `drover-agent`
    /// next to this executable.
    #[arg(long, env = "DROVER_AGENT_BINARY", value_name = "FILE")]
    pub agent_binary: Option<PathBuf>,

    /// The manager's gRPC URL as hosts bootstrapped over SSH reach it
    /// (`https://NAME:7182`; NAME must be in --advertise). Default: the first
    /// --advertise name and the port of --grpc-addr.
    #[arg(long, env = "DROVER_AGENT_MANAGER_URL", value_name = "URL")]
    pub agent_manager_url: Option<String>,

    /// known_hosts file SSH bootstrap checks host keys against (and adds keys
    /// accepted under `accept-new` to). Default: DATA_DIR/ssh/known_hosts.
    #[arg(long, env = "DROVER_SSH_KNOWN_HOSTS", value_name = "FILE")]
    pub ssh_known_hosts: Option<PathBuf>,

    /// A console session unused for this long ends (see docs/sessions.md).
    #[arg(long, env = "DROVER_SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,

    /// A console session ends this long after sign-in, however active.
    #[arg(long, env = "DROVER_SESSION_LIFETIME", default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_lifetime: Duration,

    /// The first delay after 5 failed sign-ins of one user name (20 from one
    /// address); each further failure doubles it, up to 5 minutes.
    #[arg(long, env = "DROVER_SIGN_IN_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sign_in_delay: Duration,

    /// The key that encrypts sensitive configuration values in the database
    /// (32 bytes, base64). Default: DATA_DIR/secrets.key, created on first
    /// start. See docs/secrets.md.
    #[arg(long, env = "DROVER_SECRETS_KEY_FILE", value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// A maintenance task to run instead of the server.
    #[command(subcommand)]
    pub command: Option<ManagerCommand>,

    /// Lifetime of an API token whose request names none.
    #[arg(long, env = "DROVER_API_TOKEN_TTL", default_value = "90d", value_parser = humantime::parse_duration)]
    pub api_token_ttl: Duration,

    /// LDAP directory users sign in against (`ldap://HOST` or
    /// `ldaps://HOST`); unset: local users only. See docs/ldap.md.
    #[arg(long, env = "DROVER_LDAP_URL", value_name = "URL")]
    pub ldap_url: Option<String>,

    /// Upgrade an `ldap://` connection to TLS with StartTLS.
    #[arg(long, env = "DROVER_LDAP_STARTTLS")]
    pub ldap_starttls: bool,

    /// PEM CA certificate(s) the directory's TLS certificate must chain to
    /// (ldaps or StartTLS). Default: the system's roots.
    #[arg(long, env = "DROVER_LDAP_CA_CERT", value_name = "FILE")]
    pub ldap_ca_cert: Option<PathBuf>,

    /// Direct bind: the user's DN, `{user}` standing for the name typed
    /// (e.g. `uid={user},ou=people,dc=example,dc=org`). Or search mode with
    /// --ldap-bind-dn and --ldap-user-base.
    #[arg(long, env = "DROVER_LDAP_BIND_DN_TEMPLATE", value_name = "DN")]
    pub ldap_bind_dn_template: Option<String>,

    /// Search mode: the service account that finds users' DNs and groups.
    #[arg(long, env = "DROVER_LDAP_BIND_DN", value_name = "DN")]
    pub ldap_bind_dn: Option<String>,

    /// Search mode: file holding the service account's password.
    #[arg(long, env = "DROVER_LDAP_BIND_PASSWORD_FILE", value_name = "FILE")]
    pub ldap_bind_password_file: Option<PathBuf>,

    /// Search mode: where users are searched (subtree).
    #[arg(long, env = "DROVER_LDAP_USER_BASE", value_name = "DN")]
    pub ldap_user_base: Option<String>,

    /// Search mode: the filter finding a user; `{user}` is the name typed.
    #[arg(long, env = "DROVER_LDAP_USER_FILTER", default_value = "(uid={user})")]
    pub ldap_user_filter: String,

    /// Where groups are searched (subtree).
    #[arg(long, env = "DROVER_LDAP_GROUP_BASE", value_name = "DN")]
    pub ldap_group_base: Option<String>,

    /// The filter finding a user's groups; `{dn}` is the user's DN, `{user}`
    /// the name typed.
    #[arg(long, env = "DROVER_LDAP_GROUP_FILTER", default_value = "(member={dn})")]
    pub ldap_group_filter: String,

    /// Directory group (its `cn`) to Drover role: `GROUP=ROLE` or
    /// `GROUP=ROLE@CLUSTER`, repeatable or comma-separated (e.g.
    /// `drover-admins=admin,prod-ops=operator@prod`).
    #[arg(long, env = "DROVER_LDAP_ROLE_MAP", value_delimiter = ',', value_name = "GROUP=ROLE[@CLUSTER]")]
    pub ldap_role_map: Vec<String>,

    /// How long a directory sign-in is remembered for HTTP Basic calls with
    /// the same password (0s: ask the directory every time).
    #[arg(long, env = "DROVER_LDAP_CACHE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ldap_cache_ttl: Duration,

    /// Serve the manager's own metrics at `/metrics` without authentication,
    /// for a Prometheus on a trusted network. Without it a scrape needs an
    /// API token (or a session) with the `read` permission on the fleet.
    #[arg(long, env = "DROVER_METRICS_UNAUTHENTICATED")]
    pub metrics_unauthenticated: bool,

    /// How long raw metric points (every sample of every host, role and
    /// service metric) are kept; queries over older ranges read the rollups.
    #[arg(long, env = "DROVER_METRICS_RAW_RETENTION", default_value = "1d", value_parser = humantime::parse_duration)]
    pub metrics_raw_retention: Duration,

    /// How often health tests and alert rules are evaluated.
    #[arg(long, env = "DROVER_ALERTS_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub alerts_interval: Duration,

    /// Notification routes and receivers (webhook, e-mail, Alertmanager) as YAML, in the
    /// format of docs/alerts.md. Without it alerts are evaluated and shown, not sent.
    #[arg(long, env = "DROVER_NOTIFY_CONFIG")]
    pub notify_config: Option<PathBuf>,

    /// How long diagnostic bundles are kept (the maintenance sweep deletes older ones).
    #[arg(long, env = "DROVER_DIAGNOSTICS_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub diagnostics_retention: Duration,

    /// Total size of the diagnostic bundles kept; the oldest go first beyond it.
    #[arg(long, env = "DROVER_DIAGNOSTICS_MAX_TOTAL", default_value = "10GiB", value_parser = drover_api::diagnostics::parse_size)]
    pub diagnostics_max_total: u64,

    /// The largest one diagnostic bundle may be (and its default size cap).
    #[arg(long, env = "DROVER_DIAGNOSTICS_MAX_BYTES", default_value = "1GiB", value_parser = drover_api::diagnostics::parse_size)]
    pub diagnostics_max_bytes: u64,

    /// How long one host may take to send its part of a diagnostic bundle.
    #[arg(long, env = "DROVER_DIAGNOSTICS_HOST_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub diagnostics_host_timeout: Duration,

    /// Log format: `text` or `json`.
    #[arg(long, env = "DROVER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl ManagerConfig {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("drover.db").display()),
        }
    }

    /// A configuration for tests and embedding: defaults with the given data dir.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> ManagerConfig {
        let mut c = ManagerConfig::parse_from(["drover-manager"]);
        c.data_dir = data_dir.into();
        c
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.heartbeat_interval < Duration::from_millis(100) {
            anyhow::bail!("--heartbeat-interval must be at least 100ms");
        }
        if self.host_lost_after <= self.heartbeat_interval {
            anyhow::bail!(
                "--host-lost-after ({}) must be longer than --heartbeat-interval ({})",
                humantime::format_duration(self.host_lost_after),
                humantime::format_duration(self.heartbeat_interval)
            );
        }
        match (&self.http_tls_cert, &self.http_tls_key) {
            (Some(_), None) => anyhow::bail!("--http-tls-cert needs --http-tls-key (the certificate's private key)"),
            (None, Some(_)) => {
                anyhow::bail!("--http-tls-key needs --http-tls-cert (the certificate chain it belongs to)")
            }
            (Some(_), Some(_)) if self.http_insecure => {
                anyhow::bail!(
                    "--http-insecure asks for plain HTTP but --http-tls-cert/--http-tls-key ask for HTTPS; give one or the other"
                )
            }
            _ => {}
        }
        if self.api_token_ttl < Duration::from_secs(60) || self.api_token_ttl > Duration::from_secs(10 * 365 * 86_400) {
            anyhow::bail!("--api-token-ttl must be between 1m and 10 years");
        }
        if self.metrics_raw_retention < Duration::from_secs(3600) {
            anyhow::bail!("--metrics-raw-retention must be at least 1h (minute rollups are made from raw points)");
        }
        if self.metrics_minute_retention < Duration::from_secs(3 * 3600) {
            anyhow::bail!("--metrics-minute-retention must be at least 3h (hour rollups are made from minutes)");
        }
        if self.diagnostics_max_bytes == 0 || self.diagnostics_max_total < self.diagnostics_max_bytes {
            anyhow::bail!("--diagnostics-max-bytes must be more than 0 and at most --diagnostics-max-total");
        }
        if self.desired_resync_interval < Duration::from_secs(1) {
            anyhow::bail!("--desired-resync-interval must be at least 1s");
        }
        if self.session_idle_timeout < Duration::from_secs(1) || self.session_lifetime < Duration::from_secs(1) {
            anyhow::bail!("--session-idle-timeout and --session-lifetime must be at least 1s");
        }
        if let Err(e) = crate::domain::environments::parse_ttl(&self.env_default_ttl) {
            anyhow::bail!("--env-default-ttl: {e}");
        }
        if self.env_reap_interval < Duration::from_secs(1) || self.provision_timeout < Duration::from_secs(1) {
            anyhow::bail!("--env-reap-interval and --provision-timeout must be at least 1s");
        }
        if self.sign_in_delay.is_zero() || self.sign_in_delay > Duration::from_secs(300) {
            anyhow::bail!("--sign-in-delay must be more than 0s and at most 5m");
        }
        Ok(())
    }
}

/// `drover-manager COMMAND`: maintenance instead of the server.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ManagerCommand {
    /// Replace the secrets key by a new one and re-encrypt every stored secret
    /// with it, in one transaction (stop the manager first).
    RotateSecretsKey,
}

impl ManagerConfig {
    /// The secrets key file and whether it may be created (the default one).
    pub fn secrets_key_path(&self) -> (PathBuf, bool) {
        match &self.secrets_key_file {
            Some(p) => (p.clone(), false),
            None => (self.data_dir.join(crate::secrets::KEY_FILE), true),
        }
    }
}
