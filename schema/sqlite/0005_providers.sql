-- Docker provider (#5): the containers this manager created as hosts, so it
-- can list them with the host each became and remove only its own. The host
-- a container became is found through the container id the agent reports
-- (hosts.container_id) and recorded here once seen.

CREATE TABLE provider_hosts (
    -- The container id as the engine names it (64 hex digits).
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    -- Where the container runs, e.g. unix:///var/run/docker.sock.
    engine      TEXT NOT NULL,
    -- SHA-256 of the manager's CA certificate (the drover.owner label).
    owner       TEXT NOT NULL,
    image       TEXT NOT NULL,
    network     TEXT NOT NULL,
    volume      TEXT NOT NULL,
    token_id    TEXT NOT NULL,
    labels      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    host_id     TEXT
);
