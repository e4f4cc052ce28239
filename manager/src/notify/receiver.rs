//! Receivers: a name and the integrations a notification goes out through
//! (webhooks, e-mail, Alertmanagers), the retry loop every integration
//! shares, and the bounded log of delivery attempts with per-receiver
//! counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::alertmanager::{AlertmanagerConfig, AlertmanagerIntegration};
use super::email::{EmailConfig, EmailIntegration};
use super::webhook::{WebhookConfig, WebhookIntegration};
use super::{Alert, AlertState, NotifyError};

pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Attempts kept in the log unless configured.
pub const DEFAULT_LOG_SIZE: usize = 1000;

/// A receiver as configured. A receiver without integrations drops what it
/// gets (Alertmanager's "null" receiver).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_configs: Vec<EmailConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alertmanager_configs: Vec<AlertmanagerConfig>,
}

impl ReceiverConfig {
    pub(super) fn validate(&self, path: &str) -> Result<(), NotifyError> {
        for (i, w) in self.webhook_configs.iter().enumerate() {
            w.validate(&format!("{path}.webhook_configs[{i}]"))?;
        }
        for (i, e) in self.email_configs.iter().enumerate() {
            e.validate(&format!("{path}.email_configs[{i}]"))?;
        }
        for (i, a) in self.alertmanager_configs.iter().enumerate() {
            a.validate(&format!("{path}.alertmanager_configs[{i}]"))?;
        }
        Ok(())
    }
}

/// Retries: how many attempts, each within `timeout`, waiting `backoff`,
/// then twice that, and so on (capped at [`MAX_BACKOFF`], with jitter)
/// between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Duration,
}

impl RetryPolicy {
    pub(super) fn new(max_attempts: Option<u32>, timeout: Option<Duration>, backoff: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout: timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT),
            backoff: backoff.unwrap_or(DEFAULT_BACKOFF),
        }
    }

    /// The wait after failed attempt `n` (1-based): backoff * 2^(n-1),
    /// capped, plus up to 20% jitter.
    pub fn wait_after(&self, n: u32) -> Duration {
        let base = self.backoff.saturating_mul(1u32 << (n - 1).min(16)).min(MAX_BACKOFF);
        let jitter = rand::thread_rng().gen_range(0.0..0.2);
        base + base.mul_f64(jitter)
    }
}

pub(super) fn check_max_attempts(path: &str, n: Option<u32>) -> Result<(), NotifyError> {
    match n {
        Some(0) => Err(NotifyError::Config(format!("{path}.max_attempts: must be at least 1"))),
        Some(n) if n > 20 => Err(NotifyError::Config(format!("{path}.max_attempts: at most 20 (got {n})"))),
        _ => Ok(()),
    }
}

/// What one group flush sends to one receiver.
#[derive(Debug, Clone)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// Firing alerts first, then resolved ones, each in fingerprint order.
    pub alerts: Vec<Alert>,
    /// The route's group interval (an Alertmanager's alerts are valid for a
    /// few of them).
    pub group_interval: Duration,
}

impl Notification {
    /// `firing` if any alert fires, else `resolved`.
    pub fn status(&self) -> AlertState {
        if self.alerts.iter().any(|a| a.state == AlertState::Firing) {
            AlertState::Firing
        } else {
            AlertState::Resolved
        }
    }

    pub fn count(&self, state: AlertState) -> usize {
        self.alerts.iter().filter(|a| a.state == state).count()
    }

    /// The labels every alert has with the same value.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|a| &a.annotations))
    }
}

fn common<'a>(mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let Some(first) = maps.next() else { return BTreeMap::new() };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// Why one attempt failed, and whether trying again may help.
#[derive(Debug)]
pub struct AttemptError {
    pub message: String,
    pub retryable: bool,
}

impl AttemptError {
    pub fn retry(message: impl Into<String>) -> AttemptError {
        AttemptError { message: message.into(), retryable: true }
    }

    pub fn fatal(message: impl Into<String>) -> AttemptError {
        AttemptError { message: message.into(), retryable: false }
    }
}

/// One way out of a receiver.
#[derive(Debug)]
pub enum Integration {
    Webhook(WebhookIntegration),
    Email(Box<EmailIntegration>),
    Alertmanager(AlertmanagerIntegration),
}

impl Integration {
    pub fn kind(&self) -> &'static str {
        match self {
            Integration::Webhook(_) => "webhook",
            Integration::Email(_) => "email",
            Integration::Alertmanager(_) => "alertmanager",
        }
    }

    fn retry(&self) -> RetryPolicy {
        match self {
            Integration::Webhook(w) => w.retry,
            Integration::Email(e) => e.retry,
            Integration::Alertmanager(a) => a.retry,
        }
    }

    /// Whether every group flush sends while alerts fire, not only on
    /// changes and every repeat interval: an Alertmanager forgets an alert
    /// whose `endsAt` has passed, so it is told again at each flush.
    pub fn resends_every_flush(&self) -> bool {
        matches!(self, Integration::Alertmanager(_))
    }

    async fn attempt(&self, n: &Notification) -> Result<(), AttemptError> {
        match self {
            Integration::Webhook(w) => w.send(n).await,
            Integration::Email(e) => e.send(n).await,
            Integration::Alertmanager(a) => a.send(n).await,
        }
    }
}

/// A receiver ready to deliver.
#[derive(Debug)]
pub struct Receiver {
    pub name: String,
    pub integrations: Vec<(String, Integration)>,
}

impl Receiver {
    pub fn build(config: &ReceiverConfig, http: &reqwest::Client) -> Result<Receiver, NotifyError> {
        let mut integrations = Vec::new();
        for (i, w) in config.webhook_configs.iter().enumerate() {
            integrations
                .push((format!("webhook[{i}]"), Integration::Webhook(WebhookIntegration::new(w, http.clone()))));
        }
        for (i, e) in config.email_configs.iter().enumerate() {
            let path = format!("receivers.{}.email_configs[{i}]", config.name);
            integrations.push((format!("email[{i}]"), Integration::Email(Box::new(EmailIntegration::new(e, &path)?))));
        }
        for (i, a) in config.alertmanager_configs.iter().enumerate() {
            integrations.push((
                format!("alertmanager[{i}]"),
                Integration::Alertmanager(AlertmanagerIntegration::new(a, http.clone())),
            ));
        }
        Ok(Receiver { name: config.name.clone(), integrations })
    }
}

/// Sends `n` through one integration: attempts with a timeout each, retried
/// with backoff while the failure is retryable, each recorded in `log`.
/// Returns whether it was delivered.
pub async fn deliver(integration: &Integration, label: &str, n: &Notification, log: &DeliveryLog) -> bool {
    let policy = integration.retry();
    for attempt in 1..=policy.max_attempts {
        let started = Instant::now();
        let at = Utc::now();
        let result = match tokio::time::timeout(policy.timeout, integration.attempt(n)).await {
            Ok(r) => r,
            Err(_) => {
                Err(AttemptError::retry(format!("no answer within {}", humantime::format_duration(policy.timeout))))
            }
        };
        let last = attempt == policy.max_attempts;
        let (ok, error, retry) = match result {
            Ok(()) => (true, None, false),
            Err(e) => (false, Some(e.message), e.retryable && !last),
        };
        log.record(DeliveryAttempt {
            at,
            receiver: n.receiver.clone(),
            integration: label.to_owned(),
            group_key: n.group_key.clone(),
            status: n.status(),
            alerts: n.alerts.len(),
            attempt,
            ok,
            error: error.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            final_attempt: ok || !retry,
        });
        if ok {
            tracing::debug!(receiver = %n.receiver, integration = label, group = %n.group_key, attempt, "notification sent");
            return true;
        }
        let error = error.unwrap_or_default();
        if !retry {
            tracing::warn!(receiver = %n.receiver, integration = label, group = %n.group_key, attempt, %error, "notification failed; giving up");
            return false;
        }
        let wait = policy.wait_after(attempt);
        tracing::info!(receiver = %n.receiver, integration = label, attempt, %error, wait = ?wait, "notification failed; will retry");
        tokio::time::sleep(wait).await;
    }
    false
}

/// One delivery attempt, as the API and console show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    pub receiver: String,
    /// Which of the receiver's integrations: `webhook[0]`, `email[1]`, ...
    pub integration: String,
    pub group_key: String,
    /// The notification's status.
    pub status: AlertState,
    /// How many alerts it carried.
    pub alerts: usize,
    /// 1 for the first attempt of a notification.
    pub attempt: u32,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Whether this attempt ended the notification (delivered or given up).
    pub final_attempt: bool,
}

/// Counters for one receiver since the notifier started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Notifications delivered (per integration).
    pub sent: u64,
    /// Notifications given up on after their last attempt.
    pub failed: u64,
    /// Attempts that failed, retried or not.
    pub failed_attempts: u64,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// The bounded log of attempts and the counters, shared by every group.
#[derive(Debug)]
pub struct DeliveryLog {
    capacity: usize,
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    attempts: VecDeque<DeliveryAttempt>,
    stats: BTreeMap<String, ReceiverStats>,
}

impl DeliveryLog {
    pub fn new(capacity: usize, receivers: impl IntoIterator<Item = String>) -> DeliveryLog {
        let stats = receivers.into_iter().map(|r| (r, ReceiverStats::default())).collect();
        DeliveryLog {
            capacity: capacity.max(1),
            inner: Mutex::new(LogInner { attempts: VecDeque::with_capacity(capacity.min(4096)), stats }),
        }
    }

    pub fn record(&self, a: DeliveryAttempt) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = inner.stats.entry(a.receiver.clone()).or_default();
        s.last_attempt_at = Some(a.at);
        if a.ok {
            s.sent += 1;
        } else {
            s.failed_attempts += 1;
            s.last_error.clone_from(&a.error);
            if a.final_attempt {
                s.failed += 1;
            }
        }
        if inner.attempts.len() == self.capacity {
            inner.attempts.pop_front();
        }
        inner.attempts.push_back(a);
    }

    /// The attempts kept, oldest first.
    pub fn attempts(&self) -> Vec<DeliveryAttempt> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).attempts.iter().cloned().collect()
    }

    pub fn stats(&self) -> BTreeMap<String, ReceiverStats> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(receiver: &str, n: u32, ok: bool, final_attempt: bool) -> DeliveryAttempt {
        DeliveryAttempt {
            at: Utc::now(),
            receiver: receiver.into(),
            integration: "webhook[0]".into(),
            group_key: "{}:{}".into(),
            status: AlertState::Firing,
            alerts: 1,
            attempt: n,
            ok,
            error: (!ok).then(|| "connection refused".to_string()),
            duration_ms: 1,
            final_attempt,
        }
    }

    #[test]
    fn log_is_bounded_and_counts() {
        let log = DeliveryLog::new(3, ["a".to_string(), "quiet".to_string()]);
        log.record(attempt("a", 1, false, false));
        log.record(attempt("a", 2, false, true));
        log.record(attempt("b", 1, true, true));
        log.record(attempt("b", 1, true, true));
        let kept = log.attempts();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0].attempt, 2, "the oldest went first");
        let stats = log.stats();
        assert_eq!((stats["a"].sent, stats["a"].failed, stats["a"].failed_attempts), (0, 1, 2));
        assert_eq!(stats["a"].last_error.as_deref(), Some("connection refused"));
        assert_eq!((stats["b"].sent, stats["b"].failed), (2, 0));
        assert_eq!(stats["quiet"], ReceiverStats::default());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::new(None, None, Some(Duration::from_secs(1)));
        let w1 = p.wait_after(1);
        let w3 = p.wait_after(3);
        assert!(w1 >= Duration::from_secs(1) && w1 < Duration::from_millis(1200), "{w1:?}");
        assert!(w3 >= Duration::from_secs(4) && w3 < Duration::from_millis(4800), "{w3:?}");
        assert!(p.wait_after(30) <= MAX_BACKOFF.mul_f64(1.2));
    }

    #[test]
    fn common_labels_are_shared_values() {
        let mk =
            |pairs: &[(&str, &str)]| Alert::firing(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let n = Notification {
            receiver: "r".into(),
            group_key: "k".into(),
            group_labels: BTreeMap::new(),
            alerts: vec![mk(&[("alertname", "A"), ("host", "h1")]), mk(&[("alertname", "A"), ("host", "h2")])],
            group_interval: Duration::from_secs(1),
        };
        assert_eq!(n.common_labels(), [("alertname".to_string(), "A".to_string())].into());
        assert_eq!(n.status(), AlertState::Firing);
    }
}
