//! Drover's wire boundary: the generated gRPC types of `drover.agent.v1` and the
//! pieces of mutual TLS both the manager and the agent must agree on (enrollment
//! token format, CA fingerprints, how a host id is bound to a client certificate).
//!
//! Architecture invariant: generated prost types never leave the gRPC edge. The
//! manager and the agent convert them to their own domain types at the point
//! where a message is sent or received. The role spec they share
//! (`drover-role-spec`) has its one set of conversions here, in [`rolespec`].

pub mod codec;
pub mod identity;
pub mod rolespec;
pub mod tls;
pub mod token;

/// The host label rules, from `drover-labels`, under the name agent and
/// manager have always used.
pub use drover_labels as labels;

/// Generated types and service stubs for `drover.agent.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("drover.agent.v1");
}

/// The protocol version string agents and managers report to each other.
pub const PROTOCOL: &str = "drover.agent.v1";
