//! Running a cluster of real node processes from a program or a test: start N nodes of a
//! binary on free loopback ports (yours, if it starts its nodes with `Node::builder` and takes
//! `node --name --port --join --cookie --expect`), fault them — `kill -9`, `SIGSTOP` and
//! `SIGCONT`, a panic in a unit's handler ([`Probe::inject_panic`]), a partition between chosen
//! nodes, one way or both ([`partition`], [`heal`]: done inside the nodes' own transport, no
//! root and no firewall) — restart them, and stop every one of them when the cluster value is
//! dropped, also when a test panics. A [`History`] records every stimulus and its outcome and
//! gives the counts a fault test asserts: answered, ignored, failed (early or not), late, and
//! for a counter-like unit the acknowledged operations lost or applied twice.
//!
//! [`Probe::inject_panic`]: understudy_cluster::probe::Probe::inject_panic
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use understudy::testkit::{partition, heal, Direction, ProcessCluster};
//! use understudy::runtime::NodeName;
//! // In an integration test, the binary is `env!("CARGO_BIN_EXE_yourbin")`.
//! let mut cluster = ProcessCluster::builder("target/release/understudy")
//!     .nodes(&["n1", "n2", "n3"])
//!     .start()
//!     .expect("nodes start");
//! let probe = cluster.ready(Duration::from_secs(30)).await.expect("the cluster forms");
//! let (n1, rest) = (NodeName::new("n1"), [NodeName::new("n2"), NodeName::new("n3")]);
//! partition(&probe, &[n1.clone()], &rest, Direction::Both).await.expect("cut");
//! heal(&probe, &[n1]).await.expect("healed");
//! cluster.kill9("n1");
//! cluster.restart("n1").expect("n1 starts again");
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use understudy_actors::{NameState, ServedBy};
use understudy_cluster::probe::Probe;
use understudy_cluster::tls::TlsFiles;
use understudy_runtime::{NodeName, UnitName};

/// Why a node process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be run.
    #[error("could not start node {node}: {source}")]
    Spawn {
        /// The node.
        node: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No free port was found below the ephemeral range.
    #[error("no free loopback port below 32768")]
    NoPort,
    /// No node of that name was started here.
    #[error("no node named {0}")]
    NoSuchNode(String),
    /// The builder was given no nodes.
    #[error("a cluster needs at least one node")]
    NoNodes,
    /// The cluster did not become ready in time (read the nodes' logs: see
    /// [`ProcessClusterBuilder::logs`]).
    #[error("the cluster was not ready after {waited:?}: {why}")]
    NotReady {
        /// How long it waited.
        waited: std::time::Duration,
        /// What it was still waiting for.
        why: String,
    },
    /// The probe's TLS files ([`ProcessClusterBuilder::probe_tls`]) are unusable.
    #[error(transparent)]
    Tls(#[from] understudy_cluster::tls::TlsError),
    /// `kill` failed.
    #[error("could not send SIG{signal} to node {node}")]
    Signal {
        /// The node.
        node: String,
        /// The signal.
        signal: String,
    },
}

#[derive(Debug)]
struct NodeProcess {
    port: u16,
    /// Where its HTTP API listens (`--http`), a port of its own like `port`.
    http_port: u16,
    /// Its group, if the cluster names groups (`--group`).
    group: Option<String>,
    /// `--expect` for this node (the size of its group).
    expect: usize,
    child: Option<Child>,
}

/// How a [`ProcessCluster`] starts: the binary, the nodes (in one group or several), the seed,
/// the cookie, the units file, further arguments, where the logs go. From
/// [`ProcessCluster::builder`].
#[derive(Clone, Debug)]
pub struct ProcessClusterBuilder {
    binary: PathBuf,
    groups: Vec<(Option<String>, Vec<String>)>,
    seed: Option<String>,
    cookie: String,
    args: Vec<String>,
    node_args: BTreeMap<String, Vec<String>>,
    probe_tls: Option<TlsFiles>,
    logs: Option<PathBuf>,
    log_filter: Option<String>,
}

impl ProcessClusterBuilder {
    /// `n` nodes of one group named `{prefix}1` to `{prefix}n`, the last of them the seed:
    /// returns the builder and the names.
    pub fn numbered(self, prefix: &str, n: usize) -> (Self, Vec<NodeName>) {
        let names: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut builder = self.nodes(&refs);
        if let Some(last) = names.last() {
            builder = builder.seed(last);
        }
        (builder, names.iter().map(NodeName::new).collect())
    }

    /// The nodes of a cluster of one group (the group the units file, or the binary, names).
    pub fn nodes(mut self, names: &[&str]) -> Self {
        self.groups = vec![(None, names.iter().map(|n| n.to_string()).collect())];
        self
    }

    /// A group and its nodes, started with `--group GROUP`; call once per group (the units
    /// file, given with [`ProcessClusterBuilder::config`], declares the groups).
    pub fn group(mut self, group: &str, names: &[&str]) -> Self {
        self.groups.retain(|(g, _)| g.is_some());
        self.groups.push((
            Some(group.to_string()),
            names.iter().map(|n| n.to_string()).collect(),
        ));
        self
    }

    /// The node that founds the cluster (it joins nobody; the others join it). By default the
    /// first node named.
    pub fn seed(mut self, name: &str) -> Self {
        self.seed = Some(name.to_string());
        self
    }

    /// The cluster's cookie (by default one made up for this test process).
    pub fn cookie(mut self, cookie: &str) -> Self {
        self.cookie = cookie.to_string();
        self
    }

    /// The units file every node starts with (`--config PATH`).
    pub fn config(self, path: impl AsRef<Path>) -> Self {
        self.args(["--config".to_string(), path.as_ref().display().to_string()])
    }

    /// Further arguments for every node, after `node --name --port --cookie --expect
    /// [--join]`: your binary's own flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Further arguments for node `name` only, after those of [`ProcessClusterBuilder::args`]:
    /// its own `--tls-cert` and `--tls-key`, say.
    pub fn node_args<I, S>(mut self, name: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.node_args
            .entry(name.to_string())
            .or_default()
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// The certificate, key and CA the test kit's probe presents ([`ProcessCluster::ready`]):
    /// for a cluster whose nodes are given the TLS flags, which accepts nothing but TLS.
    pub fn probe_tls(mut self, files: TlsFiles) -> Self {
        self.probe_tls = Some(files);
        self
    }

    /// Write each node's log (stderr, with `RUST_LOG` at info for the cluster layer) to
    /// `dir/NAME.log`.
    pub fn logs(mut self, dir: impl AsRef<Path>) -> Self {
        self.logs = Some(dir.as_ref().to_path_buf());
        self
    }

    /// What the nodes log into [`ProcessClusterBuilder::logs`]: a `RUST_LOG` filter, over
    /// `UNDERSTUDY_NODE_LOG` and the default (info for the cluster layer).
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_string());
        self
    }

    /// Start every node, the seed first, each on a free loopback port. It does not wait for
    /// the cluster to form: [`ProcessCluster::ready`] does.
    pub fn start(self) -> Result<ProcessCluster, ProcessError> {
        let seed = match self.seed {
            Some(seed) => seed,
            None => self
                .groups
                .iter()
                .flat_map(|(_, names)| names.first())
                .next()
                .cloned()
                .ok_or(ProcessError::NoNodes)?,
        };
        let mut cluster = ProcessCluster {
            binary: self.binary,
            cookie: self.cookie,
            seed: seed.clone(),
            args: self.args,
            node_args: self.node_args,
            probe_tls: self.probe_tls,
            logs: self.logs,
            log_filter: self.log_filter,
            nodes: BTreeMap::new(),
        };
        for (group, names) in &self.groups {
            for name in names {
                let port = free_port().ok_or(ProcessError::NoPort)?;
                let http_port = free_port().ok_or(ProcessError::NoPort)?;
                let node = NodeProcess {
                    port,
                    http_port,
                    group: group.clone(),
                    expect: names.len(),
                    child: None,
                };
                cluster.nodes.insert(name.clone(), node);
            }
        }
        if !cluster.nodes.contains_key(&seed) {
            return Err(ProcessError::NoSuchNode(seed));
        }
        cluster.restart(&seed)?;
        for name in cluster.names() {
            if name != seed {
                cluster.restart(&name)?;
            }
        }
        Ok(cluster)
    }
}

/// Node processes started from one binary; all are killed when this is dropped.
#[derive(Debug)]
pub struct ProcessCluster {
    binary: PathBuf,
    cookie: String,
    seed: String,
    args: Vec<String>,
    node_args: BTreeMap<String, Vec<String>>,
    probe_tls: Option<TlsFiles>,
    logs: Option<PathBuf>,
    log_filter: Option<String>,
    nodes: BTreeMap<String, NodeProcess>,
}

impl ProcessCluster {
    /// A cluster of node processes of `binary`, which must take `node --name --port --join
    /// --cookie --expect` (and `--group`, `--config` if you use them), like `understudy` and
    /// any binary that passes them to `Node::builder`.
    pub fn builder(binary: impl AsRef<Path>) -> ProcessClusterBuilder {
        ProcessClusterBuilder {
            binary: binary.as_ref().to_path_buf(),
            groups: Vec::new(),
            seed: None,
            cookie: format!("testkit-{}", std::process::id()),
            args: Vec::new(),
            node_args: BTreeMap::new(),
            probe_tls: None,
            logs: None,
            log_filter: None,
        }
    }

    /// Start one node per name from `binary`; `seed` joins nobody, the others join it.
    pub fn start(
        binary: impl AsRef<Path>,
        names: &[&str],
        seed: &str,
        cookie: &str,
    ) -> Result<ProcessCluster, ProcessError> {
        Self::builder(binary)
            .nodes(names)
            .seed(seed)
            .cookie(cookie)
            .start()
    }

    /// Connects a probe (through the seed) and waits up to `limit` until the cluster is ready:
    /// every node reports a Raft leader for its group and counts every node of its group up,
    /// every unit of its group serves with a ready standby, and its name table binds every
    /// unit of the cluster. Returns the probe, for faults and calls.
    pub async fn ready(&self, limit: std::time::Duration) -> Result<Probe, ProcessError> {
        let deadline = std::time::Instant::now() + limit;
        let tls = self.probe_tls.as_ref().map(TlsFiles::load).transpose()?;
        let probe =
            Probe::connect_with_tls(&self.addr(&self.seed)?, &self.cookie, tls.as_ref(), limit)
                .await
                .map_err(|e| ProcessError::NotReady {
                    waited: limit,
                    why: e.to_string(),
                })?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.ready_again(&probe, left).await?;
        Ok(probe)
    }

    /// Waits up to `limit`, through the `probe` [`ProcessCluster::ready`] gave, until the
    /// cluster is ready as `ready` says: after a node was restarted, say. Keep the one probe:
    /// the probes of one test process share ractor's process groups, and dropping one takes
    /// the nodes it saw from the other's view.
    pub async fn ready_again(
        &self,
        probe: &Probe,
        limit: std::time::Duration,
    ) -> Result<(), ProcessError> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let why = match self.not_ready(probe).await {
                None => return Ok(()),
                Some(why) => why,
            };
            if std::time::Instant::now() >= deadline {
                return Err(ProcessError::NotReady { waited: limit, why });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll with a deadline
        }
    }

    /// What keeps the cluster from being ready, or `None`.
    async fn not_ready(&self, probe: &Probe) -> Option<String> {
        let mut statuses = Vec::new();
        for (name, node) in &self.nodes {
            match probe.status(&NodeName::new(name)).await {
                Ok(s) => statuses.push((name, node, s)),
                Err(e) => return Some(format!("node {name} does not answer: {e}")),
            }
        }
        let declared: std::collections::BTreeSet<&UnitName> = statuses
            .iter()
            .flat_map(|(_, _, s)| s.control.strategies.keys())
            .collect();
        for (name, node, s) in &statuses {
            let view = &s.control;
            if view.leader.is_none() {
                return Some(format!(
                    "node {name} knows no leader of group {}",
                    view.group
                ));
            }
            let peers = self
                .nodes
                .iter()
                .filter(|(_, n)| n.group == node.group)
                .map(|(peer, _)| peer);
            for peer in peers {
                if !view.nodes_up.iter().any(|up| &up.0 == peer) {
                    return Some(format!("node {name} does not count {peer} up yet"));
                }
            }
            let members: BTreeMap<&str, u64> = statuses
                .iter()
                .filter(|(_, n, _)| n.group == node.group)
                .map(|(peer, _, s)| (peer.as_str(), s.control.member))
                .collect();
            if let Some(why) = voters_differ(name, view, &members) {
                return Some(why);
            }
            for unit in view.strategies.keys() {
                let serving = view
                    .units
                    .iter()
                    .any(|u| &u.unit == unit && u.serving && u.standby_ready);
                if !serving {
                    return Some(format!("unit {unit} has no ready primary and standby yet"));
                }
            }
            for unit in &declared {
                let bound = s
                    .names
                    .iter()
                    .any(|(n, state)| n == *unit && matches!(state, NameState::Bound(_)));
                if !bound {
                    return Some(format!("node {name} cannot resolve unit {unit} yet"));
                }
            }
        }
        None
    }

    /// The seed node's name.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The node names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The OS process id of a node while it runs (`None` once killed, or for no such node).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.nodes
            .get(name)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
    }

    /// `127.0.0.1:PORT` of a node.
    pub fn addr(&self, name: &str) -> Result<String, ProcessError> {
        let n = self
            .nodes
            .get(name)
            .ok_or_else(|| ProcessError::NoSuchNode(name.to_string()))?;
        Ok(format!("127.0.0.1:{}", n.port))
    }

    /// `127.0.0.1:PORT` where node `name` serves its HTTP API (`--http`).
    pub fn http_addr(&self, name: &str) -> Result<String, ProcessError> {
        let n = self
            .nodes
            .get(name)
            .ok_or_else(|| ProcessError::NoSuchNode(name.to_string()))?;
        Ok(format!("127.0.0.1:{}", n.http_port))
    }

    /// (Re)start a node on its port, empty; a node other than the seed joins the seed.
    pub fn restart(&mut self, name: &str) -> Result<(), ProcessError> {
        self.kill9(name);
        let seed_port = self.nodes.get(&self.seed).map(|n| n.port);
        let running_ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|(n, node)| n.as_str() != name && node.child.is_some())
            .map(|(_, node)| node.port)
            .collect();
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| ProcessError::NoSuchNode(name.to_string()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["node", "--name", name, "--port", &node.port.to_string()])
            .args([
                "--cookie",
                &self.cookie,
                "--expect",
                &node.expect.to_string(),
                "--http",
                &format!("127.0.0.1:{}", node.http_port),
            ])
            .args(
                node.group
                    .iter()
                    .flat_map(|g| ["--group".to_string(), g.clone()]),
            )
            .args(&self.args)
            .args(self.node_args.get(name).into_iter().flatten())
            // The node stops when this pipe closes: when the test process ends, however.
            .env(understudy_cluster::node::STOP_WITH_STDIN, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if name != self.seed {
            if let Some(p) = seed_port {
                cmd.args(["--join", &format!("127.0.0.1:{p}")]);
            }
        } else {
            // A seed started again joins the running nodes, as an operator would start it: its
            // groups run, so it founds nothing (see `found_groups`).
            for p in &running_ports {
                cmd.args(["--join", &format!("127.0.0.1:{p}")]);
            }
        }
        if let Some(dir) = &self.logs {
            let _ = std::fs::create_dir_all(dir);
            if let Ok(f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{name}.log")))
            {
                // The test's filter, or `UNDERSTUDY_NODE_LOG` (a `RUST_LOG` filter), overrides
                // what the nodes log.
                let filter = self
                    .log_filter
                    .clone()
                    .or_else(|| std::env::var("UNDERSTUDY_NODE_LOG").ok())
                    .unwrap_or_else(|| "understudy_cluster=info,understudy_actors=warn".into());
                cmd.stderr(Stdio::from(f)).env("RUST_LOG", filter);
            }
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            node: name.to_string(),
            source,
        })?;
        node.child = Some(child);
        Ok(())
    }

    /// `kill -9` a node (nothing happens if it is not running).
    pub fn kill9(&mut self, name: &str) {
        if let Some(child) = self.nodes.get_mut(name).and_then(|n| n.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(n) = self.nodes.get_mut(name) {
            n.child = None;
        }
    }

    /// Send a signal by name (`STOP`, `CONT`, `TERM`) to a node.
    pub fn signal(&self, name: &str, signal: &str) -> Result<(), ProcessError> {
        let pid = self
            .nodes
            .get(name)
            .and_then(|n| n.child.as_ref())
            .map(|c| c.id())
            .ok_or_else(|| ProcessError::NoSuchNode(name.to_string()))?;
        let failed = || ProcessError::Signal {
            node: name.to_string(),
            signal: signal.to_string(),
        };
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .map_err(|_| failed())?;
        if status.success() {
            Ok(())
        } else {
            Err(failed())
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            // A stopped process must be continued to die promptly of SIGKILL's reaping.
            let _ = self.signal(&n, "CONT");
            self.kill9(&n);
        }
    }
}

/// Every unit of every group by the committed table `status` holds, by name.
pub fn units_by_name(
    status: &understudy_cluster::wire::NodeStatus,
) -> BTreeMap<String, understudy_actors::UnitStatus> {
    std::iter::once(&status.control)
        .chain(status.others.iter())
        .flat_map(|v| v.units.iter())
        .map(|u| (u.unit.0.clone(), u.clone()))
        .collect()
}

/// A node of `names` other than `avoid`: `None` when `avoid` is the only one.
pub fn other_than(names: &[NodeName], avoid: &NodeName) -> Option<NodeName> {
    names.iter().find(|n| *n != avoid).cloned()
}

/// Why node `name`'s view of its group's Raft is not exactly one voter per running node of
/// the group (`members`: each node's name and current member id), or `None`. Compare ids,
/// not names: an earlier start of a restarted node that still votes has the node's name.
/// Until it is removed the group counts a dead voter, and losing one more node (with three)
/// loses the group's quorum for good.
pub fn voters_differ(
    name: &str,
    view: &understudy_cluster::control::ControlView,
    members: &BTreeMap<&str, u64>,
) -> Option<String> {
    let mut have: Vec<u64> = view.voter_members.clone();
    have.sort_unstable();
    let mut want: Vec<u64> = members.values().copied().collect();
    want.sort_unstable();
    if have == want {
        return None;
    }
    let stale: Vec<String> = view
        .voters
        .iter()
        .zip(&view.voter_members)
        .filter(|(_, id)| !want.contains(id))
        .map(|(n, id)| format!("{n} (member {id})"))
        .collect();
    let missing: Vec<&str> = members
        .iter()
        .filter(|(_, id)| !have.contains(id))
        .map(|(n, _)| *n)
        .collect();
    Some(format!(
        "node {name} sees the voters {:?}: not yet one per running node (earlier starts still voting: {stale:?}; running nodes not voting yet: {missing:?})",
        view.voters.iter().map(|v| v.0.as_str()).collect::<Vec<_>>()
    ))
}

/// A port free now, below the kernel's ephemeral range (from 32768), so that no outgoing
/// connection can take it between this check and the node's bind.
pub fn free_port() -> Option<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % 1_200) as u16 * 10;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(offset)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Some(port);
        }
    }
    None
}

/// Which way a [`partition`] cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Nothing passes between the two sides.
    Both,
    /// The first side's messages to the second are lost; the second's still arrive.
    FirstToSecond,
}

/// Fault injection: cuts the links between the nodes of `first` and those of `second` (inside
/// the nodes' own transport: no root, no firewall). Every node named is told its whole set of
/// cut links, so a node in neither side is unaffected and [`heal`] undoes it.
pub async fn partition(
    probe: &understudy_cluster::probe::Probe,
    first: &[understudy_runtime::NodeName],
    second: &[understudy_runtime::NodeName],
    direction: Direction,
) -> Result<(), understudy_cluster::probe::ProbeError> {
    for node in first {
        probe.cut(node, second).await?;
    }
    if direction == Direction::Both {
        for node in second {
            probe.cut(node, first).await?;
        }
    }
    Ok(())
}

/// Heals every cut link of `nodes`.
pub async fn heal(
    probe: &understudy_cluster::probe::Probe,
    nodes: &[understudy_runtime::NodeName],
) -> Result<(), understudy_cluster::probe::ProbeError> {
    for node in nodes {
        probe.cut(node, &[]).await?;
    }
    Ok(())
}

/// Waits up to `limit` until, in the committed tables node `observer` holds (of its own group
/// and of the groups it follows), `unit` serves at an epoch above `newer_than` with a ready
/// standby; returns its status then (primary and standby with their nodes, epoch), or `None`.
pub async fn wait_for_unit(
    probe: &understudy_cluster::probe::Probe,
    observer: &understudy_runtime::NodeName,
    unit: &str,
    newer_than: u64,
    limit: std::time::Duration,
) -> Option<understudy_actors::UnitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(s) = probe.status(observer).await {
            let found = std::iter::once(s.control)
                .chain(s.others)
                .flat_map(|v| v.units)
                .find(|u| {
                    u.unit.0 == unit
                        && u.serving
                        && u.standby_ready
                        && u.epoch.0 > newer_than
                        && u.primary.is_some()
                });
            if found.is_some() {
                return found;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await; // poll with a deadline
    }
    None
}

/// What came of one stimulus a test sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered, with the answer (as JSON).
    Answered(String),
    /// Reported ignored by the unit: it did not act on it.
    Ignored(String),
    /// Failed: the caller does not know whether it took effect.
    Failed(String),
}

/// One stimulus of a [`History`]: what was asked, when, what came of it, how long it took and
/// which copy answered.
#[derive(Clone, Debug)]
pub struct Record {
    /// What the stimulus was, in the test's words (say, `reserve widget 1`).
    pub what: String,
    /// When it was sent.
    pub sent_at: std::time::Instant,
    /// How long until its outcome.
    pub took: std::time::Duration,
    /// Its budget.
    pub t_max: std::time::Duration,
    /// What came of it.
    pub outcome: Outcome,
    /// The copy that answered, its epoch and when, if the caller learned it.
    pub served_by: Option<ServedBy>,
}

/// Every stimulus a test sent and every outcome, shared by the test's callers; then the counts
/// a fault test reports and asserts.
#[derive(Debug, Default)]
pub struct History {
    inner: std::sync::Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    records: Vec<Record>,
    counts: HistoryCounts,
}

/// The counts of a [`History`], and for a counter-like unit the comparison of its final state
/// with the operations acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistoryCounts {
    /// Stimuli sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
    /// Of those, answered after their `T_max`.
    pub answered_late: u64,
    /// Reported ignored.
    pub ignored: u64,
    /// Failed (outcome unknown to the caller).
    pub failed: u64,
    /// Failed before their `T_max` ran out (a caller may only see an error after it).
    pub failed_early: u64,
    /// Outcomes that came after `T_max`.
    pub late: u64,
}

/// A counter-like unit's final value against the history: each acknowledged operation must
/// show exactly once; an operation whose outcome the caller never learned may or may not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterCheck {
    /// Acknowledged operations missing from the final state.
    pub lost: u64,
    /// Operations in the final state beyond every one that could have taken effect.
    pub duplicated: u64,
}

/// Who answered, against "one primary per epoch": per unit, every answer at one epoch came
/// from one copy, and no answer came from an older epoch than one a caller had already been
/// answered at before sending it (an old primary serving on after a newer one had).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrimaryCheck {
    /// Answers that said who served them.
    pub answers: u64,
    /// Distinct (unit, epoch) pairs they came from.
    pub epochs: u64,
    /// Epochs in which more than one copy answered.
    pub epochs_with_two_primaries: u64,
    /// Answers from an older epoch than an answer received before they were sent.
    pub stale_answers: u64,
}

impl PrimaryCheck {
    /// Whether it found one primary per epoch, one epoch after another.
    pub fn holds(&self) -> bool {
        self.epochs_with_two_primaries == 0 && self.stale_answers == 0
    }
}

impl History {
    /// An empty history.
    pub fn new() -> std::sync::Arc<History> {
        std::sync::Arc::new(History::default())
    }

    /// Records one stimulus: `what`, sent at `sent_at` with budget `t_max`, and its outcome now.
    pub fn record(
        &self,
        what: impl Into<String>,
        sent_at: std::time::Instant,
        t_max: std::time::Duration,
        outcome: Outcome,
    ) {
        self.record_served(what, sent_at, t_max, outcome, None);
    }

    /// As [`History::record`], with the copy that answered (from
    /// [`Probe::call_json_served`](understudy_cluster::probe::Probe::call_json_served) or
    /// [`UnitClient::call_served`](understudy_actors::UnitClient::call_served)).
    pub fn record_served(
        &self,
        what: impl Into<String>,
        sent_at: std::time::Instant,
        t_max: std::time::Duration,
        outcome: Outcome,
        served_by: Option<ServedBy>,
    ) {
        let record = Record {
            what: what.into(),
            sent_at,
            took: sent_at.elapsed(),
            t_max,
            outcome,
            served_by,
        };
        let mut inner = self.lock();
        let c = &mut inner.counts;
        let late = record.took > record.t_max;
        c.sent += 1;
        c.late += u64::from(late);
        match record.outcome {
            Outcome::Answered(_) => {
                c.answered += 1;
                c.answered_late += u64::from(late);
            }
            Outcome::Ignored(_) => c.ignored += 1,
            Outcome::Failed(_) => {
                c.failed += 1;
                c.failed_early += u64::from(record.took < record.t_max);
            }
        }
        inner.records.push(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        // A poisoned lock only means a caller panicked while pushing a record.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every record so far, in the order their outcomes came.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The counts so far.
    pub fn counts(&self) -> HistoryCounts {
        self.lock().counts
    }

    /// For a counter-like unit that each answered operation moved by one: compares `moved`
    /// (how far its value moved over the test) with the operations answered (and those whose
    /// outcome is unknown, which may have taken effect).
    pub fn check_counter(&self, moved: u64) -> CounterCheck {
        let c = self.counts();
        CounterCheck {
            lost: c.answered.saturating_sub(moved),
            duplicated: moved.saturating_sub(c.answered + c.failed),
        }
    }

    /// Checks one primary per epoch over every answer that said who served it.
    pub fn check_primaries(&self) -> PrimaryCheck {
        use std::collections::{BTreeMap, BTreeSet};
        let inner = self.lock();
        // Per unit: (received, sent, epoch, copy) of each answer.
        let mut per_unit: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for r in &inner.records {
            if let (Outcome::Answered(_), Some(by)) = (&r.outcome, &r.served_by) {
                per_unit.entry(by.unit.0.as_str()).or_default().push((
                    r.sent_at + r.took,
                    r.sent_at,
                    by.epoch.0,
                    by.copy,
                ));
            }
        }
        let mut check = PrimaryCheck::default();
        for answers in per_unit.values_mut() {
            check.answers += answers.len() as u64;
            let mut copies: BTreeMap<u64, BTreeSet<_>> = BTreeMap::new();
            for (_, _, epoch, copy) in answers.iter() {
                copies.entry(*epoch).or_default().insert(*copy);
            }
            check.epochs += copies.len() as u64;
            check.epochs_with_two_primaries +=
                copies.values().filter(|c| c.len() > 1).count() as u64;
            // The newest epoch among the answers received before each instant.
            answers.sort_by_key(|a| a.0);
            let newest_by: Vec<u64> = answers
                .iter()
                .scan(0u64, |newest, a| {
                    *newest = (*newest).max(a.2);
                    Some(*newest)
                })
                .collect();
            for (_, sent, epoch, _) in answers.iter() {
                let before = answers.partition_point(|a| a.0 < *sent);
                if before > 0 && newest_by[before - 1] > *epoch {
                    check.stale_answers += 1;
                }
            }
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_history_counts_outcomes_and_checks_a_counter_against_what_was_acknowledged() {
        let h = History::new();
        let t_max = Duration::from_secs(60);
        let now = Instant::now();
        for _ in 0..3 {
            h.record("incr", now, t_max, Outcome::Answered("1".into()));
        }
        h.record("incr", now, t_max, Outcome::Failed("link lost".into()));
        h.record("incr", now, t_max, Outcome::Ignored("no".into()));
        let c = h.counts();
        assert_eq!((c.sent, c.answered, c.failed, c.ignored), (5, 3, 1, 1));
        assert_eq!(c.failed_early, 1, "it failed well before its T_max");
        assert_eq!(c.late, 0);
        // 3 answered and 1 unknown: a counter moved by 3 or 4 is consistent.
        assert_eq!(h.check_counter(3), CounterCheck::default());
        assert_eq!(h.check_counter(4), CounterCheck::default());
        assert_eq!(h.check_counter(2).lost, 1);
        assert_eq!(h.check_counter(6).duplicated, 2);
    }

    fn by(copy: u64, epoch: u64) -> Option<ServedBy> {
        Some(ServedBy {
            unit: understudy_runtime::UnitName::new("kv"),
            copy: understudy_runtime::CopyId(copy),
            node: understudy_runtime::NodeName::new("n1"),
            epoch: understudy_runtime::Epoch(epoch),
            at_us: 0,
        })
    }

    #[test]
    fn the_primary_check_finds_two_copies_in_one_epoch_and_an_old_epoch_answering_after_a_newer_one(
    ) {
        let t_max = Duration::from_secs(60);
        let answered = || Outcome::Answered("1".into());
        let start = Instant::now();

        // Epoch 1 by copy 1, then epoch 2 by copy 2: one primary per epoch.
        let h = History::new();
        h.record_served("a", start, t_max, answered(), by(1, 1));
        h.record_served("b", Instant::now(), t_max, answered(), by(2, 2));
        // Sent before epoch 2's answer came back, answered at epoch 1: that is allowed.
        h.record_served("c", start, t_max, answered(), by(1, 1));
        let check = h.check_primaries();
        assert_eq!((check.answers, check.epochs), (3, 2));
        assert!(check.holds(), "{check:?}");

        // Copy 3 answering in epoch 2 too: two primaries in one epoch.
        h.record_served("d", Instant::now(), t_max, answered(), by(3, 2));
        assert_eq!(h.check_primaries().epochs_with_two_primaries, 1);

        // Epoch 1 answering a stimulus sent after epoch 2 had answered: stale.
        let h = History::new();
        h.record_served("a", start, t_max, answered(), by(2, 2));
        let later = Instant::now() + Duration::from_millis(1);
        h.record_served("b", later, t_max, answered(), by(1, 1));
        let check = h.check_primaries();
        assert_eq!(check.stale_answers, 1);
        assert!(!check.holds());
    }
}
