//! Renders one role of a service into what its agent needs: config files, the process to run and
//! its health checks, as the role spec types of `drover-role-spec` the agent uses too.
//!
//! Templates see the context documented in `docs/service-descriptors.md` ("Template context") and
//! run in handlebars strict mode, so a reference to a missing variable is an error naming the file.
//! The manager does not know where the agent keeps a role's directory: templates write the literal
//! `${ROLE_DIR}` where an absolute path is unavoidable and the agent substitutes it (see
//! [`ROLE_DIR`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy, Output, RenderContext, RenderErrorReason,
    Renderable, handlebars_helper,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub use drover_role_spec::{
    ConfigCheck, ConfigFile, HealthCheck, LogFormat, LogSpec, MetricSource, MetricSourceKind, PARCELS_ROOT, Probe,
    ProcessSpec, ROLE_DIR,
};

use crate::config::{ConfigValues, effective, missing_required, restart_digest};
use crate::descriptor::{MetricSourceKindTemplate, ProbeTemplate, RoleType, ServiceType, check_http_url, port_number};
use crate::params::ParamKind;

/// One role of a service as placed by the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInstance {
    pub role_id: String,
    pub name: String,
    pub role_type: String,
    pub group: String,
    pub host_id: String,
    pub hostname: String,
    /// The host's first address, or its hostname when it has none.
    pub address: String,
    /// 0-based within its role type, by creation order.
    pub index: u32,
}

/// The service being rendered, the services it requires and the services its configuration
/// refers to.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Topology {
    pub cluster: String,
    pub service: String,
    pub roles: Vec<RoleInstance>,
    /// By required service type name.
    pub dependencies: BTreeMap<String, DependencyTopology>,
    /// Services named by `service` parameters, by service name (see
    /// [`crate::config::service_refs`]). A role whose reference is not here cannot be rendered.
    pub references: BTreeMap<String, DependencyTopology>,
}

/// A service this one requires or refers to: enough to render e.g. a ZooKeeper connect string
/// or an upstream list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DependencyTopology {
    /// The dependency's service name.
    pub service: String,
    /// Its descriptor, to resolve its roles' effective configuration.
    pub service_type: ServiceType,
    pub roles: Vec<RoleInstance>,
    pub values: ConfigValues,
}

/// Everything the agent needs to run one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedRole {
    pub files: Vec<ConfigFile>,
    pub process: ProcessSpec,
    pub health_checks: Vec<HealthCheck>,
    pub log_files: Vec<String>,
    /// [`crate::config::restart_digest`] of the role: a process started under another digest
    /// does not take new files by reload.
    pub restart_digest: String,
    /// Where the agent reads the role's service metrics.
    pub metric_sources: Vec<MetricSource>,
    /// Rotation of the role's stdout/stderr and how its lines read (the role type's `log`).
    pub log: LogSpec,
}

/// A role that cannot be rendered. `file` is the template (`parcels/redis/templates/redis.conf.hbs`),
/// the descriptor (`.../service.toml`) for process and health check fields, or `topology` / `config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderError {
    pub file: String,
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for RenderError {}

fn error(file: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError { file: file.into(), message: message.into() }
}

/// Renders the role `role_id` of the service described by `topo` with configuration `values`.
/// To render many roles of one service, use a [`Renderer`]: it compiles the templates and builds
/// the shared part of the context (the topology) once.
pub fn render_role(
    st: &ServiceType,
    topo: &Topology,
    values: &ConfigValues,
    role_id: &str,
) -> Result<RenderedRole, RenderError> {
    Renderer::new(st, topo, values)?.render(role_id)
}

/// Renders the roles of one service: templates are compiled and the topology part of the
/// context is built once, so rendering N roles costs O(N), not O(N²).
pub struct Renderer<'a> {
    st: &'a ServiceType,
    topo: &'a Topology,
    values: &'a ConfigValues,
    hb: Handlebars<'static>,
    /// The context; `role`, `config` and `refs` are replaced for each role rendered.
    ctx: handlebars::Context,
    /// What `refs.<parameter>` shows of each referenced service, by service name.
    references: BTreeMap<String, Value>,
    /// Position of each role in `topo.roles`, by role id.
    index: HashMap<&'a str, usize>,
    /// The inline templates (process, checks) compiled so far, by their text.
    inline: HashSet<String>,
    /// Values of sensitive parameters (as set and as `quote` escapes them): a
    /// file that holds one is made private to its owner.
    secrets: Vec<String>,
}

impl<'a> Renderer<'a> {
    pub fn new(st: &'a ServiceType, topo: &'a Topology, values: &'a ConfigValues) -> Result<Renderer<'a>, RenderError> {
        let mut hb = registry();
        for rt in &st.role_types {
            for f in &rt.files {
                let file = format!("{}/templates/{}", st.source, f.template);
                hb.register_template_string(&template_key(&rt.name, &f.path), &f.source)
                    .map_err(|e| error(&file, e.to_string()))?;
            }
        }
        // `from`, not `wraps`: `wraps` serialises its argument into a new value, a deep copy
        // of every role's effective configuration (10,000 roles: half of `new`).
        let ctx = handlebars::Context::from(shared_context(st, topo, values));
        let references = topo.references.iter().map(|(name, r)| (name.clone(), reference_json(topo, r))).collect();
        let index = topo.roles.iter().enumerate().map(|(i, r)| (r.role_id.as_str(), i)).collect();
        let secrets = sensitive_strings(st, topo, values);
        let mut renderer = Renderer { st, topo, values, hb, ctx, references, index, inline: HashSet::new(), secrets };
        for rt in &st.role_types {
            renderer.compile_inline(rt);
        }
        Ok(renderer)
    }

    /// Compiles the inline templates of a role type once (a string without
    /// `{{` is used as it is, uncompiled). One that does not compile is left
    /// to render from its text, which reports the error.
    fn compile_inline(&mut self, rt: &RoleType) {
        let p = &rt.process;
        let mut texts: Vec<&String> = vec![&p.program, &p.working_dir];
        texts.extend(&p.args);
        texts.extend(p.env.values());
        if let Some(c) = &p.config_check {
            texts.push(&c.program);
            texts.extend(&c.args);
        }
        for hc in &rt.health_checks {
            match &hc.probe {
                ProbeTemplate::Tcp { host, port } => texts.extend([host, port]),
                ProbeTemplate::Http { url, .. } => texts.push(url),
                ProbeTemplate::Command { program, args } => {
                    texts.push(program);
                    texts.extend(args);
                }
            }
        }
        for m in &rt.metrics {
            match &m.source {
                MetricSourceKindTemplate::Redis { host, port, password } => texts.extend([host, port, password]),
                MetricSourceKindTemplate::Zookeeper { host, port } => texts.extend([host, port]),
                MetricSourceKindTemplate::NginxStubStatus { url } | MetricSourceKindTemplate::Prometheus { url } => {
                    texts.push(url)
                }
                MetricSourceKindTemplate::Command { program, args } => {
                    texts.push(program);
                    texts.extend(args);
                }
            }
        }
        for t in texts {
            if t.contains("{{")
                && !self.inline.contains(t)
                && self.hb.register_template_string(&inline_key(t), t).is_ok()
            {
                self.inline.insert(t.clone());
            }
        }
    }

    /// Renders one role of the service.
    pub fn render(&mut self, role_id: &str) -> Result<RenderedRole, RenderError> {
        let (st, topo, values) = (self.st, self.topo, self.values);
        let role = self
            .index
            .get(role_id)
            .map(|i| &topo.roles[*i])
            .ok_or_else(|| error("topology", format!("role `{role_id}` is not in service `{}`", topo.service)))?;
        let rt = st.role_type(&role.role_type).ok_or_else(|| {
            error(
                "topology",
                format!("role `{}`: service type `{}` has no role type `{}`", role.name, st.name, role.role_type),
            )
        })?;
        let missing = missing_required(st, values, &role.role_type, &role.group, &role.role_id);
        if let Some(first) = missing.first() {
            return Err(error("config", format!("parameter `{first}` is required and has no value")));
        }
        for dep in &st.requires {
            if !topo.dependencies.contains_key(dep) {
                return Err(error(
                    "topology",
                    format!("service `{}` requires a `{dep}` service and none was given", topo.service),
                ));
            }
        }

        let config = config_json(st, values, role);
        let refs = refs_json(st, topo, &config, &self.references)?;
        if let Value::Object(m) = self.ctx.data_mut() {
            let mut this = instance_json(role);
            if let Value::Object(t) = &mut this {
                t.insert("dir".to_string(), Value::String(ROLE_DIR.to_string()));
            }
            m.insert("role".to_string(), this);
            m.insert("config".to_string(), config);
            m.insert("refs".to_string(), refs);
        }
        let (hb, ctx, compiled) = (&self.hb, &self.ctx, &self.inline);
        let descriptor = format!("{}/service.toml", st.source);
        let inline = |field: &str, text: &str| {
            if !text.contains("{{") {
                return Ok(text.to_owned());
            }
            let rendered = if compiled.contains(text) {
                hb.render_with_context(&inline_key(text), ctx)
            } else {
                hb.render_template_with_context(text, ctx)
            };
            // handlebars renders into an 8 KiB buffer: keep only what the
            // text needs, it lives in every host's desired state.
            rendered
                .map(|mut s| {
                    s.shrink_to_fit();
                    s
                })
                .map_err(|e| error(&descriptor, format!("role type `{}`: {field}: {}", rt.name, reason(&e))))
        };

        let mut files = Vec::new();
        for f in &rt.files {
            let file = format!("{}/templates/{}", st.source, f.template);
            let text =
                hb.render_with_context(&template_key(&rt.name, &f.path), ctx).map_err(|e| error(&file, reason(&e)))?;
            // A file holding a secret is readable by its owner only.
            let mode = if self.secrets.iter().any(|s| text.contains(s.as_str())) { f.mode & !0o077 } else { f.mode };
            let mut content = text.into_bytes();
            content.shrink_to_fit();
            let sha256 = hex::encode(Sha256::digest(&content));
            files.push(ConfigFile { path: f.path.clone(), content, sha256, mode });
        }

        let p = &rt.process;
        let mut env = BTreeMap::new();
        for (k, v) in &p.env {
            env.insert(k.clone(), inline(&format!("process.env.{k}"), v)?);
        }
        let process = ProcessSpec {
            program: inline("process.program", &p.program)?,
            args: p
                .args
                .iter()
                .enumerate()
                .map(|(i, a)| inline(&format!("process.args[{i}]"), a))
                .collect::<Result<_, _>>()?,
            env,
            working_dir: inline("process.working_dir", &p.working_dir)?,
            stop_signal: p.stop_signal.clone(),
            stop_grace: p.stop_grace,
            reload_signal: p.reload_signal.clone().unwrap_or_default(),
            config_check: match &p.config_check {
                None => None,
                Some(c) => Some(ConfigCheck {
                    program: inline("process.config_check.program", &c.program)?,
                    args: c
                        .args
                        .iter()
                        .enumerate()
                        .map(|(i, a)| inline(&format!("process.config_check.args[{i}]"), a))
                        .collect::<Result<_, _>>()?,
                    timeout: c.timeout,
                }),
            },
        };

        let mut health_checks = Vec::new();
        for (i, hc) in rt.health_checks.iter().enumerate() {
            let field = format!("health_checks[{i}]");
            let probe = match &hc.probe {
                ProbeTemplate::Tcp { host, port } => {
                    let port_text = inline(&format!("{field}.tcp.port"), port)?;
                    let port = port_text.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        error(
                            &descriptor,
                            format!("role type `{}`: {field}.tcp.port: `{port_text}` is not a port", rt.name),
                        )
                    })?;
                    Probe::Tcp { host: inline(&format!("{field}.tcp.host"), host)?, port }
                }
                ProbeTemplate::Http { url, expect_status } => {
                    Probe::Http { url: inline(&format!("{field}.http.url"), url)?, expect_status: *expect_status }
                }
                ProbeTemplate::Command { program, args } => Probe::Command {
                    program: inline(&format!("{field}.command.program"), program)?,
                    args: args
                        .iter()
                        .enumerate()
                        .map(|(j, a)| inline(&format!("{field}.command.args[{j}]"), a))
                        .collect::<Result<_, _>>()?,
                },
            };
            health_checks.push(HealthCheck {
                probe,
                interval: hc.interval,
                timeout: hc.timeout,
                failure_threshold: hc.failure_threshold,
            });
        }

        // Metric sources are not part of the restart digest: a changed source
        // reaches the agent with the next push and never restarts the role.
        let mut metric_sources = Vec::new();
        for (i, m) in rt.metrics.iter().enumerate() {
            let field = format!("metrics[{i}]");
            let port = |name: &str, text: &str| {
                let rendered = inline(&format!("{field}.{name}"), text)?;
                port_number(&rendered)
                    .map_err(|m| error(&descriptor, format!("role type `{}`: {field}.{name}: {m}", rt.name)))
            };
            let url = |name: &str, text: &str| {
                let rendered = inline(&format!("{field}.{name}"), text)?;
                check_http_url(&rendered)
                    .map_err(|m| error(&descriptor, format!("role type `{}`: {field}.{name}: {m}", rt.name)))?;
                Ok::<_, RenderError>(rendered)
            };
            let kind = match &m.source {
                MetricSourceKindTemplate::Redis { host, port: p, password } => MetricSourceKind::Redis {
                    host: inline(&format!("{field}.redis.host"), host)?,
                    port: port("redis.port", p)?,
                    password: inline(&format!("{field}.redis.password"), password)?,
                },
                MetricSourceKindTemplate::Zookeeper { host, port: p } => MetricSourceKind::Zookeeper {
                    host: inline(&format!("{field}.zookeeper.host"), host)?,
                    port: port("zookeeper.port", p)?,
                },
                MetricSourceKindTemplate::NginxStubStatus { url: u } => {
                    MetricSourceKind::NginxStubStatus { url: url("nginx_stub_status.url", u)? }
                }
                MetricSourceKindTemplate::Prometheus { url: u } => {
                    MetricSourceKind::Prometheus { url: url("prometheus.url", u)? }
                }
                MetricSourceKindTemplate::Command { program, args } => MetricSourceKind::Command {
                    program: inline(&format!("{field}.command.program"), program)?,
                    args: args
                        .iter()
                        .enumerate()
                        .map(|(j, a)| inline(&format!("{field}.command.args[{j}]"), a))
                        .collect::<Result<_, _>>()?,
                },
            };
            metric_sources.push(MetricSource { kind, interval: m.interval, timeout: m.timeout });
        }

        Ok(RenderedRole {
            files,
            process,
            health_checks,
            log_files: rt.log_files.clone(),
            restart_digest: restart_digest(st, values, &role.role_type, &role.group, &role.role_id),
            metric_sources,
            log: rt.log.clone(),
        })
    }
}

fn inline_key(text: &str) -> String {
    format!("inline:{text}")
}

fn template_key(role_type: &str, path: &str) -> String {
    format!("{role_type}/{path}")
}

/// The parts of the context every role of the service shares.
fn shared_context(st: &ServiceType, topo: &Topology, values: &ConfigValues) -> Value {
    let deps: Map<String, Value> = topo
        .dependencies
        .iter()
        .map(|(ty, dep)| {
            let roles = roles_json(&dep.service_type, &dep.roles, &dep.values);
            let dep = object([
                ("service", dep.service.as_str().into()),
                ("type", dep.service_type.name.as_str().into()),
                ("roles", roles),
            ]);
            (ty.clone(), dep)
        })
        .collect();
    object([
        ("role", Value::Null),
        ("config", Value::Null),
        ("refs", Value::Null),
        ("service", json!({ "name": topo.service, "cluster": topo.cluster, "type": st.name })),
        ("roles", roles_json(st, &topo.roles, values)),
        ("deps", Value::Object(deps)),
        ("parcel", parcels_json(st)),
    ])
}

/// A JSON object of `fields`, the values moved in: `json!` would copy each
/// value it is given (10,000 roles' configurations, for `roles`).
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The template context of `role`; public so the manager can show it (e.g. a "render preview").
/// Sensitive values are included unmasked. A reference to a service missing from the topology
/// shows as `null`.
pub fn context(st: &ServiceType, topo: &Topology, values: &ConfigValues, role: &RoleInstance) -> Value {
    let config = config_json(st, values, role);
    let references = topo.references.iter().map(|(name, r)| (name.clone(), reference_json(topo, r))).collect();
    let refs = refs_json(st, topo, &config, &references).unwrap_or(Value::Null);
    let mut this = instance_json(role);
    if let Value::Object(m) = &mut this {
        m.insert("dir".to_string(), Value::String(ROLE_DIR.to_string()));
    }
    let mut ctx = shared_context(st, topo, values);
    ctx["role"] = this;
    ctx["config"] = config;
    ctx["refs"] = refs;
    ctx
}

/// `parcel.<name>.home`: where the active version of each parcel the service
/// uses lives on the host (`${PARCELS_ROOT}` is replaced by the agent).
fn parcels_json(st: &ServiceType) -> Value {
    Value::Object(
        st.parcels.iter().map(|p| (p.clone(), json!({ "home": format!("{PARCELS_ROOT}/{p}"), "name": p }))).collect(),
    )
}

/// `refs.<service>` of one referenced service: `{service, cluster, type, roles}`, `roles` shaped
/// like the context's own `roles`.
fn reference_json(topo: &Topology, r: &DependencyTopology) -> Value {
    object([
        ("service", r.service.as_str().into()),
        ("cluster", topo.cluster.as_str().into()),
        ("type", r.service_type.name.as_str().into()),
        ("roles", roles_json(&r.service_type, &r.roles, &r.values)),
    ])
}

/// `refs` of one role: every `service` parameter that applies to it, by parameter name, with the
/// referenced service (see [`reference_json`]) or `null` when the parameter is unset. A
/// reference to a service that is not in the topology, or of a type the parameter does not
/// allow, is an error naming the parameter.
fn refs_json(
    st: &ServiceType,
    topo: &Topology,
    config: &Value,
    references: &BTreeMap<String, Value>,
) -> Result<Value, RenderError> {
    let mut out = Map::new();
    for p in &st.parameters {
        let ParamKind::Service { service_types } = &p.kind else { continue };
        let Some(value) = config.get(&p.name) else { continue };
        let shown = match value.as_str() {
            None => Value::Null,
            Some(name) => {
                let r = references.get(name).ok_or_else(|| {
                    error(
                        "config",
                        format!(
                            "parameter `{}`: service `{name}` does not exist in cluster `{}`",
                            p.name, topo.cluster
                        ),
                    )
                })?;
                let ty = r["type"].as_str().unwrap_or_default();
                if !service_types.is_empty() && !service_types.iter().any(|t| t == ty) {
                    return Err(error(
                        "config",
                        format!(
                            "parameter `{}`: service `{name}` is of type `{ty}`; expected a service of type {}",
                            p.name,
                            service_types.join(" or ")
                        ),
                    ));
                }
                r.clone()
            }
        };
        out.insert(p.name.clone(), shown);
    }
    Ok(Value::Object(out))
}

/// Every non-empty string value of a sensitive parameter, of the service and
/// of the services it requires or refers to, raw and escaped as `quote` does.
fn sensitive_strings(st: &ServiceType, topo: &Topology, values: &ConfigValues) -> Vec<String> {
    let mut out = Vec::new();
    let services = std::iter::once((st, values))
        .chain(topo.dependencies.values().chain(topo.references.values()).map(|d| (&d.service_type, &d.values)));
    for (st, values) in services {
        let set = std::iter::once(&values.service).chain(values.groups.values()).chain(values.roles.values());
        let defaults = st.parameters.iter().filter_map(|p| p.default.as_ref().map(|d| (&p.name, d)));
        for (k, v) in set.flat_map(|m| m.iter()).chain(defaults) {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty())
                && st.parameter(k).is_some_and(|p| p.sensitive())
            {
                out.push(s.to_owned());
                out.push(s.replace('\\', "\\\\").replace('"', "\\\""));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn config_json(st: &ServiceType, values: &ConfigValues, role: &RoleInstance) -> Value {
    Value::Object(
        effective(st, values, &role.role_type, &role.group, &role.role_id)
            .into_iter()
            .map(|(k, e)| (k, e.value))
            .collect(),
    )
}

fn instance_json(r: &RoleInstance) -> Value {
    json!({
        "id": r.role_id,
        "name": r.name,
        "type": r.role_type,
        "group": r.group,
        "index": r.index,
        "myid": r.index + 1,
        "host": r.host_id,
        "hostname": r.hostname,
        "address": r.address,
    })
}

/// Role type -> its roles sorted by index, each with its own effective config. Every role type of
/// the service has an entry, possibly empty, so templates can iterate without existence checks.
fn roles_json(st: &ServiceType, roles: &[RoleInstance], values: &ConfigValues) -> Value {
    let mut by_type: BTreeMap<&str, Vec<&RoleInstance>> =
        st.role_types.iter().map(|rt| (rt.name.as_str(), Vec::new())).collect();
    for r in roles {
        by_type.entry(r.role_type.as_str()).or_default().push(r);
    }
    Value::Object(
        by_type
            .into_iter()
            .map(|(ty, mut list)| {
                list.sort_by_key(|r| (r.index, r.role_id.clone()));
                let items = list
                    .into_iter()
                    .map(|r| {
                        let mut v = instance_json(r);
                        if let Value::Object(m) = &mut v {
                            m.insert("config".to_string(), config_json(st, values, r));
                        }
                        v
                    })
                    .collect();
                (ty.to_string(), Value::Array(items))
            })
            .collect(),
    )
}

/// The handlebars error without the template-name prefix handlebars adds for inline templates.
fn reason(e: &handlebars::RenderError) -> String {
    let mut s = match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("missing variable `{path}`"),
        other => other.to_string(),
    };
    if let (Some(line), Some(col)) = (e.line_no, e.column_no) {
        s = format!("line {line}, column {col}: {s}");
    }
    s
}

/// A registry in strict mode, without HTML escaping, with Drover's helpers.
fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    register_helpers(&mut hb);
    hb
}

handlebars_helper!(yesno: |b: bool| if b { "yes" } else { "no" });
handlebars_helper!(secs: |ms: u64| ms / 1000);
handlebars_helper!(mem: |bytes: u64, unit: str| {
    let div: u64 = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => 1,
    };
    bytes / div
});
handlebars_helper!(quote: |s: str| {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
});
handlebars_helper!(connect_host: |bind: str, address: str| connect_host_of(bind, address));
handlebars_helper!(local_host: |bind: str| local_host_of(bind));

/// The address a process on the same host dials to reach a process that listens on `bind`:
/// `127.0.0.1` when it listens on every interface (`bind` is empty or lists a wildcard),
/// otherwise the first address it binds.
fn local_host_of(bind: &str) -> String {
    let binds: Vec<&str> = bind.split_whitespace().map(|b| b.trim_start_matches('-')).collect();
    let wildcard = binds.is_empty() || binds.iter().any(|b| matches!(*b, "0.0.0.0" | "*" | "::" | "::*"));
    if wildcard { "127.0.0.1".to_string() } else { binds[0].to_string() }
}

/// The address a peer should dial to reach a process that listens on `bind` on a host whose
/// address is `address`: the host address when the process listens on it or on every interface,
/// otherwise the first address it binds (e.g. `127.0.0.1`).
fn connect_host_of(bind: &str, address: &str) -> String {
    let binds: Vec<&str> = bind.split_whitespace().map(|b| b.trim_start_matches('-')).collect();
    let wildcard = binds.is_empty() || binds.iter().any(|b| matches!(*b, "0.0.0.0" | "*" | "::" | "::*"));
    if wildcard || binds.contains(&address) { address.to_string() } else { binds[0].to_string() }
}

/// `{{join list ","}}`: the items of an array separated by `,` (the default). With a third
/// argument, a dotted field path, joins that field of each item: `{{join roles.server "," "address"}}`.
fn join(h: &Helper, hb: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let list = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("join", 0))?;
    if hb.strict_mode() && list.is_value_missing() {
        return Err(handlebars::RenderError::strict_error(list.relative_path()));
    }
    let sep = match h.param(1) {
        Some(p) => p.value().as_str().ok_or(RenderErrorReason::InvalidParamType("string separator"))?,
        None => ",",
    };
    let field = match h.param(2) {
        Some(p) => Some(p.value().as_str().ok_or(RenderErrorReason::InvalidParamType("string field path"))?),
        None => None,
    };
    let items = list.value().as_array().ok_or(RenderErrorReason::InvalidParamType("array"))?;
    let mut parts = Vec::new();
    for item in items {
        let mut v = item;
        for key in field.iter().flat_map(|f| f.split('.')) {
            v = v.get(key).ok_or_else(|| RenderErrorReason::Other(format!("join: an item has no field `{key}`")))?;
        }
        parts.push(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    out.write(&parts.join(sep))?;
    Ok(())
}

/// `if` / `unless` as built in, but strict: a condition on a missing variable is an error, so a
/// typo (`{{#if config.requirepas}}`) cannot silently drop lines from a config file.
#[derive(Clone, Copy)]
struct StrictIf {
    positive: bool,
}

impl HelperDef for StrictIf {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = if self.positive { "if" } else { "unless" };
        let param = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        if r.strict_mode() && param.is_value_missing() {
            return Err(handlebars::RenderError::strict_error(param.relative_path()));
        }
        let include_zero = h.hash_get("includeZero").and_then(|v| v.value().as_bool()).unwrap_or(false);
        let value = param.value().is_truthy(include_zero) == self.positive;
        match if value { h.template() } else { h.inverse() } {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

fn register_helpers(hb: &mut Handlebars<'static>) {
    hb.register_helper("if", Box::new(StrictIf { positive: true }));
    hb.register_helper("unless", Box::new(StrictIf { positive: false }));
    hb.register_helper("join", Box::new(join));
    hb.register_helper("yesno", Box::new(yesno));
    hb.register_helper("secs", Box::new(secs));
    hb.register_helper("mem", Box::new(mem));
    hb.register_helper("quote", Box::new(quote));
    hb.register_helper("connect_host", Box::new(connect_host));
    hb.register_helper("local_host", Box::new(local_host));
    hb.register_helper("endpoints", Box::new(Endpoints));
}

/// `(endpoints refs.upstream "server" "port" bind="bind")`: the roles of one role type of a
/// referenced service as `host:port` endpoints, for a subexpression (`{{#each (endpoints ...)}}`).
/// Each item is `{id, name, type, index, host, hostname, address, port}`, sorted by index, where
/// `port` is the role's own effective value of the port parameter and `address` the address to
/// dial: with `bind="<parameter>"`, [`connect_host_of`] of that parameter of the role (when the
/// role has it) and its host address, else the host address.
///
/// Errors, so that a wrong parameter fails the render instead of writing an empty list: the
/// reference is `null`, its service has no such role type, or a role has no port under that
/// parameter name.
#[derive(Clone, Copy)]
struct Endpoints;

impl HelperDef for Endpoints {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
        let param = |i: usize| {
            let p = h.param(i).ok_or(RenderErrorReason::ParamNotFoundForIndex("endpoints", i))?;
            if r.strict_mode() && p.is_value_missing() {
                return Err(handlebars::RenderError::strict_error(p.relative_path()));
            }
            Ok(p.value())
        };
        let other = |m: String| handlebars::RenderError::from(RenderErrorReason::Other(format!("endpoints: {m}")));
        let reference = param(0)?;
        let role_type = param(1)?.as_str().ok_or(RenderErrorReason::InvalidParamType("role type name"))?;
        let port_param = param(2)?.as_str().ok_or(RenderErrorReason::InvalidParamType("port parameter name"))?;
        let bind_param = match h.hash_get("bind") {
            Some(b) => Some(b.value().as_str().ok_or(RenderErrorReason::InvalidParamType("bind parameter name"))?),
            None => None,
        };
        if reference.is_null() {
            return Err(other("the service reference is not set".into()));
        }
        let service = reference.get("service").and_then(Value::as_str).unwrap_or("?");
        let roles = reference
            .get("roles")
            .and_then(Value::as_object)
            .ok_or_else(|| other(format!("`{service}` is not a service reference")))?;
        let list = roles.get(role_type).and_then(Value::as_array).ok_or_else(|| {
            let known: Vec<&str> = roles.keys().map(String::as_str).collect();
            other(format!("service `{service}` has no role type `{role_type}`; role types: {}", known.join(", ")))
        })?;
        let mut out = Vec::with_capacity(list.len());
        for role in list {
            let name = role.get("name").and_then(Value::as_str).unwrap_or("?");
            let config = role.get("config");
            let port = config
                .and_then(|c| c.get(port_param))
                .ok_or_else(|| other(format!("role `{name}` of service `{service}` has no parameter `{port_param}`")))?
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| {
                    other(format!("parameter `{port_param}` of role `{name}` of service `{service}` is not a port"))
                })?;
            let host_address = role.get("address").and_then(Value::as_str).unwrap_or_default();
            let address = match bind_param.and_then(|b| config.and_then(|c| c.get(b)).and_then(Value::as_str)) {
                Some(bind) => connect_host_of(bind, host_address),
                None => host_address.to_string(),
            };
            out.push(json!({
                "id": role.get("id"),
                "name": name,
                "type": role.get("type"),
                "index": role.get("index"),
                "host": role.get("host"),
                "hostname": role.get("hostname"),
                "address": address,
                "port": port,
            }));
        }
        Ok(handlebars::ScopedJson::Derived(Value::Array(out)))
    }
}
