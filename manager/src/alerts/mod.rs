//! Health tests and alert rules: expressions over the metrics the manager holds, evaluated
//! in memory every cycle.

pub mod catalog;
pub mod engine;
pub mod expr;
pub mod health;
pub mod live;
pub mod state;

pub use live::Alerts;

/// Metric name prefixes Drover's agents and manager produce (docs/metrics.md): a rule may name
/// one of these before any series of it exists.
const CATALOGUE_PREFIXES: [&str; 5] = ["host_", "role_", "redis_", "zookeeper_", "nginx_"];

/// Whether `name` is in Drover's metric catalogue or is a health series of the engine.
pub fn catalog_knows(name: &str) -> bool {
    engine::HEALTH_METRICS.contains(&name) || CATALOGUE_PREFIXES.iter().any(|p| name.starts_with(p))
}
