//! A parcel repository: a folder of `*.parcel` files plus `manifest.json`, which lists each
//! parcel with its hash and size so hosts can verify what they download.
//!
//! Checking a parcel means reading and hashing all of it. A repository that is indexed again and
//! again (the manager's, at every start) keeps an [`IndexCache`] next to its manifest: each
//! file's size, mtime, ctime, device and inode when it was checked, with its manifest entry.
//! [`index_dir_cached`] trusts an entry only while all of those are unchanged and checks every
//! other file as [`index_dir`] does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::archive::{ParcelInfo, inspect};
use crate::meta::Component;
use crate::name::{ParcelId, SUFFIX};
use crate::{IoContext, ParcelError, rename_durable, show};

/// The file name of a repository's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The file name of a repository's [`IndexCache`], next to the manifest.
pub const INDEX_CACHE_FILE: &str = ".index-cache.json";

/// `manifest.json`. Unknown fields are ignored so an older reader can follow a newer repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// When the manifest was written, Unix milliseconds.
    pub last_updated: i64,
    /// Sorted by `parcel_name`.
    pub parcels: Vec<ManifestParcel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestParcel {
    /// The file name, `NAME-VERSION-DISTRO.parcel`, relative to the manifest.
    pub parcel_name: String,
    pub name: String,
    pub version: String,
    pub distro: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub depends: Vec<String>,
    #[serde(default)]
    pub conflicts: Vec<String>,
    #[serde(default)]
    pub provides: Vec<String>,
}

impl ManifestParcel {
    /// The manifest entry of a checked parcel file.
    pub fn from_info(info: &ParcelInfo) -> ManifestParcel {
        let m = &info.meta;
        ManifestParcel {
            parcel_name: format!("{}-{}-{}{SUFFIX}", m.name, m.version, m.distro),
            name: m.name.clone(),
            version: m.version.clone(),
            distro: m.distro.clone(),
            sha256: info.sha256.clone(),
            size: info.size,
            components: m.components.clone(),
            depends: m.depends.clone(),
            conflicts: m.conflicts.clone(),
            provides: m.provides.clone(),
        }
    }

    pub fn id(&self) -> Result<ParcelId, ParcelError> {
        ParcelId::parse(&self.parcel_name)
    }
}

impl Manifest {
    /// Parses and validates a manifest; `file` names it in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Manifest, ParcelError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| ParcelError::Manifest { file: file.to_owned(), message: format!("invalid json: {e}") })?;
        m.validate(file)?;
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Manifest, ParcelError> {
        let bytes = fs::read(path).at(path)?;
        Manifest::parse(&bytes, &show(path))
    }

    /// Every parcel name parses and agrees with its fields, hashes are 64 hex digits, names are
    /// unique and sorted.
    pub fn validate(&self, file: &str) -> Result<(), ParcelError> {
        let bad = |message: String| ParcelError::Manifest { file: file.to_owned(), message };
        let mut seen = BTreeSet::new();
        let mut previous: Option<&str> = None;
        for (i, p) in self.parcels.iter().enumerate() {
            let at = format!("parcels[{i}] ({})", p.parcel_name);
            let id = p.id().map_err(|e| bad(format!("{at}: parcel_name: {e}")))?;
            if id.name != p.name || id.version != p.version || id.distro != p.distro {
                return Err(bad(format!("{at}: name, version and distro do not match parcel_name")));
            }
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(bad(format!("{at}: sha256 must be 64 lowercase hex digits")));
            }
            if !seen.insert(p.parcel_name.as_str()) {
                return Err(bad(format!("{at}: listed twice")));
            }
            if previous.is_some_and(|prev| prev > p.parcel_name.as_str()) {
                return Err(bad(format!("{at}: parcels must be sorted by parcel_name")));
            }
            previous = Some(&p.parcel_name);
        }
        Ok(())
    }

    /// The entry for a file name.
    pub fn find(&self, parcel_name: &str) -> Option<&ManifestParcel> {
        self.parcels.iter().find(|p| p.parcel_name == parcel_name)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Writes `dir/manifest.json` atomically (temporary file, fsync, rename). Returns its path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, ParcelError> {
        save_atomic(dir, MANIFEST_FILE, &self.to_json())
    }
}

/// Writes `dir/file` atomically (temporary file, fsync, rename, fsync of the directory).
fn save_atomic(dir: &Path, file: &str, bytes: &[u8]) -> Result<PathBuf, ParcelError> {
    let path = dir.join(file);
    let mut tmp =
        tempfile::Builder::new().prefix(&format!(".{}.", file.trim_start_matches('.'))).tempfile_in(dir).at(dir)?;
    tmp.write_all(bytes).at(&path)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644)).at(&path)?;
    tmp.as_file().sync_all().at(&path)?;
    let tmp_path = tmp.into_temp_path();
    let kept = tmp_path.keep().map_err(|e| ParcelError::io(&path, e.error))?;
    if let Err(e) = rename_durable(&kept, &path) {
        let _ = fs::remove_file(&kept);
        return Err(e);
    }
    Ok(path)
}

/// What identifies one version of a file's content without reading it: any write changes the
/// size or the mtime, and even a write whose author restores the mtime changes the ctime, which
/// only the kernel sets; a file replaced by another has another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub dev: u64,
    pub ino: u64,
}

impl FileStat {
    pub fn of(meta: &fs::Metadata) -> FileStat {
        FileStat {
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A checked parcel file: its [`FileStat`] when it was checked and its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    pub stat: FileStat,
    pub entry: ManifestParcel,
}

/// `.index-cache.json`: the parcel files of a repository as last checked, by file name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexCache {
    pub files: BTreeMap<String, CachedFile>,
}

impl IndexCache {
    /// Reads `dir/.index-cache.json`; empty when there is none. An error when it cannot be read
    /// or parsed (the caller may start from an empty cache: everything is checked again).
    pub fn load(dir: &Path) -> Result<IndexCache, ParcelError> {
        let path = dir.join(INDEX_CACHE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ParcelError::Manifest { file: show(&path), message: format!("invalid json: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IndexCache::default()),
            Err(e) => Err(ParcelError::io(&path, e)),
        }
    }

    /// Writes `dir/.index-cache.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, ParcelError> {
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        save_atomic(dir, INDEX_CACHE_FILE, &json)
    }

    /// Records `entry`, just checked, with the current stat of its file in `dir`.
    pub fn record(&mut self, dir: &Path, entry: &ManifestParcel) -> Result<(), ParcelError> {
        let path = dir.join(&entry.parcel_name);
        let stat = FileStat::of(&fs::symlink_metadata(&path).at(&path)?);
        self.files.insert(entry.parcel_name.clone(), CachedFile { stat, entry: entry.clone() });
        Ok(())
    }

    /// The recorded entry of `file_name`, if its file still has the recorded stat.
    fn trusted(&self, file_name: &str, stat: &FileStat) -> Option<&ManifestParcel> {
        self.files.get(file_name).filter(|c| c.stat == *stat && c.entry.parcel_name == file_name).map(|c| &c.entry)
    }
}

/// What [`index_dir_cached`] found.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub manifest: Manifest,
    /// The cache for the files now in the directory.
    pub cache: IndexCache,
    /// Files read and checked, by name.
    pub checked: Vec<String>,
    /// Files whose cached entry was taken without reading them, by name.
    pub trusted: Vec<String>,
}

/// Checks every `*.parcel` file in `dir` (streamed, see [`inspect`]) and returns the manifest
/// listing them, `last_updated` now. Fails on the first bad file, naming it.
pub fn index_dir(dir: &Path) -> Result<Manifest, ParcelError> {
    Ok(index_dir_cached(dir, &IndexCache::default())?.manifest)
}

/// [`index_dir`], taking from `cache` the entry of every file whose size, mtime, ctime, device
/// and inode are as recorded there, and checking every other file (new or changed). Entries of
/// files no longer in `dir` are dropped from the returned cache.
pub fn index_dir_cached(dir: &Path, cache: &IndexCache) -> Result<Indexed, ParcelError> {
    let mut parcels = Vec::new();
    let mut next = IndexCache::default();
    let (mut checked, mut trusted) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if !name.ends_with(SUFFIX) || name.starts_with('.') || !entry.file_type().at(&path)?.is_file() {
            continue;
        }
        ParcelId::parse(&name)?;
        // Taken before reading: a change during the check shows as a changed stat next time.
        let stat = FileStat::of(&entry.metadata().at(&path)?);
        let parcel = match cache.trusted(&name, &stat) {
            Some(known) => {
                trusted.push(name.clone());
                known.clone()
            }
            None => {
                checked.push(name.clone());
                ManifestParcel::from_info(&inspect(&path)?)
            }
        };
        next.files.insert(name, CachedFile { stat, entry: parcel.clone() });
        parcels.push(parcel);
    }
    parcels.sort_by(|a, b| a.parcel_name.cmp(&b.parcel_name));
    checked.sort();
    trusted.sort();
    let last_updated = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let manifest = Manifest { last_updated, parcels };
    manifest.validate(&show(&dir.join(MANIFEST_FILE)))?;
    Ok(Indexed { manifest, cache: next, checked, trusted })
}
