//! One function per command: call the REST API, then render the answer for
//! people or pass the API's JSON through. Each returns what goes to stdout,
//! so the tests run whole commands against an in-process manager.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;

use anyhow::{Context as _, anyhow, bail};
use chrono::Utc;
use drover_api::history::{AuditQuery, EventQuery};
use drover_api::hosts::{HostList, HostQuery};
use drover_api::model::{Host, HostStatus, User};
use drover_api::tokens::{
    CreateApiToken, CreateEnrollmentToken, CreatedApiToken, CreatedEnrollmentToken, EnrollmentTokenList,
};
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
        Command::Whoami => whoami(ctx).await,
        Command::Events(args) => events(ctx, &args).await,
        Command::Audit(args) => audit(ctx, &args).await,
        Command::Parcel(command) => crate::lifecycle::parcel(ctx, command).await,
        Command::Cluster(command) => crate::lifecycle::cluster(ctx, command).await,
        Command::Service(command) => crate::lifecycle::service(ctx, command).await,
        Command::Provider(crate::cli::ProviderCommand::Docker(command)) => {
            crate::remote_hosts::docker(ctx, command).await
        }
    }
}

pub(crate) fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("format JSON")?;
    text.push('\n');
    Ok(text)
}

/// The API's JSON as it came, or the decoded answer rendered for people.
fn present<T: DeserializeOwned>(
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

/// Finds a host by full ID, else by a unique ID prefix of at least
/// [`MIN_ID_PREFIX`] characters among all hosts.
pub(crate) async fn resolve_host(client: &ManagerClient, id: &str) -> anyhow::Result<FoundHost> {
    match client.get(&["hosts", id], NO_QUERY).await {
        Ok(raw) => {
            return Ok(FoundHost { host: decode(raw.clone())?, raw });
        }
        Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == 404) => {}
        Err(e) => return Err(e),
    }
    if id.chars().count() < MIN_ID_PREFIX {
        bail!("host {id} not found; an ID prefix needs at least {MIN_ID_PREFIX} characters");
    }
    let hosts = all_hosts(client).await?;
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
    let body = CreateApiToken { name: args.name.clone(), ttl_seconds: args.ttl };
    let value = ctx.client.send_json(Method::POST, &["api-tokens"], Some(&body)).await?;
    present(ctx, value, |t: &CreatedApiToken| render::created_api_token(t, Utc::now()))
}

async fn whoami(ctx: &Context) -> anyhow::Result<String> {
    let value = ctx.client.get(&["users", "me"], NO_QUERY).await?;
    let manager = ctx.client.display_url();
    let credentials = ctx.client.credentials().describe();
    present(ctx, value, |u: &User| render::whoami(u, &manager, &credentials, Utc::now()))
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
    use std::str::FromStr;

    use clap::Parser;
    use drover_manager::auth::sha256_hex;
    use drover_manager::model::{HostFacts, HostKind, HostMetrics, now_millis};
    use drover_manager::store::{HeartbeatRow, NewEvent, NewHost};
    use drover_manager::{Manager, ManagerConfig, ManagerHandle};
    use drover_proto::token::EnrollmentToken;
    use serde_json::json;
    use tokio::net::TcpListener;

    use super::*;
    use crate::cli::Cli;
    use crate::manager_client::{Credentials, PasswordSource};

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

    /// Answers the confirmation prompt with a fixed reply.
    struct ScriptedPrompt {
        interactive: bool,
        answer: bool,
        asked: Vec<String>,
    }

    impl Prompt for ScriptedPrompt {
        fn is_interactive(&self) -> bool {
            self.interactive
        }

        fn confirm(&mut self, question: &str) -> std::io::Result<bool> {
            self.asked.push(question.to_owned());
            Ok(self.answer)
        }
    }

    fn no_prompt() -> ScriptedPrompt {
        ScriptedPrompt { interactive: false, answer: false, asked: Vec::new() }
    }

    const PASSWORD: &str = "correct horse battery staple";

    async fn start_manager(dir: &std::path::Path) -> ManagerHandle {
        drover_proto::tls::provider();
        let mut config = ManagerConfig::for_data_dir(dir);
        config.admin_password = Some(PASSWORD.into());
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Manager::start(config, http, grpc).await.unwrap()
    }

    fn context(handle: &ManagerHandle, output: OutputFormat, credentials: Credentials) -> Context {
        let url = Url::parse(&format!("http://{}", handle.http_addr)).unwrap();
        Context { client: ManagerClient::new(url, credentials).unwrap(), output }
    }

    fn admin(password: &str) -> Credentials {
        Credentials::Password { user: "admin".into(), password: password.into(), source: PasswordSource::Flag }
    }

    async fn drover(ctx: &Context, args: &[&str]) -> anyhow::Result<String> {
        drover_prompted(ctx, args, &mut no_prompt()).await
    }

    async fn drover_prompted(ctx: &Context, args: &[&str], prompt: &mut dyn Prompt) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()))?;
        run(ctx, cli.command, prompt).await
    }

    fn facts(hostname: &str) -> HostFacts {
        HostFacts {
            hostname: hostname.into(),
            addresses: vec!["10.0.0.5".into()],
            kind: HostKind::Container,
            kind_evidence: "/.dockerenv exists".into(),
            os: "Debian 12".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            cpu_cores: 2,
            memory_bytes: 4 << 30,
            disks: vec![],
            fqdn: String::new(),
            container_id: String::new(),
            machine_cpu_cores: 0,
            machine_memory_bytes: 0,
            capacity_evidence: String::new(),
        }
    }

    /// Enrolls a host the way the gRPC service does, straight in the store.
    async fn enroll(handle: &ManagerHandle, token: &EnrollmentToken, id: &str, hostname: &str) {
        let host = NewHost {
            id: id.into(),
            facts: facts(hostname),
            agent_version: "0.1.0".into(),
            labels: Default::default(),
            cert_serial: format!("serial-{id}"),
        };
        handle.state.store.enroll_host(&token.id, &sha256_hex(&token.secret), now_millis(), &host).await.unwrap();
    }

    #[tokio::test]
    async fn commands_against_a_real_manager() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start_manager(dir.path()).await;
        let table = context(&handle, OutputFormat::Table, admin(PASSWORD));
        let json = context(&handle, OutputFormat::Json, admin(PASSWORD));

        let out = drover(&table, &["whoami"]).await.unwrap();
        assert!(out.starts_with("User:            admin\nRole:            admin\n"), "{out}");
        assert!(out.contains("Signed in with:  user admin, password from --password"), "{out}");

        // Enrollment tokens.
        let out = drover(&table, &["tokens", "create", "--ttl", "2h", "--label", "rack=r1"]).await.unwrap();
        assert!(out.contains("valid for 1 host until"), "{out}");
        assert!(out.contains("drover-agent --manager https://127.0.0.1:7182 --token drv1."), "{out}");
        let created: Value =
            serde_json::from_str(&drover(&json, &["tokens", "create", "--max-uses", "3"]).await.unwrap()).unwrap();
        let token = EnrollmentToken::from_str(created["token"].as_str().unwrap()).unwrap();
        assert_eq!(created["max_uses"], 3);
        let out = drover(&table, &["tokens", "list"]).await.unwrap();
        assert!(out.starts_with("ID "), "{out}");
        assert!(out.contains(&format!("{}  active  0/3", token.id)), "{out}");

        // Hosts: two share the prefix 0f3c.
        let web = "0f3c1111-0000-4000-8000-000000000001";
        let db = "0f3c2222-0000-4000-8000-000000000002";
        enroll(&handle, &token, web, "web-1").await;
        enroll(&handle, &token, db, "db-1").await;
        let metrics = HostMetrics {
            at: drover_manager::model::rfc3339(now_millis()),
            cpu_percent: 50.0,
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 4 << 30,
            load1: 1.5,
            load5: 1.0,
            load15: 0.5,
            disks: vec![],
            network_rx_bytes: 0,
            network_tx_bytes: 0,
            uptime_seconds: 3600,
        };
        let heartbeat = HeartbeatRow {
            host_id: web.into(),
            status: HostStatus::Healthy,
            last_heartbeat_at: now_millis(),
            metrics: Some(metrics),
        };
        let event = NewEvent {
            at: now_millis(),
            severity: "info",
            kind: "host_enrolled",
            object_type: "host",
            object_id: web.into(),
            message: "host web-1 enrolled".into(),
        };
        handle.state.store.flush(&[heartbeat], &[], &[event]).await.unwrap();

        let out = drover(&table, &["hosts", "list"]).await.unwrap();
        assert!(out.starts_with("ID        HOSTNAME  STATUS "), "{out}");
        assert!(out.contains("0f3c1111  web-1 "), "{out}");
        assert!(out.contains("50.0  1.0 GiB/4.0 GiB  1.50  0s ago"), "{out}");
        assert!(out.ends_with("2 of 2 hosts\n"), "{out}");
        let out = drover(&table, &["hosts", "list", "--hostname", "web", "--limit", "1"]).await.unwrap();
        assert!(out.ends_with("1 of 1 hosts\n"), "{out}");
        let out = drover(&table, &["hosts", "list", "--limit", "1"]).await.unwrap();
        assert!(out.ends_with("1 of 2 hosts; next page: --offset 1\n"), "{out}");
        let listed: Value = serde_json::from_str(&drover(&json, &["hosts", "list"]).await.unwrap()).unwrap();
        assert_eq!(listed["total"], 2);

        let out = drover(&table, &["hosts", "show", "0f3c1"]).await.unwrap();
        assert!(out.contains("Hostname:            web-1\n"), "{out}");
        assert!(out.contains("\nMetrics (reported "), "{out}");
        let shown: Value = serde_json::from_str(&drover(&json, &["hosts", "show", db]).await.unwrap()).unwrap();
        assert_eq!(shown["hostname"], "db-1");
        let err = drover(&table, &["hosts", "show", "0f3c"]).await.unwrap_err().to_string();
        assert!(err.starts_with("ID prefix 0f3c matches 2 hosts"), "{err}");
        let err = drover(&table, &["hosts", "show", "0f3"]).await.unwrap_err().to_string();
        assert_eq!(err, "host 0f3 not found; an ID prefix needs at least 4 characters");
        let err = drover(&table, &["hosts", "show", "ffff"]).await.unwrap_err().to_string();
        assert!(err.starts_with("no host has the ID or ID prefix ffff"), "{err}");

        // Labels.
        let out = drover(&table, &["hosts", "label", "0f3c1", "tier=web", "rack=r2"]).await.unwrap();
        assert_eq!(out, "host web-1 (0f3c1111) labels: rack=r2,tier=web\n");
        let out = drover(&table, &["hosts", "label", web, "--remove", "rack"]).await.unwrap();
        assert_eq!(out, "host web-1 (0f3c1111) labels: tier=web\n");
        let out = drover(&table, &["hosts", "list", "--label", "tier=web"]).await.unwrap();
        assert!(out.ends_with("1 of 1 hosts\n"), "{out}");

        // Decommissioning asks first.
        let err = drover(&table, &["hosts", "decommission", "0f3c2"]).await.unwrap_err().to_string();
        assert!(err.starts_with("refusing to decommission host db-1"), "{err}");
        assert!(err.ends_with("pass --yes"), "{err}");
        let mut say_no = ScriptedPrompt { interactive: true, answer: false, asked: Vec::new() };
        let err = drover_prompted(&table, &["hosts", "decommission", "0f3c2"], &mut say_no).await.unwrap_err();
        assert_eq!(err.to_string(), format!("not confirmed; host db-1 ({db}) was not decommissioned"));
        assert!(say_no.asked[0].starts_with(&format!("Decommission host db-1 ({db})?")));
        let mut say_yes = ScriptedPrompt { interactive: true, answer: true, asked: Vec::new() };
        let out = drover_prompted(&table, &["hosts", "decommission", "0f3c2"], &mut say_yes).await.unwrap();
        assert_eq!(out, format!("decommissioned host db-1 ({db})\n"));
        let out = drover(&table, &["hosts", "decommission", db, "--yes"]).await.unwrap();
        assert_eq!(out, format!("host db-1 ({db}) is already decommissioned\n"));
        let err = drover(&table, &["hosts", "label", db, "a=b"]).await.unwrap_err().to_string();
        assert!(err.ends_with("its labels can no longer change (HTTP 409)"), "{err}");
        let out = drover(&table, &["hosts", "list", "--status", "decommissioned"]).await.unwrap();
        assert!(out.contains("db-1") && out.ends_with("1 of 1 hosts\n"), "{out}");

        // Events and audit.
        let out = drover(&table, &["events", "--host", "0f3c1"]).await.unwrap();
        assert!(out.contains("info      host_enrolled  host 0f3c1111  host web-1 enrolled"), "{out}");
        let out = drover(&table, &["audit", "--object-id", db]).await.unwrap();
        assert!(out.contains("host.decommission"), "{out}");
        let out = drover(&table, &["audit", "--user", "nobody"]).await.unwrap();
        assert_eq!(out, "no audit entries\n");

        // API tokens.
        let out = drover(&table, &["api-tokens", "create", "ci", "--ttl", "1d"]).await.unwrap();
        assert!(out.starts_with("Created API token \"ci\""), "{out}");
        let created: Value =
            serde_json::from_str(&drover(&json, &["api-tokens", "create", "ci-2"]).await.unwrap()).unwrap();
        let bearer =
            context(&handle, OutputFormat::Table, Credentials::ApiToken(created["token"].as_str().unwrap().into()));
        let out = drover(&bearer, &["whoami"]).await.unwrap();
        assert!(out.contains("Signed in with:  an API token"), "{out}");

        // Revoking.
        assert_eq!(
            drover(&table, &["tokens", "revoke", &token.id]).await.unwrap(),
            format!("revoked enrollment token {}\n", token.id)
        );
        assert_eq!(drover(&json, &["tokens", "revoke", &token.id]).await.unwrap(), "");
        let err = drover(&table, &["tokens", "revoke", "nope"]).await.unwrap_err().to_string();
        assert_eq!(err, "enrollment token nope not found (HTTP 404)");

        // Wrong credentials.
        let wrong = context(&handle, OutputFormat::Table, admin("wrong"));
        let err = drover(&wrong, &["whoami"]).await.unwrap_err();
        let failure = err.downcast_ref::<ApiFailure>().expect("an API failure");
        assert_eq!(failure.status, 401);
        assert!(err.to_string().starts_with("invalid credentials"), "{err}");
        assert!(failure.hint.as_deref().unwrap().contains("user admin, password from --password"));

        handle.shutdown().await;
    }

    /// A small valid parcel file, built with the parcel library.
    fn build_parcel(dir: &std::path::Path, name: &str, version: &str) -> std::path::PathBuf {
        use drover_parcels::{ParcelMeta, Scripts, build_archive};
        let staging = dir.join(format!("staging-{name}-{version}"));
        std::fs::create_dir_all(staging.join("meta")).unwrap();
        std::fs::create_dir_all(staging.join("bin")).unwrap();
        std::fs::write(staging.join(format!("meta/{name}_env.sh")), "export X_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME\n")
            .unwrap();
        std::fs::write(staging.join("bin/tool"), vec![7u8; 300_000]).unwrap();
        let meta = ParcelMeta {
            schema_version: 1,
            name: name.into(),
            version: version.into(),
            distro: "bookworm".into(),
            depends: vec![],
            conflicts: vec![],
            provides: vec![],
            components: vec![],
            scripts: Scripts { defines: format!("{name}_env.sh") },
        };
        build_archive(&staging, &meta, &dir.join("repo")).unwrap().path
    }

    #[tokio::test]
    async fn parcel_upload_list_and_cluster_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start_manager(&dir.path().join("manager")).await;
        let table = context(&handle, OutputFormat::Table, admin(PASSWORD));
        let json = context(&handle, OutputFormat::Json, admin(PASSWORD));

        assert_eq!(
            drover(&table, &["parcel", "list"]).await.unwrap(),
            "no parcels; upload one with `drover parcel upload FILE`\n"
        );
        let file = build_parcel(dir.path(), "redis", "7.0.15-1");
        let file = file.to_str().unwrap();
        let out = drover(&table, &["parcel", "upload", file]).await.unwrap();
        assert!(out.starts_with("uploaded redis-7.0.15-1-bookworm.parcel ("), "{out}");
        let err = drover(&table, &["parcel", "upload", &format!("{file}.missing")]).await.unwrap_err();
        assert!(format!("{err:#}").starts_with("read "), "{err:#}");
        // The manager checks the name against the parcel inside.
        let renamed = dir.path().join("repo/redis-9-bookworm.parcel");
        std::fs::copy(file, &renamed).unwrap();
        let err = drover(&table, &["parcel", "upload", renamed.to_str().unwrap()]).await.unwrap_err();
        assert!(format!("{err:#}").contains("(HTTP 4"), "{err:#}");

        let out = drover(&table, &["parcel", "list"]).await.unwrap();
        assert!(out.starts_with("PARCEL  VERSION   SOURCE"), "{out}");
        assert!(out.contains("redis   7.0.15-1  local "), "{out}");
        assert!(out.ends_with("  -        -       -\n1 parcels\n"), "{out}");

        // Cluster membership.
        ctx_post(&json, &["clusters"], json!({"name": "prod"})).await;
        let created: Value =
            serde_json::from_str(&drover(&json, &["tokens", "create", "--max-uses", "2"]).await.unwrap()).unwrap();
        let token = EnrollmentToken::from_str(created["token"].as_str().unwrap()).unwrap();
        let web = "0f3c1111-0000-4000-8000-000000000001";
        let db = "0f3c2222-0000-4000-8000-000000000002";
        enroll(&handle, &token, web, "web-1").await;
        enroll(&handle, &token, db, "db-1").await;
        assert_eq!(
            drover(&table, &["cluster", "hosts", "list", "prod"]).await.unwrap(),
            "cluster prod has no hosts; add some with `drover cluster hosts add prod HOST...`\n"
        );
        let out = drover(&table, &["cluster", "hosts", "add", "prod", "0f3c1", db]).await.unwrap();
        assert_eq!(out, "added web-1 (0f3c1111), db-1 (0f3c2222) to cluster prod; it has 2 hosts\n");
        let out = drover(&table, &["cluster", "hosts", "list", "prod"]).await.unwrap();
        assert!(out.starts_with("ID        HOSTNAME  STATUS\n"), "{out}");
        assert!(out.contains("0f3c1111  web-1 ") && out.contains("0f3c2222  db-1 "), "{out}");
        assert!(out.ends_with("2 hosts in cluster prod\n"), "{out}");
        let err = drover(&table, &["cluster", "hosts", "add", "prod", "ffff"]).await.unwrap_err().to_string();
        assert!(err.starts_with("no host has the ID or ID prefix ffff"), "{err}");
        let err = drover(&table, &["cluster", "hosts", "list", "nope"]).await.unwrap_err().to_string();
        assert_eq!(err, "cluster nope not found (HTTP 404)");

        // Lifecycle commands: refusals come back as errors, a started command as its ID.
        let err = drover(&table, &["parcel", "activate", "--cluster", "prod", "redis", "7.0.15-1"])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not distributed to cluster prod") && err.ends_with("(HTTP 409)"), "{err}");
        let out = drover(&table, &["parcel", "distribute", "--cluster", "prod", "redis", "7.0.15-1", "--no-wait"])
            .await
            .unwrap();
        assert!(out.starts_with("started parcel-distribute command ") && out.contains(" with 2 steps;"), "{out}");
        let listed: Value = serde_json::from_str(&drover(&json, &["parcel", "list"]).await.unwrap()).unwrap();
        assert_eq!(listed["items"][0]["clusters"][0]["cluster"], "prod");
        let err = drover(&table, &["service", "upgrade", "--cluster", "prod", "redis", "2"]).await.unwrap_err();
        assert_eq!(err.to_string(), "service redis not found in cluster prod (HTTP 404)");

        handle.shutdown().await;
    }

    async fn ctx_post(ctx: &Context, segments: &[&str], body: Value) -> Value {
        ctx.client.send_json(Method::POST, segments, Some(&body)).await.unwrap()
    }

    #[tokio::test]
    async fn unreachable_manager() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let ctx = Context { client: ManagerClient::new(url, admin("x")).unwrap(), output: OutputFormat::Table };
        let err = drover(&ctx, &["whoami"]).await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot reach the manager at http://127.0.0.1:{port}: ")), "{err}");
        assert!(err.ends_with("; is drover-manager running?"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }
}
