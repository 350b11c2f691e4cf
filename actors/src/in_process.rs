//! Several nodes in one process: a group manager and one `LocalManager` per node, each with
//! its own name table, wired through a [`Directory`]. Nothing here lets a node reach another
//! except through the directory's endpoints, exactly as it will across processes; it exists
//! so that the protocol's actors can be exercised (and demonstrated) without sockets.

use crate::budgets::BudgetBook;
use crate::client::UnitClient;
use crate::group_manager::{
    GroupManager, GroupManagerArgs, GroupManagerConfig, GroupManagerMsg, UnitStatus,
};
use crate::link::Directory;
use crate::local_manager::{
    Catalog, LocalManager, LocalManagerArgs, LocalManagerConfig, LocalManagerMsg,
};
use crate::registry::{NameState, Registry};
use ractor::{Actor, ActorRef, SpawnErr};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use understudy_runtime::{NodeName, Unit, UnitName};

/// Tuning of an in-process cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterConfig {
    /// The group manager's tuning.
    pub group: GroupManagerConfig,
    /// Every local manager's tuning.
    pub local: LocalManagerConfig,
}

/// Why the cluster could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An actor failed to start.
    #[error("an actor failed to start: {0}")]
    Spawn(#[from] SpawnErr),
    /// No node of that name.
    #[error("no node named {0}")]
    NoSuchNode(NodeName),
    /// The group manager did not answer.
    #[error("the group manager did not answer: {0}")]
    GroupManager(String),
    /// The condition waited for did not hold before the deadline.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
}

#[derive(Debug)]
struct NodeParts {
    local: ActorRef<LocalManagerMsg>,
    registry: Registry,
    budgets: BudgetBook,
}

/// A group manager and its nodes, in this process.
#[derive(Debug)]
pub struct InProcessCluster {
    group: ActorRef<GroupManagerMsg>,
    nodes: Mutex<BTreeMap<NodeName, NodeParts>>,
    directory: Directory,
    catalog: Arc<Catalog>,
    config: ClusterConfig,
}

impl InProcessCluster {
    /// Start a group manager and one node per name, and place every unit of `catalog`.
    pub async fn start(
        catalog: Catalog,
        nodes: &[&str],
        config: ClusterConfig,
    ) -> Result<InProcessCluster, ClusterError> {
        let directory = Directory::new();
        let (group, _) = Actor::spawn(
            None,
            GroupManager,
            GroupManagerArgs {
                directory: directory.clone(),
                config: config.group,
            },
        )
        .await?;
        let cluster = InProcessCluster {
            group,
            nodes: Mutex::new(BTreeMap::new()),
            directory,
            catalog: Arc::new(catalog),
            config,
        };
        for n in nodes {
            cluster.start_node(n).await?;
        }
        for unit in cluster.catalog.names() {
            let _ = cluster.group.cast(GroupManagerMsg::AddUnit { unit });
        }
        Ok(cluster)
    }

    /// Start (or start again, empty) the node `name`.
    pub async fn start_node(&self, name: &str) -> Result<(), ClusterError> {
        let node = NodeName::new(name);
        let registry = Registry::new();
        // A new node learns the current bindings from the others' tables.
        let known = self.nodes().values().next().map(|p| p.registry.snapshot());
        for (unit, state) in known.unwrap_or_default() {
            registry.apply(crate::registry::NameUpdate { unit, state });
        }
        let budgets = BudgetBook::default();
        let (local, _) = Actor::spawn(
            None,
            LocalManager,
            LocalManagerArgs {
                node: node.clone(),
                catalog: self.catalog.clone(),
                directory: self.directory.clone(),
                registry: registry.clone(),
                group: Arc::new(self.group.clone()),
                incarnation: crate::clock::new_incarnation(),
                config: self.config.local,
                budgets: budgets.clone(),
                routes: crate::local_manager::CopyRoutes::default(),
            },
        )
        .await?;
        self.directory.insert_local(node.clone(), local.clone());
        self.nodes().insert(
            node,
            NodeParts {
                local,
                registry,
                budgets,
            },
        );
        Ok(())
    }

    fn nodes(&self) -> MutexGuard<'_, BTreeMap<NodeName, NodeParts>> {
        // The map is only ever replaced whole under the lock; a poisoned lock still holds a
        // consistent map.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The names of the running nodes.
    pub fn node_names(&self) -> Vec<NodeName> {
        self.nodes().keys().cloned().collect()
    }

    /// Kill the node `name`'s local manager and, with it, every copy it supervises — the loss
    /// of a whole node.
    pub fn kill_node(&self, name: &str) -> Result<(), ClusterError> {
        let node = NodeName::new(name);
        let parts = self
            .nodes()
            .remove(&node)
            .ok_or_else(|| ClusterError::NoSuchNode(node.clone()))?;
        self.directory.remove(&node);
        parts.local.kill();
        Ok(())
    }

    /// The operator's restore of `unit`, declared unavailable: it starts again, empty, at a
    /// new epoch.
    pub fn restore(&self, unit: &str) -> Result<(), ClusterError> {
        self.group
            .cast(GroupManagerMsg::Restore {
                unit: UnitName::new(unit),
            })
            .map_err(|e| ClusterError::GroupManager(e.to_string()))
    }

    /// The name table of node `name`.
    pub fn registry(&self, name: &str) -> Result<Registry, ClusterError> {
        let node = NodeName::new(name);
        self.nodes()
            .get(&node)
            .map(|p| p.registry.clone())
            .ok_or(ClusterError::NoSuchNode(node))
    }

    /// A client of unit `unit_name` (of behaviour `unit`) on node `node`.
    pub fn client<U: Unit>(
        &self,
        node: &str,
        unit_name: &str,
        unit: U,
    ) -> Result<UnitClient<U>, ClusterError> {
        let budgets = self.budgets(node)?;
        Ok(UnitClient::new(
            unit,
            UnitName::new(unit_name),
            self.registry(node)?,
            self.directory.clone(),
        )
        .with_budgets(budgets))
    }

    /// Node `node`'s book of time spent against budgets.
    pub fn budgets(&self, node: &str) -> Result<BudgetBook, ClusterError> {
        let node = NodeName::new(node);
        self.nodes()
            .get(&node)
            .map(|p| p.budgets.clone())
            .ok_or(ClusterError::NoSuchNode(node))
    }

    /// Every unit as the group manager sees it.
    pub async fn status(&self) -> Result<Vec<UnitStatus>, ClusterError> {
        ractor::call_t!(self.group, GroupManagerMsg::Status, 5_000)
            .map_err(|e| ClusterError::GroupManager(e.to_string()))
    }

    /// Wait until every unit serves with a ready standby and every node's name table has its
    /// binding, or until `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Vec<UnitStatus>, ClusterError> {
        self.wait_until(
            timeout,
            "every unit serving with a ready standby",
            |units| units.iter().all(|u| u.serving && u.standby_ready),
        )
        .await
    }

    /// Poll the group manager's view (and the nodes' name tables) until `ok` holds for it and
    /// every bound primary is in every table, or until `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &'static str,
        ok: impl Fn(&[UnitStatus]) -> bool,
    ) -> Result<Vec<UnitStatus>, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let units = self.status().await?;
            let tables: Vec<Registry> = self.nodes().values().map(|p| p.registry.clone()).collect();
            let tables_agree = units.iter().all(|u| {
                !u.serving
                    || tables
                        .iter()
                        .all(|registry| match registry.resolve(&u.unit) {
                            Some(NameState::Bound(b)) => b.epoch == u.epoch,
                            _ => false,
                        })
            });
            if !units.is_empty() && ok(&units) && tables_agree {
                return Ok(units);
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout(timeout, what));
            }
            // Poll with a deadline (checked above).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop every actor, through a shared reference.
    pub fn shutdown_shared(&self) {
        for p in self.nodes().values() {
            p.local.kill();
        }
        self.group.kill();
    }

    /// Stop every actor.
    pub fn shutdown(self) {
        for p in self.nodes().values() {
            p.local.kill();
        }
        self.group.kill();
    }
}
