//! The Prometheus Alertmanager receiver, for teams that already route
//! there: the group's alerts POSTed to `<url>/api/v2/alerts` as
//! Alertmanager's own alert list.
//!
//! Alertmanager resolves an alert by itself once its `endsAt` has passed,
//! so a firing alert is sent with `endsAt` a few group intervals ahead and
//! sent again at every group flush (Prometheus does the same at each rule
//! evaluation). A resolved alert goes with its real `endsAt`, in the past.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::receiver::{AttemptError, Notification, RetryPolicy, check_max_attempts};
use super::route::opt_duration;
use super::webhook::{check_http_url, post_json};
use super::{AlertState, NotifyError};

/// How many group intervals (at least 5 minutes) a firing alert stays
/// valid in Alertmanager without being sent again.
const VALID_FOR_INTERVALS: u32 = 4;
const MIN_VALIDITY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, `http://alertmanager:9093` (with its
    /// `--web.route-prefix`, if any); `/api/v2/alerts` is appended.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

impl AlertmanagerConfig {
    pub(super) fn validate(&self, path: &str) -> Result<(), NotifyError> {
        check_http_url(&format!("{path}.url"), &self.url)?;
        check_max_attempts(path, self.max_attempts)
    }
}

#[derive(Debug)]
pub struct AlertmanagerIntegration {
    endpoint: String,
    client: reqwest::Client,
    pub(super) retry: RetryPolicy,
}

/// One alert in Alertmanager's v2 API (`postableAlert`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty", default)]
    pub generator_url: String,
}

impl AlertmanagerIntegration {
    pub fn new(config: &AlertmanagerConfig, client: reqwest::Client) -> AlertmanagerIntegration {
        AlertmanagerIntegration {
            endpoint: format!("{}/api/v2/alerts", config.url.trim_end_matches('/')),
            client,
            retry: RetryPolicy::new(config.max_attempts, config.timeout, config.backoff),
        }
    }

    pub(super) async fn send(&self, n: &Notification) -> Result<(), AttemptError> {
        let body = serde_json::to_vec(&postable_alerts(n, Utc::now()))
            .map_err(|e| AttemptError::fatal(format!("encode the alerts: {e}")))?;
        post_json(&self.client, &self.endpoint, body, &[]).await
    }
}

/// The notification's alerts as Alertmanager takes them.
pub fn postable_alerts(n: &Notification, now: DateTime<Utc>) -> Vec<PostableAlert> {
    let validity = (n.group_interval * VALID_FOR_INTERVALS).max(MIN_VALIDITY);
    let valid_until = now + chrono::Duration::from_std(validity).unwrap_or(chrono::Duration::hours(1));
    n.alerts
        .iter()
        .map(|a| PostableAlert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at,
            ends_at: match a.state {
                AlertState::Firing => valid_until,
                AlertState::Resolved => a.ends_at.unwrap_or(now),
            },
            generator_url: a.generator_url.clone(),
        })
        .collect()
}
