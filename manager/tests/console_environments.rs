//! The console's environments page over HTTP, as a browser without scripts uses it: the
//! bring-up form lists the stored templates; a malformed variables line and a request the
//! manager refuses (no Docker engine here) are shown on the page with the form kept and
//! nothing made; a viewer sees the page without the form; an environment (recorded directly,
//! with no containers) is listed and taken down after a confirmation. The real bring-up and
//! take-down are exercised by tests/tests/environments_e2e.rs.
//!
//! With `DROVER_CONSOLE_SHOTS=DIR` the pages are also saved there as HTML (with the stylesheet
//! linked from the source tree) for screenshots.
mod common;

use common::{T, shot};
use reqwest::Method;
use serde_json::json;

const SOLO: &str = r#"{"name": "solo", "services": [{"name": "cache", "type": "redis"}],
  "host_groups": [{"name": "primary", "cardinality": 1, "roles": [{"service": "cache", "role_type": "primary"}]}]}"#;

#[tokio::test]
async fn the_form_shows_refusals_and_keeps_what_was_typed() {
    let t = T::start_configured(|_| {}, |c| c.docker_socket = c.data_dir.join("no-docker.sock")).await;
    let c = t.console().await;
    let page = c.get("/environments").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("No stored templates yet"), "{}", page.html);
    assert!(page.html.contains("id=\"no-environments\""));

    t.ok(Method::POST, "/templates", Some(serde_json::from_str(SOLO).unwrap())).await;
    let page = c.get("/environments").await;
    assert!(page.html.contains("<option value=\"solo\">solo (v1)</option>"), "{}", page.html);
    assert!(page.html.contains("id=\"no-snapshots\""), "{}", page.html);
    shot("environments", &page.html);

    let form = [("name", "dev"), ("template", "solo"), ("ttl", "2h"), ("variables", "oops")];
    let page = c.post("/environments", &form).await;
    assert_eq!(page.status, 422);
    assert!(page.html.contains("variables, line 1: write NAME=VALUE"), "{}", page.html);
    assert!(page.html.contains("value=\"2h\""), "the form keeps the ttl");

    let form = [("name", "dev"), ("template", "solo"), ("ttl", "2h"), ("variables", "")];
    let page = c.post("/environments", &form).await;
    assert_eq!(page.status, 422);
    assert!(page.html.contains("no-docker.sock is not reachable"), "{}", page.html);
    shot("environments_refused", &page.html);
    assert_eq!(t.ok(Method::GET, "/environments", None).await, json!({"items": []}));

    // An environment is listed, and taken down once confirmed.
    let now = drover_manager::model::now_millis();
    let rec = drover_manager::store::EnvironmentRec {
        name: "alice-dev".into(),
        owner: "admin".into(),
        template: "solo".into(),
        template_version: 1,
        command_id: "no-such-command".into(),
        hosts: 1,
        created_at: now,
        created_by: "admin".into(),
        expires_at: Some(now + 8 * 3_600_000),
    };
    t.handle.state.store.insert_environment(&rec).await.unwrap();
    let page = c.get("/environments").await;
    assert!(page.html.contains("data-environment=\"alice-dev\""), "{}", page.html);
    assert!(page.html.contains("env-creating"), "{}", page.html);
    // A snapshot of an environment not yet made is refused with why, nothing recorded.
    let page = c.post("/environments/alice-dev/snapshot", &[("snapshot", "before")]).await;
    assert_eq!(page.location.as_deref(), Some("/environments"));
    assert!(page.flash.as_deref().unwrap_or_default().contains("has no cluster yet"), "{page:?}");
    assert_eq!(t.ok(Method::GET, "/snapshots", None).await, json!({"items": []}));
    // A snapshot is listed; deleting it is confirmed first and needs the engine.
    let snap = drover_manager::store::SnapshotRec {
        name: "before".into(),
        environment: "alice-dev".into(),
        hosts: vec![drover_manager::store::SnapshotHost {
            group: "primary-1".into(),
            image: "drover-snapshot/before:primary-1".into(),
            roles: Vec::new(),
        }],
        created_at: now,
        created_by: "admin".into(),
    };
    t.handle.state.store.insert_snapshot(&snap).await.unwrap();
    let page = c.get("/environments").await;
    assert!(page.html.contains("data-snapshot=\"before\""), "{}", page.html);
    assert!(page.html.contains("<option value=\"snapshot:before\">"), "{}", page.html);
    shot("environments_list", &page.html);
    let page = c.post("/snapshots/before/delete", &[]).await;
    assert!(page.html.contains("Delete snapshot before of environment alice-dev"), "{}", page.html);
    let page = c.post("/snapshots/before/delete", &[("confirmed", "yes")]).await;
    assert!(page.flash.as_deref().unwrap_or_default().contains("no-docker.sock is not reachable"), "{page:?}");
    assert_eq!(t.ok(Method::GET, "/snapshots", None).await["items"].as_array().unwrap().len(), 1);

    let page = c.post("/environments/alice-dev/down", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("Take environment alice-dev of admin down?"), "{}", page.html);
    assert_eq!(t.ok(Method::GET, "/environments", None).await["items"].as_array().unwrap().len(), 1);
    let page = c.post("/environments/alice-dev/down", &[("confirmed", "yes")]).await;
    assert_eq!(page.location.as_deref(), Some("/environments"));
    assert!(page.flash.as_deref().unwrap_or_default().contains("environment alice-dev taken down"), "{page:?}");
    assert_eq!(t.ok(Method::GET, "/environments", None).await, json!({"items": []}));

    // A viewer reads the page but gets no form.
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "val", "password": "long-secret-9", "grants": [{"role": "viewer"}]})),
    )
    .await;
    let v = t.console_as("val", "long-secret-9").await;
    let page = v.get("/environments").await;
    assert_eq!(page.status, 200);
    assert!(!page.html.contains("id=\"env-form\""), "{}", page.html);
    t.handle.shutdown().await;
}
