//! Shared harness for Drover's end-to-end tests and the load generator: a small
//! REST client, polling with deadlines (never sleeps), locating and supervising
//! the real binaries, and synthetic host facts.

pub mod docker;
pub mod fleet;
pub mod parcels;
pub mod procs;
pub mod resp;
pub mod rest;
pub mod ssh;
pub mod webdriver;
pub mod zk;

use drover_agent::facts::{Disk, HostFacts, HostKind};
use drover_agent::metrics::{DiskUsage, Metrics};

pub use drover_testkit::{eventually, eventually_true};

/// Facts of a made-up host, for synthetic agents.
pub fn synthetic_facts(index: usize) -> HostFacts {
    HostFacts {
        hostname: format!("synthetic-{index:05}"),
        addresses: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            10,
            ((index >> 16) & 255) as u8,
            ((index >> 8) & 255) as u8,
            (index & 255) as u8,
        ))],
        kind: HostKind::Container,
        kind_evidence: "synthetic agent from the load generator".into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0-synthetic".into(),
        arch: std::env::consts::ARCH.into(),
        cpu_cores: 4,
        memory_bytes: 8 << 30,
        machine_cpu_cores: 4,
        machine_memory_bytes: 8 << 30,
        capacity_evidence: "synthetic".into(),
        fqdn: String::new(),
        container_id: String::new(),
        disks: vec![Disk {
            mount_point: "/".into(),
            device: "overlay".into(),
            fs_type: "overlay".into(),
            total_bytes: 100 << 30,
        }],
    }
}

/// Metrics of a made-up host; varies a little with `tick`.
pub fn synthetic_metrics(tick: u64) -> Metrics {
    Metrics {
        cpu_percent: (tick % 100) as f64,
        memory_used_bytes: (2 << 30) + (tick % 1024) * 4096,
        memory_total_bytes: 8 << 30,
        load1: 0.5,
        load5: 0.4,
        load15: 0.3,
        disks: vec![DiskUsage { mount_point: "/".into(), used_bytes: 40 << 30, total_bytes: 100 << 30 }],
        network_rx_bytes: tick * 1000,
        network_tx_bytes: tick * 800,
        uptime_seconds: tick,
    }
}

/// Spawns one synthetic agent session, heartbeating [`synthetic_metrics`], that
/// runs until `stop` turns true (or the manager refuses it for good).
pub fn spawn_synthetic_session(
    config: drover_agent::session::SessionConfig,
    observer: std::sync::Arc<dyn drover_agent::session::SessionObserver>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), drover_agent::error::AgentError>> {
    tokio::spawn(async move {
        let mut tick = 0u64;
        let metrics = move || {
            tick += 1;
            synthetic_metrics(tick)
        };
        drover_agent::session::run(config, metrics, observer, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    })
}

/// Installs a compact test logger once (respects RUST_LOG).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
