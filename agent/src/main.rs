//! The `drover-agent` binary: flags, logging, a single-threaded runtime, signals
//! and exit codes around the `drover_agent` library. Loads the saved identity or
//! enrolls, then keeps the session with the manager open until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use drover_agent::agent_log::{self, RotatingFile};
use drover_agent::backoff::{Backoff, BackoffConfig};
use drover_agent::datadir;
use drover_agent::enroll::{self, Identity};
use drover_agent::error::{AgentError, EXIT_FATAL};
use drover_agent::facts::{self, HostFacts};
use drover_agent::init;
use drover_agent::labels::parse_labels;
use drover_agent::metrics::MetricsCollector;
use drover_agent::session::{self, NoopObserver, RolesMode, SessionConfig};
use drover_proto::tls::ManagerAddr;
use drover_proto::token::EnrollmentToken;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Drover agent: joins this host to a Drover manager and keeps a session open
/// with it, reporting host facts and metrics, and writes the config files and
/// supervises the processes of the roles the manager assigns to the host.
///
/// The first start needs an enrollment token (--token), created in the manager's
/// console or API. The agent then generates its private key, obtains a client
/// certificate and saves its identity in --data-dir; later starts use that
/// identity and need no token.
///
/// Exit status: 0 after SIGTERM or SIGINT, 2 when the manager refuses the agent
/// or the configuration is wrong (the reason is printed as "error: ...").
#[derive(Debug, Parser)]
#[command(name = "drover-agent", version, about, long_about, max_term_width = 100)]
struct Cli {
    /// Address of the manager's agent endpoint, as https://HOST:PORT (port 7182
    /// if left out). HOST must match a name in the manager's TLS certificate.
    #[arg(long, env = "DROVER_MANAGER", value_name = "URL")]
    manager: ManagerAddr,

    /// One-time enrollment token, drv1.<id>.<secret>.<ca-fingerprint>. Needed only
    /// for the first start; ignored once an identity is saved in --data-dir. The
    /// fingerprint part lets the agent authenticate the manager on first contact.
    #[arg(long, env = "DROVER_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// PEM file with the manager's CA certificate, to authenticate the manager at
    /// enrollment when the token carries no CA fingerprint. If both are given
    /// they must name the same CA.
    #[arg(long, env = "DROVER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Directory for the agent's identity (key.pem, cert.pem, ca.pem, host-id),
    /// state (applied-generation, desired-roles.pb, roles-state.json) and role
    /// directories (roles/<role_id>/ with config files and logs). Created with
    /// mode 0700; keep it across restarts, and clear it only to enroll the host
    /// anew.
    #[arg(long, env = "DROVER_DATA_DIR", value_name = "DIR", default_value = "/var/lib/drover-agent")]
    data_dir: PathBuf,

    /// Directory for parcels: unpacked versions (NAME-VERSION/), the active
    /// version's link (NAME), and downloads in progress (.downloads/). Replaces
    /// ${PARCELS_ROOT} in role specs. Default: DATA_DIR/parcels.
    #[arg(long, env = "DROVER_PARCELS_DIR", value_name = "DIR")]
    parcels_dir: Option<PathBuf>,

    /// Host name to report instead of the system's (e.g. when several agents share
    /// a machine, or the system name is not meaningful).
    #[arg(long, env = "DROVER_HOSTNAME", value_name = "NAME")]
    hostname: Option<String>,

    /// Labels to ask for at enrollment, as key=value pairs separated by commas
    /// (e.g. rack=r1,zone=eu-1); merged over the token's labels. Keys: 1-63
    /// letters, digits, '.', '_', '-', '/'. Ignored once enrolled: change labels
    /// in the manager.
    #[arg(long, env = "DROVER_LABELS", value_name = "K=V,...", value_parser = parse_labels)]
    labels: Option<BTreeMap<String, String>>,

    /// Log format on stderr: text for people, json for log collectors (one
    /// object per line).
    #[arg(long, env = "DROVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter, e.g. info, debug or info,drover_agent=debug (tracing
    /// EnvFilter syntax). Overrides RUST_LOG; without either, info.
    #[arg(long, env = "DROVER_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    // As the child of our own PID 1 (or of any init), start from a clean mask.
    init::unblock_signals();
    let cli = Cli::parse();
    // PID 1 only reaps and runs the agent proper, which keeps the log file.
    let log_file = (!init::is_pid1()).then(|| cli.data_dir.join(drover_agent::logs::AGENT_LOG));
    if let Err(e) = init_tracing(cli.log_format, cli.log_level.as_deref(), log_file.as_deref()) {
        report(&e);
        return ExitCode::from(EXIT_FATAL);
    }
    if init::is_pid1() {
        // A container's entry point: reap orphans here, run the agent as a child.
        return ExitCode::from(init::run(std::env::args_os().skip(1).collect()));
    }
    // One thread: the agent mostly waits, and must stay small.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("could not start the async runtime: {e}"));
            return ExitCode::from(EXIT_FATAL);
        }
    };
    match runtime.block_on(agent(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints `error: <message>` on stderr, which may already be closed.
fn report(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Logs to stderr (text or JSON) and, given `log_file`, also as plain text
/// to that size-rotated file (see `drover_agent::agent_log`).
fn init_tracing(format: LogFormat, level: Option<&str>, log_file: Option<&std::path::Path>) -> Result<(), String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = match level {
        Some(directives) => {
            EnvFilter::try_new(directives).map_err(|e| format!("invalid --log-level {directives:?}: {e}"))?
        }
        None => match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => {
                EnvFilter::try_new(&directives).map_err(|e| format!("invalid RUST_LOG {directives:?}: {e}"))?
            }
            _ => EnvFilter::new("info"),
        },
    };
    let stderr = tracing_subscriber::fmt::layer()
        // A closed stderr must not turn into a panic while logging.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let stderr = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().boxed(),
    };
    let file = match log_file {
        Some(path) => {
            let writer = RotatingFile::open(path, agent_log::MAX_BYTES, agent_log::KEEP)
                .map_err(|e| format!("could not open the agent log {}: {e}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .log_internal_errors(false)
                    .with_ansi(false)
                    .with_writer(std::sync::Arc::new(writer)),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init()
        .map_err(|e| format!("could not set up logging: {e}"))
}

async fn agent(cli: Cli) -> Result<(), AgentError> {
    let stop = shutdown_signal()?;
    let mut facts = facts::collect(cli.hostname.as_deref());
    if facts.hostname.is_empty() {
        // Any name will do: the host id identifies the host, not its name.
        facts.hostname = [facts.fqdn.clone(), facts.container_id.chars().take(12).collect()]
            .into_iter()
            .find(|n| !n.is_empty())
            .ok_or_else(|| AgentError::Config("could not determine this host's name; pass --hostname".into()))?;
    }
    info!(
        version = drover_agent::VERSION,
        hostname = %facts.hostname,
        fqdn = %facts.fqdn,
        kind = %facts.kind,
        evidence = %facts.kind_evidence,
        container = %facts.container_id,
        os = %facts.os,
        cpus = facts.cpu_cores,
        memory_bytes = facts.memory_bytes,
        capacity = %facts.capacity_evidence,
        "drover agent starting"
    );
    if facts.fqdn.is_empty() {
        info!(hostname = %facts.hostname, "no fully qualified name known for this host; Drover does not need one");
    }

    let identity = match Identity::load(&cli.data_dir)? {
        Some(identity) => {
            if cli.token.is_some() {
                info!(host = %identity.host_id, "already enrolled; ignoring the enrollment token");
            }
            if cli.labels.as_ref().is_some_and(|l| !l.is_empty()) {
                info!(host = %identity.host_id, "labels are requested only at enrollment; change them in the manager");
            }
            identity
        }
        None => match first_enrollment(&cli, &facts, stop.clone()).await? {
            Some(identity) => identity,
            None => return Ok(()),
        },
    };

    let applied_generation = datadir::load_applied_generation(&cli.data_dir).unwrap_or_else(|e| {
        warn!(error = %e, "starting as if no desired state was applied");
        0
    });
    let mut config = SessionConfig::new(cli.manager.clone(), identity, facts);
    config.applied_generation = applied_generation;
    config.state_dir = Some(cli.data_dir.clone());
    config.roles = RolesMode::Supervise { data_dir: cli.data_dir.clone() };
    config.parcels_dir = Some(cli.parcels_dir.clone().unwrap_or_else(|| cli.data_dir.join("parcels")));
    let mut collector = MetricsCollector::new();
    session::run(config, move || collector.sample(), Arc::new(NoopObserver), stopped(stop)).await
}

/// Enrolls with the token, retrying while the manager is unreachable, and saves
/// the identity. `None` if shutdown was requested first.
async fn first_enrollment(
    cli: &Cli,
    facts: &HostFacts,
    stop: watch::Receiver<bool>,
) -> Result<Option<Identity>, AgentError> {
    let dir = cli.data_dir.display();
    let raw = cli.token.as_deref().ok_or_else(|| {
        AgentError::Config(format!(
            "this host is not enrolled yet (no identity in {dir}); pass an enrollment token with --token or DROVER_TOKEN"
        ))
    })?;
    let token: EnrollmentToken = raw
        .trim()
        .parse()
        .map_err(|e| AgentError::Config(format!("invalid enrollment token (--token / DROVER_TOKEN): {e}")))?;
    let ca_pem = match &cli.ca_cert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| AgentError::io("read the CA certificate (--ca-cert)", path, e))?,
        ),
        None => None,
    };
    // Fail on an unusable data dir before the one-time token is spent.
    datadir::check_writable(&cli.data_dir)?;
    let labels = cli.labels.clone().unwrap_or_default();

    let mut backoff = Backoff::new(BackoffConfig::default());
    let identity = loop {
        info!(manager = %cli.manager, token = %token.id, "enrolling with the manager");
        let attempt = enroll::enroll(&cli.manager, &token, ca_pem.as_deref(), facts, &labels);
        let result = tokio::select! {
            biased;
            () = stopped(stop.clone()) => return Ok(None),
            result = attempt => result,
        };
        match result {
            Ok(identity) => break identity,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(manager = %cli.manager, reason = %e, "enrollment failed");
                info!(delay = %humantime::format_duration(delay), "retrying enrollment");
                tokio::select! {
                    biased;
                    () = stopped(stop.clone()) => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    identity.save(&cli.data_dir).map_err(|e| {
        AgentError::Config(format!(
            "enrolled as host {} but could not save the identity: {e}; fix the data dir and enroll again with a new token",
            identity.host_id
        ))
    })?;
    info!(host = %identity.host_id, data_dir = %dir, "enrolled");
    Ok(Some(identity))
}

/// Watches for SIGTERM and SIGINT; the receiver turns true on the first one.
fn shutdown_signal() -> Result<watch::Receiver<bool>, AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| AgentError::Config(format!("could not listen for {name}: {e}")))
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Completes once shutdown was requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the signal task is gone; then no shutdown will ever come.
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help_and_an_env_variable() {
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_long_help().or(arg.get_help()).is_some(), "--{id} has no help");
            assert!(arg.get_env().is_some(), "--{id} has no environment variable");
        }
    }

    #[test]
    fn parses_a_full_command_line() {
        let cli = Cli::try_parse_from([
            "drover-agent",
            "--manager",
            "https://mgr:7182",
            "--labels",
            "rack=r1,zone=z",
            "--log-format",
            "json",
            "--data-dir",
            "/tmp/x",
        ])
        .expect("parse");
        assert_eq!(cli.manager.host, "mgr");
        assert_eq!(cli.labels.map(|l| l.len()), Some(2));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["drover-agent", "--manager", "http://mgr"]).is_err());
        assert!(Cli::try_parse_from(["drover-agent", "--manager", "https://m", "--labels", "bad"]).is_err());
    }
}
