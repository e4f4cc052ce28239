//! Users, credentials, enrollment tokens, events and the audit log.

pub use drover_api::tokens::ApiTokenInfo;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, get, get_json, is_unique_violation, to_json};
use drover_api::users::{Grant, Role, UserInfo, UserSource};

use crate::model::{AuditEntry, EnrollmentTokenInfo, EnrollmentTokenState, Event, Labels, UnixMillis, rfc3339};

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// argon2id; empty for directory (LDAP) users.
    pub password_hash: String,
    pub grants: Vec<Grant>,
    pub disabled: bool,
    /// `local` or `ldap`.
    pub source: String,
    pub last_sign_in_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

impl UserRecord {
    pub fn to_api(&self) -> UserInfo {
        UserInfo {
            id: self.id.clone(),
            username: self.username.clone(),
            grants: self.grants.clone(),
            disabled: self.disabled,
            source: if self.source == "ldap" { UserSource::Ldap } else { UserSource::Local },
            created_at: rfc3339(self.created_at),
            last_sign_in_at: self.last_sign_in_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiTokenRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub token_hash: String,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    /// `None`: whatever the user may do.
    pub grants: Option<Vec<Grant>>,
}

#[derive(Debug, Clone)]
pub struct EnrollmentTokenRecord {
    pub id: String,
    pub secret_hash: String,
    pub labels: Labels,
    pub max_uses: u32,
    pub uses: u32,
    pub created_by: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

impl EnrollmentTokenRecord {
    pub fn state(&self, now: UnixMillis) -> EnrollmentTokenState {
        if self.revoked_at.is_some() {
            EnrollmentTokenState::Revoked
        } else if self.expires_at <= now {
            EnrollmentTokenState::Expired
        } else if self.uses >= self.max_uses {
            EnrollmentTokenState::UsedUp
        } else {
            EnrollmentTokenState::Active
        }
    }

    pub fn to_api(&self, now: UnixMillis) -> EnrollmentTokenInfo {
        EnrollmentTokenInfo {
            id: self.id.clone(),
            labels: self.labels.clone(),
            max_uses: self.max_uses,
            uses: self.uses,
            created_by: self.created_by.clone(),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            revoked_at: self.revoked_at.map(rfc3339),
            state: self.state(now),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: UnixMillis,
    pub severity: &'static str,
    pub kind: &'static str,
    pub object_type: &'static str,
    pub object_id: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub at: UnixMillis,
    pub username: String,
    pub source: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub summary: String,
    /// How the change was asked for: `console`, `password`, `token`, `system`.
    pub via: String,
    /// The permission that allowed it.
    pub permission: String,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub since: Option<UnixMillis>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub username: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    pub limit: u32,
}

/// Events a console page asks for: [`EventFilter`]'s conditions plus
/// severity, kind, an end of the time range and an offset for pagination.
#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    pub severity: Option<String>,
    pub kind: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    pub limit: u32,
    pub offset: u32,
}

impl From<&EventFilter> for EventSearch {
    fn from(f: &EventFilter) -> Self {
        EventSearch {
            object_type: f.object_type.clone(),
            object_id: f.object_id.clone(),
            since: f.since,
            limit: f.limit,
            ..Default::default()
        }
    }
}

/// Audit entries a console page asks for: [`AuditFilter`]'s conditions plus
/// the action and an offset for pagination.
#[derive(Debug, Clone, Default)]
pub struct AuditSearch {
    pub username: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    pub limit: u32,
    pub offset: u32,
}

impl From<&AuditFilter> for AuditSearch {
    fn from(f: &AuditFilter) -> Self {
        AuditSearch {
            username: f.username.clone(),
            object_type: f.object_type.clone(),
            object_id: f.object_id.clone(),
            since: f.since,
            until: f.until,
            limit: f.limit,
            ..Default::default()
        }
    }
}

/// The deepest offset a paginated search of events or audit entries goes to.
pub const MAX_SEARCH_OFFSET: u32 = 1_000_000;

pub(super) fn user_from_row(row: &AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: get(row, "id")?,
        username: get(row, "username")?,
        password_hash: get(row, "password_hash")?,
        grants: Vec::new(),
        disabled: get::<i64>(row, "disabled")? != 0,
        source: get(row, "source")?,
        last_sign_in_at: get(row, "last_sign_in_at")?,
        created_at: get(row, "created_at")?,
    })
}

fn grant_from_row(row: &AnyRow) -> Result<Grant> {
    let role: String = get(row, "role")?;
    let cluster: String = get(row, "cluster")?;
    let role =
        Role::parse(&role).ok_or_else(|| StoreError::corrupt("user_grants.role", format!("unknown role {role:?}")))?;
    Ok(Grant { role, cluster: (!cluster.is_empty()).then_some(cluster) })
}

fn token_grants(row: &AnyRow) -> Result<Option<Vec<Grant>>> {
    get::<Option<String>>(row, "grants")?
        .map(|j| serde_json::from_str(&j).map_err(|e| StoreError::corrupt("api_tokens.grants", e)))
        .transpose()
}

/// What changing or deleting a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Done,
    NotFound,
    /// Refused: no enabled global admin would be left.
    LastAdmin,
}

fn enrollment_token_from_row(row: &AnyRow) -> Result<EnrollmentTokenRecord> {
    Ok(EnrollmentTokenRecord {
        id: get(row, "id")?,
        secret_hash: get(row, "secret_hash")?,
        labels: get_json(row, "labels")?,
        max_uses: get::<i64>(row, "max_uses")? as u32,
        uses: get::<i64>(row, "uses")? as u32,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

const USER_COLUMNS: &str = "u.id, u.username, u.password_hash, u.disabled, u.source, u.last_sign_in_at, u.created_at";

/// Enabled users holding `admin` globally.
const ENABLED_ADMINS: &str = "SELECT COUNT(*) AS n FROM users u JOIN user_grants g ON g.user_id = u.id \
     WHERE g.role = 'admin' AND g.cluster = '' AND u.disabled = 0";

async fn insert_grants(conn: &mut sqlx::AnyConnection, user_id: &str, grants: &[Grant]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for g in grants.iter().filter(|g| seen.insert((*g).clone())) {
        sqlx::query("INSERT INTO user_grants (user_id, role, cluster) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(g.role.as_str())
            .bind(g.cluster.as_deref().unwrap_or(""))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    pub async fn count_users(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(&self.pool).await?;
        get(&row, "n")
    }

    pub async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, disabled, source, created_at) \
             VALUES ($1, $2, $3, '', $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(i64::from(user.disabled))
        .bind(&user.source)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) { StoreError::Conflict(format!("user {:?}", user.username)) } else { e.into() }
        })?;
        insert_grants(&mut tx, &user.id, &user.grants).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A user found by one query, with their grants read by a second.
    async fn with_grants(&self, row: Option<AnyRow>) -> Result<Option<UserRecord>> {
        let Some(row) = row else { return Ok(None) };
        let mut user = user_from_row(&row)?;
        let rows = sqlx::query("SELECT role, cluster FROM user_grants WHERE user_id = $1 ORDER BY cluster, role")
            .bind(&user.id)
            .fetch_all(&self.pool)
            .await?;
        user.grants = rows.iter().map(grant_from_row).collect::<Result<_>>()?;
        Ok(Some(user))
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1");
        let row = sqlx::query(&sql).bind(username).fetch_optional(&self.pool).await?;
        self.with_grants(row).await
    }

    /// Every user with their grants, by name.
    pub async fn list_users(&self, limit: u32) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.username LIMIT {}", limit.clamp(1, 1000));
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut users: Vec<UserRecord> = rows.iter().map(user_from_row).collect::<Result<_>>()?;
        let grants = sqlx::query("SELECT user_id, role, cluster FROM user_grants ORDER BY cluster, role")
            .fetch_all(&self.pool)
            .await?;
        let mut by_user: std::collections::HashMap<String, Vec<Grant>> = std::collections::HashMap::new();
        for row in &grants {
            by_user.entry(get(row, "user_id")?).or_default().push(grant_from_row(row)?);
        }
        for u in &mut users {
            u.grants = by_user.remove(&u.id).unwrap_or_default();
        }
        Ok(users)
    }

    /// Replaces a user's grants and/or enabled state in one transaction,
    /// refused when no enabled global admin would be left. Disabling ends
    /// the user's console sessions.
    pub async fn update_user(
        &self,
        user_id: &str,
        grants: Option<&[Grant]>,
        disabled: Option<bool>,
    ) -> Result<UserChange> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let exists = sqlx::query("SELECT id FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(UserChange::NotFound);
        }
        if let Some(grants) = grants {
            sqlx::query("DELETE FROM user_grants WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
            insert_grants(&mut tx, user_id, grants).await?;
        }
        if let Some(disabled) = disabled {
            sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
                .bind(user_id)
                .bind(i64::from(disabled))
                .execute(&mut *tx)
                .await?;
            if disabled {
                sqlx::query("DELETE FROM web_sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
            }
        }
        let admins: i64 = get(&sqlx::query(ENABLED_ADMINS).fetch_one(&mut *tx).await?, "n")?;
        if admins == 0 {
            tx.rollback().await?;
            return Ok(UserChange::LastAdmin);
        }
        tx.commit().await?;
        Ok(UserChange::Done)
    }

    /// A directory (LDAP) user's grants at sign-in: replaces the stored ones
    /// with `grants` in one transaction, creating the user (source `ldap`, no
    /// password) when `create`. Answers `None` for a user of another source
    /// (left alone) or an absent one not created. The directory decides who
    /// is admin, so the last-admin rule does not apply here.
    pub async fn upsert_directory_user(
        &self,
        username: &str,
        grants: &[Grant],
        create: bool,
        now: UnixMillis,
    ) -> Result<Option<UserRecord>> {
        let mut tx = self.pool.begin().await?;
        if create {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, role, disabled, source, created_at) \
                 VALUES ($1, $2, '', '', 0, 'ldap', $3) ON CONFLICT (username) DO NOTHING",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(username)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1");
        let Some(row) = sqlx::query(&sql).bind(username).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let mut user = user_from_row(&row)?;
        if user.source != "ldap" {
            return Ok(None);
        }
        sqlx::query("DELETE FROM user_grants WHERE user_id = $1").bind(&user.id).execute(&mut *tx).await?;
        insert_grants(&mut tx, &user.id, grants).await?;
        tx.commit().await?;
        user.grants = grants.to_vec();
        Ok(Some(user))
    }

    /// Serialises changes that could remove the last enabled admin. On
    /// PostgreSQL (read committed) two transactions demoting two different
    /// admins would each still count the other; locking every admin row
    /// first makes the second wait and then count what the first committed.
    /// SQLite runs one writer at a time, which already serialises them.
    async fn lock_admins(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
        if self.backend == super::Backend::Postgres {
            sqlx::query(
                "SELECT u.id FROM users u JOIN user_grants g ON g.user_id = u.id \
                 WHERE g.role = 'admin' AND g.cluster = '' FOR UPDATE OF u",
            )
            .fetch_all(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Deletes a user (their tokens and sessions go with them), refused when
    /// no enabled global admin would be left.
    pub async fn delete_user(&self, user_id: &str) -> Result<UserChange> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        // Children first: SQLite enforces the foreign keys only when told to.
        for table in ["user_grants", "api_tokens", "web_sessions"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1")).bind(user_id).execute(&mut *tx).await?;
        }
        let n = sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(UserChange::NotFound);
        }
        let admins: i64 = get(&sqlx::query(ENABLED_ADMINS).fetch_one(&mut *tx).await?, "n")?;
        if admins == 0 {
            tx.rollback().await?;
            return Ok(UserChange::LastAdmin);
        }
        tx.commit().await?;
        Ok(UserChange::Done)
    }

    /// Drops every grant on a cluster (the cluster is being deleted).
    pub async fn delete_cluster_grants(&self, cluster: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM user_grants WHERE cluster = $1").bind(cluster).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Notes a successful sign-in.
    pub async fn touch_sign_in(&self, user_id: &str, now: UnixMillis) -> Result<()> {
        sqlx::query("UPDATE users SET last_sign_in_at = $2 WHERE id = $1")
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a user's password hash and ends their console sessions;
    /// returns false if the user does not exist.
    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn insert_api_token(&self, token: &ApiTokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at, grants) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(&token.user_id)
        .bind(&token.name)
        .bind(&token.token_hash)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.grants.as_ref().map(to_json))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The API tokens of a user, newest first (hashes are not returned).
    pub async fn list_api_tokens(&self, user_id: &str) -> Result<Vec<ApiTokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, expires_at, last_used_at, grants FROM api_tokens WHERE user_id = $1 \
             ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiTokenInfo {
                    id: get(r, "id")?,
                    name: get(r, "name")?,
                    created_at: rfc3339(get(r, "created_at")?),
                    expires_at: get::<Option<i64>>(r, "expires_at")?.map(rfc3339),
                    last_used_at: get::<Option<i64>>(r, "last_used_at")?.map(rfc3339),
                    grants: token_grants(r)?,
                })
            })
            .collect()
    }

    /// Deletes one of a user's API tokens; false if the user has no such token.
    pub async fn delete_api_token(&self, id: &str, user_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes events and audit entries older than the given times.
    pub async fn prune_history(&self, events_before: UnixMillis, audit_before: UnixMillis) -> Result<(u64, u64)> {
        let events = sqlx::query("DELETE FROM events WHERE at < $1").bind(events_before).execute(&self.pool).await?;
        let audit = sqlx::query("DELETE FROM audit_log WHERE at < $1").bind(audit_before).execute(&self.pool).await?;
        Ok((events.rows_affected(), audit.rows_affected()))
    }

    /// The enabled user owning an unexpired API token with this hash, and
    /// the token's own grants. Notes the use (at most once a minute).
    pub async fn user_by_api_token(
        &self,
        token_hash: &str,
        now: UnixMillis,
    ) -> Result<Option<(UserRecord, Option<Vec<Grant>>)>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, t.id AS token_id, t.grants, t.last_used_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) AND u.disabled = 0"
        );
        let Some(row) = sqlx::query(&sql).bind(token_hash).bind(now).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let grants = token_grants(&row)?;
        let token_id: String = get(&row, "token_id")?;
        let last_used: Option<i64> = get(&row, "last_used_at")?;
        if last_used.is_none_or(|t| t < now - 60_000) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(&token_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(self.with_grants(Some(row)).await?.map(|u| (u, grants)))
    }

    /// Stores a console session (by its id's hash) that ends at `expires_at`
    /// at the latest.
    pub async fn insert_web_session(
        &self,
        id_hash: &str,
        user_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $3)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The enabled user of an unexpired console session, however long unused.
    pub async fn user_by_web_session(&self, id_hash: &str, now: UnixMillis) -> Result<Option<UserRecord>> {
        self.use_web_session(id_hash, now, i64::MAX / 4).await
    }

    /// The enabled user of a console session that has not expired and was
    /// used within the last `idle_ms`; notes this use when the last one noted
    /// is older than a minute (or than a quarter of `idle_ms`, when shorter),
    /// so a session in use stays alive at one write a minute at most.
    pub async fn use_web_session(&self, id_hash: &str, now: UnixMillis, idle_ms: i64) -> Result<Option<UserRecord>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, s.last_seen_at AS session_seen FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3 AND u.disabled = 0"
        );
        let row = sqlx::query(&sql)
            .bind(id_hash)
            .bind(now)
            .bind(now.saturating_sub(idle_ms))
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = &row {
            let seen: i64 = get(row, "session_seen")?;
            if seen < now - (idle_ms / 4).min(60_000) {
                sqlx::query("UPDATE web_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2")
                    .bind(id_hash)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
            }
        }
        self.with_grants(row).await
    }

    /// Deletes the sessions that have expired or were unused for `idle_ms`.
    pub async fn prune_web_sessions(&self, now: UnixMillis, idle_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(now.saturating_sub(idle_ms))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Ends a console session; answers whether it existed.
    pub async fn delete_web_session(&self, id_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, secret_hash, labels, max_uses, uses, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(to_json(&t.labels))
        .bind(i64::from(t.max_uses))
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("enrollment token {}", t.id))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// At most `limit` tokens that can still enroll a host (not revoked,
    /// not expired, uses left) and at most `others` of the rest, each newest
    /// first, with how many tokens are stored in all.
    pub async fn enrollment_tokens_page(
        &self,
        now: UnixMillis,
        limit: u32,
        others: u32,
    ) -> Result<(Vec<EnrollmentTokenRecord>, Vec<EnrollmentTokenRecord>, u64)> {
        const ACTIVE: &str = "revoked_at IS NULL AND expires_at > $1 AND uses < max_uses";
        let active = sqlx::query(&format!(
            "SELECT * FROM enrollment_tokens WHERE {ACTIVE} ORDER BY created_at DESC, id LIMIT {limit}"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let rest = sqlx::query(&format!(
            "SELECT * FROM enrollment_tokens WHERE NOT ({ACTIVE}) ORDER BY created_at DESC, id LIMIT {others}"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            get(&sqlx::query("SELECT COUNT(*) AS n FROM enrollment_tokens").fetch_one(&self.pool).await?, "n")?;
        Ok((
            active.iter().map(enrollment_token_from_row).collect::<Result<_>>()?,
            rest.iter().map(enrollment_token_from_row).collect::<Result<_>>()?,
            total as u64,
        ))
    }

    pub async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>> {
        let rows =
            sqlx::query("SELECT * FROM enrollment_tokens ORDER BY created_at DESC, id").fetch_all(&self.pool).await?;
        rows.iter().map(enrollment_token_from_row).collect()
    }

    pub async fn enrollment_token(&self, id: &str) -> Result<Option<EnrollmentTokenRecord>> {
        let row =
            sqlx::query("SELECT * FROM enrollment_tokens WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(enrollment_token_from_row).transpose()
    }

    /// Revokes a token; returns false if there is no such token. Revoking twice
    /// keeps the first revocation time.
    pub async fn revoke_enrollment_token(&self, id: &str, now: UnixMillis) -> Result<bool> {
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn insert_event(&self, e: &NewEvent) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Store::insert_event_in(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn insert_event_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, e: &NewEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (at, severity, kind, object_type, object_id, message) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(e.severity)
        .bind(e.kind)
        .bind(e.object_type)
        .bind(&e.object_id)
        .bind(&e.message)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        self.search_events(&EventSearch::from(f)).await
    }

    /// Events matching `f`, newest first, from `f.offset`.
    pub async fn search_events(&self, f: &EventSearch) -> Result<Vec<Event>> {
        let mut sql = String::from("SELECT * FROM events WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        push_filter(&mut sql, &mut args, "severity = ", f.severity.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "kind = ", f.kind.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "object_type = ", f.object_type.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "object_id = ", f.object_id.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "at >= ", f.since.map(Arg::Int));
        push_filter(&mut sql, &mut args, "at < ", f.until.map(Arg::Int));
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {} OFFSET {}",
            f.limit.clamp(1, 1000),
            f.offset.min(MAX_SEARCH_OFFSET)
        ));
        let rows = bind_all(sqlx::query(&sql), &args).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Event {
                    id: get(row, "id")?,
                    at: rfc3339(get(row, "at")?),
                    severity: get(row, "severity")?,
                    kind: get(row, "kind")?,
                    object_type: get(row, "object_type")?,
                    object_id: get(row, "object_id")?,
                    message: get(row, "message")?,
                })
            })
            .collect()
    }

    pub async fn insert_audit(&self, a: &NewAudit) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_audit_row(&mut conn, a).await
    }

    /// Records many entries in one transaction (a bulk change audits every
    /// object it touched).
    pub async fn insert_audits(&self, entries: &[NewAudit]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for a in entries {
            insert_audit_row(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.search_audit(&AuditSearch::from(f)).await
    }

    /// Audit entries matching `f`, newest first, from `f.offset`.
    pub async fn search_audit(&self, f: &AuditSearch) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from("SELECT * FROM audit_log WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        push_filter(&mut sql, &mut args, "username = ", f.username.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "action = ", f.action.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "object_type = ", f.object_type.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "object_id = ", f.object_id.clone().map(Arg::Text));
        push_filter(&mut sql, &mut args, "at >= ", f.since.map(Arg::Int));
        push_filter(&mut sql, &mut args, "at < ", f.until.map(Arg::Int));
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {} OFFSET {}",
            f.limit.clamp(1, 1000),
            f.offset.min(MAX_SEARCH_OFFSET)
        ));
        let rows = bind_all(sqlx::query(&sql), &args).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: get(row, "id")?,
                    at: rfc3339(get(row, "at")?),
                    username: get(row, "username")?,
                    source: get(row, "source")?,
                    action: get(row, "action")?,
                    object_type: get(row, "object_type")?,
                    object_id: get(row, "object_id")?,
                    summary: get(row, "summary")?,
                    via: get(row, "via")?,
                    permission: get(row, "permission")?,
                })
            })
            .collect()
    }
}

/// A bind argument of a dynamically built query.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// Appends ` AND <cond>$n` when the filter value is present.
pub(super) fn push_filter(sql: &mut String, args: &mut Vec<Arg>, cond: &str, value: Option<Arg>) {
    if let Some(v) = value {
        args.push(v);
        sql.push_str(&format!(" AND {cond}${}", args.len()));
    }
}

/// Appends ` AND <expr> IN ($n, ...)` over `values`; an empty list matches
/// nothing.
pub(super) fn push_in(sql: &mut String, args: &mut Vec<Arg>, expr: &str, values: &[String]) {
    if values.is_empty() {
        sql.push_str(" AND 1 = 0");
        return;
    }
    let first = args.len() + 1;
    args.extend(values.iter().map(|v| Arg::Text(v.clone())));
    let params: Vec<String> = (first..=args.len()).map(|i| format!("${i}")).collect();
    sql.push_str(&format!(" AND {expr} IN ({})", params.join(", ")));
}

pub(super) fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    q
}

/// One audit entry, on a connection or inside the caller's transaction.
pub(super) async fn insert_audit_row(conn: &mut sqlx::AnyConnection, a: &NewAudit) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, username, source, action, object_type, object_id, summary, via, permission) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.at)
    .bind(&a.username)
    .bind(&a.source)
    .bind(&a.action)
    .bind(&a.object_type)
    .bind(&a.object_id)
    .bind(&a.summary)
    .bind(&a.via)
    .bind(&a.permission)
    .execute(conn)
    .await?;
    Ok(())
}
