//! `SetUnit`, the unit the simulation drives. Every `Add` changes the state with *two*
//! updates, so a checker can see an entry applied only in part (a torn batch: count 1) or
//! applied twice (a stimulus that took effect twice: count 4).

use crate::unit::{Handled, Unit};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The state of a [`SetUnit`]: per tag, how many parts of its `Add` were applied (2 when
/// the `Add` took effect exactly once).
pub type SetState = BTreeMap<u64, u32>;

/// A test unit holding a set of tags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetUnit;

/// A stimulus to a [`SetUnit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetStimulus {
    /// Add a tag (each tag is added by one stimulus only).
    Add {
        /// The tag.
        tag: u64,
    },
    /// Read the set of tags present.
    Read,
}

/// A state change of a [`SetUnit`]: one half of an `Add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetUpdate {
    /// Count one part of the `Add` of `tag`.
    Part {
        /// The tag.
        tag: u64,
        /// Which half, 0 or 1.
        half: u8,
    },
}

/// The answer of a [`SetUnit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetResponse {
    /// The `Add` of `tag` took effect.
    Added {
        /// The tag.
        tag: u64,
    },
    /// The tags present when the `Read` was served.
    Tags(BTreeSet<u64>),
}

impl Unit for SetUnit {
    type State = SetState;
    type Stimulus = SetStimulus;
    type Response = SetResponse;
    type Update = SetUpdate;

    fn handle(&self, state: &SetState, stimulus: &SetStimulus) -> Handled<Self> {
        match stimulus {
            SetStimulus::Add { tag } => Handled::write(
                SetResponse::Added { tag: *tag },
                vec![
                    SetUpdate::Part { tag: *tag, half: 0 },
                    SetUpdate::Part { tag: *tag, half: 1 },
                ],
            ),
            SetStimulus::Read => Handled::read(SetResponse::Tags(
                state
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, _)| *t)
                    .collect(),
            )),
        }
    }

    fn apply(&self, state: &mut SetState, update: &SetUpdate) {
        let SetUpdate::Part { tag, .. } = update;
        *state.entry(*tag).or_insert(0) += 1;
    }

    fn stimulus_kind(&self, stimulus: &SetStimulus) -> &'static str {
        match stimulus {
            SetStimulus::Add { .. } => "add",
            SetStimulus::Read => "read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_is_two_parts_and_a_read_lists_tags() {
        let u = SetUnit;
        let mut s = SetState::new();
        let h = u.handle(&s, &SetStimulus::Add { tag: 9 });
        assert_eq!(h.updates.len(), 2);
        u.apply(&mut s, &h.updates[0]);
        assert_eq!(s.get(&9), Some(&1));
        u.apply(&mut s, &h.updates[1]);
        let r = u.handle(&s, &SetStimulus::Read);
        assert_eq!(r.response, SetResponse::Tags([9].into_iter().collect()));
        assert!(r.updates.is_empty());
    }
}
