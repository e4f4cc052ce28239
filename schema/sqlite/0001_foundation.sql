-- Foundation schema: users, API tokens, enrollment tokens, hosts, host metrics,
-- events and the audit log. Timestamps are Unix milliseconds (BIGINT) so that
-- the same queries run on SQLite and PostgreSQL.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'admin',
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT
);

CREATE TABLE web_sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    max_uses    BIGINT NOT NULL,
    uses        BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE hosts (
    id                TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL,
    addresses         TEXT NOT NULL DEFAULT '[]',
    kind              TEXT NOT NULL,
    kind_evidence     TEXT NOT NULL DEFAULT '',
    os                TEXT NOT NULL DEFAULT '',
    kernel            TEXT NOT NULL DEFAULT '',
    arch              TEXT NOT NULL DEFAULT '',
    cpu_cores         BIGINT NOT NULL DEFAULT 0,
    memory_bytes      BIGINT NOT NULL DEFAULT 0,
    disks             TEXT NOT NULL DEFAULT '[]',
    agent_version     TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL,
    cert_serial       TEXT NOT NULL,
    enrollment_token  TEXT,
    enrolled_at       BIGINT NOT NULL,
    last_heartbeat_at BIGINT,
    latest_metrics    TEXT,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    decommissioned_at BIGINT,
    decommissioned_by TEXT
);
CREATE INDEX hosts_status ON hosts(status);
CREATE INDEX hosts_hostname ON hosts(hostname);

CREATE TABLE host_labels (
    host_id TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (host_id, key)
);
CREATE INDEX host_labels_kv ON host_labels(key, value);

-- One row per host and bucket. resolution_s is 60 (minute averages) or 3600
-- (hourly averages rolled up from minutes).
CREATE TABLE host_metrics (
    host_id           TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    resolution_s      BIGINT NOT NULL,
    bucket_start      BIGINT NOT NULL,
    samples           BIGINT NOT NULL,
    cpu_percent       DOUBLE PRECISION NOT NULL,
    memory_used_bytes BIGINT NOT NULL,
    load1             DOUBLE PRECISION NOT NULL,
    disk_used_bytes   BIGINT NOT NULL,
    network_rx_bytes  BIGINT NOT NULL,
    network_tx_bytes  BIGINT NOT NULL,
    PRIMARY KEY (host_id, resolution_s, bucket_start)
);
CREATE INDEX host_metrics_bucket ON host_metrics(resolution_s, bucket_start);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    severity    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX events_object ON events(object_type, object_id);
CREATE INDEX events_at ON events(at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    username    TEXT NOT NULL,
    source      TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    summary     TEXT NOT NULL
);
CREATE INDEX audit_at ON audit_log(at);
CREATE INDEX audit_object ON audit_log(object_type, object_id);
