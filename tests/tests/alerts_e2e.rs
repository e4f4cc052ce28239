//! Alerts end to end (#13) with the real manager and agent binaries, a real
//! Redis from the redis parcel and real receivers on loopback
//! (`drover_testkit::receivers`): a webhook server checking the HMAC signature,
//! aiosmtpd and Prometheus Alertmanager.
//!
//! - A Redis primary with `maxmemory 4mb` filled over RESP turns concerning
//!   then bad in `/api/v1/health`; a rule created through REST fires and
//!   reaches all three receivers; FLUSHALL resolves it (webhook, Alertmanager,
//!   `/api/v1/alerts`, the history).
//! - A killed agent: `host_lost` fires once for its host (not once per role)
//!   and resolves when the agent comes back with the same data dir; under a
//!   silence, and under maintenance mode, the same kill is recorded as
//!   suppressed and notifies nobody.
//! - Bad rules are refused with 400 naming the problem.
//!
//! Run with `cargo build --workspace --bins && cargo test -p drover-tests --test alerts_e2e`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drover_manager::notify::AlertState;
use drover_manager::notify::webhook::WebhookPayload;
use drover_testkit::receivers::{self, Alertmanager, SmtpServer};
use drover_tests::fleet::{Fleet, wait_for};
use drover_tests::init_logging;
use drover_tests::parcels::build_parcel;
use drover_tests::procs::{ManagerProc, free_port};
use drover_tests::resp::{self, Reply};
use drover_tests::rest::Rest;
use reqwest::Method;
use serde_json::{Value, json};

/// Per phase; Redis metrics are collected every 10 s.
const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "e2e-webhook-secret";
/// How long a test waits to be sure a notification does not come (the
/// notifier's group_wait is 10 ms and its group_interval 1 s).
const QUIET: Duration = Duration::from_secs(4);

type WebhookServer = receivers::WebhookServer<WebhookPayload>;
type Hook = receivers::Hook<WebhookPayload>;

/// A notify configuration sending every alert, grouped by rule, to the given
/// receivers at once (group_wait 10 ms: the notifier refuses 0 s; group_interval 1 s).
fn notify_config(dir: &Path, webhook: &str, smtp_port: Option<u16>, alertmanager: Option<&str>) -> PathBuf {
    let mut yaml = format!(
        "route:\n  receiver: all\n  group_by: [alertname]\n  group_wait: 10ms\n  group_interval: 1s\n\
         receivers:\n  - name: all\n    webhook_configs:\n      - url: {webhook}\n        secret: {SECRET}\n"
    );
    if let Some(port) = smtp_port {
        yaml.push_str(&format!(
            "    email_configs:\n      - host: 127.0.0.1\n        port: {port}\n        tls: none\n\
             \x20       from: Drover <drover@example.org>\n        to: [oncall@example.org]\n"
        ));
    }
    if let Some(url) = alertmanager {
        yaml.push_str(&format!("    alertmanager_configs:\n      - url: {url}\n"));
    }
    let path = dir.join("notify.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A fleet ([`Fleet`]) with `--alerts-interval 1s` and `notify` as the
/// notification configuration, the redis parcel active on every host and
/// service `cache` of type redis.
async fn redis_fleet(hostnames: &[&str], notify: &Path) -> Fleet {
    let notify = notify.display().to_string();
    let flags = ["--host-lost-after", "3s", "--alerts-interval", "1s", "--notify-config", &notify];
    let fleet = Fleet::start(hostnames, &[build_parcel("redis", None)], &flags).await;
    fleet.rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    fleet
}

/// `GET path` under `/api/v1` answering 200, as a `Result` for [`wait_for`].
async fn get(rest: &Rest, path: &str) -> Result<Value, String> {
    rest.get::<Value>(&format!("/api/v1{path}")).await.map_err(|e| e.to_string())
}

/// The status and value of the role's `redis_memory` health test.
async fn redis_memory_test(rest: &Rest, role: &str) -> Result<(String, f64, Value), String> {
    let node = get(rest, &format!("/health?cluster=prod&service=cache&role={role}")).await?;
    let test = node["tests"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["test"] == "redis_memory"))
        .ok_or_else(|| format!("no redis_memory test yet: {node}"))?;
    let value = test["value"].as_f64().ok_or_else(|| format!("no value: {node}"))?;
    Ok((node["status"].as_str().unwrap_or_default().to_owned(), value, node))
}

/// `used_memory / maxmemory` from the Redis's own INFO.
async fn redis_ratio(port: u16) -> f64 {
    let info = resp::command(port, &["INFO", "memory"]).await.unwrap().text().unwrap();
    let num = |k: &str| -> f64 {
        info.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    num("used_memory:") / num("maxmemory:")
}

/// Writes 32 KiB values until the Redis reports `used_memory / maxmemory >=
/// target` or refuses a write (OOM under `noeviction`); returns the ratio.
async fn fill_to(port: u16, target: f64, next_key: &mut usize) -> f64 {
    let value = "v".repeat(32 << 10);
    loop {
        let ratio = redis_ratio(port).await;
        if ratio >= target {
            return ratio;
        }
        let key = format!("fill:{next_key}");
        *next_key += 1;
        match resp::command(port, &["SET", &key, &value]).await.unwrap() {
            Reply::Simple(ok) if ok == "OK" => {}
            Reply::Error(e) if e.starts_with("OOM") => return redis_ratio(port).await,
            other => panic!("SET {key}: {other:?}"),
        }
    }
}

/// The active alerts of `rule` in `/api/v1/alerts`.
async fn active_alerts(rest: &Rest, rule: &str) -> Result<Vec<Value>, String> {
    let v = get(rest, "/alerts").await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default().into_iter().filter(|a| a["rule"] == rule).collect())
}

/// `rule`'s history rows, oldest first.
async fn history(rest: &Rest, rule: &str) -> Result<Vec<Value>, String> {
    let v = get(rest, &format!("/alerts/history?rule={rule}&limit=1000")).await?;
    let mut rows = v["items"].as_array().cloned().unwrap_or_default();
    rows.reverse();
    Ok(rows)
}

/// The alerts of rule `rule` in accepted webhook notifications, with the
/// notification's index, whose label `key` is `value`.
fn hooked(hooks: &[Hook], rule: &str, key: &str, value: &str) -> Vec<(usize, AlertState)> {
    let mut out = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        for a in &h.payload.alerts {
            if a.labels.get("alertname").map(String::as_str) == Some(rule)
                && a.labels.get(key).map(String::as_str) == Some(value)
            {
                out.push((i, a.status));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_fills_fires_to_three_receivers_and_resolves() {
    init_logging();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hooks = WebhookServer::start(SECRET).await;
    let smtp = SmtpServer::plain(root).await;
    let am = Alertmanager::start().await;
    let notify = notify_config(root, &hooks.url, Some(smtp.port), Some(&am.url));
    let fleet = redis_fleet(&["cache-a"], &notify).await;
    let rest = &fleet.rest;
    let port = free_port();
    fleet.add_role("cache", "primary", "cache-a", "cache-primary", json!({"port": port})).await;
    let body = json!({"values": {"maxmemory": "4mb", "maxmemory_policy": "noeviction"}, "message": "a small cache"});
    rest.ok(Method::PATCH, "/clusters/prod/services/cache/config", Some(body)).await;
    fleet.run_command("cache", json!({"name": "start"}), WAIT).await;
    assert_eq!(resp::config_get(port, "maxmemory").await.unwrap(), (4u64 << 20).to_string());
    assert_eq!(resp::config_get(port, "maxmemory-policy").await.unwrap(), "noeviction");
    let rule = json!({
        "name": "redis_memory_high",
        "expr": "redis_memory_used_ratio > 0.95",
        "for": "0s",
        "severity": "critical",
        "annotations": {"summary": "Redis {{labels.role}} uses {{value}} of its maxmemory"},
    });
    rest.ok(Method::POST, "/alert-rules", Some(rule)).await;
    let running = Instant::now();
    eprintln!("redis: fleet up, role running, rule created after {:.1}s", started.elapsed().as_secs_f64());

    let (status, value, _) = wait_for(WAIT, "the redis_memory health test", || async {
        let got = redis_memory_test(rest, "cache-primary").await?;
        if got.0 == "good" { Ok(got) } else { Err(format!("{} {} (want good first)", got.0, got.1)) }
    })
    .await;
    eprintln!("redis: redis_memory {status} at {value:.3}, {:.1}s after the start", running.elapsed().as_secs_f64());

    // Concerning (>= 0.9) and below the rule's 0.95.
    let mut next_key = 0;
    let ratio = fill_to(port, 0.915, &mut next_key).await;
    assert!(ratio < 0.95, "filled to {ratio}, past the rule's threshold");
    let filled = Instant::now();
    let (_, value, _) = wait_for(WAIT, "the role concerning", || async {
        let got = redis_memory_test(rest, "cache-primary").await?;
        if got.0 == "concerning" && (0.9..0.98).contains(&got.1) { Ok(got) } else { Err(format!("{got:?}")) }
    })
    .await;
    eprintln!(
        "redis: concerning at {value:.3} ({next_key} keys, INFO said {ratio:.3}) {:.1}s after filling",
        filled.elapsed().as_secs_f64()
    );
    assert_eq!(active_alerts(rest, "redis_memory_high").await.unwrap(), Vec::<Value>::new());
    assert!(hooked(&hooks.received(), "redis_memory_high", "role", "cache-primary").is_empty());

    // Bad (>= 0.98): the rule fires.
    let ratio = fill_to(port, 0.985, &mut next_key).await;
    let filled = Instant::now();
    let (_, value, node) = wait_for(WAIT, "the role bad", || async {
        let got = redis_memory_test(rest, "cache-primary").await?;
        if got.0 == "bad" && got.1 >= 0.98 { Ok(got) } else { Err(format!("{got:?}")) }
    })
    .await;
    let seen_bad = filled.elapsed();
    let test = node["tests"].as_array().unwrap().iter().find(|t| t["test"] == "redis_memory").unwrap().clone();
    assert_eq!(test["status"], "bad", "{node}");
    let firing = wait_for(WAIT, "redis_memory_high firing", || async {
        let alerts = active_alerts(rest, "redis_memory_high").await?;
        match &alerts[..] {
            [a] if a["state"] == "firing" => Ok(a.clone()),
            _ => Err(format!("{alerts:?}")),
        }
    })
    .await;
    assert_eq!(firing["labels"]["role"], "cache-primary", "{firing}");
    assert_eq!(firing["labels"]["severity"], "critical", "{firing}");
    assert!(firing["value"].as_f64().unwrap() > 0.95, "{firing}");
    let fired = Instant::now();
    let hook = wait_for(WAIT, "the firing webhook notification", || async {
        let got = hooks.received();
        let alert = got.iter().flat_map(|h| &h.payload.alerts).find(|a| {
            a.labels.get("alertname").map(String::as_str) == Some("redis_memory_high") && a.status == AlertState::Firing
        });
        alert.cloned().ok_or_else(|| format!("received {got:?}; rejected {:?}", hooks.rejected()))
    })
    .await;
    let hook_after = fired.elapsed();
    assert_eq!(hook.labels.get("role").map(String::as_str), Some("cache-primary"), "{hook:?}");
    assert_eq!(hook.labels.get("cluster").map(String::as_str), Some("prod"), "{hook:?}");
    let summary = hook.annotations.get("summary").cloned().unwrap_or_default();
    assert!(
        summary.starts_with("Redis cache-primary uses 0.9") || summary.contains("cache-primary uses 1"),
        "{summary}"
    );
    let mail = wait_for(WAIT, "the firing e-mail", || async {
        let msgs = smtp.messages();
        msgs.iter().find(|m| m.contains("redis_memory_high")).cloned().ok_or_else(|| format!("{msgs:?}"))
    })
    .await;
    assert!(mail.contains("Subject: [FIRING:1] alertname=redis_memory_high"), "{mail}");
    assert!(mail.contains("X-Envelope-To: oncall@example.org"), "{mail}");
    assert!(mail.contains("role=cache-primary"), "{mail}");
    let mail_after = fired.elapsed();
    let listed = wait_for(WAIT, "the alert in Alertmanager", || async {
        let all = am.alerts().await.map_err(|e| e.to_string())?;
        all.iter().find(|a| a["labels"]["alertname"] == "redis_memory_high").cloned().ok_or_else(|| format!("{all:?}"))
    })
    .await;
    let am_after = fired.elapsed();
    assert_eq!(listed["labels"]["role"], "cache-primary", "{listed}");
    assert_eq!(listed["status"]["state"], "active", "{listed}");
    eprintln!(
        "redis: bad at {value:.3} {:.1}s after filling to {ratio:.3} ({next_key} keys); then webhook {:.2}s, e-mail {:.2}s, \
         Alertmanager {:.2}s after the alert showed firing",
        seen_bad.as_secs_f64(),
        hook_after.as_secs_f64(),
        mail_after.as_secs_f64(),
        am_after.as_secs_f64()
    );

    // FLUSHALL: resolved everywhere.
    assert_eq!(resp::command(port, &["FLUSHALL"]).await.unwrap(), Reply::Simple("OK".into()));
    let flushed = Instant::now();
    wait_for(WAIT, "the resolved webhook notification", || async {
        let got = hooked(&hooks.received(), "redis_memory_high", "role", "cache-primary");
        if got.iter().any(|(_, s)| *s == AlertState::Resolved) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
    let resolved_after = flushed.elapsed();
    wait_for(WAIT, "the alert gone from /api/v1/alerts", || async {
        let alerts = active_alerts(rest, "redis_memory_high").await?;
        if alerts.is_empty() { Ok(()) } else { Err(format!("{alerts:?}")) }
    })
    .await;
    wait_for(WAIT, "the alert gone from Alertmanager", || async {
        let all = am.alerts().await.map_err(|e| e.to_string())?;
        if all.iter().any(|a| a["labels"]["alertname"] == "redis_memory_high") {
            Err(format!("{all:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    wait_for(WAIT, "a resolved e-mail", || async {
        let msgs = smtp.messages();
        if msgs.iter().any(|m| m.contains("Subject: [RESOLVED:1] alertname=redis_memory_high")) {
            Ok(())
        } else {
            Err(format!("{msgs:?}"))
        }
    })
    .await;
    let rows = history(rest, "redis_memory_high").await.unwrap();
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "resolved"], "{rows:?}");
    assert!(rows.iter().all(|r| r["suppressed"] == false && r["labels"]["role"] == "cache-primary"), "{rows:?}");
    let (_, value, _) = redis_memory_test(rest, "cache-primary").await.unwrap();
    eprintln!(
        "redis: resolved webhook {:.1}s after FLUSHALL (ratio now {value:.3}); whole test {:.1}s",
        resolved_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let notes = hooked(&hooks.received(), "redis_memory_high", "role", "cache-primary");
    assert_eq!(notes.iter().filter(|(_, s)| *s == AlertState::Firing).count(), 1, "{notes:?}");
    assert!(hooks.rejected().is_empty(), "{:?}", hooks.rejected());
    fleet.assert_quiet_manager(&[]);
}

/// Kills agent `index` of host `host` and waits for `host_lost` of it in the
/// history after row `after`: returns the firing row.
async fn kill_until_lost(fleet: &mut Fleet, index: usize, host: &str, after: i64) -> Value {
    fleet.agents[index].kill();
    let killed = Instant::now();
    let row = wait_for(WAIT, &format!("host_lost of {host} firing"), || async {
        let rows = history(&fleet.rest, "host_lost").await?;
        rows.iter()
            .find(|r| r["id"].as_i64() > Some(after) && r["state"] == "firing" && r["labels"]["host"] == host)
            .cloned()
            .ok_or_else(|| format!("{rows:?}"))
    })
    .await;
    eprintln!("host_lost: {host} firing {:.1}s after the kill", killed.elapsed().as_secs_f64());
    row
}

/// Restarts the agent and waits for `host_lost` of `host` resolved after row `after`.
async fn restart_until_back(fleet: &mut Fleet, index: usize, host: &str, after: i64) -> Value {
    fleet.restart_agent(index, host);
    let restarted = Instant::now();
    let row = wait_for(WAIT, &format!("host_lost of {host} resolved"), || async {
        let rows = history(&fleet.rest, "host_lost").await?;
        rows.iter()
            .find(|r| r["id"].as_i64() > Some(after) && r["state"] == "resolved" && r["labels"]["host"] == host)
            .cloned()
            .ok_or_else(|| format!("{rows:?}"))
    })
    .await;
    wait_for(WAIT, "no host_lost active", || async {
        let a = active_alerts(&fleet.rest, "host_lost").await?;
        if a.is_empty() { Ok(()) } else { Err(format!("{a:?}")) }
    })
    .await;
    eprintln!("host_lost: {host} resolved {:.1}s after the agent restarted", restarted.elapsed().as_secs_f64());
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_notifies_once_and_not_when_silenced_or_in_maintenance() {
    init_logging();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hooks = WebhookServer::start(SECRET).await;
    let notify = notify_config(root, &hooks.url, None, None);
    let mut fleet = redis_fleet(&["node-a", "node-b"], &notify).await;
    fleet.add_role("cache", "primary", "node-a", "cache-primary", json!({"port": free_port()})).await;
    fleet.add_role("cache", "replica", "node-b", "cache-replica-1", json!({"port": free_port()})).await;
    fleet.add_role("cache", "replica", "node-b", "cache-replica-2", json!({"port": free_port()})).await;
    fleet.run_command("cache", json!({"name": "start"}), WAIT).await;
    eprintln!("host_lost: fleet up with three roles running after {:.1}s", started.elapsed().as_secs_f64());
    let b = fleet.agents.iter().position(|p| p.log.starts_with(fleet.root().join("node-b"))).unwrap();

    // Plain: one notification with one alert for node-b, then one resolved.
    let before = hooks.received().len();
    let lost = kill_until_lost(&mut fleet, b, "node-b", 0).await;
    assert_eq!(lost["suppressed"], false, "{lost}");
    let firing = wait_for(WAIT, "the host_lost webhook notification", || async {
        let got = hooked(&hooks.received(), "host_lost", "host", "node-b");
        if got.is_empty() { Err(format!("{:?}; rejected {:?}", hooks.received(), hooks.rejected())) } else { Ok(got) }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let during: Vec<Hook> = hooks.received()[before..].to_vec();
    let firing_again = hooked(&during, "host_lost", "host", "node-b");
    assert_eq!(firing_again, firing, "host_lost notified again while nothing changed: {during:?}");
    assert_eq!(firing, [(0, AlertState::Firing)], "{during:?}");
    // Nothing about node-b's roles: the lost host is the one alert.
    let of_b: Vec<_> = during
        .iter()
        .flat_map(|h| &h.payload.alerts)
        .filter(|a| a.labels.get("host").map(String::as_str) == Some("node-b"))
        .map(|a| a.labels.get("alertname").cloned().unwrap_or_default())
        .collect();
    assert_eq!(of_b, ["host_lost"], "{during:?}");
    let lost_alerts = active_alerts(&fleet.rest, "host_lost").await.unwrap();
    assert_eq!(lost_alerts.len(), 1, "{lost_alerts:?}");
    let back = restart_until_back(&mut fleet, b, "node-b", lost["id"].as_i64().unwrap()).await;
    assert_eq!(back["suppressed"], false, "{back}");
    wait_for(WAIT, "the resolved host_lost notification", || async {
        let got = hooked(&hooks.received(), "host_lost", "host", "node-b");
        if got.iter().any(|(_, s)| *s == AlertState::Resolved) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
    let notified = hooks.received().len();

    // A silence on the host: recorded as suppressed, nothing sent.
    let silence = fleet
        .rest
        .ok(
            Method::POST,
            "/silences",
            Some(json!({"matchers": [{"name": "host", "op": "=", "value": "node-b"}], "duration": "1h", "comment": "e2e"})),
        )
        .await;
    let last = back["id"].as_i64().unwrap();
    let lost = kill_until_lost(&mut fleet, b, "node-b", last).await;
    assert_eq!(lost["suppressed"], true, "{lost}");
    let silenced = active_alerts(&fleet.rest, "host_lost").await.unwrap();
    assert!(
        silenced.len() == 1 && silenced[0]["silenced_by"] == json!([silence["id"].clone()]),
        "{silenced:?} (silence {silence})"
    );
    tokio::time::sleep(QUIET).await;
    let back = restart_until_back(&mut fleet, b, "node-b", lost["id"].as_i64().unwrap()).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(hooks.received()[notified..].len(), 0, "notified under a silence: {:?}", &hooks.received()[notified..]);
    eprintln!("host_lost: resolved under the silence, suppressed={}", back["suppressed"]);
    let id = silence["id"].as_str().unwrap();
    fleet.rest.ok(Method::DELETE, &format!("/silences/{id}"), None).await;

    // Maintenance mode on the host: likewise.
    fleet.rest.ok(Method::PUT, "/maintenance/host/node-b", Some(json!({"comment": "e2e"}))).await;
    let lost = kill_until_lost(&mut fleet, b, "node-b", back["id"].as_i64().unwrap()).await;
    assert_eq!(lost["suppressed"], true, "{lost}");
    let muted = active_alerts(&fleet.rest, "host_lost").await.unwrap();
    assert!(muted.len() == 1 && muted[0]["in_maintenance"] == true, "{muted:?}");
    tokio::time::sleep(QUIET).await;
    let back = restart_until_back(&mut fleet, b, "node-b", lost["id"].as_i64().unwrap()).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(hooks.received()[notified..].len(), 0, "notified in maintenance: {:?}", &hooks.received()[notified..]);
    eprintln!("host_lost: resolved in maintenance, suppressed={}", back["suppressed"]);
    fleet.rest.ok(Method::DELETE, "/maintenance/host/node-b", None).await;

    let rows = history(&fleet.rest, "host_lost").await.unwrap();
    let seen: Vec<(String, bool)> = rows
        .iter()
        .filter(|r| r["labels"]["host"] == "node-b")
        .map(|r| (r["state"].as_str().unwrap().to_owned(), r["suppressed"].as_bool().unwrap()))
        .collect();
    eprintln!("host_lost: history of node-b {seen:?}; whole test {:.1}s", started.elapsed().as_secs_f64());
    assert!(rows.iter().all(|r| r["labels"]["host"] == "node-b"), "only node-b was lost: {rows:?}");
    assert!(hooks.rejected().is_empty(), "{:?}", hooks.rejected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_naming_the_problem() {
    init_logging();
    let tmp = tempfile::tempdir().unwrap();
    let mut manager = ManagerProc::start(&tmp.path().join("manager"), free_port(), free_port(), &[]).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let cases = [
        (json!({"name": "bad_metric", "expr": "no_such_metric > 1", "severity": "warning"}), "no_such_metric"),
        (
            json!({"name": "bad_for", "expr": "host_up == 0", "for": "5 minutes please", "severity": "warning"}),
            "5 minutes please",
        ),
        (json!({"name": "bad_expr", "expr": "host_up ==", "severity": "warning"}), "expr"),
    ];
    for (body, named) in cases {
        let name = body["name"].as_str().unwrap().to_owned();
        let (status, answer) = rest.raw(Method::POST, "/api/v1/alert-rules", Some(body.clone())).await.unwrap();
        let message = answer["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| answer.to_string());
        eprintln!("bad rule {name}: HTTP {status}: {message}");
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(message.contains(named), "{body} -> {message} (should name {named:?})");
        let (status, _) = rest.raw(Method::GET, &format!("/api/v1/alert-rules/{name}"), None).await.unwrap();
        assert_eq!(status, 404, "{name} was created");
    }
    let errors = manager.proc.unexpected_errors(&[]);
    assert!(errors.is_empty(), "{errors:?}");
}
