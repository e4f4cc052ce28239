//! Versioned configuration: effective values with their source, a change
//! and the revision it makes, history, diff and rollback.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Overrides at each level, sensitive values masked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ValuesView {
    #[schema(value_type = Object)]
    pub service: BTreeMap<String, Value>,
    /// Role group name -> parameter -> value.
    #[schema(value_type = Object)]
    pub groups: BTreeMap<String, BTreeMap<String, Value>>,
    /// Role id -> parameter -> value.
    #[schema(value_type = Object)]
    pub roles: BTreeMap<String, BTreeMap<String, Value>>,
}

/// A service-level value: set at the service, or the type's default.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceValue {
    /// Any JSON value the parameter's type allows; absent or `null` when the
    /// parameter has no value.
    pub value: Option<Value>,
    /// `service` or `default`.
    pub source: String,
    pub restart: bool,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An effective value of a role and where it comes from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EffectiveValue {
    /// Any JSON value the parameter's type allows.
    pub value: Value,
    /// `role`, `group`, `service` or `default`.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleConfig {
    pub id: String,
    pub role_type: String,
    pub group: String,
    pub values: BTreeMap<String, EffectiveValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    pub revision: u64,
    pub service: BTreeMap<String, ServiceValue>,
    pub overrides: ValuesView,
    /// Role name -> its effective values.
    pub roles: BTreeMap<String, RoleConfig>,
}

/// A role group, by role type and name.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    #[schema(value_type = crate::services::RoleTypeName)]
    pub role_type: String,
    pub name: String,
}

/// A change of configuration values at one level.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// Parameter name -> value; `null` removes the override at this level.
    pub values: BTreeMap<String, Value>,
    /// Why: shown in the history.
    pub message: String,
    /// Apply to a role group instead of the service.
    #[serde(default)]
    pub group: Option<GroupRef>,
    /// Apply to one role (id or name) instead of the service.
    #[serde(default)]
    pub role: Option<String>,
    /// Refuse unless the service is still at this revision.
    #[serde(default, deserialize_with = "crate::whole::option")]
    pub expected_revision: Option<u64>,
}

// Written out: the derived schema cannot say that `group` and `role` exclude
// each other, nor narrow the keys of `values`.
impl utoipa::PartialSchema for ConfigPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, AllOfBuilder, AnyOfBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
            SchemaFormat, SchemaType, Type,
        };
        use utoipa::openapi::{Ref, RefOr};
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let values = || {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .min_properties(Some(1))
                .property_names(Some(Schema::AllOf(
                    AllOfBuilder::new().item(Ref::from_schema_name("ParameterName")).build(),
                )))
                .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
                    ObjectBuilder::new().schema_type(SchemaType::AnyValue).build(),
                )))))
                .description(Some(
                    "Parameter name -> value; `null` removes the override at this level. Which parameters a service \
                 takes, at which levels and with which values, its type says (`GET /api/v1/service-types/{name}`); \
                 what the type refuses is answered 422.",
                ))
        };
        let group = || {
            OneOfBuilder::new()
                .item(Ref::from_schema_name("GroupRef"))
                .item(null())
                .description(Some("Apply to a role group instead of the service."))
        };
        let role = || {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some("Apply to one role (id or name) instead of the service."))
        };
        // `group` and `role` exclude each other: one of them is absent or null.
        let variant = |group_allowed: bool| {
            let o = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("values", values())
                .required("values")
                .property("message", crate::names::not_blank_schema())
                .required("message")
                .property(
                    "expected_revision",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                        .minimum(Some(0))
                        .maximum(Some(i64::MAX))
                        .description(Some("Refuse (409) unless the service is still at this revision.")),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if group_allowed {
                o.property("group", group()).property("role", null())
            } else {
                o.property("group", null()).property("role", role())
            }
        };
        AnyOfBuilder::new()
            .description(Some("A change of configuration values at one level: the service, a role group or a role."))
            .item(variant(true))
            .item(variant(false))
            .into()
    }
}

impl ToSchema for ConfigPatch {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use crate::services::ParameterName;
        schemas.push((ParameterName::name().into(), <ParameterName as utoipa::PartialSchema>::schema()));
        schemas.push((GroupRef::name().into(), <GroupRef as utoipa::PartialSchema>::schema()));
        <GroupRef as ToSchema>::schemas(schemas);
    }
}

/// The revision a change created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigChange {
    pub revision: u64,
    pub changed_keys: Vec<String>,
    pub message: String,
    pub author: String,
    /// Roles that must restart for the change to take effect.
    pub roles_needing_restart: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionSummary {
    pub revision: u64,
    pub author: String,
    pub source: String,
    pub created_at: String,
    pub message: String,
    pub changed_keys: Vec<String>,
}

/// Where a revision took effect: a role that applied it, and when.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppliedOn {
    pub role_id: String,
    pub role: Option<String>,
    pub host_id: String,
    pub hostname: Option<String>,
    pub applied_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionDetail {
    #[serde(flatten)]
    pub summary: RevisionSummary,
    pub values: ValuesView,
    pub applied: Vec<AppliedOn>,
}

/// One parameter whose effective value differs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValueChange {
    pub parameter: String,
    /// Any JSON value; absent or `null` when there was none.
    pub from: Option<Value>,
    /// Any JSON value.
    pub to: Value,
    pub source: String,
    pub restart: bool,
}

/// A unified diff of one rendered file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileDiff {
    pub path: String,
    pub diff: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleDiff {
    pub role_id: String,
    pub role: String,
    pub host_id: String,
    pub hostname: Option<String>,
    pub changes: Vec<ValueChange>,
    pub files: Vec<FileDiff>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigDiff {
    pub from: u64,
    pub to: u64,
    pub roles: Vec<RoleDiff>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The revision whose values the new one takes.
    #[serde(deserialize_with = "crate::whole::required")]
    #[schema(minimum = 0)]
    pub revision: u64,
    #[schema(schema_with = crate::names::not_blank_schema)]
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older revision.
    pub from: u64,
    /// The newer revision.
    pub to: u64,
}
