//! Times rendering every role of one Redis service (a primary and N-1
//! replicas, each on its own host), as a config change of the manager does
//! before it stores the revision. Prints figures; asserts nothing.
//!
//! `cargo run --release -p drover-service-types --example render_bench -- 10000`

use std::collections::BTreeMap;
use std::time::Instant;

use drover_service_types::config::ConfigValues;
use drover_service_types::descriptor::Catalog;
use drover_service_types::render::{Renderer, RoleInstance, Topology};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let st = Catalog::builtin().expect("built-in service types").get("redis").expect("redis").clone();
    let roles: Vec<RoleInstance> = (0..n)
        .map(|i| {
            let role_type = if i == 0 { "primary" } else { "replica" };
            RoleInstance {
                role_id: format!("role-{i:05}"),
                name: format!("cache-{role_type}-{i}"),
                role_type: role_type.into(),
                group: format!("{role_type}-default"),
                host_id: format!("host-{i:05}"),
                hostname: format!("node-{i:05}"),
                address: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                index: if i == 0 { 0 } else { i as u32 - 1 },
            }
        })
        .collect();
    let topo = Topology {
        cluster: "prod".into(),
        service: "cache".into(),
        roles,
        dependencies: BTreeMap::new(),
        references: BTreeMap::new(),
    };
    let values = ConfigValues::default();
    for run in 1..=3 {
        let started = Instant::now();
        let mut renderer = Renderer::new(&st, &topo, &values).expect("renderer");
        let mut bytes = 0;
        for r in &topo.roles {
            let out = renderer.render(&r.role_id).expect("render");
            bytes += out.files.iter().map(|f| f.content.len()).sum::<usize>();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "render.run {run}: {n} roles in {:.0} ms ({:.1} µs per role, {bytes} bytes of files)",
            secs * 1000.0,
            secs * 1e6 / n as f64
        );
    }
}
