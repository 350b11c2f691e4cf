//! How actors reach a node or a group manager without knowing whether it runs in this process
//! or across the network. A [`NodeLink`] delivers to a node's `LocalManager`, a
//! [`ManagerLink`] to a group's manager; in one process both are plain actor references, and
//! the cluster crate supplies the ones that cross `ractor_cluster` sessions.

use crate::group_manager::GroupManagerMsg;
use crate::local_manager::LocalManagerMsg;
use dashmap::DashMap;
use ractor::ActorRef;
use std::fmt::Debug;
use std::sync::Arc;
use understudy_runtime::NodeName;

/// A message could not be handed to its destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No route to that node is known (it never joined, or it left): resolve again later.
    #[error("no route to node {0}")]
    NoRoute(NodeName),
    /// The destination is gone (its actor stopped or its session closed): the message was
    /// dropped; whoever waits for an answer sees its reply port closed.
    #[error("the destination is gone: {0}")]
    Gone(String),
    /// The message could not be encoded for the network.
    #[error("cannot send: {0}")]
    Encode(String),
}

/// Delivers messages to one node's `LocalManager`.
pub trait NodeLink: Send + Sync + Debug {
    /// Hand `msg` over. Never blocks.
    fn send(&self, msg: LocalManagerMsg) -> Result<(), LinkError>;
}

impl NodeLink for ActorRef<LocalManagerMsg> {
    fn send(&self, msg: LocalManagerMsg) -> Result<(), LinkError> {
        self.cast(msg).map_err(|e| LinkError::Gone(e.to_string()))
    }
}

/// Delivers messages to a group's manager, wherever it currently runs.
pub trait ManagerLink: Send + Sync + Debug {
    /// Hand `msg` over. Never blocks.
    fn send(&self, msg: GroupManagerMsg) -> Result<(), LinkError>;
}

impl ManagerLink for ActorRef<GroupManagerMsg> {
    fn send(&self, msg: GroupManagerMsg) -> Result<(), LinkError> {
        self.cast(msg).map_err(|e| LinkError::Gone(e.to_string()))
    }
}

/// How to reach each node, by name. Cheap to clone; clones share the table.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    nodes: Arc<DashMap<NodeName, Arc<dyn NodeLink>>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record (or replace) the route to `node`.
    pub fn insert(&self, node: NodeName, link: Arc<dyn NodeLink>) {
        self.nodes.insert(node, link);
    }

    /// Record a node that runs in this process.
    pub fn insert_local(&self, node: NodeName, local: ActorRef<LocalManagerMsg>) {
        self.insert(node, Arc::new(local));
    }

    /// Forget the route to `node`.
    pub fn remove(&self, node: &NodeName) {
        self.nodes.remove(node);
    }

    /// Whether a route to `node` is known.
    pub fn knows(&self, node: &NodeName) -> bool {
        self.nodes.contains_key(node)
    }

    /// Deliver `msg` to `node`'s `LocalManager`.
    pub fn send(&self, node: &NodeName, msg: LocalManagerMsg) -> Result<(), LinkError> {
        let link = self
            .nodes
            .get(node)
            .map(|l| l.value().clone())
            .ok_or_else(|| LinkError::NoRoute(node.clone()))?;
        link.send(msg)
    }

    /// Every node with a known route, sorted.
    pub fn nodes(&self) -> Vec<NodeName> {
        let mut all: Vec<NodeName> = self.nodes.iter().map(|e| e.key().clone()).collect();
        all.sort();
        all
    }
}
