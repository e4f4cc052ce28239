//! HTTPS for the REST API and the console: which certificate the listener
//! presents, reloading it without dropping the listener, and the accept loop
//! that runs TLS before hyper.
//!
//! The certificate comes from `--http-tls-cert`/`--http-tls-key`, or, when
//! neither is given and `--http-addr` is not loopback, is issued by the
//! manager's own CA for the `--advertise` names, so the CA agents pin also
//! verifies the console. A loopback address, or `--http-insecure`, is served
//! in plain HTTP by `axum::serve` as before.
//!
//! Reloading: on SIGHUP (files re-read, or a fresh certificate issued by the
//! CA) and, for files, when their contents change (checked every
//! `--http-tls-reload-interval`). The new pair replaces the old one for new
//! handshakes only; a pair that does not load is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::ConnectInfo;
use drover_proto::tls::Fingerprint;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::AppState;
use crate::config::ManagerConfig;
use crate::pki::Pki;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How `--http-addr` is served, decided from the flags and the bound address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP: a loopback address, or `--http-insecure`.
    Plain,
    /// The operator's certificate chain and key.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate issued by the manager's CA for these names (localhost,
    /// 127.0.0.1 and ::1 are always added).
    ManagerCa { names: Vec<String> },
}

impl HttpTls {
    /// Decides from `config`, whose `http_addr` is the address actually bound.
    pub fn choose(config: &ManagerConfig) -> anyhow::Result<HttpTls> {
        match (&config.http_tls_cert, &config.http_tls_key) {
            (Some(cert), Some(key)) if !config.http_insecure => {
                return Ok(HttpTls::Files { cert: cert.clone(), key: key.clone() });
            }
            (None, None) => {}
            // `ManagerConfig::validate` says what is wrong.
            _ => {
                config.validate()?;
                bail!("--http-tls-cert, --http-tls-key and --http-insecure do not fit together");
            }
        }
        let ip = config.http_addr.ip();
        if ip.is_loopback() || config.http_insecure {
            return Ok(HttpTls::Plain);
        }
        let mut names = config.advertise.clone();
        // A specific address is one clients may use; a wildcard one is not.
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
        Ok(HttpTls::ManagerCa { names })
    }

    pub fn is_https(&self) -> bool {
        !matches!(self, HttpTls::Plain)
    }

    /// Loads (or issues) the first certificate; `None` for plain HTTP. An
    /// error here stops the manager's start.
    pub fn server(&self, pki: &Pki, reload_interval: Duration) -> anyhow::Result<Option<HttpsServer>> {
        let source = match self {
            HttpTls::Plain => return Ok(None),
            HttpTls::Files { cert, key } => CertSource::Files { cert: cert.clone(), key: key.clone() },
            HttpTls::ManagerCa { names } => CertSource::ManagerCa { names: names.clone() },
        };
        let (loaded, seen) = source.load(pki)?;
        tracing::info!(source = %source, certificate = %loaded.fingerprint, valid_until = %loaded.valid_until, "serving HTTPS");
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(loaded.key))));
        let mut config = ServerConfig::builder_with_provider(drover_proto::tls::provider())
            .with_safe_default_protocol_versions()
            .context("HTTPS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(HttpsServer { source, current, config: Arc::new(config), reload_interval, seen }))
    }
}

/// The listener's TLS configuration and where its certificate comes from.
#[derive(Debug)]
pub struct HttpsServer {
    source: CertSource,
    current: Arc<CurrentCert>,
    config: Arc<ServerConfig>,
    reload_interval: Duration,
    /// The file contents last loaded or tried.
    seen: Option<FileContents>,
}

#[derive(Debug, Clone)]
enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    ManagerCa { names: Vec<String> },
}

impl std::fmt::Display for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertSource::Files { cert, key } => write!(f, "{} and {}", cert.display(), key.display()),
            CertSource::ManagerCa { .. } => f.write_str("issued by the manager's CA"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// A certificate ready to serve, with what the log says about it.
struct Loaded {
    key: CertifiedKey,
    fingerprint: Fingerprint,
    valid_until: String,
}

impl CertSource {
    /// Reads the files, or issues a certificate; the file contents read are
    /// returned too.
    fn load(&self, pki: &Pki) -> anyhow::Result<(Loaded, Option<FileContents>)> {
        match self {
            CertSource::Files { cert, key } => {
                let contents = read_files(cert, key)?;
                Ok((load_pem(&contents, cert, key)?, Some(contents)))
            }
            CertSource::ManagerCa { names } => {
                let issued = pki.issue_server_cert(names)?;
                tracing::info!(names = ?issued.names, "issued the HTTPS server certificate");
                let contents = FileContents { cert: issued.chain_pem.into_bytes(), key: issued.key_pem.into_bytes() };
                let loaded = load_pem(&contents, Path::new("(issued certificate)"), Path::new("(issued key)"))?;
                Ok((loaded, None))
            }
        }
    }
}

fn read_files(cert: &Path, key: &Path) -> anyhow::Result<FileContents> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("read --http-tls-cert {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("read --http-tls-key {}", key.display()))?;
    Ok(FileContents { cert: cert_pem, key: key_pem })
}

/// Parses a PEM chain and key and checks that they belong together.
fn load_pem(contents: &FileContents, cert_path: &Path, key_path: &Path) -> anyhow::Result<Loaded> {
    let chain = CertificateDer::pem_slice_iter(&contents.cert)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--http-tls-cert {} is not valid PEM", cert_path.display()))?;
    let Some(leaf) = chain.first() else {
        bail!("--http-tls-cert {} holds no PEM certificate", cert_path.display());
    };
    let fingerprint = Fingerprint::of_der(leaf);
    let valid_until = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, parsed)) => {
            let validity = parsed.validity();
            if !validity.is_valid() {
                tracing::warn!(path = %cert_path.display(), not_before = %validity.not_before, not_after = %validity.not_after,
                    "the HTTPS certificate is not valid now; clients will refuse it");
            }
            validity.not_after.to_string()
        }
        Err(e) => bail!("--http-tls-cert {}: the first certificate does not parse: {e}", cert_path.display()),
    };
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            anyhow::anyhow!("--http-tls-key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", key_path.display())
        }
        other => anyhow::anyhow!("--http-tls-key {} is not valid PEM: {other}", key_path.display()),
    })?;
    let key = CertifiedKey::from_der(chain, key, &drover_proto::tls::provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "--http-tls-key {} is not the private key of the certificate in --http-tls-cert {}",
            key_path.display(),
            cert_path.display()
        ),
        other => anyhow::anyhow!("--http-tls-key {} cannot be used: {other}", key_path.display()),
    })?;
    Ok(Loaded { key, fingerprint, valid_until })
}

/// The certificate handshakes get, swapped whole on reload.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl HttpsServer {
    /// Loads the certificate again (files read, or a new one issued); on
    /// failure the current one stays.
    fn reload(&mut self, pki: &Pki, why: &str) {
        match self.source.load(pki) {
            Ok((loaded, seen)) => {
                self.current.set(loaded.key);
                self.seen = seen;
                tracing::info!(trigger = why, source = %self.source, certificate = %loaded.fingerprint,
                    valid_until = %loaded.valid_until, "reloaded the HTTPS certificate");
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %format!("{e:#}"),
                    "could not reload the HTTPS certificate; still serving the previous one");
            }
        }
    }

    /// For files: loads them if their contents changed since last seen.
    fn reload_if_changed(&mut self, last_read_error: &mut Option<String>) {
        let CertSource::Files { cert, key } = &self.source else { return };
        let contents = match read_files(cert, key) {
            Ok(c) => {
                *last_read_error = None;
                c
            }
            Err(e) => {
                // Once per distinct problem, not at every check.
                let msg = format!("{e:#}");
                if last_read_error.as_ref() != Some(&msg) {
                    tracing::warn!(error = %msg, "cannot read the HTTPS certificate files; still serving the previous certificate");
                    *last_read_error = Some(msg);
                }
                return;
            }
        };
        if self.seen.as_ref() == Some(&contents) {
            return;
        }
        match load_pem(&contents, cert, key) {
            Ok(loaded) => {
                self.current.set(loaded.key);
                tracing::info!(trigger = "file change", source = %self.source, certificate = %loaded.fingerprint,
                    valid_until = %loaded.valid_until, "reloaded the HTTPS certificate");
            }
            Err(e) => tracing::error!(trigger = "file change", error = %format!("{e:#}"),
                "could not reload the HTTPS certificate; still serving the previous one"),
        }
        // Tried once; a half-written pair is tried again when it changes again.
        self.seen = Some(contents);
    }
}

/// Reloads on SIGHUP and, for files, when they change.
async fn reload_loop(mut https: HttpsServer, state: Arc<AppState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the HTTPS certificate is reloaded only when its files change");
            None
        }
    };
    let polling = matches!(https.source, CertSource::Files { .. }) && !https.reload_interval.is_zero();
    let mut poll = tokio::time::interval(https.reload_interval.max(Duration::from_millis(100)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read_error = None;
    loop {
        tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                https.reload(&state.pki, "SIGHUP");
            }
            _ = poll.tick(), if polling => https.reload_if_changed(&mut last_read_error),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets
/// open connections finish. Handlers see the client's address as
/// `ConnectInfo<SocketAddr>`, as under `axum::serve`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    https: HttpsServer,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(https.config.clone());
    let reloader = tokio::spawn(reload_loop(https, state));
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::error!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // The client's problem (it does not trust the certificate,
                // speaks plain HTTP, ...): it sees the failure itself.
                Ok(Err(e)) => return tracing::debug!(client = %addr, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(client = %addr, "TLS handshake timed out"),
            };
            let svc = tower::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                app.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(client = %addr, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    reloader.abort();
    graceful.shutdown().await;
}
