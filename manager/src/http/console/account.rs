//! The signed-in user's account: name and role, changing the password (which
//! ends every console session of the user, so this one gets a new cookie),
//! API tokens (list, create shown once, revoke).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/account", get(page))
        .route("/account/password", post(change_password))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
}

/// What a re-rendered page shows besides the account: a form's error with
/// the input kept, or the token just created.
#[derive(Default)]
struct Extra {
    password_error: Option<String>,
    token_error: Option<String>,
    token_name: String,
    token_ttl: String,
    created: Option<Value>,
}

async fn render(state: &AppState, session: &Session, extra: Extra) -> PageResult {
    let tokens = domain::accounts::list_api_tokens(state, &session.actor(), &session.user).await?;
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({"id": t.id, "name": t.name, "created_at": t.created_at, "expires_at": t.expires_at,
                   "revoke": format!("/account/tokens/{}/revoke", url_encode(&t.id))})
        })
        .collect();
    Ok(session.page(
        state,
        "account",
        "Account",
        "account",
        json!({
            "account": {"username": session.user.username, "roles": domain::accounts::describe(&session.user.grants),
                        "created_at": crate::model::rfc3339(session.user.created_at)},
            "min_password": domain::accounts::MIN_PASSWORD_LEN,
            "tokens": tokens,
            "password_error": extra.password_error,
            "token_error": extra.token_error,
            "token_name": extra.token_name,
            "token_ttl": extra.token_ttl,
            "created": extra.created,
        }),
    ))
}

async fn page(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    render(&state, &session, Extra::default()).await
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

async fn change_password(
    State(state): State<Arc<AppState>>,
    CsrfForm(session, form): CsrfForm<PasswordForm>,
) -> PageResult {
    if form.new != form.repeat {
        let extra = Extra {
            password_error: Some("the new password and its repetition differ; type the same password twice".into()),
            ..Default::default()
        };
        return render(&state, &session, extra).await;
    }
    match domain::accounts::change_password(&state, &session.actor(), &session.user, &form.current, &form.new).await {
        Ok(()) => {
            // The change ended every console session of the user: this
            // browser continues in a new one.
            let cookie = super::start_session(&state, &session.user).await?;
            let mut resp =
                redirect_with("/account", true, "password changed; your other console sessions were signed out");
            resp.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(resp)
        }
        Err(
            e @ (DomainError::Invalid(_)
            | DomainError::Refused(_)
            | DomainError::Conflict(_)
            | DomainError::Unsuitable(_)),
        ) => render(&state, &session, Extra { password_error: Some(domain_message(&e)), ..Default::default() }).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ttl_days: String,
}

/// Creates a token and shows it on this answer only (never in a cookie).
async fn create_token(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<TokenForm>) -> PageResult {
    let keep = |error: String| Extra {
        token_error: Some(error),
        token_name: form.name.clone(),
        token_ttl: form.ttl_days.clone(),
        ..Default::default()
    };
    let ttl = match form.ttl_days.trim() {
        "" => None,
        t => match t.parse::<f64>() {
            Ok(days) if days > 0.0 && days.is_finite() => Some((days * 86_400.0).round().max(1.0) as u64),
            _ => {
                return render(&state, &session, keep(format!("valid for (days) must be a number above 0, got {t:?}")))
                    .await;
            }
        },
    };
    match domain::accounts::create_api_token(&state, &session.actor(), &session.user, &form.name, ttl, None).await {
        Ok(t) => {
            let created = json!({"id": t.id, "name": t.name, "token": t.token, "expires_at": t.expires_at});
            render(&state, &session, Extra { created: Some(created), ..Default::default() }).await
        }
        Err(e @ (DomainError::Invalid(_) | DomainError::Refused(_))) => {
            render(&state, &session, keep(domain_message(&e))).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let tokens = domain::accounts::list_api_tokens(&state, &session.actor(), &session.user).await?;
    let name = tokens.iter().find(|t| t.id == id).map(|t| t.name.clone());
    let Some(name) = name else {
        return Ok(redirect_with("/account", false, &format!("you have no API token {id}")));
    };
    if form.confirmed != "yes" {
        let what =
            format!("Revoke API token {name:?}: every program using it is refused from now on. This cannot be undone.");
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/account/tokens/{}/revoke", url_encode(&id));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, "/account", vec![name], 1));
    }
    domain::accounts::revoke_api_token(&state, &session.actor(), &session.user, &id).await?;
    Ok(redirect_with("/account", true, &format!("API token {name:?} revoked")))
}
