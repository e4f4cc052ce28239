-- Issue 5, containers as hosts: more host facts. fqdn and container_id are
-- informational; cpu_cores and memory_bytes already hold the capacity after
-- cgroup limits, machine_* what the whole machine has, capacity_evidence why.
ALTER TABLE hosts ADD COLUMN fqdn TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN container_id TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN machine_cpu_cores BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN machine_memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN capacity_evidence TEXT NOT NULL DEFAULT '';
