//! How the host is doing, sampled for every heartbeat: CPU, memory, load, disk
//! space, network totals and uptime. In a container with a memory limit, memory
//! is the cgroup's usage against its limit.
//!
//! The agent must stay small (under 10 MiB resident when idle), so the collector
//! keeps its sysinfo objects between samples and refreshes only what a sample
//! reports: never the process list.

use sysinfo::{DiskRefreshKind, Disks, MemoryRefreshKind, Networks, System};

use crate::facts::real_filesystems;

/// One sample of host metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Whole-host CPU use since the previous sample, 0..=100.
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    /// Space on the real filesystems, as in [`crate::facts::HostFacts::disks`].
    pub disks: Vec<DiskUsage>,
    /// Bytes received over all non-loopback interfaces since boot.
    pub network_rx_bytes: u64,
    /// Bytes sent over all non-loopback interfaces since boot.
    pub network_tx_bytes: u64,
    pub uptime_seconds: u64,
}

/// Space used on one filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub mount_point: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// Samples [`Metrics`], reusing its sysinfo state between samples. CPU use is
/// measured between consecutive calls to [`MetricsCollector::sample`] (the first
/// sample measures since [`MetricsCollector::new`]).
pub struct MetricsCollector {
    system: System,
    disks: Disks,
    networks: Networks,
}

impl std::fmt::Debug for MetricsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsCollector { .. }")
    }
}

impl Default for MetricsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsCollector {
    pub fn new() -> Self {
        let mut system = System::new();
        // Sets the baseline the first sample's CPU use is measured from.
        system.refresh_cpu_usage();
        MetricsCollector {
            system,
            disks: Disks::new_with_refreshed_list_specifics(disk_refresh()),
            networks: Networks::new_with_refreshed_list(),
        }
    }

    pub fn sample(&mut self) -> Metrics {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        // Re-reads the mount table, so filesystems mounted later show up.
        self.disks.refresh_specifics(true, disk_refresh());
        self.networks.refresh(true);

        let load = System::load_average();
        let disks = real_filesystems(&self.disks)
            .into_iter()
            .map(|f| DiskUsage {
                used_bytes: f.total_bytes.saturating_sub(f.available_bytes),
                total_bytes: f.total_bytes,
                mount_point: f.mount_point,
            })
            .collect();
        let (mut rx, mut tx) = (0u64, 0u64);
        for (name, data) in self.networks.list() {
            let loopback = name == "lo" || data.ip_networks().iter().any(|n| n.addr.is_loopback());
            if !loopback {
                rx = rx.saturating_add(data.total_received());
                tx = tx.saturating_add(data.total_transmitted());
            }
        }
        let (memory_used_bytes, memory_total_bytes) = self.memory();
        Metrics {
            cpu_percent: clamp_percent(f64::from(self.system.global_cpu_usage())),
            memory_used_bytes,
            memory_total_bytes,
            load1: finite(load.one),
            load5: finite(load.five),
            load15: finite(load.fifteen),
            disks,
            network_rx_bytes: rx,
            network_tx_bytes: tx,
            uptime_seconds: System::uptime(),
        }
    }
}

impl MetricsCollector {
    /// Memory used and total: the cgroup's usage and limit when a limit lower
    /// than the machine's applies (a container's `--memory`), as the host's
    /// `memory_bytes` fact does; the machine's otherwise.
    fn memory(&self) -> (u64, u64) {
        let machine = (self.system.used_memory(), self.system.total_memory());
        if machine.1 == 0 {
            // sysinfo's cgroup_limits() insists on a known total.
            return machine;
        }
        match self.system.cgroup_limits() {
            Some(l) if l.total_memory < machine.1 => (l.total_memory.saturating_sub(l.free_memory), l.total_memory),
            _ => machine,
        }
    }
}

fn disk_refresh() -> DiskRefreshKind {
    DiskRefreshKind::nothing().with_storage()
}

fn clamp_percent(v: f64) -> f64 {
    if v.is_finite() { v.clamp(0.0, 100.0) } else { 0.0 }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() && v >= 0.0 { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_this_machine_are_plausible() {
        let mut collector = MetricsCollector::new();
        // Burn some CPU so the second sample has something to measure.
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let first = collector.sample();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let second = collector.sample();

        for m in [&first, &second] {
            assert!((0.0..=100.0).contains(&m.cpu_percent), "{m:?}");
            assert!(m.memory_total_bytes > 64 * 1024 * 1024, "{m:?}");
            assert!(m.memory_used_bytes > 0 && m.memory_used_bytes <= m.memory_total_bytes, "{m:?}");
            assert!(m.uptime_seconds > 0, "{m:?}");
            assert!(m.load1 >= 0.0 && m.load5 >= 0.0 && m.load15 >= 0.0, "{m:?}");
            let root = m.disks.iter().find(|d| d.mount_point == "/");
            let root = root.unwrap_or_else(|| panic!("no root filesystem in {m:?}"));
            assert!(root.total_bytes > 0 && root.used_bytes <= root.total_bytes, "{m:?}");
        }
        assert!(second.cpu_percent > 0.0, "a busy loop must show as CPU use: {second:?}");
        assert!(second.network_rx_bytes >= first.network_rx_bytes, "totals never go down");
    }

    #[test]
    fn percentages_are_clamped() {
        assert_eq!(clamp_percent(f64::NAN), 0.0);
        assert_eq!(clamp_percent(-1.0), 0.0);
        assert_eq!(clamp_percent(101.0), 100.0);
        assert_eq!(finite(f64::INFINITY), 0.0);
    }
}
