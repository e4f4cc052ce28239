//! Hosts: enrollment, inventory queries, status, labels and metric time series.
//!
//! `enroll_host` is one transaction that consumes a token use only if the
//! token is valid and has uses left, then inserts the host; when nothing
//! matches it says why (unknown, revoked, expired, used up). The flusher's
//! batched update never touches a `decommissioned` row.

use std::collections::HashMap;

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
    pub status: HostStatus,
    pub last_heartbeat_at: UnixMillis,
    pub metrics: Option<HostMetrics>,
}

/// A completed metric bucket (averages) for one host.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricBucket {
    pub host_id: String,
    pub resolution_s: u32,
    pub bucket_start: UnixMillis,
    pub samples: u32,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub load1: f64,
    pub disk_used_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Use per mount point at the end of the bucket.
    pub disks: Vec<crate::model::MountUsage>,
}

const HOST_COLUMNS: &str = "id, hostname, addresses, kind, kind_evidence, os, kernel, arch, cpu_cores, memory_bytes, \
    disks, agent_version, status, cert_serial, enrolled_at, last_heartbeat_at, latest_metrics, applied_generation, \
    decommissioned_at, fqdn, container_id, machine_cpu_cores, machine_memory_bytes, capacity_evidence";

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
        for (k, v) in &labels {
            sqlx::query("INSERT INTO host_labels (host_id, key, value) VALUES ($1, $2, $3)")
                .bind(&host.id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT host_id, key, value FROM host_labels WHERE host_id IN ({})",
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = sqlx::query(&sql);
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
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1");
        let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
        Ok(self.hosts_from_rows(rows).await?.pop())
    }

    /// Hostname and addresses of the given hosts, in one query per 500 ids
    /// (for rendering topologies).
    pub async fn host_addresses(&self, ids: &[String]) -> Result<HashMap<String, (String, Vec<String>)>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id, hostname, addresses FROM hosts WHERE id IN ({})",
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = sqlx::query(&sql);
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
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id");
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
            "SELECT {HOST_COLUMNS} FROM hosts{cond} ORDER BY {} {}, hostname, id LIMIT {} OFFSET {}",
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
        Ok(())
    }

    pub async fn set_applied_generation(&self, id: &str, generation: u64) -> Result<()> {
        self.set_applied_generations(&[(id.to_owned(), generation)]).await
    }

    /// Sets the generation each host last reported applied, in one transaction
    /// (the registry's flusher batches them).
    pub async fn set_applied_generations(&self, generations: &[(String, u64)]) -> Result<()> {
        self.set_host_generations("applied_generation", generations).await
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
        Ok(Some(before))
    }

    /// Writes the registry's batch of live host state and finished metric
    /// buckets in one transaction.
    pub async fn flush(
        &self,
        heartbeats: &[HeartbeatRow],
        buckets: &[MetricBucket],
        events: &[NewEvent],
    ) -> Result<()> {
        if heartbeats.is_empty() && buckets.is_empty() && events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in heartbeats.chunks(super::BATCH_ROWS) {
            // Never resurrect a host decommissioned while the batch was queued.
            let sql = format!(
                "UPDATE hosts SET status = v.column2, last_heartbeat_at = v.column3, \
                 latest_metrics = COALESCE(v.column4, hosts.latest_metrics) FROM (VALUES {}) AS v \
                 WHERE hosts.id = v.column1 AND hosts.status <> 'decommissioned'",
                super::values_placeholders(self.backend, chunk.len(), 4)
            );
            let mut q = sqlx::query(&sql);
            for hb in chunk {
                q = q
                    .bind(&hb.host_id)
                    .bind(hb.status.as_str())
                    .bind(hb.last_heartbeat_at)
                    .bind(hb.metrics.as_ref().map(to_json));
            }
            q.execute(&mut *tx).await?;
        }
        for b in buckets {
            upsert_bucket(&mut tx, b).await?;
        }
        for e in events {
            Store::insert_event_in(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rolls minute buckets in `[from, to)` up into hourly buckets.
    ///
    /// Averages are weighted by samples, like [`Store::flush`]'s bucket merge,
    /// so a minute with one heartbeat counts for less than a full one. Byte
    /// averages are computed in integers and rounded half up, because the
    /// backends round `CAST(AVG(..) AS BIGINT)` differently (SQLite truncates,
    /// PostgreSQL rounds).
    pub async fn rollup_hourly(&self, from: UnixMillis, to: UnixMillis) -> Result<u64> {
        let done = sqlx::query(
            "INSERT INTO host_metrics (host_id, resolution_s, bucket_start, samples, cpu_percent, memory_used_bytes, \
             load1, disk_used_bytes, network_rx_bytes, network_tx_bytes) \
             SELECT host_id, 3600, (bucket_start / 3600000) * 3600000, CAST(SUM(samples) AS BIGINT), \
             SUM(cpu_percent * samples) / CAST(SUM(samples) AS DOUBLE PRECISION), \
             (CAST(SUM(memory_used_bytes * samples) AS BIGINT) + CAST(SUM(samples) AS BIGINT) / 2) \
                 / CAST(SUM(samples) AS BIGINT), \
             SUM(load1 * samples) / CAST(SUM(samples) AS DOUBLE PRECISION), \
             (CAST(SUM(disk_used_bytes * samples) AS BIGINT) + CAST(SUM(samples) AS BIGINT) / 2) \
                 / CAST(SUM(samples) AS BIGINT), \
             MAX(network_rx_bytes), MAX(network_tx_bytes) \
             FROM host_metrics WHERE resolution_s = 60 AND samples > 0 AND bucket_start >= $1 AND bucket_start < $2 \
             GROUP BY host_id, (bucket_start / 3600000) * 3600000 \
             ON CONFLICT (host_id, resolution_s, bucket_start) DO UPDATE SET samples = excluded.samples, \
             cpu_percent = excluded.cpu_percent, memory_used_bytes = excluded.memory_used_bytes, \
             load1 = excluded.load1, disk_used_bytes = excluded.disk_used_bytes, \
             network_rx_bytes = excluded.network_rx_bytes, network_tx_bytes = excluded.network_tx_bytes",
        )
        .bind(from)
        .bind(to)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "INSERT INTO host_disk_metrics (host_id, resolution_s, bucket_start, mount_point, used_bytes, total_bytes) \
             SELECT host_id, 3600, (bucket_start / 3600000) * 3600000, mount_point, \
             CAST(AVG(used_bytes) AS BIGINT), MAX(total_bytes) \
             FROM host_disk_metrics WHERE resolution_s = 60 AND bucket_start >= $1 AND bucket_start < $2 \
             GROUP BY host_id, (bucket_start / 3600000) * 3600000, mount_point \
             ON CONFLICT (host_id, resolution_s, bucket_start, mount_point) DO UPDATE SET \
             used_bytes = excluded.used_bytes, total_bytes = excluded.total_bytes",
        )
        .bind(from)
        .bind(to)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes buckets of `resolution_s` that started before `before`.
    pub async fn prune_metrics(&self, resolution_s: u32, before: UnixMillis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM host_metrics WHERE resolution_s = $1 AND bucket_start < $2")
            .bind(i64::from(resolution_s))
            .bind(before)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM host_disk_metrics WHERE resolution_s = $1 AND bucket_start < $2")
            .bind(i64::from(resolution_s))
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn host_metrics(
        &self,
        host_id: &str,
        resolution_s: u32,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<MetricPoint>> {
        let rows = sqlx::query(
            "SELECT * FROM host_metrics WHERE host_id = $1 AND resolution_s = $2 AND bucket_start >= $3 \
             AND bucket_start < $4 ORDER BY bucket_start LIMIT 10000",
        )
        .bind(host_id)
        .bind(i64::from(resolution_s))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let disk_rows = sqlx::query(
            "SELECT bucket_start, mount_point, used_bytes, total_bytes FROM host_disk_metrics WHERE host_id = $1 \
             AND resolution_s = $2 AND bucket_start >= $3 AND bucket_start < $4 ORDER BY bucket_start, mount_point \
             LIMIT 100000",
        )
        .bind(host_id)
        .bind(i64::from(resolution_s))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut disks: HashMap<i64, Vec<crate::model::MountUsage>> = HashMap::new();
        for r in &disk_rows {
            disks.entry(get(r, "bucket_start")?).or_default().push(crate::model::MountUsage {
                mount_point: get(r, "mount_point")?,
                used_bytes: get::<i64>(r, "used_bytes")? as u64,
                total_bytes: get::<i64>(r, "total_bytes")? as u64,
            });
        }
        rows.iter()
            .map(|r| {
                let start: i64 = get(r, "bucket_start")?;
                Ok(MetricPoint {
                    disks: disks.remove(&start).unwrap_or_default(),
                    at: rfc3339(get(r, "bucket_start")?),
                    resolution_s: get::<i64>(r, "resolution_s")? as u32,
                    samples: get::<i64>(r, "samples")? as u32,
                    cpu_percent: get(r, "cpu_percent")?,
                    memory_used_bytes: get::<i64>(r, "memory_used_bytes")? as u64,
                    load1: get(r, "load1")?,
                    disk_used_bytes: get::<i64>(r, "disk_used_bytes")? as u64,
                    network_rx_bytes: get::<i64>(r, "network_rx_bytes")? as u64,
                    network_tx_bytes: get::<i64>(r, "network_tx_bytes")? as u64,
                })
            })
            .collect()
    }
}

async fn upsert_bucket(tx: &mut sqlx::Transaction<'_, sqlx::Any>, b: &MetricBucket) -> Result<()> {
    // A bucket can be written twice (a session moved between flushes); the
    // sample-weighted merge keeps its averages right.
    sqlx::query(
        "INSERT INTO host_metrics (host_id, resolution_s, bucket_start, samples, cpu_percent, memory_used_bytes, \
         load1, disk_used_bytes, network_rx_bytes, network_tx_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (host_id, resolution_s, bucket_start) DO UPDATE SET \
         cpu_percent = (host_metrics.cpu_percent * host_metrics.samples + excluded.cpu_percent * excluded.samples) \
             / (host_metrics.samples + excluded.samples), \
         load1 = (host_metrics.load1 * host_metrics.samples + excluded.load1 * excluded.samples) \
             / (host_metrics.samples + excluded.samples), \
         memory_used_bytes = excluded.memory_used_bytes, disk_used_bytes = excluded.disk_used_bytes, \
         network_rx_bytes = excluded.network_rx_bytes, network_tx_bytes = excluded.network_tx_bytes, \
         samples = host_metrics.samples + excluded.samples",
    )
    .bind(&b.host_id)
    .bind(i64::from(b.resolution_s))
    .bind(b.bucket_start)
    .bind(i64::from(b.samples))
    .bind(b.cpu_percent)
    .bind(sat_i64(b.memory_used_bytes))
    .bind(b.load1)
    .bind(sat_i64(b.disk_used_bytes))
    .bind(sat_i64(b.network_rx_bytes))
    .bind(sat_i64(b.network_tx_bytes))
    .execute(&mut **tx)
    .await?;
    for d in &b.disks {
        sqlx::query(
            "INSERT INTO host_disk_metrics (host_id, resolution_s, bucket_start, mount_point, used_bytes, total_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (host_id, resolution_s, bucket_start, mount_point) \
             DO UPDATE SET used_bytes = excluded.used_bytes, total_bytes = excluded.total_bytes",
        )
        .bind(&b.host_id)
        .bind(i64::from(b.resolution_s))
        .bind(b.bucket_start)
        .bind(&d.mount_point)
        .bind(sat_i64(d.used_bytes))
        .bind(sat_i64(d.total_bytes))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
