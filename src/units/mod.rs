//! The example units that ship with Understudy: a key-value store and a bank ledger. The
//! `understudy` binary registers both; they also show how a `Unit` is written.

pub mod kv;
pub mod ledger;

pub use kv::{KeyValue, KvRequest, KvResponse};
pub use ledger::{Ledger, LedgerRequest, LedgerResponse};

/// The unit kinds the `understudy` binary knows.
pub const KINDS: &[&str] = &["kv", "ledger"];

/// Registers the example kinds with a node builder: `kv` ([`KeyValue`]) and `ledger`
/// ([`Ledger`]), each with the budget its entry in `units.toml` gives. This is all the
/// `understudy` binary adds to the embedding API.
pub fn register(
    builder: understudy_cluster::builder::NodeBuilder,
) -> understudy_cluster::builder::NodeBuilder {
    builder
        .kind("kv", |u| KeyValue { budget: u.budget() })
        .kind("ledger", |u| Ledger { budget: u.budget() })
}
