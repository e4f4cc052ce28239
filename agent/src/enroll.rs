//! Enrollment: the one-time exchange of an enrollment token and a certificate
//! signing request for a client certificate bound to a new host id, and the
//! [`Identity`] that results and is kept in the data directory.
//!
//! The private key never leaves the host: the agent generates it (ECDSA P-256)
//! and sends only the CSR. The manager is authenticated on this first contact by
//! the CA fingerprint in the token (or the `--ca-cert` file), never trusted on
//! first use, and the CA it returns must hash to that fingerprint.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use drover_proto::identity::peer_identity;
use drover_proto::tls::{self, ClientIdentity, Fingerprint, ManagerAddr, ServerTrust};
use drover_proto::token::EnrollmentToken;
use drover_proto::v1;
use drover_proto::v1::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::datadir::{self, CA_FILE, CERT_FILE, HOST_ID_FILE, KEY_FILE};
use crate::error::{AgentError, Rpc, classify};
use crate::facts::HostFacts;
use crate::wire;

/// How long to wait for a TCP and TLS connection to the manager.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the manager's answer to `Enroll`.
pub const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Who this agent is to the manager: its host id, client certificate and key, and
/// the CA it trusts. Saved in the data directory by [`Identity::save`].
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub host_id: String,
    /// Private key of the client certificate, PKCS#8 PEM.
    pub key_pem: String,
    /// Client certificate issued by the manager's CA, PEM.
    pub cert_pem: String,
    /// The manager's CA certificate, PEM: the only CA trusted for sessions.
    pub ca_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("host_id", &self.host_id)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the identity saved in `dir`. `Ok(None)` when there is none: `host-id`
    /// is written last, so a crash during [`Identity::save`] also reads as none.
    /// An identity that is present but unusable is an error: enrolling again would
    /// silently create a second host.
    pub fn load(dir: &Path) -> Result<Option<Identity>, AgentError> {
        let Some(host_id) = datadir::read_optional(&dir.join(HOST_ID_FILE))? else {
            return Ok(None);
        };
        let bad = |reason: String| AgentError::BadIdentity { dir: dir.to_owned(), reason };
        let read = |file: &str| -> Result<String, AgentError> {
            datadir::read_optional(&dir.join(file))?
                .ok_or_else(|| bad(format!("{HOST_ID_FILE} is present but {file} is missing")))
        };
        let identity = Identity {
            host_id: host_id.trim().to_owned(),
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
        };
        identity.validate().map_err(bad)?;
        Ok(Some(identity))
    }

    /// Saves the identity in `dir` (created 0700 if missing), each file 0600 and
    /// replaced atomically; `host-id` last.
    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        datadir::ensure_dir(dir)?;
        datadir::write_atomic(&dir.join(KEY_FILE), self.key_pem.as_bytes())?;
        datadir::write_atomic(&dir.join(CERT_FILE), self.cert_pem.as_bytes())?;
        datadir::write_atomic(&dir.join(CA_FILE), self.ca_pem.as_bytes())?;
        datadir::write_atomic(&dir.join(HOST_ID_FILE), format!("{}\n", self.host_id).as_bytes())
    }

    /// The client identity for TLS.
    pub fn client_identity(&self) -> ClientIdentity {
        ClientIdentity { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone() }
    }

    /// Checks that the pieces parse, fit together in a TLS configuration, and that
    /// the certificate names this host id.
    fn validate(&self) -> Result<(), String> {
        if self.host_id.is_empty() {
            return Err(format!("{HOST_ID_FILE} is empty"));
        }
        tls::client_config(&ServerTrust::CaPem(self.ca_pem.clone()), Some(&self.client_identity()))
            .map_err(|e| e.to_string())?;
        let certs = tls::parse_certs(&self.cert_pem).map_err(|e| format!("{CERT_FILE}: {e}"))?;
        let named = peer_identity(&certs[0]).map_err(|e| format!("{CERT_FILE}: {e}"))?;
        if named.host_id != self.host_id {
            return Err(format!(
                "{CERT_FILE} was issued to host {} but {HOST_ID_FILE} says {}",
                named.host_id, self.host_id
            ));
        }
        Ok(())
    }
}

/// Enrolls this host with the manager: generates a key pair, sends a CSR with the
/// token's credential, the facts and the requested labels, and checks what comes
/// back. One attempt; the caller retries transient errors
/// ([`AgentError::is_fatal`] is false) and must save the identity, since the
/// token is usually spent once this returns `Ok`.
///
/// The manager is authenticated by the token's CA fingerprint, or by `ca_pem`
/// (the `--ca-cert` file) when the token has none; with both, they must agree.
pub async fn enroll(
    manager: &ManagerAddr,
    token: &EnrollmentToken,
    ca_pem: Option<&str>,
    facts: &HostFacts,
    labels: &BTreeMap<String, String>,
) -> Result<Identity, AgentError> {
    let trust = server_trust(token, ca_pem)?;
    let key = KeyPair::generate().map_err(|e| AgentError::Csr(e.to_string()))?;
    let csr_pem = certificate_request(&key, &facts.hostname)?;
    let channel = tls::channel(manager, tls::client_config(&trust, None)?, CONNECT_TIMEOUT)?;
    let mut client = AgentServiceClient::new(channel);
    let request = v1::EnrollRequest {
        token: token.credential(),
        csr_pem,
        facts: Some(wire::facts(facts)),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        agent_version: crate::VERSION.to_owned(),
    };
    let response = match tokio::time::timeout(ENROLL_TIMEOUT, client.enroll(request)).await {
        Err(_) => {
            return Err(AgentError::Unavailable(format!(
                "no answer to the enrollment request from {manager} within {}",
                humantime::format_duration(ENROLL_TIMEOUT)
            )));
        }
        Ok(Err(status)) => return Err(classify(Rpc::Enroll, &status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    check_response(response, token, ca_pem, key.serialize_pem())
}

/// How to authenticate the manager before we have its CA certificate.
fn server_trust(token: &EnrollmentToken, ca_pem: Option<&str>) -> Result<ServerTrust, AgentError> {
    let ca_certs = ca_pem
        .map(|pem| {
            tls::parse_certs(pem)
                .map_err(|e| AgentError::Config(format!("the --ca-cert file holds no usable CA certificate: {e}")))
        })
        .transpose()?;
    match (token.ca_fingerprint, ca_pem, ca_certs) {
        (Some(fp), _, Some(certs)) => {
            if !certs.iter().any(|c| Fingerprint::of_der(c) == fp) {
                return Err(AgentError::CaFingerprintMismatch(format!(
                    "CA fingerprint mismatch: the --ca-cert file does not contain the CA certificate {fp} named by the enrollment token"
                )));
            }
            Ok(ServerTrust::Fingerprint(fp))
        }
        (Some(fp), _, None) => Ok(ServerTrust::Fingerprint(fp)),
        (None, Some(pem), Some(_)) => Ok(ServerTrust::CaPem(pem.to_owned())),
        (None, _, _) => Err(AgentError::NoServerTrust),
    }
}

/// A PEM CSR for `key`. The manager takes only the public key from it and sets
/// subject and SAN itself; the hostname in the subject helps people reading logs.
fn certificate_request(key: &KeyPair, hostname: &str) -> Result<String, AgentError> {
    let csr_err = |e: rcgen::Error| AgentError::Csr(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(csr_err)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, if hostname.is_empty() { "drover-agent" } else { hostname });
    params.distinguished_name = name;
    params.serialize_request(key).and_then(|csr| csr.pem()).map_err(csr_err)
}

/// Checks the manager's answer and builds the identity from it.
fn check_response(
    response: v1::EnrollResponse,
    token: &EnrollmentToken,
    ca_pem: Option<&str>,
    key_pem: String,
) -> Result<Identity, AgentError> {
    let invalid = AgentError::InvalidResponse;
    let host_id = response.host_id.trim().to_owned();
    if host_id.is_empty() {
        return Err(invalid("no host id".into()));
    }
    let returned_ca =
        Fingerprint::of_pem(&response.ca_certificate_pem).map_err(|e| invalid(format!("CA certificate: {e}")))?;
    if let Some(expected) = token.ca_fingerprint {
        if returned_ca != expected {
            return Err(AgentError::CaFingerprintMismatch(format!(
                "CA fingerprint mismatch: the manager returned CA certificate {returned_ca} but the enrollment token names {expected}"
            )));
        }
    } else if let Some(pem) = ca_pem {
        let trusted = tls::parse_certs(pem)
            .map(|certs| certs.iter().any(|c| Fingerprint::of_der(c) == returned_ca))
            .unwrap_or(false);
        if !trusted {
            return Err(AgentError::ServerCertificateRejected(format!(
                "the manager returned CA certificate {returned_ca}, which is not in the --ca-cert file"
            )));
        }
    }
    let certs = tls::parse_certs(&response.certificate_pem).map_err(|e| invalid(format!("client certificate: {e}")))?;
    let named = peer_identity(&certs[0]).map_err(|e| invalid(format!("client certificate: {e}")))?;
    if named.host_id != host_id {
        return Err(invalid(format!(
            "the client certificate names host {} but the response says {host_id}",
            named.host_id
        )));
    }
    let identity =
        Identity { host_id, key_pem, cert_pem: response.certificate_pem, ca_pem: response.ca_certificate_pem };
    identity.validate().map_err(invalid)?;
    Ok(identity)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    use rcgen::{BasicConstraints, CertifiedKey, IsCa, SanType};

    /// A CA and a client certificate for `host_id` shaped as the manager issues
    /// them (CN `host:<id>`, URI SAN `urn:drover:host:<id>`).
    pub(crate) fn issue(host_id: &str) -> (Identity, CertifiedKey) {
        let ca = test_ca();
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("host:{host_id}"));
        params.subject_alt_names = vec![SanType::URI(format!("urn:drover:host:{host_id}").try_into().expect("uri"))];
        let cert = params.signed_by(&key, &ca.cert, &ca.key_pair).expect("sign");
        let identity = Identity {
            host_id: host_id.to_owned(),
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            ca_pem: ca.cert.pem(),
        };
        (identity, ca)
    }

    pub(crate) fn test_ca() -> CertifiedKey {
        let key_pair = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key_pair).expect("self-sign");
        CertifiedKey { cert, key_pair }
    }

    fn token(fp: Option<Fingerprint>) -> EnrollmentToken {
        EnrollmentToken { id: "abcd1234".into(), secret: "0123456789abcdefghijklmnopqrstuv".into(), ca_fingerprint: fp }
    }

    #[test]
    fn identity_round_trips_with_private_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        assert_eq!(Identity::load(&dir).ok(), Some(None), "a missing dir means not enrolled");
        let (identity, _) = issue("h-1");
        identity.save(&dir).expect("save");
        let loaded = Identity::load(&dir).expect("load").expect("present");
        assert_eq!(loaded, identity);
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&dir), 0o700);
        for file in [KEY_FILE, CERT_FILE, CA_FILE, HOST_ID_FILE] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        assert!(!format!("{identity:?}").contains("PRIVATE KEY"), "Debug must hide the key");
    }

    #[test]
    fn half_saved_identity_reads_as_none_and_broken_ones_are_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (identity, _) = issue("h-1");
        identity.save(tmp.path()).expect("save");

        std::fs::remove_file(tmp.path().join(HOST_ID_FILE)).expect("rm");
        assert_eq!(Identity::load(tmp.path()).ok(), Some(None));

        identity.save(tmp.path()).expect("save");
        std::fs::remove_file(tmp.path().join(KEY_FILE)).expect("rm");
        let err = Identity::load(tmp.path()).expect_err("missing key");
        assert!(err.to_string().contains("key.pem is missing"), "{err}");
        assert!(err.to_string().contains("enroll again"), "{err}");

        identity.save(tmp.path()).expect("save");
        std::fs::write(tmp.path().join(HOST_ID_FILE), "h-2\n").expect("write");
        let err = Identity::load(tmp.path()).expect_err("wrong host");
        assert!(err.to_string().contains("issued to host h-1"), "{err}");

        identity.save(tmp.path()).expect("save");
        std::fs::write(tmp.path().join(CERT_FILE), "garbage").expect("write");
        assert!(Identity::load(tmp.path()).is_err());
    }

    #[test]
    fn server_trust_choices() {
        let ca = test_ca();
        let ca_pem = ca.cert.pem();
        let fp = Fingerprint::of_der(ca.cert.der());
        let other = Fingerprint::of_der(b"other");

        assert!(matches!(server_trust(&token(Some(fp)), None), Ok(ServerTrust::Fingerprint(f)) if f == fp));
        assert!(matches!(server_trust(&token(None), Some(&ca_pem)), Ok(ServerTrust::CaPem(_))));
        assert!(matches!(server_trust(&token(Some(fp)), Some(&ca_pem)), Ok(ServerTrust::Fingerprint(_))));
        assert!(matches!(server_trust(&token(None), None), Err(AgentError::NoServerTrust)));
        let err = server_trust(&token(Some(other)), Some(&ca_pem)).expect_err("disagreeing CA");
        assert!(err.to_string().contains("CA fingerprint mismatch"), "{err}");
        assert!(matches!(server_trust(&token(None), Some("junk")), Err(AgentError::Config(_))));
    }

    #[test]
    fn csr_is_pem() {
        let key = KeyPair::generate().expect("key");
        let pem = certificate_request(&key, "h1").expect("csr");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{pem}");
        assert!(certificate_request(&key, "").is_ok());
    }

    #[test]
    fn responses_are_checked() {
        let (identity, ca) = issue("h-1");
        let fp = Fingerprint::of_der(ca.cert.der());
        let response = |host: &str, ca_pem: &str| v1::EnrollResponse {
            host_id: host.into(),
            certificate_pem: identity.cert_pem.clone(),
            ca_certificate_pem: ca_pem.into(),
        };
        let key = identity.key_pem.clone();

        let ok = check_response(response("h-1", &identity.ca_pem), &token(Some(fp)), None, key.clone());
        assert_eq!(ok.ok(), Some(identity.clone()));
        let ok = check_response(response("h-1", &identity.ca_pem), &token(None), Some(&identity.ca_pem), key.clone());
        assert!(ok.is_ok());

        let other_ca = test_ca().cert.pem();
        let err = check_response(response("h-1", &other_ca), &token(Some(fp)), None, key.clone()).expect_err("ca");
        assert!(matches!(err, AgentError::CaFingerprintMismatch(_)), "{err}");
        assert!(err.is_fatal());
        let err = check_response(response("h-1", &other_ca), &token(None), Some(&identity.ca_pem), key.clone());
        assert!(matches!(err, Err(AgentError::ServerCertificateRejected(_))), "{err:?}");
        let err = check_response(response("h-2", &identity.ca_pem), &token(Some(fp)), None, key.clone());
        assert!(matches!(err, Err(AgentError::InvalidResponse(_))), "{err:?}");
        let err = check_response(response("", &identity.ca_pem), &token(Some(fp)), None, key.clone());
        assert!(matches!(err, Err(AgentError::InvalidResponse(_))), "{err:?}");
        let wrong_key = KeyPair::generate().expect("key").serialize_pem();
        let err = check_response(response("h-1", &identity.ca_pem), &token(Some(fp)), None, wrong_key);
        assert!(err.is_err(), "a certificate for another key must be refused: {err:?}");
    }
}
