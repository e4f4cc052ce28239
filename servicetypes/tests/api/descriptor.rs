use std::path::PathBuf;

use drover_service_types::descriptor::{Catalog, ServiceType};
use expect_test::expect;

use crate::{BASE, templates};

fn parse_err(toml: &str, tpl: &[(&str, &str)]) -> String {
    match ServiceType::parse("parcels/svc", toml, &templates(tpl)) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

const APP: (&str, &str) = ("app.conf.hbs", "port={{config.port}}\n");

#[test]
fn base_descriptor_parses() {
    let st = crate::base();
    assert_eq!(st.name, "svc");
    assert_eq!(st.display_name, "svc");
    assert_eq!(st.role_types.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["main", "worker"]);
    assert_eq!(st.role_type("main").unwrap().files[0].template, "app.conf.hbs");
    assert_eq!(st.role_type("main").unwrap().process.stop_signal, "SIGTERM");
    assert_eq!(st.rolling_restart.batch_size, 1);
    assert!(st.parameter("secret").unwrap().sensitive());
    assert!(st.parameter("nope").is_none());
}

/// Name, service.toml, templates, expected error.
type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a str);

/// Each broken descriptor is rejected with a message naming the file and the field.
#[test]
fn bad_descriptors() {
    let param = |p: &str| format!("{BASE}\n[[parameters]]\n{p}\n");
    let role = |r: &str| format!("{BASE}\n[[role_types]]\n{r}\n");
    let check = |c: &str| {
        let args = "args = [\"--port\", \"{{config.port}}\"]\n";
        BASE.replace(args, &format!("{args}[role_types.process.config_check]\n{c}\n"))
    };
    let cases: Vec<Case> = vec![
        (
            "not toml",
            "name = ".to_string(),
            &[APP],
            "parcels/svc/service.toml: invalid TOML at line 1, column 8: syntax error",
        ),
        (
            "unknown field",
            format!("colour = 1\n{BASE}"),
            &[APP],
            "parcels/svc/service.toml: invalid TOML at line 1, column 1: unknown field `colour`, expected one of `name`, `display_name`, `description`, `version`, `requires`, `parcels`, `rolling_restart`, `role_types`, `parameters`, `dashboard`, `metrics_catalog`",
        ),
        (
            "name mismatch",
            BASE.replace("name = \"svc\"", "name = \"other\""),
            &[APP],
            "parcels/svc/service.toml: name `other` does not match its folder `svc`",
        ),
        (
            "bad name",
            BASE.replace("name = \"main\"", "name = \"Main\""),
            &[APP],
            "parcels/svc/service.toml: role type `Main`: name: `Main` is not a valid name (lowercase letters, digits, `_`, `-`; starting with a letter)",
        ),
        (
            "duplicate role type",
            role("name = \"main\"\n[role_types.process]\nprogram = \"x\""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: duplicate role type name",
        ),
        (
            "min > max",
            BASE.replace("min_instances = 1", "min_instances = 4"),
            &[APP],
            "parcels/svc/service.toml: role type `main`: min_instances 4 is greater than max_instances 3",
        ),
        (
            "missing template",
            BASE.to_string(),
            &[],
            "parcels/svc/service.toml: role type `main`: file `app.conf`: template `templates/app.conf.hbs` does not exist",
        ),
        (
            "bad template",
            BASE.to_string(),
            &[("app.conf.hbs", "port={{config.port\n")],
            "parcels/svc/templates/app.conf.hbs: invalid template at line 2, column 1: invalid handlebars syntax: expected trailing_tilde_to_omit_whitespace",
        ),
        (
            "bad arg template",
            BASE.replace("\"{{config.port}}\"", "\"{{#if x}}\""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: process.args[1]: invalid template at line 1, column 10: invalid handlebars syntax: expected escape, expression, html_expression, decorator_expression, partial_expression, invert_tag, invert_chain_tag, helper_block_start, helper_block_end, decorator_block_start, partial_block_start, raw_block_start, hbs_comment, or hbs_comment_compact",
        ),
        (
            "absolute file path",
            BASE.replace("path = \"app.conf\"", "path = \"/etc/app.conf\", template = \"app.conf.hbs\""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: file `/etc/app.conf`: path: `/etc/app.conf` must be a relative path inside the role directory",
        ),
        (
            "dotdot file path",
            BASE.replace("path = \"app.conf\"", "path = \"../app.conf\", template = \"app.conf.hbs\""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: file `../app.conf`: path: `../app.conf` must not contain `..` or `.` components",
        ),
        (
            "bad signal",
            BASE.replace("program = \"/bin/worker\"", "program = \"/bin/worker\"\nstop_signal = \"SIGFOO\""),
            &[APP],
            "parcels/svc/service.toml: role type `worker`: process.stop_signal: unknown signal `SIGFOO` (expected one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, SIGUSR1, SIGUSR2)",
        ),
        (
            "bad grace",
            BASE.replace("program = \"/bin/worker\"", "program = \"/bin/worker\"\nstop_grace = \"soon\""),
            &[APP],
            "parcels/svc/service.toml: role type `worker`: process.stop_grace: `soon` is not a duration (expected number at 0)",
        ),
        (
            "two probes",
            format!("{BASE}\n[[role_types.health_checks]]\ntcp = {{ port = 1 }}\nhttp = {{ url = \"x\" }}\n"),
            &[APP],
            "parcels/svc/service.toml: role type `worker`: health_checks[0]: exactly one of tcp, http or command is required",
        ),
        (
            "duplicate parameter",
            param("name = \"port\"\ntype = \"port\""),
            &[APP],
            "parcels/svc/service.toml: parameter `port`: duplicate parameter name",
        ),
        (
            "unknown type",
            param("name = \"x\"\ntype = \"float\""),
            &[APP],
            "parcels/svc/service.toml: parameter `x`: type: unknown type `float` (expected string, integer, boolean, enum, port, path, memory_size, duration, password or service)",
        ),
        (
            "port default",
            param("name = \"p\"\ntype = \"port\"\ndefault = 70000"),
            &[APP],
            "parcels/svc/service.toml: parameter `p`: default 70000 is invalid: 70000 is not a valid port (1-65535)",
        ),
        (
            "integer default out of range",
            param("name = \"n\"\ntype = \"integer\"\nmin = 1\nmax = 5\ndefault = 9"),
            &[APP],
            "parcels/svc/service.toml: parameter `n`: default 9 is invalid: 9 is out of range 1..=5",
        ),
        (
            "min > max param",
            param("name = \"n\"\ntype = \"integer\"\nmin = 5\nmax = 1"),
            &[APP],
            "parcels/svc/service.toml: parameter `n`: min 5 is greater than max 1",
        ),
        (
            "range on string",
            param("name = \"s\"\ntype = \"string\"\nmin = 1"),
            &[APP],
            "parcels/svc/service.toml: parameter `s`: min/max: only integer parameters have a range",
        ),
        (
            "enum default",
            param("name = \"e\"\ntype = \"enum\"\nvalues = [\"a\"]\ndefault = \"b\""),
            &[APP],
            "parcels/svc/service.toml: parameter `e`: default \"b\" is invalid: expected one of a, got \"b\"",
        ),
        (
            "empty enum",
            param("name = \"e\"\ntype = \"enum\"\nvalues = []"),
            &[APP],
            "parcels/svc/service.toml: parameter `e`: values: an enum needs at least one value",
        ),
        (
            "memory default",
            param("name = \"m\"\ntype = \"memory_size\"\ndefault = \"lots\""),
            &[APP],
            "parcels/svc/service.toml: parameter `m`: default \"lots\" is invalid: expected a memory size (bytes, or a number with unit k, m, g or t, e.g. \"256mb\"), got \"lots\"",
        ),
        (
            "password default hidden",
            param("name = \"pw\"\ntype = \"password\"\ndefault = 5"),
            &[APP],
            "parcels/svc/service.toml: parameter `pw`: default the value is invalid: expected a string, got the value",
        ),
        (
            "unknown scope role",
            param("name = \"x\"\ntype = \"string\"\nscope = [\"ghost\"]"),
            &[APP],
            "parcels/svc/service.toml: parameter `x`: scope: role type `ghost` does not exist",
        ),
        (
            "bad scope word",
            param("name = \"x\"\ntype = \"string\"\nscope = \"global\""),
            &[APP],
            "parcels/svc/service.toml: parameter `x`: scope: expected \"service\" or a list of role types, got \"global\"",
        ),
        (
            "requires itself",
            format!("requires = [\"svc\"]\n{BASE}"),
            &[APP],
            "parcels/svc/service.toml: requires: `svc` is the service itself",
        ),
        (
            "no role types",
            "name = \"svc\"".to_string(),
            &[],
            "parcels/svc/service.toml: role_types: at least one role type is required",
        ),
        (
            "parcel name with a dash",
            format!("parcels = [\"my-parcel\"]\n{BASE}"),
            &[APP],
            "parcels/svc/service.toml: parcels: `my-parcel`: parcel names have no `-`",
        ),
        (
            "empty config check program",
            check("program = \" \""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: process.config_check.program: must not be empty",
        ),
        (
            "config check argument that does not parse",
            check("program = \"/bin/app\"\nargs = [\"-t\", \"{{#if config.port}}\"]"),
            &[APP],
            "parcels/svc/service.toml: role type `main`: process.config_check.args[1]: invalid template at line 1, column 20: invalid handlebars syntax: expected escape, expression, html_expression, decorator_expression, partial_expression, invert_tag, invert_chain_tag, helper_block_start, helper_block_end, decorator_block_start, partial_block_start, raw_block_start, hbs_comment, or hbs_comment_compact",
        ),
        (
            "config check timeout",
            check("program = \"/bin/app\"\ntimeout = \"soon\""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: process.config_check.timeout: `soon` is not a duration (expected number at 0)",
        ),
        (
            "config check timeout 0",
            check("program = \"/bin/app\"\ntimeout = \"0s\""),
            &[APP],
            "parcels/svc/service.toml: role type `main`: process.config_check.timeout: must be greater than zero",
        ),
        (
            "unknown config check field",
            check("program = \"/bin/app\"\nshell = true"),
            &[APP],
            "parcels/svc/service.toml: invalid TOML at line 15, column 1: unknown field `shell`, expected one of `program`, `args`, `timeout`",
        ),
        (
            "batch size 0",
            format!("{BASE}\n[rolling_restart]\nbatch_size = 0\n"),
            &[APP],
            "parcels/svc/service.toml: rolling_restart.batch_size: must be at least 1",
        ),
    ];
    let mut failures = Vec::new();
    for (name, toml, tpl, want) in cases {
        let got = parse_err(&toml, tpl);
        if got != want {
            failures.push(format!("{name}:\n  want: {want:?}\n   got: {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn builtin_catalog_has_nginx_redis_and_zookeeper() {
    let catalog = Catalog::builtin().unwrap();
    let names: Vec<&str> = catalog.iter().map(|st| st.name.as_str()).collect();
    assert_eq!(names, ["nginx", "redis", "zookeeper"]);
    let redis = catalog.get("redis").unwrap();
    assert_eq!(redis.source, "parcels/redis");
    let order: Vec<(&str, u32, Option<u32>)> =
        redis.role_types.iter().map(|r| (r.name.as_str(), r.min_instances, r.max_instances)).collect();
    assert_eq!(order, [("primary", 1, Some(1)), ("replica", 0, None)]);
    assert!(redis.parameter("requirepass").unwrap().sensitive());
    assert!(redis.parameter("maxmemory").unwrap().restart);
    let zk = catalog.get("zookeeper").unwrap();
    assert_eq!(zk.role_type("server").unwrap().max_instances, Some(7));
    assert_eq!(zk.parameter("heap_size").unwrap().default, Some(serde_json::json!(512 * 1024 * 1024)));
}

fn write_service(root: &std::path::Path, name: &str, toml: &str, tpl: &[(&str, &str)]) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("service.toml"), toml).unwrap();
    for (k, v) in tpl {
        std::fs::write(dir.join("templates").join(k), v).unwrap();
    }
}

#[test]
fn user_types_override_builtin_and_requires_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = "description = \"mine\"\n[[role_types]]\nname = \"primary\"\n[role_types.process]\nprogram = \"/x\"\n";
    write_service(tmp.path(), "redis", redis, &[]);
    let svc = format!("requires = [\"zookeeper\"]\n{BASE}");
    write_service(tmp.path(), "svc", &svc, &[APP]);
    let missing = tmp.path().join("does-not-exist");
    let catalog = Catalog::load(true, &[tmp.path().to_path_buf(), missing]).unwrap();
    assert_eq!(catalog.get("redis").unwrap().description, "mine");
    assert_eq!(catalog.get("svc").unwrap().requires, ["zookeeper"]);
    assert!(catalog.get("zookeeper").is_some());

    // Without the built-in types, `zookeeper` is unknown.
    let err = Catalog::load(false, &[tmp.path().to_path_buf()]).unwrap_err().to_string();
    let want =
        format!("{}: requires: `zookeeper` is not a known service type", tmp.path().join("svc/service.toml").display());
    assert_eq!(err, want);
}

#[test]
fn dependency_cycles_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let role = "[[role_types]]\nname = \"r\"\n[role_types.process]\nprogram = \"/x\"\n";
    write_service(tmp.path(), "a", &format!("requires = [\"b\"]\n{role}"), &[]);
    write_service(tmp.path(), "b", &format!("requires = [\"a\"]\n{role}"), &[]);
    let err = Catalog::load(false, &[tmp.path().to_path_buf()]).unwrap_err().to_string();
    let want = format!("{}: requires: dependency cycle a -> b -> a", tmp.path().join("a/service.toml").display());
    assert_eq!(err, want);
}

#[test]
fn load_dir_reads_templates_and_names_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    write_service(tmp.path(), "svc", BASE, &[APP, ("unused.hbs", "{{#each}}")]);
    let dir: PathBuf = tmp.path().join("svc");
    let err = ServiceType::load_dir(&dir).unwrap_err();
    assert_eq!(err.file(), format!("{}/templates/unused.hbs", dir.display()));
    std::fs::remove_file(dir.join("templates/unused.hbs")).unwrap();
    let st = ServiceType::load_dir(&dir).unwrap();
    assert_eq!(st.role_type("main").unwrap().files[0].source, "port={{config.port}}\n");
}

#[test]
fn a_config_check_is_parsed_with_its_default_timeout() {
    let args = "args = [\"--port\", \"{{config.port}}\"]\n";
    let check = "[role_types.process.config_check]\nprogram = \"/bin/app\"\nargs = [\"--check\", \"${CHECK_DIR}/app.conf\", \"{{config.port}}\"]\n";
    let toml = BASE.replace(args, &format!("{args}{check}"));
    let st = ServiceType::parse("parcels/svc", &toml, &templates(&[APP])).unwrap();
    let c = st.role_type("main").unwrap().process.config_check.clone().unwrap();
    assert_eq!((c.program.as_str(), c.args.len(), c.timeout), ("/bin/app", 3, std::time::Duration::from_secs(30)));
    assert_eq!(st.role_type("worker").unwrap().process.config_check, None);
}

#[test]
fn service_type_serialises_for_the_api() {
    let st = crate::base();
    let json = serde_json::to_string_pretty(&st.parameters).unwrap();
    expect![[r#"
        [
          {
            "name": "port",
            "type": "port",
            "default": 8080,
            "description": "",
            "scope": [
              "main"
            ],
            "restart": true,
            "required": false,
            "sensitive": false
          },
          {
            "name": "level",
            "type": "enum",
            "values": [
              "low",
              "high"
            ],
            "default": "low",
            "description": "",
            "scope": "service",
            "restart": false,
            "required": false,
            "sensitive": false
          },
          {
            "name": "secret",
            "type": "password",
            "default": null,
            "description": "",
            "scope": "service",
            "restart": false,
            "required": false,
            "sensitive": true
          }
        ]"#]]
    .assert_eq(&json);
}
