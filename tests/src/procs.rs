//! Running the real `drover-manager` and `drover-agent` binaries: each in its
//! own data dir, with its output captured to a log file that tests can search
//! and that is scanned for unexpected ERROR lines.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// Where cargo put the workspace's binaries (next to the test executable's `deps/`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("DROVER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins` (or set DROVER_BIN_DIR)",
        path.display()
    );
    path
}

/// `(VmRSS, VmHWM)` in MiB of process `pid` (a number, or `self`), from `/proc/PID/status`;
/// 0 for what cannot be read.
pub fn memory_mib(pid: &str) -> (f64, f64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process whose stdout and stderr go to `log`; killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Proc { name: name.to_owned(), child: Some(child), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or `docker kill` would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (graceful).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Log lines at ERROR level that are not in `allowed` (substrings).
    pub fn unexpected_errors(&self, allowed: &[&str]) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.starts_with("ERROR"))
            .filter(|l| !allowed.iter().any(|a| l.contains(a)))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A manager binary with its own data dir and ports.
#[derive(Debug)]
pub struct ManagerProc {
    pub proc: Proc,
    pub data_dir: PathBuf,
    pub http_port: u16,
    pub grpc_port: u16,
    pub password: String,
}

impl ManagerProc {
    pub fn start(data_dir: &Path, http_port: u16, grpc_port: u16, extra: &[&str]) -> anyhow::Result<ManagerProc> {
        Self::start_on(data_dir, http_port, "127.0.0.1", grpc_port, extra)
    }

    /// Like [`ManagerProc::start`], with the gRPC listener on `grpc_ip` (e.g. a
    /// Docker network's gateway, for agents in containers).
    pub fn start_on(
        data_dir: &Path,
        http_port: u16,
        grpc_ip: &str,
        grpc_port: u16,
        extra: &[&str],
    ) -> anyhow::Result<ManagerProc> {
        fs::create_dir_all(data_dir)?;
        let password = "e2e-admin-password".to_owned();
        let mut cmd = Command::new(bin("drover-manager"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,sqlx=warn")
            .env("DROVER_ADMIN_PASSWORD", &password)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--grpc-addr")
            .arg(format!("{grpc_ip}:{grpc_port}"))
            .args(extra);
        let proc = Proc::spawn("drover-manager", cmd, &data_dir.join("manager.log"))?;
        Ok(ManagerProc { proc, data_dir: data_dir.to_path_buf(), http_port, grpc_port, password })
    }

    pub fn rest(&self) -> crate::rest::Rest {
        crate::rest::Rest::new(format!("127.0.0.1:{}", self.http_port), "admin", &self.password)
    }

    pub fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port);
        let client = reqwest::Client::new();
        let log = self.proc.log.clone();
        crate::eventually(Duration::from_secs(60), "manager /healthz", || {
            let client = client.clone();
            let url = url.clone();
            let log = log.clone();
            async move {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => {
                        let text = fs::read_to_string(&log).unwrap_or_default();
                        assert!(!text.contains("error:"), "manager failed to start:\n{text}");
                        None
                    }
                }
            }
        })
        .await;
    }
}

/// Starts an agent binary with its own data dir.
pub fn start_agent(data_dir: &Path, manager_url: &str, token: Option<&str>, extra: &[&str]) -> anyhow::Result<Proc> {
    fs::create_dir_all(data_dir)?;
    let mut cmd = Command::new(bin("drover-agent"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .arg("--manager")
        .arg(manager_url)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra);
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    Proc::spawn("drover-agent", cmd, &data_dir.join("agent.log"))
}

/// Kills, when dropped, any process still running from a role directory under
/// `root`, with its process group when it leads one (as role processes do: an
/// nginx worker's command line does not name the directory): role processes
/// outlive their agent by design, and a failed test must not leave JVMs or
/// listening servers behind on a shared machine.
pub struct RoleReaper(pub PathBuf);

impl Drop for RoleReaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(&needle) {
                let pid = nix::unistd::Pid::from_raw(pid);
                if nix::unistd::getpgid(Some(pid)).ok() == Some(pid) {
                    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
