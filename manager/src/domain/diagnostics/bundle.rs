//! Writing one bundle: a tar.gz whose compressed size never passes the
//! bundle's `max_bytes`. Entries are added one by one; after each the gzip
//! stream is flushed so the bytes written so far are known exactly, and an
//! entry is only added when its uncompressed size (a bound on what it can
//! add) fits in what is left of its section's budget. A log that does not
//! fit keeps its newest lines; anything else that does not fit is skipped
//! and named in the manifest. Hosts' archives are read entry by entry from
//! their temp files, redacted again and re-added under `hosts/<hostname>/`.
//! Synchronous: run it on a blocking thread.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;

use super::redact::Redactor;

/// Entries larger than this are copied as they come (the agent redacted
/// them) instead of being read whole and redacted again.
const IN_MEMORY_MAX: u64 = 16 << 20;
/// What one entry costs beyond its data: header, padding, flush.
const ENTRY_OVERHEAD: u64 = 1024;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub what: String,
    pub reason: String,
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A bundle being written.
pub struct BundleWriter {
    builder: tar::Builder<GzEncoder<Counting<BufWriter<File>>>>,
    limit: u64,
    /// Kept free for the manifest.
    reserve: u64,
    mtime: u64,
    pub files: Vec<FileEntry>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<String>,
    pub truncated: bool,
}

fn is_log(path: &str) -> bool {
    path.contains("/logs/") || path.starts_with("logs/") || path.ends_with(".log") || path.contains(".log.")
}

impl BundleWriter {
    pub fn create(path: &Path, limit: u64, reserve: u64) -> io::Result<BundleWriter> {
        let file = BufWriter::new(File::create(path)?);
        let gz = GzEncoder::new(Counting { inner: file, count: 0 }, Compression::default());
        let mut builder = tar::Builder::new(gz);
        builder.mode(tar::HeaderMode::Deterministic);
        let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(BundleWriter {
            builder,
            limit,
            reserve: reserve.min(limit / 2),
            mtime,
            files: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
            truncated: false,
        })
    }

    /// Compressed bytes written so far (after flushing the gzip stream).
    pub fn written(&mut self) -> io::Result<u64> {
        self.builder.get_mut().flush()?;
        Ok(self.builder.get_ref().get_ref().count)
    }

    /// What may still be added, the manifest's reserve kept.
    pub fn room(&mut self) -> io::Result<u64> {
        Ok(self.limit.saturating_sub(self.reserve).saturating_sub(self.written()?))
    }

    fn header(&self, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(self.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = self.header(data.len() as u64);
        self.builder.append_data(&mut h, path, data)?;
        self.files.push(FileEntry { path: path.to_owned(), bytes: data.len() as u64 });
        Ok(())
    }

    /// Adds `data` at `path` if it fits in `budget` (and the bundle); a log
    /// that does not fit keeps its newest lines. Returns the bytes used.
    pub fn add(&mut self, path: &str, data: &[u8], budget: u64) -> io::Result<u64> {
        let before = self.written()?;
        let room = budget.min(self.limit.saturating_sub(self.reserve).saturating_sub(before));
        let need = data.len() as u64 + ENTRY_OVERHEAD;
        if need <= room {
            self.append(path, data)?;
        } else if is_log(path) && room > ENTRY_OVERHEAD + 512 {
            let keep = (room - ENTRY_OVERHEAD) as usize;
            let mut tail = &data[data.len() - keep..];
            if let Some(nl) = tail.iter().position(|b| *b == b'\n') {
                tail = &tail[nl + 1..];
            }
            self.append(path, tail)?;
            self.truncated = true;
            self.skipped.push(Skipped {
                what: path.to_owned(),
                reason: format!("byte share used: kept the newest {} of {} bytes", tail.len(), data.len()),
            });
        } else {
            self.truncated = true;
            self.skipped.push(Skipped { what: path.to_owned(), reason: "byte share used".into() });
        }
        Ok(self.written()? - before)
    }

    /// Re-adds the entries of a host's tar.gz under `prefix`, redacting
    /// each again, within `budget`. Returns the bytes used.
    pub fn add_host_archive(
        &mut self,
        archive: &Path,
        prefix: &str,
        budget: u64,
        redactor: &mut Redactor,
    ) -> io::Result<u64> {
        let start = self.written()?;
        let mut reader = tar::Archive::new(GzDecoder::new(File::open(archive)?));
        let entries = match reader.entries() {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(format!("{prefix}: the host's archive is unreadable: {e}"));
                return Ok(0);
            }
        };
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.errors.push(format!("{prefix}: the host's archive breaks off: {e}"));
                    break;
                }
            };
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let rel = match entry.path() {
                Ok(p) => p.into_owned(),
                Err(e) => {
                    self.errors.push(format!("{prefix}: an entry with an unreadable name: {e}"));
                    continue;
                }
            };
            let Some(rel) = safe_relative(&rel) else {
                self.errors.push(format!("{prefix}: entry {} skipped: not a plain relative path", rel.display()));
                continue;
            };
            let path = format!("{prefix}/{}", rel.display());
            let used = self.written()? - start;
            let left = budget.saturating_sub(used);
            let size = entry.size();
            if size <= IN_MEMORY_MAX {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data)?;
                let data = redactor.redact_bytes(&data);
                self.add(&path, &data, left)?;
            } else {
                let room = left.min(self.room()?);
                if size + ENTRY_OVERHEAD <= room {
                    let mut h = self.header(size);
                    self.builder.append_data(&mut h, &path, &mut entry)?;
                    self.files.push(FileEntry { path, bytes: size });
                } else {
                    self.truncated = true;
                    self.skipped.push(Skipped { what: path, reason: "byte share used".into() });
                }
            }
        }
        Ok(self.written()? - start)
    }

    /// Adds the manifest (built by `manifest` from what was written, given
    /// whether the file list must be left out to fit) and finishes the file.
    /// Returns the bundle's size.
    pub fn finish(mut self, manifest: impl Fn(&BundleWriter, bool) -> Vec<u8>) -> io::Result<u64> {
        let left = self.limit.saturating_sub(self.written()?);
        let mut data = manifest(&self, false);
        if data.len() as u64 + 2 * ENTRY_OVERHEAD > left {
            data = manifest(&self, true);
        }
        let mut h = self.header(data.len() as u64);
        self.builder.append_data(&mut h, "manifest.json", data.as_slice())?;
        let gz = self.builder.into_inner()?;
        let mut counting = gz.finish()?;
        counting.flush()?;
        let file = counting.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(counting.count)
    }
}

/// `p` when it is a plain relative path (no `..`, no root).
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::diagnostics::redact::default_rules;

    fn host_archive(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("host.tar.gz");
        let gz = GzEncoder::new(File::create(&path).unwrap(), Compression::default());
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if name.starts_with("..") {
                // What a hostile agent could send: tar refuses to write it, so by hand.
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            } else {
                b.append_data(&mut h, name, *data).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn read_all(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(GzDecoder::new(File::open(path).unwrap()));
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().display().to_string(), data)
            })
            .collect()
    }

    #[test]
    fn a_host_archive_is_repacked_under_its_host_redacted_and_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log: Vec<u8> = (0..20_000).map(|i| format!("line {i} pw=hunter2\n")).collect::<String>().into_bytes();
        let host = host_archive(
            dir.path(),
            &[
                ("roles/r1/config/redis.conf", b"requirepass hunter2\nport 6379\n"),
                ("roles/r1/logs/stdout.log", &log),
                ("../escape", b"x"),
            ],
        );
        let out = dir.path().join("bundle.tar.gz");
        let limit = 64 * 1024;
        let mut w = BundleWriter::create(&out, limit, 8 * 1024).unwrap();
        let mut red = Redactor::new(&["hunter2".into()], &default_rules());
        let used = w.add_host_archive(&host, "hosts/h1", limit, &mut red).unwrap();
        assert!(used > 0);
        assert!(w.truncated, "the log does not fit whole");
        assert_eq!(w.errors.len(), 1, "{:?}", w.errors);
        let size = w.finish(|w, _| serde_json::to_vec(&w.files).unwrap()).unwrap();
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        assert!(size <= limit, "{size} > {limit}");
        let entries = read_all(&out);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            vec!["hosts/h1/roles/r1/config/redis.conf", "hosts/h1/roles/r1/logs/stdout.log", "manifest.json"]
        );
        assert_eq!(entries[0].1, b"requirepass [REDACTED]\nport 6379\n");
        let kept = String::from_utf8(entries[1].1.clone()).unwrap();
        assert!(kept.ends_with("line 19999 pw=[REDACTED]\n"), "the newest lines are kept");
        assert!(kept.starts_with("line "), "cut at a line start");
        for (name, data) in &entries {
            assert!(!data.windows(7).any(|w| w == b"hunter2"), "{name} holds the secret");
        }
    }
}
