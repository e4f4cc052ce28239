//! `drover receivers`, `drover routes` and `drover notifications deliveries`: notification
//! receivers, the route tree and the delivery log, through `/api/v1/receivers`,
//! `/api/v1/routes` and `/api/v1/notifications/deliveries`.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::cli::OutputFormat;
use crate::commands::{Context, present};
use crate::manager_client::{NO_BODY, NO_QUERY};
use crate::render::Table;

/// The `--help` of `drover receivers`.
pub const RECEIVERS_HELP: &str = "\
Notification receivers: where alerts routed to them go (webhooks, e-mail,
Prometheus Alertmanagers). Secrets (webhook secret, SMTP password) are
stored encrypted and shown as <redacted>; a file that leaves <redacted>
keeps the stored one. A receiver a route names cannot be deleted. Changes
need config.write granted globally; they apply at once (open notification
groups and the delivery counters restart).

A receiver file (YAML or JSON; the name defaults to the NAME argument):
  name: ops
  webhook_configs:
    - url: https://hooks.example.org/drover
      secret: s3cret
  email_configs:
    - {host: smtp.example.org, port: 587, username: drover, password: pw,
       from: drover@example.org, to: [oncall@example.org]}

Examples:
  drover receivers list
  drover receivers set ops -f ops.yaml
  drover receivers show ops -o json > ops.json   # edit, then set it back";

/// The `--help` of `drover routes`.
pub const ROUTES_HELP: &str = "\
The route tree: which receiver each alert goes to, and how alerts are grouped
(group_by, group_wait, group_interval, repeat_interval), as Alertmanager does
it (docs/alerts.md). Every receiver it names must exist.

A routes file (YAML or JSON):
  receiver: ops
  group_by: [alertname, cluster]
  group_wait: 30s
  routes:
    - matchers: ['severity=\"critical\"']
      receiver: pager

Examples:
  drover routes show
  drover routes set -f routes.yaml";

#[derive(Debug, Subcommand)]
pub enum ReceiversCommand {
    /// List receivers with their delivery counters.
    List,
    /// Show one receiver (secrets redacted) and its counters.
    Show(ReceiverNameArg),
    /// Create or replace receiver NAME from FILE (YAML or JSON, `-`: stdin).
    Set(ReceiverSetArgs),
    /// Delete a receiver no route uses.
    Delete(ReceiverNameArg),
}

#[derive(Debug, Args)]
pub struct ReceiverNameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ReceiverSetArgs {
    /// The receiver's name (default: the file's `name`).
    pub name: Option<String>,
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Show the route tree.
    Show,
    /// Replace the route tree from FILE (YAML or JSON, `-`: stdin).
    Set(RoutesFileArg),
}

#[derive(Debug, Args)]
pub struct RoutesFileArg {
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Delivery attempts since the notifier last started, newest first.
    Deliveries(DeliveriesArgs),
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only this receiver's attempts.
    #[arg(long)]
    pub receiver: Option<String>,
    /// At most this many (1-1000, default 100).
    #[arg(long)]
    pub limit: Option<u32>,
}

fn read_yaml(path: &PathBuf) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("read stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    serde_norway::from_str(&text).map_err(|e| anyhow!("{}: not YAML or JSON: {e}", path.display()))
}

fn yaml(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_else(|_| v.to_string())
}

fn integrations(r: &Value) -> String {
    let n = |k: &str| r[k].as_array().map_or(0, Vec::len);
    let mut parts = Vec::new();
    for (key, label) in
        [("webhook_configs", "webhook"), ("email_configs", "email"), ("alertmanager_configs", "alertmanager")]
    {
        if n(key) > 0 {
            parts.push(format!("{} {label}", n(key)));
        }
    }
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

fn counter(r: &Value, k: &str) -> String {
    r["stats"][k].as_u64().unwrap_or(0).to_string()
}

pub async fn receivers(ctx: &Context, command: ReceiversCommand) -> anyhow::Result<String> {
    match command {
        ReceiversCommand::List => {
            let value = ctx.client.get(&["receivers"], NO_QUERY).await?;
            present(ctx, value, |list: &Value| {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no receivers\n".into();
                }
                let mut table =
                    Table::new(&["NAME", "INTEGRATIONS", "SENT", "FAILED", "FAILED ATTEMPTS", "LAST ERROR"]);
                for r in &items {
                    table.push(vec![
                        r["name"].as_str().unwrap_or_default().into(),
                        integrations(r),
                        counter(r, "sent"),
                        counter(r, "failed"),
                        counter(r, "failed_attempts"),
                        r["stats"]["last_error"].as_str().unwrap_or("").into(),
                    ]);
                }
                table.render()
            })
        }
        ReceiversCommand::Show(args) => {
            let value = ctx.client.get(&["receivers", &args.name], NO_QUERY).await?;
            present(ctx, value, |r: &Value| yaml(r))
        }
        ReceiversCommand::Set(args) => {
            let mut body = read_yaml(&args.file)?;
            if let Some(obj) = body.as_object_mut() {
                obj.remove("stats");
            }
            let name = match (&args.name, body["name"].as_str()) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => n.to_owned(),
                (None, None) => anyhow::bail!("give the receiver's name: drover receivers set NAME -f FILE"),
            };
            let value = ctx.client.send_json(Method::PUT, &["receivers", &name], Some(&body)).await?;
            present(ctx, value, |r: &Value| {
                format!("set receiver {}: {}\n", r["name"].as_str().unwrap_or_default(), integrations(r))
            })
        }
        ReceiversCommand::Delete(args) => {
            ctx.client.call(Method::DELETE, &["receivers", &args.name], NO_QUERY, NO_BODY).await?;
            Ok(done(ctx, format!("deleted receiver {}\n", args.name)))
        }
    }
}

pub async fn routes(ctx: &Context, command: RoutesCommand) -> anyhow::Result<String> {
    match command {
        RoutesCommand::Show => {
            let value = ctx.client.get(&["routes"], NO_QUERY).await?;
            present(ctx, value, |r: &Value| yaml(r))
        }
        RoutesCommand::Set(args) => {
            let body = read_yaml(&args.file)?;
            let value = ctx.client.send_json(Method::PUT, &["routes"], Some(&body)).await?;
            present(ctx, value, |r: &Value| format!("set the route tree:\n{}", yaml(r)))
        }
    }
}

pub async fn notifications(ctx: &Context, command: NotificationsCommand) -> anyhow::Result<String> {
    match command {
        NotificationsCommand::Deliveries(args) => {
            let limit = args.limit.map(|l| l.to_string());
            let query = [("receiver", args.receiver.as_deref()), ("limit", limit.as_deref())];
            let value = ctx.client.get(&["notifications", "deliveries"], &query).await?;
            present(ctx, value, |list: &Value| {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no delivery attempts\n".into();
                }
                let mut table =
                    Table::new(&["AT", "RECEIVER", "INTEGRATION", "STATUS", "ALERTS", "ATTEMPT", "OK", "MS", "ERROR"]);
                for a in &items {
                    let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
                    let n = |k: &str| a[k].as_u64().unwrap_or(0).to_string();
                    table.push(vec![
                        s("at"),
                        s("receiver"),
                        s("integration"),
                        s("status"),
                        n("alerts"),
                        n("attempt"),
                        if a["ok"].as_bool() == Some(true) { "yes" } else { "no" }.into(),
                        n("duration_ms"),
                        s("error"),
                    ]);
                }
                table.render()
            })
        }
    }
}

fn done(ctx: &Context, message: String) -> String {
    match ctx.output {
        OutputFormat::Json => String::new(),
        OutputFormat::Table => message,
    }
}
