//! Service references through the REST API of a real in-process manager
//! (SQLite in a temp dir, hosts enrolled through the store, no agents): an
//! nginx `lb` whose `upstream_service` names an nginx `web`. References are
//! validated when set (an unknown service: 404; itself, a type the parameter
//! does not allow: 409; no revision either way), the referring service is re-rendered when the
//! referenced one's roles or ports change (the new desired files list them,
//! with an event saying why, and no new revision of `lb`), and a referenced
//! service cannot be deleted.

use reqwest::Method;
use serde_json::{Value, json};

/// A user service type whose `backend` parameter only takes Redis services.
const CLIENT_TYPE: &str = r#"
name = "client"
version = "1"
[[role_types]]
name = "main"
files = [{ path = "app.conf" }]
[role_types.process]
program = "/bin/true"
[[parameters]]
name = "backend"
type = "service"
service_types = ["redis"]
"#;

mod common;
use common::T;

/// A manager with the `client` service type in its data dir.
async fn start() -> T {
    T::start_with(|dir| {
        let client_type = dir.join("service-types/client");
        std::fs::create_dir_all(client_type.join("templates")).unwrap();
        std::fs::write(client_type.join("service.toml"), CLIENT_TYPE).unwrap();
        std::fs::write(client_type.join("templates/app.conf.hbs"), "{{refs.backend.service}}\n").unwrap();
    })
    .await
}

impl T {
    /// Enrolls host `id` as `node-<id>` at `address`.
    async fn node(&self, id: &str, address: &str) {
        self.host(id, &format!("node-{id}"), address).await
    }

    async fn role(&self, svc: &str, host: &str) -> String {
        let body = json!({"role_type": "server", "host_id": host});
        let r = self.ok(Method::POST, &format!("/clusters/prod/services/{svc}/roles"), Some(body)).await;
        r["id"].as_str().unwrap().to_owned()
    }

    async fn patch(&self, svc: &str, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, &format!("/clusters/prod/services/{svc}/config"), Some(body)).await
    }

    async fn revision(&self, svc: &str) -> u64 {
        self.ok(Method::GET, &format!("/clusters/prod/services/{svc}"), None).await["revision"].as_u64().unwrap()
    }

    /// The upstream lines of `role_id`'s nginx.conf on `host` once they
    /// satisfy `want` (a change answers once stored; the push follows).
    async fn upstreams_when(&self, host: &str, role_id: &str, want: impl Fn(&[String]) -> bool) -> Vec<String> {
        drover_testkit::eventually(std::time::Duration::from_secs(10), "lb's upstreams change", || {
            let got = upstreams(&self.desired_conf(host, role_id));
            std::future::ready(want(&got).then_some(got))
        })
        .await
    }

    /// The nginx.conf the manager wants on `host` for role `role_id`.
    fn desired_conf(&self, host: &str, role_id: &str) -> String {
        let role = self.handle.state.registry.desired_role(host, role_id).expect("desired role");
        let file = role.rendered.files.iter().find(|f| f.path == "nginx.conf").expect("nginx.conf");
        String::from_utf8(file.content.clone()).unwrap()
    }

    async fn events(&self, object_id: &str) -> Vec<String> {
        let v = self.ok(Method::GET, &format!("/events?object_type=service&object_id={object_id}"), None).await;
        v["items"].as_array().unwrap().iter().map(|e| format!("{}: {}", e["kind"], e["message"])).collect()
    }
}

/// Upstream lines of an nginx.conf: `address:port # role`.
fn upstreams(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("server ").filter(|rest| rest.contains(" # ")))
        .map(|l| l.replace(';', "").replace(" on node-", " @").trim().to_owned())
        .collect()
}

#[tokio::test]
async fn nginx_follows_the_roles_of_the_service_it_refers_to() {
    let t = start().await;
    for (id, address) in [("h1", "10.0.0.1"), ("h2", "10.0.0.2"), ("h3", "10.0.0.3"), ("h4", "10.0.0.4")] {
        t.node(id, address).await;
    }
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    for svc in ["web", "lb"] {
        t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": svc, "type": "nginx"}))).await;
    }
    let w1 = t.role("web", "h1").await;
    t.role("web", "h2").await;
    let lb = t.role("lb", "h4").await;
    assert!(t.desired_conf("h4", &lb).contains("return 200 \"lb-server-1 on node-h4 (service prod/lb)\\n\";"));

    // The service type describes the reference parameter.
    let ty = t.ok(Method::GET, "/service-types/nginx", None).await;
    let param = ty["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "upstream_service").unwrap();
    assert_eq!((&param["type"], &param["kind"]["service_types"]), (&json!("service"), &json!([])));

    // Bad references, nothing stored: a service that does not exist (404),
    // the service itself (409), no service name at all (422).
    let before = t.revision("lb").await;
    let cases = [
        (
            json!("nope"),
            404,
            "parameter `upstream_service`: service nope not found in cluster prod (its other services: web)",
        ),
        (json!("lb"), 409, "parameter `upstream_service`: service lb cannot refer to itself"),
        (json!("Web!"), 422, "parameter `upstream_service`: expected the name of a service of the cluster"),
    ];
    for (value, status, want) in cases {
        let body = json!({"values": {"upstream_service": value}, "message": "point at it"});
        let message = t.err(Method::PATCH, "/clusters/prod/services/lb/config", Some(body), status).await;
        assert!(message.starts_with(want), "{message}");
    }
    // At role level too.
    let body = json!({"values": {"upstream_service": "nope"}, "role": "lb-server-1", "message": "point at it"});
    t.err(Method::PATCH, "/clusters/prod/services/lb/config", Some(body), 404).await;
    assert_eq!(t.revision("lb").await, before, "no revision stored");

    // lb -> web: one upstream entry per web role, on its host address and port.
    let (status, v) = t.patch("lb", json!({"values": {"upstream_service": "web"}, "message": "balance web"})).await;
    assert_eq!(status, 200, "{v}");
    let lb_revision = t.revision("lb").await;
    t.upstreams_when("h4", &lb, |u| u == ["10.0.0.1:8080 # web-server-1 @h1", "10.0.0.2:8080 # web-server-2 @h2"])
        .await;

    // A third web role: lb's files follow, without a new revision of lb, and an event says why.
    let w3 = t.role("web", "h3").await;
    assert_eq!(
        upstreams(&t.desired_conf("h4", &lb)),
        ["10.0.0.1:8080 # web-server-1 @h1", "10.0.0.2:8080 # web-server-2 @h2", "10.0.0.3:8080 # web-server-3 @h3"]
    );
    assert_eq!(t.revision("lb").await, lb_revision);
    let events = t.events("prod/lb").await;
    assert_eq!(
        events.first().map(String::as_str),
        Some(
            "\"config_rerendered\": \"re-rendered because prod/web changed: nginx.conf of lb-server-1; running roles reload (SIGHUP)\""
        )
    );
    let desired = t.handle.state.registry.desired_role("h4", &lb).unwrap();
    assert_eq!(desired.rendered.process.reload_signal, "SIGHUP");
    assert_eq!(desired.rendered.restart_digest.len(), 64);

    // A web role's own port feeds its upstream entry.
    let body = json!({"values": {"port": 9090}, "role": "web-server-3", "message": "move it"});
    assert_eq!(t.patch("web", body).await.0, 200);
    t.upstreams_when("h4", &lb, |u| u.iter().any(|l| l == "10.0.0.3:9090 # web-server-3 @h3")).await;
    drover_testkit::eventually(std::time::Duration::from_secs(10), "a second event on lb", || async {
        (t.events("prod/lb").await.len() == 2).then_some(())
    })
    .await;

    // Removing web roles: they leave the list; with none left lb answers 503.
    t.ok(Method::DELETE, &format!("/clusters/prod/services/web/roles/{w3}"), None).await;
    assert_eq!(
        upstreams(&t.desired_conf("h4", &lb)),
        ["10.0.0.1:8080 # web-server-1 @h1", "10.0.0.2:8080 # web-server-2 @h2"]
    );
    t.ok(Method::DELETE, &format!("/clusters/prod/services/web/roles/{w1}"), None).await;
    assert_eq!(upstreams(&t.desired_conf("h4", &lb)), ["10.0.0.2:8080 # web-server-2 @h2"]);

    // A referenced service cannot go; once nothing refers to it, it can.
    let message = t.err(Method::DELETE, "/clusters/prod/services/web", None, 409).await;
    assert_eq!(message, "service lb refers to web (parameter upstream_service); change that first");
    let (status, _) = t.patch("lb", json!({"values": {"upstream_service": null}, "message": "serve alone"})).await;
    assert_eq!(status, 200);
    t.upstreams_when("h4", &lb, <[String]>::is_empty).await;
    t.ok(Method::DELETE, "/clusters/prod/services/web", None).await;
}

#[tokio::test]
async fn a_reference_must_have_an_allowed_type() {
    let t = start().await;
    t.node("h1", "10.0.0.1").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "web", "type": "nginx"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "app", "type": "client"}))).await;
    let (status, v) = t.patch("app", json!({"values": {"backend": "web"}, "message": "use web"})).await;
    assert_eq!(status, 409);
    assert_eq!(
        v["error"]["message"],
        "parameter `backend`: service web is a nginx service; expected a service of type redis"
    );
    let (status, v) = t.patch("app", json!({"values": {"backend": "cache"}, "message": "use the cache"})).await;
    assert_eq!(status, 200, "{v}");
    // Rolling back to before the reference is a change like any other.
    t.ok(Method::POST, "/clusters/prod/services/app/config/rollback", Some(json!({"revision": 1, "message": "undo"})))
        .await;
}
