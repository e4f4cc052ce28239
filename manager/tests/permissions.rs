//! The permission matrix: every operation of the OpenAPI document, called by
//! every role (and without credentials), answers what the table below says.
//!
//! The table is the access model written out and reviewed like code: one row
//! per operation with the permission it needs and where. A new route without a
//! row fails the test. The expected answer of a caller follows from the row:
//! no credentials -> 401; lacking the permission -> 403 whose JSON names it;
//! holding it -> 2xx for reads, and for changes anything but 401/403 (the rows
//! aim changes at absent objects or give values the domain refuses, so the
//! walk changes nothing that later rows read; the functional tests cover the
//! changes themselves).
mod common;

use std::collections::BTreeSet;

use common::T;
use drover_manager::users::Permission::{self, *};
use reqwest::Method;
use serde_json::{Value, json};

/// Where an operation needs its permission.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// No credentials needed.
    Public,
    /// Any signed-in user (own account, catalogue, filtered lists).
    SignedIn,
    /// The permission on the fleet.
    Global(Permission),
    /// The permission on cluster `prod`.
    Prod(Permission),
    /// The permission globally or on a cluster host `h1` is in (`prod`).
    OnHost(Permission),
    /// The permission anywhere (global or on some cluster).
    Anywhere(Permission),
}

/// Whether a read must succeed for a caller that may do it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// 2xx.
    Ok,
    /// The outcome depends on something outside the test (the Docker engine)
    /// or the row aims at an absent object: anything but 401/403.
    NotDenied,
}

struct Row {
    method: Method,
    /// The path as the OpenAPI document writes it.
    template: &'static str,
    /// The path called.
    path: &'static str,
    body: Option<Value>,
    need: Need,
    answer: Answer,
}

fn row(method: Method, template: &'static str, path: &'static str, need: Need, answer: Answer) -> Row {
    Row { method, template, path, body: None, need, answer }
}

fn with(mut r: Row, body: Value) -> Row {
    r.body = Some(body);
    r
}

const SVC: &str = "/api/v1/clusters/{cluster}/services/{service}";

fn table() -> Vec<Row> {
    use Answer::{NotDenied, Ok};
    use Need::*;
    let get = Method::GET;
    let post = Method::POST;
    let patch = Method::PATCH;
    let put = Method::PUT;
    let delete = Method::DELETE;
    let s = |suffix: &'static str| -> &'static str { Box::leak(format!("{SVC}{suffix}").into_boxed_str()) };
    vec![
        row(get.clone(), "/healthz", "/healthz", Public, Ok),
        row(get.clone(), "/api/v1/openapi.json", "/api/v1/openapi.json", Public, Ok),
        // Own account: anybody signed in, whatever their roles.
        row(get.clone(), "/api/v1/users/me", "/api/v1/users/me", SignedIn, Ok),
        with(
            row(put.clone(), "/api/v1/users/me/password", "/api/v1/users/me/password", SignedIn, NotDenied),
            json!({"current_password": "not-the-password", "new_password": "another-long-password"}),
        ),
        row(get.clone(), "/api/v1/api-tokens", "/api/v1/api-tokens", SignedIn, Ok),
        with(row(post.clone(), "/api/v1/api-tokens", "/api/v1/api-tokens", SignedIn, Ok), json!({"name": "matrix"})),
        row(delete.clone(), "/api/v1/api-tokens/{id}", "/api/v1/api-tokens/absent", SignedIn, NotDenied),
        // The catalogue and filtered lists.
        row(get.clone(), "/api/v1/service-types", "/api/v1/service-types", SignedIn, Ok),
        row(get.clone(), "/api/v1/service-types/{name}", "/api/v1/service-types/redis", SignedIn, Ok),
        row(get.clone(), "/api/v1/clusters", "/api/v1/clusters", SignedIn, Ok),
        row(get.clone(), "/api/v1/hosts", "/api/v1/hosts", SignedIn, Ok),
        // Users.
        row(get.clone(), "/api/v1/users", "/api/v1/users", Global(UsersWrite), Ok),
        with(
            row(post.clone(), "/api/v1/users", "/api/v1/users", Global(UsersWrite), NotDenied),
            json!({"username": "matrix-new", "password": "short"}),
        ),
        row(get.clone(), "/api/v1/users/{name}", "/api/v1/users/admin", Global(UsersWrite), Ok),
        with(
            row(patch.clone(), "/api/v1/users/{name}", "/api/v1/users/absent", Global(UsersWrite), NotDenied),
            json!({"disabled": true}),
        ),
        row(delete.clone(), "/api/v1/users/{name}", "/api/v1/users/absent", Global(UsersWrite), NotDenied),
        with(
            row(
                put.clone(),
                "/api/v1/users/{name}/password",
                "/api/v1/users/absent/password",
                Global(UsersWrite),
                NotDenied,
            ),
            json!({"password": "a-long-enough-password"}),
        ),
        // Bringing hosts in.
        row(get.clone(), "/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", Global(FleetEnroll), Ok),
        with(
            row(post.clone(), "/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens", Global(FleetEnroll), NotDenied),
            json!({"max_uses": 0}),
        ),
        row(
            delete.clone(),
            "/api/v1/enrollment-tokens/{id}",
            "/api/v1/enrollment-tokens/absent",
            Global(FleetEnroll),
            NotDenied,
        ),
        with(
            row(post.clone(), "/api/v1/hosts/bootstrap", "/api/v1/hosts/bootstrap", Global(FleetEnroll), NotDenied),
            json!({"addresses": [], "auth": {"password": "x"}}),
        ),
        row(
            get.clone(),
            "/api/v1/providers/docker/hosts",
            "/api/v1/providers/docker/hosts",
            Global(FleetEnroll),
            NotDenied,
        ),
        with(
            row(
                post.clone(),
                "/api/v1/providers/docker/hosts",
                "/api/v1/providers/docker/hosts",
                Global(FleetEnroll),
                NotDenied,
            ),
            json!({"count": 0}),
        ),
        row(
            delete.clone(),
            "/api/v1/providers/docker/hosts",
            "/api/v1/providers/docker/hosts",
            Global(FleetEnroll),
            NotDenied,
        ),
        row(
            delete.clone(),
            "/api/v1/providers/docker/hosts/{id}",
            "/api/v1/providers/docker/hosts/absent",
            Global(FleetEnroll),
            NotDenied,
        ),
        // History.
        row(get.clone(), "/api/v1/events", "/api/v1/events", Global(Read), Ok),
        row(get.clone(), "/api/v1/audit", "/api/v1/audit", Global(AuditRead), Ok),
        // Hosts: on the fleet, or through a cluster the host is in.
        row(get.clone(), "/api/v1/hosts/{id}", "/api/v1/hosts/h1", OnHost(Read), Ok),
        row(get.clone(), "/api/v1/hosts/{id}/metrics", "/api/v1/hosts/h1/metrics", OnHost(Read), Ok),
        // Metrics: anyone who reads somewhere; answers hold only what they may see.
        row(get.clone(), "/api/v1/metrics/query", "/api/v1/metrics/query?series=host_cpu_percent", Anywhere(Read), Ok),
        row(get.clone(), "/api/v1/metrics/series", "/api/v1/metrics/series", Anywhere(Read), Ok),
        row(get.clone(), "/api/v1/metrics/prometheus", "/api/v1/metrics/prometheus", Anywhere(Read), Ok),
        row(get.clone(), "/api/v1/health", "/api/v1/health?cluster=prod", Prod(Read), Ok),
        // Logs: a role's with read on its cluster (no agent: 503), the agent's with read on the fleet.
        row(
            get.clone(),
            "/api/v1/clusters/{cluster}/services/{service}/roles/{role}/logs",
            "/api/v1/clusters/prod/services/cache/roles/cache-primary-1/logs",
            Prod(Read),
            NotDenied,
        ),
        row(
            get.clone(),
            "/api/v1/clusters/{cluster}/services/{service}/roles/{role}/logs/download",
            "/api/v1/clusters/prod/services/cache/roles/cache-primary-1/logs/download?file=logs/stdout.log",
            Prod(Read),
            NotDenied,
        ),
        row(get.clone(), "/api/v1/hosts/{id}/agent-log", "/api/v1/hosts/h1/agent-log", Global(Read), NotDenied),
        row(get.clone(), "/api/v1/logs/search", "/api/v1/logs/search?cluster=prod", Prod(Read), Ok),
        row(get.clone(), "/api/v1/alerts", "/api/v1/alerts", SignedIn, Ok),
        // Alert rules (config.write on the fleet), silences and maintenance (commands.run on the cluster).
        row(get.clone(), "/api/v1/alert-rules", "/api/v1/alert-rules", Anywhere(Read), Ok),
        with(
            row(post.clone(), "/api/v1/alert-rules", "/api/v1/alert-rules", Global(ConfigWrite), NotDenied),
            json!({"name": "matrix", "expr": "host_load1 > 4", "severity": "info"}),
        ),
        row(get.clone(), "/api/v1/alert-rules/export", "/api/v1/alert-rules/export", Anywhere(Read), Ok),
        with(
            row(post.clone(), "/api/v1/alert-rules/import", "/api/v1/alert-rules/import", Global(ConfigWrite), Ok),
            json!([{"name": "matrix-import", "expr": "host_load1 > 8", "severity": "info"}]),
        ),
        row(get.clone(), "/api/v1/alert-rules/{name}", "/api/v1/alert-rules/host_lost", Anywhere(Read), Ok),
        with(
            row(put.clone(), "/api/v1/alert-rules/{name}", "/api/v1/alert-rules/matrix-put", Global(ConfigWrite), Ok),
            json!({"name": "matrix-put", "expr": "host_load1 > 4", "severity": "warning"}),
        ),
        row(delete.clone(), "/api/v1/alert-rules/{name}", "/api/v1/alert-rules/absent", Global(ConfigWrite), NotDenied),
        row(get.clone(), "/api/v1/silences", "/api/v1/silences", Anywhere(Read), Ok),
        with(
            row(post.clone(), "/api/v1/silences", "/api/v1/silences", Prod(CommandsRun), Ok),
            json!({"matchers": [{"name": "cluster", "op": "=", "value": "prod"}], "duration": "1h", "comment": "matrix"}),
        ),
        row(get.clone(), "/api/v1/silences/{id}", "/api/v1/silences/absent", Anywhere(Read), NotDenied),
        row(delete.clone(), "/api/v1/silences/{id}", "/api/v1/silences/absent", Anywhere(CommandsRun), NotDenied),
        row(get.clone(), "/api/v1/maintenance", "/api/v1/maintenance", Anywhere(Read), Ok),
        with(
            row(
                put.clone(),
                "/api/v1/maintenance/{kind}/{target}",
                "/api/v1/maintenance/cluster/prod",
                Prod(CommandsRun),
                Ok,
            ),
            json!({"comment": "matrix"}),
        ),
        row(
            delete.clone(),
            "/api/v1/maintenance/{kind}/{target}",
            "/api/v1/maintenance/cluster/prod",
            Prod(CommandsRun),
            NotDenied,
        ),
        with(
            row(
                put.clone(),
                "/api/v1/maintenance/service/{cluster}/{service}",
                "/api/v1/maintenance/service/prod/cache",
                Prod(CommandsRun),
                Ok,
            ),
            json!({}),
        ),
        row(
            delete.clone(),
            "/api/v1/maintenance/service/{cluster}/{service}",
            "/api/v1/maintenance/service/prod/cache",
            Prod(CommandsRun),
            NotDenied,
        ),
        row(get.clone(), "/api/v1/alerts/history", "/api/v1/alerts/history", Anywhere(Read), Ok),
        // Notification receivers and routes: config.write on the fleet.
        row(get.clone(), "/api/v1/receivers", "/api/v1/receivers", Anywhere(Read), Ok),
        row(get.clone(), "/api/v1/receivers/{name}", "/api/v1/receivers/absent", Anywhere(Read), NotDenied),
        with(
            row(put.clone(), "/api/v1/receivers/{name}", "/api/v1/receivers/matrix", Global(ConfigWrite), Ok),
            json!({}),
        ),
        row(delete.clone(), "/api/v1/receivers/{name}", "/api/v1/receivers/absent", Global(ConfigWrite), NotDenied),
        row(get.clone(), "/api/v1/routes", "/api/v1/routes", Anywhere(Read), NotDenied),
        with(
            row(put.clone(), "/api/v1/routes", "/api/v1/routes", Global(ConfigWrite), NotDenied),
            json!({"receiver": "matrix"}),
        ),
        row(get.clone(), "/api/v1/notifications/deliveries", "/api/v1/notifications/deliveries", Anywhere(Read), Ok),
        // Diagnostic bundles: commands.run on the cluster to collect (the body
        // is refused: max_bytes 0); a bundle is read by readers of its cluster,
        // so an absent one is 404 for everybody signed in.
        with(
            row(post.clone(), "/api/v1/diagnostics", "/api/v1/diagnostics", Prod(CommandsRun), NotDenied),
            json!({"cluster": "prod", "since": "1h", "max_bytes": 0}),
        ),
        row(get.clone(), "/api/v1/diagnostics", "/api/v1/diagnostics", SignedIn, Ok),
        row(get.clone(), "/api/v1/diagnostics/{id}", "/api/v1/diagnostics/absent", SignedIn, NotDenied),
        row(
            get.clone(),
            "/api/v1/diagnostics/{id}/download",
            "/api/v1/diagnostics/absent/download",
            SignedIn,
            NotDenied,
        ),
        row(delete.clone(), "/api/v1/diagnostics/{id}", "/api/v1/diagnostics/absent", SignedIn, NotDenied),
        row(get.clone(), "/api/v1/settings/redaction", "/api/v1/settings/redaction", Anywhere(Read), Ok),
        with(
            row(
                put.clone(),
                "/api/v1/settings/redaction",
                "/api/v1/settings/redaction",
                Global(ConfigWrite),
                NotDenied,
            ),
            json!([{"name": "matrix", "pattern": "("}]),
        ),
        with(
            row(patch.clone(), "/api/v1/hosts/{id}", "/api/v1/hosts/h1", OnHost(HostsWrite), NotDenied),
            json!({"labels": {"Bad Key": "x"}}),
        ),
        row(delete.clone(), "/api/v1/hosts/{id}", "/api/v1/hosts/absent", Global(HostsWrite), NotDenied),
        // Clusters.
        with(
            row(post.clone(), "/api/v1/clusters", "/api/v1/clusters", Global(ClustersWrite), NotDenied),
            json!({"name": "Bad Name"}),
        ),
        row(get.clone(), "/api/v1/clusters/{cluster}", "/api/v1/clusters/prod", Prod(Read), Ok),
        row(delete.clone(), "/api/v1/clusters/{cluster}", "/api/v1/clusters/absent", Global(ClustersWrite), NotDenied),
        row(get.clone(), "/api/v1/clusters/{cluster}/hosts", "/api/v1/clusters/prod/hosts", Prod(Read), Ok),
        with(
            row(
                post.clone(),
                "/api/v1/clusters/{cluster}/hosts",
                "/api/v1/clusters/prod/hosts",
                Global(HostsWrite),
                NotDenied,
            ),
            json!({"host_ids": []}),
        ),
        row(
            delete.clone(),
            "/api/v1/clusters/{cluster}/hosts/{host}",
            "/api/v1/clusters/prod/hosts/h3",
            Prod(HostsWrite),
            NotDenied,
        ),
        // Parcels.
        row(get.clone(), "/api/v1/parcels", "/api/v1/parcels", Anywhere(Read), Ok),
        row(
            post.clone(),
            "/api/v1/parcels",
            "/api/v1/parcels?file_name=x-1-any.parcel&sha256=0000000000000000000000000000000000000000000000000000000000000000",
            Global(ParcelsWrite),
            NotDenied,
        ),
        row(get.clone(), "/api/v1/clusters/{cluster}/parcels", "/api/v1/clusters/prod/parcels", Prod(Read), Ok),
        with(
            row(
                post.clone(),
                "/api/v1/clusters/{cluster}/parcels/commands",
                "/api/v1/clusters/prod/parcels/commands",
                Prod(ParcelsWrite),
                NotDenied,
            ),
            json!({"name": "distribute", "parcel": "absent", "version": "1"}),
        ),
        // Services, roles and groups of `prod`.
        row(get.clone(), "/api/v1/clusters/{cluster}/services", "/api/v1/clusters/prod/services", Prod(Read), Ok),
        with(
            row(
                post.clone(),
                "/api/v1/clusters/{cluster}/services",
                "/api/v1/clusters/prod/services",
                Prod(ServicesWrite),
                NotDenied,
            ),
            json!({"name": "Bad Name", "type": "redis"}),
        ),
        row(get.clone(), SVC, "/api/v1/clusters/prod/services/cache", Prod(Read), Ok),
        row(delete.clone(), SVC, "/api/v1/clusters/prod/services/absent", Prod(ServicesWrite), NotDenied),
        row(get.clone(), s("/role-groups"), "/api/v1/clusters/prod/services/cache/role-groups", Prod(Read), Ok),
        with(
            row(
                post.clone(),
                s("/role-groups"),
                "/api/v1/clusters/prod/services/cache/role-groups",
                Prod(ServicesWrite),
                NotDenied,
            ),
            json!({"role_type": "absent", "name": "big"}),
        ),
        row(get.clone(), s("/roles"), "/api/v1/clusters/prod/services/cache/roles", Prod(Read), Ok),
        with(
            row(
                post.clone(),
                s("/roles"),
                "/api/v1/clusters/prod/services/cache/roles",
                Prod(ServicesWrite),
                NotDenied,
            ),
            json!({"role_type": "primary", "host_id": "absent"}),
        ),
        row(
            get.clone(),
            s("/roles/{role}"),
            "/api/v1/clusters/prod/services/cache/roles/cache-primary-1",
            Prod(Read),
            Ok,
        ),
        row(
            delete.clone(),
            s("/roles/{role}"),
            "/api/v1/clusters/prod/services/cache/roles/absent",
            Prod(ServicesWrite),
            NotDenied,
        ),
        // Configuration.
        row(get.clone(), s("/config"), "/api/v1/clusters/prod/services/cache/config", Prod(Read), Ok),
        with(
            row(
                patch.clone(),
                s("/config"),
                "/api/v1/clusters/prod/services/cache/config",
                Prod(ConfigWrite),
                NotDenied,
            ),
            json!({"values": {"absent-parameter": 1}, "message": "matrix"}),
        ),
        row(
            get.clone(),
            s("/config/revisions"),
            "/api/v1/clusters/prod/services/cache/config/revisions",
            Prod(Read),
            Ok,
        ),
        row(
            get.clone(),
            s("/config/revisions/{revision}"),
            "/api/v1/clusters/prod/services/cache/config/revisions/1",
            Prod(Read),
            Ok,
        ),
        row(
            get.clone(),
            s("/config/diff"),
            "/api/v1/clusters/prod/services/cache/config/diff?from=1&to=1",
            Prod(Read),
            Ok,
        ),
        with(
            row(
                post.clone(),
                s("/config/rollback"),
                "/api/v1/clusters/prod/services/cache/config/rollback",
                Prod(ConfigWrite),
                NotDenied,
            ),
            json!({"revision": 99, "message": "matrix"}),
        ),
        // Commands.
        row(get.clone(), s("/commands"), "/api/v1/clusters/prod/services/cache/commands", Prod(Read), Ok),
        with(
            row(
                post.clone(),
                s("/commands"),
                "/api/v1/clusters/prod/services/cache/commands",
                Prod(CommandsRun),
                NotDenied,
            ),
            json!({"name": "restart", "roles": ["absent"]}),
        ),
        row(get.clone(), "/api/v1/commands/{id}", "/api/v1/commands/CMD", Prod(Read), Ok),
        row(post.clone(), "/api/v1/commands/{id}/abort", "/api/v1/commands/CMD/abort", Prod(CommandsRun), NotDenied),
        // Templates: stored for the fleet, exported from and instantiated into a cluster.
        row(get.clone(), "/api/v1/templates", "/api/v1/templates", Anywhere(Read), Ok),
        with(
            row(post.clone(), "/api/v1/templates", "/api/v1/templates", Global(ServicesWrite), NotDenied),
            json!({"name": "matrix", "services": [{"name": "x", "type": "absent-type"}]}),
        ),
        row(get.clone(), "/api/v1/templates/{name}", "/api/v1/templates/absent", Anywhere(Read), NotDenied),
        row(delete.clone(), "/api/v1/templates/{name}", "/api/v1/templates/absent", Global(ServicesWrite), NotDenied),
        with(
            row(
                post.clone(),
                "/api/v1/templates/{name}/instantiate",
                "/api/v1/templates/absent/instantiate",
                Global(HostsWrite),
                NotDenied,
            ),
            json!({"cluster": "prod"}),
        ),
        row(get.clone(), "/api/v1/clusters/{cluster}/template", "/api/v1/clusters/prod/template", Prod(Read), Ok),
        // Environments: containers from the provider, so fleet.enroll to make or remove them.
        row(get.clone(), "/api/v1/environments", "/api/v1/environments", Anywhere(Read), Ok),
        with(
            row(post.clone(), "/api/v1/environments", "/api/v1/environments", Global(FleetEnroll), NotDenied),
            json!({"name": "matrix", "template": "absent"}),
        ),
        row(get.clone(), "/api/v1/environments/{name}", "/api/v1/environments/prod", Prod(Read), NotDenied),
        row(
            delete.clone(),
            "/api/v1/environments/{name}",
            "/api/v1/environments/absent",
            Global(FleetEnroll),
            NotDenied,
        ),
        with(
            row(
                post.clone(),
                "/api/v1/environments/{name}/snapshots",
                "/api/v1/environments/absent/snapshots",
                Global(FleetEnroll),
                NotDenied,
            ),
            json!({"name": "snap"}),
        ),
        row(get.clone(), "/api/v1/snapshots", "/api/v1/snapshots", Anywhere(Read), Ok),
        row(get.clone(), "/api/v1/snapshots/{name}", "/api/v1/snapshots/absent", Anywhere(Read), NotDenied),
        row(delete.clone(), "/api/v1/snapshots/{name}", "/api/v1/snapshots/absent", Global(FleetEnroll), NotDenied),
    ]
}

/// The callers: a user per role (and one with none), and no credentials.
const CALLERS: [(&str, &[&str]); 9] = [
    ("anonymous", &[]),
    ("admin", &["admin"]),
    ("cadmin", &["cluster-admin@prod"]),
    ("configurator", &["configurator@prod"]),
    ("operator", &["operator@prod"]),
    ("viewer", &["viewer"]),
    ("prodviewer", &["viewer@prod"]),
    ("auditor", &["auditor"]),
    ("nobody", &[]),
];

const USER_PASSWORD: &str = "matrix-user-password";

fn grants(roles: &[&str]) -> Vec<drover_manager::users::Grant> {
    roles.iter().map(|r| drover_manager::users::Grant::parse(r).unwrap()).collect()
}

fn allowed(need: Need, caller: &str, roles: &[&str]) -> Option<bool> {
    use drover_manager::domain::access::{Access, Scope};
    if caller == "anonymous" {
        return match need {
            Need::Public => Some(true),
            _ => None,
        };
    }
    let access = Access::new(grants(roles), None);
    Some(match need {
        Need::Public | Need::SignedIn => true,
        Need::Global(p) => access.allows(p, Scope::Global),
        Need::Prod(p) | Need::OnHost(p) => access.allows(p, Scope::Cluster("prod")),
        Need::Anywhere(p) => access.allows(p, Scope::Any),
    })
}

async fn setup(t: &T) -> String {
    t.host("h1", "h1.example", "10.0.0.1").await;
    t.host("h2", "h2.example", "10.0.0.2").await;
    t.host("h3", "h3.example", "10.0.0.3").await;
    for c in ["prod", "dev"] {
        t.ok(Method::POST, "/clusters", Some(json!({"name": c}))).await;
    }
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1"]}))).await;
    t.ok(Method::POST, "/clusters/dev/hosts", Some(json!({"host_ids": ["h2"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!({"role_type": "primary", "host_id": "h1", "name": "cache-primary-1"})),
    )
    .await;
    // A command to read and abort (it fails at once: no agent runs the role).
    let cmd = t.ok(Method::POST, "/clusters/prod/services/cache/commands", Some(json!({"name": "stop"}))).await;
    for (name, roles) in CALLERS.iter().skip(2) {
        let grants: Vec<Value> = grants(roles).iter().map(|g| serde_json::to_value(g).unwrap()).collect();
        t.ok(Method::POST, "/users", Some(json!({"username": name, "password": USER_PASSWORD, "grants": grants})))
            .await;
    }
    cmd["id"].as_str().unwrap().to_owned()
}

async fn send(t: &T, caller: &str, method: &Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = t.client.request(method.clone(), t.url(path));
    req = match caller {
        "anonymous" => req,
        "admin" => req.basic_auth("admin", Some(common::PASSWORD)),
        user => req.basic_auth(user, Some(USER_PASSWORD)),
    };
    if let Some(b) = body {
        req = req.json(b);
    } else if *method == Method::POST && path.starts_with("/api/v1/parcels") {
        req = req.header("content-type", "application/octet-stream").body("not a parcel");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn every_operation_answers_every_role_as_the_table_says() {
    let t = T::start().await;
    let command = setup(&t).await;
    let rows = table();

    // Every operation of the document has exactly one row, and every row an operation.
    let doc = t.ok(Method::GET, "/openapi.json", None).await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let tabled: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r.method.to_string(), r.template.to_owned())).collect();
    assert_eq!(tabled.len(), rows.len(), "a row is repeated");
    let missing: Vec<_> = documented.difference(&tabled).collect();
    let extra: Vec<_> = tabled.difference(&documented).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "operations without a row: {missing:?}; rows without an operation: {extra:?}"
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    for r in &rows {
        let path = r.path.replace("CMD", &command);
        for (caller, roles) in CALLERS {
            let (status, body) = send(&t, caller, &r.method, &path, r.body.as_ref()).await;
            checked += 1;
            let what = format!("{} {path} as {caller}", r.method);
            match allowed(r.need, caller, roles) {
                None if status != 401 => failures.push(format!("{what}: {status}, want 401: {body}")),
                Some(false) => {
                    let named = body["error"]["permission"].as_str();
                    let want = match r.need {
                        Need::Global(p) | Need::Prod(p) | Need::OnHost(p) | Need::Anywhere(p) => Some(p.as_str()),
                        _ => None,
                    };
                    if status != 403 || named != want {
                        failures.push(format!("{what}: {status} naming {named:?}, want 403 naming {want:?}: {body}"));
                    }
                }
                Some(true) if status == 401 || status == 403 => {
                    failures.push(format!("{what}: {status}, want it allowed: {body}"))
                }
                Some(true) if r.answer == Answer::Ok && !(200..300).contains(&status) => {
                    failures.push(format!("{what}: {status}, want 2xx: {body}"))
                }
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} calls answered otherwise:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn cluster_scoped_callers_see_only_their_clusters() {
    let t = T::start().await;
    setup(&t).await;
    let names = |v: &Value, key: &str| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|i| i[key].as_str().unwrap().to_owned()).collect()
    };
    let (_, clusters) = send(&t, "prodviewer", &Method::GET, "/api/v1/clusters", None).await;
    assert_eq!(names(&clusters, "name"), ["prod"]);
    let (_, hosts) = send(&t, "prodviewer", &Method::GET, "/api/v1/hosts", None).await;
    assert_eq!((names(&hosts, "id"), hosts["total"].as_u64()), (vec!["h1".to_owned()], Some(1)));
    let (status, body) = send(&t, "prodviewer", &Method::GET, "/api/v1/hosts/h2", None).await;
    assert_eq!((status, body["error"]["permission"].as_str()), (403, Some("read")));
    let (_, all) = send(&t, "viewer", &Method::GET, "/api/v1/hosts", None).await;
    assert_eq!(all["total"], 3);
    let (_, parcels) = send(&t, "prodviewer", &Method::GET, "/api/v1/parcels", None).await;
    assert!(!parcels.to_string().contains("\"dev\""), "{parcels}");
    let (_, nothing) = send(&t, "nobody", &Method::GET, "/api/v1/clusters", None).await;
    assert_eq!(nothing["items"], json!([]));
}

#[tokio::test]
async fn operators_restart_but_do_not_configure_and_changes_are_audited_with_the_permission() {
    let t = T::start().await;
    setup(&t).await;
    let (status, body) = send(
        &t,
        "operator",
        &Method::POST,
        "/api/v1/clusters/prod/services/cache/commands",
        Some(&json!({"name": "restart"})),
    )
    .await;
    assert!((200..300).contains(&status), "{status}: {body}");
    let (status, body) = send(
        &t,
        "operator",
        &Method::PATCH,
        "/api/v1/clusters/prod/services/cache/config",
        Some(&json!({"values": {"maxmemory": "64mb"}, "message": "try"})),
    )
    .await;
    assert_eq!((status, body["error"]["permission"].as_str()), (403, Some("config.write")), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("operator lacks permission config.write on cluster prod")
    );
    let (status, body) = send(
        &t,
        "configurator",
        &Method::PATCH,
        "/api/v1/clusters/prod/services/cache/config",
        Some(&json!({"values": {"maxmemory": "64mb"}, "message": "try"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let audit = t.ok(Method::GET, "/audit?limit=10", None).await;
    let entries = audit["items"].as_array().unwrap();
    let find = |action: &str| entries.iter().find(|e| e["action"] == action).cloned().unwrap_or(Value::Null);
    let restart = find("command.restart");
    assert_eq!(
        (&restart["username"], &restart["via"], &restart["permission"]),
        (&json!("operator"), &json!("password"), &json!("commands.run"))
    );
    let update = find("config.update");
    assert_eq!((&update["username"], &update["permission"]), (&json!("configurator"), &json!("config.write")));
    // An auditor reads the log; a viewer does not.
    assert_eq!(send(&t, "auditor", &Method::GET, "/api/v1/audit", None).await.0, 200);
    assert_eq!(send(&t, "viewer", &Method::GET, "/api/v1/audit", None).await.0, 403);
}

#[tokio::test]
async fn tokens_do_no_more_than_their_user_and_the_last_admin_stays() {
    let t = T::start().await;
    setup(&t).await;
    // A token narrower than its user.
    let (status, created) = send(
        &t,
        "cadmin",
        &Method::POST,
        "/api/v1/api-tokens",
        Some(&json!({"name": "ro", "grants": [{"role": "viewer", "cluster": "prod"}]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap();
    let bearer = |method: Method, path: &str| {
        t.client.request(method, t.url(path)).bearer_auth(token).json(&json!({"name": "restart"})).send()
    };
    assert_eq!(bearer(Method::GET, "/api/v1/clusters/prod").await.unwrap().status(), 200);
    let refused = bearer(Method::POST, "/api/v1/clusters/prod/services/cache/commands").await.unwrap();
    assert_eq!(refused.status(), 403, "the token is read-only though its user may run commands");
    // Wider than the user: refused at creation.
    let (status, body) = send(
        &t,
        "cadmin",
        &Method::POST,
        "/api/v1/api-tokens",
        Some(&json!({"name": "wide", "grants": [{"role": "admin"}]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("cannot do more than its user"), "{body}");
    // Demoting the user narrows the token too.
    t.ok(Method::PATCH, "/users/cadmin", Some(json!({"grants": [{"role": "viewer", "cluster": "dev"}]}))).await;
    assert_eq!(bearer(Method::GET, "/api/v1/clusters/prod").await.unwrap().status(), 403);

    // The last enabled admin can be neither demoted, disabled nor deleted.
    for (method, body) in [
        (Method::PATCH, Some(json!({"grants": [{"role": "viewer"}]}))),
        (Method::PATCH, Some(json!({"disabled": true}))),
        (Method::DELETE, None),
    ] {
        let msg = t.err(method, "/users/admin", body, 409).await;
        assert!(msg.contains("last enabled administrator"), "{msg}");
    }
    // Passwords: 12 characters, not the user name.
    let msg =
        t.err(Method::POST, "/users", Some(json!({"username": "jane", "password": "jane-is-my-name"})), 422).await;
    assert!(msg.contains("user name"), "{msg}");
    let msg = t.err(Method::POST, "/users", Some(json!({"username": "jane", "password": "short"})), 400).await;
    assert!(msg.contains("12"), "{msg}");
    // A disabled user is refused at once, even with a cached password.
    assert_eq!(send(&t, "viewer", &Method::GET, "/api/v1/users/me", None).await.0, 200);
    t.ok(Method::PATCH, "/users/viewer", Some(json!({"disabled": true}))).await;
    assert_eq!(send(&t, "viewer", &Method::GET, "/api/v1/users/me", None).await.0, 401);
}

#[tokio::test]
async fn the_console_shows_only_the_actions_a_user_may_take_and_refuses_the_rest() {
    let t = T::start().await;
    setup(&t).await;
    let svc = "/clusters/prod/services/cache";

    let admin = t.console().await;
    let page = admin.get(svc).await;
    for id in ["id=\"command-form\"", "id=\"add-role\"", "id=\"delete-service\""] {
        assert!(page.html.contains(id), "admin sees {id}");
    }
    assert!(admin.get("/clusters").await.html.contains("id=\"create-cluster\""));

    let viewer = t.console_as("prodviewer", USER_PASSWORD).await;
    let page = viewer.get(svc).await;
    assert_eq!(page.status, 200);
    for id in ["id=\"command-form\"", "id=\"add-role\"", "id=\"delete-service\"", "aria-label=\"Remove role"] {
        assert!(!page.html.contains(id), "a viewer is not offered {id}");
    }
    let config = viewer.get(&format!("{svc}/config")).await;
    assert!(!config.html.contains("id=\"save\"") && config.html.contains("id=\"read-only\""), "{}", config.html);
    let cluster = viewer.get("/clusters/prod").await;
    assert!(
        cluster.status == 200
            && !cluster.html.contains("id=\"add-hosts\"")
            && !cluster.html.contains("id=\"delete-cluster\"")
    );
    assert!(!viewer.get("/clusters").await.html.contains("id=\"create-cluster\""));
    let nav = viewer.get("/clusters").await.html;
    assert!(
        !nav.contains("href=\"/audit\"") && !nav.contains("href=\"/events\""),
        "no links to pages a viewer@prod cannot open"
    );
    assert!(admin.get("/clusters").await.html.contains("href=\"/audit\""));
    assert!(nav.contains("href=\"/notifications\""), "a reader of one cluster may open /notifications");
    for page in [
        "/",
        "/hosts",
        "/clusters",
        "/commands",
        "/parcels",
        "/alerts",
        "/silences",
        "/alerts/rules",
        "/notifications",
        "/diagnostics",
        "/clusters/prod/logs",
        "/account",
    ] {
        let got = viewer.get(page).await;
        assert_eq!(got.status, 200, "a viewer@prod opens {page}: {}", got.html);
    }
    assert!(!viewer.get("/hosts").await.html.contains("h2.example"), "a host outside prod is not listed");
    let healthy = |n: u32| format!("<b>{n}</b> <span class=\"badge healthy\">");
    assert!(viewer.get("/hosts").await.html.contains(&healthy(1)), "a viewer@prod counts prod's hosts only");
    assert!(admin.get("/hosts").await.html.contains(&healthy(3)));
    // A host page shows a reader its labels, without the forms that change them.
    t.ok(Method::PATCH, "/hosts/h1", Some(json!({"labels": {"rack": "r1"}}))).await;
    let host = viewer.get("/hosts/h1").await;
    assert!(host.status == 200 && host.html.contains("rack=r1"), "{}", host.html);
    assert!(!host.html.contains("id=\"labels-form\"") && !host.html.contains("id=\"decommission\""));
    assert!(admin.get("/hosts/h1").await.html.contains("id=\"labels-form\""));
    // Hiding is a courtesy: the action itself is refused.
    let refused = viewer.post(&format!("{svc}/commands"), &[("name", "restart"), ("confirmed", "yes")]).await;
    assert_eq!(refused.status, 403, "{}", refused.html);
    assert!(refused.html.contains("commands.run"), "{}", refused.html);
    // Another cluster is out of sight.
    assert_eq!(viewer.get("/clusters/dev").await.status, 403);

    let operator = t.console_as("operator", USER_PASSWORD).await;
    let page = operator.get(svc).await;
    assert!(page.html.contains("id=\"command-form\"") && !page.html.contains("id=\"delete-service\""));
    let config = operator.get(&format!("{svc}/config")).await;
    assert!(!config.html.contains("id=\"save\""));
    // What the operator does in the console is audited with the channel and the permission.
    let done = operator.post(&format!("{svc}/commands"), &[("name", "restart"), ("confirmed", "yes")]).await;
    assert_eq!(done.status, 303, "{}", done.html);
    let audit = admin.get("/audit?user=operator").await;
    assert!(audit.html.contains("console · <code>commands.run</code>"), "{}", audit.html);
}
