//! Configuration values at service, role group and role level, and how they resolve into the
//! effective configuration of one role.
//!
//! Precedence, lowest first: parameter default < service < role group < role. Values stored here
//! are always normalised ([`crate::params::Parameter::validate`]); [`validate_patch`] is the way in.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::descriptor::ServiceType;
use crate::params::ParamError;

/// Overrides at each level; values already validated and normalised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigValues {
    pub service: BTreeMap<String, Value>,
    /// By role group name.
    pub groups: BTreeMap<String, BTreeMap<String, Value>>,
    /// By role id.
    pub roles: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Where an effective value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    Service,
    Group(String),
    Role,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Service => f.write_str("service"),
            Source::Group(g) => write!(f, "group:{g}"),
            Source::Role => f.write_str("role"),
        }
    }
}

/// `"default"`, `"service"`, `"group:<name>"`, `"role"`.
impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "default" => Ok(Source::Default),
            "service" => Ok(Source::Service),
            "role" => Ok(Source::Role),
            _ => match s.strip_prefix("group:") {
                Some(g) => Ok(Source::Group(g.to_string())),
                None => Err(serde::de::Error::custom(format!("unknown config source `{s}`"))),
            },
        }
    }
}

/// A parameter's value for one role and the level it comes from.
/// `value` is `null` for an optional parameter that has no default and no override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effective {
    pub value: Value,
    pub source: Source,
}

/// The effective value of every parameter that applies to `role_type`, for the role `role_id` in
/// group `group`. Overrides of unknown or non-applying parameters are ignored.
pub fn effective(
    st: &ServiceType,
    values: &ConfigValues,
    role_type: &str,
    group: &str,
    role_id: &str,
) -> BTreeMap<String, Effective> {
    let group_values = values.groups.get(group);
    let role_values = values.roles.get(role_id);
    st.parameters
        .iter()
        .filter(|p| p.applies_to(role_type))
        .map(|p| {
            let mut e = Effective { value: p.default.clone().unwrap_or(Value::Null), source: Source::Default };
            let levels = [
                (Some(&values.service), Source::Service),
                (group_values, Source::Group(group.to_string())),
                (role_values, Source::Role),
            ];
            for (level, source) in levels {
                if let Some(v) = level.and_then(|l| l.get(&p.name)).filter(|v| !v.is_null()) {
                    e = Effective { value: v.clone(), source };
                }
            }
            (p.name.clone(), e)
        })
        .collect()
}

/// The level a patch applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level<'a> {
    Service,
    Group { role_type: &'a str, group: &'a str },
    Role { role_type: &'a str, role_id: &'a str },
}

/// Validates a patch at one level. `null` removes an override. Returns the normalised patch (with
/// its `null`s) or every error found, in parameter name order.
pub fn validate_patch(
    st: &ServiceType,
    level: &Level,
    patch: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Vec<ParamError>> {
    let role_type = match level {
        Level::Service => None,
        Level::Group { role_type, .. } | Level::Role { role_type, .. } => Some(*role_type),
    };
    if let Some(rt) = role_type
        && st.role_type(rt).is_none()
    {
        return Err(vec![ParamError::new("", format!("service type `{}` has no role type `{rt}`", st.name))]);
    }
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, value) in patch {
        let Some(param) = st.parameter(name) else {
            errors.push(ParamError::new(name, format!("unknown parameter of service type `{}`", st.name)));
            continue;
        };
        if let Some(rt) = role_type
            && !param.applies_to(rt)
        {
            errors.push(ParamError::new(name, format!("does not apply to role type `{rt}`")));
            continue;
        }
        if value.is_null() {
            if matches!(level, Level::Service) && param.required && param.default.is_none() {
                errors.push(ParamError::new(name, "is required and has no default, so it cannot be removed"));
            } else {
                out.insert(name.clone(), Value::Null);
            }
            continue;
        }
        match param.validate(value) {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

impl ConfigValues {
    /// Applies a patch returned by [`validate_patch`] at `level`: `null` removes the override.
    /// Empty group and role maps are dropped so equal configurations compare equal.
    pub fn apply_patch(&mut self, level: &Level, patch: &BTreeMap<String, Value>) {
        let map = match level {
            Level::Service => &mut self.service,
            Level::Group { group, .. } => self.groups.entry(group.to_string()).or_default(),
            Level::Role { role_id, .. } => self.roles.entry(role_id.to_string()).or_default(),
        };
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
        self.groups.retain(|_, m| !m.is_empty());
        self.roles.retain(|_, m| !m.is_empty());
    }
}

/// Keys whose effective value for this role differs between `a` and `b` (sorted), and whether
/// any of them needs a restart.
pub fn changed_keys(
    st: &ServiceType,
    a: &ConfigValues,
    b: &ConfigValues,
    role_type: &str,
    group: &str,
    role_id: &str,
) -> (Vec<String>, bool) {
    let ea = effective(st, a, role_type, group, role_id);
    let eb = effective(st, b, role_type, group, role_id);
    let changed: Vec<String> =
        ea.iter().filter(|(k, v)| eb.get(*k).map(|w| &w.value) != Some(&v.value)).map(|(k, _)| k.clone()).collect();
    let restart = changed.iter().any(|k| st.parameter(k).is_some_and(|p| p.restart));
    (changed, restart)
}

/// Parameters that apply to the role, are required, and have no value: the role cannot be
/// rendered until they are set.
pub fn missing_required(
    st: &ServiceType,
    values: &ConfigValues,
    role_type: &str,
    group: &str,
    role_id: &str,
) -> Vec<String> {
    effective(st, values, role_type, group, role_id)
        .into_iter()
        .filter(|(k, e)| e.value.is_null() && st.parameter(k).is_some_and(|p| p.required))
        .map(|(k, _)| k)
        .collect()
}

/// A digest of the effective values of the role's parameters that need a restart (lowercase hex
/// sha256). A process started with one digest can take new files by reload (when its type has a
/// `reload_signal`) only while the digest is unchanged: otherwise a parameter it can only apply
/// by restarting changed, and the role is stale until it restarts.
pub fn restart_digest(st: &ServiceType, values: &ConfigValues, role_type: &str, group: &str, role_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, e) in effective(st, values, role_type, group, role_id) {
        if st.parameter(&name).is_some_and(|p| p.restart) {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(e.value.to_string().as_bytes());
            h.update([0]);
        }
    }
    hex::encode(h.finalize())
}

/// One reference from a configuration to another service: `parameter` (a `service` parameter)
/// is set to `service` at some level.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    pub parameter: String,
    pub service: String,
}

/// Every service named by a `service` parameter at any level of `values`, sorted, without
/// duplicates. Overrides of parameters the type does not have are ignored.
pub fn service_refs(st: &ServiceType, values: &ConfigValues) -> Vec<ServiceRef> {
    let levels = std::iter::once(&values.service).chain(values.groups.values()).chain(values.roles.values());
    let mut out: Vec<ServiceRef> = levels
        .flat_map(|level| level.iter())
        .filter(|(k, _)| st.parameter(k).is_some_and(|p| matches!(p.kind, crate::params::ParamKind::Service { .. })))
        .filter_map(|(k, v)| v.as_str().map(|s| ServiceRef { parameter: k.clone(), service: s.to_string() }))
        .collect();
    // Defaults refer too (a descriptor may name a conventional service).
    for p in &st.parameters {
        if let (crate::params::ParamKind::Service { .. }, Some(Value::String(s))) = (&p.kind, &p.default) {
            out.push(ServiceRef { parameter: p.name.clone(), service: s.clone() });
        }
    }
    out.sort();
    out.dedup();
    out
}
