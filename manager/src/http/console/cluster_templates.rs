//! Cluster templates in the console (`docs/templates.md`): the stored templates with an upload
//! form (YAML or JSON pasted; every problem listed with its path in the document, the text
//! kept); one version's page (variables, parcels, services, host groups, the document, a YAML
//! download) with the instantiate form (cluster, a field per variable, hosts or selector and
//! count per host group) that leads to the instantiation's command page, and delete (this
//! version or all, confirmed); and a cluster's export (warnings, the document, download, save as
//! a template). Every read and change goes through [`crate::domain::templates`] with the
//! session's actor, so it is checked and audited as the REST API's.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use drover_api::templates::{HostGroupHosts, Instantiate, StoredTemplate, Template, var_ref};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError, Permission, Scope};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/templates", get(list).post(upload))
        .route("/templates/{name}", get(show))
        .route("/templates/{name}/instantiate", post(instantiate))
        .route("/templates/{name}/delete", post(delete))
        .route("/clusters/{c}/template", get(export))
}

const TEMPLATES: &str = "/templates";

fn template_href(name: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("{TEMPLATES}/{}?version={v}", url_encode(name)),
        None => format!("{TEMPLATES}/{}", url_encode(name)),
    }
}

/// The REST download of a stored version as YAML (the session cookie authenticates it).
fn yaml_download(name: &str, version: u64) -> String {
    format!("/api/v1/templates/{}?version={version}&format=yaml", url_encode(name))
}

/// A value as the tables show it: text as is, a variable reference as `$NAME`, others as JSON.
fn shown_value(v: &Value) -> String {
    match (v, var_ref(v)) {
        (_, Some(name)) => format!("${name}"),
        (Value::String(s), None) => s.clone(),
        (other, None) => other.to_string(),
    }
}

fn values_text(config: &BTreeMap<String, Value>) -> Vec<String> {
    config.iter().map(|(k, v)| format!("{k} = {}", shown_value(v))).collect()
}

/// Where a template's document is refused: each problem on its own line, with its path.
fn problems_of(e: &DomainError) -> Vec<String> {
    let message = domain_message(e);
    // `template NAME is invalid (N problems): PATH: MESSAGE; PATH: MESSAGE`.
    match message.split_once("): ") {
        Some((head, list)) if head.starts_with("template ") && head.contains(" is invalid (") => {
            let mut out = vec![format!("{head}):")];
            // A problem's message may hold "; " itself: a new problem starts where "; " is
            // followed by a path (no spaces) and ": ".
            let starts_problem =
                |rest: &str| rest.split_once(": ").is_some_and(|(p, _)| !p.is_empty() && !p.contains(' '));
            let mut current = String::new();
            for part in list.split("; ") {
                if !current.is_empty() && starts_problem(part) {
                    out.push(std::mem::take(&mut current));
                } else if !current.is_empty() {
                    current.push_str("; ");
                }
                current.push_str(part);
            }
            out.push(current);
            out
        }
        _ => vec![message],
    }
}

/// A refusal shown on the page, or an error page for what no form can fix.
fn refusal(e: DomainError) -> Result<Vec<String>, ConsoleError> {
    match e {
        DomainError::Forbidden { .. } | DomainError::Unavailable(_) | DomainError::Internal(_) => Err(e.into()),
        e => Ok(problems_of(&e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct UploadForm {
    #[serde(default)]
    document: String,
}

/// Reads a pasted document: JSON when it starts with `{`, YAML otherwise.
fn parse_document(text: &str) -> domain::Result<Template> {
    let json = text.trim_start().starts_with('{');
    domain::templates::parse(text.as_bytes(), !json)
}

async fn list(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    list_page(&state, &session, "", Vec::new()).await
}

async fn list_page(state: &AppState, session: &Session, document: &str, problems: Vec<String>) -> PageResult {
    let actor = session.actor();
    let rows: Vec<Value> = domain::templates::list(state, &actor)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "name": t.name,
                "href": template_href(&t.name, None),
                "description": t.description,
                "latest_version": t.latest_version,
                "versions": t.versions,
                "created_at": t.created_at,
                "created_by": t.created_by,
            })
        })
        .collect();
    let refused = !problems.is_empty();
    let resp = session.page(
        state,
        "templates",
        "Templates",
        "templates",
        json!({
            "templates": rows,
            "may_upload": actor.may(Permission::ServicesWrite, Scope::Global),
            "document": document,
            "problems": problems,
        }),
    );
    Ok(if refused { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

async fn upload(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<UploadForm>) -> PageResult {
    if form.document.trim().is_empty() {
        let problems = vec!["paste a template document (YAML or JSON) to upload".to_owned()];
        return list_page(&state, &session, &form.document, problems).await;
    }
    let stored = match parse_document(&form.document) {
        Ok(doc) => domain::templates::upload(&state, &session.actor(), doc).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(t) => {
            let message = format!("template {} stored as version {}", t.name, t.version);
            Ok(redirect_with(&template_href(&t.name, Some(t.version)), true, &message))
        }
        Err(e) => {
            let problems = refusal(e)?;
            list_page(&state, &session, &form.document, problems).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct VersionQuery {
    #[serde(default)]
    version: Option<u64>,
}

/// The instantiate form as sent: fixed fields, `var.NAME` per variable, and per host group
/// `hosts.GROUP`, `selector.GROUP` and `count.GROUP`.
#[derive(Debug, Clone, Default)]
struct InstantiateForm {
    cluster: String,
    version: Option<u64>,
    fields: BTreeMap<String, String>,
}

impl InstantiateForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> InstantiateForm {
        let mut form = InstantiateForm::default();
        for (k, v) in pairs {
            match k.as_str() {
                "cluster" => form.cluster = v.trim().to_owned(),
                "version" => form.version = v.trim().parse().ok(),
                "_csrf" => {}
                _ => {
                    form.fields.insert(k, v);
                }
            }
        }
        form
    }

    fn field(&self, prefix: &str, name: &str) -> &str {
        self.fields.get(&format!("{prefix}.{name}")).map(String::as_str).unwrap_or("").trim()
    }

    /// The REST request the form stands for, or what cannot even be read. A variable left blank
    /// is not given (its default applies, or the domain names it as missing); a value is read
    /// as JSON when it is a number, `true`/`false` or quoted, else taken as text.
    fn request(&self, t: &Template) -> Result<Instantiate, String> {
        let mut variables = BTreeMap::new();
        for v in &t.variables {
            let raw = self.fields.get(&format!("var.{}", v.name)).map(String::as_str).unwrap_or("");
            let text = if v.sensitive { raw } else { raw.trim() };
            if text.is_empty() {
                continue;
            }
            let value = match serde_json::from_str::<Value>(text) {
                Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::String(_))) if !v.sensitive => value,
                _ => Value::String(text.to_owned()),
            };
            variables.insert(v.name.clone(), value);
        }
        let mut host_groups = BTreeMap::new();
        for g in &t.host_groups {
            let hosts: Vec<String> = self
                .field("hosts", &g.name)
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
            let selector = self.field("selector", &g.name);
            let count = self.field("count", &g.name);
            let docker = self.field("docker", &g.name);
            if !docker.is_empty() {
                if !hosts.is_empty() || !selector.is_empty() || !count.is_empty() {
                    return Err(format!(
                        "host group {}: give hosts, a selector and count, or new containers, not several",
                        g.name
                    ));
                }
                let n = docker.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("host group {}: new containers must be a whole number, at least 1, not {docker:?}", g.name)
                })?;
                host_groups.insert(
                    g.name.clone(),
                    HostGroupHosts::Provider {
                        provider: drover_api::templates::ProviderKind::Docker,
                        count: Some(n),
                        image: None,
                        network: None,
                        cpus: None,
                        memory: None,
                    },
                );
                continue;
            }
            if !hosts.is_empty() {
                if !selector.is_empty() || !count.is_empty() {
                    return Err(format!("host group {}: give either hosts or a selector and count, not both", g.name));
                }
                host_groups.insert(g.name.clone(), HostGroupHosts::Hosts { hosts });
                continue;
            }
            let count = match count {
                "" => None,
                c => Some(c.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("host group {}: count must be a whole number of hosts, at least 1, not {c:?}", g.name)
                })?),
            };
            let selector = Some(selector.to_owned()).filter(|s| !s.is_empty());
            if selector.is_some() || count.is_some() {
                host_groups.insert(g.name.clone(), HostGroupHosts::Selector { selector, count });
            }
        }
        Ok(Instantiate { cluster: self.cluster.clone(), version: self.version, variables, host_groups })
    }
}

async fn show(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> PageResult {
    let t = domain::templates::get(&state, &session.actor(), &name, q.version).await?;
    let form = InstantiateForm { version: Some(t.version), ..InstantiateForm::default() };
    template_page(&state, &session, t, &form, Vec::new()).await
}

async fn template_page(
    state: &AppState,
    session: &Session,
    t: StoredTemplate,
    form: &InstantiateForm,
    problems: Vec<String>,
) -> PageResult {
    let actor = session.actor();
    let latest = domain::templates::list(state, &actor)
        .await?
        .into_iter()
        .find(|s| s.name == t.name)
        .map_or(t.version, |s| s.latest_version);
    let doc = &t.document;
    let yaml = domain::templates::to_yaml(doc)?;
    let variables: Vec<Value> = doc
        .variables
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "description": v.description,
                "sensitive": v.sensitive,
                "default": v.default.as_ref().map(shown_value),
                "field": format!("var.{}", v.name),
                "value": if v.sensitive { "" } else { form.field("var", &v.name) },
                "required": v.default.is_none(),
            })
        })
        .collect();
    let services: Vec<Value> = doc
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "type": s.service_type,
                "values": values_text(&s.config),
                "groups": s.groups.iter().map(|g| json!({
                    "name": g.name, "role_type": g.role_type, "values": values_text(&g.config),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let host_groups: Vec<Value> = doc
        .host_groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "cardinality": g.cardinality,
                "selector": g.selector,
                "roles": g.roles.iter().map(|r| format!("{}/{} ({})", r.service, r.role_type, r.group_name()))
                    .collect::<Vec<_>>(),
                "hosts_field": format!("hosts.{}", g.name),
                "selector_field": format!("selector.{}", g.name),
                "count_field": format!("count.{}", g.name),
                "docker_field": format!("docker.{}", g.name),
                "docker": form.field("docker", &g.name),
                "hosts": form.field("hosts", &g.name),
                "selector_value": form.field("selector", &g.name),
                "count": form.field("count", &g.name),
            })
        })
        .collect();
    let parcels: Vec<String> = doc.parcels.iter().map(|p| format!("{} {}", p.name, p.version)).collect();
    // Instantiating needs several rights; the domain checks each, this only hides the form.
    let may_instantiate = actor.may(Permission::HostsWrite, Scope::Global);
    let refused = !problems.is_empty();
    let resp = session.page(
        state,
        "template",
        &format!("Template {}", t.name),
        "templates",
        json!({
            "name": t.name,
            "template_version": t.version,
            "latest": latest,
            "is_latest": t.version == latest,
            "latest_href": template_href(&t.name, None),
            "older_href": (t.version > 1).then(|| template_href(&t.name, Some(t.version - 1))),
            "newer_href": (t.version < latest).then(|| template_href(&t.name, Some(t.version + 1))),
            "description": t.description,
            "created_at": t.created_at,
            "created_by": t.created_by,
            "variables_count": variables.len(),
            "variables": variables,
            "services_count": services.len(),
            "services": services,
            "host_groups_count": host_groups.len(),
            "host_groups": host_groups,
            "parcels": parcels,
            "yaml": yaml,
            "download": yaml_download(&t.name, t.version),
            "instantiate_action": format!("{}/instantiate", template_href(&t.name, None)),
            "delete_action": format!("{}/delete", template_href(&t.name, None)),
            "may_instantiate": may_instantiate,
            "may_delete": actor.may(Permission::ServicesWrite, Scope::Global),
            "form": {"cluster": form.cluster},
            "problems": problems,
        }),
    );
    Ok(if refused { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

async fn instantiate(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, pairs): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let form = InstantiateForm::from_pairs(pairs);
    let actor = session.actor();
    let t = domain::templates::get(&state, &actor, &name, form.version).await?;
    let req = match form.request(&t.document) {
        Ok(r) => r,
        Err(e) => return template_page(&state, &session, t, &form, vec![e]).await,
    };
    match domain::templates::instantiate::instantiate(&state, &actor, &name, req).await {
        Ok(command) => {
            let message = format!(
                "instantiating template {} version {} into cluster {}: command {} shows each step",
                t.name, t.version, form.cluster, command.id
            );
            Ok(redirect_with(&format!("/commands/{}", url_encode(&command.id)), true, &message))
        }
        Err(e) => {
            let problems = refusal(e)?;
            template_page(&state, &session, t, &form, problems).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirmed: String,
    /// Blank: every version.
    #[serde(default)]
    version: String,
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<DeleteForm>,
) -> PageResult {
    let actor = session.actor();
    let version = match form.version.trim() {
        "" => None,
        v => Some(v.parse::<u64>().map_err(|_| ConsoleError::new(StatusCode::BAD_REQUEST, "invalid version"))?),
    };
    if form.confirmed != "yes" {
        // Shown only for what exists.
        let t = domain::templates::get(&state, &actor, &name, version).await?;
        let what = match version {
            Some(v) => format!("Delete version {v} of template {}? Clusters made from it stay as they are.", t.name),
            None => format!("Delete template {} with every version? Clusters made from it stay as they are.", t.name),
        };
        let hidden = vec![
            ("confirmed".to_owned(), "yes".to_owned()),
            ("version".to_owned(), version.map(|v| v.to_string()).unwrap_or_default()),
        ];
        let action = format!("{}/delete", template_href(&name, None));
        let back = template_href(&name, version);
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &back, Vec::new(), 1));
    }
    match domain::templates::delete(&state, &actor, &name, version).await {
        Ok(()) => {
            let message = match version {
                Some(v) => format!("version {v} of template {name} deleted"),
                None => format!("template {name} deleted with every version"),
            };
            Ok(redirect_with(TEMPLATES, true, &message))
        }
        Err(e) => Err(ConsoleError::from(e)),
    }
}

async fn export(State(state): State<Arc<AppState>>, session: Session, Path(cluster): Path<String>) -> PageResult {
    let e = domain::templates::export(&state, &session.actor(), &cluster).await?;
    let yaml = domain::templates::to_yaml(&e.template)?;
    Ok(session.page(
        &state,
        "template_export",
        &format!("Template of {cluster}"),
        "clusters",
        json!({
            "cluster": cluster,
            "cluster_href": super::clusters::cluster_href(&cluster),
            "name": e.template.name,
            "services": e.template.services.len(),
            "host_groups": e.template.host_groups.len(),
            "variables": e.template.variables.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
            "warnings_count": e.warnings.len(),
            "warnings": e.warnings,
            "yaml": yaml,
            "download": format!("/api/v1/clusters/{}/template?format=yaml", url_encode(&cluster)),
            "may_upload": session.actor().may(Permission::ServicesWrite, Scope::Global),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::templates::{HostGroup, Variable};

    fn template() -> Template {
        Template {
            name: "cache".into(),
            variables: vec![
                Variable { name: "pw".into(), sensitive: true, ..Variable::default() },
                Variable { name: "mem".into(), default: Some(json!("64mb")), ..Variable::default() },
                Variable { name: "port".into(), ..Variable::default() },
            ],
            host_groups: vec![
                HostGroup { name: "primary".into(), cardinality: 1, ..HostGroup::default() },
                HostGroup { name: "replicas".into(), cardinality: 2, ..HostGroup::default() },
            ],
            ..Template::default()
        }
    }

    fn form(pairs: &[(&str, &str)]) -> InstantiateForm {
        InstantiateForm::from_pairs(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn the_form_becomes_the_rest_request() {
        let f = form(&[
            ("_csrf", "x"),
            ("cluster", " dev "),
            ("version", "3"),
            ("var.pw", " s3cret "),
            ("var.mem", ""),
            ("var.port", "6390"),
            ("hosts.primary", "node-1"),
            ("selector.replicas", "tier=cache"),
            ("count.replicas", "2"),
        ]);
        let r = f.request(&template()).unwrap();
        assert_eq!(r.cluster, "dev");
        assert_eq!(r.version, Some(3));
        // A sensitive value is text exactly as typed; a blank variable is left to its default.
        assert_eq!(r.variables["pw"], json!(" s3cret "));
        assert!(!r.variables.contains_key("mem"));
        assert_eq!(r.variables["port"], json!(6390));
        assert_eq!(r.host_groups["primary"], HostGroupHosts::Hosts { hosts: vec!["node-1".into()] });
        assert_eq!(
            r.host_groups["replicas"],
            HostGroupHosts::Selector { selector: Some("tier=cache".into()), count: Some(2) }
        );
    }

    #[test]
    fn a_group_left_blank_takes_the_templates_defaults_and_bad_counts_are_named() {
        let r = form(&[("cluster", "dev")]).request(&template()).unwrap();
        assert!(r.host_groups.is_empty());
        let e = form(&[("cluster", "dev"), ("count.replicas", "two")]).request(&template()).unwrap_err();
        assert!(e.contains("replicas") && e.contains("two"), "{e}");
        let e = form(&[("cluster", "dev"), ("hosts.primary", "a"), ("count.primary", "1")])
            .request(&template())
            .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let r = form(&[("cluster", "dev"), ("docker.replicas", "3")]).request(&template()).unwrap();
        assert!(matches!(r.host_groups["replicas"], HostGroupHosts::Provider { count: Some(3), .. }), "{r:?}");
        let e = form(&[("cluster", "dev"), ("docker.replicas", "3"), ("count.replicas", "2")])
            .request(&template())
            .unwrap_err();
        assert!(e.contains("not several"), "{e}");
        let e = form(&[("cluster", "dev"), ("docker.replicas", "0")]).request(&template()).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn a_templates_problems_are_listed_one_a_line() {
        let e = DomainError::Invalid(
            "template cache is invalid (2 problems): services[0].type: unknown service type \"redix\"; known \
             types: nginx, redis; host_groups[0].roles[0].service: no service \"web\" in the template"
                .into(),
        );
        let lines = problems_of(&e);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].starts_with("services[0].type:") && lines[1].ends_with("known types: nginx, redis"),
            "{lines:?}"
        );
        assert!(lines[2].starts_with("host_groups[0].roles[0].service:"));
        assert_eq!(problems_of(&DomainError::NotFound("cluster x not found".into())), ["cluster x not found"]);
    }
}
