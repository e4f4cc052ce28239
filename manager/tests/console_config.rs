//! The console's configuration pages over HTTP: the editor (scopes, sources,
//! per-field errors with the input kept, the banner after a save), the
//! history, the comparison of two revisions and rollback.

mod common;

use common::{Console, T, between};
use reqwest::Method;
use serde_json::{Value, json};

const CONFIG: &str = "/clusters/prod/services/cache/config";

/// A cluster `prod` with a redis service `cache`: a primary on node-1 and a
/// replica on node-2 (no agent runs, so no role is running).
async fn redis(t: &T) {
    t.host("h1", "node-1", "10.0.0.1").await;
    t.host("h2", "node-2", "10.0.0.2").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    for (rt, host) in [("primary", "h1"), ("replica", "h2")] {
        t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": rt, "host_id": host})))
            .await;
    }
}

async fn revisions(t: &T) -> Vec<Value> {
    t.ok(Method::GET, "/clusters/prod/services/cache/config/revisions", None).await["items"].as_array().unwrap().clone()
}

/// The HTML of the table row of parameter `name`.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    between(html, &format!("<tr id=\"p-{name}\""), "</tr>").unwrap_or_else(|| panic!("no row for {name}: {html}"))
}

async fn csrf_page(c: &Console, path: &str) -> String {
    let p = c.get(path).await;
    assert_eq!(p.status, 200, "{path}: {}", p.html);
    p.html
}

#[tokio::test]
async fn edit_validate_save_history_compare_and_roll_back() {
    let t = T::start().await;
    redis(&t).await;
    let c = t.console().await;
    let before = revisions(&t).await;
    let rev0 = before[0]["revision"].as_u64().unwrap();

    // The editor lists every parameter with its value and source.
    let html = csrf_page(&c, CONFIG).await;
    let mm = row(&html, "maxmemory");
    assert!(mm.contains("name=\"v.maxmemory\""), "{mm}");
    assert!(mm.contains("default"), "maxmemory comes from the default: {mm}");
    assert!(row(&html, "maxmemory_policy").contains("<option value=\"allkeys-lru\""));
    assert!(row(&html, "appendonly").contains("<option value=\"false\" selected"), "a boolean is a select");
    assert!(row(&html, "port").contains("max=\"65535\""));
    assert!(row(&html, "requirepass").contains("type=\"password\""));
    assert!(html.contains(&format!("name=\"rev\" value=\"{rev0}\"")), "the form carries its revision");
    // Search filters on the server.
    let found = csrf_page(&c, &format!("{CONFIG}?q=evict")).await;
    assert!(found.contains("id=\"p-maxmemory_policy\"") && !found.contains("id=\"p-loglevel\""), "{found}");

    // A bad value: the page again, the error next to the field, the input
    // kept, no revision.
    let rev = rev0.to_string();
    let bad = c
        .post(
            CONFIG,
            &[
                ("scope", "service"),
                ("rev", &rev),
                ("v.maxmemory", "lots"),
                ("u.maxmemory", "mb"),
                ("message", "more room"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.html);
    let mm = row(&bad.html, "maxmemory");
    assert!(mm.contains("class=\"field-error\" id=\"err-maxmemory\""), "{mm}");
    assert!(mm.contains("expected a memory size"), "{mm}");
    assert!(mm.contains("value=\"lots\""), "input kept: {mm}");
    assert!(bad.html.contains("value=\"more room\""), "reason kept");
    assert!(!row(&bad.html, "loglevel").contains("field-error"));
    assert_eq!(revisions(&t).await.len(), before.len(), "no revision stored");

    // A missing reason is shown next to its field.
    let no_reason =
        c.post(CONFIG, &[("rev", &rev), ("v.maxmemory", "256"), ("u.maxmemory", "mb"), ("message", " ")]).await;
    assert_eq!(no_reason.status, 422);
    assert!(no_reason.html.contains("id=\"err-message\""), "{}", no_reason.html);
    assert!(row(&no_reason.html, "maxmemory").contains("value=\"256\""));

    // A good value, with the other fields sent unchanged as a browser does.
    let good = c
        .post(
            CONFIG,
            &[
                ("scope", "service"),
                ("rev", &rev),
                ("v.maxmemory", "256"),
                ("u.maxmemory", "mb"),
                ("v.loglevel", "notice"),
                ("v.appendonly", "false"),
                ("v.port", "6379"),
                ("v.requirepass", ""),
                ("message", "more room for keys"),
            ],
        )
        .await;
    assert_eq!(good.status, 303, "{}", good.html);
    let rev1 = rev0 + 1;
    assert_eq!(good.location.as_deref(), Some(format!("{CONFIG}?saved={rev1}").as_str()));
    let flash = good.flash.clone().unwrap();
    assert!(
        flash.starts_with("ok=") && flash.contains(&format!("revision {rev1} saved")) && flash.contains("maxmemory"),
        "{flash}"
    );
    let after = revisions(&t).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!((after[0]["revision"].as_u64(), &after[0]["message"]), (Some(rev1), &json!("more room for keys")));
    assert_eq!(after[0]["changed_keys"], json!(["maxmemory"]), "only the changed field is sent");
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(cfg["service"]["maxmemory"]["value"], json!(268435456));

    // The banner: both roles need a restart for maxmemory, none is running.
    let saved = csrf_page(&c, good.location.as_deref().unwrap()).await;
    let banner = between(&saved, "id=\"banner\"", "</section>").expect("a banner");
    assert!(banner.contains("restart needed: 2 roles"), "{banner}");
    assert!(banner.contains("cache-primary-1") && banner.contains("cache-replica-1"), "{banner}");
    assert!(banner.contains("None of them runs an older revision now (0 running)"), "{banner}");
    let mm = row(&saved, "maxmemory");
    assert!(mm.contains("256mb") && mm.contains(">service<") && mm.contains("name=\"unset\""), "{mm}");
    // Rolling restart of stale roles: none is stale, so it is refused with a flash.
    let rr = c.post(&format!("{CONFIG}/rolling-restart"), &[]).await;
    assert_eq!(rr.status, 303);
    assert!(rr.flash.as_deref().unwrap_or_default().contains("no role of the selection is stale"), "{rr:?}");

    // A role override shows where values come from at that scope.
    let role_scope = csrf_page(&c, &format!("{CONFIG}?scope=role:cache-replica-1")).await;
    assert!(row(&role_scope, "maxmemory").contains(">service<"), "inherited from the service");
    let ov = c
        .post(
            CONFIG,
            &[
                ("scope", "role:cache-replica-1"),
                ("rev", &rev1.to_string()),
                ("v.loglevel", "warning"),
                ("message", "quiet replica"),
            ],
        )
        .await;
    assert_eq!(ov.status, 303, "{}", ov.html);
    let svc = csrf_page(&c, CONFIG).await;
    assert!(row(&svc, "loglevel").contains("overridden by <a"), "{}", row(&svc, "loglevel"));
    // A stale form (rendered at an older revision) is refused, input kept.
    let stale = c
        .post(CONFIG, &[("rev", &rev1.to_string()), ("v.maxmemory", "512"), ("u.maxmemory", "mb"), ("message", "late")])
        .await;
    assert_eq!(stale.status, 422, "{}", stale.html);
    assert!(stale.html.contains("no longer at revision"), "{}", stale.html);
    assert!(row(&stale.html, "maxmemory").contains("value=\"512\""));
    // Remove the role override again (back to inherited).
    let rev2 = rev1 + 1;
    let unset = c
        .post(
            CONFIG,
            &[
                ("scope", "role:cache-replica-1"),
                ("rev", &rev2.to_string()),
                ("unset", "loglevel"),
                ("message", "back to normal"),
            ],
        )
        .await;
    assert_eq!(unset.status, 303, "{}", unset.html);
    let rev3 = rev2 + 1;
    assert!(!row(&csrf_page(&c, CONFIG).await, "loglevel").contains("overridden by"));

    // History: newest first with author, reason and changed keys.
    let hist = csrf_page(&c, &format!("{CONFIG}/history")).await;
    let r1 = hist.find(&format!("id=\"rev-{rev1}\"")).unwrap();
    let r3 = hist.find(&format!("id=\"rev-{rev3}\"")).unwrap();
    assert!(r3 < r1 && hist.contains(&format!("id=\"rev-{rev0}\"")), "newest first");
    let row1 = between(&hist, &format!("id=\"rev-{rev1}\""), "</tr>").unwrap();
    assert!(
        row1.contains("more room for keys") && row1.contains("admin") && row1.contains("<code>maxmemory</code>"),
        "{row1}"
    );
    assert!(row1.contains("not applied anywhere yet"), "{row1}");

    // Compare: the changed line of redis.conf, marked as text and colour.
    let cmp = csrf_page(&c, &format!("{CONFIG}/compare?from={rev0}&to={rev1}")).await;
    assert!(cmp.contains("redis.conf"), "{cmp}");
    assert!(cmp.contains("<span class=\"ln-del cfg-del\">-maxmemory 0</span>"), "{cmp}");
    assert!(cmp.contains("<span class=\"ln-add cfg-add\">+maxmemory 268435456</span>"), "{cmp}");
    assert!(cmp.contains("Role <a href=\"/clusters/prod/services/cache/roles/cache-primary-1\">cache-primary-1</a>"));
    let split = csrf_page(&c, &format!("{CONFIG}/compare?from={rev0}&to={rev1}&view=split")).await;
    assert!(
        split.contains("<code>maxmemory 0</code>") && split.contains("<code>maxmemory 268435456</code>"),
        "{split}"
    );
    assert!(split.contains("class=\"sign cfg-add\">+</td>"), "{split}");
    let same = csrf_page(&c, &format!("{CONFIG}/compare?from={rev0}&to={rev0}")).await;
    assert!(same.contains("id=\"no-diff\""));

    // Rollback: a confirmation first, then a new revision with the old values.
    let r0 = rev0.to_string();
    let ask = c.post(&format!("{CONFIG}/rollback"), &[("revision", &r0), ("message", "undo the memory change")]).await;
    assert_eq!(ask.status, 200, "{}", ask.html);
    assert!(
        ask.html.contains("id=\"confirm-what\"") && ask.html.contains(&format!("new revision {}", rev3 + 1)),
        "{}",
        ask.html
    );
    assert_eq!(revisions(&t).await.len(), after.len() + 2, "nothing rolled back before confirming");
    let done = c
        .post(
            &format!("{CONFIG}/rollback"),
            &[("revision", &r0), ("message", "undo the memory change"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location.as_deref(), Some(format!("{CONFIG}/history").as_str()));
    let rev4 = rev3 + 1;
    assert!(done.flash.as_deref().unwrap().contains(&format!("revision {rev4} created")), "{:?}", done.flash);
    let v0 = t.ok(Method::GET, &format!("/clusters/prod/services/cache/config/revisions/{rev0}"), None).await;
    let v4 = t.ok(Method::GET, &format!("/clusters/prod/services/cache/config/revisions/{rev4}"), None).await;
    assert_eq!(v4["values"], v0["values"], "the rollback's values are the old revision's");
    assert_eq!(v4["message"], json!(format!("rollback to revision {rev0}: undo the memory change")));
    // A rollback without a reason is refused next to the form.
    let why = c.post(&format!("{CONFIG}/rollback"), &[("revision", &r0), ("message", "")]).await;
    assert_eq!(why.status, 422);
    assert!(why.html.contains(&format!("id=\"rb-err-{rev0}\"")), "{}", why.html);

    // The audit log names the console user and the reason.
    let audit = t.ok(Method::GET, "/audit?object_type=service", None).await;
    let items = audit["items"].as_array().unwrap();
    let update = items
        .iter()
        .find(|a| a["action"] == "config.update" && a["summary"].as_str().unwrap().contains("more room for keys"))
        .expect("the change is audited");
    assert_eq!(update["username"], "admin");
    assert!(items.iter().any(|a| a["action"] == "config.rollback" && a["username"] == "admin"));
}

#[tokio::test]
async fn forms_without_csrf_are_refused_and_scopes_checked() {
    let t = T::start().await;
    redis(&t).await;
    let c = t.console().await;
    let n = revisions(&t).await.len();
    let p = c.post_raw(CONFIG, &[("v.maxmemory", "1"), ("u.maxmemory", "gb"), ("message", "x")]).await;
    assert_eq!(p.status, 403, "{}", p.html);
    let p =
        c.post_raw(&format!("{CONFIG}/rollback"), &[("revision", "1"), ("message", "x"), ("confirmed", "yes")]).await;
    assert_eq!(p.status, 403);
    let p = c.post_raw(&format!("{CONFIG}/rolling-restart"), &[]).await;
    assert_eq!(p.status, 403);
    assert_eq!(revisions(&t).await.len(), n);

    // Group scope: only the parameters of that role type, with the group's value.
    let g = csrf_page(&c, &format!("{CONFIG}?scope=group:primary/primary-default")).await;
    assert!(g.contains("id=\"p-port\"") && g.contains("id=\"p-maxmemory\""));
    let set = c
        .post(CONFIG, &[("scope", "group:primary/primary-default"), ("v.port", "6380"), ("message", "primary port")])
        .await;
    assert_eq!(set.status, 303, "{}", set.html);
    let g = csrf_page(&c, &format!("{CONFIG}?scope=group:primary/primary-default")).await;
    assert!(
        row(&g, "port").contains("group primary-default") && row(&g, "port").contains("(set here)"),
        "{}",
        row(&g, "port")
    );
    let cfg = t.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(cfg["overrides"]["groups"]["primary-default"]["port"], json!(6380));
    // A sensitive value is never printed back, even after setting it.
    let pw = c.post(CONFIG, &[("v.requirepass", "s3cret-pass"), ("message", "auth")]).await;
    assert_eq!(pw.status, 303, "{}", pw.html);
    let page = csrf_page(&c, CONFIG).await;
    assert!(!page.contains("s3cret-pass") && row(&page, "requirepass").contains("set (hidden)"));
    let last = revisions(&t).await[0]["revision"].as_u64().unwrap();
    let cmp = csrf_page(&c, &format!("{CONFIG}/compare?from={}&to={last}", last - 1)).await;
    assert!(!cmp.contains("s3cret-pass") && cmp.contains("********"), "{cmp}");

    // Unknown scopes are not found; nothing to change is said next to the form.
    assert_eq!(c.get(&format!("{CONFIG}?scope=role:nope")).await.status, 404);
    assert_eq!(c.get(&format!("{CONFIG}?scope=bogus")).await.status, 400);
    let none = c.post(CONFIG, &[("v.loglevel", "notice"), ("message", "noop")]).await;
    assert_eq!(none.status, 422);
    assert!(none.html.contains("nothing changed"), "{}", none.html);
}
