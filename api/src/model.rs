//! The plain data types of hosts, users, tokens, events and metrics: what the
//! REST API returns, and what the manager's store persists and its registry
//! keeps live. Behaviour lives in the manager's modules that own each concern.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Milliseconds since the Unix epoch; the store keeps every timestamp this way.
pub type UnixMillis = i64;

pub fn now_millis() -> UnixMillis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 rendering of a stored timestamp, for API responses.
pub fn rfc3339(ms: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub type Labels = BTreeMap<String, String>;

/// The characters `char::is_whitespace` (and so `str::trim`) takes, as the
/// inside of an ECMA-262 character class. Patterns in the OpenAPI document
/// use it rather than `\s`, whose meaning differs between regex engines.
pub const WHITESPACE_CHARS: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// What [`drover_labels::parse_selector`] accepts, as an ECMA-262
/// pattern: `key=value` or `key!=value` requirements separated by commas,
/// whitespace around parts, keys and values ignored, empty parts skipped;
/// keys and values follow the label rules.
pub fn label_selector_pattern() -> String {
    let ws = format!("[{WHITESPACE_CHARS}]*");
    let key = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}";
    // A value: at most 253 characters, no control characters or commas, no
    // whitespace at either end (it would be trimmed away).
    let inner = r"[^,\x00-\x1f\x7f-\x9f]";
    let edge = format!(r"[^,\x00-\x1f\x7f-\x9f{}]", WHITESPACE_CHARS.trim_start_matches(r"\t-\r"));
    let part = format!("{key}{ws}!?={ws}(?:{edge}(?:{inner}{{0,251}}{edge})?)?");
    format!("^{ws}(?:{part}{ws})?(?:,{ws}(?:{part}{ws})?)*$")
}

/// The schema of a label selector ([`label_selector_pattern`]).
pub fn label_selector_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(label_selector_pattern())).build()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    Container,
    Vm,
    Physical,
    Unknown,
}

impl HostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Container => "container",
            HostKind::Vm => "vm",
            HostKind::Physical => "physical",
            HostKind::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> HostKind {
        match s {
            "container" => HostKind::Container,
            "vm" => HostKind::Vm,
            "physical" => HostKind::Physical,
            _ => HostKind::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Healthy,
    Lost,
    Decommissioned,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Healthy => "healthy",
            HostStatus::Lost => "lost",
            HostStatus::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(s: &str) -> Option<HostStatus> {
        match s {
            "healthy" => Some(HostStatus::Healthy),
            "lost" => Some(HostStatus::Lost),
            "decommissioned" => Some(HostStatus::Decommissioned),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Disk {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
}

/// What an agent reports about its host when it enrolls and on every hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostFacts {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub kind: HostKind,
    pub kind_evidence: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    /// Fully qualified name of the kernel host name, when the agent knows one.
    pub fqdn: String,
    /// The container's id (64 hex digits for Docker) when `kind` is container.
    pub container_id: String,
    /// The whole machine's CPUs and memory; `cpu_cores` and `memory_bytes` are
    /// lower when cgroup limits apply (0: an agent too old to say).
    pub machine_cpu_cores: u32,
    pub machine_memory_bytes: u64,
    /// Where `cpu_cores` and `memory_bytes` come from.
    pub capacity_evidence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiskUsage {
    pub mount_point: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// One heartbeat's worth of host metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostMetrics {
    /// When the manager received these metrics (RFC 3339).
    pub at: String,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub disks: Vec<DiskUsage>,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub uptime_seconds: u64,
}

/// A host as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    pub kind: HostKind,
    /// Why the agent classified the host as it did.
    pub kind_evidence: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    /// Fully qualified name of the kernel host name, when the agent knows one.
    pub fqdn: String,
    /// The container's id (64 hex digits for Docker) when `kind` is container.
    pub container_id: String,
    /// The whole machine's CPUs and memory; `cpu_cores` and `memory_bytes` are
    /// lower when cgroup limits apply (0: an agent too old to say).
    pub machine_cpu_cores: u32,
    pub machine_memory_bytes: u64,
    /// Where `cpu_cores` and `memory_bytes` come from.
    pub capacity_evidence: String,
    pub agent_version: String,
    pub labels: Labels,
    pub status: HostStatus,
    pub enrolled_at: String,
    pub last_heartbeat_at: Option<String>,
    pub decommissioned_at: Option<String>,
    pub applied_generation: u64,
    pub metrics: Option<HostMetrics>,
    #[serde(skip)]
    pub cert_serial: String,
}

/// A stored enrollment token (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenInfo {
    pub id: String,
    pub labels: Labels,
    pub max_uses: u32,
    pub uses: u32,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub state: EnrollmentTokenState,
}

/// Whether an enrollment token can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentTokenState {
    Active,
    Expired,
    /// Every use has been spent.
    UsedUp,
    Revoked,
}

impl EnrollmentTokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentTokenState::Active => "active",
            EnrollmentTokenState::Expired => "expired",
            EnrollmentTokenState::UsedUp => "used_up",
            EnrollmentTokenState::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub kind: String,
    pub object_type: String,
    pub object_id: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub username: String,
    /// Client address of the request.
    pub source: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub summary: String,
    /// How the change was asked for: `console`, `password` (HTTP Basic),
    /// `token` (an API token) or `system`; empty for entries older than
    /// this field.
    #[serde(default)]
    pub via: String,
    /// The permission that allowed the change, e.g. `config.write`.
    #[serde(default)]
    pub permission: String,
}

/// One minute or hour (`resolution_s`) of a host's metrics, from its series'
/// rollups: CPU and load averaged over the heartbeats in it, memory and disk
/// use the minute's last value or the hour's average, network counters the last value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricPoint {
    /// The start of the minute or hour.
    pub at: String,
    pub resolution_s: u32,
    /// Heartbeats in it.
    pub samples: u32,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub load1: f64,
    pub disk_used_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Disk use per mount point at the end of the bucket (the hour's average
    /// for hourly buckets).
    #[serde(default)]
    pub disks: Vec<MountUsage>,
}

/// One mount point's use in a metrics bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MountUsage {
    pub mount_point: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::{WHITESPACE_CHARS, label_selector_pattern};

    #[test]
    fn the_whitespace_class_is_char_is_whitespace() {
        let class = regex::Regex::new(&format!("^[{WHITESPACE_CHARS}]$")).unwrap();
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(class.is_match(c.encode_utf8(&mut [0; 4])), c.is_whitespace(), "U+{:04X}", c as u32);
        }
    }

    /// Every string of up to five characters from an alphabet with the
    /// selector's syntax, whitespace of both kinds and characters the rules
    /// refuse: the pattern matches exactly those `parse_selector` accepts.
    #[test]
    fn the_selector_pattern_is_parse_selector() {
        let pattern = regex::Regex::new(&label_selector_pattern()).unwrap();
        let alphabet = ['a', '1', '=', '!', ',', ' ', '\t', '\u{1c}', '\u{85}', '\u{a0}', '.', 'é'];
        let mut strings = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            strings.extend(last.iter().cloned());
        }
        let long = "v".repeat(253);
        strings.extend([
            format!("a={long}"),
            format!("a= {long} "),
            format!("a={long}v"),
            format!("{}=1", "k".repeat(64)),
        ]);
        for s in &strings {
            let parsed = drover_labels::parse_selector(s);
            assert_eq!(pattern.is_match(s), parsed.is_ok(), "{s:?}: {parsed:?}");
        }
    }
}
