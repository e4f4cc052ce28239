//! The Docker provider's client: the few Docker Engine API calls the manager
//! needs to create and destroy container hosts (ping, image and network
//! inspection, volumes, containers), spoken as HTTP/1.1 over the engine's
//! unix socket with hyper. One connection per call: calls are rare and a
//! socket connect is cheap.
//!
//! The API version is pinned to [`API_VERSION`], which Docker 20.10 and every
//! later engine serve, so the request and answer shapes here are the ones of
//! that version whatever the engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::UnixStream;

/// The Engine API version every request names.
pub const API_VERSION: &str = "v1.41";

/// Default path of the engine's socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Longest any one call may take (creating a container can be slow on a busy
/// engine; stopping waits for the container's own grace period first).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the Docker engine at {socket} is not reachable: {message}")]
    Unreachable { socket: String, message: String },
    /// The engine answered with an error status.
    #[error("Docker engine: {message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the Docker engine to {what}: {message}")]
    Protocol { what: String, message: String },
}

impl DockerError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DockerError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

type Result<T> = std::result::Result<T, DockerError>;

/// A client for one engine.
#[derive(Debug, Clone)]
pub struct DockerClient {
    socket: PathBuf,
}

/// What the provider asks of a new container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub network: String,
    pub env: Vec<String>,
    /// Named volume and where it is mounted.
    pub volume: (String, String),
    pub labels: BTreeMap<String, String>,
    /// CPU limit in CPUs (`docker run --cpus`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes (`docker run --memory`).
    pub memory: Option<u64>,
}

/// What `inspect_container` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// `created`, `running`, `exited`, ...
    pub status: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

impl DockerClient {
    pub fn new(socket: impl Into<PathBuf>) -> DockerClient {
        DockerClient { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix:///var/run/docker.sock`: how records and messages name the engine.
    pub fn engine(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Bytes)> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(method.clone(), path, body)).await.unwrap_or_else(|_| {
            Err(DockerError::Unreachable {
                socket: self.socket.display().to_string(),
                message: format!("{method} {path} took longer than {}s", CALL_TIMEOUT.as_secs()),
            })
        })
    }

    async fn call_inner(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Bytes)> {
        let unreachable = |e: &dyn std::fmt::Display| DockerError::Unreachable {
            socket: self.socket.display().to_string(),
            message: e.to_string(),
        };
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| unreachable(&e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(async move {
            // Ends with the response (or the error that the request sees too).
            let _ = conn.await;
        });
        let uri = format!("/{API_VERSION}{path}");
        let mut req = Request::builder().method(method).uri(&uri).header(hyper::header::HOST, "docker");
        let body = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| DockerError::Protocol { what: uri.clone(), message: e.to_string() })?;
        let resp = sender.send_request(req).await.map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    /// Like `call`, with an error status turned into [`DockerError::Api`].
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Bytes> {
        let (status, bytes) = self.call(method, path, body).await?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<ErrorMessage>(&bytes)
            .map(|m| m.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_owned());
        Err(DockerError::Api { status: status.as_u16(), message })
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let bytes = self.ok(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| DockerError::Protocol { what: path.to_owned(), message: e.to_string() })
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<()> {
        self.ok(Method::GET, "/_ping", None).await.map(|_| ())
    }

    /// Whether the engine has the image (by name and tag, or id).
    pub async fn has_image(&self, image: &str) -> Result<bool> {
        match self.ok(Method::GET, &format!("/images/{image}/json"), None).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 gateway of a network, if it has one. `Ok(None)` when the
    /// network has no IPv4 gateway; a 404 error when there is no such network.
    pub async fn network_gateway(&self, network: &str) -> Result<Option<String>> {
        let v = self.json(Method::GET, &format!("/networks/{network}"), None).await?;
        Ok(v["IPAM"]["Config"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["Gateway"].as_str())
            .find(|g| g.contains('.'))
            .map(str::to_owned))
    }

    pub async fn create_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.ok(Method::POST, "/volumes/create", Some(json!({ "Name": name, "Labels": labels }))).await.map(|_| ())
    }

    /// Removes a volume; a volume that is already gone is not an error.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        match self.ok(Method::DELETE, &format!("/volumes/{name}?force=true"), None).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Creates a container (not started) and returns its id.
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let mut host_config = json!({
            "NetworkMode": spec.network,
            "Binds": [format!("{}:{}", spec.volume.0, spec.volume.1)],
        });
        if let Some(cpus) = spec.cpus {
            host_config["NanoCpus"] = json!((cpus * 1e9).round() as i64);
        }
        if let Some(memory) = spec.memory {
            host_config["Memory"] = json!(memory);
        }
        let body = json!({
            "Image": spec.image,
            "Hostname": spec.hostname,
            "Env": spec.env,
            "Labels": spec.labels,
            "HostConfig": host_config,
        });
        let v = self.json(Method::POST, &format!("/containers/create?name={}", spec.name), Some(body)).await?;
        v["Id"].as_str().map(str::to_owned).ok_or_else(|| DockerError::Protocol {
            what: format!("create container {}", spec.name),
            message: format!("no Id in {v}"),
        })
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.ok(Method::POST, &format!("/containers/{id}/start"), None).await.map(|_| ())
    }

    /// The container's id, name, state and labels; `Ok(None)` if it is gone.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>> {
        let v = match self.json(Method::GET, &format!("/containers/{id}/json"), None).await {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let labels = v["Config"]["Labels"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        Ok(Some(ContainerInfo {
            id: v["Id"].as_str().unwrap_or_default().to_owned(),
            name: v["Name"].as_str().unwrap_or_default().trim_start_matches('/').to_owned(),
            status: v["State"]["Status"].as_str().unwrap_or("unknown").to_owned(),
            labels,
        }))
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container
    /// with its anonymous volumes. A container that is already gone is not an
    /// error.
    pub async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<()> {
        match self.ok(Method::POST, &format!("/containers/{id}/stop?t={}", grace.as_secs()), None).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        match self.ok(Method::DELETE, &format!("/containers/{id}?force=true&v=true"), None).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

impl DockerClient {
    /// Runs `cmd` in a running container (`docker exec`, detached) and waits
    /// at most `within` for it to end; an exit status other than 0 is an
    /// error naming the command.
    pub async fn exec(&self, id: &str, cmd: &[&str], within: Duration) -> Result<()> {
        let body = json!({"Cmd": cmd, "AttachStdout": false, "AttachStderr": false});
        let v = self.json(Method::POST, &format!("/containers/{id}/exec"), Some(body)).await?;
        let exec = v["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| DockerError::Protocol { what: format!("exec in {id}"), message: format!("no Id in {v}") })?;
        self.ok(Method::POST, &format!("/exec/{exec}/start"), Some(json!({"Detach": true}))).await?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.json(Method::GET, &format!("/exec/{exec}/json"), None).await?;
            if v["Running"].as_bool() == Some(false) {
                return match v["ExitCode"].as_i64() {
                    Some(0) => Ok(()),
                    code => Err(DockerError::Api {
                        status: 500,
                        message: format!(
                            "{} exited with {}",
                            cmd.join(" "),
                            code.map_or("?".into(), |c| c.to_string())
                        ),
                    }),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DockerError::Protocol {
                    what: format!("exec in {id}"),
                    message: format!("{} still runs after {}s", cmd.join(" "), within.as_secs()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Commits a container's filesystem (not its volumes) to the image
    /// `repo:tag` without pausing it (`docker commit --pause=false`); returns
    /// the image id.
    pub async fn commit(&self, id: &str, repo: &str, tag: &str) -> Result<String> {
        let path = format!("/commit?container={id}&repo={repo}&tag={tag}&pause=false");
        let v = self.json(Method::POST, &path, None).await?;
        v["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| DockerError::Protocol { what: format!("commit {id}"), message: format!("no Id in {v}") })
    }

    /// Removes an image; one already gone is not an error.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        match self.ok(Method::DELETE, &format!("/images/{image}"), None).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

/// Parses a memory limit: bytes, or a number with `k`, `m`, `g` or `t`
/// (powers of 1024, as `docker run --memory`), optionally followed by `b`.
pub fn parse_memory(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("invalid memory {s:?}: use bytes or e.g. 256m, 1g"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("memory {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits() {
        for (input, want) in
            [("256m", 256 << 20), ("1g", 1 << 30), ("1GB", 1 << 30), ("512k", 512 << 10), ("1000", 1000)]
        {
            assert_eq!(parse_memory(input), Ok(want), "{input}");
        }
        for bad in ["", "m", "1.5g", "-1m", "lots"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_absent_socket_is_reported_as_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let client = DockerClient::new(dir.path().join("docker.sock"));
        let err = client.ping().await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("docker.sock is not reachable"), "{err}");
    }
}
