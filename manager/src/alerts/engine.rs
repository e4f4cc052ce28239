//! One evaluation cycle: health tests over the fleet's state and metrics, the health roll-up,
//! the health states as metrics (`host_up`, `*_health_status`, ...), and the alert rules over
//! all of it. Pure: [`Fleet`] and a [`SeriesSource`] in, [`Cycle`] out; the task that gathers
//! them from the registry and acts on the transitions is in [`super::run`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use promql_parser::label::Matcher;
use rayon::prelude::*;
use serde::Serialize;

use super::FastMap;
use super::expr::{Cmp, Condition, EachWindow, ExprError, Grouping, Groups, Labels, SeriesSource, grouped};
use super::health::{Status, TestResult, Text, ThresholdTest, roll_up};
use super::state::{RuleState, Timing, Transition};

/// A host as the engine sees it.
#[derive(Debug, Clone)]
pub struct FleetHost {
    pub id: String,
    pub hostname: String,
    /// Connected (or within the lost-after grace).
    pub up: bool,
    pub clusters: Vec<String>,
}

/// A role as the engine sees it.
#[derive(Debug, Clone)]
pub struct FleetRole {
    pub id: String,
    pub cluster: String,
    pub service: String,
    pub service_type: String,
    pub name: String,
    pub role_type: String,
    pub hostname: String,
    pub host_up: bool,
    /// The desired run state is running.
    pub wanted_running: bool,
    /// As reported: `running`, `starting`, `stopped`, `failed`, ... (`unknown` before a report).
    pub state: String,
    /// `good`, `bad` or `unknown`, from the role's health checks.
    pub probe_health: String,
    pub last_error: String,
    /// How long the running process has lagged behind the desired config revision (0: not).
    pub stale_seconds: f64,
}

/// What the engine evaluates over, besides metrics.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub hosts: Vec<FleetHost>,
    pub roles: Vec<FleetRole>,
    /// Series the manager knows without an agent: `host_certificate_expires_in_seconds`,
    /// `parcel_distribution_failed` and `command_failed` (see [`STATE_METRICS`]).
    pub state_series: Vec<(&'static str, Labels, f64)>,
}

/// Series made from the manager's own records each cycle: seconds until a host's
/// certificate expires, 1 for each parcel a host failed to download, verify or activate, and
/// 1 for each command that failed in the last hour.
pub const STATE_METRICS: [&str; 3] =
    ["host_certificate_expires_in_seconds", "parcel_distribution_failed", "command_failed"];

/// A role's key: (cluster, service, role name).
pub type RoleKey = (String, String, String);

/// The health of one entity and the tests that decided it.
#[derive(Debug, Clone, Serialize)]
pub struct EntityHealth {
    pub status: Status,
    pub tests: Vec<TestResult>,
}

impl EntityHealth {
    fn of(tests: Vec<TestResult>) -> EntityHealth {
        EntityHealth { status: roll_up(tests.iter().map(|t| t.status)), tests }
    }
}

/// The health of everything, as of one cycle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthSnapshot {
    pub at: i64,
    /// By hostname.
    pub hosts: BTreeMap<String, EntityHealth>,
    pub roles: BTreeMap<RoleKey, EntityHealth>,
    /// By (cluster, service): the roll-up of its roles plus its own tests.
    pub services: BTreeMap<(String, String), EntityHealth>,
    /// By cluster: the roll-up of its services and member hosts.
    pub clusters: BTreeMap<String, EntityHealth>,
}

/// Which entities a health test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Host,
    Role,
    Service,
}

/// A metric health test and where it applies (`service_type` empty: every type).
#[derive(Debug, Clone)]
pub struct HealthTestDef {
    pub level: Level,
    pub service_type: &'static str,
    pub test: ThresholdTest,
}

/// The built-in metric health tests. Known metrics only; `known` is the catalogue.
pub fn builtin_tests(known: &dyn Fn(&str) -> bool) -> Result<Vec<HealthTestDef>, ExprError> {
    let t = |level, service_type, name: &str, description: &str, expr: &str, direction, warning, critical| {
        Ok::<_, ExprError>(HealthTestDef {
            level,
            service_type,
            test: ThresholdTest {
                name: name.to_owned(),
                description: description.to_owned(),
                vector: Condition::compile(expr, known)?,
                direction,
                warning,
                critical,
            },
        })
    };
    Ok(vec![
        t(
            Level::Host,
            "",
            "disk_space",
            "Space used on the host's fullest filesystem",
            "max by (host) (host_disk_used_ratio)",
            Cmp::Ge,
            Some(0.8),
            Some(0.9),
        )?,
        t(
            Level::Role,
            "",
            "restarts",
            "Restarts after crashes in the last 10 minutes",
            "increase(role_restarts_total[10m])",
            Cmp::Gt,
            Some(1.0),
            Some(3.0),
        )?,
        t(
            Level::Role,
            "redis",
            "redis_memory",
            "Used memory against maxmemory",
            "redis_memory_used_ratio",
            Cmp::Ge,
            Some(0.9),
            Some(0.98),
        )?,
        t(
            Level::Role,
            "redis",
            "redis_replication_link",
            "A replica's link to its primary (1 up, 0 down)",
            "redis_master_link_up",
            Cmp::Lt,
            None,
            Some(1.0),
        )?,
        t(
            Level::Role,
            "zookeeper",
            "zookeeper_outstanding_requests",
            "Requests queued in the server",
            "zookeeper_outstanding_requests",
            Cmp::Ge,
            Some(10.0),
            Some(100.0),
        )?,
        t(
            Level::Role,
            "zookeeper",
            "zookeeper_latency",
            "Average request latency",
            "zookeeper_avg_latency_ms",
            Cmp::Ge,
            Some(100.0),
            Some(1000.0),
        )?,
        t(
            Level::Service,
            "zookeeper",
            "zookeeper_leader",
            "Servers of the ensemble that are the leader (or standalone)",
            "sum by (cluster, service) (zookeeper_is_leader)",
            Cmp::Lt,
            None,
            Some(1.0),
        )?,
    ])
}

/// The health states as series, for rules and charts: `host_up`, `host_health_status`,
/// `role_health_status`, `role_config_stale_seconds`, `service_health_status` and
/// `cluster_health_status` (0 good, 1 concerning, 2 bad).
pub const HEALTH_METRICS: [&str; 9] = [
    "host_up",
    "host_health_status",
    "role_health_status",
    "role_config_stale_seconds",
    "service_health_status",
    "cluster_health_status",
    STATE_METRICS[0],
    STATE_METRICS[1],
    STATE_METRICS[2],
];

/// A source with the health series laid over the metrics.
pub struct Overlay<'a> {
    pub base: &'a dyn SeriesSource,
    pub extra: HashMap<&'static str, Vec<(Arc<Labels>, f64)>>,
}

impl SeriesSource for Overlay<'_> {
    fn instant(&self, name: &str, matchers: &[Matcher], each: &mut dyn FnMut(&Arc<Labels>, f64)) {
        match self.extra.get(name) {
            Some(series) => {
                for (labels, value) in series {
                    if matches(labels, matchers) {
                        each(labels, *value);
                    }
                }
            }
            None => self.base.instant(name, matchers, each),
        }
    }

    fn range(&self, name: &str, matchers: &[Matcher], range: Duration, each: &mut EachWindow<'_>) {
        self.base.range(name, matchers, range, each)
    }

    fn entity_labels(&self, kind: &str, id: &str) -> Option<Arc<Labels>> {
        self.base.entity_labels(kind, id)
    }

    fn aggregate(&self, name: &str, matchers: &[Matcher], grouping: &Grouping) -> Groups {
        match self.extra.get(name) {
            Some(series) => {
                let series: Vec<_> = series.iter().filter(|(l, _)| matches(l, matchers)).cloned().collect();
                grouped(&series, grouping)
            }
            None => self.base.aggregate(name, matchers, grouping),
        }
    }
}

/// Whether labels satisfy every matcher (a missing label is the empty string, as in PromQL).
pub fn matches(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| m.is_match(labels.get(&m.name).map(String::as_str).unwrap_or("")))
}

fn role_labels(r: &FleetRole) -> Labels {
    [
        ("cluster", r.cluster.as_str()),
        ("service", r.service.as_str()),
        ("role", r.name.as_str()),
        ("role_type", r.role_type.as_str()),
        ("host", r.hostname.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Whether `labels` are the ones [`role_labels`] makes of `r` (compared in the map's order).
fn are_role_labels(labels: &Labels, r: &FleetRole) -> bool {
    let want = [
        ("cluster", r.cluster.as_str()),
        ("host", r.hostname.as_str()),
        ("role", r.name.as_str()),
        ("role_type", r.role_type.as_str()),
        ("service", r.service.as_str()),
    ];
    labels.len() == want.len() && labels.iter().zip(want).all(|((k, v), (wk, wv))| k == wk && v == wv)
}

/// The tests of a role's state as the fleet reports it (a role on a lost host has none).
fn state_tests(r: &FleetRole) -> Vec<TestResult> {
    // A role on a lost host is not judged: its host's test says why.
    if !r.host_up {
        return Vec::new();
    }
    let mut tests = Vec::with_capacity(3);
    let (status, summary): (Status, Text) = match (r.wanted_running, r.state.as_str()) {
        (true, "running") => (Status::Good, "running".into()),
        (true, "starting") => (Status::Concerning, "starting".into()),
        (true, "failed") if !r.last_error.is_empty() => (Status::Bad, format!("failed: {}", r.last_error).into()),
        (true, other) => (Status::Bad, format!("{other}, should be running").into()),
        (false, "stopped") | (false, "unknown") => (Status::Good, "stopped, as wanted".into()),
        (false, other) => (Status::Concerning, format!("{other}, should be stopped").into()),
    };
    tests.push(TestResult { test: "process".into(), status, value: None, summary });
    if r.wanted_running && r.state == "running" {
        let (status, summary): (Status, Text) = match r.probe_health.as_str() {
            "bad" => (Status::Bad, "health checks failing".into()),
            "good" => (Status::Good, "health checks pass".into()),
            _ => (Status::Good, "no health check result yet".into()),
        };
        tests.push(TestResult { test: "health_checks".into(), status, value: None, summary });
    }
    if r.stale_seconds > 0.0 {
        tests.push(TestResult {
            test: "config".into(),
            status: Status::Concerning,
            value: Some(r.stale_seconds),
            summary: format!("running an older configuration for {}s; restart to apply", r.stale_seconds as u64).into(),
        });
    }
    tests
}

/// The verdicts of one cycle by position in the fleet, for the health series.
#[derive(Debug, Default)]
struct Verdicts {
    /// Each host's status (that of the last host with its hostname).
    hosts: Vec<Status>,
    /// Each role's status (that of the last role with its key); `None`: not judged (its host
    /// is lost).
    roles: Vec<Option<Status>>,
}

/// The health of everything: the fleet's state tests, then the metric tests, rolled up.
pub fn health(fleet: &Fleet, tests: &[HealthTestDef], src: &dyn SeriesSource, now: i64) -> HealthSnapshot {
    judge(fleet, tests, src).snapshot(fleet, now, &mut Vec::new())
}

/// One cycle's health by position in the fleet, before the snapshot's owned keys are made:
/// what the rules over health series need, and the rest of the snapshot, which is made while
/// those rules run.
struct Judged<'f> {
    /// By position in the fleet's hosts (`None` once taken into the snapshot); a hostname
    /// given twice is the last one's, as in a map.
    hosts: Vec<Option<EntityHealth>>,
    host_at: FastMap<&'f str, usize>,
    roles: Vec<Option<EntityHealth>>,
    /// Whether no role key is given twice (then every role is its key's).
    unique_roles: bool,
    services: BTreeMap<(String, String), EntityHealth>,
    clusters: BTreeMap<String, EntityHealth>,
    verdicts: Verdicts,
}

/// Judges every host, role, service and cluster. Hosts and roles are kept by their position
/// in the fleet, found by borrowed names.
fn judge<'f>(fleet: &'f Fleet, tests: &[HealthTestDef], src: &dyn SeriesSource) -> Judged<'f> {
    // A hostname or role key given twice is the last one's, as in a map.
    let mut host_at: FastMap<&str, usize> = FastMap::with_capacity_and_hasher(fleet.hosts.len(), Default::default());
    let mut host_tests: Vec<Vec<TestResult>> = Vec::with_capacity(fleet.hosts.len());
    for (i, h) in fleet.hosts.iter().enumerate() {
        host_at.insert(h.hostname.as_str(), i);
        let agent = if h.up {
            TestResult { test: "agent".into(), status: Status::Good, value: Some(1.0), summary: "connected".into() }
        } else {
            TestResult {
                test: "agent".into(),
                status: Status::Bad,
                value: Some(0.0),
                summary: "lost: no sign of life from the agent".into(),
            }
        };
        host_tests.push(vec![agent]);
    }
    let mut role_at: FastMap<(&str, &str, &str), usize> =
        FastMap::with_capacity_and_hasher(fleet.roles.len(), Default::default());
    let mut role_tests: Vec<Vec<TestResult>> = Vec::with_capacity(fleet.roles.len());
    for (i, r) in fleet.roles.iter().enumerate() {
        role_at.insert((r.cluster.as_str(), r.service.as_str(), r.name.as_str()), i);
        role_tests.push(state_tests(r));
    }
    // Service-level results, with their labels (which the services' map borrows). The tests
    // run side by side; their results are taken in the tests' order.
    let (mut service_labels, mut service_tests): (Vec<Arc<Labels>>, Vec<TestResult>) = (Vec::new(), Vec::new());
    let results: Vec<_> = tests.par_iter().map(|def| def.test.run_shared(src)).collect();
    for (def, results) in tests.iter().zip(results) {
        for (labels, result) in results {
            let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
            match def.level {
                Level::Host => {
                    if let Some(&i) = host_at.get(get("host")) {
                        host_tests[i].push(result);
                    }
                }
                Level::Role => {
                    let Some(&i) = role_at.get(&(get("cluster"), get("service"), get("role"))) else { continue };
                    let applies = def.service_type.is_empty() || fleet.roles[i].service_type == def.service_type;
                    // Not while the role's host is lost (its tests are empty then).
                    if applies && !role_tests[i].is_empty() {
                        role_tests[i].push(result);
                    }
                }
                Level::Service => {
                    service_labels.push(labels.clone());
                    service_tests.push(result);
                }
            }
        }
    }
    let hosts: Vec<Option<EntityHealth>> = host_tests.into_iter().map(|t| Some(EntityHealth::of(t))).collect();
    let roles: Vec<Option<EntityHealth>> = role_tests.into_iter().map(|t| Some(EntityHealth::of(t))).collect();
    let unique_roles = role_at.len() == fleet.roles.len();
    // The position of the role that is `r`'s key's (the last one given).
    let winner = |i: usize, r: &FleetRole| {
        if unique_roles { Some(i) } else { role_at.get(&(&*r.cluster, &*r.service, &*r.name)).copied() }
    };
    let host_status = |i: usize| hosts[i].as_ref().map_or(Status::Good, |h| h.status);
    let verdicts = Verdicts {
        hosts: fleet
            .hosts
            .iter()
            .map(|h| host_status(host_at.get(h.hostname.as_str()).copied().unwrap_or(0)))
            .collect(),
        roles: {
            let judged = |i: usize| roles[i].as_ref().filter(|h| !h.tests.is_empty()).map(|h| h.status);
            fleet.roles.iter().enumerate().map(|(i, r)| winner(i, r).and_then(judged)).collect()
        },
    };
    // Services: their own tests, then one line per role that is not good, in role-key order.
    let mut services: BTreeMap<(&str, &str), Vec<TestResult>> = BTreeMap::new();
    for r in &fleet.roles {
        services.entry((r.cluster.as_str(), r.service.as_str())).or_default();
    }
    for (labels, test) in service_labels.iter().zip(service_tests) {
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        // A service-level test about a service the fleet no longer has is dropped.
        if let Some(t) = services.get_mut(&(get("cluster"), get("service"))) {
            t.push(test);
        }
    }
    // The roles that are not good (usually few), in key order.
    let mut not_good: Vec<usize> = (0..fleet.roles.len())
        .filter(|&i| {
            roles[i].as_ref().is_some_and(|h| h.status != Status::Good) && winner(i, &fleet.roles[i]) == Some(i)
        })
        .collect();
    let key = |i: usize| {
        let r = &fleet.roles[i];
        (r.cluster.as_str(), r.service.as_str(), r.name.as_str())
    };
    not_good.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)));
    for i in not_good {
        let (cluster, service, role) = key(i);
        let Some(h) = roles[i].as_ref() else { continue };
        if let Some(t) = services.get_mut(&(cluster, service)) {
            let worst = h.tests.iter().filter(|t| t.status == h.status).map(|t| &*t.summary).collect::<Vec<_>>();
            t.push(TestResult {
                test: format!("role {role}").into(),
                status: h.status,
                value: None,
                summary: worst.join("; ").into(),
            });
        }
    }
    let services: BTreeMap<(String, String), EntityHealth> =
        services.into_iter().map(|((c, s), t)| ((c.to_owned(), s.to_owned()), EntityHealth::of(t))).collect();
    let mut clusters: BTreeMap<&str, Vec<TestResult>> = BTreeMap::new();
    for ((cluster, service), h) in &services {
        let t = clusters.entry(cluster.as_str()).or_default();
        if h.status != Status::Good {
            t.push(TestResult {
                test: format!("service {service}").into(),
                status: h.status,
                value: None,
                summary: format!("service {service} is {}", h.status.as_str()).into(),
            });
        }
    }
    for (h, status) in fleet.hosts.iter().zip(&verdicts.hosts) {
        for c in &h.clusters {
            let t = clusters.entry(c.as_str()).or_default();
            if *status != Status::Good {
                t.push(TestResult {
                    test: format!("host {}", h.hostname).into(),
                    status: *status,
                    value: None,
                    summary: format!("host {} is {}", h.hostname, status.as_str()).into(),
                });
            }
        }
    }
    let clusters = clusters.into_iter().map(|(k, t)| (k.to_owned(), EntityHealth::of(t))).collect();
    Judged { hosts, host_at, roles, unique_roles, services, clusters, verdicts }
}

impl Judged<'_> {
    /// The snapshot, with its owned keys. `role_order` holds the positions of the roles in
    /// key order from the previous cycle: while the fleet's roles keep their keys and
    /// positions (the usual case) it is checked (one comparison per role), not sorted again;
    /// otherwise it is made anew.
    fn snapshot(mut self, fleet: &Fleet, now: i64, role_order: &mut Vec<usize>) -> HealthSnapshot {
        let key = |i: usize| {
            let r = &fleet.roles[i];
            (r.cluster.as_str(), r.service.as_str(), r.name.as_str())
        };
        let n = fleet.roles.len();
        // Strictly increasing keys at n valid positions, n distinct keys: every role, in order.
        let still_sorted = self.unique_roles
            && role_order.len() == n
            && role_order.iter().all(|&i| i < n)
            && role_order.windows(2).all(|w| key(w[0]) < key(w[1]));
        if !still_sorted {
            // The last role of each key, in key order.
            let mut at: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
            for i in 0..n {
                at.insert(key(i), i);
            }
            role_order.clear();
            role_order.extend(at.into_values());
        }
        let mut host_order: Vec<(&str, usize)> = self.host_at.iter().map(|(k, i)| (*k, *i)).collect();
        host_order.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let (hosts, roles) = (&mut self.hosts, &mut self.roles);
        HealthSnapshot {
            at: now,
            // A map collects sorted input without sorting it again.
            hosts: host_order.into_iter().filter_map(|(k, i)| Some((k.to_owned(), hosts[i].take()?))).collect(),
            roles: role_order
                .iter()
                .filter_map(|&i| {
                    let (c, s, r) = key(i);
                    Some(((c.to_owned(), s.to_owned(), r.to_owned()), roles[i].take()?))
                })
                .collect(),
            services: self.services,
            clusters: self.clusters,
        }
    }
}

/// The label maps of the health series of the previous cycle, by position in its fleet: a
/// host or role at the same position with the same names keeps its map (no copies made).
#[derive(Debug, Default)]
struct SeriesLabels {
    hosts: Vec<Arc<Labels>>,
    roles: Vec<Option<Arc<Labels>>>,
}

/// The health states as series (see [`HEALTH_METRICS`]), each host's and role's labels shared
/// by its series: the source's own for the entity when they are the same (10,000 hosts and
/// roles kept a second copy of each, 10 MiB), else kept from the previous cycle when they did
/// not change.
fn health_series(
    fleet: &Fleet,
    judged: &Judged<'_>,
    src: &dyn SeriesSource,
    kept: &mut SeriesLabels,
) -> HashMap<&'static str, Vec<(Arc<Labels>, f64)>> {
    let verdicts = &judged.verdicts;
    let mut out: HashMap<&'static str, Vec<(Arc<Labels>, f64)>> =
        HEALTH_METRICS.iter().map(|n| (*n, Vec::new())).collect();
    let one = |k: &str, v: &str| -> Arc<Labels> { Arc::new([(k.to_owned(), v.to_owned())].into()) };
    let mut host_up = Vec::with_capacity(fleet.hosts.len());
    let mut host_status = Vec::with_capacity(fleet.hosts.len());
    kept.hosts.truncate(fleet.hosts.len());
    for (i, (h, status)) in fleet.hosts.iter().zip(&verdicts.hosts).enumerate() {
        let own = |l: &Arc<Labels>| l.len() == 1 && l.get("host") == Some(&h.hostname);
        let labels = match src.entity_labels("host", &h.id).filter(own) {
            Some(shared) => shared,
            None => match kept.hosts.get(i) {
                Some(l) if own(l) => l.clone(),
                _ => one("host", &h.hostname),
            },
        };
        match kept.hosts.get_mut(i) {
            Some(slot) => *slot = labels.clone(),
            None => kept.hosts.push(labels.clone()),
        }
        host_status.push((labels.clone(), status.level()));
        host_up.push((labels, if h.up { 1.0 } else { 0.0 }));
    }
    let mut role_status = Vec::with_capacity(fleet.roles.len());
    let mut role_stale = Vec::with_capacity(fleet.roles.len());
    kept.roles.resize(fleet.roles.len(), None);
    // Checking that each role's kept labels are still its own reads every role's label map:
    // done side by side.
    let labels: Vec<Option<Arc<Labels>>> = fleet
        .roles
        .par_iter()
        .zip(&verdicts.roles)
        .zip(&mut kept.roles)
        .map(|((r, verdict), slot)| {
            // No verdict for a role on a lost host: `host_up` speaks for it.
            if verdict.is_none() && !r.host_up {
                return None;
            }
            let labels = match src.entity_labels("role", &r.id).filter(|l| are_role_labels(l, r)) {
                Some(shared) => shared,
                None => match slot {
                    Some(l) if are_role_labels(l, r) => l.clone(),
                    _ => Arc::new(role_labels(r)),
                },
            };
            Some(slot.insert(labels).clone())
        })
        .collect();
    for ((r, verdict), labels) in fleet.roles.iter().zip(&verdicts.roles).zip(labels) {
        let Some(labels) = labels else { continue };
        if let Some(status) = verdict {
            role_status.push((labels.clone(), status.level()));
        }
        if r.host_up {
            role_stale.push((labels, r.stale_seconds));
        }
    }
    out.insert("host_health_status", host_status);
    out.insert("host_up", host_up);
    out.insert("role_health_status", role_status);
    out.insert("role_config_stale_seconds", role_stale);
    for ((cluster, service), h) in &judged.services {
        let labels: Labels = [("cluster".to_owned(), cluster.clone()), ("service".to_owned(), service.clone())].into();
        out.get_mut("service_health_status").expect("listed").push((Arc::new(labels), h.status.level()));
    }
    for (cluster, h) in &judged.clusters {
        out.get_mut("cluster_health_status").expect("listed").push((one("cluster", cluster), h.status.level()));
    }
    for (name, labels, value) in &fleet.state_series {
        out.entry(name).or_default().push((Arc::new(labels.clone()), *value));
    }
    out
}

pub use drover_api::alerts::Severity;

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    pub condition: Condition,
    pub timing: Timing,
    pub severity: Severity,
    pub labels: Labels,
    /// Handlebars templates over `labels` and `value`.
    pub annotations: BTreeMap<String, String>,
    pub builtin: bool,
}

/// The built-in rules, on by default.
pub fn builtin_rules(known: &dyn Fn(&str) -> bool) -> Result<Vec<CompiledRule>, ExprError> {
    let rule = |name: &str, expr: &str, for_s: u64, severity, summary: &str| {
        Ok::<_, ExprError>(CompiledRule {
            name: name.to_owned(),
            condition: Condition::compile(expr, known)?,
            timing: Timing { for_: Duration::from_secs(for_s), keep_firing_for: Duration::ZERO },
            severity,
            labels: Labels::new(),
            annotations: [("summary".to_owned(), summary.to_owned())].into(),
            builtin: true,
        })
    };
    Ok(vec![
        rule(
            "host_lost",
            "host_up == 0",
            0,
            Severity::Critical,
            "Host {{labels.host}} is lost: its agent stopped answering",
        )?,
        rule(
            "role_bad",
            "role_health_status >= 2",
            60,
            Severity::Critical,
            "Role {{labels.role}} of {{labels.cluster}}/{{labels.service}} on {{labels.host}} is bad",
        )?,
        rule(
            "crash_loop",
            "increase(role_restarts_total[10m]) > 3",
            0,
            Severity::Critical,
            "Role {{labels.role}} on {{labels.host}} restarted {{value}} times in 10 minutes",
        )?,
        rule(
            "stale_configuration",
            "role_config_stale_seconds > 86400",
            0,
            Severity::Warning,
            "Role {{labels.role}} on {{labels.host}} has run an older configuration for over a day",
        )?,
        rule(
            "host_certificate_expiring",
            "host_certificate_expires_in_seconds < 1209600",
            0,
            Severity::Warning,
            "The agent certificate of {{labels.host}} expires in {{value}} seconds; re-enroll the host",
        )?,
        rule(
            "parcel_distribution_failed",
            "parcel_distribution_failed == 1",
            0,
            Severity::Warning,
            "Parcel {{labels.parcel}} failed on {{labels.host}}: {{labels.error}}",
        )?,
        rule(
            "command_failed",
            "command_failed == 1",
            0,
            Severity::Warning,
            "Command {{labels.command}} ({{labels.name}}) of {{labels.cluster}}/{{labels.service}} failed",
        )?,
        rule(
            "disk_nearly_full",
            "host_disk_used_ratio > 0.9",
            300,
            Severity::Warning,
            "Filesystem {{labels.mount}} on {{labels.host}} is {{value}} full",
        )?,
    ])
}

/// The outcome of one cycle.
#[derive(Debug, Default)]
pub struct Cycle {
    pub health: HealthSnapshot,
    /// (rule name, transition).
    pub transitions: Vec<(String, Transition)>,
}

/// Rules and their alerts' state across cycles.
#[derive(Debug, Default)]
pub struct Evaluator {
    states: HashMap<String, RuleState>,
    series_labels: SeriesLabels,
    /// The roles' positions in key order, as of the previous cycle (see [`evaluate`]).
    role_order: Vec<usize>,
}

impl Evaluator {
    /// Runs one cycle at `now` (unix ms).
    pub fn cycle(
        &mut self,
        fleet: &Fleet,
        tests: &[HealthTestDef],
        rules: &[CompiledRule],
        metrics: &dyn SeriesSource,
        now: i64,
    ) -> Cycle {
        // The rules are evaluated side by side (a source is shared by threads), those over
        // metrics alone while the health is worked out, then those over the health series;
        // their alerts' states then step in the rules' order.
        let over_health =
            |rule: &CompiledRule| rule.condition.metrics().iter().any(|(m, _)| HEALTH_METRICS.contains(&m.as_str()));
        let (judged, mut holdings) = rayon::join(
            || judge(fleet, tests, metrics),
            || {
                rules
                    .par_iter()
                    .map(|rule| (!over_health(rule)).then(|| rule.condition.eval_shared(metrics)))
                    .collect::<Vec<_>>()
            },
        );
        let overlay = Overlay { base: metrics, extra: health_series(fleet, &judged, metrics, &mut self.series_labels) };
        // The snapshot's owned keys are made while the rules over health series run.
        let role_order = &mut self.role_order;
        let (health, ()) = rayon::join(
            || judged.snapshot(fleet, now, role_order),
            || {
                holdings.par_iter_mut().zip(rules).for_each(|(holding, rule)| {
                    if holding.is_none() {
                        *holding = Some(rule.condition.eval_shared(&overlay));
                    }
                })
            },
        );
        let mut transitions = Vec::new();
        for (rule, holding) in rules.iter().zip(holdings) {
            let holding = holding.unwrap_or_default();
            let holding: Vec<(Labels, f64)> = holding.into_iter().map(|(l, v)| (Arc::unwrap_or_clone(l), v)).collect();
            let state = self.states.entry(rule.name.clone()).or_default();
            transitions.extend(state.step(rule.timing, holding, now).into_iter().map(|t| (rule.name.clone(), t)));
        }
        // Rules that were removed take their alerts with them.
        self.states.retain(|name, _| rules.iter().any(|r| &r.name == name));
        Cycle { health, transitions }
    }

    /// The pending and firing alerts of every rule.
    pub fn active(&self) -> impl Iterator<Item = (&str, &super::state::Instance)> {
        self.states.iter().flat_map(|(name, s)| s.instances().map(move |i| (name.as_str(), i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Metrics(Vec<(&'static str, Labels, f64)>);

    impl SeriesSource for Metrics {
        fn instant(&self, name: &str, matchers: &[Matcher], each: &mut dyn FnMut(&Arc<Labels>, f64)) {
            for (_, l, v) in self.0.iter().filter(|(n, l, _)| *n == name && matches(l, matchers)) {
                each(&Arc::new(l.clone()), *v);
            }
        }
        fn range(&self, name: &str, matchers: &[Matcher], _: Duration, each: &mut EachWindow<'_>) {
            self.instant(name, matchers, &mut |l, v| each(l, &[(0, v), (1, v)]));
        }
    }

    fn known(_: &str) -> bool {
        true
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn redis_role(name: &str, host: &str, host_up: bool) -> FleetRole {
        FleetRole {
            id: format!("id-{name}"),
            cluster: "prod".into(),
            service: "cache".into(),
            service_type: "redis".into(),
            name: name.into(),
            role_type: "primary".into(),
            hostname: host.into(),
            host_up,
            wanted_running: true,
            state: "running".into(),
            probe_health: "good".into(),
            last_error: String::new(),
            stale_seconds: 0.0,
        }
    }

    fn fleet(host_a_up: bool) -> Fleet {
        Fleet {
            hosts: vec![
                FleetHost { id: "1".into(), hostname: "a".into(), up: host_a_up, clusters: vec!["prod".into()] },
                FleetHost { id: "2".into(), hostname: "b".into(), up: true, clusters: vec!["prod".into()] },
            ],
            roles: vec![
                redis_role("r1", "a", host_a_up),
                redis_role("r2", "a", host_a_up),
                redis_role("r3", "b", true),
            ],
            state_series: Vec::new(),
        }
    }

    fn redis_memory(role: &str, ratio: f64) -> (&'static str, Labels, f64) {
        (
            "redis_memory_used_ratio",
            labels(&[("cluster", "prod"), ("service", "cache"), ("role", role), ("host", "b")]),
            ratio,
        )
    }

    #[test]
    fn a_threshold_makes_the_role_then_service_then_cluster_concerning_or_bad() {
        let tests = builtin_tests(&known).expect("tests");
        let good = health(&fleet(true), &tests, &Metrics(vec![redis_memory("r3", 0.5)]), 0);
        assert_eq!(good.clusters["prod"].status, Status::Good, "{good:#?}");

        let warm = health(&fleet(true), &tests, &Metrics(vec![redis_memory("r3", 0.93)]), 0);
        let r3 = &warm.roles[&("prod".into(), "cache".into(), "r3".into())];
        assert_eq!(r3.status, Status::Concerning);
        let test = r3.tests.iter().find(|t| t.test == "redis_memory").expect("the memory test");
        assert_eq!(test.value, Some(0.93));
        assert!(test.summary.contains("0.93") && test.summary.contains("0.9"), "{}", test.summary);
        assert_eq!(warm.services[&("prod".into(), "cache".into())].status, Status::Concerning);
        assert_eq!(warm.clusters["prod"].status, Status::Concerning);

        let hot = health(&fleet(true), &tests, &Metrics(vec![redis_memory("r3", 0.99)]), 0);
        assert_eq!(hot.clusters["prod"].status, Status::Bad);
        let svc = &hot.services[&("prod".into(), "cache".into())];
        assert!(svc.tests.iter().any(|t| t.test == "role r3" && t.summary.contains("0.99")), "{svc:#?}");
    }

    #[test]
    fn a_lost_host_fires_one_alert_not_one_per_role() {
        let tests = builtin_tests(&known).expect("tests");
        let rules = builtin_rules(&known).expect("rules");
        let mut ev = Evaluator::default();
        let none = Metrics(vec![]);
        assert!(ev.cycle(&fleet(true), &tests, &rules, &none, 0).transitions.is_empty());
        let lost = ev.cycle(&fleet(false), &tests, &rules, &none, 1_000);
        let names: Vec<&str> = lost.transitions.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host_lost"], "{:?}", lost.transitions);
        assert_eq!(lost.health.hosts["a"].status, Status::Bad);
        assert_eq!(lost.health.clusters["prod"].status, Status::Bad);
        // Still lost a minute later: nothing new (the roles on it are not judged).
        assert!(ev.cycle(&fleet(false), &tests, &rules, &none, 90_000).transitions.is_empty());
        let back = ev.cycle(&fleet(true), &tests, &rules, &none, 100_000);
        assert!(matches!(back.transitions.as_slice(), [(n, Transition::Resolved { .. })] if n == "host_lost"));
    }

    #[test]
    fn a_failed_role_is_bad_and_fires_after_its_for() {
        let tests = builtin_tests(&known).expect("tests");
        let rules = builtin_rules(&known).expect("rules");
        let mut f = fleet(true);
        f.roles[2].state = "failed".into();
        f.roles[2].last_error = "exited with status 1".into();
        let mut ev = Evaluator::default();
        let none = Metrics(vec![]);
        let first = ev.cycle(&f, &tests, &rules, &none, 0);
        let r3 = &first.health.roles[&("prod".into(), "cache".into(), "r3".into())];
        assert_eq!(r3.status, Status::Bad);
        assert!(r3.tests[0].summary.contains("exited with status 1"));
        assert!(matches!(first.transitions.as_slice(), [(n, Transition::Pending(_))] if n == "role_bad"));
        let later = ev.cycle(&f, &tests, &rules, &none, 60_000);
        assert!(
            matches!(later.transitions.as_slice(), [(n, Transition::Firing(i))] if n == "role_bad" && i.labels["role"] == "r3")
        );
    }

    #[test]
    fn the_managers_own_records_fire_their_rules() {
        let tests = builtin_tests(&known).expect("tests");
        let rules = builtin_rules(&known).expect("rules");
        let mut f = fleet(true);
        f.state_series = vec![
            ("host_certificate_expires_in_seconds", labels(&[("host", "a")]), 86_400.0),
            ("host_certificate_expires_in_seconds", labels(&[("host", "b")]), 300.0 * 86_400.0),
            (
                "parcel_distribution_failed",
                labels(&[("host", "b"), ("parcel", "redis"), ("error", "sha256 mismatch")]),
                1.0,
            ),
            (
                "command_failed",
                labels(&[("cluster", "prod"), ("service", "cache"), ("command", "c1"), ("name", "start")]),
                1.0,
            ),
        ];
        let mut ev = Evaluator::default();
        let cycle = ev.cycle(&f, &tests, &rules, &Metrics(vec![]), 0);
        let mut fired: Vec<String> = cycle
            .transitions
            .iter()
            .map(|(n, t)| match t {
                Transition::Firing(i) => format!("{n} {}", i.labels.get("host").or(i.labels.get("command")).unwrap()),
                other => format!("{other:?}"),
            })
            .collect();
        fired.sort();
        assert_eq!(fired, ["command_failed c1", "host_certificate_expiring a", "parcel_distribution_failed b"]);
    }

    /// A source that keeps its hosts' and roles' own label maps, as `LiveMetrics` does.
    struct WithEntities(Vec<(&'static str, &'static str, Arc<Labels>)>);

    impl SeriesSource for WithEntities {
        fn instant(&self, _: &str, _: &[Matcher], _: &mut dyn FnMut(&Arc<Labels>, f64)) {}
        fn range(&self, _: &str, _: &[Matcher], _: Duration, _: &mut EachWindow<'_>) {}
        fn entity_labels(&self, kind: &str, id: &str) -> Option<Arc<Labels>> {
            self.0.iter().find(|(k, i, _)| *k == kind && *i == id).map(|(_, _, l)| l.clone())
        }
    }

    #[test]
    fn health_series_share_the_sources_label_maps_of_hosts_and_roles_when_they_are_the_same() {
        let tests = builtin_tests(&known).expect("tests");
        let f = fleet(true);
        let role = |name: &str, host: &str| {
            Arc::new(labels(&[
                ("cluster", "prod"),
                ("service", "cache"),
                ("role", name),
                ("role_type", "primary"),
                ("host", host),
            ]))
        };
        let host_a = Arc::new(labels(&[("host", "a")]));
        let r1 = role("r1", "a");
        // r2's map in the source names the host it had before: not its labels now.
        let r2_before = role("r2", "old-name");
        let src = WithEntities(vec![
            ("host", "1", host_a.clone()),
            ("role", "id-r1", r1.clone()),
            ("role", "id-r2", r2_before.clone()),
        ]);
        let mut kept = SeriesLabels::default();
        for _ in 0..2 {
            let series = health_series(&f, &judge(&f, &tests, &src), &src, &mut kept);
            let find = |metric: &str, key: &str, value: &str| {
                let found = series[metric].iter().find(|(l, _)| l.get(key).map(String::as_str) == Some(value));
                found.map(|(l, _)| l.clone()).unwrap_or_else(|| panic!("{metric} of {value}"))
            };
            assert!(Arc::ptr_eq(&find("host_up", "host", "a"), &host_a));
            assert_eq!(*find("host_up", "host", "b"), labels(&[("host", "b")]));
            assert!(Arc::ptr_eq(&find("role_health_status", "role", "r1"), &r1));
            let r2 = find("role_health_status", "role", "r2");
            assert!(!Arc::ptr_eq(&r2, &r2_before));
            assert_eq!(r2, role("r2", "a"));
        }
    }

    #[test]
    fn the_role_order_kept_from_the_last_cycle_follows_a_changed_fleet() {
        let tests = builtin_tests(&known).expect("tests");
        let none = Metrics(vec![]);
        let mut f = fleet(true);
        f.roles[2].state = "failed".into();
        f.roles[0].state = "starting".into();
        // The same fleet, its roles in another order, one renamed, one more, a key given twice.
        let mut reversed = f.clone();
        reversed.roles.reverse();
        let mut renamed = f.clone();
        renamed.roles[0].name = "r9".into();
        let mut more = f.clone();
        more.roles.push(redis_role("r0", "b", true));
        let mut twice = f.clone();
        twice.roles.push(redis_role("r1", "b", true));
        let mut order = Vec::new();
        for f in [f.clone(), f.clone(), reversed, renamed, more, twice, f] {
            let kept = judge(&f, &tests, &none).snapshot(&f, 0, &mut order);
            let fresh = health(&f, &tests, &none, 0);
            assert_eq!(format!("{:?}", kept.roles), format!("{:?}", fresh.roles));
            assert_eq!(format!("{:?}", kept.services), format!("{:?}", fresh.services));
            assert_eq!(order.len(), kept.roles.len());
        }
    }

    #[test]
    fn zookeeper_without_a_leader_is_bad_at_the_service() {
        let tests = builtin_tests(&known).expect("tests");
        let mut f = fleet(true);
        for r in &mut f.roles {
            r.service = "zk".into();
            r.service_type = "zookeeper".into();
        }
        let zk = |role: &str, leader: f64| {
            (
                "zookeeper_is_leader",
                labels(&[("cluster", "prod"), ("service", "zk"), ("role", role), ("host", "a")]),
                leader,
            )
        };
        let ok = health(&f, &tests, &Metrics(vec![zk("r1", 1.0), zk("r2", 0.0), zk("r3", 0.0)]), 0);
        assert_eq!(ok.services[&("prod".into(), "zk".into())].status, Status::Good);
        let headless = health(&f, &tests, &Metrics(vec![zk("r1", 0.0), zk("r2", 0.0), zk("r3", 0.0)]), 0);
        let svc = &headless.services[&("prod".into(), "zk".into())];
        assert_eq!(svc.status, Status::Bad, "{svc:#?}");
        assert!(svc.tests.iter().any(|t| t.test == "zookeeper_leader"));
    }
}
