//! Service types (what the catalog offers), services, their health and role
//! groups; the names a request may give, narrowed by the served document to
//! this manager's catalog.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::roles::RoleView;

/// A string schema whose values the served OpenAPI document narrows to the
/// names in this manager's catalog (see `http::openapi::document`).
fn catalog_name(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new().schema_type(Type::String).description(Some(description)).into()
}

/// The name of a service type of the manager's catalog.
pub struct ServiceTypeName;

impl utoipa::PartialSchema for ServiceTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        catalog_name("A service type of this manager (`GET /api/v1/service-types`).")
    }
}

impl ToSchema for ServiceTypeName {}

/// The name of a role type of some service type of the catalog; which ones a
/// service has depends on its type.
pub struct RoleTypeName;

impl utoipa::PartialSchema for RoleTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        catalog_name(
            "A role type of some service type of this manager; a service takes those of its own type \
             (`GET /api/v1/service-types/{name}`), others are refused with 422.",
        )
    }
}

impl ToSchema for RoleTypeName {}

/// The name of a parameter of some service type of the catalog.
pub struct ParameterName;

impl utoipa::PartialSchema for ParameterName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        catalog_name(
            "A parameter of some service type of this manager; a service takes those of its own type \
             (`GET /api/v1/service-types/{name}`), others are refused with 422.",
        )
    }
}

impl ToSchema for ParameterName {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleTypeView {
    pub name: String,
    pub description: String,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    pub start_order: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParameterView {
    pub name: String,
    /// `string`, `integer`, `boolean`, `enum`, `port`, `path`, `memory_size`,
    /// `duration`, `password` or `service`.
    #[serde(rename = "type")]
    pub kind_name: String,
    /// The type with its constraints (`min`, `max`, `values`, `service_types`).
    #[schema(value_type = Object)]
    pub kind: Value,
    /// Any JSON value the parameter's type allows (normalised); masked when
    /// the parameter is sensitive; absent or `null` when there is none.
    pub default: Option<Value>,
    pub description: String,
    /// The role types it applies to: `"service"` (all of them) or a list of
    /// role type names.
    pub scope: Value,
    /// A change needs a restart of the roles to take effect.
    pub restart: bool,
    pub sensitive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RollingRestartView {
    pub batch_size: u32,
    pub wait_for_healthy: bool,
    pub healthy_timeout_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceTypeView {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub version: String,
    pub requires: Vec<String>,
    pub role_types: Vec<RoleTypeView>,
    /// Only in the detail view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<ParameterView>>,
    /// Only in the detail view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_restart: Option<RollingRestartView>,
}

/// Service health rolled up from its roles: good when every role that should
/// run is running and not unhealthy, bad when none is, concerning otherwise,
/// stopped when no role should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceHealth {
    Good,
    Concerning,
    Bad,
    Stopped,
}

impl ServiceHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceHealth::Good => "good",
            ServiceHealth::Concerning => "concerning",
            ServiceHealth::Bad => "bad",
            ServiceHealth::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub cluster: String,
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    /// The latest configuration revision.
    pub revision: u64,
    pub created_at: String,
    pub created_by: String,
    pub health: ServiceHealth,
    pub roles: Vec<RoleView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleGroup {
    pub role_type: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = ServiceTypeName)]
    pub service_type: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[schema(value_type = RoleTypeName)]
    pub role_type: String,
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
}
