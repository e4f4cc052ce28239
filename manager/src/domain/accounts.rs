//! Credentials: enrollment tokens for agents, API tokens and passwords for
//! users. The REST API and the console both call these.

use std::time::Duration;

use drover_api::tokens::{CreatedApiToken, CreatedEnrollmentToken};

use super::access::{validate_grants, within};
use super::{Actor, DomainError, Permission, Result, Scope};
use crate::AppState;
use crate::auth::{hash_password, new_api_token, sha256_hex, verify_password};
use crate::model::{EnrollmentTokenInfo, Labels, now_millis, rfc3339};
use crate::store::{ApiTokenInfo, ApiTokenRecord, UserRecord};

/// The longest an enrollment token lives (an API token: ten times this).
pub const MAX_TOKEN_TTL_S: u64 = 365 * 24 * 3600;
/// The most enrollments one token allows.
pub const MAX_TOKEN_USES: u32 = 100_000;
/// The shortest password a user may choose.
pub const MIN_PASSWORD_LEN: usize = 12;

/// The password rules: at least [`MIN_PASSWORD_LEN`] characters, no control
/// characters, and not the user name (nor containing it, in any case).
pub fn check_password(username: &str, password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DomainError::Invalid(format!("the password must have at least {MIN_PASSWORD_LEN} characters")));
    }
    if password.chars().any(char::is_control) {
        return Err(DomainError::Refused("the password may not contain control characters".into()));
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Err(DomainError::Refused("the password may not contain the user name".into()));
    }
    Ok(())
}

/// Creates an enrollment token; the secret is in the answer only.
pub async fn create_enrollment_token(
    state: &AppState,
    actor: &Actor,
    ttl_seconds: Option<u64>,
    max_uses: Option<u32>,
    labels: &Labels,
) -> Result<CreatedEnrollmentToken> {
    let granted = actor.require(Permission::FleetEnroll, Scope::Global)?;
    let ttl = ttl_seconds.unwrap_or(3600);
    if ttl == 0 || ttl > MAX_TOKEN_TTL_S {
        return Err(DomainError::Invalid(format!("ttl_seconds must be between 1 and {MAX_TOKEN_TTL_S}, got {ttl}")));
    }
    let max_uses = max_uses.unwrap_or(1);
    if !(1..=MAX_TOKEN_USES).contains(&max_uses) {
        return Err(DomainError::Invalid(format!("max_uses must be between 1 and {MAX_TOKEN_USES}, got {max_uses}")));
    }
    for (k, v) in labels {
        drover_api::hosts::validate_label(k, v).map_err(DomainError::Invalid)?;
    }
    let (rec, token) = crate::auth::issue_enrollment_token(
        &state.store,
        state.pki.ca_fingerprint(),
        &actor.username,
        Duration::from_secs(ttl),
        max_uses,
        labels.clone(),
    )
    .await?;
    state
        .audit(granted.audit(
            "enrollment_token.create",
            "enrollment_token",
            &rec.id,
            format!("created enrollment token: ttl {ttl}s, max_uses {max_uses}, labels {:?}", rec.labels),
        ))
        .await;
    Ok(CreatedEnrollmentToken {
        id: rec.id,
        token: token.to_string(),
        expires_at: rfc3339(rec.expires_at),
        max_uses,
        labels: rec.labels,
        ca_fingerprint: state.pki.ca_fingerprint().to_string(),
    })
}

pub async fn list_enrollment_tokens(state: &AppState, actor: &Actor) -> Result<Vec<EnrollmentTokenInfo>> {
    actor.require(Permission::FleetEnroll, Scope::Global)?;
    let now = now_millis();
    Ok(state.store.list_enrollment_tokens().await?.iter().map(|t| t.to_api(now)).collect())
}

/// Up to `limit` tokens that can still enroll a host and up to `others` of
/// the rest (used up, expired, revoked), newest first, and the number stored.
pub async fn enrollment_tokens_page(
    state: &AppState,
    actor: &Actor,
    limit: u32,
    others: u32,
) -> Result<(Vec<EnrollmentTokenInfo>, Vec<EnrollmentTokenInfo>, u64)> {
    actor.require(Permission::FleetEnroll, Scope::Global)?;
    let now = now_millis();
    let (active, rest, total) = state.store.enrollment_tokens_page(now, limit, others).await?;
    Ok((active.iter().map(|t| t.to_api(now)).collect(), rest.iter().map(|t| t.to_api(now)).collect(), total))
}

pub async fn revoke_enrollment_token(state: &AppState, actor: &Actor, id: &str) -> Result<()> {
    let granted = actor.require(Permission::FleetEnroll, Scope::Global)?;
    if !state.store.revoke_enrollment_token(id, now_millis()).await? {
        return Err(DomainError::NotFound(format!("enrollment token {id} not found")));
    }
    state.audit(granted.audit("enrollment_token.revoke", "enrollment_token", id, "revoked enrollment token")).await;
    Ok(())
}

/// Creates an API token for `user` (who asks): at most what the caller may
/// do now, for `ttl_seconds` or 90 days. The token is in the answer only.
pub async fn create_api_token(
    state: &AppState,
    actor: &Actor,
    user: &UserRecord,
    name: &str,
    ttl_seconds: Option<u64>,
    grants: Option<Vec<drover_api::users::Grant>>,
) -> Result<CreatedApiToken> {
    let granted = own_account(actor, user)?;
    if let Some(grants) = &grants {
        validate_grants(grants)?;
        if grants.is_empty() {
            return Err(DomainError::Invalid("grants is empty: omit it for a token that may do what you may".into()));
        }
        if let Err(wider) = within(grants, &user.grants) {
            return Err(DomainError::Refused(format!(
                "a token cannot do more than its user: you do not hold {wider} (you hold {})",
                describe(&user.grants)
            )));
        }
    }
    let trimmed = name.trim();
    if trimmed.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(DomainError::Invalid(
            "name must be 1-100 characters, not only spaces, without control characters".into(),
        ));
    }
    if let Some(ttl) = ttl_seconds
        && (ttl == 0 || ttl > 10 * MAX_TOKEN_TTL_S)
    {
        return Err(DomainError::Invalid(format!("ttl_seconds must be between 1 and {}", 10 * MAX_TOKEN_TTL_S)));
    }
    let now = now_millis();
    let token = new_api_token();
    let rec = ApiTokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        name: trimmed.to_owned(),
        token_hash: sha256_hex(&token),
        created_at: now,
        expires_at: Some(now + ttl_ms(ttl_seconds, state.config.api_token_ttl)),
        grants,
    };
    state.store.insert_api_token(&rec).await?;
    let scope = rec.grants.as_deref().map(describe).unwrap_or_else(|| "the user's roles".into());
    state
        .audit(granted.audit(
            "api_token.create",
            "api_token",
            &rec.id,
            format!("created API token {trimmed:?} ({scope})"),
        ))
        .await;
    Ok(CreatedApiToken { id: rec.id, name: rec.name, token, expires_at: rec.expires_at.map(rfc3339) })
}

pub async fn list_api_tokens(state: &AppState, actor: &Actor, user: &UserRecord) -> Result<Vec<ApiTokenInfo>> {
    own_account(actor, user)?;
    Ok(state.store.list_api_tokens(&user.id).await?)
}

pub async fn revoke_api_token(state: &AppState, actor: &Actor, user: &UserRecord, id: &str) -> Result<()> {
    let granted = own_account(actor, user)?;
    if !state.store.delete_api_token(id, &user.id).await? {
        return Err(DomainError::NotFound(format!("API token {id} not found")));
    }
    state.audit(granted.audit("api_token.revoke", "api_token", id, "revoked API token")).await;
    Ok(())
}

/// Changes a user's password after checking the current one. Every console
/// session of the user ends and cached credentials are forgotten.
pub async fn change_password(
    state: &AppState,
    actor: &Actor,
    user: &UserRecord,
    current: &str,
    new: &str,
) -> Result<()> {
    let granted = own_account(actor, user)?;
    if user.source != "local" {
        return Err(DomainError::Conflict(format!(
            "user {} signs in through the directory; change the password there",
            user.username
        )));
    }
    let hash = user.password_hash.clone();
    let current_ok = {
        let current = current.to_owned();
        tokio::task::spawn_blocking(move || verify_password(&current, &hash))
            .await
            .map_err(|e| DomainError::Internal(format!("password check: {e}")))?
    };
    if !current_ok {
        return Err(DomainError::Refused("the current password is wrong".into()));
    }
    check_password(&user.username, new)?;
    if new == current {
        return Err(DomainError::Refused("the new password is the current one".into()));
    }
    let new = new.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&new))
        .await
        .map_err(|e| DomainError::Internal(format!("password hash: {e}")))?
        .map_err(|e| DomainError::Internal(format!("{e:#}")))?;
    if !state.store.set_password_hash(&user.id, &hash).await? {
        return Err(DomainError::NotFound(format!("user {} not found", user.username)));
    }
    state.basic_cache.forget_user(&user.id);
    state
        .audit(granted.audit("user.change_password", "user", &user.id, "changed password; console sessions ended"))
        .await;
    Ok(())
}

/// A user's own tokens and password: anyone signed in may manage theirs, with
/// the `read` of their own account (no role needed).
fn own_account<'a>(actor: &'a Actor, user: &UserRecord) -> Result<super::Granted<'a>> {
    if actor.username != user.username {
        return Err(DomainError::Forbidden {
            permission: Permission::UsersWrite,
            message: format!("forbidden: {} may manage only their own tokens and password", actor.username),
        });
    }
    Ok(super::Granted::own_account(actor))
}

/// A token's lifetime in milliseconds: the request's, else the manager's
/// default (`--api-token-ttl`).
fn ttl_ms(requested_s: Option<u64>, default: Duration) -> i64 {
    let ms = match requested_s {
        Some(s) => u128::from(s) * 1000,
        None => default.as_millis(),
    };
    i64::try_from(ms).unwrap_or(i64::MAX / 2)
}

/// `operator@prod, viewer`, or `no roles`.
pub fn describe(grants: &[drover_api::users::Grant]) -> String {
    if grants.is_empty() {
        return "no roles".into();
    }
    grants.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")
}
