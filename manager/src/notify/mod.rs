//! Alert notifications: the routing tree, grouping and the receivers
//! (webhook, e-mail, Prometheus Alertmanager), as Alertmanager does them.
//!
//! The alert engine hands every alert update (firing or resolved) to
//! [`Notifier::notify`]. The notifier finds the routes the alert lands on
//! ([`route`]), puts it in the aggregation group of each (route, group key)
//! and lets the group's task decide when to send ([`group`]): `group_wait`
//! after the group's first alert, then at most every `group_interval` when
//! something changed (a new firing alert, a resolved one), and every
//! `repeat_interval` while anything fires. A resolved alert is sent once,
//! with state resolved, then forgotten.
//!
//! Each receiver's integrations deliver in their own task with a timeout per
//! attempt and bounded retries ([`receiver`]), so a receiver that is down
//! delays only its own groups. Every attempt is recorded in a bounded
//! in-memory log with per-receiver counters ([`Notifier::deliveries`],
//! [`Notifier::receiver_stats`]).
//!
//! Nothing here is stored: a restart forgets the groups and the log (the
//! alert engine re-sends what still fires).

pub mod alertmanager;
pub mod email;
pub mod group;
pub mod receiver;
pub mod route;
pub mod webhook;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use group::{GroupSummary, Notifier};
pub use receiver::{DeliveryAttempt, ReceiverConfig, ReceiverStats};
pub use route::{Matcher, Route, RouteConfig};

/// Why a notification configuration was refused. The message names the
/// field (`route.routes[1].receiver: ...`, `receivers[0].email_configs[0].to: ...`).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Config(String),
}

/// Whether an alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert as the notifier receives it from the alert engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identifies the alert across updates; [`fingerprint`] of its labels
    /// unless the engine has its own.
    pub fingerprint: String,
    /// `alertname`, `severity`, and `cluster`, `service`, `host`, `role`
    /// where they apply, plus the rule's own labels.
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub starts_at: DateTime<Utc>,
    /// When it resolved (set for resolved alerts).
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// A link to the alert in the console.
    #[serde(default)]
    pub generator_url: String,
}

impl Alert {
    /// A firing alert starting now, fingerprinted by its labels.
    pub fn firing(labels: BTreeMap<String, String>) -> Alert {
        Alert {
            fingerprint: fingerprint(&labels),
            labels,
            annotations: BTreeMap::new(),
            state: AlertState::Firing,
            starts_at: Utc::now(),
            ends_at: None,
            generator_url: String::new(),
        }
    }

    /// The same alert, resolved at `at`.
    pub fn resolved_at(mut self, at: DateTime<Utc>) -> Alert {
        self.state = AlertState::Resolved;
        self.ends_at = Some(at);
        self
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("")
    }
}

/// A stable identity for a label set: the first 16 hex digits of SHA-256
/// over `name=value` lines in name order.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xfe]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The whole notification configuration: the routing tree and the receivers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub route: RouteConfig,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// How many delivery attempts the in-memory log keeps (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_log_size: Option<usize>,
}

impl NotifyConfig {
    /// Parses YAML or JSON (JSON is YAML). Errors name the field and where
    /// it is, then the configuration is checked as [`NotifyConfig::validate`].
    pub fn parse(text: &str) -> Result<NotifyConfig, NotifyError> {
        let config: NotifyConfig = serde_norway::from_str(text)
            .map_err(|e| NotifyError::Config(format!("notification configuration: {e}")))?;
        config
            .validate()
            .map_err(|NotifyError::Config(e)| NotifyError::Config(format!("notification configuration: {e}")))?;
        Ok(config)
    }

    /// The configuration without its secrets (webhook secrets and SMTP
    /// passwords become `<redacted>`), for the API and console.
    pub fn redacted(&self) -> NotifyConfig {
        const REDACTED: &str = "<redacted>";
        let mut c = self.clone();
        for r in &mut c.receivers {
            for w in &mut r.webhook_configs {
                if w.secret.is_some() {
                    w.secret = Some(REDACTED.into());
                }
            }
            for e in &mut r.email_configs {
                if e.password.is_some() {
                    e.password = Some(REDACTED.into());
                }
            }
        }
        c
    }

    /// Checks what serde cannot: unique receiver names, receivers the routes
    /// name, addresses, URLs.
    pub fn validate(&self) -> Result<(), NotifyError> {
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            if r.name.trim().is_empty() {
                return Err(NotifyError::Config(format!("receivers[{i}].name: a receiver needs a name")));
            }
            if !names.insert(r.name.as_str()) {
                return Err(NotifyError::Config(format!("receivers[{i}].name: {:?} is defined twice", r.name)));
            }
            r.validate(&format!("receivers[{i}]"))?;
        }
        Route::compile(&self.route, &|name| names.contains(name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let a: BTreeMap<_, _> = [("alertname".to_string(), "A".to_string())].into();
        let b: BTreeMap<_, _> = [("alertname".to_string(), "B".to_string())].into();
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 16);
    }

    #[test]
    fn parses_yaml_and_json() {
        let yaml = r#"
route:
  receiver: ops
  group_by: [alertname, cluster]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
receivers:
  - name: ops
    webhook_configs:
      - url: http://127.0.0.1:9/hook
        secret: s3cret
  - name: pager
    email_configs:
      - host: smtp.example.org
        port: 587
        tls: starttls
        username: drover
        password: pw
        from: Drover <drover@example.org>
        to: [oncall@example.org]
    alertmanager_configs:
      - url: http://127.0.0.1:9093
"#;
        let c = NotifyConfig::parse(yaml).unwrap();
        assert_eq!(c.receivers.len(), 2);
        let json = serde_json::to_string(&c).unwrap();
        let back = NotifyConfig::parse(&json).unwrap();
        assert_eq!(back, c);

        let shown = serde_json::to_string(&c.redacted()).unwrap();
        assert!(!shown.contains("s3cret") && !shown.contains("\"pw\""), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let base = "route: {receiver: a}\nreceivers:\n";
        let cases = [
            ("route: {receiver: nope}\nreceivers: [{name: a}]", r#"route.receiver: no receiver is named "nope""#),
            (&format!("{base}  - name: a\n  - name: a"), r#"receivers[1].name: "a" is defined twice"#),
            (
                &format!("{base}  - name: a\n    webhook_configs: [{{url: 'ftp://x'}}]"),
                "receivers[0].webhook_configs[0].url",
            ),
            (
                &format!("{base}  - name: a\n    webhook_configs: [{{url: 'not a url'}}]"),
                "receivers[0].webhook_configs[0].url",
            ),
            (
                &format!("{base}  - name: a\n    webhook_configs: [{{url: 'http://x', max_attempts: 0}}]"),
                "max_attempts",
            ),
            (
                &format!("{base}  - name: a\n    email_configs: [{{host: h, from: 'x@y', to: ['not an address']}}]"),
                "receivers[0].email_configs[0].to[0]",
            ),
            (
                &format!("{base}  - name: a\n    email_configs: [{{host: h, from: 'x@y', to: []}}]"),
                "email_configs[0].to",
            ),
            (
                &format!("{base}  - name: a\n    email_configs: [{{host: h, from: 'x@y', to: [a@b], tls: startls}}]"),
                "unknown variant `startls`",
            ),
            (
                &format!("{base}  - name: a\n    email_configs: [{{host: h, from: 'x@y', to: [a@b], username: u}}]"),
                "email_configs[0].password",
            ),
            (&format!("{base}  - name: a\n    slack_configs: []"), "unknown field `slack_configs`"),
            ("route: {receiver: a, group_interval: soon}\nreceivers: [{name: a}]", "group_interval"),
        ];
        for (text, want) in cases {
            let e = NotifyConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\n=> {e}\n(wanted {want})");
        }
    }
}
