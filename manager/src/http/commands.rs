//! REST handlers for service commands; the planning and execution live in
//! `crate::commands`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::services::role_views;
use super::{ApiError, ApiJson, ApiPath, Caller};
use crate::AppState;
use crate::commands::{CommandName, execute, plan};
use crate::desired;
use crate::model::{now_millis, rfc3339};
use crate::store::{CommandRec, RoleRec, StepRec};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCommand {
    /// `start`, `stop`, `restart` or `rolling-restart`.
    pub name: String,
    /// Role names or ids; all roles of the service when omitted.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Only roles whose configuration is stale.
    #[serde(default)]
    pub stale_only: bool,
    /// `upgrade` only: the parcel version to go to.
    #[serde(default)]
    pub version: Option<String>,
}

pub(crate) fn view(c: &CommandRec, steps: &[StepRec]) -> Value {
    json!({
        "id": c.id,
        "cluster": c.cluster,
        "service": c.service,
        "name": c.name,
        "params": c.params,
        "state": c.state,
        "message": c.message,
        "created_by": c.created_by,
        "created_at": rfc3339(c.created_at),
        "finished_at": c.finished_at.map(rfc3339),
        "steps": steps.iter().map(|s| json!({
            "seq": s.seq,
            "description": s.description,
            "roles": s.roles,
            "state": s.state,
            "message": s.message,
            "started_at": s.started_at.map(rfc3339),
            "finished_at": s.finished_at.map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/services/{service}/commands", params(("cluster" = String, Path), ("service" = String, Path)), request_body = CreateCommand, responses((status = 202, description = "the command with its planned steps"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CreateCommand>,
) -> Result<impl IntoResponse, ApiError> {
    let name = match req.name.as_str() {
        "start" => CommandName::Start,
        "stop" => CommandName::Stop,
        "restart" => CommandName::Restart,
        "rolling-restart" => CommandName::RollingRestart,
        "upgrade" | "rollback" => {
            let rollback = req.name == "rollback";
            let view =
                super::parcels::upgrade_or_rollback(&state, &caller, &cluster, &service, rollback, req.version).await?;
            return Ok((StatusCode::ACCEPTED, Json(view)));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown command {other:?}: use start, stop, restart, rolling-restart, upgrade or rollback"
            )));
        }
    };
    if req.version.is_some() {
        return Err(ApiError::BadRequest("version is only for the upgrade command".into()));
    }
    let ctx = desired::load_service(&state, &cluster, &service)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {service} not found in cluster {cluster}")))?;
    check_dependencies(&state, &ctx, name).await?;
    if name != CommandName::Stop {
        for rt in &ctx.service_type.role_types {
            let n = ctx.roles.iter().filter(|r| r.role_type == rt.name).count() as u32;
            if n < rt.min_instances {
                return Err(ApiError::Conflict(format!(
                    "role type {} needs at least {} instances and service {service} has {n}; add roles first",
                    rt.name, rt.min_instances
                )));
            }
        }
    }
    let mut selected: Vec<RoleRec> = match &req.roles {
        None => ctx.roles.clone(),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                let r =
                    ctx.roles.iter().find(|r| &r.id == n || &r.name == n).ok_or_else(|| {
                        ApiError::BadRequest(format!("role {n:?} is not a role of service {service}"))
                    })?;
                out.push(r.clone());
            }
            out
        }
    };
    if req.stale_only {
        let views = role_views(&state, &ctx).await?;
        selected.retain(|r| views.iter().any(|v| v.id == r.id && v.stale));
    }
    if selected.is_empty() {
        return Err(ApiError::BadRequest(if req.stale_only {
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
    let planned = plan(name, &ordered, st.rolling_restart.batch_size);
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = CommandRec {
        id: id.clone(),
        cluster: cluster.clone(),
        service: service.clone(),
        name: name.as_str().to_owned(),
        params: json!({"roles": req.roles, "stale_only": req.stale_only}),
        state: "running".into(),
        message: String::new(),
        created_by: caller.user.username.clone(),
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
        .audit(caller.audit(
            &format!("command.{}", name.as_str()),
            "service",
            &format!("{cluster}/{service}"),
            format!("command {id}: {} ({} steps)", name.as_str(), steps.len()),
        ))
        .await;
    let body = view(&cmd, &steps);
    let timeout = st.rolling_restart.healthy_timeout.max(Duration::from_secs(10));
    let wait_healthy = st.rolling_restart.wait_for_healthy;
    state.commands.flag(&id);
    tokio::spawn(execute(state.clone(), cmd, steps, timeout, wait_healthy));
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Starting needs the services this one requires to be running; stopping
/// needs the services that require this one to be stopped.
async fn check_dependencies(
    state: &AppState,
    ctx: &desired::ServiceContext,
    name: CommandName,
) -> Result<(), ApiError> {
    let cluster = &ctx.service.cluster;
    let others = state.store.list_services(cluster).await?;
    match name {
        CommandName::Start | CommandName::Restart | CommandName::RollingRestart => {
            for required in &ctx.service_type.requires {
                let Some(dep) = others.iter().find(|s| &s.service_type == required) else {
                    return Err(ApiError::Conflict(format!(
                        "service {} requires a {required} service in cluster {cluster}, and there is none",
                        ctx.service.name
                    )));
                };
                if !service_running(state, cluster, &dep.name).await? {
                    return Err(ApiError::Conflict(format!(
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
                    return Err(ApiError::Conflict(format!(
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
async fn any_role_running(state: &AppState, cluster: &str, service: &str) -> Result<bool, ApiError> {
    let roles = state.store.roles_of_service(cluster, service).await?;
    Ok(roles.iter().any(|r| state.registry.role_status(&r.id).is_some_and(|s| s.state == "running")))
}

/// True when the service has roles and every one reports running.
async fn service_running(state: &AppState, cluster: &str, service: &str) -> Result<bool, ApiError> {
    let roles = state.store.roles_of_service(cluster, service).await?;
    Ok(!roles.is_empty()
        && roles.iter().all(|r| state.registry.role_status(&r.id).is_some_and(|s| s.state == "running")))
}

#[utoipa::path(get, path = "/api/v1/commands/{id}", params(("id" = String, Path)), responses((status = 200, description = "state and steps"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    _c: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (c, steps) =
        state.store.command(&id).await?.ok_or_else(|| ApiError::NotFound(format!("command {id} not found")))?;
    Ok(Json(view(&c, &steps)))
}

#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/services/{service}/commands", params(("cluster" = String, Path), ("service" = String, Path)), responses((status = 200, description = "recent commands"), (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _c: Caller,
    ApiPath((cluster, service)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .service(&cluster, &service)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("service {service} not found in cluster {cluster}")))?;
    let items: Vec<Value> = state.store.list_commands(&cluster, &service).await?.iter().map(|c| view(c, &[])).collect();
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(post, path = "/api/v1/commands/{id}/abort", params(("id" = String, Path)), responses((status = 200, description = "abort requested"), (status = 409, body = crate::http::ErrorBody)), security(("basic" = []), ("bearer" = [])))]
pub async fn abort(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (c, _) =
        state.store.command(&id).await?.ok_or_else(|| ApiError::NotFound(format!("command {id} not found")))?;
    if c.state != "running" {
        return Err(ApiError::Conflict(format!("command {id} is already {}", c.state)));
    }
    state.commands.flag(&id).store(true, Ordering::SeqCst);
    state
        .audit(caller.audit(
            "command.abort",
            "command",
            &id,
            format!("abort requested for {} of {}/{}", c.name, c.cluster, c.service),
        ))
        .await;
    Ok(Json(json!({"id": id, "state": "aborting"})))
}
