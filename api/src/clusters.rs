//! Clusters: named groups of hosts and services; creating one and adding
//! hosts to it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub name: String,
    pub created_at: String,
    pub created_by: String,
    pub services: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddHosts {
    /// Ids of enrolled hosts that are not decommissioned.
    #[schema(min_items = 1)]
    pub host_ids: Vec<String>,
}
