//! The alert engine through the REST API: heartbeats carrying a Redis role's memory figures
//! make its health test concerning then bad (and its service and cluster with it), a rule over
//! the metric fires and resolves, a silence mutes it, history keeps every transition, and a
//! reader of another cluster sees none of it. Cycles are run by the test
//! (`alerts::live::run_cycle`), not by the timer, so each step is deterministic.
mod common;

use std::collections::BTreeMap;

use common::T;
use drover_manager::alerts::live::run_cycle;
use drover_manager::domain::metrics::{RoleReport, Sample};
use drover_manager::model::now_millis;
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "alerts-viewer-password";

struct Fleet {
    t: T,
    primary: String,
}

async fn fleet() -> Fleet {
    let (t, primary) = common::redis_alert_fleet("h1.example", &["prod", "dev"]).await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "devviewer", "password": PASSWORD, "grants": [{"role": "viewer", "cluster": "dev"}]})),
    )
    .await;
    Fleet { t, primary }
}

impl Fleet {
    /// A heartbeat from h1 with the primary's used-memory ratio, then one engine cycle.
    async fn redis_memory(&self, ratio: f64) {
        let state = &self.t.handle.state;
        let report = RoleReport {
            role_id: self.primary.clone(),
            process: None,
            samples: vec![Sample {
                name: "redis_memory_used_ratio".into(),
                value: ratio,
                labels: BTreeMap::new(),
                at_ms: now_millis(),
            }],
            collect_error: String::new(),
        };
        assert!(state.registry.heartbeat_with_roles("h1", common::host_metrics(Vec::new()), vec![report]));
        run_cycle(state).await.expect("cycle");
    }

    /// A GET as `devviewer`: (status, JSON body).
    async fn as_viewer(&self, path: &str) -> (u16, Value) {
        let resp = self
            .t
            .client
            .get(self.t.url(&format!("/api/v1{path}")))
            .basic_auth("devviewer", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn role_health(&self) -> Value {
        self.t.ok(Method::GET, "/health?cluster=prod&service=cache&role=cache-primary", None).await
    }

    async fn alerts(&self) -> Vec<Value> {
        self.t.ok(Method::GET, "/alerts", None).await["items"].as_array().unwrap().clone()
    }
}

fn status(node: &Value) -> &str {
    node["status"].as_str().unwrap()
}

#[tokio::test]
async fn redis_memory_turns_health_concerning_then_bad_and_a_rule_fires_and_resolves() {
    let f = fleet().await;
    f.redis_memory(0.5).await;
    assert_eq!(status(&f.role_health().await), "good");

    f.redis_memory(0.93).await;
    let role = f.role_health().await;
    assert_eq!(status(&role), "concerning", "{role}");
    let test = role["tests"].as_array().unwrap().iter().find(|t| t["test"] == "redis_memory").expect("the test");
    assert_eq!(test["value"], 0.93);
    assert!(test["summary"].as_str().unwrap().contains("0.93"), "{test}");
    let cluster = f.t.ok(Method::GET, "/health?cluster=prod", None).await;
    assert_eq!(status(&cluster), "concerning", "the cluster follows its service: {cluster}");
    let service = &cluster["children"].as_array().unwrap()[0];
    assert_eq!((service["kind"].as_str(), status(service)), (Some("service"), "concerning"));

    f.redis_memory(0.99).await;
    assert_eq!(status(&f.role_health().await), "bad");
    assert_eq!(status(&f.t.ok(Method::GET, "/health", None).await), "bad", "the fleet is as bad as its worst cluster");

    // A rule over the metric: fires at once (no `for`), with the rule's labels and summary.
    f.t.ok(
        Method::POST,
        "/alert-rules",
        Some(json!({
            "name": "redis_memory_high", "expr": "redis_memory_used_ratio > 0.95", "severity": "critical",
            "labels": {"team": "cache"}, "annotations": {"summary": "{{labels.role}} uses {{value}} of maxmemory"}
        })),
    )
    .await;
    f.redis_memory(0.99).await;
    let alerts = f.alerts().await;
    let fired = alerts.iter().find(|a| a["rule"] == "redis_memory_high").unwrap_or_else(|| panic!("{alerts:?}"));
    assert_eq!(fired["state"], "firing");
    assert_eq!(fired["labels"]["role"], "cache-primary");
    assert_eq!(fired["labels"]["team"], "cache");
    assert_eq!(fired["labels"]["severity"], "critical");
    assert_eq!(fired["annotations"]["summary"], "cache-primary uses 0.99 of maxmemory");
    // A reader of another cluster sees neither the alert nor the cluster's health.
    let (code, body) = f.as_viewer("/alerts").await;
    assert_eq!(code, 200);
    assert!(body["items"].as_array().unwrap().is_empty(), "{body}");
    let (code, _) = f.as_viewer("/health?cluster=prod").await;
    assert_eq!(code, 403);

    // A silence mutes it (still listed, marked); the history says so on the next transition.
    let silence =
        f.t.ok(
            Method::POST,
            "/silences",
            Some(json!({"matchers": [{"name": "alertname", "op": "=", "value": "redis_memory_high"}],
                "duration": "1h", "comment": "filling it on purpose"})),
        )
        .await;
    f.redis_memory(0.99).await;
    let muted = f.alerts().await.into_iter().find(|a| a["rule"] == "redis_memory_high").unwrap();
    assert_eq!(muted["silenced_by"], json!([silence["id"]]));

    f.redis_memory(0.2).await;
    assert!(f.alerts().await.iter().all(|a| a["rule"] != "redis_memory_high"));
    assert_eq!(status(&f.role_health().await), "good");
    let history = f.t.ok(Method::GET, "/alerts/history?rule=redis_memory_high", None).await;
    let states: Vec<(String, bool)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["state"].as_str().unwrap().to_owned(), h["suppressed"].as_bool().unwrap()))
        .collect();
    assert_eq!(states, [("resolved".to_owned(), true), ("firing".to_owned(), false)], "newest first: {history}");
}

#[tokio::test]
async fn health_answers_name_what_is_missing() {
    let f = fleet().await;
    run_cycle(&f.t.handle.state).await.expect("cycle");
    let msg = f.t.err(Method::GET, "/health?service=cache", None, 422).await;
    assert!(msg.contains("need cluster"), "{msg}");
    let msg = f.t.err(Method::GET, "/health?cluster=nope", None, 404).await;
    assert!(msg.contains("nope"), "{msg}");
    let msg = f.t.err(Method::GET, "/health?cluster=prod&service=cache&role=nope", None, 404).await;
    assert!(msg.contains("prod/cache/nope"), "{msg}");
    let host = f.t.ok(Method::GET, "/health?host=h1.example", None).await;
    assert_eq!(host["kind"], "host");
    assert!(host["tests"].as_array().unwrap().iter().any(|t| t["test"] == "agent"), "{host}");
}
