//! The group manager's table as a replicated state machine: every member of a group's Raft
//! applies the same [`ControlEntry`]s in the same order to its own [`GroupTable`], so every
//! node holds the same table, and a group manager that takes over starts from it.
//!
//! ```text
//!  group manager (Raft leader): inputs ── stamp with its clock ──► ControlEntry ──► Raft log
//!  every member: committed ControlEntry ──► GroupTable::apply ──► GroupCommand
//!                 (names: into this node's name table; the rest: carried out by the leader)
//! ```
//!
//! [`ManagerSession`] is the leader's side: what it hears in, the inputs to propose out.
//!
//! Time is part of the entry: the table's clock is the largest stamp applied so far, so a
//! member that applies the log later, or a new leader with a clock slightly behind, decides
//! exactly as the leader did.

use crate::group::{GroupCommand, GroupConfig, GroupCore, GroupInput, LeaseAsk, Phase};
use crate::ids::{CopyId, NodeName, UnitName};
use crate::liveness::{HeartbeatConfig, Liveness};
use crate::message::Report;
use crate::pending::Pending;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entry of a group's control log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEntry {
    /// When the group manager proposed it, on its clock.
    pub at: Time,
    /// What it heard since its previous entry, in order. After them the table ticks.
    pub inputs: Vec<ControlInput>,
}

/// One input in a [`ControlEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ControlInput {
    /// An input for the group manager's core.
    Core(GroupInput),
    /// Node `node` runs as `incarnation` (one per start of its process). A new incarnation,
    /// or a node the table counts as down, starts empty ([`GroupInput::NodeUp`]); a repeat
    /// changes nothing, so the input may be proposed again safely.
    NodeRunning {
        /// The node.
        node: NodeName,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Incarnation `incarnation` of node `node` certainly stopped: its connection closed and
    /// its port refuses connections, so none of its copies runs. The table counts the node
    /// down with its copies known dead ([`GroupInput::NodeDown`] with `known_dead`: no lease
    /// to wait for), unless it already records a newer incarnation of the node or counts it
    /// down; a repeat changes nothing.
    NodeGone {
        /// The node.
        node: NodeName,
        /// The incarnation that stopped.
        incarnation: u64,
    },
    /// The nodes' own clocks at their last heartbeat the manager heard, each with the
    /// incarnation that sent it ([`GroupInput::NodeClocks`]: a promotion in this entry can
    /// grant the first lease at once). A clock of an incarnation the table does not record
    /// (another process, another clock) is left out.
    NodeClocks {
        /// Node, incarnation, and its clock when it sent the heartbeat.
        clocks: Vec<(NodeName, u64, Time)>,
    },
    /// The primaries on node `node` (running as `incarnation`) that asked for their leases,
    /// in one request ([`GroupInput::RenewLeases`], `requested_at` on that node's clock). A
    /// request of an incarnation the table does not record (another process, another clock)
    /// renews nothing.
    RenewLeases {
        /// The node.
        node: NodeName,
        /// Its incarnation.
        incarnation: u64,
        /// When it asked, on its clock.
        requested_at: Time,
        /// The primaries that asked.
        asks: Vec<LeaseAsk>,
    },
}

impl ControlInput {
    /// Whether applying this input may promote a standby at once (a copy or node counted
    /// down known dead, or a hand-over completed): an entry with one carries the nodes'
    /// clocks, so that the promotion grants its lease and binds in the same entry.
    pub fn may_promote(&self) -> bool {
        matches!(
            self,
            ControlInput::NodeGone { .. }
                | ControlInput::Core(
                    GroupInput::CopyDown { .. }
                        | GroupInput::NodeDown { .. }
                        | GroupInput::NodeInventory { .. }
                        | GroupInput::Report(Report::HandedOver { .. } | Report::Fenced { .. })
                )
        )
    }
}

/// The table every member of a group applies the control log to.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupTable {
    core: GroupCore,
    clock: Time,
    incarnations: BTreeMap<NodeName, u64>,
    entries: u64,
}

impl GroupTable {
    /// An empty table: no nodes, no units.
    pub fn new(config: GroupConfig) -> Self {
        GroupTable {
            core: GroupCore::new(config, 0),
            clock: Time::ZERO,
            incarnations: BTreeMap::new(),
            entries: 0,
        }
    }

    /// Applies one committed entry and returns the commands it produced, in order.
    pub fn apply(&mut self, entry: ControlEntry) -> Vec<GroupCommand> {
        self.clock = self.clock.max(entry.at);
        self.entries += 1;
        let now = self.clock;
        for input in entry.inputs {
            match input {
                ControlInput::Core(input) => self.core.step(now, input),
                ControlInput::NodeRunning { node, incarnation } => {
                    if self.needs_node_up(&node, incarnation) {
                        self.incarnations.insert(node.clone(), incarnation);
                        self.core.step(now, GroupInput::NodeUp { node });
                    }
                }
                ControlInput::NodeClocks { clocks } => {
                    let clocks = clocks
                        .into_iter()
                        .filter(|(node, inc, _)| self.incarnations.get(node) == Some(inc))
                        .map(|(node, _, clock)| (node, clock))
                        .collect();
                    self.core.step(now, GroupInput::NodeClocks { clocks });
                }
                ControlInput::RenewLeases {
                    node,
                    incarnation,
                    requested_at,
                    asks,
                } => {
                    if self.incarnations.get(&node) == Some(&incarnation) {
                        self.core.step(
                            now,
                            GroupInput::RenewLeases {
                                node,
                                requested_at,
                                asks,
                            },
                        );
                    }
                }
                ControlInput::NodeGone { node, incarnation } => {
                    if self.incarnations.get(&node) == Some(&incarnation)
                        && self.core.node_up(&node)
                    {
                        self.core.step(
                            now,
                            GroupInput::NodeDown {
                                node,
                                known_dead: true,
                            },
                        );
                    }
                }
            }
        }
        self.core.step(now, GroupInput::Tick);
        self.core.drain_commands()
    }

    /// Whether node `node`, heard running as `incarnation`, is news to the table: a new
    /// incarnation, or a node it counts as down. The group manager proposes
    /// [`ControlInput::NodeRunning`] only then.
    pub fn needs_node_up(&self, node: &NodeName, incarnation: u64) -> bool {
        self.incarnations.get(node) != Some(&incarnation) || !self.core.node_up(node)
    }

    /// The incarnation the table records for `node`.
    pub fn incarnation(&self, node: &NodeName) -> Option<u64> {
        self.incarnations.get(node).copied()
    }

    /// The group manager's state.
    pub fn core(&self) -> &GroupCore {
        &self.core
    }

    /// The table's clock: the latest stamp applied.
    pub fn clock(&self) -> Time {
        self.clock
    }

    /// How many entries the table has applied (snapshots included).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Every unit's name-table state as commands (`Bind`, `Unbind` or `Unavailable`, and
    /// `Quarantine` for a unit ever quarantined): what a
    /// node's name table must hold after it took the table from a snapshot.
    pub fn name_commands(&self) -> Vec<GroupCommand> {
        self.core
            .units()
            .map(|(unit, rec)| match (&rec.phase, &rec.primary) {
                (Phase::Unavailable, _) => GroupCommand::Unavailable {
                    unit: unit.clone(),
                    epoch: rec.epoch,
                },
                (_, Some(p)) if rec.bound => GroupCommand::Bind {
                    unit: unit.clone(),
                    copy: p.copy,
                    node: p.node.clone(),
                    epoch: rec.epoch,
                },
                _ => GroupCommand::Unbind {
                    unit: unit.clone(),
                    epoch: rec.epoch,
                },
            })
            .chain(
                self.core
                    .quarantines()
                    .map(|(unit, q)| GroupCommand::Quarantine {
                        unit: unit.clone(),
                        version: q.version,
                        reason: q.reason.clone(),
                    }),
            )
            .collect()
    }
}

/// What a node's periodic heartbeat tells its group manager besides its name and incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The copies it runs, with their units.
    pub running: Vec<(UnitName, CopyId)>,
    /// Its clock when it sent the heartbeat.
    pub clock: Time,
}

/// The group manager's session on the Raft leader, as a pure machine: what it hears (node
/// heartbeats with their inventories, copies' notifications and reports, operator requests,
/// time) in, the [`ControlInput`]s to propose out. Started from the committed table when the
/// leader is confirmed; dropped when leadership is lost (nothing in it needs to survive:
/// liveness starts afresh, giving every node a whole heartbeat window).
#[derive(Debug)]
pub struct ManagerSession {
    liveness: Liveness<NodeName>,
    heard: BTreeMap<NodeName, u64>,
    /// Each node's clock at its last heartbeat heard, with the incarnation that sent it.
    clocks: BTreeMap<NodeName, (u64, Time)>,
    /// The start of each node this session proposed gone (the table may not have applied it
    /// yet): several members prove the same end, and each proof must not count again.
    gone: BTreeMap<NodeName, u64>,
    pending: Pending,
}

impl ManagerSession {
    /// A session that starts, at `now`, from `table`: it watches every node the table counts
    /// up, and its first entry resumes the table ([`GroupInput::Resume`]).
    pub fn start(table: &GroupTable, heartbeat: HeartbeatConfig, now: Time) -> Self {
        let mut liveness = Liveness::new(heartbeat);
        let mut heard = BTreeMap::new();
        for node in table.core().nodes_up() {
            if let Some(inc) = table.incarnation(&node) {
                heard.insert(node.clone(), inc);
            }
            liveness.watch(node, now);
        }
        ManagerSession {
            liveness,
            heard,
            clocks: BTreeMap::new(),
            gone: BTreeMap::new(),
            pending: {
                let mut pending = Pending::new();
                pending.push(ControlInput::Core(GroupInput::Resume));
                pending
            },
        }
    }

    /// Queues `input` for the next entry (once: a repeat already queued is dropped, and a
    /// primary's lease requests are folded into one, see [`Pending::push`]).
    pub fn propose(&mut self, input: ControlInput) {
        self.pending.push(input);
    }

    /// Node `node` says it runs as `incarnation` (and, with a heartbeat, which copies it runs
    /// and its clock). A node new to the table (or counted down) is proposed up; an inventory
    /// that differs from the table is proposed for reconciliation.
    pub fn node_heard(
        &mut self,
        table: &GroupTable,
        now: Time,
        node: NodeName,
        incarnation: u64,
        heartbeat: Option<Heartbeat>,
    ) {
        self.heard.insert(node.clone(), incarnation);
        let running = heartbeat.map(|Heartbeat { running, clock }| {
            self.clocks.insert(node.clone(), (incarnation, clock));
            running
        });
        if !self.liveness.heard(&node, now) {
            self.liveness.watch(node.clone(), now);
        }
        if table.needs_node_up(&node, incarnation) {
            self.propose(ControlInput::NodeRunning { node, incarnation });
        } else if let Some(running) = running {
            if !table.core().inventory_diff(&node, &running).is_empty() {
                self.propose(ControlInput::Core(GroupInput::NodeInventory {
                    node,
                    running,
                }));
            }
        }
    }

    /// Start `incarnation` of node `node` is proved ended (by this member's probe or another
    /// member's: its connection closed and its port refuses connections): proposed gone
    /// ([`ControlInput::NodeGone`]) at once, without waiting for its heartbeats to lapse, if
    /// it is the start the table records and counts up and no newer start was heard; the
    /// first proof only, however many members send one. Returns whether it was proposed.
    pub fn node_gone(&mut self, table: &GroupTable, node: &NodeName, incarnation: u64) -> bool {
        if table.incarnation(node) != Some(incarnation) || !table.core().node_up(node) {
            return false;
        }
        // Heard again from a newer start: that one runs, the gone one is already replaced.
        if self.heard.get(node).is_some_and(|inc| *inc != incarnation) {
            return false;
        }
        if self.gone.insert(node.clone(), incarnation) == Some(incarnation) {
            return false;
        }
        self.liveness.forget(node);
        self.propose(ControlInput::NodeGone {
            node: node.clone(),
            incarnation,
        });
        true
    }

    /// Time passed: nodes silent for the whole heartbeat window are proposed down (not known
    /// dead), and once `expect` nodes are up the `units` the table lacks are proposed for
    /// placement. Returns the nodes proposed down.
    pub fn tick(
        &mut self,
        table: &GroupTable,
        now: Time,
        units: &[UnitName],
        expect: usize,
    ) -> Vec<NodeName> {
        let mut down = Vec::new();
        for node in self.liveness.expire(now) {
            if table.core().node_up(&node) {
                down.push(node.clone());
                self.propose(ControlInput::Core(GroupInput::NodeDown {
                    node,
                    known_dead: false,
                }));
            }
        }
        if table.core().nodes_up().len() >= expect.max(1) {
            for unit in units {
                if table.core().unit(unit).is_none() {
                    self.propose(ControlInput::Core(GroupInput::AddUnit {
                        unit: unit.clone(),
                    }));
                }
            }
        }
        down
    }

    /// Whether anything waits to be proposed.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next entry, stamped `at`: everything queued, in order, after the nodes' clocks
    /// when one of them may promote a standby ([`ControlInput::may_promote`]).
    pub fn next_entry(&mut self, at: Time) -> ControlEntry {
        let mut inputs = self.pending.take();
        if !self.clocks.is_empty() && inputs.iter().any(ControlInput::may_promote) {
            let clocks = self
                .clocks
                .iter()
                .map(|(node, (inc, clock))| (node.clone(), *inc, *clock))
                .collect();
            inputs.insert(0, ControlInput::NodeClocks { clocks });
        }
        ControlEntry { at, inputs }
    }

    /// How many times this session declared a node lost for missed heartbeats
    /// ([`Liveness::declared_lost`]); a node whose process ended ([`ManagerSession::node_gone`])
    /// does not count.
    pub fn nodes_declared_lost(&self) -> u64 {
        self.liveness.declared_lost()
    }

    /// The nodes heard within the heartbeat window, with the incarnation each runs as: the
    /// members the group's Raft should have.
    pub fn live_nodes(&self) -> impl Iterator<Item = (&NodeName, u64)> {
        self.heard
            .iter()
            .filter(|(node, _)| self.liveness.is_watched(node))
            .map(|(node, inc)| (node, *inc))
    }

    /// The incarnation node `node` last said it runs as.
    pub fn heard_incarnation(&self, node: &NodeName) -> Option<u64> {
        self.heard.get(node).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64, inputs: Vec<ControlInput>) -> ControlEntry {
        ControlEntry {
            at: Time::from_millis(at_ms),
            inputs,
        }
    }

    fn running(node: &str, incarnation: u64) -> ControlInput {
        ControlInput::NodeRunning {
            node: NodeName::new(node),
            incarnation,
        }
    }

    fn log() -> Vec<ControlEntry> {
        vec![
            entry(10, vec![running("a", 1), running("b", 2), running("c", 3)]),
            entry(
                20,
                vec![ControlInput::Core(GroupInput::AddUnit {
                    unit: UnitName::new("kv"),
                })],
            ),
            // A stamp behind the table's clock (a new leader's clock) does not move it back.
            entry(15, vec![]),
            entry(400, vec![running("a", 1)]),
        ]
    }

    #[test]
    fn members_applying_the_same_log_hold_the_same_table_and_emit_the_same_commands() {
        let mut one = GroupTable::new(GroupConfig::default());
        let mut two = GroupTable::new(GroupConfig::default());
        for e in log() {
            assert_eq!(one.apply(e.clone()), two.apply(e));
        }
        assert_eq!(one.clock(), Time::from_millis(400));
        assert_eq!(format!("{one:?}"), format!("{two:?}"));
    }

    #[test]
    fn a_repeated_node_running_changes_nothing_and_a_new_incarnation_starts_the_node_empty() {
        let mut t = GroupTable::new(GroupConfig::default());
        for e in log() {
            t.apply(e);
        }
        let kv = UnitName::new("kv");
        let before = t.core().unit(&kv).cloned();
        assert!(before.as_ref().is_some_and(|r| r.primary.is_some()));
        assert!(!t.needs_node_up(&NodeName::new("a"), 1));
        t.apply(entry(500, vec![running("a", 1), running("b", 2)]));
        assert_eq!(t.core().unit(&kv).map(|r| r.epoch), before.map(|r| r.epoch));

        let primary_node = t
            .core()
            .unit(&kv)
            .and_then(|r| r.primary.clone())
            .map(|p| p.node);
        let Some(primary_node) = primary_node else {
            panic!("kv has a primary");
        };
        assert!(t.needs_node_up(&primary_node, 99));
        t.apply(entry(600, vec![running(&primary_node.0, 99)]));
        assert_eq!(t.incarnation(&primary_node), Some(99));
        let after = t.core().unit(&kv).and_then(|r| r.primary.clone());
        assert!(
            after.is_none_or(|p| p.node != primary_node),
            "the restarted node's primary is no longer counted on"
        );
    }

    #[test]
    fn a_node_gone_is_down_at_once_unless_the_table_records_a_newer_start_of_it() {
        let mut t = GroupTable::new(GroupConfig::default());
        for e in log() {
            t.apply(e);
        }
        let b = NodeName::new("b");
        let gone = |incarnation| ControlInput::NodeGone {
            node: NodeName::new("b"),
            incarnation,
        };
        // An earlier start of b (incarnation 1) stopping says nothing about b's current one.
        t.apply(entry(500, vec![gone(1)]));
        assert!(t.core().node_up(&b));
        t.apply(entry(501, vec![gone(2)]));
        assert!(!t.core().node_up(&b), "b's incarnation 2 stopped");
        // A repeat changes nothing; a new start of b counts it up again.
        t.apply(entry(502, vec![gone(2)]));
        assert!(t.needs_node_up(&b, 3));
        t.apply(entry(503, vec![running("b", 3)]));
        assert!(t.core().node_up(&b));
    }

    #[test]
    fn name_commands_describe_every_unit() {
        let mut t = GroupTable::new(GroupConfig::default());
        for e in log() {
            t.apply(e);
        }
        let names = t.name_commands();
        assert_eq!(names.len(), 1);
        assert!(matches!(
            &names[0],
            GroupCommand::Bind { .. } | GroupCommand::Unbind { .. }
        ));
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;
    use std::time::Duration;

    fn table_with_three_nodes() -> GroupTable {
        let mut t = GroupTable::new(GroupConfig::default());
        let inputs = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| ControlInput::NodeRunning {
                node: NodeName::new(*n),
                incarnation: i as u64 + 1,
            })
            .collect();
        t.apply(ControlEntry {
            at: Time::from_millis(1),
            inputs,
        });
        t
    }

    #[test]
    fn a_new_manager_resumes_first_and_gives_every_node_a_whole_heartbeat_window() {
        let table = table_with_three_nodes();
        let hb = HeartbeatConfig {
            interval: Duration::from_millis(50),
            misses: 4,
        };
        let start = Time::from_millis(1_000);
        let mut s = ManagerSession::start(&table, hb, start);
        let first = s.next_entry(start);
        assert_eq!(first.inputs, vec![ControlInput::Core(GroupInput::Resume)]);
        assert!(s
            .tick(&table, start.after(hb.deadline() / 2), &[], 9)
            .is_empty());
        // Only b and c speak; a is proposed down once the window has passed.
        for (node, incarnation) in [("b", 2), ("c", 3)] {
            s.node_heard(
                &table,
                start.after(hb.deadline() / 2),
                NodeName::new(node),
                incarnation,
                Some(Heartbeat {
                    running: vec![],
                    clock: Time::ZERO,
                }),
            );
        }
        let down = s.tick(
            &table,
            start.after(hb.deadline() + Duration::from_millis(1)),
            &[],
            9,
        );
        assert_eq!(down, vec![NodeName::new("a")]);
    }

    #[test]
    fn a_node_heard_as_a_new_incarnation_is_proposed_up_and_a_repeat_is_not() {
        let table = table_with_three_nodes();
        let mut s = ManagerSession::start(&table, HeartbeatConfig::default(), Time::ZERO);
        let _ = s.next_entry(Time::ZERO);
        s.node_heard(&table, Time::ZERO, NodeName::new("a"), 1, None);
        assert!(!s.has_pending());
        s.node_heard(&table, Time::ZERO, NodeName::new("a"), 7, None);
        s.node_heard(&table, Time::ZERO, NodeName::new("a"), 7, None);
        let entry = s.next_entry(Time::ZERO);
        assert_eq!(
            entry.inputs,
            vec![ControlInput::NodeRunning {
                node: NodeName::new("a"),
                incarnation: 7
            }]
        );
    }

    #[test]
    fn a_node_whose_port_refuses_is_proposed_gone_once_and_no_longer_waited_for() {
        let table = table_with_three_nodes();
        let hb = HeartbeatConfig::default();
        let mut s = ManagerSession::start(&table, hb, Time::ZERO);
        let _ = s.next_entry(Time::ZERO);
        assert!(s.node_gone(&table, &NodeName::new("c"), 3));
        assert!(
            !s.node_gone(&table, &NodeName::new("c"), 3),
            "a second proof of the same end (another member's) is not proposed again"
        );
        assert!(
            !s.node_gone(&table, &NodeName::new("c"), 2),
            "not the start recorded"
        );
        assert!(!s.node_gone(&table, &NodeName::new("unknown"), 1));
        let entry = s.next_entry(Time::ZERO);
        assert_eq!(
            entry.inputs,
            vec![ControlInput::NodeGone {
                node: NodeName::new("c"),
                incarnation: 3
            }]
        );
        // Its heartbeats are no longer watched: no second report of the same loss.
        let later = Time::ZERO.after(hb.deadline() + Duration::from_millis(1));
        assert!(!s.tick(&table, later, &[], 9).contains(&NodeName::new("c")));
        // A node heard again as a newer start is not proposed gone.
        s.node_heard(&table, later, NodeName::new("b"), 8, None);
        assert!(!s.node_gone(&table, &NodeName::new("b"), 2));
    }
}
