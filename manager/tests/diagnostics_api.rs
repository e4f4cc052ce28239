//! Diagnostic bundles through the REST API with no agent connected: bad
//! requests refused naming the problem, a bundle of hosts that cannot answer
//! ends `partial` (never a failed command) with the manager's part redacted
//! and the hosts named in the manifest, who may list, read, download and
//! delete bundles, the audit of each, the redaction settings, and the sweep
//! that keeps bundles within their retention and total cap.
mod common;

use std::io::Read;

use common::T;
use reqwest::Method;
use serde_json::{Value, json};

const USER_PASSWORD: &str = "diagnostics-user-password";
const SECRET: &str = "s3cret-diag-pass";

async fn as_user(t: &T, user: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = t.client.request(method, t.url(&format!("/api/v1{path}"))).basic_auth(user, Some(USER_PASSWORD));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn setup(t: &T) {
    t.host("h1", "h1.example", "10.0.0.1").await;
    t.host("h2", "h2.example", "10.0.0.2").await;
    t.host("h9", "h9.example", "10.0.0.9").await;
    for c in ["prod", "dev"] {
        t.ok(Method::POST, "/clusters", Some(json!({"name": c}))).await;
    }
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1", "h2"]}))).await;
    t.ok(Method::POST, "/clusters/dev/hosts", Some(json!({"host_ids": ["h9"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!({"role_type": "primary", "host_id": "h1", "name": "cache-primary-1"})),
    )
    .await;
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"requirepass": SECRET}, "message": "auth"})),
    )
    .await;
    for (name, grants) in [
        ("prodviewer", json!([{"role": "viewer", "cluster": "prod"}])),
        ("devviewer", json!([{"role": "viewer", "cluster": "dev"}])),
        ("prodop", json!([{"role": "operator", "cluster": "prod"}])),
    ] {
        t.ok(Method::POST, "/users", Some(json!({"username": name, "password": USER_PASSWORD, "grants": grants})))
            .await;
    }
}

async fn wait_done(t: &T, id: &str) -> Value {
    let path = format!("/diagnostics/{id}");
    let mut last = Value::Null;
    for _ in 0..300 {
        last = t.ok(Method::GET, &path, None).await;
        if last["state"] != "running" {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("bundle {id} still running: {last}");
}

fn entries(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.path().unwrap().display().to_string(), data)
        })
        .collect()
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem() {
    let t = T::start_configured(|_| {}, |c| c.diagnostics_max_bytes = 100 << 20).await;
    setup(&t).await;
    let post = |body: Value| {
        let t = &t;
        async move { t.call(Method::POST, "/diagnostics", Some(body)).await }
    };
    let msg = |v: &Value| v["error"]["message"].as_str().unwrap_or_default().to_owned();

    let (s, v) =
        post(json!({"cluster": "prod", "since": "2026-12-04T03:00:00Z", "until": "2026-12-04T02:00:00Z"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(msg(&v).contains("until") && msg(&v).contains("before since"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "since": "yesterday-ish"})).await;
    assert!(s == 400 && msg(&v).contains("yesterday-ish"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "since": "1h", "max_bytes": 0})).await;
    assert!(s == 400 && msg(&v).contains("max_bytes 0"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "since": "1h", "max_bytes": (100u64 << 20) + 1})).await;
    assert!(s == 400 && msg(&v).contains("--diagnostics-max-bytes"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "since": "1h", "include": ["logs", "core-dumps"]})).await;
    assert!(s == 400 && msg(&v).contains("core-dumps"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "since": "1h", "colour": "blue"})).await;
    assert!(s == 400 && msg(&v).contains("colour"), "{v}");
    let (s, v) = post(json!({"cluster": "nowhere", "since": "1h"})).await;
    assert!(s == 404 && msg(&v).contains("nowhere"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "services": ["ghost"], "since": "1h"})).await;
    assert!(s == 404 && msg(&v).contains("ghost"), "{v}");
    let (s, v) = post(json!({"cluster": "prod", "hosts": ["h9.example"], "since": "1h"})).await;
    assert!(s == 404 && msg(&v).contains("h9.example") && msg(&v).contains("not a member"), "{v}");
    // A viewer may not collect.
    let (s, v) =
        as_user(&t, "prodviewer", Method::POST, "/diagnostics", Some(json!({"cluster": "prod", "since": "1h"}))).await;
    assert!(s == 403 && v["error"]["permission"] == "commands.run", "{v}");
    assert_eq!(t.ok(Method::GET, "/diagnostics", None).await["items"], json!([]), "nothing was started");

    // Redaction rules: a pattern that does not compile is named.
    let (s, v) = t
        .call(
            Method::PUT,
            "/settings/redaction",
            Some(json!([{"name": "ok", "pattern": "x"}, {"name": "broken", "pattern": "(unclosed"}])),
        )
        .await;
    assert!(s == 400 && msg(&v).contains("broken") && msg(&v).contains("(unclosed"), "{v}");
}

#[tokio::test]
async fn hosts_that_cannot_answer_give_a_partial_bundle_with_the_managers_part_redacted() {
    let t = T::start().await;
    partial_bundle(&t).await;
}

/// The same on PostgreSQL (the server of `DROVER_TEST_POSTGRES_URL`, as in `tests/store.rs`).
#[tokio::test]
async fn a_partial_bundle_on_postgresql() {
    use sqlx::{Connection, Executor};
    let admin_url = match std::env::var("DROVER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("DROVER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => {
            eprintln!("skipped: DROVER_TEST_SKIP_POSTGRES=1");
            return;
        }
        _ => panic!(
            "DROVER_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres-test-db.sh)\"` as root first, \
             or set DROVER_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        ),
    };
    let name = format!("drover_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect to DROVER_TEST_POSTGRES_URL");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin_url.clone());
    let url = format!("{base}/{name}");
    let t = T::start_configured(|_| {}, |c| c.database_url = Some(url.clone())).await;
    partial_bundle(&t).await;
    t.handle.shutdown().await;
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
}

async fn partial_bundle(t: &T) {
    setup(t).await;
    let started = t
        .call(Method::POST, "/diagnostics", Some(json!({"cluster": "prod", "since": "1h", "max_bytes": 1 << 20})))
        .await;
    assert_eq!(started.0, 202, "{}", started.1);
    let id = started.1["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dg-"), "{id}");
    assert_eq!(started.1["hosts"], json!(["h1.example", "h2.example"]));
    assert_eq!(started.1["services"], json!(["cache"]));

    let done = wait_done(t, &id).await;
    assert_eq!(done["state"], "partial", "{done}");
    let failed: Vec<&str> =
        done["failed_hosts"].as_array().unwrap().iter().map(|f| f["hostname"].as_str().unwrap()).collect();
    assert_eq!(failed, ["h1.example", "h2.example"]);
    assert!(done["failed_hosts"][0]["reason"].as_str().unwrap().contains("not connected"), "{done}");

    // The command: a step per host, failed; the command itself succeeded, saying the bundle is partial.
    let cmd = t.ok(Method::GET, &format!("/commands/{}", done["command_id"].as_str().unwrap()), None).await;
    assert_eq!(cmd["state"], "succeeded", "{cmd}");
    assert!(cmd["message"].as_str().unwrap().contains("partial"), "{cmd}");
    let steps = cmd["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s["state"] == "failed"), "{cmd}");

    // The download: the manager's part and the manifest, no secret anywhere.
    let resp = t
        .client
        .get(t.url(&format!("/api/v1/diagnostics/{id}/download")))
        .basic_auth("prodviewer", Some(USER_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert_eq!(disposition, format!("attachment; filename=\"drover-diagnostics-prod-{id}.tar.gz\""));
    let gz = resp.bytes().await.unwrap();
    assert_eq!(gz.len() as u64, done["size_bytes"].as_u64().unwrap());
    assert!(gz.len() <= 1 << 20);
    let files = entries(&gz);
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    for want in
        ["manager/topology.json", "manager/revisions/cache.json", "manager/commands.json", "manager/events.json"]
    {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // admin holds audit.read: the audit part is there and has the collect.
    let audit = &files.iter().find(|f| f.0 == "manager/audit.json").expect("audit.json").1;
    assert!(String::from_utf8_lossy(audit).contains("diagnostics.collect"));
    for (name, data) in &files {
        assert!(!data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "{name} holds the password");
    }
    let revisions: Value =
        serde_json::from_slice(&files.iter().find(|f| f.0 == "manager/revisions/cache.json").unwrap().1).unwrap();
    let revs = revisions["revisions"].as_array().unwrap();
    assert!(revs.iter().any(|r| r["message"] == "auth"), "{revisions}");
    let manifest: Value = serde_json::from_slice(&files.last().unwrap().1).unwrap();
    assert_eq!(files.last().unwrap().0, "manifest.json");
    assert_eq!(manifest["hosts"]["h1.example"]["status"], "failed", "{manifest}");
    assert_eq!(manifest["failed_hosts"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["request"]["cluster"], "prod");

    // Who sees it: readers of prod; a reader of dev learns nothing.
    let (s, v) = as_user(t, "prodviewer", Method::GET, "/diagnostics", None).await;
    assert_eq!((s, v["items"].as_array().unwrap().len()), (200, 1), "{v}");
    let (s, v) = as_user(t, "devviewer", Method::GET, "/diagnostics", None).await;
    assert_eq!((s, v["items"].clone()), (200, json!([])));
    for path in [format!("/diagnostics/{id}"), format!("/diagnostics/{id}/download")] {
        assert_eq!(as_user(t, "devviewer", Method::GET, &path, None).await.0, 404, "{path}");
    }
    assert_eq!(as_user(t, "devviewer", Method::DELETE, &format!("/diagnostics/{id}"), None).await.0, 404);
    let (s, v) = as_user(t, "prodviewer", Method::DELETE, &format!("/diagnostics/{id}"), None).await;
    assert!(s == 403 && v["error"]["permission"] == "commands.run", "{v}");
    let (s, _) = as_user(t, "prodop", Method::DELETE, &format!("/diagnostics/{id}"), None).await;
    assert_eq!(s, 204);
    t.err(Method::GET, &format!("/diagnostics/{id}"), None, 404).await;
    let dir = t.dir.path().join("diagnostics");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");

    // Collect, download and delete are audited.
    let audit = t.ok(Method::GET, "/audit?limit=50", None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    for want in ["diagnostics.collect", "diagnostics.download", "diagnostics.delete"] {
        assert!(actions.contains(&want), "{want} not audited: {actions:?}");
    }
}

#[tokio::test]
async fn redaction_rules_default_round_trip_and_apply_to_the_managers_part() {
    let t = T::start().await;
    setup(&t).await;
    let defaults = t.ok(Method::GET, "/settings/redaction", None).await;
    let names: Vec<&str> = defaults.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["password-in-url", "password-key-value", "authorization-header", "pem-private-key"]);
    let (s, _) = as_user(&t, "prodop", Method::PUT, "/settings/redaction", Some(json!([]))).await;
    assert_eq!(s, 403);
    let rules = json!([{"name": "ticket", "pattern": "TICKET-(?P<secret>[0-9]+)"}]);
    assert_eq!(t.ok(Method::PUT, "/settings/redaction", Some(rules.clone())).await, rules);
    assert_eq!(as_user(&t, "prodviewer", Method::GET, "/settings/redaction", None).await.1, rules);

    // A configuration message with a ticket number: redacted in the bundle, counted by rule.
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"maxmemory": "64mb"}, "message": "per TICKET-4711"})),
    )
    .await;
    let started = t
        .ok(
            Method::POST,
            "/diagnostics",
            Some(json!({"cluster": "prod", "hosts": ["h1"], "since": "1h", "include": ["revisions"]})),
        )
        .await;
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["hosts"], json!(["h1.example"]));
    wait_done(&t, &id).await;
    let gz = t
        .client
        .get(t.url(&format!("/api/v1/diagnostics/{id}/download")))
        .basic_auth("admin", Some(common::PASSWORD))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let files = entries(&gz);
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["manager/revisions/cache.json", "manifest.json"], "include limits the parts");
    let text = String::from_utf8_lossy(&files[0].1);
    assert!(text.contains("per TICKET-[REDACTED]") && !text.contains("4711"), "{text}");
    let manifest: Value = serde_json::from_slice(&files[1].1).unwrap();
    assert!(manifest["redactions"]["ticket"].as_u64().unwrap() >= 1, "{manifest}");
    assert_eq!(manifest["redactions"]["secret-values"], Value::Null, "the password is masked in revisions already");

    // The PUT is audited.
    let audit = t.ok(Method::GET, "/audit?limit=50", None).await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|a| a["action"] == "diagnostics.redaction.update"),
        "{audit}"
    );
}

/// Starts a bundle of `prod` and waits for it to end; returns it.
async fn bundle(t: &T) -> Value {
    let started = t.ok(Method::POST, "/diagnostics", Some(json!({"cluster": "prod", "since": "1h"}))).await;
    wait_done(t, started["id"].as_str().unwrap()).await
}

/// Files in the manager's bundle directory.
fn bundle_files(t: &T) -> Vec<String> {
    let dir = drover_manager::domain::diagnostics::bundle_dir(&t.handle.state);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The maintenance sweep: a finished bundle older than `--diagnostics-retention`
/// goes with its file; beyond `--diagnostics-max-total` the oldest go first.
#[tokio::test]
async fn the_sweep_removes_bundles_past_their_retention_and_the_oldest_past_the_total_cap() {
    use drover_manager::domain::diagnostics::{sweep, sweep_within};
    let t = T::start_configured(|_| {}, |c| c.diagnostics_retention = std::time::Duration::from_millis(300)).await;
    setup(&t).await;
    let old = bundle(&t).await;
    let size = old["size_bytes"].as_u64().unwrap();
    assert!(size > 0, "{old}");
    assert_eq!(bundle_files(&t).len(), 1, "{:?}", bundle_files(&t));
    sweep(&t.handle.state).await.unwrap();
    t.ok(Method::GET, &format!("/diagnostics/{}", old["id"].as_str().unwrap()), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    sweep(&t.handle.state).await.unwrap();
    t.err(Method::GET, &format!("/diagnostics/{}", old["id"].as_str().unwrap()), None, 404).await;
    assert_eq!(bundle_files(&t), Vec::<String>::new(), "the file went with its record");

    // Room for one bundle of this size and a half: the older of two goes.
    let t = T::start().await;
    setup(&t).await;
    let first = bundle(&t).await;
    let second = bundle(&t).await;
    assert_eq!(bundle_files(&t).len(), 2);
    let hour = std::time::Duration::from_secs(3600);
    sweep_within(&t.handle.state, hour, size * 10).await.unwrap();
    assert_eq!(bundle_files(&t).len(), 2, "both fit in ten times the size");
    sweep_within(&t.handle.state, hour, size * 3 / 2).await.unwrap();
    t.err(Method::GET, &format!("/diagnostics/{}", first["id"].as_str().unwrap()), None, 404).await;
    let kept = t.ok(Method::GET, &format!("/diagnostics/{}", second["id"].as_str().unwrap()), None).await;
    assert_eq!(kept["state"], "partial");
    assert_eq!(bundle_files(&t).len(), 1, "{:?}", bundle_files(&t));
}
