//! Parcel names: `NAME-VERSION-DISTRO.parcel` for files and `NAME-VERSION` for the directory a
//! parcel unpacks to. NAME has no `-`, DISTRO has none either, so both splits are unambiguous.

use std::fmt;

use crate::ParcelError;

/// The suffix of every parcel file.
pub const SUFFIX: &str = ".parcel";

const MAX_LEN: usize = 128;

/// A parcel's identity, as spelled by its file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParcelId {
    pub name: String,
    pub version: String,
    pub distro: String,
}

impl ParcelId {
    /// Builds an id from its parts, validating each one.
    pub fn new(name: &str, version: &str, distro: &str) -> Result<ParcelId, ParcelError> {
        validate_name(name)?;
        validate_version(version)?;
        validate_distro(distro)?;
        Ok(ParcelId { name: name.to_owned(), version: version.to_owned(), distro: distro.to_owned() })
    }

    /// Parses a file name such as `redis-7.0.15-1-bookworm.parcel`.
    pub fn parse(file_name: &str) -> Result<ParcelId, ParcelError> {
        let invalid = |reason: &str| ParcelError::InvalidName {
            what: "file name",
            value: file_name.to_owned(),
            reason: reason.to_owned(),
        };
        let stem = file_name.strip_suffix(SUFFIX).ok_or_else(|| invalid("expected NAME-VERSION-DISTRO.parcel"))?;
        let (name, rest) = stem.split_once('-').ok_or_else(|| invalid("expected NAME-VERSION-DISTRO.parcel"))?;
        let (version, distro) = rest.rsplit_once('-').ok_or_else(|| invalid("expected NAME-VERSION-DISTRO.parcel"))?;
        ParcelId::new(name, version, distro).map_err(|e| match e {
            ParcelError::InvalidName { what, reason, .. } => invalid(&format!("{what}: {reason}")),
            other => other,
        })
    }

    /// `NAME-VERSION`, the parcel's top directory in the archive and under the parcels root.
    pub fn dir_name(&self) -> String {
        dir_name(&self.name, &self.version)
    }

    /// `NAME-VERSION-DISTRO.parcel`.
    pub fn file_name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ParcelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}{SUFFIX}", self.name, self.version, self.distro)
    }
}

impl std::str::FromStr for ParcelId {
    type Err = ParcelError;

    fn from_str(s: &str) -> Result<ParcelId, ParcelError> {
        ParcelId::parse(s)
    }
}

/// `NAME-VERSION`.
pub fn dir_name(name: &str, version: &str) -> String {
    format!("{name}-{version}")
}

/// Splits `NAME-VERSION` (at the first `-`, NAME has none) and validates both parts.
pub fn parse_dir_name(dir: &str) -> Result<(String, String), ParcelError> {
    let (name, version) = dir.split_once('-').ok_or_else(|| ParcelError::InvalidName {
        what: "directory name",
        value: dir.to_owned(),
        reason: "expected NAME-VERSION".to_owned(),
    })?;
    validate_name(name)?;
    validate_version(version)?;
    Ok((name.to_owned(), version.to_owned()))
}

/// NAME: `[a-z0-9][a-z0-9_]*`, at most 64 characters.
pub fn validate_name(name: &str) -> Result<(), ParcelError> {
    let invalid =
        |reason: &str| ParcelError::InvalidName { what: "name", value: name.to_owned(), reason: reason.to_owned() };
    let first_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !first_ok {
        return Err(invalid("must start with a lowercase letter or digit"));
    }
    if name.len() > 64 {
        return Err(invalid("longer than 64 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(invalid("only lowercase letters, digits and `_` are allowed (no `-`)"));
    }
    Ok(())
}

/// VERSION: starts with a letter or digit; letters, digits and `. + ~ - _`; no `/` or spaces.
pub fn validate_version(version: &str) -> Result<(), ParcelError> {
    let invalid = |reason: &str| ParcelError::InvalidName {
        what: "version",
        value: version.to_owned(),
        reason: reason.to_owned(),
    };
    if !version.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or digit"));
    }
    if version.len() > MAX_LEN {
        return Err(invalid("longer than 128 characters"));
    }
    if !version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b'-' | b'_')) {
        return Err(invalid("only letters, digits and `. + ~ - _` are allowed"));
    }
    Ok(())
}

/// DISTRO: `[a-z0-9][a-z0-9._]*` (e.g. `bookworm`), no `-`.
pub fn validate_distro(distro: &str) -> Result<(), ParcelError> {
    let invalid =
        |reason: &str| ParcelError::InvalidName { what: "distro", value: distro.to_owned(), reason: reason.to_owned() };
    if !distro.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(invalid("must start with a lowercase letter or digit"));
    }
    if distro.len() > 32 {
        return Err(invalid("longer than 32 characters"));
    }
    if !distro.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_') {
        return Err(invalid("only lowercase letters, digits, `.` and `_` are allowed (no `-`)"));
    }
    Ok(())
}
