//! SSH bootstrap on real OpenSSH servers: `drover/sshd` containers (no agent,
//! no systemd) stand in for VMs and bare-metal machines. A real manager on
//! this machine installs the agent over SSH with a key and with a password,
//! with sudo, under each host key policy, and the agent enrolls and stays up
//! under its supervisor. Failures name the host and the step and leave
//! nothing behind; credentials never reach the database or the logs.

use std::time::Duration;

use drover_tests::docker::{DockerEnv, FixedNetwork, docker};
use drover_tests::eventually;
use drover_tests::procs::{ManagerProc, free_port};
use drover_tests::ssh::{
    KeyPair, SshdOptions, bootstrap, enrolled_host_id, ensure_sshd_image, host_fingerprint, start_bootstrap,
    start_sshd, wait_for_sshd,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    env: DockerEnv,
    net: FixedNetwork,
    manager: ManagerProc,
    key: KeyPair,
    dir: tempfile::TempDir,
}

async fn setup(test: &str) -> Setup {
    ensure_sshd_image();
    let mut env = DockerEnv::new(test);
    let net = env.fixed_network("net").expect("network");
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = net.gateway().to_string();
    // The agent binary bootstrap uploads defaults to the drover-agent next to
    // drover-manager (target/debug): the one under test.
    let mut manager = ManagerProc::start_on(
        &dir.path().join("manager"),
        free_port(),
        &gateway,
        free_port(),
        &["--advertise", &gateway, "--heartbeat-interval", "1s", "--host-lost-after", "5s"],
    )
    .expect("start manager");
    manager.wait_ready().await;
    let key = KeyPair::generate(dir.path());
    Setup { env, net, manager, key, dir }
}

impl Setup {
    /// Starts an sshd container at `.last` on the test network.
    async fn sshd(&mut self, what: &str, last: u8, mut o: SshdOptions<'_>) -> (String, String) {
        let ip = self.net.ip(last).to_string();
        o.docker_args.extend([
            "--network".to_owned(),
            self.net.name.clone(),
            "--ip".to_owned(),
            ip.clone(),
            "--hostname".to_owned(),
            self.env.name(what),
        ]);
        let c = start_sshd(&mut self.env, what, &o);
        wait_for_sshd(&ip).await;
        (c, ip)
    }

    async fn host(&self, id: &str) -> Value {
        self.manager.rest().get(&format!("/api/v1/hosts/{id}")).await.expect("GET host")
    }

    /// Whatever the manager keeps or logs: its database and its log.
    fn everything_stored(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for f in ["manager/drover.db", "manager/drover.db-wal", "manager/manager.log"] {
            all.extend(std::fs::read(self.dir.path().join(f)).unwrap_or_default());
        }
        all
    }
}

fn exec(container: &str, script: &str) -> String {
    docker(["exec", container, "sh", "-c", script]).unwrap_or_else(|e| format!("(exec failed: {e})"))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn steps(cmd: &Value) -> Vec<Value> {
    cmd["steps"].as_array().cloned().unwrap_or_default()
}

fn step_for<'a>(steps: &'a [Value], ip: &str) -> &'a Value {
    steps.iter().find(|s| s["description"].as_str().is_some_and(|d| d.contains(&format!("@{ip}:")))).expect("step")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login_with_sudo_accept_new_then_known_hosts_and_the_supervisor_keeps_the_agent_up() {
    let mut s = setup("sshkey").await;
    let public = s.key.public.clone();
    let opts = || SshdOptions { user: Some("ops"), authorized_key: Some(&public), sudo: true, ..Default::default() };
    let (a, ip_a) = s.sshd("a", 11, opts()).await;
    let (b, ip_b) = s.sshd("b", 12, opts()).await;
    let fp_a = host_fingerprint(&s.env, &a).await;
    let rest = s.manager.rest();

    // An unknown host under the default policy is refused before login.
    let cmd =
        bootstrap(&rest, json!({"addresses": [ip_a], "user": "ops", "auth": {"private_key": s.key.private_pem()}}))
            .await;
    assert_eq!(cmd["state"], "failed", "{cmd:#}");
    let msg = steps(&cmd)[0]["message"].as_str().unwrap().to_owned();
    assert!(msg.starts_with(&format!("{ip_a}:22: check host key failed:")), "{msg}");
    assert!(msg.contains(&fp_a) && msg.contains("accept-new"), "{msg}");
    assert_eq!(exec(&a, "test -e /usr/local/bin/drover-agent && echo installed || echo absent"), "absent");

    // accept-new: both hosts in parallel, with labels; sudo because the user is not root.
    let cmd = bootstrap(
        &rest,
        json!({
            "addresses": [ip_a, ip_b],
            "user": "ops",
            "auth": {"private_key": s.key.private_pem()},
            "host_key_policy": "accept-new",
            "labels": {"site": "lab", "via": "ssh"},
        }),
    )
    .await;
    assert_eq!(cmd["state"], "succeeded", "{cmd:#}");
    assert_eq!(cmd["params"]["auth_method"], "private_key");
    assert_eq!(cmd["params"]["sudo"], true);
    let all = steps(&cmd);
    let id_a = enrolled_host_id(step_for(&all, &ip_a)).expect("host id of a");
    let id_b = enrolled_host_id(step_for(&all, &ip_b)).expect("host id of b");
    let msg_a = step_for(&all, &ip_a)["message"].as_str().unwrap().to_owned();
    assert!(msg_a.contains("agent under supervisor process"), "{msg_a}");
    assert!(msg_a.contains(&format!("host key {fp_a} (accepted new)")), "{msg_a}");
    assert!(msg_a.contains("Debian GNU/Linux 12") && msg_a.contains("x86_64"), "{msg_a}");
    for (id, c) in [(&id_a, &a), (&id_b, &b)] {
        let h = s.host(id).await;
        assert_eq!(h["status"], "healthy", "{h:#}");
        assert_eq!(h["hostname"], c.as_str(), "{h:#}");
        assert_eq!(h["kind"], "container", "{h:#}");
        assert_eq!(h["labels"]["site"], "lab", "{h:#}");
        assert_eq!(h["labels"]["via"], "ssh", "{h:#}");
    }
    // The accepted key is in the audit log with its fingerprint.
    let audit: Value = rest.get("/api/v1/audit?limit=200").await.expect("audit");
    let entries = audit["items"].as_array().cloned().unwrap_or_default();
    let accepted: Vec<&Value> = entries.iter().filter(|e| e["action"] == "hosts.bootstrap.host_key").collect();
    assert_eq!(accepted.len(), 2, "{audit:#}");
    assert!(
        accepted.iter().any(|e| e["summary"].as_str().is_some_and(|t| t.contains(&fp_a) && t.contains(&ip_a))),
        "{audit:#}"
    );
    assert!(entries.iter().any(|e| e["action"] == "hosts.bootstrap"), "{audit:#}");

    // On the host: the one-time token is gone from the environment file, which
    // only root can read; the agent runs under the supervisor.
    assert_eq!(exec(&a, "grep -c DROVER_TOKEN /etc/drover-agent/agent.env || true"), "0");
    assert_eq!(exec(&a, "stat -c %a /etc/drover-agent/agent.env"), "600");
    let procs = exec(&a, "ps -eo comm=");
    assert!(procs.contains("supervise") && procs.contains("drover-agent"), "{procs}");
    assert_eq!(exec(&a, "ls /tmp | grep -c drover-bootstrap || true"), "0", "staging directory left behind");

    // The supervisor restarts a killed agent; it comes back as the same host.
    let before = exec(&a, "pgrep -x drover-agent");
    exec(&a, "pkill -KILL -x drover-agent");
    eventually(WAIT, "the supervisor to restart the agent", || {
        let now = exec(&a, "pgrep -x drover-agent || true");
        let before = before.clone();
        async move { (!now.is_empty() && now != before).then_some(()) }
    })
    .await;
    let log = exec(&a, "cat /var/log/drover-agent.log");
    assert!(log.contains("drover-agent exited with status"), "{log}");
    eventually(WAIT, "host a healthy after the agent restart", || {
        let rest = rest.clone();
        let id = id_a.clone();
        async move {
            let h: Value = rest.get(&format!("/api/v1/hosts/{id}")).await.ok()?;
            (h["status"] == "healthy" && h["last_heartbeat_at"].is_string()).then_some(())
        }
    })
    .await;

    // Again, now under known-hosts (the key was recorded): the host keeps its identity.
    let cmd = bootstrap(
        &rest,
        json!({"addresses": [format!("{ip_a}:22")], "user": "ops", "auth": {"private_key": s.key.private_pem()}}),
    )
    .await;
    assert_eq!(cmd["state"], "succeeded", "{cmd:#}");
    let again = &steps(&cmd)[0];
    assert_eq!(enrolled_host_id(again).as_deref(), Some(id_a.as_str()), "{again:#}");
    assert!(again["message"].as_str().unwrap().contains("(known_hosts)"), "{again:#}");
    assert_eq!(rest.hosts("").await.expect("hosts").len(), 2);

    // The private key never reached the database or the log.
    let pem = s.key.private_pem();
    let body_line = pem.lines().nth(1).expect("key body").to_owned();
    assert!(!contains(&s.everything_stored(), &body_line), "the private key was stored or logged");
    let errors = s.manager.proc.unexpected_errors(&[]);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_with_a_pinned_key_and_failures_that_name_host_and_step() {
    let mut s = setup("sshpw").await;
    const PASSWORD: &str = "correct-Horse-battery-9";
    let (c, ip_c) = s
        .sshd("c", 21, SshdOptions { user: Some("deploy"), password: Some(PASSWORD), sudo: true, ..Default::default() })
        .await;
    let (d, ip_d) =
        s.sshd("d", 22, SshdOptions { user: Some("deploy"), password: Some(PASSWORD), ..Default::default() }).await;
    let (_e, ip_e) = s.sshd("e", 23, SshdOptions { password: Some(PASSWORD), ..Default::default() }).await;
    let fp_c = host_fingerprint(&s.env, &c).await;
    let fp_d = host_fingerprint(&s.env, &d).await;
    let rest = s.manager.rest();

    // Requests that cannot work are refused before any host is touched.
    for (body, needle) in [
        (json!({"addresses": [], "auth": {"password": "x"}}), "at least one host"),
        (json!({"addresses": [ip_c], "auth": {}}), "private_key or password"),
        (json!({"addresses": [ip_c], "auth": {"password": "x", "private_key": "y"}}), "not both"),
        (json!({"addresses": ["-oProxyCommand=sh"], "auth": {"password": "x"}}), "invalid address"),
        (json!({"addresses": [ip_c, format!("{ip_c}:22")], "auth": {"password": "x"}}), "the same host"),
        (json!({"addresses": [ip_c], "auth": {"private_key": "not a key"}}), "cannot read the private key"),
        (
            json!({"addresses": [ip_c], "auth": {"password": "x"}, "manager_url": "https://elsewhere:7182"}),
            "does not name",
        ),
        (
            json!({"addresses": [ip_c], "auth": {"password": "x"}, "host_key_fingerprints": {"10.9.9.9": fp_c}}),
            "not in addresses",
        ),
        (json!({"addresses": [ip_c], "auth": {"password": "x"}, "labels": {"bad key!": "v"}}), "invalid label"),
        (json!({"addresses": [ip_c], "auth": {"password": "x"}, "parallelism": 0}), "parallelism"),
        (json!({"addresses": [ip_c], "auth": {"password": "x"}, "passwd": "typo"}), "unknown field"),
    ] {
        let (status, err) = start_bootstrap(&rest, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        let text = err["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(needle), "{body}: expected {needle:?} in {text:?}");
    }

    // One command, five hosts, each failing at a different step but one; they
    // run in parallel and every failure names its host and step.
    let unreachable = s.net.ip(250).to_string();
    let cmd = bootstrap(
        &rest,
        json!({
            "addresses": [ip_c, ip_d, ip_e, unreachable, format!("{ip_c}:2222")],
            "user": "deploy",
            "auth": {"password": PASSWORD},
            "sudo": true,
            "host_key_policy": "accept-new",
            "host_key_fingerprints": {ip_c.clone(): fp_c, ip_d.clone(): fp_c},
            "labels": {"via": "password"},
            "timeout_seconds": 60,
        }),
    )
    .await;
    assert_eq!(cmd["state"], "failed", "{cmd:#}");
    let all = steps(&cmd);
    let by = |ip: &str| step_for(&all, ip).clone();
    let ok = by(&ip_c);
    assert_eq!(ok["state"], "succeeded", "{ok:#}");
    assert!(ok["message"].as_str().unwrap().contains(&format!("host key {fp_c} (pinned)")), "{ok:#}");
    let expect_failure = |step: &Value, prefix: &str, needle: &str| {
        let m = step["message"].as_str().unwrap_or_default();
        assert_eq!(step["state"], "failed", "{step:#}");
        assert!(m.starts_with(prefix) && m.contains(needle), "expected {prefix:?} ... {needle:?} in {m:?}");
    };
    expect_failure(&by(&ip_d), &format!("{ip_d}:22: check host key failed"), &format!("{fp_d} does not match"));
    expect_failure(&by(&ip_e), &format!("{ip_e}:22: authenticate failed"), "refused password login for user deploy");
    expect_failure(&by(&unreachable), &format!("{unreachable}:22: connect failed"), "");
    let wrong_port = all.iter().find(|st| st["description"].as_str().unwrap().ends_with(":2222")).unwrap();
    expect_failure(wrong_port, &format!("{ip_c}:2222: connect failed"), "refused");
    let summary = cmd["message"].as_str().unwrap();
    assert!(summary.starts_with("4 of 5 host(s) failed"), "{summary}");

    // Nothing was installed where the host key did not match.
    assert_eq!(exec(&d, "test -e /usr/local/bin/drover-agent && echo installed || echo absent"), "absent");
    // The bootstrapped host is healthy, labelled, and sudo worked for a non-root user.
    let id = enrolled_host_id(&ok).expect("host id");
    let h = s.host(&id).await;
    assert_eq!((h["status"].as_str(), h["labels"]["via"].as_str()), (Some("healthy"), Some("password")), "{h:#}");
    assert_eq!(exec(&c, "stat -c %U /usr/local/bin/drover-agent"), "root");

    // Neither the password nor anything derived from it was stored or logged.
    assert!(!contains(&s.everything_stored(), PASSWORD), "the password was stored or logged");
    let cmd_params = cmd["params"].to_string();
    assert!(!cmd_params.contains(PASSWORD) && cmd_params.contains("\"auth_method\":\"password\""), "{cmd_params}");
}

/// Where systemd runs, bootstrap installs and enables a unit: the agent runs
/// under systemd, restarts with `systemctl restart` as the same host, and the
/// unit leaves role processes alone when the agent stops (`KillMode=process`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemd_host_gets_an_enabled_unit() {
    drover_tests::ssh::ensure_sshd_systemd_image();
    let mut s = setup("sshsystemd").await;
    let public = s.key.public.clone();
    let (c, ip) =
        s.sshd("sd", 31, SshdOptions { authorized_key: Some(&public), systemd: true, ..Default::default() }).await;
    let state = exec(&c, "systemctl is-system-running --wait 2>/dev/null || true");
    assert!(state == "running" || state == "degraded", "systemd in the container is {state:?}");
    let fp = host_fingerprint(&s.env, &c).await;
    let rest = s.manager.rest();

    let cmd = bootstrap(
        &rest,
        json!({"addresses": [ip], "auth": {"private_key": s.key.private_pem()}, "host_key_fingerprints": {ip.clone(): fp}}),
    )
    .await;
    assert_eq!(cmd["state"], "succeeded", "{cmd:#}");
    assert_eq!(cmd["params"]["sudo"], false, "root needs no sudo");
    let step = &steps(&cmd)[0];
    let msg = step["message"].as_str().unwrap();
    assert!(msg.contains("agent under systemd unit drover-agent.service"), "{msg}");
    let id = enrolled_host_id(step).expect("host id");

    assert_eq!(exec(&c, "systemctl is-enabled drover-agent"), "enabled");
    assert_eq!(exec(&c, "systemctl is-active drover-agent"), "active");
    assert_eq!(exec(&c, "systemctl show -p KillMode --value drover-agent"), "process");
    assert_eq!(exec(&c, "grep -c DROVER_TOKEN /etc/drover-agent/agent.env || true"), "0");
    let journal = exec(&c, "journalctl -u drover-agent --no-pager -o cat");
    assert!(journal.contains("session established"), "{journal}");
    assert!(!exec(&c, "ps -eo comm=").contains("supervise"), "no supervisor where systemd runs");

    // systemd restarts the agent; it comes back as the same host.
    let before = exec(&c, "systemctl show -p MainPID --value drover-agent");
    exec(&c, "systemctl restart drover-agent");
    let after = exec(&c, "systemctl show -p MainPID --value drover-agent");
    assert_ne!(before, after, "the agent was not restarted");
    eventually(WAIT, "the restarted agent's session", || {
        let c = c.clone();
        async move {
            exec(&c, "journalctl -u drover-agent --no-pager -o cat")
                .matches("session established")
                .count()
                .ge(&2)
                .then_some(())
        }
    })
    .await;
    let h = s.host(&id).await;
    assert_eq!(h["status"], "healthy", "{h:#}");
    assert_eq!(rest.hosts("").await.expect("hosts").len(), 1);
}
