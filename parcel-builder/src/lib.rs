//! Recipes (`parcels/<name>/parcel.toml`) and the builder that turns one into a parcel from
//! Debian packages: resolve the packages and the dependencies a minimal base image lacks,
//! download them, `dpkg-deb -x` each into a staging tree, drop excluded paths, make absolute
//! symlinks relative, add extra files, meta and env script, and write the archive with
//! [`build_archive_with`](drover_parcels::archive::build_archive_with).
//!
//! Packages come from a [`DebSource`]: [`AptSource`] (apt-cache, apt-get download, a cache
//! directory) or [`DirSource`] (a directory of `.deb` files, for tests and offline builds).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component as PathComponent, Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use drover_parcels::ParcelError;
use drover_parcels::archive::{ArchiveOptions, BuiltParcel, build_archive_with};
use drover_parcels::env;
use drover_parcels::meta::{Component, ParcelMeta, SCHEMA_VERSION, Scripts, upstream_version};
use drover_parcels::name::ParcelId;

/// Why a recipe could not be loaded or built. Every message names the file, command or parcel
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Recipe { file: String, message: String },
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    /// The parcel format refused something: a name, the meta, the archive.
    #[error(transparent)]
    Parcel(#[from] ParcelError),
}

/// Attaches the path to an `io::Error`.
trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, BuildError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, BuildError> {
        self.map_err(|source| BuildError::Io { path: show(path.as_ref()), source })
    }
}

/// `path` shown in messages.
fn show(path: &Path) -> String {
    path.display().to_string()
}

/// The recipe's file name inside its directory.
pub const RECIPE_FILE: &str = "parcel.toml";

/// Packages the `drover/base` image installs on top of Debian's required and essential ones;
/// they and their dependencies are left out of parcels.
pub const EXTRA_BASE_PACKAGES: [&str; 3] = ["ca-certificates", "procps", "iproute2"];

/// `parcel.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    pub distro: String,
    /// Debian packages to include, with their dependencies a minimal base image lacks.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages never to include, even when a dependency names them (another parcel provides
    /// them, or they only matter to a system install: init scripts, adduser).
    #[serde(default)]
    pub skip_packages: Vec<String>,
    /// Paths inside the parcel to drop, `/`-separated, `*` and `?` within a component; a
    /// directory takes its whole subtree with it. E.g. `usr/share/doc`, `usr/share/man`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files copied from the recipe directory into the parcel.
    #[serde(default)]
    pub extra_files: Vec<ExtraFile>,
    #[serde(default)]
    pub depends: Vec<String>,
    #[serde(default)]
    pub conflicts: Vec<String>,
    #[serde(default)]
    pub provides: Vec<String>,
    /// An env script in the recipe directory, copied as `meta/<name>_env.sh`. Exclusive with `env`.
    pub env_script: Option<String>,
    /// Variables for a generated env script, written in name order. A value may use
    /// `$PARCELS_ROOT`, `$PARCEL_DIRNAME` and the variable itself (`PATH = "...:$PATH"`), and the
    /// build-time placeholders `{multiarch}` (`x86_64-linux-gnu`) and `{debarch}` (`amd64`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// mtime of every archive entry; default `$SOURCE_DATE_EPOCH`, else 0.
    pub mtime: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Relative to the recipe directory.
    pub src: String,
    /// Relative to the parcel's top directory.
    pub dest: String,
}

impl Recipe {
    /// Reads and validates `dir/parcel.toml`.
    pub fn load(dir: &Path) -> Result<Recipe, BuildError> {
        let path = dir.join(RECIPE_FILE);
        let text = fs::read_to_string(&path).at(&path)?;
        Recipe::parse(&text, &show(&path))
    }

    pub fn parse(text: &str, file: &str) -> Result<Recipe, BuildError> {
        let recipe: Recipe =
            toml::from_str(text).map_err(|e| BuildError::Recipe { file: file.to_owned(), message: e.to_string() })?;
        recipe.validate(file)?;
        Ok(recipe)
    }

    pub fn validate(&self, file: &str) -> Result<(), BuildError> {
        let bad = |message: String| BuildError::Recipe { file: file.to_owned(), message };
        ParcelId::new(&self.name, &self.version, &self.distro).map_err(|e| bad(e.to_string()))?;
        if self.packages.is_empty() && self.extra_files.is_empty() {
            return Err(bad("`packages` and `extra_files` are both empty: nothing to put in the parcel".into()));
        }
        for p in self.packages.iter().chain(&self.skip_packages) {
            if !is_deb_name(p) {
                return Err(bad(format!("`packages`/`skip_packages`: {p:?} is not a Debian package name")));
            }
        }
        for pattern in &self.exclude {
            relative_path(pattern).map_err(|e| bad(format!("`exclude`: {pattern:?}: {e}")))?;
        }
        for f in &self.extra_files {
            relative_path(&f.src).map_err(|e| bad(format!("`extra_files`: src {:?}: {e}", f.src)))?;
            let dest = relative_path(&f.dest).map_err(|e| bad(format!("`extra_files`: dest {:?}: {e}", f.dest)))?;
            if dest.starts_with("meta") {
                return Err(bad(format!("`extra_files`: dest {:?}: meta/ is written by the builder", f.dest)));
            }
        }
        if self.env_script.is_some() && !self.env.is_empty() {
            return Err(bad("set either `env_script` or `[env]`, not both".into()));
        }
        if let Some(s) = &self.env_script {
            relative_path(s).map_err(|e| bad(format!("`env_script`: {s:?}: {e}")))?;
        }
        for (name, value) in &self.env {
            let script = format!("export {name}=\"{value}\"\n");
            let parsed = env::parse(&script, file).map_err(|e| bad(format!("`env.{name}`: {e}")))?;
            for a in &parsed.assignments {
                for piece in &a.value {
                    if let env::Piece::Var(v) = piece
                        && v != name
                        && !env::RESERVED.contains(&v.as_str())
                    {
                        return Err(bad(format!(
                            "`env.{name}`: ${v}: only $PARCELS_ROOT, $PARCEL_DIRNAME and ${name} itself may be used"
                        )));
                    }
                }
            }
        }
        let meta = self.meta(&self.version, Vec::new());
        Ok(meta.validate(file)?)
    }

    /// The env script's file name in `meta/`.
    pub fn script_name(&self) -> String {
        format!("{}_env.sh", self.name)
    }

    fn meta(&self, version: &str, components: Vec<Component>) -> ParcelMeta {
        ParcelMeta {
            schema_version: SCHEMA_VERSION,
            name: self.name.clone(),
            version: version.to_owned(),
            distro: self.distro.clone(),
            depends: self.depends.clone(),
            conflicts: self.conflicts.clone(),
            provides: self.provides.clone(),
            components,
            scripts: Scripts { defines: self.script_name() },
        }
    }

    /// The generated env script (`[env]`, or `NAME_HOME` alone when the recipe sets neither).
    pub fn generated_env_script(&self, arch: &Arch) -> String {
        let mut out = format!(
            "#!/bin/bash\n# Generated by `drover parcel build` from {}/{RECIPE_FILE}. Drover reads it without a shell:\n# only `export NAME=VALUE` lines (see docs/parcels.md).\n",
            self.name
        );
        let vars: Vec<(String, String)> = if self.env.is_empty() {
            vec![(format!("{}_HOME", self.name.to_uppercase()), "$PARCELS_ROOT/$PARCEL_DIRNAME".to_owned())]
        } else {
            self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (k, v) in vars {
            let v = v.replace("{multiarch}", &arch.multiarch).replace("{debarch}", &arch.debian);
            out.push_str(&format!("export {k}=\"{v}\"\n"));
        }
        out
    }
}

fn is_deb_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'))
}

/// A relative path without `..`, as components.
fn relative_path(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if s.is_empty() {
        return Err("empty path".into());
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            PathComponent::Normal(n) => out.push(n),
            PathComponent::CurDir => {}
            _ => return Err("must be a relative path without `..`".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    Ok(out)
}

/// The build machine's Debian architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// `amd64`.
    pub debian: String,
    /// `x86_64-linux-gnu`.
    pub multiarch: String,
}

impl Arch {
    pub fn from_debian(debian: &str) -> Result<Arch, BuildError> {
        let multiarch = match debian {
            "amd64" => "x86_64-linux-gnu",
            "arm64" => "aarch64-linux-gnu",
            "armhf" => "arm-linux-gnueabihf",
            "i386" => "i386-linux-gnu",
            "ppc64el" => "powerpc64le-linux-gnu",
            "s390x" => "s390x-linux-gnu",
            "riscv64" => "riscv64-linux-gnu",
            other => {
                return Err(BuildError::Command {
                    command: "dpkg --print-architecture".into(),
                    message: format!("unknown architecture {other:?}"),
                });
            }
        };
        Ok(Arch { debian: debian.to_owned(), multiarch: multiarch.to_owned() })
    }

    /// Asks dpkg.
    pub fn host() -> Result<Arch, BuildError> {
        let out = run(Command::new("dpkg").arg("--print-architecture"))?;
        Arch::from_debian(String::from_utf8_lossy(&out).trim())
    }
}

/// A Debian package chosen for a parcel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    /// Full Debian version, e.g. `5:7.0.15-1~deb12u10`.
    pub version: String,
}

/// Where the builder gets packages from.
pub trait DebSource {
    /// The packages to unpack: `roots` and, recursively, their dependencies, leaving out `skip`
    /// and whatever the base image already has. In a stable order, roots first.
    fn resolve(
        &mut self,
        roots: &[String],
        skip: &BTreeSet<String>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<DebPackage>, BuildError>;

    /// A local `.deb` file of `pkg`, downloading it if needed.
    fn fetch(&mut self, pkg: &DebPackage) -> Result<PathBuf, BuildError>;
}

/// One alternative of a dependency: a real package, or a virtual one with its providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alt {
    name: String,
    providers: Option<Vec<String>>,
}

impl Alt {
    fn real(name: &str) -> Alt {
        Alt { name: name.to_owned(), providers: None }
    }
}

/// One `Depends` item: alternatives, any of which satisfies it.
type Group = Vec<Alt>;

/// Dependency groups by package.
type DependsMap = BTreeMap<String, Vec<Group>>;

/// Resolution shared by both sources: breadth first from `roots`. For each dependency group the
/// first alternative already chosen, skipped or in the base wins; otherwise the first real
/// package, or the first provider of a virtual one, is added.
fn closure(
    roots: &[String],
    stop: &BTreeSet<String>,
    depends_of: &mut dyn FnMut(&[String]) -> Result<DependsMap, BuildError>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<String>, BuildError> {
    let mut chosen: Vec<String> = Vec::new();
    let mut chosen_set: BTreeSet<String> = BTreeSet::new();
    let mut level: Vec<String> = Vec::new();
    for r in roots {
        if chosen_set.insert(r.clone()) {
            chosen.push(r.clone());
            level.push(r.clone());
        }
    }
    while !level.is_empty() {
        let deps = depends_of(&level)?;
        let mut next = Vec::new();
        for pkg in &level {
            for group in deps.get(pkg).map(Vec::as_slice).unwrap_or_default() {
                let known = |n: &String| chosen_set.contains(n) || stop.contains(n);
                let satisfied = group.iter().any(|a| known(&a.name) || a.providers.iter().flatten().any(known));
                if satisfied {
                    continue;
                }
                let pick = group
                    .iter()
                    .find(|a| a.providers.is_none())
                    .map(|a| a.name.clone())
                    .or_else(|| group.iter().find_map(|a| a.providers.as_ref().and_then(|p| p.first().cloned())));
                match pick {
                    Some(p) => {
                        chosen_set.insert(p.clone());
                        chosen.push(p.clone());
                        next.push(p);
                    }
                    None => progress(&format!(
                        "warning: {pkg}: no package provides {}",
                        group.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(" | ")
                    )),
                }
            }
        }
        level = next;
    }
    Ok(chosen)
}

/// Packages from the Debian archive through apt: `apt-cache` to resolve, `apt-get download` into
/// a cache directory that later builds reuse.
#[derive(Debug, Clone)]
pub struct AptSource {
    pub cache_dir: PathBuf,
    /// Installed in the base image besides Debian's required and essential packages.
    pub extra_base: Vec<String>,
}

impl AptSource {
    pub fn new(cache_dir: PathBuf) -> AptSource {
        AptSource { cache_dir, extra_base: EXTRA_BASE_PACKAGES.iter().map(|s| (*s).to_owned()).collect() }
    }

    /// `$XDG_CACHE_HOME/drover/debs`, else `$HOME/.cache/drover/debs`, else `<tmp>/drover-debs`.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("drover/debs");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(h).join(".cache/drover/debs");
        }
        std::env::temp_dir().join("drover-debs")
    }

    fn apt_depends(pkgs: &[String]) -> Result<DependsMap, BuildError> {
        let mut cmd = Command::new("apt-cache");
        cmd.args([
            "depends",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ]);
        cmd.args(pkgs);
        let out = run(&mut cmd)?;
        Ok(parse_apt_depends(&String::from_utf8_lossy(&out)))
    }

    /// Required and essential packages (streamed from `apt-cache dumpavail`).
    fn required() -> Result<BTreeSet<String>, BuildError> {
        let mut child = Command::new("apt-cache")
            .arg("dumpavail")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BuildError::Command { command: "apt-cache dumpavail".into(), message: e.to_string() })?;
        let mut text = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut text)
                .map_err(|e| BuildError::Command { command: "apt-cache dumpavail".into(), message: e.to_string() })?;
        }
        let status = child
            .wait()
            .map_err(|e| BuildError::Command { command: "apt-cache dumpavail".into(), message: e.to_string() })?;
        if !status.success() {
            return Err(BuildError::Command { command: "apt-cache dumpavail".into(), message: status.to_string() });
        }
        let mut set = BTreeSet::new();
        for para in text.split("\n\n") {
            let mut name = None;
            let mut base = false;
            for line in para.lines() {
                if let Some(n) = line.strip_prefix("Package: ") {
                    name = Some(n.trim());
                } else if line == "Priority: required" || line == "Essential: yes" {
                    base = true;
                }
            }
            if let (Some(n), true) = (name, base) {
                set.insert(n.to_owned());
            }
        }
        if set.is_empty() {
            return Err(BuildError::Command {
                command: "apt-cache dumpavail".into(),
                message: "no required packages listed; run `apt-get update` first".into(),
            });
        }
        Ok(set)
    }

    fn candidate_versions(pkgs: &[String]) -> Result<BTreeMap<String, String>, BuildError> {
        let mut cmd = Command::new("apt-cache");
        cmd.args(["show", "--no-all-versions"]).args(pkgs);
        let out = run(&mut cmd)?;
        let text = String::from_utf8_lossy(&out);
        let mut versions = BTreeMap::new();
        for para in text.split("\n\n") {
            let field = |f: &str| para.lines().find_map(|l| l.strip_prefix(f)).map(|v| v.trim().to_owned());
            if let (Some(p), Some(v)) = (field("Package: "), field("Version: ")) {
                versions.entry(p).or_insert(v);
            }
        }
        Ok(versions)
    }
}

impl DebSource for AptSource {
    fn resolve(
        &mut self,
        roots: &[String],
        skip: &BTreeSet<String>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<DebPackage>, BuildError> {
        let required = AptSource::required()?;
        let mut base_roots: Vec<String> = required.iter().cloned().collect();
        base_roots.extend(self.extra_base.iter().cloned());
        let base: BTreeSet<String> =
            closure(&base_roots, &BTreeSet::new(), &mut AptSource::apt_depends, &mut |_| {})?.into_iter().collect();
        progress(&format!(
            "base image: {} packages (required and essential, {} and their dependencies)",
            base.len(),
            self.extra_base.join(" ")
        ));
        let mut stop = base;
        stop.extend(skip.iter().cloned());
        let roots: Vec<String> = roots.iter().filter(|r| !skip.contains(*r)).cloned().collect();
        let names = closure(&roots, &stop, &mut AptSource::apt_depends, progress)?;
        let versions = AptSource::candidate_versions(&names)?;
        names
            .into_iter()
            .map(|name| match versions.get(&name) {
                Some(v) => Ok(DebPackage { version: v.clone(), name }),
                None => Err(BuildError::Command {
                    command: format!("apt-cache show {name}"),
                    message: "no candidate version (unknown package? run `apt-get update`)".into(),
                }),
            })
            .collect()
    }

    fn fetch(&mut self, pkg: &DebPackage) -> Result<PathBuf, BuildError> {
        fs::create_dir_all(&self.cache_dir).at(&self.cache_dir)?;
        if let Some(found) = find_deb(&self.cache_dir, pkg)? {
            return Ok(found);
        }
        let spec = format!("{}={}", pkg.name, pkg.version);
        run(Command::new("apt-get").args(["download", "-q", &spec]).current_dir(&self.cache_dir))?;
        find_deb(&self.cache_dir, pkg)?.ok_or_else(|| BuildError::Command {
            command: format!("apt-get download {spec}"),
            message: format!("no .deb for it appeared in {}", show(&self.cache_dir)),
        })
    }
}

/// A `.deb` of exactly `pkg` in `dir`, checked with `dpkg-deb -f`.
fn find_deb(dir: &Path, pkg: &DebPackage) -> Result<Option<PathBuf>, BuildError> {
    let prefix = format!("{}_", pkg.name);
    let mut candidates: Vec<PathBuf> = fs::read_dir(dir)
        .at(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    candidates.sort();
    for c in candidates {
        let fields = deb_fields(&c)?;
        if fields.get("Package") == Some(&pkg.name) && fields.get("Version") == Some(&pkg.version) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Control fields of a `.deb`: Package, Version, Depends, Pre-Depends.
pub fn deb_fields(deb: &Path) -> Result<BTreeMap<String, String>, BuildError> {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).args(["Package", "Version", "Depends", "Pre-Depends"]))?;
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in String::from_utf8_lossy(&out).lines() {
        if line.starts_with(' ') {
            if let Some(k) = &last
                && let Some(v) = fields.get_mut(k)
            {
                let v: &mut String = v;
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_owned(), v.trim().to_owned());
            last = Some(k.trim().to_owned());
        }
    }
    Ok(fields)
}

/// `a (>= 1) | b, c:any` -> `[[a, b], [c]]`.
fn parse_depends_field(value: &str) -> Vec<Vec<String>> {
    value
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.trim().split([' ', '(', '[']).next().unwrap_or("");
                    let name = name.split(':').next().unwrap_or("");
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Parses `apt-cache depends` output: per package, its `Depends`/`PreDepends` groups. A line
/// starting with `|` is or-ed with the next; `<name>` is virtual and its providers follow,
/// indented further.
pub(crate) fn parse_apt_depends(text: &str) -> DependsMap {
    let mut out: DependsMap = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut group: Group = Vec::new();
    // The previous dependency line started with `|`: this one joins its group.
    let mut continues = false;
    let mut in_dep = false;
    fn flush(out: &mut DependsMap, current: &Option<String>, group: &mut Group) {
        if let Some(c) = current
            && !group.is_empty()
        {
            out.entry(c.clone()).or_default().push(std::mem::take(group));
        }
    }
    let strip_arch = |s: &str| s.split(':').next().unwrap_or(s).to_owned();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('|') {
            flush(&mut out, &current, &mut group);
            let name = strip_arch(line.trim().trim_start_matches('<').trim_end_matches('>'));
            out.entry(name.clone()).or_default();
            current = Some(name);
            continues = false;
            in_dep = false;
            continue;
        }
        let body = line.trim_start().trim_start_matches('|');
        let is_or = line.trim_start().starts_with('|');
        if let Some((kind, dep)) = body.split_once(": ") {
            if !continues {
                flush(&mut out, &current, &mut group);
            }
            in_dep = kind == "Depends" || kind == "PreDepends";
            if in_dep {
                let dep = dep.trim();
                match dep.strip_prefix('<').and_then(|d| d.strip_suffix('>')) {
                    Some(v) => group.push(Alt { name: strip_arch(v), providers: Some(Vec::new()) }),
                    None => group.push(Alt::real(&strip_arch(dep))),
                }
            }
            continues = is_or && in_dep;
        } else if in_dep
            && line.starts_with("    ")
            && let Some(Alt { providers: Some(p), .. }) = group.last_mut()
        {
            p.push(strip_arch(body.trim()));
        }
    }
    flush(&mut out, &current, &mut group);
    out
}

/// Packages from a directory of `.deb` files (`--deb-dir`): no network. A dependency not found in
/// the directory is assumed to be in the base image.
#[derive(Debug, Clone)]
pub struct DirSource {
    pub dir: PathBuf,
    index: Option<BTreeMap<String, LocalDeb>>,
}

/// A `.deb` in a [`DirSource`]: its file, version and `Pre-Depends` + `Depends` groups.
#[derive(Debug, Clone)]
struct LocalDeb {
    path: PathBuf,
    version: String,
    depends: Vec<Vec<String>>,
}

impl DirSource {
    pub fn new(dir: PathBuf) -> DirSource {
        DirSource { dir, index: None }
    }

    fn index(&mut self) -> Result<&BTreeMap<String, LocalDeb>, BuildError> {
        if self.index.is_none() {
            let mut index = BTreeMap::new();
            let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
                .at(&self.dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect();
            files.sort();
            for f in files {
                let fields = deb_fields(&f)?;
                let (Some(name), Some(version)) = (fields.get("Package"), fields.get("Version")) else {
                    return Err(BuildError::Command {
                        command: format!("dpkg-deb -f {}", show(&f)),
                        message: "no Package or Version field".into(),
                    });
                };
                let mut deps = Vec::new();
                for field in ["Pre-Depends", "Depends"] {
                    if let Some(v) = fields.get(field) {
                        deps.extend(parse_depends_field(v));
                    }
                }
                index.insert(name.clone(), LocalDeb { path: f.clone(), version: version.clone(), depends: deps });
            }
            self.index = Some(index);
        }
        Ok(self.index.get_or_insert_with(BTreeMap::new))
    }
}

impl DebSource for DirSource {
    fn resolve(
        &mut self,
        roots: &[String],
        skip: &BTreeSet<String>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<DebPackage>, BuildError> {
        let dir = show(&self.dir);
        let index = self.index()?.clone();
        for r in roots {
            if !index.contains_key(r) && !skip.contains(r) {
                return Err(BuildError::Command {
                    command: format!("--deb-dir {dir}"),
                    message: format!("package {r} not found"),
                });
            }
        }
        // Absent packages count as base; skipped ones are never added.
        let mut stop: BTreeSet<String> = skip.clone();
        let mut absent = BTreeSet::new();
        for deb in index.values() {
            for g in &deb.depends {
                for alt in g {
                    if !index.contains_key(alt) {
                        absent.insert(alt.clone());
                    }
                }
            }
        }
        stop.extend(absent);
        let roots: Vec<String> = roots.iter().filter(|r| !skip.contains(*r)).cloned().collect();
        let mut depends_of = |pkgs: &[String]| -> Result<DependsMap, BuildError> {
            Ok(pkgs
                .iter()
                .map(|p| {
                    let groups = index
                        .get(p)
                        .map(|deb| deb.depends.iter().map(|g| g.iter().map(|a| Alt::real(a)).collect()).collect())
                        .unwrap_or_default();
                    (p.clone(), groups)
                })
                .collect())
        };
        let names = closure(&roots, &stop, &mut depends_of, progress)?;
        Ok(names
            .into_iter()
            .filter_map(|n| index.get(&n).map(|deb| DebPackage { name: n.clone(), version: deb.version.clone() }))
            .collect())
    }

    fn fetch(&mut self, pkg: &DebPackage) -> Result<PathBuf, BuildError> {
        let dir = show(&self.dir);
        let index = self.index()?;
        match index.get(&pkg.name) {
            Some(deb) if deb.version == pkg.version => Ok(deb.path.clone()),
            _ => Err(BuildError::Command {
                command: format!("--deb-dir {dir}"),
                message: format!("package {} {} not found", pkg.name, pkg.version),
            }),
        }
    }
}

/// Options of [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// Overrides the recipe's version (two versions of one recipe for upgrade tests).
    pub version: Option<String>,
    /// Where [`AptSource`] keeps downloaded packages; default [`AptSource::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Use the `.deb` files of this directory instead of apt.
    pub deb_dir: Option<PathBuf>,
}

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub parcel: BuiltParcel,
    pub meta: ParcelMeta,
    pub packages: Vec<DebPackage>,
}

/// Builds the recipe in `recipe_dir` with the source the options select. Progress lines go to
/// `progress`.
pub fn build(
    recipe_dir: &Path,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildReport, BuildError> {
    let recipe = Recipe::load(recipe_dir)?;
    match &options.deb_dir {
        Some(dir) => build_with(&recipe, recipe_dir, &mut DirSource::new(dir.clone()), options, progress),
        None => {
            let cache = options.cache_dir.clone().unwrap_or_else(AptSource::default_cache_dir);
            build_with(&recipe, recipe_dir, &mut AptSource::new(cache), options, progress)
        }
    }
}

/// Builds `recipe` with packages from `source`.
pub fn build_with(
    recipe: &Recipe,
    recipe_dir: &Path,
    source: &mut dyn DebSource,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildReport, BuildError> {
    let recipe_file = show(&recipe_dir.join(RECIPE_FILE));
    let version = options.version.clone().unwrap_or_else(|| recipe.version.clone());
    let id = ParcelId::new(&recipe.name, &version, &recipe.distro)?;
    let arch = Arch::host()?;

    let skip: BTreeSet<String> = recipe.skip_packages.iter().cloned().collect();
    let packages = if recipe.packages.is_empty() {
        Vec::new()
    } else {
        progress(&format!("resolving {}", recipe.packages.join(", ")));
        source.resolve(&recipe.packages, &skip, progress)?
    };
    progress(&format!("{} packages to unpack", packages.len()));

    let work = tempfile::Builder::new().prefix("drover-parcel-build-").tempdir().at(std::env::temp_dir())?;
    let staging = work.path().join(id.dir_name());
    fs::create_dir(&staging).at(&staging)?;
    let mut components = Vec::new();
    let total = packages.len();
    for (i, pkg) in packages.iter().enumerate() {
        progress(&format!("[{}/{total}] downloading {} {}", i + 1, pkg.name, pkg.version));
        let deb = source.fetch(pkg)?;
        progress(&format!("[{}/{total}] unpacking {}", i + 1, pkg.name));
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        let fields = deb_fields(&deb)?;
        let name = fields.get("Package").cloned().unwrap_or_else(|| pkg.name.clone());
        let pkg_version = fields.get("Version").cloned().unwrap_or_else(|| pkg.version.clone());
        components.push(Component { name, version: upstream_version(&pkg_version).to_owned(), pkg_version });
    }
    components.sort_by(|a, b| a.name.cmp(&b.name));

    let patterns: Vec<Vec<String>> = recipe
        .exclude
        .iter()
        .map(|p| p.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_owned).collect())
        .collect();
    let removed = apply_excludes(&staging, Path::new(""), &patterns)?;
    if removed > 0 {
        progress(&format!("excluded {removed} paths"));
    }
    relativize_symlinks(&staging, Path::new(""))?;

    for f in &recipe.extra_files {
        let src = recipe_dir.join(&f.src);
        let dest = staging.join(&f.dest);
        if !fs::metadata(&src).at(&src)?.is_file() {
            return Err(BuildError::Recipe {
                file: recipe_file,
                message: format!("extra file {} is not a file", f.src),
            });
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        fs::copy(&src, &dest).at(&dest)?;
    }

    let meta_dir = staging.join("meta");
    if fs::symlink_metadata(&meta_dir).is_ok() {
        return Err(BuildError::Recipe {
            file: recipe_file,
            message: "the packages put something at meta/, which the builder writes".into(),
        });
    }
    fs::create_dir(&meta_dir).at(&meta_dir)?;
    let script = match &recipe.env_script {
        Some(s) => {
            let path = recipe_dir.join(s);
            fs::read_to_string(&path).at(&path)?
        }
        None => recipe.generated_env_script(&arch),
    };
    let script_path = meta_dir.join(recipe.script_name());
    fs::write(&script_path, script).at(&script_path)?;
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o644)).at(&script_path)?;

    let meta = recipe.meta(&version, components);
    let mtime =
        recipe.mtime.or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok())).unwrap_or(0);
    progress(&format!("writing {}", id.file_name()));
    let parcel = build_archive_with(&staging, &meta, &options.out_dir, &ArchiveOptions { mtime })?;
    Ok(BuildReport { parcel, meta, packages })
}

/// Removes every path matching a pattern; returns how many were removed.
fn apply_excludes(root: &Path, rel: &Path, patterns: &[Vec<String>]) -> Result<usize, BuildError> {
    let dir = root.join(rel);
    let mut removed = 0;
    let depth = rel.components().count();
    let mut names: Vec<_> = fs::read_dir(&dir).at(&dir)?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let child_rel = rel.join(&name);
        let path = root.join(&child_rel);
        let comps: Vec<String> = child_rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        let hit = patterns.iter().any(|p| p.len() == depth + 1 && p.iter().zip(&comps).all(|(pat, c)| glob(pat, c)));
        let md = fs::symlink_metadata(&path).at(&path)?;
        if hit {
            if md.is_dir() {
                fs::remove_dir_all(&path).at(&path)?;
            } else {
                fs::remove_file(&path).at(&path)?;
            }
            removed += 1;
        } else if md.is_dir() {
            let deeper =
                patterns.iter().any(|p| p.len() > depth + 1 && p.iter().zip(&comps).all(|(pat, c)| glob(pat, c)));
            if deeper {
                removed += apply_excludes(root, &child_rel, patterns)?;
            }
        }
    }
    Ok(removed)
}

/// `*` any run of characters, `?` one character, within one path component.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Rewrites absolute symlink targets (`/etc/java-17-openjdk`) as relative ones inside the parcel
/// (`../../../../etc/java-17-openjdk`), so they point at the parcel's copy, not the host's.
fn relativize_symlinks(root: &Path, rel: &Path) -> Result<(), BuildError> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).at(&dir)? {
        let entry = entry.at(&dir)?;
        let child_rel = rel.join(entry.file_name());
        let path = root.join(&child_rel);
        let md = fs::symlink_metadata(&path).at(&path)?;
        if md.is_dir() {
            relativize_symlinks(root, &child_rel)?;
        } else if md.file_type().is_symlink() {
            let target = fs::read_link(&path).at(&path)?;
            if target.is_absolute() {
                let new = relative_target(&child_rel, &target);
                fs::remove_file(&path).at(&path)?;
                std::os::unix::fs::symlink(&new, &path).at(&path)?;
            }
        }
    }
    Ok(())
}

/// The relative path from the directory of `link` (relative to the parcel root) to the absolute
/// `target` taken as relative to the parcel root. `..` in the target are resolved lexically.
fn relative_target(link: &Path, target: &Path) -> PathBuf {
    let mut t: Vec<&std::ffi::OsStr> = Vec::new();
    for c in target.components() {
        match c {
            PathComponent::Normal(n) => t.push(n),
            PathComponent::ParentDir => {
                t.pop();
            }
            _ => {}
        }
    }
    let parent: Vec<&std::ffi::OsStr> = link.parent().map(|p| p.iter().collect()).unwrap_or_default();
    let common = parent.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..parent.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Runs a command, returning its stdout; the error names the command and quotes its stderr.
fn run(cmd: &mut Command) -> Result<Vec<u8>, BuildError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let shown = if shown.len() > 200 { format!("{}...", &shown[..shown.floor_char_boundary(200)]) } else { shown };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BuildError::Command { command: shown.clone(), message: format!("could not run it: {e}") })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(5)..].join("; ");
        return Err(BuildError::Command { command: shown, message: format!("{}: {tail}", out.status) });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_depends_output() {
        let text = "zookeeper\n  Depends: adduser\n |Depends: default-jre-headless\n  Depends: <java8-runtime-headless>\n    openjdk-17-jre-headless\n  Depends: libzookeeper-java\n  Recommends: foo\nredis-server\n  PreDepends: init-system-helpers\n  Depends: <lsb-base>\n    sysvinit-utils\n  Depends: <nothing>\n";
        let parsed = parse_apt_depends(text);
        let zk = &parsed["zookeeper"];
        assert_eq!(zk.len(), 3);
        assert_eq!(zk[1][0], Alt::real("default-jre-headless"));
        assert_eq!(
            zk[1][1],
            Alt { name: "java8-runtime-headless".into(), providers: Some(vec!["openjdk-17-jre-headless".into()]) }
        );
        let redis = &parsed["redis-server"];
        assert_eq!(redis[1][0].providers, Some(vec!["sysvinit-utils".to_owned()]));
        // A virtual package without providers is never picked.
        assert_eq!(redis[2][0], Alt { name: "nothing".into(), providers: Some(vec![]) });
    }

    #[test]
    fn depends_field() {
        assert_eq!(
            parse_depends_field("libc6 (>= 2.34), a | b:any (>= 1), c [amd64]"),
            vec![vec!["libc6".to_owned()], vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]
        );
    }

    #[test]
    fn globs_and_targets() {
        assert!(glob("*.so*", "libx.so.1"));
        assert!(glob("doc", "doc"));
        assert!(!glob("doc", "docs"));
        assert!(glob("d?c", "doc"));
        assert_eq!(
            relative_target(Path::new("usr/lib/jvm/j/conf"), Path::new("/etc/java")),
            PathBuf::from("../../../../etc/java")
        );
        assert_eq!(relative_target(Path::new("usr/bin/a"), Path::new("/usr/bin/b")), PathBuf::from("b"));
        assert_eq!(relative_target(Path::new("x"), Path::new("/")), PathBuf::from("."));
    }
}
