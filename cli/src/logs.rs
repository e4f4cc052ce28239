//! `drover logs`: a role's log, a service's logs (searched across its hosts)
//! or an agent's own log, once or followed (`-f`, server-sent events, one
//! per role, printed as they arrive). Lines are prefixed `hostname role |`,
//! coloured per host and role when standard output is a terminal.

use std::io::{IsTerminal, Write};

use anyhow::{Context as _, bail};
use clap::Args;
use drover_api::logs::{LogEnd, LogLineView, LogSearchResult, LogsResult};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::cli::OutputFormat;
use crate::commands::Context;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// CLUSTER/SERVICE/ROLE (one role's log) or CLUSTER/SERVICE (every role of the service).
    #[arg(required_unless_present = "agent", conflicts_with = "agent")]
    pub target: Option<String>,
    /// The agent's own log of this host (hostname, ID or ID prefix).
    #[arg(long, value_name = "HOST")]
    pub agent: Option<String>,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The last N lines (per role; for a service: at most N matches in all).
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Only lines matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
    /// From this time: RFC 3339 or a duration back from now (1h, 30m).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Lowest level: error, warn, info, debug, trace.
    #[arg(long, value_name = "L")]
    pub level: Option<String>,
    /// stdout, stderr or file (comma-separated).
    #[arg(long, value_name = "S")]
    pub stream: Option<String>,
}

const COLOURS: [&str; 6] = ["31", "32", "33", "34", "35", "36"];

/// `hostname role | text`, the prefix coloured by host and role on a terminal.
pub fn format_line(l: &LogLineView, colour: bool) -> String {
    let who = if l.role.is_empty() { format!("{} agent", l.hostname) } else { format!("{} {}", l.hostname, l.role) };
    if !colour {
        return format!("{who} | {}", l.text);
    }
    let n = who.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    format!("\x1b[{}m{who} |\x1b[0m {}", COLOURS[n % COLOURS.len()], l.text)
}

fn query(args: &LogsArgs, tail_key: &str) -> Vec<(&'static str, String)> {
    let mut q: Vec<(&'static str, String)> = Vec::new();
    let key: &'static str = if tail_key == "limit" { "limit" } else { "tail" };
    for (k, v) in [
        (key, args.tail.map(|t| t.to_string())),
        ("since", args.since.clone()),
        ("until", args.until.clone()),
        ("level", args.level.clone()),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    q
}

pub async fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<String> {
    let colour = std::io::stdout().is_terminal() && ctx.output != OutputFormat::Json;
    if let Some(host) = &args.agent {
        let mut q = query(&args, "tail");
        if let Some(g) = &args.grep {
            q.push(("grep", g.clone()));
        }
        let found = crate::commands::resolve_host(&ctx.client, host).await?;
        return role_like(ctx, &["hosts", &found.host.id, "agent-log"], q, args.follow, colour).await;
    }
    let target = args.target.clone().unwrap_or_default();
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [c, s, r] if ![c, s, r].iter().any(|p| p.is_empty()) => {
            let mut q = query(&args, "tail");
            if let Some(g) = &args.grep {
                q.push(("grep", g.clone()));
            }
            if let Some(s) = &args.stream {
                q.push(("stream", s.clone()));
            }
            role_like(ctx, &["clusters", c, "services", s, "roles", r, "logs"], q, args.follow, colour).await
        }
        [c, s] if !c.is_empty() && !s.is_empty() => service(ctx, &args, c, s, colour).await,
        _ => bail!("expected CLUSTER/SERVICE or CLUSTER/SERVICE/ROLE, got {target:?}"),
    }
}

async fn role_like(
    ctx: &Context,
    segments: &[&str],
    q: Vec<(&'static str, String)>,
    follow: bool,
    colour: bool,
) -> anyhow::Result<String> {
    if follow {
        let (tx, mut rx) = mpsc::channel(256);
        let resp = ctx.client.get_events(segments, &q).await?;
        tokio::spawn(read_events(resp, "line", tx));
        return print_events(&mut rx, colour).await;
    }
    let value = ctx.client.get(segments, &q).await?;
    if ctx.output == OutputFormat::Json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&value)?));
    }
    let r: LogsResult = serde_json::from_value(value).context("read the manager's log answer")?;
    let mut out = String::new();
    for l in &r.lines {
        out.push_str(&format_line(l, colour));
        out.push('\n');
    }
    if let Some(e) = r.error {
        eprintln!("warning: {e}");
    }
    if r.truncated {
        eprintln!("(more lines matched; use --tail or --since to see others)");
    }
    Ok(out)
}

async fn service(ctx: &Context, args: &LogsArgs, c: &str, s: &str, colour: bool) -> anyhow::Result<String> {
    if args.follow {
        // One followed log per role, merged as lines arrive.
        let roles = ctx.client.get(&["clusters", c, "services", s, "roles"], crate::manager_client::NO_QUERY).await?;
        let list = roles.get("items").cloned().unwrap_or(roles);
        let names: Vec<String> = list
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if names.is_empty() {
            bail!("service {c}/{s} has no roles");
        }
        let (tx, mut rx) = mpsc::channel(256);
        let mut q = query(args, "tail");
        if let Some(g) = &args.grep {
            q.push(("grep", g.clone()));
        }
        if let Some(st) = &args.stream {
            q.push(("stream", st.clone()));
        }
        for name in &names {
            let resp = ctx.client.get_events(&["clusters", c, "services", s, "roles", name, "logs"], &q).await?;
            tokio::spawn(read_events(resp, "line", tx.clone()));
        }
        drop(tx);
        return print_events(&mut rx, colour).await;
    }
    let mut q = query(args, "limit");
    q.push(("cluster", c.to_owned()));
    q.push(("service", s.to_owned()));
    if let Some(g) = &args.grep {
        q.push(("q", g.clone()));
    }
    let value = ctx.client.get(&["logs", "search"], &q).await?;
    if ctx.output == OutputFormat::Json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&value)?));
    }
    let r: LogSearchResult = serde_json::from_value(value).context("read the manager's search answer")?;
    let mut out = String::new();
    for l in &r.matches {
        out.push_str(&format_line(l, colour));
        out.push('\n');
    }
    for h in r.hosts.iter().filter(|h| r.failed_hosts.contains(&h.hostname)) {
        eprintln!("warning: host {} {}: {}", h.hostname, h.status, h.error.clone().unwrap_or_default());
    }
    if r.truncated {
        eprintln!("(more lines matched; narrow with --grep, --since or --tail)");
    }
    Ok(out)
}

/// What a followed stream gives: a line, or its end.
enum Followed {
    Line(Box<LogLineView>),
    End(Option<String>),
}

/// Reads server-sent events; sends each `event: <kind>` data as a line and
/// `event: end` as the end.
async fn read_events(resp: reqwest::Response, kind: &'static str, tx: mpsc::Sender<Followed>) {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let (mut name, mut data) = ("message", String::new());
            for l in event.lines() {
                if let Some(v) = l.strip_prefix("event:") {
                    name = if v.trim() == kind {
                        kind
                    } else if v.trim() == "end" {
                        "end"
                    } else {
                        "other"
                    };
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let msg = match name {
                n if n == kind => match serde_json::from_str::<LogLineView>(&data) {
                    Ok(l) => Followed::Line(Box::new(l)),
                    Err(_) => continue,
                },
                "end" => Followed::End(serde_json::from_str::<LogEnd>(&data).ok().and_then(|e| e.error)),
                _ => continue,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Followed::End(Some("the manager closed the stream".into()))).await;
}

async fn print_events(rx: &mut mpsc::Receiver<Followed>, colour: bool) -> anyhow::Result<String> {
    let mut stdout = std::io::stdout();
    while let Some(m) = rx.recv().await {
        match m {
            Followed::Line(l) => {
                writeln!(stdout, "{}", format_line(&l, colour))?;
                stdout.flush()?;
            }
            Followed::End(Some(e)) => eprintln!("warning: {e}"),
            Followed::End(None) => {}
        }
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> LogLineView {
        serde_json::from_value::<LogLineView>(serde_json::json!({
            "time": null, "time_unix_ms": null, "host_id": "h1", "hostname": "h1.example", "cluster": "prod",
            "service": "cache", "role": "cache-primary-1", "role_id": "r1", "role_type": "primary",
            "file": "logs/stdout.log", "line": 3, "stream": "stdout", "level": null, "text": "Ready"
        }))
        .unwrap()
    }

    #[test]
    fn lines_are_prefixed_plain_or_coloured() {
        assert_eq!(format_line(&view(), false), "h1.example cache-primary-1 | Ready");
        let c = format_line(&view(), true);
        assert!(c.starts_with("\x1b[3") && c.ends_with("|\x1b[0m Ready"), "{c:?}");
    }
}
