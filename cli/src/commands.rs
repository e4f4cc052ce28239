//! One function per command: call the REST API, then render the answer for
//! people or pass the API's JSON through. Each returns what goes to stdout,
//! so the tests run whole commands against an in-process manager.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;

use anyhow::{Context as _, anyhow, bail};
use chrono::Utc;
use drover_api::history::{AuditQuery, EventQuery};
use drover_api::hosts::{HostList, HostQuery};
use drover_api::model::{Host, HostStatus};
use drover_api::tokens::{
    ApiTokenList, CreateApiToken, CreateEnrollmentToken, CreatedApiToken, CreatedEnrollmentToken, EnrollmentTokenList,
};
use drover_api::users::Me;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{
    ApiTokensCommand, ApiTokensCreateArgs, AuditArgs, Command, EventsArgs, HostsCommand, HostsDecommissionArgs,
    HostsLabelArgs, HostsListArgs, OutputFormat, TokensCommand, TokensCreateArgs,
};
use crate::labels::{label_patch, labels_map, selector_query};
use crate::manager_client::{ApiFailure, ManagerClient, NO_BODY, NO_QUERY, decode};
use crate::render;

/// The port agents connect to unless the manager's --grpc-addr says otherwise.
const AGENT_PORT: u16 = 7182;

/// The shortest host ID prefix accepted in place of a full ID.
const MIN_ID_PREFIX: usize = 4;

/// What every command needs.
#[derive(Debug)]
pub struct Context {
    pub client: ManagerClient,
    pub output: OutputFormat,
}

/// Asks the person at the terminal to confirm a destructive command.
pub trait Prompt {
    /// Whether anyone can answer (stdin is a terminal).
    fn is_interactive(&self) -> bool;
    /// Shows `question` and reads a yes/no answer; no is the default.
    fn confirm(&mut self, question: &str) -> std::io::Result<bool>;
    /// Reads a secret: at a terminal after `question`, without echo;
    /// otherwise one line from stdin.
    fn secret(&mut self, question: &str) -> std::io::Result<String> {
        let _ = question;
        Err(std::io::Error::other("no terminal or input to read a password from"))
    }
}

/// The real prompt: question on stderr, answer from stdin.
#[derive(Debug)]
pub struct TerminalPrompt;

impl Prompt for TerminalPrompt {
    fn is_interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn confirm(&mut self, question: &str) -> std::io::Result<bool> {
        let mut err = std::io::stderr().lock();
        write!(err, "{question}")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(is_yes(&answer))
    }

    fn secret(&mut self, question: &str) -> std::io::Result<String> {
        if self.is_interactive() {
            return rpassword::prompt_password(question);
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}

/// `y` or `yes`, in any case; anything else (an empty line, end of input) is no.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn run(ctx: &Context, command: Command, prompt: &mut dyn Prompt) -> anyhow::Result<String> {
    match command {
        Command::Hosts(HostsCommand::List(args)) => hosts_list(ctx, &args).await,
        Command::Hosts(HostsCommand::Show(args)) => hosts_show(ctx, &args.id).await,
        Command::Hosts(HostsCommand::Label(args)) => hosts_label(ctx, &args).await,
        Command::Hosts(HostsCommand::Decommission(args)) => hosts_decommission(ctx, &args, prompt).await,
        Command::Hosts(HostsCommand::Bootstrap(args)) => crate::remote_hosts::bootstrap(ctx, &args).await,
        Command::Tokens(TokensCommand::Create(args)) => tokens_create(ctx, &args).await,
        Command::Tokens(TokensCommand::List) => tokens_list(ctx).await,
        Command::Tokens(TokensCommand::Revoke(args)) => tokens_revoke(ctx, &args.id).await,
        Command::ApiTokens(ApiTokensCommand::Create(args)) => api_tokens_create(ctx, &args).await,
        Command::ApiTokens(ApiTokensCommand::List) => api_tokens_list(ctx).await,
        Command::ApiTokens(ApiTokensCommand::Revoke(args)) => api_tokens_revoke(ctx, &args.id).await,
        Command::Users(command) => crate::users::users(ctx, command, prompt).await,
        Command::Passwd(args) => crate::users::passwd(ctx, &args, prompt).await,
        Command::Whoami => whoami(ctx).await,
        Command::Events(args) => events(ctx, &args).await,
        Command::Audit(args) => audit(ctx, &args).await,
        Command::Parcel(command) => crate::lifecycle::parcel(ctx, command).await,
        Command::Cluster(command) => crate::lifecycle::cluster(ctx, command).await,
        Command::Service(command) => crate::lifecycle::service(ctx, command).await,
        Command::Provider(crate::cli::ProviderCommand::Docker(command)) => {
            crate::remote_hosts::docker(ctx, command).await
        }
        Command::AlertRules(command) => crate::alerts::alert_rules(ctx, command).await,
        Command::Silence(command) => crate::alerts::silence(ctx, command).await,
        Command::Maintenance(command) => crate::alerts::maintenance(ctx, command).await,
        Command::Alerts(args) => crate::alerts::alerts(ctx, args).await,
        Command::Logs(args) => crate::logs::logs(ctx, args).await,
        Command::Receivers(command) => crate::notifications::receivers(ctx, command).await,
        Command::Routes(command) => crate::notifications::routes(ctx, command).await,
        Command::Notifications(command) => crate::notifications::notifications(ctx, command).await,
        Command::Diagnostics(command) => crate::diagnostics::diagnostics(ctx, command).await,
        Command::Template(command) => crate::templates::template(ctx, command).await,
        Command::Env(command) => crate::environments::env(ctx, command).await,
        // It saves settings rather than using a client: see `crate::login`.
        Command::Login(_) => bail!("drover login runs before a client is made; call drover_cli::login::login"),
    }
}

pub(crate) fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("format JSON")?;
    text.push('\n');
    Ok(text)
}

/// The API's JSON as it came, or the decoded answer rendered for people.
pub(crate) fn present<T: DeserializeOwned>(
    ctx: &Context,
    value: Value,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    match ctx.output {
        OutputFormat::Json => pretty(&value),
        OutputFormat::Table => Ok(render(&decode::<T>(value)?)),
    }
}

async fn hosts_list(ctx: &Context, args: &HostsListArgs) -> anyhow::Result<String> {
    let query = HostQuery {
        status: args.status.clone(),
        label: selector_query(&args.label),
        hostname: args.hostname.clone(),
        limit: args.limit,
        offset: args.offset,
    };
    let value = ctx.client.get(&["hosts"], &query).await?;
    present(ctx, value, |list: &HostList| render::hosts_table(list, Utc::now()))
}

/// A host found by ID or ID prefix, with its JSON as the manager sent it.
#[derive(Debug)]
pub(crate) struct FoundHost {
    pub(crate) host: Host,
    raw: Value,
}

/// Finds a host by full ID, else by its hostname, else by a unique ID
/// prefix of at least [`MIN_ID_PREFIX`] characters among all hosts.
pub(crate) async fn resolve_host(client: &ManagerClient, id: &str) -> anyhow::Result<FoundHost> {
    match client.get(&["hosts", id], NO_QUERY).await {
        Ok(raw) => {
            return Ok(FoundHost { host: decode(raw.clone())?, raw });
        }
        Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == 404) => {}
        Err(e) => return Err(e),
    }
    let hosts = all_hosts(client).await?;
    let named: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].0.hostname.eq_ignore_ascii_case(id)).collect();
    match named[..] {
        [one] => {
            let (host, raw) = hosts.into_iter().nth(one).ok_or_else(|| anyhow!("host index out of range"))?;
            return Ok(FoundHost { host, raw });
        }
        [] => {}
        _ => {
            let ids: Vec<&str> = named.iter().map(|&i| hosts[i].0.id.as_str()).collect();
            bail!("hostname {id} names {} hosts ({}); give an ID", ids.len(), ids.join(", "));
        }
    }
    if id.chars().count() < MIN_ID_PREFIX {
        bail!("host {id} not found; an ID prefix needs at least {MIN_ID_PREFIX} characters");
    }
    let ids: Vec<(&str, &str)> = hosts.iter().map(|(h, _)| (h.id.as_str(), h.hostname.as_str())).collect();
    let index = pick_by_prefix(&ids, id).map_err(|e| anyhow!(e))?;
    let (host, raw) = hosts.into_iter().nth(index).ok_or_else(|| anyhow!("host index out of range"))?;
    Ok(FoundHost { host, raw })
}

/// Every host, page by page.
pub(crate) async fn all_hosts(client: &ManagerClient) -> anyhow::Result<Vec<(Host, Value)>> {
    const PAGE: u32 = 1000;
    let mut hosts = Vec::new();
    loop {
        let offset = u32::try_from(hosts.len()).context("too many hosts")?;
        let query = HostQuery { limit: Some(PAGE), offset: Some(offset), ..HostQuery::default() };
        let page = client.get(&["hosts"], &query).await?;
        let raw_items = page.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        let list: HostList = decode(page)?;
        let n = list.items.len();
        hosts.extend(list.items.into_iter().zip(raw_items));
        if n == 0 || hosts.len() as u64 >= list.total {
            return Ok(hosts);
        }
    }
}

/// The index of the only `(id, hostname)` whose ID starts with `prefix`
/// (ignoring case).
pub fn pick_by_prefix(hosts: &[(&str, &str)], prefix: &str) -> Result<usize, String> {
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<usize> =
        (0..hosts.len()).filter(|&i| hosts[i].0.to_ascii_lowercase().starts_with(&prefix)).collect();
    match matches[..] {
        [one] => Ok(one),
        [] => Err(format!("no host has the ID or ID prefix {prefix}; see `drover hosts list`")),
        _ => {
            let shown: Vec<String> =
                matches.iter().take(5).map(|&i| format!("{} ({})", hosts[i].0, hosts[i].1)).collect();
            let more = if matches.len() > shown.len() { ", ..." } else { "" };
            Err(format!(
                "ID prefix {prefix} matches {} hosts: {}{more}; give more characters",
                matches.len(),
                shown.join(", ")
            ))
        }
    }
}

async fn hosts_show(ctx: &Context, id: &str) -> anyhow::Result<String> {
    let found = resolve_host(&ctx.client, id).await?;
    match ctx.output {
        OutputFormat::Json => pretty(&found.raw),
        OutputFormat::Table => Ok(render::host_detail(&found.host, Utc::now())),
    }
}

async fn hosts_label(ctx: &Context, args: &HostsLabelArgs) -> anyhow::Result<String> {
    let patch = label_patch(&args.set, &args.remove).map_err(|e| anyhow!(e))?;
    let found = resolve_host(&ctx.client, &args.id).await?;
    let value = ctx.client.send_json(Method::PATCH, &["hosts", &found.host.id], Some(&patch)).await?;
    present(ctx, value, render::host_labels)
}

async fn hosts_decommission(
    ctx: &Context,
    args: &HostsDecommissionArgs,
    prompt: &mut dyn Prompt,
) -> anyhow::Result<String> {
    let FoundHost { host, raw } = resolve_host(&ctx.client, &args.id).await?;
    let name = format!("{} ({})", host.hostname, host.id);
    if host.status == HostStatus::Decommissioned {
        return match ctx.output {
            OutputFormat::Json => pretty(&raw),
            OutputFormat::Table => Ok(format!("host {name} is already decommissioned\n")),
        };
    }
    if !args.yes {
        if !prompt.is_interactive() {
            bail!("refusing to decommission host {name} without confirmation: stdin is not a terminal; pass --yes");
        }
        let question = format!(
            "Decommission host {name}? Its certificate is revoked and its agent refused from then on; \
             it would have to enroll again with a new token. [y/N] "
        );
        if !prompt.confirm(&question).context("read the answer")? {
            bail!("not confirmed; host {name} was not decommissioned");
        }
    }
    let value = ctx.client.send_json(Method::DELETE, &["hosts", &host.id], NO_BODY).await?;
    present(ctx, value, |h: &Host| format!("decommissioned host {} ({})\n", h.hostname, h.id))
}

/// The `--manager` URL agents use: the host of `--url` on the agent port,
/// and whether that host is a loopback address other hosts cannot use.
pub fn agent_manager_url(base: &Url) -> (String, bool) {
    let host = base.host_str().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_owned();
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let url = if host.contains(':') {
        format!("https://[{host}]:{AGENT_PORT}")
    } else {
        format!("https://{host}:{AGENT_PORT}")
    };
    (url, loopback)
}

async fn tokens_create(ctx: &Context, args: &TokensCreateArgs) -> anyhow::Result<String> {
    let labels = labels_map(&args.label).map_err(|e| anyhow!(e))?;
    let body = CreateEnrollmentToken { ttl_seconds: Some(args.ttl), max_uses: Some(args.max_uses), labels };
    let value = ctx.client.send_json(Method::POST, &["enrollment-tokens"], Some(&body)).await?;
    let (agent_url, loopback) = agent_manager_url(ctx.client.base_url());
    if loopback && ctx.output == OutputFormat::Table {
        eprintln!(
            "note: --url {} is a loopback address; on other hosts, use an address of the manager they can reach",
            ctx.client.display_url()
        );
    }
    present(ctx, value, |t: &CreatedEnrollmentToken| render::created_token(t, &agent_url, Utc::now()))
}

async fn tokens_list(ctx: &Context) -> anyhow::Result<String> {
    let value = ctx.client.get(&["enrollment-tokens"], NO_QUERY).await?;
    present(ctx, value, |list: &EnrollmentTokenList| render::tokens_table(list, Utc::now()))
}

async fn tokens_revoke(ctx: &Context, id: &str) -> anyhow::Result<String> {
    ctx.client.call(Method::DELETE, &["enrollment-tokens", id], NO_QUERY, NO_BODY).await?;
    Ok(match ctx.output {
        OutputFormat::Json => String::new(),
        OutputFormat::Table => format!("revoked enrollment token {id}\n"),
    })
}

async fn api_tokens_create(ctx: &Context, args: &ApiTokensCreateArgs) -> anyhow::Result<String> {
    let grants = (!args.roles.is_empty()).then(|| args.roles.clone());
    let body = CreateApiToken { name: args.name.clone(), ttl_seconds: args.ttl, grants };
    let value = ctx.client.send_json(Method::POST, &["api-tokens"], Some(&body)).await?;
    present(ctx, value, |t: &CreatedApiToken| render::created_api_token(t, &args.roles, Utc::now()))
}

async fn api_tokens_list(ctx: &Context) -> anyhow::Result<String> {
    let value = ctx.client.get(&["api-tokens"], NO_QUERY).await?;
    present(ctx, value, |list: &ApiTokenList| render::api_tokens_table(list, Utc::now()))
}

async fn api_tokens_revoke(ctx: &Context, id: &str) -> anyhow::Result<String> {
    ctx.client.call(Method::DELETE, &["api-tokens", id], NO_QUERY, NO_BODY).await?;
    Ok(match ctx.output {
        OutputFormat::Json => String::new(),
        OutputFormat::Table => format!("revoked API token {id}\n"),
    })
}

async fn whoami(ctx: &Context) -> anyhow::Result<String> {
    let value = ctx.client.get(&["users", "me"], NO_QUERY).await?;
    let manager = ctx.client.display_url();
    let credentials = ctx.client.credentials().describe();
    let manager = match ctx.client.base_url().scheme() {
        "https" => format!("{manager} (verified with {})", ctx.client.trust().describe()),
        _ => manager,
    };
    present(ctx, value, |u: &Me| render::whoami(u, &manager, &credentials, Utc::now()))
}

async fn events(ctx: &Context, args: &EventsArgs) -> anyhow::Result<String> {
    let mut query = EventQuery { limit: args.limit, ..EventQuery::default() };
    if let Some(host) = &args.host {
        let found = resolve_host(&ctx.client, host).await?;
        query.object_type = Some("host".to_owned());
        query.object_id = Some(found.host.id);
    }
    let value = ctx.client.get(&["events"], &query).await?;
    present(ctx, value, render::events_table)
}

async fn audit(ctx: &Context, args: &AuditArgs) -> anyhow::Result<String> {
    let query = AuditQuery {
        user: args.user.clone(),
        object_id: args.object_id.clone(),
        limit: args.limit,
        ..AuditQuery::default()
    };
    let value = ctx.client.get(&["audit"], &query).await?;
    present(ctx, value, render::audit_table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        for yes in ["y", "Y\n", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yes please", "ja"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn prefixes() {
        let hosts = [("0f3c1111-aaaa", "web-1"), ("0f3c2222-bbbb", "web-2"), ("9abc0000-cccc", "db-1")];
        assert_eq!(pick_by_prefix(&hosts, "0F3C1"), Ok(0));
        assert_eq!(pick_by_prefix(&hosts, "9abc"), Ok(2));
        let err = pick_by_prefix(&hosts, "0f3c").unwrap_err();
        assert_eq!(
            err,
            "ID prefix 0f3c matches 2 hosts: 0f3c1111-aaaa (web-1), 0f3c2222-bbbb (web-2); give more characters"
        );
        assert!(pick_by_prefix(&hosts, "ffff").unwrap_err().starts_with("no host has the ID or ID prefix ffff"));
    }

    #[test]
    fn agent_urls() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            agent_manager_url(&url("http://manager.example:7180")),
            ("https://manager.example:7182".into(), false)
        );
        assert_eq!(agent_manager_url(&url("http://127.0.0.1:7180")), ("https://127.0.0.1:7182".into(), true));
        assert_eq!(agent_manager_url(&url("https://[::1]/drover/")), ("https://[::1]:7182".into(), true));
        assert_eq!(agent_manager_url(&url("http://[fd00::5]:7180")), ("https://[fd00::5]:7182".into(), false));
        assert_eq!(agent_manager_url(&url("http://LocalHost:7180")), ("https://localhost:7182".into(), true));
    }
}
