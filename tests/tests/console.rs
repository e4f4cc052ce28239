//! The web console in a real browser (Debian's chromium driven through
//! chromedriver), against a manager with a real agent session:
//! - sign-in is required and a wrong password is refused;
//! - the hosts page filters by label and paginates with 500 hosts;
//! - a host's page charts its metric series (a seeded week at 7d);
//! - the enrollment command the console shows, run as is, enrolls an agent;
//! - decommissioning asks for confirmation first, and a form without its
//!   CSRF token is refused;
//! - the session cookie is `HttpOnly` and `SameSite=Lax` in the browser.
//!
//! With `DROVER_SCREENSHOT_DIR` set, the pages are saved as PNG files there
//! (scripts/console-screenshots.sh makes the ones in docs/console.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use drover_agent::enroll;
use drover_agent::session::{self, NoopObserver, SessionConfig};
use drover_manager::model::{HostKind, Labels, now_millis};
use drover_manager::{Manager, ManagerConfig, fixtures};
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
    for i in 0..n {
        let mut facts = fixtures::facts(&format!("inventory-{i:04}"), &format!("10.20.{}.{}", i / 250, i % 250 + 1));
        facts.kind = HostKind::Vm;
        facts.cpu_cores = 8;
        facts.memory_bytes = 32 << 30;
        let labels: Labels = [("rack".to_owned(), format!("r{}", i % 5 + 1))].into();
        fixtures::enroll(state, &format!("inv-{i:04}"), facts, labels).await.unwrap();
    }
}

/// A week of minute points (one every 10 minutes) for the host's CPU and
/// disk series once the live session's first points are stored, as the
/// minute rollup writes them.
async fn seed_series(state: &drover_manager::AppState, host: &str) {
    use drover_manager::store::{PointRec, PointTable};
    let wanted = ["host_cpu_percent", "host_disk_used_ratio"];
    let series = eventually(WAIT, "the live host's series stored", || async {
        let all = state.store.all_series().await.ok()?;
        let ids: Vec<(i64, String)> = all
            .iter()
            .filter(|s| s.entity_id == host && wanted.contains(&s.name.as_str()))
            .map(|s| (s.id, s.name.clone()))
            .collect();
        (ids.len() == wanted.len()).then_some(ids)
    })
    .await;
    let now_s = now_millis() / 1000 / 600 * 600;
    let mut points = Vec::new();
    for (id, name) in series {
        for i in 1..=7 * 24 * 6 {
            let v = 0.4 + 0.3 * ((i as f64) / 144.0 * std::f64::consts::TAU).sin();
            let v = if name == "host_cpu_percent" { v * 100.0 } else { v };
            points.push(PointRec {
                series_id: id,
                t: now_s - i * 600,
                min: v,
                max: v,
                sum: v * 10.0,
                count: 10,
                last: v,
            });
        }
    }
    state.store.insert_rollup_points(PointTable::Minute, &points).await.unwrap();
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
    // The live session's points in its series, rolled up to minutes now
    // rather than at the manager's next minute tick: the REST history.
    eventually(WAIT, "the live host's metric history", || async {
        drover_manager::domain::metrics::roll_up(&manager.state.store, now_millis()).await.ok()?;
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
    let titles = browser.texts("#charts figcaption b").await.unwrap();
    // CPU, memory, load and disk from the live session's series (network
    // rates once two steps have passed).
    for t in ["CPU used", "Memory used", "Load", "Disk used per mount"] {
        assert!(titles.contains(&t.to_owned()), "{titles:?}");
    }
    let summaries = browser.texts("#charts .summary").await.unwrap();
    assert!(summaries[0].starts_with("latest ") && summaries[0].contains("points"), "{summaries:?}");
    assert!(browser.exists("#charts svg polyline").await.unwrap());
    assert!(browser.exists("#charts svg circle title").await.unwrap());
    // The week: about 200 steps of the seeded minute points.
    seed_series(&manager.state, &live_id).await;
    browser.goto(&format!("{base}/hosts/{live_id}?range=7d")).await.unwrap();
    browser.wait_for_source("last 7d", WAIT).await.unwrap();
    let week = browser.texts("#charts .summary").await.unwrap();
    let points: usize = week[0].rsplit('(').next().unwrap().trim_end_matches(" points)").parse().unwrap();
    assert!((190..=202).contains(&points), "{week:?}");
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

    // Signing out ends the session.
    browser.click("form.logout button").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/login"), WAIT).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.url().await.unwrap().contains("/login"));

    browser.quit().await.unwrap();
    agent.abort();
    manager.shutdown().await;
}

async fn service_roles(rest: &Rest) -> Vec<serde_json::Value> {
    let v: serde_json::Value = rest.get("/api/v1/clusters/prod/services/cache/roles").await.unwrap();
    v["items"].as_array().unwrap().clone()
}

/// The whole loop of a service through the console, with the real binaries
/// and Redis from its parcel on two agents: create a cluster, add the hosts,
/// add Redis (a primary and a replica) through the wizard, start it and watch
/// the command succeed on its page; a bad `maxmemory` is refused by its field
/// and stores nothing; a good one makes a revision with both roles stale; a
/// rolling restart from the page applies it; two revisions compared show the
/// changed line of redis.conf; a rollback makes a new revision; the audit page
/// names the user for each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_the_console() {
    use drover_tests::parcels::{build_parcel, install_parcels};
    use drover_tests::procs::{ManagerProc, RoleReaper, free_port, start_agent};
    use reqwest::Method;

    drover_tests::init_logging();
    let redis_parcel = build_parcel("redis", None);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let _reaper = RoleReaper(root.to_path_buf());
    let flags = ["--heartbeat-interval", "300ms", "--host-lost-after", "5s", "--flush-interval", "200ms"];
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();
    let token = rest.enrollment_token(2, 600).await.unwrap();
    let _a = start_agent(&root.join("a"), &url, Some(&token), &["--hostname", "redis-a"]).unwrap();
    let _b = start_agent(&root.join("b"), &url, Some(&token), &["--hostname", "redis-b"]).unwrap();
    let wait = Duration::from_secs(90);
    let hosts = eventually(wait, "two healthy hosts", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == 2).then_some(hosts)
    })
    .await;
    let host_id = |name: &str| hosts.iter().find(|h| h["hostname"] == name).unwrap()["id"].as_str().unwrap().to_owned();
    let (a, b) = (host_id("redis-a"), host_id("redis-b"));

    let browser = Browser::start(root).await.unwrap();
    let base = rest.url("");
    let base = base.trim_end_matches('/');
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", &manager.password).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_source("Home", wait).await.unwrap();

    // A cluster and its two hosts, from the console.
    browser.goto(&format!("{base}/clusters")).await.unwrap();
    browser.fill("#cluster-name", "prod").await.unwrap();
    browser.click("#create-cluster-submit").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/clusters/prod"), wait).await.unwrap();
    for h in [&a, &b] {
        browser.click(&format!("#add-hosts input[value=\"{h}\"]")).await.unwrap();
    }
    browser.click("#add-hosts-submit").await.unwrap();
    // The page before the submit names redis-b too (as a candidate): wait for the answer's flash.
    browser.wait_for_source("added 2 host(s) to cluster prod", wait).await.unwrap();
    let members: serde_json::Value = rest.get("/api/v1/clusters/prod/hosts").await.unwrap();
    assert_eq!(members["items"].as_array().unwrap().len(), 2, "{members}");
    install_parcels(&rest, "prod", &[a.clone(), b.clone()], &[redis_parcel]).await;

    // The wizard: type, placement (one primary, one replica), configuration.
    let (p_port, r_port) = (free_port(), free_port());
    browser.goto(&format!("{base}/clusters/prod/services/new")).await.unwrap();
    browser.click("#type-redis").await.unwrap();
    browser.fill("#service-name", "cache").await.unwrap();
    browser.click("#next").await.unwrap();
    browser.wait_for_source("2. Place the roles", wait).await.unwrap();
    shot(&browser, "console-wizard-place").await;
    browser.click(&format!("#place-primary-{a}")).await.unwrap();
    browser.click(&format!("#place-replica-{b}")).await.unwrap();
    browser.click("#next").await.unwrap();
    browser.wait_for_source("3. Review the configuration", wait).await.unwrap();
    browser.fill("#param-port", &p_port.to_string()).await.unwrap();
    shot(&browser, "console-wizard-config").await;
    // Not started yet: the replica needs its own port first (below).
    browser.execute("document.getElementById('start').checked = false", vec![]).await.unwrap();
    browser.click("#create").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/clusters/prod/services/cache"), wait).await.unwrap();
    let created = service_roles(&rest).await;
    assert_eq!(created.len(), 2, "{created:?}");
    let replica = created.iter().find(|r| r["role_type"] == "replica").unwrap()["name"].as_str().unwrap().to_owned();

    // Both Redis servers run on this one machine: the replica gets its own
    // port at role scope in the configuration editor.
    browser.goto(&format!("{base}/clusters/prod/services/cache/config?scope=role:{replica}")).await.unwrap();
    browser.fill("#in-port", &r_port.to_string()).await.unwrap();
    browser.fill("#message", "replica on its own port").await.unwrap();
    browser.click("#save").await.unwrap();
    browser.wait_for_source("Done:", wait).await.unwrap();

    // Start from the service page (confirmed) and watch the command succeed.
    browser.goto(&format!("{base}/clusters/prod/services/cache")).await.unwrap();
    browser.click("#cmd-start").await.unwrap();
    browser.wait_for_source("Please confirm", wait).await.unwrap();
    browser.click("#confirm").await.unwrap();
    browser.wait_for_url(|u| u.contains("/commands/"), wait).await.unwrap();
    // The page updates itself (drover.js): no reload until it says succeeded.
    browser.wait_for_source("data-live-done", wait).await.unwrap();
    assert_eq!(browser.texts("#command-state").await.unwrap(), vec!["succeeded".to_owned()]);
    shot(&browser, "console-command").await;
    eventually(wait, "both roles running", || async {
        service_roles(&rest).await.iter().all(|r| r["status"] == "running").then_some(())
    })
    .await;

    // A bad maxmemory: refused by its field, the input kept, no revision.
    let revisions = || async {
        let v: serde_json::Value = rest.get("/api/v1/clusters/prod/services/cache/config/revisions").await.unwrap();
        v["items"].as_array().unwrap().len()
    };
    let before = revisions().await;
    browser.goto(&format!("{base}/clusters/prod/services/cache/config")).await.unwrap();
    browser.fill("#in-maxmemory", "lots").await.unwrap();
    browser.fill("#message", "cap memory").await.unwrap();
    browser.click("#save").await.unwrap();
    browser.wait_for_source("Not saved", wait).await.unwrap();
    let error = browser.texts("#err-maxmemory").await.unwrap();
    assert!(error.len() == 1 && !error[0].is_empty(), "{error:?}");
    let kept = browser.execute("return document.getElementById('in-maxmemory').value", vec![]).await.unwrap();
    assert_eq!(kept, "lots");
    shot(&browser, "console-config-error").await;
    assert_eq!(revisions().await, before);
    // Fixed: a revision, and the banner says both roles need a restart.
    browser.fill("#in-maxmemory", "256").await.unwrap();
    browser.select("#unit-maxmemory", "mb").await.unwrap();
    browser.click("#save").await.unwrap();
    let page = browser.wait_for_source("restart needed: 2 roles", wait).await.unwrap();
    assert!(page.contains("id=\"banner\""), "{page}");
    assert_eq!(revisions().await, before + 1);
    shot(&browser, "console-config").await;
    eventually(wait, "both roles stale", || async {
        service_roles(&rest).await.iter().all(|r| r["stale"] == true).then_some(())
    })
    .await;
    // Rolling restart from the page.
    browser.goto(&format!("{base}/clusters/prod/services/cache/config")).await.unwrap();
    browser.click("#rolling-restart").await.unwrap();
    if browser.exists("#confirm").await.unwrap() {
        browser.click("#confirm").await.unwrap();
    }
    browser.wait_for_url(|u| u.contains("/commands/"), wait).await.unwrap();
    browser.wait_for_source("data-live-done", wait).await.unwrap();
    assert_eq!(browser.texts("#command-state").await.unwrap(), vec!["succeeded".to_owned()]);
    eventually(wait, "both roles not stale", || async {
        service_roles(&rest).await.iter().all(|r| r["stale"] == false && r["status"] == "running").then_some(())
    })
    .await;
    browser.goto(&format!("{base}/clusters/prod/services/cache")).await.unwrap();
    browser.wait_for_source("roles-live", wait).await.unwrap();
    shot(&browser, "console-service").await;

    // Compare the last two revisions: the changed line of redis.conf.
    let latest = before as u64 + 1;
    browser
        .goto(&format!("{base}/clusters/prod/services/cache/config/compare?from={}&to={latest}", latest - 1))
        .await
        .unwrap();
    let page = browser.wait_for_source("redis.conf", wait).await.unwrap();
    assert!(page.contains("maxmemory 268435456") && page.contains("maxmemory 0"), "{page}");
    shot(&browser, "console-compare").await;

    // Roll back to the revision before (confirmed): a new revision.
    browser.goto(&format!("{base}/clusters/prod/services/cache/config/history")).await.unwrap();
    browser.fill(&format!("#reason-{}", latest - 1), "undo the memory cap").await.unwrap();
    browser.click(&format!("#rollback-{}", latest - 1)).await.unwrap();
    browser.wait_for_source("Please confirm", wait).await.unwrap();
    browser.click("#confirm").await.unwrap();
    browser.wait_for_url(|u| u.ends_with("/config/history"), wait).await.unwrap();
    browser.wait_for_source(&format!("id=\"rev-{}\"", latest + 1), wait).await.unwrap();
    shot(&browser, "console-history").await;
    assert_eq!(revisions().await, before + 2);
    let config = rest.ok(Method::GET, "/clusters/prod/services/cache/config", None).await;
    assert_eq!(config["revision"], latest + 1);

    // The audit page names the user for each change made above.
    browser.goto(&format!("{base}/audit?user=admin")).await.unwrap();
    let page = browser.wait_for_source("config.rollback", wait).await.unwrap();
    for action in
        ["cluster.create", "cluster.hosts.add", "service.create", "role.create", "command.start", "config.update"]
    {
        assert!(page.contains(action), "{action} missing from the audit page");
    }
    shot(&browser, "console-audit").await;
    // The other main pages, for docs/console.md.
    for (path, name) in [
        ("/", "console-home"),
        ("/clusters/prod", "console-cluster"),
        ("/commands", "console-commands"),
        ("/parcels", "console-parcels"),
        ("/events", "console-events"),
        ("/account", "console-account"),
    ] {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        browser.wait_for_source("</footer>", wait).await.unwrap();
        shot(&browser, name).await;
    }
    let role = service_roles(&rest).await[0]["name"].as_str().unwrap().to_owned();
    // The role's history: started by the start command, again by the rolling restart.
    let page = eventually(wait, "the role's history", || async {
        browser.goto(&format!("{base}/clusters/prod/services/cache/roles/{role}")).await.ok()?;
        let page = browser.source().await.ok()?;
        (page.matches("process started: pid").count() >= 2).then_some(page)
    })
    .await;
    assert!(page.contains("redis.conf") && page.contains("id=\"role-history\""), "{page}");
    shot(&browser, "console-role").await;
    browser.quit().await.unwrap();
}

/// The session cookie's flags as the browser keeps them after signing in:
/// `HttpOnly` (and so out of reach of the page's scripts), `SameSite=Lax`,
/// not `Secure` over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_flags_in_a_browser() {
    drover_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let manager = Manager::start(config, http, grpc).await.unwrap();
    let browser = Browser::start(dir.path()).await.unwrap();
    browser.goto(&format!("http://{}/login", manager.http_addr)).await.unwrap();
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", PASSWORD).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_url(|u| !u.contains("/login"), WAIT).await.unwrap();

    let cookie = browser.cookie("drover_session").await.unwrap();
    assert_eq!(cookie.value().len(), 64, "{cookie}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.same_site().map(|s| s.to_string()).as_deref(), Some("Lax"), "{cookie}");
    assert_ne!(cookie.secure(), Some(true), "plain HTTP: {cookie}");
    let seen_by_scripts = browser.execute("return document.cookie", vec![]).await.unwrap();
    assert!(!seen_by_scripts.as_str().unwrap_or_default().contains("drover_session"), "{seen_by_scripts}");
    browser.quit().await.unwrap();
    manager.shutdown().await;
}
