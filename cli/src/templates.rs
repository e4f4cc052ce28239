//! `drover template`: export a cluster as a template, upload, list, show and
//! delete stored templates, and instantiate one into a cluster, through
//! `/api/v1/templates` and `/api/v1/clusters/{cluster}/template`
//! (docs/templates.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use drover_api::Items;
use drover_api::templates::{HostGroupHosts, Instantiate, StoredTemplate, TemplateExport, TemplateSummary};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{OutputFormat, WaitArgs};
use crate::commands::{Context, present};
use crate::manager_client::{NO_BODY, NO_QUERY, decode};
use crate::render::Table;

/// The `--help` of `drover template`.
pub const HELP: &str = "\
Cluster templates: a cluster's services, role groups, configuration, parcels
and placement (host groups) in one YAML or JSON document (docs/templates.md).
Uploading a name again stores its next version; each version is immutable.
Sensitive values never appear in a template: they are variables, given at
instantiation with --var.

Host groups at instantiation (--group, repeatable; a group left out takes its
cardinality of healthy hosts matching its selector):
  --group NAME=HOST,HOST...             these hosts (ids or hostnames)
  --group NAME=selector:SELECTOR        hosts matching SELECTOR (k=v,k2!=v2),
                                        as many as the group's cardinality
  --group NAME=selector:SELECTOR:COUNT  COUNT hosts matching SELECTOR
  --group NAME=count:COUNT              COUNT hosts matching the group's selector
  --group NAME=docker:COUNT[:IMAGE]     COUNT new containers from the Docker
                                        provider (made and enrolled first)

Examples:
  drover template export prod -f yaml -o prod.yaml
  drover template upload prod.yaml
  drover template list
  drover template show prod --version 2
  drover template instantiate prod --cluster test --var cache_requirepass=s3cret \\
      --group cache-primary=node-4 --group cache-replica=selector:rack=b:2
  drover template delete prod --version 1";

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// A cluster as a template (sensitive values become variables; warnings
    /// for what does not carry over go to stderr).
    Export(ExportArgs),
    /// Validate FILE (YAML or JSON, `-`: stdin) and store it as the next
    /// version of its name.
    Upload(UploadArgs),
    /// Every template with its newest version and version count.
    List,
    /// One version of a template (the newest by default), as YAML.
    Show(ShowArgs),
    /// Delete one version of a template, or all of them.
    Delete(DeleteArgs),
    /// Make a template a cluster: one command that creates what is missing
    /// and starts everything; running it again converges.
    Instantiate(InstantiateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub cluster: String,
    /// The document's format.
    #[arg(short = 'f', long = "format", value_enum, default_value_t = DocFormat::Yaml)]
    pub format: DocFormat,
    /// Write the document to FILE instead of stdout.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub name: String,
    #[arg(long)]
    pub version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub name: String,
    /// Only this version (default: every version).
    #[arg(long)]
    pub version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InstantiateArgs {
    pub name: String,
    /// The cluster to create or complete.
    #[arg(long, env = "DROVER_CLUSTER")]
    pub cluster: String,
    /// A stored version (default: the newest).
    #[arg(long)]
    pub version: Option<u64>,
    /// A variable's value: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// A host group's hosts (repeatable): GROUP=HOST,HOST... or
    /// GROUP=selector:SELECTOR[:COUNT] or GROUP=count:COUNT or
    /// GROUP=docker:COUNT[:IMAGE].
    #[arg(long = "group", value_name = "GROUP=HOSTS", value_parser = parse_group)]
    pub groups: Vec<(String, HostGroupHosts)>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: write NAME=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!("{s:?}: the variable's name is empty"));
    }
    Ok((k.trim().to_owned(), v.to_owned()))
}

/// `GROUP=h1,h2`, `GROUP=selector:k=v[:N]`, `GROUP=count:N` or
/// `GROUP=docker:N[:IMAGE]`.
pub fn parse_group(s: &str) -> Result<(String, HostGroupHosts), String> {
    let (group, rest) =
        s.split_once('=').ok_or_else(|| format!("{s:?}: write GROUP=HOST,HOST or GROUP=selector:k=v[:COUNT]"))?;
    let group = group.trim();
    if group.is_empty() {
        return Err(format!("{s:?}: the host group's name is empty"));
    }
    let count = |n: &str| n.trim().parse::<u32>().map_err(|_| format!("{s:?}: {n:?} is not a count"));
    let hosts = if let Some(sel) = rest.strip_prefix("selector:") {
        match sel.rsplit_once(':') {
            Some((sel, n)) if n.trim().chars().all(|c| c.is_ascii_digit()) && !n.trim().is_empty() => {
                HostGroupHosts::Selector { selector: Some(sel.to_owned()), count: Some(count(n)?) }
            }
            _ => HostGroupHosts::Selector { selector: Some(sel.to_owned()), count: None },
        }
    } else if let Some(n) = rest.strip_prefix("count:") {
        HostGroupHosts::Selector { selector: None, count: Some(count(n)?) }
    } else if let Some(spec) = rest.strip_prefix("docker:") {
        let (n, image) = match spec.split_once(':') {
            Some((n, image)) => (n, Some(image.trim().to_owned()).filter(|i| !i.is_empty())),
            None => (spec, None),
        };
        HostGroupHosts::Provider {
            provider: drover_api::templates::ProviderKind::Docker,
            count: Some(count(n)?),
            image,
            network: None,
            cpus: None,
            memory: None,
        }
    } else {
        let hosts: Vec<String> = rest.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect();
        if hosts.is_empty() {
            return Err(format!("{s:?}: no hosts given"));
        }
        HostGroupHosts::Hosts { hosts }
    };
    Ok((group.to_owned(), hosts))
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("read stdin")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
    }
}

/// The export as YAML, warnings as leading `#` comments (as the manager
/// writes it with `format=yaml`).
fn export_yaml(e: &TemplateExport) -> anyhow::Result<String> {
    let mut out = String::new();
    for w in &e.warnings {
        out.push_str(&format!("# warning: {}\n", w.replace('\n', " ")));
    }
    out.push_str(&serde_norway::to_string(&e.template).context("format YAML")?);
    Ok(out)
}

pub async fn template(ctx: &Context, command: TemplateCommand) -> anyhow::Result<String> {
    match command {
        TemplateCommand::Export(args) => {
            let value = ctx.client.get(&["clusters", &args.cluster, "template"], NO_QUERY).await?;
            let e: TemplateExport = decode(value)?;
            for w in &e.warnings {
                eprintln!("warning: {w}");
            }
            let text = match args.format {
                DocFormat::Yaml => export_yaml(&e)?,
                DocFormat::Json => {
                    let mut t = serde_json::to_string_pretty(&e.template).context("format JSON")?;
                    t.push('\n');
                    t
                }
            };
            match args.out {
                None => Ok(text),
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
                    Ok(format!(
                        "wrote template {} ({} services, {} host groups, {} variables) to {}\n",
                        e.template.name,
                        e.template.services.len(),
                        e.template.host_groups.len(),
                        e.template.variables.len(),
                        path.display()
                    ))
                }
            }
        }
        TemplateCommand::Upload(args) => {
            let text = read(&args.file)?;
            // YAML is a superset of JSON: one content type serves both.
            let answer = ctx.client.text(Method::POST, &["templates"], Some(("application/yaml", text))).await?;
            let value: Value = serde_json::from_str(&answer).context("the manager's answer is not JSON")?;
            present(ctx, value, |t: &StoredTemplate| {
                format!(
                    "stored template {} version {} ({} services, {} host groups)\n",
                    t.name,
                    t.version,
                    t.document.services.len(),
                    t.document.host_groups.len()
                )
            })
        }
        TemplateCommand::List => {
            let value = ctx.client.get(&["templates"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<TemplateSummary>| {
                if list.items.is_empty() {
                    return "no templates\n".into();
                }
                let mut table = Table::new(&["NAME", "VERSION", "VERSIONS", "CREATED", "BY", "DESCRIPTION"]);
                for t in &list.items {
                    table.push(vec![
                        t.name.clone(),
                        t.latest_version.to_string(),
                        t.versions.to_string(),
                        t.created_at.clone(),
                        t.created_by.clone(),
                        t.description.clone(),
                    ]);
                }
                table.render()
            })
        }
        TemplateCommand::Show(args) => {
            let version = args.version.map(|v| v.to_string());
            let query = [("version", version.as_deref())];
            let value = ctx.client.get(&["templates", &args.name], &query).await?;
            present(ctx, value, |t: &StoredTemplate| {
                let doc = serde_norway::to_string(&t.document).unwrap_or_default();
                format!("# {} version {}, by {} at {}\n{doc}", t.name, t.version, t.created_by, t.created_at)
            })
        }
        TemplateCommand::Delete(args) => {
            let version = args.version.map(|v| v.to_string());
            let query = [("version", version.as_deref())];
            ctx.client.call(Method::DELETE, &["templates", &args.name], &query, NO_BODY).await?;
            Ok(match (ctx.output, args.version) {
                (OutputFormat::Json, _) => String::new(),
                (OutputFormat::Table, Some(v)) => format!("deleted version {v} of template {}\n", args.name),
                (OutputFormat::Table, None) => format!("deleted template {}\n", args.name),
            })
        }
        TemplateCommand::Instantiate(args) => {
            let mut host_groups = BTreeMap::new();
            for (g, hosts) in args.groups {
                if host_groups.insert(g.clone(), hosts).is_some() {
                    bail!("--group {g} is given twice");
                }
            }
            let body = Instantiate {
                cluster: args.cluster.clone(),
                version: args.version,
                variables: args.vars.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
                host_groups,
            };
            let started = ctx
                .client
                .send_json(Method::POST, &["templates", &args.name, "instantiate"], Some(&body))
                .await
                .map_err(|e| anyhow!("instantiate template {} into cluster {}: {e:#}", args.name, args.cluster))?;
            crate::lifecycle::follow(ctx, started, &args.wait).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_groups_by_hosts_selector_or_count() {
        assert_eq!(
            parse_group("web=node-1, node-2").unwrap(),
            ("web".into(), HostGroupHosts::Hosts { hosts: vec!["node-1".into(), "node-2".into()] })
        );
        assert_eq!(
            parse_group("zk=selector:zk=true,rack!=a:3").unwrap(),
            ("zk".into(), HostGroupHosts::Selector { selector: Some("zk=true,rack!=a".into()), count: Some(3) })
        );
        assert!(matches!(
            parse_group("zk=docker:3:drover/agent:dev").unwrap().1,
            HostGroupHosts::Provider { count: Some(3), image: Some(ref i), .. } if i == "drover/agent:dev"
        ));
        assert_eq!(
            parse_group("zk=selector:zk=true").unwrap(),
            ("zk".into(), HostGroupHosts::Selector { selector: Some("zk=true".into()), count: None })
        );
        assert_eq!(
            parse_group("zk=count:2").unwrap(),
            ("zk".into(), HostGroupHosts::Selector { selector: None, count: Some(2) })
        );
        assert!(parse_group("zk").is_err());
        assert!(parse_group("zk=").is_err());
        assert!(parse_group("zk=count:x").is_err());
        assert_eq!(parse_var("pw=a=b").unwrap(), ("pw".into(), "a=b".into()));
        assert!(parse_var("=x").is_err());
    }
}
