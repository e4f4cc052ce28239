//! `drover alert-rules`, `drover silence`, `drover maintenance` and `drover alerts`: alert
//! rules (with YAML export and import), silences, maintenance mode, the active alerts and
//! their history, through `/api/v1/alert-rules`, `/silences`, `/maintenance` and `/alerts`.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use drover_api::Items;
use drover_api::alerts::{
    AlertHistoryEntry, AlertRuleSpec, AlertRuleView, AlertView, LabelMatcher, MaintenanceView, SilenceSpec, SilenceView,
};
use reqwest::Method;
use serde_json::json;

use crate::cli::OutputFormat;
use crate::commands::{Context, present};
use crate::manager_client::{NO_BODY, NO_QUERY};
use crate::render::{Table, key_values, short_timestamp};

/// The `--help` of `drover alert-rules`.
pub const RULES_HELP: &str = "\
Alert rules: list, show, set from a file, delete, export and import as YAML.

A rule's `expr` is a condition over metrics (a PromQL subset, docs/alerts.md),
e.g. `redis_memory_used_ratio > 0.9` or `increase(role_restarts_total[10m]) > 3`;
it fires once the condition has held for `for`. Built-in rules (host_lost,
role_bad, crash_loop, stale_configuration, disk_nearly_full) may be disabled
(`enabled: false`) or tuned with `set`, and reset to their default with
`delete`. Changing rules needs config.write granted globally (admin, or
configurator / cluster-admin on the whole fleet).

A rule file (YAML or JSON):
  name: redis-memory
  expr: redis_memory_used_ratio > 0.9
  for: 5m
  severity: warning          # info, warning or critical
  labels: {team: cache}
  annotations: {summary: \"{{labels.host}} uses {{value}} of its memory\"}

Examples:
  drover alert-rules list
  drover alert-rules set -f redis-memory.yaml
  drover alert-rules export > rules.yaml && drover alert-rules import rules.yaml";

#[derive(Debug, Subcommand)]
pub enum AlertRulesCommand {
    /// List every rule: built-in (as shipped or changed) and your own.
    List,
    /// Show one rule.
    Show(RuleNameArg),
    /// Create or replace the rule in FILE (YAML or JSON); for a built-in rule, change it.
    ///
    /// Example: drover alert-rules set -f redis-memory.yaml
    Set(RuleFileArg),
    /// Delete a rule; a built-in rule is reset to its default.
    Delete(RuleNameArg),
    /// Print every rule as YAML (what `import` takes).
    Export,
    /// Set every rule of a YAML list in FILE (`-`: stdin), all or nothing: one bad rule
    /// refuses the whole file, naming it. Rules not in the file are left as they are.
    Import(ImportArg),
}

#[derive(Debug, Args)]
pub struct RuleNameArg {
    /// The rule's name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RuleFileArg {
    /// File holding one rule, YAML or JSON (`-`: stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArg {
    /// YAML file of rules (`-`: stdin), as `export` prints them.
    pub file: PathBuf,
}

/// The `--help` of `drover silence`.
pub const SILENCE_HELP: &str = "\
Silences mute the alerts whose labels match every matcher until they end:
no notification is sent and the history marks them suppressed.

A matcher is NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX (regexes
match the whole value). Alert labels include alertname, severity, host,
cluster, service and role. A silence with --match cluster=NAME needs
commands.run on that cluster (operator@NAME); any other needs it globally.

Examples:
  drover silence add --match host=db1 --match 'alertname=~host_.*' --duration 2h --comment 'disk swap'
  drover silence list
  drover silence expire 6f1c0d2e-...";

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Mute matching alerts from now for --duration (or until --until).
    Add(SilenceAddArgs),
    /// List active silences and those that ended in the last day.
    List,
    /// End a silence now.
    Expire(SilenceIdArg),
}

#[derive(Debug, Args)]
pub struct SilenceAddArgs {
    /// A matcher NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX; repeat for more
    /// (all must match).
    #[arg(long = "match", value_name = "MATCHER", required = true, value_parser = parse_matcher)]
    pub matchers: Vec<LabelMatcher>,
    /// How long, e.g. 30m, 2h, 1d.
    #[arg(long, conflicts_with = "until", required_unless_present = "until")]
    pub duration: Option<String>,
    /// When it ends, RFC 3339 (2026-01-02T03:04:05Z).
    #[arg(long)]
    pub until: Option<String>,
    /// Why (shown with the silence).
    #[arg(long, default_value = "")]
    pub comment: String,
}

#[derive(Debug, Args)]
pub struct SilenceIdArg {
    /// The silence's id (from `drover silence list`).
    pub id: String,
}

/// What goes into maintenance mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaintenanceKind {
    Host,
    Service,
    Cluster,
}

/// The `--help` of `drover maintenance`.
pub const MAINTENANCE_HELP: &str = "\
Maintenance mode: a host, service or cluster whose alerts are suppressed
(shown, not notified) while work is done on it. TARGET is a hostname, a
CLUSTER/SERVICE or a cluster name. Needs commands.run on the cluster.

Examples:
  drover maintenance on host db1.example --comment 'new disk'
  drover maintenance on service prod/cache
  drover maintenance off host db1.example
  drover maintenance list";

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Put a host, service or cluster in maintenance mode.
    On(MaintenanceOnArgs),
    /// Take it out of maintenance mode.
    Off(MaintenanceTarget),
    /// What is in maintenance mode.
    List,
}

#[derive(Debug, Args)]
pub struct MaintenanceTarget {
    /// host, service or cluster.
    #[arg(value_enum)]
    pub kind: MaintenanceKind,
    /// A hostname, CLUSTER/SERVICE or a cluster name.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct MaintenanceOnArgs {
    #[command(flatten)]
    pub target: MaintenanceTarget,
    /// Why (shown with it).
    #[arg(long, default_value = "")]
    pub comment: String,
}

/// An alert state to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActiveState {
    Pending,
    Firing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryState {
    Pending,
    Firing,
    Resolved,
}

/// `drover alerts`: the pending and firing alerts, or their history.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// Only alerts in this state.
    #[arg(long, value_enum)]
    pub state: Option<ActiveState>,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Transitions of alerts (pending, firing, resolved), newest first.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this rule's alerts.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only transitions to this state.
    #[arg(long, value_enum)]
    pub state: Option<HistoryState>,
    /// Only since this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// How many, 1-1000 (default 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

/// Parses `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX` or `NAME!~REGEX`.
pub fn parse_matcher(s: &str) -> Result<LabelMatcher, String> {
    let at = s
        .find(['=', '!'])
        .ok_or_else(|| format!("{s:?} is not a matcher: write NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"))?;
    let (name, rest) = s.split_at(at);
    let op = ["!=", "=~", "!~", "="]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(|| format!("{s:?} is not a matcher: write NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"))?;
    if name.is_empty() {
        return Err(format!("{s:?} names no label before {op}"));
    }
    Ok(LabelMatcher { name: name.to_owned(), op: op.to_owned(), value: rest[op.len()..].to_owned() })
}

fn read_file(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("read stdin");
    }
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn done(ctx: &Context, message: String) -> String {
    match ctx.output {
        OutputFormat::Json => String::new(),
        OutputFormat::Table => message,
    }
}

pub async fn alert_rules(ctx: &Context, command: AlertRulesCommand) -> anyhow::Result<String> {
    match command {
        AlertRulesCommand::List => {
            let value = ctx.client.get(&["alert-rules"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<AlertRuleView>| rules_table(&list.items))
        }
        AlertRulesCommand::Show(args) => {
            let value = ctx.client.get(&["alert-rules", &args.name], NO_QUERY).await?;
            present(ctx, value, rule_detail)
        }
        AlertRulesCommand::Set(args) => {
            let text = read_file(&args.file)?;
            let spec: AlertRuleSpec = serde_norway::from_str(&text)
                .map_err(|e| anyhow!("{}: not a rule (YAML or JSON): {e}", args.file.display()))?;
            let value = ctx.client.send_json(Method::PUT, &["alert-rules", &spec.name], Some(&spec)).await?;
            present(ctx, value, |r: &AlertRuleView| {
                let what = if r.builtin { "set built-in rule" } else { "set rule" };
                format!("{what} {}: {}\n", r.spec.name, r.spec.expr)
            })
        }
        AlertRulesCommand::Delete(args) => {
            let rule: AlertRuleView =
                crate::manager_client::decode(ctx.client.get(&["alert-rules", &args.name], NO_QUERY).await?)?;
            ctx.client.call(Method::DELETE, &["alert-rules", &args.name], NO_QUERY, NO_BODY).await?;
            let what = if rule.builtin { "reset built-in rule" } else { "deleted rule" };
            Ok(done(ctx, format!("{what} {}\n", args.name)))
        }
        AlertRulesCommand::Export => ctx.client.text(Method::GET, &["alert-rules", "export"], None).await,
        AlertRulesCommand::Import(args) => {
            let text = read_file(&args.file)?;
            let value = ctx.client.text(Method::POST, &["alert-rules", "import"], Some(("text/yaml", text))).await?;
            let value: serde_json::Value = serde_json::from_str(&value).context("the manager's answer is not JSON")?;
            present(ctx, value, |list: &Items<AlertRuleView>| {
                let names: Vec<&str> = list.items.iter().map(|r| r.spec.name.as_str()).collect();
                format!("imported {} rules: {}\n", names.len(), names.join(", "))
            })
        }
    }
}

fn rules_table(rules: &[AlertRuleView]) -> String {
    if rules.is_empty() {
        return "no alert rules\n".into();
    }
    let mut table = Table::new(&["NAME", "SEVERITY", "FOR", "ENABLED", "KIND", "EXPR"]);
    for r in rules {
        let kind = match (r.builtin, &r.updated_by) {
            (true, None) => "built-in",
            (true, Some(_)) => "built-in, changed",
            (false, _) => "custom",
        };
        table.push(vec![
            r.spec.name.clone(),
            r.spec.severity.as_str().into(),
            r.spec.for_.clone().unwrap_or_else(|| "0s".into()),
            if r.spec.enabled { "yes" } else { "no" }.into(),
            kind.into(),
            r.spec.expr.clone(),
        ]);
    }
    table.render()
}

fn rule_detail(r: &AlertRuleView) -> String {
    let map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    };
    key_values(&[
        ("name", r.spec.name.clone()),
        ("description", r.spec.description.clone()),
        ("expr", r.spec.expr.clone()),
        ("for", r.spec.for_.clone().unwrap_or_else(|| "0s".into())),
        ("keep firing for", r.spec.keep_firing_for.clone().unwrap_or_else(|| "0s".into())),
        ("severity", r.spec.severity.as_str().into()),
        ("enabled", r.spec.enabled.to_string()),
        ("built-in", r.builtin.to_string()),
        ("labels", map(&r.spec.labels)),
        ("annotations", map(&r.spec.annotations)),
        (
            "updated",
            match (&r.updated_at, &r.updated_by) {
                (Some(at), Some(by)) => format!("{} by {by}", short_timestamp(at)),
                _ => "never (as shipped)".into(),
            },
        ),
    ])
}

fn matchers_inline(ms: &[LabelMatcher]) -> String {
    ms.iter().map(|m| format!("{}{}{}", m.name, m.op, m.value)).collect::<Vec<_>>().join(" ")
}

pub async fn silence(ctx: &Context, command: SilenceCommand) -> anyhow::Result<String> {
    match command {
        SilenceCommand::Add(args) => {
            let spec = SilenceSpec {
                matchers: args.matchers,
                ends_at: args.until,
                duration: args.duration,
                comment: args.comment,
            };
            let value = ctx.client.send_json(Method::POST, &["silences"], Some(&spec)).await?;
            present(ctx, value, |s: &SilenceView| {
                format!("silence {} mutes {{{}}} until {}\n", s.id, matchers_inline(&s.matchers), s.ends_at)
            })
        }
        SilenceCommand::List => {
            let value = ctx.client.get(&["silences"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<SilenceView>| {
                if list.items.is_empty() {
                    return "no silences\n".into();
                }
                let mut table = Table::new(&["ID", "STATE", "ENDS", "BY", "MATCHERS", "COMMENT"]);
                for s in &list.items {
                    table.push(vec![
                        s.id.clone(),
                        s.state.clone(),
                        short_timestamp(&s.ends_at),
                        s.created_by.clone(),
                        matchers_inline(&s.matchers),
                        s.comment.clone(),
                    ]);
                }
                table.render()
            })
        }
        SilenceCommand::Expire(args) => {
            let value = ctx.client.send_json(Method::DELETE, &["silences", &args.id], NO_BODY).await?;
            present(ctx, value, |s: &SilenceView| format!("expired silence {}\n", s.id))
        }
    }
}

/// The path of a maintenance target.
fn maintenance_path(t: &MaintenanceTarget) -> anyhow::Result<Vec<String>> {
    Ok(match t.kind {
        MaintenanceKind::Host => vec!["maintenance".into(), "host".into(), t.target.clone()],
        MaintenanceKind::Cluster => vec!["maintenance".into(), "cluster".into(), t.target.clone()],
        MaintenanceKind::Service => {
            let Some((cluster, service)) = t.target.split_once('/') else {
                bail!("service {:?}: write it as CLUSTER/SERVICE, e.g. prod/cache", t.target);
            };
            vec!["maintenance".into(), "service".into(), cluster.into(), service.into()]
        }
    })
}

pub async fn maintenance(ctx: &Context, command: MaintenanceCommand) -> anyhow::Result<String> {
    match command {
        MaintenanceCommand::On(args) => {
            let path = maintenance_path(&args.target)?;
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            let body = json!({"comment": args.comment});
            let value = ctx.client.send_json(Method::PUT, &segments, Some(&body)).await?;
            present(ctx, value, |m: &MaintenanceView| {
                format!("{} {} is in maintenance mode: its alerts are suppressed\n", m.kind, m.target)
            })
        }
        MaintenanceCommand::Off(t) => {
            let path = maintenance_path(&t)?;
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            ctx.client.call(Method::DELETE, &segments, NO_QUERY, NO_BODY).await?;
            let kind = format!("{:?}", t.kind).to_lowercase();
            Ok(done(ctx, format!("{kind} {} is out of maintenance mode\n", t.target)))
        }
        MaintenanceCommand::List => {
            let value = ctx.client.get(&["maintenance"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<MaintenanceView>| {
                if list.items.is_empty() {
                    return "nothing is in maintenance mode\n".into();
                }
                let mut table = Table::new(&["KIND", "TARGET", "SINCE", "BY", "COMMENT"]);
                for m in &list.items {
                    table.push(vec![
                        m.kind.clone(),
                        m.target.clone(),
                        short_timestamp(&m.since),
                        m.by.clone(),
                        m.comment.clone(),
                    ]);
                }
                table.render()
            })
        }
    }
}

fn labels_inline(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname" && k.as_str() != "severity")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn alerts(ctx: &Context, args: AlertsArgs) -> anyhow::Result<String> {
    match args.command {
        None => {
            let state = args.state.map(|s| match s {
                ActiveState::Pending => "pending",
                ActiveState::Firing => "firing",
            });
            let value = ctx.client.get(&["alerts"], &[("state", state)]).await?;
            present(ctx, value, |list: &Items<AlertView>| {
                if list.items.is_empty() {
                    return "no pending or firing alerts\n".into();
                }
                let mut table = Table::new(&["RULE", "STATE", "SEVERITY", "SINCE", "LABELS", "SUMMARY"]);
                for a in &list.items {
                    let mut state = format!("{:?}", a.state).to_lowercase();
                    if !a.silenced_by.is_empty() {
                        state.push_str(" (silenced)");
                    } else if a.in_maintenance {
                        state.push_str(" (maintenance)");
                    }
                    table.push(vec![
                        a.rule.clone(),
                        state,
                        a.severity.as_str().into(),
                        short_timestamp(&a.active_since),
                        labels_inline(&a.labels),
                        a.annotations.get("summary").cloned().unwrap_or_default(),
                    ]);
                }
                table.render()
            })
        }
        Some(AlertsCommand::History(h)) => {
            let state = h.state.map(|s| match s {
                HistoryState::Pending => "pending",
                HistoryState::Firing => "firing",
                HistoryState::Resolved => "resolved",
            });
            let limit = h.limit.map(|l| l.to_string());
            let query = [
                ("rule", h.rule.as_deref()),
                ("state", state),
                ("since", h.since.as_deref()),
                ("limit", limit.as_deref()),
            ];
            let value = ctx.client.get(&["alerts", "history"], &query).await?;
            present(ctx, value, |list: &Items<AlertHistoryEntry>| {
                if list.items.is_empty() {
                    return "no alert history\n".into();
                }
                let mut table = Table::new(&["TIME", "RULE", "STATE", "SEVERITY", "VALUE", "LABELS", "SUMMARY"]);
                for e in &list.items {
                    let mut state = format!("{:?}", e.state).to_lowercase();
                    if e.suppressed {
                        state.push_str(" (suppressed)");
                    }
                    table.push(vec![
                        short_timestamp(&e.at),
                        e.rule.clone(),
                        state,
                        e.severity.as_str().into(),
                        format!("{}", e.value),
                        labels_inline(&e.labels),
                        e.summary.clone(),
                    ]);
                }
                table.render()
            })
        }
    }
}
