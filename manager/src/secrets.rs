//! Secrets at rest: sensitive configuration values (parameters of type
//! `password`) are stored encrypted in `config_revisions`, so a database dump
//! or backup does not hold them in clear.
//!
//! A [`Keyring`] holds one current AES-256-GCM key (32 random bytes in
//! `DATA_DIR/secrets.key`, created 0600 on first start, or the file
//! `--secrets-key-file` names) and, during and after an interrupted rotation,
//! older keys from `secrets.key.old` that only decrypt. A stored value reads
//! `enc:v1:<key-id>:<base64(nonce || ciphertext)>`, the key id being the first
//! 8 hex digits of the key's SHA-256, so rotation tells keys apart; the key id
//! is authenticated too, and any change to a stored value is refused.
//!
//! The domain encodes values once, when a revision is stored
//! ([`Keyring::seal_values`]), and decodes them once, when a revision is read
//! ([`Keyring::open_values`]): everything above works with plain values and
//! masks them as before. [`rotate`] re-encrypts every revision with a new key
//! in one transaction (`drover-manager rotate-secrets-key`). See docs/secrets.md.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

use drover_service_types::config::ConfigValues;
use drover_service_types::descriptor::{Catalog, ServiceType};

use crate::store::Store;

/// What every encrypted value starts with.
pub const PREFIX: &str = "enc:v1:";
/// The key file's name in the data dir.
pub const KEY_FILE: &str = "secrets.key";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets key file {}: {message}", path.display())]
    KeyFile { path: PathBuf, message: String },
    #[error(
        "a stored secret is encrypted with key {key_id}, which this manager does not have (keys: {known}); \
         start it with the secrets key file the value was stored with"
    )]
    UnknownKey { key_id: String, known: String },
    #[error("a stored secret is malformed ({0}); it was altered or corrupted")]
    Malformed(String),
    #[error("a stored secret encrypted with key {key_id} fails authentication: it was altered or corrupted")]
    Tampered { key_id: String },
    #[error("invalid configuration: {0}")]
    Json(#[from] serde_json::Error),
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Key {
        Key { id: key_id(bytes), cipher: Aes256Gcm::new(&(*bytes).into()) }
    }
}

/// The short id of a key: the first 8 hex digits of its SHA-256.
pub fn key_id(bytes: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(bytes)[..4])
}

/// The current key (encrypts and decrypts) and older ones (decrypt only).
pub struct Keyring {
    current: Key,
    old: Vec<Key>,
}

impl fmt::Debug for Keyring {
    // Never the keys themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

/// Where a key file's older keys are kept: `<path>.old`.
pub fn old_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

/// 32 random bytes from the operating system.
pub fn generate_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

impl Keyring {
    /// A keyring of one key.
    pub fn from_key(bytes: &[u8; 32]) -> Keyring {
        Keyring { current: Key::new(bytes), old: Vec::new() }
    }

    /// Adds keys that only decrypt (a key already present is skipped).
    pub fn with_old(mut self, keys: impl IntoIterator<Item = [u8; 32]>) -> Keyring {
        for k in keys {
            let key = Key::new(&k);
            if key.id != self.current.id && !self.old.iter().any(|o| o.id == key.id) {
                self.old.push(key);
            }
        }
        self
    }

    /// Loads the key at `path` with the older keys of `<path>.old`. A missing
    /// file is created with a new key when `create` (the data dir's default
    /// file), else refused (a file the operator named).
    pub fn load(path: &Path, create: bool) -> Result<Keyring, SecretsError> {
        let err = |message: String| SecretsError::KeyFile { path: path.to_owned(), message };
        if !path.exists() {
            if !create {
                return Err(err("does not exist; give an existing key file or leave the flag unset".into()));
            }
            write_key_file(path, &[generate_key()], true).map_err(|e| err(format!("could not create: {e}")))?;
            tracing::info!(path = %path.display(), "secrets key created");
        }
        let keys = read_key_file(path)?;
        let Some(current) = keys.first() else { return Err(err("holds no key".into())) };
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "secrets key file is readable by others than its owner; chmod 600 it"
            );
        }
        let old_file = old_path(path);
        let old = if old_file.exists() { read_key_file(&old_file)? } else { Vec::new() };
        Ok(Keyring::from_key(current).with_old(old))
    }

    /// The id of the key that encrypts.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Every key id, the current one first.
    pub fn key_ids(&self) -> Vec<&str> {
        std::iter::once(&self.current).chain(&self.old).map(|k| k.id.as_str()).collect()
    }

    /// `value` (any JSON) encrypted with the current key.
    pub fn encrypt(&self, value: &Value) -> String {
        let plain = serde_json::to_vec(value).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = aad(&self.current.id);
        // Encryption fails only for inputs of tens of gigabytes.
        let sealed = self
            .current
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: &plain, aad: aad.as_bytes() })
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, B64.encode(bytes))
    }

    /// The value `sealed` (from [`Keyring::encrypt`]) holds; refuses one that
    /// was altered, or made with a key the keyring does not have.
    pub fn decrypt(&self, sealed: &str) -> Result<Value, SecretsError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or_else(|| SecretsError::Malformed(format!("no {PREFIX} prefix")))?;
        let (id, data) = rest.split_once(':').ok_or_else(|| SecretsError::Malformed("no key id".into()))?;
        let key = std::iter::once(&self.current).chain(&self.old).find(|k| k.id == id).ok_or_else(|| {
            SecretsError::UnknownKey { key_id: id.chars().take(16).collect(), known: self.key_ids().join(", ") }
        })?;
        let bytes = B64.decode(data).map_err(|e| SecretsError::Malformed(format!("bad base64: {e}")))?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(SecretsError::Malformed("too short".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretsError::Malformed("bad nonce".into()))?;
        let aad = aad(id);
        let plain = key
            .cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: aad.as_bytes() })
            .map_err(|_| SecretsError::Tampered { key_id: id.to_owned() })?;
        serde_json::from_slice(&plain).map_err(|e| SecretsError::Malformed(format!("not JSON inside: {e}")))
    }

    /// `values` as stored: every value of a sensitive parameter encrypted, at
    /// every level, and any string that looks encrypted too (so that reading
    /// back never takes a plain value for a ciphertext).
    pub fn seal_values(&self, st: &ServiceType, values: &ConfigValues) -> Value {
        self.seal_where(values, |k| st.parameter(k).is_some_and(|p| p.sensitive()))
    }

    fn seal_where(&self, values: &ConfigValues, sensitive: impl Fn(&str) -> bool) -> Value {
        let mut out = values.clone();
        for_each_level(&mut out, |k, v| {
            let looks_sealed = v.as_str().is_some_and(|s| s.starts_with(PREFIX));
            if (sensitive(k) && !v.is_null()) || looks_sealed {
                *v = Value::String(self.encrypt(v));
            }
            Ok(())
        })
        .unwrap_or(());
        serde_json::to_value(&out).unwrap_or(Value::Null)
    }

    /// A stored revision's `config` with every encrypted value decrypted.
    pub fn open_values(&self, config: Value) -> Result<ConfigValues, SecretsError> {
        let mut values: ConfigValues = serde_json::from_value(config)?;
        for_each_level(&mut values, |_, v| {
            if let Some(s) = v.as_str()
                && s.starts_with(PREFIX)
            {
                *v = self.decrypt(s)?;
            }
            Ok(())
        })?;
        Ok(values)
    }
}

fn aad(key_id: &str) -> String {
    format!("drover-secret:v1:{key_id}")
}

/// Calls `f` with every (parameter, value) of every level.
fn for_each_level(
    values: &mut ConfigValues,
    mut f: impl FnMut(&str, &mut Value) -> Result<(), SecretsError>,
) -> Result<(), SecretsError> {
    let levels =
        std::iter::once(&mut values.service).chain(values.groups.values_mut()).chain(values.roles.values_mut());
    for map in levels {
        for (k, v) in map.iter_mut() {
            f(k, v)?;
        }
    }
    Ok(())
}

/// The keys of a key file: one base64 key a line (a file of exactly 32
/// bytes that are not that is taken as one raw key).
fn read_key_file(path: &Path) -> Result<Vec<[u8; 32]>, SecretsError> {
    let err = |message: String| SecretsError::KeyFile { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| err(format!("could not read: {e}")))?;
    let text = std::str::from_utf8(&bytes).ok();
    let mut keys = Vec::new();
    for line in text.unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
        match B64.decode(line).ok().and_then(|k| <[u8; 32]>::try_from(k).ok()) {
            Some(k) => keys.push(k),
            None if bytes.len() == 32 => return Ok(vec![<[u8; 32]>::try_from(&bytes[..]).unwrap_or([0; 32])]),
            None => {
                return Err(err("is not a key: each line must be 32 bytes in base64 (44 characters, as `head -c 32 \
                     /dev/urandom | base64` writes)"
                    .into()));
            }
        }
    }
    if keys.is_empty() && bytes.len() == 32 {
        keys.push(<[u8; 32]>::try_from(&bytes[..]).unwrap_or([0; 32]));
    }
    Ok(keys)
}

/// Writes `keys` to `path`, mode 0600, replacing it atomically (or only
/// creating it when `create_new`).
fn write_key_file(path: &Path, keys: &[[u8; 32]], create_new: bool) -> std::io::Result<()> {
    let text: String = keys.iter().map(|k| format!("{}\n", B64.encode(k))).collect();
    if create_new {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        f.write_all(text.as_bytes())?;
        return f.sync_all();
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_key_id: String,
    pub new_key_id: String,
    /// Revisions read and revisions rewritten.
    pub revisions: u64,
    pub rewritten: u64,
    /// Values that were encrypted and are now under the new key.
    pub reencrypted: u64,
    /// Sensitive values found in clear (stored before encryption) and now encrypted.
    pub encrypted_plain: u64,
}

/// Replaces the key at `path` by a new one and re-encrypts every stored
/// secret with it, in one transaction; values stored in clear by an older
/// Drover are encrypted too. The old key stays in `<path>.old` until the
/// transaction has committed, so an interrupted rotation loses nothing (the
/// manager reads both files).
pub async fn rotate(store: &Store, catalog: &Catalog, path: &Path, create: bool) -> anyhow::Result<Rotation> {
    let before = Keyring::load(path, create)?;
    let old_file = old_path(path);
    let mut old_keys = read_key_file(path)?;
    if old_file.exists() {
        old_keys.extend(read_key_file(&old_file)?);
    }
    // First the old keys to the side, then the new key in place.
    write_key_file(&old_file, &old_keys, false).with_context(|| format!("write {}", old_file.display()))?;
    let new_key = generate_key();
    write_key_file(path, &[new_key], false).with_context(|| format!("write the new key to {}", path.display()))?;
    let next = Keyring::from_key(&new_key);
    let readers = Keyring::from_key(&new_key).with_old(old_keys);
    let mut reencrypted = 0u64;
    let mut encrypted_plain = 0u64;
    let mut revisions = 0u64;
    let rewritten = store
        .rewrite_revision_configs(|service_type, config| -> anyhow::Result<Option<Value>> {
            revisions += 1;
            let st = catalog.get(service_type);
            let mut sealed: BTreeMap<String, ()> = BTreeMap::new();
            let mut values: ConfigValues = serde_json::from_value(config.clone())?;
            for_each_level(&mut values, |k, v| {
                if v.as_str().is_some_and(|s| s.starts_with(PREFIX)) {
                    sealed.insert(k.to_owned(), ());
                    reencrypted += 1;
                } else if st.and_then(|st| st.parameter(k)).is_some_and(|p| p.sensitive()) && !v.is_null() {
                    encrypted_plain += 1;
                }
                Ok(())
            })?;
            if sealed.is_empty() && !st.is_some_and(|st| has_sensitive(st, &values)) {
                return Ok(None);
            }
            let opened = readers.open_values(config)?;
            let out = next.seal_where(&opened, |k| {
                sealed.contains_key(k) || st.and_then(|st| st.parameter(k)).is_some_and(|p| p.sensitive())
            });
            Ok(Some(out))
        })
        .await
        .context("re-encrypt the stored secrets (nothing was changed; the old key is in the .old file)")?;
    // The notification configuration's secrets (receivers set through REST), sealed again
    // before the old key goes.
    if let Some(config) = crate::domain::notifications::load_from(store, &readers).await.map_err(|e| {
        anyhow::anyhow!("re-encrypt the notification configuration (the old key is in the .old file): {e}")
    })? {
        crate::domain::notifications::store_config(store, &next, &config, "secrets rotation").await.map_err(|e| {
            anyhow::anyhow!("re-encrypt the notification configuration (the old key is in the .old file): {e}")
        })?;
    }
    store.purge_overwritten().await.context(
        "remove the overwritten values from the database file (the secrets are re-encrypted; run the rotation again)",
    )?;
    std::fs::remove_file(&old_file).with_context(|| format!("remove {}", old_file.display()))?;
    Ok(Rotation {
        old_key_id: before.key_id().to_owned(),
        new_key_id: next.key_id().to_owned(),
        revisions,
        rewritten,
        reencrypted,
        encrypted_plain,
    })
}

fn has_sensitive(st: &ServiceType, values: &ConfigValues) -> bool {
    std::iter::once(&values.service)
        .chain(values.groups.values())
        .chain(values.roles.values())
        .flat_map(|m| m.iter())
        .any(|(k, v)| !v.is_null() && st.parameter(k).is_some_and(|p| p.sensitive()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_fresh_nonce() {
        let ring = Keyring::from_key(&[7; 32]);
        let a = ring.encrypt(&json!("hunter2"));
        let b = ring.encrypt(&json!("hunter2"));
        assert_ne!(a, b, "each encryption has its own nonce");
        assert!(a.starts_with(&format!("{PREFIX}{}:", ring.key_id())), "{a}");
        assert!(!a.contains("hunter2"));
        assert_eq!(ring.decrypt(&a).unwrap(), json!("hunter2"));
    }

    #[test]
    fn tampered_values_are_refused() {
        let ring = Keyring::from_key(&[7; 32]);
        let sealed = ring.encrypt(&json!("hunter2"));
        let (head, data) = sealed.rsplit_once(':').unwrap();
        let mut bytes = B64.decode(data).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let altered = format!("{head}:{}", B64.encode(&bytes));
            let e = ring.decrypt(&altered).unwrap_err();
            assert!(matches!(e, SecretsError::Tampered { .. }), "byte {i}: {e}");
            assert!(e.to_string().contains("altered or corrupted"), "{e}");
            bytes[i] ^= 1;
        }
        // Cut short, and a key id swapped for another known key's.
        assert!(matches!(
            ring.decrypt(&sealed[..sealed.len() - 30]),
            Err(SecretsError::Malformed(_) | SecretsError::Tampered { .. })
        ));
        let other = Keyring::from_key(&[9; 32]).with_old([[7; 32]]);
        let swapped = sealed.replacen(ring.key_id(), other.key_id(), 1);
        assert!(matches!(other.decrypt(&swapped), Err(SecretsError::Tampered { .. })));
        // Another keyring without the key names the key it lacks.
        let e = Keyring::from_key(&[9; 32]).decrypt(&sealed).unwrap_err();
        assert!(e.to_string().contains(ring.key_id()), "{e}");
    }

    #[test]
    fn key_files_are_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let e = Keyring::load(&path, false).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let first = Keyring::load(&path, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Keyring::load(&path, true).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        let sealed = first.encrypt(&json!(42));
        assert_eq!(again.decrypt(&sealed).unwrap(), json!(42));
        std::fs::write(&path, "not a key\n").unwrap();
        let e = Keyring::load(&path, true).unwrap_err();
        assert!(e.to_string().contains("is not a key"), "{e}");
        std::fs::write(&path, [3u8; 32]).unwrap();
        assert_eq!(Keyring::load(&path, false).unwrap().key_id(), key_id(&[3; 32]));
    }
}
