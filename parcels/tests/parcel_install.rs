//! Installing parcels: hostile archives are refused with an error naming the problem and leave
//! nothing behind; good ones install once and activate by a symlink switch.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use drover_parcels::{
    self as parcel, Expected, ParcelError, activate, active_version, cleanup_partials, deactivate, install, installed,
    parcel_env, remove,
};
use tar::EntryType;

const FILE: &str = "redis-1.0-bookworm.parcel";
const TOP: &str = "redis-1.0";

fn with(extra: Vec<Raw>) -> Vec<Raw> {
    let mut e = good_entries("redis", "1.0");
    e.extend(extra);
    e
}

fn without(name: &str) -> Vec<Raw> {
    good_entries("redis", "1.0").into_iter().filter(|e| e.path != name.as_bytes()).collect()
}

/// Each case: (what, entries, words the error message must contain).
fn hostile_cases() -> Vec<(&'static str, Vec<Raw>, &'static [&'static str])> {
    let bad_meta = file(&format!("{TOP}/meta/parcel.json"), b"{\"schema_version\": 1, \"name\": \"redis\"");
    let mut invalid_meta_entries = without(&format!("{TOP}/meta/parcel.json"));
    invalid_meta_entries.insert(2, bad_meta);
    let mut wrong_field = meta("redis", "1.0");
    wrong_field.schema_version = 7;
    let mut wrong_schema = without(&format!("{TOP}/meta/parcel.json"));
    wrong_schema.insert(2, file(&format!("{TOP}/meta/parcel.json"), &wrong_field.to_json()));
    let mut other_name = without(&format!("{TOP}/meta/parcel.json"));
    other_name.insert(2, file(&format!("{TOP}/meta/parcel.json"), &meta("redis", "2.0").to_json()));
    let mut bad_env = without(&format!("{TOP}/meta/redis_env.sh"));
    bad_env.push(file(&format!("{TOP}/meta/redis_env.sh"), b"export X=$(curl evil)\n"));
    vec![
        ("path traversal", with(vec![file(&format!("{TOP}/../../x"), b"x")]), &["..", "../../x"]),
        ("absolute path", with(vec![file("/etc/evil", b"x")]), &["absolute path", "/etc/evil"]),
        ("escaping symlink", with(vec![symlink(&format!("{TOP}/lib"), "../../etc")]), &["leaves the parcel", "lib"]),
        ("absolute symlink", with(vec![symlink(&format!("{TOP}/etc"), "/etc")]), &["absolute", "etc"]),
        (
            "symlink with inner ..",
            with(vec![symlink(&format!("{TOP}/bin/up"), "tool2/../../..")]),
            &["`..` after a directory name"],
        ),
        (
            "write through a symlink",
            with(vec![symlink(&format!("{TOP}/l"), "bin"), file(&format!("{TOP}/l/x"), b"x")]),
            &["is not a directory", "l/x"],
        ),
        (
            "hard link outside",
            with(vec![hardlink(&format!("{TOP}/h"), "/etc/shadow")]),
            &["hard link target", "/etc/shadow"],
        ),
        (
            "hard link traversal",
            with(vec![hardlink(&format!("{TOP}/h"), &format!("{TOP}/../x"))]),
            &["hard link target", ".."],
        ),
        (
            "block device",
            with(vec![special(&format!("{TOP}/sda"), EntryType::Block)]),
            &["unsupported entry type", "sda"],
        ),
        ("char device", with(vec![special(&format!("{TOP}/null"), EntryType::Char)]), &["unsupported entry type"]),
        ("fifo", with(vec![special(&format!("{TOP}/fifo"), EntryType::Fifo)]), &["unsupported entry type", "fifo"]),
        (
            "two top dirs",
            with(vec![dir("other-1.0/"), file("other-1.0/x", b"x")]),
            &["outside the top directory", "other-1.0"],
        ),
        ("file at top level", with(vec![file("README", b"x")]), &["outside the top directory"]),
        ("duplicate entry", with(vec![file(&format!("{TOP}/bin/tool"), b"again")]), &["duplicate entry"]),
        ("reserved marker", with(vec![file(&format!("{TOP}/.drover-sha256"), b"0")]), &["reserved"]),
        ("missing parcel.json", without(&format!("{TOP}/meta/parcel.json")), &["no meta/parcel.json"]),
        ("invalid parcel.json", invalid_meta_entries, &["invalid json", "parcel.json"]),
        ("unsupported schema", wrong_schema, &["schema_version", "unsupported"]),
        ("meta name mismatch", other_name, &["redis 2.0", "top directory is redis-1.0/"]),
        ("bad env script", bad_env, &["redis_env.sh", "line 1"]),
    ]
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    for (what, entries, words) in hostile_cases() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_raw(tmp.path(), FILE, &entries);
        let root = tmp.path().join("parcels");
        let err = install(&path, None, &root).expect_err(what).to_string();
        for w in words {
            assert!(err.contains(w), "{what}: error {err:?} does not mention {w:?}");
        }
        assert!(err.contains(FILE), "{what}: error {err:?} does not name the file");
        assert_clean(&root, TOP);
        assert!(!tmp.path().join("x").exists() && !tmp.path().join("etc").exists(), "{what}: wrote outside");
        // inspect (used by index) refuses the same archives.
        assert!(parcel::inspect(&path).is_err(), "{what}: inspect accepted it");
    }
}

#[test]
fn file_name_must_match_meta() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_raw(tmp.path(), "redis-1.0-trixie.parcel", &good_entries("redis", "1.0"));
    let root = tmp.path().join("parcels");
    let err = install(&path, None, &root).unwrap_err().to_string();
    assert!(err.contains("the file name says redis 1.0 trixie"), "{err}");
    assert_clean(&root, TOP);
    let path = write_raw(tmp.path(), "redis-2.0-bookworm.parcel", &good_entries("redis", "1.0"));
    let err = install(&path, None, &root).unwrap_err().to_string();
    assert!(err.contains("top directory must be redis-2.0/"), "{err}");
    assert_clean(&root, "redis-2.0");
}

#[test]
fn hash_and_size_are_checked_before_extracting() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_raw(tmp.path(), FILE, &good_entries("redis", "1.0"));
    let root = tmp.path().join("parcels");
    let info = parcel::inspect(&path).unwrap();

    let wrong_hash = Expected { sha256: "0".repeat(64), size: info.size };
    let err = install(&path, Some(&wrong_hash), &root).unwrap_err();
    assert!(matches!(err, ParcelError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256 mismatch") && err.to_string().contains(&info.sha256), "{err}");
    assert_clean(&root, TOP);

    let wrong_size = Expected { sha256: info.sha256.clone(), size: info.size + 1 };
    let err = install(&path, Some(&wrong_size), &root).unwrap_err();
    assert!(err.to_string().contains("size mismatch"), "{err}");
    assert_clean(&root, TOP);
}

#[test]
fn truncated_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = good_entries("redis", "1.0");
    // Incompressible content so the cut lands inside the data.
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    entries.push(file(&format!("{TOP}/lib/big"), &noise));
    let path = write_raw(tmp.path(), FILE, &entries);
    let bytes = fs::read(&path).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 4, 30] {
        fs::write(&path, &bytes[..cut]).unwrap();
        let root = tmp.path().join("parcels");
        let err = install(&path, None, &root).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "cut at {cut}: {err}");
        assert_clean(&root, TOP);
    }
    // Garbage after the gzip stream.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing");
    fs::write(&path, &longer).unwrap();
    let err = install(&path, None, &tmp.path().join("parcels")).unwrap_err().to_string();
    assert!(err.contains("after the gzip stream"), "{err}");
    // Not gzip at all.
    fs::write(&path, b"PK\x03\x04 not a parcel").unwrap();
    let err = install(&path, None, &tmp.path().join("parcels")).unwrap_err().to_string();
    assert!(err.contains("truncated or corrupt"), "{err}");
}

#[test]
fn install_is_complete_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = good_entries("redis", "1.0");
    entries.push(hardlink(&format!("{TOP}/bin/tool-hard"), &format!("{TOP}/bin/tool")));
    entries.push(file(&format!("{TOP}/deep/er/file"), b"implicit parents"));
    let path = write_raw(tmp.path(), FILE, &entries);
    let root = tmp.path().join("parcels");
    let info = parcel::inspect(&path).unwrap();
    let expected = Expected { sha256: info.sha256.clone(), size: info.size };
    let first = install(&path, Some(&expected), &root).unwrap();
    assert!(!first.already_present);
    assert_eq!(first.dir, root.join(TOP));
    assert_eq!(fs::read_link(root.join(TOP).join("bin/tool2")).unwrap(), Path::new("tool"));
    assert_eq!(fs::read(root.join(TOP).join("bin/tool-hard")).unwrap(), b"#!/bin/sh\necho tool\n");
    assert_eq!(fs::read(root.join(TOP).join("deep/er/file")).unwrap(), b"implicit parents");
    assert_eq!(fs::read_to_string(root.join(TOP).join(".drover-sha256")).unwrap().trim(), info.sha256);

    let again = install(&path, Some(&expected), &root).unwrap();
    assert!(again.already_present);

    // Another archive for the same NAME-VERSION is refused.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let mut changed = good_entries("redis", "1.0");
    changed.push(file(&format!("{TOP}/extra"), b"different"));
    let path2 = write_raw(&other, FILE, &changed);
    let err = install(&path2, None, &root).unwrap_err().to_string();
    assert!(err.contains("already installed from another archive"), "{err}");
    assert_eq!(installed(&root).unwrap().len(), 1);
}

#[test]
fn activation_switches_the_symlink_and_keeps_the_previous_version() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("parcels");
    for v in ["1.0", "2.0"] {
        let p = write_raw(tmp.path(), &format!("redis-{v}-bookworm.parcel"), &good_entries("redis", v));
        install(&p, None, &root).unwrap();
    }
    assert_eq!(active_version(&root, "redis").unwrap(), None);
    assert!(matches!(activate(&root, "redis", "3.0"), Err(ParcelError::NotInstalled { .. })));

    assert_eq!(activate(&root, "redis", "1.0").unwrap(), None);
    assert_eq!(active_version(&root, "redis").unwrap().as_deref(), Some("1.0"));
    assert_eq!(fs::read_link(root.join("redis")).unwrap(), Path::new("redis-1.0"));

    assert_eq!(activate(&root, "redis", "2.0").unwrap().as_deref(), Some("1.0"));
    assert_eq!(active_version(&root, "redis").unwrap().as_deref(), Some("2.0"));
    assert!(root.join("redis-1.0/meta/parcel.json").exists(), "v1 must stay on disk");
    assert!(!root.join(".redis.link-tmp").exists());

    let list = installed(&root).unwrap();
    let summary: Vec<(&str, bool)> = list.iter().map(|i| (i.version.as_str(), i.active)).collect();
    assert_eq!(summary, [("1.0", false), ("2.0", true)]);

    let env = parcel_env(&root, "redis", &BTreeMap::from([("PATH".to_owned(), "/usr/bin".to_owned())])).unwrap();
    let home = format!("{}/redis-2.0", root.display());
    assert_eq!(env, [("REDIS_HOME".to_owned(), home.clone()), ("PATH".to_owned(), format!("{home}/bin:/usr/bin"))]);

    let err = remove(&root, "redis", "2.0").unwrap_err();
    assert!(err.to_string().contains("is active"), "{err}");
    assert!(root.join("redis-2.0").exists());
    remove(&root, "redis", "1.0").unwrap();
    assert!(!root.join("redis-1.0").exists());
    assert!(matches!(activate(&root, "redis", "1.0"), Err(ParcelError::NotInstalled { .. })));
    assert_eq!(active_version(&root, "redis").unwrap().as_deref(), Some("2.0"), "failed activation changed nothing");

    assert_eq!(deactivate(&root, "redis").unwrap().as_deref(), Some("2.0"));
    assert_eq!(active_version(&root, "redis").unwrap(), None);
    assert!(parcel_env(&root, "redis", &BTreeMap::new()).is_err());
    remove(&root, "redis", "2.0").unwrap();
    assert!(installed(&root).unwrap().is_empty());
}

#[test]
fn incomplete_installs_cannot_be_activated_and_are_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A directory without the marker looks like a crash between extraction and rename.
    fs::create_dir_all(root.join("redis-1.0/meta")).unwrap();
    fs::write(root.join("redis-1.0/meta/parcel.json"), meta("redis", "1.0").to_json()).unwrap();
    assert!(matches!(activate(root, "redis", "1.0"), Err(ParcelError::NotInstalled { .. })));
    assert!(installed(root).unwrap().is_empty());
    fs::create_dir_all(root.join(".partial-redis-2.0-abc/bin")).unwrap();
    fs::create_dir_all(root.join(".removing-redis-0.9")).unwrap();
    let removed = cleanup_partials(root).unwrap();
    assert_eq!(removed.len(), 2);
    assert!(!root.join(".partial-redis-2.0-abc").exists());
    assert!(root.join("redis-1.0").exists(), "cleanup leaves other directories alone");
    // NAME that is a real directory is never replaced.
    fs::create_dir(root.join("nginx")).unwrap();
    assert!(active_version(root, "nginx").is_err());
}

/// Installs `NAME-VERSION` under `root` with these `depends`, `conflicts` and `provides`.
fn install_related(tmp: &Path, root: &Path, id: (&str, &str), depends: &[&str], conflicts: &[&str], provides: &[&str]) {
    let (name, version) = id;
    let mut m = meta(name, version);
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    (m.depends, m.conflicts, m.provides) = (strings(depends), strings(conflicts), strings(provides));
    let json_path = format!("{name}-{version}/meta/parcel.json");
    let entries: Vec<Raw> = good_entries(name, version)
        .into_iter()
        .map(|e| if e.path == json_path.as_bytes() { file(&json_path, &m.to_json()) } else { e })
        .collect();
    let dir = tmp.join(format!("src-{name}-{version}"));
    fs::create_dir_all(&dir).unwrap();
    install(&write_raw(&dir, &format!("{name}-{version}-bookworm.parcel"), &entries), None, root).unwrap();
}

#[test]
fn depends_and_conflicts_are_enforced_at_activation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("parcels");
    install_related(tmp.path(), &root, ("jre", "11.0-1"), &[], &[], &[]);
    install_related(tmp.path(), &root, ("jre", "17.0-1"), &[], &[], &["java"]);
    install_related(tmp.path(), &root, ("zookeeper", "3.8.0-1"), &["jre (>= 17)"], &[], &[]);
    install_related(tmp.path(), &root, ("app", "1.0"), &["java"], &[], &[]);
    install_related(tmp.path(), &root, ("tool", "1.0"), &["java (>= 17)", "zookeeper"], &[], &[]);
    install_related(tmp.path(), &root, ("redis", "7.0.15"), &[], &["keydb"], &[]);
    install_related(tmp.path(), &root, ("keydb", "6.2"), &[], &[], &[]);
    install_related(tmp.path(), &root, ("cache", "1.0"), &[], &["redis (<< 7)"], &["memstore"]);
    install_related(tmp.path(), &root, ("web", "1.0"), &[], &["memstore"], &[]);
    let refused = |name: &str, version: &str| match activate(&root, name, version) {
        Err(e @ ParcelError::Refused { .. }) => {
            assert_eq!(active_version(&root, name).unwrap(), None, "{name}: nothing activated");
            e.to_string()
        }
        other => panic!("activating {name} {version} should be refused: {other:?}"),
    };

    // Depends: not active, then an active version too old, then met.
    assert_eq!(
        refused("zookeeper", "3.8.0-1"),
        "activate zookeeper-3.8.0-1: depends on jre (>= 17), which is not active on this host"
    );
    activate(&root, "jre", "11.0-1").unwrap();
    assert_eq!(
        refused("zookeeper", "3.8.0-1"),
        "activate zookeeper-3.8.0-1: depends on jre (>= 17), but the active version is jre-11.0-1"
    );
    assert_eq!(refused("app", "1.0"), "activate app-1.0: depends on java, which is not active on this host");
    activate(&root, "jre", "17.0-1").unwrap();
    activate(&root, "zookeeper", "3.8.0-1").unwrap();
    // `provides` meets a dependency without a version only.
    activate(&root, "app", "1.0").unwrap();
    deactivate(&root, "zookeeper").unwrap();
    assert_eq!(
        refused("tool", "1.0"),
        "activate tool-1.0: depends on java (>= 17), which is not active on this host; \
         depends on zookeeper, which is not active on this host"
    );

    // Conflicts, declared by the parcel being activated, then by the active one.
    activate(&root, "keydb", "6.2").unwrap();
    assert_eq!(
        refused("redis", "7.0.15"),
        "activate redis-7.0.15: conflicts with active parcel keydb-6.2 (declared by redis-7.0.15)"
    );
    deactivate(&root, "keydb").unwrap();
    activate(&root, "redis", "7.0.15").unwrap();
    assert_eq!(
        refused("keydb", "6.2"),
        "activate keydb-6.2: conflicts with active parcel redis-7.0.15 (declared by redis-7.0.15)"
    );
    // A versioned conflict that the active version does not meet; a conflict with a provided name.
    activate(&root, "cache", "1.0").unwrap();
    assert_eq!(refused("web", "1.0"), "activate web-1.0: conflicts with active parcel cache-1.0 (declared by web-1.0)");
    assert_eq!(active_version(&root, "redis").unwrap().as_deref(), Some("7.0.15"));
}
