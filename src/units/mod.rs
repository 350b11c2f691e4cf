//! The example units that ship with Understudy: a key-value store and a bank ledger. The
//! `understudy` binary registers both; they also show how a `Unit` is written.

pub mod kv;
pub mod ledger;

pub use kv::{KeyValue, KvRequest, KvResponse};
pub use ledger::{Ledger, LedgerRequest, LedgerResponse};
