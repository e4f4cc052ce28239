//! The Drover agent as a library: enrollment, the session with the manager, host
//! facts and metrics. The `drover-agent` binary is a thin shell around it, and the
//! load generator in `tests/` uses it to run thousands of synthetic agents in one
//! process.
//!
//! # Code map
//!
//! - [`facts`]: what the host is (hostname, addresses, OS, container/VM/physical, disks);
//!   collected once at start-up.
//! - [`container`]: the container id and the cgroup CPU and memory limits that
//!   become the host's capacity.
//! - [`init`]: the agent as PID 1 (a container's entry point): a minimal init that
//!   reaps orphans and runs the agent proper as its child.
//! - [`metrics`]: how the host is doing (CPU, memory, load, disks, network); sampled
//!   for every heartbeat by a reusable [`metrics::MetricsCollector`].
//! - [`enroll`]: the one-time exchange of an enrollment token and a CSR for a client
//!   certificate, and the [`enroll::Identity`] kept in the data directory.
//! - [`session`]: the long-lived `Session` stream, reconnecting forever with backoff
//!   ([`backoff`]) until shutdown or a fatal refusal.
//! - [`error`]: [`error::AgentError`] and the one function deciding which failures are
//!   fatal ([`error::classify`]).
//! - [`datadir`]: what the agent keeps on disk and how it is written (atomically, 0600).
//! - [`labels`]: parsing `--labels k=v,k2=v2`.
//! - [`roles`]: the roles a host runs, as the manager wants them ([`roles::RoleSpec`])
//!   and as observed ([`roles::RoleStatus`]).
//! - [`reconcile`]: the role reconciler, a plain state machine
//!   `handle(now, Event) -> Vec<Effect>` deciding files, starts, stops, restarts,
//!   backoff, crash loops and reports.
//! - [`parcels`]: the parcels the manager wants on the host: downloads with resume,
//!   verification, install, activation and removal, as a state machine
//!   ([`parcels::ParcelReconciler`]) and its driver ([`parcels::Parcels`]).
//! - [`collect`]: role metrics for heartbeats: each running role's process
//!   figures from `/proc`, and the service metrics its spec's metric sources
//!   yield (Redis `INFO`, ZooKeeper `mntr`, nginx `stub_status`, Prometheus
//!   text from an endpoint or a command), collected by the supervisor's tasks.
//! - [`supervisor`]: its async driver: files ([`files`]), process groups, signals,
//!   health probes ([`health`]), log rotation, persistence and re-adoption of
//!   running processes after an agent restart.
//! - [`logs`]: reading role logs (tail, search in a window, follow across
//!   rotations) for the manager's log requests; [`agent_log`]: the agent's own
//!   rotating log file; [`diagnostics`]: the host's part of a diagnostic
//!   bundle, redacted and streamed as a tar.gz; [`requests`]: answering both
//!   on `Reply` calls of their own.
//!
//! Architecture invariant: generated prost types never leave the gRPC edge. Facts and
//! metrics are domain structs; the private `wire` module converts them to and from
//! `drover_proto::v1` types, and only `enroll`, `session` and `supervisor` call it. The session
//! protocol itself is a plain state machine (private module `protocol`):
//! `handle(now, Event) -> Vec<Effect>`, driven by the async code in [`session`].
//!
//! # Using the library for synthetic agents
//!
//! ```no_run
//! # async fn example(manager: drover_proto::tls::ManagerAddr, token: drover_proto::token::EnrollmentToken) -> Result<(), drover_agent::error::AgentError> {
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use drover_agent::{enroll, facts, metrics::Metrics, session};
//!
//! let mut facts = facts::collect(Some("synthetic-0001"));
//! facts.addresses.clear();
//! let identity = enroll::enroll(&manager, &token, None, &facts, &BTreeMap::new()).await?;
//! let config = session::SessionConfig::new(manager, identity, facts);
//! let observer = Arc::new(session::NoopObserver);
//! session::run(config, Metrics::default, observer, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

pub mod agent_log;
pub mod backoff;
pub mod collect;
pub mod container;
pub mod datadir;
pub mod diagnostics;
pub mod enroll;
pub mod error;
pub mod facts;
pub mod files;
pub mod health;
pub mod init;
pub mod journal;
pub use drover_proto::labels;
pub mod logs;
pub mod metrics;
pub mod parcels;
mod protocol;
pub mod reconcile;
pub mod requests;
pub mod roles;
pub mod session;
pub mod supervisor;
mod wire;

/// This agent's version, reported at enrollment and in every `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
