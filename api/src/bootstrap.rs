//! SSH bootstrap requests: the machines, how to log in, how to check their
//! host keys. Credentials are [`Secret`]s on both sides: zeroed when dropped,
//! never printed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::model::Labels;

/// A credential: zeroed when dropped, never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to log in: exactly one of `private_key` and `password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    /// A private key in OpenSSH or PEM format (the file's content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub private_key: Option<Secret>,
    /// The private key's passphrase, if it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub passphrase: Option<Secret>,
    /// The login password (also given to `sudo -S` when `sudo` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret>,
}

fn default_port() -> u16 {
    22
}

fn default_user() -> String {
    "root".into()
}

/// `POST /api/v1/hosts/bootstrap`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    /// Host names or addresses, optionally with `:PORT` (`[v6]:PORT`).
    pub addresses: Vec<String>,
    /// SSH port for addresses without one (default 22).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Login user (default `root`).
    #[serde(default = "default_user")]
    pub user: String,
    pub auth: AuthRequest,
    /// Use sudo for the install (default: when the user is not root).
    #[serde(default)]
    pub sudo: Option<bool>,
    /// Labels the new hosts get (through their enrollment tokens).
    #[serde(default)]
    pub labels: Labels,
    /// `known-hosts` (default): the key must be in the manager's known_hosts
    /// file; `accept-new`: an unknown key is accepted, recorded there and in
    /// the audit log. A changed key is always refused.
    #[serde(default)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Pinned host key fingerprints (`SHA256:...`) by address, as given in
    /// `addresses`; a pinned host must present exactly that key.
    #[serde(default)]
    pub host_key_fingerprints: BTreeMap<String, String>,
    /// The manager's gRPC URL as the hosts reach it (default:
    /// `--agent-manager-url`, else the first `--advertise` name).
    #[serde(default)]
    pub manager_url: Option<String>,
    /// Hosts bootstrapped at once (default 20, at most 200).
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Per-host limit for the whole bootstrap, enrollment included (default 300).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// How an unknown host key is treated (a pinned fingerprint overrides both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// The key must already be in the manager's known_hosts file.
    KnownHosts,
    /// An unknown key is accepted, recorded in known_hosts and in the audit
    /// log; a key different from a recorded one is refused.
    AcceptNew,
}
