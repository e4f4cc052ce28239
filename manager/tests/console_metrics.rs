//! The console's charts over HTTP: the host, role and service pages draw
//! the stored metric series (heartbeats handed to the registry as the gRPC
//! session does, written by the flusher) as SVG charts with summaries,
//! legends and per-point titles; the range, zoom, earlier and later links;
//! a sentence instead of charts while there is no data; bad windows
//! refused with a 400 naming the problem.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Page, T, between};
use drover_manager::domain::metrics::{ProcessFigures, RoleReport, Sample};
use drover_manager::model::{DiskUsage, HostMetrics, now_millis};
use reqwest::Method;
use serde_json::json;

fn host_metrics(cpu: f64) -> HostMetrics {
    HostMetrics {
        cpu_percent: cpu,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        load1: 0.5,
        disks: vec![
            DiskUsage { mount_point: "/".into(), used_bytes: 25, total_bytes: 100 },
            DiskUsage { mount_point: "/data".into(), used_bytes: 75, total_bytes: 100 },
        ],
        load5: 0.5,
        load15: 0.5,
        network_rx_bytes: 1000,
        network_tx_bytes: 2000,
        uptime_seconds: 60,
        at: String::new(),
    }
}

fn sample(name: &str, value: f64, at_ms: i64) -> Sample {
    Sample { name: name.into(), value, labels: BTreeMap::new(), at_ms }
}

/// prod/cache (redis): primary on h1, replica on h2, both with three
/// reports a minute apart; prod/web (nginx): a server on h2 that never
/// reported. Returns the role names (primary, replica, server).
async fn fleet(t: &T) -> (String, String, String) {
    t.host("h1", "h1.example", "10.0.0.1").await;
    t.host("h2", "h2.example", "10.0.0.2").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1", "h2"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "web", "type": "nginx"}))).await;
    for (svc, role_type, host) in [("cache", "primary", "h1"), ("cache", "replica", "h2"), ("web", "server", "h2")] {
        t.ok(
            Method::POST,
            &format!("/clusters/prod/services/{svc}/roles"),
            Some(json!({"role_type": role_type, "host_id": host})),
        )
        .await;
    }
    let mut roles: BTreeMap<String, (String, String)> = BTreeMap::new();
    for svc in ["cache", "web"] {
        let list = t.ok(Method::GET, &format!("/clusters/prod/services/{svc}/roles"), None).await;
        for r in list["items"].as_array().unwrap() {
            let rt = r["role_type"].as_str().unwrap().to_owned();
            roles.insert(rt, (r["name"].as_str().unwrap().to_owned(), r["id"].as_str().unwrap().to_owned()));
        }
    }
    let state = t.handle.state.clone();
    let (p_id, r_id) = (roles["primary"].1.clone(), roles["replica"].1.clone());
    drover_testkit::eventually_true(Duration::from_secs(10), "the roles in the registry", || {
        state.registry.desired_role("h1", &p_id).is_some() && state.registry.desired_role("h2", &r_id).is_some()
    })
    .await;
    let reg = &state.registry;
    let now = now_millis();
    for i in 0..3i64 {
        let at = now - (2 - i) * 60_000;
        let n = (i + 1) as f64;
        let process = ProcessFigures {
            cpu_percent: 2.0 * n,
            rss_bytes: 5 << 20,
            threads: 4,
            open_fds: 12,
            uptime_seconds: 100,
            restarts: 1,
            last_exit_status: 0,
        };
        let redis = |clients: f64| {
            vec![
                sample("redis_used_memory_bytes", n * 1024.0 * 1024.0, at),
                sample("redis_maxmemory_bytes", 0.0, at),
                sample("redis_connected_clients", clients, at),
                sample("redis_keyspace_hits_total", 100.0 * n * n, at),
            ]
        };
        let primary = RoleReport {
            role_id: p_id.clone(),
            process: Some(process.clone()),
            samples: redis(n),
            collect_error: String::new(),
        };
        let replica = RoleReport {
            role_id: r_id.clone(),
            process: Some(process),
            samples: redis(10.0 * n),
            collect_error: String::new(),
        };
        assert!(reg.heartbeat_with_roles("h1", host_metrics(10.0 * n), vec![primary]));
        assert!(reg.heartbeat_with_roles("h2", host_metrics(20.0), vec![replica]));
    }
    reg.flush().await.unwrap();
    // The minute and hour rollups the manager's maintenance makes.
    drover_manager::domain::metrics::roll_up(&state.store, now_millis()).await.unwrap();
    (roles["primary"].0.clone(), roles["replica"].0.clone(), roles["server"].0.clone())
}

/// The `<figure>` of the chart titled `title`.
fn figure<'a>(page: &'a Page, title: &str) -> &'a str {
    let start = page.html.find(&format!("<figure class=\"chart-box\" data-title=\"{title}\">")).unwrap_or_else(|| {
        panic!("no chart {title:?} in {}", page.html);
    });
    let len = page.html[start..].find("</figure>").unwrap();
    &page.html[start..start + len]
}

/// With `DROVER_CONSOLE_HTML_DIR` set, writes the page there (its style
/// sheet pointed at web/static) for looking at in a browser.
fn keep(page: &Page, name: &str) {
    if let Ok(dir) = std::env::var("DROVER_CONSOLE_HTML_DIR") {
        let css = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/static/drover.css");
        let html = page.html.replace("/static/drover.css", &format!("file://{css}"));
        std::fs::write(format!("{dir}/{name}.html"), html).unwrap();
    }
}

fn summary(fig: &str) -> &str {
    between(fig, "<span class=\"summary\">", "</span>").unwrap()
}

fn legend(fig: &str) -> Vec<String> {
    fig.split("<i class=\"sw ").skip(1).map(|l| between(l, "</i>", " <span").unwrap().to_owned()).collect()
}

#[tokio::test]
async fn pages_chart_the_stored_series() {
    let t = T::start().await;
    let (primary, replica, server) = fleet(&t).await;
    let c = t.console().await;

    // A role's page: its process and the service metrics of its type.
    let role = c.get(&format!("/clusters/prod/services/cache/roles/{primary}")).await;
    assert_eq!(role.status, 200, "{}", role.html);
    keep(&role, "role");
    let mem = figure(&role, "Used memory");
    assert!(mem.contains("<svg") && mem.contains("<title>Used memory</title>"), "{mem}");
    // maxmemory 0 (no limit) is not drawn: one line.
    assert_eq!(summary(mem), "latest 3.0 MiB, lowest 1.0 MiB, highest 3.0 MiB (3 points)");
    assert_eq!(mem.matches("<polyline").count(), 1);
    // Every point's time and value on hover.
    assert_eq!(mem.matches("<circle").count(), 3);
    assert!(mem.contains(" UTC 2.0 MiB</title></circle>"), "{mem}");
    assert_eq!(summary(figure(&role, "Connected clients")), "latest 3, lowest 1, highest 3 (3 points)");
    // A counter as a rate (100, 400, 900 a minute apart; steps start on 18 s boundaries).
    let hits = summary(figure(&role, "Keyspace hits and misses per second"));
    assert!(hits.starts_with("latest ") && hits.ends_with("/s (2 points)"), "{hits}");
    assert!(summary(figure(&role, "CPU used")).starts_with("latest 6%"), "{}", role.html);
    assert!(summary(figure(&role, "Resident memory")).starts_with("latest 5.0 MiB"));
    assert!(summary(figure(&role, "Restarts")).starts_with("latest 1,"));
    // What has no data is named; created roles are stopped until started.
    assert!(role.html.contains("No data in this range: Commands per second, Keys, Replication lag."), "{}", role.html);
    assert!(role.html.contains("id=\"role-stopped\""));

    // The service's dashboard: a line per role, and the roles up per type.
    let svc = c.get("/clusters/prod/services/cache").await;
    assert_eq!(svc.status, 200, "{}", svc.html);
    keep(&svc, "service");
    let clients = figure(&svc, "Connected clients");
    assert_eq!(legend(clients), vec![primary.clone(), replica.clone()]);
    assert!(summary(clients).contains(&format!("{replica} latest 30")), "{clients}");
    assert!(clients.contains("<g class=\"s0\">") && clients.contains("<g class=\"s1\">"));
    assert_eq!(legend(figure(&svc, "Roles up by role type")), vec!["primary", "replica"]);

    // The host's page, from the new series.
    let host = c.get("/hosts/h1").await;
    assert_eq!(host.status, 200, "{}", host.html);
    keep(&host, "host");
    // Host figures are stamped when they arrive: the three came at once, the last one kept.
    assert_eq!(summary(figure(&host, "CPU used")), "latest 30%, lowest 30%, highest 30% (1 points)");
    assert_eq!(legend(figure(&host, "Disk used per mount")), vec!["/", "/data"]);
    assert_eq!(legend(figure(&host, "Memory used")), vec!["used", "total"]);

    // No data: a sentence, and for a stopped role that it is stopped.
    let quiet = c.get(&format!("/clusters/prod/services/web/roles/{server}")).await;
    assert_eq!(quiet.status, 200);
    keep(&quiet, "role-no-data");
    assert!(!quiet.html.contains("<svg class=\"chart\""), "{}", quiet.html);
    assert!(quiet.html.contains("This role is stopped: its metrics appear once it runs and its agent reports them."));
}

/// The href of the link of class `class`.
fn link<'a>(html: &'a str, class: &str) -> &'a str {
    let end = html.find(&format!("\" class=\"{class}\"")).unwrap_or_else(|| panic!("no {class} link in {html}"));
    &html[html[..end].rfind("<a href=\"").unwrap() + 9..end]
}

#[tokio::test]
async fn ranges_zoom_and_bad_windows() {
    let t = T::start().await;
    let (primary, _, _) = fleet(&t).await;
    let c = t.console().await;
    let base = format!("/clusters/prod/services/cache/roles/{primary}");

    let day = c.get(&format!("{base}?range=24h")).await;
    assert_eq!(day.status, 200);
    assert!(day.html.contains("Metrics <small>last 24h</small>"));
    assert!(
        day.html
            .contains(&format!("<a href=\"{base}?range=24h#metrics\" class=\"range\" aria-current=\"true\">24h</a>")),
        "{}",
        day.html
    );
    assert!(day.html.contains("class=\"zoom-half\""), "{}", day.html);
    // Minute rollups in 8-minute steps: the three reports in one or two steps.
    let day_mem = summary(figure(&day, "Used memory"));
    assert!(day_mem.starts_with("latest ") && day_mem.contains(" MiB"), "{day_mem}");

    // Zoom in: half the range around its middle; zoom out doubles it.
    let hour = c.get(&base).await;
    let zoom_in = link(&hour.html, "zoom-in");
    assert!(zoom_in.starts_with(&format!("{base}?from=")), "{zoom_in}");
    let zoomed = c.get(zoom_in.trim_end_matches("#metrics")).await;
    assert_eq!(zoomed.status, 200, "{}", zoomed.html);
    let label = between(&zoomed.html, "Metrics <small>", "</small>").unwrap();
    let (from, to) = label.split_once(" to ").unwrap();
    let minutes = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s.trim_end_matches(" UTC"), "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp()
            / 60
    };
    assert!((29..=31).contains(&(minutes(to) - minutes(from))), "{label}");
    // The middle half of the last hour ended 15 minutes ago: no points, and a later link.
    assert!(zoomed.html.contains("No data in this range") || zoomed.html.contains("no-metrics"), "{}", zoomed.html);
    assert!(zoomed.html.contains("class=\"later\""), "a zoomed window in the past can move later");
    // Clicking a chart's right half: the last half hour, with the last points.
    let halves: Vec<&str> =
        hour.html.split("\" class=\"zoom-half\"").filter_map(|s| s.rsplit("<a href=\"").next()).take(2).collect();
    assert!(halves[1].starts_with(&format!("{base}?from=")), "{halves:?}");
    let right = c.get(halves[1].trim_end_matches("#metrics")).await;
    assert_eq!(right.status, 200);
    assert!(summary(figure(&right, "Used memory")).starts_with("latest 3.0 MiB"), "{}", right.html);
    let out = c.get(link(&zoomed.html, "zoom-out").trim_end_matches("#metrics")).await;
    assert_eq!(out.status, 200);
    let label = between(&out.html, "Metrics <small>", "</small>").unwrap();
    let (from, to) = label.split_once(" to ").unwrap();
    assert!((59..=61).contains(&(minutes(to) - minutes(from))), "{label}");

    // Bad windows: 400 naming the problem.
    for (q, want) in [
        ("range=2w", "unknown range"),
        ("from=yesterday", "from must be an RFC 3339 time"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "must be before"),
        ("to=2026-01-01T00:00:00Z", "to needs from"),
    ] {
        for page in [format!("{base}?{q}"), format!("/clusters/prod/services/cache?{q}"), format!("/hosts/h1?{q}")] {
            let p = c.get(&page).await;
            assert_eq!(p.status, 400, "{page}: {}", p.html);
            assert!(p.html.contains(want), "{page}: {}", p.html);
        }
    }
}

/// A service type from the data directory alone (DATA_DIR/service-types):
/// a dashboard whose charts only its descriptor names, and a type without.
const QUEUE: &str = r#"
name = "queue"
display_name = "Queue"
version = "1"

[[role_types]]
name = "broker"
[role_types.process]
program = "/bin/sleep"
args = ["1000"]
[[role_types.metrics]]
prometheus = { url = "http://127.0.0.1:9100/metrics" }

[[role_types]]
name = "gateway"
[role_types.process]
program = "/bin/sleep"
args = ["1000"]
[[role_types.metrics]]
command = { program = "/bin/true" }

[[dashboard]]
title = "Messages per second"
unit = "per_second"
lines = [
  { metric = "queue_messages_in_total", label = "in", stat = "rate" },
  { metric = "queue_messages_out_total", label = "out", stat = "rate" },
]

[[dashboard]]
title = "Depth by role type"
unit = "count"
lines = [{ metric = "queue_depth", label = "depth", sum_by = "role_type" }]

[[dashboard]]
title = "Oldest message"
unit = "seconds"
role_types = ["broker"]
[[dashboard.lines]]
metric = "queue_oldest_age_seconds"
label = "age"
stat = "last"
"#;

const PLAIN: &str = r#"
name = "plain"
version = "1"

[[role_types]]
name = "worker"
[role_types.process]
program = "/bin/sleep"
args = ["1000"]
"#;

#[tokio::test]
async fn a_descriptor_only_type_brings_its_dashboard() {
    let t = T::start_with(|dir| {
        for (name, text) in [("queue", QUEUE), ("plain", PLAIN)] {
            let d = dir.join("service-types").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("service.toml"), text).unwrap();
        }
    })
    .await;
    t.host("h1", "h1.example", "10.0.0.1").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1"]}))).await;
    for (svc, ty) in [("q", "queue"), ("p", "plain")] {
        t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": svc, "type": ty}))).await;
    }
    for (svc, role_type) in [("q", "broker"), ("q", "gateway"), ("p", "worker")] {
        t.ok(
            Method::POST,
            &format!("/clusters/prod/services/{svc}/roles"),
            Some(json!({"role_type": role_type, "host_id": "h1"})),
        )
        .await;
    }
    let mut roles: BTreeMap<String, (String, String)> = BTreeMap::new();
    for svc in ["q", "p"] {
        let list = t.ok(Method::GET, &format!("/clusters/prod/services/{svc}/roles"), None).await;
        for r in list["items"].as_array().unwrap() {
            let rt = r["role_type"].as_str().unwrap().to_owned();
            roles.insert(rt, (r["name"].as_str().unwrap().to_owned(), r["id"].as_str().unwrap().to_owned()));
        }
    }
    let (broker, gateway, worker) = (roles["broker"].clone(), roles["gateway"].clone(), roles["worker"].clone());
    let state = t.handle.state.clone();
    drover_testkit::eventually_true(Duration::from_secs(10), "the roles in the registry", || {
        [&broker.1, &gateway.1].iter().all(|id| state.registry.desired_role("h1", id).is_some())
    })
    .await;
    let now = now_millis();
    for i in 0..3i64 {
        let at = now - (2 - i) * 60_000;
        let n = (i + 1) as f64;
        let report = |id: &str, samples: Vec<Sample>| RoleReport {
            role_id: id.to_owned(),
            process: None,
            samples,
            collect_error: String::new(),
        };
        let reports = vec![
            report(
                &broker.1,
                vec![
                    sample("queue_messages_in_total", 600.0 * n * n, at),
                    sample("queue_messages_out_total", 60.0 * n * n, at),
                    sample("queue_depth", 10.0 * n, at),
                    sample("queue_oldest_age_seconds", 48.0 * n, at),
                ],
            ),
            report(&gateway.1, vec![sample("queue_depth", 1.0, at)]),
        ];
        assert!(state.registry.heartbeat_with_roles("h1", host_metrics(5.0), reports));
    }
    state.registry.flush().await.unwrap();
    drover_manager::domain::metrics::roll_up(&state.store, now_millis()).await.unwrap();
    let c = t.console().await;

    // The service page: the descriptor's charts after the roles up, a line per role and line.
    let svc = c.get("/clusters/prod/services/q").await;
    assert_eq!(svc.status, 200, "{}", svc.html);
    keep(&svc, "service-descriptor-dashboard");
    let titles: Vec<&str> = svc
        .html
        .split("<figure class=\"chart-box\" data-title=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(titles, ["Roles up by role type", "Messages per second", "Depth by role type", "Oldest message"]);
    let messages = figure(&svc, "Messages per second");
    assert_eq!(legend(messages), vec![format!("{} in", broker.0), format!("{} out", broker.0)]);
    // Counters as rates (steps start on 18 s boundaries, so not exactly 30/s and 50/s).
    let rates = summary(messages);
    assert!(rates.starts_with(&format!("{} in latest ", broker.0)) && rates.contains("/s"), "{messages}");
    // Summed by role type: one line per type, named by it.
    let depth = figure(&svc, "Depth by role type");
    assert_eq!(legend(depth), vec!["broker", "gateway"]);
    assert_eq!(summary(depth), "broker latest 30; gateway latest 1", "{depth}");
    assert!(summary(figure(&svc, "Oldest message")).starts_with("latest 2.4 min"), "{}", svc.html);
    assert!(!svc.html.contains("id=\"no-dashboard\""));

    // A role's page shows the charts of its role type only.
    let page = c.get(&format!("/clusters/prod/services/q/roles/{}", gateway.0)).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert_eq!(summary(figure(&page, "Depth by role type")), "latest 1, lowest 1, highest 1 (3 points)");
    assert!(!page.html.contains("Oldest message"), "{}", page.html);
    assert!(page.html.contains("No data in this range: Messages per second."), "{}", page.html);
    let page = c.get(&format!("/clusters/prod/services/q/roles/{}", broker.0)).await;
    assert!(summary(figure(&page, "Oldest message")).starts_with("latest 2.4 min"), "{}", page.html);

    // A type without dashboard says so, on its service's page and its roles' pages.
    let plain = c.get("/clusters/prod/services/p").await;
    assert_eq!(plain.status, 200, "{}", plain.html);
    keep(&plain, "service-no-dashboard");
    assert!(
        between(&plain.html, "id=\"no-dashboard\">", "</p>")
            .unwrap()
            .starts_with("This service type declares no dashboard.")
    );
    let page = c.get(&format!("/clusters/prod/services/p/roles/{}", worker.0)).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(
        between(&page.html, "<div id=\"service-charts\">", "</div>")
            .unwrap()
            .contains("This service type declares no dashboard."),
        "{}",
        page.html
    );
    // A shipped type's page has its dashboard.
    assert!(!c.get("/clusters/prod/services/q").await.html.contains("declares no dashboard"));
    t.handle.shutdown().await;
}
