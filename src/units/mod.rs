//! The example units that ship with Understudy: a key-value store and a bank ledger. The
//! `understudy` binary registers both; they also show how a `Unit` is written.

pub mod kv;
pub mod ledger;

pub use kv::{KeyValue, KvRequest, KvResponse};
pub use ledger::{Ledger, LedgerRequest, LedgerResponse};

/// The units a node runs when no configuration names others: the key-value unit `kv` and the
/// ledger unit `ledger`, both synchronous.
pub fn default_catalog() -> understudy_actors::Catalog {
    use understudy_actors::UnitKind;
    use understudy_runtime::CopyConfig;
    understudy_actors::Catalog::new()
        .with_unit(
            "kv",
            UnitKind::new(KeyValue::default()),
            CopyConfig::default(),
        )
        .with_unit(
            "ledger",
            UnitKind::new(Ledger::default()),
            CopyConfig::default(),
        )
}
