//! How a host id is bound to its client certificate: the certificate's subject
//! common name is `host:<host id>` and it carries the URI SAN
//! `urn:drover:host:<host id>`. The manager reads the id back from the
//! certificate a session presents and checks the serial against the one it issued.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Common-name prefix of agent client certificates.
pub const CN_PREFIX: &str = "host:";
/// URI SAN prefix of agent client certificates.
pub const URI_PREFIX: &str = "urn:drover:host:";

/// What the manager learns from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub host_id: String,
    /// Certificate serial number, lowercase hex without leading zeros.
    pub serial: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate is not valid DER: {0}")]
    Der(String),
    #[error("client certificate names no Drover host (expected URI SAN {URI_PREFIX}<id>)")]
    NoHost,
}

/// Reads the host id and serial from a client certificate (DER).
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Der(e.to_string()))?;
    let serial = cert.tbs_certificate.raw_serial_as_string().replace(':', "");
    let serial = serial.trim_start_matches('0').to_owned();
    let san = cert.subject_alternative_name().map_err(|e| IdentityError::Der(e.to_string()))?;
    let from_san = san.and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(URI_PREFIX).map(str::to_owned),
            _ => None,
        })
    });
    let host_id = from_san.ok_or(IdentityError::NoHost)?;
    if host_id.is_empty() {
        return Err(IdentityError::NoHost);
    }
    Ok(PeerIdentity { host_id, serial })
}
