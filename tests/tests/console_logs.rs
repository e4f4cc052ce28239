//! The console's log viewer, log search and diagnostics pages in a real browser (Debian's
//! chromium through chromedriver) against an in-process manager.
//!
//! The host's agent is scripted at the manager's request boundary (`AgentRequests::attach`
//! and `reply_to`, where the gRPC `Reply` handler delivers a real agent's answer): the test
//! must choose each log line byte for byte — a `<script>` tag, an `<img onerror>`, ANSI colour
//! codes — which a real service does not write on request. Everything from the manager's
//! REST handlers to the browser's script is the real thing. Checked:
//! - the role page follows the log: hostile lines are shown literally, ANSI codes stripped,
//!   nothing executes and no element is created from log text; stderr lines are marked;
//! - pause holds new lines (counted) and resume shows them; find highlights matches and hides
//!   the other lines; the download form names the role's files;
//! - the log search page shows matches with host, role and file:line, names the host that
//!   did not answer, and shows a 400's message for a regex that does not compile;
//! - the diagnostics page starts a bundle, leads to the command, and lists the bundle.
//!
//! A second test runs the viewer on a real agent and a real process (a user service type
//! whose shell script writes HTML and ANSI codes): the same lines arrive as text.
//!
//! With `DROVER_SCREENSHOT_DIR` set, the pages are saved there as PNG files.

use std::path::Path;
use std::time::Duration;

use drover_manager::agent_requests::{AgentRequest, LogLine, LogStream, ReplyEnd, ReplyPart};
use drover_manager::model::now_millis;
use drover_manager::{AppState, Manager, ManagerConfig, fixtures};
use drover_tests::rest::Rest;
use drover_tests::webdriver::Browser;
use reqwest::Method;
use serde_json::json;
use tokio::net::TcpListener;

const PASSWORD: &str = "console-logs-password";
const WAIT: Duration = Duration::from_secs(30);

async fn shot(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("DROVER_SCREENSHOT_DIR") {
        browser.screenshot(&Path::new(&dir).join(format!("{name}.png"))).await.unwrap();
    }
}

/// Nothing from a log line ran (`window.__xss` is unset) or became an element of the viewer.
async fn assert_nothing_ran(browser: &Browser) {
    let xss = browser
        .execute(
            "return [typeof window.__xss, document.querySelectorAll('#log-view img, #log-view script').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(xss, json!(["undefined", 0]), "nothing from a log line ran or became an element");
}

/// What the scripted agent of h1 writes: hostile lines first.
fn lines(role_id: &str) -> Vec<LogLine> {
    let now = now_millis();
    let line = |n: u64, stream: LogStream, level: &str, text: &str| LogLine {
        role_id: role_id.to_owned(),
        file: if stream == LogStream::Stderr { "logs/stderr.log".into() } else { "logs/stdout.log".into() },
        line_number: n,
        time: now - 60_000 + n as i64 * 1000,
        stream,
        level: level.into(),
        text: text.into(),
    };
    vec![
        line(1, LogStream::Stdout, "info", "Server initialized"),
        line(2, LogStream::Stdout, "info", "Ready to accept connections tcp"),
        line(3, LogStream::Stdout, "warn", "<script>window.__xss = 'script'</script> client sent a tag"),
        line(4, LogStream::Stderr, "error", "<img src=x onerror=\"window.__xss='img'\"> bad client name"),
        line(5, LogStream::Stdout, "info", "\u{1b}[31mred alert\u{1b}[0m and \u{1b}[1;32mgreen\u{1b}[0m text"),
        line(6, LogStream::Stderr, "", "WARNING overcommit_memory is set to 0"),
    ]
}

/// Answers h1's log requests from [`lines`] (a follow then writes a line every 200 ms until
/// the manager drops it) and its diagnostics requests with an error.
fn scripted_agent(state: std::sync::Arc<AppState>, role_id: String) {
    let mut requests = state.agent_requests.attach("h1", 1, true);
    tokio::spawn(async move {
        while let Some(queued) = requests.recv().await {
            let (id, request) = *queued;
            let Ok(tx) = state.agent_requests.reply_to("h1", &id) else { continue };
            let role_id = role_id.clone();
            tokio::spawn(async move {
                match request {
                    AgentRequest::Logs(q) => {
                        // The test's patterns are plain words.
                        let wanted = |l: &LogLine| {
                            (q.streams.is_empty() || q.streams.contains(&l.stream)) && l.text.contains(&q.pattern)
                        };
                        let found: Vec<LogLine> = lines(&role_id).into_iter().filter(wanted).collect();
                        if tx.send(ReplyPart::Lines(found)).await.is_err() {
                            return;
                        }
                        // A follow writes until the manager drops it.
                        for n in (101..).take_while(|_| q.follow) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            let mut l = lines(&role_id).remove(1);
                            l.line_number = n;
                            l.time = now_millis();
                            l.text = format!("tick {n}");
                            if tx.send(ReplyPart::Lines(vec![l])).await.is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(ReplyPart::End(ReplyEnd { scanned_bytes: 4096, ..ReplyEnd::default() })).await;
                    }
                    AgentRequest::Diagnostics(_) => {
                        let error = "this scripted agent gathers no diagnostics".to_owned();
                        let _ = tx.send(ReplyPart::End(ReplyEnd { error, ..ReplyEnd::default() })).await;
                    }
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_diagnostics_in_a_browser() {
    drover_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.into());
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let manager = Manager::start(config, http, grpc).await.unwrap();
    let rest = Rest::new(manager.http_addr, "admin", PASSWORD);
    let state = manager.state.clone();
    fixtures::enroll(&state, "h1", fixtures::facts("db1.example", "10.0.0.1"), Default::default()).await.unwrap();
    // h2 has no session: a search names it.
    fixtures::enroll(&state, "h2", fixtures::facts("db2.example", "10.0.0.2"), Default::default()).await.unwrap();
    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    rest.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1", "h2"]}))).await;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    let role = rest
        .ok(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": "primary", "host_id": "h1", "name": "cache-primary"})),
        )
        .await;
    rest.ok(
        Method::POST,
        "/clusters/prod/services/cache/roles",
        Some(json!({"role_type": "replica", "host_id": "h2", "name": "cache-replica"})),
    )
    .await;
    scripted_agent(state.clone(), role["id"].as_str().unwrap().to_owned());

    let browser = Browser::start(dir.path()).await.unwrap();
    let base = format!("http://{}", manager.http_addr);
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", PASSWORD).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_source("Home", WAIT).await.unwrap();

    // ---- the role page's viewer ----
    browser.goto(&format!("{base}/clusters/prod/services/cache/roles/cache-primary")).await.unwrap();
    browser.wait_for_source("tick 10", WAIT).await.unwrap();
    let texts = browser.texts("#log-view .log-line .text").await.unwrap();
    assert!(texts.iter().any(|t| t == "<script>window.__xss = 'script'</script> client sent a tag"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "<img src=x onerror=\"window.__xss='img'\"> bad client name"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "red alert and green text"), "ANSI codes stripped: {texts:?}");
    assert_nothing_ran(&browser).await;
    let stderr = browser.texts("#log-view .log-line.stream-stderr .stderr-mark").await.unwrap();
    assert_eq!(stderr, ["STDERR", "STDERR"], "both stderr lines marked (upper case by the stylesheet)");
    // The viewer lives outside the part of the page that refreshes every 3 s: still there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(browser.exists("#log-view .log-line").await.unwrap(), "the refresh kept the lines");
    browser.execute("document.getElementById('log-viewer').scrollIntoView();", vec![]).await.unwrap();
    shot(&browser, "logs-role").await;

    // Pause holds new lines; resume shows them.
    browser.click("#log-pause").await.unwrap();
    let count = || async {
        browser.execute("return document.querySelectorAll('#log-view .log-line').length;", vec![]).await.unwrap()
    };
    let before = count().await;
    drover_tests::eventually(WAIT, "lines held while paused", || async {
        let status = browser.texts("#log-status").await.ok()?.join(" ");
        (status.contains("Paused") && !status.contains("Paused: 0 ")).then_some(())
    })
    .await;
    assert_eq!(count().await, before, "nothing added while paused");
    shot(&browser, "logs-role-paused").await;
    browser.click("#log-pause").await.unwrap();
    drover_tests::eventually(WAIT, "held lines shown on resume", || async {
        (count().await.as_u64()? > before.as_u64()?).then_some(())
    })
    .await;

    // Find: matches highlighted, other lines hidden.
    browser.fill("#log-filter", "red alert").await.unwrap();
    let marks = browser.texts("#log-view mark").await.unwrap();
    assert_eq!(marks, ["red alert"], "{marks:?}");
    let shown = browser
        .execute("return [...document.querySelectorAll('#log-view .log-line')].filter(e => !e.hidden).length;", vec![])
        .await
        .unwrap();
    assert_eq!(shown, json!(1));
    shot(&browser, "logs-role-find").await;
    let files = browser.texts("#log-file option").await.unwrap();
    assert!(files.starts_with(&["logs/stdout.log".to_owned(), "logs/stderr.log".to_owned()]), "{files:?}");

    // ---- the cluster's log search ----
    browser.goto(&format!("{base}/clusters/prod/logs?q=client&since=1h")).await.unwrap();
    browser.wait_for_source("matching line", WAIT).await.unwrap();
    let rows = browser.texts("#search-results tbody tr").await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.contains("db1.example") && r.contains("cache-primary")), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("logs/stderr.log:4")), "{rows:?}");
    let marks = browser.texts("#search-results mark").await.unwrap();
    assert_eq!(marks, ["client", "client"]);
    let failed = browser.texts("#search-hosts-failed").await.unwrap().join(" ");
    assert!(failed.contains("db2.example"), "the host without a session named: {failed}");
    let xss = browser.execute("return typeof window.__xss;", vec![]).await.unwrap();
    assert_eq!(xss, json!("undefined"));
    shot(&browser, "logs-search").await;
    // A regex that does not compile: the 400's message by the form.
    browser.goto(&format!("{base}/clusters/prod/services/cache/logs?q=%28unclosed&since=1h")).await.unwrap();
    browser.wait_for_source("The search was refused", WAIT).await.unwrap();
    let error = browser.texts("#search-error").await.unwrap().join(" ");
    assert!(error.contains("(unclosed"), "{error}");
    shot(&browser, "logs-search-error").await;

    // ---- diagnostics ----
    browser.goto(&format!("{base}/diagnostics?cluster=prod")).await.unwrap();
    browser.fill("#diag-services", "cache").await.unwrap();
    browser.fill("#diag-max-size", "50MiB").await.unwrap();
    browser.click("#diag-start").await.unwrap();
    let command = browser.wait_for_url(|u| u.contains("/commands/"), WAIT).await.unwrap();
    browser.wait_for_source("db1.example", WAIT).await.unwrap();
    let _ = command;
    drover_tests::eventually(WAIT, "the bundle to finish", || async {
        let v: serde_json::Value = rest.get("/api/v1/diagnostics").await.ok()?;
        (v["items"][0]["state"] != "running").then_some(())
    })
    .await;
    shot(&browser, "diagnostics-command").await;
    browser.goto(&format!("{base}/diagnostics")).await.unwrap();
    let rows = browser.texts("#bundles tbody tr").await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("db1.example"), "the failed host named: {rows:?}");
    shot(&browser, "diagnostics").await;
    browser.execute("document.getElementById('h-bundles').scrollIntoView();", vec![]).await.unwrap();
    shot(&browser, "diagnostics-bundles").await;
    browser.quit().await.unwrap();
}

/// A user service type whose process writes what a hostile client could make a real service
/// log: HTML on stdout and stderr and ANSI colour codes, then a tick every second.
const PRINTER: &str = r#"
name = "printer"
display_name = "Printer"
description = "A test service whose process writes HTML and ANSI codes to its log"
version = "1"

[[role_types]]
name = "writer"
description = "prints hostile lines, then ticks"
min_instances = 0
start_order = 0

[role_types.process]
program = "/bin/sh"
args = ["-c", '''
printf "%s\n" "<script>window.__xss = 'real'</script> from a real process"
printf "%s\n" "<img src=x onerror=window.__xss=2> on stderr" >&2
i=0
while :; do i=$((i+1)); printf "\033[31mtick %s\033[0m\n" "$i"; sleep 1; done
''']
"#;

/// The same viewer with a real agent and a real process: what the process wrote reaches the
/// browser as text through the agent's log reader, its session's `Reply` call and the
/// manager's server-sent events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_processs_hostile_lines_are_shown_as_text() {
    use drover_tests::fleet::{Fleet, wait_for};
    drover_tests::init_logging();
    let fleet = Fleet::start_with(&["writer-1"], &[], &[], |dir| {
        let d = dir.join("service-types/printer");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("service.toml"), PRINTER).unwrap();
    })
    .await;
    let rest = &fleet.rest;
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "p", "type": "printer"}))).await;
    let body = json!({"role_type": "writer", "host_id": fleet.host_id("writer-1"), "name": "writer"});
    rest.ok(Method::POST, "/clusters/prod/services/p/roles", Some(body)).await;
    fleet.run_command("p", json!({"name": "start"}), WAIT).await;
    wait_for(WAIT, "the role's ticks in its log", || async {
        let v: serde_json::Value =
            rest.get("/api/v1/clusters/prod/services/p/roles/writer/logs?tail=5").await.map_err(|e| e.to_string())?;
        let texts = v["lines"].to_string();
        if texts.contains("tick 3") { Ok(()) } else { Err(texts) }
    })
    .await;

    let browser = Browser::start(fleet.root()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", fleet.manager.http_port);
    browser.goto(&format!("{base}/login")).await.unwrap();
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", &fleet.manager.password).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for_source("Home", WAIT).await.unwrap();
    browser.goto(&format!("{base}/clusters/prod/services/p/roles/writer")).await.unwrap();
    browser.wait_for_source("from a real process", WAIT).await.unwrap();
    // Followed: ticks keep coming.
    let ticks = || async {
        let texts = browser.texts("#log-view .log-line .text").await.unwrap();
        texts.iter().filter(|t| t.starts_with("tick ")).count()
    };
    let before = ticks().await;
    wait_for(WAIT, "new ticks in the viewer", || async {
        let now = ticks().await;
        if now > before + 2 { Ok(()) } else { Err(format!("{now} ticks, {before} before")) }
    })
    .await;
    let texts = browser.texts("#log-view .log-line .text").await.unwrap();
    assert!(texts.iter().any(|t| t == "<script>window.__xss = 'real'</script> from a real process"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "<img src=x onerror=window.__xss=2> on stderr"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "tick 1"), "ANSI codes stripped: {texts:?}");
    assert_nothing_ran(&browser).await;
    let stderr = browser.texts("#log-view .log-line.stream-stderr .text").await.unwrap();
    assert_eq!(stderr, ["<img src=x onerror=window.__xss=2> on stderr"], "the stderr line is marked as such");
    browser.execute("document.getElementById('log-viewer').scrollIntoView();", vec![]).await.unwrap();
    shot(&browser, "logs-role-real").await;
    browser.quit().await.unwrap();
    fleet.assert_quiet_manager(&[]);
}
