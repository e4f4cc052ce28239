//! Health probes the agent runs against its roles: TCP connect, HTTP GET over a
//! plain HTTP/1.0 exchange (no HTTP client library), and a command whose exit
//! status decides. Each probe is bounded by its timeout; the failure threshold
//! is applied by the reconciler.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::files::substitute;
use crate::roles::Probe;

/// Runs `probe` once; `Err` says why it failed.
pub async fn run(probe: &Probe, timeout: Duration, role_dir: &Path) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_unbounded(probe, role_dir)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
    }
}

async fn run_unbounded(probe: &Probe, role_dir: &Path) -> Result<(), String> {
    match probe {
        Probe::Tcp { host, port } => {
            let host = if host.is_empty() { "127.0.0.1" } else { host.as_str() };
            TcpStream::connect((host, *port)).await.map(drop).map_err(|e| format!("connect to {host}:{port}: {e}"))
        }
        Probe::Http { url, expect_status } => http_get(url, *expect_status).await,
        Probe::Command { program, args } => {
            let status = tokio::process::Command::new(substitute(program, role_dir))
                .args(args.iter().map(|a| substitute(a, role_dir)))
                .current_dir(role_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("run {program}: {e}"))?;
            if status.success() { Ok(()) } else { Err(format!("{program} {status}")) }
        }
        Probe::Unknown => Err("unknown probe kind; upgrade the agent".into()),
    }
}

/// `http://host[:port][/path]` split into host, port and path.
pub(crate) fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs can be probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

async fn http_get(url: &str, expect_status: u16) -> Result<(), String> {
    let (host, port, path) = parse_http_url(url)?;
    let mut stream = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect to {url}: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: drover-agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send to {url}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| format!("read from {url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    let ok = if expect_status == 0 { (200..300).contains(&status) } else { status == expect_status };
    if ok { Ok(()) } else { Err(format!("{url} answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_parsed() {
        let ok = |u: &str| parse_http_url(u).expect(u);
        assert_eq!(ok("http://127.0.0.1:8080/health"), ("127.0.0.1".into(), 8080, "/health".into()));
        assert_eq!(ok("http://example.com"), ("example.com".into(), 80, "/".into()));
        assert_eq!(ok("http://[::1]:81/x?y"), ("::1".into(), 81, "/x?y".into()));
        for bad in ["https://x/", "http://:80/", "http://x:port/"] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }
}
