//! The manager's certificate authority: created on first start in the data
//! dir, it issues the manager's server certificate (re-issued on every start
//! so `--advertise` changes take effect) and one client certificate per
//! enrolled host, bound to the host id (see `drover_proto::identity`).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use drover_proto::identity::{CN_PREFIX, URI_PREFIX};
use drover_proto::tls::Fingerprint;
use rand::RngCore;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";

/// Validity of issued host certificates.
pub const HOST_CERT_DAYS: i64 = 5 * 365;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("certificate signing request is not valid PEM/PKCS#10: {0}")]
    BadCsr(String),
    #[error("could not sign certificate: {0}")]
    Sign(String),
}

/// A server certificate issued by the CA: PEM chain `[server, CA]`, its key
/// and the names it is valid for.
pub struct ServerCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub names: Vec<String>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").field("names", &self.names).finish_non_exhaustive()
    }
}

/// A signed host certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub pem: String,
    /// Serial, lowercase hex without leading zeros (as `PeerIdentity::serial`).
    pub serial: String,
}

pub struct Pki {
    ca_pem: String,
    ca_fingerprint: Fingerprint,
    issuer: Certificate,
    issuer_key: KeyPair,
    /// PEM chain `[server, CA]` and key, for the gRPC listener.
    pub server_chain_pem: String,
    pub server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca_fingerprint", &self.ca_fingerprint).finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the CA from `dir`, creating it on first start, and issues a fresh
    /// server certificate for `advertise` (plus localhost and 127.0.0.1).
    pub fn load_or_create(dir: &Path, advertise: &[String]) -> anyhow::Result<Pki> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let (ca_pem, ca_key) = match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let pem = fs::read_to_string(&cert_path).with_context(|| format!("read {}", cert_path.display()))?;
                let key = fs::read_to_string(&key_path).with_context(|| format!("read {}", key_path.display()))?;
                check_private(&key_path)?;
                let key = KeyPair::from_pem(&key).with_context(|| format!("parse {}", key_path.display()))?;
                (pem, key)
            }
            (false, false) => {
                let key = KeyPair::generate().context("generate CA key")?;
                let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
                let mut dn = DistinguishedName::new();
                dn.push(DnType::OrganizationName, "Drover");
                dn.push(DnType::CommonName, format!("Drover CA {}", random_hex(4)));
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages =
                    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
                let now = OffsetDateTime::now_utc();
                params.not_before = now - Duration::hours(1);
                params.not_after = now + Duration::days(20 * 365);
                params.serial_number = Some(random_serial());
                let cert = params.self_signed(&key).context("self-sign CA")?;
                write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
                write_file(&cert_path, cert.pem().as_bytes(), false)?;
                tracing::info!(path = %cert_path.display(), "created certificate authority");
                (cert.pem(), key)
            }
            _ => bail!(
                "{} and {} must both exist or both be absent; restore the missing one from backup \
                 (agents trust this CA, so a new one would orphan them)",
                cert_path.display(),
                key_path.display()
            ),
        };
        let ca_fingerprint = Fingerprint::of_pem(&ca_pem).context("parse CA certificate")?;
        // rcgen needs a Certificate value as issuer: rebuild one from the stored
        // CA's parameters and key. Its DER differs from the stored one, but the
        // subject and key, which is what issuing uses, are the same.
        let issuer = CertificateParams::from_ca_cert_pem(&ca_pem)
            .context("parse CA certificate")?
            .self_signed(&ca_key)
            .context("load CA")?;

        let mut pki = Pki {
            ca_pem,
            ca_fingerprint,
            issuer,
            issuer_key: ca_key,
            server_chain_pem: String::new(),
            server_key_pem: String::new(),
        };
        let server = pki.issue_server_cert(advertise)?;
        write_file(&dir.join(SERVER_KEY), server.key_pem.as_bytes(), true)?;
        write_file(&dir.join(SERVER_CERT), server.chain_pem.as_bytes(), false)?;
        tracing::info!(names = ?server.names, "issued server certificate");
        pki.server_chain_pem = server.chain_pem;
        pki.server_key_pem = server.key_pem;
        Ok(pki)
    }

    /// Issues a server certificate (valid 397 days) for `names` plus
    /// localhost, 127.0.0.1 and ::1: the gRPC listener's, and the HTTPS
    /// listener's when no certificate is given for it.
    pub fn issue_server_cert(&self, names: &[String]) -> anyhow::Result<ServerCert> {
        let server_key = KeyPair::generate().context("generate server key")?;
        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for a in names {
            let a = a.trim();
            if !a.is_empty() && !all.iter().any(|n| n == a) {
                all.push(a.to_owned());
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = all
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(
                    n.clone().try_into().with_context(|| format!("--advertise {n:?} is not a DNS name or IP"))?,
                )),
            })
            .collect::<anyhow::Result<_>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "drover-manager");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(397);
        params.serial_number = Some(random_serial());
        let server =
            params.signed_by(&server_key, &self.issuer, &self.issuer_key).context("issue server certificate")?;
        Ok(ServerCert {
            chain_pem: format!("{}{}", server.pem(), self.ca_pem),
            key_pem: server_key.serialize_pem(),
            names: all,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca_fingerprint
    }

    pub fn ca_path(dir: &Path) -> PathBuf {
        dir.join(CA_CERT)
    }

    /// Signs an agent's CSR as the client certificate of `host_id`. Only the
    /// public key is taken from the CSR; subject, SAN, usages and validity are
    /// the manager's.
    pub fn sign_host_csr(&self, csr_pem: &str, host_id: &str) -> Result<IssuedCert, SignError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| SignError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Drover hosts");
        dn.push(DnType::CommonName, format!("{CN_PREFIX}{host_id}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("{URI_PREFIX}{host_id}").try_into().map_err(|e: rcgen::Error| SignError::Sign(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(HOST_CERT_DAYS);
        let serial = random_serial_bytes();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        csr.params = params;
        let cert = csr.signed_by(&self.issuer, &self.issuer_key).map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(IssuedCert { pem: cert.pem(), serial: serial_hex(&serial) })
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn random_serial_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte, so DER keeps all 16 bytes
    b
}

fn random_serial() -> SerialNumber {
    SerialNumber::from_slice(&random_serial_bytes())
}

fn serial_hex(b: &[u8]) -> String {
    hex::encode(b).trim_start_matches('0').to_owned()
}

fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "private key is readable by others; fixing to 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Writes a file atomically (temp file, fsync, rename); `private` files get 0600.
pub fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no parent")?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(contents).with_context(|| format!("write {}", tmp.display()))?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::identity::peer_identity;

    #[test]
    fn creates_once_then_reloads_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &["mgr.example".into(), "10.1.2.3".into()]).unwrap();
        let b = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(a.ca_fingerprint(), b.ca_fingerprint());
        let mode = fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(dir.path().join(SERVER_KEY)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &[]).unwrap();
        fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let err = Pki::load_or_create(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("must both exist"), "{err}");
    }

    #[test]
    fn signs_host_certificates_bound_to_the_host_id() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(Vec::<String>::new()).unwrap();
        req.distinguished_name.push(DnType::CommonName, "host:evil-chosen-id");
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let issued = pki.sign_host_csr(&csr, "h-123").unwrap();
        let der = drover_proto::tls::parse_certs(&issued.pem).unwrap();
        let id = peer_identity(&der[0]).unwrap();
        assert_eq!(id.host_id, "h-123");
        assert_eq!(id.serial, issued.serial);
    }

    #[test]
    fn rejects_garbage_csr() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert!(matches!(pki.sign_host_csr("not a csr", "h"), Err(SignError::BadCsr(_))));
    }
}
