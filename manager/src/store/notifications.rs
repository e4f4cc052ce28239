//! The notification configuration set through REST: one row holding the route tree and the
//! receivers as JSON, secrets already sealed by the caller ([`crate::domain::notifications`]).

use super::{Result, Store, get};
use crate::model::UnixMillis;

/// The stored notification configuration (`config`: a `NotifyConfig` as JSON, secrets sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationConfigRec {
    pub config: String,
    pub updated_at: UnixMillis,
    pub updated_by: String,
}

impl Store {
    /// The stored notification configuration, if one was ever set.
    pub async fn notification_config(&self) -> Result<Option<NotificationConfigRec>> {
        let row = sqlx::query("SELECT config, updated_at, updated_by FROM notification_config WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(NotificationConfigRec {
                config: get(&row, "config")?,
                updated_at: get(&row, "updated_at")?,
                updated_by: get(&row, "updated_by")?,
            })
        })
        .transpose()
    }

    /// Replaces the stored notification configuration.
    pub async fn put_notification_config(&self, rec: &NotificationConfigRec) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM notification_config WHERE id = 1").execute(&mut *tx).await?;
        sqlx::query("INSERT INTO notification_config (id, config, updated_at, updated_by) VALUES (1, $1, $2, $3)")
            .bind(&rec.config)
            .bind(rec.updated_at)
            .bind(&rec.updated_by)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
