//! A small W3C WebDriver client over reqwest, driving Debian's chromium through
//! chromedriver for console tests. Only the handful of commands the tests use.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::procs::{Proc, free_port};

/// W3C key of an element reference in WebDriver responses.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver with one headless chromium session. Call
/// [`Browser::quit`] to end the session; chromedriver is killed on drop.
pub struct Browser {
    _driver: Proc,
    client: reqwest::Client,
    base: String,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session.
    pub async fn start(log_dir: &Path) -> anyhow::Result<Browser> {
        let driver_bin = which("chromedriver")
            .context("chromedriver not found: install Debian's chromium and chromium-driver (scripts/test.sh does)")?;
        let chromium = which("chromium").context("chromium not found: install Debian's chromium")?;
        let port = free_port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}")).stdin(Stdio::null());
        let driver = Proc::spawn("chromedriver", cmd, &log_dir.join("chromedriver.log"))?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let base = format!("http://127.0.0.1:{port}");
        crate::eventually(Duration::from_secs(30), "chromedriver to answer /status", || {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let r = client.get(format!("{base}/status")).send().await.ok()?;
                let v: Value = r.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r).map(|_| ())
            }
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]
            }
        }}});
        let resp: Value = client.post(format!("{base}/session")).json(&caps).send().await?.json().await?;
        let id = resp["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("chromedriver did not start a session: {resp}"))?;
        Ok(Browser { _driver: driver, client, base: format!("{base}/session/{id}") })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await?.json().await?;
        if let Some(err) = v["value"]["error"].as_str() {
            bail!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await.map(drop)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.call(reqwest::Method::GET, "/url", None).await?.as_str().unwrap_or_default().to_owned())
    }

    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self.call(reqwest::Method::GET, "/source", None).await?.as_str().unwrap_or_default().to_owned())
    }

    /// The page source once it contains `needle`: a click that submits a form
    /// returns before the next page has loaded, so callers wait for it.
    pub async fn wait_for_source(&self, needle: &str, timeout: std::time::Duration) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let page = self.source().await?;
            if page.contains(needle) {
                return Ok(page);
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("page never contained {needle:?} within {timeout:?}; last source:\n{page}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits until the current URL satisfies `want` and returns it.
    pub async fn wait_for_url(
        &self,
        want: impl Fn(&str) -> bool,
        timeout: std::time::Duration,
    ) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let url = self.url().await?;
            if want(&url) {
                return Ok(url);
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("the browser stayed at {url} for {timeout:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> anyhow::Result<String> {
        let v =
            self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await?;
        v[ELEMENT].as_str().map(str::to_owned).with_context(|| format!("no element {css}"))
    }

    /// Types into the element matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await?;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({"text": text}))).await.map(drop)
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await.map(drop)
    }

    /// Text content of the elements matching `css`.
    pub async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let v =
            self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await?;
        let mut out = Vec::new();
        for e in v.as_array().cloned().unwrap_or_default() {
            if let Some(id) = e[ELEMENT].as_str() {
                let t = self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await?;
                out.push(t.as_str().unwrap_or_default().to_owned());
            }
        }
        Ok(out)
    }

    /// Runs `script` in the page (W3C Execute Script) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Chooses the option with `value` in the `<select>` matching `css`, as a
    /// user picking it would (the change event fires).
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.click(&format!("{css} option[value=\"{value}\"]")).await
    }

    /// Whether an element matches `css` on the current page.
    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        let v =
            self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await?;
        Ok(v.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// Ends the browser session (chromium exits); chromedriver ends on drop.
    pub async fn quit(self) -> anyhow::Result<()> {
        self.client.delete(&self.base).send().await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the page.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        std::fs::write(path, png)?;
        Ok(())
    }
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}
