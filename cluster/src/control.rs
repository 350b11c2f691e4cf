//! The control plane of a group: its nodes run Raft ([`crate::raft`]) over a control log of
//! [`ControlEntry`]s, every node applies the committed log to its own [`GroupTable`], and the
//! group manager runs on the Raft leader and moves with leadership.
//!
//! ```text
//!  LocalManager ─ ControlLink ─► (the leader's node) ControlPlane ─ batch, stamp ─► propose
//!                                                                                     │
//!  every node: committed entry ─► TableApplier ─► GroupTable::apply ─► names ─► Registry
//!                                                         └─► (leader only) carry out:
//!                                                             commands and names ─► nodes
//! ```
//!
//! - Every decision the manager takes is applied from the committed log, so a new manager
//!   (a new leader) holds exactly the table its predecessor held, never a memory of its own.
//!   It confirms its leadership first, then proposes [`GroupInput::Resume`]: every lease
//!   counts a whole lease again from then, and starts nobody confirmed are asked for again.
//! - Only the confirmed leader carries commands out; every node publishes the names in its own
//!   name table, so any node resolves any unit from its copy of the committed bindings. The
//!   leader also sends each entry's name changes to every node as it applies the entry (it
//!   learns of the commit first), so a new binding reaches callers without waiting for their
//!   node's Raft to learn the commit.
//! - Node liveness (heartbeats from every node's local manager) is watched by the leader only;
//!   a node that misses its heartbeats is proposed down, one that speaks again (or as a new
//!   incarnation) is proposed up.
//! - Raft membership follows the nodes: the leader adds every node it hears from as a voter
//!   (one member id per start of a node's process) and removes a member once a newer
//!   incarnation of its node is a voter.

use crate::raft::{Applier, MemberRole, RaftGroup};
use crate::wire::{endpoint_of, every_endpoint, RemoteManager, RemoteNode};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use understudy_actors::clock::{self, Ticker};
use understudy_actors::codec::{decode, encode};
use understudy_actors::envelope::ManagerCast;
use understudy_actors::group_manager::{
    apply_names, carry_out, hear, node_of, status, GroupManagerConfig,
};
use understudy_actors::{
    Directory, GroupManagerMsg, LinkError, ManagerLink, Registry, UnitClient, UnitStatus,
};
use understudy_runtime::global::{CopyFailure, NodeLoss, SlowThread};
use understudy_runtime::{
    ControlEntry, ControlInput, GroupInput, GroupTable, ManagerSession, NodeName, Time, UnitName,
};
use understudy_runtime::{GlobalDecision, GlobalManager, GlobalRequest, GlobalResponse};

/// A node's copy of its group's table, shared by the Raft state machine that applies the log
/// and the control plane actor that reads it.
pub type SharedTable = Arc<Mutex<GroupTable>>;

fn lock(table: &SharedTable) -> MutexGuard<'_, GroupTable> {
    // The table is only changed by `GroupTable::apply`, which leaves it whole; a panic
    // elsewhere while holding the lock does not make it inconsistent.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this node carries the manager's commands out (it is the confirmed leader).
pub type Executing = Arc<AtomicBool>;

/// The Raft state machine of a node: applies committed control entries to the node's table,
/// publishes name changes in the node's name table, and, on the confirmed leader, carries the
/// other commands out.
#[derive(Debug)]
pub struct TableApplier {
    table: SharedTable,
    registry: Registry,
    directory: Directory,
    executing: Executing,
}

impl TableApplier {
    /// An applier over `table`, publishing names in `registry`, sending through `directory`
    /// while `executing` is set.
    pub fn new(
        table: SharedTable,
        registry: Registry,
        directory: Directory,
        executing: Executing,
    ) -> Self {
        TableApplier {
            table,
            registry,
            directory,
            executing,
        }
    }
}

/// What applying an entry answered: `Ok`, or why the entry was not used.
#[derive(Debug, Serialize, Deserialize)]
enum Applied {
    Ok,
    Unreadable(String),
}

impl Applier for TableApplier {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let applied = match decode::<ControlEntry>("control entry", command) {
            Err(e) => {
                // Every member skips it alike, so the tables stay equal.
                tracing::error!(index, error = %e, "skipped an unreadable control entry");
                Applied::Unreadable(e.to_string())
            }
            Ok(entry) => {
                let mut table = lock(&self.table);
                tracing::trace!(index, ?entry, "applying a control entry");
                let commands = table.apply(entry);
                tracing::trace!(index, ?commands, "the entry's commands");
                apply_names(&self.registry, &commands);
                if self.executing.load(Ordering::SeqCst) {
                    // The leader applies a committed entry first; the other members learn
                    // that it is committed with the next message of the Raft, milliseconds
                    // later on a busy host. Its name changes go to every node at once.
                    carry_out(&self.directory, table.core(), commands);
                }
                Applied::Ok
            }
        };
        encode("applied", &applied).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        let table = lock(&self.table);
        match rmp_serde::to_vec_named(&*table) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Restoring an empty snapshot fails loudly on the member that receives it.
                tracing::error!(error = %e, "cannot encode the group table for a snapshot");
                Vec::new()
            }
        }
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let restored: GroupTable = rmp_serde::from_slice(snapshot)
            .map_err(|e| format!("the group table in the snapshot is unreadable: {e}"))?;
        apply_names(&self.registry, &restored.name_commands());
        *lock(&self.table) = restored;
        Ok(())
    }
}

/// Messages to a node's [`ControlPlane`].
#[derive(Debug)]
pub enum ControlMsg {
    /// What a group manager takes: casts from local managers and copies, operator requests,
    /// status queries.
    Manager(GroupManagerMsg),
    /// An operator request for the group manager; answered with an error naming the manager's
    /// node if this node is not it.
    Operate(GroupInput, RpcReplyPort<Result<(), String>>),
    /// This node's view of the group, for its status.
    View(RpcReplyPort<ControlView>),
    /// Leadership changed (from the Raft member's watch).
    Leadership,
    /// The leadership of `term` was confirmed by a majority, or not.
    Confirmed {
        /// The term confirmed.
        term: u64,
        /// Whether it was.
        ok: bool,
    },
    /// The entry in flight committed, or not.
    Proposed(Result<(), String>),
    /// A membership change ended.
    MembershipChanged(Result<(), String>),
    /// The global manager decided something about this group (an answer to its report).
    Decided(GlobalDecision),
    /// Node `node`'s process ended: its session closed and its port refuses connections
    /// ([`crate::departure`]). The manager counts it down at once; if it led the group's
    /// Raft, the members that saw it go campaign at once.
    PeerGone(NodeName),
}

impl ractor::Message for ControlMsg {}

/// A node's view of one group's control plane (its own group's, or another's it follows as a
/// learner).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlView {
    /// The group.
    pub group: String,
    /// This node's Raft member id (its incarnation).
    pub member: u64,
    /// Its Raft role: `leader`, `follower`, `candidate`, `learner` or `stopped`.
    pub role: String,
    /// The Raft term it knows.
    pub term: u64,
    /// The node of the Raft leader, if known.
    pub leader: Option<NodeName>,
    /// Whether the group manager runs here now (this node leads and confirmed it).
    pub runs_group_manager: bool,
    /// The group's voters (node names), by this node's latest membership; empty before the
    /// node joined a group.
    pub voters: Vec<NodeName>,
    /// The voters' Raft member ids (their nodes' incarnations), in the order of `voters`: an
    /// earlier start of a node that is still a voter shows here as an id no running node has.
    #[serde(default)]
    pub voter_members: Vec<u64>,
    /// The nodes the group's table counts as up (alive, by the manager's heartbeats).
    pub nodes_up: Vec<NodeName>,
    /// Every unit by this node's copy of the committed table.
    pub units: Vec<UnitStatus>,
    /// The group's units' replication strategies.
    pub strategies: BTreeMap<UnitName, String>,
    /// Entries this node's table has applied.
    pub applied: u64,
    /// How many times the group manager, while it ran on this node, declared a node lost for
    /// missed heartbeats, since this node started (0 where it never ran here).
    #[serde(default)]
    pub nodes_lost: u64,
    /// The nodes the group's table excludes from placement (the global manager found them
    /// failing again and again), each with why; an operator readmits them.
    #[serde(default)]
    pub excluded: BTreeMap<NodeName, String>,
}

/// What a node's control plane starts with.
#[derive(Clone, Debug)]
pub struct ControlArgs {
    /// The group.
    pub group: String,
    /// This node.
    pub node: NodeName,
    /// This node's Raft member.
    pub raft: RaftGroup,
    /// This node's copy of the table.
    pub table: SharedTable,
    /// Set while this node carries out the manager's commands.
    pub executing: Executing,
    /// Tuning of the manager.
    pub config: GroupManagerConfig,
    /// The group's units, placed at cold start.
    pub units: Vec<UnitName>,
    /// Their replication strategies.
    pub strategies: BTreeMap<UnitName, String>,
    /// Place them once this many nodes are up.
    pub expect: usize,
    /// How the manager reports to the global manager.
    pub global: GlobalReports,
}

/// A group manager's line to the global manager, a unit like any other
/// ([`understudy_runtime::global`]): each copy that ended inside its handler and each node
/// declared lost is reported, and the decisions that come back are proposed in the group's
/// log.
#[derive(Clone, Debug)]
pub struct GlobalReports {
    client: UnitClient<GlobalManager>,
}

impl GlobalReports {
    /// Reports through this node's name table and links.
    pub fn new(registry: Registry, directory: Directory) -> Self {
        let name = UnitName::new(understudy_runtime::GLOBAL_UNIT);
        GlobalReports {
            client: UnitClient::new(GlobalManager::default(), name, registry, directory),
        }
    }

    /// Reports that `group` declared `node` lost — the incarnation `table` records for it —
    /// seen `how`, now (on this node's wall clock: the global manager compares the times of
    /// losses reported by different managers).
    fn node_lost(
        &self,
        control: &ActorRef<ControlMsg>,
        group: &str,
        table: &GroupTable,
        node: &NodeName,
        how: &str,
    ) {
        let Some(incarnation) = table.incarnation(node) else {
            return;
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let loss = NodeLoss {
            group: group.to_string(),
            node: node.clone(),
            incarnation,
            at_ms,
            how: how.to_string(),
        };
        self.send(control, GlobalRequest::NodeLost(loss));
    }

    /// Sends `request` in a task of its own; each decision in the answer comes back to
    /// `control` as [`ControlMsg::Decided`]. The manager goes on meanwhile: a global manager
    /// that is taking over answers within its budget, or the report is dropped with a warning.
    fn send(&self, control: &ActorRef<ControlMsg>, request: GlobalRequest) {
        let client = self.client.clone();
        let control = control.clone();
        tokio::spawn(async move {
            match client.call(request).await {
                Ok(GlobalResponse::Decisions(decisions)) => {
                    for decision in decisions {
                        let _ = control.cast(ControlMsg::Decided(decision));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the global manager did not take a report");
                }
            }
        });
    }
}

/// One group's control plane on a node: the actor and the Raft member.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    /// The group.
    pub group: String,
    /// The node's control plane for it.
    pub control: ActorRef<ControlMsg>,
    /// The node's Raft member of it.
    pub raft: RaftGroup,
}

/// The actor that runs the group manager while this node leads its group's Raft, and
/// otherwise only answers for this node's view.
#[derive(Debug, Default)]
pub struct ControlPlane;

/// The manager's state while this node leads (confirmed).
#[derive(Debug)]
struct Leading {
    term: u64,
    /// What to propose: the pure part of the manager's session.
    session: ManagerSession,
    membership_busy: bool,
    last_membership_check: Time,
    last_learner_check: Time,
}

/// A control plane's state.
#[derive(Debug)]
pub struct ControlState {
    args: ControlArgs,
    leading: Option<Leading>,
    confirming: bool,
    in_flight: bool,
    last_proposed: Time,
    /// Nodes whose process ended lately, with the incarnation the table recorded for each
    /// then: a manager that takes over soon after (it may be taking over from one of them)
    /// counts them down at once too.
    departed: BTreeMap<NodeName, (u64, Time)>,
    /// Nodes declared lost for missed heartbeats by the manager's earlier sessions here.
    nodes_lost_before: u64,
    _ticker: Ticker,
    _watch: tokio::task::JoinHandle<()>,
}

impl Drop for ControlState {
    fn drop(&mut self) {
        self._watch.abort();
    }
}

/// How long the leader lets pass without an entry: each entry ticks the table.
const IDLE_ENTRY: Duration = Duration::from_millis(20);
/// How often the leader compares Raft membership with the nodes it hears.
const MEMBERSHIP_CHECK: Duration = Duration::from_millis(200);
/// How long a node's departure is remembered for a manager that takes over.
const REMEMBER_DEPARTED: Duration = Duration::from_secs(5);
/// While the group has no leader after its leader's process ended, how often the member next
/// in line starts another election (one that a member still inside the gone leader's lease
/// refused), and how many times.
const CAMPAIGN_AGAIN: Duration = Duration::from_millis(5);
const CAMPAIGNS: u32 = 20;

/// How often the leader looks for nodes of other groups to follow its table as learners.
const LEARNER_CHECK: Duration = Duration::from_secs(1);

impl Actor for ControlPlane {
    type Msg = ControlMsg;
    type State = ControlState;
    type Arguments = ControlArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ControlMsg>,
        args: ControlArgs,
    ) -> Result<ControlState, ActorProcessingErr> {
        let ticker = Ticker::start(&myself, args.config.tick, || {
            ControlMsg::Manager(GroupManagerMsg::Tick)
        });
        let mut leadership = args.raft.leadership();
        let me = myself.clone();
        let watch = tokio::spawn(async move {
            while leadership.changed().await.is_ok() {
                if me.cast(ControlMsg::Leadership).is_err() {
                    break;
                }
            }
        });
        let _ = myself.cast(ControlMsg::Leadership);
        Ok(ControlState {
            args,
            leading: None,
            confirming: false,
            in_flight: false,
            last_proposed: Time::ZERO,
            departed: BTreeMap::new(),
            nodes_lost_before: 0,
            _ticker: ticker,
            _watch: watch,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ControlMsg>,
        msg: ControlMsg,
        state: &mut ControlState,
    ) -> Result<(), ActorProcessingErr> {
        let now = clock::now();
        match msg {
            ControlMsg::Manager(GroupManagerMsg::Cast(cast)) => state.heard(&myself, now, cast),
            ControlMsg::Decided(GlobalDecision::Quarantine { unit, reason }) => {
                if state.leading.is_some() {
                    tracing::error!(%unit, %reason, "the global manager quarantines the unit: its callers are refused until an operator releases it");
                }
                state.input(GroupInput::Quarantine { unit, reason });
            }
            ControlMsg::Decided(GlobalDecision::Exclude { node, reason }) => {
                if state.leading.is_some() {
                    tracing::error!(%node, %reason, "the global manager excludes the node from placement: its copies move away, and none go there until an operator readmits it");
                }
                state.input(GroupInput::Exclude { node, reason });
            }
            ControlMsg::Manager(GroupManagerMsg::AddUnit { unit }) => {
                state.input(GroupInput::AddUnit { unit });
            }
            ControlMsg::Manager(GroupManagerMsg::Switchover { unit }) => {
                state.input(GroupInput::Switchover { unit });
            }
            ControlMsg::Manager(GroupManagerMsg::Drain { node }) => {
                state.input(GroupInput::Drain { node });
            }
            ControlMsg::Manager(GroupManagerMsg::Restore { unit }) => {
                state.input(GroupInput::Restore { unit });
            }
            ControlMsg::Manager(GroupManagerMsg::Tick) => state.tick(&myself, now),
            ControlMsg::Manager(GroupManagerMsg::Status(reply)) => {
                let _ = reply.send(status(lock(&state.args.table).core()));
            }
            ControlMsg::Manager(GroupManagerMsg::Members(reply)) => {
                let _ = reply.send(lock(&state.args.table).core().nodes_up());
            }
            ControlMsg::Operate(input, reply) => {
                let answer = if state.leading.is_some() {
                    // The global manager forgets the unit's failures, or the node's losses: it
                    // is judged afresh.
                    let forget = match &input {
                        GroupInput::Release { unit } => {
                            Some(GlobalRequest::Released { unit: unit.clone() })
                        }
                        GroupInput::Readmit { node } => {
                            Some(GlobalRequest::Readmitted { node: node.clone() })
                        }
                        _ => None,
                    };
                    if let Some(forget) = forget {
                        state.args.global.send(&myself, forget);
                    }
                    state.input(input);
                    Ok(())
                } else {
                    Err(state.not_the_manager())
                };
                let _ = reply.send(answer);
            }
            ControlMsg::View(reply) => {
                let _ = reply.send(state.view());
            }
            ControlMsg::Leadership => state.leadership_changed(&myself),
            ControlMsg::Confirmed { term, ok } => {
                state.confirming = false;
                state.confirmed(&myself, now, term, ok);
            }
            ControlMsg::Proposed(result) => {
                state.in_flight = false;
                if let Err(e) = result {
                    tracing::warn!(node = %state.args.node, error = %e, "a control entry did not commit; its inputs are lost (their senders repeat what matters)");
                }
            }
            ControlMsg::PeerGone(node) => state.peer_gone(&myself, now, node),
            ControlMsg::MembershipChanged(result) => {
                if let Some(l) = state.leading.as_mut() {
                    l.membership_busy = false;
                }
                if let Err(e) = result {
                    tracing::info!(node = %state.args.node, error = %e, "a membership change did not complete; will retry");
                }
            }
        }
        state.flush(&myself, now);
        Ok(())
    }
}

impl ControlState {
    fn input(&mut self, input: GroupInput) {
        if let Some(leading) = self.leading.as_mut() {
            leading.session.propose(ControlInput::Core(input));
        }
    }

    fn not_the_manager(&self) -> String {
        match self.args.raft.leader_member() {
            Some((_, leader)) => format!(
                "node {} does not run the group manager; node {leader} does (see status)",
                self.args.node
            ),
            None => format!(
                "node {} does not run the group manager, and no leader is known yet; retry",
                self.args.node
            ),
        }
    }

    /// Node `node`'s process ended (see [`ControlMsg::PeerGone`]). The manager counts it
    /// down; another member tells the manager so (its own probe may not conclude: a busy
    /// node's probe can time out) and, if the node led the group's Raft, campaigns.
    fn peer_gone(&mut self, myself: &ActorRef<ControlMsg>, now: Time, node: NodeName) {
        let incarnation = lock(&self.args.table).incarnation(&node);
        let Some(incarnation) = incarnation else {
            return;
        };
        if self.leading.is_some() {
            self.count_gone(myself, now, node, incarnation);
            return;
        }
        self.remember_departed(now, &node, incarnation);
        let home = ControlHandle {
            group: self.args.group.clone(),
            control: myself.clone(),
            raft: self.args.raft.clone(),
        };
        let told = ControlLink::new(self.args.node.clone(), home).send(GroupManagerMsg::Cast(
            ManagerCast::NodeGone {
                node: node.clone(),
                incarnation,
            },
        ));
        if let Err(e) = told {
            tracing::debug!(%node, error = %e, "cannot tell the group manager that a node's process ended");
        }
        let raft = self.args.raft.clone();
        if raft
            .leader_member()
            .is_none_or(|(_, leader)| leader != node.0)
        {
            return;
        }
        // The leader is gone. Every member that saw it campaigns once, which also ends its
        // own respect of the gone leader's lease; the first in line by name campaigns again
        // until a leader is known, so that a split first round does not wait out a timeout.
        let members = raft.members();
        let first_in_line = members
            .voters
            .values()
            .filter(|name| **name != node.0)
            .min()
            .is_some_and(|name| *name == self.args.node.0);
        tracing::warn!(%node, first_in_line, "the group's leader's process ended: campaigning at once");
        tokio::spawn(async move {
            raft.campaign().await;
            if !first_in_line {
                return;
            }
            for _ in 0..CAMPAIGNS {
                tokio::time::sleep(CAMPAIGN_AGAIN).await;
                if raft
                    .leader_member()
                    .is_some_and(|(_, leader)| leader != node.0)
                {
                    return;
                }
                raft.campaign().await;
            }
        });
    }

    /// Start `incarnation` of node `node` ended: remembered for a manager elected within
    /// [`REMEMBER_DEPARTED`], which counts it down at once too.
    fn remember_departed(&mut self, now: Time, node: &NodeName, incarnation: u64) {
        self.departed
            .retain(|_, (_, at)| now.since(*at) < REMEMBER_DEPARTED);
        self.departed.insert(node.clone(), (incarnation, now));
    }

    /// Start `incarnation` of node `node` ended, seen by this node's probe or another
    /// member's: remembered, and on the manager counted down at once and reported to the
    /// global manager when its session proposes it (the first proof of a start it records,
    /// see [`ManagerSession::node_gone`]).
    fn count_gone(
        &mut self,
        myself: &ActorRef<ControlMsg>,
        now: Time,
        node: NodeName,
        incarnation: u64,
    ) {
        self.remember_departed(now, &node, incarnation);
        let table = lock(&self.args.table);
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        if leading.session.node_gone(&table, &node, incarnation) {
            tracing::warn!(%node, "the node's process ended: counted down at once");
            let group = &self.args.group;
            let how = "its process ended";
            self.args
                .global
                .node_lost(myself, group, &table, &node, how);
        }
    }

    /// A cast from a local manager or a copy.
    fn heard(&mut self, myself: &ActorRef<ControlMsg>, now: Time, cast: ManagerCast) {
        if let ManagerCast::NodeGone { node, incarnation } = cast {
            // Remembered even here if this node no longer leads: it may lead again.
            self.count_gone(myself, now, node, incarnation);
            return;
        }
        let Some(leading) = self.leading.as_mut() else {
            tracing::trace!(node = %self.args.node, ?cast, "not the group manager; dropped");
            return;
        };
        let table = lock(&self.args.table);
        if let ManagerCast::CopyDown {
            unit,
            copy,
            during: Some(during),
            why,
            ..
        } = &cast
        {
            let node = node_of(table.core(), unit, *copy);
            let failure = CopyFailure {
                group: self.args.group.clone(),
                unit: unit.clone(),
                copy: *copy,
                node: node.unwrap_or_else(|| NodeName::new("?")),
                during: *during,
                why: why.clone(),
            };
            self.args
                .global
                .send(myself, GlobalRequest::CopyFailed(failure));
        }
        if let ManagerCast::SlowThread(thread) = cast {
            let thread = SlowThread {
                group: self.args.group.clone(),
                ..*thread
            };
            tracing::warn!(group = %thread.group, "{}", thread.describe());
            self.args
                .global
                .send(myself, GlobalRequest::SlowThread(thread));
            return;
        }
        hear(&mut leading.session, &table, now, cast);
    }

    fn tick(&mut self, myself: &ActorRef<ControlMsg>, now: Time) {
        if self.leading.is_none() {
            if self.args.raft.is_leader() && !self.confirming {
                self.confirm(myself);
            }
            return;
        }
        let table = lock(&self.args.table);
        let mut check_membership = false;
        let mut check_learners = false;
        if let Some(leading) = self.leading.as_mut() {
            let down = leading
                .session
                .tick(&table, now, &self.args.units, self.args.expect);
            for node in down {
                tracing::warn!(%node, "node missed its heartbeats");
                let group = &self.args.group;
                let how = "it missed its heartbeats";
                self.args
                    .global
                    .node_lost(myself, group, &table, &node, how);
            }
            if !leading.membership_busy
                && now.since(leading.last_membership_check) >= MEMBERSHIP_CHECK
            {
                leading.last_membership_check = now;
                check_membership = true;
            } else if !leading.membership_busy
                && now.since(leading.last_learner_check) >= LEARNER_CHECK
            {
                leading.last_learner_check = now;
                check_learners = true;
            }
        }
        drop(table);
        if check_membership {
            self.grow_membership(myself);
        }
        if check_learners {
            self.follow_learners(myself);
        }
    }

    /// Adds a node of another group as a learner of this group (so that it holds this group's
    /// table and resolves its units), or removes a learner that an earlier start of such a
    /// node left: one change at a time.
    fn follow_learners(&mut self, myself: &ActorRef<ControlMsg>) {
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        leading.membership_busy = true;
        let raft = self.args.raft.clone();
        let group = self.args.group.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = follow_one_learner(&raft, &group).await;
            let _ = me.cast(ControlMsg::MembershipChanged(result));
        });
    }

    /// Removes a member whose node runs as a newer incarnation (that earlier start is gone:
    /// one name runs one process), or adds a node heard from that is no voter yet: one change
    /// at a time, the removal first. Removing the gone member before adding its successor keeps
    /// every step's quorums among the nodes that run: added first, the successor's own loss
    /// during the change would leave neither the old voters (the gone member counted) nor the
    /// new ones a majority, and the group would stay leaderless for good.
    fn grow_membership(&mut self, myself: &ActorRef<ControlMsg>) {
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        let members = self.args.raft.members();
        let stale = members
            .voters
            .iter()
            .chain(members.learners.iter())
            .find(|(id, name)| {
                let current = leading
                    .session
                    .heard_incarnation(&NodeName::new(name.as_str()));
                // A group's only voter stays until its successor joins (a group needs one).
                let leaves_a_voter = members.voters.len() > 1 || !members.voters.contains_key(id);
                current.is_some_and(|inc| inc != **id) && leaves_a_voter
            })
            .map(|(id, name)| (*id, name.clone()));
        let change = if let Some((id, name)) = stale {
            tracing::info!(node = %name, member = id, "removing an earlier start of the node from the group's Raft");
            let raft = self.args.raft.clone();
            Some(tokio::spawn(async move {
                raft.remove_member(id).await.map_err(|e| e.to_string())
            }))
        } else {
            let to_add = leading
                .session
                .live_nodes()
                .find(|(_, inc)| !members.voters.contains_key(inc));
            to_add.map(|(node, inc)| {
                let node = node.clone();
                tracing::info!(%node, member = inc, "adding the node to the group's Raft");
                let raft = self.args.raft.clone();
                tokio::spawn(
                    async move { raft.add_voter(inc, node.0).await.map_err(|e| e.to_string()) },
                )
            })
        };
        if let Some(task) = change {
            leading.membership_busy = true;
            let me = myself.clone();
            tokio::spawn(async move {
                let result = task
                    .await
                    .unwrap_or_else(|e| Err(format!("the change's task failed: {e}")));
                let _ = me.cast(ControlMsg::MembershipChanged(result));
            });
        }
    }

    fn leadership_changed(&mut self, myself: &ActorRef<ControlMsg>) {
        let leadership = self.args.raft.leadership().borrow().clone();
        let still_leading = leadership.role == MemberRole::Leader
            && self
                .leading
                .as_ref()
                .is_some_and(|l| l.term == leadership.term);
        if still_leading {
            return;
        }
        if let Some(ended) = self.leading.take() {
            self.nodes_lost_before += ended.session.nodes_declared_lost();
            tracing::info!(node = %self.args.node, term = leadership.term, "no longer the group manager");
            self.args.executing.store(false, Ordering::SeqCst);
        }
        if leadership.role == MemberRole::Leader && !self.confirming {
            self.confirm(myself);
        }
    }

    fn confirm(&mut self, myself: &ActorRef<ControlMsg>) {
        let term = self.args.raft.leadership().borrow().term;
        self.confirming = true;
        let raft = self.args.raft.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let ok = raft.confirm_leader().await.is_ok();
            let _ = me.cast(ControlMsg::Confirmed { term, ok });
        });
    }

    /// Leadership of `term` confirmed: this node's table holds everything committed before,
    /// so the manager starts from it.
    fn confirmed(&mut self, myself: &ActorRef<ControlMsg>, now: Time, term: u64, ok: bool) {
        let leadership = self.args.raft.leadership().borrow().clone();
        if leadership.role != MemberRole::Leader || leadership.term != term {
            self.leadership_changed(myself);
            return;
        }
        if !ok {
            // Retried at the next tick.
            return;
        }
        let session = ManagerSession::start(
            &lock(&self.args.table),
            self.args.config.node_heartbeat,
            now,
        );
        tracing::info!(node = %self.args.node, term, "now the group manager");
        let mut session = session;
        {
            let table = lock(&self.args.table);
            for (node, (incarnation, at)) in &self.departed {
                if now.since(*at) < REMEMBER_DEPARTED
                    && session.node_gone(&table, node, *incarnation)
                {
                    tracing::warn!(%node, "a node whose process ended lately: counted down at once");
                }
            }
        }
        self.leading = Some(Leading {
            term,
            session,
            membership_busy: false,
            last_membership_check: now,
            last_learner_check: now,
        });
        self.args.executing.store(true, Ordering::SeqCst);
    }

    /// Proposes what is pending (or an empty entry, to tick, when the log has been idle), one
    /// entry in flight at a time: what arrives meanwhile goes into the next one.
    fn flush(&mut self, myself: &ActorRef<ControlMsg>, now: Time) {
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        if self.in_flight
            || (!leading.session.has_pending() && now.since(self.last_proposed) < IDLE_ENTRY)
        {
            return;
        }
        let entry = leading.session.next_entry(clock::wall_now());
        let bytes = match encode("control entry", &entry) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a control entry; its inputs are dropped");
                return;
            }
        };
        self.in_flight = true;
        self.last_proposed = now;
        let raft = self.args.raft.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = raft
                .propose(bytes)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = me.cast(ControlMsg::Proposed(result));
        });
    }

    fn view(&self) -> ControlView {
        let leadership = self.args.raft.leadership().borrow().clone();
        let role = match leadership.role {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Candidate => "candidate",
            MemberRole::Learner => "learner",
            MemberRole::Stopped => "stopped",
        };
        let table = lock(&self.args.table);
        let voters = self.args.raft.members().voters;
        ControlView {
            group: self.args.group.clone(),
            member: self.args.raft.id(),
            role: role.to_string(),
            term: leadership.term,
            leader: self
                .args
                .raft
                .leader_member()
                .map(|(_, name)| NodeName::new(name.as_str())),
            runs_group_manager: self.leading.is_some(),
            voters: voters.values().map(|n| NodeName::new(n.as_str())).collect(),
            voter_members: voters.keys().copied().collect(),
            nodes_up: table.core().nodes_up(),
            excluded: table.core().excluded().clone(),
            units: status(table.core()),
            strategies: self.args.strategies.clone(),
            applied: table.entries(),
            nodes_lost: self.nodes_lost_before
                + self
                    .leading
                    .as_ref()
                    .map_or(0, |l| l.session.nodes_declared_lost()),
        }
    }
}

/// One step of [`ControlState::follow_learners`].
async fn follow_one_learner(raft: &RaftGroup, group: &str) -> Result<(), String> {
    let members = raft.members();
    for (node, endpoint) in every_endpoint() {
        let Some(status) = crate::wire::ask_status(&node, &endpoint).await else {
            continue;
        };
        if status.group == group {
            continue;
        }
        let Some(view) = status.others.iter().find(|v| v.group == group) else {
            continue;
        };
        let known = members.voters.contains_key(&view.member)
            || members.learners.contains_key(&view.member);
        if !known {
            tracing::info!(%node, %group, member = view.member, "adding a node of another group as a learner");
            return raft
                .add_learner(view.member, node.0.clone())
                .await
                .map_err(|e| e.to_string());
        }
        let stale = members
            .learners
            .iter()
            .find(|(id, name)| **name == node.0 && **id != view.member);
        if let Some((id, _)) = stale {
            return raft.remove_member(*id).await.map_err(|e| e.to_string());
        }
    }
    Ok(())
}

/// A local manager's link to its group's manager, wherever it runs: this node's control plane
/// while this node leads, the leader's node otherwise, and every node while no leader is
/// known (a node not yet in the group's Raft; all but the manager drop it).
#[derive(Debug)]
pub struct ControlLink {
    node: NodeName,
    home: ControlHandle,
}

impl ControlLink {
    /// The link of node `node` to the manager of its group (`home`: its control plane and
    /// Raft member of that group).
    pub fn new(node: NodeName, home: ControlHandle) -> Self {
        ControlLink { node, home }
    }

    fn local(&self, msg: GroupManagerMsg) -> Result<(), LinkError> {
        self.home
            .control
            .cast(ControlMsg::Manager(msg))
            .map_err(|e| LinkError::Gone(e.to_string()))
    }
}

impl ManagerLink for ControlLink {
    fn send(&self, msg: GroupManagerMsg) -> Result<(), LinkError> {
        let raft = &self.home.raft;
        if raft.is_leader() {
            return self.local(msg);
        }
        let GroupManagerMsg::Cast(cast) = msg else {
            return self.local(msg);
        };
        let group = &self.home.group;
        if let Some((_, leader)) = raft.leader_member() {
            let leader = NodeName::new(leader.as_str());
            if leader == self.node {
                return self.local(GroupManagerMsg::Cast(cast));
            }
            let endpoint =
                endpoint_of(&leader).ok_or_else(|| LinkError::NoRoute(leader.clone()))?;
            return RemoteManager::new(RemoteNode::new(leader, endpoint), group.clone())
                .send(GroupManagerMsg::Cast(cast));
        }
        for (node, endpoint) in every_endpoint() {
            let _ = RemoteManager::new(RemoteNode::new(node, endpoint), group.clone())
                .send(GroupManagerMsg::Cast(cast.clone()));
        }
        Ok(())
    }
}

/// The seed (the node started without `--join`) founds every group, so that each group is
/// founded once, by one decision: its own group once `expect` of its nodes (itself included)
/// are connected, with all of them as voters; every other group as soon as some of its nodes
/// are connected, with those as voters (the group's leader adds the rest as they come). A
/// group is founded only if none of its connected nodes is in its Raft already: a seed that
/// starts again finds its groups running and founds nothing. The task ends once every group
/// of the cluster has been seen founded.
pub async fn found_groups(me: NodeName, home: ControlHandle, groups: Vec<String>, expect: usize) {
    let mut founded: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    while founded.len() < groups.len() {
        every.tick().await;
        let mut statuses = Vec::new();
        for (node, endpoint) in every_endpoint() {
            if let Some(status) = crate::wire::ask_status(&node, &endpoint).await {
                statuses.push((node, status));
            }
        }
        for group in &groups {
            if founded.contains(group) {
                continue;
            }
            let nodes: Vec<&(NodeName, crate::wire::NodeStatus)> =
                statuses.iter().filter(|(_, s)| &s.group == group).collect();
            let exists = nodes.iter().any(|(_, s)| !s.control.voters.is_empty())
                || (*group == home.group && !home.raft.members().voters.is_empty());
            if exists {
                founded.insert(group.clone());
                continue;
            }
            let mut members: BTreeMap<u64, String> = nodes
                .iter()
                .map(|(n, s)| (s.control.member, n.0.clone()))
                .collect();
            if *group == home.group {
                members.insert(home.raft.id(), me.0.clone());
                if members.len() < expect.max(1) {
                    continue;
                }
                tracing::info!(members = ?members.values().collect::<Vec<_>>(), %group, "founding the group");
                match home.raft.initialize(members).await {
                    Ok(()) | Err(crate::raft::MembershipError::AlreadyInitialized) => {
                        founded.insert(group.clone());
                    }
                    Err(e) => tracing::warn!(error = %e, "founding the group failed; will retry"),
                }
                continue;
            }
            let Some((founder, _)) = nodes.iter().map(|(n, _)| (n, ())).min() else {
                continue;
            };
            let Some(endpoint) = endpoint_of(founder) else {
                continue;
            };
            tracing::info!(members = ?members.values().collect::<Vec<_>>(), %group, %founder, "asking a node to found its group");
            match crate::wire::ask_found(founder, &endpoint, group, members).await {
                Ok(()) => {
                    founded.insert(group.clone());
                }
                Err(e) => {
                    tracing::warn!(%group, error = %e, "founding the group failed; will retry")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Property tests of what a node decodes from its group's Raft: committed control entries
    //! ([`TableApplier::apply`]) and the table in a snapshot ([`TableApplier::restore`]).

    use super::*;
    use proptest::prelude::*;
    use understudy_runtime::GroupConfig;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn applier() -> TableApplier {
        TableApplier::new(
            Arc::new(Mutex::new(GroupTable::new(GroupConfig::default()))),
            Registry::new(),
            Directory::new(),
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn name() -> impl Strategy<Value = String> + Clone {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), "[a-z]{1,6}"]
    }

    fn input() -> impl Strategy<Value = ControlInput> {
        let node = name().prop_map(NodeName::new);
        prop_oneof![
            (node.clone(), 0..4u64)
                .prop_map(|(node, incarnation)| ControlInput::NodeRunning { node, incarnation }),
            (node.clone(), 0..4u64)
                .prop_map(|(node, incarnation)| ControlInput::NodeGone { node, incarnation }),
            proptest::collection::vec((node.clone(), 0..4u64, any::<u64>()), 0..3).prop_map(
                |clocks| ControlInput::NodeClocks {
                    clocks: clocks
                        .into_iter()
                        .map(|(node, inc, at)| (node, inc, Time(at)))
                        .collect(),
                }
            ),
            name().prop_map(|unit| ControlInput::Core(GroupInput::AddUnit {
                unit: UnitName::new(unit)
            })),
            node.clone()
                .prop_map(|node| ControlInput::Core(GroupInput::Drain { node })),
            (node.clone(), ".{0,8}").prop_map(|(node, reason)| ControlInput::Core(
                GroupInput::Exclude { node, reason }
            )),
            node.prop_map(|node| ControlInput::Core(GroupInput::Readmit { node })),
            Just(ControlInput::Core(GroupInput::Resume)),
        ]
    }

    fn entry() -> impl Strategy<Value = ControlEntry> {
        (0..1_000_000u64, proptest::collection::vec(input(), 0..5)).prop_map(|(at, inputs)| {
            ControlEntry {
                at: Time(at),
                inputs,
            }
        })
    }

    /// An applier whose table applied `entries`, encoded as the leader proposes them.
    fn applied(entries: &[ControlEntry]) -> Result<TableApplier, TestCaseError> {
        let mut applier = applier();
        for (index, entry) in entries.iter().enumerate() {
            let bytes =
                encode("control entry", entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let answer = applier.apply(index as u64 + 1, &bytes);
            prop_assert!(matches!(
                decode::<Applied>("applied", &answer),
                Ok(Applied::Ok)
            ));
        }
        Ok(applier)
    }

    /// Applying `bytes` either uses them as an entry or skips them with a clear reason,
    /// leaving the table exactly as it was.
    fn applies_or_is_skipped_changing_nothing(
        applier: &mut TableApplier,
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        let before = applier.snapshot();
        let answer = applier.apply(99, bytes);
        match decode::<Applied>("applied", &answer) {
            Ok(Applied::Ok) => {}
            Ok(Applied::Unreadable(reason)) => {
                prop_assert!(
                    reason.starts_with("malformed control entry ("),
                    "{}",
                    reason
                );
                prop_assert_eq!(
                    applier.snapshot(),
                    before,
                    "a skipped entry changed the table"
                );
            }
            Err(e) => prop_assert!(false, "the applier's answer does not decode: {}", e),
        }
        Ok(())
    }

    /// Restoring `bytes` either replaces the table or is refused with a clear reason, leaving
    /// the table exactly as it was.
    fn restores_or_is_refused_changing_nothing(
        applier: &mut TableApplier,
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        let before = applier.snapshot();
        if let Err(e) = applier.restore(bytes) {
            prop_assert!(
                e.starts_with("the group table in the snapshot is unreadable"),
                "{}",
                e
            );
            prop_assert_eq!(
                applier.snapshot(),
                before,
                "a refused snapshot changed the table"
            );
        }
        Ok(())
    }

    fn damaged(
        bytes: &[u8],
        cut: prop::sample::Index,
        at: prop::sample::Index,
        flip: u8,
    ) -> [Vec<u8>; 2] {
        understudy_actors::codec::damaged(
            bytes,
            cut.index(bytes.len()),
            at.index(bytes.len()),
            flip,
        )
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn an_unreadable_control_entry_is_skipped_with_a_clear_reason_and_changes_nothing(
            entries in proptest::collection::vec(entry(), 0..4),
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut applier = applied(&entries)?;
            applies_or_is_skipped_changing_nothing(&mut applier, &bytes)?;
        }

        #[test]
        fn a_control_entry_round_trips_and_a_damaged_one_is_used_or_skipped_cleanly(
            entries in proptest::collection::vec(entry(), 0..4),
            entry in entry(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let bytes = encode("control entry", &entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode::<ControlEntry>("control entry", &bytes), Ok(entry));
            let mut applier = applied(&entries)?;
            for bytes in damaged(&bytes, cut, at, flip) {
                applies_or_is_skipped_changing_nothing(&mut applier, &bytes)?;
            }
        }

        #[test]
        fn a_table_snapshot_round_trips_and_a_corrupt_one_is_refused_keeping_the_table(
            entries in proptest::collection::vec(entry(), 1..5),
            mine in proptest::collection::vec(entry(), 0..3),
            garbage in proptest::collection::vec(any::<u8>(), 0..128),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let snapshot = applied(&entries)?.snapshot();
            let mut target = applied(&mine)?;
            restores_or_is_refused_changing_nothing(&mut target, &garbage)?;
            for bytes in damaged(&snapshot, cut, at, flip) {
                restores_or_is_refused_changing_nothing(&mut target, &bytes)?;
            }
            target.restore(&snapshot).map_err(TestCaseError::fail)?;
            prop_assert_eq!(target.snapshot(), snapshot);
        }
    }
}
