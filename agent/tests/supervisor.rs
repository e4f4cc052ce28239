//! The role supervisor with real processes (`/bin/sh`, `sleep`) in temporary
//! data directories: process groups, graceful stop then SIGKILL, crash restarts
//! and crash loops, restarts on a new nonce, file-only changes, removal,
//! re-adoption after a restart of the supervisor, `${ROLE_DIR}`, log rotation,
//! health checks, reloads and config checks (a shell script, and the real
//! `nginx -t` when nginx is at hand). No sleeps as synchronisation: every wait polls the
//! reported statuses with a deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use drover_agent::files::{self, LogRotation};
use drover_agent::reconcile::Policy;
use drover_agent::roles::{
    ConfigCheck, ConfigFile, HealthCheck, Probe, ProcessSpec, RoleHealth, RoleSpec, RoleState, RoleStatus, RunState,
};
use drover_agent::supervisor::{self, ROLES_STATE_FILE, Supervisor, SupervisorConfig};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> SupervisorConfig {
    SupervisorConfig {
        policy: Policy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            min_uptime: Duration::from_secs(2),
            ..Policy::default()
        },
        poll_interval: Duration::from_millis(100),
        ..SupervisorConfig::supervise(dir.to_path_buf())
    }
}

fn file(path: &str, content: &str) -> ConfigFile {
    ConfigFile { path: path.into(), content: content.into(), sha256: files::sha256_hex(content.as_bytes()), mode: 0 }
}

/// A running role executing `script` with `/bin/sh -c`.
fn shell(id: &str, revision: u64, script: &str) -> RoleSpec {
    RoleSpec {
        role_id: id.into(),
        config_revision: revision,
        files: vec![file("role.conf", &format!("revision {revision}\n"))],
        process: ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            stop_signal: "SIGTERM".into(),
            stop_grace: Duration::from_millis(500),
            ..ProcessSpec::default()
        },
        run_state: RunState::Running,
        ..RoleSpec::default()
    }
}

fn alive(pid: u32) -> bool {
    supervisor::proc_start_ticks(pid).is_some()
}

async fn wait_role(sup: &Supervisor, id: &str, what: &str, pred: impl Fn(&RoleStatus) -> bool) -> RoleStatus {
    let mut rx = sup.statuses();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = rx.borrow_and_update().iter().find(|s| s.role_id == id && pred(s)) {
            return s.clone();
        }
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        assert!(matches!(changed, Ok(Ok(()))), "timed out waiting for {id}: {what}; last statuses: {:#?}", rx.borrow());
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn running(sup: &Supervisor, id: &str) -> RoleStatus {
    wait_role(sup, id, "running", |s| s.state == RoleState::Running && s.pid != 0).await
}

fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

#[tokio::test]
async fn graceful_stop_escalates_to_sigkill_of_the_whole_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    // Every member of the group ignores SIGTERM (ignored signals survive exec).
    let script = "trap '' TERM; sleep 1000 & echo $! > child.pid; sleep 1000 & wait";
    sup.set_desired(1, vec![shell("r1", 1, script)]);
    let s = running(&sup, "r1").await;
    let dir = tmp.path().join("roles/r1");
    wait_until("the child wrote its pid", || {
        std::fs::read_to_string(dir.join("child.pid")).is_ok_and(|p| p.ends_with('\n'))
    })
    .await;
    let child: u32 = std::fs::read_to_string(dir.join("child.pid")).expect("pid").trim().parse().expect("number");
    assert!(alive(s.pid) && alive(child));
    let mut stopped = shell("r1", 1, script);
    stopped.run_state = RunState::Stopped;
    let asked = Instant::now();
    sup.set_desired(2, vec![stopped]);
    wait_role(&sup, "r1", "stopping", |s| s.state == RoleState::Stopping).await;
    let s = wait_role(&sup, "r1", "stopped", |s| s.state == RoleState::Stopped).await;
    assert!(asked.elapsed() >= Duration::from_millis(500), "SIGKILL only after the grace");
    assert_eq!(s.last_exit_status, -9, "killed by SIGKILL");
    assert_eq!((s.pid, s.restart_count), (0, 0));
    wait_until("every member of the group is gone", || !alive(child)).await;
}

#[tokio::test]
async fn crashes_restart_with_backoff_until_a_crash_loop_fails_the_role() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    let mut spec = shell("r1", 1, "echo starting $$; echo oops >&2; exit 3");
    sup.set_desired(1, vec![spec.clone()]);
    let s = wait_role(&sup, "r1", "failed", |s| s.state == RoleState::Failed).await;
    assert_eq!(s.restart_count, 4, "5 short runs: 4 restarts, then failed");
    assert_eq!(s.last_exit_status, 3);
    assert!(s.last_error.starts_with("crash loop: the process exited with status 3"), "{}", s.last_error);
    assert_eq!(s.last_log_lines.len(), 10, "5 runs x 2 lines: {:?}", s.last_log_lines);
    assert!(
        s.last_log_lines.iter().any(|l| l == "[stderr] oops"),
        "stderr is in the tail, marked: {:?}",
        s.last_log_lines
    );
    // The journal (diagnostics' process.json) has each exit with its time.
    let exits = sup.journal().snapshot()["r1"].exits.clone();
    assert_eq!(exits.len(), 5, "{exits:?}");
    assert!(exits.iter().all(|e| e.code == 3 && e.description == "exited with status 3"), "{exits:?}");
    assert!(exits.iter().all(|e| e.uptime_ms.is_some_and(|u| u < 2000)), "short runs: {exits:?}");
    assert!(exits.iter().zip(exits.iter().skip(1)).all(|(a, b)| a.at_unix_ms <= b.at_unix_ms), "{exits:?}");
    // Not restarted any more: the log stops growing.
    let log = tmp.path().join("roles/r1/logs/stdout.log");
    let before = std::fs::read_to_string(&log).expect("log");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(std::fs::read_to_string(&log).expect("log"), before, "a failed role stays down");
    // A new nonce is a new desired state: it runs again.
    spec.restart_nonce = 1;
    sup.set_desired(2, vec![spec]);
    wait_role(&sup, "r1", "restarted after the nonce", |s| s.state != RoleState::Failed).await;
}

#[tokio::test]
async fn a_new_nonce_restarts_but_a_files_only_change_does_not() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    sup.set_desired(1, vec![shell("r1", 1, "exec sleep 1000")]);
    let first = running(&sup, "r1").await;
    assert_eq!((first.applied_revision, first.running_revision), (1, 1));
    let conf = tmp.path().join("roles/r1/role.conf");
    assert_eq!(std::fs::read_to_string(&conf).expect("conf"), "revision 1\n");

    sup.set_desired(2, vec![shell("r1", 2, "exec sleep 1000")]);
    let s = wait_role(&sup, "r1", "revision 2 applied", |s| s.applied_revision == 2).await;
    assert_eq!((s.pid, s.running_revision), (first.pid, 1), "files-only change keeps the process");
    assert_eq!(std::fs::read_to_string(&conf).expect("conf"), "revision 2\n");
    assert_eq!(s.file_hashes["role.conf"], files::sha256_hex(b"revision 2\n"));

    let mut restart = shell("r1", 2, "exec sleep 1000");
    restart.restart_nonce = 1;
    sup.set_desired(3, vec![restart]);
    let s = wait_role(&sup, "r1", "restarted", |s| s.state == RoleState::Running && s.restart_nonce == 1).await;
    assert_ne!(s.pid, first.pid);
    assert_eq!((s.running_revision, s.restart_count), (2, 0));
    wait_until("the old process is gone", || !alive(first.pid)).await;
    kill_group(s.pid);
}

#[tokio::test]
async fn removed_roles_are_stopped_and_their_directory_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    sup.set_desired(1, vec![shell("r1", 1, "exec sleep 1000"), shell("r2", 1, "exec sleep 1000")]);
    let s = running(&sup, "r1").await;
    let keep = running(&sup, "r2").await;
    sup.set_desired(2, vec![shell("r2", 1, "exec sleep 1000")]);
    let mut rx = sup.statuses();
    let deadline = Instant::now() + WAIT;
    while rx.borrow_and_update().iter().any(|s| s.role_id == "r1") {
        assert!(matches!(tokio::time::timeout_at(deadline, rx.changed()).await, Ok(Ok(()))), "r1 never went away");
    }
    assert!(!tmp.path().join("roles/r1").exists());
    assert!(tmp.path().join("roles/r2/role.conf").exists());
    wait_until("r1's process is gone", || !alive(s.pid)).await;
    assert!(alive(keep.pid));
    kill_group(keep.pid);
}

#[tokio::test]
async fn a_restarted_supervisor_re_adopts_running_processes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    sup.set_desired(7, vec![shell("r1", 1, "exec sleep 1000")]);
    let before = running(&sup, "r1").await;
    drop(sup);

    // No desired state is handed over: the new supervisor enforces the persisted one.
    let sup = Supervisor::start(config(tmp.path())).expect("restart");
    let after = running(&sup, "r1").await;
    assert_eq!(after.pid, before.pid, "adopted, not restarted");
    assert_eq!(after.started_at_unix_ms, before.started_at_unix_ms);
    assert_eq!((after.running_revision, after.restart_count), (1, 0));
    // An adopted process cannot be waited for; its disappearance is noticed.
    kill_group(before.pid);
    let s = wait_role(&sup, "r1", "restarted after the adopted process died", |s| {
        s.state == RoleState::Running && s.pid != before.pid
    })
    .await;
    assert_eq!(s.restart_count, 1);
    assert!(s.last_error.contains("status unknown"), "{}", s.last_error);
    kill_group(s.pid);
}

#[tokio::test]
async fn a_recycled_pid_is_not_adopted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    sup.set_desired(1, vec![shell("r1", 1, "exec sleep 1000")]);
    let before = running(&sup, "r1").await;
    drop(sup);
    // Same pid, another start time: as if the pid had been reused.
    let path = tmp.path().join(ROLES_STATE_FILE);
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let ticks = &mut state["r1"]["process"]["start_ticks"];
    *ticks = serde_json::Value::from(ticks.as_u64().expect("ticks") + 1);
    std::fs::write(&path, serde_json::to_vec(&state).expect("json")).expect("write");

    let sup = Supervisor::start(config(tmp.path())).expect("restart");
    let after = running(&sup, "r1").await;
    assert_ne!(after.pid, before.pid, "a process with another start time is not the role");
    assert!(alive(before.pid), "and it is left alone");
    kill_group(before.pid);
    kill_group(after.pid);
}

#[tokio::test]
async fn role_dir_is_substituted_in_files_args_env_and_working_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    let mut spec = shell("r1", 1, "echo \"$X\" > ${ROLE_DIR}/env.txt; pwd > ${ROLE_DIR}/pwd.txt; exec sleep 1000");
    spec.files.push(file("work/app.conf", "data_dir = ${ROLE_DIR}/data\n"));
    spec.process.env = BTreeMap::from([("X".to_owned(), "${ROLE_DIR}/x".to_owned())]);
    spec.process.working_dir = "work".into();
    sup.set_desired(1, vec![spec]);
    let s = running(&sup, "r1").await;
    let dir = std::fs::canonicalize(tmp.path()).expect("canonical").join("roles/r1");
    let dir = if dir.exists() { dir } else { tmp.path().join("roles/r1") };
    let raw = tmp.path().join("roles/r1");
    let read = |name: &str| std::fs::read_to_string(raw.join(name)).unwrap_or_default();
    wait_until("the process wrote pwd.txt", || read("pwd.txt").ends_with('\n')).await;
    assert_eq!(read("work/app.conf"), format!("data_dir = {}/data\n", raw.display()));
    assert_eq!(read("env.txt"), format!("{}/x\n", raw.display()));
    assert_eq!(read("pwd.txt").trim(), dir.join("work").display().to_string());
    assert_eq!(s.file_hashes["work/app.conf"], files::sha256_hex(read("work/app.conf").as_bytes()));
    kill_group(s.pid);
}

#[tokio::test]
async fn logs_are_rotated_by_size_while_the_process_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.log_rotation = LogRotation { max_bytes: 2_000, keep: 2 };
    let sup = Supervisor::start(cfg).expect("start");
    let script = "i=0; while true; do echo \"line $i of a log that grows quickly\"; i=$((i+1)); sleep 0.002; done";
    sup.set_desired(1, vec![shell("r1", 1, script)]);
    let s = running(&sup, "r1").await;
    let logs = tmp.path().join("roles/r1/logs");
    wait_until("two rotations happened", || logs.join("stdout.log.2").exists()).await;
    let rotated = std::fs::read_to_string(logs.join("stdout.log.1")).expect("rotated");
    assert!(rotated.len() >= 2_000 && rotated.starts_with("line "), "{} bytes", rotated.len());
    assert!(!logs.join("stdout.log.3").exists(), "only 2 rotated copies kept");
    kill_group(s.pid);
}

fn checked(id: &str, probes: Vec<Probe>) -> RoleSpec {
    let mut spec = shell(id, 1, "exec sleep 1000");
    spec.health_checks = probes
        .into_iter()
        .map(|probe| HealthCheck {
            probe,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            failure_threshold: 2,
        })
        .collect();
    spec
}

/// A tiny HTTP server answering every request with `status`.
async fn http_server(status: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(format!("HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn health_checks_of_every_kind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    let ok_port = http_server(200).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let command = |script: &str| Probe::Command { program: "/bin/sh".into(), args: vec!["-c".into(), script.into()] };
    let http = |expect_status| Probe::Http { url: format!("http://127.0.0.1:{ok_port}/health"), expect_status };
    sup.set_desired(
        1,
        vec![
            checked(
                "good",
                vec![
                    Probe::Tcp { host: "127.0.0.1".into(), port: ok_port },
                    http(0),
                    command("test -f ${ROLE_DIR}/role.conf"),
                ],
            ),
            checked("tcp-bad", vec![Probe::Tcp { host: String::new(), port: closed }]),
            checked("http-bad", vec![http(204)]),
            checked("command-bad", vec![command("exit 1")]),
            checked("command-slow", vec![command("sleep 5")]),
        ],
    );
    wait_role(&sup, "good", "healthy", |s| s.health == RoleHealth::Good).await;
    for id in ["tcp-bad", "http-bad", "command-bad", "command-slow"] {
        wait_role(&sup, id, "unhealthy", |s| s.health == RoleHealth::Bad).await;
    }
    // The journal keeps each check's latest result, with why it failed.
    let journal = sup.journal().snapshot();
    let good = &journal["good"].checks;
    assert_eq!(good.len(), 3);
    assert!(good.iter().all(|c| c.as_ref().is_some_and(|c| c.ok && c.error.is_empty())), "{good:?}");
    let bad = journal["tcp-bad"].checks[0].clone().expect("a result");
    assert!(!bad.ok && bad.consecutive_failures >= 2 && !bad.error.is_empty(), "{bad:?}");
    let slow = journal["command-slow"].checks[0].clone().expect("a result");
    assert!(!slow.ok && !slow.error.is_empty(), "{slow:?}");
    for s in sup.statuses().borrow().iter() {
        kill_group(s.pid);
    }
}

/// A real service from a RoleSpec: redis-server answers PING on its port.
#[tokio::test]
async fn a_redis_server_role_answers_ping() {
    let installed =
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].into_iter().find(|p| Path::new(p).exists());
    let Some(program) = installed else {
        if std::env::var("DROVER_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("redis-server is not installed but DROVER_REQUIRE_SERVICES=1; apt-get install -y redis-server");
        }
        println!("skipped: redis-server not installed");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let conf = format!(
        "port {port}\nbind 127.0.0.1\ndir ${{ROLE_DIR}}/data\ndaemonize no\nsave \"\"\nappendonly no\nlogfile \"\"\n"
    );
    let spec = RoleSpec {
        role_id: "redis-1".into(),
        service: "c1/redis".into(),
        role_type: "primary".into(),
        name: "redis-primary-1".into(),
        config_revision: 1,
        files: vec![file("redis.conf", &conf), file("data/.keep", "")],
        process: ProcessSpec {
            program: program.into(),
            args: vec!["${ROLE_DIR}/redis.conf".into()],
            stop_signal: "SIGTERM".into(),
            stop_grace: Duration::from_secs(5),
            ..ProcessSpec::default()
        },
        run_state: RunState::Running,
        health_checks: vec![HealthCheck {
            probe: Probe::Tcp { host: "127.0.0.1".into(), port },
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
        }],
        ..RoleSpec::default()
    };
    sup.set_desired(1, vec![spec.clone()]);
    let s = wait_role(&sup, "redis-1", "running and healthy", |s| {
        s.state == RoleState::Running && s.health == RoleHealth::Good
    })
    .await;
    let answer = ping(port).await;
    assert_eq!(answer, "+PONG\r\n");
    // Stopping it gracefully: redis exits on SIGTERM well within the grace.
    let mut stopped = spec;
    stopped.run_state = RunState::Stopped;
    sup.set_desired(2, vec![stopped]);
    let done = wait_role(&sup, "redis-1", "stopped", |s| s.state == RoleState::Stopped).await;
    assert_eq!(done.last_exit_status, 0, "clean exit on SIGTERM, no SIGKILL");
    wait_until("redis is gone", || !alive(s.pid)).await;
}

async fn ping(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to redis");
    conn.write_all(b"PING\r\n").await.expect("send PING");
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).await.expect("read PONG");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A role whose process (a shell) appends its config file to `seen.log` on
/// SIGHUP, declared as its reload signal, with restart digest `restart`.
fn reloading(revision: u64, restart: &str) -> RoleSpec {
    let script = "trap 'cat role.conf >> seen.log' HUP; while :; do sleep 0.1 & wait $!; done";
    let mut spec = shell("r1", revision, script);
    spec.process.reload_signal = "SIGHUP".into();
    spec.restart_digest = restart.into();
    spec
}

#[tokio::test]
async fn new_files_reach_the_running_process_by_its_reload_signal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seen = tmp.path().join("roles/r1/seen.log");
    let read_seen = || std::fs::read_to_string(&seen).unwrap_or_default();
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    sup.set_desired(1, vec![reloading(1, "k1")]);
    let first = running(&sup, "r1").await;

    // Revision 2 changes no restart parameter: same process, new files read.
    sup.set_desired(2, vec![reloading(2, "k1")]);
    let s = wait_role(&sup, "r1", "reloaded into revision 2", |s| s.running_revision == 2).await;
    assert_eq!((s.pid, s.applied_revision, s.reload_count), (first.pid, 2, 1));
    assert!(s.reloaded_at_unix_ms >= first.started_at_unix_ms);
    wait_until("the process read revision 2", || read_seen() == "revision 2\n").await;

    // A restarted agent knows what the adopted process read, and reloads it too.
    drop(sup);
    let sup = Supervisor::start(config(tmp.path())).expect("restart");
    running(&sup, "r1").await;
    sup.set_desired(3, vec![reloading(3, "k1")]);
    let s = wait_role(&sup, "r1", "reloaded into revision 3", |s| s.running_revision == 3).await;
    assert_eq!(s.pid, first.pid, "adopted and reloaded, never restarted");
    wait_until("the process read revision 3", || read_seen() == "revision 2\nrevision 3\n").await;

    // Revision 4 changes a restart parameter: written, not reloaded (stale).
    sup.set_desired(4, vec![reloading(4, "k2")]);
    let s = wait_role(&sup, "r1", "revision 4 on disk", |s| s.applied_revision == 4).await;
    assert_eq!((s.pid, s.running_revision), (first.pid, 3));
    // A restart applies it.
    let mut restarted = reloading(4, "k2");
    restarted.restart_nonce = 1;
    sup.set_desired(5, vec![restarted]);
    let s = wait_role(&sup, "r1", "restarted", |s| s.running_revision == 4 && s.pid != first.pid && s.pid != 0).await;
    assert_eq!(s.reload_count, 0, "a new process starts its count over");
    assert_eq!(read_seen(), "revision 2\nrevision 3\n", "revision 4 was never sent by reload");
    kill_group(s.pid);
}

/// [`reloading`] with `content` as `role.conf` and a config check (a shell)
/// that passes only for content starting with `ok`, run in the staging
/// directory `$CHECK_DIR` with the new file.
fn config_checked(revision: u64, content: &str) -> RoleSpec {
    let mut spec = reloading(revision, "k1");
    spec.files = vec![file("role.conf", content)];
    let script = r#"test "$PWD" = "$CHECK_DIR" && test "$1" = "$CHECK_DIR/role.conf" || exit 9
grep -q '^ok' "$1" || { echo "  bad config: $(head -n 1 "$1")" >&2; echo; exit 3; }"#;
    spec.process.config_check = Some(ConfigCheck {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into(), "check".into(), "${CHECK_DIR}/role.conf".into()],
        timeout: Duration::from_secs(10),
    });
    spec
}

#[tokio::test]
async fn a_failed_config_check_keeps_the_old_files_and_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("roles/r1");
    let seen = dir.join("seen.log");
    let read_seen = || std::fs::read_to_string(&seen).unwrap_or_default();
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    sup.set_desired(1, vec![config_checked(1, "ok 1 in ${ROLE_DIR}\n")]);
    let first = running(&sup, "r1").await;
    let live = format!("ok 1 in {}\n", dir.display());
    assert_eq!(std::fs::read_to_string(dir.join("role.conf")).expect("live file"), live);

    // Revision 2 fails its check: nothing written, no reload, the output reported.
    sup.set_desired(2, vec![config_checked(2, "bad 2\n")]);
    let s = wait_role(&sup, "r1", "check of revision 2 failed", |s| !s.last_error.is_empty()).await;
    assert_eq!(
        s.last_error,
        "config check of revision 2 failed; its files were not applied: /bin/sh exited with status 3: bad config: bad 2"
    );
    assert_eq!((s.state, s.pid, s.applied_revision, s.running_revision), (RoleState::Running, first.pid, 1, 1));
    assert_eq!(s.reload_count, 0);
    assert_eq!(std::fs::read_to_string(dir.join("role.conf")).expect("live file"), live, "the old file");
    assert_eq!(read_seen(), "", "never reloaded");
    let staging = tmp.path().join(files::STAGING_DIR);
    wait_until("the staging directory is cleaned up", || {
        std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0) == 0
    })
    .await;

    // Revision 3 passes: written and reloaded as usual.
    sup.set_desired(3, vec![config_checked(3, "ok 3\n")]);
    let s = wait_role(&sup, "r1", "reloaded into revision 3", |s| s.running_revision == 3).await;
    assert_eq!((s.pid, s.applied_revision, s.reload_count, s.last_error.as_str()), (first.pid, 3, 1, ""));
    wait_until("the process read revision 3", || read_seen() == "ok 3\n").await;
    kill_group(s.pid);
}

#[tokio::test]
async fn a_config_check_that_hangs_is_killed_and_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    let mut spec = config_checked(1, "ok 1\n");
    spec.process.config_check = Some(ConfigCheck {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 1000 & echo $! > \"$ROLE_DIR/sleeper.pid\"; wait".into()],
        timeout: Duration::from_millis(300),
    });
    sup.set_desired(1, vec![spec]);
    let s = wait_role(&sup, "r1", "check timed out", |s| !s.last_error.is_empty()).await;
    assert_eq!(
        s.last_error,
        "config check of revision 1 failed; its files were not applied: /bin/sh did not finish within 300ms"
    );
    assert_eq!((s.state, s.pid, s.applied_revision), (RoleState::Failed, 0, 0), "no files, no process");
    let pid_file = tmp.path().join("roles/r1/sleeper.pid");
    let sleeper: u32 = std::fs::read_to_string(&pid_file).expect("pid").trim().parse().expect("number");
    wait_until("the check's whole process group is gone", || !alive(sleeper)).await;
}

/// The real `nginx -t` as the config check of a real nginx role: a
/// configuration nginx refuses never reaches it; the next good one does, by
/// reload. nginx is `$DROVER_TEST_NGINX` or `/usr/sbin/nginx`.
#[tokio::test]
async fn nginx_checks_its_configuration_before_it_is_reloaded() {
    let installed = std::env::var("DROVER_TEST_NGINX")
        .ok()
        .into_iter()
        .chain(["/usr/sbin/nginx".to_owned()])
        .find(|p| Path::new(p).exists());
    let Some(program) = installed else {
        if std::env::var("DROVER_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("nginx is not installed but DROVER_REQUIRE_SERVICES=1; apt-get install -y nginx");
        }
        println!("skipped: nginx not installed (or set DROVER_TEST_NGINX)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let sup = Supervisor::start(config(tmp.path())).expect("start");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let conf = |revision: u64, extra: &str| {
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid ${{ROLE_DIR}}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path ${{ROLE_DIR}}/client_body_temp;\n\
             proxy_temp_path ${{ROLE_DIR}}/proxy_temp;\n  fastcgi_temp_path ${{ROLE_DIR}}/fastcgi_temp;\n\
             uwsgi_temp_path ${{ROLE_DIR}}/uwsgi_temp;\n  scgi_temp_path ${{ROLE_DIR}}/scgi_temp;\n\
             server {{ listen 127.0.0.1:{port}; {extra} location / {{ return 200 \"revision {revision}\\n\"; }} }}\n}}\n"
        )
    };
    let spec = |revision: u64, extra: &str| RoleSpec {
        role_id: "web-1".into(),
        config_revision: revision,
        files: vec![file("nginx.conf", &conf(revision, extra))],
        process: ProcessSpec {
            program: program.clone(),
            args: ["-p", "${ROLE_DIR}/", "-c", "${ROLE_DIR}/nginx.conf", "-e", "stderr"].map(String::from).to_vec(),
            stop_signal: "SIGQUIT".into(),
            stop_grace: Duration::from_secs(5),
            reload_signal: "SIGHUP".into(),
            config_check: Some(ConfigCheck {
                program: program.clone(),
                args: ["-t", "-q", "-p", "${ROLE_DIR}/", "-c", "${CHECK_DIR}/nginx.conf", "-e", "stderr"]
                    .map(String::from)
                    .to_vec(),
                timeout: Duration::from_secs(10),
            }),
            ..ProcessSpec::default()
        },
        run_state: RunState::Running,
        restart_digest: "k1".into(),
        ..RoleSpec::default()
    };
    let get = || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return String::new() };
        let _ = conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out).await;
        out.lines().last().unwrap_or_default().to_owned()
    };
    let answers = |want: &'static str| async move {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = get().await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "nginx answers {got:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    sup.set_desired(1, vec![spec(1, "")]);
    let first = running(&sup, "web-1").await;
    answers("revision 1").await;

    // A directive nginx does not know: refused by `nginx -t`, never reloaded.
    sup.set_desired(2, vec![spec(2, "bogus_directive on;")]);
    let s = wait_role(&sup, "web-1", "check of revision 2 failed", |s| !s.last_error.is_empty()).await;
    assert!(s.last_error.starts_with("config check of revision 2 failed"), "{}", s.last_error);
    assert!(s.last_error.contains("unknown directive \"bogus_directive\""), "{}", s.last_error);
    assert_eq!((s.pid, s.applied_revision, s.running_revision, s.reload_count), (first.pid, 1, 1, 0));
    answers("revision 1").await;

    // A good revision reaches nginx by reload.
    sup.set_desired(3, vec![spec(3, "")]);
    let s = wait_role(&sup, "web-1", "reloaded into revision 3", |s| s.running_revision == 3).await;
    assert_eq!((s.pid, s.applied_revision, s.reload_count, s.last_error.as_str()), (first.pid, 3, 1, ""));
    answers("revision 3").await;

    let mut stopped = spec(3, "");
    stopped.run_state = RunState::Stopped;
    sup.set_desired(4, vec![stopped]);
    wait_role(&sup, "web-1", "stopped", |s| s.state == RoleState::Stopped).await;
}
