//! Cluster templates through the REST API of a real in-process manager
//! (SQLite in a temp dir, or PostgreSQL with `DROVER_TEST_POSTGRES_URL`;
//! hosts enrolled through the store, agents played by a task that reports
//! every role it should run as running and healthy): versions, validation
//! errors with their paths, the export of a cluster built through the API
//! (a secret becomes a variable, a role-level value a warning), its
//! instantiation on other hosts giving the same services, groups and
//! values, and an instantiation that fails halfway converging when run
//! again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::{PASSWORD, T};

/// A manager on SQLite, or on a fresh PostgreSQL database of the server of
/// `DROVER_TEST_POSTGRES_URL` when it is set.
async fn start() -> T {
    let url = match std::env::var("DROVER_TEST_POSTGRES_URL") {
        Ok(admin_url) if !admin_url.is_empty() => Some(fresh_postgres(&admin_url).await),
        _ => None,
    };
    T::start_configured(|_| {}, |c| c.database_url = url.or(c.database_url.take())).await
}

async fn fresh_postgres(admin_url: &str) -> String {
    use sqlx::{Connection, Executor};
    let name = format!("drover_tpl_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to DROVER_TEST_POSTGRES_URL");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin_url.to_owned());
    format!("{base}/{name}")
}

const REDIS: &str = r#"
name: cache-tier
description: a Redis primary with replicas
variables:
  - name: pw
    sensitive: true
  - name: mem
    default: 64mb
services:
  - name: cache
    type: redis
    config:
      bind: 0.0.0.0
      requirepass: {$var: pw}
      maxmemory: {$var: mem}
    groups:
      - {role_type: replica, name: big, config: {appendonly: true}}
host_groups:
  - name: primary
    cardinality: 1
    selector: tier=a
    roles: [{service: cache, role_type: primary}]
  - name: replicas
    cardinality: 2
    selector: tier=a
    roles: [{service: cache, role_type: replica, group: big}]
"#;

impl T {
    /// POST /templates with a YAML body: status and JSON answer.
    async fn upload_yaml(&self, text: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url("/api/v1/templates"))
            .basic_auth("admin", Some(PASSWORD))
            .header("content-type", "application/yaml")
            .body(text.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn get_text(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .client
            .get(self.url(&format!("/api/v1{path}")))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (status, ct, resp.text().await.unwrap())
    }

    /// Waits for a command to end; returns it.
    async fn finished(&self, id: &str) -> Value {
        let path = format!("/commands/{id}");
        drover_testkit::eventually(Duration::from_secs(60), "the command ends", || async {
            let c = self.ok(Method::GET, &path, None).await;
            (c["state"] != "running").then_some(c)
        })
        .await
    }

    /// Roles of a service as `(role type, group, hostname)`, sorted.
    async fn placement(&self, cluster: &str, service: &str) -> Vec<(String, String, String)> {
        let s = self.ok(Method::GET, &format!("/clusters/{cluster}/services/{service}"), None).await;
        let mut out: Vec<(String, String, String)> = s["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let f = |k: &str| r[k].as_str().unwrap().to_owned();
                (f("role_type"), f("group"), f("hostname"))
            })
            .collect();
        out.sort();
        out
    }
}

/// Plays every host's agent: each role the manager wants running reports
/// running and healthy, except on the hosts in `broken`, where it fails.
fn fake_agents(t: &T, broken: Arc<Mutex<BTreeSet<String>>>) -> tokio::task::JoinHandle<()> {
    let state = t.handle.state.clone();
    tokio::spawn(async move {
        loop {
            let mut reports = Vec::new();
            for c in state.store.list_clusters().await.unwrap_or_default() {
                for s in state.store.list_services(&c.name).await.unwrap_or_default() {
                    for r in state.store.roles_of_service(&c.name, &s.name).await.unwrap_or_default() {
                        let Some(d) = state.registry.desired_role(&r.host_id, &r.id) else { continue };
                        if !d.running {
                            continue;
                        }
                        let failed = broken.lock().unwrap().contains(&r.host_id);
                        let (st, health) = if failed { ("failed", "bad") } else { ("running", "good") };
                        let same = |s: &drover_manager::store::RoleStatusRec| {
                            s.state == st && s.restart_nonce == d.restart_nonce
                        };
                        if state.registry.role_status(&r.id).is_some_and(|s| same(&s)) {
                            continue;
                        }
                        reports.push(drover_manager::store::RoleStatusRec {
                            role_id: r.id.clone(),
                            state: st.into(),
                            health: health.into(),
                            pid: if failed { 0 } else { 4242 },
                            last_exit_status: if failed { 1 } else { 0 },
                            restart_count: 0,
                            applied_revision: d.config_revision,
                            running_revision: d.config_revision,
                            restart_nonce: d.restart_nonce,
                            file_hashes: Default::default(),
                            last_error: if failed { "exited with status 1".into() } else { String::new() },
                            last_log_lines: Vec::new(),
                            started_at: Some(drover_manager::model::now_millis()),
                            reload_count: 0,
                            reloaded_at: None,
                            updated_at: drover_manager::model::now_millis(),
                        });
                    }
                }
            }
            if !reports.is_empty() {
                state.registry.update_role_status(reports);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test]
async fn versions_are_stored_listed_shown_and_deleted() {
    let t = start().await;
    let (status, v1) = t.upload_yaml(REDIS).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["document"]["services"][0]["config"]["requirepass"], json!({"$var": "pw"}));
    // The same document as JSON is the next version.
    let doc: Value = serde_norway::from_str(REDIS).unwrap();
    let v2 = t.ok(Method::POST, "/templates", Some(doc.clone())).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["document"], v1["document"]);

    let list = t.ok(Method::GET, "/templates", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["name"], "cache-tier");
    assert_eq!(list["items"][0]["latest_version"], 2);
    assert_eq!(list["items"][0]["versions"], 2);

    assert_eq!(t.ok(Method::GET, "/templates/cache-tier?version=1", None).await["version"], 1);
    assert_eq!(t.ok(Method::GET, "/templates/cache-tier", None).await["version"], 2);
    let (status, ct, yaml) = t.get_text("/templates/cache-tier?format=yaml").await;
    assert_eq!((status, ct.as_str()), (200, "application/yaml"));
    let back: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(back, v2["document"]);

    t.ok(Method::DELETE, "/templates/cache-tier?version=1", None).await;
    t.err(Method::GET, "/templates/cache-tier?version=1", None, 404).await;
    t.err(Method::GET, "/templates/cache-tier?version=0", None, 400).await;
    t.err(Method::DELETE, "/templates/cache-tier?version=1", None, 404).await;
    assert_eq!(t.ok(Method::GET, "/templates", None).await["items"][0]["versions"], 1);
    t.ok(Method::DELETE, "/templates/cache-tier", None).await;
    t.err(Method::GET, "/templates/cache-tier", None, 404).await;
    assert_eq!(t.ok(Method::GET, "/templates", None).await["items"], json!([]));
    // Once every version is deleted, the name starts again at 1.
    assert_eq!(t.upload_yaml(REDIS).await.1["version"], 1);
}

#[tokio::test]
async fn an_invalid_template_is_refused_with_every_problem_named() {
    let t = start().await;
    let bad = REDIS
        .replace("maxmemory: {$var: mem}", "maxmemry: 1gb")
        .replace("{appendonly: true}", "{appendonly: perhaps}")
        .replace("cardinality: 1", "cardinality: 2");
    let (status, body) = t.upload_yaml(&bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let message = body["error"]["message"].as_str().unwrap();
    for want in [
        "template cache-tier is invalid (3 problems)",
        "services[0].config.maxmemry: unknown parameter of service type `redis`",
        "services[0].groups[0].config.appendonly:",
        "services[0]: role type primary takes exactly 1 role(s); the host groups place 2 (primary: 2)",
    ] {
        assert!(message.contains(want), "{want:?} not in {message}");
    }
    // Not YAML, not a template, not a type the endpoint takes.
    assert_eq!(t.upload_yaml("name: [").await.0, 400);
    assert_eq!(t.upload_yaml("name: x\nunknown_field: 1\n").await.0, 400);
    // YAML is held to JSON's types: null is no name, an object no default.
    assert_eq!(t.upload_yaml("name: null\n").await.0, 400);
    let (status, body) = t.upload_yaml("name: x\nvariables: [{name: v, default: {}}]\n").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("variables[0].default: must be a string"), "{body}");
    let resp = t
        .client
        .post(t.url("/api/v1/templates"))
        .basic_auth("admin", Some(PASSWORD))
        .header("content-type", "text/plain")
        .body("name: x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(t.ok(Method::GET, "/templates", None).await["items"], json!([]));
}

#[tokio::test]
async fn an_instantiation_is_checked_before_anything_is_created() {
    let t = start().await;
    for (id, tier) in [("h1", "a"), ("h2", "a")] {
        t.host_labelled(id, &format!("node-{id}"), "10.0.0.1", &[("tier", tier)]).await;
    }
    assert_eq!(t.upload_yaml(REDIS).await.0, 201);
    let tr = &t;
    let refused = |body: Value| async move {
        let msg = tr.err(Method::POST, "/templates/cache-tier/instantiate", Some(body), 400).await;
        // Nothing was created.
        tr.err(Method::GET, "/clusters/new", None, 404).await;
        msg
    };
    // A missing variable, too few hosts for a group, an unknown variable.
    let msg = refused(json!({"cluster": "new", "variables": {"other": 1}})).await;
    assert!(msg.contains("variables.other: template cache-tier has no variable other"), "{msg}");
    assert!(msg.contains("variables.pw: is required"), "{msg}");
    assert!(
        msg.contains("host_groups.replicas: host group replicas needs 2 hosts matching tier=a; 1 matches"),
        "{msg}"
    );
    // Hosts named for the primary and one replica: the type's counts hold
    // (replicas take any number), but a host named twice does not.
    let msg = refused(json!({
        "cluster": "new", "variables": {"pw": "s3cret"},
        "host_groups": {"primary": {"hosts": ["node-h1"]}, "replicas": {"hosts": ["h1", "nowhere"]}}
    }))
    .await;
    assert!(msg.contains("host_groups.replicas.hosts[0]: host node-h1 is already in host group primary"), "{msg}");
    assert!(msg.contains("host_groups.replicas.hosts[1]: no host has id or hostname \"nowhere\""), "{msg}");
    // A value that only the substituted template shows wrong.
    let msg = refused(json!({
        "cluster": "new", "variables": {"pw": "s3cret", "mem": "lots"},
        "host_groups": {"primary": {"hosts": ["h1"]}, "replicas": {"hosts": ["h2"]}}
    }))
    .await;
    assert!(msg.contains("services[0].config.maxmemory:"), "{msg}");
    t.err(Method::POST, "/templates/none/instantiate", Some(json!({"cluster": "new"})), 404).await;
    t.err(Method::GET, "/clusters/new", None, 404).await;
}

#[tokio::test]
async fn an_exported_cluster_instantiates_on_other_hosts_with_the_same_configuration() {
    let t = start().await;
    for (i, tier) in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "b")] {
        t.host_labelled(&format!("h{i}"), &format!("node-{i}"), &format!("10.0.0.{i}"), &[("tier", tier), ("dc", "x")])
            .await;
    }
    let agents = fake_agents(&t, Arc::default());
    // The cluster, built through the API.
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(
        Method::POST,
        "/clusters/prod/services/cache/role-groups",
        Some(json!({"role_type": "replica", "name": "big"})),
    )
    .await;
    t.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!([
            {"role_type": "primary", "host_id": "h1"},
            {"role_type": "replica", "host_id": "h2", "group": "big"},
            {"role_type": "replica", "host_id": "h3", "group": "big"},
        ])),
    )
    .await;
    let patch = |body: Value| t.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body));
    patch(json!({"values": {"bind": "0.0.0.0", "requirepass": "s3cret", "maxmemory": "64mb"}, "message": "m"})).await;
    patch(json!({"values": {"appendonly": true}, "group": {"role_type": "replica", "name": "big"}, "message": "m"}))
        .await;
    patch(json!({"values": {"loglevel": "debug"}, "role": "cache-replica-2", "message": "one role"})).await;

    let e = t.ok(Method::GET, "/clusters/prod/template", None).await;
    let doc = &e["template"];
    assert_eq!(
        doc["variables"],
        json!([{"name": "cache_requirepass", "description": "requirepass of service cache", "sensitive": true}])
    );
    assert_eq!(doc["services"][0]["config"]["requirepass"], json!({"$var": "cache_requirepass"}));
    assert_eq!(doc["services"][0]["config"]["maxmemory"], json!(64 << 20));
    assert_eq!(
        doc["services"][0]["groups"],
        json!([{"role_type": "replica", "name": "big", "config": {"appendonly": true}}])
    );
    assert_eq!(
        doc["host_groups"],
        json!([
            {"name": "cache-primary", "cardinality": 1, "selector": "dc=x,tier=a",
             "roles": [{"service": "cache", "role_type": "primary"}]},
            {"name": "cache-replica", "cardinality": 2, "selector": "dc=x,tier=a",
             "roles": [{"service": "cache", "role_type": "replica", "group": "big"}]},
        ])
    );
    let warnings = e["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.starts_with("role cache-replica-2 of service cache on host node-3 overrides loglevel"), "{w}");
    assert!(!e.to_string().contains("s3cret"), "a secret was exported: {e}");

    // The YAML export is accepted as it is.
    let (status, ct, yaml) = t.get_text("/clusters/prod/template?format=yaml").await;
    assert_eq!((status, ct.as_str()), (200, "application/yaml"));
    assert!(yaml.starts_with("# warning: role cache-replica-2"), "{yaml}");
    let (status, stored) = t.upload_yaml(&yaml).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(&stored["document"], doc);

    // On other hosts: the selectors' tier=a hosts are taken, so name them.
    let cmd = t
        .ok(
            Method::POST,
            "/templates/prod/instantiate",
            Some(json!({
                "cluster": "copy",
                "variables": {"cache_requirepass": "other-secret"},
                "host_groups": {
                    "cache-primary": {"hosts": ["node-4"]},
                    "cache-replica": {"selector": "tier=b"},
                }
            })),
        )
        .await;
    assert_eq!(cmd["name"], "instantiate");
    let done = t.finished(cmd["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    let placed = t.placement("copy", "cache").await;
    let hosts: BTreeSet<&str> = placed.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(hosts, BTreeSet::from(["node-4", "node-5", "node-6"]));
    let shape = |p: Vec<(String, String, String)>| p.into_iter().map(|(a, b, _)| (a, b)).collect::<Vec<_>>();
    assert_eq!(shape(placed), shape(t.placement("prod", "cache").await));
    let prod = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    let copy = t.ok(Method::GET, "/clusters/copy/services/cache/config", None).await;
    assert_eq!(copy["overrides"]["service"], prod["overrides"]["service"]);
    assert_eq!(copy["overrides"]["groups"], prod["overrides"]["groups"]);
    assert_eq!(copy["overrides"]["roles"], json!({}));
    // The secret given is the one in the rendered files.
    let s = t.handle.state.store.roles_of_service("copy", "cache").await.unwrap();
    let d = t.handle.state.registry.desired_role(&s[0].host_id, &s[0].id).unwrap();
    let conf = String::from_utf8(d.rendered.files[0].content.clone()).unwrap();
    assert!(conf.contains("other-secret"), "{conf}");
    let revisions = t.ok(Method::GET, "/clusters/copy/services/cache/config/revisions", None).await;
    assert_eq!(revisions["items"][0]["message"], "template prod version 1");
    agents.abort();
}

#[tokio::test]
async fn an_instantiation_that_failed_halfway_converges_when_run_again() {
    let t = start().await;
    for i in 1..=3 {
        t.host_labelled(&format!("h{i}"), &format!("node-{i}"), &format!("10.0.0.{i}"), &[("tier", "a")]).await;
    }
    let broken: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::from(["h3".to_owned()])));
    let agents = fake_agents(&t, broken.clone());
    assert_eq!(t.upload_yaml(REDIS).await.0, 201);
    let body = json!({
        "cluster": "c1", "variables": {"pw": "s3cret"},
        "host_groups": {"primary": {"hosts": ["h1"]}, "replicas": {"hosts": ["h2", "h3"]}}
    });
    let cmd = t.ok(Method::POST, "/templates/cache-tier/instantiate", Some(body.clone())).await;
    let done = t.finished(cmd["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(done["message"].as_str().unwrap().contains("start service cache"), "{done}");
    let before = t.placement("c1", "cache").await;
    assert_eq!(before.len(), 3);

    // The host works again; the same request completes what is missing.
    broken.lock().unwrap().clear();
    let cmd = t.ok(Method::POST, "/templates/cache-tier/instantiate", Some(body.clone())).await;
    let done = t.finished(cmd["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let steps: Vec<(String, String)> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["description"].as_str().unwrap().to_owned(), s["message"].as_str().unwrap().to_owned()))
        .collect();
    assert!(steps.iter().any(|(_, m)| m == "cluster c1 exists"), "{steps:?}");
    assert!(steps.iter().any(|(_, m)| m == "the configuration is already the template's"), "{steps:?}");
    assert!(steps.iter().any(|(_, m)| m == "every role of service cache exists"), "{steps:?}");
    assert_eq!(t.placement("c1", "cache").await, before, "no role was duplicated");
    let revisions = t.ok(Method::GET, "/clusters/c1/services/cache/config/revisions", None).await;
    assert_eq!(revisions["items"].as_array().unwrap().len(), 2, "created, then the template's values: {revisions}");
    agents.abort();
}
