//! The web console in a real browser (Debian's chromium driven through
//! chromedriver), against a manager with a real agent session:
//! - sign-in is required and a wrong password is refused;
//! - the hosts page filters by label and paginates with 500 hosts;
//! - a host's page charts its stored metric history;
//! - the enrollment command the console shows, run as is, enrolls an agent;
//! - decommissioning asks for confirmation first, and a form without its
//!   CSRF token is refused.
//!
//! With `DROVER_SCREENSHOT_DIR` set, the pages are saved as PNG files there
//! (scripts/console-screenshots.sh makes the ones in docs/console.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use drover_agent::enroll;
use drover_agent::session::{self, NoopObserver, SessionConfig};
use drover_manager::auth::sha256_hex;
use drover_manager::model::{HostFacts, HostKind, Labels, now_millis};
use drover_manager::store::{EnrollmentTokenRecord, MetricBucket, NewHost};
use drover_manager::{Manager, ManagerConfig};
use drover_proto::tls::ManagerAddr;
use drover_tests::procs::{Proc, bin_dir};
use drover_tests::rest::Rest;
use drover_tests::webdriver::Browser;
use drover_tests::{eventually, synthetic_facts, synthetic_metrics};
use tokio::net::TcpListener;

const PASSWORD: &str = "console-test-password";
const WAIT: Duration = Duration::from_secs(30);

async fn shot(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("DROVER_SCREENSHOT_DIR") {
        browser.screenshot(&Path::new(&dir).join(format!("{name}.png"))).await.unwrap();
    }
}

/// Enrolls `n` hosts straight through the store, as `n` agents enrolling
/// would (they have no session, so they show as lost after a while).
async fn inventory(state: &drover_manager::AppState, n: usize) {
    let now = now_millis();
    for i in 0..n {
        let token = format!("inv-{i}");
        state
            .store
            .insert_enrollment_token(&EnrollmentTokenRecord {
                id: token.clone(),
                secret_hash: sha256_hex("s"),
                labels: Labels::new(),
                max_uses: 1,
                uses: 0,
                created_by: "admin".into(),
                created_at: now,
                expires_at: now + 3_600_000,
                revoked_at: None,
            })
            .await
            .unwrap();
        let facts = HostFacts {
            hostname: format!("inventory-{i:04}"),
            addresses: vec![format!("10.20.{}.{}", i / 250, i % 250 + 1)],
            kind: HostKind::Vm,
            kind_evidence: "test inventory".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            cpu_cores: 8,
            memory_bytes: 32 << 30,
            disks: vec![],
            fqdn: String::new(),
            container_id: String::new(),
            machine_cpu_cores: 0,
            machine_memory_bytes: 0,
            capacity_evidence: String::new(),
        };
        let labels: Labels = [("rack".to_owned(), format!("r{}", i % 5 + 1))].into();
        let host = NewHost {
            id: format!("inv-{i:04}"),
            facts,
            agent_version: "0".into(),
            labels,
            cert_serial: format!("s-{i}"),
        };
        let rec = state.store.enroll_host(&token, &sha256_hex("s"), now, &host).await.unwrap();
        state.registry.add_enrolled(&rec);
    }
}

/// Seven days of hourly metric buckets for `host`, as the hourly roll-up
/// stores them.
async fn seed_history(state: &drover_manager::AppState, host: &str) {
    let hour = 3_600_000;
    let now = now_millis() / hour * hour;
    let buckets: Vec<MetricBucket> = (1..=7 * 24)
        .map(|h| {
            let wave = ((h as f64) / 24.0 * std::f64::consts::TAU).sin();
            MetricBucket {
                host_id: host.to_owned(),
                resolution_s: 3600,
                bucket_start: now - h * hour,
                samples: 60,
                cpu_percent: 40.0 + 30.0 * wave,
                memory_used_bytes: (3 << 30) + ((wave + 1.0) * (1 << 29) as f64) as u64,
                load1: 1.5 + wave,
                disk_used_bytes: 40 << 30,
                network_rx_bytes: (7 * 24 - h as u64) * (300 << 20),
                network_tx_bytes: (7 * 24 - h as u64) * (100 << 20),
            }
        })
        .collect();
    state.store.flush(&[], &buckets, &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_in_a_browser() {
    drover_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    config.heartbeat_interval = Duration::from_millis(200);
    config.host_lost_after = Duration::from_secs(5);
    config.flush_interval = Duration::from_millis(200);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let manager = Manager::start(config, http, grpc).await.unwrap();
    let rest = Rest::new(manager.http_addr, "admin", PASSWORD);
    inventory(&manager.state, 500).await;

    // One live agent session, so a host has metrics and their history.
    let addr: ManagerAddr = format!("https://127.0.0.1:{}", manager.grpc_addr.port()).parse().unwrap();
    let token = rest.enrollment_token(1, 600).await.unwrap().parse().unwrap();
    let labels = BTreeMap::from([("rack".to_owned(), "r7".to_owned())]);
    let identity = enroll::enroll(&addr, &token, None, &synthetic_facts(42), &labels).await.unwrap();
    let live_id = identity.host_id.clone();
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
    // A week of hourly history, as the roll-up writes it, and the minute
    // buckets the live session fills (closed now rather than at the minute).
    seed_history(&manager.state, &live_id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    manager.state.registry.close_buckets();
    eventually(WAIT, "the live host's metric history", || async {
        let v: serde_json::Value = rest.get(&format!("/api/v1/hosts/{live_id}/metrics")).await.ok()?;
        (!v["points"].as_array()?.is_empty()).then_some(())
    })
    .await;

    let browser = Browser::start(dir.path()).await.unwrap();
    let base = format!("http://{}", manager.http_addr);

    // Signed out: the console sends us to sign in, then back where we were.
    browser.goto(&format!("{base}/hosts?label=rack%3Dr3")).await.unwrap();
    assert!(browser.url().await.unwrap().contains("/login?next="), "{}", browser.url().await.unwrap());
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", "not-the-password").await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_source("Wrong user name or password.", WAIT).await.unwrap();
    shot(&browser, "console-login").await;
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", PASSWORD).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/hosts?label=rack%3Dr3"), WAIT).await.unwrap();

    // 100 of the 500 hosts are in rack r3: two pages of 50.
    let page = browser.wait_for_source("100 matching", WAIT).await.unwrap();
    assert!(page.contains("page 1 of 2"), "{page}");
    assert_eq!(browser.texts("#hosts .hostname").await.unwrap().len(), 50);
    browser.click("#page-next").await.unwrap();
    browser.wait_for_source("page 2 of 2", WAIT).await.unwrap();
    let names = browser.texts("#hosts .hostname").await.unwrap();
    assert_eq!(names.len(), 50);
    // Filter from the form: rack r7 is the live host alone.
    browser.fill("#f-label", "rack=r7").await.unwrap();
    browser.click("#f-apply").await.unwrap();
    browser.wait_for_source("1 matching", WAIT).await.unwrap();
    assert_eq!(browser.texts("#hosts .hostname").await.unwrap(), vec!["synthetic-00042".to_owned()]);
    assert_eq!(browser.texts("#hosts .badge").await.unwrap(), vec!["healthy".to_owned()]);
    browser.goto(&format!("{base}/hosts")).await.unwrap();
    shot(&browser, "console-hosts").await;

    // The host's page: facts and charts drawn from the stored history.
    browser.goto(&format!("{base}/hosts/{live_id}")).await.unwrap();
    let page = browser.wait_for_source("CPU used", WAIT).await.unwrap();
    assert!(page.contains("rack=r7") && page.contains("4 cores"), "{page}");
    let summaries = browser.texts("#charts .summary").await.unwrap();
    assert_eq!(summaries.len(), 6, "{summaries:?}");
    assert!(summaries[0].starts_with("latest ") && summaries[0].contains("points"), "{summaries:?}");
    assert!(browser.exists("#charts svg polyline").await.unwrap());
    // The week: 167 or 168 hourly points, whatever the minute now.
    browser.goto(&format!("{base}/hosts/{live_id}?range=7d")).await.unwrap();
    browser.wait_for_source("last 7d", WAIT).await.unwrap();
    let week = browser.texts("#charts .summary").await.unwrap();
    assert!(week[0].contains(" (167 points)") || week[0].contains(" (168 points)"), "{week:?}");
    shot(&browser, "console-host").await;
    browser.execute("document.getElementById('h-charts').scrollIntoView()", vec![]).await.unwrap();
    shot(&browser, "console-host-charts").await;

    // A label set from the page without its CSRF token is refused.
    browser.fill("#label-key", "tier").await.unwrap();
    browser.fill("#label-value", "web").await.unwrap();
    browser.execute("document.querySelector('#labels-form input[name=_csrf]').remove()", vec![]).await.unwrap();
    browser.click("#label-set").await.unwrap();
    browser.wait_for_source("security token is missing", WAIT).await.unwrap();
    let host: serde_json::Value = rest.get(&format!("/api/v1/hosts/{live_id}")).await.unwrap();
    assert!(host["labels"].get("tier").is_none(), "{host}");
    // With it, the label is set.
    browser.goto(&format!("{base}/hosts/{live_id}")).await.unwrap();
    browser.fill("#label-key", "tier").await.unwrap();
    browser.fill("#label-value", "web").await.unwrap();
    browser.click("#label-set").await.unwrap();
    browser.wait_for_source("labels are now rack=r7, tier=web", WAIT).await.unwrap();

    // Add a host with an enrollment token: the command shown, run as is.
    browser.goto(&format!("{base}/hosts/add")).await.unwrap();
    browser.fill("#token-labels", "added=console").await.unwrap();
    browser.click("#token-create").await.unwrap();
    browser.wait_for_source("Token created", WAIT).await.unwrap();
    shot(&browser, "console-hosts-add").await;
    let command = browser.texts("#agent-command").await.unwrap().remove(0);
    assert!(command.starts_with("drover-agent --manager https://"), "{command}");
    let agent_dir = dir.path().join("shown-command-agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(format!("exec {command}"))
        .env("PATH", format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default()))
        .env("DROVER_DATA_DIR", &agent_dir)
        .env("DROVER_HOSTNAME", "from-the-console");
    let mut shown = Proc::spawn("drover-agent", sh, &agent_dir.join("agent.log")).unwrap();
    let added = eventually(WAIT, "the host enrolled by the shown command", || async {
        let hosts = rest.hosts("label=added%3Dconsole&status=healthy").await.ok()?;
        hosts.into_iter().next()
    })
    .await;
    assert_eq!(added["hostname"], "from-the-console", "{added}");
    let added_id = added["id"].as_str().unwrap().to_owned();

    // Decommissioning asks first; cancelling changes nothing.
    browser.goto(&format!("{base}/hosts/{added_id}")).await.unwrap();
    browser.click("#decommission").await.unwrap();
    let confirm = browser.wait_for_source("Please confirm", WAIT).await.unwrap();
    assert!(confirm.contains("Decommission host from-the-console") && confirm.contains("cannot be undone"));
    shot(&browser, "console-confirm").await;
    browser.click("#cancel").await.unwrap();
    browser.wait_for_url(|u| u.ends_with(&format!("/hosts/{added_id}")), WAIT).await.unwrap();
    let host: serde_json::Value = rest.get(&format!("/api/v1/hosts/{added_id}")).await.unwrap();
    assert_eq!(host["status"], "healthy");
    browser.click("#decommission").await.unwrap();
    browser.wait_for_source("Please confirm", WAIT).await.unwrap();
    browser.click("#confirm").await.unwrap();
    browser.wait_for_source("host from-the-console decommissioned", WAIT).await.unwrap();
    let host: serde_json::Value = rest.get(&format!("/api/v1/hosts/{added_id}")).await.unwrap();
    assert_eq!(host["status"], "decommissioned");
    shown.kill();

    // Home counts what is there.
    browser.goto(&format!("{base}/")).await.unwrap();
    browser.wait_for_source("agents connected", WAIT).await.unwrap();
    shot(&browser, "console-home").await;

    // Signing out ends the session.
    browser.click("form.logout button").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/login"), WAIT).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.url().await.unwrap().contains("/login"));

    browser.quit().await.unwrap();
    agent.abort();
    manager.shutdown().await;
}
