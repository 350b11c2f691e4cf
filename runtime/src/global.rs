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
//! The pattern it acts on here: a unit whose primary and standby both fail on the same
//! stimulus (the same update) would go on killing every copy it is retried on. It is
//! quarantined — its callers are refused at once and serve in their degraded mode — until an
//! operator releases it. Like every unit, its handler is deterministic in its state and the
//! request: what it decides follows from the failures it recorded, not from a clock.

use crate::ids::{CopyId, NodeName, StimulusId, UnitName};
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
}

/// The global manager's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalResponse {
    /// What the reporting group should do (nothing, for a failure that fits no pattern).
    Decisions(Vec<GlobalDecision>),
    /// Whether the unit was quarantined until then.
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
}

/// The global manager's state: the failures it remembers and the units it quarantined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalState {
    failures: VecDeque<CopyFailure>,
    quarantined: BTreeMap<UnitName, String>,
}

/// The global manager's behaviour.
#[derive(Clone, Debug)]
pub struct GlobalManager {
    /// The budget of each request (its reports are not on any caller's path; a group manager
    /// gives up on a report after it).
    pub budget: Budget,
}

impl Default for GlobalManager {
    fn default() -> Self {
        GlobalManager {
            budget: Budget::new(Duration::from_secs(2)),
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
            })),
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
        }
    }

    fn stimulus_kind(&self, request: &GlobalRequest) -> &'static str {
        match request {
            GlobalRequest::CopyFailed(_) => "copy_failed",
            GlobalRequest::Released { .. } => "released",
            GlobalRequest::Status => "status",
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
}
