//! Role metrics: the figures of each role's process and the service metrics
//! its spec's metric sources yield, sent with every heartbeat (`metrics.v1`).
//!
//! - [`process`]: CPU, RSS, threads, open fds of a role's process group, read
//!   from `/proc` when a heartbeat is sent;
//! - collectors: one task per (role, metric source), started by the supervisor
//!   while the role's process runs ([`crate::reconcile::Effect::StartCollectors`]),
//!   each collection bounded by the source's timeout: [`redis`] (`INFO` over
//!   RESP), [`zookeeper`] (`mntr`), [`nginx`] (`stub_status`) and
//!   [`prometheus_text`] (an HTTP endpoint or a command's output);
//! - [`MetricsHub`]: where collectors leave their samples (a bounded buffer
//!   per role, oldest dropped first) and errors, drained into the next
//!   heartbeat by [`MetricsHub::take`].
//!
//! The catalogue of names is docs/metrics.md.

pub mod nginx;
pub mod process;
pub mod prometheus_text;
pub mod redis;
pub mod zookeeper;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::files;
use crate::roles::{MetricSourceKind, RoleStatus};

pub use process::{ProcessSampler, RunningRole};

/// The capability an agent announces in `Hello` when its heartbeats carry
/// role metrics.
pub const CAPABILITY: &str = "metrics.v1";

/// Samples kept of one collection from a Prometheus endpoint or a command.
pub const MAX_SAMPLES_PER_COLLECTION: usize = 500;

/// Samples buffered per role between heartbeats; beyond it the oldest go.
pub const BUFFERED_SAMPLES_PER_ROLE: usize = 1024;

/// Bytes read of an HTTP answer or a command's output.
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// Bytes of a failing command's standard error kept for its error.
const MAX_STDERR: u64 = 2048;

/// One value of a service metric.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    pub name: String,
    pub value: f64,
    /// Names `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub labels: BTreeMap<String, String>,
    pub at_unix_ms: i64,
}

/// Figures of a role's process group at a heartbeat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessMetrics {
    /// CPU use since the previous heartbeat, in percent of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    pub open_fds: u32,
    pub uptime_seconds: u64,
    pub restarts: u32,
    pub last_exit_status: i32,
}

/// What a heartbeat says about one role.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoleMetrics {
    pub role_id: String,
    /// `None` while the role has no running process.
    pub process: Option<ProcessMetrics>,
    /// Collected since the previous heartbeat, oldest first.
    pub samples: Vec<Sample>,
    /// Why collections of the role's sources fail, each naming its source;
    /// empty when all answered.
    pub collect_error: String,
}

pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How errors name a source: `redis 127.0.0.1:6379`, `command /bin/x`.
pub fn describe(kind: &MetricSourceKind) -> String {
    match kind {
        MetricSourceKind::Redis { host, port, .. } => format!("redis {}:{port}", host_or_loopback(host)),
        MetricSourceKind::Zookeeper { host, port } => format!("zookeeper {}:{port}", host_or_loopback(host)),
        MetricSourceKind::NginxStubStatus { url } => format!("nginx stub_status {url}"),
        MetricSourceKind::Prometheus { url } => format!("prometheus {url}"),
        MetricSourceKind::Command { program, .. } => format!("command {program}"),
        MetricSourceKind::Unknown => "unknown source".into(),
    }
}

fn host_or_loopback(host: &str) -> &str {
    if host.is_empty() { "127.0.0.1" } else { host }
}

/// `${ROLE_DIR}` and `${PARCELS_ROOT}` replaced in every text field of a
/// source, as in health checks.
pub fn with_placeholders(kind: MetricSourceKind, role_dir: &Path, parcels_root: Option<&Path>) -> MetricSourceKind {
    let sub = |t: String| files::substitute_all(&t, role_dir, parcels_root);
    match kind {
        MetricSourceKind::Redis { host, port, password } => MetricSourceKind::Redis { host: sub(host), port, password },
        MetricSourceKind::Zookeeper { host, port } => MetricSourceKind::Zookeeper { host: sub(host), port },
        MetricSourceKind::NginxStubStatus { url } => MetricSourceKind::NginxStubStatus { url: sub(url) },
        MetricSourceKind::Prometheus { url } => MetricSourceKind::Prometheus { url: sub(url) },
        MetricSourceKind::Command { program, args } => {
            MetricSourceKind::Command { program: sub(program), args: args.into_iter().map(sub).collect() }
        }
        MetricSourceKind::Unknown => MetricSourceKind::Unknown,
    }
}

/// What a collector keeps between collections.
#[derive(Clone, Debug, Default)]
pub struct SourceState {
    /// nginx: the requests count of the previous collection and its time.
    nginx_requests: Option<(f64, i64)>,
}

/// One collection's samples, and what was wrong though samples came
/// (lines skipped, samples cut).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    pub samples: Vec<Sample>,
    pub warning: Option<String>,
}

/// Collects from `kind` once, within `timeout`. `Err` says why (without
/// naming the source: [`MetricsHub::record`] does).
pub async fn collect(
    kind: &MetricSourceKind,
    timeout: Duration,
    role_dir: &Path,
    state: &mut SourceState,
) -> Result<Collected, String> {
    match tokio::time::timeout(timeout, collect_unbounded(kind, role_dir, state)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
    }
}

async fn collect_unbounded(
    kind: &MetricSourceKind,
    role_dir: &Path,
    state: &mut SourceState,
) -> Result<Collected, String> {
    match kind {
        MetricSourceKind::Redis { host, port, password } => {
            let info = redis::info(host_or_loopback(host), *port, password).await?;
            Ok(Collected { samples: redis::samples(&info, unix_ms_now())?, warning: None })
        }
        MetricSourceKind::Zookeeper { host, port } => {
            let text = zookeeper::mntr(host_or_loopback(host), *port).await?;
            Ok(Collected { samples: zookeeper::samples(&text, unix_ms_now())?, warning: None })
        }
        MetricSourceKind::NginxStubStatus { url } => {
            let page = http_get(url).await?;
            let now = unix_ms_now();
            let status = nginx::parse(&page)?;
            let samples = nginx::samples(&status, now, state.nginx_requests);
            state.nginx_requests = Some((status.requests, now));
            Ok(Collected { samples, warning: None })
        }
        MetricSourceKind::Prometheus { url } => Ok(from_text(&http_get(url).await?)),
        MetricSourceKind::Command { program, args } => Ok(from_text(&run_command(program, args, role_dir).await?)),
        MetricSourceKind::Unknown => Err("unknown metric source kind; upgrade the agent".into()),
    }
}

/// Samples of a Prometheus text, with what was skipped or cut as a warning.
fn from_text(text: &str) -> Collected {
    let parsed = prometheus_text::parse(text, MAX_SAMPLES_PER_COLLECTION, unix_ms_now());
    let mut warnings = Vec::new();
    if parsed.total > parsed.samples.len() {
        warnings.push(format!("{} samples, cut to the first {MAX_SAMPLES_PER_COLLECTION}", parsed.total));
    }
    if parsed.bad_lines > 0 {
        warnings.push(format!("{} unreadable lines skipped ({})", parsed.bad_lines, parsed.errors.join("; ")));
    }
    Collected { samples: parsed.samples, warning: (!warnings.is_empty()).then(|| warnings.join("; ")) }
}

/// The body of a `200` answer to `GET url` over plain HTTP/1.0.
async fn http_get(url: &str) -> Result<String, String> {
    let (host, port, path) = crate::health::parse_http_url(url)?;
    let mut stream = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: drover-agent\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    (&mut stream).take(MAX_BODY).read_to_end(&mut answer).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").or_else(|| text.split_once("\n\n")).unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .filter(|_| status_line.starts_with("HTTP/"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    if status != 200 {
        return Err(format!("answered {}", status_line.split_once(' ').map_or(status_line, |(_, s)| s).trim()));
    }
    if head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    }) {
        return Err("a chunked answer to an HTTP/1.0 request is not supported".into());
    }
    Ok(body.to_owned())
}

/// The standard output of `program args` run in the role directory, when it
/// exits with status 0.
async fn run_command(program: &str, args: &[String], role_dir: &Path) -> Result<String, String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(role_dir)
        .env("ROLE_DIR", role_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run: {e}"))?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err) = tokio::join!(read_bounded(stdout, MAX_BODY), read_bounded(stderr, MAX_STDERR));
    let status = child.wait().await.map_err(|e| format!("wait: {e}"))?;
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        let err = err.trim();
        return Err(if err.is_empty() { status.to_string() } else { format!("{status}: {err}") });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The first `limit` bytes of a pipe; the rest is read and dropped so the
/// writer never blocks.
async fn read_bounded<R: AsyncRead + Unpin>(pipe: Option<R>, limit: u64) -> Vec<u8> {
    let Some(mut pipe) = pipe else { return Vec::new() };
    let mut buf = Vec::new();
    let _ = (&mut pipe).take(limit).read_to_end(&mut buf).await;
    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    buf
}

/// Where collectors leave samples and errors until the next heartbeat takes
/// them, with the role statuses that say which processes run.
#[derive(Debug)]
pub struct MetricsHub {
    statuses: watch::Receiver<Arc<Vec<RoleStatus>>>,
    inner: Mutex<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    buffers: HashMap<String, RoleBuffer>,
    sampler: ProcessSampler,
}

#[derive(Debug, Default)]
struct RoleBuffer {
    samples: VecDeque<Sample>,
    /// By source index: why its last collection failed, naming the source.
    errors: BTreeMap<usize, String>,
    /// Samples dropped since the last heartbeat, the buffer being full.
    dropped: u64,
}

impl MetricsHub {
    pub fn new(statuses: watch::Receiver<Arc<Vec<RoleStatus>>>) -> Self {
        MetricsHub { statuses, inner: Mutex::new(HubInner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        // A collector that panicked mid-record leaves nothing inconsistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The outcome of one collection of source number `index` of `role`.
    pub fn record(&self, role: &str, index: usize, kind: &MetricSourceKind, result: Result<Collected, String>) {
        let mut inner = self.lock();
        let buffer = inner.buffers.entry(role.to_owned()).or_default();
        let (samples, problem) = match result {
            Ok(c) => (c.samples, c.warning),
            Err(e) => (Vec::new(), Some(e)),
        };
        match problem {
            Some(p) => buffer.errors.insert(index, format!("{}: {p}", describe(kind))),
            None => buffer.errors.remove(&index),
        };
        for s in samples {
            if buffer.samples.len() >= BUFFERED_SAMPLES_PER_ROLE {
                buffer.samples.pop_front();
                buffer.dropped += 1;
            }
            buffer.samples.push_back(s);
        }
    }

    /// The role's collectors stopped: their errors no longer hold (samples
    /// already collected still go out with the next heartbeat).
    pub fn sources_stopped(&self, role: &str) {
        if let Some(b) = self.lock().buffers.get_mut(role) {
            b.errors.clear();
        }
    }

    /// A copy of what each role's collectors hold now (samples waiting for
    /// the next heartbeat, and why collections fail), by role id; nothing is
    /// taken (diagnostic bundles).
    pub fn peek(&self) -> BTreeMap<String, (Vec<Sample>, Vec<String>)> {
        self.lock()
            .buffers
            .iter()
            .map(|(role, b)| {
                (role.clone(), (b.samples.iter().cloned().collect(), b.errors.values().cloned().collect()))
            })
            .collect()
    }

    /// One [`RoleMetrics`] per role the supervisor knows: its process's
    /// figures now, and the samples collected since the last call.
    pub fn take(&self) -> Vec<RoleMetrics> {
        let statuses = self.statuses.borrow().clone();
        let running: Vec<RunningRole> = statuses
            .iter()
            .filter(|s| s.pid != 0)
            .map(|s| RunningRole {
                role_id: s.role_id.clone(),
                pid: s.pid,
                started_at_unix_ms: s.started_at_unix_ms,
                restarts: s.restart_count,
                last_exit_status: s.last_exit_status,
            })
            .collect();
        let mut inner = self.lock();
        let mut processes = inner.sampler.sample(&running, unix_ms_now());
        inner.buffers.retain(|role, _| statuses.iter().any(|s| &s.role_id == role));
        statuses
            .iter()
            .map(|s| {
                let mut m = RoleMetrics {
                    role_id: s.role_id.clone(),
                    process: processes.remove(&s.role_id),
                    ..RoleMetrics::default()
                };
                if let Some(b) = inner.buffers.get_mut(&s.role_id) {
                    m.samples = b.samples.drain(..).collect();
                    let mut errors: Vec<String> = b.errors.values().cloned().collect();
                    if b.dropped > 0 {
                        errors.push(format!(
                            "{} samples dropped: more than {BUFFERED_SAMPLES_PER_ROLE} between heartbeats",
                            b.dropped
                        ));
                        b.dropped = 0;
                    }
                    m.collect_error = errors.join("; ");
                }
                m
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
