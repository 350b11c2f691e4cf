//! A key-value unit: `get`, `put`, and `incr` of integer values.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use understudy_runtime::{Budget, Handled, Unit};

/// A stimulus to the key-value unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Add `by` to the integer stored at `key` (a missing key counts as 0).
    Incr {
        /// The key.
        key: String,
        /// The amount.
        by: i64,
    },
    /// A request the handler cannot serve: it panics. It stands for a bug in an application's
    /// handler (a "poison" stimulus) and shows what the global manager does with one: the
    /// primary that serves it and the standby promoted after it both fail on it, so the unit
    /// is quarantined rather than losing one copy after another.
    Poison,
    /// A request the handler takes `ms` milliseconds over (at most [`MAX_STALL_MS`]), blocking
    /// its copy meanwhile, and then answers `Done`, changing nothing. It stands for a handler
    /// that takes too long (a slow disk, a contended lock) and shows the global manager's
    /// report of a stimulus thread that broke its budget, naming the unit that spent the time.
    Stall {
        /// How long the handler takes.
        ms: u64,
    },
}

/// The longest a [`KvRequest::Stall`] stalls: half the time a copy's local manager waits for
/// its heartbeat answer by default (4 × 50 ms), so the copy is slow, not hung.
pub const MAX_STALL_MS: u64 = 100;

impl KvRequest {
    /// Serves a [`KvRequest::Stall`]: blocks the calling thread for up to `ms`.
    pub(crate) fn stall(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms.min(MAX_STALL_MS)));
    }
}

impl KvRequest {
    /// The stimulus's kind, under which budgets are reported: `get`, `put`, `incr`, `poison` or
    /// `stall`.
    pub fn kind(&self) -> &'static str {
        match self {
            KvRequest::Get { .. } => "get",
            KvRequest::Put { .. } => "put",
            KvRequest::Incr { .. } => "incr",
            KvRequest::Poison => "poison",
            KvRequest::Stall { .. } => "stall",
        }
    }
}

/// The key-value unit's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// The value of a key, if set.
    Value(Option<String>),
    /// The put was done.
    Done,
    /// The counter's value after the increment.
    Counter(i64),
    /// The key holds something that is not an integer (or the sum overflows); nothing changed.
    NotANumber {
        /// The key.
        key: String,
    },
    /// A pipeline stage could not pass the stimulus on: the unit after it did not answer.
    /// Nothing changed at this stage.
    NotServed {
        /// The unit that did not answer.
        unit: String,
        /// Why.
        reason: String,
    },
}

/// The key-value unit's one kind of update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSet {
    /// The key.
    pub key: String,
    /// Its new value.
    pub value: String,
}

/// The key-value unit.
#[derive(Clone, Debug)]
pub struct KeyValue {
    /// The budget of every stimulus.
    pub budget: Budget,
}

impl Default for KeyValue {
    fn default() -> Self {
        KeyValue {
            budget: Budget::new(Duration::from_secs(2)),
        }
    }
}

impl Unit for KeyValue {
    type State = BTreeMap<String, String>;
    type Stimulus = KvRequest;
    type Response = KvResponse;
    type Update = KvSet;

    fn handle(&self, state: &Self::State, stimulus: &KvRequest) -> Handled<Self> {
        match stimulus {
            KvRequest::Get { key } => Handled::read(KvResponse::Value(state.get(key).cloned())),
            KvRequest::Put { key, value } => Handled::write(
                KvResponse::Done,
                vec![KvSet {
                    key: key.clone(),
                    value: value.clone(),
                }],
            ),
            KvRequest::Incr { key, by } => {
                let current = match state.get(key) {
                    None => Some(0i64),
                    Some(v) => v.parse::<i64>().ok(),
                };
                match current.and_then(|c| c.checked_add(*by)) {
                    Some(n) => Handled::write(
                        KvResponse::Counter(n),
                        vec![KvSet {
                            key: key.clone(),
                            value: n.to_string(),
                        }],
                    ),
                    None => Handled::read(KvResponse::NotANumber { key: key.clone() }),
                }
            }
            KvRequest::Poison => panic!("the key-value unit cannot serve a poison stimulus"),
            KvRequest::Stall { ms } => {
                KvRequest::stall(*ms);
                Handled::read(KvResponse::Done)
            }
        }
    }

    fn apply(&self, state: &mut Self::State, update: &KvSet) {
        state.insert(update.key.clone(), update.value.clone());
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

    #[test]
    fn incr_counts_from_zero_and_refuses_text() {
        let kv = KeyValue::default();
        let mut s = BTreeMap::new();
        let h = kv.handle(
            &s,
            &KvRequest::Incr {
                key: "n".into(),
                by: 2,
            },
        );
        assert_eq!(h.response, KvResponse::Counter(2));
        for u in &h.updates {
            kv.apply(&mut s, u);
        }
        s.insert("t".into(), "x".into());
        let h = kv.handle(
            &s,
            &KvRequest::Incr {
                key: "t".into(),
                by: 1,
            },
        );
        assert_eq!(h.response, KvResponse::NotANumber { key: "t".into() });
        assert!(h.updates.is_empty());
    }
}
