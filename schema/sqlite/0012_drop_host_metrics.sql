-- Issue 13 follow-up: host metrics live in the metric series (0009) only.
-- The per-host minute and hour buckets of 0001 and 0006 were written beside
-- them and no longer read: GET /api/v1/hosts/{id}/metrics reads the host's
-- series rollups now. Their indexes go with them.
DROP TABLE host_disk_metrics;
DROP TABLE host_metrics;
