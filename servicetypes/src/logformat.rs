//! How a role type keeps and reads its logs (`[role_types.log]` in a descriptor): rotation of
//! stdout and stderr, and the line format the agent reads times and levels with. The formats of
//! the shipped services live here by name, so a descriptor says `format = "redis"`.

use std::collections::BTreeMap;

use chrono::format::{Item, StrftimeItems};
use drover_role_spec::{DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES, LogFormat, LogSpec};
use serde::Deserialize;

/// The levels a format's `levels` may map to, highest first.
pub const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// The formats a descriptor may name.
pub const SHIPPED: &[&str] = &["redis", "zookeeper", "nginx-error"];

/// A shipped format by name.
pub fn shipped(name: &str) -> Option<LogFormat> {
    let levels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (pattern, time_format, levels) = match name {
        // `12345:M 04 Dec 2026 03:18:39.123 * Ready to accept connections` (redis >= 3);
        // levels: `.` debug, `-` verbose, `*` notice, `#` warning. Redis writes local time.
        "redis" => (
            r"^\d+:[XCSM] (?P<time>\d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}) (?P<level>[.\-*#]) ",
            "%d %b %Y %H:%M:%S%.3f",
            levels(&[(".", "debug"), ("-", "debug"), ("*", "info"), ("#", "warn")]),
        ),
        // log4j `%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n` (parcels/zookeeper log4j.properties).
        "zookeeper" => (
            r"^(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) - (?P<level>[A-Z]+)\s",
            "%Y-%m-%d %H:%M:%S,%3f",
            levels(&[("FATAL", "error"), ("ERROR", "error"), ("WARN", "warn"), ("INFO", "info"), ("DEBUG", "debug")]),
        ),
        // `2026/12/04 03:18:39 [error] 7#7: *1 open() ... failed`: nginx's error log.
        "nginx-error" => (
            r"^(?P<time>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>[a-z]+)\] ",
            "%Y/%m/%d %H:%M:%S",
            levels(&[
                ("emerg", "error"),
                ("alert", "error"),
                ("crit", "error"),
                ("error", "error"),
                ("warn", "warn"),
                ("notice", "info"),
                ("info", "info"),
                ("debug", "debug"),
            ]),
        ),
        _ => return None,
    };
    Some(LogFormat {
        name: name.to_string(),
        pattern: pattern.to_string(),
        time_format: time_format.to_string(),
        levels,
    })
}

/// Checks a format: the pattern compiles and has a `time` or `level` group, the time format is
/// a chrono format (and present when there is a `time` group), levels map to known levels.
pub fn check(format: &LogFormat) -> Result<(), String> {
    let re = regex::Regex::new(&format.pattern).map_err(|e| format!("pattern does not compile: {e}"))?;
    let names: Vec<&str> = re.capture_names().flatten().collect();
    let has_time = names.contains(&"time");
    if !has_time && !names.contains(&"level") {
        return Err("pattern: needs a named group `time` or `level`, e.g. (?P<time>...)".to_string());
    }
    if has_time {
        if format.time_format.is_empty() {
            return Err("time_format: required when the pattern has a `time` group".to_string());
        }
        if StrftimeItems::new(&format.time_format).any(|i| matches!(i, Item::Error)) {
            return Err(format!("time_format: `{}` is not a valid chrono strftime format", format.time_format));
        }
    }
    for (text, level) in &format.levels {
        if !LEVELS.contains(&level.as_str()) {
            return Err(format!("levels: `{text}` maps to `{level}`, expected one of {}", LEVELS.join(", ")));
        }
    }
    Ok(())
}

/// `[role_types.log]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    /// Bytes, or a size such as `"10MiB"`.
    max_bytes: Option<toml::Value>,
    max_files: Option<u32>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFormat {
    Named(String),
    Inline(RawInline),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInline {
    name: Option<String>,
    pattern: String,
    #[serde(default)]
    time_format: String,
    #[serde(default)]
    levels: BTreeMap<String, String>,
}

impl RawLog {
    /// `role_type` names an inline format that has no name.
    pub(crate) fn build(self, role_type: &str) -> Result<LogSpec, String> {
        let max_bytes = match self.max_bytes {
            None => DEFAULT_LOG_MAX_BYTES,
            Some(v) => {
                let json = match &v {
                    toml::Value::Integer(n) if *n >= 0 => serde_json::Value::from(*n),
                    toml::Value::String(s) => serde_json::Value::from(s.clone()),
                    _ => serde_json::Value::Null,
                };
                crate::params::parse_memory(&json)
                    .ok_or_else(|| format!("log.max_bytes: expected bytes or a size such as \"10MiB\", got {v}"))?
            }
        };
        if max_bytes < 4096 {
            return Err(format!("log.max_bytes: {max_bytes} is too small (at least 4096 bytes)"));
        }
        let max_files = self.max_files.unwrap_or(DEFAULT_LOG_MAX_FILES);
        if max_files == 0 || max_files > 100 {
            return Err(format!("log.max_files: {max_files} is out of range (1 to 100)"));
        }
        let format = match self.format {
            None => None,
            Some(RawFormat::Named(name)) => Some(shipped(&name).ok_or_else(|| {
                format!("log.format: `{name}` is not a shipped format (expected one of {}, or an inline table with pattern, time_format and levels)", SHIPPED.join(", "))
            })?),
            Some(RawFormat::Inline(f)) => Some(LogFormat {
                name: f.name.unwrap_or_else(|| role_type.to_string()),
                pattern: f.pattern,
                time_format: f.time_format,
                levels: f.levels,
            }),
        };
        if let Some(f) = &format {
            check(f).map_err(|m| format!("log.format: {m}"))?;
        }
        Ok(LogSpec { max_bytes, max_files, format })
    }
}

/// Reads `text`'s time and level with `format` as the agent does (used by tests of the shipped
/// formats and by the manager to explain a format): `None` when the pattern does not match.
pub fn read_line(format: &LogFormat, text: &str) -> Option<(Option<chrono::NaiveDateTime>, Option<String>)> {
    let re = regex::Regex::new(&format.pattern).ok()?;
    let caps = re.captures(text)?;
    let time =
        caps.name("time").and_then(|t| chrono::NaiveDateTime::parse_from_str(t.as_str(), &format.time_format).ok());
    let level = caps.name("level").map(|l| {
        let raw = l.as_str();
        format.levels.get(raw).cloned().unwrap_or_else(|| raw.trim().to_lowercase())
    });
    Some((time, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_formats_are_valid_and_read_their_services_lines() {
        for name in SHIPPED {
            check(&shipped(name).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f").unwrap();
        let cases = [
            (
                "redis",
                "4242:M 04 Dec 2026 03:18:39.123 # WARNING overcommit_memory is set to 0!",
                "2026-12-04 03:18:39.123",
                "warn",
            ),
            (
                "redis",
                "4242:C 04 Dec 2026 03:18:39.000 * Ready to accept connections tcp",
                "2026-12-04 03:18:39.000",
                "info",
            ),
            (
                "zookeeper",
                "2026-12-04 03:18:39,456 - ERROR [main:QuorumPeerMain@99] - Unexpected exception",
                "2026-12-04 03:18:39.456",
                "error",
            ),
            (
                "nginx-error",
                "2026/12/04 03:18:39 [emerg] 7#7: bind() to 0.0.0.0:80 failed",
                "2026-12-04 03:18:39.000",
                "error",
            ),
        ];
        for (name, line, time, level) in cases {
            let f = shipped(name).unwrap();
            assert_eq!(read_line(&f, line), Some((Some(t(time)), Some(level.to_string()))), "{name}: {line}");
        }
        assert_eq!(read_line(&shipped("redis").unwrap(), "    continuation of a banner"), None);
    }

    #[test]
    fn bad_formats_are_refused_with_the_reason() {
        let f = |pattern: &str, time_format: &str| LogFormat {
            name: "x".into(),
            pattern: pattern.into(),
            time_format: time_format.into(),
            levels: BTreeMap::new(),
        };
        assert!(check(&f("(", "")).unwrap_err().contains("does not compile"));
        assert!(check(&f("^\\d+", "")).unwrap_err().contains("named group"));
        assert!(check(&f("^(?P<time>\\S+)", "")).unwrap_err().contains("required"));
        assert!(check(&f("^(?P<time>\\S+)", "%Y-%Q")).unwrap_err().contains("not a valid chrono"));
        let mut bad = f("^(?P<level>\\w+)", "");
        bad.levels.insert("W".into(), "warning".into());
        assert!(check(&bad).unwrap_err().contains("`W` maps to `warning`"));
    }

    #[test]
    fn raw_log_tables_build() {
        let raw: RawLog = toml::from_str("max_bytes = \"1MiB\"\nmax_files = 2\nformat = \"redis\"").unwrap();
        let spec = raw.build("primary").unwrap();
        assert_eq!((spec.max_bytes, spec.max_files, spec.format.unwrap().name.as_str()), (1 << 20, 2, "redis"));
        let raw: RawLog =
            toml::from_str("format = { pattern = '^(?P<level>[A-Z]+):', levels = { W = \"warn\" } }").unwrap();
        let spec = raw.build("server").unwrap();
        assert_eq!((spec.max_bytes, spec.max_files), (DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES));
        assert_eq!(spec.format.unwrap().name, "server");
        let raw: RawLog = toml::from_str("format = \"log4j\"").unwrap();
        assert!(raw.build("x").unwrap_err().contains("`log4j` is not a shipped format"));
        let raw: RawLog = toml::from_str("max_bytes = \"ten\"").unwrap();
        assert!(raw.build("x").unwrap_err().contains("log.max_bytes"));
        let raw: RawLog = toml::from_str("max_files = 0").unwrap();
        assert!(raw.build("x").unwrap_err().contains("log.max_files"));
    }
}
