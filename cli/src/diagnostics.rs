//! `drover diagnostics`: collect a diagnostic bundle of a cluster (progress
//! per host from the bundle's command, then the download), list, download and
//! delete bundles, through `/api/v1/diagnostics`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use drover_api::diagnostics::{DiagnosticsView, NewDiagnostics, parse_size};
use reqwest::Method;
use serde_json::Value;

use crate::cli::OutputFormat;
use crate::commands::{Context, present};
use crate::manager_client::{NO_BODY, NO_QUERY, decode};
use crate::render::Table;

/// The `--help` of `drover diagnostics`.
pub const HELP: &str = "\
Diagnostic bundles: one tar.gz per request with, from every host in scope,
the roles' logs within the window, their rendered configuration files,
process state and health, the host's facts and metrics and the agent's own
log, and from the manager the cluster's topology, configuration revisions,
commands, events and audit entries, plus a manifest.json saying what came
from where and what was redacted. Sensitive parameter values and the
redaction rules' matches are replaced by [REDACTED] before anything is
written. A host that is down or too slow is named in the manifest and the
bundle is partial. Collecting needs commands.run on the cluster.

Examples:
  drover diagnostics collect --cluster prod --service cache --since 2h -o cache.tar.gz
  drover diagnostics collect --cluster prod --host node-3 --since 2026-12-04T02:00:00Z --max-bytes 200MiB
  drover diagnostics list
  drover diagnostics download dg-1f3a... -o bundle.tar.gz";

#[derive(Debug, Subcommand)]
pub enum DiagnosticsCommand {
    /// Collect a bundle, show each host's progress, then download it.
    Collect(CollectArgs),
    /// The bundles of the clusters you may read, newest first.
    List,
    /// Download a bundle (default file: the name the manager gives it).
    Download(DownloadArgs),
    /// Delete a bundle and its file.
    Delete(IdArg),
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    #[arg(long)]
    pub cluster: String,
    /// A service in scope (repeat for more); all of the cluster's by default.
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// A host in scope, hostname or id (repeat for more); by default the hosts of the services' roles.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Start of the window: a duration back from now (2h, 30m) or an RFC 3339 time.
    #[arg(long)]
    pub since: String,
    /// End of the window (same forms); now by default.
    #[arg(long)]
    pub until: Option<String>,
    /// Cap on the bundle's size, e.g. 200MiB (default: the manager's --diagnostics-max-bytes).
    #[arg(long, value_parser = parse_size)]
    pub max_bytes: Option<u64>,
    /// Only these parts (repeat): logs, config, processes, health, facts, metrics,
    /// agent_log, topology, revisions, commands, events, audit.
    #[arg(long = "include", value_name = "PART")]
    pub include: Vec<String>,
    /// Where to write the bundle (default: the name the manager gives it).
    /// (`--output` is the global output format.)
    #[arg(short = 'o', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    pub id: String,
    /// Where to write the bundle (default: the name the manager gives it).
    #[arg(short = 'o', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    pub id: String,
}

fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

async fn download(ctx: &Context, view: &DiagnosticsView, output: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path =
        output.unwrap_or_else(|| PathBuf::from(format!("drover-diagnostics-{}-{}.tar.gz", view.cluster, view.id)));
    let n = ctx.client.download(&["diagnostics", &view.id, "download"], &path).await?;
    if n != view.size_bytes && view.size_bytes > 0 {
        return Err(anyhow!("downloaded {n} bytes to {} but the bundle has {}", path.display(), view.size_bytes));
    }
    Ok(path)
}

async fn collect(ctx: &Context, args: CollectArgs) -> anyhow::Result<String> {
    let req = NewDiagnostics {
        cluster: args.cluster,
        services: args.services,
        hosts: args.hosts,
        since: args.since,
        until: args.until,
        max_bytes: args.max_bytes,
        include: args.include,
    };
    let started: DiagnosticsView = decode(ctx.client.send_json(Method::POST, &["diagnostics"], Some(&req)).await?)?;
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "collecting bundle {} of cluster {} from {} host(s) (command {})",
        started.id,
        started.cluster,
        started.hosts.len(),
        started.command_id
    );
    // Progress: each step's state as it changes.
    let mut shown: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let view = loop {
        let cmd = ctx.client.get(&["commands", &started.command_id], NO_QUERY).await?;
        for step in cmd["steps"].as_array().cloned().unwrap_or_default() {
            let seq = step["seq"].as_u64().unwrap_or(0);
            let line = format!(
                "  {}: {}{}",
                step["description"].as_str().unwrap_or_default(),
                step["state"].as_str().unwrap_or_default(),
                step["message"].as_str().filter(|m| !m.is_empty()).map(|m| format!(" ({m})")).unwrap_or_default()
            );
            if shown.get(&seq) != Some(&line) {
                let _ = writeln!(err, "{line}");
                shown.insert(seq, line);
            }
        }
        let view: DiagnosticsView = decode(ctx.client.get(&["diagnostics", &started.id], NO_QUERY).await?)?;
        if view.state.as_str() != "running" {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if view.state.as_str() == "failed" {
        let cmd = ctx.client.get(&["commands", &view.command_id], NO_QUERY).await?;
        return Err(anyhow!(
            "bundle {} failed: {}",
            view.id,
            cmd["message"].as_str().unwrap_or("see the command's steps")
        ));
    }
    for f in &view.failed_hosts {
        let _ = writeln!(err, "warning: no part from {}: {}", f.hostname, f.reason);
    }
    let path = download(ctx, &view, args.file).await?;
    let summary = format!(
        "bundle {} {} ({}), written to {}\n",
        view.id,
        view.state.as_str(),
        size(view.size_bytes),
        path.display()
    );
    let value = serde_json::to_value(&view).context("encode the bundle")?;
    present(ctx, value, |_: &Value| summary)
}

pub async fn diagnostics(ctx: &Context, command: DiagnosticsCommand) -> anyhow::Result<String> {
    match command {
        DiagnosticsCommand::Collect(args) => collect(ctx, args).await,
        DiagnosticsCommand::List => {
            let value = ctx.client.get(&["diagnostics"], NO_QUERY).await?;
            present(ctx, value, |list: &Value| {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no diagnostic bundles\n".into();
                }
                let mut table = Table::new(&["ID", "CLUSTER", "STATE", "SIZE", "HOSTS", "CREATED", "BY", "FAILED"]);
                for d in &items {
                    let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                    let failed: Vec<String> = d["failed_hosts"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|f| f["hostname"].as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    table.push(vec![
                        s("id"),
                        s("cluster"),
                        s("state"),
                        size(d["size_bytes"].as_u64().unwrap_or(0)),
                        d["hosts"].as_array().map_or(0, Vec::len).to_string(),
                        s("created_at"),
                        s("created_by"),
                        failed.join(", "),
                    ]);
                }
                table.render()
            })
        }
        DiagnosticsCommand::Download(args) => {
            let view: DiagnosticsView = decode(ctx.client.get(&["diagnostics", &args.id], NO_QUERY).await?)?;
            let path = download(ctx, &view, args.file).await?;
            Ok(match ctx.output {
                OutputFormat::Json => String::new(),
                OutputFormat::Table => format!("wrote {} ({})\n", path.display(), size(view.size_bytes)),
            })
        }
        DiagnosticsCommand::Delete(args) => {
            ctx.client.call(Method::DELETE, &["diagnostics", &args.id], NO_QUERY, NO_BODY).await?;
            Ok(match ctx.output {
                OutputFormat::Json => String::new(),
                OutputFormat::Table => format!("deleted bundle {}\n", args.id),
            })
        }
    }
}
