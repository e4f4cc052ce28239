//! A template checked against the service types of the catalog: a pure
//! function, so its rules are tested with tables. Every problem names its
//! path in the document (`services[1].config.maxmemory`) and all are found
//! at once. Values are checked by the service types' own validation
//! ([`config::validate_patch`]), never a second one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use drover_api::templates::{Template, Variable, var_ref};
use drover_service_types::config::{self, Level};
use drover_service_types::descriptor::{Catalog, ServiceType};
use drover_service_types::params::ParamKind;
use serde_json::Value;

/// One thing wrong with a template: where in the document, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `services[1].config.maxmemory`, `host_groups[0].roles[2].group`, ...
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The most hosts a host group may have (as the document's schema says).
pub const MAX_CARDINALITY: u32 = 1000;

/// What a template may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A stored template: sensitive parameters only as references to
    /// sensitive variables (a template never holds a secret).
    Stored,
    /// A template with its variables substituted, about to be instantiated:
    /// sensitive values are plain values.
    Concrete,
}

/// Whether `name` is a valid variable name: 1-63 lowercase letters, digits,
/// `_` or `-`, starting with a letter.
pub fn valid_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

struct Check<'a> {
    catalog: &'a Catalog,
    t: &'a Template,
    mode: Mode,
    vars: BTreeMap<&'a str, &'a Variable>,
    /// Service name -> (index, type if known).
    services: BTreeMap<&'a str, (usize, Option<&'a ServiceType>)>,
    out: Vec<Problem>,
}

impl Check<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Problem { path: path.into(), message: message.into() });
    }
}

/// Every problem of `t`, in document order; empty: valid.
pub fn validate(catalog: &Catalog, t: &Template, mode: Mode) -> Vec<Problem> {
    let mut c = Check { catalog, t, mode, vars: BTreeMap::new(), services: BTreeMap::new(), out: Vec::new() };
    if let Err(e) = super::super::validate_name("template", &t.name) {
        c.push("name", e.to_string());
    }
    variables(&mut c);
    parcels(&mut c);
    services(&mut c);
    host_groups(&mut c);
    role_counts(&mut c);
    c.out
}

fn variables(c: &mut Check<'_>) {
    let t = c.t;
    for (i, v) in t.variables.iter().enumerate() {
        let path = format!("variables[{i}]");
        if !valid_variable_name(&v.name) {
            c.push(
                format!("{path}.name"),
                format!(
                    "invalid variable name {:?}: 1-63 lowercase letters, digits, '_' or '-', starting with a letter",
                    v.name
                ),
            );
        }
        if c.vars.insert(&v.name, v).is_some() {
            c.push(format!("{path}.name"), format!("duplicate variable {}", v.name));
        }
        match &v.default {
            Some(_) if v.sensitive => c.push(
                format!("{path}.default"),
                "a sensitive variable has no default: its value is given at instantiation",
            ),
            Some(Value::Null) => c.push(format!("{path}.default"), "null is not a value; leave default out"),
            Some(Value::Object(_) | Value::Array(_)) => {
                c.push(format!("{path}.default"), "must be a string, a number or a boolean")
            }
            _ => {}
        }
    }
}

fn parcels(c: &mut Check<'_>) {
    let t = c.t;
    let mut seen = BTreeSet::new();
    for (i, p) in t.parcels.iter().enumerate() {
        if p.name.trim().is_empty() {
            c.push(format!("parcels[{i}].name"), "is empty");
        } else if !seen.insert(p.name.as_str()) {
            c.push(format!("parcels[{i}].name"), format!("duplicate parcel {}: one version per parcel", p.name));
        }
        if p.version.trim().is_empty() {
            c.push(format!("parcels[{i}].version"), "is empty");
        }
    }
}

fn services(c: &mut Check<'_>) {
    let t = c.t;
    for (i, s) in t.services.iter().enumerate() {
        let path = format!("services[{i}]");
        if let Err(e) = super::super::validate_name("service", &s.name) {
            c.push(format!("{path}.name"), e.to_string());
        }
        let st = c.catalog.get(&s.service_type);
        if st.is_none() {
            let known: Vec<&str> = c.catalog.iter().map(|t| t.name.as_str()).collect();
            c.push(
                format!("{path}.type"),
                format!("unknown service type {:?}; known types: {}", s.service_type, known.join(", ")),
            );
        }
        if c.services.contains_key(s.name.as_str()) {
            c.push(format!("{path}.name"), format!("duplicate service {}", s.name));
        } else {
            c.services.insert(&s.name, (i, st));
        }
    }
    for (i, s) in t.services.iter().enumerate() {
        let path = format!("services[{i}]");
        let Some(st) = c.catalog.get(&s.service_type) else { continue };
        for required in &st.requires {
            if !t.services.iter().any(|o| &o.service_type == required) {
                c.push(
                    format!("{path}.type"),
                    format!("service type {} requires a {required} service; the template has none", st.name),
                );
            }
        }
        values(c, st, &s.name, Level::Service, &s.config, &format!("{path}.config"));
        let mut groups = BTreeSet::new();
        for (j, g) in s.groups.iter().enumerate() {
            let gpath = format!("{path}.groups[{j}]");
            if let Err(e) = super::super::validate_name("role group", &g.name) {
                c.push(format!("{gpath}.name"), e.to_string());
            }
            if !groups.insert(g.name.as_str()) {
                c.push(format!("{gpath}.name"), format!("duplicate role group {}", g.name));
            }
            let Some(rt) = st.role_type(&g.role_type) else {
                c.push(format!("{gpath}.role_type"), unknown_role_type(st, &g.role_type));
                continue;
            };
            for other in &st.role_types {
                if other.name != rt.name && g.name == format!("{}-default", other.name) {
                    c.push(
                        format!("{gpath}.name"),
                        format!("{} is the default group of role type {}", g.name, other.name),
                    );
                }
            }
            let level = Level::Group { role_type: &rt.name, group: &g.name };
            values(c, st, &s.name, level, &g.config, &format!("{gpath}.config"));
        }
    }
}

fn unknown_role_type(st: &ServiceType, role_type: &str) -> String {
    let known: Vec<&str> = st.role_types.iter().map(|r| r.name.as_str()).collect();
    format!("service type {} has no role type {role_type:?}; role types: {}", st.name, known.join(", "))
}

/// Checks the values of one level: literal values through the type's own
/// validation, variable references for a declared variable (its default,
/// if any, validated like a literal), secrets only through sensitive
/// variables (stored templates), and service references for a service of
/// the template of an accepted type.
fn values(
    c: &mut Check<'_>,
    st: &ServiceType,
    service: &str,
    level: Level<'_>,
    given: &BTreeMap<String, Value>,
    path: &str,
) {
    let role_type = match level {
        Level::Group { role_type, .. } | Level::Role { role_type, .. } => Some(role_type),
        Level::Service => None,
    };
    // What validate_patch sees: literal values, and the defaults of the
    // variables referred to (as `(parameter, variable)` for the messages).
    let mut probe = BTreeMap::new();
    let mut from_var: HashMap<&str, &str> = HashMap::new();
    for (k, v) in given {
        let kpath = format!("{path}.{k}");
        if v.is_null() {
            c.push(kpath, "null is not a value; leave the parameter out");
            continue;
        }
        let param = st.parameter(k);
        if let Some(name) = var_ref(v) {
            let Some(var) = c.vars.get(name).copied() else {
                c.push(kpath, format!("variable {name} is not declared in variables"));
                continue;
            };
            if let Some(p) = param
                && p.sensitive()
                && !var.sensitive
            {
                c.push(kpath, format!("parameter {k} is sensitive: variable {name} must be declared sensitive"));
                continue;
            }
            match (&var.default, param) {
                (Some(d), _) => {
                    probe.insert(k.clone(), d.clone());
                    from_var.insert(k.as_str(), name);
                }
                (None, None) => {
                    c.push(kpath, format!("unknown parameter of service type {}", st.name));
                }
                (None, Some(p)) => {
                    if let Some(rt) = role_type
                        && !p.applies_to(rt)
                    {
                        c.push(kpath, format!("does not apply to role type {rt}"));
                    }
                }
            }
            continue;
        }
        if c.mode == Mode::Stored && param.is_some_and(|p| p.sensitive()) {
            c.push(
                kpath,
                "is sensitive: a template holds no secrets; give it as {\"$var\": NAME} with NAME declared sensitive",
            );
            continue;
        }
        probe.insert(k.clone(), v.clone());
    }
    let normalised = match config::validate_patch(st, &level, &probe) {
        Ok(n) => n,
        Err(errors) => {
            for e in &errors {
                let at = if e.parameter.is_empty() { path.to_owned() } else { format!("{path}.{}", e.parameter) };
                let message = match from_var.get(e.parameter.as_str()) {
                    Some(var) => format!("default of variable {var}: {}", e.message),
                    None => e.message.clone(),
                };
                c.push(at, message);
            }
            return;
        }
    };
    for (k, v) in &normalised {
        let Some(ParamKind::Service { service_types }) = st.parameter(k).map(|p| &p.kind) else { continue };
        let Some(target) = v.as_str() else { continue };
        let kpath = format!("{path}.{k}");
        let found = c.services.get(target).copied();
        match found {
            None => c.push(kpath, format!("service {target} is not a service of this template")),
            Some(_) if target == service => c.push(kpath, "a service cannot refer to itself"),
            Some((_, Some(tt))) if !service_types.is_empty() && !service_types.contains(&tt.name) => c.push(
                kpath,
                format!(
                    "service {target} is of type {}; parameter {k} takes a service of type {}",
                    tt.name,
                    service_types.join(" or ")
                ),
            ),
            Some(_) => {}
        }
    }
}

fn host_groups(c: &mut Check<'_>) {
    let t = c.t;
    let mut names = BTreeSet::new();
    for (i, hg) in t.host_groups.iter().enumerate() {
        let path = format!("host_groups[{i}]");
        if let Err(e) = super::super::validate_name("host group", &hg.name) {
            c.push(format!("{path}.name"), e.to_string());
        }
        if !names.insert(hg.name.as_str()) {
            c.push(format!("{path}.name"), format!("duplicate host group {}", hg.name));
        }
        if !(1..=MAX_CARDINALITY).contains(&hg.cardinality) {
            c.push(format!("{path}.cardinality"), format!("must be between 1 and {MAX_CARDINALITY}"));
        }
        if let Some(sel) = &hg.selector
            && let Err(e) = drover_proto::labels::parse_selector(sel)
        {
            c.push(format!("{path}.selector"), e.to_string());
        }
        if hg.roles.is_empty() {
            c.push(format!("{path}.roles"), "a host group runs at least one role");
        }
        let mut seen = BTreeSet::new();
        for (j, r) in hg.roles.iter().enumerate() {
            let rpath = format!("{path}.roles[{j}]");
            let Some((si, st)) = c.services.get(r.service.as_str()).copied() else {
                c.push(format!("{rpath}.service"), format!("service {} is not a service of this template", r.service));
                continue;
            };
            let Some(st) = st else { continue };
            if st.role_type(&r.role_type).is_none() {
                c.push(format!("{rpath}.role_type"), unknown_role_type(st, &r.role_type));
                continue;
            }
            if !seen.insert((r.service.as_str(), r.role_type.as_str())) {
                c.push(
                    rpath.clone(),
                    format!("role type {} of service {} is listed twice in this host group", r.role_type, r.service),
                );
            }
            let group = r.group_name();
            let declared = t.services[si].groups.iter().find(|g| g.name == group);
            let ok = match declared {
                Some(g) => g.role_type == r.role_type,
                None => group == format!("{}-default", r.role_type),
            };
            if !ok {
                c.push(
                    format!("{rpath}.group"),
                    format!("service {} has no role group {group} of role type {}", r.service, r.role_type),
                );
            }
        }
    }
}

fn role_counts(c: &mut Check<'_>) {
    let t = c.t;
    for (i, s) in t.services.iter().enumerate() {
        let Some(st) = c.catalog.get(&s.service_type) else { continue };
        for rt in &st.role_types {
            let placing: Vec<(&str, u32)> = t
                .host_groups
                .iter()
                .filter(|hg| hg.roles.iter().any(|r| r.service == s.name && r.role_type == rt.name))
                .map(|hg| (hg.name.as_str(), hg.cardinality))
                .collect();
            let n: u32 = placing.iter().map(|(_, n)| n).sum();
            if n < rt.min_instances || rt.max_instances.is_some_and(|max| n > max) {
                let range = match rt.max_instances {
                    Some(max) if max == rt.min_instances => format!("exactly {max}"),
                    Some(max) => format!("{} to {max}", rt.min_instances),
                    None => format!("at least {}", rt.min_instances),
                };
                let by: Vec<String> = placing.iter().map(|(g, n)| format!("{g}: {n}")).collect();
                let by = if by.is_empty() { String::new() } else { format!(" ({})", by.join(", ")) };
                c.push(
                    format!("services[{i}]"),
                    format!("role type {} takes {range} role(s); the host groups place {n}{by}", rt.name),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// A user type whose `backend` only takes Redis services, which needs a
    /// ZooKeeper service, and has a secret.
    const CLIENT_TYPE: &str = r#"
name = "client"
version = "1"
requires = ["zookeeper"]
[[role_types]]
name = "main"
min_instances = 1
max_instances = 1
[role_types.process]
program = "/bin/true"
[[parameters]]
name = "backend"
type = "service"
service_types = ["redis"]
[[parameters]]
name = "secret"
type = "password"
"#;

    fn catalog() -> Catalog {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("client")).unwrap();
        std::fs::write(dir.path().join("client/service.toml"), CLIENT_TYPE).unwrap();
        Catalog::load(true, &[dir.path().to_path_buf()]).unwrap()
    }

    const BASE: &str = r#"
name: stack
variables:
  - name: cache_requirepass
    sensitive: true
  - name: memory
    default: 256mb
parcels:
  - {name: redis, version: 7.0.15-1}
services:
  - name: zk
    type: zookeeper
  - name: cache
    type: redis
    config:
      bind: 0.0.0.0
      requirepass: {$var: cache_requirepass}
      maxmemory: {$var: memory}
    groups:
      - {role_type: replica, name: big, config: {maxmemory: 1gb}}
  - name: app
    type: client
    config: {backend: cache}
host_groups:
  - name: zk-hosts
    cardinality: 3
    selector: zk=true
    roles: [{service: zk, role_type: server}]
  - name: primary
    cardinality: 1
    roles: [{service: cache, role_type: primary}, {service: app, role_type: main}]
  - name: replicas
    cardinality: 2
    roles: [{service: cache, role_type: replica, group: big}]
"#;

    fn base() -> Template {
        serde_norway::from_str(BASE).unwrap()
    }

    fn check<R>(edit: impl FnOnce(&mut Template) -> R, want: Expect) {
        let mut t = base();
        let _ = edit(&mut t);
        let got: Vec<String> = validate(&catalog(), &t, Mode::Stored).iter().map(ToString::to_string).collect();
        want.assert_eq(&got.join("\n"));
    }

    fn yaml(v: &str) -> Value {
        serde_norway::from_str(v).unwrap()
    }

    #[test]
    fn the_base_template_is_valid() {
        check(|_| {}, expect![[""]]);
    }

    #[test]
    fn unknown_types_and_names() {
        check(
            |t| t.services[0].service_type = "kafka".into(),
            expect![[r#"
            services[0].type: unknown service type "kafka"; known types: client, nginx, redis, zookeeper
            services[2].type: service type client requires a zookeeper service; the template has none"#]],
        );
        check(
            |t| t.host_groups[2].roles[0].role_type = "sentinel".into(),
            expect![[
                r#"host_groups[2].roles[0].role_type: service type redis has no role type "sentinel"; role types: primary, replica"#
            ]],
        );
        check(
            |t| t.services[1].groups[0].role_type = "sentinel".into(),
            expect![[r#"
            services[1].groups[0].role_type: service type redis has no role type "sentinel"; role types: primary, replica
            host_groups[2].roles[0].group: service cache has no role group big of role type replica"#]],
        );
        check(
            |t| t.host_groups[0].roles[0].service = "zoo".into(),
            expect![[r#"
            host_groups[0].roles[0].service: service zoo is not a service of this template
            services[0]: role type server takes 1 to 7 role(s); the host groups place 0"#]],
        );
        check(
            |t| t.host_groups[2].roles[0].group = Some("small".into()),
            expect!["host_groups[2].roles[0].group: service cache has no role group small of role type replica"],
        );
        check(
            |t| t.host_groups[1].roles[0].group = Some("big".into()),
            expect!["host_groups[1].roles[0].group: service cache has no role group big of role type primary"],
        );
    }

    #[test]
    fn values_are_checked_by_the_service_type() {
        check(
            |t| {
                t.services[1].config.insert("maxmemry".into(), yaml("1gb"));
                t.services[1].config.insert("port".into(), yaml("70000"));
                t.services[1].groups[0].config.insert("appendonly".into(), yaml("perhaps"));
                t.services[0].config.insert("tick_time".into(), yaml("null"));
            },
            expect![[r#"
                services[0].config.tick_time: null is not a value; leave the parameter out
                services[1].config.maxmemry: unknown parameter of service type `redis`
                services[1].config.port: 70000 is not a valid port (1-65535)
                services[1].groups[0].config.appendonly: expected a boolean (true/false, yes/no, on/off, 1/0), got "perhaps""#]],
        );
        check(
            |t| t.variables[1].default = Some(yaml("lots")),
            expect![[
                r#"services[1].config.maxmemory: default of variable memory: expected a memory size (bytes, or a number with unit k, m, g or t, e.g. "256mb"), got "lots""#
            ]],
        );
    }

    #[test]
    fn variables_are_declared_and_secrets_stay_out() {
        check(
            |t| t.variables.remove(0),
            expect!["services[1].config.requirepass: variable cache_requirepass is not declared in variables"],
        );
        check(
            |t| t.services[1].config.insert("requirepass".into(), yaml("hunter2")),
            expect![[
                r#"services[1].config.requirepass: is sensitive: a template holds no secrets; give it as {"$var": NAME} with NAME declared sensitive"#
            ]],
        );
        check(
            |t| t.variables[0].sensitive = false,
            expect![
                "services[1].config.requirepass: parameter requirepass is sensitive: variable cache_requirepass must be declared sensitive"
            ],
        );
        check(
            |t| t.variables[0].default = Some(yaml("x")),
            expect!["variables[0].default: a sensitive variable has no default: its value is given at instantiation"],
        );
        check(
            |t| {
                let v = t.variables[1].clone();
                t.variables.push(v)
            },
            expect!["variables[2].name: duplicate variable memory"],
        );
        check(
            |t| t.variables[1].name = "Memory".into(),
            expect![[r#"
            variables[1].name: invalid variable name "Memory": 1-63 lowercase letters, digits, '_' or '-', starting with a letter
            services[1].config.maxmemory: variable memory is not declared in variables"#]],
        );
    }

    #[test]
    fn references_name_a_service_of_the_template_of_an_accepted_type() {
        check(
            |t| t.services[2].config.insert("backend".into(), yaml("db")),
            expect!["services[2].config.backend: service db is not a service of this template"],
        );
        check(
            |t| t.services[2].config.insert("backend".into(), yaml("zk")),
            expect![
                "services[2].config.backend: service zk is of type zookeeper; parameter backend takes a service of type redis"
            ],
        );
        check(
            |t| t.services[2].config.insert("backend".into(), yaml("app")),
            expect!["services[2].config.backend: a service cannot refer to itself"],
        );
        check(
            |t| {
                t.services.remove(0);
                t.host_groups.remove(0);
            },
            expect!["services[1].type: service type client requires a zookeeper service; the template has none"],
        );
    }

    #[test]
    fn role_counts_follow_the_type() {
        check(
            |t| t.host_groups[1].cardinality = 2,
            expect![[r#"
            services[1]: role type primary takes exactly 1 role(s); the host groups place 2 (primary: 2)
            services[2]: role type main takes exactly 1 role(s); the host groups place 2 (primary: 2)"#]],
        );
        check(
            |t| t.host_groups[0].cardinality = 8,
            expect!["services[0]: role type server takes 1 to 7 role(s); the host groups place 8 (zk-hosts: 8)"],
        );
        check(
            |t| t.host_groups[0].cardinality = 0,
            expect![[r#"
            host_groups[0].cardinality: must be between 1 and 1000
            services[0]: role type server takes 1 to 7 role(s); the host groups place 0 (zk-hosts: 0)"#]],
        );
        check(
            |t| t.host_groups.remove(0),
            expect!["services[0]: role type server takes 1 to 7 role(s); the host groups place 0"],
        );
    }

    #[test]
    fn duplicates_and_bad_names() {
        check(
            |t| t.services[2].name = "cache".into(),
            expect![[r#"
            services[2].name: duplicate service cache
            services[2].config.backend: a service cannot refer to itself
            host_groups[1].roles[1].service: service app is not a service of this template
            services[2]: role type main takes exactly 1 role(s); the host groups place 0"#]],
        );
        check(
            |t| t.host_groups[2].name = "primary".into(),
            expect!["host_groups[2].name: duplicate host group primary"],
        );
        check(
            |t| {
                let g = t.services[1].groups[0].clone();
                t.services[1].groups.push(g)
            },
            expect!["services[1].groups[1].name: duplicate role group big"],
        );
        check(
            |t| {
                let p = t.parcels[0].clone();
                t.parcels.push(p)
            },
            expect!["parcels[1].name: duplicate parcel redis: one version per parcel"],
        );
        check(
            |t| {
                let r = t.host_groups[1].roles[0].clone();
                t.host_groups[1].roles.push(r)
            },
            expect!["host_groups[1].roles[2]: role type primary of service cache is listed twice in this host group"],
        );
        check(
            |t| t.host_groups[0].selector = Some("zk".into()),
            expect![[
                r#"host_groups[0].selector: invalid label selector "zk": write key=value or key!=value, separated by commas"#
            ]],
        );
        check(
            |t| t.name = "My Stack".into(),
            expect![[
                r#"name: invalid template name "My Stack": 1-63 lowercase letters, digits or '-', starting with a letter or digit"#
            ]],
        );
    }

    #[test]
    fn a_concrete_template_holds_its_secrets() {
        let mut t = base();
        t.variables.clear();
        t.services[1].config.insert("requirepass".into(), yaml("hunter2"));
        t.services[1].config.insert("maxmemory".into(), yaml("1gb"));
        assert_eq!(validate(&catalog(), &t, Mode::Concrete), vec![]);
    }

    #[test]
    fn the_example_templates_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let t: Template = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let problems = validate(&Catalog::builtin().unwrap(), &t, Mode::Stored);
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
            names.push(t.name);
        }
        names.sort();
        assert_eq!(names, ["nginx-web-tier", "redis-replicated", "stack", "zk-redis", "zookeeper-ensemble"]);
    }
}
