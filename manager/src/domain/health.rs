//! The health tree and the active alerts, as the alert engine's latest cycle left them
//! ([`crate::alerts::Alerts`]), cut to what the caller may read.

use std::collections::BTreeMap;

pub use drover_api::alerts::{AlertState, AlertView, HealthNode, HealthQuery, HealthStatus, HealthTestView};

use super::access::Visible;
use super::{Actor, DomainError, Permission, Result, Scope, load_cluster};
use crate::AppState;
use crate::alerts::engine::{EntityHealth, HealthSnapshot};
use crate::alerts::health::Status;

pub(crate) fn status(s: Status) -> HealthStatus {
    match s {
        Status::Good => HealthStatus::Good,
        Status::Concerning => HealthStatus::Concerning,
        Status::Bad => HealthStatus::Bad,
    }
}

fn node(kind: &str, name: String, h: Option<&EntityHealth>, children: Vec<HealthNode>) -> HealthNode {
    let (st, tests) = match h {
        Some(h) => (
            status(h.status),
            h.tests
                .iter()
                .map(|t| HealthTestView {
                    test: t.test.to_string(),
                    status: status(t.status),
                    value: t.value,
                    summary: t.summary.to_string(),
                })
                .collect(),
        ),
        None => (HealthStatus::Good, Vec::new()),
    };
    HealthNode { kind: kind.to_owned(), name, status: st, tests, maintenance: false, children }
}

fn service_node(snap: &HealthSnapshot, cluster: &str, service: &str) -> Option<HealthNode> {
    let key = (cluster.to_owned(), service.to_owned());
    let h = snap.services.get(&key)?;
    let roles = snap
        .roles
        .iter()
        .filter(|((c, s, _), _)| c == cluster && s == service)
        .map(|((c, s, r), h)| node("role", format!("{c}/{s}/{r}"), Some(h), Vec::new()))
        .collect();
    Some(node("service", format!("{cluster}/{service}"), Some(h), roles))
}

fn cluster_node(snap: &HealthSnapshot, cluster: &str, members: &[String]) -> HealthNode {
    let mut children: Vec<HealthNode> =
        snap.services.keys().filter(|(c, _)| c == cluster).filter_map(|(c, s)| service_node(snap, c, s)).collect();
    children.extend(
        members.iter().filter_map(|h| snap.hosts.get(h).map(|hh| node("host", h.clone(), Some(hh), Vec::new()))),
    );
    node("cluster", cluster.to_owned(), snap.clusters.get(cluster), children)
}

/// The health of a cluster (with its services, their roles, and its hosts), a service, a role or
/// a host; with no target, the fleet: every cluster the caller may read, and for fleet-wide
/// readers the hosts outside clusters.
pub async fn health(state: &AppState, actor: &Actor, q: &HealthQuery) -> Result<HealthNode> {
    let mut node = health_tree(state, actor, q).await?;
    let maintenance: std::collections::BTreeSet<(String, String)> =
        state.store.maintenance_list().await?.into_iter().map(|m| (m.kind, m.target)).collect();
    mark_maintenance(&mut node, &maintenance, false);
    Ok(node)
}

/// Marks every node in maintenance mode, and everything under one (a cluster's services,
/// roles and hosts; a service's roles).
fn mark_maintenance(node: &mut HealthNode, on: &std::collections::BTreeSet<(String, String)>, inherited: bool) {
    node.maintenance = inherited || on.contains(&(node.kind.clone(), node.name.clone()));
    let below = node.maintenance && node.kind != "fleet";
    for child in &mut node.children {
        mark_maintenance(child, on, below);
    }
}

async fn health_tree(state: &AppState, actor: &Actor, q: &HealthQuery) -> Result<HealthNode> {
    let snap = state.alerts.health();
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let hostnames = state.registry.hostnames();
    let mut clustered = std::collections::BTreeSet::new();
    for (cluster, host_id) in state.store.cluster_members().await? {
        if let Some(name) = hostnames.get(&host_id) {
            members.entry(cluster).or_default().push(name.clone());
            clustered.insert(name.clone());
        }
    }
    let not_found = |what: String| DomainError::NotFound(format!("{what} not found (or not yet evaluated)"));
    if let Some(host) = &q.host {
        if q.cluster.is_some() || q.service.is_some() || q.role.is_some() {
            return Err(DomainError::Refused("give either host or cluster[/service[/role]]".into()));
        }
        let in_clusters: Vec<&String> = members.iter().filter(|(_, hs)| hs.contains(host)).map(|(c, _)| c).collect();
        let visible = actor.visible();
        if !in_clusters.iter().any(|c| visible.contains(c)) {
            actor.require(Permission::Read, Scope::Global)?;
        }
        let h = snap.hosts.get(host).ok_or_else(|| not_found(format!("host {host}")))?;
        return Ok(node("host", host.clone(), Some(h), Vec::new()));
    }
    let Some(cluster) = &q.cluster else {
        if q.service.is_some() || q.role.is_some() {
            return Err(DomainError::Refused("service and role need cluster".into()));
        }
        let visible = actor.visible();
        let mut children: Vec<HealthNode> = snap
            .clusters
            .keys()
            .filter(|c| visible.contains(c))
            .map(|c| cluster_node(&snap, c, members.get(c).map(Vec::as_slice).unwrap_or_default()))
            .collect();
        if matches!(visible, Visible::All) {
            children.extend(
                snap.hosts
                    .iter()
                    .filter(|(h, _)| !clustered.contains(*h))
                    .map(|(h, hh)| node("host", h.clone(), Some(hh), Vec::new())),
            );
        }
        let worst = children.iter().map(|c| c.status).max().unwrap_or(HealthStatus::Good);
        return Ok(HealthNode {
            kind: "fleet".into(),
            name: String::new(),
            status: worst,
            tests: Vec::new(),
            maintenance: false,
            children,
        });
    };
    actor.require_read(cluster)?;
    let Some(service) = &q.service else {
        if q.role.is_some() {
            return Err(DomainError::Refused("role needs service".into()));
        }
        load_cluster(state, cluster).await?;
        return Ok(cluster_node(&snap, cluster, members.get(cluster).map(Vec::as_slice).unwrap_or_default()));
    };
    let svc = service_node(&snap, cluster, service).ok_or_else(|| not_found(format!("service {cluster}/{service}")))?;
    let Some(role) = &q.role else { return Ok(svc) };
    let name = format!("{cluster}/{service}/{role}");
    svc.children.into_iter().find(|r| r.name == name).ok_or_else(|| not_found(format!("role {name}")))
}

/// The pending and firing alerts the caller may see (an alert about a cluster's entity needs
/// read on that cluster; others need read on the fleet), optionally of one state.
pub fn alerts(actor: &Actor, all: &[AlertView], state: Option<AlertState>) -> Vec<AlertView> {
    let visible = actor.visible();
    all.iter()
        .filter(|a| state.is_none_or(|s| a.state == s))
        .filter(|a| match a.labels.get("cluster") {
            Some(c) => visible.contains(c),
            None => matches!(visible, Visible::All),
        })
        .cloned()
        .collect()
}
