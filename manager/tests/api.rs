//! The REST API and web console through the real router, in process: each test
//! starts a real manager (SQLite in a temp dir, port-0 listeners) and sends
//! requests with `tower::ServiceExt::oneshot`, so there is no network I/O.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use drover_manager::auth::sha256_hex;
use drover_manager::model::{Labels, now_millis};
use drover_manager::store::ApiTokenRecord;
use drover_manager::{Manager, ManagerConfig, ManagerHandle, fixtures};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

const ADMIN_PASSWORD: &str = "correct horse battery staple";
const CLIENT: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

struct TestManager {
    handle: ManagerHandle,
    router: Router,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Admin,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
    Cookie(&'a str),
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and the `{"error": {"code", "message"}}` shape, and
    /// returns the message.
    #[track_caller]
    fn expect_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header(header::CONTENT_TYPE), Some("application/json"));
        let body = self.json();
        let error = body.as_object().and_then(|o| o.get("error")).and_then(Value::as_object).expect("error object");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only `error` at top level: {body}");
        assert_eq!(error.len(), 2, "only code and message: {body}");
        assert_eq!(error.get("code").and_then(Value::as_str), Some(code), "{body}");
        let message = error.get("message").and_then(Value::as_str).expect("message is a string").to_owned();
        assert!(!message.is_empty());
        message
    }
}

impl TestManager {
    async fn start() -> TestManager {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ManagerConfig::for_data_dir(dir.path());
        config.database_url = None;
        config.admin_password = Some(ADMIN_PASSWORD.into());
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let handle = Manager::start(config, http, grpc).await.expect("start manager");
        let router = drover_manager::http::router(handle.state.clone());
        TestManager { handle, router, _dir: dir }
    }

    async fn stop(self) {
        self.handle.shutdown().await;
    }

    async fn send(&self, mut req: Request<Body>) -> Response {
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(CLIENT)));
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 16 << 20).await.expect("read body");
        Response { status: parts.status, headers: parts.headers, body }
    }

    fn builder(method: Method, uri: &str, auth: Auth<'_>) -> axum::http::request::Builder {
        let b = Request::builder().method(method).uri(uri);
        let basic = |user: &str, password: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        };
        match auth {
            Auth::None => b,
            Auth::Admin => b.header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD)),
            Auth::Basic(user, password) => b.header(header::AUTHORIZATION, basic(user, password)),
            Auth::Bearer(token) => b.header(header::AUTHORIZATION, format!("Bearer {token}")),
            Auth::Cookie(sid) => b.header(header::COOKIE, format!("theme=dark; drover_session={sid}")),
        }
    }

    async fn get(&self, uri: &str, auth: Auth<'_>) -> Response {
        self.send(Self::builder(Method::GET, uri, auth).body(Body::empty()).unwrap()).await
    }

    async fn delete(&self, uri: &str, auth: Auth<'_>) -> Response {
        self.send(Self::builder(Method::DELETE, uri, auth).body(Body::empty()).unwrap()).await
    }

    async fn json(&self, method: Method, uri: &str, auth: Auth<'_>, body: &Value) -> Response {
        self.raw(method, uri, auth, "application/json", body.to_string()).await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        auth: Auth<'_>,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Response {
        let req =
            Self::builder(method, uri, auth).header(header::CONTENT_TYPE, content_type).body(body.into()).unwrap();
        self.send(req).await
    }

    /// Creates an enrollment token through the API and returns the response body.
    async fn create_enrollment_token(&self, body: &Value) -> Value {
        let resp = self.json(Method::POST, "/api/v1/enrollment-tokens", Auth::Admin, body).await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
        resp.json()
    }

    /// Enrolls a host through the store, as the gRPC service would.
    async fn add_host(&self, id: &str, hostname: &str, labels: Labels) {
        fixtures::enroll(&self.handle.state, id, fixtures::facts(hostname, "10.0.0.9"), labels).await.unwrap();
    }

    /// Signs in to the console and returns the session id.
    async fn login(&self) -> String {
        let resp = self
            .raw(
                Method::POST,
                "/login",
                Auth::None,
                "application/x-www-form-urlencoded",
                "username=admin&password=correct+horse+battery+staple",
            )
            .await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());
        assert_eq!(resp.header(header::LOCATION), Some("/"));
        let cookie = resp.header(header::SET_COOKIE).expect("session cookie").to_owned();
        let (pair, attributes) = cookie.split_once(';').expect("cookie attributes");
        for attr in ["Path=/", "HttpOnly", "SameSite=Lax"] {
            assert!(attributes.contains(attr), "{attr} missing from {cookie}");
        }
        let sid = pair.strip_prefix("drover_session=").expect("drover_session cookie");
        assert_eq!(sid.len(), 64);
        sid.to_owned()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn is_token_chars(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

#[tokio::test]
async fn healthz_needs_no_auth() {
    let m = TestManager::start().await;
    let resp = m.get("/healthz", Auth::None).await;
    assert_eq!(resp.status, StatusCode::OK);
    let body = resp.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        body["fleet"],
        json!({"hosts": 0, "healthy": 0, "lost": 0, "decommissioned": 0, "connected_sessions": 0})
    );
    m.stop().await;
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_json() {
    let m = TestManager::start().await;
    let cases = [
        ("no credentials", Auth::None),
        ("wrong password", Auth::Basic("admin", "wrong")),
        ("unknown user", Auth::Basic("mallory", ADMIN_PASSWORD)),
        ("empty password", Auth::Basic("admin", "")),
        ("unknown API token", Auth::Bearer("drvt_0000000000000000000000000000000000000000000000000000000000000000")),
        ("empty bearer", Auth::Bearer("")),
        ("session id as bearer", Auth::Bearer("not-a-token")),
    ];
    for (what, auth) in cases {
        let resp = m.get("/api/v1/users/me", auth).await;
        let message = resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let want = if matches!(auth, Auth::None) {
            "authentication required: use HTTP Basic (user:password) or Authorization: Bearer <api token>"
        } else {
            "invalid credentials: wrong user name or password, or an unknown or expired API token"
        };
        assert_eq!(message, want, "{what}");
        assert_eq!(resp.header(header::WWW_AUTHENTICATE), Some("Basic realm=\"drover\", Bearer"), "{what}");
    }

    let malformed =
        Request::get("/api/v1/hosts").header(header::AUTHORIZATION, "Basic !!!notbase64").body(Body::empty());
    let resp = m.send(malformed.unwrap()).await;
    assert_eq!(resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized"), "malformed Basic credentials");

    let no_colon = base64::engine::general_purpose::STANDARD.encode("admin");
    let req = Request::get("/api/v1/hosts").header(header::AUTHORIZATION, format!("Basic {no_colon}"));
    let resp = m.send(req.body(Body::empty()).unwrap()).await;
    assert_eq!(resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized"), "malformed Basic credentials");

    let req = Request::get("/api/v1/hosts").header(header::AUTHORIZATION, "Digest username=admin");
    let resp = m.send(req.body(Body::empty()).unwrap()).await;
    assert_eq!(
        resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized"),
        "unsupported authorization scheme \"Digest\"; use Basic or Bearer"
    );
    m.stop().await;
}

#[tokio::test]
async fn basic_auth_then_api_token_bearer() {
    let m = TestManager::start().await;
    let me = m.get("/api/v1/users/me", Auth::Admin).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    let me = me.json();
    assert_eq!(me["username"], "admin");
    assert_eq!(me["grants"], json!([{"role": "admin"}]));
    assert_eq!(me["via"], "password");
    assert!(me["permissions"].as_array().unwrap().contains(&json!("users.write")), "{me}");
    let user_id = me["id"].as_str().expect("user id").to_owned();
    // The scheme name is case-insensitive.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
    let req = Request::get("/api/v1/users/me").header(header::AUTHORIZATION, format!("basic {basic}"));
    assert_eq!(m.send(req.body(Body::empty()).unwrap()).await.status, StatusCode::OK);

    let resp = m.json(Method::POST, "/api/v1/api-tokens", Auth::Admin, &json!({"name": "ci-pipeline"})).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let created = resp.json();
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("drvt_") && token.len() == 69, "{token}");
    assert_eq!(created["name"], "ci-pipeline");
    // Without a lifetime a token lives 90 days.
    let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().expect("expires_at")).unwrap();
    let days = (expires.timestamp_millis() - now_millis()) as f64 / 86_400_000.0;
    assert!((89.9..=90.0).contains(&days), "{days} days");

    let resp = m.get("/api/v1/users/me", Auth::Bearer(&token)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["id"], user_id.as_str());
    // A token that differs in one character is refused.
    let mut forged = token.clone();
    forged.replace_range(68.., if token.ends_with('0') { "1" } else { "0" });
    m.get("/api/v1/users/me", Auth::Bearer(&forged)).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // A token with a lifetime reports when it expires.
    let resp = m
        .json(Method::POST, "/api/v1/api-tokens", Auth::Bearer(&token), &json!({"name": "short", "ttl_seconds": 60}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED);
    assert!(resp.json()["expires_at"].is_string());

    // An expired token is refused like an unknown one.
    let expired = "drvt_expired";
    m.handle
        .state
        .store
        .insert_api_token(&ApiTokenRecord {
            id: "expired".into(),
            user_id: user_id.clone(),
            name: "old".into(),
            token_hash: sha256_hex(expired),
            created_at: now_millis() - 7_200_000,
            expires_at: Some(now_millis() - 1),
            grants: None,
        })
        .await
        .unwrap();
    m.get("/api/v1/users/me", Auth::Bearer(expired)).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // The owner lists the tokens (never the secrets) and revokes one.
    let list = m.get("/api/v1/api-tokens", Auth::Admin).await.json();
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{list}");
    for name in ["ci-pipeline", "short", "old"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(!list.to_string().contains(&token), "a listed token leaks its secret");
    let id = created["id"].as_str().unwrap();
    assert_eq!(m.delete(&format!("/api/v1/api-tokens/{id}"), Auth::Admin).await.status, StatusCode::NO_CONTENT);
    m.get("/api/v1/users/me", Auth::Bearer(&token)).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let message = m
        .delete(&format!("/api/v1/api-tokens/{id}"), Auth::Admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, format!("API token {id} not found"));

    let name_rule = "name must be 1-100 characters, not only spaces, without control characters";
    let bad = [
        (json!({"name": ""}), name_rule),
        (json!({"name": "   "}), name_rule),
        (json!({"name": "ci\tpipeline"}), name_rule),
        (json!({"name": "é".repeat(101)}), name_rule),
        (json!({"name": "x", "ttl_seconds": 0}), "ttl_seconds must be between 1 and 315360000"),
    ];
    for (body, message) in bad {
        let resp = m.json(Method::POST, "/api/v1/api-tokens", Auth::Admin, &body).await;
        assert_eq!(resp.expect_error(StatusCode::BAD_REQUEST, "invalid_request"), message, "{body}");
    }
    // Characters, not bytes, are counted; JSON's 60.0 is the integer 60; an
    // array is not an object even when serde could read it as the fields.
    let body = json!({"name": "é".repeat(100), "ttl_seconds": 60.0});
    assert_eq!(m.json(Method::POST, "/api/v1/api-tokens", Auth::Admin, &body).await.status, StatusCode::CREATED);
    let resp = m.json(Method::POST, "/api/v1/api-tokens", Auth::Admin, &json!(["array", 60])).await;
    let message = resp.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(message, "invalid JSON body: expected an object, got an array");
    m.stop().await;
}

/// NUL is refused in every body and URL with the same 422 on both backends
/// (PostgreSQL cannot store it; it used to answer 503 there), while an
/// escaped backslash followed by `u0000` is ordinary text.
#[tokio::test]
async fn nul_characters_are_refused_before_the_database() {
    let m = TestManager::start().await;
    let nul = "invalid request: text may not contain the NUL character (\\u0000 in JSON, %00 in a URL); PostgreSQL cannot store it";
    let body = json!({"name": "ci\u{0}pipeline"});
    let resp = m.json(Method::POST, "/api/v1/api-tokens", Auth::Admin, &body).await;
    assert_eq!(resp.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"), nul);
    let body = json!({"name": "ci\\u0000pipeline"});
    assert_eq!(m.json(Method::POST, "/api/v1/api-tokens", Auth::Admin, &body).await.status, StatusCode::CREATED);
    for uri in ["/api/v1/hosts?hostname=a%00b", "/api/v1/events?object_id=%00", "/api/v1/hosts/a%00b"] {
        let resp = m.get(uri, Auth::Admin).await;
        assert_eq!(resp.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"), nul, "{uri}");
    }
    // A user name with a NUL is wrong credentials (401), not a database error.
    let resp = m.get("/api/v1/hosts", Auth::Basic("ad\u{0}min", "secret")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    m.stop().await;
}

#[tokio::test]
async fn enrollment_token_create_list_revoke() {
    let m = TestManager::start().await;
    let created = m
        .create_enrollment_token(&json!({"ttl_seconds": 600, "max_uses": 3, "labels": {"env": "prod", "rack": "r1"}}))
        .await;
    let token = created["token"].as_str().expect("token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4, "{token}");
    assert_eq!(parts[0], "drv1");
    assert!(is_token_chars(parts[1], 8), "id {}", parts[1]);
    assert!(is_token_chars(parts[2], 32), "secret {}", parts[2]);
    assert!(parts[3].len() == 64 && parts[3].chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{}", parts[3]);
    let fingerprint = m.handle.state.pki.ca_fingerprint().to_string();
    assert_eq!(fingerprint, format!("sha256:{}", parts[3]));
    assert_eq!(created["ca_fingerprint"], fingerprint.as_str());
    assert_eq!(created["id"], parts[1]);
    assert_eq!(created["max_uses"], 3);
    assert_eq!(created["labels"], json!({"env": "prod", "rack": "r1"}));
    let id = parts[1].to_owned();
    // Only the secret's hash is stored.
    let stored = m.handle.state.store.enrollment_token(&id).await.unwrap().expect("stored");
    assert_eq!(stored.secret_hash, sha256_hex(parts[2]));
    let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    let ttl_ms = expires.timestamp_millis() - now_millis();
    assert!((590_000..=600_000).contains(&ttl_ms), "expires in {ttl_ms} ms");

    // Defaults: one use, one hour, no labels.
    let second = m.create_enrollment_token(&json!({})).await;
    assert_eq!((second["max_uses"].clone(), second["labels"].clone()), (json!(1), json!({})));
    let second_id = second["id"].as_str().unwrap().to_owned();

    let list = m.get("/api/v1/enrollment-tokens", Auth::Admin).await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.json()["items"].as_array().expect("items").clone();
    let summary: Vec<(&str, &str, u64, u64)> = items
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                t["state"].as_str().unwrap(),
                t["uses"].as_u64().unwrap(),
                t["max_uses"].as_u64().unwrap(),
            )
        })
        .collect();
    // Newest first; tokens created in the same millisecond are ordered by id.
    let created_at = |id: &str| {
        let store = m.handle.state.store.clone();
        let id = id.to_owned();
        async move { store.enrollment_token(&id).await.unwrap().expect("stored").created_at }
    };
    let first = (id.as_str(), "active", 0, 3);
    let later = (second_id.as_str(), "active", 0, 1);
    let same_ms = created_at(&id).await == created_at(&second_id).await;
    let expected = if same_ms && id < second_id { [first, later] } else { [later, first] };
    assert_eq!(summary, expected);
    assert!(items.iter().all(|t| t.get("secret_hash").is_none() && t.get("token").is_none()), "no secrets listed");
    assert!(items.iter().all(|t| t["created_by"] == "admin" && t["revoked_at"].is_null()));

    let resp = m.delete(&format!("/api/v1/enrollment-tokens/{id}"), Auth::Admin).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert!(resp.body.is_empty());
    let items = m.get("/api/v1/enrollment-tokens", Auth::Admin).await.json()["items"].clone();
    let revoked = items.as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).expect("still listed");
    assert_eq!(revoked["state"], "revoked");
    assert!(revoked["revoked_at"].is_string());

    let message = m
        .delete("/api/v1/enrollment-tokens/zzzz9999", Auth::Admin)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, "enrollment token zzzz9999 not found");
    m.delete(&format!("/api/v1/enrollment-tokens/{second_id}"), Auth::None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    m.stop().await;
}

#[tokio::test]
async fn enrollment_token_validation_errors_name_the_field() {
    let m = TestManager::start().await;
    let url = "/api/v1/enrollment-tokens";
    let json_cases = [
        (json!({"ttl_seconds": 0}), "ttl_seconds must be between 1 and 31536000, got 0"),
        (json!({"ttl_seconds": 31_536_001}), "ttl_seconds must be between 1 and 31536000, got 31536001"),
        (json!({"max_uses": 0}), "max_uses must be between 1 and 100000, got 0"),
        (json!({"max_uses": 100_001}), "max_uses must be between 1 and 100000, got 100001"),
    ];
    for (body, message) in json_cases {
        let resp = m.json(Method::POST, url, Auth::Admin, &body).await;
        assert_eq!(resp.expect_error(StatusCode::BAD_REQUEST, "invalid_request"), message, "{body}");
    }
    let contains_cases = [
        (json!({"labels": {"bad key": "v"}}), "invalid label key \"bad key\""),
        (json!({"labels": {"-x": "v"}}), "invalid label key \"-x\""),
        (json!({"labels": {"ok": "line\nbreak"}}), "invalid value for label \"ok\""),
        (json!({"bogus": 1}), "unknown field `bogus`"),
        (json!({"ttl_seconds": -5}), "ttl_seconds"),
        (json!({"max_uses": "three"}), "max_uses"),
        (json!({"labels": {"k": 1}}), "labels"),
        (json!("ttl"), "invalid JSON body"),
    ];
    for (body, needle) in contains_cases {
        let resp = m.json(Method::POST, url, Auth::Admin, &body).await;
        let message = resp.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.contains(needle), "{body}: {message:?} should mention {needle:?}");
    }

    let resp = m.raw(Method::POST, url, Auth::Admin, "application/json", "{\"ttl_seconds\": ").await;
    let message = resp.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.starts_with("invalid JSON body: "), "{message}");

    let resp = m.raw(Method::POST, url, Auth::Admin, "text/plain", "{}").await;
    assert_eq!(
        resp.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        "request body must be JSON with Content-Type: application/json"
    );
    let req = Request::post(url).header(
        header::AUTHORIZATION,
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"))),
    );
    let resp = m.send(req.body(Body::from("{}")).unwrap()).await;
    resp.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // Over the 1 MiB limit, streamed and with a Content-Length up front.
    let huge = format!("{{\"labels\": {{\"k\": \"{}\"}}}}", "x".repeat(2 << 20));
    let resp = m.raw(Method::POST, url, Auth::Admin, "application/json", huge.clone()).await;
    resp.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let req = TestManager::builder(Method::POST, url, Auth::Admin)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, huge.len())
        .body(Body::from(huge))
        .unwrap();
    m.send(req).await.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Nothing was created by any of these.
    let list = m.get(url, Auth::Admin).await.json();
    assert_eq!(list, json!({"items": []}));
    m.stop().await;
}

#[tokio::test]
async fn hosts_list_and_lookup_errors() {
    let m = TestManager::start().await;
    let resp = m.get("/api/v1/hosts", Auth::Admin).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json(), json!({"items": [], "total": 0, "limit": 100, "offset": 0}));
    let resp = m.get("/api/v1/hosts?status=healthy&label=env%3Dprod&hostname=web&limit=5&offset=10", Auth::Admin).await;
    assert_eq!(resp.json(), json!({"items": [], "total": 0, "limit": 5, "offset": 10}));

    let bad = [
        ("/api/v1/hosts?status=sleeping", "invalid status \"sleeping\": use healthy, lost or decommissioned"),
        ("/api/v1/hosts?limit=0", "limit must be between 1 and 1000, got 0"),
        ("/api/v1/hosts?limit=1001", "limit must be between 1 and 1000, got 1001"),
        ("/api/v1/hosts?offset=2147483648", "offset must be at most 2147483647, got 2147483648"),
        ("/api/v1/events?limit=1001", "limit must be between 1 and 1000, got 1001"),
        ("/api/v1/audit?limit=0", "limit must be between 1 and 1000, got 0"),
        (
            "/api/v1/hosts?label=env",
            "invalid label selector \"env\": write key=value or key!=value, separated by commas",
        ),
    ];
    for (uri, message) in bad {
        let resp = m.get(uri, Auth::Admin).await;
        assert_eq!(resp.expect_error(StatusCode::BAD_REQUEST, "invalid_request"), message, "{uri}");
    }
    for (uri, needle) in [("/api/v1/hosts?limit=ten", "limit"), ("/api/v1/hosts?color=red", "color")] {
        let message = m.get(uri, Auth::Admin).await.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.contains(needle), "{uri}: {message}");
    }

    // Metrics history of a host: a heartbeat's metrics through the registry,
    // flushed to the host's series and rolled up to minutes.
    m.add_host("h1", "web-1", Labels::new()).await;
    let state = &m.handle.state;
    let metrics = drover_manager::model::HostMetrics {
        at: drover_manager::model::rfc3339(now_millis()),
        cpu_percent: 12.5,
        memory_used_bytes: 1_000,
        memory_total_bytes: 8_000,
        load1: 0.5,
        load5: 0.25,
        load15: 0.125,
        disks: vec![drover_manager::model::DiskUsage {
            mount_point: "/".into(),
            used_bytes: 2_000,
            total_bytes: 9_000,
        }],
        network_rx_bytes: 3_000,
        network_tx_bytes: 4_000,
        uptime_seconds: 60,
    };
    assert!(state.registry.heartbeat_with_roles("h1", metrics, vec![]));
    state.registry.flush().await.unwrap();
    drover_manager::domain::metrics::roll_up(&state.store, now_millis()).await.unwrap();
    let points = m.get("/api/v1/hosts/h1/metrics", Auth::Admin).await.json()["points"].clone();
    let minute = points[0]["at"].as_str().map(str::to_owned).unwrap_or_default();
    let at = chrono::DateTime::parse_from_rfc3339(&minute).map(|t| t.timestamp_millis()).unwrap_or(1);
    assert_eq!(at % 60_000, 0, "a point per minute: {points}");
    let series = m.get("/api/v1/hosts/h1/metrics", Auth::Admin).await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.text());
    assert_eq!(
        series.json(),
        json!({"host_id": "h1", "resolution_s": 60, "points": [{
            "at": minute, "resolution_s": 60, "samples": 1, "cpu_percent": 12.5,
            "memory_used_bytes": 1000, "load1": 0.5, "disk_used_bytes": 2000, "network_rx_bytes": 3000,
            "network_tx_bytes": 4000, "disks": [{"mount_point": "/", "used_bytes": 2000, "total_bytes": 9000}],
        }]})
    );
    let later = m.get("/api/v1/hosts/h1/metrics?from=2999-01-01T00:00:00Z&to=2999-01-02T00:00:00Z", Auth::Admin).await;
    assert_eq!(later.json()["points"], json!([]));
    for (uri, needle) in [
        ("/api/v1/hosts/h1/metrics?resolution=30", "resolution must be 60 or 3600, got 30"),
        ("/api/v1/hosts/h1/metrics?from=yesterday", "from must be an RFC 3339 time"),
    ] {
        let message = m.get(uri, Auth::Admin).await.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(message.starts_with(needle), "{uri}: {message}");
    }

    let message = m.get("/api/v1/hosts/nope", Auth::Admin).await.expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, "host nope not found");
    m.get("/api/v1/hosts/nope/metrics", Auth::Admin).await.expect_error(StatusCode::NOT_FOUND, "not_found");
    m.get("/api/v1/hosts", Auth::None).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    m.stop().await;
}

#[tokio::test]
async fn unknown_endpoints_and_methods_are_json() {
    let m = TestManager::start().await;
    for uri in ["/api/v1/nope", "/api/v2/hosts", "/nope"] {
        let message = m.get(uri, Auth::Admin).await.expect_error(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(message, format!("no such endpoint: {uri}"));
    }
    let cases = [
        (Method::DELETE, "/api/v1/hosts"),
        (Method::PUT, "/api/v1/users/me"),
        (Method::PUT, "/api/v1/api-tokens"),
        (Method::POST, "/healthz"),
    ];
    for (method, uri) in cases {
        let req = TestManager::builder(method.clone(), uri, Auth::Admin).body(Body::empty()).unwrap();
        let message = m.send(req).await.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(message, format!("{method} is not allowed on {uri}"));
    }
    m.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let m = TestManager::start().await;
    let resp = m.get("/api/v1/openapi.json", Auth::None).await;
    assert_eq!(resp.status, StatusCode::OK);
    let doc = resp.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/hosts",
        "/api/v1/hosts/{id}",
        "/api/v1/enrollment-tokens",
        "/api/v1/enrollment-tokens/{id}",
        "/api/v1/audit",
        "/api/v1/users/me",
        "/healthz",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    assert!(paths["/api/v1/hosts"]["get"].is_object());
    assert!(doc["components"]["securitySchemes"]["basic"].is_object());
    m.stop().await;
}

#[tokio::test]
async fn audit_log_records_changes_with_user_and_source() {
    let m = TestManager::start().await;
    let created = m.create_enrollment_token(&json!({"max_uses": 2})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(m.delete(&format!("/api/v1/enrollment-tokens/{id}"), Auth::Admin).await.status, StatusCode::NO_CONTENT);

    let resp = m.get("/api/v1/audit?object_type=enrollment_token", Auth::Admin).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let items = resp.json()["items"].as_array().expect("items").clone();
    let summary: Vec<_> = items
        .iter()
        .map(|a| {
            (
                a["username"].as_str().unwrap().to_owned(),
                a["source"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
                a["object_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |action: &str| ("admin".to_owned(), "127.0.0.1".to_owned(), action.to_owned(), id.clone());
    assert_eq!(summary, vec![row("enrollment_token.revoke"), row("enrollment_token.create")], "newest first");
    assert_eq!(items[1]["summary"], "created enrollment token: ttl 3600s, max_uses 2, labels {}");

    let resp = m.get("/api/v1/audit?user=nobody", Auth::Admin).await;
    assert_eq!(resp.json(), json!({"items": []}));
    let message = m
        .get("/api/v1/audit?since=yesterday", Auth::Admin)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.starts_with("since must be an RFC 3339 time"), "{message}");
    m.stop().await;
}

#[tokio::test]
async fn console_sign_in_and_cookie_rules() {
    let m = TestManager::start().await;
    let resp = m.get("/", Auth::None).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(resp.header(header::LOCATION), Some("/login?next=%2F"));
    let resp = m.get("/hosts", Auth::Cookie("0000")).await;
    assert_eq!(
        (resp.status, resp.header(header::LOCATION)),
        (StatusCode::SEE_OTHER, Some("/login?next=%2Fhosts")),
        "unknown session"
    );

    let page = m.get("/login", Auth::None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Sign in to Drover"));

    let form = "application/x-www-form-urlencoded";
    let resp = m.raw(Method::POST, "/login", Auth::None, form, "username=admin&password=wrong").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.header(header::SET_COOKIE).is_none());
    assert!(resp.text().contains("Wrong user name or password."));

    let sid = m.login().await;
    let resp = m.get("/hosts", Auth::Cookie(&sid)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header(header::CONTENT_TYPE), Some("text/html; charset=utf-8"));
    let html = resp.text();
    assert!(html.contains("<h1>Hosts <small>0 matching</small></h1>"), "{html}");
    assert!(html.contains("admin"));
    m.add_host("h1", "console-web-1", labels(&[("env", "prod")])).await;
    let html = m.get("/hosts", Auth::Cookie(&sid)).await.text();
    assert!(html.contains("<h1>Hosts <small>1 matching</small></h1>"), "{html}");
    // Handlebars escapes `=` in the label as `&#x3D;`.
    assert!(html.contains("class=\"hostname\" href=\"/hosts/h1\">console-web-1</a>"), "{html}");
    assert!(html.contains("<span class=\"label\">env&#x3D;prod</span>"), "{html}");

    // The cookie authenticates safe API calls, never state-changing ones.
    let me = m.get("/api/v1/users/me", Auth::Cookie(&sid)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "admin");
    let resp = m.json(Method::POST, "/api/v1/api-tokens", Auth::Cookie(&sid), &json!({"name": "csrf"})).await;
    resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = m.json(Method::POST, "/api/v1/enrollment-tokens", Auth::Cookie(&sid), &json!({})).await;
    resp.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let tokens = m.get("/api/v1/enrollment-tokens", Auth::Admin).await.json();
    assert_eq!(tokens["items"].as_array().map(Vec::len), Some(1), "only add_host's token: {tokens}");

    let audit = m.get("/api/v1/audit?object_type=user", Auth::Admin).await.json();
    assert_eq!(audit["items"][0]["action"], "session.sign_in");
    assert_eq!(audit["items"][0]["source"], "127.0.0.1");

    // Signing out needs the page's CSRF token, and ends the session.
    let req = TestManager::builder(Method::POST, "/logout", Auth::Cookie(&sid)).body(Body::empty()).unwrap();
    assert_eq!(m.send(req).await.status, StatusCode::FORBIDDEN, "a cross-site sign-out");
    let html = m.get("/hosts", Auth::Cookie(&sid)).await.text();
    let csrf = html.split("name=\"_csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
    let resp = m.raw(Method::POST, "/logout", Auth::Cookie(&sid), form, format!("_csrf={csrf}")).await;
    assert_eq!((resp.status, resp.header(header::LOCATION)), (StatusCode::SEE_OTHER, Some("/login")));
    assert!(resp.header(header::SET_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(m.get("/", Auth::Cookie(&sid)).await.status, StatusCode::SEE_OTHER);
    m.get("/api/v1/users/me", Auth::Cookie(&sid)).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    m.stop().await;
}

#[tokio::test]
async fn patch_labels_and_decommission() {
    let m = TestManager::start().await;
    m.add_host("h1", "web-1", labels(&[("env", "prod"), ("old", "x")])).await;
    m.add_host("h2", "web-2", labels(&[("env", "prod")])).await;

    let resp = m.get("/api/v1/hosts/h1", Auth::Admin).await;
    assert_eq!(resp.status, StatusCode::OK);
    let host = resp.json();
    assert_eq!((host["hostname"].clone(), host["status"].clone()), (json!("web-1"), json!("healthy")));
    assert!(host.get("cert_serial").is_none(), "the certificate serial is not exposed");

    let patch = json!({"labels": {"old": null, "tier": "gold", "env": "staging", "absent": null}});
    let resp = m.json(Method::PATCH, "/api/v1/hosts/h1", Auth::Admin, &patch).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["labels"], json!({"env": "staging", "tier": "gold"}));
    assert_eq!(
        m.get("/api/v1/hosts/h1", Auth::Admin).await.json()["labels"],
        json!({"env": "staging", "tier": "gold"})
    );
    assert_eq!(m.get("/api/v1/hosts/h2", Auth::Admin).await.json()["labels"], json!({"env": "prod"}));

    let resp = m.get("/api/v1/hosts?label=env%3Dstaging", Auth::Admin).await.json();
    assert_eq!((resp["total"].clone(), resp["items"][0]["id"].clone()), (json!(1), json!("h1")));

    let message = m
        .json(Method::PATCH, "/api/v1/hosts/h1", Auth::Admin, &json!({"labels": {"bad key": "v"}}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.contains("invalid label key \"bad key\""), "{message}");
    // Removing a label no host can have is a mistake too.
    let message = m
        .json(Method::PATCH, "/api/v1/hosts/h1", Auth::Admin, &json!({"labels": {"bad key": null}}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.contains("invalid label key \"bad key\""), "{message}");
    let message = m
        .json(Method::PATCH, "/api/v1/hosts/h1", Auth::Admin, &json!({"labels": {}, "status": "lost"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.contains("unknown field `status`"), "{message}");
    m.json(Method::PATCH, "/api/v1/hosts/nope", Auth::Admin, &json!({"labels": {}}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    let resp = m.delete("/api/v1/hosts/h1", Auth::Admin).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let host = resp.json();
    assert_eq!(host["status"], "decommissioned");
    assert!(host["decommissioned_at"].is_string());
    assert_eq!(m.handle.state.registry.summary().decommissioned, 1);

    let message = m
        .json(Method::PATCH, "/api/v1/hosts/h1", Auth::Admin, &json!({"labels": {"a": "b"}}))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(message, "host h1 is decommissioned; its labels can no longer change");

    // Decommissioning again changes nothing and is not audited twice.
    let again = m.delete("/api/v1/hosts/h1", Auth::Admin).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["decommissioned_at"], host["decommissioned_at"]);
    m.delete("/api/v1/hosts/nope", Auth::Admin).await.expect_error(StatusCode::NOT_FOUND, "not_found");
    m.handle.state.registry.flush().await.expect("flush events");
    let events = m.get("/api/v1/events?object_id=h1", Auth::Admin).await.json();
    let kinds: Vec<_> =
        events["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["host_decommissioned", "host_enrolled"], "one event per decommissioning");

    let audit = m.get("/api/v1/audit?object_type=host&object_id=h1", Auth::Admin).await.json();
    let actions: Vec<_> =
        audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, ["host.decommission", "host.update_labels"]);
    assert_eq!(audit["items"][0]["username"], "admin");
    assert!(
        audit["items"][0]["summary"].as_str().unwrap().contains("certificate s-h1 revoked"),
        "{}",
        audit["items"][0]
    );

    let listed = m.get("/api/v1/hosts?status=decommissioned", Auth::Admin).await.json();
    assert_eq!((listed["total"].clone(), listed["items"][0]["id"].clone()), (json!(1), json!("h1")));
    let listed = m.get("/api/v1/hosts?status=healthy", Auth::Admin).await.json();
    assert_eq!((listed["total"].clone(), listed["items"][0]["id"].clone()), (json!(1), json!("h2")));
    m.stop().await;
}

/// Creates cluster `prod` with a Redis service `cache` and returns the URI
/// prefix of the service.
async fn redis_service(m: &TestManager) -> &'static str {
    let resp = m.json(Method::POST, "/api/v1/clusters", Auth::Admin, &json!({"name": "prod"})).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let body = json!({"name": "cache", "type": "redis"});
    let resp = m.json(Method::POST, "/api/v1/clusters/prod/services", Auth::Admin, &body).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    "/api/v1/clusters/prod/services/cache"
}

#[tokio::test]
async fn whole_floats_are_accepted_for_revisions() {
    let m = TestManager::start().await;
    let service = redis_service(&m).await;
    let config = format!("{service}/config");
    // JSON has one number type: 1.0 is the revision 1.
    let body = json!({"values": {"maxmemory": "64mb"}, "message": "cap it", "expected_revision": 1.0});
    let resp = m.json(Method::PATCH, &config, Auth::Admin, &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["revision"], 2);
    // A stale revision is still a conflict, a fraction still no revision.
    let body = json!({"values": {"maxmemory": "32mb"}, "message": "less", "expected_revision": 1.0});
    m.json(Method::PATCH, &config, Auth::Admin, &body).await.expect_error(StatusCode::CONFLICT, "conflict");
    let body = json!({"values": {"maxmemory": "32mb"}, "message": "less", "expected_revision": 2.5});
    let message = m
        .json(Method::PATCH, &config, Auth::Admin, &body)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.contains("expected_revision"), "{message}");
    // Rollback takes a whole float too.
    let body = json!({"revision": 1.0, "message": "undo"});
    let resp = m.json(Method::POST, &format!("{config}/rollback"), Auth::Admin, &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["revision"], 3);
    // Rolling back to the values the service has is no change: a conflict
    // with its state, not a malformed request.
    let message = m
        .json(Method::POST, &format!("{config}/rollback"), Auth::Admin, &body)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("leaves the configuration as it is"), "{message}");
    m.stop().await;
}

#[tokio::test]
async fn service_requests_the_document_rules_out_get_400_and_the_rest_what_refused_them() {
    let m = TestManager::start().await;
    let service = redis_service(&m).await;
    let commands = format!("{service}/commands");
    // An unknown command name is not in the document's enum.
    let message = m
        .json(Method::POST, &commands, Auth::Admin, &json!({"name": "explode"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(message.contains("unknown variant `explode`") && message.contains("rolling-restart"), "{message}");
    // A role list that is empty, an array read as a role's fields.
    let roles = format!("{service}/roles");
    m.json(Method::POST, &roles, Auth::Admin, &json!([]))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    m.json(Method::POST, &roles, Auth::Admin, &json!(["primary", "h1"]))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    // A name the name rule refuses.
    m.json(Method::POST, "/api/v1/clusters", Auth::Admin, &json!({"name": "Prod"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Fits the document, but the service's type refuses it: 422.
    let body = json!({"values": {"tick_time": 2000}, "message": "a ZooKeeper parameter"});
    let message = m
        .json(Method::PATCH, &format!("{service}/config"), Auth::Admin, &body)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(message.contains("unknown parameter of service type `redis`"), "{message}");
    let body = json!({"role_type": "server", "name": "extra"});
    m.json(Method::POST, &format!("{service}/role-groups"), Auth::Admin, &body)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    // A host that does not exist: 404.
    let body = json!({"role_type": "primary", "host_id": "nope"});
    m.json(Method::POST, &roles, Auth::Admin, &body).await.expect_error(StatusCode::NOT_FOUND, "not_found");
    m.stop().await;
}

#[tokio::test]
async fn the_document_names_this_managers_service_types() {
    let m = TestManager::start().await;
    let doc = m.get("/api/v1/openapi.json", Auth::None).await.json();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["ServiceTypeName"]["enum"], json!(["nginx", "redis", "zookeeper"]));
    assert_eq!(schemas["RoleTypeName"]["enum"], json!(["primary", "replica", "server"]));
    let parameters = schemas["ParameterName"]["enum"].as_array().expect("parameter names");
    assert!(parameters.contains(&json!("maxmemory")) && parameters.contains(&json!("tick_time")), "{parameters:?}");
    assert_eq!(schemas["CreateService"]["properties"]["type"]["$ref"], "#/components/schemas/ServiceTypeName");
    assert_eq!(schemas["CreateCluster"]["properties"]["name"]["pattern"], drover_manager::domain::NAME_PATTERN);
    // The diff's revisions are query parameters.
    let diff = &doc["paths"]["/api/v1/clusters/{cluster}/services/{service}/config/diff"]["get"];
    let query: Vec<&str> = diff["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(query, ["from", "to"]);
    m.stop().await;
}
