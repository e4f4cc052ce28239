//! The dispatcher: aggregation groups per (route, group key), each run by
//! its own task that decides when its receiver is told, as Alertmanager's
//! `aggrGroup` does.
//!
//! - A group is created by its first firing alert and flushes
//!   `group_wait` later, then every `group_interval` while it has alerts.
//! - A flush sends, per integration of the route's receiver, when a firing
//!   alert is new to that integration, when an alert it was told about has
//!   resolved, or when `repeat_interval` has passed since it was last told
//!   while something fires (an Alertmanager receiver is told at every
//!   flush, see [`super::alertmanager`]).
//! - Resolved alerts leave the group once every integration that needed
//!   them has them; a group with no alerts left ends.
//! - The integrations of one flush deliver concurrently, each in its own
//!   task; groups are independent, so a slow receiver delays only its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::receiver::{DEFAULT_LOG_SIZE, DeliveryAttempt, DeliveryLog, Notification, Receiver, ReceiverStats, deliver};
use super::route::Route;
use super::{Alert, AlertState, NotifyConfig, NotifyError};

/// The entry point the alert engine feeds. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

struct Inner {
    config: NotifyConfig,
    route: Route,
    receivers: HashMap<String, Arc<Receiver>>,
    shared: Arc<Shared>,
}

/// What group tasks hold (not the notifier itself, so that dropping the
/// last [`Notifier`] ends them).
struct Shared {
    groups: Mutex<HashMap<String, GroupEntry>>,
    log: DeliveryLog,
}

struct GroupEntry {
    tx: mpsc::UnboundedSender<Alert>,
    summary: Arc<Mutex<GroupSummary>>,
}

/// A group as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupSummary {
    pub group_key: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub firing: usize,
    pub resolved: usize,
    /// When the group last sent anything (any integration).
    pub last_sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The senders go: every group task sees its channel close and ends.
        self.shared.groups.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// How one route groups and repeats.
#[derive(Debug, Clone, Copy)]
struct Timing {
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
}

impl Notifier {
    /// Checks the configuration and builds the receivers. Must be called
    /// within a tokio runtime only when alerts are sent (groups are tasks).
    pub fn new(config: &NotifyConfig) -> Result<Notifier, NotifyError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("drover-manager/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| NotifyError::Config(format!("HTTP client: {e}")))?;
        let mut receivers = HashMap::new();
        for r in &config.receivers {
            receivers.insert(r.name.clone(), Arc::new(Receiver::build(r, &http)?));
        }
        let route = Route::compile(&config.route, &|name| receivers.contains_key(name))?;
        let log = DeliveryLog::new(config.delivery_log_size.unwrap_or(DEFAULT_LOG_SIZE), receivers.keys().cloned());
        Ok(Notifier {
            inner: Arc::new(Inner {
                config: config.clone(),
                route,
                receivers,
                shared: Arc::new(Shared { groups: Mutex::new(HashMap::new()), log }),
            }),
        })
    }

    /// Takes an alert update (firing or resolved); never blocks. A resolved
    /// alert no group holds is dropped (nothing was said about it).
    pub fn notify(&self, alert: Alert) {
        for route in self.inner.route.matching(&alert.labels) {
            let group_labels = route.group_labels(&alert.labels);
            let key = route.group_key(&group_labels);
            let mut groups = self.inner.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(g) = groups.get(&key) {
                match g.tx.send(alert.clone()) {
                    Ok(()) => continue,
                    // The task died (it cannot end by itself while in the map).
                    Err(_) => {
                        tracing::error!(group = %key, "notification group task ended unexpectedly; starting it again");
                        groups.remove(&key);
                    }
                }
            }
            if alert.state == AlertState::Resolved {
                continue;
            }
            let Some(receiver) = self.inner.receivers.get(&route.receiver).cloned() else { continue };
            let (tx, rx) = mpsc::unbounded_channel();
            let summary = Arc::new(Mutex::new(GroupSummary {
                group_key: key.clone(),
                receiver: route.receiver.clone(),
                group_labels: group_labels.clone(),
                firing: 0,
                resolved: 0,
                last_sent_at: None,
            }));
            let _ = tx.send(alert.clone());
            groups.insert(key.clone(), GroupEntry { tx, summary: summary.clone() });
            let timing = Timing {
                group_wait: route.group_wait,
                group_interval: route.group_interval,
                repeat_interval: route.repeat_interval,
            };
            let group = Group {
                key,
                group_labels,
                receiver,
                timing,
                shared: self.inner.shared.clone(),
                summary,
                alerts: BTreeMap::new(),
                version: 0,
                sent: Vec::new(),
            };
            tokio::spawn(group.run(rx));
        }
    }

    /// The configuration it runs with, secrets redacted.
    pub fn config(&self) -> NotifyConfig {
        self.inner.config.redacted()
    }

    /// The delivery attempts kept, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryAttempt> {
        self.inner.shared.log.attempts()
    }

    /// Counters per receiver (every configured receiver is listed).
    pub fn receiver_stats(&self) -> BTreeMap<String, ReceiverStats> {
        self.inner.shared.log.stats()
    }

    /// The aggregation groups that hold alerts now.
    pub fn groups(&self) -> Vec<GroupSummary> {
        let groups = self.inner.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> =
            groups.values().map(|g| g.summary.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
        out.sort_by(|a, b| a.group_key.cmp(&b.group_key));
        out
    }
}

/// What one integration was last told.
#[derive(Debug, Clone, Default)]
struct Sent {
    firing: BTreeSet<String>,
    at: Option<Instant>,
}

impl Sent {
    /// Whether a flush with these alerts must notify this integration.
    fn needs(
        &self,
        firing: &BTreeSet<String>,
        resolved: &BTreeSet<String>,
        now: Instant,
        repeat: Duration,
        every_flush: bool,
    ) -> bool {
        let Some(at) = self.at else { return !firing.is_empty() };
        if !firing.is_subset(&self.firing) {
            return true;
        }
        if resolved.iter().any(|f| self.firing.contains(f)) {
            return true;
        }
        !firing.is_empty() && (every_flush || now >= at + repeat)
    }
}

struct Group {
    key: String,
    group_labels: BTreeMap<String, String>,
    receiver: Arc<Receiver>,
    timing: Timing,
    shared: Arc<Shared>,
    summary: Arc<Mutex<GroupSummary>>,
    /// By fingerprint, with the version of their last update.
    alerts: BTreeMap<String, (Alert, u64)>,
    version: u64,
    /// Per integration of the receiver.
    sent: Vec<Sent>,
}

impl Group {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Alert>) {
        self.sent = vec![Sent::default(); self.receiver.integrations.len()];
        let mut next_flush = Instant::now() + self.timing.group_wait;
        loop {
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(a) => self.update(a),
                    None => return,
                },
                _ = tokio::time::sleep_until(next_flush) => {
                    let started = Instant::now();
                    self.flush().await;
                    next_flush = started + self.timing.group_interval;
                    if self.alerts.is_empty() && self.end(&mut rx) {
                        return;
                    }
                }
            }
        }
    }

    fn update(&mut self, a: Alert) {
        if a.state == AlertState::Resolved && !self.alerts.contains_key(&a.fingerprint) {
            return;
        }
        self.version += 1;
        self.alerts.insert(a.fingerprint.clone(), (a, self.version));
        self.update_summary();
    }

    fn update_summary(&self) {
        let firing = self.alerts.values().filter(|(a, _)| a.state == AlertState::Firing).count();
        let mut s = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        s.firing = firing;
        s.resolved = self.alerts.len() - firing;
    }

    /// Leaves the map if nothing arrived meanwhile; `false` if something did
    /// (the group goes on with it).
    fn end(&mut self, rx: &mut mpsc::UnboundedReceiver<Alert>) -> bool {
        let shared = self.shared.clone();
        let mut groups = shared.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut got = false;
        while let Ok(a) = rx.try_recv() {
            got = true;
            self.update(a);
        }
        if got && !self.alerts.is_empty() {
            return false;
        }
        groups.remove(&self.key);
        true
    }

    async fn flush(&mut self) {
        let now = Instant::now();
        let snapshot: Vec<(Alert, u64)> = self.alerts.values().cloned().collect();
        let firing: BTreeSet<String> = snapshot
            .iter()
            .filter(|(a, _)| a.state == AlertState::Firing)
            .map(|(a, _)| a.fingerprint.clone())
            .collect();
        let resolved: BTreeSet<String> = snapshot
            .iter()
            .filter(|(a, _)| a.state == AlertState::Resolved)
            .map(|(a, _)| a.fingerprint.clone())
            .collect();
        let mut alerts: Vec<Alert> = snapshot.iter().map(|(a, _)| a.clone()).collect();
        alerts.sort_by_key(|a| a.state != AlertState::Firing);
        let n = Arc::new(Notification {
            receiver: self.receiver.name.clone(),
            group_key: self.key.clone(),
            group_labels: self.group_labels.clone(),
            alerts,
            group_interval: self.timing.group_interval,
        });

        let mut tasks = Vec::new();
        for (i, (_, integration)) in self.receiver.integrations.iter().enumerate() {
            if self.sent[i].needs(
                &firing,
                &resolved,
                now,
                self.timing.repeat_interval,
                integration.resends_every_flush(),
            ) {
                let (receiver, shared, n) = (self.receiver.clone(), self.shared.clone(), n.clone());
                let task = tokio::spawn(async move {
                    let (label, integration) = &receiver.integrations[i];
                    deliver(integration, label, &n, &shared.log).await
                });
                tasks.push((i, task));
            }
        }
        let mut all_ok = true;
        let mut any_sent = false;
        for (i, task) in tasks {
            match task.await {
                Ok(true) => {
                    any_sent = true;
                    self.sent[i] = Sent { firing: firing.clone(), at: Some(now) };
                }
                Ok(false) => all_ok = false,
                Err(e) => {
                    tracing::error!(group = %self.key, error = %e, "notification delivery task failed");
                    all_ok = false;
                }
            }
        }
        if any_sent {
            self.summary.lock().unwrap_or_else(|e| e.into_inner()).last_sent_at = Some(chrono::Utc::now());
        }
        if all_ok {
            // Resolved alerts are done unless they changed during the flush.
            for (a, version) in &snapshot {
                if a.state == AlertState::Resolved && self.alerts.get(&a.fingerprint).is_some_and(|(_, v)| v == version)
                {
                    self.alerts.remove(&a.fingerprint);
                }
            }
            self.update_summary();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn when_an_integration_is_told() {
        let t0 = Instant::now();
        let repeat = Duration::from_secs(3600);
        let never = Sent::default();
        assert!(never.needs(&set(&["a"]), &set(&[]), t0, repeat, false), "first firing alert");
        assert!(!never.needs(&set(&[]), &set(&["a"]), t0, repeat, false), "resolved before it was ever sent");

        let told = Sent { firing: set(&["a", "b"]), at: Some(t0) };
        let soon = t0 + Duration::from_secs(60);
        assert!(!told.needs(&set(&["a", "b"]), &set(&[]), soon, repeat, false), "nothing new");
        assert!(!told.needs(&set(&["a"]), &set(&[]), soon, repeat, false), "fewer, none resolved");
        assert!(told.needs(&set(&["a", "b", "c"]), &set(&[]), soon, repeat, false), "a new alert");
        assert!(told.needs(&set(&["a"]), &set(&["b"]), soon, repeat, false), "b resolved");
        assert!(!told.needs(&set(&["a"]), &set(&["x"]), soon, repeat, false), "x was never told");
        assert!(told.needs(&set(&["a", "b"]), &set(&[]), t0 + repeat, repeat, false), "repeat interval");
        assert!(told.needs(&set(&["a", "b"]), &set(&[]), soon, repeat, true), "every flush");

        let resolved = Sent { firing: set(&[]), at: Some(t0) };
        assert!(!resolved.needs(&set(&[]), &set(&["a"]), t0 + repeat, repeat, true), "resolved is sent once");
    }
}
