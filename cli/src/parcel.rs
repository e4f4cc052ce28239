//! `drover parcel build|index|inspect`: the parcel tools. They work on local files only and
//! never contact the manager; the format lives in `drover_parcels`, the builder in
//! `drover_parcel_builder`.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use drover_parcel_builder::{self as recipe, BuildOptions};
use drover_parcels::{self as parcel, ParcelMeta, index_dir};
use serde_json::json;

use crate::cli::{OutputFormat, ParcelBuildArgs, ParcelCommand, ParcelIndexArgs, ParcelInspectArgs};

pub fn run(command: ParcelCommand, output: OutputFormat) -> anyhow::Result<String> {
    match command {
        ParcelCommand::Build(args) => build(args, output),
        ParcelCommand::Index(args) => index(args, output),
        ParcelCommand::Inspect(args) => inspect(args, output),
        // `lifecycle` runs these: they need the manager.
        ParcelCommand::Upload(_)
        | ParcelCommand::List
        | ParcelCommand::Distribute(_)
        | ParcelCommand::Activate(_)
        | ParcelCommand::Deactivate(_)
        | ParcelCommand::Remove(_) => anyhow::bail!("this parcel command needs the manager"),
    }
}

fn build(args: ParcelBuildArgs, output: OutputFormat) -> anyhow::Result<String> {
    let started = Instant::now();
    let options =
        BuildOptions { out_dir: args.out, version: args.version, cache_dir: args.cache_dir, deb_dir: args.deb_dir };
    let report = recipe::build(&args.recipe_dir, &options, &mut |line| eprintln!("{line}"))
        .with_context(|| format!("build the parcel of {}", args.recipe_dir.display()))?;
    let elapsed = started.elapsed();
    let p = &report.parcel;
    if output == OutputFormat::Json {
        return pretty(&json!({
            "path": p.path,
            "parcel_name": p.id.file_name(),
            "sha256": p.sha256,
            "size": p.size,
            "seconds": elapsed.as_secs_f64(),
            "components": report.meta.components,
        }));
    }
    let mut out = String::new();
    let _ = writeln!(out, "built   {}", p.path.display());
    let _ = writeln!(out, "sha256  {}", p.sha256);
    let _ = writeln!(out, "size    {} ({})", p.size, human(p.size));
    let _ = writeln!(out, "time    {:.1}s, {} packages", elapsed.as_secs_f64(), report.packages.len());
    Ok(out)
}

fn index(args: ParcelIndexArgs, output: OutputFormat) -> anyhow::Result<String> {
    let manifest = index_dir(&args.dir).with_context(|| format!("index {}", args.dir.display()))?;
    let path = manifest.save(&args.dir).context("write manifest.json")?;
    if output == OutputFormat::Json {
        return pretty(&serde_json::to_value(&manifest)?);
    }
    let mut out = format!("wrote {} ({} parcels)\n", path.display(), manifest.parcels.len());
    let width = manifest.parcels.iter().map(|p| p.parcel_name.len()).max().unwrap_or(0);
    for p in &manifest.parcels {
        let _ = writeln!(out, "{:width$}  {:>10}  {}", p.parcel_name, human(p.size), p.sha256);
    }
    Ok(out)
}

fn inspect(args: ParcelInspectArgs, output: OutputFormat) -> anyhow::Result<String> {
    let info = parcel::inspect(&args.file).with_context(|| format!("inspect {}", args.file.display()))?;
    if output == OutputFormat::Json {
        return pretty(&json!({ "sha256": info.sha256, "size": info.size, "meta": info.meta }));
    }
    Ok(describe(&info.meta, &info.sha256, info.size))
}

fn describe(m: &ParcelMeta, sha256: &str, size: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "parcel      {} {} ({})", m.name, m.version, m.distro);
    let _ = writeln!(out, "sha256      {sha256}");
    let _ = writeln!(out, "size        {size} ({})", human(size));
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    let _ = writeln!(out, "depends     {}", list(&m.depends));
    let _ = writeln!(out, "conflicts   {}", list(&m.conflicts));
    let _ = writeln!(out, "provides    {}", list(&m.provides));
    let _ = writeln!(out, "env script  meta/{}", m.scripts.defines);
    let _ = writeln!(out, "components");
    for c in &m.components {
        let _ = writeln!(out, "  {:32} {:16} {}", c.name, c.version, c.pkg_version);
    }
    out
}

fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn pretty(value: &serde_json::Value) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("format JSON")?;
    text.push('\n');
    Ok(text)
}
