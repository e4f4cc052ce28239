//! Hosts that come from outside the fleet: `drover hosts bootstrap` (the
//! agent installed over SSH) and `drover provider docker up|down|list`
//! (container hosts the manager creates on its Docker engine).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::cli::{DockerCommand, DockerDownArgs, DockerUpArgs, HostsBootstrapArgs, OutputFormat};
use crate::commands::{Context, pretty};
use crate::manager_client::{NO_BODY, NO_QUERY};
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
fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
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
pub fn bootstrap_body(args: &HostsBootstrapArgs) -> anyhow::Result<Value> {
    let mut auth = Map::new();
    match (&args.identity, &args.ssh_password_file) {
        (Some(key), None) => {
            let pem =
                std::fs::read_to_string(key).with_context(|| format!("read the private key {}", key.display()))?;
            auth.insert("private_key".into(), Value::String(pem));
            if let Some(p) = &args.passphrase_file {
                auth.insert("passphrase".into(), Value::String(read_secret(p, "passphrase")?));
            }
        }
        (None, Some(p)) => {
            auth.insert("password".into(), Value::String(read_secret(p, "SSH password")?));
        }
        _ => bail!("give --identity FILE or --ssh-password-file FILE"),
    }
    let mut body = json!({
        "addresses": args.addresses,
        "port": args.ssh_port,
        "user": args.ssh_user,
        "auth": auth,
        "host_key_fingerprints": args.fingerprint.iter().map(|(a, f)| (a.clone(), Value::String(f.clone()))).collect::<Map<String, Value>>(),
        "parallelism": args.parallelism,
        "timeout_seconds": args.timeout.as_secs(),
    });
    body["labels"] = Value::Object(args.label.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
    if args.sudo {
        body["sudo"] = json!(true);
    }
    if let Some(p) = &args.host_key_policy {
        body["host_key_policy"] = json!(p);
    }
    if let Some(u) = &args.manager_url {
        body["manager_url"] = json!(u);
    }
    Ok(body)
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
            present(ctx, &listed)
        }
    }
}

fn items(v: &Value) -> &[Value] {
    v["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("-").to_owned()
}

fn table(list: &[Value]) -> String {
    let mut t = Table::new(&["CONTAINER", "NAME", "STATUS", "HOST", "HOSTNAME", "HOST STATUS", "IMAGE", "NETWORK"]);
    for c in list {
        t.push(vec![
            short_id(&text(c, "id")),
            text(c, "name"),
            text(c, "container_status"),
            c["host_id"].as_str().map(short_id).unwrap_or_else(|| "-".into()),
            text(c, "hostname"),
            text(c, "host_status"),
            text(c, "image"),
            text(c, "network"),
        ]);
    }
    t.render()
}

fn present(ctx: &Context, v: &Value) -> anyhow::Result<String> {
    match ctx.output {
        OutputFormat::Json => pretty(v),
        OutputFormat::Table => Ok(table(items(v))),
    }
}

async fn up(ctx: &Context, args: &DockerUpArgs) -> anyhow::Result<String> {
    let mut body = json!({
        "count": args.count,
        "labels": args.label.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<String, Value>>(),
    });
    for (key, value) in [
        ("image", &args.image),
        ("network", &args.network),
        ("memory", &args.memory),
        ("name_prefix", &args.name_prefix),
        ("manager_url", &args.manager_url),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    if let Some(c) = args.cpus {
        body["cpus"] = json!(c);
    }
    let created = ctx.client.send_json(Method::POST, &["providers", "docker", "hosts"], Some(&body)).await?;
    let ids: Vec<String> = items(&created).iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
    eprintln!("started {} container(s); they enroll at {}", ids.len(), text(&created, "manager_url"));
    if args.no_wait {
        return present(ctx, &created);
    }
    let t = Instant::now();
    let mut last = String::new();
    loop {
        let listed = ctx.client.get(&["providers", "docker", "hosts"], NO_QUERY).await?;
        let ours: Vec<Value> = items(&listed)
            .iter()
            .filter(|c| c["id"].as_str().is_some_and(|id| ids.iter().any(|i| i == id)))
            .cloned()
            .collect();
        let healthy = ours.iter().filter(|c| c["host_status"] == "healthy").count();
        let line = format!("{healthy} of {} container host(s) healthy", ids.len());
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if healthy == ids.len() {
            let done = json!({ "items": ours });
            return match ctx.output {
                OutputFormat::Json => pretty(&done),
                OutputFormat::Table => {
                    Ok(format!("{}{} host(s) up in {:.1}s\n", table(&ours), ids.len(), t.elapsed().as_secs_f64()))
                }
            };
        }
        if let Some(gone) =
            ours.iter().find(|c| c["container_status"] == "exited" || c["container_status"] == "missing")
        {
            bail!(
                "container {} is {}; see `docker logs {}`",
                text(gone, "name"),
                text(gone, "container_status"),
                text(gone, "name")
            );
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
    let removed: Vec<Value> = if args.all {
        let v = ctx
            .client
            .call(Method::DELETE, &["providers", "docker", "hosts"], &[("all", "true")], NO_BODY)
            .await?
            .unwrap_or_default();
        items(&v).to_vec()
    } else {
        let mut out = Vec::new();
        for id in &args.containers {
            out.push(ctx.client.send_json(Method::DELETE, &["providers", "docker", "hosts", id], NO_BODY).await?);
        }
        out
    };
    match ctx.output {
        OutputFormat::Json => pretty(&json!({ "items": removed })),
        OutputFormat::Table => Ok(format!("{}removed {} container host(s)\n", table(&removed), removed.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
        let body = bootstrap_body(&a).unwrap();
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
