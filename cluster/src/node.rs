//! One Understudy node: an OS process with its own `ractor_cluster` `NodeServer`, its
//! `LocalManager`, its name table and its wire endpoint.
//!
//! Peers are known by name: each node advertises its endpoint in a process group named after
//! it, and the membership task keeps the node's [`Directory`] equal to the set of peers whose
//! endpoints are reachable right now. `ractor_cluster` does not reconnect by itself, so every
//! `--join` address is re-dialled until a session to that peer (by name) exists again.
//!
//! Every node is a member of its group's Raft and holds a copy of the group's table
//! ([`crate::control`]); the group manager runs on the Raft leader. The *seed* (the node
//! started without `--join`, one per cluster) founds every group: its own once `expect` of
//! its nodes are connected, the others as their nodes appear; every node that starts later,
//! or starts again, is added by its group's leader.

use crate::bench::{BenchCounterMsg, BenchUnits};
use crate::config::DEFAULT_GROUP;
use crate::control::{
    found_groups, ControlArgs, ControlHandle, ControlLink, ControlPlane, GlobalReports,
    TableApplier,
};
use crate::raft::{RaftGroup, RaftTuning};
use crate::wire::{
    endpoint_group, node_of_group, EndpointArgs, RemoteNode, WireEndpoint, WireRaftTransport,
};
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use understudy_actors::budgets::BudgetBook;
use understudy_actors::group_manager::GroupManagerConfig;
use understudy_actors::local_manager::{LocalManagerArgs, LocalManagerConfig};
use understudy_actors::{Catalog, Directory, LocalManager, LocalManagerMsg, Registry};
use understudy_runtime::{GroupTable, NodeName, UnitName};

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
    /// This node's group.
    pub group: String,
    /// Every group of the cluster, with its units (this node's group among them).
    pub groups: BTreeMap<String, Vec<UnitName>>,
    /// Each unit's replication strategy, as `units.toml` names it.
    pub strategies: BTreeMap<UnitName, String>,
    /// The seed places the units once this many nodes (itself included) are connected.
    pub expect: usize,
    /// Tuning of the node's local manager.
    pub local: LocalManagerConfig,
    /// Tuning of the group manager, where it runs.
    pub group_config: GroupManagerConfig,
    /// Tuning of the group's Raft.
    pub raft: RaftTuning,
    /// The units a bench may drive from this node, with typed clients (the node builder
    /// fills it from the kinds registered).
    pub benches: BenchUnits,
    /// TLS on every link between nodes ([`crate::tls`]), or `None`: plain TCP.
    pub tls: Option<crate::tls::Tls>,
    /// Its HTTP API ([`crate::http`]), if it serves one (the node builder serves one by
    /// default, on 127.0.0.1 and `port` plus 1000).
    pub http: Option<crate::http::ApiConfig>,
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
            group: DEFAULT_GROUP.to_string(),
            groups: BTreeMap::from([(DEFAULT_GROUP.to_string(), catalog.names())]),
            strategies: catalog
                .names()
                .into_iter()
                .map(|u| (u, "synchronous".to_string()))
                .collect(),
            catalog,
            expect: 1,
            local: LocalManagerConfig::default(),
            group_config: GroupManagerConfig::default(),
            raft: RaftTuning::default(),
            benches: BenchUnits::new(),
            tls: None,
            http: None,
        }
    }

    /// Whether this node is the seed (it joins nobody), which founds the group.
    pub fn is_seed(&self) -> bool {
        self.join.is_empty()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The units file does not fit the unit kinds registered (or is inconsistent).
    #[error("{0}")]
    Config(crate::config::ConfigError),
    /// The node's Raft member could not start.
    #[error("could not start the node's Raft member: {0}")]
    Raft(String),
    /// An actor failed to start (for the `NodeServer`, usually: the port is taken).
    #[error("could not start {what}: {reason}")]
    Start {
        /// Which actor.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The node's group is not among the cluster's groups.
    #[error("node group {group:?} is not declared; the cluster's groups are {known:?}")]
    UnknownGroup {
        /// The group asked for.
        group: String,
        /// The groups declared.
        known: Vec<String>,
    },
    /// A node name must be non-empty and made of letters, digits, `-` and `_`.
    #[error("bad node name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
    /// The HTTP API has no address, or cannot listen on it.
    #[error(transparent)]
    Http(crate::http::StartError),
    /// The TLS flags are incomplete, or their files unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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
    /// Its control plane of its own group (the group manager while it leads).
    pub home: ControlHandle,
    /// Its control planes of the other groups (it follows their tables as a Raft learner).
    pub others: Vec<ControlHandle>,
    /// Its book of time spent against budgets.
    pub budgets: BudgetBook,
    /// Where its HTTP API listens, if it serves one.
    pub http: Option<std::net::SocketAddr>,
    server: ActorRef<NodeServerMessage>,
    endpoint: ActorRef<crate::wire::WireMsg>,
    counter: ActorRef<BenchCounterMsg>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        report_panics_off_the_hot_path();
        if !valid_name(&opts.name.0) {
            return Err(NodeError::BadName(opts.name.0.clone()));
        }
        // The HTTP API's address is taken first: a node that cannot serve it joins nothing.
        let http = crate::http::bind(opts.http.as_ref())
            .await
            .map_err(NodeError::Http)?;
        let start_err = |what| {
            move |e: ractor::SpawnErr| NodeError::Start {
                what,
                reason: e.to_string(),
            }
        };
        // With TLS, ractor_cluster's own transitive dialling (plain TCP) is off: `mesh` dials;
        // and the node's port is ours (`tls::TlsListener`: a deadline on every handshake), the
        // node server's own listener on a port of its own, unused.
        let mode = match opts.tls {
            Some(_) => ractor_cluster::node::NodeConnectionMode::Isolated,
            None => ractor_cluster::node::NodeConnectionMode::Transitive,
        };
        let tls_port = match &opts.tls {
            Some(tls) => Some(
                tls.bind(std::net::SocketAddr::new(opts.bind, opts.port))
                    .await
                    .map_err(|e| NodeError::Start {
                        what: "the node's TLS port",
                        reason: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let server = NodeServer::new(
            if tls_port.is_some() { 0 } else { opts.port },
            opts.cookie.clone(),
            opts.name.0.clone(),
            opts.bind.to_string(),
            opts.tls.as_ref().map(crate::tls::Tls::incoming),
            Some(mode),
        )
        .with_listen_addr(opts.bind)
        .with_max_inbound_frame_size(MAX_FRAME_BYTES);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(start_err("the node server"))?;
        let tls_port = tls_port.map(|port| {
            // Sessions name the node's port, not the node server's own.
            let _ = server.cast(NodeServerMessage::PortChanged { port: opts.port });
            tokio::spawn(port.serve(server.clone()))
        });

        crate::wire::set_this_node(&opts.name);
        let directory = Directory::new();
        let registry = Registry::new();
        let incarnation = understudy_actors::clock::new_incarnation();
        if !opts.groups.contains_key(&opts.group) {
            return Err(NodeError::UnknownGroup {
                group: opts.group.clone(),
                known: opts.groups.keys().cloned().collect(),
            });
        }
        let mut home = None;
        let mut others = Vec::new();
        for (group, units) in &opts.groups {
            let table = Arc::new(Mutex::new(GroupTable::new(opts.group_config.core)));
            let executing = Arc::new(AtomicBool::new(false));
            let raft = RaftGroup::start(
                incarnation,
                opts.name.0.clone(),
                opts.raft.clone(),
                Arc::new(WireRaftTransport::new(group.clone())),
                Box::new(TableApplier::new(
                    table.clone(),
                    registry.clone(),
                    directory.clone(),
                    executing.clone(),
                )),
            )
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
            let (control, _) = Actor::spawn(
                None,
                ControlPlane,
                ControlArgs {
                    group: group.clone(),
                    node: opts.name.clone(),
                    raft: raft.clone(),
                    table,
                    executing,
                    config: opts.group_config,
                    units: units.clone(),
                    strategies: units
                        .iter()
                        .filter_map(|u| Some((u.clone(), opts.strategies.get(u)?.clone())))
                        .collect(),
                    expect: opts.expect,
                    global: GlobalReports::new(registry.clone(), directory.clone()),
                },
            )
            .await
            .map_err(start_err("a control plane"))?;
            let handle = ControlHandle {
                group: group.clone(),
                control,
                raft,
            };
            if *group == opts.group {
                home = Some(handle);
            } else {
                others.push(handle);
            }
        }
        let Some(home) = home else {
            return Err(NodeError::UnknownGroup {
                group: opts.group.clone(),
                known: opts.groups.keys().cloned().collect(),
            });
        };
        let budgets = BudgetBook::default();
        let routes = understudy_actors::local_manager::CopyRoutes::default();
        let (local, _) = Actor::spawn(
            None,
            LocalManager,
            LocalManagerArgs {
                node: opts.name.clone(),
                catalog: Arc::new(opts.catalog.clone()),
                directory: directory.clone(),
                registry: registry.clone(),
                group: Arc::new(ControlLink::new(opts.name.clone(), home.clone())),
                incarnation,
                config: opts.local,
                budgets: budgets.clone(),
                routes: routes.clone(),
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
                routes,
                registry: registry.clone(),
                directory: directory.clone(),
                catalog: Arc::new(opts.catalog.clone()),
                home: home.clone(),
                others: others.clone(),
                unit_groups: opts
                    .groups
                    .iter()
                    .flat_map(|(g, units)| units.iter().map(move |u| (u.clone(), g.clone())))
                    .collect(),
                seed: opts.is_seed(),
                group: endpoint_group(&opts.name),
                budgets: budgets.clone(),
                benches: Arc::new(opts.benches.clone()),
            },
        )
        .await
        .map_err(start_err("the wire endpoint"))?;
        // The baseline of `understudy bench`: a plain actor, no replication.
        let counter = crate::bench::start_counter(&opts.name)
            .await
            .map_err(start_err("the bench baseline counter"))?;

        let mut tasks = vec![
            tokio::spawn(Membership::new(opts.name.clone(), directory.clone()).run()),
            tokio::spawn(redial(server.clone(), opts.join.clone(), opts.tls.clone())),
            tokio::spawn(crate::admission::report_refusals(
                server.clone(),
                opts.tls.is_some(),
            )),
            tokio::spawn(crate::departure::watch_departures(
                server.clone(),
                opts.name.clone(),
                std::iter::once(&home)
                    .chain(others.iter())
                    .map(|h| h.control.clone())
                    .collect(),
            )),
        ];
        tasks.extend(tls_port);
        if let Some(tls) = &opts.tls {
            tasks.push(tokio::spawn(crate::mesh::keep_meshed(
                server.clone(),
                opts.name.clone(),
                Some(endpoint.get_cell()),
                tls.clone(),
            )));
        }
        if opts.is_seed() {
            tasks.push(tokio::spawn(found_groups(
                opts.name.clone(),
                home.clone(),
                opts.groups.keys().cloned().collect(),
                opts.expect,
            )));
        }
        let http = http.map(|api| {
            let (addr, task) = api.serve(opts.name.clone(), endpoint.clone(), registry.clone());
            tasks.push(task);
            addr
        });
        tracing::info!(node = %opts.name, port = opts.port, bind = %opts.bind, seed = opts.is_seed(), group = %opts.group, member = incarnation, tls = opts.tls.is_some(), "node started");
        Ok(Node {
            name: opts.name,
            directory,
            registry,
            local,
            home,
            others,
            budgets,
            http,
            server,
            endpoint,
            counter,
            tasks,
        })
    }

    /// The peers this node reaches right now (itself included), by name.
    pub fn members(&self) -> Vec<NodeName> {
        self.directory.nodes()
    }

    /// Runs until the process gets SIGTERM or Ctrl-C, then stops the node: the end of a node
    /// program's `main`. When the environment sets [`STOP_WITH_STDIN`] (the test kit does, for
    /// the nodes it starts), the node also stops when its standard input closes — when the
    /// process that started it ends, however it ends — so no node outlives its test.
    pub async fn serve_until_signal(self) {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        let stdin_closed = async {
            if std::env::var_os(STOP_WITH_STDIN).is_some() {
                stdin_closed().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = stdin_closed => tracing::info!("standard input closed: the node stops"),
        }
        self.stop();
    }

    /// Stop the node's actors and tasks.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.kill();
        self.counter.kill();
        self.local.kill();
        for h in std::iter::once(&self.home).chain(self.others.iter()) {
            h.control.kill();
        }
        self.server.kill();
    }
}

/// Installs (once per process) a panic hook that prints the panic's one-line message at once
/// and its backtrace (when `RUST_BACKTRACE` asks for one) from a thread of its own. The
/// default hook resolves the backtrace's symbols on the panicking thread while holding
/// stderr's lock — about 100 ms the first time, during which the copy's supervisor does not
/// yet know of the panic and every other log line of the node waits — and a takeover after a
/// panic in a handler waited for that.
pub fn report_panics_off_the_hot_path() {
    /// How long a panic's backtrace waits before its symbols are resolved: past the takeover
    /// the panic starts (a few milliseconds), which would otherwise share the cores with it.
    const RESOLVE_BACKTRACES_AFTER: std::time::Duration = std::time::Duration::from_millis(500);
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (reports, to_print) = std::sync::mpsc::channel::<std::backtrace::Backtrace>();
        let printer = std::thread::Builder::new()
            .name("panic-backtraces".into())
            .spawn(move || {
                for backtrace in to_print {
                    // Resolved a moment later, and before taking stderr's lock: resolving
                    // takes ~100 ms of a core the first time, which would slow the takeover
                    // the panic just started, and every log line of the node waits while
                    // stderr is locked.
                    std::thread::sleep(RESOLVE_BACKTRACES_AFTER);
                    let text = backtrace.to_string();
                    eprintln!("stack backtrace of the panic above:\n{text}");
                }
            });
        if printer.is_err() {
            // Without the thread the default hook stays: slower, but nothing is lost.
            return;
        }
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            eprintln!(
                "thread '{}' panicked: {info}",
                thread.name().unwrap_or("<unnamed>")
            );
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                let _ = reports.send(backtrace);
            }
        }));
    });
}

/// The environment variable that makes [`Node::serve_until_signal`] stop the node when its
/// standard input closes.
pub const STOP_WITH_STDIN: &str = "UNDERSTUDY_STOP_WITH_STDIN";

/// Resolves once standard input reaches its end (or cannot be read): a thread blocks on it.
async fn stdin_closed() {
    let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let _ = on_close.await;
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
                    .insert(node.clone(), Arc::new(RemoteNode::new(node.clone(), cell)));
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

/// Dial every `--join` address (with TLS if `tls`), and dial it again whenever no session to
/// the peer behind it is open (ractor_cluster does not reconnect by itself).
async fn redial(
    server: ActorRef<NodeServerMessage>,
    join: Vec<String>,
    tls: Option<crate::tls::Tls>,
) {
    if join.is_empty() {
        return;
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut pacing = crate::tls::DialPacing::default();
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
            match pacing.dial(&server, addr, tls.as_ref()).await {
                None | Some(Ok(())) => {}
                // A certificate that does not verify will not verify at the next attempt.
                Some(Err(e @ crate::tls::DialError::Handshake { .. })) => {
                    if crate::admission::report_now(&format!("dial:{addr}")) {
                        tracing::error!(%addr, error = %e, "cannot join; retrying");
                    }
                }
                Some(Err(e)) => tracing::debug!(%addr, error = %e, "dial failed; will retry"),
            }
        }
    }
}
