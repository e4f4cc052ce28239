//! Clusters: named groups of hosts and services.

use super::{Actor, DomainError, Result, load_cluster, validate_name};
use crate::AppState;
use crate::model::{now_millis, rfc3339};
use crate::store::ClusterRec;
pub use drover_api::clusters::Cluster;

async fn view(state: &AppState, c: ClusterRec) -> Result<Cluster> {
    let services = state.store.list_services(&c.name).await?.into_iter().map(|s| s.name).collect();
    Ok(Cluster { name: c.name, created_at: rfc3339(c.created_at), created_by: c.created_by, services })
}

pub async fn create(state: &AppState, actor: &Actor, name: &str) -> Result<Cluster> {
    validate_name("cluster", name)?;
    let rec = ClusterRec { name: name.to_owned(), created_at: now_millis(), created_by: actor.username.clone() };
    state.store.create_cluster(&rec).await?;
    state.audit(actor.audit("cluster.create", "cluster", &rec.name, "created cluster")).await;
    view(state, rec).await
}

pub async fn list(state: &AppState) -> Result<Vec<Cluster>> {
    let mut items = Vec::new();
    for c in state.store.list_clusters().await? {
        items.push(view(state, c).await?);
    }
    Ok(items)
}

pub async fn get(state: &AppState, name: &str) -> Result<Cluster> {
    let c = load_cluster(state, name).await?;
    view(state, c).await
}

/// Deletes an empty cluster.
pub async fn delete(state: &AppState, actor: &Actor, name: &str) -> Result<()> {
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
    state.audit(actor.audit("cluster.delete", "cluster", name, "deleted cluster")).await;
    Ok(())
}
