//! A minimal Redis (RESP2) client for end-to-end tests: enough to SET, GET,
//! CONFIG GET and INFO against a real redis-server, on this machine or in a
//! container (the `_at` variants take an address).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command on a fresh connection to 127.0.0.1:`port` and reads the reply.
pub async fn command(port: u16, args: &[&str]) -> anyhow::Result<Reply> {
    command_at(local(port), args).await
}

/// Sends one command on a fresh connection to `addr` and reads the reply.
pub async fn command_at(addr: SocketAddr, args: &[&str]) -> anyhow::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to redis at {addr}"))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out).await?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader).await
}

/// Sends `AUTH password` and then one command on a fresh connection to
/// `addr`; returns the command's reply (an AUTH failure is an error).
pub async fn command_auth_at(addr: SocketAddr, password: &str, args: &[&str]) -> anyhow::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to redis at {addr}"))?;
    let mut out = Vec::new();
    for cmd in [&["AUTH", password][..], args] {
        out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
        for a in cmd {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    stream.write_all(&out).await?;
    let mut reader = BufReader::new(stream);
    match read_reply(&mut reader).await? {
        Reply::Simple(ok) if ok == "OK" => read_reply(&mut reader).await,
        other => bail!("AUTH at {addr} answered {other:?}"),
    }
}

fn read_reply<'a>(
    r: &'a mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    r.read_exact(&mut buf).await?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(read_reply(r).await?);
                }
                Reply::Array(items)
            }
            _ => bail!("unexpected RESP reply {line:?}"),
        })
    })
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `CONFIG GET name` as a string, from 127.0.0.1:`port`.
pub async fn config_get(port: u16, name: &str) -> anyhow::Result<String> {
    config_get_at(local(port), name).await
}

/// `CONFIG GET name` as a string, from `addr`.
pub async fn config_get_at(addr: SocketAddr, name: &str) -> anyhow::Result<String> {
    match command_at(addr, &["CONFIG", "GET", name]).await? {
        Reply::Array(items) if items.len() == 2 => items[1].text().context("CONFIG GET value"),
        other => bail!("unexpected CONFIG GET reply {other:?}"),
    }
}

/// Sends a ZooKeeper four-letter word (e.g. `srvr`) and returns the answer
/// (empty if the server closed the connection without one). A refused
/// connection is an `std::io::Error` of kind `ConnectionRefused` inside.
pub async fn four_letter_word(port: u16, word: &str) -> anyhow::Result<String> {
    four_letter_word_at(local(port), word).await
}

/// [`four_letter_word`] to a server at `addr`.
pub async fn four_letter_word_at(addr: SocketAddr, word: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to zookeeper at {addr}"))?;
    stream.write_all(word.as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}
