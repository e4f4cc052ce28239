//! Metric series and their points (migration 0009).
//!
//! A series row names a metric of one host or role with its labels; points
//! are `(series_id, t, ...)` rows keyed by series and whole Unix seconds in
//! three tables: `metric_points_raw` (every sample), `metric_points_1m` and
//! `metric_points_1h` (min, max, sum, count and last of each minute or hour).
//! The registry's flusher writes raw points in batches; rollups recompute
//! whole buckets from the finer table, so running one twice, or late, gives
//! the same rows.

use drover_api::metrics::Stat;

use super::{Backend, Result, Store, get};

/// A series as stored. `labels` is the canonical JSON of the extra labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRec {
    pub id: i64,
    pub name: String,
    /// `host` or `role`.
    pub entity_kind: String,
    pub entity_id: String,
    pub host_id: String,
    pub cluster: String,
    pub service: String,
    pub role: String,
    pub role_type: String,
    /// The host name.
    pub host: String,
    pub labels: String,
    pub created_at: i64,
}

/// One point of a resolution: a raw point has min = max = sum = last and
/// count 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRec {
    pub series_id: i64,
    /// Unix seconds (the bucket start of a rollup).
    pub t: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: i64,
    pub last: f64,
}

/// One group's step across its series (see [`Store::group_steps`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupStep {
    pub group: u32,
    /// The step's start, Unix seconds.
    pub t: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// How many series had a value in the step.
    pub n: i64,
}

/// The point tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointTable {
    Raw,
    Minute,
    Hour,
}

impl PointTable {
    /// How many seconds one row covers (raw points: one per second at most).
    fn seconds(self) -> i64 {
        match self {
            PointTable::Raw => 1,
            PointTable::Minute => 60,
            PointTable::Hour => 3600,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PointTable::Raw => "metric_points_raw",
            PointTable::Minute => "metric_points_1m",
            PointTable::Hour => "metric_points_1h",
        }
    }
}

const SERIES_COLUMNS: &str =
    "id, name, entity_kind, entity_id, host_id, cluster, service, role, role_type, host, labels, created_at";

fn series_from_row(r: &sqlx::any::AnyRow) -> Result<SeriesRec> {
    Ok(SeriesRec {
        id: get(r, "id")?,
        name: get(r, "name")?,
        entity_kind: get(r, "entity_kind")?,
        entity_id: get(r, "entity_id")?,
        host_id: get(r, "host_id")?,
        cluster: get(r, "cluster")?,
        service: get(r, "service")?,
        role: get(r, "role")?,
        role_type: get(r, "role_type")?,
        host: get(r, "host")?,
        labels: get(r, "labels")?,
        created_at: get(r, "created_at")?,
    })
}

/// Series ids per `IN (...)` list.
const IDS_PER_STATEMENT: usize = super::BATCH_ROWS;

impl Store {
    /// Every series.
    pub async fn all_series(&self) -> Result<Vec<SeriesRec>> {
        let mut all = Vec::new();
        self.each_series(|r| all.push(r)).await?;
        Ok(all)
    }

    /// Hands every series to `each`, in id order, one row at a time: the
    /// registry builds its index at start-up from 100,000s of series
    /// without holding them all as rows and records first.
    pub async fn each_series(&self, mut each: impl FnMut(SeriesRec)) -> Result<()> {
        use futures::TryStreamExt;
        let sql = format!("SELECT {SERIES_COLUMNS} FROM metric_series ORDER BY id");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            each(series_from_row(&row)?);
        }
        Ok(())
    }

    /// Creates the series that do not exist yet and refreshes the attributes
    /// (cluster, service, role, role type, host name) of those that do;
    /// returns their ids in order. `id` of the input is ignored.
    pub async fn ensure_series(&self, series: &[SeriesRec]) -> Result<Vec<i64>> {
        use std::collections::HashMap;
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let key =
            |name: &str, kind: &str, entity: &str, labels: &str| format!("{name}\u{0}{kind}\u{0}{entity}\u{0}{labels}");
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(series.len());
        let mut tx = self.pool.begin().await?;
        // 11 columns: 500 rows stay under both backends' parameter limits.
        for chunk in series.chunks(super::BATCH_ROWS) {
            // One row per key: PostgreSQL refuses to update a row twice in
            // one statement.
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<&SeriesRec> =
                chunk.iter().filter(|s| seen.insert(key(&s.name, &s.entity_kind, &s.entity_id, &s.labels))).collect();
            let sql = format!(
                "INSERT INTO metric_series (name, entity_kind, entity_id, host_id, cluster, service, role, role_type, \
                 host, labels, created_at) VALUES {} \
                 ON CONFLICT (name, entity_kind, entity_id, labels) DO UPDATE SET host_id = excluded.host_id, \
                 cluster = excluded.cluster, service = excluded.service, role = excluded.role, \
                 role_type = excluded.role_type, host = excluded.host \
                 RETURNING id, name, entity_kind, entity_id, labels",
                super::values_placeholders(self.backend, rows.len(), 11)
            );
            let mut q = super::batch_query(&sql, rows.len());
            for s in &rows {
                q = q
                    .bind(&s.name)
                    .bind(&s.entity_kind)
                    .bind(&s.entity_id)
                    .bind(&s.host_id)
                    .bind(&s.cluster)
                    .bind(&s.service)
                    .bind(&s.role)
                    .bind(&s.role_type)
                    .bind(&s.host)
                    .bind(&s.labels)
                    .bind(s.created_at);
            }
            for r in q.fetch_all(&mut *tx).await? {
                let k = key(
                    &get::<String>(&r, "name")?,
                    &get::<String>(&r, "entity_kind")?,
                    &get::<String>(&r, "entity_id")?,
                    &get::<String>(&r, "labels")?,
                );
                ids.insert(k, get(&r, "id")?);
            }
        }
        tx.commit().await?;
        series
            .iter()
            .map(|s| {
                ids.get(&key(&s.name, &s.entity_kind, &s.entity_id, &s.labels)).copied().ok_or_else(|| {
                    super::StoreError::corrupt("metric_series", format!("no id returned for series {}", s.name))
                })
            })
            .collect()
    }

    /// Writes raw points `(series_id, t seconds, value)` in multi-row
    /// statements, one transaction; a point at the same second of the same
    /// series replaces the earlier one (also within `points`: the last wins).
    pub async fn insert_points(&self, points: &[(i64, i64, f64)]) -> Result<u64> {
        if points.is_empty() {
            return Ok(0);
        }
        // One row per key: PostgreSQL refuses to update a row twice in one
        // statement.
        let mut sorted: Vec<(usize, &(i64, i64, f64))> = points.iter().enumerate().collect();
        sorted.sort_by_key(|(i, p)| (p.0, p.1, *i));
        let mut rows: Vec<(i64, i64, f64)> = Vec::with_capacity(points.len());
        for (_, p) in sorted {
            match rows.last_mut() {
                Some(last) if last.0 == p.0 && last.1 == p.1 => *last = *p,
                _ => rows.push(*p),
            }
        }
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(super::BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO metric_points_raw (series_id, t, value) VALUES {} \
                 ON CONFLICT (series_id, t) DO UPDATE SET value = excluded.value",
                super::values_placeholders(self.backend, chunk.len(), 3)
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for (id, t, v) in chunk {
                q = q.bind(*id).bind(*t).bind(*v);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Writes rollup points as they are (tests, imports).
    pub async fn insert_rollup_points(&self, table: PointTable, points: &[PointRec]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in points.chunks(super::BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO {} (series_id, t, v_min, v_max, v_sum, v_count, v_last) VALUES {} \
                 ON CONFLICT (series_id, t) DO UPDATE SET v_min = excluded.v_min, v_max = excluded.v_max, \
                 v_sum = excluded.v_sum, v_count = excluded.v_count, v_last = excluded.v_last",
                table.name(),
                super::values_placeholders(self.backend, chunk.len(), 7)
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for p in chunk {
                q = q.bind(p.series_id).bind(p.t).bind(p.min).bind(p.max).bind(p.sum).bind(p.count).bind(p.last);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Recomputes the minute rollups of the minutes in `[from, to)` (Unix
    /// seconds) from the raw points; returns the rows written. Series by
    /// series (500 a statement), so each statement walks the primary key
    /// instead of the whole table.
    pub async fn rollup_minutes(&self, from: i64, to: i64) -> Result<u64> {
        let from = from - from.rem_euclid(60);
        self.rollup_by_series(|filter| {
            format!(
                "INSERT INTO metric_points_1m (series_id, t, v_min, v_max, v_sum, v_count, v_last) \
                 SELECT g.series_id, g.b, g.mn, g.mx, g.s, g.c, r.value FROM \
                 (SELECT series_id, (t / 60) * 60 AS b, MIN(value) AS mn, MAX(value) AS mx, SUM(value) AS s, \
                  COUNT(*) AS c, MAX(t) AS lt FROM metric_points_raw WHERE {filter} AND t >= {from} AND t < {to} \
                  GROUP BY series_id, (t / 60) * 60) AS g \
                 JOIN metric_points_raw AS r ON r.series_id = g.series_id AND r.t = g.lt WHERE 1 = 1 \
                 ON CONFLICT (series_id, t) DO UPDATE SET v_min = excluded.v_min, v_max = excluded.v_max, \
                 v_sum = excluded.v_sum, v_count = excluded.v_count, v_last = excluded.v_last"
            )
        })
        .await
    }

    /// Recomputes the hour rollups of the hours in `[from, to)` (Unix
    /// seconds) from the minute rollups; returns the rows written. Series by
    /// series, as [`Store::rollup_minutes`].
    pub async fn rollup_hours(&self, from: i64, to: i64) -> Result<u64> {
        let from = from - from.rem_euclid(3600);
        self.rollup_by_series(|filter| {
            format!(
                "INSERT INTO metric_points_1h (series_id, t, v_min, v_max, v_sum, v_count, v_last) \
                 SELECT g.series_id, g.b, g.mn, g.mx, g.s, g.c, m.v_last FROM \
                 (SELECT series_id, (t / 3600) * 3600 AS b, MIN(v_min) AS mn, MAX(v_max) AS mx, SUM(v_sum) AS s, \
                  CAST(SUM(v_count) AS BIGINT) AS c, MAX(t) AS lt FROM metric_points_1m \
                  WHERE {filter} AND t >= {from} AND t < {to} GROUP BY series_id, (t / 3600) * 3600) AS g \
                 JOIN metric_points_1m AS m ON m.series_id = g.series_id AND m.t = g.lt WHERE 1 = 1 \
                 ON CONFLICT (series_id, t) DO UPDATE SET v_min = excluded.v_min, v_max = excluded.v_max, \
                 v_sum = excluded.v_sum, v_count = excluded.v_count, v_last = excluded.v_last"
            )
        })
        .await
    }

    /// Runs the statement `sql(filter)` once per 500 series, `filter` being
    /// `series_id IN (...)` with their ids bound; returns the rows written.
    async fn rollup_by_series(&self, sql: impl Fn(&str) -> String) -> Result<u64> {
        let ids = self.series_ids().await?;
        let mut written = 0;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = sql(&format!("series_id IN ({})", super::list_placeholders(self.backend, chunk.len())));
            let mut q = super::batch_query(&sql, chunk.len());
            for id in chunk {
                q = q.bind(*id);
            }
            written += q.execute(&self.pool).await?.rows_affected();
        }
        Ok(written)
    }

    async fn series_ids(&self) -> Result<Vec<i64>> {
        sqlx::query("SELECT id FROM metric_series ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| get(r, "id"))
            .collect()
    }

    /// Deletes the points of `table` older than `before` (Unix seconds),
    /// series by series so each delete walks the primary key.
    pub async fn prune_points(&self, table: PointTable, before: i64) -> Result<u64> {
        let ids = self.series_ids().await?;
        let mut deleted = 0;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM {} WHERE series_id IN ({}) AND t < {before}",
                table.name(),
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for id in chunk {
                q = q.bind(*id);
            }
            deleted += q.execute(&self.pool).await?.rows_affected();
        }
        Ok(deleted)
    }

    /// The points of `series` in `[from, to)` (Unix seconds), by series and
    /// time.
    pub async fn points(&self, table: PointTable, series: &[i64], from: i64, to: i64) -> Result<Vec<PointRec>> {
        let mut out = Vec::new();
        let columns = match table {
            PointTable::Raw => {
                "series_id, t, value AS v_min, value AS v_max, value AS v_sum, 1 AS v_count, \
                                value AS v_last"
            }
            _ => "series_id, t, v_min, v_max, v_sum, v_count, v_last",
        };
        for chunk in series.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {columns} FROM {} WHERE series_id IN ({}) AND t >= {from} AND t < {to} ORDER BY series_id, t",
                table.name(),
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(PointRec {
                    series_id: get(&r, "series_id")?,
                    t: get(&r, "t")?,
                    min: get(&r, "v_min")?,
                    max: get(&r, "v_max")?,
                    sum: get(&r, "v_sum")?,
                    count: match self.backend {
                        // `1 AS v_count` is an INT4 on PostgreSQL.
                        Backend::Postgres if table == PointTable::Raw => i64::from(get::<i32>(&r, "v_count")?),
                        _ => get(&r, "v_count")?,
                    },
                    last: get(&r, "v_last")?,
                });
            }
        }
        Ok(out)
    }

    /// The value of `stat` over each step of `step` seconds (steps start at
    /// multiples of `step`) of each of `series` in `[from, to)` (Unix
    /// seconds), computed by the database: `(series_id, step start, value)`,
    /// by series and time.
    pub async fn series_steps(
        &self,
        table: PointTable,
        series: &[i64],
        from: i64,
        to: i64,
        step: i64,
        stat: Stat,
    ) -> Result<Vec<(i64, i64, f64)>> {
        let mut out = Vec::new();
        for chunk in series.chunks(IDS_PER_STATEMENT) {
            let filter = format!("p.series_id IN ({})", super::list_placeholders(self.backend, chunk.len()));
            let sql = format!("{} ORDER BY sid, b", per_step_sql(table, &filter, from, to, step, stat));
            let mut q = super::batch_query(&sql, chunk.len());
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push((get(&r, "sid")?, get(&r, "b")?, get(&r, "v")?));
            }
        }
        Ok(out)
    }

    /// Like [`Store::series_steps`], then across the series of each group
    /// (`(series_id, group)` pairs): per group and step the sum, minimum,
    /// maximum and number of the series' step values. A group spread over
    /// several statements comes back in several rows; add them up.
    pub async fn group_steps(
        &self,
        table: PointTable,
        series: &[(i64, u32)],
        from: i64,
        to: i64,
        step: i64,
        stat: Stat,
    ) -> Result<Vec<GroupStep>> {
        let mut out = Vec::new();
        for chunk in series.chunks(IDS_PER_STATEMENT) {
            let inner = per_step_sql(table, "p.series_id IN (SELECT sid FROM g)", from, to, step, stat);
            let sql = format!(
                "WITH g(sid, grp) AS (VALUES {}) \
                 SELECT g.grp AS grp, i.b AS b, SUM(i.v) AS s, MIN(i.v) AS mn, MAX(i.v) AS mx, COUNT(*) AS n \
                 FROM ({inner}) AS i JOIN g ON g.sid = i.sid GROUP BY g.grp, i.b",
                super::values_placeholders(self.backend, chunk.len(), 2)
            );
            let mut q = super::batch_query(&sql, chunk.len());
            for (id, group) in chunk {
                q = q.bind(*id).bind(i64::from(*group));
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(GroupStep {
                    group: u32::try_from(get::<i64>(&r, "grp")?)
                        .map_err(|e| super::StoreError::corrupt("group_steps", e))?,
                    t: get(&r, "b")?,
                    sum: get(&r, "s")?,
                    min: get(&r, "mn")?,
                    max: get(&r, "mx")?,
                    n: get(&r, "n")?,
                });
            }
        }
        Ok(out)
    }

    /// The bytes the metric tables take on disk with their indexes, by
    /// table (SQLite: the `dbstat` table; PostgreSQL:
    /// `pg_total_relation_size`), for benchmarks and capacity planning.
    pub async fn metric_table_bytes(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for table in ["metric_series", "metric_points_raw", "metric_points_1m", "metric_points_1h"] {
            let sql = match self.backend {
                Backend::Sqlite => format!(
                    "SELECT CAST(COALESCE(SUM(pgsize), 0) AS BIGINT) AS n FROM dbstat \
                     WHERE name = '{table}' OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = '{table}')"
                ),
                Backend::Postgres => format!("SELECT CAST(pg_total_relation_size('{table}') AS BIGINT) AS n"),
            };
            let row = sqlx::query(&sql).fetch_one(&self.pool).await?;
            out.push((table.to_owned(), get::<i64>(&row, "n")?.max(0) as u64));
        }
        Ok(out)
    }

    /// How many points `table` holds (tests and benchmarks).
    pub async fn point_count(&self, table: PointTable) -> Result<u64> {
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {}", table.name())).fetch_one(&self.pool).await?;
        Ok(get::<i64>(&row, "n")? as u64)
    }

    /// The `(cluster, host_id)` memberships of `hosts`.
    pub async fn clusters_of_hosts(&self, hosts: &[&str]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in hosts.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT cluster, host_id FROM cluster_hosts WHERE host_id IN ({}) ORDER BY cluster, host_id",
                super::list_placeholders(self.backend, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for h in chunk {
                q = q.bind(*h);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push((get(&r, "cluster")?, get(&r, "host_id")?));
            }
        }
        Ok(out)
    }

    /// Every `(cluster, host_id)` membership.
    pub async fn cluster_members(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT cluster, host_id FROM cluster_hosts ORDER BY cluster, host_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((get(r, "cluster")?, get(r, "host_id")?))).collect()
    }
}

/// `SELECT sid, b, v`: the value of `stat` per series and step of the points
/// of `table` that `filter` (over `p`) picks in `[from, to)`.
fn per_step_sql(table: PointTable, filter: &str, from: i64, to: i64, step: i64, stat: Stat) -> String {
    let raw = table == PointTable::Raw;
    let (min, max, sum, count, last) = if raw {
        ("p.value", "p.value", "p.value", "1", "value")
    } else {
        ("p.v_min", "p.v_max", "p.v_sum", "p.v_count", "v_last")
    };
    let name = table.name();
    let step = step.max(1);
    if step == table.seconds() {
        // One row per series and step: its own value, no grouping.
        let v = match stat {
            Stat::Avg => format!("{sum} / CAST({count} AS DOUBLE PRECISION)"),
            Stat::Min => min.to_owned(),
            Stat::Max => max.to_owned(),
            Stat::Last => format!("p.{last}"),
        };
        return format!(
            "SELECT p.series_id AS sid, p.t AS b, {v} AS v FROM {name} AS p WHERE {filter} AND p.t >= {from} AND p.t < {to}"
        );
    }
    let bucket = format!("(p.t / {step}) * {step}");
    let scope =
        format!("FROM {name} AS p WHERE {filter} AND p.t >= {from} AND p.t < {to} GROUP BY p.series_id, {bucket}");
    match stat {
        Stat::Avg => format!(
            "SELECT p.series_id AS sid, {bucket} AS b, SUM({sum}) / CAST(SUM({count}) AS DOUBLE PRECISION) AS v {scope}"
        ),
        Stat::Min => format!("SELECT p.series_id AS sid, {bucket} AS b, MIN({min}) AS v {scope}"),
        Stat::Max => format!("SELECT p.series_id AS sid, {bucket} AS b, MAX({max}) AS v {scope}"),
        Stat::Last => format!(
            "SELECT x.sid AS sid, x.b AS b, l.{last} AS v FROM \
             (SELECT p.series_id AS sid, {bucket} AS b, MAX(p.t) AS lt {scope}) AS x \
             JOIN {name} AS l ON l.series_id = x.sid AND l.t = x.lt"
        ),
    }
}
