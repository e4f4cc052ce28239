//! Environments: a stored template instantiated into the cluster of the same
//! name on containers the Docker provider makes for every host group, owned
//! by a user and torn down when it expires. Up is one instantiation command
//! ([`super::templates::instantiate`]); down removes the containers with
//! their volumes, the services, the hosts and the cluster, leaving nothing on
//! the engine; the reaper ([`reap`]) does the same to expired ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drover_api::commands::CommandState;
use drover_api::environments::{
    CreateEnvironment, CreateSnapshot, Endpoint, EnvironmentDetail, EnvironmentState, EnvironmentView,
    SnapshotHostView, SnapshotView, Teardown,
};
use drover_api::templates::{HostGroup, HostGroupHosts, HostGroupRole, Instantiate, ProviderKind};

use super::templates::{self, instantiate};
use super::{Actor, DomainError, Permission, Result, Scope, clusters, roles, services, validate_name};
use crate::AppState;
use crate::model::{now_millis, rfc3339};
use crate::providers::{self, ProviderError};
use crate::store::{EnvironmentRec, NewEvent, SnapshotHost, SnapshotRec, SnapshotRole};

/// The shortest and longest lifetime an environment may be given.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

/// `8h`, `30m`, `2d`: a lifetime; `never`: none.
pub fn parse_ttl(text: &str) -> std::result::Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("invalid ttl {text:?}: {e}; write e.g. 8h, 30m, 2d or never"))?;
    if !(MIN_TTL..=MAX_TTL).contains(&d) {
        return Err(format!("invalid ttl {text:?}: must be between 1m and 365d, or never"));
    }
    Ok(Some(d))
}

fn provider_error(e: ProviderError) -> DomainError {
    match e {
        ProviderError::Invalid(m) => DomainError::Invalid(m),
        ProviderError::NotFound(m) => DomainError::NotFound(m),
        ProviderError::Forbidden(m) => DomainError::Conflict(m),
        ProviderError::Engine(m) => DomainError::Unavailable(m),
        ProviderError::Store(e) => e.into(),
    }
}

/// Brings an environment up: its record, then one instantiation command on
/// new containers. The same call for an environment whose instantiation
/// failed runs it again (reusing what the first run made).
pub async fn create(state: &Arc<AppState>, actor: &Actor, req: CreateEnvironment) -> Result<EnvironmentDetail> {
    // Containers come only for a caller with fleet.enroll.
    providers::Actor::authorize(actor)?;
    validate_name("environment", &req.name)?;
    let owner = req.owner.clone().unwrap_or_else(|| actor.username.clone());
    if owner != actor.username {
        actor.require(Permission::UsersWrite, Scope::Global)?;
        if state.store.user_by_name(&owner).await?.is_none() {
            return Err(DomainError::Invalid(format!("owner {owner:?}: no such user")));
        }
    }
    let ttl_text = req.ttl.clone().unwrap_or_else(|| state.config.env_default_ttl.clone());
    let ttl = parse_ttl(&ttl_text).map_err(DomainError::Invalid)?;
    let snapshot = match (&req.from_snapshot, req.template.is_empty()) {
        (Some(_), false) => {
            return Err(DomainError::Invalid("give template or from_snapshot, not both".into()));
        }
        (None, true) => return Err(DomainError::Invalid("give template (or from_snapshot)".into())),
        (Some(snap), true) => Some(load_snapshot(state, snap).await?),
        (None, false) => None,
    };
    let template_name = snapshot.as_ref().map_or_else(|| req.template.clone(), |s| snapshot_template(&s.name));
    let template = templates::get(state, actor, &template_name, req.version).await?;
    let doc = &template.document;
    for g in req.host_groups.keys() {
        if !doc.host_groups.iter().any(|hg| &hg.name == g) {
            return Err(DomainError::Invalid(format!(
                "host_groups.{g}: template {} version {} has no host group {g}",
                template.name, template.version
            )));
        }
    }
    let mut host_groups = BTreeMap::new();
    let mut restore = instantiate::Restore::new();
    let mut wanted: u32 = 0;
    for hg in &doc.host_groups {
        let ask = req.host_groups.get(&hg.name).cloned().unwrap_or_default();
        let mut count = ask.count.unwrap_or(hg.cardinality);
        let mut image = ask.image.clone().or_else(|| req.image.clone());
        if let Some(snap) = &snapshot {
            // One container per group, from its own image, with its data.
            let host = snap.hosts.iter().find(|h| h.group == hg.name).ok_or_else(|| {
                DomainError::Internal(format!("snapshot {} has no container for host group {}", snap.name, hg.name))
            })?;
            if ask.count.is_some_and(|c| c != 1) || ask.image.is_some() {
                return Err(DomainError::Invalid(format!(
                    "host_groups.{}: a snapshot's host group is one container from its image; give only cpus or memory",
                    hg.name
                )));
            }
            count = 1;
            image = Some(host.image.clone());
            let roles = host.roles.iter().map(|r| (r.service.clone(), r.role_type.clone(), r.role_id.clone()));
            restore.insert(hg.name.clone(), roles.collect());
        }
        wanted = wanted.saturating_add(count);
        host_groups.insert(
            hg.name.clone(),
            HostGroupHosts::Provider {
                provider: ProviderKind::Docker,
                count: Some(count),
                image,
                network: req.network.clone(),
                cpus: ask.cpus,
                memory: ask.memory,
            },
        );
    }
    let existing = state.store.environment(&req.name).await?;
    match &existing {
        Some(env) if env.template != template.name || env.template_version != template.version => {
            return Err(DomainError::Conflict(format!(
                "environment {} exists from template {} version {}; take it down first (drover env down {})",
                env.name, env.template, env.template_version, env.name
            )));
        }
        Some(env) if env.owner != owner => {
            return Err(DomainError::Conflict(format!(
                "environment {} exists and is owned by {}",
                env.name, env.owner
            )));
        }
        None if state.store.cluster(&req.name).await?.is_some() => {
            return Err(DomainError::Conflict(format!(
                "cluster {} exists and is not an environment; choose another name",
                req.name
            )));
        }
        _ => {}
    }
    let others: u32 = state
        .store
        .environments()
        .await?
        .iter()
        .filter(|e| e.owner == owner && e.name != req.name)
        .map(|e| e.hosts)
        .sum();
    let limit = state.config.env_max_hosts_per_owner;
    if others.saturating_add(wanted) > limit {
        return Err(DomainError::Conflict(format!(
            "owner {owner} has {others} container hosts in other environments; this one needs {wanted} more, \
             above the limit of {limit} per owner (--env-max-hosts-per-owner); take an environment down first"
        )));
    }
    let now = now_millis();
    let rec = EnvironmentRec {
        name: req.name.clone(),
        owner: owner.clone(),
        template: template.name.clone(),
        template_version: template.version,
        command_id: String::new(),
        hosts: wanted,
        created_at: now,
        created_by: actor.username.clone(),
        expires_at: ttl.map(|d| now + d.as_millis() as i64),
    };
    if existing.is_none() {
        state.store.insert_environment(&rec).await?;
    }
    let started = instantiate::instantiate_restoring(
        state,
        actor,
        &template.name,
        Instantiate {
            cluster: req.name.clone(),
            version: Some(template.version),
            variables: req.variables.clone(),
            host_groups,
        },
        restore,
    )
    .await;
    let cmd = match started {
        Ok(cmd) => cmd,
        Err(e) => {
            if existing.is_none() {
                state.store.delete_environment(&req.name).await?;
            }
            return Err(e);
        }
    };
    state.store.set_environment_command(&req.name, &cmd.id).await?;
    let granted = actor.require(Permission::HostsWrite, Scope::Global)?;
    let expires = rec.expires_at.map_or("never".to_owned(), rfc3339);
    state
        .audit(granted.audit(
            if existing.is_some() { "environment.resume" } else { "environment.create" },
            "environment",
            &req.name,
            format!(
                "template {} version {} for {owner}, {wanted} containers, expires {expires} (command {})",
                template.name, template.version, cmd.id
            ),
        ))
        .await;
    detail(state, actor, &req.name).await
}

/// `hosts`: how many containers it has (the caller has the provider's records).
async fn view(state: &AppState, env: EnvironmentRec, hosts: u32) -> Result<EnvironmentView> {
    let command_state = match state.store.command(&env.command_id).await? {
        Some((c, _)) => CommandState::parse(&c.state),
        None => CommandState::Running,
    };
    let state_now = match command_state {
        CommandState::Running => EnvironmentState::Creating,
        CommandState::Succeeded => EnvironmentState::Ready,
        CommandState::Failed | CommandState::Aborted => EnvironmentState::Failed,
    };
    let health = state.alerts.health().clusters.get(&env.name).map(|h| super::health::status(h.status));
    Ok(EnvironmentView {
        cluster: env.name.clone(),
        name: env.name,
        owner: env.owner,
        template: env.template,
        template_version: env.template_version,
        state: state_now,
        command_id: env.command_id,
        command_state,
        created_at: rfc3339(env.created_at),
        created_by: env.created_by,
        expires_at: env.expires_at.map(rfc3339),
        hosts,
        health,
    })
}

/// The environments whose clusters the caller may read.
pub async fn list(state: &AppState, actor: &Actor) -> Result<Vec<EnvironmentView>> {
    actor.require(Permission::Read, Scope::Any)?;
    let visible = actor.visible();
    // One read of the provider's records for the whole list.
    let containers = state.store.provider_hosts(providers::DOCKER).await?;
    let mut out = Vec::new();
    for env in state.store.environments().await? {
        if visible.contains(&env.name) {
            let hosts = containers.iter().filter(|r| providers::of_cluster(r, &env.name, None)).count() as u32;
            out.push(view(state, env, hosts).await?);
        }
    }
    Ok(out)
}

async fn load(state: &AppState, name: &str) -> Result<EnvironmentRec> {
    state.store.environment(name).await?.ok_or_else(|| DomainError::NotFound(format!("environment {name} not found")))
}

/// One environment with its containers and the endpoints of its roles.
pub async fn detail(state: &AppState, actor: &Actor, name: &str) -> Result<EnvironmentDetail> {
    actor.require_read(name)?;
    let env = load(state, name).await?;
    let recs = providers::cluster_hosts(state, name, None).await.map_err(provider_error)?;
    let containers = providers::describe(state, recs).await.map_err(provider_error)?;
    let environment = view(state, env, containers.len() as u32).await?;
    let endpoints = endpoints(state, name).await?;
    Ok(EnvironmentDetail { environment, containers, endpoints })
}

/// Every role of the cluster with its host's address and its ports.
async fn endpoints(state: &AppState, cluster: &str) -> Result<Vec<Endpoint>> {
    if state.store.cluster(cluster).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for svc in state.store.list_services(cluster).await? {
        let ctx = super::load_context(state, cluster, &svc.name).await?;
        let ids: Vec<String> = ctx.roles().iter().map(|r| r.host_id.clone()).collect();
        let addresses = state.store.host_addresses(&ids).await?;
        for r in ctx.roles() {
            let (hostname, addrs) = addresses.get(&r.host_id).cloned().unwrap_or_default();
            out.push(Endpoint {
                service: svc.name.clone(),
                role_type: r.role_type.clone(),
                role: r.name.clone(),
                hostname,
                address: addrs.into_iter().next().unwrap_or_default(),
                ports: roles::role_ports(&ctx.service_type, &ctx.values, r).into_iter().collect(),
            });
        }
    }
    Ok(out)
}

/// Takes an environment down: a caller with `fleet.enroll` (removing
/// containers needs it) who owns it or may write every cluster.
pub async fn delete(state: &AppState, actor: &Actor, name: &str) -> Result<Teardown> {
    providers::Actor::authorize(actor)?;
    let env = load(state, name).await?;
    if env.owner != actor.username {
        actor.require(Permission::ClustersWrite, Scope::Global)?;
    }
    let out = teardown(state, actor, &env).await?;
    let granted = actor.require(Permission::FleetEnroll, Scope::Global)?;
    state
        .audit(granted.audit(
            "environment.delete",
            "environment",
            name,
            format!(
                "took down environment of {} in {:.1}s: services {:?}, containers {:?}",
                env.owner, out.seconds, out.services, out.containers
            ),
        ))
        .await;
    Ok(out)
}

/// Removes everything of an environment: its running instantiation is
/// aborted, its containers and volumes removed (their hosts decommissioned,
/// tokens revoked), its services and cluster deleted, its hosts purged from
/// the inventory, its record deleted. Each part is skipped when already
/// gone, so a teardown that failed half-way is completed by the next.
async fn teardown(state: &AppState, actor: &Actor, env: &EnvironmentRec) -> Result<Teardown> {
    let began = Instant::now();
    let cluster = env.name.as_str();
    if let Some((cmd, _)) = state.store.command(&env.command_id).await?
        && cmd.state == CommandState::Running.as_str()
    {
        state.commands.flag(&cmd.id).store(true, Ordering::SeqCst);
        // The command notices between steps or while a step waits.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match state.store.command(&cmd.id).await? {
                Some((c, _)) if c.state == CommandState::Running.as_str() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => break,
            }
        }
    }
    let provider = providers::Actor::authorize(actor)?;
    let recs = providers::cluster_hosts(state, cluster, None).await.map_err(provider_error)?;
    let removed = providers::remove_hosts(state, provider, recs).await.map_err(provider_error)?;
    let mut deleted = Vec::new();
    if state.store.cluster(cluster).await?.is_some() {
        // Referring services first: each round deletes those nothing needs.
        let mut left: Vec<String> = state.store.list_services(cluster).await?.into_iter().map(|s| s.name).collect();
        while !left.is_empty() {
            let before = left.len();
            let (mut blocked, mut why) = (Vec::new(), String::new());
            for s in std::mem::take(&mut left) {
                match services::delete(state, actor, cluster, &s).await {
                    Ok(()) => deleted.push(s),
                    Err(DomainError::Conflict(m)) => {
                        blocked.push(s);
                        why = m;
                    }
                    Err(e) => return Err(e),
                }
            }
            if blocked.len() == before {
                return Err(DomainError::Conflict(why));
            }
            left = blocked;
        }
    }
    let mut hosts = Vec::new();
    for v in &removed {
        if let Some(id) = &v.host_id
            && state.store.purge_host(id).await?
        {
            hosts.push(v.hostname.clone().unwrap_or_else(|| id.clone()));
        }
    }
    if state.store.cluster(cluster).await?.is_some() {
        for h in state.store.cluster_hosts(cluster).await? {
            let _ = clusters::remove_host(state, actor, cluster, &h).await;
        }
        clusters::delete(state, actor, cluster).await?;
    }
    state.store.delete_environment(cluster).await?;
    Ok(Teardown {
        name: env.name.clone(),
        services: deleted,
        containers: removed.into_iter().map(|v| v.name).collect(),
        hosts,
        seconds: began.elapsed().as_secs_f64(),
    })
}

// ---------- snapshots ----------

/// The stored template a snapshot comes back from.
fn snapshot_template(snapshot: &str) -> String {
    format!("snapshot-{snapshot}")
}

/// Docker image names allow no more than this: lowercase, digits, `.-_/`.
fn snapshot_repo(snapshot: &str) -> String {
    format!("drover-snapshot/{snapshot}")
}

async fn load_snapshot(state: &AppState, name: &str) -> Result<SnapshotRec> {
    state.store.snapshot(name).await?.ok_or_else(|| DomainError::NotFound(format!("snapshot {name} not found")))
}

fn snapshot_view(s: SnapshotRec, warnings: Vec<String>) -> SnapshotView {
    SnapshotView {
        template: snapshot_template(&s.name),
        name: s.name,
        environment: s.environment,
        hosts: s
            .hosts
            .into_iter()
            .map(|h| SnapshotHostView {
                group: h.group,
                image: h.image,
                roles: h.roles.into_iter().map(|r| format!("{}/{}", r.service, r.role_type)).collect(),
            })
            .collect(),
        created_at: rfc3339(s.created_at),
        created_by: s.created_by,
        warnings,
    }
}

/// Snapshots an environment without stopping anything: its configuration
/// as the stored template `snapshot-NAME` (services and values as now, a
/// host group per container with the roles it runs), and each container
/// committed to an image with its roles' data. All or nothing: on a failure
/// the images made are removed and nothing is recorded.
pub async fn snapshot(state: &AppState, actor: &Actor, env: &str, req: CreateSnapshot) -> Result<SnapshotView> {
    providers::Actor::authorize(actor)?;
    validate_name("snapshot", &req.name)?;
    let rec = load(state, env).await?;
    if rec.owner != actor.username {
        actor.require(Permission::ClustersWrite, Scope::Global)?;
    }
    if state.store.snapshot(&req.name).await?.is_some() {
        return Err(DomainError::Conflict(format!("snapshot {} exists; delete it or choose another name", req.name)));
    }
    if state.store.cluster(env).await?.is_none() {
        return Err(DomainError::Conflict(format!(
            "environment {env} has no cluster yet; snapshot it once it is ready"
        )));
    }
    let export = templates::export(state, actor, env).await?;
    let containers = providers::cluster_hosts(state, env, None).await.map_err(provider_error)?;
    let views = providers::describe(state, containers.clone()).await.map_err(provider_error)?;
    let mut roles = Vec::new();
    for svc in state.store.list_services(env).await? {
        roles.extend(state.store.roles_of_service(env, &svc.name).await?);
    }
    let mut hosts = Vec::new();
    let mut groups = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (c, v) in containers.iter().zip(&views) {
        let host = v.host_id.clone().ok_or_else(|| {
            DomainError::Conflict(format!(
                "container {} has not enrolled yet; snapshot once the environment is ready",
                c.name
            ))
        })?;
        let label = c.labels.get(providers::HOST_LABEL_GROUP).cloned().unwrap_or_else(|| "host".into());
        let n = index.entry(label.clone()).and_modify(|n| *n += 1).or_insert(1);
        let group = format!("{label}-{n}");
        let on: Vec<&crate::store::RoleRec> = roles.iter().filter(|r| r.host_id == host).collect();
        groups.push(HostGroup {
            name: group.clone(),
            cardinality: 1,
            selector: None,
            roles: on
                .iter()
                .map(|r| HostGroupRole {
                    service: r.service.clone(),
                    role_type: r.role_type.clone(),
                    group: (r.group != services::default_group(&r.role_type)).then(|| r.group.clone()),
                })
                .collect(),
        });
        hosts.push((
            c.clone(),
            group,
            on.into_iter()
                .map(|r| SnapshotRole {
                    service: r.service.clone(),
                    role_type: r.role_type.clone(),
                    role_id: r.id.clone(),
                })
                .collect::<Vec<_>>(),
        ));
    }
    let mut doc = export.template;
    doc.name = snapshot_template(&req.name);
    doc.description = format!("snapshot {} of environment {env}", req.name);
    doc.host_groups = groups;
    let repo = snapshot_repo(&req.name);
    let mut made: Vec<SnapshotHost> = Vec::new();
    for (c, group, roles) in hosts {
        match providers::snapshot_container(state, &c, &repo, &group).await {
            Ok(image) => made.push(SnapshotHost { group, image, roles }),
            Err(e) => {
                for h in &made {
                    let _ = providers::remove_image(state, &h.image).await;
                }
                return Err(provider_error(e));
            }
        }
    }
    let stored = match templates::upload(state, actor, doc).await {
        Ok(t) => t,
        Err(e) => {
            for h in &made {
                let _ = providers::remove_image(state, &h.image).await;
            }
            return Err(e);
        }
    };
    let snap = SnapshotRec {
        name: req.name.clone(),
        environment: env.to_owned(),
        hosts: made,
        created_at: now_millis(),
        created_by: actor.username.clone(),
    };
    state.store.insert_snapshot(&snap).await?;
    let granted = actor.require(Permission::FleetEnroll, Scope::Global)?;
    state
        .audit(granted.audit(
            "environment.snapshot",
            "snapshot",
            &snap.name,
            format!(
                "snapshot of environment {env}: {} containers committed to {repo}, template {} version {}",
                snap.hosts.len(),
                stored.name,
                stored.version
            ),
        ))
        .await;
    Ok(snapshot_view(snap, export.warnings))
}

/// Every snapshot.
pub async fn snapshots(state: &AppState, actor: &Actor) -> Result<Vec<SnapshotView>> {
    actor.require(Permission::Read, Scope::Any)?;
    Ok(state.store.snapshots().await?.into_iter().map(|s| snapshot_view(s, Vec::new())).collect())
}

pub async fn get_snapshot(state: &AppState, actor: &Actor, name: &str) -> Result<SnapshotView> {
    actor.require(Permission::Read, Scope::Any)?;
    Ok(snapshot_view(load_snapshot(state, name).await?, Vec::new()))
}

/// Deletes a snapshot: its images and its template.
pub async fn delete_snapshot(state: &AppState, actor: &Actor, name: &str) -> Result<()> {
    providers::Actor::authorize(actor)?;
    let snap = load_snapshot(state, name).await?;
    for h in &snap.hosts {
        providers::remove_image(state, &h.image).await.map_err(provider_error)?;
    }
    match templates::delete(state, actor, &snapshot_template(name), None).await {
        Ok(()) | Err(DomainError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    state.store.delete_snapshot(name).await?;
    let granted = actor.require(Permission::FleetEnroll, Scope::Global)?;
    state
        .audit(granted.audit(
            "environment.snapshot.delete",
            "snapshot",
            name,
            format!("deleted snapshot of environment {} and its {} images", snap.environment, snap.hosts.len()),
        ))
        .await;
    Ok(())
}

/// Tears down every expired environment, with an event for each; runs on the
/// manager's background timer (`--env-reap-interval`). One reaper at a time.
pub async fn reap(state: &AppState) {
    static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let Ok(_guard) = RUNNING.try_lock() else { return };
    let expired = match state.store.expired_environments(now_millis()).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "could not list expired environments; will look again");
            return;
        }
    };
    let actor = Actor::system("env-reaper");
    for env in expired {
        let (severity, message) = match teardown(state, &actor, &env).await {
            Ok(t) => {
                state
                    .audit(crate::audit_entry(
                        "env-reaper",
                        "manager",
                        "environment.expire",
                        "environment",
                        &env.name,
                        format!(
                            "took down expired environment of {} in {:.1}s: services {:?}, containers {:?}",
                            env.owner, t.seconds, t.services, t.containers
                        ),
                    ))
                    .await;
                tracing::info!(environment = %env.name, owner = %env.owner, "expired environment taken down");
                ("info", format!("environment {} of {} expired and was taken down", env.name, env.owner))
            }
            Err(e) => {
                tracing::warn!(environment = %env.name, error = %e, "could not take down an expired environment");
                ("warning", format!("environment {} of {} expired; taking it down failed: {e}", env.name, env.owner))
            }
        };
        let event = NewEvent {
            at: now_millis(),
            severity,
            kind: "environment_expired",
            object_type: "environment",
            object_id: env.name.clone(),
            message,
        };
        if let Err(e) = state.store.insert_event(&event).await {
            tracing::warn!(environment = %env.name, error = %e, "could not record an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_durations_within_bounds_or_never() {
        assert_eq!(parse_ttl("8h"), Ok(Some(Duration::from_secs(8 * 3600))));
        assert_eq!(parse_ttl(" 2d "), Ok(Some(Duration::from_secs(2 * 86_400))));
        assert_eq!(parse_ttl("1m"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(parse_ttl("never"), Ok(None));
        for bad in ["", "soon", "30s", "400d", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
