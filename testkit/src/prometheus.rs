//! A real Prometheus server for tests (Debian's `/usr/bin/prometheus`, or
//! `$PROMETHEUS_BIN`): scrape jobs written to a `prometheus.yml` in a temp
//! dir, its TSDB there too, the web API on a free loopback port; killed on
//! drop. Tests wait for a job's targets to be up and ask PromQL queries
//! through the HTTP API.
//!
//! ```no_run
//! # async fn f() {
//! use drover_testkit::prometheus::{Prometheus, ScrapeJob};
//! let prom = Prometheus::start(&[ScrapeJob::new("manager", "127.0.0.1:7180", "/metrics").bearer("TOKEN")]).await;
//! prom.wait_up("manager", std::time::Duration::from_secs(30)).await;
//! let samples = prom.query("drover_build_info").await.unwrap();
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// One `scrape_configs` entry.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    pub name: String,
    /// `host:port` of each target.
    pub targets: Vec<String>,
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
    /// `Authorization: Bearer` credentials.
    pub bearer: Option<String>,
    /// HTTP Basic user and password.
    pub basic: Option<(String, String)>,
    /// CA certificate (PEM file) a `https` target must chain to.
    pub ca_file: Option<PathBuf>,
    /// Query parameters (`params:`) sent with each scrape.
    pub params: BTreeMap<String, Vec<String>>,
}

impl ScrapeJob {
    /// A plain-HTTP job scraping `path` on `target` (`host:port`).
    pub fn new(name: &str, target: &str, path: &str) -> ScrapeJob {
        ScrapeJob {
            name: name.to_owned(),
            targets: vec![target.to_owned()],
            metrics_path: path.to_owned(),
            scheme: "http".into(),
            bearer: None,
            basic: None,
            ca_file: None,
            params: BTreeMap::new(),
        }
    }

    pub fn bearer(mut self, token: &str) -> ScrapeJob {
        self.bearer = Some(token.to_owned());
        self
    }

    pub fn basic(mut self, user: &str, password: &str) -> ScrapeJob {
        self.basic = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Scrapes over HTTPS, verifying the target against `ca_file`.
    pub fn https(mut self, ca_file: &Path) -> ScrapeJob {
        self.scheme = "https".into();
        self.ca_file = Some(ca_file.to_owned());
        self
    }

    pub fn param(mut self, key: &str, value: &str) -> ScrapeJob {
        self.params.entry(key.to_owned()).or_default().push(value.to_owned());
        self
    }

    fn to_json(&self) -> Value {
        let mut job = json!({
            "job_name": self.name,
            "metrics_path": self.metrics_path,
            "scheme": self.scheme,
            "static_configs": [{ "targets": self.targets }],
        });
        if let Some(token) = &self.bearer {
            job["authorization"] = json!({ "type": "Bearer", "credentials": token });
        }
        if let Some((user, password)) = &self.basic {
            job["basic_auth"] = json!({ "username": user, "password": password });
        }
        if let Some(ca) = &self.ca_file {
            job["tls_config"] = json!({ "ca_file": ca });
        }
        if !self.params.is_empty() {
            job["params"] = json!(self.params);
        }
        job
    }
}

/// One sample of a PromQL instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, `""` when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A running Prometheus; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT` of its web API.
    pub url: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// How often every job is scraped.
pub const SCRAPE_INTERVAL: &str = "1s";

impl Prometheus {
    /// Starts Prometheus with `jobs` (scraped every second) and waits until
    /// it answers `/-/ready`.
    pub async fn start(jobs: &[ScrapeJob]) -> Prometheus {
        let bin =
            std::env::var_os("PROMETHEUS_BIN").map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
        assert!(bin.exists(), "{} not found: install Debian's prometheus package or set PROMETHEUS_BIN", bin.display());
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        let config = json!({
            "global": { "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL },
            "scrape_configs": jobs.iter().map(ScrapeJob::to_json).collect::<Vec<_>>(),
        });
        // YAML is a superset of JSON.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).expect("config"))
            .expect("write prometheus.yml");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        // A free port can be taken between looking and binding: try a few.
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let log_file = std::fs::File::create(&log).expect("prometheus log file");
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let url = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut child, &client, &url, &log).await {
                Ok(()) => return Prometheus { child, url, dir, client },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if attempt == 4 || !why.contains("address already in use") {
                        panic!("prometheus did not start: {why}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The temp dir holding `prometheus.yml`, the TSDB and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until every target of `job` has been scraped successfully;
    /// panics with the targets' last errors after `within`.
    pub async fn wait_up(&self, job: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let last = match self.targets(job).await {
                Ok(targets) if !targets.is_empty() && targets.iter().all(|t| t["health"] == "up") => return,
                Ok(targets) => format!("{targets:?}"),
                Err(e) => e,
            };
            if std::time::Instant::now() > deadline {
                panic!("prometheus job {job} not up after {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The active targets of `job` as `/api/v1/targets` reports them
    /// (`health`, `lastError`, `scrapeUrl`...).
    pub async fn targets(&self, job: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/targets?state=active", &[]).await?;
        let all = data["activeTargets"].as_array().cloned().unwrap_or_default();
        Ok(all.into_iter().filter(|t| t["labels"]["job"] == job).collect())
    }

    /// An instant PromQL query; the samples of its vector answer (a scalar
    /// answer is one sample without labels).
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        let parse = |v: &Value| -> Result<f64, String> {
            v[1].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("unexpected sample value {v}"))
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
                        })
                        .unwrap_or_default();
                    Ok(Sample { labels, value: parse(&s["value"])? })
                })
                .collect(),
            Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: parse(&data["result"])? }]),
            other => Err(format!("query {promql:?}: unexpected result type {other:?}: {data}")),
        }
    }

    /// Polls `promql` until `check` accepts its samples; panics after
    /// `within` with the last answer.
    pub async fn eventually<T>(
        &self,
        promql: &str,
        within: Duration,
        mut check: impl FnMut(&[Sample]) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + within;
        loop {
            let answer = self.query(promql).await;
            if let Ok(samples) = &answer
                && let Some(v) = check(samples)
            {
                return v;
            }
            if std::time::Instant::now() > deadline {
                panic!("timed out after {within:?} waiting on PromQL {promql:?}; last answer: {answer:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| format!("GET {path}: HTTP {status}, not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("GET {path}: HTTP {status}: {body}"));
        }
        Ok(body["data"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the Prometheus just started answers `/-/ready`; says why not
/// (its log) when it exits or takes a minute.
async fn wait_ready(child: &mut Child, client: &reqwest::Client, url: &str, log: &Path) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default()));
        }
        if let Ok(resp) = client.get(format!("{url}/-/ready")).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("not ready after 60 s: {}", std::fs::read_to_string(log).unwrap_or_default()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}
