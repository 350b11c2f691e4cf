//! The `GroupManager`: the availability manager of one group of nodes inside one process
//! (the in-process cluster). It holds the group's [`GroupTable`] and the pure
//! [`ManagerSession`] that decides what to apply, applies each entry at once, and carries the
//! commands to the nodes' local managers and name tables. Across processes the same table and
//! session run on a group's Raft leader (`understudy_cluster::control`), which applies entries
//! only once committed; [`hear`], [`carry_out`], [`dispatch`] and [`name_update`] serve both.

use crate::clock::{self, Ticker};
use crate::envelope::{ManagerCast, NodeCast};
use crate::link::Directory;
use crate::local_manager::LocalManagerMsg;
use crate::registry::{Binding, NameState, NameUpdate, QuarantineUpdate, Registry};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::time::Duration;
use understudy_runtime::group::{Phase, StandbyState};
use understudy_runtime::{
    ControlInput, CopyId, Directive, Epoch, GroupCommand, GroupConfig, GroupCore, GroupInput,
    GroupTable, Heartbeat, HeartbeatConfig, ManagerSession, NodeName, StartAs, Time, UnitName,
};

/// Messages to a `GroupManager`.
#[derive(Debug)]
pub enum GroupManagerMsg {
    /// From a node's local manager or a copy (may have crossed the network).
    Cast(ManagerCast),
    /// Place a unit (cold start).
    AddUnit {
        /// The unit.
        unit: UnitName,
    },
    /// Time passed.
    Tick,
    /// Describe every unit.
    Status(RpcReplyPort<Vec<UnitStatus>>),
    /// The nodes the manager counts as up.
    Members(RpcReplyPort<Vec<NodeName>>),
    /// The operator asks for a planned switchover of a unit (no stimulus lost).
    Switchover {
        /// The unit.
        unit: UnitName,
    },
    /// The operator drains a node: its primaries hand over, its standbys move, nothing new
    /// is placed there until it starts again.
    Drain {
        /// The node.
        node: NodeName,
    },
    /// The operator restores a unit declared unavailable: it starts again, empty.
    Restore {
        /// The unit.
        unit: UnitName,
    },
}

impl ractor::Message for GroupManagerMsg {}

/// One unit as the group manager sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitStatus {
    /// The unit.
    pub unit: UnitName,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its primary (or the copy being promoted), and node.
    pub primary: Option<(CopyId, NodeName)>,
    /// Its standby and node.
    pub standby: Option<(CopyId, NodeName)>,
    /// Whether the standby holds the state and can be promoted.
    pub standby_ready: bool,
    /// Whether the primary serves (bound, not in a takeover).
    pub serving: bool,
    /// Whether the unit is lost for good.
    pub unavailable: bool,
    /// Why the unit is quarantined (its callers are refused until it is released), if it is.
    #[serde(default)]
    pub quarantined: Option<String>,
    /// Takeovers of the unit by the table: a standby promoted because the primary was lost,
    /// not a planned switchover.
    #[serde(default)]
    pub takeovers: u64,
}

/// Tuning of a group manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupManagerConfig {
    /// Leases and retries.
    pub core: GroupConfig,
    /// Node heartbeats: how often nodes say they are alive, and how many may be missed.
    pub node_heartbeat: HeartbeatConfig,
    /// How often the core ticks.
    pub tick: Duration,
}

impl Default for GroupManagerConfig {
    fn default() -> Self {
        GroupManagerConfig {
            core: GroupConfig::default(),
            node_heartbeat: HeartbeatConfig::default(),
            tick: Duration::from_millis(10),
        }
    }
}

/// What a group manager starts with.
#[derive(Clone, Debug)]
pub struct GroupManagerArgs {
    /// How to reach the nodes.
    pub directory: Directory,
    /// Tuning.
    pub config: GroupManagerConfig,
}

/// The group manager actor.
#[derive(Debug, Default)]
pub struct GroupManager;

/// A group manager's state: the group's table, applied at once (one process, no log), and
/// the manager's session that decides what to apply.
#[derive(Debug)]
pub struct GroupManagerState {
    args: GroupManagerArgs,
    table: GroupTable,
    session: ManagerSession,
    _ticker: Ticker,
}

/// Hands what a node or a copy told the group manager to its `session` (which decides what
/// to propose from it, given the `table`). A slow thread is not the group's to decide on:
/// the cluster's control plane passes it to the global manager before.
pub fn hear(session: &mut ManagerSession, table: &GroupTable, now: Time, cast: ManagerCast) {
    match cast {
        ManagerCast::NodeUp { node, incarnation } => {
            session.node_heard(table, now, node, incarnation, None);
        }
        ManagerCast::NodeAlive {
            node,
            incarnation,
            running,
            sent_at,
        } => session.node_heard(
            table,
            now,
            node,
            incarnation,
            Some(Heartbeat {
                running,
                clock: sent_at,
            }),
        ),
        ManagerCast::CopyDown {
            unit,
            copy,
            known_dead,
            ..
        } => session.propose(ControlInput::Core(GroupInput::CopyDown {
            unit,
            copy,
            known_dead,
        })),
        ManagerCast::CopyStarted { unit, copy } => {
            session.propose(ControlInput::Core(GroupInput::CopyStarted { unit, copy }));
        }
        ManagerCast::Report(r) => session.propose(ControlInput::Core(GroupInput::Report(r))),
        ManagerCast::RenewLeases {
            node,
            incarnation,
            requested_at,
            asks,
        } => session.propose(ControlInput::RenewLeases {
            node,
            incarnation,
            requested_at,
            asks,
        }),
        ManagerCast::NodeGone { node, incarnation } => {
            session.node_gone(table, &node, incarnation);
        }
        ManagerCast::SlowThread(thread) => {
            tracing::debug!(thread = %thread.describe(), "a slow thread, not the group's to act on");
        }
    }
}

impl Actor for GroupManager {
    type Msg = GroupManagerMsg;
    type State = GroupManagerState;
    type Arguments = GroupManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GroupManagerMsg>,
        args: GroupManagerArgs,
    ) -> Result<GroupManagerState, ActorProcessingErr> {
        let ticker = Ticker::start(&myself, args.config.tick, || GroupManagerMsg::Tick);
        let table = GroupTable::new(args.config.core);
        let session = ManagerSession::start(&table, args.config.node_heartbeat, clock::now());
        Ok(GroupManagerState {
            table,
            session,
            args,
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GroupManagerMsg>,
        msg: GroupManagerMsg,
        state: &mut GroupManagerState,
    ) -> Result<(), ActorProcessingErr> {
        let now = clock::now();
        let session = &mut state.session;
        let mut tick = false;
        match msg {
            GroupManagerMsg::Cast(cast) => hear(session, &state.table, now, cast),
            GroupManagerMsg::AddUnit { unit } => {
                session.propose(ControlInput::Core(GroupInput::AddUnit { unit }));
            }
            GroupManagerMsg::Switchover { unit } => {
                session.propose(ControlInput::Core(GroupInput::Switchover { unit }));
            }
            GroupManagerMsg::Drain { node } => {
                session.propose(ControlInput::Core(GroupInput::Drain { node }));
            }
            GroupManagerMsg::Restore { unit } => {
                session.propose(ControlInput::Core(GroupInput::Restore { unit }));
            }
            GroupManagerMsg::Tick => {
                for node in session.tick(&state.table, now, &[], 0) {
                    tracing::warn!(%node, "node missed its heartbeats");
                }
                tick = true;
            }
            GroupManagerMsg::Members(reply) => {
                let _ = reply.send(state.table.core().nodes_up());
            }
            GroupManagerMsg::Status(reply) => {
                let _ = reply.send(status(state.table.core()));
            }
        }
        if tick || state.session.has_pending() {
            let commands = state.table.apply(state.session.next_entry(now));
            carry_out(&state.args.directory, state.table.core(), commands);
        }
        Ok(())
    }
}

/// Every unit as the core records it.
pub fn status(core: &GroupCore) -> Vec<UnitStatus> {
    core.units()
        .map(|(name, rec)| UnitStatus {
            unit: name.clone(),
            epoch: rec.epoch,
            primary: rec.primary.as_ref().map(|p| (p.copy, p.node.clone())),
            standby: rec.standby.as_ref().map(|(s, _)| (s.copy, s.node.clone())),
            standby_ready: matches!(rec.standby, Some((_, StandbyState::Ready))),
            serving: rec.phase == Phase::Serving && rec.bound,
            unavailable: rec.phase == Phase::Unavailable,
            quarantined: core.quarantined(name).map(str::to_string),
            takeovers: rec.takeovers,
        })
        .collect()
}

/// Carries out what applying an entry produced: copies' commands to their nodes, and name
/// changes to every node's name table (name tables take only a newer state of a name, so a
/// node that also applies the entry itself, later, changes nothing then).
pub fn carry_out(directory: &Directory, core: &GroupCore, commands: Vec<GroupCommand>) {
    let names: Vec<NameUpdate> = commands.iter().filter_map(name_update).collect();
    dispatch(directory, core, commands);
    if !names.is_empty() {
        for node in directory.nodes() {
            send(directory, &node, NodeCast::Names(names.clone()));
        }
    }
}

/// Applies the name commands among `commands` to this node's `registry`: bindings
/// ([`name_update`]) and quarantines ([`quarantine_update`]). A node applies every committed
/// entry itself; quarantines reach its callers that way (the leader sends only bindings ahead
/// of the commit, see [`carry_out`]).
pub fn apply_names(registry: &Registry, commands: &[GroupCommand]) {
    for command in commands {
        if let Some(update) = name_update(command) {
            registry.apply(update);
        } else if let Some(update) = quarantine_update(command) {
            registry.apply_quarantine(update);
        }
    }
}

/// The quarantine or release a command makes in the name tables, if it is one.
pub fn quarantine_update(command: &GroupCommand) -> Option<QuarantineUpdate> {
    match command {
        GroupCommand::Quarantine {
            unit,
            version,
            reason,
        } => Some(QuarantineUpdate {
            unit: unit.clone(),
            version: *version,
            reason: reason.clone(),
        }),
        _ => None,
    }
}

/// The change a command makes to the name tables, if it is a name command (`Bind`, `Unbind`,
/// `Unavailable`).
pub fn name_update(command: &GroupCommand) -> Option<NameUpdate> {
    match command {
        GroupCommand::Bind {
            unit,
            copy,
            node,
            epoch,
        } => Some(NameUpdate {
            unit: unit.clone(),
            state: NameState::Bound(Binding {
                node: node.clone(),
                copy: *copy,
                epoch: *epoch,
            }),
        }),
        GroupCommand::Unbind { unit, epoch } => Some(NameUpdate {
            unit: unit.clone(),
            state: NameState::Rebinding { epoch: *epoch },
        }),
        GroupCommand::Unavailable { unit, epoch } => Some(NameUpdate {
            unit: unit.clone(),
            state: NameState::Unavailable { epoch: *epoch },
        }),
        GroupCommand::Start { .. }
        | GroupCommand::Stop { .. }
        | GroupCommand::Direct { .. }
        | GroupCommand::Leases { .. }
        | GroupCommand::Quarantine { .. } => None,
    }
}

/// Carries out the core's commands for copies: starts, stops and directives go to the local
/// managers of their nodes through `directory` (with the node of the copy's peer, looked up in
/// `core`). Name commands are left to the caller (see [`name_update`]).
pub fn dispatch(directory: &Directory, core: &GroupCore, commands: Vec<GroupCommand>) {
    for command in commands {
        match command {
            GroupCommand::Start {
                node,
                unit,
                copy,
                start_as,
            } => {
                let peer_node = match start_as {
                    StartAs::Standby { primary, .. } => node_of(core, &unit, primary),
                    StartAs::Initial { .. } => None,
                };
                send(
                    directory,
                    &node,
                    NodeCast::StartCopy {
                        unit,
                        copy,
                        start_as,
                        peer_node,
                    },
                );
            }
            GroupCommand::Stop { node, unit, copy } => {
                send(directory, &node, NodeCast::StopCopy { unit, copy });
            }
            GroupCommand::Direct {
                node,
                unit,
                copy,
                directive,
            } => {
                let peer_node = match &directive {
                    Directive::AssignStandby {
                        standby: Some(s), ..
                    } => node_of(core, &unit, *s),
                    _ => None,
                };
                send(
                    directory,
                    &node,
                    NodeCast::Direct {
                        unit,
                        copy,
                        directive,
                        peer_node,
                    },
                );
            }
            GroupCommand::Leases {
                node,
                from,
                duration,
                renewals,
            } => send(
                directory,
                &node,
                NodeCast::Leases {
                    from,
                    duration,
                    renewals,
                },
            ),
            GroupCommand::Bind { .. }
            | GroupCommand::Unbind { .. }
            | GroupCommand::Unavailable { .. }
            | GroupCommand::Quarantine { .. } => {}
        }
    }
}

/// The node `core` records copy `copy` of `unit` on (its primary or its standby), if any.
pub fn node_of(core: &GroupCore, unit: &UnitName, copy: CopyId) -> Option<NodeName> {
    let rec = core.unit(unit)?;
    rec.primary
        .iter()
        .chain(rec.standby.iter().map(|(s, _)| s))
        .find(|p| p.copy == copy)
        .map(|p| p.node.clone())
}

fn send(directory: &Directory, node: &NodeName, cast: NodeCast) {
    if let Err(e) = directory.send(node, LocalManagerMsg::Cast(cast)) {
        tracing::debug!(%node, error = %e, "message to node dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_runtime::ControlEntry;

    fn table_running(node: &str, incarnation: u64) -> GroupTable {
        let mut table = GroupTable::new(GroupConfig::default());
        table.apply(ControlEntry {
            at: Time::from_millis(1),
            inputs: vec![ControlInput::NodeRunning {
                node: NodeName::new(node),
                incarnation,
            }],
        });
        table
    }

    #[test]
    fn another_members_proof_that_a_node_ended_counts_that_start_of_it_down_at_once() {
        let table = table_running("n2", 7);
        let mut session = ManagerSession::start(&table, HeartbeatConfig::default(), Time::ZERO);
        let _resume = session.next_entry(Time::ZERO);
        let gone = |incarnation| ManagerCast::NodeGone {
            node: NodeName::new("n2"),
            incarnation,
        };
        hear(&mut session, &table, Time::from_millis(2), gone(6));
        assert!(
            !session.has_pending(),
            "the end of another start of the node changes nothing"
        );
        hear(&mut session, &table, Time::from_millis(3), gone(7));
        let entry = session.next_entry(Time::from_millis(3));
        assert!(
            entry.inputs.contains(&ControlInput::NodeGone {
                node: NodeName::new("n2"),
                incarnation: 7
            }),
            "proposed gone at once: {entry:?}"
        );
    }
}
