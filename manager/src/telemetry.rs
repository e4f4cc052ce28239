//! The manager's own metrics, served at `/metrics` for Prometheus: agent
//! sessions, heartbeats, desired-state pushes and their latency, desired-state
//! resyncs, commands by state, registry flushes, HTTP requests by route, the
//! database pool, the process and the build.
//!
//! One [`Telemetry`] is made at start and kept in `AppState`; its handles are
//! `prometheus-client` metrics (atomics), so the hot paths (a heartbeat, an
//! HTTP request) only add to a counter or a histogram bucket. What is cheaper
//! to read than to track is read at scrape time ([`Telemetry::encode`]):
//! commands by state from the store, the database pool's connections, and the
//! process's figures from `/proc/self` (the standard `process_*` names every
//! Prometheus client library uses, so existing dashboards work).
//!
//! The push latency is measured from the moment a host's new desired state is
//! published in the registry (the change is stored and rendered) to the
//! moment its session has written the `DesiredState` message to the agent's
//! outbound stream.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;

/// `Content-Type` of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text exposition (0.0.4).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The command states a gauge is always exported for (0 when none), so a
/// PromQL rule sees a series before the first command of that state.
const COMMAND_STATES: [&str; 5] = ["pending", "running", "succeeded", "failed", "aborted"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/api/v1/hosts/{id}`), `unmatched` for a path no
    /// route takes: never the raw path, so the label set stays bounded.
    pub route: String,
    pub method: &'static str,
    /// `2xx`, `4xx`...
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Why a desired state was pushed to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTrigger {
    /// The first push of a new session.
    SessionOpen,
    /// The host's desired state changed while its session was open.
    Change,
}

/// The manager's metrics: the registry and a handle on each metric.
pub struct Telemetry {
    registry: Registry,
    sessions_open: Gauge,
    sessions_opened: Counter,
    sessions_closed: Counter,
    heartbeats: Counter,
    pushes: Family<TriggerLabels, Counter>,
    push_latency: Histogram,
    resyncs: Family<ResultLabels, Counter>,
    resync_duration: Histogram,
    commands: Family<StateLabels, Gauge>,
    flush_duration: Histogram,
    flush_rows: Counter,
    flush_failures: Counter,
    http: Family<HttpLabels, Histogram>,
    pool_size: Gauge,
    pool_idle: Gauge,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency buckets from 0.5 ms to about 16 s (a factor of 2 each).
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

fn http_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::default();
        let t = Telemetry {
            sessions_open: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Counter::default(),
            heartbeats: Counter::default(),
            pushes: Family::default(),
            push_latency: Histogram::new(latency_buckets()),
            resyncs: Family::default(),
            // 5 ms to about 82 s: a resync renders every service.
            resync_duration: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            commands: Family::default(),
            flush_duration: Histogram::new(latency_buckets()),
            flush_rows: Counter::default(),
            flush_failures: Counter::default(),
            http: Family::new_with_constructor(http_histogram),
            pool_size: Gauge::default(),
            pool_idle: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("drover_agent_sessions_open", "Agent sessions open now", t.sessions_open.clone());
        r.register("drover_agent_sessions_opened", "Agent sessions opened", t.sessions_opened.clone());
        r.register("drover_agent_sessions_closed", "Agent sessions ended, by either side", t.sessions_closed.clone());
        r.register("drover_agent_heartbeats", "Heartbeats received from agents", t.heartbeats.clone());
        r.register(
            "drover_desired_pushes",
            "Desired states written to agents' sessions, by trigger (session_open or change)",
            t.pushes.clone(),
        );
        r.register_with_unit(
            "drover_desired_push_latency",
            "Time from a host's new desired state being published to its push being written to the agent's stream",
            Unit::Seconds,
            t.push_latency.clone(),
        );
        r.register(
            "drover_desired_resyncs",
            "Periodic re-derivations of every host's desired state, by result (ok, corrected or failed)",
            t.resyncs.clone(),
        );
        r.register_with_unit(
            "drover_desired_resync_duration",
            "Duration of a periodic desired-state resync",
            Unit::Seconds,
            t.resync_duration.clone(),
        );
        r.register("drover_commands", "Commands by state, from the database at scrape time", t.commands.clone());
        r.register_with_unit(
            "drover_registry_flush_duration",
            "Duration of a flush of live host state to the database",
            Unit::Seconds,
            t.flush_duration.clone(),
        );
        r.register("drover_registry_flushed_rows", "Host rows written by registry flushes", t.flush_rows.clone());
        r.register(
            "drover_registry_flush_failures",
            "Registry flushes that failed (retried)",
            t.flush_failures.clone(),
        );
        r.register_with_unit(
            "drover_http_request_duration",
            "HTTP requests (REST API, console, repository) by route template, method and status class",
            Unit::Seconds,
            t.http.clone(),
        );
        r.register(
            "drover_db_pool_connections",
            "Connections the database pool holds (in use and idle)",
            t.pool_size.clone(),
        );
        r.register("drover_db_pool_idle_connections", "Idle connections in the database pool", t.pool_idle.clone());
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("drover_build_info", "The manager's version (always 1)", build);
        for state in COMMAND_STATES {
            t.commands.get_or_create(&StateLabels { state: state.to_owned() }).set(0);
        }
        registry.register_collector(Box::new(ProcessCollector));
        Telemetry { registry, ..t }
    }

    pub fn session_opened(&self) {
        self.sessions_opened.inc();
        self.sessions_open.inc();
    }

    pub fn session_closed(&self) {
        self.sessions_closed.inc();
        self.sessions_open.dec();
    }

    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    /// A desired state written to an agent; `latency` since it was published
    /// (for a change).
    pub fn pushed(&self, trigger: PushTrigger, latency: Option<Duration>) {
        let trigger = match trigger {
            PushTrigger::SessionOpen => "session_open",
            PushTrigger::Change => "change",
        };
        self.pushes.get_or_create(&TriggerLabels { trigger }).inc();
        if let Some(l) = latency {
            self.push_latency.observe(l.as_secs_f64());
        }
    }

    /// A resync ended: `Ok(corrections)` or failed.
    pub fn resynced(&self, took: Duration, corrections: Result<usize, ()>) {
        let result = match corrections {
            Ok(0) => "ok",
            Ok(_) => "corrected",
            Err(()) => "failed",
        };
        self.resyncs.get_or_create(&ResultLabels { result }).inc();
        self.resync_duration.observe(took.as_secs_f64());
    }

    /// A registry flush ended: `Ok(rows written)` or failed.
    pub fn flushed(&self, took: Duration, rows: Result<usize, ()>) {
        self.flush_duration.observe(took.as_secs_f64());
        match rows {
            Ok(n) => {
                self.flush_rows.inc_by(n as u64);
            }
            Err(()) => {
                self.flush_failures.inc();
            }
        }
    }

    /// An HTTP request answered.
    pub fn http_request(&self, labels: &HttpLabels, took: Duration) {
        self.http.get_or_create(labels).observe(took.as_secs_f64());
    }

    /// Reads what is exported at scrape time (commands by state, the
    /// database pool) and encodes every metric: OpenMetrics text when
    /// `openmetrics`, else the Prometheus text format 0.0.4.
    pub async fn encode(&self, store: &Store, openmetrics: bool) -> Result<String, std::fmt::Error> {
        match store.command_counts().await {
            Ok(counts) => {
                for state in COMMAND_STATES {
                    if !counts.iter().any(|(s, _)| s == state) {
                        self.commands.get_or_create(&StateLabels { state: state.to_owned() }).set(0);
                    }
                }
                for (state, n) in counts {
                    self.commands.get_or_create(&StateLabels { state }).set(n);
                }
            }
            // The scrape still answers; the command gauges keep their last values.
            Err(e) => tracing::warn!(error = %e, "could not count commands for /metrics"),
        }
        let (size, idle) = store.pool_stats();
        self.pool_size.set(i64::from(size));
        self.pool_idle.set(idle as i64);
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

/// The HTTP method as a label value: the standard ones, `other` for the
/// rest (a client may send any token).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// `2xx`, `3xx`, `4xx` or `5xx` (`1xx` for informational answers).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The process's resident memory, CPU time, file descriptors, threads and
/// start time, read from `/proc/self` at each scrape (nothing on systems
/// without it).
#[derive(Debug)]
struct ProcessCollector;

/// What `/proc/self` says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: i64,
    pub start_time_seconds: f64,
    pub open_fds: i64,
    pub max_fds: i64,
}

impl ProcessStats {
    /// Reads the figures of the running process, `None` without `/proc`.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
        let mut s = parse_stat(&stat, &statm, &boot, ticks, page)?;
        s.open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as i64).unwrap_or(0);
        s.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Some(s)
    }
}

/// Parses `/proc/self/stat`, `/proc/self/statm` and `/proc/stat` (for the
/// boot time) into figures.
fn parse_stat(stat: &str, statm: &str, proc_stat: &str, ticks_per_second: f64, page_size: u64) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses: the fields that follow start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let boot_time: u64 =
        proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())?;
    let mut pages = statm.split_whitespace().map(|v| v.parse::<u64>().ok());
    let virtual_pages = pages.next().flatten()?;
    let resident_pages = pages.next().flatten()?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        resident_bytes: resident_pages * page_size,
        virtual_bytes: virtual_pages * page_size,
        threads: threads as i64,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / ticks_per_second,
        open_fds: 0,
        max_fds: 0,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = ProcessStats::read() else { return Ok(()) };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, i64); 4] = [
            ("process_resident_memory", "Resident memory size", Some(Unit::Bytes), s.resident_bytes as i64),
            ("process_virtual_memory", "Virtual memory size", Some(Unit::Bytes), s.virtual_bytes as i64),
            ("process_open_fds", "Open file descriptors", None, s.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", None, s.max_fds),
        ];
        for (name, help, unit, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
        }
        let threads = ConstGauge::new(s.threads);
        threads.encode(encoder.encode_descriptor("process_threads", "OS threads", None, threads.metric_type())?)?;
        if let Some(h) = heap_stats() {
            let heap: [(&str, &str, u64); 5] = [
                ("drover_heap_allocated", "Bytes in live heap allocations (the allocator's statistics)", h.allocated),
                ("drover_heap_active", "Bytes in the allocator's pages that hold live allocations", h.active),
                (
                    "drover_heap_resident",
                    "Bytes of the allocator's pages in memory, freed ones not yet returned included",
                    h.resident,
                ),
                ("drover_heap_metadata", "Bytes of the allocator's own bookkeeping", h.metadata),
                (
                    "drover_heap_retained",
                    "Bytes of address space the allocator keeps mapped after returning its pages",
                    h.retained,
                ),
            ];
            for (name, help, value) in heap {
                let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                g.encode(encoder.encode_descriptor(name, help, Some(&Unit::Bytes), g.metric_type())?)?;
            }
        }
        let start = ConstGauge::new(s.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

/// What the memory allocator holds, from its own statistics: live data
/// (`allocated`) against the pages it takes (`active`, `resident`) tells
/// growth of what the manager keeps from fragmentation and freed pages not yet
/// returned. The binary installs the reader ([`set_heap_stats`]) when it runs
/// on jemalloc; without one nothing is exported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeapStats {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub metadata: u64,
    pub retained: u64,
}

static HEAP_STATS: std::sync::OnceLock<fn() -> Option<HeapStats>> = std::sync::OnceLock::new();

/// Installs the reader of the allocator's statistics (once; later calls are
/// ignored).
pub fn set_heap_stats(read: fn() -> Option<HeapStats>) {
    let _ = HEAP_STATS.set(read);
}

/// The allocator's statistics now, when a reader is installed.
pub fn heap_stats() -> Option<HeapStats> {
    HEAP_STATS.get().and_then(|read| read())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_a_command_name_holding_parentheses_and_spaces() {
        let stat = "4242 (drover (mgr) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 12345 \
                    1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat(stat, "2500 500 100 1 0 300 0\n", "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 123.45);
        assert_eq!(s.resident_bytes, 500 * 4096);
        assert_eq!(s.virtual_bytes, 2500 * 4096);
        assert!(parse_stat("garbage", "", "", 100.0, 4096).is_none());
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read().expect("/proc/self");
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.open_fds > 2 && s.max_fds >= s.open_fds, "{s:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0 * 365.0, "{s:?}");
    }

    #[test]
    fn exports_the_allocators_figures_once_a_reader_is_installed() {
        fn fixed() -> Option<HeapStats> {
            Some(HeapStats {
                allocated: 100 << 20,
                active: 110 << 20,
                resident: 130 << 20,
                metadata: 5 << 20,
                retained: 7,
            })
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let encode = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        // Only this test installs a reader.
        let text = encode(&registry);
        assert!(text.contains("process_resident_memory_bytes ") && !text.contains("drover_heap_"), "{text}");
        set_heap_stats(fixed);
        let text = encode(&registry);
        for line in [
            "drover_heap_allocated_bytes 104857600",
            "drover_heap_active_bytes 115343360",
            "drover_heap_resident_bytes 136314880",
            "drover_heap_metadata_bytes 5242880",
            "drover_heap_retained_bytes 7",
            "# TYPE drover_heap_resident_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
