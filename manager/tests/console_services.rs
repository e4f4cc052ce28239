//! The console's cluster, add-service wizard, service and role pages over
//! HTTP, as a browser without scripts uses them: forms with their errors
//! shown next to the field, confirmations before commands and removals,
//! CSRF refusal. Every change is checked through the REST API and the audit
//! log; agents are simulated by role status reports.

mod common;

use common::{Console, T, between};
use drover_manager::model::now_millis;
use drover_manager::store::RoleStatusRec;
use reqwest::Method;
use serde_json::{Value, json};

async fn two_hosts(t: &T) {
    t.host_labelled("h1", "node-1", "10.0.0.1", &[("rack", "r1")]).await;
    t.host_labelled("h2", "node-2", "10.0.0.2", &[("rack", "r2")]).await;
}

/// Cluster `prod` with h1 and h2, made through the console's forms.
async fn prod_with_hosts(t: &T, c: &Console) {
    two_hosts(t).await;
    let created = c.post("/clusters", &[("name", "prod")]).await;
    assert_eq!(created.status, 303, "{}", created.html);
    let added = c.post("/clusters/prod/hosts", &[("host", "h1"), ("host", "h2")]).await;
    assert_eq!(added.status, 303);
    assert!(added.flash.as_deref().is_some_and(|f| f.starts_with("ok=added 2 host(s)")), "{:?}", added.flash);
}

async fn audit_actions(t: &T) -> Vec<(String, String, String)> {
    let audit = t.ok(Method::GET, "/audit?limit=200", None).await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["username"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
                a["object_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn services(v: &Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

/// The table row of role `name` on a service page.
fn role_row<'a>(html: &'a str, name: &str) -> &'a str {
    between(html, &format!("<tr data-role=\"{name}\""), "</tr>").unwrap_or_else(|| panic!("no row {name} in {html}"))
}

#[tokio::test]
async fn clusters_are_created_and_their_hosts_managed_from_the_forms() {
    let t = T::start().await;
    two_hosts(&t).await;
    let c = t.console().await;

    // A bad name is shown next to the field with the input kept; nothing is created.
    let bad = c.post("/clusters", &[("name", "Prod_1")]).await;
    assert_eq!(bad.status, 422);
    let error = between(&bad.html, "id=\"cluster-name-error\" role=\"alert\">", "<").unwrap();
    assert!(error.contains("invalid cluster name") && error.contains("Prod_1"), "{error}");
    assert!(bad.html.contains("value=\"Prod_1\""), "input kept");
    assert!(services(&t.ok(Method::GET, "/clusters", None).await).is_empty());

    let created = c.post("/clusters", &[("name", "prod")]).await;
    assert_eq!((created.status, created.location.as_deref()), (303, Some("/clusters/prod")));
    let again = c.post("/clusters", &[("name", "prod")]).await;
    assert_eq!(again.status, 422);
    assert!(again.html.contains("already exists"), "{}", again.html);

    // The cluster page offers both hosts; add them.
    let page = c.get("/clusters/prod").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("value=\"h1\"") && page.html.contains("value=\"h2\""), "{}", page.html);
    assert!(page.html.contains("href=\"/clusters/prod/services/new\""));
    let added = c.post("/clusters/prod/hosts", &[("host", "h1"), ("host", "h2")]).await;
    assert_eq!(added.status, 303);
    let hosts = t.ok(Method::GET, "/clusters/prod/hosts", None).await;
    assert_eq!(hosts["items"], json!(["h1", "h2"]));
    let page = c.get("/clusters/prod").await;
    let table = between(&page.html, "id=\"cluster-hosts\"", "</table>").unwrap();
    assert!(table.contains("href=\"/hosts/h1\">node-1</a>") && table.contains("href=\"/hosts/h2\">node-2</a>"));
    assert!(table.contains("healthy"));

    // The list counts the cluster's hosts and services.
    let list = c.get("/clusters").await;
    let row = between(&list.html, "data-cluster=\"prod\"", "</tr>").unwrap();
    assert!(row.contains("<td>0</td>") && row.contains("<td>2</td>"), "{row}");
    assert!(row.contains("href=\"/clusters/prod?health=good\""), "{row}");

    // Removing a host asks first, naming it; then it is gone.
    let ask = c.post("/clusters/prod/hosts/h2/remove", &[]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Remove host node-2 from cluster prod"), "{}", ask.html);
    assert_eq!(t.ok(Method::GET, "/clusters/prod/hosts", None).await["items"], json!(["h1", "h2"]));
    let forged = c.post_raw("/clusters/prod/hosts/h2/remove", &[("confirmed", "yes")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(t.ok(Method::GET, "/clusters/prod/hosts", None).await["items"], json!(["h1", "h2"]));
    let done = c.post("/clusters/prod/hosts/h2/remove", &[("confirmed", "yes")]).await;
    assert_eq!(done.status, 303);
    assert_eq!(t.ok(Method::GET, "/clusters/prod/hosts", None).await["items"], json!(["h1"]));

    // An empty cluster is deleted after confirmation.
    t.ok(Method::POST, "/clusters", Some(json!({"name": "scratch"}))).await;
    let ask = c.post("/clusters/scratch/delete", &[]).await;
    assert!(ask.status == 200 && ask.html.contains("Delete cluster scratch"), "{}", ask.html);
    let done = c.post("/clusters/scratch/delete", &[("confirmed", "yes")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/clusters")));
    t.err(Method::GET, "/clusters/scratch", None, 404).await;

    let audit = audit_actions(&t).await;
    for (action, object) in [
        ("cluster.create", "prod"),
        ("cluster.hosts.add", "prod"),
        ("cluster.hosts.remove", "prod"),
        ("cluster.delete", "scratch"),
    ] {
        assert!(
            audit.iter().any(|(u, a, o)| u == "admin" && a == action && o == object),
            "{action} {object}: {audit:?}"
        );
    }
}

#[tokio::test]
async fn the_wizard_refuses_bad_placement_names_and_values_and_creates_nothing() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_hosts(&t, &c).await;
    let wizard = "/clusters/prod/services/new";

    // Step 1 lists the types with their role types and instance ranges.
    let start = c.get(wizard).await;
    assert_eq!(start.status, 200);
    assert!(start.html.contains("id=\"type-redis\""), "{}", start.html);
    assert!(start.html.contains("<b>primary</b>: Accepts writes"), "{}", start.html);
    assert!(start.html.contains("(exactly 1 per service)") && start.html.contains("(0 or more per service)"));

    // A bad name goes back to step 1 with the error by the field and the type kept.
    let bad_name = c.post(wizard, &[("step", "place"), ("type", "redis"), ("name", "Cache!")]).await;
    assert_eq!(bad_name.status, 422);
    assert!(
        between(&bad_name.html, "id=\"name-error\" role=\"alert\">", "<").unwrap().contains("invalid service name")
    );
    assert!(bad_name.html.contains("value=\"redis\" id=\"type-redis\" checked"), "{}", bad_name.html);

    // Two primaries: refused at the placement step, the choice kept.
    let two = c
        .post(
            wizard,
            &[
                ("step", "config"),
                ("type", "redis"),
                ("name", "cache"),
                ("place", "primary:h1"),
                ("place", "primary:h2"),
            ],
        )
        .await;
    assert_eq!(two.status, 422);
    let error = between(&two.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap();
    assert_eq!(error, "role type primary takes exactly 1 role(s); 2 placed");
    assert!(two.html.contains("value=\"primary:h2\" id=\"place-primary-h2\" checked"), "{}", two.html);
    // None: refused too.
    let none =
        c.post(wizard, &[("step", "config"), ("type", "redis"), ("name", "cache"), ("place", "replica:h2")]).await;
    assert_eq!(none.status, 422);
    assert!(none.html.contains("role type primary takes exactly 1 role(s); 0 placed"), "{}", none.html);

    // A bad value at the last step: shown by its field with the input kept.
    let bad_value = c
        .post(
            wizard,
            &[
                ("step", "create"),
                ("type", "redis"),
                ("name", "cache"),
                ("place", "primary:h1"),
                ("place", "replica:h2"),
                ("pn", "maxmemory"),
                ("pv", "lots"),
                ("pn", "port"),
                ("pv", "70000"),
                ("start", "yes"),
            ],
        )
        .await;
    assert_eq!(bad_value.status, 422);
    let error = between(&bad_value.html, "id=\"param-maxmemory-error\" role=\"alert\">", "<").unwrap();
    assert!(error.contains("expected a memory size"), "{error}");
    assert!(
        between(&bad_value.html, "id=\"param-port-error\" role=\"alert\">", "<").unwrap().contains("not a valid port")
    );
    assert!(bad_value.html.contains("id=\"param-maxmemory\" value=\"lots\""), "{}", bad_value.html);

    // Nothing was created, and no command started.
    assert!(services(&t.ok(Method::GET, "/clusters/prod/services", None).await).is_empty());
    assert!(!audit_actions(&t).await.iter().any(|(_, a, _)| a.starts_with("service.") || a.starts_with("role.")));
}

#[tokio::test]
async fn the_wizard_creates_a_redis_service_with_its_roles_and_configuration_and_starts_it() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_hosts(&t, &c).await;
    let wizard = "/clusters/prod/services/new";

    // Step 2: a checkbox per host and role type; the label filter narrows it.
    let place = c.post(wizard, &[("step", "place"), ("type", "redis"), ("name", "cache")]).await;
    assert_eq!(place.status, 200, "{}", place.html);
    for v in ["primary:h1", "primary:h2", "replica:h1", "replica:h2"] {
        assert!(place.html.contains(&format!("value=\"{v}\"")), "{v}: {}", place.html);
    }
    let filtered = c
        .post(
            wizard,
            &[
                ("step", "place"),
                ("type", "redis"),
                ("name", "cache"),
                ("selector", "rack=r2"),
                ("place", "primary:h1"),
            ],
        )
        .await;
    assert!(!filtered.html.contains("id=\"place-primary-h1\"") && filtered.html.contains("id=\"place-replica-h2\""));
    // The hidden choice is carried along.
    assert!(filtered.html.contains("name=\"place\" value=\"primary:h1\""), "{}", filtered.html);

    // Step 3: parameters without a default first, every default shown.
    let placed = [("type", "redis"), ("name", "cache"), ("place", "primary:h1"), ("place", "replica:h2")];
    let mut form = vec![("step", "config")];
    form.extend_from_slice(&placed);
    let config = c.post(wizard, &form).await;
    assert_eq!(config.status, 200, "{}", config.html);
    let params = between(&config.html, "id=\"params\"", "</table>").unwrap();
    let pos = |name: &str| params.find(&format!("data-param=\"{name}\"")).unwrap_or_else(|| panic!("{name}"));
    assert!(pos("requirepass") < pos("port") && pos("requirepass") < pos("maxmemory"));
    assert!(params.contains("<code>6379</code>") && params.contains("<code>noeviction</code>"), "{params}");

    // Step 4: create and start.
    let mut form = vec![("step", "create")];
    form.extend_from_slice(&placed);
    for (k, v) in [("requirepass", ""), ("port", ""), ("maxmemory", "256mb"), ("loglevel", "warning")] {
        form.push(("pn", k));
        form.push(("pv", v));
    }
    form.push(("start", "yes"));
    let created = c.post(wizard, &form).await;
    assert_eq!(created.status, 303, "{}", created.html);
    let to = created.location.unwrap();
    let id = to.strip_prefix("/commands/").unwrap_or_else(|| panic!("{to}"));
    assert!(created.flash.unwrap().contains("service cache created with 2 role(s)"));

    let svc = t.ok(Method::GET, "/clusters/prod/services/cache", None).await;
    assert_eq!(svc["type"], "redis");
    assert_eq!(svc["revision"], 2);
    let mut roles: Vec<(String, String)> = svc["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["role_type"].as_str().unwrap().to_owned(), r["host_id"].as_str().unwrap().to_owned()))
        .collect();
    roles.sort();
    assert_eq!(roles, vec![("primary".to_owned(), "h1".to_owned()), ("replica".to_owned(), "h2".to_owned())]);
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(cfg["overrides"]["service"], json!({"maxmemory": 268435456u64, "loglevel": "warning"}));
    let revs = t.ok(Method::GET, "/clusters/prod/services/cache/config/revisions", None).await;
    assert_eq!(revs["items"][0]["message"], "initial configuration from the add-service wizard");
    assert_eq!(revs["items"][0]["author"], "admin");
    let cmd = t.ok(Method::GET, &format!("/commands/{id}"), None).await;
    assert_eq!((cmd["name"].as_str(), cmd["created_by"].as_str()), (Some("start"), Some("admin")));
    assert_eq!(cmd["service"], "cache");

    let audit = audit_actions(&t).await;
    for action in ["service.create", "config.update", "role.create", "command.start"] {
        assert!(audit.iter().any(|(u, a, _)| u == "admin" && a == action), "{action}: {audit:?}");
    }
    assert_eq!(audit.iter().filter(|(_, a, _)| a == "role.create").count(), 2);

    // The cluster page lists it with its health, and the filter by health works.
    let cluster = c.get("/clusters/prod").await;
    assert!(cluster.html.contains("href=\"/clusters/prod/services/cache\">cache</a>"), "{}", cluster.html);
    let bad = c.get("/clusters/prod?health=concerning").await;
    assert!(!bad.html.contains("data-service=\"cache\"") && bad.html.contains("No service with health concerning"));
}

#[tokio::test]
async fn the_service_page_shows_revisions_and_runs_confirmed_commands_and_role_changes() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_hosts(&t, &c).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    for (rt, h) in [("primary", "h1"), ("replica", "h2")] {
        t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": rt, "host_id": h}))).await;
    }
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"maxmemory": "64mb", "requirepass": "s3cret-pass"}, "message": "limit"})),
    )
    .await;
    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    let id_of = |name: &str| {
        roles["items"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The primary has the new files but runs revision 1; the replica runs 2.
    let report = |id: String, applied: u64, running: u64| RoleStatusRec {
        role_id: id,
        state: "running".into(),
        health: "good".into(),
        pid: 4242,
        restart_count: 3,
        applied_revision: applied,
        running_revision: running,
        started_at: Some(now_millis() - 90_000),
        updated_at: now_millis(),
        ..Default::default()
    };
    t.handle
        .state
        .registry
        .update_role_status(vec![report(id_of("cache-primary-1"), 2, 1), report(id_of("cache-replica-1"), 2, 2)]);

    let page = c.get("/clusters/prod/services/cache").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("id=\"roles-live\" data-live=\"3000\""));
    let primary = role_row(&page.html, "cache-primary-1");
    assert!(between(primary, "class=\"applied\">", "<").unwrap() == "2", "{primary}");
    assert!(between(primary, "class=\"running\">", "<").unwrap().trim() == "1", "{primary}");
    assert!(
        primary.contains("(behind 2)") && primary.contains("label stale") && primary.contains("maxmemory"),
        "{primary}"
    );
    assert!(primary.contains("pid 4242") && primary.contains("up 1m") && primary.contains("3 restart(s)"), "{primary}");
    assert!(primary.contains("href=\"/hosts/h1\">node-1</a>"));
    assert!(primary.contains("href=\"/clusters/prod/services/cache/roles/cache-primary-1\""));
    let replica = role_row(&page.html, "cache-replica-1");
    assert!(!replica.contains("behind") && !replica.contains("label stale"), "{replica}");
    assert!(page.html.contains("href=\"/clusters/prod/services/cache/config\""));
    assert!(page.html.contains("href=\"/clusters/prod/services/cache/config/history\""));
    assert!(page.html.contains("1 role(s) run an older configuration"));
    // Redis runs from the redis parcel, which no version of is active here; nothing depends on it.
    assert!(page.html.contains("id=\"parcel\">redis: <span class=\"warn\">no version active in prod"), "{}", page.html);
    assert!(page.html.contains("No required service type.") && page.html.contains("No service depends on this one."));

    // Stop: a confirmation first, no command; then the command.
    let ask = c.post("/clusters/prod/services/cache/commands", &[("name", "stop")]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Stop service prod/cache: 2 role(s)"), "{}", ask.html);
    let commands = || t.ok(Method::GET, "/clusters/prod/services/cache/commands", None);
    assert!(commands().await["items"].as_array().unwrap().is_empty());
    let forged = c.post_raw("/clusters/prod/services/cache/commands", &[("name", "stop"), ("confirmed", "yes")]).await;
    assert_eq!(forged.status, 403);
    assert!(commands().await["items"].as_array().unwrap().is_empty());
    let done = c.post("/clusters/prod/services/cache/commands", &[("name", "stop"), ("confirmed", "yes")]).await;
    assert_eq!(done.status, 303);
    let id = done.location.unwrap().strip_prefix("/commands/").unwrap().to_owned();
    let cmd = t.ok(Method::GET, &format!("/commands/{id}"), None).await;
    assert_eq!((cmd["name"].as_str(), cmd["created_by"].as_str()), (Some("stop"), Some("admin")));

    // A rolling restart of the stale role only, one at a time.
    let ask = c
        .post(
            "/clusters/prod/services/cache/commands",
            &[("name", "rolling-restart"), ("stale_only", "yes"), ("batch_size", "1")],
        )
        .await;
    assert!(
        ask.html.contains("Rolling restart service prod/cache: 1 role(s) whose configuration is stale, 1 at a time"),
        "{}",
        ask.html
    );
    assert!(ask.html.contains("cache-primary-1 on node-1") && !ask.html.contains("cache-replica-1 on"), "{}", ask.html);

    // The role page: revisions, health checks, rendered files with the password masked.
    let role = c.get("/clusters/prod/services/cache/roles/cache-primary-1").await;
    assert_eq!(role.status, 200, "{}", role.html);
    assert!(between(&role.html, "id=\"running\">", "<").unwrap().trim() == "1", "{}", role.html);
    assert!(role.html.contains("data-path=\"redis.conf\""), "{}", role.html);
    assert!(role.html.contains("maxmemory 64mb") || role.html.contains("maxmemory 67108864"), "{}", role.html);
    assert!(role.html.contains("********") && !role.html.contains("s3cret-pass"), "{}", role.html);
    assert!(role.html.contains("TCP connect to"), "{}", role.html);
    assert!(role.html.contains("id=\"no-logs\""));

    // Add a role: refused without a host (input kept), then added.
    let bad = c
        .post("/clusters/prod/services/cache/roles", &[("role_type", "replica"), ("host", ""), ("name", "extra")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.html.contains("choose the host to run the role on") && bad.html.contains("value=\"extra\""));
    let two_primaries =
        c.post("/clusters/prod/services/cache/roles", &[("role_type", "primary"), ("host", "h2")]).await;
    assert_eq!(two_primaries.status, 422);
    assert!(two_primaries.html.contains("allows at most 1 instances"), "{}", two_primaries.html);
    let clash = c
        .post("/clusters/prod/services/cache/roles", &[("role_type", "replica"), ("host", "h1"), ("name", "extra")])
        .await;
    assert_eq!(clash.status, 422);
    assert!(clash.html.contains("port clash on host node-1 (h1)"), "{}", clash.html);
    t.host("h3", "node-3", "10.0.0.3").await;
    let added = c
        .post("/clusters/prod/services/cache/roles", &[("role_type", "replica"), ("host", "h3"), ("name", "extra")])
        .await;
    assert!(added.status == 303, "{}", added.html);
    assert_eq!(
        t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await["items"].as_array().unwrap().len(),
        3
    );

    // Remove a role: asked first; then gone. The last primary cannot go.
    let ask = c.post("/clusters/prod/services/cache/roles/extra/remove", &[]).await;
    assert!(ask.status == 200 && ask.html.contains("Remove role extra (replica) of prod/cache"), "{}", ask.html);
    assert_eq!(
        t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await["items"].as_array().unwrap().len(),
        3
    );
    let done = c.post("/clusters/prod/services/cache/roles/extra/remove", &[("confirmed", "yes")]).await;
    assert_eq!(done.status, 303);
    let left = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    assert!(left["items"].as_array().unwrap().iter().all(|r| r["name"] != "extra"));
    let refused = c.post("/clusters/prod/services/cache/roles/cache-primary-1/remove", &[("confirmed", "yes")]).await;
    assert_eq!(refused.status, 303);
    assert!(refused.flash.unwrap().starts_with("error=role type primary needs at least 1"));

    let audit = audit_actions(&t).await;
    assert!(audit.iter().any(|(u, a, _)| u == "admin" && a == "command.stop"), "{audit:?}");
    assert!(audit.iter().any(|(u, a, _)| u == "admin" && a == "role.delete"), "{audit:?}");
    assert_eq!(audit.iter().filter(|(_, a, _)| a == "role.create").count(), 3);
}

// ---------- placement by label selector and count ----------

/// Cluster `prod` with h1 (rack r1), h2 and h3 (rack r2); h0 (rack r2) is
/// enrolled but in no cluster, so a selector never picks it.
async fn prod_with_racks(t: &T, c: &Console) {
    prod_with_hosts(t, c).await;
    t.host_labelled("h3", "node-3", "10.0.0.3", &[("rack", "r2")]).await;
    t.host_labelled("h0", "node-0", "10.0.0.9", &[("rack", "r2")]).await;
    let added = c.post("/clusters/prod/hosts", &[("host", "h3")]).await;
    assert_eq!(added.status, 303);
    assert_eq!(t.ok(Method::GET, "/clusters/prod/hosts", None).await["items"], json!(["h1", "h2", "h3"]));
}

/// The values of the hidden inputs named `name`, in order.
fn hidden_values(html: &str, name: &str) -> Vec<String> {
    let marker = format!("<input type=\"hidden\" name=\"{name}\" value=\"");
    html.match_indices(&marker).map(|(i, _)| html[i + marker.len()..].split('"').next().unwrap().to_owned()).collect()
}

/// `(role type, host id)` of a service's roles, sorted, through REST.
async fn roles_of(t: &T, service: &str) -> Vec<(String, String)> {
    let svc = t.ok(Method::GET, &format!("/clusters/prod/services/{service}"), None).await;
    let mut roles: Vec<(String, String)> = svc["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["role_type"].as_str().unwrap().to_owned(), r["host_id"].as_str().unwrap().to_owned()))
        .collect();
    roles.sort();
    roles
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn nothing_created(t: &T) {
    assert!(services(&t.ok(Method::GET, "/clusters/prod/services", None).await).is_empty());
    let audit = audit_actions(t).await;
    assert!(!audit.iter().any(|(_, a, _)| a.starts_with("service.") || a.starts_with("role.")), "{audit:?}");
}

#[tokio::test]
async fn the_wizard_places_roles_by_label_selector_and_count_on_the_hosts_it_reviewed() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_racks(&t, &c).await;
    let wizard = "/clusters/prod/services/new";

    // Step 2 offers a selector and a count per role type, the maximum shown on the count.
    let place = c.post(wizard, &[("step", "place"), ("type", "redis"), ("name", "cache")]).await;
    assert_eq!(place.status, 200, "{}", place.html);
    assert!(place.html.contains("<label for=\"ssel-primary\">selector</label>"), "{}", place.html);
    assert!(
        place.html.contains("id=\"scount-primary\" value=\"\" type=\"number\" min=\"1\" max=\"1\""),
        "{}",
        place.html
    );
    assert!(place.html.contains("id=\"scount-replica\" value=\"\" type=\"number\" min=\"1\" placeholder"));

    let by_selector = [
        ("type", "redis"),
        ("name", "cache"),
        ("srt", "primary"),
        ("ssel", "rack=r1"),
        ("scount", "1"),
        ("srt", "replica"),
        ("ssel", "rack=r2"),
        ("scount", "2"),
    ];
    let mut form = vec![("step", "config")];
    form.extend_from_slice(&by_selector);
    let review = c.post(wizard, &form).await;
    assert_eq!(review.status, 200, "{}", review.html);
    // The review names the hosts picked, with what picked them; h0 is in no cluster.
    assert!(
        review.html.contains("primary on <a href=\"/hosts/h1\">node-1</a> (chosen by rack=r1, count 1)"),
        "{}",
        review.html
    );
    for h in ["h2", "h3"] {
        let shown = format!("replica on <a href=\"/hosts/{h}\">node-{}</a> (chosen by rack=r2, count 2)", &h[1..]);
        assert!(review.html.contains(&shown), "{shown}: {}", review.html);
    }
    assert!(!review.html.contains("/hosts/h0"));
    let picked = hidden_values(&review.html, "picked");
    assert_eq!(picked, ["primary:h1", "replica:h2", "replica:h3"]);
    assert_eq!(hidden_values(&review.html, "ssel"), ["rack=r1", "rack=r2"]);

    // Straight to create without the reviewed hosts: refused, nothing created.
    let mut unreviewed = vec![("step", "create")];
    unreviewed.extend_from_slice(&by_selector);
    let refused = c.post(wizard, &unreviewed).await;
    assert_eq!(refused.status, 409, "{}", refused.html);
    let error = between(&refused.html, "id=\"create-error\">", "<").unwrap();
    assert!(error.contains("nothing was created") && error.contains("not those reviewed"), "{error}");
    nothing_created(&t).await;

    // Create with the reviewed hosts; without the CSRF token first.
    let mut create = vec![("step", "create")];
    create.extend_from_slice(&by_selector);
    for p in &picked {
        create.push(("picked", p));
    }
    let forged = c.post_raw(wizard, &create).await;
    assert_eq!(forged.status, 403);
    nothing_created(&t).await;
    let created = c.post(wizard, &create).await;
    assert_eq!((created.status, created.location.as_deref()), (303, Some("/clusters/prod/services/cache")));
    assert!(created.flash.unwrap().contains("service cache created with 3 role(s)"));
    assert_eq!(roles_of(&t, "cache").await, pairs(&[("primary", "h1"), ("replica", "h2"), ("replica", "h3")]));
    let audit = audit_actions(&t).await;
    assert_eq!(audit.iter().filter(|(u, a, _)| u == "admin" && a == "role.create").count(), 3, "{audit:?}");
    assert!(audit.iter().any(|(u, a, o)| u == "admin" && a == "service.create" && o.contains("cache")), "{audit:?}");
}

#[tokio::test]
async fn a_selector_matching_too_few_hosts_is_refused_by_its_role_type_and_nothing_is_created() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_racks(&t, &c).await;
    let wizard = "/clusters/prod/services/new";

    // rack=r2 matches h0, h2 and h3, but only h2 and h3 are in prod.
    for step in ["config", "create"] {
        let page = c
            .post(
                wizard,
                &[
                    ("step", step),
                    ("type", "redis"),
                    ("name", "cache"),
                    ("place", "primary:h1"),
                    ("srt", "primary"),
                    ("ssel", ""),
                    ("scount", ""),
                    ("srt", "replica"),
                    ("ssel", "rack=r2"),
                    ("scount", "3"),
                ],
            )
            .await;
        assert_eq!(page.status, 422, "{step}: {}", page.html);
        let error = between(&page.html, "id=\"rt-replica-error\" role=\"alert\">", "<").unwrap();
        assert_eq!(
            error,
            "role type replica needs 3 hosts matching rack=r2; 2 match (node-2, node-3); only hosts of cluster prod count"
        );
        assert!(!page.html.contains("id=\"rt-primary-error\""), "{}", page.html);
        // The input is kept: the selector, the count, the ticked primary.
        assert!(page.html.contains("id=\"ssel-replica\" value=\"rack=r2\""), "{}", page.html);
        assert!(page.html.contains("id=\"scount-replica\" value=\"3\""), "{}", page.html);
        assert!(page.html.contains("value=\"primary:h1\" id=\"place-primary-h1\" checked"), "{}", page.html);
    }
    // A selector nothing matches, and a bad selector.
    let none = c
        .post(
            wizard,
            &[
                ("step", "config"),
                ("type", "redis"),
                ("name", "cache"),
                ("srt", "primary"),
                ("ssel", "rack=r9"),
                ("scount", "1"),
            ],
        )
        .await;
    assert_eq!(none.status, 422);
    let error = between(&none.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap();
    assert!(error.starts_with("role type primary needs 1 host matching rack=r9; 0 match"), "{error}");
    let bad = c
        .post(
            wizard,
            &[
                ("step", "config"),
                ("type", "redis"),
                ("name", "cache"),
                ("srt", "primary"),
                ("ssel", "rack r1"),
                ("scount", "1"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    let error = between(&bad.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap();
    assert!(error.starts_with("role type primary: ") && error.contains("rack r1"), "{error}");
    nothing_created(&t).await;
}

#[tokio::test]
async fn instance_counts_are_enforced_with_placement_by_selector() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_racks(&t, &c).await;
    let wizard = "/clusters/prod/services/new";
    let refused = |fields: Vec<(&'static str, &'static str)>| {
        let c = &c;
        async move {
            let mut form = vec![("step", "config"), ("type", "redis"), ("name", "cache")];
            form.extend(fields);
            let page = c.post(wizard, &form).await;
            assert_eq!(page.status, 422, "{form:?}: {}", page.html);
            page
        }
    };

    // Two primaries by selector (both rack=r2 hosts match): over the maximum.
    let two = refused(vec![("srt", "primary"), ("ssel", "rack=r2"), ("scount", "2")]).await;
    assert_eq!(
        between(&two.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap(),
        "role type primary takes exactly 1 role(s); 2 placed"
    );
    // No primary at all, the replicas by selector: under the minimum.
    let none = refused(vec![("srt", "replica"), ("ssel", "rack=r2"), ("scount", "2")]).await;
    assert_eq!(
        between(&none.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap(),
        "role type primary takes exactly 1 role(s); 0 placed"
    );
    assert!(!none.html.contains("id=\"rt-replica-error\""));
    // A count of 0, a count that is no number, hosts ticked and a selector for one role type.
    let zero = refused(vec![("srt", "primary"), ("ssel", "rack=r1"), ("scount", "0")]).await;
    assert!(
        between(&zero.html, "id=\"rt-primary-error\" role=\"alert\">", "<")
            .unwrap()
            .starts_with("role type primary: the count must be between 1 and"),
        "{}",
        zero.html
    );
    let word = refused(vec![("srt", "primary"), ("ssel", "rack=r1"), ("scount", "one")]).await;
    let error = between(&word.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap();
    assert!(error.starts_with("role type primary: the count must be a whole number, got") && error.contains("one"));
    let both = refused(vec![("place", "primary:h2"), ("srt", "primary"), ("ssel", "rack=r1"), ("scount", "1")]).await;
    assert_eq!(
        between(&both.html, "id=\"rt-primary-error\" role=\"alert\">", "<").unwrap(),
        "role type primary: tick hosts or give a label selector, not both"
    );

    // The same limits hold at the last step: nothing created.
    let form = [
        ("step", "create"),
        ("type", "redis"),
        ("name", "cache"),
        ("srt", "primary"),
        ("ssel", "rack=r2"),
        ("scount", "2"),
        ("picked", "primary:h2"),
        ("picked", "primary:h3"),
    ];
    let page = c.post(wizard, &form).await;
    assert_eq!(page.status, 422, "{}", page.html);
    assert!(page.html.contains("role type primary takes exactly 1 role(s); 2 placed"));
    nothing_created(&t).await;
}

#[tokio::test]
async fn ticked_hosts_and_selectors_mix_across_role_types_and_a_changed_pick_is_reviewed_again() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_racks(&t, &c).await;
    let wizard = "/clusters/prod/services/new";

    // The primary ticked on h2; one replica anywhere in rack r2: h2 already
    // has a role of the service, so the spread picks h3.
    let mixed = [
        ("type", "redis"),
        ("name", "cache"),
        ("place", "primary:h2"),
        ("srt", "primary"),
        ("ssel", ""),
        ("scount", ""),
        ("srt", "replica"),
        ("ssel", "rack=r2"),
        ("scount", ""),
    ];
    let mut form = vec![("step", "config")];
    form.extend_from_slice(&mixed);
    let review = c.post(wizard, &form).await;
    assert_eq!(review.status, 200, "{}", review.html);
    assert!(review.html.contains("primary on <a href=\"/hosts/h2\">node-2</a></span>"), "{}", review.html);
    assert!(
        review.html.contains("replica on <a href=\"/hosts/h3\">node-3</a> (chosen by rack=r2, count 1)"),
        "{}",
        review.html
    );
    assert_eq!(hidden_values(&review.html, "picked"), ["replica:h3"]);
    assert_eq!(hidden_values(&review.html, "place"), ["primary:h2"]);

    // Back at step 2 the selector is kept in its input.
    let mut back = vec![("step", "place")];
    back.extend_from_slice(&mixed);
    back.push(("picked", "replica:h3"));
    let again = c.post(wizard, &back).await;
    assert!(again.html.contains("id=\"ssel-replica\" value=\"rack=r2\""), "{}", again.html);
    assert!(again.html.contains("(placed by label selector)"));
    assert!(hidden_values(&again.html, "picked").is_empty());

    // A new rack r2 host joins before the create: the selector would now
    // pick it (lowest id), so the create is refused and the review shows it.
    t.host_labelled("h20", "node-20", "10.0.0.20", &[("rack", "r2")]).await;
    assert_eq!(c.post("/clusters/prod/hosts", &[("host", "h20")]).await.status, 303);
    let mut create = vec![("step", "create")];
    create.extend_from_slice(&mixed);
    create.push(("picked", "replica:h3"));
    let changed = c.post(wizard, &create).await;
    assert_eq!(changed.status, 409, "{}", changed.html);
    assert!(between(&changed.html, "id=\"create-error\">", "<").unwrap().contains("now replica on h20"));
    assert!(changed.html.contains("replica on <a href=\"/hosts/h20\">node-20</a> (chosen by rack=r2, count 1)"));
    assert_eq!(hidden_values(&changed.html, "picked"), ["replica:h20"]);
    nothing_created(&t).await;

    // Created with what was reviewed last.
    let mut create = vec![("step", "create")];
    create.extend_from_slice(&mixed);
    create.push(("picked", "replica:h20"));
    let created = c.post(wizard, &create).await;
    assert_eq!(created.status, 303, "{}", created.html);
    assert_eq!(roles_of(&t, "cache").await, pairs(&[("primary", "h2"), ("replica", "h20")]));
    assert_eq!(audit_actions(&t).await.iter().filter(|(_, a, _)| a == "role.create").count(), 2);
}

#[tokio::test]
async fn the_wizard_can_be_linked_with_repeated_query_keys() {
    let t = T::start().await;
    let c = t.console().await;
    prod_with_racks(&t, &c).await;

    let step1 = c.get("/clusters/prod/services/new?type=redis&name=cache").await;
    assert_eq!(step1.status, 200, "{}", step1.html);
    assert!(step1.html.contains("value=\"redis\" id=\"type-redis\" checked"), "{}", step1.html);
    assert!(step1.html.contains("id=\"service-name\" value=\"cache\""));

    let step2 = c
        .get("/clusters/prod/services/new?type=redis&name=cache&step=place&place=primary:h1&place=replica:h2&place=replica:h3&srt=replica&ssel=rack%3Dr2&scount=2")
        .await;
    assert_eq!(step2.status, 200, "{}", step2.html);
    assert!(step2.html.contains("id=\"h-step2\""));
    for (v, checked) in [("primary:h1", true), ("replica:h2", true), ("replica:h3", true), ("primary:h2", false)] {
        let id = format!("place-{}", v.replace(':', "-"));
        let input = format!("value=\"{v}\" id=\"{id}\" checked");
        assert_eq!(step2.html.contains(&input), checked, "{v}: {}", step2.html);
    }
    assert!(step2.html.contains("id=\"ssel-replica\" value=\"rack=r2\""), "{}", step2.html);
    assert!(step2.html.contains("id=\"scount-replica\" value=\"2\""));

    // A bad name in the link: step 1 with the error.
    let bad = c.get("/clusters/prod/services/new?type=redis&name=Bad!&step=place").await;
    assert_eq!(bad.status, 422);
    assert!(between(&bad.html, "id=\"name-error\" role=\"alert\">", "<").unwrap().contains("invalid service name"));
    nothing_created(&t).await;
}

#[tokio::test]
async fn a_large_cluster_page_lists_the_first_members_and_says_how_many_there_are() {
    let t = T::start().await;
    let ids: Vec<String> = (0..205).map(|i| format!("h{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        t.host(id, &format!("node-{i:03}"), &format!("10.1.{}.{}", i / 250, i % 250)).await;
    }
    t.ok(Method::POST, "/clusters", Some(serde_json::json!({"name": "big"}))).await;
    t.ok(Method::POST, "/clusters/big/hosts", Some(serde_json::json!({"host_ids": ids}))).await;
    let c = t.console().await;
    let page = c.get("/clusters/big").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.html.matches("<tr data-host-id=").count(), 200, "the first 200 members");
    assert!(page.html.contains("node-199") && !page.html.contains("node-200"), "by hostname");
    assert!(page.html.contains("The first 200 of 205 hosts"), "says how many there are");
}
