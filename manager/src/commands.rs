//! Service commands: start, stop, restart and rolling restart, persisted and
//! run asynchronously as ordered steps.
//!
//! A command is planned into steps when it is created (start follows the role
//! types' start order, stop the reverse, rolling restart takes batches of the
//! service type's batch size) and stored with them; an executor task then
//! runs the steps one at a time. Each step changes the roles' intent (run state
//! or restart nonce), pushes it, and waits for the agents to report the
//! outcome, with a timeout. A step that fails stops the command with a
//! message naming the role; abort stops it between steps. A manager restart
//! marks commands that were running as failed, saying why.
//!
//! A step waits in `wait_for_roles`, which reads only the registry (never the
//! store) and is woken by `Registry::watch` for the step's roles and hosts.
//! After a restart, `Commands::fail_interrupted` marks open steps `aborted`;
//! the intent a command already wrote stays and agents keep enforcing it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so tests can pause and advance it (step timeouts).
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::model::{HostStatus, now_millis};
use crate::registry::{Registry, Watch};
use crate::store::{CommandRec, RoleRec, RoleStatusRec, StepRec};

/// Running commands' abort flags.
#[derive(Debug, Default)]
pub struct Commands {
    aborts: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandName {
    Start,
    Stop,
    Restart,
    RollingRestart,
}

impl CommandName {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Start => "start",
            CommandName::Stop => "stop",
            CommandName::Restart => "restart",
            CommandName::RollingRestart => "rolling-restart",
        }
    }
}

/// What a step does to its roles before waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
}

/// Plans the steps of a command over `roles` (already filtered).
pub(crate) fn plan(name: CommandName, roles: &[(RoleRec, u32)], batch_size: u32) -> Vec<(String, Vec<String>)> {
    // Group by start order.
    let mut by_order: BTreeMap<u32, Vec<&RoleRec>> = BTreeMap::new();
    for (r, order) in roles {
        by_order.entry(*order).or_default().push(r);
    }
    let label = |rs: &[&RoleRec]| rs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut steps = Vec::new();
    match name {
        CommandName::Start | CommandName::Restart => {
            let verb = if name == CommandName::Start { "start" } else { "restart" };
            for rs in by_order.values() {
                steps.push((format!("{verb} {}", label(rs)), rs.iter().map(|r| r.id.clone()).collect()));
            }
        }
        CommandName::Stop => {
            for rs in by_order.values().rev() {
                steps.push((format!("stop {}", label(rs)), rs.iter().map(|r| r.id.clone()).collect()));
            }
        }
        CommandName::RollingRestart => {
            for rs in by_order.values() {
                for batch in rs.chunks(batch_size.max(1) as usize) {
                    steps.push((
                        format!("restart {} and wait until healthy", label(batch)),
                        batch.iter().map(|r| r.id.clone()).collect(),
                    ));
                }
            }
        }
    }
    steps
}

fn action_of(name: &str) -> Action {
    match name {
        "start" => Action::Start,
        "stop" => Action::Stop,
        _ => Action::Restart,
    }
}

impl Commands {
    pub(crate) fn flag(&self, id: &str) -> Arc<AtomicBool> {
        self.aborts.lock().expect("aborts lock").entry(id.to_owned()).or_default().clone()
    }

    /// Drops a finished command's abort flag.
    pub(crate) fn forget(&self, id: &str) {
        self.aborts.lock().expect("aborts lock").remove(id);
    }

    /// Marks commands left running by a previous manager process as failed.
    pub async fn fail_interrupted(state: &AppState) -> crate::store::Result<()> {
        for c in state.store.commands_in_state("running").await? {
            let msg = "the manager restarted while this command was running; check the roles and run it again";
            if let Some((_, steps)) = state.store.command(&c.id).await? {
                for s in steps.iter().filter(|s| s.state == "running" || s.state == "pending") {
                    state.store.update_step(&c.id, s.seq, "aborted", msg, None, Some(now_millis())).await?;
                }
            }
            state.store.finish_command(&c.id, "failed", msg, now_millis()).await?;
            tracing::warn!(command = %c.id, "marked interrupted command failed");
        }
        Ok(())
    }
}

/// Runs a command's steps; spawned once per command.
pub(crate) async fn execute(
    state: Arc<AppState>,
    cmd: CommandRec,
    steps: Vec<StepRec>,
    healthy_timeout: Duration,
    wait_healthy: bool,
) {
    let abort = state.commands.flag(&cmd.id);
    let action = action_of(&cmd.name);
    let mut outcome: (&str, String) = ("succeeded", format!("{} finished", cmd.name));
    for (i, step) in steps.iter().enumerate() {
        if abort.load(Ordering::SeqCst) {
            for s in &steps[i..] {
                let _ = state
                    .store
                    .update_step(&cmd.id, s.seq, "aborted", "aborted by user", None, Some(now_millis()))
                    .await;
            }
            outcome = ("aborted", "aborted by user".into());
            break;
        }
        let _ = state.store.update_step(&cmd.id, step.seq, "running", "", Some(now_millis()), None).await;
        match run_step(&state, &cmd, action, step, healthy_timeout, wait_healthy, &abort).await {
            Ok(msg) => {
                let _ = state.store.update_step(&cmd.id, step.seq, "succeeded", &msg, None, Some(now_millis())).await;
            }
            Err(msg) if abort.load(Ordering::SeqCst) => {
                let _ = state.store.update_step(&cmd.id, step.seq, "aborted", &msg, None, Some(now_millis())).await;
                for s in &steps[i + 1..] {
                    let _ = state.store.update_step(&cmd.id, s.seq, "aborted", "aborted by user", None, None).await;
                }
                outcome = ("aborted", "aborted by user".into());
                break;
            }
            Err(msg) => {
                let _ = state.store.update_step(&cmd.id, step.seq, "failed", &msg, None, Some(now_millis())).await;
                for s in &steps[i + 1..] {
                    let _ =
                        state.store.update_step(&cmd.id, s.seq, "skipped", "an earlier step failed", None, None).await;
                }
                outcome = ("failed", format!("step {} ({}) failed: {msg}", step.seq, step.description));
                break;
            }
        }
    }
    if let Err(e) = state.store.finish_command(&cmd.id, outcome.0, &outcome.1, now_millis()).await {
        tracing::error!(command = %cmd.id, error = %e, "could not record command outcome");
    }
    state.commands.aborts.lock().expect("aborts lock").remove(&cmd.id);
    tracing::info!(command = %cmd.id, name = %cmd.name, service = %format!("{}/{}", cmd.cluster, cmd.service), state = outcome.0, "command finished");
}

/// Restarts one step's roles (of `cmd`'s service) and waits until they are
/// running and healthy: the restart part of parcel upgrades.
pub(crate) async fn restart_step(
    state: &AppState,
    cmd: &CommandRec,
    step: &StepRec,
    timeout: Duration,
    abort: &AtomicBool,
) -> Result<String, String> {
    run_step(state, cmd, Action::Restart, step, timeout, true, abort).await
}

/// Starts roles `roles` of `cluster/service` (with `restart`, restarts
/// them: roles whose last start failed) and waits until they run (and are
/// healthy, with `wait_healthy`): one start-order batch of a template
/// instantiation, the same step a start or restart command takes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_roles(
    state: &AppState,
    cluster: &str,
    service: &str,
    roles: Vec<String>,
    restart: bool,
    timeout: Duration,
    wait_healthy: bool,
    abort: &AtomicBool,
) -> Result<String, String> {
    let cmd = CommandRec {
        id: String::new(),
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        name: CommandName::Start.as_str().to_owned(),
        params: serde_json::Value::Null,
        state: "running".into(),
        message: String::new(),
        created_by: String::new(),
        created_at: now_millis(),
        finished_at: None,
    };
    let step = StepRec::pending(0, String::new(), roles);
    let action = if restart { Action::Restart } else { Action::Start };
    run_step(state, &cmd, action, &step, timeout, wait_healthy, abort).await
}

/// Applies one step and waits for its roles. Ok: a summary; Err: why it failed.
async fn run_step(
    state: &AppState,
    cmd: &CommandRec,
    action: Action,
    step: &StepRec,
    timeout: Duration,
    wait_healthy: bool,
    abort: &AtomicBool,
) -> Result<String, String> {
    let roles: Vec<RoleRec> = {
        let mut out = Vec::new();
        for id in &step.roles {
            if let Some(r) = state.store.role(id).await.map_err(|e| e.to_string())? {
                out.push(r);
            }
        }
        out
    };
    // Woken by reports of these roles and status changes of their hosts only;
    // registered before the intent changes so no report is missed.
    let hosts: Vec<String> = roles.iter().map(|r| r.host_id.clone()).collect();
    let watch = state.registry.watch(&step.roles, &hosts);
    let nonces = match action {
        Action::Start => {
            state.store.set_run_state(&step.roles, "running").await.map_err(|e| e.to_string())?;
            HashMap::new()
        }
        Action::Stop => {
            state.store.set_run_state(&step.roles, "stopped").await.map_err(|e| e.to_string())?;
            HashMap::new()
        }
        Action::Restart => state.store.bump_restart_nonce(&step.roles).await.map_err(|e| e.to_string())?,
    };
    state.desired.refresh_service(state, &cmd.cluster, &cmd.service, &[]).await.map_err(|e| e.to_string())?;
    let with_checks: HashMap<String, bool> = roles
        .iter()
        .map(|r| {
            let has =
                state.registry.desired_role(&r.host_id, &r.id).is_some_and(|d| !d.rendered.health_checks.is_empty());
            (r.id.clone(), has)
        })
        .collect();
    let wanted = Wanted { action, nonces, with_checks, wait_healthy };
    wait_for_roles(&state.registry, &watch, &roles, &wanted, timeout, abort).await
}

/// What a step waits for.
struct Wanted {
    action: Action,
    /// Restart nonces the roles must reach (restarts only).
    nonces: HashMap<String, u64>,
    /// Roles that have health checks.
    with_checks: HashMap<String, bool>,
    wait_healthy: bool,
}

/// Waits until every role of a step is done, one fails, the step times out
/// or it is aborted, reading only the registry (woken by `watch`). Ok: a
/// summary; Err: why it failed.
async fn wait_for_roles(
    registry: &Registry,
    watch: &Watch<'_>,
    roles: &[RoleRec],
    wanted: &Wanted,
    timeout: Duration,
    abort: &AtomicBool,
) -> Result<String, String> {
    let action = wanted.action;
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for r in roles {
            // A role's last report says nothing once its host has gone quiet:
            // wait for the host to come back (or the step to time out).
            match registry.host_status(&r.host_id) {
                Some(HostStatus::Healthy) => {}
                other => {
                    let status = other.map(|s| s.as_str()).unwrap_or("unknown");
                    waiting.push(format!("{} (its host {} is {status})", r.name, r.host_id));
                    continue;
                }
            }
            let s = registry.role_status(&r.id);
            let need_health = wanted.wait_healthy && wanted.with_checks.get(&r.id).copied().unwrap_or(false);
            match check(action, s.as_ref(), wanted.nonces.get(&r.id).copied(), need_health) {
                Check::Done => {}
                Check::Failed(why) => return Err(format!("role {} on host {}: {why}", r.name, r.host_id)),
                Check::Waiting(why) => waiting.push(format!("{} ({why})", r.name)),
            }
        }
        if waiting.is_empty() {
            let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
            return Ok(format!("{} {}", past(action), names.join(", ")));
        }
        if abort.load(Ordering::SeqCst) {
            return Err(format!("aborted while waiting for {}", waiting.join(", ")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {} s waiting for {}", timeout.as_secs(), waiting.join(", ")));
        }
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), watch.changed()).await;
    }
}

fn past(a: Action) -> &'static str {
    match a {
        Action::Start => "started",
        Action::Stop => "stopped",
        Action::Restart => "restarted",
    }
}

enum Check {
    Done,
    Waiting(String),
    Failed(String),
}

fn check(action: Action, s: Option<&RoleStatusRec>, nonce: Option<u64>, need_health: bool) -> Check {
    let Some(s) = s else { return Check::Waiting("no report from its agent yet".into()) };
    match action {
        Action::Stop => {
            if s.state == "stopped" || (s.state == "failed" && s.pid == 0) {
                Check::Done
            } else {
                Check::Waiting(format!("is {}", s.state))
            }
        }
        Action::Start | Action::Restart => {
            if s.state == "failed" && nonce.is_none_or(|n| s.restart_nonce >= n) {
                let tail = s.last_log_lines.iter().rev().take(5).rev().cloned().collect::<Vec<_>>().join(" | ");
                return Check::Failed(format!(
                    "failed to start: {} {}",
                    s.last_error,
                    if tail.is_empty() { String::new() } else { format!("(log: {tail})") }
                ));
            }
            if let Some(n) = nonce
                && s.restart_nonce < n
            {
                return Check::Waiting("not restarted yet".into());
            }
            if s.state != "running" {
                return Check::Waiting(format!("is {}", s.state));
            }
            if need_health && s.health != "good" {
                return Check::Waiting(format!("health is {}", s.health));
            }
            Check::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleRec {
        RoleRec {
            id: format!("id-{name}"),
            cluster: "c".into(),
            service: "s".into(),
            name: name.into(),
            role_type: "t".into(),
            group: "default".into(),
            host_id: "h".into(),
            index: 0,
            run_state: "stopped".into(),
            restart_nonce: 0,
            created_at: 0,
        }
    }

    #[test]
    fn plans_follow_start_order_and_batches() {
        let roles = vec![(role("replica-1"), 2), (role("primary-1"), 1), (role("replica-2"), 2)];
        let descr = |steps: Vec<(String, Vec<String>)>| steps.into_iter().map(|s| s.0).collect::<Vec<_>>();
        assert_eq!(descr(plan(CommandName::Start, &roles, 1)), vec!["start primary-1", "start replica-1, replica-2"]);
        assert_eq!(descr(plan(CommandName::Stop, &roles, 1)), vec!["stop replica-1, replica-2", "stop primary-1"]);
        assert_eq!(
            descr(plan(CommandName::RollingRestart, &roles, 1)),
            vec![
                "restart primary-1 and wait until healthy",
                "restart replica-1 and wait until healthy",
                "restart replica-2 and wait until healthy"
            ]
        );
        assert_eq!(
            descr(plan(CommandName::RollingRestart, &roles, 2)),
            vec!["restart primary-1 and wait until healthy", "restart replica-1, replica-2 and wait until healthy"]
        );
    }

    fn status(state: &str, nonce: u64, health: &str) -> RoleStatusRec {
        RoleStatusRec { state: state.into(), restart_nonce: nonce, health: health.into(), pid: 1, ..Default::default() }
    }

    /// A step whose role never reports times out exactly at its timeout on
    /// tokio's paused clock, naming what it waited for; a report that
    /// arrives in time ends it at once.
    #[tokio::test]
    async fn a_step_times_out_at_its_deadline_and_ends_on_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let registry = crate::registry::testing::registry(dir.path(), &["h"], Duration::from_secs(3600)).await;
        let roles = vec![role("primary-1")];
        let wanted =
            Wanted { action: Action::Start, nonces: HashMap::new(), with_checks: HashMap::new(), wait_healthy: false };
        let abort = AtomicBool::new(false);
        tokio::time::pause();
        let start = Instant::now();
        let watch = registry.watch(&["id-primary-1".to_owned()], &["h".to_owned()]);
        let err =
            wait_for_roles(&registry, &watch, &roles, &wanted, Duration::from_secs(120), &abort).await.unwrap_err();
        assert_eq!(err, "timed out after 120 s waiting for primary-1 (no report from its agent yet)");
        // tokio's timers round up to the millisecond.
        let took = start.elapsed();
        assert!((Duration::from_secs(120)..Duration::from_millis(120_010)).contains(&took), "{took:?}");

        let wait = wait_for_roles(&registry, &watch, &roles, &wanted, Duration::from_secs(120), &abort);
        let report = async {
            tokio::time::sleep(Duration::from_millis(7_500)).await;
            registry.update_role_status(
                vec![status("running", 0, "unknown")]
                    .into_iter()
                    .map(|mut s| {
                        s.role_id = "id-primary-1".into();
                        s
                    })
                    .collect(),
            );
        };
        let start = Instant::now();
        let (done, ()) = tokio::join!(wait, report);
        assert_eq!(done.unwrap(), "started primary-1");
        let took = start.elapsed();
        assert!(
            (Duration::from_millis(7_500)..Duration::from_millis(7_510)).contains(&took),
            "woken by the report: {took:?}"
        );
    }

    #[test]
    fn step_conditions() {
        assert!(matches!(check(Action::Start, None, None, false), Check::Waiting(_)));
        assert!(matches!(check(Action::Start, Some(&status("running", 0, "unknown")), None, false), Check::Done));
        assert!(matches!(check(Action::Start, Some(&status("running", 0, "unknown")), None, true), Check::Waiting(_)));
        assert!(matches!(check(Action::Start, Some(&status("running", 0, "good")), None, true), Check::Done));
        assert!(matches!(
            check(Action::Restart, Some(&status("running", 1, "good")), Some(2), true),
            Check::Waiting(_)
        ));
        assert!(matches!(check(Action::Restart, Some(&status("running", 2, "good")), Some(2), true), Check::Done));
        assert!(matches!(check(Action::Restart, Some(&status("failed", 2, "bad")), Some(2), true), Check::Failed(_)));
        // A failure from before the restart does not count.
        assert!(matches!(check(Action::Restart, Some(&status("failed", 1, "bad")), Some(2), true), Check::Waiting(_)));
        assert!(matches!(check(Action::Stop, Some(&status("running", 0, "good")), None, false), Check::Waiting(_)));
        assert!(matches!(check(Action::Stop, Some(&status("stopped", 0, "unknown")), None, false), Check::Done));
    }
}
