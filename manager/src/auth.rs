//! Authentication: password hashing, API tokens, console sessions and the
//! first-start admin account.
//!
//! Passwords are hashed with argon2id. Verifying one costs tens of
//! milliseconds by design, so HTTP Basic credentials that verified recently
//! are remembered (as a salted SHA-256 of user and password, for five minutes)
//! and automation using Basic auth does not pay argon2 on every call. API
//! tokens and console session ids are random 256-bit values; the store keeps
//! only their SHA-256.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};

use crate::model::now_millis;
use crate::store::{Store, UserRecord};

/// Creates and stores an enrollment token; returns its record and the token
/// to hand to agents (shown once: only the secret's hash is stored). Used by
/// `POST /enrollment-tokens` and by the Docker provider.
pub async fn issue_enrollment_token(
    store: &Store,
    ca_fingerprint: drover_proto::tls::Fingerprint,
    created_by: &str,
    ttl: Duration,
    max_uses: u32,
    labels: crate::model::Labels,
) -> crate::store::Result<(crate::store::EnrollmentTokenRecord, drover_proto::token::EnrollmentToken)> {
    use drover_proto::token::{EnrollmentToken, ID_LEN, SECRET_LEN};
    let now = now_millis();
    let token = EnrollmentToken {
        id: random_token_chars(ID_LEN),
        secret: random_token_chars(SECRET_LEN),
        ca_fingerprint: Some(ca_fingerprint),
    };
    let rec = crate::store::EnrollmentTokenRecord {
        id: token.id.clone(),
        secret_hash: sha256_hex(&token.secret),
        labels,
        max_uses,
        uses: 0,
        created_by: created_by.to_owned(),
        created_at: now,
        expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
        revoked_at: None,
    };
    store.insert_enrollment_token(&rec).await?;
    Ok((rec, token))
}

/// Prefix of API tokens, so they are recognisable in logs and secret scanners.
pub const API_TOKEN_PREFIX: &str = "drvt_";
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
const BASIC_CACHE_MAX: usize = 1024;

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hash password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A random lowercase alphanumeric string (for token ids and secrets).
pub fn random_token_chars(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), n).to_ascii_lowercase()
}

/// A new API token value.
pub fn new_api_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!("{API_TOKEN_PREFIX}{}", hex::encode(b))
}

/// A new console session id.
pub fn new_session_id() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Remembers recently verified Basic credentials.
pub struct BasicCache {
    salt: [u8; 16],
    entries: Mutex<HashMap<[u8; 32], (UserRecord, Instant)>>,
    /// The LDAP directory users without a local password sign in against.
    directory: Option<std::sync::Arc<crate::ldap::Directory>>,
}

impl std::fmt::Debug for BasicCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicCache")
    }
}

impl Default for BasicCache {
    fn default() -> Self {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        BasicCache { salt, entries: Mutex::new(HashMap::new()), directory: None }
    }
}

impl BasicCache {
    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Drops every cached credential of a user (after a password change).
    pub fn forget_user(&self, user_id: &str) {
        self.entries.lock().expect("cache lock").retain(|_, (rec, _)| rec.id != user_id);
    }

    /// Checks Basic credentials: from the cache, else against the store with argon2.
    pub async fn verify(&self, store: &Store, user: &str, password: &str) -> anyhow::Result<Option<UserRecord>> {
        Ok(self.check(store, user, password).await?.ok())
    }

    /// [`BasicCache::verify`] that says why credentials are refused.
    pub async fn check(
        &self,
        store: &Store,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Result<UserRecord, Refusal>> {
        let key = self.key(user, password);
        if let Some((rec, at)) = self.entries.lock().expect("cache lock").get(&key)
            && at.elapsed() < self.ttl(rec)
        {
            return Ok(Ok(rec.clone()));
        }
        // No user name holds a NUL, and PostgreSQL cannot even compare one:
        // wrong credentials, not a database error.
        let rec = if user.contains('\0') { None } else { store.user_by_name(user).await? };
        if let Some(directory) = &self.directory
            && rec.as_ref().is_none_or(|r| r.password_hash.is_empty())
        {
            return self.directory_sign_in(directory, store, key, user, password).await;
        }
        let Some(rec) = rec else {
            // As long as a wrong password takes, so the answer's time does
            // not tell which user names exist.
            let password = password.to_owned();
            tokio::task::spawn_blocking(move || verify_password(&password, dummy_hash()))
                .await
                .context("password verification task")?;
            return Ok(Err(Refusal::UnknownUser));
        };
        if rec.password_hash.is_empty() {
            return Ok(Err(Refusal::NoPassword));
        }
        let hash = rec.password_hash.clone();
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .context("password verification task")?;
        if !ok {
            return Ok(Err(Refusal::WrongPassword));
        }
        // Only who knows the password learns that the account is disabled.
        if rec.disabled {
            return Ok(Err(Refusal::Disabled));
        }
        {
            let mut entries = self.entries.lock().expect("cache lock");
            if entries.len() >= BASIC_CACHE_MAX {
                entries.retain(|_, (_, at)| at.elapsed() < BASIC_CACHE_TTL);
                if entries.len() >= BASIC_CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(key, (rec.clone(), Instant::now()));
        }
        store.touch_sign_in(&rec.id, now_millis()).await?;
        Ok(Ok(rec))
    }
}

/// Sign-in against the LDAP directory (`crate::ldap`).
impl BasicCache {
    /// A cache that sends users without a local password to `directory`.
    pub fn with_directory(directory: Option<crate::ldap::Directory>) -> BasicCache {
        BasicCache { directory: directory.map(std::sync::Arc::new), ..BasicCache::default() }
    }

    /// How long a verified sign-in of `rec` is remembered.
    fn ttl(&self, rec: &UserRecord) -> Duration {
        match &self.directory {
            Some(d) if rec.source == "ldap" => d.cache_ttl.min(BASIC_CACHE_TTL),
            _ => BASIC_CACHE_TTL,
        }
    }

    async fn directory_sign_in(
        &self,
        directory: &crate::ldap::Directory,
        store: &Store,
        key: [u8; 32],
        user: &str,
        password: &str,
    ) -> anyhow::Result<Result<UserRecord, Refusal>> {
        let signed = directory.sign_in(store, user, password).await?;
        if let Ok(rec) = &signed {
            if !self.ttl(rec).is_zero() {
                let mut entries = self.entries.lock().expect("cache lock");
                if entries.len() >= BASIC_CACHE_MAX {
                    entries.clear();
                }
                entries.insert(key, (rec.clone(), Instant::now()));
            }
            store.touch_sign_in(&rec.id, now_millis()).await?;
        }
        Ok(signed)
    }
}

/// Why a user name and password are refused (for the audit log; the caller
/// hears only "wrong user name or password").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    WrongPassword,
    Disabled,
    /// A directory user, whose password Drover does not hold.
    NoPassword,
    /// The directory knows the password but the user is in no group of
    /// `--ldap-role-map`.
    NoMappedGroup,
    /// The directory could not be asked (down, or configured wrongly).
    Directory,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownUser => "unknown user",
            Refusal::WrongPassword => "wrong password",
            Refusal::Disabled => "disabled",
            Refusal::NoPassword => "no local password",
            Refusal::NoMappedGroup => "in no mapped directory group",
            Refusal::Directory => "directory unavailable",
        }
    }

    /// What the person signing in is told: the reason only where it tells
    /// nothing about names or passwords (a group is read only after the
    /// directory accepted the password).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoMappedGroup => {
                "Your directory account is in no group that has a role in Drover; ask an administrator."
            }
            Refusal::Directory => {
                "The directory service cannot be asked right now; try again later. Local accounts still sign in."
            }
            _ => "Wrong user name or password.",
        }
    }
}

/// An argon2id hash of nothing anyone types, checked for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_session_id()).unwrap_or_default())
}

/// Creates the `admin` user on first start. The password is
/// `DROVER_ADMIN_PASSWORD` when given, else generated and written to
/// `DATA/initial-admin-password` (0600).
pub async fn bootstrap_admin(store: &Store, data_dir: &Path, password: Option<&str>) -> anyhow::Result<()> {
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let path = data_dir.join("initial-admin-password");
    let password = match password {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => {
            let p = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
            crate::pki::write_file(&path, format!("{p}\n").as_bytes(), true)?;
            tracing::info!(path = %path.display(), "created user admin; its password is in this file");
            p
        }
    };
    let hash = {
        let p = password.clone();
        tokio::task::spawn_blocking(move || hash_password(&p)).await??
    };
    store
        .insert_user(&UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            username: "admin".into(),
            password_hash: hash,
            grants: vec![drover_api::users::Grant::global(drover_api::users::Role::Admin)],
            disabled: false,
            source: "local".into(),
            last_sign_in_at: None,
            created_at: now_millis(),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_verify_and_differ() {
        let a = hash_password("s3cret").unwrap();
        let b = hash_password("s3cret").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_api_token();
        assert!(a.starts_with(API_TOKEN_PREFIX));
        assert_eq!(a.len(), API_TOKEN_PREFIX.len() + 64);
        assert_ne!(a, new_api_token());
        let t = random_token_chars(32);
        assert!(t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
