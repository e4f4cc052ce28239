//! The agent's error type and the single place that decides which failures are
//! fatal (stop, exit code 2, a person must act) and which are transient (retry
//! with backoff).
//!
//! The manager refuses with gRPC status codes: `PermissionDenied`,
//! `Unauthenticated`, `InvalidArgument` or `FailedPrecondition` on `Enroll` for an
//! expired, used-up, revoked or unknown token, and `PermissionDenied` on `Session`
//! for a decommissioned host or a revoked certificate. A CA fingerprint mismatch
//! during the enrollment handshake surfaces only as text deep in the error chain
//! (rustls has no typed error for it), so [`classify`] looks for it there.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use drover_proto::tls::TlsError;
use tonic::Code;

/// Exit code of the binary for a fatal error.
pub const EXIT_FATAL: u8 = 2;
/// Exit code of the binary for any other error that ends it.
pub const EXIT_OTHER: u8 = 1;

/// Text rustls reports when the manager's chain does not contain the CA
/// certificate named by the enrollment token (see `drover_proto::tls`).
const FINGERPRINT_MISMATCH: &str = "CA fingerprint mismatch";
/// Text rustls reports when a certificate fails verification.
const INVALID_PEER_CERTIFICATE: &str = "invalid peer certificate";

/// Everything that can go wrong in the agent. Callers branch on
/// [`AgentError::is_fatal`]: fatal errors need a person, the others are retried.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The manager refused the enrollment token (expired, used up, revoked, unknown)
    /// or the request; retrying with the same token cannot succeed.
    #[error("enrollment refused: {0}")]
    EnrollmentRefused(String),

    /// The manager did not prove it holds the CA named by the enrollment token.
    #[error("{0}; check that the enrollment token was copied completely and was issued by the manager at --manager")]
    CaFingerprintMismatch(String),

    /// The manager's certificate failed verification against `--ca-cert`.
    #[error("the manager's TLS certificate was rejected: {0}; check --manager and --ca-cert")]
    ServerCertificateRejected(String),

    /// The manager refused the session (decommissioned host, revoked certificate).
    #[error("session refused: {0}")]
    SessionRefused(String),

    /// Neither a CA fingerprint in the token nor `--ca-cert`: the manager cannot be
    /// authenticated on first contact.
    #[error(
        "cannot authenticate the manager: the enrollment token has no CA fingerprint and no CA certificate was given; pass --ca-cert or use a token of the form drv1.<id>.<secret>.<ca-fingerprint>"
    )]
    NoServerTrust,

    /// The manager answered `Enroll` with something this agent cannot use.
    #[error("unusable enrollment response from the manager: {0}")]
    InvalidResponse(String),

    /// A flag, environment variable or input file is wrong.
    #[error("{0}")]
    Config(String),

    /// The identity saved in the data directory cannot be used.
    #[error(
        "saved identity in {} is unusable: {reason}; clear the data dir and enroll again with a new token",
        dir.display()
    )]
    BadIdentity { dir: PathBuf, reason: String },

    /// A file or directory of the agent could not be read or written.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The TLS client configuration could not be built from the identity or CA.
    #[error("tls setup failed: {0}")]
    Tls(#[from] TlsError),

    /// The key pair or certificate signing request could not be generated.
    #[error("could not create the certificate signing request: {0}")]
    Csr(String),

    /// The manager could not be reached (connection refused, DNS, timeout). Retried.
    #[error("manager unavailable: {0}")]
    Unavailable(String),

    /// An open exchange with the manager broke off (stream reset, silence,
    /// unexpected status). Retried.
    #[error("{0}")]
    Disconnected(String),
}

impl AgentError {
    /// Whether retrying cannot help: the agent must stop and a person must act.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, AgentError::Unavailable(_) | AgentError::Disconnected(_))
    }

    /// The process exit code for this error: [`EXIT_FATAL`] (2) for fatal errors.
    pub fn exit_code(&self) -> u8 {
        if self.is_fatal() { EXIT_FATAL } else { EXIT_OTHER }
    }

    /// An [`AgentError::Io`] for `action` (a verb phrase) on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AgentError::Io { action, path: path.into(), source }
    }
}

/// Which call to the manager failed; the same status code means different things
/// on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    Enroll,
    Session,
}

/// Turns a gRPC status from the manager (or from the transport underneath) into
/// an [`AgentError`], fatal or transient. This is the only place that decides.
pub fn classify(rpc: Rpc, status: &tonic::Status) -> AgentError {
    let parts = chain_parts(status);
    if rpc == Rpc::Enroll {
        if let Some(tls) = find_in(&parts, FINGERPRINT_MISMATCH) {
            return AgentError::CaFingerprintMismatch(tls);
        }
        if let Some(tls) = find_in(&parts, INVALID_PEER_CERTIFICATE) {
            return AgentError::ServerCertificateRejected(tls);
        }
    }
    let chain = join_parts(parts);
    match (rpc, status.code()) {
        (
            Rpc::Enroll,
            Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument | Code::FailedPrecondition,
        ) => AgentError::EnrollmentRefused(manager_reason(status.message(), "enrollment refused:")),
        (Rpc::Session, Code::PermissionDenied) => {
            AgentError::SessionRefused(manager_reason(status.message(), "session refused:"))
        }
        (_, Code::Unavailable) => AgentError::Unavailable(chain),
        (_, Code::DeadlineExceeded) => AgentError::Unavailable(format!("timed out: {chain}")),
        (_, code) => AgentError::Disconnected(format!("{}: {chain}", code_name(code))),
    }
}

/// The manager's message without a prefix we are about to add ourselves.
fn manager_reason(message: &str, prefix: &str) -> String {
    let reason = message.trim();
    let reason = reason.strip_prefix(prefix).map(str::trim_start).unwrap_or(reason);
    if reason.is_empty() { "the manager gave no reason".to_owned() } else { reason.to_owned() }
}

/// The part of the error chain that mentions `marker`, from `marker` on (rustls
/// prefixes its own words, e.g. "unexpected error: ").
fn find_in(parts: &[String], marker: &str) -> Option<String> {
    parts.iter().find_map(|p| p.find(marker).map(|at| p[at..].to_owned()))
}

/// The status message followed by every distinct message in its source chain,
/// so that causes such as "connection refused" or a rustls error appear in logs
/// and can be recognised.
fn chain_parts(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = if let Some(status) = e.downcast_ref::<tonic::Status>() {
            status.message().to_owned()
        } else {
            e.to_string()
        };
        let text = text.trim().to_owned();
        // Wrappers often repeat their cause's text; keep each piece once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts
}

fn join_parts(parts: Vec<String>) -> String {
    if parts.is_empty() { "no details".to_owned() } else { parts.join(": ") }
}

fn code_name(code: Code) -> String {
    // `Code`'s Display is a sentence ("Some requested entity was not found");
    // its Debug is the short name operators search for.
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with a source, as hyper and tonic build them.
    #[derive(Debug)]
    struct Wrapped {
        text: &'static str,
        source: Option<Box<dyn StdError + Send + Sync>>,
    }

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.text)
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
        }
    }

    /// A transport failure the way tonic's channel reports a failed connect:
    /// `Unavailable` with a terse message, the real cause (an `io::Error`
    /// wrapping a rustls error, say) nested in the source chain.
    fn transport_failure(cause: &'static str) -> tonic::Status {
        let connect = Wrapped {
            text: "client error (Connect)",
            source: Some(Box::new(io::Error::new(io::ErrorKind::InvalidData, cause))),
        };
        let transport = Wrapped { text: "transport error", source: Some(Box::new(connect)) };
        let mut status = tonic::Status::unavailable("transport error");
        status.set_source(std::sync::Arc::new(transport));
        status
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        EnrollmentRefused(&'static str),
        Mismatch,
        CertRejected,
        SessionRefused(&'static str),
        Unavailable,
        Disconnected,
    }

    fn kind(err: &AgentError) -> Want {
        match err {
            AgentError::EnrollmentRefused(_) => Want::EnrollmentRefused(""),
            AgentError::CaFingerprintMismatch(_) => Want::Mismatch,
            AgentError::ServerCertificateRejected(_) => Want::CertRejected,
            AgentError::SessionRefused(_) => Want::SessionRefused(""),
            AgentError::Unavailable(_) => Want::Unavailable,
            AgentError::Disconnected(_) => Want::Disconnected,
            other => panic!("classify returned an unexpected variant: {other:?}"),
        }
    }

    #[test]
    fn classification_table() {
        let mismatch = "unexpected error: CA fingerprint mismatch: the manager did not present a CA certificate with fingerprint sha256:00";
        let cases: Vec<(Rpc, tonic::Status, Want, bool)> = vec![
            (
                Rpc::Enroll,
                tonic::Status::permission_denied(
                    "enrollment refused: enrollment token expired at 2024-01-01T00:00:00Z",
                ),
                Want::EnrollmentRefused("enrollment refused: enrollment token expired at 2024-01-01T00:00:00Z"),
                true,
            ),
            (
                Rpc::Enroll,
                tonic::Status::unauthenticated("unknown enrollment token"),
                Want::EnrollmentRefused("enrollment refused: unknown enrollment token"),
                true,
            ),
            (
                Rpc::Enroll,
                tonic::Status::invalid_argument("enrollment refused: invalid label key \"-x\""),
                Want::EnrollmentRefused("enrollment refused: invalid label key \"-x\""),
                true,
            ),
            (
                Rpc::Enroll,
                tonic::Status::failed_precondition("enrollment token used up"),
                Want::EnrollmentRefused("enrollment refused: enrollment token used up"),
                true,
            ),
            (
                Rpc::Enroll,
                tonic::Status::permission_denied(""),
                Want::EnrollmentRefused("enrollment refused: the manager gave no reason"),
                true,
            ),
            (Rpc::Enroll, transport_failure(mismatch), Want::Mismatch, true),
            (Rpc::Enroll, transport_failure("invalid peer certificate: UnknownIssuer"), Want::CertRejected, true),
            (Rpc::Enroll, tonic::Status::unavailable("connection refused"), Want::Unavailable, false),
            (Rpc::Enroll, transport_failure("Connection refused (os error 111)"), Want::Unavailable, false),
            (Rpc::Enroll, tonic::Status::deadline_exceeded("timeout"), Want::Unavailable, false),
            (Rpc::Enroll, tonic::Status::internal("h2 protocol error"), Want::Disconnected, false),
            (Rpc::Enroll, tonic::Status::unknown("stream reset"), Want::Disconnected, false),
            (
                Rpc::Session,
                tonic::Status::permission_denied(
                    "host h-1 was decommissioned; clear the data dir and enroll again with a new token",
                ),
                Want::SessionRefused(
                    "session refused: host h-1 was decommissioned; clear the data dir and enroll again with a new token",
                ),
                true,
            ),
            (
                Rpc::Session,
                tonic::Status::permission_denied("session refused: certificate revoked"),
                Want::SessionRefused("session refused: certificate revoked"),
                true,
            ),
            // Codes that are fatal on Enroll are transient on Session, and back.
            (Rpc::Session, tonic::Status::unauthenticated("no client certificate"), Want::Disconnected, false),
            (Rpc::Session, tonic::Status::failed_precondition("first message"), Want::Disconnected, false),
            (Rpc::Session, tonic::Status::aborted("session superseded"), Want::Disconnected, false),
            (Rpc::Session, tonic::Status::unavailable("manager is shutting down"), Want::Unavailable, false),
            (Rpc::Session, tonic::Status::cancelled("timeout expired"), Want::Disconnected, false),
            (Rpc::Session, transport_failure(mismatch), Want::Unavailable, false),
            (Rpc::Session, transport_failure("invalid peer certificate: UnknownIssuer"), Want::Unavailable, false),
        ];
        for (rpc, status, want, fatal) in cases {
            let got = classify(rpc, &status);
            let label = format!("{rpc:?} {status:?}");
            match want {
                Want::EnrollmentRefused(text) | Want::SessionRefused(text) => {
                    assert_eq!(got.to_string(), text, "{label}");
                }
                _ => {}
            }
            let normalised = match want {
                Want::EnrollmentRefused(_) => Want::EnrollmentRefused(""),
                Want::SessionRefused(_) => Want::SessionRefused(""),
                other => other,
            };
            assert_eq!(kind(&got), normalised, "{label}");
            assert_eq!(got.is_fatal(), fatal, "{label}");
            assert_eq!(got.exit_code(), if fatal { 2 } else { 1 }, "{label}");
        }
    }

    #[test]
    fn fingerprint_mismatch_message_names_the_problem_and_the_fix() {
        let status = transport_failure(
            "unexpected error: CA fingerprint mismatch: the manager did not present a CA certificate with fingerprint sha256:ab",
        );
        let msg = classify(Rpc::Enroll, &status).to_string();
        assert!(msg.starts_with("CA fingerprint mismatch: the manager did not present"), "{msg}");
        assert!(msg.contains("check that the enrollment token"), "{msg}");
        assert!(!msg.contains("transport error"), "only the TLS cause: {msg}");
    }

    #[test]
    fn transient_errors_keep_the_cause_from_the_chain() {
        let status = transport_failure("Connection refused (os error 111)");
        let msg = classify(Rpc::Session, &status).to_string();
        assert!(msg.contains("Connection refused"), "{msg}");
    }

    #[test]
    fn other_errors_are_fatal() {
        let errors = [
            AgentError::NoServerTrust,
            AgentError::Config("x".into()),
            AgentError::InvalidResponse("x".into()),
            AgentError::Csr("x".into()),
            AgentError::BadIdentity { dir: "/d".into(), reason: "x".into() },
            AgentError::io("read", "/d/key.pem", io::Error::other("x")),
        ];
        for e in errors {
            assert!(e.is_fatal(), "{e}");
            assert_eq!(e.exit_code(), EXIT_FATAL);
        }
    }
}
