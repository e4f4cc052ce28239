//! Roles: what each is doing (its view, with staleness) and adding them, on
//! a host given by id or on hosts picked by label selector.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Items;

/// What a role should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> RunState {
        if s == "running" { RunState::Running } else { RunState::Stopped }
    }
}

/// What the agent reports a role's process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleState {
    Running,
    Stopped,
    Starting,
    Stopping,
    Failed,
    /// No report yet, or the host is not healthy.
    Unknown,
}

impl RoleState {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleState::Running => "running",
            RoleState::Stopped => "stopped",
            RoleState::Starting => "starting",
            RoleState::Stopping => "stopping",
            RoleState::Failed => "failed",
            RoleState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> RoleState {
        match s {
            "running" => RoleState::Running,
            "stopped" => RoleState::Stopped,
            "starting" => RoleState::Starting,
            "stopping" => RoleState::Stopping,
            "failed" => RoleState::Failed,
            _ => RoleState::Unknown,
        }
    }
}

/// A role's health from its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Good,
    Bad,
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Good => "good",
            Health::Bad => "bad",
            Health::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Health {
        match s {
            "good" => Health::Good,
            "bad" => Health::Bad,
            _ => Health::Unknown,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    pub id: String,
    pub name: String,
    pub role_type: String,
    pub group: String,
    pub host_id: String,
    pub hostname: String,
    /// What the role should be doing.
    pub run_state: RunState,
    /// What the agent reports; `unknown` when there is no report yet or the
    /// host is not healthy.
    pub status: RoleState,
    /// `bad` while the host is lost or decommissioned.
    pub health: Health,
    pub pid: Option<u32>,
    pub restart_count: u32,
    /// Reloads of the running process (new files applied by its reload
    /// signal), and when the last one was sent.
    pub reload_count: u32,
    pub last_reload_at: Option<String>,
    /// The revision whose files are on the host.
    pub applied_revision: Option<u64>,
    /// The revision the running process started with.
    pub running_revision: Option<u64>,
    /// Running with an older revision whose changes need a restart.
    pub stale: bool,
    pub stale_keys: Vec<String>,
    /// Why the role failed, or why its host's report cannot be trusted
    /// (`host NAME (ID) is lost: no heartbeat since TIME`).
    pub last_error: String,
    pub last_log_lines: Vec<String>,
    pub updated_at: Option<String>,
    /// How the agent keeps the role's stdout and stderr logs (its type's `[role_types.log]`).
    #[serde(default)]
    pub log: RoleLogView,
}

/// Rotation and line format of a role's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleLogView {
    /// A log file is rotated at this size.
    pub max_bytes: u64,
    /// Rotated copies kept per file.
    pub max_files: u32,
    /// The line format's name (`redis`, `zookeeper`, `nginx-error`, or the role type's for an
    /// inline one); `null`: lines have no time or level the agent reads.
    pub format: Option<String>,
}

/// A role to add: on a host given by id, or on `count` hosts picked by a
/// label selector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    pub role_type: String,
    /// The host to run on. Give either this or `host_selector`.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Label selector (`zk=true,rack!=r1`): the manager picks `count` healthy
    /// hosts matching it, spreading the service's roles over hosts.
    #[serde(default)]
    pub host_selector: Option<String>,
    /// How many roles to place with `host_selector` (default 1), each on its
    /// own host.
    #[serde(default, deserialize_with = "crate::whole::option")]
    pub count: Option<u32>,
    /// Role group (default `<role type>-default`).
    #[serde(default)]
    pub group: Option<String>,
    /// Defaults to `<service>-<role type>-<n>`.
    #[serde(default)]
    pub name: Option<String>,
}

// Written out: one variant per way of placing, so the document says what
// [`place_by_selector`] refuses (neither or both of `host_id` and
// `host_selector`, `count` without a selector, `name` for several roles).
impl utoipa::PartialSchema for NewRole {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, SchemaType, Type};
        use utoipa::openapi::{Ref, RefOr};
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let nullable = |t: Type| ObjectBuilder::new().schema_type(SchemaType::from_iter([t, Type::Null]));
        let name = || {
            ObjectBuilder::from(crate::names::name_schema())
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some("Defaults to `<service>-<role type>-<n>`."))
        };
        // The fields every variant has; `host_id`, `host_selector`, `count`
        // and `name` as the variant allows them.
        let variant = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description))
                .property("role_type", RefOr::Ref(Ref::from_schema_name("RoleTypeName")))
                .required("role_type")
                .property(
                    "group",
                    nullable(Type::String).description(Some("Role group (default `<role type>-default`).")),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let selector = || {
            ObjectBuilder::from(crate::model::label_selector_schema()).description(Some(
                "Label selector (`zk=true,rack!=r1`): the manager picks `count` healthy hosts matching it, \
                 spreading the service's roles over hosts.",
            ))
        };
        OneOfBuilder::new()
            .description(Some("A role to add: on a host given by id, or on `count` hosts picked by a label selector."))
            .item(
                variant("One role on the host given by id.")
                    .property(
                        "host_id",
                        ObjectBuilder::new().schema_type(Type::String).description(Some("The host to run on.")),
                    )
                    .required("host_id")
                    .property("host_selector", null())
                    .property("count", null())
                    .property("name", name()),
            )
            .item(
                variant("One role on a host picked by label selector; it may be named.")
                    .property("host_id", null())
                    .property("host_selector", selector())
                    .required("host_selector")
                    .property("count", nullable(Type::Integer).minimum(Some(1)).maximum(Some(1)))
                    .property("name", name()),
            )
            .item(
                variant("`count` roles, each on its own host picked by label selector, named by the manager.")
                    .property("host_id", null())
                    .property("host_selector", selector())
                    .required("host_selector")
                    .property(
                        "count",
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(2))
                            .maximum(Some(MAX_COUNT))
                            .description(Some("How many roles to place.")),
                    )
                    .required("count")
                    .property("name", null()),
            )
            .into()
    }
}

impl ToSchema for NewRole {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use crate::services::RoleTypeName;
        schemas.push((RoleTypeName::name().into(), <RoleTypeName as utoipa::PartialSchema>::schema()));
    }
}

/// Most roles one `count` may ask for.
pub const MAX_COUNT: u32 = 1000;

/// Most roles one request may add.
pub const MAX_ROLES_PER_REQUEST: usize = 10_000;

/// One role, or an array of roles added in one request (one render and push).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CreateRoles {
    One(NewRole),
    Many(Vec<NewRole>),
}

/// An object is one role, an array several: decided by the JSON's type, so
/// an array is never read as a struct's fields in order.
impl<'de> Deserialize<'de> for CreateRoles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        use serde::de::{MapAccess, SeqAccess, Visitor};

        struct Roles;

        impl<'de> Visitor<'de> for Roles {
            type Value = CreateRoles;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a role object or an array of role objects")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CreateRoles, A::Error> {
                NewRole::deserialize(MapAccessDeserializer::new(map)).map(CreateRoles::One)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<CreateRoles, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(CreateRoles::Many)
            }
        }

        d.deserialize_any(Roles)
    }
}

impl utoipa::PartialSchema for CreateRoles {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
        OneOfBuilder::new()
            .description(Some("One role, or an array of roles added in one request (one render and push)."))
            .item(Ref::from_schema_name("NewRole"))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("NewRole"))
                    .min_items(Some(1))
                    .max_items(Some(MAX_ROLES_PER_REQUEST)),
            )
            .into()
    }
}

impl ToSchema for CreateRoles {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((NewRole::name().into(), <NewRole as utoipa::PartialSchema>::schema()));
        <NewRole as ToSchema>::schemas(schemas);
    }
}

/// The answer to adding roles: one role for one object placed on one host,
/// `{items}` otherwise.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CreatedRoles {
    One(Box<RoleView>),
    Many(Items<RoleView>),
}
