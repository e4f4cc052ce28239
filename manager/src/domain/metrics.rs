//! Metrics of hosts, roles and services: ingest from heartbeats, the live
//! series index with each series' latest value ([`LiveMetrics`], held by the
//! registry), selectors, the query with steps and aggregation, the series
//! list and the Prometheus text exposition.
//!
//! A series is a metric name of one entity (a host or a role) with labels.
//! Role series carry `cluster`, `service`, `role`, `role_type` and `host`;
//! host series carry `host`, and `cluster` is found from cluster membership
//! when a query asks (a host may join or leave clusters; its history stays
//! its own). Points are buffered in memory and written by the registry's
//! flusher in batches ([`LiveMetrics::flush`]); rollups to minutes and hours
//! and pruning run from the manager's maintenance ([`roll_up`], [`prune`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use drover_api::metrics::{Agg, MetricQuery, QueryResult, Resolution, SeriesInfo, SeriesQuery, SeriesValues, Stat};

use promql_parser::label::{MatchOp, Matcher};

use super::access::Visible;
use super::{Actor, DomainError, Permission, Result, Scope};
use crate::AppState;
use crate::desired::DesiredRole;
use crate::model::{HostMetrics, now_millis, rfc3339};
use crate::store::{PointTable, SeriesRec, Store};

/// Metrics every host reports with its heartbeat.
pub const HOST_METRICS: [&str; 12] = [
    "host_cpu_percent",
    "host_memory_used_bytes",
    "host_memory_total_bytes",
    "host_load1",
    "host_load5",
    "host_load15",
    "host_disk_used_bytes",
    "host_disk_total_bytes",
    "host_disk_used_ratio",
    "host_network_rx_bytes_total",
    "host_network_tx_bytes_total",
    "host_uptime_seconds",
];

/// Metrics of every supervised role's process (one list with the dashboards' check).
pub const ROLE_METRICS: &[&str] = drover_service_types::dashboard::ROLE_PROCESS_METRICS;

/// The labels the manager sets; a sample may not carry them itself.
pub const ENTITY_LABELS: [&str; 5] = ["cluster", "service", "role", "role_type", "host"];

/// The most steps a query answers per series.
pub const MAX_POINTS_PER_SERIES: u64 = 11_000;

/// Points queued for the flusher at most (about 48 MB): beyond, while the
/// database is down, new points are dropped and counted.
const MAX_PENDING_POINTS: usize = 2_000_000;

/// A series whose latest value is older than this is left out of the
/// Prometheus exposition (its entity stopped reporting).
const STALE_AFTER_MS: i64 = 5 * 60_000;

/// How far a sample's own time may be from the manager's clock; beyond, the
/// time it arrived is used.
const MAX_CLOCK_SKEW_MS: i64 = 10 * 60_000;

const MAX_LABELS: usize = 16;
const MAX_NAME_LEN: usize = 200;
const MAX_LABEL_VALUE_LEN: usize = 1024;

// ---------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------

/// Labels of a series, by name.
type LabelMap = BTreeMap<String, String>;

/// A point waiting for the flusher: series index, Unix seconds, value.
type QueuedPoint = (u32, i64, f64);

/// A role's process figures from a heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    pub open_fds: u32,
    pub uptime_seconds: u64,
    pub restarts: u32,
    pub last_exit_status: i32,
}

/// One service metric value as an agent's collector produced it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub name: String,
    pub value: f64,
    pub labels: BTreeMap<String, String>,
    /// Unix milliseconds; 0: when it arrived.
    pub at_ms: i64,
}

/// What a heartbeat says about one role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleReport {
    pub role_id: String,
    /// `None` while the role has no running process.
    pub process: Option<ProcessFigures>,
    pub samples: Vec<Sample>,
    pub collect_error: String,
}

/// Whether `name` is a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not
/// starting with `__`.
pub fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with("__")
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a sample is refused, or `None` when it is fine.
pub fn sample_problem(s: &Sample) -> Option<String> {
    if !valid_metric_name(&s.name) {
        return Some(format!("invalid metric name {:?}", s.name));
    }
    if HOST_METRICS.contains(&s.name.as_str()) || ROLE_METRICS.contains(&s.name.as_str()) {
        return Some(format!("metric name {} is the manager's own", s.name));
    }
    if !s.value.is_finite() {
        return Some(format!("{}: value {} is not finite", s.name, s.value));
    }
    if s.labels.len() > MAX_LABELS {
        return Some(format!("{}: {} labels, at most {MAX_LABELS}", s.name, s.labels.len()));
    }
    for (k, v) in &s.labels {
        if !valid_label_name(k) {
            return Some(format!("{}: invalid label name {k:?}", s.name));
        }
        if ENTITY_LABELS.contains(&k.as_str()) {
            return Some(format!("{}: label {k} is set by the manager", s.name));
        }
        if v.len() > MAX_LABEL_VALUE_LEN {
            return Some(format!("{}: label {k} is longer than {MAX_LABEL_VALUE_LEN} bytes", s.name));
        }
    }
    None
}

/// Who a series is about: a host or a role, with the attributes its labels
/// are made of. Shared by every series of the entity.
#[derive(Debug)]
struct EntityInfo {
    kind: &'static str,
    id: String,
    host_id: String,
    cluster: String,
    service: String,
    role: String,
    role_type: String,
    host: String,
}

impl EntityInfo {
    /// Labels as queries see them (host series get `cluster` later), with
    /// the extra labels of a sample.
    fn labels(&self, extra: &LabelMap) -> LabelMap {
        let mut l = extra.clone();
        for (k, v) in [
            ("cluster", &self.cluster),
            ("service", &self.service),
            ("role", &self.role),
            ("role_type", &self.role_type),
            ("host", &self.host),
        ] {
            if !v.is_empty() {
                l.insert(k.to_owned(), v.clone());
            }
        }
        l
    }
}

/// The series of one entity that share one set of extra labels.
#[derive(Debug)]
struct LabelSet {
    /// The full labels (entity's and extra), shared by the series.
    labels: Arc<LabelMap>,
    /// Canonical JSON of the extra labels, as stored.
    extra_json: Arc<str>,
    /// Series index by metric name: a list, not a map. A set holds a
    /// dozen names or so, found by a scan as fast as by hashing, and
    /// 200,000 small hash maps were 14 MiB of a 10,000-host manager.
    by_name: Vec<(Arc<str>, u32)>,
}

/// An entity's series, by their extra labels' canonical JSON (a host has
/// one set per disk mount and one without extra labels; a list, as above).
#[derive(Debug)]
struct EntitySeries {
    info: Arc<EntityInfo>,
    sets: Vec<LabelSet>,
}

#[derive(Debug, Clone)]
struct SeriesEntry {
    name: Arc<str>,
    entity: Arc<EntityInfo>,
    extra_json: Arc<str>,
    labels: Arc<LabelMap>,
    id: Option<i64>,
    /// Latest value and its time (Unix ms), since the manager started.
    last: Option<(i64, f64)>,
}

impl SeriesEntry {
    fn record(&self) -> SeriesRec {
        let e = &self.entity;
        SeriesRec {
            id: 0,
            name: self.name.to_string(),
            entity_kind: e.kind.to_owned(),
            entity_id: e.id.clone(),
            host_id: e.host_id.clone(),
            cluster: e.cluster.clone(),
            service: e.service.clone(),
            role: e.role.clone(),
            role_type: e.role_type.clone(),
            host: e.host.clone(),
            labels: self.extra_json.to_string(),
            created_at: now_millis(),
        }
    }
}

/// Who a point is about.
struct Entity<'a> {
    kind: &'static str,
    id: &'a str,
    host_id: &'a str,
    host: &'a str,
    role: Option<(&'a str, &'a str, &'a str, &'a str)>,
}

/// The canonical JSON of extra labels (sorted keys).
fn extra_json(extra: &LabelMap) -> String {
    if extra.is_empty() { "{}".to_owned() } else { serde_json::to_string(extra).unwrap_or_else(|_| "{}".into()) }
}

/// The series index: series by entity, extra labels and name (a point finds
/// its series without allocating), and by metric name (what rules and
/// queries read). Labels are built once per entity and label set and shared.
#[derive(Debug, Default)]
struct Inner {
    hosts: HashMap<String, EntitySeries>,
    roles: HashMap<String, EntitySeries>,
    series: Vec<SeriesEntry>,
    by_name: BTreeMap<Arc<str>, Vec<u32>>,
    /// `(series index, Unix seconds, value)` waiting for the flusher.
    pending: Vec<(u32, i64, f64)>,
}

impl Inner {
    /// The index of the series, created when new.
    fn series_index(
        &mut self,
        info: impl FnOnce() -> EntityInfo,
        kind: &'static str,
        entity_id: &str,
        name: &str,
        extra: &LabelMap,
        json: Option<&str>,
    ) -> u32 {
        let entities = if kind == "host" { &mut self.hosts } else { &mut self.roles };
        if !entities.contains_key(entity_id) {
            entities.insert(entity_id.to_owned(), EntitySeries { info: Arc::new(info()), sets: Vec::new() });
        }
        let entity = entities.get_mut(entity_id).expect("entity just inserted");
        let owned_json;
        let json = match json {
            Some(j) => j,
            None => {
                owned_json = extra_json(extra);
                &owned_json
            }
        };
        let set = match entity.sets.iter().position(|s| &*s.extra_json == json) {
            Some(at) => &mut entity.sets[at],
            None => {
                let labels = Arc::new(entity.info.labels(extra));
                entity.sets.push(LabelSet { labels, extra_json: Arc::from(json), by_name: Vec::new() });
                entity.sets.last_mut().expect("label set just pushed")
            }
        };
        if let Some((_, i)) = set.by_name.iter().find(|(n, _)| &**n == name) {
            return *i;
        }
        let i = self.series.len() as u32;
        let name: Arc<str> = match self.by_name.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        self.series.push(SeriesEntry {
            name: name.clone(),
            entity: entity.info.clone(),
            extra_json: set.extra_json.clone(),
            labels: set.labels.clone(),
            id: None,
            last: None,
        });
        set.by_name.push((name.clone(), i));
        self.by_name.entry(name).or_default().push(i);
        i
    }

    fn point(&mut self, e: &Entity<'_>, name: &str, extra: &LabelMap, at_ms: i64, value: f64) -> bool {
        let info = || {
            let (cluster, service, role, role_type) = e.role.unwrap_or_default();
            EntityInfo {
                kind: e.kind,
                id: e.id.to_owned(),
                host_id: e.host_id.to_owned(),
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                role: role.to_owned(),
                role_type: role_type.to_owned(),
                host: e.host.to_owned(),
            }
        };
        let json = extra.is_empty().then_some("{}");
        let idx = self.series_index(info, e.kind, e.id, name, extra, json);
        let entry = &mut self.series[idx as usize];
        if entry.last.is_none_or(|(t, _)| t <= at_ms) {
            entry.last = Some((at_ms, value));
        }
        if self.pending.len() >= MAX_PENDING_POINTS {
            return false;
        }
        self.pending.push((idx, at_ms.div_euclid(1000), value));
        true
    }
}

/// Ingest counters, for the manager's own metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub series: u64,
    pub points: u64,
    pub points_written: u64,
    pub points_dropped: u64,
    pub samples_invalid: u64,
    pub roles_unknown: u64,
}

/// The series the manager knows, each one's latest value, and the points
/// waiting for the flusher.
#[derive(Debug, Default)]
pub struct LiveMetrics {
    inner: Mutex<Inner>,
    points: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    invalid: AtomicU64,
    unknown_roles: AtomicU64,
}

impl LiveMetrics {
    /// The index of `rows`, as if read from the store.
    #[cfg(test)]
    fn load(rows: Vec<SeriesRec>) -> LiveMetrics {
        let metrics = LiveMetrics::default();
        rows.into_iter().for_each(|r| metrics.add_stored(r));
        metrics
    }

    /// The labels of an entity's own series (`kind` `host` or `role`, no extra labels), the
    /// map every such series shares; `None` before the entity's first point.
    pub fn entity_labels(&self, kind: &str, id: &str) -> Option<Arc<LabelMap>> {
        let inner = self.inner.lock().expect("metrics lock");
        let entities = if kind == "host" { &inner.hosts } else { &inner.roles };
        entities.get(id)?.sets.iter().find(|s| &*s.extra_json == "{}").map(|s| s.labels.clone())
    }

    /// The index of the series in `store`, read one row at a time.
    pub async fn load_from(store: &Store) -> crate::store::Result<LiveMetrics> {
        let metrics = LiveMetrics::default();
        store.each_series(|r| metrics.add_stored(r)).await?;
        Ok(metrics)
    }

    /// Adds a stored series to the index.
    fn add_stored(&self, r: SeriesRec) {
        let mut guard = self.inner.lock().expect("metrics lock");
        let inner: &mut Inner = &mut guard;
        let Some(kind) = ["host", "role"].into_iter().find(|k| *k == r.entity_kind) else { return };
        let extra: LabelMap = serde_json::from_str(&r.labels).unwrap_or_default();
        let info = || EntityInfo {
            kind,
            id: r.entity_id.clone(),
            host_id: r.host_id.clone(),
            cluster: r.cluster.clone(),
            service: r.service.clone(),
            role: r.role.clone(),
            role_type: r.role_type.clone(),
            host: r.host.clone(),
        };
        let i = inner.series_index(info, kind, &r.entity_id, &r.name, &extra, Some(&r.labels));
        inner.series[i as usize].id = Some(r.id);
    }

    /// Records a heartbeat's host metrics and role reports (with each
    /// role's desired state, `None` when the manager does not know it: its
    /// report is dropped and counted).
    pub fn record(
        &self,
        host_id: &str,
        hostname: &str,
        now_ms: i64,
        m: &HostMetrics,
        roles: &[(RoleReport, Option<std::sync::Arc<DesiredRole>>)],
    ) {
        let none = BTreeMap::new();
        let host = Entity { kind: "host", id: host_id, host_id, host: hostname, role: None };
        let mut accepted = 0u64;
        let mut refused = 0u64;
        let mut guard = self.inner.lock().expect("metrics lock");
        let inner: &mut Inner = &mut guard;
        let mut put = |inner: &mut Inner, e: &Entity<'_>, name: &str, extra: &BTreeMap<String, String>, at, v| {
            if inner.point(e, name, extra, at, v) {
                accepted += 1;
            } else {
                refused += 1;
            }
        };
        for (name, v) in [
            ("host_cpu_percent", m.cpu_percent),
            ("host_memory_used_bytes", m.memory_used_bytes as f64),
            ("host_memory_total_bytes", m.memory_total_bytes as f64),
            ("host_load1", m.load1),
            ("host_load5", m.load5),
            ("host_load15", m.load15),
            ("host_network_rx_bytes_total", m.network_rx_bytes as f64),
            ("host_network_tx_bytes_total", m.network_tx_bytes as f64),
            ("host_uptime_seconds", m.uptime_seconds as f64),
        ] {
            put(inner, &host, name, &none, now_ms, v);
        }
        for d in &m.disks {
            let mount = BTreeMap::from([("mount".to_owned(), d.mount_point.clone())]);
            put(inner, &host, "host_disk_used_bytes", &mount, now_ms, d.used_bytes as f64);
            put(inner, &host, "host_disk_total_bytes", &mount, now_ms, d.total_bytes as f64);
            if d.total_bytes > 0 {
                put(inner, &host, "host_disk_used_ratio", &mount, now_ms, d.used_bytes as f64 / d.total_bytes as f64);
            }
        }
        for (report, desired) in roles {
            let Some(desired) = desired else {
                self.unknown_roles.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (cluster, service) = desired.service.split_once('/').unwrap_or(("", desired.service.as_str()));
            let role = Entity {
                kind: "role",
                id: &report.role_id,
                host_id,
                host: hostname,
                role: Some((cluster, service, &desired.name, &desired.role_type)),
            };
            put(inner, &role, "role_up", &none, now_ms, if report.process.is_some() { 1.0 } else { 0.0 });
            if let Some(p) = &report.process {
                for (name, v) in [
                    ("role_cpu_percent", if p.cpu_percent.is_finite() { p.cpu_percent.max(0.0) } else { 0.0 }),
                    ("role_memory_rss_bytes", p.rss_bytes as f64),
                    ("role_threads", f64::from(p.threads)),
                    ("role_open_fds", f64::from(p.open_fds)),
                    ("role_uptime_seconds", p.uptime_seconds as f64),
                    ("role_restarts_total", f64::from(p.restarts)),
                    ("role_last_exit_status", f64::from(p.last_exit_status)),
                ] {
                    put(inner, &role, name, &none, now_ms, v);
                }
            }
            for s in &report.samples {
                if let Some(problem) = sample_problem(s) {
                    self.invalid.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(host = %host_id, role = %report.role_id, %problem, "sample dropped");
                    continue;
                }
                let at = if s.at_ms <= 0 || (s.at_ms - now_ms).abs() > MAX_CLOCK_SKEW_MS { now_ms } else { s.at_ms };
                put(inner, &role, &s.name, &s.labels, at, s.value);
            }
        }
        drop(guard);
        self.points.fetch_add(accepted, Ordering::Relaxed);
        if refused > 0 {
            self.dropped.fetch_add(refused, Ordering::Relaxed);
        }
    }

    /// Writes the queued points (creating new series first). On failure the
    /// points are queued again, as many as the bound allows.
    pub async fn flush(&self, store: &Store) -> crate::store::Result<usize> {
        let (pending, new): (Vec<QueuedPoint>, Vec<(u32, SeriesRec)>) = {
            let mut inner = self.inner.lock().expect("metrics lock");
            let pending = std::mem::take(&mut inner.pending);
            let mut seen = BTreeSet::new();
            let new = pending
                .iter()
                .filter(|(i, _, _)| inner.series[*i as usize].id.is_none() && seen.insert(*i))
                .map(|(i, _, _)| (*i, inner.series[*i as usize].record()))
                .collect();
            (pending, new)
        };
        if pending.is_empty() {
            return Ok(0);
        }
        if !new.is_empty() {
            let (indexes, records): (Vec<u32>, Vec<SeriesRec>) = new.into_iter().unzip();
            match store.ensure_series(&records).await {
                Ok(ids) => {
                    drop(records);
                    let mut inner = self.inner.lock().expect("metrics lock");
                    for (i, id) in indexes.iter().zip(ids) {
                        inner.series[*i as usize].id = Some(id);
                    }
                }
                Err(e) => {
                    self.requeue(pending);
                    return Err(e);
                }
            }
        }
        let rows: Vec<(i64, i64, f64)> = {
            let inner = self.inner.lock().expect("metrics lock");
            pending.iter().filter_map(|(i, t, v)| inner.series[*i as usize].id.map(|id| (id, *t, *v))).collect()
        };
        match store.insert_points(&rows).await {
            Ok(_) => {
                self.written.fetch_add(rows.len() as u64, Ordering::Relaxed);
                Ok(rows.len())
            }
            Err(e) => {
                self.requeue(pending);
                Err(e)
            }
        }
    }

    fn requeue(&self, mut older: Vec<(u32, i64, f64)>) {
        let mut inner = self.inner.lock().expect("metrics lock");
        let room = MAX_PENDING_POINTS.saturating_sub(inner.pending.len());
        if older.len() > room {
            // Keep the newest of the older points.
            let lost = older.len() - room;
            older.drain(..lost);
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        }
        older.append(&mut inner.pending);
        inner.pending = older;
    }

    pub fn stats(&self) -> IngestStats {
        let series = self.inner.lock().expect("metrics lock").series.len() as u64;
        IngestStats {
            series,
            points: self.points.load(Ordering::Relaxed),
            points_written: self.written.load(Ordering::Relaxed),
            points_dropped: self.dropped.load(Ordering::Relaxed),
            samples_invalid: self.invalid.load(Ordering::Relaxed),
            roles_unknown: self.unknown_roles.load(Ordering::Relaxed),
        }
    }

    /// Whether a series of `name` exists.
    pub fn has_name(&self, name: &str) -> bool {
        self.inner.lock().expect("metrics lock").by_name.contains_key(name)
    }

    /// Every metric name that has series.
    pub fn names(&self) -> Vec<String> {
        self.inner.lock().expect("metrics lock").by_name.keys().map(|k| k.to_string()).collect()
    }

    /// The latest value and its time (Unix ms) of every series of `name` that has one, with
    /// its labels (host series without `cluster`), shared: what alert rules and health tests
    /// read. Labels are cloned by the caller only for the series it keeps.
    pub fn latest(&self, name: &str) -> Vec<(Arc<LabelMap>, i64, f64)> {
        let inner = self.inner.lock().expect("metrics lock");
        inner
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let e = &inner.series[*i as usize];
                e.last.map(|(at, v)| (e.labels.clone(), at, v))
            })
            .collect()
    }

    /// The series of `name` (all when `None`), as views.
    fn views(&self, name: Option<&str>) -> Vec<View> {
        let inner = self.inner.lock().expect("metrics lock");
        let view = |e: &SeriesEntry| View {
            id: e.id,
            name: e.name.clone(),
            entity: e.entity.clone(),
            labels: e.labels.clone(),
            last: e.last,
        };
        match name {
            Some(n) => inner.by_name.get(n).into_iter().flatten().map(|i| view(&inner.series[*i as usize])).collect(),
            None => inner.series.iter().map(view).collect(),
        }
    }
}

/// A series as a query sees it.
#[derive(Debug, Clone)]
struct View {
    id: Option<i64>,
    name: Arc<str>,
    entity: Arc<EntityInfo>,
    /// Shared until a host series gets its `cluster` label.
    labels: Arc<LabelMap>,
    last: Option<(i64, f64)>,
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

/// `name{label="v",...}`: a metric name (optional for a series list) and
/// label matchers (`=`, `!=`, `=~`, `!~`; regular expressions anchored).
#[derive(Debug, Clone)]
pub struct Selector {
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Whether the labels match every matcher (a missing label is `""`).
    pub fn matches(&self, labels: &LabelMap) -> bool {
        self.matchers.iter().all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
    }

    /// Whether the labels match every matcher not on label `except`.
    fn matches_except(&self, labels: &LabelMap, except: &str) -> bool {
        self.matchers
            .iter()
            .filter(|m| m.name != except)
            .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
    }
}

/// How a selector is written, for error messages.
const SELECTOR_FORM: &str = "write a metric name and optional label matchers with values in double quotes, \
                             e.g. host_disk_used_ratio{host=\"a\",mount=~\"/.*\"}";

/// Parses a PromQL series selector (`promql-parser`), naming what is wrong
/// with a bad one.
pub fn parse_selector(text: &str) -> Result<Selector> {
    use promql_parser::parser::Expr;
    let bad = |why: String| DomainError::Invalid(format!("invalid series selector {text:?}: {why}"));
    let s = text.trim();
    if s.is_empty() {
        return Err(bad("it is empty; write a metric name such as host_cpu_percent".into()));
    }
    let name_end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len());
    if name_end > 0 && !valid_metric_name(&s[..name_end]) {
        return Err(bad(format!("{:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", &s[..name_end])));
    }
    let vs = match promql_parser::parser::parse(s) {
        Ok(Expr::VectorSelector(vs)) => vs,
        Ok(_) => return Err(bad(format!("it is not a series selector; {SELECTOR_FORM}"))),
        Err(e) => {
            let e = e.trim_end_matches('.');
            let why = match e.strip_prefix("illegal regex for ") {
                Some(re) => format!("invalid regular expression {re:?}"),
                None if e == "invalid promql query" => "it does not parse".to_owned(),
                None => e.to_owned(),
            };
            return Err(bad(format!("{why}; {SELECTOR_FORM}")));
        }
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(bad("`offset` and `@` are not supported".into()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(bad("`or` between label matchers is not supported".into()));
    }
    let mut name = vs.name;
    let mut matchers = Vec::new();
    for m in vs.matchers.matchers {
        if m.name == "__name__" {
            match m.op {
                MatchOp::Equal if valid_metric_name(&m.value) => name = Some(m.value),
                _ => return Err(bad("match the metric name exactly (`__name__=\"...\"`)".into())),
            }
        } else if !valid_label_name(&m.name) {
            return Err(bad(format!("{:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)", m.name)));
        } else {
            matchers.push(m);
        }
    }
    Ok(Selector { name, matchers })
}

// ---------------------------------------------------------------------------
// Visibility and labels
// ---------------------------------------------------------------------------

/// Clusters of each host, and who may see what.
struct Scoped {
    clusters_of: HashMap<String, Vec<String>>,
    visible: Visible,
}

impl Scoped {
    async fn load(state: &AppState, actor: &Actor) -> Result<Scoped> {
        let mut scoped = Scoped::check(actor)?;
        for (cluster, host) in state.store.cluster_members().await? {
            scoped.clusters_of.entry(host).or_default().push(cluster);
        }
        Ok(scoped)
    }

    /// The caller's scope without cluster memberships (see [`Scoped::load_hosts`]).
    fn check(actor: &Actor) -> Result<Scoped> {
        actor.require(Permission::Read, Scope::Any)?;
        Ok(Scoped { clusters_of: HashMap::new(), visible: actor.visible() })
    }

    /// The cluster memberships of the hosts of the host series among `views`.
    async fn load_hosts(&mut self, state: &AppState, views: &[View]) -> Result<()> {
        let hosts: BTreeSet<&str> =
            views.iter().filter(|v| v.entity.kind == "host").map(|v| v.entity.host_id.as_str()).collect();
        if hosts.is_empty() {
            return Ok(());
        }
        let hosts: Vec<&str> = hosts.into_iter().collect();
        for (cluster, host) in state.store.clusters_of_hosts(&hosts).await? {
            self.clusters_of.entry(host).or_default().push(cluster);
        }
        Ok(())
    }

    /// The view with a host series' `cluster` label, if the caller may see it.
    fn admit(&self, mut v: View) -> Option<View> {
        if v.entity.kind == "host" {
            let clusters = self.clusters_of.get(&v.entity.host_id).map(Vec::as_slice).unwrap_or_default();
            if !matches!(self.visible, Visible::All) && !clusters.iter().any(|c| self.visible.contains(c)) {
                return None;
            }
            if !clusters.is_empty() {
                Arc::make_mut(&mut v.labels).insert("cluster".into(), clusters.join(","));
            }
            Some(v)
        } else {
            let cluster = v.labels.get("cluster").map_or("", String::as_str);
            self.visible.contains(cluster).then_some(v)
        }
    }
}

fn known_name(state: &AppState, name: &str) -> bool {
    HOST_METRICS.contains(&name) || ROLE_METRICS.contains(&name) || state.registry.metrics.has_name(name)
}

// ---------------------------------------------------------------------------
// Query
// ---------------------------------------------------------------------------

fn parse_time(what: &str, s: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| DomainError::Invalid(format!("{what} must be an RFC 3339 time such as 2026-01-02T03:04:05Z: {e}")))
}

/// The retention of each resolution, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw: Duration,
    pub minute: Duration,
    pub hour: Duration,
}

impl Retention {
    pub fn of(state: &AppState) -> Retention {
        Retention {
            raw: state.config.metrics_raw_retention,
            minute: state.config.metrics_minute_retention,
            hour: state.config.metrics_hour_retention,
        }
    }
}

/// The resolution and step (seconds) of a query over `[from, to)` (ms) at
/// `now`: raw while the range is within raw retention and the step under a
/// minute, minutes within minute retention and a step under an hour, else
/// hours; the step rounded up to the resolution.
pub fn plan(from: i64, to: i64, step: Option<Duration>, now: i64, retention: Retention) -> Result<(Resolution, u64)> {
    let range_s = ((to - from) as u64).div_ceil(1000).max(1);
    let wanted = match step {
        Some(d) => {
            if d < Duration::from_secs(1) {
                return Err(DomainError::Invalid(format!(
                    "step must be at least 1s, got {}",
                    humantime::format_duration(d)
                )));
            }
            (d.as_millis().div_ceil(1000)).min(u128::from(u64::MAX / 2)) as u64
        }
        None => range_s.div_ceil(300).max(1),
    };
    let within = |keep: Duration| from >= now.saturating_sub(keep.as_millis().min(i64::MAX as u128) as i64);
    let resolution = if wanted < 60 && within(retention.raw) {
        Resolution::Raw
    } else if wanted < 3600 && within(retention.minute) {
        Resolution::Minute
    } else {
        Resolution::Hour
    };
    let step = wanted.div_ceil(resolution.seconds()) * resolution.seconds();
    let first = from.div_euclid(1000).div_euclid(step as i64) * step as i64;
    let last = to.div_euclid(1000) + i64::from(to.rem_euclid(1000) > 0);
    let points = ((last - first).max(1) as u64).div_ceil(step);
    if points > MAX_POINTS_PER_SERIES {
        let least = range_s.div_ceil(MAX_POINTS_PER_SERIES - 1);
        return Err(DomainError::Invalid(format!(
            "step {step}s makes {points} points per series over this range, more than {MAX_POINTS_PER_SERIES}: \
             use a step of at least {least}s or a shorter range"
        )));
    }
    Ok((resolution, step))
}

/// One step's values across the series of a group.
#[derive(Debug, Clone, Copy, Default)]
struct Across {
    sum: f64,
    min: f64,
    max: f64,
    n: u64,
}

fn to_values(labels: BTreeMap<String, String>, steps: BTreeMap<i64, f64>) -> SeriesValues {
    let (timestamps, values) = steps.into_iter().filter(|(_, v)| v.is_finite()).map(|(t, v)| (t * 1000, v)).unzip();
    SeriesValues { labels, timestamps, values }
}

/// `GET /api/v1/metrics/query`: the steps of the series a selector picks,
/// alone or aggregated.
pub async fn query(state: &AppState, actor: &Actor, q: &MetricQuery) -> Result<QueryResult> {
    let mut scoped = Scoped::check(actor)?;
    let selector = parse_selector(&q.series)?;
    let Some(name) = selector.name.clone() else {
        return Err(DomainError::Invalid(format!(
            "invalid series selector {:?}: a query needs a metric name, e.g. host_cpu_percent{{host=\"a\"}}",
            q.series
        )));
    };
    if !known_name(state, &name) {
        return Err(DomainError::Invalid(format!(
            "unknown metric {name}: no series of that name (GET /api/v1/metrics/series lists them)"
        )));
    }
    let stat = match q.stat.as_deref() {
        None => Stat::Avg,
        Some(s) => Stat::parse(s)
            .ok_or_else(|| DomainError::Invalid(format!("unknown stat {s:?}: use avg, min, max or last")))?,
    };
    let agg = match q.agg.as_deref() {
        None => Agg::None,
        Some(s) => Agg::parse(s)
            .ok_or_else(|| DomainError::Invalid(format!("unknown agg {s:?}: use none, sum, avg, min or max")))?,
    };
    let now = now_millis();
    let to = q.to.as_deref().map(|s| parse_time("to", s)).transpose()?.unwrap_or(now);
    let from = q.from.as_deref().map(|s| parse_time("from", s)).transpose()?.unwrap_or(to - 3_600_000);
    if from >= to {
        return Err(DomainError::Invalid(format!("from ({}) must be before to ({})", rfc3339(from), rfc3339(to))));
    }
    let step = q
        .step
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s.trim())
                .map_err(|e| DomainError::Invalid(format!("invalid step {s:?}: {e}; write e.g. 30s, 5m or 1h")))
        })
        .transpose()?;
    let (resolution, step) = plan(from, to, step, now, Retention::of(state))?;

    let candidates = state.registry.metrics.views(Some(&name));
    let by: Vec<String> = match q.by.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(_) if agg == Agg::None => {
            return Err(DomainError::Invalid("by needs agg (sum, avg, min or max) to aggregate with".into()));
        }
        Some(list) => {
            let mut known: BTreeSet<String> = ENTITY_LABELS.iter().map(|s| s.to_string()).collect();
            let mut seen_sets = HashSet::new();
            for v in &candidates {
                if seen_sets.insert(Arc::as_ptr(&v.labels)) {
                    known.extend(v.labels.keys().cloned());
                }
            }
            let mut by = Vec::new();
            for l in list.split(',').map(str::trim) {
                if !known.contains(l) {
                    return Err(DomainError::Invalid(format!(
                        "unknown label {l:?} in by: {name} has the labels {}",
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                if !by.iter().any(|b| b == l) {
                    by.push(l.to_owned());
                }
            }
            by
        }
    };
    // The matchers on labels other than `cluster` first: a host series gets
    // its `cluster` label (a copy of its labels) only when it may match.
    let picked: Vec<View> =
        candidates.into_iter().filter(|v| v.id.is_some() && selector.matches_except(&v.labels, "cluster")).collect();
    scoped.load_hosts(state, &picked).await?;
    let series: Vec<View> =
        picked.into_iter().filter_map(|v| scoped.admit(v)).filter(|v| selector.matches(&v.labels)).collect();
    let (resolution, step) = if agg != Agg::None {
        coarser_for_many(resolution, step, series.len(), (from, to), now, Retention::of(state))
    } else {
        (resolution, step)
    };
    let table = match resolution {
        Resolution::Raw => PointTable::Raw,
        Resolution::Minute => PointTable::Minute,
        Resolution::Hour => PointTable::Hour,
    };
    let step_s = step as i64;
    let from_s = from.div_euclid(1000).div_euclid(step_s) * step_s;
    let to_s = to.div_euclid(1000) + i64::from(to.rem_euclid(1000) > 0);
    let mut out = Vec::new();
    if agg == Agg::None {
        let ids: Vec<i64> = series.iter().filter_map(|v| v.id).collect();
        let mut by_id: HashMap<i64, BTreeMap<i64, f64>> = HashMap::new();
        for (id, t, v) in state.store.series_steps(table, &ids, from_s, to_s, step_s, stat).await? {
            by_id.entry(id).or_default().insert(t, v);
        }
        for v in series {
            let steps = v.id.and_then(|id| by_id.remove(&id)).unwrap_or_default();
            out.push(to_values(Arc::unwrap_or_clone(v.labels), steps));
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
    } else {
        // Series grouped by their values of `by`, each step computed by the
        // database across the group's series.
        let mut keys: BTreeMap<LabelMap, u32> = BTreeMap::new();
        let mut pairs = Vec::with_capacity(series.len());
        for v in &series {
            let key: LabelMap = by.iter().map(|l| (l.clone(), v.labels.get(l).cloned().unwrap_or_default())).collect();
            let next = keys.len() as u32;
            let group = *keys.entry(key).or_insert(next);
            if let Some(id) = v.id {
                pairs.push((id, group));
            }
        }
        let mut groups: Vec<BTreeMap<i64, Across>> = vec![BTreeMap::new(); keys.len()];
        for g in state.store.group_steps(table, &pairs, from_s, to_s, step_s, stat).await? {
            let Some(steps) = groups.get_mut(g.group as usize) else { continue };
            let e = steps.entry(g.t).or_insert(Across { sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, n: 0 });
            e.sum += g.sum;
            e.min = e.min.min(g.min);
            e.max = e.max.max(g.max);
            e.n += g.n.max(0) as u64;
        }
        for (labels, group) in keys {
            let values = std::mem::take(&mut groups[group as usize])
                .into_iter()
                .filter(|(_, a)| a.n > 0)
                .map(|(t, a)| {
                    let v = match agg {
                        Agg::Sum => a.sum,
                        Agg::Avg => a.sum / a.n as f64,
                        Agg::Min => a.min,
                        Agg::Max | Agg::None => a.max,
                    };
                    (t, v)
                })
                .collect();
            out.push(to_values(labels, values));
        }
    }
    Ok(QueryResult { metric: name, from: rfc3339(from), to: rfc3339(to), step_seconds: step, resolution, series: out })
}

/// Raw points an aggregate may read at most before it reads minute rollups
/// instead (an estimate: one point per series every 10 s).
const AGGREGATE_RAW_POINTS: u64 = 500_000;

/// An aggregate over so many series and so long a range that it would read
/// more than [`AGGREGATE_RAW_POINTS`] raw points reads minute rollups (a step
/// of whole minutes) when they cover the range.
fn coarser_for_many(
    resolution: Resolution,
    step: u64,
    series: usize,
    (from, to): (i64, i64),
    now: i64,
    retention: Retention,
) -> (Resolution, u64) {
    let range_s = (to - from).max(0) as u64 / 1000;
    let estimate = (series as u64).saturating_mul(range_s / 10);
    let minutes_cover = from >= now.saturating_sub(retention.minute.as_millis().min(i64::MAX as u128) as i64);
    if resolution == Resolution::Raw && estimate > AGGREGATE_RAW_POINTS && minutes_cover {
        (Resolution::Minute, step.div_ceil(60) * 60)
    } else {
        (resolution, step)
    }
}

/// `GET /api/v1/metrics/series`: the series a selector picks (all without
/// one) that the caller may see, with their latest values.
pub async fn series(state: &AppState, actor: &Actor, selector: Option<&str>) -> Result<Vec<SeriesInfo>> {
    let scoped = Scoped::load(state, actor).await?;
    let selector = selector.map(parse_selector).transpose()?;
    let name = selector.as_ref().and_then(|s| s.name.as_deref());
    let mut out: Vec<SeriesInfo> = state
        .registry
        .metrics
        .views(name)
        .into_iter()
        .filter_map(|v| scoped.admit(v))
        .filter(|v| selector.as_ref().is_none_or(|s| s.matches(&v.labels)))
        .map(|v| SeriesInfo {
            metric: v.name.to_string(),
            entity: v.entity.kind.to_owned(),
            labels: Arc::unwrap_or_clone(v.labels),
            last_value: v.last.map(|(_, x)| x),
            last_at: v.last.map(|(t, _)| rfc3339(t)),
        })
        .collect();
    out.sort_by(|a, b| (&a.metric, &a.labels).cmp(&(&b.metric, &b.labels)));
    Ok(out)
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `GET /api/v1/metrics/prometheus`: the latest value of every series the
/// caller may see that reported in the last five minutes, in the Prometheus
/// text exposition format (0.0.4), from memory.
pub async fn prometheus(state: &AppState, actor: &Actor) -> Result<String> {
    use std::fmt::Write;
    let scoped = Scoped::load(state, actor).await?;
    let now = now_millis();
    let mut by_name: BTreeMap<String, Vec<(Arc<LabelMap>, f64)>> = BTreeMap::new();
    for v in state.registry.metrics.views(None) {
        let Some((t, x)) = v.last else { continue };
        if now - t > STALE_AFTER_MS {
            continue;
        }
        let Some(v) = scoped.admit(v) else { continue };
        by_name.entry(v.name.to_string()).or_default().push((v.labels, x));
    }
    let mut out = String::new();
    for (name, mut series) in by_name {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, x) in series {
            out.push_str(&name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {x}");
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------

/// How far back each run recomputes minute rollups: a point that arrives
/// later than this after its minute is kept raw but not in the rollups.
const ROLLUP_MINUTES_BACK_S: i64 = 180;

/// Minutes into an hour from which the hour before is rolled up (from the
/// minute rollups, once complete); the window is two runs wide so a delayed
/// run does not miss it.
const ROLLUP_HOUR_AFTER: std::ops::Range<i64> = 5..7;

/// Rolls points up, at `now` (ms), run every minute: the minute rollups of
/// the last three minutes (the current one so far) and, in minutes 5 and 6
/// of an hour, the hour rollup of the hour before. Each run reads what it
/// rolls up only, series by series (through the primary key): at 500,000
/// series the work per run stays that of three minutes of points, and the
/// current hour has no hour rollup until it is over.
pub async fn roll_up(store: &Store, now: i64) -> crate::store::Result<()> {
    let now_s = now.div_euclid(1000);
    store.rollup_minutes(now_s - ROLLUP_MINUTES_BACK_S, now_s + 60).await?;
    let this_hour = now_s - now_s.rem_euclid(3600);
    if ROLLUP_HOUR_AFTER.contains(&(now_s.rem_euclid(3600) / 60)) {
        store.rollup_hours(this_hour - 3600, this_hour).await?;
    }
    Ok(())
}

/// Deletes points older than each resolution's retention.
pub async fn prune(store: &Store, now: i64, retention: Retention) -> crate::store::Result<()> {
    let now_s = now.div_euclid(1000);
    for (table, keep) in
        [(PointTable::Raw, retention.raw), (PointTable::Minute, retention.minute), (PointTable::Hour, retention.hour)]
    {
        let keep = keep.as_secs().min(i64::MAX as u64 / 2) as i64;
        store.prune_points(table, now_s.saturating_sub(keep)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let s = parse_selector(r#"redis_used_memory_bytes{service="cache", role=~"cache-.*",host!="b",db!~"db1|db2"}"#)
            .unwrap();
        assert_eq!(s.name.as_deref(), Some("redis_used_memory_bytes"));
        assert_eq!(s.matchers.len(), 4);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(s.matches(&labels(&[("service", "cache"), ("role", "cache-1"), ("host", "a")])));
        assert!(!s.matches(&labels(&[("service", "cache"), ("role", "cache-1"), ("host", "b")])));
        assert!(!s.matches(&labels(&[("service", "cache"), ("role", "xcache-1")])), "regexes are anchored");
        assert!(!s.matches(&labels(&[("service", "cache"), ("role", "cache-1"), ("db", "db2")])));
        assert!(parse_selector("host_cpu_percent").unwrap().matchers.is_empty());
        assert!(parse_selector(r#"{service="a"}"#).unwrap().name.is_none());
        assert_eq!(parse_selector(r#"x{a="q\"\\"}"#).unwrap().matchers[0].value, "q\"\\");
        for (bad, says) in [
            ("", "empty"),
            ("1abc", "not a metric name"),
            ("x{a=b}", "expected string"),
            ("x{a=\"b\"", "unexpected end of input inside braces"),
            ("x{a~\"b\"}", "unexpected character inside braces: '~'"),
            ("x{a=~\"(\"}", "invalid regular expression \"(\""),
            ("x{9a=\"b\"}", "unexpected character inside braces: '9'"),
            ("x{a=\"b\"} y", "does not parse"),
            ("x y", "does not parse"),
            ("x{host=}", "does not parse"),
            ("x + 1", "not a series selector"),
            ("x[5m]", "not a series selector"),
            ("x offset 5m", "`offset` and `@` are not supported"),
            ("x{a=\"b\" or c=\"d\"}", "`or` between label matchers"),
            ("{__name__=~\"x.*\"}", "match the metric name exactly"),
        ] {
            let e = parse_selector(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.starts_with(&format!("invalid series selector {bad:?}: ")), "{e}");
        }
        let named = parse_selector(r#"{__name__="host_load1",host="a"}"#).unwrap();
        assert_eq!((named.name.as_deref(), named.matchers.len()), (Some("host_load1"), 1));
    }

    #[test]
    fn aggregates_over_many_series_read_minute_rollups() {
        let r = Retention {
            raw: Duration::from_secs(86_400),
            minute: Duration::from_secs(14 * 86_400),
            hour: Duration::from_secs(365 * 86_400),
        };
        let (now, h) = (1_700_000_000_000, 3_600_000);
        // 10,000 series over an hour: 3.6 M raw points; minutes, whole-minute steps.
        assert_eq!(coarser_for_many(Resolution::Raw, 12, 10_000, (now - h, now), now, r), (Resolution::Minute, 60));
        assert_eq!(coarser_for_many(Resolution::Raw, 90, 10_000, (now - h, now), now, r), (Resolution::Minute, 120));
        // A hundred series: raw points as planned.
        assert_eq!(coarser_for_many(Resolution::Raw, 12, 100, (now - h, now), now, r), (Resolution::Raw, 12));
        // Beyond minute retention, or already coarser: as planned.
        let old = now - 15 * 24 * h;
        assert_eq!(coarser_for_many(Resolution::Raw, 12, 10_000, (old, old + h), now, r), (Resolution::Raw, 12));
        assert_eq!(coarser_for_many(Resolution::Hour, 3600, 10_000, (now - h, now), now, r), (Resolution::Hour, 3600));
    }

    #[test]
    fn series_of_one_entity_share_their_labels_and_reload_by_key() {
        let m = HostMetrics {
            at: String::new(),
            cpu_percent: 5.0,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            load1: 0.5,
            load5: 0.5,
            load15: 0.5,
            disks: vec![crate::model::DiskUsage { mount_point: "/".into(), used_bytes: 1, total_bytes: 4 }],
            network_rx_bytes: 0,
            network_tx_bytes: 0,
            uptime_seconds: 1,
        };
        let now = 1_700_000_000_000;
        let live = LiveMetrics::default();
        live.record("h1", "h1.example", now, &m, &[]);
        live.record("h1", "h1.example", now + 10_000, &HostMetrics { cpu_percent: 7.0, ..m.clone() }, &[]);
        let stats = live.stats();
        assert_eq!((stats.series, stats.points), (12, 24));
        let cpu = live.latest("host_cpu_percent");
        assert_eq!(cpu.len(), 1);
        assert_eq!(*cpu[0].0, BTreeMap::from([("host".to_owned(), "h1.example".to_owned())]));
        assert_eq!((cpu[0].1, cpu[0].2), (now + 10_000, 7.0));
        let load = live.latest("host_load1");
        assert!(Arc::ptr_eq(&cpu[0].0, &load[0].0), "one label map for the entity's series");
        let own = live.entity_labels("host", "h1").expect("the host's own labels");
        assert!(Arc::ptr_eq(&own, &cpu[0].0), "the map its series share");
        assert!(live.entity_labels("host", "h2").is_none() && live.entity_labels("role", "h1").is_none());
        let ratio = live.latest("host_disk_used_ratio");
        assert_eq!(ratio[0].0.get("mount").map(String::as_str), Some("/"));
        assert_eq!(ratio[0].2, 0.25);
        assert!(live.latest("no_such_metric").is_empty());

        // Loaded from their records, the same series are found again.
        let records: Vec<SeriesRec> = {
            let inner = live.inner.lock().unwrap();
            inner.series.iter().enumerate().map(|(i, e)| SeriesRec { id: i as i64 + 1, ..e.record() }).collect()
        };
        let again = LiveMetrics::load(records);
        again.record("h1", "h1.example", now + 20_000, &m, &[]);
        assert_eq!(again.stats().series, 12);
        let inner = again.inner.lock().unwrap();
        assert!(inner.pending.iter().all(|(i, _, _)| inner.series[*i as usize].id.is_some()), "no new series");
    }

    #[test]
    fn plans_pick_resolution_and_step() {
        let r = Retention {
            raw: Duration::from_secs(86_400),
            minute: Duration::from_secs(14 * 86_400),
            hour: Duration::from_secs(365 * 86_400),
        };
        let now = 1_700_000_000_000;
        let h = 3_600_000;
        assert_eq!(plan(now - h, now, None, now, r).unwrap(), (Resolution::Raw, 12));
        assert_eq!(plan(now - 24 * h, now, None, now, r).unwrap(), (Resolution::Minute, 300));
        assert_eq!(plan(now - 2 * h, now, Some(Duration::from_secs(60)), now, r).unwrap(), (Resolution::Minute, 60));
        assert_eq!(plan(now - 30 * 24 * h, now, None, now, r).unwrap(), (Resolution::Hour, 10_800));
        assert_eq!(
            plan(now - 2 * 86_400_000, now - 47 * h, Some(Duration::from_secs(10)), now, r).unwrap(),
            (Resolution::Minute, 60),
            "beyond raw retention: minutes"
        );
        let e = plan(now - 24 * h, now, Some(Duration::from_secs(1)), now, r).unwrap_err().to_string();
        assert!(e.contains("more than 11000"), "{e}");
        assert!(plan(now - h, now, Some(Duration::from_millis(10)), now, r).is_err());
    }

    #[test]
    fn samples_are_validated() {
        let ok = Sample { name: "redis_connected_clients".into(), value: 3.0, ..Default::default() };
        assert_eq!(sample_problem(&ok), None);
        let bad = |f: &dyn Fn(&mut Sample)| {
            let mut s = ok.clone();
            f(&mut s);
            sample_problem(&s).unwrap()
        };
        assert!(bad(&|s| s.name = "9x".into()).contains("invalid metric name"));
        assert!(bad(&|s| s.value = f64::NAN).contains("not finite"));
        assert!(
            bad(&|s| {
                s.labels.insert("bad-key".into(), "v".into());
            })
            .contains("invalid label name")
        );
        assert!(
            bad(&|s| {
                s.labels.insert("host".into(), "v".into());
            })
            .contains("set by the manager")
        );
        assert!(bad(&|s| s.name = "host_cpu_percent".into()).contains("manager's own"));
    }
}
