//! Parcels as clusters use them: the cluster-level lifecycle commands
//! (distribute, activate, deactivate, remove) and a service's upgrade and
//! rollback (distribute and activate, then a rolling restart). Execution is
//! in [`crate::parcel_commands`].

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_api::parcels::{HostParcel, HostParcelState, ParcelComponent, ParcelEntry, ParcelInCluster, ParcelList};
use drover_api::parcels::{ParcelTarget, ParcelView};
use drover_parcels::manifest::ManifestParcel;
use futures::{Stream, StreamExt};
use serde_json::json;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::commands::{CommandView, view};
use super::{Actor, DomainError, Permission, Result, Scope, load_cluster, load_context};
use crate::AppState;
use crate::commands::{CommandName, plan};
use crate::model::now_millis;
use crate::parcel_commands::{self, Phase, Stage, step_description};
use crate::parcels::RepoError;
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
    let granted = actor.require(Permission::ParcelsWrite, Scope::Cluster(cluster))?;
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
        .audit(granted.audit(
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
    let granted = actor.require(Permission::ParcelsWrite, Scope::Cluster(cluster))?;
    let ctx = load_context(state, cluster, service).await?;
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
    let ordered: Vec<_> = ctx
        .roles()
        .iter()
        .map(|r| (r.clone(), st.role_type(&r.role_type).map(|t| t.start_order).unwrap_or(0)))
        .collect();
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
        .audit(granted.audit(
            &format!("parcel.{name}"),
            "service",
            &format!("{cluster}/{service}"),
            format!("{name} {parcel} from {} to {target} (command {})", current.as_deref().unwrap_or("none"), cmd.id),
        ))
        .await;
    start(state, cmd, steps, stages, st.rolling_restart.healthy_timeout).await
}

impl From<RepoError> for DomainError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadRequest(m) => DomainError::Invalid(m),
            RepoError::NotFound(m) => DomainError::NotFound(m),
            RepoError::Conflict(m) => DomainError::Conflict(m),
            RepoError::Internal(m) => DomainError::Internal(m),
        }
    }
}

/// A manifest entry as the API shows it.
pub fn parcel_entry(p: ManifestParcel) -> ParcelEntry {
    // Every field named, so a new one in the manifest does not go unseen here.
    let ManifestParcel { parcel_name, name, version, distro, sha256, size, components, depends, conflicts, provides } =
        p;
    let components = components
        .into_iter()
        .map(|c| ParcelComponent { name: c.name, version: c.version, pkg_version: c.pkg_version })
        .collect();
    ParcelEntry { parcel_name, name, version, distro, sha256, size, components, depends, conflicts, provides }
}

/// Every known parcel (local and from followed repositories) with, per
/// cluster, the version's target and its state on every member host.
/// A cluster-scoped caller sees the repository and only their clusters.
pub async fn overview(state: &AppState, actor: &Actor) -> Result<ParcelList> {
    actor.require(Permission::Read, Scope::Any)?;
    let visible = actor.visible();
    let mut wanted = state.store.cluster_parcels(None).await?;
    wanted.retain(|w| visible.contains(&w.cluster));
    let mut members = state.store.all_cluster_hosts().await?;
    members.retain(|(c, _)| visible.contains(c));
    let mut hosts_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, h) in &members {
        hosts_of.entry(c.as_str()).or_default().push(h.as_str());
    }
    let clusters: Vec<String> =
        state.store.list_clusters().await?.into_iter().map(|c| c.name).filter(|c| visible.contains(c)).collect();
    let status: BTreeMap<&str, Vec<crate::desired::ParcelStatusRec>> =
        members.iter().map(|(_, h)| (h.as_str(), state.registry.parcel_status(h))).collect();
    let host_parcel = |h: &str, name: &str, version: &str| {
        let s = status.get(h).and_then(|all| all.iter().find(|s| s.name == name && s.version == version));
        match s {
            None => HostParcel {
                host_id: h.to_owned(),
                state: HostParcelState::Available,
                percent: None,
                error: String::new(),
            },
            Some(s) => {
                let st = HostParcelState::parse(&s.state);
                HostParcel {
                    host_id: h.to_owned(),
                    state: st,
                    percent: (st == HostParcelState::Downloading && s.total_bytes > 0)
                        .then(|| s.downloaded_bytes * 100 / s.total_bytes),
                    error: s.error.clone(),
                }
            }
        }
    };
    let mut items = Vec::new();
    for k in state.parcels.list() {
        let p = k.parcel;
        let mut per_cluster = Vec::new();
        for c in &clusters {
            let target = wanted
                .iter()
                .find(|w| &w.cluster == c && w.name == p.name && w.version == p.version)
                .map(|w| {
                    ParcelTarget::parse(&w.target).ok_or_else(|| {
                        DomainError::Internal(format!(
                            "stored parcel target {:?} is not distributed or active",
                            w.target
                        ))
                    })
                })
                .transpose()?;
            let hosts =
                hosts_of.get(c.as_str()).into_iter().flatten().map(|h| host_parcel(h, &p.name, &p.version)).collect();
            per_cluster.push(ParcelInCluster { cluster: c.clone(), target, hosts });
        }
        let entry = parcel_entry(p);
        items.push(ParcelView {
            parcel_name: entry.parcel_name,
            name: entry.name,
            version: entry.version,
            distro: entry.distro,
            sha256: entry.sha256,
            size: entry.size,
            components: entry.components,
            depends: entry.depends,
            source: k.source,
            clusters: per_cluster,
        });
    }
    Ok(ParcelList { items, repositories: state.parcels.remotes() })
}

/// Stores an uploaded parcel file, streamed to disk and checked (the stated
/// sha256, the archive, its name); audited. Without a stated sha256 (a
/// browser form) the upload is first spooled to a hidden file of the
/// repository while its hash is computed, then stored from there.
pub async fn upload<S>(
    state: &AppState,
    actor: &Actor,
    file_name: &str,
    sha256: Option<&str>,
    body: S,
) -> Result<ManifestParcel>
where
    S: Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    let granted = actor.require(Permission::ParcelsWrite, Scope::Global)?;
    let entry = match sha256.map(str::trim).filter(|s| !s.is_empty()) {
        Some(sha) => state.parcels.upload(file_name, sha, body).await?,
        None => {
            let spool = state.parcels.dir().join(format!(".spool-{}", uuid::Uuid::new_v4()));
            let result = spool_and_upload(state, file_name, &spool, body).await;
            let _ = tokio::fs::remove_file(&spool).await;
            result?
        }
    };
    state
        .audit(granted.audit(
            "parcel.upload",
            "parcel",
            &entry.parcel_name,
            format!("uploaded {} ({} bytes, sha256 {})", entry.parcel_name, entry.size, entry.sha256),
        ))
        .await;
    Ok(entry)
}

async fn spool_and_upload<S>(
    state: &AppState,
    file_name: &str,
    spool: &std::path::Path,
    mut body: S,
) -> Result<ManifestParcel>
where
    S: Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    let io = |what: &str, e: std::io::Error| DomainError::Internal(format!("{what} {}: {e}", spool.display()));
    let mut f = tokio::fs::File::create(spool).await.map_err(|e| io("create", e))?;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| DomainError::Invalid(format!("upload of {file_name} interrupted: {e}")))?;
        hasher.update(&chunk);
        f.write_all(&chunk).await.map_err(|e| io("write", e))?;
    }
    f.flush().await.map_err(|e| io("write", e))?;
    drop(f);
    let sha = hex::encode(hasher.finalize());
    let f = tokio::fs::File::open(spool).await.map_err(|e| io("open", e))?;
    let stream = tokio_util::io::ReaderStream::new(f);
    Ok(state.parcels.upload(file_name, &sha, stream).await?)
}
