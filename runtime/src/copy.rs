//! One copy of a unit and its role machine: `Standby → Promoting → Primary → Fenced`.
//!
//! [`CopyCore::step`] takes one [`Input`] and the current time; the caller then drains the
//! [`Command`]s it produced and carries them out (send to the peer, answer a caller, report to
//! the group manager). The core never blocks, reads a clock or touches a socket.
//!
//! The first thing every peer message and directive meets is the epoch check: a lower epoch
//! is refused with the current one; a higher one makes a primary step down.

use crate::call::{
    derived_id, derived_low_water, CallFailure, CallReply, Outcall, CALLS_PER_STIMULUS,
};
use crate::dedupe::{Answered, DedupeLimits, DedupeTable, Seen};
use crate::ids::{BatchSeq, CopyId, Epoch, Seq, StimulusId, TraceId, UnitName};
use crate::message::{Begun, Directive, Entry, PeerMsg, Refusal, Report};
use crate::replication::{Durability, Replicator, Strategy};
use crate::time::Time;
use crate::unit::{DependencyChange, Handled, Reconcile, Step, Unit};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

/// An opaque handle for a caller waiting for an answer; the driver maps it to its reply port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyToken(pub u64);

/// What a promoted copy did with the stimuli it found open at its takeover, and with calls
/// whose outcome was unknown: counts since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Open stimuli served again.
    pub served_again: u64,
    /// Open stimuli recorded as ignored.
    pub ignored: u64,
    /// Calls sent again because no answer came in time.
    pub calls_resent: u64,
}

/// Names one call a copy asked its driver to make, so that the reply finds its stimulus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallToken(pub u64);

/// The role of a copy. Transitions only go right, except that a standby stays a standby
/// while its primary changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Takeover's waiting room: receives batches from the primary and applies whole ones.
    /// Invisible to clients.
    Standby,
    /// Takeover steps 3–4: the consistency check is done (a torn batch dropped), and the copy
    /// waits for its first lease before it serves. Stimuli that arrive are parked.
    Promoting,
    /// Serves stimuli while it holds a lease for its epoch, and replicates to its standby.
    Primary,
    /// Learned that a newer epoch exists: refuses everything, for good.
    Fenced,
}

/// Tuning of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyConfig {
    /// How state changes reach the standby.
    pub strategy: Strategy,
    /// In-flight knowledge (claim 6): the primary commits the begin of each stimulus to the
    /// standby before it handles it (and its end with its updates), so a promoted standby
    /// knows which stimuli were open and reprocesses them or reports them ignored. Combines
    /// with either strategy.
    pub in_flight: bool,
    /// Batches in flight to the standby at once.
    pub window: usize,
    /// Entries per `Replicate` message; larger batches travel in several parts.
    pub max_entries_per_part: usize,
    /// Resend unacknowledged batches (or the snapshot) after this long.
    pub resend_after: Duration,
    /// Ask for a lease again after this long without an answer.
    pub lease_retry: Duration,
    /// Most stimuli parked while the copy waits for a lease, and most waiting in line behind
    /// a stimulus whose call is out.
    pub max_parked: usize,
    /// Refuse a parked stimulus after it waited this long.
    pub park_timeout: Duration,
    /// Bounds of the dedupe table.
    pub dedupe: DedupeLimits,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            strategy: Strategy::Synchronous,
            in_flight: false,
            window: 1,
            max_entries_per_part: 256,
            resend_after: Duration::from_millis(50),
            lease_retry: Duration::from_millis(20),
            max_parked: 10_000,
            park_timeout: Duration::from_millis(500),
            dedupe: DedupeLimits::default(),
        }
    }
}

/// A stimulus as it reaches a copy.
#[derive(Clone, Debug)]
pub struct StimulusIn<U: Unit> {
    /// Its id.
    pub id: StimulusId,
    /// Its client's low-water mark.
    pub low_water: Seq,
    /// The epoch of the binding the client sent it by (`Epoch(0)`: addressed to this copy
    /// without one). A standby that sees a newer epoch than its own knows its promotion was
    /// committed (the name is bound to it first when the manager grants the lease with the
    /// promotion) and keeps the stimulus until the directive arrives.
    pub bound_at: Epoch,
    /// The stimulus itself.
    pub body: U::Stimulus,
    /// The thread it belongs to: its calls carry it on.
    pub trace: TraceId,
    /// Where the answer goes.
    pub reply: ReplyToken,
}

/// When a copy's core next needs [`Input::Tick`] ([`CopyCore::next_tick`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextTick {
    /// At the driver's regular period: something is under way (a lease asked for while
    /// promoting, stimuli parked, updates the standby has not acknowledged, a snapshot to
    /// resend, a hand-over).
    Regular,
    /// Not before this time: an idle primary's next lease renewal (or its retry).
    At(Time),
    /// Not at all until another input comes: an idle standby, or a fenced copy.
    Never,
}

/// An input to the core.
#[derive(Clone, Debug)]
pub enum Input<U: Unit> {
    /// A stimulus from a client.
    Stimulus(StimulusIn<U>),
    /// A message from the other copy.
    Peer(PeerMsg<U>),
    /// An order from the group manager.
    Directive(Directive),
    /// Time passed: renew the lease, resend what is unacknowledged, expire parked stimuli.
    Tick,
    /// The outcome of a call the core asked for with [`Command::Call`].
    CallReply {
        /// The call.
        call: CallToken,
        /// Its outcome.
        reply: CallReply,
    },
    /// A unit this unit calls became unavailable or came back (the driver watches the name
    /// table); the primary runs the unit's degraded-mode hook and replicates what it changed.
    Dependency(DependencyChange),
}

/// What the driver must do.
#[derive(Clone, Debug)]
pub enum Command<U: Unit> {
    /// Answer a caller.
    Reply {
        /// The caller.
        to: ReplyToken,
        /// The answer or the refusal.
        outcome: Result<U::Response, Refusal>,
        /// The copy's epoch as it answers: the epoch it served at, for an answer.
        epoch: Epoch,
        /// How far the answer's effects had reached the standby (always durable under the
        /// synchronous strategy and for refusals).
        durability: Durability,
        /// Whether the unit served it in its degraded mode (a unit it calls is unavailable).
        degraded: bool,
    },
    /// Call another unit on behalf of the stimulus being served, and feed the outcome back as
    /// [`Input::CallReply`] with the same token. The id is derived from the upstream stimulus,
    /// so the same call made again after a takeover is recognised by the called unit.
    Call {
        /// Names the call.
        call: CallToken,
        /// The unit to call.
        unit: UnitName,
        /// The call's stimulus id.
        id: StimulusId,
        /// The low-water mark to send with it.
        low_water: Seq,
        /// The encoded stimulus.
        body: Vec<u8>,
        /// What is left of the upstream stimulus's `T_max`: the call's own budget.
        t_max: Duration,
        /// The upstream stimulus, which the call is made for.
        upstream: StimulusId,
        /// Its thread, which the call belongs to.
        trace: TraceId,
    },
    /// Send to the other copy.
    ToPeer {
        /// The receiving copy.
        to: CopyId,
        /// The message.
        msg: PeerMsg<U>,
    },
    /// Tell the group manager.
    ToManager(Report),
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    epoch: Epoch,
    until: Time,
    duration: Duration,
    asked_at: Option<Time>,
}

#[derive(Clone, Copy, Debug)]
struct StandbyLink {
    id: CopyId,
    snapshot: BatchSeq,
    ready: bool,
    last_send: Time,
}

#[derive(Debug)]
struct Assembly<U: Unit> {
    from: CopyId,
    seq: BatchSeq,
    parts: Vec<Option<Vec<Entry<U>>>>,
}

#[derive(Debug)]
struct Parked<U: Unit> {
    stimulus: StimulusIn<U>,
    since: Time,
}

/// A held answer.
#[derive(Debug)]
struct Waiter<R> {
    to: ReplyToken,
    response: R,
    /// The batch that completes the state the answer depends on.
    batch: BatchSeq,
}

/// What waits for the standby's acknowledgement of a batch.
#[derive(Debug)]
enum Held<R> {
    /// An answer.
    Answer(Waiter<R>),
    /// A stimulus whose begin must be committed before it is handled (in-flight knowledge).
    Begun(StimulusId),
}

/// Where an open stimulus stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its begin is on its way to the standby.
    Committing,
    /// It may be handled (again, with the replies so far) as soon as it is first in line.
    Ready,
    /// One of its calls is out.
    Calling(CallToken),
}

/// A stimulus taken on and not yet finished: waiting for its begin to be committed, for its
/// turn, or for a call. The unit handles them one at a time, in the order they came.
#[derive(Debug)]
struct Open<U: Unit> {
    id: StimulusId,
    low_water: Seq,
    body: U::Stimulus,
    /// Callers waiting for its answer (a retry joins the first attempt).
    waiters: Vec<ReplyToken>,
    phase: Phase,
    /// A begin entry stands for it in the stream: its end must follow, even for a read.
    begun: bool,
    /// The replies to its calls so far.
    replies: Vec<CallReply>,
    /// When its `T_max` runs out, on this copy's clock.
    deadline: Time,
    /// The thread it belongs to.
    trace: TraceId,
}

impl<U: Unit> Open<U> {
    /// Its begin, as the stream carries it.
    fn begun(&self) -> Begun<U> {
        Begun {
            id: self.id,
            low_water: self.low_water,
            body: self.body.clone(),
            trace: Some(self.trace),
        }
    }
}

/// What a new standby is seeded with, as of the batch its snapshot stands for.
#[derive(Debug)]
struct Seed<U: Unit> {
    state: U::State,
    dedupe: DedupeTable<U::Response>,
    open: Vec<Begun<U>>,
    deps_down: BTreeSet<UnitName>,
}

/// One copy of a unit: its state, dedupe table, role and replication.
#[derive(Debug)]
pub struct CopyCore<U: Unit> {
    unit: U,
    name: UnitName,
    id: CopyId,
    /// The stimulus whose handler runs right now (read if the handler panics).
    handling: Option<StimulusId>,
    config: CopyConfig,
    role: Role,
    epoch: Epoch,
    state: U::State,
    dedupe: DedupeTable<U::Response>,
    // Standby side.
    primary: Option<CopyId>,
    has_state: bool,
    applied: BatchSeq,
    assembly: Option<Assembly<U>>,
    // Primary side.
    lease: Option<Lease>,
    promoted_at: Option<Time>,
    standby: Option<StandbyLink>,
    /// The newest standby the group manager ever assigned. Copy ids grow (the manager hands
    /// them out in increasing order), so a delayed `AssignStandby` naming an older copy is
    /// stale and must not take the primary back to a standby the manager gave up on.
    newest_assigned: CopyId,
    /// The snapshot the standby is being seeded with: the state and dedupe table as of
    /// `StandbyLink::snapshot`, taken when it was sealed, so a resend carries exactly that
    /// state and not entries served since (those follow in the next batch).
    seed: Option<Seed<U>>,
    replicator: Replicator<U, Held<U::Response>>,
    /// Stimuli taken on and not finished, first in line first (primary).
    open: VecDeque<Open<U>>,
    /// Stimuli begun and not ended, as the stream said (standby; in-flight knowledge).
    begun: Vec<Begun<U>>,
    /// The units this unit calls that are unavailable (replicated with the stream).
    deps_down: BTreeSet<UnitName>,
    next_call: u64,
    /// Counts of what reconciliation and unknown call outcomes did on this copy.
    reconciled: Reconciled,
    /// When the oldest entry of the open batch was first seen unsealed (trailing, batched).
    open_since: Option<Time>,
    /// A planned switchover was asked for: take no new stimuli, hand over once all is acked.
    handing_over: bool,
    /// The standby this copy handed over to, to say so again if the report was lost.
    handed_over_to: Option<CopyId>,
    parked: VecDeque<Parked<U>>,
    commands: Vec<Command<U>>,
}

impl<U: Unit> CopyCore<U> {
    /// The first copy of a new unit: empty state, about to become primary at `epoch`
    /// (it asks for its lease on its first tick).
    pub fn new_initial(
        unit: U,
        name: UnitName,
        id: CopyId,
        epoch: Epoch,
        config: CopyConfig,
    ) -> Self {
        let mut core = Self::blank(unit, name, id, epoch, config);
        core.role = Role::Promoting;
        core.has_state = true;
        core
    }

    /// A new standby of `primary` at `epoch`; it has no state until the primary's snapshot
    /// arrives.
    pub fn new_standby(
        unit: U,
        name: UnitName,
        id: CopyId,
        epoch: Epoch,
        primary: CopyId,
        config: CopyConfig,
    ) -> Self {
        let mut core = Self::blank(unit, name, id, epoch, config);
        core.primary = Some(primary);
        core
    }

    fn blank(unit: U, name: UnitName, id: CopyId, epoch: Epoch, config: CopyConfig) -> Self {
        CopyCore {
            unit,
            name,
            id,
            handling: None,
            config,
            role: Role::Standby,
            epoch,
            state: U::State::default(),
            dedupe: DedupeTable::new(config.dedupe),
            primary: None,
            has_state: false,
            applied: BatchSeq(0),
            assembly: None,
            lease: None,
            promoted_at: None,
            standby: None,
            newest_assigned: CopyId(0),
            seed: None,
            replicator: Replicator::new(config.strategy, BatchSeq(0), config.window),
            open: VecDeque::new(),
            begun: Vec::new(),
            deps_down: BTreeSet::new(),
            next_call: 0,
            reconciled: Reconciled::default(),
            open_since: None,
            handing_over: false,
            handed_over_to: None,
            parked: VecDeque::new(),
            commands: Vec::new(),
        }
    }

    /// This copy's id.
    pub fn id(&self) -> CopyId {
        self.id
    }

    /// The unit's name.
    pub fn unit_name(&self) -> &UnitName {
        &self.name
    }

    /// The unit's behaviour.
    pub fn unit(&self) -> &U {
        &self.unit
    }

    /// The stimulus whose handler runs right now: `Some` only inside [`CopyCore::step`], so
    /// only a caller that caught a panic of the handler sees it (the stimulus that panicked).
    pub fn handling(&self) -> Option<StimulusId> {
        self.handling
    }

    /// This copy's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The newest epoch this copy knows.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The unit's state as this copy holds it.
    pub fn state(&self) -> &U::State {
        &self.state
    }

    /// The last batch applied (standby) or sealed (primary).
    pub fn applied(&self) -> BatchSeq {
        match self.role {
            Role::Primary | Role::Promoting => self.replicator.sealed(),
            _ => self.applied,
        }
    }

    /// The primary this standby follows.
    pub fn primary(&self) -> Option<CopyId> {
        self.primary
    }

    /// Stimuli begun and not ended that this copy knows of: as a standby, from the stream (in
    /// the order they began); as a primary, those it has taken on and not finished.
    pub fn open_stimuli(&self) -> Vec<StimulusId> {
        match self.role {
            Role::Standby => self.begun.iter().map(|b| b.id).collect(),
            _ => self.open.iter().map(|o| o.id).collect(),
        }
    }

    /// What reconciliation did on this copy so far.
    pub fn reconciled(&self) -> Reconciled {
        self.reconciled
    }

    /// Whether this copy counts `unit` (one it calls) as unavailable.
    pub fn dependency_down(&self, unit: &UnitName) -> bool {
        self.deps_down.contains(unit)
    }

    /// Whether the unit is in its degraded mode: a unit it calls is unavailable.
    pub fn degraded(&self) -> bool {
        !self.deps_down.is_empty()
    }

    /// How many entries wait unsealed on the primary.
    pub fn open_entries(&self) -> usize {
        self.replicator.open_len()
    }

    /// Whether the copy would serve a stimulus at `now`: primary with a live lease.
    pub fn is_serving(&self, now: Time) -> bool {
        self.role == Role::Primary && self.lease_live(now)
    }

    /// When the copy's lease (as it counts it) runs out, if it holds one.
    pub fn lease_until(&self) -> Option<Time> {
        self.lease
            .filter(|l| l.epoch == self.epoch)
            .map(|l| l.until)
    }

    /// When the core next needs a tick. A copy with nothing under way needs none (a standby
    /// waits for its primary) or one at its next lease renewal (an idle primary), so a node of
    /// a thousand idle copies is not woken a hundred times a second per copy; anything under
    /// way asks for the regular period, which the copy's timers (lease retry, resend, park
    /// timeout, trailing seal) are counted in. A primary whose unit calls other units
    /// (`calls_other_units`) ticks at the regular period too: on each tick its copy reads the
    /// name table for those units, to learn when one becomes unavailable or comes back.
    pub fn next_tick(&self, calls_other_units: bool) -> NextTick {
        let watching = calls_other_units && self.role == Role::Primary;
        let busy = watching
            || self.role == Role::Promoting
            || !self.parked.is_empty()
            || !self.open.is_empty()
            || self.handing_over
            || self.replicator.pending()
            || self.standby.is_some_and(|l| !l.ready);
        if busy {
            return NextTick::Regular;
        }
        match self.role {
            Role::Primary => match self.lease.filter(|l| l.epoch == self.epoch) {
                Some(Lease {
                    asked_at: Some(asked),
                    ..
                }) => NextTick::At(asked.after(self.config.lease_retry)),
                Some(l) => NextTick::At(Self::renew_from(&l)),
                None => NextTick::Regular,
            },
            Role::Standby | Role::Fenced | Role::Promoting => NextTick::Never,
        }
    }

    /// When a primary asks to renew `lease`: once a third of it has passed.
    fn renew_from(lease: &Lease) -> Time {
        Time(
            lease.until.0.saturating_sub(
                u64::try_from(lease.duration.as_micros() * 2 / 3).unwrap_or(u64::MAX),
            ),
        )
    }

    /// The commands produced since the last drain.
    pub fn drain_commands(&mut self) -> Vec<Command<U>> {
        std::mem::take(&mut self.commands)
    }

    /// Feed one input at time `now`.
    pub fn step(&mut self, now: Time, input: Input<U>) {
        match input {
            Input::Stimulus(s) => self.on_stimulus(now, s),
            Input::Peer(msg) => self.on_peer(now, msg),
            Input::Directive(d) => self.on_directive(now, d),
            Input::Tick => self.on_tick(now),
            Input::CallReply { call, reply } => self.on_call_reply(call, reply),
            Input::Dependency(change) => self.on_dependency(change),
        }
        self.advance(now);
        self.flush(now);
    }

    fn lease_live(&self, now: Time) -> bool {
        self.lease
            .is_some_and(|l| l.epoch == self.epoch && now < l.until)
    }

    fn reply(&mut self, to: ReplyToken, outcome: Result<U::Response, Refusal>) {
        let epoch = self.epoch;
        let durability = Durability::default();
        let degraded = self.degraded();
        self.commands.push(Command::Reply {
            to,
            outcome,
            epoch,
            durability,
            degraded,
        });
    }

    /// Answer a served stimulus whose effects are complete with the waiter's batch.
    fn answer(&mut self, w: Waiter<U::Response>) {
        let epoch = self.epoch;
        let durability = self.replicator.durability(w.batch);
        let degraded = self.degraded();
        self.commands.push(Command::Reply {
            to: w.to,
            outcome: Ok(w.response),
            epoch,
            durability,
            degraded,
        });
    }

    /// What the standby's acknowledgement released: answers go out, committed begins may be
    /// handled.
    fn release(&mut self, held: Vec<Held<U::Response>>) {
        for h in held {
            match h {
                Held::Answer(w) => self.answer(w),
                Held::Begun(id) => {
                    if let Some(o) = self.open.iter_mut().find(|o| o.id == id) {
                        if o.phase == Phase::Committing {
                            o.phase = Phase::Ready;
                        }
                    }
                }
            }
        }
    }

    fn report(&mut self, r: Report) {
        self.commands.push(Command::ToManager(r));
    }

    // ---- stimuli -------------------------------------------------------------------------

    fn on_stimulus(&mut self, now: Time, s: StimulusIn<U>) {
        match self.role {
            // Sent by a binding newer than this standby knows: its promotion is committed
            // and on the way; the stimulus waits for it (or is refused at the park timeout).
            Role::Standby if s.bound_at > self.epoch => self.park(now, s),
            Role::Standby | Role::Fenced => {
                let epoch = self.epoch;
                self.reply(s.reply, Err(Refusal::NotPrimary { epoch }));
            }
            Role::Promoting => self.park(now, s),
            Role::Primary if self.handing_over || !self.lease_live(now) => self.park(now, s),
            Role::Primary => self.serve(now, s),
        }
    }

    fn park(&mut self, now: Time, s: StimulusIn<U>) {
        if self.parked.len() >= self.config.max_parked {
            let parked = self.parked.len();
            self.reply(s.reply, Err(Refusal::Overloaded { parked }));
            return;
        }
        self.parked.push_back(Parked {
            stimulus: s,
            since: now,
        });
    }

    /// Take a stimulus on: answer it from the dedupe table, join it to its first attempt, or
    /// queue it (committing its begin first under in-flight knowledge). [`Self::advance`]
    /// handles what is queued.
    fn serve(&mut self, now: Time, s: StimulusIn<U>) {
        let answered = match self.dedupe.seen(s.id, s.low_water) {
            Seen::New => None,
            Seen::Answered(a) => Some(a.clone()),
            Seen::Superseded { low_water } => {
                self.reply(
                    s.reply,
                    Err(Refusal::Superseded {
                        stimulus: s.id,
                        low_water,
                    }),
                );
                return;
            }
            Seen::AnswerForgotten => {
                let stimulus = s.id;
                self.reply(s.reply, Err(Refusal::AnswerForgotten { stimulus }));
                return;
            }
            Seen::SessionExpired => {
                let client = s.id.client;
                self.reply(s.reply, Err(Refusal::SessionExpired { client }));
                return;
            }
            Seen::Ignored => {
                let stimulus = s.id;
                self.reply(s.reply, Err(Refusal::Ignored { stimulus }));
                return;
            }
        };
        if let Some(a) = answered {
            let waiter = Waiter {
                to: s.reply,
                response: a.response,
                batch: a.batch,
            };
            if let Some(Held::Answer(w)) = self.replicator.hold_until(a.batch, Held::Answer(waiter))
            {
                self.answer(w);
            }
            return;
        }
        if let Some(o) = self.open.iter_mut().find(|o| o.id == s.id) {
            o.waiters.push(s.reply);
            return;
        }
        if self.open.len() >= self.config.max_parked {
            // A call that is slow to return holds the line: do not let it grow without bound.
            let parked = self.open.len();
            self.reply(s.reply, Err(Refusal::Overloaded { parked }));
            return;
        }
        let deadline = now.after(self.unit.budget(&s.body).t_max());
        let mut open: Open<U> = Open {
            id: s.id,
            low_water: s.low_water,
            body: s.body,
            waiters: vec![s.reply],
            phase: Phase::Ready,
            begun: false,
            replies: Vec::new(),
            deadline,
            trace: s.trace,
        };
        if self.config.in_flight {
            open.begun = true;
            open.phase = Phase::Committing;
            self.replicator
                .commit(Entry::Begun(open.begun()), Held::Begun(open.id));
        }
        self.open.push_back(open);
    }

    /// Handle the stimuli in line, first first, while this copy serves: each runs until it
    /// answers or makes a call (then the line waits for the call's reply, so a unit's state
    /// does not change under a stimulus whose call is out).
    fn advance(&mut self, now: Time) {
        while self.role == Role::Primary && self.lease_live(now) {
            let Some(front) = self.open.front() else {
                break;
            };
            if front.phase != Phase::Ready {
                break;
            }
            self.handling = Some(front.id);
            let step = self
                .unit
                .handle_with(&self.state, &front.body, &front.replies);
            self.handling = None;
            match step {
                Step::Call(_) if !front.begun => self.begin_before_calling(),
                Step::Call(call) => self.start_call(now, call),
                Step::Done(handled) => {
                    if let Some(o) = self.open.pop_front() {
                        self.finish(o, handled);
                    }
                }
            }
        }
    }

    /// The first stimulus is about to call another unit and its begin is not in the stream
    /// yet: commit it first, whatever the configuration, so that a promoted standby serves it
    /// again — first, from the state it began in — rather than leave the called unit's effect
    /// without its cause. The handler runs again once the begin is acknowledged.
    fn begin_before_calling(&mut self) {
        let Some(front) = self.open.front_mut() else {
            return;
        };
        front.begun = true;
        front.phase = Phase::Committing;
        let (begun, id) = (front.begun(), front.id);
        self.replicator.commit(Entry::Begun(begun), Held::Begun(id));
    }

    /// Ask the driver to make the first stimulus's next call, with an id derived from it.
    fn start_call(&mut self, now: Time, call: Outcall) {
        let Some(front) = self.open.front_mut() else {
            return;
        };
        let index = front.replies.len() as u64;
        let body = match call.body {
            Ok(body) if index < CALLS_PER_STIMULUS => body,
            Ok(_) => {
                let outcome = Err(CallFailure::TooManyCalls);
                front.replies.push(CallReply {
                    unit: call.unit,
                    outcome,
                });
                return;
            }
            Err(reason) => {
                let unit = call.unit.clone();
                let outcome = Err(CallFailure::BadStimulus { unit, reason });
                front.replies.push(CallReply {
                    unit: call.unit,
                    outcome,
                });
                return;
            }
        };
        self.next_call += 1;
        let token = CallToken(self.next_call);
        front.phase = Phase::Calling(token);
        // What is left of the upstream stimulus's budget; once that ran out (a call sent again
        // because its outcome is unknown), a whole budget again.
        let left = front.deadline.since(now);
        let t_max = if left < Duration::from_millis(1) {
            self.unit.budget(&front.body).t_max()
        } else {
            left
        };
        let command = Command::Call {
            call: token,
            unit: call.unit,
            id: derived_id(&self.name, front.id, index),
            low_water: derived_low_water(front.low_water),
            body,
            t_max,
            upstream: front.id,
            trace: front.trace,
        };
        self.commands.push(command);
    }

    /// A call's outcome. An unknown one (no answer in time: the called unit may have acted)
    /// is not the handler's to judge: the handler runs again without it and makes the same
    /// call, with the same id, so the called unit answers what it did.
    fn on_call_reply(&mut self, call: CallToken, reply: CallReply) {
        if let Some(front) = self.open.front_mut() {
            if front.phase == Phase::Calling(call) {
                if !matches!(reply.outcome, Err(CallFailure::DeadlineExceeded { .. })) {
                    front.replies.push(reply);
                } else {
                    self.reconciled.calls_resent += 1;
                }
                front.phase = Phase::Ready;
            }
        }
    }

    /// A stimulus is served: apply its updates, record its answer, send its end to the
    /// standby, and answer every caller waiting for it as the strategy says.
    fn finish(&mut self, o: Open<U>, handled: Handled<U>) {
        let mut batch = self.replicator.position();
        if !handled.updates.is_empty() || o.begun {
            for u in &handled.updates {
                self.unit.apply(&mut self.state, u);
            }
            batch = self.replicator.sealed().next();
            let answered = Answered {
                response: handled.response.clone(),
                batch,
            };
            self.dedupe.record(o.id, o.low_water, answered);
            self.replicator.append(Entry::Served {
                id: o.id,
                low_water: o.low_water,
                updates: handled.updates,
                response: handled.response.clone(),
            });
        }
        for to in o.waiters {
            let waiter = Waiter {
                to,
                response: handled.response.clone(),
                batch,
            };
            if let Some(Held::Answer(w)) = self.replicator.hold_until(batch, Held::Answer(waiter)) {
                self.answer(w);
            }
        }
    }

    /// A unit this unit calls became unavailable or came back: on the primary, run the unit's
    /// hook once per change and replicate what it changed (the standby follows the stream).
    fn on_dependency(&mut self, change: DependencyChange) {
        if !matches!(self.role, Role::Primary | Role::Promoting) {
            return;
        }
        let (name, down) = match &change {
            DependencyChange::Unavailable { unit } => (UnitName::new(unit.clone()), true),
            DependencyChange::Available { unit } => (UnitName::new(unit.clone()), false),
        };
        if self.deps_down.contains(&name) == down {
            return;
        }
        if self.open.iter().any(|o| o.begun) {
            // Not under a stimulus that may be served again: its state must stay the one it
            // began in. The driver tells again on its next tick.
            return;
        }
        let updates = self.unit.on_dependency_change(&self.state, &change);
        for u in &updates {
            self.unit.apply(&mut self.state, u);
        }
        self.note_dependency(&change);
        self.replicator
            .append(Entry::Dependency { change, updates });
    }

    fn note_dependency(&mut self, change: &DependencyChange) {
        match change {
            DependencyChange::Unavailable { unit } => {
                self.deps_down.insert(UnitName::new(unit.clone()));
            }
            DependencyChange::Available { unit } => {
                self.deps_down.remove(&UnitName::new(unit.clone()));
            }
        }
    }

    fn serve_parked(&mut self, now: Time) {
        while self.role == Role::Primary && !self.handing_over && self.lease_live(now) {
            let Some(p) = self.parked.pop_front() else {
                break;
            };
            self.serve(now, p.stimulus);
        }
    }

    // ---- peer messages -------------------------------------------------------------------

    fn on_peer(&mut self, now: Time, msg: PeerMsg<U>) {
        let their = msg.epoch();
        match msg {
            PeerMsg::Refuse { current, .. } => {
                if current > self.epoch {
                    self.fence(current);
                }
            }
            PeerMsg::Ack { epoch, from, upto } => {
                if epoch < self.epoch {
                    // A stale acknowledgement: drop it (replies carry their request's epoch).
                    return;
                }
                if epoch > self.epoch {
                    self.fence(epoch);
                    return;
                }
                self.on_ack(now, from, upto);
            }
            PeerMsg::Replicate {
                from,
                seq,
                part,
                parts,
                entries,
                ..
            } => {
                if !self.accept_from_primary(their, from) {
                    return;
                }
                self.on_replicate(from, seq, part, parts, entries);
            }
            PeerMsg::Snapshot {
                from,
                seq,
                state,
                dedupe,
                open,
                deps_down,
                ..
            } => {
                if !self.accept_from_primary(their, from) {
                    return;
                }
                let seed = Seed {
                    state,
                    dedupe,
                    open,
                    deps_down,
                };
                self.on_snapshot(from, seq, seed);
            }
        }
    }

    /// The epoch check for messages that only a primary sends. Returns whether to go on.
    fn accept_from_primary(&mut self, their: Epoch, from: CopyId) -> bool {
        if their < self.epoch {
            let current = self.epoch;
            self.commands.push(Command::ToPeer {
                to: from,
                msg: PeerMsg::Refuse {
                    current,
                    from: self.id,
                },
            });
            return false;
        }
        match self.role {
            Role::Standby => {
                if their > self.epoch {
                    // A primary of a newer epoch we were not told about: follow it, from a
                    // snapshot.
                    self.epoch = their;
                    self.primary = Some(from);
                    self.has_state = false;
                    self.assembly = None;
                }
                self.primary == Some(from)
            }
            Role::Promoting | Role::Primary => {
                if their > self.epoch {
                    self.fence(their);
                }
                false
            }
            Role::Fenced => false,
        }
    }

    fn on_replicate(
        &mut self,
        from: CopyId,
        seq: BatchSeq,
        part: u32,
        parts: u32,
        entries: Vec<Entry<U>>,
    ) {
        if !self.has_state || seq != self.applied.next() {
            // Not ready (no snapshot yet), a duplicate, or a gap: tell the primary where we are.
            self.ack(from);
            return;
        }
        let parts = parts.max(1) as usize;
        let part = part as usize;
        if part >= parts {
            return;
        }
        let fresh = match &self.assembly {
            Some(a) => a.seq != seq || a.from != from || a.parts.len() != parts,
            None => true,
        };
        if fresh {
            self.assembly = Some(Assembly {
                from,
                seq,
                parts: (0..parts).map(|_| None).collect(),
            });
        }
        let Some(assembly) = self.assembly.as_mut() else {
            return;
        };
        assembly.parts[part] = Some(entries);
        if assembly.parts.iter().any(Option::is_none) {
            return;
        }
        let Some(whole) = self.assembly.take() else {
            return;
        };
        for entries in whole.parts.into_iter().flatten() {
            for e in entries {
                self.apply_entry(e, seq);
            }
        }
        self.applied = seq;
        self.ack(from);
    }

    /// The standby applies one entry of a whole batch `seq`.
    fn apply_entry(&mut self, e: Entry<U>, seq: BatchSeq) {
        match e {
            Entry::Served {
                id,
                low_water,
                updates,
                response,
            } => {
                for u in &updates {
                    self.unit.apply(&mut self.state, u);
                }
                let answered = Answered {
                    response,
                    batch: seq,
                };
                self.dedupe.record(id, low_water, answered);
                self.begun.retain(|b| b.id != id);
            }
            Entry::Begun(b) => self.begun.push(b),
            Entry::Ignored { id, low_water } => {
                self.dedupe.record_ignored(id, low_water);
                self.begun.retain(|b| b.id != id);
            }
            Entry::Dependency { change, updates } => {
                for u in &updates {
                    self.unit.apply(&mut self.state, u);
                }
                self.note_dependency(&change);
            }
        }
    }

    fn on_snapshot(&mut self, from: CopyId, seq: BatchSeq, seed: Seed<U>) {
        if self.has_state && seq <= self.applied {
            self.ack(from);
            return;
        }
        match self.unit.restore(seed.state) {
            Ok(restored) => {
                self.state = restored;
                self.dedupe = seed.dedupe;
                self.begun = seed.open;
                self.deps_down = seed.deps_down;
                self.applied = seq;
                self.assembly = None;
                self.has_state = true;
                self.ack(from);
                let (unit, copy, epoch) = (self.name.clone(), self.id, self.epoch);
                self.report(Report::StandbyReady { unit, copy, epoch });
            }
            Err(_) => {
                // A snapshot the unit cannot use: stay without state; the primary resends.
            }
        }
    }

    fn ack(&mut self, to: CopyId) {
        let msg = PeerMsg::Ack {
            epoch: self.epoch,
            from: self.id,
            upto: self.applied,
        };
        self.commands.push(Command::ToPeer { to, msg });
    }

    fn on_ack(&mut self, now: Time, from: CopyId, upto: BatchSeq) {
        if !matches!(self.role, Role::Primary | Role::Promoting) {
            return;
        }
        let Some(link) = self.standby.as_mut() else {
            return;
        };
        if link.id != from {
            return;
        }
        if !link.ready {
            if upto < link.snapshot {
                // The standby answered before the snapshot landed: send it again.
                link.last_send = Time::ZERO;
                return;
            }
            link.ready = true;
            self.seed = None;
        }
        let _ = now;
        let released = self.replicator.on_ack(upto);
        self.release(released);
    }

    // ---- directives ----------------------------------------------------------------------

    fn on_directive(&mut self, now: Time, d: Directive) {
        match d {
            Directive::Fence { current } => {
                if current > self.epoch || (current == self.epoch && self.role == Role::Standby) {
                    self.fence(current);
                }
            }
            Directive::Promote { epoch, lease } => {
                self.on_promote(now, epoch);
                if let Some(grant) = lease {
                    self.take_lease(now, epoch, grant.from, grant.duration);
                }
            }
            Directive::HandOver { epoch } => {
                if epoch == self.epoch && self.role == Role::Primary {
                    self.handing_over = true;
                } else if let (Some(standby), true) = (self.handed_over_to, epoch == self.epoch) {
                    // Asked again: the report was lost. Say it again.
                    let (unit, copy) = (self.name.clone(), self.id);
                    self.report(Report::HandedOver {
                        unit,
                        copy,
                        epoch,
                        standby,
                    });
                }
            }
            Directive::AssignStandby { epoch, standby } => {
                if self.role == Role::Standby && standby == Some(self.id) && epoch == self.epoch {
                    // Sent to the standby itself: the manager has not heard that it is ready
                    // (the report may have been lost). Say it again if it is.
                    if self.has_state {
                        let (unit, copy) = (self.name.clone(), self.id);
                        self.report(Report::StandbyReady { unit, copy, epoch });
                    }
                    return;
                }
                if epoch != self.epoch || !matches!(self.role, Role::Primary | Role::Promoting) {
                    return;
                }
                if let Some(id) = standby {
                    if id < self.newest_assigned {
                        // Overtaken by a newer assignment: the manager no longer counts on
                        // this copy (it may be a zombie), so replicating to it would release
                        // answers that the manager's standby does not have.
                        return;
                    }
                    self.newest_assigned = id;
                }
                if self.standby.map(|l| l.id) == standby {
                    return;
                }
                self.standby = standby.map(|id| StandbyLink {
                    id,
                    snapshot: BatchSeq(0),
                    ready: false,
                    last_send: Time::ZERO,
                });
                self.seed = None;
                if self.standby.is_some() {
                    let snap = self.replicator.seal_for_snapshot();
                    if let Some(link) = self.standby.as_mut() {
                        link.snapshot = snap;
                    }
                    let open = self
                        .open
                        .iter()
                        .filter(|o| o.begun)
                        .map(Open::begun)
                        .collect();
                    self.seed = Some(Seed {
                        state: self.unit.snapshot(&self.state),
                        dedupe: self.dedupe.clone(),
                        open,
                        deps_down: self.deps_down.clone(),
                    });
                }
            }
            Directive::Lease {
                epoch,
                requested_at,
                duration,
            } => self.take_lease(now, epoch, requested_at, duration),
        }
    }

    /// A lease for `epoch` from `from` (on this node's clock) for `duration`: kept if it ends
    /// later than the one held; a promoting copy with a live lease becomes the primary and
    /// serves what it parked.
    fn take_lease(&mut self, now: Time, epoch: Epoch, from: Time, duration: Duration) {
        if epoch != self.epoch || !matches!(self.role, Role::Primary | Role::Promoting) {
            return;
        }
        let until = from.after(duration);
        let better = self
            .lease
            .is_none_or(|l| l.epoch != epoch || until > l.until);
        if better {
            self.lease = Some(Lease {
                epoch,
                until,
                duration,
                asked_at: None,
            });
        }
        if self.role == Role::Promoting && self.lease_live(now) {
            self.role = Role::Primary;
        }
        self.serve_parked(now);
    }

    fn on_promote(&mut self, now: Time, epoch: Epoch) {
        if epoch < self.epoch || self.role == Role::Fenced {
            return;
        }
        match self.role {
            Role::Standby => {
                if !self.has_state {
                    let (unit, copy) = (self.name.clone(), self.id);
                    self.report(Report::CannotPromote { unit, copy, epoch });
                    return;
                }
                // Takeover step 3, the consistency check: a batch not wholly received is
                // dropped; the state is exactly that of the last whole batch.
                self.assembly = None;
                self.epoch = epoch;
                self.primary = None;
                self.role = Role::Promoting;
                self.replicator =
                    Replicator::new(self.config.strategy, self.applied, self.config.window);
                self.open_since = None;
                self.reconcile_open(now);
                self.ask_promoted(now);
            }
            Role::Promoting | Role::Primary if epoch == self.epoch => self.ask_promoted(now),
            Role::Promoting | Role::Primary => {
                // Promoted again at a newer epoch without having lost the role: it cannot
                // happen with one group manager; treat the older role as stale.
                self.fence(epoch);
            }
            Role::Fenced => {}
        }
    }

    /// Takeover step 4, in-flight knowledge: every stimulus the old primary had begun and not
    /// finished is, as the unit decides, queued to be served again first (its calls carry the
    /// same ids, so a called unit that had acted answers from its table) or recorded as
    /// ignored (its caller's retry is refused as such). Nothing open is dropped silently.
    fn reconcile_open(&mut self, now: Time) {
        for b in std::mem::take(&mut self.begun) {
            match self.unit.on_open_at_takeover(&self.state, &b.body) {
                Reconcile::Reprocess => {
                    self.reconciled.served_again += 1;
                    let deadline = now.after(self.unit.budget(&b.body).t_max());
                    self.open.push_back(Open {
                        id: b.id,
                        low_water: b.low_water,
                        body: b.body,
                        waiters: Vec::new(),
                        phase: Phase::Ready,
                        begun: true,
                        replies: Vec::new(),
                        deadline,
                        trace: b.trace.unwrap_or(TraceId::root(b.id)),
                    });
                }
                Reconcile::Ignore => {
                    self.reconciled.ignored += 1;
                    self.dedupe.record_ignored(b.id, b.low_water);
                    self.replicator.append(Entry::Ignored {
                        id: b.id,
                        low_water: b.low_water,
                    });
                }
            }
        }
    }

    fn ask_promoted(&mut self, now: Time) {
        self.promoted_at = Some(now);
        let (unit, copy, epoch) = (self.name.clone(), self.id, self.epoch);
        self.report(Report::Promoted {
            unit,
            copy,
            epoch,
            requested_at: now,
        });
    }

    fn fence(&mut self, current: Epoch) {
        if self.role == Role::Fenced {
            return;
        }
        self.role = Role::Fenced;
        self.epoch = self.epoch.max(current);
        let epoch = self.epoch;
        for h in self.replicator.drain_waiters() {
            if let Held::Answer(w) = h {
                self.reply(w.to, Err(Refusal::NotPrimary { epoch }));
            }
        }
        for o in std::mem::take(&mut self.open) {
            for to in o.waiters {
                self.reply(to, Err(Refusal::NotPrimary { epoch }));
            }
        }
        while let Some(p) = self.parked.pop_front() {
            self.reply(p.stimulus.reply, Err(Refusal::NotPrimary { epoch }));
        }
        self.assembly = None;
        self.standby = None;
        self.seed = None;
        self.lease = None;
        let (unit, copy) = (self.name.clone(), self.id);
        self.report(Report::Fenced {
            unit,
            copy,
            current: epoch,
        });
    }

    // ---- time ----------------------------------------------------------------------------

    fn on_tick(&mut self, now: Time) {
        match self.role {
            Role::Promoting => {
                let due = self
                    .promoted_at
                    .is_none_or(|t| now.since(t) >= self.config.lease_retry);
                if due {
                    self.ask_promoted(now);
                }
            }
            Role::Primary => self.renew_lease(now),
            Role::Standby | Role::Fenced => {}
        }
        self.expire_parked(now);
        if let Some(link) = self.standby.as_mut() {
            if now.since(link.last_send) >= self.config.resend_after {
                link.last_send = Time::ZERO;
            }
        }
    }

    fn renew_lease(&mut self, now: Time) {
        let Some(lease) = self.lease else {
            return;
        };
        if now < Self::renew_from(&lease) {
            return;
        }
        if lease
            .asked_at
            .is_some_and(|t| now.since(t) < self.config.lease_retry)
        {
            return;
        }
        if let Some(l) = self.lease.as_mut() {
            l.asked_at = Some(now);
        }
        let (unit, copy, epoch) = (self.name.clone(), self.id, self.epoch);
        self.report(Report::LeaseRequest {
            unit,
            copy,
            epoch,
            requested_at: now,
        });
    }

    fn expire_parked(&mut self, now: Time) {
        let epoch = self.epoch;
        while self
            .parked
            .front()
            .is_some_and(|p| now.since(p.since) >= self.config.park_timeout)
        {
            if let Some(p) = self.parked.pop_front() {
                self.reply(p.stimulus.reply, Err(Refusal::LeaseLapsed { epoch }));
            }
        }
    }

    /// Send what the replication stream owes the standby: the snapshot, batches to resend,
    /// and a newly sealed batch if the window has room.
    fn flush(&mut self, now: Time) {
        if !matches!(self.role, Role::Primary | Role::Promoting) {
            return;
        }
        self.finish_hand_over();
        if self.role == Role::Fenced {
            return;
        }
        let trailing = matches!(self.replicator.strategy(), Strategy::Trailing(_));
        let Some(link) = self.standby else {
            if trailing {
                // No standby to stream to: the next one starts from a snapshot, which covers
                // what gathered meanwhile. Number it, and keep nothing.
                self.replicator.seal_for_snapshot();
            }
            return;
        };
        let resend = link.last_send == Time::ZERO;
        if !link.ready {
            if let (true, Some(seed)) = (resend, &self.seed) {
                let msg = PeerMsg::Snapshot {
                    epoch: self.epoch,
                    from: self.id,
                    seq: link.snapshot,
                    state: seed.state.clone(),
                    dedupe: seed.dedupe.clone(),
                    open: seed.open.clone(),
                    deps_down: seed.deps_down.clone(),
                };
                self.commands.push(Command::ToPeer { to: link.id, msg });
                self.mark_sent(now);
            }
            return;
        }
        if resend {
            let batches: Vec<_> = self.replicator.in_flight().cloned().collect();
            for b in batches {
                self.send_batch(link.id, b.seq, b.entries);
            }
            self.mark_sent(now);
        }
        if self.replicator.open_len() == 0 {
            self.open_since = None;
        } else {
            let since = *self.open_since.get_or_insert(now);
            // A primary handing over seals what it has at once: the hand-over waits for it.
            if !self.handing_over && !self.replicator.due(now.since(since)) {
                return;
            }
        }
        if let Some(b) = self.replicator.seal() {
            self.open_since = None;
            self.send_batch(link.id, b.seq, b.entries);
            self.mark_sent(now);
        }
    }

    /// A primary handing over stops for good once its ready standby acknowledged everything
    /// it answered; the stimuli it parked are told to go to the next primary.
    fn finish_hand_over(&mut self) {
        if !self.handing_over || self.role != Role::Primary || self.replicator.pending() {
            return;
        }
        // A stimulus taken on without a begin in the stream would be known to nobody after
        // the hand-over: finish those first (begun ones the standby serves again).
        if self.open.iter().any(|o| !o.begun) {
            return;
        }
        let Some(link) = self.standby.filter(|l| l.ready) else {
            return;
        };
        let (unit, copy, epoch) = (self.name.clone(), self.id, self.epoch);
        self.handed_over_to = Some(link.id);
        self.report(Report::HandedOver {
            unit,
            copy,
            epoch,
            standby: link.id,
        });
        self.fence(epoch);
    }

    fn mark_sent(&mut self, now: Time) {
        if let Some(l) = self.standby.as_mut() {
            // Time::ZERO means "send now"; never store it as a real send time.
            l.last_send = if now == Time::ZERO { Time(1) } else { now };
        }
    }

    fn send_batch(&mut self, to: CopyId, seq: BatchSeq, entries: Vec<Entry<U>>) {
        let per = self.config.max_entries_per_part.max(1);
        let parts = entries.len().div_ceil(per).max(1);
        let mut rest = entries.into_iter();
        for part in 0..parts {
            let chunk: Vec<Entry<U>> = rest.by_ref().take(per).collect();
            self.commands.push(Command::ToPeer {
                to,
                msg: PeerMsg::Replicate {
                    epoch: self.epoch,
                    from: self.id,
                    seq,
                    part: u32::try_from(part).unwrap_or(u32::MAX),
                    parts: u32::try_from(parts).unwrap_or(u32::MAX),
                    entries: chunk,
                },
            });
        }
    }
}
