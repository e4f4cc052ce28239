//! Diagnostic bundles end to end (#14) with the real binaries: two agents
//! each running a Redis role whose `requirepass` is set. The bundle holds each
//! role's redis.conf, logs and process state, the configuration revisions
//! and the audit entries, and the password appears nowhere in the whole
//! archive (every file's bytes searched, the manifest and the manager's part
//! included); a small `max_bytes` is respected; with one agent killed the
//! bundle is `partial`, its host failed in the manifest, the command
//! succeeded.
//!
//! Run with `cargo build --workspace --bins && cargo test -p drover-tests --test diagnostics_e2e`.

use std::io::Read;
use std::time::Duration;

use drover_tests::fleet::{Fleet, wait_for};
use drover_tests::init_logging;
use drover_tests::parcels::build_parcel;
use drover_tests::procs::free_port;
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
const PASSWORD: &str = "Zq7-diag-e2e-requirepass";

async fn collect(fleet: &Fleet, body: Value) -> (Value, Vec<(String, Vec<u8>)>) {
    let started = fleet.rest.ok(Method::POST, "/diagnostics", Some(body)).await;
    let id = started["id"].as_str().unwrap().to_owned();
    let done = wait_for(Duration::from_secs(200), &format!("bundle {id}"), || async {
        let v: Value = fleet.rest.get(&format!("/api/v1/diagnostics/{id}")).await.map_err(|e| e.to_string())?;
        if v["state"] == "running" { Err(v.to_string()) } else { Ok(v) }
    })
    .await;
    let resp = reqwest::Client::new()
        .get(fleet.rest.url(&format!("/api/v1/diagnostics/{id}/download")))
        .basic_auth("admin", Some(&fleet.manager.password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "download {id}");
    let gz = resp.bytes().await.unwrap();
    assert_eq!(gz.len() as u64, done["size_bytes"].as_u64().unwrap());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let files = archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.path().unwrap().display().to_string(), data)
        })
        .collect();
    (done, files)
}

fn assert_no_password(files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        assert!(!data.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{name} holds the password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_holds_the_scene_without_the_password_within_its_cap_and_survives_a_lost_host() {
    init_logging();
    let mut fleet =
        Fleet::start(&["diag-a", "diag-b"], &[build_parcel("redis", None)], &["--diagnostics-host-timeout", "20s"])
            .await;
    let rest = &fleet.rest;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    rest.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"requirepass": PASSWORD}, "message": "require a password"})),
    )
    .await;
    fleet.add_role("cache", "primary", "diag-a", "cache-primary", json!({"port": free_port()})).await;
    fleet.add_role("cache", "replica", "diag-b", "cache-replica", json!({"port": free_port()})).await;
    fleet.run_command("cache", json!({"name": "start"}), WAIT).await;

    let (done, files) = collect(&fleet, json!({"cluster": "prod", "since": "1h", "max_bytes": 20 << 20})).await;
    assert_eq!(done["state"], "ready", "{done}");
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    for host in ["diag-a", "diag-b"] {
        for suffix in ["config/redis.conf", "process.json", "logs/stdout.log"] {
            assert!(
                names.iter().any(|n| n.starts_with(&format!("hosts/{host}/roles/")) && n.ends_with(suffix)),
                "no {suffix} of {host} in {names:?}"
            );
        }
    }
    for want in ["manager/revisions/cache.json", "manager/audit.json", "manager/topology.json", "manifest.json"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let text = |path: &str| String::from_utf8_lossy(&files.iter().find(|f| f.0 == path).unwrap().1).into_owned();
    assert!(text("manager/revisions/cache.json").contains("require a password"));
    assert!(text("manager/audit.json").contains("diagnostics.collect"));
    let conf = files.iter().find(|f| f.0.starts_with("hosts/diag-a/") && f.0.ends_with("config/redis.conf")).unwrap();
    let conf = String::from_utf8_lossy(&conf.1);
    assert!(
        conf.lines().any(|l| l.starts_with("requirepass") && l.contains("[REDACTED]")),
        "the password's place in redis.conf is marked: {conf}"
    );
    assert_no_password(&files);
    let manifest: Value = serde_json::from_str(&text("manifest.json")).unwrap();
    assert!(manifest["redactions"]["secret-values"].as_u64().unwrap_or(0) >= 1, "{manifest}");

    // A small cap is respected.
    let cap = 96 * 1024;
    let (small, files) = collect(&fleet, json!({"cluster": "prod", "since": "1h", "max_bytes": cap})).await;
    assert!(small["size_bytes"].as_u64().unwrap() <= cap, "{small}");
    assert_no_password(&files);

    // A lost host: the bundle is partial and names it; the command succeeded.
    fleet.agents[1].kill();
    let (partial, files) = collect(&fleet, json!({"cluster": "prod", "since": "1h", "max_bytes": 20 << 20})).await;
    assert_eq!(partial["state"], "partial", "{partial}");
    assert_eq!(partial["failed_hosts"][0]["hostname"], "diag-b", "{partial}");
    let manifest: Value = serde_json::from_slice(&files.iter().find(|f| f.0 == "manifest.json").unwrap().1).unwrap();
    assert_eq!(manifest["hosts"]["diag-b"]["status"], "failed", "{manifest}");
    assert!(files.iter().any(|f| f.0.starts_with("hosts/diag-a/")), "the answering host's part is there");
    assert_no_password(&files);
    let cmd: Value =
        fleet.rest.get(&format!("/api/v1/commands/{}", partial["command_id"].as_str().unwrap())).await.unwrap();
    assert_eq!(cmd["state"], "succeeded", "{cmd}");
    fleet.assert_quiet_manager(&[]);
}
