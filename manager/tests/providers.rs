//! The Docker provider's REST API without a Docker engine: requests are
//! validated, an unreachable engine is a 503 naming the socket, deletes of
//! containers the manager did not create are refused, and nothing is recorded
//! or audited when a call fails. The real engine is exercised by
//! tests/tests/docker_provider.rs.

use reqwest::Method;
use serde_json::json;

mod common;
use common::T;

/// A manager whose Docker socket does not exist.
async fn start() -> T {
    T::start_configured(|_| {}, |c| c.docker_socket = c.data_dir.join("no-docker.sock")).await
}

#[tokio::test]
async fn requests_are_validated_and_an_absent_engine_is_a_503() {
    let h = start().await;
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
        let (status, v) = h.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, want_status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // Nothing was made: no token, no record, no audit entry.
    let (_, tokens) = h.call(Method::GET, "/enrollment-tokens", None).await;
    assert_eq!(tokens["items"], json!([]));
    let (_, list) = h.call(Method::GET, path, None).await;
    assert_eq!(list, json!({"items": []}));
    let (_, audit) = h.call(Method::GET, "/audit?object_type=container", None).await;
    assert_eq!(audit["items"], json!([]));

    let (status, v) = h.call(Method::DELETE, path, None).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().starts_with("give ?all=true"), "{v}");
    let (status, v) = h.call(Method::DELETE, "/providers/docker/hosts/someone-elses", None).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not found among the containers this manager created")
    );
    // Nothing to remove is not an error.
    let (status, v) = h.call(Method::DELETE, "/providers/docker/hosts?all=true", None).await;
    assert_eq!((status, v), (200, json!({"items": []})));
    h.handle.shutdown().await;
}
