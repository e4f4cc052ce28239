//! Environments: which template made the cluster of the same name, for whom,
//! and until when. The containers are the provider's records (labelled
//! `cluster=NAME`); health and state are asked of the registry and the
//! instantiation command, never stored.

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, get, is_unique_violation};
use crate::model::UnixMillis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRec {
    pub name: String,
    pub owner: String,
    pub template: String,
    pub template_version: u64,
    pub command_id: String,
    /// Containers asked for.
    pub hosts: u32,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub expires_at: Option<UnixMillis>,
}

fn from_row(row: &AnyRow) -> Result<EnvironmentRec> {
    let version: i64 = get(row, "template_version")?;
    let hosts: i64 = get(row, "hosts")?;
    Ok(EnvironmentRec {
        name: get(row, "name")?,
        owner: get(row, "owner")?,
        template: get(row, "template")?,
        template_version: u64::try_from(version).map_err(|e| StoreError::corrupt("template_version", e))?,
        command_id: get(row, "command_id")?,
        hosts: u32::try_from(hosts).map_err(|e| StoreError::corrupt("hosts", e))?,
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
        expires_at: get(row, "expires_at")?,
    })
}

impl Store {
    /// Records a new environment; `Conflict` when the name is taken.
    pub async fn insert_environment(&self, e: &EnvironmentRec) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO environments (name, owner, template, template_version, command_id, hosts, created_at, \
             created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.name)
        .bind(&e.owner)
        .bind(&e.template)
        .bind(e.template_version as i64)
        .bind(&e.command_id)
        .bind(i64::from(e.hosts))
        .bind(e.created_at)
        .bind(&e.created_by)
        .bind(e.expires_at)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!("environment {}", e.name))),
            Err(err) => Err(err.into()),
        }
    }

    /// The command of a new run of an environment's instantiation.
    pub async fn set_environment_command(&self, name: &str, command_id: &str) -> Result<()> {
        sqlx::query("UPDATE environments SET command_id = $2 WHERE name = $1")
            .bind(name)
            .bind(command_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every environment, by name.
    pub async fn environments(&self) -> Result<Vec<EnvironmentRec>> {
        let rows = sqlx::query("SELECT * FROM environments ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn environment(&self, name: &str) -> Result<Option<EnvironmentRec>> {
        let row =
            sqlx::query("SELECT * FROM environments WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Environments whose expiry is at or before `now`.
    pub async fn expired_environments(&self, now: UnixMillis) -> Result<Vec<EnvironmentRec>> {
        let rows = sqlx::query(
            "SELECT * FROM environments WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_environment(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM environments WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a decommissioned host from the inventory with what refers to
    /// it (cluster membership, applied revisions; labels and metrics go with
    /// it). Its certificate stays refused: a session names a host id the
    /// store must know. `false` when there is no such decommissioned host.
    pub async fn purge_host(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT status FROM hosts WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
        let status: Option<String> = row.as_ref().map(|r| get(r, "status")).transpose()?;
        if status.as_deref() != Some("decommissioned") {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM roles WHERE host_id = $1",
            "DELETE FROM revision_applied WHERE host_id = $1",
            "DELETE FROM cluster_hosts WHERE host_id = $1",
            "DELETE FROM hosts WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.topology_changed();
        Ok(true)
    }
}

/// A snapshot: per container, its host group in the snapshot's template, the
/// image it was committed to and the roles whose data the image holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRec {
    pub name: String,
    pub environment: String,
    pub hosts: Vec<SnapshotHost>,
    pub created_at: UnixMillis,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotHost {
    pub group: String,
    pub image: String,
    pub roles: Vec<SnapshotRole>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRole {
    pub service: String,
    pub role_type: String,
    pub role_id: String,
}

fn snapshot_from_row(row: &AnyRow) -> Result<SnapshotRec> {
    Ok(SnapshotRec {
        name: get(row, "name")?,
        environment: get(row, "environment")?,
        hosts: super::get_json(row, "hosts")?,
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
    })
}

impl Store {
    /// Records a snapshot; `Conflict` when the name is taken.
    pub async fn insert_snapshot(&self, s: &SnapshotRec) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO environment_snapshots (name, environment, hosts, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.name)
        .bind(&s.environment)
        .bind(super::to_json(&s.hosts))
        .bind(s.created_at)
        .bind(&s.created_by)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!("snapshot {}", s.name))),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn snapshots(&self) -> Result<Vec<SnapshotRec>> {
        let rows = sqlx::query("SELECT * FROM environment_snapshots ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    pub async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRec>> {
        let row = sqlx::query("SELECT * FROM environment_snapshots WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM environment_snapshots WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
