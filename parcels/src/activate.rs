//! Activation on a host: under a parcels root, each installed version is a directory
//! `NAME-VERSION/` and the active one is named by the symlink `NAME -> NAME-VERSION`.
//!
//! Switching versions creates `.NAME.link-tmp` and renames it over `NAME`, so at every instant
//! `NAME` points at one complete version; the previous version stays on disk for a rollback.
//!
//! Activation enforces `depends` and `conflicts` of `meta/parcel.json` against the other parcels
//! active under the same root ([`check_relations`]): a parcel whose dependencies are not active,
//! or that conflicts with an active parcel (declared on either side), is not activated.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::{read_installed_env, read_installed_meta, read_marker};
use crate::meta::ParcelMeta;
use crate::name::{dir_name, parse_dir_name, validate_name, validate_version};
use crate::{IoContext, ParcelError, rename_durable, show, sync_parent};

/// One complete install under a parcels root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledVersion {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    /// sha256 of the archive it was installed from.
    pub sha256: String,
    pub active: bool,
}

/// Makes `name`-`version` the active version. Returns the version that was active before, if any.
/// Refused when that version is not a complete install, when `root/NAME` is not a symlink, and
/// ([`ParcelError::Refused`]) when its `depends` are not active or it conflicts with an active
/// parcel (see [`check_relations`]); nothing changes then. Activating the active version again is
/// a no-op.
pub fn activate(root: &Path, name: &str, version: &str) -> Result<Option<String>, ParcelError> {
    validate_name(name)?;
    validate_version(version)?;
    let dir = dir_name(name, version);
    let meta = check_complete(root, name, version)?;
    let link = root.join(name);
    let previous = active_version(root, name)?;
    if previous.as_deref() == Some(version) {
        return Ok(previous);
    }
    check_relations(&meta, &active_metas(root, name)?)?;
    let tmp = root.join(format!(".{name}.link-tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ParcelError::io(&tmp, e)),
    }
    std::os::unix::fs::symlink(&dir, &tmp).at(&tmp)?;
    if let Err(e) = rename_durable(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(previous)
}

/// Removes the `NAME` symlink. Returns the version that was active, `None` if none was.
pub fn deactivate(root: &Path, name: &str) -> Result<Option<String>, ParcelError> {
    validate_name(name)?;
    let previous = active_version(root, name)?;
    if previous.is_some() {
        let link = root.join(name);
        fs::remove_file(&link).at(&link)?;
        sync_parent(&link)?;
    }
    Ok(previous)
}

/// The version `root/NAME` points at, `None` when there is no such link. An error when `NAME`
/// exists but is not a symlink to a `NAME-VERSION` directory name.
pub fn active_version(root: &Path, name: &str) -> Result<Option<String>, ParcelError> {
    validate_name(name)?;
    let link = root.join(name);
    let target = match fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(ParcelError::AlreadyInstalled {
                dir: show(&link),
                message: "exists and is not a symlink; drover will not replace it".into(),
            });
        }
        Err(e) => return Err(ParcelError::io(&link, e)),
    };
    let bad = || ParcelError::AlreadyInstalled {
        dir: show(&link),
        message: format!("points at {}, not at a {name}-VERSION directory", target.display()),
    };
    let target_str = target.to_str().ok_or_else(bad)?;
    let (n, v) = parse_dir_name(target_str).map_err(|_| bad())?;
    if n != name {
        return Err(bad());
    }
    Ok(Some(v))
}

/// Every complete install under `root`, sorted by name then version string. Directories without
/// the install marker (`.partial-*`, foreign directories) are left out.
pub fn installed(root: &Path) -> Result<Vec<InstalledVersion>, ParcelError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ParcelError::io(root, e)),
    };
    let mut active: BTreeMap<String, Option<String>> = BTreeMap::new();
    for entry in entries {
        let entry = entry.at(root)?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let Ok((name, version)) = parse_dir_name(&file_name) else { continue };
        let path = entry.path();
        if !fs::symlink_metadata(&path).at(&path)?.is_dir() {
            continue;
        }
        let Some(sha256) = read_marker(&path)? else { continue };
        let is_active = match active.get(&name) {
            Some(a) => a.as_deref() == Some(version.as_str()),
            None => {
                // A broken NAME entry must not hide the installs.
                let a = active_version(root, &name).unwrap_or(None);
                let is = a.as_deref() == Some(version.as_str());
                active.insert(name.clone(), a);
                is
            }
        };
        out.push(InstalledVersion { name, version, dir: path, sha256, active: is_active });
    }
    out.sort();
    Ok(out)
}

/// Deletes an installed version. Refused while it is the active one. The directory is first
/// renamed to `.removing-NAME-VERSION` so a crash halfway never leaves something that looks
/// installed.
pub fn remove(root: &Path, name: &str, version: &str) -> Result<(), ParcelError> {
    validate_name(name)?;
    validate_version(version)?;
    if active_version(root, name)?.as_deref() == Some(version) {
        return Err(ParcelError::Active { root: show(root), name: name.into(), version: version.into() });
    }
    let dir = root.join(dir_name(name, version));
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(ParcelError::NotInstalled { root: show(root), name: name.into(), version: version.into() });
    }
    let doomed = root.join(format!(".removing-{}", dir_name(name, version)));
    if fs::symlink_metadata(&doomed).is_ok() {
        fs::remove_dir_all(&doomed).at(&doomed)?;
    }
    rename_durable(&dir, &doomed)?;
    fs::remove_dir_all(&doomed).at(&doomed)
}

/// Deletes leftovers of interrupted installs and removals (`.partial-*`, `.removing-*`,
/// `.*.link-tmp`). For the agent to call at start, when no install runs.
pub fn cleanup_partials(root: &Path) -> Result<Vec<PathBuf>, ParcelError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(ParcelError::io(root, e)),
    };
    for entry in entries {
        let entry = entry.at(root)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with(".partial-") || name.starts_with(".removing-") {
            fs::remove_dir_all(&path).at(&path)?;
            removed.push(path);
        } else if name.starts_with('.') && name.ends_with(".link-tmp") {
            fs::remove_file(&path).at(&path)?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

/// The environment the active version of `name` defines: its env script evaluated with
/// `PARCELS_ROOT` = `root` and `PARCEL_DIRNAME` = `NAME-VERSION` (the versioned directory, so a
/// running process keeps using the files it started with after a switch). `inherited` resolves
/// references to variables the script does not set (`$PATH`); pass the variables of parcels
/// this one depends on there. Returns only the variables the script sets.
pub fn parcel_env(
    root: &Path,
    name: &str,
    inherited: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ParcelError> {
    let version =
        active_version(root, name)?.ok_or_else(|| ParcelError::NotActive { root: show(root), name: name.into() })?;
    let dir_name = dir_name(name, &version);
    let dir = root.join(&dir_name);
    let meta = read_installed_meta(&dir)?;
    let script = read_installed_env(&dir, &meta)?;
    Ok(script.evaluate(&root.to_string_lossy(), &dir_name, inherited))
}

/// Checks that `parcel` may be active together with the `active` parcels (other names than its
/// own): each of its `depends` is met by an active parcel of that name whose version meets the
/// constraint (or, for an item without a version, by one that `provides` the name), and none of
/// its `conflicts` names an active parcel, nor does any active parcel's `conflicts` name it.
/// The error lists every problem, naming both parcels, e.g. `activate redis-7.0.15-1: conflicts
/// with active parcel keydb-6.2 (declared by redis-7.0.15-1)`.
pub fn check_relations(parcel: &ParcelMeta, active: &[ParcelMeta]) -> Result<(), ParcelError> {
    let this = parcel.dir_name();
    let mut problems = Vec::new();
    for dep in parcel.dependencies() {
        if active.iter().any(|a| a.satisfies(&dep)) {
            continue;
        }
        match active.iter().find(|a| a.name == dep.name) {
            Some(a) => problems.push(format!("depends on {dep}, but the active version is {}", a.dir_name())),
            None => problems.push(format!("depends on {dep}, which is not active on this host")),
        }
    }
    for item in parcel.conflict_list() {
        for a in active.iter().filter(|a| a.satisfies(&item)) {
            problems.push(format!("conflicts with active parcel {} (declared by {this})", a.dir_name()));
        }
    }
    for a in active {
        if a.conflict_list().iter().any(|item| parcel.satisfies(item)) {
            problems.push(format!("conflicts with active parcel {0} (declared by {0})", a.dir_name()));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ParcelError::Refused { parcel: this, message: problems.join("; ") }) }
}

/// The metadata of every parcel active under `root` other than `except`.
fn active_metas(root: &Path, except: &str) -> Result<Vec<ParcelMeta>, ParcelError> {
    let mut metas = Vec::new();
    for v in installed(root)? {
        if v.active && v.name != except {
            metas.push(read_installed_meta(&v.dir)?);
        }
    }
    Ok(metas)
}

fn check_complete(root: &Path, name: &str, version: &str) -> Result<ParcelMeta, ParcelError> {
    let dir = root.join(dir_name(name, version));
    let not_installed = || ParcelError::NotInstalled { root: show(root), name: name.into(), version: version.into() };
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(not_installed());
    }
    if read_marker(&dir)?.is_none() {
        return Err(not_installed());
    }
    let meta = read_installed_meta(&dir)?;
    if meta.name != name || meta.version != version {
        return Err(ParcelError::Mismatch {
            archive: show(&dir),
            message: format!("meta/parcel.json names {} {}", meta.name, meta.version),
        });
    }
    Ok(meta)
}
