//! `drover-loadgen logs`: log search across hosts and diagnostic bundles at
//! scale. One files-only session per saved identity (real TLS, the real
//! protocol, the agent's own log reader and bundle writer), a Redis service
//! with one role on each host, and SIZE_MB MiB of Redis-format log lines in
//! each role's `logs/stdout.log` and its rotated copies. Then:
//!
//! - searches for a rare pattern over the whole window, streamed
//!   (`Accept: text/event-stream`: time to the first match, to the summary)
//!   and as JSON (time to the merged answer), sampling the manager's RSS;
//! - a diagnostic bundle of the first BUNDLE_HOSTS hosts under a byte cap,
//!   timed from the request to its `ready` state, with the manager's RSS.
//!
//! The log files are written once and hard-linked into every role's
//! directory: each agent still opens, reads and matches its own 100 MiB (the
//! page cache holds one copy, as it would hold each host's on its own
//! machine), and the run needs no 10 GiB of disk.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use drover_tests::rest::Rest;
use futures::StreamExt;
use serde_json::{Value, json};

use super::fanout::{FileAgentsRun, RoleSetup, call, create_roles, finish_run, start_run, wait_applied};
use super::parcels::Sampler;
use super::{Cli, SavedIdentity};

const MIB: u64 = 1 << 20;

/// What `drover-loadgen logs` was asked to do.
pub struct LogsOptions {
    pub setup: RoleSetup,
    pub connect_rate: u64,
    pub files_dir: Option<PathBuf>,
    /// Log bytes per host, in MiB.
    pub size_mb: u64,
    /// Hours of log the lines span, ending now.
    pub span_hours: u64,
    /// Searches of each kind (streamed, JSON) to time.
    pub searches: usize,
    /// The regular expression searched for.
    pub pattern: String,
    /// Hosts in the bundle (0: no bundle).
    pub bundle_hosts: usize,
    /// The bundle's cap, in MiB.
    pub bundle_max_mb: u64,
    pub sample_interval: Duration,
    pub keep: bool,
}

pub async fn run(cli: &Cli, ids: &[SavedIdentity], opts: LogsOptions) -> anyhow::Result<()> {
    let n = ids.len();
    if n < 2 {
        bail!("logs needs at least 2 identities (one primary and one replica)");
    }
    let pid = opts.setup.manager_pid;

    // 1. One session per host, announcing roles.v1 and logs.v1; the cluster.
    let cluster = opts.setup.cluster.clone();
    let run = start_run(cli, ids, &cluster, opts.connect_rate, opts.files_dir.clone(), "logs").await?;
    let FileAgentsRun { rest, files_root, stop_tx, agents, sessions, .. } = run;

    // 2. A Redis service with a role on every host, its revision applied.
    let service = "redis-logs";
    let role_ids = create_roles(&rest, ids, &opts.setup, service).await?;
    let base = format!("/api/v1/clusters/{cluster}/services/{service}");
    let svc: Value = rest.get(&base).await?;
    let revision = svc["revision"].as_u64().context("service without revision")?;
    let applied = wait_applied(&rest, &base, revision, n, Duration::from_secs(120)).await?.len();
    if applied < n {
        bail!("only {applied} of {n} roles applied revision {revision}");
    }

    // 3. The log files, written once, linked into every role's directory.
    let t = Instant::now();
    let shared = files_root.join("shared-logs");
    let written = write_log_set(&shared, opts.size_mb * MIB, opts.span_hours)?;
    for (slot, role_id) in role_ids.iter().enumerate() {
        let logs = files_root.join(slot.to_string()).join("roles").join(role_id).join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        for name in &written.files {
            let to = logs.join(name);
            let _ = fs::remove_file(&to);
            fs::hard_link(shared.join(name), &to).with_context(|| format!("link {}", to.display()))?;
        }
    }
    println!("logs.bytes_per_host_mib       {:.1}", written.bytes as f64 / MIB as f64);
    println!("logs.lines_per_host           {}", written.lines);
    println!("logs.needles_per_host         {}", written.needles);
    println!("logs.files_per_host           {}", written.files.len());
    println!("logs.write_seconds            {:.1}", t.elapsed().as_secs_f64());

    // 4. Searches over every host's whole window.
    let query = format!(
        "/api/v1/logs/search?cluster={cluster}&service={service}&since={}h&limit=1000&timeout=60s&q={}",
        opts.span_hours + 1,
        urlencode(&opts.pattern)
    );
    let expected = written.needles * n as u64;
    let mut failed = 0usize;
    for i in 1..=opts.searches {
        let sampler = Sampler::start(pid, opts.sample_interval)?;
        let s = streamed_search(&rest, &query).await?;
        let samples = sampler.stop().await?;
        println!("logs.search{i}.stream_first_match_ms   {:.0}", s.first_match.as_secs_f64() * 1000.0);
        println!("logs.search{i}.stream_whole_ms         {:.0}", s.whole.as_secs_f64() * 1000.0);
        println!("logs.search{i}.stream_matches          {} (expected {expected})", s.matches);
        println!("logs.search{i}.stream_hosts_answered   {}/{n}", s.answered);
        println!("logs.search{i}.stream_scanned_mib      {:.0}", s.scanned as f64 / MIB as f64);
        println!(
            "logs.search{i}.stream_scan_mib_per_s   {:.0}",
            s.scanned as f64 / MIB as f64 / s.whole.as_secs_f64().max(1e-3)
        );
        samples.print(&format!("logs.search{i}.stream_manager"));
        if s.answered < n || s.matches < expected {
            failed += 1;
        }

        let sampler = Sampler::start(pid, opts.sample_interval)?;
        let t = Instant::now();
        let answer: Value = call(&rest, reqwest::Method::GET, &query, Value::Null, 200).await?;
        let took = t.elapsed();
        let samples = sampler.stop().await?;
        let hosts = answer["hosts"].as_array().context("search answer without hosts")?;
        let answered = hosts.iter().filter(|h| matches!(h["status"].as_str(), Some("answered"))).count();
        println!("logs.search{i}.json_whole_ms           {:.0}", took.as_secs_f64() * 1000.0);
        println!(
            "logs.search{i}.json_matches            {} kept (limit 1000), truncated {}",
            answer["matches"].as_array().map_or(0, Vec::len),
            answer["truncated"]
        );
        println!("logs.search{i}.json_hosts_answered     {answered}/{n}");
        samples.print(&format!("logs.search{i}.json_manager"));
        if answered < n {
            failed += 1;
        }
    }

    // 5. A diagnostic bundle of the first hosts, under a cap.
    let mut bundle_failed = false;
    if opts.bundle_hosts > 0 {
        let hosts: Vec<String> = ids.iter().take(opts.bundle_hosts).map(|i| i.host_id.clone()).collect();
        let body = json!({
            "cluster": cluster,
            "hosts": hosts,
            "since": format!("{}h", opts.span_hours + 1),
            "max_bytes": opts.bundle_max_mb * MIB,
        });
        let sampler = Sampler::start(pid, opts.sample_interval)?;
        let t = Instant::now();
        let bundle = call(&rest, reqwest::Method::POST, "/api/v1/diagnostics", body, 202).await?;
        let id = bundle["id"].as_str().context("bundle without id")?.to_owned();
        let done = loop {
            let b: Value = rest.get(&format!("/api/v1/diagnostics/{id}")).await?;
            if b["state"] != "running" {
                break b;
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("bundle {id} still running after 10 min");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let took = t.elapsed();
        let samples = sampler.stop().await?;
        let bytes = download(&rest, &format!("/api/v1/diagnostics/{id}/download")).await?;
        let downloaded = bytes.len() as u64;
        let contents = bundle_contents(&bytes)?;
        println!("logs.bundle.hosts             {}", opts.bundle_hosts);
        println!("logs.bundle.cap_mib           {}", opts.bundle_max_mb);
        println!("logs.bundle.state             {}", done["state"]);
        println!("logs.bundle.seconds           {:.1}", took.as_secs_f64());
        println!("logs.bundle.size_mib          {:.1}", done["size_bytes"].as_u64().unwrap_or(0) as f64 / MIB as f64);
        println!("logs.bundle.downloaded_mib    {:.1}", downloaded as f64 / MIB as f64);
        println!("logs.bundle.failed_hosts      {}", done["failed_hosts"]);
        println!("logs.bundle.entries           {}", contents.entries);
        println!("logs.bundle.unpacked_mib      {:.1}", contents.bytes as f64 / MIB as f64);
        println!("logs.bundle.log_files         {}", contents.log_files);
        println!("logs.bundle.log_mib           {:.1}", contents.log_bytes as f64 / MIB as f64);
        samples.print("logs.bundle.manager");
        bundle_failed = done["state"] != "ready" || downloaded > opts.bundle_max_mb * MIB;
        let _ = rest.raw(reqwest::Method::DELETE, &format!("/api/v1/diagnostics/{id}"), None).await;
    }
    println!("logs.disconnects              {}", agents.disconnects.load(Ordering::Relaxed));

    let paths = [base.clone(), format!("/api/v1/clusters/{cluster}")];
    finish_run(&rest, if opts.keep { &[] } else { &paths }, stop_tx, sessions).await?;
    if failed > 0 || bundle_failed {
        bail!("{failed} searches missed hosts or matches; bundle failed: {bundle_failed}");
    }
    Ok(())
}

/// What a streamed search gave.
struct Streamed {
    first_match: Duration,
    whole: Duration,
    matches: u64,
    answered: usize,
    scanned: u64,
}

/// Runs a search as server-sent events, timing the first `event: match` and
/// the `event: summary` that ends it.
async fn streamed_search(rest: &Rest, query: &str) -> anyhow::Result<Streamed> {
    let t = Instant::now();
    let resp = rest.request(reqwest::Method::GET, query).header("accept", "text/event-stream").send().await?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!("GET {query}: HTTP {status}: {}", resp.text().await.unwrap_or_default());
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Streamed { first_match: Duration::ZERO, whole: Duration::ZERO, matches: 0, answered: 0, scanned: 0 };
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let kind = text.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim);
            let data: String = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
            match kind {
                Some("match") => {
                    if out.matches == 0 {
                        out.first_match = t.elapsed();
                    }
                    out.matches += 1;
                }
                Some("summary") => {
                    out.whole = t.elapsed();
                    let summary: Value = serde_json::from_str(&data).context("summary event")?;
                    let hosts = summary["hosts"].as_array().context("summary without hosts")?;
                    out.answered = hosts.iter().filter(|h| h["status"] == "answered").count();
                    out.scanned = hosts.iter().filter_map(|h| h["scanned_bytes"].as_u64()).sum();
                    return Ok(out);
                }
                _ => {}
            }
        }
    }
    bail!("the search stream ended without its summary after {} matches", out.matches)
}

/// A download, read as a stream.
async fn download(rest: &Rest, path: &str) -> anyhow::Result<Vec<u8>> {
    let resp = rest.request(reqwest::Method::GET, path).send().await?;
    if !resp.status().is_success() {
        bail!("GET {path}: HTTP {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// What a bundle holds.
struct Contents {
    entries: usize,
    bytes: u64,
    log_files: usize,
    log_bytes: u64,
}

/// Reads a bundle's tar.gz: its entries, their bytes, and the role log files among them.
fn bundle_contents(gz: &[u8]) -> anyhow::Result<Contents> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut c = Contents { entries: 0, bytes: 0, log_files: 0, log_bytes: 0 };
    for entry in archive.entries().context("read the bundle")? {
        let entry = entry.context("read a bundle entry")?;
        let path = entry.path()?.display().to_string();
        let size = entry.header().size()?;
        c.entries += 1;
        c.bytes += size;
        if path.contains("/roles/") && path.contains("/logs/") {
            c.log_files += 1;
            c.log_bytes += size;
        }
    }
    Ok(c)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What [`write_log_set`] wrote.
struct LogSet {
    /// Oldest first: `stdout.log.5` .. `stdout.log.1`, `stdout.log`.
    files: Vec<String>,
    bytes: u64,
    lines: u64,
    /// Lines matching the default pattern.
    needles: u64,
}

/// Redis messages as a busy primary writes them (level mark, text).
const MESSAGES: &[(char, &str)] = &[
    ('*', "100 changes in 300 seconds. Saving..."),
    ('*', "Background saving started by pid 4182"),
    ('*', "DB saved on disk"),
    ('*', "Fork CoW for RDB: current 2 MB, peak 2 MB, average 1 MB"),
    ('*', "Background saving terminated with success"),
    ('-', "Accepted 10.0.3.17:51432"),
    ('-', "Client closed connection id=88213 addr=10.0.3.17:51432 laddr=10.0.3.2:6379 fd=12 name= age=4"),
    ('*', "Replica 10.0.3.9:6379 asks for synchronization"),
    ('*', "Partial resynchronization request from 10.0.3.9:6379 accepted. Sending 1874 bytes of backlog"),
    ('#', "WARNING: client id=88214 addr=10.0.3.21:40118 output buffer is near its soft limit"),
    ('*', "Synchronization with replica 10.0.3.9:6379 succeeded"),
    ('-', "DB 0: 182734 keys (41022 volatile) in 262144 slots HT."),
];

/// Writes SIZE bytes of Redis log lines, spread evenly over the last
/// `span_hours`, as a current file and five rotated copies; one line in
/// 5,000 is `Connection with replica ... lost.`
fn write_log_set(dir: &Path, size: u64, span_hours: u64) -> anyhow::Result<LogSet> {
    const COPIES: usize = 5;
    const EVERY: u64 = 5_000;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut files: Vec<String> = (1..=COPIES).rev().map(|k| format!("stdout.log.{k}")).collect();
    files.push("stdout.log".to_owned());
    let per_file = size / files.len() as u64;
    // `4181:M 04 Dec 2026 03:18:39.123 * ` and a message.
    let mean_line = 35 + MESSAGES.iter().map(|(_, t)| t.len() as u64).sum::<u64>() / MESSAGES.len() as u64;
    let total_lines = (size / mean_line).max(1);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let span_ms = (span_hours.max(1) * 3_600_000) as i64;
    let start_ms = now_ms - span_ms;
    let step = span_ms as f64 / total_lines as f64;
    let (mut bytes, mut lines, mut needles) = (0u64, 0u64, 0u64);
    for name in &files {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(dir.join(name))?);
        let mut in_file = 0u64;
        while in_file < per_file {
            let at = start_ms + (lines as f64 * step) as i64;
            let time = chrono::DateTime::from_timestamp_millis(at).context("time")?;
            let stamp = time.format("%d %b %Y %H:%M:%S%.3f");
            let line = if lines % EVERY == EVERY - 1 {
                needles += 1;
                format!("4181:M {stamp} # Connection with replica 10.0.{}.{}:6379 lost.\n", lines % 7, lines % 250)
            } else {
                let (mark, text) = MESSAGES[(lines % MESSAGES.len() as u64) as usize];
                format!("4181:M {stamp} {mark} {text}\n")
            };
            out.write_all(line.as_bytes())?;
            in_file += line.len() as u64;
            lines += 1;
        }
        out.flush()?;
        bytes += in_file;
    }
    Ok(LogSet { files, bytes, lines, needles })
}
