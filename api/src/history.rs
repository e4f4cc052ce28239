//! Events (what happened to hosts and services) and the audit log (who
//! changed what): their filters and lists.

use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::Items;
use crate::model::{AuditEntry, Event};

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events about this kind of object, e.g. `host`.
    pub object_type: Option<String>,
    /// Only events about this object.
    pub object_id: Option<String>,
    /// Only events at or after this time, RFC 3339.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// How many, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The answer of `GET /api/v1/events`, newest first.
pub type EventList = Items<Event>;

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only changes by this user.
    pub user: Option<String>,
    /// Only changes to this kind of object, e.g. `cluster`.
    pub object_type: Option<String>,
    /// Only changes to this object.
    pub object_id: Option<String>,
    /// Only changes at or after this time, RFC 3339.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only changes before this time, RFC 3339.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// How many, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The answer of `GET /api/v1/audit`, newest first.
pub type AuditList = Items<AuditEntry>;
