//! Parcel lifecycle commands: distribute, activate, deactivate and remove a
//! parcel version on a cluster's hosts, and per service the upgrade to a new
//! version (distribute, activate, rolling restart) and the rollback to the
//! previous one.
//!
//! Each command is stored like a service command, with one step per host for
//! every phase. A phase sets the cluster's intent (`cluster_parcels`), pushes
//! the hosts' new desired state and then follows what the agents report: the
//! host steps run side by side (agents bound their own download concurrency),
//! show download progress in their message, and fail with the agent's error.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::AppState;
use crate::commands;
use crate::desired::ParcelStatusRec;
use crate::model::now_millis;
use crate::store::{ClusterParcelRec, CommandRec, StepRec};

/// What a phase does on every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Distribute,
    Activate,
    Deactivate,
    Remove,
}

impl Phase {
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "distribute" => Some(Phase::Distribute),
            "activate" => Some(Phase::Activate),
            "deactivate" => Some(Phase::Deactivate),
            "remove" => Some(Phase::Remove),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Distribute => "distribute",
            Phase::Activate => "activate",
            Phase::Deactivate => "deactivate",
            Phase::Remove => "remove",
        }
    }

    /// How long a host may take.
    fn timeout(self) -> Duration {
        match self {
            Phase::Distribute => Duration::from_secs(3600),
            _ => Duration::from_secs(120),
        }
    }
}

/// The description of a host step; the executor finds the phase again from it.
pub fn step_description(phase: Phase, name: &str, version: &str, host: &str, hostname: &str) -> String {
    format!("{} {name} {version} on {hostname} ({host})", phase.as_str())
}

enum HostCheck {
    Done(String),
    Waiting(String),
    Failed(String),
}

fn check_host(phase: Phase, name: &str, version: &str, status: &[ParcelStatusRec]) -> HostCheck {
    let this = status.iter().find(|p| p.name == name && p.version == version);
    match phase {
        Phase::Distribute => match this {
            Some(p) if p.state == "distributed" || p.state == "active" => {
                HostCheck::Done(format!("{name} {version} distributed"))
            }
            Some(p) if p.state == "failed" => HostCheck::Failed(p.error.clone()),
            Some(p) if p.state == "downloading" && p.total_bytes > 0 => HostCheck::Waiting(format!(
                "downloading {}% ({} of {} bytes)",
                p.downloaded_bytes * 100 / p.total_bytes,
                p.downloaded_bytes,
                p.total_bytes
            )),
            Some(p) => HostCheck::Waiting(p.state.clone()),
            None => HostCheck::Waiting("waiting for the agent to start the download".into()),
        },
        Phase::Activate => match this {
            Some(p) if p.state == "active" => HostCheck::Done(format!("{name} {version} active")),
            Some(p) if p.state == "failed" => HostCheck::Failed(p.error.clone()),
            Some(p) => HostCheck::Waiting(format!("is {}", p.state)),
            None => HostCheck::Waiting("not reported by the agent yet".into()),
        },
        Phase::Deactivate => match status.iter().find(|p| p.name == name && p.state == "active") {
            None => HostCheck::Done(format!("no version of {name} active")),
            Some(p) => HostCheck::Waiting(format!("{} {} still active", p.name, p.version)),
        },
        Phase::Remove => match this {
            None => HostCheck::Done(format!("{name} {version} removed")),
            Some(p) if p.state == "failed" && !p.error.is_empty() => HostCheck::Failed(p.error.clone()),
            Some(p) => HostCheck::Waiting(format!("still {}", p.state)),
        },
    }
}

/// Sets the cluster's intent for one phase. Err: why it cannot be done.
pub async fn set_intent(
    state: &AppState,
    cluster: &str,
    phase: Phase,
    name: &str,
    version: &str,
) -> Result<(), String> {
    let now = now_millis();
    match phase {
        Phase::Distribute => {
            let entry = state.parcels.ensure_local(name, version).await.map_err(|e| e.to_string())?;
            state
                .store
                .want_parcel(&ClusterParcelRec {
                    cluster: cluster.to_owned(),
                    name: entry.name.clone(),
                    version: entry.version.clone(),
                    file_name: entry.parcel_name.clone(),
                    sha256: entry.sha256.clone(),
                    size: entry.size,
                    target: "distributed".into(),
                    activated_at: 0,
                    updated_at: now,
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Phase::Activate => {
            if !state.store.set_active_parcel(cluster, name, version, now).await.map_err(|e| e.to_string())? {
                return Err(format!("{name} {version} is not distributed to cluster {cluster}; distribute it first"));
            }
        }
        Phase::Deactivate => state.store.deactivate_parcel(cluster, name, now).await.map_err(|e| e.to_string())?,
        Phase::Remove => {
            state.store.unwant_parcel(cluster, name, version).await.map_err(|e| e.to_string())?;
        }
    }
    state.desired.refresh_parcels(state).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Runs the host steps `steps` of one phase side by side until every host is
/// done, one fails, the command is aborted, or the phase times out.
pub async fn run_phase(
    state: &AppState,
    cmd: &CommandRec,
    phase: Phase,
    name: &str,
    version: &str,
    steps: &[StepRec],
    abort: &AtomicBool,
) -> Result<(), String> {
    for s in steps {
        let _ = state.store.update_step(&cmd.id, s.seq, "running", "", Some(now_millis()), None).await;
    }
    if let Err(e) = set_intent(state, &cmd.cluster, phase, name, version).await {
        for s in steps {
            let _ = state.store.update_step(&cmd.id, s.seq, "failed", &e, None, Some(now_millis())).await;
        }
        return Err(e);
    }
    let hosts: Vec<String> = steps.iter().filter_map(|s| s.roles.first().cloned()).collect();
    let watch = state.registry.watch(&[], &hosts);
    let deadline = Instant::now() + phase.timeout();
    let mut open: HashMap<u32, &StepRec> = steps.iter().map(|s| (s.seq, s)).collect();
    let mut shown: HashMap<u32, String> = HashMap::new();
    let mut last_progress = Instant::now() - Duration::from_secs(10);
    loop {
        let progress_due = last_progress.elapsed() >= Duration::from_secs(1);
        let mut failure = None;
        for (seq, step) in open.clone() {
            let host = step.roles.first().cloned().unwrap_or_default();
            match check_host(phase, name, version, &state.registry.parcel_status(&host)) {
                HostCheck::Done(msg) => {
                    let _ = state.store.update_step(&cmd.id, seq, "succeeded", &msg, None, Some(now_millis())).await;
                    open.remove(&seq);
                }
                HostCheck::Failed(why) => {
                    let msg = format!("host {host}: {why}");
                    let _ = state.store.update_step(&cmd.id, seq, "failed", &msg, None, Some(now_millis())).await;
                    open.remove(&seq);
                    failure.get_or_insert(msg);
                }
                HostCheck::Waiting(msg) => {
                    if progress_due && shown.get(&seq) != Some(&msg) {
                        let _ = state.store.update_step(&cmd.id, seq, "running", &msg, None, None).await;
                        shown.insert(seq, msg);
                    }
                }
            }
        }
        if progress_due {
            last_progress = Instant::now();
        }
        let finish_open = |state_name: &'static str, msg: String| {
            let open: Vec<u32> = open.keys().copied().collect();
            async move {
                for seq in open {
                    let _ = state.store.update_step(&cmd.id, seq, state_name, &msg, None, Some(now_millis())).await;
                }
            }
        };
        if let Some(msg) = failure {
            // The other hosts go on in the background (the intent stays);
            // the command reports the first failure.
            finish_open("aborted", "another host failed".into()).await;
            return Err(msg);
        }
        if open.is_empty() {
            return Ok(());
        }
        if abort.load(Ordering::SeqCst) {
            finish_open("aborted", "aborted by user".into()).await;
            return Err("aborted by user".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let msg = format!("timed out after {} s", phase.timeout().as_secs());
            finish_open("failed", msg.clone()).await;
            return Err(msg);
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), watch.changed()).await;
    }
}

/// A planned step group: a phase over hosts, or a restart of roles.
#[derive(Debug, Clone)]
pub enum Stage {
    Hosts { phase: Phase, name: String, version: String, seqs: Vec<u32> },
    Restart { seq: u32 },
}

/// Runs a parcel command's stages in order; spawned once per command.
pub async fn execute(
    state: Arc<AppState>,
    cmd: CommandRec,
    steps: Vec<StepRec>,
    stages: Vec<Stage>,
    healthy_timeout: Duration,
) {
    let abort = state.commands.flag(&cmd.id);
    let by_seq: HashMap<u32, StepRec> = steps.iter().map(|s| (s.seq, s.clone())).collect();
    let mut outcome: (&str, String) = ("succeeded", format!("{} finished", cmd.name));
    let mut failed_at = None;
    for (i, stage) in stages.iter().enumerate() {
        if abort.load(Ordering::SeqCst) {
            outcome = ("aborted", "aborted by user".into());
            failed_at = Some(i);
            break;
        }
        let result = match stage {
            Stage::Hosts { phase, name, version, seqs } => {
                let group: Vec<StepRec> = seqs.iter().filter_map(|s| by_seq.get(s).cloned()).collect();
                run_phase(&state, &cmd, *phase, name, version, &group, &abort)
                    .await
                    .map_err(|e| format!("{} {name} {version}: {e}", phase.as_str()))
            }
            Stage::Restart { seq } => {
                let step = &by_seq[seq];
                let _ = state.store.update_step(&cmd.id, *seq, "running", "", Some(now_millis()), None).await;
                match commands::restart_step(&state, &cmd, step, healthy_timeout, &abort).await {
                    Ok(msg) => {
                        let _ =
                            state.store.update_step(&cmd.id, *seq, "succeeded", &msg, None, Some(now_millis())).await;
                        Ok(())
                    }
                    Err(msg) => {
                        let _ = state.store.update_step(&cmd.id, *seq, "failed", &msg, None, Some(now_millis())).await;
                        Err(format!("step {} ({}) failed: {msg}", step.seq, step.description))
                    }
                }
            }
        };
        if let Err(msg) = result {
            outcome = if abort.load(Ordering::SeqCst) { ("aborted", msg) } else { ("failed", msg) };
            failed_at = Some(i + 1);
            break;
        }
    }
    if let Some(from) = failed_at {
        for stage in &stages[from..] {
            let seqs: Vec<u32> = match stage {
                Stage::Hosts { seqs, .. } => seqs.clone(),
                Stage::Restart { seq } => vec![*seq],
            };
            for seq in seqs {
                let _ = state.store.update_step(&cmd.id, seq, "skipped", "an earlier step failed", None, None).await;
            }
        }
    }
    if let Err(e) = state.store.finish_command(&cmd.id, outcome.0, &outcome.1, now_millis()).await {
        tracing::error!(command = %cmd.id, error = %e, "could not record command outcome");
    }
    state.commands.forget(&cmd.id);
    tracing::info!(command = %cmd.id, name = %cmd.name, cluster = %cmd.cluster, state = outcome.0, "parcel command finished");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: &str, done: u64, total: u64, error: &str) -> ParcelStatusRec {
        ParcelStatusRec {
            name: "redis".into(),
            version: "7.0.15-1".into(),
            state: state.into(),
            downloaded_bytes: done,
            total_bytes: total,
            error: error.into(),
        }
    }

    #[test]
    fn host_conditions() {
        let v = "7.0.15-1";
        assert!(matches!(check_host(Phase::Distribute, "redis", v, &[]), HostCheck::Waiting(_)));
        match check_host(Phase::Distribute, "redis", v, &[st("downloading", 50, 200, "")]) {
            HostCheck::Waiting(m) => assert_eq!(m, "downloading 25% (50 of 200 bytes)"),
            _ => panic!("expected waiting"),
        }
        assert!(matches!(
            check_host(Phase::Distribute, "redis", v, &[st("distributed", 0, 0, "")]),
            HostCheck::Done(_)
        ));
        assert!(matches!(check_host(Phase::Distribute, "redis", v, &[st("active", 0, 0, "")]), HostCheck::Done(_)));
        assert!(matches!(
            check_host(Phase::Distribute, "redis", v, &[st("failed", 0, 0, "sha256 mismatch")]),
            HostCheck::Failed(m) if m == "sha256 mismatch"
        ));
        assert!(matches!(
            check_host(Phase::Activate, "redis", v, &[st("distributed", 0, 0, "")]),
            HostCheck::Waiting(_)
        ));
        assert!(matches!(check_host(Phase::Activate, "redis", v, &[st("active", 0, 0, "")]), HostCheck::Done(_)));
        assert!(matches!(check_host(Phase::Deactivate, "redis", v, &[st("active", 0, 0, "")]), HostCheck::Waiting(_)));
        assert!(matches!(
            check_host(Phase::Deactivate, "redis", v, &[st("distributed", 0, 0, "")]),
            HostCheck::Done(_)
        ));
        assert!(matches!(check_host(Phase::Remove, "redis", v, &[st("distributed", 0, 0, "")]), HostCheck::Waiting(_)));
        assert!(matches!(check_host(Phase::Remove, "redis", v, &[]), HostCheck::Done(_)));
    }
}
