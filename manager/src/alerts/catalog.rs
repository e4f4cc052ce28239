//! The metric names a rule may name before any series of them exists: the catalogue of
//! docs/metrics.md (host, role process, Redis, ZooKeeper and nginx metrics), the health series
//! the engine makes, and whatever the manager holds series of.

use super::engine::HEALTH_METRICS;
use crate::AppState;
use crate::domain::metrics::{HOST_METRICS, ROLE_METRICS};

/// Service metrics the agent's built-in collectors send (docs/metrics.md): the lists the
/// service types' dashboards are checked against, so both name the same samples.
pub fn service_metrics() -> impl Iterator<Item = &'static str> {
    use drover_service_types::dashboard::{NGINX_SAMPLES, REDIS_SAMPLES, ZOOKEEPER_SAMPLES};
    REDIS_SAMPLES.iter().chain(ZOOKEEPER_SAMPLES).chain(NGINX_SAMPLES).copied()
}

/// Whether `name` is in the catalogue or is a health series (no series need exist).
pub fn in_catalogue(name: &str) -> bool {
    HOST_METRICS.contains(&name)
        || ROLE_METRICS.contains(&name)
        || service_metrics().any(|m| m == name)
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
        for name in service_metrics().chain(HOST_METRICS.iter().copied()).chain(ROLE_METRICS.iter().copied()) {
            assert!(doc.contains(name), "{name} is not in docs/metrics.md");
        }
        assert!(in_catalogue("host_up"));
        assert!(!in_catalogue("host_nonsense"));
    }
}
