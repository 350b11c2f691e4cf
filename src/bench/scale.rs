//! Scale: one cluster of [`NODES`] node processes with many key-value units (1,000; 100 with
//! `--quick`), synchronous, measured three ways.
//!
//! 1. **Cold start**: from starting the node processes until the seed's copy of the group's
//!    table shows every unit serving with a ready standby.
//! 2. **Memory per idle unit pair**: once every node of the cluster resolves every unit and
//!    the cluster has idled for [`ScalePlan::idle`], the sum of the nodes' resident sets
//!    (`VmRSS` of `/proc/PID/status`), less the same sum for the same cluster with one unit
//!    (started first, measured the same way), divided by the number of units.
//! 3. **Node loss**: the node other than the seed that holds the most primaries is killed with
//!    `kill -9`, and the time runs until every unit whose primary was there serves again —
//!    primary on another node, at a newer epoch — by the seed's copy of the table. The seed is
//!    never killed (the probe talks through it, and the test kit's restart of a seed would found
//!    its group again); it is the observer.
//!
//! ```text
//!   one unit:   start ─► whole ─► idle ─► Σ VmRSS (one)                     ─► stop
//!   N units:    start ─► every unit serves, standby ready  (cold start) ─► whole ─► idle
//!               ─► Σ VmRSS (all) ─► kill -9 the node with the most primaries
//!               ─► every unit it held serves again elsewhere, newer epoch  (node loss) ─► stop
//!   per unit = (Σ all − Σ one) / N
//! ```
//!
//! Every wait polls the cluster's status with a deadline; a step that does not finish says
//! what it still waited for, and the steps after it are not measured.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use understudy_actors::{NameState, UnitStatus};
use understudy_cluster::probe::Probe;
use understudy_cluster::wire::NodeStatus;
use understudy_runtime::{CopyId, NodeName, UnitName};

use crate::testkit::ProcessCluster;

/// The nodes of the scale cluster (the first is the seed).
pub const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// Units of the full run.
pub const UNITS: usize = 1000;

/// Units of the quick run.
pub const QUICK_UNITS: usize = 100;

/// How long the full run's clusters idle before their memory is read: long enough for the
/// nodes' resident sets to level off (the control log fills to its snapshot and is purged,
/// the primaries' lease renewals fall into one request per node, mailboxes reach their
/// working size), which they do within a few seconds; read sooner, they are still growing.
pub const FULL_IDLE: Duration = Duration::from_secs(10);

/// How long the quick run's clusters idle before their memory is read (its number is rougher).
pub const QUICK_IDLE: Duration = Duration::from_millis(500);

/// How often a wait asks for the status.
const POLL: Duration = Duration::from_millis(20);

/// How a scale measurement runs.
#[derive(Clone, Debug)]
pub struct ScalePlan {
    /// The node binary.
    pub binary: PathBuf,
    /// The node names; the first is the seed (and the observer), never killed. At least three:
    /// the group keeps its Raft quorum when one is killed.
    pub nodes: Vec<String>,
    /// The units of the measured cluster.
    pub units: usize,
    /// How long a cluster idles, once whole, before its memory is read.
    pub idle: Duration,
    /// The cookie of both clusters.
    pub cookie: String,
    /// Keep the nodes' logs here (`one/` and `all/` below it).
    pub logs: Option<PathBuf>,
    /// Where the units files are written (a directory, created if need be).
    pub dir: PathBuf,
}

impl ScalePlan {
    /// A plan for `units` units on [`NODES`], idling `idle` before each memory reading, its
    /// units files in a temporary directory of this process.
    pub fn new(binary: impl AsRef<Path>, units: usize, idle: Duration) -> Self {
        ScalePlan {
            binary: binary.as_ref().to_path_buf(),
            nodes: NODES.iter().map(|n| n.to_string()).collect(),
            units,
            idle,
            cookie: format!("bench-scale-{}", std::process::id()),
            logs: None,
            dir: std::env::temp_dir().join(format!("understudy-scale-{}", std::process::id())),
        }
    }

    /// How long the cold start may take: generous, for a loaded two-core machine.
    pub fn cold_start_limit(&self) -> Duration {
        Duration::from_secs(30) + Duration::from_millis(90) * self.units as u32
    }

    /// How long the cluster may take, after the cold start, until every node resolves every
    /// unit.
    pub fn whole_limit(&self) -> Duration {
        Duration::from_secs(20) + Duration::from_millis(20) * self.units as u32
    }

    /// How long the lost primaries' units may take to serve again.
    pub fn node_loss_limit(&self) -> Duration {
        Duration::from_secs(20) + Duration::from_millis(40) * self.units as u32
    }

    fn node_refs(&self) -> Vec<&str> {
        self.nodes.iter().map(String::as_str).collect()
    }

    fn seed(&self) -> NodeName {
        NodeName::new(self.nodes.first().map_or("n1", String::as_str))
    }
}

/// The name of unit `i` of `n` (zero-padded, so they sort in order).
pub fn unit_name(i: usize, n: usize) -> String {
    let width = n.saturating_sub(1).max(1).to_string().len();
    format!("kv-{i:0width$}")
}

/// The resident memory of a cluster's nodes, once idle, and the CPU they used idling.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Resident {
    /// `VmRSS` per node, KiB.
    pub by_node: BTreeMap<String, u64>,
    /// Their sum, KiB.
    pub total_kib: u64,
    /// The CPU time all nodes used during the idle period over its length, in cores (1.0: one
    /// core busy all along), from `utime + stime` of `/proc/PID/stat`.
    pub idle_cpu_cores: f64,
}

/// What killing the node with the most primaries did.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLoss {
    /// The node killed.
    pub killed: NodeName,
    /// Whether it ran the group manager (then the manager moved too).
    pub ran_group_manager: bool,
    /// The primaries it held: the units that had to take over.
    pub primaries_lost: usize,
    /// The node whose copy of the table was watched.
    pub observer: NodeName,
    /// From the kill until every one of them served again (primary elsewhere, newer epoch).
    pub serving_ms: f64,
    /// How many of them served again (all of them: otherwise the step failed).
    pub serving_again: usize,
    /// From the kill until every one of them also had a ready standby again, if that happened
    /// within the step's deadline.
    pub standbys_ready_ms: Option<f64>,
}

/// Everything one scale measurement found. A step that failed leaves its field `None` and
/// says why in `errors`.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleRun {
    /// Node processes in each cluster.
    pub nodes: usize,
    /// Units of the measured cluster.
    pub units: usize,
    /// How long each cluster idled before its memory was read, ms.
    pub idle_ms: u64,
    /// From starting the processes until every unit served with a ready standby.
    pub cold_start_ms: Option<f64>,
    /// The cluster with one unit, idle.
    pub rss_one_unit: Option<Resident>,
    /// The cluster with every unit, idle.
    pub rss_all_units: Option<Resident>,
    /// What killing the node with the most primaries did.
    pub node_loss: Option<NodeLoss>,
    /// Why a step measured nothing.
    pub errors: Vec<String>,
    /// How long the whole measurement took, s.
    pub took_s: f64,
}

impl ScaleRun {
    /// (Σ all − Σ one) / units, KiB, if both sums were read.
    pub fn rss_per_unit_kib(&self) -> Option<f64> {
        let all = self.rss_all_units.as_ref()?.total_kib as f64;
        let one = self.rss_one_unit.as_ref()?.total_kib as f64;
        (self.units > 0).then(|| (all - one) / self.units as f64)
    }

    /// The node loss time, if every lost primary's unit served again.
    pub fn node_loss_ms(&self) -> Option<f64> {
        self.node_loss.as_ref().map(|l| l.serving_ms)
    }

    /// Whether all three numbers were measured.
    pub fn complete(&self) -> bool {
        self.cold_start_ms.is_some()
            && self.rss_per_unit_kib().is_some()
            && self.node_loss_ms().is_some()
    }
}

/// Run the scale measurement: first the cluster with one unit, then the one with
/// `plan.units`. Progress goes to stderr; failures are recorded in the run, never panics.
pub async fn run(plan: &ScalePlan) -> ScaleRun {
    let started = Instant::now();
    let mut run = ScaleRun {
        nodes: plan.nodes.len(),
        units: plan.units,
        idle_ms: u64::try_from(plan.idle.as_millis()).unwrap_or(u64::MAX),
        cold_start_ms: None,
        rss_one_unit: None,
        rss_all_units: None,
        node_loss: None,
        errors: Vec::new(),
        took_s: 0.0,
    };
    if plan.nodes.len() < 3 {
        run.errors.push(format!(
            "a scale cluster needs at least three nodes (to keep a quorum after one is killed), not {}",
            plan.nodes.len()
        ));
        return run;
    }
    match one_unit(plan).await {
        Ok(r) => run.rss_one_unit = Some(r),
        Err(e) => run.errors.push(format!("the one-unit cluster: {e}")),
    }
    if let Err(e) = all_units(plan, &mut run).await {
        run.errors
            .push(format!("the {}-unit cluster: {e}", plan.units));
    }
    let _ = std::fs::remove_dir(&plan.dir);
    run.took_s = started.elapsed().as_secs_f64();
    run
}

/// Write a units file of `n` synchronous key-value units.
fn units_file(plan: &ScalePlan, label: &str, n: usize) -> Result<PathBuf, String> {
    let path = plan.dir.join(format!("units-scale-{label}.toml"));
    let mut text = format!("# understudy bench, scale: {n} key-value units, synchronous.\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[units]]\nname = \"{}\"\nkind = \"kv\"\nstrategy = \"synchronous\"\n",
            unit_name(i, n)
        ));
    }
    std::fs::create_dir_all(&plan.dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| format!("cannot write the units file {}: {e}", path.display()))?;
    Ok(path)
}

/// Start a cluster of the plan's nodes with the units file `units` (kept until the cluster is
/// dropped).
fn start(plan: &ScalePlan, units: &Path, label: &str) -> Result<ProcessCluster, String> {
    let mut builder = ProcessCluster::builder(&plan.binary)
        .nodes(&plan.node_refs())
        .cookie(&plan.cookie)
        .config(units)
        // The node loss measured is planned: no node is to be excluded for it.
        .args(["--exclude-after", "0"]);
    if let Some(dir) = &plan.logs {
        builder = builder.logs(dir.join(label));
    }
    builder.start().map_err(|e| e.to_string())
}

async fn connect(plan: &ScalePlan, cluster: &ProcessCluster) -> Result<Probe, String> {
    let addr = cluster.addr(cluster.seed()).map_err(|e| e.to_string())?;
    Probe::connect(&addr, &plan.cookie, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())
}

/// The cluster with one unit: whole, idle, its memory.
async fn one_unit(plan: &ScalePlan) -> Result<Resident, String> {
    let units = units_file(plan, "one", 1)?;
    let result = async {
        let cluster = start(plan, &units, "one")?;
        eprintln!(
            "bench: scale: cluster of {} nodes with one unit started",
            plan.nodes.len()
        );
        let probe = connect(plan, &cluster).await?;
        let names = [UnitName::new(unit_name(0, 1))].into();
        all_serve(&probe, &plan.seed(), &names, plan.cold_start_limit()).await?;
        whole(&probe, plan, &names, plan.whole_limit()).await?;
        let resident = idle_reading(&cluster, plan.idle).await?;
        still_serving(&probe, &plan.seed(), &names).await?;
        eprintln!(
            "bench: scale: one unit: {} KiB resident over the nodes, {:.2} cores idling",
            resident.total_kib, resident.idle_cpu_cores
        );
        Ok(resident)
    }
    .await;
    let _ = std::fs::remove_file(&units);
    result
}

/// The cluster with every unit: cold start, memory, node loss, each recorded in `run` as it is
/// measured.
async fn all_units(plan: &ScalePlan, run: &mut ScaleRun) -> Result<(), String> {
    let n = plan.units;
    let units = units_file(plan, "all", n)?;
    let names: BTreeSet<UnitName> = (0..n).map(|i| UnitName::new(unit_name(i, n))).collect();
    let result = async {
        let t0 = Instant::now();
        let mut cluster = start(plan, &units, "all")?;
        eprintln!(
            "bench: scale: cluster of {} nodes with {n} units started, waiting for every unit to serve with a ready standby",
            plan.nodes.len()
        );
        let probe = connect(plan, &cluster).await?;
        all_serve(&probe, &plan.seed(), &names, plan.cold_start_limit()).await?;
        let cold = t0.elapsed();
        run.cold_start_ms = Some(cold.as_secs_f64() * 1000.0);
        eprintln!(
            "bench: scale: cold start of {n} units: {:.0} ms",
            cold.as_secs_f64() * 1000.0
        );
        whole(&probe, plan, &names, plan.whole_limit()).await?;
        let resident = idle_reading(&cluster, plan.idle).await?;
        still_serving(&probe, &plan.seed(), &names).await?;
        eprintln!(
            "bench: scale: {n} units: {} KiB resident over the nodes, {:.2} cores idling",
            resident.total_kib, resident.idle_cpu_cores
        );
        run.rss_all_units = Some(resident);
        let loss = node_loss(plan, &mut cluster, &probe, &names).await?;
        eprintln!(
            "bench: scale: kill -9 of {} ({} primaries): all serve again after {:.0} ms",
            loss.killed, loss.primaries_lost, loss.serving_ms
        );
        run.node_loss = Some(loss);
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&units);
    result
}

/// The units of `names` that `status` shows serving with a ready standby.
fn count_ready(status: &NodeStatus, names: &BTreeSet<UnitName>) -> usize {
    status
        .control
        .units
        .iter()
        .filter(|u| names.contains(&u.unit) && u.serving && u.standby_ready && u.primary.is_some())
        .count()
}

/// Wait until `observer`'s copy of the table shows every unit of `names` serving with a ready
/// standby.
async fn all_serve(
    probe: &Probe,
    observer: &NodeName,
    names: &BTreeSet<UnitName>,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        match probe.status(observer).await {
            Ok(s) => {
                let ready = count_ready(&s, names);
                if ready == names.len() {
                    return Ok(());
                }
                let unavailable = s
                    .control
                    .units
                    .iter()
                    .filter(|u| names.contains(&u.unit) && u.unavailable)
                    .count();
                if unavailable > 0 {
                    // Lost for good (until an operator restores them): no use waiting.
                    return Err(format!(
                        "{unavailable} of {} units were declared unavailable by {observer}'s table ({ready} serve with a ready standby): their primary's node was counted down before their standby was ready — a node that missed its heartbeats on a saturated machine? The nodes' logs (--logs) say which",
                        names.len()
                    ));
                }
                last = format!(
                    "{ready} of {} units serve with a ready standby ({} placed) by {observer}'s table",
                    names.len(),
                    s.control.units.len()
                );
            }
            Err(e) => last = format!("{observer} did not answer its status: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not every unit served with a ready standby within {limit:?}: {last}"
            ));
        }
        tokio::time::sleep(POLL).await; // poll with a deadline
    }
}

/// What keeps the cluster from being whole: every node answers, knows a leader, counts every
/// node up, shows every unit serving with a ready standby, and resolves every unit.
async fn not_whole(probe: &Probe, plan: &ScalePlan, names: &BTreeSet<UnitName>) -> Option<String> {
    for node in &plan.nodes {
        let name = NodeName::new(node.as_str());
        let s = match probe.status(&name).await {
            Ok(s) => s,
            Err(e) => return Some(format!("node {node} does not answer: {e}")),
        };
        if s.control.leader.is_none() {
            return Some(format!("node {node} knows no leader"));
        }
        let up: BTreeSet<&str> = s.control.nodes_up.iter().map(|n| n.0.as_str()).collect();
        if let Some(peer) = plan.nodes.iter().find(|p| !up.contains(p.as_str())) {
            return Some(format!("node {node} does not count {peer} up yet"));
        }
        let ready = count_ready(&s, names);
        if ready < names.len() {
            return Some(format!(
                "node {node}'s table shows {ready} of {} units serving with a ready standby",
                names.len()
            ));
        }
        let bound = s
            .names
            .iter()
            .filter(|(u, state)| names.contains(u) && matches!(state, NameState::Bound(_)))
            .count();
        if bound < names.len() {
            return Some(format!(
                "node {node} resolves {bound} of {} units",
                names.len()
            ));
        }
    }
    None
}

/// Wait until the cluster is whole ([`not_whole`]).
async fn whole(
    probe: &Probe,
    plan: &ScalePlan,
    names: &BTreeSet<UnitName>,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let Some(why) = not_whole(probe, plan, names).await else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!("the cluster was not whole within {limit:?}: {why}"));
        }
        tokio::time::sleep(POLL).await; // poll with a deadline
    }
}

/// `VmRSS` of a process, KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("{path} has no readable VmRSS line"))
}

/// Whether every unit still serves with a ready standby after the idle period (a node counted
/// down meanwhile, say by missed heartbeats on a saturated machine, would spoil the reading).
async fn still_serving(
    probe: &Probe,
    observer: &NodeName,
    names: &BTreeSet<UnitName>,
) -> Result<(), String> {
    let s = probe
        .status(observer)
        .await
        .map_err(|e| format!("{observer} did not answer its status after the idle period: {e}"))?;
    let ready = count_ready(&s, names);
    if ready < names.len() {
        return Err(format!(
            "after the idle period only {ready} of {} units served with a ready standby (a takeover happened while idle: see the nodes' logs, --logs)",
            names.len()
        ));
    }
    Ok(())
}

/// CPU time (user + system) of a process so far, in clock ticks of 1/100 s (`USER_HZ`).
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| format!("{path} has no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{path} has no readable utime/stime"))
    };
    Ok(field(11)? + field(12)?)
}

/// Idle the cluster for `idle` (a fixed measurement window, no condition), counting the CPU
/// its nodes use, then read their memory.
async fn idle_reading(cluster: &ProcessCluster, idle: Duration) -> Result<Resident, String> {
    let pids = cluster
        .names()
        .into_iter()
        .map(|name| {
            cluster
                .pid(&name)
                .ok_or_else(|| format!("node {name} does not run"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    let ticks = |pids: &[u32]| -> Result<u64, String> {
        pids.iter()
            .map(|p| cpu_ticks(*p))
            .sum::<Result<u64, String>>()
    };
    let before = ticks(&pids)?;
    let started = Instant::now();
    tokio::time::sleep(idle).await; // the idle window itself, no condition
    let cpu_s = ticks(&pids)?.saturating_sub(before) as f64 / 100.0;
    let window_s = started.elapsed().as_secs_f64();
    let mut r = resident(cluster).await?;
    r.idle_cpu_cores = if window_s > 0.0 {
        cpu_s / window_s
    } else {
        0.0
    };
    Ok(r)
}

/// The resident memory of every node of `cluster`, read three times 100 ms apart: the
/// reading with the median sum.
async fn resident(cluster: &ProcessCluster) -> Result<Resident, String> {
    let mut readings = Vec::new();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await; // spacing between readings, no condition
        }
        let mut r = Resident::default();
        for name in cluster.names() {
            let pid = cluster
                .pid(&name)
                .ok_or_else(|| format!("node {name} does not run"))?;
            let kib = vm_rss_kib(pid)?;
            r.total_kib += kib;
            r.by_node.insert(name, kib);
        }
        readings.push(r);
    }
    readings.sort_by_key(|r| r.total_kib);
    readings
        .into_iter()
        .nth(1)
        .ok_or_else(|| "no reading".to_string())
}

/// Kill the node (other than the seed) with the most primaries and wait until every unit whose
/// primary was there serves again elsewhere at a newer epoch, by the seed's table.
async fn node_loss(
    plan: &ScalePlan,
    cluster: &mut ProcessCluster,
    probe: &Probe,
    names: &BTreeSet<UnitName>,
) -> Result<NodeLoss, String> {
    let observer = plan.seed();
    let before = probe
        .status(&observer)
        .await
        .map_err(|e| format!("{observer} did not answer its status: {e}"))?;
    let mut primaries: BTreeMap<NodeName, Vec<(UnitName, u64)>> = BTreeMap::new();
    for u in before
        .control
        .units
        .iter()
        .filter(|u| names.contains(&u.unit))
    {
        if let Some((_, node)) = &u.primary {
            primaries
                .entry(node.clone())
                .or_default()
                .push((u.unit.clone(), u.epoch.0));
        }
    }
    let (victim, lost) = primaries
        .into_iter()
        .filter(|(node, _)| *node != observer)
        .max_by(|(a, x), (b, y)| x.len().cmp(&y.len()).then(b.cmp(a)))
        .ok_or_else(|| format!("no node other than {observer} holds a primary"))?;
    let ran_group_manager = probe
        .status(&victim)
        .await
        .map(|s| s.control.runs_group_manager)
        .unwrap_or(false);
    let lost: BTreeMap<UnitName, u64> = lost.into_iter().collect();
    eprintln!(
        "bench: scale: kill -9 of {victim}, which holds {} primaries{}",
        lost.len(),
        if ran_group_manager {
            " and runs the group manager"
        } else {
            ""
        }
    );
    let limit = plan.node_loss_limit();
    let t0 = Instant::now();
    cluster.kill9(&victim.0);
    let deadline = t0 + limit;
    let mut serving_ms = None;
    let mut last;
    loop {
        match probe.status(&observer).await {
            Ok(s) => {
                let at = t0.elapsed().as_secs_f64() * 1000.0;
                let again: Vec<_> = s
                    .control
                    .units
                    .iter()
                    .filter(|u| {
                        lost.get(&u.unit).is_some_and(|e| u.epoch.0 > *e)
                            && u.serving
                            && u.primary.as_ref().is_some_and(|(_, n)| *n != victim)
                    })
                    .collect();
                let serving = again.len();
                let with_standby = again.iter().filter(|u| u.standby_ready).count();
                if serving == lost.len() && serving_ms.is_none() {
                    serving_ms = Some(at);
                }
                if let Some(ms) = serving_ms {
                    if with_standby == lost.len() {
                        return Ok(NodeLoss {
                            killed: victim,
                            ran_group_manager,
                            primaries_lost: lost.len(),
                            observer,
                            serving_ms: ms,
                            serving_again: serving,
                            standbys_ready_ms: Some(at),
                        });
                    }
                }
                // Where the units not back yet stand, so that a run that gives up says why.
                let behind: Vec<&UnitStatus> = s
                    .control
                    .units
                    .iter()
                    .filter(|u| {
                        lost.contains_key(&u.unit) && !again.iter().any(|a| a.unit == u.unit)
                    })
                    .collect();
                let unavailable = behind.iter().filter(|u| u.unavailable).count();
                let examples: Vec<String> = behind.iter().take(5).map(|u| describe(u)).collect();
                last = format!(
                    "{serving} of {} serve again at a newer epoch off {victim}, {with_standby} of them with a ready standby; of the {} not back, {unavailable} unavailable; e.g. {}",
                    lost.len(),
                    behind.len(),
                    examples.join("; ")
                );
            }
            Err(e) => last = format!("{observer} did not answer its status: {e}"),
        }
        if Instant::now() >= deadline {
            return match serving_ms {
                Some(ms) => Ok(NodeLoss {
                    killed: victim,
                    ran_group_manager,
                    primaries_lost: lost.len(),
                    observer,
                    serving_ms: ms,
                    serving_again: lost.len(),
                    standbys_ready_ms: None,
                }),
                None => Err(format!(
                    "after kill -9 of {victim}, not every unit whose primary was there served again within {limit:?}: {last}"
                )),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }
}

/// One unit's state in a table, in a few words: epoch, serving or not, where its copies are.
fn describe(u: &UnitStatus) -> String {
    let at = |c: &Option<(CopyId, NodeName)>| {
        c.as_ref()
            .map_or("-".to_string(), |(copy, node)| format!("{copy} on {node}"))
    };
    format!(
        "{} at epoch {}: {}, primary {}, standby {}{}",
        u.unit,
        u.epoch.0,
        if u.unavailable {
            "unavailable"
        } else if u.serving {
            "serving"
        } else {
            "not serving"
        },
        at(&u.primary),
        at(&u.standby),
        if u.standby_ready { " (ready)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_padded_so_they_sort_in_order() {
        assert_eq!(unit_name(7, 1000), "kv-007");
        assert_eq!(unit_name(999, 1000), "kv-999");
        assert_eq!(unit_name(0, 1), "kv-0");
        assert_eq!(unit_name(12, 100), "kv-12");
    }

    #[test]
    fn memory_per_unit_is_the_difference_of_the_sums_over_the_units() {
        let resident = |total_kib| Resident {
            by_node: BTreeMap::new(),
            total_kib,
            idle_cpu_cores: 0.5,
        };
        let mut run = ScaleRun {
            nodes: 5,
            units: 100,
            idle_ms: 0,
            cold_start_ms: Some(1.0),
            rss_one_unit: Some(resident(50_000)),
            rss_all_units: Some(resident(70_000)),
            node_loss: None,
            errors: Vec::new(),
            took_s: 0.0,
        };
        assert_eq!(run.rss_per_unit_kib(), Some(200.0));
        assert!(!run.complete());
        run.rss_one_unit = None;
        assert_eq!(run.rss_per_unit_kib(), None);
    }

    #[test]
    fn the_own_process_has_a_resident_set_and_a_cpu_time() {
        assert!(vm_rss_kib(std::process::id()).is_ok_and(|k| k > 0));
        // Burn a little CPU so that at least one tick is counted.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(cpu_ticks(std::process::id()).is_ok_and(|t| t > 0));
        assert!(vm_rss_kib(u32::MAX).is_err() && cpu_ticks(u32::MAX).is_err());
    }
}
