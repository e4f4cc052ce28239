//! The request and response types of Drover's REST API (`/api/v1`), with
//! their OpenAPI schemas, shared by the manager, which serves them, and the
//! `drover` CLI, which sends and reads them: a renamed field breaks the
//! build of both, not a user's command.
//!
//! Nothing of the server is here: no axum, no sqlx, no gRPC, only serde,
//! utoipa, chrono, zeroize (for credentials) and the label rules of
//! `drover-labels`. Each module holds one area of the API:
//!
//! - [`model`]: hosts, users, tokens, events, metrics, as the store keeps
//!   them and the API returns them; timestamps;
//! - [`hosts`]: the host list, labels and metrics, and the label rules;
//! - [`tokens`]: enrollment and API tokens;
//! - [`history`]: events and the audit log;
//! - [`clusters`], [`services`], [`roles`], [`config`], [`commands`]: the
//!   service model, versioned configuration and commands;
//! - [`parcels`]: the repository and the parcel lifecycle of clusters;
//! - [`users`]: users, roles, grants and the permissions of each role;
//! - [`providers`], [`bootstrap`]: hosts from the Docker provider and over
//!   SSH;
//! - [`diagnostics`]: diagnostic bundles and redaction rules;
//! - [`logs`]: role and agent logs, the search across hosts;
//! - [`templates`]: cluster templates, their export and instantiation;
//! - [`environments`]: templates instantiated on containers made for them,
//!   with an owner and an expiry;
//! - [`alerts`]: the health tree, alerts, alert rules, silences and maintenance mode;
//! - [`envelope`]: [`Items`] (every list) and [`ErrorBody`] (every error);
//! - [`names`]: the name and reason rules as schemas;
//! - [`whole`]: integer fields that also take `3.0`.
//!
//! Types are plain data with small pure methods (`as_str`, `parse`); every
//! rule beyond what a schema states is the manager's.

pub mod alerts;
pub mod bootstrap;
pub mod clusters;
pub mod commands;
pub mod config;
pub mod diagnostics;
pub mod envelope;
pub mod environments;
pub mod history;
pub mod hosts;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod names;
pub mod parcels;
pub mod providers;
pub mod roles;
pub mod services;
pub mod templates;
pub mod tokens;
pub mod users;
pub mod whole;

pub use envelope::{ErrorBody, ErrorDetail, Items};
