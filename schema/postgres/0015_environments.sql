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
