//! Health tests and maintenance mode on the console's entity pages, over HTTP as a browser
//! without scripts uses them: a host's disk filling up makes its page name the test and the
//! value (concerning, then bad, listed before the good tests); a Redis role's memory test
//! shows on its role, service and cluster pages; maintenance mode is turned on and off from
//! the host, service and cluster pages (CSRF required, audited, marked on the pages and in
//! `/hosts`, seen by REST `/api/v1/health`), and a viewer is offered no toggle and refused.
//! The engine's cycles are run by the test (`alerts::live::run_cycle`), not by its timer.
mod common;

use std::collections::BTreeMap;

use common::{Console, T, between};
use drover_manager::alerts::live::run_cycle;
use drover_manager::domain::metrics::{RoleReport, Sample};
use drover_manager::model::{DiskUsage, HostMetrics, now_millis};
use reqwest::Method;
use serde_json::{Value, json};

const VIEWER_PASSWORD: &str = "health-reader-password";
const DISK: u64 = 100 << 30;

fn host_metrics(disk_used: u64) -> HostMetrics {
    common::host_metrics(vec![DiskUsage { mount_point: "/data".into(), used_bytes: disk_used, total_bytes: DISK }])
}

/// A manager whose alert engine runs only when the test says (after its first cycle at
/// start), with host h1 (`db1.example`) in cluster `prod` running the Redis role
/// `cache-primary` of service `cache`, and a fleet-wide viewer.
struct Fleet {
    t: T,
    primary: String,
}

async fn fleet() -> Fleet {
    let (t, primary) = common::redis_alert_fleet("db1.example", &["prod"]).await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "viewer", "password": VIEWER_PASSWORD, "grants": [{"role": "viewer"}]})),
    )
    .await;
    Fleet { t, primary }
}

impl Fleet {
    /// A heartbeat from h1 with its disk use and the primary's used-memory ratio, then one
    /// engine cycle.
    async fn report(&self, disk_used: u64, redis_memory: f64) {
        let state = &self.t.handle.state;
        let report = RoleReport {
            role_id: self.primary.clone(),
            process: None,
            samples: vec![Sample {
                name: "redis_memory_used_ratio".into(),
                value: redis_memory,
                labels: BTreeMap::new(),
                at_ms: now_millis(),
            }],
            collect_error: String::new(),
        };
        assert!(state.registry.heartbeat_with_roles("h1", host_metrics(disk_used), vec![report]));
        run_cycle(state).await.expect("cycle");
    }

    async fn health(&self, query: &str) -> Value {
        self.t.ok(Method::GET, &format!("/health?{query}"), None).await
    }

    /// Audit entries of `object_type`: (action, object id, via).
    async fn audit(&self, object_type: &str) -> Vec<(String, String, String)> {
        let audit = self.t.ok(Method::GET, &format!("/audit?object_type={object_type}&limit=100"), None).await;
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
                (s("action"), s("object_id"), s("via"))
            })
            .collect()
    }
}

/// The health test rows of a page, in order: (test, status, value, summary).
fn tests(html: &str) -> Vec<(String, String, String, String)> {
    let table = between(html, "id=\"health-tests-table\"", "</table>").unwrap_or_else(|| panic!("no tests: {html}"));
    table
        .split("<tr class=\"test-")
        .skip(1)
        .map(|row| {
            let cell = |n: usize| {
                let td = row.split("<td").nth(n).unwrap();
                let text = td.split_once('>').unwrap().1;
                let text = text.split("</td>").next().unwrap();
                // Strip the tags inside the cell (code, badge span).
                let mut out = String::new();
                let mut in_tag = false;
                for ch in text.chars() {
                    match ch {
                        '<' => in_tag = true,
                        '>' if in_tag => in_tag = false,
                        c if !in_tag => out.push(c),
                        _ => {}
                    }
                }
                out
            };
            (cell(1), cell(2), cell(3), cell(4))
        })
        .collect()
}

/// The engine's status word on a page (the badge of the health tests section).
fn engine_status(html: &str) -> String {
    let p = between(html, "id=\"engine-health\"", "</span>").unwrap_or_else(|| panic!("no engine health: {html}"));
    p.rsplit('>').next().unwrap().to_owned()
}

/// The heading of a page.
fn heading(html: &str) -> &str {
    between(html, "<h1>", "</h1>").unwrap()
}

/// The `<tr>` of host `hostname` in the `/hosts` list.
fn host_row<'a>(html: &'a str, hostname: &str) -> &'a str {
    let at = html.find(&format!(">{hostname}</a>")).unwrap_or_else(|| panic!("no row for {hostname}: {html}"));
    let start = html[..at].rfind("<tr").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[start..end]
}

/// Saves a page for screenshots when `DROVER_CONSOLE_SHOTS` names a directory.
fn keep(name: &str, html: &str) {
    let Ok(dir) = std::env::var("DROVER_CONSOLE_SHOTS") else { return };
    let css = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/static/drover.css");
    let css = css.canonicalize().unwrap();
    let html = html.replace("href=\"/static/drover.css\"", &format!("href=\"file://{}\"", css.display()));
    std::fs::write(std::path::Path::new(&dir).join(format!("{name}.html")), html).unwrap();
}

#[tokio::test]
async fn a_filling_disk_makes_the_host_page_name_the_test_and_its_value() {
    let f = fleet().await;
    let c = f.t.console().await;
    // Enrolled after the engine's only cycle so far: not evaluated yet.
    let page = c.get("/hosts/h1").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("id=\"health-not-evaluated\""), "{}", page.html);

    f.report(DISK / 2, 0.1).await;
    let page = c.get("/hosts/h1").await;
    assert_eq!(engine_status(&page.html), "good");
    let rows = tests(&page.html);
    assert!(rows.iter().any(|r| r.0 == "disk_space" && r.1 == "good" && r.2 == "50.0%"), "{rows:?}");

    f.report(DISK * 85 / 100, 0.1).await;
    let page = c.get("/hosts/h1").await;
    assert_eq!(engine_status(&page.html), "concerning");
    let rows = tests(&page.html);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()), ("disk_space", "concerning", "85.0%"));
    assert!(rows[0].3.contains("0.85"), "the summary says what was seen: {rows:?}");
    assert_eq!((rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_str()), ("agent", "good", "up"));
    assert!(page.html.contains("1 test(s) not good"), "{}", page.html);

    f.report(DISK * 95 / 100, 0.1).await;
    let page = c.get("/hosts/h1").await;
    assert_eq!(engine_status(&page.html), "bad");
    let rows = tests(&page.html);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()),
        ("disk_space", "bad", "95.0%"),
        "{rows:?}"
    );
    assert!(rows[0].3.contains("bad >= 0.9"), "{rows:?}");

    // The host counts in its cluster's health: the cluster is bad through it, and its tree
    // lists the host (the members were once read as (host, cluster) pairs and the cluster
    // had no hosts).
    let tree = f.health("cluster=prod").await;
    assert_eq!(tree["status"], "bad", "{tree}");
    let hosts: Vec<&Value> = tree["children"].as_array().unwrap().iter().filter(|n| n["kind"] == "host").collect();
    assert_eq!(hosts.len(), 1, "{tree}");
    assert_eq!((hosts[0]["name"].as_str(), hosts[0]["status"].as_str()), (Some("db1.example"), Some("bad")));
    let page = c.get("/clusters/prod").await;
    assert_eq!(engine_status(&page.html), "bad", "{}", page.html);

    // Maintenance of the cluster mutes the alerts of its hosts (the disk alert is pending).
    let disk_alert =
        |alerts: &Value| alerts["items"].as_array().unwrap().iter().find(|a| a["rule"] == "disk_nearly_full").cloned();
    let alerts = f.t.ok(Method::GET, "/alerts", None).await;
    let alert = disk_alert(&alerts).unwrap_or_else(|| panic!("no disk alert: {alerts}"));
    assert_eq!(alert["in_maintenance"], false, "{alert}");
    f.t.ok(Method::PUT, "/maintenance/cluster/prod", Some(json!({}))).await;
    f.report(DISK * 95 / 100, 0.1).await;
    let alerts = f.t.ok(Method::GET, "/alerts", None).await;
    let alert = disk_alert(&alerts).unwrap_or_else(|| panic!("no disk alert: {alerts}"));
    assert_eq!(alert["in_maintenance"], true, "the host's cluster is in maintenance: {alert}");
}

#[tokio::test]
async fn role_service_and_cluster_pages_show_the_role_test() {
    let f = fleet().await;
    let c = f.t.console().await;
    let role_href = "/clusters/prod/services/cache/roles/cache-primary";

    f.report(DISK / 2, 0.93).await;
    let role = c.get(role_href).await;
    assert_eq!(role.status, 200, "{}", role.html);
    assert_eq!(engine_status(&role.html), "concerning");
    let rows = tests(&role.html);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()), ("redis_memory", "concerning", "93.0%"));
    assert!(rows.iter().any(|r| r.0 == "process" && r.1 == "good" && r.2 == "–"), "{rows:?}");
    // A role has no maintenance mode of its own: no section, no form.
    assert!(!role.html.contains("id=\"maintenance\""));

    let service = c.get("/clusters/prod/services/cache").await;
    assert_eq!(engine_status(&service.html), "concerning");
    // The heading keeps the service's own health (from its roles' reports).
    let svc_health = between(heading(&service.html), "<span class=\"badge health-", "\"").unwrap();
    assert!(["good", "concerning", "bad", "stopped"].contains(&svc_health), "{}", heading(&service.html));
    let rows = tests(&service.html);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("role cache-primary", "concerning"), "{rows:?}");
    assert!(rows[0].3.contains("redis_memory_used_ratio = 0.93"), "{rows:?}");
    let role_row = between(&service.html, "data-role=\"cache-primary\"", "</tr>").unwrap();
    let engine = between(role_row, "<td class=\"engine\">", "</td>").unwrap();
    assert!(engine.contains("<span class=\"badge health-concerning\">concerning</span>"), "{role_row}");

    let cluster = c.get("/clusters/prod").await;
    let service_row = between(&cluster.html, "data-service=\"cache\"", "</tr>").unwrap();
    let engine = between(service_row, "<td class=\"engine\">", "</td>").unwrap();
    assert!(engine.contains(">concerning</span>"), "{service_row}");
    assert!(tests(&cluster.html).iter().any(|r| r.0 == "service cache" && r.1 == "concerning"));

    f.report(DISK / 2, 0.99).await;
    let role = c.get(role_href).await;
    assert_eq!(engine_status(&role.html), "bad");
    let rows = tests(&role.html);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()), ("redis_memory", "bad", "99.0%"));

    // Maintenance of the service from its page: marked there, on the cluster's service row
    // and on the role page (through the service); then the whole cluster from its page.
    let done =
        c.post("/clusters/prod/services/cache/maintenance", &[("action", "on"), ("comment", "resharding")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/clusters/prod/services/cache")));
    assert!(done.flash.as_deref().unwrap_or_default().starts_with("ok=service prod/cache is in maintenance mode"));
    let service = c.get("/clusters/prod/services/cache").await;
    keep("health-service", &service.html);
    assert!(heading(&service.html).contains("In maintenance"), "{}", heading(&service.html));
    assert!(
        between(&service.html, "id=\"maintenance-state\"", "</p>").unwrap().contains("by admin: <q>resharding</q>")
    );
    let cluster = c.get("/clusters/prod").await;
    assert!(between(&cluster.html, "data-service=\"cache\"", "</tr>").unwrap().contains("in maintenance"));
    assert!(!heading(&cluster.html).contains("In maintenance"), "the cluster itself is not");
    let role = c.get(role_href).await;
    assert!(heading(&role.html).contains("In maintenance"), "{}", heading(&role.html));
    assert!(heading(&role.html).contains("through service"), "{}", heading(&role.html));

    let done = c.post("/clusters/prod/maintenance", &[("action", "on")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/clusters/prod")));
    let cluster = c.get("/clusters/prod").await;
    assert!(heading(&cluster.html).contains("In maintenance"));
    assert!(cluster.html.contains("id=\"maintenance-off\""));
    // Its host is covered through it: marked in /hosts and on its page, without an own entry.
    let hosts = c.get("/hosts").await;
    assert!(host_row(&hosts.html, "db1.example").contains("in maintenance"));
    let host = c.get("/hosts/h1").await;
    assert!(heading(&host.html).contains("In maintenance"));
    assert!(
        between(&host.html, "id=\"maintenance-via\"", "</p>")
            .unwrap()
            .contains("cluster <a href=\"/clusters/prod\">prod</a>")
    );
    assert!(host.html.contains("id=\"maintenance-on\""), "the host's own mode is still off");
    let tree = f.health("cluster=prod").await;
    assert_eq!(tree["maintenance"], true);

    for (path, kind, target) in [
        ("/clusters/prod/maintenance", "cluster", "prod"),
        ("/clusters/prod/services/cache/maintenance", "service", "prod/cache"),
    ] {
        let done = c.post(path, &[("action", "off")]).await;
        assert_eq!(done.status, 303);
        assert!(done.flash.as_deref().unwrap_or_default().contains("out of maintenance mode"), "{done:?}");
        let audit = f.audit(kind).await;
        for action in ["maintenance.on", "maintenance.off"] {
            assert!(audit.iter().any(|(a, o, v)| a == action && o == target && v == "console"), "{audit:?}");
        }
    }
    assert!(!heading(&c.get(role_href).await.html).contains("In maintenance"));
    assert!(!host_row(&c.get("/hosts").await.html, "db1.example").contains("in maintenance"));
}

#[tokio::test]
async fn maintenance_of_a_host_is_toggled_from_its_page() {
    let f = fleet().await;
    f.report(DISK * 95 / 100, 0.1).await;
    let c = f.t.console().await;
    let page = c.get("/hosts/h1").await;
    assert!(page.html.contains("id=\"maintenance-on\""), "{}", page.html);
    assert!(!heading(&page.html).contains("In maintenance"));
    assert!(!host_row(&c.get("/hosts").await.html, "db1.example").contains("in maintenance"));

    // Without the session's CSRF token the form is refused and nothing changes.
    let refused = c.post_raw("/hosts/h1/maintenance", &[("action", "on")]).await;
    assert_eq!(refused.status, 403, "{}", refused.html);
    assert!(refused.html.contains("security token"), "{}", refused.html);
    assert!(f.t.handle.state.store.maintenance_list().await.unwrap().is_empty());

    let done = c.post("/hosts/h1/maintenance", &[("action", "on"), ("comment", "replacing the data disk")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/hosts/h1")), "{}", done.html);
    assert_eq!(done.flash.as_deref(), Some("ok=host db1.example is in maintenance mode: its alerts are suppressed"));
    let page = c.get("/hosts/h1").await;
    keep("health-host", &page.html);
    assert!(
        heading(&page.html).contains("<span class=\"label maint\" id=\"maintenance-marker\">In maintenance</span>")
    );
    let state = between(&page.html, "id=\"maintenance-state\"", "</p>").unwrap();
    assert!(state.contains("by admin: <q>replacing the data disk</q>"), "{state}");
    assert!(page.html.contains("id=\"maintenance-off\"") && !page.html.contains("id=\"maintenance-on\""));
    // Still bad: maintenance suppresses alerts, not the verdict.
    assert_eq!(engine_status(&page.html), "bad");
    assert!(host_row(&c.get("/hosts").await.html, "db1.example").contains("in maintenance"));
    assert_eq!(f.health("host=db1.example").await["maintenance"], true);
    let audit = f.audit("host").await;
    assert!(audit.iter().any(|(a, o, v)| a == "maintenance.on" && o == "db1.example" && v == "console"), "{audit:?}");

    // A bad action is a 400 naming the choices.
    let bad = c.post("/hosts/h1/maintenance", &[("action", "maybe")]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.html.contains("use on or off"), "{}", bad.html);

    let done = c.post("/hosts/h1/maintenance", &[("action", "off")]).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.flash.as_deref(), Some("ok=host db1.example is out of maintenance mode: its alerts notify again"));
    let page = c.get("/hosts/h1").await;
    assert!(!heading(&page.html).contains("In maintenance"));
    assert!(page.html.contains("id=\"maintenance-on\""));
    assert!(!host_row(&c.get("/hosts").await.html, "db1.example").contains("in maintenance"));
    assert_eq!(f.health("host=db1.example").await["maintenance"], false);
    assert!(f.audit("host").await.iter().any(|(a, o, _)| a == "maintenance.off" && o == "db1.example"));
    // Off twice: the page says it was not on.
    let again = c.post("/hosts/h1/maintenance", &[("action", "off")]).await;
    assert_eq!(again.status, 303);
    assert!(again.flash.as_deref().unwrap_or_default().contains("not in maintenance mode"), "{again:?}");
}

#[tokio::test]
async fn a_viewer_sees_the_state_but_no_toggle_and_is_refused() {
    let f = fleet().await;
    f.report(DISK / 2, 0.1).await;
    let admin = f.t.console().await;
    assert_eq!(admin.post("/hosts/h1/maintenance", &[("action", "on"), ("comment", "cabling")]).await.status, 303);

    let viewer: Console = f.t.console_as("viewer", VIEWER_PASSWORD).await;
    for path in ["/hosts/h1", "/clusters/prod", "/clusters/prod/services/cache"] {
        let page = viewer.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.html);
        assert!(page.html.contains("id=\"h-health-tests\""), "{path}");
        assert!(!page.html.contains("id=\"maintenance-form\""), "{path} offers no toggle");
        assert!(page.html.contains("needs <code>commands.run</code>"), "{path}");
    }
    let host = viewer.get("/hosts/h1").await;
    assert!(heading(&host.html).contains("In maintenance"), "the viewer sees the mark");
    for (path, action) in [
        ("/hosts/h1/maintenance", "off"),
        ("/clusters/prod/maintenance", "on"),
        ("/clusters/prod/services/cache/maintenance", "on"),
    ] {
        let refused = viewer.post(path, &[("action", action)]).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.html);
        assert!(refused.html.contains("commands.run"), "{path}: {}", refused.html);
    }
    // A viewer of prod only: the host page of a prod host still opens (its health shown, or
    // why not), without a toggle, and the toggle is refused.
    f.t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "prodreader", "password": VIEWER_PASSWORD,
            "grants": [{"role": "viewer", "cluster": "prod"}]})),
    )
    .await;
    let prod: Console = f.t.console_as("prodreader", VIEWER_PASSWORD).await;
    let host = prod.get("/hosts/h1").await;
    assert_eq!(host.status, 200, "{}", host.html);
    assert!(host.html.contains("id=\"h-health-tests\"") && !host.html.contains("id=\"maintenance-form\""));
    assert!(heading(&host.html).contains("In maintenance"));
    assert_eq!(prod.post("/hosts/h1/maintenance", &[("action", "off")]).await.status, 403);
    let list = f.t.handle.state.store.maintenance_list().await.unwrap();
    assert_eq!(
        list.iter().map(|m| (m.kind.as_str(), m.target.as_str())).collect::<Vec<_>>(),
        [("host", "db1.example")]
    );
}
