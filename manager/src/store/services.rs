//! Clusters, services, role groups, roles, immutable config revisions, the
//! state agents report for roles, and commands.
//!
//! A new revision is a compare-and-set: `insert_revision(rev, expected)`
//! moves `services.revision` only while it is still `expected` and inserts the
//! immutable row in the same transaction (optimistic concurrency, a 409 above).
//! A role's index is the next free one within its role type.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::any::AnyRow;

use super::{NewAudit, Result, Store, StoreError, get, get_json, is_unique_violation, to_json};
use crate::model::UnixMillis;

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRec {
    pub name: String,
    pub created_at: UnixMillis,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRec {
    pub cluster: String,
    pub name: String,
    pub service_type: String,
    pub revision: u64,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// A service's roles (ordered by role type and index) with the host name and
/// addresses of each host they run on, by host id.
#[derive(Debug, Clone, Default)]
pub struct ServiceRoles {
    pub roles: Vec<RoleRec>,
    pub hosts: HashMap<String, (String, Vec<String>)>,
}

/// What [`Store::service_roles`] keeps: each entry with the epoch it was read
/// at. Every write of roles, hosts, services or clusters moves the epoch on
/// and empties the map.
#[derive(Debug, Default)]
pub(super) struct TopologyCache {
    epoch: AtomicU64,
    services: Mutex<HashMap<ServiceKey, (u64, Arc<ServiceRoles>)>>,
}

/// `(cluster, service)`.
type ServiceKey = (String, String);

#[derive(Debug, Clone, PartialEq)]
pub struct RoleRec {
    pub id: String,
    pub cluster: String,
    pub service: String,
    pub name: String,
    pub role_type: String,
    pub group: String,
    pub host_id: String,
    pub index: u32,
    /// `running` or `stopped`: what the role should be doing.
    pub run_state: String,
    pub restart_nonce: u64,
    pub created_at: UnixMillis,
}

/// An immutable configuration revision of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionRec {
    pub cluster: String,
    pub service: String,
    pub revision: u64,
    /// The complete overrides at every level (`drover_service_types::config::ConfigValues`).
    pub config: serde_json::Value,
    pub changed_keys: Vec<String>,
    pub author: String,
    /// Client address of the change.
    pub source: String,
    pub message: String,
    pub created_at: UnixMillis,
}

/// What an agent last reported about a role.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoleStatusRec {
    pub role_id: String,
    pub state: String,
    pub health: String,
    pub pid: u32,
    pub last_exit_status: i32,
    pub restart_count: u32,
    pub applied_revision: u64,
    pub running_revision: u64,
    pub restart_nonce: u64,
    pub file_hashes: BTreeMap<String, String>,
    pub last_error: String,
    pub last_log_lines: Vec<String>,
    pub started_at: Option<UnixMillis>,
    /// Reloads of the running process and when the last one was sent. Not
    /// stored: 0 and `None` until the role's agent reports after a manager
    /// restart.
    pub reload_count: u32,
    pub reloaded_at: Option<UnixMillis>,
    pub updated_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRec {
    pub role_id: String,
    pub host_id: String,
    pub applied_at: UnixMillis,
}

/// A role that reported a revision applied, for [`Store::flush_roles`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRevision {
    pub cluster: String,
    pub service: String,
    pub revision: u64,
    pub applied: AppliedRec,
}

/// Which commands a search answers.
#[derive(Debug, Clone, Default)]
pub struct CommandFilter {
    pub state: Option<String>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub created_by: Option<String>,
    /// Only commands of these clusters (what the caller may see).
    pub clusters: Option<Vec<String>>,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandRec {
    pub id: String,
    pub cluster: String,
    pub service: String,
    pub name: String,
    pub params: serde_json::Value,
    pub state: String,
    pub message: String,
    pub created_by: String,
    pub created_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRec {
    pub seq: u32,
    pub description: String,
    pub roles: Vec<String>,
    pub state: String,
    pub message: String,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
}

impl StepRec {
    /// A planned step that has not run yet.
    pub fn pending(seq: u32, description: String, roles: Vec<String>) -> StepRec {
        StepRec {
            seq,
            description,
            roles,
            state: "pending".into(),
            message: String::new(),
            started_at: None,
            finished_at: None,
        }
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn service_from_row(r: &AnyRow) -> Result<ServiceRec> {
    Ok(ServiceRec {
        cluster: get(r, "cluster")?,
        name: get(r, "name")?,
        service_type: get(r, "service_type")?,
        revision: u64_of(get(r, "revision")?),
        created_at: get(r, "created_at")?,
        created_by: get(r, "created_by")?,
    })
}

fn role_from_row(r: &AnyRow) -> Result<RoleRec> {
    Ok(RoleRec {
        id: get(r, "id")?,
        cluster: get(r, "cluster")?,
        service: get(r, "service")?,
        name: get(r, "name")?,
        role_type: get(r, "role_type")?,
        group: get(r, "group_name")?,
        host_id: get(r, "host_id")?,
        index: get::<i64>(r, "idx")? as u32,
        run_state: get(r, "run_state")?,
        restart_nonce: u64_of(get(r, "restart_nonce")?),
        created_at: get(r, "created_at")?,
    })
}

fn revision_from_row(r: &AnyRow) -> Result<RevisionRec> {
    Ok(RevisionRec {
        cluster: get(r, "cluster")?,
        service: get(r, "service")?,
        revision: u64_of(get(r, "revision")?),
        config: get_json(r, "config")?,
        changed_keys: get_json(r, "changed_keys")?,
        author: get(r, "author")?,
        source: get(r, "source")?,
        message: get(r, "message")?,
        created_at: get(r, "created_at")?,
    })
}

fn status_from_row(r: &AnyRow) -> Result<RoleStatusRec> {
    Ok(RoleStatusRec {
        role_id: get(r, "role_id")?,
        state: get(r, "state")?,
        health: get(r, "health")?,
        pid: get::<i64>(r, "pid")? as u32,
        last_exit_status: get::<i64>(r, "last_exit_status")? as i32,
        restart_count: get::<i64>(r, "restart_count")? as u32,
        applied_revision: u64_of(get(r, "applied_revision")?),
        running_revision: u64_of(get(r, "running_revision")?),
        restart_nonce: u64_of(get(r, "restart_nonce")?),
        file_hashes: get_json(r, "file_hashes")?,
        last_error: get(r, "last_error")?,
        last_log_lines: get_json(r, "last_log_lines")?,
        started_at: get(r, "started_at")?,
        reload_count: 0,
        reloaded_at: None,
        updated_at: get(r, "updated_at")?,
    })
}

fn command_from_row(r: &AnyRow) -> Result<CommandRec> {
    Ok(CommandRec {
        id: get(r, "id")?,
        cluster: get(r, "cluster")?,
        service: get(r, "service")?,
        name: get(r, "name")?,
        params: get_json(r, "params")?,
        state: get(r, "state")?,
        message: get(r, "message")?,
        created_by: get(r, "created_by")?,
        created_at: get(r, "created_at")?,
        finished_at: get(r, "finished_at")?,
    })
}

fn conflict(e: sqlx::Error, what: String) -> StoreError {
    if is_unique_violation(&e) { StoreError::Conflict(what) } else { e.into() }
}

impl Store {
    pub async fn create_cluster(&self, c: &ClusterRec) -> Result<()> {
        sqlx::query("INSERT INTO clusters (name, created_at, created_by) VALUES ($1, $2, $3)")
            .bind(&c.name)
            .bind(c.created_at)
            .bind(&c.created_by)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, format!("cluster {:?}", c.name)))?;
        Ok(())
    }

    pub async fn list_clusters(&self) -> Result<Vec<ClusterRec>> {
        let rows = sqlx::query("SELECT * FROM clusters ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ClusterRec {
                    name: get(r, "name")?,
                    created_at: get(r, "created_at")?,
                    created_by: get(r, "created_by")?,
                })
            })
            .collect()
    }

    pub async fn cluster(&self, name: &str) -> Result<Option<ClusterRec>> {
        Ok(self.list_clusters().await?.into_iter().find(|c| c.name == name))
    }

    pub async fn delete_cluster(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM clusters WHERE name = $1").bind(name).execute(&self.pool).await?;
        self.topology_changed();
        Ok(done.rows_affected() > 0)
    }

    /// Creates a service together with its first config revision.
    pub async fn create_service(&self, s: &ServiceRec, first: &RevisionRec) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO services (cluster, name, service_type, revision, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.cluster)
        .bind(&s.name)
        .bind(&s.service_type)
        .bind(i64_of(first.revision))
        .bind(s.created_at)
        .bind(&s.created_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("service {:?} in cluster {:?}", s.name, s.cluster)))?;
        insert_revision_row(&mut tx, first).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_services(&self, cluster: &str) -> Result<Vec<ServiceRec>> {
        let rows = sqlx::query("SELECT * FROM services WHERE cluster = $1 ORDER BY name")
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(service_from_row).collect()
    }

    pub async fn all_services(&self) -> Result<Vec<ServiceRec>> {
        let rows = sqlx::query("SELECT * FROM services ORDER BY cluster, name").fetch_all(&self.pool).await?;
        rows.iter().map(service_from_row).collect()
    }

    pub async fn service(&self, cluster: &str, name: &str) -> Result<Option<ServiceRec>> {
        let row = sqlx::query("SELECT * FROM services WHERE cluster = $1 AND name = $2")
            .bind(cluster)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(service_from_row).transpose()
    }

    /// Deletes a service with its roles, revisions and commands.
    pub async fn delete_service(&self, cluster: &str, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        for table in ["roles", "config_revisions", "role_groups", "revision_applied", "commands"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE cluster = $1 AND service = $2"))
                .bind(cluster)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM services WHERE cluster = $1 AND name = $2")
            .bind(cluster)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.topology_changed();
        Ok(done.rows_affected() > 0)
    }

    pub async fn create_role_group(
        &self,
        cluster: &str,
        service: &str,
        role_type: &str,
        name: &str,
        now: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO role_groups (cluster, service, role_type, name, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(cluster)
        .bind(service)
        .bind(role_type)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("role group {name:?} of {role_type}")))?;
        Ok(())
    }

    /// Named role groups of a service as (role type, group name).
    pub async fn role_groups(&self, cluster: &str, service: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT role_type, name FROM role_groups WHERE cluster = $1 AND service = $2 ORDER BY role_type, name",
        )
        .bind(cluster)
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "role_type")?, get(r, "name")?))).collect()
    }

    /// Inserts a role; its index is the next free one within its role type.
    pub async fn insert_role(&self, role: &RoleRec) -> Result<RoleRec> {
        let mut out = self.insert_roles(std::slice::from_ref(role)).await?;
        Ok(out.remove(0))
    }

    /// Inserts roles (of one service) in one transaction: all or none. Each
    /// gets the next free index of its role type.
    pub async fn insert_roles(&self, roles: &[RoleRec]) -> Result<Vec<RoleRec>> {
        let Some(first) = roles.first() else { return Ok(Vec::new()) };
        let mut tx = self.pool.begin().await?;
        // Take the write lock first (SQLite) so two inserts cannot pick the same index.
        sqlx::query("UPDATE services SET revision = revision WHERE cluster = $1 AND name = $2")
            .bind(&first.cluster)
            .bind(&first.service)
            .execute(&mut *tx)
            .await?;
        let mut next: HashMap<(String, String, String), u32> = HashMap::new();
        let mut out = Vec::with_capacity(roles.len());
        for role in roles {
            let key = (role.cluster.clone(), role.service.clone(), role.role_type.clone());
            let index = match next.get(&key) {
                Some(n) => *n,
                None => {
                    let row = sqlx::query(
                        "SELECT COALESCE(MAX(idx) + 1, 0) AS next FROM roles \
                         WHERE cluster = $1 AND service = $2 AND role_type = $3",
                    )
                    .bind(&role.cluster)
                    .bind(&role.service)
                    .bind(&role.role_type)
                    .fetch_one(&mut *tx)
                    .await?;
                    get::<i64>(&row, "next")? as u32
                }
            };
            next.insert(key, index + 1);
            let mut role = role.clone();
            role.index = index;
            sqlx::query(
                "INSERT INTO roles (id, cluster, service, name, role_type, group_name, host_id, idx, run_state, restart_nonce, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&role.id)
            .bind(&role.cluster)
            .bind(&role.service)
            .bind(&role.name)
            .bind(&role.role_type)
            .bind(&role.group)
            .bind(&role.host_id)
            .bind(i64::from(role.index))
            .bind(&role.run_state)
            .bind(i64_of(role.restart_nonce))
            .bind(role.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("role {:?}", role.name)))?;
            out.push(role);
        }
        tx.commit().await?;
        self.topology_changed();
        Ok(out)
    }

    /// The roles of a service with the name and addresses of their hosts, as
    /// rendering reads them. Kept from one call to the next until the store
    /// writes a role, a host or a service (`TopologyCache`): a change to a
    /// 10,000-role service's configuration reads none of it again.
    pub async fn service_roles(&self, cluster: &str, service: &str) -> Result<Arc<ServiceRoles>> {
        let key = (cluster.to_owned(), service.to_owned());
        // Read before loading: a write that lands meanwhile moves the epoch on
        // and the entry kept below is never used.
        let epoch = self.topology.epoch.load(Ordering::Acquire);
        if let Some((at, kept)) = self.topology.services.lock().expect("topology cache").get(&key)
            && *at == epoch
        {
            return Ok(kept.clone());
        }
        let roles = self.roles_of_service(cluster, service).await?;
        let mut ids: Vec<String> = roles.iter().map(|r| r.host_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let hosts = self.host_addresses(&ids).await?;
        let loaded = Arc::new(ServiceRoles { roles, hosts });
        self.topology.services.lock().expect("topology cache").insert(key, (epoch, loaded.clone()));
        Ok(loaded)
    }

    /// Forgets every kept [`Store::service_roles`]; called after each write
    /// of roles, hosts' names or addresses, services or clusters.
    pub(super) fn topology_changed(&self) {
        self.topology.epoch.fetch_add(1, Ordering::AcqRel);
        self.topology.services.lock().expect("topology cache").clear();
    }

    pub async fn roles_of_service(&self, cluster: &str, service: &str) -> Result<Vec<RoleRec>> {
        let rows = sqlx::query("SELECT * FROM roles WHERE cluster = $1 AND service = $2 ORDER BY role_type, idx")
            .bind(cluster)
            .bind(service)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(role_from_row).collect()
    }

    pub async fn roles_on_host(&self, host_id: &str) -> Result<Vec<RoleRec>> {
        let rows = sqlx::query("SELECT * FROM roles WHERE host_id = $1 ORDER BY cluster, service, role_type, idx")
            .bind(host_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(role_from_row).collect()
    }

    /// How many roles (of every service) each host runs, for placement.
    pub async fn role_counts_by_host(&self) -> Result<HashMap<String, u32>> {
        let rows =
            sqlx::query("SELECT host_id, COUNT(*) AS n FROM roles GROUP BY host_id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((get::<String>(r, "host_id")?, get::<i64>(r, "n")? as u32))).collect()
    }

    pub async fn role(&self, id: &str) -> Result<Option<RoleRec>> {
        let row = sqlx::query("SELECT * FROM roles WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(role_from_row).transpose()
    }

    pub async fn delete_role(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM roles WHERE id = $1").bind(id).execute(&self.pool).await?;
        self.topology_changed();
        Ok(done.rows_affected() > 0)
    }

    /// Sets what the given roles should be doing (`running` / `stopped`).
    pub async fn set_run_state(&self, role_ids: &[String], run_state: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in role_ids {
            sqlx::query("UPDATE roles SET run_state = $2 WHERE id = $1")
                .bind(id)
                .bind(run_state)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.topology_changed();
        Ok(())
    }

    /// Bumps the restart nonce of the given roles (and makes them `running`);
    /// returns the new nonce of each.
    pub async fn bump_restart_nonce(&self, role_ids: &[String]) -> Result<HashMap<String, u64>> {
        let mut tx = self.pool.begin().await?;
        let mut out = HashMap::new();
        for id in role_ids {
            let row = sqlx::query(
                "UPDATE roles SET restart_nonce = restart_nonce + 1, run_state = 'running' WHERE id = $1 RETURNING restart_nonce",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                out.insert(id.clone(), u64_of(get(&r, "restart_nonce")?));
            }
        }
        tx.commit().await?;
        self.topology_changed();
        Ok(out)
    }

    /// Stores a new revision if the service is still at `expected` (optimistic
    /// concurrency: two admins editing at once cannot overwrite each other).
    /// Stores `rev` if the service is still at `expected`, with its audit
    /// entry in the same transaction: a revision is never stored unaudited.
    pub async fn insert_revision(&self, rev: &RevisionRec, expected: u64, audit: Option<&NewAudit>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE services SET revision = $3 WHERE cluster = $1 AND name = $2 AND revision = $4")
            .bind(&rev.cluster)
            .bind(&rev.service)
            .bind(i64_of(rev.revision))
            .bind(i64_of(expected))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_revision_row(&mut tx, rev).await?;
        if let Some(a) = audit {
            super::records::insert_audit_row(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn revisions(&self, cluster: &str, service: &str) -> Result<Vec<RevisionRec>> {
        let rows =
            sqlx::query("SELECT * FROM config_revisions WHERE cluster = $1 AND service = $2 ORDER BY revision DESC")
                .bind(cluster)
                .bind(service)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(revision_from_row).collect()
    }

    pub async fn revision(&self, cluster: &str, service: &str, revision: u64) -> Result<Option<RevisionRec>> {
        let row = sqlx::query("SELECT * FROM config_revisions WHERE cluster = $1 AND service = $2 AND revision = $3")
            .bind(cluster)
            .bind(service)
            .bind(i64_of(revision))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    pub async fn upsert_role_status(&self, s: &RoleStatusRec) -> Result<()> {
        self.flush_roles(std::slice::from_ref(s), &[]).await
    }

    /// Writes reported role states and first-applied records in one transaction.
    pub async fn flush_roles(&self, statuses: &[RoleStatusRec], applied: &[AppliedRevision]) -> Result<()> {
        self.flush_batch(super::FlushBatch { statuses, applied, ..Default::default() }).await
    }

    pub async fn role_statuses(&self, cluster: &str, service: &str) -> Result<HashMap<String, RoleStatusRec>> {
        let rows = sqlx::query(
            "SELECT s.* FROM role_status s JOIN roles r ON r.id = s.role_id WHERE r.cluster = $1 AND r.service = $2",
        )
        .bind(cluster)
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| status_from_row(r).map(|s| (s.role_id.clone(), s))).collect()
    }

    /// Records the first time a role reported a revision applied.
    pub async fn record_applied(&self, a: &AppliedRevision) -> Result<()> {
        self.flush_roles(&[], std::slice::from_ref(a)).await
    }

    pub async fn applied_for_revision(&self, cluster: &str, service: &str, revision: u64) -> Result<Vec<AppliedRec>> {
        let rows = sqlx::query(
            "SELECT role_id, host_id, applied_at FROM revision_applied WHERE cluster = $1 AND service = $2 AND revision = $3 \
             ORDER BY applied_at, role_id",
        )
        .bind(cluster)
        .bind(service)
        .bind(i64_of(revision))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AppliedRec {
                    role_id: get(r, "role_id")?,
                    host_id: get(r, "host_id")?,
                    applied_at: get(r, "applied_at")?,
                })
            })
            .collect()
    }

    pub async fn set_desired_generation(&self, host_id: &str, generation: u64) -> Result<()> {
        sqlx::query("UPDATE host_live SET desired_generation = $2 WHERE host_id = $1")
            .bind(host_id)
            .bind(i64_of(generation))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn desired_generations(&self) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query("SELECT host_id, desired_generation FROM host_live").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((get(r, "host_id")?, u64_of(get(r, "desired_generation")?)))).collect()
    }

    pub async fn insert_command(&self, c: &CommandRec, steps: &[StepRec]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO commands (id, cluster, service, name, params, state, message, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.id)
        .bind(&c.cluster)
        .bind(&c.service)
        .bind(&c.name)
        .bind(to_json(&c.params))
        .bind(&c.state)
        .bind(&c.message)
        .bind(&c.created_by)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;
        for s in steps {
            sqlx::query(
                "INSERT INTO command_steps (command_id, seq, description, roles, state, message) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.id)
            .bind(i64::from(s.seq))
            .bind(&s.description)
            .bind(to_json(&s.roles))
            .bind(&s.state)
            .bind(&s.message)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn finish_command(&self, id: &str, state: &str, message: &str, at: UnixMillis) -> Result<()> {
        sqlx::query("UPDATE commands SET state = $2, message = $3, finished_at = $4 WHERE id = $1")
            .bind(id)
            .bind(state)
            .bind(message)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn update_step(
        &self,
        id: &str,
        seq: u32,
        state: &str,
        message: &str,
        started_at: Option<UnixMillis>,
        finished_at: Option<UnixMillis>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE command_steps SET state = $3, message = $4, started_at = COALESCE($5, started_at), \
             finished_at = COALESCE($6, finished_at) WHERE command_id = $1 AND seq = $2",
        )
        .bind(id)
        .bind(i64::from(seq))
        .bind(state)
        .bind(message)
        .bind(started_at)
        .bind(finished_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Names the host a step runs on once it is known (a step planned for a
    /// container that did not exist yet when its command started).
    pub async fn set_step_target(&self, id: &str, seq: u32, description: &str, roles: &[String]) -> Result<()> {
        sqlx::query("UPDATE command_steps SET description = $3, roles = $4 WHERE command_id = $1 AND seq = $2")
            .bind(id)
            .bind(i64::from(seq))
            .bind(description)
            .bind(to_json(&roles))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn command(&self, id: &str) -> Result<Option<(CommandRec, Vec<StepRec>)>> {
        let Some(row) = sqlx::query("SELECT * FROM commands WHERE id = $1").bind(id).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let cmd = command_from_row(&row)?;
        let rows = sqlx::query("SELECT * FROM command_steps WHERE command_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let steps = rows
            .iter()
            .map(|r| {
                Ok(StepRec {
                    seq: get::<i64>(r, "seq")? as u32,
                    description: get(r, "description")?,
                    roles: get_json(r, "roles")?,
                    state: get(r, "state")?,
                    message: get(r, "message")?,
                    started_at: get(r, "started_at")?,
                    finished_at: get(r, "finished_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((cmd, steps)))
    }

    pub async fn commands_in_state(&self, state: &str) -> Result<Vec<CommandRec>> {
        let rows = sqlx::query("SELECT * FROM commands WHERE state = $1 ORDER BY created_at")
            .bind(state)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(command_from_row).collect()
    }

    /// How many commands are in each state, for the manager's metrics.
    pub async fn command_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM commands GROUP BY state").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((get(r, "state")?, get(r, "n")?))).collect()
    }

    /// Commands matching `f`, newest first.
    pub async fn search_commands(&self, f: &CommandFilter) -> Result<Vec<CommandRec>> {
        let mut sql = String::from("SELECT * FROM commands WHERE 1 = 1");
        let mut args: Vec<super::records::Arg> = Vec::new();
        for (cond, value) in [
            ("state = ", &f.state),
            ("cluster = ", &f.cluster),
            ("service = ", &f.service),
            ("created_by = ", &f.created_by),
        ] {
            super::records::push_filter(&mut sql, &mut args, cond, value.clone().map(super::records::Arg::Text));
        }
        if let Some(clusters) = &f.clusters {
            super::records::push_in(&mut sql, &mut args, "cluster", clusters);
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT {} OFFSET {}", f.limit.clamp(1, 1000), f.offset));
        let rows = super::records::bind_all(sqlx::query(&sql), &args).fetch_all(&self.pool).await?;
        rows.iter().map(command_from_row).collect()
    }

    pub async fn list_commands(&self, cluster: &str, service: &str) -> Result<Vec<CommandRec>> {
        let rows = sqlx::query(
            "SELECT * FROM commands WHERE cluster = $1 AND service = $2 ORDER BY created_at DESC LIMIT 100",
        )
        .bind(cluster)
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_from_row).collect()
    }
}

async fn insert_revision_row(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rev: &RevisionRec) -> Result<()> {
    sqlx::query(
        "INSERT INTO config_revisions (cluster, service, revision, config, changed_keys, author, source, message, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&rev.cluster)
    .bind(&rev.service)
    .bind(i64_of(rev.revision))
    .bind(to_json(&rev.config))
    .bind(to_json(&rev.changed_keys))
    .bind(&rev.author)
    .bind(&rev.source)
    .bind(&rev.message)
    .bind(rev.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Role reports (of roles that still exist) and first-applied records.
pub(super) async fn role_statuses_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    statuses: &[RoleStatusRec],
    applied: &[AppliedRevision],
) -> Result<()> {
    for chunk in statuses.chunks(super::BATCH_ROWS) {
        upsert_role_statuses_in(tx, backend, chunk).await?;
    }
    for chunk in applied.chunks(super::BATCH_ROWS) {
        record_applied_in(tx, backend, chunk).await?;
    }
    Ok(())
}

/// Upserts a role's status; a role deleted since its agent reported is
/// skipped rather than failing the batch forever.
/// Upserts the statuses of roles that still exist, many rows per statement
/// (role ids unique within `rows`: they come from a map).
async fn upsert_role_statuses_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    rows: &[RoleStatusRec],
) -> Result<()> {
    // `WHERE` keeps SQLite from reading `ON CONFLICT` as a join constraint.
    let sql = format!(
        "INSERT INTO role_status (role_id, state, health, pid, last_exit_status, restart_count, applied_revision, \
         running_revision, restart_nonce, file_hashes, last_error, last_log_lines, started_at, updated_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, \
         v.column10, v.column11, v.column12, v.column13, v.column14 FROM (VALUES {}) AS v \
         WHERE EXISTS (SELECT 1 FROM roles WHERE id = v.column1) \
         ON CONFLICT (role_id) DO UPDATE SET state = excluded.state, health = excluded.health, pid = excluded.pid, \
         last_exit_status = excluded.last_exit_status, restart_count = excluded.restart_count, \
         applied_revision = excluded.applied_revision, running_revision = excluded.running_revision, \
         restart_nonce = excluded.restart_nonce, file_hashes = excluded.file_hashes, last_error = excluded.last_error, \
         last_log_lines = excluded.last_log_lines, started_at = excluded.started_at, updated_at = excluded.updated_at",
        super::values_placeholders(backend, rows.len(), 14)
    );
    let mut q = super::batch_query(&sql, rows.len());
    for s in rows {
        q = q
            .bind(&s.role_id)
            .bind(&s.state)
            .bind(&s.health)
            .bind(i64::from(s.pid))
            .bind(i64::from(s.last_exit_status))
            .bind(i64::from(s.restart_count))
            .bind(i64_of(s.applied_revision))
            .bind(i64_of(s.running_revision))
            .bind(i64_of(s.restart_nonce))
            .bind(to_json(&s.file_hashes))
            .bind(&s.last_error)
            .bind(to_json(&s.last_log_lines))
            .bind(s.started_at)
            .bind(s.updated_at);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

async fn record_applied_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    rows: &[AppliedRevision],
) -> Result<()> {
    let sql = format!(
        "INSERT INTO revision_applied (cluster, service, revision, role_id, host_id, applied_at) VALUES {} \
         ON CONFLICT (cluster, service, revision, role_id) DO NOTHING",
        super::values_placeholders(backend, rows.len(), 6)
    );
    let mut q = super::batch_query(&sql, rows.len());
    for a in rows {
        q = q
            .bind(&a.cluster)
            .bind(&a.service)
            .bind(i64_of(a.revision))
            .bind(&a.applied.role_id)
            .bind(&a.applied.host_id)
            .bind(a.applied.applied_at);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}
