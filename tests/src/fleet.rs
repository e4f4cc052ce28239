//! A manager and agents on this machine for the end-to-end tests of
//! monitoring and alerts: the real binaries, each agent with its own data
//! dir and host name, cluster `prod` holding every host with the given
//! parcels active; and [`wait_for`], polling that says what it saw last.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::parcels::install_parcels;
use crate::procs::{ManagerProc, Proc, RoleReaper, free_port, start_agent};
use crate::rest::Rest;

/// How long the fleet may take to come up (agents enrolled and healthy).
const START_WAIT: Duration = Duration::from_secs(90);

/// Manager flags every fleet gets: fast heartbeats and flushes.
const FLAGS: [&str; 4] = ["--heartbeat-interval", "300ms", "--flush-interval", "200ms"];

/// Polls `check` until it returns `Ok`; panics after `within` with the last
/// `Err` it gave (what was seen instead).
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The manager, its agents and their files. Field order is drop order:
/// agents, then the manager, then any role process left behind, then the
/// files.
pub struct Fleet {
    pub agents: Vec<Proc>,
    pub manager: ManagerProc,
    _reaper: RoleReaper,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    pub rest: Rest,
    /// Host ids by host name.
    pub host_ids: BTreeMap<String, String>,
}

impl Fleet {
    /// Starts a manager with [`FLAGS`] and `flags`, one agent per host name,
    /// creates cluster `prod` with every host and makes `parcels` active on them.
    pub async fn start(hostnames: &[&str], parcels: &[PathBuf], flags: &[&str]) -> Fleet {
        Fleet::start_with(hostnames, parcels, flags, |_| {}).await
    }

    /// [`Fleet::start`], after `prepare` has filled the manager's data dir
    /// (user service types in `service-types/`, say).
    pub async fn start_with(
        hostnames: &[&str],
        parcels: &[PathBuf],
        flags: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Fleet {
        let tmp = tempfile::tempdir().expect("temp dir for the fleet");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("manager")).expect("the manager's data dir");
        prepare(&root.join("manager"));
        let flags: Vec<&str> = FLAGS.iter().chain(flags).copied().collect();
        let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags)
            .expect("start drover-manager (cargo build --workspace --bins)");
        manager.wait_ready().await;
        let rest = manager.rest();
        let token = rest.enrollment_token(hostnames.len() as u32, 600).await.expect("an enrollment token");
        let agents = hostnames
            .iter()
            .map(|h| {
                start_agent(&root.join(h), &manager.grpc_url(), Some(&token), &["--hostname", h])
                    .expect("start drover-agent")
            })
            .collect();
        let hosts = crate::eventually(START_WAIT, "every agent's host healthy", || async {
            let hosts = rest.hosts("status=healthy").await.ok()?;
            (hosts.len() == hostnames.len()).then_some(hosts)
        })
        .await;
        let host_ids: BTreeMap<String, String> = hosts
            .iter()
            .map(|h| {
                (h["hostname"].as_str().unwrap_or_default().to_owned(), h["id"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
        install_parcels(&rest, "prod", &host_ids.values().cloned().collect::<Vec<_>>(), parcels).await;
        Fleet { agents, manager, _reaper: RoleReaper(root.clone()), _tmp: tmp, root, rest, host_ids }
    }

    /// The fleet's files: `manager/` and one data dir per host name.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn host_id(&self, hostname: &str) -> &str {
        self.host_ids.get(hostname).unwrap_or_else(|| panic!("no host {hostname} in the fleet"))
    }

    /// Adds a role of service `svc` on `host` with its own role-level `values`.
    pub async fn add_role(&self, svc: &str, role_type: &str, host: &str, name: &str, values: Value) {
        let body = json!({"role_type": role_type, "host_id": self.host_id(host), "name": name});
        self.rest.ok(Method::POST, &format!("/clusters/prod/services/{svc}/roles"), Some(body)).await;
        let body = json!({"values": values, "message": format!("{name} on its own ports"), "role": name});
        self.rest.ok(Method::PATCH, &format!("/clusters/prod/services/{svc}/config"), Some(body)).await;
    }

    /// Runs a command on a service of `prod` and waits until it succeeds.
    pub async fn run_command(&self, svc: &str, body: Value, within: Duration) {
        let cmd = self.rest.ok(Method::POST, &format!("/clusters/prod/services/{svc}/commands"), Some(body)).await;
        let id = cmd["id"].as_str().unwrap_or_default().to_owned();
        let done = crate::eventually(within, &format!("command {id} to finish"), || async {
            let c: Value = self.rest.get(&format!("/api/v1/commands/{id}")).await.ok()?;
            (c["state"] != "running").then_some(c)
        })
        .await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }

    /// Restarts agent `index` (after a kill) on its data dir, without a token.
    pub fn restart_agent(&mut self, index: usize, hostname: &str) {
        let dir = self.root.join(hostname);
        self.agents[index] =
            start_agent(&dir, &self.manager.grpc_url(), None, &["--hostname", hostname]).expect("restart drover-agent");
    }

    /// No ERROR line in the manager's log but the `allowed` ones.
    pub fn assert_quiet_manager(&self, allowed: &[&str]) {
        let errors = self.manager.proc.unexpected_errors(allowed);
        assert!(errors.is_empty(), "unexpected ERROR lines in the manager's log:\n{}", errors.join("\n"));
    }

    /// No ERROR line in the manager's or an agent's log.
    pub fn assert_quiet_logs(&self) {
        for proc in std::iter::once(&self.manager.proc).chain(&self.agents) {
            let errors = proc.unexpected_errors(&[]);
            assert!(errors.is_empty(), "unexpected ERROR lines in {}:\n{}", proc.log.display(), errors.join("\n"));
        }
    }
}
