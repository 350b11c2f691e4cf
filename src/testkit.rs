//! Running a cluster of real node processes from a program or a test: start N nodes of a
//! binary on free loopback ports, fault them with signals, restart them, and stop every one
//! of them when the cluster value is dropped — also when a test panics.
//!
//! ```no_run
//! # async fn demo() {
//! use understudy::testkit::ProcessCluster;
//! // In an integration test, the binary is `env!("CARGO_BIN_EXE_understudy")`.
//! let mut cluster = ProcessCluster::start("target/release/understudy", &["n1", "n2", "n3"], "n3", "secret")
//!     .expect("nodes start");
//! cluster.kill9("n1");
//! cluster.restart("n1").expect("n1 starts again");
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
    /// `--expect` for this node (the size of its group).
    expect: usize,
    /// Further arguments (`--config`, `--group`).
    extra: Vec<String>,
    child: Option<Child>,
}

/// Node processes started from one binary; all are killed when this is dropped.
#[derive(Debug)]
pub struct ProcessCluster {
    binary: PathBuf,
    cookie: String,
    seed: String,
    logs: Option<PathBuf>,
    nodes: BTreeMap<String, NodeProcess>,
}

impl ProcessCluster {
    /// Start one node per name from `binary` (which must take `node --name --port --join
    /// --cookie --expect`, like `understudy`). `seed` joins nobody; the others join it.
    pub fn start(
        binary: impl AsRef<Path>,
        names: &[&str],
        seed: &str,
        cookie: &str,
    ) -> Result<ProcessCluster, ProcessError> {
        Self::start_logged(binary, names, seed, cookie, None)
    }

    /// As [`ProcessCluster::start`], writing each node's log to `logs/NAME.log`.
    pub fn start_logged(
        binary: impl AsRef<Path>,
        names: &[&str],
        seed: &str,
        cookie: &str,
        logs: Option<PathBuf>,
    ) -> Result<ProcessCluster, ProcessError> {
        let specs: Vec<(&str, usize, Vec<String>)> = names
            .iter()
            .map(|n| (*n, names.len(), Vec::new()))
            .collect();
        Self::launch(binary, &specs, seed, cookie, logs)
    }

    /// A cluster of several groups declared in the units file `config`: `groups` lists each
    /// group with its nodes' names; every node starts with `--config config --group G
    /// --expect (nodes of G)`. `seed` (a node of the first group, say) joins nobody, the others
    /// join it.
    pub fn start_groups(
        binary: impl AsRef<Path>,
        groups: &[(&str, &[&str])],
        seed: &str,
        cookie: &str,
        config: &Path,
        logs: Option<PathBuf>,
    ) -> Result<ProcessCluster, ProcessError> {
        let config = config.display().to_string();
        let specs: Vec<(&str, usize, Vec<String>)> = groups
            .iter()
            .flat_map(|(group, names)| {
                let config = config.clone();
                names.iter().map(move |n| {
                    let extra = vec![
                        "--config".to_string(),
                        config.clone(),
                        "--group".to_string(),
                        group.to_string(),
                    ];
                    (*n, names.len(), extra)
                })
            })
            .collect();
        Self::launch(binary, &specs, seed, cookie, logs)
    }

    fn launch(
        binary: impl AsRef<Path>,
        specs: &[(&str, usize, Vec<String>)],
        seed: &str,
        cookie: &str,
        logs: Option<PathBuf>,
    ) -> Result<ProcessCluster, ProcessError> {
        let mut cluster = ProcessCluster {
            binary: binary.as_ref().to_path_buf(),
            cookie: cookie.to_string(),
            seed: seed.to_string(),
            logs,
            nodes: BTreeMap::new(),
        };
        let mut ordered: Vec<&(&str, usize, Vec<String>)> =
            specs.iter().filter(|s| s.0 == seed).collect();
        ordered.extend(specs.iter().filter(|s| s.0 != seed));
        for (name, expect, extra) in ordered {
            let port = free_port().ok_or(ProcessError::NoPort)?;
            cluster.nodes.insert(
                name.to_string(),
                NodeProcess {
                    port,
                    expect: *expect,
                    extra: extra.clone(),
                    child: None,
                },
            );
            cluster.restart(name)?;
        }
        Ok(cluster)
    }

    /// The seed node's name.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The node names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// `127.0.0.1:PORT` of a node.
    pub fn addr(&self, name: &str) -> Result<String, ProcessError> {
        let n = self
            .nodes
            .get(name)
            .ok_or_else(|| ProcessError::NoSuchNode(name.to_string()))?;
        Ok(format!("127.0.0.1:{}", n.port))
    }

    /// (Re)start a node on its port, empty; a node other than the seed joins the seed.
    pub fn restart(&mut self, name: &str) -> Result<(), ProcessError> {
        self.kill9(name);
        let seed_port = self.nodes.get(&self.seed).map(|n| n.port);
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
            ])
            .args(&node.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if name != self.seed {
            if let Some(p) = seed_port {
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
                cmd.stderr(Stdio::from(f))
                    .env("RUST_LOG", "understudy_cluster=info,understudy_actors=warn");
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
