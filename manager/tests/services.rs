//! Services, roles and versioned configuration through the REST API of a real
//! in-process manager (SQLite in a temp dir): creation and validation, config
//! revisions with history, diff and rollback, and every bad input rejected
//! with a clear message and no revision left behind. Agents are not involved
//! here (see the end-to-end tests); hosts are enrolled through the store.

use std::time::Duration;

use drover_testkit::{eventually, eventually_true};

use drover_manager::model::{HostStatus, now_millis, rfc3339};
use drover_manager::store::{AppliedRec, AppliedRevision, RoleStatusRec};
use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::T;

impl T {
    /// Every role of `svc` reports running and healthy at revision 1, as its
    /// agent would.
    async fn report_running(&self, svc: &str) {
        let roles = self.ok(Method::GET, &format!("/clusters/prod/services/{svc}/roles"), None).await;
        let reports: Vec<RoleStatusRec> = roles["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| RoleStatusRec {
                role_id: r["id"].as_str().unwrap().to_owned(),
                state: "running".into(),
                health: "good".into(),
                pid: 100,
                applied_revision: 1,
                running_revision: 1,
                updated_at: now_millis(),
                ..Default::default()
            })
            .collect();
        self.handle.state.registry.update_role_status(reports);
    }

    /// Waits until command `id` is no longer running; returns it.
    async fn finished(&self, id: &str) -> Value {
        eventually(Duration::from_secs(30), &format!("command {id} to finish"), || async {
            let c = self.ok(Method::GET, &format!("/commands/{id}"), None).await;
            (c["state"] != "running").then_some(c)
        })
        .await
    }

    async fn revisions(&self, svc: &str) -> Vec<Value> {
        self.ok(Method::GET, &format!("/clusters/prod/services/{svc}/config/revisions"), None).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}

async fn redis_setup(t: &T) {
    t.host("h1", "node-1", "10.0.0.1").await;
    t.host("h2", "node-2", "10.0.0.2").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": "primary", "host_id": "h1"})))
        .await;
    t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": "replica", "host_id": "h2"})))
        .await;
}

#[tokio::test]
async fn service_types_are_listed_with_parameters() {
    let t = T::start().await;
    let types = t.ok(Method::GET, "/service-types", None).await;
    let names: Vec<&str> = types["items"].as_array().unwrap().iter().filter_map(|x| x["name"].as_str()).collect();
    assert!(names.contains(&"redis") && names.contains(&"zookeeper"), "{names:?}");
    let redis = t.ok(Method::GET, "/service-types/redis", None).await;
    let params: Vec<&str> = redis["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(params.contains(&"maxmemory") && params.contains(&"port"), "{params:?}");
    let doc: Value = t.ok(Method::GET, "/openapi.json", None).await;
    for path in [
        "/api/v1/clusters",
        "/api/v1/clusters/{cluster}/services/{service}/config",
        "/api/v1/clusters/{cluster}/services/{service}/config/diff",
        "/api/v1/commands/{id}/abort",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi.json lacks {path}");
    }
    let msg = t.err(Method::GET, "/service-types/kafka", None, 404).await;
    assert_eq!(msg, "service type kafka not found");
    t.handle.shutdown().await;
}

/// A revision's applied list is current: a role's report shows in it before
/// the flusher has stored it, each role once with its first report, and the
/// same after the flush.
#[tokio::test]
async fn a_revision_shows_where_it_is_applied_before_the_flusher_stores_it() {
    let t = T::start_configured(|_| {}, |c| c.flush_interval = Duration::from_secs(3600)).await;
    redis_setup(&t).await;
    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    let id = |name: &str| -> String {
        let items = roles["items"].as_array().unwrap();
        items.iter().find(|r| r["name"] == name).unwrap()["id"].as_str().unwrap().to_owned()
    };
    let (primary, replica) = (id("cache-primary-1"), id("cache-replica-1"));
    let report = |role_id: &str, host_id: &str, revision: u64, applied_at: i64| AppliedRevision {
        cluster: "prod".into(),
        service: "cache".into(),
        revision,
        applied: AppliedRec { role_id: role_id.to_owned(), host_id: host_id.to_owned(), applied_at },
    };
    let applied = || async {
        let rev = t.ok(Method::GET, "/clusters/prod/services/cache/config/revisions/1", None).await;
        let items = rev["applied"].as_array().unwrap().clone();
        items
            .iter()
            .map(|a| (a["role"].as_str().unwrap().to_owned(), a["hostname"].clone(), a["applied_at"].clone()))
            .collect::<Vec<_>>()
    };
    let (registry, store) = (&t.handle.state.registry, &t.handle.state.store);
    let t0 = now_millis();
    registry.queue_applied(vec![report(&primary, "h1", 1, t0), report(&replica, "h2", 2, t0)]);
    assert!(store.applied_for_revision("prod", "cache", 1).await.unwrap().is_empty(), "not stored yet");
    let primary_at = ("cache-primary-1".to_owned(), json!("node-1"), json!(rfc3339(t0)));
    assert_eq!(applied().await, vec![primary_at.clone()]);

    // Stored; the primary's later report does not move its first time.
    registry.flush().await.unwrap();
    registry.queue_applied(vec![report(&primary, "h1", 1, t0 + 5_000), report(&replica, "h2", 1, t0 + 1_000)]);
    let replica_at = ("cache-replica-1".to_owned(), json!("node-2"), json!(rfc3339(t0 + 1_000)));
    assert_eq!(applied().await, vec![primary_at.clone(), replica_at.clone()]);
    registry.flush().await.unwrap();
    assert_eq!(store.applied_for_revision("prod", "cache", 1).await.unwrap().len(), 2);
    assert_eq!(applied().await, vec![primary_at, replica_at]);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn config_revisions_history_diff_and_rollback() {
    let t = T::start().await;
    redis_setup(&t).await;
    let svc = t.ok(Method::GET, "/clusters/prod/services/cache", None).await;
    assert_eq!(svc["revision"], 1);
    assert_eq!(svc["roles"].as_array().unwrap().len(), 2);

    // The replica's replicaof is rendered from the primary's host and port.
    let patched = t
        .ok(
            Method::PATCH,
            "/clusters/prod/services/cache/config",
            Some(json!({"values": {"maxmemory": "256mb"}, "message": "cap memory"})),
        )
        .await;
    assert_eq!(patched["revision"], 2);
    assert_eq!(patched["changed_keys"], json!(["maxmemory"]));
    let revs = t.revisions("cache").await;
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["revision"], 2);
    assert_eq!(revs[0]["author"], "admin");
    assert_eq!(revs[0]["message"], "cap memory");
    assert_eq!(revs[0]["changed_keys"], json!(["maxmemory"]));

    let diff = t.ok(Method::GET, "/clusters/prod/services/cache/config/diff?from=1&to=2", None).await;
    let roles = diff["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2, "{diff}");
    for r in roles {
        assert_eq!(r["changes"][0]["parameter"], "maxmemory");
        let file = &r["files"][0];
        assert_eq!(file["path"], "redis.conf");
        let d = file["diff"].as_str().unwrap();
        assert!(d.contains("-maxmemory") && d.contains("+maxmemory"), "{d}");
    }

    // Effective values say where they come from.
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(cfg["revision"], 2);
    assert_eq!(cfg["service"]["maxmemory"]["source"], "service");
    assert_eq!(cfg["service"]["port"]["source"], "default");

    // A role-level override (ports apart on one machine).
    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    let replica = roles["items"].as_array().unwrap().iter().find(|r| r["role_type"] == "replica").unwrap().clone();
    let name = replica["name"].as_str().unwrap();
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"port": 6380}, "message": "replica port", "role": name})),
    )
    .await;
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(cfg["roles"][name]["values"]["port"]["source"], "role");

    // Rollback to revision 1 makes a new revision with revision 1's values.
    let rb = t
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/config/rollback",
            Some(json!({"revision": 1, "message": "undo"})),
        )
        .await;
    assert_eq!(rb["revision"], 4);
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(cfg["service"]["maxmemory"]["source"], "default");
    let rev4 = t.ok(Method::GET, "/clusters/prod/services/cache/config/revisions/4", None).await;
    assert_eq!(rev4["message"], "rollback to revision 1: undo");

    // Passwords never show in diffs, not even escaped by a template.
    let secret = r#"s3"cr\et"#;
    let patched = t
        .ok(
            Method::PATCH,
            "/clusters/prod/services/cache/config",
            Some(json!({"values": {"requirepass": secret}, "message": "auth"})),
        )
        .await;
    let rev = patched["revision"].as_u64().unwrap();
    let diff =
        t.ok(Method::GET, &format!("/clusters/prod/services/cache/config/diff?from={}&to={rev}", rev - 1), None).await;
    let text = diff.to_string();
    assert!(!text.contains("s3") && text.contains("********"), "{text}");
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert!(!cfg.to_string().contains("s3"), "{cfg}");

    // Audit trail.
    let audit = t.ok(Method::GET, "/audit?object_id=prod/cache", None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"config.update") && actions.contains(&"config.rollback"), "{actions:?}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn bad_inputs_are_rejected_and_leave_no_revision() {
    let t = T::start().await;
    redis_setup(&t).await;
    let patch = |values: Value| Some(json!({"values": values, "message": "m"}));
    let path = "/clusters/prod/services/cache/config";
    let cases: Vec<(Value, &str)> = vec![
        (json!({"no_such_thing": 1}), "no_such_thing"),
        (json!({"port": "not a port"}), "port"),
        (json!({"port": 70000}), "port"),
        (json!({"appendonly": "perhaps"}), "appendonly"),
        (json!({"maxmemory_policy": "random-guess"}), "maxmemory_policy"),
    ];
    // What the service's type refuses: 422.
    for (values, names) in cases {
        let msg = t.err(Method::PATCH, path, patch(values.clone()), 422).await;
        assert!(msg.contains(names), "{values}: {msg}");
    }
    // All errors at once.
    let msg = t.err(Method::PATCH, path, patch(json!({"port": 0, "bogus": 1})), 422).await;
    assert!(msg.contains("port") && msg.contains("bogus"), "{msg}");
    // What the OpenAPI document rules out: 400. A blank message; empty
    // values; both a group and a role.
    t.err(Method::PATCH, path, Some(json!({"values": {"port": 6390}, "message": ""})), 400).await;
    t.err(Method::PATCH, path, Some(json!({"values": {"port": 6390}, "message": " \t"})), 400).await;
    t.err(Method::PATCH, path, Some(json!({"values": {}, "message": "x"})), 400).await;
    let both =
        json!({"values": {"port": 6390}, "message": "x", "role": "r", "group": {"role_type": "replica", "name": "g"}});
    t.err(Method::PATCH, path, Some(both), 400).await;
    // An unknown group or role: 404.
    let group = json!({"values": {"port": 6390}, "message": "x", "group": {"role_type": "replica", "name": "nope"}});
    t.err(Method::PATCH, path, Some(group), 404).await;
    t.err(Method::PATCH, path, Some(json!({"values": {"port": 6390}, "message": "x", "role": "nope"})), 404).await;
    // Role count outside min/max: a second primary.
    let msg = t
        .err(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "primary", "host_id": "h2"})),
            409,
        )
        .await;
    assert!(msg.contains("at most 1"), "{msg}");
    // A role type the service's type lacks (422), an unknown host (404), a
    // decommissioned host (409).
    let msg = t
        .err(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "sentinel", "host_id": "h2"})),
            422,
        )
        .await;
    assert!(msg.contains("sentinel"), "{msg}");
    let msg = t
        .err(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "replica", "host_id": "nope"})),
            404,
        )
        .await;
    assert!(msg.contains("host nope not found"), "{msg}");
    t.ok(Method::DELETE, "/hosts/h2", None).await;
    let msg = t
        .err(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "replica", "host_id": "h2"})),
            409,
        )
        .await;
    assert!(msg.contains("decommissioned"), "{msg}");
    // Deleting the only primary would go below the minimum.
    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    let primary =
        roles["items"].as_array().unwrap().iter().find(|r| r["role_type"] == "primary").unwrap()["name"].clone();
    let msg = t
        .err(Method::DELETE, &format!("/clusters/prod/services/cache/roles/{}", primary.as_str().unwrap()), None, 409)
        .await;
    assert!(msg.contains("at least 1"), "{msg}");
    // Unknown service type; a service requiring a missing dependency is covered by descriptors.
    let msg = t.err(Method::POST, "/clusters/prod/services", Some(json!({"name": "q", "type": "kafka"})), 400).await;
    assert!(msg.contains("unknown service type"), "{msg}");
    // Bad names.
    t.err(Method::POST, "/clusters", Some(json!({"name": "Bad Name"})), 400).await;
    // Unknown revision in diff and rollback.
    t.err(Method::GET, "/clusters/prod/services/cache/config/diff?from=1&to=9", None, 404).await;
    t.err(
        Method::POST,
        "/clusters/prod/services/cache/config/rollback",
        Some(json!({"revision": 9, "message": "x"})),
        404,
    )
    .await;
    // Rolling back to the current values is not a change.
    t.err(
        Method::POST,
        "/clusters/prod/services/cache/config/rollback",
        Some(json!({"revision": 1, "message": "x"})),
        409,
    )
    .await;
    // Nothing above created a revision.
    assert_eq!(t.revisions("cache").await.len(), 1);
    // A cluster with services cannot be deleted.
    let msg = t.err(Method::DELETE, "/clusters/prod", None, 409).await;
    assert!(msg.contains("still has services"), "{msg}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn commands_validate_their_input() {
    let t = T::start().await;
    redis_setup(&t).await;
    let path = "/clusters/prod/services/cache/commands";
    let msg = t.err(Method::POST, path, Some(json!({"name": "explode"})), 400).await;
    assert!(msg.contains("unknown variant `explode`"), "{msg}");
    let msg = t.err(Method::POST, path, Some(json!({"name": "start", "roles": ["ghost"]})), 404).await;
    assert!(msg.contains("ghost"), "{msg}");
    let msg = t.err(Method::POST, path, Some(json!({"name": "start", "roles": []})), 400).await;
    assert!(msg.contains("roles is empty"), "{msg}");
    let msg = t.err(Method::POST, path, Some(json!({"name": "start", "version": "1"})), 400).await;
    assert!(msg.contains("only for the upgrade"), "{msg}");
    let msg =
        t.err(Method::POST, path, Some(json!({"name": "upgrade", "version": "1", "stale_only": true})), 400).await;
    assert!(msg.contains("not for upgrade and rollback"), "{msg}");
    let msg = t.err(Method::POST, path, Some(json!({"name": "rolling-restart", "stale_only": true})), 409).await;
    assert!(msg.contains("stale"), "{msg}");
    // A start with no agent connected times out per step, but is accepted and planned.
    let cmd = t.ok(Method::POST, path, Some(json!({"name": "start"}))).await;
    let steps = cmd["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{cmd}");
    assert!(steps[0]["description"].as_str().unwrap().starts_with("start cache-primary"), "{cmd}");
    let id = cmd["id"].as_str().unwrap();
    t.ok(Method::POST, &format!("/commands/{id}/abort"), None).await;
    let done = t.finished(id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    t.err(Method::GET, "/commands/nope", None, 404).await;
    t.handle.shutdown().await;
}

/// A user-supplied service type (DATA_DIR/service-types) that requires ZooKeeper.
const ECHO: &str = r#"
name = "echo"
display_name = "Echo"
description = "A test service that needs ZooKeeper"
version = "1"
requires = ["zookeeper"]

[[role_types]]
name = "worker"
description = "sleeps"
min_instances = 0
start_order = 0

[role_types.process]
program = "/bin/sleep"
args = ["1000"]
"#;

#[tokio::test]
async fn user_service_types_and_dependencies() {
    let t = T::start_with(|dir| {
        let d = dir.join("service-types/echo");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("service.toml"), ECHO).unwrap();
    })
    .await;
    t.host("h1", "node-1", "10.0.0.1").await;
    let types = t.ok(Method::GET, "/service-types/echo", None).await;
    assert_eq!(types["requires"], json!(["zookeeper"]));
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let msg = t.err(Method::POST, "/clusters/prod/services", Some(json!({"name": "e", "type": "echo"})), 409).await;
    assert_eq!(msg, "service type echo requires a zookeeper service in cluster prod; create that first");
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "e", "type": "echo"}))).await;
    t.ok(Method::POST, "/clusters/prod/services/e/roles", Some(json!({"role_type": "worker", "host_id": "h1"}))).await;
    // Start follows dependencies: ZooKeeper must run first.
    let msg = t.err(Method::POST, "/clusters/prod/services/e/commands", Some(json!({"name": "start"})), 409).await;
    assert_eq!(msg, "service e requires zookeeper service zk, which is not running; start zk first");
    // A required service cannot be deleted from under its dependant.
    let msg = t.err(Method::DELETE, "/clusters/prod/services/zk", None, 409).await;
    assert_eq!(msg, "service e requires zk; delete it first");
    t.ok(Method::DELETE, "/clusters/prod/services/e", None).await;
    t.ok(Method::DELETE, "/clusters/prod/services/zk", None).await;
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_peer_change_makes_the_other_servers_stale() {
    let t = T::start().await;
    for i in 1..=3 {
        t.host(&format!("h{i}"), &format!("zk-{i}"), &format!("10.0.0.{i}")).await;
    }
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    for i in 1..=3 {
        t.ok(
            Method::POST,
            "/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_id": format!("h{i}"), "name": format!("zk-{i}")})),
        )
        .await;
    }
    // Every server reports running at revision 1.
    t.report_running("zk").await;
    // zk-1 moves its peer port: its own key changed, and every server's zoo.cfg
    // lists it, so the other two are stale through their files.
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/zk/config",
        Some(json!({"values": {"peer_port": 2999}, "message": "move zk-1's peer port", "role": "zk-1"})),
    )
    .await;
    let roles = t.ok(Method::GET, "/clusters/prod/services/zk/roles", None).await;
    for r in roles["items"].as_array().unwrap() {
        assert_eq!(r["stale"], true, "{r}");
        let keys = r["stale_keys"].as_array().unwrap();
        if r["name"] == "zk-1" {
            assert_eq!(keys, &vec![json!("peer_port")], "{r}");
        } else {
            assert_eq!(keys, &vec![json!("file:zoo.cfg")], "{r}");
        }
    }
    t.handle.shutdown().await;
}

#[tokio::test]
async fn roles_can_be_added_in_bulk() {
    let t = T::start().await;
    for i in 1..=4 {
        t.host(&format!("h{i}"), &format!("node-{i}"), &format!("10.0.0.{i}")).await;
    }
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let body = json!([
        {"role_type": "primary", "host_id": "h1"},
        {"role_type": "replica", "host_id": "h2"},
        {"role_type": "replica", "host_id": "h3"},
    ]);
    let created = t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(body)).await;
    let names: Vec<&str> = created["items"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, vec!["cache-primary-1", "cache-replica-1", "cache-replica-2"]);
    // The whole batch is refused when one entry is bad, and nothing is added.
    let bad = json!([
        {"role_type": "replica", "host_id": "h4"},
        {"role_type": "primary", "host_id": "h4"},
    ]);
    let msg = t.err(Method::POST, "/clusters/prod/services/cache/roles", Some(bad), 409).await;
    assert_eq!(msg, "role 2: role type primary allows at most 1 instances and service cache already has 1");
    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    assert_eq!(roles["items"].as_array().unwrap().len(), 3);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn roles_on_a_lost_host_are_reported_down_with_the_reason() {
    let lost_after = Duration::from_millis(600);
    let t = T::start_configured(
        |_| {},
        |c| {
            c.host_lost_after = lost_after;
            c.heartbeat_interval = lost_after / 4;
        },
    )
    .await;
    redis_setup(&t).await;
    // Both roles report running and healthy at the service's revision.
    t.report_running("cache").await;
    let registry = &t.handle.state.registry;
    // h2's last sign of life; then it goes silent and turns lost while h1 stays alive.
    registry.touch("h2");
    let before = now_millis();
    eventually_true(lost_after * 20, "h2 to turn lost", || {
        registry.touch("h1");
        registry.host_status("h2") == Some(HostStatus::Lost)
    })
    .await;
    registry.touch("h1");

    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    let by_name = |name: &str| roles["items"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone();
    let replica = by_name("cache-replica-1");
    assert_eq!((&replica["status"], &replica["health"]), (&json!("unknown"), &json!("bad")), "{replica}");
    let why = replica["last_error"].as_str().unwrap();
    let since = why
        .strip_prefix("host node-2 (h2) is lost: no heartbeat since ")
        .unwrap_or_else(|| panic!("unexpected last_error {why:?}"));
    let since = chrono::DateTime::parse_from_rfc3339(since).unwrap().timestamp_millis();
    assert!(since <= before, "last sign of life {since} after the reports at {before}");
    let primary = by_name("cache-primary-1");
    assert_eq!(
        (&primary["status"], &primary["health"], &primary["last_error"]),
        (&json!("running"), &json!("good"), &json!(""))
    );
    let one = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    assert_eq!(one["last_error"], replica["last_error"]);

    // The console's service page shows the same reason.
    let page = t.console().await.get("/clusters/prod/services/cache").await;
    assert_eq!(page.status, 200);
    let html = page.html;
    assert!(html.contains(why), "the console does not show {why:?}:\n{html}");

    // A command does not take the last report of a role on a lost host as
    // done: it waits for the host, and says so when aborted.
    let cmd = t
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/commands",
            Some(json!({"name": "start", "roles": ["cache-replica-1"]})),
        )
        .await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        registry.touch("h1");
        tokio::time::sleep(lost_after / 3).await;
    }
    let c = t.ok(Method::GET, &format!("/commands/{id}"), None).await;
    assert_eq!(c["state"], "running", "a start on a lost host finished from a stale report: {c:#}");
    t.ok(Method::POST, &format!("/commands/{id}/abort"), None).await;
    let c = t.finished(&id).await;
    assert_eq!(c["state"], "aborted", "{c:#}");
    let step = c["steps"][0]["message"].as_str().unwrap();
    assert!(step.contains("cache-replica-1 (its host h2 is lost)"), "{step}");

    // Decommissioned: the reason changes; the role is still not running.
    t.ok(Method::DELETE, "/hosts/h2", None).await;
    let replica = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    assert_eq!((&replica["status"], &replica["health"]), (&json!("unknown"), &json!("bad")), "{replica}");
    assert_eq!(replica["last_error"], "host node-2 (h2) is decommissioned");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_host_with_a_new_address_is_rendered_into_its_peers_files() {
    let t = T::start().await;
    redis_setup(&t).await;
    let body = json!({"values": {"bind": "0.0.0.0"}, "message": "listen on every address"});
    t.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body)).await;
    let replica = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    let replica_id = replica["id"].as_str().unwrap().to_owned();
    let state = &t.handle.state;
    let conf = |state: &drover_manager::AppState| {
        let role = state.registry.desired_role("h2", &replica_id).expect("replica's desired state");
        let file = role.rendered.files.iter().find(|f| f.path == "redis.conf").expect("redis.conf").clone();
        String::from_utf8(file.content).unwrap()
    };
    assert!(conf(state).contains("replicaof 10.0.0.1 6379"), "{}", conf(state));

    // h1 comes back with another address (a container started again, a new
    // DHCP lease): its hello updates the facts and renders its services again.
    let mut host = state.store.host("h1").await.unwrap().unwrap();
    host.addresses = vec!["10.0.0.91".into()];
    let facts = drover_manager::model::HostFacts {
        hostname: host.hostname.clone(),
        addresses: host.addresses.clone(),
        kind: host.kind,
        kind_evidence: String::new(),
        os: host.os.clone(),
        kernel: host.kernel.clone(),
        arch: host.arch.clone(),
        cpu_cores: host.cpu_cores,
        memory_bytes: host.memory_bytes,
        disks: vec![],
        fqdn: String::new(),
        container_id: String::new(),
        machine_cpu_cores: 0,
        machine_memory_bytes: 0,
        capacity_evidence: String::new(),
    };
    // The replica runs (started before the move) with the old redis.conf.
    let mut report = RoleStatusRec {
        role_id: replica_id.clone(),
        state: "running".into(),
        health: "good".into(),
        pid: 100,
        applied_revision: 2,
        running_revision: 2,
        started_at: Some(now_millis() - 1000),
        updated_at: now_millis(),
        ..Default::default()
    };
    state.registry.update_role_status(vec![report.clone()]);
    let before = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    assert_eq!(before["stale"], false, "{before}");
    state.store.update_host_facts("h1", &facts, "0").await.unwrap();
    state.desired.host_identity_changed(state, "h1").await.unwrap();
    assert!(conf(state).contains("replicaof 10.0.0.91 6379"), "{}", conf(state));
    // Its files changed under the same revision: stale, with the reason,
    // exactly as a config change would show it.
    let after = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    assert_eq!((&after["stale"], &after["stale_keys"]), (&json!(true), &json!(["file:redis.conf"])), "{after}");
    let events = t.ok(Method::GET, "/events?object_type=service&object_id=prod/cache", None).await;
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| e["kind"] == "config_rerendered"
            && e["message"].as_str().unwrap().contains("redis.conf of cache-replica-1")),
        "{events:#}"
    );
    // A restart (a process started after the re-render) clears it.
    report.started_at = Some(now_millis() + 1);
    report.pid = 101;
    state.registry.update_role_status(vec![report]);
    let restarted = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    assert_eq!(restarted["stale"], false, "{restarted}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn two_roles_on_one_host_cannot_share_a_port() {
    let t = T::start().await;
    redis_setup(&t).await;
    let roles = "/clusters/prod/services/cache/roles";
    // A replica beside the primary on h1, both on the default 6379.
    let msg = t.err(Method::POST, roles, Some(json!({"role_type": "replica", "host_id": "h1"})), 409).await;
    assert_eq!(
        msg,
        "port clash on host node-1 (h1): role cache-primary-1 of prod/cache (parameter port) and role \
         cache-replica-2 of prod/cache (parameter port) would both listen on port 6379; give one of them another port"
    );
    let listed = t.ok(Method::GET, roles, None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "nothing stored: {listed}");
    // With its own port (set on the replicas' group first) it is placed.
    let group = json!({"values": {"port": 6380}, "message": "replicas listen on 6380",
                       "group": {"role_type": "replica", "name": "replica-default"}});
    t.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(group)).await;
    t.ok(Method::POST, roles, Some(json!({"role_type": "replica", "host_id": "h1", "name": "near"}))).await;
    // A change that moves the replica onto the primary's port is refused
    // before anything is stored.
    let revisions = t.revisions("cache").await.len();
    let clash = json!({"values": {"port": 6379}, "message": "oops", "role": "near"});
    let msg = t.err(Method::PATCH, "/clusters/prod/services/cache/config", Some(clash), 409).await;
    assert!(msg.contains("host node-1 (h1)") && msg.contains("cache-primary-1") && msg.contains("near"), "{msg}");
    assert!(msg.contains("port 6379"), "{msg}");
    assert_eq!(t.revisions("cache").await.len(), revisions, "a refused change leaves no revision");
    // Across services: a second Redis whose primary lands on h1's 6379.
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "sessions", "type": "redis"}))).await;
    let msg = t
        .err(
            Method::POST,
            "/clusters/prod/services/sessions/roles",
            Some(json!({"role_type": "primary", "host_id": "h1"})),
            409,
        )
        .await;
    assert!(
        msg.contains("role sessions-primary-1 of prod/sessions") && msg.contains("role cache-primary-1 of prod/cache"),
        "{msg}"
    );
    // On another port it is fine, and a later change of cache onto that port
    // is refused naming the other service.
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/sessions/config",
        Some(json!({"values": {"port": 7000}, "message": "own port"})),
    )
    .await;
    t.ok(
        Method::POST,
        "/clusters/prod/services/sessions/roles",
        Some(json!({"role_type": "primary", "host_id": "h1"})),
    )
    .await;
    let msg = t
        .err(
            Method::PATCH,
            "/clusters/prod/services/cache/config",
            Some(json!({"values": {"port": 7000}, "message": "collide", "role": "cache-primary-1"})),
            409,
        )
        .await;
    assert!(
        msg.contains("role sessions-primary-1 of prod/sessions (parameter port)") && msg.contains("port 7000"),
        "{msg}"
    );
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_restart_fails_as_soon_as_a_role_reports_a_crash_loop() {
    let t = T::start().await;
    redis_setup(&t).await;
    t.report_running("cache").await;
    let state = &t.handle.state;
    let cmd = t
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/commands",
            Some(json!({"name": "restart", "roles": ["cache-replica-1"]})),
        )
        .await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    let replica = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-replica-1", None).await;
    let role_id = replica["id"].as_str().unwrap().to_owned();
    // The agent gets the new restart nonce ...
    let nonce = eventually(Duration::from_secs(10), "the restart to be pushed", || {
        let nonce = state.registry.desired_role("h2", &role_id).map(|d| d.restart_nonce).unwrap_or(0);
        std::future::ready((nonce > 0).then_some(nonce))
    })
    .await;
    // ... and the restarted process crash-loops (port taken): the agent
    // reports it failed, with that nonce and no process.
    state.registry.update_role_status(vec![RoleStatusRec {
        role_id: role_id.clone(),
        state: "failed".into(),
        health: "unknown".into(),
        restart_nonce: nonce,
        applied_revision: 1,
        last_error: "crash loop: the process exited with status 1; 5 exits within 2m".into(),
        last_log_lines: vec![
            "# Could not create server TCP listening socket *:6380: bind: Address already in use".into(),
        ],
        updated_at: now_millis(),
        ..Default::default()
    }]);
    // The command fails at once (its step timeout is minutes), naming the
    // role, its error and its log.
    let done = t.finished(&id).await;
    assert_eq!(done["state"], "failed", "{done:#}");
    let step = done["steps"][0]["message"].as_str().unwrap();
    assert!(
        step.contains("cache-replica-1") && step.contains("crash loop") && step.contains("Address already in use"),
        "{step}"
    );
    // Waiting commands register only on their roles and hosts, and leave none behind.
    assert_eq!(state.registry.waiter_count(), 0);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn resync_corrects_intent_that_drifted_from_the_store() {
    let t = T::start().await;
    redis_setup(&t).await;
    let state = &t.handle.state;
    let primary = t.ok(Method::GET, "/clusters/prod/services/cache/roles/cache-primary-1", None).await;
    let role_id = primary["id"].as_str().unwrap().to_owned();
    assert!(!state.registry.desired_role("h1", &role_id).unwrap().running);
    // Nothing drifted: a resync changes nothing.
    let quiet = state.desired.resync(state).await.unwrap();
    assert_eq!((quiet.services, quiet.corrections, quiet.failed), (1, 0, 0));
    // The store says running, but nobody refreshed the hosts (as if a
    // refresh had been lost): the next resync corrects exactly that host.
    state.store.set_run_state(std::slice::from_ref(&role_id), "running").await.unwrap();
    let report = state.desired.resync(state).await.unwrap();
    assert_eq!((report.corrections, report.failed), (1, 0), "{report:?}");
    assert!(state.registry.desired_role("h1", &role_id).unwrap().running);
    let events = t.ok(Method::GET, "/events?object_type=service&object_id=prod/cache", None).await;
    assert!(events["items"].as_array().unwrap().iter().any(|e| e["kind"] == "desired_state_corrected"), "{events:#}");
    let health: Value = t.client.get(t.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["desired_state"]["corrections"], 1, "{health:#}");
    assert_eq!(health["desired_state"]["resyncs"], 2, "{health:#}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_failing_refresh_is_retried_and_shows_as_degraded() {
    let t = T::start().await;
    redis_setup(&t).await;
    let state = &t.handle.state;
    // A revision that cannot be read (written behind the manager's back).
    let svc = state.store.service("prod", "cache").await.unwrap().unwrap();
    let bad = drover_manager::store::RevisionRec {
        cluster: "prod".into(),
        service: "cache".into(),
        revision: svc.revision + 1,
        config: json!("not a configuration"),
        changed_keys: vec![],
        author: "test".into(),
        source: "test".into(),
        message: "corrupt".into(),
        created_at: now_millis(),
    };
    assert!(state.store.insert_revision(&bad, svc.revision, None).await.unwrap());
    assert!(state.desired.refresh_service(state, "prod", "cache", &[]).await.is_err());
    let health = t.client.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the manager still serves");
    let health: Value = health.json().await.unwrap();
    assert_eq!((&health["status"], &health["desired_state"]["status"]), (&json!("degraded"), &json!("degraded")));
    let failing = &health["desired_state"]["failing"][0];
    assert_eq!(failing["service"], "prod/cache", "{health:#}");
    assert!(failing["error"].as_str().unwrap().contains("holds invalid configuration"), "{health:#}");
    // Repaired in the store: the retry (1 s backoff) picks it up by itself.
    let good = drover_manager::store::RevisionRec {
        revision: svc.revision + 2,
        config: json!({"service": {}, "groups": {}, "roles": {}}),
        message: "repaired".into(),
        ..bad
    };
    assert!(state.store.insert_revision(&good, svc.revision + 1, None).await.unwrap());
    eventually(Duration::from_secs(30), "the failing refresh to be retried", || async {
        let h: Value = t.client.get(t.url("/healthz")).send().await.unwrap().json().await.unwrap();
        (h["status"] == "ok").then_some(())
    })
    .await;
    t.handle.shutdown().await;
}

#[tokio::test]
async fn changes_to_different_services_do_not_wait_for_each_other() {
    let t = T::start().await;
    redis_setup(&t).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "other", "type": "redis"}))).await;
    let state = &t.handle.state;
    // While cache's lock is held (a long change of cache under way) ...
    let guard = state.desired.lock_service("prod", "cache").await;
    // ... a change of another service completes ...
    let other = json!({"values": {"port": 7001}, "message": "independent"});
    t.ok(Method::PATCH, "/clusters/prod/services/other/config", Some(other)).await;
    // ... while a change of cache waits its turn, and then applies.
    let done = {
        let patch = {
            let t = &t;
            async move {
                let body = json!({"values": {"maxmemory": "64mb"}, "message": "queued"});
                t.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body)).await
            }
        };
        tokio::pin!(patch);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut patch).await.is_err(),
            "a change of cache went through while cache's lock was held"
        );
        drop(guard);
        patch.await
    };
    assert_eq!(done["revision"], 2, "{done}");
    t.handle.shutdown().await;
}
