//! The console's Users pages over HTTP, as a browser without scripts uses
//! them: an administrator creates a user with roles, changes the roles,
//! disables (with confirmation) and enables them, sets their password and
//! deletes them; a disabled user cannot sign in; the last administrator is
//! kept, with the refusal shown next to the form; the Users link and pages
//! are for administrators only.

mod common;

use common::{PASSWORD, T};
use reqwest::Method;
use serde_json::json;

/// Signs in to the console as `user`: the session cookie, or the status of
/// the refused sign-in.
async fn sign_in(t: &T, user: &str, password: &str) -> Result<String, u16> {
    match t.sign_in(user, password).await {
        (303, Ok(cookie)) => Ok(cookie),
        (status, _) => Err(status),
    }
}

/// `GET path` with a session cookie: status and body.
async fn get_as(t: &T, cookie: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = client.get(t.url(path)).header("cookie", cookie).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

const JANE: &str = "purple elephant sunrise";

#[tokio::test]
async fn an_admin_creates_changes_disables_and_deletes_a_user() {
    let t = T::start().await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let c = t.console().await;

    let page = c.get("/users").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("<a href=\"/users\" aria-current=\"page\">Users</a>"), "the admin's nav: {}", page.html);
    assert!(page.html.contains("<tr data-user=\"admin\">"), "{}", page.html);
    assert!(page.html.contains("<option value=\"prod\">"), "clusters offered: {}", page.html);

    // Errors are shown next to the form, the input kept.
    let refused = c
        .post(
            "/users",
            &[
                ("username", "jane"),
                ("password", JANE),
                ("repeat", "something else"),
                ("role", "viewer"),
                ("cluster", ""),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.html.contains("id=\"create-user-error\">the password and its repetition differ"),
        "{}",
        refused.html
    );
    assert!(refused.html.contains("value=\"jane\""), "{}", refused.html);
    let refused = c
        .post(
            "/users",
            &[("username", "jane"), ("password", "short"), ("repeat", "short"), ("role", ""), ("cluster", "")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("the password must have at least 12 characters"), "{}", refused.html);
    let refused = c
        .post(
            "/users",
            &[("username", "jane"), ("password", JANE), ("repeat", JANE), ("role", "admin"), ("cluster", "prod")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("role admin is global only; grant it without a cluster"), "{}", refused.html);
    let refused = c
        .post("/users", &[("username", "admin"), ("password", JANE), ("repeat", JANE), ("role", ""), ("cluster", "")])
        .await;
    assert_eq!(refused.status, 422, "an existing user: {}", refused.html);

    // Created with two role rows (an empty third row is skipped).
    let created = c
        .post(
            "/users",
            &[
                ("username", "jane"),
                ("password", JANE),
                ("repeat", JANE),
                ("role", "operator"),
                ("cluster", "prod"),
                ("role", "viewer"),
                ("cluster", ""),
                ("role", ""),
                ("cluster", ""),
            ],
        )
        .await;
    assert_eq!((created.status, created.location.as_deref()), (303, Some("/users/jane")), "{}", created.html);
    assert_eq!(created.flash.as_deref(), Some("ok=user jane created with operator@prod, viewer"));
    let user = t.ok(Method::GET, "/users/jane", None).await;
    assert_eq!(user["grants"], json!([{"role": "viewer"}, {"role": "operator", "cluster": "prod"}]));
    let list = c.get("/users").await;
    assert!(list.html.contains("<tr data-user=\"jane\">"), "{}", list.html);
    assert!(list.html.contains("<code>operator@prod</code>"), "{}", list.html);

    // Roles added and removed on the user's page.
    let added = c.post("/users/jane/grants", &[("role", "configurator"), ("cluster", "prod")]).await;
    assert_eq!(added.status, 303, "{}", added.html);
    assert_eq!(
        added.flash.as_deref(),
        Some("ok=configurator@prod granted; jane now has viewer, configurator@prod, operator@prod")
    );
    let refused = c.post("/users/jane/grants", &[("role", "auditor"), ("cluster", "prod")]).await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("id=\"grants-error\">role auditor is global only"), "{}", refused.html);
    let removed = c.post("/users/jane/grants/remove", &[("grant", "viewer")]).await;
    assert_eq!(removed.status, 303);
    let page = c.get("/users/jane").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("<tr data-grant=\"operator@prod\">"), "{}", page.html);
    assert!(page.html.contains("<tr data-grant=\"configurator@prod\">"), "{}", page.html);
    assert!(!page.html.contains("<tr data-grant=\"viewer\">"), "{}", page.html);
    assert!(page.html.contains("id=\"user-last-sign-in\">never"), "{}", page.html);

    // Jane signs in; a viewer-ish user sees no Users link and gets 403.
    let jane = sign_in(&t, "jane", JANE).await.expect("jane signs in");
    let (status, html) = get_as(&t, &jane, "/hosts").await;
    assert_eq!(status, 200);
    assert!(!html.contains("href=\"/users\""), "no Users link for jane: {html}");
    assert_eq!(get_as(&t, &jane, "/users").await.0, 403);
    assert_eq!(get_as(&t, &jane, "/users/jane").await.0, 403);
    assert_eq!(get_as(&t, &jane, "/users/admin").await.0, 403);
    let page = c.get("/users/jane").await;
    assert!(!page.html.contains("id=\"user-last-sign-in\">never"), "jane signed in: {}", page.html);

    // Disabling asks first, ends her session and refuses her sign-in.
    let ask = c.post("/users/jane/disable", &[]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Disable user jane: they cannot sign in any more"), "{}", ask.html);
    assert!(ask.html.contains("action=\"/users/jane/disable\""), "{}", ask.html);
    let done = c.post("/users/jane/disable", &[("confirmed", "yes")]).await;
    assert_eq!(
        (done.status, done.flash.as_deref()),
        (303, Some("ok=user jane disabled; their console sessions ended"))
    );
    assert_eq!(get_as(&t, &jane, "/hosts").await.0, 303, "her session ended");
    assert_eq!(sign_in(&t, "jane", JANE).await, Err(401), "a disabled user cannot sign in");
    let page = c.get("/users/jane").await;
    assert!(page.html.contains("id=\"user-state\">disabled"), "{}", page.html);
    assert!(page.html.contains("id=\"enable\""), "{}", page.html);
    let done = c.post("/users/jane/enable", &[]).await;
    assert_eq!((done.status, done.flash.as_deref()), (303, Some("ok=user jane enabled")));
    sign_in(&t, "jane", JANE).await.expect("enabled again");

    // A new password from the administrator.
    let refused = c.post("/users/jane/password", &[("new", "another long password"), ("repeat", "different")]).await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.html.contains("id=\"password-error\">the new password and its repetition differ"),
        "{}",
        refused.html
    );
    let done =
        c.post("/users/jane/password", &[("new", "another long password"), ("repeat", "another long password")]).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(sign_in(&t, "jane", JANE).await, Err(401));
    sign_in(&t, "jane", "another long password").await.expect("the new password works");

    // Deleting asks first.
    let ask = c.post("/users/jane/delete", &[]).await;
    assert_eq!(ask.status, 200);
    assert!(ask.html.contains("Delete user jane (roles: configurator@prod, operator@prod)"), "{}", ask.html);
    let done = c.post("/users/jane/delete", &[("confirmed", "yes")]).await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/users")));
    assert_eq!(c.get("/users/jane").await.status, 404);
    assert_eq!(sign_in(&t, "jane", "another long password").await, Err(401));
}

#[tokio::test]
async fn the_last_admin_is_kept_and_viewers_are_refused() {
    let t = T::start().await;
    let c = t.console().await;

    let refused = c.post("/users/admin/disable", &[("confirmed", "yes")]).await;
    assert_eq!(refused.status, 409, "{}", refused.html);
    assert!(
        refused.html.contains(
            "id=\"state-error\">user admin is the last enabled administrator: grant admin to another enabled user first"
        ),
        "{}",
        refused.html
    );
    let refused = c.post("/users/admin/grants/remove", &[("grant", "admin")]).await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.html.contains("id=\"grants-error\">user admin is the last enabled administrator"),
        "{}",
        refused.html
    );
    let refused = c.post("/users/admin/delete", &[("confirmed", "yes")]).await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.html.contains("id=\"delete-error\">user admin is the last enabled administrator"),
        "{}",
        refused.html
    );
    assert_eq!(sign_in(&t, "admin", PASSWORD).await.map(|_| ()), Ok(()), "admin still signs in");

    // A viewer: no link, no page, no form.
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "vic", "password": "orange giraffe meadow", "grants": [{"role": "viewer"}]})),
    )
    .await;
    let vic = sign_in(&t, "vic", "orange giraffe meadow").await.expect("vic signs in");
    let (status, html) = get_as(&t, &vic, "/").await;
    assert_eq!(status, 200);
    assert!(!html.contains(">Users</a>"), "{html}");
    let (status, html) = get_as(&t, &vic, "/users").await;
    assert_eq!(status, 403);
    assert!(html.contains("lacks permission users.write"), "{html}");
    // A second administrator: now the first may be disabled.
    t.ok(Method::PATCH, "/users/vic", Some(json!({"grants": [{"role": "admin"}]}))).await;
    let (status, html) = get_as(&t, &vic, "/users").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<a href=\"/users\" aria-current=\"page\">Users</a>"), "{html}");
    let done = c.post("/users/admin/disable", &[("confirmed", "yes")]).await;
    assert_eq!(done.status, 303, "{}", done.html);
}
