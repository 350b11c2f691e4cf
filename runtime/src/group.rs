//! The group manager's decisions, as a pure state machine: cold-start placement, leases,
//! takeover when a primary is lost, a new standby when a standby is lost.
//!
//! ```text
//!  primary lost ──known dead──────────────► promote standby (epoch+1) ──Promoted──► serving,
//!       │                                   with its first lease and    (bind and grant the
//!       │                                   the name bound, when its    lease now if not done
//!       │                                   node's clock is known       with the promotion),
//!       └──not known dead──► wait until its lease lapsed                place standby
//! ```
//!
//! A primary's lease is granted here. The manager counts a lease from the moment it grants
//! it, the holder from a moment on its own clock before that (when it asked, or, for the
//! first lease granted with a promotion, its node's last heartbeat the manager heard), so the
//! holder's lease always ends first; a standby whose primary is not known dead is promoted
//! only after the manager's count ran out.

use crate::ids::{CopyId, Epoch, NodeName, UnitName};
use crate::message::{Directive, LeaseGrant, Report};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Tuning of the group manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupConfig {
    /// How long a granted lease runs (the primary asks again once a third of it has passed).
    /// It bounds how long a hung primary's node keeps its units from a takeover (its standby
    /// is promoted once the node missed its heartbeats *and* the lease lapsed); shorter makes
    /// that faster but a primary that cannot renew in time (a very busy host) stops serving
    /// until it does. A primary known dead (its process ended, it crashed) waits for no lease.
    pub lease: Duration,
    /// Resend an unanswered directive after this long.
    pub retry: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            lease: Duration::from_millis(200),
            retry: Duration::from_millis(50),
        }
    }
}

/// What the group manager hears.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum GroupInput {
    /// Place a new unit (cold start).
    AddUnit {
        /// Its name.
        unit: UnitName,
    },
    /// A node joined or came back, empty: copies recorded there before are lost.
    NodeUp {
        /// The node.
        node: NodeName,
    },
    /// A node was lost. `known_dead` when its copies certainly stopped (its supervisor tree
    /// ended); otherwise (missed heartbeats, a cut connection) its primaries' leases must
    /// lapse before their standbys are promoted.
    NodeDown {
        /// The node.
        node: NodeName,
        /// Whether its copies certainly stopped.
        known_dead: bool,
    },
    /// A copy was lost: crashed (`known_dead`) or hung (stopped being answered; it may still
    /// run).
    CopyDown {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// Whether it certainly stopped.
        known_dead: bool,
    },
    /// A copy the manager asked for is running.
    CopyStarted {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
    },
    /// A report from a copy.
    Report(Report),
    /// The operator asks for a planned switchover of `unit`: its primary hands over to its
    /// ready standby, losing nothing. Ignored unless the unit serves with a ready standby.
    Switchover {
        /// The unit.
        unit: UnitName,
    },
    /// The operator drains `node` for maintenance: no new copies go there, its primaries
    /// hand over to their standbys, and its standbys are replaced elsewhere.
    Drain {
        /// The node.
        node: NodeName,
    },
    /// The operator restores `unit`, declared unavailable (no copy holding its state was
    /// left): it starts again, empty, at a new epoch, as a new unit does. Ignored for a unit
    /// that is not unavailable.
    Restore {
        /// The unit.
        unit: UnitName,
    },
    /// Quarantine `unit` (the global manager's decision, e.g. both its copies failed on one
    /// stimulus): its name tables refuse its callers at once, who serve in their degraded
    /// mode, until it is released. Its copies keep running and keep its state. Ignored for an
    /// unknown or already quarantined unit.
    Quarantine {
        /// The unit.
        unit: UnitName,
        /// Why, for the operator and the callers.
        reason: String,
    },
    /// The operator releases `unit` from quarantine: its callers reach it again. Ignored for
    /// a unit that is not quarantined.
    Release {
        /// The unit.
        unit: UnitName,
    },
    /// Exclude `node` from placement (the global manager's decision: it keeps failing): as
    /// with [`GroupInput::Drain`], its primaries hand over and its standbys move, and no copy
    /// is placed there — also after its process starts again — until it is readmitted.
    Exclude {
        /// The node.
        node: NodeName,
        /// Why, for the operator.
        reason: String,
    },
    /// The operator readmits `node` to placement: it takes copies again, whether it was
    /// excluded or drained.
    Readmit {
        /// The node.
        node: NodeName,
    },
    /// The copies `node`'s local manager runs now (it says so with its heartbeats). The
    /// manager reconciles its record with it, which makes up for any lost notification: a
    /// copy it counts on that is not running is lost (known dead: its supervisor does not run
    /// it), a standby it asked for that runs has started, and a copy it does not count on is
    /// stopped.
    NodeInventory {
        /// The node.
        node: NodeName,
        /// Its copies, with their units.
        running: Vec<(UnitName, CopyId)>,
    },
    /// The nodes' own clocks when they last said they live: each heartbeat a node's local
    /// manager sends carries its clock, and the manager passes on those it heard before this
    /// input. A promotion to a copy on one of these nodes then grants the copy's first lease
    /// from that moment and binds the name in the same step, without waiting for the copy
    /// to ask ([`LeaseGrant`]). Forgotten when the node goes down or starts again (a new
    /// process has a new clock).
    NodeClocks {
        /// Each node with its clock.
        clocks: Vec<(NodeName, Time)>,
    },
    /// Node `node`'s local manager asks, at `requested_at` on its clock, for the leases of
    /// the primaries there that asked for theirs since its last request: one request for all
    /// of them instead of one each. Each is renewed (or refused, or fenced) as its own
    /// [`Report::LeaseRequest`] would be, and the renewals are answered together
    /// ([`GroupCommand::Leases`]).
    RenewLeases {
        /// The node.
        node: NodeName,
        /// When it asked, on its clock.
        requested_at: Time,
        /// The primaries that asked.
        asks: Vec<LeaseAsk>,
    },
    /// Time passed.
    Tick,
    /// The manager moved (a new group manager took over from the committed table): every
    /// lease still counts until a whole lease from `now` (the old manager may have granted
    /// one just before it was lost, on a clock this one does not share), and commands that
    /// nothing would send again are sent again: starts of copies not yet confirmed.
    Resume,
}

/// What a node's inventory changes in the manager's record (see
/// [`GroupCore::inventory_diff`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryDiff {
    /// Standbys asked for that run: they started.
    pub started: Vec<(UnitName, CopyId)>,
    /// Copies counted on that do not run: lost.
    pub lost: Vec<(UnitName, CopyId)>,
    /// Copies that run but are not counted on: to stop.
    pub unknown: Vec<(UnitName, CopyId)>,
}

impl InventoryDiff {
    /// Whether the inventory changes nothing.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.lost.is_empty() && self.unknown.is_empty()
    }
}

/// How a copy starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartAs {
    /// The first copy of a new unit, about to become primary at `epoch`.
    Initial {
        /// Its epoch.
        epoch: Epoch,
    },
    /// A standby of `primary` at `epoch`, waiting for a snapshot.
    Standby {
        /// The epoch of its primary.
        epoch: Epoch,
        /// Its primary.
        primary: CopyId,
    },
}

/// What the group manager orders.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GroupCommand {
    /// Start a copy on a node (its local manager does it).
    Start {
        /// The node.
        node: NodeName,
        /// The unit.
        unit: UnitName,
        /// The new copy's id.
        copy: CopyId,
        /// How it starts.
        start_as: StartAs,
    },
    /// Stop a copy (fenced, replaced or lost) on a node.
    Stop {
        /// The node.
        node: NodeName,
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
    },
    /// Send a directive to a copy.
    Direct {
        /// The node the copy runs on.
        node: NodeName,
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// The directive.
        directive: Directive,
    },
    /// Renewed leases of primaries on one node, in answer to its [`GroupInput::RenewLeases`]:
    /// each as a [`Directive::Lease`] from `from` for `duration` (and the primary's ready
    /// standby restated, as with each lease).
    Leases {
        /// The node the primaries run on.
        node: NodeName,
        /// When the node asked, on its clock: each lease runs from then.
        from: Time,
        /// How long each lease runs.
        duration: Duration,
        /// The primaries renewed.
        renewals: Vec<LeaseRenewal>,
    },
    /// The name server binds `unit` to `copy` at `epoch`.
    Bind {
        /// The unit.
        unit: UnitName,
        /// Its new primary.
        copy: CopyId,
        /// The node of the primary.
        node: NodeName,
        /// The epoch.
        epoch: Epoch,
    },
    /// The unit has no primary for now (a takeover is under way); clients wait for a binding.
    Unbind {
        /// The unit.
        unit: UnitName,
        /// The epoch of the binding withdrawn.
        epoch: Epoch,
    },
    /// The unit is indefinitely unavailable: no copy is left that holds its state.
    Unavailable {
        /// The unit.
        unit: UnitName,
        /// Its last epoch.
        epoch: Epoch,
    },
    /// The name server refuses the unit's callers (`reason`), or no longer does (`None`).
    /// `version` counts the unit's quarantines and releases, so a late update is recognised.
    Quarantine {
        /// The unit.
        unit: UnitName,
        /// How many quarantines and releases of the unit came before, this one included.
        version: u64,
        /// Why it is quarantined; `None` once released.
        reason: Option<String>,
    },
}

/// A unit's quarantine as the manager records it ([`GroupInput::Quarantine`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quarantine {
    /// How many quarantines and releases of the unit there were.
    pub version: u64,
    /// Why it is quarantined; `None` once released.
    pub reason: Option<String>,
}

/// A primary's ask for its lease, gathered by its node's local manager into one
/// [`GroupInput::RenewLeases`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LeaseAsk {
    /// The unit.
    pub unit: UnitName,
    /// The copy asking (it is primary, as far as it knows).
    pub copy: CopyId,
    /// The epoch it serves at.
    pub epoch: Epoch,
}

/// A renewal and the node of the primary renewed.
struct Renewed {
    node: NodeName,
    renewal: LeaseRenewal,
}

/// One primary's lease renewed by a node's request ([`GroupCommand::Leases`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LeaseRenewal {
    /// The unit.
    pub unit: UnitName,
    /// Its primary.
    pub copy: CopyId,
    /// The epoch the lease is for.
    pub epoch: Epoch,
    /// Its ready standby and that standby's node, restated with the lease.
    pub standby: Option<Placement>,
}

/// Where a copy runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The copy.
    pub copy: CopyId,
    /// Its node.
    pub node: NodeName,
}

/// Where a unit stands in its life.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// A primary is bound (or, at cold start, about to be).
    Serving,
    /// The primary was lost but may still run: wait until its lease lapsed.
    AwaitingLeaseLapse {
        /// The lost primary.
        old: Placement,
    },
    /// The standby was told to promote at the unit's epoch.
    Promoting {
        /// When the directive was last sent.
        sent_at: Time,
        /// The first lease, granted with the promotion (and the name bound at once) when the
        /// manager knew the clock of the standby's node; resent unchanged with the directive.
        lease: Option<LeaseGrant>,
    },
    /// No copy holds the state any more.
    Unavailable,
}

/// How many times a unit that lost its copies before it ever served is started again, empty
/// (a node taken for lost during a cold start on a starved host); a unit that keeps failing
/// before it serves is then declared unavailable, as one that lost its state is.
pub const FRESH_STARTS_BEFORE_SERVING: u64 = 3;

/// The manager's record of one unit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitRecord {
    /// The current epoch.
    pub epoch: Epoch,
    /// The current primary (or the copy being promoted).
    pub primary: Option<Placement>,
    /// The current standby, and whether it holds a snapshot.
    pub standby: Option<(Placement, StandbyState)>,
    /// When the primary's lease ends, on the manager's clock.
    pub lease_expires: Time,
    /// Where the unit stands.
    pub phase: Phase,
    /// Whether the primary has been bound in the name server at `epoch`.
    pub bound: bool,
    /// When a planned switchover was last asked of the primary, while one is under way.
    pub handover: Option<Time>,
    /// Whether a primary of this unit was ever bound, so that a caller may have been
    /// answered. Until then no copy holds anything a caller saw: a unit that loses its copies
    /// before it first served starts again, empty, instead of being declared unavailable.
    #[serde(default)]
    pub served: bool,
    /// Takeovers of this unit: a standby promoted because its primary was lost (crashed,
    /// hung, its node gone), not in a planned switchover. Kept across a restore.
    #[serde(default)]
    pub takeovers: u64,
}

/// How a copy stopped, as its loss is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    /// Lost: crashed, hung, fenced, or its node gone; `known_dead` once it provably stopped
    /// serving (no lease to wait out).
    Lost {
        /// Whether it provably stopped serving.
        known_dead: bool,
    },
    /// A primary that handed over in a planned switchover: it stopped serving and its standby
    /// holds everything it answered.
    HandedOver,
}

/// The life of a standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StandbyState {
    /// Asked for; its node has not confirmed it runs.
    Starting,
    /// Runs; the primary was told and sends a snapshot.
    Seeding {
        /// When the primary was last told.
        told_at: Time,
    },
    /// Holds the snapshot and follows the primary: it can be promoted.
    Ready,
}

/// How many retired copies the manager remembers the node of.
const RETIRED_LIMIT: usize = 4096;

/// The group manager's state machine.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupCore {
    config: GroupConfig,
    nodes: BTreeMap<NodeName, bool>,
    draining: std::collections::BTreeSet<NodeName>,
    units: BTreeMap<UnitName, UnitRecord>,
    /// Where copies the manager no longer counts on ran (the most recent ones), so that a
    /// stale report from one that still runs (a zombie whose stop failed) can be answered
    /// with `Fence`.
    retired: BTreeMap<CopyId, NodeName>,
    next_copy: u64,
    /// The nodes' clocks at their last heartbeat heard ([`GroupInput::NodeClocks`]).
    #[serde(default)]
    clocks: BTreeMap<NodeName, Time>,
    /// Units quarantined now or before ([`GroupInput::Quarantine`]).
    #[serde(default)]
    quarantines: BTreeMap<UnitName, Quarantine>,
    /// Nodes excluded from placement, each with why ([`GroupInput::Exclude`]).
    #[serde(default)]
    excluded: BTreeMap<NodeName, String>,
    commands: Vec<GroupCommand>,
}

impl GroupCore {
    /// A manager with no nodes and no units. Copy ids it hands out start above `copy_base` and
    /// only grow (copies rely on it to recognise a stale `AssignStandby`).
    pub fn new(config: GroupConfig, copy_base: u64) -> Self {
        GroupCore {
            config,
            nodes: BTreeMap::new(),
            draining: std::collections::BTreeSet::new(),
            units: BTreeMap::new(),
            retired: BTreeMap::new(),
            next_copy: copy_base,
            clocks: BTreeMap::new(),
            quarantines: BTreeMap::new(),
            excluded: BTreeMap::new(),
            commands: Vec::new(),
        }
    }

    /// The nodes excluded from placement, each with why.
    pub fn excluded(&self) -> &BTreeMap<NodeName, String> {
        &self.excluded
    }

    /// Whether new copies may go to `node`: it is up, and neither drained nor excluded.
    fn takes_copies(&self, node: &NodeName) -> bool {
        self.node_up(node) && !self.draining.contains(node) && !self.excluded.contains_key(node)
    }

    /// Why `unit` is quarantined, if it is.
    pub fn quarantined(&self, unit: &UnitName) -> Option<&str> {
        self.quarantines.get(unit)?.reason.as_deref()
    }

    /// Every unit ever quarantined, with its quarantine as it stands.
    pub fn quarantines(&self) -> impl Iterator<Item = (&UnitName, &Quarantine)> {
        self.quarantines.iter()
    }

    /// The record of a unit.
    pub fn unit(&self, unit: &UnitName) -> Option<&UnitRecord> {
        self.units.get(unit)
    }

    /// Every unit's record.
    pub fn units(&self) -> impl Iterator<Item = (&UnitName, &UnitRecord)> {
        self.units.iter()
    }

    /// The nodes that are up, sorted.
    pub fn nodes_up(&self) -> Vec<NodeName> {
        self.nodes
            .iter()
            .filter(|(_, up)| **up)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether a node is up.
    pub fn node_up(&self, node: &NodeName) -> bool {
        self.nodes.get(node).copied().unwrap_or(false)
    }

    /// The commands produced since the last drain.
    pub fn drain_commands(&mut self) -> Vec<GroupCommand> {
        std::mem::take(&mut self.commands)
    }

    /// Feed one input at time `now`.
    pub fn step(&mut self, now: Time, input: GroupInput) {
        match input {
            GroupInput::AddUnit { unit } => self.add_unit(now, unit),
            GroupInput::NodeUp { node } => {
                // A node that starts (again) is empty: whatever ran there before is gone.
                self.node_down(now, node.clone(), true);
                self.clocks.remove(&node);
                self.draining.remove(&node);
                self.nodes.insert(node, true);
                self.place_missing_standbys();
            }
            GroupInput::NodeDown { node, known_dead } => self.node_down(now, node, known_dead),
            GroupInput::CopyDown {
                unit,
                copy,
                known_dead,
            } => self.copy_down(now, &unit, copy, Stopped::Lost { known_dead }),
            GroupInput::CopyStarted { unit, copy } => self.copy_started(now, &unit, copy),
            GroupInput::Report(r) => self.on_report(now, r),
            GroupInput::Switchover { unit } => self.switchover(now, &unit),
            GroupInput::Drain { node } => self.drain(now, node),
            GroupInput::Restore { unit } => self.restore(now, unit),
            GroupInput::Quarantine { unit, reason } => self.set_quarantine(unit, Some(reason)),
            GroupInput::Release { unit } => self.set_quarantine(unit, None),
            GroupInput::Exclude { node, reason } => {
                if self.excluded.contains_key(&node) {
                    return;
                }
                self.excluded.insert(node.clone(), reason);
                self.drain(now, node);
            }
            GroupInput::Readmit { node } => {
                let excluded = self.excluded.remove(&node).is_some();
                let drained = self.draining.remove(&node);
                if excluded || drained {
                    self.place_missing_standbys();
                }
            }
            GroupInput::NodeClocks { clocks } => {
                for (node, clock) in clocks {
                    if self.node_up(&node) {
                        self.clocks.insert(node, clock);
                    }
                }
            }
            GroupInput::RenewLeases {
                node,
                requested_at,
                asks,
            } => self.renew_leases(now, node, requested_at, asks),
            GroupInput::Tick => self.tick(now),
            GroupInput::Resume => self.resume(now),
            GroupInput::NodeInventory { node, running } => {
                let diff = self.inventory_diff(&node, &running);
                for (unit, copy) in diff.started {
                    self.copy_started(now, &unit, copy);
                }
                for (unit, copy) in diff.lost {
                    self.copy_down(now, &unit, copy, Stopped::Lost { known_dead: true });
                }
                for (unit, copy) in diff.unknown {
                    self.commands.push(GroupCommand::Stop {
                        node: node.clone(),
                        unit,
                        copy,
                    });
                }
            }
        }
    }

    /// How the copies `node` runs differ from the manager's record: what a
    /// [`GroupInput::NodeInventory`] would change (nothing for a node counted down, whose
    /// `NodeUp` comes first).
    pub fn inventory_diff(&self, node: &NodeName, running: &[(UnitName, CopyId)]) -> InventoryDiff {
        let mut diff = InventoryDiff::default();
        if !self.node_up(node) {
            return diff;
        }
        let running_copies: std::collections::HashSet<CopyId> =
            running.iter().map(|(_, c)| *c).collect();
        let runs = |copy: CopyId| running_copies.contains(&copy);
        let mut expected = std::collections::BTreeSet::new();
        for (unit, rec) in &self.units {
            if let Some(p) = rec.primary.as_ref().filter(|p| &p.node == node) {
                expected.insert(p.copy);
                // The first copy of a unit may not have been started yet.
                let unconfirmed_start = matches!(rec.phase, Phase::Promoting { .. })
                    && rec.epoch == Epoch(1)
                    && !rec.bound;
                if !runs(p.copy) && !unconfirmed_start {
                    diff.lost.push((unit.clone(), p.copy));
                }
            }
            if let Some((s, state)) = rec.standby.as_ref().filter(|(s, _)| &s.node == node) {
                expected.insert(s.copy);
                match (state, runs(s.copy)) {
                    (StandbyState::Starting, true) => diff.started.push((unit.clone(), s.copy)),
                    (StandbyState::Starting, false) | (_, true) => {}
                    (_, false) => diff.lost.push((unit.clone(), s.copy)),
                }
            }
        }
        diff.unknown = running
            .iter()
            .filter(|(_, c)| !expected.contains(c))
            .cloned()
            .collect();
        diff
    }

    fn retire(&mut self, p: &Placement) {
        self.retired.insert(p.copy, p.node.clone());
        while self.retired.len() > RETIRED_LIMIT {
            self.retired.pop_first();
        }
    }

    fn alloc_copy(&mut self) -> CopyId {
        self.next_copy += 1;
        CopyId(self.next_copy)
    }

    /// Copies per node, and per node the standbys whose primary is on `of_primary_node`.
    fn load(&self, of_primary_node: Option<&NodeName>) -> BTreeMap<NodeName, (usize, usize)> {
        let mut load: BTreeMap<NodeName, (usize, usize)> = self
            .nodes
            .keys()
            .filter(|n| self.takes_copies(n))
            .map(|n| (n.clone(), (0, 0)))
            .collect();
        for rec in self.units.values() {
            if let Some(p) = &rec.primary {
                if let Some(l) = load.get_mut(&p.node) {
                    l.0 += 1;
                }
            }
            if let Some((s, _)) = &rec.standby {
                if let Some(l) = load.get_mut(&s.node) {
                    l.0 += 1;
                    if rec.primary.as_ref().map(|p| &p.node) == of_primary_node {
                        l.1 += 1;
                    }
                }
            }
        }
        load
    }

    /// Placement: the up node with the fewest standbys of `avoid`'s primaries, then the fewest
    /// copies, never `avoid` itself (primary and standby never share a node).
    fn choose_node(&self, avoid: Option<&NodeName>) -> Option<NodeName> {
        self.load(avoid)
            .into_iter()
            .filter(|(n, _)| Some(n) != avoid)
            .min_by_key(|(n, (copies, spread))| (*spread, *copies, n.clone()))
            .map(|(n, _)| n)
    }

    fn add_unit(&mut self, now: Time, unit: UnitName) {
        if self.units.contains_key(&unit) {
            return;
        }
        self.place_fresh(now, unit, Epoch(1));
    }

    /// Quarantines `unit` (`Some(reason)`) or releases it (`None`), if that changes anything.
    fn set_quarantine(&mut self, unit: UnitName, reason: Option<String>) {
        if !self.units.contains_key(&unit) {
            return;
        }
        let q = self.quarantines.entry(unit.clone()).or_insert(Quarantine {
            version: 0,
            reason: None,
        });
        if q.reason.is_some() == reason.is_some() {
            return;
        }
        q.version += 1;
        q.reason = reason;
        self.commands.push(GroupCommand::Quarantine {
            unit,
            version: q.version,
            reason: q.reason.clone(),
        });
    }

    /// The operator's restore: an unavailable unit starts again, empty, at the next epoch.
    fn restore(&mut self, now: Time, unit: UnitName) {
        let Some(rec) = self.units.get(&unit) else {
            return;
        };
        if rec.phase != Phase::Unavailable {
            return;
        }
        let epoch = rec.epoch.next();
        self.place_fresh(now, unit, epoch);
    }

    /// Place a unit with no state anywhere: an initial copy at `epoch` on the least loaded
    /// node (it becomes primary once leased), then its standby; or, with no node up, declare
    /// it unavailable.
    fn place_fresh(&mut self, now: Time, unit: UnitName, epoch: Epoch) {
        let takeovers = self.units.get(&unit).map_or(0, |rec| rec.takeovers);
        let Some(node) = self.choose_node(None) else {
            self.units.insert(
                unit.clone(),
                UnitRecord {
                    epoch: Epoch(epoch.0.saturating_sub(1)),
                    primary: None,
                    standby: None,
                    lease_expires: Time::ZERO,
                    phase: Phase::Unavailable,
                    bound: false,
                    handover: None,
                    served: false,
                    takeovers,
                },
            );
            self.commands.push(GroupCommand::Unavailable {
                unit,
                epoch: Epoch(epoch.0.saturating_sub(1)),
            });
            return;
        };
        let copy = self.alloc_copy();
        self.units.insert(
            unit.clone(),
            UnitRecord {
                epoch,
                primary: Some(Placement {
                    copy,
                    node: node.clone(),
                }),
                standby: None,
                lease_expires: Time::ZERO,
                phase: Phase::Promoting {
                    sent_at: now,
                    lease: None,
                },
                bound: false,
                handover: None,
                served: false,
                takeovers,
            },
        );
        self.commands.push(GroupCommand::Start {
            node,
            unit: unit.clone(),
            copy,
            start_as: StartAs::Initial { epoch },
        });
        self.place_standby(&unit);
    }

    fn place_standby(&mut self, unit: &UnitName) {
        let Some(rec) = self.units.get(unit) else {
            return;
        };
        if rec.standby.is_some() || rec.phase == Phase::Unavailable {
            return;
        }
        let Some(primary) = rec.primary.clone() else {
            return;
        };
        if matches!(rec.phase, Phase::AwaitingLeaseLapse { .. }) {
            return;
        }
        let epoch = rec.epoch;
        let Some(node) = self.choose_node(Some(&primary.node)) else {
            return;
        };
        let copy = self.alloc_copy();
        if let Some(rec) = self.units.get_mut(unit) {
            rec.standby = Some((
                Placement {
                    copy,
                    node: node.clone(),
                },
                StandbyState::Starting,
            ));
        }
        self.commands.push(GroupCommand::Start {
            node,
            unit: unit.clone(),
            copy,
            start_as: StartAs::Standby {
                epoch,
                primary: primary.copy,
            },
        });
    }

    /// Places a standby for every unit that lacks one and may have one (as
    /// `place_standby` decides). Runs after every entry: it visits only the units that
    /// lack a standby, and looks for a node only where some node other than the primary's can
    /// take one (choosing a node counts the copies of every unit).
    fn place_missing_standbys(&mut self) {
        let eligible: Vec<&NodeName> = self.nodes.keys().filter(|n| self.takes_copies(n)).collect();
        let names: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(_, rec)| {
                rec.standby.is_none()
                    && rec.phase != Phase::Unavailable
                    && !matches!(rec.phase, Phase::AwaitingLeaseLapse { .. })
                    && rec
                        .primary
                        .as_ref()
                        .is_some_and(|p| eligible.iter().any(|n| **n != p.node))
            })
            .map(|(u, _)| u.clone())
            .collect();
        for u in names {
            self.place_standby(&u);
        }
    }

    /// Whether `tick` has anything to do for `rec` at `now`: a lease to wait out,
    /// a promotion or a hand-over to ask again, a drained primary, a standby's seeding to
    /// restate. In a steady group, none.
    fn due(&self, rec: &UnitRecord, now: Time) -> bool {
        let retry = self.config.retry;
        match &rec.phase {
            Phase::AwaitingLeaseLapse { .. } => now >= rec.lease_expires,
            Phase::Promoting { sent_at, .. } => now.since(*sent_at) >= retry,
            Phase::Serving => {
                rec.handover.is_some_and(|asked| now.since(asked) >= retry)
                    || rec
                        .primary
                        .as_ref()
                        .is_some_and(|p| self.draining.contains(&p.node))
                    || matches!(rec.standby, Some((_, StandbyState::Seeding { told_at }))
                        if now.since(told_at) >= retry)
            }
            Phase::Unavailable => false,
        }
    }

    fn node_down(&mut self, now: Time, node: NodeName, known_dead: bool) {
        self.nodes.insert(node.clone(), false);
        self.clocks.remove(&node);
        let names: Vec<UnitName> = self.units.keys().cloned().collect();
        for u in names {
            let Some(rec) = self.units.get(&u) else {
                continue;
            };
            let lost: Vec<CopyId> = rec
                .primary
                .iter()
                .chain(rec.standby.iter().map(|(s, _)| s))
                .filter(|p| p.node == node)
                .map(|p| p.copy)
                .collect();
            for copy in lost {
                self.copy_down(now, &u, copy, Stopped::Lost { known_dead });
            }
        }
        self.place_missing_standbys();
    }

    fn copy_down(&mut self, now: Time, unit: &UnitName, copy: CopyId, how: Stopped) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        if rec.standby.as_ref().is_some_and(|(s, _)| s.copy == copy) {
            // Standby lost: tell the primary to stop replicating to it, then place a new one.
            let Some((old, _)) = rec.standby.take() else {
                return;
            };
            if let Some(p) = rec.primary.clone() {
                if rec.phase == Phase::Serving {
                    self.commands.push(GroupCommand::Direct {
                        node: p.node,
                        unit: unit.clone(),
                        copy: p.copy,
                        directive: Directive::AssignStandby {
                            epoch: rec.epoch,
                            standby: None,
                        },
                    });
                }
            }
            self.retire(&old);
            self.commands.push(GroupCommand::Stop {
                node: old.node,
                unit: unit.clone(),
                copy: old.copy,
            });
            self.place_standby(unit);
            return;
        }
        let is_primary = rec.primary.as_ref().is_some_and(|p| p.copy == copy);
        if !is_primary {
            return;
        }
        let Some(old) = rec.primary.take() else {
            return;
        };
        let epoch = rec.epoch;
        if rec.bound {
            rec.bound = false;
            self.commands.push(GroupCommand::Unbind {
                unit: unit.clone(),
                epoch,
            });
        }
        self.commands.push(GroupCommand::Stop {
            node: old.node.clone(),
            unit: unit.clone(),
            copy: old.copy,
        });
        self.retire(&old);
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        let standby_ready = matches!(rec.standby, Some((_, StandbyState::Ready)));
        let promoting = matches!(rec.phase, Phase::Promoting { .. });
        if !standby_ready || promoting {
            // The copy being promoted, or a primary without a ready standby: no copy is left
            // that holds the state.
            self.make_unavailable(now, unit);
            return;
        }
        let (known_dead, takeover) = match how {
            Stopped::Lost { known_dead } => (known_dead, true),
            Stopped::HandedOver => (true, false),
        };
        if known_dead || now >= rec.lease_expires {
            self.promote(now, unit, takeover);
        } else if let Some(rec) = self.units.get_mut(unit) {
            rec.phase = Phase::AwaitingLeaseLapse { old };
        }
    }

    /// No copy holding `unit`'s state is left: it is declared unavailable (until the operator
    /// restores it), or, if it never served, started again, empty, at the next epoch (up to
    /// [`FRESH_STARTS_BEFORE_SERVING`] times).
    fn make_unavailable(&mut self, now: Time, unit: &UnitName) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        rec.phase = Phase::Unavailable;
        rec.primary = None;
        rec.handover = None;
        let epoch = rec.epoch;
        let served = rec.served;
        if let Some((s, _)) = rec.standby.take() {
            self.retire(&s);
            self.commands.push(GroupCommand::Stop {
                node: s.node,
                unit: unit.clone(),
                copy: s.copy,
            });
        }
        if !served && epoch.0 <= FRESH_STARTS_BEFORE_SERVING {
            self.place_fresh(now, unit.clone(), epoch.next());
            return;
        }
        self.commands.push(GroupCommand::Unavailable {
            unit: unit.clone(),
            epoch,
        });
    }

    /// Takeover step 2: commit the new epoch and tell the standby to promote; a `takeover`
    /// (the primary was lost, not handed over) is counted in the unit's record.
    fn promote(&mut self, now: Time, unit: &UnitName, takeover: bool) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        let Some((standby, _)) = rec.standby.take() else {
            // The standby was lost too while the old primary's lease ran out: no copy is
            // left that holds the state.
            self.make_unavailable(now, unit);
            return;
        };
        rec.epoch = rec.epoch.next();
        rec.primary = Some(standby.clone());
        rec.takeovers += u64::from(takeover);
        // A hand-over was asked of the old primary only.
        rec.handover = None;
        rec.bound = false;
        rec.lease_expires = Time::ZERO;
        let epoch = rec.epoch;
        // With the clock of the standby's node known, the first lease is granted now (the
        // copy counts it from its node's last heartbeat, before this moment; the manager
        // from now) and the name is bound at once: the copy serves as soon as it hears the
        // directive, one committed step after the loss instead of two.
        let lease = self.clocks.get(&standby.node).map(|from| LeaseGrant {
            from: *from,
            duration: self.config.lease,
        });
        rec.phase = Phase::Promoting {
            sent_at: now,
            lease,
        };
        if lease.is_some() {
            rec.lease_expires = now.after(self.config.lease);
            rec.bound = true;
            rec.served = true;
            self.commands.push(GroupCommand::Bind {
                unit: unit.clone(),
                copy: standby.copy,
                node: standby.node.clone(),
                epoch,
            });
        }
        self.commands.push(GroupCommand::Direct {
            node: standby.node,
            unit: unit.clone(),
            copy: standby.copy,
            directive: Directive::Promote { epoch, lease },
        });
    }

    /// Planned switchover: ask the primary to hand over; it reports `HandedOver` when its
    /// standby holds everything it answered.
    fn switchover(&mut self, now: Time, unit: &UnitName) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        let ready = matches!(rec.standby, Some((_, StandbyState::Ready)));
        if rec.phase != Phase::Serving || !ready || rec.handover.is_some() {
            return;
        }
        self.ask_hand_over(now, unit);
    }

    /// Ask the unit's primary (again) to hand over, and note when.
    fn ask_hand_over(&mut self, now: Time, unit: &UnitName) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        let Some(p) = rec.primary.clone() else {
            return;
        };
        rec.handover = Some(now);
        let epoch = rec.epoch;
        self.commands.push(GroupCommand::Direct {
            node: p.node,
            unit: unit.clone(),
            copy: p.copy,
            directive: Directive::HandOver { epoch },
        });
    }

    /// Drain a node: nothing new is placed there, its primaries hand over, its standbys move.
    fn drain(&mut self, now: Time, node: NodeName) {
        if !self.node_up(&node) {
            return;
        }
        self.draining.insert(node.clone());
        let names: Vec<UnitName> = self.units.keys().cloned().collect();
        for u in names {
            let Some(rec) = self.units.get(&u) else {
                continue;
            };
            let standby_here = rec
                .standby
                .as_ref()
                .filter(|(s, _)| s.node == node)
                .map(|(s, _)| s.copy);
            let primary_here = rec.primary.as_ref().is_some_and(|p| p.node == node);
            if let Some(copy) = standby_here {
                // Replace the standby first; the primary holds its answers for the moment
                // the new standby needs to take its snapshot.
                self.copy_down(now, &u, copy, Stopped::Lost { known_dead: true });
            } else if primary_here {
                self.switchover(now, &u);
            }
        }
    }

    /// Whether a node is being drained.
    pub fn is_draining(&self, node: &NodeName) -> bool {
        self.draining.contains(node)
    }

    fn copy_started(&mut self, now: Time, unit: &UnitName, copy: CopyId) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        let Some((s, state)) = rec.standby.as_mut() else {
            return;
        };
        if s.copy != copy || *state != StandbyState::Starting {
            return;
        }
        *state = StandbyState::Seeding { told_at: now };
        let standby = s.copy;
        if let Some(p) = rec.primary.clone() {
            let epoch = rec.epoch;
            self.commands.push(GroupCommand::Direct {
                node: p.node,
                unit: unit.clone(),
                copy: p.copy,
                directive: Directive::AssignStandby {
                    epoch,
                    standby: Some(standby),
                },
            });
        }
    }

    fn on_report(&mut self, now: Time, r: Report) {
        match r {
            Report::LeaseRequest {
                unit,
                copy,
                epoch,
                requested_at,
            } => self.lease_request(now, &unit, copy, epoch, requested_at),
            Report::Promoted {
                unit,
                copy,
                epoch,
                requested_at,
            } => self.promoted(now, &unit, copy, epoch, requested_at),
            Report::StandbyReady { unit, copy, epoch } => {
                if let Some(rec) = self.units.get_mut(&unit) {
                    if rec.epoch == epoch {
                        if let Some((s, state)) = rec.standby.as_mut() {
                            if s.copy == copy {
                                *state = StandbyState::Ready;
                            }
                        }
                    }
                }
            }
            Report::Fenced { unit, copy, .. } => {
                // A fenced copy that is still the recorded primary means the manager lost
                // track of it: treat it as lost (it stopped serving, so it is as good as dead).
                let is_primary = self
                    .units
                    .get(&unit)
                    .and_then(|r| r.primary.as_ref())
                    .is_some_and(|p| p.copy == copy);
                if is_primary {
                    self.copy_down(now, &unit, copy, Stopped::Lost { known_dead: true });
                }
            }
            Report::HandedOver {
                unit, copy, epoch, ..
            } => {
                // The old primary stopped serving for good and its standby holds everything
                // it answered: promote at once, no lease to wait for.
                let current = self.units.get(&unit).is_some_and(|r| {
                    r.epoch == epoch && r.primary.as_ref().is_some_and(|p| p.copy == copy)
                });
                if current {
                    if let Some(rec) = self.units.get_mut(&unit) {
                        rec.handover = None;
                    }
                    self.copy_down(now, &unit, copy, Stopped::HandedOver);
                }
            }
            Report::CannotPromote { unit, copy, epoch } => {
                let promoting_this = self.units.get(&unit).is_some_and(|r| {
                    r.epoch == epoch
                        && matches!(r.phase, Phase::Promoting { .. })
                        && r.primary.as_ref().is_some_and(|p| p.copy == copy)
                });
                if promoting_this {
                    self.make_unavailable(now, &unit);
                }
            }
        }
    }

    fn fence_stale(&mut self, unit: &UnitName, copy: CopyId, node: Option<NodeName>) {
        let Some(rec) = self.units.get(unit) else {
            return;
        };
        let current = rec.epoch;
        if let Some(node) = node {
            self.commands.push(GroupCommand::Direct {
                node,
                unit: unit.clone(),
                copy,
                directive: Directive::Fence { current },
            });
        }
    }

    fn lease_request(
        &mut self,
        now: Time,
        unit: &UnitName,
        copy: CopyId,
        epoch: Epoch,
        requested_at: Time,
    ) {
        let Some(Renewed { node, renewal }) = self.renew(now, unit, copy, epoch) else {
            return;
        };
        self.commands.push(GroupCommand::Direct {
            node: node.clone(),
            unit: unit.clone(),
            copy,
            directive: Directive::Lease {
                epoch,
                requested_at,
                duration: self.config.lease,
            },
        });
        if let Some(s) = renewal.standby {
            self.commands.push(GroupCommand::Direct {
                node,
                unit: unit.clone(),
                copy,
                directive: Directive::AssignStandby {
                    epoch,
                    standby: Some(s.copy),
                },
            });
        }
    }

    /// A lease request of `copy` at `epoch`: renewed (the manager counts the lease from `now`)
    /// when it is the unit's serving primary at that epoch; a copy of an older epoch is fenced;
    /// otherwise (the primary is suspected) no renewal, and its lease lapses. The renewal
    /// restates the ready standby: a delayed `AssignStandby { None }` that overtook the
    /// assignment of this standby would otherwise leave the primary without one for good
    /// (holding every answer).
    fn renew(&mut self, now: Time, unit: &UnitName, copy: CopyId, epoch: Epoch) -> Option<Renewed> {
        let rec = self.units.get_mut(unit)?;
        let primary = rec.primary.as_ref().filter(|p| p.copy == copy);
        if let (true, Some(primary), Phase::Serving) = (epoch == rec.epoch, primary, &rec.phase) {
            rec.lease_expires = now.after(self.config.lease);
            let standby = match &rec.standby {
                Some((s, StandbyState::Ready)) => Some(s.clone()),
                _ => None,
            };
            return Some(Renewed {
                node: primary.node.clone(),
                renewal: LeaseRenewal {
                    unit: unit.clone(),
                    copy,
                    epoch,
                    standby,
                },
            });
        }
        if epoch < rec.epoch {
            let node = self.node_of(unit, copy);
            self.fence_stale(unit, copy, node);
        }
        None
    }

    /// The primaries on `node` that asked (`asks`), renewed as their own lease requests would
    /// be, and answered in one command.
    fn renew_leases(&mut self, now: Time, node: NodeName, requested_at: Time, asks: Vec<LeaseAsk>) {
        let renewals: Vec<LeaseRenewal> = asks
            .into_iter()
            .filter_map(|ask| self.renew(now, &ask.unit, ask.copy, ask.epoch))
            .filter(|r| r.node == node)
            .map(|r| r.renewal)
            .collect();
        if !renewals.is_empty() {
            self.commands.push(GroupCommand::Leases {
                node,
                from: requested_at,
                duration: self.config.lease,
                renewals,
            });
        }
    }

    fn node_of(&self, unit: &UnitName, copy: CopyId) -> Option<NodeName> {
        let rec = self.units.get(unit)?;
        rec.primary
            .iter()
            .chain(rec.standby.iter().map(|(s, _)| s))
            .chain(match &rec.phase {
                Phase::AwaitingLeaseLapse { old } => Some(old),
                _ => None,
            })
            .find(|p| p.copy == copy)
            .map(|p| p.node.clone())
            .or_else(|| self.retired.get(&copy).cloned())
    }

    fn promoted(
        &mut self,
        now: Time,
        unit: &UnitName,
        copy: CopyId,
        epoch: Epoch,
        requested_at: Time,
    ) {
        let Some(rec) = self.units.get_mut(unit) else {
            return;
        };
        let is_primary = rec.primary.as_ref().is_some_and(|p| p.copy == copy);
        if epoch != rec.epoch || !is_primary {
            if epoch < rec.epoch {
                let node = self.node_of(unit, copy);
                self.fence_stale(unit, copy, node);
            }
            return;
        }
        if matches!(rec.phase, Phase::Promoting { .. }) {
            rec.phase = Phase::Serving;
        }
        if rec.phase != Phase::Serving {
            return;
        }
        let Some(p) = rec.primary.clone() else {
            return;
        };
        // Grant the first lease before binding, so the copy can serve what the binding brings.
        rec.lease_expires = now.after(self.config.lease);
        self.commands.push(GroupCommand::Direct {
            node: p.node.clone(),
            unit: unit.clone(),
            copy,
            directive: Directive::Lease {
                epoch,
                requested_at,
                duration: self.config.lease,
            },
        });
        if !rec.bound {
            rec.bound = true;
            rec.served = true;
            self.commands.push(GroupCommand::Bind {
                unit: unit.clone(),
                copy,
                node: p.node,
                epoch,
            });
        }
        if let Some((s, StandbyState::Seeding { .. } | StandbyState::Ready)) = rec.standby.clone() {
            // A standby placed at cold start before the primary was promoted.
            self.commands.push(GroupCommand::Direct {
                node: rec
                    .primary
                    .as_ref()
                    .map(|p| p.node.clone())
                    .unwrap_or(s.node.clone()),
                unit: unit.clone(),
                copy,
                directive: Directive::AssignStandby {
                    epoch,
                    standby: Some(s.copy),
                },
            });
        }
        self.place_standby(unit);
    }

    fn resume(&mut self, now: Time) {
        let hold_until = now.after(self.config.lease);
        for (unit, rec) in self.units.iter_mut() {
            if rec.primary.is_some() && rec.lease_expires < hold_until {
                rec.lease_expires = hold_until;
            }
            // A cold start whose first copy may never have been asked for.
            if let (Phase::Promoting { .. }, Some(p)) = (&rec.phase, &rec.primary) {
                if rec.epoch == Epoch(1) && !rec.bound {
                    self.commands.push(GroupCommand::Start {
                        node: p.node.clone(),
                        unit: unit.clone(),
                        copy: p.copy,
                        start_as: StartAs::Initial { epoch: rec.epoch },
                    });
                }
            }
            // A standby asked for whose start nobody confirmed.
            if let (Some((s, StandbyState::Starting)), Some(p)) = (&rec.standby, &rec.primary) {
                self.commands.push(GroupCommand::Start {
                    node: s.node.clone(),
                    unit: unit.clone(),
                    copy: s.copy,
                    start_as: StartAs::Standby {
                        epoch: rec.epoch,
                        primary: p.copy,
                    },
                });
            }
        }
        self.tick(now);
    }

    fn tick(&mut self, now: Time) {
        // Every entry ticks the table on every member: visit only the units with something due.
        let names: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(_, rec)| self.due(rec, now))
            .map(|(u, _)| u.clone())
            .collect();
        for u in names {
            let Some(rec) = self.units.get_mut(&u) else {
                continue;
            };
            match rec.phase.clone() {
                Phase::AwaitingLeaseLapse { .. } if now >= rec.lease_expires => {
                    // Only a lost primary leaves its lease to lapse.
                    self.promote(now, &u, true);
                }
                Phase::Promoting { sent_at, lease } if now.since(sent_at) >= self.config.retry => {
                    rec.phase = Phase::Promoting {
                        sent_at: now,
                        lease,
                    };
                    if let Some(p) = rec.primary.clone() {
                        let epoch = rec.epoch;
                        self.commands.push(GroupCommand::Direct {
                            node: p.node,
                            unit: u.clone(),
                            copy: p.copy,
                            directive: Directive::Promote { epoch, lease },
                        });
                    }
                }
                Phase::Serving => {
                    // A hand-over under way: ask again. (It completes once the standby is
                    // ready, so the seeding below must go on meanwhile.)
                    if rec
                        .handover
                        .is_some_and(|asked| now.since(asked) >= self.config.retry)
                    {
                        self.ask_hand_over(now, &u);
                    }
                    let Some(rec) = self.units.get_mut(&u) else {
                        continue;
                    };
                    let drained_primary = rec
                        .primary
                        .as_ref()
                        .is_some_and(|p| self.draining.contains(&p.node));
                    if drained_primary
                        && rec.handover.is_none()
                        && matches!(rec.standby, Some((_, StandbyState::Ready)))
                    {
                        self.switchover(now, &u);
                        continue;
                    }
                    let Some(rec) = self.units.get_mut(&u) else {
                        continue;
                    };
                    if let Some((s, StandbyState::Seeding { told_at })) = rec.standby.clone() {
                        if now.since(told_at) >= self.config.retry {
                            if let Some((_, st)) = rec.standby.as_mut() {
                                *st = StandbyState::Seeding { told_at: now };
                            }
                            let epoch = rec.epoch;
                            if let Some(p) = rec.primary.clone() {
                                self.commands.push(GroupCommand::Direct {
                                    node: p.node,
                                    unit: u.clone(),
                                    copy: p.copy,
                                    directive: Directive::AssignStandby {
                                        epoch,
                                        standby: Some(s.copy),
                                    },
                                });
                            }
                            // And ask the standby itself: if it holds the snapshot already,
                            // its `StandbyReady` was lost and it says it again.
                            self.commands.push(GroupCommand::Direct {
                                node: s.node.clone(),
                                unit: u.clone(),
                                copy: s.copy,
                                directive: Directive::AssignStandby {
                                    epoch,
                                    standby: Some(s.copy),
                                },
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        self.place_missing_standbys();
    }
}
