//! `meta/parcel.json`: what a parcel is, what it needs and what it contains. Modelled on
//! Cloudera's `parcel.json`; the differences are listed in `docs/parcels.md`.

use std::cmp::Ordering;
use std::fmt;

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

    /// Whether `version` of a parcel named [`Dependency::name`] meets the
    /// constraint (always, without one).
    pub fn accepts(&self, version: &str) -> bool {
        let Some((op, wanted)) = &self.constraint else { return true };
        let order = compare_versions(version, wanted);
        match op.as_str() {
            ">=" => order != Ordering::Less,
            "<=" => order != Ordering::Greater,
            "=" => order == Ordering::Equal,
            ">>" => order == Ordering::Greater,
            "<<" => order == Ordering::Less,
            _ => false,
        }
    }
}

impl fmt::Display for Dependency {
    /// `NAME` or `NAME (OP VERSION)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.constraint {
            None => write!(f, "{}", self.name),
            Some((op, version)) => write!(f, "{} ({op} {version})", self.name),
        }
    }
}

/// Debian's order of versions (`dpkg --compare-versions`) for parcel versions, which have no
/// epoch: the upstream part first, then the revision after the last `-` (none counts as `0`).
/// Within each, runs of non-digits compare character by character with letters before other
/// characters and `~` before everything, even the end; runs of digits compare as numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let split = |v: &str| -> (String, String) {
        match v.rsplit_once('-') {
            Some((upstream, revision)) => (upstream.to_owned(), revision.to_owned()),
            None => (v.to_owned(), String::new()),
        }
    };
    let (a_up, a_rev) = split(a);
    let (b_up, b_rev) = split(b);
    compare_part(a_up.as_bytes(), b_up.as_bytes()).then_with(|| compare_part(a_rev.as_bytes(), b_rev.as_bytes()))
}

/// dpkg's `verrevcmp`.
fn compare_part(mut a: &[u8], mut b: &[u8]) -> Ordering {
    fn weight(c: Option<&u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
            Some(b'~') => -1,
            Some(c) => i32::from(*c) + 256,
        }
    }
    let digit = |s: &[u8]| s.first().is_some_and(u8::is_ascii_digit);
    while !a.is_empty() || !b.is_empty() {
        while (!a.is_empty() && !digit(a)) || (!b.is_empty() && !digit(b)) {
            let (wa, wb) = (weight(a.first()), weight(b.first()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = a.get(1..).unwrap_or_default();
            b = b.get(1..).unwrap_or_default();
        }
        let zeros = |s: &[u8]| s.iter().take_while(|c| **c == b'0').count();
        a = &a[zeros(a)..];
        b = &b[zeros(b)..];
        let (na, nb) =
            (a.iter().take_while(|c| c.is_ascii_digit()).count(), b.iter().take_while(|c| c.is_ascii_digit()).count());
        // Without leading zeros, the longer number is the larger; equal lengths compare digit by digit.
        let order = na.cmp(&nb).then_with(|| a[..na].cmp(&b[..nb]));
        if order != Ordering::Equal {
            return order;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
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

    /// The parsed `conflicts` list (valid after [`ParcelMeta::validate`]).
    pub fn conflict_list(&self) -> Vec<Dependency> {
        self.conflicts.iter().filter_map(|d| Dependency::parse(d).ok()).collect()
    }

    /// Whether this parcel is what `item` names: by its name and version, or, for an item
    /// without a version, by a name in `provides`.
    pub fn satisfies(&self, item: &Dependency) -> bool {
        (self.name == item.name && item.accepts(&self.version))
            || (item.constraint.is_none() && self.provides.contains(&item.name))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_like_dpkg() {
        use Ordering::{Equal, Greater, Less};
        for (a, b, want) in [
            ("7.0.15-1", "7.0.15-2", Less),
            ("7.0.15-10", "7.0.15-9", Greater),
            ("7.0.9", "7.0.15", Less),
            ("17.0-1", "17", Greater),
            ("17", "17-0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+b1", Less),
            ("1.007", "1.7", Equal),
            ("3.8.0-1", "3.8.0-1", Equal),
            ("2", "10", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn constraints_accept_versions() {
        let dep = |s: &str| Dependency::parse(s).expect("parses");
        assert!(dep("jre").accepts("1"));
        assert!(dep("jre (>= 17)").accepts("17.0-1"));
        assert!(!dep("jre (>= 17)").accepts("11.0-1"));
        assert!(dep("jre (<< 18)").accepts("17.0-1"));
        assert!(!dep("jre (>> 17.0-1)").accepts("17.0-1"));
        assert!(dep("jre (= 17.0-1)").accepts("17.0-1"));
        assert!(dep("jre (<= 17.0-1)").accepts("17.0~rc1-1"));
        assert_eq!(dep("jre ( >= 17 )").to_string(), "jre (>= 17)");
    }
}
