//! The CLI against a manager serving HTTPS with its own CA (bound to the
//! wildcard address, so it is not loopback and picks HTTPS itself): verified
//! with `--ca-cert` or the right `--ca-pin`, refused with a wrong pin or
//! without either, and `drover login` run as a real process, saving the
//! config file later commands use.

use std::path::Path;
use std::process::Output;

use clap::Parser;
use drover_cli::cli::{Cli, OutputFormat};
use drover_cli::commands::{Context, Prompt, run};
use drover_cli::manager_client::{Credentials, ManagerClient, PasswordSource};
use drover_cli::trust::{Fingerprint, TlsFailure, Trust};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use reqwest::Url;
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery staple";

struct NoPrompt;

impl Prompt for NoPrompt {
    fn is_interactive(&self) -> bool {
        false
    }

    fn confirm(&mut self, _question: &str) -> std::io::Result<bool> {
        Ok(false)
    }
}

async fn start_https_manager(dir: &Path) -> ManagerHandle {
    drover_proto::tls::provider();
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(PASSWORD.into());
    let http = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = Manager::start(config, http, grpc).await.unwrap();
    assert!(handle.state.https, "a wildcard address is served over HTTPS");
    handle
}

fn url(handle: &ManagerHandle, host: &str) -> Url {
    Url::parse(&format!("https://{host}:{}", handle.http_addr.port())).unwrap()
}

fn admin() -> Credentials {
    Credentials::Password { user: "admin".into(), password: PASSWORD.into(), source: PasswordSource::Flag }
}

async fn whoami(url: Url, trust: Trust) -> anyhow::Result<String> {
    let ctx = Context { client: ManagerClient::with_trust(url, admin(), trust)?, output: OutputFormat::Table };
    let cli = Cli::try_parse_from(["drover", "whoami"])?;
    run(&ctx, cli.command, &mut NoPrompt).await
}

fn ca_pin(handle: &ManagerHandle) -> Fingerprint {
    handle.state.pki.ca_fingerprint().to_string().parse().unwrap()
}

#[tokio::test]
async fn verifies_the_manager_with_its_ca_file_or_the_right_pin() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_https_manager(dir.path()).await;

    let trust = Trust::ca_cert(&dir.path().join("ca.pem")).unwrap();
    let out = whoami(url(&handle, "127.0.0.1"), trust).await.unwrap();
    assert!(out.starts_with("User:            admin\n"), "{out}");
    assert!(out.contains("(verified with the CA certificate in "), "{out}");

    let out = whoami(url(&handle, "localhost"), Trust::Pin(ca_pin(&handle))).await.unwrap();
    assert!(out.contains(&format!("(verified with the pinned CA {})", ca_pin(&handle))), "{out}");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_wrong_pin_or_no_trust_is_refused_and_the_presented_ca_named() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_https_manager(dir.path()).await;
    let real = ca_pin(&handle).to_string();

    let wrong = Fingerprint::of_der(b"another CA");
    let err = whoami(url(&handle, "127.0.0.1"), Trust::Pin(wrong)).await.unwrap_err();
    let failure = err.downcast_ref::<TlsFailure>().unwrap_or_else(|| panic!("a TLS failure: {err:#}"));
    assert!(
        failure.message.contains(&format!("no certificate in the manager's chain has the pinned fingerprint {wrong}")),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("CA O=Drover, CN=Drover CA "), "{}", failure.message);
    assert!(failure.message.contains(&real), "the presented CA is listed: {}", failure.message);
    assert!(failure.message.contains("pin the new one"), "{}", failure.message);

    // No pin and no CA file: the public roots do not know the manager's CA.
    let err = whoami(url(&handle, "127.0.0.1"), Trust::System).await.unwrap_err();
    let failure = err.downcast_ref::<TlsFailure>().unwrap_or_else(|| panic!("a TLS failure: {err:#}"));
    assert!(failure.message.contains("no public root CA built into drover issued it"), "{}", failure.message);
    let hint = failure.hint.as_deref().unwrap();
    let login = format!("drover login https://127.0.0.1:{} --ca-pin {real}", handle.http_addr.port());
    assert!(hint.contains(&login), "{hint}");

    // The right CA, but a name its certificate was not issued for.
    let err = whoami(url(&handle, "127.0.0.2"), Trust::Pin(ca_pin(&handle))).await.unwrap_err();
    let failure = err.downcast_ref::<TlsFailure>().unwrap_or_else(|| panic!("a TLS failure: {err:#}"));
    assert!(failure.message.contains("not valid for the name \"127.0.0.2\""), "{}", failure.message);
    assert!(failure.hint.as_deref().unwrap().contains("--advertise"), "{failure:?}");
    handle.shutdown().await;
}

/// Runs the `drover` binary with only the given environment.
async fn drover(home: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .envs(envs.iter().copied())
        .current_dir(home)
        .output()
        .await
        .unwrap()
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
async fn login_saves_the_manager_and_its_pin_for_later_commands() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_https_manager(&dir.path().join("data")).await;
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let password_file = home.join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let base = url(&handle, "127.0.0.1").as_str().trim_end_matches('/').to_owned();
    let pin = ca_pin(&handle).to_string();
    let config = home.join(".config/drover/config.toml");

    // Without a pin: refused, the presented CA and the command to pin it
    // printed, nothing saved.
    let out = drover(&home, &[], &["login", &base, "--password-file", "password"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: the manager at https://127.0.0.1:"), "{}", text(&out));
    assert!(stderr.contains(&format!("hint: if {pin} is your manager's CA")), "{}", text(&out));
    assert!(stderr.contains(&format!("drover login {base} --ca-pin {pin}")), "{}", text(&out));
    assert!(!config.exists());

    // A wrong password: the manager refuses, nothing saved.
    std::fs::write(home.join("wrong"), "nope\n").unwrap();
    let out = drover(&home, &[], &["login", &base, "--ca-pin", &pin, "--password-file", "wrong"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(HTTP 401)"), "{}", text(&out));
    assert!(!config.exists());

    let out = drover(&home, &[], &["login", &base, "--ca-pin", &pin, "--password-file", "password"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("Logged in to {base} as admin.\n")), "{stdout}");
    assert!(stdout.contains(&format!("Verified with the pinned CA {pin}.")), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains(&format!("url = \"{base}\"")), "{saved}");
    assert!(saved.contains(&format!("ca_pin = \"{pin}\"")), "{saved}");
    assert!(saved.contains(&format!("password_file = \"{}\"", password_file.display())), "{saved}");
    assert!(!saved.contains(PASSWORD), "{saved}");

    // Later commands: manager, pin and password file from the file.
    let out = drover(&home, &[], &["whoami"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("Manager:         {base} (verified with the pinned CA {pin})")), "{stdout}");

    // A flag still wins over the file: a wrong pin is refused.
    let wrong = Fingerprint::of_der(b"x").to_string();
    let out = drover(&home, &[("DROVER_CA_PIN", &wrong)], &["whoami"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("has the pinned fingerprint {wrong}")), "{}", text(&out));

    // DROVER_CONFIG names another file: the default one is not read.
    let out = drover(&home, &[("DROVER_CONFIG", "elsewhere.toml")], &["whoami"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"), "{}", text(&out));

    // The CA file instead of a pin, saved in another config file.
    let ca = dir.path().join("data/ca.pem");
    let out = drover(
        &home,
        &[("DROVER_CONFIG", "other.toml"), ("DROVER_PASSWORD", PASSWORD)],
        &["login", &base, "--ca-cert", ca.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let saved = std::fs::read_to_string(home.join("other.toml")).unwrap();
    assert!(saved.contains(&format!("ca_cert = \"{}\"", ca.display())) && !saved.contains("ca_pin"), "{saved}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("No password or token is saved"), "{}", text(&out));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_pin_for_plain_http_is_a_mistake() {
    let home = tempfile::tempdir().unwrap();
    let pin = Fingerprint::of_der(b"x").to_string();
    let out =
        drover(home.path(), &[("DROVER_PASSWORD", "x")], &["--url", "http://127.0.0.1:9", "--ca-pin", &pin, "whoami"])
            .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("but http://127.0.0.1:9 is plain HTTP; use https://"),
        "{}",
        text(&out)
    );
}
