//! Health tests and maintenance mode on the console's entity pages: the alert engine's
//! verdict on a host, role, service or cluster as the `health_tests` partial shows it (the
//! tests that are not good first, each with its value), the maintenance state of a host,
//! service or cluster with its on/off form, and the `POST .../maintenance` handlers behind
//! that form. Permission, validation and audit happen in [`domain::alerts`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::clusters::{cluster_href, service_href};
use super::{ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::alerts::{MaintenanceView, SILENCE_PERMISSION};
use crate::domain::health::{HealthNode, HealthQuery, HealthStatus, HealthTestView};
use crate::domain::{self, Actor, DomainError, Scope};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/hosts/{id}/maintenance", post(host_maintenance))
        .route("/clusters/{c}/maintenance", post(cluster_maintenance))
        .route("/clusters/{c}/services/{s}/maintenance", post(service_maintenance))
}

// ---------- health tests ----------

pub(crate) fn status_word(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Good => "good",
        HealthStatus::Concerning => "concerning",
        HealthStatus::Bad => "bad",
    }
}

/// A test's value as people read it: ratios as percentages, seconds as a duration,
/// up/down links as words; `–` when no metric decided the test.
pub(crate) fn value_text(test: &str, value: Option<f64>) -> String {
    let Some(v) = value else { return "–".into() };
    if !v.is_finite() {
        return v.to_string();
    }
    match test {
        "disk_space" | "redis_memory" => format!("{:.1}%", v * 100.0),
        "config" => humantime::format_duration(std::time::Duration::from_secs(v.max(0.0) as u64)).to_string(),
        "zookeeper_latency" => format!("{} ms", crate::alerts::health::short(v)),
        "agent" | "redis_replication_link" => (if v >= 1.0 { "up" } else { "down" }).into(),
        _ => crate::alerts::health::short(v),
    }
}

fn test_row(t: &HealthTestView) -> Value {
    json!({
        "test": t.test,
        "status": status_word(t.status),
        "value": value_text(&t.test, t.value),
        "summary": t.summary,
    })
}

/// A health node as the `health_tests` partial reads it: its status, and its tests with the
/// bad ones first, then the concerning ones, then the good ones (each group in the engine's
/// order). `what` names the entity in the sentences ("host", "service", ...).
pub(crate) fn node_json(node: &HealthNode, what: &str) -> Value {
    let mut tests: Vec<&HealthTestView> = node.tests.iter().collect();
    tests.sort_by_key(|t| std::cmp::Reverse(t.status));
    let not_good = tests.iter().filter(|t| t.status != HealthStatus::Good).count();
    json!({
        "evaluated": true,
        "what": what,
        "status": status_word(node.status),
        "tests": tests.into_iter().map(test_row).collect::<Vec<_>>(),
        "not_good": not_good,
    })
}

/// The partial's data for an entity the engine has not judged yet.
fn not_evaluated(what: &str) -> Value {
    json!({"evaluated": false, "what": what, "tests": [], "not_good": 0})
}

/// The engine's health of one entity for the `health_tests` partial, and the node itself
/// (for its children) when the engine has judged it. An entity the latest cycle did not
/// see (added since) answers "not evaluated yet"; one the caller may not read the health of
/// says so.
pub(crate) async fn entity(
    state: &AppState,
    actor: &Actor,
    q: HealthQuery,
    what: &str,
) -> Result<(Value, Option<HealthNode>), ConsoleError> {
    match domain::health::health(state, actor, &q).await {
        Ok(node) => Ok((node_json(&node, what), Some(node))),
        Err(DomainError::NotFound(_)) => Ok((not_evaluated(what), None)),
        // The page itself was readable: say why its health is not shown rather than fail it.
        Err(e @ DomainError::Forbidden { .. }) => {
            let mut v = not_evaluated(what);
            v["refused"] = json!(domain_message(&e));
            Ok((v, None))
        }
        Err(e) => Err(e.into()),
    }
}

/// The status of the child of `node` named `name` (`cluster/service`, `cluster/service/role`).
pub(crate) fn child_status(node: Option<&HealthNode>, name: &str) -> Option<&'static str> {
    node?.children.iter().find(|c| c.name == name).map(|c| status_word(c.status))
}

/// The host query of the health tree.
pub(crate) fn host_query(hostname: &str) -> HealthQuery {
    HealthQuery { host: Some(hostname.to_owned()), ..Default::default() }
}

/// The cluster, service or role query of the health tree.
pub(crate) fn query(cluster: &str, service: Option<&str>, role: Option<&str>) -> HealthQuery {
    HealthQuery {
        cluster: Some(cluster.to_owned()),
        service: service.map(str::to_owned),
        role: role.map(str::to_owned),
        host: None,
    }
}

// ---------- maintenance state ----------

/// Every host, service and cluster in maintenance mode, as the console marks them.
pub(crate) struct Maintenance {
    entries: BTreeMap<(String, String), MaintenanceView>,
}

impl Maintenance {
    pub(crate) async fn load(state: &AppState, actor: &Actor) -> Result<Maintenance, ConsoleError> {
        let entries = domain::alerts::list_maintenance(state, actor)
            .await?
            .into_iter()
            .map(|m| ((m.kind.clone(), m.target.clone()), m))
            .collect();
        Ok(Maintenance { entries })
    }

    fn get(&self, kind: &str, target: &str) -> Option<&MaintenanceView> {
        self.entries.get(&(kind.to_owned(), target.to_owned()))
    }

    /// The clusters in maintenance mode.
    fn clusters(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().filter(|(k, _)| k == "cluster").map(|(_, t)| t.as_str())
    }

    /// Whether a service is in maintenance mode, itself or through its cluster.
    pub(crate) fn service_on(&self, cluster: &str, service: &str) -> bool {
        self.get("service", &format!("{cluster}/{service}")).is_some() || self.get("cluster", cluster).is_some()
    }

    /// What covers a role: its service or its cluster in maintenance mode.
    pub(crate) fn role_via(&self, cluster: &str, service: &str) -> Option<Value> {
        let svc = format!("{cluster}/{service}");
        if self.get("service", &svc).is_some() {
            return Some(via("service", &svc, &service_href(cluster, service)));
        }
        self.get("cluster", cluster).map(|_| via("cluster", cluster, &cluster_href(cluster)))
    }

    /// The ids of the hosts in a cluster in maintenance mode (the clusters the caller may
    /// read), with that cluster.
    pub(crate) async fn cluster_hosts(
        &self,
        state: &AppState,
        actor: &Actor,
    ) -> Result<BTreeMap<String, String>, ConsoleError> {
        let mut out = BTreeMap::new();
        for cluster in self.clusters() {
            match domain::clusters::hosts(state, actor, cluster).await {
                Ok(ids) => {
                    for id in ids {
                        out.entry(id).or_insert_with(|| cluster.to_owned());
                    }
                }
                Err(DomainError::Forbidden { .. } | DomainError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Which hosts are in maintenance mode, themselves or through a cluster they are in.
    pub(crate) async fn hosts(&self, state: &AppState, actor: &Actor) -> Result<HostMarks, ConsoleError> {
        let names = self.entries.keys().filter(|(k, _)| k == "host").map(|(_, t)| t.clone()).collect();
        Ok(HostMarks { names, ids: self.cluster_hosts(state, actor).await?.into_keys().collect() })
    }

    /// The "Maintenance mode" section of an entity: its own entry (since, by whom, comment),
    /// what else covers it (`via`: its cluster or service), and the form posting to `action`
    /// for who `can` change it.
    pub(crate) fn section(&self, kind: &str, target: &str, via: Option<Value>, action: String, can: bool) -> Value {
        let own = self.get(kind, target);
        json!({
            "kind": kind,
            "target": target,
            "on": own.is_some(),
            "since": own.map(|m| m.since.clone()),
            "by": own.map(|m| m.by.clone()),
            "comment": own.map(|m| m.comment.clone()).filter(|c| !c.is_empty()),
            "via": via,
            "marked": own.is_some() || via.is_some(),
            "action": action,
            "can": can,
        })
    }

    /// The section of a cluster.
    pub(crate) fn cluster_section(&self, session: &Session, cluster: &str) -> Value {
        let can = session.actor().may(SILENCE_PERMISSION, Scope::Cluster(cluster));
        self.section("cluster", cluster, None, format!("{}/maintenance", cluster_href(cluster)), can)
    }

    /// The section of a service (covered by its cluster too).
    pub(crate) fn service_section(&self, session: &Session, cluster: &str, service: &str) -> Value {
        let can = session.actor().may(SILENCE_PERMISSION, Scope::Cluster(cluster));
        let via = self.get("cluster", cluster).map(|_| via("cluster", cluster, &cluster_href(cluster)));
        let target = format!("{cluster}/{service}");
        self.section("service", &target, via, format!("{}/maintenance", service_href(cluster, service)), can)
    }

    /// The section of a host (covered by a cluster it is in too).
    pub(crate) async fn host_section(
        &self,
        state: &AppState,
        session: &Session,
        id: &str,
        hostname: &str,
    ) -> Result<Value, ConsoleError> {
        let actor = session.actor();
        let via_cluster =
            self.cluster_hosts(state, &actor).await?.remove(id).map(|c| via("cluster", &c, &cluster_href(&c)));
        let can = domain::hosts::require_on_host(state, &actor, SILENCE_PERMISSION, id).await.is_ok();
        Ok(self.section("host", hostname, via_cluster, format!("/hosts/{}/maintenance", url_encode(id)), can))
    }
}

/// The hosts in maintenance mode: by hostname (their own), by id (through a cluster).
pub(crate) struct HostMarks {
    names: BTreeSet<String>,
    ids: BTreeSet<String>,
}

impl HostMarks {
    pub(crate) fn on(&self, id: &str, hostname: &str) -> bool {
        self.names.contains(hostname) || self.ids.contains(id)
    }
}

fn via(kind: &str, target: &str, href: &str) -> Value {
    json!({"kind": kind, "target": target, "href": href})
}

// ---------- the maintenance forms ----------

#[derive(Debug, Deserialize)]
struct MaintenanceForm {
    /// `on` or `off`.
    #[serde(default)]
    action: String,
    /// Why (turning on only).
    #[serde(default)]
    comment: String,
}

/// Turns maintenance mode on or off and returns to `back` with what happened.
async fn toggle(
    state: &AppState,
    session: &Session,
    kind: &str,
    target: &str,
    back: &str,
    form: &MaintenanceForm,
) -> PageResult {
    let actor = session.actor();
    let done = match form.action.as_str() {
        "on" => domain::alerts::set_maintenance(state, &actor, kind, target, form.comment.trim())
            .await
            .map(|_| format!("{kind} {target} is in maintenance mode: its alerts are suppressed")),
        "off" => domain::alerts::clear_maintenance(state, &actor, kind, target)
            .await
            .map(|()| format!("{kind} {target} is out of maintenance mode: its alerts notify again")),
        other => {
            return Err(ConsoleError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown maintenance action {other:?}: use on or off"),
            ));
        }
    };
    Ok(match done {
        Ok(message) => redirect_with(back, true, &message),
        // Not in maintenance mode (any more), or a comment too long.
        Err(e @ (DomainError::Invalid(_) | DomainError::NotFound(_) | DomainError::Conflict(_))) => {
            redirect_with(back, false, &domain_message(&e))
        }
        Err(e) => return Err(e.into()),
    })
}

async fn host_maintenance(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<MaintenanceForm>,
) -> PageResult {
    // Maintenance mode names a host by its hostname; the page by its id.
    let host = domain::hosts::get(&state, &session.actor(), &id).await?;
    let back = format!("/hosts/{}", url_encode(&id));
    toggle(&state, &session, "host", &host.hostname, &back, &form).await
}

async fn cluster_maintenance(
    State(state): State<Arc<AppState>>,
    Path(c): Path<String>,
    CsrfForm(session, form): CsrfForm<MaintenanceForm>,
) -> PageResult {
    domain::clusters::get(&state, &session.actor(), &c).await?;
    toggle(&state, &session, "cluster", &c, &cluster_href(&c), &form).await
}

async fn service_maintenance(
    State(state): State<Arc<AppState>>,
    Path((c, s)): Path<(String, String)>,
    CsrfForm(session, form): CsrfForm<MaintenanceForm>,
) -> PageResult {
    domain::services::get(&state, &session.actor(), &c, &s).await?;
    toggle(&state, &session, "service", &format!("{c}/{s}"), &service_href(&c, &s), &form).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_their_unit() {
        assert_eq!(value_text("disk_space", Some(0.934)), "93.4%");
        assert_eq!(value_text("redis_memory", Some(0.9)), "90.0%");
        assert_eq!(value_text("config", Some(125.0)), "2m 5s");
        assert_eq!(value_text("zookeeper_latency", Some(120.5)), "120.5 ms");
        assert_eq!(value_text("agent", Some(0.0)), "down");
        assert_eq!(value_text("restarts", Some(4.0)), "4");
        assert_eq!(value_text("process", None), "–");
    }

    #[test]
    fn tests_that_are_not_good_come_first() {
        let t = |test: &str, status| HealthTestView { test: test.into(), status, value: None, summary: String::new() };
        let node = HealthNode {
            kind: "role".into(),
            name: "prod/cache/r".into(),
            status: HealthStatus::Bad,
            tests: vec![
                t("process", HealthStatus::Good),
                t("config", HealthStatus::Concerning),
                t("restarts", HealthStatus::Bad),
                t("health_checks", HealthStatus::Good),
            ],
            maintenance: false,
            children: Vec::new(),
        };
        let j = node_json(&node, "role");
        let order: Vec<&str> = j["tests"].as_array().unwrap().iter().map(|t| t["test"].as_str().unwrap()).collect();
        assert_eq!(order, ["restarts", "config", "process", "health_checks"]);
        assert_eq!((j["status"].as_str(), j["not_good"].as_u64()), (Some("bad"), Some(2)));
    }
}
