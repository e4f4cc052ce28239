//! The role directories on disk: `DATA/roles/<role_id>/` holds the role's config
//! files (written atomically, with `${ROLE_DIR}` replaced by the directory's
//! absolute path and `${PARCELS_ROOT}` by the parcels directory's) and
//! `logs/stdout.log` and `logs/stderr.log`, the process's stdout and stderr,
//! each rotated by size to `.1` .. `.N` (the role spec's `log`, else 10 MiB x 5).
//!
//! Logs are written by the process itself to a file opened in append mode, not
//! through a pipe to the agent: a pipe would break (SIGPIPE) the moment the agent
//! restarts, and processes must outlive the agent. Rotation is therefore
//! copy-then-truncate, done by the agent while the process runs; a few bytes
//! written between the copy and the truncation can be lost.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::roles::{self, ConfigFile, PARCELS_ROOT_PLACEHOLDER, ROLE_DIR_PLACEHOLDER};

/// Subdirectory of the data directory holding one directory per role.
pub const ROLES_DIR: &str = "roles";
/// Subdirectory of the data directory where new files wait for their config
/// check, one directory per check; emptied when the supervisor starts.
pub const STAGING_DIR: &str = "staging";
/// The process's stdout, relative to the role directory.
pub const LOG_FILE: &str = "logs/stdout.log";
/// The process's stdout, relative to the role directory (= [`LOG_FILE`]).
pub const STDOUT_LOG: &str = LOG_FILE;
/// The process's stderr, relative to the role directory.
pub const STDERR_LOG: &str = "logs/stderr.log";
/// Mode of config files sent with mode 0.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Invalid(String),
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FilesError + 'a {
    move |source| FilesError::Io { action, path: path.to_owned(), source }
}

/// `root/roles/<role_id>`, after checking that the id is a plain name.
pub fn role_dir(root: &Path, role_id: &str) -> Result<PathBuf, FilesError> {
    roles::check_role_id(role_id).map_err(FilesError::Invalid)?;
    Ok(root.join(ROLES_DIR).join(role_id))
}

/// Replaces every `${ROLE_DIR}` in `text` with `dir`.
pub fn substitute(text: &str, dir: &Path) -> String {
    text.replace(ROLE_DIR_PLACEHOLDER, &dir.to_string_lossy())
}

/// Replaces every `${PARCELS_ROOT}` in `text` with `root`; without a parcels
/// directory the text is left as it is.
pub fn substitute_parcels_root(text: &str, root: Option<&Path>) -> String {
    match root {
        Some(root) => text.replace(PARCELS_ROOT_PLACEHOLDER, &root.to_string_lossy()),
        None => text.to_owned(),
    }
}

/// `${PARCELS_ROOT}` (when there is a parcels directory), then `${ROLE_DIR}`.
pub fn substitute_all(text: &str, dir: &Path, parcels_root: Option<&Path>) -> String {
    substitute(&substitute_parcels_root(text, parcels_root), dir)
}

fn replace_bytes(content: &[u8], needle: &str, with: &Path) -> Vec<u8> {
    let needle = needle.as_bytes();
    let with = with.as_os_str().as_encoded_bytes();
    let mut out = Vec::with_capacity(content.len());
    let mut rest = content;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn substitute_bytes(content: &[u8], dir: &Path, parcels_root: Option<&Path>) -> Vec<u8> {
    let content = match parcels_root {
        Some(root) => replace_bytes(content, PARCELS_ROOT_PLACEHOLDER, root),
        None => content.to_vec(),
    };
    replace_bytes(&content, ROLE_DIR_PLACEHOLDER, dir)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn ensure_dir(dir: &Path) -> Result<(), FilesError> {
    // Nearly always there already: one stat instead of a refused mkdir and a stat.
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o750).create(dir).map_err(io_err("create directory", dir))
}

/// Writes `files` into `dir` (created if missing), each atomically, and returns
/// the sha256 of the bytes written, by path. Files whose content does not match
/// the sha256 they came with are refused before anything is written.
pub fn write_files(dir: &Path, files: &[ConfigFile]) -> Result<BTreeMap<String, String>, FilesError> {
    write_files_with(dir, files, None)
}

/// [`write_files`], also replacing `${PARCELS_ROOT}` with `parcels_root` when given.
pub fn write_files_with(
    dir: &Path,
    files: &[ConfigFile],
    parcels_root: Option<&Path>,
) -> Result<BTreeMap<String, String>, FilesError> {
    check_files(files)?;
    ensure_dir(dir)?;
    ensure_dir(&dir.join("logs"))?;
    let mut hashes = BTreeMap::new();
    for f in files {
        let content = substitute_bytes(&f.content, dir, parcels_root);
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent().filter(|p| *p != dir) {
            ensure_dir(parent)?;
        }
        let mode = file_mode(f);
        write_atomic(&path, &content, mode)?;
        hashes.insert(f.path.clone(), sha256_hex(&content));
    }
    Ok(hashes)
}

/// Writes `files` into `stage` (replacing whatever was there) with the bytes
/// [`write_files_with`] would write into `role_dir`: `${ROLE_DIR}` becomes
/// `role_dir`, not `stage`, so the files checked are the files installed.
/// `role_dir` is created (empty) if missing, for checks that open paths in
/// it. The same refusals as [`write_files`], before anything is written.
pub fn stage_files(
    stage: &Path,
    role_dir: &Path,
    files: &[ConfigFile],
    parcels_root: Option<&Path>,
) -> Result<(), FilesError> {
    check_files(files)?;
    remove_dir(stage)?;
    ensure_dir(stage)?;
    ensure_dir(role_dir)?;
    for f in files {
        let content = substitute_bytes(&f.content, role_dir, parcels_root);
        let path = stage.join(&f.path);
        if let Some(parent) = path.parent() {
            ensure_dir(parent)?;
        }
        let mode = file_mode(f);
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).map_err(io_err("create", &path))?;
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("set the mode of", &path))?;
        file.write_all(&content).map_err(io_err("write", &path))?;
    }
    Ok(())
}

/// The refusals shared by [`write_files_with`] and [`stage_files`], made
/// before anything is written: a path outside the role directory, or content
/// that does not match its sha256.
fn check_files(files: &[ConfigFile]) -> Result<(), FilesError> {
    for f in files {
        roles::check_file_path(&f.path).map_err(FilesError::Invalid)?;
        if !f.sha256.is_empty() && !f.sha256.eq_ignore_ascii_case(&sha256_hex(&f.content)) {
            return Err(FilesError::Invalid(format!(
                "config file {:?} does not match its sha256; the manager must resend it",
                f.path
            )));
        }
    }
    Ok(())
}

/// The permission bits a file is written with (0: the default).
fn file_mode(f: &ConfigFile) -> u32 {
    if f.mode == 0 { DEFAULT_FILE_MODE } else { f.mode & 0o7777 }
}

/// Temporary file next to `path`, fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), FilesError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.drover-tmp"));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync directory", dir))
}

/// Removes a role directory and everything in it; a missing one is fine.
pub fn remove_dir(dir: &Path) -> Result<(), FilesError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// Opens the role's stdout and stderr logs for appending (creating `logs/`).
pub fn open_logs(dir: &Path) -> Result<(File, File), FilesError> {
    Ok((open_log_file(dir, STDOUT_LOG)?, open_log_file(dir, STDERR_LOG)?))
}

/// Opens the role's stdout log for appending (creating `logs/`).
pub fn open_log(dir: &Path) -> Result<File, FilesError> {
    open_log_file(dir, STDOUT_LOG)
}

fn open_log_file(dir: &Path, name: &str) -> Result<File, FilesError> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    OpenOptions::new().append(true).create(true).mode(0o640).open(&path).map_err(io_err("open log", &path))
}

/// Log rotation: at `max_bytes`, `stdout.log` is copied to `stdout.log.1`
/// (older copies shift up to `.keep`, the oldest is dropped) and truncated;
/// `stderr.log` likewise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotation {
    pub max_bytes: u64,
    pub keep: usize,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation { max_bytes: 10 * 1024 * 1024, keep: 5 }
    }
}

impl LogRotation {
    /// The role spec's rotation, its zeros replaced by `self`'s figures.
    pub fn with_spec(self, spec: &roles::LogSpec) -> LogRotation {
        LogRotation {
            max_bytes: if spec.max_bytes == 0 { self.max_bytes } else { spec.max_bytes },
            keep: if spec.max_files == 0 { self.keep } else { spec.max_files as usize },
        }
    }
}

/// Rotates the role's stdout and stderr logs if they reached the limit;
/// returns whether one was.
pub fn rotate_log(dir: &Path, rotation: LogRotation) -> Result<bool, FilesError> {
    let out = rotate_file(&dir.join(STDOUT_LOG), rotation)?;
    let err = rotate_file(&dir.join(STDERR_LOG), rotation)?;
    Ok(out || err)
}

/// Rotates one log file by copy-then-truncate if it reached the limit (its
/// writer keeps appending to the same file); returns whether it did.
pub fn rotate_file(path: &Path, rotation: LogRotation) -> Result<bool, FilesError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if len < rotation.max_bytes || rotation.keep == 0 {
        return Ok(false);
    }
    shift_rotated(path, rotation.keep)?;
    fs::copy(path, numbered(path, 1)).map_err(io_err("copy", path))?;
    // The process appends (O_APPEND), so after truncation it writes at the start.
    OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(0)).map_err(io_err("truncate", path))?;
    Ok(true)
}

/// `path.n`, a rotated copy of `path`.
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Drops `path.keep` and renames `path.n` to `path.n+1` for n < keep, making
/// room for a new `path.1`.
pub fn shift_rotated(path: &Path, keep: usize) -> Result<(), FilesError> {
    let _ = fs::remove_file(numbered(path, keep));
    for n in (1..keep).rev() {
        match fs::rename(numbered(path, n), numbered(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("rotate", &numbered(path, n))(e)),
            _ => {}
        }
    }
    Ok(())
}

/// The last `n` lines of each of the role's stdout and stderr logs (reading
/// at most the last 64 KiB of each): stdout's, then stderr's marked
/// `[stderr] `.
pub fn log_tail(dir: &Path, n: usize) -> Vec<String> {
    let mut lines = file_tail(&dir.join(STDOUT_LOG), n);
    lines.extend(file_tail(&dir.join(STDERR_LOG), n).into_iter().map(|l| format!("[stderr] {l}")));
    lines
}

fn file_tail(path: &Path, n: usize) -> Vec<String> {
    let read = || -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    };
    let Ok(buf) = read() else { return Vec::new() };
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| (*l).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> ConfigFile {
        ConfigFile { path: path.into(), content: content.into(), sha256: sha256_hex(content.as_bytes()), mode: 0 }
    }

    #[test]
    fn files_are_written_with_role_dir_substituted_and_hashed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = role_dir(tmp.path(), "r1").expect("dir");
        let mut secret = file("conf/secret", "pw");
        secret.mode = 0o600;
        let hashes =
            write_files(&dir, &[file("a.conf", "dir ${ROLE_DIR}/data and ${ROLE_DIR}\n"), secret]).expect("write");
        let a = fs::read_to_string(dir.join("a.conf")).expect("read");
        assert_eq!(a, format!("dir {0}/data and {0}\n", dir.display()));
        assert_eq!(hashes["a.conf"], sha256_hex(a.as_bytes()), "hash of what is on disk");
        let mode = |p: &str| fs::metadata(dir.join(p)).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!((mode("a.conf"), mode("conf/secret")), (0o644, 0o600));
        assert!(dir.join("logs").is_dir());
        let names: Vec<_> = fs::read_dir(&dir).expect("ls").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 3, "no temporary files left: {names:?}");
    }

    #[test]
    fn parcels_root_is_substituted_when_there_is_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = role_dir(tmp.path(), "r1").expect("dir");
        let root = tmp.path().join("parcels");
        let text = "bin ${PARCELS_ROOT}/redis/bin in ${ROLE_DIR}\n";
        write_files_with(&dir, &[file("a.conf", text)], Some(&root)).expect("write");
        let a = fs::read_to_string(dir.join("a.conf")).expect("read");
        assert_eq!(a, format!("bin {}/redis/bin in {}\n", root.display(), dir.display()));
        assert_eq!(
            substitute_all("${PARCELS_ROOT}:${ROLE_DIR}", &dir, None),
            format!("${{PARCELS_ROOT}}:{}", dir.display())
        );
        assert_eq!(substitute_parcels_root("${PARCELS_ROOT}/x", Some(&root)), format!("{}/x", root.display()));
    }

    #[test]
    fn bad_files_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("r");
        let mut corrupt = file("b", "x");
        corrupt.sha256 = sha256_hex(b"y");
        for bad in [vec![file("ok", "1"), corrupt], vec![file("ok", "1"), file("../escape", "2")]] {
            let err = write_files(&dir, &bad).expect_err("refused");
            assert!(matches!(err, FilesError::Invalid(_)), "{err}");
            assert!(!dir.exists());
        }
        assert!(role_dir(tmp.path(), "../x").is_err());
    }

    #[test]
    fn staged_files_are_the_bytes_the_role_directory_would_get() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = role_dir(tmp.path(), "r1").expect("dir");
        let stage = tmp.path().join(STAGING_DIR).join("r1.1");
        let root = tmp.path().join("parcels");
        let mut secret = file("conf/secret", "pw in ${ROLE_DIR}");
        secret.mode = 0o600;
        let files = [file("a.conf", "dir ${ROLE_DIR} bin ${PARCELS_ROOT}/x\n"), secret];
        std::fs::create_dir_all(stage.join("old")).expect("leftover");
        stage_files(&stage, &dir, &files, Some(&root)).expect("stage");
        assert!(!stage.join("old").exists(), "the staging directory starts empty");
        assert!(dir.is_dir(), "the role directory exists for the check");
        assert_eq!(fs::read_dir(&dir).expect("ls").count(), 0, "and nothing is written into it");
        write_files_with(&dir, &files, Some(&root)).expect("write");
        for f in ["a.conf", "conf/secret"] {
            assert_eq!(fs::read(stage.join(f)).expect("staged"), fs::read(dir.join(f)).expect("live"), "{f}");
        }
        let mode = fs::metadata(stage.join("conf/secret")).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
        let err = stage_files(&stage, &dir, &[file("../x", "1")], None).expect_err("refused");
        assert!(matches!(err, FilesError::Invalid(_)), "{err}");
    }

    #[test]
    fn logs_rotate_by_size_and_keep_a_bounded_number() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let rotation = LogRotation { max_bytes: 10, keep: 2 };
        let mut log = open_log(dir).expect("open");
        assert!(!rotate_log(dir, rotation).expect("rotate"), "empty log stays");
        for round in 0..4 {
            writeln!(log, "round {round} line").expect("write");
            assert!(rotate_log(dir, rotation).expect("rotate"));
        }
        writeln!(log, "after").expect("write");
        let read = |s: &str| fs::read_to_string(dir.join(format!("{LOG_FILE}{s}"))).unwrap_or_default();
        assert_eq!(read(""), "after\n", "the writer continues at the start of the truncated file");
        assert_eq!(read(".1"), "round 3 line\n");
        assert_eq!(read(".2"), "round 2 line\n");
        assert!(!dir.join(format!("{LOG_FILE}.3")).exists());
        assert_eq!(log_tail(dir, 5), ["after"]);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut log = open_log(tmp.path()).expect("open");
        for i in 0..30 {
            writeln!(log, "line {i}").expect("write");
        }
        let tail = log_tail(tmp.path(), 20);
        assert_eq!((tail.len(), tail[0].as_str(), tail[19].as_str()), (20, "line 10", "line 29"));
        assert!(log_tail(&tmp.path().join("missing"), 20).is_empty());
    }

    #[test]
    fn stderr_is_apart_rotated_and_marked_in_the_tail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let (mut out, mut err) = open_logs(dir).expect("open");
        writeln!(out, "to stdout").expect("write");
        writeln!(err, "to stderr, a long line").expect("write");
        assert_eq!(fs::read_to_string(dir.join(STDOUT_LOG)).expect("read"), "to stdout\n");
        assert_eq!(log_tail(dir, 5), ["to stdout", "[stderr] to stderr, a long line"]);
        assert!(rotate_log(dir, LogRotation { max_bytes: 15, keep: 1 }).expect("rotate"));
        assert!(!numbered(&dir.join(STDOUT_LOG), 1).exists(), "stdout is under the limit");
        assert_eq!(fs::read_to_string(numbered(&dir.join(STDERR_LOG), 1)).expect("read"), "to stderr, a long line\n");
        let spec = roles::LogSpec { max_bytes: 0, max_files: 3, format: None };
        assert_eq!(LogRotation::default().with_spec(&spec), LogRotation { max_bytes: 10 * 1024 * 1024, keep: 3 });
    }
}
