//! The manager's database: what must survive a restart, and nothing else.
//!
//! Stored here: users, API tokens and console sessions (hashes only), enrollment
//! tokens (secret hashes), hosts with their facts, labels, status and the serial
//! of the one client certificate each may use, metric series with their points
//! and rollups, events, the audit log, and the containers the Docker provider
//! created, and cluster templates in versions. Not stored: live sessions, per-heartbeat state and metric points not
//! yet flushed; those live in [`crate::registry`] and reach the database in batches from its
//! flusher.
//!
//! One code path serves SQLite (embedded, the default) and PostgreSQL through
//! sqlx's `Any` driver. Queries use `$n` placeholders, which both accept, and
//! keep to types both share: timestamps are Unix milliseconds in BIGINT, JSON is
//! TEXT. Migrations live in `schema/sqlite` and `schema/postgres`.
//!
//! Architecture invariant: only this module imports sqlx.

mod alerts;
mod diagnostics;
mod environments;
mod hosts;
mod metrics;
mod notifications;
mod parcels;
mod providers;
mod records;
mod secrets;
mod services;
mod templates;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

pub use alerts::{AlertHistoryFilter, AlertHistoryRec, AlertRuleRec, MaintenanceRec, SilenceRec};
pub use diagnostics::{DiagnosticsRec, RedactionRulesRec};
pub use environments::{EnvironmentRec, SnapshotHost, SnapshotRec, SnapshotRole};
pub use hosts::{EnrollError, FlushBatch, HeartbeatRow, HostFilter, HostPage, HostSort, NewHost};
pub use metrics::{GroupStep, PointRec, PointTable, SeriesRec};
pub use notifications::NotificationConfigRec;
pub use parcels::ClusterParcelRec;
pub use providers::ProviderHostRec;
pub use records::{
    ApiTokenInfo, ApiTokenRecord, AuditFilter, EnrollmentTokenRecord, EventFilter, NewAudit, NewEvent, UserChange,
    UserRecord,
};
pub use records::{AuditSearch, EventSearch, MAX_SEARCH_OFFSET};
pub use services::{
    AppliedRec, AppliedRevision, ClusterRec, CommandFilter, CommandRec, RevisionRec, RoleRec, RoleStatusRec,
    ServiceRec, ServiceRoles, StepRec,
};
pub use templates::TemplateRec;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../schema/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../schema/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt value in column {column}: {message}")]
    Corrupt { column: &'static str, message: String },
    #[error("{0} already exists")]
    Conflict(String),
}

impl StoreError {
    fn corrupt(column: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { column, message: e.to_string() }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Services' roles and their hosts' addresses, kept between renders.
    topology: Arc<services::TopologyCache>,
}

impl Store {
    /// Connects, applies pending migrations and returns the store.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let connect = AnyConnectOptions::from_str(url)?;
        let options = match backend {
            // SQLite allows one writer at a time; a few connections serve
            // concurrent readers under WAL without piling up on the lock.
            Backend::Sqlite => AnyPoolOptions::new().max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // A 4 MiB page cache per connection (SQLite's default is 2 MiB)
                    // holds the pages a 10,000-host change rewrites (16 MiB bought
                    // no measurable speed and cost 23 MiB of RSS), and statement
                    // journals stay in memory: both were reads and writes of the
                    // database and temporary files on every flush. The write-ahead
                    // log is copied back every 8,192 pages (32 MiB) instead of 1,000:
                    // a page rewritten by every flush (the hosts' rows) is copied once.
                    conn.execute(
                        "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; \
                         PRAGMA cache_size = -4096; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 8192;",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(16),
        };
        let pool = options.acquire_timeout(Duration::from_secs(30)).connect_with(connect).await?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, backend, topology: Arc::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Cheap liveness probe used by `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool's connections (in use and idle) and its idle ones, for the
    /// manager's metrics.
    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }
}

/// Rows per multi-row statement of the batched writes: each statement is
/// one round trip to the database (for SQLite, to its worker thread), and
/// 500 rows of the widest batch (14 columns) stay well under both backends'
/// parameter limits (SQLite 32,766, PostgreSQL 65,535).
const BATCH_ROWS: usize = 500;

/// The statement of a batch of `rows` rows (a multi-row `VALUES` list or an
/// `IN` list of that many values). Only a full batch ([`BATCH_ROWS`]) stays
/// prepared on its connection: a shorter one's text changes with its length,
/// so caching it filled every connection's statement cache (100 statements)
/// with programs of thousands of parameters each run once, about 40 MiB of
/// SQLite's memory in a manager of 10,000 hosts (docs/benchmarks.md).
fn batch_query(sql: &str, rows: usize) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(rows == BATCH_ROWS)
}

/// `($1, $2), ($3, $4)`: the placeholders of `rows` rows of `cols` values,
/// for a multi-row `VALUES` list. Both backends name its columns `column1`,
/// `column2`, ... when it is used as a table (`FROM (VALUES ...) AS v`).
///
/// SQLite gets anonymous `?` placeholders instead: for every parameter of a
/// statement sqlx asks SQLite its name, a linear search of the statement's
/// named parameters, so `$N` costs the square of the parameter count (at
/// 500 rows of 14 columns that was a fifth of the manager's CPU in a
/// 10,000-host change). Statements built with this have no other parameters.
fn values_placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(rows * (cols * 6 + 4));
    for r in 0..rows {
        s.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    let _ = write!(s, "${}", r * cols + c + 1);
                }
            }
        }
        s.push(')');
    }
    s
}

/// `$1, $2, ...` (SQLite: `?, ?, ...`, see [`values_placeholders`]): the
/// placeholders of an `IN (...)` list of `n` values, in a statement with no
/// other parameters.
fn list_placeholders(backend: Backend, n: usize) -> String {
    let one = |i: usize| match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${i}"),
    };
    (1..=n).map(one).collect::<Vec<_>>().join(", ")
}

fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(StoreError::Database)
}

fn get_json<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &'static str) -> Result<T> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::corrupt(column, e))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation() || db.message().contains("UNIQUE constraint failed"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.cargo/config.toml` builds the bundled SQLite with `SQLITE_DEFAULT_MEMSTATUS=0`:
    /// with memory statistics on, every SQLite allocation takes one global mutex.
    #[tokio::test]
    async fn store_sqlite_is_built_without_memory_statistics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display())).await.expect("store");
        let options: Vec<String> = sqlx::query_scalar("SELECT compile_options FROM pragma_compile_options")
            .fetch_all(&store.pool)
            .await
            .expect("compile options");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "SQLite built with {options:?}");
        let pragmas: Vec<(&str, i64)> = vec![
            ("cache_size", sqlx::query_scalar("PRAGMA cache_size").fetch_one(&store.pool).await.expect("cache_size")),
            ("temp_store", sqlx::query_scalar("PRAGMA temp_store").fetch_one(&store.pool).await.expect("temp_store")),
            (
                "wal_autocheckpoint",
                sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                    .fetch_one(&store.pool)
                    .await
                    .expect("wal_autocheckpoint"),
            ),
        ];
        assert_eq!(pragmas, [("cache_size", -4096), ("temp_store", 2), ("wal_autocheckpoint", 8192)]);
    }

    /// A short batch's statement is not kept prepared on its connection (its
    /// text is new at every length); a full batch's is. (sqlx's `Any`
    /// connection does not count its SQLite statements, so the flag it
    /// passes down is what is checked; each batch still runs.)
    #[tokio::test]
    async fn only_full_batches_stay_prepared() {
        use sqlx::Execute;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display())).await.expect("store");
        for rows in [1, 3, BATCH_ROWS - 1, BATCH_ROWS] {
            let sql = format!("SELECT * FROM (VALUES {}) AS v", values_placeholders(store.backend, rows, 1));
            let kept = Execute::persistent(&batch_query(&sql, rows));
            assert_eq!(kept, rows == BATCH_ROWS, "a batch of {rows} rows");
            let mut q = batch_query(&sql, rows);
            for i in 0..rows {
                q = q.bind(i as i64);
            }
            assert_eq!(q.fetch_all(&store.pool).await.expect("batch").len(), rows);
        }
    }
}
