//! `drover`: the command-line client of the manager's REST API. It parses the
//! command line, picks credentials, runs one command and prints its result;
//! errors go to stderr as `error: ...` with exit code 1 (2 for usage errors).
//! The commands are in the `drover_cli` library.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use drover_cli::cli::{Cli, Command, GlobalArgs};
use drover_cli::commands::{self, Context, TerminalPrompt};
use drover_cli::manager_client::{ApiFailure, DEFAULT_PASSWORD_FILE};
use drover_cli::settings::{self, Config};
use drover_cli::trust::TlsFailure;
use drover_cli::{login, parcel};

fn main() -> ExitCode {
    let Cli { global, command } = Cli::parse();
    let command = match command {
        // Local files only: no credentials, no runtime.
        Command::Parcel(command) if command.is_local() => return finish(parcel::run(command, global.output)),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    finish(runtime.block_on(run(global, command)))
}

/// Prints a command's output, or its error with the manager's hint, and picks the exit code.
fn finish(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(output) => {
            // A closed pipe (`drover hosts list | head`) is not an error.
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: write to stdout: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            let hint = match e.downcast_ref::<ApiFailure>() {
                Some(f) => f.hint.as_deref(),
                None => e.downcast_ref::<TlsFailure>().and_then(|f| f.hint.as_deref()),
            };
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(g: GlobalArgs, command: Command) -> anyhow::Result<String> {
    let config = Config::locate(g.config.as_deref())?;
    let default_password_file = Path::new(DEFAULT_PASSWORD_FILE);
    if let Command::Login(args) = &command {
        return login::login(&g, args, &config, default_password_file).await;
    }
    let resolved = settings::resolve(&g, &config, None)?;
    let ctx = Context { client: resolved.client(default_password_file)?, output: g.output };
    commands::run(&ctx, command, &mut TerminalPrompt).await
}
