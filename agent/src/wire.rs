//! The gRPC edge: converts the agent's domain types to and from the generated
//! `drover.agent.v1` types. Only `enroll`, `session` (which also fetches
//! parcel files for the parcel driver) and `supervisor` (which persists the
//! desired roles in their wire encoding) call it, and nothing generated leaves
//! those modules.

use std::sync::Arc;

use drover_proto::v1;
use drover_proto::v1::{agent_message, manager_message};
use prost::Message;
use tokio_stream::StreamExt;

use crate::collect::{MetricsHub, ProcessMetrics, RoleMetrics, Sample};
use crate::diagnostics::{DiagnosticsRequest, RedactionRule};
use crate::facts::{HostFacts, HostKind};
use crate::logs::{LogLine, LogRequest, ReplyPart, Stream};
use crate::metrics::Metrics;
use crate::parcels::{ParcelChunk, ParcelChunks, ParcelSpec, ParcelState, ParcelStatus, ParcelTarget};
use crate::protocol::{Inbound, Outbound, WelcomeInfo};
use crate::requests::Request;
use crate::roles::{
    ConfigFile, HealthCheck, LogFormat, LogSpec, MetricSource, ProcessSpec, RoleHealth, RoleSpec, RoleState,
    RoleStatus, RunState,
};

pub(crate) fn facts(f: &HostFacts) -> v1::HostFacts {
    v1::HostFacts {
        hostname: f.hostname.clone(),
        addresses: f.addresses.iter().map(ToString::to_string).collect(),
        kind: host_kind(f.kind) as i32,
        os: f.os.clone(),
        kernel: f.kernel.clone(),
        arch: f.arch.clone(),
        cpu_cores: f.cpu_cores,
        memory_bytes: f.memory_bytes,
        disks: f
            .disks
            .iter()
            .map(|d| v1::Disk {
                mount_point: d.mount_point.clone(),
                device: d.device.clone(),
                fs_type: d.fs_type.clone(),
                total_bytes: d.total_bytes,
            })
            .collect(),
        kind_evidence: f.kind_evidence.clone(),
        fqdn: f.fqdn.clone(),
        container_id: f.container_id.clone(),
        machine_cpu_cores: f.machine_cpu_cores,
        machine_memory_bytes: f.machine_memory_bytes,
        capacity_evidence: f.capacity_evidence.clone(),
    }
}

fn host_kind(k: HostKind) -> v1::HostKind {
    match k {
        HostKind::Container => v1::HostKind::Container,
        HostKind::Vm => v1::HostKind::Vm,
        HostKind::Physical => v1::HostKind::Physical,
    }
}

pub(crate) fn metrics(m: Metrics) -> v1::Metrics {
    v1::Metrics {
        cpu_percent: m.cpu_percent,
        memory_used_bytes: m.memory_used_bytes,
        memory_total_bytes: m.memory_total_bytes,
        load1: m.load1,
        load5: m.load5,
        load15: m.load15,
        disks: m
            .disks
            .into_iter()
            .map(|d| v1::DiskUsage { mount_point: d.mount_point, used_bytes: d.used_bytes, total_bytes: d.total_bytes })
            .collect(),
        network_rx_bytes: m.network_rx_bytes,
        network_tx_bytes: m.network_tx_bytes,
        uptime_seconds: m.uptime_seconds,
    }
}

/// What the session needs to fill in outbound messages the protocol asks for.
pub(crate) struct OutboundContext<'a, M> {
    pub facts: &'a v1::HostFacts,
    pub agent_version: &'a str,
    pub metrics: &'a mut M,
    /// Announced in `Hello`.
    pub capabilities: &'a [&'a str],
    /// Role statuses to send with every `StatusReport` (agents with roles).
    pub roles: Option<Arc<Vec<RoleStatus>>>,
    /// Parcel statuses to send with every `StatusReport` (agents with parcels).
    pub parcels: Option<Arc<Vec<ParcelStatus>>>,
    /// Role metrics drained into every `Heartbeat` (agents with roles).
    pub role_metrics: Option<Arc<MetricsHub>>,
}

pub(crate) fn outbound<M: FnMut() -> Metrics>(msg: Outbound, ctx: &mut OutboundContext<'_, M>) -> v1::AgentMessage {
    let kind = match msg {
        Outbound::Hello { applied_generation } => agent_message::Kind::Hello(v1::Hello {
            facts: Some(ctx.facts.clone()),
            agent_version: ctx.agent_version.to_owned(),
            applied_generation,
            capabilities: ctx.capabilities.iter().map(|c| (*c).to_owned()).collect(),
        }),
        Outbound::Heartbeat { seq } => agent_message::Kind::Heartbeat(v1::Heartbeat {
            seq,
            metrics: Some(metrics((ctx.metrics)())),
            roles: ctx
                .role_metrics
                .as_ref()
                .map(|h| h.take().into_iter().map(role_metrics).collect())
                .unwrap_or_default(),
        }),
        Outbound::Pong { nonce } => agent_message::Kind::Pong(v1::Pong { nonce }),
        Outbound::Status { applied_generation } => agent_message::Kind::Status(v1::StatusReport {
            applied_generation,
            error: String::new(),
            roles: ctx.roles.as_ref().map(|r| r.iter().map(role_status).collect()).unwrap_or_default(),
            parcels: ctx.parcels.as_ref().map(|p| p.iter().map(parcel_status).collect()).unwrap_or_default(),
        }),
    };
    v1::AgentMessage { kind: Some(kind) }
}

/// A manager message as the protocol sees it. Variants this agent does not know
/// arrive as an empty oneof and become [`Inbound::Unknown`].
pub(crate) fn inbound(msg: v1::ManagerMessage) -> Inbound {
    match msg.kind {
        Some(manager_message::Kind::Welcome(w)) => Inbound::Welcome(WelcomeInfo {
            host_id: w.host_id,
            heartbeat_interval_ms: w.heartbeat_interval_ms,
            server_time_unix_ms: w.server_time_unix_ms,
            manager_version: w.manager_version,
        }),
        Some(manager_message::Kind::DesiredState(d)) => Inbound::DesiredState {
            generation: d.generation,
            roles: d.roles.into_iter().map(role_spec).collect(),
            parcels: d.parcels.into_iter().map(parcel_spec).collect(),
        },
        Some(manager_message::Kind::Ping(p)) => Inbound::Ping { nonce: p.nonce },
        Some(manager_message::Kind::HeartbeatAck(a)) => Inbound::HeartbeatAck { seq: a.seq },
        // The session answers these itself (`request`) before the protocol.
        Some(manager_message::Kind::LogRequest(_) | manager_message::Kind::DiagnosticsRequest(_)) | None => {
            Inbound::Unknown
        }
    }
}

/// A log or diagnostics request, which the session answers itself; any other
/// message is given back for the protocol.
pub(crate) fn request(msg: v1::ManagerMessage) -> Result<Request, Box<v1::ManagerMessage>> {
    match msg.kind {
        Some(manager_message::Kind::LogRequest(r)) => Ok(Request::Logs(LogRequest {
            request_id: r.request_id,
            role_ids: r.role_ids,
            agent_log: r.agent_log,
            streams: r
                .streams
                .into_iter()
                .filter_map(|s| match v1::LogStream::try_from(s) {
                    Ok(v1::LogStream::Stdout) => Some(Stream::Stdout),
                    Ok(v1::LogStream::Stderr) => Some(Stream::Stderr),
                    Ok(v1::LogStream::File) => Some(Stream::File),
                    Ok(v1::LogStream::Agent) => Some(Stream::Agent),
                    _ => None,
                })
                .collect(),
            since_unix_ms: r.since_unix_ms,
            until_unix_ms: r.until_unix_ms,
            pattern: r.pattern,
            min_level: r.min_level,
            tail: r.tail,
            limit: r.limit,
            follow: r.follow,
            timeout_ms: r.timeout_ms,
        })),
        Some(manager_message::Kind::DiagnosticsRequest(r)) => Ok(Request::Diagnostics(DiagnosticsRequest {
            request_id: r.request_id,
            role_ids: r.role_ids,
            since_unix_ms: r.since_unix_ms,
            until_unix_ms: r.until_unix_ms,
            max_bytes: r.max_bytes,
            include: r.include,
            secrets: r.secrets,
            rules: r.rules.into_iter().map(|r| RedactionRule { name: r.name, pattern: r.pattern }).collect(),
        })),
        kind => Err(Box::new(v1::ManagerMessage { kind })),
    }
}

fn log_line(l: LogLine) -> v1::LogLine {
    v1::LogLine {
        role_id: l.role_id,
        file: l.file,
        line_number: l.line_number,
        time_unix_ms: l.time_unix_ms,
        stream: match l.stream {
            Stream::Stdout => v1::LogStream::Stdout,
            Stream::Stderr => v1::LogStream::Stderr,
            Stream::File => v1::LogStream::File,
            Stream::Agent => v1::LogStream::Agent,
        } as i32,
        level: l.level.map(|l| l.as_str().to_owned()).unwrap_or_default(),
        text: l.text,
    }
}

fn reply_chunk(request_id: String, part: ReplyPart) -> v1::ReplyChunk {
    use v1::reply_chunk::Body;
    let body = match part {
        ReplyPart::Lines(lines) => Body::Lines(v1::LogLines { lines: lines.into_iter().map(log_line).collect() }),
        ReplyPart::Archive(bytes) => Body::Archive(bytes),
        ReplyPart::End(e) => Body::End(v1::ReplyEnd {
            error: e.error,
            truncated: e.truncated,
            scanned_bytes: e.scanned_bytes,
            manifest_json: e.manifest_json,
        }),
    };
    v1::ReplyChunk { request_id, body: Some(body) }
}

/// Streams `parts` on a `Reply` call until they end (after
/// [`ReplyPart::End`]) or the manager ends the call; then `parts` is dropped,
/// which tells the reader to stop.
pub(crate) async fn reply(
    channel: tonic::transport::Channel,
    request_id: &str,
    mut parts: tokio::sync::mpsc::Receiver<ReplyPart>,
) -> Result<(), String> {
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::ReplyChunk>(2);
    let call = client.reply(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::pin!(call);
    let mut tx = Some(tx);
    let mut pending: Option<v1::ReplyChunk> = None;
    let mut first = true;
    loop {
        tokio::select! {
            result = &mut call => return result.map(|_| ()).map_err(|s| status_message(&s)),
            permit = reserve(tx.clone()), if pending.is_some() => {
                // No permit: the call ended; its result comes next.
                if let (Some(permit), Some(chunk)) = (permit, pending.take()) {
                    permit.send(chunk);
                }
            }
            part = parts.recv(), if pending.is_none() && tx.is_some() => match part {
                Some(part) => {
                    let id = if first { request_id.to_owned() } else { String::new() };
                    first = false;
                    pending = Some(reply_chunk(id, part));
                }
                // Everything sent: ending the stream completes the call.
                None => tx = None,
            },
        }
    }
}

async fn reserve<T>(tx: Option<tokio::sync::mpsc::Sender<T>>) -> Option<tokio::sync::mpsc::OwnedPermit<T>> {
    tx?.reserve_owned().await.ok()
}

pub(crate) fn role_spec(r: v1::RoleSpec) -> RoleSpec {
    RoleSpec {
        role_id: r.role_id,
        service: r.service,
        role_type: r.role_type,
        name: r.name,
        config_revision: r.config_revision,
        files: r.files.into_iter().map(ConfigFile::from).collect(),
        process: ProcessSpec::from(r.process.unwrap_or_default()),
        run_state: match v1::RunState::try_from(r.run_state) {
            Ok(v1::RunState::Running) => RunState::Running,
            _ => RunState::Stopped,
        },
        restart_nonce: r.restart_nonce,
        health_checks: r.health_checks.into_iter().map(HealthCheck::from).collect(),
        log_files: r.log_files,
        parcels: r.parcels,
        restart_digest: r.restart_digest,
        metric_sources: r.metric_sources.into_iter().map(MetricSource::from).collect(),
        log: r.log.map(log_spec).unwrap_or_default(),
    }
}

fn log_spec(l: v1::LogSpec) -> LogSpec {
    LogSpec {
        max_bytes: l.max_bytes,
        max_files: l.max_files,
        format: l.format.map(|f| LogFormat {
            name: f.name,
            pattern: f.pattern,
            time_format: f.time_format,
            levels: f.levels.into_iter().collect(),
        }),
    }
}

fn log_spec_to_wire(l: &LogSpec) -> Option<v1::LogSpec> {
    if *l == LogSpec::default() {
        return None;
    }
    Some(v1::LogSpec {
        max_bytes: l.max_bytes,
        max_files: l.max_files,
        format: l.format.as_ref().map(|f| v1::LogFormat {
            name: f.name.clone(),
            pattern: f.pattern.clone(),
            time_format: f.time_format.clone(),
            levels: f.levels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }),
    })
}

pub(crate) fn parcel_spec(p: v1::ParcelSpec) -> ParcelSpec {
    ParcelSpec {
        name: p.name,
        version: p.version,
        file_name: p.file_name,
        sha256: p.sha256,
        size: p.size,
        // Unspecified or unknown targets never activate anything.
        target: match v1::ParcelTarget::try_from(p.target) {
            Ok(v1::ParcelTarget::Active) => ParcelTarget::Active,
            _ => ParcelTarget::Distributed,
        },
    }
}

pub(crate) fn parcel_status(s: &ParcelStatus) -> v1::ParcelStatus {
    v1::ParcelStatus {
        name: s.name.clone(),
        version: s.version.clone(),
        state: match s.state {
            ParcelState::Downloading => v1::ParcelState::Downloading,
            ParcelState::Distributed => v1::ParcelState::Distributed,
            ParcelState::Active => v1::ParcelState::Active,
            ParcelState::Failed => v1::ParcelState::Failed,
        } as i32,
        downloaded_bytes: s.downloaded_bytes,
        total_bytes: s.total_bytes,
        error: s.error.clone(),
    }
}

/// Opens `FetchParcel` for `file_name` from `offset` on: the file as it
/// arrives from the manager, chunk by chunk.
pub(crate) async fn fetch_parcel(
    channel: tonic::transport::Channel,
    file_name: &str,
    offset: u64,
) -> Result<ParcelChunks, String> {
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
    let request = v1::FetchParcelRequest { file_name: file_name.to_owned(), offset };
    match client.fetch_parcel(request).await {
        Ok(response) => Ok(Box::pin(response.into_inner().map(|chunk| match chunk {
            Ok(c) => Ok(ParcelChunk { data: c.data, total_size: c.total_size }),
            Err(status) => Err(status_message(&status)),
        }))),
        Err(status) => Err(status_message(&status)),
    }
}

fn status_message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{} ({:?})", status.message(), status.code())
    }
}

fn role_spec_to_wire(r: &RoleSpec) -> v1::RoleSpec {
    v1::RoleSpec {
        role_id: r.role_id.clone(),
        service: r.service.clone(),
        role_type: r.role_type.clone(),
        name: r.name.clone(),
        config_revision: r.config_revision,
        files: r.files.iter().map(v1::ConfigFile::from).collect(),
        process: Some(v1::ProcessSpec::from(&r.process)),
        run_state: match r.run_state {
            RunState::Running => v1::RunState::Running,
            RunState::Stopped => v1::RunState::Stopped,
        } as i32,
        restart_nonce: r.restart_nonce,
        health_checks: r.health_checks.iter().map(v1::HealthCheck::from).collect(),
        log_files: r.log_files.clone(),
        parcels: r.parcels.clone(),
        restart_digest: r.restart_digest.clone(),
        metric_sources: r.metric_sources.iter().map(v1::MetricSource::from).collect(),
        log: log_spec_to_wire(&r.log),
    }
}

pub(crate) fn role_metrics(m: RoleMetrics) -> v1::RoleMetrics {
    v1::RoleMetrics {
        role_id: m.role_id,
        process: m.process.map(|p: ProcessMetrics| v1::ProcessMetrics {
            cpu_percent: p.cpu_percent,
            rss_bytes: p.rss_bytes,
            threads: p.threads,
            open_fds: p.open_fds,
            uptime_seconds: p.uptime_seconds,
            restarts: p.restarts,
            last_exit_status: p.last_exit_status,
        }),
        samples: m
            .samples
            .into_iter()
            .map(|s: Sample| v1::MetricSample {
                name: s.name,
                value: s.value,
                labels: s.labels.into_iter().collect(),
                at_unix_ms: s.at_unix_ms,
            })
            .collect(),
        collect_error: m.collect_error,
    }
}

pub(crate) fn role_status(s: &RoleStatus) -> v1::RoleStatus {
    v1::RoleStatus {
        role_id: s.role_id.clone(),
        state: match s.state {
            RoleState::Stopped => v1::RoleState::Stopped,
            RoleState::Starting => v1::RoleState::Starting,
            RoleState::Running => v1::RoleState::Running,
            RoleState::Stopping => v1::RoleState::Stopping,
            RoleState::Failed => v1::RoleState::Failed,
        } as i32,
        pid: s.pid,
        last_exit_status: s.last_exit_status,
        restart_count: s.restart_count,
        applied_revision: s.applied_revision,
        running_revision: s.running_revision,
        file_hashes: s.file_hashes.clone().into_iter().collect(),
        last_error: s.last_error.clone(),
        health: match s.health {
            RoleHealth::Unknown => v1::RoleHealth::Unknown,
            RoleHealth::Good => v1::RoleHealth::Good,
            RoleHealth::Bad => v1::RoleHealth::Bad,
        } as i32,
        last_log_lines: s.last_log_lines.clone(),
        restart_nonce: s.restart_nonce,
        started_at_unix_ms: s.started_at_unix_ms,
        reload_count: s.reload_count,
        reloaded_at_unix_ms: s.reloaded_at_unix_ms,
    }
}

/// The desired roles as persisted by the supervisor: a `DesiredState` message.
pub(crate) fn encode_desired_roles(generation: u64, roles: &[RoleSpec]) -> Vec<u8> {
    v1::DesiredState { generation, roles: roles.iter().map(role_spec_to_wire).collect(), parcels: Vec::new() }
        .encode_to_vec()
}

pub(crate) fn decode_desired_roles(bytes: &[u8]) -> Result<(u64, Vec<RoleSpec>), prost::DecodeError> {
    let d = v1::DesiredState::decode(bytes)?;
    Ok((d.generation, d.roles.into_iter().map(role_spec).collect()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::facts::Disk;
    use crate::roles::{self, Probe};

    #[test]
    fn facts_convert_field_by_field() {
        let f = HostFacts {
            hostname: "h1".into(),
            fqdn: "h1.example.com".into(),
            addresses: vec!["192.0.2.1".parse().expect("ip"), "2001:db8::1".parse().expect("ip")],
            kind: HostKind::Vm,
            kind_evidence: "DMI names QEMU".into(),
            os: "Debian".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            cpu_cores: 4,
            memory_bytes: 8,
            machine_cpu_cores: 16,
            machine_memory_bytes: 64,
            capacity_evidence: "CPU quota 4 CPUs".into(),
            container_id: "c".repeat(64),
            disks: vec![Disk {
                mount_point: "/".into(),
                device: "/dev/vda".into(),
                fs_type: "ext4".into(),
                total_bytes: 100,
            }],
        };
        let p = facts(&f);
        assert_eq!(p.addresses, ["192.0.2.1", "2001:db8::1"]);
        assert_eq!(p.kind, v1::HostKind::Vm as i32);
        assert_eq!(p.kind_evidence, "DMI names QEMU");
        assert_eq!((p.cpu_cores, p.memory_bytes), (4, 8));
        assert_eq!((p.machine_cpu_cores, p.machine_memory_bytes), (16, 64));
        assert_eq!((p.fqdn.as_str(), p.capacity_evidence.as_str()), ("h1.example.com", "CPU quota 4 CPUs"));
        assert_eq!(p.container_id, "c".repeat(64));
        assert_eq!(p.disks[0].device, "/dev/vda");
    }

    fn full_spec() -> RoleSpec {
        RoleSpec {
            role_id: "r-1".into(),
            service: "c/redis".into(),
            role_type: "primary".into(),
            name: "redis-primary-1".into(),
            config_revision: 4,
            files: vec![ConfigFile {
                path: "redis.conf".into(),
                content: b"port 1".to_vec(),
                sha256: "ab".into(),
                mode: 0o640,
            }],
            process: ProcessSpec {
                program: "redis-server".into(),
                args: vec!["${ROLE_DIR}/redis.conf".into()],
                env: [("A".to_owned(), "b".to_owned())].into(),
                working_dir: "data".into(),
                stop_signal: "SIGINT".into(),
                stop_grace: Duration::from_millis(1500),
                reload_signal: "SIGHUP".into(),
                config_check: Some(roles::ConfigCheck {
                    program: "redis-server".into(),
                    args: vec!["--test-memory".into(), "${CHECK_DIR}/redis.conf".into()],
                    timeout: Duration::from_secs(7),
                }),
            },
            run_state: RunState::Running,
            restart_nonce: 9,
            health_checks: vec![
                HealthCheck {
                    probe: Probe::Tcp { host: "h".into(), port: 6379 },
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    failure_threshold: 4,
                },
                HealthCheck {
                    probe: Probe::Http { url: "http://x/".into(), expect_status: 204 },
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    failure_threshold: 1,
                },
                HealthCheck {
                    probe: Probe::Command { program: "true".into(), args: vec!["x".into()] },
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    failure_threshold: 1,
                },
            ],
            log_files: vec!["logs/redis.log".into()],
            parcels: vec!["redis".into()],
            restart_digest: "d1".into(),
            metric_sources: vec![crate::roles::MetricSource {
                kind: crate::roles::MetricSourceKind::Redis { host: "h".into(), port: 6379, password: "pw".into() },
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
            }],
            log: crate::roles::LogSpec {
                max_bytes: 1 << 20,
                max_files: 3,
                format: Some(crate::roles::LogFormat {
                    name: "redis".into(),
                    pattern: r"^\d+:\w (?P<time>\S+ \S+ \S+ \S+) (?P<level>.)".into(),
                    time_format: "%d %b %Y %H:%M:%S%.3f".into(),
                    levels: [("#".to_owned(), "warn".to_owned())].into(),
                }),
            },
        }
    }

    #[test]
    fn role_specs_round_trip_through_the_persisted_encoding() {
        let spec = full_spec();
        let bytes = encode_desired_roles(7, std::slice::from_ref(&spec));
        let (generation, roles) = decode_desired_roles(&bytes).expect("decode");
        assert_eq!((generation, roles), (7, vec![spec]));
        assert!(decode_desired_roles(b"\xff\xff").is_err());
    }

    #[test]
    fn zero_and_unknown_wire_values_get_safe_defaults() {
        let spec = role_spec(v1::RoleSpec {
            role_id: "r".into(),
            run_state: 0,
            health_checks: vec![v1::HealthCheck { probe: None, interval_ms: 0, timeout_ms: 0, failure_threshold: 0 }],
            process: Some(v1::ProcessSpec {
                config_check: Some(v1::ConfigCheck { program: "p".into(), args: vec![], timeout_ms: 0 }),
                ..v1::ProcessSpec::default()
            }),
            ..v1::RoleSpec::default()
        });
        assert_eq!(spec.run_state, RunState::Stopped, "unspecified never starts anything");
        assert_eq!(spec.process.stop_grace, roles::DEFAULT_STOP_GRACE);
        assert_eq!(spec.process.config_check.map(|c| c.timeout), Some(roles::DEFAULT_CHECK_TIMEOUT));
        let hc = &spec.health_checks[0];
        assert_eq!(hc.probe, Probe::Unknown);
        assert_eq!(
            (hc.interval, hc.timeout, hc.failure_threshold),
            (roles::DEFAULT_PROBE_INTERVAL, roles::DEFAULT_PROBE_TIMEOUT, roles::DEFAULT_FAILURE_THRESHOLD)
        );
    }

    #[test]
    fn role_statuses_convert() {
        let s = RoleStatus {
            role_id: "r".into(),
            state: RoleState::Failed,
            pid: 0,
            last_exit_status: -9,
            restart_count: 3,
            applied_revision: 2,
            running_revision: 1,
            file_hashes: [("a".to_owned(), "h".to_owned())].into(),
            last_error: "crash loop".into(),
            health: RoleHealth::Bad,
            last_log_lines: vec!["x".into()],
            restart_nonce: 5,
            started_at_unix_ms: 6,
            reload_count: 2,
            reloaded_at_unix_ms: 7,
        };
        let p = role_status(&s);
        assert_eq!((p.reload_count, p.reloaded_at_unix_ms), (2, 7));
        assert_eq!(p.state, v1::RoleState::Failed as i32);
        assert_eq!(p.health, v1::RoleHealth::Bad as i32);
        assert_eq!((p.last_exit_status, p.restart_count, p.applied_revision, p.running_revision), (-9, 3, 2, 1));
        assert_eq!(p.file_hashes.get("a").map(String::as_str), Some("h"));
    }

    #[test]
    fn hello_announces_capabilities_and_status_carries_roles() {
        let facts = v1::HostFacts::default();
        let mut metrics = Metrics::default;
        let status = RoleStatus { role_id: "r".into(), ..RoleStatus::default() };
        let mut ctx = OutboundContext {
            facts: &facts,
            agent_version: "1",
            metrics: &mut metrics,
            capabilities: &[roles::CAPABILITY, crate::parcels::CAPABILITY],
            roles: Some(Arc::new(vec![status])),
            parcels: Some(Arc::new(vec![ParcelStatus {
                name: "redis".into(),
                version: "7.0.15".into(),
                state: ParcelState::Downloading,
                downloaded_bytes: 5,
                total_bytes: 10,
                error: String::new(),
            }])),
            role_metrics: None,
        };
        match outbound(Outbound::Hello { applied_generation: 1 }, &mut ctx).kind {
            Some(agent_message::Kind::Hello(h)) => assert_eq!(h.capabilities, ["roles.v1", "parcels.v1"]),
            other => panic!("{other:?}"),
        }
        match outbound(Outbound::Status { applied_generation: 1 }, &mut ctx).kind {
            Some(agent_message::Kind::Status(s)) => {
                assert_eq!(s.roles.len(), 1);
                let p = &s.parcels[0];
                assert_eq!((p.name.as_str(), p.state, p.downloaded_bytes, p.total_bytes), ("redis", 1, 5, 10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn role_metrics_convert_field_by_field() {
        let m = RoleMetrics {
            role_id: "r".into(),
            process: Some(ProcessMetrics {
                cpu_percent: 150.5,
                rss_bytes: 2,
                threads: 3,
                open_fds: 4,
                uptime_seconds: 5,
                restarts: 6,
                last_exit_status: -9,
            }),
            samples: vec![Sample {
                name: "redis_keys".into(),
                value: f64::INFINITY,
                labels: [("db".to_owned(), "db0".to_owned())].into(),
                at_unix_ms: 7,
            }],
            collect_error: "redis 127.0.0.1:6379: connect: refused".into(),
        };
        let p = role_metrics(m);
        let process = p.process.expect("process");
        assert_eq!(process.cpu_percent, 150.5);
        assert_eq!(
            (process.rss_bytes, process.threads, process.open_fds, process.uptime_seconds, process.restarts),
            (2, 3, 4, 5, 6)
        );
        assert_eq!(process.last_exit_status, -9);
        let s = &p.samples[0];
        assert_eq!((s.name.as_str(), s.value, s.at_unix_ms), ("redis_keys", f64::INFINITY, 7));
        assert_eq!(s.labels.get("db").map(String::as_str), Some("db0"));
        assert_eq!(p.collect_error, "redis 127.0.0.1:6379: connect: refused");
        assert_eq!(role_metrics(RoleMetrics::default()).process, None, "no process, no figures");
    }

    #[test]
    fn parcel_specs_convert_and_unknown_targets_never_activate() {
        let wire = |target: i32| v1::ParcelSpec {
            name: "redis".into(),
            version: "7.0.15".into(),
            file_name: "redis-7.0.15-bookworm.parcel".into(),
            sha256: "ab".into(),
            size: 3,
            target,
        };
        let p = parcel_spec(wire(v1::ParcelTarget::Active as i32));
        assert_eq!((p.name.as_str(), p.file_name.as_str(), p.size), ("redis", "redis-7.0.15-bookworm.parcel", 3));
        assert_eq!(p.target, ParcelTarget::Active);
        for other in [0, v1::ParcelTarget::Distributed as i32, 99] {
            assert_eq!(parcel_spec(wire(other)).target, ParcelTarget::Distributed, "{other}");
        }
        match inbound(v1::ManagerMessage {
            kind: Some(manager_message::Kind::DesiredState(v1::DesiredState {
                generation: 2,
                roles: Vec::new(),
                parcels: vec![wire(2)],
            })),
        }) {
            Inbound::DesiredState { parcels, .. } => assert_eq!(parcels, vec![p]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_oneofs_are_ignored() {
        assert!(matches!(inbound(v1::ManagerMessage { kind: None }), Inbound::Unknown));
    }
}
