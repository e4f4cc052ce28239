//! Machines reached over SSH, for end-to-end tests of SSH bootstrap: the
//! `drover/sshd` image (an OpenSSH server and no agent, a stand-in for a VM
//! or bare-metal box), a throw-away key pair made with `ssh-keygen`, and the
//! host key fingerprints the container prints at start (what an operator
//! would read off the console of a new machine to pin it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::docker::{DockerEnv, TEST_TAG};
use crate::rest::Rest;

/// Builds (or confirms up to date) `drover/sshd:e2e` on `drover/base:latest`.
pub fn ensure_sshd_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    build_once(&BUILT, "sshd");
}

/// Builds (or confirms up to date) `drover/sshd-systemd:e2e`: sshd under
/// systemd as PID 1, where bootstrap installs a systemd unit.
pub fn ensure_sshd_systemd_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    build_once(&BUILT, "sshd-systemd");
}

fn build_once(built: &Mutex<bool>, image: &str) {
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let root = crate::parcels::repo_root();
    let out = Command::new(root.join("scripts/build-images.sh"))
        .current_dir(&root)
        .args(["--tag", TEST_TAG, "--base-tag", "latest", image])
        .output()
        .expect("run scripts/build-images.sh");
    assert!(
        out.status.success(),
        "scripts/build-images.sh {image} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

/// What `docker run` needs to give systemd as PID 1 in an unprivileged
/// container: tmpfs for /run, and the cgroup hierarchy (cgroup v1 hosts
/// mount it read-only; on cgroup v2 a private cgroup namespace).
pub fn systemd_run_args() -> Vec<String> {
    let mut args: Vec<String> = ["--tmpfs", "/run", "--tmpfs", "/run/lock"].map(str::to_owned).to_vec();
    let v2 = Command::new("stat")
        .args(["-fc", "%T", "/sys/fs/cgroup"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "cgroup2fs")
        .unwrap_or(false);
    if v2 {
        args.extend(["--cgroupns", "private"].map(str::to_owned));
    } else {
        args.extend(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"].map(str::to_owned));
    }
    args
}

/// An ed25519 key pair in a directory of its own.
#[derive(Debug)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public: String,
}

impl KeyPair {
    pub fn generate(dir: &Path) -> KeyPair {
        let private = dir.join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "drover-e2e", "-f"])
            .arg(&private)
            .output()
            .expect("run ssh-keygen (openssh-client)");
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
        KeyPair { private, public: public.trim().to_owned() }
    }

    pub fn private_pem(&self) -> String {
        std::fs::read_to_string(&self.private).expect("private key")
    }
}

/// How a `drover/sshd` container lets people in.
#[derive(Debug, Clone, Default)]
pub struct SshdOptions<'a> {
    /// Login user (root when None).
    pub user: Option<&'a str>,
    pub authorized_key: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Passwordless sudo for the user.
    pub sudo: bool,
    /// Extra `docker run` arguments (network, --ip, --hostname...).
    pub docker_args: Vec<String>,
    /// `drover/sshd-systemd` (systemd as PID 1) instead of `drover/sshd`.
    pub systemd: bool,
}

/// Starts a `drover/sshd:e2e` container; returns its name.
pub fn start_sshd(env: &mut DockerEnv, what: &str, o: &SshdOptions<'_>) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut set = |k: &str, v: &str| {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    };
    if let Some(u) = o.user {
        set("SSH_USER", u);
    }
    if let Some(k) = o.authorized_key {
        set("SSH_AUTHORIZED_KEYS", k);
    }
    if let Some(p) = o.password {
        set("SSH_PASSWORD", p);
    }
    if o.sudo {
        set("SSH_SUDO", "1");
    }
    args.extend(o.docker_args.iter().cloned());
    if o.systemd {
        args.extend(systemd_run_args());
        args.push(format!("drover/sshd-systemd:{TEST_TAG}"));
    } else {
        args.push(format!("drover/sshd:{TEST_TAG}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run(what, &refs).expect("docker run drover/sshd")
}

/// The container's ED25519 host key fingerprint (`SHA256:...`), from the
/// line its entry point prints at start.
pub async fn host_fingerprint(env: &DockerEnv, container: &str) -> String {
    crate::eventually(Duration::from_secs(30), &format!("{container} to print its host keys"), || {
        let logs = env.logs(container);
        async move {
            logs.lines()
                .filter(|l| l.starts_with("host key:") && l.contains("(ED25519)"))
                .find_map(|l| l.split_whitespace().find(|w| w.starts_with("SHA256:")).map(str::to_owned))
        }
    })
    .await
}

/// Waits until sshd in `container` accepts TCP connections at `ip:22`.
pub async fn wait_for_sshd(ip: &str) {
    let addr = format!("{ip}:22");
    crate::eventually(Duration::from_secs(30), &format!("sshd at {addr}"), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ()) }
    })
    .await;
}

/// `POST /api/v1/hosts/bootstrap`; returns (status, body).
pub async fn start_bootstrap(rest: &Rest, body: Value) -> (u16, Value) {
    rest.raw(reqwest::Method::POST, "/api/v1/hosts/bootstrap", Some(body)).await.expect("POST /hosts/bootstrap")
}

/// Starts a bootstrap that must be accepted and waits for it to finish.
pub async fn bootstrap(rest: &Rest, body: Value) -> Value {
    let (status, cmd) = start_bootstrap(rest, body).await;
    assert_eq!(status, 202, "bootstrap: HTTP {status}: {cmd}");
    crate::parcels::wait_command(rest, cmd["id"].as_str().expect("command id"), Duration::from_secs(300)).await
}

/// The host id in a succeeded bootstrap step's message.
pub fn enrolled_host_id(step: &Value) -> Option<String> {
    let msg = step["message"].as_str()?;
    let rest = msg.split("enrolled as host ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}
