//! Users and their roles: create, list, show, change roles, disable, delete,
//! reset a password. All of it needs `users.write` (the `admin` role); a
//! user's own password and tokens are in [`super::accounts`].
//!
//! Invariant: at least one enabled user holds `admin` globally. The store
//! checks it inside the transaction that would break it, so no sequence of
//! requests locks every administrator out.

use drover_api::users::{Grant, UserInfo};

use super::access::validate_grants;
use super::accounts::{check_password, describe};
use super::{Actor, DomainError, Permission, Result, Scope};
use crate::AppState;
use crate::auth::hash_password;
use crate::model::now_millis;
use crate::store::{UserChange, UserRecord};

/// User names: 1-64 letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!("invalid user name {name:?}: 1-64 letters, digits, '.', '_', '-' or '@'")))
    }
}

async fn hash(password: &str) -> Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| DomainError::Internal(format!("password hash: {e}")))?
        .map_err(|e| DomainError::Internal(format!("{e:#}")))
}

async fn load(state: &AppState, username: &str) -> Result<UserRecord> {
    if username.contains('\0') {
        return Err(DomainError::NotFound(format!("user {username:?} not found")));
    }
    state.store.user_by_name(username).await?.ok_or_else(|| DomainError::NotFound(format!("user {username} not found")))
}

fn last_admin(username: &str) -> DomainError {
    DomainError::Conflict(format!(
        "user {username} is the last enabled administrator: grant admin to another enabled user first"
    ))
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    username: &str,
    password: &str,
    grants: Vec<Grant>,
) -> Result<UserInfo> {
    let granted = actor.require(Permission::UsersWrite, Scope::Global)?;
    validate_username(username)?;
    check_password(username, password)?;
    validate_grants(&grants)?;
    let rec = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_owned(),
        password_hash: hash(password).await?,
        grants,
        disabled: false,
        source: "local".into(),
        last_sign_in_at: None,
        created_at: now_millis(),
    };
    state.store.insert_user(&rec).await?;
    state
        .audit(granted.audit(
            "user.create",
            "user",
            &rec.username,
            format!("created user with {}", describe(&rec.grants)),
        ))
        .await;
    Ok(rec.to_api())
}

pub async fn list(state: &AppState, actor: &Actor, limit: u32) -> Result<Vec<UserInfo>> {
    actor.require(Permission::UsersWrite, Scope::Global)?;
    Ok(state.store.list_users(limit).await?.iter().map(UserRecord::to_api).collect())
}

pub async fn get(state: &AppState, actor: &Actor, username: &str) -> Result<UserInfo> {
    if actor.username != username {
        actor.require(Permission::UsersWrite, Scope::Global)?;
    }
    Ok(load(state, username).await?.to_api())
}

/// Replaces a user's grants and/or disables or enables them.
pub async fn update(
    state: &AppState,
    actor: &Actor,
    username: &str,
    grants: Option<Vec<Grant>>,
    disabled: Option<bool>,
) -> Result<UserInfo> {
    let granted = actor.require(Permission::UsersWrite, Scope::Global)?;
    if let Some(g) = &grants {
        validate_grants(g)?;
    }
    let before = load(state, username).await?;
    match state.store.update_user(&before.id, grants.as_deref(), disabled).await? {
        UserChange::Done => {}
        UserChange::NotFound => return Err(DomainError::NotFound(format!("user {username} not found"))),
        UserChange::LastAdmin => return Err(last_admin(username)),
    }
    state.basic_cache.forget_user(&before.id);
    let mut what = Vec::new();
    if let Some(g) = &grants {
        what.push(format!("roles {} -> {}", describe(&before.grants), describe(g)));
    }
    match disabled {
        Some(true) if !before.disabled => what.push("disabled; console sessions ended".to_owned()),
        Some(false) if before.disabled => what.push("enabled".to_owned()),
        _ => {}
    }
    if !what.is_empty() {
        state.audit(granted.audit("user.update", "user", username, what.join("; "))).await;
    }
    Ok(load(state, username).await?.to_api())
}

pub async fn delete(state: &AppState, actor: &Actor, username: &str) -> Result<()> {
    let granted = actor.require(Permission::UsersWrite, Scope::Global)?;
    let before = load(state, username).await?;
    match state.store.delete_user(&before.id).await? {
        UserChange::Done => {}
        UserChange::NotFound => return Err(DomainError::NotFound(format!("user {username} not found"))),
        UserChange::LastAdmin => return Err(last_admin(username)),
    }
    state.basic_cache.forget_user(&before.id);
    state
        .audit(granted.audit(
            "user.delete",
            "user",
            username,
            format!("deleted user (had {}); their tokens and sessions ended", describe(&before.grants)),
        ))
        .await;
    Ok(())
}

/// An administrator sets a user's password: their sessions end and cached
/// credentials are forgotten.
pub async fn reset_password(state: &AppState, actor: &Actor, username: &str, password: &str) -> Result<()> {
    let granted = actor.require(Permission::UsersWrite, Scope::Global)?;
    let user = load(state, username).await?;
    if user.source != "local" {
        return Err(DomainError::Conflict(format!(
            "user {username} signs in through the directory; reset the password there"
        )));
    }
    check_password(username, password)?;
    if !state.store.set_password_hash(&user.id, &hash(password).await?).await? {
        return Err(DomainError::NotFound(format!("user {username} not found")));
    }
    state.basic_cache.forget_user(&user.id);
    state.audit(granted.audit("user.reset_password", "user", username, "password reset; console sessions ended")).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_username;
    use crate::domain::accounts::check_password;

    #[test]
    fn user_names_and_passwords() {
        for ok in ["admin", "jane.doe", "ops-1", "a@b.c", "x_y"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a/b", &"a".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("jane", "short").is_err());
        assert!(check_password("jane", "my-JANE-password-long").is_err(), "contains the name, any case");
        assert!(check_password("jane", "correct horse battery").is_ok());
        assert!(check_password("jane", "tab\tinside-a-long-one").is_err());
    }
}
