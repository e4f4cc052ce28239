//! The builder, end to end without network: tiny `.deb` files made with `dpkg-deb -b`, a recipe
//! that uses them through `--deb-dir`, two builds compared byte for byte, and the result installed
//! and activated.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use drover_parcel_builder::{BuildOptions, Recipe, build};
use drover_parcels::{Component, activate, inspect, install, parcel_env};

/// Builds `dir/NAME_VERSION_all.deb` holding `files` (path -> (content, executable)) and `links`.
fn make_deb(
    dir: &Path,
    name: &str,
    version: &str,
    depends: &str,
    files: &[(&str, &str, bool)],
    links: &[(&str, &str)],
) {
    let root = dir.join(format!("src-{name}"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Drover Tests <tests@example.invalid>\nDescription: test package {name}\n"
    );
    if !depends.is_empty() {
        control.push_str(&format!("Depends: {depends}\n"));
    }
    fs::write(root.join("DEBIAN/control"), control).unwrap();
    for (path, content, exec) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(if *exec { 0o755 } else { 0o644 })).unwrap();
    }
    for (path, target) in links {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
    }
    let out = dir.join(format!("{name}_{version}_all.deb"));
    let status =
        Command::new("dpkg-deb").args(["--root-owner-group", "-Zgzip", "-b"]).arg(&root).arg(&out).output().unwrap();
    assert!(status.status.success(), "dpkg-deb -b: {}", String::from_utf8_lossy(&status.stderr));
    fs::remove_dir_all(root).unwrap();
}

fn fixture(tmp: &Path) -> (PathBuf, PathBuf) {
    let debs = tmp.join("debs");
    fs::create_dir_all(&debs).unwrap();
    make_deb(
        &debs,
        "fakesrv",
        "1:1.2.3-1",
        "libfake1 (>= 1.0), libc6 (>= 2.34), skipme, adduser | fakeuser",
        &[
            ("usr/bin/fakesrv", "#!/bin/sh\necho fakesrv 1.2.3\n", true),
            ("usr/share/doc/fakesrv/copyright", "MIT\n", false),
        ],
        &[("usr/bin/fakesrv-alias", "/usr/bin/fakesrv"), ("etc/fakesrv/conf", "/etc/fakesrv.d")],
    );
    make_deb(&debs, "libfake1", "1.0-2", "", &[("usr/lib/x86_64-linux-gnu/libfake.so.1", "ELF-ish\n", false)], &[]);
    make_deb(&debs, "skipme", "9", "", &[("usr/bin/skipme", "no\n", true)], &[]);
    make_deb(&debs, "unrelated", "1", "", &[("usr/bin/unrelated", "no\n", true)], &[]);

    let recipe = tmp.join("recipe");
    fs::create_dir_all(recipe.join("files")).unwrap();
    fs::write(recipe.join("files/hello.txt"), "hello\n").unwrap();
    fs::write(
        recipe.join("parcel.toml"),
        r#"
name = "fakesrv"
version = "1.2.3-1"
distro = "bookworm"
packages = ["fakesrv"]
skip_packages = ["skipme"]
exclude = ["usr/share/doc", "usr/share/man"]
depends = ["jre"]
extra_files = [{ src = "files/hello.txt", dest = "etc/hello.txt" }]

[env]
FAKESRV_HOME = "$PARCELS_ROOT/$PARCEL_DIRNAME"
PATH = "$PARCELS_ROOT/$PARCEL_DIRNAME/usr/bin:$PATH"
LD_LIBRARY_PATH = "$PARCELS_ROOT/$PARCEL_DIRNAME/usr/lib/{multiarch}:$LD_LIBRARY_PATH"
"#,
    )
    .unwrap();
    (recipe, debs)
}

fn options(tmp: &Path, out: &str, debs: &Path) -> BuildOptions {
    BuildOptions { out_dir: tmp.join(out), version: None, cache_dir: None, deb_dir: Some(debs.to_path_buf()) }
}

#[test]
fn recipe_builds_reproducibly_from_local_debs() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, debs) = fixture(tmp.path());
    let mut lines = Vec::new();
    let a = build(&recipe, &options(tmp.path(), "a", &debs), &mut |l| lines.push(l.to_owned())).unwrap();
    assert!(lines.iter().any(|l| l == "[1/2] downloading fakesrv 1:1.2.3-1"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "[2/2] unpacking libfake1"), "{lines:#?}");
    let names: Vec<&str> = a.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fakesrv", "libfake1"], "skipme is skipped, libc6 and adduser count as base");
    assert_eq!(
        a.meta.components,
        [
            Component { name: "fakesrv".into(), version: "1.2.3".into(), pkg_version: "1:1.2.3-1".into() },
            Component { name: "libfake1".into(), version: "1.0".into(), pkg_version: "1.0-2".into() },
        ]
    );
    assert_eq!(a.parcel.path.file_name().unwrap(), "fakesrv-1.2.3-1-bookworm.parcel");

    // Other mtimes on every input (the debs' unpacked files get the debs' mtimes; the extra file
    // and the recipe are touched) give the same bytes.
    let later = SystemTime::now() + Duration::from_secs(3600);
    for f in ["files/hello.txt", "parcel.toml"] {
        fs::File::open(recipe.join(f)).unwrap().set_modified(later).unwrap();
    }
    let b = build(&recipe, &options(tmp.path(), "b", &debs), &mut |_| {}).unwrap();
    assert_eq!(a.parcel.sha256, b.parcel.sha256);
    assert_eq!(fs::read(&a.parcel.path).unwrap(), fs::read(&b.parcel.path).unwrap());

    // Contents: excluded docs gone, absolute symlinks made relative, extra file added.
    let info = inspect(&a.parcel.path).unwrap();
    assert_eq!(info.meta.depends, ["jre"]);
    let root = tmp.path().join("parcels");
    let inst = install(&a.parcel.path, None, &root).unwrap();
    assert!(!inst.dir.join("usr/share/doc").exists());
    assert!(!inst.dir.join("usr/bin/skipme").exists());
    assert_eq!(fs::read_link(inst.dir.join("usr/bin/fakesrv-alias")).unwrap(), Path::new("fakesrv"));
    assert_eq!(fs::read_link(inst.dir.join("etc/fakesrv/conf")).unwrap(), Path::new("../fakesrv.d"));
    assert_eq!(fs::read_to_string(inst.dir.join("etc/hello.txt")).unwrap(), "hello\n");
    assert_eq!(fs::metadata(inst.dir.join("usr/bin/fakesrv")).unwrap().permissions().mode() & 0o777, 0o755);

    // It depends on jre: activation is refused until a jre is active.
    let err = activate(&root, "fakesrv", "1.2.3-1").unwrap_err().to_string();
    assert_eq!(err, "activate fakesrv-1.2.3-1: depends on jre, which is not active on this host");
    let jre_stage = tmp.path().join("jre-staging");
    fs::create_dir_all(jre_stage.join("meta")).unwrap();
    fs::write(jre_stage.join("meta/jre_env.sh"), "export JAVA_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME\n").unwrap();
    let jre_meta = drover_parcels::ParcelMeta {
        schema_version: 1,
        name: "jre".into(),
        version: "17".into(),
        distro: "bookworm".into(),
        depends: vec![],
        conflicts: vec![],
        provides: vec![],
        components: vec![],
        scripts: drover_parcels::Scripts { defines: "jre_env.sh".into() },
    };
    let jre = drover_parcels::build_archive(&jre_stage, &jre_meta, &tmp.path().join("jre-out")).unwrap();
    install(&jre.path, None, &root).unwrap();
    activate(&root, "jre", "17").unwrap();
    activate(&root, "fakesrv", "1.2.3-1").unwrap();
    let env: BTreeMap<String, String> = parcel_env(&root, "fakesrv", &BTreeMap::new()).unwrap().into_iter().collect();
    let home = format!("{}/fakesrv-1.2.3-1", root.display());
    assert_eq!(env["FAKESRV_HOME"], home);
    assert_eq!(env["PATH"], format!("{home}/usr/bin"));
    assert!(env["LD_LIBRARY_PATH"].starts_with(&format!("{home}/usr/lib/")), "{env:?}");
    let out = Command::new(format!("{}/fakesrv", env["PATH"])).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fakesrv 1.2.3\n");
}

#[test]
fn version_override_and_errors_name_the_culprit() {
    let tmp = tempfile::tempdir().unwrap();
    let (recipe, debs) = fixture(tmp.path());
    let mut opts = options(tmp.path(), "out", &debs);
    opts.version = Some("1.2.3-2".into());
    let v2 = build(&recipe, &opts, &mut |_| {}).unwrap();
    assert_eq!(v2.parcel.path.file_name().unwrap(), "fakesrv-1.2.3-2-bookworm.parcel");
    assert_eq!(v2.meta.version, "1.2.3-2");
    opts.version = Some("bad/version".into());
    let err = build(&recipe, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("bad/version"), "{err}");

    // A package missing from --deb-dir.
    let toml = fs::read_to_string(recipe.join("parcel.toml")).unwrap();
    fs::write(
        recipe.join("parcel.toml"),
        toml.replace("packages = [\"fakesrv\"]", "packages = [\"fakesrv\", \"ghost\"]"),
    )
    .unwrap();
    let err = build(&recipe, &options(tmp.path(), "x", &debs), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("package ghost not found"), "{err}");

    // Recipe errors name the file and the field.
    let file = "parcels/x/parcel.toml";
    let cases = [
        (
            "name = \"x\"\nversion = \"1\"\ndistro = \"bookworm\"\npackages = [\"a\"]\ncolour = 1\n",
            "unknown field `colour`",
        ),
        ("name = \"x-y\"\nversion = \"1\"\ndistro = \"bookworm\"\npackages = [\"ab\"]\n", "name"),
        ("name = \"x\"\nversion = \"1\"\ndistro = \"bookworm\"\n", "nothing to put in the parcel"),
        (
            "name = \"x\"\nversion = \"1\"\ndistro = \"bookworm\"\npackages = [\"ab\"]\nexclude = [\"../etc\"]\n",
            "`exclude`",
        ),
        (
            "name = \"x\"\nversion = \"1\"\ndistro = \"bookworm\"\npackages = [\"ab\"]\n[env]\nA = \"$HOME/x\"\n",
            "only $PARCELS_ROOT",
        ),
        (
            "name = \"x\"\nversion = \"1\"\ndistro = \"bookworm\"\npackages = [\"ab\"]\n[env]\nA = \"$(id)\"\n",
            "`env.A`",
        ),
    ];
    for (text, word) in cases {
        let err = Recipe::parse(text, file).expect_err(word).to_string();
        assert!(err.contains(word) && err.contains(file), "{word}: {err}");
    }
}

#[test]
fn shipped_recipes_are_valid() {
    let parcels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../parcels");
    for name in ["redis", "zookeeper", "nginx", "jre"] {
        let r = Recipe::load(&parcels.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.name, name);
        assert_eq!(r.distro, "bookworm");
    }
    let zk = Recipe::load(&parcels.join("zookeeper")).unwrap();
    assert_eq!(zk.depends, ["jre"]);
}
