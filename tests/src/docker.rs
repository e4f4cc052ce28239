//! Real Docker containers as hosts, for end-to-end tests: building Drover's
//! images with `scripts/build-images.sh`, running the `docker` CLI, and a
//! guard that removes every container, network and volume a test created,
//! whatever the outcome. Everything a test creates is named with one unique
//! prefix, so leftovers of a killed run are easy to find (`docker ps -a
//! --filter name=drv-e2e-`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};

/// Tag of the agent image the tests build from the binary under test, so that
/// `drover/agent:latest` (release builds) is left alone.
pub const TEST_TAG: &str = "e2e";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `docker ARGS` and returns its trimmed stdout; an error carries stderr.
pub fn docker<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new("docker").args(&args).output().context("run docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds (or confirms up to date) `drover/agent:e2e` from the agent binary
/// under test, on `drover/base:latest`, and `drover/sshd:latest`. Once per test
/// process; a second run with nothing changed takes about a second.
pub fn ensure_images() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let agent = crate::procs::bin("drover-agent");
    let root = workspace_root();
    let out = Command::new(root.join("scripts/build-images.sh"))
        .current_dir(&root)
        .args(["--tag", TEST_TAG, "--base-tag", "latest", "--agent-bin"])
        .arg(&agent)
        .arg("agent")
        .output()
        .expect("run scripts/build-images.sh");
    assert!(
        out.status.success(),
        "scripts/build-images.sh failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

/// A network made by [`DockerEnv::fixed_network`]: a /24 whose `.1` is the
/// gateway (this machine's address on it).
#[derive(Debug, Clone)]
pub struct FixedNetwork {
    pub name: String,
    prefix: [u8; 3],
}

impl FixedNetwork {
    /// The address `.last` of the subnet (2 to 254 are free for containers).
    pub fn ip(&self, last: u8) -> std::net::Ipv4Addr {
        let [a, b, c] = self.prefix;
        std::net::Ipv4Addr::new(a, b, c, last)
    }

    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.ip(1)
    }
}

/// Containers, networks and volumes created by one test, removed on drop.
#[derive(Debug)]
pub struct DockerEnv {
    /// Unique per test run, e.g. `drv-e2e-1a2b3c-`.
    pub prefix: String,
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl DockerEnv {
    pub fn new(test: &str) -> DockerEnv {
        let unique = format!("{:x}{:04x}", std::process::id(), rand::random::<u16>());
        DockerEnv {
            prefix: format!("drv-e2e-{test}-{unique}-"),
            containers: Vec::new(),
            networks: Vec::new(),
            volumes: Vec::new(),
        }
    }

    pub fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// Creates a user-defined bridge network and returns (name, gateway IP).
    pub fn network(&mut self, what: &str) -> anyhow::Result<(String, String)> {
        let name = self.name(what);
        docker(["network", "create", "--driver", "bridge", &name])?;
        self.networks.push(name.clone());
        let gateway = docker(["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}} {{end}}", &name])?;
        let gateway = gateway.split_whitespace().find(|g| g.contains('.')).context("network has no IPv4 gateway")?;
        Ok((name, gateway.to_owned()))
    }

    /// Creates a user-defined bridge network with a /24 subnet of its own
    /// (a free one in 10.231.0.0/16), so that containers can be given fixed
    /// addresses (`docker run --ip`, `docker network connect --ip`) that they
    /// keep across `docker start` and reconnects.
    pub fn fixed_network(&mut self, what: &str) -> anyhow::Result<FixedNetwork> {
        let name = self.name(what);
        let mut last = None;
        for _ in 0..20 {
            let third = rand::random::<u8>();
            let subnet = format!("10.231.{third}.0/24");
            let gateway = format!("10.231.{third}.1");
            match docker(["network", "create", "--driver", "bridge", "--subnet", &subnet, "--gateway", &gateway, &name])
            {
                Ok(_) => {
                    self.networks.push(name.clone());
                    return Ok(FixedNetwork { name, prefix: [10, 231, third] });
                }
                // Another network (perhaps another test's) holds that subnet: try another.
                Err(e) if e.to_string().contains("overlap") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free subnet")).context("create a network with a free subnet"))
    }

    /// Records a named volume for removal (docker run creates it on first use).
    pub fn volume(&mut self, what: &str) -> String {
        let name = self.name(what);
        self.volumes.push(name.clone());
        name
    }

    /// `docker run -d --name PREFIX+what ARGS`; returns the container's name.
    pub fn run(&mut self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        let name = self.name(what);
        // Recorded first: a run that fails half-way may still leave a container.
        self.containers.push(name.clone());
        let mut all = vec!["run", "-d", "--name", &name];
        all.extend_from_slice(args);
        docker(&all)?;
        Ok(name)
    }

    /// The output of `docker logs` (stdout and stderr together).
    pub fn logs(&self, container: &str) -> String {
        let out = Command::new("docker").args(["logs", container]).output();
        match out {
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("(docker logs failed: {e})"),
        }
    }
}

impl Drop for DockerEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for c in &self.containers {
                eprintln!("---- docker logs {c} ----\n{}", self.logs(c));
            }
        }
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(self.containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for n in &self.networks {
            let _ = docker(["network", "rm", n]);
        }
        if !self.volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(self.volumes.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// Containers, volumes and images a manager made (so no [`DockerEnv`] knows
/// them), found by name prefix and removed on drop, even when the test fails
/// half-way (printing the containers' logs then): containers and volumes
/// named `PREFIX*`, images `drover-snapshot/PREFIX*`.
#[derive(Debug)]
pub struct ManagerLeftovers {
    pub prefix: String,
}

impl Drop for ManagerLeftovers {
    fn drop(&mut self) {
        let listed = |args: &[&str]| -> Vec<String> {
            docker(args).map(|out| out.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
        };
        let remove = |cmd: &[&str], ids: Vec<String>| {
            if !ids.is_empty() {
                let mut args: Vec<&str> = cmd.to_vec();
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        };
        let names = format!("name={}", self.prefix);
        let containers = listed(&["ps", "-aq", "--filter", &names]);
        if std::thread::panicking() {
            for id in &containers {
                eprintln!("---- docker logs {id} ----\n{}", docker(["logs", id]).unwrap_or_default());
            }
        }
        remove(&["rm", "-f", "-v"], containers);
        let images = format!("reference=drover-snapshot/{}*", self.prefix);
        remove(&["rmi", "-f"], listed(&["images", "-q", "--filter", &images]));
        remove(&["volume", "rm", "-f"], listed(&["volume", "ls", "-q", "--filter", &names]));
    }
}
