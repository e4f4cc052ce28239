//! Cluster membership of hosts and the parcel versions each cluster wants on
//! its hosts (the intent of the parcel lifecycle commands). What each host
//! actually holds is observed state: agents report it, the registry keeps it.

use sqlx::any::AnyRow;

use super::{Result, Store, get};
use crate::model::UnixMillis;

/// A parcel version a cluster wants on its hosts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterParcelRec {
    pub cluster: String,
    pub name: String,
    pub version: String,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    /// `distributed` or `active`.
    pub target: String,
    pub activated_at: UnixMillis,
    pub updated_at: UnixMillis,
}

fn parcel_from_row(row: &AnyRow) -> Result<ClusterParcelRec> {
    Ok(ClusterParcelRec {
        cluster: get(row, "cluster")?,
        name: get(row, "name")?,
        version: get(row, "version")?,
        file_name: get(row, "file_name")?,
        sha256: get(row, "sha256")?,
        size: u64::try_from(get::<i64>(row, "size")?).unwrap_or(0),
        target: get(row, "target")?,
        activated_at: get(row, "activated_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

impl Store {
    /// Adds hosts to a cluster (already members are left as they are).
    pub async fn add_cluster_hosts(&self, cluster: &str, hosts: &[String], now: UnixMillis) -> Result<()> {
        if hosts.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for h in hosts {
            sqlx::query(
                "INSERT INTO cluster_hosts (cluster, host_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (cluster, host_id) DO NOTHING",
            )
            .bind(cluster)
            .bind(h)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a host from a cluster; false if it was not a member.
    pub async fn remove_cluster_host(&self, cluster: &str, host: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM cluster_hosts WHERE cluster = $1 AND host_id = $2")
            .bind(cluster)
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The hosts of a cluster, sorted.
    pub async fn cluster_hosts(&self, cluster: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT host_id FROM cluster_hosts WHERE cluster = $1 ORDER BY host_id")
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| get(r, "host_id")).collect()
    }

    /// The clusters a host is in.
    pub async fn clusters_of_host(&self, host_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT cluster FROM cluster_hosts WHERE host_id = $1 ORDER BY cluster")
            .bind(host_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| get(r, "cluster")).collect()
    }

    /// Every (cluster, host) membership.
    pub async fn all_cluster_hosts(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT cluster, host_id FROM cluster_hosts ORDER BY cluster, host_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((get(r, "cluster")?, get(r, "host_id")?))).collect()
    }

    pub async fn cluster_parcels(&self, cluster: Option<&str>) -> Result<Vec<ClusterParcelRec>> {
        let rows = match cluster {
            Some(c) => {
                sqlx::query("SELECT * FROM cluster_parcels WHERE cluster = $1 ORDER BY name, version")
                    .bind(c)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM cluster_parcels ORDER BY cluster, name, version")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(parcel_from_row).collect()
    }

    /// Wants a parcel version distributed on the cluster's hosts (an already
    /// wanted version keeps its target).
    pub async fn want_parcel(&self, p: &ClusterParcelRec) -> Result<()> {
        sqlx::query(
            "INSERT INTO cluster_parcels (cluster, name, version, file_name, sha256, size, target, activated_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (cluster, name, version) DO NOTHING",
        )
        .bind(&p.cluster)
        .bind(&p.name)
        .bind(&p.version)
        .bind(&p.file_name)
        .bind(&p.sha256)
        .bind(i64::try_from(p.size).unwrap_or(i64::MAX))
        .bind(&p.target)
        .bind(p.activated_at)
        .bind(p.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes `version` the active version of `name` in the cluster; the
    /// previously active one goes back to `distributed`. False if the version
    /// is not wanted by the cluster.
    pub async fn set_active_parcel(&self, cluster: &str, name: &str, version: &str, now: UnixMillis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE cluster_parcels SET target = 'distributed', updated_at = $3 \
             WHERE cluster = $1 AND name = $2 AND target = 'active'",
        )
        .bind(cluster)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE cluster_parcels SET target = 'active', activated_at = $4, updated_at = $4 \
             WHERE cluster = $1 AND name = $2 AND version = $3",
        )
        .bind(cluster)
        .bind(name)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// No version of `name` active in the cluster any more.
    pub async fn deactivate_parcel(&self, cluster: &str, name: &str, now: UnixMillis) -> Result<()> {
        sqlx::query(
            "UPDATE cluster_parcels SET target = 'distributed', updated_at = $3 \
             WHERE cluster = $1 AND name = $2 AND target = 'active'",
        )
        .bind(cluster)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stops wanting a parcel version on the cluster's hosts.
    pub async fn unwant_parcel(&self, cluster: &str, name: &str, version: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM cluster_parcels WHERE cluster = $1 AND name = $2 AND version = $3")
            .bind(cluster)
            .bind(name)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
