//! The console's home and hosts pages over HTTP, as a browser without
//! scripts uses them: sign-in redirects, filters, sorting and pagination,
//! bulk actions with their confirmation, labels, decommissioning, enrollment
//! tokens, and CSRF refusal. Each change is checked through the REST API
//! and the audit log.

mod common;

use common::{T, between};
use reqwest::Method;
use serde_json::json;

async fn fleet(t: &T, n: usize) {
    for i in 0..n {
        let rack = if i % 3 == 0 { "r1" } else { "r2" };
        let tier = if i % 2 == 0 { "web" } else { "db" };
        t.host_labelled(
            &format!("h{i:03}"),
            &format!("node-{i:03}"),
            &format!("10.0.{}.{}", i / 200, i % 200 + 1),
            &[("rack", rack), ("tier", tier)],
        )
        .await;
    }
}

fn hostnames(html: &str) -> Vec<String> {
    html.split("class=\"hostname\"").skip(1).filter_map(|s| between(s, ">", "<")).map(str::to_owned).collect()
}

#[tokio::test]
async fn signed_out_pages_lead_to_sign_in_and_back() {
    let t = T::start().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/hosts?status=lost", "/hosts/add", "/hosts/h1"] {
        let resp = client.get(t.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
        let to = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/login?next="), "{path} -> {to}");
    }
    // Signing in with next= returns there; a foreign next= is ignored.
    for (next, want) in [("/hosts?status=lost", "/hosts?status=lost"), ("//evil.example/", "/")] {
        let resp = client
            .post(t.url("/login"))
            .form(&[("username", "admin"), ("password", common::PASSWORD), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        assert_eq!(resp.headers()["location"], want);
    }
}

#[tokio::test]
async fn hosts_filter_sort_and_paginate() {
    let t = T::start().await;
    fleet(&t, 120).await;
    let c = t.console().await;

    let all = c.get("/hosts?per=25").await;
    assert_eq!(all.status, 200);
    assert!(all.html.contains("120 matching"), "{}", all.html);
    assert_eq!(hostnames(&all.html).len(), 25);
    assert_eq!(hostnames(&all.html)[0], "node-000");
    assert!(all.html.contains("page 1 of 5"), "{}", all.html);
    let next = all.html.split("\" rel=\"next\"").next().and_then(|s| s.rsplit("href=\"").next()).unwrap().to_owned();
    let second = c.get(&next).await;
    assert_eq!(hostnames(&second.html)[0], "node-025");
    assert!(second.html.contains("page 2 of 5") && second.html.contains("rel=\"prev\""));

    // A label selector with an inequality, and free text over addresses.
    let r1_not_db = c.get("/hosts?label=rack%3Dr1%2Ctier!%3Ddb&per=100").await;
    let names = hostnames(&r1_not_db.html);
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(names.iter().all(|n| n[5..].parse::<usize>().unwrap() % 6 == 0), "{names:?}");
    let by_address = c.get("/hosts?q=10.0.0.17%20").await;
    assert_eq!(hostnames(&by_address.html), vec!["node-016"]);
    let by_kind = c.get("/hosts?kind=vm").await;
    assert!(hostnames(&by_kind.html).is_empty() && by_kind.html.contains("0 matching"));

    // Sorting by a column, both ways.
    let desc = c.get("/hosts?sort=hostname&dir=desc&per=25").await;
    assert_eq!(hostnames(&desc.html)[0], "node-119");
    assert!(desc.html.contains("aria-sort=\"descending\""));

    // A wrong filter is explained and lists nothing, keeping the input.
    let bad = c.get("/hosts?label=%3Dr1").await;
    assert_eq!(bad.status, 200);
    assert!(bad.html.contains("id=\"filter-error\""), "{}", bad.html);
    assert!(bad.html.contains("value=\"=r1\""), "{}", bad.html);
    assert!(hostnames(&bad.html).is_empty());
    let kind = c.get("/hosts?kind=spaceship").await;
    assert!(kind.html.contains("invalid kind"), "{}", kind.html);
}

#[tokio::test]
async fn bulk_actions_confirm_with_the_count_then_apply_and_audit() {
    let t = T::start().await;
    fleet(&t, 12).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let c = t.console().await;

    // Selected hosts: the confirmation names how many, nothing changes yet.
    let ask =
        c.post("/hosts/bulk", &[("action", "label"), ("labels", "zone=z9"), ("host", "h001"), ("host", "h002")]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Set labels zone=z9 on 2 host(s)"), "{}", ask.html);
    assert!(ask.html.contains("node-001") && ask.html.contains("node-002"));
    assert!(t.ok(Method::GET, "/hosts/h001", None).await["labels"].get("zone").is_none());
    let done = c
        .post(
            "/hosts/bulk",
            &[("action", "label"), ("labels", "zone=z9"), ("host", "h001"), ("host", "h002"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(done.flash.as_deref(), Some("ok=labels set on 2 host(s)"));
    for h in ["h001", "h002"] {
        assert_eq!(t.ok(Method::GET, &format!("/hosts/{h}"), None).await["labels"]["zone"], "z9");
    }
    assert!(t.ok(Method::GET, "/hosts/h003", None).await["labels"].get("zone").is_none());

    // Every host the filter matches (rack=r1: h000, h003, h006, h009) into a cluster.
    let ask = c
        .post("/hosts/bulk", &[("action", "cluster"), ("cluster", "prod"), ("scope", "filtered"), ("label", "rack=r1")])
        .await;
    assert!(ask.html.contains("Add 4 host(s) to cluster prod"), "{}", ask.html);
    let mut confirm: Vec<(String, String)> = ask
        .html
        .split("<input type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|s| Some((s.split('"').next()?.to_owned(), between(s, "value=\"", "\"")?.to_owned())))
        .filter(|(k, _)| k != "_csrf")
        .collect();
    confirm.retain(|(k, _)| !k.is_empty());
    let fields: Vec<(&str, &str)> = confirm.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = c.post("/hosts/bulk", &fields).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert!(done.flash.as_deref().unwrap().starts_with("ok=added 4 host(s) to cluster prod"), "{:?}", done.flash);
    let members = t.ok(Method::GET, "/clusters/prod/hosts", None).await;
    assert_eq!(members["items"], json!(["h000", "h003", "h006", "h009"]));

    // A refused change is reported, not half-applied.
    let bad = c.post("/hosts/bulk", &[("action", "label"), ("labels", "bad key=1"), ("host", "h001")]).await;
    assert_eq!(bad.status, 303);
    assert!(bad.flash.as_deref().unwrap().starts_with("error="), "{:?}", bad.flash);

    // Decommission asks first, naming the count and that it is final.
    let ask = c.post("/hosts/bulk", &[("action", "decommission"), ("host", "h011")]).await;
    assert!(ask.html.contains("Decommission 1 host(s)") && ask.html.contains("cannot be undone"), "{}", ask.html);
    assert_eq!(t.ok(Method::GET, "/hosts/h011", None).await["status"], "healthy");
    c.post("/hosts/bulk", &[("action", "decommission"), ("host", "h011"), ("confirmed", "yes")]).await;
    assert_eq!(t.ok(Method::GET, "/hosts/h011", None).await["status"], "decommissioned");

    // Without the CSRF token nothing happens.
    let forged = c.post_raw("/hosts/bulk", &[("action", "decommission"), ("host", "h010"), ("confirmed", "yes")]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.html.contains("security token"));
    let forged = c
        .post_raw(
            "/hosts/bulk",
            &[("_csrf", "0000"), ("action", "decommission"), ("host", "h010"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(t.ok(Method::GET, "/hosts/h010", None).await["status"], "healthy");

    let audit = t.ok(Method::GET, "/audit?user=admin&limit=100", None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "host.update_labels").count(), 2, "{actions:?}");
    assert!(actions.contains(&"cluster.hosts.add") && actions.contains(&"host.decommission"), "{actions:?}");
}

#[tokio::test]
async fn host_page_edits_labels_and_decommissions_after_confirmation() {
    let t = T::start().await;
    t.host_labelled("h1", "alpha", "10.1.0.1", &[("rack", "r1")]).await;
    let c = t.console().await;

    let page = c.get("/hosts/h1").await;
    assert_eq!(page.status, 200);
    for want in ["alpha", "10.1.0.1", "Debian", "rack=r1", "Charts appear here once the host"] {
        assert!(page.html.contains(want), "{want}: {}", page.html);
    }
    for range in ["1h", "24h", "7d"] {
        let p = c.get(&format!("/hosts/h1?range={range}")).await;
        assert!(p.html.contains(&format!("last {range}")), "{range}");
    }

    let set = c.post("/hosts/h1/labels", &[("key", "tier"), ("value", "web")]).await;
    assert_eq!(set.status, 303);
    assert_eq!(set.location.as_deref(), Some("/hosts/h1"));
    assert_eq!(set.flash.as_deref(), Some("ok=labels are now rack=r1, tier=web"));
    let removed = c.post("/hosts/h1/labels", &[("remove", "rack")]).await;
    assert_eq!(removed.flash.as_deref(), Some("ok=labels are now tier=web"));
    let bad = c.post("/hosts/h1/labels", &[("key", "Bad Key"), ("value", "x")]).await;
    assert!(bad.flash.as_deref().unwrap().starts_with("error="), "{:?}", bad.flash);
    assert_eq!(t.ok(Method::GET, "/hosts/h1", None).await["labels"], json!({"tier": "web"}));

    // The flash is shown once, then cleared.
    let resp = reqwest::Client::new()
        .get(t.url("/hosts/h1"))
        .header("cookie", format!("{}; drover_flash=ok=labels%20saved", c.cookie()))
        .send()
        .await
        .unwrap();
    let clears = resp.headers().get_all("set-cookie").iter().any(|v| v.to_str().unwrap().starts_with("drover_flash=;"));
    assert!(clears);
    assert!(resp.text().await.unwrap().contains("labels saved"));

    let ask = c.post("/hosts/h1/decommission", &[]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Decommission host alpha") && ask.html.contains("id=\"confirm\""), "{}", ask.html);
    assert_eq!(t.ok(Method::GET, "/hosts/h1", None).await["status"], "healthy");
    let done = c.post("/hosts/h1/decommission", &[("confirmed", "yes")]).await;
    assert_eq!(done.status, 303);
    assert_eq!(t.ok(Method::GET, "/hosts/h1", None).await["status"], "decommissioned");
    let after = c.get("/hosts/h1").await;
    assert!(!after.html.contains("id=\"decommission\"") && !after.html.contains("id=\"label-set\""));

    let missing = c.get("/hosts/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.html.contains("host nope not found"));

    let audit = t.ok(Method::GET, "/audit?object_id=h1", None).await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.iter().all(|e| e["username"] == "admin"));
}

#[tokio::test]
async fn enrollment_tokens_are_made_shown_once_and_revoked() {
    let t = T::start().await;
    let c = t.console().await;
    let bad = c.post("/hosts/add/token", &[("ttl_hours", "0"), ("max_uses", "1"), ("labels", "")]).await;
    assert_eq!(bad.status, 200);
    assert!(bad.html.contains("id=\"token-error\""), "{}", bad.html);
    assert!(t.ok(Method::GET, "/enrollment-tokens", None).await["items"].as_array().unwrap().is_empty());

    let made = c.post("/hosts/add/token", &[("ttl_hours", "2"), ("max_uses", "3"), ("labels", "rack=r4")]).await;
    assert_eq!(made.status, 200);
    let command = between(&made.html, "<pre class=\"copy\" id=\"agent-command\">", "</pre>").unwrap();
    let port = t.handle.grpc_addr.port();
    assert!(command.starts_with(&format!("drover-agent --manager https://127.0.0.1:{port} --token ")), "{command}");
    assert!(made.html.contains("DROVER_TOKEN=") && made.html.contains("FROM drover/agent"));
    let tokens = t.ok(Method::GET, "/enrollment-tokens", None).await;
    let token = &tokens["items"][0];
    assert_eq!(token["max_uses"], 3);
    assert_eq!(token["labels"], json!({"rack": "r4"}));
    let id = token["id"].as_str().unwrap();
    // The secret is never shown again.
    let later = c.get("/hosts/add").await;
    assert!(!later.html.contains("agent-command") && later.html.contains(id));

    let ask = c.post(&format!("/hosts/add/tokens/{id}/revoke"), &[]).await;
    assert!(ask.html.contains(&format!("Revoke enrollment token {id}")), "{}", ask.html);
    assert_eq!(t.ok(Method::GET, "/enrollment-tokens", None).await["items"][0]["state"], "active");
    let revoked = c.post(&format!("/hosts/add/tokens/{id}/revoke"), &[("confirmed", "yes")]).await;
    assert_eq!(revoked.status, 303);
    assert_eq!(t.ok(Method::GET, "/enrollment-tokens", None).await["items"][0]["state"], "revoked");

    // Many tokens: every active one up to 100, a few recent others, the rest counted.
    for _ in 0..103 {
        t.ok(Method::POST, "/enrollment-tokens", Some(json!({"ttl_seconds": 600}))).await;
    }
    let page = c.get("/hosts/add").await;
    let rows = page.html.split("<tr><td><code>").count() - 1;
    assert_eq!(rows, 101, "100 active and the revoked one");
    assert!(page.html.contains("3 more tokens (the oldest) are not listed"), "{}", page.html);
}

#[tokio::test]
async fn home_counts_link_to_what_they_count() {
    let t = T::start().await;
    fleet(&t, 3).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let c = t.console().await;
    let home = c.get("/").await;
    assert_eq!(home.status, 200, "{}", home.html);
    assert!(home.html.contains("href=\"/hosts?status=healthy\"><b>3</b>"), "{}", home.html);
    assert!(home.html.contains("href=\"/clusters/prod\""), "{}", home.html);
    assert!(home.html.contains("No services yet"));
}
