//! Tables for the reconciler: each test is a script of (time, event, effects),
//! with effects rendered as short strings so a script reads like a log.

use super::*;
use crate::roles::Probe as ProbeKind;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn spec(id: &str, revision: u64, nonce: u64, run_state: RunState) -> RoleSpec {
    RoleSpec {
        role_id: id.into(),
        config_revision: revision,
        restart_nonce: nonce,
        run_state,
        files: vec![ConfigFile {
            path: "a.conf".into(),
            content: format!("rev {revision}").into_bytes(),
            sha256: format!("d{revision}"),
            mode: 0,
        }],
        process: ProcessSpec {
            program: "p".into(),
            stop_signal: "SIGTERM".into(),
            stop_grace: 5 * SEC,
            ..ProcessSpec::default()
        },
        ..RoleSpec::default()
    }
}

fn running(id: &str, revision: u64, nonce: u64) -> RoleSpec {
    spec(id, revision, nonce, RunState::Running)
}

fn render(e: &Effect) -> Option<String> {
    Some(match e {
        Effect::WriteFiles { role, revision, .. } => format!("write {role}@{revision}"),
        Effect::CheckFiles { role, revision, .. } => format!("check {role}@{revision}"),
        Effect::Start { role, revision, nonce, .. } => format!("start {role}@{revision}#{nonce}"),
        Effect::Stop { role, pgid, signal } => format!("stop {role} {pgid} {signal}"),
        Effect::KillGroup { role, pgid } => format!("kill {role} {pgid}"),
        Effect::Reload { role, pid, signal, revision, .. } => format!("reload {role} {pid} {signal}@{revision}"),
        Effect::StartProbes { role, checks } => format!("probes {role} {}", checks.len()),
        Effect::StopProbes { role } => format!("unprobes {role}"),
        Effect::StartCollectors { role, sources } => format!("collect {role} {}", sources.len()),
        Effect::StopCollectors { role } => format!("uncollect {role}"),
        Effect::RemoveRoleDir { role } => format!("rmdir {role}"),
        Effect::Report(_) => return None,
    })
}

struct H {
    r: Reconciler,
    t0: Instant,
    now: Instant,
}

impl H {
    fn new(policy: Policy) -> H {
        let t0 = Instant::now();
        H { r: Reconciler::new(policy), t0, now: t0 }
    }

    /// Handles `event` at `at` after the start and returns the rendered effects.
    fn at(&mut self, at: Duration, event: Event) -> Vec<String> {
        self.now = self.t0 + at;
        self.r.handle(self.now, event).iter().filter_map(render).collect()
    }

    fn run(&mut self, script: &[(Duration, Event, &[&str])]) {
        for (i, (at, event, want)) in script.iter().enumerate() {
            let got = self.at(*at, event.clone());
            assert_eq!(got, *want, "step {i} at {at:?}: {event:?}");
        }
    }

    fn status(&self, id: &str) -> RoleStatus {
        self.r.statuses().into_iter().find(|s| s.role_id == id).unwrap_or_else(|| panic!("no status for {id}"))
    }
}

fn desired(roles: Vec<RoleSpec>) -> Event {
    Event::DesiredRoles { generation: 1, roles }
}

fn written(id: &str, revision: u64) -> Event {
    let digests = BTreeMap::from([("a.conf".to_owned(), format!("d{revision}"))]);
    let hashes = BTreeMap::from([("a.conf".to_owned(), format!("h{revision}"))]);
    Event::FilesWritten { role: id.into(), revision, digests, hashes }
}

fn started(id: &str, pid: u32) -> Event {
    Event::ProcessStarted { role: id.into(), pid, started_at_unix_ms: 1_000 }
}

fn exited(id: &str, code: i32) -> Event {
    Event::ProcessExited { role: id.into(), status: ExitStatus::Code(code), log_tail: vec![format!("bye {code}")] }
}

/// A role running with pid 100 from revision 1, nonce 0, at t = 0.
fn up() -> H {
    let mut h = H::new(Policy::default());
    h.run(&[
        (Duration::ZERO, desired(vec![running("r1", 1, 0)]), &["write r1@1"]),
        (Duration::ZERO, written("r1", 1), &["start r1@1#0"]),
        (Duration::ZERO, started("r1", 100), &[]),
    ]);
    h
}

#[test]
fn files_first_then_start() {
    let mut h = H::new(Policy::default());
    h.run(&[
        (Duration::ZERO, desired(vec![running("r1", 1, 0)]), &["write r1@1"]),
        // Nothing starts while the write is outstanding.
        (MS, Event::Tick, &[]),
        (MS, written("r1", 1), &["start r1@1#0"]),
    ]);
    assert_eq!(h.status("r1").state, RoleState::Starting);
    h.run(&[(2 * MS, started("r1", 100), &[])]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.applied_revision, s.running_revision), (RoleState::Running, 100, 1, 1));
    assert_eq!(s.file_hashes.get("a.conf").map(String::as_str), Some("h1"));
    assert_eq!(s.started_at_unix_ms, 1_000);
    assert_eq!(h.r.deadline(), None, "nothing to wait for");
}

#[test]
fn a_files_only_change_does_not_restart() {
    let mut h = up();
    h.run(&[(SEC, desired(vec![running("r1", 2, 0)]), &["write r1@2"]), (SEC, written("r1", 2), &[])]);
    let s = h.status("r1");
    assert_eq!((s.pid, s.applied_revision, s.running_revision), (100, 2, 1), "stale, not restarted");
}

#[test]
fn a_new_nonce_restarts_gracefully() {
    let mut h = up();
    h.run(&[
        (SEC, desired(vec![running("r1", 2, 7)]), &["write r1@2", "stop r1 100 SIGTERM"]),
        (SEC, written("r1", 2), &[]),
        (2 * SEC, exited("r1", 0), &["kill r1 100", "start r1@2#7"]),
        (2 * SEC, started("r1", 101), &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.pid, s.running_revision, s.restart_nonce, s.restart_count), (101, 2, 7, 0));
    assert_eq!(s.last_error, "", "an asked-for restart is not a crash");
}

#[test]
fn stop_escalates_to_sigkill_of_the_group_after_the_grace() {
    let mut h = up();
    h.run(&[(SEC, desired(vec![spec("r1", 1, 0, RunState::Stopped)]), &["stop r1 100 SIGTERM"])]);
    assert_eq!(h.status("r1").state, RoleState::Stopping);
    assert_eq!(h.r.deadline(), Some(h.t0 + 6 * SEC));
    h.run(&[
        (6 * SEC - MS, Event::Tick, &[]),
        (6 * SEC, Event::Tick, &["kill r1 100"]),
        (7 * SEC, Event::Tick, &[]),
        (8 * SEC, exited("r1", -9), &["kill r1 100"]),
        (9 * SEC, Event::Tick, &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.restart_count), (RoleState::Stopped, 0, 0));
    assert_eq!(h.r.deadline(), None);
}

#[test]
fn crashes_restart_with_doubling_backoff() {
    let mut h = up();
    // uptime 20 s each time, so only the 2-minute window could call it a loop.
    let script: Vec<(Duration, Event, &[&str])> = vec![
        (20 * SEC, exited("r1", 1), &["kill r1 100"]),
        (21 * SEC - MS, Event::Tick, &[]),
        (21 * SEC, Event::Tick, &["start r1@1#0"]),
        (21 * SEC, started("r1", 101), &[]),
        (41 * SEC, exited("r1", 1), &["kill r1 101"]),
        (42 * SEC, Event::Tick, &[]),
        (43 * SEC, Event::Tick, &["start r1@1#0"]),
        (43 * SEC, started("r1", 102), &[]),
        (63 * SEC, exited("r1", 1), &["kill r1 102"]),
        (67 * SEC, Event::Tick, &["start r1@1#0"]),
    ];
    h.run(&script);
    let s = h.status("r1");
    assert_eq!((s.state, s.restart_count, s.last_exit_status), (RoleState::Starting, 3, 1));
    assert!(s.last_error.contains("exited with status 1; restarting in 4s"), "{}", s.last_error);
}

#[test]
fn backoff_is_capped_and_reset_after_five_minutes_up() {
    let policy = Policy { max_crashes: 100, ..Policy::default() };
    let mut h = H::new(policy);
    h.at(Duration::ZERO, desired(vec![running("r1", 1, 0)]));
    h.at(Duration::ZERO, written("r1", 1));
    let mut t = Duration::ZERO;
    let mut delays = Vec::new();
    for pid in 0..9 {
        h.at(t, started("r1", pid));
        t += 20 * SEC;
        h.at(t, exited("r1", 1));
        let next = h.r.deadline().expect("restart scheduled") - h.t0;
        delays.push((next - t).as_secs());
        t = next;
        assert_eq!(h.at(t, Event::Tick), vec!["start r1@1#0".to_owned()]);
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    h.at(t, started("r1", 50));
    t += 300 * SEC;
    h.at(t, exited("r1", 1));
    assert_eq!(h.r.deadline(), Some(h.t0 + t + SEC), "reset to 1s after 5 minutes up");
}

#[test]
fn five_exits_within_two_minutes_is_a_crash_loop() {
    let mut h = up();
    let mut t = Duration::ZERO;
    for pid in 100..104 {
        t += 11 * SEC;
        h.at(t, exited("r1", 3));
        t = h.r.deadline().expect("restart") - h.t0;
        h.at(t, Event::Tick);
        h.at(t, started("r1", pid + 1));
    }
    t += 11 * SEC;
    assert_eq!(h.at(t, exited("r1", 3)), vec!["kill r1 104".to_owned()]);
    let s = h.status("r1");
    assert_eq!(s.state, RoleState::Failed);
    assert!(s.last_error.starts_with("crash loop: the process exited with status 3"), "{}", s.last_error);
    assert_eq!(s.last_log_lines, ["bye 3"]);
    assert_eq!(s.restart_count, 4);
    assert_eq!(h.r.deadline(), None, "no more restarts");
    assert!(h.at(t + 600 * SEC, Event::Tick).is_empty());
    // The same desired state again changes nothing; a new nonce tries again.
    assert!(h.at(t + 601 * SEC, desired(vec![running("r1", 1, 0)])).is_empty());
    assert_eq!(h.at(t + 602 * SEC, desired(vec![running("r1", 1, 1)])), vec!["start r1@1#1".to_owned()]);
    let s = h.status("r1");
    assert_eq!((s.state, s.last_error.as_str(), s.last_log_lines.len()), (RoleState::Starting, "", 0));
}

#[test]
fn a_crash_loop_after_a_restart_reports_the_restart_nonce() {
    // The manager waits for a restart (nonce 7) to succeed or fail: a crash
    // loop of the restarted process must carry nonce 7 although no process
    // runs, or the manager cannot tell it from an older failure.
    let mut h = up();
    h.run(&[
        (SEC, desired(vec![running("r1", 1, 7)]), &["stop r1 100 SIGTERM"]),
        (2 * SEC, exited("r1", 0), &["kill r1 100", "start r1@1#7"]),
    ]);
    let mut t = 2 * SEC;
    for pid in 101..105 {
        h.at(t, started("r1", pid));
        h.at(t, exited("r1", 1));
        t = h.r.deadline().expect("restart") - h.t0;
        h.at(t, Event::Tick);
    }
    h.at(t, started("r1", 105));
    h.at(t, exited("r1", 1));
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.restart_nonce), (RoleState::Failed, 0, 7), "{}", s.last_error);
    assert!(s.last_error.starts_with("crash loop"), "{}", s.last_error);
}

#[test]
fn five_short_runs_in_a_row_is_a_crash_loop_even_spread_out() {
    // A tiny window: only the short-run rule can fire.
    let policy = Policy { crash_window: SEC, max_backoff: 100 * SEC, ..Policy::default() };
    let mut h = H::new(policy);
    h.at(Duration::ZERO, desired(vec![running("r1", 1, 0)]));
    h.at(Duration::ZERO, written("r1", 1));
    let mut t = Duration::ZERO;
    for pid in 0..5 {
        assert_ne!(h.status("r1").state, RoleState::Failed, "run {pid}");
        h.at(t, started("r1", pid));
        t += 9 * SEC;
        h.at(t, exited("r1", 1));
        if let Some(next) = h.r.deadline() {
            t = next - h.t0;
            h.at(t, Event::Tick);
        }
    }
    assert_eq!(h.status("r1").state, RoleState::Failed);
    // One long run in between resets the count.
    let mut h = H::new(Policy { crash_window: SEC, ..Policy::default() });
    h.at(Duration::ZERO, desired(vec![running("r1", 1, 0)]));
    h.at(Duration::ZERO, written("r1", 1));
    let mut t = Duration::ZERO;
    for (pid, uptime) in [9, 9, 9, 9, 30, 9, 9].into_iter().enumerate() {
        h.at(t, started("r1", pid as u32));
        t += uptime * SEC;
        h.at(t, exited("r1", 1));
        t = h.r.deadline().expect("still restarting") - h.t0;
        h.at(t, Event::Tick);
    }
    assert_eq!(h.status("r1").state, RoleState::Starting);
}

#[test]
fn a_program_that_cannot_start_counts_as_a_crash() {
    let mut h = H::new(Policy::default());
    h.at(Duration::ZERO, desired(vec![running("r1", 1, 0)]));
    h.run(&[
        (Duration::ZERO, written("r1", 1), &["start r1@1#0"]),
        (Duration::ZERO, Event::StartFailed { role: "r1".into(), error: "no such file".into() }, &[]),
        (SEC, Event::Tick, &["start r1@1#0"]),
    ]);
    let s = h.status("r1");
    assert!(s.last_error.contains("could not start: no such file"), "{}", s.last_error);
    assert_eq!(s.restart_count, 1);
}

#[test]
fn removed_roles_are_stopped_and_their_directory_removed() {
    let mut h = up();
    h.run(&[
        (SEC, desired(vec![]), &["stop r1 100 SIGTERM"]),
        (2 * SEC, exited("r1", 0), &["kill r1 100", "rmdir r1"]),
        (3 * SEC, Event::Tick, &[]),
    ]);
    assert!(h.r.statuses().is_empty());
    // A role that never ran goes at once.
    let mut h = H::new(Policy::default());
    h.at(Duration::ZERO, desired(vec![spec("r2", 1, 0, RunState::Stopped)]));
    h.at(Duration::ZERO, written("r2", 1));
    assert_eq!(h.status("r2").state, RoleState::Stopped);
    assert_eq!(h.at(SEC, desired(vec![])), vec!["rmdir r2".to_owned()]);
}

#[test]
fn a_role_coming_back_while_stopping_for_removal_is_kept() {
    let mut h = up();
    h.run(&[
        (SEC, desired(vec![]), &["stop r1 100 SIGTERM"]),
        (SEC, desired(vec![running("r1", 1, 0)]), &[]),
        (2 * SEC, exited("r1", 0), &["kill r1 100", "start r1@1#0"]),
    ]);
}

#[test]
fn desired_changes_while_starting_wait_for_the_start() {
    let mut h = H::new(Policy::default());
    h.run(&[
        (Duration::ZERO, desired(vec![running("r1", 1, 0)]), &["write r1@1"]),
        (Duration::ZERO, written("r1", 1), &["start r1@1#0"]),
        (MS, desired(vec![spec("r1", 1, 0, RunState::Stopped)]), &[]),
        (2 * MS, started("r1", 100), &["stop r1 100 SIGTERM"]),
    ]);
}

#[test]
fn failed_writes_block_the_start_and_are_retried() {
    let mut h = H::new(Policy::default());
    h.run(&[
        (Duration::ZERO, desired(vec![running("r1", 1, 0)]), &["write r1@1"]),
        (Duration::ZERO, Event::WriteFailed { role: "r1".into(), revision: 1, error: "disk full".into() }, &[]),
    ]);
    let s = h.status("r1");
    assert_eq!(s.state, RoleState::Failed);
    assert!(s.last_error.contains("disk full"), "{}", s.last_error);
    assert_eq!(h.r.deadline(), Some(h.t0 + 10 * SEC));
    h.run(&[
        (9 * SEC, Event::Tick, &[]),
        (10 * SEC, Event::Tick, &["write r1@1"]),
        (10 * SEC, written("r1", 1), &["start r1@1#0"]),
    ]);
    assert_eq!(h.status("r1").last_error, "");
}

#[test]
fn files_only_agents_never_run_processes() {
    let mut h = H::new(Policy { run_processes: false, ..Policy::default() });
    h.run(&[
        (Duration::ZERO, desired(vec![running("r1", 1, 0)]), &["write r1@1"]),
        (Duration::ZERO, written("r1", 1), &[]),
        (SEC, desired(vec![running("r1", 2, 1)]), &["write r1@2"]),
        (SEC, written("r1", 2), &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.applied_revision), (RoleState::Stopped, 2));
}

#[test]
fn adopted_processes_are_kept_without_a_restart() {
    let mut h = H::new(Policy::default());
    let applied = AppliedFiles {
        revision: 1,
        digests: BTreeMap::from([("a.conf".into(), "d1".into())]),
        hashes: BTreeMap::from([("a.conf".into(), "h1".into())]),
    };
    let process = AdoptedProcess { pid: 77, revision: 1, nonce: 0, started_at_unix_ms: 5, loaded: None };
    h.run(&[
        (
            Duration::ZERO,
            Event::Restored { role: "r1".into(), applied: Some(applied.clone()), process: Some(process.clone()) },
            &[],
        ),
        (
            Duration::ZERO,
            Event::Restored {
                role: "gone".into(),
                applied: Some(applied),
                process: Some(AdoptedProcess { pid: 78, ..process.clone() }),
            },
            &[],
        ),
        // Nothing is enforced before a desired state is known.
        (SEC, Event::Tick, &[]),
        (SEC, desired(vec![running("r1", 1, 0)]), &["stop gone 78 "]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.running_revision, s.started_at_unix_ms), (RoleState::Running, 77, 1, 5));
    // A disappearance is an exit with unknown status, and a crash.
    h.run(&[(
        2 * SEC,
        Event::ProcessExited { role: "r1".into(), status: ExitStatus::Unknown, log_tail: vec![] },
        &["kill r1 77"],
    )]);
    let s = h.status("r1");
    assert!(s.last_error.contains("status unknown"), "{}", s.last_error);
    assert_eq!(s.restart_count, 1);
}

#[test]
fn an_adopted_process_with_an_old_nonce_is_restarted() {
    let mut h = H::new(Policy::default());
    let applied = AppliedFiles {
        revision: 1,
        digests: BTreeMap::from([("a.conf".into(), "d1".into())]),
        hashes: BTreeMap::new(),
    };
    let process = AdoptedProcess { pid: 77, revision: 1, nonce: 0, started_at_unix_ms: 5, loaded: None };
    h.at(Duration::ZERO, Event::Restored { role: "r1".into(), applied: Some(applied), process: Some(process) });
    h.run(&[
        (SEC, desired(vec![running("r1", 1, 3)]), &["stop r1 77 SIGTERM"]),
        (SEC, exited("r1", 0), &["kill r1 77", "start r1@1#3"]),
    ]);
}

#[test]
fn health_follows_probe_results_and_threshold() {
    let mut h = H::new(Policy::default());
    let mut s = running("r1", 1, 0);
    s.health_checks = vec![HealthCheck {
        probe: ProbeKind::Tcp { host: String::new(), port: 1 },
        interval: SEC,
        timeout: SEC,
        failure_threshold: 2,
    }];
    h.at(Duration::ZERO, desired(vec![s]));
    h.at(Duration::ZERO, written("r1", 1));
    assert_eq!(h.at(Duration::ZERO, started("r1", 100)), vec!["probes r1 1".to_owned()]);
    let result = |ok| Event::HealthResult { role: "r1".into(), check: 0, ok };
    let table = [
        (false, RoleHealth::Unknown),
        (true, RoleHealth::Good),
        (false, RoleHealth::Good),
        (false, RoleHealth::Bad),
        (false, RoleHealth::Bad),
        (true, RoleHealth::Good),
    ];
    for (i, (ok, want)) in table.into_iter().enumerate() {
        h.at(SEC, result(ok));
        assert_eq!(h.status("r1").health, want, "row {i}");
    }
    assert_eq!(h.at(2 * SEC, exited("r1", 1)), vec!["kill r1 100".to_owned(), "unprobes r1".to_owned()]);
    assert_eq!(h.status("r1").health, RoleHealth::Unknown);
    // Results that arrive after the exit are ignored.
    h.at(2 * SEC, result(true));
    assert_eq!(h.status("r1").health, RoleHealth::Unknown);
}

#[test]
fn collectors_run_while_the_process_is_up() {
    let source = |port| MetricSource {
        kind: roles::MetricSourceKind::Redis { host: String::new(), port, password: String::new() },
        interval: SEC,
        timeout: SEC,
    };
    let mut h = H::new(Policy::default());
    let mut s = running("r1", 1, 0);
    s.metric_sources = vec![source(6379)];
    h.run(&[
        (Duration::ZERO, desired(vec![s.clone()]), &["write r1@1"]),
        (Duration::ZERO, written("r1", 1), &["start r1@1#0"]),
        (Duration::ZERO, started("r1", 100), &["collect r1 1"]),
        // The same sources again: nothing; other sources replace them.
        (SEC, desired(vec![s.clone()]), &[]),
    ]);
    s.metric_sources.push(source(6380));
    h.run(&[(SEC, desired(vec![s.clone()]), &["collect r1 2"])]);
    // A crash stops them; the restarted process gets them again.
    h.run(&[
        (2 * SEC, exited("r1", 1), &["kill r1 100", "uncollect r1"]),
        (3 * SEC, Event::Tick, &["start r1@1#0"]),
        (3 * SEC, started("r1", 101), &["collect r1 2"]),
    ]);
    // A stop stops them at once, not at the exit.
    let mut stopped = s.clone();
    stopped.run_state = RunState::Stopped;
    h.run(&[
        (4 * SEC, desired(vec![stopped]), &["uncollect r1", "stop r1 101 SIGTERM"]),
        (4 * SEC, exited("r1", 0), &["kill r1 101"]),
        (5 * SEC, desired(vec![s.clone()]), &["start r1@1#0"]),
        (5 * SEC, started("r1", 102), &["collect r1 2"]),
    ]);
    // Sources removed from the spec: stopped, the process left alone.
    s.metric_sources.clear();
    h.run(&[(6 * SEC, desired(vec![s]), &["uncollect r1"])]);
}

#[test]
fn unusable_role_ids_fail_without_touching_the_disk() {
    let mut h = H::new(Policy::default());
    assert!(h.at(Duration::ZERO, desired(vec![running("../etc", 1, 0)])).is_empty());
    let s = h.status("../etc");
    assert_eq!(s.state, RoleState::Failed);
    assert!(s.last_error.contains("directory name"), "{}", s.last_error);
    assert!(h.at(SEC, desired(vec![])).is_empty(), "no rmdir for it either");
    assert!(h.r.statuses().is_empty());
}

#[test]
fn reports_are_sent_only_on_change() {
    let mut h = H::new(Policy::default());
    let t = h.t0;
    let reports = |effects: Vec<Effect>| effects.into_iter().filter(|e| matches!(e, Effect::Report(_))).count();
    assert_eq!(reports(h.r.handle(t, desired(vec![running("r1", 1, 0)]))), 1);
    assert_eq!(reports(h.r.handle(t, Event::Tick)), 0);
    assert_eq!(reports(h.r.handle(t, written("r1", 1))), 1);
    assert_eq!(reports(h.r.handle(t, started("r1", 9))), 1);
    assert_eq!(reports(h.r.handle(t, desired(vec![running("r1", 1, 0)]))), 0);
}

#[test]
fn roles_wait_for_their_parcels_without_crash_looping() {
    let mut h = H::new(Policy { host: "web1".into(), ..Policy::default() });
    let mut s = running("r1", 1, 0);
    s.parcels = vec!["jre".into(), "redis".into()];
    let active = |names: &[&str]| Event::ParcelsChanged { active: names.iter().map(|n| (*n).to_owned()).collect() };
    h.run(&[(Duration::ZERO, desired(vec![s.clone()]), &["write r1@1"]), (Duration::ZERO, written("r1", 1), &[])]);
    let st = h.status("r1");
    assert_eq!((st.state, st.last_error.as_str()), (RoleState::Failed, "parcel jre is not active on host web1"));
    assert_eq!(h.r.deadline(), None, "no retry timer: only a parcel change retries");
    assert!(h.at(SEC, active(&["jre"])).is_empty());
    assert_eq!(h.status("r1").last_error, "parcel redis is not active on host web1");
    assert_eq!(h.status("r1").restart_count, 0);
    assert_eq!(h.at(2 * SEC, active(&["jre", "redis"])), ["start r1@1#0"]);
    assert_eq!(h.status("r1").state, RoleState::Starting);
    assert!(h.status("r1").last_error.is_empty());
    h.at(2 * SEC, started("r1", 42));
    // Deactivating a parcel leaves a running process alone.
    assert!(h.at(3 * SEC, active(&[])).is_empty());
    assert_eq!(h.status("r1").state, RoleState::Running);
    // A stopped role does not care.
    let mut stopped = spec("r2", 1, 0, RunState::Stopped);
    stopped.parcels = vec!["redis".into()];
    h.at(4 * SEC, desired(vec![s, stopped]));
    h.at(4 * SEC, written("r2", 1));
    assert_eq!(h.status("r2").state, RoleState::Stopped);
}

/// A role of a type with a reload signal: revision `revision`, restart digest
/// `restart`, one file whose manager digest is `digest`.
fn reloadable(revision: u64, restart: &str, digest: &str) -> RoleSpec {
    let mut s = running("r1", revision, 0);
    s.process.reload_signal = "SIGHUP".into();
    s.restart_digest = restart.into();
    s.files[0].sha256 = digest.into();
    s
}

fn written_digest(revision: u64, digest: &str) -> Event {
    let digests = BTreeMap::from([("a.conf".to_owned(), digest.to_owned())]);
    let hashes = BTreeMap::from([("a.conf".to_owned(), format!("h-{digest}"))]);
    Event::FilesWritten { role: "r1".into(), revision, digests, hashes }
}

/// `r1` up with pid 100 since t = 0, from `reloadable(1, "k1", "d1")`.
fn reloadable_up() -> H {
    let mut h = H::new(Policy::default());
    h.run(&[
        (Duration::ZERO, desired(vec![reloadable(1, "k1", "d1")]), &["write r1@1"]),
        (Duration::ZERO, written_digest(1, "d1"), &["start r1@1#0"]),
        (Duration::ZERO, started("r1", 100), &[]),
    ]);
    h
}

#[test]
fn new_files_are_applied_by_reload_when_no_restart_parameter_changed() {
    let mut h = reloadable_up();
    // A new revision whose restart digest is unchanged: write, then reload the
    // process itself; it now runs revision 2.
    h.run(&[
        (2 * SEC, desired(vec![reloadable(2, "k1", "d2")]), &["write r1@2"]),
        (2 * SEC, written_digest(2, "d2"), &["reload r1 100 SIGHUP@2"]),
        (2 * SEC, Event::Reloaded { role: "r1".into(), at_unix_ms: 5_000 }, &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.applied_revision, s.running_revision), (RoleState::Running, 100, 2, 2));
    assert_eq!((s.reload_count, s.reloaded_at_unix_ms), (1, 5_000));
    // The same revision with other files (a service it refers to changed):
    // reloaded again; the same files again: nothing.
    h.run(&[
        (3 * SEC, desired(vec![reloadable(2, "k1", "d2b")]), &["write r1@2"]),
        (3 * SEC, written_digest(2, "d2b"), &["reload r1 100 SIGHUP@2"]),
        (3 * SEC, Event::Reloaded { role: "r1".into(), at_unix_ms: 6_000 }, &[]),
        (4 * SEC, desired(vec![reloadable(2, "k1", "d2b")]), &[]),
    ]);
    assert_eq!(h.status("r1").reload_count, 2);
    // A restart starts the count over.
    let mut restarted = reloadable(2, "k1", "d2b");
    restarted.restart_nonce = 1;
    h.run(&[
        (5 * SEC, desired(vec![restarted]), &["stop r1 100 SIGTERM"]),
        (5 * SEC, exited("r1", 0), &["kill r1 100", "start r1@2#1"]),
        (5 * SEC, started("r1", 101), &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.pid, s.reload_count, s.reloaded_at_unix_ms), (101, 0, 0));
}

#[test]
fn a_restart_parameter_change_is_never_applied_by_reload() {
    let mut h = reloadable_up();
    h.run(&[
        (2 * SEC, desired(vec![reloadable(2, "k2", "d2")]), &["write r1@2"]),
        (2 * SEC, written_digest(2, "d2"), &[]),
        // Later file changes wait for the restart too: the process still runs
        // with the old restart parameters.
        (3 * SEC, desired(vec![reloadable(2, "k2", "d3")]), &["write r1@2"]),
        (3 * SEC, written_digest(2, "d3"), &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.pid, s.applied_revision, s.running_revision, s.reload_count), (100, 2, 1, 0), "stale");
    assert_eq!(h.r.deadline(), None);
}

#[test]
fn a_young_process_is_reloaded_once_it_has_settled() {
    let mut h = reloadable_up();
    h.run(&[
        (100 * MS, desired(vec![reloadable(2, "k1", "d2")]), &["write r1@2"]),
        (100 * MS, written_digest(2, "d2"), &[]),
    ]);
    assert_eq!(h.r.deadline(), Some(h.t0 + SEC), "waits for reload_settle");
    h.run(&[(SEC, Event::Tick, &["reload r1 100 SIGHUP@2"])]);
    assert_eq!(h.r.deadline(), None);
}

#[test]
fn no_reload_without_a_signal_a_digest_or_known_files() {
    // No reload signal: the classic "files only" change.
    let mut h = up();
    h.run(&[(2 * SEC, desired(vec![running("r1", 2, 0)]), &["write r1@2"]), (2 * SEC, written("r1", 2), &[])]);
    // An older manager sends no restart digest.
    let mut h = reloadable_up();
    h.run(&[
        (2 * SEC, desired(vec![reloadable(2, "", "d2")]), &["write r1@2"]),
        (2 * SEC, written_digest(2, "d2"), &[]),
    ]);
    // A process adopted from an agent that did not record what it read.
    let mut h = H::new(Policy::default());
    let applied = AppliedFiles {
        revision: 1,
        digests: BTreeMap::from([("a.conf".to_owned(), "d1".to_owned())]),
        hashes: BTreeMap::new(),
    };
    let process = AdoptedProcess { pid: 77, revision: 1, nonce: 0, started_at_unix_ms: 5, loaded: None };
    h.at(Duration::ZERO, Event::Restored { role: "r1".into(), applied: Some(applied), process: Some(process) });
    h.run(&[
        (2 * SEC, desired(vec![reloadable(2, "k1", "d2")]), &["write r1@2"]),
        (2 * SEC, written_digest(2, "d2"), &[]),
    ]);
    // One that recorded them is reloaded.
    let mut h = H::new(Policy::default());
    let loaded =
        Loaded { digests: BTreeMap::from([("a.conf".to_owned(), "d1".to_owned())]), restart_digest: "k1".into() };
    let process = AdoptedProcess { pid: 77, revision: 1, nonce: 0, started_at_unix_ms: 5, loaded: Some(loaded) };
    h.at(Duration::ZERO, Event::Restored { role: "r1".into(), applied: None, process: Some(process) });
    h.run(&[
        (2 * SEC, desired(vec![reloadable(2, "k1", "d2")]), &["write r1@2"]),
        (2 * SEC, written_digest(2, "d2"), &["reload r1 77 SIGHUP@2"]),
        (2 * SEC, Event::ReloadFailed { role: "r1".into(), error: "ESRCH".into() }, &[]),
    ]);
    assert_eq!(h.status("r1").last_error, "could not reload the process: ESRCH");
}

/// `reloadable(revision, "k1", digest)` whose files pass `nginx -t`-like check first.
fn checked(revision: u64, nonce: u64, digest: &str) -> RoleSpec {
    let mut s = reloadable(revision, "k1", digest);
    s.restart_nonce = nonce;
    s.process.config_check =
        Some(ConfigCheck { program: "check".into(), args: vec!["${CHECK_DIR}/a.conf".into()], timeout: 5 * SEC });
    s
}

fn check_passed(revision: u64, digest: &str) -> Event {
    let digests = BTreeMap::from([("a.conf".to_owned(), digest.to_owned())]);
    Event::CheckPassed { role: "r1".into(), revision, digests }
}

fn check_failed(revision: u64, digest: &str) -> Event {
    let digests = BTreeMap::from([("a.conf".to_owned(), digest.to_owned())]);
    let error = "check exited with status 1: bad config".to_owned();
    Event::CheckFailed { role: "r1".into(), revision, digests, error }
}

/// `r1` up with pid 100 since t = 0, from `checked(1, 0, "d1")`.
fn checked_up() -> H {
    let mut h = H::new(Policy::default());
    h.run(&[
        (Duration::ZERO, desired(vec![checked(1, 0, "d1")]), &["check r1@1"]),
        (Duration::ZERO, Event::Tick, &[]),
        (Duration::ZERO, check_passed(1, "d1"), &["write r1@1"]),
        (Duration::ZERO, written_digest(1, "d1"), &["start r1@1#0"]),
        (Duration::ZERO, started("r1", 100), &[]),
    ]);
    h
}

#[test]
fn new_files_are_written_only_after_their_config_check_passed() {
    let mut h = checked_up();
    // Checked, written, then reloaded as without a check.
    h.run(&[
        (2 * SEC, desired(vec![checked(2, 0, "d2")]), &["check r1@2"]),
        (2 * SEC, Event::Tick, &[]),
        (3 * SEC, check_passed(2, "d2"), &["write r1@2"]),
        (3 * SEC, written_digest(2, "d2"), &["reload r1 100 SIGHUP@2"]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.pid, s.applied_revision, s.running_revision, s.last_error.as_str()), (100, 2, 2, ""));
}

#[test]
fn a_failed_config_check_leaves_the_files_and_the_process_alone() {
    let mut h = checked_up();
    h.run(&[
        (2 * SEC, desired(vec![checked(2, 0, "d2")]), &["check r1@2"]),
        // Neither written nor reloaded.
        (3 * SEC, check_failed(2, "d2"), &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.applied_revision, s.running_revision), (RoleState::Running, 100, 1, 1));
    assert_eq!(s.reload_count, 0);
    assert_eq!(
        s.last_error,
        "config check of revision 2 failed; its files were not applied: check exited with status 1: bad config"
    );
    assert_eq!(s.file_hashes.get("a.conf").map(String::as_str), Some("h-d1"), "the old files");
    // Run again only after check_retry, or at once for other files.
    assert_eq!(h.r.deadline(), Some(h.t0 + 63 * SEC));
    h.run(&[(62 * SEC, Event::Tick, &[]), (63 * SEC, Event::Tick, &["check r1@2"])]);
    assert_eq!(h.r.deadline(), None, "while the check runs, its outcome is what comes next");
    h.run(&[
        (63 * SEC, check_failed(2, "d2"), &[]),
        // A restart waits for files that pass: the process is not stopped.
        (64 * SEC, desired(vec![checked(2, 1, "d2")]), &[]),
        (65 * SEC, Event::Tick, &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.restart_nonce), (RoleState::Running, 100, 0));
    assert!(s.last_error.starts_with("config check of revision 2 failed"), "{}", s.last_error);
    // A stop does not wait.
    let mut stopped = checked(2, 1, "d2");
    stopped.run_state = RunState::Stopped;
    h.run(&[
        (66 * SEC, desired(vec![stopped]), &["stop r1 100 SIGTERM"]),
        (66 * SEC, exited("r1", 0), &["kill r1 100"]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.applied_revision), (RoleState::Stopped, 1));
    assert!(s.last_error.starts_with("config check of revision 2 failed"), "{}", s.last_error);
    // Started again on files that fail their check: it does not start, and says why.
    h.run(&[(67 * SEC, desired(vec![checked(2, 1, "d2")]), &[]), (68 * SEC, Event::Tick, &[])]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid), (RoleState::Failed, 0));
    assert!(s.last_error.starts_with("config check of revision 2 failed"), "{}", s.last_error);
    // A later good revision applies normally.
    h.run(&[
        (70 * SEC, desired(vec![checked(3, 1, "d3")]), &["check r1@3"]),
        (70 * SEC, check_passed(3, "d3"), &["write r1@3"]),
        (70 * SEC, written_digest(3, "d3"), &["start r1@3#1"]),
        (70 * SEC, started("r1", 101), &[]),
    ]);
    let s = h.status("r1");
    assert_eq!((s.state, s.pid, s.applied_revision, s.running_revision), (RoleState::Running, 101, 3, 3));
    assert_eq!(s.last_error, "");
    assert_eq!(h.r.deadline(), None);
}

#[test]
fn a_restart_waits_for_the_check_and_then_uses_the_new_files() {
    let mut h = checked_up();
    h.run(&[
        // New files and a new nonce at once: the stop waits for the check.
        (2 * SEC, desired(vec![checked(2, 1, "d2")]), &["check r1@2"]),
        (3 * SEC, check_passed(2, "d2"), &["write r1@2"]),
        (3 * SEC, written_digest(2, "d2"), &["stop r1 100 SIGTERM"]),
        (4 * SEC, exited("r1", 0), &["kill r1 100", "start r1@2#1"]),
    ]);
    // A nonce alone restarts at once: the files on disk passed.
    h.run(&[
        (5 * SEC, started("r1", 101), &[]),
        (6 * SEC, desired(vec![checked(2, 2, "d2")]), &["stop r1 101 SIGTERM"]),
    ]);
}

#[test]
fn a_config_check_waits_for_the_parcels_and_reruns_when_they_change() {
    let mut h = H::new(Policy { host: "web1".into(), ..Policy::default() });
    let mut s = checked(1, 0, "d1");
    s.parcels = vec!["nginx".into()];
    h.run(&[(Duration::ZERO, desired(vec![s.clone()]), &[])]);
    let st = h.status("r1");
    assert_eq!((st.state, st.last_error.as_str()), (RoleState::Failed, "parcel nginx is not active on host web1"));
    let active = |names: &[&str]| Event::ParcelsChanged { active: names.iter().map(|n| (*n).to_owned()).collect() };
    h.run(&[
        (SEC, active(&["nginx"]), &["check r1@1"]),
        (SEC, check_failed(1, "d1"), &[]),
        // The parcel goes away: the check waits for it, with no timer to spin on.
        (SEC, active(&[]), &[]),
    ]);
    assert_eq!(h.r.deadline(), None);
    h.run(&[
        // Another version of the parcel: the check runs again at once.
        (2 * SEC, active(&["nginx", "jre"]), &["check r1@1"]),
        (2 * SEC, Event::Tick, &[]),
        (2 * SEC, check_passed(1, "d1"), &["write r1@1"]),
        (2 * SEC, written_digest(1, "d1"), &["start r1@1#0"]),
    ]);
    // A stopped role says why its files wait.
    let mut stopped = checked(2, 0, "d2");
    stopped.parcels = vec!["nginx".into()];
    stopped.run_state = RunState::Stopped;
    h.run(&[(3 * SEC, started("r1", 100), &[]), (3 * SEC, active(&[]), &[])]);
    h.run(&[(4 * SEC, desired(vec![stopped]), &["stop r1 100 SIGTERM"])]);
    let st = h.status("r1");
    assert_eq!(st.last_error, "parcel nginx is not active on host web1; the config check of revision 2 waits for it");
}

#[test]
fn files_only_agents_write_without_checking() {
    let mut h = H::new(Policy { run_processes: false, ..Policy::default() });
    h.run(&[(Duration::ZERO, desired(vec![checked(1, 0, "d1")]), &["write r1@1"])]);
}
