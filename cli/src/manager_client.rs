//! Outbound client of the manager's REST API: which credentials to send, how
//! endpoint URLs are built, and how failures become messages that say what
//! to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use drover_api::ErrorBody;
use drover_api::users::{Permission, Role};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::trust::Trust;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// No query parameters.
pub const NO_QUERY: &[(&str, &str)] = &[];
/// No request body.
pub const NO_BODY: Option<&()> = None;

/// The password file `drover-manager` writes on first start, relative to the
/// directory it was started in.
pub const DEFAULT_PASSWORD_FILE: &str = "./drover-data/initial-admin-password";

/// What the CLI authenticates with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    ApiToken(String),
    Password { user: String, password: String, source: PasswordSource },
}

/// Where a password came from, to say so when the manager refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Flag,
    File(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credentials {
    /// Says what is used without revealing it, e.g.
    /// `user admin, password from ./drover-data/initial-admin-password`.
    pub fn describe(&self) -> String {
        match self {
            Credentials::ApiToken(_) => "an API token (--api-token / DROVER_API_TOKEN)".into(),
            Credentials::Password { user, source: PasswordSource::Flag, .. } => {
                format!("user {user}, password from --password / DROVER_PASSWORD")
            }
            Credentials::Password { user, source: PasswordSource::File(path), .. } => {
                format!("user {user}, password from {}", path.display())
            }
        }
    }
}

/// The credential flags as given; empty strings count as not given.
#[derive(Debug, Clone, Default)]
pub struct CredentialOptions {
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub api_token: Option<String>,
}

/// Picks the credentials: API token, password, password file, then
/// `default_file` if it exists.
pub fn resolve_credentials(opts: &CredentialOptions, default_file: &Path) -> anyhow::Result<Credentials> {
    let given = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(token) = given(&opts.api_token) {
        return Ok(Credentials::ApiToken(token.trim().to_owned()));
    }
    let user = opts.user.clone();
    if let Some(password) = given(&opts.password) {
        return Ok(Credentials::Password { user, password, source: PasswordSource::Flag });
    }
    let file = match opts.password_file.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => path.clone(),
        None if default_file.exists() => default_file.to_owned(),
        None => anyhow::bail!(
            "no credentials: pass --api-token (DROVER_API_TOKEN), --password (DROVER_PASSWORD) or \
             --password-file (DROVER_PASSWORD_FILE); {} does not exist here",
            default_file.display()
        ),
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("read password file {}", file.display()))?;
    let password = text.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!("password file {} is empty", file.display());
    }
    Ok(Credentials::Password { user, password, source: PasswordSource::File(file) })
}

/// The manager answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status})")]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
    /// What to try next, printed on its own line.
    pub hint: Option<String>,
}

/// Reads the manager's `{"error": {"code", "message"}}` body; anything else
/// (a proxy's page, say) is summarised.
pub fn api_failure(status: StatusCode, body: &str) -> ApiFailure {
    let mut hint = None;
    let message = match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => {
            if let Some(permission) = &b.error.permission {
                hint = Some(permission_hint(permission));
            }
            b.error.message
        }
        Err(_) => {
            let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
            let first_line: String = body.trim().lines().next().unwrap_or("").chars().take(200).collect();
            if first_line.is_empty() {
                format!("the manager answered {reason}")
            } else {
                format!("the manager answered {reason}: {first_line}")
            }
        }
    };
    ApiFailure { status: status.as_u16(), message, hint }
}

/// What to do about a missing permission: the roles that carry it.
fn permission_hint(permission: &str) -> String {
    let parsed: Option<Permission> = serde_json::from_value(Value::String(permission.to_owned())).ok();
    let roles: Vec<&str> =
        Role::ALL.into_iter().filter(|r| parsed.is_some_and(|p| r.allows(p))).map(Role::as_str).collect();
    if roles.is_empty() {
        return format!("permission {permission} is missing; ask an administrator for a role that carries it");
    }
    format!(
        "permission {permission} comes with the role(s) {}; an administrator can grant one with \
         `drover users grant USER ROLE[@CLUSTER]` (see `drover users --help`)",
        roles.join(", ")
    )
}

/// The deepest cause of an error, e.g. `Connection refused (os error 111)`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A client of one manager with one set of credentials.
#[derive(Debug)]
pub struct ManagerClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    trust: Trust,
}

impl ManagerClient {
    /// A client that verifies an HTTPS manager with the public roots.
    pub fn new(base: Url, credentials: Credentials) -> anyhow::Result<ManagerClient> {
        Self::with_trust(base, credentials, Trust::System)
    }

    /// A client that verifies an HTTPS manager as `trust` says.
    pub fn with_trust(base: Url, credentials: Credentials, trust: Trust) -> anyhow::Result<ManagerClient> {
        let builder = reqwest::Client::builder()
            .user_agent(concat!("drover-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        let http = trust.configure(builder)?.build().context("build the HTTP client")?;
        Ok(ManagerClient { http, base, credentials, trust })
    }

    /// How the manager is verified.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The manager's URL as the user gave it, for messages.
    pub fn display_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// `BASE/api/v1/<segments...>`, each segment percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| anyhow!("--url {} cannot take a path", self.display_url()))?
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        Ok(url)
    }

    /// Sends a request with a query (a struct of the API or `(name, value)`
    /// pairs; absent fields are left out) and a JSON body; returns the JSON
    /// answer, or `None` for an empty one (204).
    pub async fn call<Q: Serialize + ?Sized, B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &Q,
        body: Option<&B>,
    ) -> anyhow::Result<Option<Value>> {
        let mut req = self.request(method.clone(), segments)?.query(query);
        if let Some(body) = body {
            req = req.json(body);
        }
        self.execute(req, &method, segments).await
    }

    /// A request with credentials, before its query and body.
    fn request(&self, method: Method, segments: &[&str]) -> anyhow::Result<reqwest::RequestBuilder> {
        let req = self.http.request(method, self.endpoint(segments)?);
        Ok(match &self.credentials {
            Credentials::ApiToken(token) => req.bearer_auth(token),
            Credentials::Password { user, password, .. } => req.basic_auth(user, Some(password)),
        })
    }

    /// Sends a request; returns the JSON body, or `None` for an empty one.
    async fn execute(
        &self,
        req: reqwest::RequestBuilder,
        method: &Method,
        segments: &[&str],
    ) -> anyhow::Result<Option<Value>> {
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.transport_error(e).await),
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(text) => text,
            Err(e) => return Err(self.transport_error(e).await),
        };
        if !status.is_success() {
            let mut failure = api_failure(status, &text);
            if status == StatusCode::UNAUTHORIZED {
                failure.hint = Some(format!(
                    "the manager refused {}; check --user and --password / --password-file, or --api-token",
                    self.credentials.describe()
                ));
            }
            return Err(failure.into());
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        let path = segments.join("/");
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("the manager's answer to {method} /api/v1/{path} is not JSON"))
    }

    /// `POST` of a streamed, non-JSON body of `length` bytes (a file upload),
    /// expecting a JSON answer. The request may take up to `timeout`, not the
    /// usual 30 s.
    pub async fn post_stream<Q: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        query: &Q,
        body: reqwest::Body,
        length: u64,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let req = self
            .request(Method::POST, segments)?
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, length)
            .timeout(timeout)
            .body(body);
        self.execute(req, &Method::POST, segments)
            .await?
            .ok_or_else(|| anyhow!("the manager's answer to POST /api/v1/{} is empty", segments.join("/")))
    }

    /// A request with an optional text body of `content_type` (YAML rule
    /// files), answering the response's text as it is; errors as [`Self::call`].
    pub async fn text(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<(&str, String)>,
    ) -> anyhow::Result<String> {
        let mut req = self.request(method.clone(), segments)?;
        if let Some((content_type, body)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.transport_error(e).await),
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(text) => text,
            Err(e) => return Err(self.transport_error(e).await),
        };
        if !status.is_success() {
            return Err(api_failure(status, &text).into());
        }
        Ok(text)
    }

    /// `GET` of server-sent events (`Accept: text/event-stream`), answered as
    /// it arrives and without the usual 30 s limit (a followed log).
    pub async fn get_events<Q: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        query: &Q,
    ) -> anyhow::Result<reqwest::Response> {
        let req = self
            .request(Method::GET, segments)?
            .query(query)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(Duration::from_secs(100 * 365 * 86_400));
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.transport_error(e).await),
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(api_failure(status, &text).into());
        }
        Ok(resp)
    }

    /// `GET`, expecting a JSON body.
    pub async fn get<Q: Serialize + ?Sized>(&self, segments: &[&str], query: &Q) -> anyhow::Result<Value> {
        self.call(Method::GET, segments, query, NO_BODY)
            .await?
            .ok_or_else(|| anyhow!("the manager's answer to GET /api/v1/{} is empty", segments.join("/")))
    }

    /// `GET` of a file (a diagnostic bundle) streamed to `path`; returns its size.
    pub async fn download(&self, segments: &[&str], path: &Path) -> anyhow::Result<u64> {
        use tokio::io::AsyncWriteExt;
        let req = self.request(Method::GET, segments)?.timeout(Duration::from_secs(3600));
        let mut resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.transport_error(e).await),
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(api_failure(status, &text).into());
        }
        let mut file = tokio::fs::File::create(path).await.with_context(|| format!("create {}", path.display()))?;
        let mut n = 0u64;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(self.transport_error(e).await),
            };
            n += chunk.len() as u64;
            file.write_all(&chunk).await.with_context(|| format!("write {}", path.display()))?;
        }
        file.flush().await.with_context(|| format!("write {}", path.display()))?;
        Ok(n)
    }

    /// A request with a JSON answer expected.
    pub async fn send_json<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> anyhow::Result<Value> {
        let what = format!("{method} /api/v1/{}", segments.join("/"));
        self.call(method, segments, NO_QUERY, body)
            .await?
            .ok_or_else(|| anyhow!("the manager's answer to {what} is empty"))
    }

    async fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let url = self.display_url();
        if let Some(cert_error) = crate::trust::certificate_error(&e) {
            return crate::trust::explain(&self.base, &self.trust, cert_error).await.into();
        }
        if e.is_connect() {
            anyhow!("cannot reach the manager at {url}: {}; is drover-manager running?", root_cause(&e))
        } else if e.is_timeout() {
            anyhow!("the manager at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())
        } else {
            anyhow!("request to the manager at {url} failed: {}", root_cause(&e))
        }
    }
}

/// Decodes a response into the API's type. A mismatch means the CLI and the
/// manager are different versions.
pub fn decode<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .context("unexpected response from the manager; are drover and drover-manager the same version?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CredentialOptions {
        CredentialOptions { user: "admin".into(), ..Default::default() }
    }

    #[test]
    fn credential_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let default_file = dir.path().join("initial-admin-password");
        let missing = dir.path().join("missing");

        let err = resolve_credentials(&opts(), &missing).unwrap_err().to_string();
        assert!(err.starts_with("no credentials: pass --api-token"), "{err}");

        std::fs::write(&default_file, "from-default\n").unwrap();
        let c = resolve_credentials(&opts(), &default_file).unwrap();
        assert_eq!(
            c,
            Credentials::Password {
                user: "admin".into(),
                password: "from-default".into(),
                source: PasswordSource::File(default_file.clone())
            }
        );

        let explicit = dir.path().join("pw");
        std::fs::write(&explicit, "with space \r\n\n").unwrap();
        let o = CredentialOptions { password_file: Some(explicit.clone()), ..opts() };
        let Credentials::Password { password, .. } = resolve_credentials(&o, &default_file).unwrap() else {
            panic!("expected a password")
        };
        assert_eq!(password, "with space ");

        let o = CredentialOptions { password: Some("flag".into()), password_file: Some(explicit), ..opts() };
        let Credentials::Password { password, source, .. } = resolve_credentials(&o, &default_file).unwrap() else {
            panic!("expected a password")
        };
        assert_eq!((password.as_str(), source), ("flag", PasswordSource::Flag));

        let o = CredentialOptions { api_token: Some("tok".into()), password: Some("flag".into()), ..opts() };
        assert_eq!(resolve_credentials(&o, &default_file).unwrap(), Credentials::ApiToken("tok".into()));

        // An empty variable (DROVER_API_TOKEN=) counts as not given.
        let o = CredentialOptions { api_token: Some(String::new()), ..opts() };
        assert!(matches!(resolve_credentials(&o, &default_file).unwrap(), Credentials::Password { .. }));
    }

    #[test]
    fn unreadable_or_empty_password_files() {
        let dir = tempfile::tempdir().unwrap();
        let o = CredentialOptions { password_file: Some(dir.path().join("nope")), ..opts() };
        let err = format!("{:#}", resolve_credentials(&o, Path::new("/nonexistent")).unwrap_err());
        assert!(err.starts_with("read password file "), "{err}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let o = CredentialOptions { password_file: Some(empty), ..opts() };
        assert!(resolve_credentials(&o, Path::new("/nonexistent")).unwrap_err().to_string().ends_with("is empty"));
    }

    #[test]
    fn credentials_are_not_printed() {
        let c =
            Credentials::Password { user: "admin".into(), password: "hunter2".into(), source: PasswordSource::Flag };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::ApiToken("secret".into())).contains("secret"));
    }

    #[test]
    fn error_bodies() {
        let f = api_failure(StatusCode::NOT_FOUND, r#"{"error":{"code":"not_found","message":"host x not found"}}"#);
        assert_eq!(f.to_string(), "host x not found (HTTP 404)");
        let f = api_failure(StatusCode::BAD_GATEWAY, "<html>\n<body>bad gateway</body>");
        assert_eq!(f.to_string(), "the manager answered bad gateway: <html> (HTTP 502)");
        let f = api_failure(StatusCode::SERVICE_UNAVAILABLE, "");
        assert_eq!(f.to_string(), "the manager answered service unavailable (HTTP 503)");
        let f = api_failure(
            StatusCode::FORBIDDEN,
            r#"{"error":{"code":"forbidden","message":"forbidden: v lacks permission config.write on cluster prod","permission":"config.write"}}"#,
        );
        assert_eq!(f.to_string(), "forbidden: v lacks permission config.write on cluster prod (HTTP 403)");
        let hint = f.hint.unwrap();
        assert!(
            hint.starts_with("permission config.write comes with the role(s) admin, cluster-admin, configurator;"),
            "{hint}"
        );
    }

    #[test]
    fn endpoints() {
        let c = |base: &str| ManagerClient::new(Url::parse(base).unwrap(), Credentials::ApiToken("t".into())).unwrap();
        let url = c("http://m:7180").endpoint(&["hosts", "a/b c"]).unwrap();
        assert_eq!(url.as_str(), "http://m:7180/api/v1/hosts/a%2Fb%20c");
        let url = c("https://proxy/drover/?x=1").endpoint(&["users", "me"]).unwrap();
        assert_eq!(url.as_str(), "https://proxy/drover/api/v1/users/me");
        assert_eq!(c("http://m:7180/").display_url(), "http://m:7180");
    }
}
