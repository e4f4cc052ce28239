//! The nginx service type, `service` parameters (references to another service of the cluster),
//! the `endpoints` helper, `reload_signal` and the restart digest.

use std::collections::BTreeMap;

use drover_service_types::config::{ConfigValues, Level, ServiceRef, restart_digest, service_refs, validate_patch};
use drover_service_types::descriptor::{Catalog, ServiceType};
use drover_service_types::render::{DependencyTopology, Probe, RenderedRole, RoleInstance, Topology, render_role};
use expect_test::expect;
use serde_json::{Value, json};

fn role(id: &str, name: &str, index: u32, host: u32) -> RoleInstance {
    RoleInstance {
        role_id: id.to_string(),
        name: name.to_string(),
        role_type: "server".to_string(),
        group: "server-default".to_string(),
        host_id: format!("host-{host}"),
        hostname: format!("node{host}"),
        address: format!("10.0.0.{host}"),
        index,
    }
}

fn map(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn file(r: &RenderedRole) -> String {
    String::from_utf8(r.files[0].content.clone()).unwrap()
}

fn nginx() -> ServiceType {
    Catalog::builtin().unwrap().get("nginx").unwrap().clone()
}

/// Service `web`: two nginx roles on loopback, the second on its own port.
fn web() -> DependencyTopology {
    DependencyTopology {
        service: "web".to_string(),
        service_type: nginx(),
        roles: vec![role("w2", "web-server-2", 1, 2), role("w1", "web-server-1", 0, 1)],
        values: ConfigValues {
            service: map(&[("bind", json!("127.0.0.1"))]),
            roles: [("w2".to_string(), map(&[("port", json!(8081))]))].into(),
            ..Default::default()
        },
    }
}

/// Service `lb` with one role, referring to `web` when `with_web`.
fn lb_topology(with_web: bool) -> Topology {
    let mut references = BTreeMap::new();
    if with_web {
        references.insert("web".to_string(), web());
    }
    Topology {
        cluster: "prod".to_string(),
        service: "lb".to_string(),
        roles: vec![role("l1", "lb-server-1", 0, 3)],
        dependencies: BTreeMap::new(),
        references,
    }
}

fn lb_values() -> ConfigValues {
    ConfigValues { service: map(&[("upstream_service", json!("web")), ("port", json!(80))]), ..Default::default() }
}

#[test]
fn nginx_serves_a_page_naming_itself_by_default() {
    let st = nginx();
    let topo = Topology { service: "web".into(), references: BTreeMap::new(), ..lb_topology(false) };
    let r = render_role(&st, &topo, &ConfigValues::default(), "l1").unwrap();
    expect![[r##"
        # Rendered by Drover for lb-server-1 (server) of service prod/web.
        # Do not edit: changes are overwritten by the next configuration push.
        daemon off;
        master_process on;
        worker_processes 1;
        pid ${ROLE_DIR}/nginx.pid;
        error_log stderr warn;

        events {
            worker_connections 512;
        }

        http {
            default_type text/plain;
            server_tokens off;
            access_log off;
            # Every path nginx writes is inside the role directory.
            client_body_temp_path ${ROLE_DIR}/client_body_temp;
            proxy_temp_path ${ROLE_DIR}/proxy_temp;
            fastcgi_temp_path ${ROLE_DIR}/fastcgi_temp;
            uwsgi_temp_path ${ROLE_DIR}/uwsgi_temp;
            scgi_temp_path ${ROLE_DIR}/scgi_temp;
            client_max_body_size 1048576;
            keepalive_timeout 65000ms;

            server {
                listen 0.0.0.0:8080;

                location = /drover-health {
                    access_log off;
                    return 200 "ok\n";
                }

                # Connection and request counters for the agent's metric source, from this host only.
                location = /drover-status {
                    stub_status;
                    access_log off;
                    allow 127.0.0.1;
                    allow ::1;
                    deny all;
                }

                location / {
                    add_header X-Drover-Role lb-server-1 always;
                    return 200 "lb-server-1 on node3 (service prod/web)\n";
                }
            }
        }
    "##]]
    .assert_eq(&file(&r));
    assert_eq!(r.process.program, "${PARCELS_ROOT}/nginx/usr/sbin/nginx");
    assert_eq!(r.process.args, ["-p", "${ROLE_DIR}/", "-c", "${ROLE_DIR}/nginx.conf", "-e", "stderr"]);
    assert_eq!((r.process.stop_signal.as_str(), r.process.reload_signal.as_str()), ("SIGQUIT", "SIGHUP"));
    let check = r.process.config_check.as_ref().expect("nginx -t before new files are installed");
    assert_eq!(check.program, "${PARCELS_ROOT}/nginx/usr/sbin/nginx");
    assert_eq!(check.args, ["-t", "-q", "-p", "${ROLE_DIR}/", "-c", "${CHECK_DIR}/nginx.conf", "-e", "stderr"]);
    assert_eq!(check.timeout, std::time::Duration::from_secs(30));
    assert_eq!(
        r.health_checks[0].probe,
        Probe::Http { url: "http://10.0.0.3:8080/drover-health".into(), expect_status: 200 }
    );
}

#[test]
fn nginx_proxies_to_the_roles_of_the_referenced_service() {
    let st = nginx();
    let r = render_role(&st, &lb_topology(true), &lb_values(), "l1").unwrap();
    let text = file(&r);
    // Each web role on its own effective port; bind 127.0.0.1 means they are dialled there.
    expect![[r#"

            # The server roles of service web.
            upstream web {
                server 127.0.0.1:8080; # web-server-1 on node1
                server 127.0.0.1:8081; # web-server-2 on node2
                keepalive 16;
            }

            server {
                listen 0.0.0.0:80;

                location = /drover-health {
                    access_log off;
                    return 200 "ok\n";
                }

                # Connection and request counters for the agent's metric source, from this host only.
                location = /drover-status {
                    stub_status;
                    access_log off;
                    allow 127.0.0.1;
                    allow ::1;
                    deny all;
                }

                location / {
                    proxy_pass http://web;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_set_header Host $host;
                    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                    proxy_connect_timeout 5000ms;
                    proxy_read_timeout 60000ms;
                    # Large responses stream through instead of going to temporary files.
                    proxy_max_temp_file_size 0;
                    # A role that refuses the connection (stopped, restarting) is skipped.
                    proxy_next_upstream error timeout;
                }
            }
        }
    "#]]
    .assert_eq(&text[text.find("keepalive_timeout 65000ms;\n").unwrap() + 27..]);

    // Web on every address: its roles are dialled on their host addresses.
    let mut topo = lb_topology(true);
    topo.references.get_mut("web").unwrap().values.service.insert("bind".into(), json!("0.0.0.0"));
    let text = file(&render_role(&st, &topo, &lb_values(), "l1").unwrap());
    assert!(text.contains("server 10.0.0.1:8080; # web-server-1 on node1\n"), "{text}");
    assert!(text.contains("server 10.0.0.2:8081; # web-server-2 on node2\n"), "{text}");

    // No roles of that type left: a 503 naming the service instead of an empty upstream.
    topo.references.get_mut("web").unwrap().roles.clear();
    let text = file(&render_role(&st, &topo, &lb_values(), "l1").unwrap());
    assert!(!text.contains("upstream"), "{text}");
    assert!(text.contains("return 503 \"service web has no server roles\\n\";"), "{text}");
}

#[test]
fn bad_references_fail_the_render_naming_the_parameter() {
    let st = nginx();
    let cases = [
        (
            lb_topology(false),
            lb_values(),
            "config: parameter `upstream_service`: service `web` does not exist in cluster `prod`",
        ),
        (
            lb_topology(true),
            ConfigValues {
                service: map(&[("upstream_service", json!("web")), ("upstream_role_type", json!("primary"))]),
                ..Default::default()
            },
            "parcels/nginx/templates/nginx.conf.hbs: line 30, column 1: endpoints: service `web` has no role type `primary`; role types: server",
        ),
        (
            lb_topology(true),
            ConfigValues {
                service: map(&[("upstream_service", json!("web")), ("upstream_port_parameter", json!("bind"))]),
                ..Default::default()
            },
            "parcels/nginx/templates/nginx.conf.hbs: line 30, column 1: endpoints: parameter `bind` of role `web-server-1` of service `web` is not a port",
        ),
        (
            lb_topology(true),
            ConfigValues {
                service: map(&[("upstream_service", json!("web")), ("upstream_port_parameter", json!("nope"))]),
                ..Default::default()
            },
            "parcels/nginx/templates/nginx.conf.hbs: line 30, column 1: endpoints: role `web-server-1` of service `web` has no parameter `nope`",
        ),
    ];
    for (topo, values, want) in cases {
        let err = render_role(&st, &topo, &values, "l1").unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

const CLIENT: &str = r#"
name = "client"
version = "1"
[[role_types]]
name = "main"
files = [{ path = "app.conf" }]
[role_types.process]
program = "/bin/app"
[[parameters]]
name = "backend"
type = "service"
service_types = ["redis"]
[[parameters]]
name = "other"
type = "service"
"#;

#[test]
fn service_parameters_validate_names_and_restrict_types() {
    let template = "{{#if refs.backend}}{{refs.backend.service}} ({{refs.backend.type}}): {{#each refs.backend.roles.primary}}{{address}}:{{config.port}}{{/each}}{{else}}none{{/if}} other={{refs.other}}\n";
    let st = ServiceType::parse("test/client", CLIENT, &crate::templates(&[("app.conf.hbs", template)])).unwrap();
    let param = st.parameter("backend").unwrap();
    assert_eq!(param.validate(&json!(" web-1 ")).unwrap(), json!("web-1"));
    assert!(param.validate(&json!(3)).is_err());
    for bad in [json!("Web"), json!(""), json!("-x"), json!("a b")] {
        let e = param.validate(&bad).unwrap_err();
        assert!(e.message.contains("expected the name of a service of the cluster"), "{bad}: {e}");
    }
    let ok = validate_patch(&st, &Level::Service, &map(&[("backend", json!("cache"))])).unwrap();
    assert_eq!(ok["backend"], json!("cache"));
    let described = serde_json::to_value(param).unwrap();
    assert_eq!((&described["type"], &described["service_types"]), (&json!("service"), &json!(["redis"])));

    let cache = DependencyTopology {
        service: "cache".into(),
        service_type: Catalog::builtin().unwrap().get("redis").unwrap().clone(),
        roles: vec![RoleInstance {
            role_type: "primary".into(),
            group: "primary-default".into(),
            ..role("p", "cache-primary-1", 0, 5)
        }],
        values: ConfigValues::default(),
    };
    let mut topo = Topology {
        cluster: "prod".into(),
        service: "app".into(),
        roles: vec![RoleInstance {
            role_type: "main".into(),
            group: "main-default".into(),
            ..role("m", "app-main-1", 0, 1)
        }],
        ..Default::default()
    };
    let unset = render_role(&st, &topo, &ConfigValues::default(), "m").unwrap();
    assert_eq!(String::from_utf8(unset.files[0].content.clone()).unwrap(), "none other=\n");

    topo.references.insert("cache".into(), cache.clone());
    let values = ConfigValues { service: map(&[("backend", json!("cache"))]), ..Default::default() };
    let set = render_role(&st, &topo, &values, "m").unwrap();
    assert_eq!(String::from_utf8(set.files[0].content.clone()).unwrap(), "cache (redis): 10.0.0.5:6379 other=\n");

    // A reference of a type the parameter does not allow.
    topo.references.insert("web".into(), web());
    let values = ConfigValues { service: map(&[("backend", json!("web"))]), ..Default::default() };
    let err = render_role(&st, &topo, &values, "m").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config: parameter `backend`: service `web` is of type `nginx`; expected a service of type redis"
    );

    // Every service named at any level, once.
    let values = ConfigValues {
        service: map(&[("backend", json!("cache"))]),
        groups: [("main-default".to_string(), map(&[("other", json!("web"))]))].into(),
        roles: [("m".to_string(), map(&[("backend", json!("cache")), ("unknown", json!("x"))]))].into(),
    };
    let refs = service_refs(&st, &values);
    let want =
        [("backend", "cache"), ("other", "web")].map(|(p, s)| ServiceRef { parameter: p.into(), service: s.into() });
    assert_eq!(refs, want);
}

#[test]
fn descriptor_checks_service_parameters_and_reload_signals() {
    let cases = [
        (
            CLIENT.replace("service_types = [\"redis\"]", "service_types = []"),
            "parameter `backend`: service_types: the list is empty (leave it out to allow any type)",
        ),
        (
            CLIENT.replace("type = \"service\"\nservice_types", "type = \"string\"\nservice_types"),
            "parameter `backend`: service_types: only service parameters have service types",
        ),
        (
            CLIENT.replace("program = \"/bin/app\"", "program = \"/bin/app\"\nreload_signal = \"SIGKILL\""),
            "role type `main`: process.reload_signal: `SIGKILL` cannot ask a process to reload",
        ),
        (
            CLIENT.replace("program = \"/bin/app\"", "program = \"/bin/app\"\nreload_signal = \"HUP\""),
            "role type `main`: process.reload_signal: `HUP` cannot ask a process to reload",
        ),
    ];
    for (text, want) in cases {
        let err = ServiceType::parse("test/client", &text, &crate::templates(&[("app.conf.hbs", "x")])).unwrap_err();
        assert!(err.to_string().starts_with(&format!("test/client/service.toml: {want}")), "{err}");
    }
    // In a catalog, service_types must name known types.
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("client");
    std::fs::create_dir_all(client.join("templates")).unwrap();
    std::fs::write(client.join("service.toml"), CLIENT.replace("[\"redis\"]", "[\"kafka\"]")).unwrap();
    std::fs::write(client.join("templates/app.conf.hbs"), "x").unwrap();
    let err = Catalog::load(true, &[dir.path().to_path_buf()]).unwrap_err();
    assert!(
        err.to_string().ends_with("parameter `backend`: service_types: `kafka` is not a known service type"),
        "{err}"
    );
    std::fs::write(client.join("service.toml"), CLIENT).unwrap();
    assert!(Catalog::load(true, &[dir.path().to_path_buf()]).is_ok());
}

#[test]
fn restart_digest_follows_restart_parameters_only() {
    let st = nginx();
    let base = ConfigValues::default();
    let digest = |v: &ConfigValues, role: &str| restart_digest(&st, v, "server", "server-default", role);
    let d0 = digest(&base, "l1");
    assert_eq!(d0.len(), 64);
    // Reloadable parameters and references do not change it...
    let reloadable = ConfigValues {
        service: map(&[
            ("worker_processes", json!(4)),
            ("upstream_service", json!("web")),
            ("access_log", json!(true)),
        ]),
        ..Default::default()
    };
    assert_eq!(digest(&reloadable, "l1"), d0);
    // ...a port does, for the role it applies to only.
    let moved = ConfigValues { roles: [("l1".to_string(), map(&[("port", json!(81))]))].into(), ..Default::default() };
    assert_ne!(digest(&moved, "l1"), d0);
    assert_eq!(digest(&moved, "l2"), d0);
    let r = render_role(&st, &lb_topology(true), &lb_values(), "l1").unwrap();
    assert_eq!(r.restart_digest, digest(&lb_values(), "l1"));
}
