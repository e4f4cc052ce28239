//! Answers the manager's log and diagnostics requests (capability
//! `logs.v1`): each in its own task, its file reading on the blocking pool,
//! its answer streamed on a `Reply` call of its own over the session's
//! channel, so the session loop never waits for one. At most
//! [`MAX_CONCURRENT`] run at once; beyond that a request is answered at once
//! with "busy". A reply the manager ends (nobody waits any more) stops its
//! reader at the next batch.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::collect::MetricsHub;
use crate::diagnostics::{self, DiagnosticsRequest, HostState};
use crate::facts::HostFacts;
use crate::journal::Journal;
use crate::logs::{self, LogRequest, ReplyEnd, ReplyPart};
use crate::metrics::MetricsCollector;
use crate::roles::{RoleSpec, RoleStatus};
use crate::wire;

/// The capability announced in `Hello` by agents that answer these requests.
pub const CAPABILITY: &str = "logs.v1";
/// Requests answered at the same time at most.
pub const MAX_CONCURRENT: usize = 8;
/// Reply parts queued between the reader and the call.
const QUEUED_PARTS: usize = 4;

/// A request from the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Logs(LogRequest),
    Diagnostics(DiagnosticsRequest),
}

impl Request {
    pub fn id(&self) -> &str {
        match self {
            Request::Logs(r) => &r.request_id,
            Request::Diagnostics(r) => &r.request_id,
        }
    }
}

/// What the agent holds when a request arrives.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub data_dir: Option<PathBuf>,
    pub roles: Arc<Vec<RoleSpec>>,
    pub statuses: Arc<Vec<RoleStatus>>,
    pub facts: Option<HostFacts>,
    pub hub: Option<Arc<MetricsHub>>,
    pub journal: Option<Arc<Journal>>,
}

/// The requests running for one session attempt; dropping it abandons them
/// (their calls end, their readers stop).
pub struct Requests {
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    channel: tonic::transport::Channel,
}

impl Requests {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Requests { slots: Arc::new(Semaphore::new(MAX_CONCURRENT)), tasks: JoinSet::new(), channel }
    }

    /// Starts answering `request` in a task of its own.
    pub fn start(&mut self, request: Request, ctx: Context) {
        while self.tasks.try_join_next().is_some() {}
        let channel = self.channel.clone();
        let id = request.id().to_owned();
        let (tx, rx) = mpsc::channel(QUEUED_PARTS);
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                debug!(request = %id, "answering a request");
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    answer(request, ctx, tx)
                });
            }
            Err(_) => {
                let end = ReplyEnd {
                    error: format!("busy: this agent is answering {MAX_CONCURRENT} requests already"),
                    ..ReplyEnd::default()
                };
                let _ = tx.try_send(ReplyPart::End(end));
            }
        }
        self.tasks.spawn(async move {
            if let Err(e) = wire::reply(channel, &id, rx).await {
                warn!(request = %id, error = %e, "could not send the answer to a request");
            }
        });
    }
}

/// Runs on the blocking pool: reads, sends the parts, ends with [`ReplyEnd`].
fn answer(request: Request, ctx: Context, tx: mpsc::Sender<ReplyPart>) {
    let end = match request {
        Request::Logs(r) => {
            let mut sink = tx.clone();
            let closed = tx.clone();
            logs::answer(&r, ctx.data_dir.as_deref(), &ctx.roles, &mut sink, move || closed.is_closed())
        }
        Request::Diagnostics(r) => {
            let host = HostState {
                data_dir: ctx.data_dir.clone(),
                roles: ctx.roles.to_vec(),
                statuses: ctx.statuses.to_vec(),
                facts: ctx.facts.as_ref().map(facts_json).unwrap_or(Value::Null),
                metrics: metrics_json(&ctx),
                journal: ctx.journal.as_ref().map(|j| j.snapshot()).unwrap_or_default(),
            };
            let sender = tx.clone();
            diagnostics::build(&r, &host, move |chunk| sender.blocking_send(ReplyPart::Archive(chunk)).is_ok())
        }
    };
    let _ = tx.blocking_send(ReplyPart::End(end));
}

fn facts_json(f: &HostFacts) -> Value {
    json!({
        "hostname": f.hostname, "fqdn": f.fqdn,
        "addresses": f.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "kind": f.kind.to_string(), "kind_evidence": f.kind_evidence,
        "os": f.os, "kernel": f.kernel, "arch": f.arch,
        "cpu_cores": f.cpu_cores, "memory_bytes": f.memory_bytes,
        "machine_cpu_cores": f.machine_cpu_cores, "machine_memory_bytes": f.machine_memory_bytes,
        "capacity_evidence": f.capacity_evidence, "container_id": f.container_id,
        "disks": f.disks.iter().map(|d| json!({
            "mount_point": d.mount_point, "device": d.device, "fs_type": d.fs_type, "total_bytes": d.total_bytes,
        })).collect::<Vec<_>>(),
        "agent_version": crate::VERSION,
    })
}

/// The host's figures now and the samples the roles' collectors hold.
fn metrics_json(ctx: &Context) -> Value {
    let m = MetricsCollector::new().sample();
    let host = json!({
        "memory_used_bytes": m.memory_used_bytes, "memory_total_bytes": m.memory_total_bytes,
        "load1": m.load1, "load5": m.load5, "load15": m.load15,
        "disks": m.disks.iter().map(|d| json!({
            "mount_point": d.mount_point, "used_bytes": d.used_bytes, "total_bytes": d.total_bytes,
        })).collect::<Vec<_>>(),
        "network_rx_bytes": m.network_rx_bytes, "network_tx_bytes": m.network_tx_bytes,
        "uptime_seconds": m.uptime_seconds,
    });
    let roles: serde_json::Map<String, Value> = ctx
        .hub
        .as_ref()
        .map(|h| h.peek())
        .unwrap_or_default()
        .into_iter()
        .map(|(role, (samples, errors))| {
            let samples: Vec<Value> = samples
                .iter()
                .map(|s| json!({"name": s.name, "value": s.value, "labels": s.labels, "at_unix_ms": s.at_unix_ms}))
                .collect();
            (role, json!({"samples": samples, "collect_errors": errors}))
        })
        .collect();
    json!({"host": host, "roles": roles})
}
