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

/// One stimulus of a [`History`]: what was asked, when, what came of it and how long it took.
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
}

/// Every stimulus a test sent and every outcome, shared by the test's callers; then the counts
/// a fault test reports and asserts.
#[derive(Debug, Default)]
pub struct History {
    records: std::sync::Mutex<Vec<Record>>,
}

/// The counts of a [`History`], and for a counter-like unit the comparison of its final state
/// with the operations acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Stimuli sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
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
        let record = Record {
            what: what.into(),
            sent_at,
            took: sent_at.elapsed(),
            t_max,
            outcome,
        };
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    /// Every record so far, in the order their outcomes came.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counts so far.
    pub fn counts(&self) -> HistoryCounts {
        let mut c = HistoryCounts::default();
        for r in self.records() {
            c.sent += 1;
            if r.took > r.t_max {
                c.late += 1;
            }
            match r.outcome {
                Outcome::Answered(_) => c.answered += 1,
                Outcome::Ignored(_) => c.ignored += 1,
                Outcome::Failed(_) => {
                    c.failed += 1;
                    if r.took < r.t_max {
                        c.failed_early += 1;
                    }
                }
            }
        }
        c
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
}
