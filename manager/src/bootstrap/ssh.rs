//! The SSH side of bootstrap: one authenticated connection per host (russh),
//! host-key verification against a policy, remote commands with their exit
//! status and output, and streamed uploads.
//!
//! Host keys are checked during the key exchange, before any credential is
//! sent: a pinned fingerprint must match exactly; otherwise the manager's
//! known_hosts file decides, and `accept-new` adds a key it has never seen
//! (never one that changed). What happened is kept in [`KeyVerdict`] so the
//! caller can audit an accepted key and name a refused one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::AsyncRead;

use super::Secret;
pub use drover_api::bootstrap::HostKeyPolicy;

/// The outcome of the host key check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Matched the pinned fingerprint.
    Pinned { fingerprint: String },
    /// Found in known_hosts.
    Known { fingerprint: String },
    /// Unknown and accepted under `accept-new`; now in known_hosts.
    AcceptedNew { algorithm: String, fingerprint: String },
    /// Refused, with the reason.
    Refused(String),
}

impl KeyVerdict {
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            KeyVerdict::Pinned { fingerprint }
            | KeyVerdict::Known { fingerprint }
            | KeyVerdict::AcceptedNew { fingerprint, .. } => Some(fingerprint),
            KeyVerdict::Refused(_) => None,
        }
    }
}

/// What the host key check needs to know about one host.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    pub host: String,
    pub port: u16,
    pub policy: HostKeyPolicy,
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub pinned: Option<String>,
    pub known_hosts: PathBuf,
}

/// Serialises known_hosts edits within this process.
static KNOWN_HOSTS_LOCK: Mutex<()> = Mutex::new(());

impl KeyCheck {
    /// Decides on `key`; the error is the reason it is refused.
    pub fn verify(&self, key: &PublicKey) -> KeyVerdict {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if let Some(pinned) = &self.pinned {
            return if normalise_fingerprint(pinned) == fingerprint {
                KeyVerdict::Pinned { fingerprint }
            } else {
                KeyVerdict::Refused(format!(
                    "the host key's fingerprint {fingerprint} does not match the pinned fingerprint {pinned}"
                ))
            };
        }
        let _guard = KNOWN_HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let known = if self.known_hosts.exists() {
            russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
        } else {
            Ok(false)
        };
        match known {
            Ok(true) => KeyVerdict::Known { fingerprint },
            Err(russh::keys::Error::KeyChanged { line }) => KeyVerdict::Refused(format!(
                "REMOTE HOST KEY CHANGED: {fingerprint} differs from the key recorded for {} in {} line {line}; \
                 if the host was reinstalled, remove that line (or pin the new fingerprint)",
                self.host,
                self.known_hosts.display()
            )),
            Err(e) => KeyVerdict::Refused(format!("cannot read {}: {e}", self.known_hosts.display())),
            Ok(false) => match self.policy {
                HostKeyPolicy::KnownHosts => KeyVerdict::Refused(format!(
                    "host key {fingerprint} is not in {}; pin it in host_key_fingerprints (compare with \
                     `ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub` on the host) or use host_key_policy \
                     accept-new",
                    self.known_hosts.display()
                )),
                HostKeyPolicy::AcceptNew => {
                    match russh::keys::known_hosts::learn_known_hosts_path(
                        &self.host,
                        self.port,
                        key,
                        &self.known_hosts,
                    ) {
                        Ok(()) => KeyVerdict::AcceptedNew { algorithm: key.algorithm().to_string(), fingerprint },
                        Err(e) => KeyVerdict::Refused(format!(
                            "could not record the new host key in {}: {e}",
                            self.known_hosts.display()
                        )),
                    }
                }
            },
        }
    }
}

/// `SHA256:abc` and `abc` (base64 without padding) are the same pin.
fn normalise_fingerprint(pin: &str) -> String {
    let pin = pin.trim();
    let body = pin.strip_prefix("SHA256:").unwrap_or(pin);
    format!("SHA256:{}", body.trim_end_matches('='))
}

struct Handler {
    check: KeyCheck,
    verdict: Arc<Mutex<Option<KeyVerdict>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check.verify(key),
            PublicKeyOrCertificate::Certificate(_) => {
                KeyVerdict::Refused("the host presented an SSH certificate; Drover checks plain host keys".into())
            }
        };
        let ok = !matches!(verdict, KeyVerdict::Refused(_));
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        Ok(ok)
    }
}

/// Credentials for one login.
#[derive(Debug)]
pub enum Credentials {
    PrivateKey { key: Arc<russh::keys::PrivateKey> },
    Password(Secret),
}

impl Credentials {
    /// Parses a private key (OpenSSH or PEM), decrypting it with `passphrase`.
    pub fn private_key(pem: &Secret, passphrase: Option<&Secret>) -> Result<Credentials, String> {
        let key = russh::keys::decode_secret_key(pem.expose(), passphrase.map(|p| p.expose())).map_err(|e| {
            if passphrase.is_none() && e.to_string().to_lowercase().contains("encrypt") {
                "the private key is encrypted: give its passphrase".to_owned()
            } else {
                format!("cannot read the private key: {e}")
            }
        })?;
        Ok(Credentials::PrivateKey { key: Arc::new(key) })
    }

    pub fn method(&self) -> &'static str {
        match self {
            Credentials::PrivateKey { .. } => "private_key",
            Credentials::Password(_) => "password",
        }
    }
}

/// Why a connection could not be made; `stage` names the bootstrap step.
#[derive(Debug)]
pub struct SshError {
    pub stage: &'static str,
    pub message: String,
}

impl SshError {
    fn new(stage: &'static str, message: impl Into<String>) -> SshError {
        SshError { stage, message: message.into() }
    }
}

/// An authenticated SSH connection.
pub struct Connection {
    handle: Handle<Handler>,
    pub verdict: KeyVerdict,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("verdict", &self.verdict).finish_non_exhaustive()
    }
}

/// A remote command's outcome.
#[derive(Debug, Default)]
pub struct Output {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// The last lines of stderr (or stdout when stderr is empty), for errors.
    pub fn error_text(&self) -> String {
        let text = if self.stderr.iter().all(u8::is_ascii_whitespace) { &self.stdout } else { &self.stderr };
        let text = String::from_utf8_lossy(text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        match self.status {
            Some(code) => format!("exit status {code}: {tail}"),
            None => format!("no exit status: {tail}"),
        }
    }
}

impl Connection {
    /// Connects, checks the host key and logs in.
    pub async fn open(
        check: KeyCheck,
        user: &str,
        credentials: &Credentials,
        connect_timeout: Duration,
    ) -> Result<Connection, SshError> {
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(120)),
            keepalive_interval: Some(Duration::from_secs(15)),
            nodelay: true,
            ..Default::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let handler = Handler { check: check.clone(), verdict: verdict.clone() };
        let target = (check.host.as_str(), check.port);
        let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target))
            .await
            .map_err(|_| SshError::new("connect", format!("no answer within {} s", connect_timeout.as_secs())))?
            .map_err(|e| SshError::new("connect", e.to_string()))?;
        let connected = tokio::time::timeout(connect_timeout, client::connect_stream(config, tcp, handler)).await;
        let taken = verdict.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(KeyVerdict::Refused(why)) = &taken {
            return Err(SshError::new("check host key", why.clone()));
        }
        let mut handle = match connected {
            Err(_) => {
                return Err(SshError::new(
                    "connect",
                    format!("SSH handshake did not finish within {} s", connect_timeout.as_secs()),
                ));
            }
            Ok(Err(e)) => return Err(SshError::new("connect", format!("SSH handshake failed: {e}"))),
            Ok(Ok(h)) => h,
        };
        let verdict = taken.ok_or_else(|| SshError::new("check host key", "the host's key was never checked"))?;
        let auth = match credentials {
            Credentials::PrivateKey { key } => {
                let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
                handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash)).await
            }
            Credentials::Password(p) => handle.authenticate_password(user, p.expose()).await,
        }
        .map_err(|e| SshError::new("authenticate", e.to_string()))?;
        if !auth.success() {
            let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
            return Err(SshError::new(
                "authenticate",
                format!("the host refused {} login for user {user}", credentials.method().replace('_', " ")),
            ));
        }
        Ok(Connection { handle, verdict })
    }

    /// Runs `command` through the remote user's shell, writing `stdin` (then
    /// EOF) to it, and collects its output (at most 1 MiB of each stream).
    pub async fn run(
        &self,
        command: &str,
        stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
    ) -> Result<Output, String> {
        const MAX: usize = 1 << 20;
        let mut channel = self.handle.channel_open_session().await.map_err(|e| format!("open channel: {e}"))?;
        channel.exec(true, command).await.map_err(|e| format!("exec: {e}"))?;
        if let Some(input) = stdin {
            channel.data(input).await.map_err(|e| format!("send input: {e}"))?;
        }
        channel.eof().await.map_err(|e| format!("send EOF: {e}"))?;
        let mut out = Output::default();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } if out.stdout.len() < MAX => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } if out.stderr.len() < MAX => {
                    out.stderr.extend_from_slice(&data)
                }
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.stderr.extend_from_slice(format!("killed by signal {signal_name:?}").as_bytes())
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "bootstrap finished", "en").await;
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The default known_hosts file of a manager.
pub fn default_known_hosts(data_dir: &Path) -> PathBuf {
    data_dir.join("ssh").join("known_hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        russh::keys::parse_public_key_base64("AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ")
            .expect("key")
    }

    fn check(dir: &Path, policy: HostKeyPolicy, pinned: Option<&str>) -> KeyCheck {
        KeyCheck {
            host: "10.1.2.3".into(),
            port: 22,
            policy,
            pinned: pinned.map(str::to_owned),
            known_hosts: dir.join("known_hosts"),
        }
    }

    #[test]
    fn pinned_fingerprint_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let fp = key().fingerprint(HashAlg::Sha256).to_string();
        assert!(fp.starts_with("SHA256:"));
        let ok = check(dir.path(), HostKeyPolicy::KnownHosts, Some(&fp)).verify(&key());
        assert_eq!(ok, KeyVerdict::Pinned { fingerprint: fp.clone() });
        // Without the prefix, as some tools print it.
        let bare = fp.trim_start_matches("SHA256:").to_owned();
        assert!(matches!(
            check(dir.path(), HostKeyPolicy::KnownHosts, Some(&bare)).verify(&key()),
            KeyVerdict::Pinned { .. }
        ));
        let wrong = check(dir.path(), HostKeyPolicy::AcceptNew, Some("SHA256:AAAA")).verify(&key());
        let KeyVerdict::Refused(why) = wrong else { panic!("expected refusal") };
        assert!(why.contains("does not match the pinned fingerprint SHA256:AAAA"), "{why}");
        // A pin never writes known_hosts.
        assert!(!dir.path().join("known_hosts").exists());
    }

    #[test]
    fn known_hosts_policy_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let v = check(dir.path(), HostKeyPolicy::KnownHosts, None).verify(&key());
        let KeyVerdict::Refused(why) = v else { panic!("expected refusal") };
        assert!(why.contains("is not in") && why.contains("accept-new"), "{why}");
    }

    #[test]
    fn accept_new_records_then_knows_and_refuses_a_changed_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = check(dir.path(), HostKeyPolicy::AcceptNew, None).verify(&key());
        assert!(
            matches!(first, KeyVerdict::AcceptedNew { ref algorithm, .. } if algorithm == "ssh-ed25519"),
            "{first:?}"
        );
        let again = check(dir.path(), HostKeyPolicy::KnownHosts, None).verify(&key());
        assert!(matches!(again, KeyVerdict::Known { .. }), "{again:?}");
        // Another ed25519 key for the same host: a changed key, refused even under accept-new.
        let other = russh::keys::parse_public_key_base64(
            "AAAAC3NzaC1lZDI1NTE5AAAAIA6nHjVrEwxPzvPgjuJSLQjt0Q4RHbTgcZb5RN6mtEyX",
        )
        .unwrap();
        let changed = check(dir.path(), HostKeyPolicy::AcceptNew, None).verify(&other);
        let KeyVerdict::Refused(why) = changed else { panic!("expected refusal") };
        assert!(why.contains("CHANGED"), "{why}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/x-1"), "/tmp/x-1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
