//! `drover receivers`, `drover routes` and `drover notifications deliveries` run whole against
//! a real manager in this process (SQLite in a temporary directory).

use std::path::Path;

use clap::Parser;
use drover_cli::cli::{Cli, OutputFormat};
use drover_cli::commands::{Context, Prompt, run};
use drover_cli::manager_client::{Credentials, ManagerClient, PasswordSource};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use reqwest::Url;

const ADMIN_PASSWORD: &str = "correct horse battery staple";

struct NoPrompt;

impl Prompt for NoPrompt {
    fn is_interactive(&self) -> bool {
        false
    }
    fn confirm(&mut self, _question: &str) -> std::io::Result<bool> {
        Ok(false)
    }
}

async fn start_manager(dir: &Path) -> ManagerHandle {
    drover_proto::tls::provider();
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(ADMIN_PASSWORD.into());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await.unwrap()
}

fn admin(handle: &ManagerHandle, output: OutputFormat) -> Context {
    let credentials =
        Credentials::Password { user: "admin".into(), password: ADMIN_PASSWORD.into(), source: PasswordSource::Flag };
    let base = Url::parse(&format!("http://{}", handle.http_addr)).unwrap();
    Context { client: ManagerClient::new(base, credentials).unwrap(), output }
}

async fn drover(ctx: &Context, args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()))?;
    run(ctx, cli.command, &mut NoPrompt).await
}

#[tokio::test]
async fn receivers_and_routes_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let ctx = admin(&handle, OutputFormat::Table);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    assert_eq!(drover(&ctx, &["receivers", "list"]).await.unwrap(), "no receivers\n");
    std::fs::write(
        dir.path().join("ops.yaml"),
        "webhook_configs:\n  - url: http://127.0.0.1:9/hook\n    secret: cli-s3cret\n",
    )
    .unwrap();
    let set = drover(&ctx, &["receivers", "set", "ops", "-f", &path("ops.yaml")]).await.unwrap();
    assert_eq!(set, "set receiver ops: 1 webhook\n");
    let show = drover(&ctx, &["receivers", "show", "ops"]).await.unwrap();
    assert!(show.contains("<redacted>") && !show.contains("cli-s3cret"), "{show}");
    // What `show` prints goes back unchanged (the secret is kept).
    std::fs::write(dir.path().join("shown.yaml"), &show).unwrap();
    drover(&ctx, &["receivers", "set", "-f", &path("shown.yaml")]).await.unwrap();
    let list = drover(&ctx, &["receivers", "list"]).await.unwrap();
    assert!(list.starts_with("NAME") && list.contains("ops") && list.contains("1 webhook"), "{list}");

    std::fs::write(dir.path().join("routes.yaml"), "receiver: nobody\n").unwrap();
    let bad = drover(&ctx, &["routes", "set", "-f", &path("routes.yaml")]).await.unwrap_err().to_string();
    assert!(bad.contains("route.receiver") && bad.contains("nobody"), "{bad}");
    std::fs::write(dir.path().join("routes.yaml"), "receiver: ops\ngroup_wait: 10s\n").unwrap();
    let set = drover(&ctx, &["routes", "set", "-f", &path("routes.yaml")]).await.unwrap();
    assert!(set.contains("receiver: ops"), "{set}");
    let shown = drover(&ctx, &["routes", "show"]).await.unwrap();
    assert!(shown.contains("group_wait: 10s"), "{shown}");
    let used = drover(&ctx, &["receivers", "delete", "ops"]).await.unwrap_err().to_string();
    assert!(used.contains("used by route"), "{used}");
    let none = drover(&ctx, &["notifications", "deliveries"]).await.unwrap();
    assert_eq!(none, "no delivery attempts\n");
}
