//! `UnitClient<U>`: the typed handle through which anything calls a unit.
//!
//! It resolves the unit's name in its node's name table, gives each stimulus a
//! [`StimulusId`], and when the primary fails (its reply port is dropped, it refuses as not
//! primary, or it stops answering while the name is rebound) it waits for the rebinding and
//! sends the same stimulus, with the same id, to the new primary, until the stimulus's
//! `T_max` runs out. The unit's dedupe table makes the resend take effect at most once.
//!
//! Under the trailing strategy an answer may leave the primary before its standby has the
//! stimulus's effects (the answer's [`Durability`] says so). The client keeps each such
//! stimulus — and keeps its number below the low-water mark it advertises, so the unit keeps
//! its answer — until an answer of the same epoch says the standby has it. If the primary is
//! lost first, a background task replays the kept stimuli, in order and with their ids, to the
//! new primary: one the new primary had is answered from its table, one it lacked takes effect
//! there, once. A replay that is refused is reported ([`UnitClient::take_trailing_losses`]),
//! never dropped silently.

use crate::budgets::BudgetBook;
use crate::codec::{decode, encode};
use crate::copy::{Answer, ServedBy, StimulusReply};
use crate::envelope::{StimulusAsk, MAX_STIMULUS_BYTES};
use crate::error::{CallError, DeliveryError};
use crate::link::Directory;
use crate::local_manager::LocalManagerMsg;
use crate::registry::{NameState, Registry};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use understudy_runtime::{
    Budget, ClientId, Durability, Refusal, ReplayBook, Seq, StimulusId, TraceId, Unit, UnitName,
};

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

/// How often a client with answers its unit's standby may lack asks how far the standby got
/// (or, after a takeover, replays them).
const CONFIRM_EVERY: Duration = Duration::from_millis(20);

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
    /// Answered stimuli whose effects the standby may lack, by sequence number.
    unconfirmed: Mutex<ReplayBook<u64, Resend>>,
    /// Whether the task confirming or replaying them runs.
    confirming: AtomicBool,
    /// Replays that failed.
    losses: Mutex<Vec<TrailingLoss>>,
    /// Stimuli replayed to a new primary.
    replays: AtomicU64,
    /// Where its calls are counted against their budgets, if anywhere.
    budgets: std::sync::OnceLock<BudgetBook>,
}

/// What a client keeps of an answered stimulus the standby may lack, to send it again.
#[derive(Clone, Debug)]
struct Resend {
    body: Vec<u8>,
    t_max: Duration,
}

/// A stimulus answered under the trailing strategy whose effects the lost primary's standby
/// did not have, and whose replay to the new primary was refused: its effects are lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailingLoss {
    /// The stimulus.
    pub stimulus: StimulusId,
    /// Why the replay failed.
    pub reason: String,
}

/// A response and the copy that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served<R> {
    /// The response.
    pub response: R,
    /// Which copy answered, at which epoch, and when.
    pub served_by: ServedBy,
    /// Whether the standby had the answer's effects when it left (under the trailing strategy
    /// it may not; the client then keeps the stimulus until it does).
    pub durability: Durability,
    /// Whether the unit served it in its degraded mode (a unit it calls was unavailable).
    pub degraded: bool,
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
                unconfirmed: Mutex::new(ReplayBook::default()),
                confirming: AtomicBool::new(false),
                losses: Mutex::new(Vec::new()),
                replays: AtomicU64::new(0),
                budgets: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Counts this client's calls (and its clones') in `book`, the node's book of time spent
    /// against budgets. A client's book is set once.
    pub fn with_budgets(self, book: BudgetBook) -> Self {
        let _ = self.inner.budgets.set(book);
        self
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
        let started = Instant::now();
        let deadline = started + t_max;
        if let Some(book) = self.inner.budgets.get() {
            let (unit, budget) = (&self.inner.unit, self.budget(&stimulus));
            let kind = unit.stimulus_kind(&stimulus);
            let outcome = self.call_unbooked(stimulus, t_max, deadline).await;
            book.called(&self.inner.name, kind, started.elapsed(), &budget, t_max);
            return outcome;
        }
        self.call_unbooked(stimulus, t_max, deadline).await
    }

    async fn call_unbooked(
        &self,
        stimulus: U::Stimulus,
        t_max: Duration,
        deadline: Instant,
    ) -> Result<Served<U::Response>, CallError> {
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
        let body = match encode("stimulus", &stimulus) {
            Ok(body) => body,
            Err(e) => {
                self.release(&[seq]);
                return Err(CallError::BadStimulus {
                    unit: self.inner.name.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let result = self.drive(id, &body, t_max, deadline).await;
        match &result {
            Ok(served) => {
                // Kept (and its number awaited) until the standby has it, if it may not.
                let (epoch, durability) = (served.served_by.epoch, served.durability);
                let resend = Resend { body, t_max };
                let kept = lock(&self.inner.unconfirmed).answered(seq, epoch, durability, resend);
                self.confirmed(served);
                if kept {
                    self.ensure_confirming();
                } else {
                    self.release(&[seq]);
                }
            }
            Err(_) => self.release(&[seq]),
        }
        result
    }

    /// Stimuli answered under the trailing strategy whose replay after a takeover failed since
    /// the last call (their effects are lost); empties the list.
    pub fn take_trailing_losses(&self) -> Vec<TrailingLoss> {
        std::mem::take(&mut *lock(&self.inner.losses))
    }

    /// How many answered stimuli this client replayed to a new primary after a takeover.
    pub fn replays(&self) -> u64 {
        self.inner.replays.load(Ordering::Relaxed)
    }

    /// How many answered stimuli this client keeps because the standby may lack them.
    pub fn unconfirmed(&self) -> usize {
        lock(&self.inner.unconfirmed).len()
    }

    /// No longer await these sequence numbers; wake callers waiting for room if the oldest
    /// went.
    fn release(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let was_oldest = {
            let mut outstanding = self.lock_outstanding();
            let oldest = outstanding.first().copied();
            for seq in seqs {
                outstanding.remove(seq);
            }
            oldest.is_some_and(|o| seqs.contains(&o))
        };
        if was_oldest {
            self.inner.span_freed.notify_waiters();
        }
    }

    /// An answer says how far the standby of its epoch's primary got: forget every kept
    /// stimulus of that epoch it has.
    fn confirmed(&self, served: &Served<U::Response>) {
        let (epoch, has) = (served.served_by.epoch, served.durability.standby_has);
        let done: Vec<u64> = lock(&self.inner.unconfirmed)
            .confirm(epoch, has)
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        self.release(&done);
    }

    /// Start the task that confirms or replays kept stimuli, unless it runs.
    fn ensure_confirming(&self) {
        if self.inner.confirming.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let client = UnitClient { inner };
                let name = client.inner.name.clone();
                let seen = client.inner.registry.resolve(&name);
                // Poll with a deadline: a rebinding (a takeover) ends the wait early.
                let until = Instant::now() + CONFIRM_EVERY;
                let _ = client
                    .inner
                    .registry
                    .wait_for_change(&name, seen.as_ref(), until)
                    .await;
                if !client.confirm_round().await {
                    client.inner.confirming.store(false, Ordering::SeqCst);
                    // A stimulus kept since the round found none restarts the task.
                    if client.unconfirmed() == 0
                        || client.inner.confirming.swap(true, Ordering::SeqCst)
                    {
                        return;
                    }
                }
            }
        });
    }

    /// One round, as the book plans it: replay, in order, every kept stimulus answered at an
    /// older epoch than the current binding's; or resend the newest, whose answer (from the
    /// unit's table) says how far the standby got. Returns whether any is kept still.
    async fn confirm_round(&self) -> bool {
        if self.unconfirmed() == 0 {
            return false;
        }
        let current = match self.inner.registry.resolve(&self.inner.name) {
            Some(NameState::Bound(b)) => b.epoch,
            Some(NameState::Unavailable { .. }) => {
                let all = lock(&self.inner.unconfirmed).take_all();
                let seqs: Vec<u64> = all.into_iter().map(|(seq, _)| seq).collect();
                self.lose(
                    &seqs,
                    "the unit is unavailable: no copy holding its state is left",
                );
                return false;
            }
            // A takeover under way, or not known yet: wait for the binding.
            _ => return true,
        };
        let round = lock(&self.inner.unconfirmed).round(current);
        self.inner
            .replays
            .fetch_add(round.replay.len() as u64, Ordering::Relaxed);
        for seq in round.replay.into_iter().chain(round.probe) {
            self.resend(seq).await;
        }
        self.unconfirmed() > 0
    }

    /// Send a kept stimulus again, with its id: answered from the unit's table if the primary
    /// has it, served once if it does not.
    async fn resend(&self, seq: u64) {
        let Some(kept) = lock(&self.inner.unconfirmed)
            .get(&seq)
            .map(|k| k.payload.clone())
        else {
            return;
        };
        let id = StimulusId {
            client: self.inner.client,
            seq: Seq(seq),
        };
        let deadline = Instant::now() + kept.t_max;
        match self.drive(id, &kept.body, kept.t_max, deadline).await {
            Ok(served) => {
                // Its effects now stand in this primary's stream (if still kept).
                let (epoch, durability) = (served.served_by.epoch, served.durability);
                let still_kept = {
                    let mut book = lock(&self.inner.unconfirmed);
                    book.get(&seq).is_some() && book.answered(seq, epoch, durability, kept)
                };
                if !still_kept {
                    self.release(&[seq]);
                }
                self.confirmed(&served);
            }
            // Not answered in time: try again next round.
            Err(CallError::DeadlineExceeded { .. }) => {}
            Err(e) => {
                lock(&self.inner.unconfirmed).take(&seq);
                self.lose(&[seq], &e.to_string());
            }
        }
    }

    /// Report stimuli taken from the book as lost, and no longer await them.
    fn lose(&self, seqs: &[u64], reason: &str) {
        {
            let mut losses = lock(&self.inner.losses);
            for seq in seqs {
                tracing::warn!(unit = %self.inner.name, seq, reason, "an answered stimulus could not be replayed after a takeover");
                losses.push(TrailingLoss {
                    stimulus: StimulusId {
                        client: self.inner.client,
                        seq: Seq(*seq),
                    },
                    reason: reason.to_string(),
                });
            }
        }
        self.release(seqs);
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
        lock(&self.inner.outstanding)
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
        body: &[u8],
        t_max: Duration,
        deadline: Instant,
    ) -> Result<Served<U::Response>, CallError> {
        let low_water = || self.low_water(id.seq.0);
        let route = Route {
            registry: &self.inner.registry,
            directory: &self.inner.directory,
            name: &self.inner.name,
            trace: None,
        };
        let (answer, _attempts) = route.deliver(id, &low_water, body, t_max, deadline).await?;
        let response = decode::<U::Response>("response", &answer.body).map_err(|e| {
            CallError::BadResponse {
                unit: self.inner.name.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Served {
            response,
            served_by: answer.served_by,
            durability: answer.durability,
            degraded: answer.degraded,
        })
    }
}

/// How a stimulus reaches a unit's primary: the name table to resolve it in and the links
/// to send over. A `UnitClient` uses it, and so does a copy calling another unit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) directory: &'a Directory,
    pub(crate) name: &'a UnitName,
    /// The thread a copy's call belongs to (`None`: a client's stimulus begins its own).
    pub(crate) trace: Option<TraceId>,
}

impl Route<'_> {
    /// Send the stimulus `id` (encoded as `body`) to the unit's primary, following its
    /// takeovers, until it is answered or refused for good or `deadline` passes. Each attempt
    /// carries the low-water mark `low_water` gives at that moment. Returns the answer and how
    /// many times the stimulus was sent (more than once: it followed a takeover).
    pub(crate) async fn deliver(
        &self,
        id: StimulusId,
        low_water: &(dyn Fn() -> Seq + Sync),
        body: &[u8],
        t_max: Duration,
        deadline: Instant,
    ) -> Result<(Answer, u32), CallError> {
        let name = self.name;
        if body.len() > MAX_STIMULUS_BYTES {
            return Err(CallError::StimulusTooLarge {
                unit: name.clone(),
                bytes: body.len(),
                limit: MAX_STIMULUS_BYTES,
            });
        }
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
            if let Some(reason) = self.registry.quarantined(name) {
                return Err(CallError::Quarantined {
                    unit: name.clone(),
                    reason,
                });
            }
            let state = self.registry.resolve(name);
            let binding = match &state {
                None if seen.is_none() && attempts == 0 => {
                    // Not known yet: the first bindings may still be on their way.
                    match self.registry.wait_for_change(name, None, deadline).await {
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
            if !self.directory.knows(&binding.node) {
                seen = state;
                continue;
            }
            attempts += 1;
            let (tx, rx) = ractor::concurrency::oneshot::<StimulusReply>();
            let ask = StimulusAsk {
                unit: name.clone(),
                copy: binding.copy,
                id,
                low_water: low_water(),
                bound_at: binding.epoch,
                body: body.to_vec(),
                trace: self.trace,
            };
            let sent = self
                .directory
                .send(&binding.node, LocalManagerMsg::Stimulus(ask, tx.into()));
            let attempt = if sent.is_err() {
                Attempt::Stale
            } else {
                // Wait for the answer, or for the name to be rebound away from this primary
                // (it may be hung), or for the deadline.
                let rebound = self
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
                Attempt::Answered(answer) => return Ok((answer, attempts)),
                Attempt::Stale => seen = state,
                Attempt::Later => {
                    let until = (Instant::now() + BACKOFF).min(deadline);
                    // Poll with a deadline: a rebinding ends the wait early.
                    let _ = self
                        .registry
                        .wait_for_change(name, state.as_ref(), until)
                        .await;
                }
            }
        }
    }

    fn judge(&self, id: StimulusId, e: DeliveryError) -> Result<Attempt<Answer>, CallError> {
        let name = self.name;
        match e {
            DeliveryError::Refused(Refusal::NotPrimary { .. })
            | DeliveryError::NoSuchCopy { .. } => Ok(Attempt::Stale),
            DeliveryError::Refused(Refusal::LeaseLapsed { .. } | Refusal::Overloaded { .. }) => {
                Ok(Attempt::Later)
            }
            DeliveryError::Refused(
                r @ (Refusal::Superseded { .. }
                | Refusal::SessionExpired { .. }
                | Refusal::Ignored { .. }),
            ) => Err(CallError::Ignored {
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
            DeliveryError::Malformed { reason, .. } => Err(CallError::BadStimulus {
                unit: name.clone(),
                reason,
            }),
            DeliveryError::TooLarge { bytes, limit, .. } => Err(CallError::StimulusTooLarge {
                unit: name.clone(),
                bytes,
                limit,
            }),
        }
    }
}

/// Locks a mutex of this module; a poisoned one only means another caller panicked while
/// updating plain bookkeeping, which stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
