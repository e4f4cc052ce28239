use drover_service_types::params::{MASK, ParamKind, Parameter, Scope, format_memory, mask};
use serde_json::{Value, json};

fn param(kind: ParamKind) -> Parameter {
    Parameter {
        name: "p".to_string(),
        kind,
        default: None,
        description: String::new(),
        scope: Scope::Service,
        restart: false,
        required: false,
    }
}

/// Runs `input -> expected` cases: `Ok(normalised)` or `Err(message)`.
fn check(kind: ParamKind, cases: &[(Value, Result<Value, &str>)]) {
    let p = param(kind.clone());
    let mut failures = Vec::new();
    for (input, want) in cases {
        let got = p.validate(input).map_err(|e| e.to_string());
        let want = want.clone().map_err(|m| format!("parameter `p`: {m}"));
        if got != want {
            failures.push(format!("{kind:?} {input}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn string() {
    check(
        ParamKind::String,
        &[
            (json!("127.0.0.1"), Ok(json!("127.0.0.1"))),
            (json!(""), Ok(json!(""))),
            (json!(5), Err("expected a string, got 5")),
            (json!("a\nb"), Err("must not contain line breaks or NUL characters")),
        ],
    );
}

#[test]
fn integer() {
    check(
        ParamKind::Integer { min: Some(1), max: Some(10) },
        &[
            (json!(1), Ok(json!(1))),
            (json!("10"), Ok(json!(10))),
            (json!(" 7 "), Ok(json!(7))),
            (json!(5.0), Ok(json!(5))),
            (json!(0), Err("0 is out of range 1..=10")),
            (json!(11), Err("11 is out of range 1..=10")),
            (json!(2.5), Err("expected an integer, got 2.5")),
            (json!("ten"), Err("expected an integer, got \"ten\"")),
            (json!(true), Err("expected an integer, got true")),
        ],
    );
    check(
        ParamKind::Integer { min: None, max: Some(3) },
        &[(json!(-100), Ok(json!(-100))), (json!(4), Err("4 is greater than the maximum 3"))],
    );
    check(ParamKind::Integer { min: Some(0), max: None }, &[(json!(-1), Err("-1 is less than the minimum 0"))]);
}

#[test]
fn boolean() {
    let err = "expected a boolean (true/false, yes/no, on/off, 1/0), got";
    check(
        ParamKind::Boolean,
        &[
            (json!(true), Ok(json!(true))),
            (json!("yes"), Ok(json!(true))),
            (json!("ON"), Ok(json!(true))),
            (json!("0"), Ok(json!(false))),
            (json!(1), Ok(json!(true))),
            (json!("false"), Ok(json!(false))),
            (json!(2), Err(&format!("{err} 2"))),
            (json!("maybe"), Err(&format!("{err} \"maybe\""))),
        ],
    );
}

#[test]
fn enumeration() {
    check(
        ParamKind::Enum { values: vec!["allkeys-lru".to_string(), "noeviction".to_string()] },
        &[
            (json!("noeviction"), Ok(json!("noeviction"))),
            (json!("AllKeys-LRU"), Ok(json!("allkeys-lru"))),
            (json!("lru"), Err("expected one of allkeys-lru, noeviction, got \"lru\"")),
            (json!(1), Err("expected one of allkeys-lru, noeviction, got 1")),
        ],
    );
}

#[test]
fn port() {
    check(
        ParamKind::Port,
        &[
            (json!(6379), Ok(json!(6379))),
            (json!("6379"), Ok(json!(6379))),
            (json!(65535), Ok(json!(65535))),
            (json!(0), Err("0 is not a valid port (1-65535)")),
            (json!(70000), Err("70000 is not a valid port (1-65535)")),
            (json!("http"), Err("\"http\" is not a valid port (1-65535)")),
        ],
    );
}

#[test]
fn path() {
    check(
        ParamKind::Path,
        &[
            (json!("/var/lib/x"), Ok(json!("/var/lib/x"))),
            (json!("data"), Ok(json!("data"))),
            (json!("${ROLE_DIR}/data"), Ok(json!("${ROLE_DIR}/data"))),
            (json!(" "), Err("expected a path, got an empty string")),
            (json!(["a"]), Err("expected a string, got [\"a\"]")),
        ],
    );
}

#[test]
fn memory_size() {
    let err = "expected a memory size (bytes, or a number with unit k, m, g or t, e.g. \"256mb\"), got";
    check(
        ParamKind::MemorySize,
        &[
            (json!(0), Ok(json!(0))),
            (json!("0"), Ok(json!(0))),
            (json!(1048576), Ok(json!(1048576))),
            (json!("256mb"), Ok(json!(268435456))),
            (json!("256m"), Ok(json!(268435456))),
            (json!("256MiB"), Ok(json!(268435456))),
            (json!("1g"), Ok(json!(1073741824))),
            (json!("1.5g"), Ok(json!(1610612736))),
            (json!("512 kb"), Ok(json!(524288))),
            (json!("100b"), Ok(json!(100))),
            (json!("1.5"), Err(&format!("{err} \"1.5\""))),
            (json!("-1g"), Err(&format!("{err} \"-1g\""))),
            (json!("12 parsecs"), Err(&format!("{err} \"12 parsecs\""))),
            (json!(-5), Err(&format!("{err} -5"))),
            (json!("mb"), Err(&format!("{err} \"mb\""))),
        ],
    );
    assert_eq!(format_memory(268435456), "256mb");
    assert_eq!(format_memory(1 << 30), "1gb");
    assert_eq!(format_memory(0), "0");
    assert_eq!(format_memory(1000), "1000");
}

#[test]
fn duration() {
    let err = "expected a duration (milliseconds, or e.g. \"10s\", \"1m 30s\"), got";
    check(
        ParamKind::Duration,
        &[
            (json!(2000), Ok(json!(2000))),
            (json!("2000"), Ok(json!(2000))),
            (json!("10s"), Ok(json!(10000))),
            (json!("1m 30s"), Ok(json!(90000))),
            (json!("250ms"), Ok(json!(250))),
            (json!("1us"), Err(&format!("{err} \"1us\""))),
            (json!("soon"), Err(&format!("{err} \"soon\""))),
            (json!(-1), Err(&format!("{err} -1"))),
        ],
    );
}

#[test]
fn password_is_sensitive_and_never_echoed() {
    check(
        ParamKind::Password,
        &[
            (json!("s3cret"), Ok(json!("s3cret"))),
            (json!(12345), Err("expected a string, got the value")),
            (json!("a\nb"), Err("must not contain line breaks or NUL characters")),
        ],
    );
    let p = param(ParamKind::Password);
    assert!(p.sensitive());
    assert_eq!(mask(&p, &json!("s3cret")), json!(MASK));
    assert_eq!(mask(&p, &Value::Null), Value::Null);
    let s = param(ParamKind::String);
    assert!(!s.sensitive());
    assert_eq!(mask(&s, &json!("plain")), json!("plain"));
}

#[test]
fn scope() {
    let mut p = param(ParamKind::Port);
    assert!(p.applies_to("anything"));
    p.scope = Scope::RoleTypes(vec!["primary".to_string()]);
    assert!(p.applies_to("primary"));
    assert!(!p.applies_to("replica"));
}
