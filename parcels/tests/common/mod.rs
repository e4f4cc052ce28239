//! Helpers shared by the parcel tests: sample metas and trees, and hand-made (possibly hostile)
//! archives written with the `tar` crate's low-level header API.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use drover_parcels::{Component, ParcelMeta, Scripts};
use tar::{EntryType, Header};

pub fn meta(name: &str, version: &str) -> ParcelMeta {
    ParcelMeta {
        schema_version: 1,
        name: name.into(),
        version: version.into(),
        distro: "bookworm".into(),
        depends: vec![],
        conflicts: vec![],
        provides: vec![],
        components: vec![Component { name: name.into(), version: "1.0".into(), pkg_version: "1.0-1".into() }],
        scripts: Scripts { defines: format!("{name}_env.sh") },
    }
}

pub fn env_script(name: &str) -> String {
    format!(
        "#!/bin/bash\nexport {}_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME\nexport PATH=\"${}_HOME/bin:$PATH\"\n",
        name.to_uppercase(),
        name.to_uppercase()
    )
}

/// A staging tree: bin/tool (executable), lib/libx.so.1 + a relative symlink, share/doc/readme,
/// meta/<name>_env.sh.
pub fn staging(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join("staging");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("lib")).unwrap();
    fs::create_dir_all(root.join("share/doc")).unwrap();
    fs::create_dir_all(root.join("meta")).unwrap();
    fs::write(root.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("lib/libx.so.1"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("libx.so.1", root.join("lib/libx.so")).unwrap();
    fs::write(root.join("share/doc/readme"), "hello\n").unwrap();
    fs::set_permissions(root.join("share/doc/readme"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("meta").join(format!("{name}_env.sh")), env_script(name)).unwrap();
    root
}

/// One entry of a hand-made archive. Paths and link targets are written as given, unchecked.
#[derive(Clone)]
pub struct Raw {
    pub path: Vec<u8>,
    pub kind: EntryType,
    pub link: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

pub fn dir(path: &str) -> Raw {
    Raw { path: path.as_bytes().to_vec(), kind: EntryType::Directory, link: None, data: vec![] }
}

pub fn file(path: &str, data: &[u8]) -> Raw {
    Raw { path: path.as_bytes().to_vec(), kind: EntryType::Regular, link: None, data: data.to_vec() }
}

pub fn symlink(path: &str, target: &str) -> Raw {
    Raw {
        path: path.as_bytes().to_vec(),
        kind: EntryType::Symlink,
        link: Some(target.as_bytes().to_vec()),
        data: vec![],
    }
}

pub fn hardlink(path: &str, target: &str) -> Raw {
    Raw { path: path.as_bytes().to_vec(), kind: EntryType::Link, link: Some(target.as_bytes().to_vec()), data: vec![] }
}

pub fn special(path: &str, kind: EntryType) -> Raw {
    Raw { path: path.as_bytes().to_vec(), kind, link: None, data: vec![] }
}

/// The entries of a valid parcel `name-version`.
pub fn good_entries(name: &str, version: &str) -> Vec<Raw> {
    let top = format!("{name}-{version}");
    vec![
        dir(&format!("{top}/")),
        dir(&format!("{top}/meta/")),
        file(&format!("{top}/meta/parcel.json"), &meta(name, version).to_json()),
        file(&format!("{top}/meta/{name}_env.sh"), env_script(name).as_bytes()),
        dir(&format!("{top}/bin/")),
        file(&format!("{top}/bin/tool"), b"#!/bin/sh\necho tool\n"),
        symlink(&format!("{top}/bin/tool2"), "tool"),
    ]
}

/// Writes the entries as a gzip-compressed tar to `dir/file_name`.
pub fn write_raw(dir: &Path, file_name: &str, entries: &[Raw]) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.path.len()].copy_from_slice(&e.path);
            if let Some(l) = &e.link {
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(if e.kind == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let bytes = gz.finish().unwrap();
    let path = dir.join(file_name);
    fs::write(&path, bytes).unwrap();
    path
}

/// Nothing half-installed: no `.partial-*` directory and no `NAME-VERSION` directory.
pub fn assert_clean(root: &Path, dir_name: &str) {
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with(".partial-"), "leftover {n} in {}", root.display());
            assert_ne!(n, dir_name, "{dir_name} was installed");
        }
    }
}
