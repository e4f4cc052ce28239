use std::collections::BTreeMap;

use drover_service_types::config::{
    ConfigValues, Level, Source, changed_keys, effective, missing_required, validate_patch,
};
use serde_json::{Value, json};

fn map(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn values() -> ConfigValues {
    ConfigValues {
        service: map(&[("port", json!(9000)), ("level", json!("high"))]),
        groups: [("main-big".to_string(), map(&[("port", json!(9100))]))].into(),
        roles: [("r1".to_string(), map(&[("port", json!(9200)), ("level", json!("low"))]))].into(),
    }
}

fn show(e: &BTreeMap<String, drover_service_types::config::Effective>) -> String {
    e.iter().map(|(k, v)| format!("{k}={} ({})", v.value, v.source)).collect::<Vec<_>>().join(", ")
}

#[test]
fn precedence_default_service_group_role() {
    let st = crate::base();
    let v = values();
    let cases = [
        (
            ConfigValues::default(),
            "main",
            "main-default",
            "r9",
            "level=\"low\" (default), port=8080 (default), secret=null (default)",
        ),
        (
            v.clone(),
            "main",
            "main-default",
            "r9",
            "level=\"high\" (service), port=9000 (service), secret=null (default)",
        ),
        (
            v.clone(),
            "main",
            "main-big",
            "r9",
            "level=\"high\" (service), port=9100 (group:main-big), secret=null (default)",
        ),
        (v.clone(), "main", "main-big", "r1", "level=\"low\" (role), port=9200 (role), secret=null (default)"),
        // `port` applies only to `main`: a worker does not see it at all.
        (v.clone(), "worker", "main-big", "r1", "level=\"low\" (role), secret=null (default)"),
    ];
    for (values, rt, group, role, want) in cases {
        assert_eq!(show(&effective(&st, &values, rt, group, role)), want, "{rt} {group} {role}");
    }
}

#[test]
fn source_serialises_as_strings() {
    let sources = [Source::Default, Source::Service, Source::Group("g1".to_string()), Source::Role];
    let json = serde_json::to_string(&sources).unwrap();
    assert_eq!(json, r#"["default","service","group:g1","role"]"#);
    let back: Vec<Source> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sources);
    assert!(serde_json::from_str::<Source>("\"cluster\"").is_err());
}

#[test]
fn config_values_round_trip_and_default() {
    let v = values();
    let back: ConfigValues = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    let empty: ConfigValues = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, ConfigValues::default());
}

#[test]
fn validate_patch_normalises_and_collects_every_error() {
    let st = crate::base();
    let ok = validate_patch(
        &st,
        &Level::Service,
        &map(&[("port", json!("9000")), ("level", json!("HIGH")), ("secret", Value::Null)]),
    );
    assert_eq!(ok, Ok(map(&[("level", json!("high")), ("port", json!(9000)), ("secret", Value::Null)])));

    // A role-type parameter may be set at service level or for a role type it applies to...
    let group = Level::Group { role_type: "main", group: "main-big" };
    assert!(validate_patch(&st, &group, &map(&[("port", json!(1))])).is_ok());

    // ...but not for a role type it does not apply to. Every error is reported.
    let role = Level::Role { role_type: "worker", role_id: "w1" };
    let patch = map(&[("port", json!(1)), ("colour", json!("red")), ("level", json!("medium")), ("secret", json!(42))]);
    let errors: Vec<String> = validate_patch(&st, &role, &patch).unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "parameter `colour`: unknown parameter of service type `svc`",
            "parameter `level`: expected one of low, high, got \"medium\"",
            "parameter `port`: does not apply to role type `worker`",
            "parameter `secret`: expected a string, got the value",
        ]
    );

    let out_of_range = validate_patch(&st, &Level::Service, &map(&[("port", json!(0))])).unwrap_err();
    assert_eq!(out_of_range[0].parameter, "port");

    let ghost = Level::Group { role_type: "ghost", group: "g" };
    let errors = validate_patch(&st, &ghost, &map(&[("level", json!("low"))])).unwrap_err();
    assert_eq!(errors[0].to_string(), "service type `svc` has no role type `ghost`");
}

#[test]
fn apply_patch_sets_and_removes_overrides() {
    let st = crate::base();
    let mut v = ConfigValues::default();
    let level = Level::Role { role_type: "main", role_id: "r1" };
    let patch = validate_patch(&st, &level, &map(&[("port", json!(7000))])).unwrap();
    v.apply_patch(&level, &patch);
    assert_eq!(v.roles["r1"]["port"], json!(7000));
    v.apply_patch(&level, &map(&[("port", Value::Null)]));
    assert_eq!(v, ConfigValues::default());
}

#[test]
fn changed_keys_and_restart_flag() {
    let st = crate::base();
    let a = values();
    // `level` needs no restart.
    let mut b = a.clone();
    b.service.insert("level".to_string(), json!("low"));
    assert_eq!(changed_keys(&st, &a, &b, "main", "main-default", "r9"), (vec!["level".to_string()], false));
    // Overridden at role level: r1 sees no change.
    assert_eq!(changed_keys(&st, &a, &b, "main", "main-default", "r1"), (vec![], false));
    // `port` needs a restart, but only `main` roles have it.
    b.groups.insert("main-default".to_string(), map(&[("port", json!(1234))]));
    assert_eq!(
        changed_keys(&st, &a, &b, "main", "main-default", "r9"),
        (vec!["level".to_string(), "port".to_string()], true)
    );
    assert_eq!(changed_keys(&st, &a, &b, "worker", "main-default", "w1"), (vec!["level".to_string()], false));
}

#[test]
fn missing_required_parameters() {
    let toml = format!("{}\n[[parameters]]\nname = \"token\"\ntype = \"password\"\nrequired = true\n", crate::BASE);
    let st = drover_service_types::descriptor::ServiceType::parse(
        "test/svc",
        &toml,
        &crate::templates(&[("app.conf.hbs", "x")]),
    )
    .unwrap();
    let mut v = ConfigValues::default();
    assert_eq!(missing_required(&st, &v, "main", "g", "r1"), ["token"]);
    let errors = validate_patch(&st, &Level::Service, &map(&[("token", Value::Null)])).unwrap_err();
    assert_eq!(errors[0].to_string(), "parameter `token`: is required and has no default, so it cannot be removed");
    v.service.insert("token".to_string(), json!("t"));
    assert!(missing_required(&st, &v, "main", "g", "r1").is_empty());
}
