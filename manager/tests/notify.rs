//! Alert notifications against real receivers (`drover_testkit::receivers`):
//! webhook servers on loopback (checking the HMAC signature), an SMTP server
//! (aiosmtpd, plain and with STARTTLS and authentication) and a real
//! Prometheus Alertmanager.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drover_manager::notify::webhook::WebhookPayload;
use drover_manager::notify::{Alert, AlertState, Notifier, NotifyConfig};
use drover_testkit::receivers::{Alertmanager, SmtpServer, WebhookServer};
use drover_testkit::{eventually, eventually_true};

const SECRET: &str = "webhook-secret";
const WAIT: Duration = Duration::from_secs(20);

/// A webhook receiver of Drover's payloads signed with [`SECRET`].
type Hooks = WebhookServer<WebhookPayload>;

fn alert(name: &str, host: &str) -> Alert {
    let labels: BTreeMap<String, String> =
        [("alertname", name), ("severity", "critical"), ("cluster", "prod"), ("service", "redis"), ("host", host)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let mut a = Alert::firing(labels);
    a.annotations.insert("summary".into(), format!("{name} on {host}"));
    a.generator_url = format!("https://drover.example/alerts/{}", a.fingerprint);
    a
}

fn resolved(a: &Alert) -> Alert {
    a.clone().resolved_at(chrono::Utc::now())
}

/// A port nothing listens on (bound, then released).
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn webhook_groups_signs_repeats_and_resolves() {
    let hooks = Hooks::start(SECRET).await;
    let url = &hooks.url;
    let config = NotifyConfig::parse(&format!(
        r#"
route:
  receiver: ops
  group_by: [alertname, cluster]
  group_wait: 500ms
  group_interval: 300ms
  repeat_interval: 2s
receivers:
  - name: ops
    webhook_configs:
      - url: {url}
        secret: {SECRET}
"#
    ))
    .unwrap();
    let notifier = Notifier::new(&config).unwrap();

    // Five alerts of one group within group_wait: one notification.
    let alerts: Vec<Alert> = (1..=5).map(|i| alert("RedisMemoryHigh", &format!("h{i}"))).collect();
    let sent_at = Instant::now();
    for a in &alerts {
        notifier.notify(a.clone());
    }
    eventually_true(WAIT, "the first notification", || !hooks.received().is_empty()).await;
    let first = hooks.received()[0].clone();
    assert!(first.at - sent_at >= Duration::from_millis(450), "sent before group_wait: {:?}", first.at - sent_at);
    let p = &first.payload;
    assert_eq!((p.version.as_str(), p.status, p.receiver.as_str()), ("4", AlertState::Firing, "ops"));
    assert_eq!(p.alerts.len(), 5);
    assert_eq!(
        p.group_labels,
        [("alertname".into(), "RedisMemoryHigh".into()), ("cluster".into(), "prod".into())].into()
    );
    assert_eq!(p.common_labels.get("service").map(String::as_str), Some("redis"));
    assert!(!p.common_labels.contains_key("host"));
    assert_eq!(p.group_key, r#"{}:{alertname="RedisMemoryHigh",cluster="prod"}"#);
    assert!(p.alerts.iter().all(|a| a.status == AlertState::Firing && a.ends_at == "0001-01-01T00:00:00Z"));
    let h1 = p.alerts.iter().find(|a| a.labels["host"] == "h1").expect("h1 in the notification");
    assert_eq!(h1.annotations["summary"], "RedisMemoryHigh on h1");
    assert_eq!(h1.generator_url, alerts[0].generator_url);
    assert_eq!(notifier.groups().len(), 1);
    assert_eq!(notifier.groups()[0].firing, 5);

    // Nothing new: the next is the repeat, repeat_interval after the first.
    eventually_true(WAIT, "the repeated notification", || hooks.received().len() >= 2).await;
    let second = hooks.received()[1].clone();
    let gap = second.at - first.at;
    assert!(gap >= Duration::from_millis(1900), "repeated after {gap:?}, before repeat_interval (2s)");
    assert_eq!(second.payload.alerts.len(), 5);
    assert_eq!(second.payload.status, AlertState::Firing);

    // Two resolve: one notification, still firing, with the two resolved.
    notifier.notify(resolved(&alerts[0]));
    notifier.notify(resolved(&alerts[1]));
    eventually_true(WAIT, "the partly resolved notification", || hooks.received().len() >= 3).await;
    let third = hooks.received()[2].payload.clone();
    assert!(third.alerts.len() == 5, "{third:?}");
    assert_eq!(third.status, AlertState::Firing);
    assert_eq!(third.alerts.iter().filter(|a| a.status == AlertState::Resolved).count(), 2);
    let done = third.alerts.iter().find(|a| a.status == AlertState::Resolved).unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(&done.ends_at).is_ok(), "{}", done.ends_at);

    // The rest resolve: one resolved notification of the three, then the group ends.
    for a in &alerts[2..] {
        notifier.notify(resolved(a));
    }
    eventually_true(WAIT, "the resolved notification", || hooks.received().len() >= 4).await;
    let fourth = hooks.received()[3].payload.clone();
    assert_eq!(fourth.status, AlertState::Resolved);
    assert_eq!(fourth.alerts.len(), 3, "resolved alerts are sent once: {fourth:?}");
    eventually_true(WAIT, "the group to end", || notifier.groups().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(hooks.received().len(), 4, "nothing after the resolved notification");
    assert!(hooks.rejected().is_empty(), "{:?}", hooks.rejected());

    let stats = notifier.receiver_stats();
    assert_eq!((stats["ops"].sent, stats["ops"].failed), (4, 0));
    let log = notifier.deliveries();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|d| d.ok && d.attempt == 1 && d.receiver == "ops" && d.integration == "webhook[0]"));
    assert_eq!(log[3].status, AlertState::Resolved);
}

#[tokio::test]
async fn an_alert_resolved_within_group_wait_is_never_sent() {
    let hooks = Hooks::start(SECRET).await;
    let url = &hooks.url;
    let config = NotifyConfig::parse(&format!(
        "route: {{receiver: ops, group_wait: 300ms, group_interval: 300ms}}\n\
         receivers: [{{name: ops, webhook_configs: [{{url: '{url}', secret: {SECRET}}}]}}]"
    ))
    .unwrap();
    let notifier = Notifier::new(&config).unwrap();
    let a = alert("Flapping", "h1");
    notifier.notify(a.clone());
    notifier.notify(resolved(&a));
    eventually_true(WAIT, "the group to end", || notifier.groups().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hooks.requests(), 0);
}

#[tokio::test]
async fn a_receiver_that_is_down_does_not_delay_the_others() {
    let hooks = Hooks::start(SECRET).await;
    let url = &hooks.url;
    let down = format!("http://127.0.0.1:{}/hook", refused_port());
    // Both routes continue, so every alert goes to both receivers.
    let config = NotifyConfig::parse(&format!(
        r#"
route:
  receiver: up
  group_wait: 200ms
  routes:
    - matchers: ['severity=~"critical|warning"']
      receiver: down
      continue: true
    - matchers: ['severity="critical"']
      receiver: up
receivers:
  - name: up
    webhook_configs: [{{url: '{url}', secret: {SECRET}}}]
  - name: down
    webhook_configs: [{{url: '{down}', secret: {SECRET}, max_attempts: 3, backoff: 1s}}]
"#
    ))
    .unwrap();
    let notifier = Notifier::new(&config).unwrap();
    let started = Instant::now();
    notifier.notify(alert("HostLost", "h1"));
    eventually_true(WAIT, "the live receiver's notification", || !hooks.received().is_empty()).await;
    let up_after = started.elapsed();
    // The dead one is still retrying (1 s, then 2 s of backoff).
    let stats = notifier.receiver_stats();
    assert_eq!(stats["down"].failed, 0, "the dead receiver gave up before the live one was told ({up_after:?})");
    assert_eq!(stats["up"].sent, 1);

    eventually_true(WAIT, "the dead receiver to give up", || notifier.receiver_stats()["down"].failed == 1).await;
    let stats = notifier.receiver_stats();
    assert_eq!((stats["down"].sent, stats["down"].failed, stats["down"].failed_attempts), (0, 1, 3));
    let err = stats["down"].last_error.clone().unwrap_or_default();
    assert!(err.to_lowercase().contains("refused"), "{err}");
    let attempts: Vec<_> = notifier.deliveries().into_iter().filter(|d| d.receiver == "down").collect();
    assert_eq!(attempts.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(attempts.iter().all(|d| !d.ok));
    assert_eq!(attempts.iter().map(|d| d.final_attempt).collect::<Vec<_>>(), [false, false, true]);
    assert!(attempts[2].at - attempts[0].at >= chrono::Duration::milliseconds(2900), "backoff 1 s then 2 s");
    println!("live receiver told after {up_after:?}; the dead one gave up after 3 attempts");
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let flaky = Hooks::scripted(SECRET, &[503, 500]).await;
    let flaky_url = &flaky.url;
    let strict = Hooks::scripted(SECRET, &[400]).await;
    let strict_url = &strict.url;
    let config = NotifyConfig::parse(&format!(
        r#"
route: {{receiver: both, group_wait: 100ms}}
receivers:
  - name: both
    webhook_configs:
      - {{url: '{flaky_url}', secret: {SECRET}, backoff: 100ms}}
      - {{url: '{strict_url}', secret: {SECRET}, backoff: 100ms}}
"#
    ))
    .unwrap();
    let notifier = Notifier::new(&config).unwrap();
    notifier.notify(alert("RoleDown", "h1"));
    eventually_true(WAIT, "the flaky receiver's notification", || !flaky.received().is_empty()).await;
    eventually_true(WAIT, "two outcomes", || {
        let s = &notifier.receiver_stats()["both"];
        s.sent + s.failed == 2
    })
    .await;
    assert_eq!(flaky.requests(), 3, "503 and 500 are retried");
    assert_eq!(strict.requests(), 1, "400 is not retried");
    let log = notifier.deliveries();
    let strict_log: Vec<_> = log.iter().filter(|d| d.integration == "webhook[1]").collect();
    assert_eq!(strict_log.len(), 1);
    assert!(strict_log[0].error.as_deref().unwrap_or("").contains("400"), "{strict_log:?}");
    let s = &notifier.receiver_stats()["both"];
    assert_eq!((s.sent, s.failed, s.failed_attempts), (1, 1, 3));
}

fn email_config(port: u16, extra: &str) -> NotifyConfig {
    NotifyConfig::parse(&format!(
        r#"
route: {{receiver: mail, group_by: [alertname], group_wait: 100ms, group_interval: 200ms}}
receivers:
  - name: mail
    email_configs:
      - host: 127.0.0.1
        port: {port}
        from: Drover <drover@example.org>
        to: [oncall@example.org, ops@example.org]
        backoff: 100ms
        max_attempts: 2
{extra}
"#
    ))
    .unwrap()
}

#[tokio::test]
async fn email_over_plain_smtp() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::plain(tmp.path()).await;
    let notifier = Notifier::new(&email_config(smtp.port, "        tls: none")).unwrap();
    let a = alert("HostLost", "db-7");
    notifier.notify(a.clone());
    let mail = eventually(WAIT, "the firing e-mail", || std::future::ready(smtp.messages().first().cloned())).await;
    assert!(mail.contains("X-Envelope-To: oncall@example.org,ops@example.org"), "{mail}");
    assert!(mail.contains("Subject: [FIRING:1] alertname=HostLost"), "{mail}");
    assert!(mail.contains("From: Drover <drover@example.org>"), "{mail}");
    assert!(
        mail.contains("labels: alertname=HostLost cluster=prod host=db-7 service=redis severity=critical"),
        "{mail}"
    );
    assert!(mail.contains("summary: HostLost on db-7"), "{mail}");

    notifier.notify(resolved(&a));
    let mail = eventually(WAIT, "the resolved e-mail", || std::future::ready(smtp.messages().get(1).cloned())).await;
    assert!(mail.contains("Subject: [RESOLVED:1] alertname=HostLost"), "{mail}");
    assert!(mail.contains("RESOLVED\r\n- HostLost (from "), "{mail}");
    assert_eq!(notifier.receiver_stats()["mail"].sent, 2);
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files.
fn test_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "notify test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn email_with_starttls_and_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificate(tmp.path());
    let smtp = SmtpServer::start(tmp.path(), Some((&cert, &key)), Some(("drover", "s3cret"))).await;
    let ca = ca.display();

    // Wrong password: a permanent failure (535), not retried.
    let bad = email_config(
        smtp.port,
        &format!("        tls: starttls\n        ca_file: {ca}\n        username: drover\n        password: wrong"),
    );
    let notifier = Notifier::new(&bad).unwrap();
    notifier.notify(alert("DiskFull", "h1"));
    eventually_true(WAIT, "the refused e-mail", || notifier.receiver_stats()["mail"].failed == 1).await;
    let s = &notifier.receiver_stats()["mail"];
    assert_eq!(s.failed_attempts, 1, "{s:?}");
    assert!(s.last_error.as_deref().unwrap_or("").contains("535"), "{s:?}");

    // Without our CA the server's certificate is refused.
    let untrusted =
        email_config(smtp.port, "        tls: starttls\n        username: drover\n        password: s3cret");
    let notifier = Notifier::new(&untrusted).unwrap();
    notifier.notify(alert("DiskFull", "h1"));
    eventually_true(WAIT, "the untrusted server refused", || notifier.receiver_stats()["mail"].failed == 1).await;
    let err = notifier.receiver_stats()["mail"].last_error.clone().unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let good = email_config(
        smtp.port,
        &format!("        tls: starttls\n        ca_file: {ca}\n        username: drover\n        password: s3cret"),
    );
    let notifier = Notifier::new(&good).unwrap();
    notifier.notify(alert("DiskFull", "h1"));
    let mail =
        eventually(WAIT, "the e-mail over STARTTLS", || std::future::ready(smtp.messages().first().cloned())).await;
    assert!(mail.contains("Subject: [FIRING:1] alertname=DiskFull"), "{mail}");
    assert!(mail.contains("host=h1"), "{mail}");
    assert_eq!(smtp.messages().len(), 1, "the refused attempts delivered nothing");
}

#[tokio::test]
async fn alertmanager_v2_gets_firing_and_resolved_alerts() {
    let am = Alertmanager::start().await;
    let am = &am;
    let config = NotifyConfig::parse(&format!(
        "route: {{receiver: am, group_wait: 100ms, group_interval: 200ms}}\n\
         receivers: [{{name: am, alertmanager_configs: [{{url: '{}/'}}]}}]",
        am.url
    ))
    .unwrap();
    let notifier = Notifier::new(&config).unwrap();
    let a = alert("ZooKeeperQuorumLost", "zk-1");
    notifier.notify(a.clone());

    let listed = eventually(WAIT, "the alert in Alertmanager", || async move {
        am.alerts().await.unwrap().into_iter().find(|x| x["labels"]["alertname"] == "ZooKeeperQuorumLost")
    })
    .await;
    assert_eq!(listed["labels"]["host"], "zk-1");
    assert_eq!(listed["labels"]["severity"], "critical");
    assert_eq!(listed["annotations"]["summary"], "ZooKeeperQuorumLost on zk-1");
    assert_eq!(listed["status"]["state"], "active");
    assert_eq!(listed["generatorURL"], a.generator_url.as_str());
    let ends_at = chrono::DateTime::parse_from_rfc3339(listed["endsAt"].as_str().unwrap()).unwrap();
    assert!(ends_at > chrono::Utc::now(), "a firing alert ends in the future: {ends_at}");

    notifier.notify(resolved(&a));
    eventually(WAIT, "the alert resolved in Alertmanager", || async move {
        let gone = !am.alerts().await.unwrap().iter().any(|x| x["labels"]["alertname"] == "ZooKeeperQuorumLost");
        gone.then_some(())
    })
    .await;
    let s = &notifier.receiver_stats()["am"];
    assert!(s.sent >= 2 && s.failed == 0, "{s:?}");
    let last = notifier.deliveries().pop().unwrap();
    assert_eq!(last.status, AlertState::Resolved);
    assert!(last.ok);
}
