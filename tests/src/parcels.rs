//! Parcels for end-to-end tests: building them from the shipped recipes with the
//! real `drover parcel build` (once per target dir: a finished build is reused
//! while its recipe and version are unchanged) and installing them on a
//! cluster's hosts through the REST API (upload, add hosts, distribute,
//! activate), waiting for every command to succeed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_parcels::ParcelId;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::rest::Rest;

/// How long one parcel command (distribute of a 73 MiB JRE to three agents on
/// two cores, or an activate) may take.
pub const COMMAND_WAIT: Duration = Duration::from_secs(300);

/// One build at a time in this process: builds share the `.deb` cache.
static BUILDS: Mutex<()> = Mutex::new(());

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else the one the binaries are in.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() { dir } else { repo_root().join(dir) };
    }
    let bins = crate::procs::bin_dir();
    match bins.parent() {
        Some(parent) if bins.ends_with("debug") || bins.ends_with("release") => parent.to_path_buf(),
        _ => repo_root().join("target"),
    }
}

/// A key for a recipe directory's content and the version asked for: a
/// changed recipe (or env script, or extra file) is built again.
fn recipe_key(dir: &Path, version: Option<&str>) -> String {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read recipe dir {}: {e}", dir.display()))
            .map(|e| e.expect("recipe dir entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = rel.join(e.file_name());
            if path.is_dir() {
                walk(&path, &rel, out);
            } else {
                out.push((rel, std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files);
    let mut h = Sha256::new();
    h.update(version.unwrap_or("").as_bytes());
    h.update([0]);
    for (rel, content) in files {
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
    }
    hex::encode(&h.finalize()[..8])
}

fn parcel_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "parcel"))
}

/// Builds the parcel of `parcels/<recipe>` (optionally with another version)
/// with `drover parcel build` into `target/test-parcels/`, with the `.deb`
/// cache in `target/parcel-cache`, and returns the file. A parcel already
/// built there from the same recipe content and version is reused (builds are
/// reproducible, so it is the file a new build would give).
pub fn build_parcel(recipe: &str, version: Option<&str>) -> PathBuf {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let recipe_dir = repo_root().join("parcels").join(recipe);
    let target = target_dir();
    let key = recipe_key(&recipe_dir, version);
    let out = target.join("test-parcels").join(format!("{recipe}-{}-{key}", version.unwrap_or("recipe")));
    if let Some(file) = parcel_in(&out) {
        eprintln!("parcel {}: reusing {}", recipe, file.display());
        return file;
    }
    // Build next to the final place, then rename: another test binary
    // building the same parcel never sees a half-written file.
    std::fs::create_dir_all(target.join("test-parcels")).expect("create target/test-parcels");
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(target.join("test-parcels"))
        .expect("temporary build dir");
    let started = Instant::now();
    eprintln!("parcel {recipe}: building {} (version {})", recipe_dir.display(), version.unwrap_or("of the recipe"));
    let mut cmd = Command::new(crate::procs::bin("drover"));
    cmd.args(["parcel", "build"])
        .arg(&recipe_dir)
        .arg("--out")
        .arg(tmp.path())
        .arg("--cache-dir")
        .arg(target.join("parcel-cache"));
    if let Some(v) = version {
        cmd.args(["--version", v]);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("run drover parcel build: {e}"));
    assert!(
        output.status.success(),
        "drover parcel build {recipe} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let built = parcel_in(tmp.path()).unwrap_or_else(|| panic!("drover parcel build {recipe} wrote no .parcel file"));
    let file_name = built.file_name().expect("file name").to_owned();
    match std::fs::rename(tmp.path(), &out) {
        Ok(()) => {}
        // Another process finished the same build first: use its file.
        Err(_) if parcel_in(&out).is_some() => {}
        Err(e) => panic!("move the built parcel to {}: {e}", out.display()),
    }
    eprintln!("parcel {recipe}: built {} in {:.1}s", file_name.to_string_lossy(), started.elapsed().as_secs_f64());
    parcel_in(&out).expect("the built parcel")
}

/// A parcel file's sha256 (hex).
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(h.finalize())
}

/// Uploads a parcel file to the manager's repository (201, or 409 when the
/// same file is already there) and returns its id.
pub async fn upload_parcel(rest: &Rest, file: &Path) -> ParcelId {
    let name = file.file_name().and_then(|n| n.to_str()).expect("parcel file name");
    let id = ParcelId::parse(name).unwrap_or_else(|e| panic!("{e}"));
    let sha = sha256_file(file);
    let bytes = tokio::fs::read(file).await.unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let started = Instant::now();
    let (status, body) = rest
        .post_bytes(&format!("/api/v1/parcels?file_name={name}&sha256={sha}"), bytes)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
    assert!(status == 201 || status == 409, "upload {name}: HTTP {status}: {body}");
    eprintln!("parcel {name}: uploaded in {:.1}s (HTTP {status})", started.elapsed().as_secs_f64());
    id
}

/// Starts a cluster parcel command and waits until it is no longer running;
/// returns the finished command (whatever its state).
pub async fn parcel_command(rest: &Rest, cluster: &str, name: &str, parcel: &str, version: &str) -> Value {
    let body = json!({"name": name, "parcel": parcel, "version": version});
    let (status, cmd) = rest
        .raw(reqwest::Method::POST, &format!("/api/v1/clusters/{cluster}/parcels/commands"), Some(body))
        .await
        .unwrap_or_else(|e| panic!("{name} {parcel} {version}: {e}"));
    assert_eq!(status, 202, "{name} {parcel} {version}: HTTP {status}: {cmd}");
    wait_command(rest, cmd["id"].as_str().expect("command id"), COMMAND_WAIT).await
}

/// Polls a command until it is no longer running, printing its steps'
/// progress when it changes; returns it.
pub async fn wait_command(rest: &Rest, id: &str, within: Duration) -> Value {
    let started = Instant::now();
    let shown = std::cell::RefCell::new(String::new());
    crate::eventually(within, &format!("command {id} to finish"), || {
        let shown = &shown;
        async move {
            let c: Value = rest.get(&format!("/api/v1/commands/{id}")).await.ok()?;
            let progress: Vec<String> = c["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["state"] == "running" && s["message"].as_str().is_some_and(|m| !m.is_empty()))
                .map(|s| {
                    format!("{}: {}", s["description"].as_str().unwrap_or(""), s["message"].as_str().unwrap_or(""))
                })
                .collect();
            let line = progress.join("; ");
            if !line.is_empty() && line != *shown.borrow() {
                eprintln!("  [{:>5.1}s] {} {line}", started.elapsed().as_secs_f64(), c["name"].as_str().unwrap_or(""));
                *shown.borrow_mut() = line;
            }
            (c["state"] != "running").then_some(c)
        }
    })
    .await
}

/// Uploads `files`, adds `host_ids` to `cluster`, then distributes and
/// activates each parcel there, in the order given, asserting that every
/// command succeeds.
pub async fn install_parcels(rest: &Rest, cluster: &str, host_ids: &[String], files: &[PathBuf]) {
    let mut ids = Vec::new();
    for f in files {
        ids.push(upload_parcel(rest, f).await);
    }
    let (status, body) = rest
        .raw(reqwest::Method::POST, &format!("/api/v1/clusters/{cluster}/hosts"), Some(json!({ "host_ids": host_ids })))
        .await
        .expect("add hosts");
    assert_eq!(status, 200, "add hosts to {cluster}: HTTP {status}: {body}");
    for id in &ids {
        for phase in ["distribute", "activate"] {
            let started = Instant::now();
            let done = parcel_command(rest, cluster, phase, &id.name, &id.version).await;
            assert_eq!(done["state"], "succeeded", "{phase} {} {}: {done}", id.name, id.version);
            eprintln!(
                "parcel {}: {phase} on {} hosts in {:.1}s",
                id.file_name(),
                host_ids.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}
