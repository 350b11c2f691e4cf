//! The `Unit` trait an application implements, and the response-time `Budget` of a stimulus.

use crate::call::{CallReply, Outcall};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;
use std::time::Duration;

/// What `Unit::handle` returns: the answer for the caller and the state changes it made.
///
/// The runtime applies `updates` to the primary's state with [`Unit::apply`] and sends the
/// same updates to the standby, so both copies change their state by the same code path.
#[derive(Clone, Debug)]
pub struct Handled<U: Unit> {
    /// The answer to the stimulus.
    pub response: U::Response,
    /// The state changes, in order. Empty for a stimulus that only reads.
    pub updates: Vec<U::Update>,
}

impl<U: Unit> Handled<U> {
    /// An answer that changed nothing.
    pub fn read(response: U::Response) -> Self {
        Handled {
            response,
            updates: Vec::new(),
        }
    }

    /// An answer together with the updates that produced it.
    pub fn write(response: U::Response, updates: Vec<U::Update>) -> Self {
        Handled { response, updates }
    }
}

/// One step of serving a stimulus that may call other units (see [`Unit::handle_with`]).
#[derive(Clone, Debug)]
pub enum Step<U: Unit> {
    /// The stimulus is served: answer it and apply these updates.
    Done(Handled<U>),
    /// Call another unit first; the handler runs again with its reply appended.
    Call(Outcall),
}

/// What a promoted standby does with a stimulus its old primary had begun and not finished
/// (in-flight knowledge, [`Unit::on_open_at_takeover`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reconcile {
    /// Serve it again, from the state it began in: its calls carry the same ids, so a called
    /// unit that had acted answers from its table (the new primary advances).
    Reprocess,
    /// Do not act on it: it is recorded as ignored, and its caller's retry is refused with
    /// `Refusal::Ignored`.
    Ignore,
}

/// A change in the availability of a unit this unit calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependencyChange {
    /// The named unit is indefinitely unavailable (both copies lost, or no standby left to
    /// promote): the unit should serve in its degraded mode.
    Unavailable {
        /// The unit that became unavailable.
        unit: String,
    },
    /// The named unit serves again: the unit may leave its degraded mode.
    Available {
        /// The unit that is back.
        unit: String,
    },
}

/// An operational unit: a self-contained module that owns all of its state, shares nothing,
/// and is reached only through messages.
///
/// The value implementing `Unit` is the unit's behaviour (and any fixed configuration); its
/// mutable state is the separate [`Unit::State`], which the runtime owns, replicates and
/// snapshots. `handle` must be deterministic in `(state, stimulus)`: it may not read clocks,
/// randomness or other units' state; what it changes it returns as updates.
pub trait Unit: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The whole state of the unit; also its snapshot format.
    type State: Serialize + DeserializeOwned + Clone + Debug + Default + Send + Sync + 'static;
    /// One request into the unit.
    type Stimulus: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// The answer to one stimulus.
    type Response: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static;
    /// One state change, as applied on both copies.
    type Update: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;

    /// Serve one stimulus on the primary: compute the answer and the updates, without changing
    /// `state` (the runtime applies the updates).
    fn handle(&self, state: &Self::State, stimulus: &Self::Stimulus) -> Handled<Self>
    where
        Self: Sized;

    /// Serve one stimulus that may call other units: `replies` holds the answers of the calls
    /// asked for so far, in order (empty the first time). Return [`Step::Call`] to make one
    /// more call, or [`Step::Done`] to answer. Like `handle` it must be deterministic in
    /// `(state, stimulus, replies)`; the state is the same on every run for one stimulus (the
    /// unit serves nothing else while one of its calls is out). The default never calls:
    /// it is `handle`.
    fn handle_with(
        &self,
        state: &Self::State,
        stimulus: &Self::Stimulus,
        replies: &[CallReply],
    ) -> Step<Self>
    where
        Self: Sized,
    {
        let _ = replies;
        Step::Done(self.handle(state, stimulus))
    }

    /// In-flight knowledge at a takeover: the old primary had begun `stimulus` and not
    /// finished it. The default serves it again ([`Reconcile::Reprocess`]).
    fn on_open_at_takeover(&self, _state: &Self::State, _stimulus: &Self::Stimulus) -> Reconcile {
        Reconcile::Reprocess
    }

    /// Apply one update; runs on the primary after `handle` and on the standby when it applies
    /// a batch.
    fn apply(&self, state: &mut Self::State, update: &Self::Update);

    /// A snapshot of the whole state, sent to a new standby. The default is a copy.
    fn snapshot(&self, state: &Self::State) -> Self::State {
        state.clone()
    }

    /// Restore the whole state from a snapshot, or say why the snapshot cannot be used.
    /// The default accepts any snapshot that decoded.
    fn restore(&self, snapshot: Self::State) -> Result<Self::State, String> {
        Ok(snapshot)
    }

    /// The name of a stimulus's kind, under which budgets and latencies are reported.
    fn stimulus_kind(&self, _stimulus: &Self::Stimulus) -> &'static str {
        "stimulus"
    }

    /// The response-time budget of a stimulus. The default is one second, split 1/4 normal,
    /// 1/4 contention, 1/2 recovery.
    fn budget(&self, _stimulus: &Self::Stimulus) -> Budget {
        Budget::new(Duration::from_secs(1))
    }

    /// Called when a unit this unit calls becomes unavailable or comes back: the hook for the
    /// unit's degraded mode. The updates it returns are applied and replicated like any other,
    /// so the standby knows the mode too. The default does nothing.
    fn on_dependency_change(
        &self,
        _state: &Self::State,
        _change: &DependencyChange,
    ) -> Vec<Self::Update> {
        Vec::new()
    }
}

/// The response-time budget of one stimulus: `T_max`, split into the time for normal
/// processing, for contention, and for recovery from a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    t_max: Duration,
    parts: [u32; 3],
}

impl Budget {
    /// A budget of `t_max` with the default split: 1/4 normal, 1/4 contention, 1/2 recovery.
    pub fn new(t_max: Duration) -> Budget {
        Budget {
            t_max,
            parts: [1, 1, 2],
        }
    }

    /// A budget of `t_max` split in the proportions `normal : contention : recovery`.
    /// A split whose parts add up to zero falls back to the default split.
    pub fn with_split(t_max: Duration, normal: u32, contention: u32, recovery: u32) -> Budget {
        if normal as u64 + contention as u64 + recovery as u64 == 0 {
            return Budget::new(t_max);
        }
        Budget {
            t_max,
            parts: [normal, contention, recovery],
        }
    }

    /// The whole budget, `T_max`: the caller sees an error only after it has run out.
    pub fn t_max(&self) -> Duration {
        self.t_max
    }

    /// `T_normal`, the time normal processing may take.
    pub fn t_normal(&self) -> Duration {
        self.part(0)
    }

    /// `T_contention`, the time allowed for queueing behind other stimuli.
    pub fn t_contention(&self) -> Duration {
        self.part(1)
    }

    /// `T_recovery`, the time allowed for a takeover during the stimulus.
    pub fn t_recovery(&self) -> Duration {
        self.part(2)
    }

    fn part(&self, i: usize) -> Duration {
        let total: u64 = self.parts.iter().map(|p| u64::from(*p)).sum();
        let nanos = self.t_max.as_nanos() * u128::from(self.parts[i]) / u128::from(total.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_split_is_a_quarter_a_quarter_and_a_half() {
        let b = Budget::new(Duration::from_millis(400));
        assert_eq!(b.t_normal(), Duration::from_millis(100));
        assert_eq!(b.t_contention(), Duration::from_millis(100));
        assert_eq!(b.t_recovery(), Duration::from_millis(200));
        assert_eq!(b.t_max(), Duration::from_millis(400));
    }

    #[test]
    fn custom_split_keeps_proportions_and_zero_split_falls_back() {
        let b = Budget::with_split(Duration::from_millis(100), 1, 0, 1);
        assert_eq!(b.t_normal(), Duration::from_millis(50));
        assert_eq!(b.t_contention(), Duration::ZERO);
        let z = Budget::with_split(Duration::from_millis(400), 0, 0, 0);
        assert_eq!(z, Budget::new(Duration::from_millis(400)));
    }
}
