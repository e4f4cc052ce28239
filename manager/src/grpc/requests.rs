//! The wire side of `agent_requests`: requests as `ManagerMessage`s on the
//! session, and the agent's `Reply` calls turned into `ReplyPart`s.

use drover_proto::v1::{self, manager_message, reply_chunk};
use tonic::{Status, Streaming};

use crate::agent_requests::{AgentRequest, AgentRequests, LogLine, LogStream, ReplyEnd, ReplyPart};

/// The agent capability for log and diagnostics requests.
pub const CAPABILITY_LOGS: &str = "logs.v1";

fn stream_to_proto(s: LogStream) -> v1::LogStream {
    match s {
        LogStream::Stdout => v1::LogStream::Stdout,
        LogStream::Stderr => v1::LogStream::Stderr,
        LogStream::File => v1::LogStream::File,
        LogStream::Agent => v1::LogStream::Agent,
    }
}

fn stream_from_proto(s: i32) -> LogStream {
    match v1::LogStream::try_from(s).unwrap_or(v1::LogStream::Unspecified) {
        v1::LogStream::Stderr => LogStream::Stderr,
        v1::LogStream::File => LogStream::File,
        v1::LogStream::Agent => LogStream::Agent,
        v1::LogStream::Stdout | v1::LogStream::Unspecified => LogStream::Stdout,
    }
}

/// The session message carrying `request`.
pub fn request_message(request_id: String, request: AgentRequest) -> manager_message::Kind {
    match request {
        AgentRequest::Logs(q) => manager_message::Kind::LogRequest(v1::LogRequest {
            request_id,
            role_ids: q.role_ids,
            agent_log: q.agent_log,
            streams: q.streams.into_iter().map(|s| stream_to_proto(s) as i32).collect(),
            since_unix_ms: q.since,
            until_unix_ms: q.until,
            pattern: q.pattern,
            min_level: q.min_level,
            tail: q.tail,
            limit: q.limit,
            follow: q.follow,
            timeout_ms: q.timeout_ms,
        }),
        AgentRequest::Diagnostics(q) => manager_message::Kind::DiagnosticsRequest(v1::DiagnosticsRequest {
            request_id,
            role_ids: q.role_ids,
            since_unix_ms: q.since,
            until_unix_ms: q.until,
            max_bytes: q.max_bytes,
            include: q.include,
            secrets: q.secrets,
            rules: q.rules.into_iter().map(|r| v1::RedactionRule { name: r.name, pattern: r.pattern }).collect(),
        }),
    }
}

fn part_from_proto(body: reply_chunk::Body) -> ReplyPart {
    match body {
        reply_chunk::Body::Lines(l) => ReplyPart::Lines(
            l.lines
                .into_iter()
                .map(|l| LogLine {
                    role_id: l.role_id,
                    file: l.file,
                    line_number: l.line_number,
                    time: l.time_unix_ms,
                    stream: stream_from_proto(l.stream),
                    level: l.level,
                    text: l.text,
                })
                .collect(),
        ),
        reply_chunk::Body::Archive(bytes) => ReplyPart::Archive(bytes),
        reply_chunk::Body::End(e) => ReplyPart::End(ReplyEnd {
            error: e.error,
            truncated: e.truncated,
            scanned_bytes: e.scanned_bytes,
            manifest_json: e.manifest_json,
        }),
    }
}

/// Forwards one `Reply` call of `host_id` to whoever waits for it. Ends with
/// `CANCELLED` when nobody waits any more (the agent stops), and sends an
/// `End` naming the reason when the agent's call ends without one.
pub async fn forward_reply(
    requests: &AgentRequests,
    host_id: &str,
    mut inbound: Streaming<v1::ReplyChunk>,
) -> Result<v1::ReplyAck, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("a reply needs at least one chunk naming its request"))?;
    if first.request_id.is_empty() {
        return Err(Status::invalid_argument("the first chunk of a reply must name its request"));
    }
    let tx = requests.reply_to(host_id, &first.request_id).map_err(|e| Status::not_found(e.to_string()))?;
    let gone = || Status::cancelled("nobody waits for this answer any more");
    let mut next = Some(first);
    loop {
        let chunk = match next.take() {
            Some(c) => c,
            None => match inbound.message().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    let end = ReplyEnd { error: "the agent ended its answer early".into(), ..Default::default() };
                    let _ = tx.send(ReplyPart::End(end)).await;
                    return Ok(v1::ReplyAck {});
                }
                Err(s) => {
                    let end = ReplyEnd {
                        error: format!("the agent's answer broke off: {}", s.message()),
                        ..Default::default()
                    };
                    let _ = tx.send(ReplyPart::End(end)).await;
                    return Err(s);
                }
            },
        };
        let Some(body) = chunk.body else { continue };
        let last = matches!(body, reply_chunk::Body::End(_));
        tokio::select! {
            sent = tx.send(part_from_proto(body)) => sent.map_err(|_| gone())?,
            _ = tx.closed() => return Err(gone()),
        }
        if last {
            return Ok(v1::ReplyAck {});
        }
    }
}
