//! Service dashboards: the charts the console draws for a service type (`[[dashboard]]` in
//! `service.toml`, each with its `[[dashboard.lines]]`), so that a new type brings its own
//! dashboard without a change to the manager.
//!
//! A chart names metrics, how each line's points come from their samples (`stat`, `sum_by`) and
//! how values are shown (`unit`, `max`). Every metric a line names is checked at load against
//! what the metric sources of the chart's role types yield: the samples of the built-in
//! collectors (listed here as in `docs/metrics.md`), any name for a `prometheus` or `command`
//! source, and the process metrics every role has.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::descriptor::{MetricSourceKindTemplate, RoleType};

/// The metrics the manager keeps of every role's process (`docs/metrics.md`, "Storage and
/// query"), whatever its sources.
pub const ROLE_PROCESS_METRICS: &[&str] = &[
    "role_up",
    "role_cpu_percent",
    "role_memory_rss_bytes",
    "role_threads",
    "role_open_fds",
    "role_uptime_seconds",
    "role_restarts_total",
    "role_last_exit_status",
];

/// The samples a `redis` source yields (`INFO`).
pub const REDIS_SAMPLES: &[&str] = &[
    "redis_connected_clients",
    "redis_used_memory_bytes",
    "redis_maxmemory_bytes",
    "redis_memory_used_ratio",
    "redis_instantaneous_ops_per_sec",
    "redis_commands_processed_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_keys",
    "redis_is_primary",
    "redis_connected_replicas",
    "redis_master_link_up",
    "redis_replication_offset_lag_bytes",
];

/// The samples a `zookeeper` source yields (`mntr`).
pub const ZOOKEEPER_SAMPLES: &[&str] = &[
    "zookeeper_is_leader",
    "zookeeper_mode",
    "zookeeper_avg_latency_ms",
    "zookeeper_max_latency_ms",
    "zookeeper_outstanding_requests",
    "zookeeper_znode_count",
    "zookeeper_synced_followers",
    "zookeeper_open_sessions",
    "zookeeper_num_alive_connections",
    "zookeeper_watch_count",
];

/// The samples an `nginx_stub_status` source yields.
pub const NGINX_SAMPLES: &[&str] = &[
    "nginx_active_connections",
    "nginx_accepted_connections_total",
    "nginx_handled_connections_total",
    "nginx_requests_total",
    "nginx_requests_per_second",
    "nginx_reading",
    "nginx_writing",
    "nginx_waiting",
];

impl MetricSourceKindTemplate {
    /// The kind's name as written in `service.toml` (`redis`, `nginx_stub_status`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            MetricSourceKindTemplate::Redis { .. } => "redis",
            MetricSourceKindTemplate::Zookeeper { .. } => "zookeeper",
            MetricSourceKindTemplate::NginxStubStatus { .. } => "nginx_stub_status",
            MetricSourceKindTemplate::Prometheus { .. } => "prometheus",
            MetricSourceKindTemplate::Command { .. } => "command",
        }
    }

    /// The sample names the source yields; `None` when it passes on whatever the service
    /// exposes (`prometheus`, `command`).
    pub fn samples(&self) -> Option<&'static [&'static str]> {
        match self {
            MetricSourceKindTemplate::Redis { .. } => Some(REDIS_SAMPLES),
            MetricSourceKindTemplate::Zookeeper { .. } => Some(ZOOKEEPER_SAMPLES),
            MetricSourceKindTemplate::NginxStubStatus { .. } => Some(NGINX_SAMPLES),
            MetricSourceKindTemplate::Prometheus { .. } | MetricSourceKindTemplate::Command { .. } => None,
        }
    }
}

/// How a chart's values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartUnit {
    Bytes,
    BytesPerSecond,
    /// 0..100.
    Percent,
    /// 0..1, shown as a percentage.
    Ratio,
    Count,
    PerSecond,
    Ms,
    Seconds,
    /// A plain number with two decimals (load averages).
    Number,
}

impl ChartUnit {
    /// Every unit under its name in `service.toml`.
    pub const ALL: [(&'static str, ChartUnit); 9] = [
        ("bytes", ChartUnit::Bytes),
        ("bytes_per_second", ChartUnit::BytesPerSecond),
        ("percent", ChartUnit::Percent),
        ("ratio", ChartUnit::Ratio),
        ("count", ChartUnit::Count),
        ("per_second", ChartUnit::PerSecond),
        ("ms", ChartUnit::Ms),
        ("seconds", ChartUnit::Seconds),
        ("number", ChartUnit::Number),
    ];

    pub fn parse(name: &str) -> Option<ChartUnit> {
        ChartUnit::ALL.iter().find(|(n, _)| *n == name).map(|(_, u)| *u)
    }
}

/// How a line's points come from the samples in each step of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStat {
    /// The average of the step (a gauge).
    Avg,
    /// The highest value of the step (peaks, states).
    Max,
    /// The step's last value.
    Last,
    /// A counter: per-second growth between the steps' last values (0 where it went down: the
    /// counter restarted).
    Rate,
}

impl LineStat {
    pub const ALL: [(&'static str, LineStat); 4] =
        [("avg", LineStat::Avg), ("max", LineStat::Max), ("last", LineStat::Last), ("rate", LineStat::Rate)];

    pub fn parse(name: &str) -> Option<LineStat> {
        LineStat::ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }
}

/// One chart of a service type's dashboard (`[[dashboard]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DashboardChart {
    /// Unique within the dashboard.
    pub title: String,
    pub unit: ChartUnit,
    /// The top of the value axis (100 for a percentage of one core); `None`: the highest value.
    pub max: Option<f64>,
    /// The role types whose roles yield its metrics (a role's page shows only its own type's
    /// charts); empty: every role type.
    pub role_types: Vec<String>,
    /// At least one.
    pub lines: Vec<DashboardLine>,
}

/// One metric of a chart (`[[dashboard.lines]]`), drawn as one line per series it selects (a
/// line per role on a service's page, per role and label value on a role's page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DashboardLine {
    /// A metric name the chart's role types yield.
    pub metric: String,
    /// The line's name in the legend; defaults to the metric name.
    pub label: String,
    pub stat: LineStat,
    /// Sum the roles' series, one line per value of this label (`role_type`, `host`, or a label
    /// of the samples such as `db`); `None`: one line per series.
    pub sum_by: Option<String>,
    /// Leave out series that are 0 throughout (a limit that is not set).
    pub hide_zero: bool,
}

impl DashboardChart {
    /// Whether the chart belongs on the page of a role of type `role_type`.
    pub fn applies_to(&self, role_type: &str) -> bool {
        self.role_types.is_empty() || self.role_types.iter().any(|t| t == role_type)
    }
}

// ---- raw TOML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChart {
    #[serde(default)]
    title: String,
    #[serde(default)]
    unit: String,
    max: Option<f64>,
    #[serde(default)]
    role_types: Vec<String>,
    #[serde(default)]
    lines: Vec<RawLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    #[serde(default)]
    metric: String,
    label: Option<String>,
    stat: Option<String>,
    sum_by: Option<String>,
    #[serde(default)]
    hide_zero: bool,
}

/// Checks every chart; errors start with the field (`dashboard[0].lines[1].metric: ...`).
pub(crate) fn build(raw: Vec<RawChart>, role_types: &[RoleType]) -> Result<Vec<DashboardChart>, String> {
    let mut charts: Vec<DashboardChart> = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let chart = c.build(role_types).map_err(|m| format!("dashboard[{i}].{m}"))?;
        if let Some(j) = charts.iter().position(|o| o.title == chart.title) {
            return Err(format!("dashboard[{i}].title: `{}` is already the title of dashboard[{j}]", chart.title));
        }
        charts.push(chart);
    }
    Ok(charts)
}

impl RawChart {
    fn build(self, role_types: &[RoleType]) -> Result<DashboardChart, String> {
        let title = self.title.trim().to_string();
        if title.is_empty() {
            return Err("title: must not be empty".to_string());
        }
        let unit = ChartUnit::parse(&self.unit).ok_or_else(|| {
            let known: Vec<&str> = ChartUnit::ALL.iter().map(|(n, _)| *n).collect();
            match self.unit.as_str() {
                "" => format!("unit: missing (one of {})", known.join(", ")),
                u => format!("unit: unknown unit `{u}` (expected one of {})", known.join(", ")),
            }
        })?;
        if let Some(max) = self.max
            && !(max.is_finite() && max > 0.0)
        {
            return Err(format!("max: {max} is not a number greater than 0"));
        }
        let mut seen = BTreeSet::new();
        for t in &self.role_types {
            if !role_types.iter().any(|rt| &rt.name == t) {
                return Err(format!("role_types: role type `{t}` does not exist"));
            }
            if !seen.insert(t) {
                return Err(format!("role_types: `{t}` is listed twice"));
            }
        }
        if self.lines.is_empty() {
            return Err("lines: a chart needs at least one line ([[dashboard.lines]] with a metric)".to_string());
        }
        let yielding: Vec<&RoleType> =
            role_types.iter().filter(|rt| self.role_types.is_empty() || self.role_types.contains(&rt.name)).collect();
        let mut lines: Vec<DashboardLine> = Vec::new();
        for (j, l) in self.lines.into_iter().enumerate() {
            let line = l.build(&yielding).map_err(|m| format!("lines[{j}].{m}"))?;
            if let Some(k) =
                lines.iter().position(|o| (&o.metric, o.stat, &o.sum_by) == (&line.metric, line.stat, &line.sum_by))
            {
                return Err(format!("lines[{j}]: the same metric, stat and sum_by as lines[{k}]"));
            }
            lines.push(line);
        }
        Ok(DashboardChart { title, unit, max: self.max, role_types: self.role_types, lines })
    }
}

impl RawLine {
    /// `yielding`: the role types of the chart.
    fn build(self, yielding: &[&RoleType]) -> Result<DashboardLine, String> {
        if self.metric.is_empty() {
            return Err("metric: missing (the metric name the line draws)".to_string());
        }
        check_metric_name(&self.metric).map_err(|m| format!("metric: {m}"))?;
        check_yielded(&self.metric, yielding).map_err(|m| format!("metric: {m}"))?;
        let label = match self.label {
            None => self.metric.clone(),
            Some(l) if l.trim().is_empty() => {
                return Err("label: must not be empty (leave it out for the metric name)".to_string());
            }
            Some(l) => l.trim().to_string(),
        };
        let stat = match self.stat.as_deref() {
            None => LineStat::Avg,
            Some(s) => LineStat::parse(s).ok_or_else(|| {
                let known: Vec<&str> = LineStat::ALL.iter().map(|(n, _)| *n).collect();
                format!("stat: unknown stat `{s}` (expected one of {})", known.join(", "))
            })?,
        };
        if let Some(by) = &self.sum_by {
            check_label_name(by).map_err(|m| format!("sum_by: {m}"))?;
        }
        Ok(DashboardLine { metric: self.metric, label, stat, sum_by: self.sum_by, hide_zero: self.hide_zero })
    }
}

/// A metric is a role process metric, or some source of the role types yields it (a
/// `prometheus` or `command` source may yield any name).
fn check_yielded(metric: &str, yielding: &[&RoleType]) -> Result<(), String> {
    if ROLE_PROCESS_METRICS.contains(&metric) {
        return Ok(());
    }
    let names: Vec<String> = yielding.iter().map(|rt| format!("`{}`", rt.name)).collect();
    let sources: Vec<&MetricSourceKindTemplate> =
        yielding.iter().flat_map(|rt| rt.metrics.iter().map(|m| &m.source)).collect();
    if sources.is_empty() {
        return Err(format!(
            "`{metric}` is not a role process metric (role_*) and role type {} has no metric source",
            names.join(", ")
        ));
    }
    if sources.iter().any(|s| s.samples().is_none_or(|names| names.contains(&metric))) {
        return Ok(());
    }
    let mut offered: Vec<String> = Vec::new();
    for s in &sources {
        let line = format!("{}: {}", s.kind_name(), s.samples().unwrap_or_default().join(", "));
        if !offered.contains(&line) {
            offered.push(line);
        }
    }
    Err(format!(
        "no metric source of role type {} yields `{metric}` ({}; and every role the role_* process metrics)",
        names.join(", "),
        offered.join("; ")
    ))
}

/// Sample names as Prometheus has them: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok { Ok(()) } else { Err(format!("`{name}` is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")) }
}

/// Label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn check_label_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(()) } else { Err(format!("`{name}` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")) }
}
