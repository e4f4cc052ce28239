//! The web console in a real browser (Debian's chromium driven through
//! chromedriver): sign-in is required, a wrong password is refused, and after
//! signing in the hosts page lists a live host with its status and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_agent::enroll;
use drover_agent::session::{self, NoopObserver, SessionConfig};
use drover_manager::{Manager, ManagerConfig};
use drover_proto::tls::ManagerAddr;
use drover_tests::rest::Rest;
use drover_tests::webdriver::Browser;
use drover_tests::{eventually, synthetic_facts, synthetic_metrics};
use tokio::net::TcpListener;

const PASSWORD: &str = "console-test-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_see_a_live_host() {
    drover_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    config.heartbeat_interval = Duration::from_millis(200);
    config.host_lost_after = Duration::from_secs(5);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let manager = Manager::start(config, http, grpc).await.unwrap();
    let rest = Rest::new(manager.http_addr, "admin", PASSWORD);

    // One live agent session so the page has a host with metrics.
    let addr: ManagerAddr = format!("https://127.0.0.1:{}", manager.grpc_addr.port()).parse().unwrap();
    let token = rest.enrollment_token(1, 600).await.unwrap().parse().unwrap();
    let labels = BTreeMap::from([("rack".to_owned(), "r7".to_owned())]);
    let identity = enroll::enroll(&addr, &token, None, &synthetic_facts(42), &labels).await.unwrap();
    let config = SessionConfig::new(addr, identity, synthetic_facts(42));
    let mut tick = 0;
    let agent = tokio::spawn(session::run(
        config,
        move || {
            tick += 1;
            synthetic_metrics(tick)
        },
        Arc::new(NoopObserver),
        std::future::pending(),
    ));
    eventually(Duration::from_secs(30), "host healthy with metrics", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        hosts.iter().any(|h| !h["metrics"].is_null()).then_some(())
    })
    .await;

    let browser = Browser::start(dir.path()).await.unwrap();
    let base = format!("http://{}", manager.http_addr);

    // Signed out: the console sends us to the sign-in page.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/login"), "{}", browser.url().await.unwrap());

    // A wrong password is refused with a message.
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", "not-the-password").await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_source("Wrong user name or password.", Duration::from_secs(15)).await.unwrap();

    // The right one opens the hosts page with the live host on it.
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", PASSWORD).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    let home = format!("{base}/");
    browser.wait_for_url(|u| u == home, Duration::from_secs(15)).await.unwrap();
    browser.wait_for_source("synthetic-00042", Duration::from_secs(15)).await.unwrap();
    let names = browser.texts("#hosts .hostname").await.unwrap();
    assert_eq!(names, vec!["synthetic-00042".to_owned()]);
    let badges = browser.texts("#hosts .badge").await.unwrap();
    assert_eq!(badges, vec!["healthy".to_owned()]);
    let labels = browser.texts("#hosts .label").await.unwrap();
    assert_eq!(labels, vec!["rack=r7".to_owned()]);
    let page = browser.source().await.unwrap();
    assert!(page.contains("of 4 cores") && page.contains("8.0 GiB"), "{page}");
    if let Ok(dir) = std::env::var("DROVER_SCREENSHOT_DIR") {
        browser.screenshot(&std::path::Path::new(&dir).join("console-hosts.png")).await.unwrap();
    }

    // The services page shows a service with its role and configuration history.
    let host_id = rest.hosts("").await.unwrap()[0]["id"].as_str().unwrap().to_owned();
    for (path, body) in [
        ("/api/v1/clusters", serde_json::json!({"name": "prod"})),
        ("/api/v1/clusters/prod/services", serde_json::json!({"name": "cache", "type": "redis"})),
        (
            "/api/v1/clusters/prod/services/cache/roles",
            serde_json::json!({"role_type": "primary", "host_id": host_id, "name": "cache-primary"}),
        ),
    ] {
        let (status, v) = rest.raw(reqwest::Method::POST, path, Some(body)).await.unwrap();
        assert_eq!(status, 201, "{path}: {v}");
    }
    browser.goto(&format!("{base}/services")).await.unwrap();
    assert_eq!(browser.texts(".service .role-name").await.unwrap(), vec!["cache-primary".to_owned()]);
    let page = browser.source().await.unwrap();
    assert!(page.contains("Cluster prod") && page.contains("config revision 1"), "{page}");
    assert!(page.contains("service created with default configuration"), "{page}");
    if let Ok(dir) = std::env::var("DROVER_SCREENSHOT_DIR") {
        browser.screenshot(&std::path::Path::new(&dir).join("console-services.png")).await.unwrap();
    }

    // Signing out ends the session: the console asks to sign in again.
    browser.click("form.logout button").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/login"), Duration::from_secs(15)).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/login"));

    browser.quit().await.unwrap();
    agent.abort();
    manager.shutdown().await;
}
