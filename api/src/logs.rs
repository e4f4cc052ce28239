//! Logs of roles and agents: a role's tail and follow
//! (`GET /api/v1/clusters/{c}/services/{s}/roles/{r}/logs`), the agent's own
//! log (`GET /api/v1/hosts/{id}/agent-log`) and the search across hosts
//! (`GET /api/v1/logs/search`). Times in queries are RFC 3339 or a duration
//! back from now (`1h`, `30m`): [`parse_time`].

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The levels a query may ask for, highest first; `level=warn` keeps
/// `warn` and `error` lines.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The streams of a role's logs.
pub const STREAMS: [&str; 3] = ["stdout", "stderr", "file"];

/// The most lines a search or a tail answers.
pub const MAX_LIMIT: u32 = 10_000;

/// One log line with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    /// RFC 3339 (UTC, milliseconds) when the line's format gave a time.
    pub time: Option<String>,
    pub time_unix_ms: Option<i64>,
    pub host_id: String,
    pub hostname: String,
    /// Empty for the agent's own log.
    pub cluster: String,
    pub service: String,
    /// The role's name.
    pub role: String,
    pub role_id: String,
    pub role_type: String,
    /// Relative to the role directory, e.g. `logs/stdout.log.1`.
    pub file: String,
    /// 1-based line number in the file.
    pub line: u64,
    /// `stdout`, `stderr`, `file` or `agent`.
    pub stream: String,
    /// `error`, `warn`, `info`, `debug` or `trace` when the format gave one.
    pub level: Option<String>,
    pub text: String,
}

/// The query of a role's log (and, without `stream`, of the agent's log).
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The last N matching lines (default 100; at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub tail: Option<u32>,
    /// RFC 3339 or a duration back from now (`1h`, `30m`).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Comma-separated: `stdout`, `stderr`, `file` (default: all).
    pub stream: Option<String>,
    /// A regular expression (Rust syntax) a line must match.
    pub grep: Option<String>,
    /// Lowest level: `error`, `warn`, `info`, `debug`, `trace`.
    pub level: Option<String>,
    /// Keep streaming new lines as server-sent events (`event: line`).
    pub follow: Option<bool>,
}

/// A role's or an agent's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogsResult {
    pub lines: Vec<LogLineView>,
    /// More lines matched than were sent.
    pub truncated: bool,
    /// What went wrong on the host, when the agent could not answer fully.
    pub error: Option<String>,
}

/// The end of a followed log (`event: end`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogEnd {
    pub error: Option<String>,
}

/// Which file to download whole.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogDownloadQuery {
    /// e.g. `logs/stdout.log`, `logs/stderr.log.1`, or one of the role's own log files.
    pub file: String,
}

/// A search across hosts.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogSearchQuery {
    /// Default: every cluster the caller may read.
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub role_type: Option<String>,
    /// A role's name or id.
    pub role: Option<String>,
    /// A hostname or host id.
    pub host: Option<String>,
    /// A regular expression (Rust syntax); default: every line.
    pub q: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub level: Option<String>,
    /// At most this many matches in the result and from each host (default 1000, 1 to 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
    /// Per-host time limit, a duration (default `10s`, at most `5m`).
    pub timeout: Option<String>,
}

/// How one host answered a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostSearchStatus {
    pub host_id: String,
    pub hostname: String,
    /// `answered`, `truncated`, `failed`, `timed_out` or `unreachable`.
    pub status: String,
    pub error: Option<String>,
    pub lines: u64,
    pub scanned_bytes: u64,
}

/// The hosts part of a search (also the `event: summary` of a streamed one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogSearchSummary {
    pub hosts: Vec<HostSearchStatus>,
    /// Hostnames of the hosts that did not answer fully (failed, timed out, unreachable).
    pub failed_hosts: Vec<String>,
    pub truncated: bool,
    pub took_ms: u64,
}

/// A search's matches, merged by time (oldest first; lines without a time first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogSearchResult {
    pub matches: Vec<LogLineView>,
    pub hosts: Vec<HostSearchStatus>,
    pub failed_hosts: Vec<String>,
    pub truncated: bool,
    pub took_ms: u64,
}

/// Unix milliseconds from RFC 3339 (`2026-12-04T03:00:00Z`) or a duration
/// back from `now_ms` (`90s`, `30m`, `1h`, `2d`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let back = humantime_like(text).ok_or_else(|| {
        format!("time {text:?}: expected RFC 3339 (2026-12-04T03:00:00Z) or a duration back from now (30m, 1h, 2d)")
    })?;
    Ok(now_ms.saturating_sub(back))
}

/// `30s`, `15m`, `1h`, `2d`, `1h30m` in milliseconds.
fn humantime_like(text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        let ms = match unit.as_str() {
            "ms" => 1,
            "s" | "sec" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms)?)?;
    }
    number.is_empty().then_some(total)
}

/// A level as a query names it, or an error naming the known ones.
pub fn parse_level(text: &str) -> Result<&'static str, String> {
    let t = text.trim().to_ascii_lowercase();
    LEVELS
        .into_iter()
        .find(|l| *l == t || (t == "warning" && *l == "warn"))
        .ok_or_else(|| format!("unknown level {text:?}; expected one of {}", LEVELS.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_back_from_now() {
        let now = 1_000_000_000;
        assert_eq!(parse_time("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_time("1h30m", now), Ok(now - 5_400_000));
        assert_eq!(parse_time("2026-12-04T03:00:00Z", now), Ok(1_796_353_200_000));
        assert_eq!(parse_time("2026-12-04T04:00:00+01:00", now), Ok(1_796_353_200_000));
        for bad in ["", "1", "1x", "h", "yesterday", "2026-12-04"] {
            assert!(parse_time(bad, now).unwrap_err().contains("RFC 3339"), "{bad}");
        }
    }

    #[test]
    fn levels_are_known_or_named() {
        assert_eq!(parse_level("WARN"), Ok("warn"));
        assert_eq!(parse_level("warning"), Ok("warn"));
        assert!(parse_level("loud").unwrap_err().contains("unknown level \"loud\""));
    }
}
