//! The Raft type configuration of a group: what a log entry carries, how a member is named,
//! which runtime drives it. Concrete on purpose, so that nothing else in [`crate::raft`] is
//! generic.

use openraft::impls::OneshotResponder;
use openraft::{BasicNode, TokioRuntime};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// The Raft types of an Understudy group.
    ///
    /// A command (`D`) and its output (`R`) are opaque bytes, interpreted only by the group's
    /// [`Applier`](super::Applier); a member is a `u64` id with a [`BasicNode`] whose `addr` is
    /// the node's name; a snapshot is held in memory as a [`Cursor`] over its bytes.
    pub GroupRaftConfig:
        D = Vec<u8>,
        R = Vec<u8>,
        NodeId = MemberId,
        Node = BasicNode,
        Entry = openraft::Entry<GroupRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
        Responder = OneshotResponder<GroupRaftConfig>,
);

/// A member's id in its Raft group. Stable for the life of the member's log: an in-memory
/// member that restarts has lost its vote and must rejoin under a new id.
pub type MemberId = u64;

/// The position of an entry in the log: term (with the leader that wrote it) and index.
pub type LogId = openraft::LogId<MemberId>;

/// One log entry of a group.
pub type Entry = openraft::Entry<GroupRaftConfig>;

/// A member's vote: the term and the candidate it voted for (committed once it leads).
pub type Vote = openraft::Vote<MemberId>;

/// The membership as recorded by the log entry that last changed it.
pub type StoredMembership = openraft::StoredMembership<MemberId, BasicNode>;

/// What describes a snapshot besides its bytes: the last entry it covers and the membership.
pub type SnapshotMeta = openraft::SnapshotMeta<MemberId, BasicNode>;

/// A snapshot: its description and its bytes.
pub type Snapshot = openraft::Snapshot<GroupRaftConfig>;

/// An error of the log store or the state machine; openraft stops the member when it sees one.
pub type StorageError = openraft::StorageError<MemberId>;

/// The running Raft instance of one member.
pub type GroupRaft = openraft::Raft<GroupRaftConfig>;

/// What openraft reports about a member: role, term, log, leader, membership.
pub type GroupMetrics = openraft::RaftMetrics<MemberId, BasicNode>;
