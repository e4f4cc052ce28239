//! Hosts: enrollment, inventory queries, status, labels and metric time series.
//!
//! `enroll_host` is one transaction that consumes a token use only if the
//! token is valid and has uses left, then inserts the host; when nothing
//! matches it says why (unknown, revoked, expired, used up), and inserts the
//! host's `host_live` row with it. The flusher's batched update never changes
//! the status, last heartbeat or metrics of a `decommissioned` host (its
//! generations are still recorded).
//!
//! A host is two rows: `hosts` (facts, disks, status, latest metrics: the
//! wide row, written on a hello and for new metrics) and `host_live` (last
//! heartbeat, desired and applied generation: narrow, written by nearly every
//! flush). Readers join them ([`HOSTS_FROM`]).

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyRow;

use super::records::{Arg, NewEvent, bind_all, push_filter};
use super::{Result, Store, StoreError, get, get_json, to_json};
use crate::model::{Host, HostFacts, HostKind, HostMetrics, HostStatus, Labels, MetricPoint, UnixMillis, rfc3339};

/// A host about to be created by a successful enrollment.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub id: String,
    pub facts: HostFacts,
    pub agent_version: String,
    /// Labels the agent asked for; the token's labels are merged under them.
    pub labels: Labels,
    pub cert_serial: String,
}

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("unknown enrollment token {0}")]
    Unknown(String),
    #[error("enrollment token {id} was revoked at {at}")]
    Revoked { id: String, at: String },
    #[error("enrollment token {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("enrollment token {id} is used up ({uses} of {max_uses} uses)")]
    UsedUp { id: String, uses: u32, max_uses: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EnrollError {
    fn from(e: sqlx::Error) -> Self {
        EnrollError::Store(StoreError::Database(e))
    }
}

#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub status: Option<HostStatus>,
    /// Every (key, value) must match.
    pub labels: Vec<(String, String)>,
    /// No (key, value) may match; hosts without the key match.
    pub not_labels: Vec<(String, String)>,
    /// Substring of the hostname.
    pub hostname: Option<String>,
    /// Only hosts of this kind.
    pub kind: Option<crate::model::HostKind>,
    /// Substring of the hostname or of one of the addresses.
    pub text: Option<String>,
    /// Only hosts not in this cluster and not decommissioned (hosts a
    /// cluster can take).
    pub outside_cluster: Option<String>,
    /// Only hosts in this cluster.
    pub in_cluster: Option<String>,
    /// Only hosts in one of these clusters (what a cluster-scoped caller
    /// may see); `None` means no such restriction.
    pub member_of: Option<Vec<String>>,
    /// Order of the page; ties are broken by hostname, then id.
    pub sort: HostSort,
    pub descending: bool,
    pub limit: u32,
    pub offset: u32,
}

/// Columns a host list can be sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostSort {
    #[default]
    Hostname,
    Status,
    Kind,
    Cores,
    Memory,
    Heartbeat,
    Enrolled,
}

impl HostSort {
    pub const ALL: [HostSort; 7] = [
        HostSort::Hostname,
        HostSort::Status,
        HostSort::Kind,
        HostSort::Cores,
        HostSort::Memory,
        HostSort::Heartbeat,
        HostSort::Enrolled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostSort::Hostname => "hostname",
            HostSort::Status => "status",
            HostSort::Kind => "kind",
            HostSort::Cores => "cores",
            HostSort::Memory => "memory",
            HostSort::Heartbeat => "heartbeat",
            HostSort::Enrolled => "enrolled",
        }
    }

    pub fn parse(s: &str) -> Option<HostSort> {
        HostSort::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The column, from a fixed list: never text from a request.
    fn column(self) -> &'static str {
        match self {
            HostSort::Hostname => "hostname",
            HostSort::Status => "status",
            HostSort::Kind => "kind",
            HostSort::Cores => "cpu_cores",
            HostSort::Memory => "memory_bytes",
            HostSort::Heartbeat => "last_heartbeat_at",
            HostSort::Enrolled => "enrolled_at",
        }
    }
}

/// A `LIKE` pattern matching `text` anywhere, with the wildcards escaped
/// (used with `ESCAPE '\'`), lower-cased.
fn contains_pattern(text: &str) -> String {
    let t = text.to_ascii_lowercase();
    format!("%{}%", t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

#[derive(Debug, Clone)]
pub struct HostPage {
    pub items: Vec<Host>,
    pub total: u64,
}

/// Live state the registry flushes for one host.
#[derive(Debug, Clone)]
pub struct HeartbeatRow {
    pub host_id: String,
    /// `None`: the status is what was last written (most rows: writing it
    /// again would also rewrite the row's entry in the status index).
    pub status: Option<HostStatus>,
    pub last_heartbeat_at: UnixMillis,
    /// `None`: the stored latest metrics stay.
    pub metrics: Option<HostMetrics>,
}

/// What one flush changes in one host's `host_live` row: when it was last
/// seen, its desired generation, its applied generation, any of them. A host
/// that a heartbeat, a push and an agent's report all touch between two
/// flushes is written once.
#[derive(Default)]
struct HostWrite {
    seen: Option<UnixMillis>,
    desired: Option<u64>,
    applied: Option<u64>,
}

/// The `host_live` rows of `b` by host, in host id order.
fn host_writes<'a>(b: &FlushBatch<'a>) -> Vec<(&'a str, HostWrite)> {
    let mut by_host: BTreeMap<&str, HostWrite> = BTreeMap::new();
    for hb in b.heartbeats {
        by_host.entry(&hb.host_id).or_default().seen = Some(hb.last_heartbeat_at);
    }
    for (host, generation) in b.desired_generations {
        by_host.entry(host).or_default().desired = Some(*generation);
    }
    for (host, generation) in b.applied_generations {
        by_host.entry(host).or_default().applied = Some(*generation);
    }
    by_host.into_iter().collect()
}

/// One flush of the registry: live host state, events, generations and role
/// reports ([`Store::flush_batch`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushBatch<'a> {
    pub heartbeats: &'a [HeartbeatRow],
    pub events: &'a [NewEvent],
    pub desired_generations: &'a [(String, u64)],
    pub applied_generations: &'a [(String, u64)],
    pub statuses: &'a [super::RoleStatusRec],
    pub applied: &'a [super::AppliedRevision],
}

impl FlushBatch<'_> {
    fn is_empty(&self) -> bool {
        self.heartbeats.is_empty()
            && self.events.is_empty()
            && self.desired_generations.is_empty()
            && self.applied_generations.is_empty()
            && self.statuses.is_empty()
            && self.applied.is_empty()
    }
}

const HOST_COLUMNS: &str = "id, hostname, addresses, kind, kind_evidence, os, kernel, arch, cpu_cores, memory_bytes, \
    disks, agent_version, status, cert_serial, enrolled_at, host_live.last_heartbeat_at AS last_heartbeat_at, \
    latest_metrics, COALESCE(host_live.applied_generation, 0) AS applied_generation, \
    decommissioned_at, fqdn, container_id, machine_cpu_cores, machine_memory_bytes, capacity_evidence";

/// Where [`HOST_COLUMNS`] come from: a host's facts and its live row
/// (migration 0016: the columns every flush writes, kept narrow).
const HOSTS_FROM: &str = "hosts LEFT JOIN host_live ON host_live.host_id = hosts.id";

fn host_from_row(row: &AnyRow, labels: Labels) -> Result<Host> {
    let status: String = get(row, "status")?;
    let latest: Option<String> = get(row, "latest_metrics")?;
    let metrics =
        latest.map(|m| serde_json::from_str(&m).map_err(|e| StoreError::corrupt("latest_metrics", e))).transpose()?;
    Ok(Host {
        id: get(row, "id")?,
        hostname: get(row, "hostname")?,
        addresses: get_json(row, "addresses")?,
        kind: HostKind::parse(&get::<String>(row, "kind")?),
        kind_evidence: get(row, "kind_evidence")?,
        os: get(row, "os")?,
        kernel: get(row, "kernel")?,
        arch: get(row, "arch")?,
        cpu_cores: get::<i64>(row, "cpu_cores")? as u32,
        memory_bytes: get::<i64>(row, "memory_bytes")? as u64,
        disks: get_json(row, "disks")?,
        fqdn: get(row, "fqdn")?,
        container_id: get(row, "container_id")?,
        machine_cpu_cores: get::<i64>(row, "machine_cpu_cores")? as u32,
        machine_memory_bytes: get::<i64>(row, "machine_memory_bytes")? as u64,
        capacity_evidence: get(row, "capacity_evidence")?,
        agent_version: get(row, "agent_version")?,
        labels,
        status: HostStatus::parse(&status).ok_or_else(|| StoreError::corrupt("status", &status))?,
        enrolled_at: rfc3339(get(row, "enrolled_at")?),
        last_heartbeat_at: get::<Option<i64>>(row, "last_heartbeat_at")?.map(rfc3339),
        decommissioned_at: get::<Option<i64>>(row, "decommissioned_at")?.map(rfc3339),
        applied_generation: get::<i64>(row, "applied_generation")? as u64,
        metrics,
        cert_serial: get(row, "cert_serial")?,
    })
}

fn sat_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Consumes one use of the token and creates the host, atomically: two
    /// agents racing for the last use of a token cannot both get in.
    pub async fn enroll_host(
        &self,
        token_id: &str,
        secret_hash: &str,
        now: UnixMillis,
        host: &NewHost,
    ) -> Result<Host, EnrollError> {
        let mut tx = self.pool.begin().await?;
        // Write first so SQLite takes its write lock at once (no lock upgrade).
        let consumed = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1 \
             WHERE id = $1 AND secret_hash = $2 AND revoked_at IS NULL AND expires_at > $3 AND uses < max_uses \
             RETURNING labels",
        )
        .bind(token_id)
        .bind(secret_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = consumed else {
            tx.rollback().await?;
            return Err(self.enroll_refusal(token_id, secret_hash, now).await?);
        };
        let mut labels: Labels = get_json(&row, "labels")?;
        labels.extend(host.labels.clone());
        let f = &host.facts;
        sqlx::query(
            "INSERT INTO hosts (id, hostname, addresses, kind, kind_evidence, os, kernel, arch, cpu_cores, memory_bytes, \
             disks, agent_version, status, cert_serial, enrollment_token, enrolled_at, fqdn, container_id, \
             machine_cpu_cores, machine_memory_bytes, capacity_evidence) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'healthy', $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(&host.id)
        .bind(&f.hostname)
        .bind(to_json(&f.addresses))
        .bind(f.kind.as_str())
        .bind(&f.kind_evidence)
        .bind(&f.os)
        .bind(&f.kernel)
        .bind(&f.arch)
        .bind(i64::from(f.cpu_cores))
        .bind(sat_i64(f.memory_bytes))
        .bind(to_json(&f.disks))
        .bind(&host.agent_version)
        .bind(&host.cert_serial)
        .bind(token_id)
        .bind(now)
        .bind(&f.fqdn)
        .bind(&f.container_id)
        .bind(i64::from(f.machine_cpu_cores))
        .bind(sat_i64(f.machine_memory_bytes))
        .bind(&f.capacity_evidence)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO host_live (host_id) VALUES ($1)").bind(&host.id).execute(&mut *tx).await?;
        for (k, v) in &labels {
            sqlx::query("INSERT INTO host_labels (host_id, key, value) VALUES ($1, $2, $3)")
                .bind(&host.id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.topology_changed();
        self.host(&host.id)
            .await?
            .ok_or_else(|| EnrollError::Store(StoreError::corrupt("hosts", "enrolled host vanished")))
    }

    /// Explains why [`Store::enroll_host`] could not consume the token.
    async fn enroll_refusal(&self, token_id: &str, secret_hash: &str, now: UnixMillis) -> Result<EnrollError> {
        let Some(t) = self.enrollment_token(token_id).await? else {
            return Ok(EnrollError::Unknown(token_id.to_owned()));
        };
        // A wrong secret is reported like an unknown token: no oracle for ids.
        if t.secret_hash != secret_hash {
            return Ok(EnrollError::Unknown(token_id.to_owned()));
        }
        Ok(if let Some(at) = t.revoked_at {
            EnrollError::Revoked { id: t.id, at: rfc3339(at) }
        } else if t.expires_at <= now {
            EnrollError::Expired { id: t.id, at: rfc3339(t.expires_at) }
        } else {
            EnrollError::UsedUp { id: t.id, uses: t.uses, max_uses: t.max_uses }
        })
    }

    async fn labels_of(&self, ids: &[String]) -> Result<HashMap<String, Labels>> {
        let mut out: HashMap<String, Labels> = HashMap::new();
        for chunk in ids.chunks(super::BATCH_ROWS) {
            let sql = format!(
                "SELECT host_id, key, value FROM host_labels WHERE host_id IN ({})",
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.entry(get(&row, "host_id")?).or_default().insert(get(&row, "key")?, get(&row, "value")?);
            }
        }
        Ok(out)
    }

    async fn hosts_from_rows(&self, rows: Vec<AnyRow>) -> Result<Vec<Host>> {
        let ids = rows.iter().map(|r| get::<String>(r, "id")).collect::<Result<Vec<_>>>()?;
        let mut labels = self.labels_of(&ids).await?;
        rows.iter().zip(&ids).map(|(row, id)| host_from_row(row, labels.remove(id).unwrap_or_default())).collect()
    }

    pub async fn host(&self, id: &str) -> Result<Option<Host>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM {HOSTS_FROM} WHERE id = $1");
        let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
        Ok(self.hosts_from_rows(rows).await?.pop())
    }

    /// Hostname and addresses of the given hosts, in one query per 500 ids
    /// (for rendering topologies).
    pub async fn host_addresses(&self, ids: &[String]) -> Result<HashMap<String, (String, Vec<String>)>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(super::BATCH_ROWS) {
            let sql = format!(
                "SELECT id, hostname, addresses FROM hosts WHERE id IN ({})",
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.insert(get(&row, "id")?, (get(&row, "hostname")?, get_json(&row, "addresses")?));
            }
        }
        Ok(out)
    }

    /// Every host, for the registry to load at start-up.
    pub async fn all_hosts(&self) -> Result<Vec<Host>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM {HOSTS_FROM} ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        self.hosts_from_rows(rows).await
    }

    pub async fn list_hosts(&self, f: &HostFilter) -> Result<HostPage> {
        let mut cond = String::from(" WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        push_filter(&mut cond, &mut args, "status = ", f.status.map(|s| Arg::Text(s.as_str().to_owned())));
        if let Some(h) = &f.hostname {
            // Case-insensitive on both backends (SQLite's LIKE folds ASCII case,
            // PostgreSQL's does not); hostnames are ASCII.
            args.push(Arg::Text(contains_pattern(h)));
            cond.push_str(&format!(" AND LOWER(hostname) LIKE ${} ESCAPE '\\'", args.len()));
        }
        push_filter(&mut cond, &mut args, "kind = ", f.kind.map(|k| Arg::Text(k.as_str().to_owned())));
        if let Some(c) = &f.in_cluster {
            args.push(Arg::Text(c.clone()));
            cond.push_str(&format!(" AND id IN (SELECT host_id FROM cluster_hosts WHERE cluster = ${})", args.len()));
        }
        if let Some(clusters) = &f.member_of {
            // A subquery per cluster keeps the `IN ($n, ...)` list the only
            // dynamic part.
            let mut members = String::from("SELECT host_id FROM cluster_hosts WHERE 1 = 1");
            super::records::push_in(&mut members, &mut args, "cluster", clusters);
            cond.push_str(&format!(" AND id IN ({members})"));
        }
        if let Some(c) = &f.outside_cluster {
            args.push(Arg::Text(c.clone()));
            cond.push_str(&format!(
                " AND status <> 'decommissioned' AND id NOT IN (SELECT host_id FROM cluster_hosts WHERE cluster = ${})",
                args.len()
            ));
        }
        if let Some(t) = &f.text {
            args.push(Arg::Text(contains_pattern(t)));
            args.push(Arg::Text(contains_pattern(t)));
            let n = args.len();
            cond.push_str(&format!(
                " AND (LOWER(hostname) LIKE ${} ESCAPE '\\' OR LOWER(addresses) LIKE ${n} ESCAPE '\\')",
                n - 1
            ));
        }
        for (k, v) in &f.labels {
            args.push(Arg::Text(k.clone()));
            args.push(Arg::Text(v.clone()));
            cond.push_str(&format!(
                " AND id IN (SELECT host_id FROM host_labels WHERE key = ${} AND value = ${})",
                args.len() - 1,
                args.len()
            ));
        }
        for (k, v) in &f.not_labels {
            args.push(Arg::Text(k.clone()));
            args.push(Arg::Text(v.clone()));
            cond.push_str(&format!(
                " AND id NOT IN (SELECT host_id FROM host_labels WHERE key = ${} AND value = ${})",
                args.len() - 1,
                args.len()
            ));
        }
        let count_sql = format!("SELECT COUNT(*) AS n FROM hosts{cond}");
        let total: i64 = get(&bind_all(sqlx::query(&count_sql), &args).fetch_one(&self.pool).await?, "n")?;
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM {HOSTS_FROM}{cond} ORDER BY {} {}, hostname, id LIMIT {} OFFSET {}",
            f.sort.column(),
            if f.descending { "DESC" } else { "ASC" },
            f.limit.clamp(1, 1000),
            f.offset
        );
        let rows = bind_all(sqlx::query(&sql), &args).fetch_all(&self.pool).await?;
        Ok(HostPage { items: self.hosts_from_rows(rows).await?, total: total as u64 })
    }

    /// Replaces a host's labels; returns false if the host does not exist.
    pub async fn set_host_labels(&self, id: &str, labels: &Labels) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM host_labels WHERE host_id = $1").bind(id).execute(&mut *tx).await?;
        let exists =
            sqlx::query("SELECT id FROM hosts WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?.is_some();
        if !exists {
            tx.rollback().await?;
            return Ok(false);
        }
        for (k, v) in labels {
            sqlx::query("INSERT INTO host_labels (host_id, key, value) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records the facts an agent reported in its hello.
    pub async fn update_host_facts(&self, id: &str, f: &HostFacts, agent_version: &str) -> Result<()> {
        sqlx::query(
            "UPDATE hosts SET hostname = $2, addresses = $3, kind = $4, kind_evidence = $5, os = $6, kernel = $7, \
             arch = $8, cpu_cores = $9, memory_bytes = $10, disks = $11, agent_version = $12, fqdn = $13, \
             container_id = $14, machine_cpu_cores = $15, machine_memory_bytes = $16, capacity_evidence = $17 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&f.hostname)
        .bind(to_json(&f.addresses))
        .bind(f.kind.as_str())
        .bind(&f.kind_evidence)
        .bind(&f.os)
        .bind(&f.kernel)
        .bind(&f.arch)
        .bind(i64::from(f.cpu_cores))
        .bind(sat_i64(f.memory_bytes))
        .bind(to_json(&f.disks))
        .bind(agent_version)
        .bind(&f.fqdn)
        .bind(&f.container_id)
        .bind(i64::from(f.machine_cpu_cores))
        .bind(sat_i64(f.machine_memory_bytes))
        .bind(&f.capacity_evidence)
        .execute(&self.pool)
        .await?;
        self.topology_changed();
        Ok(())
    }

    /// Sets the generation a host last reported applied (the registry's
    /// flusher writes them in batches with [`Store::flush_batch`]).
    pub async fn set_applied_generation(&self, id: &str, generation: u64) -> Result<()> {
        let generations = [(id.to_owned(), generation)];
        self.flush_batch(FlushBatch { applied_generations: &generations, ..FlushBatch::default() }).await
    }

    /// Marks a host decommissioned and its certificate revoked. Returns the
    /// host as it was before, or None if there is no such host.
    pub async fn decommission_host(&self, id: &str, by: &str, now: UnixMillis) -> Result<Option<Host>> {
        let Some(before) = self.host(id).await? else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE hosts SET status = 'decommissioned', decommissioned_at = COALESCE(decommissioned_at, $2), \
             decommissioned_by = COALESCE(decommissioned_by, $3) WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?;
        self.topology_changed();
        Ok(Some(before))
    }

    /// Writes the registry's batch of live host state and events in one
    /// transaction.
    pub async fn flush(&self, heartbeats: &[HeartbeatRow], events: &[NewEvent]) -> Result<()> {
        self.flush_batch(FlushBatch { heartbeats, events, ..FlushBatch::default() }).await
    }

    /// Writes everything the registry's flusher gathered in one transaction:
    /// a host's `host_live` row that a heartbeat, a new desired generation and
    /// an applied generation all touch is updated once, not three times; its
    /// wide `hosts` row only for new metrics, and its status (an indexed
    /// column) only when the row says it changed.
    pub async fn flush_batch(&self, b: FlushBatch<'_>) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let writes = host_writes(&b);
        // Live state never resurrects a host decommissioned while the batch was
        // queued; its generations are written all the same.
        for chunk in writes.chunks(super::BATCH_ROWS) {
            let sql = format!(
                "UPDATE host_live SET \
                 last_heartbeat_at = CASE WHEN v.column2 IS NULL OR EXISTS (SELECT 1 FROM hosts \
                 WHERE hosts.id = v.column1 AND hosts.status = 'decommissioned') \
                 THEN host_live.last_heartbeat_at ELSE v.column2 END, \
                 desired_generation = COALESCE(v.column3, host_live.desired_generation), \
                 applied_generation = COALESCE(v.column4, host_live.applied_generation) \
                 FROM (VALUES {}) AS v WHERE host_live.host_id = v.column1",
                super::values_placeholders(self.backend, chunk.len(), 4)
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for (host, w) in chunk {
                q = q
                    .bind(*host)
                    .bind(w.seen)
                    .bind(w.desired.map(super::services::i64_of))
                    .bind(w.applied.map(super::services::i64_of));
            }
            q.execute(&mut *tx).await?;
        }
        let mut metrics: Vec<(&str, String)> =
            b.heartbeats.iter().filter_map(|hb| Some((hb.host_id.as_str(), to_json(hb.metrics.as_ref()?)))).collect();
        metrics.sort_unstable_by(|a, b| a.0.cmp(b.0));
        set_host_text(&mut tx, self.backend, "latest_metrics", &metrics).await?;
        // A status changes seldom (a host lost or back): its own statement, so
        // the other rows leave the status index alone.
        let statuses: Vec<(&str, &str)> =
            b.heartbeats.iter().filter_map(|hb| Some((hb.host_id.as_str(), hb.status?.as_str()))).collect();
        set_host_text(&mut tx, self.backend, "status", &statuses).await?;
        super::services::role_statuses_in(&mut tx, self.backend, b.statuses, b.applied).await?;
        for e in b.events {
            Store::insert_event_in(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A host's metric points at `resolution_s` (3600: hours, else minutes) whose minute or
    /// hour starts in `[from, to)` (Unix ms), at most [`MAX_HOST_POINTS`]:
    /// read from the 1-minute or 1-hour rollups of the host's metric series
    /// (`host_*`, migration 0009). Per point: CPU and load averaged over the
    /// heartbeats in it (`samples` of them); memory and disk use the last
    /// value of a minute, the average of an hour; network counters and disk
    /// sizes the last value.
    pub async fn host_metrics(
        &self,
        host_id: &str,
        resolution_s: u32,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<MetricPoint>> {
        let hourly = resolution_s == 3600;
        let table = if hourly { "metric_points_1h" } else { "metric_points_1m" };
        // Whole seconds: the first start at or after `from`, before `to`.
        let ceil_s = |ms: i64| ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0);
        let names = HOST_POINT_METRICS.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT s.name, s.labels, p.t, p.v_sum, p.v_count, p.v_last FROM metric_series s \
             JOIN {table} p ON p.series_id = s.id \
             WHERE s.entity_kind = 'host' AND s.entity_id = $1 AND s.name IN ({names}) AND p.t >= $2 AND p.t < $3 \
             ORDER BY p.t LIMIT {}",
            MAX_HOST_POINTS * HOST_ROWS_PER_POINT
        );
        let rows = sqlx::query(&sql).bind(host_id).bind(ceil_s(from)).bind(ceil_s(to)).fetch_all(&self.pool).await?;
        let cut = rows.len() == MAX_HOST_POINTS * HOST_ROWS_PER_POINT;
        let mut points: Vec<(i64, HostPoint)> = Vec::new();
        for r in &rows {
            let t: i64 = get(r, "t")?;
            if points.last().is_none_or(|(last, _)| *last != t) {
                points.push((t, HostPoint::default()));
            }
            let Some((_, p)) = points.last_mut() else { continue };
            let name: String = get(r, "name")?;
            let (sum, count, last): (f64, i64, f64) = (get(r, "v_sum")?, get(r, "v_count")?, get(r, "v_last")?);
            let avg = if count > 0 { sum / count as f64 } else { last };
            let level = if hourly { avg } else { last };
            let mount = || -> Result<String> {
                let labels: HashMap<String, String> = get_json(r, "labels")?;
                Ok(labels.get("mount").cloned().unwrap_or_default())
            };
            match name.as_str() {
                "host_cpu_percent" => (p.samples, p.cpu_percent) = (count, avg),
                "host_load1" => p.load1 = avg,
                "host_memory_used_bytes" => p.memory_used_bytes = level,
                "host_network_rx_bytes_total" => p.network_rx_bytes = last,
                "host_network_tx_bytes_total" => p.network_tx_bytes = last,
                "host_disk_used_bytes" => p.disks.entry(mount()?).or_default().0 = level,
                "host_disk_total_bytes" => p.disks.entry(mount()?).or_default().1 = last,
                _ => {}
            }
        }
        if cut {
            // The last point may have lost some of its series to the limit.
            points.pop();
        }
        points.truncate(MAX_HOST_POINTS);
        Ok(points.into_iter().map(|(t, p)| p.view(t * 1000, resolution_s)).collect())
    }
}

/// Sets one text column of the `hosts` rows named by id, many rows per
/// statement; a decommissioned host's row is left as it is.
async fn set_host_text(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: super::Backend,
    column: &'static str,
    rows: &[(&str, impl AsRef<str>)],
) -> Result<()> {
    for chunk in rows.chunks(super::BATCH_ROWS) {
        let sql = format!(
            "UPDATE hosts SET {column} = v.column2 FROM (VALUES {}) AS v \
             WHERE hosts.id = v.column1 AND hosts.status <> 'decommissioned'",
            super::values_placeholders(backend, chunk.len(), 2)
        );
        let mut q = super::batch_query(&sql, chunk.len());
        for (host, value) in chunk {
            q = q.bind(*host).bind(value.as_ref());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The host series [`Store::host_metrics`] reads.
const HOST_POINT_METRICS: [&str; 7] = [
    "host_cpu_percent",
    "host_load1",
    "host_memory_used_bytes",
    "host_network_rx_bytes_total",
    "host_network_tx_bytes_total",
    "host_disk_used_bytes",
    "host_disk_total_bytes",
];

/// The most points [`Store::host_metrics`] answers.
pub const MAX_HOST_POINTS: usize = 10_000;

/// Rows read per point at most: the five host-wide series and two per mount
/// point for up to eight mount points (beyond, fewer points are answered).
const HOST_ROWS_PER_POINT: usize = 5 + 2 * 8;

/// One host metric point as its series' rollup rows fill it.
#[derive(Default)]
struct HostPoint {
    samples: i64,
    cpu_percent: f64,
    load1: f64,
    memory_used_bytes: f64,
    network_rx_bytes: f64,
    network_tx_bytes: f64,
    /// Used and total bytes by mount point.
    disks: std::collections::BTreeMap<String, (f64, f64)>,
}

impl HostPoint {
    fn view(self, at: UnixMillis, resolution_s: u32) -> MetricPoint {
        let bytes = |v: f64| if v.is_finite() && v > 0.0 { v.round() as u64 } else { 0 };
        let disks: Vec<crate::model::MountUsage> = self
            .disks
            .into_iter()
            .map(|(mount_point, (used, total))| crate::model::MountUsage {
                mount_point,
                used_bytes: bytes(used),
                total_bytes: bytes(total),
            })
            .collect();
        MetricPoint {
            at: rfc3339(at),
            resolution_s,
            samples: u32::try_from(self.samples).unwrap_or(u32::MAX),
            cpu_percent: self.cpu_percent,
            memory_used_bytes: bytes(self.memory_used_bytes),
            load1: self.load1,
            disk_used_bytes: disks.iter().map(|d| d.used_bytes).sum(),
            network_rx_bytes: bytes(self.network_rx_bytes),
            network_tx_bytes: bytes(self.network_tx_bytes),
            disks,
        }
    }
}
