//! Notification receivers and routes through the REST API: round trip, secrets redacted and
//! kept (and encrypted in the database), refusals naming the problem, audit, `--notify-config`
//! seeding the store, and a webhook receiver set through REST receiving a
//! real alert (signed) with the delivery and its counters visible.
mod common;

use std::time::Duration;

use common::T;
use drover_manager::notify::webhook::verify_signature;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn receivers_and_routes_round_trip_with_secrets_kept_and_refusals_named() {
    let t = T::start().await;
    assert_eq!(t.ok(Method::GET, "/receivers", None).await["items"], json!([]));
    let none = t.err(Method::GET, "/routes", None, 404).await;
    assert!(none.contains("no route tree"), "{none}");

    // Created (201), secrets redacted in the answer.
    let body =
        json!({"webhook_configs": [{"url": "http://127.0.0.1:9/hook", "secret": "hook-s3cret", "max_attempts": 2}]});
    let (status, created) = t.call(Method::PUT, "/receivers/ops", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "ops");
    assert_eq!(created["webhook_configs"][0]["secret"], "<redacted>");
    assert_eq!(created["stats"]["sent"], 0);
    let mail = json!({"name": "mail", "email_configs": [{"host": "127.0.0.1", "port": 2525, "tls": "none",
        "username": "u", "password": "smtp-pw", "from": "drover@example.org", "to": ["oncall@example.org"]}]});
    let (status, _) = t.call(Method::PUT, "/receivers/mail", Some(mail)).await;
    assert_eq!(status, 201);

    // Secrets are encrypted at rest.
    let stored = t.handle.state.store.notification_config().await.unwrap().unwrap();
    assert!(!stored.config.contains("hook-s3cret") && !stored.config.contains("smtp-pw"), "{}", stored.config);
    assert!(stored.config.contains("enc:v1:"), "{}", stored.config);

    // A PUT with the redacted placeholder keeps the secret; the list never shows it.
    let mut shown = t.ok(Method::GET, "/receivers/ops", None).await;
    shown.as_object_mut().unwrap().remove("stats");
    shown["webhook_configs"][0]["max_attempts"] = json!(3);
    let (status, replaced) = t.call(Method::PUT, "/receivers/ops", Some(shown)).await;
    assert_eq!(status, 200, "{replaced}");
    let list = t.ok(Method::GET, "/receivers", None).await;
    let text = list.to_string();
    assert!(!text.contains("hook-s3cret") && !text.contains("smtp-pw"), "{text}");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let cfg = drover_manager::domain::notifications::load(&t.handle.state).await.unwrap().unwrap();
    let ops = cfg.receivers.iter().find(|r| r.name == "ops").unwrap();
    assert_eq!(ops.webhook_configs[0].secret.as_deref(), Some("hook-s3cret"));
    assert_eq!(ops.webhook_configs[0].max_attempts, Some(3));

    // Refusals name the problem.
    let bad_url =
        t.err(Method::PUT, "/receivers/x", Some(json!({"webhook_configs": [{"url": "ftp://nowhere"}]})), 400).await;
    assert!(bad_url.contains("webhook_configs[0].url"), "{bad_url}");
    let unknown = t.err(Method::PUT, "/receivers/x", Some(json!({"slack_configs": []})), 400).await;
    assert!(unknown.contains("slack_configs"), "{unknown}");
    let other_name = t.err(Method::PUT, "/receivers/x", Some(json!({"name": "y"})), 400).await;
    assert!(other_name.contains("\"y\"") && other_name.contains("path"), "{other_name}");
    let no_secret = t
        .err(
            Method::PUT,
            "/receivers/fresh",
            Some(json!({"webhook_configs": [{"url": "http://127.0.0.1:9/", "secret": "<redacted>"}]})),
            400,
        )
        .await;
    assert!(no_secret.contains("webhook_configs[0].secret"), "{no_secret}");
    let missing = t
        .err(
            Method::PUT,
            "/routes",
            Some(json!({"receiver": "ops", "routes": [{"receiver": "pager", "matchers": ["severity=\"critical\""]}]})),
            400,
        )
        .await;
    assert!(missing.contains("route.routes[0].receiver") && missing.contains("pager"), "{missing}");
    let bad_matcher =
        t.err(Method::PUT, "/routes", Some(json!({"receiver": "ops", "matchers": ["a=~\"(\""]})), 400).await;
    assert!(bad_matcher.contains("matchers"), "{bad_matcher}");
    let bad_wait = t.err(Method::PUT, "/routes", Some(json!({"receiver": "ops", "group_wait": "soon"})), 400).await;
    assert!(bad_wait.contains("group_wait"), "{bad_wait}");
    let rootless = t.err(Method::PUT, "/routes", Some(json!({"group_wait": "1s"})), 400).await;
    assert!(rootless.contains("route.receiver"), "{rootless}");

    // Routes round trip; a receiver a route uses cannot be deleted.
    let routes = json!({"receiver": "ops", "group_by": ["alertname"], "group_wait": "1s",
        "routes": [{"receiver": "mail", "matchers": ["severity=\"critical\""]}]});
    let set = t.ok(Method::PUT, "/routes", Some(routes.clone())).await;
    assert_eq!(set, routes);
    assert_eq!(t.ok(Method::GET, "/routes", None).await, routes);
    let used = t.err(Method::DELETE, "/receivers/mail", None, 409).await;
    assert!(used.contains("route.routes[0]"), "{used}");
    let used = t.err(Method::DELETE, "/receivers/ops", None, 409).await;
    assert!(used.contains("route") && used.contains("ops"), "{used}");
    t.err(Method::DELETE, "/receivers/nobody", None, 404).await;
    t.ok(Method::PUT, "/routes", Some(json!({"receiver": "ops"}))).await;
    let (status, _) = t.call(Method::DELETE, "/receivers/mail", None).await;
    assert_eq!(status, 204);
    t.err(Method::GET, "/receivers/mail", None, 404).await;
    assert!(t.handle.state.alerts.notifier().is_some(), "a route tree is set: the engine has a notifier");

    let bad_limit = t.err(Method::GET, "/notifications/deliveries?limit=0", None, 400).await;
    assert!(bad_limit.contains("limit"), "{bad_limit}");

    // Every change is audited.
    let audit = t.ok(Method::GET, "/audit?limit=100", None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    for a in ["receiver.create", "receiver.update", "receiver.delete", "routes.update"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn notify_config_file_seeds_the_store() {
    let t = T::start_configured(
        |dir| {
            std::fs::write(
                dir.join("notify.yaml"),
                "route: {receiver: ops, group_wait: 5s}\nreceivers:\n  - name: ops\n    webhook_configs: [{url: 'http://127.0.0.1:9/x', secret: file-secret}]\n",
            )
            .unwrap()
        },
        |c| c.notify_config = Some(c.data_dir.join("notify.yaml")),
    )
    .await;
    assert_eq!(t.ok(Method::GET, "/routes", None).await, json!({"receiver": "ops", "group_wait": "5s"}));
    let ops = t.ok(Method::GET, "/receivers/ops", None).await;
    assert_eq!(ops["webhook_configs"][0]["secret"], "<redacted>");
    let stored = t.handle.state.store.notification_config().await.unwrap().unwrap();
    assert!(!stored.config.contains("file-secret"), "{}", stored.config);
    assert_eq!(stored.updated_by, "--notify-config");

    // A key rotation seals the secrets again with the new key (the old one is then gone).
    let state = &t.handle.state;
    let (key_path, _) = state.config.secrets_key_path();
    drover_manager::secrets::rotate(&state.store, &state.catalog, &key_path, false).await.unwrap();
    let keyring = drover_manager::secrets::Keyring::load(&key_path, false).unwrap();
    let config = drover_manager::domain::notifications::load_from(&state.store, &keyring).await.unwrap().unwrap();
    assert_eq!(config.receivers[0].webhook_configs[0].secret.as_deref(), Some("file-secret"));
    let resealed = state.store.notification_config().await.unwrap().unwrap();
    assert_ne!(resealed.config, stored.config);
}

#[tokio::test]
async fn webhook_set_through_rest_receives_a_firing_alert_and_the_delivery_shows() {
    let t = T::start_configured(|_| {}, |c| c.alerts_interval = Duration::from_millis(200)).await;
    t.host("h-1", "node-1.example", "10.0.0.1").await;
    let (url, got) = common::hook_server().await;

    t.ok(Method::PUT, "/receivers/hook", Some(json!({"webhook_configs": [{"url": url, "secret": "wh-secret"}]}))).await;
    t.ok(Method::PUT, "/receivers/sink", Some(json!({}))).await;
    t.ok(
        Method::PUT,
        "/routes",
        Some(json!({"receiver": "sink", "routes": [{"receiver": "hook", "matchers": ["alertname=\"test_fires\""],
            "group_by": ["alertname"], "group_wait": "100ms", "group_interval": "1s"}]})),
    )
    .await;
    let (status, rule) = t
        .call(
            Method::POST,
            "/alert-rules",
            Some(json!({"name": "test_fires", "expr": "host_up == 1", "for": "0s", "severity": "warning"})),
        )
        .await;
    assert_eq!(status, 201, "{rule}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() {
        if tokio::time::Instant::now() >= deadline {
            let cycle = drover_manager::alerts::live::run_cycle(&t.handle.state).await;
            let alerts = t.ok(Method::GET, "/alerts", None).await;
            let health = t.ok(Method::GET, "/health", None).await;
            eprintln!("cycle {cycle:?} health {health}");
            let deliveries = t.ok(Method::GET, "/notifications/deliveries", None).await;
            panic!("no notification reached the webhook; alerts {alerts}; deliveries {deliveries}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sig, body) = got.lock().unwrap()[0].clone();
    assert!(verify_signature(b"wh-secret", &body, sig.as_deref().unwrap_or_default()), "bad signature {sig:?}");
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["status"], "firing", "{sent}");
    assert!(sent.to_string().contains("test_fires"), "{sent}");

    // The attempt and the counters.
    let mut deliveries = Value::Null;
    for _ in 0..50 {
        deliveries = t.ok(Method::GET, "/notifications/deliveries?receiver=hook&limit=10", None).await;
        if !deliveries["items"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = &deliveries["items"][0];
    assert_eq!((first["receiver"].as_str(), first["ok"].as_bool()), (Some("hook"), Some(true)), "{deliveries}");
    assert_eq!((first["integration"].as_str(), first["status"].as_str()), (Some("webhook[0]"), Some("firing")));
    let hook = t.ok(Method::GET, "/receivers/hook", None).await;
    assert!(hook["stats"]["sent"].as_u64().unwrap() >= 1, "{hook}");
    assert_eq!(hook["stats"]["failed"], 0);
    let others = t.ok(Method::GET, "/notifications/deliveries?receiver=sink", None).await;
    assert_eq!(others["items"], json!([]), "the null receiver sends nothing");
}

/// The stored configuration on PostgreSQL (migration 0011 and the store's statements).
#[tokio::test]
async fn stored_configuration_round_trips_on_postgres() {
    use sqlx::{Connection, Executor};
    let admin_url = match std::env::var("DROVER_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("DROVER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => return,
        _ => panic!(
            "DROVER_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres-test-db.sh)\"` as root first, \
             or set DROVER_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        ),
    };
    let name = format!("drover_notify_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let store = drover_manager::store::Store::open(&format!("{base}/{name}")).await.unwrap();
    let keyring = drover_manager::secrets::Keyring::from_key(&drover_manager::secrets::generate_key());
    let config = drover_manager::notify::NotifyConfig::parse(
        "route: {receiver: ops}\nreceivers:\n  - name: ops\n    webhook_configs: [{url: 'http://127.0.0.1:9/x', secret: pg-secret}]\n",
    )
    .unwrap();
    use drover_manager::domain::notifications::{load_from, store_config};
    assert_eq!(load_from(&store, &keyring).await.unwrap(), None);
    store_config(&store, &keyring, &config, "admin").await.unwrap();
    store_config(&store, &keyring, &config, "admin").await.unwrap();
    assert_eq!(load_from(&store, &keyring).await.unwrap(), Some(config));
    let rec = store.notification_config().await.unwrap().unwrap();
    assert!(!rec.config.contains("pg-secret") && rec.updated_by == "admin", "{rec:?}");
    store.close().await;
    let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
}
