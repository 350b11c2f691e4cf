//! Consensus for a group of nodes: each member runs openraft (0.9, storage v2) over an
//! in-memory log, and applies the committed log, in order, to the application's [`Applier`]
//! (later: the group manager's table, so that every node of the group holds the same table and
//! the manager can move with the Raft leader).
//!
//! ```text
//!   caller ── propose(cmd) ──▶ RaftGroup (leader) ── append ──▶ MemoryLogStore
//!                                  │  ▲
//!        MemberLink (RaftNetwork) ─┘  │ commit (majority acknowledged)
//!            │ RaftRequest bytes      ▼
//!            ▼                     GroupStateMachine ── apply(index, cmd) ──▶ Applier
//!     RaftTransport::call          (snapshot: Applier::snapshot + last applied + membership)
//!            │
//!            ▼ (other member)
//!     RaftGroup::handle_rpc ── openraft ── MemoryLogStore / GroupStateMachine ──▶ Applier
//! ```
//!
//! | file | what it holds |
//! | --- | --- |
//! | `group.rs` | [`RaftGroup`], the handle: start, initialize, propose, membership, RPC entry, leadership |
//! | `tuning.rs` | [`RaftTuning`]: timeouts, snapshot and purge policy, limits |
//! | `network.rs` | [`RaftTransport`] and the wire format ([`RaftRequest`], [`RaftRpc`], [`RaftReply`]) |
//! | `log_store.rs` | [`MemoryLogStore`]: entries, vote, committed, purge |
//! | `state_machine.rs` | [`Applier`] and [`GroupStateMachine`]: applying, snapshots |
//! | `types.rs` | the openraft type configuration [`GroupRaftConfig`] and aliases |
//! | `error.rs` | [`StartError`], [`ProposeError`], [`MembershipError`] |
//!
//! Guarantees and limits:
//!
//! - A command whose [`RaftGroup::propose`] returned `Ok` is committed: every member that is
//!   or becomes up to date applies it, at the same index, after the same commands.
//! - `DeadlineExceeded` means *unknown*: the command may commit later. Commands should be
//!   idempotent or carry an id the [`Applier`] deduplicates.
//! - Everything is in memory. A member that restarts has forgotten its vote and its log, and
//!   must rejoin under a new [`MemberId`]; a group survives the loss of a minority of members.
//! - A storage error (for example a damaged snapshot, or an [`Applier::restore`] that fails)
//!   stops that member's Raft: it answers `Fatal` from then on rather than apply a state it
//!   cannot trust.
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use std::sync::Arc;
//! # use understudy_cluster::raft::{Applier, RaftGroup, RaftTransport, RaftTuning, ProposeError};
//! # async fn example(transport: Arc<dyn RaftTransport>, table: Box<dyn Applier>) -> Result<(), Box<dyn std::error::Error>> {
//! let member = RaftGroup::start(1, "node-a", RaftTuning::default(), transport, table).await?;
//! member
//!     .initialize(BTreeMap::from([(1, "node-a".into()), (2, "node-b".into()), (3, "node-c".into())]))
//!     .await?;
//! // The transport's receiving side calls `member.handle_rpc(&bytes).await` for each request.
//! match member.propose(b"bind unit-7 to node-b".to_vec()).await {
//!     Ok(output) => println!("applied: {output:?}"),
//!     Err(ProposeError::ForwardToLeader { leader }) => println!("ask {leader:?}"),
//!     Err(other) => return Err(other.into()),
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod group;
mod log_store;
mod network;
mod state_machine;
mod tuning;
mod types;

pub use error::{MembershipError, ProposeError, StartError};
pub use group::{GroupMembers, Leadership, MemberRole, RaftGroup};
pub use log_store::MemoryLogStore;
pub use network::{RaftReply, RaftRequest, RaftRpc, RaftTransport, TransportError};
pub use state_machine::{Applier, GroupStateMachine};
pub use tuning::RaftTuning;
pub use types::{
    Entry, GroupMetrics, GroupRaft, GroupRaftConfig, LogId, MemberId, Snapshot, SnapshotMeta,
    StorageError, StoredMembership, Vote,
};
