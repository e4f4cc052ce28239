//! Containers the manager created on a Docker engine (the Docker provider):
//! what it needs after a restart to list them with the host each became and
//! to remove them, and only them. Whether a container still runs is asked of
//! the engine, never stored.

use sqlx::any::AnyRow;

use super::{Result, Store, get, get_json, to_json};
use crate::model::{Labels, UnixMillis};

/// One container created by a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHostRec {
    /// The engine's container id.
    pub id: String,
    /// `docker`.
    pub provider: String,
    pub name: String,
    /// Where it runs, e.g. `unix:///var/run/docker.sock`.
    pub engine: String,
    /// The manager's CA fingerprint (the `drover.owner` label).
    pub owner: String,
    pub image: String,
    pub network: String,
    /// The named volume holding the agent's data dir.
    pub volume: String,
    /// The enrollment token the container was started with.
    pub token_id: String,
    /// The labels its host asks for.
    pub labels: Labels,
    pub created_by: String,
    pub created_at: UnixMillis,
    /// The host it enrolled as, once seen.
    pub host_id: Option<String>,
}

fn from_row(row: &AnyRow) -> Result<ProviderHostRec> {
    Ok(ProviderHostRec {
        id: get(row, "id")?,
        provider: get(row, "provider")?,
        name: get(row, "name")?,
        engine: get(row, "engine")?,
        owner: get(row, "owner")?,
        image: get(row, "image")?,
        network: get(row, "network")?,
        volume: get(row, "volume")?,
        token_id: get(row, "token_id")?,
        labels: get_json(row, "labels")?,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        host_id: get(row, "host_id")?,
    })
}

impl Store {
    pub async fn insert_provider_host(&self, h: &ProviderHostRec) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_hosts (id, provider, name, engine, owner, image, network, volume, token_id, labels, \
             created_by, created_at, host_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&h.id)
        .bind(&h.provider)
        .bind(&h.name)
        .bind(&h.engine)
        .bind(&h.owner)
        .bind(&h.image)
        .bind(&h.network)
        .bind(&h.volume)
        .bind(&h.token_id)
        .bind(to_json(&h.labels))
        .bind(&h.created_by)
        .bind(h.created_at)
        .bind(&h.host_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every container of a provider, oldest first.
    pub async fn provider_hosts(&self, provider: &str) -> Result<Vec<ProviderHostRec>> {
        let rows = sqlx::query("SELECT * FROM provider_hosts WHERE provider = $1 ORDER BY created_at, name")
            .bind(provider)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn set_provider_host_id(&self, id: &str, host_id: &str) -> Result<()> {
        sqlx::query("UPDATE provider_hosts SET host_id = $2 WHERE id = $1")
            .bind(id)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_provider_host(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM provider_hosts WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
