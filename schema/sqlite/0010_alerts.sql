-- Issue 13: the configuration the alert engine reads each cycle, and the
-- history it writes.
--
-- alert_rules holds user rules and overrides of built-in rules (builtin = 1:
-- same name as a rule shipped in code; deleting the row resets it). spec is
-- the rule as written (AlertRuleSpec, JSON).
CREATE TABLE alert_rules (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    builtin    INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- Label matchers (JSON list of {name, op, value}) muting matching alerts
-- between starts_at and ends_at. Expiring a silence sets ends_at to now.
CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    matchers   TEXT NOT NULL,
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX silences_ends_at ON silences(ends_at);

-- Hosts (hostname), services (cluster/service) and clusters in maintenance
-- mode: their alerts are suppressed.
CREATE TABLE maintenance (
    kind    TEXT NOT NULL,
    target  TEXT NOT NULL,
    since   BIGINT NOT NULL,
    set_by  TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, target)
);

-- Every transition of an alert; pruned after --events-retention.
CREATE TABLE alert_history (
    id          INTEGER PRIMARY KEY,
    at          BIGINT NOT NULL,
    rule        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    value       REAL NOT NULL,
    summary     TEXT NOT NULL DEFAULT '',
    suppressed  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alert_history_at ON alert_history(at);
CREATE INDEX alert_history_rule ON alert_history(rule, at);
