//! One Understudy node: an OS process with its own `ractor_cluster` `NodeServer`, its
//! `LocalManager`, its name table and its wire endpoint.
//!
//! Peers are known by name: each node advertises its endpoint in a process group named after
//! it, and the membership task keeps the node's [`Directory`] equal to the set of peers whose
//! endpoints are reachable right now. `ractor_cluster` does not reconnect by itself, so every
//! `--join` address is re-dialled until a session to that peer (by name) exists again.
//!
//! Until the next step puts the group manager on the group's Raft leader, the group manager
//! runs on the *seed* node (the one started without `--join`), and every other node reaches
//! it through the process group [`MANAGER_GROUP`].

use crate::wire::{
    endpoint_group, node_of_group, EndpointArgs, RemoteManager, RemoteNode, WireEndpoint,
};
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use understudy_actors::group_manager::{GroupManagerArgs, GroupManagerConfig};
use understudy_actors::local_manager::{LocalManagerArgs, LocalManagerConfig};
use understudy_actors::{
    Catalog, Directory, GroupManager, GroupManagerMsg, LinkError, LocalManager, LocalManagerMsg,
    ManagerLink, Registry,
};
use understudy_runtime::{NodeName, UnitName};

/// The process group under which the node running the group manager advertises its endpoint.
pub const MANAGER_GROUP: &str = "understudy.manager";

/// The largest frame a node accepts from a peer (ractor_cluster closes a session that sends a
/// larger one, so every node must use the same limit).
pub const MAX_FRAME_BYTES: u64 = 16 * 1024 * 1024;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's name, unique in the cluster.
    pub name: NodeName,
    /// The port it listens on.
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless told otherwise).
    pub bind: IpAddr,
    /// Peers to join, as `host:port`.
    pub join: Vec<String>,
    /// The shared secret every node of the cluster must present.
    pub cookie: String,
    /// The units this node can run.
    pub catalog: Catalog,
    /// The seed places the units once this many nodes (itself included) are connected.
    pub expect: usize,
    /// Tuning of the node's local manager.
    pub local: LocalManagerConfig,
    /// Tuning of the group manager, where it runs.
    pub group: GroupManagerConfig,
}

impl NodeOptions {
    /// Options for node `name` on `port`, bound to 127.0.0.1, joining nobody.
    pub fn new(name: &str, port: u16, cookie: &str, catalog: Catalog) -> Self {
        NodeOptions {
            name: NodeName::new(name),
            port,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            join: Vec::new(),
            cookie: cookie.to_string(),
            catalog,
            expect: 1,
            local: LocalManagerConfig::default(),
            group: GroupManagerConfig::default(),
        }
    }

    /// Whether this node is the seed (it joins nobody), which runs the group manager.
    pub fn is_seed(&self) -> bool {
        self.join.is_empty()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An actor failed to start (for the `NodeServer`, usually: the port is taken).
    #[error("could not start {what}: {reason}")]
    Start {
        /// Which actor.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A node name must be non-empty and made of letters, digits, `-` and `_`.
    #[error("bad node name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Its name.
    pub name: NodeName,
    /// How it reaches its peers (itself included).
    pub directory: Directory,
    /// Its name table.
    pub registry: Registry,
    /// Its local manager.
    pub local: ActorRef<LocalManagerMsg>,
    server: ActorRef<NodeServerMessage>,
    endpoint: ActorRef<crate::wire::WireMsg>,
    manager: Option<ActorRef<GroupManagerMsg>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Reaches the group manager wherever it is advertised (interim: the seed node).
#[derive(Debug)]
struct AdvertisedManager;

impl ManagerLink for AdvertisedManager {
    fn send(&self, msg: GroupManagerMsg) -> Result<(), LinkError> {
        let remote = ractor::pg::get_members(&MANAGER_GROUP.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local())
            .ok_or_else(|| LinkError::NoRoute(NodeName::new("(group manager)")))?;
        RemoteManager::new(RemoteNode::new(remote)).send(msg)
    }
}

/// A number unique within this process, for names that must not repeat.
pub fn unique_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Node {
    /// Start a node.
    pub async fn start(opts: NodeOptions) -> Result<Node, NodeError> {
        if !valid_name(&opts.name.0) {
            return Err(NodeError::BadName(opts.name.0.clone()));
        }
        let start_err = |what| {
            move |e: ractor::SpawnErr| NodeError::Start {
                what,
                reason: e.to_string(),
            }
        };
        let server = NodeServer::new(
            opts.port,
            opts.cookie.clone(),
            opts.name.0.clone(),
            opts.bind.to_string(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Transitive),
        )
        .with_listen_addr(opts.bind)
        .with_max_inbound_frame_size(MAX_FRAME_BYTES);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(start_err("the node server"))?;

        let directory = Directory::new();
        let registry = Registry::new();
        let manager = if opts.is_seed() {
            let (m, _) = Actor::spawn(
                None,
                GroupManager,
                GroupManagerArgs {
                    directory: directory.clone(),
                    config: opts.group,
                },
            )
            .await
            .map_err(start_err("the group manager"))?;
            Some(m)
        } else {
            None
        };
        let link: Arc<dyn ManagerLink> = match &manager {
            Some(m) => Arc::new(m.clone()),
            None => Arc::new(AdvertisedManager),
        };
        let (local, _) = Actor::spawn(
            None,
            LocalManager,
            LocalManagerArgs {
                node: opts.name.clone(),
                catalog: Arc::new(opts.catalog.clone()),
                directory: directory.clone(),
                registry: registry.clone(),
                group: link,
                config: opts.local,
            },
        )
        .await
        .map_err(start_err("the local manager"))?;
        directory.insert_local(opts.name.clone(), local.clone());

        let (endpoint, _) = Actor::spawn(
            None,
            WireEndpoint,
            EndpointArgs {
                node: opts.name.clone(),
                local: local.clone(),
                registry: registry.clone(),
                directory: directory.clone(),
                catalog: Arc::new(opts.catalog.clone()),
                manager: Arc::new(Mutex::new(manager.clone())),
                group: endpoint_group(&opts.name),
            },
        )
        .await
        .map_err(start_err("the wire endpoint"))?;
        if manager.is_some() {
            ractor::pg::join(MANAGER_GROUP.to_string(), vec![endpoint.get_cell()]);
        }

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            Membership::new(opts.name.clone(), directory.clone()).run(),
        ));
        tasks.push(tokio::spawn(redial(server.clone(), opts.join.clone())));
        if let Some(m) = &manager {
            tasks.push(tokio::spawn(cold_start(
                m.clone(),
                opts.catalog.names(),
                opts.expect,
            )));
        }
        tracing::info!(node = %opts.name, port = opts.port, bind = %opts.bind, seed = opts.is_seed(), "node started");
        Ok(Node {
            name: opts.name,
            directory,
            registry,
            local,
            server,
            endpoint,
            manager,
            tasks,
        })
    }

    /// The peers this node reaches right now (itself included), by name.
    pub fn members(&self) -> Vec<NodeName> {
        self.directory.nodes()
    }

    /// Whether the group manager runs here.
    pub fn runs_group_manager(&self) -> bool {
        self.manager.is_some()
    }

    /// Stop the node's actors and tasks.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.kill();
        self.local.kill();
        if let Some(m) = &self.manager {
            m.kill();
        }
        self.server.kill();
    }
}

/// Keeps a node's directory equal to the peers whose endpoints are advertised to it.
#[derive(Debug)]
struct Membership {
    me: NodeName,
    directory: Directory,
    known: BTreeSet<NodeName>,
}

impl Membership {
    fn new(me: NodeName, directory: Directory) -> Self {
        Membership {
            me,
            directory,
            known: BTreeSet::new(),
        }
    }

    async fn run(mut self) {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        loop {
            every.tick().await;
            self.refresh();
        }
    }

    fn refresh(&mut self) {
        let mut now = BTreeSet::new();
        for group in ractor::pg::which_groups() {
            let Some(node) = node_of_group(&group) else {
                continue;
            };
            if node == self.me {
                continue;
            }
            let remote = ractor::pg::get_members(&group)
                .into_iter()
                .find(|c| !c.get_id().is_local());
            if let Some(cell) = remote {
                if !self.known.contains(&node) {
                    tracing::info!(me = %self.me, peer = %node, "peer joined");
                }
                self.directory
                    .insert(node.clone(), Arc::new(RemoteNode::new(cell)));
                now.insert(node);
            }
        }
        for gone in self.known.difference(&now) {
            tracing::warn!(me = %self.me, peer = %gone, "peer left");
            self.directory.remove(gone);
        }
        self.known = now;
    }
}

/// Dial every `--join` address, and dial it again whenever no session to the peer behind it
/// is open (ractor_cluster does not reconnect by itself).
async fn redial(server: ActorRef<NodeServerMessage>, join: Vec<String>) {
    if join.is_empty() {
        return;
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let sessions = match ractor::call_t!(server, NodeServerMessage::GetSessions, 1_000) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let connected: BTreeSet<String> = sessions
            .values()
            .filter_map(|s| s.peer_name.as_ref().map(|n| n.name.clone()))
            .collect();
        for s in sessions.values() {
            if let Some(n) = &s.peer_name {
                if !s.is_server {
                    names.insert(s.peer_addr.clone(), n.name.clone());
                }
            }
        }
        for addr in &join {
            let up = names.get(addr).is_some_and(|name| connected.contains(name))
                || sessions.values().any(|s| &s.peer_addr == addr);
            if up {
                continue;
            }
            if let Err(e) = ractor_cluster::client_connect(&server, addr.as_str()).await {
                tracing::debug!(%addr, error = %e, "dial failed; will retry");
            }
        }
    }
}

/// The seed places the catalog's units once its group manager counts `expect` nodes up.
async fn cold_start(manager: ActorRef<GroupManagerMsg>, units: Vec<UnitName>, expect: usize) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        match ractor::call_t!(manager, GroupManagerMsg::Members, 1_000) {
            Ok(up) if up.len() >= expect.max(1) => break,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    for unit in units {
        let _ = manager.cast(GroupManagerMsg::AddUnit { unit });
    }
}
