//! Hosts that come from outside the fleet: `drover hosts bootstrap` (the
//! agent installed over SSH) and `drover provider docker up|down|list`
//! (container hosts the manager creates on its Docker engine).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use drover_api::Items;
use drover_api::bootstrap::{AuthRequest, BootstrapRequest, HostKeyPolicy, Secret};
use drover_api::model::HostStatus;
use drover_api::providers::{CreateDockerHosts, CreatedHosts, DeleteAllQuery, Memory, ProviderHostView};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{DockerCommand, DockerDownArgs, DockerUpArgs, HostsBootstrapArgs, OutputFormat};
use crate::commands::{Context, pretty};
use crate::manager_client::{NO_BODY, NO_QUERY, decode};
use crate::render::{Table, short_id};

/// `ADDRESS=SHA256:...`.
pub fn parse_pin(s: &str) -> Result<(String, String), String> {
    let (addr, fp) = s.split_once('=').ok_or_else(|| format!("expected ADDRESS=SHA256:..., got {s:?}"))?;
    if addr.trim().is_empty() || fp.trim().is_empty() {
        return Err(format!("expected ADDRESS=SHA256:..., got {s:?}"));
    }
    Ok((addr.trim().to_owned(), fp.trim().to_owned()))
}

/// Reads a secret from a file, or stdin for `-`; one trailing newline is dropped.
pub(crate) fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).with_context(|| format!("read the {what} from stdin"))?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("read the {what} from {}", path.display()))?;
    }
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned();
    if text.is_empty() {
        bail!("the {what} in {} is empty", path.display());
    }
    Ok(text)
}

/// The request body of `POST /api/v1/hosts/bootstrap`.
pub fn bootstrap_body(args: &HostsBootstrapArgs) -> anyhow::Result<BootstrapRequest> {
    let auth = match (&args.identity, &args.ssh_password_file) {
        (Some(key), None) => {
            let pem =
                std::fs::read_to_string(key).with_context(|| format!("read the private key {}", key.display()))?;
            let passphrase = match &args.passphrase_file {
                Some(p) => Some(Secret::new(read_secret(p, "passphrase")?)),
                None => None,
            };
            AuthRequest { private_key: Some(Secret::new(pem)), passphrase, password: None }
        }
        (None, Some(p)) => AuthRequest {
            private_key: None,
            passphrase: None,
            password: Some(Secret::new(read_secret(p, "SSH password")?)),
        },
        _ => bail!("give --identity FILE or --ssh-password-file FILE"),
    };
    let host_key_policy = match args.host_key_policy.as_deref() {
        None => None,
        Some("known-hosts") => Some(HostKeyPolicy::KnownHosts),
        Some("accept-new") => Some(HostKeyPolicy::AcceptNew),
        Some(other) => bail!("unknown host key policy {other:?}: use known-hosts or accept-new"),
    };
    Ok(BootstrapRequest {
        addresses: args.addresses.clone(),
        port: args.ssh_port,
        user: args.ssh_user.clone(),
        auth,
        sudo: args.sudo.then_some(true),
        labels: args.label.iter().cloned().collect(),
        host_key_policy,
        host_key_fingerprints: args.fingerprint.iter().cloned().collect(),
        manager_url: args.manager_url.clone(),
        parallelism: Some(args.parallelism),
        timeout_seconds: Some(args.timeout.as_secs()),
    })
}

pub async fn bootstrap(ctx: &Context, args: &HostsBootstrapArgs) -> anyhow::Result<String> {
    let body = bootstrap_body(args)?;
    let started = ctx.client.send_json(Method::POST, &["hosts", "bootstrap"], Some(&body)).await?;
    crate::lifecycle::follow(ctx, started, &args.wait).await
}

pub async fn docker(ctx: &Context, command: DockerCommand) -> anyhow::Result<String> {
    match command {
        DockerCommand::Up(args) => up(ctx, &args).await,
        DockerCommand::Down(args) => down(ctx, &args).await,
        DockerCommand::List => {
            let listed = ctx.client.get(&["providers", "docker", "hosts"], NO_QUERY).await?;
            present(ctx, listed)
        }
    }
}

fn table(list: &[ProviderHostView]) -> String {
    let mut t = Table::new(&["CONTAINER", "NAME", "STATUS", "HOST", "HOSTNAME", "HOST STATUS", "IMAGE", "NETWORK"]);
    for c in list {
        t.push(vec![
            short_id(&c.id),
            c.name.clone(),
            c.container_status.clone(),
            c.host_id.as_deref().map_or_else(|| "-".into(), short_id),
            c.hostname.clone().unwrap_or_else(|| "-".into()),
            c.host_status.map_or("-", HostStatus::as_str).to_owned(),
            c.image.clone(),
            c.network.clone(),
        ]);
    }
    t.render()
}

/// A list of container hosts: the API's JSON, or a table.
fn present(ctx: &Context, v: Value) -> anyhow::Result<String> {
    match ctx.output {
        OutputFormat::Json => pretty(&v),
        OutputFormat::Table => Ok(table(&decode::<Items<ProviderHostView>>(v)?.items)),
    }
}

async fn up(ctx: &Context, args: &DockerUpArgs) -> anyhow::Result<String> {
    let body = CreateDockerHosts {
        count: args.count,
        image: args.image.clone(),
        network: args.network.clone(),
        labels: args.label.iter().cloned().collect(),
        cpus: args.cpus,
        memory: args.memory.clone().map(Memory::Text),
        name_prefix: args.name_prefix.clone(),
        manager_url: args.manager_url.clone(),
    };
    let raw = ctx.client.send_json(Method::POST, &["providers", "docker", "hosts"], Some(&body)).await?;
    let created: CreatedHosts = decode(raw.clone())?;
    let ids: Vec<String> = created.items.iter().map(|c| c.id.clone()).collect();
    eprintln!("started {} container(s); they enroll at {}", ids.len(), created.manager_url);
    if args.no_wait {
        return match ctx.output {
            OutputFormat::Json => pretty(&raw),
            OutputFormat::Table => Ok(table(&created.items)),
        };
    }
    let t = Instant::now();
    let mut last = String::new();
    loop {
        let listed: Items<ProviderHostView> =
            decode(ctx.client.get(&["providers", "docker", "hosts"], NO_QUERY).await?)?;
        let ours: Vec<ProviderHostView> = listed.items.into_iter().filter(|c| ids.contains(&c.id)).collect();
        let healthy = ours.iter().filter(|c| c.host_status == Some(HostStatus::Healthy)).count();
        let line = format!("{healthy} of {} container host(s) healthy", ids.len());
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if healthy == ids.len() {
            return match ctx.output {
                OutputFormat::Json => pretty(&Items::new(ours)),
                OutputFormat::Table => {
                    Ok(format!("{}{} host(s) up in {:.1}s\n", table(&ours), ids.len(), t.elapsed().as_secs_f64()))
                }
            };
        }
        if let Some(gone) = ours.iter().find(|c| c.container_status == "exited" || c.container_status == "missing") {
            bail!("container {} is {}; see `docker logs {}`", gone.name, gone.container_status, gone.name);
        }
        if t.elapsed() > args.timeout {
            bail!(
                "only {healthy} of {} container host(s) were healthy after {}; `drover provider docker list` shows \
                 them, `docker logs NAME` tells why",
                ids.len(),
                humantime::format_duration(args.timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn down(ctx: &Context, args: &DockerDownArgs) -> anyhow::Result<String> {
    let removed: Vec<ProviderHostView> = if args.all {
        let query = DeleteAllQuery { all: Some(true) };
        let v = ctx.client.call(Method::DELETE, &["providers", "docker", "hosts"], &query, NO_BODY).await?;
        match v {
            Some(v) => decode::<Items<ProviderHostView>>(v)?.items,
            None => Vec::new(),
        }
    } else {
        let mut out = Vec::new();
        for id in &args.containers {
            let v = ctx.client.send_json(Method::DELETE, &["providers", "docker", "hosts", id], NO_BODY).await?;
            out.push(decode(v)?);
        }
        out
    };
    match ctx.output {
        OutputFormat::Json => pretty(&Items::new(removed)),
        OutputFormat::Table => Ok(format!("{}removed {} container host(s)\n", table(&removed), removed.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    fn args(extra: &[&str]) -> HostsBootstrapArgs {
        let mut argv = vec!["drover", "hosts", "bootstrap"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parse");
        let crate::cli::Command::Hosts(crate::cli::HostsCommand::Bootstrap(a)) = cli.command else { panic!() };
        a
    }

    #[test]
    fn bootstrap_body_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let a = args(&[
            "10.0.0.5",
            "db1:2222",
            "--ssh-user",
            "admin",
            "--ssh-password-file",
            pw.to_str().unwrap(),
            "--sudo",
            "--label",
            "rack=r1",
            "--fingerprint",
            "10.0.0.5=SHA256:abc",
            "--host-key-policy",
            "accept-new",
            "--timeout",
            "2m",
        ]);
        let body = serde_json::to_value(bootstrap_body(&a).unwrap()).unwrap();
        assert_eq!(body["addresses"], json!(["10.0.0.5", "db1:2222"]));
        assert_eq!(body["user"], "admin");
        assert_eq!(body["auth"], json!({"password": "s3cret"}));
        assert_eq!(body["sudo"], true);
        assert_eq!(body["labels"], json!({"rack": "r1"}));
        assert_eq!(body["host_key_fingerprints"], json!({"10.0.0.5": "SHA256:abc"}));
        assert_eq!(body["host_key_policy"], "accept-new");
        assert_eq!(body["timeout_seconds"], 120);
        assert_eq!(body["parallelism"], 20);
    }

    #[test]
    fn bootstrap_needs_one_credential() {
        let argv = ["drover", "hosts", "bootstrap", "h1"];
        let e = crate::cli::Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--identity"), "{e}");
        let e = crate::cli::Cli::try_parse_from([
            "drover",
            "hosts",
            "bootstrap",
            "h1",
            "-i",
            "k",
            "--ssh-password-file",
            "p",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn pins_parse() {
        assert_eq!(parse_pin("h:22=SHA256:x").unwrap(), ("h:22".into(), "SHA256:x".into()));
        assert!(parse_pin("nopin").is_err());
    }
}
