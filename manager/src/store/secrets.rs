//! Rewriting the stored configuration of every revision in one transaction,
//! for `drover-manager rotate-secrets-key` (see `crate::secrets`).

use serde_json::Value;

use super::{Store, StoreError, get, get_json, to_json};

impl Store {
    /// Calls `f` with the service type and `config` of every configuration
    /// revision and stores what it returns (`None`: unchanged), all in one
    /// transaction: when `f` or the database fails, nothing is changed.
    /// Answers how many revisions were rewritten.
    pub async fn rewrite_revision_configs<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&str, Value) -> Result<Option<Value>, E>,
    ) -> Result<u64, E> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let rows = sqlx::query(
            "SELECT r.cluster, r.service, r.revision, r.config, COALESCE(s.service_type, '') AS service_type \
             FROM config_revisions r LEFT JOIN services s ON s.cluster = r.cluster AND s.name = r.service \
             ORDER BY r.cluster, r.service, r.revision",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let mut rewritten = 0;
        for r in &rows {
            let service_type: String = get(r, "service_type")?;
            let config: Value = get_json(r, "config")?;
            let Some(new) = f(&service_type, config)? else { continue };
            let cluster: String = get(r, "cluster")?;
            let service: String = get(r, "service")?;
            let revision: i64 = get(r, "revision")?;
            sqlx::query(
                "UPDATE config_revisions SET config = $4 WHERE cluster = $1 AND service = $2 AND revision = $3",
            )
            .bind(cluster)
            .bind(service)
            .bind(revision)
            .bind(to_json(&new))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            rewritten += 1;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(rewritten)
    }

    /// SQLite: rebuilds the database file (`VACUUM`) and empties its write-ahead
    /// log, so that no freed page, free space left in a page or stale log frame
    /// still holds what was overwritten (a password once stored in clear, a
    /// value sealed with a retired key). PostgreSQL: nothing; see docs/secrets.md.
    pub async fn purge_overwritten(&self) -> Result<(), StoreError> {
        if self.backend != super::Backend::Sqlite {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql("VACUUM").execute(&mut *conn).await?;
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *conn).await?;
        Ok(())
    }
}
