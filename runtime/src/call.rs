//! Units that call units: what a handler asks for ([`Outcall`]), what comes back
//! ([`CallReply`]), and the ids such calls carry.
//!
//! A call made while serving a stimulus carries a [`StimulusId`] derived from that stimulus
//! ([`derived_id`]): the same upstream stimulus, served again after a takeover, makes the same
//! calls with the same ids, and each called unit answers them from its dedupe table instead of
//! acting twice. The derived client is one per (calling unit, upstream client), and the derived
//! sequence numbers grow with the upstream ones, so the called unit's low-water marks stay
//! monotone and its table stays bounded exactly as for a direct client.

use crate::ids::{ClientId, Seq, StimulusId, UnitName};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::time::Duration;

/// Most calls one stimulus may make; the call index is folded into the derived sequence
/// number, so this is also the stride between two upstream stimuli.
pub const CALLS_PER_STIMULUS: u64 = 64;

/// A call to another unit that a handler asks the runtime to make before it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcall {
    /// The unit to call, by name.
    pub unit: UnitName,
    /// The stimulus, encoded (MessagePack), or why it could not be.
    pub body: Result<Vec<u8>, String>,
}

impl Outcall {
    /// A call of `unit` with `stimulus` (of that unit's stimulus type). A stimulus that does
    /// not encode comes back to the handler as [`CallFailure::BadStimulus`].
    pub fn new<S: Serialize>(unit: impl Into<String>, stimulus: &S) -> Outcall {
        Outcall {
            unit: UnitName::new(unit),
            body: rmp_serde::to_vec(stimulus).map_err(|e| e.to_string()),
        }
    }
}

/// Why a call to another unit gave no answer. The handler decides what its own caller sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CallFailure {
    /// The called unit is indefinitely unavailable (no copy holding its state is left): serve
    /// in the degraded mode.
    #[error("unit {unit} is unavailable")]
    Unavailable {
        /// The called unit.
        unit: UnitName,
    },
    /// No answer within what was left of the upstream stimulus's `T_max`: the outcome is
    /// unknown. A handler never sees this one: the runtime sends the same call (same id)
    /// again until its outcome is known, since the called unit may have acted.
    #[error("no answer from unit {unit} within {left:?}")]
    DeadlineExceeded {
        /// The called unit.
        unit: UnitName,
        /// The time that was left.
        left: Duration,
    },
    /// The call took effect, but its answer cannot be had (the called unit no longer keeps it,
    /// or it does not decode): act as if it succeeded.
    #[error("the call to {unit} took effect, but its answer is lost: {reason}")]
    TookEffect {
        /// The called unit.
        unit: UnitName,
        /// Why the answer is lost.
        reason: String,
    },
    /// The called unit refused the stimulus for good, and it took no effect (ignored, unknown
    /// unit, malformed): the message says why.
    #[error("unit {unit} refused the call: {reason}")]
    Refused {
        /// The called unit.
        unit: UnitName,
        /// Why.
        reason: String,
    },
    /// The stimulus did not encode, or the answer did not decode as the type asked for.
    #[error("call to {unit} is malformed: {reason}")]
    BadStimulus {
        /// The called unit.
        unit: UnitName,
        /// What the codec said.
        reason: String,
    },
    /// The handler asked for more than [`CALLS_PER_STIMULUS`] calls for one stimulus.
    #[error("more than {CALLS_PER_STIMULUS} calls for one stimulus")]
    TooManyCalls,
}

/// The outcome of one call: the called unit's encoded answer, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReply {
    /// The called unit.
    pub unit: UnitName,
    /// Its encoded answer, or the failure.
    pub outcome: Result<Vec<u8>, CallFailure>,
}

impl CallReply {
    /// The answer decoded as `R` (the called unit's response type), or the failure.
    pub fn decode<R: DeserializeOwned>(&self) -> Result<R, CallFailure> {
        match &self.outcome {
            Ok(bytes) => rmp_serde::from_slice(bytes).map_err(|e| CallFailure::BadStimulus {
                unit: self.unit.clone(),
                reason: e.to_string(),
            }),
            Err(f) => Err(f.clone()),
        }
    }
}

/// The id of call number `index` (from 0) made by unit `caller` while serving `upstream`.
pub fn derived_id(caller: &UnitName, upstream: StimulusId, index: u64) -> StimulusId {
    StimulusId {
        client: derived_client(caller, upstream.client),
        seq: Seq(upstream
            .seq
            .0
            .saturating_mul(CALLS_PER_STIMULUS)
            .saturating_add(index.min(CALLS_PER_STIMULUS - 1))),
    }
}

/// The low-water mark a derived call carries: every call of an upstream stimulus below the
/// upstream client's low-water mark is finished.
pub fn derived_low_water(upstream_low_water: Seq) -> Seq {
    Seq(upstream_low_water.0.saturating_mul(CALLS_PER_STIMULUS))
}

/// The client a calling unit is to the called one, on behalf of one upstream client: FNV-1a
/// over the caller's name and the upstream client, odd like every client id.
fn derived_client(caller: &UnitName, upstream: ClientId) -> ClientId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in caller
        .0
        .bytes()
        .chain([0xff])
        .chain(upstream.0.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ClientId(h | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: u64, s: u64) -> StimulusId {
        StimulusId {
            client: ClientId(c),
            seq: Seq(s),
        }
    }

    #[test]
    fn the_same_upstream_stimulus_derives_the_same_call_ids() {
        let m = UnitName::new("middle");
        assert_eq!(derived_id(&m, id(7, 3), 0), derived_id(&m, id(7, 3), 0));
        assert_ne!(derived_id(&m, id(7, 3), 0), derived_id(&m, id(7, 3), 1));
        assert_ne!(derived_id(&m, id(7, 3), 0), derived_id(&m, id(7, 4), 0));
        assert_ne!(
            derived_id(&m, id(7, 3), 0).client,
            derived_id(&UnitName::new("other"), id(7, 3), 0).client
        );
        assert_ne!(
            derived_id(&m, id(7, 3), 0).client,
            derived_id(&m, id(9, 3), 0).client
        );
    }

    #[test]
    fn derived_sequence_numbers_grow_with_the_upstream_ones() {
        let m = UnitName::new("middle");
        let last_of_3 = derived_id(&m, id(1, 3), CALLS_PER_STIMULUS - 1);
        let first_of_4 = derived_id(&m, id(1, 4), 0);
        assert!(last_of_3.seq < first_of_4.seq);
        assert!(derived_low_water(Seq(4)) <= first_of_4.seq);
        assert!(derived_low_water(Seq(4)) > last_of_3.seq);
    }

    #[test]
    fn a_reply_decodes_as_the_answer_type_or_says_why_not() {
        let unit = UnitName::new("b");
        let ok = CallReply {
            unit: unit.clone(),
            outcome: Ok(rmp_serde::to_vec(&41u32).expect("encodes")),
        };
        assert_eq!(ok.decode::<u32>(), Ok(41));
        assert!(matches!(
            ok.decode::<String>(),
            Err(CallFailure::BadStimulus { .. })
        ));
        let gone = CallReply {
            unit: unit.clone(),
            outcome: Err(CallFailure::Unavailable { unit }),
        };
        assert!(matches!(
            gone.decode::<u32>(),
            Err(CallFailure::Unavailable { .. })
        ));
    }

    mod fuzz {
        //! Property tests of [`CallReply::decode`]: the answer bytes come from another node.

        use super::super::*;
        use proptest::prelude::*;

        /// What a called unit might answer: a mix of the shapes MessagePack distinguishes.
        type Answer = (u64, String, Vec<u8>, Option<i32>);

        fn answer() -> impl Strategy<Value = Answer> {
            (
                any::<u64>(),
                ".{0,16}",
                proptest::collection::vec(any::<u8>(), 0..32),
                any::<Option<i32>>(),
            )
        }

        fn reply(unit: &str, bytes: Vec<u8>) -> CallReply {
            CallReply {
                unit: UnitName::new(unit),
                outcome: Ok(bytes),
            }
        }

        /// The refusal of undecodable answer bytes: malformed, naming the called unit.
        fn refused_naming_the_unit(
            result: Result<Answer, CallFailure>,
            unit: &str,
        ) -> Result<(), TestCaseError> {
            if let Err(e) = result {
                prop_assert!(
                    matches!(&e, CallFailure::BadStimulus { unit: u, .. } if u.0 == unit),
                    "{e:?}"
                );
                let message = e.to_string();
                prop_assert!(
                    message.contains(&format!("call to {unit} is malformed")),
                    "{message}"
                );
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_answer_bytes_are_refused_naming_the_called_unit(
                bytes in proptest::collection::vec(any::<u8>(), 0..128),
            ) {
                refused_naming_the_unit(reply("ledger", bytes).decode::<Answer>(), "ledger")?;
            }

            #[test]
            fn a_valid_answer_round_trips(value in answer()) {
                let bytes = rmp_serde::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(reply("ledger", bytes).decode::<Answer>(), Ok(value));
            }

            #[test]
            fn a_truncated_or_damaged_answer_decodes_or_is_refused_naming_the_unit(
                value in answer(),
                cut in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                flip in 1..=255u8,
            ) {
                let bytes = rmp_serde::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let truncated = bytes[..cut.index(bytes.len())].to_vec();
                refused_naming_the_unit(reply("ledger", truncated).decode::<Answer>(), "ledger")?;
                let mut damaged = bytes;
                let i = at.index(damaged.len());
                damaged[i] ^= flip;
                refused_naming_the_unit(reply("ledger", damaged).decode::<Answer>(), "ledger")?;
            }

            #[test]
            fn a_failure_is_passed_on_as_it_is_whatever_the_answer_type(
                reason in ".{0,16}",
            ) {
                let failure = CallFailure::Refused { unit: UnitName::new("ledger"), reason };
                let reply = CallReply { unit: UnitName::new("ledger"), outcome: Err(failure.clone()) };
                prop_assert_eq!(reply.decode::<Answer>(), Err(failure));
            }
        }
    }
}
