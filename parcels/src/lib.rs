//! The parcel format: versioned software bundles a host unpacks next to each other and switches
//! between with a symlink. This crate is the format and everything that touches parcel files on
//! disk; the manager serves them, the agent calls [`install`] and [`activate`], and
//! `drover-parcel-builder` makes them from Debian packages.
//!
//! - [`name`]: `NAME-VERSION-DISTRO.parcel` ([`ParcelId`]) and the `NAME-VERSION` directory name;
//! - [`meta`]: `meta/parcel.json` ([`ParcelMeta`]), strict parsing and validation;
//! - [`env`]: the env script subset (`export VAR=value`) and its evaluation without a shell;
//! - [`archive`]: reproducible [`build_archive`], streamed [`inspect`] and safe [`install`];
//! - [`activate`]: the `NAME -> NAME-VERSION` symlink switch, listing and removal;
//! - [`manifest`]: a repository's `manifest.json`, [`index_dir`] and [`index_dir_cached`].
//!
//! The format and its differences from Cloudera's parcels are documented in `docs/parcels.md`.

pub mod activate;
pub mod archive;
pub mod env;
pub mod manifest;
pub mod meta;
pub mod name;

use std::path::{Path, PathBuf};

pub use activate::{
    InstalledVersion, activate, active_version, check_relations, cleanup_partials, deactivate, installed, parcel_env,
    remove,
};
pub use archive::{
    ArchiveOptions, BuiltParcel, Expected, InstalledParcel, ParcelInfo, build_archive, build_archive_with, inspect,
    install,
};
pub use manifest::{IndexCache, Indexed, Manifest, ManifestParcel, index_dir, index_dir_cached};
pub use meta::{Component, Dependency, ParcelMeta, Scripts};
pub use name::ParcelId;

/// The file inside an installed `NAME-VERSION/` directory that records the sha256 of the archive
/// it came from. Written last, just before the directory gets its final name.
pub const INSTALLED_MARKER: &str = ".drover-sha256";

/// Why a parcel operation failed. Every message names the file, entry, field or parcel involved.
#[derive(Debug, thiserror::Error)]
pub enum ParcelError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid parcel {what} {value:?}: {reason}")]
    InvalidName { what: &'static str, value: String, reason: String },
    #[error("{file}: field `{field}`: {message}")]
    InvalidMeta { file: String, field: String, message: String },
    #[error("{file}: invalid json: {source}")]
    MetaJson { file: String, source: serde_json::Error },
    #[error("{archive}: no meta/parcel.json in the parcel's top directory")]
    MissingMeta { archive: String },
    #[error("{archive}: entry {entry:?}: {reason}")]
    UnsafeEntry { archive: String, entry: String, reason: String },
    #[error("{archive}: truncated or corrupt archive: {message}")]
    Corrupt { archive: String, message: String },
    #[error("{archive}: size mismatch: expected {expected} bytes, the file has {actual}")]
    SizeMismatch { archive: String, expected: u64, actual: u64 },
    #[error("{archive}: sha256 mismatch: expected {expected}, the file hashes to {actual}")]
    HashMismatch { archive: String, expected: String, actual: String },
    #[error("{archive}: {message}")]
    Mismatch { archive: String, message: String },
    #[error("{dir}: {message}")]
    AlreadyInstalled { dir: String, message: String },
    #[error("parcel {name} {version} is not installed in {root}")]
    NotInstalled { root: String, name: String, version: String },
    #[error("parcel {name} {version} is active in {root}; activate another version or deactivate {name} first")]
    Active { root: String, name: String, version: String },
    #[error("parcel {name} is not active in {root}")]
    NotActive { root: String, name: String },
    /// Activation refused by `depends` or `conflicts`; `message` names both parcels.
    #[error("activate {parcel}: {message}")]
    Refused { parcel: String, message: String },
    #[error("{file}: line {line}: {message}")]
    InvalidEnv { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    Manifest { file: String, message: String },
}

impl ParcelError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> ParcelError {
        ParcelError::Io { path: path.as_ref().display().to_string(), source }
    }
}

/// Attaches the path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, ParcelError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, ParcelError> {
        self.map_err(|e| ParcelError::io(path, e))
    }
}

/// `path` shown in messages.
pub(crate) fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Renames `from` to `to` and fsyncs the directory of `to`, so the rename survives a crash.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), ParcelError> {
    std::fs::rename(from, to).at(to)?;
    sync_parent(to)
}

pub(crate) fn sync_parent(path: &Path) -> Result<(), ParcelError> {
    let parent: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&parent).and_then(|d| d.sync_all()).at(&parent)
}
