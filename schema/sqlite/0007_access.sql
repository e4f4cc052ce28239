-- Issue 12: roles granted globally or per cluster, disabled users, API
-- tokens limited to a subset of their user's roles, and the channel and
-- permission of every audit entry.

CREATE TABLE user_grants (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    -- '' for a global grant, else the cluster's name.
    cluster TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, role, cluster)
);
CREATE INDEX user_grants_cluster ON user_grants(cluster);

-- Every existing user was an administrator.
INSERT INTO user_grants (user_id, role, cluster) SELECT id, 'admin', '' FROM users;

ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE users ADD COLUMN last_sign_in_at BIGINT;

-- NULL: the token may do what its user may; else a JSON list of grants, each
-- within the user's.
ALTER TABLE api_tokens ADD COLUMN grants TEXT;

ALTER TABLE audit_log ADD COLUMN via TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN permission TEXT NOT NULL DEFAULT '';
