//! A minimal REST client for tests and the load generator.

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Rest {
    client: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

impl Rest {
    pub fn new(http_addr: impl std::fmt::Display, user: &str, password: &str) -> Rest {
        Rest {
            client: reqwest::Client::new(),
            base: format!("http://{http_addr}"),
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with this client's credentials, to be sent by
    /// the caller (a streamed answer, other headers).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).basic_auth(&self.user, Some(&self.password))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = req.basic_auth(&self.user, Some(&self.password)).send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).with_context(|| text.clone())? };
        Ok((status, body))
    }

    /// A request, returning status and JSON body whatever the status.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// A call under `/api/v1` that must succeed (2xx); returns the body.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self
            .raw(method.clone(), &format!("/api/v1{path}"), body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!((200..300).contains(&status), "{method} {path}: HTTP {status}: {v}");
        v
    }

    /// A POST with a raw `application/octet-stream` body (a parcel upload).
    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let req = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.send(req).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.raw(reqwest::Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        Ok(serde_json::from_value(body)?)
    }

    /// Creates an enrollment token and returns its token string.
    pub async fn enrollment_token(&self, max_uses: u32, ttl_seconds: u64) -> anyhow::Result<String> {
        let (status, body) = self
            .raw(
                reqwest::Method::POST,
                "/api/v1/enrollment-tokens",
                Some(json!({"max_uses": max_uses, "ttl_seconds": ttl_seconds})),
            )
            .await?;
        if status != 201 {
            bail!("create enrollment token: HTTP {status}: {body}");
        }
        Ok(body["token"].as_str().context("token missing")?.to_owned())
    }

    /// All hosts (up to 1000 per page, following pages).
    pub async fn hosts(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let page: Value = self.get(&format!("/api/v1/hosts?limit=1000&offset={}{sep}{query}", out.len())).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            let n = items.len();
            out.extend(items);
            if n == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }

    /// Counts hosts by status.
    pub async fn count(&self, status: &str) -> anyhow::Result<u64> {
        let page: Value = self.get(&format!("/api/v1/hosts?limit=1&status={status}")).await?;
        page["total"].as_u64().context("total missing")
    }
}
