//! The example units that ship with Understudy: a key-value store, a bank ledger (which may be
//! split over two units that move money between them), and a pipeline stage (chains of units,
//! the patent's Fig. 2A). The `understudy` binary registers all three; they also show how a
//! `Unit` is written, and how one calls another.

pub mod kv;
pub mod ledger;
pub mod stage;

pub use kv::{KeyValue, KvRequest, KvResponse};
pub use ledger::{Ledger, LedgerRequest, LedgerResponse};
pub use stage::{Stage, StageState};

/// The unit kinds the `understudy` binary knows.
pub const KINDS: &[&str] = &["kv", "ledger", "stage"];

/// Registers the example kinds with a node builder: `kv` ([`KeyValue`]), `ledger`
/// ([`Ledger`]; its peer is the first of its `calls`) and `stage` ([`Stage`]; its next unit is
/// the first of its `calls`), each with the budget its entry in `units.toml` gives. This is
/// all the `understudy` binary adds to the embedding API.
pub fn register(
    builder: understudy_cluster::builder::NodeBuilder,
) -> understudy_cluster::builder::NodeBuilder {
    builder
        .kind("kv", |u| KeyValue { budget: u.budget() })
        .kind("ledger", |u| Ledger {
            budget: u.budget(),
            peer: u.calls.first().cloned(),
        })
        .kind("stage", |u| Stage {
            budget: u.budget(),
            next: u.calls.first().cloned(),
        })
}
