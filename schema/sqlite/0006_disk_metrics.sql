-- Disk use per mount point, bucketed like host_metrics (minute buckets rolled
-- up into hours, same retention): the console charts each mount.
CREATE TABLE host_disk_metrics (
    host_id      TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    resolution_s BIGINT NOT NULL,
    bucket_start BIGINT NOT NULL,
    mount_point  TEXT NOT NULL,
    used_bytes   BIGINT NOT NULL,
    total_bytes  BIGINT NOT NULL,
    PRIMARY KEY (host_id, resolution_s, bucket_start, mount_point)
);
CREATE INDEX host_disk_metrics_bucket ON host_disk_metrics(resolution_s, bucket_start);
