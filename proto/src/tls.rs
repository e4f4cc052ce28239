//! Transport security shared by agents (and the load generator): CA
//! fingerprints, the rustls client configuration and a tonic channel that runs
//! TLS itself so it can authenticate the manager by CA fingerprint on first
//! contact.
//!
//! The manager always presents the chain `[server certificate, CA certificate]`.
//! An agent that has the CA certificate (saved after enrollment, or given with
//! `--ca-cert`) verifies the server against it. An agent that only has the
//! fingerprint from its enrollment token accepts the chain only if one of the
//! presented certificates hashes to that fingerprint *and* the server
//! certificate verifies against it (name, validity, signature): no trust on
//! first use.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Fingerprint of the first certificate in a PEM bundle.
    pub fn of_pem(pem: &str) -> Result<Self, TlsError> {
        let certs = parse_certs(pem)?;
        Ok(Self::of_der(&certs[0]))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;

    /// Accepts `<64 hex>` or `sha256:<64 hex>`, any case, with optional colons.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hexpart: String = s.trim().trim_start_matches("sha256:").chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(hexpart.to_ascii_lowercase()).map_err(|_| TlsError::BadFingerprint(s.to_owned()))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| TlsError::BadFingerprint(s.to_owned()))?;
        Ok(Fingerprint(arr))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("not a SHA-256 fingerprint: {0:?}")]
    BadFingerprint(String),
    #[error("no certificate found in PEM data")]
    NoCertificate,
    #[error("no private key found in PEM data")]
    NoKey,
    #[error("invalid PEM data: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid manager address {0:?}: expected https://HOST:PORT")]
    BadManagerUrl(String),
}

/// How the agent authenticates the manager.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// The CA certificate(s), PEM.
    CaPem(String),
    /// Only the CA fingerprint, from an enrollment token.
    Fingerprint(Fingerprint),
}

/// A client certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity { .. }")
    }
}

/// The process-wide rustls crypto provider (ring). Installing it is idempotent.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        other => TlsError::Pem(other.to_string()),
    })
}

/// Builds the rustls client configuration for talking to the manager.
pub fn client_config(trust: &ServerTrust, identity: Option<&ClientIdentity>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match trust {
        ServerTrust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(pem)? {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FingerprintVerifier { fingerprint: *fp, provider })),
    };
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(parse_certs(&id.cert_pem)?, parse_key(&id.key_pem)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Verifies the manager against the CA certificate whose fingerprint the
/// enrollment token carries; the manager sends that CA in its chain.
#[derive(Debug)]
struct FingerprintVerifier {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl FingerprintVerifier {
    fn inner(&self, intermediates: &[CertificateDer<'_>]) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let ca = intermediates.iter().find(|c| Fingerprint::of_der(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General(format!(
                "CA fingerprint mismatch: the manager did not present a CA certificate with fingerprint {}",
                self.fingerprint
            ))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner(intermediates)?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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

/// Host and port parsed from a manager URL such as `https://manager:7182`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerAddr {
    pub host: String,
    pub port: u16,
}

impl FromStr for ManagerAddr {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TlsError::BadManagerUrl(s.to_owned());
        let uri: http::Uri = s.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(ManagerAddr { host, port: uri.port_u16().unwrap_or(7182) })
    }
}

impl fmt::Display for ManagerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

/// Opens a lazily connecting gRPC channel to the manager. TLS is done here
/// (tokio-rustls) rather than by tonic so that the fingerprint verifier and the
/// client certificate are fully under our control.
pub fn channel(addr: &ManagerAddr, config: ClientConfig, connect_timeout: Duration) -> Result<Channel, TlsError> {
    let server_name = ServerName::try_from(addr.host.clone()).map_err(|_| TlsError::BadManagerUrl(addr.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = (addr.host.clone(), addr.port);
    // tonic only sees a plain-text URI: the TLS happens in the connector below.
    let uri = format!("http://{}:{}", bracket(&addr.host), addr.port);
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|_| TlsError::BadManagerUrl(addr.to_string()))?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let svc = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let target = target.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(svc))
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let fp = Fingerprint::of_der(b"x");
        let hex = fp.to_hex();
        assert_eq!(hex.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!("sha256:{hex}").parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(hex.to_uppercase().parse::<Fingerprint>().unwrap(), fp);
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn manager_urls() {
        let a: ManagerAddr = "https://mgr.example:7000".parse().unwrap();
        assert_eq!(a, ManagerAddr { host: "mgr.example".into(), port: 7000 });
        let b: ManagerAddr = "https://10.0.0.1".parse().unwrap();
        assert_eq!(b.port, 7182);
        let c: ManagerAddr = "https://[::1]:7182".parse().unwrap();
        assert_eq!(c.host, "::1");
        assert_eq!(c.to_string(), "https://[::1]:7182");
        assert!("http://mgr:7182".parse::<ManagerAddr>().is_err());
        assert!("mgr:7182".parse::<ManagerAddr>().is_err());
    }
}
