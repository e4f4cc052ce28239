//! `drover users`, `drover passwd` and API tokens with roles, run whole
//! against a real manager in this process (SQLite in a temporary
//! directory): what people see, including the refusals (the last
//! administrator, a missing permission), and the `drover` binary reading a
//! new password from stdin.

use std::path::Path;
use std::process::{Output, Stdio};

use clap::Parser;
use drover_cli::cli::{Cli, OutputFormat};
use drover_cli::commands::{Context, Prompt, run};
use drover_cli::manager_client::{ApiFailure, Credentials, ManagerClient, PasswordSource};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use reqwest::Url;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const ADMIN_PASSWORD: &str = "correct horse battery staple";
const JANE_PASSWORD: &str = "purple elephant sunrise";

/// Answers the confirmation prompt with a fixed reply; reads no secrets.
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

async fn start_manager(dir: &Path) -> ManagerHandle {
    drover_proto::tls::provider();
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(ADMIN_PASSWORD.into());
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await.unwrap()
}

fn base(handle: &ManagerHandle) -> Url {
    Url::parse(&format!("http://{}", handle.http_addr)).unwrap()
}

fn as_user(handle: &ManagerHandle, output: OutputFormat, user: &str, password: &str) -> Context {
    let credentials =
        Credentials::Password { user: user.into(), password: password.into(), source: PasswordSource::Flag };
    Context { client: ManagerClient::new(base(handle), credentials).unwrap(), output }
}

fn with_token(handle: &ManagerHandle, token: &str) -> Context {
    let credentials = Credentials::ApiToken(token.into());
    Context { client: ManagerClient::new(base(handle), credentials).unwrap(), output: OutputFormat::Table }
}

async fn drover(ctx: &Context, args: &[&str]) -> anyhow::Result<String> {
    drover_prompted(ctx, args, &mut no_prompt()).await
}

async fn drover_prompted(ctx: &Context, args: &[&str], prompt: &mut dyn Prompt) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()))?;
    run(ctx, cli.command, prompt).await
}

/// The error of a command the manager refused, with its status.
fn failure(result: anyhow::Result<String>) -> (u16, String, Option<String>) {
    let err = result.expect_err("the command should fail");
    let f = err.downcast_ref::<ApiFailure>().unwrap_or_else(|| panic!("an API failure, got {err:#}"));
    (f.status, f.message.clone(), f.hint.clone())
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_admin_manages_users_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let admin = as_user(&handle, OutputFormat::Table, "admin", ADMIN_PASSWORD);
    let admin_json = as_user(&handle, OutputFormat::Json, "admin", ADMIN_PASSWORD);
    let jane_pw = secret_file(dir.path(), "jane.pw", JANE_PASSWORD);

    let out = drover(&admin, &["users", "create", "jane", "--role", "operator@prod", "--new-password-file", &jane_pw])
        .await
        .unwrap();
    assert_eq!(out, "created user jane with operator@prod\n");
    let (status, message, _) = failure(
        drover(&admin, &["users", "create", "jane", "--role", "viewer", "--new-password-file", &jane_pw]).await,
    );
    assert_eq!(status, 409, "{message}");
    let short = secret_file(dir.path(), "short.pw", "short");
    let (status, message, _) =
        failure(drover(&admin, &["users", "create", "bob", "--new-password-file", &short]).await);
    assert_eq!(message, "the password must have at least 12 characters");
    assert!(matches!(status, 400 | 422), "a refused request, not {status}");

    let out = drover(&admin, &["users", "list"]).await.unwrap();
    assert!(out.starts_with("USER   ROLES          STATE    SOURCE  LAST SIGN-IN  CREATED\n"), "{out}");
    let jane_row = out.lines().find(|l| l.starts_with("jane ")).unwrap_or_else(|| panic!("jane listed: {out}"));
    assert!(jane_row.starts_with("jane   operator@prod  enabled  local   never"), "{out}");
    let list: Value = serde_json::from_str(&drover(&admin_json, &["users", "list"]).await.unwrap()).unwrap();
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(names.contains(&"admin") && names.contains(&"jane"), "{list}");

    // Jane signs in and sees her roles.
    let jane = as_user(&handle, OutputFormat::Table, "jane", JANE_PASSWORD);
    let out = drover(&jane, &["whoami"]).await.unwrap();
    assert!(out.starts_with("User:            jane\nRoles:           operator@prod\n"), "{out}");

    // Grant adds to the roles she has, revoke takes away; both send the whole list.
    let out = drover(&admin, &["users", "grant", "jane", "viewer", "configurator@prod"]).await.unwrap();
    assert_eq!(out, "user jane now has viewer, configurator@prod, operator@prod\n");
    let out = drover(&admin, &["users", "grant", "jane", "viewer"]).await.unwrap();
    assert_eq!(out, "user jane already has viewer\n");
    let out = drover(&admin, &["users", "revoke", "jane", "operator@prod", "viewer"]).await.unwrap();
    assert_eq!(out, "user jane now has configurator@prod\n");
    let err = drover(&admin, &["users", "revoke", "jane", "auditor"]).await.unwrap_err().to_string();
    assert_eq!(err, "user jane does not have auditor; their roles: configurator@prod");
    let (status, message, _) = failure(drover(&admin, &["users", "grant", "jane", "admin@prod"]).await);
    assert_eq!(message, "role admin is global only; grant it without a cluster");
    assert!(matches!(status, 400 | 422), "a refused request, not {status}");
    let out = drover(&jane, &["whoami"]).await.unwrap();
    assert!(out.contains("Roles:           configurator@prod\n"), "{out}");

    let out = drover(&admin, &["users", "show", "jane"]).await.unwrap();
    assert!(
        out.starts_with("User:          jane\nRoles:         configurator@prod\nState:         enabled\n"),
        "{out}"
    );
    assert!(out.contains("Last sign-in:  20"), "jane has signed in: {out}");

    // The last administrator stays.
    let (status, message, _) = failure(drover(&admin, &["users", "disable", "admin"]).await);
    assert_eq!(status, 409);
    assert_eq!(message, "user admin is the last enabled administrator: grant admin to another enabled user first");
    let (status, message, _) = failure(drover(&admin, &["users", "revoke", "admin", "admin"]).await);
    assert_eq!((status, message.contains("last enabled administrator")), (409, true), "{message}");
    let (status, _, _) = failure(drover(&admin, &["users", "delete", "admin", "--yes"]).await);
    assert_eq!(status, 409);

    // Disabled, jane is refused; enabled, she is back.
    let out = drover(&admin, &["users", "disable", "jane"]).await.unwrap();
    assert_eq!(out, "disabled user jane; they cannot sign in and their console sessions ended\n");
    let (status, _, hint) = failure(drover(&jane, &["whoami"]).await);
    assert_eq!(status, 401);
    assert!(hint.unwrap().contains("the manager refused user jane"));
    assert!(drover(&admin, &["users", "list"]).await.unwrap().contains("disabled"));
    assert_eq!(drover(&admin, &["users", "enable", "jane"]).await.unwrap(), "enabled user jane\n");
    drover(&jane, &["whoami"]).await.unwrap();

    // An administrator's reset, then jane's own change.
    let reset = secret_file(dir.path(), "reset.pw", "an admin's reset password");
    let out = drover(&admin, &["users", "reset-password", "jane", "--new-password-file", &reset]).await.unwrap();
    assert_eq!(out, "password of user jane set; their console sessions were signed out\n");
    assert_eq!(failure(drover(&jane, &["whoami"]).await).0, 401, "the old password is gone");
    let jane = as_user(&handle, OutputFormat::Table, "jane", "an admin's reset password");
    let own = secret_file(dir.path(), "own.pw", "my own new passphrase");
    let out = drover(&jane, &["passwd", "--new-password-file", &own]).await.unwrap();
    assert!(out.starts_with("password changed; your console sessions were signed out"), "{out}");
    let jane = as_user(&handle, OutputFormat::Table, "jane", "my own new passphrase");
    drover(&jane, &["whoami"]).await.unwrap();
    // Without a terminal or a file the new password is read from stdin; the
    // scripted prompt has none.
    let err = drover(&jane, &["passwd"]).await.unwrap_err();
    assert!(format!("{err:#}").starts_with("read the new password from stdin"), "{err:#}");

    // Deleting asks first.
    let err = drover(&admin, &["users", "delete", "jane"]).await.unwrap_err().to_string();
    assert!(err.starts_with("refusing to delete user jane without confirmation"), "{err}");
    let mut says_no = ScriptedPrompt { interactive: true, answer: false, asked: Vec::new() };
    let err = drover_prompted(&admin, &["users", "delete", "jane"], &mut says_no).await.unwrap_err().to_string();
    assert_eq!(err, "not confirmed; user jane was not deleted");
    assert!(says_no.asked[0].starts_with("Delete user jane (roles: configurator@prod)?"), "{:?}", says_no.asked);
    let mut says_yes = ScriptedPrompt { interactive: true, answer: true, asked: Vec::new() };
    let out = drover_prompted(&admin, &["users", "delete", "jane"], &mut says_yes).await.unwrap();
    assert_eq!(out, "deleted user jane\n");
    let (status, message, _) = failure(drover(&admin, &["users", "show", "jane"]).await);
    assert_eq!((status, message.as_str()), (404, "user jane not found"));
    handle.shutdown().await;
}

#[tokio::test]
async fn tokens_carry_roles_and_a_missing_permission_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let admin = as_user(&handle, OutputFormat::Table, "admin", ADMIN_PASSWORD);
    let pw = secret_file(dir.path(), "vic.pw", "orange giraffe meadow");
    drover(
        &admin,
        &["users", "create", "vic", "--role", "viewer", "--role", "operator@prod", "--new-password-file", &pw],
    )
    .await
    .unwrap();
    let vic = as_user(&handle, OutputFormat::Table, "vic", "orange giraffe meadow");
    let vic_json = as_user(&handle, OutputFormat::Json, "vic", "orange giraffe meadow");

    // A token with less than the user has; one with more is refused.
    let created: Value = serde_json::from_str(
        &drover(&vic_json, &["api-tokens", "create", "ro", "--role", "viewer", "--ttl", "7d"]).await.unwrap(),
    )
    .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let out = drover(&vic, &["api-tokens", "create", "ops", "--role", "operator@prod"]).await.unwrap();
    assert!(out.starts_with("Created API token \"ops\" ("), "{out}");
    assert!(out.contains(") with operator@prod; it expires "), "the manager's default expiry: {out}");
    let (status, message, _) = failure(drover(&vic, &["api-tokens", "create", "x", "--role", "admin"]).await);
    assert!(matches!(status, 400 | 422), "a refused request, not {status}: {message}");
    assert_eq!(message, "a token cannot do more than its user: you do not hold admin (you hold viewer, operator@prod)");

    // The viewer token reads but may not manage users: the error names the
    // permission and the hint the roles that carry it.
    let ro = with_token(&handle, &token);
    let out = drover(&ro, &["whoami"]).await.unwrap();
    assert!(out.contains("User:            vic\n"), "{out}");
    let (status, message, hint) = failure(drover(&ro, &["users", "list"]).await);
    assert_eq!(status, 403);
    assert!(message.contains("vic lacks permission users.write"), "{message}");
    assert_eq!(
        hint.as_deref(),
        Some(
            "permission users.write comes with the role(s) admin; an administrator can grant one with \
             `drover users grant USER ROLE[@CLUSTER]` (see `drover users --help`)"
        )
    );
    let (status, message, hint) = failure(drover(&ro, &["users", "grant", "vic", "admin"]).await);
    assert_eq!(status, 403, "{message}");
    assert!(hint.unwrap().contains("users.write"));

    // The list shows roles, expiry and last use; revoking ends the token.
    let out = drover(&vic, &["api-tokens", "list"]).await.unwrap();
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.lines().next().unwrap().ends_with("ROLES          CREATED  EXPIRES  LAST USED"), "{out}");
    let ro_row = out.lines().find(|l| l.contains(" ro ")).unwrap_or_else(|| panic!("ro listed: {out}"));
    assert!(ro_row.contains(" viewer "), "{ro_row}");
    assert!(ro_row.contains(" in 6d ") || ro_row.contains(" in 7d "), "{ro_row}");
    assert!(ro_row.ends_with(" ago"), "used just now: {ro_row}");
    let ops_row = out.lines().find(|l| l.contains(" ops ")).unwrap();
    assert!(ops_row.ends_with("never"), "{ops_row}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(drover(&vic, &["api-tokens", "revoke", id]).await.unwrap(), format!("revoked API token {id}\n"));
    assert_eq!(failure(drover(&ro, &["whoami"]).await).0, 401);
    handle.shutdown().await;
}

/// Runs the `drover` binary against `url` as admin, with `stdin` as its input.
async fn drover_binary(home: &Path, url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("DROVER_URL", url)
        .env("DROVER_PASSWORD", ADMIN_PASSWORD)
        .current_dir(home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn the_binary_reads_a_new_password_from_stdin_and_explains_roles() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let url = base(&handle).to_string();

    let out =
        drover_binary(dir.path(), &url, &["users", "create", "sam", "--role", "auditor"], "quiet river stones\n").await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "created user sam with auditor\n");
    let sam = as_user(&handle, OutputFormat::Table, "sam", "quiet river stones");
    assert!(drover(&sam, &["whoami"]).await.unwrap().contains("Roles:           auditor\n"));

    let out = drover_binary(dir.path(), &url, &["users", "create", "tim"], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: no new password: stdin is empty"), "{}", text(&out));

    let out = drover_binary(dir.path(), &url, &["users", "disable", "admin"], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: user admin is the last enabled administrator: grant admin to another enabled user first (HTTP 409)\n"
    );

    let out = drover_binary(dir.path(), &url, &["users", "--help"], "").await;
    let help = String::from_utf8_lossy(&out.stdout);
    for line in
        ["  cluster-admin  services, roles, configuration", "ROLE@CLUSTER, e.g. operator@prod", "reset-password"]
    {
        assert!(help.contains(line), "{line:?} in {help}");
    }
    handle.shutdown().await;
}
