-- Issue 14: diagnostic bundles (POST /api/v1/diagnostics). One row per bundle:
-- its scope and window (unix ms), the command with a step per host, its state
-- (running, ready, partial, failed), the tar.gz's size and file name under
-- DATA_DIR/diagnostics, and the hosts that failed (JSON [{hostname, reason}]).
-- Lists are JSON text.
CREATE TABLE diagnostics (
    id           TEXT PRIMARY KEY,
    cluster      TEXT NOT NULL,
    services     TEXT NOT NULL,
    hosts        TEXT NOT NULL,
    since_ms     BIGINT NOT NULL,
    until_ms     BIGINT NOT NULL,
    max_bytes    BIGINT NOT NULL,
    include      TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    state        TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    command_id   TEXT NOT NULL,
    failed_hosts TEXT NOT NULL,
    file_name    TEXT NOT NULL
);
CREATE INDEX diagnostics_created ON diagnostics (created_at);

-- The redaction rules applied to bundles (GET/PUT /api/v1/settings/redaction):
-- one row (id = 1) holding [{name, pattern}] as JSON; no row: the built-in defaults.
CREATE TABLE redaction_rules (
    id         BIGINT PRIMARY KEY,
    rules      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
