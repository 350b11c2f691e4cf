//! The example units that ship with Understudy: a key-value store and a bank ledger. The
//! `understudy` binary registers both; they also show how a `Unit` is written.

pub mod kv;
pub mod ledger;

pub use kv::{KeyValue, KvRequest, KvResponse};
pub use ledger::{Ledger, LedgerRequest, LedgerResponse};

/// The unit kinds the `understudy` binary knows.
pub const KINDS: &[&str] = &["kv", "ledger"];

/// The units a node runs when no configuration names others: the key-value unit `kv` and the
/// ledger unit `ledger`, both synchronous.
pub fn default_catalog() -> understudy_actors::Catalog {
    catalog_from(&understudy_cluster::config::ClusterConfig::default_embedded())
}

/// The catalog a (validated) configuration describes, with each unit's budget from it.
/// Units of kinds this binary does not know are left out; `ClusterConfig::validate` with
/// [`KINDS`] refuses them first.
pub fn catalog_from(
    config: &understudy_cluster::config::ClusterConfig,
) -> understudy_actors::Catalog {
    use understudy_actors::UnitKind;
    use understudy_runtime::CopyConfig;
    let mut catalog = understudy_actors::Catalog::new();
    for u in &config.units {
        let budget = u.budget();
        catalog = match u.kind.as_str() {
            "kv" => catalog.with_unit(
                &u.name,
                UnitKind::new(KeyValue { budget }),
                CopyConfig::default(),
            ),
            "ledger" => catalog.with_unit(
                &u.name,
                UnitKind::new(Ledger { budget }),
                CopyConfig::default(),
            ),
            _ => catalog,
        };
    }
    catalog
}
