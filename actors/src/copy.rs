//! The unit actor: runs one copy of a unit, in whichever role the core says, and only carries
//! inputs and commands between its mailbox and the [`CopyCore`].
//!
//! Everything that reaches it may have crossed a node boundary, so stimuli and peer messages
//! arrive as bytes and are decoded here; a payload that does not decode is answered with an
//! error (stimuli) or dropped with a warning (peer messages), never a panic.

use crate::budgets::BudgetBook;
use crate::client::{Route, UnitClient};
use crate::clock::{self, Wakeup};
use crate::codec::{decode, encode};
use crate::envelope::{NodeCast, MAX_STIMULUS_BYTES};
use crate::error::{CallError, DeliveryError};
use crate::link::Directory;
use crate::local_manager::LocalManagerMsg;
use crate::registry::Registry;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use understudy_runtime::global::SlowThread;
use understudy_runtime::thread::{micros, settle, Settled, ThreadTime};
use understudy_runtime::{
    Budget, CallFailure, CallReply, CallToken, Command, CopyConfig, CopyCore, CopyId,
    DependencyChange, Directive, Durability, Epoch, Input, NextTick, NodeName, PeerMsg, Reconciled,
    ReplyToken, Role, Seq, StartAs, StimulusId, StimulusIn, TraceId, Unit, UnitName,
};

/// The answer a node gives to a stimulus: the encoded response and who served it, or why
/// there is none.
pub type StimulusReply = Result<Answer, DeliveryError>;

/// Which copy answered a stimulus, at which epoch, and when by the wall clock of its node:
/// what a caller — or a test's history — needs to check that one primary answered per epoch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServedBy {
    /// The unit.
    pub unit: UnitName,
    /// The copy that answered.
    pub copy: CopyId,
    /// Its node.
    pub node: NodeName,
    /// The epoch it answered at.
    pub epoch: Epoch,
    /// When it answered: µs since the Unix epoch, by its node's wall clock.
    pub at_us: u64,
}

/// An encoded response, the copy that gave it, and how far its effects had reached the
/// standby.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The encoded response.
    pub body: Vec<u8>,
    /// Who answered.
    pub served_by: ServedBy,
    /// Whether the standby had the answer's effects (always, under the synchronous strategy).
    pub durability: Durability,
    /// Whether the unit served it in its degraded mode (a unit it calls was unavailable).
    #[serde(default)]
    pub degraded: bool,
    /// Where the time went, µs per unit ([`understudy_runtime::thread`]): given to a unit's
    /// call (a stimulus of a thread another unit began), empty for a client's stimulus.
    #[serde(default)]
    pub spent: Vec<(UnitName, u64)>,
}

/// Messages to a unit actor.
#[derive(Debug)]
pub enum CopyMsg {
    /// A stimulus from a client, encoded.
    Stimulus {
        /// Its id.
        id: StimulusId,
        /// Its client's low-water mark.
        low_water: Seq,
        /// The epoch of the binding it was sent by.
        bound_at: Epoch,
        /// The encoded stimulus.
        body: Vec<u8>,
        /// The stimulus thread it belongs to.
        trace: TraceId,
        /// Where the answer goes.
        reply: RpcReplyPort<StimulusReply>,
    },
    /// A message from the other copy, encoded, and the node it came from.
    Peer {
        /// The sender's node.
        from_node: NodeName,
        /// The encoded [`PeerMsg`].
        bytes: Vec<u8>,
    },
    /// An order from the group manager, with the node of the copy it names (if any).
    Directive {
        /// The order.
        directive: Directive,
        /// The node of the standby an `AssignStandby` names.
        peer_node: Option<NodeName>,
    },
    /// The local manager asks whether the copy still answers.
    Heartbeat {
        /// The heartbeat's number, echoed back.
        seq: u64,
    },
    /// Time passed.
    Tick,
    /// Fault injection: the next stimulus panics inside the handler.
    ArmPanic,
    /// The outcome of a call this copy made to another unit for the stimulus it serves.
    CallReply {
        /// The call.
        call: CallToken,
        /// Its outcome.
        reply: CallReply,
        /// The called unit's account of its time (empty without an answer).
        spent: Vec<(UnitName, u64)>,
    },
}

impl ractor::Message for CopyMsg {}

/// Everything a copy needs to start.
#[derive(Clone, Debug)]
pub struct CopyArgs {
    /// The node it runs on.
    pub node: NodeName,
    /// The unit.
    pub unit: UnitName,
    /// The copy's id.
    pub copy: CopyId,
    /// How it starts.
    pub start_as: StartAs,
    /// The node of its primary, for a standby.
    pub peer_node: Option<NodeName>,
    /// Its node's local manager.
    pub local_manager: ActorRef<LocalManagerMsg>,
    /// How to reach other nodes.
    pub directory: Directory,
    /// The node's name table, to call other units through.
    pub registry: Registry,
    /// Tuning of the core.
    pub config: CopyConfig,
    /// The units this one calls, whose availability the primary watches (degraded modes).
    pub calls: Vec<UnitName>,
    /// How often the core's clock ticks.
    pub tick: Duration,
    /// The node's book of time spent against budgets.
    pub budgets: BudgetBook,
    /// Where the copy notes the stimulus its handler serves, for its local manager to read
    /// should the copy end inside the handler (a panic).
    pub serving: ServingNow,
}

/// The stimulus a copy's handler is serving right now, if any: written by the copy around
/// each handler run, read by its local manager when the copy ends.
#[derive(Clone, Debug, Default)]
pub struct ServingNow(Arc<std::sync::Mutex<Option<StimulusId>>>);

impl ServingNow {
    fn set(&self, id: Option<StimulusId>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    /// The stimulus being served, if the handler is running (or ended inside one).
    pub fn get(&self) -> Option<StimulusId> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The unit actor for units of type `U`.
#[derive(Debug)]
pub struct UnitCopy<U: Unit> {
    unit: U,
}

impl<U: Unit> UnitCopy<U> {
    /// An actor that runs copies of `unit`.
    pub fn new(unit: U) -> Self {
        UnitCopy { unit }
    }
}

/// A caller waiting for a copy's answer: where it goes, what the book needs, and what its
/// log lines say.
#[derive(Debug)]
struct Awaiting {
    port: RpcReplyPort<StimulusReply>,
    kind: &'static str,
    budget: Budget,
    since: std::time::Instant,
    id: StimulusId,
    trace: TraceId,
}

/// A running copy.
#[derive(Debug)]
pub struct CopyState<U: Unit> {
    args: CopyArgs,
    core: CopyCore<U>,
    waiting: HashMap<ReplyToken, Awaiting>,
    next_token: u64,
    peers: HashMap<CopyId, NodeName>,
    panic_armed: bool,
    myself: ActorRef<CopyMsg>,
    /// What the core had reconciled when the book last heard.
    reconciled: Reconciled,
    /// The core's next tick, armed when its core asks for one.
    wakeup: Wakeup,
    /// The calls out, each with the stimulus it is made for and that stimulus's thread.
    calls_out: HashMap<CallToken, (StimulusId, TraceId)>,
    /// Of a unit that calls others: per stimulus being served, where its time went.
    threads: HashMap<StimulusId, Serving>,
}

/// A stimulus a unit that calls others is serving: since when, for how many callers, the
/// time its calls took, and the call out with when it was first sent (a call sent again
/// because its outcome was unknown counts from its first sending).
#[derive(Debug)]
struct Serving {
    since: std::time::Instant,
    waiters: usize,
    time: ThreadTime,
    call: Option<(StimulusId, std::time::Instant)>,
}

/// Most stimuli a copy keeps accounts of at once (a line of stimuli behind a slow call stays
/// well below it; past it, accounts are dropped and answers carry only the copy's own time).
const THREADS_KEPT: usize = 16_384;

impl<U: Unit> Actor for UnitCopy<U> {
    type Msg = CopyMsg;
    type State = CopyState<U>;
    type Arguments = CopyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CopyMsg>,
        args: CopyArgs,
    ) -> Result<CopyState<U>, ActorProcessingErr> {
        let mut peers = HashMap::new();
        let core = match args.start_as {
            StartAs::Initial { epoch } => CopyCore::new_initial(
                self.unit.clone(),
                args.unit.clone(),
                args.copy,
                epoch,
                args.config,
            ),
            StartAs::Standby { epoch, primary } => {
                if let Some(n) = &args.peer_node {
                    peers.insert(primary, n.clone());
                }
                CopyCore::new_standby(
                    self.unit.clone(),
                    args.unit.clone(),
                    args.copy,
                    epoch,
                    primary,
                    args.config,
                )
            }
        };
        let mut state = CopyState {
            args,
            core,
            waiting: HashMap::new(),
            next_token: 0,
            peers,
            panic_armed: false,
            myself: myself.clone(),
            reconciled: Reconciled::default(),
            wakeup: Wakeup::new(),
            calls_out: HashMap::new(),
            threads: HashMap::new(),
        };
        // A first copy asks for its lease on its first tick.
        arm_tick(&mut state, clock::now());
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CopyMsg>,
        msg: CopyMsg,
        state: &mut CopyState<U>,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(msg, CopyMsg::Stimulus { .. } | CopyMsg::Peer { .. }) {
            // Application code runs next and may block its thread (a hung handler). Let any
            // task this actor just woke run first: tokio keeps the last woken task in a slot
            // of this worker that other workers cannot steal, and a blocked handler would
            // strand it there (it is often our own LocalManager, which must notice the hang).
            tokio::task::yield_now().await;
        }
        let now = clock::now();
        match msg {
            CopyMsg::Stimulus { body, reply, .. } if body.len() > MAX_STIMULUS_BYTES => {
                // Refused unread: a client of this version never sends one (see `Route`).
                let _ = reply.send(Err(DeliveryError::TooLarge {
                    unit: state.args.unit.clone(),
                    bytes: body.len(),
                    limit: MAX_STIMULUS_BYTES,
                }));
            }
            CopyMsg::Stimulus {
                id,
                low_water,
                bound_at,
                body,
                trace,
                reply,
            } => match decode::<U::Stimulus>("stimulus", &body) {
                Ok(_) if state.panic_armed => {
                    state.args.serving.set(Some(id));
                    panic!(
                        "fault injection: copy {} of {} panics in its handler",
                        state.args.copy, state.args.unit
                    );
                }
                Ok(body) => {
                    state.next_token += 1;
                    let token = ReplyToken(state.next_token);
                    let unit = state.core.unit();
                    let awaiting = Awaiting {
                        port: reply,
                        kind: unit.stimulus_kind(&body),
                        budget: unit.budget(&body),
                        since: std::time::Instant::now(),
                        id,
                        trace,
                    };
                    let span = stimulus_span(state, state.core.epoch(), id, trace);
                    let _in_span = span.enter();
                    tracing::trace!(kind = awaiting.kind, bound_at = bound_at.0, "taken");
                    if !state.args.calls.is_empty() {
                        if state.threads.len() >= THREADS_KEPT {
                            state.threads.clear();
                        }
                        let since = awaiting.since;
                        let serving = state.threads.entry(id).or_insert_with(|| Serving {
                            since,
                            waiters: 0,
                            time: ThreadTime::default(),
                            call: None,
                        });
                        serving.waiters += 1;
                    }
                    state.waiting.insert(token, awaiting);
                    step_core(
                        state,
                        now,
                        Input::Stimulus(StimulusIn {
                            id,
                            low_water,
                            bound_at,
                            body,
                            trace,
                            reply: token,
                        }),
                    );
                }
                Err(e) => {
                    let unit = state.args.unit.clone();
                    let _ = reply.send(Err(DeliveryError::Malformed {
                        unit,
                        reason: e.to_string(),
                    }));
                }
            },
            CopyMsg::Peer { from_node, bytes } => {
                match decode::<PeerMsg<U>>("peer message", &bytes) {
                    Ok(msg) => {
                        let from = msg.sender();
                        state.peers.insert(from, from_node);
                        step_core(state, now, Input::Peer(msg));
                    }
                    Err(e) => {
                        tracing::warn!(unit = %state.args.unit, copy = %state.args.copy, error = %e, "dropped a peer message");
                    }
                }
            }
            CopyMsg::Directive {
                directive,
                peer_node,
            } => {
                if let (
                    Directive::AssignStandby {
                        standby: Some(s), ..
                    },
                    Some(n),
                ) = (&directive, peer_node)
                {
                    state.peers.insert(*s, n);
                }
                step_core(state, now, Input::Directive(directive));
            }
            CopyMsg::Heartbeat { seq } => {
                let _ = state
                    .args
                    .local_manager
                    .cast(LocalManagerMsg::HeartbeatAck {
                        copy: state.args.copy,
                        seq,
                    });
            }
            CopyMsg::Tick => {
                state.wakeup.fired(now);
                watch_dependencies(state, now);
                step_core(state, now, Input::Tick);
            }
            CopyMsg::ArmPanic => state.panic_armed = true,
            CopyMsg::CallReply { call, reply, spent } => {
                // The handler of the stimulus the call was made for runs again, in its span.
                let span = match state.calls_out.remove(&call) {
                    Some((id, trace)) => {
                        let known =
                            !matches!(reply.outcome, Err(CallFailure::DeadlineExceeded { .. }));
                        let serving = state.threads.get_mut(&id);
                        if let Some(serving) = serving.filter(|_| known) {
                            if let Some((_, sent)) = serving.call.take() {
                                serving.time.called(&reply.unit, sent.elapsed(), &spent);
                            }
                        }
                        stimulus_span(state, state.core.epoch(), id, trace)
                    }
                    None => tracing::Span::none(),
                };
                let _in_span = span.enter();
                step_core(state, now, Input::CallReply { call, reply });
            }
        }
        carry_out(state);
        arm_tick(state, now);
        Ok(())
    }
}

/// The span of stimulus `id` of thread `trace` on this copy at `epoch`: every line logged
/// while the copy serves it — the unit's own included — says where and for which thread.
fn stimulus_span<U: Unit>(
    state: &CopyState<U>,
    epoch: Epoch,
    id: StimulusId,
    trace: TraceId,
) -> tracing::Span {
    tracing::debug_span!(
        "stimulus",
        node = %state.args.node,
        unit = %state.args.unit,
        copy = %state.args.copy,
        epoch = epoch.0,
        stimulus = %id,
        trace = %trace,
    )
}

/// Arm the copy's next tick for when its core needs it.
fn arm_tick<U: Unit>(state: &mut CopyState<U>, now: understudy_runtime::Time) {
    let regular = now.after(state.args.tick);
    let at = match state.core.next_tick(!state.args.calls.is_empty()) {
        NextTick::Regular => regular,
        NextTick::At(at) => at.max(regular),
        NextTick::Never => return,
    };
    state.wakeup.arm(&state.myself, now, at, || CopyMsg::Tick);
}

/// Steps the core. Should the unit's handler panic inside, the stimulus it was serving is
/// noted for the local manager ([`ServingNow`]) before the panic goes on and ends the copy.
fn step_core<U: Unit>(state: &mut CopyState<U>, now: understudy_runtime::Time, input: Input<U>) {
    let core = &mut state.core;
    let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.step(now, input)));
    if let Err(panic) = stepped {
        state.args.serving.set(state.core.handling());
        std::panic::resume_unwind(panic);
    }
}

/// While primary, tell the core when a unit it calls became indefinitely unavailable (or was
/// quarantined) or came back, as this node's name table says (a takeover under way changes
/// nothing).
fn watch_dependencies<U: Unit>(state: &mut CopyState<U>, now: understudy_runtime::Time) {
    if !matches!(state.core.role(), Role::Primary | Role::Promoting) {
        return;
    }
    for dep in &state.args.calls {
        let quarantined = state.args.registry.quarantined(dep).is_some();
        let down = match state.args.registry.resolve(dep) {
            _ if quarantined => true,
            Some(crate::registry::NameState::Unavailable { .. }) => true,
            Some(crate::registry::NameState::Bound(_)) => false,
            _ => continue,
        };
        if down == state.core.dependency_down(dep) {
            continue;
        }
        let unit = dep.0.clone();
        let change = if down {
            DependencyChange::Unavailable { unit }
        } else {
            DependencyChange::Available { unit }
        };
        tracing::info!(unit = %state.args.unit, dependency = %dep, ?change, "a unit it calls changed availability");
        state.core.step(now, Input::Dependency(change));
    }
}

/// Make a call the core asked for ([`Command::Call`]), in a task of its own (in a span naming
/// the caller, the called unit and the thread); its outcome comes back as a message.
fn make_call<U: Unit>(state: &mut CopyState<U>, command: Command<U>) {
    let Command::Call {
        call,
        unit,
        id,
        low_water,
        body,
        t_max,
        upstream,
        trace,
    } = command
    else {
        return;
    };
    state.calls_out.insert(call, (upstream, trace));
    if let Some(serving) = state.threads.get_mut(&upstream) {
        // Sent again (its outcome was unknown): it counts from its first sending.
        if serving.call.is_none_or(|(out, _)| out != id) {
            serving.call = Some((id, std::time::Instant::now()));
        }
    }
    let registry = state.args.registry.clone();
    let directory = state.args.directory.clone();
    let myself = state.myself.clone();
    let (book, caller) = (state.args.budgets.clone(), state.args.unit.clone());
    let span = tracing::debug_span!(
        "call",
        node = %state.args.node,
        unit = %caller,
        callee = %unit,
        call = %id,
        trace = %trace,
    );
    let task = async move {
        let sent = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + t_max;
        let route = Route {
            registry: &registry,
            directory: &directory,
            name: &unit,
            trace: Some(trace),
        };
        let low = move || low_water;
        let mut spent = Vec::new();
        let outcome = match route.deliver(id, &low, &body, t_max, deadline).await {
            Ok((answer, attempts)) => {
                if attempts > 1 {
                    book.redirected(&caller);
                }
                spent = answer.spent;
                Ok(answer.body)
            }
            Err(CallError::Unavailable { unit } | CallError::Quarantined { unit, .. }) => {
                Err(CallFailure::Unavailable { unit })
            }
            Err(CallError::DeadlineExceeded { unit, budget, .. }) => {
                Err(CallFailure::DeadlineExceeded { unit, left: budget })
            }
            Err(e @ (CallError::AnswerForgotten { .. } | CallError::BadResponse { .. })) => {
                Err(CallFailure::TookEffect {
                    unit: unit.clone(),
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(CallFailure::Refused {
                unit: unit.clone(),
                reason: e.to_string(),
            }),
        };
        let took_us = micros(sent.elapsed());
        match &outcome {
            Ok(_) => tracing::debug!(took_us, "answered"),
            Err(failure) => tracing::debug!(took_us, %failure, "no answer"),
        }
        let reply = CallReply { unit, outcome };
        // The copy may have stopped meanwhile: then nobody waits for the reply.
        let _ = myself.cast(CopyMsg::CallReply { call, reply, spent });
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
}

/// The account of where the stimulus `awaiting` waits for spent its time (`took` since
/// its caller's ask reached this copy), for its answer (empty for a client's stimulus, which
/// begins its thread); a thread that began here and broke its budget is reported to the group
/// manager, which tells the global manager.
fn account<U: Unit>(
    state: &mut CopyState<U>,
    awaiting: &Awaiting,
    took: Duration,
    answered: bool,
) -> Vec<(UnitName, u64)> {
    let unit = &state.args.unit;
    let began_here = awaiting.trace == TraceId::root(awaiting.id);
    // Which answers carry an account and which threads broke their budget is the runtime's
    // rule (`settle`); this copy keeps the bookkeeping: who waits, since when.
    let (took, time) = match state.threads.get_mut(&awaiting.id) {
        Some(serving) => {
            serving.waiters = serving.waiters.saturating_sub(1);
            let took = serving.since.elapsed();
            let time = if serving.waiters == 0 {
                state.threads.remove(&awaiting.id).map(|s| s.time)
            } else {
                Some(serving.time.clone())
            };
            (took, time)
        }
        None => (took, None),
    };
    let t_max = awaiting.budget.t_max();
    let spent = match settle(unit, began_here, answered, took, t_max, time) {
        Settled::Carry(spent) => return spent,
        Settled::Nothing => return Vec::new(),
        Settled::Slow(spent) => spent,
    };
    let thread = SlowThread {
        group: String::new(),
        unit: unit.clone(),
        kind: awaiting.kind.to_string(),
        trace: awaiting.trace,
        took_us: micros(took),
        t_max_us: micros(t_max),
        spent,
    };
    tracing::warn!(unit = %unit, "{}", thread.describe());
    let _ = state
        .args
        .local_manager
        .cast(LocalManagerMsg::SlowThread(Box::new(thread)));
    Vec::new()
}

/// Carry out the commands the core produced.
fn carry_out<U: Unit>(state: &mut CopyState<U>) {
    let now = state.core.reconciled();
    if now != state.reconciled {
        let was = std::mem::replace(&mut state.reconciled, now);
        state.args.budgets.reconciled(
            &state.args.unit,
            now.served_again - was.served_again,
            now.ignored - was.ignored,
            now.calls_resent - was.calls_resent,
        );
    }
    for command in state.core.drain_commands() {
        match command {
            command @ Command::Call { .. } => make_call(state, command),
            Command::Reply {
                to,
                outcome,
                epoch,
                durability,
                degraded,
            } => {
                let Some(awaiting) = state.waiting.remove(&to) else {
                    continue;
                };
                let took = awaiting.since.elapsed();
                let spent = account(state, &awaiting, took, outcome.is_ok());
                let span = stimulus_span(state, epoch, awaiting.id, awaiting.trace);
                span.in_scope(|| {
                    let took_us = micros(took);
                    match &outcome {
                        Ok(_) => tracing::debug!(took_us, degraded, "answered"),
                        Err(refusal) => tracing::debug!(took_us, %refusal, "refused"),
                    }
                });
                if outcome.is_ok() {
                    let unit = &state.args.unit;
                    let book = &state.args.budgets;
                    book.served(unit, awaiting.kind, took, &awaiting.budget);
                }
                let port = awaiting.port;
                let answer = match outcome {
                    Ok(response) => encode("response", &response)
                        .map(|body| Answer {
                            body,
                            served_by: ServedBy {
                                unit: state.args.unit.clone(),
                                copy: state.args.copy,
                                node: state.args.node.clone(),
                                epoch,
                                at_us: clock::wall_now().as_micros(),
                            },
                            durability,
                            degraded,
                            spent,
                        })
                        .map_err(|e| DeliveryError::Malformed {
                            unit: state.args.unit.clone(),
                            reason: e.to_string(),
                        }),
                    Err(refusal) => Err(DeliveryError::Refused(refusal)),
                };
                // The caller may have given up; that is its business.
                let _ = port.send(answer);
            }
            Command::ToPeer { to, msg } => {
                let Some(node) = state.peers.get(&to).cloned() else {
                    tracing::debug!(unit = %state.args.unit, peer = %to, "no route to peer yet");
                    continue;
                };
                let bytes = match encode("peer message", &msg) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(unit = %state.args.unit, error = %e, "cannot encode a peer message");
                        continue;
                    }
                };
                let cast = NodeCast::Peer {
                    unit: state.args.unit.clone(),
                    to,
                    from_node: state.args.node.clone(),
                    bytes,
                };
                if let Err(e) = state
                    .args
                    .directory
                    .send(&node, LocalManagerMsg::Cast(cast))
                {
                    tracing::debug!(unit = %state.args.unit, peer = %to, error = %e, "peer message dropped");
                }
            }
            Command::ToManager(report) => {
                let _ = state
                    .args
                    .local_manager
                    .cast(LocalManagerMsg::Report(report));
            }
        }
    }
}

/// A boxed future, as returned by [`CopySpawner::spawn`].
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorRef<CopyMsg>, SpawnErr>> + Send>>;

/// A boxed future of a JSON call's outcome.
pub type JsonFuture = Pin<Box<dyn Future<Output = Result<JsonAnswer, JsonCallError>> + Send>>;

/// The answer to a JSON call: the response as JSON, and the copy that gave it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonAnswer {
    /// The response, as JSON.
    pub json: String,
    /// Who answered.
    pub served_by: ServedBy,
    /// Whether the unit served it in its degraded mode.
    #[serde(default)]
    pub degraded: bool,
}

/// Why a call with a JSON stimulus gave no JSON answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum JsonCallError {
    /// The text is not a stimulus of the unit's kind: fix it (the message says where).
    #[error("not a stimulus of this unit: {0}")]
    BadStimulus(String),
    /// The call failed (see [`CallError`] for what each kind of failure means).
    #[error("{0}")]
    Call(String),
    /// No unit of that name runs in this cluster.
    #[error("no unit named {0}")]
    UnknownUnit(String),
}

/// Calls one unit with stimuli written as JSON; the operator's and load driver's way in.
pub trait JsonCaller: Send + Sync + std::fmt::Debug {
    /// Send the stimulus `json`, within `t_max` or the unit's own budget.
    fn call_json(&self, json: &str, t_max: Option<Duration>) -> JsonFuture;
}

impl<U: Unit> JsonCaller for UnitClient<U> {
    fn call_json(&self, json: &str, t_max: Option<Duration>) -> JsonFuture {
        let parsed = serde_json::from_str::<U::Stimulus>(json);
        let client = self.clone();
        Box::pin(async move {
            let stimulus = parsed.map_err(|e| JsonCallError::BadStimulus(e.to_string()))?;
            let t_max = t_max.unwrap_or_else(|| client.budget(&stimulus).t_max());
            let served = client
                .call_served(stimulus, t_max)
                .await
                .map_err(|e: CallError| JsonCallError::Call(e.to_string()))?;
            let json = serde_json::to_string(&served.response)
                .map_err(|e| JsonCallError::Call(e.to_string()))?;
            Ok(JsonAnswer {
                json,
                served_by: served.served_by,
                degraded: served.degraded,
            })
        })
    }
}

/// Starts copies of one kind of unit; lets a node hold units of many types in one table.
pub trait CopySpawner: Send + Sync + std::fmt::Debug {
    /// Start a copy, linked to `supervisor`.
    fn spawn(&self, args: CopyArgs, supervisor: ActorCell) -> SpawnFuture;

    /// A client of the unit `name` (of this kind) that takes JSON stimuli, counting in
    /// `budgets`.
    fn json_caller(
        &self,
        name: UnitName,
        registry: Registry,
        directory: Directory,
        budgets: BudgetBook,
    ) -> Arc<dyn JsonCaller>;
}

/// A unit kind: the [`CopySpawner`] for units of type `U`.
#[derive(Debug, Clone)]
pub struct UnitKind<U: Unit> {
    unit: U,
    _marker: PhantomData<fn() -> U>,
}

impl<U: Unit> UnitKind<U> {
    /// The kind of `unit`.
    pub fn new(unit: U) -> Self {
        UnitKind {
            unit,
            _marker: PhantomData,
        }
    }
}

impl<U: Unit> CopySpawner for UnitKind<U> {
    fn spawn(&self, args: CopyArgs, supervisor: ActorCell) -> SpawnFuture {
        let unit = self.unit.clone();
        Box::pin(async move {
            let (actor, _join) =
                Actor::spawn_linked(None, UnitCopy::new(unit), args, supervisor).await?;
            Ok(actor)
        })
    }

    fn json_caller(
        &self,
        name: UnitName,
        registry: Registry,
        directory: Directory,
        budgets: BudgetBook,
    ) -> Arc<dyn JsonCaller> {
        Arc::new(
            UnitClient::new(self.unit.clone(), name, registry, directory).with_budgets(budgets),
        )
    }
}
