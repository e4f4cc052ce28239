//! Tests of the public API of drover-service-types: descriptors, parameters, config resolution, rendering.

mod config;
mod dashboard;
mod descriptor;
mod metrics;
mod nginx;
mod params;
mod render;

use std::collections::BTreeMap;

use drover_service_types::descriptor::ServiceType;

/// A small valid descriptor; tests splice extra TOML into it.
pub const BASE: &str = r#"
name = "svc"
version = "1"

[[role_types]]
name = "main"
min_instances = 1
max_instances = 3
files = [{ path = "app.conf" }]
[role_types.process]
program = "/bin/app"
args = ["--port", "{{config.port}}"]

[[role_types]]
name = "worker"
start_order = 1
[role_types.process]
program = "/bin/worker"

[[parameters]]
name = "port"
type = "port"
default = 8080
scope = ["main"]
restart = true

[[parameters]]
name = "level"
type = "enum"
values = ["low", "high"]
default = "low"

[[parameters]]
name = "secret"
type = "password"
"#;

pub fn templates(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn base() -> ServiceType {
    ServiceType::parse("test/svc", BASE, &templates(&[("app.conf.hbs", "port={{config.port}}\n")])).unwrap()
}
