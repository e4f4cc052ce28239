//! The parcel repository and lifecycle commands through the REST API of a real
//! in-process manager: streamed uploads checked against the stated sha256 and
//! the parcel's own metadata (nothing stored on any failure), the `/repo/`
//! mirror with range requests, re-indexing at start that reads only new or
//! changed files, cluster membership of hosts, and the refusals
//! that keep the lifecycle safe. Agents are not involved here; the end-to-end
//! tests run real agents.

use drover_manager::parcels::ParcelRepo;
use drover_parcels::archive::build_archive;
use drover_parcels::manifest::{INDEX_CACHE_FILE, MANIFEST_FILE};
use drover_parcels::meta::{ParcelMeta, Scripts};
use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::{PASSWORD, T};

impl T {
    /// A manager (data dir `manager/` in the temp dir) that follows the given
    /// remote parcel repositories.
    async fn start_following(repos: &[String]) -> T {
        let repos = repos.to_vec();
        T::start_configured(
            |_| {},
            |c| {
                c.data_dir = c.data_dir.join("manager");
                c.parcel_repos = repos;
                c.parcel_repo_refresh = std::time::Duration::from_millis(200);
            },
        )
        .await
    }

    async fn upload(&self, file_name: &str, sha256: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url("/api/v1/parcels"))
            .query(&[("file_name", file_name), ("sha256", sha256)])
            .basic_auth("admin", Some(PASSWORD))
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Files in the repository directory other than the manifest and the index cache.
    fn repo_files(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.path().join("manager/parcel-repo"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != MANIFEST_FILE && n != INDEX_CACHE_FILE)
            .collect();
        out.sort();
        out
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Builds a small real parcel; returns (file name, bytes, sha256).
fn parcel(version: &str) -> (String, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(staging.join("bin")).unwrap();
    std::fs::create_dir_all(staging.join("meta")).unwrap();
    std::fs::write(staging.join("bin/hello"), format!("#!/bin/sh\necho hello {version}\n")).unwrap();
    std::fs::write(staging.join("meta/hello_env.sh"), "export HELLO_HOME=\"$PARCELS_ROOT/$PARCEL_DIRNAME\"\n").unwrap();
    let meta = ParcelMeta {
        schema_version: 1,
        name: "hello".into(),
        version: version.into(),
        distro: "bookworm".into(),
        depends: vec![],
        conflicts: vec![],
        provides: vec![],
        components: vec![],
        scripts: Scripts { defines: "hello_env.sh".into() },
    };
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let built = build_archive(&staging, &meta, &out).unwrap();
    let name = built.path.file_name().unwrap().to_string_lossy().into_owned();
    (name, std::fs::read(&built.path).unwrap(), built.sha256)
}

#[tokio::test]
async fn uploads_are_checked_and_served() {
    let t = T::start_following(&[]).await;
    let (name, bytes, sha) = parcel("1.0-1");

    // A wrong stated hash stores nothing.
    let wrong = "0".repeat(64);
    let (status, body) = t.upload(&name, &wrong, bytes.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("sha256 mismatch"), "{body}");
    assert!(t.repo_files().is_empty(), "{:?}", t.repo_files());

    // A truncated file with its own (matching) hash is refused as a parcel.
    let cut = bytes[..bytes.len() / 2].to_vec();
    let cut_sha = sha256(&cut);
    let (status, body) = t.upload(&name, &cut_sha, cut).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not a valid parcel"), "{body}");
    assert!(t.repo_files().is_empty());

    // A file name that does not match parcel.json is refused.
    let (status, body) = t.upload("other-1.0-1-bookworm.parcel", &sha, bytes.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(t.repo_files().is_empty());

    // A bad file name and a bad hash string: clear 400s.
    let (status, body) = t.upload("../../etc/passwd", &sha, bytes.clone()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = t.upload(&name, "xyz", bytes.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("64 hex digits"), "{body}");

    // The real thing.
    let (status, body) = t.upload(&name, &sha, bytes.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"], sha);
    assert_eq!(body["size"], bytes.len());
    assert_eq!(t.repo_files(), vec![name.clone()]);

    // Same version, different content: a conflict (versions are immutable).
    let (other_name, other_bytes, other_sha) = parcel("1.0-1");
    assert_eq!(other_name, name);
    assert_eq!(other_sha, sha, "builds are reproducible: same inputs, same hash");
    let mut tampered = other_bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let tampered_sha = sha256(&tampered);
    let (status, body) = t.upload(&name, &tampered_sha, tampered).await;
    assert_eq!(status, 409, "{body}");

    // Listed, and served at /repo/ with range requests.
    let (status, list) = t.call(Method::GET, "/parcels", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["parcel_name"], name);
    assert_eq!(list["items"][0]["source"], "local");
    let manifest: Value = t.client.get(t.url("/repo/manifest.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(manifest["parcels"][0]["sha256"], sha);
    let resp = t.client.get(t.url(&format!("/repo/{name}"))).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    // The repository's own hidden files are not served, however the path is spelt.
    assert!(t.handle.state.parcels.dir().join(".index-cache.json").is_file(), "the index cache exists");
    for path in ["/repo/.index-cache.json", "/repo/%2eindex-cache.json", "/repo/%2Eindex-cache.json"] {
        let resp = t.client.get(t.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }

    let audit = t.call(Method::GET, "/audit?object_type=parcel", None).await.1;
    assert!(audit.to_string().contains(&name), "{audit}");
}

#[tokio::test]
async fn lifecycle_refusals_name_the_problem() {
    let t = T::start_following(&[]).await;
    let (name, bytes, sha) = parcel("2.0-1");
    assert_eq!(t.upload(&name, &sha, bytes).await.0, 201);
    assert_eq!(t.call(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await.0, 201);

    let cmd = |body: Value| t.call(Method::POST, "/clusters/prod/parcels/commands", Some(body));
    let (status, body) = cmd(json!({"name": "distribute", "parcel": "hello", "version": "2.0-1"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("has no hosts"), "{body}");
    let (status, body) = cmd(json!({"name": "distribute", "parcel": "hello", "version": "9.9"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = cmd(json!({"name": "activate", "parcel": "hello", "version": "2.0-1"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("distribute it first"), "{body}");
    let (status, body) = cmd(json!({"name": "explode", "parcel": "hello", "version": "2.0-1"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = cmd(json!({"name": "distribute", "parcel": "hello"})).await;
    assert_eq!(status, 400, "a version is required but for deactivate: {body}");
    let (status, body) = t.call(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["nope"]}))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("unknown host"), "{body}");
    let (status, _) = t.call(Method::GET, "/clusters/nope/parcels", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn remote_repositories_are_followed_and_their_parcels_verified() {
    // Manager A's /repo/ is the remote repository of manager B.
    let a = T::start_following(&[]).await;
    let (name, bytes, sha) = parcel("3.0-1");
    assert_eq!(a.upload(&name, &sha, bytes.clone()).await.0, 201);
    let b = T::start_following(&[a.url("/repo")]).await;

    // B refreshes A's manifest and lists the parcel as remote.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listed = loop {
        let list = b.call(Method::GET, "/parcels", None).await.1;
        if list["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "B never listed A's parcel: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(listed["items"][0]["parcel_name"], name);
    assert_eq!(listed["items"][0]["source"]["remote"]["url"], a.url("/repo"));
    assert_eq!(listed["repositories"][0]["parcels"], 1);
    assert!(b.repo_files().is_empty());

    // Distributing needs it locally: it is downloaded, verified and kept.
    let entry = b.handle.state.parcels.ensure_local("hello", "3.0-1").await.unwrap();
    assert_eq!(entry.sha256, sha);
    assert_eq!(b.repo_files(), vec![name.clone()]);
    assert_eq!(std::fs::read(b.dir.path().join("manager/parcel-repo").join(&name)).unwrap(), bytes);
    let listed = b.call(Method::GET, "/parcels", None).await.1;
    assert_eq!(listed["items"][0]["source"], "local");

    // A remote file that does not match its manifest entry is refused and not kept.
    let (name2, bytes2, sha2) = parcel("3.0-2");
    assert_eq!(a.upload(&name2, &sha2, bytes2).await.0, 201);
    let repo_a = a.dir.path().join("manager/parcel-repo");
    let mut tampered = std::fs::read(repo_a.join(&name2)).unwrap();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    std::fs::write(repo_a.join(&name2), tampered).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while b.handle.state.parcels.find("hello", "3.0-2").is_none() {
        assert!(std::time::Instant::now() < deadline, "B never saw 3.0-2");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let err = b.handle.state.parcels.ensure_local("hello", "3.0-2").await.unwrap_err().to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert_eq!(b.repo_files(), vec![name], "nothing of the tampered download is kept");
}

/// At start the repository reads a parcel file only when it is new or changed since it was
/// last checked (at an earlier start, or when it was uploaded); a changed file is checked as
/// before the cache existed.
#[tokio::test]
async fn a_restart_reads_only_new_or_changed_parcel_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("parcel-repo");
    std::fs::create_dir_all(&dir).unwrap();
    let (n1, b1, s1) = parcel("1.0-1");
    let (n2, b2, _) = parcel("2.0-1");
    std::fs::write(dir.join(&n1), &b1).unwrap();
    std::fs::write(dir.join(&n2), &b2).unwrap();

    let repo = ParcelRepo::open(&dir, &[]).unwrap();
    assert_eq!(repo.index_report().checked, [n1.clone(), n2.clone()]);
    assert!(repo.index_report().trusted.is_empty());
    // Checked on its way in: not read at the next start either.
    let (n3, b3, s3) = parcel("3.0-1");
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(b3))]);
    repo.upload(&n3, &s3, body).await.unwrap();
    drop(repo);

    let repo = ParcelRepo::open(&dir, &[]).unwrap();
    assert!(repo.index_report().checked.is_empty(), "{:?}", repo.index_report());
    assert_eq!(repo.index_report().trusted, [n1.clone(), n2.clone(), n3.clone()]);
    assert_eq!(repo.expected(&n1).unwrap().sha256, s1);
    assert_eq!(repo.expected(&n3).unwrap().sha256, s3);
    drop(repo);

    // A file changed on disk is read again; this one fails the check, so the repository does
    // not open, naming it.
    let mut tampered = b2.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    std::fs::write(dir.join(&n2), &tampered).unwrap();
    let err = format!("{:#}", ParcelRepo::open(&dir, &[]).unwrap_err());
    assert!(err.contains(&n2), "{err}");

    // Put back, it is read once more; the others are still trusted.
    std::fs::write(dir.join(&n2), &b2).unwrap();
    let repo = ParcelRepo::open(&dir, &[]).unwrap();
    assert_eq!(repo.index_report().checked, [n2]);
    assert_eq!(repo.index_report().trusted, [n1, n3]);
}
