//! Metric sources of role types (`[[role_types.metrics]]`), their rendering, and the sources the
//! shipped types declare (their dashboards: `dashboard.rs`).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use drover_service_types::config::{ConfigValues, restart_digest};
use drover_service_types::descriptor::{Catalog, MetricSourceKindTemplate, ServiceType};
use drover_service_types::render::{MetricSource, MetricSourceKind, RenderedRole, RoleInstance, Topology, render_role};
use expect_test::expect;
use serde_json::{Value, json};

use crate::{BASE, templates};

const APP: (&str, &str) = ("app.conf.hbs", "port={{config.port}}\n");

/// BASE with `metrics` spliced into role type `main` (after its process table).
fn with_metrics(metrics: &str) -> String {
    let args = "args = [\"--port\", \"{{config.port}}\"]\n";
    BASE.replace(args, &format!("{args}\n{metrics}\n"))
}

fn parse(toml: &str) -> Result<ServiceType, String> {
    ServiceType::parse("parcels/svc", toml, &templates(&[APP])).map_err(|e| e.to_string())
}

fn map(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn role(id: &str, role_type: &str, index: u32, host: u32) -> RoleInstance {
    RoleInstance {
        role_id: id.to_string(),
        name: format!("{role_type}-{}", index + 1),
        role_type: role_type.to_string(),
        group: format!("{role_type}-default"),
        host_id: format!("host-{host}"),
        hostname: format!("node{host}"),
        address: format!("10.0.0.{host}"),
        index,
    }
}

fn topology(service: &str, roles: Vec<RoleInstance>) -> Topology {
    Topology { cluster: "prod".into(), service: service.into(), roles, ..Default::default() }
}

fn builtin(name: &str) -> ServiceType {
    Catalog::builtin().unwrap().get(name).unwrap().clone()
}

fn file(r: &RenderedRole, path: &str) -> String {
    let f = r.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no file {path}"));
    String::from_utf8(f.content.clone()).unwrap()
}

#[test]
fn every_kind_parses_with_default_interval_and_timeout() {
    let st = parse(&with_metrics(
        r#"
[[role_types.metrics]]
redis = { port = "{{config.port}}", password = "{{config.secret}}" }

[[role_types.metrics]]
zookeeper = { host = "{{role.address}}", port = 2181 }
interval = "30s"
timeout = "30s"

[[role_types.metrics]]
nginx_stub_status = { url = "http://127.0.0.1:{{config.port}}/status" }

[[role_types.metrics]]
prometheus = { url = "{{config.level}}" }
interval = "1m"
timeout = "2s"

[[role_types.metrics]]
command = { program = "${ROLE_DIR}/stats.sh", args = ["--port", "{{config.port}}"] }
"#,
    ))
    .unwrap();
    let m = &st.role_type("main").unwrap().metrics;
    let shown: Vec<String> =
        m.iter().map(|m| format!("{:?} every {:?} within {:?}", m.source, m.interval, m.timeout)).collect();
    expect![[r#"
        [
            "Redis { host: \"127.0.0.1\", port: \"{{config.port}}\", password: \"{{config.secret}}\" } every 10s within 5s",
            "Zookeeper { host: \"{{role.address}}\", port: \"2181\" } every 30s within 30s",
            "NginxStubStatus { url: \"http://127.0.0.1:{{config.port}}/status\" } every 10s within 5s",
            "Prometheus { url: \"{{config.level}}\" } every 60s within 2s",
            "Command { program: \"${ROLE_DIR}/stats.sh\", args: [\"--port\", \"{{config.port}}\"] } every 10s within 5s",
        ]
    "#]]
    .assert_debug_eq(&shown);
    assert!(st.role_type("worker").unwrap().metrics.is_empty());
}

#[test]
fn a_literal_password_never_shows() {
    let st = parse(&with_metrics("[[role_types.metrics]]\nredis = { port = 1, password = \"s3cret\" }\n")).unwrap();
    let m = &st.role_type("main").unwrap().metrics[0];
    assert!(matches!(&m.source, MetricSourceKindTemplate::Redis { password, .. } if password == "s3cret"));
    let shown = format!("{m:?} {}", serde_json::to_string(&st).unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<set>"), "{shown}");
    // Nor once rendered.
    let topo = topology("svc", vec![role("m1", "main", 0, 1)]);
    let r = render_role(&st, &topo, &ConfigValues::default(), "m1").unwrap();
    assert!(!format!("{:?}", r.metric_sources).contains("s3cret"));
}

/// Each broken metric source is rejected naming the role type, the source and the field.
#[test]
fn bad_metric_sources() {
    let cases: &[(&str, &str)] = &[
        ("redis = { host = \"h\" }", "invalid TOML at line 15, column 9: missing field `port`"),
        (
            "redis = { port = 6379, user = \"x\" }",
            "invalid TOML at line 15, column 24: unknown field `user`, expected one of `host`, `port`, `password`",
        ),
        ("redis = { port = \"abc\" }", "role type `main`: metrics[0].redis.port: `abc` is not a port (1-65535)"),
        ("redis = { port = 70000 }", "role type `main`: metrics[0].redis.port: `70000` is not a port (1-65535)"),
        ("redis = { port = 0 }", "role type `main`: metrics[0].redis.port: `0` is not a port (1-65535)"),
        (
            "redis = { port = 1, password = \"{{config.secret\" }",
            "role type `main`: metrics[0].redis.password: invalid template at line 1, column 16: invalid handlebars syntax",
        ),
        (
            "zookeeper = { host = \"{{#if}}\", port = 2181 }",
            "role type `main`: metrics[0].zookeeper.host: invalid template",
        ),
        ("zookeeper = { port = \"-1\" }", "role type `main`: metrics[0].zookeeper.port: `-1` is not a port (1-65535)"),
        (
            "nginx_stub_status = { url = \"https://127.0.0.1/status\" }",
            "role type `main`: metrics[0].nginx_stub_status.url: `https://127.0.0.1/status` is not an http:// URL (metric sources speak plain HTTP)",
        ),
        ("nginx_stub_status = {}", "invalid TOML at line 15, column 21: missing field `url`"),
        (
            "prometheus = { url = \"http:///metrics\" }",
            "role type `main`: metrics[0].prometheus.url: `http:///metrics` has no host",
        ),
        ("command = { program = \" \" }", "role type `main`: metrics[0].command.program: must not be empty"),
        (
            "command = { program = \"/bin/x\", args = [\"{{/if}}\"] }",
            "role type `main`: metrics[0].command.args[0]: invalid template",
        ),
        (
            "redis = { port = 1 }\nzookeeper = { port = 2 }",
            "role type `main`: metrics[0]: exactly one of redis, zookeeper, nginx_stub_status, prometheus or command is required (got redis and zookeeper)",
        ),
        (
            "interval = \"5s\"",
            "role type `main`: metrics[0]: exactly one of redis, zookeeper, nginx_stub_status, prometheus or command is required (got none)",
        ),
        (
            "statsd = { port = 1 }",
            "invalid TOML at line 15, column 1: unknown field `statsd`, expected one of `redis`, `zookeeper`, `nginx_stub_status`, `prometheus`, `command`, `interval`, `timeout`",
        ),
        (
            "redis = { port = 1 }\ninterval = \"often\"",
            "role type `main`: metrics[0].interval: `often` is not a duration",
        ),
        ("redis = { port = 1 }\ntimeout = \"0s\"", "role type `main`: metrics[0].timeout: must be greater than zero"),
        ("redis = { port = 1 }\ninterval = \"0s\"", "role type `main`: metrics[0].interval: must be greater than zero"),
        (
            "redis = { port = 1 }\ninterval = \"5s\"\ntimeout = \"6s\"",
            "role type `main`: metrics[0].timeout: 6s is longer than the interval 5s",
        ),
    ];
    for (metric, want) in cases {
        let err = parse(&with_metrics(&format!("[[role_types.metrics]]\n{metric}\n"))).unwrap_err();
        assert!(
            err.starts_with(&format!("parcels/svc/service.toml: {want}")),
            "{metric}:\n  want: {want}\n   got: {err}"
        );
    }
    // The index counts the role type's sources.
    let two = "[[role_types.metrics]]\nredis = { port = 1 }\n[[role_types.metrics]]\nprometheus = { url = \"x\" }\n";
    expect!["parcels/svc/service.toml: role type `main`: metrics[1].prometheus.url: `x` is not an http:// URL (metric sources speak plain HTTP)"]
        .assert_eq(&parse(&with_metrics(two)).unwrap_err());
}

#[test]
fn sources_render_with_the_roles_context() {
    let st = parse(&with_metrics(
        r#"
[[role_types.metrics]]
redis = { host = "{{role.address}}", port = "{{config.port}}", password = "{{config.secret}}" }

[[role_types.metrics]]
prometheus = { url = "http://{{role.address}}:{{config.port}}/metrics" }
interval = "15s"
timeout = "3s"

[[role_types.metrics]]
command = { program = "${ROLE_DIR}/stats.sh", args = ["{{role.name}}"] }
"#,
    ))
    .unwrap();
    let topo = topology("svc", vec![role("m1", "main", 0, 4)]);
    let values = ConfigValues {
        service: map(&[("secret", json!("pw"))]),
        roles: [("m1".to_string(), map(&[("port", json!(9100))]))].into(),
        ..Default::default()
    };
    let r = render_role(&st, &topo, &values, "m1").unwrap();
    let redis = MetricSourceKind::Redis { host: "10.0.0.4".into(), port: 9100, password: "pw".into() };
    assert_eq!(r.metric_sources[0].kind, redis);
    assert_eq!(
        r.metric_sources[1],
        MetricSource {
            kind: MetricSourceKind::Prometheus { url: "http://10.0.0.4:9100/metrics".into() },
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(3),
        }
    );
    assert_eq!(
        r.metric_sources[2].kind,
        MetricSourceKind::Command { program: "${ROLE_DIR}/stats.sh".into(), args: vec!["main-1".into()] }
    );
    // Unset password: no AUTH.
    let r = render_role(&st, &topo, &ConfigValues::default(), "m1").unwrap();
    assert!(
        matches!(&r.metric_sources[0].kind, MetricSourceKind::Redis { password, port: 8080, .. } if password.is_empty())
    );
}

#[test]
fn sources_that_render_badly_fail_naming_the_field() {
    let render = |metric: &str| {
        let st = parse(&with_metrics(&format!("[[role_types.metrics]]\n{metric}\n"))).unwrap();
        let topo = topology("svc", vec![role("m1", "main", 0, 1)]);
        render_role(&st, &topo, &ConfigValues::default(), "m1").unwrap_err().to_string()
    };
    expect!["parcels/svc/service.toml: role type `main`: metrics[0].redis.port: `low` is not a port (1-65535)"]
        .assert_eq(&render("redis = { port = \"{{config.level}}\" }"));
    expect![
        "parcels/svc/service.toml: role type `main`: metrics[0].zookeeper.port: line 1, column 1: missing variable `config.client_port`"
    ]
    .assert_eq(&render("zookeeper = { port = \"{{config.client_port}}\" }"));
    expect!["parcels/svc/service.toml: role type `main`: metrics[0].prometheus.url: `low:8080/metrics` is not an http:// URL (metric sources speak plain HTTP)"]
        .assert_eq(&render("prometheus = { url = \"{{config.level}}:{{config.port}}/metrics\" }"));
}

/// A metric source is not something the process runs with: whatever it renders to, the
/// restart digest (which decides between reload and restart) stays the same.
#[test]
fn a_changed_metric_source_does_not_change_the_restart_digest() {
    let without = parse(BASE).unwrap();
    let with = parse(&with_metrics(
        "[[role_types.metrics]]\nprometheus = { url = \"http://127.0.0.1:{{config.port}}/m?level={{config.level}}\" }\n",
    ))
    .unwrap();
    let topo = topology("svc", vec![role("m1", "main", 0, 1)]);
    let low = ConfigValues::default();
    let high = ConfigValues { service: map(&[("level", json!("high"))]), ..Default::default() };
    let (a, b) = (render_role(&with, &topo, &low, "m1").unwrap(), render_role(&with, &topo, &high, "m1").unwrap());
    assert_ne!(a.metric_sources, b.metric_sources);
    assert_eq!(a.restart_digest, b.restart_digest);
    assert_eq!((&a.files, &a.process, &a.health_checks), (&b.files, &b.process, &b.health_checks));
    // Adding sources to a type leaves the digest alone too.
    let plain = render_role(&without, &topo, &low, "m1").unwrap();
    assert!(plain.metric_sources.is_empty());
    assert_eq!(plain.restart_digest, a.restart_digest);
    assert_eq!(a.restart_digest, restart_digest(&with, &low, "main", "main-default", "m1"));
}

#[test]
fn redis_roles_read_info_with_their_port_and_password() {
    let st = builtin("redis");
    let topo = topology("cache", vec![role("p", "primary", 0, 1), role("r", "replica", 0, 2)]);
    let values = ConfigValues {
        service: map(&[("requirepass", json!("s3cret")), ("bind", json!("0.0.0.0"))]),
        roles: [("r".to_string(), map(&[("port", json!(7001))]))].into(),
        ..Default::default()
    };
    let primary = render_role(&st, &topo, &values, "p").unwrap();
    let replica = render_role(&st, &topo, &values, "r").unwrap();
    let source = |host: &str, port: u16| MetricSource {
        kind: MetricSourceKind::Redis { host: host.into(), port, password: "s3cret".into() },
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
    };
    assert_eq!(primary.metric_sources, [source("10.0.0.1", 6379)]);
    assert_eq!(replica.metric_sources, [source("10.0.0.2", 7001)]);
    // Defaults: loopback, no password.
    let r = render_role(&st, &topo, &ConfigValues::default(), "p").unwrap();
    expect![[r#"
        [
            MetricSource {
                kind: Redis {
                    host: "127.0.0.1",
                    port: 6379,
                    password: "none",
                },
                interval: 10s,
                timeout: 5s,
            },
        ]
    "#]]
    .assert_debug_eq(&r.metric_sources);
    assert!(matches!(&r.metric_sources[0].kind, MetricSourceKind::Redis { password, .. } if password.is_empty()));
}

#[test]
fn zookeeper_servers_answer_mntr_on_their_client_port() {
    let st = builtin("zookeeper");
    let topo = topology("zk", vec![role("z1", "server", 0, 1), role("z2", "server", 1, 2)]);
    let values =
        ConfigValues { roles: [("z2".to_string(), map(&[("client_port", json!(2182))]))].into(), ..Default::default() };
    let z1 = render_role(&st, &topo, &values, "z1").unwrap();
    let z2 = render_role(&st, &topo, &values, "z2").unwrap();
    assert_eq!(z1.metric_sources[0].kind, MetricSourceKind::Zookeeper { host: "127.0.0.1".into(), port: 2181 });
    assert_eq!(z2.metric_sources[0].kind, MetricSourceKind::Zookeeper { host: "127.0.0.1".into(), port: 2182 });
    // mntr is a four letter word the default whitelist has, and the description says so.
    assert!(file(&z1, "zoo.cfg").contains("4lw.commands.whitelist=srvr,ruok,stat,mntr\n"));
    assert!(st.parameter("four_letter_words").unwrap().description.contains("metrics need mntr"));
}

#[test]
fn nginx_serves_stub_status_to_its_own_host_only() {
    let st = builtin("nginx");
    let topo = topology("web", vec![role("n1", "server", 0, 3)]);
    // Every address: read over loopback, which alone is allowed.
    let r = render_role(&st, &topo, &ConfigValues::default(), "n1").unwrap();
    assert_eq!(
        r.metric_sources[0].kind,
        MetricSourceKind::NginxStubStatus { url: "http://127.0.0.1:8080/drover-status".into() }
    );
    let conf = file(&r, "nginx.conf");
    assert!(conf.contains("allow 127.0.0.1;\n            allow ::1;\n            deny all;\n"), "{conf}");
    // One address: read there, and that address (the source of a local connection to it) is allowed.
    let values =
        ConfigValues { service: map(&[("bind", json!("10.0.0.3")), ("port", json!(81))]), ..Default::default() };
    let r = render_role(&st, &topo, &values, "n1").unwrap();
    assert_eq!(
        r.metric_sources[0].kind,
        MetricSourceKind::NginxStubStatus { url: "http://10.0.0.3:81/drover-status".into() }
    );
    expect![[r#"
                location = /drover-status {
                    stub_status;
                    access_log off;
                    allow 127.0.0.1;
                    allow ::1;
                    allow 10.0.0.3;
                    deny all;
                }
    "#]]
    .assert_eq(&status_location(&file(&r, "nginx.conf")));
}

fn status_location(conf: &str) -> String {
    let start = conf.find("location = /drover-status").expect("status location");
    let end = start + conf[start..].find("}\n").expect("end") + 2;
    conf[start..end].lines().map(|l| format!("{}\n", l.strip_prefix("        ").unwrap_or(l))).collect()
}

#[test]
fn shipped_types_have_one_source_per_role_type() {
    for name in ["redis", "zookeeper", "nginx"] {
        let st = builtin(name);
        for rt in &st.role_types {
            assert_eq!(rt.metrics.len(), 1, "{name}/{}", rt.name);
        }
    }
}

/// The rendered nginx.conf in a real nginx (`$DROVER_TEST_NGINX` or `/usr/sbin/nginx`): the
/// metric source's URL answers stub_status text, and another source address gets 403.
#[test]
fn a_real_nginx_answers_the_metric_source() {
    let installed = std::env::var("DROVER_TEST_NGINX")
        .ok()
        .into_iter()
        .chain(["/usr/sbin/nginx".to_owned()])
        .find(|p| std::path::Path::new(p).exists());
    let Some(nginx) = installed else {
        if std::env::var("DROVER_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("nginx is not installed but DROVER_REQUIRE_SERVICES=1; apt-get install -y nginx");
        }
        println!("skipped: nginx not installed (or set DROVER_TEST_NGINX)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap().port();
    let st = builtin("nginx");
    let topo = topology("web", vec![role("n1", "server", 0, 3)]);
    let values = ConfigValues { service: map(&[("port", json!(port))]), ..Default::default() };
    let r = render_role(&st, &topo, &values, "n1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let role_dir = dir.path().display().to_string();
    let conf = file(&r, "nginx.conf").replace("${ROLE_DIR}", &role_dir);
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let conf_path = format!("{role_dir}/nginx.conf");
    let mut child = std::process::Command::new(&nginx)
        .args(["-p", &format!("{role_dir}/"), "-c", &conf_path, "-e", "stderr"])
        // Its own process group, so that no worker can outlive the test.
        .process_group(0)
        .spawn()
        .unwrap();
    let MetricSourceKind::NginxStubStatus { url } = &r.metric_sources[0].kind else { panic!("{:?}", r.metric_sources) };
    let get = |url: &str, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "2", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut body = String::new();
    for _ in 0..100 {
        body = get(url, &[]);
        if body.ends_with("200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // From another address of this host (curl binds 127.0.0.2 as its source).
    let denied = get(&format!("http://127.0.0.1:{port}/drover-status"), &["--interface", "127.0.0.2"]);
    // The whole group: the master and its workers.
    let group = format!("-{}", child.id());
    let _ = std::process::Command::new("kill").args(["-TERM", "--", &group]).status();
    let _ = child.wait();
    let _ =
        std::process::Command::new("kill").args(["-KILL", "--", &group]).stderr(std::process::Stdio::null()).status();
    assert!(body.starts_with("Active connections: 1 \nserver accepts handled requests\n"), "{body}");
    assert!(body.contains("Reading: 0 Writing: 1 Waiting: 0"), "{body}");
    assert!(denied.ends_with("403"), "{denied}");
}
