//! The Docker provider: container hosts the manager starts on its Docker
//! engine, and what it answers about them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::model::Labels;
use crate::whole;

/// A memory limit: bytes, or text such as `256m` or `1g`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Memory {
    #[schema(value_type = u64)]
    Bytes(#[serde(deserialize_with = "whole::required")] u64),
    Text(String),
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDockerHosts {
    /// How many containers (1-100).
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 1, maximum = 100)]
    pub count: u32,
    /// Agent image (default `drover/agent:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker network to attach them to (default `bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Labels the hosts get; `provider=docker` is added.
    #[serde(default)]
    #[schema(schema_with = crate::hosts::labels_schema)]
    pub labels: Labels,
    /// CPU limit per container, in CPUs (`--cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit per container (`--memory`): bytes or `256m`, `1g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Container names are this plus 6 random characters (default `drover-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// The manager's gRPC URL as the containers reach it (default
    /// `--docker-manager-url`, else `https://<network gateway>:<grpc port>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_url: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteAllQuery {
    /// Must be `true`: removes every container this manager created.
    pub all: Option<bool>,
}

/// What a create call did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedHosts {
    /// The enrollment token the containers enroll with (`max_uses` = count).
    pub token_id: String,
    /// The gRPC URL the containers were given.
    pub manager_url: String,
    pub items: Vec<ProviderHostView>,
}

/// A container host as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderHostView {
    /// The engine's container id.
    pub id: String,
    pub name: String,
    pub engine: String,
    pub owner: String,
    pub image: String,
    pub network: String,
    pub volume: String,
    pub labels: Labels,
    pub created_by: String,
    pub created_at: String,
    /// What the engine says: `running`, `exited`, ... or `missing` when the
    /// container no longer exists.
    pub container_status: String,
    /// The host the container enrolled as (matched on the container id the
    /// agent reports), once it has.
    pub host_id: Option<String>,
    pub hostname: Option<String>,
    pub host_status: Option<crate::model::HostStatus>,
}
