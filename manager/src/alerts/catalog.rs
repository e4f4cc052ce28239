//! The metric names a rule may name before any series of them exists: the catalogue of
//! docs/metrics.md (host, role process, Redis, ZooKeeper and nginx metrics), the health series
//! the engine makes, and whatever the manager holds series of.

use super::engine::HEALTH_METRICS;
use crate::AppState;
use crate::domain::metrics::{HOST_METRICS, ROLE_METRICS};

/// Service metrics the agent's collectors send (docs/metrics.md).
pub const SERVICE_METRICS: [&str; 31] = [
    "redis_commands_processed_total",
    "redis_connected_clients",
    "redis_connected_replicas",
    "redis_instantaneous_ops_per_sec",
    "redis_is_primary",
    "redis_keys",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_master_link_up",
    "redis_maxmemory_bytes",
    "redis_memory_used_ratio",
    "redis_replication_offset_lag_bytes",
    "redis_used_memory_bytes",
    "zookeeper_avg_latency_ms",
    "zookeeper_is_leader",
    "zookeeper_max_latency_ms",
    "zookeeper_mode",
    "zookeeper_num_alive_connections",
    "zookeeper_open_sessions",
    "zookeeper_outstanding_requests",
    "zookeeper_synced_followers",
    "zookeeper_watch_count",
    "zookeeper_znode_count",
    "nginx_accepted_connections_total",
    "nginx_active_connections",
    "nginx_handled_connections_total",
    "nginx_reading",
    "nginx_requests_per_second",
    "nginx_requests_total",
    "nginx_waiting",
    "nginx_writing",
];

/// Whether `name` is in the catalogue or is a health series (no series need exist).
pub fn in_catalogue(name: &str) -> bool {
    HOST_METRICS.contains(&name)
        || ROLE_METRICS.contains(&name)
        || SERVICE_METRICS.contains(&name)
        || HEALTH_METRICS.contains(&name)
}

/// Whether a rule may name metric `name`: catalogued, or some series of it exists.
pub fn known_metric(state: &AppState, name: &str) -> bool {
    in_catalogue(name) || state.registry.metrics.has_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_holds_the_documented_names() {
        let doc = include_str!("../../../docs/metrics.md");
        for name in SERVICE_METRICS.iter().chain(&HOST_METRICS).chain(&ROLE_METRICS) {
            assert!(doc.contains(name), "{name} is not in docs/metrics.md");
        }
        assert!(in_catalogue("host_up"));
        assert!(!in_catalogue("host_nonsense"));
    }
}
