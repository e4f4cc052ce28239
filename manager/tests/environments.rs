//! Environments' REST API without a Docker engine: every request is checked
//! before anything is made (name, template, ttl, host groups, owner,
//! variables, the owner's host limit, a cluster of the same name), an absent
//! engine is a 503 naming its socket, and a refused request leaves no
//! environment, cluster, token or audit entry. The real engine is exercised
//! by tests/tests/environments_e2e.rs.

use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::T;

/// One host, no parcels (a parcel would have to be in the repository).
const SOLO: &str = r#"{"name": "solo", "services": [{"name": "cache", "type": "redis"}],
  "host_groups": [{"name": "primary", "cardinality": 1, "roles": [{"service": "cache", "role_type": "primary"}]}]}"#;

/// Three hosts.
const TRIO: &str = r#"{"name": "trio", "services": [{"name": "cache", "type": "redis"}],
  "host_groups": [
    {"name": "primary", "cardinality": 1, "roles": [{"service": "cache", "role_type": "primary"}]},
    {"name": "replicas", "cardinality": 2, "roles": [{"service": "cache", "role_type": "replica"}]}]}"#;

async fn start() -> T {
    let t = T::start_configured(
        |_| {},
        |c| {
            c.docker_socket = c.data_dir.join("no-docker.sock");
            c.env_max_hosts_per_owner = 2;
        },
    )
    .await;
    for doc in [SOLO, TRIO] {
        t.ok(Method::POST, "/templates", Some(serde_json::from_str(doc).unwrap())).await;
    }
    t
}

#[tokio::test]
async fn requests_are_checked_before_anything_is_made() {
    let t = start().await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let cases = [
        (json!({"name": "Bad_Name", "template": "solo"}), 400, "invalid environment name \"Bad_Name\""),
        (json!({"name": "e1", "template": "solo", "colour": "red"}), 400, "unknown field `colour`"),
        (json!({"name": "e1", "template": "absent"}), 404, "template absent not found"),
        (json!({"name": "e1", "template": "solo", "version": 7}), 404, "template solo has no version 7"),
        (json!({"name": "e1", "template": "solo", "ttl": "5s"}), 400, "must be between 1m and 365d, or never"),
        (json!({"name": "e1", "template": "solo", "ttl": "soon"}), 400, "invalid ttl \"soon\""),
        (json!({"name": "e1", "template": "solo", "owner": "nobody"}), 400, "owner \"nobody\": no such user"),
        (
            json!({"name": "e1", "template": "solo", "host_groups": {"nope": {"count": 1}}}),
            400,
            "host_groups.nope: template solo version 1 has no host group nope",
        ),
        (
            json!({"name": "e1", "template": "solo", "host_groups": {"primary": {"count": 2}}}),
            400,
            "role type primary takes exactly 1 role(s); the host groups place 2 (primary: 2)",
        ),
        (
            json!({"name": "e1", "template": "solo", "variables": {"x": 1}}),
            400,
            "variables.x: template solo has no variable x",
        ),
        (
            json!({"name": "e1", "template": "solo", "host_groups": {"primary": {"memory": "lots"}}}),
            400,
            "host_groups.primary.memory: invalid memory \"lots\"",
        ),
        (
            json!({"name": "e1", "template": "trio"}),
            409,
            "owner admin has 0 container hosts in other environments; this one needs 3 more, above the limit of 2",
        ),
        (json!({"name": "prod", "template": "solo"}), 409, "cluster prod exists and is not an environment"),
        (json!({"name": "e1", "template": "solo"}), 503, "no-docker.sock is not reachable"),
    ];
    for (body, want_status, want) in cases {
        let (status, v) = t.call(Method::POST, "/environments", Some(body.clone())).await;
        assert_eq!(status, want_status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // Nothing was made.
    assert_eq!(t.ok(Method::GET, "/environments", None).await, json!({"items": []}));
    let clusters = t.ok(Method::GET, "/clusters", None).await;
    let names: Vec<&Value> = clusters["items"].as_array().unwrap().iter().map(|c| &c["name"]).collect();
    assert_eq!(names, vec![&json!("prod")]);
    assert_eq!(t.ok(Method::GET, "/enrollment-tokens", None).await["items"], json!([]));
    assert_eq!(t.ok(Method::GET, "/audit?object_type=environment", None).await["items"], json!([]));

    let msg = t.err(Method::DELETE, "/environments/absent", None, 404).await;
    assert_eq!(msg, "environment absent not found");
    let msg = t.err(Method::GET, "/environments/absent", None, 404).await;
    assert_eq!(msg, "environment absent not found");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn another_owner_needs_users_write() {
    let t = start().await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "dev", "password": "long-secret-1", "grants": [{"role": "admin"}]})),
    )
    .await;
    // An admin may name another user as the owner (the engine is absent).
    let (status, v) =
        t.call(Method::POST, "/environments", Some(json!({"name": "e1", "template": "solo", "owner": "dev"}))).await;
    assert_eq!(status, 503, "{v}");
    // A cluster admin of prod may not create environments at all.
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "ops", "password": "long-secret-2", "grants": [{"role": "cluster-admin", "cluster": "prod"}]})),
    )
    .await;
    let resp = t
        .client
        .post(t.url("/api/v1/environments"))
        .basic_auth("ops", Some("long-secret-2"))
        .json(&json!({"name": "e2", "template": "solo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("fleet.enroll"), "{v}");
    t.handle.shutdown().await;
}
