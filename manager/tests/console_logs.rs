//! The console's log and diagnostics pages over HTTP, as a browser without scripts sees them
//! (the log lines themselves are read by drover.js from the REST API; the browser test
//! tests/tests/console_logs.rs shows them): the role page carries the log viewer with the
//! role's REST address and its files for download; the cluster and service log search pages
//! offer the roles, role types and hosts in scope and keep the form's input, escaped; a viewer
//! of another cluster is refused and an unknown service is a 404. `/diagnostics` starts a
//! bundle through its form (CSRF required; bad input shown by the form, nothing started),
//! leads to the command's page, lists the bundle with its state, and deletes it after a
//! confirmation; a viewer of another cluster sees neither the bundle nor the form.
mod common;

use std::time::Duration;

use common::{T, between};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "console-logs-password";

/// Host h1 (`db1.example`) in `prod` with Redis service `cache` (role `cache-primary`),
/// an empty cluster `dev`, a viewer of `dev` and an operator of `prod`.
async fn fleet() -> T {
    let (t, _) = common::redis_alert_fleet("db1.example", &["prod", "dev"]).await;
    for (name, role, cluster) in [("devviewer", "viewer", "dev"), ("prodop", "operator", "prod")] {
        let grants = json!([{"role": role, "cluster": cluster}]);
        t.ok(Method::POST, "/users", Some(json!({"username": name, "password": PASSWORD, "grants": grants}))).await;
    }
    t
}

/// The body of a console page exactly as sent (entities not decoded).
async fn raw(t: &T, cookie: &str, path: &str) -> (u16, String) {
    let resp = t.client.get(t.url(path)).header("cookie", cookie).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn the_role_page_carries_the_log_viewer_and_the_search_pages_their_scope() {
    let t = fleet().await;
    let admin = t.console().await;
    let role = admin.get("/clusters/prod/services/cache/roles/cache-primary").await;
    assert_eq!(role.status, 200, "{}", role.html);
    let viewer = between(&role.html, "id=\"log-viewer\"", "</section>").expect("the log viewer section");
    assert!(
        viewer.contains("data-logs-api=\"/api/v1/clusters/prod/services/cache/roles/cache-primary/logs\""),
        "{viewer}"
    );
    assert!(
        viewer.contains("action=\"/api/v1/clusters/prod/services/cache/roles/cache-primary/logs/download\""),
        "{viewer}"
    );
    for file in ["logs/stdout.log", "logs/stderr.log"] {
        assert!(viewer.contains(&format!("<option value=\"{file}\">")), "{file} offered: {viewer}");
    }
    for n in ["100", "500", "1000", "5000"] {
        assert!(viewer.contains(&format!("<option value=\"{n}\">")), "{n} lines offered");
    }
    assert!(viewer.contains("href=\"/clusters/prod/services/cache/logs\""), "the service's search linked");

    let service = admin.get("/clusters/prod/services/cache").await;
    assert!(service.html.contains("href=\"/clusters/prod/services/cache/logs\" id=\"logs-link\""));
    let cluster = admin.get("/clusters/prod").await;
    assert!(cluster.html.contains("href=\"/clusters/prod/logs\" id=\"cluster-logs-link\""));
    assert!(cluster.html.contains("href=\"/diagnostics?cluster=prod\""));

    // The service's search page: its API address, the choices in scope, nothing run yet.
    let page = admin.get("/clusters/prod/services/cache/logs").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("data-search-api=\"/api/v1/logs/search?cluster=prod&service=cache\""));
    assert!(page.html.contains("data-searched=\"\""), "no search before the form is sent");
    assert!(page.html.contains("<option value=\"cache-primary\">cache-primary</option>"), "{}", page.html);
    assert!(page.html.contains("<option value=\"primary\">primary</option>"));
    assert!(page.html.contains("<option value=\"db1.example\">db1.example</option>"));
    assert!(page.html.contains("id=\"search-since\" value=\"1h\""), "since defaults to 1h");

    // The form's input comes back as sent, escaped, and the search is marked to run.
    let q =
        "/clusters/prod/logs?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&role=cache-primary&since=30m&limit=20&level=warn";
    let (status, body) = raw(&t, admin.cookie(), q).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<script>alert"), "the pattern is escaped: {body}");
    assert!(body.contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;\""), "{body}");
    assert!(body.contains("data-search-api=\"/api/v1/logs/search?cluster&#x3D;prod\""), "{body}");
    assert!(body.contains("data-searched=\"yes\""));
    assert!(body.contains("<option value=\"cache-primary\" selected>"));
    assert!(body.contains("<option value=\"warn\" selected>"));
    assert!(body.contains("id=\"search-since\" value=\"30m\""));
    assert!(body.contains("id=\"search-limit\" value=\"20\""));

    // Unknown scopes.
    assert_eq!(admin.get("/clusters/prod/services/nope/logs").await.status, 404);
    assert_eq!(admin.get("/clusters/nope/logs").await.status, 404);
}

#[tokio::test]
async fn a_reader_of_another_cluster_is_refused_the_log_pages() {
    let t = fleet().await;
    let dev = t.console_as("devviewer", PASSWORD).await;
    for path in [
        "/clusters/prod/logs",
        "/clusters/prod/services/cache/logs",
        "/clusters/prod/services/cache/roles/cache-primary",
    ] {
        let page = dev.get(path).await;
        assert_eq!(page.status, 403, "{path}: {}", page.html);
    }
    // Their own (empty) cluster's search page opens and says there is nothing to search.
    let own = dev.get("/clusters/dev/logs").await;
    assert_eq!(own.status, 200, "{}", own.html);
    assert!(own.html.contains("id=\"no-roles\""));
    // Signed out: to the sign-in page, and back afterwards.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(t.url("/clusters/prod/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/login?next=%2Fclusters%2Fprod%2Flogs");
}

/// The state of bundle `id` through REST once it is no longer running.
async fn finished(t: &T, id: &str) -> Value {
    let path = format!("/diagnostics/{id}");
    drover_testkit::eventually(Duration::from_secs(60), "the bundle to finish", || async {
        let v = t.ok(Method::GET, &path, None).await;
        (v["state"] != "running").then_some(v)
    })
    .await
}

#[tokio::test]
async fn a_bundle_is_started_listed_and_deleted_from_the_diagnostics_page() {
    let t = fleet().await;
    let op = t.console_as("prodop", PASSWORD).await;
    let page = op.get("/diagnostics?cluster=prod").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("id=\"no-bundles\""), "{}", page.html);
    assert!(page.html.contains("<option value=\"prod\" selected>prod</option>"), "{}", page.html);
    assert!(!page.html.contains("<option value=\"dev\""), "an operator of prod may only collect from prod");
    assert!(page.html.contains("<code>cache</code>"), "the cluster's services are named");
    assert_eq!(page.html.matches("name=\"include\"").count(), 12);
    assert_eq!(page.html.matches("name=\"include\" value=\"logs\" checked").count(), 1);

    // Refusals: no CSRF token, then bad input shown by the form with the input kept.
    let no_token = op.post_raw("/diagnostics", &[("cluster", "prod"), ("since", "2h"), ("include", "logs")]).await;
    assert_eq!(no_token.status, 403);
    let base = [("cluster", "prod"), ("services", "cache"), ("include", "logs"), ("include", "config")];
    for (field, value, want) in [
        ("since", "yesterday-ish", "since"),
        ("max_size", "lots", "invalid size"),
        ("max_size", "0", "max_bytes"),
        ("until", "2000-01-01T00:00:00Z", "before since"),
    ] {
        let mut fields: Vec<(&str, &str)> = base.to_vec();
        if field != "since" {
            fields.push(("since", "2h"));
        }
        fields.push((field, value));
        let refused = op.post("/diagnostics", &fields).await;
        assert_eq!(refused.status, 422, "{field}={value}: {}", refused.html);
        let error = between(&refused.html, "id=\"diagnostics-error\">", "</p>").expect("the error by the form");
        assert!(error.contains(want), "{field}={value}: {error}");
        assert!(refused.html.contains("id=\"diag-services\" value=\"cache\""), "input kept");
        assert!(refused.html.contains("name=\"include\" value=\"config\" checked"), "choices kept");
        assert!(!refused.html.contains("name=\"include\" value=\"audit\" checked"), "choices kept");
    }
    assert!(t.ok(Method::GET, "/diagnostics", None).await["items"].as_array().unwrap().is_empty(), "nothing started");

    // Started: to the command's page, which has a step for the host.
    let started = op.post("/diagnostics", &[("cluster", "prod"), ("since", "2h"), ("max_size", "10MiB")]).await;
    assert_eq!(started.status, 422, "no part chosen: {}", started.html);
    let mut fields = base.to_vec();
    fields.extend([("since", "2h"), ("max_size", "10MiB")]);
    let started = op.post("/diagnostics", &fields).await;
    assert_eq!(started.status, 303, "{}", started.html);
    let command = started.location.clone().unwrap();
    assert!(command.starts_with("/commands/"), "{command}");
    assert!(started.flash.as_deref().unwrap_or_default().contains("started"), "{:?}", started.flash);
    let bundles = t.ok(Method::GET, "/diagnostics", None).await;
    let bundle = &bundles["items"][0];
    let id = bundle["id"].as_str().unwrap().to_owned();
    assert_eq!(bundle["max_bytes"], 10 << 20);
    assert_eq!(bundle["include"], json!(["logs", "config"]));
    assert_eq!(format!("/commands/{}", bundle["command_id"].as_str().unwrap()), command);
    let command_page = op.get(&command).await;
    assert_eq!(command_page.status, 200);
    assert!(command_page.html.contains("db1.example"), "a step for the host: {}", command_page.html);

    // Listed; h1 has no agent session, so the bundle is partial and names it.
    let done = finished(&t, &id).await;
    let list = op.get("/diagnostics").await;
    let row = between(&list.html, &format!("data-bundle=\"{id}\""), "</tr>").expect("the bundle's row");
    assert!(row.contains(&format!("badge diag-{}", done["state"].as_str().unwrap())), "{row}");
    assert!(row.contains("prodop"), "who: {row}");
    assert!(row.contains(">prod</a>: cache"), "scope: {row}");
    if done["state"] != "failed" {
        assert!(row.contains(&format!("href=\"/api/v1/diagnostics/{id}/download\"")), "{row}");
    }
    for f in done["failed_hosts"].as_array().unwrap() {
        assert!(row.contains(f["hostname"].as_str().unwrap()), "failed host named: {row}");
    }
    // The download link works with the console's session cookie.
    if done["state"] != "failed" {
        let resp = t
            .client
            .get(t.url(&format!("/api/v1/diagnostics/{id}/download")))
            .header("cookie", op.cookie())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], "application/gzip");
    }

    // A reader of another cluster sees neither the bundle nor the form.
    let dev = t.console_as("devviewer", PASSWORD).await;
    let theirs = dev.get("/diagnostics").await;
    assert_eq!(theirs.status, 200);
    assert!(!theirs.html.contains(&id) && theirs.html.contains("id=\"no-bundles\""), "{}", theirs.html);
    assert!(!theirs.html.contains("id=\"diagnostics-form\""));
    let refused = dev.post(&format!("/diagnostics/{id}/delete"), &[("confirmed", "yes")]).await;
    assert!(refused.status == 403 || refused.status == 404, "{}", refused.status);

    // Deleted after a confirmation.
    let confirm = op.post(&format!("/diagnostics/{id}/delete"), &[]).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.html.contains(&format!("Delete diagnostic bundle {id}")), "{}", confirm.html);
    assert!(t.ok(Method::GET, &format!("/diagnostics/{id}"), None).await["id"] == id, "not deleted yet");
    let deleted = op.post(&format!("/diagnostics/{id}/delete"), &[("confirmed", "yes")]).await;
    assert_eq!(deleted.status, 303);
    assert_eq!(deleted.location.as_deref(), Some("/diagnostics"));
    t.err(Method::GET, &format!("/diagnostics/{id}"), None, 404).await;
}
