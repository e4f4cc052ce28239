//! The console's environments page (`/environments`): every environment the
//! user may see with owner, template, state, expiry, containers and health;
//! a form that brings one up from a stored template or a snapshot (the same
//! domain call as `POST /api/v1/environments`, leading to its instantiation
//! command's page); take-down, confirmed first; snapshots: taken from an
//! environment's row, listed, deleted after a confirmation.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use drover_api::environments::{CreateEnvironment, CreateSnapshot, EnvironmentView, SnapshotView};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError, Permission, Scope};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/environments", get(list).post(up))
        .route("/environments/{name}/down", post(down))
        .route("/environments/{name}/snapshot", post(snapshot))
        .route("/snapshots/{name}/delete", post(delete_snapshot))
}

/// What to tell the user of a refusal: the Docker engine's own words say what
/// to fix; a database outage stays generic.
fn refusal(e: &DomainError) -> String {
    match e {
        DomainError::Unavailable(m) if m.contains("Docker engine") => m.clone(),
        e => domain_message(e),
    }
}

/// The prefix of the option values that name a snapshot in the source list.
const SNAPSHOT_SOURCE: &str = "snapshot:";

/// The bring-up form's fields as sent.
#[derive(Debug, Default, Deserialize)]
struct UpForm {
    #[serde(default)]
    name: String,
    /// A template's name, or `snapshot:NAME`.
    #[serde(default)]
    template: String,
    /// Blank: the manager's default.
    #[serde(default)]
    ttl: String,
    /// Blank: the user.
    #[serde(default)]
    owner: String,
    /// `NAME=VALUE` per line.
    #[serde(default)]
    variables: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    network: String,
}

impl UpForm {
    /// The REST request the form stands for, or what is wrong with it.
    fn request(&self) -> Result<CreateEnvironment, String> {
        if self.name.trim().is_empty() {
            return Err("give the environment a name".into());
        }
        if self.template.trim().is_empty() {
            return Err("choose a template or a snapshot".into());
        }
        let (template, from_snapshot) = match self.template.trim().strip_prefix(SNAPSHOT_SOURCE) {
            Some(snap) => (String::new(), Some(snap.to_owned())),
            None => (self.template.trim().to_owned(), None),
        };
        let mut variables = BTreeMap::new();
        for (i, line) in self.variables.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("variables, line {}: write NAME=VALUE, got {line:?}", i + 1))?;
            variables.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
        }
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(CreateEnvironment {
            name: self.name.trim().to_owned(),
            template,
            from_snapshot,
            version: None,
            variables,
            owner: opt(&self.owner),
            ttl: opt(&self.ttl),
            image: opt(&self.image),
            network: opt(&self.network),
            host_groups: BTreeMap::new(),
        })
    }
}

async fn list(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    page(&state, &session, &UpForm::default(), None).await
}

fn row(e: &EnvironmentView) -> Value {
    json!({
        "name": e.name,
        "cluster_href": super::clusters::cluster_href(&e.cluster),
        "owner": e.owner,
        "template": e.template,
        "template_version": e.template_version,
        "template_href": format!("/templates/{}?version={}", url_encode(&e.template), e.template_version),
        "state": e.state.as_str(),
        "created_at": e.created_at,
        "expires_at": e.expires_at.clone().unwrap_or_else(|| "never".into()),
        "hosts": e.hosts,
        "health": e.health.map(|h| format!("{h:?}").to_lowercase()),
        "command_href": format!("/commands/{}", url_encode(&e.command_id)),
        "down": format!("/environments/{}/down", url_encode(&e.name)),
    })
}

fn snapshot_row(s: &SnapshotView) -> Value {
    json!({
        "name": s.name,
        "environment": s.environment,
        "created_at": s.created_at,
        "created_by": s.created_by,
        "containers": s.hosts.len(),
        "images": s.hosts.iter().map(|h| h.image.clone()).collect::<Vec<_>>(),
        "delete": format!("/snapshots/{}/delete", url_encode(&s.name)),
    })
}

async fn page(state: &AppState, session: &Session, form: &UpForm, error: Option<String>) -> PageResult {
    let actor = session.actor();
    let envs = domain::environments::list(state, &actor).await?;
    let snapshots = domain::environments::snapshots(state, &actor).await?;
    let may_up = actor.may(Permission::FleetEnroll, Scope::Global);
    let snapshot_templates: Vec<String> = snapshots.iter().map(|s| s.template.clone()).collect();
    let mut templates: Vec<Value> = if may_up {
        domain::templates::list(state, &actor)
            .await?
            .into_iter()
            // A snapshot's template comes back with its data only as the snapshot.
            .filter(|t| !snapshot_templates.contains(&t.name))
            .map(|t| {
                let label = format!("{} (v{})", t.name, t.latest_version);
                json!({"value": t.name, "label": label, "selected": t.name == form.template})
            })
            .collect()
    } else {
        Vec::new()
    };
    if may_up {
        for s in &snapshots {
            let value = format!("{SNAPSHOT_SOURCE}{}", s.name);
            let label = format!("snapshot {} of {} ({})", s.name, s.environment, s.created_at);
            templates.push(json!({"value": value, "label": label, "selected": value == form.template}));
        }
    }
    let creating = envs.iter().any(|e| e.state == drover_api::environments::EnvironmentState::Creating);
    let rows: Vec<Value> = envs.iter().map(row).collect();
    let resp = session.page(
        state,
        "environments",
        "Environments",
        "environments",
        json!({
            "environments": rows,
            "snapshots": snapshots.iter().map(snapshot_row).collect::<Vec<_>>(),
            "creating": creating,
            "may_up": may_up,
            "templates": templates,
            "default_ttl": state.config.env_default_ttl,
            "max_hosts": state.config.env_max_hosts_per_owner,
            "form": {
                "name": form.name, "ttl": form.ttl, "owner": form.owner, "variables": form.variables,
                "image": form.image, "network": form.network,
            },
            "error": error,
        }),
    );
    Ok(if error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

async fn up(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<UpForm>) -> PageResult {
    let req = match form.request() {
        Ok(r) => r,
        Err(e) => return page(&state, &session, &form, Some(e)).await,
    };
    match domain::environments::create(&state, &session.actor(), req).await {
        Ok(d) => {
            let e = &d.environment;
            let message = format!(
                "environment {} is coming up from template {} v{}: {} containers; this command shows each step",
                e.name, e.template, e.template_version, e.hosts
            );
            Ok(redirect_with(&format!("/commands/{}", url_encode(&e.command_id)), true, &message))
        }
        Err(e @ (DomainError::Forbidden { .. } | DomainError::Internal(_))) => Err(e.into()),
        Err(e) => page(&state, &session, &form, Some(refusal(&e))).await,
    }
}

async fn down(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let actor = session.actor();
    if form.confirmed != "yes" {
        let d = domain::environments::detail(&state, &actor, &name).await?;
        let e = &d.environment;
        let what = format!(
            "Take environment {} of {} down? Its {} services, {} containers with their volumes, its hosts and \
             cluster are removed for good.",
            e.name,
            e.owner,
            d.endpoints.iter().map(|p| p.service.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
            d.containers.len()
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/environments/{}/down", url_encode(&name));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, "/environments", Vec::new(), 1));
    }
    match domain::environments::delete(&state, &actor, &name).await {
        Ok(t) => Ok(redirect_with(
            "/environments",
            true,
            &format!(
                "environment {name} taken down in {:.1}s: {} services, {} containers and their volumes removed",
                t.seconds,
                t.services.len(),
                t.containers.len()
            ),
        )),
        Err(e @ (DomainError::Conflict(_) | DomainError::Unavailable(_))) => {
            Ok(redirect_with("/environments", false, &refusal(&e)))
        }
        Err(e) => Err(ConsoleError::from(e)),
    }
}

/// The snapshot form on an environment's row: its name.
#[derive(Debug, Default, Deserialize)]
struct SnapshotForm {
    #[serde(default)]
    snapshot: String,
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<SnapshotForm>,
) -> PageResult {
    let req = CreateSnapshot { name: form.snapshot.trim().to_owned() };
    match domain::environments::snapshot(&state, &session.actor(), &name, req).await {
        Ok(s) => {
            let mut message = format!(
                "snapshot {} of environment {name}: {} containers committed; bring it up from the form above",
                s.name,
                s.hosts.len()
            );
            for w in &s.warnings {
                message.push_str(&format!("; warning: {w}"));
            }
            Ok(redirect_with("/environments", true, &message))
        }
        Err(e @ (DomainError::Forbidden { .. } | DomainError::Internal(_))) => Err(e.into()),
        Err(e) => Ok(redirect_with("/environments", false, &refusal(&e))),
    }
}

async fn delete_snapshot(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let actor = session.actor();
    if form.confirmed != "yes" {
        let s = domain::environments::get_snapshot(&state, &actor, &name).await?;
        let what = format!(
            "Delete snapshot {} of environment {} (taken {} by {})? Its {} images and its template are removed for \
             good.",
            s.name,
            s.environment,
            s.created_at,
            s.created_by,
            s.hosts.len()
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/snapshots/{}/delete", url_encode(&name));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, "/environments", Vec::new(), 1));
    }
    match domain::environments::delete_snapshot(&state, &actor, &name).await {
        Ok(()) => Ok(redirect_with("/environments", true, &format!("snapshot {name} deleted with its images"))),
        Err(e @ (DomainError::Conflict(_) | DomainError::Unavailable(_))) => {
            Ok(redirect_with("/environments", false, &refusal(&e)))
        }
        Err(e) => Err(ConsoleError::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::UpForm;

    #[test]
    fn the_form_becomes_the_rest_request() {
        let f = UpForm {
            name: " dev ".into(),
            template: "stack".into(),
            ttl: "2h".into(),
            variables: "cache_requirepass = s3cret\n\nweb_port=9000\n".into(),
            ..UpForm::default()
        };
        let r = f.request().unwrap();
        assert_eq!((r.name.as_str(), r.template.as_str(), r.ttl.as_deref()), ("dev", "stack", Some("2h")));
        assert_eq!(r.variables["cache_requirepass"], "s3cret");
        assert_eq!(r.variables["web_port"], "9000");
        assert_eq!((r.owner, r.image), (None, None));
        let from = UpForm { template: "snapshot:before".into(), ..UpForm::default() };
        let from = UpForm { name: "copy".into(), ..from }.request().unwrap();
        assert_eq!((from.template.as_str(), from.from_snapshot.as_deref()), ("", Some("before")));
        let bad = UpForm { variables: "oops".into(), ..f };
        assert!(bad.request().unwrap_err().contains("line 1: write NAME=VALUE"));
        assert!(UpForm::default().request().unwrap_err().contains("name"));
    }
}
