-- Issue 10: the host columns every flush writes (a heartbeat's time, the
-- desired and the applied generation) move out of the wide host row (facts,
-- disks, latest metrics: ~650 bytes) into a narrow table of their own. A
-- config change moves two generations of every host it reaches and each
-- agent's report marks it seen; on the wide rows SQLite rewrote ~1,700 pages
-- a change at 10,000 hosts, here about 150. One row per host, made with it.
CREATE TABLE host_live (
    host_id            TEXT PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
    last_heartbeat_at  BIGINT,
    desired_generation BIGINT NOT NULL DEFAULT 1,
    applied_generation BIGINT NOT NULL DEFAULT 0
);
INSERT INTO host_live (host_id, last_heartbeat_at, desired_generation, applied_generation)
    SELECT id, last_heartbeat_at, desired_generation, applied_generation FROM hosts;
ALTER TABLE hosts DROP COLUMN last_heartbeat_at;
ALTER TABLE hosts DROP COLUMN desired_generation;
ALTER TABLE hosts DROP COLUMN applied_generation;
