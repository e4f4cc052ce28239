//! HTTPS for the REST API and console, with real TLS and real clients: curl
//! (a separate process, so nothing of the manager's TLS stack verifies
//! itself), reqwest, and the `drover-manager` binary for signals and logs.
//!
//! Loopback is plain HTTP; a non-loopback address is tested by binding the
//! wildcard address `0.0.0.0` (reachable on every interface, so exactly the
//! case TLS is for) and connecting through 127.0.0.1.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use drover_testkit::eventually;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::TcpListener;

const PASSWORD: &str = "https-test-admin-password";
const WAIT: Duration = Duration::from_secs(30);

async fn start(
    dir: &Path,
    http_bind: &str,
    configure: impl FnOnce(&mut ManagerConfig),
) -> anyhow::Result<ManagerHandle> {
    drover_proto::tls::provider();
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(PASSWORD.into());
    configure(&mut config);
    let http = TcpListener::bind(http_bind).await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await
}

/// What curl did: whether it succeeded, its output and its error text.
#[derive(Debug)]
struct Curl {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    Curl {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A CA and a server certificate it issued for 127.0.0.1 and localhost,
/// written as `NAME-ca.pem`, `NAME-cert.pem` (chain) and `NAME-key.pem`.
struct Pair {
    ca: PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn make_pair(dir: &Path, name: &str) -> Pair {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, format!("test CA {name}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, format!("manager {name}"));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let ca_path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Pair { ca: ca_path, cert_pem: format!("{}{}", cert.pem(), ca.pem()), key_pem: key.serialize_pem() }
}

/// Replaces a file whole, as a careful operator (or cert-manager) does.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn install(pair: &Pair, cert: &Path, key: &Path) {
    replace(key, &pair.key_pem);
    replace(cert, &pair.cert_pem);
}

#[tokio::test]
async fn a_non_loopback_address_gets_https_from_the_managers_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), "0.0.0.0:0", |c| c.advertise = vec!["drover.test".into()]).await.unwrap();
    assert!(handle.state.https);
    let port = handle.http_addr.port();
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // The CA agents pin verifies the console, under every name it was issued for.
    let url = format!("https://127.0.0.1:{port}/healthz");
    let got = curl(&["--cacert", ca, &url]).await;
    assert!(got.ok, "{got:?}");
    assert!(got.stdout.contains("\"status\""), "{got:?}");
    let resolve = format!("drover.test:{port}:127.0.0.1");
    let got = curl(&["--cacert", ca, "--resolve", &resolve, &format!("https://drover.test:{port}/healthz")]).await;
    assert!(got.ok, "{got:?}");
    let got = curl(&["--cacert", ca, &format!("https://localhost:{port}/healthz")]).await;
    assert!(got.ok, "{got:?}");
    // HTTP/2 is offered (ALPN) and spoken.
    let got = curl(&["--cacert", ca, "--http2", "-o", "/dev/null", "-w", "%{http_version}", &url]).await;
    assert_eq!((got.ok, got.stdout.as_str()), (true, "2"), "{got:?}");

    // Refused: a name the certificate does not hold, a client without the
    // CA, and plain HTTP.
    let resolve = format!("other.test:{port}:127.0.0.1");
    let got = curl(&["--cacert", ca, "--resolve", &resolve, &format!("https://other.test:{port}/healthz")]).await;
    assert_eq!(got.code, Some(60), "not valid for other.test: {got:?}");
    let got = curl(&[&url]).await;
    assert_eq!(got.code, Some(60), "unknown issuer: {got:?}");
    assert!(got.stderr.contains("certificate"), "{got:?}");
    let got = curl(&[&format!("http://127.0.0.1:{port}/healthz")]).await;
    assert!(!got.ok, "plain HTTP must not be answered: {got:?}");

    // The console's session cookie is Secure, and handlers still see the
    // client's address (the audit log's source).
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(handle.ca_pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("https://127.0.0.1:{port}/login"))
        .form(&[("username", "admin"), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("drover_session="))
        .expect("a session cookie")
        .to_owned();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
    assert!(cookie.split(';').any(|a| a.trim() == "HttpOnly"), "{cookie}");
    let audit: serde_json::Value = client
        .get(format!("https://127.0.0.1:{port}/api/v1/audit"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "session.sign_in")
        .unwrap_or_else(|| panic!("a session.sign_in entry in {audit}"));
    assert_eq!(login["source"], "127.0.0.1", "{login}");
    handle.shutdown().await;
}

#[tokio::test]
async fn loopback_is_plain_http_and_http_insecure_allows_it_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), "127.0.0.1:0", |_| {}).await.unwrap();
    assert!(!handle.state.https);
    let got = curl(&[&format!("http://{}/healthz", handle.http_addr)]).await;
    assert!(got.ok, "{got:?}");
    handle.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), "0.0.0.0:0", |c| c.http_insecure = true).await.unwrap();
    assert!(!handle.state.https);
    let got = curl(&[&format!("http://127.0.0.1:{}/healthz", handle.http_addr.port())]).await;
    assert!(got.ok, "{got:?}");
    // The console's cookie is not Secure over plain HTTP (a browser would drop it).
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{}/login", handle.http_addr.port()))
        .form(&[("username", "admin"), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.starts_with("drover_session=") && !cookie.contains("Secure"), "{cookie}");
    handle.shutdown().await;
}

#[tokio::test]
async fn operator_certificate_files_are_served_even_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "a");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    install(&pair, &cert, &key);
    let handle = start(dir.path(), "127.0.0.1:0", |c| {
        c.http_tls_cert = Some(cert.clone());
        c.http_tls_key = Some(key.clone());
    })
    .await
    .unwrap();
    assert!(handle.state.https);
    let url = format!("https://{}/healthz", handle.http_addr);
    let got = curl(&["--cacert", pair.ca.to_str().unwrap(), &url]).await;
    assert!(got.ok, "{got:?}");
    // The manager's own CA did not issue this one.
    let got = curl(&["--cacert", dir.path().join("ca.pem").to_str().unwrap(), &url]).await;
    assert_eq!(got.code, Some(60), "{got:?}");
    handle.shutdown().await;
}

#[tokio::test]
async fn bad_https_settings_stop_the_start_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_pair(dir.path(), "a");
    let b = make_pair(dir.path(), "b");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();

    type Configure = Box<dyn FnOnce(&mut ManagerConfig)>;
    let cases: Vec<(&str, Configure, &str)> = vec![
        (
            "cert only",
            Box::new({
                let c = cert.clone();
                move |cfg| cfg.http_tls_cert = Some(c)
            }),
            "--http-tls-cert needs --http-tls-key",
        ),
        (
            "key only",
            Box::new({
                let k = key.clone();
                move |cfg| cfg.http_tls_key = Some(k)
            }),
            "--http-tls-key needs --http-tls-cert",
        ),
        (
            "TLS files and --http-insecure",
            Box::new({
                let (c, k) = (cert.clone(), key.clone());
                move |cfg| {
                    cfg.http_tls_cert = Some(c);
                    cfg.http_tls_key = Some(k);
                    cfg.http_insecure = true;
                }
            }),
            "--http-insecure asks for plain HTTP",
        ),
        (
            "a missing file",
            Box::new({
                let (c, k) = (missing.clone(), key.clone());
                move |cfg| {
                    cfg.http_tls_cert = Some(c);
                    cfg.http_tls_key = Some(k);
                }
            }),
            "read --http-tls-cert",
        ),
        (
            "no certificate in the file",
            Box::new({
                let (c, k) = (garbage.clone(), key.clone());
                move |cfg| {
                    cfg.http_tls_cert = Some(c);
                    cfg.http_tls_key = Some(k);
                }
            }),
            "holds no PEM certificate",
        ),
        (
            "another certificate's key",
            Box::new({
                let (c, k) = (cert.clone(), key.clone());
                move |cfg| {
                    cfg.http_tls_cert = Some(c);
                    cfg.http_tls_key = Some(k);
                }
            }),
            "is not the private key of the certificate in --http-tls-cert",
        ),
    ];
    for (what, configure, want) in cases {
        let data = tempfile::tempdir().unwrap();
        let err = start(data.path(), "0.0.0.0:0", configure).await.expect_err(what);
        let err = format!("{err:#}");
        assert!(err.contains(want), "{what}: {err}");
    }
}

/// A `drover-manager` process whose log lines are collected.
struct ManagerProcess {
    child: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl ManagerProcess {
    fn spawn(data: &Path, args: &[&str]) -> ManagerProcess {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover-manager"))
            .arg("--data-dir")
            .arg(data)
            .args(["--grpc-addr", "127.0.0.1:0"])
            .args(args)
            .env("DROVER_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drover-manager");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        ManagerProcess { child, log }
    }

    /// Waits for a log line holding every needle; returns it.
    async fn wait_for_line(&self, needles: &[&str]) -> String {
        self.wait_for_new_line(needles, 0).await
    }

    /// Waits for the `seen + 1`th log line holding every needle; returns it.
    async fn wait_for_new_line(&self, needles: &[&str], seen: usize) -> String {
        let what = format!("log line {} with {needles:?}", seen + 1);
        eventually(WAIT, &what, || {
            let found =
                self.log.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).nth(seen).cloned();
            std::future::ready(found)
        })
        .await
    }

    /// How many log lines hold every needle.
    fn count(&self, needles: &[&str]) -> usize {
        self.log.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).count()
    }

    /// The `https://ADDR` the manager says it serves.
    async fn https_url(&self) -> String {
        let line = self.wait_for_line(&["console and REST API: "]).await;
        let url = line.split("console and REST API: ").nth(1).unwrap().trim().trim_end_matches('/').to_owned();
        assert!(url.starts_with("https://"), "{line}");
        url
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether curl verifies the manager with `ca`.
async fn verifies(url: &str, ca: &Path) -> bool {
    curl(&["--cacert", ca.to_str().unwrap(), &format!("{url}/healthz")]).await.ok
}

#[tokio::test]
async fn certificate_files_are_reloaded_when_they_change_and_a_broken_pair_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (make_pair(dir.path(), "a"), make_pair(dir.path(), "b"));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    install(&a, &cert, &key);
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let manager = ManagerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--http-tls-cert",
            cert_arg,
            "--http-tls-key",
            key_arg,
            "--http-tls-reload-interval",
            "100ms",
        ],
    );
    let url = manager.https_url().await;
    assert!(verifies(&url, &a.ca).await);
    assert!(!verifies(&url, &b.ca).await);

    const RELOADED: &[&str] = &["reloaded the HTTPS certificate", "file change"];
    const REFUSED: &[&str] = &["could not reload the HTTPS certificate", "file change"];
    install(&b, &cert, &key);
    manager.wait_for_line(RELOADED).await;
    assert!(verifies(&url, &b.ca).await, "the new certificate is served");
    assert!(!verifies(&url, &a.ca).await, "the old certificate is no longer served");

    // A certificate whose key is not in the key file: logged, not taken.
    // (Between the two renames of `install` a check may already have seen
    // such a half-changed pair: count from here.)
    let refused = manager.count(REFUSED);
    replace(&cert, &a.cert_pem);
    let line = manager.wait_for_new_line(REFUSED, refused).await;
    assert!(line.contains("is not the private key of the certificate"), "{line}");
    assert!(verifies(&url, &b.ca).await, "still the previous certificate");
    // Completed: the pair loads.
    let reloaded = manager.count(RELOADED);
    replace(&key, &a.key_pem);
    manager.wait_for_new_line(RELOADED, reloaded).await;
    assert!(verifies(&url, &a.ca).await, "pair a is served again");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (make_pair(dir.path(), "a"), make_pair(dir.path(), "b"));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    install(&a, &cert, &key);
    // No polling: only SIGHUP reloads.
    let manager = ManagerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--http-tls-cert",
            cert.to_str().unwrap(),
            "--http-tls-key",
            key.to_str().unwrap(),
            "--http-tls-reload-interval",
            "0s",
        ],
    );
    let url = manager.https_url().await;
    assert!(verifies(&url, &a.ca).await);
    install(&b, &cert, &key);
    assert!(verifies(&url, &a.ca).await, "nothing reloads before the signal");

    // A broken pair at SIGHUP is refused...
    replace(&key, "garbage\n");
    manager.signal(nix::sys::signal::Signal::SIGHUP);
    let line = manager.wait_for_line(&["could not reload the HTTPS certificate", "SIGHUP"]).await;
    assert!(line.contains("holds no PEM private key"), "{line}");
    assert!(verifies(&url, &a.ca).await, "still the previous certificate");

    // ... a good one taken, on the same listener.
    replace(&key, &b.key_pem);
    manager.signal(nix::sys::signal::Signal::SIGHUP);
    manager.wait_for_line(&["reloaded the HTTPS certificate", "SIGHUP"]).await;
    assert!(verifies(&url, &b.ca).await);
    assert!(!verifies(&url, &a.ca).await);
    assert_eq!(manager.count(&["console and REST API: "]), 1, "the manager did not restart");
}

#[tokio::test]
async fn the_binary_refuses_half_a_pair_and_reads_drover_http_insecure_as_a_boolean() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover-manager"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--http-tls-cert", "/etc/hostname"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--http-tls-key"), "{stderr}");

    // DROVER_HTTP_INSECURE is read as a boolean: `false` asks for nothing.
    for (value, want) in [
        ("true", "--http-insecure asks for plain HTTP but --http-tls-cert/--http-tls-key ask for HTTPS"),
        ("false", "read --http-tls-cert /nonexistent/cert.pem"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover-manager"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--http-tls-cert", "/nonexistent/cert.pem", "--http-tls-key", "/nonexistent/key.pem"])
            .env("DROVER_HTTP_INSECURE", value)
            .env("DROVER_ADMIN_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "DROVER_HTTP_INSECURE={value}: {stderr}");
        assert!(stderr.contains(want), "DROVER_HTTP_INSECURE={value}: {stderr}");
    }
}

#[tokio::test]
async fn sighup_issues_a_new_certificate_from_the_managers_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let manager = ManagerProcess::spawn(&data, &["--http-addr", "0.0.0.0:0"]);
    let url = manager.https_url().await.replace("0.0.0.0", "127.0.0.1");
    let ca = data.join("ca.pem");
    assert!(verifies(&url, &ca).await);
    let fingerprint = |line: &str| line.split("certificate=").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    let first = fingerprint(&manager.wait_for_line(&["serving HTTPS", "issued by the manager's CA"]).await);

    manager.signal(nix::sys::signal::Signal::SIGHUP);
    let second = fingerprint(&manager.wait_for_line(&["reloaded the HTTPS certificate", "SIGHUP"]).await);
    assert_ne!(first, second, "a new certificate");
    assert!(verifies(&url, &ca).await, "issued by the same CA");
}
