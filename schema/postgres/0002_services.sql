-- Services, roles, versioned configuration, observed role state and commands.

ALTER TABLE hosts ADD COLUMN desired_generation BIGINT NOT NULL DEFAULT 1;

CREATE TABLE clusters (
    name       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE services (
    cluster      TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    service_type TEXT NOT NULL,
    -- Latest config revision (revisions start at 1, created with the service).
    revision     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (cluster, name)
);

CREATE TABLE role_groups (
    cluster    TEXT NOT NULL,
    service    TEXT NOT NULL,
    role_type  TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, service, role_type, name),
    FOREIGN KEY (cluster, service) REFERENCES services(cluster, name) ON DELETE CASCADE
);

CREATE TABLE roles (
    id            TEXT PRIMARY KEY,
    cluster       TEXT NOT NULL,
    service       TEXT NOT NULL,
    name          TEXT NOT NULL,
    role_type     TEXT NOT NULL,
    group_name    TEXT NOT NULL,
    host_id       TEXT NOT NULL REFERENCES hosts(id),
    -- Creation order within the role type; the template index (myid = idx + 1).
    idx           BIGINT NOT NULL,
    run_state     TEXT NOT NULL,
    restart_nonce BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    UNIQUE (cluster, service, name),
    FOREIGN KEY (cluster, service) REFERENCES services(cluster, name) ON DELETE CASCADE
);
CREATE INDEX roles_host ON roles(host_id);

-- Immutable: one row per revision with the complete overrides at every level.
CREATE TABLE config_revisions (
    cluster      TEXT NOT NULL,
    service      TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    config       TEXT NOT NULL,
    changed_keys TEXT NOT NULL,
    author       TEXT NOT NULL,
    source       TEXT NOT NULL,
    message      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (cluster, service, revision),
    FOREIGN KEY (cluster, service) REFERENCES services(cluster, name) ON DELETE CASCADE
);

-- Last state an agent reported for each role.
CREATE TABLE role_status (
    role_id          TEXT PRIMARY KEY REFERENCES roles(id) ON DELETE CASCADE,
    state            TEXT NOT NULL,
    health           TEXT NOT NULL,
    pid              BIGINT NOT NULL,
    last_exit_status BIGINT NOT NULL,
    restart_count    BIGINT NOT NULL,
    applied_revision BIGINT NOT NULL,
    running_revision BIGINT NOT NULL,
    restart_nonce    BIGINT NOT NULL,
    file_hashes      TEXT NOT NULL,
    last_error       TEXT NOT NULL,
    last_log_lines   TEXT NOT NULL,
    started_at       BIGINT,
    updated_at       BIGINT NOT NULL
);

-- When each role first reported each revision applied.
CREATE TABLE revision_applied (
    cluster    TEXT NOT NULL,
    service    TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    role_id    TEXT NOT NULL,
    host_id    TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, service, revision, role_id)
);

CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    cluster     TEXT NOT NULL,
    service     TEXT NOT NULL,
    name        TEXT NOT NULL,
    params      TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX commands_service ON commands(cluster, service);

CREATE TABLE command_steps (
    command_id  TEXT NOT NULL REFERENCES commands(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    description TEXT NOT NULL,
    roles       TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (command_id, seq)
);
