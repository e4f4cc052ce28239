//! Diagnostic bundles: `POST /api/v1/diagnostics` validates a request,
//! stores a bundle record and a command with one step per host in scope, and
//! starts [`collect::run`], which asks each host's agent for its part (a
//! redacted tar.gz, streamed to a temp file under DATA_DIR/diagnostics),
//! adds the manager's part (topology, configuration revisions, commands,
//! events, audit; redacted the same way) and writes one tar.gz with a
//! `manifest.json`. A host that fails or times out fails its step and is
//! named in the manifest; the bundle is then `partial` and the command still
//! `succeeded` (its message says which hosts are missing): a bundle with
//! what could be gathered is the point, never a failed command with nothing.
//! Bundles are listed, downloaded and deleted by whoever may read their
//! cluster (delete: `commands.run`); a sweep in the maintenance loop removes
//! those past `--diagnostics-retention` and the oldest beyond
//! `--diagnostics-max-total`. Redaction rules are a setting (defaults in
//! [`redact::default_rules`]).

pub mod bundle;
pub mod collect;
pub mod redact;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::{Actor, DomainError, Permission, Result, Scope, load_cluster};
use crate::AppState;
use crate::agent_requests::RedactionRule;
use crate::model::{now_millis, rfc3339};
use crate::store::{CommandRec, DiagnosticsRec, RedactionRulesRec, StepRec};
pub use drover_api::diagnostics::{
    DiagnosticsState, DiagnosticsView, FailedHost, INCLUDE_ALL, NewDiagnostics, RedactionRuleView,
};

/// The smallest bundle cap accepted.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;

/// Where bundles and their parts are written.
pub fn bundle_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("diagnostics")
}

pub fn view(d: &DiagnosticsRec) -> DiagnosticsView {
    DiagnosticsView {
        id: d.id.clone(),
        cluster: d.cluster.clone(),
        services: d.services.clone(),
        hosts: d.hosts.clone(),
        since: rfc3339(d.since),
        until: rfc3339(d.until),
        max_bytes: d.max_bytes,
        include: d.include.clone(),
        created_by: d.created_by.clone(),
        created_at: rfc3339(d.created_at),
        finished_at: d.finished_at.map(rfc3339),
        state: DiagnosticsState::parse(&d.state),
        size_bytes: d.size_bytes,
        command_id: d.command_id.clone(),
        failed_hosts: d
            .failed_hosts
            .iter()
            .map(|(hostname, reason)| FailedHost { hostname: hostname.clone(), reason: reason.clone() })
            .collect(),
    }
}

/// A point in time: RFC 3339, or a duration back from `now` (`2h`, `30m`).
pub fn parse_time(what: &str, s: &str, now: i64) -> Result<i64> {
    let t = s.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    match humantime::parse_duration(t) {
        Ok(d) => Ok(now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2).min(now)),
        Err(_) => Err(DomainError::Invalid(format!(
            "{what} {s:?} is neither an RFC 3339 time (2026-12-04T03:00:00Z) nor a duration back from now (2h, 30m)"
        ))),
    }
}

/// The redaction rules in force: the stored ones, or the defaults.
pub async fn rules_in_force(state: &AppState) -> Result<Vec<RedactionRule>> {
    match state.store.redaction_rules().await? {
        Some(rec) => serde_json::from_str(&rec.rules)
            .map_err(|e| DomainError::Internal(format!("stored redaction rules are unreadable: {e}"))),
        None => Ok(redact::default_rules()),
    }
}

pub async fn get_rules(state: &AppState, actor: &Actor) -> Result<Vec<RedactionRuleView>> {
    actor.require(Permission::Read, Scope::Any)?;
    Ok(rules_in_force(state)
        .await?
        .into_iter()
        .map(|r| RedactionRuleView { name: r.name, pattern: r.pattern })
        .collect())
}

/// Replaces the redaction rules (an empty list: none beyond the sensitive
/// parameter values, which are always redacted).
pub async fn put_rules(
    state: &AppState,
    actor: &Actor,
    rules: Vec<RedactionRuleView>,
) -> Result<Vec<RedactionRuleView>> {
    let granted = actor.require(Permission::ConfigWrite, Scope::Global)?;
    let rules: Vec<RedactionRule> =
        rules.into_iter().map(|r| RedactionRule { name: r.name, pattern: r.pattern }).collect();
    redact::check_rules(&rules).map_err(DomainError::Invalid)?;
    let rec = RedactionRulesRec {
        rules: serde_json::to_string(&rules).map_err(|e| DomainError::Internal(e.to_string()))?,
        updated_at: now_millis(),
        updated_by: actor.username.clone(),
    };
    state.store.put_redaction_rules(&rec).await?;
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    state
        .audit(granted.audit(
            "diagnostics.redaction.update",
            "settings",
            "redaction",
            format!("redaction rules set: {}", if names.is_empty() { "none".into() } else { names.join(", ") }),
        ))
        .await;
    Ok(rules.into_iter().map(|r| RedactionRuleView { name: r.name, pattern: r.pattern }).collect())
}

/// Every string value of a sensitive parameter of `service` in any of its
/// revisions (a password changed last week may still be in the logs).
async fn sensitive_values(state: &AppState, cluster: &str, service: &str, service_type: &str) -> Result<Vec<String>> {
    let Some(st) = state.catalog.get(service_type) else { return Ok(Vec::new()) };
    let mut out = BTreeSet::new();
    for rev in state.store.revisions(cluster, service).await? {
        let values = state.secrets.open_values(rev.config.clone()).map_err(|e| DomainError::Internal(e.to_string()))?;
        let maps = std::iter::once(&values.service).chain(values.groups.values()).chain(values.roles.values());
        for map in maps {
            for (k, v) in map {
                if st.parameter(k).is_some_and(|p| p.sensitive())
                    && let Some(s) = v.as_str()
                    && !s.is_empty()
                {
                    out.insert(s.to_owned());
                    // As it appears inside JSON text.
                    let escaped = serde_json::to_string(s).unwrap_or_default();
                    out.insert(escaped.trim_matches('"').to_owned());
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Starts collecting a bundle; answers at once with the running bundle.
pub async fn create(state: &Arc<AppState>, actor: &Actor, req: NewDiagnostics) -> Result<DiagnosticsView> {
    let granted = actor.require(Permission::CommandsRun, Scope::Cluster(&req.cluster))?;
    load_cluster(state, &req.cluster).await?;
    let cluster = req.cluster.clone();
    let now = now_millis();
    let since = parse_time("since", &req.since, now)?;
    let until = match &req.until {
        Some(u) => parse_time("until", u, now)?,
        None => now,
    };
    if until < since {
        return Err(DomainError::Invalid(format!(
            "until ({}) is before since ({}): the window would be empty",
            rfc3339(until),
            rfc3339(since)
        )));
    }
    let cap = state.config.diagnostics_max_bytes;
    let max_bytes = req.max_bytes.unwrap_or(cap);
    if max_bytes < MIN_MAX_BYTES.min(cap) || max_bytes > cap {
        return Err(DomainError::Invalid(format!(
            "max_bytes {max_bytes} is out of range: between {} and {cap} bytes (the manager's --diagnostics-max-bytes)",
            MIN_MAX_BYTES.min(cap)
        )));
    }
    let mut include: Vec<String> = Vec::new();
    for i in &req.include {
        if !INCLUDE_ALL.contains(&i.as_str()) {
            return Err(DomainError::Invalid(format!("unknown include {i:?}: use any of {}", INCLUDE_ALL.join(", "))));
        }
        if !include.contains(i) {
            include.push(i.clone());
        }
    }
    if include.is_empty() {
        include = INCLUDE_ALL.iter().map(|s| (*s).to_owned()).collect();
    }

    // Services and roles in scope.
    let all_services = state.store.list_services(&cluster).await?;
    let services: Vec<_> = if req.services.is_empty() {
        all_services
    } else {
        let mut picked = Vec::new();
        for name in &req.services {
            let s = all_services
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| DomainError::NotFound(format!("service {name} not found in cluster {cluster}")))?;
            if !picked.iter().any(|p: &crate::store::ServiceRec| p.name == s.name) {
                picked.push(s.clone());
            }
        }
        picked
    };
    let mut roles = Vec::new();
    for s in &services {
        roles.extend(state.store.roles_of_service(&cluster, &s.name).await?);
    }

    // Hosts in scope: those named (members of the cluster), else the hosts of
    // the roles in scope, else (no services named) every member.
    let members = state.store.cluster_hosts(&cluster).await?;
    let names = state.store.host_addresses(&members).await?;
    let hostname = |id: &str| names.get(id).map(|n| n.0.clone()).unwrap_or_else(|| id.to_owned());
    let mut host_ids: Vec<String> = Vec::new();
    if !req.hosts.is_empty() {
        for h in &req.hosts {
            let id = members.iter().find(|m| *m == h || hostname(m) == *h).ok_or_else(|| {
                DomainError::NotFound(format!("host {h} is not a member of cluster {cluster} (give a hostname or id)"))
            })?;
            if !host_ids.contains(id) {
                host_ids.push(id.clone());
            }
        }
    } else if req.services.is_empty() {
        host_ids = members.clone();
    } else {
        for r in &roles {
            if !host_ids.contains(&r.host_id) {
                host_ids.push(r.host_id.clone());
            }
        }
    }
    if host_ids.is_empty() {
        return Err(DomainError::Conflict(format!(
            "no hosts in scope in cluster {cluster}: it has no member hosts or the services named have no roles"
        )));
    }

    let mut secrets = Vec::new();
    for s in &services {
        secrets.extend(sensitive_values(state, &cluster, &s.name, &s.service_type).await?);
    }
    let rules = rules_in_force(state).await?;

    let id = format!("dg-{}", uuid::Uuid::new_v4().simple());
    let command_id = uuid::Uuid::new_v4().to_string();
    let mut steps = Vec::new();
    let mut hosts = Vec::new();
    for (i, h) in host_ids.iter().enumerate() {
        let seq = i as u32 + 1;
        let name = hostname(h);
        steps.push(StepRec::pending(seq, format!("collect diagnostics on {name} ({h})"), vec![h.clone()]));
        let role_ids = roles.iter().filter(|r| &r.host_id == h).map(|r| r.id.clone()).collect();
        hosts.push(collect::HostScope { id: h.clone(), hostname: name, seq, role_ids });
    }
    let service_names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let rec = DiagnosticsRec {
        id: id.clone(),
        cluster: cluster.clone(),
        services: service_names.clone(),
        hosts: hosts.iter().map(|h| h.hostname.clone()).collect(),
        since,
        until,
        max_bytes,
        include: include.clone(),
        created_by: actor.username.clone(),
        created_at: now,
        finished_at: None,
        state: DiagnosticsState::Running.as_str().into(),
        size_bytes: 0,
        command_id: command_id.clone(),
        failed_hosts: Vec::new(),
        file_name: format!("{id}.tar.gz"),
    };
    let cmd = CommandRec {
        id: command_id,
        cluster: cluster.clone(),
        service: String::new(),
        name: "diagnostics".into(),
        params: json!({"diagnostics": id, "services": service_names, "since": rfc3339(since), "until": rfc3339(until), "max_bytes": max_bytes}),
        state: "running".into(),
        message: String::new(),
        created_by: actor.username.clone(),
        created_at: now,
        finished_at: None,
    };
    state.store.insert_command(&cmd, &steps).await?;
    state.store.insert_diagnostics(&rec).await?;
    state
        .audit(granted.audit(
            "diagnostics.collect",
            "cluster",
            &cluster,
            format!(
                "diagnostic bundle {id} of {} on {} hosts, {} to {}, at most {max_bytes} bytes (command {})",
                if service_names.is_empty() { "no services".to_owned() } else { service_names.join(", ") },
                hosts.len(),
                rfc3339(since),
                rfc3339(until),
                cmd.id
            ),
        ))
        .await;
    let plan = collect::Plan {
        rec: rec.clone(),
        cmd,
        hosts,
        roles,
        services,
        secrets,
        rules,
        audit_allowed: actor.may(Permission::AuditRead, Scope::Cluster(&cluster)),
    };
    tokio::spawn(collect::run(state.clone(), plan));
    Ok(view(&rec))
}

async fn load(state: &AppState, actor: &Actor, id: &str) -> Result<DiagnosticsRec> {
    let not_found = || DomainError::NotFound(format!("diagnostic bundle {id} not found"));
    let rec = state.store.diagnostics(id).await?.ok_or_else(not_found)?;
    // Someone who may not read the cluster learns nothing, not even that it exists.
    if !actor.may(Permission::Read, Scope::Cluster(&rec.cluster)) {
        return Err(not_found());
    }
    Ok(rec)
}

/// Bundles of the clusters the caller may read, newest first.
pub async fn list(state: &AppState, actor: &Actor) -> Result<Vec<DiagnosticsView>> {
    let visible = actor.visible();
    Ok(state.store.list_diagnostics().await?.iter().filter(|d| visible.contains(&d.cluster)).map(view).collect())
}

pub async fn get(state: &AppState, actor: &Actor, id: &str) -> Result<DiagnosticsView> {
    Ok(view(&load(state, actor, id).await?))
}

/// A finished bundle's file: its path and the name to download it as.
pub async fn download(state: &AppState, actor: &Actor, id: &str) -> Result<(PathBuf, String, u64)> {
    let rec = load(state, actor, id).await?;
    let granted = actor.require_read(&rec.cluster)?;
    match DiagnosticsState::parse(&rec.state) {
        DiagnosticsState::Running => {
            return Err(DomainError::Conflict(format!("diagnostic bundle {id} is still being collected; try later")));
        }
        DiagnosticsState::Failed => {
            return Err(DomainError::Conflict(format!(
                "diagnostic bundle {id} failed and has no file; see command {}",
                rec.command_id
            )));
        }
        _ => {}
    }
    let path = bundle_dir(state).join(&rec.file_name);
    if !path.is_file() {
        return Err(DomainError::NotFound(format!("the file of diagnostic bundle {id} is gone")));
    }
    state
        .audit(granted.audit(
            "diagnostics.download",
            "diagnostics",
            id,
            format!("downloaded bundle of cluster {}", rec.cluster),
        ))
        .await;
    Ok((path, format!("drover-diagnostics-{}-{id}.tar.gz", rec.cluster), rec.size_bytes))
}

pub async fn delete(state: &AppState, actor: &Actor, id: &str) -> Result<()> {
    let rec = load(state, actor, id).await?;
    let granted = actor.require(Permission::CommandsRun, Scope::Cluster(&rec.cluster))?;
    if rec.state == DiagnosticsState::Running.as_str() {
        return Err(DomainError::Conflict(format!(
            "diagnostic bundle {id} is still being collected; delete it when it ends"
        )));
    }
    remove_files(state, &rec).await;
    state.store.delete_diagnostics(id).await?;
    state
        .audit(granted.audit(
            "diagnostics.delete",
            "diagnostics",
            id,
            format!("deleted bundle of cluster {}", rec.cluster),
        ))
        .await;
    Ok(())
}

async fn remove_files(state: &AppState, rec: &DiagnosticsRec) {
    let dir = bundle_dir(state);
    for p in [dir.join(&rec.file_name), dir.join(format!("{}.tmp", rec.file_name))] {
        if let Err(e) = tokio::fs::remove_file(&p).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove a diagnostic bundle file");
        }
    }
    let _ = tokio::fs::remove_dir_all(dir.join(format!("{}.parts", rec.id))).await;
}

/// The maintenance sweep: bundles left running by an earlier manager
/// process are marked failed; finished ones older than the retention go,
/// then the oldest while the total passes the cap.
pub async fn sweep(state: &AppState) -> Result<()> {
    sweep_within(state, state.config.diagnostics_retention, state.config.diagnostics_max_total).await
}

/// [`sweep`] with a given retention and total cap.
pub async fn sweep_within(state: &AppState, retention: std::time::Duration, max_total: u64) -> Result<()> {
    let now = now_millis();
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut total = 0u64;
    // Newest first.
    for rec in state.store.list_diagnostics().await? {
        if rec.state == DiagnosticsState::Running.as_str() {
            let cmd_running = state.store.command(&rec.command_id).await?.is_some_and(|(c, _)| c.state == "running");
            if !cmd_running {
                remove_files(state, &rec).await;
                let why = vec![(String::new(), "the manager restarted while the bundle was collected".to_owned())];
                state.store.finish_diagnostics(&rec.id, DiagnosticsState::Failed.as_str(), 0, &why, now).await?;
            }
            continue;
        }
        let too_old = now.saturating_sub(rec.created_at) > keep;
        let over = total + rec.size_bytes > max_total;
        if too_old || over {
            remove_files(state, &rec).await;
            state.store.delete_diagnostics(&rec.id).await?;
            let why = if too_old { "older than --diagnostics-retention" } else { "beyond --diagnostics-max-total" };
            tracing::info!(bundle = %rec.id, cluster = %rec.cluster, reason = why, "diagnostic bundle removed");
        } else {
            total += rec.size_bytes;
        }
    }
    Ok(())
}

/// Counts of what a bundle's manifest says was redacted, by rule.
pub fn merge_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// A bundle's file that could not be opened.
pub fn file_error(id: &str, e: &std::io::Error) -> DomainError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DomainError::NotFound(format!("the file of diagnostic bundle {id} is gone"))
    } else {
        DomainError::Internal(format!("open the file of diagnostic bundle {id}: {e}"))
    }
}
