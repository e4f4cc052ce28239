use std::collections::BTreeMap;

use drover_service_types::config::ConfigValues;
use drover_service_types::descriptor::{Catalog, ServiceType};
use drover_service_types::render::{DependencyTopology, Probe, RenderedRole, RoleInstance, Topology, render_role};
use expect_test::expect;
use serde_json::{Value, json};

fn role(id: &str, role_type: &str, index: u32, host: u32) -> RoleInstance {
    RoleInstance {
        role_id: id.to_string(),
        name: format!("{role_type}-{}", index + 1),
        role_type: role_type.to_string(),
        group: format!("{role_type}-default"),
        host_id: format!("host-{host}"),
        hostname: format!("node{host}.example"),
        address: format!("10.0.0.{host}"),
        index,
    }
}

fn map(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn file(r: &RenderedRole, path: &str) -> String {
    let f = r.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no file {path}"));
    String::from_utf8(f.content.clone()).unwrap()
}

fn builtin(name: &str) -> ServiceType {
    Catalog::builtin().unwrap().get(name).unwrap().clone()
}

fn redis_topology() -> Topology {
    Topology {
        cluster: "prod".to_string(),
        service: "cache".to_string(),
        roles: vec![role("r-replica", "replica", 0, 2), role("r-primary", "primary", 0, 1)],
        dependencies: BTreeMap::new(),
        references: BTreeMap::new(),
    }
}

#[test]
fn redis_primary_and_replica() {
    let st = builtin("redis");
    let topo = redis_topology();
    let values = ConfigValues {
        service: map(&[("bind", json!("0.0.0.0")), ("maxmemory", json!(268435456)), ("requirepass", json!("p\"w"))]),
        groups: BTreeMap::new(),
        roles: [("r-primary".to_string(), map(&[("port", json!(7000))]))].into(),
    };
    let primary = render_role(&st, &topo, &values, "r-primary").unwrap();
    expect![[r##"
        # Rendered by Drover for primary-1 (primary) of service prod/cache.
        # Do not edit: changes are overwritten by the next configuration push.
        port 7000
        bind 0.0.0.0
        protected-mode yes
        daemonize no
        supervised no
        # Logs go to stdout, which the agent captures and rotates.
        logfile ""
        loglevel notice
        dir ./
        dbfilename dump.rdb
        appendonly no
        maxmemory 268435456
        maxmemory-policy noeviction
        requirepass "p\"w"
        masterauth "p\"w"
    "##]]
    .assert_eq(&file(&primary, "redis.conf"));
    let replica = render_role(&st, &topo, &values, "r-replica").unwrap();
    expect![[r##"
        # Rendered by Drover for replica-1 (replica) of service prod/cache.
        # Do not edit: changes are overwritten by the next configuration push.
        port 6379
        bind 0.0.0.0
        protected-mode yes
        daemonize no
        supervised no
        # Logs go to stdout, which the agent captures and rotates.
        logfile ""
        loglevel notice
        dir ./
        dbfilename dump.rdb
        appendonly no
        maxmemory 268435456
        maxmemory-policy noeviction
        requirepass "p\"w"
        masterauth "p\"w"
        replicaof 10.0.0.1 7000
        replica-read-only yes
    "##]]
    .assert_eq(&file(&replica, "redis.conf"));

    assert_eq!(replica.process.program, "${PARCELS_ROOT}/redis/usr/bin/redis-server");
    assert_eq!(replica.process.args, ["redis.conf"]);
    assert_eq!(replica.process.working_dir, "");
    assert_eq!(replica.process.stop_signal, "SIGTERM");
    // 0640 in the descriptor; a file holding a password is made private to its owner.
    assert_eq!(replica.files[0].mode, 0o600);
    assert_eq!(replica.files[0].sha256.len(), 64);
    assert_eq!(replica.health_checks[0].probe, Probe::Tcp { host: "10.0.0.2".to_string(), port: 6379 });
    assert_eq!(primary.health_checks[0].probe, Probe::Tcp { host: "10.0.0.1".to_string(), port: 7000 });
}

#[test]
fn redis_defaults_on_loopback() {
    let st = builtin("redis");
    let replica = render_role(&st, &redis_topology(), &ConfigValues::default(), "r-replica").unwrap();
    expect![[r##"
        # Rendered by Drover for replica-1 (replica) of service prod/cache.
        # Do not edit: changes are overwritten by the next configuration push.
        port 6379
        bind 127.0.0.1
        protected-mode yes
        daemonize no
        supervised no
        # Logs go to stdout, which the agent captures and rotates.
        logfile ""
        loglevel notice
        dir ./
        dbfilename dump.rdb
        appendonly no
        maxmemory 0
        maxmemory-policy noeviction
        replicaof 127.0.0.1 6379
        replica-read-only yes
    "##]]
    .assert_eq(&file(&replica, "redis.conf"));
    assert_eq!(replica.files[0].mode, 0o640, "no password: the descriptor's mode");
    assert_eq!(replica.health_checks[0].probe, Probe::Tcp { host: "127.0.0.1".to_string(), port: 6379 });
}

fn zk_topology() -> Topology {
    Topology {
        cluster: "prod".to_string(),
        service: "zk".to_string(),
        // Three servers on one machine, kept apart by role-level port overrides.
        roles: vec![role("z1", "server", 0, 1), role("z2", "server", 1, 1), role("z3", "server", 2, 1)],
        dependencies: BTreeMap::new(),
        references: BTreeMap::new(),
    }
}

fn zk_values() -> ConfigValues {
    let ports = |n: i64| {
        map(&[("client_port", json!(2180 + n)), ("peer_port", json!(2880 + n)), ("election_port", json!(3880 + n))])
    };
    ConfigValues {
        service: map(&[("heap_size", json!(268435456)), ("tick_time", json!(1000))]),
        groups: BTreeMap::new(),
        roles: [("z2".to_string(), ports(2)), ("z3".to_string(), ports(3))].into(),
    }
}

#[test]
fn zookeeper_ensemble_with_per_role_ports() {
    let st = builtin("zookeeper");
    let topo = zk_topology();
    let values = zk_values();
    let rendered: Vec<RenderedRole> =
        ["z1", "z2", "z3"].iter().map(|id| render_role(&st, &topo, &values, id).unwrap()).collect();
    // Every server gets the same server list, built from each peer's own ports.
    expect![[r#"
        # Rendered by Drover for server-2 of service prod/zk.
        # Do not edit: changes are overwritten by the next configuration push.
        tickTime=1000
        initLimit=10
        syncLimit=5
        dataDir=${ROLE_DIR}/data
        clientPort=2182
        4lw.commands.whitelist=srvr,ruok,stat,mntr
        # The admin HTTP server would need a port per server; the agent checks health with srvr.
        admin.enableServer=false
        # The ensemble, each server with its own ports (role-level overrides may differ per server).
        server.1=10.0.0.1:2888:3888
        server.2=10.0.0.1:2882:3882
        server.3=10.0.0.1:2883:3883
    "#]]
    .assert_eq(&file(&rendered[1], "zoo.cfg"));
    assert_eq!(file(&rendered[0], "zoo.cfg").lines().filter(|l| l.starts_with("server.")).count(), 3);
    let myids: Vec<String> = rendered.iter().map(|r| file(r, "data/myid")).collect();
    assert_eq!(myids, ["1\n", "2\n", "3\n"]);

    let z2 = &rendered[1];
    expect!["${PARCELS_ROOT}/jre/usr/lib/jvm/default-java/bin/java -Xmx256m -Dzookeeper.log.dir=${ROLE_DIR} -Dzookeeper.log.file=zookeeper.log -Dlog4j.configuration=file:${ROLE_DIR}/log4j.properties org.apache.zookeeper.server.quorum.QuorumPeerMain ${ROLE_DIR}/zoo.cfg"].assert_eq(&format!("{} {}", z2.process.program, z2.process.args.join(" ")));
    assert_eq!(z2.log_files, ["zookeeper.log"]);
    assert_eq!(z2.health_checks[0].probe, Probe::Tcp { host: "127.0.0.1".to_string(), port: 2182 });
    let Probe::Command { program, args } = &z2.health_checks[1].probe else { panic!("command check") };
    assert_eq!(program, "/bin/bash");
    assert_eq!(args[1], "exec 3<>/dev/tcp/127.0.0.1/2182 && printf srvr >&3 && grep -q '^Mode: ' <&3");
    assert!(file(z2, "log4j.properties").contains("${zookeeper.log.dir}/${zookeeper.log.file}"));
}

fn svc_with_template(template: &str) -> ServiceType {
    ServiceType::parse("test/svc", crate::BASE, &crate::templates(&[("app.conf.hbs", template)])).unwrap()
}

fn svc_topology() -> Topology {
    Topology {
        cluster: "c".to_string(),
        service: "s".to_string(),
        roles: vec![role("m1", "main", 0, 1), role("m2", "main", 1, 2)],
        dependencies: BTreeMap::new(),
        references: BTreeMap::new(),
    }
}

#[test]
fn missing_variable_names_the_file() {
    let st = svc_with_template("a\nport={{config.prot}}\n");
    let err = render_role(&st, &svc_topology(), &ConfigValues::default(), "m1").unwrap_err();
    assert_eq!(err.file, "test/svc/templates/app.conf.hbs");
    expect!["test/svc/templates/app.conf.hbs: line 2, column 6: missing variable `config.prot`"]
        .assert_eq(&err.to_string());

    let st = svc_with_template("{{nohelper 1}}");
    let err = render_role(&st, &svc_topology(), &ConfigValues::default(), "m1").unwrap_err();
    expect!["test/svc/templates/app.conf.hbs: line 1, column 1: Helper not found nohelper"].assert_eq(&err.to_string());
}

#[test]
fn context_and_helpers() {
    let template = r#"{{role.id}} {{role.name}} {{role.type}} {{role.group}} {{role.index}} {{role.myid}} {{role.host}} {{role.hostname}} {{role.address}} {{role.dir}}
{{service.cluster}}/{{service.name}} ({{service.type}})
{{#each roles.main}}{{name}}@{{address}}:{{config.port}}{{#unless @last}},{{/unless}}{{/each}} workers={{len roles.worker}}
{{#if config.secret}}secret{{else}}no secret{{/if}} {{#if (eq config.level "low")}}low{{/if}}
{{yesno true}} {{yesno false}} {{secs 90500}} {{mem 536870912 "m"}} {{mem 2147483648 "g"}} {{quote "a\"b"}}
{{connect_host "0.0.0.0" "10.1.1.1"}} {{connect_host "127.0.0.1 -::1" "10.1.1.1"}} {{connect_host "10.1.1.1 127.0.0.1" "10.1.1.1"}}
{{join deps.zookeeper.hosts ";"}} {{join deps.zookeeper.roles.server ";" "address"}} {{join roles.main "," "config.port"}}
{{#each deps.zookeeper.roles.server}}{{address}}:{{config.client_port}}{{#unless @last}},{{/unless}}{{/each}}
"#;
    let st = svc_with_template(template);
    let mut topo = svc_topology();
    let zk = builtin("zookeeper");
    topo.dependencies.insert(
        "zookeeper".to_string(),
        DependencyTopology {
            service: "zk".to_string(),
            service_type: zk,
            roles: zk_topology().roles,
            values: zk_values(),
        },
    );
    let values = ConfigValues { roles: [("m2".to_string(), map(&[("port", json!(9))]))].into(), ..Default::default() };
    let err = render_role(&st, &topo, &values, "m2").unwrap_err();
    // `deps.zookeeper.hosts` does not exist: strict mode.
    assert!(err.message.contains("deps.zookeeper.hosts"), "{err}");

    let st = svc_with_template(&template.replace("{{join deps.zookeeper.hosts \";\"}} ", ""));
    let rendered = render_role(&st, &topo, &values, "m2").unwrap();
    expect![[r#"
        m2 main-2 main main-default 1 2 host-2 node2.example 10.0.0.2 ${ROLE_DIR}
        c/s (svc)
        main-1@10.0.0.1:8080,main-2@10.0.0.2:9 workers=0
        no secret low
        yes no 90 512 2 "a\"b"
        10.1.1.1 127.0.0.1 10.1.1.1
        10.0.0.1;10.0.0.1;10.0.0.1 8080,9
        10.0.0.1:2181,10.0.0.1:2182,10.0.0.1:2183
    "#]]
    .assert_eq(&file(&rendered, "app.conf"));
}

#[test]
fn render_errors_outside_templates() {
    let st = svc_with_template("x");
    let topo = svc_topology();
    let err = render_role(&st, &topo, &ConfigValues::default(), "nope").unwrap_err();
    assert_eq!(err.to_string(), "topology: role `nope` is not in service `s`");

    let mut bad = st.clone();
    bad.role_types[0].process.args[1] = "{{config.missing}}".to_string();
    let err = render_role(&bad, &topo, &ConfigValues::default(), "m1").unwrap_err();
    expect![
        "test/svc/service.toml: role type `main`: process.args[1]: line 1, column 1: missing variable `config.missing`"
    ]
    .assert_eq(&err.to_string());

    let mut needs = st.clone();
    needs.requires = vec!["zookeeper".to_string()];
    let err = render_role(&needs, &topo, &ConfigValues::default(), "m1").unwrap_err();
    assert_eq!(err.to_string(), "topology: service `s` requires a `zookeeper` service and none was given");
}

#[test]
fn zookeeper_single_server_is_standalone() {
    let st = builtin("zookeeper");
    let topo = Topology { roles: vec![role("z1", "server", 0, 1)], ..zk_topology() };
    let r = render_role(&st, &topo, &ConfigValues::default(), "z1").unwrap();
    // ZooKeeper logs an ERROR for a one-server list, so there is none.
    assert!(!file(&r, "zoo.cfg").contains("server."), "{}", file(&r, "zoo.cfg"));
    assert_eq!(file(&r, "data/myid"), "1\n");
}

#[test]
fn conditions_on_missing_variables_fail() {
    for template in
        ["{{#if config.nope}}x{{/if}}", "{{#unless role.nope}}x{{/unless}}", "{{#if (eq config.nope 1)}}{{/if}}"]
    {
        let st = svc_with_template(template);
        let err = render_role(&st, &svc_topology(), &ConfigValues::default(), "m1").unwrap_err();
        assert!(err.message.contains("missing variable") || err.message.contains("not found"), "{template}: {err}");
    }
    // A parameter that exists but has no value is `null`: falsy, not missing.
    let st = svc_with_template("{{#if config.secret}}x{{else}}none{{/if}}");
    let r = render_role(&st, &svc_topology(), &ConfigValues::default(), "m1").unwrap();
    assert_eq!(file(&r, "app.conf"), "none");
}
