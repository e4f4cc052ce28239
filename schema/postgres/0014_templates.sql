-- Issue 15: cluster templates (POST /api/v1/templates). Each upload of a name is
-- a new immutable version (1, 2, ...); the document is the validated template as
-- JSON text. Deleting removes versions; nothing else refers to them.
CREATE TABLE templates (
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    description TEXT NOT NULL,
    document    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
