//! Secrets at rest (docs/secrets.md) through a real in-process manager: a
//! password set over the REST API at service, group and role level is in
//! none of the database's bytes, nor in any answer, diff or audit entry,
//! yet renders in clear into the role's files (made 0600), also after a
//! restart; and `drover-manager rotate-secrets-key` (the real binary)
//! re-encrypts every stored secret, values stored in clear by an older
//! Drover included, on SQLite and on PostgreSQL (`DROVER_TEST_POSTGRES_URL`,
//! see scripts/postgres-test-db.sh; `DROVER_TEST_SKIP_POSTGRES=1` skips it).

use std::path::Path;
use std::time::Duration;

use drover_manager::secrets::{KEY_FILE, Keyring, PREFIX, old_path};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use drover_testkit::eventually;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod common;
use common::{PASSWORD, T};

const SERVICE_SECRET: &str = "svc-Secret-7781";
const GROUP_SECRET: &str = "grp-Secret-5523";
const ROLE_SECRET: &str = "role-Secret-4410";
const LEGACY_SECRET: &str = "legacy-Secret-9034";
const ALL: [&str; 3] = [SERVICE_SECRET, GROUP_SECRET, ROLE_SECRET];

/// A redis service with a primary on h1 and a replica on h2; answers their role ids.
async fn redis_setup(t: &T) -> (String, String) {
    t.host("h1", "node-1", "10.0.0.1").await;
    t.host("h2", "node-2", "10.0.0.2").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let mut ids = Vec::new();
    for (role_type, host) in [("primary", "h1"), ("replica", "h2")] {
        let body = json!({"role_type": role_type, "host_id": host});
        t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(body)).await;
        let r = t.ok(Method::GET, &format!("/clusters/prod/services/cache/roles/cache-{role_type}-1"), None).await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    (ids[0].clone(), ids[1].clone())
}

/// Sets `requirepass` at every level: service (revision 2), the primary's
/// group (3) and the replica role (4).
async fn set_secrets(t: &T) {
    let patches = [
        json!({"values": {"requirepass": SERVICE_SECRET}, "message": "auth"}),
        json!({"values": {"requirepass": GROUP_SECRET}, "message": "auth primaries",
               "group": {"role_type": "primary", "name": "primary-default"}}),
        json!({"values": {"requirepass": ROLE_SECRET}, "message": "auth replica", "role": "cache-replica-1"}),
    ];
    for body in patches {
        t.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body)).await;
    }
}

/// redis.conf of a role as the manager would push it now: content and mode.
fn redis_conf(handle: &ManagerHandle, host: &str, role_id: &str) -> Option<(String, u32)> {
    let role = handle.state.registry.desired_role(host, role_id)?;
    let file = role.rendered.files.iter().find(|f| f.path == "redis.conf")?;
    Some((String::from_utf8_lossy(&file.content).into_owned(), file.mode))
}

/// Waits until the role's redis.conf holds `needle`; answers its mode.
async fn rendered_with(handle: &ManagerHandle, host: &str, role_id: &str, needle: &str) -> u32 {
    eventually(Duration::from_secs(30), &format!("redis.conf of {role_id} to hold {needle}"), || async {
        redis_conf(handle, host, role_id).filter(|(text, _)| text.contains(needle)).map(|(_, mode)| mode)
    })
    .await
}

/// The bytes of every file of the SQLite database (main file, WAL, shared memory).
fn sqlite_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("drover.db") {
            // The WAL and shared-memory files come and go with checkpoints and connections.
            match std::fs::read(entry.path()) {
                Ok(bytes) => all.extend(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading {}: {e}", entry.path().display()),
            }
        }
    }
    assert!(!all.is_empty(), "no database file in {}", dir.display());
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Starts a manager on an existing data dir (and database).
async fn restart(dir: &Path, database_url: Option<String>) -> ManagerHandle {
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(PASSWORD.into());
    config.database_url = database_url;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await.unwrap()
}

/// Every string that looks encrypted in the stored configuration of the service's revisions.
async fn stored_ciphertexts(handle: &ManagerHandle) -> Vec<String> {
    let revs = handle.state.store.revisions("prod", "cache").await.unwrap();
    let mut out = Vec::new();
    for r in revs {
        collect_sealed(&r.config, &mut out);
    }
    out
}

fn collect_sealed(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with(PREFIX) => out.push(s.clone()),
        Value::Object(m) => m.values().for_each(|v| collect_sealed(v, out)),
        Value::Array(a) => a.iter().for_each(|v| collect_sealed(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_password_is_encrypted_in_the_database_and_rendered_in_clear() {
    let t = T::start().await;
    let (primary, replica) = redis_setup(&t).await;
    let before = rendered_with(&t.handle, "h1", &primary, "port").await;
    assert_eq!(before, 0o640, "redis.conf without a password keeps the descriptor's mode");
    set_secrets(&t).await;

    // The agents get the values in clear, in files only their owner reads.
    let mode = rendered_with(&t.handle, "h1", &primary, &format!("requirepass \"{GROUP_SECRET}\"")).await;
    assert_eq!(mode, 0o600, "a file holding a password is private");
    let mode = rendered_with(&t.handle, "h2", &replica, &format!("requirepass \"{ROLE_SECRET}\"")).await;
    assert_eq!(mode, 0o600);

    // Every answer masks them and shows no ciphertext either.
    let mut answers = vec![
        t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await,
        t.ok(Method::GET, "/clusters/prod/services/cache/config/revisions", None).await,
        t.ok(Method::GET, "/audit?object_id=prod/cache", None).await,
    ];
    for rev in 2..=4 {
        answers.push(t.ok(Method::GET, &format!("/clusters/prod/services/cache/config/revisions/{rev}"), None).await);
    }
    for (from, to) in [(1, 2), (2, 3), (3, 4), (1, 4)] {
        let path = format!("/clusters/prod/services/cache/config/diff?from={from}&to={to}");
        answers.push(t.ok(Method::GET, &path, None).await);
    }
    for answer in &answers {
        let text = answer.to_string();
        for secret in ALL.iter().chain([&"enc:v1"]) {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    // Comparing revisions still sees which secret changed (values compared in
    // clear, not as ciphertexts, which differ at every encryption).
    let diff = &answers[answers.len() - 3];
    let changed: Vec<(&str, &str)> = diff["roles"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["changes"].as_array().unwrap().iter().map(move |c| (r["role"].as_str().unwrap(), c)))
        .map(|(role, c)| (role, c["parameter"].as_str().unwrap()))
        .collect();
    assert_eq!(changed, vec![("cache-primary-1", "requirepass")], "{diff:#}");
    let same = json!({"values": {"requirepass": SERVICE_SECRET}, "message": "again"});
    let e = t.err(Method::PATCH, "/clusters/prod/services/cache/config", Some(same), 409).await;
    assert!(e.contains("leaves the configuration as it is"), "{e}");

    // The database holds ciphertexts only, in every revision that carries a secret.
    let sealed = stored_ciphertexts(&t.handle).await;
    assert_eq!(sealed.len(), 1 + 2 + 3, "{sealed:?}");
    t.handle.shutdown().await;
    let bytes = sqlite_bytes(t.dir.path());
    for secret in ALL {
        assert!(!contains(&bytes, secret), "{secret} is in the database file");
    }
    assert!(contains(&bytes, &sealed[0]), "the ciphertexts are where this test looks");
    let key = std::fs::metadata(t.dir.path().join(KEY_FILE)).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);

    // A restarted manager decrypts them with the key file.
    let handle = restart(t.dir.path(), None).await;
    assert!(redis_conf(&handle, "h1", &primary).unwrap().0.contains(GROUP_SECRET));
    assert!(redis_conf(&handle, "h2", &replica).unwrap().0.contains(ROLE_SECRET));
    handle.shutdown().await;

    // Without that key its services cannot be rendered, and /healthz names
    // the key that is missing.
    let other = t.dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", base64_key(&[5; 32]))).unwrap();
    let mut config = ManagerConfig::for_data_dir(t.dir.path());
    config.secrets_key_file = Some(other);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = Manager::start(config, http, grpc).await.unwrap();
    let health: Value =
        t.client.get(format!("http://{}/healthz", handle.http_addr)).send().await.unwrap().json().await.unwrap();
    let error = health["desired_state"]["failing"][0]["error"].as_str().unwrap_or_default().to_owned();
    let id = Keyring::load(&t.dir.path().join(KEY_FILE), false).unwrap().key_id().to_owned();
    assert!(error.contains(&id) && error.contains("secrets key file"), "{health:#}");
    assert!(redis_conf(&handle, "h1", &primary).is_none_or(|(text, _)| !text.contains("enc:v1")));
    handle.shutdown().await;
}

fn base64_key(bytes: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reencrypts_every_secret_on_sqlite() {
    rotation(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reencrypts_every_secret_on_postgres() {
    let Some(db) = PgDb::create().await else { return };
    let url = db.url.clone();
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(rotation(Some(url)))).await;
    db.remove().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Secrets set through the API plus one stored in clear (as an older Drover
/// did), the key rotated by the binary, then checked in the store and by a
/// restarted manager.
async fn rotation(database_url: Option<String>) {
    let url = database_url.clone();
    let t = T::start_configured(|_| {}, move |c| c.database_url = url).await;
    let (primary, _) = redis_setup(&t).await;
    set_secrets(&t).await;
    rendered_with(&t.handle, "h1", &primary, GROUP_SECRET).await;
    let store = &t.handle.state.store;
    let mut legacy = store.revision("prod", "cache", 4).await.unwrap().unwrap();
    legacy.revision = 5;
    legacy.config["service"]["requirepass"] = json!(LEGACY_SECRET);
    legacy.message = "stored in clear".into();
    assert!(store.insert_revision(&legacy, 4, None).await.unwrap());
    let before = stored_ciphertexts(&t.handle).await;
    assert_eq!(before.len(), 1 + 2 + 3 + 2, "{before:?}");
    let key_path = t.dir.path().join(KEY_FILE);
    let old_id = Keyring::load(&key_path, false).unwrap().key_id().to_owned();
    t.handle.shutdown().await;

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_drover-manager"));
    cmd.arg("rotate-secrets-key").env("DROVER_DATA_DIR", t.dir.path()).env_remove("DROVER_DATABASE_URL");
    if let Some(url) = &database_url {
        cmd.env("DROVER_DATABASE_URL", url);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let new_id = Keyring::load(&key_path, false).unwrap().key_id().to_owned();
    assert_ne!(new_id, old_id);
    assert!(stdout.contains(&format!("{old_id} -> {new_id}")), "{stdout}");
    assert!(
        stdout.contains("5 read, 4 rewritten; secrets: 8 re-encrypted, 1 stored in clear now encrypted"),
        "{stdout}"
    );
    assert!(!old_path(&key_path).exists(), "the old key is removed once the rotation is done");

    let handle = restart(t.dir.path(), database_url.clone()).await;
    let after = stored_ciphertexts(&handle).await;
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    for sealed in &after {
        assert!(sealed.starts_with(&format!("{PREFIX}{new_id}:")), "{sealed}");
        assert!(!before.contains(sealed), "an old ciphertext is left: {sealed}");
    }
    for r in handle.state.store.revisions("prod", "cache").await.unwrap() {
        let raw = r.config.to_string();
        assert!(!raw.contains(LEGACY_SECRET) && ALL.iter().all(|s| !raw.contains(s)), "{raw}");
    }
    // Still the same values, in clear where they are used.
    assert!(redis_conf(&handle, "h1", &primary).unwrap().0.contains(GROUP_SECRET));
    let latest = handle.state.store.revision("prod", "cache", 5).await.unwrap().unwrap();
    let values = handle.state.secrets.open_values(latest.config).unwrap();
    assert_eq!(values.service["requirepass"], json!(LEGACY_SECRET));
    let first = handle.state.store.revision("prod", "cache", 2).await.unwrap().unwrap();
    assert_eq!(handle.state.secrets.open_values(first.config).unwrap().service["requirepass"], json!(SERVICE_SECRET));
    handle.shutdown().await;
    if database_url.is_none() {
        let bytes = sqlite_bytes(t.dir.path());
        assert!(!contains(&bytes, LEGACY_SECRET) && !contains(&bytes, &before[0]));
    }
}

/// A fresh PostgreSQL database on the server `DROVER_TEST_POSTGRES_URL` names.
struct PgDb {
    url: String,
    admin_url: String,
    name: String,
}

impl PgDb {
    async fn create() -> Option<PgDb> {
        use sqlx::{Connection, Executor};
        let admin_url = match std::env::var("DROVER_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => u,
            _ if std::env::var("DROVER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => {
                eprintln!("skipped: DROVER_TEST_SKIP_POSTGRES=1");
                return None;
            }
            _ => panic!(
                "DROVER_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres-test-db.sh)\"` as root first, \
                 or set DROVER_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
            ),
        };
        let name = format!("drover_secrets_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to DROVER_TEST_POSTGRES_URL");
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
        let _ = conn.close().await;
        let (base, _) = admin_url.rsplit_once('/').expect("a database in DROVER_TEST_POSTGRES_URL");
        Some(PgDb { url: format!("{base}/{name}"), admin_url, name })
    }

    async fn remove(self) {
        use sqlx::{Connection, Executor};
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str()).await;
            let _ = conn.close().await;
        }
    }
}
