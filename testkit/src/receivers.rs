//! Real notification receivers for alert tests, all on loopback: a webhook
//! server that checks the HMAC signature itself (HTTP/1.1 over a plain TCP
//! listener, one request per connection), an SMTP server (Debian's
//! `python3-aiosmtpd`, writing each message to a file; optionally with
//! STARTTLS and authentication) and a real Prometheus Alertmanager
//! (`/usr/bin/prometheus-alertmanager`). Each stops when dropped.
//!
//! The webhook server knows nothing of Drover's types: it hands back each
//! accepted body as the payload type the test names.
//!
//! ```no_run
//! # async fn f() {
//! use drover_testkit::receivers::WebhookServer;
//! let hooks = WebhookServer::<serde_json::Value>::start("secret").await;
//! // ... point a webhook receiver at hooks.url, fire an alert ...
//! assert!(hooks.rejected().is_empty());
//! # }
//! ```

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// How long a receiver may take to start.
const START: Duration = Duration::from_secs(30);

/// The headers Drover signs a webhook request with.
const SIGNATURE_HEADER: &str = "x-drover-signature";
const TIMESTAMP_HEADER: &str = "x-drover-timestamp";

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

/// One notification the webhook server accepted (signed right, a version 4 payload).
#[derive(Debug, Clone)]
pub struct Hook<P> {
    pub at: Instant,
    pub payload: P,
}

struct HookState<P> {
    received: Vec<Hook<P>>,
    rejected: Vec<String>,
    requests: u32,
    /// Answers still to give to well-signed requests, last first.
    scripted: Vec<u16>,
}

/// A webhook receiver on 127.0.0.1 for payloads of type `P`: answers 401 (and
/// records why) unless `X-Drover-Signature` is `sha256=<hex HMAC of the body>`
/// with its secret and `X-Drover-Timestamp` is within a minute of now; then
/// the next scripted status, if any ([`WebhookServer::scripted`]); then 400
/// (recorded) unless the body is an Alertmanager version 4 payload that parses
/// as `P`; else 200. Stops when dropped.
pub struct WebhookServer<P> {
    pub url: String,
    secret: Vec<u8>,
    state: Arc<Mutex<HookState<P>>>,
    task: tokio::task::JoinHandle<()>,
    _payload: PhantomData<fn() -> P>,
}

impl<P: DeserializeOwned + Clone + Send + 'static> WebhookServer<P> {
    /// A receiver at `url` (`http://127.0.0.1:PORT/hook`) checking signatures with `secret`.
    pub async fn start(secret: &str) -> WebhookServer<P> {
        WebhookServer::scripted(secret, &[]).await
    }

    /// [`WebhookServer::start`] answering the first well-signed requests with
    /// `statuses`, in order (e.g. `[503, 500]` for a server that fails twice).
    pub async fn scripted(secret: &str, statuses: &[u16]) -> WebhookServer<P> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook server");
        let url = format!("http://{}/hook", listener.local_addr().expect("webhook server address"));
        let state = Arc::new(Mutex::new(HookState {
            received: Vec::new(),
            rejected: Vec::new(),
            requests: 0,
            scripted: statuses.iter().rev().copied().collect(),
        }));
        let (s, key) = (state.clone(), secret.as_bytes().to_vec());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, key) = (s.clone(), key.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, &key, &s).await {
                        s.lock().expect("webhook state").rejected.push(format!("bad request: {e}"));
                    }
                });
            }
        });
        WebhookServer { url, secret: secret.as_bytes().to_vec(), state, task, _payload: PhantomData }
    }

    /// Every accepted notification, in arrival order.
    pub fn received(&self) -> Vec<Hook<P>> {
        self.state.lock().expect("webhook state").received.clone()
    }

    /// Why requests were refused (a bad signature or timestamp, a bad body).
    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().expect("webhook state").rejected.clone()
    }

    /// Requests received, answered whatever way.
    pub fn requests(&self) -> u32 {
        self.state.lock().expect("webhook state").requests
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl<P> Drop for WebhookServer<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<P: DeserializeOwned>(
    stream: TcpStream,
    key: &[u8],
    state: &Mutex<HookState<P>>,
) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed in the headers".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let len: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad(format!("Content-Length {:?}", header("content-length"))))?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;

    let expected = format!("sha256={}", hex::encode(hmac_sha256(key, &body)));
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let sent = header(TIMESTAMP_HEADER).and_then(|t| t.parse::<i64>().ok());
    let (status, why) = {
        let mut s = state.lock().expect("webhook state");
        s.requests += 1;
        if !request_line.starts_with("POST /hook ") {
            (404, Some(format!("request {:?}", request_line.trim_end())))
        } else if header(SIGNATURE_HEADER) != Some(expected.as_str()) {
            (401, Some(format!("signature {:?}, expected {expected}", header(SIGNATURE_HEADER))))
        } else if sent.is_none_or(|t| (now - t).abs() > 60) {
            (401, Some(format!("timestamp {:?} (now {now})", header(TIMESTAMP_HEADER))))
        } else if let Some(status) = s.scripted.pop() {
            (status, None)
        } else {
            let version = serde_json::from_slice::<serde_json::Value>(&body).ok().map(|v| v["version"].clone());
            match serde_json::from_slice::<P>(&body) {
                Ok(payload) if version.as_ref().and_then(|v| v.as_str()) == Some("4") => {
                    s.received.push(Hook { at: Instant::now(), payload });
                    (200, None)
                }
                Ok(_) => (400, Some(format!("version {version:?}, expected \"4\""))),
                Err(e) => (400, Some(format!("not a webhook payload: {e}: {}", String::from_utf8_lossy(&body)))),
            }
        }
    };
    if let Some(why) = why {
        state.lock().expect("webhook state").rejected.push(why);
    }
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Scripted",
    };
    let mut stream = reader.into_inner();
    stream
        .write_all(format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    stream.shutdown().await
}

/// An SMTP server (aiosmtpd) writing each message it gets to a file in
/// `dir`; with a certificate it requires STARTTLS, with a user it requires
/// authentication.
const SMTP_SERVER: &str = r#"
import asyncio, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

out, cert, key, user, password = sys.argv[1:6]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith('.eml')])
        tmp = os.path.join(out, f'{n:04}.tmp')
        with open(tmp, 'wb') as f:
            f.write(b'X-Envelope-To: ' + ','.join(envelope.rcpt_tos).encode() + b'\r\n')
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(out, f'{n:04}.eml'))
        return '250 OK'

def authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
    return AuthResult(success=ok, handled=False)

kw = {}
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kw.update(tls_context=ctx, require_starttls=True)
if user:
    kw.update(authenticator=authenticate, auth_required=True, auth_require_tls=bool(cert))

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler(), **kw), '127.0.0.1', 0)
    print('listening', server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// An SMTP server on 127.0.0.1; killed on drop.
pub struct SmtpServer {
    _child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    /// A plain server: no TLS, no authentication.
    pub async fn plain(dir: &Path) -> SmtpServer {
        SmtpServer::start(dir, None, None).await
    }

    /// Starts aiosmtpd with `/usr/bin/python3`; mail goes to `dir/mail`, its
    /// log (a refused handshake is logged with a traceback) to `dir/smtp.log`.
    /// With `tls` (certificate and key PEM files) it requires STARTTLS; with
    /// `auth` (user, password) it requires that login.
    pub async fn start(dir: &Path, tls: Option<(&Path, &Path)>, auth: Option<(&str, &str)>) -> SmtpServer {
        let out = dir.join("mail");
        std::fs::create_dir_all(&out).expect("create the mail dir");
        let (cert, key) = tls.map(|(c, k)| (c.display().to_string(), k.display().to_string())).unwrap_or_default();
        let (user, password) = auth.unwrap_or_default();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", SMTP_SERVER, &out.display().to_string(), &cert, &key, user, password])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("smtp.log")).expect("create smtp.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start /usr/bin/python3 with aiosmtpd (Debian's python3-aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().expect("aiosmtpd's stdout")).lines();
        let line = tokio::time::timeout(START, lines.next_line())
            .await
            .expect("aiosmtpd starts")
            .expect("read aiosmtpd's stdout")
            .unwrap_or_default();
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("aiosmtpd said {line:?}; see {}", dir.join("smtp.log").display()));
        SmtpServer { _child: child, port, dir: out }
    }

    /// Every message received so far, oldest first, quoted-printable decoded,
    /// after an `X-Envelope-To:` line naming the recipients.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("read the mail dir")
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
    /// Starts it and waits until it answers `/-/ready`.
    pub async fn start() -> Alertmanager {
        let dir = tempfile::tempdir().expect("temp dir for alertmanager");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n")
            .expect("write alertmanager.yml");
        let addr = format!("127.0.0.1:{}", crate::prometheus::free_port());
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
    pub async fn alerts(&self) -> Result<Vec<serde_json::Value>, String> {
        let get = async {
            let r = reqwest::get(format!("{}/api/v2/alerts", self.url)).await?;
            r.error_for_status()?.json().await
        };
        get.await.map_err(|e: reqwest::Error| format!("list Alertmanager's alerts: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn quoted_printable_joins_soft_breaks_and_decodes_bytes() {
        assert_eq!(quoted_printable_decode("a=3Db=\r\nc =ZZ"), "a=bc =ZZ");
    }

    /// Sends `body` to the server as Drover would, signed with `key` at `ts`.
    async fn post(url: &str, key: &[u8], ts: i64, body: &str) -> u16 {
        let sig = format!("sha256={}", hex::encode(hmac_sha256(key, body.as_bytes())));
        let r = reqwest::Client::new()
            .post(url)
            .header(SIGNATURE_HEADER, sig)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .body(body.to_owned())
            .send()
            .await
            .expect("the webhook server answers");
        r.status().as_u16()
    }

    #[tokio::test]
    async fn the_webhook_server_takes_only_signed_version_4_payloads_after_its_script() {
        let hooks = WebhookServer::<serde_json::Value>::scripted("k", &[503]).await;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let v4 = r#"{"version":"4","alerts":[]}"#;
        assert_eq!(post(&hooks.url, b"wrong", now, v4).await, 401);
        assert_eq!(post(&hooks.url, b"k", now - 120, v4).await, 401, "a stale timestamp");
        assert_eq!(post(&hooks.url, b"k", now, v4).await, 503, "the script");
        assert_eq!(post(&hooks.url, b"k", now, r#"{"version":"3"}"#).await, 400);
        assert_eq!(post(&hooks.url, b"k", now, v4).await, 200);
        assert_eq!(hooks.requests(), 5);
        assert_eq!(hooks.rejected().len(), 3, "{:?}", hooks.rejected());
        let got = hooks.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload["version"], "4");
    }
}
