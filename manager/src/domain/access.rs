//! Who may do what: the one place permissions are checked.
//!
//! Every domain function that reads or changes something begins with
//! [`Actor::require`] (naming the [`Permission`] it needs and the [`Scope`]:
//! the fleet or one cluster) or, for lists, asks [`Actor::visible`] which
//! clusters the caller may see and filters by it. REST handlers and console
//! pages only build the [`Actor`]; a hidden button in the console is a
//! courtesy, never the check.
//!
//! A caller's [`Access`] is their user's grants, narrowed by the grants of
//! the API token they came with (a token never does more than its user can
//! do today, even if the user was demoted after the token was made).
//!
//! An audit entry can only be written through a [`Granted`], the proof that
//! a permission was checked: it records the permission and the channel.

use std::collections::{BTreeMap, BTreeSet};

pub use drover_api::users::{Grant, Permission, Role};

use super::{DomainError, Result};
use crate::store::NewAudit;

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The fleet: hosts outside clusters, users, tokens, the repository.
    Global,
    /// One cluster and everything in it.
    Cluster(&'a str),
    /// Anywhere: the caller holds the permission globally or on at least
    /// one cluster (catalogues everybody who reads needs, such as service
    /// types).
    Any,
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("globally"),
            Scope::Cluster(c) => write!(f, "on cluster {c}"),
            Scope::Any => f.write_str("on any cluster"),
        }
    }
}

/// How a request was authenticated, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A console session.
    Console,
    /// HTTP Basic with a password (REST or CLI).
    Password,
    /// An API token (REST or CLI).
    Token,
    /// The manager itself (fixtures, internal work).
    System,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Console => "console",
            Via::Password => "password",
            Via::Token => "token",
            Via::System => "system",
        }
    }
}

fn grants_allow(grants: &[Grant], permission: Permission, scope: Scope<'_>) -> bool {
    grants.iter().any(|g| {
        g.role.allows(permission)
            && match (scope, &g.cluster) {
                (_, None) => true,
                (Scope::Cluster(c), Some(gc)) => c == gc,
                (Scope::Any, Some(_)) => true,
                (Scope::Global, Some(_)) => false,
            }
    })
}

/// The clusters a caller may see (with some permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    All,
    Only(BTreeSet<String>),
}

impl Visible {
    pub fn contains(&self, cluster: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(set) => set.contains(cluster),
        }
    }

    /// As a store filter: `None` for all.
    pub fn to_filter(&self) -> Option<Vec<String>> {
        match self {
            Visible::All => None,
            Visible::Only(set) => Some(set.iter().cloned().collect()),
        }
    }
}

fn visible_in(grants: &[Grant], permission: Permission) -> Visible {
    let mut set = BTreeSet::new();
    for g in grants.iter().filter(|g| g.role.allows(permission)) {
        match &g.cluster {
            None => return Visible::All,
            Some(c) => {
                set.insert(c.clone());
            }
        }
    }
    Visible::Only(set)
}

/// What a caller may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    grants: Vec<Grant>,
    /// The API token's own grants, when it has any.
    token: Option<Vec<Grant>>,
}

impl Access {
    pub fn new(grants: Vec<Grant>, token: Option<Vec<Grant>>) -> Access {
        Access { grants, token }
    }

    /// Everything (the manager's own work, fixtures).
    pub fn full() -> Access {
        Access { grants: vec![Grant::global(Role::Admin)], token: None }
    }

    pub fn allows(&self, permission: Permission, scope: Scope<'_>) -> bool {
        grants_allow(&self.grants, permission, scope)
            && self.token.as_deref().is_none_or(|t| grants_allow(t, permission, scope))
    }

    pub fn visible(&self, permission: Permission) -> Visible {
        let user = visible_in(&self.grants, permission);
        let Some(token) = &self.token else { return user };
        match (user, visible_in(token, permission)) {
            (Visible::All, t) => t,
            (u, Visible::All) => u,
            (Visible::Only(a), Visible::Only(b)) => Visible::Only(a.intersection(&b).cloned().collect()),
        }
    }

    /// Permissions held globally, and those held only on some clusters.
    pub fn summary(&self) -> (Vec<Permission>, BTreeMap<String, Vec<Permission>>) {
        let global: Vec<Permission> = Permission::ALL.into_iter().filter(|p| self.allows(*p, Scope::Global)).collect();
        let mut clusters: BTreeSet<&str> = self.grants.iter().filter_map(|g| g.cluster.as_deref()).collect();
        if let Some(t) = &self.token {
            clusters.extend(t.iter().filter_map(|g| g.cluster.as_deref()));
        }
        let per_cluster = clusters
            .into_iter()
            .filter_map(|c| {
                let ps: Vec<Permission> = Permission::ALL
                    .into_iter()
                    .filter(|p| !global.contains(p) && self.allows(*p, Scope::Cluster(c)))
                    .collect();
                (!ps.is_empty()).then(|| (c.to_owned(), ps))
            })
            .collect();
        (global, per_cluster)
    }
}

/// Whether every grant of `wanted` is within `held`: a role whose
/// permissions the holder has, on a scope the holder has them on.
pub fn within(wanted: &[Grant], held: &[Grant]) -> std::result::Result<(), Grant> {
    for w in wanted {
        let scope = match &w.cluster {
            Some(c) => Scope::Cluster(c),
            None => Scope::Global,
        };
        if !w.role.permissions().iter().all(|p| grants_allow(held, *p, scope)) {
            return Err(w.clone());
        }
    }
    Ok(())
}

/// Checks grants a user or token is about to be given.
pub fn validate_grants(grants: &[Grant]) -> Result<()> {
    for g in grants {
        if let Some(c) = &g.cluster {
            if !g.role.cluster_scoped() {
                return Err(DomainError::Refused(format!(
                    "role {} is global only; grant it without a cluster",
                    g.role
                )));
            }
            super::validate_name("cluster", c)?;
        }
    }
    Ok(())
}

/// Who asks: a user, where from, how they signed in and what they may do.
#[derive(Debug, Clone)]
pub struct Actor {
    pub username: String,
    pub source: String,
    pub via: Via,
    pub access: Access,
}

impl Actor {
    /// The manager acting on its own (and tests' fixtures): full access.
    pub fn system(name: &str) -> Actor {
        Actor { username: name.to_owned(), source: "manager".into(), via: Via::System, access: Access::full() }
    }

    pub fn may(&self, permission: Permission, scope: Scope<'_>) -> bool {
        self.access.allows(permission, scope)
    }

    /// The check every domain operation starts with.
    pub fn require(&self, permission: Permission, scope: Scope<'_>) -> Result<Granted<'_>> {
        if self.may(permission, scope) {
            Ok(Granted { actor: self, permission: Some(permission) })
        } else {
            Err(DomainError::Forbidden {
                permission,
                message: format!("forbidden: {} lacks permission {permission} {scope}", self.username),
            })
        }
    }

    /// Which clusters the caller may see.
    pub fn visible(&self) -> Visible {
        self.access.visible(Permission::Read)
    }

    /// Fails unless the caller may read `cluster`.
    pub fn require_read(&self, cluster: &str) -> Result<Granted<'_>> {
        self.require(Permission::Read, Scope::Cluster(cluster))
    }
}

/// Proof that an actor was allowed a permission; the only way to write an
/// audit entry for them.
#[derive(Debug, Clone, Copy)]
pub struct Granted<'a> {
    actor: &'a Actor,
    /// `None`: the caller's own account.
    permission: Option<Permission>,
}

impl<'a> Granted<'a> {
    /// A user acting on their own account (password, API tokens), which
    /// needs no role; audited with the permission `own-account`.
    pub(crate) fn own_account(actor: &'a Actor) -> Granted<'a> {
        Granted { actor, permission: None }
    }

    pub fn actor(&self) -> &Actor {
        self.actor
    }

    pub fn audit(&self, action: &str, object_type: &str, object_id: &str, summary: impl Into<String>) -> NewAudit {
        let mut entry =
            crate::audit_entry(&self.actor.username, &self.actor.source, action, object_type, object_id, summary);
        entry.via = self.actor.via.as_str().to_owned();
        entry.permission = self.permission.map_or("own-account", Permission::as_str).to_owned();
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Grant {
        Grant::parse(s).unwrap()
    }

    #[test]
    fn cluster_grants_cover_only_their_cluster() {
        let a = Access::new(vec![g("operator@prod"), g("viewer@dev")], None);
        assert!(a.allows(Permission::CommandsRun, Scope::Cluster("prod")));
        assert!(!a.allows(Permission::CommandsRun, Scope::Cluster("dev")));
        assert!(!a.allows(Permission::CommandsRun, Scope::Global));
        assert!(a.allows(Permission::Read, Scope::Any));
        assert!(!a.allows(Permission::Read, Scope::Global));
        assert!(!a.allows(Permission::ConfigWrite, Scope::Any));
        assert_eq!(a.visible(Permission::Read), Visible::Only(["dev".into(), "prod".into()].into()));
    }

    #[test]
    fn a_token_narrows_its_user() {
        let a = Access::new(vec![g("admin")], Some(vec![g("viewer@prod")]));
        assert!(a.allows(Permission::Read, Scope::Cluster("prod")));
        assert!(!a.allows(Permission::Read, Scope::Cluster("dev")));
        assert!(!a.allows(Permission::UsersWrite, Scope::Global));
        assert_eq!(a.visible(Permission::Read), Visible::Only(["prod".into()].into()));
        // A demoted user's token loses what the user lost.
        let demoted = Access::new(vec![g("viewer@dev")], Some(vec![g("viewer@prod")]));
        assert_eq!(demoted.visible(Permission::Read), Visible::Only(BTreeSet::new()));
        assert!(!demoted.allows(Permission::Read, Scope::Cluster("prod")));
    }

    #[test]
    fn grants_within_grants() {
        assert!(within(&[g("operator@prod")], &[g("cluster-admin@prod")]).is_ok());
        assert!(within(&[g("viewer")], &[g("auditor")]).is_ok());
        assert!(within(&[g("operator@dev")], &[g("cluster-admin@prod")]).is_err());
        assert!(within(&[g("configurator")], &[g("operator")]).is_err());
        assert!(within(&[g("auditor")], &[g("viewer")]).is_err());
        assert!(within(&[g("admin")], &[g("admin")]).is_ok());
    }

    #[test]
    fn global_only_roles_refuse_a_cluster() {
        assert!(validate_grants(&[g("admin@prod")]).is_err());
        assert!(validate_grants(&[g("auditor@prod")]).is_err());
        assert!(validate_grants(&[g("operator@prod"), g("auditor")]).is_ok());
        assert!(validate_grants(&[g("operator@Prod")]).is_err());
    }

    #[test]
    fn forbidden_names_the_permission() {
        let actor = Actor {
            username: "bob".into(),
            source: "127.0.0.1".into(),
            via: Via::Token,
            access: Access::new(vec![g("operator@prod")], None),
        };
        let err = actor.require(Permission::ConfigWrite, Scope::Cluster("prod")).unwrap_err();
        assert!(err.to_string().contains("config.write on cluster prod"), "{err}");
        let granted = actor.require(Permission::CommandsRun, Scope::Cluster("prod")).unwrap();
        let entry = granted.audit("command.start", "service", "prod/zk", "start");
        assert_eq!((entry.via.as_str(), entry.permission.as_str()), ("token", "commands.run"));
    }
}
