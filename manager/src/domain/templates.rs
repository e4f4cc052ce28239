//! Cluster templates: stored immutable versions (upload, list, show,
//! delete), the export of a running cluster as a template, and its
//! instantiation into a cluster ([`instantiate`]). A template is validated
//! against the catalog ([`validate`]) before it is stored and again, with
//! its variables substituted, before anything of an instantiation is
//! created. The format is documented in `docs/templates.md`.

pub mod instantiate;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Actor, DomainError, Permission, Result, Scope, load_cluster};
use crate::AppState;
use crate::model::{now_millis, rfc3339};
use crate::store::TemplateRec;
pub use drover_api::templates::{
    HostGroup, HostGroupRole, StoredTemplate, Template, TemplateExport, TemplateGroup, TemplateParcel, TemplateService,
    TemplateSummary, Variable, var_value,
};
use drover_service_types::params::ParamKind;
pub use validate::{Mode, Problem, validate};

/// Reads a template document in YAML (`yaml`) or JSON.
pub fn parse(body: &[u8], yaml: bool) -> Result<Template> {
    let text = std::str::from_utf8(body)
        .map_err(|_| DomainError::Invalid("invalid template: the document is not UTF-8 text".into()))?;
    if text.contains('\0') {
        return Err(DomainError::Refused("invalid template: text may not contain the NUL character".into()));
    }
    if yaml {
        // Through a JSON value, so YAML is held to JSON's types (`name: null`
        // is not the string "null").
        let value: Value =
            serde_norway::from_str(text).map_err(|e| DomainError::Invalid(format!("invalid template YAML: {e}")))?;
        serde_json::from_value(value).map_err(|e| DomainError::Invalid(format!("invalid template: {e}")))
    } else {
        serde_json::from_str(text).map_err(|e| DomainError::Invalid(format!("invalid template JSON: {e}")))
    }
}

/// The document as YAML.
pub fn to_yaml(t: &Template) -> Result<String> {
    serde_norway::to_string(t).map_err(|e| DomainError::Internal(format!("write template YAML: {e}")))
}

/// The error of a template with problems: 400, naming every problem with
/// its path.
pub fn invalid(name: &str, problems: &[Problem]) -> DomainError {
    let n = problems.len();
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    DomainError::Invalid(format!(
        "template {name} is invalid ({n} problem{}): {}",
        if n == 1 { "" } else { "s" },
        list.join("; ")
    ))
}

fn stored(rec: TemplateRec) -> Result<StoredTemplate> {
    let document: Template = serde_json::from_str(&rec.document)
        .map_err(|e| DomainError::Internal(format!("stored template {} v{}: {e}", rec.name, rec.version)))?;
    Ok(StoredTemplate {
        name: rec.name,
        version: rec.version,
        description: rec.description,
        created_at: rfc3339(rec.created_at),
        created_by: rec.created_by,
        document,
    })
}

/// Validates a template and stores it as the next version of its name.
pub async fn upload(state: &AppState, actor: &Actor, doc: Template) -> Result<StoredTemplate> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Global)?;
    let problems = validate(&state.catalog, &doc, Mode::Stored);
    if !problems.is_empty() {
        return Err(invalid(&doc.name, &problems));
    }
    let document = serde_json::to_string(&doc).map_err(|e| DomainError::Internal(e.to_string()))?;
    let mut rec = TemplateRec {
        name: doc.name.clone(),
        version: 0,
        description: doc.description.clone(),
        document,
        created_at: now_millis(),
        created_by: actor.username.clone(),
    };
    rec.version = state.store.insert_template(&rec).await?;
    state
        .audit(granted.audit(
            "template.upload",
            "template",
            &rec.name,
            format!(
                "uploaded version {} ({} services, {} host groups)",
                rec.version,
                doc.services.len(),
                doc.host_groups.len()
            ),
        ))
        .await;
    stored(rec)
}

/// Each template name with its newest version and how many it has.
pub async fn list(state: &AppState, actor: &Actor) -> Result<Vec<TemplateSummary>> {
    actor.require(Permission::Read, Scope::Any)?;
    let mut out: Vec<TemplateSummary> = Vec::new();
    for rec in state.store.template_versions().await? {
        match out.last_mut() {
            Some(last) if last.name == rec.name => last.versions += 1,
            _ => out.push(TemplateSummary {
                name: rec.name,
                description: rec.description,
                latest_version: rec.version,
                versions: 1,
                created_at: rfc3339(rec.created_at),
                created_by: rec.created_by,
            }),
        }
    }
    Ok(out)
}

/// One version of a template (`None`: the newest).
pub async fn get(state: &AppState, actor: &Actor, name: &str, version: Option<u64>) -> Result<StoredTemplate> {
    actor.require(Permission::Read, Scope::Any)?;
    load(state, name, version).await
}

/// Versions count from 1.
fn check_version(version: Option<u64>) -> Result<()> {
    match version {
        Some(0) => Err(DomainError::Invalid("invalid version 0: versions count from 1".into())),
        _ => Ok(()),
    }
}

pub(crate) async fn load(state: &AppState, name: &str, version: Option<u64>) -> Result<StoredTemplate> {
    check_version(version)?;
    let rec = state.store.template(name, version).await?.ok_or_else(|| match version {
        Some(v) => DomainError::NotFound(format!("template {name} has no version {v}")),
        None => DomainError::NotFound(format!("template {name} not found")),
    })?;
    stored(rec)
}

/// Deletes one version of a template, or every version.
pub async fn delete(state: &AppState, actor: &Actor, name: &str, version: Option<u64>) -> Result<()> {
    let granted = actor.require(Permission::ServicesWrite, Scope::Global)?;
    check_version(version)?;
    let n = state.store.delete_template(name, version).await?;
    if n == 0 {
        return Err(match version {
            Some(v) => DomainError::NotFound(format!("template {name} has no version {v}")),
            None => DomainError::NotFound(format!("template {name} not found")),
        });
    }
    let what = match version {
        Some(v) => format!("deleted version {v}"),
        None => format!("deleted all {n} versions"),
    };
    state.audit(granted.audit("template.delete", "template", name, what)).await;
    Ok(())
}

// ---------- export ----------

/// A variable name for a sensitive value: `<service>_<parameter>` (with the
/// group for a group's value), made a valid variable name.
fn secret_variable(service: &str, group: Option<&str>, parameter: &str) -> String {
    let raw = match group {
        Some(g) => format!("{service}_{g}_{parameter}"),
        None => format!("{service}_{parameter}"),
    };
    let mut name: String = raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "v_");
    }
    name.chars().take(63).collect()
}

/// The name of a host group from the roles its hosts run: `cache-primary`
/// for one role, `cache-primary-plus-2` for three, unique among `taken`.
fn host_group_name(roles: &[HostGroupRole], taken: &mut BTreeSet<String>) -> String {
    let first = roles.first().map(|r| format!("{}-{}", r.service, r.role_type.replace('_', "-"))).unwrap_or_default();
    let base = if roles.len() > 1 { format!("{first}-plus-{}", roles.len() - 1) } else { first };
    let base: String = base.chars().take(55).collect::<String>().trim_end_matches('-').to_owned();
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The cluster as a template: its services with types, service- and
/// group-level values (sensitive ones as sensitive variables), role groups,
/// host groups derived from placement (hosts running the same roles form
/// one group; its selector is the labels they all share), active parcels,
/// and references as they are. Role-level values do not carry over: each
/// role that has them is a warning, as is any problem the exported
/// document has (a cluster that breaks its types' role counts).
pub async fn export(state: &AppState, actor: &Actor, cluster: &str) -> Result<TemplateExport> {
    actor.require_read(cluster)?;
    load_cluster(state, cluster).await?;
    let mut t = Template {
        name: cluster.to_owned(),
        description: format!("exported from cluster {cluster}"),
        ..Template::default()
    };
    let mut warnings = Vec::new();
    let hosts: BTreeMap<String, crate::model::Host> =
        state.store.all_hosts().await?.into_iter().map(|h| (h.id.clone(), h)).collect();
    // host id -> the roles it runs
    let mut placement: BTreeMap<String, Vec<HostGroupRole>> = BTreeMap::new();
    for svc in state.store.list_services(cluster).await? {
        let ctx = super::load_context(state, cluster, &svc.name).await?;
        let st = &ctx.service_type;
        let secret = |t: &mut Template, group: Option<&str>, parameter: &str, what: String| -> Value {
            let name = secret_variable(&svc.name, group, parameter);
            if !t.variables.iter().any(|v| v.name == name) {
                t.variables.push(Variable { name: name.clone(), description: what, sensitive: true, default: None });
            }
            var_value(&name)
        };
        let mut config = BTreeMap::new();
        for (k, v) in &ctx.values.service {
            let sensitive = st.parameter(k).is_some_and(|p| p.sensitive());
            let v = if sensitive { secret(&mut t, None, k, format!("{k} of service {}", svc.name)) } else { v.clone() };
            config.insert(k.clone(), v);
        }
        let named = state.store.role_groups(cluster, &svc.name).await?;
        let mut groups: Vec<TemplateGroup> = Vec::new();
        for rt in &st.role_types {
            let default = super::services::default_group(&rt.name);
            let names = std::iter::once(default.clone())
                .chain(named.iter().filter(|(t, _)| *t == rt.name).map(|(_, g)| g.clone()));
            for g in names {
                let values = ctx.values.groups.get(&g);
                if g == default && values.is_none_or(|v| v.is_empty()) {
                    continue;
                }
                let mut gconfig = BTreeMap::new();
                for (k, v) in values.into_iter().flatten() {
                    let sensitive = st.parameter(k).is_some_and(|p| p.sensitive());
                    let v = if sensitive {
                        secret(&mut t, Some(&g), k, format!("{k} of role group {g} of service {}", svc.name))
                    } else {
                        v.clone()
                    };
                    gconfig.insert(k.clone(), v);
                }
                groups.push(TemplateGroup { role_type: rt.name.clone(), name: g, config: gconfig });
            }
        }
        for r in ctx.roles() {
            if let Some(values) = ctx.values.roles.get(&r.id).filter(|v| !v.is_empty()) {
                let hostname = hosts.get(&r.host_id).map(|h| h.hostname.as_str()).unwrap_or(r.host_id.as_str());
                let keys: Vec<&str> = values.keys().map(String::as_str).collect();
                warnings.push(format!(
                    "role {} of service {} on host {hostname} overrides {}: role-level values do not carry over",
                    r.name,
                    svc.name,
                    keys.join(", ")
                ));
            }
            let group = (r.group != super::services::default_group(&r.role_type)).then(|| r.group.clone());
            placement.entry(r.host_id.clone()).or_default().push(HostGroupRole {
                service: svc.name.clone(),
                role_type: r.role_type.clone(),
                group,
            });
        }
        t.services.push(TemplateService {
            name: svc.name.clone(),
            service_type: svc.service_type.clone(),
            config,
            groups,
        });
    }
    // Hosts running the same roles form one host group.
    let order: BTreeMap<&str, usize> = t.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    // (service index, role type, role group) of each role -> the roles and the hosts running them.
    type RoleSet = Vec<(usize, String, String)>;
    let mut by_roles: BTreeMap<RoleSet, (Vec<HostGroupRole>, Vec<String>)> = BTreeMap::new();
    for (host, mut roles) in placement {
        roles.sort_by_key(|r| (order.get(r.service.as_str()).copied().unwrap_or(usize::MAX), r.role_type.clone()));
        roles.dedup();
        let key = roles
            .iter()
            .map(|r| {
                (order.get(r.service.as_str()).copied().unwrap_or(usize::MAX), r.role_type.clone(), r.group_name())
            })
            .collect();
        by_roles.entry(key).or_insert_with(|| (roles, Vec::new())).1.push(host);
    }
    let mut taken = BTreeSet::new();
    for (_, (roles, members)) in by_roles {
        let mut shared: Option<BTreeMap<String, String>> = None;
        for h in &members {
            let labels = hosts.get(h).map(|h| h.labels.clone()).unwrap_or_default();
            shared = Some(match shared {
                None => labels,
                Some(s) => s.into_iter().filter(|(k, v)| labels.get(k) == Some(v)).collect(),
            });
        }
        let selector = shared
            .filter(|s| !s.is_empty())
            .map(|s| s.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        t.host_groups.push(HostGroup {
            name: host_group_name(&roles, &mut taken),
            cardinality: members.len() as u32,
            selector,
            roles,
        });
    }
    let mut parcels: Vec<TemplateParcel> = state
        .store
        .cluster_parcels(Some(cluster))
        .await?
        .into_iter()
        .filter(|p| p.target == "active")
        .map(|p| TemplateParcel { name: p.name, version: p.version })
        .collect();
    parcels.sort_by(|a, b| a.name.cmp(&b.name));
    t.parcels = parcels;
    for p in validate(&state.catalog, &t, Mode::Stored) {
        warnings.push(format!("the exported template does not validate: {p}"));
    }
    Ok(TemplateExport { template: t, warnings })
}

/// The export as YAML: the warnings as leading `#` comments, then the
/// document (which `POST /api/v1/templates` takes as it is).
pub fn export_yaml(e: &TemplateExport) -> Result<String> {
    let mut out = String::new();
    for w in &e.warnings {
        out.push_str("# warning: ");
        out.push_str(&w.replace('\n', " "));
        out.push('\n');
    }
    out.push_str(&to_yaml(&e.template)?);
    Ok(out)
}

/// Services in start order: a service after the services it refers to
/// (`service` parameters, at any level) and those of the types it requires;
/// otherwise as in the template. A cycle keeps template order for the rest.
pub fn start_order(catalog: &drover_service_types::descriptor::Catalog, t: &Template) -> Vec<usize> {
    let deps: Vec<BTreeSet<usize>> = t
        .services
        .iter()
        .map(|s| {
            let st = catalog.get(&s.service_type);
            let mut d = BTreeSet::new();
            let levels = std::iter::once(&s.config).chain(s.groups.iter().map(|g| &g.config));
            for (k, v) in levels.flat_map(|l| l.iter()) {
                let is_ref =
                    st.and_then(|st| st.parameter(k)).is_some_and(|p| matches!(p.kind, ParamKind::Service { .. }));
                if is_ref
                    && let Some(target) = v.as_str()
                    && let Some(j) = t.services.iter().position(|o| o.name == target)
                {
                    d.insert(j);
                }
            }
            for required in st.map(|st| st.requires.as_slice()).unwrap_or_default() {
                d.extend(t.services.iter().enumerate().filter(|(_, o)| &o.service_type == required).map(|(j, _)| j));
            }
            d
        })
        .collect();
    let mut done: Vec<usize> = Vec::new();
    while done.len() < t.services.len() {
        let next = (0..t.services.len())
            .filter(|i| !done.contains(i))
            .find(|i| deps[*i].iter().all(|d| done.contains(d) || d == i))
            .or_else(|| (0..t.services.len()).find(|i| !done.contains(i)));
        match next {
            Some(i) => done.push(i),
            None => break,
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_variables_are_valid_names() {
        assert_eq!(secret_variable("cache", None, "requirepass"), "cache_requirepass");
        assert_eq!(secret_variable("cache", Some("big"), "requirepass"), "cache_big_requirepass");
        assert_eq!(secret_variable("9c", None, "pw"), "v_9c_pw");
        assert!(validate::valid_variable_name(&secret_variable(&"x".repeat(63), None, "requirepass")));
    }

    #[test]
    fn host_group_names_are_unique() {
        let r = |s: &str, t: &str| HostGroupRole { service: s.into(), role_type: t.into(), group: None };
        let mut taken = BTreeSet::new();
        assert_eq!(host_group_name(&[r("cache", "primary")], &mut taken), "cache-primary");
        assert_eq!(host_group_name(&[r("cache", "primary")], &mut taken), "cache-primary-2");
        assert_eq!(host_group_name(&[r("cache", "replica"), r("zk", "server")], &mut taken), "cache-replica-plus-1");
    }
}
