//! Requests the manager sends to one agent over its session and whose answer
//! comes back on a separate `Reply` call: log tails, follows and searches, and
//! a host's part of a diagnostic bundle.
//!
//! Invariant: a request is answered only by the host it was sent to, once. A
//! [`Replies`] stream is the only owner of a pending request; dropping it
//! forgets the request, so the agent's `Reply` call is ended and the agent
//! stops (a closed browser tab ends a follow on the host).
//!
//! Plain types here; `grpc` converts them to and from the wire.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Mutex;
use tokio::sync::mpsc;

/// Requests queued per session before `send` reports the agent as busy.
const REQUEST_BUFFER: usize = 64;
/// Reply parts buffered per request: a slow reader slows the agent down
/// (gRPC flow control) rather than growing the manager's memory.
const REPLY_BUFFER: usize = 16;

/// Which of a role's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// A file the role writes itself (the service type's `log_files`).
    File,
    /// The agent's own log.
    Agent,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::File => "file",
            LogStream::Agent => "agent",
        }
    }
}

/// What to read from a host's logs (`LogRequest` on the wire; see its
/// comments in agent.proto for each field).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub role_ids: Vec<String>,
    pub agent_log: bool,
    /// Empty: every stream.
    pub streams: Vec<LogStream>,
    /// Unix ms; 0: unbounded.
    pub since: i64,
    pub until: i64,
    /// Regex; empty: every line.
    pub pattern: String,
    pub min_level: String,
    pub tail: u32,
    pub limit: u32,
    pub follow: bool,
    pub timeout_ms: u64,
}

/// A redaction rule the agent applies before anything leaves the host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedactionRule {
    pub name: String,
    pub pattern: String,
}

/// What a host gathers for a diagnostic bundle (`DiagnosticsRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiagnosticsQuery {
    pub role_ids: Vec<String>,
    pub since: i64,
    pub until: i64,
    pub max_bytes: u64,
    /// Empty: everything.
    pub include: Vec<String>,
    /// Literal values to redact (sensitive parameter values).
    pub secrets: Vec<String>,
    pub rules: Vec<RedactionRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentRequest {
    Logs(LogQuery),
    Diagnostics(DiagnosticsQuery),
}

/// One log line as an agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// Empty for the agent's own log.
    pub role_id: String,
    pub file: String,
    pub line_number: u64,
    /// Unix ms; 0: unknown.
    pub time: i64,
    pub stream: LogStream,
    /// Empty when the format gave none.
    pub level: String,
    pub text: String,
}

/// The end of a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyEnd {
    /// Empty when the agent answered fully.
    pub error: String,
    pub truncated: bool,
    pub scanned_bytes: u64,
    /// Diagnostics: the host's part of the manifest (JSON).
    pub manifest_json: String,
}

/// A part of an agent's answer, in the order it sent them; `End` is last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyPart {
    Lines(Vec<LogLine>),
    Archive(Vec<u8>),
    End(ReplyEnd),
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("host {0} is not connected")]
    NotConnected(String),
    #[error("the agent of host {0} is too old to answer log and diagnostics requests (it lacks logs.v1)")]
    Unsupported(String),
    #[error("host {0} has too many requests in flight; try again")]
    Busy(String),
}

/// Why a `Reply` call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("no request {0} is waiting for an answer")]
    Unknown(String),
    #[error("request {0} was not sent to this host")]
    WrongHost(String),
}

/// A request on its way to a session: its id and what it asks. Boxed for the
/// reason the session's outbound messages are (`grpc::Outgoing`): every
/// session holds one of these channels, mostly empty.
pub type Queued = Box<(String, AgentRequest)>;

struct Session {
    id: u64,
    logs: bool,
    tx: mpsc::Sender<Queued>,
}

struct Pending {
    host_id: String,
    /// Taken by the first `Reply` call for the request.
    tx: Option<mpsc::Sender<ReplyPart>>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    pending: HashMap<String, Pending>,
}

/// The sessions that can take requests and the requests awaiting answers.
#[derive(Clone, Default)]
pub struct AgentRequests {
    inner: Arc<Mutex<Inner>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for AgentRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRequests").finish_non_exhaustive()
    }
}

impl AgentRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing under the lock can panic half-way; a poisoned lock holds whole maps.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session opened: requests for `host_id` go to the returned receiver
    /// from now on (the previous session's, if any, gets none).
    /// `logs`: whether the agent announced "logs.v1".
    pub fn attach(&self, host_id: &str, session_id: u64, logs: bool) -> mpsc::Receiver<Queued> {
        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        self.lock().sessions.insert(host_id.to_owned(), Session { id: session_id, logs, tx });
        rx
    }

    /// The session `session_id` of `host_id` ended.
    pub fn detach(&self, host_id: &str, session_id: u64) {
        let mut inner = self.lock();
        if inner.sessions.get(host_id).is_some_and(|s| s.id == session_id) {
            inner.sessions.remove(host_id);
        }
    }

    /// Whether `host_id` has a session that takes requests.
    pub fn reachable(&self, host_id: &str) -> Result<(), SendError> {
        match self.lock().sessions.get(host_id) {
            None => Err(SendError::NotConnected(host_id.to_owned())),
            Some(s) if !s.logs => Err(SendError::Unsupported(host_id.to_owned())),
            Some(_) => Ok(()),
        }
    }

    /// Sends `request` to `host_id`'s agent; its answer arrives on the
    /// returned stream. The caller bounds how long it waits.
    pub fn send(&self, host_id: &str, request: AgentRequest) -> Result<Replies, SendError> {
        let id = format!("rq-{}-{}", std::process::id(), self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let mut inner = self.lock();
        let session = inner.sessions.get(host_id).ok_or_else(|| SendError::NotConnected(host_id.to_owned()))?;
        if !session.logs {
            return Err(SendError::Unsupported(host_id.to_owned()));
        }
        match session.tx.try_send(Box::new((id.clone(), request))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(SendError::Busy(host_id.to_owned())),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SendError::NotConnected(host_id.to_owned())),
        }
        inner.pending.insert(id.clone(), Pending { host_id: host_id.to_owned(), tx: Some(tx) });
        drop(inner);
        Ok(Replies { id, host_id: host_id.to_owned(), rx, owner: self.clone() })
    }

    /// A `Reply` call from `host_id` for `request_id`: where to put its
    /// parts. A request is answered once; a second call is refused.
    pub fn reply_to(&self, host_id: &str, request_id: &str) -> Result<mpsc::Sender<ReplyPart>, ReplyError> {
        let mut inner = self.lock();
        let pending = inner.pending.get_mut(request_id).ok_or_else(|| ReplyError::Unknown(request_id.to_owned()))?;
        if pending.host_id != host_id {
            return Err(ReplyError::WrongHost(request_id.to_owned()));
        }
        pending.tx.take().ok_or_else(|| ReplyError::Unknown(request_id.to_owned()))
    }

    /// Requests sent and not yet answered or given up.
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }

    fn forget(&self, request_id: &str) {
        self.lock().pending.remove(request_id);
    }
}

/// The answer to one request, part by part. Dropping it gives the request up.
#[derive(Debug)]
pub struct Replies {
    id: String,
    host_id: String,
    rx: mpsc::Receiver<ReplyPart>,
    owner: AgentRequests,
}

impl Replies {
    pub fn request_id(&self) -> &str {
        &self.id
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The next part; `None` when the agent's call ended without an `End`
    /// part (the `Reply` handler sends one naming the reason, so this means
    /// the manager itself dropped the sender).
    pub async fn next(&mut self) -> Option<ReplyPart> {
        self.rx.recv().await
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.owner.forget(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_its_host_and_only_that_host_answers_it_once() {
        let requests = AgentRequests::default();
        assert_eq!(
            requests.send("h1", AgentRequest::Logs(LogQuery::default())).unwrap_err(),
            SendError::NotConnected("h1".into())
        );
        let mut old = requests.attach("h1", 1, false);
        assert_eq!(
            requests.send("h1", AgentRequest::Logs(LogQuery::default())).unwrap_err(),
            SendError::Unsupported("h1".into())
        );
        let mut session = requests.attach("h1", 2, true);
        requests.detach("h1", 1); // the superseded session ending changes nothing
        let mut replies = requests.send("h1", AgentRequest::Logs(LogQuery { tail: 5, ..Default::default() })).unwrap();
        let (id, request) = *session.recv().await.unwrap();
        assert_eq!(id, replies.request_id());
        assert_eq!(request, AgentRequest::Logs(LogQuery { tail: 5, ..Default::default() }));
        assert!(old.try_recv().is_err(), "the old session gets nothing");

        assert_eq!(requests.reply_to("h2", &id).unwrap_err(), ReplyError::WrongHost(id.clone()));
        let tx = requests.reply_to("h1", &id).unwrap();
        assert_eq!(requests.reply_to("h1", &id).unwrap_err(), ReplyError::Unknown(id.clone()), "answered once");
        tx.send(ReplyPart::End(ReplyEnd::default())).await.unwrap();
        assert_eq!(replies.next().await, Some(ReplyPart::End(ReplyEnd::default())));

        drop(replies);
        assert_eq!(requests.pending_count(), 0);
        assert!(tx.is_closed(), "the agent's call learns nobody listens");
        requests.detach("h1", 2);
        assert!(requests.reachable("h1").is_err());
    }
}
