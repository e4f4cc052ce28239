-- Issue 13: every host, role and service metric as series of points.
--
-- A series is a metric name of one entity (a host or a role) with its extra
-- labels (e.g. {"mount":"/"}), as canonical JSON (sorted keys). For role
-- series the role's cluster, service, role name, role type and host name are
-- kept so queries can filter and aggregate by them; host series keep the host
-- name and find their clusters through cluster_hosts when asked.
CREATE TABLE metric_series (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    entity_kind TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    host_id     TEXT NOT NULL,
    cluster     TEXT NOT NULL DEFAULT '',
    service     TEXT NOT NULL DEFAULT '',
    role        TEXT NOT NULL DEFAULT '',
    role_type   TEXT NOT NULL DEFAULT '',
    host        TEXT NOT NULL DEFAULT '',
    labels      TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    UNIQUE (name, entity_kind, entity_id, labels)
);
CREATE INDEX metric_series_name ON metric_series(name);

-- Points at three resolutions, keyed by series and time in whole Unix
-- seconds (the start of the bucket for rollups); no text per point.
CREATE TABLE metric_points_raw (
    series_id INTEGER NOT NULL,
    t         INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, t)
) WITHOUT ROWID;

CREATE TABLE metric_points_1m (
    series_id INTEGER NOT NULL,
    t         INTEGER NOT NULL,
    v_min     REAL NOT NULL,
    v_max     REAL NOT NULL,
    v_sum     REAL NOT NULL,
    v_count   INTEGER NOT NULL,
    v_last    REAL NOT NULL,
    PRIMARY KEY (series_id, t)
) WITHOUT ROWID;

CREATE TABLE metric_points_1h (
    series_id INTEGER NOT NULL,
    t         INTEGER NOT NULL,
    v_min     REAL NOT NULL,
    v_max     REAL NOT NULL,
    v_sum     REAL NOT NULL,
    v_count   INTEGER NOT NULL,
    v_last    REAL NOT NULL,
    PRIMARY KEY (series_id, t)
) WITHOUT ROWID;
