//! Typed service parameters: what a value may be, how user input is normalised, and masking.
//!
//! Every value stored by the manager has gone through [`Parameter::validate`], so the rest of the
//! system (config resolution, templates, diffs) only ever sees the normalised form:
//!
//! | kind          | accepted input                                          | normalised value        |
//! |---------------|---------------------------------------------------------|-------------------------|
//! | `string`      | string                                                  | string                  |
//! | `integer`     | integer, or a string holding one                        | integer                 |
//! | `boolean`     | bool, `"true"/"false"/"yes"/"no"/"on"/"off"/"1"/"0"`    | bool                    |
//! | `enum`        | one of the values (ASCII case-insensitive)              | the value as declared   |
//! | `port`        | 1..=65535 as integer or string                          | integer                 |
//! | `path`        | non-empty string                                        | string                  |
//! | `memory_size` | bytes as integer, or `"256mb"`, `"1g"`, `"512KiB"`, ... | integer (bytes)         |
//! | `duration`    | milliseconds as integer, or `"10s"`, `"1m 30s"`, ...    | integer (milliseconds)  |
//! | `password`    | string                                                  | string (sensitive)      |
//! | `service`     | the name of another service of the same cluster         | string                  |
//!
//! A `service` value is only checked for its form here; whether that service exists in the
//! cluster (and is of one of `service_types`) is the manager's business, since only it knows the
//! cluster.
//!
//! No string value may contain a line break or NUL: values end up inside line-based config files.

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

/// What replaces a sensitive value in API answers, the console, history and logs.
pub const MASK: &str = "********";

/// The type of a parameter and its constraints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    String,
    Integer {
        #[serde(skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
    },
    Boolean,
    Enum {
        values: Vec<String>,
    },
    Port,
    Path,
    MemorySize,
    Duration,
    Password,
    /// A reference to another service of the same cluster, by name (like Cloudera Manager's
    /// service dependencies). Templates reach the referenced service under `refs.<parameter>`.
    Service {
        /// The service types the referenced service may have; empty: any type.
        service_types: Vec<String>,
    },
}

impl ParamKind {
    /// The name used in `service.toml` (`type = "..."`).
    pub fn name(&self) -> &'static str {
        match self {
            ParamKind::String => "string",
            ParamKind::Integer { .. } => "integer",
            ParamKind::Boolean => "boolean",
            ParamKind::Enum { .. } => "enum",
            ParamKind::Port => "port",
            ParamKind::Path => "path",
            ParamKind::MemorySize => "memory_size",
            ParamKind::Duration => "duration",
            ParamKind::Password => "password",
            ParamKind::Service { .. } => "service",
        }
    }
}

/// Where a parameter may be set and which roles see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Applies to every role type of the service.
    Service,
    /// Applies only to roles of these types. It may still be set at service level.
    RoleTypes(Vec<String>),
}

/// Serialised as `"service"` or as the list of role type names.
impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scope::Service => s.serialize_str("service"),
            Scope::RoleTypes(types) => types.serialize(s),
        }
    }
}

/// One typed parameter of a service type.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub kind: ParamKind,
    /// Already normalised (checked when the descriptor is loaded).
    pub default: Option<Value>,
    pub description: String,
    pub scope: Scope,
    /// A change only takes effect after the role restarts.
    pub restart: bool,
    /// A role cannot be rendered while the parameter has no value.
    pub required: bool,
}

/// Flattens `kind` so the JSON reads `{"name": .., "type": "integer", "min": 1, ...}`; adds `sensitive`.
impl Serialize for Parameter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("type", self.kind.name())?;
        match &self.kind {
            ParamKind::Integer { min, max } => {
                if let Some(min) = min {
                    m.serialize_entry("min", min)?;
                }
                if let Some(max) = max {
                    m.serialize_entry("max", max)?;
                }
            }
            ParamKind::Enum { values } => m.serialize_entry("values", values)?,
            ParamKind::Service { service_types } => m.serialize_entry("service_types", service_types)?,
            _ => {}
        }
        m.serialize_entry("default", &self.default.as_ref().map(|d| mask(self, d)))?;
        m.serialize_entry("description", &self.description)?;
        m.serialize_entry("scope", &self.scope)?;
        m.serialize_entry("restart", &self.restart)?;
        m.serialize_entry("required", &self.required)?;
        m.serialize_entry("sensitive", &self.sensitive())?;
        m.end()
    }
}

/// A value rejected for one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamError {
    /// Empty when the error is not about one parameter (e.g. an unknown role type).
    pub parameter: String,
    pub message: String,
}

impl ParamError {
    pub fn new(parameter: impl Into<String>, message: impl Into<String>) -> ParamError {
        ParamError { parameter: parameter.into(), message: message.into() }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parameter.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "parameter `{}`: {}", self.parameter, self.message)
        }
    }
}

impl std::error::Error for ParamError {}

impl Parameter {
    /// Passwords are masked everywhere but in rendered files.
    pub fn sensitive(&self) -> bool {
        matches!(self.kind, ParamKind::Password)
    }

    /// Whether roles of `role_type` see this parameter.
    pub fn applies_to(&self, role_type: &str) -> bool {
        match &self.scope {
            Scope::Service => true,
            Scope::RoleTypes(types) => types.iter().any(|t| t == role_type),
        }
    }

    /// Checks `value` against the kind and returns its normalised form (see the module docs).
    /// `null` is not a value: removing an override is the caller's business.
    pub fn validate(&self, value: &Value) -> Result<Value, ParamError> {
        self.normalise(value).map_err(|message| ParamError::new(&self.name, message))
    }

    fn normalise(&self, value: &Value) -> Result<Value, String> {
        // Never echo a password back in an error.
        let shown = if self.sensitive() { "the value".to_string() } else { describe(value) };
        match &self.kind {
            ParamKind::String | ParamKind::Password => Ok(Value::String(plain_string(value, &shown)?.to_string())),
            ParamKind::Path => {
                let s = plain_string(value, &shown)?;
                if s.trim().is_empty() {
                    return Err("expected a path, got an empty string".to_string());
                }
                Ok(Value::String(s.to_string()))
            }
            ParamKind::Integer { min, max } => {
                let n = integer(value).ok_or_else(|| format!("expected an integer, got {shown}"))?;
                let below = min.is_some_and(|min| n < min);
                let above = max.is_some_and(|max| n > max);
                if below || above {
                    return Err(match (min, max) {
                        (Some(min), Some(max)) => format!("{n} is out of range {min}..={max}"),
                        (Some(min), None) => format!("{n} is less than the minimum {min}"),
                        (_, _) => format!("{n} is greater than the maximum {}", max.unwrap_or_default()),
                    });
                }
                Ok(Value::from(n))
            }
            ParamKind::Boolean => boolean(value)
                .map(Value::Bool)
                .ok_or_else(|| format!("expected a boolean (true/false, yes/no, on/off, 1/0), got {shown}")),
            ParamKind::Enum { values } => {
                let s = value.as_str().ok_or_else(|| format!("expected one of {}, got {shown}", values.join(", ")))?;
                values
                    .iter()
                    .find(|v| v.eq_ignore_ascii_case(s.trim()))
                    .map(|v| Value::String(v.clone()))
                    .ok_or_else(|| format!("expected one of {}, got {shown}", values.join(", ")))
            }
            ParamKind::Port => match integer(value) {
                Some(n @ 1..=65535) => Ok(Value::from(n)),
                _ => Err(format!("{shown} is not a valid port (1-65535)")),
            },
            ParamKind::MemorySize => parse_memory(value).map(Value::from).ok_or_else(|| {
                format!(
                    "expected a memory size (bytes, or a number with unit k, m, g or t, e.g. \"256mb\"), got {shown}"
                )
            }),
            ParamKind::Duration => parse_duration_ms(value)
                .map(Value::from)
                .ok_or_else(|| format!("expected a duration (milliseconds, or e.g. \"10s\", \"1m 30s\"), got {shown}")),
            ParamKind::Service { .. } => {
                let s = plain_string(value, &shown)?.trim();
                if !is_service_name(s) {
                    return Err(format!(
                        "expected the name of a service of the cluster (1-63 lowercase letters, digits or '-', starting with a letter or digit), got {shown}"
                    ));
                }
                Ok(Value::String(s.to_string()))
            }
        }
    }
}

/// `value` with sensitive values replaced by [`MASK`] (`null` stays `null`: "not set" is not secret).
pub fn mask(param: &Parameter, v: &Value) -> Value {
    if param.sensitive() && !v.is_null() { Value::String(MASK.to_string()) } else { v.clone() }
}

/// Formats a byte count the short way templates and people read it: `"256mb"`, `"1gb"`, `"1000"`.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "tb"), (1 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")];
    for (size, unit) in UNITS {
        if bytes != 0 && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Whether `s` can name a service (the manager's rule for service names).
pub fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn describe(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 40 { format!("{}...", s.chars().take(40).collect::<String>()) } else { s }
}

fn plain_string<'v>(value: &'v Value, shown: &str) -> Result<&'v str, String> {
    let s = value.as_str().ok_or_else(|| format!("expected a string, got {shown}"))?;
    if s.contains(['\n', '\r', '\0']) {
        return Err("must not contain line breaks or NUL characters".to_string());
    }
    Ok(s)
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Bytes from an integer or a string like `"256mb"`; all units are binary (k = 1024).
pub(crate) fn parse_memory(value: &Value) -> Option<u64> {
    let s = match value {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => return None,
    };
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(multiplier);
    }
    // A fraction ("1.5g") is allowed when a unit makes it a whole number of bytes.
    let f: f64 = number.parse().ok()?;
    let bytes = f * multiplier as f64;
    (multiplier > 1 && bytes.is_finite() && bytes.fract() == 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Milliseconds from an integer (taken as milliseconds) or a humantime string (`"10s"`, `"1m 30s"`).
fn parse_duration_ms(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(ms) = s.parse::<u64>() {
                return Some(ms);
            }
            let d = humantime::parse_duration(s).ok()?;
            // Sub-millisecond precision is not representable; refuse rather than round silently.
            (d.subsec_nanos().is_multiple_of(1_000_000)).then(|| u64::try_from(d.as_millis()).ok()).flatten()
        }
        _ => None,
    }
}
