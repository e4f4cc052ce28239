//! The alert engine at work: every `--alerts-interval` it gathers the fleet from the registry
//! and the store, reads the latest metric values from memory, runs one [`Evaluator`] cycle and
//! acts on it: the health snapshot and the active alerts are published for the API and
//! console, every transition becomes an event, and firing and resolved alerts go to the
//! notifier.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use rayon::prelude::*;

use super::FastMap;
use super::engine::{
    CompiledRule, Evaluator, Fleet, FleetHost, FleetRole, HEALTH_METRICS, HealthSnapshot, HealthTestDef, builtin_rules,
    builtin_tests, matches,
};
use super::expr::{EachWindow, Grouping, Groups, Labels, SeriesSource, group};
use super::state::{Instance, Phase, Transition};
use crate::AppState;
use crate::domain::metrics::LiveMetrics;
use crate::model::{HostStatus, now_millis, rfc3339};
use crate::notify::{self, Notifier};
use drover_api::alerts::{AlertState, AlertView, Severity};

/// Points kept per series for range functions: a cycle every 15 s over the longest window.
const MAX_WINDOW_POINTS: usize = 2_000;

/// The engine's state, shared with the API and console through [`AppState::alerts`].
pub struct Alerts {
    tests: Vec<HealthTestDef>,
    inner: Mutex<Inner>,
    health: RwLock<Arc<HealthSnapshot>>,
    active: RwLock<Arc<Vec<AlertView>>>,
    /// Swapped whole when the stored notification configuration changes (open groups restart).
    notifier: RwLock<Option<Notifier>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("tests", &self.tests.len()).finish_non_exhaustive()
    }
}

/// Recent points (unix ms, value) of each series a range function reads, by metric name.
type Windows = HashMap<String, NameWindows>;

/// The windows of one metric's series, by the address of the labels [`LiveMetrics`] shares
/// (the window holds them, so the address is not reused while it exists): no label map is
/// hashed for a series seen before. A series whose labels come under a new address (made
/// anew) is found by its labels and keeps its window.
#[derive(Default)]
struct NameWindows {
    by_ptr: FastMap<usize, Window>,
    by_labels: FastMap<Arc<Labels>, usize>,
}

struct Window {
    labels: Arc<Labels>,
    points: VecDeque<(i64, f64)>,
    /// The cycle that last saw the series.
    seen: u64,
}

#[derive(Default)]
struct Inner {
    evaluator: Evaluator,
    /// Recent values of the series range functions read, by (name, labels); the labels are
    /// shared with [`LiveMetrics`].
    windows: Windows,
    /// Counts cycles, to tell the windows seen in this one.
    cycles: u64,
    /// Label indexes kept from one cycle to the next (see [`Source::index`]).
    indexes: Kept<ValueIndex>,
    /// Groupings kept from one cycle to the next (see [`Source::aggregate`]).
    groupings: Kept<Grouped>,
    /// When each role was first seen running an older configuration.
    stale_since: HashMap<String, i64>,
    /// The rules of the latest cycle.
    rules: Vec<CompiledRule>,
    /// When each host's certificate expires (Unix ms), by hostname, and when that was read.
    cert_expiry: HashMap<String, i64>,
    certs_read_at: Option<i64>,
}

/// What mutes an alert: active silences (id and matchers) and maintenance mode.
#[derive(Default)]
pub struct Mutes {
    pub silences: Vec<(String, Vec<crate::domain::alerts::CompiledMatcher>)>,
    /// Hostnames, `cluster/service` and cluster names in maintenance mode.
    pub hosts: HashSet<String>,
    pub services: HashSet<String>,
    pub clusters: HashSet<String>,
    /// The clusters each host is a member of: a host of a cluster in maintenance is too.
    pub host_clusters: HashMap<String, Vec<String>>,
}

impl Mutes {
    /// The silences that match, and whether maintenance mode covers the alert.
    pub fn check(&self, labels: &BTreeMap<String, String>) -> (Vec<String>, bool) {
        let silenced = self
            .silences
            .iter()
            .filter(|(_, m)| crate::domain::alerts::silence_matches(m, labels))
            .map(|(id, _)| id.clone())
            .collect();
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        let (host, cluster, service) = (get("host"), get("cluster"), get("service"));
        let maintenance = (!host.is_empty()
            && (self.hosts.contains(host)
                || self.host_clusters.get(host).is_some_and(|cs| cs.iter().any(|c| self.clusters.contains(c)))))
            || (!cluster.is_empty() && self.clusters.contains(cluster))
            || (!service.is_empty() && self.services.contains(&format!("{cluster}/{service}")));
        (silenced, maintenance)
    }
}

impl Alerts {
    /// The built-in health tests and rules, and the notifier of `notify` (none: alerts are
    /// evaluated and shown, not sent).
    pub fn new(notify: Option<&notify::NotifyConfig>) -> Result<Alerts, String> {
        let known = super::catalog::in_catalogue;
        let tests = builtin_tests(&known).map_err(|e| format!("built-in health tests: {e}"))?;
        let rules = builtin_rules(&known).map_err(|e| format!("built-in alert rules: {e}"))?;
        let notifier = notify.map(Notifier::new).transpose().map_err(|e| format!("notifications: {e}"))?;
        Ok(Alerts {
            tests,
            inner: Mutex::new(Inner { rules, ..Inner::default() }),
            health: RwLock::new(Arc::new(HealthSnapshot::default())),
            active: RwLock::new(Arc::new(Vec::new())),
            notifier: RwLock::new(notifier),
        })
    }

    /// The latest health snapshot (empty before the first cycle).
    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.health.read().expect("health lock").clone()
    }

    /// The pending and firing alerts as of the latest cycle.
    pub fn active(&self) -> Arc<Vec<AlertView>> {
        self.active.read().expect("alerts lock").clone()
    }

    /// The notifier alerts go to now (a clone: cheap, an `Arc` inside).
    pub fn notifier(&self) -> Option<Notifier> {
        self.notifier.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the notifier (none: alerts are no longer sent). The old one's aggregation
    /// groups end with it; alerts still firing reach the new one at their next transition.
    pub fn set_notifier(&self, notifier: Option<Notifier>) {
        *self.notifier.write().unwrap_or_else(|e| e.into_inner()) = notifier;
    }

    /// Runs one cycle at `now` of `rules` over `fleet` and the metrics in memory; returns the
    /// transitions, each with its alert as the API shows it.
    pub fn cycle(
        &self,
        fleet: &Fleet,
        metrics: &LiveMetrics,
        rules: Vec<CompiledRule>,
        mutes: &Mutes,
        now: i64,
    ) -> Vec<(Transition, AlertView)> {
        let mut inner = self.inner.lock().expect("alerts lock");
        let inner = &mut *inner;
        inner.rules = rules;
        // Windows for the range functions: append the latest value of every series they read.
        let mut ranges: HashMap<String, Duration> = HashMap::new();
        for (name, range) in inner
            .rules
            .iter()
            .flat_map(|r| r.condition.metrics())
            .chain(self.tests.iter().flat_map(|t| t.test.vector.metrics()))
        {
            if !range.is_zero() {
                let r = ranges.entry(name).or_default();
                *r = (*r).max(range);
            }
        }
        inner.cycles += 1;
        let cycle_no = inner.cycles;
        for (name, range) in &ranges {
            let keep_from = now - i64::try_from(range.as_millis()).unwrap_or(i64::MAX);
            let NameWindows { by_ptr, by_labels } = inner.windows.entry(name.clone()).or_default();
            for (labels, at, value) in metrics.latest(name) {
                let ptr = Arc::as_ptr(&labels) as usize;
                if !by_ptr.contains_key(&ptr) {
                    let points = match by_labels.insert(labels.clone(), ptr) {
                        Some(old) => by_ptr.remove(&old).map(|w| w.points).unwrap_or_default(),
                        None => VecDeque::new(),
                    };
                    by_ptr.insert(ptr, Window { labels: labels.clone(), points, seen: 0 });
                }
                let Some(w) = by_ptr.get_mut(&ptr) else { continue };
                if w.points.back().is_none_or(|(t, _)| *t < at) {
                    w.points.push_back((at, value));
                }
                while w.points.front().is_some_and(|(t, _)| *t < keep_from) || w.points.len() > MAX_WINDOW_POINTS {
                    w.points.pop_front();
                }
                w.seen = cycle_no;
            }
        }
        // The windows of series not seen in this cycle, and of metrics no rule reads now, go.
        inner.windows.retain(|name, nw| {
            if !ranges.contains_key(name) {
                return false;
            }
            nw.by_ptr.retain(|_, w| w.seen == cycle_no);
            let by_ptr = &nw.by_ptr;
            nw.by_labels.retain(|_, ptr| by_ptr.contains_key(ptr));
            !nw.by_ptr.is_empty()
        });
        let src = Source {
            metrics,
            windows: &inner.windows,
            kept: &inner.indexes,
            kept_groups: &inner.groupings,
            cycle: cycle_no,
            now,
            latest: Memo::default(),
            selections: Memo::default(),
        };
        let cycle = inner.evaluator.cycle(fleet, &self.tests, &inner.rules, &src, now);
        let Source { latest, selections, .. } = src;
        // Indexes and groupings no rule used in this cycle go.
        inner.indexes.keep_used(cycle_no);
        inner.groupings.keep_used(cycle_no);
        let previous = std::mem::replace(&mut *self.health.write().expect("health lock"), Arc::new(cycle.health));
        // Freeing the previous snapshot (and the cycle's copies of the latest values) is work
        // no one waits for.
        rayon::spawn(move || drop((previous, latest, selections)));
        let rules: HashMap<&str, &CompiledRule> = inner.rules.iter().map(|r| (r.name.as_str(), r)).collect();
        let annotator = Annotator::new(&inner.rules);
        let active: Vec<_> = inner.evaluator.active().filter_map(|(name, i)| Some((*rules.get(name)?, i))).collect();
        let mut active: Vec<AlertView> =
            active.into_par_iter().map(|(r, i)| view(r, i, None, mutes, &annotator)).collect();
        active.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.active_since.cmp(&b.active_since)));
        *self.active.write().expect("alerts lock") = Arc::new(active);
        cycle
            .transitions
            .into_iter()
            .filter_map(|(name, t)| {
                let rule = rules.get(name.as_str())?;
                let (instance, state) = match &t {
                    Transition::Pending(i) => (i, None),
                    Transition::Firing(i) => (i, None),
                    Transition::Resolved { instance, .. } => (instance, Some(AlertState::Resolved)),
                };
                let v = view(rule, instance, state, mutes, &annotator);
                Some((t, v))
            })
            .collect()
    }
}

/// Values worked out once a cycle by key, shared by the threads that evaluate the rules: the
/// first to ask computes, the others asking for the same key wait for it.
struct Memo<T>(Mutex<HashMap<String, Arc<OnceLock<Arc<T>>>>>);

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo(Mutex::default())
    }
}

impl<T> Memo<T> {
    fn get(&self, key: &str, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let cell = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(key) {
                Some(cell) => cell.clone(),
                None => map.entry(key.to_owned()).or_default().clone(),
            }
        };
        cell.get_or_init(make).clone()
    }
}

/// The latest values from memory and the windows the engine keeps.
struct Source<'a> {
    metrics: &'a LiveMetrics,
    windows: &'a Windows,
    /// Label indexes of the previous cycles, used again while their metric's series are the
    /// same (see [`Source::index`]).
    kept: &'a Kept<ValueIndex>,
    /// Groupings of the previous cycles (see [`Source::aggregate`]).
    kept_groups: &'a Kept<Grouped>,
    cycle: u64,
    now: i64,
    /// The latest values of each metric read in this cycle, read once.
    latest: Memo<Latest>,
    /// The series each distinct instant selector picked in this cycle: rules over the same
    /// selector with other thresholds, and health tests, match labels once.
    selections: Memo<Selection>,
}

/// The live, matching series of one selector, as positions in its metric's [`Latest`], in
/// the metric's order: no label map is touched again to hand them out.
struct Selection {
    latest: Arc<Latest>,
    at: Vec<u32>,
}

/// One metric's latest values, and indexes of them by a label's value, made as rules ask.
struct Latest {
    series: Vec<(Arc<Labels>, i64, f64)>,
    /// By label name: the series (their positions) by the label's value (missing: the empty
    /// string, as matchers see it).
    by_label: Memo<ValueIndex>,
}

/// Positions of series by a label's value, in the metric's order. Keyed by the value itself
/// (a label has few distinct values), so a bucket holds exactly the series whose label
/// equals it and that matcher need not be checked again.
type ValueIndex = HashMap<String, Vec<u32>>;

/// How one selection's series group (see [`Source::aggregate`]): each one's group and the
/// groups' labels.
struct Grouped {
    of: Vec<u32>,
    labels: Arc<Vec<Arc<Labels>>>,
}

/// What was worked out from a list of series, by key, kept from one cycle to the next while
/// the list is the same label maps in the same order (one pointer comparison each). An entry
/// holds its maps, so no other map takes their address; one no cycle used goes.
struct Kept<T>(Mutex<HashMap<String, KeptEntry<T>>>);

struct KeptEntry<T> {
    series: Vec<Arc<Labels>>,
    value: Arc<T>,
    /// The cycle that last used it.
    used: u64,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(Mutex::default())
    }
}

impl<T> Kept<T> {
    /// The value kept for `key` if it was made of `series`, else `make`'s (kept from now on).
    fn get<'s>(
        &self,
        key: String,
        series: impl Iterator<Item = &'s Arc<Labels>> + Clone,
        cycle: u64,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = kept.get_mut(&key)
                && e.series.len() == series.clone().count()
                && e.series.iter().zip(series.clone()).all(|(a, b)| Arc::ptr_eq(a, b))
            {
                e.used = cycle;
                return e.value.clone();
            }
        }
        let value = Arc::new(make());
        let entry = KeptEntry { series: series.cloned().collect(), value: value.clone(), used: cycle };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, entry);
        value
    }

    /// Drops what `cycle` did not use.
    fn keep_used(&mut self, cycle: u64) {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner()).retain(|_, e| e.used == cycle);
    }
}

/// A label's value as matchers see it: missing is the empty string.
fn label_value<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels.get(name).map(String::as_str).unwrap_or("")
}

/// A value older than this is stale: its series is not seen (as Prometheus' 5 minutes).
const STALE_MS: i64 = 5 * 60 * 1000;

impl Source<'_> {
    fn latest(&self, name: &str) -> Arc<Latest> {
        self.latest.get(name, || Arc::new(Latest { series: self.metrics.latest(name), by_label: Memo::default() }))
    }

    /// The index of `latest` (metric `name`) by `label`. A metric's series rarely change
    /// from one cycle to the next: while they are the same label maps in the same order
    /// (one pointer comparison each), the index of an earlier cycle is used again instead of
    /// reading the label of every series.
    fn index(&self, latest: &Latest, name: &str, label: &str) -> Arc<ValueIndex> {
        latest.by_label.get(label, || {
            let series = latest.series.iter().map(|s| &s.0);
            self.kept.get(format!("{name}\u{1f}{label}"), series, self.cycle, || {
                let mut index = ValueIndex::new();
                for (i, (labels, _, _)) in latest.series.iter().enumerate() {
                    let value = label_value(labels, label);
                    match index.get_mut(value) {
                        Some(positions) => positions.push(i as u32),
                        None => {
                            index.insert(value.to_owned(), vec![i as u32]);
                        }
                    }
                }
                index
            })
        })
    }

    /// The series `name{matchers}` picks now, worked out once a cycle, and its key.
    fn selection(&self, name: &str, matchers: &[Matcher]) -> (String, Arc<Selection>) {
        let mut key = name.to_owned();
        for m in matchers {
            key.push('\u{1f}');
            key.push_str(&m.to_string());
        }
        let selection = self.selections.get(&key, || Arc::new(self.select(name, matchers)));
        (key, selection)
    }

    fn select(&self, name: &str, matchers: &[Matcher]) -> Selection {
        let latest = self.latest(name);
        let mut at = Vec::new();
        // With an equality matcher only the series with that value are looked at (in the
        // same order), through an index; the other matchers are checked.
        let equal = matchers.iter().position(|m| m.op == MatchOp::Equal);
        let mut visit = |i: u32| {
            let (labels, t, _) = &latest.series[i as usize];
            let fresh = self.now - t <= STALE_MS;
            if fresh
                && matchers
                    .iter()
                    .enumerate()
                    .all(|(j, m)| Some(j) == equal || m.is_match(label_value(labels, &m.name)))
            {
                at.push(i);
            }
        };
        match equal.map(|j| &matchers[j]) {
            Some(m) => {
                let index = self.index(&latest, name, &m.name);
                index.get(m.value.as_str()).into_iter().flatten().for_each(|i| visit(*i));
            }
            None => (0..latest.series.len() as u32).for_each(visit),
        }
        Selection { latest, at }
    }
}

impl SeriesSource for Source<'_> {
    fn entity_labels(&self, kind: &str, id: &str) -> Option<Arc<Labels>> {
        self.metrics.entity_labels(kind, id)
    }

    fn instant(&self, name: &str, matchers: &[Matcher], each: &mut dyn FnMut(&Arc<Labels>, f64)) {
        let (_, selection) = self.selection(name, matchers);
        for &i in &selection.at {
            let (labels, _, value) = &selection.latest.series[i as usize];
            each(labels, *value);
        }
    }

    fn range(&self, name: &str, matchers: &[Matcher], range: Duration, each: &mut EachWindow<'_>) {
        let from = self.now - i64::try_from(range.as_millis()).unwrap_or(i64::MAX);
        let Some(windows) = self.windows.get(name) else { return };
        let mut points = Vec::new();
        for w in windows.by_ptr.values() {
            if matches(&w.labels, matchers) {
                points.clear();
                points.extend(w.points.iter().filter(|(t, _)| *t >= from));
                each(&w.labels, &points);
            }
        }
    }

    /// The grouping of a selection's series is kept across cycles while they are the same
    /// label maps in the same order (one pointer comparison each): an aggregation then reads
    /// no label, only values.
    fn aggregate(&self, name: &str, matchers: &[Matcher], grouping: &Grouping) -> Groups {
        let (key, sel) = self.selection(name, matchers);
        let series = sel.at.iter().map(|&i| &sel.latest.series[i as usize].0);
        let grouped = self.kept_groups.get(format!("{key}\u{1e}{grouping:?}"), series.clone(), self.cycle, || {
            let (of, labels) = group(series.map(|l| &**l), grouping);
            Grouped { of, labels: Arc::new(labels.into_iter().map(Arc::new).collect()) }
        });
        let values = sel.at.iter().map(|&i| sel.latest.series[i as usize].2);
        Groups::accumulate(grouped.labels.clone(), &grouped.of, values)
    }
}

/// The alert's labels: the series', the rule's, `alertname` and `severity`.
pub fn alert_labels(rule: &CompiledRule, series: &Labels) -> BTreeMap<String, String> {
    let mut labels = series.clone();
    labels.extend(rule.labels.clone());
    labels.insert("alertname".into(), rule.name.clone());
    labels.insert("severity".into(), rule.severity.as_str().into());
    labels
}

/// The rules' annotation templates, each parsed once a cycle (not once per alert): a cycle
/// with hundreds of pending alerts renders every one's annotations.
struct Annotator {
    hb: handlebars::Handlebars<'static>,
    /// Why a template did not parse, by its name in `hb`.
    broken: HashMap<String, String>,
}

impl Annotator {
    fn new(rules: &[CompiledRule]) -> Annotator {
        let mut hb = handlebars::Handlebars::new();
        hb.register_escape_fn(handlebars::no_escape);
        let mut broken = HashMap::new();
        for rule in rules {
            for (key, template) in &rule.annotations {
                let name = Annotator::name(rule, key);
                if let Err(e) = hb.register_template_string(&name, template) {
                    broken.insert(name, e.to_string());
                }
            }
        }
        Annotator { hb, broken }
    }

    fn name(rule: &CompiledRule, key: &str) -> String {
        format!("{}\u{1f}{key}", rule.name)
    }

    /// Renders the rule's annotation templates over the alert's labels and value; a template
    /// that does not render is shown as written, with the error.
    fn annotations(
        &self,
        rule: &CompiledRule,
        labels: &BTreeMap<String, String>,
        value: f64,
    ) -> BTreeMap<String, String> {
        let ctx = serde_json::json!({ "labels": labels, "value": super::health::short(value) });
        rule.annotations
            .iter()
            .map(|(k, t)| {
                let name = Annotator::name(rule, k);
                let text = match self.broken.get(&name) {
                    Some(e) => format!("{t} (template error: {e})"),
                    None if !self.hb.has_template(&name) => t.clone(),
                    None => self.hb.render(&name, &ctx).unwrap_or_else(|e| format!("{t} (template error: {e})")),
                };
                (k.clone(), text)
            })
            .collect()
    }
}

fn view(
    rule: &CompiledRule,
    i: &Instance,
    state: Option<AlertState>,
    mutes: &Mutes,
    annotator: &Annotator,
) -> AlertView {
    let labels = alert_labels(rule, &i.labels);
    let (silenced_by, in_maintenance) = mutes.check(&labels);
    AlertView {
        rule: rule.name.clone(),
        fingerprint: notify::fingerprint(&labels),
        state: state.unwrap_or(match i.phase {
            Phase::Pending => AlertState::Pending,
            Phase::Firing => AlertState::Firing,
        }),
        severity: rule.severity,
        annotations: annotator.annotations(rule, &labels, i.value),
        labels,
        value: i.value,
        active_since: rfc3339(i.active_since),
        fired_at: i.fired_at.map(rfc3339),
        silenced_by,
        in_maintenance,
    }
}

/// What the registry and store say about the fleet now.
pub async fn gather(state: &AppState, alerts: &Alerts, now: i64) -> crate::store::Result<Fleet> {
    let mut clusters: HashMap<String, Vec<String>> = HashMap::new();
    for (cluster, host_id) in state.store.cluster_members().await? {
        clusters.entry(host_id).or_default().push(cluster);
    }
    let types: HashMap<String, String> = state
        .store
        .all_services()
        .await?
        .into_iter()
        .map(|s| (format!("{}/{}", s.cluster, s.name), s.service_type))
        .collect();
    let mut fleet = Fleet::default();
    let mut stale_now = HashSet::new();
    let mut inner = alerts.inner.lock().expect("alerts lock");
    for (host_id, hostname, status, roles) in state.registry.fleet() {
        if status == HostStatus::Decommissioned {
            continue;
        }
        let up = status == HostStatus::Healthy;
        for r in roles {
            let Some((cluster, service)) = r.service.split_once('/') else { continue };
            let reported = state.registry.role_status(&r.role_id);
            let (state_name, probe, last_error, running_revision) = match &reported {
                Some(s) => (s.state.clone(), s.health.clone(), s.last_error.clone(), s.running_revision),
                None => ("unknown".to_owned(), "unknown".to_owned(), String::new(), 0),
            };
            let stale =
                r.running && state_name == "running" && running_revision != 0 && running_revision < r.config_revision;
            let stale_seconds = if stale {
                stale_now.insert(r.role_id.clone());
                let since = *inner.stale_since.entry(r.role_id.clone()).or_insert(now);
                ((now - since) as f64 / 1000.0).max(1.0)
            } else {
                0.0
            };
            fleet.roles.push(FleetRole {
                id: r.role_id.clone(),
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                service_type: types.get(&r.service).cloned().unwrap_or_default(),
                name: r.name.clone(),
                role_type: r.role_type.clone(),
                hostname: hostname.clone(),
                host_up: up,
                wanted_running: r.running,
                state: state_name,
                probe_health: probe,
                last_error,
                stale_seconds,
            });
        }
        fleet.hosts.push(FleetHost {
            clusters: clusters.remove(&host_id).unwrap_or_default(),
            id: host_id,
            hostname,
            up,
        });
    }
    inner.stale_since.retain(|id, _| stale_now.contains(id));
    Ok(fleet)
}

/// How often host certificates' expiry is read again from the store.
const CERT_REFRESH_MS: i64 = 10 * 60 * 1000;
/// How long a failed command keeps its `command_failed` series.
const COMMAND_FAILED_WINDOW_MS: i64 = 60 * 60 * 1000;

/// The series made from the manager's own records (see [`super::engine::STATE_METRICS`]).
async fn state_series(state: &AppState, alerts: &Alerts, fleet: &mut Fleet, now: i64) -> crate::store::Result<()> {
    let one =
        |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() };
    // Host certificates: issued at enrollment for `HOST_CERT_DAYS`, not renewed.
    let stale = alerts.inner.lock().expect("alerts lock").certs_read_at.is_none_or(|t| now - t > CERT_REFRESH_MS);
    if stale {
        let mut expiry = HashMap::new();
        for h in state.store.all_hosts().await? {
            if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&h.enrolled_at) {
                let ends = at.timestamp_millis() + crate::pki::HOST_CERT_DAYS * 86_400_000;
                expiry.insert(h.hostname.clone(), ends);
            }
        }
        let mut inner = alerts.inner.lock().expect("alerts lock");
        inner.cert_expiry = expiry;
        inner.certs_read_at = Some(now);
    }
    {
        let inner = alerts.inner.lock().expect("alerts lock");
        for h in &fleet.hosts {
            if let Some(ends) = inner.cert_expiry.get(&h.hostname) {
                let left = ((ends - now) / 1000) as f64;
                fleet.state_series.push(("host_certificate_expires_in_seconds", one(&[("host", &h.hostname)]), left));
            }
            for p in state.registry.parcel_status(&h.id) {
                if p.state == "failed" {
                    let error: String = p.error.chars().take(200).collect();
                    let labels =
                        one(&[("host", &h.hostname), ("parcel", &p.name), ("version", &p.version), ("error", &error)]);
                    fleet.state_series.push(("parcel_distribution_failed", labels, 1.0));
                }
            }
        }
    }
    let filter = crate::store::CommandFilter { state: Some("failed".into()), limit: 200, ..Default::default() };
    for c in state.store.search_commands(&filter).await? {
        if c.finished_at.is_some_and(|t| now - t <= COMMAND_FAILED_WINDOW_MS) {
            let labels =
                one(&[("cluster", &c.cluster), ("service", &c.service), ("command", &c.id), ("name", &c.name)]);
            fleet.state_series.push(("command_failed", labels, 1.0));
        }
    }
    Ok(())
}

/// Active silences and maintenance mode, as the store has them now.
async fn mutes(state: &AppState, fleet: &Fleet, now: i64) -> crate::store::Result<Mutes> {
    let mut m = Mutes::default();
    for s in state.store.active_silences(now).await? {
        if let Some(matchers) = crate::domain::alerts::compile_silence(&s) {
            m.silences.push((s.id, matchers));
        }
    }
    for r in state.store.maintenance_list().await? {
        match r.kind.as_str() {
            "host" => m.hosts.insert(r.target),
            "service" => m.services.insert(r.target),
            _ => m.clusters.insert(r.target),
        };
    }
    m.host_clusters = fleet.hosts.iter().map(|h| (h.hostname.clone(), h.clusters.clone())).collect();
    Ok(m)
}

/// One cycle: gather, evaluate, record each transition as an event and in the alert history,
/// and hand firing and resolved alerts that nothing mutes to the notifier.
pub async fn run_cycle(state: &AppState) -> crate::store::Result<usize> {
    let alerts = &state.alerts;
    let now = now_millis();
    let mut fleet = gather(state, alerts, now).await?;
    state_series(state, alerts, &mut fleet, now).await?;
    let rules = crate::domain::alerts::effective_rules(state).await?;
    let mutes = mutes(state, &fleet, now).await?;
    let transitions = alerts.cycle(&fleet, &state.registry.metrics, rules, &mutes, now);
    let n = transitions.len();
    let mut history = Vec::with_capacity(n);
    for (t, v) in transitions {
        let (instance, kind, at) = match &t {
            Transition::Pending(i) => (i, "alert_pending", now),
            Transition::Firing(i) => (i, "alert_firing", now),
            Transition::Resolved { instance, at } => (instance, "alert_resolved", *at),
        };
        let suppressed = !v.silenced_by.is_empty() || v.in_maintenance;
        let summary = v.annotations.get("summary").cloned().unwrap_or_else(|| format!("{:?}", v.labels));
        let severity = match (kind, v.severity) {
            ("alert_resolved", _) | (_, Severity::Info) => "info",
            (_, Severity::Warning) => "warning",
            (_, Severity::Critical) => "error",
        };
        let muted = if suppressed { " (muted)" } else { "" };
        state.registry.push_alert_event(severity, kind, &v.fingerprint, format!("{}: {summary}{muted}", v.rule));
        history.push(crate::store::AlertHistoryRec {
            id: 0,
            at,
            rule: v.rule.clone(),
            fingerprint: v.fingerprint.clone(),
            state: match t {
                Transition::Pending(_) => AlertState::Pending,
                Transition::Firing(_) => AlertState::Firing,
                Transition::Resolved { .. } => AlertState::Resolved,
            },
            severity: v.severity,
            labels: v.labels.clone(),
            value: v.value,
            summary,
            suppressed,
        });
        let Some(notifier) = alerts.notifier().filter(|_| !suppressed) else { continue };
        let alert = notify::Alert {
            fingerprint: v.fingerprint,
            labels: v.labels,
            annotations: v.annotations,
            state: notify::AlertState::Firing,
            starts_at: chrono::DateTime::from_timestamp_millis(instance.active_since).unwrap_or_default(),
            ends_at: None,
            generator_url: String::new(),
        };
        match t {
            Transition::Firing(_) => notifier.notify(alert),
            Transition::Resolved { at, .. } => {
                notifier.notify(alert.resolved_at(chrono::DateTime::from_timestamp_millis(at).unwrap_or_default()))
            }
            Transition::Pending(_) => {}
        }
    }
    if !history.is_empty() {
        state.store.insert_alert_history(&history).await?;
    }
    Ok(n)
}

/// Evaluates every `interval` until `stop`.
pub async fn run(state: Arc<AppState>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = run_cycle(&state).await {
                    tracing::error!(error = %e, "alert evaluation failed; will run again");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Whether `name` is a health series the engine makes.
pub fn is_health_metric(name: &str) -> bool {
    HEALTH_METRICS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::expr::Condition;
    use crate::alerts::state::Timing;

    fn heartbeat(metrics: &LiveMetrics, host: &str, at: i64, cpu: f64) {
        let m = crate::registry::testing::host_metrics(cpu);
        metrics.record(&format!("id-{host}"), host, at, &m, &[]);
    }

    fn rule(name: &str, expr: &str) -> CompiledRule {
        CompiledRule {
            name: name.to_owned(),
            condition: Condition::compile(expr, &|_| true).expect("compile"),
            timing: Timing::default(),
            severity: Severity::Warning,
            labels: Labels::new(),
            annotations: [("summary".to_owned(), "{{labels.host}} at {{value}}".to_owned())].into(),
            builtin: false,
        }
    }

    /// (rule, state, host, value) of each transition, sorted.
    fn cycle(alerts: &Alerts, metrics: &LiveMetrics, now: i64) -> Vec<(String, String, String, f64)> {
        let rules = vec![
            rule("h2-hot", r#"host_cpu_percent{host="h2"} > 50"#),
            rule("h0-hot", r#"host_cpu_percent{host="h0"} > 50"#),
            rule("busiest", "max(host_cpu_percent) > 75"),
            rule("hot-host", "max by (host) (host_cpu_percent) > 85"),
        ];
        let mut out: Vec<_> = alerts
            .cycle(&Fleet::default(), metrics, rules, &Mutes::default(), now)
            .into_iter()
            .map(|(_, v)| {
                (v.rule, format!("{:?}", v.state), v.labels.get("host").cloned().unwrap_or_default(), v.value)
            })
            .collect();
        out.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        out
    }

    #[test]
    fn indexes_and_groupings_kept_across_cycles_follow_new_series_and_new_values() {
        let (alerts, metrics) = (Alerts::new(None).expect("alerts"), LiveMetrics::default());
        let t = 1_700_000_000_000;
        heartbeat(&metrics, "h1", t, 10.0);
        heartbeat(&metrics, "h2", t, 60.0);
        let fired = |rule: &str, host: &str, v: f64| (rule.to_owned(), "Firing".to_owned(), host.to_owned(), v);
        let resolved = |rule: &str, host: &str, v: f64| (rule.to_owned(), "Resolved".to_owned(), host.to_owned(), v);
        assert_eq!(cycle(&alerts, &metrics, t), [fired("h2-hot", "h2", 60.0)]);
        // The same series with new values: the index of the last cycle is used again.
        heartbeat(&metrics, "h2", t + 10_000, 20.0);
        assert_eq!(cycle(&alerts, &metrics, t + 10_000), [resolved("h2-hot", "h2", 60.0)]);
        // A new series: the index is made again and finds it, and the old ones still.
        heartbeat(&metrics, "h0", t + 20_000, 90.0);
        heartbeat(&metrics, "h2", t + 20_000, 70.0);
        assert_eq!(
            cycle(&alerts, &metrics, t + 20_000),
            [
                fired("busiest", "", 90.0),
                fired("h0-hot", "h0", 90.0),
                fired("h2-hot", "h2", 70.0),
                fired("hot-host", "h0", 90.0)
            ]
        );
        heartbeat(&metrics, "h0", t + 30_000, 10.0);
        heartbeat(&metrics, "h2", t + 30_000, 80.0);
        // Still firing (no transition) at the new values; h0 resolves.
        assert_eq!(
            cycle(&alerts, &metrics, t + 30_000),
            [resolved("h0-hot", "h0", 90.0), resolved("hot-host", "h0", 90.0)]
        );
        let active = alerts.active();
        let value = |rule: &str| active.iter().find(|a| a.rule == rule).map(|a| a.value);
        assert_eq!((value("h2-hot"), value("busiest"), value("h0-hot")), (Some(80.0), Some(80.0), None));
        // The groups kept from the last cycle, with new values.
        heartbeat(&metrics, "h1", t + 40_000, 95.0);
        assert_eq!(cycle(&alerts, &metrics, t + 40_000), [fired("hot-host", "h1", 95.0)]);
    }
}
