//! Commands and their steps as users start and follow them: service
//! commands (start, stop, restart, rolling restart, upgrade, rollback),
//! parcel lifecycle commands and SSH bootstrap all answer a [`CommandView`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A command's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    Running,
    Succeeded,
    Failed,
    Aborted,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Running => "running",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> CommandState {
        match s {
            "running" => CommandState::Running,
            "succeeded" => CommandState::Succeeded,
            "aborted" => CommandState::Aborted,
            _ => CommandState::Failed,
        }
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Aborted,
    Skipped,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Aborted => "aborted",
            StepState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> StepState {
        match s {
            "pending" => StepState::Pending,
            "running" => StepState::Running,
            "succeeded" => StepState::Succeeded,
            "aborted" => StepState::Aborted,
            "skipped" => StepState::Skipped,
            _ => StepState::Failed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub seq: u32,
    pub description: String,
    /// Role ids, or host ids for steps that act on hosts.
    pub roles: Vec<String>,
    pub state: StepState,
    pub message: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    pub id: String,
    pub cluster: String,
    /// Empty for cluster-level commands.
    pub service: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub params: Value,
    pub state: CommandState,
    pub message: String,
    pub created_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Empty in lists.
    pub steps: Vec<StepView>,
}

/// The commands a service takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceCommand {
    Start,
    Stop,
    Restart,
    RollingRestart,
    /// Distribute and activate another parcel version, then restart every
    /// role in batches.
    Upgrade,
    /// Back to the previously active parcel version, the same way.
    Rollback,
}

/// A command to run on a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCommand {
    pub name: ServiceCommand,
    /// Role names or ids; all roles of the service when omitted. Not for
    /// `upgrade` and `rollback`, which restart every role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Only roles whose configuration is stale. Not for `upgrade` and
    /// `rollback`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale_only: bool,
    /// `upgrade` only, and required there: the parcel version to go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

// Written out: one variant per kind of command, so the document says which
// fields each takes (the derived schema would allow `version` for `start`).
impl utoipa::PartialSchema for NewCommand {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let names = |names: &[&str]| ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names.to_vec()));
        let variant = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description))
                .required("name")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let whole_service = |o: ObjectBuilder| {
            o.property("roles", null())
                .property("stale_only", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([false])))
        };
        OneOfBuilder::new()
            .description(Some("A command to run on a service."))
            .item(
                variant("Start, stop or restart roles, all at once per start order or (`rolling-restart`) in batches.")
                    .property("name", names(&["start", "stop", "restart", "rolling-restart"]))
                    .property(
                        "roles",
                        ArrayBuilder::new()
                            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                            .items(ObjectBuilder::new().schema_type(Type::String))
                            .min_items(Some(1))
                            .description(Some("Role names or ids; all roles of the service when omitted.")),
                    )
                    .property(
                        "stale_only",
                        ObjectBuilder::new()
                            .schema_type(Type::Boolean)
                            .description(Some("Only roles whose configuration is stale.")),
                    )
                    .property("version", null()),
            )
            .item(whole_service(
                variant("Distribute and activate another parcel version, then restart every role in batches.")
                    .property("name", names(&["upgrade"]))
                    .property(
                        "version",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .description(Some("The parcel version to go to.")),
                    )
                    .required("version"),
            ))
            .item(whole_service(
                variant("Back to the previously active parcel version, the same way.")
                    .property("name", names(&["rollback"]))
                    .property("version", null()),
            ))
            .into()
    }
}

impl ToSchema for NewCommand {}

/// The answer to an abort request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Aborting {
    pub id: String,
    /// Always `aborting`: the command stops between steps or while waiting.
    pub state: String,
}
