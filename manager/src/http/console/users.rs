//! Users (administrators only, as [`crate::domain::users`] decides): the
//! list with roles, state and last sign-in and the form that creates a user;
//! one user's page to add and remove roles, disable or enable them, set their
//! password and delete them. Every change goes through `domain::users` with
//! the session's actor; this file holds no permission logic.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use drover_api::users::{Grant, Role, UserInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{name}", get(show))
        .route("/users/{name}/grants", post(add_grant))
        .route("/users/{name}/grants/remove", post(remove_grant))
        .route("/users/{name}/disable", post(disable))
        .route("/users/{name}/enable", post(enable))
        .route("/users/{name}/password", post(reset_password))
        .route("/users/{name}/delete", post(delete))
}

/// How many role rows the create form offers.
const ROLE_ROWS: usize = 3;

fn user_href(name: &str) -> String {
    format!("/users/{}", url_encode(name))
}

/// Every role with what it carries and whether it may be limited to a
/// cluster, for the forms' selects and the explanation table.
fn roles() -> Vec<Value> {
    Role::ALL
        .iter()
        .map(|r| {
            let permissions: Vec<&str> = r.permissions().iter().map(|p| p.as_str()).collect();
            json!({"name": r.as_str(), "permissions": permissions.join(", "), "cluster_scoped": r.cluster_scoped()})
        })
        .collect()
}

async fn cluster_names(state: &AppState, session: &Session) -> Result<Vec<String>, DomainError> {
    Ok(domain::clusters::list(state, &session.actor()).await?.into_iter().map(|c| c.name).collect())
}

fn user_row(u: &UserInfo) -> Value {
    json!({
        "username": u.username,
        "href": user_href(&u.username),
        "grants": u.grants.iter().map(Grant::to_string).collect::<Vec<_>>(),
        "disabled": u.disabled,
        "source": match u.source { drover_api::users::UserSource::Local => "local", drover_api::users::UserSource::Ldap => "ldap" },
        "last_sign_in_at": u.last_sign_in_at,
        "created_at": u.created_at,
    })
}

/// The create form as sent, kept when it is shown again with an error.
#[derive(Debug, Default, Deserialize)]
struct CreateForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
    #[serde(default)]
    role: Vec<String>,
    #[serde(default)]
    cluster: Vec<String>,
}

async fn list(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    list_page(&state, &session, &CreateForm::default(), None).await
}

async fn list_page(state: &AppState, session: &Session, form: &CreateForm, error: Option<String>) -> PageResult {
    let users = domain::users::list(state, &session.actor(), 1000).await?;
    let rows: Vec<Value> = (0..ROLE_ROWS)
        .map(|i| {
            json!({
                "index": i,
                "role": form.role.get(i).cloned().unwrap_or_default(),
                "cluster": form.cluster.get(i).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let resp = session.page(
        state,
        "users",
        "Users",
        "users",
        json!({
            "users": users.iter().map(user_row).collect::<Vec<_>>(),
            "roles": roles(),
            "clusters": cluster_names(state, session).await?,
            "min_password": domain::accounts::MIN_PASSWORD_LEN,
            "form": {"username": form.username, "rows": rows},
            "error": error,
        }),
    );
    Ok(if error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

/// `role` and `cluster` rows as grants; a row without a role is skipped.
fn form_grants(roles: &[String], clusters: &[String]) -> Result<Vec<Grant>, String> {
    let mut grants = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let role = role.trim();
        if role.is_empty() {
            continue;
        }
        let cluster = clusters.get(i).map(|c| c.trim()).unwrap_or_default();
        let text = if cluster.is_empty() { role.to_owned() } else { format!("{role}@{cluster}") };
        let grant = Grant::parse(&text).ok_or_else(|| format!("unknown role {role:?}"))?;
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    Ok(grants)
}

async fn create(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<CreateForm>) -> PageResult {
    if form.password != form.repeat {
        let error = "the password and its repetition differ; type the same password twice".to_owned();
        return list_page(&state, &session, &form, Some(error)).await;
    }
    let grants = match form_grants(&form.role, &form.cluster) {
        Ok(g) => g,
        Err(e) => return list_page(&state, &session, &form, Some(e)).await,
    };
    let name = form.username.trim();
    match domain::users::create(&state, &session.actor(), name, &form.password, grants).await {
        Ok(u) => Ok(redirect_with(
            &user_href(&u.username),
            true,
            &format!("user {} created with {}", u.username, domain::accounts::describe(&u.grants)),
        )),
        Err(e) => {
            let (_, message) = form_error(e)?;
            list_page(&state, &session, &form, Some(message)).await
        }
    }
}

/// Errors shown next to the forms of a user's page.
#[derive(Default)]
struct Errors {
    grants: Option<String>,
    state: Option<String>,
    password: Option<String>,
    delete: Option<String>,
}

impl Errors {
    fn any(&self) -> bool {
        self.grants.is_some() || self.state.is_some() || self.password.is_some() || self.delete.is_some()
    }
}

async fn show(State(state): State<Arc<AppState>>, session: Session, Path(name): Path<String>) -> PageResult {
    user_page(&state, &session, &name, Errors::default(), StatusCode::OK).await
}

async fn user_page(state: &AppState, session: &Session, name: &str, errors: Errors, status: StatusCode) -> PageResult {
    let user = domain::users::get(state, &session.actor(), name).await?;
    // `get` lets anyone read themselves: the list (which needs users.write)
    // keeps this page to those who may manage users.
    domain::users::list(state, &session.actor(), 1).await?;
    let href = user_href(&user.username);
    let grants: Vec<Value> = user
        .grants
        .iter()
        .map(|g| json!({"grant": g.to_string(), "remove": format!("{href}/grants/remove")}))
        .collect();
    let title = format!("User {}", user.username);
    let resp = session.page(
        state,
        "user",
        &title,
        "users",
        json!({
            "u": user_row(&user),
            "href": href,
            "grants": grants,
            "roles": roles(),
            "clusters": cluster_names(state, session).await?,
            "min_password": domain::accounts::MIN_PASSWORD_LEN,
            "is_self": user.username == session.user.username,
            "local": user.source == drover_api::users::UserSource::Local,
            "grants_error": errors.grants,
            "state_error": errors.state,
            "password_error": errors.password,
            "delete_error": errors.delete,
        }),
    );
    Ok(if errors.any() { (status, resp).into_response() } else { resp })
}

/// A refusal to show next to the form that caused it, with its status: 409
/// for the state of the users (the last administrator), 422 for a value or
/// rule the form broke. Anything else (not found, forbidden, the database)
/// is an error page.
fn form_error(e: DomainError) -> Result<(StatusCode, String), ConsoleError> {
    match e {
        DomainError::NotFound(_)
        | DomainError::Forbidden { .. }
        | DomainError::Unavailable(_)
        | DomainError::Internal(_) => Err(e.into()),
        DomainError::Conflict(_) => Ok((StatusCode::CONFLICT, domain_message(&e))),
        e => Ok((StatusCode::UNPROCESSABLE_ENTITY, domain_message(&e))),
    }
}

#[derive(Debug, Deserialize)]
struct GrantForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    cluster: String,
}

async fn add_grant(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<GrantForm>,
) -> PageResult {
    let user = domain::users::get(&state, &session.actor(), &name).await?;
    let grant = match form_grants(std::slice::from_ref(&form.role), std::slice::from_ref(&form.cluster)) {
        Ok(g) if !g.is_empty() => g[0].clone(),
        Ok(_) => {
            let errors = Errors { grants: Some("choose a role to add".into()), ..Default::default() };
            return user_page(&state, &session, &name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        Err(e) => {
            let errors = Errors { grants: Some(e), ..Default::default() };
            return user_page(&state, &session, &name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    if user.grants.contains(&grant) {
        return Ok(redirect_with(&user_href(&name), true, &format!("user {name} already has {grant}")));
    }
    let mut grants = user.grants.clone();
    grants.push(grant.clone());
    match domain::users::update(&state, &session.actor(), &name, Some(grants), None).await {
        Ok(u) => Ok(redirect_with(
            &user_href(&name),
            true,
            &format!("{grant} granted; {name} now has {}", domain::accounts::describe(&u.grants)),
        )),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let errors = Errors { grants: Some(message), ..Default::default() };
            user_page(&state, &session, &name, errors, status).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct RemoveGrantForm {
    #[serde(default)]
    grant: String,
}

async fn remove_grant(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<RemoveGrantForm>,
) -> PageResult {
    let user = domain::users::get(&state, &session.actor(), &name).await?;
    let Some(grant) = Grant::parse(form.grant.trim()).filter(|g| user.grants.contains(g)) else {
        return Ok(redirect_with(&user_href(&name), false, &format!("user {name} has no role {:?}", form.grant)));
    };
    let grants: Vec<Grant> = user.grants.iter().filter(|g| **g != grant).cloned().collect();
    match domain::users::update(&state, &session.actor(), &name, Some(grants), None).await {
        Ok(u) => Ok(redirect_with(
            &user_href(&name),
            true,
            &format!("{grant} removed; {name} now has {}", domain::accounts::describe(&u.grants)),
        )),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let errors = Errors { grants: Some(message), ..Default::default() };
            user_page(&state, &session, &name, errors, status).await
        }
    }
}

async fn disable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let user = domain::users::get(&state, &session.actor(), &name).await?;
    let href = user_href(&name);
    if form.confirmed != "yes" {
        let what = format!(
            "Disable user {name}: they cannot sign in any more and their console sessions end now. \
             Their API tokens are refused while they are disabled. You can enable them again."
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{href}/disable");
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &href, vec![user.username], 1));
    }
    set_disabled(&state, &session, &name, true).await
}

async fn enable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, _form): CsrfForm<ConfirmForm>,
) -> PageResult {
    set_disabled(&state, &session, &name, false).await
}

async fn set_disabled(state: &AppState, session: &Session, name: &str, disabled: bool) -> PageResult {
    match domain::users::update(state, &session.actor(), name, None, Some(disabled)).await {
        Ok(_) => {
            let message = if disabled {
                format!("user {name} disabled; their console sessions ended")
            } else {
                format!("user {name} enabled")
            };
            Ok(redirect_with(&user_href(name), true, &message))
        }
        Err(e) => {
            let (status, message) = form_error(e)?;
            let errors = Errors { state: Some(message), ..Default::default() };
            user_page(state, session, name, errors, status).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

async fn reset_password(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<PasswordForm>,
) -> PageResult {
    if form.new != form.repeat {
        let errors = Errors {
            password: Some("the new password and its repetition differ; type the same password twice".into()),
            ..Default::default()
        };
        return user_page(&state, &session, &name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match domain::users::reset_password(&state, &session.actor(), &name, &form.new).await {
        Ok(()) => Ok(redirect_with(
            &user_href(&name),
            true,
            &format!("password of {name} set; their console sessions were signed out"),
        )),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let errors = Errors { password: Some(message), ..Default::default() };
            user_page(&state, &session, &name, errors, status).await
        }
    }
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let user = domain::users::get(&state, &session.actor(), &name).await?;
    let href = user_href(&name);
    if form.confirmed != "yes" {
        let what = format!(
            "Delete user {name} (roles: {}): their API tokens and console sessions end. This cannot be undone.",
            domain::accounts::describe(&user.grants)
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{href}/delete");
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &href, vec![user.username], 1));
    }
    match domain::users::delete(&state, &session.actor(), &name).await {
        Ok(()) => Ok(redirect_with("/users", true, &format!("user {name} deleted"))),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let errors = Errors { delete: Some(message), ..Default::default() };
            user_page(&state, &session, &name, errors, status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_rows_become_grants() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            form_grants(&s(&["operator", "", "viewer", "operator"]), &s(&["prod", "x", "", " prod "])),
            Ok(vec![Grant::on(Role::Operator, "prod"), Grant::global(Role::Viewer)])
        );
        assert_eq!(form_grants(&s(&["root"]), &s(&[""])), Err("unknown role \"root\"".to_owned()));
        assert_eq!(form_grants(&s(&["admin"]), &[]), Ok(vec![Grant::global(Role::Admin)]));
    }
}
