//! Real notification receivers for end-to-end alert tests, all on loopback:
//! a webhook server that checks the HMAC signature itself (HTTP/1.1 over a
//! plain TCP listener, one request per connection), an SMTP server (Debian's
//! `python3-aiosmtpd`, writing each message to a file) and a real Prometheus
//! Alertmanager (`/usr/bin/prometheus-alertmanager`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use drover_manager::notify::webhook::WebhookPayload;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const START: Duration = Duration::from_secs(30);

/// HMAC-SHA256 of `body` keyed with `key` (RFC 2104), written out here so the
/// check does not share code with the manager's signer.
pub fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(body).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// One notification the webhook server accepted (the signature was right).
#[derive(Debug, Clone)]
pub struct Hook {
    pub at: Instant,
    pub payload: WebhookPayload,
}

#[derive(Default)]
struct HookState {
    received: Vec<Hook>,
    rejected: Vec<String>,
}

/// A webhook receiver on 127.0.0.1: answers 401 (and records why) unless
/// `X-Drover-Signature` is `sha256=<hex HMAC of the body>` with its secret and
/// `X-Drover-Timestamp` is within a minute of now; 400 unless the body is an
/// Alertmanager version 4 payload; else 200. Stops when dropped.
pub struct WebhookServer {
    pub url: String,
    secret: Vec<u8>,
    state: Arc<Mutex<HookState>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookServer {
    pub async fn start(secret: &str) -> WebhookServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook server");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(HookState::default()));
        let (s, key) = (state.clone(), secret.as_bytes().to_vec());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, key) = (s.clone(), key.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, &key, &s).await {
                        s.lock().unwrap().rejected.push(format!("bad request: {e:#}"));
                    }
                });
            }
        });
        WebhookServer { url, secret: secret.as_bytes().to_vec(), state, task }
    }

    /// Every accepted notification, in arrival order.
    pub fn received(&self) -> Vec<Hook> {
        self.state.lock().unwrap().received.clone()
    }

    /// Why requests were refused (a bad signature or timestamp, a bad body).
    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(stream: TcpStream, key: &[u8], state: &Mutex<HookState>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').with_context(|| format!("header {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let len: usize = header("content-length").context("no Content-Length")?.parse()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;

    let expected = format!("sha256={}", hex::encode(hmac_sha256(key, &body)));
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let sent = header("x-drover-timestamp").and_then(|t| t.parse::<i64>().ok());
    let (status, why) = if !request_line.starts_with("POST /hook ") {
        (404, Some(format!("request {:?}", request_line.trim_end())))
    } else if header("x-drover-signature") != Some(expected.as_str()) {
        (401, Some(format!("signature {:?}, expected {expected}", header("x-drover-signature"))))
    } else if sent.is_none_or(|t| (now - t).abs() > 60) {
        (401, Some(format!("timestamp {:?} (now {now})", header("x-drover-timestamp"))))
    } else {
        match serde_json::from_slice::<WebhookPayload>(&body) {
            Ok(payload) if payload.version == "4" => {
                state.lock().unwrap().received.push(Hook { at: Instant::now(), payload });
                (200, None)
            }
            Ok(p) => (400, Some(format!("version {}", p.version))),
            Err(e) => (400, Some(format!("not a webhook payload: {e}: {}", String::from_utf8_lossy(&body)))),
        }
    };
    if let Some(why) = why {
        state.lock().unwrap().rejected.push(why);
    }
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut stream = reader.into_inner();
    stream
        .write_all(format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    stream.shutdown().await?;
    Ok(())
}

/// An SMTP server (aiosmtpd) writing each message it gets to a file in `dir`.
const SMTP_SERVER: &str = r#"
import asyncio, os, sys
from aiosmtpd.smtp import SMTP

out = sys.argv[1]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith('.eml')])
        tmp = os.path.join(out, f'{n:04}.tmp')
        with open(tmp, 'wb') as f:
            f.write(b'X-Envelope-To: ' + ','.join(envelope.rcpt_tos).encode() + b'\r\n')
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(out, f'{n:04}.eml'))
        return '250 OK'

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler()), '127.0.0.1', 0)
    print('listening', server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// A plain SMTP server on 127.0.0.1 (no TLS, no authentication); killed on drop.
pub struct SmtpServer {
    _child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    /// Starts aiosmtpd with `/usr/bin/python3`; mail goes to `dir/mail`, its log to `dir/smtp.log`.
    pub async fn start(dir: &Path) -> SmtpServer {
        let out = dir.join("mail");
        std::fs::create_dir_all(&out).unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", SMTP_SERVER, &out.display().to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("smtp.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start /usr/bin/python3 with aiosmtpd (Debian's python3-aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line =
            tokio::time::timeout(START, lines.next_line()).await.expect("aiosmtpd starts").unwrap().unwrap_or_default();
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("aiosmtpd said {line:?}"));
        SmtpServer { _child: child, port, dir: out }
    }

    /// Every message received so far, oldest first, quoted-printable decoded.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files.iter().map(|p| quoted_printable_decode(&std::fs::read_to_string(p).unwrap_or_default())).collect()
    }
}

/// Undoes quoted-printable (soft line breaks and `=XX`), enough for ASCII bodies.
pub fn quoted_printable_decode(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'=', Some(byte)) = (b[i], hex) {
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A real Prometheus Alertmanager on 127.0.0.1 with its own storage, no
/// clustering and a receiver that sends nothing; killed on drop.
pub struct Alertmanager {
    _child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub async fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n").unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::procs::free_port()));
        let child = Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start /usr/bin/prometheus-alertmanager (Debian's prometheus-alertmanager)");
        let url = format!("http://{addr}");
        let ready = format!("{url}/-/ready");
        crate::eventually(START, "Alertmanager to be ready", || {
            let ready = ready.clone();
            async move { reqwest::get(&ready).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        Alertmanager { _child: child, url, _dir: dir }
    }

    /// The alerts Alertmanager lists at `/api/v2/alerts` (resolved ones leave the list).
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let r = reqwest::get(format!("{}/api/v2/alerts", self.url)).await?;
        Ok(r.error_for_status()?.json().await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let mac = super::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
