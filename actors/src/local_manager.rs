//! The `LocalManager`: one per node, the supervisor of every copy on it.
//!
//! It starts and stops copies when the group manager says so (`spawn_linked`, so a crash is a
//! supervision event here), heartbeats each copy with a deadline so a hung copy is noticed
//! too, and reports both to the group manager. It is also the node's endpoint: stimuli,
//! copy-to-copy messages and name-table updates for this node arrive here and are routed by
//! unit and copy.

use crate::clock::{self, Ticker};
use crate::copy::{CopyArgs, CopyMsg, CopySpawner, ServingNow, StimulusReply};
use crate::envelope::{ManagerCast, NodeCast, StimulusAsk};
use crate::error::DeliveryError;
use crate::group_manager::GroupManagerMsg;
use crate::link::{Directory, ManagerLink};
use crate::registry::Registry;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use understudy_runtime::global::SlowThread;
use understudy_runtime::{
    CopyConfig, CopyId, Directive, HeartbeatConfig, LeaseAsk, LeaseAsks, Liveness, NodeName,
    Report, StimulusId, TraceId, UnitName,
};

/// How to run one unit: its kind and the tuning of its copies.
#[derive(Clone, Debug)]
pub struct UnitSpec {
    /// Starts copies of the unit's kind.
    pub kind: Arc<dyn CopySpawner>,
    /// Tuning of its copies.
    pub config: CopyConfig,
    /// The units it calls, whose availability its primary watches (degraded modes).
    pub calls: Vec<UnitName>,
}

/// The units a node can run, by name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    units: HashMap<UnitName, UnitSpec>,
}

impl Catalog {
    /// No units.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a unit named `name` of the given kind.
    pub fn with_unit(
        mut self,
        name: impl Into<String>,
        kind: impl CopySpawner + 'static,
        config: CopyConfig,
    ) -> Self {
        self.units.insert(
            UnitName::new(name),
            UnitSpec {
                kind: Arc::new(kind),
                config,
                calls: Vec::new(),
            },
        );
        self
    }

    /// Add a unit named `name` started by `kind` (a kind chosen at run time, say by name from
    /// a configuration file).
    pub fn with_spawner(
        mut self,
        name: impl Into<String>,
        kind: Arc<dyn CopySpawner>,
        config: CopyConfig,
    ) -> Self {
        let calls = Vec::new();
        self.units.insert(
            UnitName::new(name),
            UnitSpec {
                kind,
                config,
                calls,
            },
        );
        self
    }

    /// Declare the units that unit `name` calls: while one of them is indefinitely
    /// unavailable, the unit serves in its degraded mode. A unit not in the catalog is left
    /// as it is.
    pub fn with_calls(mut self, name: &str, calls: Vec<UnitName>) -> Self {
        if let Some(spec) = self.units.get_mut(&UnitName::new(name)) {
            spec.calls = calls;
        }
        self
    }

    /// The spec of a unit.
    pub fn get(&self, unit: &UnitName) -> Option<&UnitSpec> {
        self.units.get(unit)
    }

    /// Every unit's name, sorted.
    pub fn names(&self) -> Vec<UnitName> {
        let mut names: Vec<_> = self.units.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Messages to a `LocalManager`.
#[derive(Debug)]
pub enum LocalManagerMsg {
    /// From the group manager or another node (may have crossed the network).
    Cast(NodeCast),
    /// A client's stimulus for a copy here (may have crossed the network); the answer goes to
    /// the port.
    Stimulus(StimulusAsk, RpcReplyPort<StimulusReply>),
    /// A copy here reports to the group manager.
    Report(Report),
    /// A stimulus thread that began at a copy here broke its budget: for the group manager,
    /// which tells the global manager.
    SlowThread(Box<SlowThread>),
    /// A copy here answered heartbeat `seq`.
    HeartbeatAck {
        /// The copy.
        copy: CopyId,
        /// The heartbeat.
        seq: u64,
    },
    /// Heartbeat the copies, check who is silent, tell the group manager this node lives.
    Tick,
    /// How many times this local manager declared one of its copies lost for missed
    /// heartbeats since it started.
    CopiesLost(RpcReplyPort<u64>),
    /// Send the lease asks gathered since the last request, as one request (sent to itself
    /// behind the asks already queued when the first one came).
    RenewLeases,
    /// A copy asked for by `StartCopy` has started (or failed to). Copies start off the
    /// local manager's loop: a node asked for hundreds at once (a cold start, a lost node's
    /// standbys) still heartbeats its copies and its group manager meanwhile.
    Started {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// Its actor, or why it did not start.
        actor: Result<ActorRef<CopyMsg>, String>,
    },
}

impl ractor::Message for LocalManagerMsg {}

/// Tuning of a `LocalManager`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalManagerConfig {
    /// Heartbeats to the copies (also the interval of this node's "alive" to its group
    /// manager).
    pub heartbeat: HeartbeatConfig,
    /// How often each copy's core ticks.
    pub copy_tick: Duration,
}

impl Default for LocalManagerConfig {
    fn default() -> Self {
        LocalManagerConfig {
            heartbeat: HeartbeatConfig::default(),
            copy_tick: Duration::from_millis(10),
        }
    }
}

/// What a `LocalManager` starts with.
#[derive(Clone, Debug)]
pub struct LocalManagerArgs {
    /// The node's name.
    pub node: NodeName,
    /// The units it can run.
    pub catalog: Arc<Catalog>,
    /// How to reach other nodes.
    pub directory: Directory,
    /// This node's name table.
    pub registry: Registry,
    /// The group manager of the node's group, wherever it runs.
    pub group: Arc<dyn ManagerLink>,
    /// Which start of the node's process this is: a number no earlier start used.
    pub incarnation: u64,
    /// Tuning.
    pub config: LocalManagerConfig,
    /// The node's book of time spent against budgets, for its copies.
    pub budgets: crate::budgets::BudgetBook,
    /// Where the node's endpoint finds the copies the local manager runs, to hand them
    /// stimuli and peer messages without a hop through the local manager.
    pub routes: CopyRoutes,
}

/// The copies a local manager runs, by id, shared with the node's endpoint: a stimulus or a
/// peer message for a copy goes straight to the copy's mailbox, one actor hop fewer than
/// through the local manager (which routes them the same way, by the same table). The local
/// manager adds a copy once it runs and removes it when told to stop it or when it ends.
#[derive(Clone, Debug, Default)]
pub struct CopyRoutes {
    copies: Arc<dashmap::DashMap<CopyId, ActorRef<CopyMsg>>>,
}

impl CopyRoutes {
    /// Hands the stimulus to copy `ask.copy`, or answers `NoSuchCopy` if this node does not
    /// run it.
    pub fn stimulus(&self, ask: StimulusAsk, reply: RpcReplyPort<StimulusReply>) {
        let StimulusAsk {
            unit,
            copy,
            id,
            low_water,
            bound_at,
            body,
            trace,
        } = ask;
        match self.copies.get(&copy) {
            Some(actor) => {
                // A copy that is gone returns the message; the reply port inside it is
                // dropped, which the client reads as a lost copy.
                let _ = actor.cast(CopyMsg::Stimulus {
                    id,
                    low_water,
                    bound_at,
                    body,
                    trace: trace.unwrap_or(TraceId::root(id)),
                    reply,
                });
            }
            None => {
                let _ = reply.send(Err(DeliveryError::NoSuchCopy { unit, copy }));
            }
        }
    }

    /// Hands a peer message to copy `to`; dropped (as a lost message) if the node does not
    /// run it.
    pub fn peer(&self, to: CopyId, from_node: NodeName, bytes: Vec<u8>) {
        if let Some(actor) = self.copies.get(&to) {
            let _ = actor.cast(CopyMsg::Peer { from_node, bytes });
        }
    }

    fn insert(&self, copy: CopyId, actor: ActorRef<CopyMsg>) {
        self.copies.insert(copy, actor);
    }

    fn remove(&self, copy: &CopyId) {
        self.copies.remove(copy);
    }
}

/// The local manager actor.
#[derive(Debug, Default)]
pub struct LocalManager;

#[derive(Debug)]
struct Running {
    unit: UnitName,
    actor: ActorRef<CopyMsg>,
    /// The stimulus its handler serves, if any (read when it ends).
    serving: ServingNow,
}

/// A copy being started.
#[derive(Debug, Default)]
struct Starting {
    held: Vec<CopyMsg>,
    stop: bool,
    serving: ServingNow,
}

/// A local manager's state.
#[derive(Debug)]
pub struct LocalManagerState {
    args: LocalManagerArgs,
    copies: HashMap<CopyId, Running>,
    by_actor: HashMap<ActorId, CopyId>,
    /// Copies told to stop (stopped, or hung) whose actor has not ended yet: they may still
    /// run, so the node's inventory keeps listing them.
    lingering: HashMap<ActorId, (UnitName, CopyId)>,
    /// Copies being started, with the directives that came for them meanwhile (handed over,
    /// in order, once they run) and whether they were told to stop.
    starting: HashMap<CopyId, Starting>,
    liveness: Liveness<CopyId>,
    heartbeat: u64,
    /// The primaries' lease asks gathered for the next request.
    lease_asks: LeaseAsks,
    _ticker: Ticker,
}

impl LocalManagerState {
    fn tell_manager(&self, cast: ManagerCast) {
        if let Err(e) = self.args.group.send(GroupManagerMsg::Cast(cast)) {
            tracing::debug!(node = %self.args.node, error = %e, "group manager unreachable");
        }
    }

    /// Pass `directive` to copy `copy` here (held for it while it starts).
    fn direct(&mut self, copy: CopyId, directive: Directive, peer_node: Option<NodeName>) {
        let msg = CopyMsg::Directive {
            directive,
            peer_node,
        };
        if let Some(r) = self.copies.get(&copy) {
            let _ = r.actor.cast(msg);
        } else if let Some(starting) = self.starting.get_mut(&copy) {
            starting.held.push(msg);
        }
    }

    fn report_down(&self, unit: UnitName, copy: CopyId, known_dead: bool) {
        self.report_ended(unit, copy, known_dead, None, String::new());
    }

    /// Reports a copy lost, with the stimulus its handler was serving when it ended and how it
    /// ended (the global manager correlates those across copies).
    fn report_ended(
        &self,
        unit: UnitName,
        copy: CopyId,
        known_dead: bool,
        during: Option<StimulusId>,
        why: String,
    ) {
        self.tell_manager(ManagerCast::CopyDown {
            unit,
            copy,
            known_dead,
            during,
            why,
        });
    }
}

impl Actor for LocalManager {
    type Msg = LocalManagerMsg;
    type State = LocalManagerState;
    type Arguments = LocalManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LocalManagerMsg>,
        args: LocalManagerArgs,
    ) -> Result<LocalManagerState, ActorProcessingErr> {
        let ticker = Ticker::start(&myself, args.config.heartbeat.interval, || {
            LocalManagerMsg::Tick
        });
        let _ = args.group.send(GroupManagerMsg::Cast(ManagerCast::NodeUp {
            node: args.node.clone(),
            incarnation: args.incarnation,
        }));
        Ok(LocalManagerState {
            liveness: Liveness::new(args.config.heartbeat),
            args,
            copies: HashMap::new(),
            by_actor: HashMap::new(),
            lingering: HashMap::new(),
            starting: HashMap::new(),
            heartbeat: 0,
            lease_asks: LeaseAsks::new(),
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<LocalManagerMsg>,
        msg: LocalManagerMsg,
        state: &mut LocalManagerState,
    ) -> Result<(), ActorProcessingErr> {
        let now = clock::now();
        match msg {
            LocalManagerMsg::Cast(NodeCast::StartCopy {
                unit,
                copy,
                start_as,
                peer_node,
            }) => {
                if state.copies.contains_key(&copy) || state.starting.contains_key(&copy) {
                    return Ok(());
                }
                let Some(spec) = state.args.catalog.get(&unit).cloned() else {
                    tracing::error!(node = %state.args.node, %unit, "asked to start a unit this node does not know");
                    return Ok(());
                };
                let args = CopyArgs {
                    node: state.args.node.clone(),
                    unit: unit.clone(),
                    copy,
                    start_as,
                    peer_node,
                    local_manager: myself.clone(),
                    directory: state.args.directory.clone(),
                    registry: state.args.registry.clone(),
                    config: spec.config,
                    calls: spec.calls.clone(),
                    tick: state.args.config.copy_tick,
                    budgets: state.args.budgets.clone(),
                    serving: ServingNow::default(),
                };
                let starting = Starting {
                    serving: args.serving.clone(),
                    ..Starting::default()
                };
                state.starting.insert(copy, starting);
                let started = spec.kind.spawn(args, myself.get_cell());
                let me = myself.clone();
                tokio::spawn(async move {
                    let actor = started.await.map_err(|e| e.to_string());
                    let _ = me.cast(LocalManagerMsg::Started { unit, copy, actor });
                });
            }
            LocalManagerMsg::Started { unit, copy, actor } => {
                let Some(starting) = state.starting.remove(&copy) else {
                    return Ok(());
                };
                match actor {
                    Ok(actor) if starting.stop => {
                        // Told to stop while it started: it ends now, listed until it has.
                        state.lingering.insert(actor.get_id(), (unit.clone(), copy));
                        actor.kill();
                    }
                    Ok(actor) => {
                        for msg in starting.held {
                            let _ = actor.cast(msg);
                        }
                        state.by_actor.insert(actor.get_id(), copy);
                        state.args.routes.insert(copy, actor.clone());
                        state.copies.insert(
                            copy,
                            Running {
                                unit: unit.clone(),
                                actor,
                                serving: starting.serving.clone(),
                            },
                        );
                        state.liveness.watch(copy, now);
                        state.tell_manager(ManagerCast::CopyStarted { unit, copy });
                    }
                    Err(e) => {
                        tracing::error!(node = %state.args.node, %unit, %copy, error = %e, "copy failed to start");
                        state.report_down(unit, copy, true);
                    }
                }
            }
            LocalManagerMsg::Cast(NodeCast::StopCopy { copy, .. }) => {
                if let Some(starting) = state.starting.get_mut(&copy) {
                    starting.stop = true;
                }
                state.args.routes.remove(&copy);
                if let Some(r) = state.copies.remove(&copy) {
                    state.by_actor.remove(&r.actor.get_id());
                    state
                        .lingering
                        .insert(r.actor.get_id(), (r.unit.clone(), copy));
                    state.liveness.forget(&copy);
                    r.actor.kill();
                }
            }
            LocalManagerMsg::Cast(NodeCast::Direct {
                copy,
                directive,
                peer_node,
                ..
            }) => state.direct(copy, directive, peer_node),
            LocalManagerMsg::Cast(NodeCast::Leases {
                from,
                duration,
                renewals,
            }) => {
                for r in renewals {
                    let lease = Directive::Lease {
                        epoch: r.epoch,
                        requested_at: from,
                        duration,
                    };
                    state.direct(r.copy, lease, None);
                    if let Some(s) = r.standby {
                        let restate = Directive::AssignStandby {
                            epoch: r.epoch,
                            standby: Some(s.copy),
                        };
                        state.direct(r.copy, restate, Some(s.node));
                    }
                }
            }
            LocalManagerMsg::Report(Report::LeaseRequest {
                unit, copy, epoch, ..
            }) => {
                if let Some(at) = state.lease_asks.ask(LeaseAsk { unit, copy, epoch }, now) {
                    // The timer's task runs on its own; its handle is not needed.
                    drop(myself.send_after(at.since(now), || LocalManagerMsg::RenewLeases));
                }
            }
            LocalManagerMsg::RenewLeases => {
                let asks = state.lease_asks.take();
                if !asks.is_empty() {
                    state.tell_manager(ManagerCast::RenewLeases {
                        node: state.args.node.clone(),
                        incarnation: state.args.incarnation,
                        requested_at: now,
                        asks,
                    });
                }
            }
            LocalManagerMsg::Cast(NodeCast::InjectPanic { copy, .. }) => {
                if let Some(r) = state.copies.get(&copy) {
                    let _ = r.actor.cast(CopyMsg::ArmPanic);
                }
            }
            LocalManagerMsg::Cast(NodeCast::Names(updates)) => {
                for u in updates {
                    state.args.registry.apply(u);
                }
            }
            LocalManagerMsg::Report(r) => state.tell_manager(ManagerCast::Report(r)),
            LocalManagerMsg::SlowThread(t) => state.tell_manager(ManagerCast::SlowThread(t)),
            LocalManagerMsg::HeartbeatAck { copy, .. } => {
                state.liveness.heard(&copy, now);
            }
            LocalManagerMsg::CopiesLost(reply) => {
                let _ = reply.send(state.liveness.declared_lost());
            }
            LocalManagerMsg::Cast(NodeCast::Peer {
                to,
                from_node,
                bytes,
                ..
            }) => state.args.routes.peer(to, from_node, bytes),
            LocalManagerMsg::Stimulus(ask, reply) => state.args.routes.stimulus(ask, reply),
            LocalManagerMsg::Tick => {
                state.heartbeat += 1;
                let seq = state.heartbeat;
                for r in state.copies.values() {
                    let _ = r.actor.cast(CopyMsg::Heartbeat { seq });
                }
                for copy in state.liveness.expire(now) {
                    state.args.routes.remove(&copy);
                    if let Some(r) = state.copies.remove(&copy) {
                        tracing::warn!(node = %state.args.node, unit = %r.unit, %copy, "copy missed its heartbeats; stopping it");
                        state.by_actor.remove(&r.actor.get_id());
                        state
                            .lingering
                            .insert(r.actor.get_id(), (r.unit.clone(), copy));
                        // A hung copy may not stop (a handler blocking its thread cannot be
                        // interrupted), so it is reported as not known dead: its lease must
                        // lapse before its standby serves.
                        r.actor.kill();
                        state.report_down(r.unit, copy, false);
                    }
                }
                let running = state
                    .copies
                    .iter()
                    .map(|(copy, r)| (r.unit.clone(), *copy))
                    .chain(state.lingering.values().cloned())
                    .collect();
                state.tell_manager(ManagerCast::NodeAlive {
                    node: state.args.node.clone(),
                    incarnation: state.args.incarnation,
                    running,
                    sent_at: now,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<LocalManagerMsg>,
        event: SupervisionEvent,
        state: &mut LocalManagerState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!("stopped: {}", reason.as_deref().unwrap_or("-")),
            ),
            _ => return Ok(()),
        };
        state.lingering.remove(&cell.get_id());
        if let Some(copy) = state.by_actor.remove(&cell.get_id()) {
            state.args.routes.remove(&copy);
            if let Some(r) = state.copies.remove(&copy) {
                let during = r.serving.get();
                tracing::warn!(node = %state.args.node, unit = %r.unit, %copy, %why, ?during, "copy ended");
                state.liveness.forget(&copy);
                state.report_ended(r.unit, copy, true, during, why);
            }
        }
        Ok(())
    }
}
