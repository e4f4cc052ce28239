//! Alert rules, silences, maintenance mode and the alert history: what the alert engine
//! reads each cycle and what it writes, with the checks and audit of every change.
//!
//! Permissions: reading needs `read` (anywhere); rules change with `config.write` held
//! globally (admins, and cluster-admins or configurators granted on the whole fleet: rules
//! are fleet-wide configuration); silences and maintenance need `commands.run` (operators)
//! on the cluster they concern: a silence with a `cluster=NAME` matcher on that cluster,
//! any other silence globally; a service or cluster in maintenance on its cluster, a host
//! on a cluster it is in (or globally).

use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;

pub use drover_api::alerts::{
    AlertHistoryEntry, AlertRuleSpec, AlertRuleView, AlertState, LabelMatcher, MaintenanceView, SilenceSpec,
    SilenceView,
};

use super::{Actor, DomainError, Permission, Result, Scope};
use crate::AppState;
use crate::alerts::catalog::known_metric;
use crate::alerts::engine::{CompiledRule, builtin_rules};
use crate::alerts::expr::{Condition, Labels, parse_duration};
use crate::alerts::state::Timing;
use crate::model::{now_millis, rfc3339};
use crate::store::{AlertHistoryFilter, AlertHistoryRec, AlertRuleRec, MaintenanceRec, SilenceRec};

/// The permission that changes alert rules (globally).
pub const RULES_PERMISSION: Permission = Permission::ConfigWrite;
/// The permission that sets silences and maintenance mode.
pub const SILENCE_PERMISSION: Permission = Permission::CommandsRun;

/// Most rules an import may hold.
pub const MAX_IMPORT_RULES: usize = 1000;
/// Most history entries one request lists.
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// Expired silences stay listed this long.
const EXPIRED_LISTED_MS: i64 = 24 * 3600 * 1000;

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

/// Rule names: 1-63 lower-case letters, digits, `_` and `-`, starting with a letter or digit.
pub fn validate_rule_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if name == "export" || name == "import" {
        return Err(invalid(format!(
            "invalid rule name {name:?}: reserved (/api/v1/alert-rules/{name} is the rules' {name})"
        )));
    }
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid rule name {name:?}: 1-63 lower-case letters, digits, '_' or '-', starting with a letter or digit"
        )))
    }
}

fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a rule and compiles it; every refusal names the rule and the problem.
pub fn compile_rule(spec: &AlertRuleSpec, builtin: bool, known: &dyn Fn(&str) -> bool) -> Result<CompiledRule> {
    validate_rule_name(&spec.name)?;
    let name = &spec.name;
    let bad = |msg: String| invalid(format!("rule {name}: {msg}"));
    if spec.description.len() > 4096 {
        return Err(bad("description: longer than 4096 characters".into()));
    }
    if spec.expr.trim().is_empty() {
        return Err(bad("expr: empty; write a condition such as `host_disk_used_ratio > 0.9`".into()));
    }
    let condition = Condition::compile(&spec.expr, known).map_err(|e| bad(format!("expr: {e}")))?;
    let duration = |field: &str, v: &Option<String>| -> Result<Duration> {
        match v {
            None => Ok(Duration::ZERO),
            Some(t) => parse_duration(field, t).map_err(|e| bad(e.to_string())),
        }
    };
    let timing = Timing {
        for_: duration("for", &spec.for_)?,
        keep_firing_for: duration("keep_firing_for", &spec.keep_firing_for)?,
    };
    for (k, v) in &spec.labels {
        if !valid_label_name(k) {
            return Err(bad(format!("label {k:?}: names are letters, digits and '_', not starting with a digit")));
        }
        if k == "alertname" || k == "severity" {
            return Err(bad(format!("label {k:?} is set by Drover and may not be given")));
        }
        if v.len() > 1024 {
            return Err(bad(format!("label {k:?}: value longer than 1024 characters")));
        }
    }
    for (k, t) in &spec.annotations {
        if !valid_label_name(k) {
            return Err(bad(format!("annotation {k:?}: names are letters, digits and '_', not starting with a digit")));
        }
        handlebars::Template::compile(t).map_err(|e| bad(format!("annotation {k}: invalid template: {e}")))?;
    }
    Ok(CompiledRule {
        name: name.clone(),
        condition,
        timing,
        severity: spec.severity,
        labels: spec.labels.clone().into_iter().collect::<Labels>(),
        annotations: spec.annotations.clone(),
        builtin,
    })
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A built-in rule as written.
fn builtin_spec(r: &CompiledRule) -> AlertRuleSpec {
    AlertRuleSpec {
        name: r.name.clone(),
        description: "built-in rule".into(),
        expr: r.condition.text.clone(),
        for_: Some(fmt_duration(r.timing.for_)),
        keep_firing_for: Some(fmt_duration(r.timing.keep_firing_for)),
        severity: r.severity,
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone(),
        enabled: true,
    }
}

fn builtins() -> Result<Vec<CompiledRule>> {
    builtin_rules(&crate::alerts::catalog::in_catalogue)
        .map_err(|e| DomainError::Internal(format!("built-in alert rules: {e}")))
}

/// Every rule in effect or disabled: built-ins (with their overrides) and user rules, by name.
async fn all_rules(state: &AppState) -> Result<Vec<AlertRuleView>> {
    let mut stored: BTreeMap<String, AlertRuleRec> =
        state.store.alert_rules().await?.into_iter().map(|r| (r.spec.name.clone(), r)).collect();
    let mut out = Vec::new();
    for b in builtins()? {
        let view = match stored.remove(&b.name) {
            Some(r) => rule_view(r, true),
            None => AlertRuleView { spec: builtin_spec(&b), builtin: true, updated_at: None, updated_by: None },
        };
        out.push(view);
    }
    out.extend(stored.into_values().map(|r| rule_view(r, false)));
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(out)
}

fn rule_view(r: AlertRuleRec, builtin: bool) -> AlertRuleView {
    AlertRuleView { spec: r.spec, builtin, updated_at: Some(rfc3339(r.updated_at)), updated_by: Some(r.updated_by) }
}

/// The rules the engine evaluates: built-ins unless overridden, overrides and user rules that
/// are enabled. A stored rule that no longer compiles (a metric left the catalogue) is
/// skipped and logged.
pub async fn effective_rules(state: &AppState) -> crate::store::Result<Vec<CompiledRule>> {
    let known = |n: &str| known_metric(state, n);
    let mut stored: BTreeMap<String, AlertRuleRec> =
        state.store.alert_rules().await?.into_iter().map(|r| (r.spec.name.clone(), r)).collect();
    let mut out = Vec::new();
    for b in builtins().unwrap_or_default() {
        match stored.get_mut(&b.name) {
            None => out.push(b),
            Some(r) => r.builtin = true,
        }
    }
    for r in stored.into_values().filter(|r| r.spec.enabled) {
        match compile_rule(&r.spec, r.builtin, &known) {
            Ok(c) => out.push(c),
            Err(e) => tracing::warn!(rule = %r.spec.name, error = %e, "alert rule skipped"),
        }
    }
    Ok(out)
}

pub async fn list_rules(state: &AppState, actor: &Actor) -> Result<Vec<AlertRuleView>> {
    actor.require(Permission::Read, Scope::Any)?;
    all_rules(state).await
}

pub async fn get_rule(state: &AppState, actor: &Actor, name: &str) -> Result<AlertRuleView> {
    actor.require(Permission::Read, Scope::Any)?;
    all_rules(state)
        .await?
        .into_iter()
        .find(|r| r.spec.name == name)
        .ok_or_else(|| DomainError::NotFound(format!("alert rule {name} not found")))
}

fn is_builtin(name: &str) -> Result<bool> {
    Ok(builtins()?.iter().any(|b| b.name == name))
}

/// Creates a user rule; a rule of that name (stored or built-in) is a conflict.
pub async fn create_rule(state: &AppState, actor: &Actor, spec: AlertRuleSpec) -> Result<AlertRuleView> {
    let granted = actor.require(RULES_PERMISSION, Scope::Global)?;
    compile_rule(&spec, false, &|n| known_metric(state, n))?;
    if is_builtin(&spec.name)? {
        return Err(DomainError::Conflict(format!(
            "alert rule {} is built in; change it with PUT /api/v1/alert-rules/{}",
            spec.name, spec.name
        )));
    }
    if state.store.alert_rule(&spec.name).await?.is_some() {
        return Err(DomainError::Conflict(format!("alert rule {} already exists", spec.name)));
    }
    let rec = AlertRuleRec { spec, builtin: false, updated_at: now_millis(), updated_by: actor.username.clone() };
    state.store.put_alert_rules(std::slice::from_ref(&rec)).await?;
    state
        .audit(granted.audit(
            "alert_rule.create",
            "alert_rule",
            &rec.spec.name,
            format!("created rule: {}", rec.spec.expr),
        ))
        .await;
    Ok(rule_view(rec, false))
}

/// Creates or replaces the rule `name` (for a built-in: its override).
pub async fn put_rule(state: &AppState, actor: &Actor, name: &str, spec: AlertRuleSpec) -> Result<AlertRuleView> {
    let granted = actor.require(RULES_PERMISSION, Scope::Global)?;
    if spec.name != name {
        return Err(invalid(format!("the body names rule {:?} but the path names {name:?}", spec.name)));
    }
    let builtin = is_builtin(name)?;
    compile_rule(&spec, builtin, &|n| known_metric(state, n))?;
    let rec = AlertRuleRec { spec, builtin, updated_at: now_millis(), updated_by: actor.username.clone() };
    state.store.put_alert_rules(std::slice::from_ref(&rec)).await?;
    let what = if builtin { "overrode built-in rule" } else { "set rule" };
    state
        .audit(granted.audit(
            "alert_rule.update",
            "alert_rule",
            name,
            format!("{what}: {} (enabled: {})", rec.spec.expr, rec.spec.enabled),
        ))
        .await;
    Ok(rule_view(rec, builtin))
}

/// Deletes a user rule, or resets a built-in one to its default.
pub async fn delete_rule(state: &AppState, actor: &Actor, name: &str) -> Result<()> {
    let granted = actor.require(RULES_PERMISSION, Scope::Global)?;
    let builtin = is_builtin(name)?;
    let deleted = state.store.delete_alert_rule(name).await?;
    if !builtin && !deleted {
        return Err(DomainError::NotFound(format!("alert rule {name} not found")));
    }
    let what = if builtin { "reset built-in rule to its default" } else { "deleted rule" };
    state.audit(granted.audit("alert_rule.delete", "alert_rule", name, what)).await;
    Ok(())
}

/// Every rule as YAML (a list of rule specs), as [`import_rules`] takes it.
pub async fn export_rules(state: &AppState, actor: &Actor) -> Result<String> {
    let specs: Vec<AlertRuleSpec> = list_rules(state, actor).await?.into_iter().map(|r| r.spec).collect();
    serde_norway::to_string(&specs).map_err(|e| DomainError::Internal(format!("YAML: {e}")))
}

/// Sets every rule of a YAML list (or `{rules: [...]}`), all or nothing: one bad rule refuses
/// the import, naming it. Rules not in the list are left as they are.
pub async fn import_rules(state: &AppState, actor: &Actor, yaml: &str) -> Result<Vec<AlertRuleView>> {
    let granted = actor.require(RULES_PERMISSION, Scope::Global)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        rules: Vec<AlertRuleSpec>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<serde_norway::Value>),
        Doc(Doc),
    }
    if yaml.trim().is_empty() {
        return Err(invalid("empty import: give a YAML list of rules"));
    }
    let values = match serde_norway::from_str::<Either>(yaml) {
        Ok(Either::List(v)) => v,
        Ok(Either::Doc(d)) => {
            d.rules.into_iter().map(|r| serde_norway::to_value(r).unwrap_or(serde_norway::Value::Null)).collect()
        }
        Err(_) => {
            // Say what is wrong with the document itself.
            let e = serde_norway::from_str::<Vec<serde_norway::Value>>(yaml).err();
            return Err(invalid(format!(
                "invalid YAML: expected a list of rules{}",
                e.map(|e| format!(": {e}")).unwrap_or_default()
            )));
        }
    };
    if values.is_empty() {
        return Err(invalid("empty import: the list holds no rules"));
    }
    if values.len() > MAX_IMPORT_RULES {
        return Err(invalid(format!("too many rules: {} (at most {MAX_IMPORT_RULES})", values.len())));
    }
    let builtin: Vec<String> = builtins()?.into_iter().map(|b| b.name).collect();
    let known = |n: &str| known_metric(state, n);
    let now = now_millis();
    let mut recs: Vec<AlertRuleRec> = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let label = v
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("rule #{}", i + 1), |n| format!("rule #{} ({n})", i + 1));
        let spec: AlertRuleSpec = serde_norway::from_value(v).map_err(|e| invalid(format!("{label}: {e}")))?;
        if recs.iter().any(|r| r.spec.name == spec.name) {
            return Err(invalid(format!("{label}: rule {} is given twice", spec.name)));
        }
        let is_builtin = builtin.contains(&spec.name);
        compile_rule(&spec, is_builtin, &known)?;
        recs.push(AlertRuleRec { spec, builtin: is_builtin, updated_at: now, updated_by: actor.username.clone() });
    }
    state.store.put_alert_rules(&recs).await?;
    let names: Vec<&str> = recs.iter().map(|r| r.spec.name.as_str()).collect();
    state
        .audit(granted.audit(
            "alert_rule.import",
            "alert_rule",
            "*",
            format!("imported {} rules: {}", names.len(), names.join(", ")),
        ))
        .await;
    Ok(recs
        .into_iter()
        .map(|r| {
            let b = r.builtin;
            rule_view(r, b)
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Silences
// ---------------------------------------------------------------------------

/// A matcher ready to test labels.
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    pub name: String,
    negate: bool,
    kind: MatchKind,
}

#[derive(Debug, Clone)]
enum MatchKind {
    Eq(String),
    Re(Regex),
}

impl CompiledMatcher {
    /// Checks a matcher: a label name, `=`, `!=`, `=~` or `!~`, and a regex that compiles
    /// (anchored at both ends).
    pub fn compile(m: &LabelMatcher) -> Result<CompiledMatcher> {
        if !valid_label_name(&m.name) {
            return Err(invalid(format!(
                "matcher {:?}: invalid label name; names are letters, digits and '_', not starting with a digit",
                m.name
            )));
        }
        if m.value.len() > 1024 {
            return Err(invalid(format!("matcher {}: value longer than 1024 characters", m.name)));
        }
        let re = || {
            regex::RegexBuilder::new(&format!("^(?:{})$", m.value))
                .size_limit(1 << 20)
                .build()
                .map(MatchKind::Re)
                .map_err(|e| {
                    invalid(format!("matcher {}{}{:?}: invalid regular expression: {e}", m.name, m.op, m.value))
                })
        };
        let (negate, kind) = match m.op.as_str() {
            "=" => (false, MatchKind::Eq(m.value.clone())),
            "!=" => (true, MatchKind::Eq(m.value.clone())),
            "=~" => (false, re()?),
            "!~" => (true, re()?),
            other => {
                return Err(invalid(format!("matcher {}: unknown operator {other:?}; use =, !=, =~ or !~", m.name)));
            }
        };
        Ok(CompiledMatcher { name: m.name.clone(), negate, kind })
    }

    /// Whether the labels satisfy it (a missing label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        let hit = match &self.kind {
            MatchKind::Eq(s) => s == v,
            MatchKind::Re(r) => r.is_match(v),
        };
        hit != self.negate
    }
}

/// A silence's compiled matchers, for the engine: every one must match.
pub fn compile_silence(s: &SilenceRec) -> Option<Vec<CompiledMatcher>> {
    s.matchers.iter().map(CompiledMatcher::compile).collect::<Result<Vec<_>>>().ok()
}

/// Whether every matcher matches `labels`.
pub fn silence_matches(matchers: &[CompiledMatcher], labels: &BTreeMap<String, String>) -> bool {
    !matchers.is_empty() && matchers.iter().all(|m| m.matches(labels))
}

/// The cluster a silence concerns: one `cluster=NAME` matcher.
fn silence_cluster(matchers: &[LabelMatcher]) -> Option<&str> {
    matchers.iter().find(|m| m.name == "cluster" && m.op == "=").map(|m| m.value.as_str())
}

fn silence_view(s: SilenceRec, now: i64) -> SilenceView {
    SilenceView {
        state: if s.ends_at > now { "active" } else { "expired" }.into(),
        id: s.id,
        matchers: s.matchers,
        starts_at: rfc3339(s.starts_at),
        ends_at: rfc3339(s.ends_at),
        created_by: s.created_by,
        comment: s.comment,
    }
}

/// Active silences and those that ended in the last day, newest first.
pub async fn list_silences(state: &AppState, actor: &Actor) -> Result<Vec<SilenceView>> {
    actor.require(Permission::Read, Scope::Any)?;
    let now = now_millis();
    Ok(state.store.silences(now - EXPIRED_LISTED_MS).await?.into_iter().map(|s| silence_view(s, now)).collect())
}

pub async fn get_silence(state: &AppState, actor: &Actor, id: &str) -> Result<SilenceView> {
    actor.require(Permission::Read, Scope::Any)?;
    let s = state.store.silence(id).await?.ok_or_else(|| DomainError::NotFound(format!("silence {id} not found")))?;
    Ok(silence_view(s, now_millis()))
}

/// Creates a silence from now until `ends_at` or for `duration`.
pub async fn create_silence(state: &AppState, actor: &Actor, spec: SilenceSpec) -> Result<SilenceView> {
    if spec.matchers.is_empty() {
        return Err(invalid(
            "matchers: give at least one, e.g. {\"name\": \"host\", \"op\": \"=\", \"value\": \"db1\"}",
        ));
    }
    if spec.matchers.len() > 32 {
        return Err(invalid("matchers: at most 32"));
    }
    for m in &spec.matchers {
        CompiledMatcher::compile(m)?;
    }
    let scope = match silence_cluster(&spec.matchers) {
        Some(c) => Scope::Cluster(c),
        None => Scope::Global,
    };
    let granted = actor.require(SILENCE_PERMISSION, scope)?;
    if spec.comment.len() > 4096 {
        return Err(invalid("comment: longer than 4096 characters"));
    }
    let now = now_millis();
    let ends_at = match (&spec.ends_at, &spec.duration) {
        (Some(_), Some(_)) => return Err(invalid("give ends_at or duration, not both")),
        (None, None) => return Err(invalid("give ends_at (RFC 3339) or duration (such as 2h)")),
        (Some(t), None) => chrono::DateTime::parse_from_rfc3339(t).map(|t| t.timestamp_millis()).map_err(|e| {
            invalid(format!("ends_at: {t:?} is not an RFC 3339 time such as 2026-01-02T03:04:05Z: {e}"))
        })?,
        (None, Some(d)) => {
            let d = parse_duration("duration", d).map_err(|e| invalid(e.to_string()))?;
            let ms = i64::try_from(d.as_millis()).ok().filter(|ms| *ms <= 10 * 365 * 24 * 3600 * 1000);
            let ms = ms.ok_or_else(|| invalid("duration: at most 10 years"))?;
            now + ms
        }
    };
    if ends_at <= now {
        return Err(invalid(format!("ends_at: {} is not in the future", rfc3339(ends_at))));
    }
    let rec = SilenceRec {
        id: uuid::Uuid::new_v4().to_string(),
        matchers: spec.matchers,
        starts_at: now,
        ends_at,
        created_by: actor.username.clone(),
        comment: spec.comment,
    };
    state.store.insert_silence(&rec).await?;
    let text: Vec<String> = rec.matchers.iter().map(|m| format!("{}{}{:?}", m.name, m.op, m.value)).collect();
    state
        .audit(granted.audit(
            "silence.create",
            "silence",
            &rec.id,
            format!("silenced {{{}}} until {}", text.join(", "), rfc3339(ends_at)),
        ))
        .await;
    Ok(silence_view(rec, now))
}

/// Expires a silence now.
pub async fn expire_silence(state: &AppState, actor: &Actor, id: &str) -> Result<SilenceView> {
    let Some(s) = state.store.silence(id).await? else {
        // Who may not silence anything learns nothing of which silences exist.
        actor.require(SILENCE_PERMISSION, Scope::Any)?;
        return Err(DomainError::NotFound(format!("silence {id} not found")));
    };
    let scope = match silence_cluster(&s.matchers) {
        Some(c) => Scope::Cluster(c),
        None => Scope::Global,
    };
    let granted = actor.require(SILENCE_PERMISSION, scope)?;
    let now = now_millis();
    if !state.store.expire_silence(id, now).await? {
        return Err(DomainError::Conflict(format!("silence {id} has already expired")));
    }
    state.audit(granted.audit("silence.expire", "silence", id, "expired silence")).await;
    Ok(silence_view(SilenceRec { ends_at: now, ..s }, now))
}

// ---------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------

fn maintenance_view(m: MaintenanceRec) -> MaintenanceView {
    MaintenanceView { kind: m.kind, target: m.target, since: rfc3339(m.since), by: m.by, comment: m.comment }
}

pub async fn list_maintenance(state: &AppState, actor: &Actor) -> Result<Vec<MaintenanceView>> {
    actor.require(Permission::Read, Scope::Any)?;
    Ok(state.store.maintenance_list().await?.into_iter().map(maintenance_view).collect())
}

/// Checks that the target exists and the caller may put it in maintenance (or take it out).
async fn maintenance_grant<'a>(
    state: &AppState,
    actor: &'a Actor,
    kind: &str,
    target: &str,
) -> Result<super::Granted<'a>> {
    match kind {
        "cluster" => {
            super::load_cluster(state, target).await?;
            actor.require(SILENCE_PERMISSION, Scope::Cluster(target))
        }
        "service" => {
            let Some((cluster, service)) = target.split_once('/') else {
                return Err(invalid(format!("service target {target:?}: write it as CLUSTER/SERVICE")));
            };
            super::load_service(state, cluster, service).await?;
            actor.require(SILENCE_PERMISSION, Scope::Cluster(cluster))
        }
        "host" => {
            let id = state
                .store
                .host_id_by_hostname(target)
                .await?
                .ok_or_else(|| DomainError::NotFound(format!("host {target} not found")))?;
            super::hosts::require_on_host(state, actor, SILENCE_PERMISSION, &id).await
        }
        other => Err(invalid(format!("unknown maintenance kind {other:?}: host, service or cluster"))),
    }
}

/// Puts a host, service (`cluster/service`) or cluster in maintenance mode.
pub async fn set_maintenance(
    state: &AppState,
    actor: &Actor,
    kind: &str,
    target: &str,
    comment: &str,
) -> Result<MaintenanceView> {
    let granted = maintenance_grant(state, actor, kind, target).await?;
    if comment.len() > 4096 {
        return Err(invalid("comment: longer than 4096 characters"));
    }
    let rec = MaintenanceRec {
        kind: kind.to_owned(),
        target: target.to_owned(),
        since: now_millis(),
        by: actor.username.clone(),
        comment: comment.to_owned(),
    };
    state.store.set_maintenance(&rec).await?;
    state.audit(granted.audit("maintenance.on", kind, target, format!("maintenance mode on: {comment}"))).await;
    Ok(maintenance_view(rec))
}

/// Takes a host, service or cluster out of maintenance mode.
pub async fn clear_maintenance(state: &AppState, actor: &Actor, kind: &str, target: &str) -> Result<()> {
    let granted = maintenance_grant(state, actor, kind, target).await?;
    if !state.store.clear_maintenance(kind, target).await? {
        return Err(DomainError::NotFound(format!("{kind} {target} is not in maintenance mode")));
    }
    state.audit(granted.audit("maintenance.off", kind, target, "maintenance mode off")).await;
    Ok(())
}

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------

/// Records transitions (the engine calls this each cycle with what happened).
pub async fn record_history(state: &AppState, entries: &[AlertHistoryRec]) -> crate::store::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    state.store.insert_alert_history(entries).await
}

/// History entries, newest first; entries of a cluster the caller may not read are left out.
pub async fn history(state: &AppState, actor: &Actor, filter: AlertHistoryFilter) -> Result<Vec<AlertHistoryEntry>> {
    actor.require(Permission::Read, Scope::Any)?;
    if filter.limit == 0 || filter.limit > MAX_HISTORY_LIMIT {
        return Err(invalid(format!("limit: between 1 and {MAX_HISTORY_LIMIT}")));
    }
    let visible = actor.visible();
    Ok(state
        .store
        .alert_history(&filter)
        .await?
        .into_iter()
        .filter(|e| e.labels.get("cluster").is_none_or(|c| visible.contains(c)))
        .map(|e| AlertHistoryEntry {
            id: e.id,
            at: rfc3339(e.at),
            rule: e.rule,
            fingerprint: e.fingerprint,
            state: e.state,
            severity: e.severity,
            labels: e.labels,
            value: e.value,
            summary: e.summary,
            suppressed: e.suppressed,
        })
        .collect())
}
