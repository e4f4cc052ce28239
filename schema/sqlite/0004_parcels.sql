-- Parcels (#4): which hosts belong to which cluster, and which parcel
-- versions each cluster wants distributed or active on its hosts.

CREATE TABLE cluster_hosts (
    cluster  TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    host_id  TEXT NOT NULL REFERENCES hosts(id),
    added_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, host_id)
);

CREATE TABLE cluster_parcels (
    cluster      TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    -- 'distributed' or 'active' (at most one active version per name).
    target       TEXT NOT NULL,
    -- When this version last became active (0: never); rollback picks the
    -- most recently active version other than the current one.
    activated_at BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (cluster, name, version)
);
