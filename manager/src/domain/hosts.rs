//! Hosts: listing with filters, labels, decommissioning, metric history and
//! cluster membership. The REST API and the console both call these.

use std::collections::BTreeMap;

use crate::AppState;
use crate::model::{Host, HostKind, HostStatus, MetricPoint, now_millis};
use crate::store::{HostFilter, HostPage};

use super::{Actor, DomainError, Granted, Permission, Result, Scope};

/// The largest page a host list answers.
pub const MAX_PAGE: u32 = 1000;
/// The largest offset a host list takes (the databases' integer range).
pub const MAX_OFFSET: u32 = i32::MAX as u32;

/// A host state named in a filter.
pub fn parse_status(s: &str) -> Result<HostStatus> {
    HostStatus::parse(s)
        .ok_or_else(|| DomainError::Invalid(format!("invalid status {s:?}: use healthy, lost or decommissioned")))
}

/// A host kind named in a filter.
pub fn parse_kind(s: &str) -> Result<HostKind> {
    match s {
        "container" | "vm" | "physical" | "unknown" => Ok(HostKind::parse(s)),
        _ => Err(DomainError::Invalid(format!("invalid kind {s:?}: use container, vm, physical or unknown"))),
    }
}

/// Sets the label conditions of `filter` from a selector such as
/// `rack=r1,tier!=db`.
pub fn apply_selector(filter: &mut HostFilter, selector: &str) -> Result<()> {
    let selector = drover_proto::labels::parse_selector(selector).map_err(|e| DomainError::Invalid(e.to_string()))?;
    filter.labels = selector.equalities().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    filter.not_labels = selector.inequalities().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    Ok(())
}

/// One page of hosts matching `filter`, with the total across pages.
/// One page of the hosts the caller may see (all with `read` globally, else
/// the members of the clusters they may read).
pub async fn list(state: &AppState, actor: &Actor, filter: &HostFilter) -> Result<HostPage> {
    if !(1..=MAX_PAGE).contains(&filter.limit) {
        return Err(DomainError::Invalid(format!("limit must be between 1 and {MAX_PAGE}, got {}", filter.limit)));
    }
    if filter.offset > MAX_OFFSET {
        return Err(DomainError::Invalid(format!("offset must be at most {MAX_OFFSET}, got {}", filter.offset)));
    }
    match actor.visible().to_filter() {
        None => Ok(state.store.list_hosts(filter).await?),
        Some(clusters) => {
            let filter = HostFilter { member_of: Some(clusters), ..filter.clone() };
            Ok(state.store.list_hosts(&filter).await?)
        }
    }
}

/// Host counts by status and connected agents: of the fleet for a caller who
/// reads it, else of the hosts in the clusters they may read.
pub async fn summary(state: &AppState, actor: &Actor) -> Result<crate::registry::FleetSummary> {
    let Some(clusters) = actor.visible().to_filter() else {
        return Ok(state.registry.summary());
    };
    let mut ids = std::collections::HashSet::new();
    for c in clusters {
        ids.extend(state.store.cluster_hosts(&c).await?);
    }
    Ok(state.registry.summary_where(|id| ids.contains(id)))
}

/// Checks `permission` on a host: held globally, or on a cluster the host is in.
pub async fn require_on_host<'a>(
    state: &AppState,
    actor: &'a Actor,
    permission: Permission,
    id: &str,
) -> Result<Granted<'a>> {
    if let Ok(granted) = actor.require(permission, Scope::Global) {
        return Ok(granted);
    }
    for cluster in state.store.clusters_of_host(id).await? {
        if let Ok(granted) = actor.require(permission, Scope::Cluster(&cluster)) {
            return Ok(granted);
        }
    }
    actor.require(permission, Scope::Global)
}

pub async fn get(state: &AppState, actor: &Actor, id: &str) -> Result<Host> {
    require_on_host(state, actor, Permission::Read, id).await?;
    load(state, id).await
}

async fn load(state: &AppState, id: &str) -> Result<Host> {
    state.store.host(id).await?.ok_or_else(|| DomainError::NotFound(format!("host {id} not found")))
}

/// Sets (`Some`) or removes (`None`) labels of a host, audited.
pub async fn set_labels(
    state: &AppState,
    actor: &Actor,
    id: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Host> {
    let granted = require_on_host(state, actor, Permission::HostsWrite, id).await?;
    let before = load(state, id).await?;
    if before.status == HostStatus::Decommissioned {
        return Err(DomainError::Conflict(format!("host {id} is decommissioned; its labels can no longer change")));
    }
    let mut labels = before.labels.clone();
    for (k, v) in changes {
        match v {
            Some(v) => {
                drover_api::hosts::validate_label(k, v).map_err(DomainError::Invalid)?;
                labels.insert(k.clone(), v.clone());
            }
            None => {
                // A key no label can have is a mistake, not a no-op.
                drover_api::hosts::validate_label(k, "").map_err(DomainError::Invalid)?;
                labels.remove(k);
            }
        }
    }
    if labels == before.labels {
        return Ok(before);
    }
    if !state.store.set_host_labels(id, &labels).await? {
        return Err(DomainError::NotFound(format!("host {id} not found")));
    }
    state
        .audit(granted.audit("host.update_labels", "host", id, format!("labels {:?} -> {:?}", before.labels, labels)))
        .await;
    load(state, id).await
}

/// Decommissions a host: its certificate is revoked and its session ended.
/// Decommissioning a decommissioned host changes nothing.
pub async fn decommission(state: &AppState, actor: &Actor, id: &str) -> Result<Host> {
    let granted = require_on_host(state, actor, Permission::HostsWrite, id).await?;
    let before = state
        .store
        .decommission_host(id, &actor.username, now_millis())
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("host {id} not found")))?;
    if before.status != HostStatus::Decommissioned {
        state.registry.decommission(id);
        state
            .audit(granted.audit(
                "host.decommission",
                "host",
                id,
                format!(
                    "decommissioned host {} (was {}); certificate {} revoked",
                    before.hostname,
                    before.status.as_str(),
                    before.cert_serial
                ),
            ))
            .await;
        tracing::info!(host = %id, by = %actor.username, "host decommissioned");
    }
    load(state, id).await
}

/// The span a metric resolution covers by default.
pub fn default_span_ms(resolution_s: u32) -> Result<i64> {
    match resolution_s {
        60 => Ok(3_600_000),
        3600 => Ok(7 * 24 * 3_600_000),
        other => Err(DomainError::Invalid(format!("resolution must be 60 or 3600, got {other}"))),
    }
}

/// A host's stored metric points between `from` and `to` (ms).
pub async fn metrics(
    state: &AppState,
    actor: &Actor,
    id: &str,
    resolution_s: u32,
    from: i64,
    to: i64,
) -> Result<Vec<MetricPoint>> {
    default_span_ms(resolution_s)?;
    get(state, actor, id).await?;
    Ok(state.store.host_metrics(id, resolution_s, from, to).await?)
}
