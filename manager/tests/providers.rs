//! The Docker provider's REST API without a Docker engine: requests are
//! validated, an unreachable engine is a 503 naming the socket, deletes of
//! containers the manager did not create are refused, and nothing is recorded
//! or audited when a call fails. The real engine is exercised by
//! tests/tests/docker_provider.rs.

use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const PASSWORD: &str = "providers-test-password";

async fn start(dir: &std::path::Path) -> ManagerHandle {
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(PASSWORD.into());
    config.docker_socket = dir.join("no-docker.sock");
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await.unwrap()
}

async fn call(h: &ManagerHandle, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}/api/v1{path}", h.http_addr))
        .basic_auth("admin", Some(PASSWORD));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn requests_are_validated_and_an_absent_engine_is_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path()).await;
    let path = "/providers/docker/hosts";
    let cases = [
        (json!({"count": 0}), 400, "count must be between 1 and 100, got 0"),
        (json!({"count": 1, "name_prefix": "Bad_"}), 400, "invalid name_prefix \"Bad_\""),
        (json!({"count": 1, "memory": "lots"}), 400, "invalid memory \"lots\""),
        (json!({"count": 1, "cpus": 0}), 400, "cpus must be above 0"),
        (json!({"count": 1, "labels": {"bad key": "x"}}), 400, "invalid label key \"bad key\""),
        (json!({"count": 1, "colour": "red"}), 400, "unknown field `colour`"),
        (json!({"count": 1}), 503, "no-docker.sock is not reachable"),
    ];
    for (body, want_status, want) in cases {
        let (status, v) = call(&h, Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, want_status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // Nothing was made: no token, no record, no audit entry.
    let (_, tokens) = call(&h, Method::GET, "/enrollment-tokens", None).await;
    assert_eq!(tokens["items"], json!([]));
    let (_, list) = call(&h, Method::GET, path, None).await;
    assert_eq!(list, json!({"items": []}));
    let (_, audit) = call(&h, Method::GET, "/audit?object_type=container", None).await;
    assert_eq!(audit["items"], json!([]));

    let (status, v) = call(&h, Method::DELETE, path, None).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().starts_with("give ?all=true"), "{v}");
    let (status, v) = call(&h, Method::DELETE, "/providers/docker/hosts/someone-elses", None).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not found among the containers this manager created")
    );
    // Nothing to remove is not an error.
    let (status, v) = call(&h, Method::DELETE, "/providers/docker/hosts?all=true", None).await;
    assert_eq!((status, v), (200, json!({"items": []})));
    h.shutdown().await;
}
