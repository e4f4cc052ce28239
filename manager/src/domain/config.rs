//! Versioned configuration: effective values, changes, history, diff and
//! rollback.
//!
//! A change goes validate -> render -> compare-and-set -> publish, under the
//! service's lock in [`crate::desired::Desired`]: values are checked
//! ([`config::validate_patch`]), service references resolved, every role
//! rendered with the candidate values and ports checked against every role on
//! the same hosts, and only then is the revision stored (optimistic
//! concurrency on the service's revision) and that very render pushed. A
//! refused change leaves no revision, no push and no audit entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::roles::{check_ports, find_role};
use super::services::group_exists;
use super::{Actor, DomainError, Granted, Permission, Result, Scope, load_context, load_service};
use crate::AppState;
use crate::desired::{self, DesiredRole, ServiceContext, ServiceGuard};
use crate::model::{now_millis, rfc3339};
use crate::store::{AppliedRec, RevisionRec};
pub use drover_api::config::{
    AppliedOn, ConfigChange, ConfigDiff, ConfigPatch, ConfigView, EffectiveValue, FileDiff, GroupRef, RevisionDetail,
    RevisionSummary, RoleConfig, RoleDiff, ServiceValue, ValueChange, ValuesView,
};
use drover_service_types::config::{self, ConfigValues, Level};
use drover_service_types::descriptor::ServiceType;
use drover_service_types::params::{self as config_params, MASK, mask};

/// Masks sensitive values.
fn masked_values(st: &ServiceType, v: &ConfigValues) -> ValuesView {
    let m = |map: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        map.iter().map(|(k, v)| (k.clone(), st.parameter(k).map(|p| mask(p, v)).unwrap_or_else(|| v.clone()))).collect()
    };
    ValuesView {
        service: m(&v.service),
        groups: v.groups.iter().map(|(g, vals)| (g.clone(), m(vals))).collect(),
        roles: v.roles.iter().map(|(r, vals)| (r.clone(), m(vals))).collect(),
    }
}

/// The effective configuration of every role, with the source of each value.
pub async fn get(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<ConfigView> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let st = &ctx.service_type;
    let mut roles = BTreeMap::new();
    for r in ctx.roles() {
        let eff = config::effective(st, &ctx.values, &r.role_type, &r.group, &r.id);
        let values = eff
            .into_iter()
            .map(|(k, e)| {
                let value = st.parameter(&k).map(|p| mask(p, &e.value)).unwrap_or(e.value);
                (k, EffectiveValue { value, source: e.source.to_string() })
            })
            .collect();
        roles.insert(
            r.name.clone(),
            RoleConfig { id: r.id.clone(), role_type: r.role_type.clone(), group: r.group.clone(), values },
        );
    }
    let service_level = st
        .parameters
        .iter()
        .map(|p| {
            let (value, source) = match ctx.values.service.get(&p.name) {
                Some(v) => (Some(mask(p, v)), "service"),
                None => (p.default.as_ref().map(|d| mask(p, d)), "default"),
            };
            (
                p.name.clone(),
                ServiceValue { value, source: source.into(), restart: p.restart, kind: p.kind.name().into() },
            )
        })
        .collect();
    Ok(ConfigView {
        revision: ctx.service.revision,
        service: service_level,
        overrides: masked_values(st, &ctx.values),
        roles,
    })
}

/// Validates a change, stores it as a new revision and pushes it.
pub async fn patch(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    service: &str,
    req: ConfigPatch,
) -> Result<ConfigChange> {
    // The whole change, from reading the service to publishing, under its
    // lock: one load, one render, and nothing else of it can interleave.
    let granted = actor.require(Permission::ConfigWrite, Scope::Cluster(cluster))?;
    let started = Instant::now();
    let guard = state.desired.lock_service(cluster, service).await;
    let ctx = load_context(state, cluster, service).await?;
    if req.message.trim().is_empty() {
        return Err(DomainError::Invalid("message is required: say why the configuration changes".into()));
    }
    if req.values.is_empty() {
        return Err(DomainError::Invalid("values is empty: nothing to change".into()));
    }
    if req.group.is_some() && req.role.is_some() {
        return Err(DomainError::Invalid("give either group or role, not both".into()));
    }
    let expected = req.expected_revision.unwrap_or(ctx.service.revision);
    let role_ref = match &req.role {
        Some(role) => Some(find_role(&ctx, role)?.clone()),
        None => None,
    };
    if let Some(g) = &req.group
        && !group_exists(state, cluster, service, &g.role_type, &g.name).await?
    {
        return Err(DomainError::NotFound(format!("role type {} has no role group {:?}", g.role_type, g.name)));
    }
    let level = patch_level(&req, role_ref.as_ref());
    let normalised = config::validate_patch(&ctx.service_type, &level, &req.values).map_err(|errors| {
        DomainError::Unsuitable(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    })?;
    let mut values = ctx.values.clone();
    values.apply_patch(&level, &normalised);
    commit_revision(state, granted, started, guard, ctx, values, req.message.trim(), expected, "config.update").await
}

/// The level a change applies to (`role` already resolved).
fn patch_level<'a>(req: &'a ConfigPatch, role: Option<&'a crate::store::RoleRec>) -> Level<'a> {
    match (&req.group, role) {
        (Some(g), _) => Level::Group { role_type: &g.role_type, group: &g.name },
        (None, Some(r)) => Level::Role { role_type: &r.role_type, role_id: &r.id },
        (None, None) => Level::Service,
    }
}

/// What the service's type refuses in a change, one entry per parameter
/// (an empty `parameter` for a problem of the whole change, such as an
/// unknown role type): exactly what [`patch`] would refuse as `Unsuitable`,
/// for a form that shows each problem next to its field. Nothing is stored.
/// A role or group that does not exist is an error, as in [`patch`].
pub async fn validate(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    req: &ConfigPatch,
) -> Result<Vec<config_params::ParamError>> {
    actor.require(Permission::ConfigWrite, Scope::Cluster(cluster))?;
    let ctx = load_context(state, cluster, service).await?;
    let role_ref = match &req.role {
        Some(role) => Some(find_role(&ctx, role)?.clone()),
        None => None,
    };
    let level = patch_level(req, role_ref.as_ref());
    Ok(config::validate_patch(&ctx.service_type, &level, &req.values).err().unwrap_or_default())
}

/// Stores `values` as a new revision of the latest one's successor after
/// rendering every role with them, and pushes the result. Nothing is stored
/// when anything fails; the revision and its audit entry are stored together.
/// The context loaded under the lock is reused for the render (its topology
/// only depends on the values through the services they refer to).
///
/// Answers once the revision is stored: the push to every host goes on in a
/// task that keeps the service's lock, so the next change of the service
/// still waits for it, and a failed push is retried like any failed refresh
/// (`GET .../config/revisions/{rev}` shows where the revision is applied).
#[allow(clippy::too_many_arguments)]
async fn commit_revision(
    state: &Arc<AppState>,
    granted: Granted<'_>,
    started: Instant,
    guard: ServiceGuard,
    ctx: ServiceContext,
    values: ConfigValues,
    message: &str,
    expected: u64,
    action: &str,
) -> Result<ConfigChange> {
    let actor = granted.actor();
    let loaded = started.elapsed();
    let cluster = ctx.service.cluster.clone();
    let service = ctx.service.name.clone();
    let st = ctx.service_type.clone();
    let mut changed = override_diff(&ctx.values, &values);
    if changed.is_empty() {
        return Err(DomainError::Conflict("the change leaves the configuration as it is; no revision created".into()));
    }
    let problems = desired::reference_problems(state, &ctx.service, &st, &values).await?;
    if !problems.is_empty() {
        let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
        // A reference to a service that does not exist is a missing object;
        // one to itself or to a service of the wrong type conflicts with the
        // cluster as it is.
        return Err(if problems.iter().all(|p| p.missing) {
            DomainError::NotFound(message)
        } else {
            DomainError::Conflict(message)
        });
    }
    check_ports(state, &cluster, &service, &st, &values, ctx.roles()).await?;
    let checked = started.elapsed();
    let revision = ctx.service.revision + 1;
    let mut keys_by_role = Vec::with_capacity(ctx.roles().len());
    // Roles without role-level overrides share the result of their group.
    let mut by_group: HashMap<(&str, &str), (Vec<String>, bool)> = HashMap::new();
    for r in ctx.roles() {
        let own = ctx.values.roles.contains_key(&r.id) || values.roles.contains_key(&r.id);
        let (keys, restart) = match by_group.get(&(r.role_type.as_str(), r.group.as_str())) {
            Some(done) if !own => done.clone(),
            _ => {
                let done = config::changed_keys(&st, &ctx.values, &values, &r.role_type, &r.group, &r.id);
                if !own {
                    by_group.insert((r.role_type.as_str(), r.group.as_str()), done.clone());
                }
                done
            }
        };
        changed.extend(keys.iter().cloned());
        if restart {
            keys_by_role.push(r.name.clone());
        }
    }
    drop(by_group);
    let changed: Vec<String> = changed.into_iter().collect();
    let before = serde_json::to_string(&masked_values(&st, &ctx.values)).unwrap_or_default();
    let after = serde_json::to_string(&masked_values(&st, &values)).unwrap_or_default();

    // Render every role with the candidate values before storing anything;
    // under the service's lock, this very render is what gets pushed.
    let same_refs = config::service_refs(&st, &ctx.values) == config::service_refs(&st, &values);
    let mut next = ctx.service.clone();
    next.revision = revision;
    let candidate = if same_refs {
        ServiceContext { service: next, values: values.clone(), ..ctx }
    } else {
        drop(ctx);
        desired::load_with_values(state, next, values.clone()).await?
    };
    let (_, rendered) = candidate.render_all_blocking().await?;
    let render = started.elapsed();

    let rec = RevisionRec {
        cluster: cluster.clone(),
        service: service.clone(),
        revision,
        // Sensitive values encrypted (`crate::secrets`): never in clear in the database.
        config: state.secrets.seal_values(&st, &values),
        changed_keys: changed.clone(),
        author: actor.username.clone(),
        source: actor.source.clone(),
        message: message.to_owned(),
        created_at: now_millis(),
    };
    let audit = granted.audit(
        action,
        "service",
        &format!("{cluster}/{service}"),
        format!("revision {revision} ({message}): changed {changed:?}; before {before}; after {after}"),
    );
    if !state.store.insert_revision(&rec, expected, Some(&audit)).await? {
        return Err(DomainError::Conflict(format!(
            "service {service} changed meanwhile (it is no longer at revision {expected}); reload and try again"
        )));
    }
    let stored = started.elapsed();
    let roles = rendered.len();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let key = format!("{cluster}/{service}");
        let outcome = state.desired.publish(&state, guard, &[], Some(rendered)).await;
        let publish_ms = (started.elapsed() - stored).as_millis() as u64;
        match outcome {
            Ok(()) => tracing::info!(
                service = %key,
                revision,
                roles,
                load_ms = loaded.as_millis() as u64,
                check_ms = (checked - loaded).as_millis() as u64,
                render_ms = (render - checked).as_millis() as u64,
                store_ms = (stored - render).as_millis() as u64,
                publish_ms,
                "configuration revision committed and pushed"
            ),
            // The owner records the failure, shows it in /healthz and retries.
            Err(e) => {
                tracing::error!(service = %key, revision, error = %e, "configuration revision stored, push failed")
            }
        }
    });
    Ok(ConfigChange {
        revision,
        changed_keys: changed,
        message: message.to_owned(),
        author: actor.username.clone(),
        roles_needing_restart: keys_by_role,
    })
}

/// Parameters whose override differs between two sets of values, at any level.
fn override_diff(a: &ConfigValues, b: &ConfigValues) -> BTreeSet<String> {
    fn diff_maps(x: Option<&BTreeMap<String, Value>>, y: Option<&BTreeMap<String, Value>>, out: &mut BTreeSet<String>) {
        let empty = BTreeMap::new();
        let (x, y) = (x.unwrap_or(&empty), y.unwrap_or(&empty));
        for k in x.keys().chain(y.keys()) {
            if x.get(k) != y.get(k) {
                out.insert(k.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    diff_maps(Some(&a.service), Some(&b.service), &mut out);
    for g in a.groups.keys().chain(b.groups.keys()) {
        diff_maps(a.groups.get(g), b.groups.get(g), &mut out);
    }
    for r in a.roles.keys().chain(b.roles.keys()) {
        diff_maps(a.roles.get(r), b.roles.get(r), &mut out);
    }
    out
}

/// Makes a new revision with the values of an older one.
pub async fn rollback(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    service: &str,
    to: u64,
    message: &str,
) -> Result<ConfigChange> {
    let granted = actor.require(Permission::ConfigWrite, Scope::Cluster(cluster))?;
    let started = Instant::now();
    let guard = state.desired.lock_service(cluster, service).await;
    let ctx = load_context(state, cluster, service).await?;
    if message.trim().is_empty() {
        return Err(DomainError::Invalid("message is required: say why the configuration is rolled back".into()));
    }
    let target = state
        .store
        .revision(cluster, service, to)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("revision {to} of service {service} not found")))?;
    let values: ConfigValues =
        state.secrets.open_values(target.config).map_err(|e| DomainError::Internal(e.to_string()))?;
    let expected = ctx.service.revision;
    let message = format!("rollback to revision {to}: {}", message.trim());
    commit_revision(state, granted, started, guard, ctx, values, &message, expected, "config.rollback").await
}

/// Makes a new revision holding `values` (normalised, as
/// [`config::validate_patch`] answers them) at service and group level; the
/// role-level values stay as they are. Used by template instantiation: one
/// revision per service, checked and rendered like any change.
pub(crate) async fn replace(
    state: &Arc<AppState>,
    actor: &Actor,
    cluster: &str,
    service: &str,
    service_values: BTreeMap<String, Value>,
    group_values: BTreeMap<String, BTreeMap<String, Value>>,
    message: &str,
) -> Result<Option<ConfigChange>> {
    let granted = actor.require(Permission::ConfigWrite, Scope::Cluster(cluster))?;
    let started = Instant::now();
    let guard = state.desired.lock_service(cluster, service).await;
    let ctx = load_context(state, cluster, service).await?;
    let mut values = ConfigValues { service: service_values, groups: group_values, roles: ctx.values.roles.clone() };
    values.groups.retain(|_, m| !m.is_empty());
    if values == ctx.values {
        return Ok(None);
    }
    let expected = ctx.service.revision;
    commit_revision(state, granted, started, guard, ctx, values, message, expected, "config.update").await.map(Some)
}

fn summary(r: &RevisionRec) -> RevisionSummary {
    RevisionSummary {
        revision: r.revision,
        author: r.author.clone(),
        source: r.source.clone(),
        created_at: rfc3339(r.created_at),
        message: r.message.clone(),
        changed_keys: r.changed_keys.clone(),
    }
}

/// Revisions, newest first.
pub async fn revisions(state: &AppState, actor: &Actor, cluster: &str, service: &str) -> Result<Vec<RevisionSummary>> {
    actor.require_read(cluster)?;
    load_service(state, cluster, service).await?;
    Ok(state.store.revisions(cluster, service).await?.iter().map(summary).collect())
}

pub async fn revision(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    revision: u64,
) -> Result<RevisionDetail> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let r = state
        .store
        .revision(cluster, service, revision)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("revision {revision} of service {service} not found")))?;
    let values: ConfigValues =
        state.secrets.open_values(r.config.clone()).map_err(|e| DomainError::Internal(e.to_string()))?;
    let names: HashMap<&str, &str> = ctx.roles().iter().map(|r| (r.id.as_str(), r.name.as_str())).collect();
    let hostnames: HashMap<&str, &str> =
        ctx.topology.roles.iter().map(|i| (i.role_id.as_str(), i.hostname.as_str())).collect();
    // The registry's records first: one that the flusher stores meanwhile is
    // then in the store's answer.
    let unstored = state.registry.unstored_applied(cluster, service, revision);
    let stored = state.store.applied_for_revision(cluster, service, revision).await?;
    let applied = first_applied(stored, unstored)
        .into_iter()
        .map(|a| {
            let hostname = hostnames.get(a.role_id.as_str()).map(|h| (*h).to_owned());
            AppliedOn {
                role: names.get(a.role_id.as_str()).map(|n| (*n).to_owned()),
                role_id: a.role_id,
                host_id: a.host_id,
                hostname,
                applied_at: rfc3339(a.applied_at),
            }
        })
        .collect();
    Ok(RevisionDetail { summary: summary(&r), values: masked_values(&ctx.service_type, &values), applied })
}

/// Each role's first record of applying a revision, from the store and from
/// those not stored yet, ordered as the store orders them (by time, then role).
fn first_applied(stored: Vec<AppliedRec>, unstored: Vec<AppliedRec>) -> Vec<AppliedRec> {
    let mut first: HashMap<String, AppliedRec> = HashMap::with_capacity(stored.len() + unstored.len());
    for a in stored.into_iter().chain(unstored) {
        match first.get_mut(&a.role_id) {
            Some(earlier) if earlier.applied_at <= a.applied_at => {}
            Some(later) => *later = a,
            None => {
                first.insert(a.role_id.clone(), a);
            }
        }
    }
    let mut out: Vec<AppliedRec> = first.into_values().collect();
    out.sort_unstable_by(|a, b| (a.applied_at, &a.role_id).cmp(&(b.applied_at, &b.role_id)));
    out
}

/// Value changes and unified diffs of the rendered files of every role
/// between two revisions (with today's topology), secrets masked.
pub async fn diff(
    state: &AppState,
    actor: &Actor,
    cluster: &str,
    service: &str,
    from: u64,
    to: u64,
) -> Result<ConfigDiff> {
    actor.require_read(cluster)?;
    let ctx = load_context(state, cluster, service).await?;
    let load =
        |rev: u64| {
            let svc = ctx.service.clone();
            async move {
                state.store.revision(&svc.cluster, &svc.name, rev).await?.ok_or_else(|| {
                    DomainError::NotFound(format!("revision {rev} of service {} not found", svc.name))
                })?;
                desired::revision_values(state, &svc, rev).await.map_err(DomainError::from)
            }
        };
    let a = load(from).await?;
    let b = load(to).await?;
    let st = &ctx.service_type;
    let mut sensitive: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|v| std::iter::once(&v.service).chain(v.groups.values()).chain(v.roles.values()))
        .flat_map(|m| m.iter())
        .filter(|(k, _)| st.parameter(k).is_some_and(|p| p.sensitive()))
        .filter_map(|(_, v)| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty())
        // Templates may render a secret escaped (e.g. the `quote` helper).
        .flat_map(|s| {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            [s, escaped]
        })
        .collect();
    sensitive.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let redact = |text: String| sensitive.iter().fold(text, |t, s| t.replace(s.as_str(), MASK));
    let render = |values: &ConfigValues| {
        let svc = ctx.service.clone();
        let values = values.clone();
        async move { desired::load_with_values(state, svc, values).await?.render_all().map_err(DomainError::from) }
    };
    let by_id = |roles: Vec<DesiredRole>| -> HashMap<String, DesiredRole> {
        roles.into_iter().map(|d| (d.role_id.clone(), d)).collect()
    };
    let ra = by_id(render(&a).await?);
    let rb = by_id(render(&b).await?);
    let hostnames: HashMap<&str, &str> =
        ctx.topology.roles.iter().map(|i| (i.role_id.as_str(), i.hostname.as_str())).collect();
    let mut roles = Vec::new();
    for r in ctx.roles() {
        let eff_a = config::effective(st, &a, &r.role_type, &r.group, &r.id);
        let eff_b = config::effective(st, &b, &r.role_type, &r.group, &r.id);
        let mut changes = Vec::new();
        for (k, vb) in &eff_b {
            let va = eff_a.get(k);
            if va.map(|x| &x.value) != Some(&vb.value) {
                let p = st.parameter(k);
                let show = |v: &Value| p.map(|p| mask(p, v)).unwrap_or_else(|| v.clone());
                changes.push(ValueChange {
                    parameter: k.clone(),
                    from: va.map(|x| show(&x.value)),
                    to: show(&vb.value),
                    source: vb.source.to_string(),
                    restart: p.is_some_and(|p| p.restart),
                });
            }
        }
        let fa = ra.get(&r.id);
        let fb = rb.get(&r.id);
        let mut files = Vec::new();
        if let (Some(fa), Some(fb)) = (fa, fb) {
            let mut paths: Vec<&String> = fa.rendered.files.iter().chain(&fb.rendered.files).map(|f| &f.path).collect();
            paths.sort();
            paths.dedup();
            for path in paths {
                let text = |d: &DesiredRole| {
                    d.rendered
                        .files
                        .iter()
                        .find(|f| &f.path == path)
                        .map(|f| String::from_utf8_lossy(&f.content).into_owned())
                        .unwrap_or_default()
                };
                let (ta, tb) = (text(fa), text(fb));
                if ta != tb {
                    let diff = similar::TextDiff::from_lines(&ta, &tb)
                        .unified_diff()
                        .context_radius(3)
                        .header(&format!("r{from}/{path}"), &format!("r{to}/{path}"))
                        .to_string();
                    files.push(FileDiff { path: path.clone(), diff: redact(diff) });
                }
            }
        }
        if !changes.is_empty() || !files.is_empty() {
            let hostname = hostnames.get(r.id.as_str()).map(|h| (*h).to_owned());
            roles.push(RoleDiff {
                role_id: r.id.clone(),
                role: r.name.clone(),
                host_id: r.host_id.clone(),
                hostname,
                changes,
                files,
            });
        }
    }
    Ok(ConfigDiff { from, to, roles })
}
