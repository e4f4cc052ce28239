//! The command line of `drover`: global flags (each with a `DROVER_*`
//! variable) and one subcommand per REST resource. Doc comments here are the
//! `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

use drover_api::users::{Grant, Role};

use crate::labels::{Selector, parse_label, parse_selector_arg};
use crate::trust::Fingerprint;

/// Command-line client of the Drover manager's REST API.
///
/// Credentials, in order of precedence: --api-token, --password,
/// --password-file, then ./drover-data/initial-admin-password if it exists
/// (the file `drover-manager` writes on first start when run from the same
/// directory).
///
/// `drover login URL` saves the manager's URL, the user and how to verify it
/// (--ca-pin or --ca-cert) in a config file that later commands use unless
/// flags or DROVER_* variables say otherwise (see docs/tls.md).
#[derive(Debug, Parser)]
#[command(name = "drover", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Base URL of the manager's REST API (its --http-addr) [default: the
    /// config file's, else http://127.0.0.1:7180].
    #[arg(long, env = "DROVER_URL", value_parser = parse_base_url, global = true)]
    pub url: Option<Url>,

    /// User to sign in as with a password [default: the config file's, else admin].
    #[arg(long, env = "DROVER_USER", global = true)]
    pub user: Option<String>,

    /// Password of --user.
    #[arg(long, env = "DROVER_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,

    /// File holding the password of --user (a trailing newline is ignored),
    /// e.g. ./drover-data/initial-admin-password.
    #[arg(long, env = "DROVER_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,

    /// API token (see `drover api-tokens create`), sent as a Bearer token.
    /// Takes precedence over a password.
    #[arg(long, env = "DROVER_API_TOKEN", hide_env_values = true, global = true)]
    pub api_token: Option<String>,

    /// Verify an HTTPS manager against the CA certificate(s) in this PEM file
    /// only (the manager's own CA is DATA_DIR/ca.pem on its host).
    #[arg(long, env = "DROVER_CA_CERT", value_name = "FILE", global = true, conflicts_with = "ca_pin")]
    pub ca_cert: Option<PathBuf>,

    /// Verify an HTTPS manager by its CA's SHA-256 fingerprint (sha256:HEX,
    /// as drover-manager prints it at start): the manager must present that
    /// CA and a certificate it issued for the URL's host.
    #[arg(long, env = "DROVER_CA_PIN", value_name = "sha256:HEX", value_parser = parse_pin, global = true)]
    pub ca_pin: Option<Fingerprint>,

    /// Config file `drover login` writes and later commands read
    /// [default: ~/.config/drover/config.toml].
    #[arg(long, env = "DROVER_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// How to print results: aligned tables for people, or the API's JSON.
    #[arg(long, env = "DROVER_OUTPUT", value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the manager at URL can be reached, verified (--ca-pin,
    /// --ca-cert, or public roots) and signed in to, then save URL, user and
    /// how to verify it in the config file for later commands. Credentials
    /// are not saved (a --password-file path is).
    ///
    /// Example: drover login https://manager.example:7180 --ca-pin sha256:3f1c...
    Login(LoginArgs),
    /// List, inspect, label and decommission enrolled hosts.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Create, list and revoke enrollment tokens (what new agents join with).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Your API tokens for scripts and CI (use with --api-token): create,
    /// list with expiry and last use, revoke.
    #[command(subcommand)]
    ApiTokens(ApiTokensCommand),
    /// Users and their roles: list, show, create, grant, revoke, disable,
    /// enable, delete, reset a password (needs the admin role).
    #[command(subcommand, long_about = USERS_HELP)]
    Users(UsersCommand),
    /// Change your own password (the user the CLI signs in as).
    ///
    /// The current password is the one the CLI signed in with; with
    /// --api-token it is asked for. The new one comes from
    /// --new-password-file, else it is asked for twice at the terminal, else
    /// read as one line from stdin. Your console sessions end; API tokens
    /// stay valid.
    Passwd(PasswdArgs),
    /// Show who the CLI is signed in as, and how.
    Whoami,
    /// Recent events, newest first: hosts enrolled, lost, recovered, decommissioned.
    Events(EventsArgs),
    /// The audit log, newest first: who changed what, when, from where.
    Audit(AuditArgs),
    /// Parcels: build, index and inspect files (offline), upload them to the
    /// manager, list them, and distribute, activate, deactivate or remove them
    /// on a cluster's hosts.
    #[command(subcommand)]
    Parcel(ParcelCommand),
    /// Clusters: which hosts belong to them (and so receive their parcels).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Service commands that change the software a service runs.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Hosts the manager creates itself: `drover provider docker up|down|list`.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Alert rules: list, show, set -f FILE, delete (resets a built-in), export and import YAML.
    #[command(subcommand, long_about = crate::alerts::RULES_HELP)]
    AlertRules(crate::alerts::AlertRulesCommand),
    /// Silences: mute matching alerts for a while (add --match ... --duration 2h), list, expire.
    #[command(subcommand, long_about = crate::alerts::SILENCE_HELP)]
    Silence(crate::alerts::SilenceCommand),
    /// Maintenance mode of a host, service or cluster: on, off, list (its alerts are suppressed).
    #[command(subcommand, long_about = crate::alerts::MAINTENANCE_HELP)]
    Maintenance(crate::alerts::MaintenanceCommand),
    /// The pending and firing alerts, most severe first (--state firing|pending); `drover
    /// alerts history` lists their transitions.
    Alerts(crate::alerts::AlertsArgs),
    /// Logs: `drover logs CLUSTER/SERVICE[/ROLE] [-f] [--tail N] [--grep RE] [--since 1h]`, or
    /// `drover logs --agent HOST`.
    Logs(crate::logs::LogsArgs),
    /// Notification receivers: list (with delivery counters), show, set NAME -f FILE, delete.
    #[command(subcommand, long_about = crate::notifications::RECEIVERS_HELP)]
    Receivers(crate::notifications::ReceiversCommand),
    /// The notification route tree: show, set -f FILE.
    #[command(subcommand, long_about = crate::notifications::ROUTES_HELP)]
    Routes(crate::notifications::RoutesCommand),
    /// Notification delivery attempts: `drover notifications deliveries [--receiver NAME]`.
    #[command(subcommand)]
    Notifications(crate::notifications::NotificationsCommand),
    /// Diagnostic bundles: collect --cluster C --since 2h [-o FILE], list, download ID, delete ID.
    #[command(subcommand, long_about = crate::diagnostics::HELP)]
    Diagnostics(crate::diagnostics::DiagnosticsCommand),
    /// Cluster templates: export CLUSTER, upload FILE, list, show, delete,
    /// instantiate NAME --cluster C.
    #[command(subcommand, long_about = crate::templates::HELP)]
    Template(crate::templates::TemplateCommand),
    /// Environments on Docker containers: up NAME -f TEMPLATE, list, show,
    /// down NAME.
    #[command(subcommand, long_about = crate::environments::HELP)]
    Env(crate::environments::EnvCommand),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The manager's REST API, e.g. https://manager.example:7180.
    #[arg(value_parser = parse_base_url)]
    pub url: Url,
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Container hosts on the Docker engine the manager runs beside (its
    /// --docker-socket), from the drover/agent image.
    #[command(subcommand)]
    Docker(DockerCommand),
}

#[derive(Debug, Subcommand)]
pub enum DockerCommand {
    /// Start N agent containers with a fresh enrollment token and wait until
    /// all of them are healthy hosts.
    ///
    /// Example: drover provider docker up --count 3 --network lab --label zk=true --memory 512m
    Up(DockerUpArgs),
    /// Remove containers this manager created, their volumes, and decommission
    /// their hosts: the given ones, or all with --all.
    ///
    /// Example: drover provider docker down --all
    Down(DockerDownArgs),
    /// List the containers this manager created, with their host and status.
    List,
}

#[derive(Debug, Args)]
pub struct DockerUpArgs {
    /// How many containers (1-100).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,

    /// Agent image (the manager's default is drover/agent:latest; build it
    /// with scripts/build-images.sh).
    #[arg(long, env = "DROVER_DOCKER_IMAGE")]
    pub image: Option<String>,

    /// Docker network to attach them to (default bridge).
    #[arg(long, env = "DROVER_DOCKER_NETWORK")]
    pub network: Option<String>,

    /// Labels the hosts get, as key=value; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,

    /// CPU limit per container, in CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,

    /// Memory limit per container, e.g. 512m or 2g.
    #[arg(long)]
    pub memory: Option<String>,

    /// Container names are this plus 6 random characters.
    #[arg(long)]
    pub name_prefix: Option<String>,

    /// The manager's gRPC URL as the containers reach it.
    #[arg(long)]
    pub manager_url: Option<String>,

    /// How long to wait for every container to enroll and turn healthy.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,

    /// Return once the containers are started, without waiting for them to enroll.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct DockerDownArgs {
    /// Container ids (12+ characters) or names.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub containers: Vec<String>,

    /// Remove every container this manager created.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum ParcelCommand {
    /// Build a parcel from a recipe directory (a folder with parcel.toml, e.g. parcels/redis).
    ///
    /// Resolves the recipe's Debian packages and the dependencies a drover/base host lacks,
    /// downloads them with apt-get (or takes them from --deb-dir), unpacks them with dpkg-deb and
    /// writes OUT/NAME-VERSION-DISTRO.parcel. The same inputs give the same sha256. Progress
    /// goes to stderr; the file, its sha256 and size to stdout.
    ///
    /// Example: drover parcel build parcels/redis --out ./repo --version 7.0.15-2
    Build(ParcelBuildArgs),
    /// Check every *.parcel in a folder and write its manifest.json.
    ///
    /// Example: drover parcel index ./repo
    Index(ParcelIndexArgs),
    /// Check a parcel file (every entry, checksums, meta/parcel.json) and print its meta.
    Inspect(ParcelInspectArgs),
    /// Upload a parcel file to the manager's repository.
    ///
    /// The sha256 is computed locally first and the manager checks the file against it.
    /// The file is streamed, never read whole into memory; progress goes to stderr.
    ///
    /// Example: drover parcel upload ./repo/redis-7.0.15-2-bookworm.parcel
    Upload(ParcelUploadArgs),
    /// List the parcels the manager knows (its repository and followed ones),
    /// with each cluster's target and a summary of its hosts' states.
    List,
    /// Download a parcel version to every host of a cluster (checked by sha256),
    /// and follow the command until it ends.
    ///
    /// Example: drover parcel distribute --cluster prod redis 7.0.15-2
    Distribute(ParcelLifecycleArgs),
    /// Switch every host of a cluster to a distributed version (an atomic symlink switch).
    Activate(ParcelLifecycleArgs),
    /// Deactivate a parcel on every host of a cluster (VERSION defaults to the active one).
    Deactivate(ParcelDeactivateArgs),
    /// Delete a distributed, inactive version from every host of a cluster.
    Remove(ParcelLifecycleArgs),
}

impl ParcelCommand {
    /// Whether the command works on local files only (no manager, no credentials).
    pub fn is_local(&self) -> bool {
        matches!(self, ParcelCommand::Build(_) | ParcelCommand::Index(_) | ParcelCommand::Inspect(_))
    }
}

#[derive(Debug, Args)]
pub struct ParcelUploadArgs {
    /// The .parcel file, named NAME-VERSION-DISTRO.parcel.
    pub file: PathBuf,
}

/// How long-running commands are followed.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Print the started command and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ParcelLifecycleArgs {
    /// The cluster whose hosts the command runs on.
    #[arg(long, env = "DROVER_CLUSTER")]
    pub cluster: String,

    /// Parcel name, e.g. redis.
    pub name: String,

    /// Parcel version, e.g. 7.0.15-2.
    pub version: String,

    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct ParcelDeactivateArgs {
    /// The cluster whose hosts the command runs on.
    #[arg(long, env = "DROVER_CLUSTER")]
    pub cluster: String,

    /// Parcel name, e.g. redis.
    pub name: String,

    /// The version to deactivate; the active one when omitted.
    pub version: Option<String>,

    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Add hosts to a cluster, or list its hosts.
    #[command(subcommand)]
    Hosts(ClusterHostsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterHostsCommand {
    /// Add hosts to a cluster: they receive the cluster's parcels.
    ///
    /// Example: drover cluster hosts add prod 0f3c 99aa
    Add(ClusterHostsAddArgs),
    /// List the hosts of a cluster.
    List(ClusterArg),
}

#[derive(Debug, Args)]
pub struct ClusterHostsAddArgs {
    /// The cluster.
    pub cluster: String,

    /// Host IDs, or unique prefixes of at least 4 characters.
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ClusterArg {
    /// The cluster.
    pub cluster: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Upgrade the parcel a service runs from: distribute and activate VERSION on
    /// the cluster's hosts, then restart the service's roles one batch at a time,
    /// waiting for health. Follows the command until it ends.
    ///
    /// Example: drover service upgrade --cluster prod redis 7.0.15-2
    Upgrade(ServiceUpgradeArgs),
    /// Go back to the previously active version of the service's parcel, the same way.
    Rollback(ServiceRollbackArgs),
}

#[derive(Debug, Args)]
pub struct ServiceUpgradeArgs {
    /// The service's cluster.
    #[arg(long, env = "DROVER_CLUSTER")]
    pub cluster: String,

    /// The service, e.g. redis.
    pub service: String,

    /// The parcel version to go to.
    pub version: String,

    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct ServiceRollbackArgs {
    /// The service's cluster.
    #[arg(long, env = "DROVER_CLUSTER")]
    pub cluster: String,

    /// The service, e.g. redis.
    pub service: String,

    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct ParcelBuildArgs {
    /// The recipe directory, holding parcel.toml.
    pub recipe_dir: PathBuf,

    /// Where to write the parcel (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Version of the parcel instead of the recipe's, e.g. 7.0.15-2.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,

    /// Where downloaded .deb files are kept between builds
    /// (default $XDG_CACHE_HOME/drover/debs or ~/.cache/drover/debs).
    #[arg(long, value_name = "DIR", env = "DROVER_PARCEL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Take packages from the .deb files in this directory instead of apt (offline builds,
    /// tests). Dependencies missing from it are assumed to be on the host.
    #[arg(long, value_name = "DIR", conflicts_with = "cache_dir")]
    pub deb_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ParcelIndexArgs {
    /// The repository folder.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ParcelInspectArgs {
    /// The .parcel file.
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// List hosts with their status and latest metrics.
    ///
    /// Example: drover hosts list --status healthy --label rack=r1,tier=web
    List(HostsListArgs),
    /// Show one host: facts, disks, latest metrics and labels.
    Show(HostArg),
    /// Set or remove labels of a host.
    ///
    /// Example: drover hosts label 0f3c rack=r1 tier=web --remove old
    Label(HostsLabelArgs),
    /// Decommission a host: revoke its certificate and refuse its agent from
    /// then on. It would have to enroll again with a new token.
    Decommission(HostsDecommissionArgs),
    /// Install the agent over SSH on machines that run sshd (VMs, bare metal,
    /// containers without an agent) and wait until they are healthy hosts.
    ///
    /// One step per address: connect, check the host key, log in, detect OS
    /// and architecture, upload the agent, install it, start it (systemd unit,
    /// or a supervisor process without systemd), wait for enrollment. The
    /// credentials go to the manager for this command only; it never stores
    /// or logs them.
    ///
    /// Example: drover hosts bootstrap 10.0.0.5 10.0.0.6:2222 --user admin --sudo
    ///   --identity ~/.ssh/id_ed25519 --host-key-policy accept-new --label rack=r1
    Bootstrap(HostsBootstrapArgs),
}

#[derive(Debug, Args)]
pub struct HostsBootstrapArgs {
    /// Host names or addresses, optionally with :PORT.
    #[arg(required = true, value_name = "ADDRESS")]
    pub addresses: Vec<String>,

    /// SSH login user.
    #[arg(long = "ssh-user", env = "DROVER_SSH_USER", default_value = "root")]
    pub ssh_user: String,

    /// SSH port for addresses without one.
    #[arg(long = "ssh-port", env = "DROVER_SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,

    /// Private key file to log in with (OpenSSH or PEM).
    #[arg(
        long,
        short = 'i',
        env = "DROVER_SSH_IDENTITY",
        value_name = "FILE",
        required_unless_present = "ssh_password_file"
    )]
    pub identity: Option<PathBuf>,

    /// File holding the private key's passphrase.
    #[arg(long, env = "DROVER_SSH_PASSPHRASE_FILE", value_name = "FILE", requires = "identity")]
    pub passphrase_file: Option<PathBuf>,

    /// File holding the login password (`-`: read it from stdin). Never
    /// given on the command line, where `ps` would show it.
    #[arg(long, env = "DROVER_SSH_PASSWORD_FILE", value_name = "FILE", conflicts_with = "identity")]
    pub ssh_password_file: Option<PathBuf>,

    /// Install with sudo (the default when --ssh-user is not root).
    #[arg(long)]
    pub sudo: bool,

    /// Labels the new hosts get, as key=value; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,

    /// What to do with a host key the manager has never seen: refuse it
    /// (known-hosts) or accept and record it (accept-new). A changed key is
    /// always refused.
    #[arg(long, env = "DROVER_SSH_HOST_KEY_POLICY", value_parser = ["known-hosts", "accept-new"])]
    pub host_key_policy: Option<String>,

    /// Pin a host's key: ADDRESS=SHA256:... (as `ssh-keygen -l` prints it);
    /// may be repeated.
    #[arg(long, value_name = "ADDRESS=FINGERPRINT", value_parser = crate::remote_hosts::parse_pin)]
    pub fingerprint: Vec<(String, String)>,

    /// The manager's gRPC URL as the hosts reach it.
    #[arg(long, env = "DROVER_AGENT_MANAGER_URL")]
    pub manager_url: Option<String>,

    /// Hosts bootstrapped at once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub parallelism: u32,

    /// Per-host limit, enrollment included.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,

    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct HostsListArgs {
    /// Only hosts with this status.
    #[arg(long, value_parser = ["healthy", "lost", "decommissioned"])]
    pub status: Option<String>,

    /// Only hosts with all these labels: key=value[,key=value...]; may be repeated.
    #[arg(long, value_name = "SELECTOR", value_parser = parse_selector_arg)]
    pub label: Vec<Selector>,

    /// Only hosts whose hostname contains this text.
    #[arg(long, value_name = "SUBSTR")]
    pub hostname: Option<String>,

    /// Page size, 1-1000 (the manager's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,

    /// Number of matching hosts to skip.
    #[arg(long)]
    pub offset: Option<u32>,
}

#[derive(Debug, Args)]
pub struct HostArg {
    /// Host ID, its hostname, or a unique ID prefix of at least 4 characters.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct HostsLabelArgs {
    /// Host ID, its hostname, or a unique ID prefix of at least 4 characters.
    pub id: String,

    /// Labels to set, as key=value.
    #[arg(value_name = "KEY=VALUE", value_parser = parse_label, required_unless_present = "remove")]
    pub set: Vec<(String, String)>,

    /// Label keys to remove; may be repeated or comma-separated.
    #[arg(long, value_name = "KEY", value_delimiter = ',')]
    pub remove: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HostsDecommissionArgs {
    /// Host ID, its hostname, or a unique ID prefix of at least 4 characters.
    pub id: String,

    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an enrollment token and print the agent command line that uses it.
    ///
    /// Example: drover tokens create --ttl 2h --max-uses 10 --label rack=r1
    Create(TokensCreateArgs),
    /// List enrollment tokens (their secrets are never shown again).
    List,
    /// Revoke an enrollment token; hosts already enrolled with it are unaffected.
    Revoke(TokenIdArg),
}

#[derive(Debug, Args)]
pub struct TokensCreateArgs {
    /// How long the token can be used, e.g. 30m, 1h, 7d (at most one year).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,

    /// How many hosts may enroll with the token.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_uses: u32,

    /// Label given to every host enrolled with the token, as key=value; may be repeated.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct TokenIdArg {
    /// Token ID (the first column of `drover tokens list`).
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum ApiTokensCommand {
    /// Create an API token for the signed-in user; it is printed once.
    ///
    /// Without --role the token may do whatever you may do (now and after
    /// any change to your roles); with --role it may do only that, and each
    /// role must be within your own.
    ///
    /// Example: drover api-tokens create ci-deploy --ttl 30d --role operator@prod
    Create(ApiTokensCreateArgs),
    /// List your API tokens: roles, expiry and last use (never the secret).
    List,
    /// Revoke one of your API tokens: programs using it are refused from then on.
    Revoke(ApiTokenIdArg),
}

#[derive(Debug, Args)]
pub struct ApiTokensCreateArgs {
    /// What the token is for, e.g. ci-pipeline.
    pub name: String,

    /// Lifetime, e.g. 30d (at most ten years) [default: the manager's
    /// --api-token-ttl, 90 days unless set].
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<u64>,

    /// A role the token gets, ROLE or ROLE@CLUSTER, within your own roles;
    /// may be repeated (see `drover users --help` for the roles).
    #[arg(long = "role", value_name = "ROLE[@CLUSTER]", value_parser = parse_grant)]
    pub roles: Vec<Grant>,
}

#[derive(Debug, Args)]
pub struct ApiTokenIdArg {
    /// Token ID (the first column of `drover api-tokens list`).
    pub id: String,
}

/// The `--help` of `drover users`: what each role may do.
const USERS_HELP: &str = "\
Users and their roles: list, show, create, grant, revoke, disable, enable,
delete, reset a password. All of it needs the admin role.

A user may do what their roles allow. A role is granted globally (ROLE) or
for one cluster (ROLE@CLUSTER, e.g. operator@prod): on a cluster it covers
the cluster's services, roles, configuration, commands, parcels and hosts.

Roles:
  admin          everything, including users, enrollment tokens, SSH
                 bootstrap, providers and clusters (global only)
  cluster-admin  services, roles, configuration, commands, parcels and hosts
  configurator   configuration changes and rollbacks; no commands
  operator       start, stop, restart, rolling restart, abort; no
                 configuration changes
  viewer         reads everything but the audit log
  auditor        reads everything including the audit log; changes nothing
                 (global only)

Secrets are never shown to anyone. At least one enabled user keeps the admin
role: the manager refuses to demote, disable or delete the last one.

Passwords (create, reset-password) come from --new-password-file FILE (`-`:
stdin), else are asked for twice at the terminal, else read as one line from
stdin; never from the command line, where `ps` would show them.

Examples:
  drover users create jane --role operator@prod --role viewer
  drover users grant jane configurator@prod
  drover users revoke jane viewer
  drover users disable jane";

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users with their roles, state and last sign-in.
    List,
    /// Show one user.
    Show(UserArg),
    /// Create a user with a password and roles.
    ///
    /// Example: drover users create jane --role operator@prod --new-password-file jane.pw
    Create(UsersCreateArgs),
    /// Grant roles to a user (kept with the ones they have).
    ///
    /// Example: drover users grant jane operator@prod viewer
    Grant(UserGrantsArgs),
    /// Take roles from a user.
    ///
    /// Example: drover users revoke jane operator@prod
    Revoke(UserGrantsArgs),
    /// Disable a user: they cannot sign in and their console sessions end.
    Disable(UserArg),
    /// Enable a disabled user again.
    Enable(UserArg),
    /// Delete a user with their API tokens and sessions.
    Delete(UsersDeleteArgs),
    /// Set a user's password (their console sessions end).
    ResetPassword(UsersResetPasswordArgs),
}

#[derive(Debug, Args)]
pub struct UserArg {
    /// The user name.
    pub name: String,
}

/// Where a new password comes from.
#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// File holding the new password (`-`: read it from stdin; a trailing
    /// newline is ignored). Without it the password is asked for at the
    /// terminal, or read as one line from stdin.
    #[arg(long, env = "DROVER_NEW_PASSWORD_FILE", value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UsersCreateArgs {
    /// The user name: 1-64 letters, digits, '.', '_', '-' or '@'.
    pub name: String,

    /// A role, ROLE or ROLE@CLUSTER; may be repeated. Without any the user
    /// can sign in but do nothing until granted a role.
    #[arg(long = "role", value_name = "ROLE[@CLUSTER]", value_parser = parse_grant)]
    pub roles: Vec<Grant>,

    #[command(flatten)]
    pub password: NewPasswordArgs,
}

#[derive(Debug, Args)]
pub struct UserGrantsArgs {
    /// The user name.
    pub name: String,

    /// Roles, each ROLE or ROLE@CLUSTER.
    #[arg(required = true, value_name = "ROLE[@CLUSTER]", value_parser = parse_grant)]
    pub roles: Vec<Grant>,
}

#[derive(Debug, Args)]
pub struct UsersDeleteArgs {
    /// The user name.
    pub name: String,

    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct UsersResetPasswordArgs {
    /// The user name.
    pub name: String,

    #[command(flatten)]
    pub password: NewPasswordArgs,
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    #[command(flatten)]
    pub password: NewPasswordArgs,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this host (ID or unique prefix of at least 4 characters).
    #[arg(long, value_name = "ID")]
    pub host: Option<String>,

    /// How many events to show, 1-1000 (the manager's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only changes made by this user.
    #[arg(long)]
    pub user: Option<String>,

    /// Only changes to this object (a host ID, token ID, ...).
    #[arg(long, value_name = "ID")]
    pub object_id: Option<String>,

    /// How many entries to show, 1-1000 (the manager's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

/// Parses `--url`: an absolute http(s) URL; a path prefix (reverse proxy) is kept.
pub fn parse_base_url(s: &str) -> Result<Url, String> {
    let hint = "expected a URL such as http://127.0.0.1:7180";
    let url = Url::parse(s).map_err(|e| format!("{e}; {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("unsupported URL {s:?}; {hint}"));
    }
    Ok(url)
}

/// Parses a CA fingerprint (`sha256:HEX`).
pub fn parse_pin(s: &str) -> Result<Fingerprint, String> {
    s.parse()
}

/// Parses `ROLE` or `ROLE@CLUSTER`.
pub fn parse_grant(s: &str) -> Result<Grant, String> {
    let roles = Role::ALL.map(Role::as_str).join(", ");
    let (role, cluster) = match s.split_once('@') {
        Some((r, c)) => (r, Some(c)),
        None => (s, None),
    };
    if cluster.is_some_and(str::is_empty) {
        return Err(format!("{s:?} names no cluster after '@'; expected ROLE or ROLE@CLUSTER"));
    }
    if Role::parse(role).is_none() {
        return Err(format!("unknown role {role:?}: one of {roles}, optionally @CLUSTER"));
    }
    Grant::parse(s).ok_or_else(|| format!("{s:?} is not ROLE or ROLE@CLUSTER"))
}

/// Parses a humantime duration into whole seconds, at least one.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration such as 30m, 1h or 7d"))?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!("{s:?} is not a whole number of seconds of at least 1s"));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn urls() {
        assert_eq!(parse_base_url("http://m:7180").unwrap().as_str(), "http://m:7180/");
        assert_eq!(parse_base_url("https://m/drover/").unwrap().path(), "/drover/");
        assert!(parse_base_url("manager:7180").is_err());
        assert!(parse_base_url("ftp://m").is_err());
        assert!(parse_base_url("").is_err());
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1500ms").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn label_command_needs_something_to_change() {
        assert!(Cli::try_parse_from(["drover", "hosts", "label", "abcd"]).is_err());
        let cli = Cli::try_parse_from(["drover", "hosts", "label", "abcd", "--remove", "a,b"]).unwrap();
        let Command::Hosts(HostsCommand::Label(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.remove, ["a", "b"]);
        assert!(args.set.is_empty());
    }

    #[test]
    fn parcel_build_flags() {
        let cli = Cli::try_parse_from(["drover", "parcel", "build", "parcels/redis", "--out", "r", "--version", "1-2"])
            .unwrap();
        let Command::Parcel(ParcelCommand::Build(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.version.as_deref(), Some("1-2"));
        assert!(Cli::try_parse_from(["drover", "parcel", "build", "parcels/redis"]).is_err(), "--out is required");
    }

    #[test]
    fn parcel_repository_and_lifecycle_arguments() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()));
        let cli = parse(&["parcel", "upload", "r/redis-1-x.parcel"]).unwrap();
        let Command::Parcel(ParcelCommand::Upload(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.file, PathBuf::from("r/redis-1-x.parcel"));
        assert!(parse(&["parcel", "upload"]).is_err(), "FILE is required");
        assert!(matches!(parse(&["parcel", "list"]).unwrap().command, Command::Parcel(ParcelCommand::List)));

        let cli = parse(&["parcel", "distribute", "--cluster", "prod", "redis", "7.0.15-2"]).unwrap();
        let Command::Parcel(ParcelCommand::Distribute(args)) = cli.command else { panic!("wrong command") };
        assert_eq!((args.cluster.as_str(), args.name.as_str(), args.version.as_str()), ("prod", "redis", "7.0.15-2"));
        assert!(!args.wait.no_wait);
        let cli = parse(&["parcel", "activate", "redis", "2", "--cluster", "c", "--no-wait"]).unwrap();
        let Command::Parcel(ParcelCommand::Activate(args)) = cli.command else { panic!("wrong command") };
        assert!(args.wait.no_wait);
        assert!(parse(&["parcel", "remove", "--cluster", "c", "redis"]).is_err(), "VERSION is required");
        let cli = parse(&["parcel", "deactivate", "--cluster", "c", "redis"]).unwrap();
        let Command::Parcel(ParcelCommand::Deactivate(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.version, None);

        let cli = parse(&["cluster", "hosts", "add", "prod", "0f3c", "99aa"]).unwrap();
        let Command::Cluster(ClusterCommand::Hosts(ClusterHostsCommand::Add(args))) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(
            (args.cluster.as_str(), args.hosts.as_slice()),
            ("prod", &["0f3c".to_owned(), "99aa".to_owned()][..])
        );
        assert!(parse(&["cluster", "hosts", "add", "prod"]).is_err(), "at least one HOST");
        assert!(parse(&["cluster", "hosts", "list", "prod"]).is_ok());

        let cli = parse(&["service", "upgrade", "--cluster", "prod", "redis", "7.0.15-2", "--no-wait"]).unwrap();
        let Command::Service(ServiceCommand::Upgrade(args)) = cli.command else { panic!("wrong command") };
        assert_eq!((args.service.as_str(), args.version.as_str(), args.wait.no_wait), ("redis", "7.0.15-2", true));
        assert!(
            parse(&["service", "rollback", "--cluster", "prod", "redis", "1"]).is_err(),
            "rollback takes no version"
        );
        assert!(parse(&["service", "rollback", "--cluster", "prod", "redis"]).is_ok());

        assert!(
            parse(&["parcel", "inspect", "x"])
                .map(|c| matches!(c.command, Command::Parcel(p) if p.is_local()))
                .unwrap()
        );
        assert!(!parse(&["parcel", "list"]).map(|c| matches!(c.command, Command::Parcel(p) if p.is_local())).unwrap());
    }

    #[test]
    fn login_takes_a_url_and_the_trust_flags() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        let cli = Cli::try_parse_from(["drover", "login", "https://m:7180", "--ca-pin", &pin]).unwrap();
        let Command::Login(args) = cli.command else { panic!("wrong command") };
        assert_eq!(args.url.as_str(), "https://m:7180/");
        assert_eq!(cli.global.ca_pin.map(|p| p.to_string()), Some(pin.clone()));
        assert!(Cli::try_parse_from(["drover", "login"]).is_err(), "URL is required");
        assert!(
            Cli::try_parse_from(["drover", "whoami", "--ca-pin", &pin, "--ca-cert", "ca.pem"]).is_err(),
            "a pin and a CA file are one too many"
        );
        assert!(Cli::try_parse_from(["drover", "whoami", "--ca-pin", "sha256:12"]).is_err());
    }

    #[test]
    fn roles_and_users_arguments() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()));
        assert_eq!(parse_grant("operator@prod"), Ok(Grant::on(Role::Operator, "prod")));
        assert_eq!(parse_grant("admin"), Ok(Grant::global(Role::Admin)));
        let err = parse_grant("root").unwrap_err();
        assert!(err.contains("unknown role \"root\": one of admin, cluster-admin,"), "{err}");
        assert!(parse_grant("viewer@").unwrap_err().contains("names no cluster"));

        let cli = parse(&["users", "create", "jane", "--role", "operator@prod", "--role", "viewer"]).unwrap();
        let Command::Users(UsersCommand::Create(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.roles, [Grant::on(Role::Operator, "prod"), Grant::global(Role::Viewer)]);
        assert!(args.password.new_password_file.is_none());
        assert!(parse(&["users", "create", "jane", "--password", "x"]).is_ok(), "--password is the CLI's own");
        assert!(parse(&["users", "grant", "jane"]).is_err(), "a role is required");
        assert!(parse(&["users", "grant", "jane", "nobody"]).is_err());
        let cli = parse(&["users", "revoke", "jane", "viewer", "operator@prod"]).unwrap();
        let Command::Users(UsersCommand::Revoke(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.roles.len(), 2);
        let cli = parse(&["api-tokens", "create", "ci", "--role", "viewer@prod"]).unwrap();
        let Command::ApiTokens(ApiTokensCommand::Create(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.roles, [Grant::on(Role::Viewer, "prod")]);
        assert!(matches!(parse(&["passwd"]).unwrap().command, Command::Passwd(_)));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["drover", "hosts", "list", "--output", "json", "--label", "a=1,b=2"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Command::Hosts(HostsCommand::List(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.label.len(), 1);
    }
}
