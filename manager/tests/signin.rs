//! Console sessions and sign-in throttling over real HTTP against a started
//! manager: 5 wrong passwords then `429` with `Retry-After` (HTTP Basic and
//! the console), the right password once the delay has passed, the source
//! limit across user names, failures elsewhere never keeping a user out of
//! the place they signed in from, idle timeout and absolute lifetime,
//! sign-out ending the session on the server, CSRF refusal, cookie flags and
//! the audit entries of it all.
//!
//! Requests that should be throttled come from other loopback addresses
//! (127.0.0.2, ...), so the admin's own calls from 127.0.0.1 stay open.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{PASSWORD, T, between};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OPS_PASSWORD: &str = "night-shift-password-0123";

/// A client whose connections come from `ip` (any 127.0.0.0/8 address
/// reaches the manager on 127.0.0.1), following no redirects.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A manager whose first sign-in delay is `delay`, with user `ops` (viewer).
async fn start(delay: Duration) -> T {
    let t = T::start_configured(|_| {}, |c| c.sign_in_delay = delay).await;
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "ops", "password": OPS_PASSWORD, "grants": [{"role": "viewer"}]})),
    )
    .await;
    t
}

/// `GET /api/v1/users/me` with HTTP Basic.
async fn basic(t: &T, client: &reqwest::Client, user: &str, password: &str) -> reqwest::Response {
    client.get(t.url("/api/v1/users/me")).basic_auth(user, Some(password)).send().await.unwrap()
}

/// The console's sign-in form.
async fn sign_in(t: &T, client: &reqwest::Client, user: &str, password: &str) -> reqwest::Response {
    client
        .post(t.url("/login"))
        .form(&[("username", user), ("password", password), ("next", "/hosts")])
        .send()
        .await
        .unwrap()
}

/// The `Set-Cookie` value of the session cookie.
fn session_set_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("drover_session="))
        .map(str::to_owned)
}

/// Signs in to the console as `user` from `client`; answers the
/// `drover_session=...` pair.
async fn session(t: &T, client: &reqwest::Client, user: &str, password: &str) -> String {
    let resp = sign_in(t, client, user, password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in of {user}");
    session_set_cookie(&resp).unwrap().split(';').next().unwrap().to_owned()
}

async fn get_with(t: &T, client: &reqwest::Client, cookie: &str, path: &str) -> reqwest::Response {
    client.get(t.url(path)).header("cookie", cookie).send().await.unwrap()
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {:?}", resp.headers()))
}

/// Repeats `attempt` until it is no longer answered 429 (the delay has
/// ended; bounded at 60 s), and answers its status then.
async fn after_the_delay<F, Fut>(mut attempt: F) -> StatusCode
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = attempt().await;
        if resp.status() != StatusCode::TOO_MANY_REQUESTS {
            return resp.status();
        }
        assert!(tokio::time::Instant::now() < deadline, "still throttled after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The audit entries about users, newest first.
async fn audit(t: &T) -> Vec<Value> {
    t.ok(Method::GET, "/audit?object_type=user&limit=500", None).await["items"].as_array().unwrap().clone()
}

fn entries<'a>(audit: &'a [Value], action: &str, user: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["action"] == action && e["username"] == user).collect()
}

#[tokio::test]
async fn basic_auth_answers_429_after_five_wrong_passwords_and_the_right_one_works_after_the_delay() {
    let t = start(Duration::from_secs(3)).await;
    let c = client_from("127.0.0.2");
    for i in 1..=5 {
        let resp = basic(&t, &c, "ops", "wrong-password").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "failure {i}");
    }
    // Held: even the right password is answered 429 without being checked.
    let resp = basic(&t, &c, "ops", OPS_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&resp);
    assert!((1..=3).contains(&wait), "Retry-After {wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("too many failed sign-ins for this user name; try again in"), "{message}");
    // Not a lockout of the source: another user from there signs in.
    assert_eq!(basic(&t, &c, "admin", PASSWORD).await.status(), StatusCode::OK);

    assert_eq!(after_the_delay(|| basic(&t, &c, "ops", OPS_PASSWORD)).await, StatusCode::OK);
    // The success cleared the count: a wrong password is a plain 401 again.
    assert_eq!(basic(&t, &c, "ops", "wrong-password").await.status(), StatusCode::UNAUTHORIZED);

    // Failures audited at most once a minute per user, source and reason.
    let audit = audit(&t).await;
    let failed = entries(&audit, "session.sign_in_failed", "ops");
    let wrong: Vec<_> = failed.iter().filter(|e| e["summary"] == "HTTP Basic sign-in failed: wrong password").collect();
    assert_eq!(wrong.len(), 1, "{failed:?}");
    assert_eq!((wrong[0]["source"].as_str(), wrong[0]["via"].as_str()), (Some("127.0.0.2"), Some("password")));
    assert_eq!(wrong[0]["permission"], "");
    assert!(failed.iter().any(|e| e["summary"] == "HTTP Basic sign-in failed: throttled"), "{failed:?}");
    t.handle.shutdown().await;
}

#[tokio::test]
async fn console_sign_in_answers_429_with_the_wait_and_works_after_it() {
    let t = start(Duration::from_secs(3)).await;
    let c = client_from("127.0.0.2");
    for i in 1..=5 {
        let resp = sign_in(&t, &c, "ops", "wrong-password").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "failure {i}");
        assert!(session_set_cookie(&resp).is_none());
        assert!(resp.text().await.unwrap().contains("Wrong user name or password."));
    }
    let resp = sign_in(&t, &c, "ops", OPS_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(session_set_cookie(&resp).is_none(), "no session while held");
    let wait = retry_after(&resp);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(&format!("Too many failed sign-ins for this user name. Wait {wait} seconds, then try again.")),
        "{html}"
    );
    assert!(html.contains("<form method=\"post\" action=\"/login\">"), "the form stays: {html}");

    assert_eq!(after_the_delay(|| sign_in(&t, &c, "ops", OPS_PASSWORD)).await, StatusCode::SEE_OTHER);

    // Every console failure is audited with its reason; the success too.
    let audit = audit(&t).await;
    let failed = entries(&audit, "session.sign_in_failed", "ops");
    let wrong = failed.iter().filter(|e| e["summary"] == "console sign-in failed: wrong password").count();
    assert_eq!(wrong, 5, "{failed:?}");
    assert!(failed.iter().any(|e| e["summary"] == "console sign-in failed: throttled"), "{failed:?}");
    assert!(failed.iter().all(|e| e["via"] == "console" && e["source"] == "127.0.0.2"), "{failed:?}");
    let signed_in = entries(&audit, "session.sign_in", "ops");
    assert_eq!(signed_in.len(), 1, "{audit:?}");
    assert_eq!((signed_in[0]["via"].as_str(), signed_in[0]["source"].as_str()), (Some("console"), Some("127.0.0.2")));
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_source_is_held_only_at_its_own_limit_and_failures_elsewhere_keep_no_one_out() {
    let t = start(Duration::from_secs(3)).await;
    let attacker = client_from("127.0.0.3");
    // 15 failures over three names: each name is held, the source is not.
    for name in ["a", "b", "c"] {
        for _ in 0..5 {
            assert_eq!(basic(&t, &attacker, name, "guess-guess-guess").await.status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(basic(&t, &attacker, name, "guess-guess-guess").await.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(basic(&t, &attacker, "ops", OPS_PASSWORD).await.status(), StatusCode::OK, "another user");
    // Five more: 20 from this address, which is now held for every name.
    for _ in 0..5 {
        assert_eq!(basic(&t, &attacker, "d", "guess-guess-guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = basic(&t, &attacker, "ops", OPS_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("from this address"), "{body}");
    // Unknown API tokens from a held address: 429 too; elsewhere 401.
    let bearer = |c: reqwest::Client| {
        let url = t.url("/api/v1/users/me");
        async move { c.get(url).bearer_auth("drvt_unknown").send().await.unwrap().status() }
    };
    assert_eq!(bearer(attacker.clone()).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(bearer(client_from("127.0.0.4")).await, StatusCode::UNAUTHORIZED);

    // Failures for ops from elsewhere hold the name there, but not where ops
    // signed in before (no lockout an attacker can use).
    let home = client_from("127.0.0.5");
    assert_eq!(basic(&t, &home, "ops", OPS_PASSWORD).await.status(), StatusCode::OK);
    let elsewhere = client_from("127.0.0.6");
    for _ in 0..5 {
        assert_eq!(basic(&t, &elsewhere, "ops", "guess-guess-guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(basic(&t, &elsewhere, "ops", OPS_PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        sign_in(&t, &client_from("127.0.0.7"), "ops", OPS_PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(sign_in(&t, &home, "ops", OPS_PASSWORD).await.status(), StatusCode::SEE_OTHER);

    // The held address gets in again once its delay has passed.
    assert_eq!(after_the_delay(|| basic(&t, &attacker, "ops", OPS_PASSWORD)).await, StatusCode::OK);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn sign_in_failures_are_audited_with_their_reason() {
    let t = start(Duration::from_secs(1)).await;
    let c = client_from("127.0.0.2");
    assert_eq!(sign_in(&t, &c, "nobody", "whatever-whatever").await.status(), StatusCode::UNAUTHORIZED);
    t.ok(Method::PATCH, "/users/ops", Some(json!({"disabled": true}))).await;
    let resp = sign_in(&t, &c, "ops", OPS_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a disabled user cannot sign in");
    assert!(resp.text().await.unwrap().contains("Wrong user name or password."), "no hint to the caller");
    assert_eq!(basic(&t, &c, "ops", OPS_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);

    let audit = audit(&t).await;
    let summaries = |user| -> Vec<String> {
        entries(&audit, "session.sign_in_failed", user)
            .iter()
            .map(|e| e["summary"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(summaries("nobody"), ["console sign-in failed: unknown user"]);
    assert_eq!(summaries("ops"), ["HTTP Basic sign-in failed: disabled", "console sign-in failed: disabled"]);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn session_cookie_flags_and_sign_out_ends_the_session_on_the_server() {
    let t = T::start().await;
    let c = client_from("127.0.0.1");
    let resp = sign_in(&t, &c, "admin", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = session_set_cookie(&resp).unwrap();
    let flags: Vec<&str> = set.split(';').map(str::trim).skip(1).collect();
    assert_eq!(flags, ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=43200"], "plain HTTP: not Secure; 12 h");
    let cookie = set.split(';').next().unwrap().to_owned();

    let page = get_with(&t, &c, &cookie, "/hosts").await;
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = between(&page.text().await.unwrap(), "name=\"_csrf\" value=\"", "\"").unwrap().to_owned();
    let logout = |token: &'static str| {
        let req = c.post(t.url("/logout")).header("cookie", &cookie);
        async move {
            if token.is_empty() {
                req.send().await.unwrap()
            } else {
                req.form(&[("_csrf", token)]).send().await.unwrap()
            }
        }
    };
    // A sign-out (a console POST) without the CSRF token, or with a wrong one, is refused.
    assert_eq!(logout("").await.status(), StatusCode::FORBIDDEN);
    let wrong = logout("0000000000000000000000000000000000000000000000000000000000000000").await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(wrong.text().await.unwrap().contains("security token is missing or out of date"));
    assert_eq!(get_with(&t, &c, &cookie, "/hosts").await.status(), StatusCode::OK, "still signed in");

    let out =
        c.post(t.url("/logout")).header("cookie", &cookie).form(&[("_csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()["location"], "/login");
    let cleared = session_set_cookie(&out).unwrap();
    assert!(cleared.starts_with("drover_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie no longer works, on the console or the API.
    let again = get_with(&t, &c, &cookie, "/hosts").await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert!(again.headers()["location"].to_str().unwrap().starts_with("/login?next="));
    assert_eq!(get_with(&t, &c, &cookie, "/api/v1/users/me").await.status(), StatusCode::UNAUTHORIZED);

    let audit = audit(&t).await;
    let out = entries(&audit, "session.sign_out", "admin");
    assert_eq!(out.len(), 1, "{audit:?}");
    assert_eq!((out[0]["via"].as_str(), out[0]["source"].as_str()), (Some("console"), Some("127.0.0.1")));
    assert_eq!(entries(&audit, "session.sign_in", "admin").len(), 1);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn an_unused_session_ends_after_the_idle_timeout_and_use_keeps_it() {
    let t = T::start_configured(|_| {}, |c| c.session_idle_timeout = Duration::from_secs(4)).await;
    let c = client_from("127.0.0.1");
    let used = session(&t, &c, "admin", PASSWORD).await;
    let unused = session(&t, &c, "admin", PASSWORD).await;
    // `used` is used after 2.5 s (noted: more than a quarter of the idle
    // time since the last note), then again 2.5 s later: 5 s after sign-in,
    // more than the idle timeout, but 2.5 s after its last use.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_with(&t, &c, &used, "/hosts").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_with(&t, &c, &used, "/hosts").await.status(), StatusCode::OK, "use keeps the session");
    let idle = get_with(&t, &c, &unused, "/hosts").await;
    assert_eq!(idle.status(), StatusCode::SEE_OTHER, "idle for 5 s");
    assert!(idle.headers()["location"].to_str().unwrap().starts_with("/login"));
    assert_eq!(get_with(&t, &c, &unused, "/api/v1/users/me").await.status(), StatusCode::UNAUTHORIZED);
    t.handle.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_used() {
    let t = T::start_configured(|_| {}, |c| c.session_lifetime = Duration::from_secs(3)).await;
    let c = client_from("127.0.0.1");
    let resp = sign_in(&t, &c, "admin", PASSWORD).await;
    let set = session_set_cookie(&resp).unwrap();
    assert!(set.contains("Max-Age=3"), "the cookie lives as long as the session: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    assert_eq!(get_with(&t, &c, &cookie, "/hosts").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(get_with(&t, &c, &cookie, "/hosts").await.status(), StatusCode::SEE_OTHER, "3.5 s after sign-in");
    // Signing in again starts a new session.
    let fresh = session(&t, &c, "admin", PASSWORD).await;
    assert_eq!(get_with(&t, &c, &fresh, "/hosts").await.status(), StatusCode::OK);
    t.handle.shutdown().await;
}
