//! How results look to people: byte sizes, relative times, aligned tables and
//! one layout per command. Everything here is a pure function of the API's
//! response types and the current time, so every layout is unit-tested.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use drover_api::history::{AuditList, EventList};
use drover_api::hosts::HostList;
use drover_api::model::{Host, HostMetrics, HostStatus, Labels};
use drover_api::tokens::{ApiTokenList, CreatedApiToken, CreatedEnrollmentToken, EnrollmentTokenList};
use drover_api::users::{Grant, Me, UserInfo, UserSource};

/// Placeholder for a value that is not known.
const NONE: &str = "-";

/// `1536` -> `1.5 KiB`: binary units, one decimal above plain bytes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up a unit rather than print 1024.0.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in at most `max_units` units, largest first, rounded down:
/// `compact_duration(3725, 1)` is `1h`, `compact_duration(3725, 2)` is `1h 2m`.
pub fn compact_duration(secs: u64, max_units: usize) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = UNITS.iter().position(|(_, size)| secs >= *size) else {
        return "0s".into();
    };
    let last = (first + max_units.max(1)).min(UNITS.len());
    let mut rest = secs;
    let mut parts = Vec::new();
    for (name, size) in &UNITS[first..last] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n}{name}"));
        }
    }
    parts.join(" ")
}

/// An RFC 3339 time relative to `now`: `12s ago`, `in 45m`. A time a few
/// seconds ahead (clock skew) counts as now; text that is not RFC 3339 is
/// returned as it is.
pub fn relative_time(now: DateTime<Utc>, at: &str) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(at) else {
        return at.to_owned();
    };
    let delta = now.signed_duration_since(t.with_timezone(&Utc)).num_seconds();
    if delta > -5 {
        format!("{} ago", compact_duration(delta.max(0) as u64, 1))
    } else {
        format!("in {}", compact_duration(delta.unsigned_abs(), 1))
    }
}

/// `2026-01-02T03:04:05Z (12s ago)`.
pub fn absolute_and_relative(now: DateTime<Utc>, at: &str) -> String {
    format!("{} ({})", short_timestamp(at), relative_time(now, at))
}

/// An RFC 3339 time in UTC to the second, e.g. `2026-01-02T03:04:05Z`.
pub fn short_timestamp(at: &str) -> String {
    match DateTime::parse_from_rfc3339(at) {
        Ok(t) => t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true),
        Err(_) => at.to_owned(),
    }
}

/// The first 8 characters of an ID, enough to tell hosts apart and accepted
/// back as a prefix.
pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

/// Shortens UUIDs (host IDs) and leaves other object IDs (token IDs, user names) whole.
fn short_object_id(id: &str) -> String {
    let uuid_like = id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4;
    if uuid_like { short_id(id) } else { id.to_owned() }
}

/// `k=v,k2=v2`, the syntax `hosts list --label` accepts, or `-`.
pub fn labels_inline(labels: &Labels) -> String {
    if labels.is_empty() {
        return NONE.into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { NONE.into() } else { format!("{:.0}%", part as f64 * 100.0 / whole as f64) }
}

/// A plain-text table: columns separated by two spaces, left-aligned unless
/// marked, no trailing whitespace.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    right_aligned: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), right_aligned: vec![false; headers.len()], rows: Vec::new() }
    }

    /// Right-aligns the given columns (numbers).
    pub fn align_right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            self.right_aligned[c] = true;
        }
        self
    }

    /// Adds a row; it must have one cell per header.
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len(), "table row width");
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| lines.iter().map(|row| row.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in lines {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c].saturating_sub(cell.chars().count());
                if self.right_aligned[c] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Key:   value` lines with the values aligned; rows with an empty value are skipped.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = writeln!(out, "{:<width$}  {value}", format!("{key}:"));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| if l.is_empty() { "\n".to_owned() } else { format!("  {l}\n") }).collect()
}

/// `hosts list`: one row per host and a `N of TOTAL hosts` footer.
pub fn hosts_table(list: &HostList, now: DateTime<Utc>) -> String {
    let mut table =
        Table::new(&["ID", "HOSTNAME", "STATUS", "KIND", "CPU%", "MEM", "LOAD", "LAST HEARTBEAT", "LABELS"])
            .align_right(&[4, 5, 6]);
    for h in &list.items {
        let m = h.metrics.as_ref();
        table.push(vec![
            short_id(&h.id),
            h.hostname.clone(),
            h.status.as_str().into(),
            h.kind.as_str().into(),
            m.map_or(NONE.into(), |m| format!("{:.1}", m.cpu_percent)),
            m.map_or(NONE.into(), |m| {
                format!("{}/{}", human_bytes(m.memory_used_bytes), human_bytes(m.memory_total_bytes))
            }),
            m.map_or(NONE.into(), |m| format!("{:.2}", m.load1)),
            h.last_heartbeat_at.as_deref().map_or("never".into(), |t| relative_time(now, t)),
            labels_inline(&h.labels),
        ]);
    }
    let mut out = if list.items.is_empty() { String::new() } else { table.render() };
    let shown = list.items.len() as u64;
    let _ = write!(out, "{shown} of {} hosts", list.total);
    if list.offset > 0 {
        let _ = write!(out, " (offset {})", list.offset);
    }
    let next = u64::from(list.offset) + shown;
    if shown > 0 && next < list.total {
        let _ = write!(out, "; next page: --offset {next}");
    }
    out.push('\n');
    out
}

/// `hosts show`: every fact, the labels, the disks and the latest metrics.
pub fn host_detail(h: &Host, now: DateTime<Utc>) -> String {
    let kind = if h.kind_evidence.is_empty() {
        h.kind.as_str().to_owned()
    } else {
        format!("{} ({})", h.kind.as_str(), h.kind_evidence)
    };
    let or_none = |s: &str| {
        if s.is_empty() { NONE.to_owned() } else { s.to_owned() }
    };
    let mut out = key_values(&[
        ("ID", h.id.clone()),
        ("Hostname", h.hostname.clone()),
        ("Status", h.status.as_str().into()),
        ("Kind", kind),
        ("Addresses", or_none(&h.addresses.join(", "))),
        ("OS", or_none(&h.os)),
        ("Kernel", or_none(&h.kernel)),
        ("Arch", or_none(&h.arch)),
        ("CPU cores", h.cpu_cores.to_string()),
        ("Memory", human_bytes(h.memory_bytes)),
        ("Agent version", or_none(&h.agent_version)),
        ("Enrolled", absolute_and_relative(now, &h.enrolled_at)),
        ("Last heartbeat", h.last_heartbeat_at.as_deref().map_or("never".into(), |t| absolute_and_relative(now, t))),
        ("Decommissioned", h.decommissioned_at.as_deref().map_or(String::new(), |t| absolute_and_relative(now, t))),
        ("Applied generation", h.applied_generation.to_string()),
    ]);

    if h.labels.is_empty() {
        out.push_str("\nLabels: none\n");
    } else {
        out.push_str("\nLabels:\n");
        for (k, v) in &h.labels {
            let _ = writeln!(out, "  {k}={v}");
        }
    }

    let usage = h.metrics.as_ref().map_or(&[][..], |m| &m.disks[..]);
    if h.disks.is_empty() && usage.is_empty() {
        out.push_str("\nDisks: none reported\n");
    } else {
        let mut table = Table::new(&["MOUNT", "DEVICE", "FS", "SIZE", "USED", "USE%"]).align_right(&[3, 4, 5]);
        for d in &h.disks {
            let used = usage.iter().find(|u| u.mount_point == d.mount_point);
            table.push(vec![
                d.mount_point.clone(),
                d.device.clone(),
                d.fs_type.clone(),
                human_bytes(d.total_bytes),
                used.map_or(NONE.into(), |u| human_bytes(u.used_bytes)),
                used.map_or(NONE.into(), |u| percent(u.used_bytes, u.total_bytes)),
            ]);
        }
        for u in usage.iter().filter(|u| !h.disks.iter().any(|d| d.mount_point == u.mount_point)) {
            table.push(vec![
                u.mount_point.clone(),
                NONE.into(),
                NONE.into(),
                human_bytes(u.total_bytes),
                human_bytes(u.used_bytes),
                percent(u.used_bytes, u.total_bytes),
            ]);
        }
        out.push_str("\nDisks:\n");
        out.push_str(&indent(&table.render()));
    }

    match &h.metrics {
        None => out.push_str("\nMetrics: none reported yet\n"),
        Some(m) => {
            let stale = h.status != HostStatus::Healthy;
            let _ = writeln!(
                out,
                "\nMetrics (reported {}{}):",
                relative_time(now, &m.at),
                if stale { ", host is not healthy" } else { "" }
            );
            out.push_str(&indent(&metrics_detail(m, h.cpu_cores)));
        }
    }
    out
}

fn metrics_detail(m: &HostMetrics, cores: u32) -> String {
    key_values(&[
        ("CPU", format!("{:.1}% of {cores} cores", m.cpu_percent)),
        (
            "Memory",
            format!(
                "{} of {} ({})",
                human_bytes(m.memory_used_bytes),
                human_bytes(m.memory_total_bytes),
                percent(m.memory_used_bytes, m.memory_total_bytes)
            ),
        ),
        ("Load", format!("{:.2} {:.2} {:.2} (1, 5, 15 min)", m.load1, m.load5, m.load15)),
        ("Network", format!("{} received, {} sent", human_bytes(m.network_rx_bytes), human_bytes(m.network_tx_bytes))),
        ("Uptime", compact_duration(m.uptime_seconds, 2)),
    ])
}

/// `hosts label`: the labels the host has now.
pub fn host_labels(h: &Host) -> String {
    format!("host {} ({}) labels: {}\n", h.hostname, short_id(&h.id), labels_inline(&h.labels))
}

/// `tokens list`.
pub fn tokens_table(list: &EnrollmentTokenList, now: DateTime<Utc>) -> String {
    if list.items.is_empty() {
        return "no enrollment tokens; create one with `drover tokens create`\n".into();
    }
    let mut table = Table::new(&["ID", "STATE", "USES", "EXPIRES", "CREATED BY", "CREATED", "LABELS"]);
    for t in &list.items {
        table.push(vec![
            t.id.clone(),
            t.state.as_str().to_owned(),
            format!("{}/{}", t.uses, t.max_uses),
            relative_time(now, &t.expires_at),
            t.created_by.clone(),
            relative_time(now, &t.created_at),
            labels_inline(&t.labels),
        ]);
    }
    table.render()
}

/// `tokens create`: the token (shown once) and the agent command line using it.
pub fn created_token(t: &CreatedEnrollmentToken, agent_manager_url: &str, now: DateTime<Utc>) -> String {
    let uses = if t.max_uses == 1 { "1 host".to_owned() } else { format!("{} hosts", t.max_uses) };
    format!(
        "Created enrollment token {id}: valid for {uses} until {expires}, labels {labels}.\n\
         The token is shown only once:\n\n  {token}\n\n\
         Start the agent on each new host with:\n\n  drover-agent --manager {agent_manager_url} --token {token}\n",
        id = t.id,
        expires = absolute_and_relative(now, &t.expires_at),
        labels = labels_inline(&t.labels),
        token = t.token,
    )
}

/// `api-tokens create`: the token, shown once, with the roles asked for
/// (none: the user's own).
pub fn created_api_token(t: &CreatedApiToken, roles: &[Grant], now: DateTime<Utc>) -> String {
    let expiry = match &t.expires_at {
        Some(at) => format!("expires {}", absolute_and_relative(now, at)),
        None => "never expires".into(),
    };
    let roles = if roles.is_empty() { "your roles".to_owned() } else { grants_inline(roles) };
    format!(
        "Created API token {name:?} ({id}) with {roles}; it {expiry}.\nThe token is shown only once:\n\n  {token}\n\n\
         Use it with --api-token or DROVER_API_TOKEN, or as the header Authorization: Bearer <token>.\n",
        name = t.name,
        id = t.id,
        token = t.token,
    )
}

/// `operator@prod, viewer`, or `no roles`.
pub fn grants_inline(grants: &[Grant]) -> String {
    if grants.is_empty() {
        return "no roles".into();
    }
    grants.iter().map(Grant::to_string).collect::<Vec<_>>().join(", ")
}

/// `api-tokens list`.
pub fn api_tokens_table(list: &ApiTokenList, now: DateTime<Utc>) -> String {
    if list.items.is_empty() {
        return "no API tokens; create one with `drover api-tokens create NAME`\n".into();
    }
    let mut table = Table::new(&["ID", "NAME", "ROLES", "CREATED", "EXPIRES", "LAST USED"]);
    for t in &list.items {
        table.push(vec![
            t.id.clone(),
            t.name.clone(),
            t.grants.as_deref().map_or("(the user's)".into(), grants_inline),
            relative_time(now, &t.created_at),
            t.expires_at.as_deref().map_or("never".into(), |at| relative_time(now, at)),
            t.last_used_at.as_deref().map_or("never".into(), |at| relative_time(now, at)),
        ]);
    }
    table.render()
}

fn user_state(u: &UserInfo) -> &'static str {
    if u.disabled { "disabled" } else { "enabled" }
}

fn user_source(u: &UserInfo) -> &'static str {
    match u.source {
        UserSource::Local => "local",
        UserSource::Ldap => "ldap",
    }
}

/// `users list`.
pub fn users_table(users: &[UserInfo], now: DateTime<Utc>) -> String {
    if users.is_empty() {
        return "no users\n".into();
    }
    let mut table = Table::new(&["USER", "ROLES", "STATE", "SOURCE", "LAST SIGN-IN", "CREATED"]);
    for u in users {
        table.push(vec![
            u.username.clone(),
            grants_inline(&u.grants),
            user_state(u).into(),
            user_source(u).into(),
            u.last_sign_in_at.as_deref().map_or("never".into(), |at| relative_time(now, at)),
            relative_time(now, &u.created_at),
        ]);
    }
    table.render()
}

/// `users show`.
pub fn user_detail(u: &UserInfo, now: DateTime<Utc>) -> String {
    key_values(&[
        ("User", u.username.clone()),
        ("Roles", grants_inline(&u.grants)),
        ("State", user_state(u).into()),
        ("Source", user_source(u).into()),
        ("Last sign-in", u.last_sign_in_at.as_deref().map_or("never".into(), |at| absolute_and_relative(now, at))),
        ("Created", absolute_and_relative(now, &u.created_at)),
        ("ID", u.id.clone()),
    ])
}

/// `events`.
pub fn events_table(list: &EventList) -> String {
    if list.items.is_empty() {
        return "no events\n".into();
    }
    let mut table = Table::new(&["TIME", "SEVERITY", "KIND", "OBJECT", "MESSAGE"]);
    for e in &list.items {
        table.push(vec![
            short_timestamp(&e.at),
            e.severity.clone(),
            e.kind.clone(),
            format!("{} {}", e.object_type, short_object_id(&e.object_id)),
            e.message.clone(),
        ]);
    }
    table.render()
}

/// `audit`.
pub fn audit_table(list: &AuditList) -> String {
    if list.items.is_empty() {
        return "no audit entries\n".into();
    }
    let mut table = Table::new(&["TIME", "USER", "SOURCE", "ACTION", "OBJECT", "SUMMARY"]);
    for a in &list.items {
        table.push(vec![
            short_timestamp(&a.at),
            a.username.clone(),
            a.source.clone(),
            a.action.clone(),
            format!("{} {}", a.object_type, short_object_id(&a.object_id)),
            a.summary.clone(),
        ]);
    }
    table.render()
}

/// `whoami`.
pub fn whoami(me: &Me, manager: &str, credentials: &str, now: DateTime<Utc>) -> String {
    let user = &me.user;
    let roles = grants_inline(&user.grants);
    key_values(&[
        ("User", user.username.clone()),
        ("Roles", roles),
        ("ID", user.id.clone()),
        ("Created", absolute_and_relative(now, &user.created_at)),
        ("Manager", manager.to_owned()),
        ("Signed in with", credentials.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use drover_api::model::{AuditEntry, Disk, DiskUsage, EnrollmentTokenInfo, EnrollmentTokenState, Event, HostKind};
    use drover_api::tokens::ApiTokenInfo;
    use drover_api::users::Role;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn bytes() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (8 * 1024 * 1024 * 1024 - 400 * 1024 * 1024, "7.6 GiB"),
            (3 * (1 << 40), "3.0 TiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn durations() {
        let cases = [
            (0, 1, "0s"),
            (12, 1, "12s"),
            (59, 2, "59s"),
            (60, 1, "1m"),
            (3725, 1, "1h"),
            (3725, 2, "1h 2m"),
            (86_400 + 30, 2, "1d"),
            (3 * 86_400 + 4 * 3600 + 59, 2, "3d 4h"),
            (90, 0, "1m"),
        ];
        for (secs, units, want) in cases {
            assert_eq!(compact_duration(secs, units), want, "{secs} {units}");
        }
    }

    #[test]
    fn relative_times() {
        let cases = [
            ("2026-03-01T11:59:48Z", "12s ago"),
            ("2026-03-01T11:59:48.900Z", "11s ago"),
            ("2026-03-01T13:00:00+01:00", "0s ago"),
            ("2026-03-01T12:00:03Z", "0s ago"),
            ("2026-03-01T12:45:00Z", "in 45m"),
            ("2026-02-27T12:00:00Z", "2d ago"),
            ("yesterday", "yesterday"),
        ];
        for (at, want) in cases {
            assert_eq!(relative_time(now(), at), want, "{at}");
        }
        assert_eq!(absolute_and_relative(now(), "2026-03-01T11:00:00.123Z"), "2026-03-01T11:00:00Z (59m ago)");
    }

    #[test]
    fn ids() {
        assert_eq!(short_id("0f3c12ab-1111-2222-3333-444455556666"), "0f3c12ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_object_id("0f3c12ab-1111-2222-3333-444455556666"), "0f3c12ab");
        assert_eq!(short_object_id("k3x9p2aa"), "k3x9p2aa");
        assert_eq!(short_object_id("some-long-name-that-is-not-a-uuid-at"), "some-long-name-that-is-not-a-uuid-at");
    }

    #[test]
    fn table_layout() {
        let mut t = Table::new(&["NAME", "N", "NOTE"]).align_right(&[1]);
        t.push(vec!["a".into(), "100".into(), "".into()]);
        t.push(vec!["longer".into(), "7".into(), "x y".into()]);
        assert_eq!(t.render(), "NAME      N  NOTE\na       100\nlonger    7  x y\n");
    }

    #[test]
    fn key_value_layout() {
        let kv = key_values(&[("ID", "1".into()), ("Skipped", String::new()), ("Long key", "v".into())]);
        assert_eq!(kv, "ID:        1\nLong key:  v\n");
    }

    fn host() -> Host {
        Host {
            id: "0f3c12ab-1111-2222-3333-444455556666".into(),
            hostname: "web-1".into(),
            addresses: vec!["10.0.0.5".into()],
            kind: HostKind::Vm,
            kind_evidence: "dmi: KVM".into(),
            os: "Debian 12".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            cpu_cores: 4,
            memory_bytes: 8 << 30,
            fqdn: String::new(),
            container_id: String::new(),
            machine_cpu_cores: 0,
            machine_memory_bytes: 0,
            capacity_evidence: String::new(),
            disks: vec![Disk {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
            }],
            agent_version: "0.1.0".into(),
            labels: [("rack".to_owned(), "r1".to_owned()), ("tier".to_owned(), "web".to_owned())].into(),
            status: HostStatus::Healthy,
            enrolled_at: "2026-02-28T12:00:00.000Z".into(),
            last_heartbeat_at: Some("2026-03-01T11:59:48.000Z".into()),
            decommissioned_at: None,
            applied_generation: 3,
            metrics: Some(HostMetrics {
                at: "2026-03-01T11:59:48.000Z".into(),
                cpu_percent: 12.34,
                memory_used_bytes: 2 << 30,
                memory_total_bytes: 8 << 30,
                load1: 0.5,
                load5: 0.25,
                load15: 0.125,
                disks: vec![DiskUsage { mount_point: "/".into(), used_bytes: 25 << 30, total_bytes: 100 << 30 }],
                network_rx_bytes: 3 << 20,
                network_tx_bytes: 512,
                uptime_seconds: 3 * 86_400 + 4 * 3600 + 5,
            }),
            cert_serial: String::new(),
        }
    }

    #[test]
    fn hosts_list_layout() {
        let bare = Host {
            id: "99aa0000-1111-2222-3333-444455556666".into(),
            hostname: "db-10".into(),
            kind: HostKind::Container,
            status: HostStatus::Lost,
            labels: Labels::new(),
            last_heartbeat_at: None,
            metrics: None,
            ..host()
        };
        let list = HostList { items: vec![host(), bare], total: 5, limit: 2, offset: 0 };
        let want = "\
ID        HOSTNAME  STATUS   KIND       CPU%              MEM  LOAD  LAST HEARTBEAT  LABELS
0f3c12ab  web-1     healthy  vm         12.3  2.0 GiB/8.0 GiB  0.50  12s ago         rack=r1,tier=web
99aa0000  db-10     lost     container     -                -     -  never           -
2 of 5 hosts; next page: --offset 2
";
        assert_eq!(hosts_table(&list, now()), want);

        let last_page = HostList { items: vec![host()], total: 3, limit: 2, offset: 2 };
        assert!(hosts_table(&last_page, now()).ends_with("1 of 3 hosts (offset 2)\n"));
        let empty = HostList { items: vec![], total: 0, limit: 100, offset: 0 };
        assert_eq!(hosts_table(&empty, now()), "0 of 0 hosts\n");
    }

    #[test]
    fn host_detail_layout() {
        let want = "\
ID:                  0f3c12ab-1111-2222-3333-444455556666
Hostname:            web-1
Status:              healthy
Kind:                vm (dmi: KVM)
Addresses:           10.0.0.5
OS:                  Debian 12
Kernel:              6.1.0
Arch:                x86_64
CPU cores:           4
Memory:              8.0 GiB
Agent version:       0.1.0
Enrolled:            2026-02-28T12:00:00Z (1d ago)
Last heartbeat:      2026-03-01T11:59:48Z (12s ago)
Applied generation:  3

Labels:
  rack=r1
  tier=web

Disks:
  MOUNT  DEVICE     FS         SIZE      USED  USE%
  /      /dev/vda1  ext4  100.0 GiB  25.0 GiB   25%

Metrics (reported 12s ago):
  CPU:      12.3% of 4 cores
  Memory:   2.0 GiB of 8.0 GiB (25%)
  Load:     0.50 0.25 0.12 (1, 5, 15 min)
  Network:  3.0 MiB received, 512 B sent
  Uptime:   3d 4h
";
        assert_eq!(host_detail(&host(), now()), want);

        let gone = Host {
            status: HostStatus::Decommissioned,
            decommissioned_at: Some("2026-03-01T11:00:00Z".into()),
            labels: Labels::new(),
            disks: vec![],
            metrics: None,
            ..host()
        };
        let text = host_detail(&gone, now());
        assert!(text.contains("Decommissioned:      2026-03-01T11:00:00Z (1h ago)\n"), "{text}");
        assert!(text.contains("\nLabels: none\n\nDisks: none reported\n\nMetrics: none reported yet\n"), "{text}");
    }

    #[test]
    fn token_layouts() {
        let list = EnrollmentTokenList {
            items: vec![EnrollmentTokenInfo {
                id: "k3x9p2aa".into(),
                labels: [("rack".to_owned(), "r1".to_owned())].into(),
                max_uses: 5,
                uses: 2,
                created_by: "admin".into(),
                created_at: "2026-03-01T11:00:00Z".into(),
                expires_at: "2026-03-01T12:30:00Z".into(),
                revoked_at: None,
                state: EnrollmentTokenState::Active,
            }],
        };
        let want = "\
ID        STATE   USES  EXPIRES  CREATED BY  CREATED  LABELS
k3x9p2aa  active  2/5   in 30m   admin       1h ago   rack=r1
";
        assert_eq!(tokens_table(&list, now()), want);
        assert!(tokens_table(&EnrollmentTokenList { items: vec![] }, now()).starts_with("no enrollment tokens"));

        let created = CreatedEnrollmentToken {
            id: "k3x9p2aa".into(),
            token: "drv1.k3x9p2aa.secret.fp".into(),
            expires_at: "2026-03-01T13:00:00.000Z".into(),
            max_uses: 1,
            labels: Labels::new(),
            ca_fingerprint: "fp".into(),
        };
        let text = created_token(&created, "https://manager:7182", now());
        assert!(
            text.starts_with("Created enrollment token k3x9p2aa: valid for 1 host until 2026-03-01T13:00:00Z (in 1h)")
        );
        assert!(text.contains("\n  drv1.k3x9p2aa.secret.fp\n"));
        assert!(text.ends_with("\n  drover-agent --manager https://manager:7182 --token drv1.k3x9p2aa.secret.fp\n"));

        let api = CreatedApiToken { id: "id-1".into(), name: "ci".into(), token: "drvapi_x".into(), expires_at: None };
        let text = created_api_token(&api, &[], now());
        assert!(text.starts_with("Created API token \"ci\" (id-1) with your roles; it never expires.\n"), "{text}");
        assert!(text.contains("\n  drvapi_x\n"));
        let text = created_api_token(&api, &[Grant::on(Role::Operator, "prod")], now());
        assert!(text.starts_with("Created API token \"ci\" (id-1) with operator@prod;"), "{text}");

        let tokens = ApiTokenList {
            items: vec![
                ApiTokenInfo {
                    id: "t1".into(),
                    name: "ci".into(),
                    created_at: "2026-03-01T11:00:00Z".into(),
                    expires_at: Some("2026-03-31T12:00:00Z".into()),
                    last_used_at: Some("2026-03-01T11:59:00Z".into()),
                    grants: Some(vec![Grant::on(Role::Operator, "prod")]),
                },
                ApiTokenInfo {
                    id: "t2".into(),
                    name: "backup".into(),
                    created_at: "2026-02-28T12:00:00Z".into(),
                    expires_at: None,
                    last_used_at: None,
                    grants: None,
                },
            ],
        };
        let want = "\
ID  NAME    ROLES          CREATED  EXPIRES  LAST USED
t1  ci      operator@prod  1h ago   in 30d   1m ago
t2  backup  (the user's)   1d ago   never    never
";
        assert_eq!(api_tokens_table(&tokens, now()), want);
    }

    #[test]
    fn user_layouts() {
        let jane = UserInfo {
            id: "u-1".into(),
            username: "jane".into(),
            grants: vec![Grant::on(Role::Operator, "prod"), Grant::global(Role::Viewer)],
            disabled: false,
            source: UserSource::Local,
            created_at: "2026-02-28T12:00:00Z".into(),
            last_sign_in_at: Some("2026-03-01T11:00:00Z".into()),
        };
        let bob =
            UserInfo { username: "bob".into(), grants: vec![], disabled: true, last_sign_in_at: None, ..jane.clone() };
        let want = "\
USER  ROLES                  STATE     SOURCE  LAST SIGN-IN  CREATED
jane  operator@prod, viewer  enabled   local   1h ago        1d ago
bob   no roles               disabled  local   never         1d ago
";
        assert_eq!(users_table(&[jane.clone(), bob], now()), want);
        let text = user_detail(&jane, now());
        assert!(
            text.starts_with("User:          jane\nRoles:         operator@prod, viewer\nState:         enabled\n"),
            "{text}"
        );
    }

    #[test]
    fn event_and_audit_layouts() {
        let events = EventList {
            items: vec![Event {
                id: 7,
                at: "2026-03-01T11:59:00.250Z".into(),
                severity: "warning".into(),
                kind: "host_lost".into(),
                object_type: "host".into(),
                object_id: "0f3c12ab-1111-2222-3333-444455556666".into(),
                message: "no heartbeat for 30s".into(),
            }],
        };
        let want = "\
TIME                  SEVERITY  KIND       OBJECT         MESSAGE
2026-03-01T11:59:00Z  warning   host_lost  host 0f3c12ab  no heartbeat for 30s
";
        assert_eq!(events_table(&events), want);
        assert_eq!(events_table(&EventList { items: vec![] }), "no events\n");

        let audit = AuditList {
            items: vec![AuditEntry {
                id: 1,
                at: "2026-03-01T11:00:00Z".into(),
                username: "admin".into(),
                source: "127.0.0.1".into(),
                action: "enrollment_token.revoke".into(),
                object_type: "enrollment_token".into(),
                object_id: "k3x9p2aa".into(),
                summary: "revoked enrollment token".into(),
                via: "password".into(),
                permission: "fleet.enroll".into(),
            }],
        };
        let want = "\
TIME                  USER   SOURCE     ACTION                   OBJECT                     SUMMARY
2026-03-01T11:00:00Z  admin  127.0.0.1  enrollment_token.revoke  enrollment_token k3x9p2aa  revoked enrollment token
";
        assert_eq!(audit_table(&audit), want);
    }
}
