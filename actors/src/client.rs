//! `UnitClient<U>`: the typed handle through which anything calls a unit.
//!
//! It resolves the unit's name in its node's name table, gives each stimulus a
//! [`StimulusId`], and when the primary fails (its reply port is dropped, it refuses as not
//! primary, or it stops answering while the name is rebound) it waits for the rebinding and
//! sends the same stimulus, with the same id, to the new primary, until the stimulus's
//! `T_max` runs out. The unit's dedupe table makes the resend take effect at most once.

use crate::codec::{decode, encode};
use crate::copy::{Answer, ServedBy, StimulusReply};
use crate::envelope::StimulusAsk;
use crate::error::{CallError, DeliveryError};
use crate::link::Directory;
use crate::local_manager::LocalManagerMsg;
use crate::registry::{NameState, Registry};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use understudy_runtime::{Budget, ClientId, Refusal, Seq, StimulusId, Unit, UnitName};

/// How long to wait before resending after a refusal that says "not yet" (lease lapsed,
/// overloaded) when no rebinding arrives sooner.
const BACKOFF: Duration = Duration::from_millis(5);

/// How far a client's newest stimulus may run ahead of the oldest one it still waits for.
/// Half of what a unit's dedupe table keeps per client (1,024 answers by default), so that the
/// table never has to forget an answer that a caller may still ask for again.
pub const MAX_SPAN: u64 = 512;

static CLIENT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A client id unique across the processes of a cluster: the process id, the start time and a
/// counter, mixed.
fn fresh_client_id() -> ClientId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = CLIENT_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // SplitMix64 finaliser, so that nearby inputs give unrelated ids.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ClientId((x ^ (x >> 31)) | 1)
}

#[derive(Debug)]
struct Inner<U: Unit> {
    unit: U,
    name: UnitName,
    registry: Registry,
    directory: Directory,
    client: ClientId,
    next_seq: AtomicU64,
    outstanding: Mutex<BTreeSet<u64>>,
    span_freed: tokio::sync::Notify,
}

/// A response and the copy that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served<R> {
    /// The response.
    pub response: R,
    /// Which copy answered, at which epoch, and when.
    pub served_by: ServedBy,
}

/// A typed handle to one unit. Cheap to clone; clones share one client id, so their stimuli
/// are numbered in one sequence.
#[derive(Debug)]
pub struct UnitClient<U: Unit> {
    inner: Arc<Inner<U>>,
}

impl<U: Unit> Clone for UnitClient<U> {
    fn clone(&self) -> Self {
        UnitClient {
            inner: self.inner.clone(),
        }
    }
}

/// What one attempt came to.
enum Attempt<R> {
    Answered(R),
    /// The binding tried is stale: wait for a different one.
    Stale,
    /// Not now: wait briefly (or for a rebinding) and resend.
    Later,
}

impl<U: Unit> UnitClient<U> {
    /// A client of the unit `name`, whose behaviour is `unit` (used for budgets and types),
    /// resolving through `registry` and reaching nodes through `directory`.
    pub fn new(unit: U, name: UnitName, registry: Registry, directory: Directory) -> Self {
        UnitClient {
            inner: Arc::new(Inner {
                unit,
                name,
                registry,
                directory,
                client: fresh_client_id(),
                next_seq: AtomicU64::new(Seq::FIRST.0),
                outstanding: Mutex::new(BTreeSet::new()),
                span_freed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The unit's name.
    pub fn name(&self) -> &UnitName {
        &self.inner.name
    }

    /// This client's id.
    pub fn client_id(&self) -> ClientId {
        self.inner.client
    }

    /// The budget the unit gives `stimulus`.
    pub fn budget(&self, stimulus: &U::Stimulus) -> Budget {
        self.inner.unit.budget(stimulus)
    }

    /// Send `stimulus` and wait for its answer, within the budget the unit gives it.
    pub async fn call(&self, stimulus: U::Stimulus) -> Result<U::Response, CallError> {
        let t_max = self.budget(&stimulus).t_max();
        self.call_within(stimulus, t_max).await
    }

    /// Send `stimulus` and wait for its answer for at most `t_max`.
    pub async fn call_within(
        &self,
        stimulus: U::Stimulus,
        t_max: Duration,
    ) -> Result<U::Response, CallError> {
        Ok(self.call_served(stimulus, t_max).await?.response)
    }

    /// As [`UnitClient::call_within`], also saying which copy answered, at which epoch and
    /// when: what a history checks one primary per epoch with.
    pub async fn call_served(
        &self,
        stimulus: U::Stimulus,
        t_max: Duration,
    ) -> Result<Served<U::Response>, CallError> {
        let deadline = Instant::now() + t_max;
        let Some(seq) = self.take_seq(deadline).await else {
            return Err(CallError::DeadlineExceeded {
                unit: self.inner.name.clone(),
                budget: t_max,
                attempts: 0,
            });
        };
        let id = StimulusId {
            client: self.inner.client,
            seq: Seq(seq),
        };
        let result = self.drive(id, stimulus, t_max, deadline).await;
        let was_oldest = {
            let mut outstanding = self.lock_outstanding();
            let was_oldest = outstanding.first() == Some(&seq);
            outstanding.remove(&seq);
            was_oldest
        };
        if was_oldest {
            self.inner.span_freed.notify_waiters();
        }
        result
    }

    /// Take the next sequence number and register it as awaited, in one step (so no
    /// concurrent call can advertise a low-water mark above a number not yet registered) —
    /// once it is within [`MAX_SPAN`] of the oldest stimulus still awaited. Waiting for that
    /// counts against the stimulus's budget.
    async fn take_seq(&self, deadline: Instant) -> Option<u64> {
        loop {
            let freed = self.inner.span_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut outstanding = self.lock_outstanding();
                let next = self.inner.next_seq.load(Ordering::Relaxed);
                let oldest = outstanding.first().copied().unwrap_or(next);
                if next - oldest < MAX_SPAN {
                    self.inner.next_seq.store(next + 1, Ordering::Relaxed);
                    outstanding.insert(next);
                    return Some(next);
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    fn lock_outstanding(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // A poisoned lock only means another caller panicked mid-update of a set of numbers;
        // the set is still usable.
        self.inner
            .outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn low_water(&self, seq: u64) -> Seq {
        Seq(self
            .lock_outstanding()
            .first()
            .copied()
            .unwrap_or(seq)
            .min(seq))
    }

    async fn drive(
        &self,
        id: StimulusId,
        stimulus: U::Stimulus,
        t_max: Duration,
        deadline: Instant,
    ) -> Result<Served<U::Response>, CallError> {
        let name = &self.inner.name;
        let body = encode("stimulus", &stimulus).map_err(|e| CallError::BadStimulus {
            unit: name.clone(),
            reason: e.to_string(),
        })?;
        let mut attempts = 0u32;
        let mut seen: Option<NameState> = None;
        let exceeded = |attempts| CallError::DeadlineExceeded {
            unit: name.clone(),
            budget: t_max,
            attempts,
        };
        loop {
            if Instant::now() >= deadline {
                return Err(exceeded(attempts));
            }
            let state = self.inner.registry.resolve(name);
            let binding = match &state {
                None if seen.is_none() && attempts == 0 => {
                    // Not known yet: the first bindings may still be on their way.
                    match self
                        .inner
                        .registry
                        .wait_for_change(name, None, deadline)
                        .await
                    {
                        Some(_) => continue,
                        None => return Err(CallError::UnknownUnit { unit: name.clone() }),
                    }
                }
                Some(NameState::Unavailable { .. }) => {
                    return Err(CallError::Unavailable { unit: name.clone() })
                }
                Some(NameState::Bound(b)) if seen.as_ref() != state.as_ref() => b.clone(),
                _ => {
                    // Stale or no binding: wait for the next one.
                    if self
                        .inner
                        .registry
                        .wait_for_change(name, state.as_ref(), deadline)
                        .await
                        .is_none()
                    {
                        return Err(exceeded(attempts));
                    }
                    continue;
                }
            };
            if !self.inner.directory.knows(&binding.node) {
                seen = state;
                continue;
            }
            attempts += 1;
            let (tx, rx) = ractor::concurrency::oneshot::<StimulusReply>();
            let ask = StimulusAsk {
                unit: name.clone(),
                copy: binding.copy,
                id,
                low_water: self.low_water(id.seq.0),
                body: body.clone(),
            };
            let sent = self
                .inner
                .directory
                .send(&binding.node, LocalManagerMsg::Stimulus(ask, tx.into()));
            let attempt = if sent.is_err() {
                Attempt::Stale
            } else {
                // Wait for the answer, or for the name to be rebound away from this primary
                // (it may be hung), or for the deadline.
                let rebound = self
                    .inner
                    .registry
                    .wait_for_change(name, state.as_ref(), deadline);
                tokio::select! {
                    answer = rx => match answer {
                        Ok(Ok(answer)) => Attempt::Answered(answer),
                        Ok(Err(e)) => self.judge(id, e)?,
                        // The copy dropped the reply port: it died.
                        Err(_) => Attempt::Stale,
                    },
                    _ = rebound => Attempt::Stale,
                }
            };
            match attempt {
                Attempt::Answered(answer) => {
                    let response =
                        decode::<U::Response>("response", &answer.body).map_err(|e| {
                            CallError::BadResponse {
                                unit: name.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                    return Ok(Served {
                        response,
                        served_by: answer.served_by,
                    });
                }
                Attempt::Stale => seen = state,
                Attempt::Later => {
                    let until = (Instant::now() + BACKOFF).min(deadline);
                    // Poll with a deadline: a rebinding ends the wait early.
                    let _ = self
                        .inner
                        .registry
                        .wait_for_change(name, state.as_ref(), until)
                        .await;
                }
            }
        }
    }

    fn judge(&self, id: StimulusId, e: DeliveryError) -> Result<Attempt<Answer>, CallError> {
        let name = &self.inner.name;
        match e {
            DeliveryError::Refused(Refusal::NotPrimary { .. })
            | DeliveryError::NoSuchCopy { .. } => Ok(Attempt::Stale),
            DeliveryError::Refused(Refusal::LeaseLapsed { .. } | Refusal::Overloaded { .. }) => {
                Ok(Attempt::Later)
            }
            DeliveryError::Refused(r @ Refusal::Superseded { .. }) => Err(CallError::Ignored {
                unit: name.clone(),
                stimulus: id,
                reason: r.to_string(),
            }),
            DeliveryError::Refused(Refusal::AnswerForgotten { .. }) => {
                Err(CallError::AnswerForgotten {
                    unit: name.clone(),
                    stimulus: id,
                })
            }
            DeliveryError::Refused(r @ Refusal::SessionExpired { .. }) => Err(CallError::Ignored {
                unit: name.clone(),
                stimulus: id,
                reason: r.to_string(),
            }),
            DeliveryError::Malformed { reason, .. } => Err(CallError::BadStimulus {
                unit: name.clone(),
                reason,
            }),
        }
    }
}
