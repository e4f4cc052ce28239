//! Service descriptors: `parcels/<service>/service.toml` plus `templates/`, parsed, validated and
//! collected into a [`Catalog`].
//!
//! Everything that can be checked without a topology is checked at load time, so a bad descriptor
//! fails when the manager starts rather than when an operator first adds a role. The format is
//! documented in `docs/service-descriptors.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize, Serializer};

use crate::dashboard::{self, DashboardChart, RawChart};
pub use crate::params::Parameter;
use crate::params::{ParamKind, Scope};

/// A descriptor that cannot be used. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// Display: `parcels/redis/service.toml: parameter `port`: invalid default: ...`.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl DescriptorError {
    fn invalid(file: impl Into<String>, message: impl Into<String>) -> DescriptorError {
        DescriptorError::Invalid { file: file.into(), message: message.into() }
    }

    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            DescriptorError::Invalid { file, .. } => file,
            DescriptorError::Io { path, .. } => path,
        }
    }
}

/// One service type: its roles, parameters and how to roll restarts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceType {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub version: String,
    /// Service types a service of this type needs in the same cluster (e.g. `["zookeeper"]`).
    pub requires: Vec<String>,
    /// Parcels the roles run from (e.g. `["redis"]`): each must be active on a
    /// role's host before the role starts; templates reach them as
    /// `{{parcel.<name>.home}}`.
    pub parcels: Vec<String>,
    /// Sorted by `start_order`, then as declared.
    pub role_types: Vec<RoleType>,
    pub parameters: Vec<Parameter>,
    pub rolling_restart: RollingRestart,
    /// The charts of the type's console dashboard, in order (`[[dashboard]]`).
    pub dashboard: Vec<DashboardChart>,
    /// Where the descriptor came from, e.g. `parcels/redis` (built in) or a user directory.
    pub source: String,
}

/// A kind of process a service runs (e.g. a Redis primary).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleType {
    pub name: String,
    pub description: String,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    /// Lower starts first (and stops last).
    pub start_order: u32,
    pub process: ProcessTemplate,
    pub health_checks: Vec<HealthCheckTemplate>,
    /// Where the agent reads the role's service metrics (`[[role_types.metrics]]`).
    pub metrics: Vec<MetricSourceTemplate>,
    pub files: Vec<FileTemplate>,
    /// Files the role writes besides stdout/stderr, relative to the role directory.
    pub log_files: Vec<String>,
    /// Rotation of stdout/stderr and the line format (`[role_types.log]`).
    pub log: drover_role_spec::LogSpec,
}

/// A metric source of a role type; its strings are handlebars templates, rendered into a
/// [`drover_role_spec::MetricSource`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSourceTemplate {
    pub source: MetricSourceKindTemplate,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

/// What a metric source reads. Ports render to a number (`"{{config.port}}"`).
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricSourceKindTemplate {
    /// Redis `INFO`; `password` rendering empty: no `AUTH`.
    Redis {
        host: String,
        port: String,
        #[serde(serialize_with = "ser_password")]
        password: String,
    },
    /// ZooKeeper's `mntr` over its client port.
    Zookeeper { host: String, port: String },
    /// nginx's `stub_status` page over plain HTTP.
    NginxStubStatus { url: String },
    /// A Prometheus text exposition endpoint over plain HTTP.
    Prometheus { url: String },
    /// A program that prints Prometheus text format.
    Command { program: String, args: Vec<String> },
}

/// A password template as shown: a template (`{{config.requirepass}}`) as it is, a literal
/// password never.
fn shown_password(p: &str) -> &str {
    match p {
        "" => "",
        p if p.contains("{{") => p,
        _ => "<set>",
    }
}

fn ser_password<S: Serializer>(p: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(shown_password(p))
}

impl std::fmt::Debug for MetricSourceKindTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricSourceKindTemplate::Redis { host, port, password } => f
                .debug_struct("Redis")
                .field("host", host)
                .field("port", port)
                .field("password", &shown_password(password))
                .finish(),
            MetricSourceKindTemplate::Zookeeper { host, port } => {
                f.debug_struct("Zookeeper").field("host", host).field("port", port).finish()
            }
            MetricSourceKindTemplate::NginxStubStatus { url } => {
                f.debug_struct("NginxStubStatus").field("url", url).finish()
            }
            MetricSourceKindTemplate::Prometheus { url } => f.debug_struct("Prometheus").field("url", url).finish(),
            MetricSourceKindTemplate::Command { program, args } => {
                f.debug_struct("Command").field("program", program).field("args", args).finish()
            }
        }
    }
}

/// How many roles restart at once and whether to wait for them to be healthy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollingRestart {
    pub batch_size: u32,
    pub wait_for_healthy: bool,
    #[serde(serialize_with = "ser_duration")]
    pub healthy_timeout: Duration,
}

impl Default for RollingRestart {
    fn default() -> Self {
        RollingRestart { batch_size: 1, wait_for_healthy: true, healthy_timeout: Duration::from_secs(300) }
    }
}

/// The process of a role. Every string is a handlebars template rendered with the role's context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessTemplate {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Empty: the role directory.
    pub working_dir: String,
    pub stop_signal: String,
    #[serde(serialize_with = "ser_duration")]
    pub stop_grace: Duration,
    /// The signal that makes the running process re-read its files (`SIGHUP` for nginx): a
    /// file change that no restart-requiring parameter is part of is applied with it instead
    /// of waiting for a restart. `None`: file changes wait for a restart.
    pub reload_signal: Option<String>,
    /// A command that checks new files before they replace the role's live ones (`nginx -t`).
    pub config_check: Option<ConfigCheckTemplate>,
}

/// A config check: `program` and `args` are handlebars templates; the agent runs it on new files
/// in a staging directory (`${CHECK_DIR}`) and installs them only when it exits 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigCheckTemplate {
    pub program: String,
    pub args: Vec<String>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

/// A health check; the probe's strings are handlebars templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckTemplate {
    pub probe: ProbeTemplate,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeTemplate {
    /// `port` renders to a number, e.g. `"{{config.port}}"`.
    Tcp {
        host: String,
        port: String,
    },
    /// `expect_status` 0 means any 2xx.
    Http {
        url: String,
        expect_status: u16,
    },
    Command {
        program: String,
        args: Vec<String>,
    },
}

/// A config file of a role, rendered from `templates/<template>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileTemplate {
    /// Relative to the role directory.
    pub path: String,
    /// Name of the template, relative to `templates/`.
    pub template: String,
    /// The template text.
    #[serde(skip)]
    pub source: String,
    pub mode: u32,
}

impl ServiceType {
    /// Parses and validates a descriptor. `name_hint` is the descriptor's folder as shown in
    /// errors (`parcels/redis`); its last component is the service name. `templates` maps names
    /// relative to `templates/` (`redis.conf.hbs`) to their text.
    pub fn parse(
        name_hint: &str,
        toml_text: &str,
        templates: &BTreeMap<String, String>,
    ) -> Result<ServiceType, DescriptorError> {
        let file = format!("{name_hint}/service.toml");
        let raw: RawService =
            toml::from_str(toml_text).map_err(|e| DescriptorError::invalid(&file, toml_error(toml_text, &e)))?;
        let folder = name_hint.trim_end_matches('/').rsplit('/').next().unwrap_or(name_hint);
        let err = |message: String| DescriptorError::invalid(&file, message);

        let name = raw.name.unwrap_or_else(|| folder.to_string());
        check_name(&name).map_err(|m| err(format!("name: {m}")))?;
        if name != folder {
            return Err(err(format!("name `{name}` does not match its folder `{folder}`")));
        }

        // Every template must compile, whether a role type uses it or not.
        for (tname, text) in templates {
            compile(text).map_err(|m| DescriptorError::invalid(format!("{name_hint}/templates/{tname}"), m))?;
        }

        if raw.role_types.is_empty() {
            return Err(err("role_types: at least one role type is required".to_string()));
        }
        let mut role_types = Vec::new();
        let mut seen = BTreeSet::new();
        for rt in raw.role_types {
            let ctx = format!("role type `{}`", rt.name);
            check_name(&rt.name).map_err(|m| err(format!("{ctx}: name: {m}")))?;
            if !seen.insert(rt.name.clone()) {
                return Err(err(format!("{ctx}: duplicate role type name")));
            }
            role_types.push(rt.build(templates).map_err(|m| err(format!("{ctx}: {m}")))?);
        }
        role_types.sort_by_key(|rt| rt.start_order);

        let mut parameters = Vec::new();
        let mut seen = BTreeSet::new();
        for p in raw.parameters {
            let ctx = format!("parameter `{}`", p.name);
            check_name(&p.name).map_err(|m| err(format!("{ctx}: name: {m}")))?;
            if !seen.insert(p.name.clone()) {
                return Err(err(format!("{ctx}: duplicate parameter name")));
            }
            parameters.push(p.build(&role_types).map_err(|m| err(format!("{ctx}: {m}")))?);
        }

        let mut requires = Vec::new();
        for r in raw.requires {
            check_name(&r).map_err(|m| err(format!("requires: `{r}`: {m}")))?;
            if r == name {
                return Err(err(format!("requires: `{r}` is the service itself")));
            }
            if !requires.contains(&r) {
                requires.push(r);
            }
        }

        let mut parcels = Vec::new();
        for p in raw.parcels {
            check_name(&p).map_err(|m| err(format!("parcels: `{p}`: {m}")))?;
            if p.contains('-') {
                return Err(err(format!("parcels: `{p}`: parcel names have no `-`")));
            }
            if !parcels.contains(&p) {
                parcels.push(p);
            }
        }

        let rr = raw.rolling_restart.unwrap_or_default();
        let rolling_restart = RollingRestart {
            batch_size: rr.batch_size,
            wait_for_healthy: rr.wait_for_healthy,
            healthy_timeout: duration(&rr.healthy_timeout)
                .map_err(|m| err(format!("rolling_restart.healthy_timeout: {m}")))?,
        };
        if rolling_restart.batch_size == 0 {
            return Err(err("rolling_restart.batch_size: must be at least 1".to_string()));
        }

        if raw.metrics_catalog.is_some() {
            return Err(err(
                "metrics_catalog: replaced by [[dashboard]] charts with [[dashboard.lines]] (see docs/service-descriptors.md)"
                    .to_string(),
            ));
        }
        let dashboard = dashboard::build(raw.dashboard, &role_types).map_err(err)?;

        Ok(ServiceType {
            display_name: raw.display_name.unwrap_or_else(|| name.clone()),
            name,
            description: raw.description,
            version: raw.version,
            requires,
            parcels,
            role_types,
            parameters,
            rolling_restart,
            dashboard,
            source: name_hint.to_string(),
        })
    }

    /// Loads `dir/service.toml` and every file under `dir/templates/`.
    pub fn load_dir(dir: &Path) -> Result<ServiceType, DescriptorError> {
        let toml_path = dir.join("service.toml");
        let text = read(&toml_path)?;
        let mut templates = BTreeMap::new();
        let tdir = dir.join("templates");
        if tdir.is_dir() {
            read_templates(&tdir, "", &mut templates)?;
        }
        ServiceType::parse(&dir.display().to_string(), &text, &templates)
    }

    pub fn role_type(&self, name: &str) -> Option<&RoleType> {
        self.role_types.iter().find(|rt| rt.name == name)
    }

    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

/// All known service types by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    types: BTreeMap<String, ServiceType>,
}

/// The built-in descriptors: `parcels/<service>/service.toml` and `templates/`, nothing else of
/// that folder (recipes, env scripts).
#[derive(RustEmbed)]
#[folder = "../parcels"]
#[include = "*/service.toml"]
#[include = "*/templates/**"]
struct Builtin;

impl Catalog {
    /// The service types shipped in `parcels/` (embedded in the binary).
    pub fn builtin() -> Result<Catalog, DescriptorError> {
        let mut tomls: BTreeMap<String, String> = BTreeMap::new();
        let mut templates: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for path in Builtin::iter() {
            let Some((service, rest)) = path.split_once('/') else { continue };
            let wanted = rest == "service.toml" || rest.starts_with("templates/");
            if !wanted {
                continue;
            }
            let shown = format!("parcels/{path}");
            let file = Builtin::get(&path).ok_or_else(|| DescriptorError::invalid(&shown, "embedded file missing"))?;
            let text = String::from_utf8(file.data.into_owned())
                .map_err(|_| DescriptorError::invalid(&shown, "not valid UTF-8"))?;
            match rest.strip_prefix("templates/") {
                Some(tname) => {
                    templates.entry(service.to_string()).or_default().insert(tname.to_string(), text);
                }
                None => {
                    tomls.insert(service.to_string(), text);
                }
            }
        }
        let mut types = BTreeMap::new();
        for (service, text) in tomls {
            let st = ServiceType::parse(
                &format!("parcels/{service}"),
                &text,
                templates.get(&service).unwrap_or(&BTreeMap::new()),
            )?;
            types.insert(st.name.clone(), st);
        }
        let catalog = Catalog { types };
        catalog.check_requires()?;
        Ok(catalog)
    }

    /// The built-in types (when `builtin`) overridden by name by the types found in `extra_dirs`:
    /// each holds `<service>/service.toml` folders. A directory that does not exist is empty.
    pub fn load(builtin: bool, extra_dirs: &[PathBuf]) -> Result<Catalog, DescriptorError> {
        let mut catalog = if builtin { Catalog::builtin()? } else { Catalog::default() };
        for dir in extra_dirs {
            if !dir.exists() {
                continue;
            }
            let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
            let mut folders = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| io_error(dir, e))?.path();
                if path.join("service.toml").is_file() {
                    folders.push(path);
                }
            }
            folders.sort();
            for folder in folders {
                let st = ServiceType::load_dir(&folder)?;
                catalog.types.insert(st.name.clone(), st);
            }
        }
        catalog.check_requires()?;
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Option<&ServiceType> {
        self.types.get(name)
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceType> {
        self.types.values()
    }

    /// Every `requires` and every `service_types` of a service parameter names a known type,
    /// and no type requires itself through others.
    fn check_requires(&self) -> Result<(), DescriptorError> {
        for st in self.types.values() {
            let file = format!("{}/service.toml", st.source);
            for p in &st.parameters {
                if let ParamKind::Service { service_types } = &p.kind
                    && let Some(t) = service_types.iter().find(|t| !self.types.contains_key(*t))
                {
                    return Err(DescriptorError::invalid(
                        &file,
                        format!("parameter `{}`: service_types: `{t}` is not a known service type", p.name),
                    ));
                }
            }
            for r in &st.requires {
                if !self.types.contains_key(r) {
                    return Err(DescriptorError::invalid(
                        &file,
                        format!("requires: `{r}` is not a known service type"),
                    ));
                }
            }
            // Depth-first walk from st looking for a path back to st.
            let mut stack: Vec<Vec<&str>> = vec![vec![st.name.as_str()]];
            while let Some(path) = stack.pop() {
                let last = path[path.len() - 1];
                for r in self.types.get(last).map(|t| t.requires.as_slice()).unwrap_or_default() {
                    if r == &st.name {
                        return Err(DescriptorError::invalid(
                            &file,
                            format!("requires: dependency cycle {} -> {r}", path.join(" -> ")),
                        ));
                    }
                    if !path.contains(&r.as_str()) {
                        let mut next = path.clone();
                        next.push(r);
                        stack.push(next);
                    }
                }
            }
        }
        Ok(())
    }
}

// ---- raw TOML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<String>,
    display_name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    parcels: Vec<String>,
    rolling_restart: Option<RawRollingRestart>,
    #[serde(default)]
    role_types: Vec<RawRoleType>,
    #[serde(default)]
    parameters: Vec<RawParameter>,
    #[serde(default)]
    dashboard: Vec<RawChart>,
    /// The list of metrics `[[dashboard]]` replaced: refused with a pointer to it.
    metrics_catalog: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRollingRestart {
    batch_size: u32,
    wait_for_healthy: bool,
    healthy_timeout: String,
}

impl Default for RawRollingRestart {
    fn default() -> Self {
        RawRollingRestart { batch_size: 1, wait_for_healthy: true, healthy_timeout: "5m".to_string() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleType {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    min_instances: u32,
    max_instances: Option<u32>,
    #[serde(default)]
    start_order: u32,
    process: RawProcess,
    #[serde(default)]
    health_checks: Vec<RawHealthCheck>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    log_files: Vec<String>,
    log: Option<crate::logformat::RawLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: String,
    #[serde(default = "default_stop_signal")]
    stop_signal: String,
    #[serde(default = "default_stop_grace")]
    stop_grace: String,
    reload_signal: Option<String>,
    config_check: Option<RawConfigCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigCheck {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default = "default_check_timeout")]
    timeout: String,
}

fn default_check_timeout() -> String {
    "30s".to_string()
}

fn default_stop_signal() -> String {
    "SIGTERM".to_string()
}

fn default_stop_grace() -> String {
    "30s".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    tcp: Option<RawTcp>,
    http: Option<RawHttp>,
    command: Option<RawCommand>,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_threshold")]
    failure_threshold: u32,
}

fn default_interval() -> String {
    "10s".to_string()
}

fn default_timeout() -> String {
    "5s".to_string()
}

fn default_threshold() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    redis: Option<RawRedis>,
    zookeeper: Option<RawZookeeper>,
    nginx_stub_status: Option<RawUrl>,
    prometheus: Option<RawUrl>,
    command: Option<RawCommand>,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default = "default_timeout")]
    timeout: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default = "default_tcp_host")]
    host: String,
    port: StringOrInt,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZookeeper {
    #[serde(default = "default_tcp_host")]
    host: String,
    port: StringOrInt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    #[serde(default = "default_tcp_host")]
    host: String,
    port: StringOrInt,
}

fn default_tcp_host() -> String {
    "127.0.0.1".to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrInt {
    String(String),
    Int(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: String,
    #[serde(default)]
    expect_status: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    program: String,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    template: Option<String>,
    #[serde(default = "default_mode")]
    mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParameter {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    default: Option<toml::Value>,
    #[serde(default)]
    description: String,
    scope: Option<RawScope>,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    required: bool,
    min: Option<i64>,
    max: Option<i64>,
    values: Option<Vec<String>>,
    /// `service` parameters only: the types the referenced service may have.
    service_types: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawScope {
    Name(String),
    RoleTypes(Vec<String>),
}

const SIGNALS: &[&str] = &["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2"];

impl RawRoleType {
    fn build(self, templates: &BTreeMap<String, String>) -> Result<RoleType, String> {
        if let Some(max) = self.max_instances {
            if max == 0 {
                return Err("max_instances: must be at least 1".to_string());
            }
            if self.min_instances > max {
                return Err(format!("min_instances {} is greater than max_instances {max}", self.min_instances));
            }
        }
        let p = self.process;
        let inline = |field: &str, text: &str| compile(text).map_err(|m| format!("{field}: {m}"));
        if p.program.trim().is_empty() {
            return Err("process.program: must not be empty".to_string());
        }
        inline("process.program", &p.program)?;
        for (i, a) in p.args.iter().enumerate() {
            inline(&format!("process.args[{i}]"), a)?;
        }
        for (k, v) in &p.env {
            inline(&format!("process.env.{k}"), v)?;
        }
        inline("process.working_dir", &p.working_dir)?;
        if !SIGNALS.contains(&p.stop_signal.as_str()) {
            return Err(format!(
                "process.stop_signal: unknown signal `{}` (expected one of {})",
                p.stop_signal,
                SIGNALS.join(", ")
            ));
        }
        if let Some(sig) = &p.reload_signal
            && (!SIGNALS.contains(&sig.as_str()) || sig == "SIGKILL")
        {
            return Err(format!(
                "process.reload_signal: `{sig}` cannot ask a process to reload (expected one of {})",
                SIGNALS.iter().filter(|s| **s != "SIGKILL").copied().collect::<Vec<_>>().join(", ")
            ));
        }
        let config_check = match p.config_check {
            None => None,
            Some(c) => {
                if c.program.trim().is_empty() {
                    return Err("process.config_check.program: must not be empty".to_string());
                }
                inline("process.config_check.program", &c.program)?;
                for (i, a) in c.args.iter().enumerate() {
                    inline(&format!("process.config_check.args[{i}]"), a)?;
                }
                let timeout = duration(&c.timeout).map_err(|m| format!("process.config_check.timeout: {m}"))?;
                if timeout.is_zero() {
                    return Err("process.config_check.timeout: must be greater than zero".to_string());
                }
                Some(ConfigCheckTemplate { program: c.program, args: c.args, timeout })
            }
        };
        let process = ProcessTemplate {
            config_check,
            stop_grace: duration(&p.stop_grace).map_err(|m| format!("process.stop_grace: {m}"))?,
            reload_signal: p.reload_signal,
            program: p.program,
            args: p.args,
            env: p.env,
            working_dir: p.working_dir,
            stop_signal: p.stop_signal,
        };

        let mut health_checks = Vec::new();
        for (i, hc) in self.health_checks.into_iter().enumerate() {
            let field = format!("health_checks[{i}]");
            let probe = match (hc.tcp, hc.http, hc.command) {
                (Some(t), None, None) => {
                    let port = match t.port {
                        StringOrInt::String(s) => s,
                        StringOrInt::Int(n) => n.to_string(),
                    };
                    inline(&format!("{field}.tcp.host"), &t.host)?;
                    inline(&format!("{field}.tcp.port"), &port)?;
                    ProbeTemplate::Tcp { host: t.host, port }
                }
                (None, Some(h), None) => {
                    inline(&format!("{field}.http.url"), &h.url)?;
                    ProbeTemplate::Http { url: h.url, expect_status: h.expect_status }
                }
                (None, None, Some(c)) => {
                    inline(&format!("{field}.command.program"), &c.program)?;
                    for (j, a) in c.args.iter().enumerate() {
                        inline(&format!("{field}.command.args[{j}]"), a)?;
                    }
                    ProbeTemplate::Command { program: c.program, args: c.args }
                }
                _ => return Err(format!("{field}: exactly one of tcp, http or command is required")),
            };
            let interval = duration(&hc.interval).map_err(|m| format!("{field}.interval: {m}"))?;
            let timeout = duration(&hc.timeout).map_err(|m| format!("{field}.timeout: {m}"))?;
            if interval.is_zero() || timeout.is_zero() {
                return Err(format!("{field}: interval and timeout must be greater than zero"));
            }
            if hc.failure_threshold == 0 {
                return Err(format!("{field}.failure_threshold: must be at least 1"));
            }
            health_checks.push(HealthCheckTemplate {
                probe,
                interval,
                timeout,
                failure_threshold: hc.failure_threshold,
            });
        }

        let mut metrics = Vec::new();
        for (i, m) in self.metrics.into_iter().enumerate() {
            metrics.push(m.build(&format!("metrics[{i}]"))?);
        }

        let mut files = Vec::new();
        let mut paths = BTreeSet::new();
        for f in self.files {
            let field = format!("file `{}`", f.path);
            check_relative(&f.path).map_err(|m| format!("{field}: path: {m}"))?;
            if !paths.insert(f.path.clone()) {
                return Err(format!("{field}: duplicate path"));
            }
            if f.mode > 0o7777 {
                return Err(format!("{field}: mode {:o} is not a permission mode", f.mode));
            }
            let template = f.template.unwrap_or_else(|| format!("{}.hbs", f.path));
            let source = templates
                .get(&template)
                .ok_or_else(|| format!("{field}: template `templates/{template}` does not exist"))?
                .clone();
            files.push(FileTemplate { path: f.path, template, source, mode: f.mode });
        }
        for (i, l) in self.log_files.iter().enumerate() {
            check_relative(l).map_err(|m| format!("log_files[{i}]: {m}"))?;
        }
        let log = self.log.unwrap_or_default().build(&self.name)?;

        Ok(RoleType {
            name: self.name,
            description: self.description,
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            start_order: self.start_order,
            process,
            health_checks,
            metrics,
            files,
            log_files: self.log_files,
            log,
        })
    }
}

impl RawMetric {
    /// `field` is where the source is (`metrics[0]`), for errors.
    fn build(self, field: &str) -> Result<MetricSourceTemplate, String> {
        let inline = |name: &str, text: &str| compile(text).map_err(|m| format!("{field}.{name}: {m}"));
        let port = |name: &str, p: StringOrInt| -> Result<String, String> {
            let text = match p {
                StringOrInt::String(s) => s,
                StringOrInt::Int(n) => n.to_string(),
            };
            inline(name, &text)?;
            if !text.contains("{{") {
                port_number(&text).map_err(|m| format!("{field}.{name}: {m}"))?;
            }
            Ok(text)
        };
        let url = |name: &str, url: &str| -> Result<(), String> {
            inline(name, url)?;
            if !url.starts_with("{{") {
                check_http_url(url).map_err(|m| format!("{field}.{name}: {m}"))?;
            }
            Ok(())
        };
        let given: Vec<&str> = [
            ("redis", self.redis.is_some()),
            ("zookeeper", self.zookeeper.is_some()),
            ("nginx_stub_status", self.nginx_stub_status.is_some()),
            ("prometheus", self.prometheus.is_some()),
            ("command", self.command.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        let got = if given.is_empty() { "none".to_string() } else { given.join(" and ") };
        let source = match (self.redis, self.zookeeper, self.nginx_stub_status, self.prometheus, self.command) {
            (Some(r), None, None, None, None) => {
                inline("redis.host", &r.host)?;
                inline("redis.password", &r.password)?;
                MetricSourceKindTemplate::Redis {
                    host: r.host,
                    port: port("redis.port", r.port)?,
                    password: r.password,
                }
            }
            (None, Some(z), None, None, None) => {
                inline("zookeeper.host", &z.host)?;
                MetricSourceKindTemplate::Zookeeper { host: z.host, port: port("zookeeper.port", z.port)? }
            }
            (None, None, Some(n), None, None) => {
                url("nginx_stub_status.url", &n.url)?;
                MetricSourceKindTemplate::NginxStubStatus { url: n.url }
            }
            (None, None, None, Some(p), None) => {
                url("prometheus.url", &p.url)?;
                MetricSourceKindTemplate::Prometheus { url: p.url }
            }
            (None, None, None, None, Some(c)) => {
                if c.program.trim().is_empty() {
                    return Err(format!("{field}.command.program: must not be empty"));
                }
                inline("command.program", &c.program)?;
                for (j, a) in c.args.iter().enumerate() {
                    inline(&format!("command.args[{j}]"), a)?;
                }
                MetricSourceKindTemplate::Command { program: c.program, args: c.args }
            }
            _ => {
                return Err(format!(
                    "{field}: exactly one of redis, zookeeper, nginx_stub_status, prometheus or command is required (got {got})"
                ));
            }
        };
        let interval = duration(&self.interval).map_err(|m| format!("{field}.interval: {m}"))?;
        let timeout = duration(&self.timeout).map_err(|m| format!("{field}.timeout: {m}"))?;
        if interval.is_zero() {
            return Err(format!("{field}.interval: must be greater than zero"));
        }
        if timeout.is_zero() {
            return Err(format!("{field}.timeout: must be greater than zero"));
        }
        if timeout > interval {
            return Err(format!(
                "{field}.timeout: {} is longer than the interval {}",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ));
        }
        Ok(MetricSourceTemplate { source, interval, timeout })
    }
}

impl RawParameter {
    fn build(self, role_types: &[RoleType]) -> Result<Parameter, String> {
        let kind = match self.kind.as_str() {
            "string" => ParamKind::String,
            "integer" => ParamKind::Integer { min: self.min, max: self.max },
            "boolean" => ParamKind::Boolean,
            "enum" => ParamKind::Enum { values: self.values.clone().unwrap_or_default() },
            "port" => ParamKind::Port,
            "path" => ParamKind::Path,
            "memory_size" => ParamKind::MemorySize,
            "duration" => ParamKind::Duration,
            "password" => ParamKind::Password,
            "service" => ParamKind::Service { service_types: self.service_types.clone().unwrap_or_default() },
            other => {
                return Err(format!(
                    "type: unknown type `{other}` (expected string, integer, boolean, enum, port, path, memory_size, duration, password or service)"
                ));
            }
        };
        match &kind {
            ParamKind::Service { service_types } => {
                if self.service_types.as_ref().is_some_and(Vec::is_empty) {
                    return Err("service_types: the list is empty (leave it out to allow any type)".to_string());
                }
                for t in service_types {
                    check_name(t).map_err(|m| format!("service_types: {m}"))?;
                }
            }
            _ if self.service_types.is_some() => {
                return Err("service_types: only service parameters have service types".to_string());
            }
            _ => {}
        }
        if !matches!(kind, ParamKind::Integer { .. }) && (self.min.is_some() || self.max.is_some()) {
            return Err("min/max: only integer parameters have a range".to_string());
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("min {min} is greater than max {max}"));
        }
        match &kind {
            ParamKind::Enum { values } => {
                if values.is_empty() {
                    return Err("values: an enum needs at least one value".to_string());
                }
                let unique: BTreeSet<String> = values.iter().map(|v| v.to_ascii_lowercase()).collect();
                if unique.len() != values.len() {
                    return Err("values: duplicate value".to_string());
                }
            }
            _ if self.values.is_some() => return Err("values: only enum parameters have values".to_string()),
            _ => {}
        }
        let scope = match self.scope {
            None => Scope::Service,
            Some(RawScope::Name(s)) if s == "service" => Scope::Service,
            Some(RawScope::Name(s)) => {
                return Err(format!("scope: expected \"service\" or a list of role types, got \"{s}\""));
            }
            Some(RawScope::RoleTypes(types)) => {
                if types.is_empty() {
                    return Err("scope: the list of role types is empty".to_string());
                }
                for t in &types {
                    if !role_types.iter().any(|rt| &rt.name == t) {
                        return Err(format!("scope: role type `{t}` does not exist"));
                    }
                }
                Scope::RoleTypes(types)
            }
        };
        let mut param = Parameter {
            name: self.name,
            kind,
            default: None,
            description: self.description,
            scope,
            restart: self.restart,
            required: self.required,
        };
        if let Some(d) = self.default {
            let json = serde_json::to_value(&d).map_err(|e| format!("default: {e}"))?;
            let shown = if param.sensitive() { "the value".to_string() } else { json.to_string() };
            let normal = param.validate(&json).map_err(|e| format!("default {shown} is invalid: {}", e.message))?;
            param.default = Some(normal);
        }
        Ok(param)
    }
}

// ---- helpers ----

/// Names of services, role types and parameters: lowercase ASCII letters, digits, `_` and `-`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid name (lowercase letters, digits, `_`, `-`; starting with a letter)"))
    }
}

/// A TCP port, 1..=65535, as text.
pub(crate) fn port_number(text: &str) -> Result<u16, String> {
    text.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("`{text}` is not a port (1-65535)"))
}

/// An `http://host...` URL: metric sources speak plain HTTP only.
pub(crate) fn check_http_url(url: &str) -> Result<(), String> {
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => Err(format!("`{url}` has no host")),
        None => Err(format!("`{url}` is not an http:// URL (metric sources speak plain HTTP)")),
    }
}

fn check_relative(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("`{path}` must be a relative path inside the role directory"));
    }
    if p.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(format!("`{path}` must not contain `..` or `.` components"));
    }
    Ok(())
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e})"))
}

fn compile(text: &str) -> Result<(), String> {
    handlebars::Template::compile(text).map(|_| ()).map_err(|e| match e.pos() {
        Some((line, col)) => format!("invalid template at line {line}, column {col}: {}", e.reason()),
        None => format!("invalid template: {}", e.reason()),
    })
}

/// `invalid TOML at line 3, column 7: <message>`, on one line.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = match e.message().trim() {
        "" => "syntax error".to_string(),
        m => m.to_string(),
    };
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid TOML at line {line}, column {col}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

fn read(path: &Path) -> Result<String, DescriptorError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> DescriptorError {
    DescriptorError::Io { path: path.display().to_string(), source }
}

fn read_templates(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) -> Result<(), DescriptorError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        entries.push(entry.map_err(|e| io_error(dir, e))?.path());
    }
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let key = format!("{prefix}{name}");
        if path.is_dir() {
            read_templates(&path, &format!("{key}/"), out)?;
        } else {
            out.insert(key, read(&path)?);
        }
    }
    Ok(())
}

pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::Builtin;

    #[test]
    fn only_descriptors_and_templates_are_embedded() {
        let files: Vec<String> = Builtin::iter().map(|f| f.into_owned()).collect();
        assert!(files.iter().any(|f| f == "redis/service.toml"), "{files:?}");
        assert!(files.iter().any(|f| f == "zookeeper/templates/zoo.cfg.hbs"), "{files:?}");
        for f in &files {
            let (_, rest) = f.split_once('/').unwrap_or(("", f));
            assert!(rest == "service.toml" || rest.starts_with("templates/"), "{f} is embedded");
        }
    }
}
