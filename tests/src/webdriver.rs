//! Debian's chromium driven through chromedriver for the console tests, with
//! the `fantoccini` WebDriver client (plain HTTP to the local chromedriver,
//! so no TLS stack of its own), behind the few calls the tests make.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::procs::{Proc, free_port};

/// A running chromedriver with one headless chromium session. Call
/// [`Browser::quit`] to end the session; chromedriver is killed on drop.
pub struct Browser {
    _driver: Proc,
    client: Client,
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
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]
            }
        });
        let Value::Object(caps) = caps else { unreachable!("an object literal") };
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver takes a moment to listen.
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "chromedriver not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => bail!("chromedriver at {url} started no session within 30s: {e}"),
            }
        };
        Ok(Browser { _driver: driver, client })
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.client.goto(url).await?)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self.client.source().await?)
    }

    /// The page source once it contains `needle`: a click that submits a form
    /// returns before the next page has loaded, so callers wait for it.
    pub async fn wait_for_source(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let page = self.source().await?;
            if page.contains(needle) {
                return Ok(page);
            }
            if Instant::now() >= deadline {
                bail!("page never contained {needle:?} within {timeout:?}; last source:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the current URL satisfies `want` and returns it.
    pub async fn wait_for_url(&self, want: impl Fn(&str) -> bool, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.url().await?;
            if want(&url) {
                return Ok(url);
            }
            if Instant::now() >= deadline {
                bail!("the browser stayed at {url} for {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into the element matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.client.find(Locator::Css(css)).await.with_context(|| format!("no element {css}"))?;
        e.clear().await?;
        Ok(e.send_keys(text).await?)
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let e = self.client.find(Locator::Css(css)).await.with_context(|| format!("no element {css}"))?;
        Ok(e.click().await?)
    }

    /// Text content of the elements matching `css`.
    pub async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await? {
            out.push(e.text().await?);
        }
        Ok(out)
    }

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Chooses the option with `value` in the `<select>` matching `css`, as a
    /// user picking it would (the change event fires).
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.click(&format!("{css} option[value=\"{value}\"]")).await
    }

    /// Whether an element matches `css` on the current page.
    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// The cookie `name` of the current page's site as the browser keeps it,
    /// flags included (WebDriver sees `HttpOnly` cookies too).
    pub async fn cookie(&self, name: &str) -> anyhow::Result<fantoccini::cookies::Cookie<'static>> {
        self.client.get_named_cookie(name).await.with_context(|| format!("no cookie {name} in the browser"))
    }

    /// Ends the browser session (chromium exits); chromedriver ends on drop.
    pub async fn quit(self) -> anyhow::Result<()> {
        Ok(self.client.close().await?)
    }

    /// Saves a PNG screenshot of the page.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.client.screenshot().await?)?;
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
