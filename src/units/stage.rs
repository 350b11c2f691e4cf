//! A pipeline stage: the patent's Fig. 2A, where a stimulus enters the first unit of a chain
//! and its answer comes out of the last. A stage takes the key-value unit's stimuli, passes
//! each to the next unit (the first of its `calls` in `units.toml`), counts what passed through
//! it, and answers with what the next unit answered. The last unit of a chain is a plain
//! [`KeyValue`](super::KeyValue), or a stage with no next unit, which counts on its own.
//!
//! Each call carries a stimulus id derived from the stimulus being served, so a stimulus served
//! again after a takeover of a stage changes the units after it once. While the next unit is
//! indefinitely unavailable the stage serves in its degraded mode: it counts on its own and
//! answers with its own count (the runtime marks those answers degraded).

use super::kv::{KvRequest, KvResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use understudy_runtime::{
    Budget, CallFailure, CallReply, DependencyChange, Handled, Outcall, Step, Unit,
};

/// A stage's state: how much passed through it, per key, and whether it is degraded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageState {
    /// Per key, the sum of the increments that passed (or, degraded or last, were counted here).
    pub passed: BTreeMap<String, i64>,
    /// The next unit is unavailable: the stage counts on its own.
    pub degraded: bool,
}

/// One change to a stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageUpdate {
    /// `by` more of `key` passed.
    Passed {
        /// The key.
        key: String,
        /// The increment.
        by: i64,
    },
    /// The degraded mode began (`true`) or ended.
    Degraded(bool),
}

/// A pipeline stage.
#[derive(Clone, Debug)]
pub struct Stage {
    /// The budget of every stimulus.
    pub budget: Budget,
    /// The unit it passes stimuli to; none for the last stage.
    pub next: Option<String>,
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            budget: Budget::new(Duration::from_secs(2)),
            next: None,
        }
    }
}

impl Stage {
    /// What the stage answers on its own (the last stage, or degraded): its own count.
    fn count_here(state: &StageState, stimulus: &KvRequest) -> Handled<Self> {
        match stimulus {
            KvRequest::Get { key } => Handled::read(KvResponse::Value(
                state.passed.get(key).map(|n| n.to_string()),
            )),
            KvRequest::Incr { key, by } => {
                let have = state.passed.get(key).copied().unwrap_or(0);
                match have.checked_add(*by) {
                    Some(n) => Handled::write(
                        KvResponse::Counter(n),
                        vec![StageUpdate::Passed {
                            key: key.clone(),
                            by: *by,
                        }],
                    ),
                    None => Handled::read(KvResponse::NotANumber { key: key.clone() }),
                }
            }
            // A stage counts; it stores nothing.
            KvRequest::Put { key, .. } => {
                Handled::read(KvResponse::NotANumber { key: key.clone() })
            }
            KvRequest::Poison => panic!("a pipeline stage cannot serve a poison stimulus"),
            KvRequest::Stall { ms } => {
                KvRequest::stall(*ms);
                Handled::read(KvResponse::Done)
            }
        }
    }

    /// The next unit's answer, passed back; an increment it took is counted here too.
    fn passed_on(stimulus: &KvRequest, next: &str, reply: &CallReply) -> Handled<Self> {
        match (reply.decode::<KvResponse>(), stimulus) {
            (Ok(answer @ KvResponse::Counter(_)), KvRequest::Incr { key, by }) => Handled::write(
                answer,
                vec![StageUpdate::Passed {
                    key: key.clone(),
                    by: *by,
                }],
            ),
            (Ok(answer), _) => Handled::read(answer),
            // It took effect there, but its answer is lost: count it, and say only that.
            (Err(CallFailure::TookEffect { .. }), KvRequest::Incr { key, by }) => Handled::write(
                KvResponse::Done,
                vec![StageUpdate::Passed {
                    key: key.clone(),
                    by: *by,
                }],
            ),
            (Err(e), _) => Handled::read(KvResponse::NotServed {
                unit: next.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

impl Unit for Stage {
    type State = StageState;
    type Stimulus = KvRequest;
    type Response = KvResponse;
    type Update = StageUpdate;

    /// Without calling: the answer of the last stage, or of a degraded one.
    fn handle(&self, state: &StageState, stimulus: &KvRequest) -> Handled<Self> {
        Self::count_here(state, stimulus)
    }

    fn handle_with(
        &self,
        state: &StageState,
        stimulus: &KvRequest,
        replies: &[CallReply],
    ) -> Step<Self> {
        let next = match &self.next {
            Some(next) if !state.degraded => next,
            _ => return Step::Done(Self::count_here(state, stimulus)),
        };
        match replies {
            [] => Step::Call(Outcall::new(next.clone(), stimulus)),
            [reply, ..] => match &reply.outcome {
                // Unavailable, and the runtime has not said so yet: the next unit's loss
                // reaches this stage's state through `on_dependency_change` first.
                Err(CallFailure::Unavailable { .. }) => {
                    Step::Done(Handled::read(KvResponse::NotServed {
                        unit: next.clone(),
                        reason: "unavailable".to_string(),
                    }))
                }
                _ => Step::Done(Self::passed_on(stimulus, next, reply)),
            },
        }
    }

    fn apply(&self, state: &mut StageState, update: &StageUpdate) {
        match update {
            StageUpdate::Passed { key, by } => {
                let n = state.passed.entry(key.clone()).or_insert(0);
                *n = n.saturating_add(*by);
            }
            StageUpdate::Degraded(d) => state.degraded = *d,
        }
    }

    fn on_dependency_change(
        &self,
        _state: &StageState,
        change: &DependencyChange,
    ) -> Vec<StageUpdate> {
        match change {
            DependencyChange::Unavailable { unit } if Some(unit) == self.next.as_ref() => {
                vec![StageUpdate::Degraded(true)]
            }
            DependencyChange::Available { unit } if Some(unit) == self.next.as_ref() => {
                vec![StageUpdate::Degraded(false)]
            }
            _ => Vec::new(),
        }
    }

    fn stimulus_kind(&self, stimulus: &KvRequest) -> &'static str {
        stimulus.kind()
    }

    fn budget(&self, _stimulus: &KvRequest) -> Budget {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(key: &str) -> KvRequest {
        KvRequest::Incr {
            key: key.into(),
            by: 1,
        }
    }

    fn answered(unit: &str, r: &KvResponse) -> CallReply {
        CallReply {
            unit: understudy_runtime::UnitName::new(unit),
            outcome: Ok(rmp_serde::to_vec(r).expect("encodes")),
        }
    }

    #[test]
    fn a_stage_passes_an_increment_on_and_counts_it_once_the_next_unit_took_it() {
        let stage = Stage {
            next: Some("tally".into()),
            ..Stage::default()
        };
        let s = StageState::default();
        let Step::Call(call) = stage.handle_with(&s, &incr("k"), &[]) else {
            panic!("a stage with a next unit calls it");
        };
        assert_eq!(call.unit.0, "tally");
        let reply = answered("tally", &KvResponse::Counter(7));
        let Step::Done(h) = stage.handle_with(&s, &incr("k"), &[reply]) else {
            panic!("one call is enough");
        };
        assert_eq!(h.response, KvResponse::Counter(7), "the last unit's answer");
        assert_eq!(
            h.updates,
            vec![StageUpdate::Passed {
                key: "k".into(),
                by: 1
            }]
        );
    }

    #[test]
    fn a_degraded_or_last_stage_counts_on_its_own() {
        let last = Stage::default();
        let mut s = StageState::default();
        let Step::Done(h) = last.handle_with(&s, &incr("k"), &[]) else {
            panic!("the last stage calls nobody");
        };
        assert_eq!(h.response, KvResponse::Counter(1));
        let middle = Stage {
            next: Some("tally".into()),
            ..Stage::default()
        };
        let down = DependencyChange::Unavailable {
            unit: "tally".into(),
        };
        for u in middle.on_dependency_change(&s, &down) {
            middle.apply(&mut s, &u);
        }
        assert!(s.degraded);
        assert!(matches!(
            middle.handle_with(&s, &incr("k"), &[]),
            Step::Done(_)
        ));
    }
}
