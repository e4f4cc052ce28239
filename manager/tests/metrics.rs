//! Metric storage and queries through the REST API: heartbeats with host
//! metrics, role process figures and service samples go into the registry
//! (as the gRPC session hands them over), the flusher writes them, and
//! `/api/v1/metrics/{query,series,prometheus}` answer, filtered by what the
//! caller may see.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::T;
use drover_manager::domain::metrics::{ProcessFigures, RoleReport, Sample};
use drover_manager::model::{DiskUsage, HostMetrics, now_millis};
use reqwest::Method;
use serde_json::{Value, json};

const USER_PASSWORD: &str = "metrics-user-password";

struct Fleet {
    t: T,
    /// Role ids by role name.
    roles: BTreeMap<String, String>,
}

fn host_metrics(cpu: f64) -> HostMetrics {
    HostMetrics {
        cpu_percent: cpu,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        load1: 0.5,
        disks: vec![DiskUsage { mount_point: "/".into(), used_bytes: 25, total_bytes: 100 }],
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

/// prod: cache (redis: primary on h1, replica on h2); dev: web (nginx on h3).
async fn fleet() -> Fleet {
    let t = T::start().await;
    for (id, name) in [("h1", "h1.example"), ("h2", "h2.example"), ("h3", "h3.example")] {
        t.host(id, name, "10.0.0.1").await;
    }
    for c in ["prod", "dev"] {
        t.ok(Method::POST, "/clusters", Some(json!({"name": c}))).await;
    }
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1", "h2"]}))).await;
    t.ok(Method::POST, "/clusters/dev/hosts", Some(json!({"host_ids": ["h3"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    t.ok(Method::POST, "/clusters/dev/services", Some(json!({"name": "web", "type": "nginx"}))).await;
    for (cluster, svc, role_type, host) in
        [("prod", "cache", "primary", "h1"), ("prod", "cache", "replica", "h2"), ("dev", "web", "server", "h3")]
    {
        t.ok(
            Method::POST,
            &format!("/clusters/{cluster}/services/{svc}/roles"),
            Some(json!({"role_type": role_type, "host_id": host})),
        )
        .await;
    }
    let mut roles = BTreeMap::new();
    for (cluster, svc) in [("prod", "cache"), ("dev", "web")] {
        let list = t.ok(Method::GET, &format!("/clusters/{cluster}/services/{svc}/roles"), None).await;
        for r in list["items"].as_array().unwrap() {
            roles.insert(r["name"].as_str().unwrap().to_owned(), r["id"].as_str().unwrap().to_owned());
        }
    }
    for (name, grants) in [
        ("devviewer", json!([{"role": "viewer", "cluster": "dev"}])),
        ("prodviewer", json!([{"role": "viewer", "cluster": "prod"}])),
    ] {
        t.ok(Method::POST, "/users", Some(json!({"username": name, "password": USER_PASSWORD, "grants": grants})))
            .await;
    }
    // The desired state reaches the registry.
    let state = t.handle.state.clone();
    let want: Vec<(String, String)> = roles
        .iter()
        .map(|(name, id)| {
            let host = if name.contains("primary") {
                "h1"
            } else if name.contains("replica") {
                "h2"
            } else {
                "h3"
            };
            (host.to_owned(), id.clone())
        })
        .collect();
    drover_testkit::eventually_true(Duration::from_secs(10), "the roles in the registry", || {
        want.iter().all(|(h, id)| state.registry.desired_role(h, id).is_some())
    })
    .await;
    Fleet { t, roles }
}

impl Fleet {
    fn role(&self, prefix: &str) -> String {
        self.roles.iter().find(|(n, _)| n.contains(prefix)).map(|(_, id)| id.clone()).unwrap()
    }

    /// Three heartbeats per host, 60 s apart in the samples' own times
    /// (ending now); redis_connected_clients 1..3 on the primary and
    /// 10..30 on the replica, nginx_active_connections 7 on h3.
    async fn feed(&self) {
        let reg = &self.t.handle.state.registry;
        let now = now_millis();
        let (primary, replica, server) = (self.role("primary"), self.role("replica"), self.role("server"));
        for i in 0..3i64 {
            let at = now - (2 - i) * 60_000;
            let process = Some(ProcessFigures {
                cpu_percent: 2.0,
                rss_bytes: 5 << 20,
                threads: 4,
                open_fds: 12,
                uptime_seconds: 100,
                restarts: 1,
                last_exit_status: 0,
            });
            let n = (i + 1) as f64;
            let mut with_db = sample("redis_db_keys", 3.0, at);
            with_db.labels.insert("db".into(), "db0".into());
            let primary_report = RoleReport {
                role_id: primary.clone(),
                process: process.clone(),
                samples: vec![
                    sample("redis_connected_clients", n, at),
                    with_db,
                    // Refused: a bad name, a value that is not finite, a label the manager sets.
                    sample("9bad", 1.0, at),
                    sample("redis_nan", f64::NAN, at),
                    Sample { labels: BTreeMap::from([("host".into(), "x".into())]), ..sample("redis_x", 1.0, at) },
                ],
                collect_error: String::new(),
            };
            let replica_report = RoleReport {
                role_id: replica.clone(),
                process: None,
                samples: vec![sample("redis_connected_clients", 10.0 * n, at)],
                collect_error: String::new(),
            };
            let server_report = RoleReport {
                role_id: server.clone(),
                process,
                samples: vec![sample("nginx_active_connections", 7.0, at)],
                collect_error: String::new(),
            };
            let unknown = RoleReport { role_id: "no-such-role".into(), ..Default::default() };
            assert!(reg.heartbeat_with_roles("h1", host_metrics(10.0 * n), vec![primary_report, unknown]));
            assert!(reg.heartbeat_with_roles("h2", host_metrics(20.0), vec![replica_report]));
            assert!(reg.heartbeat_with_roles("h3", host_metrics(30.0), vec![server_report]));
        }
        reg.flush().await.unwrap();
    }

    async fn query(&self, q: &str) -> Value {
        self.t.ok(Method::GET, &format!("/metrics/query?{q}"), None).await
    }

    async fn as_user(&self, user: &str, path: &str) -> (u16, String) {
        let resp = self
            .t
            .client
            .get(self.t.url(&format!("/api/v1{path}")))
            .basic_auth(user, Some(USER_PASSWORD))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn labels_of(series: &Value) -> Vec<BTreeMap<String, String>> {
    series["series"].as_array().unwrap().iter().map(|s| serde_json::from_value(s["labels"].clone()).unwrap()).collect()
}

fn values_of(series: &Value, i: usize) -> Vec<f64> {
    serde_json::from_value(series["series"][i]["values"].clone()).unwrap()
}

#[tokio::test]
async fn heartbeats_become_series_that_queries_select_aggregate_and_step() {
    let f = fleet().await;
    f.feed().await;
    let stats = f.t.handle.state.registry.metrics.stats();
    assert_eq!(stats.samples_invalid, 9, "three refused samples per heartbeat: {stats:?}");
    assert_eq!(stats.roles_unknown, 3);
    assert_eq!(stats.points_dropped, 0);

    // By name: one series per host, with host and cluster labels.
    let cpu = f.query("series=host_cpu_percent&stat=max").await;
    assert_eq!(cpu["metric"], "host_cpu_percent");
    assert_eq!(cpu["resolution"], "raw");
    assert_eq!(cpu["step_seconds"], 12);
    let labels = labels_of(&cpu);
    assert_eq!(labels.len(), 3);
    assert_eq!(labels[0], BTreeMap::from([("cluster".into(), "dev".into()), ("host".into(), "h3.example".into())]));
    assert!(labels.iter().any(|l| l.get("host").map(String::as_str) == Some("h1.example")
        && l.get("cluster").map(String::as_str) == Some("prod")));

    // A selector over role labels.
    let sel = enc(r#"redis_connected_clients{service="cache",role_type="primary"}"#);
    let primary = f.query(&format!("series={sel}&step=1m")).await;
    let labels = labels_of(&primary);
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0]["cluster"], "prod");
    assert_eq!(labels[0]["service"], "cache");
    assert_eq!(labels[0]["role_type"], "primary");
    assert_eq!(labels[0]["host"], "h1.example");
    assert!(labels[0]["role"].starts_with("cache-primary"), "{labels:?}");
    // step=1m over the last hour: minute rollups, not yet made -> none.
    assert_eq!(primary["resolution"], "1m");
    assert_eq!(primary["step_seconds"], 60);
    // step 10s keeps raw points: the three samples, 1, 2, 3.
    let raw = f.query(&format!("series={sel}&step=10s")).await;
    assert_eq!(raw["resolution"], "raw");
    assert_eq!(values_of(&raw, 0), vec![1.0, 2.0, 3.0]);
    let ts: Vec<i64> = serde_json::from_value(raw["series"][0]["timestamps"].clone()).unwrap();
    assert_eq!(ts.len(), 3);
    assert!(ts.iter().all(|t| t % 10_000 == 0), "timestamps are step starts: {ts:?}");
    let neg = enc(r#"redis_connected_clients{role_type!="primary",host=~"h.\\.example"}"#);
    assert_eq!(values_of(&f.query(&format!("series={neg}&step=10s")).await, 0), vec![10.0, 20.0, 30.0]);

    // Rolled up to minutes (as the manager does every minute), the minute
    // step reads them.
    drover_manager::domain::metrics::roll_up(&f.t.handle.state.store, now_millis()).await.unwrap();
    let minutes = f.query(&format!("series={sel}&step=1m")).await;
    assert_eq!(values_of(&minutes, 0), vec![1.0, 2.0, 3.0]);
    // Three minutes in one 5-minute step (when they fall in one): avg, max,
    // min, last of the step.
    let all = enc("redis_connected_clients");
    let from = enc(&drover_manager::model::rfc3339(now_millis() - 3_600_000));
    // The manager rolls an hour up once it is over; this one now.
    let now_s = now_millis() / 1000;
    f.t.handle.state.store.rollup_hours(now_s - 2 * 3600, now_s + 3600).await.unwrap();
    for (stat, primary_want, replica_want) in
        [("max", 3.0, 30.0), ("min", 1.0, 10.0), ("last", 3.0, 30.0), ("avg", 2.0, 20.0)]
    {
        let q = f.query(&format!("series={all}&step=1h&stat={stat}&from={from}")).await;
        assert_eq!(q["resolution"], "1h");
        let labels = labels_of(&q);
        let at = |rt: &str| labels.iter().position(|l| l["role_type"] == rt).unwrap();
        let p = values_of(&q, at("primary"));
        let r = values_of(&q, at("replica"));
        // The samples may straddle an hour boundary: check the last step's
        // value when they do not.
        if p.len() == 1 {
            assert_eq!((p[0], r[0]), (primary_want, replica_want), "stat {stat}");
        }
    }

    // Aggregates: sum by service, avg by role_type, max by host, sum of all.
    let by_service = f.query(&format!("series={all}&step=10s&agg=sum&by=service")).await;
    assert_eq!(labels_of(&by_service), vec![BTreeMap::from([("service".into(), "cache".into())])]);
    assert_eq!(values_of(&by_service, 0), vec![11.0, 22.0, 33.0]);
    let by_type = f.query(&format!("series={all}&step=10s&agg=avg&by=role_type")).await;
    assert_eq!(labels_of(&by_type).len(), 2);
    assert_eq!(values_of(&by_type, 0), vec![1.0, 2.0, 3.0], "primary first");
    let by_host = f.query("series=host_cpu_percent&step=1h&agg=max&by=host,cluster&stat=max").await;
    let hl = labels_of(&by_host);
    assert_eq!(hl.len(), 3);
    assert_eq!(hl[0].keys().cloned().collect::<Vec<_>>(), vec!["cluster".to_string(), "host".to_string()]);
    let total = f.query("series=host_cpu_percent&agg=sum&stat=last&step=1h").await;
    assert_eq!(labels_of(&total), vec![BTreeMap::new()]);
    assert_eq!(*values_of(&total, 0).last().unwrap(), 30.0 + 20.0 + 30.0);
    let mounts = f.query(&format!("series={}&stat=last&step=1h", enc(r#"host_disk_used_ratio{mount="/"}"#))).await;
    assert_eq!(labels_of(&mounts).len(), 3);
    assert_eq!(values_of(&mounts, 0), vec![0.25]);
    let db = f.query(&format!("series={}&step=1h&agg=sum&by=db", enc("redis_db_keys"))).await;
    assert_eq!(labels_of(&db), vec![BTreeMap::from([("db".into(), "db0".into())])]);

    // Role process figures, and role_up 0 for a role without a process.
    let up = f.query("series=role_up&stat=last&step=1h").await;
    let ups: Vec<(String, f64)> =
        labels_of(&up).iter().enumerate().map(|(i, l)| (l["role_type"].clone(), values_of(&up, i)[0])).collect();
    assert!(ups.contains(&("replica".into(), 0.0)) && ups.contains(&("primary".into(), 1.0)), "{ups:?}");
    let rss = f.query(&format!("series={}&stat=last&step=1h", enc(r#"role_memory_rss_bytes{service="cache"}"#))).await;
    assert_eq!(values_of(&rss, 0), vec![(5 << 20) as f64]);

    // The series list.
    let list = f.t.ok(Method::GET, &format!("/metrics/series?match={}", enc(r#"{service="cache"}"#)), None).await;
    let items = list["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["labels"]["service"] == "cache" && i["entity"] == "role"));
    let clients: Vec<&Value> = items.iter().filter(|i| i["metric"] == "redis_connected_clients").collect();
    assert_eq!(clients.len(), 2);
    assert!(clients.iter().any(|i| i["last_value"] == 3.0));
    assert!(clients[0]["last_at"].is_string());
    let everything = f.t.ok(Method::GET, "/metrics/series", None).await;
    assert!(everything["items"].as_array().unwrap().len() > items.len());
}

#[tokio::test]
async fn prometheus_text_carries_the_labels_and_types() {
    let f = fleet().await;
    f.feed().await;
    let resp =
        f.t.client
            .get(f.t.url("/api/v1/metrics/prometheus"))
            .basic_auth("admin", Some(common::PASSWORD))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().await.unwrap();
    // Every line is a comment or `name{labels} value`, every name typed once.
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} typed twice");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(typed.contains_key(name), "{name} has no # TYPE line before it");
        samples.insert(series.to_owned(), value);
    }
    assert_eq!(typed["role_restarts_total"], "counter");
    assert_eq!(typed["host_network_rx_bytes_total"], "counter");
    assert_eq!(typed["redis_connected_clients"], "gauge");
    let primary = f.roles.keys().find(|n| n.contains("primary")).unwrap();
    let key = format!(
        "redis_connected_clients{{cluster=\"prod\",host=\"h1.example\",role=\"{primary}\",role_type=\"primary\",service=\"cache\"}}"
    );
    assert_eq!(samples.get(&key), Some(&3.0), "{key} in\n{text}");
    assert_eq!(samples.get("host_cpu_percent{cluster=\"dev\",host=\"h3.example\"}"), Some(&30.0));
    assert!(samples.keys().any(|k| k.starts_with("redis_db_keys{") && k.contains("db=\"db0\"")));

    // A viewer of dev sees dev only.
    let (status, dev) = f.as_user("devviewer", "/metrics/prometheus").await;
    assert_eq!(status, 200);
    assert!(dev.contains("nginx_active_connections") && dev.contains("h3.example"), "{dev}");
    assert!(!dev.contains("prod") && !dev.contains("h1.example") && !dev.contains("redis_"), "{dev}");
}

#[tokio::test]
async fn a_viewer_of_another_cluster_sees_nothing_of_this_one() {
    let f = fleet().await;
    f.feed().await;
    let (status, body) = f.as_user("devviewer", "/metrics/query?series=host_cpu_percent").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let hosts: Vec<String> = labels_of(&v).iter().map(|l| l["host"].clone()).collect();
    assert_eq!(hosts, ["h3.example"]);
    let (status, body) = f.as_user("devviewer", "/metrics/query?series=redis_connected_clients").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["series"], json!([]));
    let (_, body) = f.as_user("devviewer", "/metrics/series").await;
    assert!(!body.contains("prod") && !body.contains("h1.example") && body.contains("h3.example"), "{body}");
    // And the other way round.
    let (_, body) = f.as_user("prodviewer", "/metrics/series").await;
    assert!(body.contains("h1.example") && !body.contains("h3.example") && !body.contains("nginx"), "{body}");
}

#[tokio::test]
async fn bad_queries_get_a_400_naming_the_problem() {
    let f = fleet().await;
    f.feed().await;
    let now = now_millis();
    let at = |ms: i64| enc(&drover_manager::model::rfc3339(ms));
    let cases = [
        (format!("series={}", enc("host_cpu_percent{host=}")), "double quotes"),
        (format!("series={}", enc("host_cpu_percent{host=\"a\"")), "unexpected end of input inside braces"),
        (format!("series={}", enc("{host=\"a\"}")), "needs a metric name"),
        (format!("series={}", enc("host_cpu_percent{host=~\"(\"}")), "invalid regular expression"),
        ("series=no_such_metric".into(), "unknown metric no_such_metric"),
        ("series=host_cpu_percent&stat=median".into(), "unknown stat \"median\""),
        ("series=host_cpu_percent&agg=p99".into(), "unknown agg \"p99\""),
        ("series=host_cpu_percent&agg=sum&by=rack".into(), "unknown label \"rack\" in by"),
        ("series=host_cpu_percent&by=host".into(), "by needs agg"),
        (format!("series=host_cpu_percent&from={}&to={}", at(now), at(now - 1000)), "must be before to"),
        ("series=host_cpu_percent&from=yesterday".into(), "from must be an RFC 3339 time"),
        (format!("series=host_cpu_percent&from={}&step=1s", at(now - 5 * 3_600_000)), "more than 11000"),
        ("series=host_cpu_percent&step=soon".into(), "invalid step \"soon\""),
        ("series=host_cpu_percent&step=100ms".into(), "at least 1s"),
    ];
    for (q, says) in cases {
        let message = f.t.err(Method::GET, &format!("/metrics/query?{q}"), None, 400).await;
        assert!(message.contains(says), "{q}: {message:?} does not say {says:?}");
    }
    let message = f.t.err(Method::GET, &format!("/metrics/series?match={}", enc("x{")), None, 400).await;
    assert!(message.contains("invalid series selector"), "{message}");
}

#[tokio::test]
async fn the_openapi_document_describes_the_metric_operations() {
    let t = T::start().await;
    let doc = t.ok(Method::GET, "/openapi.json", None).await;
    let params = doc["paths"]["/api/v1/metrics/query"]["get"]["parameters"].as_array().unwrap().clone();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name}")).clone();
    assert_eq!(param("series")["required"], true);
    assert_eq!(param("stat")["schema"]["enum"], json!(["avg", "min", "max", "last"]), "{}", param("stat"));
    assert_eq!(param("agg")["schema"]["enum"], json!(["none", "sum", "avg", "min", "max"]));
    for name in ["from", "to", "step", "by"] {
        assert_ne!(param(name)["required"], true, "{name}");
    }
    let list = &doc["paths"]["/api/v1/metrics/series"]["get"]["parameters"];
    assert!(list.as_array().unwrap().iter().any(|p| p["name"] == "match"), "{list}");
    let prom = &doc["paths"]["/api/v1/metrics/prometheus"]["get"]["responses"];
    assert!(prom["200"]["content"].get("text/plain").is_some(), "{prom}");
    for status in ["401", "403", "429", "503"] {
        assert!(prom.get(status).is_some(), "{status} documented");
    }
    let schemas = &doc["components"]["schemas"];
    for s in ["QueryResult", "SeriesValues", "SeriesInfo", "Resolution"] {
        assert!(schemas.get(s).is_some(), "schema {s}");
    }
    // Every $ref points at a schema the document holds.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.get(name).is_some(), "dangling $ref {name}");
    }
}

/// Points wait in memory while the database is down and are written by the
/// next flush that succeeds; series are created once.
#[tokio::test]
async fn points_wait_for_the_database_and_are_written_later() {
    use drover_manager::domain::metrics::LiveMetrics;
    use drover_manager::store::{PointTable, Store};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let live = LiveMetrics::default();
    let now = now_millis();
    live.record("h1", "h1.example", now - 2000, &host_metrics(1.0), &[]);
    let down = Store::open(&url).await.unwrap();
    down.close().await;
    assert!(live.flush(&down).await.is_err(), "a closed pool fails");
    live.record("h1", "h1.example", now, &host_metrics(2.0), &[]);
    let store = Store::open(&url).await.unwrap();
    // 12 host series (3 of them for the one mount) at two times.
    assert_eq!(live.flush(&store).await.unwrap(), 24);
    assert_eq!(store.point_count(PointTable::Raw).await.unwrap(), 24);
    assert_eq!(store.all_series().await.unwrap().len(), 12);
    assert_eq!(live.flush(&store).await.unwrap(), 0, "nothing left");
    let stats = live.stats();
    assert_eq!((stats.series, stats.points, stats.points_written, stats.points_dropped), (12, 24, 24, 0));
}

/// A manager started again reads the stored series into its index, row by
/// row, with their ids: the same series reported again are not created
/// twice and their points go to the stored ids.
#[tokio::test]
async fn a_restarted_index_has_the_stored_series_and_their_ids() {
    use drover_manager::domain::metrics::LiveMetrics;
    use drover_manager::store::{PointTable, Store};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let store = Store::open(&url).await.unwrap();
    let now = now_millis();
    let before = LiveMetrics::default();
    for (i, host) in ["h1", "h2", "h3"].into_iter().enumerate() {
        before.record(host, &format!("{host}.example"), now - 1000, &host_metrics(i as f64), &[]);
    }
    assert_eq!(before.flush(&store).await.unwrap(), 36);
    let stored = store.all_series().await.unwrap();
    assert_eq!(stored.len(), 36);

    let again = LiveMetrics::load_from(&store).await.unwrap();
    assert_eq!(again.stats().series, 36, "every stored series is in the index");
    assert!(again.has_name("host_cpu_percent"));
    for (i, host) in ["h1", "h2", "h3"].into_iter().enumerate() {
        again.record(host, &format!("{host}.example"), now, &host_metrics(i as f64 + 1.0), &[]);
    }
    assert_eq!(again.stats().series, 36, "reported again, not added");
    assert_eq!(again.flush(&store).await.unwrap(), 36);
    let after = store.all_series().await.unwrap();
    assert_eq!(after.iter().map(|s| s.id).collect::<Vec<_>>(), stored.iter().map(|s| s.id).collect::<Vec<_>>());
    assert_eq!(store.point_count(PointTable::Raw).await.unwrap(), 72);
}

/// Each rollup run reads the last minutes only, and rolls an hour up once it
/// is over (minutes 5 and 6 of the next one).
#[tokio::test]
async fn rollups_cover_the_last_minutes_and_each_hour_once_over() {
    use drover_manager::domain::metrics::roll_up;
    use drover_manager::store::{PointTable, SeriesRec, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display())).await.unwrap();
    let rec = SeriesRec {
        id: 0,
        name: "host_load1".into(),
        entity_kind: "host".into(),
        entity_id: "h1".into(),
        host_id: "h1".into(),
        cluster: String::new(),
        service: String::new(),
        role: String::new(),
        role_type: String::new(),
        host: "h1.example".into(),
        labels: "{}".into(),
        created_at: 0,
    };
    let id = store.ensure_series(&[rec]).await.unwrap()[0];
    // A point in the middle of every minute of two hours: the hour before h and h.
    let h = 1_700_000_000 - 1_700_000_000 % 3600;
    let points: Vec<(i64, i64, f64)> = (0..120).map(|m| (id, h - 3600 + m * 60 + 30, m as f64)).collect();
    store.insert_points(&points).await.unwrap();

    // 20 minutes into h: minutes 17 to 20, no hour.
    roll_up(&store, (h + 20 * 60) * 1000).await.unwrap();
    let minutes = store.points(PointTable::Minute, &[id], h - 3600, h + 3600).await.unwrap();
    assert_eq!(minutes.iter().map(|p| (p.t - h) / 60).collect::<Vec<_>>(), vec![17, 18, 19, 20]);
    assert_eq!(store.point_count(PointTable::Hour).await.unwrap(), 0);

    // The minutes of the hour before, as the runs during it made them; then
    // 5.5 minutes into h the hour before is rolled up, h is not.
    store.rollup_minutes(h - 3600, h).await.unwrap();
    roll_up(&store, (h + 330) * 1000).await.unwrap();
    let hours = store.points(PointTable::Hour, &[id], h - 7200, h + 3600).await.unwrap();
    assert_eq!(hours.len(), 1, "{hours:?}");
    assert_eq!(
        (hours[0].t, hours[0].min, hours[0].max, hours[0].count, hours[0].last),
        (h - 3600, 0.0, 59.0, 60, 59.0)
    );
    assert_eq!(store.point_count(PointTable::Minute).await.unwrap(), 60 + 4 + 4, "minutes 2 to 5 of h too");
}
