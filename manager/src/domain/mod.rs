//! The domain layer: what Drover does with hosts, credentials, clusters,
//! services, roles, configuration and commands, with no HTTP in it.
//!
//! Every REST handler and console page that reads or changes the service
//! model calls one function here; the rules (names, instance counts, port
//! clashes, validation before storing, audit of every change) are written once.
//! Functions take the shared [`AppState`](crate::AppState), the [`Actor`] who
//! asks (for the audit log) and plain arguments, and answer typed views or a
//! [`DomainError`] that `http` maps to a status code.
//!
//! - [`hosts`]: filters, labels, decommissioning, metric history;
//! - [`metrics`]: host, role and service metrics: ingest, selectors, query,
//!   Prometheus exposition, rollups and pruning;
//! - [`accounts`]: enrollment tokens, API tokens, passwords;
//! - [`clusters`]: create, list, show, delete, member hosts;
//! - [`services`]: service types, services, role groups, health roll-up;
//! - [`roles`]: role views (status, staleness), placement, add and remove,
//!   port clashes;
//! - [`config`]: effective values, changes (validate -> render -> store ->
//!   publish), history, diff and rollback;
//! - [`commands`]: start, stop, restart and rolling restart, with the
//!   dependency rules; upgrade and rollback are in [`crate::parcel_commands`];
//! - [`templates`]: cluster templates: stored versions, validation, export
//!   and instantiation.
//!
//! Architecture invariant: nothing here imports axum, sqlx or prost.

pub mod access;
pub mod accounts;
pub mod alerts;
pub mod clusters;
pub mod commands;
pub mod config;
pub mod diagnostics;
pub mod environments;
pub mod health;
pub mod history;
pub mod hosts;
pub mod logs;
pub mod metrics;
pub mod notifications;
pub mod parcels;
pub mod roles;
pub mod services;
pub mod templates;
pub mod users;

pub use drover_api::names::{NAME_PATTERN, name_schema, not_blank_pattern, not_blank_schema};

use crate::AppState;
use crate::desired::{self, DesiredError, ServiceContext};
use crate::store::{ClusterRec, ServiceRec, StoreError};

/// Why a domain operation was refused or failed. `http` maps each variant to
/// a status code (400, 403, 404, 409, 422, 503, 500).
///
/// The line between `Invalid` and the others is the OpenAPI document: a
/// request it already rules out (a bad name, a missing field, an impossible
/// combination) is `Invalid`; a request it allows is refused only for what
/// the document cannot know: an object that does not exist (`NotFound`), the
/// state of the fleet (`Conflict`), or what the service's type allows
/// (`Unsuitable`). `scripts/schemathesis.sh` holds the server to that.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request itself is wrong: a bad name, value or combination.
    #[error("{0}")]
    Invalid(String),
    /// An object the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is fine but the current state forbids it.
    #[error("{0}")]
    Conflict(String),
    /// The service's type does not allow it: a role type or parameter it
    /// lacks, a value its parameter refuses, files its templates cannot
    /// render. `GET /api/v1/service-types/{name}` says what a type allows.
    #[error("{0}")]
    Unsuitable(String),
    /// The request is well-formed but a rule the document cannot state
    /// refuses it (422): a password containing the user name, a role wider
    /// than the caller's, a wrong current password.
    #[error("{0}")]
    Refused(String),
    /// The caller lacks a permission (403, naming it).
    #[error("{message}")]
    Forbidden { permission: Permission, message: String },
    /// A dependency (the database) is unavailable; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => DomainError::Conflict(format!("{what} already exists")),
            StoreError::Database(db) => DomainError::Unavailable(format!("database: {db}")),
            other => DomainError::Internal(other.to_string()),
        }
    }
}

impl From<DesiredError> for DomainError {
    fn from(e: DesiredError) -> Self {
        match e {
            DesiredError::Store(s) => s.into(),
            DesiredError::Render { .. } => DomainError::Unsuitable(e.to_string()),
            other => DomainError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

pub use access::{Actor, Granted, Permission, Scope, Via};

/// Names of clusters, services, roles and groups.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "invalid {what} name {name:?}: 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )))
    }
}

pub(crate) async fn load_cluster(state: &AppState, name: &str) -> Result<ClusterRec> {
    state.store.cluster(name).await?.ok_or_else(|| DomainError::NotFound(format!("cluster {name} not found")))
}

pub(crate) async fn load_service(state: &AppState, cluster: &str, service: &str) -> Result<ServiceRec> {
    load_cluster(state, cluster).await?;
    state
        .store
        .service(cluster, service)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("service {service} not found in cluster {cluster}")))
}

/// A service with its type, latest values, roles and topology, for a caller
/// who may read its cluster.
pub async fn context(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<ServiceContext> {
    actor.require_read(cluster)?;
    load_context(state, cluster, service).await
}

/// [`context`] after the caller's permission was checked.
pub(crate) async fn load_context(state: &AppState, cluster: &str, service: &str) -> Result<ServiceContext> {
    load_service(state, cluster, service).await?;
    desired::load_service(state, cluster, service)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("service {service} not found in cluster {cluster}")))
}

#[cfg(test)]
mod tests {
    use super::{NAME_PATTERN, validate_name};

    #[test]
    fn the_name_pattern_is_validate_name() {
        let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        for name in ["a", "0", "a-b", "9-", "zk-1", &long, "", "-a", "A", "a_b", "a.b", "a b", "é", &too_long, "a\n"] {
            assert_eq!(pattern.is_match(name), validate_name("x", name).is_ok(), "{name:?}");
        }
    }
}
