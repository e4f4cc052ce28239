//! The console's commands, audit, events, account and parcels pages over
//! HTTP, as a browser without scripts uses them: filters and pagination
//! checked against the REST API, a command's steps live until it ends, abort
//! with confirmation, password change (the session continues under a new
//! cookie), API tokens shown once and usable as Bearer, parcel upload by form,
//! parcel commands, and CSRF refusal.

mod common;

use std::time::Duration;

use common::{Console, PASSWORD, T, between};
use drover_parcels::archive::build_archive;
use drover_parcels::meta::{ParcelMeta, Scripts};
use reqwest::Method;
use serde_json::{Value, json};

async fn redis_setup(t: &T) {
    t.host("h1", "node-1", "10.0.0.1").await;
    t.host("h2", "node-2", "10.0.0.2").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": "primary", "host_id": "h1"})))
        .await;
    t.ok(Method::POST, "/clusters/prod/services/cache/roles", Some(json!({"role_type": "replica", "host_id": "h2"})))
        .await;
}

/// Waits (up to 30 s) until `f` answers something.
async fn eventually<F, Fut, R>(what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the rows carrying `attr="..."` in `html`.
fn ids(html: &str, attr: &str) -> Vec<String> {
    let start = format!("{attr}=\"");
    html.split(start.as_str()).skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned).collect()
}

/// The `href` of the link with `rel="next"`.
fn next_link(html: &str) -> Option<String> {
    let before = html.split("\" rel=\"next\"").next().filter(|s| s.len() < html.len())?;
    before.rsplit("href=\"").next().map(str::to_owned)
}

#[tokio::test]
async fn commands_list_filters_and_command_page_is_live_until_ended() {
    let t = T::start().await;
    redis_setup(&t).await;
    let c = t.console().await;

    // Without agents a start waits on each step: it stays running.
    let started = t.ok(Method::POST, "/clusters/prod/services/cache/commands", Some(json!({"name": "start"}))).await;
    let id = started["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // A stop is refused by nothing and also waits: two commands.
    let stop = t.ok(Method::POST, "/clusters/prod/services/cache/commands", Some(json!({"name": "stop"}))).await;
    let stop_id = stop["id"].as_str().unwrap().to_owned();
    t.ok(Method::POST, &format!("/commands/{stop_id}/abort"), None).await;
    eventually("the stop to end", || async {
        (t.ok(Method::GET, &format!("/commands/{stop_id}"), None).await["state"] == "aborted").then_some(())
    })
    .await;

    let all = c.get("/commands").await;
    assert_eq!(all.status, 200);
    assert_eq!(ids(&all.html, "data-command-id"), vec![stop_id.clone(), id.clone()], "newest first");
    assert!(all.html.contains(&format!("href=\"/commands/{id}\"")), "{}", all.html);
    assert!(all.html.contains("href=\"/clusters/prod/services/cache\""), "{}", all.html);
    // A running command in the list: the list refreshes itself.
    assert!(all.html.contains("id=\"commands-live\" data-live=\"2000\">"), "{}", all.html);

    let running = c.get("/commands?state=running").await;
    assert_eq!(ids(&running.html, "data-command-id"), vec![id.clone()]);
    let aborted = c.get("/commands?state=aborted").await;
    assert_eq!(ids(&aborted.html, "data-command-id"), vec![stop_id.clone()]);
    assert!(aborted.html.contains("data-live-done"), "nothing running: no refresh");
    assert!(ids(&c.get("/commands?user=someone-else").await.html, "data-command-id").is_empty());
    assert_eq!(ids(&c.get("/commands?user=admin&cluster=prod").await.html, "data-command-id").len(), 2);
    let bad = c.get("/commands?state=exploded").await;
    assert!(bad.html.contains("invalid command state"), "{}", bad.html);
    assert!(next_link(&c.get("/commands?per=25").await.html).is_none(), "one page");

    // The command page: steps with their roles, progress, live while running.
    let page = c.get(&format!("/commands/{id}")).await;
    assert_eq!(page.status, 200);
    let rest = t.ok(Method::GET, &format!("/commands/{id}"), None).await;
    let steps = rest["steps"].as_array().unwrap();
    assert_eq!(ids(&page.html, "data-seq").len(), steps.len());
    for s in steps {
        assert!(page.html.contains(s["description"].as_str().unwrap()), "{s}");
    }
    assert!(page.html.contains("href=\"/clusters/prod/services/cache/roles/cache-primary-1\""), "{}", page.html);
    assert!(page.html.contains(&format!("0 of {} steps done", steps.len())), "{}", page.html);
    assert!(page.html.contains("id=\"command-live\" data-live=\"1500\">"), "{}", page.html);
    assert!(page.html.contains("id=\"abort\""));

    // Abort: confirmed first, without CSRF refused.
    let refused = c.post_raw(&format!("/commands/{id}/abort"), &[("confirmed", "yes")]).await;
    assert_eq!(refused.status, 403);
    let confirm = c.post(&format!("/commands/{id}/abort"), &[]).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.html.contains("Abort command start of prod/cache"), "{}", confirm.html);
    assert_eq!(t.ok(Method::GET, &format!("/commands/{id}"), None).await["state"], "running");
    let done = c.post(&format!("/commands/{id}/abort"), &[("confirmed", "yes")]).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location.as_deref(), Some(format!("/commands/{id}").as_str()));
    assert!(done.flash.as_deref().unwrap().contains("abort requested"), "{:?}", done.flash);
    eventually("the start to end", || async {
        (t.ok(Method::GET, &format!("/commands/{id}"), None).await["state"] == "aborted").then_some(())
    })
    .await;
    let ended = c.get(&format!("/commands/{id}")).await;
    assert!(ended.html.contains("data-live=\"1500\" data-live-done"), "{}", ended.html);
    assert!(ended.html.contains("id=\"command-state\">aborted<"), "{}", ended.html);
    assert!(!ended.html.contains("id=\"abort\""));
    // Aborting again: the domain's refusal as a flash.
    let again = c.post(&format!("/commands/{id}/abort"), &[("confirmed", "yes")]).await;
    assert!(again.flash.as_deref().unwrap().contains("already aborted"), "{:?}", again.flash);

    let audit = t.ok(Method::GET, "/audit?object_type=command", None).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["object_id"] == id.as_str() && e["action"] == "command.abort"),
        "{audit}"
    );
    assert_eq!(c.get("/commands/nope").await.status, 404);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn audit_filters_and_paginates_and_events_render() {
    let t = T::start().await;
    t.host("h1", "node-1", "10.0.0.1").await;
    t.host("h2", "node-2", "10.0.0.2").await;
    for i in 0..30 {
        t.ok(Method::PATCH, "/hosts/h1", Some(json!({"labels": {"n": i.to_string()}}))).await;
    }
    t.ok(Method::PATCH, "/hosts/h2", Some(json!({"labels": {"tier": "db"}}))).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let c = t.console().await;

    // REST's answer is the reference.
    let rest = t.ok(Method::GET, "/audit?object_type=host&object_id=h1&limit=1000", None).await;
    let rest_ids: Vec<String> = rest["items"].as_array().unwrap().iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(rest_ids.len(), 30, "{rest}");
    let action = rest["items"][0]["action"].as_str().unwrap().to_owned();

    let p1 = c.get(&format!("/audit?action={action}&object_type=host&object_id=h1&per=25")).await;
    assert_eq!(p1.status, 200);
    assert_eq!(ids(&p1.html, "data-audit-id"), rest_ids[..25].to_vec());
    assert!(p1.html.contains("href=\"/hosts/h1\""), "objects link to their page");
    let next = next_link(&p1.html).expect("a next page");
    let p2 = c.get(&next).await;
    assert_eq!(ids(&p2.html, "data-audit-id"), rest_ids[25..].to_vec());
    assert!(next_link(&p2.html).is_none());
    assert!(p2.html.contains("rel=\"prev\""));

    // By action: the cluster's creation only; by user: nobody else.
    let created = c.get("/audit?action=cluster.create").await;
    let entries = ids(&created.html, "data-audit-id");
    assert_eq!(entries.len(), 1, "{}", created.html);
    assert!(created.html.contains("href=\"/clusters/prod\""));
    assert!(ids(&c.get("/audit?user=nobody").await.html, "data-audit-id").is_empty());
    let by_admin = c.get("/audit?user=admin&per=100").await;
    assert!(ids(&by_admin.html, "data-audit-id").len() >= 33, "labels x31, cluster, login");
    // The time range: everything is after 2020, nothing before.
    assert!(ids(&c.get("/audit?to=2020-01-01T00:00").await.html, "data-audit-id").is_empty());
    assert_eq!(
        ids(&c.get("/audit?from=2020-01-01T00:00:00Z&action=cluster.create").await.html, "data-audit-id"),
        entries
    );
    let bad = c.get("/audit?from=yesterday").await;
    assert_eq!(bad.status, 200);
    assert!(bad.html.replace("&quot;", "\"").contains("from \"yesterday\" is not a time"), "{}", bad.html);
    assert!(bad.html.contains("type=\"text\" name=\"from\" id=\"f-from\" value=\"yesterday\""), "the input is kept");
    let local = c.get("/audit?from=2020-01-01T00:00").await;
    assert!(local.html.contains("type=\"datetime-local\" name=\"from\" id=\"f-from\" value=\"2020-01-01T00:00\""));
    // Each entry offers its object as a filter.
    assert!(p1.html.contains("href=\"/audit?object_type=host&object_id=h1\""), "{}", p1.html);

    // Events: the hosts' enrollments, filtered by object.
    // (The registry writes events in batches.)
    let rest = eventually("the enrollment events", || async {
        let rest = t.ok(Method::GET, "/events", None).await;
        (rest["items"].as_array().unwrap().len() >= 2).then_some(rest)
    })
    .await;
    let events = c.get("/events").await;
    assert_eq!(events.status, 200);
    assert_eq!(ids(&events.html, "data-event-id").len(), rest["items"].as_array().unwrap().len());
    assert!(events.html.contains("host node-1 enrolled"), "{}", events.html);
    let h2 = c.get("/events?object_type=host&object_id=h2&severity=info&kind=host_enrolled").await;
    assert_eq!(ids(&h2.html, "data-event-id").len(), 1, "{}", h2.html);
    assert!(h2.html.contains("host node-2 enrolled"));
    assert!(ids(&c.get("/events?severity=critical").await.html, "data-event-id").is_empty());
    assert!(ids(&c.get("/events?to=2020-01-01T00:00").await.html, "data-event-id").is_empty());
    t.handle.shutdown().await;
}

/// Posts a console form with a given session cookie, answering the status,
/// the new session cookie (if any) and the body.
async fn post_with(t: &T, cookie: &str, path: &str, fields: &[(&str, &str)]) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = client.post(t.url(path)).header("cookie", cookie).form(fields).send().await.unwrap();
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("drover_session=") && !v.starts_with("drover_session=;"))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let flash = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("drover_flash=ok="));
    assert!(status != 303 || flash, "a redirect after a change carries a flash");
    (status, session, resp.text().await.unwrap())
}

async fn get_with(t: &T, cookie: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = client.get(t.url(path)).header("cookie", cookie).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn rest_status(t: &T, user: &str, password: &str) -> u16 {
    let resp = t.client.get(t.url("/api/v1/users/me")).basic_auth(user, Some(password)).send().await.unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn account_changes_the_password_and_keeps_the_session() {
    let t = T::start().await;
    let c = t.console().await;
    let page = c.get("/account").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("id=\"account-user\">admin<") && page.html.contains("id=\"account-role\">admin<"));

    let new = "a-brand-new-password-1";
    let wrong = c.post("/account/password", &[("current", "not-it"), ("new", new), ("repeat", new)]).await;
    assert_eq!(wrong.status, 200);
    assert!(wrong.html.contains("id=\"password-error\">the current password is wrong<"), "{}", wrong.html);
    let differ = c.post("/account/password", &[("current", PASSWORD), ("new", new), ("repeat", "other")]).await;
    assert!(differ.html.contains("differ"), "{}", differ.html);
    let short = c.post("/account/password", &[("current", PASSWORD), ("new", "short"), ("repeat", "short")]).await;
    assert!(short.html.contains("at least 12 characters"), "{}", short.html);
    let refused = c.post_raw("/account/password", &[("current", PASSWORD), ("new", new), ("repeat", new)]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(rest_status(&t, "admin", PASSWORD).await, 200, "nothing changed yet");

    // A second console session of the same user ends with the change.
    let other = t.console().await;
    let (status, cookie, _) = post_with(
        &t,
        c.cookie(),
        "/account/password",
        &[("_csrf", c.csrf.as_str()), ("current", PASSWORD), ("new", new), ("repeat", new)],
    )
    .await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a new session cookie");
    assert_ne!(cookie, c.cookie());
    assert_eq!(rest_status(&t, "admin", new).await, 200);
    assert_eq!(rest_status(&t, "admin", PASSWORD).await, 401);
    let (status, html) = get_with(&t, &cookie, "/account").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"account-user\">admin<"), "{html}");
    assert_eq!(get_with(&t, c.cookie(), "/account").await.0, 303, "the old session ended");
    assert_eq!(other.get("/account").await.status, 303, "the other session ended");
    let audit = t
        .client
        .get(t.url("/api/v1/audit?object_type=user"))
        .basic_auth("admin", Some(new))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "user.change_password"), "{audit}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn api_tokens_are_created_shown_once_and_revoked() {
    let t = T::start().await;
    let c = t.console().await;
    let bad = c.post("/account/tokens", &[("name", "ci"), ("ttl_days", "-1")]).await;
    assert!(bad.html.contains("id=\"token-error\""), "{}", bad.html);
    assert!(bad.html.contains("value=\"ci\"") && bad.html.contains("value=\"-1\""), "the input is kept");
    let blank = c.post("/account/tokens", &[("name", "  ")]).await;
    assert!(blank.html.contains("name must be 1-100 characters"), "{}", blank.html);
    assert_eq!(c.post_raw("/account/tokens", &[("name", "ci")]).await.status, 403);

    let created = c.post("/account/tokens", &[("name", "ci"), ("ttl_days", "30")]).await;
    assert_eq!(created.status, 200);
    assert!(created.flash.is_none(), "the token never goes into a cookie");
    let token = between(&created.html, "id=\"new-token\" value=\"", "\"").expect("the token on the page").to_owned();
    let bearer = |tok: String| {
        let t = &t;
        async move { t.client.get(t.url("/api/v1/users/me")).bearer_auth(tok).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(bearer(token.clone()).await, 200);
    let listed = t.ok(Method::GET, "/api-tokens", None).await;
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"][0]["name"], "ci");
    assert!(listed["items"][0]["expires_at"].is_string());
    let page = c.get("/account").await;
    assert!(page.html.contains(&format!("data-token-id=\"{id}\"")));
    assert!(!page.html.contains(&token), "shown once only");

    let confirm = c.post(&format!("/account/tokens/{id}/revoke"), &[]).await;
    assert!(confirm.html.replace("&quot;", "\"").contains("Revoke API token \"ci\""), "{}", confirm.html);
    assert_eq!(bearer(token.clone()).await, 200, "not yet");
    let done = c.post(&format!("/account/tokens/{id}/revoke"), &[("confirmed", "yes")]).await;
    assert_eq!(done.location.as_deref(), Some("/account"));
    assert_eq!(bearer(token).await, 401);
    assert!(t.ok(Method::GET, "/api-tokens", None).await["items"].as_array().unwrap().is_empty());
    let audit = t.ok(Method::GET, &format!("/audit?object_type=api_token&object_id={id}"), None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["api_token.revoke", "api_token.create"]);
    t.handle.shutdown().await;
}

/// Builds a small real parcel; returns (file name, bytes, sha256).
fn parcel(version: &str, padding: usize) -> (String, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(staging.join("bin")).unwrap();
    std::fs::create_dir_all(staging.join("meta")).unwrap();
    std::fs::write(staging.join("bin/hello"), format!("#!/bin/sh\necho hello {version}\n")).unwrap();
    std::fs::write(staging.join("meta/hello_env.sh"), "export HELLO_HOME=\"$PARCELS_ROOT/$PARCEL_DIRNAME\"\n").unwrap();
    // Incompressible data of `padding` bytes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..padding)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(staging.join("bin/data"), data).unwrap();
    let meta = ParcelMeta {
        schema_version: 1,
        name: "hello".into(),
        version: version.into(),
        distro: "bookworm".into(),
        depends: vec![],
        conflicts: vec![],
        provides: vec![],
        components: vec![],
        scripts: Scripts { defines: "hello_env.sh".into() },
    };
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let built = build_archive(&staging, &meta, &out).unwrap();
    let name = built.path.file_name().unwrap().to_string_lossy().into_owned();
    (name, std::fs::read(&built.path).unwrap(), built.sha256)
}

/// Sends the upload form as a browser does (multipart/form-data).
async fn upload_form(
    t: &T,
    c: &Console,
    csrf: &str,
    sha256: &str,
    file_name: &str,
    bytes: &[u8],
) -> (u16, String, String) {
    let boundary = "----drover-test-boundary-7MA4YWxk";
    let mut body = Vec::new();
    for (name, value) in [("_csrf", csrf), ("sha256", sha256)] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = client
        .post(t.url("/parcels/upload"))
        .header("cookie", c.cookie())
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, location, resp.text().await.unwrap().replace("&#x3D;", "="))
}

#[tokio::test]
async fn parcels_are_uploaded_listed_and_distributed() {
    let t = T::start().await;
    let c = t.console().await;
    let empty = c.get("/parcels").await;
    assert_eq!(empty.status, 200);
    assert!(empty.html.contains("id=\"no-parcels\""), "{}", empty.html);

    // By form: a wrong token, a wrong hash, then without the sha256 (computed
    // here) and larger than the console's form limit of 1 MiB: streamed.
    let (name, bytes, sha) = parcel("1.0-1", 3 << 20);
    assert!(bytes.len() > 3 << 20);
    let (status, _, html) = upload_form(&t, &c, "wrong-token", "", &name, &bytes).await;
    assert_eq!(status, 403, "{html}");
    let (status, location, html) = upload_form(&t, &c, &c.csrf, &"0".repeat(64), &name, &bytes).await;
    assert_eq!(status, 200, "a wrong hash is shown by the form: {html}");
    assert!(html.contains("id=\"upload-error\"") && html.contains("sha256 mismatch"), "{html}");
    assert!(location.is_empty());
    let (status, location, html) = upload_form(&t, &c, &c.csrf, "", &name, &bytes).await;
    assert_eq!((status, location.as_str()), (303, "/parcels"), "{html}");
    // Not a parcel: refused after reading it all.
    let mut cut = bytes[..bytes.len() / 2].to_vec();
    cut.extend_from_slice(b"\r\n--");
    let (status, _, html) = upload_form(&t, &c, &c.csrf, "", "hello-2.0-1-bookworm.parcel", &cut).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("is not a valid parcel"), "{html}");
    assert!(!html.contains("interrupted"), "{html}");
    // And by REST.
    let (name2, bytes2, sha2) = parcel("1.1-1", 10);
    let resp = t
        .client
        .post(t.url("/api/v1/parcels"))
        .query(&[("file_name", name2.as_str()), ("sha256", sha2.as_str())])
        .basic_auth("admin", Some(PASSWORD))
        .body(bytes2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let rest = t.ok(Method::GET, "/parcels", None).await;
    let names: Vec<&str> =
        rest["items"].as_array().unwrap().iter().map(|p| p["parcel_name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{rest}");
    let page = c.get("/parcels").await;
    let listed = ids(&page.html, "data-parcel");
    assert_eq!(listed, names, "{}", page.html);
    assert!(page.html.contains(&sha) && page.html.contains(&sha2));
    let audit = t.ok(Method::GET, "/audit?object_type=parcel", None).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");

    // A cluster with a host: distribute from the page leads to the command.
    t.host("h1", "node-1", "10.0.0.1").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1"]}))).await;
    assert_eq!(
        c.post_raw(
            "/parcels/command",
            &[("cluster", "prod"), ("name", "hello"), ("version", "1.0-1"), ("action", "distribute")]
        )
        .await
        .status,
        403
    );
    let go = c
        .post(
            "/parcels/command",
            &[("cluster", "prod"), ("name", "hello"), ("version", "1.0-1"), ("action", "distribute")],
        )
        .await;
    assert_eq!(go.status, 303, "{}", go.html);
    let to = go.location.unwrap();
    assert!(to.starts_with("/commands/"), "{to}");
    let cmd = t.ok(Method::GET, &to, None).await;
    assert_eq!(cmd["name"], "parcel-distribute", "{cmd}");
    let cmd_page = c.get(&to).await;
    assert!(cmd_page.html.contains("href=\"/hosts/h1\">node-1<"), "{}", cmd_page.html);
    // The command records the cluster's intent when its task runs, after the redirect.
    let section = eventually("the parcels page to show hello distributed to prod", || async {
        let page = c.get("/parcels").await;
        let section = between(&page.html, "data-cluster=\"prod\"", "</section>")?.to_owned();
        (section.contains("hello 1.0-1") && section.contains(">distributed<")).then_some(section)
    })
    .await;
    assert!(section.contains("href=\"/hosts/h1\">node-1</a>: <b>available</b>"), "{section}");
    // Remove is confirmed first; a refusal comes back as a flash.
    let confirm = c
        .post("/parcels/command", &[("cluster", "prod"), ("name", "hello"), ("version", "1.0-1"), ("action", "remove")])
        .await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.html.contains("Remove hello 1.0-1 from the 1 host(s) of cluster prod"), "{}", confirm.html);
    let refused = c
        .post("/parcels/command", &[("cluster", "prod"), ("name", "hello"), ("version", "9.9"), ("action", "activate")])
        .await;
    assert_eq!(refused.location.as_deref(), Some("/parcels"));
    assert!(refused.flash.as_deref().unwrap().contains("not distributed"), "{:?}", refused.flash);
    t.handle.shutdown().await;
}
