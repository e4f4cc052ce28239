//! Health tests and alert rules: expressions over the metrics the manager holds, evaluated
//! in memory every cycle.

pub mod catalog;
pub mod engine;
pub mod expr;
pub mod health;
pub mod live;
pub mod state;

pub use live::Alerts;
