//! `meta/parcel.json`: what a parcel is, what it needs and what it contains. Modelled on
//! Cloudera's `parcel.json`; the differences are listed in `docs/parcels.md`.

use serde::{Deserialize, Serialize};

use crate::ParcelError;
use crate::name::{validate_distro, validate_name, validate_version};

/// The only `schema_version` this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest `meta/` file read into memory (parcel.json, the env script).
pub const MAX_META_FILE: u64 = 1024 * 1024;

/// The contents of `meta/parcel.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelMeta {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    pub distro: String,
    /// Parcels that must be active too: `"jre"` or `"jre (>= 17)"`.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Parcels that must not be active at the same time, same syntax as `depends`.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Names this parcel stands in for (`depends` of other parcels may name them).
    #[serde(default)]
    pub provides: Vec<String>,
    /// The software inside, one entry per Debian package it was built from.
    #[serde(default)]
    pub components: Vec<Component>,
    pub scripts: Scripts,
}

/// One piece of software in a parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The Debian package name, e.g. `redis-server`.
    pub name: String,
    /// The upstream version, e.g. `7.0.15`.
    pub version: String,
    /// The full package version, e.g. `5:7.0.15-1~deb12u10`.
    pub pkg_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripts {
    /// The env script's file name in `meta/`, e.g. `redis_env.sh`.
    pub defines: String,
}

/// A parsed `depends` or `conflicts` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// `(operator, version)`, operator one of `>=`, `<=`, `=`, `>>`, `<<`.
    pub constraint: Option<(String, String)>,
}

impl Dependency {
    /// Parses `NAME` or `NAME (OP VERSION)`.
    pub fn parse(s: &str) -> Result<Dependency, String> {
        let s = s.trim();
        let (name, constraint) = match s.split_once('(') {
            None => (s, None),
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| format!("{s:?}: missing `)`"))?.trim();
                let (op, version) = ["<<", ">>", ">=", "<=", "="]
                    .iter()
                    .find_map(|op| inner.strip_prefix(op).map(|v| (*op, v.trim())))
                    .ok_or_else(|| format!("{s:?}: expected an operator >=, <=, =, >> or <<"))?;
                validate_version(version).map_err(|e| format!("{s:?}: {e}"))?;
                (name.trim(), Some((op.to_owned(), version.to_owned())))
            }
        };
        validate_name(name).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Dependency { name: name.to_owned(), constraint })
    }
}

impl ParcelMeta {
    /// Parses and validates `parcel.json`; `file` names it in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<ParcelMeta, ParcelError> {
        let meta: ParcelMeta =
            serde_json::from_slice(bytes).map_err(|source| ParcelError::MetaJson { file: file.to_owned(), source })?;
        meta.validate(file)?;
        Ok(meta)
    }

    /// Pretty JSON with a trailing newline; the same meta always gives the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and vectors cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// `NAME-VERSION`.
    pub fn dir_name(&self) -> String {
        crate::name::dir_name(&self.name, &self.version)
    }

    /// The parsed `depends` list (valid after [`ParcelMeta::validate`]).
    pub fn dependencies(&self) -> Vec<Dependency> {
        self.depends.iter().filter_map(|d| Dependency::parse(d).ok()).collect()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self, file: &str) -> Result<(), ParcelError> {
        let bad = |field: &str, message: String| ParcelError::InvalidMeta {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        };
        if self.schema_version != SCHEMA_VERSION {
            return Err(bad(
                "schema_version",
                format!("unsupported value {}; this drover reads {SCHEMA_VERSION}", self.schema_version),
            ));
        }
        validate_name(&self.name).map_err(|e| bad("name", e.to_string()))?;
        validate_version(&self.version).map_err(|e| bad("version", e.to_string()))?;
        validate_distro(&self.distro).map_err(|e| bad("distro", e.to_string()))?;
        for (field, list) in [("depends", &self.depends), ("conflicts", &self.conflicts)] {
            for item in list {
                let dep = Dependency::parse(item).map_err(|e| bad(field, e))?;
                if dep.name == self.name {
                    return Err(bad(field, format!("{item:?} names the parcel itself")));
                }
            }
        }
        for item in &self.provides {
            validate_name(item).map_err(|e| bad("provides", e.to_string()))?;
        }
        for (i, c) in self.components.iter().enumerate() {
            let field = format!("components[{i}]");
            for (what, value) in [("name", &c.name), ("version", &c.version), ("pkg_version", &c.pkg_version)] {
                if value.is_empty()
                    || value.len() > 200
                    || value.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                {
                    return Err(bad(&format!("{field}.{what}"), format!("{value:?} is empty or has spaces")));
                }
            }
        }
        let d = &self.scripts.defines;
        let plain = !d.is_empty()
            && !d.starts_with('.')
            && d.len() <= 100
            && d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !plain {
            return Err(bad("scripts.defines", format!("{d:?} must be a plain file name in meta/, e.g. redis_env.sh")));
        }
        Ok(())
    }
}

/// The upstream part of a Debian version: `5:7.0.15-1~deb12u10` -> `7.0.15`.
pub fn upstream_version(pkg_version: &str) -> &str {
    let no_epoch = pkg_version.split_once(':').map_or(pkg_version, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(v, _)| v)
}
