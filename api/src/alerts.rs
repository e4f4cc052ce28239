//! Health and alerts: the health tree (`GET /api/v1/health`), alerts (`/api/v1/alerts`,
//! `/api/v1/alerts/history`), alert rules (`/api/v1/alert-rules`), silences
//! (`/api/v1/silences`) and maintenance mode.
//!
//! A rule's condition is an expression over metrics, a PromQL subset (see docs/alerts.md):
//! `redis_memory_used_ratio > 0.9`, `increase(role_restarts_total[10m]) > 3`,
//! `max by (service) (zookeeper_outstanding_requests) >= 100`. Health states are metrics too:
//! `host_up`, `role_health_status`, `service_health_status`, `cluster_health_status` (0 good,
//! 1 concerning, 2 bad).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// good, concerning or bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = EntityHealthStatus)]
pub enum HealthStatus {
    Good,
    Concerning,
    Bad,
}

/// One health test's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthTestView {
    pub test: String,
    pub status: HealthStatus,
    /// The value that decided it, when a metric did.
    pub value: Option<f64>,
    pub summary: String,
}

/// An entity's health and what decided it, with its children (a cluster's services and
/// hosts, a service's roles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthNode {
    /// `cluster`, `service`, `role` or `host`.
    pub kind: String,
    /// `prod`, `prod/cache`, `prod/cache/cache-primary` or a hostname.
    pub name: String,
    pub status: HealthStatus,
    pub tests: Vec<HealthTestView>,
    /// In maintenance mode: its alerts are suppressed.
    pub maintenance: bool,
    #[schema(no_recursion)]
    pub children: Vec<HealthNode>,
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    Firing,
    Resolved,
}

/// A pending or firing alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    pub rule: String,
    /// Stable id of the alert: a hash of its rule and labels.
    pub fingerprint: String,
    pub state: AlertState,
    pub severity: Severity,
    /// The series' labels plus the rule's (and `alertname`, `severity`).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    /// RFC 3339: when the condition began to hold.
    pub active_since: String,
    pub fired_at: Option<String>,
    /// Ids of the silences that mute it.
    pub silenced_by: Vec<String>,
    /// Its host, service or cluster is in maintenance mode.
    pub in_maintenance: bool,
}

/// One transition of an alert, kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertHistoryEntry {
    pub id: i64,
    pub at: String,
    pub rule: String,
    pub fingerprint: String,
    pub state: AlertState,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub summary: String,
    /// Muted by a silence or maintenance mode when it happened: no notification was sent.
    pub suppressed: bool,
}

/// An alert rule as written (REST body, YAML import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleSpec {
    /// Unique; lower-case letters, digits, `_` and `-`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The condition, e.g. `redis_memory_used_ratio > 0.9`.
    pub expr: String,
    /// How long the condition must hold before the alert fires (`5m`); default `0s`.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// How long it keeps firing after the condition clears; default `0s`.
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    pub severity: Severity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Handlebars templates over `labels` and `value`, e.g.
    /// `summary: "{{labels.host}} is {{value}} full"`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A rule as the API shows it. Its schema is [`AlertRuleViewSchema`]'s: the spec's
/// fields written out, since a flattened spec would bring the spec's "no other
/// properties" into an answer that has more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRuleView {
    #[serde(flatten)]
    pub spec: AlertRuleSpec,
    /// Shipped with Drover: may be disabled or have its thresholds changed, not deleted.
    pub builtin: bool,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

impl utoipa::PartialSchema for AlertRuleView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        AlertRuleViewSchema::schema()
    }
}

impl ToSchema for AlertRuleView {
    fn name() -> std::borrow::Cow<'static, str> {
        "AlertRuleView".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        AlertRuleViewSchema::schemas(schemas);
    }
}

/// A rule as the API shows it: what [`AlertRuleView`] serialises to (a test
/// checks that the two have the same fields).
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
struct AlertRuleViewSchema {
    name: String,
    description: String,
    /// The condition, e.g. `redis_memory_used_ratio > 0.9`.
    expr: String,
    /// How long the condition must hold before the alert fires (`5m`); `null`: `0s`.
    #[schema(rename = "for")]
    for_: Option<String>,
    /// How long it keeps firing after the condition clears; `null`: `0s`.
    keep_firing_for: Option<String>,
    severity: Severity,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    enabled: bool,
    /// Shipped with Drover: may be disabled or have its thresholds changed, not deleted.
    builtin: bool,
    /// RFC 3339; `null` for a built-in rule never changed.
    updated_at: Option<String>,
    updated_by: Option<String>,
}

/// A label matcher of a silence: `=`, `!=`, `=~` or `!~` (anchored regex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LabelMatcher {
    pub name: String,
    pub op: String,
    pub value: String,
}

/// A silence as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    /// At least one; every matcher must match an alert's labels.
    pub matchers: Vec<LabelMatcher>,
    /// RFC 3339 end time; or give `duration`.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// `2h`, from now; or give `ends_at`.
    #[serde(default)]
    pub duration: Option<String>,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SilenceView {
    pub id: String,
    pub matchers: Vec<LabelMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    /// `active` or `expired`.
    pub state: String,
}

/// A host, service or cluster in maintenance mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceView {
    /// `host`, `service` or `cluster`.
    pub kind: String,
    /// A hostname, `cluster/service` or a cluster name.
    pub target: String,
    pub since: String,
    pub by: String,
    pub comment: String,
}

/// Which part of the health tree to show: a host, or a cluster, a service of it or a role of
/// that; nothing: the fleet.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    pub cluster: Option<String>,
    /// Needs `cluster`.
    pub service: Option<String>,
    /// A role name; needs `cluster` and `service`.
    pub role: Option<String>,
    /// A hostname; not with the others.
    pub host: Option<String>,
}

/// Filters of the active alerts.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// `pending` or `firing`; none: both.
    pub state: Option<AlertState>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::{AlertRuleSpec, AlertRuleView, Severity};

    #[test]
    fn the_rule_view_schema_names_the_fields_a_view_serialises_to() {
        let view = AlertRuleView {
            spec: AlertRuleSpec {
                name: "disk".into(),
                description: String::new(),
                expr: "host_disk_used_ratio > 0.9".into(),
                for_: Some("5m".into()),
                keep_firing_for: None,
                severity: Severity::Warning,
                labels: Default::default(),
                annotations: Default::default(),
                enabled: true,
            },
            builtin: false,
            updated_at: None,
            updated_by: None,
        };
        let json = serde_json::to_value(&view).unwrap();
        let fields: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
        let RefOr::T(Schema::Object(schema)) = AlertRuleView::schema() else { panic!("not an object schema") };
        let properties: BTreeSet<String> = schema.properties.keys().cloned().collect();
        assert_eq!(properties, fields);
        assert!(schema.additional_properties.is_none(), "an answer is never refused for its fields");
        let required: BTreeSet<&str> = schema.required.iter().map(String::as_str).collect();
        for always in ["name", "expr", "severity", "enabled", "builtin", "labels"] {
            assert!(required.contains(always), "{always} is always answered");
        }
    }
}
