//! Clusters: named groups of hosts and services.

use super::{Actor, DomainError, Permission, Result, Scope, load_cluster, validate_name};
use crate::AppState;
use crate::model::{now_millis, rfc3339};
use crate::store::ClusterRec;
pub use drover_api::clusters::Cluster;

async fn view(state: &AppState, c: ClusterRec) -> Result<Cluster> {
    let services = state.store.list_services(&c.name).await?.into_iter().map(|s| s.name).collect();
    Ok(Cluster { name: c.name, created_at: rfc3339(c.created_at), created_by: c.created_by, services })
}

pub async fn create(state: &AppState, actor: &Actor, name: &str) -> Result<Cluster> {
    let granted = actor.require(Permission::ClustersWrite, Scope::Global)?;
    validate_name("cluster", name)?;
    let rec = ClusterRec { name: name.to_owned(), created_at: now_millis(), created_by: actor.username.clone() };
    state.store.create_cluster(&rec).await?;
    state.audit(granted.audit("cluster.create", "cluster", &rec.name, "created cluster")).await;
    view(state, rec).await
}

/// The clusters the caller may read.
pub async fn list(state: &AppState, actor: &Actor) -> Result<Vec<Cluster>> {
    let visible = actor.visible();
    let mut items = Vec::new();
    for c in state.store.list_clusters().await?.into_iter().filter(|c| visible.contains(&c.name)) {
        items.push(view(state, c).await?);
    }
    Ok(items)
}

pub async fn get(state: &AppState, actor: &Actor, name: &str) -> Result<Cluster> {
    actor.require_read(name)?;
    let c = load_cluster(state, name).await?;
    view(state, c).await
}

/// Deletes an empty cluster.
/// Deletes an empty cluster, and every role granted on it.
pub async fn delete(state: &AppState, actor: &Actor, name: &str) -> Result<()> {
    let granted = actor.require(Permission::ClustersWrite, Scope::Global)?;
    load_cluster(state, name).await?;
    let services = state.store.list_services(name).await?;
    if !services.is_empty() {
        let names: Vec<String> = services.into_iter().map(|s| s.name).collect();
        return Err(DomainError::Conflict(format!(
            "cluster {name} still has services ({}); delete them first",
            names.join(", ")
        )));
    }
    state.store.delete_cluster(name).await?;
    let grants = state.store.delete_cluster_grants(name).await?;
    state
        .audit(granted.audit(
            "cluster.delete",
            "cluster",
            name,
            format!("deleted cluster and {grants} role grants on it"),
        ))
        .await;
    Ok(())
}

/// The ids of a cluster's hosts.
pub async fn hosts(state: &AppState, actor: &Actor, cluster: &str) -> Result<Vec<String>> {
    actor.require_read(cluster)?;
    load_cluster(state, cluster).await?;
    Ok(state.store.cluster_hosts(cluster).await?)
}

/// Adds enrolled, not decommissioned hosts to a cluster: they receive the
/// cluster's parcels. Answers the cluster's host ids.
/// Hosts come from the fleet, so this needs `hosts.write` globally.
pub async fn add_hosts(state: &AppState, actor: &Actor, cluster: &str, host_ids: &[String]) -> Result<Vec<String>> {
    let granted = actor.require(Permission::HostsWrite, Scope::Global)?;
    load_cluster(state, cluster).await?;
    if host_ids.is_empty() {
        return Err(DomainError::Invalid("host_ids is empty".into()));
    }
    let known = state.store.host_addresses(host_ids).await?;
    for h in host_ids {
        if !known.contains_key(h) {
            return Err(DomainError::NotFound(format!("unknown host {h:?}: no host has this id")));
        }
        if state.registry.host_status(h) == Some(crate::model::HostStatus::Decommissioned) {
            return Err(DomainError::Conflict(format!("host {h} is decommissioned")));
        }
    }
    state.store.add_cluster_hosts(cluster, host_ids, now_millis()).await?;
    state.desired.refresh_parcels(state).await?;
    state.audit(granted.audit("cluster.hosts.add", "cluster", cluster, format!("added hosts {host_ids:?}"))).await;
    Ok(state.store.cluster_hosts(cluster).await?)
}

/// Removes a host from a cluster; it must run no role of the cluster.
pub async fn remove_host(state: &AppState, actor: &Actor, cluster: &str, host: &str) -> Result<()> {
    let granted = actor.require(Permission::HostsWrite, Scope::Cluster(cluster))?;
    load_cluster(state, cluster).await?;
    for svc in state.store.list_services(cluster).await? {
        if let Some(r) = state.store.roles_of_service(cluster, &svc.name).await?.into_iter().find(|r| r.host_id == host)
        {
            return Err(DomainError::Conflict(format!(
                "host {host} runs role {} of service {}; delete the role first",
                r.name, svc.name
            )));
        }
    }
    if !state.store.remove_cluster_host(cluster, host).await? {
        return Err(DomainError::NotFound(format!("host {host} is not in cluster {cluster}")));
    }
    state.desired.refresh_parcels(state).await?;
    state.audit(granted.audit("cluster.hosts.remove", "cluster", cluster, format!("removed host {host}"))).await;
    Ok(())
}

/// A cluster's hosts with their facts, labels and status, by hostname.
pub async fn member_hosts(state: &AppState, actor: &Actor, cluster: &str) -> Result<Vec<crate::model::Host>> {
    actor.require_read(cluster)?;
    load_cluster(state, cluster).await?;
    let mut filter = crate::store::HostFilter {
        in_cluster: Some(cluster.to_owned()),
        limit: super::hosts::MAX_PAGE,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = super::hosts::list(state, actor, &filter).await?;
        let n = page.items.len();
        out.extend(page.items);
        if n < filter.limit as usize {
            return Ok(out);
        }
        filter.offset += filter.limit;
    }
}

/// Hosts that could join a cluster (enrolled, not decommissioned, not in it),
/// by hostname: at most `limit` of them, and whether there were more.
/// Reads the fleet, so this needs `read` globally.
pub async fn candidate_hosts(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    limit: u32,
) -> Result<(Vec<crate::model::Host>, bool)> {
    actor.require(Permission::Read, Scope::Global)?;
    load_cluster(state, cluster).await?;
    let filter = crate::store::HostFilter {
        outside_cluster: Some(cluster.to_owned()),
        limit: limit.clamp(1, super::hosts::MAX_PAGE),
        ..Default::default()
    };
    let page = super::hosts::list(state, actor, &filter).await?;
    // The registry knows of a decommissioning the store may not have yet.
    let more = page.total > page.items.len() as u64;
    let hosts = page
        .items
        .into_iter()
        .filter(|h| state.registry.host_status(&h.id) != Some(crate::model::HostStatus::Decommissioned))
        .collect();
    Ok((hosts, more))
}

/// The parcel versions a cluster holds (distributed or active).
pub async fn parcels(state: &AppState, actor: &Actor, cluster: &str) -> Result<Vec<crate::store::ClusterParcelRec>> {
    actor.require_read(cluster)?;
    load_cluster(state, cluster).await?;
    Ok(state.store.cluster_parcels(Some(cluster)).await?)
}
