//! The webhook receiver: a POST of Alertmanager's webhook JSON (version 4),
//! signed with HMAC-SHA256 so the receiving end can tell it came from this
//! manager.
//!
//! Headers: `X-Drover-Timestamp` (Unix seconds when it was sent) and, when
//! the receiver has a secret, `X-Drover-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes with the secret as key. Connection
//! errors, timeouts and 5xx answers are retried; 4xx answers are not.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::receiver::{AttemptError, Notification, RetryPolicy, check_max_attempts};
use super::route::opt_duration;
use super::{Alert, AlertState, NotifyError};

pub const SIGNATURE_HEADER: &str = "X-Drover-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Drover-Timestamp";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` (rustls with the Mozilla roots).
    pub url: String,
    /// Signs every body (recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

impl WebhookConfig {
    pub(super) fn validate(&self, path: &str) -> Result<(), NotifyError> {
        check_http_url(&format!("{path}.url"), &self.url)?;
        if self.secret.as_deref() == Some("") {
            return Err(NotifyError::Config(format!("{path}.secret: empty (leave it out to send unsigned)")));
        }
        check_max_attempts(path, self.max_attempts)
    }
}

pub(super) fn check_http_url(path: &str, url: &str) -> Result<reqwest::Url, NotifyError> {
    let u = reqwest::Url::parse(url).map_err(|e| NotifyError::Config(format!("{path}: invalid URL {url:?}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(NotifyError::Config(format!("{path}: {url:?} is not an http:// or https:// URL with a host")));
    }
    Ok(u)
}

#[derive(Debug)]
pub struct WebhookIntegration {
    url: String,
    secret: Option<String>,
    client: reqwest::Client,
    pub(super) retry: RetryPolicy,
}

impl WebhookIntegration {
    pub fn new(config: &WebhookConfig, client: reqwest::Client) -> WebhookIntegration {
        WebhookIntegration {
            url: config.url.clone(),
            secret: config.secret.clone(),
            client,
            retry: RetryPolicy::new(config.max_attempts, config.timeout, config.backoff),
        }
    }

    pub(super) async fn send(&self, n: &Notification) -> Result<(), AttemptError> {
        let body = serde_json::to_vec(&WebhookPayload::new(n))
            .map_err(|e| AttemptError::fatal(format!("encode the payload: {e}")))?;
        let mut headers = vec![(TIMESTAMP_HEADER, chrono::Utc::now().timestamp().to_string())];
        if let Some(secret) = &self.secret {
            headers.push((SIGNATURE_HEADER, signature(secret.as_bytes(), &body)));
        }
        post_json(&self.client, &self.url, body, &headers).await
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `X-Drover-Signature` value in constant time (for receivers
/// written in Rust, and the tests).
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// POSTs a JSON body: 2xx is delivered; connection errors, timeouts and 5xx
/// may be retried; any other answer is not.
pub(super) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<(), AttemptError> {
    let mut req = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Err(AttemptError::retry(describe(&e))),
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.trim().chars().take(200).collect();
    let message = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
    if status.is_server_error() { Err(AttemptError::retry(message)) } else { Err(AttemptError::fatal(message)) }
}

/// A reqwest error with its causes ("error sending request" alone says
/// nothing).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// Alertmanager's webhook payload, version 4.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u32,
    pub status: AlertState,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: AlertState,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` while firing, as Alertmanager sends.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Alertmanager's "zero time" for a firing alert's end.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl WebhookPayload {
    pub fn new(n: &Notification) -> WebhookPayload {
        WebhookPayload {
            version: "4".into(),
            group_key: n.group_key.clone(),
            truncated_alerts: 0,
            status: n.status(),
            receiver: n.receiver.clone(),
            group_labels: n.group_labels.clone(),
            common_labels: n.common_labels(),
            common_annotations: n.common_annotations(),
            external_url: String::new(),
            alerts: n.alerts.iter().map(WebhookAlert::new).collect(),
        }
    }
}

impl WebhookAlert {
    fn new(a: &Alert) -> WebhookAlert {
        let rfc3339 = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        WebhookAlert {
            status: a.state,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.starts_at),
            ends_at: match (a.state, a.ends_at) {
                (AlertState::Resolved, Some(t)) => rfc3339(t),
                (AlertState::Resolved, None) => rfc3339(chrono::Utc::now()),
                (AlertState::Firing, _) => ZERO_TIME.into(),
            },
            generator_url: a.generator_url.clone(),
            fingerprint: a.fingerprint.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_rfc_4231_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature(b"k", b"body");
        assert!(verify_signature(b"k", b"body", &sig));
        assert!(!verify_signature(b"k", b"body!", &sig));
        assert!(!verify_signature(b"other", b"body", &sig));
        assert!(!verify_signature(b"k", b"body", "md5=00"));
    }
}
