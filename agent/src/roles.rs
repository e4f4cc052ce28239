//! Domain types for the roles a host runs: what the manager wants ([`RoleSpec`])
//! and what the agent observes ([`RoleStatus`]). A role's files, process and
//! health checks are the role spec types the manager renders
//! (`drover-role-spec`, re-exported here). The private `wire` module converts
//! them to and from `drover.agent.v1`; nothing generated appears here.

use std::collections::BTreeMap;

/// The capability an agent announces in `Hello` when it runs roles.
pub const CAPABILITY: &str = "roles.v1";

pub use drover_role_spec::{
    ConfigCheck, ConfigFile, DEFAULT_CHECK_TIMEOUT, DEFAULT_FAILURE_THRESHOLD, DEFAULT_PROBE_INTERVAL,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_STOP_GRACE, HealthCheck, MetricSource, MetricSourceKind, Probe, ProcessSpec,
};

/// Placeholder replaced by the role's absolute directory in file contents,
/// process arguments, environment values and the working directory.
pub const ROLE_DIR_PLACEHOLDER: &str = drover_role_spec::ROLE_DIR;

/// Placeholder replaced by the absolute parcels directory wherever
/// `${ROLE_DIR}` is, and in health check fields.
pub const PARCELS_ROOT_PLACEHOLDER: &str = drover_role_spec::PARCELS_ROOT;

/// Placeholder replaced by the staging directory holding a role's new files
/// in the program and arguments of its config check.
pub const CHECK_DIR_PLACEHOLDER: &str = drover_role_spec::CHECK_DIR;

/// One role the host must run: rendered files, process and desired run state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleSpec {
    pub role_id: String,
    /// `<cluster>/<service>`.
    pub service: String,
    pub role_type: String,
    pub name: String,
    /// Config revision the files were rendered from.
    pub config_revision: u64,
    pub files: Vec<ConfigFile>,
    pub process: ProcessSpec,
    pub run_state: RunState,
    /// Changing it restarts the process.
    pub restart_nonce: u64,
    pub health_checks: Vec<HealthCheck>,
    pub log_files: Vec<String>,
    /// Parcels that must be active on the host before the process starts;
    /// their env scripts' variables are set for it.
    pub parcels: Vec<String>,
    /// Digest of the role's parameters that need a restart: new files reach
    /// a running process by reload only while it runs with this digest.
    /// Empty (older managers): never reload.
    pub restart_digest: String,
    /// Where the role's service metrics are read while it runs.
    pub metric_sources: Vec<MetricSource>,
    /// Rotation of its stdout and stderr logs and how its log lines read.
    pub log: LogSpec,
}

/// A role's log rotation (zeros: the agent's defaults, 10 MiB x 5) and format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSpec {
    pub max_bytes: u64,
    pub max_files: u32,
    /// `None`: lines have no parsed time or level.
    pub format: Option<LogFormat>,
}

/// How to read the time and level of a role's log lines (see
/// [`crate::logs::LineParser`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFormat {
    /// Names the format, e.g. `redis`.
    pub name: String,
    /// Regex with named groups `time` and/or `level`, matched at the start of a line.
    pub pattern: String,
    /// chrono format of the `time` group; times without an offset are UTC.
    pub time_format: String,
    /// The `level` group's text -> `error`, `warn`, `info`, `debug`, `trace`.
    pub levels: BTreeMap<String, String>,
}

impl RoleSpec {
    /// The manager's sha256 of each file, by path.
    pub fn file_digests(&self) -> BTreeMap<String, String> {
        self.files.iter().map(|f| (f.path.clone(), f.sha256.clone())).collect()
    }
}

/// Whether the role's process should run. The manager's "unspecified" is
/// `Stopped`: the agent never starts anything it was not explicitly asked to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunState {
    Running,
    #[default]
    Stopped,
}

/// Observed state of one role, reported to the manager on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleStatus {
    pub role_id: String,
    pub state: RoleState,
    /// 0 when not running.
    pub pid: u32,
    /// Exit code of the last exit, or -SIGNAL when killed by a signal.
    pub last_exit_status: i32,
    /// Restarts after crashes since the agent took charge of the role.
    pub restart_count: u32,
    /// Config revision of the files on disk.
    pub applied_revision: u64,
    /// Config revision the running process was started with (0: not running).
    pub running_revision: u64,
    /// sha256 (hex) of each config file as written on disk, by path.
    pub file_hashes: BTreeMap<String, String>,
    pub last_error: String,
    pub health: RoleHealth,
    /// Tail of the role's log when it failed.
    pub last_log_lines: Vec<String>,
    /// Restart nonce of the running process.
    pub restart_nonce: u64,
    /// Wall-clock start of the running process (0: not running).
    pub started_at_unix_ms: i64,
    /// Reloads of the running process, and the wall-clock time of the last
    /// one (0: none); both start over with each process.
    pub reload_count: u32,
    pub reloaded_at_unix_ms: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoleState {
    #[default]
    Stopped,
    Starting,
    Running,
    Stopping,
    /// Crash loop, files that cannot be written or a parcel that is not
    /// active; see `last_error`.
    Failed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoleHealth {
    #[default]
    Unknown,
    Good,
    Bad,
}

/// Why a role id cannot name a directory, if it cannot.
pub fn check_role_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("role id {id:?} is not usable as a directory name (1-128 of A-Z a-z 0-9 . _ -)"))
    }
}

/// Why a config file path cannot be written inside the role directory, if it
/// cannot: it must be relative, without `..`, and not inside `logs/`.
pub fn check_file_path(path: &str) -> Result<(), String> {
    let p = std::path::Path::new(path);
    let mut parts = 0;
    for c in p.components() {
        match c {
            std::path::Component::Normal(_) => parts += 1,
            std::path::Component::CurDir => {}
            _ => return Err(format!("config file path {path:?} must be relative and stay inside the role directory")),
        }
    }
    if parts == 0 {
        return Err(format!("config file path {path:?} is empty"));
    }
    if p.components().find(|c| matches!(c, std::path::Component::Normal(_))).is_some_and(|c| c.as_os_str() == "logs") {
        return Err(format!("config file path {path:?} is inside logs/, which the agent owns"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_and_paths_are_checked() {
        for good in ["r-1", "redis.primary_1", "a"] {
            assert!(check_role_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_role_id(bad).is_err(), "{bad}");
        }
        for good in ["redis.conf", "conf/zoo.cfg", "./myid"] {
            assert!(check_file_path(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "logs/stdout.log", "."] {
            assert!(check_file_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_contents_are_not_printed() {
        let f = ConfigFile { path: "p".into(), content: b"secret".to_vec(), sha256: String::new(), mode: 0o600 };
        let printed = format!("{f:?}");
        assert!(!printed.contains("secret") && printed.contains("600"), "{printed}");
    }
}
