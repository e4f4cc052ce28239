//! Placement of roles by label selector through the REST API of a real
//! in-process manager: `host_selector` and `count` instead of `host_id`,
//! spreading over hosts, bulk requests, lost and decommissioned hosts, and
//! the 409 that names what matched when too few hosts do, with nothing stored.
//! Hosts are enrolled through the store, with labels.

use std::time::{Duration, Instant};

use drover_manager::model::HostStatus;
use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::T;

impl T {
    /// A manager that marks hosts lost after `host_lost_after`.
    async fn start_lost_after(host_lost_after: Duration) -> T {
        T::start_configured(
            |_| {},
            |c| {
                c.host_lost_after = host_lost_after;
                c.heartbeat_interval = host_lost_after / 4;
            },
        )
        .await
    }

    /// Enrolls host `id` (hostname `node-<id>`, address `10.0.0.<n>` for `h<n>`)
    /// with `labels`.
    async fn node(&self, id: &str, labels: &[(&str, &str)]) {
        let address = format!("10.0.0.{}", id.trim_start_matches('h'));
        self.host_labelled(id, &format!("node-{id}"), &address, labels).await
    }

    /// A POST that must be refused with `status`; returns the message.
    async fn refused(&self, path: &str, body: Value, status: u16) -> String {
        self.err(Method::POST, path, Some(body), status).await
    }

    /// Host ids of a service's roles, by role name.
    async fn placement(&self, service: &str) -> Vec<(String, String)> {
        let roles = self.ok(Method::GET, &format!("/clusters/prod/services/{service}/roles"), None).await;
        let mut out: Vec<(String, String)> = roles["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_owned(), r["host_id"].as_str().unwrap().to_owned()))
            .collect();
        out.sort();
        out
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn roles_are_placed_by_selector_and_spread_over_hosts() {
    let t = T::start_lost_after(Duration::from_secs(30)).await;
    t.node("h1", &[("zk", "true"), ("rack", "r1")]).await;
    t.node("h2", &[("zk", "true"), ("rack", "r2")]).await;
    t.node("h3", &[("zk", "true"), ("rack", "r2")]).await;
    t.node("h4", &[("zk", "true"), ("rack", "r3")]).await;
    t.node("h5", &[("cache", "true")]).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;

    // A Redis primary on h2 (by id) makes h2 the busiest zk host.
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": "primary", "host_id": "h2"})))
        .await;

    // Three ZooKeeper servers on zk=true hosts: h2 runs a role already, so it is left out.
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    let created = t
        .ok(
            Method::POST,
            "/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_selector": "zk=true", "count": 3})),
        )
        .await;
    // An object with `count` answers with a list.
    assert_eq!(created["items"].as_array().map(Vec::len), Some(3), "{created}");
    assert_eq!(t.placement("zk").await, pairs(&[("zk-server-1", "h1"), ("zk-server-2", "h3"), ("zk-server-3", "h4")]));

    // One more: every zk host but h2 runs a server, so h2 is the only one without.
    let one = t
        .ok(
            Method::POST,
            "/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_selector": "zk=true"})),
        )
        .await;
    assert_eq!(one["host_id"], "h2", "{one}");

    // Inequality, with a name.
    t.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!({"role_type": "replica", "host_selector": "zk=true,rack!=r2", "name": "far"})),
    )
    .await;
    // h1 and h4 run one role each (a zk server); h1 wins on id.
    assert!(t.placement("cache").await.contains(&("far".to_owned(), "h1".to_owned())));

    // The audit log names the picked host.
    let audit = t.ok(Method::GET, "/audit?object_type=role", None).await;
    let summaries: Vec<&str> =
        audit["items"].as_array().unwrap().iter().filter_map(|a| a["summary"].as_str()).collect();
    assert!(summaries.iter().any(|s| s.contains("role far on host node-h1 (h1)")), "{summaries:?}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn bulk_requests_mix_ids_and_selectors_and_spread_within_the_body() {
    let t = T::start_lost_after(Duration::from_secs(30)).await;
    for id in ["h1", "h2", "h3"] {
        t.node(id, &[("cache", "true")]).await;
    }
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let body = json!([
        {"role_type": "primary", "host_id": "h1"},
        {"role_type": "replica", "host_selector": "cache=true", "count": 2},
    ]);
    let created = t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(body)).await;
    assert_eq!(created["items"].as_array().map(Vec::len), Some(3), "{created}");
    assert_eq!(
        t.placement("cache").await,
        pairs(&[("cache-primary-1", "h1"), ("cache-replica-1", "h2"), ("cache-replica-2", "h3")])
    );
    t.handle.shutdown().await;
}

#[tokio::test]
async fn too_few_matching_hosts_is_refused_naming_them_and_nothing_is_stored() {
    let lost_after = Duration::from_millis(800);
    let t = T::start_lost_after(lost_after).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;

    // h9 goes silent and turns lost; the others are enrolled afterwards and kept alive.
    t.node("h9", &[("zk", "true")]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.handle.state.registry.host_status("h9") != Some(HostStatus::Lost) {
        assert!(Instant::now() < deadline, "h9 never turned lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.node("h1", &[("zk", "true")]).await;
    t.node("h2", &[("zk", "false")]).await;
    t.node("h3", &[("zk", "true")]).await;
    t.ok(Method::DELETE, "/hosts/h3", None).await;
    let keep_alive = || {
        for id in ["h1", "h2"] {
            t.handle.state.registry.touch(id);
        }
    };

    keep_alive();
    let msg = t
        .refused(
            "/clusters/prod/services/zk/roles",
            json!({"role_type": "server", "host_selector": "zk=true", "count": 3}),
            409,
        )
        .await;
    assert_eq!(msg, "role type server needs 3 hosts matching zk=true; 2 match (node-h1, node-h9), 1 of them is lost");

    // In a bulk request the entry is named and the valid entries before it are not kept.
    keep_alive();
    let msg = t
        .refused(
            "/clusters/prod/services/zk/roles",
            json!([
                {"role_type": "server", "host_id": "h1"},
                {"role_type": "server", "host_selector": "zk=maybe"},
            ]),
            409,
        )
        .await;
    assert_eq!(msg, "role 2: role type server needs 1 host matching zk=maybe; 0 match");
    assert!(t.placement("zk").await.is_empty());

    // The one healthy zk host is picked; lost and decommissioned ones never are.
    keep_alive();
    let one = t
        .ok(
            Method::POST,
            "/clusters/prod/services/zk/roles",
            Some(json!({"role_type": "server", "host_selector": "zk=true"})),
        )
        .await;
    assert_eq!(one["host_id"], "h1", "{one}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn bad_placement_requests_are_refused() {
    let t = T::start_lost_after(Duration::from_secs(30)).await;
    t.node("h1", &[("zk", "true")]).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "zk", "type": "zookeeper"}))).await;
    let path = "/clusters/prod/services/zk/roles";
    let cases = [
        (
            json!({"role_type": "server", "host_id": "h1", "host_selector": "zk=true"}),
            "give either host_id or host_selector, not both",
        ),
        (
            json!({"role_type": "server"}),
            "host_id or host_selector is required: the host to run on, or a label selector such as zk=true",
        ),
        (
            json!({"role_type": "server", "host_id": "h1", "count": 2}),
            "count needs host_selector; with host_id, one role is placed",
        ),
        (
            json!({"role_type": "server", "host_selector": "zk=true", "count": 0}),
            "count must be between 1 and 1000, got 0",
        ),
        (
            json!({"role_type": "server", "host_selector": "zk=true", "count": 2, "name": "x"}),
            "name can only be given for one role; leave it out with count 2",
        ),
        (
            json!({"role_type": "server", "host_selector": "zk"}),
            "invalid label selector \"zk\": write key=value or key!=value, separated by commas",
        ),
    ];
    // All of these the OpenAPI document rules out: 400.
    for (body, want) in cases {
        assert_eq!(t.refused(path, body.clone(), 400).await, want, "{body}");
    }
    // A role type of another service type: the document allows it, the
    // service's type does not (422).
    let body = json!({"role_type": "observer", "host_selector": "zk=true"});
    let want = "service type zookeeper has no role type \"observer\"; role types: server";
    assert_eq!(t.refused(path, body, 422).await, want);
    assert!(t.placement("zk").await.is_empty());
    t.handle.shutdown().await;
}

#[tokio::test]
async fn the_host_list_takes_the_same_selectors() {
    let t = T::start_lost_after(Duration::from_secs(30)).await;
    t.node("h1", &[("zk", "true"), ("rack", "r1")]).await;
    t.node("h2", &[("zk", "true"), ("rack", "r2")]).await;
    t.node("h3", &[("zk", "true")]).await;
    let hosts = t.ok(Method::GET, "/hosts?label=zk%3Dtrue,rack!%3Dr1", None).await;
    let ids: Vec<&str> = hosts["items"].as_array().unwrap().iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(ids, ["h2", "h3"]);
    assert_eq!(hosts["total"], 2);
    t.handle.shutdown().await;
}
