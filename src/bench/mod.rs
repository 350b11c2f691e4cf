//! `understudy bench`: throughput and latency of a unit against a plain ractor actor, measured
//! on one machine in one run.
//!
//! For each replication strategy (synchronous, trailing, inflight) it starts a cluster of three
//! node processes of this very binary on free loopback ports, with one key-value unit `kv` of
//! that strategy, waits until `kv` serves with a ready standby, and asks the node that holds
//! neither of `kv`'s copies (the *driving node*) to run closed-loop loads
//! ([`understudy_cluster::bench`]): first against the **baseline** — the plain ractor counter
//! actor of `kv`'s primary's node, the same `incr` service with no replication and no dedupe,
//! called over `ractor_cluster` — then against `kv` itself (`incr` through a typed
//! `UnitClient`), at 1 and at 64 requests in flight. The baseline is measured in every cluster,
//! just before the unit, and each ratio is to the baseline of the same cluster and in-flight
//! count. Then the cluster is stopped.
//!
//! ```text
//!   understudy bench ──probe──► n? (driving node) ──incr──► kv primary (node P) ──► standby
//!                                                └─incr──► BenchCounter on node P (baseline)
//! ```
//!
//! In the synchronous cluster, once its throughput is measured, it measures takeover
//! ([`takeover`]): from the fault to the first answer at a newer epoch, as the driving node's
//! load sees it — after `kill -9` of the primary's node, of the node running both the primary
//! and the group manager, after `SIGSTOP` of the primary's node and after a panic in its
//! handler, [`BenchOptions::takeover_trials`] trials each.
//!
//! Last, [`scale`]: one cluster of five node processes with 1,000 synchronous key-value units
//! (100 with `--quick`): its cold start, the memory per idle unit pair (against the same
//! cluster with one unit), and the loss of the node holding the most primaries
//! (`scale_cold_start_ms`, `scale_rss_per_unit_kib`, `scale_node_loss_ms`; `null` where a step
//! failed, the table says why). Every child process is stopped on exit, on an error and on
//! Ctrl-C.

pub mod scale;
pub mod takeover;

use crate::testkit::{wait_for_unit, ProcessCluster};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use understudy_cluster::bench::{BenchPlan, BenchStats, BenchTarget};
use understudy_cluster::probe::Probe;
use understudy_runtime::{NodeName, UnitName};

/// The in-flight counts every target is measured at.
pub const IN_FLIGHT: [u32; 2] = [1, 64];

/// The nodes of each cluster.
const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// The budget of every `incr`, as the bench's units file declares it.
const T_MAX_MS: u64 = 2000;

/// The `incr` every worker sends, with a key of its own.
const INCR: &str = r#"{"Incr":{"key":"bench-{worker}","by":1}}"#;

/// The JSON fields of what this build does not measure yet (always `null`): none left.
pub const NOT_MEASURED: [&str; 0] = [];

/// The JSON fields of the scale measurement ([`scale`]): numbers, or `null` where its step
/// failed (the table says why).
pub const SCALE_KEYS: [&str; 3] = [
    "scale_cold_start_ms",
    "scale_rss_per_unit_kib",
    "scale_node_loss_ms",
];

/// How to run the bench.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// A short run (well under a minute in all) instead of the full one.
    pub quick: bool,
    /// Print the summary as one JSON object too, the last line of output.
    pub json: bool,
    /// The node binary (normally this very program).
    pub binary: PathBuf,
    /// Takeover trials per fault instead of the default (100; 5 with `quick`).
    pub trials: Option<usize>,
    /// Keep every node's log (stderr, `RUST_LOG` at info for the cluster crate) in this
    /// directory, one file per node and strategy, appended across restarts.
    pub logs: Option<PathBuf>,
    /// Run only these parts (all of them when empty); what is not run is `null` in the JSON.
    pub only: Vec<BenchPart>,
}

/// A part of the bench, to run alone with `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BenchPart {
    /// Throughput and latency of each strategy against the baseline.
    Throughput,
    /// The takeover trials (in the synchronous cluster).
    Takeover,
    /// The scale cluster: cold start, memory per unit pair, node loss.
    Scale,
}

impl BenchPart {
    /// Whether a run asked for `only` these parts (all of them when empty) measures this one.
    pub fn wanted(self, only: &[BenchPart]) -> bool {
        only.is_empty() || only.contains(&self)
    }
}

impl BenchOptions {
    /// Whether this run measures `part`.
    pub fn runs(&self, part: BenchPart) -> bool {
        part.wanted(&self.only)
    }

    /// The warm-up and the measured duration of each measurement.
    pub fn timing(&self) -> (Duration, Duration) {
        if self.quick {
            (Duration::from_millis(300), Duration::from_millis(1500))
        } else {
            (Duration::from_secs(1), Duration::from_secs(5))
        }
    }

    /// The scale measurement of this bench: [`scale::UNITS`] units ([`scale::QUICK_UNITS`] with
    /// `quick`) on [`scale::NODES`], its units files in `dir`, its logs beside the others.
    pub fn scale_plan(&self, dir: &Path) -> scale::ScalePlan {
        let (units, idle) = if self.quick {
            (scale::QUICK_UNITS, scale::QUICK_IDLE)
        } else {
            (scale::UNITS, scale::FULL_IDLE)
        };
        let mut plan = scale::ScalePlan::new(&self.binary, units, idle);
        plan.dir = dir.to_path_buf();
        plan.logs = self.logs.as_ref().map(|d| d.join("scale"));
        plan
    }

    /// Takeover trials to run of each fault.
    pub fn takeover_trials(&self) -> usize {
        if let Some(n) = self.trials {
            n
        } else if self.quick {
            5
        } else {
            100
        }
    }
}

/// µs since the Unix epoch, by this machine's wall clock (the clock the nodes stamp answers
/// with).
pub(crate) fn wall_us_now() -> u64 {
    understudy_cluster::bench::wall_us()
}

/// A replication strategy, as the bench runs `kv` with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// An answer leaves once the standby has its effects.
    Synchronous,
    /// The answer leaves at once; the caller replays it after a takeover if the standby lacked it.
    Trailing,
    /// Synchronous, and the standby also knows which stimuli were open.
    Inflight,
}

impl Strategy {
    /// Every strategy, in the order the bench runs them.
    pub const ALL: [Strategy; 3] = [
        Strategy::Synchronous,
        Strategy::Trailing,
        Strategy::Inflight,
    ];

    /// Its prefix in the JSON object's flat keys (`sync_ops_s_64`).
    pub fn key(self) -> &'static str {
        match self {
            Strategy::Synchronous => "sync",
            Strategy::Trailing => "trailing",
            Strategy::Inflight => "inflight",
        }
    }

    /// Its spelling in `units.toml`.
    pub fn toml(self) -> &'static str {
        match self {
            Strategy::Synchronous => "synchronous",
            Strategy::Trailing => "trailing",
            Strategy::Inflight => "inflight",
        }
    }
}

/// What a measurement is against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    /// The plain ractor counter on `kv`'s primary's node.
    Baseline,
    /// The unit `kv`.
    Unit,
}

/// One measurement: a target at an in-flight count, what it measured (or why it could not),
/// and for the unit its ratio to the baseline of the same cluster and in-flight count.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The baseline or the unit.
    pub target: Against,
    /// Concurrent requests.
    pub in_flight: u32,
    /// What the driving node measured.
    pub stats: Option<BenchStats>,
    /// Why nothing was measured.
    pub error: Option<String>,
}

impl Measurement {
    /// Requests answered per second, if measured.
    pub fn ops_per_s(&self) -> Option<f64> {
        self.stats.as_ref().map(BenchStats::ops_per_s)
    }
}

/// One cluster's run: its strategy, where `kv`'s copies and the load were, and the
/// measurements.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRun {
    /// `kv`'s strategy in this cluster.
    pub strategy: Strategy,
    /// The node the load ran in.
    pub driver: NodeName,
    /// `kv`'s primary's node (where the baseline counter called is).
    pub primary: NodeName,
    /// `kv`'s standby's node.
    pub standby: Option<NodeName>,
    /// `kv`'s epoch before the measurements.
    pub epoch_before: u64,
    /// `kv`'s epoch after them (another epoch: a takeover happened during the run, which
    /// spoils its numbers).
    pub epoch_after: Option<u64>,
    /// Baseline and unit, at each in-flight count.
    pub measurements: Vec<Measurement>,
}

impl ClusterRun {
    /// The measurement of `target` at `in_flight`.
    pub fn get(&self, target: Against, in_flight: u32) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.target == target && m.in_flight == in_flight)
    }

    /// The unit's throughput over the baseline's, at `in_flight`.
    pub fn ratio(&self, in_flight: u32) -> Option<f64> {
        let unit = self.get(Against::Unit, in_flight)?.ops_per_s()?;
        let base = self.get(Against::Baseline, in_flight)?.ops_per_s()?;
        (base > 0.0).then(|| unit / base)
    }
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cores: usize,
    /// The CPU model and the OS.
    pub description: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cores,
            description: format!(
                "{model}, {} {}",
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
        }
    }
}

/// Everything one `understudy bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Whether it was the short run.
    pub quick: bool,
    /// The warm-up of each measurement.
    pub warmup_ms: u64,
    /// The measured duration of each measurement.
    pub measure_ms: u64,
    /// Where it ran.
    pub machine: Machine,
    /// One per strategy.
    pub runs: Vec<ClusterRun>,
    /// The takeover trials (in the synchronous cluster), if they ran.
    pub takeover: Option<takeover::TakeoverRun>,
    /// The scale measurement (5 nodes, many units), if it ran.
    pub scale: Option<scale::ScaleRun>,
    /// The parts it was asked to run alone (empty: all of them).
    pub only: Vec<BenchPart>,
    /// How long the whole bench took.
    pub took_s: f64,
}

/// Why the bench stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BenchCommandError {
    /// A cluster did not start or did not become ready: its nodes' logs say why (run the demo
    /// to see one form).
    #[error("the {strategy} cluster: {reason}")]
    Cluster {
        /// The strategy of the cluster.
        strategy: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The units file could not be written.
    #[error("cannot write the units file {path}: {reason}")]
    UnitsFile {
        /// Where.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// Run the bench: progress to stderr; the caller prints the report.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BenchCommandError> {
    tokio::select! {
        r = run_inner(opts) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchCommandError::Interrupted),
    }
}

async fn run_inner(opts: &BenchOptions) -> Result<BenchReport, BenchCommandError> {
    let started = Instant::now();
    let (warmup, measure) = opts.timing();
    let dir = std::env::temp_dir().join(format!("understudy-bench-{}", std::process::id()));
    let mut runs = Vec::new();
    let mut takeover = None;
    for strategy in Strategy::ALL {
        let wanted = opts.runs(BenchPart::Throughput)
            || (strategy == Strategy::Synchronous && opts.runs(BenchPart::Takeover));
        if !wanted {
            continue;
        }
        let units = units_file(&dir, strategy)?;
        let run = run_cluster(opts, strategy, &units, warmup, measure).await;
        let _ = std::fs::remove_file(&units);
        let (run, trials) = run?;
        runs.push(run);
        takeover = takeover.or(trials);
    }
    let scale = if opts.runs(BenchPart::Scale) {
        Some(scale::run(&opts.scale_plan(&dir)).await)
    } else {
        None
    };
    let _ = std::fs::remove_dir(&dir);
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(BenchReport {
        quick: opts.quick,
        warmup_ms: millis(warmup),
        measure_ms: millis(measure),
        machine: Machine::this(),
        runs,
        takeover,
        scale,
        only: opts.only.clone(),
        took_s: started.elapsed().as_secs_f64(),
    })
}

/// The units file of one cluster: `kv` alone, with `strategy`.
fn units_file(dir: &Path, strategy: Strategy) -> Result<PathBuf, BenchCommandError> {
    let path = dir.join(format!("units-{}.toml", strategy.toml()));
    let text = format!(
        "# understudy bench: one key-value unit, {strategy}.\n[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"{strategy}\"\nt_max_ms = {T_MAX_MS}\n",
        strategy = strategy.toml()
    );
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| BenchCommandError::UnitsFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(path)
}

/// One cluster: start it, find `kv`'s copies, measure baseline and unit at each in-flight
/// count from the node that holds neither copy, then (synchronous only) the takeover trials,
/// and stop it (dropping the cluster kills its nodes).
async fn run_cluster(
    opts: &BenchOptions,
    strategy: Strategy,
    units: &Path,
    warmup: Duration,
    measure: Duration,
) -> Result<(ClusterRun, Option<takeover::TakeoverRun>), BenchCommandError> {
    let failed = |reason: String| BenchCommandError::Cluster {
        strategy: strategy.toml(),
        reason,
    };
    let mut builder = ProcessCluster::builder(&opts.binary)
        .nodes(&NODES)
        .cookie(&format!("bench-{}", std::process::id()))
        .config(units)
        // The trials kill the same nodes again and again: no node is to be excluded for it.
        .args(["--exclude-after", "0"]);
    if let Some(dir) = &opts.logs {
        builder = builder.logs(dir.join(strategy.toml()));
    }
    let mut cluster = builder.start().map_err(|e| failed(e.to_string()))?;
    eprintln!(
        "bench: {} cluster of {} started, waiting for kv to serve",
        strategy.toml(),
        NODES.join(", ")
    );
    let probe = cluster
        .ready(Duration::from_secs(45))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let observer = NodeName::new(cluster.seed());
    let kv = wait_for_unit(&probe, &observer, "kv", 0, Duration::from_secs(10))
        .await
        .ok_or_else(|| failed("kv did not serve with a ready standby within 10 s".into()))?;
    let primary = kv
        .primary
        .map(|(_, node)| node)
        .ok_or_else(|| failed("kv serves without a primary".into()))?;
    let standby = kv.standby.map(|(_, node)| node);
    let driver = driving_node(&primary, standby.as_ref());
    eprintln!(
        "bench: kv primary on {primary}, standby on {}, load from {driver}",
        standby.as_ref().map_or("-", |n| n.0.as_str())
    );
    let mut measurements = Vec::new();
    let in_flights = if opts.runs(BenchPart::Throughput) {
        &IN_FLIGHT[..]
    } else {
        &[]
    };
    for &in_flight in in_flights {
        let targets = [
            (
                Against::Baseline,
                BenchTarget::Baseline {
                    node: primary.clone(),
                },
            ),
            (
                Against::Unit,
                BenchTarget::Unit {
                    unit: UnitName::new("kv"),
                    stimulus: INCR.to_string(),
                },
            ),
        ];
        for (against, target) in targets {
            let m = measure_one(&probe, &driver, against, target, in_flight, warmup, measure).await;
            match (&m.stats, &m.error) {
                (Some(s), _) => eprintln!(
                    "bench: {:<11} {:<8} {in_flight:>3} in flight: {:>9.0} ops/s, p50 {} µs, p99 {} µs, {} errors",
                    strategy.toml(),
                    label(against),
                    s.ops_per_s(),
                    s.p50_us,
                    s.p99_us,
                    s.errors
                ),
                (None, Some(e)) => eprintln!(
                    "bench: {:<11} {:<8} {in_flight:>3} in flight: FAILED: {e}",
                    strategy.toml(),
                    label(against)
                ),
                (None, None) => {}
            }
            measurements.push(m);
        }
    }
    let epoch_after = wait_for_unit(&probe, &observer, "kv", 0, Duration::from_secs(5))
        .await
        .map(|u| u.epoch.0);
    let trials = if strategy == Strategy::Synchronous && opts.runs(BenchPart::Takeover) {
        let wanted = opts.takeover_trials();
        eprintln!(
            "bench: takeover: {wanted} trials of kill -9 of kv's primary's node, {} in flight",
            takeover::IN_FLIGHT
        );
        Some(takeover::run(&mut cluster, &probe, wanted).await)
    } else {
        None
    };
    drop(probe);
    drop(cluster);
    let run = ClusterRun {
        strategy,
        driver,
        primary,
        standby,
        epoch_before: kv.epoch.0,
        epoch_after,
        measurements,
    };
    Ok((run, trials))
}

/// The node the load runs in: one that holds neither of `kv`'s copies (with three nodes and one
/// unit there is one), else one other than the primary's.
fn driving_node(primary: &NodeName, standby: Option<&NodeName>) -> NodeName {
    takeover::driving_node(&NODES.map(String::from), primary, standby)
}

/// One measurement from `driver`.
async fn measure_one(
    probe: &Probe,
    driver: &NodeName,
    target: Against,
    bench: BenchTarget,
    in_flight: u32,
    warmup: Duration,
    measure: Duration,
) -> Measurement {
    let outcome = match BenchPlan::new(in_flight, warmup, measure) {
        Ok(plan) => probe
            .bench(driver, bench, plan)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (stats, error) = match outcome {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    Measurement {
        target,
        in_flight,
        stats,
        error,
    }
}

fn label(target: Against) -> &'static str {
    match target {
        Against::Baseline => "baseline",
        Against::Unit => "kv",
    }
}

/// The median of some values (the middle one, or the mean of the two middle ones).
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A number rounded to `places` decimals, as JSON (`null` for none).
fn num(value: Option<f64>, places: i32) -> Value {
    let scale = 10f64.powi(places);
    value
        .map(|v| (v * scale).round() / scale)
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

impl BenchReport {
    /// Whether every measurement measured something, and the takeover trials ran with at least
    /// one valid trial of a crash (of the parts it ran).
    pub fn complete(&self) -> bool {
        let runs = |part: BenchPart| part.wanted(&self.only);
        let measured = self
            .runs
            .iter()
            .flat_map(|r| &r.measurements)
            .all(|m| m.stats.is_some());
        let takeover = !runs(BenchPart::Takeover)
            || self
                .takeover
                .as_ref()
                .is_some_and(|t| !t.times(takeover::Fault::Crash).is_empty());
        let scale =
            !runs(BenchPart::Scale) || self.scale.as_ref().is_some_and(scale::ScaleRun::complete);
        measured && takeover && scale
    }

    /// The baseline's `pick` at `in_flight`: the median over the clusters.
    fn baseline(&self, in_flight: u32, pick: impl Fn(&BenchStats) -> f64) -> Option<f64> {
        let values = self
            .runs
            .iter()
            .filter_map(|r| r.get(Against::Baseline, in_flight)?.stats.as_ref())
            .map(pick)
            .collect();
        median(values)
    }

    /// The one JSON object: flat keys per target and in-flight count (`sync_ops_s_64`,
    /// `sync_p99_us_64`, `sync_ratio_64`, `baseline_ops_s_1`, …; the baseline's as the median
    /// over the three clusters, each ratio to its own cluster's baseline), `null` for what
    /// this build does not measure, and every run in detail.
    pub fn json(&self) -> Value {
        let mut o = Map::new();
        for n in IN_FLIGHT {
            o.insert(
                format!("baseline_ops_s_{n}"),
                num(self.baseline(n, BenchStats::ops_per_s), 1),
            );
            o.insert(
                format!("baseline_p50_us_{n}"),
                num(self.baseline(n, |s| s.p50_us as f64), 1),
            );
            o.insert(
                format!("baseline_p99_us_{n}"),
                num(self.baseline(n, |s| s.p99_us as f64), 1),
            );
        }
        for strategy in Strategy::ALL {
            let run = self.runs.iter().find(|r| r.strategy == strategy);
            for n in IN_FLIGHT {
                let stats = run
                    .and_then(|r| r.get(Against::Unit, n))
                    .and_then(|m| m.stats.as_ref());
                let key = strategy.key();
                o.insert(
                    format!("{key}_ops_s_{n}"),
                    num(stats.map(BenchStats::ops_per_s), 1),
                );
                o.insert(
                    format!("{key}_p50_us_{n}"),
                    num(stats.map(|s| s.p50_us as f64), 1),
                );
                o.insert(
                    format!("{key}_p99_us_{n}"),
                    num(stats.map(|s| s.p99_us as f64), 1),
                );
                o.insert(
                    format!("{key}_ratio_{n}"),
                    num(run.and_then(|r| r.ratio(n)), 3),
                );
            }
        }
        for (fault, key) in [
            (takeover::Fault::Crash, "takeover_crash"),
            (takeover::Fault::CrashManager, "takeover_crash_manager"),
            (takeover::Fault::Hang, "takeover_hang"),
            (takeover::Fault::Panic, "takeover_panic"),
        ] {
            let t = self.takeover.as_ref();
            let q = t.and_then(|t| t.quantiles(fault));
            let ms = q.map_or(Value::Null, |q| {
                serde_json::json!({"p50": num(Some(q.p50), 3), "p99": num(Some(q.p99), 3), "max": num(Some(q.max), 3)})
            });
            o.insert(format!("{key}_ms"), ms);
            o.insert(
                format!("{key}_trials"),
                t.map_or(0, |t| t.times(fault).len()).into(),
            );
            o.insert(
                format!("{key}_invalid"),
                t.map_or(0, |t| t.invalid(fault)).into(),
            );
        }
        for field in NOT_MEASURED {
            o.insert(field.to_string(), Value::Null);
        }
        let scale = self.scale.as_ref();
        for (key, value) in SCALE_KEYS.into_iter().zip([
            num(scale.and_then(|s| s.cold_start_ms), 1),
            num(scale.and_then(scale::ScaleRun::rss_per_unit_kib), 1),
            num(scale.and_then(scale::ScaleRun::node_loss_ms), 1),
        ]) {
            o.insert(key.to_string(), value);
        }
        o.insert(
            "scale".into(),
            serde_json::to_value(&self.scale).unwrap_or(Value::Null),
        );
        o.insert("quick".into(), Value::Bool(self.quick));
        o.insert("warmup_ms".into(), self.warmup_ms.into());
        o.insert("measure_ms".into(), self.measure_ms.into());
        o.insert(
            "machine".into(),
            serde_json::to_value(&self.machine).unwrap_or(Value::Null),
        );
        o.insert(
            "runs".into(),
            serde_json::to_value(&self.runs).unwrap_or(Value::Null),
        );
        o.insert(
            "takeover".into(),
            serde_json::to_value(&self.takeover).unwrap_or(Value::Null),
        );
        o.insert("took_s".into(), num(Some(self.took_s), 1));
        Value::Object(o)
    }

    /// The table, for people.
    pub fn print_table(&self) {
        println!(
            "Understudy bench ({}): {:.1} s counted after {:.1} s warm-up per measurement; {} cores, {}",
            if self.quick { "quick" } else { "full" },
            self.measure_ms as f64 / 1000.0,
            self.warmup_ms as f64 / 1000.0,
            self.machine.cores,
            self.machine.description
        );
        println!(
            "  per strategy a cluster of {} node processes on loopback, kv alone; the load runs in the node holding neither of kv's copies;"
        , NODES.len());
        println!(
            "  baseline: a plain ractor actor (the same incr, no replication, no dedupe) on kv's primary's node, over ractor_cluster, measured in each cluster"
        );
        println!(
            "  {:<12} {:<9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>7} {:>11}",
            "strategy",
            "target",
            "in flight",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "errors",
            "× baseline"
        );
        for run in &self.runs {
            for m in &run.measurements {
                let ratio = match m.target {
                    Against::Unit => run
                        .ratio(m.in_flight)
                        .map_or("-".to_string(), |r| format!("{r:.2}")),
                    Against::Baseline => String::new(),
                };
                let line = match &m.stats {
                    Some(s) => format!(
                        "  {:<12} {:<9} {:>9} {:>11.0} {:>9} {:>9} {:>9} {:>7} {:>11}",
                        run.strategy.toml(),
                        label(m.target),
                        m.in_flight,
                        s.ops_per_s(),
                        s.p50_us,
                        s.p99_us,
                        s.max_us,
                        s.errors,
                        ratio
                    ),
                    None => format!(
                        "  {:<12} {:<9} {:>9}   not measured: {}",
                        run.strategy.toml(),
                        label(m.target),
                        m.in_flight,
                        m.error.as_deref().unwrap_or("no answer")
                    ),
                };
                println!("{}", line.trim_end());
            }
            if run.epoch_after != Some(run.epoch_before) {
                println!(
                    "  {:<12} kv's epoch moved from {} to {:?} during the run: a takeover happened, these numbers include it",
                    run.strategy.toml(),
                    run.epoch_before,
                    run.epoch_after
                );
            }
        }
        self.print_takeover();
        self.print_scale();
        println!("  took {:.1} s", self.took_s);
    }
}

impl BenchReport {
    /// The scale part of the table.
    fn print_scale(&self) {
        let Some(s) = &self.scale else {
            println!("  scale: did not run");
            return;
        };
        println!(
            "  scale: one cluster of {} node processes, {} synchronous kv units (the seed watches, never killed)",
            s.nodes, s.units
        );
        let ms = |v: Option<f64>| v.map_or("not measured".to_string(), |v| format!("{v:.0} ms"));
        println!(
            "  {:<44} {}",
            "cold start (every unit serves, standby ready)",
            ms(s.cold_start_ms)
        );
        let sum = |r: &Option<scale::Resident>| {
            r.as_ref().map_or("not measured".to_string(), |r| {
                format!("{:.1} MiB", r.total_kib as f64 / 1024.0)
            })
        };
        println!(
            "  {:<44} {} with one unit, {} with {} units (idle {:.1} s, VmRSS summed over the nodes)",
            "resident memory",
            sum(&s.rss_one_unit),
            sum(&s.rss_all_units),
            s.units,
            s.idle_ms as f64 / 1000.0
        );
        let cpu = |r: &Option<scale::Resident>| {
            r.as_ref()
                .map_or("-".to_string(), |r| format!("{:.2}", r.idle_cpu_cores))
        };
        println!(
            "  {:<44} {} cores with one unit, {} with {} units ({} cores on this machine)",
            "CPU while idle (all nodes)",
            cpu(&s.rss_one_unit),
            cpu(&s.rss_all_units),
            s.units,
            self.machine.cores
        );
        println!(
            "  {:<44} {}",
            "memory per idle unit pair",
            s.rss_per_unit_kib()
                .map_or("not measured".to_string(), |k| format!("{k:.1} KiB"))
        );
        match &s.node_loss {
            Some(l) => println!(
                "  {:<44} {:.0} ms: {} primaries lost on {}{}, all serving again elsewhere at a newer epoch (standbys ready again after {})",
                "node loss (kill -9, most primaries)",
                l.serving_ms,
                l.primaries_lost,
                l.killed,
                if l.ran_group_manager { ", the group manager's node" } else { "" },
                l.standbys_ready_ms
                    .map_or("more than the deadline".to_string(), |v| format!("{v:.0} ms"))
            ),
            None => println!("  {:<44} not measured", "node loss (kill -9, most primaries)"),
        }
        for e in &s.errors {
            println!("  scale did not finish: {e}");
        }
        println!("  scale took {:.1} s", s.took_s);
    }

    /// The takeover part of the table.
    fn print_takeover(&self) {
        use takeover::Fault;
        let Some(t) = &self.takeover else {
            println!("  takeover (crash): did not run");
            return;
        };
        println!(
            "  takeover of kv (synchronous), {} in flight from the node holding neither copy; from the fault to the first answer at a newer epoch",
            t.in_flight
        );
        println!(
            "  {:<44} {:>7} {:>8} {:>9} {:>9} {:>9} {:>12}",
            "fault", "trials", "invalid", "p50 ms", "p99 ms", "max ms", "drained p99"
        );
        for fault in Fault::ALL {
            let name = fault.describe();
            let valid = t.times(fault).len();
            let drained = takeover::Quantiles::of(
                t.of(fault)
                    .filter(|x| x.invalid.is_none())
                    .filter_map(|x| x.drained_ms)
                    .collect(),
            );
            match t.quantiles(fault) {
                Some(q) => println!(
                    "  {name:<44} {valid:>7} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>12}",
                    t.invalid(fault),
                    q.p50,
                    q.p99,
                    q.max,
                    drained.map_or("-".into(), |d| format!("{:.2}", d.p99))
                ),
                None => println!(
                    "  {name:<44} {valid:>7} {:>8}   no valid trial",
                    t.invalid(fault),
                ),
            }
        }
        for (i, x) in t.trials.iter().enumerate() {
            if let Some(why) = &x.invalid {
                println!(
                    "  trial {:>3} ({:?}, {}) invalid: {why}",
                    i + 1,
                    x.fault,
                    x.faulted
                );
            }
        }
        if let Some(why) = &t.stopped {
            println!("  the takeover trials stopped early: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ops: u64) -> Option<BenchStats> {
        Some(BenchStats {
            ops,
            window_us: 1_000_000,
            p50_us: 10,
            p99_us: 20,
            max_us: 30,
            ..BenchStats::default()
        })
    }

    fn run(strategy: Strategy, base: u64, unit: u64) -> ClusterRun {
        let m = |target, in_flight, s| Measurement {
            target,
            in_flight,
            stats: s,
            error: None,
        };
        ClusterRun {
            strategy,
            driver: NodeName::new("n3"),
            primary: NodeName::new("n1"),
            standby: Some(NodeName::new("n2")),
            epoch_before: 1,
            epoch_after: Some(1),
            measurements: vec![
                m(Against::Baseline, 1, stats(base)),
                m(Against::Unit, 1, stats(unit)),
                m(Against::Baseline, 64, stats(base * 10)),
                m(Against::Unit, 64, None),
            ],
        }
    }

    #[test]
    fn the_object_has_every_field_ratios_per_cluster_and_null_for_what_is_not_measured() {
        let report = BenchReport {
            quick: true,
            warmup_ms: 300,
            measure_ms: 1500,
            machine: Machine::this(),
            runs: vec![
                run(Strategy::Synchronous, 1000, 500),
                run(Strategy::Trailing, 2000, 1800),
                run(Strategy::Inflight, 3000, 600),
            ],
            takeover: None,
            scale: None,
            only: Vec::new(),
            took_s: 1.0,
        };
        let json = report.json();
        let o = json.as_object().expect("an object");
        for key in [
            "baseline_ops_s_64",
            "sync_ops_s_64",
            "trailing_ops_s_64",
            "inflight_ops_s_64",
            "sync_ratio_64",
            "trailing_ratio_64",
            "inflight_ratio_64",
            "sync_ratio_1",
            "trailing_ratio_1",
            "inflight_ratio_1",
            "baseline_ops_s_1",
            "sync_ops_s_1",
            "sync_p50_us_1",
            "sync_p99_us_64",
            "quick",
            "machine",
            "takeover_crash_ms",
            "takeover_crash_manager_ms",
        ]
        .into_iter()
        .chain(NOT_MEASURED)
        .chain(SCALE_KEYS)
        {
            assert!(o.contains_key(key), "no {key} in {json}");
        }
        for key in NOT_MEASURED.into_iter().chain(SCALE_KEYS) {
            assert!(o[key].is_null(), "{key}");
        }
        // Each ratio to its own cluster's baseline; the baseline as the median of the three.
        assert_eq!(o["sync_ratio_1"], 0.5);
        assert_eq!(o["trailing_ratio_1"], 0.9);
        assert_eq!(o["inflight_ratio_1"], 0.2);
        assert_eq!(o["baseline_ops_s_1"], 2000.0);
        // The unit at 64 was not measured: null, not a number.
        assert!(o["sync_ops_s_64"].is_null() && o["sync_ratio_64"].is_null());
        assert!(!report.complete());
        assert_eq!(o["quick"], true);
    }

    #[test]
    fn the_driving_node_holds_neither_copy() {
        let (n1, n2) = (NodeName::new("n1"), NodeName::new("n2"));
        assert_eq!(driving_node(&n1, Some(&n2)), NodeName::new("n3"));
        assert_eq!(driving_node(&n2, None), n1);
    }
}
