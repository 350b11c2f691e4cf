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
//! Time is part of the entry: the table's clock is the largest stamp applied so far, so a
//! member that applies the log later, or a new leader with a clock slightly behind, decides
//! exactly as the leader did.

use crate::group::{GroupCommand, GroupConfig, GroupCore, GroupInput, Phase};
use crate::ids::NodeName;
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Every unit's name-table state as commands (`Bind`, `Unbind` or `Unavailable`): what a
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
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UnitName;

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
