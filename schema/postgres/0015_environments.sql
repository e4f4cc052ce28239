-- Issue 15: environments (POST /api/v1/environments): a template instantiated
-- into the cluster of the same name on containers the Docker provider made
-- for it (provider_hosts whose labels hold cluster=NAME). The owner's hosts
-- count against --env-max-hosts-per-owner; expires_at (NULL: never) is when
-- the manager's reaper tears it down. Sensitive variables are never stored.
CREATE TABLE environments (
    name             TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    template         TEXT NOT NULL,
    template_version BIGINT NOT NULL,
    -- The instantiation command (its latest run).
    command_id       TEXT NOT NULL,
    -- Containers asked for, counted against the owner's limit.
    hosts            BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    expires_at       BIGINT
);
CREATE INDEX environments_owner ON environments(owner);

-- A snapshot of an environment (POST /api/v1/environments/{name}/snapshots):
-- the stored template `snapshot-NAME` it comes back from (its services and
-- configuration at that time, a host group per container with that
-- container's roles), and per container the image it was committed to and
-- the ids its roles had (their data is in the image, under those ids).
CREATE TABLE environment_snapshots (
    name        TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    -- JSON: [{"group", "image", "roles": [{"service", "role_type", "role_id"}]}]
    hosts       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
