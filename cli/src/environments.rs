//! `drover env`: per-developer environments on Docker containers, through
//! `/api/v1/environments` (docs/templates.md, "Environments").

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use drover_api::Items;
use drover_api::environments::{
    CreateEnvironment, CreateSnapshot, EnvHostGroup, EnvironmentDetail, EnvironmentView, SnapshotView, Teardown,
};
use drover_api::providers::Memory;
use drover_api::templates::StoredTemplate;
use reqwest::Method;
use serde_json::Value;

use crate::cli::WaitArgs;
use crate::commands::{Context, present};
use crate::manager_client::{NO_BODY, NO_QUERY, decode};
use crate::render::Table;

/// The `--help` of `drover env`.
pub const HELP: &str = "\
Environments: a whole cluster from a template on new Docker containers, one
command up and one command down. Each host group of the template gets its
cardinality of containers (or --count GROUP=N); the template is instantiated
on them; at the end the address and ports of every role are printed.
Environments belong to an owner, count against the owner's host limit
(--env-max-hosts-per-owner on the manager) and are taken down by the manager
when their ttl runs out (default 8h; --ttl never for none).

-f takes a template file (uploaded first, as the next version of its name)
or the name of a stored template. A snapshot keeps an environment's
configuration and every container's data (nothing is stopped); up
--from-snapshot brings the same scene back on new containers (sensitive
values are given again with --var).

Examples:
  drover env up alice-dev -f templates/stack.yaml --var cache_requirepass=s3cret
  drover env up bob-zk -f zookeeper-ensemble --ttl 2h --count servers=5
  drover env list
  drover env show alice-dev
  drover env snapshot alice-dev before-upgrade
  drover env up alice-copy --from-snapshot before-upgrade
  drover env snapshots
  drover env snapshot-delete before-upgrade
  drover env down alice-dev";

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Bring an environment up (or finish one whose first run failed) and
    /// follow it until every role has started.
    Up(Box<UpArgs>),
    /// Every environment: owner, template, state, expiry, hosts, health.
    List,
    /// One environment with its containers and role endpoints.
    Show(NameArg),
    /// Take an environment down: services, hosts, containers, volumes and
    /// tokens, leaving nothing on the engine.
    Down(NameArg),
    /// Snapshot an environment: its configuration and each container with
    /// its roles' data, as images (nothing is stopped).
    Snapshot(SnapshotArgs),
    /// Every snapshot with its images.
    Snapshots,
    /// Delete a snapshot: its images and its template.
    SnapshotDelete(NameArg),
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The environment.
    pub name: String,
    /// The snapshot's name.
    pub snapshot: String,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The environment's name (also its cluster's).
    pub name: String,
    /// A template file (YAML or JSON), or a stored template's name.
    #[arg(short = 'f', long = "template", value_name = "TEMPLATE", required_unless_present = "from_snapshot")]
    pub template: Option<String>,
    /// Bring a snapshot back instead: its configuration, roles and data.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "template")]
    pub from_snapshot: Option<String>,
    /// A stored template's version (default: the newest).
    #[arg(long)]
    pub version: Option<u64>,
    /// A variable's value: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::templates::parse_var)]
    pub vars: Vec<(String, String)>,
    /// Who owns it (default: you).
    #[arg(long, env = "DROVER_ENV_OWNER")]
    pub owner: Option<String>,
    /// How long it lives: 8h, 30m, 2d, or never (default: the manager's).
    #[arg(long, env = "DROVER_ENV_TTL")]
    pub ttl: Option<String>,
    /// Agent image of the containers (default drover/agent:latest).
    #[arg(long, env = "DROVER_ENV_IMAGE")]
    pub image: Option<String>,
    /// Docker network of the containers (default bridge).
    #[arg(long, env = "DROVER_ENV_NETWORK")]
    pub network: Option<String>,
    /// Containers of a host group: GROUP=N (repeatable; default: the
    /// group's cardinality).
    #[arg(long = "count", value_name = "GROUP=N", value_parser = parse_count)]
    pub counts: Vec<(String, u32)>,
    /// CPU limit of every container, in CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit of every container: bytes or 256m, 1g.
    #[arg(long)]
    pub memory: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

fn parse_count(s: &str) -> Result<(String, u32), String> {
    let (g, n) = s.split_once('=').ok_or_else(|| format!("{s:?}: write GROUP=N"))?;
    let n = n.trim().parse::<u32>().map_err(|_| format!("{s:?}: {n:?} is not a count"))?;
    Ok((g.trim().to_owned(), n))
}

pub async fn env(ctx: &Context, command: EnvCommand) -> anyhow::Result<String> {
    match command {
        EnvCommand::Up(args) => up(ctx, *args).await,
        EnvCommand::List => {
            let value = ctx.client.get(&["environments"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<EnvironmentView>| {
                if list.items.is_empty() {
                    return "no environments\n".into();
                }
                let mut table =
                    Table::new(&["NAME", "OWNER", "TEMPLATE", "STATE", "CREATED", "EXPIRES", "HOSTS", "HEALTH"]);
                for e in &list.items {
                    table.push(vec![
                        e.name.clone(),
                        e.owner.clone(),
                        format!("{} v{}", e.template, e.template_version),
                        e.state.as_str().to_owned(),
                        e.created_at.clone(),
                        e.expires_at.clone().unwrap_or_else(|| "never".into()),
                        e.hosts.to_string(),
                        e.health.map_or("-".into(), |h| format!("{h:?}").to_lowercase()),
                    ]);
                }
                table.render()
            })
        }
        EnvCommand::Snapshot(args) => {
            eprintln!("snapshotting environment {} as {} (committing each container) ...", args.name, args.snapshot);
            let body = CreateSnapshot { name: args.snapshot.clone() };
            let value =
                ctx.client.send_json(Method::POST, &["environments", &args.name, "snapshots"], Some(&body)).await?;
            present(ctx, value, |s: &SnapshotView| {
                let mut out = String::new();
                for w in &s.warnings {
                    out.push_str(&format!("warning: {w}\n"));
                }
                out.push_str(&format!(
                    "snapshot {} of environment {}: {} containers as images, template {}; bring it back with \
                     drover env up NEW --from-snapshot {}\n",
                    s.name,
                    s.environment,
                    s.hosts.len(),
                    s.template,
                    s.name
                ));
                out
            })
        }
        EnvCommand::Snapshots => {
            let value = ctx.client.get(&["snapshots"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<SnapshotView>| {
                if list.items.is_empty() {
                    return "no snapshots\n".into();
                }
                let mut table = Table::new(&["NAME", "ENVIRONMENT", "CREATED", "BY", "CONTAINERS", "IMAGES"]);
                for s in &list.items {
                    let images: Vec<&str> = s.hosts.iter().map(|h| h.image.as_str()).collect();
                    table.push(vec![
                        s.name.clone(),
                        s.environment.clone(),
                        s.created_at.clone(),
                        s.created_by.clone(),
                        s.hosts.len().to_string(),
                        images.join(" "),
                    ]);
                }
                table.render()
            })
        }
        EnvCommand::SnapshotDelete(args) => {
            ctx.client.call(Method::DELETE, &["snapshots", &args.name], NO_QUERY, NO_BODY).await?;
            Ok(format!("deleted snapshot {} with its images and template\n", args.name))
        }
        EnvCommand::Show(args) => {
            let value = ctx.client.get(&["environments", &args.name], NO_QUERY).await?;
            present(ctx, value, summary)
        }
        EnvCommand::Down(args) => {
            eprintln!("taking environment {} down ...", args.name);
            let value = ctx.client.call(Method::DELETE, &["environments", &args.name], NO_QUERY, NO_BODY).await?;
            let value = value.ok_or_else(|| anyhow!("the manager answered the teardown with no body"))?;
            present(ctx, value, |t: &Teardown| {
                let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
                format!(
                    "took environment {} down in {:.1}s: {}, {} with their volumes, {} removed\n",
                    t.name,
                    t.seconds,
                    n(t.services.len(), "service"),
                    n(t.containers.len(), "container"),
                    n(t.hosts.len(), "host")
                )
            })
        }
    }
}

/// The template's name and version: a file is uploaded first.
async fn template(ctx: &Context, given: &str, version: Option<u64>) -> anyhow::Result<(String, Option<u64>)> {
    let path = Path::new(given);
    if !path.is_file() {
        if given.contains('/') || given.ends_with(".yaml") || given.ends_with(".yml") || given.ends_with(".json") {
            bail!("template file {given} not found");
        }
        return Ok((given.to_owned(), version));
    }
    if version.is_some() {
        bail!("--version is for a stored template; {given} is a file");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {given}"))?;
    let answer = ctx
        .client
        .text(Method::POST, &["templates"], Some(("application/yaml", text)))
        .await
        .map_err(|e| anyhow!("upload template {given}: {e:#}"))?;
    let t: StoredTemplate =
        serde_json::from_str(&answer).context("the manager's answer to the template upload is not a template")?;
    eprintln!("uploaded {given} as template {} version {}", t.name, t.version);
    Ok((t.name, Some(t.version)))
}

async fn up(ctx: &Context, args: UpArgs) -> anyhow::Result<String> {
    let (name, version) = match (&args.template, &args.from_snapshot) {
        (Some(t), _) => template(ctx, t, args.version).await?,
        (None, Some(snap)) => (format!("snapshot-{snap}"), args.version),
        (None, None) => bail!("give -f TEMPLATE or --from-snapshot SNAPSHOT"),
    };
    let memory = args.memory.map(Memory::Text);
    let mut host_groups = std::collections::BTreeMap::new();
    for (g, n) in &args.counts {
        let group = EnvHostGroup { count: Some(*n), ..Default::default() };
        if host_groups.insert(g.clone(), group).is_some() {
            bail!("--count {g} is given twice");
        }
    }
    if args.cpus.is_some() || memory.is_some() {
        // Limits apply to every group: the template's groups are only known
        // to the manager, so ask for it first.
        let t: StoredTemplate = decode(
            ctx.client.get(&["templates", &name], &[("version", version.map(|v| v.to_string()).as_deref())]).await?,
        )?;
        for hg in &t.document.host_groups {
            let g = host_groups.entry(hg.name.clone()).or_insert_with(EnvHostGroup::default);
            g.cpus = args.cpus;
            g.memory = memory.clone();
        }
    }
    let body = CreateEnvironment {
        name: args.name.clone(),
        template: if args.from_snapshot.is_some() { String::new() } else { name.clone() },
        from_snapshot: args.from_snapshot.clone(),
        version,
        variables: args.vars.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
        owner: args.owner,
        ttl: args.ttl,
        image: args.image,
        network: args.network,
        host_groups,
    };
    let created = ctx
        .client
        .send_json(Method::POST, &["environments"], Some(&body))
        .await
        .map_err(|e| anyhow!("bring environment {} up: {e:#}", args.name))?;
    let env: EnvironmentDetail = decode(created.clone())?;
    let e = &env.environment;
    if args.wait.no_wait {
        return present(ctx, created, |d: &EnvironmentDetail| {
            format!(
                "environment {} is coming up from template {} v{} (command {}); drover env show {} tells how far\n",
                d.environment.name,
                d.environment.template,
                d.environment.template_version,
                d.environment.command_id,
                d.environment.name
            )
        });
    }
    eprintln!(
        "environment {} of {} from template {} v{}, expires {}",
        e.name,
        e.owner,
        e.template,
        e.template_version,
        e.expires_at.as_deref().unwrap_or("never")
    );
    let started = ctx.client.get(&["commands", &e.command_id], NO_QUERY).await?;
    let followed = crate::lifecycle::follow(ctx, started, &args.wait).await;
    let value = ctx.client.get(&["environments", &args.name], NO_QUERY).await?;
    if let Err(err) = followed {
        bail!(
            "environment {} did not come up: {err:#}\nrun the same `drover env up` again to finish it, or \
             `drover env down {}` to remove it",
            args.name,
            args.name
        );
    }
    present(ctx, value, summary)
}

/// An environment and where its roles listen.
fn summary(d: &EnvironmentDetail) -> String {
    let e = &d.environment;
    let mut out = format!(
        "environment {}: {} from template {} v{}, owner {}, created {}, expires {}, {} hosts, health {}\n",
        e.name,
        e.state.as_str(),
        e.template,
        e.template_version,
        e.owner,
        e.created_at,
        e.expires_at.as_deref().unwrap_or("never"),
        e.hosts,
        e.health.map_or("not yet evaluated".into(), |h| format!("{h:?}").to_lowercase()),
    );
    if d.endpoints.is_empty() {
        out.push_str("no roles yet\n");
        return out;
    }
    let mut table = Table::new(&["SERVICE", "ROLE TYPE", "HOST", "ADDRESS", "PORTS"]);
    for ep in &d.endpoints {
        let ports: Vec<String> = ep.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.push(vec![
            ep.service.clone(),
            ep.role_type.clone(),
            ep.hostname.clone(),
            ep.address.clone(),
            ports.join(" "),
        ]);
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_group_equals_number() {
        assert_eq!(parse_count("servers=5").unwrap(), ("servers".into(), 5));
        assert!(parse_count("servers").is_err());
        assert!(parse_count("servers=many").is_err());
    }
}
