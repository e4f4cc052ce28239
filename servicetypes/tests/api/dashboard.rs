//! Dashboards (`[[dashboard]]` with `[[dashboard.lines]]`): parsed, every field checked at load
//! with an error naming it, metrics checked against what the role types' sources yield, the
//! shipped types' charts, and the collectors' sample lists against docs/metrics.md.

use drover_service_types::dashboard::{
    ChartUnit, LineStat, NGINX_SAMPLES, REDIS_SAMPLES, ROLE_PROCESS_METRICS, ZOOKEEPER_SAMPLES,
};
use drover_service_types::descriptor::{Catalog, ServiceType};
use expect_test::expect;

use crate::{BASE, templates};

const APP: (&str, &str) = ("app.conf.hbs", "port={{config.port}}\n");

/// BASE with a Prometheus source on `main` and a Redis source on `worker`, then `dashboard`.
fn with_sources(dashboard: &str) -> String {
    let main = "args = [\"--port\", \"{{config.port}}\"]\n";
    let worker = "program = \"/bin/worker\"\n";
    BASE.replace(
        main,
        &format!("{main}\n[[role_types.metrics]]\nprometheus = {{ url = \"http://127.0.0.1:{{{{config.port}}}}/metrics\" }}\n"),
    )
    .replace(worker, &format!("{worker}\n[[role_types.metrics]]\nredis = {{ port = 6379 }}\n"))
        + "\n"
        + dashboard
}

fn parse(toml: &str) -> Result<ServiceType, String> {
    ServiceType::parse("parcels/svc", toml, &templates(&[APP])).map_err(|e| e.to_string())
}

#[test]
fn charts_are_parsed_in_order_with_their_lines() {
    let st = parse(&with_sources(
        r#"
[[dashboard]]
title = "Requests"
unit = "per_second"
max = 1000.0
role_types = ["main"]

[[dashboard.lines]]
metric = "app_requests_total"
label = "requests"
stat = "rate"

[[dashboard.lines]]
metric = "app_errors_total"
stat = "rate"
hide_zero = true

[[dashboard]]
title = "Memory by role type"
unit = "bytes"
lines = [{ metric = "role_memory_rss_bytes", label = "RSS", sum_by = "role_type" }]

[[dashboard]]
title = "Clients"
unit = "count"
role_types = ["worker"]
lines = [{ metric = "redis_connected_clients", stat = "last" }, { metric = "redis_keys", sum_by = "db" }]
"#,
    ))
    .unwrap();
    expect![[r#"
        [
          {
            "title": "Requests",
            "unit": "per_second",
            "max": 1000.0,
            "role_types": [
              "main"
            ],
            "lines": [
              {
                "metric": "app_requests_total",
                "label": "requests",
                "stat": "rate",
                "sum_by": null,
                "hide_zero": false
              },
              {
                "metric": "app_errors_total",
                "label": "app_errors_total",
                "stat": "rate",
                "sum_by": null,
                "hide_zero": true
              }
            ]
          },
          {
            "title": "Memory by role type",
            "unit": "bytes",
            "max": null,
            "role_types": [],
            "lines": [
              {
                "metric": "role_memory_rss_bytes",
                "label": "RSS",
                "stat": "avg",
                "sum_by": "role_type",
                "hide_zero": false
              }
            ]
          },
          {
            "title": "Clients",
            "unit": "count",
            "max": null,
            "role_types": [
              "worker"
            ],
            "lines": [
              {
                "metric": "redis_connected_clients",
                "label": "redis_connected_clients",
                "stat": "last",
                "sum_by": null,
                "hide_zero": false
              },
              {
                "metric": "redis_keys",
                "label": "redis_keys",
                "stat": "avg",
                "sum_by": "db",
                "hide_zero": false
              }
            ]
          }
        ]"#]]
    .assert_eq(&serde_json::to_string_pretty(&st.dashboard).unwrap());
    // A role's page shows the charts of its own type and those of every type.
    let titles = |rt: &str| -> Vec<&str> {
        st.dashboard.iter().filter(|c| c.applies_to(rt)).map(|c| c.title.as_str()).collect()
    };
    assert_eq!(titles("main"), ["Requests", "Memory by role type"]);
    assert_eq!(titles("worker"), ["Memory by role type", "Clients"]);
    // No dashboard: none.
    assert!(parse(BASE).unwrap().dashboard.is_empty());
}

/// Each broken chart is refused naming the chart, the line and the field.
#[test]
fn bad_charts_are_refused_naming_the_field() {
    let chart = |body: &str| with_sources(&format!("[[dashboard]]\n{body}\n"));
    let ok_line = "lines = [{ metric = \"app_up\" }]";
    let cases: Vec<(String, &str)> = vec![
        (chart(&format!("unit = \"count\"\n{ok_line}")), "dashboard[0].title: must not be empty"),
        (chart(&format!("title = \" \"\nunit = \"count\"\n{ok_line}")), "dashboard[0].title: must not be empty"),
        (
            chart(&format!("title = \"T\"\n{ok_line}")),
            "dashboard[0].unit: missing (one of bytes, bytes_per_second, percent, ratio, count, per_second, ms, seconds, number)",
        ),
        (
            chart(&format!("title = \"T\"\nunit = \"kg\"\n{ok_line}")),
            "dashboard[0].unit: unknown unit `kg` (expected one of bytes, bytes_per_second, percent, ratio, count, per_second, ms, seconds, number)",
        ),
        (
            chart(&format!("title = \"T\"\nunit = \"ratio\"\nmax = 0.0\n{ok_line}")),
            "dashboard[0].max: 0 is not a number greater than 0",
        ),
        (
            chart(&format!("title = \"T\"\nunit = \"ratio\"\nmax = -1.0\n{ok_line}")),
            "dashboard[0].max: -1 is not a number greater than 0",
        ),
        (
            chart(&format!("title = \"T\"\nunit = \"count\"\nrole_types = [\"nope\"]\n{ok_line}")),
            "dashboard[0].role_types: role type `nope` does not exist",
        ),
        (
            chart(&format!("title = \"T\"\nunit = \"count\"\nrole_types = [\"main\", \"main\"]\n{ok_line}")),
            "dashboard[0].role_types: `main` is listed twice",
        ),
        (
            chart("title = \"T\"\nunit = \"count\""),
            "dashboard[0].lines: a chart needs at least one line ([[dashboard.lines]] with a metric)",
        ),
        (
            chart("title = \"T\"\nunit = \"count\"\nlines = [{ label = \"x\" }]"),
            "dashboard[0].lines[0].metric: missing (the metric name the line draws)",
        ),
        (
            chart("title = \"T\"\nunit = \"count\"\nlines = [{ metric = \"app-up\" }]"),
            "dashboard[0].lines[0].metric: `app-up` is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
        ),
        (
            chart("title = \"T\"\nunit = \"count\"\nlines = [{ metric = \"app_up\", label = \"\" }]"),
            "dashboard[0].lines[0].label: must not be empty (leave it out for the metric name)",
        ),
        (
            chart("title = \"T\"\nunit = \"count\"\nlines = [{ metric = \"app_up\", stat = \"p99\" }]"),
            "dashboard[0].lines[0].stat: unknown stat `p99` (expected one of avg, max, last, rate)",
        ),
        (
            chart("title = \"T\"\nunit = \"count\"\nlines = [{ metric = \"app_up\", sum_by = \"role type\" }]"),
            "dashboard[0].lines[0].sum_by: `role type` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (
            chart(
                "title = \"T\"\nunit = \"count\"\nlines = [{ metric = \"app_up\" }, { metric = \"app_up\", label = \"again\" }]",
            ),
            "dashboard[0].lines[1]: the same metric, stat and sum_by as lines[0]",
        ),
        (
            chart("title = \"T\"\nunit = \"count\"\nlines = [{ metric = \"app_up\", colour = \"red\" }]"),
            "invalid TOML at line",
        ),
        (chart(&format!("title = \"T\"\nunit = \"count\"\nsize = 3\n{ok_line}")), "invalid TOML at line"),
        (
            with_sources(&format!(
                "[[dashboard]]\ntitle = \"T\"\nunit = \"count\"\n{ok_line}\n[[dashboard]]\ntitle = \"T\"\nunit = \"ms\"\n{ok_line}\n"
            )),
            "dashboard[1].title: `T` is already the title of dashboard[0]",
        ),
        // Only the worker's Redis source yields the chart's metrics.
        (
            chart("title = \"T\"\nunit = \"count\"\nrole_types = [\"worker\"]\nlines = [{ metric = \"app_up\" }]"),
            "dashboard[0].lines[0].metric: no metric source of role type `worker` yields `app_up` (redis: redis_connected_clients, redis_used_memory_bytes, ",
        ),
        (
            chart(
                "title = \"T\"\nunit = \"count\"\nrole_types = [\"worker\"]\nlines = [{ metric = \"zookeeper_znode_count\" }]",
            ),
            "dashboard[0].lines[0].metric: no metric source of role type `worker` yields `zookeeper_znode_count`",
        ),
        // Without a source, only the process metrics.
        (
            format!("{BASE}\n[[dashboard]]\ntitle = \"T\"\nunit = \"count\"\nlines = [{{ metric = \"app_up\" }}]\n"),
            "dashboard[0].lines[0].metric: `app_up` is not a role process metric (role_*) and role type `main`, `worker` has no metric source",
        ),
        (
            format!("{BASE}\n[[metrics_catalog]]\nname = \"app_up\"\ntitle = \"Up\"\nunit = \"count\"\n"),
            "metrics_catalog: replaced by [[dashboard]] charts with [[dashboard.lines]] (see docs/service-descriptors.md)",
        ),
    ];
    for (toml, want) in cases {
        let err = parse(&toml).unwrap_err();
        assert!(err.starts_with(&format!("parcels/svc/service.toml: {want}")), "want: {want}\n got: {err}");
    }
}

/// What every role yields, and any name from a Prometheus or command source.
#[test]
fn process_metrics_and_open_sources_need_no_listing() {
    let st = parse(&format!(
        "{BASE}\n[[dashboard]]\ntitle = \"Restarts\"\nunit = \"count\"\nlines = [{{ metric = \"role_restarts_total\", stat = \"max\" }}]\n"
    ))
    .unwrap();
    assert_eq!(st.dashboard[0].lines[0].stat, LineStat::Max);
    let cmd = BASE.replace(
        "program = \"/bin/worker\"\n",
        "program = \"/bin/worker\"\n[[role_types.metrics]]\ncommand = { program = \"/bin/stats\" }\n",
    );
    let st = parse(&format!(
        "{cmd}\n[[dashboard]]\ntitle = \"Queue\"\nunit = \"seconds\"\nrole_types = [\"worker\"]\nlines = [{{ metric = \"worker_queue_age_seconds\", stat = \"last\" }}]\n"
    ))
    .unwrap();
    assert_eq!(st.dashboard[0].unit, ChartUnit::Seconds);
}

/// The shipped types chart what the console charted before dashboards came from descriptors.
#[test]
fn shipped_dashboards() {
    let catalog = Catalog::builtin().unwrap();
    let mut shown = String::new();
    for name in ["redis", "zookeeper", "nginx"] {
        shown.push_str(&format!("{name}:\n"));
        for c in &catalog.get(name).unwrap().dashboard {
            let lines: Vec<String> = c
                .lines
                .iter()
                .map(|l| {
                    let mut s = format!("{} = {}", l.label, l.metric);
                    if l.stat != LineStat::Avg {
                        s.push_str(&format!(" ({:?})", l.stat).to_lowercase());
                    }
                    if l.hide_zero {
                        s.push_str(" (hide zero)");
                    }
                    s
                })
                .collect();
            shown.push_str(&format!("  {} [{:?}]: {}\n", c.title, c.unit, lines.join(", ")));
        }
    }
    expect![[r#"
        redis:
          Used memory [Bytes]: used = redis_used_memory_bytes, maxmemory = redis_maxmemory_bytes (hide zero)
          Connected clients [Count]: clients = redis_connected_clients
          Commands per second [PerSecond]: commands = redis_instantaneous_ops_per_sec
          Keyspace hits and misses per second [PerSecond]: hits = redis_keyspace_hits_total (rate), misses = redis_keyspace_misses_total (rate)
          Keys [Count]: keys = redis_keys
          Replication lag [Bytes]: lag = redis_replication_offset_lag_bytes
        zookeeper:
          Request latency [Ms]: average = zookeeper_avg_latency_ms, max = zookeeper_max_latency_ms (max)
          Outstanding requests [Count]: outstanding = zookeeper_outstanding_requests
          Znodes [Count]: znodes = zookeeper_znode_count
          Sessions [Count]: sessions = zookeeper_open_sessions
          Mode [Count]: mode = zookeeper_mode (max)
        nginx:
          Active connections [Count]: active = nginx_active_connections
          Requests per second [PerSecond]: requests = nginx_requests_per_second
          Connections by state [Count]: reading = nginx_reading, writing = nginx_writing, waiting = nginx_waiting
    "#]]
    .assert_eq(&shown);
}

/// The names in the first column of the tables of docs/metrics.md's section `heading`.
fn documented(doc: &str, heading: &str) -> Vec<String> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no {heading:?} in docs/metrics.md"));
    let body = &doc[start + heading.len()..];
    let body = &body[..body.find("\n#").unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

/// The collectors' samples the load checks against are those docs/metrics.md lists.
#[test]
fn sample_lists_match_docs_metrics() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
    assert_eq!(documented(&doc, "### Redis ("), REDIS_SAMPLES);
    assert_eq!(documented(&doc, "### ZooKeeper ("), ZOOKEEPER_SAMPLES);
    assert_eq!(documented(&doc, "### nginx ("), NGINX_SAMPLES);
    let roles = doc.find("- roles (every heartbeat").expect("the role metrics in docs/metrics.md");
    let para = &doc[roles..roles + doc[roles..].find("\n- ").expect("the next item")];
    let names: Vec<&str> = para.split('`').skip(1).step_by(2).filter(|n| n.starts_with("role_")).collect();
    assert_eq!(names, ROLE_PROCESS_METRICS);
}
