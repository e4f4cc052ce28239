//! Diagnostic bundles: one tar.gz holding what the agents of a cluster's
//! hosts gathered (logs, rendered configuration, process state, health,
//! facts) and the manager's view (topology, configuration revisions,
//! commands, events, audit), redacted; and the redaction rules applied to it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What may go into a bundle (`include`); everything when omitted.
pub const INCLUDE_ALL: [&str; 12] = [
    "logs",
    "config",
    "processes",
    "health",
    "facts",
    "metrics",
    "agent_log",
    "topology",
    "revisions",
    "commands",
    "events",
    "audit",
];

/// A request for a diagnostic bundle of one cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDiagnostics {
    pub cluster: String,
    /// Services in scope (names); all of the cluster's when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Hosts in scope (hostnames or ids, members of the cluster); all hosts
    /// of the roles in scope when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Start of the window: RFC 3339 or a duration back from now (`2h`).
    pub since: String,
    /// End of the window (same forms); now when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Cap on the bundle's size in bytes (at most the manager's
    /// `--diagnostics-max-bytes`, its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Parts to collect (see [`INCLUDE_ALL`]); all when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
}

/// A bundle's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticsState {
    /// Being collected.
    Running,
    /// Every host answered.
    Ready,
    /// Written, but some hosts failed (named in `failed_hosts`).
    Partial,
    /// Nothing could be written (the manager failed or restarted).
    Failed,
}

impl DiagnosticsState {
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosticsState::Running => "running",
            DiagnosticsState::Ready => "ready",
            DiagnosticsState::Partial => "partial",
            DiagnosticsState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> DiagnosticsState {
        match s {
            "running" => DiagnosticsState::Running,
            "ready" => DiagnosticsState::Ready,
            "partial" => DiagnosticsState::Partial,
            _ => DiagnosticsState::Failed,
        }
    }
}

/// A host whose part is missing from a bundle, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailedHost {
    pub hostname: String,
    pub reason: String,
}

/// A diagnostic bundle as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticsView {
    /// `dg-...`.
    pub id: String,
    pub cluster: String,
    /// Services in scope (all of the cluster's when the request named none).
    pub services: Vec<String>,
    /// Hostnames in scope.
    pub hosts: Vec<String>,
    /// The window, RFC 3339.
    pub since: String,
    pub until: String,
    pub max_bytes: u64,
    pub include: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub state: DiagnosticsState,
    /// Size of the tar.gz (0 while running).
    pub size_bytes: u64,
    /// The command with a step per host.
    pub command_id: String,
    pub failed_hosts: Vec<FailedHost>,
}

/// A redaction rule: every match of `pattern` (Rust regex syntax) in what a
/// bundle holds becomes `[REDACTED]`; with a capture group named `secret`
/// only that group is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactionRuleView {
    /// Unique; `secret-values` is reserved.
    #[schema(min_length = 1, pattern = r"\S")]
    pub name: String,
    /// Rust regex syntax; must compile.
    #[schema(min_length = 1)]
    pub pattern: String,
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (powers of
/// 1024, `KiB`, `KB` and `k` alike), e.g. `200MiB`, `1G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}: use bytes or e.g. 200MiB, 1GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?} (use KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("200MiB"), Ok(200 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("-1").is_err());
    }
}
