//! Enrollment tokens as a user sees them.
//!
//! A token is `drv1.<id>.<secret>.<ca-fingerprint>`: the id names the token in
//! the manager's store, the secret proves possession (the manager stores only its
//! SHA-256), and the fingerprint is the SHA-256 of the manager's CA certificate
//! (DER), so the agent can authenticate the manager on first contact without
//! trusting it on first use, as kubeadm's discovery token CA hash does. The
//! fingerprint part may be left out when the agent is given `--ca-cert`.

use std::fmt;
use std::str::FromStr;

use crate::tls::Fingerprint;

const PREFIX: &str = "drv1";
/// Length of the token id, in lowercase alphanumerics.
pub const ID_LEN: usize = 8;
/// Length of the token secret, in lowercase alphanumerics.
pub const SECRET_LEN: usize = 32;

/// A parsed enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: Option<Fingerprint>,
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenParseError {
    #[error("enrollment token must look like drv1.<id>.<secret>.<ca-fingerprint>")]
    Shape,
    #[error("enrollment token id must be {ID_LEN} lowercase letters or digits")]
    Id,
    #[error("enrollment token secret must be {SECRET_LEN} lowercase letters or digits")]
    Secret,
    #[error("enrollment token CA fingerprint is not 64 hex digits")]
    Fingerprint,
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl EnrollmentToken {
    /// The part sent to the manager in `EnrollRequest.token`.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Parses the `<id>.<secret>` credential the manager receives.
    pub fn parse_credential(s: &str) -> Result<(String, String), TokenParseError> {
        let (id, secret) = s.split_once('.').ok_or(TokenParseError::Shape)?;
        check_id_secret(id, secret)?;
        Ok((id.to_owned(), secret.to_owned()))
    }
}

fn check_id_secret(id: &str, secret: &str) -> Result<(), TokenParseError> {
    if id.len() != ID_LEN || !id.chars().all(is_token_char) {
        return Err(TokenParseError::Id);
    }
    if secret.len() != SECRET_LEN || !secret.chars().all(is_token_char) {
        return Err(TokenParseError::Secret);
    }
    Ok(())
}

impl FromStr for EnrollmentToken {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let (id, secret, fp) = match parts.as_slice() {
            [PREFIX, id, secret] => (*id, *secret, None),
            [PREFIX, id, secret, fp] => (*id, *secret, Some(*fp)),
            _ => return Err(TokenParseError::Shape),
        };
        check_id_secret(id, secret)?;
        let ca_fingerprint =
            fp.map(|fp| fp.parse::<Fingerprint>().map_err(|_| TokenParseError::Fingerprint)).transpose()?;
        Ok(EnrollmentToken { id: id.to_owned(), secret: secret.to_owned(), ca_fingerprint })
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.id, self.secret)?;
        if let Some(fp) = &self.ca_fingerprint {
            write!(f, ".{}", fp.to_hex())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcd1234";
    const SECRET: &str = "0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn round_trips_with_and_without_fingerprint() {
        let fp = Fingerprint::of_der(b"ca");
        let full = format!("drv1.{ID}.{SECRET}.{}", fp.to_hex());
        let t: EnrollmentToken = full.parse().unwrap();
        assert_eq!(t.id, ID);
        assert_eq!(t.secret, SECRET);
        assert_eq!(t.ca_fingerprint, Some(fp));
        assert_eq!(t.to_string(), full);
        assert_eq!(t.credential(), format!("{ID}.{SECRET}"));

        let short: EnrollmentToken = format!("drv1.{ID}.{SECRET}").parse().unwrap();
        assert_eq!(short.ca_fingerprint, None);
    }

    #[test]
    fn rejects_malformed_tokens() {
        let cases = [
            ("", TokenParseError::Shape),
            ("drv2.abcd1234.x", TokenParseError::Shape),
            (&format!("drv1.ABCD1234.{SECRET}"), TokenParseError::Id),
            (&format!("drv1.abc.{SECRET}"), TokenParseError::Id),
            ("drv1.abcd1234.short", TokenParseError::Secret),
            (&format!("drv1.{ID}.{SECRET}.zz"), TokenParseError::Fingerprint),
            (&format!("drv1.{ID}.{SECRET}.aa.bb"), TokenParseError::Shape),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<EnrollmentToken>().unwrap_err(), want, "{input}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let t: EnrollmentToken = format!("drv1.{ID}.{SECRET}").parse().unwrap();
        assert!(!format!("{t:?}").contains(SECRET));
    }

    #[test]
    fn parses_credentials() {
        let (id, secret) = EnrollmentToken::parse_credential(&format!("{ID}.{SECRET}")).unwrap();
        assert_eq!((id.as_str(), secret.as_str()), (ID, SECRET));
        assert!(EnrollmentToken::parse_credential("nodot").is_err());
    }
}
