//! The two ways of adding hosts that the manager carries out itself:
//! `/hosts/add/ssh` (bootstrap over SSH, a command with a step per host whose
//! stage is shown live at `/hosts/add/ssh/{command}`) and `/hosts/add/docker`
//! (agent containers on the manager's Docker engine, listed with teardown).
//!
//! The handlers turn form fields into the same requests the REST API takes
//! and call [`crate::bootstrap::request`] and [`crate::providers`], which
//! check, audit and run them. Secrets (password, private key, passphrase)
//! go from the form straight into zeroed [`Secret`]s and are never written
//! back into a page, a flash message or a log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, redirect_with, url_encode};
use crate::AppState;
use crate::bootstrap::{self, AuthRequest, BootstrapRequest, Secret, StartError};
use crate::domain::{self, DomainError};
use crate::providers::{self, CreateHosts, DEFAULT_IMAGE, ProviderError, ProviderHostView};
use drover_api::bootstrap::HostKeyPolicy;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/hosts/add/ssh", get(ssh_page).post(ssh_start))
        .route("/hosts/add/ssh/{id}", get(ssh_progress))
        .route("/hosts/add/docker", get(docker_page).post(docker_create))
        .route("/hosts/add/docker/{id}/teardown", post(docker_teardown))
}

/// Field errors of a form: field name -> message (`form` for the form as a
/// whole).
type Errors = Map<String, Value>;

fn error_at(field: &str, message: impl Into<String>) -> Errors {
    let mut e = Errors::new();
    e.insert(field.to_owned(), json!(message.into()));
    e
}

/// `key=value[,key=value...]` (blank: none); the domain validates keys and
/// values.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("label {part:?} is not key=value"))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

// ---- SSH bootstrap -------------------------------------------------------

/// The SSH form as sent. The secrets are deserialized straight into
/// [`Secret`]s; everything else is echoed back when the form is shown again.
#[derive(Deserialize)]
struct SshForm {
    #[serde(default)]
    addresses: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    private_key: Option<Secret>,
    #[serde(default)]
    passphrase: Option<Secret>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    sudo: String,
    #[serde(default)]
    host_key_policy: String,
    #[serde(default)]
    fingerprints: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    manager_url: String,
    #[serde(default)]
    timeout_seconds: String,
}

impl SshForm {
    /// The non-secret fields, for showing the form again.
    fn echo(&self) -> Value {
        json!({
            "addresses": self.addresses, "port": self.port, "user": self.user,
            "sudo_auto": !matches!(self.sudo.as_str(), "yes" | "no"),
            "sudo_yes": self.sudo == "yes", "sudo_no": self.sudo == "no",
            "accept_new": self.host_key_policy == "accept-new",
            "fingerprints": self.fingerprints, "labels": self.labels,
            "manager_url": self.manager_url, "timeout_seconds": self.timeout_seconds,
        })
    }

    /// The REST request the form stands for; a field that cannot be read
    /// is an error at that field.
    fn request(self) -> Result<BootstrapRequest, Errors> {
        let addresses: Vec<String> = self
            .addresses
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let port = match self.port.trim() {
            "" => 22,
            p => p
                .parse::<u16>()
                .map_err(|_| error_at("port", format!("the port must be a number from 1 to 65535, got {p:?}")))?,
        };
        let sudo = match self.sudo.as_str() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        };
        let host_key_policy = match self.host_key_policy.as_str() {
            "accept-new" => HostKeyPolicy::AcceptNew,
            _ => HostKeyPolicy::KnownHosts,
        };
        let mut host_key_fingerprints = BTreeMap::new();
        for line in self.fingerprints.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [address, fingerprint] = parts[..] else {
                return Err(error_at(
                    "fingerprints",
                    format!("{line:?}: each line is an address as given above, a space and its SHA256:... fingerprint"),
                ));
            };
            host_key_fingerprints.insert(address.to_owned(), fingerprint.to_owned());
        }
        let labels = parse_labels(&self.labels).map_err(|e| error_at("labels", e))?;
        let timeout_seconds = match self.timeout_seconds.trim() {
            "" => None,
            t => Some(t.parse::<u64>().map_err(|_| {
                error_at("timeout_seconds", format!("the timeout is a whole number of seconds, got {t:?}"))
            })?),
        };
        let present = |s: Option<Secret>| s.filter(|s| !s.expose().is_empty());
        let user = match self.user.trim() {
            "" => String::new(),
            u => u.to_owned(),
        };
        Ok(BootstrapRequest {
            addresses,
            port,
            user,
            auth: AuthRequest {
                private_key: present(self.private_key),
                passphrase: present(self.passphrase),
                password: present(self.password),
            },
            sudo,
            labels,
            host_key_policy: Some(host_key_policy),
            host_key_fingerprints,
            manager_url: Some(self.manager_url.trim().to_owned()).filter(|u| !u.is_empty()),
            parallelism: None,
            timeout_seconds,
        })
    }
}

/// The form field a bootstrap request's error is about (its messages name
/// the REST fields).
fn ssh_field(m: &str) -> &'static str {
    if m.starts_with("addresses")
        || m.starts_with("at most")
        || m.starts_with("invalid address")
        || m.ends_with("are the same host")
    {
        "addresses"
    } else if m.starts_with("invalid user") {
        "user"
    } else if m.starts_with("auth") || m.starts_with("give either") || m.contains("private key") {
        "auth"
    } else if m.starts_with("host_key_fingerprints") || m.starts_with("the fingerprint") {
        "fingerprints"
    } else if m.starts_with("invalid label") {
        "labels"
    } else if m.starts_with("timeout_seconds") {
        "timeout_seconds"
    } else if m.contains("manager_url") || m.contains("certificate does not name") {
        "manager_url"
    } else {
        "form"
    }
}

fn ssh_form_page(state: &AppState, session: &Session, form: Value, errors: Errors) -> axum::response::Response {
    let has_errors = !errors.is_empty();
    session.page(
        state,
        "hosts_ssh",
        "Add hosts over SSH",
        "hosts",
        json!({"form": form, "errors": errors, "has_errors": has_errors, "known_hosts": bootstrap::known_hosts_path(state).display().to_string()}),
    )
}

async fn ssh_page(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    let form = json!({"port": "22", "user": "root", "sudo_auto": true});
    Ok(ssh_form_page(&state, &session, form, Errors::new()))
}

/// Starts the bootstrap and goes to its progress view; a refused request
/// shows the form again with the error by its field (secrets left out).
async fn ssh_start(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<SshForm>) -> PageResult {
    let echo = form.echo();
    let req = match form.request() {
        Ok(r) => r,
        Err(errors) => return Ok(ssh_form_page(&state, &session, echo, errors)),
    };
    let actor = bootstrap::Actor::authorize(&session.actor())?;
    match bootstrap::request(state.clone(), actor, req).await {
        Ok((cmd, steps)) => Ok(redirect_with(
            &format!("/hosts/add/ssh/{}", url_encode(&cmd.id)),
            true,
            &format!("bootstrap of {} host(s) started", steps.len()),
        )),
        Err(StartError::Invalid(m)) => Ok(ssh_form_page(&state, &session, echo, error_at(ssh_field(&m), m))),
        Err(StartError::Store(e)) => Err(DomainError::from(e).into()),
        Err(e @ StartError::Internal(_)) => Err(ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The host id in a succeeded step's message ("enrolled as host ID (...").
fn enrolled_host(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("enrolled as host ")?;
    rest.split([' ', ';']).next().filter(|id| !id.is_empty())
}

/// One bootstrap command, a row per host with its stage; live until it ends.
async fn ssh_progress(State(state): State<Arc<AppState>>, Path(id): Path<String>, session: Session) -> PageResult {
    let cmd = domain::commands::get(&state, &session.actor(), &id).await?;
    if cmd.name != bootstrap::COMMAND_NAME {
        return Err(ConsoleError::new(StatusCode::NOT_FOUND, format!("command {id} is not an SSH bootstrap")));
    }
    let hosts: Vec<Value> = cmd
        .steps
        .iter()
        .map(|s| {
            let st = s.state.as_str();
            let stage = bootstrap::stage_of(st, &s.message);
            let at = stage.and_then(|g| bootstrap::STAGES.iter().position(|x| *x == g));
            let stages: Vec<Value> = bootstrap::STAGES
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mark = match (st, at) {
                        ("succeeded", _) => "done",
                        (_, Some(a)) if i < a => "done",
                        ("running", Some(a)) if i == a => "now",
                        ("failed" | "aborted", Some(a)) if i == a => "failed",
                        _ => "",
                    };
                    json!({"name": name, "mark": mark})
                })
                .collect();
            let host = if st == "succeeded" { enrolled_host(&s.message) } else { None };
            json!({
                "seq": s.seq,
                "target": s.description.strip_prefix("bootstrap ").unwrap_or(&s.description),
                "state": st,
                "stage": stage.unwrap_or(match st { "succeeded" => "enrolled", "pending" => "waiting", _ => "-" }),
                "stages": stages,
                "message": s.message,
                "host": host,
                "host_href": host.map(|h| format!("/hosts/{}", url_encode(h))),
            })
        })
        .collect();
    let p = &cmd.params;
    let done = cmd.state.as_str() != "running";
    Ok(session.page(
        &state,
        "hosts_ssh_progress",
        "SSH bootstrap",
        "hosts",
        json!({
            "id": cmd.id, "href": format!("/commands/{}", url_encode(&cmd.id)),
            "state": cmd.state.as_str(), "message": cmd.message, "done": done,
            "created_by": cmd.created_by, "created_at": cmd.created_at, "finished_at": cmd.finished_at,
            "login_user": p["user"], "auth_method": p["auth_method"].as_str().unwrap_or_default().replace('_', " "),
            "policy": p["host_key_policy"], "sudo": p["sudo"],
            "labels": p["labels"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>()).unwrap_or_default(),
            "hosts": hosts,
        }),
    ))
}

// ---- Docker provider -----------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct DockerForm {
    #[serde(default)]
    count: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    network: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    cpus: String,
    #[serde(default)]
    memory: String,
    #[serde(default)]
    name_prefix: String,
    #[serde(default)]
    manager_url: String,
}

impl DockerForm {
    fn defaults() -> DockerForm {
        DockerForm {
            count: "1".into(),
            image: DEFAULT_IMAGE.into(),
            network: "bridge".into(),
            name_prefix: "drover-".into(),
            ..DockerForm::default()
        }
    }

    /// The provider request the form stands for; a field that cannot be read
    /// is an error at that field.
    fn request(&self) -> Result<CreateHosts, Errors> {
        let count = match self.count.trim() {
            "" => 1,
            c => c.parse::<u32>().map_err(|_| error_at("count", format!("the count is a whole number, got {c:?}")))?,
        };
        let cpus = match self.cpus.trim() {
            "" => None,
            c => Some(c.parse::<f64>().map_err(|_| {
                error_at("cpus", format!("the CPU limit is a number of CPUs such as 0.5 or 2, got {c:?}"))
            })?),
        };
        let memory = match self.memory.trim() {
            "" => None,
            m => Some(providers::docker::parse_memory(m).map_err(|e| error_at("memory", e))?),
        };
        let or = |s: &str, d: &str| if s.trim().is_empty() { d.to_owned() } else { s.trim().to_owned() };
        Ok(CreateHosts {
            count,
            image: or(&self.image, DEFAULT_IMAGE),
            network: or(&self.network, "bridge"),
            labels: parse_labels(&self.labels).map_err(|e| error_at("labels", e))?,
            cpus,
            memory,
            name_prefix: or(&self.name_prefix, "drover-"),
            manager_url: Some(self.manager_url.trim().to_owned()).filter(|u| !u.is_empty()),
        })
    }
}

/// The form field a provider error is about.
fn docker_field(m: &str) -> &'static str {
    if m.starts_with("count") {
        "count"
    } else if m.starts_with("invalid name_prefix") {
        "name_prefix"
    } else if m.starts_with("cpus") {
        "cpus"
    } else if m.starts_with("memory") || m.starts_with("invalid memory") {
        "memory"
    } else if m.starts_with("invalid label") {
        "labels"
    } else if m.starts_with("image") {
        "image"
    } else if m.contains("manager_url") && !m.starts_with("network") {
        "manager_url"
    } else if m.starts_with("network") {
        "network"
    } else {
        "form"
    }
}

fn provider_error(e: ProviderError) -> ConsoleError {
    match e {
        ProviderError::Invalid(m) => ConsoleError::new(StatusCode::BAD_REQUEST, m),
        ProviderError::NotFound(m) => ConsoleError::new(StatusCode::NOT_FOUND, m),
        ProviderError::Forbidden(m) => ConsoleError::new(StatusCode::FORBIDDEN, m),
        ProviderError::Engine(m) => ConsoleError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        ProviderError::Store(s) => DomainError::from(s).into(),
    }
}

fn container_row(c: &ProviderHostView) -> Value {
    json!({
        "id": c.id, "short": &c.id[..12.min(c.id.len())], "name": c.name, "image": c.image, "network": c.network,
        "engine": c.engine, "status": c.container_status, "created_by": c.created_by, "created_at": c.created_at,
        "labels": c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "host_id": c.host_id, "hostname": c.hostname,
        "host_href": c.host_id.as_ref().map(|h| format!("/hosts/{}", url_encode(h))),
        "host_status": c.host_status.map(|s| s.as_str()),
        "teardown": format!("/hosts/add/docker/{}/teardown", url_encode(&c.id)),
    })
}

async fn docker_form_page(state: &AppState, session: &Session, form: &DockerForm, errors: Errors) -> PageResult {
    let containers = providers::list_docker_hosts(state, providers::Actor::authorize(&session.actor())?)
        .await
        .map_err(provider_error)?;
    let rows: Vec<Value> = containers.iter().map(container_row).collect();
    // Refreshed live until every container has enrolled (or there are none).
    let settled = containers.iter().all(|c| c.host_id.is_some() || c.container_status == "missing");
    let has_errors = !errors.is_empty();
    Ok(session.page(
        state,
        "hosts_docker",
        "Add Docker hosts",
        "hosts",
        json!({
            "form": {"count": form.count, "image": form.image, "network": form.network, "labels": form.labels,
                     "cpus": form.cpus, "memory": form.memory, "name_prefix": form.name_prefix, "manager_url": form.manager_url},
            "errors": errors, "has_errors": has_errors,
            "containers": rows, "settled": settled,
            "socket": state.config.docker_socket.display().to_string(),
        }),
    ))
}

async fn docker_page(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    docker_form_page(&state, &session, &DockerForm::defaults(), Errors::new()).await
}

/// Starts the containers; a refused request (or an unreachable engine)
/// shows the form again with the error by its field.
async fn docker_create(
    State(state): State<Arc<AppState>>,
    CsrfForm(session, form): CsrfForm<DockerForm>,
) -> PageResult {
    let req = match form.request() {
        Ok(r) => r,
        Err(errors) => return docker_form_page(&state, &session, &form, errors).await,
    };
    let caller = session.actor();
    match providers::create_docker_hosts(&state, providers::Actor::authorize(&caller)?, req).await {
        Ok(created) => {
            let names: Vec<&str> = created.items.iter().map(|c| c.name.as_str()).collect();
            Ok(redirect_with(
                "/hosts/add/docker",
                true,
                &format!(
                    "{} container(s) started ({}); they join as hosts once their agents enroll with {}",
                    names.len(),
                    names.join(", "),
                    created.manager_url
                ),
            ))
        }
        Err(ProviderError::Invalid(m)) => {
            docker_form_page(&state, &session, &form, error_at(docker_field(&m), m)).await
        }
        Err(ProviderError::Engine(m)) => docker_form_page(&state, &session, &form, error_at("form", m)).await,
        Err(e) => Err(provider_error(e)),
    }
}

/// Removes one container with its volume and decommissions its host, after
/// a confirmation page naming both.
async fn docker_teardown(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let back = "/hosts/add/docker";
    if form.confirmed != "yes" {
        let containers = providers::list_docker_hosts(&state, providers::Actor::authorize(&session.actor())?)
            .await
            .map_err(provider_error)?;
        let c = containers.iter().find(|c| c.id == id).ok_or_else(|| {
            ConsoleError::new(
                StatusCode::NOT_FOUND,
                format!("container {id} not found among the containers this manager created"),
            )
        })?;
        let host = match (&c.hostname, &c.host_id) {
            (Some(name), Some(hid)) => {
                format!(" Its host {name} ({hid}) is decommissioned: its certificate is revoked.")
            }
            _ => " It has not enrolled as a host.".to_owned(),
        };
        let what = format!(
            "Tear down container {}: it is stopped and removed with its volume {}.{host} This cannot be undone.",
            c.name, c.volume
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/hosts/add/docker/{}/teardown", url_encode(&id));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, back, vec![c.name.clone()], 1));
    }
    let caller = session.actor();
    match providers::delete_docker_host(&state, providers::Actor::authorize(&caller)?, &id).await {
        Ok(c) => {
            let host = match c.hostname {
                Some(h) => format!("; host {h} decommissioned"),
                None => String::new(),
            };
            Ok(redirect_with(back, true, &format!("container {} and its volume removed{host}", c.name)))
        }
        Err(ProviderError::Store(s)) => Err(DomainError::from(s).into()),
        Err(e) => Ok(redirect_with(back, false, &format!("container not removed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_land_by_their_field() {
        assert_eq!(ssh_field("invalid address \"a b\": use HOST, HOST:PORT or [IPv6]:PORT"), "addresses");
        assert_eq!(ssh_field("invalid user \"\""), "user");
        assert_eq!(ssh_field("auth needs private_key or password"), "auth");
        assert_eq!(ssh_field("cannot read the private key: bad"), "auth");
        assert_eq!(ssh_field("host_key_fingerprints names \"x\", which is not in addresses"), "fingerprints");
        assert_eq!(docker_field("cpus must be above 0 and at most 1024, got 0"), "cpus");
        assert_eq!(docker_field("memory must be at least 6 MiB (Docker's minimum), got 5"), "memory");
        assert_eq!(docker_field("the Docker engine at /x is not reachable: no such file"), "form");
        assert_eq!(docker_field("network n has no IPv4 gateway; give manager_url (...)"), "network");
    }

    #[test]
    fn enrolled_host_ids_are_read_from_messages() {
        assert_eq!(enrolled_host("enrolled as host h-1 (web1); Debian x86_64"), Some("h-1"));
        assert_eq!(enrolled_host("connecting"), None);
    }
}
