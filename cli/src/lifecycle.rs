//! The parcel repository and lifecycle over the REST API: `drover parcel
//! upload|list|distribute|activate|deactivate|remove`, `drover cluster hosts`
//! and `drover service upgrade|rollback`, and following a started command
//! step by step until it ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use drover_api::Items;
use drover_api::clusters::AddHosts;
use drover_api::commands::{CommandState, CommandView, NewCommand, ServiceCommand as Command, StepState};
use drover_api::parcels::{HostParcel, HostParcelState, NewParcelCommand, ParcelList, Source, UploadQuery};
use futures::TryStreamExt;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cli::{
    ClusterCommand, ClusterHostsAddArgs, ClusterHostsCommand, OutputFormat, ParcelCommand, ParcelDeactivateArgs,
    ParcelUploadArgs, ServiceCommand, WaitArgs,
};
use crate::commands::{Context, all_hosts, pretty, resolve_host};
use crate::manager_client::{NO_QUERY, decode};
use crate::render::{Table, human_bytes, short_id};

/// How often a followed command is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Read and send size of an upload.
const UPLOAD_CHUNK: usize = 256 * 1024;

pub async fn parcel(ctx: &Context, command: ParcelCommand) -> anyhow::Result<String> {
    match command {
        ParcelCommand::Upload(args) => upload(ctx, &args).await,
        ParcelCommand::List => list(ctx).await,
        ParcelCommand::Distribute(args) => {
            let body = NewParcelCommand::Distribute { parcel: args.name.clone(), version: args.version.clone() };
            start_parcel_command(ctx, &args.cluster, &body, &args.wait).await
        }
        ParcelCommand::Activate(args) => {
            let body = NewParcelCommand::Activate { parcel: args.name.clone(), version: args.version.clone() };
            start_parcel_command(ctx, &args.cluster, &body, &args.wait).await
        }
        ParcelCommand::Remove(args) => {
            let body = NewParcelCommand::Remove { parcel: args.name.clone(), version: args.version.clone() };
            start_parcel_command(ctx, &args.cluster, &body, &args.wait).await
        }
        ParcelCommand::Deactivate(args) => deactivate(ctx, &args).await,
        local @ (ParcelCommand::Build(_) | ParcelCommand::Index(_) | ParcelCommand::Inspect(_)) => {
            crate::parcel::run(local, ctx.output)
        }
    }
}

pub async fn cluster(ctx: &Context, command: ClusterCommand) -> anyhow::Result<String> {
    match command {
        ClusterCommand::Hosts(ClusterHostsCommand::Add(args)) => hosts_add(ctx, &args).await,
        ClusterCommand::Hosts(ClusterHostsCommand::List(args)) => hosts_list(ctx, &args.cluster).await,
    }
}

pub async fn service(ctx: &Context, command: ServiceCommand) -> anyhow::Result<String> {
    let command_of = |name, version| NewCommand { name, roles: None, stale_only: false, version };
    let (cluster, service, body, wait) = match &command {
        ServiceCommand::Upgrade(a) => {
            (&a.cluster, &a.service, command_of(Command::Upgrade, Some(a.version.clone())), &a.wait)
        }
        ServiceCommand::Rollback(a) => (&a.cluster, &a.service, command_of(Command::Rollback, None), &a.wait),
    };
    let segments = ["clusters", cluster.as_str(), "services", service.as_str(), "commands"];
    let started = ctx.client.send_json(Method::POST, &segments, Some(&body)).await?;
    follow(ctx, started, wait).await
}

/// The sha256 of a file, read in 1 MiB pieces.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

async fn upload(ctx: &Context, args: &ParcelUploadArgs) -> anyhow::Result<String> {
    let path = args.file.clone();
    let shown = path.display().to_string();
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{shown} has no file name; expected NAME-VERSION-DISTRO.parcel"))?
        .to_owned();
    let size = tokio::fs::metadata(&path).await.with_context(|| format!("read {shown}"))?.len();
    eprintln!("computing the sha256 of {shown} ({})", human_bytes(size));
    let hashed = path.clone();
    let sha256 = tokio::task::spawn_blocking(move || sha256_file(&hashed))
        .await
        .context("hash the parcel")?
        .with_context(|| format!("read {shown}"))?;
    let file = tokio::fs::File::open(&path).await.with_context(|| format!("open {shown}"))?;
    let progress = Arc::new(Mutex::new(Progress::new(&file_name, size, std::io::stderr().is_terminal())));
    let counter = progress.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect_ok(move |chunk| {
        if let Some(line) = counter.lock().expect("progress lock").advance(chunk.len() as u64) {
            eprint!("{line}");
        }
    });
    // Slow links are fine: at least 10 minutes, and a second per MiB beyond that.
    let timeout = Duration::from_secs(600 + size / (1 << 20));
    let started = Instant::now();
    let query = UploadQuery { file_name: file_name.clone(), sha256: sha256.clone() };
    let result = ctx.client.post_stream(&["parcels"], &query, reqwest::Body::wrap_stream(stream), size, timeout).await;
    if let Some(line) = progress.lock().expect("progress lock").finish() {
        eprint!("{line}");
    }
    let entry = result.with_context(|| format!("upload {file_name}"))?;
    if ctx.output == OutputFormat::Json {
        return pretty(&entry);
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = size as f64 / secs.max(1e-3);
    Ok(format!(
        "uploaded {file_name} ({}, sha256 {sha256}) in {secs:.1}s ({}/s)\n",
        human_bytes(size),
        human_bytes(rate as u64)
    ))
}

/// Upload progress for stderr: one line rewritten in place on a terminal, a
/// line every 10 % otherwise.
#[derive(Debug)]
pub struct Progress {
    name: String,
    total: u64,
    sent: u64,
    interactive: bool,
    started: Instant,
    last_shown: Option<Instant>,
    last_tenth: u64,
}

impl Progress {
    pub fn new(name: &str, total: u64, interactive: bool) -> Progress {
        Progress {
            name: name.to_owned(),
            total,
            sent: 0,
            interactive,
            started: Instant::now(),
            last_shown: None,
            last_tenth: 0,
        }
    }

    /// Counts `n` more bytes sent; returns what to print, if anything.
    pub fn advance(&mut self, n: u64) -> Option<String> {
        self.sent += n;
        if self.interactive {
            let due = self.last_shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
            if !due {
                return None;
            }
            self.last_shown = Some(Instant::now());
            return Some(format!("\r{}", self.line()));
        }
        let tenth = self.sent.saturating_mul(10).checked_div(self.total).unwrap_or(10).min(10);
        if tenth == self.last_tenth {
            return None;
        }
        self.last_tenth = tenth;
        Some(format!("{}\n", self.line()))
    }

    /// The last line once the body is sent (or failed).
    pub fn finish(&mut self) -> Option<String> {
        self.interactive.then(|| format!("\r{}\n", self.line()))
    }

    fn line(&self) -> String {
        let percent = (self.sent * 100).checked_div(self.total).unwrap_or(100);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "uploading {}: {} of {} ({percent}%), {}/s",
            self.name,
            human_bytes(self.sent),
            human_bytes(self.total),
            human_bytes((self.sent as f64 / secs) as u64)
        )
    }
}

async fn list(ctx: &Context) -> anyhow::Result<String> {
    let value = ctx.client.get(&["parcels"], NO_QUERY).await?;
    match ctx.output {
        OutputFormat::Json => pretty(&value),
        OutputFormat::Table => Ok(parcels_table(&decode(value)?)),
    }
}

/// `local`, or the URL of the remote repository.
fn source(s: &Source) -> String {
    match s {
        Source::Local => "local".into(),
        Source::Remote { url } => url.clone(),
    }
}

/// Counts of the hosts' states, e.g. `2 active, 1 downloading 45%, 1 failed`.
pub fn host_summary(hosts: &[HostParcel]) -> String {
    if hosts.is_empty() {
        return "no hosts".into();
    }
    let mut counts: BTreeMap<usize, (&str, u64, Option<u64>)> = BTreeMap::new();
    const ORDER: [HostParcelState; 5] = [
        HostParcelState::Active,
        HostParcelState::Distributed,
        HostParcelState::Downloading,
        HostParcelState::Failed,
        HostParcelState::Available,
    ];
    for h in hosts {
        let rank = ORDER.iter().position(|s| *s == h.state).unwrap_or(ORDER.len());
        let e = counts.entry(rank).or_insert_with(|| (h.state.as_str(), 0, None));
        e.1 += 1;
        if let Some(p) = h.percent {
            e.2 = Some(e.2.map_or(p, |q| q.min(p)));
        }
    }
    let parts: Vec<String> = counts
        .into_values()
        .map(|(state, n, percent)| match percent {
            Some(p) if n == 1 => format!("1 {state} {p}%"),
            Some(p) => format!("{n} {state} (slowest {p}%)"),
            None => format!("{n} {state}"),
        })
        .collect();
    parts.join(", ")
}

/// `parcel list`: a row per parcel and cluster that wants it or has it on a
/// host; parcels no cluster has get one row.
pub fn parcels_table(listing: &ParcelList) -> String {
    if listing.items.is_empty() {
        return "no parcels; upload one with `drover parcel upload FILE`\n".into();
    }
    let mut table =
        Table::new(&["PARCEL", "VERSION", "SOURCE", "SIZE", "CLUSTER", "TARGET", "HOSTS"]).align_right(&[3]);
    for p in &listing.items {
        let row = |cluster: &str, target: &str, hosts: String| {
            vec![
                p.name.clone(),
                p.version.clone(),
                source(&p.source),
                human_bytes(p.size),
                cluster.to_owned(),
                target.to_owned(),
                hosts,
            ]
        };
        let relevant: Vec<_> = p
            .clusters
            .iter()
            .filter(|c| c.target.is_some() || c.hosts.iter().any(|h| h.state != HostParcelState::Available))
            .collect();
        if relevant.is_empty() {
            table.push(row("-", "-", "-".into()));
        }
        for c in relevant {
            table.push(row(&c.cluster, c.target.map_or("-", |t| t.as_str()), host_summary(&c.hosts)));
        }
    }
    let mut out = table.render();
    let _ = writeln!(out, "{} parcels", listing.items.len());
    out
}

async fn hosts_add(ctx: &Context, args: &ClusterHostsAddArgs) -> anyhow::Result<String> {
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for h in &args.hosts {
        let found = resolve_host(&ctx.client, h).await?;
        names.push(format!("{} ({})", found.host.hostname, short_id(&found.host.id)));
        ids.push(found.host.id);
    }
    let body = AddHosts { host_ids: ids };
    let value = ctx.client.send_json(Method::POST, &["clusters", &args.cluster, "hosts"], Some(&body)).await?;
    if ctx.output == OutputFormat::Json {
        return pretty(&value);
    }
    let total = decode::<Items<String>>(value)?.items.len();
    Ok(format!("added {} to cluster {}; it has {total} hosts\n", names.join(", "), args.cluster))
}

async fn hosts_list(ctx: &Context, cluster: &str) -> anyhow::Result<String> {
    let value = ctx.client.get(&["clusters", cluster, "hosts"], NO_QUERY).await?;
    if ctx.output == OutputFormat::Json {
        return pretty(&value);
    }
    let members = decode::<Items<String>>(value)?.items;
    if members.is_empty() {
        return Ok(format!(
            "cluster {cluster} has no hosts; add some with `drover cluster hosts add {cluster} HOST...`\n"
        ));
    }
    let hosts = all_hosts(&ctx.client).await?;
    let mut table = Table::new(&["ID", "HOSTNAME", "STATUS"]);
    for id in &members {
        match hosts.iter().find(|(h, _)| &h.id == id) {
            Some((h, _)) => table.push(vec![short_id(&h.id), h.hostname.clone(), h.status.as_str().into()]),
            None => table.push(vec![short_id(id), "-".into(), "unknown".into()]),
        }
    }
    let mut out = table.render();
    let _ = writeln!(out, "{} hosts in cluster {cluster}", members.len());
    Ok(out)
}

async fn deactivate(ctx: &Context, args: &ParcelDeactivateArgs) -> anyhow::Result<String> {
    let body = NewParcelCommand::Deactivate { parcel: args.name.clone(), version: args.version.clone() };
    start_parcel_command(ctx, &args.cluster, &body, &args.wait).await
}

async fn start_parcel_command(
    ctx: &Context,
    cluster: &str,
    body: &NewParcelCommand,
    wait: &WaitArgs,
) -> anyhow::Result<String> {
    let started = ctx.client.send_json(Method::POST, &["clusters", cluster, "parcels", "commands"], Some(body)).await?;
    follow(ctx, started, wait).await
}

/// Remembers what was last printed of each step, to print only changes.
#[derive(Debug, Default)]
pub struct StepPrinter {
    seen: BTreeMap<u32, (StepState, String)>,
}

impl StepPrinter {
    /// Lines for the steps whose state or message changed since the last call,
    /// e.g. `[2/3] running  distribute redis 2 to web-1: downloading 45%`.
    pub fn changes(&mut self, cmd: &CommandView) -> Vec<String> {
        let total = cmd.steps.len();
        let mut lines = Vec::new();
        for s in &cmd.steps {
            let now = (s.state, s.message.clone());
            if s.state == StepState::Pending || self.seen.get(&s.seq) == Some(&now) {
                continue;
            }
            let mut line = format!("[{}/{total}] {:<9} {}", s.seq, s.state.as_str(), s.description);
            if !s.message.is_empty() {
                let _ = write!(line, ": {}", s.message);
            }
            lines.push(line);
            self.seen.insert(s.seq, now);
        }
        lines
    }
}

/// What a finished command means for the exit status: `Err` with the failing
/// step's message unless it succeeded.
pub fn outcome(cmd: &CommandView) -> anyhow::Result<()> {
    if cmd.state == CommandState::Succeeded {
        return Ok(());
    }
    let step = cmd
        .steps
        .iter()
        .find(|s| s.state == StepState::Failed)
        .or_else(|| cmd.steps.iter().find(|s| s.state == StepState::Aborted));
    match step {
        Some(s) => bail!(
            "{} command {} {}: step {} ({}) {}: {}",
            cmd.name,
            cmd.id,
            cmd.state.as_str(),
            s.seq,
            s.description,
            s.state.as_str(),
            if s.message.is_empty() { &cmd.message } else { &s.message }
        ),
        None => bail!("{} command {} {}: {}", cmd.name, cmd.id, cmd.state.as_str(), cmd.message),
    }
}

/// Follows a started command until it ends (unless `--no-wait`), printing
/// step progress on stderr.
pub async fn follow(ctx: &Context, started: Value, wait: &WaitArgs) -> anyhow::Result<String> {
    let mut cmd: CommandView = decode(started.clone())?;
    if wait.no_wait {
        return match ctx.output {
            OutputFormat::Json => pretty(&started),
            OutputFormat::Table => Ok(format!(
                "started {} command {} with {} steps; see GET /api/v1/commands/{}\n",
                cmd.name,
                cmd.id,
                cmd.steps.len(),
                cmd.id
            )),
        };
    }
    let t = Instant::now();
    eprintln!("{} command {} started with {} steps", cmd.name, cmd.id, cmd.steps.len());
    let mut printer = StepPrinter::default();
    let mut raw = started;
    loop {
        let mut err = std::io::stderr().lock();
        for line in printer.changes(&cmd) {
            let _ = writeln!(err, "{line}");
        }
        drop(err);
        if cmd.state != CommandState::Running {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        raw = ctx
            .client
            .get(&["commands", &cmd.id], NO_QUERY)
            .await
            .with_context(|| format!("follow command {}", cmd.id))?;
        cmd = decode(raw.clone())?;
    }
    outcome(&cmd)?;
    match ctx.output {
        OutputFormat::Json => pretty(&raw),
        OutputFormat::Table => Ok(format!(
            "{} command {} succeeded in {:.1}s: {}\n",
            cmd.name,
            cmd.id,
            t.elapsed().as_secs_f64(),
            cmd.message
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use drover_api::commands::StepView;

    fn step(seq: u32, state: &str, message: &str) -> StepView {
        StepView {
            seq,
            description: format!("distribute redis 2 to host-{seq}"),
            roles: vec![format!("host-{seq}")],
            state: StepState::parse(state),
            message: message.into(),
            started_at: None,
            finished_at: None,
        }
    }

    fn command(state: &str, steps: Vec<StepView>) -> CommandView {
        CommandView {
            id: "c1".into(),
            cluster: "prod".into(),
            service: String::new(),
            name: "parcel-distribute".into(),
            params: Value::Null,
            state: CommandState::parse(state),
            message: "m".into(),
            created_by: "admin".into(),
            created_at: "2026-03-01T12:00:00.000Z".into(),
            finished_at: None,
            steps,
        }
    }

    #[test]
    fn step_progress_prints_changes_only() {
        let mut p = StepPrinter::default();
        let c = command("running", vec![step(1, "running", "downloading 10%"), step(2, "pending", "")]);
        assert_eq!(p.changes(&c), ["[1/2] running   distribute redis 2 to host-1: downloading 10%"]);
        assert!(p.changes(&c).is_empty());
        let c = command("running", vec![step(1, "succeeded", "redis 2 distributed"), step(2, "running", "")]);
        assert_eq!(
            p.changes(&c),
            [
                "[1/2] succeeded distribute redis 2 to host-1: redis 2 distributed",
                "[2/2] running   distribute redis 2 to host-2"
            ]
        );
    }

    #[test]
    fn outcomes_name_the_failing_step() {
        assert!(outcome(&command("succeeded", vec![step(1, "succeeded", "")])).is_ok());
        let failed = command(
            "failed",
            vec![
                step(1, "succeeded", ""),
                step(2, "failed", "sha256 mismatch"),
                step(3, "aborted", "another host failed"),
            ],
        );
        assert_eq!(
            outcome(&failed).unwrap_err().to_string(),
            "parcel-distribute command c1 failed: step 2 (distribute redis 2 to host-2) failed: sha256 mismatch"
        );
        let aborted = command("aborted", vec![]);
        assert_eq!(outcome(&aborted).unwrap_err().to_string(), "parcel-distribute command c1 aborted: m");
    }

    #[test]
    fn host_summaries() {
        use HostParcelState::{Active, Available, Downloading, Failed};
        let h = |state: HostParcelState, percent: Option<u64>| HostParcel {
            host_id: "h".into(),
            state,
            percent,
            error: String::new(),
        };
        assert_eq!(host_summary(&[]), "no hosts");
        let hosts = [h(Failed, None), h(Active, None), h(Downloading, Some(60)), h(Active, None)];
        assert_eq!(host_summary(&hosts), "2 active, 1 downloading 60%, 1 failed");
        let hosts = [h(Downloading, Some(60)), h(Downloading, Some(45)), h(Available, None)];
        assert_eq!(host_summary(&hosts), "2 downloading (slowest 45%), 1 available");
    }

    #[test]
    fn progress_lines() {
        let mut p = Progress::new("redis-2-x.parcel", 100 << 20, false);
        assert_eq!(p.advance(5 << 20), None);
        let line = p.advance(5 << 20).unwrap();
        assert!(line.starts_with("uploading redis-2-x.parcel: 10.0 MiB of 100.0 MiB (10%), "), "{line}");
        assert_eq!(p.advance(1), None);
        assert!(p.advance(90 << 20).unwrap().contains("(100%)"));
        assert_eq!(p.finish(), None);
        let mut p = Progress::new("e.parcel", 0, false);
        assert!(p.advance(0).unwrap().contains("(100%)"), "an empty file is done at once");
    }

    #[test]
    fn file_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_file(&f).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
