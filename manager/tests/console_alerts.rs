//! The console's alert pages over HTTP: a real alert (a Redis role's memory over a rule's
//! threshold, evaluated by `alerts::live::run_cycle`) on `/alerts` with its value and links
//! and on the home page; a silence made from the alert's pre-filled form, listed on
//! `/silences`, marking the alert after the next cycle, then expired after a confirmation;
//! refusals shown by the form with nothing stored; forms without a CSRF token refused; and
//! a viewer of another cluster sees none of it.
//!
//! With `DROVER_CONSOLE_SHOTS=DIR` the pages are also saved there as HTML (with the
//! stylesheet linked from the source tree) for screenshots.
mod common;

use std::collections::BTreeMap;

use common::{Console, T, between};
use drover_manager::alerts::live::run_cycle;
use drover_manager::domain::metrics::{RoleReport, Sample};
use drover_manager::model::now_millis;
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "console-alerts-password";

/// A manager with cluster `prod` (host h1, service `cache` with role `cache-primary`),
/// an empty cluster `dev`, a rule firing on the role's memory, and users scoped to each.
struct Fleet {
    t: T,
    primary: String,
}

async fn fleet() -> Fleet {
    let (t, primary) = common::redis_alert_fleet("h1.example", &["prod", "dev"]).await;
    for (name, role, cluster) in
        [("devviewer", "viewer", "dev"), ("prodviewer", "viewer", "prod"), ("prodop", "operator", "prod")]
    {
        let grants = json!([{"role": role, "cluster": cluster}]);
        t.ok(Method::POST, "/users", Some(json!({"username": name, "password": PASSWORD, "grants": grants}))).await;
    }
    t.ok(
        Method::POST,
        "/alert-rules",
        Some(json!({
            "name": "redis_memory_high", "expr": "redis_memory_used_ratio > 0.95", "for": "0s",
            "severity": "critical", "labels": {"team": "cache"},
            "annotations": {"summary": "{{labels.role}} uses {{value}} of maxmemory"}
        })),
    )
    .await;
    // The same condition held for an hour: pending for the whole test.
    t.ok(
        Method::POST,
        "/alert-rules",
        Some(json!({
            "name": "redis_memory_sustained", "expr": "redis_memory_used_ratio > 0.9", "for": "1h",
            "severity": "warning", "annotations": {"summary": "{{labels.role}} has been near maxmemory"}
        })),
    )
    .await;
    Fleet { t, primary }
}

impl Fleet {
    /// A heartbeat from h1 with the primary's used-memory ratio, then one engine cycle.
    async fn redis_memory(&self, ratio: f64) {
        let state = &self.t.handle.state;
        let report = RoleReport {
            role_id: self.primary.clone(),
            process: None,
            samples: vec![Sample {
                name: "redis_memory_used_ratio".into(),
                value: ratio,
                labels: BTreeMap::new(),
                at_ms: now_millis(),
            }],
            collect_error: String::new(),
        };
        assert!(state.registry.heartbeat_with_roles("h1", common::host_metrics(Vec::new()), vec![report]));
        run_cycle(state).await.expect("cycle");
    }

    async fn silences(&self) -> Vec<Value> {
        self.t.ok(Method::GET, "/silences", None).await["items"].as_array().unwrap().clone()
    }
}

/// The table with `id`, from its id to its end (empty when there is none).
fn table<'a>(html: &'a str, id: &str) -> &'a str {
    between(html, &format!("id=\"{id}\""), "</table>").unwrap_or_default()
}

/// The `<tr>` of the alert `name` in `html`.
fn alert_row<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    between(html, &format!("data-alert=\"{name}\""), "</tr>")
}

/// Saves a page for screenshots when `DROVER_CONSOLE_SHOTS` names a directory.
fn keep(name: &str, html: &str) {
    let Ok(dir) = std::env::var("DROVER_CONSOLE_SHOTS") else { return };
    let css = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/static/drover.css");
    let css = css.canonicalize().unwrap();
    let html = html.replace("href=\"/static/drover.css\"", &format!("href=\"file://{}\"", css.display()));
    std::fs::write(std::path::Path::new(&dir).join(format!("{name}.html")), html).unwrap();
}

/// The silence form's textarea text on a page.
fn form_matchers(html: &str) -> String {
    let tag = between(html, "id=\"silence-matchers\"", "</textarea>").expect("the matchers textarea");
    tag.split_once('>').map(|(_, text)| text.to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn a_firing_alert_is_listed_on_home_and_alerts_and_silenced_from_its_row() {
    let f = fleet().await;
    let admin = f.t.console().await;
    let home = admin.get("/").await;
    assert!(home.html.contains("id=\"no-alerts-firing\""), "nothing fires yet: {}", home.html);

    f.redis_memory(0.99).await;
    let page = admin.get("/alerts").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let firing = table(&page.html, "firing");
    let row = alert_row(firing, "redis_memory_high").unwrap_or_else(|| panic!("the alert fires: {}", page.html));
    assert!(row.contains("<span class=\"sev sev-critical\">critical</span>"), "severity as a word: {row}");
    assert!(row.contains("<td class=\"value\">0.99</td>"), "its value: {row}");
    assert!(row.contains("cache-primary uses 0.99 of maxmemory"), "its summary: {row}");
    assert!(row.contains("href=\"/clusters/prod/services/cache/roles/cache-primary\""), "its role linked: {row}");
    assert!(row.contains("href=\"/hosts/h1\""), "its host linked: {row}");
    assert!(row.contains("<code class=\"label\">team=cache</code>"), "its other labels: {row}");
    assert!(row.contains("firing since"), "{row}");
    assert!(row.contains("<small>no</small>"), "not muted yet: {row}");
    assert!(!page.html.contains("data-alert=\"redis_memory_high\" class=\"alert-pending\""), "not pending");
    let pending = alert_row(table(&page.html, "pending"), "redis_memory_sustained").expect("the pending alert");
    assert!(pending.contains("pending since") && pending.contains("<span class=\"sev sev-warning\">warning</span>"));
    let recent = table(&page.html, "history");
    assert!(recent.contains("<code>redis_memory_high</code>") && recent.contains("firing"), "history: {recent}");
    assert!(!page.html.contains("id=\"recent-more\""), "all of the history is shown");
    // The filters.
    for (query, listed) in [
        ("?severity=critical", true),
        ("?severity=warning", false),
        ("?state=firing&cluster=prod", true),
        ("?cluster=dev", false),
        ("?state=pending", false),
        ("?state=pending&cluster=prod", false),
    ] {
        let p = admin.get(&format!("/alerts{query}")).await;
        assert_eq!(p.status, 200, "{query}: {}", p.html);
        let active = p.html.split("id=\"recent\"").next().unwrap();
        assert_eq!(active.contains("data-alert=\"redis_memory_high\""), listed, "{query}: {}", p.html);
    }
    let bad = admin.get("/alerts?severity=fatal").await;
    assert_eq!(bad.status, 400);
    assert!(bad.html.contains("unknown severity &quot;fatal&quot;"), "{}", bad.html);

    // The home page's panel.
    let home = admin.get("/").await;
    let panel = between(&home.html, "id=\"firing-alerts\"", "</section>").expect("the panel");
    keep("home", &home.html);
    assert!(panel.contains("<b>1</b> <span class=\"sev sev-critical\">critical</span>"), "{panel}");
    assert!(panel.contains("<code>redis_memory_high</code> on prod / cache / cache-primary / h1.example"), "{panel}");
    assert!(panel.contains("cache-primary uses 0.99 of maxmemory"), "{panel}");
    assert!(panel.contains("href=\"/alerts#alert-"), "linked to its row: {panel}");

    // "Silence" opens the form pre-filled with the alert's name and entity, for 2h.
    let href = between(row, "class=\"silence\" href=\"", "\"").expect("a Silence link").to_owned();
    let form = admin.get(&href).await;
    assert_eq!(form.status, 200, "{}", form.html);
    let matchers = form_matchers(&form.html);
    assert_eq!(
        matchers,
        "alertname=redis_memory_high\ncluster=prod\nservice=cache\nrole=cache-primary\nhost=h1.example"
    );
    assert!(form.html.contains("id=\"silence-ends\" value=\"2h\""), "{}", form.html);
    let made =
        admin.post("/silences", &[("matchers", &matchers), ("ends", "2h"), ("comment", "filling it on purpose")]).await;
    assert_eq!((made.status, made.location.as_deref()), (303, Some("/silences")), "{}", made.html);
    assert!(made.flash.as_deref().unwrap_or_default().starts_with("ok=silence created: alertname=redis_memory_high"));
    let stored = f.silences().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let id = stored[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(stored[0]["matchers"].as_array().unwrap().len(), 5);
    assert_eq!(stored[0]["created_by"], "admin");
    let list = admin.get("/silences").await;
    let active = table(&list.html, "active-silences");
    assert!(active.contains(&format!("data-silence=\"{id}\"")), "{}", list.html);
    assert!(active.contains("<code>alertname=redis_memory_high</code>") && active.contains("filling it on purpose"));
    assert!(active.contains("<td>admin</td>"), "created by: {active}");

    // After the next cycle the alert is marked silenced, still firing, and the silence counts it.
    f.redis_memory(0.99).await;
    let page = admin.get("/alerts").await;
    let row = alert_row(table(&page.html, "firing"), "redis_memory_high").expect("still firing");
    assert!(row.contains("<span class=\"badge muted\">silenced</span>"), "{row}");
    assert!(row.contains(&format!("href=\"/silences#silence-{id}\"")), "{row}");
    keep("alerts", &page.html);
    let list = admin.get("/silences").await;
    assert!(table(&list.html, "active-silences").contains("<td>1 alert</td>"), "{}", list.html);
    keep("silences", &list.html);
    assert!(admin.get("/").await.html.contains("<span class=\"badge muted\">silenced</span>"));

    // Expiring asks first; nothing changes until confirmed.
    let action = format!("/silences/{id}/expire");
    assert!(list.html.contains(&format!("action=\"{action}\"")), "an expire form");
    let ask = admin.post(&action, &[]).await;
    assert_eq!(ask.status, 200, "{}", ask.html);
    assert!(ask.html.contains(&format!("Expire silence {id} now?")), "{}", ask.html);
    assert!(ask.html.contains("name=\"confirmed\" value=\"yes\""));
    assert_eq!(f.silences().await[0]["state"], "active");
    let done = admin.post(&action, &[("confirmed", "yes")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/silences")), "{}", done.html);
    assert_eq!(done.flash.as_deref(), Some(format!("ok=silence {id} expired").as_str()));
    assert_eq!(f.silences().await[0]["state"], "expired");
    let list = admin.get("/silences").await;
    assert!(list.html.contains("id=\"no-active\""), "{}", list.html);
    assert!(table(&list.html, "expired-silences").contains(&format!("data-silence=\"{id}\"")), "{}", list.html);
    // Expiring it again says why it cannot.
    let again = admin.post(&action, &[("confirmed", "yes")]).await;
    assert_eq!(again.status, 303);
    assert!(again.flash.as_deref().unwrap_or_default().contains("already expired"), "{:?}", again.flash);
    f.redis_memory(0.99).await;
    let row = alert_row(&admin.get("/alerts").await.html, "redis_memory_high").unwrap().to_owned();
    assert!(!row.contains("badge muted"), "no longer silenced: {row}");

    // Resolved: gone from the active tables and from home, kept in Recent.
    f.redis_memory(0.2).await;
    let page = admin.get("/alerts").await;
    assert!(page.html.contains("id=\"no-firing\""), "{}", page.html);
    assert!(table(&page.html, "history").contains("history-resolved"), "{}", page.html);
    assert!(admin.get("/").await.html.contains("id=\"no-alerts-firing\""));
}

#[tokio::test]
async fn the_silence_form_shows_refusals_by_the_form_and_stores_nothing() {
    let f = fleet().await;
    let admin = f.t.console().await;
    let cases: [(&str, &str, &str); 6] = [
        ("host=~(", "2h", "invalid regular expression"),
        ("1bad=x", "2h", "invalid label name"),
        ("alertname=x\nhost db1", "2h", "matcher line 2 (&quot;host db1&quot;) has no operator"),
        ("", "2h", "matchers: give at least one"),
        ("alertname=x", "soon", "invalid duration &quot;soon&quot;"),
        ("alertname=x", "2020-01-02T03:04", "is not in the future"),
    ];
    for (matchers, ends, says) in cases {
        let page = admin.post("/silences", &[("matchers", matchers), ("ends", ends), ("comment", "kept")]).await;
        assert_eq!(page.status, 422, "{matchers:?}: {}", page.html);
        let error = between(&page.html, "id=\"silence-error\">", "</p>").unwrap_or_default();
        assert!(error.contains(says), "{matchers:?} {ends:?}: {error:?} in {}", page.html);
        assert_eq!(form_matchers(&page.html), matchers, "the input is kept");
        assert!(page.html.contains(&format!("id=\"silence-ends\" value=\"{ends}\"")), "{}", page.html);
        assert!(page.html.contains("id=\"silence-comment\" value=\"kept\""));
        assert!(page.html.contains("aria-invalid=\"true\" aria-describedby=\"silence-error\""));
    }
    assert!(f.silences().await.is_empty(), "nothing stored");

    // A form without the session's CSRF token is refused, changing nothing.
    let forged = admin.post_raw("/silences", &[("matchers", "alertname=x"), ("ends", "2h")]).await;
    assert_eq!(forged.status, 403, "{}", forged.html);
    let wrong = admin.post_raw("/silences", &[("_csrf", "0000"), ("matchers", "alertname=x"), ("ends", "2h")]).await;
    assert_eq!(wrong.status, 403);
    assert!(f.silences().await.is_empty());
    let made = admin.post("/silences", &[("matchers", "alertname=x"), ("ends", "1h"), ("comment", "")]).await;
    assert_eq!(made.status, 303, "{}", made.html);
    let id = f.silences().await[0]["id"].as_str().unwrap().to_owned();
    let forged = admin.post_raw(&format!("/silences/{id}/expire"), &[("confirmed", "yes")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(f.silences().await[0]["state"], "active");
    // An unknown silence is a 404 page, asked or confirmed.
    assert_eq!(admin.post("/silences/nope/expire", &[]).await.status, 404);
    assert_eq!(admin.post("/silences/nope/expire", &[("confirmed", "yes")]).await.status, 404);
}

#[tokio::test]
async fn each_user_sees_the_alerts_and_forms_of_what_they_may_read_and_silence() {
    let f = fleet().await;
    f.redis_memory(0.99).await;
    let admin = f.t.console().await;
    let made = admin.post("/silences", &[("matchers", "cluster=prod\nalertname=x"), ("ends", "1h")]).await;
    assert_eq!(made.status, 303, "{}", made.html);

    // A viewer of dev sees neither prod's alert nor a form to silence anything.
    let dev: Console = f.t.console_as("devviewer", PASSWORD).await;
    let page = dev.get("/alerts").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(!page.html.contains("redis_memory_high"), "prod's alert, even in Recent: {}", page.html);
    assert!(page.html.contains("id=\"no-firing\""));
    assert!(page.html.contains("href=\"/alerts\" aria-current=\"page\""), "the navigation names the page");
    let home = dev.get("/").await;
    assert!(home.html.contains("id=\"no-alerts-firing\"") && !home.html.contains("redis_memory_high"));
    let silences = dev.get("/silences").await;
    assert_eq!(silences.status, 200);
    assert!(!silences.html.contains("id=\"silence-form\"") && !silences.html.contains("Expire…"));
    let refused = dev.post("/silences", &[("matchers", "cluster=dev"), ("ends", "1h")]).await;
    assert_eq!(refused.status, 403, "the domain checks again: {}", refused.html);
    assert!(refused.html.contains("commands.run"), "{}", refused.html);

    // A viewer of prod sees the alert but is offered no silence.
    let viewer = f.t.console_as("prodviewer", PASSWORD).await;
    let page = viewer.get("/alerts").await;
    let row = alert_row(&page.html, "redis_memory_high").expect("prod's alert");
    assert!(!row.contains("class=\"silence\""), "{row}");
    assert!(!viewer.get("/silences").await.html.contains("id=\"silence-form\""));

    // An operator of prod silences prod's alerts and expires prod's silences.
    let op = f.t.console_as("prodop", PASSWORD).await;
    let page = op.get("/alerts").await;
    let row = alert_row(&page.html, "redis_memory_high").expect("prod's alert");
    assert!(row.contains("class=\"silence\""), "{row}");
    let list = op.get("/silences").await;
    assert!(list.html.contains("id=\"silence-form\"") && list.html.contains("Expire…"), "{}", list.html);
    let fleet_wide = op.post("/silences", &[("matchers", "alertname=x"), ("ends", "1h")]).await;
    assert_eq!(fleet_wide.status, 403, "a silence outside prod needs commands.run on the fleet");
    assert_eq!(f.silences().await.len(), 1);
}
