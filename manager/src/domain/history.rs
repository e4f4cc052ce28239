//! Events and the audit log as callers may read them: events need `read`
//! on the fleet (they name hosts of every cluster); the audit log needs
//! `audit.read` (the `admin` and `auditor` roles).

use super::{Actor, Permission, Result, Scope};
use crate::AppState;
use crate::model::{AuditEntry, Event};
use crate::store::{AuditFilter, AuditSearch, EventFilter, EventSearch};

pub async fn list_events(state: &AppState, actor: &Actor, filter: &EventFilter) -> Result<Vec<Event>> {
    actor.require(Permission::Read, Scope::Global)?;
    Ok(state.store.list_events(filter).await?)
}

pub async fn search_events(state: &AppState, actor: &Actor, search: &EventSearch) -> Result<Vec<Event>> {
    actor.require(Permission::Read, Scope::Global)?;
    Ok(state.store.search_events(search).await?)
}

pub async fn list_audit(state: &AppState, actor: &Actor, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
    actor.require(Permission::AuditRead, Scope::Global)?;
    Ok(state.store.list_audit(filter).await?)
}

pub async fn search_audit(state: &AppState, actor: &Actor, search: &AuditSearch) -> Result<Vec<AuditEntry>> {
    actor.require(Permission::AuditRead, Scope::Global)?;
    Ok(state.store.search_audit(search).await?)
}
