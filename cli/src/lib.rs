//! The `drover` command-line client of the manager's REST API: its command
//! line ([`cli`]), one function per command ([`commands`], [`lifecycle`],
//! [`remote_hosts`], [`users`], [`parcel`] for local parcel files), the outbound client
//! ([`manager_client`]) with how it verifies the manager ([`trust`]) and
//! where its settings come from ([`settings`], the config file `drover
//! login` writes), and how answers look to people ([`render`]). A library
//! with a thin binary (`main.rs`), so the tests in `tests/` run whole commands
//! against a manager in the same process.
//!
//! A client only: what it sends and reads are the types of `drover-api`, the
//! ones the manager serves, and nothing of the server (store, HTTP server,
//! gRPC) is linked in (`tests/tests/architecture.rs` checks it).

pub mod alerts;
pub mod cli;
pub mod commands;
pub mod diagnostics;
pub mod environments;
pub mod labels;
pub mod lifecycle;
pub mod login;
pub mod logs;
pub mod manager_client;
pub mod notifications;
pub mod parcel;
pub mod remote_hosts;
pub mod render;
pub mod settings;
pub mod templates;
pub mod trust;
pub mod users;
