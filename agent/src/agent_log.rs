//! The agent's own log file, `DATA_DIR/logs/agent.log`, besides stderr: so the
//! manager can read it over the session (`GET /api/v1/hosts/{id}/agent-log`)
//! and diagnostic bundles hold it. Rotated by size ([`MAX_BYTES`] x [`KEEP`])
//! by renaming (`agent.log` -> `agent.log.1` ..) and opening a new file, at an
//! event boundary, so no line is ever split across files. Always plain text
//! without colours, whatever stderr's format: [`line_parser`] reads its time
//! and level.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::files;
use crate::logs::LineParser;
use crate::roles::LogFormat;

/// Rotate at this size.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated copies kept.
pub const KEEP: usize = 5;

/// A size-rotated append-only file; `&RotatingFile` is a [`Write`], so an
/// `Arc<RotatingFile>` is a tracing writer.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    state: Mutex<Option<(File, u64)>>,
}

impl RotatingFile {
    /// Opens (creating `logs/` and the file) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        if let Some(parent) = path.parent() {
            // As private as the data directory it is usually in.
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
        }
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile { path: path.to_path_buf(), max_bytes, keep, state: Mutex::new(Some((file, len))) })
    }

    fn rotate(&self) -> io::Result<(File, u64)> {
        files::shift_rotated(&self.path, self.keep).map_err(io::Error::other)?;
        if self.keep > 0 {
            std::fs::rename(&self.path, files::numbered(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        Ok((open_append(&self.path)?, 0))
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock().map_err(|_| io::Error::other("agent log lock poisoned"))?;
        if let Some((_, len)) = &*state
            && *len > 0
            && *len + buf.len() as u64 > self.max_bytes
        {
            // Drop the old handle first; a failed rotation keeps writing to a
            // reopened file rather than losing the log.
            *state = None;
            *state = Some(self.rotate().or_else(|_| open_append(&self.path).map(|f| (f, 0)))?);
        }
        let (file, len) = match &mut *state {
            Some(s) => s,
            None => {
                *state = Some((open_append(&self.path)?, 0));
                state.as_mut().ok_or_else(|| io::Error::other("agent log not open"))?
            }
        };
        let n = file.write(buf)?;
        *len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The format of tracing's plain text lines:
/// `2026-12-04T03:18:39.123456Z  INFO drover_agent::session: text`.
pub fn log_format() -> LogFormat {
    LogFormat {
        name: "drover-agent".into(),
        pattern: r"^(?P<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)\s+(?P<level>[A-Z]+) ".into(),
        time_format: "%Y-%m-%dT%H:%M:%S%.fZ".into(),
        levels: Default::default(),
    }
}

/// [`log_format`] compiled.
pub fn line_parser() -> LineParser {
    // The pattern is a constant that compiles; the fallback is never taken.
    LineParser::new(&log_format()).unwrap_or_else(|_| unreachable_parser())
}

#[allow(clippy::expect_used)]
fn unreachable_parser() -> LineParser {
    LineParser::new(&LogFormat { pattern: "^$".into(), ..LogFormat::default() }).expect("trivial pattern")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Level;

    #[test]
    fn the_file_rotates_at_event_boundaries() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("logs/agent.log");
        let log = RotatingFile::open(&path, 20, 2).expect("open");
        for i in 0..5 {
            (&log).write_all(format!("event number {i}\n").as_bytes()).expect("write");
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "event number 4\n");
        assert_eq!(read(files::numbered(&path, 1)), "event number 3\n");
        assert_eq!(read(files::numbered(&path, 2)), "event number 2\n");
        assert!(!files::numbered(&path, 3).exists());
    }

    #[test]
    fn its_lines_parse() {
        let h = line_parser().parse(b"2026-12-04T03:18:39.123456Z  WARN drover_agent::session: x").expect("header");
        assert_eq!(h.level, Some(Level::Warn));
        assert_eq!(h.time_unix_ms, Some(1_796_354_319_123));
    }
}
