//! Alerting configuration and history: rules (user rules and overrides of the built-in
//! ones), silences, maintenance mode, and every alert transition. The alert engine reads the
//! first three each cycle (each one indexed query) and appends to the history.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, get, get_json, to_json, values_placeholders};
use crate::model::UnixMillis;
use drover_api::alerts::{AlertRuleSpec, AlertState, LabelMatcher, Severity};

/// A stored rule: a user rule, or an override of the built-in rule of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRuleRec {
    pub spec: AlertRuleSpec,
    /// Overrides a built-in rule (deleting the row resets it).
    pub builtin: bool,
    pub updated_at: UnixMillis,
    pub updated_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRec {
    pub id: String,
    pub matchers: Vec<LabelMatcher>,
    pub starts_at: UnixMillis,
    pub ends_at: UnixMillis,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceRec {
    /// `host`, `service` or `cluster`.
    pub kind: String,
    /// A hostname, `cluster/service` or a cluster name.
    pub target: String,
    pub since: UnixMillis,
    pub by: String,
    pub comment: String,
}

/// One transition of an alert (`id` is ignored on insert).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertHistoryRec {
    pub id: i64,
    pub at: UnixMillis,
    pub rule: String,
    pub fingerprint: String,
    pub state: AlertState,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub summary: String,
    pub suppressed: bool,
}

/// Which history entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertHistoryFilter {
    pub rule: Option<String>,
    pub state: Option<AlertState>,
    pub since: Option<UnixMillis>,
    pub limit: u32,
}

pub fn state_str(s: AlertState) -> &'static str {
    match s {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

fn parse_state(s: &str) -> Result<AlertState> {
    match s {
        "pending" => Ok(AlertState::Pending),
        "firing" => Ok(AlertState::Firing),
        "resolved" => Ok(AlertState::Resolved),
        other => Err(StoreError::corrupt("state", format!("unknown alert state {other:?}"))),
    }
}

fn parse_severity(s: &str) -> Result<Severity> {
    match s {
        "info" => Ok(Severity::Info),
        "warning" => Ok(Severity::Warning),
        "critical" => Ok(Severity::Critical),
        other => Err(StoreError::corrupt("severity", format!("unknown severity {other:?}"))),
    }
}

fn rule_from_row(row: &AnyRow) -> Result<AlertRuleRec> {
    Ok(AlertRuleRec {
        spec: get_json(row, "spec")?,
        builtin: get::<i64>(row, "builtin")? != 0,
        updated_at: get(row, "updated_at")?,
        updated_by: get(row, "updated_by")?,
    })
}

fn silence_from_row(row: &AnyRow) -> Result<SilenceRec> {
    Ok(SilenceRec {
        id: get(row, "id")?,
        matchers: get_json(row, "matchers")?,
        starts_at: get(row, "starts_at")?,
        ends_at: get(row, "ends_at")?,
        created_by: get(row, "created_by")?,
        comment: get(row, "comment")?,
    })
}

fn maintenance_from_row(row: &AnyRow) -> Result<MaintenanceRec> {
    Ok(MaintenanceRec {
        kind: get(row, "kind")?,
        target: get(row, "target")?,
        since: get(row, "since")?,
        by: get(row, "set_by")?,
        comment: get(row, "comment")?,
    })
}

fn history_from_row(row: &AnyRow) -> Result<AlertHistoryRec> {
    Ok(AlertHistoryRec {
        id: get(row, "id")?,
        at: get(row, "at")?,
        rule: get(row, "rule")?,
        fingerprint: get(row, "fingerprint")?,
        state: parse_state(&get::<String>(row, "state")?)?,
        severity: parse_severity(&get::<String>(row, "severity")?)?,
        labels: get_json(row, "labels")?,
        value: get(row, "value")?,
        summary: get(row, "summary")?,
        suppressed: get::<i64>(row, "suppressed")? != 0,
    })
}

impl Store {
    /// Every stored rule (user rules and overrides of built-ins), by name.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRuleRec>> {
        let rows = sqlx::query("SELECT * FROM alert_rules ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(rule_from_row).collect()
    }

    pub async fn alert_rule(&self, name: &str) -> Result<Option<AlertRuleRec>> {
        let row =
            sqlx::query("SELECT * FROM alert_rules WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    /// Inserts or replaces rules by name, all in one transaction.
    pub async fn put_alert_rules(&self, rules: &[AlertRuleRec]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for r in rules {
            sqlx::query("DELETE FROM alert_rules WHERE name = $1").bind(&r.spec.name).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO alert_rules (name, spec, builtin, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&r.spec.name)
            .bind(to_json(&r.spec))
            .bind(i64::from(r.builtin))
            .bind(r.updated_at)
            .bind(&r.updated_by)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a stored rule (for a built-in: its override); false when there was none.
    pub async fn delete_alert_rule(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM alert_rules WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn insert_silence(&self, s: &SilenceRec) -> Result<()> {
        sqlx::query(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id)
        .bind(to_json(&s.matchers))
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(&s.created_by)
        .bind(&s.comment)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Silences in effect at `now`.
    pub async fn active_silences(&self, now: UnixMillis) -> Result<Vec<SilenceRec>> {
        let rows = sqlx::query("SELECT * FROM silences WHERE ends_at > $1 AND starts_at <= $1 ORDER BY starts_at, id")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(silence_from_row).collect()
    }

    /// Every silence that ended after `since` (active ones and recently expired), newest first.
    pub async fn silences(&self, since: UnixMillis) -> Result<Vec<SilenceRec>> {
        let rows = sqlx::query("SELECT * FROM silences WHERE ends_at > $1 ORDER BY starts_at DESC, id")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(silence_from_row).collect()
    }

    pub async fn silence(&self, id: &str) -> Result<Option<SilenceRec>> {
        let row = sqlx::query("SELECT * FROM silences WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(silence_from_row).transpose()
    }

    /// Ends an active silence at `now`; false when it is unknown or already over.
    pub async fn expire_silence(&self, id: &str, now: UnixMillis) -> Result<bool> {
        let done = sqlx::query("UPDATE silences SET ends_at = $2 WHERE id = $1 AND ends_at > $2")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets (or replaces) a maintenance entry.
    pub async fn set_maintenance(&self, m: &MaintenanceRec) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM maintenance WHERE kind = $1 AND target = $2")
            .bind(&m.kind)
            .bind(&m.target)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO maintenance (kind, target, since, set_by, comment) VALUES ($1, $2, $3, $4, $5)")
            .bind(&m.kind)
            .bind(&m.target)
            .bind(m.since)
            .bind(&m.by)
            .bind(&m.comment)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn clear_maintenance(&self, kind: &str, target: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM maintenance WHERE kind = $1 AND target = $2")
            .bind(kind)
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Everything in maintenance mode, by kind and target.
    pub async fn maintenance_list(&self) -> Result<Vec<MaintenanceRec>> {
        let rows = sqlx::query("SELECT * FROM maintenance ORDER BY kind, target").fetch_all(&self.pool).await?;
        rows.iter().map(maintenance_from_row).collect()
    }

    /// Appends transitions to the history in multi-row statements.
    pub async fn insert_alert_history(&self, entries: &[AlertHistoryRec]) -> Result<()> {
        const COLS: usize = 9;
        for chunk in entries.chunks(super::BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO alert_history (at, rule, fingerprint, state, severity, labels, value, summary, \
                 suppressed) VALUES {}",
                values_placeholders(self.backend, chunk.len(), COLS)
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for e in chunk {
                q = q
                    .bind(e.at)
                    .bind(e.rule.clone())
                    .bind(e.fingerprint.clone())
                    .bind(state_str(e.state))
                    .bind(e.severity.as_str())
                    .bind(to_json(&e.labels))
                    .bind(e.value)
                    .bind(e.summary.clone())
                    .bind(i64::from(e.suppressed));
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// History entries matching `f`, newest first.
    pub async fn alert_history(&self, f: &AlertHistoryFilter) -> Result<Vec<AlertHistoryRec>> {
        let mut sql = "SELECT * FROM alert_history WHERE 1 = 1".to_owned();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.rule.is_some() {
            sql += &format!(" AND rule = {}", next());
        }
        if f.state.is_some() {
            sql += &format!(" AND state = {}", next());
        }
        if f.since.is_some() {
            sql += &format!(" AND at >= {}", next());
        }
        sql += &format!(" ORDER BY at DESC, id DESC LIMIT {}", f.limit.max(1));
        let mut q = sqlx::query(&sql);
        if let Some(r) = &f.rule {
            q = q.bind(r.clone());
        }
        if let Some(s) = f.state {
            q = q.bind(state_str(s));
        }
        if let Some(t) = f.since {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(history_from_row).collect()
    }

    /// Drops history entries older than `before` and silences that ended before it.
    pub async fn prune_alert_history(&self, before: UnixMillis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM alert_history WHERE at < $1").bind(before).execute(&self.pool).await?;
        sqlx::query("DELETE FROM silences WHERE ends_at < $1").bind(before).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// The id of a host by its hostname (one not decommissioned first).
    pub async fn host_id_by_hostname(&self, hostname: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT id FROM hosts WHERE hostname = $1 ORDER BY CASE WHEN status = 'decommissioned' THEN 1 ELSE 0 END, id \
             LIMIT 1",
        )
        .bind(hostname)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(|r| get(r, "id")).transpose()
    }
}
