//! The global manager (DESIGN.md §5): the top of the availability management function, itself
//! a unit — a primary and a standby, placed and failed over like any other — that hears
//! failures from every group's manager and acts on patterns no single group sees.
//!
//! ```text
//!  group manager: a copy died while serving stimulus s ──► GlobalRequest::CopyFailed ──┐
//!                                                                                      ▼
//!  GlobalManager::handle: another copy of the unit died on s too? ──► Quarantine{unit}
//!                                                                                      │
//!  group manager ◄── GlobalResponse::Decisions ◄──────────────────────────────────────┘
//!     └─► GroupInput::Quarantine in its log: callers see the unit quarantined (degraded)
//! ```
//!
//! The patterns it acts on:
//!
//! - a unit whose primary and standby both fail on the same stimulus (the same update) would
//!   go on killing every copy it is retried on. It is quarantined — its callers are refused at
//!   once and serve in their degraded mode — until an operator releases it;
//! - a node lost [`GlobalManager::exclude_after`] times (three processes of it, by default)
//!   within [`GlobalManager::exclude_within`] (ten minutes) keeps failing: it is excluded from
//!   placement — its copies move away and no new ones go there, even after it starts again —
//!   until an operator readmits it;
//! - a stimulus thread whose first unit answered it after more than its `T_max` broke its
//!   budget: it is kept (the latest [`SLOW_THREADS_KEPT`]) with the account of where its time
//!   went, unit by unit ([`crate::thread`]), so the operator sees which unit spent it.
//!
//! Like every unit, its handler is deterministic in its state and the request: what it
//! decides follows from the failures it recorded and the times the reports carry, not from a
//! clock of its own.

use crate::ids::{CopyId, NodeName, StimulusId, TraceId, UnitName};
use crate::unit::{Budget, Handled, Unit};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The unit name the global manager runs under in every cluster.
pub const GLOBAL_UNIT: &str = "global";

/// The unit kind that runs it.
pub const GLOBAL_KIND: &str = "global";

/// How many copy failures the global manager remembers (the latest; older ones are
/// forgotten first).
pub const FAILURES_KEPT: usize = 512;

/// A copy that ended while it served a stimulus, as a group manager reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyFailure {
    /// The group that houses the unit.
    pub group: String,
    /// The unit.
    pub unit: UnitName,
    /// The copy that ended.
    pub copy: CopyId,
    /// The node it ran on.
    pub node: NodeName,
    /// The stimulus it was serving (handling or applying) when it ended.
    pub during: StimulusId,
    /// How it ended, as its local manager saw it (e.g. the panic's message).
    pub why: String,
}

/// How many losses of one node the global manager remembers (the latest).
pub const NODE_LOSSES_KEPT: usize = 16;

/// How many slow stimulus threads the global manager remembers (the latest).
pub const SLOW_THREADS_KEPT: usize = 64;

/// A stimulus thread that broke its budget, as the node of its first unit reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowThread {
    /// The group of its first unit (named by that group's manager).
    pub group: String,
    /// Its first unit, which a client called.
    pub unit: UnitName,
    /// The kind of the stimulus that began it.
    pub kind: String,
    /// The thread.
    pub trace: TraceId,
    /// How long the first unit took to answer, µs.
    pub took_us: u64,
    /// The budget it broke (`T_max` of the stimulus that began it), µs.
    pub t_max_us: u64,
    /// Where the time went: µs per unit the thread reached.
    pub spent: Vec<(UnitName, u64)>,
}

impl SlowThread {
    /// The unit that spent the most of the thread's time, with its µs.
    pub fn spent_most(&self) -> Option<&(UnitName, u64)> {
        crate::thread::spent_most(&self.spent)
    }

    /// One line for the operator: what broke its budget, and which unit spent the time.
    pub fn describe(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let most = match self.spent_most() {
            Some((unit, us)) => format!("; {unit} spent {:.1} ms of it", ms(*us)),
            None => String::new(),
        };
        format!(
            "thread {} ({} of {}) took {:.1} ms of its {:.1} ms budget{most}",
            self.trace,
            self.kind,
            self.unit,
            ms(self.took_us),
            ms(self.t_max_us)
        )
    }
}

/// A node a group manager declared lost, as it reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoss {
    /// The group that lost it.
    pub group: String,
    /// The node.
    pub node: NodeName,
    /// Which start of the node's process was lost: one process is lost once, however many
    /// groups or managers say so.
    pub incarnation: u64,
    /// When, on the reporter's wall clock, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How it was seen: its process ended, or it missed its heartbeats.
    pub how: String,
}

/// A request to the global manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalRequest {
    /// A group manager reports a copy that ended while serving a stimulus; the answer is what
    /// the group should do about it.
    CopyFailed(CopyFailure),
    /// The operator released the unit from quarantine: its failures so far are forgotten.
    Released {
        /// The unit.
        unit: UnitName,
    },
    /// What the global manager holds.
    Status,
    /// A group manager reports a node it declared lost; the answer is what the group should
    /// do about it.
    NodeLost(NodeLoss),
    /// The operator readmitted the node to placement: its losses so far are forgotten.
    Readmitted {
        /// The node.
        node: NodeName,
    },
    /// A group manager passes on a stimulus thread that broke its budget; it is kept for the
    /// operator (answered with no decision).
    SlowThread(SlowThread),
}

/// What the global manager asks a group to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GlobalDecision {
    /// Quarantine the unit: refuse its callers at once (they go degraded) until an operator
    /// releases it. Its copies keep its state.
    Quarantine {
        /// The unit.
        unit: UnitName,
        /// Why, for the operator.
        reason: String,
    },
    /// Exclude the node from placement: move its copies away and place none there, even
    /// after it starts again, until an operator readmits it.
    Exclude {
        /// The node.
        node: NodeName,
        /// Why, for the operator.
        reason: String,
    },
}

/// The global manager's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalResponse {
    /// What the reporting group should do (nothing, for a failure that fits no pattern).
    Decisions(Vec<GlobalDecision>),
    /// Whether the unit was quarantined (or the node excluded) until then.
    Released(bool),
    /// What it holds.
    Status(GlobalView),
}

/// What the global manager holds, for the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalView {
    /// The quarantined units, each with why.
    pub quarantined: BTreeMap<UnitName, String>,
    /// The copy failures it remembers, oldest first.
    pub failures: Vec<CopyFailure>,
    /// The nodes excluded from placement, each with why.
    #[serde(default)]
    pub excluded: BTreeMap<NodeName, String>,
    /// The node losses it remembers, by node, oldest first.
    #[serde(default)]
    pub node_losses: Vec<NodeLoss>,
    /// The stimulus threads that broke their budgets, oldest first.
    #[serde(default)]
    pub slow_threads: Vec<SlowThread>,
}

/// One change of the global manager's state, as its standby applies it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalUpdate {
    /// A failure was recorded.
    Failed(CopyFailure),
    /// A unit was quarantined.
    Quarantined {
        /// The unit.
        unit: UnitName,
        /// Why.
        reason: String,
    },
    /// A unit was released, and its failures forgotten.
    Released {
        /// The unit.
        unit: UnitName,
    },
    /// A node loss was recorded.
    NodeLost(NodeLoss),
    /// A node was excluded from placement.
    Excluded {
        /// The node.
        node: NodeName,
        /// Why.
        reason: String,
    },
    /// A node was readmitted, and its losses forgotten.
    Readmitted {
        /// The node.
        node: NodeName,
    },
    /// A slow stimulus thread was recorded.
    SlowThread(SlowThread),
}

/// The global manager's state: the failures it remembers, the units it quarantined, the node
/// losses it remembers and the nodes it excluded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalState {
    failures: VecDeque<CopyFailure>,
    quarantined: BTreeMap<UnitName, String>,
    #[serde(default)]
    node_losses: BTreeMap<NodeName, VecDeque<NodeLoss>>,
    #[serde(default)]
    excluded: BTreeMap<NodeName, String>,
    #[serde(default)]
    slow_threads: VecDeque<SlowThread>,
}

/// The global manager's behaviour.
#[derive(Clone, Debug)]
pub struct GlobalManager {
    /// The budget of each request (its reports are not on any caller's path; a group manager
    /// gives up on a report after it).
    pub budget: Budget,
    /// How many losses of one node (processes of it lost, by their incarnations) within
    /// [`GlobalManager::exclude_within`] exclude it from placement. At most
    /// [`NODE_LOSSES_KEPT`]; 0 never excludes.
    pub exclude_after: usize,
    /// The span the losses that exclude a node fall within, by the times the reports carry.
    pub exclude_within: Duration,
}

impl Default for GlobalManager {
    fn default() -> Self {
        GlobalManager {
            budget: Budget::new(Duration::from_secs(2)),
            exclude_after: 3,
            exclude_within: Duration::from_secs(600),
        }
    }
}

impl GlobalManager {
    /// Whether `failure` and an earlier one are two copies of one unit failing on one
    /// stimulus: the reason to quarantine the unit, if so.
    fn same_stimulus_twice(state: &GlobalState, failure: &CopyFailure) -> Option<String> {
        let earlier = state.failures.iter().find(|f| {
            f.unit == failure.unit && f.during == failure.during && f.copy != failure.copy
        })?;
        Some(format!(
            "{} on {} and {} on {} both failed serving stimulus {}: {}",
            earlier.copy, earlier.node, failure.copy, failure.node, failure.during, failure.why
        ))
    }

    /// Whether `loss`, with the losses of its node recorded before, makes the node one that
    /// keeps failing: the reason to exclude it, if so.
    fn keeps_failing(&self, state: &GlobalState, loss: &NodeLoss) -> Option<String> {
        if self.exclude_after == 0 {
            return None;
        }
        let within = u64::try_from(self.exclude_within.as_millis()).unwrap_or(u64::MAX);
        let since = loss.at_ms.saturating_sub(within);
        let recent: Vec<&NodeLoss> = state
            .node_losses
            .get(&loss.node)
            .into_iter()
            .flatten()
            .chain(std::iter::once(loss))
            .filter(|l| l.at_ms >= since && l.at_ms <= loss.at_ms)
            .collect();
        if recent.len() < self.exclude_after.min(NODE_LOSSES_KEPT) {
            return None;
        }
        let first = recent.iter().map(|l| l.at_ms).min().unwrap_or(loss.at_ms);
        Some(format!(
            "node {} was lost {} times within {:.1} s (the last: {})",
            loss.node,
            recent.len(),
            Duration::from_millis(loss.at_ms - first).as_secs_f64(),
            loss.how
        ))
    }
}

impl Unit for GlobalManager {
    type State = GlobalState;
    type Stimulus = GlobalRequest;
    type Response = GlobalResponse;
    type Update = GlobalUpdate;

    fn handle(&self, state: &GlobalState, request: &GlobalRequest) -> Handled<Self> {
        match request {
            GlobalRequest::CopyFailed(failure) => {
                if let Some(reason) = state.quarantined.get(&failure.unit) {
                    // Said again: the group may not have heard the first answer.
                    let again = GlobalDecision::Quarantine {
                        unit: failure.unit.clone(),
                        reason: reason.clone(),
                    };
                    return Handled::read(GlobalResponse::Decisions(vec![again]));
                }
                let mut updates = vec![GlobalUpdate::Failed(failure.clone())];
                let mut decisions = Vec::new();
                if let Some(reason) = Self::same_stimulus_twice(state, failure) {
                    updates.push(GlobalUpdate::Quarantined {
                        unit: failure.unit.clone(),
                        reason: reason.clone(),
                    });
                    decisions.push(GlobalDecision::Quarantine {
                        unit: failure.unit.clone(),
                        reason,
                    });
                }
                Handled::write(GlobalResponse::Decisions(decisions), updates)
            }
            GlobalRequest::Released { unit } => {
                let was = state.quarantined.contains_key(unit);
                let updates = vec![GlobalUpdate::Released { unit: unit.clone() }];
                Handled::write(GlobalResponse::Released(was), updates)
            }
            GlobalRequest::Status => Handled::read(GlobalResponse::Status(GlobalView {
                quarantined: state.quarantined.clone(),
                failures: state.failures.iter().cloned().collect(),
                excluded: state.excluded.clone(),
                node_losses: state.node_losses.values().flatten().cloned().collect(),
                slow_threads: state.slow_threads.iter().cloned().collect(),
            })),
            GlobalRequest::SlowThread(thread) => Handled::write(
                GlobalResponse::Decisions(Vec::new()),
                vec![GlobalUpdate::SlowThread(thread.clone())],
            ),
            GlobalRequest::NodeLost(loss) => {
                if let Some(reason) = state.excluded.get(&loss.node) {
                    // Said again: the group may not have heard the first answer.
                    let again = GlobalDecision::Exclude {
                        node: loss.node.clone(),
                        reason: reason.clone(),
                    };
                    return Handled::read(GlobalResponse::Decisions(vec![again]));
                }
                let known = state
                    .node_losses
                    .get(&loss.node)
                    .is_some_and(|ls| ls.iter().any(|l| l.incarnation == loss.incarnation));
                if known {
                    // That process's loss is counted (another group, or a report sent again).
                    return Handled::read(GlobalResponse::Decisions(Vec::new()));
                }
                let mut updates = vec![GlobalUpdate::NodeLost(loss.clone())];
                let mut decisions = Vec::new();
                if let Some(reason) = self.keeps_failing(state, loss) {
                    updates.push(GlobalUpdate::Excluded {
                        node: loss.node.clone(),
                        reason: reason.clone(),
                    });
                    decisions.push(GlobalDecision::Exclude {
                        node: loss.node.clone(),
                        reason,
                    });
                }
                Handled::write(GlobalResponse::Decisions(decisions), updates)
            }
            GlobalRequest::Readmitted { node } => {
                let was = state.excluded.contains_key(node);
                let updates = vec![GlobalUpdate::Readmitted { node: node.clone() }];
                Handled::write(GlobalResponse::Released(was), updates)
            }
        }
    }

    fn apply(&self, state: &mut GlobalState, update: &GlobalUpdate) {
        match update {
            GlobalUpdate::Failed(failure) => {
                state.failures.push_back(failure.clone());
                while state.failures.len() > FAILURES_KEPT {
                    state.failures.pop_front();
                }
            }
            GlobalUpdate::Quarantined { unit, reason } => {
                state.quarantined.insert(unit.clone(), reason.clone());
            }
            GlobalUpdate::Released { unit } => {
                state.quarantined.remove(unit);
                state.failures.retain(|f| &f.unit != unit);
            }
            GlobalUpdate::NodeLost(loss) => {
                let losses = state.node_losses.entry(loss.node.clone()).or_default();
                losses.push_back(loss.clone());
                while losses.len() > NODE_LOSSES_KEPT {
                    losses.pop_front();
                }
            }
            GlobalUpdate::Excluded { node, reason } => {
                state.excluded.insert(node.clone(), reason.clone());
            }
            GlobalUpdate::Readmitted { node } => {
                state.excluded.remove(node);
                state.node_losses.remove(node);
            }
            GlobalUpdate::SlowThread(thread) => {
                state.slow_threads.push_back(thread.clone());
                while state.slow_threads.len() > SLOW_THREADS_KEPT {
                    state.slow_threads.pop_front();
                }
            }
        }
    }

    fn stimulus_kind(&self, request: &GlobalRequest) -> &'static str {
        match request {
            GlobalRequest::CopyFailed(_) => "copy_failed",
            GlobalRequest::Released { .. } => "released",
            GlobalRequest::Status => "status",
            GlobalRequest::NodeLost(_) => "node_lost",
            GlobalRequest::Readmitted { .. } => "readmitted",
            GlobalRequest::SlowThread(_) => "slow_thread",
        }
    }

    fn budget(&self, _request: &GlobalRequest) -> Budget {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClientId, Seq};

    fn failure(unit: &str, copy: u64, seq: u64) -> CopyFailure {
        CopyFailure {
            group: "main".into(),
            unit: UnitName::new(unit),
            copy: CopyId(copy),
            node: NodeName::new(format!("n{copy}")),
            during: StimulusId {
                client: ClientId(7),
                seq: Seq(seq),
            },
            why: "panicked".into(),
        }
    }

    /// Serves `request` as a primary does: handle, then apply the updates.
    fn serve(g: &GlobalManager, state: &mut GlobalState, request: GlobalRequest) -> GlobalResponse {
        let handled = g.handle(state, &request);
        for u in &handled.updates {
            g.apply(state, u);
        }
        handled.response
    }

    fn decisions(response: GlobalResponse) -> Vec<GlobalDecision> {
        match response {
            GlobalResponse::Decisions(d) => d,
            other => panic!("decisions expected, got {other:?}"),
        }
    }

    #[test]
    fn two_copies_of_a_unit_failing_on_the_same_stimulus_quarantine_it() {
        let g = GlobalManager::default();
        let mut state = GlobalState::default();
        let first = serve(
            &g,
            &mut state,
            GlobalRequest::CopyFailed(failure("kv", 1, 5)),
        );
        assert_eq!(decisions(first), vec![], "one failure is no pattern");
        let second = decisions(serve(
            &g,
            &mut state,
            GlobalRequest::CopyFailed(failure("kv", 2, 5)),
        ));
        assert!(
            matches!(&second[..], [GlobalDecision::Quarantine { unit, reason }]
                if unit.0 == "kv" && reason.contains("copy1 on n1 and copy2 on n2 both failed")),
            "{second:?}"
        );
        // Reported again (the group lost the answer): the same decision, nothing new recorded.
        let before = state.clone();
        let again = decisions(serve(
            &g,
            &mut state,
            GlobalRequest::CopyFailed(failure("kv", 3, 5)),
        ));
        assert_eq!(again, second);
        assert_eq!(state, before);
    }

    #[test]
    fn failures_on_different_stimuli_or_units_or_of_one_copy_quarantine_nothing() {
        let g = GlobalManager::default();
        let mut state = GlobalState::default();
        for f in [
            failure("kv", 1, 5),
            failure("kv", 2, 6),     // another stimulus
            failure("ledger", 3, 5), // another unit
            failure("kv", 1, 5),     // the same copy reported twice
        ] {
            let d = decisions(serve(&g, &mut state, GlobalRequest::CopyFailed(f)));
            assert_eq!(d, vec![]);
        }
        match serve(&g, &mut state, GlobalRequest::Status) {
            GlobalResponse::Status(view) => {
                assert!(view.quarantined.is_empty());
                assert_eq!(view.failures.len(), 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_released_unit_is_judged_afresh_and_the_failures_kept_are_bounded() {
        let g = GlobalManager::default();
        let mut state = GlobalState::default();
        serve(
            &g,
            &mut state,
            GlobalRequest::CopyFailed(failure("kv", 1, 5)),
        );
        serve(
            &g,
            &mut state,
            GlobalRequest::CopyFailed(failure("kv", 2, 5)),
        );
        let released = serve(
            &g,
            &mut state,
            GlobalRequest::Released {
                unit: UnitName::new("kv"),
            },
        );
        assert_eq!(released, GlobalResponse::Released(true));
        // Its old failures are forgotten: one new failure on that stimulus is no pattern.
        let d = decisions(serve(
            &g,
            &mut state,
            GlobalRequest::CopyFailed(failure("kv", 3, 5)),
        ));
        assert_eq!(d, vec![]);
        for seq in 0..(FAILURES_KEPT as u64 + 10) {
            serve(
                &g,
                &mut state,
                GlobalRequest::CopyFailed(failure("other", seq, seq)),
            );
        }
        assert_eq!(state.failures.len(), FAILURES_KEPT);
    }

    fn loss(node: &str, incarnation: u64, at_s: u64) -> GlobalRequest {
        GlobalRequest::NodeLost(NodeLoss {
            group: "main".into(),
            node: NodeName::new(node),
            incarnation,
            at_ms: at_s * 1000,
            how: "its process ended".into(),
        })
    }

    #[test]
    fn a_node_lost_three_times_within_ten_minutes_is_excluded_until_readmitted() {
        let g = GlobalManager::default();
        let mut state = GlobalState::default();
        assert_eq!(decisions(serve(&g, &mut state, loss("n2", 1, 100))), vec![]);
        assert_eq!(decisions(serve(&g, &mut state, loss("n2", 2, 160))), vec![]);
        // Another group (or a report sent again) telling of the same process: counted once.
        assert_eq!(decisions(serve(&g, &mut state, loss("n2", 2, 161))), vec![]);
        let third = decisions(serve(&g, &mut state, loss("n2", 3, 400)));
        assert!(
            matches!(&third[..], [GlobalDecision::Exclude { node, reason }]
                if node.0 == "n2" && reason.contains("lost 3 times within 300.0 s")),
            "{third:?}"
        );
        // Reported again: the same decision, nothing new recorded.
        let before = state.clone();
        assert_eq!(decisions(serve(&g, &mut state, loss("n2", 4, 500))), third);
        assert_eq!(state, before);
        match serve(&g, &mut state, GlobalRequest::Status) {
            GlobalResponse::Status(view) => {
                assert_eq!(view.excluded.len(), 1);
                assert_eq!(view.node_losses.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        // Readmitted, it is judged afresh: its old losses are forgotten.
        let readmitted = serve(
            &g,
            &mut state,
            GlobalRequest::Readmitted {
                node: NodeName::new("n2"),
            },
        );
        assert_eq!(readmitted, GlobalResponse::Released(true));
        assert_eq!(decisions(serve(&g, &mut state, loss("n2", 5, 600))), vec![]);
    }

    #[test]
    fn losses_spread_over_more_than_ten_minutes_or_over_nodes_exclude_nothing() {
        let g = GlobalManager::default();
        let mut state = GlobalState::default();
        for (node, incarnation, at_s) in [
            ("n1", 1, 0),
            ("n1", 2, 500),
            ("n1", 3, 1100), // the first is more than ten minutes before
            ("n2", 1, 1101),
            ("n3", 1, 1102),
        ] {
            let d = decisions(serve(&g, &mut state, loss(node, incarnation, at_s)));
            assert_eq!(d, vec![], "{node} lost at {at_s} s");
        }
        let never = GlobalManager {
            exclude_after: 0,
            ..GlobalManager::default()
        };
        for incarnation in 0..10 {
            let d = decisions(serve(&never, &mut state, loss("n4", incarnation, 1)));
            assert_eq!(d, vec![], "exclude_after 0 never excludes");
        }
        assert_eq!(
            state.node_losses.get(&NodeName::new("n4")).map(|l| l.len()),
            Some(NODE_LOSSES_KEPT.min(10))
        );
    }

    #[test]
    fn a_slow_thread_is_kept_naming_the_unit_that_spent_the_time_and_the_latest_are_bounded() {
        let g = GlobalManager::default();
        let mut state = GlobalState::default();
        let thread = |seq: u64| SlowThread {
            group: "main".into(),
            unit: UnitName::new("intake"),
            kind: "incr".into(),
            trace: TraceId::root(StimulusId {
                client: ClientId(9),
                seq: Seq(seq),
            }),
            took_us: 305_000,
            t_max_us: 100_000,
            spent: vec![
                (UnitName::new("enrich"), 3_000),
                (UnitName::new("intake"), 1_000),
                (UnitName::new("tally"), 301_000),
            ],
        };
        let d = decisions(serve(&g, &mut state, GlobalRequest::SlowThread(thread(1))));
        assert_eq!(d, vec![], "a slow thread is kept, not acted on");
        let line = thread(1).describe();
        assert!(
            line.contains("took 305.0 ms of its 100.0 ms budget; tally spent 301.0 ms"),
            "{line}"
        );
        for seq in 2..(SLOW_THREADS_KEPT as u64 + 10) {
            serve(&g, &mut state, GlobalRequest::SlowThread(thread(seq)));
        }
        match serve(&g, &mut state, GlobalRequest::Status) {
            GlobalResponse::Status(view) => {
                assert_eq!(view.slow_threads.len(), SLOW_THREADS_KEPT);
                assert_eq!(
                    view.slow_threads.last().map(|t| t.trace.0.seq),
                    Some(Seq(SLOW_THREADS_KEPT as u64 + 9)),
                    "the latest are kept"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
