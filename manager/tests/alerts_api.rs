//! Alert rules, silences, maintenance mode and the alert history through the REST API: CRUD,
//! built-in overrides and their reset, the YAML export and all-or-nothing import, every
//! refusal naming the problem, audit rows and who may change what.
mod common;

use common::T;
use drover_api::alerts::{AlertState, Severity};
use drover_manager::store::AlertHistoryRec;
use reqwest::Method;
use serde_json::{Value, json};

const USER_PASSWORD: &str = "alerts-user-password";

fn rule(name: &str, expr: &str) -> Value {
    json!({"name": name, "expr": expr, "for": "5m", "severity": "warning",
        "labels": {"team": "db"}, "annotations": {"summary": "{{labels.host}} memory at {{value}}"}})
}

async fn as_user(t: &T, user: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = t.client.request(method, t.url(&format!("/api/v1{path}"))).basic_auth(user, Some(USER_PASSWORD));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn raw(t: &T, method: Method, path: &str, content_type: &str, body: &str) -> (u16, String, String) {
    let resp = t
        .client
        .request(method, t.url(&format!("/api/v1{path}")))
        .basic_auth("admin", Some(common::PASSWORD))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

async fn audit_actions(t: &T, object_type: &str) -> Vec<(String, String, String)> {
    let audit = t.ok(Method::GET, &format!("/audit?object_type={object_type}&limit=100"), None).await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["object_id"].as_str().unwrap().to_owned(),
                a["permission"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn rules_are_created_changed_exported_imported_and_deleted() {
    let t = T::start().await;
    // The built-in rules are listed as such.
    let list = t.ok(Method::GET, "/alert-rules", None).await;
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for b in ["host_lost", "role_bad", "crash_loop", "stale_configuration", "disk_nearly_full"] {
        assert!(names.contains(&b), "{names:?}");
    }
    let disk = t.ok(Method::GET, "/alert-rules/disk_nearly_full", None).await;
    assert_eq!((disk["builtin"].as_bool(), disk["expr"].as_str()), (Some(true), Some("host_disk_used_ratio > 0.9")));
    assert_eq!(disk["for"], "5m");
    assert_eq!(disk["updated_by"], Value::Null);

    // A user rule, naming a catalogued metric no role has reported yet.
    let created = t.ok(Method::POST, "/alert-rules", Some(rule("redis-memory", "redis_memory_used_ratio > 0.9"))).await;
    assert_eq!((created["builtin"].as_bool(), created["updated_by"].as_str()), (Some(false), Some("admin")));
    assert_eq!(created["enabled"], true);
    let again = t.err(Method::POST, "/alert-rules", Some(rule("redis-memory", "redis_keys > 1")), 409).await;
    assert!(again.contains("redis-memory already exists"), "{again}");
    let builtin = t.err(Method::POST, "/alert-rules", Some(rule("host_lost", "host_up == 0")), 409).await;
    assert!(builtin.contains("built in"), "{builtin}");
    // Changed with PUT.
    let mut changed = rule("redis-memory", "max by (cluster) (redis_memory_used_ratio) > 0.95");
    changed["severity"] = json!("critical");
    let put = t.ok(Method::PUT, "/alert-rules/redis-memory", Some(changed)).await;
    assert_eq!(put["severity"], "critical");
    assert_eq!(t.ok(Method::GET, "/alert-rules/redis-memory", None).await["expr"], put["expr"]);

    // A built-in disabled and tuned, then reset by DELETE.
    let mut tuned = disk.clone();
    for k in ["builtin", "updated_at", "updated_by"] {
        tuned.as_object_mut().unwrap().remove(k);
    }
    tuned["expr"] = json!("host_disk_used_ratio > 0.8");
    tuned["enabled"] = json!(false);
    let over = t.ok(Method::PUT, "/alert-rules/disk_nearly_full", Some(tuned)).await;
    assert_eq!((over["builtin"].as_bool(), over["enabled"].as_bool()), (Some(true), Some(false)));
    let effective = drover_manager::domain::alerts::effective_rules(&t.handle.state).await.unwrap();
    assert!(!effective.iter().any(|r| r.name == "disk_nearly_full"), "disabled");
    assert!(effective.iter().any(|r| r.name == "redis-memory" && !r.builtin));
    assert!(effective.iter().any(|r| r.name == "host_lost" && r.builtin));
    let (s, _) = t.call(Method::DELETE, "/alert-rules/disk_nearly_full", None).await;
    assert_eq!(s, 204);
    let reset = t.ok(Method::GET, "/alert-rules/disk_nearly_full", None).await;
    assert_eq!(reset, disk, "reset to the default");
    // Deleting a built-in with no override is a reset too; an unknown rule is a 404.
    assert_eq!(t.call(Method::DELETE, "/alert-rules/host_lost", None).await.0, 204);
    let gone = t.err(Method::DELETE, "/alert-rules/nope", None, 404).await;
    assert!(gone.contains("alert rule nope not found"), "{gone}");
    t.err(Method::GET, "/alert-rules/nope", None, 404).await;

    // Export as YAML, delete, import the export back: the same rules.
    let before = t.ok(Method::GET, "/alert-rules", None).await;
    let (s, ct, yaml) = raw(&t, Method::GET, "/alert-rules/export", "text/plain", "").await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/yaml"), "{ct}");
    assert!(yaml.contains("name: redis-memory") && yaml.contains("name: host_lost"), "{yaml}");
    assert_eq!(t.call(Method::DELETE, "/alert-rules/redis-memory", None).await.0, 204);
    let (s, _, body) = raw(&t, Method::POST, "/alert-rules/import", "text/yaml", &yaml).await;
    assert_eq!(s, 200, "{body}");
    let after = t.ok(Method::GET, "/alert-rules", None).await;
    let strip = |v: &Value| -> Vec<Value> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("updated_at");
                r.as_object_mut().unwrap().remove("updated_by");
                r
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before), "an import of the export gives the same rules");

    // One bad rule refuses the whole import, naming it.
    let bad = "- name: fine-one\n  expr: host_load1 > 4\n  severity: info\n- name: broken\n  expr: no_such_metric > 1\n  severity: info\n";
    let (s, _, body) = raw(&t, Method::POST, "/alert-rules/import", "text/yaml", bad).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("rule broken") && body.contains("no_such_metric"), "{body}");
    t.err(Method::GET, "/alert-rules/fine-one", None, 404).await;
    for (yaml, says) in [
        ("", "empty import"),
        ("{not: [a list", "invalid YAML"),
        ("- name: x\n  expr: host_load1 > 1\n  severity: fatal\n", "rule #1 (x)"),
        (
            "- name: dup\n  expr: host_load1 > 1\n  severity: info\n- name: dup\n  expr: host_load1 > 2\n  severity: info\n",
            "given twice",
        ),
    ] {
        let (s, _, body) = raw(&t, Method::POST, "/alert-rules/import", "text/yaml", yaml).await;
        assert_eq!(s, 400, "{yaml}: {body}");
        assert!(body.contains(says), "{yaml}: {body}");
    }
    // {rules: [...]} is taken too.
    let (s, _, body) = raw(
        &t,
        Method::POST,
        "/alert-rules/import",
        "text/yaml",
        "rules:\n  - name: load\n    expr: host_load1 > 8\n    severity: info\n",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(t.ok(Method::GET, "/alert-rules/load", None).await["severity"], "info");

    // Every change is audited with the permission it needed.
    let audit = audit_actions(&t, "alert_rule").await;
    for action in ["alert_rule.create", "alert_rule.update", "alert_rule.delete", "alert_rule.import"] {
        assert!(audit.iter().any(|(a, _, p)| a == action && p == "config.write"), "{action}: {audit:?}");
    }
}

#[tokio::test]
async fn every_bad_rule_is_a_400_naming_the_problem() {
    let t = T::start().await;
    let builtins = t.ok(Method::GET, "/alert-rules", None).await;
    let cases: Vec<(Value, &str)> = vec![
        (rule("Bad Name", "host_load1 > 1"), "invalid rule name"),
        (rule("", "host_load1 > 1"), "invalid rule name"),
        (rule("export", "host_load1 > 1"), "reserved"),
        (rule("x", "nonexistent_metric > 1"), "nonexistent_metric"),
        (rule("x", "host_load1 >"), "expr"),
        (rule("x", "   "), "expr: empty"),
        (
            json!({"name": "x", "expr": "host_load1 > 1", "for": "five minutes", "severity": "info"}),
            "for: invalid duration",
        ),
        (
            json!({"name": "x", "expr": "host_load1 > 1", "keep_firing_for": "-1s", "severity": "info"}),
            "keep_firing_for",
        ),
        (json!({"name": "x", "expr": "host_load1 > 1", "severity": "fatal"}), "unknown variant `fatal`"),
        (json!({"name": "x", "expr": "host_load1 > 1", "severity": "info", "labels": {"1bad": "v"}}), "label \"1bad\""),
        (
            json!({"name": "x", "expr": "host_load1 > 1", "severity": "info", "labels": {"severity": "v"}}),
            "set by Drover",
        ),
        (
            json!({"name": "x", "expr": "host_load1 > 1", "severity": "info", "annotations": {"summary": "{{#if}"}}),
            "invalid template",
        ),
        (json!({"name": "x", "expr": "host_load1 > 1", "severity": "info", "colour": "red"}), "unknown field `colour`"),
    ];
    for (body, says) in cases {
        let msg = t.err(Method::POST, "/alert-rules", Some(body.clone()), 400).await;
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let msg = t.err(Method::PUT, "/alert-rules/other", Some(rule("x", "host_load1 > 1")), 400).await;
    assert!(msg.contains("path names \"other\""), "{msg}");
    assert_eq!(t.ok(Method::GET, "/alert-rules", None).await, builtins, "nothing was stored");
}

#[tokio::test]
async fn silences_are_checked_created_listed_and_expired() {
    let t = T::start().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"matchers": [], "duration": "1h", "comment": "c"}), "at least one"),
        (
            json!({"matchers": [{"name": "host", "op": "~", "value": "a"}], "duration": "1h", "comment": "c"}),
            "unknown operator \"~\"",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=~", "value": "("}], "duration": "1h", "comment": "c"}),
            "invalid regular expression",
        ),
        (
            json!({"matchers": [{"name": "bad-name", "op": "=", "value": "a"}], "duration": "1h", "comment": "c"}),
            "invalid label name",
        ),
        (json!({"matchers": [{"name": "host", "op": "=", "value": "a"}], "comment": "c"}), "give ends_at"),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "a"}], "duration": "1h", "ends_at": "2099-01-01T00:00:00Z", "comment": "c"}),
            "not both",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "a"}], "ends_at": "2001-01-01T00:00:00Z", "comment": "c"}),
            "not in the future",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "a"}], "ends_at": "tomorrow", "comment": "c"}),
            "RFC 3339",
        ),
        (
            json!({"matchers": [{"name": "host", "op": "=", "value": "a"}], "duration": "soon", "comment": "c"}),
            "duration: invalid duration",
        ),
    ];
    for (body, says) in cases {
        let msg = t.err(Method::POST, "/silences", Some(body.clone()), 400).await;
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let s = t
        .ok(
            Method::POST,
            "/silences",
            Some(json!({"matchers": [{"name": "host", "op": "=", "value": "db1"},
                {"name": "alertname", "op": "=~", "value": "host_.*"}], "duration": "2h", "comment": "disk swap"})),
        )
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!((s["state"].as_str(), s["created_by"].as_str()), (Some("active"), Some("admin")));
    let listed = t.ok(Method::GET, "/silences", None).await;
    assert_eq!(listed["items"][0]["id"], json!(id));
    assert_eq!(t.ok(Method::GET, &format!("/silences/{id}"), None).await["comment"], "disk swap");

    // The engine's view: the active silence matches an alert's labels, anchored.
    let active = t.handle.state.store.active_silences(drover_manager::model::now_millis()).await.unwrap();
    assert_eq!(active.len(), 1);
    let m = drover_manager::domain::alerts::compile_silence(&active[0]).unwrap();
    let labels = |host: &str, name: &str| -> std::collections::BTreeMap<String, String> {
        [("host".to_owned(), host.to_owned()), ("alertname".to_owned(), name.to_owned())].into()
    };
    assert!(drover_manager::domain::alerts::silence_matches(&m, &labels("db1", "host_lost")));
    assert!(!drover_manager::domain::alerts::silence_matches(&m, &labels("db1", "role_bad")));
    assert!(!drover_manager::domain::alerts::silence_matches(&m, &labels("db1", "xhost_lost")));
    assert!(!drover_manager::domain::alerts::silence_matches(&m, &labels("db2", "host_lost")));

    let expired = t.ok(Method::DELETE, &format!("/silences/{id}"), None).await;
    assert_eq!(expired["state"], "expired");
    let again = t.err(Method::DELETE, &format!("/silences/{id}"), None, 409).await;
    assert!(again.contains("already expired"), "{again}");
    t.err(Method::GET, "/silences/nope", None, 404).await;
    assert!(t.handle.state.store.active_silences(drover_manager::model::now_millis()).await.unwrap().is_empty());
    let audit = audit_actions(&t, "silence").await;
    assert!(audit.contains(&("silence.create".into(), id.clone(), "commands.run".into())), "{audit:?}");
    assert!(audit.contains(&("silence.expire".into(), id, "commands.run".into())), "{audit:?}");
}

#[tokio::test]
async fn maintenance_mode_of_hosts_services_and_clusters() {
    let t = T::start().await;
    t.host("h1", "db1.example", "10.0.0.1").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;

    let h = t.ok(Method::PUT, "/maintenance/host/db1.example", Some(json!({"comment": "new disk"}))).await;
    assert_eq!(
        (h["kind"].as_str(), h["target"].as_str(), h["by"].as_str()),
        (Some("host"), Some("db1.example"), Some("admin"))
    );
    t.ok(Method::PUT, "/maintenance/cluster/prod", Some(json!({}))).await;
    let s = t.ok(Method::PUT, "/maintenance/service/prod/cache", Some(json!({"comment": "upgrade"}))).await;
    assert_eq!(s["target"], "prod/cache");
    let list = t.ok(Method::GET, "/maintenance", None).await;
    let got: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap().to_owned(), m["target"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        got,
        [
            ("cluster".into(), "prod".into()),
            ("host".into(), "db1.example".into()),
            ("service".into(), "prod/cache".into())
        ]
    );
    assert_eq!(t.handle.state.store.maintenance_list().await.unwrap().len(), 3);

    // Targets must exist; kinds are host, service or cluster.
    assert!(
        t.err(Method::PUT, "/maintenance/host/nope.example", Some(json!({})), 404)
            .await
            .contains("host nope.example not found")
    );
    assert!(
        t.err(Method::PUT, "/maintenance/cluster/nope", Some(json!({})), 404).await.contains("cluster nope not found")
    );
    assert!(
        t.err(Method::PUT, "/maintenance/service/prod/nope", Some(json!({})), 404)
            .await
            .contains("service nope not found")
    );
    t.err(Method::PUT, "/maintenance/rack/r1", Some(json!({})), 400).await;

    assert_eq!(t.call(Method::DELETE, "/maintenance/host/db1.example", None).await.0, 204);
    assert_eq!(t.call(Method::DELETE, "/maintenance/service/prod/cache", None).await.0, 204);
    let msg = t.err(Method::DELETE, "/maintenance/host/db1.example", None, 404).await;
    assert!(msg.contains("not in maintenance mode"), "{msg}");
    assert_eq!(t.ok(Method::GET, "/maintenance", None).await["items"].as_array().unwrap().len(), 1);
    let audit = audit_actions(&t, "host").await;
    assert!(
        audit.iter().any(|(a, o, p)| a == "maintenance.on" && o == "db1.example" && p == "commands.run"),
        "{audit:?}"
    );
    assert!(audit.iter().any(|(a, _, _)| a == "maintenance.off"), "{audit:?}");
}

#[tokio::test]
async fn the_history_lists_transitions_newest_first_and_filters() {
    let t = T::start().await;
    let now = drover_manager::model::now_millis();
    let entry = |i: i64, rule: &str, state, cluster: &str| AlertHistoryRec {
        id: 0,
        at: now - 10_000 + i * 1000,
        rule: rule.into(),
        fingerprint: format!("fp{i}"),
        state,
        severity: Severity::Warning,
        labels: [("cluster".to_owned(), cluster.to_owned())].into(),
        value: i as f64,
        summary: format!("summary {i}"),
        suppressed: i == 2,
    };
    let entries = vec![
        entry(1, "host_lost", AlertState::Pending, "prod"),
        entry(2, "host_lost", AlertState::Firing, "prod"),
        entry(3, "role_bad", AlertState::Firing, "dev"),
        entry(4, "host_lost", AlertState::Resolved, "prod"),
    ];
    drover_manager::domain::alerts::record_history(&t.handle.state, &entries).await.unwrap();
    let all = t.ok(Method::GET, "/alerts/history", None).await;
    let rules: Vec<&str> =
        all["items"].as_array().unwrap().iter().map(|e| e["fingerprint"].as_str().unwrap()).collect();
    assert_eq!(rules, ["fp4", "fp3", "fp2", "fp1"]);
    assert_eq!(all["items"][2]["suppressed"], true);
    assert_eq!(all["items"][2]["state"], "firing");
    let firing = t.ok(Method::GET, "/alerts/history?rule=host_lost&state=firing", None).await;
    assert_eq!(firing["items"].as_array().unwrap().len(), 1);
    let since = drover_manager::model::rfc3339(now - 10_000 + 3000);
    let recent = t.ok(Method::GET, &format!("/alerts/history?since={}&limit=1", since.replace('+', "%2B")), None).await;
    assert_eq!(recent["items"][0]["fingerprint"], "fp4");
    assert_eq!(recent["items"].as_array().unwrap().len(), 1);
    assert!(t.err(Method::GET, "/alerts/history?since=yesterday", None, 400).await.contains("RFC 3339"));
    assert!(t.err(Method::GET, "/alerts/history?limit=0", None, 400).await.contains("limit"));
    assert!(t.err(Method::GET, "/alerts/history?state=bogus", None, 400).await.contains("state"));
    // Pruned with the events' retention.
    assert_eq!(t.handle.state.store.prune_alert_history(now - 10_000 + 2500).await.unwrap(), 2);

    // A viewer of dev sees only dev's entries.
    t.ok(Method::POST, "/clusters", Some(json!({"name": "dev"}))).await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "devviewer", "password": USER_PASSWORD,
        "grants": [{"role": "viewer", "cluster": "dev"}]})),
    )
    .await;
    let (s, v) = as_user(&t, "devviewer", Method::GET, "/alerts/history", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["rule"], "role_bad");
}

#[tokio::test]
async fn viewers_read_operators_silence_and_only_fleet_configurers_change_rules() {
    let t = T::start().await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    for (name, grants) in [
        ("viewer", json!([{"role": "viewer"}])),
        ("prodop", json!([{"role": "operator", "cluster": "prod"}])),
        ("prodadmin", json!([{"role": "cluster-admin", "cluster": "prod"}])),
        ("fleetcfg", json!([{"role": "configurator"}])),
    ] {
        t.ok(Method::POST, "/users", Some(json!({"username": name, "password": USER_PASSWORD, "grants": grants})))
            .await;
    }
    let body = rule("mine", "host_load1 > 4");
    // A viewer reads but cannot change rules: 403 naming the permission.
    assert_eq!(as_user(&t, "viewer", Method::GET, "/alert-rules", None).await.0, 200);
    let (s, v) = as_user(&t, "viewer", Method::POST, "/alert-rules", Some(body.clone())).await;
    assert_eq!((s, v["error"]["permission"].as_str()), (403, Some("config.write")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("config.write"), "{v}");
    // A cluster-admin of one cluster does not change fleet-wide rules; a fleet configurator does.
    assert_eq!(as_user(&t, "prodadmin", Method::POST, "/alert-rules", Some(body.clone())).await.0, 403);
    assert_eq!(as_user(&t, "fleetcfg", Method::POST, "/alert-rules", Some(body)).await.0, 201);
    // An operator of prod silences prod's alerts and puts prod in maintenance, not the fleet's.
    let prod = json!({"matchers": [{"name": "cluster", "op": "=", "value": "prod"}], "duration": "1h", "comment": "x"});
    let any = json!({"matchers": [{"name": "host", "op": "=", "value": "a"}], "duration": "1h", "comment": "x"});
    assert_eq!(as_user(&t, "prodop", Method::POST, "/silences", Some(prod)).await.0, 201);
    let (s, v) = as_user(&t, "prodop", Method::POST, "/silences", Some(any)).await;
    assert_eq!((s, v["error"]["permission"].as_str()), (403, Some("commands.run")), "{v}");
    assert_eq!(as_user(&t, "prodop", Method::PUT, "/maintenance/cluster/prod", Some(json!({}))).await.0, 200);
    assert_eq!(as_user(&t, "viewer", Method::PUT, "/maintenance/cluster/prod", Some(json!({}))).await.0, 403);
    assert_eq!(as_user(&t, "viewer", Method::GET, "/maintenance", None).await.0, 200);
    assert_eq!(as_user(&t, "viewer", Method::GET, "/silences", None).await.0, 200);
}
