//! Health tests and alert rules: expressions over the metrics the manager holds, evaluated
//! in memory every cycle.

pub mod catalog;
pub mod engine;
pub mod expr;
pub mod health;
pub mod live;
pub mod state;

pub use live::Alerts;

/// The cycle's hash maps: foldhash, not SipHash (hashing was a fifth of an aggregation over
/// 10,000 hosts; a cycle makes tens of thousands of lookups).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
