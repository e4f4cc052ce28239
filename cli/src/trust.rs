//! How the CLI verifies an HTTPS manager: the public roots built into it
//! (Mozilla's list, `webpki-roots`), a CA certificate file (`--ca-cert`), or
//! a pinned CA fingerprint (`--ca-pin`), the way the agent verifies the
//! manager with the fingerprint from its enrollment token.
//!
//! A pin is not trust on first use: the manager must present a certificate
//! in its chain whose SHA-256 is the pin, and the server certificate must
//! verify against that one as the only root (name, validity, signature).
//! When verification fails, [`explain`] fetches the chain the manager
//! presented (the handshake is aborted before anything is sent) and says
//! which fingerprint to pin and how; it never trusts it by itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use reqwest::Url;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER encoding, written `sha256:<64 hex>` (the
/// format of the manager's startup line and of enrollment tokens).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `sha256:<64 hex>` or the 64 hex digits alone, any case, colons
    /// allowed (as `openssl x509 -fingerprint -sha256` prints it).
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let bad = || {
            format!(
                "{s:?} is not a SHA-256 fingerprint; expected sha256: and 64 hex digits, as drover-manager prints its CA"
            )
        };
        let t = s.trim();
        let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t);
        let digits: String = t.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(digits.to_ascii_lowercase()).map_err(|_| bad())?;
        Ok(Fingerprint(bytes.try_into().map_err(|_| bad())?))
    }
}

/// How the manager's certificate is verified.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// The public roots built into the CLI.
    System,
    /// Only the CA certificate(s) in this PEM file.
    CaCert { path: PathBuf, pem: Vec<u8> },
    /// A CA in the presented chain with this fingerprint.
    Pin(Fingerprint),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Trust {
    /// Reads a CA certificate file, checking that it holds a certificate.
    pub fn ca_cert(path: &Path) -> anyhow::Result<Trust> {
        let pem = std::fs::read(path).with_context(|| format!("read CA certificate {}", path.display()))?;
        let certs = parse_pem_certs(&pem).with_context(|| format!("CA certificate {}", path.display()))?;
        if certs.is_empty() {
            bail!("CA certificate {} holds no PEM certificate", path.display());
        }
        Ok(Trust::CaCert { path: path.to_owned(), pem })
    }

    /// What verifies the manager, for messages.
    pub fn describe(&self) -> String {
        match self {
            Trust::System => "the public roots built into drover".into(),
            Trust::CaCert { path, .. } => format!("the CA certificate in {}", path.display()),
            Trust::Pin(fp) => format!("the pinned CA {fp}"),
        }
    }

    /// Applies this trust to an HTTP client.
    pub fn configure(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::ClientBuilder> {
        Ok(match self {
            Trust::System => builder,
            Trust::CaCert { path, pem } => {
                let mut builder = builder.tls_built_in_root_certs(false);
                for der in parse_pem_certs(pem).with_context(|| format!("CA certificate {}", path.display()))? {
                    let cert = reqwest::Certificate::from_der(&der)
                        .with_context(|| format!("CA certificate {}", path.display()))?;
                    builder = builder.add_root_certificate(cert);
                }
                builder
            }
            Trust::Pin(fp) => {
                let provider = provider();
                let mut config = ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .context("TLS protocol versions")?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: *fp, provider }))
                    .with_no_client_auth();
                // The client speaks HTTP/1.1 only.
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                builder.use_preconfigured_tls(config)
            }
        })
    }
}

fn parse_pem_certs(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow!("not valid PEM: {e}"))
}

/// The process-wide rustls crypto provider (ring).
fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The manager presented no CA certificate with the pinned fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("no certificate in the manager's chain has the pinned fingerprint {0}")]
struct PinMismatch(Fingerprint);

/// Accepts the server if a CA certificate it presents has the pinned
/// fingerprint and the server certificate verifies against that CA.
#[derive(Debug)]
struct PinVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| Fingerprint::of_der(c) == self.pin) else {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PinMismatch(
                self.pin,
            ))))));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A manager whose certificate did not verify, said so that people know
/// what to check and what to run.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsFailure {
    pub message: String,
    pub hint: Option<String>,
}

/// The certificate error in a request's error chain, if the request failed
/// because the manager's certificate did not verify.
pub fn certificate_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CertificateError> {
    match find_rustls_error(e)? {
        rustls::Error::InvalidCertificate(c) => Some(c),
        _ => None,
    }
}

/// A rustls error in the chain, also inside `io::Error`s (whose `source`
/// skips the error they wrap).
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = e.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
        && let Some(found) = find_rustls_error(inner)
    {
        return Some(found);
    }
    e.source().and_then(find_rustls_error)
}

/// Explains a failed verification of the manager at `url` under `trust`:
/// what was wrong, what the manager presented, and how to pin its CA.
pub async fn explain(url: &Url, trust: &Trust, error: &CertificateError) -> TlsFailure {
    let shown = url.as_str().trim_end_matches('/');
    let reason = match error {
        CertificateError::Other(OtherError(inner)) if inner.downcast_ref::<PinMismatch>().is_some() => {
            inner.to_string()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
            "its certificate is not valid for the name {:?} (a manager with its own CA puts its --advertise names in it)",
            url.host_str().unwrap_or_default()
        ),
        CertificateError::UnknownIssuer => match trust {
            Trust::System => "no public root CA built into drover issued it".into(),
            other => format!("{} did not issue it", other.describe()),
        },
        other => format!("{other:?}"),
    };
    let chain = match presented_chain(url).await {
        Ok(chain) => chain,
        Err(e) => {
            return TlsFailure {
                message: format!("the manager at {shown} failed TLS verification: {reason}"),
                hint: Some(format!("could not read the certificates it presents: {e:#}")),
            };
        }
    };
    let listed: Vec<String> = chain.iter().map(|c| format!("  {}", describe_cert(c))).collect();
    let ca = chain.iter().skip(1).rev().find(|c| is_ca(c)).map(|c| Fingerprint::of_der(c));
    let mut message =
        format!("the manager at {shown} failed TLS verification: {reason}\nit presented:\n{}", listed.join("\n"));
    if let Trust::Pin(fp) = trust
        && ca.is_some_and(|c| c != *fp)
    {
        message.push_str(&format!(
            "\nthe pinned CA is {fp}: if the manager's CA was replaced on purpose, pin the new one"
        ));
    }
    let hint = match ca {
        Some(ca)
            if matches!(error, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) =>
        {
            format!("connect with a name the certificate holds, or add this one to the manager's --advertise (CA {ca})")
        }
        Some(ca) => format!(
            "if {ca} is your manager's CA (drover-manager prints it at start as \"CA sha256:...\"; or run \
             `openssl x509 -in DATA_DIR/ca.pem -noout -fingerprint -sha256` on the manager), pin it:\n  \
             drover login {shown} --ca-pin {ca}\nor pass --ca-pin (DROVER_CA_PIN), or --ca-cert FILE (DROVER_CA_CERT) \
             with the manager's CA certificate"
        ),
        None => "the manager presented no CA certificate to pin: pass --ca-cert FILE (DROVER_CA_CERT) with the CA \
                 that issued its certificate"
            .into(),
    };
    TlsFailure { message, hint: Some(hint) }
}

/// `<subject> (<role>) <fingerprint>` of a certificate.
fn describe_cert(der: &CertificateDer<'_>) -> String {
    let fp = Fingerprint::of_der(der);
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => {
            let role = if is_ca(der) { "CA" } else { "server" };
            format!("{role} {} {fp} valid until {}", c.subject(), c.validity().not_after)
        }
        Err(_) => format!("(unparsable certificate) {fp}"),
    }
}

fn is_ca(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| c.is_ca())
}

/// The certificates the server at `url` presents. The handshake is aborted
/// at verification: nothing is sent to a server this call has not verified.
pub async fn presented_chain(url: &Url) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let host = url.host_str().context("the URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().context("the URL has no port")?;
    let name = ServerName::try_from(host.clone()).map_err(|_| anyhow!("{host:?} is not a valid server name"))?;
    let recorder = Arc::new(Recorder { chain: Mutex::new(Vec::new()), provider: provider() });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.context("connect")?;
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
        anyhow::Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), connect).await.context("no TLS answer within 10 s")??;
    let chain = std::mem::take(&mut *recorder.chain.lock().unwrap_or_else(|e| e.into_inner()));
    if chain.is_empty() {
        bail!("the server presented no certificate");
    }
    Ok(chain)
}

/// Records the presented chain, then refuses it.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) = chain;
        Err(rustls::Error::General("certificates recorded, not trusted".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not trusted".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not trusted".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_in_the_spellings_people_paste() {
        let fp = Fingerprint::of_der(b"x");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64, "{text}");
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(text["sha256:".len()..].to_uppercase().parse::<Fingerprint>().unwrap(), fp);
        let openssl: Vec<String> = hex::encode(fp.0)
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        assert_eq!(format!("SHA256:{}", openssl.join(":")).parse::<Fingerprint>().unwrap(), fp);
        let err = "sha256:abcd".parse::<Fingerprint>().unwrap_err();
        assert!(err.contains("is not a SHA-256 fingerprint"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "hello\n").unwrap();
        let err = format!("{:#}", Trust::ca_cert(&path).unwrap_err());
        assert!(err.ends_with("holds no PEM certificate"), "{err}");
        let err = format!("{:#}", Trust::ca_cert(&dir.path().join("missing.pem")).unwrap_err());
        assert!(err.starts_with("read CA certificate "), "{err}");
    }
}
