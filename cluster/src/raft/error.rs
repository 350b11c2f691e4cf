//! What can go wrong when using a [`RaftGroup`](super::RaftGroup), each error saying what to do
//! next. Retryable errors (`ForwardToLeader`, `DeadlineExceeded`, `ChangeInProgress`) are kept
//! apart from `Fatal`, after which the member must be restarted.

use super::types::MemberId;
use std::time::Duration;

/// Why [`RaftGroup::start`](super::RaftGroup::start) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The [`RaftTuning`](super::RaftTuning) is unusable.
    #[error("invalid raft tuning: {reason}")]
    InvalidTuning {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Openraft could not start (its storage failed on reading the initial state).
    #[error("raft member {id} could not start: {reason}; start it again with fresh storage")]
    Fatal {
        /// The member that failed.
        id: MemberId,
        /// What openraft reported.
        reason: String,
    },
}

/// Why a proposal (or a leadership check) did not produce a committed result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member is not the leader. The command was not appended: send it to `leader`
    /// (id and name); if `None`, an election is under way: wait for one (see
    /// [`RaftGroup::leadership`](super::RaftGroup::leadership)) and retry.
    #[error("not the leader; {}", forward_hint(.leader))]
    ForwardToLeader {
        /// The leader as this member knows it: id and node name.
        leader: Option<(MemberId, String)>,
    },
    /// The outcome was not known within `budget` (e.g. the leader cannot reach a majority).
    /// The command may still commit later: retry only commands that are safe to apply twice,
    /// or carry an id the [`Applier`](super::Applier) deduplicates.
    #[error("no outcome within {budget:?}; the command may still commit, retry only if it is idempotent")]
    DeadlineExceeded {
        /// The time that was allowed.
        budget: Duration,
    },
    /// This member believes it leads but could not reach a majority to confirm it: do not act
    /// as leader; wait for the group to settle and check again.
    #[error(
        "leadership not confirmed by a majority: {reason}; do not act as leader, check again later"
    )]
    NoQuorum {
        /// What openraft reported.
        reason: String,
    },
    /// This member's Raft has stopped (shut down, or a storage error such as a corrupt
    /// snapshot). Restart the member under a new id.
    #[error("raft stopped on this member: {reason}; restart the member under a new id")]
    Fatal {
        /// What openraft reported.
        reason: String,
    },
}

/// Why a membership operation ([`initialize`](super::RaftGroup::initialize),
/// [`add_voter`](super::RaftGroup::add_voter), [`remove_member`](super::RaftGroup::remove_member))
/// did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Membership changes go through the leader: ask `leader` (id and name), or, if `None`,
    /// wait for an election and retry.
    #[error("not the leader; {}", forward_hint(.leader))]
    ForwardToLeader {
        /// The leader as this member knows it: id and node name.
        leader: Option<(MemberId, String)>,
    },
    /// The group is already initialized (by this call elsewhere, or earlier): nothing to do if
    /// it was initialized with the same members.
    #[error("the group is already initialized; nothing to do if it was with the same members")]
    AlreadyInitialized,
    /// `initialize` must list the member it is called on.
    #[error("member {id} is not among the initial members; list it, or call initialize on a listed member")]
    NotInMembers {
        /// The member `initialize` was called on.
        id: MemberId,
    },
    /// Another membership change is still being committed: retry when it is done.
    #[error("another membership change is in progress; retry once it has committed")]
    ChangeInProgress,
    /// The change would leave the group without voters.
    #[error("the change would leave the group without voters; add a voter first")]
    WouldEmptyGroup,
    /// The member to promote is not a learner of the group (it was removed meanwhile).
    #[error("member {id} is not a learner of the group; add it again")]
    NotALearner {
        /// The member that was to be promoted.
        id: MemberId,
    },
    /// The change did not complete within `budget`. A member being added may stay a learner
    /// (still catching up, or unreachable): call `add_voter` again, or `remove_member`.
    #[error("membership change not done within {budget:?}; check the member is reachable, then repeat the call (it is idempotent)")]
    DeadlineExceeded {
        /// The time that was allowed.
        budget: Duration,
    },
    /// This member's Raft has stopped. Restart the member under a new id.
    #[error("raft stopped on this member: {reason}; restart the member under a new id")]
    Fatal {
        /// What openraft reported.
        reason: String,
    },
}

fn forward_hint(leader: &Option<(MemberId, String)>) -> String {
    match leader {
        Some((id, name)) => format!("send it to the leader, member {id} on node {name}"),
        None => "no leader is known: wait for an election, then retry".to_string(),
    }
}
