//! The role spec: what an agent runs for one role (config files, process, config check, health
//! checks), one set of plain types shared by the manager, which renders them from a service type
//! (`drover-service-types`), and the agent, which acts on them. `drover-proto` converts them to
//! and from the wire; nothing here knows handlebars or prost.
//!
//! Paths and arguments may hold the placeholders the agent substitutes: [`ROLE_DIR`],
//! [`PARCELS_ROOT`] and, in a config check, [`CHECK_DIR`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Placeholder for the role's absolute directory on the agent, in file contents, the process
/// program, args, env values and working dir, and health check commands.
pub const ROLE_DIR: &str = "${ROLE_DIR}";

/// Placeholder for the agent's parcels directory (each parcel's active version is
/// `${PARCELS_ROOT}/<name>`), wherever [`ROLE_DIR`] is substituted and in health check fields.
pub const PARCELS_ROOT: &str = "${PARCELS_ROOT}";

/// Placeholder for the staging directory holding a role's new files, in the program and
/// arguments of its config check.
pub const CHECK_DIR: &str = "${CHECK_DIR}";

/// Stop grace when the wire says 0.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Config check timeout when the wire says 0.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Health check interval when the wire says 0.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Health check timeout when the wire says 0.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive failures that make a role unhealthy when the wire says 0.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// A rendered config file, relative to the role directory.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub path: String,
    pub content: Vec<u8>,
    /// sha256 of `content` as rendered (before the agent substitutes `${ROLE_DIR}`), lowercase
    /// hex; may be empty.
    pub sha256: String,
    /// Unix permission bits; 0 means 0644.
    pub mode: u32,
}

impl fmt::Debug for ConfigFile {
    // Contents may hold passwords; never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("sha256", &self.sha256)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// How to run the role's process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Relative to the role directory when not absolute; empty: the role directory.
    pub working_dir: String,
    /// Signal name for a graceful stop, e.g. `SIGTERM`; empty: `SIGTERM`.
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL to the process group.
    #[serde(with = "humantime_duration")]
    pub stop_grace: Duration,
    /// Signal name that makes the process re-read its files (`SIGHUP`), sent to the process
    /// itself; empty: file changes wait for a restart.
    pub reload_signal: String,
    /// Checks new files before they replace the live ones; `None`: no check.
    pub config_check: Option<ConfigCheck>,
}

impl Default for ProcessSpec {
    fn default() -> Self {
        ProcessSpec {
            program: String::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: String::new(),
            stop_signal: String::new(),
            stop_grace: DEFAULT_STOP_GRACE,
            reload_signal: String::new(),
            config_check: None,
        }
    }
}

/// A command run on a role's new files, in a staging directory, before they replace the live
/// ones (`nginx -t`). Exit status 0 lets them through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigCheck {
    /// May hold [`CHECK_DIR`] (the staging directory), [`ROLE_DIR`] and [`PARCELS_ROOT`], like
    /// `args`.
    pub program: String,
    pub args: Vec<String>,
    /// The check is killed after this long, and fails.
    #[serde(with = "humantime_duration")]
    pub timeout: Duration,
}

/// A health probe run by the agent every `interval`; `failure_threshold` consecutive failures
/// make the role's health bad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    #[serde(with = "humantime_duration")]
    pub interval: Duration,
    #[serde(with = "humantime_duration")]
    pub timeout: Duration,
    pub failure_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// Connect to `host:port` (host empty: 127.0.0.1).
    Tcp { host: String, port: u16 },
    /// `GET url` over plain HTTP/1.0; `expect_status` 0 accepts any 2xx.
    Http { url: String, expect_status: u16 },
    /// Run a program; exit status 0 is healthy.
    Command { program: String, args: Vec<String> },
    /// A probe kind the agent does not know (from a newer manager); never healthy. The manager
    /// never renders it.
    Unknown,
}

/// Metric source interval when the wire says 0.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// Metric source timeout when the wire says 0.
pub const DEFAULT_METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the agent reads a role's service metrics, every `interval` while the role runs; a
/// collection taking longer than `timeout` fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSource {
    pub kind: MetricSourceKind,
    #[serde(with = "humantime_duration")]
    pub interval: Duration,
    #[serde(with = "humantime_duration")]
    pub timeout: Duration,
}

/// What a [`MetricSource`] reads and how. Every kind yields samples named as in
/// `docs/metrics.md` (`redis_*`, `zookeeper_*`, `nginx_*`, or the names the endpoint or command
/// prints).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricSourceKind {
    /// Redis `INFO` over `host:port` (host empty: 127.0.0.1), authenticating with `password`
    /// when it is not empty.
    Redis { host: String, port: u16, password: String },
    /// ZooKeeper's `mntr` four-letter word over its client port.
    Zookeeper { host: String, port: u16 },
    /// nginx's `stub_status` page, over plain HTTP.
    NginxStubStatus { url: String },
    /// A Prometheus text exposition endpoint, over plain HTTP.
    Prometheus { url: String },
    /// A program whose standard output is Prometheus text format.
    Command { program: String, args: Vec<String> },
    /// A source kind the agent does not know (from a newer manager); never collected.
    Unknown,
}

impl fmt::Debug for MetricSourceKind {
    // A Redis source may hold its password; never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricSourceKind::Redis { host, port, password } => f
                .debug_struct("Redis")
                .field("host", host)
                .field("port", port)
                .field("password", &if password.is_empty() { "none" } else { "set" })
                .finish(),
            MetricSourceKind::Zookeeper { host, port } => {
                f.debug_struct("Zookeeper").field("host", host).field("port", port).finish()
            }
            MetricSourceKind::NginxStubStatus { url } => f.debug_struct("NginxStubStatus").field("url", url).finish(),
            MetricSourceKind::Prometheus { url } => f.debug_struct("Prometheus").field("url", url).finish(),
            MetricSourceKind::Command { program, args } => {
                f.debug_struct("Command").field("program", program).field("args", args).finish()
            }
            MetricSourceKind::Unknown => f.write_str("Unknown"),
        }
    }
}

/// Size at which the agent rotates a role's log file when the spec says 0.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;
/// Rotated copies the agent keeps per log file when the spec says 0.
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// How the agent keeps a role's stdout and stderr logs (`logs/stdout.log`, `logs/stderr.log`,
/// rotated to `.1`..`.max_files` at `max_bytes`) and how it reads the time and level of the
/// lines of every log file of the role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSpec {
    pub max_bytes: u64,
    pub max_files: u32,
    /// `None`: lines have no time or level the agent can read.
    pub format: Option<LogFormat>,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec { max_bytes: DEFAULT_LOG_MAX_BYTES, max_files: DEFAULT_LOG_MAX_FILES, format: None }
    }
}

/// The layout of a service's log lines: a regex with named groups `time` and/or `level`,
/// matched at the start of a line (a line it does not match continues the previous one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFormat {
    /// A shipped format's name (`redis`) or the role type's name for an inline one.
    pub name: String,
    pub pattern: String,
    /// chrono strftime format of the `time` group; times without an offset are UTC.
    pub time_format: String,
    /// The `level` group's text -> `error`, `warn`, `info`, `debug` or `trace`; a text not
    /// listed is lowercased and taken as is.
    pub levels: BTreeMap<String, String>,
}

/// Durations as humantime text (`10s`, `1m 30s`), as in service descriptors.
mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_contents_never_show_in_debug() {
        let f = ConfigFile {
            path: "a.conf".into(),
            content: b"requirepass s3cret".to_vec(),
            sha256: "ab".into(),
            mode: 0o600,
        };
        let shown = format!("{f:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("bytes: 18") && shown.contains("mode: 600"), "{shown}");
    }

    #[test]
    fn durations_serialize_as_humantime_and_back() {
        let hc = HealthCheck {
            probe: Probe::Tcp { host: String::new(), port: 6379 },
            interval: Duration::from_secs(90),
            timeout: Duration::from_millis(1500),
            failure_threshold: 3,
        };
        let json = serde_json::to_value(&hc).expect("serialize");
        assert_eq!(json["interval"], "1m 30s");
        assert_eq!(json["timeout"], "1s 500ms");
        assert_eq!(json["probe"]["tcp"]["port"], 6379);
        let back: HealthCheck = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, hc);
    }
}
