//! The console's `/hosts/add/ssh` and `/hosts/add/docker` pages over HTTP:
//! form errors by their field with the input kept and secrets never shown
//! again, a bootstrap against an address where nothing listens followed to
//! its failure host by host, a Docker engine that is not there, teardown
//! behind a confirmation, CSRF refusals and the audit log. No SSH server and
//! no Docker engine are needed (tests/tests/ssh_bootstrap.rs and
//! docker_provider.rs use real ones).

use std::time::{Duration, Instant};

use drover_manager::model::{Labels, now_millis};
use drover_manager::store::ProviderHostRec;
use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::{Console, T};

/// Form fields as sent.
type Fields = Vec<(&'static str, &'static str)>;

const SECRET: &str = "hunter2-never-shown";

/// A manager that can plan bootstraps without a real agent build: this test
/// binary stands in for the agent binary (any Linux executable of a known
/// architecture will do, nothing runs it), and the agents' manager URL names
/// 127.0.0.1, which the manager's certificate always names. Its Docker
/// socket does not exist.
async fn start() -> T {
    T::start_configured(
        |_| {},
        |c| {
            c.agent_binary = Some(std::env::current_exe().unwrap());
            c.agent_manager_url = Some("https://127.0.0.1:7443".into());
            c.docker_socket = c.data_dir.join("no-docker.sock");
        },
    )
    .await
}

/// The text of the element with `id` (up to its first closing tag), with
/// the quotes handlebars escapes decoded.
fn by_id(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find("</").map(|e| start + e).unwrap_or(rest.len());
    Some(rest[start..end].replace("&quot;", "\""))
}

fn value_of<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + 7;
    rest[v..].split('"').next()
}

async fn audit(t: &T, query: &str) -> Vec<Value> {
    let v = t.ok(Method::GET, &format!("/audit?{query}"), None).await;
    v["items"].as_array().cloned().unwrap_or_default()
}

/// A free port on 127.0.0.1: bound, then let go, so nothing listens there.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn ssh_post(c: &Console, fields: &[(&str, &str)]) -> common::Page {
    c.post("/hosts/add/ssh", fields).await
}

#[tokio::test]
async fn ssh_form_errors_are_shown_by_their_field_and_start_nothing() {
    let t = start().await;
    let c = t.console().await;

    let page = c.get("/hosts/add").await;
    assert!(page.html.contains("href=\"/hosts/add/ssh\"") && page.html.contains("href=\"/hosts/add/docker\""));
    let page = c.get("/hosts/add/ssh").await;
    assert_eq!(page.status, 200, "{}", page.html);
    for field in [
        "ssh-addresses",
        "ssh-port",
        "ssh-user",
        "ssh-key",
        "ssh-password",
        "ssh-sudo",
        "ssh-policy",
        "ssh-fingerprints",
        "ssh-labels",
    ] {
        assert!(page.html.contains(&format!("<label for=\"{field}\"")), "no label for {field}");
    }
    assert_eq!(value_of(&page.html, "ssh-port"), Some("22"));

    let base = [
        ("addresses", "10.0.0.5\n10.0.0.6:2222"),
        ("port", "22"),
        ("user", "deploy"),
        ("password", SECRET),
        ("sudo", "yes"),
        ("host_key_policy", "accept-new"),
        ("labels", "rack=r7"),
    ];
    let with = |k: &'static str, v: &'static str| -> Vec<(&'static str, &'static str)> {
        base.iter().map(|(bk, bv)| if *bk == k { (*bk, v) } else { (*bk, *bv) }).collect()
    };
    let cases: Vec<(Fields, &str, &str)> = vec![
        (with("addresses", "10.0.0.5 h;rm"), "err-addresses", "invalid address \"h;rm\""),
        (with("addresses", ""), "err-addresses", "addresses must name at least one host"),
        (with("user", ""), "err-user", "invalid user \"\""),
        (with("port", "99999"), "err-port", "the port must be a number from 1 to 65535, got \"99999\""),
        (with("port", "ssh"), "err-port", "got \"ssh\""),
        (with("password", ""), "err-auth", "auth needs private_key or password"),
        (with("labels", "rack"), "err-labels", "label \"rack\" is not key=value"),
        (with("labels", "bad key=x"), "err-labels", "invalid label"),
    ];
    for (fields, id, want) in cases {
        let page = ssh_post(&c, &fields).await;
        assert_eq!(page.status, 200, "{fields:?}: {}", page.html);
        let err = by_id(&page.html, id).unwrap_or_else(|| panic!("{fields:?}: no {id} in {}", page.html));
        assert!(err.contains(want), "{fields:?}: {err}");
        assert!(by_id(&page.html, "ssh-errors").unwrap_or_default().contains("Not started"), "{fields:?}");
        // The other input is kept; the secret is not.
        let sent = |k: &str| fields.iter().find(|(fk, _)| *fk == k).map(|(_, v)| *v).unwrap();
        assert_eq!(value_of(&page.html, "ssh-user"), Some(sent("user")));
        assert_eq!(value_of(&page.html, "ssh-labels"), Some(sent("labels")));
        assert_eq!(by_id(&page.html, "ssh-addresses").as_deref(), Some(sent("addresses")));
        assert!(page.html.contains("value=\"accept-new\" selected"), "policy kept");
        assert!(page.html.contains("value=\"yes\" selected"), "sudo kept");
        assert!(!page.html.contains(SECRET), "{fields:?}: the password came back into the page");
        assert!(page.flash.is_none());
    }
    // A private key that is not one: the error is by the key, its text is not shown again.
    let mut fields = with("password", "");
    fields.push((
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-hunter2\n-----END OPENSSH PRIVATE KEY-----",
    ));
    let page = ssh_post(&c, &fields).await;
    assert!(by_id(&page.html, "err-auth").unwrap_or_default().contains("cannot read the private key"), "{}", page.html);
    assert!(!page.html.contains("not-a-key-hunter2"));

    // Nothing started, nothing audited; a form without its CSRF token is refused.
    assert_eq!(audit(&t, "object_type=command").await, Vec::<Value>::new());
    let page = c.post_raw("/hosts/add/ssh", &base).await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert_eq!(audit(&t, "object_type=command").await, Vec::<Value>::new());
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_bootstrap_where_nothing_listens_shows_each_host_failing_at_connect() {
    let t = start().await;
    let c = t.console().await;
    let (p1, p2) = (free_port(), free_port());
    let addresses = format!("127.0.0.1:{p1}, 127.0.0.1:{p2}");
    let page = ssh_post(
        &c,
        &[
            ("addresses", &addresses),
            ("user", "deploy"),
            ("password", SECRET),
            ("host_key_policy", "accept-new"),
            ("labels", "rack=r7"),
        ],
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.html);
    let to = page.location.clone().unwrap();
    assert!(to.starts_with("/hosts/add/ssh/"), "{to}");
    assert_eq!(page.flash.as_deref(), Some("ok=bootstrap of 2 host(s) started"));
    let id = to.trim_start_matches("/hosts/add/ssh/").to_owned();

    // The progress view is live until the command ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = c.get(&to).await;
        assert_eq!(page.status, 200, "{}", page.html);
        assert!(page.html.contains("id=\"bootstrap-live\" data-live=\"2000\""));
        if page.html.contains("data-live-done") {
            break page;
        }
        assert!(Instant::now() < deadline, "the bootstrap did not end: {}", page.html);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let html = &page.html;
    assert_eq!(by_id(html, "bootstrap-state").as_deref(), Some("failed"), "{html}");
    assert!(html.contains(&format!("href=\"/commands/{id}\"")));
    assert!(html.contains("deploy with password, sudo"), "{html}");
    assert!(html.contains("<span class=\"label\">rack=r7</span>"));
    for port in [p1, p2] {
        let target = format!("deploy@127.0.0.1:{port}");
        let row_at = html.find(&format!("<td>{target}</td>")).unwrap_or_else(|| panic!("no row for {target}: {html}"));
        let row = &html[row_at..html[row_at..].find("</tr>").map(|e| row_at + e).unwrap()];
        assert!(row.contains("<span class=\"badge step-failed\">failed</span>"), "{row}");
        assert!(row.contains("<td class=\"stage\">connect</td>"), "{row}");
        assert!(row.contains("<li class=\"stage-failed\">connect <small>(failed)</small></li>"), "{row}");
        assert!(row.contains("<li>detect</li>"), "{row}");
        assert!(row.contains(&format!("127.0.0.1:{port}: connect failed:")), "{row}");
        assert!(row.to_lowercase().contains("refused"), "the reason: {row}");
    }
    assert!(!html.contains(SECRET));
    // The REST view agrees.
    let cmd = t.ok(Method::GET, &format!("/commands/{id}"), None).await;
    assert_eq!(cmd["state"], "failed");
    assert_eq!(cmd["steps"].as_array().map(Vec::len), Some(2));
    // Audited with the user; no token was issued, and no secret reached the log.
    let entries = audit(&t, "object_type=command").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (entries[0]["username"].as_str(), entries[0]["action"].as_str()),
        (Some("admin"), Some("hosts.bootstrap"))
    );
    assert_eq!(entries[0]["object_id"], json!(id));
    assert!(entries[0]["summary"].as_str().unwrap().contains("2 host(s)"));
    assert!(!entries[0].to_string().contains(SECRET));
    let tokens = t.ok(Method::GET, "/enrollment-tokens", None).await;
    assert_eq!(tokens["items"], json!([]));

    // Another kind of command is not shown as a bootstrap; an unknown one is a 404.
    assert_eq!(c.get("/hosts/add/ssh/no-such-command").await.status, 404);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn the_docker_form_checks_its_fields_and_an_absent_engine_creates_nothing() {
    let t = start().await;
    let c = t.console().await;
    let page = c.get("/hosts/add/docker").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("no-docker.sock"));
    assert!(by_id(&page.html, "no-containers").is_some(), "{}", page.html);
    assert!(page.html.contains("id=\"containers-live\" data-live=\"3000\" data-live-done"));
    for field in ["docker-count", "docker-image", "docker-network", "docker-labels", "docker-cpus", "docker-memory"] {
        assert!(page.html.contains(&format!("<label for=\"{field}\"")), "no label for {field}");
    }
    assert_eq!(value_of(&page.html, "docker-image"), Some("drover/agent:latest"));

    let base = [
        ("count", "2"),
        ("image", "drover/agent:test"),
        ("network", "drover-net"),
        ("labels", "tier=web"),
        ("cpus", "0.5"),
        ("memory", "256m"),
    ];
    let with = |k: &'static str, v: &'static str| -> Vec<(&'static str, &'static str)> {
        base.iter().map(|(bk, bv)| if *bk == k { (*bk, v) } else { (*bk, *bv) }).collect()
    };
    let cases = [
        (with("cpus", "lots"), "err-cpus", "the CPU limit is a number of CPUs such as 0.5 or 2, got \"lots\""),
        (with("cpus", "0"), "err-cpus", "cpus must be above 0 and at most 1024, got 0"),
        (with("memory", "1x"), "err-memory", "invalid memory \"1x\""),
        (with("memory", "1m"), "err-memory", "memory must be at least 6 MiB"),
        (with("count", "0"), "err-count", "count must be between 1 and 100, got 0"),
        (with("labels", "bad key=x"), "err-labels", "invalid label key \"bad key\""),
        (base.to_vec(), "err-form", "no-docker.sock is not reachable"),
    ];
    for (fields, id, want) in cases {
        let page = c.post("/hosts/add/docker", &fields).await;
        assert_eq!(page.status, 200, "{fields:?}: {}", page.html);
        let err = by_id(&page.html, id).unwrap_or_else(|| panic!("{fields:?}: no {id} in {}", page.html));
        assert!(err.contains(want), "{fields:?}: {err}");
        assert!(by_id(&page.html, "docker-errors").unwrap_or_default().contains("Nothing created"));
        for (k, v) in &fields {
            let input = format!("docker-{k}");
            assert_eq!(value_of(&page.html, &input), Some(*v), "{k} kept");
        }
    }
    // Nothing was made: no token, no container record, no audit entry.
    assert_eq!(t.ok(Method::GET, "/enrollment-tokens", None).await["items"], json!([]));
    assert_eq!(t.ok(Method::GET, "/providers/docker/hosts", None).await, json!({"items": []}));
    assert_eq!(audit(&t, "object_type=container").await, Vec::<Value>::new());
    assert_eq!(audit(&t, "object_type=enrollment_token").await, Vec::<Value>::new());
    let page = c.post_raw("/hosts/add/docker", &base).await;
    assert_eq!(page.status, 403);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn teardown_asks_for_confirmation_and_reports_an_absent_engine() {
    let t = start().await;
    let state = &t.handle.state;
    let owner = state.pki.ca_fingerprint().to_string();
    let rec = ProviderHostRec {
        id: "0123456789abcdef0123456789abcdef".into(),
        provider: "docker".into(),
        name: "drover-abc123".into(),
        engine: "unix:///nowhere".into(),
        owner,
        image: "drover/agent:latest".into(),
        network: "bridge".into(),
        volume: "drover-abc123-data".into(),
        token_id: "tok-1".into(),
        labels: Labels::from([("provider".to_owned(), "docker".to_owned())]),
        created_by: "admin".into(),
        created_at: now_millis(),
        host_id: None,
    };
    state.store.insert_provider_host(&rec).await.unwrap();
    let c = t.console().await;

    let page = c.get("/hosts/add/docker").await;
    let row = by_id(&page.html, "containers").map(|_| page.html.as_str()).expect("a containers table");
    assert!(row.contains("drover-abc123 <small><code>0123456789ab</code></small>"), "{row}");
    assert!(row.contains("not enrolled yet"));
    // Not every container has enrolled: the list stays live.
    assert!(page.html.contains("id=\"containers-live\" data-live=\"3000\">"), "{}", page.html);
    let action = format!("/hosts/add/docker/{}/teardown", rec.id);
    assert!(row.contains(&format!("action=\"{action}\"")));

    // The first POST only asks.
    let page = c.post(&action, &[]).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let what = by_id(&page.html, "confirm-what").unwrap();
    assert!(what.contains("Tear down container drover-abc123") && what.contains("volume drover-abc123-data"), "{what}");
    assert!(page.html.contains("name=\"confirmed\" value=\"yes\""));
    assert!(page.html.contains(&format!("action=\"{action}\"")));
    assert_eq!(state.store.provider_hosts("docker").await.unwrap().len(), 1);
    // Without the CSRF token: refused, confirmed or not.
    assert_eq!(c.post_raw(&action, &[("confirmed", "yes")]).await.status, 403);
    // Confirmed, against an engine that is not there: an error, nothing removed.
    let page = c.post(&action, &[("confirmed", "yes")]).await;
    assert_eq!((page.status, page.location.as_deref()), (303, Some("/hosts/add/docker")));
    let flash = page.flash.unwrap();
    assert!(flash.starts_with("error=container not removed:") && flash.contains("no-docker.sock"), "{flash}");
    assert_eq!(state.store.provider_hosts("docker").await.unwrap().len(), 1);
    assert_eq!(audit(&t, "object_type=container").await, Vec::<Value>::new());
    // A container this manager did not create has no teardown.
    let page = c.post("/hosts/add/docker/someone-elses/teardown", &[]).await;
    assert_eq!(page.status, 404);
    assert!(page.html.contains("not found among the containers this manager created"));
    t.handle.shutdown().await;
}
