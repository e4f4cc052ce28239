//! Running a bundle's command: each host's part gathered (at most
//! [`HOSTS_AT_ONCE`] at a time, each within `--diagnostics-host-timeout`)
//! into a temp file, the manager's part read from the store, then the one
//! tar.gz written by [`super::bundle`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::bundle::{BundleWriter, FileEntry, Skipped};
use super::redact::Redactor;
use super::{DiagnosticsState, bundle_dir};
use crate::AppState;
use crate::agent_requests::{AgentRequest, DiagnosticsQuery, RedactionRule, ReplyPart};
use crate::model::{now_millis, rfc3339};
use crate::store::{AuditSearch, CommandFilter, CommandRec, DiagnosticsRec, EventSearch, RoleRec, ServiceRec};

/// Hosts asked at the same time.
pub const HOSTS_AT_ONCE: usize = 8;
/// What a host may send beyond its share before it is cut off (headers,
/// the last chunk).
const SLACK: u64 = 256 * 1024;

/// One host in scope and its step.
#[derive(Debug, Clone)]
pub struct HostScope {
    pub id: String,
    pub hostname: String,
    pub seq: u32,
    pub role_ids: Vec<String>,
}

/// Everything the run needs, decided when the bundle was asked for.
#[derive(Debug)]
pub struct Plan {
    pub rec: DiagnosticsRec,
    pub cmd: CommandRec,
    pub hosts: Vec<HostScope>,
    pub roles: Vec<RoleRec>,
    pub services: Vec<ServiceRec>,
    pub secrets: Vec<String>,
    pub rules: Vec<RedactionRule>,
    /// Whether the requester may read the audit log of the cluster.
    pub audit_allowed: bool,
}

/// How one host's part went.
#[derive(Debug)]
pub struct HostPart {
    pub host: HostScope,
    /// The host's tar.gz, when it sent one.
    pub archive: Option<PathBuf>,
    pub bytes: u64,
    /// The host's manifest (JSON object) or null.
    pub manifest: Value,
    pub truncated: bool,
    /// Set when the host's part is missing: why.
    pub failed: Option<String>,
    /// The agent reported a problem but sent something.
    pub warning: Option<String>,
}

/// What the manager's part and the hosts' parts come to.
fn shares(max_bytes: u64, hosts: usize, manager_part: bool) -> (u64, u64, u64) {
    // Kept for the manifest: a few KiB plus some per host.
    let reserve = (16 * 1024 + 4 * 1024 * hosts as u64).min(max_bytes / 4);
    let usable = max_bytes - reserve;
    let manager = if manager_part { usable / 10 } else { 0 };
    let host = (usable - manager) / hosts.max(1) as u64;
    (reserve, manager, host)
}

fn query(plan: &Plan, host: &HostScope, share: u64) -> DiagnosticsQuery {
    let host_parts = ["logs", "config", "processes", "health", "facts", "metrics", "agent_log"];
    DiagnosticsQuery {
        role_ids: host.role_ids.clone(),
        since: plan.rec.since,
        until: plan.rec.until,
        max_bytes: share,
        include: plan.rec.include.iter().filter(|i| host_parts.contains(&i.as_str())).cloned().collect(),
        secrets: plan.secrets.clone(),
        rules: plan.rules.clone(),
    }
}

async fn step(state: &AppState, cmd: &str, seq: u32, st: &str, msg: &str, started: bool, finished: bool) {
    let now = now_millis();
    let r = state.store.update_step(cmd, seq, st, msg, started.then_some(now), finished.then_some(now)).await;
    if let Err(e) = r {
        tracing::error!(command = %cmd, step = seq, error = %e, "could not record a diagnostics step");
    }
}

/// Receives one host's answer into `path`. Ok: (bytes, manifest, truncated,
/// the agent's error if it sent something anyway).
async fn receive(
    state: &AppState,
    host: &HostScope,
    q: DiagnosticsQuery,
    path: &Path,
) -> Result<(u64, Value, bool, Option<String>), String> {
    let limit = q.max_bytes + SLACK;
    let mut replies = state.agent_requests.send(&host.id, AgentRequest::Diagnostics(q)).map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::create(path).await.map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut written = 0u64;
    loop {
        match replies.next().await {
            Some(ReplyPart::Archive(bytes)) => {
                written += bytes.len() as u64;
                if written > limit {
                    return Err(format!(
                        "the agent sent more than its share of {} bytes; its part was dropped",
                        limit - SLACK
                    ));
                }
                file.write_all(&bytes).await.map_err(|e| format!("write {}: {e}", path.display()))?;
            }
            Some(ReplyPart::Lines(_)) => {}
            Some(ReplyPart::End(end)) => {
                file.flush().await.map_err(|e| format!("write {}: {e}", path.display()))?;
                let manifest = if end.manifest_json.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&end.manifest_json)
                        .unwrap_or_else(|e| json!({"unreadable": format!("the agent's manifest is not JSON: {e}")}))
                };
                if written == 0 {
                    let why = if end.error.is_empty() { "the agent sent no archive".to_owned() } else { end.error };
                    return Err(why);
                }
                let warning = (!end.error.is_empty()).then_some(end.error);
                return Ok((written, manifest, end.truncated, warning));
            }
            None => return Err("the agent's answer ended without its end".into()),
        }
    }
}

async fn collect_host(state: &AppState, plan: &Plan, host: HostScope, share: u64, parts: &Path) -> HostPart {
    step(state, &plan.cmd.id, host.seq, "running", "asking the agent", true, false).await;
    let path = parts.join(format!("{}.tar.gz", host.seq));
    let timeout = state.config.diagnostics_host_timeout;
    let outcome = match tokio::time::timeout(timeout, receive(state, &host, query(plan, &host, share), &path)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
    };
    match outcome {
        Ok((bytes, manifest, truncated, warning)) => {
            let mut msg = format!("{bytes} bytes from {}", host.hostname);
            if truncated {
                msg.push_str(" (cut to its share)");
            }
            if let Some(w) = &warning {
                msg.push_str(&format!("; the agent reported: {w}"));
            }
            step(state, &plan.cmd.id, host.seq, "succeeded", &msg, false, true).await;
            HostPart { host, archive: Some(path), bytes, manifest, truncated, failed: None, warning }
        }
        Err(why) => {
            let _ = tokio::fs::remove_file(&path).await;
            step(state, &plan.cmd.id, host.seq, "failed", &format!("{}: {why}", host.hostname), false, true).await;
            tracing::warn!(bundle = %plan.rec.id, host = %host.id, reason = %why, "a host's diagnostics part is missing");
            HostPart {
                host,
                archive: None,
                bytes: 0,
                manifest: Value::Null,
                truncated: false,
                failed: Some(why),
                warning: None,
            }
        }
    }
}

/// The manager's part: `(path, JSON)` pairs, before redaction.
async fn manager_part(
    state: &AppState,
    plan: &Plan,
    skipped: &mut Vec<Skipped>,
) -> crate::store::Result<Vec<(String, Value)>> {
    let rec = &plan.rec;
    let wants = |p: &str| rec.include.iter().any(|i| i == p);
    let mut out = Vec::new();
    let host_ids: Vec<String> = plan.hosts.iter().map(|h| h.id.clone()).collect();
    if wants("topology") {
        let mut hosts = Vec::new();
        for id in state.store.cluster_hosts(&rec.cluster).await? {
            if let Some(h) = state.store.host(&id).await? {
                hosts.push(json!({"id": h.id, "hostname": h.hostname, "addresses": h.addresses, "status": h.status,
                    "labels": h.labels, "os": h.os, "kernel": h.kernel, "cpu_cores": h.cpu_cores, "memory_bytes": h.memory_bytes,
                    "in_scope": host_ids.contains(&id)}));
            }
        }
        let names: BTreeMap<&str, &str> = plan.hosts.iter().map(|h| (h.id.as_str(), h.hostname.as_str())).collect();
        let services: Vec<Value> = plan
            .services
            .iter()
            .map(|s| {
                let roles: Vec<Value> = plan
                    .roles
                    .iter()
                    .filter(|r| r.service == s.name)
                    .map(|r| json!({"id": r.id, "name": r.name, "role_type": r.role_type, "group": r.group,
                        "host_id": r.host_id, "hostname": names.get(r.host_id.as_str()), "run_state": r.run_state,
                        "status": state.registry.role_status(&r.id).map(|st| json!({"state": st.state, "health": st.health, "pid": st.pid}))}))
                    .collect();
                json!({"name": s.name, "service_type": s.service_type, "revision": s.revision, "roles": roles})
            })
            .collect();
        out.push((
            "manager/topology.json".to_owned(),
            json!({"cluster": rec.cluster, "services": services, "hosts": hosts}),
        ));
    }
    if wants("revisions") {
        for s in &plan.services {
            let st = state.catalog.get(&s.service_type);
            let revs = state.store.revisions(&rec.cluster, &s.name).await?;
            // The revision in force at `since` and every one made in the window.
            let in_force_at_since = revs.iter().filter(|r| r.created_at < rec.since).map(|r| r.revision).max();
            let mut list = Vec::new();
            for r in revs.iter().filter(|r| {
                r.created_at <= rec.until && (r.created_at >= rec.since || Some(r.revision) == in_force_at_since)
            }) {
                let values = match (state.secrets.open_values(r.config.clone()), st) {
                    (Ok(v), Some(st)) => {
                        let mask = |m: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
                            m.iter()
                                .map(|(k, v)| {
                                    (
                                        k.clone(),
                                        st.parameter(k)
                                            .map(|p| drover_service_types::params::mask(p, v))
                                            .unwrap_or_else(|| v.clone()),
                                    )
                                })
                                .collect()
                        };
                        json!({"service": mask(&v.service),
                            "groups": v.groups.iter().map(|(g, m)| (g.clone(), mask(m))).collect::<BTreeMap<_, _>>(),
                            "roles": v.roles.iter().map(|(g, m)| (g.clone(), mask(m))).collect::<BTreeMap<_, _>>()})
                    }
                    (Err(e), _) => json!({"unreadable": e.to_string()}),
                    (_, None) => json!({"unreadable": format!("unknown service type {}", s.service_type)}),
                };
                list.push(json!({"revision": r.revision, "author": r.author, "source": r.source, "created_at": rfc3339(r.created_at),
                    "message": r.message, "changed_keys": r.changed_keys, "values": values}));
            }
            out.push((
                format!("manager/revisions/{}.json", s.name),
                json!({"service": s.name, "current_revision": s.revision, "revisions": list}),
            ));
        }
    }
    if wants("commands") {
        let filter = CommandFilter { cluster: Some(rec.cluster.clone()), limit: 1000, ..Default::default() };
        let mut list = Vec::new();
        for c in state.store.search_commands(&filter).await? {
            if c.created_at > rec.until || c.finished_at.is_some_and(|f| f < rec.since) {
                continue;
            }
            let steps = state.store.command(&c.id).await?.map(|(_, s)| s).unwrap_or_default();
            list.push(serde_json::to_value(crate::domain::commands::view(&c, &steps)).unwrap_or(Value::Null));
        }
        out.push(("manager/commands.json".to_owned(), Value::Array(list)));
    }
    // Events and audit entries about the cluster, its services, roles and hosts.
    let role_ids: Vec<&str> = plan.roles.iter().map(|r| r.id.as_str()).collect();
    let ours = |object_id: &str| {
        object_id == rec.cluster
            || object_id.starts_with(&format!("{}/", rec.cluster))
            || host_ids.iter().any(|h| h == object_id)
            || role_ids.contains(&object_id)
            || object_id == rec.id
    };
    if wants("events") {
        let search = EventSearch { since: Some(rec.since), until: Some(rec.until), limit: 1000, ..Default::default() };
        let events: Vec<Value> = state
            .store
            .search_events(&search)
            .await?
            .into_iter()
            .filter(|e| ours(&e.object_id))
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect();
        out.push(("manager/events.json".to_owned(), Value::Array(events)));
    }
    if wants("audit") {
        if plan.audit_allowed {
            let search =
                AuditSearch { since: Some(rec.since), until: Some(now_millis()), limit: 1000, ..Default::default() };
            let entries: Vec<Value> = state
                .store
                .search_audit(&search)
                .await?
                .into_iter()
                .filter(|a| {
                    ours(&a.object_id) && (a.at.as_str() <= rfc3339(rec.until).as_str() || a.object_id == rec.cluster)
                })
                .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                .collect();
            out.push(("manager/audit.json".to_owned(), Value::Array(entries)));
        } else {
            skipped.push(Skipped {
                what: "manager/audit.json".into(),
                reason: format!("{} lacks permission audit.read on cluster {}", rec.created_by, rec.cluster),
            });
        }
    }
    Ok(out)
}

/// What the bundle's assembly reports.
struct Written {
    size: u64,
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    out: &Path,
    plan_rec: &DiagnosticsRec,
    request: Value,
    manager_parts: Vec<(String, Value)>,
    hosts: &[HostPart],
    mut skipped: Vec<Skipped>,
    mut redactor: Redactor,
    shares: (u64, u64, u64),
) -> std::io::Result<Written> {
    let (reserve, manager_share, _) = shares;
    let mut w = BundleWriter::create(out, plan_rec.max_bytes, reserve)?;
    w.skipped.append(&mut skipped);
    // The manager's part first, within its share.
    let mut used = 0;
    let manager_before = w.files.len();
    for (path, value) in manager_parts {
        let value = redactor.redact_json(value);
        let data = serde_json::to_vec_pretty(&value).unwrap_or_default();
        used += w.add(&path, &data, manager_share.saturating_sub(used))?;
    }
    let manager_files: Vec<FileEntry> = w.files[manager_before..].to_vec();
    // Then each host, with a fair share of what is left.
    let mut host_manifests = serde_json::Map::new();
    let answered: Vec<&HostPart> = hosts.iter().filter(|h| h.archive.is_some()).collect();
    for (i, h) in answered.iter().enumerate() {
        let Some(archive) = &h.archive else { continue };
        let left = (answered.len() - i) as u64;
        let budget = w.room()? / left;
        let before = w.files.len();
        let prefix = format!("hosts/{}", h.host.hostname);
        let used = w.add_host_archive(archive, &prefix, budget, &mut redactor)?;
        let files: Vec<FileEntry> = w.files[before..].to_vec();
        host_manifests.insert(
            h.host.hostname.clone(),
            json!({"host_id": h.host.id, "status": if h.warning.is_some() { "answered with errors" } else { "answered" },
                "received_bytes": h.bytes, "bytes": used, "truncated": h.truncated, "warning": h.warning,
                "files": files.len(), "agent_manifest": redactor.redact_json(h.manifest.clone())}),
        );
    }
    for h in hosts.iter().filter(|h| h.failed.is_some()) {
        host_manifests
            .insert(h.host.hostname.clone(), json!({"host_id": h.host.id, "status": "failed", "reason": h.failed}));
    }
    let failed: Vec<Value> = hosts
        .iter()
        .filter_map(|h| {
            h.failed.as_ref().map(|why| json!({"hostname": h.host.hostname, "host_id": h.host.id, "reason": why}))
        })
        .collect();
    let request = redactor.redact_json(request);
    // What the agents replaced and what the manager replaced after them.
    let mut counts = redactor.counts.clone();
    for h in hosts {
        if let Some(agent) = h.manifest["redactions"].as_object() {
            let agent: BTreeMap<String, u64> =
                agent.iter().filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n))).collect();
            super::merge_counts(&mut counts, &agent);
        }
    }
    let size = w.finish(|w, brief| {
        let files: Value = if brief {
            json!(format!("{} files (the list was left out to stay within max_bytes)", w.files.len()))
        } else {
            serde_json::to_value(&w.files).unwrap_or(Value::Null)
        };
        let total: u64 = w.files.iter().map(|f| f.bytes).sum();
        let manifest = json!({
            "id": plan_rec.id,
            "cluster": plan_rec.cluster,
            "created_by": plan_rec.created_by,
            "created_at": rfc3339(plan_rec.created_at),
            "request": request,
            "files": files,
            "manager": {"files": manager_files.len()},
            "hosts": host_manifests,
            "failed_hosts": failed,
            "redactions": counts,
            "skipped": w.skipped,
            "errors": w.errors,
            "truncated": w.truncated || hosts.iter().any(|h| h.truncated),
            "bytes": total,
        });
        serde_json::to_vec_pretty(&manifest).unwrap_or_default()
    })?;
    Ok(Written { size })
}

/// Collects and writes a bundle; spawned once per bundle.
pub async fn run(state: Arc<AppState>, plan: Plan) {
    let id = plan.rec.id.clone();
    let dir = bundle_dir(&state);
    let parts = dir.join(format!("{id}.parts"));
    let outcome = run_inner(&state, &plan, &dir, &parts).await;
    let _ = tokio::fs::remove_dir_all(&parts).await;
    let now = now_millis();
    let (bundle_state, size, failed, cmd_state, message) = match outcome {
        Ok((size, failed)) if failed.is_empty() => {
            (DiagnosticsState::Ready, size, failed, "succeeded", format!("bundle {id} ready ({size} bytes)"))
        }
        Ok((size, failed)) => {
            let names: Vec<String> = failed.iter().map(|(h, why)| format!("{h} ({why})")).collect();
            let msg = format!("bundle {id} is partial ({size} bytes): missing {}", names.join(", "));
            (DiagnosticsState::Partial, size, failed, "succeeded", msg)
        }
        Err(e) => {
            tracing::error!(bundle = %id, error = %e, "diagnostic bundle failed");
            let _ = tokio::fs::remove_file(dir.join(&plan.rec.file_name)).await;
            (DiagnosticsState::Failed, 0, Vec::new(), "failed", format!("bundle {id} could not be written: {e}"))
        }
    };
    // The bundle's record first: the sweep takes a running bundle whose
    // command ended for one a manager restart interrupted.
    if let Err(e) = state.store.finish_diagnostics(&id, bundle_state.as_str(), size, &failed, now).await {
        tracing::error!(bundle = %id, error = %e, "could not record the bundle's outcome");
    }
    if let Err(e) = state.store.finish_command(&plan.cmd.id, cmd_state, &message, now).await {
        tracing::error!(command = %plan.cmd.id, error = %e, "could not record command outcome");
    }
    tracing::info!(bundle = %id, cluster = %plan.rec.cluster, state = bundle_state.as_str(), size, "diagnostic bundle finished");
}

async fn run_inner(
    state: &Arc<AppState>,
    plan: &Plan,
    dir: &Path,
    parts: &Path,
) -> anyhow::Result<(u64, Vec<(String, String)>)> {
    use anyhow::Context;
    tokio::fs::create_dir_all(parts).await.with_context(|| format!("create {}", parts.display()))?;
    let manager_wanted =
        plan.rec.include.iter().any(|i| ["topology", "revisions", "commands", "events", "audit"].contains(&i.as_str()));
    let shares = shares(plan.rec.max_bytes, plan.hosts.len(), manager_wanted);
    let host_parts: Vec<HostPart> = futures::stream::iter(plan.hosts.iter().cloned())
        .map(|h| collect_host(state, plan, h, shares.2, parts))
        .buffer_unordered(HOSTS_AT_ONCE)
        .collect()
        .await;
    let mut host_parts = host_parts;
    host_parts.sort_by_key(|h| h.host.seq);
    let mut skipped = Vec::new();
    let manager_parts = manager_part(state, plan, &mut skipped).await.context("read the manager's part")?;
    let request = json!({
        "cluster": plan.rec.cluster, "services": plan.rec.services, "hosts": plan.rec.hosts,
        "since": rfc3339(plan.rec.since), "until": rfc3339(plan.rec.until), "max_bytes": plan.rec.max_bytes,
        "include": plan.rec.include, "command_id": plan.cmd.id,
    });
    let failed: Vec<(String, String)> =
        host_parts.iter().filter_map(|h| h.failed.clone().map(|why| (h.host.hostname.clone(), why))).collect();
    let tmp = dir.join(format!("{}.tmp", plan.rec.file_name));
    let out = dir.join(&plan.rec.file_name);
    let redactor = Redactor::new(&plan.secrets, &plan.rules);
    let rec = plan.rec.clone();
    let tmp2 = tmp.clone();
    let written = tokio::task::spawn_blocking(move || {
        assemble(&tmp2, &rec, request, manager_parts, &host_parts, skipped, redactor, shares)
    })
    .await
    .context("the bundle writer stopped")?
    .context("write the bundle")?;
    tokio::fs::rename(&tmp, &out).await.with_context(|| format!("rename {} to {}", tmp.display(), out.display()))?;
    Ok((written.size, failed))
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn shares_stay_within_the_cap() {
        for (max, hosts) in [(64 * 1024, 1), (64 * 1024, 20), (200 << 20, 20), (1 << 30, 3)] {
            let (reserve, manager, host) = shares(max, hosts, true);
            assert!(reserve + manager + host * hosts as u64 <= max, "{max} {hosts}");
            assert!(host > 0);
        }
    }
}
