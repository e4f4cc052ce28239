//! The host's part of a diagnostic bundle: a tar.gz streamed to the manager
//! in chunks as it is written (never whole in memory), holding, for the roles
//! in scope, their rendered config files as on disk, process state, health,
//! and log lines within the window, plus the host's facts, recent metrics and
//! the agent's own log (see docs/agent.md for the layout).
//!
//! Everything is redacted before it enters the archive: every literal the
//! manager sent (sensitive parameter values) becomes `[REDACTED]`, then every
//! match of each rule (only its `secret` group when it has one). The byte
//! share is counted on the uncompressed tar stream (headers and padding
//! included), so the compressed archive stays below it; files that would pass
//! it are skipped and listed. Logs go last, newest file first; the log that
//! meets the end of the share goes in with its newest lines that fit.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use regex::bytes::Regex;
use serde_json::{Value, json};

use crate::files;
use crate::journal::RoleJournal;
use crate::logs::{self, FileSet, LineParser, ReplyEnd};
use crate::roles::{RoleSpec, RoleStatus};

/// What replaces a secret.
pub const REDACTED: &[u8] = b"[REDACTED]";
/// The manifest's name for the literals' replacements.
pub const SECRET_VALUES: &str = "secret-values";
/// Archive bytes per chunk sent.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Tar's end-of-archive blocks and gzip's framing, kept free of the share.
const RESERVED_BYTES: u64 = 4096;

/// What the manager asked for (`DiagnosticsRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiagnosticsRequest {
    pub request_id: String,
    pub role_ids: Vec<String>,
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    /// 0: no limit.
    pub max_bytes: u64,
    /// Empty: everything.
    pub include: Vec<String>,
    pub secrets: Vec<String>,
    pub rules: Vec<RedactionRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedactionRule {
    pub name: String,
    pub pattern: String,
}

/// What the agent holds about the host and its roles when the request came.
#[derive(Clone, Debug, Default)]
pub struct HostState {
    /// Holds `roles/` and `logs/agent.log`; `None`: no files to read.
    pub data_dir: Option<PathBuf>,
    pub roles: Vec<RoleSpec>,
    pub statuses: Vec<RoleStatus>,
    pub facts: Value,
    pub metrics: Value,
    /// Each role's last exits and health check results, by role id.
    pub journal: HashMap<String, RoleJournal>,
}

/// Replaces secrets in bytes, counting replacements per rule.
#[derive(Debug)]
pub struct Redactor {
    literals: Vec<Vec<u8>>,
    rules: Vec<(String, Regex, bool)>,
    pub counts: BTreeMap<String, u64>,
}

impl Redactor {
    /// Compiles the rules; an error names the bad one.
    pub fn new(secrets: &[String], rules: &[RedactionRule]) -> Result<Redactor, String> {
        let mut literals: Vec<Vec<u8>> =
            secrets.iter().filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect();
        // Longer first, so a secret containing another is replaced whole.
        literals.sort_by_key(|l| std::cmp::Reverse(l.len()));
        literals.dedup();
        let mut compiled = Vec::new();
        for r in rules {
            let re = Regex::new(&r.pattern)
                .map_err(|e| format!("redaction rule {:?}: pattern does not compile: {e}", r.name))?;
            let grouped = re.capture_names().flatten().any(|n| n == "secret");
            compiled.push((r.name.clone(), re, grouped));
        }
        Ok(Redactor { literals, rules: compiled, counts: BTreeMap::new() })
    }

    /// `data` with every secret replaced.
    pub fn redact(&mut self, data: Vec<u8>) -> Vec<u8> {
        let mut data = data;
        for lit in &self.literals {
            let (out, n) = replace_literal(&data, lit);
            if n > 0 {
                *self.counts.entry(SECRET_VALUES.to_owned()).or_default() += n;
                data = out;
            }
        }
        for (name, re, grouped) in &self.rules {
            let mut out = Vec::with_capacity(data.len());
            let mut last = 0;
            let mut n = 0u64;
            for caps in re.captures_iter(&data) {
                let m = if *grouped { caps.name("secret") } else { caps.get(0) };
                let Some(m) = m else { continue };
                if m.start() < last || m.is_empty() {
                    continue;
                }
                out.extend_from_slice(&data[last..m.start()]);
                out.extend_from_slice(REDACTED);
                last = m.end();
                n += 1;
            }
            if n > 0 {
                out.extend_from_slice(&data[last..]);
                data = out;
                *self.counts.entry(name.clone()).or_default() += n;
            }
        }
        data
    }
}

fn replace_literal(data: &[u8], lit: &[u8]) -> (Vec<u8>, u64) {
    let finder = memchr_find(lit);
    let mut out = Vec::new();
    let mut last = 0;
    let mut n = 0;
    let mut at = 0;
    while let Some(i) = finder(&data[at..]) {
        let start = at + i;
        out.extend_from_slice(&data[last..start]);
        out.extend_from_slice(REDACTED);
        last = start + lit.len();
        at = last;
        n += 1;
    }
    if n == 0 {
        return (Vec::new(), 0);
    }
    out.extend_from_slice(&data[last..]);
    (out, n)
}

/// A substring search for `needle` (regex's literal search is fast).
fn memchr_find(needle: &[u8]) -> impl Fn(&[u8]) -> Option<usize> + '_ {
    let re = regex::bytes::Regex::new(&regex::escape(&String::from_utf8_lossy(needle))).ok();
    move |hay: &[u8]| match &re {
        Some(re) => re.find(hay).map(|m| m.start()),
        None => hay.windows(needle.len()).position(|w| w == needle),
    }
}

/// Sends what is written in [`CHUNK_BYTES`] chunks; a gone manager is an
/// error of the next write.
pub struct ChunkWriter<F: FnMut(Vec<u8>) -> bool> {
    send: F,
    buf: Vec<u8>,
    pub sent: u64,
}

impl<F: FnMut(Vec<u8>) -> bool> ChunkWriter<F> {
    pub fn new(send: F) -> Self {
        ChunkWriter { send, buf: Vec::with_capacity(CHUNK_BYTES), sent: 0 }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sent += chunk.len() as u64;
        if (self.send)(chunk) { Ok(()) } else { Err(io::Error::other("the manager ended the reply")) }
    }
}

impl<F: FnMut(Vec<u8>) -> bool> Write for ChunkWriter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

#[derive(Default)]
struct Manifest {
    files: Vec<Value>,
    skipped: Vec<Value>,
    errors: Vec<String>,
    truncated: bool,
}

/// Writes the archive through `tar`, minding the share.
struct Packer<W: Write> {
    tar: tar::Builder<W>,
    redactor: Redactor,
    manifest: Manifest,
    used: u64,
    budget: Option<u64>,
    mtime: u64,
}

impl<W: Write> Packer<W> {
    /// Redacts and adds `data` at `path` if it fits the share; an error only
    /// when writing failed (the manager is gone).
    fn add(&mut self, path: &str, data: Vec<u8>) -> io::Result<bool> {
        let data = self.redactor.redact(data);
        self.add_redacted(path, data)
    }

    fn add_redacted(&mut self, path: &str, data: Vec<u8>) -> io::Result<bool> {
        let cost = header_cost(path) + (data.len() as u64).div_ceil(512) * 512;
        if self.budget.is_some_and(|b| self.used + cost > b) {
            self.manifest.skipped.push(json!({"what": path, "reason": "byte share used"}));
            self.manifest.truncated = true;
            return Ok(false);
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut header, path, data.as_slice())?;
        self.used += cost;
        self.manifest.files.push(json!({"path": path, "bytes": data.len()}));
        Ok(true)
    }

    /// Like [`Packer::add`] for a log: when the whole does not fit what is
    /// left of the share, its newest lines that fit go in (cut at a line
    /// start), and the manifest says how much was kept.
    fn add_newest(&mut self, path: &str, data: Vec<u8>) -> io::Result<bool> {
        let data = self.redactor.redact(data);
        let Some(budget) = self.budget else { return self.add_redacted(path, data) };
        let room = budget.saturating_sub(self.used).saturating_sub(header_cost(path) + 511);
        if data.len() as u64 <= room {
            return self.add_redacted(path, data);
        }
        let total = data.len();
        let cut = total - usize::try_from(room).unwrap_or(usize::MAX).min(total);
        // The first whole line after the cut.
        let start = match data[cut..].iter().position(|b| *b == b'\n') {
            Some(i) if cut > 0 => cut + i + 1,
            _ => cut,
        };
        if start >= total {
            self.manifest.skipped.push(json!({"what": path, "reason": "byte share used"}));
            self.manifest.truncated = true;
            return Ok(false);
        }
        let kept = data[start..].to_vec();
        self.manifest.skipped.push(json!({
            "what": path,
            "reason": format!("byte share used: kept the newest {} of {total} bytes", kept.len()),
        }));
        self.manifest.truncated = true;
        self.add_redacted(path, kept)
    }

    fn add_json(&mut self, path: &str, value: &Value) -> io::Result<bool> {
        let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
        text.push(b'\n');
        self.add(path, text)
    }

    fn error(&mut self, e: String) {
        self.manifest.errors.push(e);
    }
}

/// Tar bytes of an entry's header: one block, and a GNU long-name entry for
/// paths over 99 bytes.
fn header_cost(path: &str) -> u64 {
    512 + if path.len() > 99 { 1024 } else { 0 }
}

/// `/proc/<pid>/cmdline` with its NULs as spaces; empty when unreadable.
fn command_line(pid: u32) -> String {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => String::from_utf8_lossy(&raw).split('\0').filter(|a| !a.is_empty()).collect::<Vec<_>>().join(" "),
        Err(_) => String::new(),
    }
}

fn role_state(s: &RoleStatus) -> &'static str {
    match s.state {
        crate::roles::RoleState::Stopped => "stopped",
        crate::roles::RoleState::Starting => "starting",
        crate::roles::RoleState::Running => "running",
        crate::roles::RoleState::Stopping => "stopping",
        crate::roles::RoleState::Failed => "failed",
    }
}

/// Builds the host's archive into `out` (on the calling, blocking thread)
/// and returns the reply's end with the manifest. `out` is given the
/// compressed bytes; its write errors mean the manager is gone.
pub fn build<F: FnMut(Vec<u8>) -> bool>(request: &DiagnosticsRequest, host: &HostState, send: F) -> ReplyEnd {
    let redactor = match Redactor::new(&request.secrets, &request.rules) {
        Ok(r) => r,
        Err(e) => return ReplyEnd { error: e, ..ReplyEnd::default() },
    };
    let writer = ChunkWriter::new(send);
    let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut packer = Packer {
        tar,
        redactor,
        manifest: Manifest::default(),
        used: 0,
        budget: (request.max_bytes > 0).then(|| request.max_bytes.saturating_sub(RESERVED_BYTES)),
        mtime: u64::try_from(crate::collect::unix_ms_now() / 1000).unwrap_or(0),
    };
    let result = fill(request, host, &mut packer);
    let finished = result.and_then(|()| {
        let Packer { tar, redactor, manifest, .. } = packer;
        let gz = tar.into_inner()?;
        let mut writer = gz.finish()?;
        writer.flush()?;
        Ok((writer.sent, redactor.counts, manifest))
    });
    match finished {
        Ok((bytes, counts, manifest)) => {
            let manifest_json = json!({
                "files": manifest.files,
                "redactions": counts,
                "skipped": manifest.skipped,
                "errors": manifest.errors,
                "truncated": manifest.truncated,
                "bytes": bytes,
            });
            ReplyEnd {
                error: manifest.errors.join("; "),
                truncated: manifest.truncated,
                scanned_bytes: 0,
                manifest_json: manifest_json.to_string(),
            }
        }
        Err(e) => ReplyEnd { error: format!("could not write the archive: {e}"), ..ReplyEnd::default() },
    }
}

fn fill<W: Write>(request: &DiagnosticsRequest, host: &HostState, p: &mut Packer<W>) -> io::Result<()> {
    let wants = |what: &str| request.include.is_empty() || request.include.iter().any(|i| i == what);
    let now = crate::collect::unix_ms_now();
    let mut roles: Vec<&RoleSpec> = Vec::new();
    for id in &request.role_ids {
        match host.roles.iter().find(|r| r.role_id == *id) {
            Some(r) => roles.push(r),
            None => p.error(format!("unknown role {id} on this host")),
        }
    }
    if wants("facts") {
        p.add_json("host/facts.json", &host.facts)?;
    }
    if wants("metrics") {
        p.add_json("host/metrics.json", &host.metrics)?;
    }
    for role in &roles {
        let base = format!("roles/{}", role.role_id);
        let status = host.statuses.iter().find(|s| s.role_id == role.role_id);
        let journal = host.journal.get(&role.role_id);
        p.add_json(
            &format!("{base}/role.json"),
            &json!({
                "role_id": role.role_id, "name": role.name, "service": role.service,
                "role_type": role.role_type, "config_revision": role.config_revision,
                "applied_revision": status.map(|s| s.applied_revision),
                "running_revision": status.map(|s| s.running_revision),
            }),
        )?;
        if wants("processes") {
            let value = match status {
                Some(s) => json!({
                    "state": role_state(s),
                    "pid": s.pid,
                    "command_line": if s.pid != 0 { command_line(s.pid) } else { String::new() },
                    "started_at_unix_ms": s.started_at_unix_ms,
                    "uptime_seconds": if s.started_at_unix_ms > 0 { (now - s.started_at_unix_ms).max(0) / 1000 } else { 0 },
                    "restarts": s.restart_count,
                    "last_exit_status": s.last_exit_status,
                    "last_exits": journal.map(exits_json).unwrap_or_default(),
                    "last_error": s.last_error,
                    "last_log_lines": s.last_log_lines,
                    "reloads": s.reload_count,
                    "reloaded_at_unix_ms": s.reloaded_at_unix_ms,
                    "program": role.process.program,
                    "args": role.process.args,
                }),
                None => json!({"state": "unknown", "error": "the agent holds no status of this role"}),
            };
            p.add_json(&format!("{base}/process.json"), &value)?;
        }
        if wants("health") {
            let results = journal.map(|j| j.checks.as_slice()).unwrap_or_default();
            let checks: Vec<Value> = role
                .health_checks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let latest = results.get(i).cloned().flatten().map(|r| {
                        json!({
                            "ok": r.ok, "at_unix_ms": r.at_unix_ms, "at": rfc3339(r.at_unix_ms),
                            "error": r.error, "consecutive_failures": r.consecutive_failures,
                        })
                    });
                    json!({
                        "probe": format!("{:?}", c.probe),
                        "interval_ms": c.interval.as_millis() as u64,
                        "timeout_ms": c.timeout.as_millis() as u64,
                        "failure_threshold": c.failure_threshold,
                        "latest": latest,
                    })
                })
                .collect();
            let value = json!({
                "health": status.map(|s| format!("{:?}", s.health).to_lowercase()),
                "checks": checks,
                "last_error": status.map(|s| s.last_error.clone()),
            });
            p.add_json(&format!("{base}/health.json"), &value)?;
        }
        if wants("config")
            && let Some(data) = &host.data_dir
            && let Ok(dir) = files::role_dir(data, &role.role_id)
        {
            for f in &role.files {
                if let Err(e) = crate::roles::check_file_path(&f.path) {
                    p.error(format!("role {}: {e}", role.role_id));
                    continue;
                }
                match std::fs::read(dir.join(&f.path)) {
                    Ok(bytes) => {
                        p.add(&format!("{base}/config/{}", f.path.trim_start_matches("./")), bytes)?;
                    }
                    Err(e) => p.error(format!("role {}: could not read {}: {e}", role.role_id, f.path)),
                }
            }
        }
    }
    if wants("agent_log")
        && let Some(data) = &host.data_dir
    {
        let set = logs::agent_file_set(data);
        for (path, name) in set.files().into_iter().rev() {
            let file = name.strip_prefix("logs/").unwrap_or(&name);
            add_log(p, request, &path, set.parser.as_deref(), &format!("agent/{file}"))?;
        }
    }
    if wants("logs")
        && let Some(data) = &host.data_dir
    {
        let mut all: Vec<(i64, PathBuf, String, Option<std::sync::Arc<LineParser>>)> = Vec::new();
        for role in &roles {
            let sets: Vec<FileSet> = match logs::role_file_sets(data, role, &[]) {
                Ok(s) => s,
                Err(e) => {
                    p.error(format!("role {}: {e}", role.role_id));
                    continue;
                }
            };
            for set in sets {
                for (path, name) in set.files() {
                    let mtime = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64);
                    let file = name.rsplit('/').next().unwrap_or(&name).to_owned();
                    all.push((mtime, path, format!("roles/{}/logs/{file}", role.role_id), set.parser.clone()));
                }
            }
        }
        // Newest first: the share goes to what happened last.
        all.sort_by_key(|(mtime, ..)| std::cmp::Reverse(*mtime));
        for (mtime, path, entry, parser) in all {
            if request.since_unix_ms > 0 && mtime < request.since_unix_ms {
                // Its last line was written before the window.
                continue;
            }
            add_log(p, request, &path, parser.as_deref(), &entry)?;
        }
    }
    Ok(())
}

fn add_log<W: Write>(
    p: &mut Packer<W>,
    request: &DiagnosticsRequest,
    path: &Path,
    parser: Option<&LineParser>,
    entry: &str,
) -> io::Result<()> {
    if p.budget.is_some_and(|b| p.used + 512 >= b) {
        p.manifest.skipped.push(json!({"what": entry, "reason": "byte share used"}));
        p.manifest.truncated = true;
        return Ok(());
    }
    match logs::lines_in_window(path, parser, request.since_unix_ms, request.until_unix_ms) {
        Ok((lines, _)) if lines.is_empty() => {}
        Ok((lines, _)) => {
            p.add_newest(entry, lines)?;
        }
        Err(e) => p.error(format!("could not read {}: {e}", path.display())),
    }
    Ok(())
}

/// A role's last exits, oldest first, for `process.json`.
fn exits_json(j: &RoleJournal) -> Vec<Value> {
    j.exits
        .iter()
        .map(|e| {
            json!({
                "at_unix_ms": e.at_unix_ms, "at": rfc3339(e.at_unix_ms), "exit_status": e.code,
                "description": e.description, "uptime_ms": e.uptime_ms,
            })
        })
        .collect()
}

/// Unix milliseconds as RFC 3339 (UTC).
fn rfc3339(unix_ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
