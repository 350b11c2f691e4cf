//! # understudy-runtime
//!
//! The pure, deterministic protocol core of Understudy. Nothing here does IO, reads a clock
//! or draws a random number: inputs (and the current [`Time`]) go in, commands come out, and
//! the actors in `understudy-actors` carry them over mailboxes and sockets. Every interleaving
//! can therefore be tested without sockets or sleeps, and the [`sim`] module does exactly that.
//!
//! ## Map
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`budget`] | time spent against budgets, per unit and stimulus kind |
//! | [`call`] | units calling units: [`Outcall`], [`CallReply`], ids derived from the upstream stimulus |
//! | [`mod@unit`] | the [`Unit`] trait an application implements, and the [`Budget`] of a stimulus |
//! | [`ids`] | [`Epoch`], [`StimulusId`], [`TraceId`], [`CopyId`], node and unit names, batch numbers |
//! | [`time`] | [`Time`], the value the caller passes in instead of a clock |
//! | [`liveness`] | heartbeat bookkeeping: who has been silent too long |
//! | [`dedupe`] | the bounded [`DedupeTable`] that makes retries take effect once |
//! | [`message`] | what copies, managers and clients say to each other, and [`Refusal`] |
//! | [`replay`] | a caller's book of trailing answers the standby may lack: kept, confirmed, replayed |
//! | [`replication`] | the primary's side of the synchronous (group commit) and trailing strategies ([`Replicator`]) |
//! | [`copy`] | one copy and its role machine `Standby → Promoting → Primary → Fenced` |
//! | [`group`] | the group manager's decisions: placement, leases, takeover, quarantine |
//! | [`global`] | the global manager, itself a unit: failures, node losses and slow threads from every group in, quarantines and exclusions out |
//! | [`thread`] | where a stimulus thread's time went, unit by unit, and which threads broke their budget |
//! | [`table`] | the group manager's table as a replicated state machine, and the leader's session deciding what to propose |
//! | [`pending`] | the leader's queue of inputs for its next entry: each once, a primary's lease requests folded |
//! | [`renewal`] | a node's primaries' lease asks, gathered by its local manager into one request ([`LeaseAsks`]) |
//! | [`sim`] | a seeded simulation of copies, managers and clients over a faulty network |
//!
//! ## A takeover, as the core sees it
//!
//! ```text
//!  LocalManager: copy crashed ──► GroupCore::step(CopyDown) ──► Direct(Promote{e+1}) to standby
//!  standby: CopyCore::step(Directive(Promote)) ──► drops a torn batch ──► Report(Promoted)
//!  GroupCore::step(Report(Promoted)) ──► Direct(Lease), Bind{unit, copy, e+1}, Start(standby)
//! ```

#![warn(missing_docs)]

pub mod budget;
pub mod call;
pub mod copy;
pub mod dedupe;
pub mod global;
pub mod group;
pub mod ids;
pub mod liveness;
pub mod message;
pub mod pending;
pub mod renewal;
pub mod replay;
pub mod replication;
pub mod sim;
pub mod table;
pub mod thread;
pub mod time;
pub mod unit;

pub use budget::{BudgetRow, BudgetTally, KindTally};
pub use call::{
    derived_id, derived_low_water, CallFailure, CallReply, Outcall, CALLS_PER_STIMULUS,
};
pub use copy::{
    CallToken, Command, CopyConfig, CopyCore, Input, NextTick, Reconciled, ReplyToken, Role,
    StimulusIn,
};
pub use dedupe::{DedupeLimits, DedupeTable};
pub use global::{GlobalDecision, GlobalManager, GlobalRequest, GlobalResponse, GLOBAL_UNIT};
pub use group::{
    GroupCommand, GroupConfig, GroupCore, GroupInput, LeaseAsk, LeaseRenewal, Placement,
    Quarantine, StartAs,
};
pub use ids::{BatchSeq, ClientId, CopyId, Epoch, NodeName, Seq, StimulusId, TraceId, UnitName};
pub use liveness::{HeartbeatConfig, Liveness};
pub use message::{Directive, Entry, LeaseGrant, PeerMsg, Refusal, Report};
pub use renewal::LeaseAsks;
pub use replay::{Kept, ReplayBook, Round};
pub use replication::{Durability, Flush, Replicator, Strategy};
pub use table::{ControlEntry, ControlInput, GroupTable, Heartbeat, ManagerSession};
pub use time::Time;
pub use unit::{Budget, DependencyChange, Handled, Reconcile, Step, Unit};
