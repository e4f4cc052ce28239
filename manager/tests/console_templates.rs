//! The console's template pages over HTTP, as a browser without scripts uses them: a running
//! cluster's export (its sensitive value a variable, its role-level override a warning) saved
//! as a template; the stored template's page; a document with problems refused with each
//! problem and its path listed and nothing stored; an instantiation refused before anything
//! exists (a missing variable), then started from the form (leading to its command); delete
//! confirmed first; a viewer sees the templates but neither the upload nor the instantiate form.
//!
//! With `DROVER_CONSOLE_SHOTS=DIR` the pages are also saved there as HTML (with the stylesheet
//! linked from the source tree) for screenshots.
mod common;

use common::{Console, PASSWORD, T, shot};
use reqwest::Method;
use serde_json::json;

/// Cluster `prod`: Redis `cache` with a primary on node-1 and a replica on node-2, a password
/// at the service level and a role-level override on the replica; node-3 and node-4 are free.
async fn prod(t: &T) {
    for (id, name, addr) in [
        ("h1", "node-1", "10.0.0.1"),
        ("h2", "node-2", "10.0.0.2"),
        ("h3", "node-3", "10.0.0.3"),
        ("h4", "node-4", "10.0.0.4"),
    ] {
        t.host(id, name, addr).await;
    }
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    for (role_type, host) in [("primary", "h1"), ("replica", "h2")] {
        t.ok(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": role_type, "host_id": host})),
        )
        .await;
    }
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"requirepass": "s3cret-pass", "maxmemory": "64mb"}, "message": "auth"})),
    )
    .await;
    t.ok(
        Method::PATCH,
        "/clusters/prod/services/cache/config",
        Some(json!({"values": {"loglevel": "debug"}, "message": "debug one replica", "role": "cache-replica-1"})),
    )
    .await;
}

/// The export page's document, saved as a template from its form: version `version` of `prod`.
async fn save_export(c: &Console, version: u64) -> String {
    let export = c.get("/clusters/prod/template").await;
    assert_eq!(export.status, 200, "{}", export.html);
    shot("template_export", &export.html);
    let yaml = common::between(&export.html, "<pre class=\"file\" id=\"export-yaml\">", "</pre>")
        .expect("the exported document")
        .to_owned();
    assert!(yaml.contains("cache") && yaml.contains("redis"), "{yaml}");
    assert!(!yaml.contains("s3cret-pass"), "a sensitive value was exported: {yaml}");
    assert!(export.html.contains("id=\"export-warnings\""), "the role-level override is a warning");
    assert!(export.html.contains("cache-replica-1"), "the warning names the role");
    let saved = c.post("/templates", &[("document", &yaml)]).await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let location = saved.location.expect("to the template's page");
    assert_eq!(location, format!("/templates/prod?version={version}"));
    assert!(saved.flash.as_deref().is_some_and(|f| f.contains(&format!("version {version}"))), "{:?}", saved.flash);
    location
}

#[tokio::test]
async fn a_clusters_export_is_saved_viewed_and_instantiated_from_the_console() {
    let t = T::start().await;
    prod(&t).await;
    let c = t.console().await;
    let page_href = save_export(&c, 1).await;

    let list = c.get("/templates").await;
    assert_eq!(list.status, 200);
    assert!(list.html.contains("data-template=\"prod\""), "{}", list.html);
    assert!(list.html.contains("id=\"upload-template\""));
    shot("templates", &list.html);

    let page = c.get(&page_href).await;
    assert_eq!(page.status, 200, "{}", page.html);
    shot("template", &page.html);
    assert!(page.html.contains("data-service=\"cache\""));
    assert!(page.html.contains("data-variable=\"cache_requirepass\""), "the password is a variable: {}", page.html);
    assert!(page.html.contains("type=\"password\""), "a sensitive variable is a password field");
    assert!(page.html.contains("maxmemory = 67108864"), "service-level values are shown (64mb, as stored)");
    assert!(page.html.contains("id=\"instantiate-template\""));

    // A missing variable: refused on the form, nothing created.
    let refused = c
        .post("/templates/prod/instantiate", &[("version", "1"), ("cluster", "dev"), ("hosts.primary", "node-3")])
        .await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(refused.html.contains("id=\"instantiate-problems\""));
    assert!(refused.html.contains("cache_requirepass"), "{}", refused.html);
    assert_eq!(t.call(Method::GET, "/clusters/dev", None).await.0, 404, "nothing is created");

    // The host groups as the export named them, on the free hosts.
    let tpl = t.ok(Method::GET, "/templates/prod", None).await;
    let groups: Vec<String> = tpl["document"]["host_groups"]
        .as_array()
        .expect("host groups")
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(groups.len(), 2, "a primary host and a replica host: {tpl}");
    let mut fields: Vec<(String, String)> = vec![
        ("version".into(), "1".into()),
        ("cluster".into(), "dev".into()),
        ("var.cache_requirepass".into(), "an0ther-pass".into()),
    ];
    for (g, host) in groups.iter().zip(["node-3", "node-4"]) {
        // Each group's roles decide which host it gets: the primary's group goes to node-3.
        let group = &tpl["document"]["host_groups"].as_array().unwrap().iter().find(|x| x["name"] == **g).unwrap();
        let primary = group["roles"].as_array().unwrap().iter().any(|r| r["role_type"] == "primary");
        let host = if primary {
            "node-3"
        } else if host == "node-3" {
            "node-4"
        } else {
            host
        };
        fields.push((format!("hosts.{g}"), host.into()));
    }
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let started = c.post("/templates/prod/instantiate", &fields).await;
    assert_eq!(started.status, 303, "{}", started.html);
    let command = started.location.expect("to the command's page");
    assert!(command.starts_with("/commands/"), "{command}");
    let command_page = c.get(&command).await;
    assert_eq!(command_page.status, 200);
    assert!(command_page.html.contains("create cluster dev"), "the command's steps are shown");
    // The command's first step creates the cluster.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.call(Method::GET, "/clusters/dev", None).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "cluster dev was not created by the command");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_document_with_problems_is_refused_with_each_problem_and_nothing_is_stored() {
    let t = T::start().await;
    let c = t.console().await;
    let doc = "name: broken\nservices:\n  - name: cache\n    type: redix\nhost_groups:\n  - name: all\n    cardinality: 1\n    roles:\n      - service: web\n        role_type: server\n";
    let refused = c.post("/templates", &[("document", doc)]).await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    shot("templates_refused", &refused.html);
    assert!(refused.html.contains("id=\"template-problems\""));
    assert!(refused.html.contains("<li>services[0].type:"), "each problem with its path: {}", refused.html);
    assert!(refused.html.contains("host_groups[0]"), "{}", refused.html);
    assert!(refused.html.contains("type: redix"), "the document is kept for correcting");
    let stored = t.ok(Method::GET, "/templates", None).await;
    assert_eq!(stored["items"].as_array().map(Vec::len), Some(0), "nothing stored: {stored}");

    // Not even a document: named as such.
    let garbled = c.post("/templates", &[("document", "name: [unclosed")]).await;
    assert_eq!(garbled.status, 422);
    assert!(garbled.html.contains("invalid template YAML"), "{}", garbled.html);
}

#[tokio::test]
async fn deleting_is_confirmed_and_a_viewer_only_reads() {
    let t = T::start().await;
    prod(&t).await;
    let c = t.console().await;
    save_export(&c, 1).await;
    save_export(&c, 2).await;

    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "viewer", "password": PASSWORD, "grants": [{"role": "viewer", "cluster": "prod"}]})),
    )
    .await;
    let v = t.console_as("viewer", PASSWORD).await;
    let page = v.get("/templates/prod").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("version 2 (latest)"), "{}", page.html);
    assert!(!page.html.contains("id=\"instantiate-template\""), "a viewer cannot instantiate");
    assert!(!page.html.contains("id=\"delete-template\""));
    assert!(!v.get("/templates").await.html.contains("id=\"upload-template\""));
    assert_eq!(v.post("/templates/prod/delete", &[("confirmed", "yes")]).await.status, 403);

    // Version 1 alone, after its confirmation page.
    let ask = c.post("/templates/prod/delete", &[("version", "1")]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Delete version 1 of template prod?"), "{}", ask.html);
    let done = c.post("/templates/prod/delete", &[("version", "1"), ("confirmed", "yes")]).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(t.call(Method::GET, "/templates/prod?version=1", None).await.0, 404);
    assert_eq!(t.call(Method::GET, "/templates/prod?version=2", None).await.0, 200);
    // Then every version.
    let done = c.post("/templates/prod/delete", &[("version", ""), ("confirmed", "yes")]).await;
    assert_eq!(done.status, 303);
    assert_eq!(t.call(Method::GET, "/templates/prod", None).await.0, 404);
}
