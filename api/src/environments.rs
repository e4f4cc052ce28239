//! Environments: a template instantiated on containers the Docker provider
//! makes for it, with an owner and an expiry, brought up and torn down by one
//! call each (`/api/v1/environments`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::alerts::HealthStatus;
use crate::commands::CommandState;
use crate::providers::{Memory, ProviderHostView};

/// `POST /api/v1/environments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    /// The environment's name, also the name of its cluster.
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
    /// A stored template (or give `from_snapshot`).
    #[serde(default)]
    pub template: String,
    /// A snapshot to bring back (instead of `template`): its template, and
    /// containers from its images with the roles' data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// A stored version of it; absent: the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub version: Option<u64>,
    /// Values of the template's variables by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, Value>,
    /// Who owns it (default: the caller). Another user than the caller needs
    /// `users.write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// How long it lives, e.g. `8h`, `30m`, `2d` (default: the manager's
    /// `--env-default-ttl`); `never` for no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Agent image of every container (default `drover/agent:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker network of every container (default `bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Per host group: how many containers (default: the group's
    /// cardinality) and their image and limits.
    #[serde(default)]
    pub host_groups: BTreeMap<String, EnvHostGroup>,
}

/// One host group of an environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvHostGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU limit per container, in CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit per container: bytes or `256m`, `1g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// Where an environment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentState {
    /// Its instantiation runs.
    Creating,
    /// Its instantiation succeeded.
    Ready,
    /// Its instantiation failed or was aborted; `drover env up` again
    /// resumes it, `drover env down` removes it.
    Failed,
}

impl EnvironmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentState::Creating => "creating",
            EnvironmentState::Ready => "ready",
            EnvironmentState::Failed => "failed",
        }
    }
}

/// An environment as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentView {
    pub name: String,
    pub cluster: String,
    pub owner: String,
    pub template: String,
    pub template_version: u64,
    pub state: EnvironmentState,
    /// The instantiation command (its steps show the progress).
    pub command_id: String,
    pub command_state: CommandState,
    pub created_at: String,
    pub created_by: String,
    /// When the manager tears it down; absent: never.
    pub expires_at: Option<String>,
    /// Containers it has.
    pub hosts: u32,
    /// The cluster's health; absent until it is first evaluated.
    pub health: Option<HealthStatus>,
}

/// One role's address and ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    pub service: String,
    pub role_type: String,
    pub role: String,
    pub hostname: String,
    /// The host's address as it reported it (empty until it did).
    pub address: String,
    /// Listening ports by parameter name.
    pub ports: BTreeMap<String, u64>,
}

/// An environment with its containers and endpoints
/// (`GET /api/v1/environments/{name}`, and the answer to a create).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentDetail {
    #[serde(flatten)]
    pub environment: EnvironmentView,
    pub containers: Vec<ProviderHostView>,
    pub endpoints: Vec<Endpoint>,
}

/// What a teardown removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Teardown {
    pub name: String,
    pub services: Vec<String>,
    /// Container names, each with its volume.
    pub containers: Vec<String>,
    /// Hosts removed from the inventory.
    pub hosts: Vec<String>,
    pub seconds: f64,
}

/// `POST /api/v1/environments/{name}/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
}

/// One container of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotHostView {
    /// Its host group in the snapshot's template (one container each).
    pub group: String,
    /// The image it was committed to.
    pub image: String,
    /// `service/role_type` of each role whose data the image holds.
    pub roles: Vec<String>,
}

/// A snapshot (`/api/v1/snapshots`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotView {
    pub name: String,
    /// The environment it was taken of (it may be gone since).
    pub environment: String,
    /// The stored template it comes back from (`snapshot-NAME`).
    pub template: String,
    pub hosts: Vec<SnapshotHostView>,
    pub created_at: String,
    pub created_by: String,
    /// Anything that did not carry over (role-level values).
    #[serde(default)]
    pub warnings: Vec<String>,
}
