//! Parcels as clusters use them: the cluster-level lifecycle commands
//! (distribute, activate, deactivate, remove) and a service's upgrade and
//! rollback (distribute and activate, then a rolling restart). Execution is
//! in [`crate::parcel_commands`].

use std::sync::Arc;

use serde_json::json;

use super::commands::{CommandView, view};
use super::{Actor, DomainError, Result, context, load_cluster};
use crate::AppState;
use crate::commands::{CommandName, plan};
use crate::model::now_millis;
use crate::parcel_commands::{self, Phase, Stage, step_description};
use crate::store::{CommandRec, StepRec};
pub use drover_api::parcels::ParcelCommand;

async fn host_steps(
    state: &AppState,
    hosts: &[String],
    phase: Phase,
    name: &str,
    version: &str,
    steps: &mut Vec<StepRec>,
) -> Result<Vec<u32>> {
    let names = state.store.host_addresses(hosts).await?;
    let mut seqs = Vec::new();
    for h in hosts {
        let seq = steps.len() as u32 + 1;
        let hostname = names.get(h).map(|n| n.0.clone()).unwrap_or_default();
        steps.push(StepRec::pending(seq, step_description(phase, name, version, h, &hostname), vec![h.clone()]));
        seqs.push(seq);
    }
    Ok(seqs)
}

async fn start(
    state: &Arc<AppState>,
    cmd: CommandRec,
    steps: Vec<StepRec>,
    stages: Vec<Stage>,
    healthy_timeout: std::time::Duration,
) -> Result<CommandView> {
    state.store.insert_command(&cmd, &steps).await?;
    let view = view(&cmd, &steps);
    tokio::spawn(parcel_commands::execute(state.clone(), cmd, steps, stages, healthy_timeout));
    Ok(view)
}

/// Starts a cluster-level parcel command with one step per host.
pub async fn create_command(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    req: ParcelCommand,
) -> Result<CommandView> {
    load_cluster(state, cluster).await?;
    let phase = Phase::parse(&req.name).ok_or_else(|| {
        DomainError::Invalid(format!(
            "unknown parcel command {:?}: use distribute, activate, deactivate or remove",
            req.name
        ))
    })?;
    let wanted = state.store.cluster_parcels(Some(cluster)).await?;
    let version = match (&req.version, phase) {
        (Some(v), _) => v.clone(),
        (None, Phase::Deactivate) => {
            wanted.iter().find(|w| w.name == req.parcel && w.target == "active").map(|w| w.version.clone()).ok_or_else(
                || DomainError::Conflict(format!("no version of {} is active in cluster {cluster}", req.parcel)),
            )?
        }
        (None, _) => return Err(DomainError::Invalid(format!("version is required for {}", req.name))),
    };
    let this = wanted.iter().find(|w| w.name == req.parcel && w.version == version);
    match phase {
        Phase::Distribute if state.parcels.find(&req.parcel, &version).is_none() => {
            return Err(DomainError::NotFound(format!(
                "no parcel {} {version} in the manager's repository or any followed repository",
                req.parcel
            )));
        }
        Phase::Activate if this.is_none() => {
            return Err(DomainError::Conflict(format!(
                "{} {version} is not distributed to cluster {cluster}; distribute it first",
                req.parcel
            )));
        }
        Phase::Remove if this.is_some_and(|w| w.target == "active") => {
            return Err(DomainError::Conflict(format!(
                "{} {version} is active in cluster {cluster}; deactivate it or activate another version first",
                req.parcel
            )));
        }
        Phase::Remove if this.is_none() => {
            return Err(DomainError::NotFound(format!(
                "{} {version} is not distributed to cluster {cluster}",
                req.parcel
            )));
        }
        _ => {}
    }
    let hosts = state.store.cluster_hosts(cluster).await?;
    if hosts.is_empty() {
        return Err(DomainError::Conflict(format!(
            "cluster {cluster} has no hosts; add hosts with POST /api/v1/clusters/{cluster}/hosts"
        )));
    }
    if phase == Phase::Activate {
        // Never activate where the download is not complete.
        for h in &hosts {
            let ready = state.registry.parcel_status(h).iter().any(|s| {
                s.name == req.parcel && s.version == version && (s.state == "distributed" || s.state == "active")
            });
            if !ready {
                return Err(DomainError::Conflict(format!(
                    "{} {version} is not distributed on host {h} yet; wait for the distribute command",
                    req.parcel
                )));
            }
        }
    }
    let mut steps = Vec::new();
    let seqs = host_steps(state, &hosts, phase, &req.parcel, &version, &mut steps).await?;
    let cmd = CommandRec {
        id: uuid::Uuid::new_v4().to_string(),
        cluster: cluster.to_owned(),
        service: String::new(),
        name: format!("parcel-{}", phase.as_str()),
        params: json!({"parcel": req.parcel, "version": version}),
        state: "running".into(),
        message: String::new(),
        created_by: actor.username.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    state
        .audit(actor.audit(
            &format!("parcel.{}", phase.as_str()),
            "cluster",
            cluster,
            format!("{} {} {version} on {} hosts (command {})", phase.as_str(), req.parcel, hosts.len(), cmd.id),
        ))
        .await;
    let stages = vec![Stage::Hosts { phase, name: req.parcel.clone(), version, seqs }];
    start(state, cmd, steps, stages, std::time::Duration::from_secs(300)).await
}

/// `upgrade` (to `version`) or `rollback` (to the previously active version)
/// of the parcel a service runs from: distribute and activate on the
/// cluster's hosts, then a rolling restart of the service's roles.
pub async fn upgrade_or_rollback(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    service: &str,
    rollback: bool,
    version: Option<String>,
) -> Result<CommandView> {
    let ctx = context(state, cluster, service).await?;
    let st = &ctx.service_type;
    let parcel = st.parcels.first().cloned().ok_or_else(|| {
        DomainError::Unsuitable(format!("service type {} runs from no parcel; nothing to upgrade", st.name))
    })?;
    let wanted = state.store.cluster_parcels(Some(cluster)).await?;
    let current = wanted.iter().find(|w| w.name == parcel && w.target == "active").map(|w| w.version.clone());
    let target = if rollback {
        if version.is_some() {
            return Err(DomainError::Invalid(
                "rollback takes no version: it returns to the previously active one".into(),
            ));
        }
        wanted
            .iter()
            .filter(|w| w.name == parcel && Some(&w.version) != current.as_ref() && w.activated_at > 0)
            .max_by_key(|w| w.activated_at)
            .map(|w| w.version.clone())
            .ok_or_else(|| {
                DomainError::Conflict(format!(
                    "no earlier active version of {parcel} is still distributed in cluster {cluster}"
                ))
            })?
    } else {
        let v = version.ok_or_else(|| DomainError::Invalid("upgrade needs the parcel version to go to".into()))?;
        if state.parcels.find(&parcel, &v).is_none() {
            return Err(DomainError::NotFound(format!(
                "no parcel {parcel} {v} in the manager's repository or any followed repository"
            )));
        }
        if current.as_deref() == Some(v.as_str()) {
            return Err(DomainError::Conflict(format!("{parcel} {v} is already active in cluster {cluster}")));
        }
        v
    };
    let hosts = state.store.cluster_hosts(cluster).await?;
    let mut steps = Vec::new();
    let mut stages = Vec::new();
    let seqs = host_steps(state, &hosts, Phase::Distribute, &parcel, &target, &mut steps).await?;
    stages.push(Stage::Hosts { phase: Phase::Distribute, name: parcel.clone(), version: target.clone(), seqs });
    let seqs = host_steps(state, &hosts, Phase::Activate, &parcel, &target, &mut steps).await?;
    stages.push(Stage::Hosts { phase: Phase::Activate, name: parcel.clone(), version: target.clone(), seqs });
    let ordered: Vec<_> =
        ctx.roles.iter().map(|r| (r.clone(), st.role_type(&r.role_type).map(|t| t.start_order).unwrap_or(0))).collect();
    for (description, roles) in plan(CommandName::RollingRestart, &ordered, st.rolling_restart.batch_size) {
        let seq = steps.len() as u32 + 1;
        steps.push(StepRec::pending(seq, description, roles));
        stages.push(Stage::Restart { seq });
    }
    let name = if rollback { "rollback" } else { "upgrade" };
    let cmd = CommandRec {
        id: uuid::Uuid::new_v4().to_string(),
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        name: name.to_owned(),
        params: json!({"parcel": parcel, "from": current, "to": target}),
        state: "running".into(),
        message: String::new(),
        created_by: actor.username.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    state
        .audit(actor.audit(
            &format!("parcel.{name}"),
            "service",
            &format!("{cluster}/{service}"),
            format!("{name} {parcel} from {} to {target} (command {})", current.as_deref().unwrap_or("none"), cmd.id),
        ))
        .await;
    start(state, cmd, steps, stages, st.rolling_restart.healthy_timeout).await
}
