//! Service commands as users start and follow them: start, stop, restart and
//! rolling restart with the dependency rules, their views, abort. Planning and
//! execution are in [`crate::commands`]; parcel commands in
//! [`super::parcels`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::roles::role_views;
use super::{Actor, DomainError, Permission, Result, Scope, load_context};
use crate::AppState;
use crate::commands::{CommandName, execute, plan};
use crate::desired::ServiceContext;
use crate::model::{now_millis, rfc3339};
use crate::store::{CommandRec, RoleRec, StepRec};
pub use drover_api::commands::{CommandState, CommandView, NewCommand, ServiceCommand, StepState, StepView};

pub fn view(c: &CommandRec, steps: &[StepRec]) -> CommandView {
    CommandView {
        id: c.id.clone(),
        cluster: c.cluster.clone(),
        service: c.service.clone(),
        name: c.name.clone(),
        params: c.params.clone(),
        state: CommandState::parse(&c.state),
        message: c.message.clone(),
        created_by: c.created_by.clone(),
        created_at: rfc3339(c.created_at),
        finished_at: c.finished_at.map(rfc3339),
        steps: steps
            .iter()
            .map(|s| StepView {
                seq: s.seq,
                description: s.description.clone(),
                roles: s.roles.clone(),
                state: StepState::parse(&s.state),
                message: s.message.clone(),
                started_at: s.started_at.map(rfc3339),
                finished_at: s.finished_at.map(rfc3339),
            })
            .collect(),
    }
}

/// Plans a command over a service's roles, stores it and starts it.
pub async fn create(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    service: &str,
    req: NewCommand,
) -> Result<CommandView> {
    create_with_batch_size(state, actor, cluster, service, req, None).await
}

/// [`create`] with the batch size of a rolling restart chosen by the caller
/// (the console's rolling-restart form) instead of the service type's.
pub async fn create_with_batch_size(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    service: &str,
    req: NewCommand,
    batch_size: Option<u32>,
) -> Result<CommandView> {
    let permission = match req.name {
        ServiceCommand::Upgrade | ServiceCommand::Rollback => Permission::ParcelsWrite,
        _ => Permission::CommandsRun,
    };
    let granted = actor.require(permission, Scope::Cluster(cluster))?;
    if let Some(n) = batch_size {
        if req.name != ServiceCommand::RollingRestart {
            return Err(DomainError::Invalid("a batch size is only for a rolling restart".into()));
        }
        if n == 0 {
            return Err(DomainError::Invalid("the batch size must be at least 1".into()));
        }
    }
    let name = match req.name {
        ServiceCommand::Start => CommandName::Start,
        ServiceCommand::Stop => CommandName::Stop,
        ServiceCommand::Restart => CommandName::Restart,
        ServiceCommand::RollingRestart => CommandName::RollingRestart,
        ServiceCommand::Upgrade | ServiceCommand::Rollback => {
            if req.roles.is_some() || req.stale_only {
                return Err(DomainError::Invalid(
                    "roles and stale_only are not for upgrade and rollback: they restart every role".into(),
                ));
            }
            let rollback = req.name == ServiceCommand::Rollback;
            return super::parcels::upgrade_or_rollback(state, actor, cluster, service, rollback, req.version).await;
        }
    };
    if req.version.is_some() {
        return Err(DomainError::Invalid("version is only for the upgrade command".into()));
    }
    if req.roles.as_ref().is_some_and(Vec::is_empty) {
        return Err(DomainError::Invalid("roles is empty: name some roles, or leave it out for all of them".into()));
    }
    let ctx = load_context(state, cluster, service).await?;
    check_dependencies(state, &ctx, name).await?;
    if name != CommandName::Stop {
        for rt in &ctx.service_type.role_types {
            let n = ctx.roles().iter().filter(|r| r.role_type == rt.name).count() as u32;
            if n < rt.min_instances {
                return Err(DomainError::Conflict(format!(
                    "role type {} needs at least {} instances and service {service} has {n}; add roles first",
                    rt.name, rt.min_instances
                )));
            }
        }
    }
    let mut selected: Vec<RoleRec> = match &req.roles {
        None => ctx.roles().to_vec(),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                let r =
                    ctx.roles().iter().find(|r| &r.id == n || &r.name == n).ok_or_else(|| {
                        DomainError::NotFound(format!("role {n:?} is not a role of service {service}"))
                    })?;
                out.push(r.clone());
            }
            out
        }
    };
    if req.stale_only {
        let views = role_views(state, &ctx).await?;
        selected.retain(|r| views.iter().any(|v| v.id == r.id && v.stale));
    }
    if selected.is_empty() {
        return Err(DomainError::Conflict(if req.stale_only {
            "no role of the selection is stale; nothing to restart".into()
        } else {
            format!("service {service} has no roles to {}", name.as_str())
        }));
    }
    let st = &ctx.service_type;
    let ordered: Vec<(RoleRec, u32)> = selected
        .into_iter()
        .map(|r| {
            let order = st.role_type(&r.role_type).map(|t| t.start_order).unwrap_or(0);
            (r, order)
        })
        .collect();
    let planned = plan(name, &ordered, batch_size.unwrap_or(st.rolling_restart.batch_size));
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = CommandRec {
        id: id.clone(),
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        name: name.as_str().to_owned(),
        params: json!({"roles": req.roles, "stale_only": req.stale_only}),
        state: CommandState::Running.as_str().into(),
        message: String::new(),
        created_by: actor.username.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    let steps: Vec<StepRec> = planned
        .into_iter()
        .enumerate()
        .map(|(i, (description, roles))| StepRec::pending(i as u32 + 1, description, roles))
        .collect();
    state.store.insert_command(&cmd, &steps).await?;
    state
        .audit(granted.audit(
            &format!("command.{}", name.as_str()),
            "service",
            &format!("{cluster}/{service}"),
            format!("command {id}: {} ({} steps)", name.as_str(), steps.len()),
        ))
        .await;
    let out = view(&cmd, &steps);
    let timeout = st.rolling_restart.healthy_timeout.max(Duration::from_secs(10));
    let wait_healthy = st.rolling_restart.wait_for_healthy;
    state.commands.flag(&id);
    tokio::spawn(execute(state.clone(), cmd, steps, timeout, wait_healthy));
    Ok(out)
}

/// Starting needs the services this one requires to be running; stopping
/// needs the services that require this one to be stopped.
async fn check_dependencies(state: &AppState, ctx: &ServiceContext, name: CommandName) -> Result<()> {
    let cluster = &ctx.service.cluster;
    let others = state.store.list_services(cluster).await?;
    match name {
        CommandName::Start | CommandName::Restart | CommandName::RollingRestart => {
            for required in &ctx.service_type.requires {
                let Some(dep) = others.iter().find(|s| &s.service_type == required) else {
                    return Err(DomainError::Conflict(format!(
                        "service {} requires a {required} service in cluster {cluster}, and there is none",
                        ctx.service.name
                    )));
                };
                if !service_running(state, cluster, &dep.name).await? {
                    return Err(DomainError::Conflict(format!(
                        "service {} requires {required} service {}, which is not running; start {} first",
                        ctx.service.name, dep.name, dep.name
                    )));
                }
            }
        }
        CommandName::Stop => {
            for other in &others {
                let needs_us = state
                    .catalog
                    .get(&other.service_type)
                    .is_some_and(|t| t.requires.contains(&ctx.service.service_type));
                if needs_us && any_role_running(state, cluster, &other.name).await? {
                    return Err(DomainError::Conflict(format!(
                        "service {} requires {} and is running; stop {} first",
                        other.name, ctx.service.name, other.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// True when some role of the service reports running.
async fn any_role_running(state: &AppState, cluster: &str, service: &str) -> Result<bool> {
    let roles = state.store.roles_of_service(cluster, service).await?;
    Ok(roles.iter().any(|r| state.registry.role_status(&r.id).is_some_and(|s| s.state == "running")))
}

/// True when the service has roles and every one reports running.
async fn service_running(state: &AppState, cluster: &str, service: &str) -> Result<bool> {
    let roles = state.store.roles_of_service(cluster, service).await?;
    Ok(!roles.is_empty()
        && roles.iter().all(|r| state.registry.role_status(&r.id).is_some_and(|s| s.state == "running")))
}

pub async fn get(state: &AppState, actor: &Actor, id: &str) -> Result<CommandView> {
    actor.require(Permission::Read, Scope::Any)?;
    let (c, steps) =
        state.store.command(id).await?.ok_or_else(|| DomainError::NotFound(format!("command {id} not found")))?;
    actor.require_read(&c.cluster)?;
    Ok(view(&c, &steps))
}

/// Recent commands of a service, without their steps.
pub async fn list(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<Vec<CommandView>> {
    actor.require_read(cluster)?;
    super::load_service(state, cluster, service).await?;
    Ok(state.store.list_commands(cluster, service).await?.iter().map(|c| view(c, &[])).collect())
}

/// Commands of the clusters the caller may read matching `filter`, newest
/// first, without their steps.
pub async fn search(state: &AppState, actor: &Actor, filter: &crate::store::CommandFilter) -> Result<Vec<CommandView>> {
    if let Some(s) = &filter.state
        && CommandState::parse(s).as_str() != s
    {
        return Err(DomainError::Invalid(format!(
            "invalid command state {s:?}: use running, succeeded, failed or aborted"
        )));
    }
    let filter = crate::store::CommandFilter { clusters: actor.visible().to_filter(), ..filter.clone() };
    Ok(state.store.search_commands(&filter).await?.iter().map(|c| view(c, &[])).collect())
}

/// Asks a running command to stop between steps (or while a step waits).
pub async fn abort(state: &AppState, actor: &Actor, id: &str) -> Result<()> {
    actor.require(Permission::CommandsRun, Scope::Any)?;
    let (c, _) =
        state.store.command(id).await?.ok_or_else(|| DomainError::NotFound(format!("command {id} not found")))?;
    let granted = actor.require(Permission::CommandsRun, Scope::Cluster(&c.cluster))?;
    if c.state != CommandState::Running.as_str() {
        return Err(DomainError::Conflict(format!("command {id} is already {}", c.state)));
    }
    state.commands.flag(id).store(true, Ordering::SeqCst);
    state
        .audit(granted.audit(
            "command.abort",
            "command",
            id,
            format!("abort requested for {} of {}/{}", c.name, c.cluster, c.service),
        ))
        .await;
    Ok(())
}
