//! The log REST API with the manager's request routing answered in the test
//! (`AgentRequests::attach` stands in for an agent's session; the real
//! agents are in tests/tests/logs_e2e.rs): bad input refused with 400 naming
//! the problem, unknown roles 404, a search naming the host without a
//! session as unreachable, lines labelled with host and role, the agent log
//! behind fleet read access, and the role's API view showing its log spec.
mod common;

use common::T;
use drover_manager::agent_requests::{AgentRequest, LogLine, LogStream, ReplyEnd, ReplyPart};
use reqwest::Method;
use serde_json::{Value, json};

async fn setup(t: &T) {
    t.host("h1", "h1.example", "10.0.0.1").await;
    t.host("h2", "h2.example", "10.0.0.2").await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/hosts", Some(json!({"host_ids": ["h1", "h2"]}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;
    for (host, rt, name) in [("h1", "primary", "cache-primary-1"), ("h2", "replica", "cache-replica-1")] {
        t.ok(
            Method::POST,
            "/clusters/prod/services/cache/roles",
            Some(json!({"role_type": rt, "host_id": host, "name": name})),
        )
        .await;
    }
}

#[tokio::test]
async fn bad_log_queries_are_refused_naming_the_problem() {
    let t = T::start().await;
    setup(&t).await;
    let role = "/clusters/prod/services/cache/roles/cache-primary-1/logs";
    let cases: [(String, &str); 9] = [
        ("/logs/search?cluster=prod&q=(unclosed".to_owned(), "does not compile"),
        ("/logs/search?cluster=prod&since=1h&until=2h".to_owned(), "until"),
        ("/logs/search?cluster=prod&limit=0".to_owned(), "out of range"),
        ("/logs/search?cluster=prod&limit=10001".to_owned(), "out of range"),
        ("/logs/search?cluster=prod&level=loud".to_owned(), "unknown level"),
        ("/logs/search?cluster=prod&since=yesterday".to_owned(), "RFC 3339"),
        (format!("{role}?grep=a%28"), "does not compile"),
        (format!("{role}?stream=journal"), "unknown stream"),
        (format!("{role}/download?file=../../etc/passwd"), "is not a log file"),
    ];
    for (path, want) in cases {
        let msg = t.err(Method::GET, &path, None, 400).await;
        assert!(msg.contains(want), "{path}: {msg}");
    }
    let msg = t.err(Method::GET, "/clusters/prod/services/cache/roles/nope/logs", None, 404).await;
    assert!(msg.contains("role nope not found"), "{msg}");
    t.err(Method::GET, "/logs/search?cluster=nope", None, 404).await;
    // No session: the role's host is named.
    let msg = t.err(Method::GET, role, None, 503).await;
    assert!(msg.contains("h1") && msg.contains("not connected"), "{msg}");
}

fn line(role_id: &str, n: u64, time: i64, text: &str) -> LogLine {
    LogLine {
        role_id: role_id.into(),
        file: "logs/stdout.log".into(),
        line_number: n,
        time,
        stream: LogStream::Stdout,
        level: "warn".into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn a_search_labels_matches_and_names_the_host_that_cannot_answer() {
    let t = T::start().await;
    setup(&t).await;
    let roles = t.ok(Method::GET, "/clusters/prod/services/cache/roles", None).await;
    let roles = roles["items"].as_array().cloned().unwrap_or_else(|| roles.as_array().cloned().unwrap_or_default());
    let primary = roles.iter().find(|r| r["name"] == "cache-primary-1").expect("primary role");
    assert_eq!(primary["log"], json!({"max_bytes": 10485760, "max_files": 5, "format": "redis"}));
    let primary_id = primary["id"].as_str().unwrap().to_owned();

    // h1 answers through a session the test holds; h2 has none.
    let requests = t.handle.state.agent_requests.clone();
    let mut session = requests.attach("h1", 1, true);
    let answering = tokio::spawn({
        let requests = requests.clone();
        let primary_id = primary_id.clone();
        async move {
            let (id, request) = *session.recv().await.expect("a request for h1");
            let AgentRequest::Logs(q) = request else { panic!("a log request") };
            assert_eq!(
                (q.role_ids.as_slice(), q.pattern.as_str(), q.limit),
                ([primary_id.clone()].as_slice(), "WARN", 50)
            );
            let tx = requests.reply_to("h1", &id).unwrap();
            let lines = vec![line(&primary_id, 7, 1_796_353_200_000, "WARN one"), line(&primary_id, 9, 0, "WARN two")];
            tx.send(ReplyPart::Lines(lines)).await.unwrap();
            tx.send(ReplyPart::End(ReplyEnd { scanned_bytes: 1234, ..ReplyEnd::default() })).await.unwrap();
        }
    });
    let r = t.ok(Method::GET, "/logs/search?cluster=prod&service=cache&q=WARN&limit=50&timeout=5s", None).await;
    answering.await.unwrap();
    let texts: Vec<&str> = r["matches"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["WARN two", "WARN one"], "untimed lines first, then by time: {r}");
    let m = &r["matches"][1];
    assert_eq!(
        (
            &m["hostname"],
            &m["role"],
            &m["role_type"],
            &m["cluster"],
            &m["service"],
            &m["line"],
            &m["stream"],
            &m["level"]
        ),
        (
            &json!("h1.example"),
            &json!("cache-primary-1"),
            &json!("primary"),
            &json!("prod"),
            &json!("cache"),
            &json!(7),
            &json!("stdout"),
            &json!("warn")
        )
    );
    assert_eq!(m["time"], "2026-12-04T03:00:00.000Z");
    assert_eq!(r["failed_hosts"], json!(["h2.example"]));
    let hosts: Vec<(Value, Value)> =
        r["hosts"].as_array().unwrap().iter().map(|h| (h["hostname"].clone(), h["status"].clone())).collect();
    assert_eq!(hosts, [(json!("h1.example"), json!("answered")), (json!("h2.example"), json!("unreachable"))]);
    assert_eq!(r["hosts"][0]["scanned_bytes"], 1234);
    assert_eq!(requests.pending_count(), 0);

    // A search scoped to a role type reaches only its hosts.
    let r = t.ok(Method::GET, "/logs/search?cluster=prod&role_type=replica&timeout=1s", None).await;
    assert_eq!(r["failed_hosts"], json!(["h2.example"]), "{r}");
    assert_eq!(r["hosts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_agent_log_needs_fleet_read_and_a_role_tail_reads_the_role() {
    let t = T::start().await;
    setup(&t).await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "prodviewer", "password": "logs-user-password", "grants": [{"role": "viewer", "cluster": "prod"}]})),
    )
    .await;
    let resp = t
        .client
        .get(t.url("/api/v1/hosts/h1/agent-log"))
        .basic_auth("prodviewer", Some("logs-user-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = t
        .client
        .get(t.url("/api/v1/clusters/prod/services/cache/roles/cache-primary-1/logs?tail=5"))
        .basic_auth("prodviewer", Some("logs-user-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503, "a cluster viewer may read the role's log (its host is not connected)");

    let requests = t.handle.state.agent_requests.clone();
    let mut session = requests.attach("h1", 1, true);
    let answering = tokio::spawn({
        let requests = requests.clone();
        async move {
            let (id, request) = *session.recv().await.expect("a request for h1");
            let AgentRequest::Logs(q) = request else { panic!("a log request") };
            assert!(q.agent_log && q.role_ids.is_empty() && q.tail == 5, "{q:?}");
            let tx = requests.reply_to("h1", &id).unwrap();
            let mut l = line("", 1, 0, "agent started");
            l.stream = LogStream::Agent;
            l.file = "agent.log".into();
            tx.send(ReplyPart::Lines(vec![l])).await.unwrap();
            tx.send(ReplyPart::End(ReplyEnd::default())).await.unwrap();
        }
    });
    let r = t.ok(Method::GET, "/hosts/h1/agent-log?tail=5", None).await;
    answering.await.unwrap();
    assert_eq!(r["lines"][0]["text"], "agent started", "{r}");
    assert_eq!((&r["lines"][0]["stream"], &r["lines"][0]["hostname"]), (&json!("agent"), &json!("h1.example")));
    assert_eq!((&r["truncated"], &r["error"]), (&json!(false), &Value::Null));
}
