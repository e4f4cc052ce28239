//! Logs of roles and agents, read from the hosts over their sessions: a
//! role's tail and follow, the agent's own log, and the search across hosts.
//!
//! Nothing is stored: each call sends a `LogRequest` (see
//! [`crate::agent_requests`]) to the agents holding the roles and reads their
//! answers. A search fans out to every host holding a matching role at once,
//! each bounded by `limit` lines and a per-host timeout; the merge keeps at
//! most `limit` lines (the newest, in a bounded heap) however many hosts
//! answer, and a streamed search (`search_events`) holds none. A host that
//! cannot answer is named in the result with its reason, never an error of
//! the whole search.
//!
//! Role logs need read access to the role's cluster; the agent's own log
//! needs read access to the fleet.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

pub use drover_api::logs::{
    HostSearchStatus, LogDownloadQuery, LogEnd, LogLineView, LogSearchQuery, LogSearchResult, LogSearchSummary,
    LogsQuery, LogsResult, MAX_LIMIT,
};
use drover_api::logs::{parse_level, parse_time};
use tokio::sync::mpsc;

use super::{Actor, DomainError, Permission, Result, Scope, load_cluster, load_context};
use crate::AppState;
use crate::agent_requests::{AgentRequest, AgentRequests, LogLine, LogQuery, LogStream, Replies, ReplyPart, SendError};
use crate::model::{now_millis, rfc3339};

/// Lines of a tail when the query names no `tail`.
pub const DEFAULT_TAIL: u32 = 100;
/// Matches of a search when the query names no `limit`.
pub const DEFAULT_SEARCH_LIMIT: u32 = 1000;
/// How long a search waits for each host by default.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest per-host timeout a search may ask for.
pub const MAX_HOST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a tail (not a follow) waits for its host.
const TAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed beyond the agent's own timeout for its answer to arrive.
const GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Query parts
// ---------------------------------------------------------------------------

/// `(since, until)` in Unix ms (0: unbounded), refusing a window that ends
/// before it starts.
pub fn window(since: Option<&str>, until: Option<&str>) -> Result<(i64, i64)> {
    let now = now_millis();
    let parse = |what: &str, t: Option<&str>| match t.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => parse_time(t, now).map_err(|m| DomainError::Invalid(format!("{what}: {m}"))),
    };
    let (since, until) = (parse("since", since)?, parse("until", until)?);
    if since != 0 && until != 0 && until < since {
        return Err(DomainError::Invalid(format!(
            "until ({}) is before since ({}); the window must end after it starts",
            rfc3339(until),
            rfc3339(since)
        )));
    }
    Ok((since, until))
}

/// A regular expression of the query, checked here so a bad one is a 400
/// naming it, not an error from every agent.
pub fn pattern(what: &str, re: Option<&str>) -> Result<String> {
    let Some(re) = re.filter(|r| !r.is_empty()) else { return Ok(String::new()) };
    regex::Regex::new(re)
        .map_err(|e| DomainError::Invalid(format!("{what}: the regular expression {re:?} does not compile: {e}")))?;
    Ok(re.to_owned())
}

pub fn level(level: Option<&str>) -> Result<String> {
    match level.map(str::trim).filter(|l| !l.is_empty()) {
        None => Ok(String::new()),
        Some(l) => parse_level(l).map(str::to_owned).map_err(|m| DomainError::Invalid(format!("level: {m}"))),
    }
}

/// `stdout,stderr,file`; empty: every stream.
pub fn streams(text: Option<&str>) -> Result<Vec<LogStream>> {
    let mut out = Vec::new();
    for s in text.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let stream = match s {
            "stdout" => LogStream::Stdout,
            "stderr" => LogStream::Stderr,
            "file" => LogStream::File,
            other => {
                return Err(DomainError::Invalid(format!(
                    "stream: unknown stream {other:?}; expected stdout, stderr or file"
                )));
            }
        };
        if !out.contains(&stream) {
            out.push(stream);
        }
    }
    Ok(out)
}

fn limit(what: &str, value: Option<u32>, default: u32) -> Result<u32> {
    match value {
        None => Ok(default),
        Some(n) if n == 0 || n > MAX_LIMIT => {
            Err(DomainError::Invalid(format!("{what}: {n} is out of range (1 to {MAX_LIMIT})")))
        }
        Some(n) => Ok(n),
    }
}

fn host_timeout(text: Option<&str>) -> Result<Duration> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(DEFAULT_HOST_TIMEOUT) };
    let d = humantime::parse_duration(t)
        .map_err(|e| DomainError::Invalid(format!("timeout: {t:?} is not a duration such as 10s: {e}")))?;
    if d.is_zero() || d > MAX_HOST_TIMEOUT {
        return Err(DomainError::Invalid(format!("timeout: {t} is out of range (more than 0, at most 5m)")));
    }
    Ok(d)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Lines as the API shows them
// ---------------------------------------------------------------------------

/// Where a role's lines come from.
#[derive(Debug, Clone, Default)]
struct RoleLabels {
    cluster: String,
    service: String,
    role: String,
    role_type: String,
}

/// Turns one host's agent lines into [`LogLineView`]s.
#[derive(Debug, Clone, Default)]
pub struct Labeller {
    host_id: String,
    hostname: String,
    roles: HashMap<String, RoleLabels>,
}

impl Labeller {
    pub fn view(&self, l: LogLine) -> LogLineView {
        let role = self.roles.get(&l.role_id).cloned().unwrap_or_default();
        LogLineView {
            time: (l.time != 0).then(|| rfc3339(l.time)),
            time_unix_ms: (l.time != 0).then_some(l.time),
            host_id: self.host_id.clone(),
            hostname: self.hostname.clone(),
            cluster: role.cluster,
            service: role.service,
            role: role.role,
            role_id: l.role_id,
            role_type: role.role_type,
            file: l.file,
            line: l.line_number,
            stream: l.stream.as_str().to_owned(),
            level: (!l.level.is_empty()).then_some(l.level),
            text: l.text,
        }
    }
}

fn send_error(e: SendError) -> DomainError {
    match e {
        SendError::NotConnected(_) | SendError::Busy(_) => DomainError::Unavailable(e.to_string()),
        SendError::Unsupported(_) => DomainError::Conflict(e.to_string()),
    }
}

// ---------------------------------------------------------------------------
// One role's or agent's log
// ---------------------------------------------------------------------------

/// A request sent to one host: its answer, and how to show its lines.
#[derive(Debug)]
pub struct LogTail {
    pub replies: Replies,
    pub labeller: Labeller,
    pub follow: bool,
    /// The most lines a collected answer keeps.
    pub limit: u32,
}

impl LogTail {
    /// The whole answer of a request that does not follow, as JSON takes it.
    pub async fn collect(mut self) -> LogsResult {
        let mut out = LogsResult::default();
        let wait = async {
            while let Some(part) = self.replies.next().await {
                match part {
                    ReplyPart::Lines(lines) => {
                        for l in lines {
                            if out.lines.len() >= self.limit as usize {
                                out.truncated = true;
                                break;
                            }
                            out.lines.push(self.labeller.view(l));
                        }
                    }
                    ReplyPart::Archive(_) => {}
                    ReplyPart::End(end) => {
                        out.truncated |= end.truncated;
                        out.error = (!end.error.is_empty()).then_some(end.error);
                        return;
                    }
                }
            }
            out.error = Some("the agent's answer ended without its end".into());
        };
        if tokio::time::timeout(TAIL_TIMEOUT + GRACE, wait).await.is_err() {
            out.truncated = true;
            out.error = Some(format!(
                "host {} did not finish answering within {} s",
                self.labeller.hostname,
                (TAIL_TIMEOUT + GRACE).as_secs()
            ));
        }
        out
    }
}

/// Sends a role's log request: the last `tail` lines (default 100) of its
/// streams within the window and, with `follow`, every new line after them.
pub async fn role_logs(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    role: &str,
    q: &LogsQuery,
) -> Result<LogTail> {
    actor.require_read(cluster)?;
    let (since, until) = window(q.since.as_deref(), q.until.as_deref())?;
    let pattern = pattern("grep", q.grep.as_deref())?;
    let min_level = level(q.level.as_deref())?;
    let streams = streams(q.stream.as_deref())?;
    let tail = limit("tail", q.tail, DEFAULT_TAIL)?;
    let follow = q.follow.unwrap_or(false);
    let (labeller, role_id) = role_labeller(state, cluster, service, role).await?;
    let query = LogQuery {
        role_ids: vec![role_id],
        streams,
        since,
        until,
        pattern,
        min_level,
        tail,
        limit: tail,
        follow,
        timeout_ms: millis(TAIL_TIMEOUT),
        ..LogQuery::default()
    };
    let replies = state.agent_requests.send(&labeller.host_id, AgentRequest::Logs(query)).map_err(send_error)?;
    Ok(LogTail { replies, labeller, follow, limit: tail })
}

async fn role_labeller(state: &AppState, cluster: &str, service: &str, role: &str) -> Result<(Labeller, String)> {
    let ctx = load_context(state, cluster, service).await?;
    let rec = super::roles::find_role(&ctx, role)?;
    let hostname = ctx
        .topology
        .roles
        .iter()
        .find(|r| r.role_id == rec.id)
        .map(|r| r.hostname.clone())
        .unwrap_or_else(|| rec.host_id.clone());
    let labels = RoleLabels {
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        role: rec.name.clone(),
        role_type: rec.role_type.clone(),
    };
    let labeller =
        Labeller { host_id: rec.host_id.clone(), hostname, roles: HashMap::from([(rec.id.clone(), labels)]) };
    Ok((labeller, rec.id.clone()))
}

/// The files a role's log download may name: its stdout and stderr logs,
/// the files its type lists, and their rotated copies (`.1`, `.2`, ...).
pub fn downloadable(file: &str, log_files: &[String]) -> Option<LogStream> {
    let base = match file.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => base,
        _ => file,
    };
    match base {
        "logs/stdout.log" => Some(LogStream::Stdout),
        "logs/stderr.log" => Some(LogStream::Stderr),
        b if log_files.iter().any(|f| f == b) => Some(LogStream::File),
        _ => None,
    }
}

/// Sends the request for one whole log file of a role; the caller keeps
/// the lines whose `file` is the one asked for.
pub async fn role_log_file(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    role: &str,
    file: &str,
) -> Result<LogTail> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let rec = super::roles::find_role(&ctx, role)?;
    let log_files = ctx.service_type.role_type(&rec.role_type).map(|rt| rt.log_files.clone()).unwrap_or_default();
    let stream = downloadable(file, &log_files).ok_or_else(|| {
        let mut known = vec!["logs/stdout.log".to_owned(), "logs/stderr.log".to_owned()];
        known.extend(log_files.iter().cloned());
        DomainError::Invalid(format!(
            "file: {file:?} is not a log file of role {}; expected one of {} (or a rotated copy such as logs/stdout.log.1)",
            rec.name,
            known.join(", ")
        ))
    })?;
    let (labeller, role_id) = role_labeller(state, cluster, service, role).await?;
    let query = LogQuery {
        role_ids: vec![role_id],
        streams: vec![stream],
        limit: u32::MAX,
        timeout_ms: millis(MAX_HOST_TIMEOUT),
        ..LogQuery::default()
    };
    let replies = state.agent_requests.send(&labeller.host_id, AgentRequest::Logs(query)).map_err(send_error)?;
    Ok(LogTail { replies, labeller, follow: false, limit: u32::MAX })
}

/// Sends a request for the agent's own log of host `host` (id or hostname).
pub async fn agent_log(state: &AppState, actor: &Actor, host: &str, q: &LogsQuery) -> Result<LogTail> {
    actor.require(Permission::Read, Scope::Global)?;
    let (since, until) = window(q.since.as_deref(), q.until.as_deref())?;
    let pattern = pattern("grep", q.grep.as_deref())?;
    let min_level = level(q.level.as_deref())?;
    let tail = limit("tail", q.tail, DEFAULT_TAIL)?;
    let follow = q.follow.unwrap_or(false);
    let h = state.store.host(host).await?.ok_or_else(|| DomainError::NotFound(format!("host {host} not found")))?;
    let labeller = Labeller { host_id: h.id.clone(), hostname: h.hostname.clone(), roles: HashMap::new() };
    let query = LogQuery {
        agent_log: true,
        since,
        until,
        pattern,
        min_level,
        tail,
        limit: tail,
        follow,
        timeout_ms: millis(TAIL_TIMEOUT),
        ..LogQuery::default()
    };
    let replies = state.agent_requests.send(&h.id, AgentRequest::Logs(query)).map_err(send_error)?;
    Ok(LogTail { replies, labeller, follow, limit: tail })
}

// ---------------------------------------------------------------------------
// Search across hosts
// ---------------------------------------------------------------------------

/// One host's part of a search.
#[derive(Debug, Clone)]
struct HostPlan {
    labeller: Labeller,
    role_ids: Vec<String>,
}

/// A search checked and planned: which hosts hold which matching roles.
#[derive(Debug, Clone)]
pub struct SearchPlan {
    hosts: Vec<HostPlan>,
    query: LogQuery,
    limit: u32,
    timeout: Duration,
}

impl SearchPlan {
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// What a running search reports, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchEvent {
    Match(Box<LogLineView>),
    /// A host finished (or gave up); each host reports once, after its matches.
    Host(HostSearchStatus),
}

/// Checks a search and finds the hosts holding the roles it covers, within
/// the clusters the caller may read.
pub async fn plan_search(state: &AppState, actor: &Actor, q: &LogSearchQuery) -> Result<SearchPlan> {
    let (since, until) = window(q.since.as_deref(), q.until.as_deref())?;
    let pattern = pattern("q", q.q.as_deref())?;
    let min_level = level(q.level.as_deref())?;
    let limit = limit("limit", q.limit, DEFAULT_SEARCH_LIMIT)?;
    let timeout = host_timeout(q.timeout.as_deref())?;
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (service, role_type, role, host) = (given(&q.service), given(&q.role_type), given(&q.role), given(&q.host));

    let clusters = match given(&q.cluster) {
        Some(c) => {
            actor.require_read(&c)?;
            load_cluster(state, &c).await?;
            vec![c]
        }
        None => {
            if service.is_some() {
                return Err(DomainError::Invalid("service: name the cluster too (cluster=...)".into()));
            }
            let visible = actor.visible();
            state.store.list_clusters().await?.into_iter().map(|c| c.name).filter(|c| visible.contains(c)).collect()
        }
    };
    let mut by_host: BTreeMap<String, HostPlan> = BTreeMap::new();
    for cluster in &clusters {
        let services = match &service {
            Some(s) => vec![s.clone()],
            None => state.store.list_services(cluster).await?.into_iter().map(|s| s.name).collect(),
        };
        for svc in services {
            let ctx = load_context(state, cluster, &svc).await?;
            for r in ctx.roles() {
                let hostname = ctx
                    .topology
                    .roles
                    .iter()
                    .find(|t| t.role_id == r.id)
                    .map(|t| t.hostname.clone())
                    .unwrap_or_else(|| r.host_id.clone());
                let wanted = role_type.as_ref().is_none_or(|t| *t == r.role_type)
                    && role.as_ref().is_none_or(|x| *x == r.name || *x == r.id)
                    && host.as_ref().is_none_or(|h| *h == hostname || *h == r.host_id);
                if !wanted {
                    continue;
                }
                let plan = by_host.entry(r.host_id.clone()).or_insert_with(|| HostPlan {
                    labeller: Labeller { host_id: r.host_id.clone(), hostname, roles: HashMap::new() },
                    role_ids: Vec::new(),
                });
                plan.role_ids.push(r.id.clone());
                plan.labeller.roles.insert(
                    r.id.clone(),
                    RoleLabels {
                        cluster: cluster.clone(),
                        service: svc.clone(),
                        role: r.name.clone(),
                        role_type: r.role_type.clone(),
                    },
                );
            }
        }
    }
    let query =
        LogQuery { since, until, pattern, min_level, limit, timeout_ms: millis(timeout), ..LogQuery::default() };
    Ok(SearchPlan { hosts: by_host.into_values().collect(), query, limit, timeout })
}

/// Runs a planned search: one request per host, all at once; events arrive
/// on the returned channel as hosts answer, and it closes when every host
/// has reported. Dropping the receiver ends the search (and the agents'
/// work).
pub fn search_events(requests: &AgentRequests, plan: SearchPlan) -> mpsc::Receiver<SearchEvent> {
    let (tx, rx) = mpsc::channel(256);
    for host in plan.hosts {
        let mut query = plan.query.clone();
        query.role_ids = host.role_ids.clone();
        let requests = requests.clone();
        let tx = tx.clone();
        let (limit, timeout) = (plan.limit, plan.timeout);
        tokio::spawn(async move {
            let status = search_host(&requests, host.labeller, query, limit, timeout, &tx).await;
            let _ = tx.send(SearchEvent::Host(status)).await;
        });
    }
    rx
}

async fn search_host(
    requests: &AgentRequests,
    labeller: Labeller,
    query: LogQuery,
    limit: u32,
    timeout: Duration,
    tx: &mpsc::Sender<SearchEvent>,
) -> HostSearchStatus {
    let mut status = HostSearchStatus {
        host_id: labeller.host_id.clone(),
        hostname: labeller.hostname.clone(),
        status: "answered".into(),
        error: None,
        lines: 0,
        scanned_bytes: 0,
    };
    let mut replies = match requests.send(&labeller.host_id, AgentRequest::Logs(query)) {
        Ok(r) => r,
        Err(e) => {
            status.status = "unreachable".into();
            status.error = Some(e.to_string());
            return status;
        }
    };
    let read = async {
        while let Some(part) = replies.next().await {
            match part {
                ReplyPart::Lines(lines) => {
                    for l in lines {
                        if status.lines >= u64::from(limit) {
                            status.status = "truncated".into();
                            continue;
                        }
                        status.lines += 1;
                        if tx.send(SearchEvent::Match(Box::new(labeller.view(l)))).await.is_err() {
                            return; // nobody listens any more
                        }
                    }
                }
                ReplyPart::Archive(_) => {}
                ReplyPart::End(end) => {
                    status.scanned_bytes = end.scanned_bytes;
                    if end.truncated {
                        status.status = "truncated".into();
                    } else if !end.error.is_empty() {
                        status.status = "failed".into();
                    }
                    status.error = (!end.error.is_empty()).then_some(end.error);
                    return;
                }
            }
        }
        status.status = "failed".into();
        status.error = Some("the agent's answer ended without its end".into());
    };
    if tokio::time::timeout(timeout + GRACE, read).await.is_err() {
        status.status = "timed_out".into();
        status.error = Some(format!("no complete answer within {}", humantime::format_duration(timeout)));
    }
    status
}

/// Keeps the `limit` newest lines of many hosts' answers (lines without a
/// time count as oldest), in memory bounded by `limit`.
#[derive(Debug)]
pub struct Merge {
    limit: usize,
    seq: u64,
    heap: BinaryHeap<Reverse<Ranked>>,
    pub dropped: bool,
}

#[derive(Debug)]
struct Ranked {
    key: (i64, u64),
    line: LogLineView,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl Merge {
    pub fn new(limit: u32) -> Merge {
        Merge { limit: limit as usize, seq: 0, heap: BinaryHeap::new(), dropped: false }
    }

    pub fn push(&mut self, line: LogLineView) {
        self.seq += 1;
        self.heap.push(Reverse(Ranked { key: (line.time_unix_ms.unwrap_or(0), self.seq), line }));
        if self.heap.len() > self.limit {
            self.heap.pop();
            self.dropped = true;
        }
    }

    /// Oldest first; lines of equal time in the order they arrived.
    pub fn into_sorted(self) -> Vec<LogLineView> {
        let mut v: Vec<Ranked> = self.heap.into_iter().map(|Reverse(r)| r).collect();
        v.sort();
        v.into_iter().map(|r| r.line).collect()
    }
}

/// Folds host statuses into the summary (hosts by hostname).
pub fn summary(mut hosts: Vec<HostSearchStatus>, dropped: bool, started: Instant) -> LogSearchSummary {
    hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.host_id.cmp(&b.host_id)));
    let failed_hosts = hosts
        .iter()
        .filter(|h| matches!(h.status.as_str(), "failed" | "timed_out" | "unreachable"))
        .map(|h| h.hostname.clone())
        .collect();
    let truncated = dropped || hosts.iter().any(|h| h.status == "truncated");
    LogSearchSummary {
        hosts,
        failed_hosts,
        truncated,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// A whole search: matches merged by time, with every host's status.
pub async fn search(state: &AppState, actor: &Actor, q: &LogSearchQuery) -> Result<LogSearchResult> {
    let started = Instant::now();
    let plan = plan_search(state, actor, q).await?;
    let mut merge = Merge::new(plan.limit());
    let mut hosts = Vec::new();
    let mut rx = search_events(&state.agent_requests, plan);
    while let Some(event) = rx.recv().await {
        match event {
            SearchEvent::Match(line) => merge.push(*line),
            SearchEvent::Host(h) => hosts.push(h),
        }
    }
    let dropped = merge.dropped;
    let s = summary(hosts, dropped, started);
    Ok(LogSearchResult {
        matches: merge.into_sorted(),
        hosts: s.hosts,
        failed_hosts: s.failed_hosts,
        truncated: s.truncated,
        took_ms: s.took_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_requests::ReplyEnd;

    fn labeller(host: &str) -> Labeller {
        let roles = HashMap::from([(
            format!("r-{host}"),
            RoleLabels {
                cluster: "prod".into(),
                service: "cache".into(),
                role: format!("cache-{host}"),
                role_type: "primary".into(),
            },
        )]);
        Labeller { host_id: host.into(), hostname: format!("{host}.example"), roles }
    }

    fn line(host: &str, time: i64, text: &str) -> LogLine {
        LogLine {
            role_id: format!("r-{host}"),
            file: "logs/stdout.log".into(),
            line_number: 1,
            time,
            stream: LogStream::Stdout,
            level: String::new(),
            text: text.into(),
        }
    }

    #[test]
    fn query_parts_refuse_bad_input_with_the_reason() {
        let msg = |r: Result<_>| match r {
            Err(DomainError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg(pattern("q", Some("(unclosed")).map(|_| ())).contains("\"(unclosed\" does not compile"));
        assert!(msg(window(Some("1h"), Some("2h")).map(|_| ())).contains("until"));
        assert!(msg(level(Some("loud")).map(|_| ())).contains("unknown level"));
        assert!(msg(limit("limit", Some(0), 5).map(|_| ())).contains("out of range"));
        assert!(msg(limit("limit", Some(10_001), 5).map(|_| ())).contains("out of range"));
        assert!(msg(streams(Some("stdout,nope")).map(|_| ())).contains("\"nope\""));
        assert!(msg(host_timeout(Some("1h")).map(|_| ())).contains("out of range"));
        assert_eq!(streams(Some("stderr, file,stderr")).unwrap(), [LogStream::Stderr, LogStream::File]);
        let (since, until) = window(Some("2h"), Some("1h")).unwrap();
        assert_eq!(until - since, 3_600_000);
        assert_eq!(window(None, None).unwrap(), (0, 0));
    }

    #[test]
    fn downloads_name_the_roles_log_files_only() {
        let files = ["zookeeper.log".to_owned()];
        assert_eq!(downloadable("logs/stdout.log", &files), Some(LogStream::Stdout));
        assert_eq!(downloadable("logs/stderr.log.3", &files), Some(LogStream::Stderr));
        assert_eq!(downloadable("zookeeper.log.1", &files), Some(LogStream::File));
        assert_eq!(downloadable("zoo.cfg", &files), None);
        assert_eq!(downloadable("../../etc/passwd", &files), None);
    }

    #[test]
    fn the_merge_keeps_the_newest_lines_in_time_order() {
        let l = labeller("h1");
        let mut m = Merge::new(3);
        for (t, text) in [(30, "c"), (0, "untimed"), (10, "a"), (40, "d"), (20, "b")] {
            m.push(l.view(line("h1", t, text)));
        }
        assert!(m.dropped);
        let texts: Vec<String> = m.into_sorted().into_iter().map(|v| v.text).collect();
        assert_eq!(texts, ["b", "c", "d"]);
    }

    /// Three hosts: two answer through real sessions of `AgentRequests`, one
    /// has none. The search names each, merges by time and labels lines.
    #[tokio::test]
    async fn a_search_fans_out_and_names_hosts_that_did_not_answer() {
        let requests = AgentRequests::default();
        let mut sessions = Vec::new();
        for (i, h) in ["h1", "h2"].into_iter().enumerate() {
            sessions.push((h, requests.attach(h, i as u64, true)));
        }
        let plan = SearchPlan {
            hosts: ["h1", "h2", "h3"]
                .into_iter()
                .map(|h| HostPlan { labeller: labeller(h), role_ids: vec![format!("r-{h}")] })
                .collect(),
            query: LogQuery { pattern: "boom".into(), limit: 10, ..LogQuery::default() },
            limit: 10,
            timeout: Duration::from_secs(5),
        };
        let mut rx = search_events(&requests, plan);
        for (n, (h, session)) in sessions.iter_mut().enumerate() {
            let (id, request) = *session.recv().await.unwrap();
            let AgentRequest::Logs(q) = request else { panic!("a log request") };
            assert_eq!((q.role_ids.clone(), q.pattern.as_str()), (vec![format!("r-{h}")], "boom"));
            let tx = requests.reply_to(h, &id).unwrap();
            let t = 1000 - n as i64 * 500; // h2's line is older than h1's
            tx.send(ReplyPart::Lines(vec![line(h, t, &format!("boom on {h}"))])).await.unwrap();
            tx.send(ReplyPart::End(ReplyEnd { scanned_bytes: 99, ..ReplyEnd::default() })).await.unwrap();
        }
        let started = Instant::now();
        let mut merge = Merge::new(10);
        let mut hosts = Vec::new();
        while let Some(e) = rx.recv().await {
            match e {
                SearchEvent::Match(l) => merge.push(*l),
                SearchEvent::Host(h) => hosts.push(h),
            }
        }
        let s = summary(hosts, merge.dropped, started);
        let matches = merge.into_sorted();
        assert_eq!(matches.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["boom on h2", "boom on h1"]);
        assert_eq!((matches[0].hostname.as_str(), matches[0].role.as_str()), ("h2.example", "cache-h2"));
        let statuses: Vec<(&str, &str)> = s.hosts.iter().map(|h| (h.host_id.as_str(), h.status.as_str())).collect();
        assert_eq!(statuses, [("h1", "answered"), ("h2", "answered"), ("h3", "unreachable")]);
        assert_eq!(s.failed_hosts, ["h3.example"]);
        assert!(s.hosts[2].error.as_deref().unwrap_or_default().contains("not connected"));
        assert_eq!(requests.pending_count(), 0);
    }
}
