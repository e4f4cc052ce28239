//! Users, the roles they are granted and the permissions each role carries.
//!
//! A role is a fixed set of [`Permission`]s. A [`Grant`] gives a role either
//! globally (no `cluster`) or for one cluster. The table here is the whole
//! access model; the manager checks a permission against a scope (global or
//! a cluster) in one place, its domain layer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including users, enrollment tokens, SSH bootstrap,
    /// providers and settings. Global only.
    Admin,
    /// Services, roles, configuration, commands, parcels and hosts of a
    /// cluster (or of every cluster when granted globally).
    ClusterAdmin,
    /// Configuration changes and rollbacks; no commands.
    Configurator,
    /// Start, stop, restart, rolling restart, abort; no configuration changes.
    Operator,
    /// Reads everything but the audit log (secrets are never shown to anyone).
    Viewer,
    /// Reads everything including the audit log; changes nothing. Global only.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Admin, Role::ClusterAdmin, Role::Configurator, Role::Operator, Role::Viewer, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ClusterAdmin => "cluster-admin",
            Role::Configurator => "configurator",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role may be granted for a single cluster.
    pub fn cluster_scoped(self) -> bool {
        !matches!(self, Role::Admin | Role::Auditor)
    }

    /// The permissions the role carries.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &Permission::ALL,
            Role::ClusterAdmin => &[Read, ConfigWrite, CommandsRun, ServicesWrite, HostsWrite, ParcelsWrite],
            Role::Configurator => &[Read, ConfigWrite],
            Role::Operator => &[Read, CommandsRun],
            Role::Viewer => &[Read],
            Role::Auditor => &[Read, AuditRead],
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a caller may be allowed to do. A REST route or console action
/// needs exactly one, on the global scope or on one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    /// Read hosts, clusters, services, roles, configuration and its history
    /// (secrets masked), commands, parcels and events.
    #[serde(rename = "read")]
    Read,
    /// Read the audit log.
    #[serde(rename = "audit.read")]
    AuditRead,
    /// Change configuration, roll it back.
    #[serde(rename = "config.write")]
    ConfigWrite,
    /// Start, stop, restart, rolling restart, abort commands.
    #[serde(rename = "commands.run")]
    CommandsRun,
    /// Create and delete services, roles and role groups.
    #[serde(rename = "services.write")]
    ServicesWrite,
    /// Label, decommission and move hosts between clusters.
    #[serde(rename = "hosts.write")]
    HostsWrite,
    /// Distribute, activate, upgrade and roll back parcels; on the global
    /// scope also upload to and delete from the repository.
    #[serde(rename = "parcels.write")]
    ParcelsWrite,
    /// Create and delete clusters.
    #[serde(rename = "clusters.write")]
    ClustersWrite,
    /// Manage users and their roles.
    #[serde(rename = "users.write")]
    UsersWrite,
    /// Bring hosts in: enrollment tokens, SSH bootstrap, providers.
    #[serde(rename = "fleet.enroll")]
    FleetEnroll,
}

impl Permission {
    pub const ALL: [Permission; 10] = [
        Permission::Read,
        Permission::AuditRead,
        Permission::ConfigWrite,
        Permission::CommandsRun,
        Permission::ServicesWrite,
        Permission::HostsWrite,
        Permission::ParcelsWrite,
        Permission::ClustersWrite,
        Permission::UsersWrite,
        Permission::FleetEnroll,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::AuditRead => "audit.read",
            Permission::ConfigWrite => "config.write",
            Permission::CommandsRun => "commands.run",
            Permission::ServicesWrite => "services.write",
            Permission::HostsWrite => "hosts.write",
            Permission::ParcelsWrite => "parcels.write",
            Permission::ClustersWrite => "clusters.write",
            Permission::UsersWrite => "users.write",
            Permission::FleetEnroll => "fleet.enroll",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role granted globally (`cluster` absent) or for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub role: Role,
    /// The cluster the role is granted for; absent means every cluster and
    /// the fleet. `admin` and `auditor` are global only.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(schema_with = crate::names::name_schema)]
    pub cluster: Option<String>,
}

/// An optional field that, when given, is a string: `null` is refused as
/// the schema says (absent is the way to leave it out).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

impl Grant {
    pub fn global(role: Role) -> Grant {
        Grant { role, cluster: None }
    }

    pub fn on(role: Role, cluster: &str) -> Grant {
        Grant { role, cluster: Some(cluster.to_owned()) }
    }

    /// `admin`, or `operator@prod`.
    pub fn parse(s: &str) -> Option<Grant> {
        match s.split_once('@') {
            Some((role, cluster)) => Some(Grant::on(Role::parse(role)?, cluster)),
            None => Some(Grant::global(Role::parse(s)?)),
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cluster {
            Some(c) => write!(f, "{}@{c}", self.role),
            None => write!(f, "{}", self.role),
        }
    }
}

/// Where a user's password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserSource {
    /// A password hash in Drover's database.
    Local,
    /// The directory (`--ldap-url`); roles come from group membership.
    Ldap,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    pub grants: Vec<Grant>,
    /// A disabled user cannot sign in; their sessions ended when disabled.
    pub disabled: bool,
    pub source: UserSource,
    pub created_at: String,
    /// The last successful sign-in or API call with a password.
    pub last_sign_in_at: Option<String>,
}

/// The answer of `GET /api/v1/users/me`: the user and what they may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub user: UserInfo,
    /// Permissions held globally.
    pub permissions: Vec<Permission>,
    /// Permissions held on single clusters, by cluster.
    pub cluster_permissions: std::collections::BTreeMap<String, Vec<Permission>>,
    /// How this request was authenticated: `console`, `password` or `token`.
    pub via: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1-64 characters: letters, digits, `.`, `_`, `-`, `@`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
    pub username: String,
    /// At least 12 characters, not containing the user name.
    #[schema(value_type = String, min_length = 12, max_length = 1024)]
    pub password: crate::bootstrap::Secret,
    /// What the user may do; empty means nothing until a role is granted.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// Replaces every grant of the user.
    #[serde(default)]
    pub grants: Option<Vec<Grant>>,
    /// Disable (ends the user's sessions) or enable the user.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// An administrator sets a user's password.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    #[schema(value_type = String, min_length = 12, max_length = 1024)]
    pub password: crate::bootstrap::Secret,
}

/// A user changes their own password.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String, max_length = 1024)]
    pub current_password: crate::bootstrap::Secret,
    #[schema(value_type = String, min_length = 12, max_length = 1024)]
    pub new_password: crate::bootstrap::Secret,
}

/// Query of `GET /api/v1/users`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// At most this many users (1-1000, default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_print() {
        for s in ["admin", "operator@prod", "viewer", "cluster-admin@zk-1"] {
            assert_eq!(Grant::parse(s).unwrap().to_string(), s);
        }
        assert!(Grant::parse("root").is_none());
        assert!(Grant::parse("nobody@prod").is_none());
        let null: Result<Grant, _> = serde_json::from_str(r#"{"role": "admin", "cluster": null}"#);
        assert!(null.is_err(), "null is not a cluster name");
        let absent: Grant = serde_json::from_str(r#"{"role": "admin"}"#).unwrap();
        assert_eq!(absent, Grant::global(Role::Admin));
    }

    #[test]
    fn roles_are_nested_as_documented() {
        for p in Permission::ALL {
            assert!(Role::Admin.allows(p));
        }
        for r in Role::ALL {
            assert!(r.allows(Permission::Read), "{r} reads");
        }
        assert!(!Role::Operator.allows(Permission::ConfigWrite));
        assert!(!Role::Configurator.allows(Permission::CommandsRun));
        assert!(!Role::Viewer.allows(Permission::AuditRead));
        assert!(Role::Auditor.allows(Permission::AuditRead));
        assert!(!Role::ClusterAdmin.allows(Permission::UsersWrite));
        assert_eq!(serde_json::to_string(&Permission::ConfigWrite).unwrap(), "\"config.write\"");
        assert_eq!(serde_json::to_string(&Role::ClusterAdmin).unwrap(), "\"cluster-admin\"");
    }
}
