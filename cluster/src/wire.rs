//! How Understudy's messages ride `ractor_cluster` sessions.
//!
//! Every node runs one [`WireEndpoint`] actor, the only actor it advertises to its peers (in
//! the process group named by [`endpoint_group`]). Everything for a node — commands for its
//! `LocalManager`, messages between copies, name-table updates, reports for a group manager
//! hosted there, and stimuli — arrives at that endpoint as bytes, is decoded into a `Result`,
//! and is routed inside the node. So a node's advertisement is one actor, whatever the number
//! of units, and a bad frame is an error in the log, never a panic.
//!
//! ```text
//!   node a                                         node b
//!   Directory ─► RemoteNode ──Frame(Envelope)──►  WireEndpoint ─► LocalManager / GroupManager
//!   UnitClient ─► RemoteNode ──Ask(Stimulus)───►  WireEndpoint ─► LocalManager ─► copy
//!                            ◄──answer bytes─────
//! ```

use crate::bench::{
    BenchContext, BenchPlan, BenchStats, BenchTarget, BenchUnits, ServedLoad, ServedPlan,
};
use crate::control::{ControlHandle, ControlMsg, ControlView};
use crate::raft::{MemberId, RaftTransport, TransportError};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use understudy_actors::budgets::{BudgetBook, BudgetReport};
use understudy_actors::codec::{decode, encode};
use understudy_actors::copy::StimulusReply;
use understudy_actors::copy::{JsonAnswer, JsonCallError, JsonCaller};
use understudy_actors::envelope::{Envelope, NodeCast, StimulusAsk};
use understudy_actors::local_manager::CopyRoutes;
use understudy_actors::{
    Catalog, Directory, GroupManagerMsg, LinkError, LocalManagerMsg, ManagerLink, NameState,
    NodeLink, Registry,
};
use understudy_runtime::{GroupInput, NodeName, UnitName};

/// How long a node waits for another node to answer a stimulus before it gives the caller's
/// reply port up (the caller has its own deadline and follows rebinding meanwhile).
const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// The process group under which node `name` advertises its endpoint.
pub fn endpoint_group(name: &NodeName) -> String {
    format!("understudy.node.{}", name.0)
}

/// The node name in an endpoint's process-group name, if it is one.
pub fn node_of_group(group: &str) -> Option<NodeName> {
    group
        .strip_prefix("understudy.node.")
        .filter(|n| !n.is_empty())
        .map(NodeName::new)
}

/// The one message type that crosses the network: bytes one way, or bytes for bytes.
#[derive(RactorClusterMessage, Debug)]
pub enum WireMsg {
    /// An encoded [`Envelope`].
    Frame(Vec<u8>),
    /// An encoded [`WireAsk`]; the answer is an encoded [`WireAnswer`].
    #[rpc]
    Ask(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// What travels in a [`WireMsg::Ask`]: who asks (a node by name; `None` for a probe, which is
/// never cut off) and the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequest {
    /// The asking node.
    pub from: Option<NodeName>,
    /// The request.
    pub ask: WireAsk,
}

/// This process's node, once [`set_this_node`] named it (one node per process).
static THIS_NODE: std::sync::OnceLock<NodeName> = std::sync::OnceLock::new();

/// The nodes this process's node must not send to (fault injection: a partition).
static CUTS: std::sync::Mutex<std::collections::BTreeSet<NodeName>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Names this process's node (done by `Node::start`); asks it sends carry the name, so that a
/// partition can also cut the answers.
pub fn set_this_node(node: &NodeName) {
    let _ = THIS_NODE.set(node.clone());
}

fn this_node() -> Option<NodeName> {
    THIS_NODE.get().cloned()
}

/// Fault injection: from now on this node sends nothing to the nodes in `to` — no frame, no
/// request, no answer — until it is told an empty set. The rest of the cluster sees a link cut
/// in one direction; cut both ends for a full partition.
pub fn set_cuts(to: impl IntoIterator<Item = NodeName>) {
    let mut cuts = CUTS.lock().unwrap_or_else(|p| p.into_inner());
    *cuts = to.into_iter().collect();
}

/// Whether this node's link to `node` is cut.
pub fn is_cut(node: &NodeName) -> bool {
    CUTS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(node)
}

/// Sends `ask` to node `to` through its `endpoint` and waits up to `wait` for the answer;
/// refused at once when this node's link to `to` is cut.
pub async fn ask_node(
    endpoint: &ActorRef<WireMsg>,
    to: &NodeName,
    ask: WireAsk,
    wait: Duration,
) -> Result<WireAnswer, String> {
    if is_cut(to) {
        return Err(format!("the link to node {to} is cut (fault injection)"));
    }
    let request = WireRequest {
        from: this_node(),
        ask,
    };
    let bytes = encode("request", &request).map_err(|e| e.to_string())?;
    match endpoint
        .call(|port| WireMsg::Ask(bytes, port), Some(wait))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(answer)) => {
            decode::<WireAnswer>("answer", &answer).map_err(|e| e.to_string())
        }
        Ok(other) => Err(format!("no answer from node {to}: {other:?}")),
        Err(e) => Err(format!("the session to node {to} failed: {e}")),
    }
}

/// A request that expects an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireAsk {
    /// A stimulus for a copy on the node.
    Stimulus(StimulusAsk),
    /// What the node knows: its peers, its name table, its view of the group (Raft role,
    /// leader, units by its copy of the table). Answered with [`WireAnswer::Status`].
    Status,
    /// Operator: a planned switchover of a unit, for the node that runs the group manager
    /// (another node answers with an error naming it). Answered with [`WireAnswer::Done`].
    Switchover {
        /// The unit.
        unit: UnitName,
    },
    /// Operator: drain a node, for the node that runs the group manager. Answered with
    /// [`WireAnswer::Done`].
    Drain {
        /// The node to drain.
        node: NodeName,
    },
    /// Operator: restore a unit declared unavailable (it starts again, empty), for the node
    /// that runs its group's manager. Answered with [`WireAnswer::Done`].
    Restore {
        /// The unit.
        unit: UnitName,
    },
    /// Operator: release a quarantined unit (its callers reach it again), for the node that
    /// runs its group's manager. Answered with [`WireAnswer::Done`].
    Release {
        /// The unit.
        unit: UnitName,
    },
    /// Operator: readmit a node excluded from placement (or drained) — it takes copies
    /// again — for the node that runs the group manager. Answered with [`WireAnswer::Done`].
    Readmit {
        /// The node.
        node: NodeName,
    },
    /// A Raft request for this node's member of `group` (an encoded
    /// [`RaftRequest`](crate::raft::RaftRequest)). Answered with [`WireAnswer::Raft`].
    Raft {
        /// The group.
        group: String,
        /// The request (one byte string on the wire).
        #[serde(with = "understudy_actors::codec::bin")]
        request: Vec<u8>,
    },
    /// From the seed: found `group` (this node's own) with these members (Raft member id →
    /// node name). Answered with [`WireAnswer::Done`].
    Found {
        /// The group.
        group: String,
        /// Its founding voters.
        members: BTreeMap<u64, String>,
    },
    /// Fault injection (the test kit): this node sends nothing more to these nodes (an empty
    /// list heals). Answered with [`WireAnswer::Done`].
    Cut {
        /// The nodes cut off from this one's sending side.
        to: Vec<NodeName>,
    },
    /// Call a unit with a stimulus written as JSON, through the node's own client of that
    /// unit (which follows takeovers). Answered with [`WireAnswer::Called`].
    Call {
        /// The unit.
        unit: UnitName,
        /// The stimulus, as JSON.
        json: String,
        /// The budget, or the unit's own when absent.
        t_max_ms: Option<u64>,
    },
    /// Drive a closed-loop load from this node against `target` (`in_flight` workers, each
    /// sending its next request once the previous is answered) for `duration_ms` after
    /// `warmup_ms`, and say what the answers took (see [`crate::bench`]). Answered with
    /// [`WireAnswer::Bench`] when the load ends.
    Bench {
        /// The baseline counter of a node, or a unit.
        target: BenchTarget,
        /// Concurrent workers.
        in_flight: u32,
        /// How long requests are counted, after the warm-up.
        duration_ms: u64,
        /// How long the load runs before it is counted.
        warmup_ms: u64,
    },
    /// Drive a closed-loop load of `unit` from this node (`in_flight` workers) and record, per
    /// answer, when it was sent, the epoch it was answered at and the answering node's time
    /// (`ServedBy::at_us`): what `understudy bench` measures a takeover with. No request is
    /// sent after `limit_ms`, nor once `after_newer_ms` have passed since the first answer at
    /// a newer epoch than the first call's. Answered with [`WireAnswer::BenchServed`] when
    /// every request sent has its outcome.
    BenchServed {
        /// The unit.
        unit: UnitName,
        /// The stimulus, as JSON (`{worker}` replaced by the worker's number).
        stimulus: String,
        /// Concurrent workers.
        in_flight: u32,
        /// The longest the load sends requests.
        limit_ms: u64,
        /// How long it goes on after the first answer at a newer epoch.
        after_newer_ms: u64,
    },
}

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeName,
    /// Its group.
    pub group: String,
    /// Whether it was started without `--join` (its group's seed).
    pub seed: bool,
    /// The peers it reaches right now, itself included.
    pub members: Vec<NodeName>,
    /// Its name table.
    pub names: Vec<(UnitName, NameState)>,
    /// Its view of its group: Raft role, leader, and every unit by its copy of the committed
    /// table.
    pub control: ControlView,
    /// Its views of the other groups, whose tables it follows as a Raft learner.
    pub others: Vec<ControlView>,
    /// Time spent against budgets: what its primaries served, what its callers called.
    pub budgets: BudgetReport,
    /// How many times its local manager declared one of its copies lost for missed
    /// heartbeats (a hung copy, stopped and reported down), since the node started.
    #[serde(default)]
    pub copies_lost: u64,
}

/// The answer to a [`WireAsk::Stimulus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireAnswer {
    /// What the copy (or the node) answered.
    Stimulus(StimulusReply),
    /// The copy ended before it answered (it crashed, or was stopped): the caller treats it as
    /// a lost primary and follows the rebinding.
    CopyLost,
    /// The request did not decode.
    Malformed(String),
    /// The node's status.
    Status(Box<NodeStatus>),
    /// The JSON answer of a call, or why there is none.
    Called(Result<JsonAnswer, JsonCallError>),
    /// An operator request was passed to the group manager, or why it was not.
    Done(Result<(), String>),
    /// The reply of this node's Raft member (an encoded [`RaftReply`](crate::raft::RaftReply)).
    Raft(#[serde(with = "understudy_actors::codec::bin")] Vec<u8>),
    /// What a bench measured, or why it measured nothing.
    Bench(Result<BenchStats, crate::bench::BenchError>),
    /// What a served load saw, or why it ran no load.
    BenchServed(Result<ServedLoad, crate::bench::BenchError>),
}

/// Where a node's endpoint hands what arrives.
#[derive(Clone, Debug)]
pub struct EndpointArgs {
    /// This node's name.
    pub node: NodeName,
    /// This node's `LocalManager`.
    pub local: ActorRef<LocalManagerMsg>,
    /// The copies it runs: stimuli and peer messages go straight to them.
    pub routes: CopyRoutes,
    /// This node's name table.
    pub registry: Registry,
    /// How this node reaches its peers.
    pub directory: Directory,
    /// The units this node knows.
    pub catalog: Arc<Catalog>,
    /// This node's control plane of its own group (the group manager while this node leads).
    pub home: ControlHandle,
    /// Its control planes of the other groups (a learner of each).
    pub others: Vec<ControlHandle>,
    /// The group of each unit.
    pub unit_groups: BTreeMap<UnitName, String>,
    /// Whether this node was started without `--join`.
    pub seed: bool,
    /// The process group to advertise the endpoint under.
    pub group: String,
    /// The node's book of time spent against budgets.
    pub budgets: BudgetBook,
    /// The units this node can drive a bench against, with typed clients.
    pub benches: Arc<BenchUnits>,
}

/// A node's endpoint actor.
#[derive(Debug, Default)]
pub struct WireEndpoint;

impl Actor for WireEndpoint {
    type Msg = WireMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WireMsg>,
        args: EndpointArgs,
    ) -> Result<EndpointState, ActorProcessingErr> {
        ractor::pg::join(args.group.clone(), vec![myself.get_cell()]);
        Ok(EndpointState {
            args,
            callers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WireMsg>,
        msg: WireMsg,
        state: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WireMsg::Frame(bytes) => match decode::<Envelope>("envelope", &bytes) {
                Ok(Envelope::Node(NodeCast::Peer {
                    to,
                    from_node,
                    bytes,
                    ..
                })) => state.args.routes.peer(to, from_node, bytes),
                Ok(Envelope::Node(cast)) => {
                    let _ = state.args.local.cast(LocalManagerMsg::Cast(cast));
                }
                Ok(Envelope::Manager { group, cast }) => {
                    // Only this node's control plane of the sender's group may take it: a
                    // node's reports never reach another group's manager.
                    let control = std::iter::once(&state.args.home)
                        .chain(state.args.others.iter())
                        .find(|h| h.group == group)
                        .map(|h| h.control.clone());
                    let msg = ControlMsg::Manager(GroupManagerMsg::Cast(cast));
                    match control.map(|c| c.cast(msg)) {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            tracing::debug!(reason = %e, "a message for the group manager was dropped");
                        }
                        None => {
                            tracing::warn!(%group, "dropped a message for the manager of a group this node does not know");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "dropped a malformed frame"),
            },
            WireMsg::Ask(bytes, port) => {
                let request = decode::<WireRequest>("request", &bytes);
                // An answer to a node this one's link is cut to is lost, like any message.
                let mute = matches!(&request, Ok(WireRequest { from: Some(f), .. }) if is_cut(f));
                let reply = Reply { port, mute };
                state.ask(request.map(|r| r.ask), reply);
            }
        }
        Ok(())
    }
}

impl EndpointState {
    fn ask(
        &mut self,
        request: Result<WireAsk, understudy_actors::codec::CodecError>,
        reply: Reply,
    ) {
        let state = self;
        match request {
            Ok(WireAsk::Stimulus(ask)) => {
                let (tx, rx) = ractor::concurrency::oneshot::<StimulusReply>();
                state.args.routes.stimulus(ask, tx.into());
                // Answer off the endpoint's loop: the copy may take its time.
                tokio::spawn(async move {
                    let answer = match rx.await {
                        Ok(r) => WireAnswer::Stimulus(r),
                        Err(_) => WireAnswer::CopyLost,
                    };
                    reply.answer(&answer);
                });
            }
            Ok(WireAsk::Status) => {
                let args = state.args.clone();
                tokio::spawn(async move {
                    let answer = match describe(&args).await {
                        Ok(status) => WireAnswer::Status(Box::new(status)),
                        Err(e) => WireAnswer::Malformed(e),
                    };
                    reply.answer(&answer);
                });
            }
            Ok(WireAsk::Switchover { unit }) => {
                let input = GroupInput::Switchover { unit: unit.clone() };
                operate_on_unit(&state.args, &unit, input, reply);
            }
            Ok(WireAsk::Restore { unit }) => {
                let input = GroupInput::Restore { unit: unit.clone() };
                operate_on_unit(&state.args, &unit, input, reply);
            }
            Ok(WireAsk::Release { unit }) => {
                let input = GroupInput::Release { unit: unit.clone() };
                operate_on_unit(&state.args, &unit, input, reply);
            }
            Ok(WireAsk::Drain { node }) => {
                operate(
                    state.args.home.control.clone(),
                    GroupInput::Drain { node },
                    reply,
                );
            }
            Ok(WireAsk::Readmit { node }) => {
                operate(
                    state.args.home.control.clone(),
                    GroupInput::Readmit { node },
                    reply,
                );
            }
            Ok(WireAsk::Found { group, members }) => {
                let home = state.args.home.clone();
                let node = state.args.node.clone();
                tokio::spawn(async move {
                    let answer = if home.group != group {
                        Err(format!(
                            "node {node} is in group {}, not {group}",
                            home.group
                        ))
                    } else {
                        match home.raft.initialize(members).await {
                            Ok(()) | Err(crate::raft::MembershipError::AlreadyInitialized) => {
                                Ok(())
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    };
                    reply.answer(&WireAnswer::Done(answer));
                });
            }
            Ok(WireAsk::Raft { group, request }) => {
                let raft = [&state.args.home]
                    .into_iter()
                    .chain(state.args.others.iter())
                    .find(|h| h.group == group)
                    .map(|h| h.raft.clone());
                match raft {
                    Some(raft) => {
                        tokio::spawn(async move {
                            let answer = raft.handle_rpc(&request).await;
                            reply.answer(&WireAnswer::Raft(answer));
                        });
                    }
                    None => {
                        let refused = crate::raft::RaftReply::Refused {
                            reason: format!("node {} knows no group {group}", state.args.node),
                        };
                        reply.answer(&WireAnswer::Raft(refused.encode()));
                    }
                }
            }
            Ok(WireAsk::Call {
                unit,
                json,
                t_max_ms,
            }) => match state.caller(&unit) {
                Some(caller) => {
                    let call = caller.call_json(&json, t_max_ms.map(Duration::from_millis));
                    tokio::spawn(async move {
                        reply.answer(&WireAnswer::Called(call.await));
                    });
                }
                None => reply.answer(&WireAnswer::Called(Err(JsonCallError::UnknownUnit(unit.0)))),
            },
            Ok(WireAsk::Bench {
                target,
                in_flight,
                duration_ms,
                warmup_ms,
            }) => {
                let plan = BenchPlan::new(
                    in_flight,
                    Duration::from_millis(warmup_ms),
                    Duration::from_millis(duration_ms),
                );
                let benches = state.args.benches.clone();
                let context = BenchContext {
                    registry: state.args.registry.clone(),
                    directory: state.args.directory.clone(),
                    budgets: state.args.budgets.clone(),
                };
                tracing::info!(node = %state.args.node, %target, in_flight, duration_ms, warmup_ms, "bench");
                // The load runs off the endpoint's loop, which goes on routing meanwhile.
                tokio::spawn(async move {
                    let stats = match plan {
                        Ok(plan) => crate::bench::run(target, plan, &benches, &context).await,
                        Err(e) => Err(e),
                    };
                    reply.answer(&WireAnswer::Bench(stats));
                });
            }
            Ok(WireAsk::BenchServed {
                unit,
                stimulus,
                in_flight,
                limit_ms,
                after_newer_ms,
            }) => {
                let plan = ServedPlan::new(
                    in_flight,
                    Duration::from_millis(limit_ms),
                    Duration::from_millis(after_newer_ms),
                );
                let benches = state.args.benches.clone();
                let context = BenchContext {
                    registry: state.args.registry.clone(),
                    directory: state.args.directory.clone(),
                    budgets: state.args.budgets.clone(),
                };
                tracing::info!(node = %state.args.node, %unit, in_flight, limit_ms, after_newer_ms, "served bench");
                // Off the endpoint's loop, as a bench.
                tokio::spawn(async move {
                    let load = match plan {
                        Ok(plan) => {
                            crate::bench::run_served(unit, stimulus, plan, &benches, &context).await
                        }
                        Err(e) => Err(e),
                    };
                    reply.answer(&WireAnswer::BenchServed(load));
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "answered a malformed request");
                reply.answer(&WireAnswer::Malformed(e.to_string()));
            }
            Ok(WireAsk::Cut { to }) => {
                tracing::warn!(node = %state.args.node, ?to, "fault injection: links cut");
                set_cuts(to);
                reply.answer(&WireAnswer::Done(Ok(())));
            }
        }
    }
}

/// The way back to an asker; mute when this node's link to the asker is cut.
struct Reply {
    port: RpcReplyPort<Vec<u8>>,
    mute: bool,
}

impl Reply {
    fn answer(self, answer: &WireAnswer) {
        if self.mute {
            return;
        }
        match encode("answer", answer) {
            Ok(bytes) => {
                let _ = self.port.send(bytes);
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an answer"),
        }
    }
}

/// A node endpoint's state.
#[derive(Debug)]
pub struct EndpointState {
    args: EndpointArgs,
    callers: HashMap<UnitName, Arc<dyn JsonCaller>>,
}

impl EndpointState {
    /// This node's client of `unit` for JSON calls, made on first use.
    fn caller(&mut self, unit: &UnitName) -> Option<Arc<dyn JsonCaller>> {
        if let Some(c) = self.callers.get(unit) {
            return Some(c.clone());
        }
        let spec = self.args.catalog.get(unit)?;
        let caller = spec.kind.json_caller(
            unit.clone(),
            self.args.registry.clone(),
            self.args.directory.clone(),
            self.args.budgets.clone(),
        );
        self.callers.insert(unit.clone(), caller.clone());
        Some(caller)
    }
}

/// Hands an operator request about `unit` to the control plane of the unit's group.
fn operate_on_unit(args: &EndpointArgs, unit: &UnitName, input: GroupInput, reply: Reply) {
    let group = args.unit_groups.get(unit);
    let handle = std::iter::once(&args.home)
        .chain(args.others.iter())
        .find(|h| Some(&h.group) == group);
    match handle {
        Some(h) => operate(h.control.clone(), input, reply),
        None => reply.answer(&WireAnswer::Done(Err(format!(
            "unit {unit} is in no group this node knows; check the name"
        )))),
    }
}

/// Hands an operator request to a control plane, which takes it if it runs the group manager
/// and otherwise says which node does.
fn operate(control: ActorRef<ControlMsg>, input: GroupInput, reply: Reply) {
    tokio::spawn(async move {
        let answer = match ractor::call_t!(control, |port| ControlMsg::Operate(input, port), 2_000)
        {
            Ok(r) => r,
            Err(e) => Err(format!("the node's control plane did not answer: {e}")),
        };
        reply.answer(&WireAnswer::Done(answer));
    });
}

/// What a node says of itself.
async fn describe(args: &EndpointArgs) -> Result<NodeStatus, String> {
    let view = |h: &ControlHandle| {
        let control = h.control.clone();
        let group = h.group.clone();
        async move {
            ractor::call_t!(control, ControlMsg::View, 2_000)
                .map_err(|e| format!("the control plane of group {group} did not answer: {e}"))
        }
    };
    let control = view(&args.home).await?;
    let copies_lost = ractor::call_t!(args.local, LocalManagerMsg::CopiesLost, 2_000)
        .map_err(|e| format!("the local manager did not answer: {e}"))?;
    let mut others = Vec::new();
    for h in &args.others {
        others.push(view(h).await?);
    }
    Ok(NodeStatus {
        node: args.node.clone(),
        group: args.home.group.clone(),
        seed: args.seed,
        members: args.directory.nodes(),
        names: args.registry.snapshot(),
        control,
        others,
        budgets: args.budgets.report(),
        copies_lost,
    })
}

/// A [`NodeLink`] to another node's endpoint, over a `ractor_cluster` session.
#[derive(Clone, Debug)]
pub struct RemoteNode {
    node: NodeName,
    endpoint: ActorRef<WireMsg>,
}

impl RemoteNode {
    /// A link to node `node` through `endpoint`, its advertised endpoint actor.
    pub fn new(node: NodeName, endpoint: ActorCell) -> Self {
        RemoteNode {
            node,
            endpoint: endpoint.into(),
        }
    }

    fn frame(&self, envelope: &Envelope) -> Result<(), LinkError> {
        if is_cut(&self.node) {
            // Lost, as on a cut link: the sender learns nothing.
            return Ok(());
        }
        let bytes = encode("envelope", envelope).map_err(|e| LinkError::Encode(e.to_string()))?;
        self.endpoint
            .cast(WireMsg::Frame(bytes))
            .map_err(|e| LinkError::Gone(e.to_string()))
    }
}

impl NodeLink for RemoteNode {
    fn send(&self, msg: LocalManagerMsg) -> Result<(), LinkError> {
        match msg {
            LocalManagerMsg::Cast(cast) => self.frame(&Envelope::Node(cast)),
            LocalManagerMsg::Stimulus(ask, reply) => {
                let endpoint = self.endpoint.clone();
                let node = self.node.clone();
                tokio::spawn(async move {
                    let answer =
                        ask_node(&endpoint, &node, WireAsk::Stimulus(ask), ASK_TIMEOUT).await;
                    match answer {
                        Ok(WireAnswer::Stimulus(r)) => {
                            let _ = reply.send(r);
                        }
                        // The copy or the node was lost: dropping the port tells the caller.
                        _ => drop(reply),
                    }
                });
                Ok(())
            }
            other => Err(LinkError::Encode(format!(
                "{other:?} only makes sense inside its node"
            ))),
        }
    }
}

/// A [`ManagerLink`] to the manager of a group that runs on another node.
#[derive(Clone, Debug)]
pub struct RemoteManager {
    node: RemoteNode,
    group: String,
}

impl RemoteManager {
    /// A link to the manager of `group` on the node behind `node`.
    pub fn new(node: RemoteNode, group: impl Into<String>) -> Self {
        RemoteManager {
            node,
            group: group.into(),
        }
    }
}

impl ManagerLink for RemoteManager {
    fn send(&self, msg: GroupManagerMsg) -> Result<(), LinkError> {
        match msg {
            GroupManagerMsg::Cast(cast) => self.node.frame(&Envelope::Manager {
                group: self.group.clone(),
                cast,
            }),
            other => Err(LinkError::Encode(format!(
                "{other:?} only makes sense inside its node"
            ))),
        }
    }
}

/// The advertised endpoint of node `node` on another process, if a session to it is open.
pub fn endpoint_of(node: &NodeName) -> Option<ActorCell> {
    ractor::pg::get_members(&endpoint_group(node))
        .into_iter()
        .find(|c| !c.get_id().is_local())
}

/// Every node this process has a session to, with its advertised endpoint.
pub fn every_endpoint() -> Vec<(NodeName, ActorCell)> {
    ractor::pg::which_groups()
        .into_iter()
        .filter_map(|group| {
            let node = node_of_group(&group)?;
            let cell = ractor::pg::get_members(&group)
                .into_iter()
                .find(|c| !c.get_id().is_local())?;
            Some((node, cell))
        })
        .collect()
}

/// How long a status request to another node may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks node `node` (behind `endpoint`) for its status; `None` if it does not answer in time.
pub async fn ask_status(node: &NodeName, endpoint: &ActorCell) -> Option<NodeStatus> {
    let endpoint: ActorRef<WireMsg> = endpoint.clone().into();
    match ask_node(&endpoint, node, WireAsk::Status, STATUS_TIMEOUT).await {
        Ok(WireAnswer::Status(s)) => Some(*s),
        _ => None,
    }
}

/// Asks node `node` (behind `endpoint`) to found its group `group` with `members`.
pub async fn ask_found(
    node: &NodeName,
    endpoint: &ActorCell,
    group: &str,
    members: BTreeMap<u64, String>,
) -> Result<(), String> {
    let ask = WireAsk::Found {
        group: group.to_string(),
        members,
    };
    let endpoint: ActorRef<WireMsg> = endpoint.clone().into();
    match ask_node(&endpoint, node, ask, STATUS_TIMEOUT).await? {
        WireAnswer::Done(r) => r,
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// How long a Raft request may wait for its reply at most (openraft gives up sooner on its
/// own; this only bounds a call nobody waits for any more).
const RAFT_CALL_LIMIT: Duration = Duration::from_secs(10);

/// The members of a group reach each other over the nodes' `ractor_cluster` sessions: a Raft
/// request is a [`WireAsk::Raft`] to the endpoint of the member's node, authenticated like
/// every session by the cluster's cookie.
#[derive(Debug)]
pub struct WireRaftTransport {
    group: String,
}

impl WireRaftTransport {
    /// The transport of the members of group `group`.
    pub fn new(group: impl Into<String>) -> Self {
        WireRaftTransport {
            group: group.into(),
        }
    }
}

impl RaftTransport for WireRaftTransport {
    fn call(
        &self,
        target: MemberId,
        node: &str,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send>> {
        let node = NodeName::new(node);
        let group = self.group.clone();
        Box::pin(async move {
            let unreachable = |reason: String| TransportError::Unreachable { target, reason };
            let endpoint: ActorRef<WireMsg> = endpoint_of(&node)
                .ok_or_else(|| unreachable(format!("no session to node {node}")))?
                .into();
            let broken = |reason: String| TransportError::Broken { target, reason };
            match ask_node(
                &endpoint,
                &node,
                WireAsk::Raft { group, request },
                RAFT_CALL_LIMIT,
            )
            .await
            {
                Ok(WireAnswer::Raft(reply)) => Ok(reply),
                Ok(other) => Err(broken(format!("node {node} answered {other:?}"))),
                Err(e) => Err(broken(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_groups_name_their_node() {
        let g = endpoint_group(&NodeName::new("b"));
        assert_eq!(node_of_group(&g), Some(NodeName::new("b")));
        assert_eq!(node_of_group("understudy.node."), None);
        assert_eq!(node_of_group("other"), None);
    }

    #[test]
    fn a_malformed_answer_or_request_decodes_to_an_error() {
        assert!(decode::<WireAsk>("request", &[0xff, 0x00, 0x13]).is_err());
        assert!(decode::<WireAnswer>("answer", &[]).is_err());
    }

    mod fuzz {
        //! Property tests of what a node's endpoint decodes: `ractor_cluster` messages
        //! ([`WireMsg`]), the frames and requests inside them, and the answers a caller reads.

        use super::super::*;
        use proptest::prelude::*;
        use ractor::message::SerializedMessage;
        use ractor::Message as _;
        use serde::de::DeserializeOwned;
        use understudy_actors::codec::CodecError;
        use understudy_actors::DeliveryError;
        use understudy_runtime::{ClientId, CopyId, Epoch, Seq, StimulusId};

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(any::<u8>(), 0..max)
        }

        fn name() -> impl Strategy<Value = String> + Clone {
            "[a-z0-9_-]{1,12}"
        }

        fn ask() -> impl Strategy<Value = WireAsk> {
            let unit = name().prop_map(UnitName::new);
            let node = name().prop_map(NodeName::new);
            let stimulus = (
                unit.clone(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                bytes(48),
            )
                .prop_map(|(unit, copy, seq, epoch, body)| {
                    WireAsk::Stimulus(StimulusAsk {
                        unit,
                        copy: CopyId(copy),
                        id: StimulusId {
                            client: ClientId(copy | 1),
                            seq: Seq(seq),
                        },
                        low_water: Seq(seq / 2),
                        bound_at: Epoch(epoch),
                        body,
                        trace: None,
                    })
                });
            prop_oneof![
                stimulus,
                Just(WireAsk::Status),
                unit.clone().prop_map(|unit| WireAsk::Switchover { unit }),
                node.clone().prop_map(|node| WireAsk::Drain { node }),
                node.clone().prop_map(|node| WireAsk::Readmit { node }),
                unit.clone().prop_map(|unit| WireAsk::Restore { unit }),
                unit.clone().prop_map(|unit| WireAsk::Release { unit }),
                (name(), bytes(96)).prop_map(|(group, request)| WireAsk::Raft { group, request }),
                (
                    name(),
                    proptest::collection::btree_map(any::<u64>(), name(), 0..4)
                )
                    .prop_map(|(group, members)| WireAsk::Found { group, members }),
                proptest::collection::vec(node, 0..4).prop_map(|to| WireAsk::Cut { to }),
                (unit, ".{0,24}", proptest::option::of(any::<u64>())).prop_map(
                    |(unit, json, t_max_ms)| WireAsk::Call {
                        unit,
                        json,
                        t_max_ms
                    }
                ),
            ]
        }

        fn request() -> impl Strategy<Value = WireRequest> {
            (proptest::option::of(name().prop_map(NodeName::new)), ask())
                .prop_map(|(from, ask)| WireRequest { from, ask })
        }

        fn answer() -> impl Strategy<Value = WireAnswer> {
            prop_oneof![
                Just(WireAnswer::CopyLost),
                ".{0,24}".prop_map(WireAnswer::Malformed),
                prop_oneof![Just(Ok(())), ".{0,24}".prop_map(Err)].prop_map(WireAnswer::Done),
                bytes(96).prop_map(WireAnswer::Raft),
                (name(), any::<u64>()).prop_map(|(unit, copy)| {
                    WireAnswer::Stimulus(Err(DeliveryError::NoSuchCopy {
                        unit: UnitName::new(unit),
                        copy: CopyId(copy),
                    }))
                }),
                name().prop_map(|unit| WireAnswer::Called(Err(JsonCallError::UnknownUnit(unit)))),
            ]
        }

        /// Undecodable bytes are refused as malformed `what`: the error names what was expected.
        fn decodes_or_is_refused_as<T: DeserializeOwned>(
            what: &'static str,
            bytes: &[u8],
        ) -> Result<(), TestCaseError> {
            if let Err(e) = decode::<T>(what, bytes) {
                prop_assert!(
                    matches!(&e, CodecError::Decode { what: w, .. } if *w == what),
                    "{:?}",
                    e
                );
                prop_assert!(
                    e.to_string().starts_with(&format!("malformed {what} (")),
                    "{}",
                    e
                );
            }
            Ok(())
        }

        fn damaged(
            bytes: &[u8],
            cut: prop::sample::Index,
            at: prop::sample::Index,
            flip: u8,
        ) -> [Vec<u8>; 2] {
            understudy_actors::codec::damaged(
                bytes,
                cut.index(bytes.len()),
                at.index(bytes.len()),
                flip,
            )
        }

        /// What `ractor_cluster` hands the endpoint, built from a session's frame.
        fn wire_msg(call: bool, variant: String, args: Vec<u8>) -> Result<WireMsg, ()> {
            let message = if call {
                let (tx, _rx) = ractor::concurrency::oneshot::<Vec<u8>>();
                SerializedMessage::Call {
                    variant,
                    args,
                    reply: tx.into(),
                    metadata: None,
                }
            } else {
                SerializedMessage::Cast {
                    variant,
                    args,
                    metadata: None,
                }
            };
            WireMsg::deserialize(message).map_err(|_| ())
        }

        /// The argument layout of a derived `RactorClusterMessage`: each field's length (u64
        /// big-endian), then its bytes.
        fn packed(fields: &[&[u8]]) -> Vec<u8> {
            let mut args = Vec::new();
            for field in fields {
                args.extend_from_slice(&(field.len() as u64).to_be_bytes());
                args.extend_from_slice(field);
            }
            args
        }

        fn runtime() -> Result<tokio::runtime::Runtime, TestCaseError> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| TestCaseError::fail(e.to_string()))
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn a_malformed_frame_request_or_answer_is_refused_with_a_clear_error(input in bytes(256)) {
                decodes_or_is_refused_as::<Envelope>("envelope", &input)?;
                decodes_or_is_refused_as::<WireRequest>("request", &input)?;
                decodes_or_is_refused_as::<WireAnswer>("answer", &input)?;
            }

            #[test]
            fn a_request_or_answer_round_trips(request in request(), answer in answer()) {
                let bytes = encode("request", &request).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(decode::<WireRequest>("request", &bytes), Ok(request));
                let bytes = encode("answer", &answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(decode::<WireAnswer>("answer", &bytes), Ok(answer));
            }

            #[test]
            fn a_truncated_or_damaged_request_or_answer_decodes_or_is_refused(
                request in request(),
                answer in answer(),
                cut in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                flip in 1..=255u8,
            ) {
                let bytes = encode("request", &request).map_err(|e| TestCaseError::fail(e.to_string()))?;
                for input in damaged(&bytes, cut, at, flip) {
                    decodes_or_is_refused_as::<WireRequest>("request", &input)?;
                }
                let bytes = encode("answer", &answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
                for input in damaged(&bytes, cut, at, flip) {
                    decodes_or_is_refused_as::<WireAnswer>("answer", &input)?;
                }
            }

            #[test]
            fn a_malformed_ractor_cluster_message_is_refused_without_a_panic(
                call in any::<bool>(),
                variant in prop_oneof![Just("Frame".to_string()), Just("Ask".to_string()), ".{0,8}"],
                args in bytes(64),
                payload in bytes(64),
            ) {
                let runtime = runtime()?;
                let _inside = runtime.enter();
                // Anything at all: a message or a refusal, never a panic.
                let _ = wire_msg(call, variant.clone(), args);
                // A frame's layout with a length that lies is refused.
                let mut lying = packed(&[&payload]);
                lying[7] = lying[7].wrapping_add(1);
                prop_assert!(wire_msg(call, variant, lying).is_err());
                // And a well-formed one arrives as it was sent.
                let args = packed(&[&payload]);
                match wire_msg(false, "Frame".into(), args.clone()) {
                    Ok(WireMsg::Frame(read)) => prop_assert_eq!(read, payload.clone()),
                    other => prop_assert!(false, "{:?}", other.map(|_| ())),
                }
                prop_assert!(matches!(wire_msg(true, "Ask".into(), args), Ok(WireMsg::Ask(read, _)) if read == payload));
            }

            #[test]
            fn any_process_group_name_is_an_endpoint_of_its_node_or_none(group in ".{0,40}", node in name()) {
                let node = NodeName::new(node);
                prop_assert_eq!(node_of_group(&endpoint_group(&node)), Some(node));
                if let Some(n) = node_of_group(&group) {
                    prop_assert_eq!(endpoint_group(&n), group);
                }
            }
        }
    }
}
