//! What the CLI tests share: a real manager in this process (SQLite in a temporary
//! directory), an admin context and `drover ARGS` run as the binary would.
#![allow(dead_code)]

use std::path::Path;

use clap::Parser;
use drover_cli::cli::{Cli, OutputFormat};
use drover_cli::commands::{Context, Prompt, run};
use drover_cli::manager_client::{Credentials, ManagerClient, PasswordSource};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use reqwest::Url;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct NoPrompt;

impl Prompt for NoPrompt {
    fn is_interactive(&self) -> bool {
        false
    }
    fn confirm(&mut self, _question: &str) -> std::io::Result<bool> {
        Ok(false)
    }
}

pub async fn start_manager(dir: &Path) -> ManagerHandle {
    drover_proto::tls::provider();
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(ADMIN_PASSWORD.into());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await.unwrap()
}

pub fn admin(handle: &ManagerHandle, output: OutputFormat) -> Context {
    let credentials =
        Credentials::Password { user: "admin".into(), password: ADMIN_PASSWORD.into(), source: PasswordSource::Flag };
    let base = Url::parse(&format!("http://{}", handle.http_addr)).unwrap();
    Context { client: ManagerClient::new(base, credentials).unwrap(), output }
}

pub async fn drover(ctx: &Context, args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()))?;
    run(ctx, cli.command, &mut NoPrompt).await
}
