//! Parcel archives: a gzip-compressed tar with one top directory `NAME-VERSION/` holding the
//! software and `meta/parcel.json`.
//!
//! [`build_archive`] writes one reproducibly: the same tree and meta give the same bytes (entries in
//! a fixed order, fixed mtime, owner root:root, normalised modes, gzip header without name or
//! time). [`install`] verifies size and sha256 before extracting, checks every entry (no absolute
//! paths, no `..`, nothing outside the top directory, no link that leaves it, no devices), extracts
//! into `.partial-NAME-VERSION-*` under the parcels root and renames it into place only when the
//! whole archive, its gzip checksum and its meta are good. [`inspect`] runs the same checks without
//! writing anything.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component as PathComponent, Path, PathBuf};

use flate2::Compression;
use flate2::bufread::GzDecoder;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::env::{self, EnvScript};
use crate::meta::{MAX_META_FILE, ParcelMeta};
use crate::name::{ParcelId, parse_dir_name};
use crate::{INSTALLED_MARKER, IoContext, ParcelError, rename_durable, show, sync_parent};

/// gzip level of every parcel. Part of the reproducibility contract: changing it changes every
/// parcel's sha256.
pub const GZIP_LEVEL: u32 = 6;

/// A parcel file written by [`build_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltParcel {
    pub id: ParcelId,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// What the caller knows the archive must be (from a manifest or an upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// A parcel unpacked under a parcels root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledParcel {
    pub meta: ParcelMeta,
    /// `parcels_root/NAME-VERSION`.
    pub dir: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// True when the same archive (same sha256) was already installed and nothing was done.
    pub already_present: bool,
}

/// A parcel file checked by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelInfo {
    pub meta: ParcelMeta,
    pub sha256: String,
    pub size: u64,
}

/// Options of [`build_archive_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// Modification time of every entry, in seconds since the epoch.
    pub mtime: u64,
}

/// [`build_archive_with`] with every mtime 0.
pub fn build_archive(staging: &Path, meta: &ParcelMeta, out_dir: &Path) -> Result<BuiltParcel, ParcelError> {
    build_archive_with(staging, meta, out_dir, &ArchiveOptions::default())
}

/// Writes `out_dir/NAME-VERSION-DISTRO.parcel` from `staging` (the tree that becomes
/// `NAME-VERSION/`) and `meta` (written as `meta/parcel.json`; the staging tree must not have one,
/// but must have the env script `meta/<scripts.defines>`).
///
/// Entries: the top directory, then `meta/` (parcel.json first), then the rest, depth first with
/// siblings sorted by name bytes. Directories 0755, files 0755 if any exec bit is set else 0644,
/// symlinks kept (their targets must stay inside the parcel), hard links stored as copies,
/// anything else refused. The file is written under a temporary name and renamed into place.
pub fn build_archive_with(
    staging: &Path,
    meta: &ParcelMeta,
    out_dir: &Path,
    options: &ArchiveOptions,
) -> Result<BuiltParcel, ParcelError> {
    let id = ParcelId::new(&meta.name, &meta.version, &meta.distro)?;
    let top = id.dir_name();
    meta.validate(&format!("{top}/meta/parcel.json"))?;
    let meta_dir = staging.join("meta");
    if fs::symlink_metadata(meta_dir.join("parcel.json")).is_ok() {
        return Err(ParcelError::Mismatch {
            archive: show(staging),
            message: "meta/parcel.json must not exist in the staging tree: it is written from the meta".into(),
        });
    }
    let script_path = meta_dir.join(&meta.scripts.defines);
    let script = read_limited(&script_path)?;
    let script_text = String::from_utf8(script).map_err(|_| ParcelError::InvalidEnv {
        file: show(&script_path),
        line: 0,
        message: "not utf-8".into(),
    })?;
    env::parse(&script_text, &show(&script_path))?;

    let mut nodes = Vec::new();
    walk(staging, Path::new(""), &mut nodes)?;
    // meta/ first, parcel.json first within it, so readers find the meta early.
    let (mut meta_nodes, rest): (Vec<_>, Vec<_>) = nodes
        .into_iter()
        .partition(|(rel, _)| rel.components().next() == Some(PathComponent::Normal(OsStr::new("meta"))));
    let meta_json = meta.to_json();
    meta_nodes.insert(1.min(meta_nodes.len()), (PathBuf::from("meta/parcel.json"), Node::Memory(meta_json)));

    fs::create_dir_all(out_dir).at(out_dir)?;
    let final_path = out_dir.join(id.file_name());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", id.file_name()))
        .suffix(".tmp")
        .tempfile_in(out_dir)
        .at(out_dir)?;
    let out_file = tmp.as_file().try_clone().at(tmp.path())?;
    let hashing = HashingWriter { inner: BufWriter::new(out_file), hasher: Sha256::new(), count: 0 };
    let gz = flate2::GzBuilder::new().mtime(0).operating_system(255).write(hashing, Compression::new(GZIP_LEVEL));
    let mut tar = tar::Builder::new(gz);
    let mtime = options.mtime;
    let tar_err = |e: io::Error| ParcelError::io(&final_path, e);

    let mut header = base_header(EntryType::Directory, 0o755, 0, mtime);
    tar.append_data(&mut header, format!("{top}/"), io::empty()).map_err(tar_err)?;
    for (rel, node) in meta_nodes.iter().chain(rest.iter()) {
        let mut path = Path::new(&top).join(rel).into_os_string();
        match node {
            Node::Dir => {
                path.push("/");
                let mut h = base_header(EntryType::Directory, 0o755, 0, mtime);
                tar.append_data(&mut h, &path, io::empty()).map_err(tar_err)?;
            }
            Node::File { exec } => {
                let src = staging.join(rel);
                let file = File::open(&src).at(&src)?;
                let size = file.metadata().at(&src)?.len();
                let mode = if *exec { 0o755 } else { 0o644 };
                let mut h = base_header(EntryType::Regular, mode, size, mtime);
                let mut reader = ExactReader { inner: file.take(size), left: size };
                tar.append_data(&mut h, &path, &mut reader).map_err(|e| ParcelError::io(&src, e))?;
            }
            Node::Memory(bytes) => {
                let mut h = base_header(EntryType::Regular, 0o644, bytes.len() as u64, mtime);
                tar.append_data(&mut h, &path, bytes.as_slice()).map_err(tar_err)?;
            }
            Node::Symlink(target) => {
                let comps: Vec<&OsStr> = rel.iter().collect();
                check_link_target(&comps, target).map_err(|reason| ParcelError::UnsafeEntry {
                    archive: show(staging),
                    entry: rel.display().to_string(),
                    reason,
                })?;
                let mut h = base_header(EntryType::Symlink, 0o777, 0, mtime);
                tar.append_link(&mut h, &path, target).map_err(tar_err)?;
            }
        }
    }
    let gz = tar.into_inner().map_err(tar_err)?;
    let hashing = gz.finish().map_err(tar_err)?;
    let HashingWriter { mut inner, hasher, count } = hashing;
    inner.flush().map_err(tar_err)?;
    drop(inner);
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(tar_err)?;
    tmp.as_file().sync_all().map_err(tar_err)?;
    tmp.persist(&final_path).map_err(|e| ParcelError::io(&final_path, e.error))?;
    sync_parent(&final_path)?;
    Ok(BuiltParcel { id, path: final_path, sha256: hex::encode(hasher.finalize()), size: count })
}

enum Node {
    Dir,
    File { exec: bool },
    Symlink(PathBuf),
    Memory(Vec<u8>),
}

/// Depth first, siblings sorted by name bytes, directories before their contents.
fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Node)>) -> Result<(), ParcelError> {
    let dir = root.join(rel);
    let mut names: Vec<OsString> =
        fs::read_dir(&dir).at(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>().at(&dir)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let md = fs::symlink_metadata(&path).at(&path)?;
        let ft = md.file_type();
        if ft.is_dir() {
            out.push((rel.clone(), Node::Dir));
            walk(root, &rel, out)?;
        } else if ft.is_file() {
            out.push((rel, Node::File { exec: md.permissions().mode() & 0o111 != 0 }));
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).at(&path)?;
            out.push((rel, Node::Symlink(target)));
        } else {
            return Err(ParcelError::UnsafeEntry {
                archive: show(root),
                entry: rel.display().to_string(),
                reason: "not a file, directory or symlink (devices, fifos and sockets cannot go in a parcel)".into(),
            });
        }
    }
    Ok(())
}

fn base_header(kind: EntryType, mode: u32, size: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    // "root" fits the 32-byte fields, so these cannot fail.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// Fails instead of returning fewer bytes than the header promised (a file shrinking while read).
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being archived"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Streams a file through sha256: `(hex, size)`.
pub fn hash_file(path: &Path) -> Result<(String, u64), ParcelError> {
    let file = File::open(path).at(path)?;
    let mut r = HashingReader { inner: file, hasher: Sha256::new(), count: 0 };
    io::copy(&mut r, &mut io::sink()).at(path)?;
    Ok((hex::encode(r.hasher.finalize()), r.count))
}

fn read_limited(path: &Path) -> Result<Vec<u8>, ParcelError> {
    let file = File::open(path).at(path)?;
    let mut out = Vec::new();
    file.take(MAX_META_FILE + 1).read_to_end(&mut out).at(path)?;
    if out.len() as u64 > MAX_META_FILE {
        return Err(ParcelError::Mismatch {
            archive: show(path),
            message: format!("larger than {MAX_META_FILE} bytes"),
        });
    }
    Ok(out)
}

/// Checks a symlink target: relative, `..` only as leading components, and not climbing above
/// the parcel's top directory from the link's own directory. `link` is the link's path inside the
/// top directory, as components. Leading `..` climb real directories (no entry is ever written
/// below a symlink), so a target that passes cannot leave the parcel through other links either.
pub fn check_link_target(link: &[&OsStr], target: &Path) -> Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("empty symlink target".into());
    }
    let depth = link.len().saturating_sub(1);
    let mut up = 0usize;
    let mut down = false;
    for c in target.components() {
        match c {
            PathComponent::RootDir | PathComponent::Prefix(_) => {
                return Err(format!("symlink target {} is absolute and leaves the parcel directory", target.display()));
            }
            PathComponent::CurDir => {}
            PathComponent::ParentDir if down => {
                return Err(format!("symlink target {} has `..` after a directory name", target.display()));
            }
            PathComponent::ParentDir => {
                up += 1;
                if up > depth {
                    return Err(format!("symlink target {} leaves the parcel directory", target.display()));
                }
            }
            PathComponent::Normal(_) => down = true,
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

struct Scanned {
    meta: ParcelMeta,
    sha256: String,
    size: u64,
}

/// Reads the whole archive, checking every entry, and extracts it into `dest` (which stands for
/// the top directory) when given. Returns the validated meta and the file's sha256 and size.
fn scan(path: &Path, file_id: Option<&ParcelId>, dest: Option<&Path>) -> Result<Scanned, ParcelError> {
    let label = show(path);
    let corrupt = |e: io::Error| ParcelError::Corrupt { archive: label.clone(), message: e.to_string() };
    let file = File::open(path).at(path)?;
    let hashing = HashingReader { inner: file, hasher: Sha256::new(), count: 0 };
    let gz = GzDecoder::new(BufReader::with_capacity(64 * 1024, hashing));
    let mut archive = tar::Archive::new(gz);
    let mut state = ScanState {
        label: label.clone(),
        expected_top: file_id.map(ParcelId::dir_name),
        top: None,
        seen: HashMap::new(),
        meta_files: BTreeMap::new(),
        dest,
    };
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        state.entry(entry)?;
    }
    // Read to the end of the gzip stream (its CRC and length are checked there), then make sure
    // nothing follows it.
    let mut gz = archive.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(corrupt)?;
    let mut buffered = gz.into_inner();
    let trailing = io::copy(&mut buffered, &mut io::sink()).at(path)?;
    if trailing != 0 {
        return Err(ParcelError::Corrupt {
            archive: label,
            message: format!("{trailing} bytes of unexpected data after the gzip stream"),
        });
    }
    let hashing = buffered.into_inner();
    let sha256 = hex::encode(hashing.hasher.finalize());
    let size = hashing.count;

    let top = state
        .top
        .clone()
        .ok_or_else(|| ParcelError::Corrupt { archive: label.clone(), message: "empty archive".into() })?;
    let meta_bytes =
        state.meta_files.get("parcel.json").ok_or_else(|| ParcelError::MissingMeta { archive: label.clone() })?;
    let meta = ParcelMeta::parse(meta_bytes, &format!("{label}: {top}/meta/parcel.json"))?;
    if meta.dir_name() != top {
        return Err(ParcelError::Mismatch {
            archive: label,
            message: format!("meta/parcel.json names {} {} but the top directory is {top}/", meta.name, meta.version),
        });
    }
    if let Some(id) = file_id
        && (id.name != meta.name || id.version != meta.version || id.distro != meta.distro)
    {
        return Err(ParcelError::Mismatch {
            archive: label,
            message: format!(
                "the file name says {} {} {} but meta/parcel.json says {} {} {}",
                id.name, id.version, id.distro, meta.name, meta.version, meta.distro
            ),
        });
    }
    let script_name = &meta.scripts.defines;
    let script_label = format!("{label}: {top}/meta/{script_name}");
    let script = state.meta_files.get(script_name.as_str()).ok_or_else(|| ParcelError::InvalidMeta {
        file: format!("{label}: {top}/meta/parcel.json"),
        field: "scripts.defines".into(),
        message: format!("meta/{script_name} is not a regular file in the archive"),
    })?;
    let text = std::str::from_utf8(script).map_err(|_| ParcelError::InvalidEnv {
        file: script_label.clone(),
        line: 0,
        message: "not utf-8".into(),
    })?;
    env::parse(text, &script_label)?;
    Ok(Scanned { meta, sha256, size })
}

struct ScanState<'a> {
    label: String,
    expected_top: Option<String>,
    top: Option<String>,
    seen: HashMap<PathBuf, Kind>,
    /// Regular files directly in `meta/`, by name.
    meta_files: BTreeMap<String, Vec<u8>>,
    dest: Option<&'a Path>,
}

impl ScanState<'_> {
    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> ParcelError {
        ParcelError::UnsafeEntry { archive: self.label.clone(), entry: entry.to_owned(), reason: reason.into() }
    }

    /// Splits an archive path into the components below the top directory, checking it.
    fn inside(&mut self, raw: &[u8], shown: &str) -> Result<Vec<OsString>, ParcelError> {
        if raw.first() == Some(&b'/') {
            return Err(self.unsafe_entry(shown, "absolute path"));
        }
        let mut comps = Vec::new();
        for c in Path::new(OsStr::from_bytes(raw)).components() {
            match c {
                PathComponent::Normal(n) => comps.push(n.to_os_string()),
                PathComponent::CurDir => {}
                PathComponent::ParentDir => return Err(self.unsafe_entry(shown, "path contains `..`")),
                PathComponent::RootDir | PathComponent::Prefix(_) => {
                    return Err(self.unsafe_entry(shown, "absolute path"));
                }
            }
        }
        let Some(first) = comps.first() else {
            return Err(self.unsafe_entry(shown, "empty path"));
        };
        let first = first.to_string_lossy().into_owned();
        match &self.top {
            Some(top) if *top != first => {
                return Err(self.unsafe_entry(
                    shown,
                    format!("outside the top directory {top}/ (a parcel has exactly one top directory)"),
                ));
            }
            Some(_) => {}
            None => {
                if let Some(expected) = &self.expected_top
                    && *expected != first
                {
                    return Err(self
                        .unsafe_entry(shown, format!("the top directory must be {expected}/ to match the file name")));
                }
                if let Err(e) = parse_dir_name(&first) {
                    return Err(self.unsafe_entry(shown, format!("top directory is not NAME-VERSION: {e}")));
                }
                self.top = Some(first);
            }
        }
        comps.remove(0);
        Ok(comps)
    }

    /// Makes sure every ancestor of `rel` is a directory, creating the missing ones.
    fn parents(&mut self, rel: &Path, shown: &str) -> Result<(), ParcelError> {
        let mut acc = PathBuf::new();
        let parent_comps: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
        for c in parent_comps {
            acc.push(c);
            match self.seen.get(&acc) {
                Some(Kind::Dir) => {}
                Some(_) => {
                    return Err(self.unsafe_entry(shown, format!("parent {} is not a directory", acc.display())));
                }
                None => {
                    if let Some(dest) = self.dest {
                        let p = dest.join(&acc);
                        fs::create_dir(&p).at(&p)?;
                        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).at(&p)?;
                    }
                    self.seen.insert(acc.clone(), Kind::Dir);
                }
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ParcelError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let comps = self.inside(&raw, &shown)?;
        let rel: PathBuf = comps.iter().collect();
        if comps.is_empty() {
            return if kind == EntryType::Directory {
                if self.seen.insert(PathBuf::new(), Kind::Dir).is_some() {
                    Err(self.unsafe_entry(&shown, "duplicate entry"))
                } else {
                    Ok(())
                }
            } else {
                Err(self.unsafe_entry(&shown, "a parcel has exactly one top directory; this is not a directory"))
            };
        }
        if comps.len() == 1 && comps[0] == INSTALLED_MARKER {
            return Err(self.unsafe_entry(&shown, format!("{INSTALLED_MARKER} is reserved for drover")));
        }
        if self.seen.get(&rel).is_some_and(|k| *k != Kind::Dir || kind != EntryType::Directory) {
            return Err(self.unsafe_entry(&shown, "duplicate entry"));
        }
        self.parents(&rel, &shown)?;
        let dest = self.dest.map(|d| d.join(&rel));
        let in_meta = comps.len() == 2 && comps[0] == "meta";
        match kind {
            EntryType::Directory => {
                if let Some(p) = &dest
                    && !self.seen.contains_key(&rel)
                {
                    fs::create_dir(p).at(p)?;
                    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).at(p)?;
                }
                self.seen.insert(rel, Kind::Dir);
            }
            EntryType::Regular => {
                let size = entry.size();
                let mode = entry.header().mode().map_err(|e| self.unsafe_entry(&shown, format!("bad mode: {e}")))?;
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut keep = None;
                if in_meta {
                    if size > MAX_META_FILE {
                        return Err(self.unsafe_entry(&shown, format!("meta file larger than {MAX_META_FILE} bytes")));
                    }
                    let mut buf = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut buf).map_err(|e| self.corrupt(&shown, e))?;
                    keep = Some(buf);
                }
                let written = match (&dest, &keep) {
                    (Some(p), Some(buf)) => {
                        let mut f = create_file(p, mode)?;
                        f.write_all(buf).at(p)?;
                        f.sync_all().at(p)?;
                        buf.len() as u64
                    }
                    (Some(p), None) => {
                        let mut f = create_file(p, mode)?;
                        let n = io::copy(&mut entry, &mut f).map_err(|e| self.corrupt(&shown, e))?;
                        f.sync_all().at(p)?;
                        n
                    }
                    (None, Some(buf)) => buf.len() as u64,
                    (None, None) => io::copy(&mut entry, &mut io::sink()).map_err(|e| self.corrupt(&shown, e))?,
                };
                if written != size {
                    return Err(ParcelError::Corrupt {
                        archive: self.label.clone(),
                        message: format!("entry {shown:?}: {written} of {size} bytes (truncated)"),
                    });
                }
                if let Some(buf) = keep {
                    self.meta_files.insert(comps[1].to_string_lossy().into_owned(), buf);
                }
                self.seen.insert(rel, Kind::File);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| PathBuf::from(OsStr::from_bytes(&t)))
                    .ok_or_else(|| self.unsafe_entry(&shown, "symlink without a target"))?;
                let link: Vec<&OsStr> = comps.iter().map(OsString::as_os_str).collect();
                check_link_target(&link, &target).map_err(|reason| self.unsafe_entry(&shown, reason))?;
                if let Some(p) = &dest {
                    std::os::unix::fs::symlink(&target, p).at(p)?;
                }
                self.seen.insert(rel, Kind::Symlink);
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.unsafe_entry(&shown, "hard link without a target"))?;
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let target_comps = self.inside(&target, &target_shown).map_err(|e| match e {
                    ParcelError::UnsafeEntry { reason, .. } => {
                        self.unsafe_entry(&shown, format!("hard link target {target_shown:?}: {reason}"))
                    }
                    other => other,
                })?;
                let target_rel: PathBuf = target_comps.iter().collect();
                if self.seen.get(&target_rel) != Some(&Kind::File) {
                    return Err(self.unsafe_entry(
                        &shown,
                        format!("hard link target {target_shown:?} is not a regular file earlier in the archive"),
                    ));
                }
                if let (Some(p), Some(d)) = (&dest, self.dest) {
                    let src = d.join(&target_rel);
                    fs::hard_link(&src, p).at(p)?;
                }
                self.seen.insert(rel, Kind::File);
            }
            other => {
                return Err(self.unsafe_entry(
                    &shown,
                    format!("unsupported entry type {other:?} (only files, directories and links are allowed)"),
                ));
            }
        }
        Ok(())
    }

    fn corrupt(&self, entry: &str, e: io::Error) -> ParcelError {
        ParcelError::Corrupt { archive: self.label.clone(), message: format!("entry {entry:?}: {e}") }
    }
}

fn create_file(path: &Path, mode: u32) -> Result<File, ParcelError> {
    let f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).at(path)?;
    // The umask may have cleared bits; set the normalised mode exactly.
    f.set_permissions(fs::Permissions::from_mode(mode)).at(path)?;
    Ok(f)
}

fn file_id(path: &Path) -> Option<ParcelId> {
    path.file_name().and_then(|n| n.to_str()).and_then(|n| ParcelId::parse(n).ok())
}

/// Reads and checks a parcel file without writing anything: every entry, the gzip checksum,
/// `meta/parcel.json` (against the top directory and, when the file is named
/// `NAME-VERSION-DISTRO.parcel`, the file name) and the env script. One streamed pass.
pub fn inspect(path: &Path) -> Result<ParcelInfo, ParcelError> {
    let s = scan(path, file_id(path).as_ref(), None)?;
    Ok(ParcelInfo { meta: s.meta, sha256: s.sha256, size: s.size })
}

/// Installs a parcel file under `parcels_root` as `NAME-VERSION/`.
///
/// Size and sha256 are checked against `expected` (streamed) before anything is extracted. The
/// archive is extracted into `parcels_root/.partial-NAME-VERSION-<random>/` with every entry
/// checked, then `.drover-sha256` is written in it and it is renamed to `NAME-VERSION`. On any
/// error the partial directory is deleted. If `NAME-VERSION` already exists with the same sha256
/// recorded, nothing is done (`already_present`); with another or none, it is an error.
pub fn install(
    archive: &Path,
    expected: Option<&Expected>,
    parcels_root: &Path,
) -> Result<InstalledParcel, ParcelError> {
    let label = show(archive);
    let id = file_id(archive);
    let (sha256, size) = hash_file(archive)?;
    if let Some(exp) = expected {
        if size != exp.size {
            return Err(ParcelError::SizeMismatch { archive: label, expected: exp.size, actual: size });
        }
        if !sha256.eq_ignore_ascii_case(&exp.sha256) {
            return Err(ParcelError::HashMismatch { archive: label, expected: exp.sha256.clone(), actual: sha256 });
        }
    }
    fs::create_dir_all(parcels_root).at(parcels_root)?;
    if let Some(id) = &id
        && let Some(done) = existing(&parcels_root.join(id.dir_name()), &sha256, size)?
    {
        return Ok(done);
    }
    let prefix = format!(".partial-{}-", id.as_ref().map_or_else(|| "parcel".to_owned(), ParcelId::dir_name));
    let partial = tempfile::Builder::new().prefix(&prefix).tempdir_in(parcels_root).at(parcels_root)?;
    fs::set_permissions(partial.path(), fs::Permissions::from_mode(0o755)).at(partial.path())?;
    let scanned = scan(archive, id.as_ref(), Some(partial.path()))?;
    if scanned.sha256 != sha256 || scanned.size != size {
        return Err(ParcelError::Mismatch {
            archive: label,
            message: "the file changed while it was being installed".into(),
        });
    }
    let final_dir = parcels_root.join(scanned.meta.dir_name());
    if let Some(done) = existing(&final_dir, &sha256, size)? {
        return Ok(done);
    }
    let marker = partial.path().join(INSTALLED_MARKER);
    let mut f = create_file(&marker, 0o644)?;
    f.write_all(format!("{sha256}\n").as_bytes()).at(&marker)?;
    f.sync_all().at(&marker)?;
    drop(f);
    let kept = partial.keep();
    if let Err(e) = rename_durable(&kept, &final_dir) {
        let _ = fs::remove_dir_all(&kept);
        return Err(e);
    }
    Ok(InstalledParcel { meta: scanned.meta, dir: final_dir, sha256, size, already_present: false })
}

/// The install in `dir`, if there is one recorded with `sha256`; an error if `dir` exists otherwise.
fn existing(dir: &Path, sha256: &str, size: u64) -> Result<Option<InstalledParcel>, ParcelError> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(None);
    }
    let recorded = read_marker(dir)?;
    match recorded {
        Some(r) if r == sha256 => {
            let meta = read_installed_meta(dir)?;
            Ok(Some(InstalledParcel { meta, dir: dir.to_path_buf(), sha256: r, size, already_present: true }))
        }
        Some(r) => Err(ParcelError::AlreadyInstalled {
            dir: show(dir),
            message: format!(
                "already installed from another archive (sha256 {r}, this one is {sha256}); remove it first"
            ),
        }),
        None => Err(ParcelError::AlreadyInstalled {
            dir: show(dir),
            message: format!("exists but has no {INSTALLED_MARKER}, so drover did not install it; remove it first"),
        }),
    }
}

/// The sha256 recorded in an installed parcel directory, `None` without a marker.
pub(crate) fn read_marker(dir: &Path) -> Result<Option<String>, ParcelError> {
    let marker = dir.join(INSTALLED_MARKER);
    match fs::read_to_string(&marker) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ParcelError::io(&marker, e)),
    }
}

/// Reads and validates `dir/meta/parcel.json`.
pub(crate) fn read_installed_meta(dir: &Path) -> Result<ParcelMeta, ParcelError> {
    let path = dir.join("meta").join("parcel.json");
    let bytes = read_limited(&path)?;
    ParcelMeta::parse(&bytes, &show(&path))
}

/// Reads and parses the env script of an installed parcel.
pub(crate) fn read_installed_env(dir: &Path, meta: &ParcelMeta) -> Result<EnvScript, ParcelError> {
    let path = dir.join("meta").join(&meta.scripts.defines);
    let bytes = read_limited(&path)?;
    let text = String::from_utf8(bytes).map_err(|_| ParcelError::InvalidEnv {
        file: show(&path),
        line: 0,
        message: "not utf-8".into(),
    })?;
    env::parse(&text, &show(&path))
}
