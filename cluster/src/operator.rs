//! What an operator asks of a running cluster — every node's status, a planned switchover, a
//! drain, a restore — written once over [`ReachNodes`], the way the asker reaches the nodes:
//! a node's own sessions from inside the cluster (its HTTP API, [`crate::http`], which
//! `understudy status|switchover|drain|restore` ask), or a [`Probe`](crate::probe::Probe) from
//! outside it (the test kit, the demo and the bench). Both ask the same nodes the same
//! [`WireAsk`]s and read the answers the same way.
//!
//! ```text
//!   understudy status ─HTTP─► GET /api/status ─► node's reach ─┐
//!                                                              ├─► statuses / operate ─► WireAsk ─► each node's endpoint
//!   tests, demo, bench ─► Probe ───────────────────────────────┘
//! ```

use crate::probe::ProbeError;
use crate::wire::{
    ask_node, endpoint_of, every_endpoint, NodeStatus, WireAnswer, WireAsk, WireMsg,
};
use ractor::ActorRef;
use std::future::Future;
use std::time::Duration;
use understudy_runtime::{NodeName, UnitName};

/// How long a status or operator request to one node may take.
pub const ASK_WAIT: Duration = Duration::from_secs(5);

/// A way to reach the nodes of a cluster and ask them things.
pub trait ReachNodes: Send + Sync {
    /// The nodes reachable right now, sorted by name.
    fn nodes(&self) -> Vec<NodeName>;

    /// Sends `ask` to `node` and waits up to `wait` for its answer.
    fn ask(
        &self,
        node: &NodeName,
        ask: &WireAsk,
        wait: Duration,
    ) -> impl Future<Output = Result<WireAnswer, ProbeError>> + Send;
}

/// What `node` says of itself.
pub async fn status_of(reach: &impl ReachNodes, node: &NodeName) -> Result<NodeStatus, ProbeError> {
    match reach.ask(node, &WireAsk::Status, ASK_WAIT).await? {
        WireAnswer::Status(s) => Ok(*s),
        other => Err(ProbeError::NoAnswer {
            node: node.clone(),
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

/// Every reachable node's status, in the order of their names: what `understudy status`
/// shows (`--json`: one object per node, in this order) and `GET /api/status` answers. Fails
/// with the first node that does not answer, naming it.
pub async fn statuses(reach: &impl ReachNodes) -> Result<Vec<NodeStatus>, ProbeError> {
    let mut all = Vec::new();
    for node in reach.nodes() {
        all.push(status_of(reach, &node).await?);
    }
    Ok(all)
}

/// The node that runs the manager of a group `group` accepts, by the nodes' own status.
pub async fn manager_where(
    reach: &impl ReachNodes,
    group: impl Fn(&str) -> bool,
) -> Result<NodeName, ProbeError> {
    for node in reach.nodes() {
        if let Ok(s) = status_of(reach, &node).await {
            if s.control.runs_group_manager && group(&s.group) {
                return Ok(node);
            }
        }
    }
    Err(ProbeError::NoManager { group: None })
}

/// The group that declares `unit`, by any node's views of the groups (placed or not yet).
fn group_of_unit(statuses: &[NodeStatus], unit: &UnitName) -> Option<String> {
    statuses
        .iter()
        .flat_map(|s| std::iter::once(&s.control).chain(s.others.iter()))
        .find(|v| v.strategies.contains_key(unit) || v.units.iter().any(|u| &u.unit == unit))
        .map(|v| v.group.clone())
}

/// The group of node `node`: its own word if it answers, else the group whose table counts it
/// up or among its voters.
fn group_of_node(statuses: &[NodeStatus], node: &NodeName) -> Option<String> {
    if let Some(s) = statuses.iter().find(|s| &s.node == node) {
        return Some(s.group.clone());
    }
    statuses
        .iter()
        .flat_map(|s| std::iter::once(&s.control).chain(s.others.iter()))
        .find(|v| v.nodes_up.contains(node) || v.voters.contains(node))
        .map(|v| v.group.clone())
}

/// What `find` finds in the statuses seen so far, asking one more node at a time until it
/// does; `None` once every node was asked (or passed over) in vain.
async fn seek<T>(
    reach: &impl ReachNodes,
    rest: &mut impl Iterator<Item = NodeName>,
    seen: &mut Vec<NodeStatus>,
    find: impl Fn(&[NodeStatus]) -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(found) = find(seen) {
            return Some(found);
        }
        if !one_more(reach, rest, seen).await {
            return None;
        }
    }
}

/// Adds the status of the next node of `rest` that answers to `seen`; `false` once every node
/// was asked.
async fn one_more(
    reach: &impl ReachNodes,
    rest: &mut impl Iterator<Item = NodeName>,
    seen: &mut Vec<NodeStatus>,
) -> bool {
    for node in rest.by_ref() {
        if let Ok(s) = status_of(reach, &node).await {
            seen.push(s);
            return true;
        }
    }
    false
}

/// Hands an operator request — [`WireAsk::Switchover`], [`WireAsk::Drain`],
/// [`WireAsk::Restore`], [`WireAsk::Release`] or [`WireAsk::Readmit`] — to the node that runs the manager of the group concerned. `Ok` means
/// the manager took it; the nodes' status then shows it carried out (a new epoch, a node
/// emptied). A unit or node no group knows is refused before anything is sent. Nodes are asked
/// for their status in the order of their names until both the group and its manager are
/// known, and one that does not answer is passed over.
pub async fn operate(reach: &impl ReachNodes, request: WireAsk) -> Result<(), ProbeError> {
    let mut seen: Vec<NodeStatus> = Vec::new();
    let mut rest = reach.nodes().into_iter();
    let none_answered = |seen: &[NodeStatus], otherwise: ProbeError| {
        if seen.is_empty() {
            ProbeError::NoNodeAnswered
        } else {
            otherwise
        }
    };
    let group = match &request {
        WireAsk::Switchover { unit } | WireAsk::Restore { unit } | WireAsk::Release { unit } => {
            Some(
                seek(reach, &mut rest, &mut seen, |s| group_of_unit(s, unit))
                    .await
                    .ok_or_else(|| none_answered(&seen, ProbeError::UnknownUnit(unit.clone())))?,
            )
        }
        WireAsk::Drain { node } | WireAsk::Readmit { node } => Some(
            seek(reach, &mut rest, &mut seen, |s| group_of_node(s, node))
                .await
                .ok_or_else(|| none_answered(&seen, ProbeError::UnknownNode(node.clone())))?,
        ),
        _ => None,
    };
    let runs_it = |s: &NodeStatus| {
        s.control.runs_group_manager && (group.is_none() || group.as_ref() == Some(&s.group))
    };
    let manager = seek(reach, &mut rest, &mut seen, |seen| {
        seen.iter().find(|s| runs_it(s)).map(|s| s.node.clone())
    })
    .await
    .ok_or(ProbeError::NoManager {
        group: group.clone(),
    })?;
    match reach.ask(&manager, &request, ASK_WAIT).await? {
        WireAnswer::Done(Ok(())) => Ok(()),
        WireAnswer::Done(Err(reason)) | WireAnswer::Malformed(reason) => Err(ProbeError::Refused {
            node: manager,
            reason,
        }),
        other => Err(ProbeError::NoAnswer {
            node: manager,
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

/// How a node reaches the cluster from inside: itself through its own endpoint, every other
/// node through the endpoint its session advertises — the same asks a probe sends, with this
/// node's name on them (so a cut link cuts them too).
#[derive(Clone, Debug)]
pub struct NodeReach {
    me: NodeName,
    endpoint: ActorRef<WireMsg>,
}

impl NodeReach {
    /// Node `me`'s reach, `endpoint` being its own endpoint actor.
    pub fn new(me: NodeName, endpoint: ActorRef<WireMsg>) -> Self {
        NodeReach { me, endpoint }
    }
}

impl ReachNodes for NodeReach {
    fn nodes(&self) -> Vec<NodeName> {
        let mut all: Vec<NodeName> = every_endpoint()
            .into_iter()
            .map(|(node, _)| node)
            .chain(std::iter::once(self.me.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    async fn ask(
        &self,
        node: &NodeName,
        ask: &WireAsk,
        wait: Duration,
    ) -> Result<WireAnswer, ProbeError> {
        let endpoint: ActorRef<WireMsg> = if node == &self.me {
            self.endpoint.clone()
        } else {
            endpoint_of(node)
                .ok_or_else(|| ProbeError::NoSuchNode(node.clone()))?
                .into()
        };
        ask_node(&endpoint, node, ask.clone(), wait)
            .await
            .map_err(|reason| ProbeError::NoAnswer {
                node: node.clone(),
                reason,
            })
    }
}
