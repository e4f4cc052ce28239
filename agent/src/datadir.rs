//! What the agent keeps in its data directory (`--data-dir`), why, and how it is
//! written.
//!
//! | file                 | written               | why it must survive a restart                  |
//! |----------------------|-----------------------|------------------------------------------------|
//! | `key.pem`            | at enrollment         | private key of the client certificate          |
//! | `cert.pem`           | at enrollment         | client certificate naming the host id          |
//! | `ca.pem`             | at enrollment         | the only CA trusted for later sessions         |
//! | `host-id`            | at enrollment, last   | marks a complete identity; names the host      |
//! | `applied-generation` | per new desired state | reported in `Hello` so the manager can resume  |
//!
//! The directory is created with mode 0700 and every file with mode 0600. Files
//! are replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new content, never a torn
//! file. Nothing else is stored: facts and metrics are collected afresh.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::AgentError;

pub const KEY_FILE: &str = "key.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const CA_FILE: &str = "ca.pem";
pub const HOST_ID_FILE: &str = "host-id";
pub const APPLIED_GENERATION_FILE: &str = "applied-generation";

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates the data directory (and its parents) with mode 0700 if it is missing,
/// and checks that it is a writable directory.
pub fn ensure_dir(dir: &Path) -> Result<(), AgentError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| AgentError::io("create data directory", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| AgentError::io("inspect data directory", dir, e))?;
    if !meta.is_dir() {
        return Err(AgentError::Config(format!(
            "data directory {} exists but is not a directory; pass another --data-dir",
            dir.display()
        )));
    }
    Ok(())
}

/// Checks that files can be created in `dir`, by writing and removing a probe.
/// Called before enrolling, so that a read-only directory is reported before the
/// one-time token is spent.
pub fn check_writable(dir: &Path) -> Result<(), AgentError> {
    ensure_dir(dir)?;
    let probe = dir.join(".write-test");
    write_atomic(&probe, b"")?;
    fs::remove_file(&probe).map_err(|e| AgentError::io("remove", &probe, e))
}

/// Replaces `path` with `contents`: temporary file in the same directory with
/// mode 0600, fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| AgentError::Config(format!("not a file path: {}", path.display())))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(&tmp)?;
        // `mode` applies only when the file is created; a stale temporary file
        // from a crash keeps its old mode otherwise.
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(contents)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(AgentError::io("write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| AgentError::io("rename into place", path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| AgentError::io("sync directory", dir, e))
}

/// Reads a file of the data directory; `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, AgentError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io("read", path, e)),
    }
}

/// The generation of the last desired state this host applied, 0 if none was
/// recorded.
pub fn load_applied_generation(dir: &Path) -> Result<u64, AgentError> {
    let path = dir.join(APPLIED_GENERATION_FILE);
    match read_optional(&path)? {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            AgentError::Config(format!(
                "{} does not hold a generation number ({:?}); delete it and the manager will resend the desired state",
                path.display(),
                text.trim()
            ))
        }),
    }
}

/// Records the generation of the last applied desired state.
pub fn save_applied_generation(dir: &Path, generation: u64) -> Result<(), AgentError> {
    write_atomic(&dir.join(APPLIED_GENERATION_FILE), format!("{generation}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn creates_private_directory_and_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        ensure_dir(&dir).expect("ensure_dir");
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("x");
        write_atomic(&file, b"one").expect("write");
        write_atomic(&file, b"two").expect("overwrite");
        assert_eq!(fs::read_to_string(&file).ok().as_deref(), Some("two"));
        assert_eq!(mode(&file), FILE_MODE);
        let leftovers: Vec<_> =
            fs::read_dir(&dir).expect("read_dir").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("x")], "no temporary files left");
    }

    #[test]
    fn stale_temporary_file_does_not_leak_its_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let stale = tmp.path().join(".k.tmp");
        fs::write(&stale, "old").expect("write stale");
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&tmp.path().join("k"), b"new").expect("write");
        assert_eq!(mode(&tmp.path().join("k")), FILE_MODE);
    }

    #[test]
    fn applied_generation_round_trips() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_applied_generation(tmp.path()).ok(), Some(0));
        save_applied_generation(tmp.path(), 42).expect("save");
        assert_eq!(load_applied_generation(tmp.path()).ok(), Some(42));
        fs::write(tmp.path().join(APPLIED_GENERATION_FILE), "garbage").expect("write");
        let err = load_applied_generation(tmp.path()).expect_err("garbage must not parse");
        assert!(err.to_string().contains("delete it"), "{err}");
    }

    #[test]
    fn a_file_in_the_way_of_the_data_dir_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        fs::write(&file, "").expect("write");
        assert!(ensure_dir(&file).is_err());
        assert!(check_writable(tmp.path()).is_ok());
    }
}
