//! Providers: the manager creating and destroying hosts itself, instead of
//! waiting for agents someone else started. Today one provider, Docker
//! ([`docker`]): one call starts N agent containers with a fresh enrollment
//! token, one call removes them with their volumes and decommissions their
//! hosts. After enrollment such a host is like any other.
//!
//! Every container is recorded in the store (id, name, engine, owner, time)
//! and labelled `drover.owner=<CA fingerprint>` on the engine; a container is
//! only ever removed if both say this manager made it.

pub mod docker;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::AppState;
use crate::model::{Labels, now_millis, rfc3339};
use crate::store::{ProviderHostRec, StoreError};
use docker::{ContainerSpec, DockerClient, DockerError};
pub use drover_api::providers::{CreatedHosts, ProviderHostView};

/// The provider name in records, labels and routes.
pub const DOCKER: &str = "docker";
/// Image used when a request names none.
pub const DEFAULT_IMAGE: &str = "drover/agent:latest";
/// Where the agent image keeps its identity (a named volume per container).
pub const AGENT_DATA_DIR: &str = "/var/lib/drover-agent";
/// Most containers one request may create.
pub const MAX_COUNT: u32 = 100;
/// How long the enrollment token of a request stays valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Grace period between SIGTERM and SIGKILL when removing a container.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Host labels of the containers an instantiation makes for a host group:
/// they find an earlier run's containers again.
pub const HOST_LABEL_CLUSTER: &str = "cluster";
pub const HOST_LABEL_GROUP: &str = "host-group";

/// Docker labels on everything the provider creates.
pub const LABEL_OWNER: &str = "drover.owner";
pub const LABEL_CREATED_BY: &str = "drover.created_by";
pub const LABEL_CREATED_AT: &str = "drover.created_at";

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request cannot be done as asked (400).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Not this manager's container (403).
    #[error("{0}")]
    Forbidden(String),
    /// The engine failed or cannot be reached (503).
    #[error("{0}")]
    Engine(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asks, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: &'a str,
    granted: crate::domain::Granted<'a>,
}

impl<'a> Actor<'a> {
    /// Containers come and go only for a caller with `fleet.enroll`.
    pub fn authorize(actor: &'a crate::domain::Actor) -> crate::domain::Result<Actor<'a>> {
        let granted = actor.require(crate::domain::Permission::FleetEnroll, crate::domain::Scope::Global)?;
        Ok(Actor { user: &actor.username, granted })
    }

    fn audit(
        &self,
        action: &str,
        object_type: &str,
        object_id: &str,
        summary: impl Into<String>,
    ) -> crate::store::NewAudit {
        self.granted.audit(action, object_type, object_id, summary)
    }
}

/// A request for container hosts.
#[derive(Debug, Clone)]
pub struct CreateHosts {
    pub count: u32,
    pub image: String,
    pub network: String,
    pub labels: Labels,
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub name_prefix: String,
    pub manager_url: Option<String>,
}

fn engine_error(e: DockerError) -> ProviderError {
    match e {
        DockerError::Api { status, message } if (400..500).contains(&status) => ProviderError::Invalid(message),
        other => ProviderError::Engine(other.to_string()),
    }
}

fn client(state: &AppState) -> DockerClient {
    DockerClient::new(&state.config.docker_socket)
}

fn check_name_prefix(prefix: &str) -> Result<(), ProviderError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 40
        && prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
        && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Invalid(format!(
            "invalid name_prefix {prefix:?}: use 1-40 lowercase letters, digits or '-', starting with a letter or digit"
        )))
    }
}

/// The gRPC URL containers on `network` use: the request's, the flag's, or
/// `https://GATEWAY:PORT` when the manager's certificate names the gateway.
async fn manager_url(state: &AppState, docker: &DockerClient, req: &CreateHosts) -> Result<String, ProviderError> {
    if let Some(url) = req.manager_url.clone().or_else(|| state.config.docker_manager_url.clone()) {
        url.parse::<drover_proto::tls::ManagerAddr>()
            .map_err(|e| ProviderError::Invalid(format!("invalid manager_url {url:?}: {e}")))?;
        return Ok(url);
    }
    let gateway =
        docker.network_gateway(&req.network).await.map_err(|e| network_error(e, &req.network))?.ok_or_else(|| {
            ProviderError::Invalid(format!(
                "network {} has no IPv4 gateway; give manager_url (the manager's gRPC URL as the containers reach it)",
                req.network
            ))
        })?;
    if !state.config.advertise.iter().any(|a| a == &gateway) {
        return Err(ProviderError::Invalid(format!(
            "the manager's certificate does not name {gateway}, the gateway of network {}: start the manager with \
             --advertise {gateway} (and a --grpc-addr containers can reach), or give manager_url",
            req.network
        )));
    }
    Ok(format!("https://{gateway}:{}", state.config.grpc_addr.port()))
}

fn network_error(e: DockerError, network: &str) -> ProviderError {
    if e.is_not_found() {
        ProviderError::Invalid(format!(
            "network {network} not found on the engine; create it with docker network create"
        ))
    } else {
        engine_error(e)
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..6).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)])).collect()
}

/// Starts `count` agent containers and records them. All or nothing: when one
/// fails, the containers and volumes this call made are removed again and its
/// token is revoked.
pub async fn create_docker_hosts(
    state: &AppState,
    actor: Actor<'_>,
    req: CreateHosts,
) -> Result<CreatedHosts, ProviderError> {
    if !(1..=MAX_COUNT).contains(&req.count) {
        return Err(ProviderError::Invalid(format!("count must be between 1 and {MAX_COUNT}, got {}", req.count)));
    }
    check_name_prefix(&req.name_prefix)?;
    for (k, v) in &req.labels {
        drover_proto::labels::validate(k, v).map_err(|e| ProviderError::Invalid(e.to_string()))?;
    }
    if let Some(cpus) = req.cpus
        && !(cpus > 0.0 && cpus <= 1024.0)
    {
        return Err(ProviderError::Invalid(format!("cpus must be above 0 and at most 1024, got {cpus}")));
    }
    if let Some(memory) = req.memory
        && memory < 6 << 20
    {
        return Err(ProviderError::Invalid(format!("memory must be at least 6 MiB (Docker's minimum), got {memory}")));
    }
    check_image(state, &req.image).await?;
    let docker = client(state);
    let url = manager_url(state, &docker, &req).await?;

    let mut labels = req.labels.clone();
    labels.insert("provider".into(), DOCKER.into());
    let (token_rec, token) = crate::auth::issue_enrollment_token(
        &state.store,
        state.pki.ca_fingerprint(),
        actor.user,
        TOKEN_TTL,
        req.count,
        labels.clone(),
    )
    .await?;
    state
        .audit(actor.audit(
            "enrollment_token.create",
            "enrollment_token",
            &token_rec.id,
            format!(
                "created enrollment token for {} Docker container(s): ttl {}s, max_uses {}, labels {labels:?}",
                req.count,
                TOKEN_TTL.as_secs(),
                req.count
            ),
        ))
        .await;

    let owner = state.pki.ca_fingerprint().to_string();
    let now = now_millis();
    let mut made: Vec<ProviderHostRec> = Vec::new();
    for _ in 0..req.count {
        let name = format!("{}{}", req.name_prefix, random_suffix());
        let volume = format!("{name}-data");
        let docker_labels: BTreeMap<String, String> = [
            (LABEL_OWNER.to_owned(), owner.clone()),
            (LABEL_CREATED_BY.to_owned(), actor.user.to_owned()),
            (LABEL_CREATED_AT.to_owned(), rfc3339(now)),
        ]
        .into();
        let spec = ContainerSpec {
            name: name.clone(),
            hostname: name.clone(),
            image: req.image.clone(),
            network: req.network.clone(),
            env: vec![format!("DROVER_MANAGER={url}"), format!("DROVER_TOKEN={token}")],
            volume: (volume.clone(), AGENT_DATA_DIR.to_owned()),
            labels: docker_labels.clone(),
            cpus: req.cpus,
            memory: req.memory,
        };
        let result = async {
            docker.create_volume(&volume, &docker_labels).await?;
            docker.create_container(&spec).await
        }
        .await;
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                let _ = docker.remove_volume(&volume).await;
                undo(state, &docker, &made, &token_rec.id).await;
                return Err(match e {
                    e if e.is_not_found() => ProviderError::Invalid(format!("create container {name}: {e}")),
                    e => prefix(engine_error(e), &format!("create container {name}")),
                });
            }
        };
        let rec = ProviderHostRec {
            id: id.clone(),
            provider: DOCKER.into(),
            name: name.clone(),
            engine: docker.engine(),
            owner: owner.clone(),
            image: req.image.clone(),
            network: req.network.clone(),
            volume: volume.clone(),
            token_id: token_rec.id.clone(),
            labels: labels.clone(),
            created_by: actor.user.to_owned(),
            created_at: now,
            host_id: None,
        };
        // Recorded before it starts, so a failure below still cleans it up.
        if let Err(e) = state.store.insert_provider_host(&rec).await {
            let _ = docker.stop_and_remove(&id, STOP_GRACE).await;
            let _ = docker.remove_volume(&volume).await;
            undo(state, &docker, &made, &token_rec.id).await;
            return Err(e.into());
        }
        made.push(rec);
        if let Err(e) = docker.start_container(&id).await {
            undo(state, &docker, &made, &token_rec.id).await;
            return Err(prefix(engine_error(e), &format!("start container {name}")));
        }
        tracing::info!(container = %name, id = %&id[..12.min(id.len())], image = %req.image, "docker host created");
    }
    for rec in &made {
        state
            .audit(actor.audit(
                "provider.docker.create",
                "container",
                &rec.id,
                format!(
                    "started container {} from {} on network {} ({}), volume {}, labels {:?}",
                    rec.name, rec.image, rec.network, rec.engine, rec.volume, rec.labels
                ),
            ))
            .await;
    }
    let views = views(state, &docker, made).await?;
    Ok(CreatedHosts { token_id: token_rec.id, manager_url: url, items: views })
}

fn prefix(e: ProviderError, what: &str) -> ProviderError {
    match e {
        ProviderError::Invalid(m) => ProviderError::Invalid(format!("{what}: {m}")),
        ProviderError::Engine(m) => ProviderError::Engine(format!("{what}: {m}")),
        other => other,
    }
}

/// Removes what a failed create made, and revokes its token.
async fn undo(state: &AppState, docker: &DockerClient, made: &[ProviderHostRec], token_id: &str) {
    for rec in made {
        if let Err(e) = docker.stop_and_remove(&rec.id, Duration::ZERO).await {
            tracing::warn!(container = %rec.name, error = %e, "could not remove container after a failed create");
        }
        if let Err(e) = docker.remove_volume(&rec.volume).await {
            tracing::warn!(volume = %rec.volume, error = %e, "could not remove volume after a failed create");
        }
        let _ = state.store.delete_provider_host(&rec.id).await;
    }
    let _ = state.store.revoke_enrollment_token(token_id, now_millis()).await;
}

/// Each record with what the engine and the inventory say about it; records
/// the host id of containers that have enrolled since the last look.
async fn views(
    state: &AppState,
    docker: &DockerClient,
    recs: Vec<ProviderHostRec>,
) -> Result<Vec<ProviderHostView>, ProviderError> {
    let hosts = state.store.all_hosts().await?;
    let by_container: HashMap<&str, &crate::model::Host> =
        hosts.iter().filter(|h| !h.container_id.is_empty()).map(|h| (h.container_id.as_str(), h)).collect();
    let by_id: HashMap<&str, &crate::model::Host> = hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    let mut out = Vec::with_capacity(recs.len());
    for rec in recs {
        let container_status = match docker.inspect_container(&rec.id).await {
            Ok(Some(c)) => c.status,
            Ok(None) => "missing".into(),
            Err(e) => {
                tracing::warn!(container = %rec.name, error = %e, "could not inspect container");
                "unknown".into()
            }
        };
        let host = match &rec.host_id {
            Some(id) => by_id.get(id.as_str()).copied(),
            None => {
                let found = by_container.get(rec.id.as_str()).copied();
                if let Some(h) = found {
                    state.store.set_provider_host_id(&rec.id, &h.id).await?;
                }
                found
            }
        };
        out.push(ProviderHostView {
            container_status,
            host_id: host.map(|h| h.id.clone()),
            hostname: host.map(|h| h.hostname.clone()),
            host_status: host.map(|h| state.registry.host_status(&h.id).unwrap_or(h.status)),
            id: rec.id,
            name: rec.name,
            engine: rec.engine,
            owner: rec.owner,
            image: rec.image,
            network: rec.network,
            volume: rec.volume,
            labels: rec.labels,
            created_by: rec.created_by,
            created_at: rfc3339(rec.created_at),
        });
    }
    Ok(out)
}

/// Every container the Docker provider made, with status and host.
pub async fn list_docker_hosts(state: &AppState, _actor: Actor<'_>) -> Result<Vec<ProviderHostView>, ProviderError> {
    let recs = state.store.provider_hosts(DOCKER).await?;
    views(state, &client(state), recs).await
}

/// Removes one container (by id, id prefix of at least 12 digits, or name)
/// with its volume, and decommissions its host.
pub async fn delete_docker_host(
    state: &AppState,
    actor: Actor<'_>,
    id_or_name: &str,
) -> Result<ProviderHostView, ProviderError> {
    let recs = state.store.provider_hosts(DOCKER).await?;
    let rec = recs
        .into_iter()
        .find(|r| {
            r.id == id_or_name || r.name == id_or_name || (id_or_name.len() >= 12 && r.id.starts_with(id_or_name))
        })
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "container {id_or_name} not found among the containers this manager created \
                 (GET /api/v1/providers/docker/hosts lists them)"
            ))
        })?;
    let mut removed = remove(state, actor, vec![rec]).await?;
    removed.pop().ok_or_else(|| ProviderError::Engine("container vanished while removing it".into()))
}

/// Removes every container this manager made on the engine.
pub async fn delete_all_docker_hosts(
    state: &AppState,
    actor: Actor<'_>,
) -> Result<Vec<ProviderHostView>, ProviderError> {
    let recs = state.store.provider_hosts(DOCKER).await?;
    remove(state, actor, recs).await
}

/// The containers made for host group `group` of `cluster` (`None`: for
/// any group of it), oldest first.
pub async fn cluster_hosts(
    state: &AppState,
    cluster: &str,
    group: Option<&str>,
) -> Result<Vec<ProviderHostRec>, ProviderError> {
    let mut recs = state.store.provider_hosts(DOCKER).await?;
    recs.retain(|r| of_cluster(r, cluster, group));
    Ok(recs)
}

/// Whether a container was made for `cluster` (and host group `group`, if given).
pub fn of_cluster(r: &ProviderHostRec, cluster: &str, group: Option<&str>) -> bool {
    r.labels.get(HOST_LABEL_CLUSTER).map(String::as_str) == Some(cluster)
        && group.is_none_or(|g| r.labels.get(HOST_LABEL_GROUP).map(String::as_str) == Some(g))
}

/// The containers of `recs` with their status and hosts.
pub async fn describe(state: &AppState, recs: Vec<ProviderHostRec>) -> Result<Vec<ProviderHostView>, ProviderError> {
    views(state, &client(state), recs).await
}

/// Checks that the engine answers and has `image`, before anything is made.
pub async fn check_image(state: &AppState, image: &str) -> Result<(), ProviderError> {
    let docker = client(state);
    docker.ping().await.map_err(engine_error)?;
    if docker.has_image(image).await.map_err(engine_error)? {
        Ok(())
    } else {
        Err(ProviderError::Invalid(format!(
            "image {image} not found on the engine; build it with scripts/build-images.sh"
        )))
    }
}

/// Removes these containers with their volumes and decommissions their
/// hosts (all of them this manager's, or nothing is removed).
pub async fn remove_hosts(
    state: &AppState,
    actor: Actor<'_>,
    recs: Vec<ProviderHostRec>,
) -> Result<Vec<ProviderHostView>, ProviderError> {
    remove(state, actor, recs).await
}

async fn remove(
    state: &AppState,
    actor: Actor<'_>,
    recs: Vec<ProviderHostRec>,
) -> Result<Vec<ProviderHostView>, ProviderError> {
    let docker = client(state);
    let owner = state.pki.ca_fingerprint().to_string();
    // Ownership first, for all of them, so a refusal removes nothing.
    let mut views = views(state, &docker, recs.clone()).await?;
    for rec in &recs {
        if rec.owner != owner {
            return Err(ProviderError::Forbidden(format!(
                "container {} was created by another manager (owner {}); this one is {owner}",
                rec.name, rec.owner
            )));
        }
        if let Some(c) = docker.inspect_container(&rec.id).await.map_err(engine_error)?
            && c.labels.get(LABEL_OWNER) != Some(&owner)
        {
            return Err(ProviderError::Forbidden(format!(
                "container {} on the engine is not labelled {LABEL_OWNER}={owner}; it was not created by this \
                 manager and is left alone",
                rec.name
            )));
        }
    }
    // The engine stops them side by side: each may take its grace period.
    let removed = futures::future::join_all(recs.iter().map(|rec| {
        let docker = &docker;
        async move {
            docker
                .stop_and_remove(&rec.id, STOP_GRACE)
                .await
                .map_err(|e| prefix(engine_error(e), &format!("remove container {}", rec.name)))?;
            docker.remove_volume(&rec.volume).await.map_err(|e| {
                prefix(engine_error(e), &format!("remove volume {} of container {}", rec.volume, rec.name))
            })
        }
    }))
    .await;
    for ((rec, view), result) in recs.iter().zip(views.iter_mut()).zip(removed) {
        result?;
        if let Some(host_id) = &view.host_id
            && let Some(before) = state.store.decommission_host(host_id, actor.user, now_millis()).await?
            && before.status != crate::model::HostStatus::Decommissioned
        {
            state.registry.decommission(host_id);
            state
                .audit(actor.audit(
                    "host.decommission",
                    "host",
                    host_id,
                    format!(
                        "decommissioned host {} (was {}) with its container {}; certificate {} revoked",
                        before.hostname,
                        before.status.as_str(),
                        rec.name,
                        before.cert_serial
                    ),
                ))
                .await;
            view.host_status = Some(crate::model::HostStatus::Decommissioned);
        }
        state.store.delete_provider_host(&rec.id).await?;
        view.container_status = "removed".into();
        state
            .audit(actor.audit(
                "provider.docker.delete",
                "container",
                &rec.id,
                format!("removed container {} and volume {} ({})", rec.name, rec.volume, rec.engine),
            ))
            .await;
        tracing::info!(container = %rec.name, host = ?view.host_id, "docker host removed");
    }
    // A token whose containers are all gone must not enroll anything else.
    let remaining = state.store.provider_hosts(DOCKER).await?;
    let mut tokens: Vec<&str> = recs.iter().map(|r| r.token_id.as_str()).collect();
    tokens.sort();
    tokens.dedup();
    for token in tokens {
        if !remaining.iter().any(|r| r.token_id == token) {
            state.store.revoke_enrollment_token(token, now_millis()).await?;
        }
    }
    Ok(views)
}

/// Where a snapshot keeps the roles' data inside the container's own
/// filesystem: the agent's data dir is a volume, which `docker commit` does
/// not take.
pub const SNAPSHOT_DIR: &str = "/var/lib/drover-snapshot";
/// Longest a copy inside a container may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);

/// Commits one of this manager's containers to the image `repo:tag` with its
/// roles' data (copied from the agent's volume into [`SNAPSHOT_DIR`] first,
/// removed again after), stopping nothing. Returns the image reference.
pub async fn snapshot_container(
    state: &AppState,
    rec: &ProviderHostRec,
    repo: &str,
    tag: &str,
) -> Result<String, ProviderError> {
    let docker = client(state);
    let what = |e: DockerError, step: &str| prefix(engine_error(e), &format!("{step} container {}", rec.name));
    let copy = format!(
        "rm -rf {SNAPSHOT_DIR} && mkdir -p {SNAPSHOT_DIR}/roles && \
         if [ -d {AGENT_DATA_DIR}/roles ]; then cp -a {AGENT_DATA_DIR}/roles/. {SNAPSHOT_DIR}/roles/; fi"
    );
    docker.exec(&rec.id, &["sh", "-c", &copy], COPY_TIMEOUT).await.map_err(|e| what(e, "copy role data in"))?;
    let committed = docker.commit(&rec.id, repo, tag).await.map_err(|e| what(e, "commit"));
    let _ = docker.exec(&rec.id, &["rm", "-rf", SNAPSHOT_DIR], COPY_TIMEOUT).await;
    committed?;
    Ok(format!("{repo}:{tag}"))
}

/// Puts the data a snapshot image holds for role `old` (under
/// [`SNAPSHOT_DIR`]) into the directory of role `new` in the container,
/// keeping files already there (the configuration the agent rendered).
pub async fn restore_role_data(
    state: &AppState,
    rec: &ProviderHostRec,
    moves: &[(String, String)],
) -> Result<(), ProviderError> {
    let docker = client(state);
    for (old, new) in moves {
        // Role ids are UUIDs the manager made; nothing else goes into a path.
        for id in [old, new] {
            uuid::Uuid::parse_str(id).map_err(|_| ProviderError::Invalid(format!("role id {id:?} is not a UUID")))?;
        }
        let from = format!("{SNAPSHOT_DIR}/roles/{old}/.");
        let to = format!("{AGENT_DATA_DIR}/roles/{new}/");
        let what = |e: DockerError| prefix(engine_error(e), &format!("restore role data in container {}", rec.name));
        docker.exec(&rec.id, &["mkdir", "-p", &to], COPY_TIMEOUT).await.map_err(what)?;
        docker.exec(&rec.id, &["cp", "-a", "-n", &from, &to], COPY_TIMEOUT).await.map_err(what)?;
    }
    Ok(())
}

/// Removes a snapshot's image; one already gone is not an error.
pub async fn remove_image(state: &AppState, image: &str) -> Result<(), ProviderError> {
    client(state).remove_image(image).await.map_err(|e| prefix(engine_error(e), &format!("remove image {image}")))
}
