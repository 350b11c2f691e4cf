//! [`RaftGroup`]: the handle on one member of a group's Raft — start it, form or change the
//! group, propose commands, serve the other members' RPCs, watch who leads.

use super::error::{MembershipError, ProposeError, StartError};
use super::log_store::MemoryLogStore;
use super::network::{GroupNetwork, RaftReply, RaftRequest, RaftRpc, RaftTransport};
use super::state_machine::{Applier, GroupStateMachine};
use super::tuning::RaftTuning;
use super::types::{GroupMetrics, GroupRaft, MemberId};
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError,
    RaftError,
};
use openraft::metrics::RaftServerMetrics;
use openraft::raft::VoteResponse;
use openraft::{BasicNode, ChangeMembers, LogId, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The handle on one member of a group's Raft. Cheap to clone; every clone drives the same
/// member.
///
/// A member starts empty. One member (any, or all with the same list) calls
/// [`initialize`](RaftGroup::initialize) with the founding members; later members are started
/// empty too and joined by the leader with [`add_voter`](RaftGroup::add_voter).
#[derive(Clone)]
pub struct RaftGroup {
    inner: Arc<Member>,
}

struct Member {
    id: MemberId,
    name: String,
    raft: GroupRaft,
    tuning: RaftTuning,
    leadership: watch::Receiver<Leadership>,
}

impl fmt::Debug for RaftGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leadership = self.inner.leadership.borrow().clone();
        f.debug_struct("RaftGroup")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("leadership", &leadership)
            .finish_non_exhaustive()
    }
}

/// What a member does in its group right now, as it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// Receives the log but does not vote (a member being added, or one not yet initialized).
    Learner,
    /// A voter following the leader.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// The voter that orders the log for its term.
    Leader,
    /// Raft has stopped on this member (shut down, or a fatal error).
    Stopped,
}

/// Who leads the group, as this member sees it. A leader cut off from the others keeps
/// seeing itself as leader until it hears of a newer term; use
/// [`RaftGroup::confirm_leader`] before acting on leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader of `term`, if known.
    pub leader: Option<MemberId>,
    /// The latest term this member knows.
    pub term: u64,
    /// This member's own role.
    pub role: MemberRole,
}

impl Leadership {
    fn of(metrics: &RaftServerMetrics<MemberId, BasicNode>) -> Self {
        Leadership {
            leader: metrics.current_leader,
            term: metrics.vote.leader_id().term,
            role: role_of(metrics.state),
        }
    }
}

fn role_of(state: ServerState) -> MemberRole {
    match state {
        ServerState::Learner => MemberRole::Learner,
        ServerState::Follower => MemberRole::Follower,
        ServerState::Candidate => MemberRole::Candidate,
        ServerState::Leader => MemberRole::Leader,
        ServerState::Shutdown => MemberRole::Stopped,
    }
}

/// The members of the group by the latest membership this member knows, with their names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupMembers {
    /// Members that vote and can lead.
    pub voters: BTreeMap<MemberId, String>,
    /// Members that receive the log but do not vote (being added).
    pub learners: BTreeMap<MemberId, String>,
}

impl RaftGroup {
    /// Starts member `id` (on the node named `name`) with an empty log, talking to the other
    /// members through `transport` and applying committed commands to `applier`.
    ///
    /// Must be called inside a tokio runtime. The member does nothing until the group is
    /// formed: see [`initialize`](RaftGroup::initialize) and [`add_voter`](RaftGroup::add_voter).
    pub async fn start(
        id: MemberId,
        name: impl Into<String>,
        tuning: RaftTuning,
        transport: Arc<dyn RaftTransport>,
        applier: Box<dyn Applier>,
    ) -> Result<RaftGroup, StartError> {
        let name = name.into();
        let config = tuning
            .openraft_config(&format!("member {id} on {name}"))
            .map_err(|reason| StartError::InvalidTuning { reason })?;
        let network = GroupNetwork::new(
            transport,
            tuning.unreachable_backoff,
            tuning.max_append_bytes,
        );
        let raft = GroupRaft::new(
            id,
            Arc::new(config),
            network,
            MemoryLogStore::new(),
            GroupStateMachine::new(applier),
        )
        .await
        .map_err(|e| StartError::Fatal {
            id,
            reason: e.to_string(),
        })?;
        let leadership = watch_leadership(raft.server_metrics());
        Ok(RaftGroup {
            inner: Arc::new(Member {
                id,
                name,
                raft,
                tuning,
                leadership,
            }),
        })
    }

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.inner.id
    }

    /// The name of the node this member runs on.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The tuning this member was started with.
    pub fn tuning(&self) -> &RaftTuning {
        &self.inner.tuning
    }

    /// Forms the group with its founding `members` (id → node name), which must include this
    /// member. Call it on one member, or on all with the same map; the members then elect a
    /// leader. Returns [`MembershipError::AlreadyInitialized`] if the group exists already.
    pub async fn initialize(
        &self,
        members: BTreeMap<MemberId, String>,
    ) -> Result<(), MembershipError> {
        let nodes: BTreeMap<MemberId, BasicNode> = members
            .into_iter()
            .map(|(id, name)| (id, BasicNode::new(name)))
            .collect();
        let budget = self.inner.tuning.request_timeout;
        match within_budget(budget, self.inner.raft.initialize(nodes)).await {
            Err(()) => Err(MembershipError::DeadlineExceeded { budget }),
            Ok(Ok(())) => Ok(()),
            Ok(Err(RaftError::APIError(InitializeError::NotAllowed(_)))) => {
                Err(MembershipError::AlreadyInitialized)
            }
            Ok(Err(RaftError::APIError(InitializeError::NotInMembers(_)))) => {
                Err(MembershipError::NotInMembers { id: self.id() })
            }
            Ok(Err(RaftError::Fatal(f))) => Err(MembershipError::Fatal {
                reason: f.to_string(),
            }),
        }
    }

    /// Proposes `command` and returns its output once it is committed and applied on this
    /// member, within [`RaftTuning::request_timeout`]. Only the leader accepts proposals;
    /// other members answer [`ProposeError::ForwardToLeader`].
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        self.propose_within(command, self.inner.tuning.request_timeout)
            .await
    }

    /// [`propose`](RaftGroup::propose) with an explicit budget.
    pub async fn propose_within(
        &self,
        command: Vec<u8>,
        budget: Duration,
    ) -> Result<Vec<u8>, ProposeError> {
        match within_budget(budget, self.inner.raft.client_write(command)).await {
            Err(()) => Err(ProposeError::DeadlineExceeded { budget }),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::ForwardToLeader {
                    leader: self.leader_of(f),
                })
            }
            // A plain command carries no membership change; should openraft report one anyway,
            // the member is in a state we do not understand.
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ProposeError::Fatal {
                    reason: format!("unexpected membership error for a plain command: {e}"),
                })
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Fatal {
                reason: f.to_string(),
            }),
        }
    }

    /// Confirms that this member still leads: a majority of voters answers its heartbeat with
    /// its term, and this member has applied everything committed before the call. Use it
    /// before acting as leader (a cut-off leader still *believes* it leads). Bounded by
    /// [`RaftTuning::request_timeout`].
    pub async fn confirm_leader(&self) -> Result<(), ProposeError> {
        let budget = self.inner.tuning.request_timeout;
        match within_budget(budget, self.inner.raft.ensure_linearizable()).await {
            Err(()) => Err(ProposeError::DeadlineExceeded { budget }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ProposeError::ForwardToLeader {
                    leader: self.leader_of(f),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                Err(ProposeError::NoQuorum {
                    reason: q.to_string(),
                })
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Fatal {
                reason: f.to_string(),
            }),
        }
    }

    /// Adds member `id` (on node `name`) as a voter: first as a learner, which waits until it
    /// lags by at most [`RaftTuning::learner_lag`] entries (catching up from the log, or from a
    /// snapshot if the log was purged), then promoted. Call it on the leader; the new member
    /// must have been [started](RaftGroup::start) and be reachable. Adding a present member
    /// changes nothing.
    pub async fn add_voter(
        &self,
        id: MemberId,
        name: impl Into<String>,
    ) -> Result<(), MembershipError> {
        let budget = self.inner.tuning.request_timeout;
        let raft = &self.inner.raft;
        let node = BasicNode::new(name.into());
        let change = async {
            raft.add_learner(id, node, true).await?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
        };
        match within_budget(budget, change).await {
            Err(()) => Err(MembershipError::DeadlineExceeded { budget }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.membership_error(e)),
        }
    }

    /// Adds member `id` (on node `name`) as a learner: it receives the log and applies it, but
    /// neither votes nor can lead (a node of another group that wants this group's table).
    /// Returns once it has caught up to within [`RaftTuning::learner_lag`]. Call it on the
    /// leader; adding a present member changes nothing.
    pub async fn add_learner(
        &self,
        id: MemberId,
        name: impl Into<String>,
    ) -> Result<(), MembershipError> {
        let budget = self.inner.tuning.request_timeout;
        let node = BasicNode::new(name.into());
        match within_budget(budget, self.inner.raft.add_learner(id, node, true)).await {
            Err(()) => Err(MembershipError::DeadlineExceeded { budget }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.membership_error(e)),
        }
    }

    /// Removes member `id` from the group, whether voter or learner; removing an absent member
    /// changes nothing. Call it on the leader. A removed member stops receiving the log; shut
    /// it down. Removing the leader itself is allowed: it commits the change, then the rest
    /// elect a new leader.
    pub async fn remove_member(&self, id: MemberId) -> Result<(), MembershipError> {
        let members = self.members();
        let change = if members.voters.contains_key(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if members.learners.contains_key(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Ok(());
        };
        let budget = self.inner.tuning.request_timeout;
        match within_budget(budget, self.inner.raft.change_membership(change, false)).await {
            Err(()) => Err(MembershipError::DeadlineExceeded { budget }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.membership_error(e)),
        }
    }

    /// Serves one request from another member (what its [`RaftTransport`] delivered) and
    /// returns the encoded reply to send back. Any byte string is answered, never with a
    /// panic: an unreadable request, one meant for another member, one that claims to come
    /// from this member itself, or a snapshot chunk beyond [`RaftTuning::max_snapshot_bytes`]
    /// gets a [`RaftReply::Refused`].
    pub async fn handle_rpc(&self, request: &[u8]) -> Vec<u8> {
        let raft = &self.inner.raft;
        let reply = match self.admit(request) {
            Err(reason) => RaftReply::Refused { reason },
            Ok(RaftRpc::AppendEntries(rpc)) => {
                RaftReply::AppendEntries(raft.append_entries(rpc).await)
            }
            Ok(RaftRpc::Vote(rpc)) => {
                let candidate_log = rpc.last_log_id;
                let reply = raft.vote(rpc).await;
                if let Ok(answer) = &reply {
                    if refused_for_a_shorter_log(answer, candidate_log) && self.leader().is_none() {
                        // With no leader known, a candidate whose log is behind this member's
                        // cannot win this member, and may keep the group leaderless by
                        // campaigning again and again: this member, whose log is further,
                        // campaigns at once instead of waiting out its election timeout.
                        let group = self.clone();
                        tokio::spawn(async move { group.campaign().await });
                    }
                }
                RaftReply::Vote(reply)
            }
            Ok(RaftRpc::InstallSnapshot(rpc)) => {
                RaftReply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
        };
        reply.encode()
    }

    /// Decodes a request from another member and checks it may be handed to openraft.
    fn admit(&self, request: &[u8]) -> Result<RaftRpc, String> {
        let request = RaftRequest::decode(request)?;
        let id = self.id();
        if request.target != id {
            return Err(format!(
                "this is member {id}, the request is for member {}; check the transport's routing",
                request.target
            ));
        }
        if sent_by(&request.rpc) == Some(id) {
            return Err(format!(
                "the request claims to come from member {id} itself; check the transport's routing"
            ));
        }
        request
            .rpc
            .check()
            .map_err(|reason| format!("inconsistent raft request: {reason}"))?;
        if let RaftRpc::InstallSnapshot(chunk) = &request.rpc {
            let limit = self.inner.tuning.max_snapshot_bytes;
            let end = chunk.offset.checked_add(chunk.data.len() as u64);
            let within = matches!(end, Some(end) if end <= limit);
            if !within {
                return Err(format!(
                    "snapshot chunk at offset {} ({} bytes) goes beyond max_snapshot_bytes = {limit}; raise it on this member",
                    chunk.offset,
                    chunk.data.len()
                ));
            }
        }
        Ok(request.rpc)
    }

    /// Starts an election at once, this member a candidate of the next term: for a leader
    /// known to be gone (its process ended), rather than waiting out the election timeout.
    /// A member whose leader's lease still runs votes for nobody, so every member that saw the
    /// leader go campaigns: see [`crate::departure`].
    pub async fn campaign(&self) {
        if let Err(e) = self.inner.raft.trigger().elect().await {
            tracing::warn!(member = self.id(), error = %e, "cannot start an election: the member's Raft has stopped");
        }
    }

    /// The leader as this member knows it (see [`Leadership`] for the caveat).
    pub fn leader(&self) -> Option<MemberId> {
        self.inner.leadership.borrow().leader
    }

    /// The leader's id and node name, if known.
    pub fn leader_member(&self) -> Option<(MemberId, String)> {
        let id = self.leader()?;
        Some((id, self.member_name(id)?))
    }

    /// Whether this member believes it leads. A cut-off leader believes so until it hears of
    /// a newer term: use [`confirm_leader`](RaftGroup::confirm_leader) before acting on it.
    pub fn is_leader(&self) -> bool {
        self.inner.leadership.borrow().role == MemberRole::Leader
    }

    /// A watch of [`Leadership`]: changes whenever the leader, the term or this member's role
    /// changes. `changed()` fails once the member's Raft has stopped and its state is final.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.leadership.clone()
    }

    /// Waits up to `budget` until a leader is known; `None` if none is by then, or if this
    /// member's Raft has stopped.
    pub async fn wait_for_leader(&self, budget: Duration) -> Option<MemberId> {
        let mut leadership = self.leadership();
        let seen = within_budget(
            budget,
            leadership.wait_for(|l| l.leader.is_some() || l.role == MemberRole::Stopped),
        )
        .await;
        match seen {
            Ok(Ok(l)) => l.leader,
            _ => None,
        }
    }

    /// The members of the group, by the latest membership this member knows (which may not
    /// be committed yet).
    pub fn members(&self) -> GroupMembers {
        let metrics = self.inner.raft.server_metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
        let mut members = GroupMembers::default();
        for (id, node) in membership.nodes() {
            let side = if voters.contains(id) {
                &mut members.voters
            } else {
                &mut members.learners
            };
            side.insert(*id, node.addr.clone());
        }
        members
    }

    /// Openraft's full report on this member (log positions, snapshot, replication), as a
    /// watch.
    pub fn metrics(&self) -> watch::Receiver<GroupMetrics> {
        self.inner.raft.metrics()
    }

    /// Stops this member's Raft and waits until it has stopped. Other clones of the handle
    /// then answer `Fatal`; requests from other members get an error reply.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(member = self.id(), error = %e, "raft task ended abnormally");
        }
    }

    fn member_name(&self, id: MemberId) -> Option<String> {
        let metrics = self.inner.raft.server_metrics();
        let metrics = metrics.borrow();
        let node = metrics.membership_config.membership().get_node(&id)?;
        Some(node.addr.clone())
    }

    fn leader_of(&self, f: ForwardToLeader<MemberId, BasicNode>) -> Option<(MemberId, String)> {
        let id = f.leader_id?;
        match f.leader_node {
            Some(node) => Some((id, node.addr)),
            None => Some((id, self.member_name(id)?)),
        }
    }

    fn membership_error(
        &self,
        e: RaftError<MemberId, ClientWriteError<MemberId, BasicNode>>,
    ) -> MembershipError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                MembershipError::ForwardToLeader {
                    leader: self.leader_of(f),
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
                ChangeMembershipError::InProgress(_) => MembershipError::ChangeInProgress,
                ChangeMembershipError::EmptyMembership(_) => MembershipError::WouldEmptyGroup,
                ChangeMembershipError::LearnerNotFound(l) => {
                    MembershipError::NotALearner { id: l.node_id }
                }
            },
            RaftError::Fatal(f) => MembershipError::Fatal {
                reason: f.to_string(),
            },
        }
    }
}

/// The member a request claims to come from: the leader, or the candidate.
fn sent_by(rpc: &RaftRpc) -> Option<MemberId> {
    let vote = match rpc {
        RaftRpc::AppendEntries(r) => &r.vote,
        RaftRpc::Vote(r) => &r.vote,
        RaftRpc::InstallSnapshot(r) => &r.vote,
    };
    vote.leader_id().voted_for()
}

/// Runs `work` for at most `budget`; `Err(())` if the budget ran out first.
async fn within_budget<T>(budget: Duration, work: impl Future<Output = T>) -> Result<T, ()> {
    tokio::time::timeout(budget, work).await.map_err(|_| ())
}

/// Follows openraft's server metrics (which change only with role, leader, vote or
/// membership) and publishes the [`Leadership`] part when it changes. The task ends when the
/// member's Raft has stopped (the leadership then says `Stopped`) or when no one watches.
fn watch_leadership(
    mut server: watch::Receiver<RaftServerMetrics<MemberId, BasicNode>>,
) -> watch::Receiver<Leadership> {
    let initial = Leadership::of(&server.borrow_and_update());
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = server.changed() => {
                    if changed.is_err() {
                        tx.send_modify(|l| {
                            l.leader = None;
                            l.role = MemberRole::Stopped;
                        });
                        break;
                    }
                    let now = Leadership::of(&server.borrow_and_update());
                    tx.send_if_modified(|current| {
                        let differs = *current != now;
                        if differs {
                            *current = now;
                        }
                        differs
                    });
                }
                () = tx.closed() => break,
            }
        }
    });
    rx
}

/// Whether `answer` refused a candidate whose last log entry was `candidate_log` because the
/// voter's own log is further (so the voter, not the candidate, could win an election).
fn refused_for_a_shorter_log(
    answer: &VoteResponse<MemberId>,
    candidate_log: Option<LogId<MemberId>>,
) -> bool {
    !answer.vote_granted && answer.last_log_id > candidate_log
}
