//! The parcel format: names, meta validation, the env script subset, reproducible archives and
//! the repository manifest.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::*;
use drover_parcels::env;
use drover_parcels::{
    ArchiveOptions, Dependency, IndexCache, Manifest, ParcelId, ParcelMeta, build_archive, build_archive_with,
    index_dir, index_dir_cached, inspect, install,
};

#[test]
fn parcel_file_names() {
    let ok = [
        ("redis-7.0.15-1-bookworm.parcel", "redis", "7.0.15-1", "bookworm"),
        ("zookeeper-3.8.0-2-bookworm.parcel", "zookeeper", "3.8.0-2", "bookworm"),
        ("jre-17.0.21.1+2-1-bookworm.parcel", "jre", "17.0.21.1+2-1", "bookworm"),
        ("my_tool-1~rc1-el9.parcel", "my_tool", "1~rc1", "el9"),
        ("a-1-x.parcel", "a", "1", "x"),
    ];
    for (file, name, version, distro) in ok {
        let id = ParcelId::parse(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((id.name.as_str(), id.version.as_str(), id.distro.as_str()), (name, version, distro), "{file}");
        assert_eq!(id.to_string(), file);
        assert_eq!(id.dir_name(), format!("{name}-{version}"));
    }
    let bad = [
        ("redis-7.0.15-bookworm.tar.gz", "expected NAME-VERSION-DISTRO.parcel"),
        ("redis-bookworm.parcel", "expected NAME-VERSION-DISTRO.parcel"),
        ("Redis-1-bookworm.parcel", "name"),
        ("redis--bookworm.parcel", "version"),
        ("redis-1/2-bookworm.parcel", "version"),
        ("redis-1 2-bookworm.parcel", "version"),
        ("redis-1-Bookworm.parcel", "distro"),
        ("redis-1-.parcel", "distro"),
        ("-1-bookworm.parcel", "name"),
    ];
    for (file, word) in bad {
        let err = ParcelId::parse(file).expect_err(file).to_string();
        assert!(err.contains(word) && err.contains(file), "{file}: {err}");
    }
}

#[test]
fn meta_validation_names_the_field() {
    let good = meta("zookeeper", "3.8.0-1");
    ParcelMeta::parse(&good.to_json(), "parcel.json").unwrap();
    type Change = Box<dyn Fn(&mut ParcelMeta)>;
    let cases: Vec<(&str, Change)> = vec![
        ("name", Box::new(|m| m.name = "Zoo-keeper".into())),
        ("version", Box::new(|m| m.version = "".into())),
        ("distro", Box::new(|m| m.distro = "book-worm".into())),
        ("depends", Box::new(|m| m.depends = vec!["jre (~> 17)".into()])),
        ("depends", Box::new(|m| m.depends = vec!["zookeeper".into()])),
        ("conflicts", Box::new(|m| m.conflicts = vec!["bad name".into()])),
        ("provides", Box::new(|m| m.provides = vec!["".into()])),
        ("components[0].pkg_version", Box::new(|m| m.components[0].pkg_version = "1 2".into())),
        ("scripts.defines", Box::new(|m| m.scripts.defines = "../env.sh".into())),
        ("schema_version", Box::new(|m| m.schema_version = 2)),
    ];
    for (field, change) in cases {
        let mut m = good.clone();
        change(&mut m);
        let err = ParcelMeta::parse(&m.to_json(), "x/meta/parcel.json").expect_err(field).to_string();
        assert!(err.contains(&format!("field `{field}`")) && err.contains("x/meta/parcel.json"), "{field}: {err}");
    }
    let unknown = br#"{"schema_version":1,"name":"a","version":"1","distro":"x","scripts":{"defines":"a_env.sh"},"extraVersionInfo":{}}"#;
    let err = ParcelMeta::parse(unknown, "p.json").unwrap_err().to_string();
    assert!(err.contains("unknown field `extraVersionInfo`"), "{err}");
    assert_eq!(
        Dependency::parse("jre (>= 17)").unwrap(),
        Dependency { name: "jre".into(), constraint: Some((">=".into(), "17".into())) }
    );
    assert_eq!(Dependency::parse("jre").unwrap().constraint, None);
}

#[test]
fn env_script_subset() {
    let text = "#!/bin/bash\n# comment\n\nexport JAVA_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME/usr/lib/jvm/java-17\nexport PATH=\"${JAVA_HOME}/bin:$PATH\"\nexport LD_LIBRARY_PATH=$PARCELS_ROOT/$PARCEL_DIRNAME/lib:$LD_LIBRARY_PATH\nexport OPTS='-Xmx1g $NOT_EXPANDED'\n";
    let script = env::parse(text, "jre_env.sh").unwrap();
    let out = script.evaluate("/opt/parcels", "jre-17-1", &BTreeMap::from([("PATH".into(), "/usr/bin".into())]));
    assert_eq!(
        out,
        [
            ("JAVA_HOME".to_owned(), "/opt/parcels/jre-17-1/usr/lib/jvm/java-17".to_owned()),
            ("PATH".to_owned(), "/opt/parcels/jre-17-1/usr/lib/jvm/java-17/bin:/usr/bin".to_owned()),
            // No inherited LD_LIBRARY_PATH: no empty entry (which would mean the current directory).
            ("LD_LIBRARY_PATH".to_owned(), "/opt/parcels/jre-17-1/lib".to_owned()),
            ("OPTS".to_owned(), "-Xmx1g $NOT_EXPANDED".to_owned()),
        ]
    );
    let bad = [
        ("export X=$(id)", "line 1"),
        ("X=1", "expected `export NAME=VALUE`"),
        ("export X=`id`", "not allowed"),
        ("export X=a;rm -rf /", "not allowed"),
        ("export PARCELS_ROOT=/", "cannot be assigned"),
        ("export X=\"unterminated", "unterminated"),
        ("export 1X=a", "invalid variable name"),
        ("source /etc/profile", "expected `export"),
        ("export X=${Y:-z}", "only $NAME"),
    ];
    for (line, word) in bad {
        let err = env::parse(line, "e.sh").expect_err(line).to_string();
        assert!(err.contains(word) && err.contains("e.sh: line 1"), "{line}: {err}");
    }
}

fn touch_all(dir: &std::path::Path, when: SystemTime) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ft = entry.file_type().unwrap();
        if ft.is_symlink() {
            continue;
        }
        if ft.is_dir() {
            touch_all(&entry.path(), when);
        }
        fs::File::open(entry.path()).unwrap().set_modified(when).unwrap();
    }
}

#[test]
fn archives_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = staging(tmp.path(), "redis");
    let m = meta("redis", "7.0.15-1");
    let a = build_archive(&staging, &m, &tmp.path().join("a")).unwrap();
    assert_eq!(a.path.file_name().unwrap(), "redis-7.0.15-1-bookworm.parcel");
    assert_eq!(a.size, fs::metadata(&a.path).unwrap().len());
    assert_eq!(fs::metadata(&a.path).unwrap().permissions().mode() & 0o777, 0o644);

    // Other mtimes and other permission bits that normalise to the same modes.
    touch_all(&staging, SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890));
    fs::set_permissions(staging.join("bin/tool"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(staging.join("share/doc/readme"), fs::Permissions::from_mode(0o664)).unwrap();
    fs::set_permissions(staging.join("share"), fs::Permissions::from_mode(0o700)).unwrap();
    let b = build_archive(&staging, &m, &tmp.path().join("b")).unwrap();
    assert_eq!(a.sha256, b.sha256, "same tree, other mtimes and modes");
    assert_eq!(fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());

    // The inputs do matter.
    fs::write(staging.join("share/doc/readme"), "changed\n").unwrap();
    let c = build_archive(&staging, &m, &tmp.path().join("c")).unwrap();
    assert_ne!(a.sha256, c.sha256);
    let d = build_archive_with(&staging, &m, &tmp.path().join("d"), &ArchiveOptions { mtime: 1 }).unwrap();
    assert_ne!(c.sha256, d.sha256, "the mtime is part of the output");

    // What was built installs, with normalised modes, symlinks kept, and meta first.
    let info = inspect(&a.path).unwrap();
    assert_eq!((info.sha256.as_str(), info.size), (a.sha256.as_str(), a.size));
    let root = tmp.path().join("parcels");
    let inst = install(&a.path, None, &root).unwrap();
    let mode = |p: &str| fs::symlink_metadata(inst.dir.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/tool"), 0o755);
    assert_eq!(mode("share/doc/readme"), 0o644);
    assert_eq!(mode("share"), 0o755);
    assert_eq!(fs::read_link(inst.dir.join("lib/libx.so")).unwrap(), std::path::Path::new("libx.so.1"));
    assert_eq!(inst.meta, m);

    let gz = flate2::read::GzDecoder::new(fs::File::open(&a.path).unwrap());
    let mut ar = tar::Archive::new(gz);
    let paths: Vec<String> =
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(&paths[..3], ["redis-7.0.15-1/", "redis-7.0.15-1/meta/", "redis-7.0.15-1/meta/parcel.json"]);
    let gz_bytes = fs::read(&a.path).unwrap();
    assert_eq!(&gz_bytes[4..8], &[0, 0, 0, 0], "gzip mtime is 0");
    assert_eq!(gz_bytes[3] & 0x08, 0, "no file name in the gzip header");
}

#[test]
fn build_refuses_what_install_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = staging(tmp.path(), "redis");
    std::os::unix::fs::symlink("/etc/passwd", staging.join("lib/passwd")).unwrap();
    let err = build_archive(&staging, &meta("redis", "1"), &tmp.path().join("out")).unwrap_err().to_string();
    assert!(err.contains("lib/passwd") && err.contains("absolute"), "{err}");
    fs::remove_file(staging.join("lib/passwd")).unwrap();
    fs::write(staging.join("meta/parcel.json"), "{}").unwrap();
    let err = build_archive(&staging, &meta("redis", "1"), &tmp.path().join("out")).unwrap_err().to_string();
    assert!(err.contains("meta/parcel.json must not exist"), "{err}");
    fs::remove_file(staging.join("meta/parcel.json")).unwrap();
    fs::remove_file(staging.join("meta/redis_env.sh")).unwrap();
    let err = build_archive(&staging, &meta("redis", "1"), &tmp.path().join("out")).unwrap_err().to_string();
    assert!(err.contains("redis_env.sh"), "{err}");
    assert!(fs::read_dir(tmp.path().join("out")).map(|d| d.count()).unwrap_or(0) == 0, "no partial output left");
}

#[test]
fn manifest_index_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let staging = staging(tmp.path(), "redis");
    let mut built = Vec::new();
    for v in ["7.0.15-2", "7.0.15-1"] {
        built.push(build_archive(&staging, &meta("redis", v), &repo).unwrap());
    }
    let mut zk = meta("zookeeper", "3.8.0-1");
    zk.depends = vec!["jre (>= 17)".into()];
    let zk_stage = tmp.path().join("zk");
    fs::create_dir_all(zk_stage.join("meta")).unwrap();
    fs::write(zk_stage.join("meta/zookeeper_env.sh"), env_script("zookeeper")).unwrap();
    build_archive(&zk_stage, &zk, &repo).unwrap();
    fs::write(repo.join("notes.txt"), "ignored").unwrap();

    let manifest = index_dir(&repo).unwrap();
    let names: Vec<&str> = manifest.parcels.iter().map(|p| p.parcel_name.as_str()).collect();
    assert_eq!(
        names,
        ["redis-7.0.15-1-bookworm.parcel", "redis-7.0.15-2-bookworm.parcel", "zookeeper-3.8.0-1-bookworm.parcel"]
    );
    let r1 = manifest.find("redis-7.0.15-1-bookworm.parcel").unwrap();
    assert_eq!((r1.sha256.as_str(), r1.size), (built[1].sha256.as_str(), built[1].size));
    assert_eq!(manifest.parcels[2].depends, ["jre (>= 17)"]);
    assert!(manifest.last_updated > 1_600_000_000_000);

    let path = manifest.save(&repo).unwrap();
    assert_eq!(Manifest::load(&path).unwrap(), manifest);
    let leftovers: Vec<_> = fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Unknown fields are tolerated, bad entries are not.
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v["future"] = serde_json::json!(true);
    Manifest::parse(&serde_json::to_vec(&v).unwrap(), "m.json").unwrap();
    v["parcels"][0]["sha256"] = serde_json::json!("XYZ");
    let err = Manifest::parse(&serde_json::to_vec(&v).unwrap(), "m.json").unwrap_err().to_string();
    assert!(err.contains("parcels[0]") && err.contains("sha256"), "{err}");

    // A bad parcel in the folder fails the index, naming the file.
    let mut bad = good_entries("nginx", "1");
    bad.push(file("nginx-1/../evil", b"x"));
    write_raw(&repo, "nginx-1-bookworm.parcel", &bad);
    let err = index_dir(&repo).unwrap_err().to_string();
    assert!(err.contains("nginx-1-bookworm.parcel") && err.contains(".."), "{err}");
}

#[test]
fn the_index_cache_trusts_only_files_whose_stat_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let staging = staging(tmp.path(), "redis");
    for v in ["1", "2", "3"] {
        build_archive(&staging, &meta("redis", v), &repo).unwrap();
    }
    let name = |v: &str| format!("redis-{v}-bookworm.parcel");

    // First index: everything is read; the cache round-trips through its file.
    let first = index_dir_cached(&repo, &IndexCache::default()).unwrap();
    assert_eq!(first.checked, [name("1"), name("2"), name("3")]);
    assert!(first.trusted.is_empty());
    first.cache.save(&repo).unwrap();
    let cache = IndexCache::load(&repo).unwrap();
    assert_eq!(cache, first.cache);
    assert_eq!(IndexCache::load(&tmp.path().join("none")).unwrap(), IndexCache::default());

    // Nothing changed: nothing is read, the manifest is the same.
    let second = index_dir_cached(&repo, &cache).unwrap();
    assert!(second.checked.is_empty(), "{:?}", second.checked);
    assert_eq!(second.trusted.len(), 3);
    assert_eq!(second.manifest.parcels, first.manifest.parcels);

    // One byte changed in place, same size, mtime put back: the ctime gives it away, and the
    // check that follows refuses the file, naming it.
    let path = repo.join(name("2"));
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let err = index_dir_cached(&repo, &cache).unwrap_err().to_string();
    assert!(err.contains(&name("2")), "{err}");

    // Replaced by another valid build of the same version: read again, the manifest updated.
    fs::remove_file(&path).unwrap();
    let mut other = meta("redis", "2");
    other.components[0].pkg_version = "1.0-2".into();
    let rebuilt = build_archive(&staging, &other, &repo).unwrap();
    // A new file appears, another disappears.
    build_archive(&staging, &meta("redis", "4"), &repo).unwrap();
    fs::remove_file(repo.join(name("3"))).unwrap();
    let third = index_dir_cached(&repo, &cache).unwrap();
    assert_eq!(third.checked, [name("2"), name("4")]);
    assert_eq!(third.trusted, [name("1")]);
    assert_eq!(third.manifest.find(&name("2")).unwrap().sha256, rebuilt.sha256);
    assert!(third.manifest.find(&name("3")).is_none());
    assert_eq!(third.cache.files.keys().cloned().collect::<Vec<_>>(), [name("1"), name("2"), name("4")]);
    assert_eq!(index_dir(&repo).unwrap().parcels, third.manifest.parcels, "the same manifest as without a cache");

    // A cache entry whose stat matches is believed as it is: that is the point of it.
    let mut lying = third.cache.clone();
    lying.files.get_mut(&name("1")).unwrap().entry.size = 1;
    assert_eq!(index_dir_cached(&repo, &lying).unwrap().manifest.find(&name("1")).unwrap().size, 1);
}
