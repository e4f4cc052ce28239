//! Diagnostic bundle records (the tar.gz files themselves live under
//! DATA_DIR/diagnostics) and the redaction rules applied to bundles.

use sqlx::any::AnyRow;

use super::{Result, Store, get, get_json, to_json};
use crate::model::UnixMillis;

/// A diagnostic bundle as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticsRec {
    pub id: String,
    pub cluster: String,
    pub services: Vec<String>,
    /// Hostnames.
    pub hosts: Vec<String>,
    pub since: UnixMillis,
    pub until: UnixMillis,
    pub max_bytes: u64,
    pub include: Vec<String>,
    pub created_by: String,
    pub created_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// running, ready, partial, failed.
    pub state: String,
    pub size_bytes: u64,
    pub command_id: String,
    /// `(hostname, reason)`.
    pub failed_hosts: Vec<(String, String)>,
    /// The tar.gz's name under DATA_DIR/diagnostics.
    pub file_name: String,
}

const COLUMNS: &str = "id, cluster, services, hosts, since_ms, until_ms, max_bytes, include, created_by, created_at, \
                       finished_at, state, size_bytes, command_id, failed_hosts, file_name";

fn from_row(row: &AnyRow) -> Result<DiagnosticsRec> {
    let max_bytes: i64 = get(row, "max_bytes")?;
    let size_bytes: i64 = get(row, "size_bytes")?;
    Ok(DiagnosticsRec {
        id: get(row, "id")?,
        cluster: get(row, "cluster")?,
        services: get_json(row, "services")?,
        hosts: get_json(row, "hosts")?,
        since: get(row, "since_ms")?,
        until: get(row, "until_ms")?,
        max_bytes: max_bytes.max(0) as u64,
        include: get_json(row, "include")?,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        finished_at: get(row, "finished_at")?,
        state: get(row, "state")?,
        size_bytes: size_bytes.max(0) as u64,
        command_id: get(row, "command_id")?,
        failed_hosts: get_json(row, "failed_hosts")?,
        file_name: get(row, "file_name")?,
    })
}

/// The stored redaction rules (`rules`: `[{name, pattern}]` as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionRulesRec {
    pub rules: String,
    pub updated_at: UnixMillis,
    pub updated_by: String,
}

impl Store {
    pub async fn insert_diagnostics(&self, d: &DiagnosticsRec) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO diagnostics ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16)"
        ))
        .bind(&d.id)
        .bind(&d.cluster)
        .bind(to_json(&d.services))
        .bind(to_json(&d.hosts))
        .bind(d.since)
        .bind(d.until)
        .bind(d.max_bytes as i64)
        .bind(to_json(&d.include))
        .bind(&d.created_by)
        .bind(d.created_at)
        .bind(d.finished_at)
        .bind(&d.state)
        .bind(d.size_bytes as i64)
        .bind(&d.command_id)
        .bind(to_json(&d.failed_hosts))
        .bind(&d.file_name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how a bundle ended.
    pub async fn finish_diagnostics(
        &self,
        id: &str,
        state: &str,
        size_bytes: u64,
        failed_hosts: &[(String, String)],
        finished_at: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE diagnostics SET state = $1, size_bytes = $2, failed_hosts = $3, finished_at = $4 WHERE id = $5",
        )
        .bind(state)
        .bind(size_bytes as i64)
        .bind(to_json(&failed_hosts))
        .bind(finished_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn diagnostics(&self, id: &str) -> Result<Option<DiagnosticsRec>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM diagnostics WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every bundle, newest first.
    pub async fn list_diagnostics(&self) -> Result<Vec<DiagnosticsRec>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM diagnostics ORDER BY created_at DESC, id DESC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes a bundle's record; false when there was none.
    pub async fn delete_diagnostics(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM diagnostics WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn redaction_rules(&self) -> Result<Option<RedactionRulesRec>> {
        let row = sqlx::query("SELECT rules, updated_at, updated_by FROM redaction_rules WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(RedactionRulesRec {
                rules: get(&row, "rules")?,
                updated_at: get(&row, "updated_at")?,
                updated_by: get(&row, "updated_by")?,
            })
        })
        .transpose()
    }

    pub async fn put_redaction_rules(&self, rec: &RedactionRulesRec) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM redaction_rules WHERE id = 1").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO redaction_rules (id, rules, updated_at, updated_by) VALUES (1, $1, $2, $3)")
            .bind(&rec.rules)
            .bind(rec.updated_at)
            .bind(&rec.updated_by)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
