//! The parcel repository: the manager's own (`DATA_DIR/parcel-repo`, parcel
//! files plus `manifest.json`, served read-only at `/repo/` and to agents over
//! `FetchParcel`) and the remote repositories it follows (`--parcel-repo`).
//!
//! Files are streamed, never held whole in memory: uploads are written to a
//! temporary file while their sha256 is computed, checked against what the
//! uploader stated and against the parcel's own `meta/parcel.json`, and only
//! then renamed into the repository. A remote parcel is first downloaded into
//! the local repository (verified the same way); agents only ever fetch from
//! the manager, over their mutual-TLS channel.
//!
//! At start the repository is indexed again, but a file is read and hashed
//! only when it is new or changed: `.index-cache.json` (next to
//! `manifest.json`) records the size, mtime, ctime, device and inode of every
//! file when it was checked (at an earlier start or when it was stored), with
//! its manifest entry, and an entry is trusted only while all of those match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use drover_parcels::archive::{self, Expected};
use drover_parcels::manifest::{IndexCache, MANIFEST_FILE, Manifest, ManifestParcel, index_dir_cached};
use drover_parcels::name::ParcelId;
use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::model::now_millis;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

fn internal(what: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Internal(format!("{what}: {e}"))
}

/// One known parcel with where it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KnownParcel {
    #[schema(value_type = Object)]
    pub parcel: ManifestParcel,
    pub source: Source,
}

pub use drover_api::parcels::{RemoteState, Source};

/// A followed remote repository: what the API shows of it, and its manifest.
#[derive(Debug, Clone)]
struct Remote {
    state: RemoteState,
    manifest: Option<Manifest>,
}

/// How the repository was indexed when it was opened: file names, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Read and checked: new or changed since they were last checked.
    pub checked: Vec<String>,
    /// Taken from `.index-cache.json` without reading them.
    pub trusted: Vec<String>,
}

pub struct ParcelRepo {
    dir: PathBuf,
    local: RwLock<Manifest>,
    /// What `.index-cache.json` holds; updated when a parcel is stored.
    cache: Mutex<IndexCache>,
    opened: IndexReport,
    remotes: RwLock<Vec<Remote>>,
    http: reqwest::Client,
    /// One remote download at a time per file.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ParcelRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParcelRepo").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl ParcelRepo {
    /// Opens (or creates) the repository in `dir` and indexes what is there:
    /// every parcel file that is new or changed since it was last checked is
    /// checked and hashed, the others are taken from `.index-cache.json`, and
    /// `manifest.json` and the cache are rewritten. A bad file fails the open,
    /// naming it.
    pub fn open(dir: &Path, remotes: &[String]) -> anyhow::Result<ParcelRepo> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
        // Leftovers of interrupted uploads.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".upload-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let cache = IndexCache::load(dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the parcel index cache; every parcel is checked again");
            IndexCache::default()
        });
        let indexed = index_dir_cached(dir, &cache).map_err(|e| anyhow::anyhow!("index parcel repository: {e}"))?;
        let manifest = indexed.manifest;
        manifest.save(dir).map_err(|e| anyhow::anyhow!("write parcel manifest: {e}"))?;
        indexed.cache.save(dir).map_err(|e| anyhow::anyhow!("write parcel index cache: {e}"))?;
        tracing::info!(
            dir = %dir.display(),
            checked = indexed.checked.len(),
            unchanged = indexed.trusted.len(),
            "parcel repository indexed"
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow::anyhow!("http client: {e}"))?;
        let remotes = remotes
            .iter()
            .map(|u| Remote {
                state: RemoteState { url: u.trim_end_matches('/').to_owned(), ..Default::default() },
                manifest: None,
            })
            .collect();
        Ok(ParcelRepo {
            dir: dir.to_owned(),
            local: RwLock::new(manifest),
            cache: Mutex::new(indexed.cache),
            opened: IndexReport { checked: indexed.checked, trusted: indexed.trusted },
            remotes: RwLock::new(remotes),
            http,
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which files [`ParcelRepo::open`] read and which it trusted.
    pub fn index_report(&self) -> &IndexReport {
        &self.opened
    }

    pub fn local_manifest(&self) -> Manifest {
        self.local.read().expect("repo lock").clone()
    }

    pub fn remotes(&self) -> Vec<RemoteState> {
        self.remotes.read().expect("repo lock").iter().map(|r| r.state.clone()).collect()
    }

    /// Every known parcel: local ones first, then remote ones not held locally.
    pub fn list(&self) -> Vec<KnownParcel> {
        let local = self.local_manifest();
        let mut out: BTreeMap<String, KnownParcel> = local
            .parcels
            .into_iter()
            .map(|p| (p.parcel_name.clone(), KnownParcel { parcel: p, source: Source::Local }))
            .collect();
        for r in self.remotes.read().expect("repo lock").iter() {
            for p in r.manifest.iter().flat_map(|m| m.parcels.iter()) {
                out.entry(p.parcel_name.clone()).or_insert_with(|| KnownParcel {
                    parcel: p.clone(),
                    source: Source::Remote { url: r.state.url.clone() },
                });
            }
        }
        out.into_values().collect()
    }

    /// The parcel `name` at `version` (any distro; Drover hosts are all one distro today).
    pub fn find(&self, name: &str, version: &str) -> Option<KnownParcel> {
        self.list().into_iter().find(|k| k.parcel.name == name && k.parcel.version == version)
    }

    /// Makes sure a parcel is in the local repository, downloading it from its
    /// remote repository first if needed. Returns its manifest entry.
    pub async fn ensure_local(&self, name: &str, version: &str) -> Result<ManifestParcel, RepoError> {
        let known = self.find(name, version).ok_or_else(|| {
            RepoError::NotFound(format!(
                "no parcel {name} {version} in the manager's repository or any followed repository"
            ))
        })?;
        let url = match known.source {
            Source::Local => return Ok(known.parcel),
            Source::Remote { url } => url,
        };
        let _one = self.fetching.lock().await;
        if let Some(p) = self.local_manifest().parcels.into_iter().find(|p| p.name == name && p.version == version) {
            return Ok(p);
        }
        let file_url = format!("{url}/{}", known.parcel.parcel_name);
        tracing::info!(url = %file_url, size = known.parcel.size, "downloading parcel from remote repository");
        let resp = self
            .http
            .get(&file_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| RepoError::Internal(format!("download {file_url}: {e}")))?;
        let body = resp.bytes_stream().map(|r| r.map_err(std::io::Error::other));
        self.store_stream(&known.parcel.parcel_name, &known.parcel.sha256, Some(known.parcel.size), body).await
    }

    /// Stores an uploaded parcel: streamed to a temporary file, its sha256
    /// checked against `stated_sha256`, the archive checked (entries,
    /// `meta/parcel.json` against the file name), then renamed into place.
    pub async fn upload<S>(&self, file_name: &str, stated_sha256: &str, body: S) -> Result<ManifestParcel, RepoError>
    where
        S: Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        self.store_stream(file_name, stated_sha256, None, body).await
    }

    async fn store_stream<S>(
        &self,
        file_name: &str,
        stated_sha256: &str,
        stated_size: Option<u64>,
        mut body: S,
    ) -> Result<ManifestParcel, RepoError>
    where
        S: Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        let id = ParcelId::parse(file_name).map_err(|e| RepoError::BadRequest(e.to_string()))?;
        let stated = stated_sha256.trim().to_ascii_lowercase();
        if stated.len() != 64 || !stated.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::BadRequest(format!("sha256 must be 64 hex digits, got {stated_sha256:?}")));
        }
        let target = self.dir.join(id.file_name());
        if let Some(existing) = self.local_manifest().find(&id.file_name()) {
            if existing.sha256 == stated {
                return Ok(existing.clone());
            }
            return Err(RepoError::Conflict(format!(
                "{} is already in the repository with sha256 {}; a parcel version is immutable, give the new build a new version",
                id.file_name(),
                existing.sha256
            )));
        }
        // A private directory holding the file under its real name, so that the
        // archive check compares parcel.json with the file name.
        let tmp_dir = self.dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
        let tmp = tmp_dir.join(id.file_name());
        let result = async {
            tokio::fs::create_dir(&tmp_dir).await.map_err(|e| internal("create upload dir", e))?;
            let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| internal("create upload file", e))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| RepoError::BadRequest(format!("upload of {file_name} interrupted: {e}")))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                f.write_all(&chunk).await.map_err(|e| internal("write upload file", e))?;
            }
            f.sync_all().await.map_err(|e| internal("sync upload file", e))?;
            drop(f);
            if let Some(expected) = stated_size
                && expected != size
            {
                return Err(RepoError::BadRequest(format!(
                    "{file_name}: received {size} bytes, expected {expected} (truncated download?)"
                )));
            }
            let actual = hex::encode(hasher.finalize());
            if actual != stated {
                return Err(RepoError::BadRequest(format!(
                    "{file_name}: sha256 mismatch: stated {stated}, received {actual} ({size} bytes); nothing stored"
                )));
            }
            // Full check of the archive (entries, parcel.json vs the file name).
            let tmp2 = tmp.clone();
            let info = tokio::task::spawn_blocking(move || archive::inspect(&tmp2))
                .await
                .map_err(|e| internal("check parcel", e))?
                .map_err(|e| RepoError::BadRequest(format!("{file_name} is not a valid parcel: {e}")))?;
            if info.sha256 != actual {
                return Err(RepoError::Internal(format!("{file_name} changed while it was checked")));
            }
            tokio::fs::rename(&tmp, &target).await.map_err(|e| internal("store parcel", e))?;
            Ok(ManifestParcel::from_info(&info))
        }
        .await;
        let entry = match result {
            Ok(e) => e,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp_dir).await;
                return Err(e);
            }
        };
        let _ = tokio::fs::remove_dir_all(&tmp_dir).await;
        let manifest = {
            let mut m = self.local.write().expect("repo lock");
            m.parcels.retain(|p| p.parcel_name != entry.parcel_name);
            m.parcels.push(entry.clone());
            m.parcels.sort_by(|a, b| a.parcel_name.cmp(&b.parcel_name));
            m.last_updated = now_millis();
            m.clone()
        };
        manifest.save(&self.dir).map_err(|e| internal("write parcel manifest", e))?;
        // Checked just now: the next start need not read it again.
        let cached = {
            let mut cache = self.cache.lock().expect("repo cache lock");
            cache.record(&self.dir, &entry).and_then(|()| cache.save(&self.dir))
        };
        if let Err(e) = cached {
            tracing::warn!(file = %entry.parcel_name, error = %e, "could not record the parcel in the index cache; it is checked again at the next start");
        }
        Ok(entry)
    }

    /// Opens a local parcel file for an agent's download, positioned at
    /// `offset`. Returns the file and its total size.
    pub async fn open_for_download(&self, file_name: &str, offset: u64) -> Result<(tokio::fs::File, u64), RepoError> {
        let Some(entry) = self.local_manifest().find(file_name).cloned() else {
            return Err(RepoError::NotFound(format!("no parcel file {file_name:?} in the manager's repository")));
        };
        if offset > entry.size {
            return Err(RepoError::BadRequest(format!(
                "offset {offset} is past the end of {file_name} ({} bytes)",
                entry.size
            )));
        }
        let path = self.dir.join(&entry.parcel_name);
        let mut f = tokio::fs::File::open(&path).await.map_err(|e| internal("open parcel", e))?;
        f.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| internal("seek parcel", e))?;
        Ok((f, entry.size))
    }

    /// Fetches every followed repository's manifest again.
    pub async fn refresh_remotes(&self) {
        let urls: Vec<String> = self.remotes().into_iter().map(|r| r.url).collect();
        for url in urls {
            let manifest_url = format!("{url}/{MANIFEST_FILE}");
            let result = async {
                let resp = self
                    .http
                    .get(&manifest_url)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| e.to_string())?;
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                Manifest::parse(&bytes, &manifest_url).map_err(|e| e.to_string())
            }
            .await;
            let mut remotes = self.remotes.write().expect("repo lock");
            let Some(r) = remotes.iter_mut().find(|r| r.state.url == url) else { continue };
            match result {
                Ok(m) => {
                    r.state.parcels = m.parcels.len();
                    r.manifest = Some(m);
                    r.state.refreshed_at = Some(now_millis());
                    r.state.error = None;
                }
                Err(e) => {
                    tracing::warn!(url = %manifest_url, error = %e, "could not refresh parcel repository");
                    r.state.error = Some(format!("{manifest_url}: {e}"));
                }
            }
        }
    }

    /// The expected size and hash of a local parcel file, for agents.
    pub fn expected(&self, file_name: &str) -> Option<Expected> {
        self.local_manifest().find(file_name).map(|p| Expected { sha256: p.sha256.clone(), size: p.size })
    }
}
