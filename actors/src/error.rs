//! What a caller of a unit can see go wrong, and what to do about it.

use std::time::Duration;
use understudy_runtime::{CopyId, Refusal, StimulusId, UnitName};

/// Why a stimulus could not be delivered to a copy, as the node answers it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DeliveryError {
    /// The copy refused it (see [`Refusal`] for what each means).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The addressed copy does not run on this node (any more): resolve the unit again.
    #[error("copy {copy} of unit {unit} does not run on this node; resolve the unit again")]
    NoSuchCopy {
        /// The unit.
        unit: UnitName,
        /// The copy addressed.
        copy: CopyId,
    },
    /// The stimulus did not decode as the unit's stimulus type: fix the caller; resending the
    /// same bytes will fail again.
    #[error("malformed stimulus for unit {unit}: {reason}")]
    Malformed {
        /// The unit.
        unit: UnitName,
        /// What the decoder said.
        reason: String,
    },
    /// The encoded stimulus is larger than a copy accepts
    /// ([`MAX_STIMULUS_BYTES`](crate::envelope::MAX_STIMULUS_BYTES)); it was not looked at.
    #[error("stimulus for unit {unit} is {bytes} bytes encoded, over the limit of {limit}; send smaller stimuli")]
    TooLarge {
        /// The unit.
        unit: UnitName,
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why a call through a [`crate::UnitClient`] returned no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The stimulus's budget ran out before an answer arrived, through every retry. The
    /// stimulus may or may not have taken effect; resending it with the same client is safe.
    #[error("no answer from unit {unit} within its budget of {budget:?} ({attempts} attempts)")]
    DeadlineExceeded {
        /// The unit.
        unit: UnitName,
        /// The budget, `T_max`.
        budget: Duration,
        /// How many times the stimulus was sent.
        attempts: u32,
    },
    /// The unit is indefinitely unavailable (no copy holding its state is left): serve in a
    /// degraded mode or report it; retrying will not help until an operator restores it.
    #[error("unit {unit} is unavailable: no copy holding its state is left")]
    Unavailable {
        /// The unit.
        unit: UnitName,
    },
    /// The unit is quarantined (the global manager saw its copies fail on one stimulus): the
    /// stimulus was not sent. Serve in a degraded mode; an operator releases the unit (`POST
    /// /api/units/{unit}/release`) once the cause is mended.
    #[error("unit {unit} is quarantined ({reason}); serve degraded until an operator releases it")]
    Quarantined {
        /// The unit.
        unit: UnitName,
        /// Why.
        reason: String,
    },
    /// The unit decided not to act on the stimulus (it was superseded or rolled back); it
    /// took no effect.
    #[error("unit {unit} ignored stimulus {stimulus}: {reason}")]
    Ignored {
        /// The unit.
        unit: UnitName,
        /// The stimulus.
        stimulus: StimulusId,
        /// Why.
        reason: String,
    },
    /// The stimulus took effect, but its answer was no longer kept when the caller asked again
    /// (see the dedupe table's bound). Read the unit's state to learn the outcome; do not
    /// resend.
    #[error("stimulus {stimulus} took effect on unit {unit}, but its answer is no longer kept")]
    AnswerForgotten {
        /// The unit.
        unit: UnitName,
        /// The stimulus.
        stimulus: StimulusId,
    },
    /// No unit of that name is known to the name server: check the name.
    #[error("no unit named {unit} is known; check the name")]
    UnknownUnit {
        /// The name asked for.
        unit: UnitName,
    },
    /// The unit's answer did not decode as its response type: the caller and the unit were
    /// built from different versions.
    #[error("unit {unit} sent an answer that does not decode: {reason}")]
    BadResponse {
        /// The unit.
        unit: UnitName,
        /// What the decoder said.
        reason: String,
    },
    /// The encoded stimulus is larger than
    /// [`MAX_STIMULUS_BYTES`](crate::envelope::MAX_STIMULUS_BYTES): it was not sent (or the
    /// copy refused it unread), so it took no effect. Resending it will fail again: split it
    /// into smaller stimuli, or keep the bulk elsewhere and send a reference to it.
    #[error("stimulus for unit {unit} is {bytes} bytes encoded, over the limit of {limit} bytes: it was not sent; split it into smaller stimuli, or keep the bulk elsewhere and send a reference")]
    StimulusTooLarge {
        /// The unit.
        unit: UnitName,
        /// The stimulus's encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The stimulus could not be used at all (it did not encode or decode); resending it
    /// will fail again.
    #[error("unit {unit} cannot take this stimulus: {reason}")]
    BadStimulus {
        /// The unit.
        unit: UnitName,
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// Whether the caller may simply try again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::DeadlineExceeded { .. })
    }
}
