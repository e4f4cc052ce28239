//! The console's alert rule and notification pages over HTTP, as a browser without scripts
//! uses them: a rule created through the form is served by REST; a bad expression, an
//! unknown metric or a bad duration is shown by its field with the input kept and nothing
//! stored; the YAML export downloads and imports back (all or nothing); delete and reset
//! are confirmed; a webhook receiver added through the form keeps its secret out of every
//! page; the route tree is refused with an unknown receiver and stored when good; a real
//! alert delivered to a real HTTP receiver shows in the deliveries table; a viewer sees no
//! forms and is refused every change.
//!
//! With `DROVER_CONSOLE_HTML_DIR` set, the pages are written there for screenshots.

mod common;

use std::time::Duration;

use common::{Console, Page, T, between};
use drover_manager::notify::webhook::verify_signature;
use reqwest::Method;
use serde_json::{Value, json};

const VIEWER_PASSWORD: &str = "read-only password for the console";

/// With `DROVER_CONSOLE_HTML_DIR` set, fetches `path` (posting `form` when given) as the
/// browser gets it and writes it there, its style sheet pointed at web/static, for looking at.
async fn keep(t: &T, c: &Console, path: &str, form: Option<&[(&str, &str)]>, name: &str) {
    let Ok(dir) = std::env::var("DROVER_CONSOLE_HTML_DIR") else { return };
    let client = reqwest::Client::new();
    let req = match form {
        Some(fields) => {
            let mut all = vec![("_csrf", c.csrf.as_str())];
            all.extend_from_slice(fields);
            client.post(t.url(path)).form(&all)
        }
        None => client.get(t.url(path)),
    };
    let html = req.header("cookie", c.cookie()).send().await.unwrap().text().await.unwrap();
    let css = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/static/drover.css");
    let html = html.replace("/static/drover.css", &format!("file://{css}"));
    std::fs::write(format!("{dir}/{name}.html"), html).unwrap();
}

/// The error shown by the element `id` (`<p ... id="ID">...</p>`), quotes decoded.
fn error_of(page: &Page, id: &str) -> String {
    between(&page.html, &format!("id=\"{id}\">"), "</p>").unwrap_or_default().replace("&quot;", "\"")
}

/// The text between `start` and `end`, quotes decoded.
fn part(page: &Page, start: &str, end: &str) -> String {
    between(&page.html, start, end).unwrap_or_else(|| panic!("no {start} in {}", page.html)).replace("&quot;", "\"")
}

/// The rule names REST lists.
async fn rule_names(t: &T) -> Vec<String> {
    let list = t.ok(Method::GET, "/alert-rules", None).await;
    list["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
}

/// The form fields of a rule.
fn rule_form<'a>(name: &'a str, expr: &'a str, for_: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("expr", expr),
        ("for", for_),
        ("keep_firing_for", "1m"),
        ("severity", "warning"),
        ("enabled", "on"),
        ("description", "the root filesystem fills up"),
        ("labels", "team=storage\ntier=gold"),
        ("annotations", "summary={{labels.host}} disk is {{value}} full"),
    ]
}

#[tokio::test]
async fn rules_are_created_edited_exported_imported_and_deleted_through_the_console() {
    let t = T::start().await;
    let c = t.console().await;
    let before = rule_names(&t).await;

    let page = c.get("/alerts/rules").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("<tr data-rule=\"host_lost\">"), "built-in rules are listed: {}", page.html);
    assert!(page.html.contains("id=\"create-rule\"") && page.html.contains("id=\"import-rules\""));
    assert!(page.html.contains("href=\"/alerts/rules/export\""));

    // Refusals by their field, the input kept, nothing stored.
    for (expr, for_, field, said) in [
        ("host_disk_used_ratio >", "5m", "err-expr", "expr:"),
        ("nosuch_metric > 0.9", "5m", "err-expr", "unknown metric \"nosuch_metric\""),
        ("host_disk_used_ratio > 0.9", "soon", "err-for", "for: invalid duration \"soon\""),
    ] {
        let refused = c.post("/alerts/rules", &rule_form("disk_watch", expr, for_)).await;
        assert_eq!(refused.status, 422, "{expr} {for_}: {}", refused.html);
        let error = error_of(&refused, field);
        assert!(error.contains(said), "{field} says {said:?}: {}", refused.html);
        assert!(refused.html.contains(&format!(">{expr}</textarea>")), "the expression is kept: {}", refused.html);
        assert!(refused.html.contains(&format!("value=\"{for_}\"")), "the duration is kept");
        assert!(refused.html.contains("team=storage\ntier=gold</textarea>"), "the labels are kept");
        if said.contains("unknown") {
            keep(&t, &c, "/alerts/rules", Some(&rule_form("disk_watch", expr, for_)), "rules-error").await;
        }
        assert_eq!(rule_names(&t).await, before, "nothing stored");
    }
    let refused =
        c.post("/alerts/rules", &[("name", "Bad Name"), ("expr", "host_up == 0"), ("severity", "info")]).await;
    assert_eq!(refused.status, 422);
    assert!(error_of(&refused, "err-name").contains("invalid rule name"));
    let refused = c
        .post("/alerts/rules", &[("name", "x"), ("expr", "host_up == 0"), ("severity", "info"), ("labels", "oops")])
        .await;
    assert!(error_of(&refused, "err-labels").contains("not name=value"));

    // Created through the form, read through REST.
    let created = c.post("/alerts/rules", &rule_form("disk_watch", "host_disk_used_ratio > 0.9", "5m")).await;
    assert_eq!(created.status, 303, "{}", created.html);
    assert_eq!(created.location.as_deref(), Some("/alerts/rules/disk_watch"));
    assert_eq!(created.flash.as_deref(), Some("ok=alert rule disk_watch created"));
    let rule = t.ok(Method::GET, "/alert-rules/disk_watch", None).await;
    assert_eq!(rule["expr"], "host_disk_used_ratio > 0.9");
    assert_eq!((rule["for"].as_str(), rule["keep_firing_for"].as_str()), (Some("5m"), Some("1m")));
    assert_eq!(rule["labels"], json!({"team": "storage", "tier": "gold"}));
    assert_eq!(rule["annotations"]["summary"], "{{labels.host}} disk is {{value}} full");
    assert_eq!((rule["builtin"].as_bool(), rule["enabled"].as_bool()), (Some(false), Some(true)));
    let again = c.post("/alerts/rules", &rule_form("disk_watch", "host_up == 0", "")).await;
    assert_eq!(again.status, 409);
    assert!(error_of(&again, "err-name").contains("already exists"));

    let list = c.get("/alerts/rules").await;
    let row = between(&list.html, "<tr data-rule=\"disk_watch\">", "</tr>").expect("the new rule is listed");
    for part in ["custom", "host_disk_used_ratio > 0.9", "5m", "team=storage", "{{labels.host}} disk is"] {
        assert!(row.contains(part), "{part} in {row}");
    }
    keep(&t, &c, "/alerts/rules", None, "rules").await;

    // Edited on its page; a bad duration there is refused by the field and stores nothing.
    let page = c.get("/alerts/rules/disk_watch").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("id=\"edit-rule\"") && page.html.contains("Delete rule…"));
    let mut edit = rule_form("disk_watch", "host_disk_used_ratio > 0.95", "10m");
    edit.retain(|(k, _)| *k != "severity" && *k != "name");
    edit.push(("severity", "critical"));
    let saved = c.post("/alerts/rules/disk_watch", &edit).await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let rule = t.ok(Method::GET, "/alert-rules/disk_watch", None).await;
    assert_eq!((rule["severity"].as_str(), rule["for"].as_str()), (Some("critical"), Some("10m")));
    let mut bad = edit.clone();
    bad.retain(|(k, _)| *k != "keep_firing_for");
    bad.push(("keep_firing_for", "a while"));
    let refused = c.post("/alerts/rules/disk_watch", &bad).await;
    assert_eq!(refused.status, 422);
    assert!(error_of(&refused, "err-keep").contains("keep_firing_for"));
    assert!(refused.html.contains("value=\"a while\""), "the input is kept");
    assert_eq!(t.ok(Method::GET, "/alert-rules/disk_watch", None).await, rule, "nothing stored");
    keep(&t, &c, "/alerts/rules/disk_watch", None, "rule").await;

    // Export: a download of YAML the import takes.
    let export =
        reqwest::Client::new().get(t.url("/alerts/rules/export")).header("cookie", c.cookie()).send().await.unwrap();
    assert_eq!(export.status(), 200);
    let disposition = export.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment;") && disposition.contains(".yaml"), "{disposition}");
    assert!(export.headers()["content-type"].to_str().unwrap().starts_with("text/yaml"));
    let yaml = export.text().await.unwrap();
    assert!(yaml.contains("name: disk_watch") && yaml.contains("name: host_lost"), "{yaml}");

    // Delete, confirmed first.
    let confirm = c.post("/alerts/rules/disk_watch/delete", &[]).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.html.contains("Delete alert rule disk_watch"), "{}", confirm.html);
    assert!(t.ok(Method::GET, "/alert-rules", None).await.to_string().contains("disk_watch"), "not yet deleted");
    let deleted = c.post("/alerts/rules/disk_watch/delete", &[("confirmed", "yes")]).await;
    assert_eq!((deleted.status, deleted.location.as_deref()), (303, Some("/alerts/rules")));
    t.err(Method::GET, "/alert-rules/disk_watch", None, 404).await;

    // Import: one bad rule refuses all, named; the export brings everything back.
    let half = "- name: first_ok\n  expr: host_up == 0\n  severity: info\n- name: second_bad\n  expr: nosuch_metric > 1\n  severity: info\n";
    let refused = c.post("/alerts/rules/import", &[("yaml", half)]).await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    let error = error_of(&refused, "err-import");
    assert!(error.contains("second_bad") && error.contains("unknown metric"), "{}", refused.html);
    assert!(refused.html.contains("- name: first_ok"), "the YAML is kept");
    assert!(!rule_names(&t).await.contains(&"first_ok".to_owned()), "nothing half-imported");
    let imported = c.post("/alerts/rules/import", &[("yaml", &yaml)]).await;
    assert_eq!(imported.status, 303, "{}", imported.html);
    assert!(imported.flash.as_deref().unwrap_or_default().contains("disk_watch"), "{:?}", imported.flash);
    assert_eq!(t.ok(Method::GET, "/alert-rules/disk_watch", None).await["expr"], "host_disk_used_ratio > 0.95");
    let export_again = reqwest::Client::new()
        .get(t.url("/alerts/rules/export"))
        .header("cookie", c.cookie())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(export_again, yaml, "export, import, export round-trips");

    // A built-in rule: changed (disabled) through its form, then reset, confirmed.
    let builtin = c.get("/alerts/rules/host_lost").await;
    assert!(builtin.html.contains("Change this built-in rule"), "{}", builtin.html);
    let expr = t.ok(Method::GET, "/alert-rules/host_lost", None).await["expr"].as_str().unwrap().to_owned();
    let off = c.post("/alerts/rules/host_lost", &[("expr", expr.as_str()), ("severity", "critical")]).await;
    assert_eq!(off.status, 303, "{}", off.html);
    assert_eq!(t.ok(Method::GET, "/alert-rules/host_lost", None).await["enabled"], false);
    let list = c.get("/alerts/rules").await;
    let row = between(&list.html, "<tr data-rule=\"host_lost\">", "</tr>").unwrap();
    assert!(row.contains("(changed)") && row.contains("disabled"), "{row}");
    let confirm = c.post("/alerts/rules/host_lost/delete", &[]).await;
    assert!(confirm.html.contains("Reset built-in alert rule host_lost"), "{}", confirm.html);
    let reset = c.post("/alerts/rules/host_lost/delete", &[("confirmed", "yes")]).await;
    assert_eq!(reset.status, 303);
    assert_eq!(t.ok(Method::GET, "/alert-rules/host_lost", None).await["enabled"], true);
}

#[tokio::test]
async fn receivers_routes_and_deliveries_through_the_console() {
    let t = T::start_configured(|_| {}, |c| c.alerts_interval = Duration::from_millis(200)).await;
    t.host("h-1", "node-1.example", "10.0.0.1").await;
    let (url, got) = common::hook_server().await;
    let c = t.console().await;

    let page = c.get("/notifications").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("<a href=\"/notifications\" aria-current=\"page\">Notifications</a>"), "nav link");
    for id in
        ["id=\"no-routes\"", "id=\"no-receivers\"", "id=\"no-deliveries\"", "id=\"add-webhook\"", "id=\"routes-form\""]
    {
        assert!(page.html.contains(id), "{id}: {}", page.html);
    }

    // A bad URL is refused by its field; nothing is stored.
    let form = c.get("/notifications/receivers?kind=webhook").await;
    assert_eq!(form.status, 200);
    assert!(form.html.contains("id=\"rcv-url\"") && form.html.contains("id=\"rcv-secret\""), "{}", form.html);
    let refused = c
        .post(
            "/notifications/receivers",
            &[("kind", "webhook"), ("name", "hook"), ("url", "ftp://nowhere"), ("secret", "wh-console-secret")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(error_of(&refused, "err-url").contains("webhook_configs[0].url"));
    assert!(refused.html.contains("value=\"ftp://nowhere\""), "the input is kept");
    assert!(!refused.html.contains("wh-console-secret"), "a secret is never written back into a page");
    assert_eq!(t.ok(Method::GET, "/receivers", None).await["items"], json!([]));
    let bad_url = [("kind", "webhook"), ("name", "hook"), ("url", "ftp://nowhere")];
    keep(&t, &c, "/notifications/receivers", Some(&bad_url), "notifications-receiver-error").await;

    // Added through the form: the secret is stored (encrypted), never shown.
    let added = c
        .post(
            "/notifications/receivers",
            &[("kind", "webhook"), ("name", "hook"), ("url", &url), ("secret", "wh-console-secret")],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.html);
    assert_eq!(added.location.as_deref(), Some("/notifications/receivers/hook"));
    let exists = c.post("/notifications/receivers", &[("kind", "webhook"), ("name", "hook"), ("url", &url)]).await;
    assert_eq!(exists.status, 409);
    assert!(error_of(&exists, "err-name").contains("already exists"));
    let shown = c.get("/notifications/receivers/hook").await;
    assert_eq!(shown.status, 200);
    assert!(!shown.html.contains("wh-console-secret"), "{}", shown.html);
    assert!(shown.html.contains("a secret is stored: leave empty to keep it"), "{}", shown.html);
    assert!(shown.html.contains("signed (HMAC-SHA256)"));
    let rest = t.ok(Method::GET, "/receivers/hook", None).await;
    assert_eq!(rest["webhook_configs"][0]["url"], url.as_str());
    assert_eq!(rest["webhook_configs"][0]["secret"], "<redacted>");
    // Saved again with the secret left empty: it is kept.
    let saved =
        c.post("/notifications/receivers/hook", &[("kind", "webhook"), ("url", &url), ("max_attempts", "3")]).await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let config = drover_manager::domain::notifications::load(&t.handle.state).await.unwrap().unwrap();
    let hook = &config.receivers[0].webhook_configs[0];
    assert_eq!((hook.secret.as_deref(), hook.max_attempts), (Some("wh-console-secret"), Some(3)));
    // An e-mail receiver through its form; its password is not shown either.
    let mail = c
        .post(
            "/notifications/receivers",
            &[
                ("kind", "email"),
                ("name", "mail"),
                ("host", "127.0.0.1"),
                ("port", "2525"),
                ("tls", "none"),
                ("username", "u"),
                ("password", "smtp-console-pw"),
                ("from", "drover@example.org"),
                ("to", "oncall@example.org, db@example.org"),
            ],
        )
        .await;
    assert_eq!(mail.status, 303, "{}", mail.html);
    let rest = t.ok(Method::GET, "/receivers/mail", None).await;
    assert_eq!(rest["email_configs"][0]["to"], json!(["oncall@example.org", "db@example.org"]));
    let mail_page = c.get("/notifications/receivers/mail").await;
    assert!(!mail_page.html.contains("smtp-console-pw") && mail_page.html.contains("value=\"2525\""));
    keep(&t, &c, "/notifications/receivers/mail", None, "notifications-receiver").await;

    // Routes: an unknown receiver is refused, with the text kept; a good tree is stored.
    let bad = "receiver: hook\nroutes:\n  - receiver: pager\n    matchers: ['severity=\"critical\"']\n";
    let refused = c.post("/notifications/routes", &[("routes", bad)]).await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    let error = error_of(&refused, "err-routes");
    assert!(error.contains("route.routes[0].receiver") && error.contains("pager"), "{}", refused.html);
    assert!(refused.html.contains("- receiver: pager"), "the text is kept");
    t.err(Method::GET, "/routes", None, 404).await;
    let refused = c.post("/notifications/routes", &[("routes", "receiver: hook\ngroup_wait: soon\n")]).await;
    assert!(error_of(&refused, "err-routes").contains("group_wait"));
    // A receiver that is down (nothing listens on port 9), tried twice.
    let down = [("kind", "webhook"), ("name", "down"), ("url", "http://127.0.0.1:9/down"), ("max_attempts", "2")];
    assert_eq!(c.post("/notifications/receivers", &down).await.status, 303);
    let good = "receiver: mail\nroutes:\n  - receiver: hook\n    matchers: ['alertname=\"console_fires\"']\n    continue: true\n    group_by: [alertname]\n    group_wait: 100ms\n    group_interval: 1s\n  - receiver: down\n    matchers: ['alertname=\"console_fires\"']\n    group_wait: 100ms\n";
    let set = c.post("/notifications/routes", &[("routes", good)]).await;
    assert_eq!((set.status, set.location.as_deref()), (303, Some("/notifications")), "{}", set.html);
    let routes = t.ok(Method::GET, "/routes", None).await;
    assert_eq!(
        routes,
        json!({"receiver": "mail", "routes": [
            {"receiver": "hook", "matchers": ["alertname=\"console_fires\""], "continue": true,
                "group_by": ["alertname"], "group_wait": "100ms", "group_interval": "1s"},
            {"receiver": "down", "matchers": ["alertname=\"console_fires\""], "group_wait": "100ms"}]})
    );
    // JSON is taken too.
    let as_json = routes.to_string();
    assert_eq!(c.post("/notifications/routes", &[("routes", &as_json)]).await.status, 303);

    // A real alert reaches the webhook; the attempt shows in the deliveries table.
    let (status, rule) = t
        .call(
            Method::POST,
            "/alert-rules",
            Some(json!({"name": "console_fires", "expr": "host_up == 1", "for": "0s", "severity": "warning"})),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = c.get("/notifications").await;
        if page.html.contains("<tr data-delivery-receiver=\"hook\">") && page.html.contains("failed, given up") {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery shown: {}", page.html);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (sig, body) = got.lock().unwrap()[0].clone();
    assert!(verify_signature(b"wh-console-secret", &body, sig.as_deref().unwrap_or_default()), "signed");
    let row = part(&page, "<tr data-delivery-receiver=\"hook\">", "</tr>");
    for part in ["webhook[0]", "console_fires", "firing, 1 alert(s)", "delivered", "<td>1</td>"] {
        assert!(row.contains(part), "{part} in {row}");
    }
    // The receiver that is down: both attempts listed with the error, the notification given up
    // and counted, and the other receiver delivered all the same.
    let failed = part(&page, "<tr data-delivery-receiver=\"down\">", "</tr>");
    assert!(failed.contains("failed, given up") && failed.contains("<td>2</td>"), "{failed}");
    assert!(page.html.contains("failed, will retry"), "the first attempt: {}", page.html);
    let down_row = part(&page, "<tr data-receiver=\"down\">", "</tr>");
    assert!(down_row.contains("<span class=\"badge health-bad\">1</span>"), "given up counted: {down_row}");
    let receivers = between(&page.html, "<tr data-receiver=\"hook\">", "</tr>").unwrap();
    assert!(receivers.contains("<td>1</td>") || receivers.contains("<td>2</td>"), "delivered counted: {receivers}");
    let tree = part(&page, "<tr data-route=\"route.routes[0]\">", "</tr>");
    assert!(tree.contains("alertname=\"console_fires\"") && tree.contains("100ms"), "{tree}");
    assert!(tree.contains("<i title=\"inherited\">4h (default)</i>"), "inherited values marked: {tree}");
    assert!(!page.html.contains("wh-console-secret") && !page.html.contains("smtp-console-pw"));
    keep(&t, &c, "/notifications", None, "notifications").await;

    // A receiver the routes use cannot be deleted; the refusal says why. Unused: deleted.
    let confirm = c.post("/notifications/receivers/hook/delete", &[]).await;
    assert!(confirm.html.contains("Delete receiver hook"), "{}", confirm.html);
    let refused = c.post("/notifications/receivers/hook/delete", &[("confirmed", "yes")]).await;
    assert_eq!(refused.status, 303);
    assert!(refused.flash.as_deref().unwrap_or_default().contains("route.routes[0]"), "{:?}", refused.flash);
    t.ok(Method::GET, "/receivers/hook", None).await;
    c.post("/notifications/routes", &[("routes", "receiver: mail\n")]).await;
    let deleted = c.post("/notifications/receivers/hook/delete", &[("confirmed", "yes")]).await;
    assert_eq!((deleted.status, deleted.flash.as_deref()), (303, Some("ok=receiver hook deleted")));
    t.err(Method::GET, "/receivers/hook", None, 404).await;
}

#[tokio::test]
async fn a_viewer_sees_no_forms_and_is_refused_every_change() {
    let t = T::start().await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "viewer", "password": VIEWER_PASSWORD, "grants": [{"role": "viewer"}]})),
    )
    .await;
    t.ok(Method::PUT, "/receivers/ops", Some(json!({"webhook_configs": [{"url": "http://127.0.0.1:9/x"}]}))).await;
    t.ok(Method::PUT, "/routes", Some(json!({"receiver": "ops"}))).await;
    t.ok(Method::POST, "/alert-rules", Some(json!({"name": "mine", "expr": "host_up == 0", "severity": "info"}))).await;
    let v = t.console_as("viewer", VIEWER_PASSWORD).await;

    let pages: [(&str, &[&str]); 4] = [
        ("/alerts/rules", &["id=\"create-rule\"", "id=\"import-rules\""]),
        ("/alerts/rules/mine", &["id=\"edit-rule\"", "id=\"delete-form\""]),
        ("/notifications", &["id=\"routes-form\"", "id=\"add-receiver\""]),
        ("/notifications/receivers/ops", &["id=\"receiver-form\"", "id=\"receiver-yaml-form\"", "id=\"delete-form\""]),
    ];
    for (path, forms) in pages {
        let page = v.get(path).await;
        assert_eq!(page.status, 200, "a viewer reads {path}: {}", page.html);
        for id in forms {
            assert!(!page.html.contains(id), "a viewer is not offered {id} on {path}");
        }
    }
    let rules = v.get("/alerts/rules").await;
    assert!(rules.html.contains("<tr data-rule=\"mine\">") && rules.html.contains("href=\"/alerts/rules/export\""));
    assert!(v.get("/notifications").await.html.contains("<tr data-receiver=\"ops\">"));

    let posts: [(&str, &[(&str, &str)]); 7] = [
        ("/alerts/rules", &[("name", "v1"), ("expr", "host_up == 0"), ("severity", "info")]),
        ("/alerts/rules/mine", &[("expr", "host_up == 1"), ("severity", "info")]),
        ("/alerts/rules/mine/delete", &[("confirmed", "yes")]),
        ("/alerts/rules/import", &[("yaml", "- {name: v2, expr: 'host_up == 0', severity: info}")]),
        ("/notifications/routes", &[("routes", "receiver: ops\ngroup_wait: 1m\n")]),
        ("/notifications/receivers", &[("kind", "webhook"), ("name", "v3"), ("url", "http://127.0.0.1:9/y")]),
        ("/notifications/receivers/ops/yaml", &[("yaml", "webhook_configs: [{url: 'http://127.0.0.1:9/z'}]")]),
    ];
    for (path, fields) in posts {
        let refused = v.post(path, fields).await;
        assert_eq!(refused.status, 403, "POST {path}: {}", refused.html);
        assert!(refused.html.contains("config.write"), "{}", refused.html);
    }
    let deleted = v.post("/notifications/receivers/ops/delete", &[("confirmed", "yes")]).await;
    assert_eq!(deleted.status, 403);
    // Nothing changed.
    let names = rule_names(&t).await;
    assert!(
        names.contains(&"mine".to_owned()) && !names.contains(&"v1".to_owned()) && !names.contains(&"v2".to_owned())
    );
    assert_eq!(t.ok(Method::GET, "/alert-rules/mine", None).await["expr"], "host_up == 0");
    assert_eq!(t.ok(Method::GET, "/routes", None).await, json!({"receiver": "ops"}));
    let receivers: Value = t.ok(Method::GET, "/receivers", None).await;
    assert_eq!(receivers["items"].as_array().unwrap().len(), 1);
    assert_eq!(receivers["items"][0]["webhook_configs"][0]["url"], "http://127.0.0.1:9/x");
}
