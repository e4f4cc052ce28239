//! A stored template made a cluster, as one command: create the containers
//! of host groups a provider makes and wait for them to enroll, create the
//! cluster if missing, add the hosts, distribute and activate the parcels, create the
//! services and role groups, apply the configuration (one revision per
//! service), add the roles of each host group on each of its hosts, start
//! every service in dependency order.
//!
//! Everything is checked before the command starts (the template with its
//! variables substituted, the hosts of each host group, the parcels in the
//! repository, the cluster as it is), so a refused instantiation creates
//! nothing. Every step creates only what is missing, so running the same
//! instantiation again after a failure converges and never duplicates: an
//! earlier run's containers are found again by their labels, and those that
//! stopped or never enrolled are replaced.
//! Each step calls the domain function a user's own request would
//! (`clusters::create`, `services::create`, `roles::create`, ...), with the
//! caller's permissions and audit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_api::templates::{HostGroupHosts, Instantiate, Template, var_ref};
use drover_service_types::config::{Level, validate_patch};
use serde_json::{Value, json};

use super::validate::{Mode, Problem, validate};
use super::{StoredTemplate, invalid, start_order};
use crate::AppState;
use crate::domain::commands::{CommandView, view};
use crate::domain::{Actor, DomainError, Permission, Result, Scope, clusters, config, roles, services, validate_name};
use crate::model::{HostStatus, now_millis};
use crate::parcel_commands::{self, Phase};
use crate::placement::{Candidate, Placement};
use crate::providers::{self, CreateHosts, HOST_LABEL_CLUSTER, HOST_LABEL_GROUP};
use crate::store::{CommandRec, StepRec};

/// The name of the commands this starts.
pub const COMMAND: &str = "instantiate";

/// `t` with the variables substituted: the given value, else the default.
/// Problems: a given variable the template does not declare, a variable
/// without a default that is not given.
pub fn substitute(t: &Template, given: &BTreeMap<String, Value>) -> (Template, Vec<Problem>) {
    let mut problems = Vec::new();
    for (k, v) in given {
        if !t.variables.iter().any(|d| &d.name == k) {
            problems.push(Problem {
                path: format!("variables.{k}"),
                message: format!("template {} has no variable {k}", t.name),
            });
        } else if v.is_null() {
            problems.push(Problem { path: format!("variables.{k}"), message: "null is not a value".into() });
        }
    }
    let mut values: BTreeMap<&str, Value> = BTreeMap::new();
    for d in &t.variables {
        match given.get(&d.name).filter(|v| !v.is_null()).or(d.default.as_ref()) {
            Some(v) => {
                values.insert(&d.name, v.clone());
            }
            None => problems.push(Problem {
                path: format!("variables.{}", d.name),
                message: format!(
                    "is required: {}give its value{}",
                    if d.sensitive { "a sensitive variable has no default; " } else { "" },
                    if d.description.is_empty() { String::new() } else { format!(" ({})", d.description) }
                ),
            }),
        }
    }
    let mut out = t.clone();
    let fill = |config: &mut BTreeMap<String, Value>| {
        for v in config.values_mut() {
            if let Some(name) = var_ref(v)
                && let Some(value) = values.get(name)
            {
                *v = value.clone();
            }
        }
    };
    for s in &mut out.services {
        fill(&mut s.config);
        for g in &mut s.groups {
            fill(&mut g.config);
        }
    }
    out.variables.clear();
    (out, problems)
}

/// What an instantiation will do, all checked.
struct Plan {
    template: StoredTemplate,
    concrete: Template,
    cluster: String,
    /// Host ids by host group name.
    hosts: BTreeMap<String, Vec<String>>,
    /// Every host of the cluster-to-be, in order.
    all_hosts: Vec<String>,
    hostnames: HashMap<String, String>,
    /// Host groups whose containers the Docker provider makes, with what
    /// each asks for (`count` containers in all).
    provided: BTreeMap<String, CreateHosts>,
    /// Role data to put back before the roles start (a snapshot's).
    restore: Restore,
}

/// Per provided host group (one container each, from a snapshot's image):
/// `(service, role type, role id)` of each role whose data the image holds
/// under that id.
pub type Restore = BTreeMap<String, Vec<(String, String, String)>>;

/// Checks an instantiation completely and starts its command.
pub async fn instantiate(state: &Arc<AppState>, actor: &Actor, name: &str, req: Instantiate) -> Result<CommandView> {
    instantiate_restoring(state, actor, name, req, Restore::new()).await
}

/// [`instantiate`], putting a snapshot's role data back into the roles of
/// the provided host groups of `restore` before they start.
pub async fn instantiate_restoring(
    state: &Arc<AppState>,
    actor: &Actor,
    name: &str,
    req: Instantiate,
    restore: Restore,
) -> Result<CommandView> {
    let cluster = req.cluster.clone();
    // Hosts come from the fleet: adding them to a cluster needs hosts.write
    // globally, the widest of the permissions an instantiation needs.
    let granted = actor.require(Permission::HostsWrite, Scope::Global)?;
    validate_name("cluster", &cluster)?;
    actor.require(Permission::ServicesWrite, Scope::Cluster(&cluster))?;
    let exists = state.store.cluster(&cluster).await?.is_some();
    if !exists {
        actor.require(Permission::ClustersWrite, Scope::Global)?;
    }
    actor.require(Permission::ConfigWrite, Scope::Cluster(&cluster))?;
    actor.require(Permission::CommandsRun, Scope::Cluster(&cluster))?;
    if req.host_groups.values().any(|h| matches!(h, HostGroupHosts::Provider { .. })) {
        providers::Actor::authorize(actor)?;
    }
    let template = super::load(state, name, req.version).await?;
    if !template.document.parcels.is_empty() {
        actor.require(Permission::ParcelsWrite, Scope::Cluster(&cluster))?;
    }
    if let Some(running) =
        state.store.commands_in_state("running").await?.into_iter().find(|c| c.cluster == cluster && c.name == COMMAND)
    {
        return Err(DomainError::Conflict(format!(
            "an instantiation into cluster {cluster} is running (command {}); wait for it or abort it",
            running.id
        )));
    }
    let mut plan = check(state, template, &cluster, exists, &req).await?;
    if let Some(g) = restore.keys().find(|g| !plan.provided.contains_key(*g)) {
        return Err(DomainError::Invalid(format!("host group {g} has role data to restore but no new containers")));
    }
    plan.restore = restore;
    start(state, actor, granted, plan).await
}

/// Everything checked before anything is created.
async fn check(
    state: &AppState,
    template: StoredTemplate,
    cluster: &str,
    exists: bool,
    req: &Instantiate,
) -> Result<Plan> {
    let (mut concrete, mut problems) = substitute(&template.document, &req.variables);
    let mut hosts = resolve_hosts(state, &concrete, cluster, exists, &req.host_groups, &mut problems).await?;
    let (provided, engine) = provided_groups(state, &concrete, cluster, &req.host_groups, &mut problems).await;
    for hg in &mut concrete.host_groups {
        if let Some(p) = provided.get(&hg.name) {
            hg.cardinality = p.count;
            hosts.insert(hg.name.clone(), Vec::new());
        } else if let Some(h) = hosts.get(&hg.name) {
            hg.cardinality = h.len() as u32;
        }
    }
    if problems.is_empty() {
        problems.extend(validate(&state.catalog, &concrete, Mode::Concrete));
    }
    for (i, p) in concrete.parcels.iter().enumerate() {
        if state.parcels.find(&p.name, &p.version).is_none() {
            problems.push(Problem {
                path: format!("parcels[{i}]"),
                message: format!(
                    "no parcel {} {} in the manager's repository or any followed repository; upload it first",
                    p.name, p.version
                ),
            });
        }
    }
    if exists {
        cluster_as_it_is(state, &concrete, cluster, &hosts, &mut problems).await?;
    }
    if !problems.is_empty() {
        return Err(invalid(&template.name, &problems));
    }
    if let Some(e) = engine {
        return Err(DomainError::Unavailable(e));
    }
    let mut all_hosts: Vec<String> = Vec::new();
    for hg in &concrete.host_groups {
        for h in hosts.get(&hg.name).into_iter().flatten() {
            if !all_hosts.contains(h) {
                all_hosts.push(h.clone());
            }
        }
    }
    let hostnames =
        state.store.host_addresses(&all_hosts).await?.into_iter().map(|(id, (hostname, _))| (id, hostname)).collect();
    Ok(Plan {
        template,
        concrete,
        cluster: cluster.to_owned(),
        hosts,
        all_hosts,
        hostnames,
        provided,
        restore: Restore::new(),
    })
}

/// What each host group the Docker provider makes asks for, checked: the
/// count, the limits, the image on the engine. The containers are labelled
/// with the cluster, the group and the group selector's `k=v` terms, so they
/// match the selector and a later run finds them. Also answers why the
/// engine could not be asked, if it could not (a 503 unless the request has
/// problems of its own).
async fn provided_groups(
    state: &AppState,
    t: &Template,
    cluster: &str,
    choices: &BTreeMap<String, HostGroupHosts>,
    problems: &mut Vec<Problem>,
) -> (BTreeMap<String, CreateHosts>, Option<String>) {
    let mut out = BTreeMap::new();
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for hg in &t.host_groups {
        let Some(HostGroupHosts::Provider { provider: _, count, image, network, cpus, memory }) = choices.get(&hg.name)
        else {
            continue;
        };
        let path = format!("host_groups.{}", hg.name);
        let count = count.unwrap_or(hg.cardinality);
        if !(1..=providers::MAX_COUNT).contains(&count) {
            problems.push(Problem {
                path: format!("{path}.count"),
                message: format!("must be between 1 and {}, got {count}", providers::MAX_COUNT),
            });
        }
        let memory = match memory {
            None => None,
            Some(drover_api::providers::Memory::Bytes(b)) => Some(*b),
            Some(drover_api::providers::Memory::Text(t)) => match providers::docker::parse_memory(t) {
                Ok(b) => Some(b),
                Err(e) => {
                    problems.push(Problem { path: format!("{path}.memory"), message: e });
                    None
                }
            },
        };
        let mut labels = crate::model::Labels::new();
        if let Some(sel) = hg.selector.as_deref().and_then(|s| drover_proto::labels::parse_selector(s).ok()) {
            labels.extend(sel.equalities().map(|(k, v)| (k.to_owned(), v.to_owned())));
        }
        labels.insert(HOST_LABEL_CLUSTER.into(), cluster.to_owned());
        labels.insert(HOST_LABEL_GROUP.into(), hg.name.clone());
        let image = image.clone().unwrap_or_else(|| providers::DEFAULT_IMAGE.to_owned());
        images.entry(image.clone()).or_default().push(format!("{path}.image"));
        out.insert(
            hg.name.clone(),
            CreateHosts {
                count,
                image,
                network: network.clone().unwrap_or_else(|| "bridge".to_owned()),
                labels,
                cpus: *cpus,
                memory,
                name_prefix: name_prefix(cluster, &hg.name),
                manager_url: None,
            },
        );
    }
    let mut engine = None;
    for (image, paths) in images {
        match providers::check_image(state, &image).await {
            Ok(()) => {}
            Err(providers::ProviderError::Engine(e)) => engine = Some(e),
            Err(e) => problems.push(Problem { path: paths[0].clone(), message: e.to_string() }),
        }
    }
    (out, engine)
}

/// `CLUSTER-GROUP-`, as a container name prefix (at most 40 characters).
fn name_prefix(cluster: &str, group: &str) -> String {
    let clean = |s: &str, n: usize| -> String {
        let s: String =
            s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(n).collect();
        s.trim_matches('-').to_owned()
    };
    format!("{}-{}-", clean(cluster, 20), clean(group, 18))
}

/// The hosts of every host group: named ones as given (by id or hostname),
/// the others picked among healthy hosts matching the selector (hosts that
/// already run the group's roles in the cluster first, so a second run
/// picks the same hosts). No host is in two groups.
async fn resolve_hosts(
    state: &AppState,
    t: &Template,
    cluster: &str,
    exists: bool,
    choices: &BTreeMap<String, HostGroupHosts>,
    problems: &mut Vec<Problem>,
) -> Result<BTreeMap<String, Vec<String>>> {
    for g in choices.keys() {
        if !t.host_groups.iter().any(|hg| &hg.name == g) {
            problems.push(Problem {
                path: format!("host_groups.{g}"),
                message: format!("template {} has no host group {g}", t.name),
            });
        }
    }
    let all = state.store.all_hosts().await?;
    let status = |h: &crate::model::Host| state.registry.host_status(&h.id).unwrap_or(h.status);
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Named hosts first, so selectors pick around them.
    for hg in &t.host_groups {
        let Some(HostGroupHosts::Hosts { hosts }) = choices.get(&hg.name) else { continue };
        let path = format!("host_groups.{}.hosts", hg.name);
        if hosts.is_empty() {
            problems.push(Problem { path: path.clone(), message: "no hosts given".into() });
        }
        let mut ids = Vec::new();
        for (i, given) in hosts.iter().enumerate() {
            let Some(h) = all.iter().find(|h| &h.id == given).or_else(|| all.iter().find(|h| &h.hostname == given))
            else {
                problems.push(Problem {
                    path: format!("{path}[{i}]"),
                    message: format!("no host has id or hostname {given:?}"),
                });
                continue;
            };
            if status(h) == HostStatus::Decommissioned {
                problems.push(Problem {
                    path: format!("{path}[{i}]"),
                    message: format!("host {} ({}) is decommissioned", h.hostname, h.id),
                });
            } else if let Some(other) = used.insert(h.id.clone(), hg.name.clone()) {
                problems.push(Problem {
                    path: format!("{path}[{i}]"),
                    message: format!("host {} is already in host group {other}", h.hostname),
                });
            } else {
                ids.push(h.id.clone());
            }
        }
        out.insert(hg.name.clone(), ids);
    }
    // Hosts already running a group's roles in the cluster.
    let mut running: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    if exists {
        for s in &t.services {
            for r in state.store.roles_of_service(cluster, &s.name).await? {
                running.entry((s.name.clone(), r.role_type.clone())).or_default().insert(r.host_id);
            }
        }
    }
    let totals = state.store.role_counts_by_host().await?;
    for hg in &t.host_groups {
        let (selector, count) = match choices.get(&hg.name) {
            Some(HostGroupHosts::Hosts { .. } | HostGroupHosts::Provider { .. }) => continue,
            Some(HostGroupHosts::Selector { selector, count }) => {
                (selector.clone().or_else(|| hg.selector.clone()), count.unwrap_or(hg.cardinality))
            }
            None => (hg.selector.clone(), hg.cardinality),
        };
        let path = format!("host_groups.{}", hg.name);
        let text = selector.unwrap_or_default();
        let selector = match drover_proto::labels::parse_selector(&text) {
            Ok(s) => s,
            Err(e) => {
                problems.push(Problem { path: format!("{path}.selector"), message: e.to_string() });
                continue;
            }
        };
        if count == 0 {
            problems.push(Problem { path: format!("{path}.count"), message: "must be at least 1".into() });
            continue;
        }
        let usable = |h: &&crate::model::Host| {
            !used.contains_key(&h.id) && selector.matches(&h.labels) && status(h) != HostStatus::Decommissioned
        };
        let mut picked: Vec<String> = all
            .iter()
            .filter(usable)
            .filter(|h| status(h) == HostStatus::Healthy)
            .filter(|h| {
                hg.roles.iter().all(|r| {
                    running.get(&(r.service.clone(), r.role_type.clone())).is_some_and(|hs| hs.contains(&h.id))
                })
            })
            .map(|h| h.id.clone())
            .take(count as usize)
            .collect();
        let candidates = all
            .iter()
            .filter(usable)
            .filter(|h| !picked.contains(&h.id))
            .map(|h| Candidate {
                id: h.id.clone(),
                hostname: h.hostname.clone(),
                status: status(h),
                labels: h.labels.clone(),
                service_roles: 0,
                total_roles: totals.get(&h.id).copied().unwrap_or_default(),
            })
            .collect();
        let wanted = count as usize - picked.len();
        match Placement::new(candidates).pick(&selector, wanted) {
            Ok(more) => picked.extend(more),
            Err(mut e) => {
                e.needed = count as usize;
                problems.push(Problem { path, message: format!("host group {} {}", hg.name, e.describe()) });
                continue;
            }
        }
        for h in &picked {
            used.insert(h.clone(), hg.name.clone());
        }
        out.insert(hg.name.clone(), picked);
    }
    Ok(out)
}

/// What the existing cluster forbids: a service of the same name and
/// another type, a role group of another role type, more roles of a type
/// than it allows once the missing ones are added.
async fn cluster_as_it_is(
    state: &AppState,
    t: &Template,
    cluster: &str,
    hosts: &BTreeMap<String, Vec<String>>,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    for (i, s) in t.services.iter().enumerate() {
        let Some(existing) = state.store.service(cluster, &s.name).await? else { continue };
        if existing.service_type != s.service_type {
            problems.push(Problem {
                path: format!("services[{i}].type"),
                message: format!(
                    "cluster {cluster} has a service {} of type {}; the template's is of type {}",
                    s.name, existing.service_type, s.service_type
                ),
            });
            continue;
        }
        let groups = state.store.role_groups(cluster, &s.name).await?;
        for (j, g) in s.groups.iter().enumerate() {
            if let Some((rt, _)) = groups.iter().find(|(rt, name)| name == &g.name && rt != &g.role_type) {
                problems.push(Problem {
                    path: format!("services[{i}].groups[{j}]"),
                    message: format!("service {} has a role group {} of role type {rt}", s.name, g.name),
                });
            }
        }
        let Some(st) = state.catalog.get(&s.service_type) else { continue };
        let roles = state.store.roles_of_service(cluster, &s.name).await?;
        for rt in &st.role_types {
            let Some(max) = rt.max_instances else { continue };
            let mut on: BTreeSet<&str> =
                roles.iter().filter(|r| r.role_type == rt.name).map(|r| r.host_id.as_str()).collect();
            for hg in &t.host_groups {
                if hg.roles.iter().any(|r| r.service == s.name && r.role_type == rt.name) {
                    on.extend(hosts.get(&hg.name).into_iter().flatten().map(String::as_str));
                }
            }
            if on.len() as u32 > max {
                problems.push(Problem {
                    path: format!("services[{i}]"),
                    message: format!(
                        "service {} of cluster {cluster} would have {} {} roles (it has {} on other hosts); \
                         the type allows at most {max}",
                        s.name,
                        on.len(),
                        rt.name,
                        roles.iter().filter(|r| r.role_type == rt.name).count()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A step of the command and what it does.
#[derive(Debug, Clone)]
enum Stage {
    /// Containers of the provided host groups; then the steps of `slots`
    /// learn their hosts, and so does the `Hosts` step.
    Provision {
        slots: Vec<Slot>,
        hosts_step: u32,
    },
    Cluster,
    Hosts,
    Parcel {
        phase: Phase,
        name: String,
        version: String,
        seqs: Vec<u32>,
    },
    Service(usize),
    Config(usize),
    Roles(usize),
    /// The snapshot's role data into the new roles' directories.
    Restore,
    Start(usize),
}

/// A parcel step planned for the `index`th container of a provided group.
#[derive(Debug, Clone)]
struct Slot {
    seq: u32,
    group: String,
    index: usize,
    phase: Phase,
    parcel: String,
    version: String,
}

async fn start(
    state: &Arc<AppState>,
    actor: &Actor,
    granted: crate::domain::Granted<'_>,
    plan: Plan,
) -> Result<CommandView> {
    let t = &plan.concrete;
    let cluster = &plan.cluster;
    let order = start_order(&state.catalog, t);
    let mut steps: Vec<StepRec> = Vec::new();
    let mut stages: Vec<(u32, Stage)> = Vec::new();
    fn step(steps: &mut Vec<StepRec>, description: String, roles: Vec<String>) -> u32 {
        let seq = steps.len() as u32 + 1;
        steps.push(StepRec::pending(seq, description, roles));
        seq
    }
    let provision = (!plan.provided.is_empty()).then(|| {
        let groups: Vec<String> = plan.provided.iter().map(|(g, p)| format!("{g} ({})", p.count)).collect();
        let description =
            format!("create Docker containers for host groups {} and wait for them to enroll", groups.join(", "));
        step(&mut steps, description, Vec::new())
    });
    let seq = step(&mut steps, format!("create cluster {cluster} unless it exists"), Vec::new());
    stages.push((seq, Stage::Cluster));
    let seq = step(&mut steps, hosts_step_description(&plan, false), Vec::new());
    stages.push((seq, Stage::Hosts));
    let hosts_step = seq;
    let mut slots = Vec::new();
    let any_hosts = !plan.all_hosts.is_empty() || !plan.provided.is_empty();
    for phase in [Phase::Distribute, Phase::Activate] {
        for p in t.parcels.iter().filter(|_| any_hosts) {
            let mut seqs = Vec::new();
            for h in &plan.all_hosts {
                let hostname = plan.hostnames.get(h).map(String::as_str).unwrap_or(h);
                let description = parcel_commands::step_description(phase, &p.name, &p.version, h, hostname);
                seqs.push(step(&mut steps, description, vec![h.clone()]));
            }
            for (group, req) in &plan.provided {
                for index in 0..req.count as usize {
                    let description = format!(
                        "{} parcel {} {} on container {} of host group {group}",
                        phase.as_str(),
                        p.name,
                        p.version,
                        index + 1
                    );
                    let seq = step(&mut steps, description, Vec::new());
                    seqs.push(seq);
                    slots.push(Slot {
                        seq,
                        group: group.clone(),
                        index,
                        phase,
                        parcel: p.name.clone(),
                        version: p.version.clone(),
                    });
                }
            }
            let stage = Stage::Parcel { phase, name: p.name.clone(), version: p.version.clone(), seqs: seqs.clone() };
            stages.push((seqs[0], stage));
        }
    }
    for &i in &order {
        let s = &t.services[i];
        let groups: Vec<&str> = s.groups.iter().map(|g| g.name.as_str()).collect();
        let with = if groups.is_empty() { String::new() } else { format!(" with role groups {}", groups.join(", ")) };
        let seq = step(&mut steps, format!("create {} service {}{with}", s.service_type, s.name), Vec::new());
        stages.push((seq, Stage::Service(i)));
    }
    let message = format!("template {} version {}", plan.template.name, plan.template.version);
    for &i in &order {
        let seq = step(&mut steps, format!("configure service {} ({message})", t.services[i].name), Vec::new());
        stages.push((seq, Stage::Config(i)));
    }
    for &i in &order {
        let s = &t.services[i];
        let placed: Vec<String> = t
            .host_groups
            .iter()
            .filter(|hg| hg.roles.iter().any(|r| r.service == s.name))
            .map(|hg| {
                let n = plan
                    .provided
                    .get(&hg.name)
                    .map_or_else(|| plan.hosts.get(&hg.name).map_or(0, Vec::len), |p| p.count as usize);
                format!("{} ({n} host{})", hg.name, if n == 1 { "" } else { "s" })
            })
            .collect();
        if placed.is_empty() {
            continue;
        }
        let seq = step(
            &mut steps,
            format!("add roles of service {} on host groups {}", s.name, placed.join(", ")),
            Vec::new(),
        );
        stages.push((seq, Stage::Roles(i)));
    }
    if !plan.restore.is_empty() {
        let groups: Vec<&str> = plan.restore.keys().map(String::as_str).collect();
        let description = format!("put the snapshot's role data back on host groups {}", groups.join(", "));
        let seq = step(&mut steps, description, Vec::new());
        stages.push((seq, Stage::Restore));
    }
    for &i in &order {
        let seq = step(&mut steps, format!("start service {}", t.services[i].name), Vec::new());
        stages.push((seq, Stage::Start(i)));
    }
    if let Some(seq) = provision {
        stages.insert(0, (seq, Stage::Provision { slots, hosts_step }));
    }
    let cmd = CommandRec {
        id: uuid::Uuid::new_v4().to_string(),
        cluster: cluster.clone(),
        service: String::new(),
        name: COMMAND.to_owned(),
        params: json!({
            "template": plan.template.name,
            "version": plan.template.version,
            "host_groups": plan.hosts,
            "provided": plan.provided.iter().map(|(g, p)| (g.clone(), json!({"count": p.count, "image": p.image}))).collect::<BTreeMap<_, _>>(),
        }),
        state: "running".into(),
        message: String::new(),
        created_by: actor.username.clone(),
        created_at: now_millis(),
        finished_at: None,
    };
    state.store.insert_command(&cmd, &steps).await?;
    state
        .audit(granted.audit(
            "template.instantiate",
            "cluster",
            cluster,
            format!("{message} into cluster {cluster} (command {}, {} steps)", cmd.id, steps.len()),
        ))
        .await;
    let out = view(&cmd, &steps);
    state.commands.flag(&cmd.id);
    tokio::spawn(execute(state.clone(), actor.clone(), plan, cmd, steps, stages));
    Ok(out)
}

/// "add hosts a, b and the containers of host groups g (3) to cluster c".
fn hosts_step_description(plan: &Plan, provided_known: bool) -> String {
    let mut names: Vec<String> =
        plan.all_hosts.iter().map(|h| plan.hostnames.get(h).cloned().unwrap_or_else(|| h.clone())).collect();
    if !plan.provided.is_empty() && !provided_known {
        let groups: Vec<String> = plan.provided.iter().map(|(g, p)| format!("{g} ({})", p.count)).collect();
        names.push(format!("the containers of host groups {}", groups.join(", ")));
    }
    format!("add hosts {} to cluster {}", names.join(", "), plan.cluster)
}

/// Runs the stages in order; spawned once per command.
async fn execute(
    state: Arc<AppState>,
    actor: Actor,
    mut plan: Plan,
    cmd: CommandRec,
    mut steps: Vec<StepRec>,
    stages: Vec<(u32, Stage)>,
) {
    let abort = state.commands.flag(&cmd.id);
    let mut outcome: (&str, String) = ("succeeded", format!("{} finished", cmd.name));
    let mut failed_at = None;
    for (i, (seq, stage)) in stages.iter().enumerate() {
        if abort.load(Ordering::SeqCst) {
            outcome = ("aborted", "aborted by user".into());
            failed_at = Some(i);
            break;
        }
        let result = match stage {
            Stage::Parcel { phase, name, version, seqs } => {
                let group: Vec<StepRec> = steps.iter().filter(|s| seqs.contains(&s.seq)).cloned().collect();
                parcel_commands::run_phase(&state, &cmd, *phase, name, version, &group, &abort)
                    .await
                    .map_err(|e| format!("{} {name} {version}: {e}", phase.as_str()))
            }
            Stage::Provision { slots, hosts_step } => {
                let _ = state.store.update_step(&cmd.id, *seq, "running", "", Some(now_millis()), None).await;
                match provision(&state, &actor, &mut plan, &cmd, *seq, &abort).await {
                    Ok(msg) => {
                        retarget(&state, &plan, &cmd, &mut steps, slots, *hosts_step).await;
                        let _ =
                            state.store.update_step(&cmd.id, *seq, "succeeded", &msg, None, Some(now_millis())).await;
                        Ok(())
                    }
                    Err(msg) => {
                        let _ = state.store.update_step(&cmd.id, *seq, "failed", &msg, None, Some(now_millis())).await;
                        Err(format!("step {seq} (containers) failed: {msg}"))
                    }
                }
            }
            other => {
                let _ = state.store.update_step(&cmd.id, *seq, "running", "", Some(now_millis()), None).await;
                match run(&state, &actor, &plan, other, &abort).await {
                    Ok(msg) => {
                        let _ =
                            state.store.update_step(&cmd.id, *seq, "succeeded", &msg, None, Some(now_millis())).await;
                        Ok(())
                    }
                    Err(msg) => {
                        let _ = state.store.update_step(&cmd.id, *seq, "failed", &msg, None, Some(now_millis())).await;
                        let description = steps.iter().find(|s| s.seq == *seq).map(|s| s.description.as_str());
                        Err(format!("step {seq} ({}) failed: {msg}", description.unwrap_or_default()))
                    }
                }
            }
        };
        if let Err(msg) = result {
            outcome = if abort.load(Ordering::SeqCst) { ("aborted", msg) } else { ("failed", msg) };
            failed_at = Some(i + 1);
            break;
        }
    }
    if let Some(from) = failed_at {
        for (seq, stage) in &stages[from..] {
            let seqs = match stage {
                Stage::Parcel { seqs, .. } => seqs.clone(),
                _ => vec![*seq],
            };
            for seq in seqs {
                let _ = state.store.update_step(&cmd.id, seq, "skipped", "an earlier step failed", None, None).await;
            }
        }
    }
    if let Err(e) = state.store.finish_command(&cmd.id, outcome.0, &outcome.1, now_millis()).await {
        tracing::error!(command = %cmd.id, error = %e, "could not record command outcome");
    }
    state.commands.forget(&cmd.id);
    tracing::info!(command = %cmd.id, cluster = %cmd.cluster, template = %plan.template.name, state = outcome.0, "template instantiation finished");
}

/// One stage other than a parcel phase. Ok: what it did; Err: why it failed.
async fn run(
    state: &Arc<AppState>,
    actor: &Actor,
    plan: &Plan,
    stage: &Stage,
    abort: &AtomicBool,
) -> Result<String, String> {
    let cluster = plan.cluster.as_str();
    let t = &plan.concrete;
    let e = |e: DomainError| e.to_string();
    match stage {
        Stage::Cluster => {
            if state.store.cluster(cluster).await.map_err(|e| e.to_string())?.is_some() {
                return Ok(format!("cluster {cluster} exists"));
            }
            clusters::create(state, actor, cluster).await.map_err(e)?;
            Ok(format!("created cluster {cluster}"))
        }
        Stage::Hosts => {
            let member = state.store.cluster_hosts(cluster).await.map_err(|e| e.to_string())?;
            let missing: Vec<String> = plan.all_hosts.iter().filter(|h| !member.contains(h)).cloned().collect();
            if missing.is_empty() {
                return Ok("every host is in the cluster".into());
            }
            clusters::add_hosts(state, actor, cluster, &missing).await.map_err(e)?;
            Ok(format!("added {} hosts", missing.len()))
        }
        Stage::Service(i) => {
            let s = &t.services[*i];
            let mut did = Vec::new();
            if state.store.service(cluster, &s.name).await.map_err(|e| e.to_string())?.is_none() {
                services::create(state, actor, cluster, &s.name, &s.service_type).await.map_err(e)?;
                did.push(format!("created service {}", s.name));
            }
            let existing = state.store.role_groups(cluster, &s.name).await.map_err(|e| e.to_string())?;
            for g in &s.groups {
                let is_default = g.name == services::default_group(&g.role_type);
                if is_default || existing.iter().any(|(_, name)| name == &g.name) {
                    continue;
                }
                services::create_group(state, actor, cluster, &s.name, &g.role_type, &g.name).await.map_err(e)?;
                did.push(format!("created role group {}", g.name));
            }
            Ok(if did.is_empty() { format!("service {} and its role groups exist", s.name) } else { did.join(", ") })
        }
        Stage::Config(i) => {
            let s = &t.services[*i];
            let st =
                state.catalog.get(&s.service_type).ok_or_else(|| format!("unknown service type {}", s.service_type))?;
            let join = |errors: Vec<drover_service_types::params::ParamError>| {
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            };
            let service_values = validate_patch(st, &Level::Service, &s.config).map_err(join)?;
            let mut group_values = BTreeMap::new();
            for g in &s.groups {
                let level = Level::Group { role_type: &g.role_type, group: &g.name };
                group_values.insert(g.name.clone(), validate_patch(st, &level, &g.config).map_err(join)?);
            }
            let message = format!("template {} version {}", plan.template.name, plan.template.version);
            match config::replace(state, actor, cluster, &s.name, service_values, group_values, &message).await {
                Ok(Some(change)) => Ok(format!("revision {}", change.revision)),
                Ok(None) => Ok("the configuration is already the template's".into()),
                Err(err) => Err(err.to_string()),
            }
        }
        Stage::Roles(i) => {
            let s = &t.services[*i];
            let existing = state.store.roles_of_service(cluster, &s.name).await.map_err(|e| e.to_string())?;
            let mut wanted = Vec::new();
            for hg in &t.host_groups {
                for r in hg.roles.iter().filter(|r| r.service == s.name) {
                    for h in plan.hosts.get(&hg.name).into_iter().flatten() {
                        if existing.iter().any(|x| &x.host_id == h && x.role_type == r.role_type) {
                            continue;
                        }
                        wanted.push(roles::NewRole {
                            role_type: r.role_type.clone(),
                            host_id: Some(h.clone()),
                            group: Some(r.group_name()),
                            ..Default::default()
                        });
                    }
                }
            }
            if wanted.is_empty() {
                return Ok(format!("every role of service {} exists", s.name));
            }
            let n = wanted.len();
            roles::create(state, actor, cluster, &s.name, wanted, false).await.map_err(e)?;
            Ok(format!("added {n} roles"))
        }
        Stage::Start(i) => {
            let s = &t.services[*i];
            let st =
                state.catalog.get(&s.service_type).ok_or_else(|| format!("unknown service type {}", s.service_type))?;
            actor.require(Permission::CommandsRun, Scope::Cluster(cluster)).map_err(e)?;
            let roles = state.store.roles_of_service(cluster, &s.name).await.map_err(|e| e.to_string())?;
            if roles.is_empty() {
                return Ok(format!("service {} has no roles", s.name));
            }
            let mut by_order: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for r in &roles {
                let order = st.role_type(&r.role_type).map_or(0, |rt| rt.start_order);
                by_order.entry(order).or_default().push(r.id.clone());
            }
            let timeout = st.rolling_restart.healthy_timeout.max(Duration::from_secs(10));
            let mut done = Vec::new();
            let wait_healthy = st.rolling_restart.wait_for_healthy;
            for ids in by_order.into_values() {
                // A role whose last start failed (an earlier run) is
                // restarted: its old report must not count.
                let (failed, rest): (Vec<String>, Vec<String>) =
                    ids.into_iter().partition(|id| state.registry.role_status(id).is_some_and(|s| s.state == "failed"));
                for (ids, restart) in [(rest, false), (failed, true)] {
                    if ids.is_empty() {
                        continue;
                    }
                    let start = crate::commands::start_roles(
                        state,
                        cluster,
                        &s.name,
                        ids,
                        restart,
                        timeout,
                        wait_healthy,
                        abort,
                    );
                    done.push(start.await?);
                }
            }
            Ok(done.join("; "))
        }
        Stage::Parcel { .. } => Err("a parcel phase runs on its host steps".into()),
        Stage::Provision { .. } => Err("containers are made by the command's runner".into()),
        Stage::Restore => {
            let mut moved = 0;
            for (group, roles) in &plan.restore {
                let host = plan
                    .hosts
                    .get(group)
                    .and_then(|h| h.first())
                    .ok_or_else(|| format!("host group {group} has no host"))?;
                let recs = providers::cluster_hosts(state, cluster, Some(group)).await.map_err(|e| e.to_string())?;
                let views = providers::describe(state, recs.clone()).await.map_err(|e| e.to_string())?;
                let rec = recs
                    .iter()
                    .zip(&views)
                    .find(|(_, v)| v.host_id.as_ref() == Some(host))
                    .map(|(r, _)| r)
                    .ok_or_else(|| format!("no container of host group {group} is host {host}"))?;
                let mut moves = Vec::new();
                // Roles of each service read once, not once per role.
                let mut by_service: BTreeMap<&str, Vec<crate::store::RoleRec>> = BTreeMap::new();
                for (service, role_type, old) in roles {
                    if !by_service.contains_key(service.as_str()) {
                        let now = state.store.roles_of_service(cluster, service).await.map_err(|e| e.to_string())?;
                        by_service.insert(service, now);
                    }
                    let now = &by_service[service.as_str()];
                    if let Some(r) = now.iter().find(|r| &r.host_id == host && &r.role_type == role_type) {
                        moves.push((old.clone(), r.id.clone()));
                    }
                }
                providers::restore_role_data(state, rec, &moves).await.map_err(|e| format!("{group}: {e}"))?;
                moved += moves.len();
            }
            Ok(format!("role data of {moved} roles put back"))
        }
    }
}

/// Makes the containers each provided host group still lacks and waits until
/// every one has enrolled as a healthy host; then the plan knows their hosts.
/// Containers of an earlier run are kept when they run and have enrolled (or
/// were made by this run); the others (stopped, gone, never enrolled) are
/// removed and replaced.
async fn provision(
    state: &Arc<AppState>,
    actor: &Actor,
    plan: &mut Plan,
    cmd: &CommandRec,
    seq: u32,
    abort: &AtomicBool,
) -> Result<String, String> {
    let provider = providers::Actor::authorize(actor).map_err(|e| e.to_string())?;
    let cluster = plan.cluster.clone();
    let mut did = Vec::new();
    for (group, req) in &plan.provided {
        let recs = providers::cluster_hosts(state, &cluster, Some(group)).await.map_err(|e| e.to_string())?;
        let views = providers::describe(state, recs.clone()).await.map_err(|e| e.to_string())?;
        let (mut keep, mut stale) = (Vec::new(), Vec::new());
        for (rec, view) in recs.into_iter().zip(views) {
            let enrolled = view.host_id.is_some() && view.host_status != Some(HostStatus::Decommissioned);
            let usable = view.container_status == "running" && (enrolled || rec.created_at >= cmd.created_at);
            if usable && keep.len() < req.count as usize {
                keep.push(rec)
            } else if !usable {
                stale.push(rec)
            }
        }
        if !stale.is_empty() {
            let names: Vec<String> = stale.iter().map(|r| r.name.clone()).collect();
            providers::remove_hosts(state, provider, stale)
                .await
                .map_err(|e| format!("remove {}: {e}", names.join(", ")))?;
            did.push(format!("replaced {} ({})", names.join(", "), group));
        }
        let missing = req.count as usize - keep.len();
        if missing > 0 {
            let ask = CreateHosts { count: missing as u32, ..req.clone() };
            providers::create_docker_hosts(state, provider, ask)
                .await
                .map_err(|e| format!("host group {group}: {e}"))?;
            did.push(format!("made {missing} for {group}"));
        }
    }
    let deadline = tokio::time::Instant::now() + state.config.provision_timeout;
    let mut shown = String::new();
    loop {
        let mut waiting = Vec::new();
        let mut ready: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let total: u32 = plan.provided.values().map(|p| p.count).sum();
        for group in plan.provided.keys() {
            let recs = providers::cluster_hosts(state, &cluster, Some(group)).await.map_err(|e| e.to_string())?;
            for view in providers::describe(state, recs).await.map_err(|e| e.to_string())? {
                match (&view.host_id, view.host_status) {
                    (Some(id), Some(HostStatus::Healthy)) => ready
                        .entry(group.clone())
                        .or_default()
                        .push((id.clone(), view.hostname.clone().unwrap_or_default())),
                    (_, status) => waiting.push(format!(
                        "{} ({}, {})",
                        view.name,
                        view.container_status,
                        status.map_or("not enrolled", |s| s.as_str())
                    )),
                }
            }
        }
        let n: usize = ready.values().map(Vec::len).sum();
        if waiting.is_empty() && n as u32 >= total {
            for (group, hosts) in ready {
                for (id, hostname) in &hosts {
                    plan.hostnames.insert(id.clone(), hostname.clone());
                    if !plan.all_hosts.contains(id) {
                        plan.all_hosts.push(id.clone());
                    }
                }
                plan.hosts.insert(group, hosts.into_iter().map(|(id, _)| id).collect());
            }
            did.push(format!("{n} containers enrolled and healthy"));
            return Ok(did.join("; "));
        }
        if abort.load(Ordering::SeqCst) {
            return Err("aborted by user".into());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} did not enroll as healthy hosts within {} (--provision-timeout); run the instantiation again \
                 to replace them",
                waiting.join(", "),
                humantime::format_duration(state.config.provision_timeout)
            ));
        }
        let progress = format!("{n} of {total} containers enrolled and healthy");
        if progress != shown {
            let _ = state.store.update_step(&cmd.id, seq, "running", &progress, None, None).await;
            shown = progress;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Once the containers are hosts: the parcel steps planned for them and the
/// `Hosts` step name them.
async fn retarget(
    state: &AppState,
    plan: &Plan,
    cmd: &CommandRec,
    steps: &mut [StepRec],
    slots: &[Slot],
    hosts_step: u32,
) {
    for slot in slots {
        let Some(host) = plan.hosts.get(&slot.group).and_then(|hs| hs.get(slot.index)) else { continue };
        let hostname = plan.hostnames.get(host).map(String::as_str).unwrap_or(host);
        let description = parcel_commands::step_description(slot.phase, &slot.parcel, &slot.version, host, hostname);
        if let Some(s) = steps.iter_mut().find(|s| s.seq == slot.seq) {
            s.description = description.clone();
            s.roles = vec![host.clone()];
        }
        let _ = state.store.set_step_target(&cmd.id, slot.seq, &description, std::slice::from_ref(host)).await;
    }
    let description = hosts_step_description(plan, true);
    let _ = state.store.set_step_target(&cmd.id, hosts_step, &description, &[]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_or_reported() {
        let t: Template = serde_norway::from_str(
            r#"
name: t
variables:
  - {name: pw, sensitive: true}
  - {name: mem, default: 1gb}
services:
  - name: cache
    type: redis
    config: {requirepass: {$var: pw}, maxmemory: {$var: mem}}
"#,
        )
        .unwrap();
        let (c, problems) = substitute(&t, &BTreeMap::from([("pw".to_owned(), json!("s3cret"))]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.services[0].config["requirepass"], json!("s3cret"));
        assert_eq!(c.services[0].config["maxmemory"], json!("1gb"));
        assert!(c.variables.is_empty());
        let (_, problems) = substitute(&t, &BTreeMap::from([("other".to_owned(), json!(1))]));
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "variables.other: template t has no variable other",
                "variables.pw: is required: a sensitive variable has no default; give its value"
            ]
        );
    }
}
