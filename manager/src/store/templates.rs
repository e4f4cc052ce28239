//! Cluster templates: each upload of a name is stored as its next immutable
//! version, with the validated document as JSON text, so templates outlive
//! the clusters they came from and can be instantiated again later.

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, get, is_unique_violation};
use crate::model::UnixMillis;

/// One stored template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRec {
    pub name: String,
    pub version: u64,
    pub description: String,
    /// The document as JSON text.
    pub document: String,
    pub created_at: UnixMillis,
    pub created_by: String,
}

fn from_row(row: &AnyRow, with_document: bool) -> Result<TemplateRec> {
    let version: i64 = get(row, "version")?;
    Ok(TemplateRec {
        name: get(row, "name")?,
        version: u64::try_from(version).map_err(|e| StoreError::corrupt("version", e))?,
        description: get(row, "description")?,
        document: if with_document { get(row, "document")? } else { String::new() },
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
    })
}

impl Store {
    /// Stores `rec` (its `version` ignored) as the next version of its name;
    /// answers that version. Two uploads racing for the same version: the
    /// later one gets `Conflict`.
    pub async fn insert_template(&self, rec: &TemplateRec) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS latest FROM templates WHERE name = $1")
            .bind(&rec.name)
            .fetch_one(&mut *tx)
            .await?;
        let latest: i64 = get(&row, "latest")?;
        let version = latest + 1;
        let inserted = sqlx::query(
            "INSERT INTO templates (name, version, description, document, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&rec.name)
        .bind(version)
        .bind(&rec.description)
        .bind(&rec.document)
        .bind(rec.created_at)
        .bind(&rec.created_by)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("version {version} of template {}", rec.name)));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(version as u64)
    }

    /// Every version of every template without documents, by name, newest
    /// version first.
    pub async fn template_versions(&self) -> Result<Vec<TemplateRec>> {
        let rows = sqlx::query(
            "SELECT name, version, description, created_at, created_by FROM templates ORDER BY name, version DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| from_row(r, false)).collect()
    }

    /// One version of a template, or its newest (`version` `None`).
    pub async fn template(&self, name: &str, version: Option<u64>) -> Result<Option<TemplateRec>> {
        let row = match version {
            Some(v) => {
                sqlx::query("SELECT * FROM templates WHERE name = $1 AND version = $2")
                    .bind(name)
                    .bind(i64::try_from(v).unwrap_or(i64::MAX))
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM templates WHERE name = $1 ORDER BY version DESC LIMIT 1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.as_ref().map(|r| from_row(r, true)).transpose()
    }

    /// Deletes one version of a template, or all of them; answers how many
    /// were deleted.
    pub async fn delete_template(&self, name: &str, version: Option<u64>) -> Result<u64> {
        let done = match version {
            Some(v) => {
                sqlx::query("DELETE FROM templates WHERE name = $1 AND version = $2")
                    .bind(name)
                    .bind(i64::try_from(v).unwrap_or(i64::MAX))
                    .execute(&self.pool)
                    .await?
            }
            None => sqlx::query("DELETE FROM templates WHERE name = $1").bind(name).execute(&self.pool).await?,
        };
        Ok(done.rows_affected())
    }
}
