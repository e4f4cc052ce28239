//! Notification receivers and the route tree set through REST: stored as one configuration
//! (the same `NotifyConfig` `--notify-config` reads) with webhook secrets and SMTP passwords
//! encrypted by the manager's secrets key, checked with the notify module's own checks, and
//! applied by building a new [`Notifier`] and swapping it into the alert engine. A swap
//! restarts the aggregation groups and the delivery log and counters: alerts that still fire
//! reach the new notifier at their next transition.
//!
//! Until a route tree is set (`route.receiver` unset) receivers can be stored but nothing is
//! sent. Permissions: reading needs `read` (anywhere); every change needs `config.write`
//! held globally, as alert rules do.

use serde_json::Value;

use super::{Actor, DomainError, Permission, Result, Scope};
use crate::AppState;
use crate::model::now_millis;
use crate::notify::{DeliveryAttempt, Notifier, NotifyConfig, ReceiverConfig, ReceiverStats, RouteConfig};
use crate::secrets::{Keyring, PREFIX};
use crate::store::NotificationConfigRec;

/// The permission that changes receivers and routes (globally).
pub const NOTIFY_PERMISSION: Permission = Permission::ConfigWrite;
/// What the API shows in place of a secret; a PUT that leaves it keeps the stored secret.
pub const REDACTED: &str = "<redacted>";
/// Most delivery attempts one request lists.
pub const MAX_DELIVERIES_LIMIT: usize = 1000;

/// Serialises read-modify-write changes of the one stored configuration.
static CHANGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::Invalid(msg.into())
}

/// `body` read as the notify module's type; errors name the field (`receiver.webhook_configs[0]...`,
/// through the YAML reader, which tracks where it is: JSON is YAML).
pub fn from_json<T: serde::de::DeserializeOwned>(what: &str, body: &Value) -> Result<T> {
    serde_norway::from_str(&body.to_string()).map_err(|e| invalid(format!("{what}: {e}")))
}

/// A receiver as the API shows it: secrets redacted, with its counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverEntry {
    pub config: ReceiverConfig,
    pub stats: ReceiverStats,
}

/// `config` with every secret sealed (`enc:v1:...`), as stored.
pub fn seal(keyring: &Keyring, config: &NotifyConfig) -> NotifyConfig {
    let mut c = config.clone();
    let seal = |s: &mut Option<String>| {
        if let Some(v) = s.as_mut() {
            *v = keyring.encrypt(&Value::String(v.clone()));
        }
    };
    for r in &mut c.receivers {
        r.webhook_configs.iter_mut().for_each(|w| seal(&mut w.secret));
        r.email_configs.iter_mut().for_each(|e| seal(&mut e.password));
    }
    c
}

/// The stored `config` with its secrets opened.
pub fn open(keyring: &Keyring, config: &NotifyConfig) -> Result<NotifyConfig> {
    let mut c = config.clone();
    let open = |s: &mut Option<String>, what: &str| -> Result<()> {
        if let Some(v) = s.as_mut().filter(|v| v.starts_with(PREFIX)) {
            match keyring.decrypt(v) {
                Ok(Value::String(plain)) => *v = plain,
                Ok(_) => return Err(DomainError::Internal(format!("stored {what}: not a string"))),
                Err(e) => return Err(DomainError::Internal(format!("stored {what}: {e}"))),
            }
        }
        Ok(())
    };
    for r in &mut c.receivers {
        for (i, w) in r.webhook_configs.iter_mut().enumerate() {
            open(&mut w.secret, &format!("receiver {} webhook_configs[{i}].secret", r.name))?;
        }
        for (i, e) in r.email_configs.iter_mut().enumerate() {
            open(&mut e.password, &format!("receiver {} email_configs[{i}].password", r.name))?;
        }
    }
    Ok(c)
}

/// The stored configuration, secrets opened (none if nothing was ever stored).
pub async fn load(state: &AppState) -> Result<Option<NotifyConfig>> {
    load_from(&state.store, &state.secrets).await
}

/// [`load`] for the manager's start, before the state exists.
pub async fn load_from(store: &crate::store::Store, keyring: &Keyring) -> Result<Option<NotifyConfig>> {
    let Some(rec) = store.notification_config().await? else { return Ok(None) };
    let sealed: NotifyConfig = serde_json::from_str(&rec.config)
        .map_err(|e| DomainError::Internal(format!("stored notification configuration: {e}")))?;
    open(keyring, &sealed).map(Some)
}

/// Stores `config` (secrets sealed) as set by `by`.
pub async fn store_config(
    store: &crate::store::Store,
    keyring: &Keyring,
    config: &NotifyConfig,
    by: &str,
) -> Result<()> {
    let text = serde_json::to_string(&seal(keyring, config))
        .map_err(|e| DomainError::Internal(format!("notification configuration: {e}")))?;
    store
        .put_notification_config(&NotificationConfigRec {
            config: text,
            updated_at: now_millis(),
            updated_by: by.into(),
        })
        .await?;
    Ok(())
}

/// Whether a route tree is set (else nothing is sent).
pub fn has_routes(config: &NotifyConfig) -> bool {
    config.route.receiver.is_some()
}

/// The notifier `config` runs (none without a route tree).
pub fn build(config: &NotifyConfig) -> Result<Option<Notifier>> {
    if !has_routes(config) {
        return Ok(None);
    }
    Notifier::new(config).map(Some).map_err(|e| invalid(e.to_string()))
}

/// Checks `config` with the notify module's checks; without a route tree, the receivers alone.
pub fn check(config: &NotifyConfig) -> Result<()> {
    if has_routes(config) {
        return config.validate().map_err(|e| invalid(e.to_string()));
    }
    let Some(first) = config.receivers.first() else { return Ok(()) };
    let probe = NotifyConfig {
        route: RouteConfig { receiver: Some(first.name.clone()), ..RouteConfig::default() },
        ..config.clone()
    };
    probe.validate().map_err(|e| invalid(e.to_string()))
}

/// Checks, stores and applies `config`: the engine gets a new notifier.
async fn apply(state: &AppState, config: &NotifyConfig, by: &str) -> Result<()> {
    check(config)?;
    let notifier = build(config)?;
    store_config(&state.store, &state.secrets, config, by).await?;
    state.alerts.set_notifier(notifier);
    Ok(())
}

fn stats_of(state: &AppState) -> std::collections::BTreeMap<String, ReceiverStats> {
    state.alerts.notifier().map(|n| n.receiver_stats()).unwrap_or_default()
}

fn redacted_receiver(r: &ReceiverConfig) -> ReceiverConfig {
    let c = NotifyConfig { receivers: vec![r.clone()], ..NotifyConfig::default() };
    c.redacted().receivers.remove(0)
}

/// Every receiver, secrets redacted, with its counters (zero until it has a route).
pub async fn list_receivers(state: &AppState, actor: &Actor) -> Result<Vec<ReceiverEntry>> {
    actor.require(Permission::Read, Scope::Any)?;
    let config = load(state).await?.unwrap_or_default();
    let stats = stats_of(state);
    Ok(config
        .receivers
        .iter()
        .map(|r| ReceiverEntry { config: redacted_receiver(r), stats: stats.get(&r.name).cloned().unwrap_or_default() })
        .collect())
}

pub async fn get_receiver(state: &AppState, actor: &Actor, name: &str) -> Result<ReceiverEntry> {
    list_receivers(state, actor)
        .await?
        .into_iter()
        .find(|r| r.config.name == name)
        .ok_or_else(|| DomainError::NotFound(format!("receiver {name} not found")))
}

/// Keeps the stored secret wherever `new` leaves the redacted placeholder (by position).
fn keep_secrets(new: &mut ReceiverConfig, old: Option<&ReceiverConfig>) -> Result<()> {
    for (i, w) in new.webhook_configs.iter_mut().enumerate() {
        if w.secret.as_deref() == Some(REDACTED) {
            w.secret = old.and_then(|o| o.webhook_configs.get(i)).and_then(|o| o.secret.clone());
            if w.secret.is_none() {
                return Err(invalid(format!(
                    "webhook_configs[{i}].secret: {REDACTED} keeps a stored secret, but none is stored there"
                )));
            }
        }
    }
    for (i, e) in new.email_configs.iter_mut().enumerate() {
        if e.password.as_deref() == Some(REDACTED) {
            e.password = old.and_then(|o| o.email_configs.get(i)).and_then(|o| o.password.clone());
            if e.password.is_none() {
                return Err(invalid(format!(
                    "email_configs[{i}].password: {REDACTED} keeps a stored password, but none is stored there"
                )));
            }
        }
    }
    Ok(())
}

/// Creates or replaces the receiver `name` (a body without `name` takes the path's). A secret
/// left as `<redacted>` keeps the stored one. Returns the receiver and whether it was new.
pub async fn put_receiver(
    state: &AppState,
    actor: &Actor,
    name: &str,
    mut body: Value,
) -> Result<(ReceiverEntry, bool)> {
    let granted = actor.require(NOTIFY_PERMISSION, Scope::Global)?;
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(invalid(format!("invalid receiver name {name:?}: 1-128 characters, no control characters")));
    }
    let obj = body.as_object_mut().ok_or_else(|| invalid("the body must be a JSON object (a receiver)"))?;
    match obj.get("name") {
        None => {
            obj.insert("name".into(), Value::String(name.into()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(invalid(format!("name: the body names receiver {other} but the path names {name:?}")));
        }
    }
    let mut receiver: ReceiverConfig = from_json("receiver", &body)?;
    let _guard = CHANGE.lock().await;
    let mut config = load(state).await?.unwrap_or_default();
    let old = config.receivers.iter().position(|r| r.name == name);
    keep_secrets(&mut receiver, old.map(|i| &config.receivers[i]))?;
    match old {
        Some(i) => config.receivers[i] = receiver.clone(),
        None => config.receivers.push(receiver.clone()),
    }
    apply(state, &config, &actor.username).await?;
    let kinds = |r: &ReceiverConfig| {
        format!(
            "{} webhook, {} email, {} alertmanager",
            r.webhook_configs.len(),
            r.email_configs.len(),
            r.alertmanager_configs.len()
        )
    };
    let what = if old.is_some() { "set receiver" } else { "created receiver" };
    state
        .audit(granted.audit(
            if old.is_some() { "receiver.update" } else { "receiver.create" },
            "receiver",
            name,
            format!("{what}: {}", kinds(&receiver)),
        ))
        .await;
    let stats = stats_of(state).remove(name).unwrap_or_default();
    Ok((ReceiverEntry { config: redacted_receiver(&receiver), stats }, old.is_none()))
}

/// Where the tree names `receiver`: `route`, `route.routes[1]`, ...
fn routes_naming(route: &RouteConfig, path: &str, receiver: &str, out: &mut Vec<String>) {
    if route.receiver.as_deref() == Some(receiver) {
        out.push(path.to_owned());
    }
    for (i, r) in route.routes.iter().enumerate() {
        routes_naming(r, &format!("{path}.routes[{i}]"), receiver, out);
    }
}

/// Deletes a receiver no route names (else 409 naming the routes).
pub async fn delete_receiver(state: &AppState, actor: &Actor, name: &str) -> Result<()> {
    let granted = actor.require(NOTIFY_PERMISSION, Scope::Global)?;
    let _guard = CHANGE.lock().await;
    let mut config = load(state).await?.unwrap_or_default();
    let Some(i) = config.receivers.iter().position(|r| r.name == name) else {
        return Err(DomainError::NotFound(format!("receiver {name} not found")));
    };
    let mut used = Vec::new();
    routes_naming(&config.route, "route", name, &mut used);
    if !used.is_empty() {
        return Err(DomainError::Conflict(format!(
            "receiver {name} is used by {}; change the routes first (PUT /api/v1/routes)",
            used.join(", ")
        )));
    }
    config.receivers.remove(i);
    apply(state, &config, &actor.username).await?;
    state.audit(granted.audit("receiver.delete", "receiver", name, "deleted receiver")).await;
    Ok(())
}

/// The route tree (404 until one is set).
pub async fn get_routes(state: &AppState, actor: &Actor) -> Result<RouteConfig> {
    actor.require(Permission::Read, Scope::Any)?;
    load(state)
        .await?
        .filter(has_routes)
        .map(|c| c.route)
        .ok_or_else(|| DomainError::NotFound("no route tree is set (PUT /api/v1/routes)".into()))
}

/// Replaces the route tree; every receiver it names must exist (400 naming it).
pub async fn put_routes(state: &AppState, actor: &Actor, route: RouteConfig) -> Result<RouteConfig> {
    let granted = actor.require(NOTIFY_PERMISSION, Scope::Global)?;
    if route.receiver.is_none() {
        return Err(invalid("route.receiver: the root route must name a receiver"));
    }
    let _guard = CHANGE.lock().await;
    let mut config = load(state).await?.unwrap_or_default();
    config.route = route;
    apply(state, &config, &actor.username).await?;
    let summary = serde_json::to_string(&config.route).unwrap_or_default();
    state.audit(granted.audit("routes.update", "routes", "route", format!("set the route tree: {summary}"))).await;
    Ok(config.route)
}

/// The delivery attempts kept since the notifier started, newest first, of one receiver or all.
pub fn deliveries(
    state: &AppState,
    actor: &Actor,
    receiver: Option<&str>,
    limit: usize,
) -> Result<Vec<DeliveryAttempt>> {
    actor.require(Permission::Read, Scope::Any)?;
    if limit == 0 || limit > MAX_DELIVERIES_LIMIT {
        return Err(invalid(format!("limit: 1 to {MAX_DELIVERIES_LIMIT} (got {limit})")));
    }
    let all = state.alerts.notifier().map(|n| n.deliveries()).unwrap_or_default();
    Ok(all.into_iter().rev().filter(|a| receiver.is_none_or(|r| a.receiver == r)).take(limit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NotifyConfig {
        NotifyConfig::parse(
            "route: {receiver: a, routes: [{receiver: b, matchers: ['severity=\"critical\"']}]}\nreceivers:\n  - name: a\n    webhook_configs: [{url: 'http://127.0.0.1:9/x', secret: s3cret}]\n  - name: b\n    email_configs: [{host: h, from: 'x@y.org', to: [a@b.org], username: u, password: pw}]\n",
        )
        .unwrap()
    }

    #[test]
    fn secrets_are_sealed_and_opened() {
        let k = Keyring::from_key(&crate::secrets::generate_key());
        let c = config();
        let sealed = seal(&k, &c);
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("\"pw\""), "{text}");
        assert_eq!(open(&k, &sealed).unwrap(), c);
    }

    #[test]
    fn routes_naming_finds_nested() {
        let c = config();
        let mut out = Vec::new();
        routes_naming(&c.route, "route", "b", &mut out);
        assert_eq!(out, ["route.routes[0]"]);
    }

    #[test]
    fn redacted_placeholder_keeps_stored_secret() {
        let c = config();
        let mut new = redacted_receiver(&c.receivers[0]);
        keep_secrets(&mut new, Some(&c.receivers[0])).unwrap();
        assert_eq!(new.webhook_configs[0].secret.as_deref(), Some("s3cret"));
        let mut new = redacted_receiver(&c.receivers[0]);
        let e = keep_secrets(&mut new, None).unwrap_err().to_string();
        assert!(e.contains("webhook_configs[0].secret"), "{e}");
    }
}
