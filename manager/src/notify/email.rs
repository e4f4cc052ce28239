//! The e-mail receiver: one plain-text message per group notification over
//! SMTP (lettre, tokio, rustls), with STARTTLS (required or opportunistic),
//! implicit TLS or none, and optional SMTP authentication.
//!
//! Transient failures (connection errors, timeouts, 4xx replies) are
//! retried; permanent ones (5xx replies, a refused TLS handshake) are not.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::receiver::{AttemptError, Notification, RetryPolicy, check_max_attempts};
use super::route::opt_duration;
use super::{AlertState, NotifyError};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS; fails if the server cannot.
    #[default]
    Starttls,
    /// STARTTLS when the server offers it, else plain text.
    Opportunistic,
    /// Plain text only (a trusted local relay).
    None,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (also the name its certificate must have).
    pub host: String,
    /// Default 465 with implicit TLS, 587 with STARTTLS, else 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    /// A PEM file of extra CA certificates the server's certificate may
    /// chain to (the Mozilla roots are always trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `Drover <drover@example.org>` or a bare address.
    pub from: String,
    pub to: Vec<String>,
    /// The name given in EHLO (default: this host's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

fn config_err(path: &str, field: &str, msg: impl std::fmt::Display) -> NotifyError {
    NotifyError::Config(format!("{path}.{field}: {msg}"))
}

impl EmailConfig {
    pub(super) fn validate(&self, path: &str) -> Result<(), NotifyError> {
        if self.host.trim().is_empty() {
            return Err(config_err(path, "host", "the SMTP server's host name is missing"));
        }
        if self.port == Some(0) {
            return Err(config_err(path, "port", "must be 1 to 65535"));
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| config_err(path, "from", format!("invalid address {:?}: {e}", self.from)))?;
        if self.to.is_empty() {
            return Err(config_err(path, "to", "needs at least one address"));
        }
        for (i, to) in self.to.iter().enumerate() {
            to.parse::<Mailbox>()
                .map_err(|e| config_err(path, &format!("to[{i}]"), format!("invalid address {to:?}: {e}")))?;
        }
        match (&self.username, &self.password) {
            (Some(_), None) => return Err(config_err(path, "password", "a username needs a password")),
            (None, Some(_)) => return Err(config_err(path, "username", "a password needs a username")),
            _ => {}
        }
        check_max_attempts(path, self.max_attempts)
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 465,
            TlsMode::Starttls => 587,
            TlsMode::Opportunistic | TlsMode::None => 25,
        })
    }
}

pub struct EmailIntegration {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    pub(super) retry: RetryPolicy,
}

impl std::fmt::Debug for EmailIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailIntegration").field("from", &self.from).field("to", &self.to).finish_non_exhaustive()
    }
}

impl EmailIntegration {
    pub fn new(config: &EmailConfig, path: &str) -> Result<EmailIntegration, NotifyError> {
        config.validate(path)?;
        let tls = if config.tls == TlsMode::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(file) = &config.ca_file {
                let pem = std::fs::read(file)
                    .map_err(|e| config_err(path, "ca_file", format!("cannot read {}: {e}", file.display())))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    config_err(path, "ca_file", format!("{} is not a PEM certificate: {e}", file.display()))
                })?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| config_err(path, "tls", e))?;
            match config.tls {
                TlsMode::Starttls => Tls::Required(params),
                TlsMode::Opportunistic => Tls::Opportunistic(params),
                _ => Tls::Wrapper(params),
            }
        };
        let retry = RetryPolicy::new(config.max_attempts, config.timeout, config.backoff);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
            .port(config.port())
            .tls(tls)
            .timeout(Some(retry.timeout));
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        if let Some(name) = &config.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        let from = config.from.parse().map_err(|e| config_err(path, "from", e))?;
        let to =
            config.to.iter().map(|t| t.parse()).collect::<Result<_, _>>().map_err(|e| config_err(path, "to", e))?;
        Ok(EmailIntegration { transport: builder.build(), from, to, retry })
    }

    pub(super) async fn send(&self, n: &Notification) -> Result<(), AttemptError> {
        let mut msg = Message::builder().from(self.from.clone()).subject(subject(n)).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            msg = msg.to(to.clone());
        }
        let msg = msg.body(body(n)).map_err(|e| AttemptError::fatal(format!("build the message: {e}")))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = describe(&e);
                if e.is_permanent() || e.is_tls() || e.is_client() {
                    Err(AttemptError::fatal(message))
                } else {
                    Err(AttemptError::retry(message))
                }
            }
        }
    }
}

fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        source = c.source();
    }
    s
}

/// `[FIRING:2] alertname=HostLost cluster=prod`, as Alertmanager's default
/// subject.
pub fn subject(n: &Notification) -> String {
    let status = n.status();
    let labels = if n.group_labels.is_empty() { n.common_labels() } else { n.group_labels.clone() };
    let labels = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    format!("[{}:{}] {labels}", status.as_str().to_uppercase(), n.count(status))
}

/// Every alert with its labels and annotations, firing ones first.
pub fn body(n: &Notification) -> String {
    let mut s = String::new();
    let firing = n.count(AlertState::Firing);
    let resolved = n.count(AlertState::Resolved);
    let _ = writeln!(s, "{firing} firing, {resolved} resolved (receiver {}, group {})", n.receiver, n.group_key);
    for state in [AlertState::Firing, AlertState::Resolved] {
        let alerts: Vec<_> = n.alerts.iter().filter(|a| a.state == state).collect();
        if alerts.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{}", state.as_str().to_uppercase());
        for a in alerts {
            let since = a.starts_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            match a.ends_at.filter(|_| state == AlertState::Resolved) {
                Some(end) => {
                    let end = end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let _ = writeln!(s, "- {} (from {since} to {end})", a.name());
                }
                None => {
                    let _ = writeln!(s, "- {} (since {since})", a.name());
                }
            }
            let labels = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            let _ = writeln!(s, "  labels: {labels}");
            for (k, v) in &a.annotations {
                let _ = writeln!(s, "  {k}: {v}");
            }
            if !a.generator_url.is_empty() {
                let _ = writeln!(s, "  source: {}", a.generator_url);
            }
        }
    }
    s
}
